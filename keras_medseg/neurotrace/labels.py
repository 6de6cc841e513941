"""Block features and automatic tracing-difficulty labels (3D-SSM's labelling step).

Features
--------
:func:`compute_block_features` writes ``features.csv`` beside ``blocks.csv``, one row per
block (few blocks included, so every index row has one): ``neuron, block``, the 8
difference features of the gold block against the auto block
(:data:`~keras_medseg.neurotrace.lmeasure.DIFFERENCE_FEATURES`, via
:func:`~keras_medseg.neurotrace.lmeasure.difference_matrix`) and the 32 L-Measure features
of the AUTO block (:data:`~keras_medseg.neurotrace.lmeasure.LMEASURE_FEATURES`). Values are
raw (NaN where undefined, ``inf`` where a distance to an empty block is infinite).

Normalisation: the original scaled these features by maxima inconsistently from one
script to another, so training and test rows did not share one scale taken from the
training data. Here every scale is the per-feature maximum of ``|x|`` over the TRAINING
rows only (:func:`training_maxima`) and is applied unchanged to validation, test and new
rows (:func:`normalise_by_maxima`): in each repeat of the subset search, for the final
labeller (the maxima of its manually labelled rows, stored with it), and in the 3D-SSM
training (``keras_medseg.neurotrace.training``, from its training split).

Automatic labelling
-------------------
Manual labels (0 low, 1 high tracing difficulty) exist for some "many" blocks. With the 8
difference features, every non-empty feature subset (255) is tried with logistic
regression and with an MLP of hidden layers (10, 30, 60, 30) (scikit-learn), over
``repeats`` random 70/30 splits BY NEURON (:func:`keras_medseg.io.splits.train_val_test_split`
with ``groups``; the same splits for every candidate). The candidate with the best mean
validation accuracy is chosen (ties: fewer features, then logistic before MLP, then the
lexicographically smaller subset), refitted on all manually labelled blocks, saved in a safe
format (:class:`Labeller`: arrays in ``.npz`` read with ``allow_pickle=False`` plus a JSON
description; never pickle) and applied to every "many" block: it fills the ``label`` column
of ``blocks.csv``. The original chose an MLP on features [0, 1, 3, 5, 7].

Speed: an MLP fit costs about 20x a logistic regression, so by default the MLP is tried on
the ``mlp_subsets=32`` subsets with the best logistic-regression accuracy (screening), and
logistic regression on all 255; ``mlp_subsets=None`` makes the MLP search exhaustive too, as
the original. The MLPs use L-BFGS with ``max_iter`` 200 (``quick``: 60), and BLAS runs
single-threaded inside the search (tiny matrices; threads only add overhead). ``n_jobs``
spreads the candidates over processes (joblib). Measured CPU time for 46 blocks of 3
synthetic neurons, 5 splits: logistic regression on all 255 subsets 2 s, the default search
7 s, the fully exhaustive one (255 x 2 models) 51 s; ``quick`` (3 splits) 1.4 s.

Synthetic "manual" labels
-------------------------
The synthetic data (:func:`keras_medseg.sampledata.generate_neurotrace`) has no manual
labels. :func:`simulated_manual_labels` derives them from the simulation itself: it
re-runs the seeded simulator (checking that it reproduces the gold SWC files exactly) to get
the image-quality field at every gold node, which drives both the image's signal-to-noise
ratio and the automatic tracer's error rate. A block is labelled 1 (high difficulty) when the
mean quality of the original gold nodes inside its box is below ``threshold`` (0.5; quality
runs from 0 poor to 1 good), else 0. This is a stand-in for a human's judgement of how hard
the block is to trace: it is computed without looking at the automatic tracing, so the
difference features predict it only approximately, as with real manual labels.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from keras_medseg.neurotrace.blocks import BLOCK_SIZE, block_box, read_blocks_csv, \
    write_blocks_csv
from keras_medseg.neurotrace.lmeasure import DIFFERENCE_FEATURES, LMEASURE_FEATURES
from keras_medseg.utils import atomic_path, write_csv, write_json, write_text

__all__ = [
    "FEATURE_COLUMNS", "MLP_HIDDEN", "MODELS", "SIMULATED_QUALITY_THRESHOLD", "BlockFeatures",
    "Labeller", "SubsetSearch", "LabellingResult", "compute_block_features",
    "read_block_features", "training_maxima", "normalise_by_maxima", "feature_subsets",
    "search_feature_subsets", "fit_labeller", "save_labeller", "load_labeller",
    "simulated_manual_labels", "read_manual_labels", "write_manual_labels",
    "apply_labeller", "auto_label_blocks",
]

FEATURE_COLUMNS = tuple(DIFFERENCE_FEATURES) + tuple(LMEASURE_FEATURES)
"""Feature columns of ``features.csv`` after ``neuron, block``: 8 difference, 32 L-Measure."""

MLP_HIDDEN = (10, 30, 60, 30)
"""Hidden layer sizes of the labelling MLP (the original's)."""

MODELS = ("logistic", "mlp")

SIMULATED_QUALITY_THRESHOLD = 0.5
"""Blocks whose gold nodes have a mean simulated image quality below this are 'high'."""

_LABELLER_FORMAT = "keras_medseg.neurotrace.labeller"
_LABELLER_VERSION = 1


# --------------------------------------------------------------------------- features
@dataclasses.dataclass
class BlockFeatures:
    """The rows of ``features.csv``.

    Attributes
    ----------
    neurons : list of str
    blocks : ndarray of int64, shape (n,)
    difference : ndarray of float64, shape (n, 8)
        Gold-vs-auto difference features (:data:`DIFFERENCE_FEATURES` order).
    lmeasure : ndarray of float64, shape (n, 32)
        L-Measure features of the auto blocks (:data:`LMEASURE_FEATURES` order), raw.
    """

    neurons: list
    blocks: np.ndarray
    difference: np.ndarray
    lmeasure: np.ndarray

    def index(self):
        """``{(neuron, block): row}``."""
        return {(n, int(b)): i for i, (n, b) in enumerate(zip(self.neurons, self.blocks))}


def _file_stamp(path):
    st = os.stat(path)
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]


