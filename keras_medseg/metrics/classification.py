"""Classification metrics (binary and one-vs-rest multi-class) and the nerve original's report
files (``<prefix>_CM.txt``, ``<prefix>_F1.txt``, ``<prefix>_AUC.txt``, ``<prefix>_roc.png``).

scikit-learn computes the confusion matrix, the ROC curves and the areas under them; this
module derives the per-class one-vs-rest counts and rates from the confusion matrix.

Definitions (per class ``k``, one-vs-rest; ``n`` samples)
---------------------------------------------------------
* ``TP`` = true k predicted k, ``FN`` = true k predicted other, ``FP`` = true other predicted k,
  ``TN`` = the rest.
* sensitivity (recall, TPR) = TP/(TP+FN); specificity (TNR) = TN/(TN+FP);
  PPV (precision) = TP/(TP+FP); NPV = TN/(TN+FN); accuracy = (TP+TN)/n;
  F1 = 2 PPV Sens/(PPV+Sens) = 2TP/(2TP+FP+FN); F1 negative = 2 NPV Spec/(NPV+Spec)
  = 2TN/(2TN+FN+FP); MCC = (TP TN - FP FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
  The count forms of F1 equal the rate forms wherever those are defined and also give 0 when
  PPV = Sens = 0 (as scikit-learn does).
* A zero denominator gives NaN: never an exception and never a silent 0 (scikit-learn's
  ``zero_division=np.nan``). scikit-learn's ``matthews_corrcoef`` returns 0 when undefined
  (one true class only, or one predicted class only); :func:`classification_report` reports
  NaN there instead.
* Averages: ``micro`` pools the counts of all classes and applies the formulas to the sums;
  ``macro`` is the mean over classes and ``weighted`` the mean weighted by each class's
  support (TP+FN). Both skip classes whose value is NaN (as scikit-learn does with
  ``zero_division=np.nan``) and are NaN only when every class is.
* ROC: per class (``y_true == k`` against ``y_score[:, k]``); micro: the one-hot matrix
  raveled against the raveled scores; macro: each defined class's TPR interpolated linearly
  over the union of all their FPR points, averaged, and integrated with the trapezoid rule
  (the nerve original's recipe). Linear interpolation between union points cuts the corners
  of the step-shaped ROC curves, so this macro AUC is usually a little higher than the mean
  of the per-class AUCs; the report also gives that mean (``auc_macro_mean``, what
  ``sklearn.metrics.roc_auc_score(multi_class="ovr", average="macro")`` computes).
  A class with no positive or no negative sample in ``y_true`` has no ROC curve: its AUC is
  NaN, the macro curve leaves it out, and the report says so in ``notes``.
"""
from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

import numpy as np

from keras_medseg.utils import new_figure, save_figure, write_text

__all__ = [
    "BinaryMetrics",
    "ClassificationReport",
    "ConfusionCounts",
    "RocCurve",
    "classification_report",
    "confusion_counts",
    "format_auc_report",
    "format_confusion_matrix",
    "format_f1_report",
    "plot_roc",
    "write_auc_report",
    "write_classification_reports",
    "write_confusion_matrix",
    "write_f1_report",
]


@dataclasses.dataclass(frozen=True)
class ConfusionCounts:
    """One-vs-rest counts of a ``C``-class problem.

    Attributes
    ----------
    matrix : ndarray of int64, shape (C, C)
        scikit-learn's confusion matrix: rows are true classes, columns predicted classes.
    tp, tn, fp, fn : ndarray of int64, shape (C,)
        True positives, true negatives, false positives and false negatives of each class
        against all the others.
    """

    matrix: np.ndarray
    tp: np.ndarray
    tn: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def support(self):
        """Number of true samples of each class (TP + FN), shape (C,)."""
        return self.tp + self.fn


