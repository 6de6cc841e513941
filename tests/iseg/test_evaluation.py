"""Whole-subject evaluation: label maps, per-class tables against the metrics module, files."""
import csv

import numpy as np
import tensorflow as tf

from keras_medseg.io.hdf5 import write_iseg_hdf5
from keras_medseg.iseg import evaluation as E
from keras_medseg.metrics import compute_dice, compute_surface_metrics


def _label_maps(seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in (20, 24, 22)], indexing="ij")
    r = np.sqrt((z - 10) ** 2 + (y - 12) ** 2 + (x - 11) ** 2)
    truth = np.zeros(r.shape, np.uint8)
    truth[r < 9] = 1
    truth[r < 7] = 2
    truth[r < 4] = 3
    pred = truth.copy()
    idx = rng.integers(0, pred.size, 60)
    pred.reshape(-1)[idx] = rng.integers(0, 4, 60)
    pred[12:, :, :][pred[12:, :, :] == 2] = 3  # a systematic error in one part
    return truth, pred


def _oracle(x):
    """A "model" whose logits pick the class stored in channel 0 (rounded)."""
    labels = np.clip(np.rint(np.asarray(x)[..., 0]), 0, 3).astype(int)
    return 10.0 * np.eye(4, dtype=np.float32)[labels]


class ScoreLabelsTest(tf.test.TestCase):
    def test_table_matches_metrics_module(self):
        truth, pred = _label_maps(0)
        spacing = (1.0, 0.8, 1.2)
        rows = E.score_labels(truth, pred, spacing=spacing)
        self.assertEqual([r["class"] for r in rows], ["CSF", "GM", "WM"])
        dice = compute_dice(truth[None], pred[None], labels=[1, 2, 3])[0]
        for i, label in enumerate((1, 2, 3)):
            t, p = truth == label, pred == label
            surf = compute_surface_metrics(t, p, spacing=spacing, mode="surface")
            evs = compute_surface_metrics(t, p, spacing=spacing, mode="evalseg")
            self.assertAllClose(rows[i]["DSC"], dice[i])
            self.assertAllClose(rows[i]["DSC"], 2 * (t & p).sum() / (t.sum() + p.sum()))
            self.assertAllClose(rows[i]["MHD_surface"], surf["hd95"])
            self.assertAllClose(rows[i]["ASD_surface"], surf["asd"])
            self.assertAllClose(rows[i]["MHD_evalseg"], evs["hd95"])
            self.assertAllClose(rows[i]["ASD_evalseg"], evs["asd"])
        self.assertGreater(rows[1]["MHD_surface"], 0)

    def test_identical_maps_are_perfect(self):
        truth, _ = _label_maps(1)
        for row in E.score_labels(truth, truth):
            self.assertEqual(row["DSC"], 1.0)
            for col in E.METRIC_COLUMNS[1:]:
                self.assertEqual(row[col], 0.0)

    def test_class_names_must_match_labels(self):
        truth, pred = _label_maps(0)
        with self.assertRaisesRegex(ValueError, "class_names"):
            E.score_labels(truth, pred, labels=(1, 2))

    def test_summary_means(self):
        rows = []
        for s in range(3):
            truth, pred = _label_maps(s)
            rows += [{"subject": s, **r} for r in E.score_labels(truth, pred)]
        summary = E.summarize_rows(rows)
        self.assertEqual([r["class"] for r in summary], ["CSF", "GM", "WM", "mean"])
        for i, name in enumerate(("CSF", "GM", "WM")):
            for col in E.METRIC_COLUMNS:
                expect = np.mean([r[col] for r in rows if r["class"] == name])
                self.assertAllClose(summary[i][col], expect)
        self.assertAllClose(summary[-1]["DSC"], np.mean([r["DSC"] for r in summary[:3]]))
        self.assertEqual(summary[0]["n"], 3)


class PredictAndEvaluateTest(tf.test.TestCase):
    def test_predict_labels_reproduces_oracle(self):
        truth, _ = _label_maps(2)
        data = truth[..., None].astype(np.float32)
        for window, overlap in (((16, 16, 16), 0.5), ((8, 16, 24), 0.25)):
            labels, probs = E.predict_labels(_oracle, data, window=window, overlap=overlap,
                                             batch_size=3, return_probabilities=True)
            self.assertEqual(labels.dtype, np.uint8)
            self.assertAllEqual(labels, truth)
            self.assertAllClose(probs.sum(-1), np.ones(truth.shape), atol=1e-5)

    def test_predict_labels_rejects_bad_data(self):
        with self.assertRaisesRegex(ValueError, "data"):
            E.predict_labels(_oracle, np.zeros((8, 8, 8)), window=(8, 8, 8))

    def test_evaluate_subjects_writes_tables_and_figures(self):
        tmp = self.get_temp_dir()
        files = []
        expected = []
        for s in range(2):
            truth, pred = _label_maps(s + 3)
            # channel 0 carries the "prediction" the oracle returns, channel 1 noise
            data = np.stack([pred.astype(np.float32),
                             np.random.default_rng(s).normal(size=pred.shape)], 0)
            files.append(write_iseg_hdf5(f"{tmp}/subject-{s + 1}.h5", data, truth))
            expected += E.score_labels(truth, pred, spacing=(1, 1, 2))
        out = f"{tmp}/eval"
        result = E.evaluate_subjects(_oracle, files, out, window=(16, 16, 16),
                                     spacing=(1, 1, 2))
        self.assertLen(result.rows, 6)
        for got, want in zip(result.rows, expected):
            for col in E.METRIC_COLUMNS:
                self.assertAllClose(got[col], want[col])
        with open(f"{out}/metrics_per_subject.csv", newline="") as f:
            table = list(csv.DictReader(f))
        self.assertEqual([r["subject"] for r in table], ["subject-1"] * 3 + ["subject-2"] * 3)
        self.assertAllClose([float(r["DSC"]) for r in table], [r["DSC"] for r in expected])
        with open(f"{out}/metrics_mean.csv", newline="") as f:
            mean = list(csv.DictReader(f))
        self.assertEqual(mean[-1]["class"], "mean")
        self.assertAllClose(float(mean[-1]["DSC"]), result.mean_dsc)
        for name in ("metrics_per_subject.md", "metrics_mean.md", "overlay_subject-1.png",
                     "overlay_subject-2.png", "pred_subject-1.h5"):
            self.assertTrue(tf.io.gfile.exists(f"{out}/{name}"), name)

    def test_evaluate_errors(self):
        tmp = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "files"):
            E.evaluate_subjects(_oracle, [], tmp)
        path = write_iseg_hdf5(f"{tmp}/nolabel.h5", np.zeros((1, 8, 8, 8)))
        with self.assertRaisesRegex(ValueError, "nolabel.h5"):
            E.evaluate_subjects(_oracle, [path], tmp, window=(8, 8, 8))
        with self.assertRaises(FileNotFoundError):
            E.evaluate_subjects(_oracle, [f"{tmp}/missing.h5"], tmp)

    def test_overlay_shape_check(self):
        with self.assertRaisesRegex(ValueError, "one shape"):
            E.overlay_figure(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.zeros((4, 4, 3)),
                             f"{self.get_temp_dir()}/x.png")