def _sources_digest(csv_path, rows):
    root = Path(csv_path).parent
    stamps = [[r["neuron"], r["block"], _file_stamp(root / r["gold_swc"]),
               _file_stamp(root / r["auto_swc"])] for r in rows]
    return hashlib.sha256(json.dumps(stamps).encode("utf-8")).hexdigest()


def compute_block_features(csv_path, *, out_path=None, overwrite=False, progress=True):
    """Write the difference and L-Measure features of every block (see the module docstring).

    Parameters
    ----------
    csv_path : str or path-like
        Block index (:func:`keras_medseg.neurotrace.blocks.cut_blocks`).
    out_path : str or path-like, optional
        Output CSV; default ``features.csv`` beside ``csv_path``.
    overwrite : bool, optional
        Recompute even when ``<out_path>.json`` records the same block files (names, sizes,
        modification times); otherwise such a run reuses the file.
    progress : bool, optional
        tqdm progress bar over the blocks.

    Returns
    -------
    pathlib.Path
        The features CSV.

    Raises
    ------
    FileNotFoundError
        If the index or a block SWC file is missing (naming it).
    ValueError, keras_medseg.io.swc.SwcError
        For a malformed index or SWC file (naming it).
    """
    from keras_medseg.io.swc import read_swc
    from keras_medseg.neurotrace.lmeasure import difference_features, lmeasure_features

    csv_path = Path(csv_path)
    rows = read_blocks_csv(csv_path)
    root = csv_path.parent
    out_path = root / "features.csv" if out_path is None else Path(out_path)
    for r in rows:
        for col in ("gold_swc", "auto_swc"):
            if not (root / r[col]).is_file():
                raise FileNotFoundError(f"{str(csv_path)!r}: block {r['neuron']}/{r['block']}: "
                                        f"{col} {str(root / r[col])!r} does not exist")
    manifest = out_path.with_name(out_path.name + ".json")
    digest = _sources_digest(csv_path, rows)
    if not overwrite and out_path.is_file():
        try:
            done = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            done = None
        if done is not None and done.get("sources_sha256") == digest:
            return out_path
    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc="block features", unit="block")
    table = []
    for r in iterator:
        gold = read_swc(root / r["gold_swc"])
        auto = read_swc(root / r["auto_swc"])
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = difference_features(gold, auto)
            lm = list(lmeasure_features(auto).values())
        table.append({"neuron": r["neuron"], "block": r["block"],
                      **{c: repr(float(v)) for c, v in zip(FEATURE_COLUMNS,
                                                           list(diff) + lm)}})
    manifest.unlink(missing_ok=True)
    write_csv(out_path, table, ["neuron", "block", *FEATURE_COLUMNS])
    write_json(manifest, {"sources_sha256": digest, "blocks": len(rows),
                          "columns": ["neuron", "block", *FEATURE_COLUMNS]})
    return out_path


def read_block_features(path):
    """Read ``features.csv``.

    Returns
    -------
    BlockFeatures

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file and line for a missing column or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: feature table not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        raw = list(reader)
    missing = [c for c in ("neuron", "block", *FEATURE_COLUMNS) if c not in fields]
    if missing:
        raise ValueError(f"{str(path)!r}: feature table lacks the column(s) {missing}")
    values = np.empty((len(raw), len(FEATURE_COLUMNS)), dtype=np.float64)
    blocks = np.empty(len(raw), dtype=np.int64)
    for i, r in enumerate(raw):
        try:
            blocks[i] = int(r["block"])
            values[i] = [float(r[c]) for c in FEATURE_COLUMNS]
        except (TypeError, ValueError):
            raise ValueError(f"{str(path)!r} line {i + 2}: block and feature values must be "
                             f"numbers") from None
    nd = len(DIFFERENCE_FEATURES)
    return BlockFeatures([r["neuron"] for r in raw], blocks, values[:, :nd], values[:, nd:])


def training_maxima(features):
    """Per-feature maximum of ``|x|`` over the given (training) rows.

    Non-finite values are ignored; a feature whose maximum is 0 or undefined gets 1.

    Parameters
    ----------
    features : array-like, shape (n, F)
        The TRAINING rows only.

    Returns
    -------
    ndarray of float64, shape (F,)

    Examples
    --------
    >>> training_maxima([[1.0, -4.0, np.nan], [3.0, 2.0, np.nan]]).tolist()
    [3.0, 4.0, 1.0]
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, F) array; got shape {x.shape}")
    top = np.max(np.where(np.isfinite(x), np.abs(x), -np.inf), axis=0)
    return np.where(np.isfinite(top) & (top > 0), top, 1.0)


