"""Tests of the 3D-SSM staged training on a tiny hand-built block table (CSV + .npy blocks):
the neuron split recorded in the run folder, training-only feature maxima, frozen sub-models,
a fresh fusion model per repeat, selection on validation and both history protocols."""
import csv
import json
import os
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_medseg.neurotrace import models as M
from keras_medseg.neurotrace import training as T
from keras_medseg.neurotrace.lmeasure import LMEASURE_FEATURES


def write_block_table(root, *, n_neurons=6, per_neuron=8, seed=0, few_every=0):
    """Blocks along random walks; a 'high' label brightens a box in the block and shifts
    the features. Writes blocks/*.npy and blocks.csv with the documented columns."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "blocks"), exist_ok=True)
    rows = []
    for k in range(n_neurons):
        pos = np.array([200.0, 200.0, 60.0])
        label = int(rng.integers(0, 2))
        for b in range(per_neuron):
            pos = pos + rng.normal(0, 35, 3)
            if rng.random() < 0.2:
                label = 1 - label
            img = rng.integers(0, 50, (32, 64, 64)).astype(np.uint8)
            if label:
                img[8:24, 16:48, 16:48] += 100
            rel = f"blocks/{k:03d}_{b:04d}.npy"
            np.save(os.path.join(root, rel), img)
            row = {"neuron": f"neuron_{k:03d}", "block": b, "x": pos[0], "y": pos[1],
                   "z": pos[2], "image": rel, "gold_swc": "", "auto_swc": "", "n_gold": 100,
                   "n_auto": 50, "subset": "few" if few_every and b % few_every == 0 else "many",
                   "label": label}
            feats = rng.normal(0, 1, len(LMEASURE_FEATURES)) * 10 + 5 * label
            feats[0] = np.nan  # undefined feature: becomes 0 after scaling
            row.update(zip(LMEASURE_FEATURES, feats))
            rows.append(row)
    path = os.path.join(root, "blocks.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path, rows


def tiny_configs(run_dir, **train):
    kw = dict(run_dir=run_dir, resnet_epochs=2, fcn_epochs=3, image_head_epochs=3,
              feature_head_epochs=3, fusion_epochs=3, fusion_repeats=2,
              resnet_learning_rate=1e-3, fcn_learning_rate=1e-3, resume=False)
    kw.update(train)
    return (T.SSMDataConfig(val_fraction=0.2, test_fraction=0.3, seed=1),
            T.SSMModelConfig(width=0.0625, fcn_units=(16, 8), lstm_units=4, fusion_units=6),
            T.SSMTrainConfig(**kw))


class LoadBlockDataTest(tf.test.TestCase):

    def test_reads_rows_subset_and_labels(self):
        root = self.get_temp_dir()
        path, rows = write_block_table(root, n_neurons=2, per_neuron=5, few_every=2)
        with open(path) as f:
            text = f.read().replace(",1\n", ",\n", 1)  # first label '1' -> unlabelled
        with open(path, "w") as f:
            f.write(text)
        data = T.load_block_data(path)
        expected = [r for r in rows if r["subset"] == "many"]
        with open(path) as f:
            labelled = {(r["neuron"], int(r["block"])) for r in csv.DictReader(f) if r["label"]}
        expected = [r for r in expected if (r["neuron"], r["block"]) in labelled]
        self.assertEqual(data.names, [f"{r['neuron']}/{r['block']}" for r in expected])
        self.assertAllEqual(data.labels, [r["label"] for r in expected])
        self.assertAllClose(data.centres, [[r["x"], r["y"], r["z"]] for r in expected])
        self.assertEqual(data.images.shape, (len(expected), 32, 64, 64))
        self.assertEqual(data.images.dtype, np.uint8)
        self.assertAllEqual(data.images[0], np.load(os.path.join(root, expected[0]["image"])))
        self.assertEqual(data.features.shape, (len(expected), 32))
        self.assertEqual(len(T.load_block_data(path, subset="all")),
                         len(labelled))

    def test_errors_name_the_file(self):
        root = self.get_temp_dir()
        path, rows = write_block_table(root, n_neurons=1, per_neuron=3)
        os.remove(os.path.join(root, rows[1]["image"]))
        with self.assertRaisesRegex(FileNotFoundError, "001.npy"):
            T.load_block_data(path)
        np.save(os.path.join(root, rows[1]["image"]), np.zeros((32, 64, 63), np.uint8))
        with self.assertRaisesRegex(ValueError, "0001.npy.*shape"):
            T.load_block_data(path)
        with self.assertRaisesRegex(FileNotFoundError, "nothing.csv"):
            T.load_block_data(os.path.join(root, "nothing.csv"))
        with open(path) as f:
            text = f.read()
        bad = os.path.join(root, "bad.csv")
        with open(bad, "w") as f:
            f.write(text.replace(",many,1", ",many,2", 1).replace(",many,0", ",many,2", 1))
        with self.assertRaisesRegex(ValueError, "bad.csv.*label"):
            T.load_block_data(bad)
        with self.assertRaisesRegex(ValueError, "features"):
            T.load_block_data(path, features=np.zeros((2, 32)))


@pytest.mark.slow
class TrainTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import tempfile

        cls.root = tempfile.mkdtemp(prefix="ssm_train_")
        path, _ = write_block_table(cls.root)
        cls.data = T.load_block_data(path)
        cls.run_dir = os.path.join(cls.root, "run")
        dc, mc, tc = tiny_configs(cls.run_dir, class_weight="balanced")
        built, fits = [], {}
        real_build_fusion = M.build_fusion
        real_fit = T.Runner.fit

        def counting_build_fusion(*args, **kwargs):
            model = real_build_fusion(*args, **kwargs)
            built.append(model)
            return model

        def recording_fit(self, *args, **kwargs):
            fits[kwargs["stage"]] = kwargs.get("class_weight")
            return real_fit(self, *args, **kwargs)

        with mock.patch.object(M, "build_fusion", counting_build_fusion), \
                mock.patch.object(T.Runner, "fit", recording_fit):
            cls.result = T.train_3dssm(cls.data, data_config=dc, model_config=mc,
                                       train_config=tc)
        cls.built_fusions = built
        cls.fit_class_weights = fits

    def test_balanced_class_weights_in_every_stage(self):
        from sklearn.utils.class_weight import compute_class_weight

        y = self.data.labels[np.asarray(self.result.split.train)]
        expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
        self.assertCountEqual(self.fit_class_weights, ["resnet", "fcn", "image_head",
                                                       "feature_head", "fusion_0", "fusion_1"])
        for stage, weights in self.fit_class_weights.items():
            self.assertAllClose([weights[0], weights[1]], expected, msg=stage)

    def test_split_by_neuron_recorded(self):
        sides = {}
        for side in ("train", "val", "test"):
            with open(os.path.join(self.run_dir, "splits", f"{side}.txt")) as f:
                sides[side] = [line.strip() for line in f if line.strip()]
            self.assertNotEmpty(sides[side])
        self.assertCountEqual(sum(sides.values(), []), self.data.names)
        neurons = {s: {n.split("/")[0] for n in names} for s, names in sides.items()}
        self.assertEmpty(neurons["train"] & neurons["val"])
        self.assertEmpty(neurons["train"] & neurons["test"])
        self.assertEmpty(neurons["val"] & neurons["test"])
        with open(os.path.join(self.run_dir, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["train"]["fusion_repeats"], 2)
        self.assertEqual(config["data"]["test_fraction"], 0.3)

    def test_feature_maxima_from_training_blocks_only(self):
        with open(os.path.join(self.run_dir, "splits", "train.txt")) as f:
            train = [line.strip() for line in f if line.strip()]
        idx = [self.data.names.index(n) for n in train]
        expected = np.max(np.abs(np.nan_to_num(self.data.features[idx])), axis=0)
        expected = np.where(np.isfinite(expected) & (expected > 0), expected, 1.0)
        with open(os.path.join(self.run_dir, "feature_scale.json")) as f:
            self.assertAllClose(json.load(f)["scale"], expected, rtol=1e-6)
        all_max = np.max(np.abs(np.nan_to_num(self.data.features)), axis=0)
        self.assertNotAllClose(expected[1:], all_max[1:])  # the other splits differ

    def test_sub_models_unchanged_after_later_stages(self):
        # each base network / head is the best-validation checkpoint of its own stage; the
        # later stages (heads, fusion) changed none of its weights or BN statistics
        for name in ("resnet", "fcn", "image_head", "feature_head"):
            best = keras.models.load_model(os.path.join(self.run_dir, name, "best.keras"),
                                           compile=False)
            for a, b in zip(best.get_weights(), self.result.models[name].get_weights()):
                self.assertAllEqual(a, b)
        bn = self.result.models["resnet"].get_layer("stem_bn")
        best = keras.models.load_model(os.path.join(self.run_dir, "resnet", "best.keras"),
                                       compile=False).get_layer("stem_bn")
        self.assertAllEqual(bn.moving_variance.numpy(), best.moving_variance.numpy())

    def test_fresh_fusion_per_repeat_selected_on_validation(self):
        self.assertLen(self.built_fusions, 2)
        self.assertIsNot(self.built_fusions[0], self.built_fusions[1])
        with open(os.path.join(self.run_dir, "fusion_repeats.json")) as f:
            record = json.load(f)
        vals = []
        for r in range(2):
            with open(os.path.join(self.run_dir, f"fusion_{r}", "best.json")) as f:
                best = json.load(f)
            self.assertEqual(best["monitor"], "val_accuracy")
            vals.append(best["best"])
            # each repeat's log starts at epoch 0: a new model, not a continued one
            with open(os.path.join(self.run_dir, f"fusion_{r}", "log.csv")) as f:
                self.assertEqual(next(csv.DictReader(f))["epoch"], "0")
        self.assertEqual(record["selected"], int(np.argmax(vals)))
        self.assertEqual(self.result.selected_repeat, record["selected"])
        selected = keras.models.load_model(
            os.path.join(self.run_dir, f"fusion_{record['selected']}", "best.keras"))
        for a, b in zip(selected.get_weights(), self.result.models["fusion"].get_weights()):
            self.assertAllEqual(a, b)

    def test_results_for_both_protocols(self):
        rows = self.result.results
        test_n = len(self.result.split.test)
        for protocol in ("predicted", "oracle"):
            row = self.result.result("ssm3d", "test", protocol)
            self.assertEqual(row["n"], test_n)
            self.assertBetween(row["accuracy"], 0.0, 1.0)
        self.assertEqual({r["history"] for r in rows if r["model"] == "resnet"}, {"none"})
        for suffix in ("CM.txt", "F1.txt", "AUC.txt", "roc.png"):
            for protocol in ("predicted", "oracle"):
                self.assertTrue(os.path.isfile(os.path.join(
                    self.run_dir, f"ssm3d_test_{protocol}_{suffix}")))
        with self.assertRaisesRegex(ValueError, "no result"):
            self.result.result("ssm3d", "train")

    def test_predict_matches_report_and_ignores_labels_in_predicted_mode(self):
        test = self.data.take(self.result.split.test)
        models = T.load_models(self.run_dir)
        p = T.predict_3dssm(models, test, feature_scale=self.result.feature_scale)
        acc = float(np.mean(np.argmax(p, 1) == test.labels))
        self.assertAlmostEqual(acc, self.result.result("ssm3d", "test", "predicted")["accuracy"])
        flipped = self.data.take(self.result.split.test)
        flipped.labels = 1 - flipped.labels
        self.assertAllClose(T.predict_3dssm(models, flipped,
                                            feature_scale=self.result.feature_scale), p)
        oracle = T.predict_3dssm(models, test, feature_scale=self.result.feature_scale,
                                 labels=test.labels)
        acc = float(np.mean(np.argmax(oracle, 1) == test.labels))
        self.assertAlmostEqual(acc, self.result.result("ssm3d", "test", "oracle")["accuracy"])

    def test_rerun_resumes_finished_stages(self):
        dc, mc, tc = tiny_configs(self.run_dir, resume=True, class_weight="balanced")
        again = T.train_3dssm(self.data, data_config=dc, model_config=mc, train_config=tc)
        self.assertEqual(again.results, self.result.results)


class ClassWeightTest(tf.test.TestCase):

    def test_balanced_matches_scikit_learn(self):
        from sklearn.utils.class_weight import compute_class_weight

        y = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0])
        weights = T.class_weights(y, "balanced")
        self.assertAllClose([weights[0], weights[1]],
                            compute_class_weight("balanced", classes=np.array([0, 1]), y=y))
        # both classes then carry the same total weight
        self.assertAllClose(weights[0] * np.sum(y == 0), weights[1] * np.sum(y == 1))
        self.assertIsNone(T.class_weights(y, "none"))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "both classes"):
            T.class_weights([1, 1, 1], "balanced")
        with self.assertRaisesRegex(ValueError, "class_weight"):
            T.class_weights([0, 1], "inverse")
        with self.assertRaisesRegex(ValueError, "class_weight"):
            T.SSMTrainConfig(class_weight="auto")


class ConfigErrorTest(tf.test.TestCase):

    def test_config_errors(self):
        with self.assertRaisesRegex(ValueError, "subset"):
            T.SSMDataConfig(subset="few")
        with self.assertRaisesRegex(ValueError, "test_fraction"):
            T.SSMDataConfig(test_fraction=0)
        with self.assertRaisesRegex(ValueError, "monitor"):
            T.SSMTrainConfig(monitor="accuracy")
        with self.assertRaisesRegex(ValueError, "fusion_repeats"):
            T.SSMTrainConfig(fusion_repeats=0)
        with self.assertRaisesRegex(ValueError, "data"):
            T.train_3dssm([1, 2, 3])
        with self.assertRaisesRegex(ValueError, "labels"):
            T.BlockData(["a"], ["n"], [0], [[0, 0, 0]], np.zeros((1, 32, 64, 64)),
                        np.zeros((1, 32)), [2])