@dataclasses.dataclass(frozen=True)
class BinaryMetrics:
    """Counts and rates of the one-vs-rest problems.

    In :attr:`ClassificationReport.per_class` every field is an array of shape (C,); in the
    ``micro``, ``macro`` and ``weighted`` averages every field is a float (the micro counts
    are the pooled sums, the macro/weighted counts the (weighted) means over classes).
    """

    tp: np.ndarray | float
    tn: np.ndarray | float
    fp: np.ndarray | float
    fn: np.ndarray | float
    sensitivity: np.ndarray | float
    specificity: np.ndarray | float
    ppv: np.ndarray | float
    npv: np.ndarray | float
    accuracy: np.ndarray | float
    f1: np.ndarray | float
    f1_negative: np.ndarray | float
    mcc: np.ndarray | float

    def as_dict(self):
        """The fields as a dict of floats (averages) or lists (per class)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """A ROC curve: ``fpr`` and ``tpr`` (float64, same length), the score ``thresholds``
    (``None`` for the interpolated macro curve) and the area under the curve."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray | None
    auc: float


@dataclasses.dataclass(frozen=True)
class ClassificationReport:
    """Everything :func:`classification_report` computes.

    Attributes
    ----------
    class_names : tuple of str, length C
    n : int
        Number of samples.
    counts : ConfusionCounts
    y_pred : ndarray of int64, shape (n,)
        The predicted labels the counts were computed from.
    accuracy : float
        Overall accuracy (correct / n).
    mcc : float
        Multi-class Matthews correlation (scikit-learn), NaN where undefined.
    per_class : BinaryMetrics
        Arrays of shape (C,).
    micro, macro, weighted : BinaryMetrics
        Floats; see the module docstring.
    roc_per_class : tuple of (RocCurve or None), length C
        ``None`` for a class without positive or negative samples.
    roc_micro, roc_macro : RocCurve or None
    auc_per_class : ndarray of float64, shape (C,)
        NaN where the ROC curve is undefined.
    auc_micro, auc_macro : float
        ``auc_macro`` integrates the interpolated macro curve (the original's recipe).
    auc_macro_mean : float
        Mean of the defined per-class AUCs (NaN when none is defined).
    text : str
        scikit-learn's text ``classification_report`` (4 digits, NaN where undefined).
    notes : tuple of str
        Why any value is NaN (classes absent from ``y_true``, classes never predicted...).
    """

    class_names: tuple
    n: int
    counts: ConfusionCounts
    y_pred: np.ndarray
    accuracy: float
    mcc: float
    per_class: BinaryMetrics
    micro: BinaryMetrics
    macro: BinaryMetrics
    weighted: BinaryMetrics
    roc_per_class: tuple
    roc_micro: RocCurve | None
    roc_macro: RocCurve | None
    auc_per_class: np.ndarray
    auc_micro: float
    auc_macro: float
    auc_macro_mean: float
    text: str
    notes: tuple

    def as_dict(self):
        """A JSON-ready summary (no ROC curve points)."""
        return {
            "class_names": list(self.class_names),
            "n": self.n,
            "confusion_matrix": self.counts.matrix.tolist(),
            "accuracy": _plain(self.accuracy),
            "mcc": _plain(self.mcc),
            "per_class": self.per_class.as_dict(),
            "micro": self.micro.as_dict(),
            "macro": self.macro.as_dict(),
            "weighted": self.weighted.as_dict(),
            "auc_per_class": _plain(self.auc_per_class),
            "auc_micro": _plain(self.auc_micro),
            "auc_macro": _plain(self.auc_macro),
            "auc_macro_mean": _plain(self.auc_macro_mean),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Validation helpers


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_num_classes(num_classes):
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    return int(num_classes)


def _as_labels(labels, *, name):
    """Return ``labels`` as a 1-D int64 array; raise unless they are non-negative integers."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels; got non-integer values")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must hold non-negative class labels; got {int(arr.min())}")
    return arr.astype(np.int64)


def _check_label_range(labels, num_classes, *, name, num_name):
    top = int(labels.max())
    if top >= num_classes:
        raise ValueError(f"{num_name}={num_classes} is too small for {name}: "
                         f"it holds label {top}")


def _check_class_names(class_names):
    if isinstance(class_names, str) or not isinstance(class_names, (list, tuple)):
        raise ValueError(f"class_names must be a list or tuple of strings; got {class_names!r}")
    names = tuple(class_names)
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes; got {names!r}")
    if not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"class_names must be non-empty strings; got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique; got {names!r}")
    return names


def _div(num, den):
    """Elementwise ``num / den`` in float64, NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out if out.ndim else float(out)


def _nanmean(values, weights=None):
    """Mean (optionally weighted) of the non-NaN entries; NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    if weights is None:
        return float(values[ok].mean()) if ok.any() else float("nan")
    weights = np.asarray(weights, dtype=np.float64)[ok]
    total = weights.sum()
    return float(np.dot(values[ok], weights) / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# Counts and rates


def confusion_counts(y_true, y_pred, num_classes):
    """Per-class one-vs-rest TP, TN, FP and FN from scikit-learn's confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        True and predicted class labels in ``[0, num_classes)`` (bool and integer-valued
        floats are accepted).
    num_classes : int
        Number of classes ``C`` (at least 2); classes that occur in neither array count too.

    Returns
    -------
    ConfusionCounts
        ``matrix`` (C, C) and ``tp``, ``tn``, ``fp``, ``fn`` (C,), all int64.

    Raises
    ------
    ValueError
        If an array is not 1-D, is empty, holds non-integer or negative labels, the two
        lengths differ, or a label is ``>= num_classes``.

    Examples
    --------
    >>> c = confusion_counts([0, 1, 1, 2], [0, 1, 2, 2], 3)
    >>> c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.tn.tolist()
    ([1, 1, 1], [0, 0, 1], [0, 1, 0], [3, 2, 2])
    """
    from sklearn.metrics import confusion_matrix

    num_classes = _check_num_classes(num_classes)
    y_true = _as_labels(y_true, name="y_true")
    y_pred = _as_labels(y_pred, name="y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got "
                         f"y_true.shape={y_true.shape} and y_pred.shape={y_pred.shape}")
    _check_label_range(y_true, num_classes, name="y_true", num_name="num_classes")
    _check_label_range(y_pred, num_classes, name="y_pred", num_name="num_classes")
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)
    tp = np.diag(matrix).copy()
    fn = matrix.sum(axis=1) - tp
    fp = matrix.sum(axis=0) - tp
    tn = matrix.sum() - tp - fn - fp
    return ConfusionCounts(matrix=matrix, tp=tp, tn=tn, fp=fp, fn=fn)


def _rates(tp, tn, fp, fn):
    """Every rate of :class:`BinaryMetrics` from counts (arrays or scalars)."""
    tp, tn, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, tn, fp, fn))
    mcc_den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return dict(
        sensitivity=_div(tp, tp + fn),
        specificity=_div(tn, tn + fp),
        ppv=_div(tp, tp + fp),
        npv=_div(tn, tn + fn),
        accuracy=_div(tp + tn, tp + tn + fp + fn),
        f1=_div(2 * tp, 2 * tp + fp + fn),
        f1_negative=_div(2 * tn, 2 * tn + fn + fp),
        mcc=_div(tp * tn - fp * fn, mcc_den),
    )


def _multiclass_mcc(y_true, y_pred, matrix):
    """scikit-learn's multi-class MCC, NaN where sklearn's denominator is zero (it returns 0)."""
    from sklearn.metrics import matthews_corrcoef

    n = float(matrix.sum())
    t = matrix.sum(axis=1).astype(np.float64)
    p = matrix.sum(axis=0).astype(np.float64)
    if (n * n - np.dot(t, t)) * (n * n - np.dot(p, p)) == 0:
        return float("nan")
    return float(matthews_corrcoef(y_true, y_pred))


def _check_scores(y_score, n, class_names):
    """Return scores as a float64 (n, C) array (binary (n,) scores become [-s, s])."""
    score = np.asarray(y_score)
    if score.dtype.kind not in "biuf":
        raise ValueError(f"y_score must be numeric; got dtype {score.dtype}")
    score = score.astype(np.float64)
    if score.ndim == 1:
        if len(class_names) != 2:
            raise ValueError(f"y_score of shape (n,) is for binary problems only; "
                             f"class_names has {len(class_names)} classes: {class_names!r}")
        score = score[:, None]
    elif score.ndim == 2:
        if score.shape[1] != len(class_names):
            raise ValueError(f"y_score has {score.shape[1]} columns but class_names names "
                             f"{len(class_names)} classes: {class_names!r}")
    else:
        raise ValueError(f"y_score must have shape (n,) or (n, C); got {score.shape}")
    if score.shape[0] != n:
        raise ValueError(f"y_score has {score.shape[0]} rows but y_true has {n} samples")
    if not np.all(np.isfinite(score)):
        raise ValueError("y_score must be finite; it contains NaN or inf")
    return score


# --------------------------------------------------------------------------------------------
# ROC


def _roc(y_binary, score):
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, thresholds = roc_curve(y_binary, score)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, auc=float(auc(fpr, tpr)))


def _macro_roc(curves):
    from sklearn.metrics import auc

    defined = [c for c in curves if c is not None]
    if not defined:
        return None
    grid = np.unique(np.concatenate([c.fpr for c in defined]))
    mean_tpr = np.mean([np.interp(grid, c.fpr, c.tpr) for c in defined], axis=0)
    return RocCurve(fpr=grid, tpr=mean_tpr, thresholds=None, auc=float(auc(grid, mean_tpr)))


# --------------------------------------------------------------------------------------------
# The report


def classification_report(y_true, y_score, *, class_names, threshold=0.5):
    """Counts, rates, averages, MCC, ROC curves and AUCs of a classifier's scores.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
        True class labels in ``[0, C)``.
    y_score : array-like of float, shape (n, C) or (n,)
        Class probabilities (or any scores; ROC only uses their order). Predictions are
        ``argmax(y_score, axis=1)``. Shape (n,) is for binary problems: the score of class 1,
        predicted as class 1 where ``y_score >= threshold``; class 0's ROC uses ``-y_score``.
    class_names : sequence of str, length C
        Unique class names (C >= 2), in label order.
    threshold : float, optional
        Decision threshold for (n,) scores (default 0.5, for probabilities); ignored for
        (n, C) scores.

    Returns
    -------
    ClassificationReport
        See its attributes; NaN marks every undefined value and ``notes`` says why.

    Raises
    ------
    ValueError
        If ``y_true`` is not a non-empty 1-D array of non-negative integer labels, holds a
        label ``>= C``; if ``class_names`` is not a sequence of >= 2 unique non-empty strings;
        if ``y_score`` is not numeric and finite, its shape does not match ``(n, C)`` (or
        ``(n,)`` with two classes); or if ``threshold`` is not a finite number.

    Examples
    --------
    >>> r = classification_report([0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4],
    ...                            [0.7, 0.3]], class_names=["neg", "pos"])
    >>> r.accuracy, r.per_class.sensitivity.tolist()
    (0.75, [1.0, 0.5])
    """
    from sklearn.metrics import classification_report as sk_report

    class_names = _check_class_names(class_names)
    num_classes = len(class_names)
    y_true = _as_labels(y_true, name="y_true")
    _check_label_range(y_true, num_classes, name="y_true", num_name="len(class_names)")
    score = _check_scores(y_score, y_true.size, class_names)
    if score.shape[1] == 1:
        if not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number; got {threshold!r}")
        y_pred = (score[:, 0] >= threshold).astype(np.int64)
        score = np.concatenate([-score, score], axis=1)
    else:
        y_pred = np.argmax(score, axis=1).astype(np.int64)

    counts = confusion_counts(y_true, y_pred, num_classes)
    notes = []
    per_class = BinaryMetrics(tp=counts.tp, tn=counts.tn, fp=counts.fp, fn=counts.fn,
                              **_rates(counts.tp, counts.tn, counts.fp, counts.fn))
    sums = [int(v.sum()) for v in (counts.tp, counts.tn, counts.fp, counts.fn)]
    micro = BinaryMetrics(*sums, **_rates(*sums))
    support = counts.support
    averaged = {}
    for kind, weights in (("macro", None), ("weighted", support)):
        averaged[kind] = BinaryMetrics(**{
            f.name: _nanmean(getattr(per_class, f.name), weights)
            for f in dataclasses.fields(BinaryMetrics)})

    for k, name in enumerate(class_names):
        if support[k] == 0:
            notes.append(f"class {name!r} does not occur in y_true: its sensitivity, F1 and "
                         f"ROC AUC are undefined (NaN)")
        elif support[k] == counts.matrix.sum():
            notes.append(f"class {name!r} is the only class in y_true: its specificity and "
                         f"ROC AUC are undefined (NaN)")
        if counts.tp[k] + counts.fp[k] == 0:
            notes.append(f"class {name!r} is never predicted: its PPV is undefined (NaN)")
    mcc = _multiclass_mcc(y_true, y_pred, counts.matrix)
    if np.isnan(mcc):
        notes.append("multi-class MCC is undefined (NaN): y_true or the predictions hold "
                     "a single class")

    onehot = np.eye(num_classes, dtype=np.int64)[y_true]
    roc_per_class = tuple(
        _roc(onehot[:, k], score[:, k]) if 0 < support[k] < y_true.size else None
        for k in range(num_classes))
    auc_per_class = np.array([np.nan if c is None else c.auc for c in roc_per_class])
    roc_micro = _roc(onehot.ravel(), score.ravel())
    roc_macro = _macro_roc(roc_per_class)
    if roc_macro is not None and any(c is None for c in roc_per_class):
        notes.append("the macro ROC curve averages only the classes whose ROC is defined")

    text = sk_report(y_true, y_pred, labels=np.arange(num_classes), target_names=class_names,
                     digits=4, zero_division=np.nan)
    return ClassificationReport(
        class_names=class_names, n=int(y_true.size), counts=counts, y_pred=y_pred,
        accuracy=float(np.mean(y_true == y_pred)), mcc=mcc, per_class=per_class, micro=micro,
        macro=averaged["macro"], weighted=averaged["weighted"], roc_per_class=roc_per_class,
        roc_micro=roc_micro, roc_macro=roc_macro, auc_per_class=auc_per_class,
        auc_micro=roc_micro.auc, auc_macro=float("nan") if roc_macro is None else roc_macro.auc,
        auc_macro_mean=_nanmean(auc_per_class),
        text=text, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Report files


def _check_report(report):
    if not isinstance(report, ClassificationReport):
        raise ValueError(f"report must be a ClassificationReport; got {type(report).__name__}")
    return report


def _fmt(value):
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    return f"{float(value):.4f}"


def format_confusion_matrix(report):
    """The confusion matrix as tab-separated text: a header row of predicted class names,
    then one row per true class starting with its name."""
    report = _check_report(report)
    lines = ["# confusion matrix: rows = true class, columns = predicted class",
             "\t".join(["true\\pred", *report.class_names])]
    for name, row in zip(report.class_names, report.counts.matrix):
        lines.append("\t".join([name, *(str(int(v)) for v in row)]))
    return "\n".join(lines) + "\n"


def format_f1_report(report):
    """The text of ``<prefix>_F1.txt`` (see :func:`write_f1_report`)."""
    report = _check_report(report)
    lines = [f"samples: {report.n}", f"accuracy: {_fmt(report.accuracy)}", ""]
    for kind in ("micro", "macro", "weighted"):
        avg = getattr(report, kind)
        lines += [f"{kind} precision: {_fmt(avg.ppv)}",
                  f"{kind} recall: {_fmt(avg.sensitivity)}",
                  f"{kind} F1: {_fmt(avg.f1)}"]
    lines += ["", "classification report:", report.text.rstrip("\n"), "",
              f"multi-class MCC: {_fmt(report.mcc)}", "",
              "one-vs-rest metrics per class (macro = mean over classes, micro = pooled "
              "counts, weighted = mean weighted by support):"]
    header = ["class", "TP", "TN", "FP", "FN", "sensitivity", "specificity", "PPV", "NPV",
              "accuracy", "F1 positive", "F1 negative", "MCC"]
    order = ["tp", "tn", "fp", "fn", "sensitivity", "specificity", "ppv", "npv", "accuracy",
             "f1", "f1_negative", "mcc"]
    rows = [[name, *(_fmt(getattr(report.per_class, f)[k]) for f in order)]
            for k, name in enumerate(report.class_names)]
    for kind in ("micro", "macro", "weighted"):
        avg = getattr(report, kind)
        rows.append([kind, *(_fmt(getattr(avg, f)) for f in order)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if report.notes:
        lines += ["", "notes:", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


def format_auc_report(report):
    """The text of ``<prefix>_AUC.txt`` (see :func:`write_auc_report`)."""
    report = _check_report(report)
    lines = ["ROC AUC per class (one-vs-rest):"]
    lines += [f"{name}: {_fmt(a)}" for name, a in zip(report.class_names, report.auc_per_class)]
    lines += ["", f"micro-average AUC (one-hot labels raveled against scores): "
                  f"{_fmt(report.auc_micro)}",
              f"macro-average AUC (mean TPR interpolated over the union of FPRs): "
              f"{_fmt(report.auc_macro)}",
              f"mean of the per-class AUCs (sklearn roc_auc_score, ovr, macro): "
              f"{_fmt(report.auc_macro_mean)}"]
    auc_notes = [n for n in report.notes if "ROC" in n]
    if auc_notes:
        lines += ["", "notes:", *(f"- {n}" for n in auc_notes)]
    return "\n".join(lines) + "\n"


def write_confusion_matrix(path, report):
    """Write the confusion matrix as tab-separated text (rows = true class, columns =
    predicted class, with class-name headers) to ``path`` atomically; return the path."""
    return write_text(path, format_confusion_matrix(report))


def write_f1_report(path, report):
    """Write the nerve original's ``F1.txt`` to ``path`` atomically; return the path.

    Contents: sample count and accuracy; micro / macro / weighted precision, recall and F1;
    scikit-learn's classification report; multi-class MCC; a table of the one-vs-rest TP, TN,
    FP, FN, sensitivity, specificity, PPV, NPV, accuracy, F1 positive, F1 negative and MCC
    per class and for the micro, macro and weighted averages; the report's notes. Values are
    printed with 4 decimals, ``nan`` where undefined.
    """
    return write_text(path, format_f1_report(report))


def write_auc_report(path, report):
    """Write the per-class, micro and macro ROC AUCs (and notes on undefined ones) to
    ``path`` atomically; return the path."""
    return write_text(path, format_auc_report(report))


def plot_roc(report, path=None, *, title=None):
    """Draw every defined per-class ROC curve, the micro and macro curves and the chance
    diagonal in one figure; save it to ``path`` (format from the suffix) when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    report = _check_report(report)
    fig = new_figure(figsize=(6, 6))
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in zip(report.class_names, report.roc_per_class):
        if curve is not None:
            ax.plot(curve.fpr, curve.tpr, lw=1.5, label=f"{name} (AUC = {curve.auc:.3f})")
    if report.roc_micro is not None:
        ax.plot(report.roc_micro.fpr, report.roc_micro.tpr, ls=":", lw=2.5,
                label=f"micro-average (AUC = {report.auc_micro:.3f})")
    if report.roc_macro is not None:
        ax.plot(report.roc_macro.fpr, report.roc_macro.tpr, ls=":", lw=2.5,
                label=f"macro-average (AUC = {report.auc_macro:.3f})")
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title or "ROC curves")
    ax.legend(loc="lower right", fontsize="small")
    if path is not None:
        save_figure(fig, path)
    return fig


