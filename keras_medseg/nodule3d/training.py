"""Training of the two nodule3d stages through the shared runner.

Both stages follow convnet3d: batch 32, 50 epochs, ``Adam(1e-5, clipnorm=0.001)``,
``ReduceLROnPlateau(monitor="loss", factor=0.1, patience=2)``, a weights checkpoint after
every epoch and TensorBoard logs. Stage 1 (:func:`train_stage1`) trains the candidate-
screening net on (15, 30, 30) patches with :class:`OnlineSampleFilteringLoss`; stage 2
(:func:`train_stage2`) trains the false-positive-reduction net on (25, 60, 60) patches with
the paper's hybrid loss (cross-entropy + smooth-L1 box regression on positives), optionally
starting C1-C3 from the stage-1 weights. Positives (only) are augmented
(:func:`keras_medseg.nodule3d.data.augment_patch`).

Run folder (``run_dir``) of one stage::

    config.json, log.csv, best.keras, backup/, stages/     the shared runner
    checkpoints/epoch_<NNN>.weights.h5                     one per epoch (optional)
    tensorboard/                                           (optional)
    model.keras                                            the trained model, written last

``model.keras`` is written only when training finished; a call that finds it (with the same
settings in ``config.json``) returns at once, and an interrupted call started again
continues after its last finished epoch (``keras.callbacks.BackupAndRestore``).

Regression targets
------------------
The patch CSV records each patch's centre and (for positives) the lesion diameter, but not
where the lesion lies inside a jittered copy. :func:`write_regression_targets` recovers it:
it maps the series' lesions to the resampled grid (the same cached volumes the patches were
cut from) and, for each positive patch, takes the lesion of the same class and diameter
nearest to the patch centre; the lesion centre relative to the patch's first voxel and its
diameter in voxels go into a sidecar CSV next to the patch CSV
(``<patch csv stem>_targets.csv``: ``patch,class,z,y,x,d``). When a positive is augmented,
:class:`RegressionPatchDataset` applies the same random transform to small Gaussian blobs at
and around the lesion centre and reads the transformed centre and scale from their centroids
(:func:`augmented_target`), so targets follow the scale, rotation, flips and
translation.

Quick mode
----------
:func:`quick_stage1_config` / :func:`quick_stage2_config` give the settings the demo and the
tests use: fewer epochs and a learning rate of 1e-3 (at 1e-5 a handful of epochs would not
move the weights), no per-epoch checkpoints and no TensorBoard; everything else as above.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import keras
import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.io.tables import (group_by_series, read_class_mapping, read_patch_csv,
                                    read_series_csv)
from keras_medseg.nodule3d.data import PatchDataset, augment_patch, load_patch, load_series
from keras_medseg.nodule3d.losses import (OnlineSampleFilteringLoss, encode_regression_targets,
                                          fp_reduction_losses, pack_regression_targets)
from keras_medseg.nodule3d.models import (build_candidate_screening, build_fp_reduction,
                                          init_fp_reduction_from_screening)
from keras_medseg.training import Runner
from keras_medseg.training.config import config_to_dict
from keras_medseg.utils import atomic_path, write_csv

__all__ = [
    "Stage1Config", "Stage2Config", "quick_stage1_config", "quick_stage2_config",
    "EpochCheckpoint", "RegressionPatchDataset", "write_regression_targets",
    "read_regression_targets", "default_targets_csv_name", "train_stage1", "train_stage2",
]

_PROGRESS = ("keras", "tqdm", "none")


@dataclasses.dataclass
class Stage1Config:
    """Stage-1 (candidate screening) training settings; defaults are convnet3d's."""

    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-5
    clipnorm: float = 0.001
    lr_factor: float = dataclasses.field(default=0.1, metadata={"help": "ReduceLROnPlateau factor"})
    lr_patience: int = dataclasses.field(default=2, metadata={"help": "ReduceLROnPlateau patience"})
    augment: bool = dataclasses.field(default=True, metadata={"help": "augment positives"})
    balance: bool = dataclasses.field(
        default=False, metadata={"help": "draw positives with replacement up to the negatives"})
    final_batchnorm: bool = dataclasses.field(
        default=False, metadata={"help": "the original's BN before the softmax (a defect)"})
    epoch_checkpoints: bool = dataclasses.field(
        default=True, metadata={"help": "write checkpoints/epoch_NNN.weights.h5 every epoch"})
    tensorboard: bool = True
    seed: int = 0
    progress: str = dataclasses.field(default="keras", metadata={"choices": _PROGRESS})

    def __post_init__(self):
        _check_common(self)


