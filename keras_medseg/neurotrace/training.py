"""Staged training and evaluation of the 3D-SSM through the shared runner.

Stages (``ORIGINALS.md`` section 5; every stage is a :class:`keras_medseg.training.Runner`
run in its own folder under ``run_dir``, with the shared log, best checkpoint and resume):

=================  =========================================  =====================
stage folder       model, input                               optimiser (original)
=================  =========================================  =====================
``resnet``         3D-ResNet-10 on image blocks               Adam 1e-4, weight decay
                                                              1e-2, batch 30, 30 epochs
``fcn``            FCN on 32 normalised L-Measure features    Adam 1e-4, batch 50, 30 ep.
``image_head``     ResNet-LSTM: sequence of ResNet            Adam 1e-4
                   probabilities
``feature_head``   FCN-LSTM: sequence of FCN probabilities    Adam 1e-3
``fusion_<r>``     MF on the two heads' logits, r = 0..4      Adam 3e-4, batch 30,
                                                              30 epochs x 5 repeats
=================  =========================================  =====================

The original gave no batch size or epoch count for the two sequence heads; 30 and 30 are
used. Adam's weight decay is Keras' decoupled form (PyTorch's ``Adam(weight_decay=)`` adds
an L2 gradient instead). ``SSMTrainConfig.class_weight="balanced"`` (not in the original;
default ``"none"``) weights each class's loss by ``n / (2 n_c)`` of the training blocks in
every stage (:func:`class_weights`), for label mixes far from even.

Fixes of the original's defects:

* Later stages never change earlier networks: a frozen network in inference mode (no
  BatchNormalization update, no dropout) is a fixed function, so its softmax outputs are
  computed once with ``predict`` and the next stage trains on them, which is exactly
  training the stacked model with the earlier networks frozen
  (:func:`keras_medseg.neurotrace.models.build_3dssm` assembles that stacked model). The
  original left its frozen sub-models in training mode, so their BatchNormalization
  statistics drifted and their dropout stayed on.
* Sequences carry softmax PROBABILITIES (never logits mixed with one-hot labels), and by
  default the previous blocks enter with their PREDICTED probabilities, in training and at
  test time (:mod:`keras_medseg.neurotrace.sequences`). ``oracle_history=True`` trains and
  selects with the original's true-label history instead. Test results are always reported
  for both protocols: ``predicted`` (deployable) and ``oracle`` (true labels of the previous
  blocks, the original's figure, which leaks labels).
* Each stage keeps the epoch with the best VALIDATION ``monitor`` (the original picked its
  checkpoint on the test set); a fresh fusion model is built for every repeat (the original
  kept training one), and the repeat with the best validation value is selected.
* Blocks are split by NEURON (the original: by row), stratified by label (scikit-learn's
  ``StratifiedGroupKFold``: the neurons' difficulty mix differs widely), recorded in
  ``splits/``; features are
  normalised by maxima of the training blocks only
  (:func:`keras_medseg.neurotrace.labels.training_maxima`, NaN -> 0, +-inf -> +-1).
* The ResNet's last layer returns logits (the original applied a ReLU to them).

Run folder::

    config.json, splits/{train,val,test}.txt      resolved configs and the split (block names)
    feature_scale.json                            training maxima of the features
    resnet/ fcn/ image_head/ feature_head/ fusion_<r>/   one Runner folder per stage
    models/{resnet,fcn,image_head,feature_head,fusion}.keras
    results.csv, results.md                       accuracy and F1 per model, split, protocol
    ssm3d_test_predicted_{CM,F1,AUC}.txt, ..._roc.png   and the same for ``oracle``
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import keras
import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.io.splits import train_val_test_split
from keras_medseg.metrics import classification_report, write_classification_reports
from keras_medseg.neurotrace import models as M
from keras_medseg.neurotrace.labels import normalise_by_maxima, training_maxima
from keras_medseg.neurotrace.sequences import block_chains, previous_blocks, sequence_inputs
from keras_medseg.training import Runner
from keras_medseg.utils import atomic_path, markdown_table, write_csv, write_json, write_text

__all__ = [
    "CLASS_NAMES",
    "MODEL_NAMES",
    "BlockData",
    "SSMDataConfig",
    "SSMModelConfig",
    "SSMTrainConfig",
    "SSMResult",
    "BlockBatches",
    "load_block_data",
    "class_weights",
    "train_3dssm",
    "predict_3dssm",
    "load_models",
]

CLASS_NAMES = ("low", "high")
"""Label 0 = low, 1 = high tracing difficulty."""
MODEL_NAMES = ("resnet", "fcn", "image_head", "feature_head", "fusion")
"""Sub-models of the 3D-SSM, in training order."""
PROTOCOLS = ("predicted", "oracle")


# ------------------------------------------------------------------------------ configs
@dataclasses.dataclass
class SSMDataConfig:
    """Blocks, sequences and the neuron split."""

    blocks_csv: str = dataclasses.field(default="", metadata={"help": "block index CSV"})
    subset: str = dataclasses.field(
        default="many", metadata={"choices": ("many", "all"),
                                  "help": "'many': drop blocks with < 10 auto nodes (original)"})
    max_distance: float = dataclasses.field(
        default=100.0, metadata={"help": "largest centre distance of a sequence predecessor "
                                         "(voxels)"})
    sequence_length: int = 5
    val_fraction: float = 0.15
    test_fraction: float = dataclasses.field(
        default=0.3, metadata={"help": "fraction of blocks (whole neurons) for test; the "
                                       "original held out 5342 of 18074 (0.30)"})
    seed: int = 0

    def __post_init__(self):
        check_choice(self.subset, ("many", "all"), name="subset")
        check_positive(self.max_distance, name="max_distance", allow_zero=True)
        check_positive(self.sequence_length, name="sequence_length")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1); got {v!r}")


@dataclasses.dataclass
class SSMModelConfig:
    """Network sizes (the original's at ``width=1``)."""

    width: float = dataclasses.field(default=1.0, metadata={"help": "ResNet filter multiplier"})
    dropout: float = 0.2
    fcn_units: tuple[int, ...] = (100, 50)
    lstm_units: int = 10
    lstm_layers: int = 2
    fusion_units: int = 30

    def __post_init__(self):
        check_positive(self.width, name="width")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        for u in self.fcn_units:
            check_positive(u, name="fcn_units")
        check_positive(self.lstm_units, name="lstm_units")
        check_positive(self.lstm_layers, name="lstm_layers")
        check_positive(self.fusion_units, name="fusion_units")


@dataclasses.dataclass
class SSMTrainConfig:
    """Optimisers and epochs of the five stages (the original's defaults)."""

    run_dir: str = "runs/neurotrace"
    resnet_epochs: int = 30
    resnet_batch_size: int = 30
    resnet_learning_rate: float = 1e-4
    resnet_weight_decay: float = 1e-2
    fcn_epochs: int = 30
    fcn_batch_size: int = 50
    fcn_learning_rate: float = 1e-4
    image_head_epochs: int = 30
    image_head_batch_size: int = 30
    image_head_learning_rate: float = 1e-4
    feature_head_epochs: int = 30
    feature_head_batch_size: int = 30
    feature_head_learning_rate: float = 1e-3
    fusion_epochs: int = 30
    fusion_batch_size: int = 30
    fusion_learning_rate: float = 3e-4
    fusion_repeats: int = 5
    oracle_history: bool = dataclasses.field(
        default=False, metadata={"help": "train the sequence heads with the previous blocks' "
                                         "TRUE labels (the original); test results are "
                                         "reported for both protocols either way"})
    monitor: str = dataclasses.field(
        default="val_accuracy", metadata={"help": "validation quantity for model selection"})
    class_weight: str = dataclasses.field(
        default="none", metadata={"choices": ("none", "balanced"),
                                  "help": "'balanced': weight each class's loss by n / (2 n_c) "
                                          "of the training blocks, in every stage (the "
                                          "original: none)"})
    seed: int = 1337
    strategy: str = dataclasses.field(default="default", metadata={
        "choices": ("default", "mirrored", "multiworker")})
    progress: str = dataclasses.field(default="none",
                                      metadata={"choices": ("keras", "tqdm", "none")})
    resume: bool = True
    tensorboard: bool = False

    def __post_init__(self):
        for stage in ("resnet", "fcn", "image_head", "feature_head", "fusion"):
            check_positive(getattr(self, f"{stage}_epochs"), name=f"{stage}_epochs")
            check_positive(getattr(self, f"{stage}_batch_size"), name=f"{stage}_batch_size")
            check_positive(getattr(self, f"{stage}_learning_rate"),
                           name=f"{stage}_learning_rate")
        check_positive(self.resnet_weight_decay, name="resnet_weight_decay", allow_zero=True)
        check_positive(self.fusion_repeats, name="fusion_repeats")
        check_choice(self.class_weight, ("none", "balanced"), name="class_weight")
        if not self.monitor.startswith("val_"):
            raise ValueError(f"monitor must be a validation quantity (val_...); got "
                             f"{self.monitor!r}")


# --------------------------------------------------------------------------------- data
@dataclasses.dataclass
class BlockData:
    """Blocks in memory, one row each.

    Attributes
    ----------
    names : list of str
        ``"<neuron>/<block>"``, unique.
    neurons : numpy.ndarray of str, shape (n,)
    blocks : numpy.ndarray of int64, shape (n,)
        Block number within the neuron (order along the gold tree).
    centres : numpy.ndarray of float64, shape (n, 3)
        Block centres (x, y, z) in voxels of the neuron's volume.
    images : numpy.ndarray, shape (n, 32, 64, 64)
        Image blocks (z, y, x) in their stored dtype.
    features : numpy.ndarray of float32, shape (n, F)
        Raw L-Measure features of the auto blocks (NaN where undefined).
    labels : numpy.ndarray of int64, shape (n,)
        0 low / 1 high tracing difficulty.
    """

    names: list
    neurons: np.ndarray
    blocks: np.ndarray
    centres: np.ndarray
    images: np.ndarray
    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError("BlockData.names must be unique")
        self.neurons = np.asarray(self.neurons).astype(str)
        self.blocks = np.asarray(self.blocks).astype(np.int64)
        self.centres = np.asarray(self.centres, dtype=np.float64)
        self.images = np.asarray(self.images)
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels)
        for name, arr, shape in (("neurons", self.neurons, (n,)), ("blocks", self.blocks, (n,)),
                                 ("centres", self.centres, (n, 3)),
                                 ("labels", self.labels, (n,))):
            if arr.shape != shape:
                raise ValueError(f"BlockData.{name} must have shape {shape}; got {arr.shape}")
        if self.images.ndim != 4 or self.images.shape[0] != n:
            raise ValueError(f"BlockData.images must have shape ({n}, z, y, x); got "
                             f"{self.images.shape}")
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise ValueError(f"BlockData.features must have shape ({n}, F); got "
                             f"{self.features.shape}")
        if n and (not np.issubdtype(self.labels.dtype, np.integer)
                  or self.labels.min() < 0 or self.labels.max() > 1):
            raise ValueError("BlockData.labels must be integers 0 (low) or 1 (high)")
        self.labels = self.labels.astype(np.int64)

    def __len__(self):
        return len(self.names)

    def take(self, index):
        """The rows ``index`` as a new BlockData."""
        index = np.asarray(index, dtype=np.int64)
        return BlockData(names=[self.names[i] for i in index], neurons=self.neurons[index],
                         blocks=self.blocks[index], centres=self.centres[index],
                         images=self.images[index], features=self.features[index],
                         labels=self.labels[index])


