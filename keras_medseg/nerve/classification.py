"""Nerve / opening wound / tendon frame classification (nerve original, ORIGINALS.md section 1).

The original trained one script per backbone; here one function trains any registry backbone
with that backbone's defaults (:func:`default_classifier_config`) through the shared recipe
(:func:`keras_medseg.training.build_transfer_classifier`, :func:`~keras_medseg.training.fit_two_stage`)
and runner (:class:`keras_medseg.training.Runner`: strategy, CSV log, best checkpoint, resume,
TensorBoard, ``config.json`` and ``splits/``), and writes the original's report files.

Data layout (the original's): ``<data_dir>/<class>/<frame>.jpg`` is the "training and
validation" set, ``<test_dir>/<class>/<frame>.jpg`` the separate test ("video") set. Classes
are the sorted folder names: 0 = nerve, 1 = opening wound, 2 = tendon.

Validation split
----------------
``split_by="image"`` (default, faithful): the exact split of the original's
``image_dataset_from_directory(validation_split=0.2, seed=1337)``: files in class order,
sorted within a class, shuffled with ``numpy.random.RandomState(seed)``, the last
``int(0.2 * n)`` for validation. Frames of one video then fall on both sides.
``split_by="video"``: whole videos go to one side; the video of a frame is read from its
file name with ``group_pattern`` (:func:`keras_medseg.io.images.groups_from_names`), by
default everything before the first underscore (``v003_f0012.jpg`` -> ``v003``).

Run folder
----------
``config.json``, ``splits/{train,val,test}.txt``, ``log.csv``, ``best.keras``, ``model.keras``
(the final model), ``acc_loss.png``, ``acc_loss_after_fine_tuning.png``, ``model.txt``,
``<Backbone>_{train,val,test}_{CM,F1,AUC}.txt`` and ``_roc.png``, and ``samples/`` with the
last test image of every batch named ``<Backbone><run><Correct|Wrong><true><pred><batch><index>.png``.

Backbones without ImageNet weights
----------------------------------
With ``encoder_weights=None`` the backbone's BatchNormalization layers have no meaningful
moving statistics (mean 0, variance 1), and the recipe keeps them in inference mode, so a
random backbone's activations vanish. :func:`calibrate_batchnorm` sets the moving statistics
to those of a fixed batch of training images; with ``bn_calibration="auto"`` (default) and
``encoder_weights=None``, :class:`BatchNormCalibration` does this every few training batches
and before every validation pass, so the normalisation follows the changing weights as
training-mode BatchNorm would (without gradients through the statistics); with ImageNet
weights the statistics are never touched, as in the original.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.backbones import get_backbone_spec, list_backbones
from keras_medseg.io.images import classification_dataset, groups_from_names, list_class_folders
from keras_medseg.io.splits import Split, train_val_test_split

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_GROUP_PATTERN",
    "NERVE_BACKBONES",
    "ClassifierConfig",
    "ClassifierDataConfig",
    "ClassifierModelConfig",
    "ClassifierResult",
    "ClassifierTrainConfig",
    "BatchNormCalibration",
    "calibrate_batchnorm",
    "default_classifier_config",
    "display_name",
    "evaluate_classifier_folder",
    "load_classifier",
    "split_train_val",
    "train_classifier",
]

CLASS_NAMES = ("nerve", "opening wound", "tendon")
#: The backbones the original trained (ORIGINALS.md table); any registry name works.
NERVE_BACKBONES = ("densenet169", "densenet201", "mobilenetv2", "resnet50v2", "resnet101v2",
                   "resnet152v2")
SPLIT_BY = ("image", "video")
BN_CALIBRATION = ("auto", "on", "off")
#: Video of a frame: its file name up to the first underscore.
DEFAULT_GROUP_PATTERN = r"^(?P<group>[^_]+)_"


def display_name(backbone):
    """The keras.applications class name of a registry backbone (``"MobileNetV2"``), used
    as the model name and the report file prefix, as in the original."""
    return get_backbone_spec(backbone).builder


# ------------------------------------------------------------------------------- configs
@dataclasses.dataclass
class ClassifierDataConfig:
    """Where the frames are and how they are split, resized and batched."""

    data_dir: str = dataclasses.field(
        default="", metadata={"help": "training and validation class folders (root/<class>/)"})
    test_dir: str = dataclasses.field(
        default="", metadata={"help": "separate test ('video') class folders; empty: none"})
    image_size: tuple[int, ...] = dataclasses.field(
        default=(224, 224), metadata={"help": "height width of the model input"})
    batch_size: int = 12
    validation_split: float = 0.2
    split_by: str = dataclasses.field(
        default="image", metadata={"choices": SPLIT_BY,
                                   "help": "image: the original's split; video: whole videos "
                                           "on one side"})
    group_pattern: str = dataclasses.field(
        default=DEFAULT_GROUP_PATTERN,
        metadata={"help": "regex giving a frame's video from its file name (named group "
                          "'group', else the first group, else the match)"})
    seed: int = 1337
    cache: bool = dataclasses.field(default=True,
                                    metadata={"help": "keep decoded frames in memory"})

    def __post_init__(self):
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"image_size must be two positive ints (height, width); got "
                             f"{self.image_size!r}")
        self.image_size = size
        check_positive(self.batch_size, name="batch_size")
        if not 0 < self.validation_split < 1:
            raise ValueError(f"validation_split must be in (0, 1); got {self.validation_split!r}")
        check_choice(self.split_by, SPLIT_BY, name="split_by")
        try:
            re.compile(self.group_pattern)
        except re.error as exc:
            raise ValueError(f"group_pattern is not a valid regular expression "
                             f"({exc}): {self.group_pattern!r}") from None


@dataclasses.dataclass
class ClassifierModelConfig:
    """Backbone and head (the original: ImageNet backbone, GAP, Dropout(0.3), Dense(3))."""

    backbone: str = dataclasses.field(default="mobilenetv2",
                                      metadata={"choices": tuple(list_backbones())})
    encoder_weights: str | None = dataclasses.field(
        default="imagenet", metadata={"help": "'imagenet', a weights file, or none"})
    dropout: float = 0.3
    alpha: float | None = dataclasses.field(
        default=None, metadata={"help": "width multiplier (MobileNet/MobileNetV2 only)"})
    augment: bool = dataclasses.field(
        default=False, metadata={"help": "random flip + rotation 0.2 (defined, never used, "
                                         "by the original)"})
    bn_calibration: str = dataclasses.field(
        default="auto", metadata={"choices": BN_CALIBRATION,
                                  "help": "recompute the backbone's BatchNorm statistics "
                                          "from training images while training (auto: when "
                                          "encoder weights are none)"})
    calibration_images: int = 64
    calibration_every: int = dataclasses.field(
        default=4, metadata={"help": "calibrate every this many training batches"})

    def __post_init__(self):
        get_backbone_spec(self.backbone)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        if self.alpha is not None:
            check_positive(self.alpha, name="alpha")
        check_choice(self.bn_calibration, BN_CALIBRATION, name="bn_calibration")
        check_positive(self.calibration_images, name="calibration_images")
        check_positive(self.calibration_every, name="calibration_every")


@dataclasses.dataclass
class ClassifierTrainConfig:
    """The two stages (the original: 10 frozen epochs at Adam 1e-3, then the backbone's
    fine-tune epochs at 1e-4 from its fine-tune layer)."""

    run_dir: str = "runs/nerve/classifier"
    initial_epochs: int = 10
    fine_tune_epochs: int | None = dataclasses.field(
        default=None, metadata={"help": "default: the backbone's registry value"})
    fine_tune_at: str | None = dataclasses.field(
        default=None, metadata={"help": "first trainable backbone layer (name, or index); "
                                        "default: the registry's"})
    learning_rate: float = 1e-3
    strategy: str = dataclasses.field(default="default",
                                      metadata={"choices": ("default", "mirrored",
                                                            "multiworker")})
    seed: int = 1337
    monitor: str = "val_loss"
    tensorboard: bool = True
    progress: str = dataclasses.field(default="keras",
                                      metadata={"choices": ("keras", "tqdm", "none")})
    resume: bool = True
    run_name: str = dataclasses.field(
        default="", metadata={"help": "run tag inside the sample image names"})
    samples: bool = dataclasses.field(
        default=True, metadata={"help": "save the last test image of every batch"})

    def __post_init__(self):
        for name in ("initial_epochs", "fine_tune_epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int; got {value!r}")
        check_positive(self.learning_rate, name="learning_rate")
        check_choice(self.strategy, ("default", "mirrored", "multiworker"), name="strategy")
        check_choice(self.progress, ("keras", "tqdm", "none"), name="progress")
        if "/" in self.run_name or "\\" in self.run_name:
            raise ValueError(f"run_name must not contain path separators; got "
                             f"{self.run_name!r}")


@dataclasses.dataclass
class ClassifierConfig:
    """The three sections of a classification run."""

    data: ClassifierDataConfig = dataclasses.field(default_factory=ClassifierDataConfig)
    model: ClassifierModelConfig = dataclasses.field(default_factory=ClassifierModelConfig)
    train: ClassifierTrainConfig = dataclasses.field(default_factory=ClassifierTrainConfig)


def default_classifier_config(backbone="mobilenetv2"):
    """The original's settings for ``backbone``.

    Batch 12, 224x224 input, dropout 0.3, Adam 1e-3, 10 frozen epochs, then the backbone's
    fine-tune epochs (20 for DenseNet, 15 for MobileNetV2 and ResNetV2) from its fine-tune
    layer (registry), image-level 8:2 split with seed 1337.

    Returns
    -------
    ClassifierConfig

    Raises
    ------
    ValueError
        For a name that is not in the registry.
    """
    spec = get_backbone_spec(backbone)
    return ClassifierConfig(
        data=ClassifierDataConfig(),
        model=ClassifierModelConfig(backbone=spec.name),
        train=ClassifierTrainConfig(run_dir=f"runs/nerve/{spec.name}",
                                    fine_tune_epochs=spec.fine_tune_epochs,
                                    fine_tune_at=spec.fine_tune_at))


# --------------------------------------------------------------------------------- split
def split_train_val(paths, *, validation_split=0.2, seed=1337, split_by="image",
                    group_pattern=DEFAULT_GROUP_PATTERN):
    """Split the "training and validation" frames into training and validation.

    Parameters
    ----------
    paths : sequence of str
        Frames in :func:`~keras_medseg.io.images.list_class_folders` order (class by class,
        sorted within a class: the order Keras lists them).
    validation_split : float
        Fraction in (0, 1) for validation.
    seed : int
        Non-negative seed.
    split_by : {"image", "video"}
        ``"image"``: the original's ``image_dataset_from_directory`` split (shuffle with
        ``numpy.random.RandomState(seed)``, the last ``int(validation_split * n)`` files
        validate). ``"video"``: whole videos (from ``group_pattern``) on one side, about
        ``validation_split`` of the frames in validation
        (:func:`keras_medseg.io.splits.train_val_test_split` with ``groups``).
    group_pattern : str
        Regular expression for the video of a file name (``"video"`` only).

    Returns
    -------
    Split
        ``train`` and ``val`` indices into ``paths`` (``test`` empty).

    Raises
    ------
    ValueError
        Invalid options, too few frames (or videos) for both sides, or a file name the
        pattern does not match.
    """
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    check_choice(split_by, SPLIT_BY, name="split_by")
    if not isinstance(validation_split, (int, float)) or not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be in (0, 1); got {validation_split!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    if split_by == "image":
        n_val = int(validation_split * n)
        if n_val < 1 or n_val >= n:
            raise ValueError(f"{n} frames are too few for validation_split={validation_split}")
        order = np.arange(n)
        np.random.RandomState(int(seed)).shuffle(order)
        return Split(train=order[:-n_val], val=order[-n_val:])
    groups = groups_from_names(paths, group_pattern)
    if len(set(groups)) < 2:
        raise ValueError(f"split_by='video' needs at least 2 videos; group_pattern "
                         f"{group_pattern!r} found {sorted(set(groups))}")
    return train_val_test_split(n, val_fraction=validation_split, test_fraction=0.0,
                                seed=int(seed), groups=groups)


# ------------------------------------------------------------------------------ training
@dataclasses.dataclass
class ClassifierResult:
    """What :func:`train_classifier` returns.

    Attributes
    ----------
    run_dir : Path
    model : keras.Model
        The final model (logits output).
    class_names : list of str
    history1, history2 : dict
        Per-stage histories (epochs numbered on across the stages).
    evaluations : dict
        Split name -> :class:`keras_medseg.training.EvaluationResult`.
    model_path : Path
        ``run_dir/model.keras``.
    seconds : float
        Wall-clock time of the whole call.
    """

    run_dir: Path
    model: object
    class_names: list
    history1: dict
    history2: dict
    evaluations: dict
    model_path: Path
    seconds: float

    def accuracy(self, split="test"):
        """Accuracy on ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return self.evaluations[split].accuracy

    def auc(self, split="test"):
        """Dict of the ROC AUCs on ``split``: per class, ``"micro"``, ``"macro"`` (the
        original's interpolated macro curve) and ``"macro_mean"`` (mean of the per-class
        AUCs)."""
        report = self.evaluations[split].report
        out = {name: float(v) for name, v in zip(self.class_names, report.auc_per_class)}
        out["micro"] = float(report.auc_micro)
        out["macro"] = float(report.auc_macro)
        out["macro_mean"] = float(report.auc_macro_mean)
        return out