@dataclasses.dataclass
class Stage2Config(Stage1Config):
    """Stage-2 (false-positive reduction) settings: Stage1Config's plus the hybrid loss."""

    regression: bool = dataclasses.field(
        default=True, metadata={"help": "box-regression head and hybrid loss (Dou et al.)"})
    regression_weight: float = dataclasses.field(
        default=1.0, metadata={"help": "lambda of the smooth-L1 term"})
    init_from_stage1: bool = dataclasses.field(
        default=True, metadata={"help": "copy C1-C3 from the stage-1 model"})
    l2: float = dataclasses.field(default=1e-4, metadata={"help": "L2 on conv kernels"})

    def __post_init__(self):
        _check_common(self)
        check_positive(self.regression_weight, name="regression_weight", allow_zero=True)
        check_positive(self.l2, name="l2", allow_zero=True)


def _check_common(cfg):
    check_positive(cfg.epochs, name="epochs", allow_zero=True)
    check_positive(cfg.batch_size, name="batch_size")
    check_positive(cfg.learning_rate, name="learning_rate")
    check_positive(cfg.clipnorm, name="clipnorm")
    if not 0 < cfg.lr_factor < 1:
        raise ValueError(f"lr_factor must be in (0, 1); got {cfg.lr_factor!r}")
    check_positive(cfg.lr_patience, name="lr_patience", allow_zero=True)
    check_choice(cfg.progress, _PROGRESS, name="progress")


def quick_stage1_config(**overrides):
    """Stage-1 settings of the quick mode (demo, tests): 8 epochs at learning rate 1e-3,
    no per-epoch checkpoints, no TensorBoard; ``overrides`` replace fields."""
    values = dict(epochs=8, learning_rate=1e-3, epoch_checkpoints=False, tensorboard=False,
                  progress="none")
    values.update(overrides)
    return Stage1Config(**values)


