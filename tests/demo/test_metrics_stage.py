"""The demo's metrics stage end to end (quick size)."""
import csv
import os

import numpy as np
import tensorflow as tf

from keras_medseg import demo, metrics
from keras_medseg.demo import metrics_stage


class MetricsStageTest(tf.test.TestCase):

    def test_stage_writes_every_artifact_with_consistent_numbers(self):
        out = os.path.join(self.get_temp_dir(), "demo")
        report = demo.run_demo(out, stages=["metrics"], log=lambda *_: None)
        stage_dir = os.path.join(out, "metrics")
        result = demo._load_result(os.path.join(stage_dir, "stage_result.json"))
        for a in result.artifacts:
            self.assertTrue(os.path.getsize(os.path.join(stage_dir, a.path)) > 0, a.path)
        text = report.read_text()
        self.assertIn("FROC curve", text)
        with open(os.path.join(stage_dir, "overlap.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertLen(rows, 4 * 3)
        dice = np.array([float(r["dice"]) for r in rows]).reshape(4, 3)
        iou = np.array([float(r["iou"]) for r in rows]).reshape(4, 3)
        self.assertAllClose(dice, 2 * iou / (1 + iou))
        # Larger perturbations score worse.
        self.assertTrue(np.all(dice[0] > dice[-1]))

    def test_phantom_against_independent_dice(self):
        rng = np.random.default_rng(0)
        truth = metrics_stage.phantom((20, 24, 24), rng)
        pred = metrics_stage.perturbed_prediction(truth, rng, displacement=2, speckles=10)
        d = metrics.compute_dice(truth[None], pred[None], labels=[1, 2, 3])[0]
        for c, lab in enumerate((1, 2, 3)):
            a, b = truth == lab, pred == lab
            self.assertAllClose(d[c], 2 * (a & b).sum() / (a.sum() + b.sum()))
