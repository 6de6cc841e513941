"""Block features, the labelling-model search and safe labeller files
(keras_medseg.neurotrace.labels)."""
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from keras_medseg.io.splits import train_val_test_split
from keras_medseg.io.swc import read_swc, write_swc
from keras_medseg.neurotrace import labels as L
from keras_medseg.neurotrace.blocks import (block_box, cut_blocks_folder, read_blocks_csv,
                                            write_blocks_csv)
from keras_medseg.neurotrace.lmeasure import (DIFFERENCE_FEATURES, LMEASURE_FEATURES,
                                              difference_features, lmeasure_features)


def informative_table(n=120, column=3, seed=0):
    """8 uniform features; the label is ``x[:, column] > 0.5``; 6 neurons of 20 blocks."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 8)) * np.array([1, 2, 5, 10, 1, 3, 50, 4])
    y = (x[:, column] / [1, 2, 5, 10, 1, 3, 50, 4][column] > 0.5).astype(int)
    groups = np.repeat([f"n{k}" for k in range(6)], n // 6)
    return x, y, groups


class NormalisationTest(tf.test.TestCase):

    def test_maxima_and_scaling(self):
        x = np.array([[1.0, -4.0, np.nan, 0.0], [3.0, 2.0, np.inf, 0.0]])
        m = L.training_maxima(x)
        self.assertAllEqual(m, [3.0, 4.0, 1.0, 1.0])
        y = L.normalise_by_maxima([[6.0, 2.0, np.nan, -np.inf], [0.0, -4.0, np.inf, 5.0]], m)
        self.assertAllEqual(y, [[2.0, 0.5, 0.0, -1.0], [0.0, -1.0, 1.0, 5.0]])
        with self.assertRaisesRegex(ValueError, "features"):
            L.training_maxima(np.zeros((0, 3)))
        with self.assertRaisesRegex(ValueError, "maxima"):
            L.normalise_by_maxima(np.zeros((2, 3)), [1.0, 1.0])
        with self.assertRaisesRegex(ValueError, "maxima"):
            L.normalise_by_maxima(np.zeros((2, 2)), [1.0, 0.0])

    def test_search_scales_by_training_rows_only(self):
        # One validation block has a huge feature value: scaling by all rows would squash
        # the training features and ruin the (regularised) logistic fit; the search must
        # match the train-maxima reference.
        x, y, groups = informative_table(column=0)
        split = train_val_test_split(len(y), val_fraction=0.3, test_fraction=0.0, seed=7,
                                     groups=groups)
        train, val = np.asarray(split.train), np.asarray(split.val)
        x[val[0], 0] = 1000.0
        y[val[0]] = 1
        subset = (0, 2)
        res = L.search_feature_subsets(x, y, groups, models=("logistic",), subsets=[subset],
                                       repeats=1, seed=7)
        self.assertAllEqual(res.splits[0][0], train)

        def accuracy(scale):
            xs = x[:, list(subset)] / scale
            est = LogisticRegression(max_iter=1000).fit(xs[train], y[train])
            return float(np.mean(est.predict(xs[val]) == y[val]))

        with_train = accuracy(np.abs(x[train][:, list(subset)]).max(axis=0))
        with_all = accuracy(np.abs(x[:, list(subset)]).max(axis=0))
        self.assertGreater(with_train, with_all + 0.1)  # the test can tell them apart
        self.assertAlmostEqual(res.best["mean_accuracy"], with_train)
        # The final labeller stores the maxima of its own (training) rows.
        lab = L.fit_labeller(x[train], y[train], subset, "logistic")
        self.assertAllEqual(lab.scale, np.abs(x[train][:, list(subset)]).max(axis=0))


class SearchTest(tf.test.TestCase, parameterized.TestCase):

    def test_feature_subsets(self):
        subsets = L.feature_subsets()
        self.assertLen(subsets, 255)
        self.assertLen(set(subsets), 255)
        self.assertEqual(subsets[0], (0,))
        self.assertEqual(subsets[-1], tuple(range(8)))
        with self.assertRaisesRegex(ValueError, "n_features"):
            L.feature_subsets(0)

    @parameterized.parameters(3, 6)
    def test_search_picks_the_informative_feature(self, column):
        x, y, groups = informative_table(column=column)
        res = L.search_feature_subsets(x, y, groups, repeats=2, mlp_subsets=2,
                                       mlp_max_iter=40, seed=0)
        self.assertEqual(res.settings["n_subsets"], 255)
        logistic = [r for r in res.table if r["model"] == "logistic"]
        self.assertLen(logistic, 255)
        self.assertLen([r for r in res.table if r["model"] == "mlp"], 2)
        self.assertIn(column, res.best["subset"])
        self.assertGreater(res.best["mean_accuracy"], 0.9)
        without = [r["mean_accuracy"] for r in logistic if column not in r["subset"]]
        self.assertLess(max(without), 0.8)
        # Ranked best first with the documented tie-breaks.
        keys = [(-r["mean_accuracy"], r["n_features"]) for r in res.table]
        self.assertEqual(keys, sorted(keys))
        # Splits keep neurons on one side and hold about 30% of blocks for validation.
        for train, val in res.splits:
            self.assertEmpty(set(groups[train]) & set(groups[val]))
            self.assertAllClose(len(val) / len(y), 0.3, atol=0.1)

    def test_search_errors(self):
        x, y, groups = informative_table()
        with self.assertRaisesRegex(ValueError, "both classes"):
            L.search_feature_subsets(x, np.zeros_like(y), groups)
        with self.assertRaisesRegex(ValueError, "two neurons"):
            L.search_feature_subsets(x, y, np.zeros(len(y)))
        with self.assertRaisesRegex(ValueError, "models"):
            L.search_feature_subsets(x, y, groups, models=("svm",))
        with self.assertRaisesRegex(ValueError, "features"):
            L.search_feature_subsets(x[:, :5], y, groups)
        with self.assertRaisesRegex(ValueError, "repeats"):
            L.search_feature_subsets(x, y, groups, repeats=0)
        with self.assertRaisesRegex(ValueError, "subsets"):
            L.search_feature_subsets(x, y, groups, subsets=[(9,)])


class LabellerTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("logistic", "mlp")
    def test_safe_save_load_equals_sklearn(self, model):
        x, y, _ = informative_table(column=1)
        x[0, 4] = np.nan
        subset = (1, 4, 6)
        lab = L.fit_labeller(x, y, subset, model, seed=3, mlp_max_iter=60,
                             info={"note": "test"})
        # Independent reference: the same estimator fitted by scikit-learn directly.
        scale = np.nanmax(np.abs(x[:, list(subset)]), axis=0)
        xs = np.nan_to_num(x[:, list(subset)] / scale, nan=0.0)
        if model == "logistic":
            est = LogisticRegression(max_iter=1000).fit(xs, y)
        else:
            est = MLPClassifier((10, 30, 60, 30), solver="lbfgs", max_iter=60,
                                random_state=3).fit(xs, y)
        self.assertAllClose(lab.predict_proba(x), est.predict_proba(xs), atol=1e-12)
        self.assertAllEqual(lab.predict(x), est.predict(xs))
        self.assertEqual(lab.hidden, () if model == "logistic" else (10, 30, 60, 30))
        folder = Path(self.get_temp_dir()) / f"lab_{model}"
        L.save_labeller(lab, folder)
        self.assertEqual(sorted(os.listdir(folder)), ["labeller.json", "labeller.npz"])
        with np.load(folder / "labeller.npz", allow_pickle=False) as data:
            self.assertTrue(all(data[k].dtype == np.float64 for k in data.files))
        meta = json.loads((folder / "labeller.json").read_text())
        self.assertEqual(meta["features"], [DIFFERENCE_FEATURES[i] for i in subset])
        back = L.load_labeller(folder)
        self.assertEqual(back.model, model)
        self.assertEqual(back.feature_indices, subset)
        self.assertEqual(back.info, {"note": "test"})
        self.assertAllEqual(back.scale, lab.scale)
        self.assertAllEqual(back.predict_proba(x), lab.predict_proba(x))

    def test_labeller_validation_and_bad_files(self):
        w = [np.ones((2, 1))]
        b = [np.zeros(1)]
        L.Labeller("logistic", (0, 3), [1.0, 2.0], w, b)
        with self.assertRaisesRegex(ValueError, "feature_indices"):
            L.Labeller("logistic", (3, 0), [1.0, 2.0], w, b)
        with self.assertRaisesRegex(ValueError, "layer 0"):
            L.Labeller("logistic", (0, 1, 2), [1.0, 2.0, 3.0], w, b)
        with self.assertRaisesRegex(ValueError, "1 output"):
            L.Labeller("mlp", (0, 3), [1.0, 2.0], [np.ones((2, 4))], [np.zeros(4)])
        with self.assertRaisesRegex(ValueError, "one layer"):
            L.Labeller("logistic", (0,), [1.0], [np.ones((1, 2)), np.ones((2, 1))],
                       [np.zeros(2), np.zeros(1)])
        with self.assertRaisesRegex(ValueError, "shape"):
            L.Labeller("logistic", (0, 3), [1.0, 2.0], w, b).predict(np.zeros((2, 2)))
        folder = Path(self.get_temp_dir()) / "bad_lab"
        with self.assertRaisesRegex(FileNotFoundError, "labeller.json"):
            L.load_labeller(folder)
        L.save_labeller(L.Labeller("logistic", (0, 3), [1.0, 2.0], w, b), folder)
        meta = json.loads((folder / "labeller.json").read_text())
        (folder / "labeller.json").write_text(json.dumps(dict(meta, format="other")))
        with self.assertRaisesRegex(ValueError, "labeller.json"):
            L.load_labeller(folder)
        (folder / "labeller.json").write_text(json.dumps(dict(meta, layers=2)))
        with self.assertRaisesRegex(ValueError, "cannot rebuild"):
            L.load_labeller(folder)


class BlockFeaturesTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from keras_medseg.sampledata import generate_neurotrace

        cls.tmp = Path(tempfile.mkdtemp(prefix="neurotrace_labels_"))
        generate_neurotrace(cls.tmp / "data", seed=1, n_neurons=2, shape=(32, 80, 80),
                            n_nodes=250)
        cut_blocks_folder(cls.tmp / "data", cls.tmp / "blocks", progress=False)
        cls.csv = cls.tmp / "blocks" / "blocks.csv"

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_features_match_block_files_and_are_reused(self):
        path = L.compute_block_features(self.csv, progress=False)
        self.assertEqual(path, self.csv.parent / "features.csv")
        header = path.read_text().splitlines()[0].split(",")
        self.assertEqual(header, ["neuron", "block", *DIFFERENCE_FEATURES, *LMEASURE_FEATURES])
        feats = L.read_block_features(path)
        rows = read_blocks_csv(self.csv)
        self.assertEqual([(r["neuron"], r["block"]) for r in rows],
                         list(zip(feats.neurons, feats.blocks.tolist())))
        for k, r in enumerate(rows):
            g = read_swc(self.csv.parent / r["gold_swc"])
            a = read_swc(self.csv.parent / r["auto_swc"])
            with np.errstate(all="ignore"):
                self.assertAllClose(feats.difference[k], difference_features(g, a))
                self.assertAllClose(feats.lmeasure[k], list(lmeasure_features(a).values()))
        mtime = path.stat().st_mtime_ns
        L.compute_block_features(self.csv, progress=False)
        self.assertEqual(path.stat().st_mtime_ns, mtime)

    def test_simulated_manual_labels(self):
        out = self.tmp / "manual.csv"
        labels = L.simulated_manual_labels(self.tmp / "data", self.csv, out_path=out)
        rows = read_blocks_csv(self.csv)
        self.assertEqual(set(labels), {(r["neuron"], r["block"]) for r in rows})
        with open(out) as f:
            table = [line.split(",") for line in f.read().splitlines()]
        self.assertEqual(table[0], ["neuron", "block", "label", "quality"])
        for neuron, block, label, quality in table[1:]:
            self.assertBetween(float(quality), 0.0, 1.0)
            self.assertEqual(int(label), int(float(quality) < 0.5))
            self.assertEqual(labels[(neuron, int(block))], int(label))
        self.assertEqual(L.read_manual_labels(out), labels)
        # The gold nodes used are those strictly inside each block's box.
        r = rows[0]
        lo, hi = block_box((r["x"], r["y"], r["z"]))
        gold = read_swc(self.tmp / "data" / "gold" / f"{r['neuron']}.swc")
        self.assertTrue(np.any(np.all((gold.xyz > lo) & (gold.xyz < hi), axis=1)))

    def test_simulated_labels_refuse_changed_or_foreign_data(self):
        data = self.tmp / "data_copy"
        shutil.copytree(self.tmp / "data", data)
        gold = read_swc(data / "gold" / "neuron_000.swc")
        write_swc(data / "gold" / "neuron_000.swc", gold.translate((0.5, 0, 0)))
        with self.assertRaisesRegex(ValueError, "neuron_000.swc"):
            L.simulated_manual_labels(data, self.csv, out_path=self.tmp / "m2.csv")
        # an automatic tracing from another generator version is refused too
        write_swc(data / "gold" / "neuron_000.swc", gold)
        auto = read_swc(data / "auto" / "neuron_000.swc")
        write_swc(data / "auto" / "neuron_000.swc", auto.translate((0, 0.5, 0)))
        with self.assertRaisesRegex(ValueError, "auto.*neuron_000.swc.*generator changed"):
            L.simulated_manual_labels(data, self.csv, out_path=self.tmp / "m2.csv")
        (data / ".neurotrace.complete.json").unlink()
        with self.assertRaisesRegex(ValueError, "generate_neurotrace"):
            L.simulated_manual_labels(data, self.csv, out_path=self.tmp / "m2.csv")

    def test_apply_labeller_writes_only_many_labels(self):
        L.compute_block_features(self.csv, progress=False)
        work = self.tmp / "apply"
        shutil.copytree(self.csv.parent, work)
        edited = read_blocks_csv(work / "blocks.csv")
        edited[0]["subset"] = "few"
        edited[0]["label"] = 1  # a stale label on a few block is cleared
        write_blocks_csv(work / "blocks.csv", edited)
        lab = L.Labeller("logistic", (6,), [1.0], [np.ones((1, 1))], [np.array([-40.0])])
        out = L.apply_labeller(work / "blocks.csv", lab)
        rows = read_blocks_csv(work / "blocks.csv")
        feats = L.read_block_features(work / "features.csv")
        index = feats.index()
        for r in rows:
            if r["subset"] == "few":
                self.assertIsNone(r["label"])
            else:
                expected = int(feats.difference[index[(r["neuron"], r["block"])], 6] > 40)
                self.assertEqual(r["label"], expected)
                self.assertEqual(out[(r["neuron"], r["block"])], expected)
        self.assertEqual(sum(r["subset"] == "few" for r in rows), 1)
        self.assertEqual([dict(r, label=None) for r in rows],
                         [dict(r, label=None) for r in edited])

    def test_read_manual_labels_errors(self):
        path = self.tmp / "bad_manual.csv"
        for body, pattern in (("neuron,block\n", "lacks"), ("neuron,block,label\na,x,1\n",
                                                            "integer"),
                              ("neuron,block,label\na,1,2\n", "0 or 1"),
                              ("neuron,block,label\na,1,1\na,1,0\n", "repeated")):
            path.write_text(body)
            with self.assertRaisesRegex(ValueError, pattern):
                L.read_manual_labels(path)
        with self.assertRaisesRegex(FileNotFoundError, "none.csv"):
            L.read_manual_labels(self.tmp / "none.csv")


if __name__ == "__main__":
    tf.test.main()