def quick_stage2_config(**overrides):
    """Stage-2 settings of the quick mode: 2 epochs at learning rate 1e-3, no per-epoch
    checkpoints, no TensorBoard; ``overrides`` replace fields."""
    values = dict(epochs=2, learning_rate=1e-3, epoch_checkpoints=False, tensorboard=False,
                  progress="none")
    values.update(overrides)
    return Stage2Config(**values)


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the weights after every epoch to ``folder/epoch_<NNN>.weights.h5`` (1-based
    epoch numbers, atomic writes), as convnet3d saved a model per epoch."""

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        with atomic_path(self.folder / f"epoch_{epoch + 1:03d}.weights.h5") as tmp:
            self.model.save_weights(str(tmp))


# ----------------------------------------------------------------------------- targets
def default_targets_csv_name(patch_csv):
    """``<patch csv stem>_targets.csv`` beside the patch CSV."""
    p = Path(patch_csv)
    stem = p.name[:-4] if p.name.lower().endswith(".csv") else p.name
    return p.with_name(f"{stem}_targets.csv")


def write_regression_targets(patch_csv, series_csv, cache_dir, *, out_csv=None, spacing=1.0,
                             max_distance=None):
    """Write the lesion position of every positive patch to a sidecar CSV.

    Parameters
    ----------
    patch_csv : path-like
        A stage-2 patch CSV (:func:`keras_medseg.nodule3d.data.make_stage2_patches`).
    series_csv : path-like
        The series CSV the patches were made from (lesion centres and diameters).
    cache_dir : path-like
        The resampled-volume cache the patches were cut from (``<out_dir>/resampled``).
    out_csv : path-like, optional
        Default :func:`default_targets_csv_name`.
    spacing : float
        Resampled voxel size (mm) used when making the patches.
    max_distance : float, optional
        Largest accepted distance (voxels) between a patch centre and its lesion; default
        ``sqrt(3) * (5 + 1)`` (the largest jitter plus rounding).

    Returns
    -------
    pathlib.Path
        CSV with columns ``patch,class,z,y,x,d``: lesion centre relative to the patch's first
        voxel (voxels, float) and diameter in voxels, one row per positive patch.

    Raises
    ------
    ValueError
        When a positive patch has no diameter, no lesion of its class and diameter in its
        series, or its lesion lies farther than ``max_distance`` (the message names the patch).
    """
    patch_csv = Path(patch_csv)
    rows = read_patch_csv(patch_csv)
    lesions_by_series = group_by_series(read_series_csv(series_csv))
    limit = math.sqrt(3) * 6 if max_distance is None else float(max_distance)
    cache, out = {}, []
    for r in rows:
        if r.class_name == "bg":
            continue
        if r.diameter is None:
            raise ValueError(f"{patch_csv}: line {r.line}: positive patch {r.patch} has no "
                             "diameter; regression targets need one")
        if r.series not in cache:
            if r.series not in lesions_by_series:
                raise ValueError(f"{patch_csv}: line {r.line}: series {r.series} is not in "
                                 f"{series_csv}")
            series = load_series(r.series, cache_dir, spacing=spacing)
            les = [x for x in lesions_by_series[r.series]]
            zyx = series.to_resampled(np.asarray([x.xyz for x in les], dtype=np.float64))
            cache[r.series] = (les, np.asarray(zyx).reshape(-1, 3),
                               float(np.mean(series.spacing)))
        les, zyx, vox = cache[r.series]
        same = [i for i, x in enumerate(les) if x.class_name == r.class_name
                and x.diameter is not None and abs(x.diameter - r.diameter) < 1e-6]
        centre = np.asarray(r.xyz[::-1], dtype=np.float64)
        if not same:
            raise ValueError(f"{patch_csv}: line {r.line}: no lesion of class {r.class_name!r} "
                             f"and diameter {r.diameter} in {r.series} for patch {r.patch}")
        dist = np.linalg.norm(zyx[same] - centre, axis=1)
        best = same[int(np.argmin(dist))]
        if dist.min() > limit:
            raise ValueError(f"{patch_csv}: line {r.line}: patch {r.patch} is {dist.min():.1f} "
                             f"voxels from the nearest matching lesion (limit {limit:.1f})")
        shape = np.asarray(np.load(r.patch, mmap_mode="r").shape)
        start = np.round(centre).astype(np.int64) - shape // 2
        rel = zyx[best] - start
        out.append(dict(patch=r.patch, **{"class": r.class_name}, z=float(rel[0]),
                        y=float(rel[1]), x=float(rel[2]), d=float(r.diameter) / vox))
    target = default_targets_csv_name(patch_csv) if out_csv is None else Path(out_csv)
    return write_csv(target, out, columns=["patch", "class", "z", "y", "x", "d"])


def read_regression_targets(path):
    """``{patch path: (centre (3,) float64 relative to the patch start, diameter voxels)}``
    from :func:`write_regression_targets`' CSV."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: regression-target CSV not found")
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                out[row["patch"]] = (np.array([float(row["z"]), float(row["y"]),
                                               float(row["x"])]), float(row["d"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: line {i}: expected columns patch,class,z,y,x,d with "
                                 "numbers") from None
    return out


def _blob(shape, centre, sigma):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return np.exp(-r2 / (2 * sigma ** 2)).astype(np.float32), grids


def _centroid(image, grids):
    w = np.clip(image.astype(np.float64), 0, None)
    return np.array([np.sum(w * g) for g in grids]) / w.sum()


def augmented_target(shape, centre, diameter, seed, *, sigma=1.0, step=4.0, **augment_kwargs):
    """Where a lesion at ``centre`` (diameter ``diameter``) lands after
    ``augment_patch(patch, numpy.random.default_rng(seed), **augment_kwargs)`` of a patch of
    ``shape``.

    Gaussian blobs (``sigma`` voxels) at the centre and ``step`` voxels from it along each
    axis (towards the patch middle) are transformed the same way; their centroids give the
    new centre and the local linear map ``J``, and the diameter scales by
    ``|det J| ** (1 / 3)``.

    Returns ``(centre (3,) float64, diameter float)``.
    """
    c = np.asarray(centre, dtype=np.float64)
    middle = (np.asarray(shape) - 1) / 2
    signs = np.where(c <= middle, 1.0, -1.0)
    points = [c] + [c + signs[i] * step * np.eye(3)[i] for i in range(3)]
    moved = []
    for q in points:
        blob, grids = _blob(shape, q, sigma)
        out = augment_patch(blob, np.random.default_rng(seed), **augment_kwargs)
        moved.append(_centroid(out, grids) - _centroid(blob, grids) + q)
    jac = np.stack([(moved[i + 1] - moved[0]) / (signs[i] * step) for i in range(3)], axis=1)
    return moved[0], float(diameter) * abs(float(np.linalg.det(jac))) ** (1 / 3)


class RegressionPatchDataset(PatchDataset):
    """Stage-2 batches ``(patches, {"classification": one-hot, "regression": (b, 5)})``.

    Like :class:`~keras_medseg.nodule3d.data.PatchDataset` (label_mode ``"onehot"``) plus the
    packed regression labels of :func:`~keras_medseg.nodule3d.losses.pack_regression_targets`
    (normalised with mean 0, std 0.2); an augmented positive's target follows its transform
    (:func:`augmented_target`).

    Parameters
    ----------
    patches, class_mapping
        As for ``PatchDataset``.
    targets : path-like or mapping
        :func:`write_regression_targets`' CSV or :func:`read_regression_targets`' dict; every
        positive patch must be in it.
    **kwargs
        ``batch_size``, ``augment``, ``shuffle``, ``balance``, ``seed``, ``augment_kwargs``
        and the ``PyDataset`` options.
    """

    def __init__(self, patches, class_mapping, targets, **kwargs):
        if "label_mode" in kwargs:
            raise ValueError("RegressionPatchDataset always uses one-hot labels; "
                             "do not pass label_mode")
        super().__init__(patches, class_mapping, label_mode="onehot", **kwargs)
        if isinstance(targets, (str, os.PathLike)):
            targets = read_regression_targets(targets)
        self.targets = dict(targets)
        missing = [r.patch for r, y in zip(self.rows, self.labels)
                   if y != 0 and r.patch not in self.targets]
        if missing:
            raise ValueError(f"targets: no regression target for {len(missing)} positive "
                             f"patch(es), e.g. {missing[0]}")

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)})")
        picks = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        xs, centres, diameters = [], [], []
        for position, i in zip(range(index * self.batch_size, len(self._order)), picks):
            row = self.rows[i]
            patch = load_patch(row.patch)
            centre, diameter = self.targets.get(row.patch, (None, None))
            if self.labels[i] != 0:
                if self.augment:
                    seed = [self.seed, 13, self.epoch, position]
                    patch = augment_patch(patch, np.random.default_rng(seed),
                                          **self.augment_kwargs)
                    centre, diameter = augmented_target(patch.shape, centre, diameter, seed,
                                                        **self.augment_kwargs)
            else:
                centre, diameter = None, None
            xs.append(patch.astype(np.float32, copy=False))
            centres.append(np.full(3, np.nan) if centre is None else centre)
            diameters.append(np.nan if diameter is None else diameter)
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"patches in one batch must share a shape; got {sorted(shapes)}")
        shape = xs[0].shape
        positive = self.labels[picks] != 0
        t = np.zeros((len(picks), 4), np.float32)
        if positive.any():
            t[positive] = encode_regression_targets(
                np.asarray(centres)[positive], np.asarray(diameters)[positive],
                patch_size=tuple(int(s) for s in shape))
        y_cls = np.eye(self.num_classes, dtype=np.float32)[self.labels[picks]]
        return np.stack(xs)[..., None], {"classification": y_cls,
                                         "regression": pack_regression_targets(t, positive)}