def write_classification_reports(out_dir, prefix, y_true, y_score, *, class_names,
                                 threshold=0.5):
    """Compute :func:`classification_report` and write the nerve original's four files.

    Parameters
    ----------
    out_dir : str or Path
        Folder for the files (created when missing).
    prefix : str
        File-name prefix, e.g. ``"MobileNetV2_test"``; no path separators.
    y_true, y_score, class_names, threshold
        As for :func:`classification_report`.

    Returns
    -------
    report : ClassificationReport
    paths : dict
        ``{"CM": ..., "F1": ..., "AUC": ..., "roc": ...}``: the ``Path`` of
        ``<prefix>_CM.txt``, ``<prefix>_F1.txt``, ``<prefix>_AUC.txt`` and ``<prefix>_roc.png``.

    Raises
    ------
    ValueError
        If ``prefix`` is not a non-empty string without path separators, or as
        :func:`classification_report` raises.
    """
    if not isinstance(prefix, str) or not prefix or "/" in prefix or "\\" in prefix \
            or prefix in (".", ".."):
        raise ValueError(f"prefix must be a non-empty file-name prefix without path "
                         f"separators; got {prefix!r}")
    report = classification_report(y_true, y_score, class_names=class_names,
                                   threshold=threshold)
    out_dir = Path(out_dir)
    paths = {
        "CM": write_confusion_matrix(out_dir / f"{prefix}_CM.txt", report),
        "F1": write_f1_report(out_dir / f"{prefix}_F1.txt", report),
        "AUC": write_auc_report(out_dir / f"{prefix}_AUC.txt", report),
        "roc": out_dir / f"{prefix}_roc.png",
    }
    plot_roc(report, paths["roc"], title=f"ROC: {prefix}")
    return report, paths