def _relative(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def _resolve_fine_tune_at(value):
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def _first_batch(paths, labels, *, image_size, count, seed):
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(len(paths))[:count])
    ds = classification_dataset([paths[i] for i in take], np.asarray(labels)[take],
                                image_size=image_size, batch_size=len(take))
    images, _ = next(iter(ds))
    return np.asarray(images)


def _log(log, text):
    if log is not None:
        log(text)


def train_classifier(config, run_dir=None, *, log=None):
    """Train and evaluate a frame classifier with the original's two-stage recipe.

    Parameters
    ----------
    config : ClassifierConfig
        ``data.data_dir`` is required; ``data.test_dir`` is optional (no test reports
        without it). Use :func:`default_classifier_config` for a backbone's original settings.
    run_dir : str or Path, optional
        Run folder; default ``config.train.run_dir``. Re-running with the same folder
        resumes (``config.train.resume``).
    log : callable, optional
        ``log(str)`` for progress lines (e.g. ``print``).

    Returns
    -------
    ClassifierResult

    Raises
    ------
    ValueError
        If ``config`` is not a :class:`ClassifierConfig`, ``data_dir`` is empty, the test
        folder's classes differ from the training folder's, or as the split, recipe and
        reports raise.
    FileNotFoundError
        If a data folder does not exist.
    """
    from keras_medseg.training import (Runner, build_transfer_classifier, evaluate_classifier,
                                       fit_two_stage, write_history_plots, write_model_summary)
    from keras_medseg.utils import atomic_path

    t0 = time.perf_counter()
    if not isinstance(config, ClassifierConfig):
        raise ValueError(f"config must be a ClassifierConfig; got {type(config).__name__}")
    data, mcfg, tcfg = config.data, config.model, config.train
    if not data.data_dir:
        raise ValueError("config.data.data_dir must name the training and validation folder")
    run_dir = Path(run_dir if run_dir is not None else tcfg.run_dir)
    spec = get_backbone_spec(mcfg.backbone)
    name = display_name(spec.name)

    trainval = list_class_folders(data.data_dir)
    class_names = list(trainval.class_names)
    test = None
    if data.test_dir:
        test = list_class_folders(data.test_dir, allow_empty=True)
        if list(test.class_names) != class_names:
            raise ValueError(f"test folder {data.test_dir!r} has classes {test.class_names} "
                             f"but the training folder {data.data_dir!r} has {class_names}")
    split = split_train_val(trainval.paths, validation_split=data.validation_split,
                            seed=data.seed, split_by=data.split_by,
                            group_pattern=data.group_pattern)
    paths = np.asarray(trainval.paths, dtype=object)
    labels = trainval.labels
    tr, va = np.asarray(split.train, int), np.asarray(split.val, int)
    _log(log, f"{len(tr)} training / {len(va)} validation frames (split by {data.split_by})"
              + (f", {len(test.paths)} test frames" if test else ""))

    def dataset(p, y, shuffle):
        return classification_dataset(list(p), y, image_size=data.image_size,
                                      batch_size=data.batch_size, shuffle=shuffle,
                                      seed=data.seed, cache=data.cache)

    train_ds = dataset(paths[tr], labels[tr], True)
    val_ds = dataset(paths[va], labels[va], False)

    runner = Runner(run_dir, strategy=tcfg.strategy, seed=tcfg.seed, monitor=tcfg.monitor,
                    tensorboard=tcfg.tensorboard, progress=tcfg.progress, resume=tcfg.resume)
    runner.save_config(data=data, model=mcfg, train=tcfg,
                       classes={"class_names": class_names})
    splits = {"train": _relative(paths[tr], data.data_dir),
              "val": _relative(paths[va], data.data_dir)}
    if test is not None:
        splits["test"] = _relative(test.paths, data.test_dir)
    runner.save_splits(splits)

    backbone_kwargs = {"alpha": mcfg.alpha} if mcfg.alpha is not None else None
    with runner.scope():
        model = build_transfer_classifier(
            spec.name, len(class_names), input_shape=tuple(data.image_size) + (3,),
            dropout=mcfg.dropout, encoder_weights=mcfg.encoder_weights,
            augmentation="default" if mcfg.augment else None,
            backbone_kwargs=backbone_kwargs, name=name)

    calibrate = mcfg.bn_calibration == "on" or (
        mcfg.bn_calibration == "auto" and mcfg.encoder_weights is None)
    callbacks = []
    if calibrate:
        images = _first_batch(paths[tr], labels[tr], image_size=data.image_size,
                              count=mcfg.calibration_images, seed=data.seed)
        from keras_medseg.training.transfer import BatchNormCalibration

        calibration = BatchNormCalibration(model, images, every=mcfg.calibration_every)
        calibration.calibrate()
        callbacks.append(calibration)

    history1, history2 = fit_two_stage(
        model, train_ds, val_ds, backbone=spec.name, initial_epochs=tcfg.initial_epochs,
        fine_tune_epochs=tcfg.fine_tune_epochs, fine_tune_at=_resolve_fine_tune_at(
            tcfg.fine_tune_at), base_learning_rate=tcfg.learning_rate, runner=runner,
        callbacks=callbacks, verbose=2 if tcfg.progress == "keras" else 0)
    if calibrate:
        calibration.calibrate()

    model_path = run_dir / "model.keras"
    if runner.is_chief:
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        write_history_plots(run_dir, history1, history2)
        write_model_summary(run_dir / "model.txt", model)

    evaluations = {}
    sides = [("train", paths[tr], labels[tr]), ("val", paths[va], labels[va])]
    if test is not None and len(test.paths):
        sides.append(("test", np.asarray(test.paths, dtype=object), test.labels))
    for side, p, y in sides:
        ds = classification_dataset(list(p), y, image_size=data.image_size,
                                    batch_size=data.batch_size)
        sample_dir = run_dir / "samples" if side == "test" and tcfg.samples else None
        evaluations[side] = evaluate_classifier(
            model, ds, class_names=class_names,
            out_dir=run_dir if runner.is_chief else None,
            prefix=f"{name}_{side}" if runner.is_chief else None,
            sample_dir=sample_dir if runner.is_chief else None, model_name=name,
            run=tcfg.run_name)
        _log(log, f"{side}: accuracy {evaluations[side].accuracy:.4f} "
                  f"(n={len(evaluations[side].y_true)})")
    return ClassifierResult(run_dir=run_dir, model=model, class_names=class_names,
                            history1=history1, history2=history2, evaluations=evaluations,
                            model_path=model_path, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- evaluation
def load_classifier(path):
    """Load a classifier saved by :func:`train_classifier` (``.keras``), without compiling.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it cannot be read as a Keras model (the message names the file).
    """
    import keras

    import keras_medseg.training.transfer  # noqa: F401  (registers InferenceMode)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise ValueError(f"cannot load model file {str(path)!r}: {exc}") from exc


def evaluate_classifier_folder(model_path, test_dir, out_dir, *, batch_size=12, prefix=None,
                               samples=True, run=""):
    """Evaluate a saved classifier on a class-folder test set (the original's "video" test).

    Parameters
    ----------
    model_path : str or Path
        ``.keras`` file from :func:`train_classifier` (logits output).
    test_dir : str or Path
        ``<test_dir>/<class>/<frame>``; its sorted sub-folders are the classes and must be
        as many as the model's outputs.
    out_dir : str or Path
        Folder for ``<prefix>_CM.txt``, ``_F1.txt``, ``_AUC.txt``, ``_roc.png`` and (with
        ``samples``) ``samples/``.
    batch_size : int
        Batch size; the last image of every batch is saved as a sample.
    prefix : str, optional
        Default ``"<model name>_test"``.
    samples : bool
        Save the sample images.
    run : str
        Run tag inside the sample names.

    Returns
    -------
    keras_medseg.training.EvaluationResult

    Raises
    ------
    FileNotFoundError
        Missing model file or test folder.
    ValueError
        If the folder's class count differs from the model's outputs, or as
        :func:`keras_medseg.training.evaluate_classifier` raises.
    """
    from keras_medseg.training import evaluate_classifier

    check_positive(batch_size, name="batch_size")
    model = load_classifier(model_path)
    listing = list_class_folders(test_dir)
    n_out = int(model.output_shape[-1])
    if len(listing.class_names) != n_out:
        raise ValueError(f"test folder {str(test_dir)!r} has {len(listing.class_names)} classes "
                         f"{listing.class_names} but model {str(model_path)!r} has {n_out} "
                         f"outputs")
    image_size = tuple(int(s) for s in model.input_shape[1:3])
    ds = classification_dataset(listing.paths, listing.labels, image_size=image_size,
                                batch_size=int(batch_size))
    out_dir = Path(out_dir)
    return evaluate_classifier(model, ds, class_names=list(listing.class_names), out_dir=out_dir,
                               prefix=prefix or f"{model.name}_test",
                               sample_dir=out_dir / "samples" if samples else None,
                               model_name=model.name, run=run)


def __getattr__(name):
    # The BatchNorm calibration is shared with brainview and lives in the training recipe;
    # it is re-exported here lazily so importing this module does not import Keras.
    if name in ("calibrate_batchnorm", "BatchNormCalibration"):
        from keras_medseg.training import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