# ----------------------------------------------------------------------------- training
def _callbacks(cfg, run_dir):
    cbs = [keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=cfg.lr_factor,
                                             patience=cfg.lr_patience, verbose=0)]
    if cfg.epoch_checkpoints:
        cbs.append(EpochCheckpoint(Path(run_dir) / "checkpoints"))
    return cbs


def _finished(run_dir, section, cfg_dict):
    """The finished model of an earlier identical call, or None."""
    import json

    model_path = Path(run_dir) / "model.keras"
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        return None
    if not model_path.is_file():
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        if section in saved and saved[section] != cfg_dict:
            raise ValueError(f"run_dir {str(run_dir)!r} holds an unfinished {section} run with "
                             f"other settings; choose another run_dir")
        return None
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if saved.get(section) != cfg_dict:
        raise ValueError(f"run_dir {str(run_dir)!r} holds a finished {section} run with other "
                         f"settings; choose another run_dir")
    return model_path


def _save_model(model, run_dir):
    path = Path(run_dir) / "model.keras"
    with atomic_path(path) as tmp:
        model.save(str(tmp))
    return path


def _runner(cfg, run_dir):
    return Runner(run_dir, seed=cfg.seed, monitor="loss", mode="min",
                  tensorboard=cfg.tensorboard, progress=cfg.progress, resume=True)