def normalise_by_maxima(features, maxima):
    """``features / maxima``, with NaN -> 0 and +-inf -> +-1 (the training maximum).

    Parameters
    ----------
    features : array-like, shape (n, F)
    maxima : array-like, shape (F,)
        From :func:`training_maxima` of the training rows.

    Returns
    -------
    ndarray of float64, shape (n, F)
    """
    x = np.asarray(features, dtype=np.float64)
    m = np.asarray(maxima, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != m.shape[0]:
        raise ValueError(f"features must have shape (n, {m.shape[0]}) to match maxima; got "
                         f"{x.shape}")
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError("maxima must be positive and finite")
    out = x / m
    out[np.isnan(out)] = 0.0
    out[np.isposinf(out)] = 1.0
    out[np.isneginf(out)] = -1.0
    return out


# --------------------------------------------------------------------------- models
class Labeller:
    """A fitted labelling model as plain arrays: features -> P(high difficulty).

    A logistic regression is a single layer; an MLP has ReLU hidden layers. Prediction:
    ``h = normalise_by_maxima(X[:, feature_indices], scale)``, ``h = relu(h @ W_k + b_k)`` for
    the hidden layers, ``p = sigmoid(h @ W_last + b_last)`` (the binary forms of
    scikit-learn's ``LogisticRegression`` and ``MLPClassifier``).

    Parameters
    ----------
    model : {"logistic", "mlp"}
    feature_indices : sequence of int
        Columns of the 8 difference features used, increasing.
    scale : array-like, shape (k,)
        Training maxima of those columns.
    weights : list of arrays
        ``W_k`` of shape (in, out); the last has one output.
    biases : list of arrays
        ``b_k`` of shape (out,).
    info : dict, optional
        Anything JSON-serialisable to store with the model (e.g. accuracies).

    Raises
    ------
    ValueError
        If the layer shapes do not chain from ``len(feature_indices)`` inputs to 1 output,
        a logistic model has hidden layers, or values are not finite.
    """

    def __init__(self, model, feature_indices, scale, weights, biases, *, info=None):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {model!r}")
        idx = [int(i) for i in feature_indices]
        if not idx or sorted(set(idx)) != idx or idx[0] < 0 \
                or idx[-1] >= len(DIFFERENCE_FEATURES):
            raise ValueError(f"feature_indices must be increasing column numbers in "
                             f"[0, {len(DIFFERENCE_FEATURES)}); got {feature_indices!r}")
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if scale.shape != (len(idx),) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"scale must be {len(idx)} positive finite numbers")
        weights = [np.asarray(w, dtype=np.float64) for w in weights]
        biases = [np.asarray(b, dtype=np.float64).reshape(-1) for b in biases]
        if not weights or len(weights) != len(biases):
            raise ValueError("weights and biases must be non-empty lists of equal length")
        if model == "logistic" and len(weights) != 1:
            raise ValueError("a logistic model has exactly one layer")
        width = len(idx)
        for k, (w, b) in enumerate(zip(weights, biases)):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError(f"layer {k}: weights {w.shape} / biases {b.shape} do not "
                                 f"follow an input of width {width}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"layer {k}: weights or biases are not finite")
            width = w.shape[1]
        if width != 1:
            raise ValueError(f"the last layer must have 1 output; got {width}")
        self.model = model
        self.feature_indices = tuple(idx)
        self.scale = scale
        self.weights = weights
        self.biases = biases
        self.info = dict(info or {})

    @property
    def features(self):
        """Names of the features used."""
        return tuple(DIFFERENCE_FEATURES[i] for i in self.feature_indices)

    @property
    def hidden(self):
        """Hidden layer sizes (empty for logistic regression)."""
        return tuple(int(w.shape[1]) for w in self.weights[:-1])

    def _inputs(self, features):
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(DIFFERENCE_FEATURES):
            raise ValueError(f"features must have shape (n, {len(DIFFERENCE_FEATURES)}) (all "
                             f"difference features); got {x.shape}")
        return normalise_by_maxima(x[:, list(self.feature_indices)], self.scale)

    def predict_proba(self, features):
        """Class probabilities ``(n, 2)``: columns P(low), P(high).

        Parameters
        ----------
        features : array-like, shape (n, 8)
            Raw difference features (:data:`DIFFERENCE_FEATURES` order).
        """
        h = self._inputs(features)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        z = (h @ self.weights[-1] + self.biases[-1])[:, 0]
        p = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                     np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, features):
        """Labels 0/1 (int64, shape (n,)): 1 where P(high) > 0.5."""
        return (self.predict_proba(features)[:, 1] > 0.5).astype(np.int64)

    @classmethod
    def from_sklearn(cls, estimator, feature_indices, scale, *, info=None):
        """Wrap a fitted binary ``LogisticRegression`` or ``MLPClassifier``.

        Raises
        ------
        ValueError
            If the estimator is of another type, not binary with classes (0, 1), or an MLP
            with an activation other than ReLU.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        classes = [int(c) for c in getattr(estimator, "classes_", [])]
        if classes != [0, 1]:
            raise ValueError(f"the estimator must be fitted on classes (0, 1); got {classes}")
        if isinstance(estimator, LogisticRegression):
            return cls("logistic", feature_indices, scale, [estimator.coef_.T],
                       [estimator.intercept_], info=info)
        if isinstance(estimator, MLPClassifier):
            if estimator.activation != "relu" or estimator.out_activation_ != "logistic":
                raise ValueError("only ReLU MLPs with a logistic output are supported")
            return cls("mlp", feature_indices, scale, estimator.coefs_, estimator.intercepts_,
                       info=info)
        raise ValueError(f"estimator must be a LogisticRegression or MLPClassifier; got "
                         f"{type(estimator).__name__}")

    def __repr__(self):
        return (f"Labeller(model={self.model!r}, features={list(self.features)}, "
                f"hidden={list(self.hidden)})")


def save_labeller(labeller, directory):
    """Save a :class:`Labeller` as ``labeller.json`` + ``labeller.npz`` (no pickle).

    The JSON holds the model kind, feature names and columns, hidden sizes, activations,
    training maxima and ``info``; the ``.npz`` the arrays ``W0, b0, W1, b1, ...``.
    Both are written atomically (the ``.npz`` first). Returns the JSON path.
    """
    if not isinstance(labeller, Labeller):
        raise ValueError(f"labeller must be a Labeller; got {type(labeller).__name__}")
    directory = Path(directory)
    arrays = {}
    for k, (w, b) in enumerate(zip(labeller.weights, labeller.biases)):
        arrays[f"W{k}"] = w
        arrays[f"b{k}"] = b
    with atomic_path(directory / "labeller.npz") as tmp:
        np.savez(tmp, **arrays)
    return write_json(directory / "labeller.json", {
        "format": _LABELLER_FORMAT, "version": _LABELLER_VERSION, "model": labeller.model,
        "features": list(labeller.features), "feature_indices": list(labeller.feature_indices),
        "hidden": list(labeller.hidden), "hidden_activation": "relu",
        "output_activation": "sigmoid", "classes": [0, 1], "scale": labeller.scale.tolist(),
        "layers": len(labeller.weights), "arrays": "labeller.npz", "info": labeller.info})


def load_labeller(directory):
    """Rebuild the :class:`Labeller` saved by :func:`save_labeller` in ``directory``.

    Raises
    ------
    FileNotFoundError
        If ``labeller.json`` or ``labeller.npz`` is missing.
    ValueError
        Naming the file, when it is not a labeller of this format or its arrays do not fit.
    """
    directory = Path(directory)
    meta_path, npz_path = directory / "labeller.json", directory / "labeller.npz"
    for p in (meta_path, npz_path):
        if not p.is_file():
            raise FileNotFoundError(f"{str(p)!r}: labeller file not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{str(meta_path)!r}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != _LABELLER_FORMAT \
            or meta.get("version") != _LABELLER_VERSION:
        raise ValueError(f"{str(meta_path)!r}: not a {_LABELLER_FORMAT} file of version "
                         f"{_LABELLER_VERSION}")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            n = int(meta["layers"])
            weights = [data[f"W{k}"] for k in range(n)]
            biases = [data[f"b{k}"] for k in range(n)]
        return Labeller(meta["model"], meta["feature_indices"], meta["scale"], weights, biases,
                        info=meta.get("info"))
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ValueError(f"{str(npz_path)!r} / {str(meta_path)!r}: cannot rebuild the "
                         f"labeller: {e}") from None


# --------------------------------------------------------------------------- search
def feature_subsets(n_features=len(DIFFERENCE_FEATURES)):
    """Every non-empty subset of ``range(n_features)``, by size then lexicographically.

    >>> len(feature_subsets(8)), feature_subsets(2)
    (255, [(0,), (1,), (0, 1)])
    """
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) \
            or n_features < 1:
        raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
    return [c for k in range(1, n_features + 1)
            for c in itertools.combinations(range(int(n_features)), k)]


def _make_estimator(model, *, seed, max_iter):
    if model == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=MLP_HIDDEN, activation="relu", solver="lbfgs",
                         max_iter=int(max_iter), random_state=int(seed))


def _fit(model, x, y, *, seed, max_iter):
    from sklearn.exceptions import ConvergenceWarning

    est = _make_estimator(model, seed=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    return est


def _evaluate(model, subset, splits, x_scaled, y, seed, max_iter):
    cols = list(subset)
    acc = []
    for r, (train, val) in enumerate(splits):
        est = _fit(model, x_scaled[r][train][:, cols], y[train], seed=seed + r,
                   max_iter=max_iter)
        acc.append(float(np.mean(est.predict(x_scaled[r][val][:, cols]) == y[val])))
    return acc


@dataclasses.dataclass
class SubsetSearch:
    """Result of :func:`search_feature_subsets`.

    Attributes
    ----------
    table : list of dict
        One row per (model, subset) tried: ``model``, ``subset`` (tuple of int),
        ``features`` (names joined by ``+``), ``n_features``, ``mean_accuracy``,
        ``std_accuracy``, ``accuracies`` (per repeat); best first.
    best : dict
        The chosen row.
    splits : list of (ndarray, ndarray)
        ``(train, val)`` row indices of each repeat.
    seconds : float
        Wall time of the search.
    settings : dict
        The search options.
    """

    table: list
    best: dict
    splits: list
    seconds: float
    settings: dict


def _rank_key(row):
    return (-row["mean_accuracy"], row["n_features"], MODELS.index(row["model"]), row["subset"])


def _check_inputs(features, labels, groups):
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(DIFFERENCE_FEATURES) or x.shape[0] == 0:
        raise ValueError(f"features must have shape (n, {len(DIFFERENCE_FEATURES)}); got "
                         f"{x.shape}")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],) or not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels must be {x.shape[0]} values in {{0, 1}}")
    g = np.asarray(groups)
    if g.shape != (x.shape[0],):
        raise ValueError(f"groups must hold one neuron per row ({x.shape[0]}); got shape "
                         f"{g.shape}")
    if np.unique(y).size != 2:
        raise ValueError("labels must contain both classes (0 and 1)")
    return x, y.astype(np.int64), g


def search_feature_subsets(features, labels, groups, *, models=MODELS, subsets=None,
                           repeats=5, val_fraction=0.3, seed=0, mlp_subsets=32,
                           mlp_max_iter=200, n_jobs=1, progress=False):
    """Exhaustive feature-subset search for the labelling model (see the module docstring).

    Parameters
    ----------
    features : array-like, shape (n, 8)
        Raw difference features of the manually labelled blocks.
    labels : array-like of int, shape (n,)
        Manual labels 0/1 (both present).
    groups : array-like, shape (n,)
        Neuron of each block: the splits keep a neuron on one side.
    models : sequence of {"logistic", "mlp"}, optional
    subsets : sequence of sequences of int, optional
        Candidate subsets (default: all 255, :func:`feature_subsets`).
    repeats : int, optional
        Random splits (5).
    val_fraction : float, optional
        Validation fraction of the blocks (0.3), met as closely as whole neurons allow.
    seed : int, optional
        Repeat ``r`` splits with ``seed + r`` and seeds its MLPs with ``seed + r``.
    mlp_subsets : int or None, optional
        With both models, try the MLP only on this many subsets with the best logistic
        accuracy (None: on every subset).
    mlp_max_iter : int, optional
        L-BFGS iterations of each MLP fit.
    n_jobs : int, optional
        Parallel processes (joblib) over the candidates; 1 runs in this process.
    progress : bool, optional

    Returns
    -------
    SubsetSearch

    Raises
    ------
    ValueError
        For bad shapes or options, labels without both classes, fewer than two neurons, or
        a split whose training side holds one class only.
    """
    from threadpoolctl import threadpool_limits

    from keras_medseg.io.splits import train_val_test_split

    x, y, g = _check_inputs(features, labels, groups)
    models = tuple(models)
    if not models or any(m not in MODELS for m in models) or len(set(models)) != len(models):
        raise ValueError(f"models must be distinct names from {MODELS}; got {models!r}")
    subsets = feature_subsets() if subsets is None else [tuple(sorted(set(int(i) for i in s)))
                                                        for s in subsets]
    if not subsets or any(not s or s[0] < 0 or s[-1] >= x.shape[1] for s in subsets):
        raise ValueError(f"subsets must be non-empty column sets within [0, {x.shape[1]})")
    for name, value in (("repeats", repeats), ("mlp_max_iter", mlp_max_iter),
                        ("n_jobs", n_jobs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if mlp_subsets is not None and (isinstance(mlp_subsets, bool) or not isinstance(
            mlp_subsets, (int, np.integer)) or mlp_subsets < 1):
        raise ValueError(f"mlp_subsets must be a positive integer or None; got {mlp_subsets!r}")
    if np.unique(g).size < 2:
        raise ValueError("the blocks must come from at least two neurons (split by neuron)")
    start = time.perf_counter()
    splits, scaled = [], []
    for r in range(int(repeats)):
        split = train_val_test_split(len(y), val_fraction=val_fraction, test_fraction=0.0,
                                     seed=int(seed) + r, groups=g)
        train, val = np.asarray(split.train), np.asarray(split.val)
        if np.unique(y[train]).size < 2:
            raise ValueError(f"repeat {r}: the training neurons hold one class only; more "
                             f"labelled neurons are needed")
        splits.append((train, val))
        scaled.append(normalise_by_maxima(x, training_maxima(x[train])))

    def run(candidates, model, max_iter):
        jobs = [(model, s) for s in candidates]
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(jobs, desc=f"subset search ({model})", unit="subset")
        if n_jobs == 1:
            return [_evaluate(m, s, splits, scaled, y, int(seed), max_iter) for m, s in jobs]
        from joblib import Parallel, delayed

        return Parallel(n_jobs=int(n_jobs))(
            delayed(_evaluate)(m, s, splits, scaled, y, int(seed), max_iter) for m, s in jobs)

    table = []
    with threadpool_limits(limits=1):
        for model in models:
            candidates = subsets
            if model == "mlp" and mlp_subsets is not None and "logistic" in models:
                ranked = sorted((row for row in table if row["model"] == "logistic"),
                                key=_rank_key)
                candidates = [row["subset"] for row in ranked[:int(mlp_subsets)]]
            results = run(candidates, model, int(mlp_max_iter))
            for s, acc in zip(candidates, results):
                table.append({"model": model, "subset": s,
                              "features": "+".join(DIFFERENCE_FEATURES[i] for i in s),
                              "n_features": len(s), "mean_accuracy": float(np.mean(acc)),
                              "std_accuracy": float(np.std(acc)), "accuracies": acc})
    table.sort(key=_rank_key)
    settings = {"models": list(models), "n_subsets": len(subsets), "repeats": int(repeats),
                "val_fraction": float(val_fraction), "seed": int(seed),
                "mlp_subsets": mlp_subsets, "mlp_max_iter": int(mlp_max_iter),
                "mlp_hidden": list(MLP_HIDDEN), "n_blocks": int(len(y)),
                "n_neurons": int(np.unique(g).size)}
    return SubsetSearch(table=table, best=table[0], splits=splits,
                        seconds=time.perf_counter() - start, settings=settings)


def fit_labeller(features, labels, subset, model, *, seed=0, mlp_max_iter=200, info=None):
    """Fit the labelling model on all given (training) rows.

    The scale is :func:`training_maxima` of these rows' ``subset`` columns.

    Parameters
    ----------
    features : array-like, shape (n, 8)
        Raw difference features.
    labels : array-like of int, shape (n,)
    subset : sequence of int
        Difference-feature columns to use.
    model : {"logistic", "mlp"}
    seed : int, optional
        MLP initialisation seed.
    mlp_max_iter : int, optional
    info : dict, optional
        Stored with the labeller.

    Returns
    -------
    Labeller
    """
    from threadpoolctl import threadpool_limits

    x, y, _ = _check_inputs(features, labels, np.zeros(len(labels)))
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    cols = sorted(set(int(i) for i in subset))
    if not cols or cols[0] < 0 or cols[-1] >= x.shape[1]:
        raise ValueError(f"subset must be a non-empty set of columns in [0, {x.shape[1]}); "
                         f"got {subset!r}")
    scale = training_maxima(x[:, cols])
    with threadpool_limits(limits=1):
        est = _fit(model, normalise_by_maxima(x[:, cols], scale), y, seed=int(seed),
                   max_iter=mlp_max_iter)
    return Labeller.from_sklearn(est, cols, scale, info=info)


# --------------------------------------------------------------------------- manual labels
def read_manual_labels(path):
    """Read a manual-label CSV with columns ``neuron, block, label`` (0/1).

    Returns
    -------
    dict
        ``{(neuron, block): label}``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file and line for a missing column, a bad value or a repeated block.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: manual-label table not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        raw = list(reader)
    missing = [c for c in ("neuron", "block", "label") if c not in fields]
    if missing:
        raise ValueError(f"{str(path)!r}: manual-label table lacks the column(s) {missing}")
    out = {}
    for line, r in enumerate(raw, start=2):
        label = (r["label"] or "").strip()
        try:
            key = (r["neuron"], int(r["block"]))
        except (TypeError, ValueError):
            raise ValueError(f"{str(path)!r} line {line}: block must be an integer; got "
                             f"{r['block']!r}") from None
        if label not in ("0", "1"):
            raise ValueError(f"{str(path)!r} line {line}: label must be 0 or 1; got {label!r}")
        if key in out:
            raise ValueError(f"{str(path)!r} line {line}: block {key[0]}/{key[1]} repeated")
        out[key] = int(label)
    return out


