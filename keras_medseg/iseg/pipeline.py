"""Training pipeline of the iseg task (I-seg_Focus for iSeg-2017), on the shared runner.

Data are prepared HDF5 subjects (``data`` ``(M, Z, X, Y)``, ``label`` ``(Z, X, Y)``, see
:mod:`keras_medseg.io.hdf5`), one file per subject, with any number ``M`` of modalities
(2 for iSeg T1 + T2, 1 for the ICBM152 T1 template).

Recipe (the original's defaults, :class:`IsegTrainConfig`):

* a subject-level split (9:1, seeded, or named subjects), written to ``splits/train.txt`` and
  ``splits/val.txt`` in the run folder, with ``config.json``;
* random ``64^3`` crops, each training subject visited 4 times per epoch, batch 4: an epoch
  is ``ceil(4 n / 4)`` iterations (9 for the challenge's 9 training subjects);
* not in the original, off by default: proper-rotation (``rotate``) and intensity
  (``intensity``) augmentation of the training crops (:class:`IsegDataConfig`,
  :class:`keras_medseg.io.hdf5.IsegPatchSampler`);
* cross-entropy over 4 classes from logits (``loss="dice_ce"``: plus a soft multi-class
  Dice loss);
* Adam, learning rate 2e-4, betas (0.97, 0.999), weight decay 6e-4 applied as PyTorch's
  ``Adam(weight_decay=...)`` does, i.e. an L2 term ``wd * w`` ADDED TO THE GRADIENT before
  the moment estimates (:class:`AdamL2`; Keras' own ``weight_decay`` is the decoupled AdamW
  rule, available as ``weight_decay_mode="adamw"``);
* step decay of the learning rate by 0.1 every 5000 epochs (by epoch, so it survives a
  resume);
* checkpoints, logs and resume from :class:`keras_medseg.training.Runner`.

Validation (a fix of the original, which scored one centre crop of a subject that may also
have been trained on): the validation subjects are tiled with crops on an exact grid
covering each volume (:func:`validation_crops`), so the validation loss covers every voxel.

The ICBM152 sample (:func:`prepare_icbm152_hemispheres`) splits the real adult template at
its mid-sagittal plane into two disjoint "subjects", one hemisphere for training and the
other for evaluation, one modality (T1).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive

__all__ = [
    "CLASS_NAMES", "IsegDataConfig", "IsegModelConfig", "IsegTrainConfig", "AdamL2",
    "DiceCELoss", "find_hdf5_subjects", "split_subjects", "make_optimizer", "make_loss",
    "step_decay", "validation_crops", "build_model", "train_iseg", "TrainResult",
    "downsample_volume", "prepare_icbm152_hemispheres", "crop_size_for",
    "epochs_for_iterations", "prepare_synthetic_subjects", "train_synthetic", "train_icbm152",
]

#: Foreground classes of the iSeg label maps (1, 2, 3).
CLASS_NAMES = ("CSF", "GM", "WM")


def _check_int(value, name, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- configs
@dataclasses.dataclass
class IsegDataConfig:
    """Where the prepared HDF5 subjects are and how they are split and cropped."""

    data_dir: str = dataclasses.field(default="", metadata={
        "help": "folder of prepared subject HDF5 files (data_prep/prepare_hdf5_cutedge.py)"})
    val_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "fraction of subjects held out for validation (the original's 9:1)"})
    val_subjects: tuple[str, ...] = dataclasses.field(default=(), metadata={
        "help": "file stems of the validation subjects (overrides --data-val-fraction)"})
    crop_size: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 4
    repeats: int = dataclasses.field(default=4, metadata={
        "help": "visits of each training subject per epoch"})
    class_balanced: bool = dataclasses.field(default=False, metadata={
        "help": "centre training crops on voxels of a uniformly chosen class"})
    rotate: bool = dataclasses.field(default=False, metadata={
        "help": "turn each training crop (image and labels) by a random proper rotation of "
                "the cube, never a reflection (needs a cubic crop; not in the original)"})
    rotate_axis: int | None = dataclasses.field(default=None, metadata={
        "help": "with --data-rotate: None = all 24 rotations of the cube, 0/1/2 = the 4 "
                "rotations about that array axis", "choices": (0, 1, 2)})
    intensity: float = dataclasses.field(default=0.0, metadata={
        "help": "random per-modality scale in [1-a, 1+a] and shift in [-a, a] of the "
                "z-scored training crops (0 = off, the original)"})
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction!r}")
        if len(self.crop_size) != 3:
            raise ValueError(f"crop_size must have 3 entries; got {self.crop_size!r}")
        for c in self.crop_size:
            _check_int(c, "crop_size")
        _check_int(self.batch_size, "batch_size")
        _check_int(self.repeats, "repeats")
        from keras_medseg.io.hdf5 import check_augmentation

        check_augmentation(self.crop_size, rotate=self.rotate, rotate_axis=self.rotate_axis,
                           intensity=self.intensity)


@dataclasses.dataclass
class IsegModelConfig:
    """FocusNet variant (:func:`keras_medseg.iseg.models.build_focusnet3d`)."""

    levels: int = dataclasses.field(default=2, metadata={
        "help": "2 = the original's model 1, 3 = model 2", "choices": (2, 3)})
    num_classes: int = 4
    dropout: float = 0.2
    up_groups: int = 4
    width: float = dataclasses.field(default=1.0, metadata={
        "help": "channel-width multiplier (1 = the original; 0.25 is ~16x cheaper)"})

    def __post_init__(self):
        check_choice(self.levels, (2, 3), name="levels")
        check_positive(self.width, name="width")
        _check_int(self.num_classes, "num_classes", minimum=2)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")


@dataclasses.dataclass
class IsegTrainConfig:
    """Optimisation (the original's defaults) and run-folder options."""

    run_dir: str = "runs/iseg/run"
    epochs: int = dataclasses.field(default=20000, metadata={
        "help": "epochs of ceil(repeats * subjects / batch) iterations"})
    learning_rate: float = 2e-4
    beta_1: float = 0.97
    beta_2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 6e-4
    weight_decay_mode: str = dataclasses.field(default="l2", metadata={
        "help": "l2: PyTorch Adam's weight_decay (wd*w added to the gradient); adamw: "
                "decoupled", "choices": ("l2", "adamw")})
    lr_step_epochs: int = dataclasses.field(default=5000, metadata={
        "help": "multiply the learning rate by lr_step_factor every this many epochs"})
    lr_step_factor: float = 0.1
    loss: str = dataclasses.field(default="ce", metadata={
        "help": "ce: cross-entropy; dice_ce: cross-entropy + soft Dice",
        "choices": ("ce", "dice_ce")})
    val_every: int = dataclasses.field(default=1, metadata={
        "help": "validate every this many epochs"})
    strategy: str = dataclasses.field(default="default", metadata={
        "choices": ("default", "mirrored", "multiworker")})
    seed: int = 1337
    progress: str = dataclasses.field(default="keras", metadata={
        "choices": ("keras", "tqdm", "none")})
    tensorboard: bool = False
    resume: bool = True
    run_eagerly: bool = dataclasses.field(default=False, metadata={
        "help": "run the training step eagerly (no graph tracing: faster only for tiny runs)"})

    def __post_init__(self):
        _check_int(self.epochs, "epochs", minimum=0)
        check_positive(self.learning_rate, name="learning_rate")
        for name in ("beta_1", "beta_2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1); got {v!r}")
        check_positive(self.epsilon, name="epsilon")
        check_positive(self.weight_decay, name="weight_decay", allow_zero=True)
        check_choice(self.weight_decay_mode, ("l2", "adamw"), name="weight_decay_mode")
        _check_int(self.lr_step_epochs, "lr_step_epochs")
        check_positive(self.lr_step_factor, name="lr_step_factor")
        check_choice(self.loss, ("ce", "dice_ce"), name="loss")
        _check_int(self.val_every, "val_every")
        check_choice(self.progress, ("keras", "tqdm", "none"), name="progress")


# ----------------------------------------------------------------------------- optimiser, loss
def _register(cls):
    import keras

    return keras.saving.register_keras_serializable(package="keras_medseg")(cls)


def _adam_l2_class():
    import keras
    from keras import ops

    class AdamL2(keras.optimizers.Adam):
        """Adam with PyTorch's coupled weight decay: ``g <- g + l2 * w`` before the update.

        ``torch.optim.Adam(params, weight_decay=wd)`` adds ``wd * w`` to every parameter's
        gradient, so the decay passes through the moment estimates (L2 regularisation);
        Keras' ``Adam(weight_decay=...)`` instead shrinks the weights directly (AdamW).
        Applied to every trainable variable, as PyTorch does for every parameter.

        Parameters
        ----------
        l2 : float
            The PyTorch ``weight_decay``.
        **kwargs
            ``keras.optimizers.Adam`` arguments (its own ``weight_decay`` must stay None).
        """

        def __init__(self, l2=0.0, **kwargs):
            if kwargs.get("weight_decay"):
                raise ValueError("AdamL2 applies the coupled decay l2; leave weight_decay None")
            super().__init__(**kwargs)
            check_positive(l2, name="l2", allow_zero=True)
            self.l2 = float(l2)

        def update_step(self, gradient, variable, learning_rate):
            if self.l2:
                gradient = ops.add(ops.cast(gradient, variable.dtype),
                                   ops.multiply(ops.cast(self.l2, variable.dtype), variable))
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            config = super().get_config()
            config["l2"] = self.l2
            return config

    AdamL2.__module__ = __name__
    return _register(AdamL2)


def _dice_ce_class():
    import keras
    from keras import ops

    class DiceCELoss(keras.losses.Loss):
        """Cross-entropy from logits plus ``1 - mean soft Dice`` over the classes.

        ``y_true``: integer labels ``(B, *spatial)``; ``y_pred``: logits ``(B, *spatial, C)``.
        The soft Dice of class ``c`` is ``(2 sum(p_c t_c) + s) / (sum(p_c) + sum(t_c) + s)``
        over the whole batch, ``p`` the softmax; the mean runs over all ``C`` classes.

        Parameters
        ----------
        num_classes : int
        smooth : float
            ``s`` above (default 1).
        dice_weight : float
            Weight of the Dice term (the cross-entropy has weight 1).
        """

        def __init__(self, num_classes=4, smooth=1.0, dice_weight=1.0, name="dice_ce",
                     **kwargs):
            super().__init__(name=name, **kwargs)
            self.num_classes = _check_int(num_classes, "num_classes", minimum=2)
            self.smooth = float(check_positive(smooth, name="smooth", allow_zero=True))
            self.dice_weight = float(check_positive(dice_weight, name="dice_weight",
                                                    allow_zero=True))

        def call(self, y_true, y_pred):
            labels = ops.cast(y_true, "int32")
            ce = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
            probs = ops.softmax(ops.cast(y_pred, "float32"), axis=-1)
            onehot = ops.one_hot(labels, self.num_classes, dtype="float32")
            axes = tuple(range(len(probs.shape) - 1))
            inter = ops.sum(probs * onehot, axis=axes)
            denom = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
            dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
            return ce + self.dice_weight * (1.0 - ops.mean(dice))

        def get_config(self):
            return {"name": self.name, "reduction": self.reduction,
                    "num_classes": self.num_classes, "smooth": self.smooth,
                    "dice_weight": self.dice_weight}

    DiceCELoss.__module__ = __name__
    return _register(DiceCELoss)


_LAZY = {"AdamL2": _adam_l2_class, "DiceCELoss": _dice_ce_class}


def __getattr__(name):
    # AdamL2 and DiceCELoss subclass Keras classes: build them once, on first use, so
    # importing this module does not import Keras.
    if name in _LAZY:
        cls = _LAZY[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lazy(name):
    return globals()[name] if name in globals() else __getattr__(name)


def make_optimizer(config):
    """The optimiser of ``config`` (an :class:`IsegTrainConfig`).

    ``weight_decay_mode="l2"``: :class:`AdamL2` (PyTorch ``Adam(weight_decay=wd)``);
    ``"adamw"``: ``keras.optimizers.AdamW`` (decoupled, ``w -= lr * wd * w``).
    """
    import keras

    kwargs = dict(learning_rate=config.learning_rate, beta_1=config.beta_1,
                  beta_2=config.beta_2, epsilon=config.epsilon)
    if config.weight_decay_mode == "adamw":
        return keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
    return _lazy("AdamL2")(l2=config.weight_decay, **kwargs)


def make_loss(name, num_classes=4):
    """``"ce"``: sparse categorical cross-entropy from logits; ``"dice_ce"``:
    :class:`DiceCELoss`."""
    import keras

    check_choice(name, ("ce", "dice_ce"), name="loss")
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _lazy("DiceCELoss")(num_classes=num_classes)


def step_decay(epoch, *, learning_rate, step_epochs, factor):
    """Learning rate of 0-based ``epoch``: ``learning_rate * factor ** (epoch // step_epochs)``."""
    return float(learning_rate * factor ** (int(epoch) // int(step_epochs)))


# ----------------------------------------------------------------------------- subjects
def _natural_key(path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name)]


def find_hdf5_subjects(data_dir):
    """The ``*.h5`` / ``*.hdf5`` files of ``data_dir``, in natural order (subject-2 before -10).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no HDF5 file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    files = sorted([p for p in data_dir.iterdir() if p.suffix in (".h5", ".hdf5")],
                   key=_natural_key)
    if not files:
        raise FileNotFoundError(f"{data_dir}: no .h5/.hdf5 subject files")
    return files


def split_subjects(files, *, val_fraction=0.1, val_subjects=(), seed=0):
    """Subject-level train/validation split.

    Parameters
    ----------
    files : sequence of path
    val_fraction : float
        Fraction held out (at least one subject when positive), seeded
        (:func:`keras_medseg.io.splits.train_val_test_split`). Ignored when ``val_subjects``
        is given.
    val_subjects : sequence of str
        File stems (``"subject-10"``) of the validation subjects.
    seed : int

    Returns
    -------
    dict
        ``{"train": [Path, ...], "val": [Path, ...]}``, disjoint, in natural order.

    Raises
    ------
    ValueError
        For unknown ``val_subjects``, duplicate files, or no training subject left.
    """
    from keras_medseg.io.splits import train_val_test_split

    files = [Path(f) for f in files]
    if not files:
        raise ValueError("files must list at least one subject")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"files must name distinct subjects; got {stems}")
    if val_subjects:
        unknown = sorted(set(val_subjects) - set(stems))
        if unknown:
            raise ValueError(f"val_subjects {unknown} are not among the subjects {stems}")
        val_idx = [stems.index(s) for s in val_subjects]
    elif val_fraction > 0:
        if len(files) < 2:
            raise ValueError("val_fraction > 0 needs at least 2 subjects; got 1")
        val_idx = list(train_val_test_split(len(files), val_fraction=val_fraction,
                                            test_fraction=0.0, seed=seed).val)
    else:
        val_idx = []
    train = [f for i, f in enumerate(files) if i not in set(val_idx)]
    if not train:
        raise ValueError("no training subject left after the validation split")
    val = [f for i, f in enumerate(files) if i in set(val_idx)]
    return {"train": sorted(train, key=_natural_key), "val": sorted(val, key=_natural_key)}


def validation_crops(files, crop_size):
    """Tile every validation subject with crops on an exact covering grid.

    Starts per axis come from :func:`keras_medseg.inference.grid_positions` with
    ``stride = crop`` (the last crop flush with the edge); a volume smaller than the crop is
    padded (data 0, label 0) at its end.

    Returns
    -------
    x : ndarray float32 ``(N, *crop_size, M)``
    y : ndarray int32 ``(N, *crop_size)``
    """
    import itertools

    from keras_medseg.inference import grid_positions
    from keras_medseg.io.hdf5 import read_iseg_hdf5

    crop = tuple(int(c) for c in crop_size)
    xs, ys = [], []
    for f in files:
        data, label = read_iseg_hdf5(f)
        if label is None:
            raise ValueError(f"{f}: no 'label' dataset; validation subjects need labels")
        pad = [(0, max(0, c - n)) for n, c in zip(label.shape, crop)]
        data = np.pad(data, pad + [(0, 0)])
        label = np.pad(label, pad)
        for start in itertools.product(*grid_positions(label.shape, crop, crop)):
            sl = tuple(slice(s, s + c) for s, c in zip(start, crop))
            xs.append(data[sl])
            ys.append(label[sl].astype(np.int32))
    return np.stack(xs), np.stack(ys)


def build_model(model_config, channels):
    """FocusNet for ``channels`` input modalities, spatial sizes None (fully convolutional)."""
    from keras_medseg.iseg.models import build_focusnet3d

    return build_focusnet3d((None, None, None, int(channels)), model_config.num_classes,
                            levels=model_config.levels, dropout=model_config.dropout,
                            up_groups=model_config.up_groups, width=model_config.width)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_iseg` returns.

    Attributes
    ----------
    model : keras.Model
        The model after the last epoch (the best checkpoint is ``run_dir/best.keras``).
    history : dict
        ``{"epoch": [...], "loss": [...], "val_loss": [...], ...}``.
    splits : dict
        ``{"train": [Path], "val": [Path]}``.
    run_dir : Path
    channels : int
        Input modalities.
    """

    model: object
    history: dict
    splits: dict
    run_dir: Path
    channels: int


def train_iseg(data_config, model_config=None, train_config=None, *, files=None, splits=None,
               callbacks=(), verbose="auto"):
    """Train a FocusNet on prepared HDF5 subjects with the shared runner.

    Parameters
    ----------
    data_config : IsegDataConfig
    model_config : IsegModelConfig, optional
    train_config : IsegTrainConfig, optional
    files : sequence of path, optional
        Subject files (default: every HDF5 file in ``data_config.data_dir``), split by
        :func:`split_subjects`.
    splits : dict, optional
        ``{"train": [...], "val": [...]}`` given explicitly instead (e.g. the ICBM152
        hemispheres); ``val`` may be empty (no validation, the checkpoint follows ``loss``).
    callbacks : sequence
        Extra Keras callbacks.
    verbose
        ``Model.fit`` verbosity (with ``progress="keras"``).

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        If the subjects have different numbers of modalities or lack labels, and as the
        configs and :func:`split_subjects` raise.
    """
    import keras

    from keras_medseg.io.hdf5 import IsegPatchDataset, iseg_hdf5_shape
    from keras_medseg.training import Runner

    model_config = model_config or IsegModelConfig()
    train_config = train_config or IsegTrainConfig()
    if splits is None:
        if files is None:
            files = find_hdf5_subjects(data_config.data_dir)
        splits = split_subjects(files, val_fraction=data_config.val_fraction,
                                val_subjects=data_config.val_subjects, seed=data_config.seed)
    splits = {"train": [Path(f) for f in splits["train"]],
              "val": [Path(f) for f in splits.get("val", [])]}
    if not splits["train"]:
        raise ValueError("splits['train'] must list at least one subject")
    channels = {iseg_hdf5_shape(f)[1] for f in splits["train"] + splits["val"]}
    if len(channels) != 1:
        raise ValueError(f"all subjects must have the same number of modalities; got {channels}")
    channels = channels.pop()

    has_val = bool(splits["val"])
    runner = Runner(train_config.run_dir, strategy=train_config.strategy,
                    seed=train_config.seed, monitor="val_loss" if has_val else "loss",
                    tensorboard=train_config.tensorboard, progress=train_config.progress,
                    resume=train_config.resume)
    runner.save_config(data=data_config, model=model_config, train=train_config,
                       channels={"modalities": channels})
    runner.save_splits({k: [str(f) for f in v] for k, v in splits.items()})

    train_data = IsegPatchDataset(splits["train"], crop_size=data_config.crop_size,
                                  batch_size=data_config.batch_size,
                                  repeats=data_config.repeats, mode="train",
                                  seed=data_config.seed,
                                  class_balanced=data_config.class_balanced,
                                  rotate=data_config.rotate,
                                  rotate_axis=data_config.rotate_axis,
                                  intensity=data_config.intensity)
    val_data = validation_crops(splits["val"], data_config.crop_size) if has_val else None
    model = runner.build(build_model, model_config, channels)
    runner.compile(model, optimizer=lambda: make_optimizer(train_config),
                   loss=make_loss(train_config.loss, model_config.num_classes),
                   metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                   run_eagerly=train_config.run_eagerly)

    def schedule(epoch, lr=None):
        return step_decay(epoch, learning_rate=train_config.learning_rate,
                          step_epochs=train_config.lr_step_epochs,
                          factor=train_config.lr_step_factor)

    fit_kwargs = {}
    if has_val:
        fit_kwargs["validation_freq"] = train_config.val_every
        fit_kwargs["validation_batch_size"] = data_config.batch_size
    history = runner.fit(model, train_data, val_data, epochs=train_config.epochs,
                         callbacks=[keras.callbacks.LearningRateScheduler(schedule)]
                         + list(callbacks), verbose=verbose, **fit_kwargs)
    return TrainResult(model=model, history=history, splits=splits,
                       run_dir=Path(train_config.run_dir), channels=channels)


# ----------------------------------------------------------------------------- ICBM152
def downsample_volume(image, labels, factor):
    """Block-downsample an image (mean) and a label map (majority) by an integer factor.

    Each axis is first trimmed at its end to a multiple of ``factor``. Label ties go to the
    lower class id.

    Parameters
    ----------
    image : ndarray (Z, Y, X)
    labels : ndarray of int (Z, Y, X), values 0..255
    factor : int >= 1

    Returns
    -------
    image : ndarray float32, labels : ndarray uint8
    """
    factor = _check_int(factor, "factor")
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image and labels must be 3D of one shape; got {image.shape} and "
                         f"{labels.shape}")
    if factor == 1:
        return image.astype(np.float32), labels.astype(np.uint8)
    shape = [n // factor for n in image.shape]
    if min(shape) < 1:
        raise ValueError(f"factor {factor} exceeds the volume shape {image.shape}")
    trim = tuple(slice(0, n * factor) for n in shape)
    blocks = (shape[0], factor, shape[1], factor, shape[2], factor)
    img = image[trim].astype(np.float64).reshape(blocks).mean(axis=(1, 3, 5))
    lab = labels[trim].reshape(blocks)
    classes = np.unique(lab)
    counts = np.stack([(lab == c).sum(axis=(1, 3, 5)) for c in classes])
    return img.astype(np.float32), classes[np.argmax(counts, axis=0)].astype(np.uint8)


def _zscore_in_mask(image):
    mask = image > 0
    inside = image[mask].astype(np.float64)
    return ((image - inside.mean()) / inside.std()).astype(np.float32), mask


def prepare_icbm152_hemispheres(out_dir, *, downsample=2, margin=16, train_half="first",
                                volume=None, **load_kwargs):
    """Write the ICBM152 template's two hemispheres as two one-modality HDF5 subjects.

    The (z, y, x) template is cut at the mid-sagittal plane ``x = X // 2`` (for the 197-wide
    template the plane ``x = 98`` mirrors onto itself); the first half is ``x < X // 2``, the
    second ``x >= X // 2``, so no voxel is in both. Each half is block-downsampled
    (:func:`downsample_volume`), z-scored inside its own brain mask (``T1 > 0``), cropped to
    the mask's bounding box +- ``margin`` voxels and written as ``train.h5`` / ``test.h5``
    (``data`` (1, z, y, x), ``label`` 0 background, 1 CSF, 2 GM, 3 WM).

    Note: the 2009a *symmetric* template is exactly mirror-symmetric, so the held-out
    hemisphere is the mirror image of the training one: the split tests generalisation to
    mirrored anatomy (and to the few voxels at the plane), not to another brain.

    Parameters
    ----------
    out_dir : path
    downsample : int
        Block size (2 gives 2 mm voxels).
    margin : int
        Voxels kept around each hemisphere's mask after downsampling.
    train_half : {"first", "second"}
        Which half (along x) is for training.
    volume : LabeledVolume, optional
        As :func:`keras_medseg.sampledata.fetch.load_icbm152` returns (default: loaded with
        ``load_kwargs``).

    Returns
    -------
    dict
        ``"train"``, ``"test"`` (Paths), ``"spacing"`` (mm per axis), ``"source"``,
        ``"bounds"`` (per half, the crop in the downsampled half), also written to
        ``split.json``.
    """
    from keras_medseg.io.hdf5 import cut_edge_bounds, write_iseg_hdf5
    from keras_medseg.utils import write_json

    check_choice(train_half, ("first", "second"), name="train_half")
    factor = _check_int(downsample, "downsample")
    margin = _check_int(margin, "margin", minimum=0)
    if volume is None:
        from keras_medseg.sampledata.fetch import load_icbm152

        volume = load_icbm152(**load_kwargs)
    image = np.asarray(volume.image.array, dtype=np.float32)
    labels = np.asarray(volume.labels.array)
    spacing = tuple(float(s) * factor for s in getattr(volume.image, "spacing", (1.0,) * 3))
    mid = image.shape[2] // 2
    halves = {"first": (slice(None), slice(None), slice(0, mid)),
              "second": (slice(None), slice(None), slice(mid, None))}
    out_dir = Path(out_dir)
    record = {"spacing": list(spacing), "source": getattr(volume, "source", "unknown"),
              "downsample": factor, "midplane_x": mid, "train_half": train_half, "bounds": {}}
    for half, sl in halves.items():
        img, lab = downsample_volume(image[sl], labels[sl], factor)
        img, mask = _zscore_in_mask(img)
        lab = np.where(mask, lab, 0).astype(np.uint8)
        bounds = cut_edge_bounds(mask, margin)
        crop = tuple(slice(a, b) for a, b in bounds)
        role = "train" if half == train_half else "test"
        record[role] = write_iseg_hdf5(out_dir / f"{role}.h5", img[crop][None], lab[crop])
        record["bounds"][role] = [list(b) for b in bounds]
    write_json(out_dir / "split.json", record)
    return record


def crop_size_for(shape, crop_size, levels=2):
    """Largest crop <= ``crop_size`` per axis that fits ``shape`` and is a multiple of the
    model's down-sampling factor ``2 ** (levels + 1)``."""
    factor = 2 ** (levels + 1)
    return tuple(max(factor, min(c, (n // factor) * factor)) for c, n in zip(crop_size, shape))


def epochs_for_iterations(iterations, n_subjects, *, repeats, batch_size):
    """Epochs needed for at least ``iterations`` optimiser steps."""
    per_epoch = math.ceil(n_subjects * repeats / batch_size)
    return max(1, math.ceil(iterations / per_epoch))


def prepare_synthetic_subjects(out_dir, *, n_subjects=4, shape=(64, 80, 72), seed=0,
                               margin=32):
    """Generate synthetic infant phantoms (Analyze) and prepare them as HDF5 subjects.

    Writes ``out_dir/analyze/subject-<i>-{T1,T2,label}.hdr`` with
    :func:`keras_medseg.sampledata.generate_iseg`, then ``out_dir/hdf5/subject-<i>.h5`` with
    :func:`keras_medseg.io.prep.prepare_iseg_folder` (mask ``T1 > 0``, z-score, cut edge
    +- ``margin``, labels {0, 10, 150, 250} -> {0, 1, 2, 3}). Both steps skip work already
    done. Returns the HDF5 files in natural order.
    """
    from keras_medseg.io.prep import prepare_iseg_folder
    from keras_medseg.sampledata import generate_iseg

    out_dir = Path(out_dir)
    generate_iseg(out_dir / "analyze", seed=seed, n_subjects=n_subjects, shape=shape)
    prepare_iseg_folder(out_dir / "analyze", out_dir / "hdf5", margin, progress=False)
    return find_hdf5_subjects(out_dir / "hdf5")


def train_synthetic(data_config, model_config=None, train_config=None, *, n_subjects=4,
                    shape=(64, 80, 72), callbacks=(), verbose="auto"):
    """:func:`prepare_synthetic_subjects` into ``<run_dir>/sample``, then :func:`train_iseg`."""
    train_config = train_config or IsegTrainConfig()
    files = prepare_synthetic_subjects(Path(train_config.run_dir) / "sample",
                                       n_subjects=n_subjects, shape=shape,
                                       seed=data_config.seed)
    return train_iseg(data_config, model_config, train_config, files=files,
                      callbacks=callbacks, verbose=verbose)


def train_icbm152(data_config, model_config=None, train_config=None, *, downsample=2,
                  train_half="first", margin=16, volume=None, callbacks=(), verbose="auto",
                  **load_kwargs):
    """Train on one ICBM152 hemisphere (:func:`prepare_icbm152_hemispheres` into
    ``<run_dir>/data``); the other hemisphere (``test.h5``) is never seen in training and
    there is no validation set (the checkpoint follows the training loss). The training crop
    is shrunk to fit the hemisphere where needed (:func:`crop_size_for`)."""
    from keras_medseg.io.hdf5 import iseg_hdf5_shape

    train_config = train_config or IsegTrainConfig()
    model_config = model_config or IsegModelConfig()
    prepared = prepare_icbm152_hemispheres(Path(train_config.run_dir) / "data",
                                           downsample=downsample, margin=margin,
                                           train_half=train_half, volume=volume,
                                           **load_kwargs)
    shape = iseg_hdf5_shape(prepared["train"])[0]
    crop = crop_size_for(shape, data_config.crop_size, model_config.levels)
    if crop != tuple(data_config.crop_size):
        data_config = dataclasses.replace(data_config, crop_size=crop)
    return train_iseg(data_config, model_config, train_config,
                      splits={"train": [prepared["train"]], "val": []},
                      callbacks=callbacks, verbose=verbose)