def _mapping(class_mapping):
    if isinstance(class_mapping, (str, os.PathLike)):
        return read_class_mapping(class_mapping)
    return dict(class_mapping)


def train_stage1(patch_csv, run_dir, class_mapping, *, config=None, verbose="auto"):
    """Train the candidate-screening network on a stage-1 patch CSV.

    Parameters
    ----------
    patch_csv : path-like
        :func:`keras_medseg.nodule3d.data.make_stage1_patches`' CSV ((15, 30, 30) patches).
    run_dir : path-like
        Run folder (layout in the module docstring).
    class_mapping : mapping or path-like
        ``{class_name: id}`` with ``bg: 0``, or the ``mapping.csv`` written with the patches.
    config : Stage1Config, optional
        Default: convnet3d's settings.
    verbose
        ``Model.fit`` verbosity when ``config.progress == "keras"``.

    Returns
    -------
    pathlib.Path
        ``run_dir/model.keras`` (fully convolutional: reload it for whole volumes, its input
        is ``(None, None, None, 1)``).
    """
    cfg = Stage1Config() if config is None else config
    if not isinstance(cfg, Stage1Config) or isinstance(cfg, Stage2Config):
        raise ValueError(f"config must be a Stage1Config; got {type(cfg).__name__}")
    run_dir = Path(run_dir)
    mapping = _mapping(class_mapping)
    cfg_dict = config_to_dict(cfg)
    done = _finished(run_dir, "stage1", dict(cfg_dict, patch_csv=str(patch_csv)))
    if done is not None:
        return done
    data = PatchDataset(patch_csv, mapping, batch_size=cfg.batch_size, augment=cfg.augment,
                        shuffle=True, balance=cfg.balance, label_mode="onehot_map",
                        seed=cfg.seed)
    runner = _runner(cfg, run_dir)
    model = runner.build(build_candidate_screening, num_classes=data.num_classes,
                         final_batchnorm=cfg.final_batchnorm)
    runner.compile(model, optimizer=lambda: keras.optimizers.Adam(cfg.learning_rate,
                                                                  clipnorm=cfg.clipnorm),
                   loss=OnlineSampleFilteringLoss(seed=cfg.seed), metrics=["accuracy"])
    runner.save_config(stage1=dict(cfg_dict, patch_csv=str(patch_csv)))
    runner.fit(model, data, epochs=cfg.epochs, stage="stage1",
               callbacks=_callbacks(cfg, run_dir), verbose=verbose)
    return _save_model(model, run_dir)