def write_manual_labels(path, labels, *, extra=None):
    """Write ``{(neuron, block): label}`` as a manual-label CSV atomically.

    ``extra`` maps the same keys to dicts of additional columns. A file that already holds
    exactly this content is left untouched. Returns the path.
    """
    import io

    extra = extra or {}
    rows = [{"neuron": n, "block": int(b), "label": int(v), **extra.get((n, b), {})}
            for (n, b), v in sorted(labels.items())]
    columns = ["neuron", "block", "label"]
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    text = buf.getvalue()
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        write_text(path, text)
    return path


def _read_generator_params(data_dir):
    marker = Path(data_dir) / ".neurotrace.complete.json"
    try:
        params = json.loads(marker.read_text(encoding="utf-8"))["params"]
        return (int(params["seed"]), int(params["n_neurons"]),
                tuple(int(s) for s in params["shape"]), int(params["n_nodes"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{str(data_dir)!r} was not written by "
                         f"keras_medseg.sampledata.generate_neurotrace (no readable "
                         f"{marker.name}); simulated labels need the synthetic data") from None


def simulated_manual_labels(data_dir, csv_path, *, threshold=SIMULATED_QUALITY_THRESHOLD,
                            size=BLOCK_SIZE, out_path=None):
    """Stand-in manual labels for synthetic neurons, from the simulated image quality.

    See the module docstring ("Synthetic manual labels"). The neurons are re-simulated
    with the generator's recorded settings (cost: about the generation time, without
    writing); each must reproduce its gold and automatic SWC files exactly.

    Parameters
    ----------
    data_dir : str or path-like
        Folder written by :func:`keras_medseg.sampledata.generate_neurotrace`.
    csv_path : str or path-like
        Block index cut from that folder.
    threshold : float, optional
        Mean gold-node quality below which a block is labelled 1 (high difficulty).
    size : (int, int, int), optional
        Block shape used when cutting.
    out_path : str or path-like, optional
        Where to write the labels (with a ``quality`` column); default
        ``manual_labels.csv`` beside ``csv_path``.

    Returns
    -------
    dict
        ``{(neuron, block): label}`` for every block of the index.

    Raises
    ------
    ValueError
        If ``data_dir`` is not generator output, a neuron of the index is not one of its
        ``neuron_<k>``, or the simulation no longer reproduces a gold or auto file.
    """
    from keras_medseg.io.swc import read_swc
    from keras_medseg.sampledata.neurotrace import simulate_neuron

    seed, n_neurons, shape, n_nodes = _read_generator_params(data_dir)
    if not np.isfinite(threshold) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}")
    csv_path = Path(csv_path)
    rows = read_blocks_csv(csv_path)
    names = [f"neuron_{k:03d}" for k in range(n_neurons)]
    unknown = sorted({r["neuron"] for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{str(csv_path)!r} holds neurons {unknown[:5]} that "
                         f"{str(data_dir)!r} did not generate")
    needed = max((names.index(r["neuron"]) for r in rows), default=-1) + 1
    rng = np.random.default_rng(seed)
    quality = {}
    for k in range(needed):
        sim = simulate_neuron(rng, shape, n_nodes=n_nodes)
        for role in ("gold", "auto"):
            path = Path(data_dir) / role / f"{names[k]}.swc"
            if read_swc(path) != getattr(sim, role):
                raise ValueError(f"{str(path)!r} differs from the re-simulated neuron (seed "
                                 f"{seed}); the generator changed since the data were "
                                 f"written: generate them again in a new folder")
        quality[names[k]] = (sim.gold.xyz, sim.node_quality)
    labels, extra = {}, {}
    for r in rows:
        xyz, q = quality[r["neuron"]]
        lo, hi = block_box((r["x"], r["y"], r["z"]), size)
        inside = np.all((xyz > lo) & (xyz < hi), axis=1)
        if not inside.any():
            continue
        mean_q = float(q[inside].mean())
        key = (r["neuron"], r["block"])
        labels[key] = int(mean_q < threshold)
        extra[key] = {"quality": round(mean_q, 6)}
    out_path = csv_path.parent / "manual_labels.csv" if out_path is None else Path(out_path)
    write_manual_labels(out_path, labels, extra=extra)
    return labels


# --------------------------------------------------------------------------- labelling
def apply_labeller(csv_path, labeller, *, features_path=None):
    """Label every ``many`` block of the index with ``labeller`` (few blocks: empty).

    The ``label`` column of ``csv_path`` is rewritten atomically (only when a label
    changes); other columns are kept.

    Parameters
    ----------
    csv_path : str or path-like
    labeller : Labeller
    features_path : str or path-like, optional
        Default ``features.csv`` beside the index; must have a row per many block.

    Returns
    -------
    dict
        ``{(neuron, block): label}`` of the many blocks.
    """
    if not isinstance(labeller, Labeller):
        raise ValueError(f"labeller must be a Labeller; got {type(labeller).__name__}")
    csv_path = Path(csv_path)
    rows = read_blocks_csv(csv_path)
    feats = read_block_features(csv_path.parent / "features.csv" if features_path is None
                                else features_path)
    index = feats.index()
    many = [r for r in rows if r["subset"] == "many"]
    missing = [(r["neuron"], r["block"]) for r in many if (r["neuron"], r["block"]) not in index]
    if missing:
        raise ValueError(f"the feature table has no row for block(s) {missing[:5]} of "
                         f"{str(csv_path)!r}; recompute it")
    x = feats.difference[[index[(r["neuron"], r["block"])] for r in many]] if many else \
        np.zeros((0, len(DIFFERENCE_FEATURES)))
    predicted = labeller.predict(x) if many else np.zeros(0, np.int64)
    out = {(r["neuron"], r["block"]): int(v) for r, v in zip(many, predicted)}
    changed = False
    for r in rows:
        label = out.get((r["neuron"], r["block"])) if r["subset"] == "many" else None
        changed |= r["label"] != label
        r["label"] = label
    if changed:
        write_blocks_csv(csv_path, rows)
    return out


@dataclasses.dataclass
class LabellingResult:
    """What :func:`auto_label_blocks` did.

    Attributes
    ----------
    labeller : Labeller
    selection : dict
        Contents of ``labeller/selection.json``.
    search : SubsetSearch or None
        None when a saved labeller for the same inputs was reused.
    labels : dict
        ``{(neuron, block): label}`` written for the many blocks.
    """

    labeller: Labeller
    selection: dict
    search: object
    labels: dict

    def __str__(self):
        s = self.selection
        high = sum(self.labels.values())
        return (f"auto_label_blocks: {s['model']} on {'+'.join(s['features'])} (mean validation "
                f"accuracy {s['mean_accuracy']:.3f} over {s['repeats']} splits by neuron); "
                f"labelled {len(self.labels)} many blocks: {high} high, "
                f"{len(self.labels) - high} low")


def auto_label_blocks(csv_path, manual_labels, *, quick=False, repeats=None, val_fraction=0.3,
                      seed=0, models=MODELS, mlp_subsets="auto", mlp_max_iter=None, n_jobs=1,
                      overwrite=False, progress=True):
    """Features, subset search, final labeller and the ``label`` column, in one call.

    1. :func:`compute_block_features` (reused when up to date);
    2. :func:`search_feature_subsets` on the many blocks that have a manual label;
    3. :func:`fit_labeller` with the chosen subset and model on all of them, saved to
       ``labeller/`` beside the index (``labeller.json``, ``labeller.npz``,
       ``selection.json``, ``search.csv``);
    4. :func:`apply_labeller` to every many block.

    A rerun whose manual labels, features and options match ``selection.json`` reuses the
    saved labeller (steps 2-3 skipped) unless ``overwrite``.

    Parameters
    ----------
    csv_path : str or path-like
        Block index.
    manual_labels : dict or str or path-like
        ``{(neuron, block): 0/1}`` or a CSV for :func:`read_manual_labels`. Labels of few
        blocks or of blocks not in the index are ignored.
    quick : bool, optional
        Demo size: 3 repeats, MLP on the 8 best logistic subsets, 60 L-BFGS iterations
        (the defaults are 5, 32 and 200).
    repeats, mlp_max_iter : int, optional
        Override the quick/default values.
    mlp_subsets : int, None or "auto", optional
        See :func:`search_feature_subsets`; "auto" takes the quick/default value.
    val_fraction, seed, models, n_jobs : optional
        See :func:`search_feature_subsets`.
    overwrite : bool, optional
        Search again even when a matching labeller is saved; recompute the features.
    progress : bool, optional

    Returns
    -------
    LabellingResult

    Raises
    ------
    ValueError
        If fewer than two neurons or only one class carry manual labels among the many
        blocks, and as the functions above.
    """
    csv_path = Path(csv_path)
    if not isinstance(manual_labels, dict):
        manual_labels = read_manual_labels(manual_labels)
    repeats = (3 if quick else 5) if repeats is None else repeats
    mlp_max_iter = (60 if quick else 200) if mlp_max_iter is None else mlp_max_iter
    if isinstance(mlp_subsets, str):
        if mlp_subsets != "auto":
            raise ValueError(f"mlp_subsets must be an integer, None or 'auto'; got "
                             f"{mlp_subsets!r}")
        mlp_subsets = 8 if quick else 32
    features_path = compute_block_features(csv_path, overwrite=overwrite, progress=progress)
    feats = read_block_features(features_path)
    index = feats.index()
    rows = read_blocks_csv(csv_path)
    train = [r for r in rows if r["subset"] == "many"
             and (r["neuron"], r["block"]) in manual_labels]
    if not train:
        raise ValueError(f"no many block of {str(csv_path)!r} has a manual label")
    x = feats.difference[[index[(r["neuron"], r["block"])] for r in train]]
    y = np.array([int(manual_labels[(r["neuron"], r["block"])]) for r in train])
    groups = np.array([r["neuron"] for r in train])
    out_dir = csv_path.parent / "labeller"
    request = {"manual_sha256": hashlib.sha256(json.dumps(
                   sorted([n, int(b), int(v)] for (n, b), v in manual_labels.items())
               ).encode("utf-8")).hexdigest(),
               "features_sha256": hashlib.sha256(Path(features_path).read_bytes()).hexdigest(),
               "repeats": int(repeats), "val_fraction": float(val_fraction), "seed": int(seed),
               "models": list(models), "mlp_subsets": mlp_subsets,
               "mlp_max_iter": int(mlp_max_iter)}
    selection = None
    if not overwrite and (out_dir / "selection.json").is_file():
        try:
            selection = json.loads((out_dir / "selection.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            selection = None
        if selection is not None and selection.get("request") == request:
            labeller = load_labeller(out_dir)
            labels = apply_labeller(csv_path, labeller, features_path=features_path)
            return LabellingResult(labeller, selection, None, labels)
    search = search_feature_subsets(x, y, groups, models=models, repeats=repeats,
                                     val_fraction=val_fraction, seed=seed,
                                     mlp_subsets=mlp_subsets, mlp_max_iter=mlp_max_iter,
                                     n_jobs=n_jobs, progress=progress)
    best = search.best
    labeller = fit_labeller(x, y, best["subset"], best["model"], seed=seed,
                            mlp_max_iter=mlp_max_iter,
                            info={"mean_accuracy": best["mean_accuracy"],
                                  "std_accuracy": best["std_accuracy"]})
    fitted = labeller.predict(x)
    selection = {
        "model": best["model"], "subset": list(best["subset"]),
        "features": list(labeller.features), "hidden": list(labeller.hidden),
        "mean_accuracy": best["mean_accuracy"], "std_accuracy": best["std_accuracy"],
        "accuracies": best["accuracies"], "repeats": int(repeats),
        "search_seconds": round(search.seconds, 3), "search": search.settings,
        "split": "by neuron (groups), validation fraction of blocks",
        "n_manual": int(len(y)), "n_manual_high": int(y.sum()),
        "n_neurons": int(np.unique(groups).size),
        "refit_accuracy_on_manual": float(np.mean(fitted == y)),
        "request": request,
    }
    (out_dir / "selection.json").unlink(missing_ok=True)
    save_labeller(labeller, out_dir)
    write_csv(out_dir / "search.csv",
              [{**r, "subset": " ".join(map(str, r["subset"])),
                "accuracies": " ".join(f"{a:.6f}" for a in r["accuracies"])}
               for r in search.table],
              ["model", "subset", "features", "n_features", "mean_accuracy", "std_accuracy",
               "accuracies"])
    labels = apply_labeller(csv_path, labeller, features_path=features_path)
    write_json(out_dir / "selection.json", selection)
    return LabellingResult(labeller, selection, search, labels)