def _feature_columns(fieldnames):
    from keras_medseg.neurotrace.lmeasure import LMEASURE_FEATURES

    cols = [c for c in LMEASURE_FEATURES if c in fieldnames]
    return cols if len(cols) == len(LMEASURE_FEATURES) else None


def load_block_data(csv_path, *, features=None, subset="many"):
    """Read a block index CSV and its image blocks into a :class:`BlockData`.

    Parameters
    ----------
    csv_path : str or Path
        CSV with columns ``neuron, block, x, y, z, image`` (a ``.npy`` path relative to the
        CSV, array (32, 64, 64)), ``subset`` (``few``/``many``) and ``label`` (0/1).
    features : array-like (n_rows, F) or str or Path, optional
        Raw features per CSV row (all rows, in file order), or a CSV with a ``neuron`` and
        ``block`` column plus one column per L-Measure feature (such as the ``features.csv``
        of :func:`keras_medseg.neurotrace.labels.compute_block_features`). None: the
        ``features.csv`` beside the block CSV when there is one, else the block CSV itself
        must hold the 32 L-Measure columns
        (:data:`keras_medseg.neurotrace.lmeasure.LMEASURE_FEATURES`).
    subset : {"many", "all"}
        ``"many"`` keeps the blocks of the ``many`` subset (>= 10 auto nodes), as the
        original; ``"all"`` keeps every block.

    Returns
    -------
    BlockData
        Only rows with a label; their images loaded (memory-mapped files are read in).

    Raises
    ------
    FileNotFoundError
        If the CSV or an image file does not exist.
    ValueError
        Naming the file and row for a missing column, a bad number or label, an image of
        the wrong shape, or features that do not match the rows.
    """
    check_choice(subset, ("many", "all"), name="subset")
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"block index {str(csv_path)!r} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fieldnames = reader.fieldnames or []
        rows = list(reader)
    need = {"neuron", "block", "x", "y", "z", "image", "label"}
    missing = sorted(need - set(fieldnames))
    if missing:
        raise ValueError(f"block index {str(csv_path)!r} lacks the column(s) {missing}")

    if features is None and (csv_path.parent / "features.csv").is_file() \
            and _feature_columns(fieldnames) is None:
        features = csv_path.parent / "features.csv"
    if features is None:
        cols = _feature_columns(fieldnames)
        if cols is None:
            raise ValueError(f"block index {str(csv_path)!r} has no L-Measure feature columns; "
                             f"pass features=")
        feats = _numbers(rows, cols, csv_path)
    elif isinstance(features, (str, os.PathLike)):
        feats = _features_from_csv(features, rows, csv_path)
    else:
        feats = np.asarray(features, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != len(rows):
            raise ValueError(f"features must have one row per CSV row ({len(rows)}); got shape "
                             f"{feats.shape}")

    keep, labels = [], []
    for i, r in enumerate(rows):
        if subset == "many" and r.get("subset", "many").strip() == "few":
            continue
        text = (r["label"] or "").strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if value not in (0.0, 1.0):
            raise ValueError(f"{str(csv_path)!r} row {i + 2}: label must be 0 or 1; got {text!r}")
        keep.append(i)
        labels.append(int(value))
    if not keep:
        raise ValueError(f"block index {str(csv_path)!r} has no labelled blocks"
                         + (" in the 'many' subset" if subset == "many" else ""))
    kept = [rows[i] for i in keep]
    centres = _numbers(kept, ["x", "y", "z"], csv_path)
    blocks = _numbers(kept, ["block"], csv_path)[:, 0]
    images = []
    for i, r in zip(keep, kept):
        path = csv_path.parent / r["image"]
        if not path.is_file():
            raise FileNotFoundError(f"{str(csv_path)!r} row {i + 2}: image block "
                                    f"{str(path)!r} does not exist")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.shape != M.BLOCK_SHAPE[:3]:
            raise ValueError(f"image block {str(path)!r} has shape {arr.shape}; expected "
                             f"{M.BLOCK_SHAPE[:3]}")
        images.append(np.asarray(arr))
    return BlockData(names=[f"{r['neuron']}/{int(b)}" for r, b in zip(kept, blocks)],
                     neurons=[r["neuron"] for r in kept], blocks=blocks.astype(np.int64),
                     centres=centres, images=np.stack(images), features=feats[keep],
                     labels=np.asarray(labels, dtype=np.int64))


def _numbers(rows, cols, path):
    out = np.empty((len(rows), len(cols)), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            text = (r.get(c) or "").strip()
            try:
                out[i, j] = float(text) if text else math.nan
            except ValueError:
                raise ValueError(f"{str(path)!r}: column {c!r} holds {text!r}, not a "
                                 f"number") from None
    return out


def _features_from_csv(path, rows, csv_path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature table {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        frows = list(reader)
        cols = _feature_columns(reader.fieldnames or [])
    if cols is None or not frows or "neuron" not in frows[0] or "block" not in frows[0]:
        raise ValueError(f"feature table {str(path)!r} needs neuron, block and the 32 "
                         f"L-Measure columns")
    values = _numbers(frows, cols, path)
    index = {(r["neuron"], int(float(r["block"]))): k for k, r in enumerate(frows)}
    out = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        key = (r["neuron"], int(float(r["block"])))
        if key not in index:
            raise ValueError(f"feature table {str(path)!r} has no row for block {key} of "
                             f"{str(csv_path)!r}")
        out[i] = values[index[key]]
    return out


class BlockBatches(keras.utils.PyDataset):
    """Batches of image blocks as float32 ``(b, z, y, x, 1)``, optionally with labels.

    Integer images are divided by their dtype's maximum (uint8: 255); float images are used
    as they are. With ``shuffle`` the order is a fresh seeded permutation every epoch.
    """

    def __init__(self, images, labels=None, *, batch_size, shuffle=False, seed=0):
        super().__init__()
        self.images = images
        self.labels = None if labels is None else np.asarray(labels)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self._rng = np.random.default_rng(seed)
        dtype = np.asarray(images[:0]).dtype
        self.scale = 1.0 / np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
        self.order = np.arange(len(images))
        if self.shuffle:
            self.order = self._rng.permutation(len(images))

    def __len__(self):
        return max(1, math.ceil(len(self.order) / self.batch_size))

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        x = (np.asarray(self.images[idx], dtype=np.float32) * self.scale)[..., None]
        if self.labels is None:
            return (x,)
        return x, self.labels[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self._rng.permutation(len(self.order))


# ------------------------------------------------------------------------------ training
@dataclasses.dataclass
class SSMResult:
    """What :func:`train_3dssm` returns.

    Attributes
    ----------
    run_dir : Path
    models : dict
        ``MODEL_NAMES`` -> trained keras.Model (the fusion of the selected repeat).
    split : keras_medseg.io.splits.Split
        Indices into the BlockData rows.
    results : list of dict
        One row per (model, split, history protocol): ``model`` (``resnet``, ``fcn``,
        ``image_head``, ``feature_head``, ``ssm3d``), ``split`` (``val``, ``test``),
        ``history`` (``predicted``, ``oracle``; ``none`` for the two base networks),
        ``n``, ``accuracy``, ``f1_high`` (F1 of class "high") and ``f1_macro``.
    repeats : list of dict
        Per fusion repeat: ``repeat``, ``best_epoch``, the best validation ``monitor``.
    selected_repeat : int
    feature_scale : numpy.ndarray
    """

    run_dir: Path
    models: dict
    split: object
    results: list
    repeats: list
    selected_repeat: int
    feature_scale: np.ndarray

    def result(self, model="ssm3d", split="test", history="predicted"):
        """The results row of one model, split and protocol."""
        for r in self.results:
            if (r["model"], r["split"], r["history"]) == (model, split, history):
                return r
        raise ValueError(f"no result for model={model!r}, split={split!r}, history={history!r}")


def _softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _stage_runner(run_dir, stage, train, seed):
    folder = Path(run_dir) / stage
    if not train.resume:
        for name in ("best.keras", "best.json"):
            (folder / name).unlink(missing_ok=True)
    return Runner(folder, strategy=train.strategy, seed=seed, monitor=train.monitor,
                  mode="auto", tensorboard=train.tensorboard, progress=train.progress,
                  resume=train.resume)


def class_weights(labels, mode="balanced"):
    """Per-class loss weights of the training labels.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Training labels, 0 or 1.
    mode : {"none", "balanced"}
        ``"balanced"``: ``n / (2 n_c)`` for class ``c`` (scikit-learn's ``"balanced"``), so
        both classes weigh the same in the loss; ``"none"``: no weights.

    Returns
    -------
    dict or None
        ``{0: w0, 1: w1}``, or None for ``"none"``.

    Raises
    ------
    ValueError
        For an unknown mode, or a ``"balanced"`` request whose labels lack a class.

    Examples
    --------
    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    check_choice(mode, ("none", "balanced"), name="class_weight")
    if mode == "none":
        return None
    y = np.asarray(labels).reshape(-1)
    counts = np.bincount(y.astype(np.int64), minlength=len(CLASS_NAMES))
    if counts.size != len(CLASS_NAMES) or np.any(counts == 0):
        raise ValueError(f"class_weight='balanced' needs training blocks of both classes; got "
                         f"counts {counts.tolist()}")
    return {c: float(y.size / (len(CLASS_NAMES) * counts[c])) for c in range(len(CLASS_NAMES))}


def _fit_stage(runner, build, x_train, y_train, x_val, y_val, *, learning_rate, epochs,
               batch_size, weight_decay=None, stage, class_weight=None):
    """Build, compile, fit with the runner; restore the best validation epoch."""
    model = runner.build(build)

    def optimizer():
        return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)

    runner.compile(model, optimizer=optimizer,
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    if isinstance(x_train, keras.utils.PyDataset):
        history = runner.fit(model, x_train, x_val, epochs=epochs, stage=stage,
                             class_weight=class_weight)
    else:
        history = runner.fit(model, (x_train, y_train), (x_val, y_val), epochs=epochs,
                             stage=stage, batch_size=batch_size, shuffle=True,
                             class_weight=class_weight)
    best = runner.best_model_path
    if best is not None and best.is_file():
        model.set_weights(keras.models.load_model(best, compile=False).get_weights())
    best_state = {}
    if best is not None and best.with_suffix(".json").is_file():
        best_state = json.loads(best.with_suffix(".json").read_text(encoding="utf-8"))
    return model, history, best_state


def _check_data(data, split_sizes):
    if not isinstance(data, BlockData):
        raise ValueError(f"data must be a BlockData; got {type(data).__name__}")
    for side, n in split_sizes.items():
        if n == 0:
            raise ValueError(f"the {side} split is empty; use more neurons")


def _chains(data, index, length, max_distance):
    sub = data.take(index)
    prev = previous_blocks(sub.neurons, sub.blocks, sub.centres, max_distance=max_distance)
    return block_chains(prev, length=length)


def _head_inputs(probabilities, chains, labels, protocol):
    return sequence_inputs(chains, probabilities,
                           labels=labels if protocol == "oracle" else None)


def _score_rows(model, split, protocol, labels, probabilities):
    report = classification_report(labels, probabilities, class_names=CLASS_NAMES)
    return {"model": model, "split": split, "history": protocol, "n": int(labels.size),
            "accuracy": float(report.accuracy), "f1_high": float(report.per_class.f1[1]),
            "f1_macro": float(report.macro.f1)}


def train_3dssm(data, *, data_config=None, model_config=None, train_config=None, log=None):
    """Split by neuron, train the five stages, select on validation, evaluate on test.

    Parameters
    ----------
    data : BlockData
        Labelled blocks (e.g. :func:`load_block_data`).
    data_config : SSMDataConfig, optional
        Split fractions and seed, sequence length and neighbour distance.
    model_config : SSMModelConfig, optional
    train_config : SSMTrainConfig, optional
        ``run_dir`` is where everything is written (see the module docstring).
    log : callable, optional
        Called with one progress line per stage.

    Returns
    -------
    SSMResult

    Raises
    ------
    ValueError
        If ``data`` is not a BlockData, the neurons are too few for three non-empty sides,
        or a config is of the wrong type.
    """
    dc = data_config or SSMDataConfig()
    mc = model_config or SSMModelConfig()
    tc = train_config or SSMTrainConfig()
    for value, cls, name in ((dc, SSMDataConfig, "data_config"),
                             (mc, SSMModelConfig, "model_config"),
                             (tc, SSMTrainConfig, "train_config")):
        if not isinstance(value, cls):
            raise ValueError(f"{name} must be a {cls.__name__}; got {type(value).__name__}")
    if not isinstance(data, BlockData):
        raise ValueError(f"data must be a BlockData; got {type(data).__name__}")
    log = log or (lambda line: None)
    run_dir = Path(tc.run_dir)

    split = train_val_test_split(len(data), val_fraction=dc.val_fraction,
                                 test_fraction=dc.test_fraction, seed=dc.seed,
                                 groups=data.neurons, stratify=data.labels)
    _check_data(data, split.sizes())
    top = Runner(run_dir, strategy=tc.strategy, tensorboard=False, progress="none")
    top.save_config(data=dc, model=mc, train=tc)
    top.save_splits(split.take(data.names))
    sides = {s: np.asarray(getattr(split, s), dtype=np.int64) for s in ("train", "val", "test")}

    scale = training_maxima(data.features[sides["train"]])
    write_json(run_dir / "feature_scale.json", {"scale": scale.tolist()})
    feats = normalise_by_maxima(data.features, scale).astype(np.float32)
    y = data.labels
    # every stage trains with the same class weights (None unless "balanced")
    fit_stage = functools.partial(_fit_stage,
                                  class_weight=class_weights(y[sides["train"]], tc.class_weight))

    # Stage 1: 3D-ResNet-10 on image blocks.
    log("stage resnet: 3D-ResNet-10 on image blocks")
    runner = _stage_runner(run_dir, "resnet", tc, tc.seed)
    tr = BlockBatches(data.images[sides["train"]], y[sides["train"]],
                      batch_size=tc.resnet_batch_size, shuffle=True, seed=tc.seed)
    va = BlockBatches(data.images[sides["val"]], y[sides["val"]],
                      batch_size=tc.resnet_batch_size)
    resnet, _, _ = fit_stage(
        runner, lambda: M.build_resnet10(width=mc.width, dropout=mc.dropout), tr, None, va, None,
        learning_rate=tc.resnet_learning_rate, epochs=tc.resnet_epochs,
        batch_size=tc.resnet_batch_size, weight_decay=tc.resnet_weight_decay, stage="resnet")

    # Stage 2: FCN on the normalised L-Measure features.
    log("stage fcn: FCN on L-Measure features")
    runner = _stage_runner(run_dir, "fcn", tc, tc.seed + 1)
    fcn, _, _ = fit_stage(
        runner, lambda: M.build_fcn(feats.shape[1], units=mc.fcn_units),
        feats[sides["train"]], y[sides["train"]], feats[sides["val"]], y[sides["val"]],
        learning_rate=tc.fcn_learning_rate, epochs=tc.fcn_epochs,
        batch_size=tc.fcn_batch_size, stage="fcn")

    # Frozen base networks in inference mode: their probabilities for every block.
    base_p = {"resnet": _softmax(resnet.predict(
        BlockBatches(data.images, batch_size=max(tc.resnet_batch_size, 1)), verbose=0)),
        "fcn": _softmax(fcn.predict(feats, batch_size=256, verbose=0))}
    chains = {s: _chains(data, idx, dc.sequence_length, dc.max_distance)
              for s, idx in sides.items()}
    train_protocol = "oracle" if tc.oracle_history else "predicted"

    def head_inputs(base, side, protocol):
        idx = sides[side]
        return _head_inputs(base_p[base][idx], chains[side], y[idx], protocol)

    heads = {}
    for k, (head, base) in enumerate((("image_head", "resnet"), ("feature_head", "fcn"))):
        log(f"stage {head}: LSTM over {base} probabilities ({train_protocol} history)")
        runner = _stage_runner(run_dir, head, tc, tc.seed + 2 + k)
        heads[head], _, _ = fit_stage(
            runner, lambda: M.build_sequence_head(dc.sequence_length, units=mc.lstm_units,
                                                  num_layers=mc.lstm_layers, name=head),
            head_inputs(base, "train", train_protocol), y[sides["train"]],
            head_inputs(base, "val", train_protocol), y[sides["val"]],
            learning_rate=getattr(tc, f"{head}_learning_rate"),
            epochs=getattr(tc, f"{head}_epochs"), batch_size=getattr(tc, f"{head}_batch_size"),
            stage=head)

    def head_logits(side, protocol):
        return [heads[h].predict(head_inputs(b, side, protocol), batch_size=256, verbose=0)
                for h, b in (("image_head", "resnet"), ("feature_head", "fcn"))]

    # Fusion: a fresh model per repeat; the best repeat by validation.
    fusion_in = {s: head_logits(s, train_protocol) for s in ("train", "val")}
    repeats, fusions = [], []
    for r in range(tc.fusion_repeats):
        log(f"stage fusion_{r}: fresh fusion model (repeat {r + 1}/{tc.fusion_repeats})")
        runner = _stage_runner(run_dir, f"fusion_{r}", tc, tc.seed + 10 + r)
        model, history, best = fit_stage(
            runner, lambda: M.build_fusion(units=mc.fusion_units),
            fusion_in["train"], y[sides["train"]], fusion_in["val"], y[sides["val"]],
            learning_rate=tc.fusion_learning_rate, epochs=tc.fusion_epochs,
            batch_size=tc.fusion_batch_size, stage=f"fusion_{r}")
        value = best.get("best")
        if value is None:  # no run folder writes: take the last validation value
            value = history.get(tc.monitor, [math.nan])[-1]
        repeats.append({"repeat": r, "best_epoch": best.get("epoch"), tc.monitor: float(value)})
        fusions.append(model)
    mode_max = any(k in tc.monitor.lower() for k in ("acc", "auc", "dice", "iou", "f1"))
    values = np.array([rep[tc.monitor] for rep in repeats], dtype=np.float64)
    values = np.where(np.isfinite(values), values, -np.inf if mode_max else np.inf)
    selected = int(np.argmax(values) if mode_max else np.argmin(values))
    models = {"resnet": resnet, "fcn": fcn, **heads, "fusion": fusions[selected]}

    # Evaluation: every model on val and test, both history protocols.
    results = []
    for side in ("val", "test"):
        idx = sides[side]
        for base in ("resnet", "fcn"):  # no history: one row each
            results.append(_score_rows(base, side, "none", y[idx], base_p[base][idx]))
        for protocol in PROTOCOLS:
            h_img, h_feat = head_logits(side, protocol)
            results.append(_score_rows("image_head", side, protocol, y[idx], _softmax(h_img)))
            results.append(_score_rows("feature_head", side, protocol, y[idx], _softmax(h_feat)))
            p = _softmax(models["fusion"].predict([h_img, h_feat], batch_size=256, verbose=0))
            results.append(_score_rows("ssm3d", side, protocol, y[idx], p))
            if side == "test":
                write_classification_reports(run_dir, f"ssm3d_test_{protocol}", y[idx], p,
                                             class_names=CLASS_NAMES)
    write_csv(run_dir / "results.csv", results)
    write_text(run_dir / "results.md", markdown_table(results))
    write_json(run_dir / "fusion_repeats.json", {"monitor": tc.monitor, "repeats": repeats,
                                                 "selected": selected})
    for name, model in models.items():
        with atomic_path(run_dir / "models" / f"{name}.keras") as tmp:
            model.save(tmp)
    return SSMResult(run_dir=run_dir, models=models, split=split, results=results,
                     repeats=repeats, selected_repeat=selected, feature_scale=scale)


def load_models(run_dir):
    """The five trained sub-models saved by :func:`train_3dssm` (``run_dir/models/``).

    Raises
    ------
    FileNotFoundError
        Naming the missing model file.
    """
    out = {}
    for name in MODEL_NAMES:
        path = Path(run_dir) / "models" / f"{name}.keras"
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist; was train_3dssm "
                                    f"run with this run_dir?")
        out[name] = keras.models.load_model(path, compile=False)
    return out


def predict_3dssm(models, data, *, feature_scale, max_distance=100.0, sequence_length=5,
                  labels=None, batch_size=30):
    """3D-SSM probabilities for every block of ``data`` (predicted-history protocol).

    Parameters
    ----------
    models : dict
        :data:`MODEL_NAMES` -> keras.Model (from :func:`train_3dssm` or :func:`load_models`).
    data : BlockData
        Blocks; sequences are built among these rows.
    feature_scale : array-like (F,)
        The training maxima (``SSMResult.feature_scale`` or ``feature_scale.json``).
    max_distance, sequence_length
        As used in training.
    labels : array-like of int, optional
        Oracle protocol: the previous blocks' true labels enter the sequences (leaks labels;
        for comparison with the original only).
    batch_size : int

    Returns
    -------
    numpy.ndarray of float32, shape (n, 2)
    """
    missing = sorted(set(MODEL_NAMES) - set(models))
    if missing:
        raise ValueError(f"models lacks {missing}")
    if not isinstance(data, BlockData):
        raise ValueError(f"data must be a BlockData; got {type(data).__name__}")
    p_img = _softmax(models["resnet"].predict(BlockBatches(data.images, batch_size=batch_size),
                                              verbose=0))
    feats = normalise_by_maxima(data.features, feature_scale).astype(np.float32)
    p_feat = _softmax(models["fcn"].predict(feats, batch_size=256, verbose=0))
    chains = _chains(data, np.arange(len(data)), sequence_length, max_distance)
    h_img = models["image_head"].predict(sequence_inputs(chains, p_img, labels=labels),
                                         batch_size=256, verbose=0)
    h_feat = models["feature_head"].predict(sequence_inputs(chains, p_feat, labels=labels),
                                            batch_size=256, verbose=0)
    return _softmax(models["fusion"].predict([h_img, h_feat], batch_size=256, verbose=0))