def train_stage2(patch_csv, run_dir, class_mapping, *, targets=None, stage1_model=None,
                 config=None, verbose="auto"):
    """Train the false-positive-reduction network on a stage-2 patch CSV.

    Parameters
    ----------
    patch_csv : path-like
        :func:`keras_medseg.nodule3d.data.make_stage2_patches`' CSV ((25, 60, 60) patches).
    run_dir : path-like
    class_mapping : mapping or path-like
    targets : path-like or mapping, optional
        Regression targets (:func:`write_regression_targets`); required when
        ``config.regression`` (the default).
    stage1_model : path-like or keras.Model, optional
        Trained stage-1 model; with ``config.init_from_stage1`` its C1-C3 (and BN) start
        stage 2. Ignored otherwise.
    config : Stage2Config, optional

    Returns
    -------
    pathlib.Path
        ``run_dir/model.keras``.
    """
    cfg = Stage2Config() if config is None else config
    if not isinstance(cfg, Stage2Config):
        raise ValueError(f"config must be a Stage2Config; got {type(cfg).__name__}")
    if cfg.regression and targets is None:
        raise ValueError("targets must be given when config.regression is True "
                         "(see write_regression_targets)")
    if cfg.init_from_stage1 and stage1_model is None:
        raise ValueError("stage1_model must be given when config.init_from_stage1 is True")
    run_dir = Path(run_dir)
    mapping = _mapping(class_mapping)
    record = dict(config_to_dict(cfg), patch_csv=str(patch_csv))
    done = _finished(run_dir, "stage2", record)
    if done is not None:
        return done
    common = dict(batch_size=cfg.batch_size, augment=cfg.augment, shuffle=True,
                  balance=cfg.balance, seed=cfg.seed)
    if cfg.regression:
        data = RegressionPatchDataset(patch_csv, mapping, targets, **common)
    else:
        data = PatchDataset(patch_csv, mapping, label_mode="onehot", **common)
    shape = np.load(data.rows[0].patch, mmap_mode="r").shape + (1,)
    runner = _runner(cfg, run_dir)
    model = runner.build(build_fp_reduction, shape, data.num_classes,
                         regression=cfg.regression, l2=cfg.l2)
    if cfg.init_from_stage1:
        s1 = stage1_model
        if isinstance(s1, (str, os.PathLike)):
            s1 = keras.saving.load_model(s1, compile=False)
        init_fp_reduction_from_screening(model, s1)
    if cfg.regression:
        loss, weights = fp_reduction_losses(regression_weight=cfg.regression_weight)
        metrics = {"classification": ["accuracy"]}
    else:
        loss, weights, metrics = keras.losses.CategoricalCrossentropy(), None, ["accuracy"]
    runner.compile(model, optimizer=lambda: keras.optimizers.Adam(cfg.learning_rate,
                                                                  clipnorm=cfg.clipnorm),
                   loss=loss, loss_weights=weights, metrics=metrics)
    runner.save_config(stage2=record)
    runner.fit(model, data, epochs=cfg.epochs, stage="stage2",
               callbacks=_callbacks(cfg, run_dir), verbose=verbose)
    return _save_model(model, run_dir)
