"""Tests of keras_medseg.metrics.aggregate against SciPy."""
import json

import numpy as np
import tensorflow as tf
from scipy import stats

from keras_medseg.metrics import Summary, summarize, summarize_per_class


class SummarizeTest(tf.test.TestCase):

    def test_matches_scipy(self):
        rng = np.random.default_rng(0)
        for n in (2, 3, 10, 57):
            with self.subTest(n=n):
                x = rng.normal(0.7, 0.1, n)
                s = summarize(x)
                self.assertEqual((s.n, s.n_nan), (n, 0))
                self.assertAllClose(s.mean, np.mean(x))
                self.assertAllClose(s.sem, stats.sem(x))
                low, high = stats.t.interval(0.95, n - 1, loc=np.mean(x), scale=stats.sem(x))
                self.assertAllClose([s.ci95_low, s.ci95_high], [low, high])

    def test_hand_worked_case(self):
        # [1, 2, 3]: mean 2, sample std 1, SEM 1/sqrt(3).
        s = summarize([1, 2, 3])
        self.assertAllClose(s.mean, 2.0)
        self.assertAllClose(s.sem, 1 / np.sqrt(3))
        half = stats.t.ppf(0.975, 2) / np.sqrt(3)
        self.assertAllClose([s.ci95_low, s.ci95_high], [2 - half, 2 + half])

    def test_nans_are_skipped_and_counted(self):
        x = np.array([[0.5, np.nan], [0.7, 0.9], [np.nan, np.nan]])
        s = summarize(x)
        self.assertEqual((s.n, s.n_nan), (3, 3))
        self.assertAllClose(s.mean, 0.7)
        self.assertAllClose(s.sem, stats.sem([0.5, 0.7, 0.9]))
        self.assertFalse(np.isnan(x[0, 0]))  # input untouched
        self.assertTrue(np.isnan(x[0, 1]))

    def test_small_and_degenerate_samples(self):
        one = summarize([0.3, np.nan])
        self.assertEqual((one.n, one.n_nan, one.mean), (1, 1, 0.3))
        self.assertTrue(np.isnan([one.sem, one.ci95_low, one.ci95_high]).all())
        none = summarize([np.nan, np.nan])
        self.assertEqual((none.n, none.n_nan), (0, 2))
        self.assertTrue(np.isnan([none.mean, none.sem, none.ci95_low, none.ci95_high]).all())
        empty = summarize([])
        self.assertEqual((empty.n, empty.n_nan), (0, 0))
        const = summarize([0.25] * 4)
        self.assertEqual((const.sem, const.ci95_low, const.ci95_high), (0.0, 0.25, 0.25))
        inf = summarize([1.0, np.inf, 2.0])
        self.assertEqual(inf.mean, np.inf)
        self.assertTrue(np.isnan(inf.sem))
        self.assertEqual(summarize([True, False, True, True]).mean, 0.75)

    def test_as_dict_and_str(self):
        s = summarize([0.6, 0.8, np.nan])
        d = s.as_dict()
        self.assertEqual(set(d), {"n", "n_nan", "mean", "sem", "ci95_low", "ci95_high"})
        json.dumps(d)
        self.assertIn("0.7000", str(s))
        self.assertIn("n=2", str(s))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "values must be numeric"):
            summarize(["a", "b"])
        with self.assertRaisesRegex(ValueError, "values must be numeric"):
            summarize([[1.0], [1.0, 2.0]])


class SummarizePerClassTest(tf.test.TestCase):

    def test_columns(self):
        values = np.array([[0.9, np.nan], [0.7, 0.2], [0.8, 0.4]])
        out = summarize_per_class(values, class_names=["CSF", "GM"])
        self.assertEqual(list(out), ["CSF", "GM"])
        self.assertIsInstance(out["CSF"], Summary)
        self.assertAllClose(out["CSF"].mean, 0.8)
        self.assertAllClose(out["CSF"].sem, stats.sem([0.9, 0.7, 0.8]))
        self.assertEqual((out["GM"].n, out["GM"].n_nan), (2, 1))
        self.assertEqual(list(summarize_per_class(values)), ["0", "1"])

    def test_errors(self):
        cases = [
            (dict(values=np.zeros(3)), "values must have shape \\(batch, classes\\)"),
            (dict(values=np.zeros((2, 2)), class_names=["a"]), "class_names must hold 2"),
            (dict(values=np.zeros((2, 2)), class_names=["a", "a"]), "class_names must hold 2"),
            (dict(values=np.zeros((2, 2)), class_names=["a", 1]), "class_names must hold 2"),
            (dict(values=np.zeros((2, 2)), class_names="ab"), "class_names must be a sequence"),
            (dict(values=[["x", "y"]]), "values must be numeric"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    summarize_per_class(**kwargs)


if __name__ == "__main__":
    tf.test.main()
