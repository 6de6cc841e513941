"""Tests of keras_medseg.metrics.classification against scikit-learn and hand-worked cases."""
import json
import os
import warnings

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from sklearn import metrics as skm

from keras_medseg.metrics import (
    ClassificationReport,
    classification_report,
    confusion_counts,
    plot_roc,
    write_auc_report,
    write_classification_reports,
    write_confusion_matrix,
    write_f1_report,
)

NAMES3 = ["nerve", "opening wound", "tendon"]


def _random_problem(seed, n=60, num_classes=3, decimals=1):
    """Labels and softmax-like scores that agree with the labels more often than chance;
    rounding the scores creates ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), y] += 1.0
    score = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    score = np.round(score, decimals)
    return y, score / score.sum(axis=1, keepdims=True)


class ConfusionCountsTest(tf.test.TestCase):

    def test_hand_worked_case(self):
        c = confusion_counts([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0], 3)
        self.assertAllEqual(c.matrix, [[1, 0, 0], [0, 1, 1], [1, 0, 2]])
        self.assertAllEqual(c.tp, [1, 1, 2])
        self.assertAllEqual(c.fp, [1, 0, 1])
        self.assertAllEqual(c.fn, [0, 1, 1])
        self.assertAllEqual(c.tn, [4, 4, 2])
        self.assertAllEqual(c.support, [1, 2, 3])
        self.assertEqual(c.tp.dtype, np.int64)

    def test_matches_sklearn_multilabel_confusion_matrix(self):
        rng = np.random.default_rng(1)
        y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
        c = confusion_counts(y, p, 5)  # class 4 occurs nowhere: all its positives are 0
        ref = skm.multilabel_confusion_matrix(y, p, labels=range(5))
        self.assertAllEqual(c.tn, ref[:, 0, 0])
        self.assertAllEqual(c.fp, ref[:, 0, 1])
        self.assertAllEqual(c.fn, ref[:, 1, 0])
        self.assertAllEqual(c.tp, ref[:, 1, 1])
        self.assertAllEqual(c.tp + c.tn + c.fp + c.fn, np.full(5, 200))

    def test_bool_and_integer_valued_float_labels(self):
        c = confusion_counts(np.array([True, False, True]), np.array([1.0, 0.0, 0.0]), 2)
        self.assertAllEqual(c.tp, [1, 1])
        self.assertAllEqual(c.fn, [0, 1])

    def test_inputs_not_modified(self):
        y = np.array([0, 1, 2]); p = np.array([2, 1, 0])
        confusion_counts(y, p, 3)
        self.assertAllEqual(y, [0, 1, 2])
        self.assertAllEqual(p, [2, 1, 0])

    def test_errors(self):
        cases = [
            (([0, 1], [0, 1], 1), "num_classes"),
            (([0, 1], [0, 1], 2.0), "num_classes"),
            (([0, 1], [0, 1], True), "num_classes"),
            (([0, 3], [0, 1], 3), "num_classes=3 is too small for y_true"),
            (([0, 1], [0, 5], 3), "num_classes=3 is too small for y_pred"),
            (([0, 1, 1], [0, 1], 2), "same shape"),
            (([[0, 1]], [[0, 1]], 2), "y_true must be a 1-D"),
            (([0, 1], [[0, 1]], 2), "y_pred must be a 1-D"),
            (([], [], 2), "y_true must not be empty"),
            (([0, -1], [0, 1], 2), "y_true must hold non-negative"),
            (([0, 0.5], [0, 1], 2), "y_true must hold integer"),
            (([0, 1], [0, np.nan], 2), "y_pred must hold integer"),
            ((["a", "b"], [0, 1], 2), "y_true must hold integer"),
        ]
        for args, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    confusion_counts(*args)


class ClassificationReportTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.parameters(0, 1, 2)
    def test_matches_sklearn(self, seed):
        y, score = _random_problem(seed)
        r = classification_report(y, score, class_names=NAMES3)
        pred = np.argmax(score, axis=1)
        self.assertAllEqual(r.y_pred, pred)
        self.assertEqual(r.n, y.size)
        self.assertAllClose(r.accuracy, skm.accuracy_score(y, pred))
        self.assertAllClose(r.mcc, skm.matthews_corrcoef(y, pred))
        prec, rec, f1, support = skm.precision_recall_fscore_support(
            y, pred, labels=range(3), zero_division=np.nan)
        self.assertAllClose(r.per_class.ppv, prec)
        self.assertAllClose(r.per_class.sensitivity, rec)
        self.assertAllClose(r.per_class.f1, f1)
        self.assertAllEqual(r.counts.support, support)
        for k in range(3):
            pos_t, pos_p = y == k, pred == k
            self.assertAllClose(r.per_class.specificity[k], skm.recall_score(~pos_t, ~pos_p))
            self.assertAllClose(r.per_class.npv[k], skm.precision_score(~pos_t, ~pos_p))
            self.assertAllClose(r.per_class.f1_negative[k], skm.f1_score(~pos_t, ~pos_p))
            self.assertAllClose(r.per_class.mcc[k], skm.matthews_corrcoef(pos_t, pos_p))
            self.assertAllClose(r.per_class.accuracy[k], skm.accuracy_score(pos_t, pos_p))
        for average in ("micro", "macro", "weighted"):
            p_avg, r_avg, f_avg, _ = skm.precision_recall_fscore_support(
                y, pred, labels=range(3), average=average, zero_division=np.nan)
            got = getattr(r, average)
            self.assertAllClose(got.ppv, p_avg, msg=average)
            self.assertAllClose(got.sensitivity, r_avg, msg=average)
            self.assertAllClose(got.f1, f_avg, msg=average)
        # AUC: per class and micro from roc_auc_score; the mean of per-class AUCs from the
        # one-vs-rest macro of roc_auc_score.
        onehot = np.eye(3)[y]
        for k in range(3):
            self.assertAllClose(r.auc_per_class[k], skm.roc_auc_score(y == k, score[:, k]))
        self.assertAllClose(r.auc_micro, skm.roc_auc_score(onehot, score, average="micro"))
        self.assertAllClose(r.auc_macro_mean,
                            skm.roc_auc_score(y, score, multi_class="ovr", average="macro"))
        self.assertEqual(r.notes, ())

    def test_micro_counts_and_rates_are_pooled(self):
        y, score = _random_problem(3)
        r = classification_report(y, score, class_names=NAMES3)
        mcm = skm.multilabel_confusion_matrix(y, np.argmax(score, axis=1)).sum(axis=0)
        tn, fp, fn, tp = mcm.ravel()
        self.assertEqual((r.micro.tp, r.micro.tn, r.micro.fp, r.micro.fn), (tp, tn, fp, fn))
        self.assertAllClose(r.micro.specificity, tn / (tn + fp))
        self.assertAllClose(r.micro.npv, tn / (tn + fn))
        self.assertAllClose(r.micro.accuracy, (tp + tn) / mcm.sum())
        self.assertAllClose(r.micro.mcc, (tp * tn - fp * fn)
                            / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))))
        self.assertAllClose(r.macro.npv, np.mean(r.per_class.npv))
        self.assertAllClose(r.macro.tp, np.mean(r.counts.tp))
        w = r.counts.support / r.counts.support.sum()
        self.assertAllClose(r.weighted.specificity, np.dot(w, r.per_class.specificity))

    def test_macro_roc_follows_the_interpolation_recipe(self):
        y, score = _random_problem(4)
        r = classification_report(y, score, class_names=NAMES3)
        curves = [skm.roc_curve(y == k, score[:, k]) for k in range(3)]
        grid = np.unique(np.concatenate([fpr for fpr, _, _ in curves]))
        mean_tpr = np.zeros_like(grid)
        for fpr, tpr, _ in curves:
            mean_tpr += np.interp(grid, fpr, tpr)
        mean_tpr /= 3
        self.assertAllClose(r.roc_macro.fpr, grid)
        self.assertAllClose(r.roc_macro.tpr, mean_tpr)
        self.assertAllClose(r.auc_macro, skm.auc(grid, mean_tpr))
        self.assertIsNone(r.roc_macro.thresholds)
        for k, (fpr, tpr, thresholds) in enumerate(curves):
            self.assertAllClose(r.roc_per_class[k].fpr, fpr)
            self.assertAllClose(r.roc_per_class[k].tpr, tpr)
            self.assertAllClose(r.roc_per_class[k].thresholds, thresholds)

    def test_perfect_and_inverted_scores(self):
        y = np.array([0, 0, 1, 1, 2, 2])
        perfect = np.eye(3)[y] * 0.8 + 0.1
        r = classification_report(y, perfect, class_names=NAMES3)
        self.assertAllClose(r.auc_per_class, [1.0, 1.0, 1.0])
        self.assertAllClose([r.auc_micro, r.auc_macro, r.accuracy, r.mcc], [1.0] * 4)
        self.assertAllClose(r.per_class.f1_negative, [1.0] * 3)
        # Binary, every score inverted: AUC 0, accuracy 0, MCC -1.
        yb = np.array([0, 0, 1, 1])
        rb = classification_report(yb, [0.9, 0.8, 0.2, 0.1], class_names=["neg", "pos"])
        self.assertAllClose(rb.auc_per_class, [0.0, 0.0])
        self.assertAllClose([rb.accuracy, rb.mcc], [0.0, -1.0])

    def test_binary_1d_scores_match_two_columns(self):
        rng = np.random.default_rng(5)
        y = rng.integers(0, 2, 50)
        s = np.clip(0.35 * y + rng.random(50) * 0.65, 0, 1)
        r1 = classification_report(y, s, class_names=["neg", "pos"])
        r2 = classification_report(y, np.stack([1 - s, s], axis=1), class_names=["neg", "pos"])
        self.assertAllEqual(r1.y_pred, (s >= 0.5).astype(int))
        self.assertAllClose(r1.auc_per_class, r2.auc_per_class)
        self.assertAllClose(r1.auc_per_class[1], skm.roc_auc_score(y, s))
        self.assertAllClose(r1.auc_micro, skm.roc_auc_score(np.eye(2)[y].ravel(),
                                                            np.stack([-s, s], 1).ravel()))
        r3 = classification_report(y, s, class_names=["neg", "pos"], threshold=0.7)
        self.assertAllEqual(r3.y_pred, (s >= 0.7).astype(int))
        self.assertAllClose(r3.per_class.sensitivity[1], skm.recall_score(y, s >= 0.7))

    def test_undefined_values_are_nan_with_notes(self):
        # Class "tendon" never occurs in y_true and is never predicted; everything is
        # predicted as "nerve", so class "opening wound" has no predictions either.
        y = np.array([0, 0, 1, 1, 0])
        score = np.array([[.9, .1, 0], [.8, .1, .1], [.7, .2, .1], [.6, .3, .1], [.5, .2, .3]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = classification_report(y, score, class_names=NAMES3)
        self.assertTrue(np.isnan(r.per_class.ppv[1]))
        self.assertTrue(np.isnan(r.per_class.ppv[2]))
        self.assertTrue(np.isnan(r.per_class.sensitivity[2]))
        self.assertTrue(np.isnan(r.per_class.f1[2]))  # TP = FP = FN = 0
        self.assertEqual(r.per_class.f1[1], 0.0)      # TP = 0 with FN > 0: F1 is 0, not NaN
        self.assertTrue(np.isnan(r.per_class.mcc[2]))
        self.assertTrue(np.isnan(r.auc_per_class[2]))
        self.assertIsNone(r.roc_per_class[2])
        self.assertTrue(np.isnan(r.mcc))
        self.assertEqual(skm.matthews_corrcoef(y, r.y_pred), 0.0)  # sklearn's silent 0
        self.assertAllClose(r.macro.ppv, r.per_class.ppv[0])  # NaN classes skipped
        self.assertAllClose(r.auc_macro_mean, np.mean(r.auc_per_class[:2]))
        self.assertTrue(np.isfinite(r.auc_macro))
        notes = " | ".join(r.notes)
        self.assertIn("'tendon' does not occur in y_true", notes)
        self.assertIn("'opening wound' is never predicted", notes)
        self.assertIn("multi-class MCC is undefined", notes)
        self.assertIn("macro ROC curve averages only", notes)
        json.dumps(r.as_dict())  # NaN-bearing reports still serialise

    def test_single_true_class_gives_nan_specificity_and_auc(self):
        r = classification_report([1, 1, 1], [0.2, 0.7, 0.9], class_names=["neg", "pos"])
        self.assertTrue(np.all(np.isnan(r.auc_per_class)))
        self.assertIsNone(r.roc_macro)
        self.assertTrue(np.isnan(r.auc_macro))
        self.assertTrue(np.isnan(r.per_class.specificity[1]))
        self.assertAllClose(r.per_class.sensitivity[1], 2 / 3)
        self.assertIn("'pos' is the only class in y_true", " ".join(r.notes))

    def test_inputs_not_modified(self):
        y, score = _random_problem(6)
        y0, s0 = y.copy(), score.copy()
        classification_report(y, score, class_names=NAMES3)
        self.assertAllEqual(y, y0)
        self.assertAllEqual(score, s0)

    def test_errors(self):
        y = [0, 1, 2]
        s = np.eye(3)
        cases = [
            (dict(y_true=y, y_score=s, class_names="abc"), "class_names must be a list"),
            (dict(y_true=y, y_score=s, class_names=["a"]), "at least 2"),
            (dict(y_true=y, y_score=s, class_names=["a", "a", "b"]), "unique"),
            (dict(y_true=y, y_score=s, class_names=["a", "", "b"]), "non-empty strings"),
            (dict(y_true=y, y_score=s, class_names=["a", "b"]), "len\\(class_names\\)=2 is too"),
            (dict(y_true=[0, 1, 1], y_score=s, class_names=["a", "b"]),
             "y_score has 3 columns but class_names names 2"),
            (dict(y_true=y, y_score=s[:2], class_names=NAMES3), "y_score has 2 rows"),
            (dict(y_true=y, y_score=s[None], class_names=NAMES3), "y_score must have shape"),
            (dict(y_true=y, y_score=[0.1, 0.2, 0.3], class_names=NAMES3), "binary problems"),
            (dict(y_true=y, y_score=np.where(s == 1, np.nan, s), class_names=NAMES3),
             "y_score must be finite"),
            (dict(y_true=y, y_score=s.astype(str), class_names=NAMES3), "y_score must be numeric"),
            (dict(y_true=[[0, 1, 2]], y_score=s, class_names=NAMES3), "y_true must be a 1-D"),
            (dict(y_true=[0, 1], y_score=[0.1, 0.9], class_names=["a", "b"], threshold=np.inf),
             "threshold"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    classification_report(**kwargs)


class ReportFilesTest(tf.test.TestCase):

    def test_write_classification_reports(self):
        y, score = _random_problem(7, n=40)
        out = self.get_temp_dir()
        report, paths = write_classification_reports(out, "MobileNetV2_test", y, score,
                                                     class_names=NAMES3)
        self.assertIsInstance(report, ClassificationReport)
        self.assertEqual({k: p.name for k, p in paths.items()},
                         {"CM": "MobileNetV2_test_CM.txt", "F1": "MobileNetV2_test_F1.txt",
                          "AUC": "MobileNetV2_test_AUC.txt", "roc": "MobileNetV2_test_roc.png"})
        self.assertEqual(sorted(os.listdir(out)), sorted(p.name for p in paths.values()))

        # CM.txt parses back to sklearn's confusion matrix.
        lines = paths["CM"].read_text().splitlines()
        self.assertTrue(lines[0].startswith("#"))
        self.assertEqual(lines[1].split("\t")[1:], NAMES3)
        self.assertEqual([ln.split("\t")[0] for ln in lines[2:]], NAMES3)
        parsed = np.array([[int(v) for v in ln.split("\t")[1:]] for ln in lines[2:]])
        self.assertAllEqual(parsed, skm.confusion_matrix(y, np.argmax(score, 1)))

        f1 = paths["F1"].read_text()
        pred = np.argmax(score, 1)
        self.assertIn(f"accuracy: {skm.accuracy_score(y, pred):.4f}", f1)
        self.assertIn(f"multi-class MCC: {skm.matthews_corrcoef(y, pred):.4f}", f1)
        self.assertIn(f"macro F1: {skm.f1_score(y, pred, average='macro'):.4f}", f1)
        self.assertIn(f"weighted recall: {skm.recall_score(y, pred, average='weighted'):.4f}",
                      f1)
        self.assertIn(skm.classification_report(y, pred, target_names=NAMES3, digits=4)
                      .splitlines()[2], f1)
        # The per-class table: the tendon row against sklearn's one-vs-rest numbers.
        self.assertIn("F1 positive", f1)
        self.assertIn("F1 negative", f1)
        row = next(ln.split() for ln in f1.splitlines() if ln.startswith("tendon "))
        pos_t, pos_p = y == 2, pred == 2
        tn, fp, fn, tp = skm.confusion_matrix(pos_t, pos_p).ravel()
        self.assertEqual([int(v) for v in row[1:5]], [tp, tn, fp, fn])
        expected = [skm.recall_score(pos_t, pos_p), skm.recall_score(~pos_t, ~pos_p),
                    skm.precision_score(pos_t, pos_p), skm.precision_score(~pos_t, ~pos_p),
                    skm.accuracy_score(pos_t, pos_p), skm.f1_score(pos_t, pos_p),
                    skm.f1_score(~pos_t, ~pos_p), skm.matthews_corrcoef(pos_t, pos_p)]
        self.assertAllClose([float(v) for v in row[5:]], expected, atol=5e-5)

        auc = dict(ln.rsplit(": ", 1) for ln in paths["AUC"].read_text().splitlines()
                   if ": " in ln)
        for k, name in enumerate(NAMES3):
            self.assertAllClose(float(auc[name]), skm.roc_auc_score(y == k, score[:, k]),
                                atol=5e-5)
        micro_key = next(k for k in auc if k.startswith("micro"))
        self.assertAllClose(float(auc[micro_key]), report.auc_micro, atol=5e-5)

        with open(paths["roc"], "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_lower_level_writers_and_nan_formatting(self):
        r = classification_report([0, 0, 1], [[.9, .1], [.8, .2], [.7, .3]],
                                  class_names=["a", "b"])
        out = self.get_temp_dir()
        p = write_f1_report(os.path.join(out, "sub", "x_F1.txt"), r)
        text = p.read_text()
        self.assertIn("nan", text)
        self.assertIn("notes:", text)
        write_confusion_matrix(os.path.join(out, "x_CM.txt"), r)
        self.assertIn("b\t1\t0", (open(os.path.join(out, "x_CM.txt")).read()))
        write_auc_report(os.path.join(out, "x_AUC.txt"), r)
        fig = plot_roc(r)
        ax = fig.axes[0]
        self.assertEqual(len(ax.lines), 2 + 2 + 1)  # two classes, micro, macro, diagonal
        self.assertEqual(sorted(os.listdir(out)), ["sub", "x_AUC.txt", "x_CM.txt"])

    def test_writer_errors(self):
        out = self.get_temp_dir()
        for prefix in ("", "a/b", "..", 3):
            with self.subTest(prefix=prefix):
                with self.assertRaisesRegex(ValueError, "prefix"):
                    write_classification_reports(out, prefix, [0, 1], [0.2, 0.8],
                                                 class_names=["a", "b"])
        with self.assertRaisesRegex(ValueError, "report must be a ClassificationReport"):
            write_f1_report(os.path.join(out, "x.txt"), {"accuracy": 1.0})
        with self.assertRaisesRegex(ValueError, "report must be a ClassificationReport"):
            plot_roc(None)
        self.assertEqual(os.listdir(out), [])


if __name__ == "__main__":
    tf.test.main()
