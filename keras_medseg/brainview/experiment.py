"""The brainview experiments: k-fold cross-validation + final model, and cross-dataset tests.

:func:`run_kfold` (the original's notebook, with its defects fixed)::

    near-black filter -> train/test split (stratified, blocks or volume)
    -> k folds of the training set, a fresh model per fold   -> folds.csv / folds.md
    -> final model on all training data                      -> final/ (runner files)
    -> test evaluation: accuracy, weighted F1, one-vs-rest AUC, <prefix>_CM/F1/AUC/roc,
       confusion_matrix.png, curves, misclassified/, gradcam/  -> results.json

:func:`run_cross_dataset`: train on one dataset, test on another (same outputs for the test).

Every model is trained through the shared :class:`keras_medseg.training.Runner` (run folder
with ``log.csv``, ``best.keras``, resume), ``config.json`` and ``splits/`` are written to the
output folder, so a run can be repeated exactly.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.brainview.data import (SPLIT_METHODS, VIEWS, ViewSlices, block_groups,
                                         drop_near_black, make_dataset, matching_slices,
                                         split_train_test)
from keras_medseg.brainview.gradcam import grad_cam, save_gradcam_figure
from keras_medseg.brainview.model import (FINE_TUNE_AT, build_brainview_model,
                                          calibrate_batchnorm, compile_brainview_model,
                                          flip_tta_model, view_augmentation)
from keras_medseg.training.transfer import BatchNormCalibration
from keras_medseg.io.splits import kfold
from keras_medseg.metrics import classification_report
from keras_medseg.training.reports import (evaluate_classifier, plot_accuracy_loss,
                                           predict_scores, save_prediction_sample)
from keras_medseg.training.runner import Runner
from keras_medseg.utils import markdown_table, new_figure, save_figure, write_csv, \
    write_json, write_text

__all__ = [
    "BrainviewConfig",
    "ExperimentResult",
    "cross_validate",
    "evaluate_model",
    "fold_summary",
    "plot_confusion_matrix",
    "run_cross_dataset",
    "run_kfold",
    "train_model",
]


@dataclasses.dataclass
class BrainviewConfig:
    """One brainview run, with the original's defaults.

    ``encoder_weights`` defaults to ImageNet as in the original; offline runs pass None (the
    backbone's BatchNormalization statistics are then calibrated on training images when
    ``calibrate_bn``, see :mod:`keras_medseg.brainview.model`). ``fine_tune_at`` is a layer
    name, an index written as digits (``"0"`` trains the whole backbone) or None (frozen).
    """

    image_size: int = 512
    batch_size: int = 32
    epochs: int = 10
    learning_rate: float = 1e-4
    lr_schedule: str = dataclasses.field(default="constant", metadata={
        "choices": ("constant", "cosine"),
        "help": "constant (original) or cosine decay to 1 %% over all training steps"})
    k: int = dataclasses.field(default=5, metadata={"help": "cross-validation folds (0: none)"})
    seed: int = dataclasses.field(default=15, metadata={"help": "random_state of the splits"})
    test_size: float = 0.2
    split: str = dataclasses.field(default="stratified", metadata={
        "choices": SPLIT_METHODS, "help": "stratified (original, leaks neighbouring slices), "
                                          "blocks (contiguous slice blocks) or volume"})
    block_size: int = 10
    gap: int = dataclasses.field(default=2, metadata={
        "help": "blocks: training slices within this many positions of a test slice are "
                "dropped"})
    black_threshold: float = 0.6
    black_scale: str = dataclasses.field(default="0-255",
                                         metadata={"choices": ("0-255", "fraction")})
    encoder_weights: str | None = dataclasses.field(
        default="imagenet", metadata={"help": "'imagenet', a weights file, or none"})
    fine_tune_at: str | None = FINE_TUNE_AT
    hidden_units: int = 128
    augment: bool = dataclasses.field(default=False, metadata={
        "help": "view-preserving augmentation in training (flips, small rotation, zoom, "
                "shift); the original defined none"})
    augment_stretch: float = dataclasses.field(default=0.0, metadata={
        "help": "with --augment: anisotropic scaling, independent height and width zoom up to "
                "this fraction (0: off)"})
    augment_zoom_out: float = dataclasses.field(default=0.0, metadata={
        "help": "with --augment: a further zoom out by up to this fraction (smaller "
                "sections, like the ends of a stack; 0: off)"})
    augment_contrast: float = dataclasses.field(default=0.0, metadata={
        "help": "with --augment: random contrast factor up to this fraction (0: off)"})
    augment_brightness: float = dataclasses.field(default=0.0, metadata={
        "help": "with --augment: random brightness offset up to this fraction of 0..255 "
                "(0: off)"})
    augment_independent: bool = dataclasses.field(default=False, metadata={
        "help": "with --augment: one seed per augmentation layer (default: one shared seed, "
                "so the rotation angle and the zoom factor are the same random draw)"})
    ema_momentum: float = dataclasses.field(default=0.0, metadata={
        "help": "keep an exponential moving average of the weights with this momentum and "
                "use it after training (0: off)"})
    tta: bool = dataclasses.field(default=False, metadata={
        "help": "test-time augmentation: average the test predictions over the left-right "
                "and up-down flips"})
    calibrate_bn: bool = True
    calibration_every: int = dataclasses.field(default=4, metadata={
        "help": "without ImageNet weights: recompute the backbone's BatchNorm statistics "
                "every this many training batches (0: once, before training)"})
    cache: bool = dataclasses.field(default=False, metadata={
        "help": "cache decoded images in memory (default: stream from disk every epoch)"})
    gradcam_per_class: int = 2
    max_misclassified: int = 24
    progress: str = dataclasses.field(default="none",
                                      metadata={"choices": ("keras", "tqdm", "none")})

    def __post_init__(self):
        for name in ("image_size", "batch_size", "epochs", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not isinstance(self.k, int) or self.k < 0 or self.k == 1:
            raise ValueError(f"k must be 0 (no cross-validation) or an int >= 2; got {self.k!r}")
        check_positive(self.learning_rate, name="learning_rate")
        check_choice(self.split, SPLIT_METHODS, name="split")
        check_choice(self.lr_schedule, ("constant", "cosine"), name="lr_schedule")
        check_choice(self.black_scale, ("0-255", "fraction"), name="black_scale")
        check_choice(self.progress, ("keras", "tqdm", "none"), name="progress")
        for name in ("augment_stretch", "augment_zoom_out", "augment_contrast",
                     "augment_brightness"):
            check_positive(getattr(self, name), name=name, allow_zero=True)
        if not isinstance(self.ema_momentum, (int, float)) or isinstance(self.ema_momentum, bool) \
                or not 0 <= self.ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1); got {self.ema_momentum!r}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1); got {self.test_size!r}")
        for name in ("gap", "gradcam_per_class", "max_misclassified", "seed",
                     "calibration_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative int; got "
                                 f"{getattr(self, name)!r}")

    @property
    def input_shape(self):
        return (self.image_size, self.image_size, 3)

    @property
    def fine_tune_point(self):
        """``fine_tune_at`` as a layer name, an int index or None."""
        f = self.fine_tune_at
        return int(f) if isinstance(f, str) and f.lstrip("-").isdigit() else f


@dataclasses.dataclass
class ExperimentResult:
    """What :func:`run_kfold` / :func:`run_cross_dataset` return.

    ``folds`` (one dict per fold, empty without cross-validation), ``test`` (accuracy,
    f1_weighted, auc_ovr, n), ``paths`` (name -> written file), ``model`` (the final model)
    and ``sizes`` (items per side).
    """

    folds: list
    test: dict
    paths: dict
    model: object
    sizes: dict


def _default_builder(config):
    return build_brainview_model(config.input_shape, len(VIEWS),
                                 encoder_weights=config.encoder_weights,
                                 fine_tune_at=config.fine_tune_point,
                                 hidden_units=config.hidden_units,
                                 augmentation=view_augmentation(
                                     seed=config.seed, stretch=config.augment_stretch,
                                     zoom_out=config.augment_zoom_out,
                                     contrast=config.augment_contrast,
                                     brightness=config.augment_brightness,
                                     independent=config.augment_independent)
                                 if config.augment else None)


def _calibration_images(data, config, n=64):
    ds = make_dataset(data, image_size=(config.image_size,) * 2, batch_size=None,
                      shuffle=True, seed=config.seed)
    return np.stack([np.asarray(x) for x, _ in ds.take(min(n, len(data)))])


def train_model(train, *, config, run_dir=None, val=None, build_model=None, stage="train",
                extra=None):
    """Build a fresh model and train it on ``train`` (``val`` for validation curves).

    Parameters
    ----------
    train, val : ViewSlices
    config : BrainviewConfig
    run_dir : path-like, optional
        Runner folder (``log.csv``, ``best.keras``, stage weights for resume).
    build_model : callable, optional
        ``build_model(config) -> keras.Model`` (uncompiled, logits); default
        :func:`~keras_medseg.brainview.model.build_brainview_model` from the config.
    stage : str
    extra : ViewSlices, optional
        Extra training images: those at a (stack, position) of ``train``
        (:func:`~keras_medseg.brainview.data.matching_slices`) are added to the training
        set, the rest are not used.

    Returns
    -------
    model : keras.Model
    history : dict
    """
    if len(train) == 0:
        raise ValueError("train is empty")
    if extra is not None and len(extra):
        train = ViewSlices.concat(train, matching_slices(extra, train))
    runner = Runner(run_dir, seed=config.seed, tensorboard=False, progress=config.progress)
    model = runner.build(build_model or _default_builder, config)
    callbacks, calibration = [], None
    if config.encoder_weights is None and config.calibrate_bn:
        images = _calibration_images(train, config)
        if config.calibration_every:
            # the trainable part of a random backbone moves away from the statistics it was
            # calibrated with: recompute them as training goes (and before validation)
            calibration = BatchNormCalibration(model, images, every=config.calibration_every)
            calibration.calibrate()
            callbacks.append(calibration)
        else:
            calibrate_batchnorm(model, images)
    decay_steps = None
    if config.lr_schedule == "cosine":
        decay_steps = config.epochs * -(-len(train) // config.batch_size)
    compile_brainview_model(model, learning_rate=config.learning_rate, runner=runner,
                            decay_steps=decay_steps,
                            ema_momentum=config.ema_momentum or None)
    size = (config.image_size,) * 2
    train_ds = make_dataset(train, image_size=size, batch_size=config.batch_size, shuffle=True,
                            seed=config.seed, cache=config.cache)
    val_ds = None if val is None or len(val) == 0 else make_dataset(
        val, image_size=size, batch_size=config.batch_size, cache=config.cache)
    history = runner.fit(model, train_ds, val_ds, epochs=config.epochs, stage=stage,
                         callbacks=callbacks, verbose=2 if config.progress == "keras" else 0)
    if calibration is not None:
        calibration.calibrate()
    return model, history


def _scores(report):
    return {"accuracy": float(report.accuracy), "f1_weighted": float(report.weighted.f1),
            "auc_ovr": float(report.auc_macro_mean), "n": int(report.n)}


def plot_confusion_matrix(path, matrix, *, class_names=VIEWS, title=None):
    """Confusion matrix (rows true, columns predicted) as an annotated image; return path."""
    matrix = np.asarray(matrix)
    fig = new_figure(figsize=(4.6, 4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(int(v)), ha="center", va="center",
                color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix", fontsize=9)
    return save_figure(fig, path)


def _scorer(model, config):
    """The model whose scores are reported: ``model``, or its flip average with ``tta``."""
    return flip_tta_model(model) if config.tta else model


def evaluate_model(model, data, out_dir, *, config, prefix="test", gradcam=True,
                   misclassified=True):
    """Evaluate ``model`` on ``data`` and write the report files into ``out_dir``.

    Writes ``<prefix>_CM.txt``, ``_F1.txt``, ``_AUC.txt``, ``_roc.png`` (shared reports),
    ``<prefix>_confusion_matrix.png``, ``misclassified/`` (up to ``max_misclassified``
    wrongly classified images, true and predicted view drawn on them) and ``gradcam/``
    (``gradcam_per_class`` test images per view, Grad-CAM of the predicted class on
    ``top_activation``). With ``config.tta`` the scores (and the misclassified images) are
    those of :func:`~keras_medseg.brainview.model.flip_tta_model`; Grad-CAM shows ``model``.

    Returns
    -------
    scores : dict
        ``accuracy``, ``f1_weighted``, ``auc_ovr`` (mean of the one-vs-rest AUCs), ``n``.
    paths : dict
    """
    out_dir = Path(out_dir)
    size = (config.image_size,) * 2
    ds = make_dataset(data, image_size=size, batch_size=config.batch_size)
    result = evaluate_classifier(_scorer(model, config), ds, class_names=list(VIEWS),
                                 out_dir=out_dir, prefix=prefix)
    paths = {k: str(v) for k, v in result.paths.items()}
    paths["confusion_matrix"] = str(plot_confusion_matrix(
        out_dir / f"{prefix}_confusion_matrix.png", result.report.counts.matrix,
        title=f"{prefix}: accuracy {result.accuracy:.3f}"))
    wrong = np.flatnonzero(result.y_pred != result.y_true)
    if misclassified and len(wrong):
        from keras_medseg.io.images import read_image

        for i in wrong[:config.max_misclassified]:
            save_prediction_sample(out_dir / "misclassified", read_image(data.paths[i],
                                                                        size=size),
                                   true_label=result.y_true[i], pred_label=result.y_pred[i],
                                   model_name=prefix, run="_", index=int(i),
                                   class_names=VIEWS)
        paths["misclassified"] = str(out_dir / "misclassified")
    if gradcam and config.gradcam_per_class:
        from keras_medseg.io.images import read_image

        picks = [i for c in range(len(VIEWS))
                 for i in np.flatnonzero(data.labels == c)[:config.gradcam_per_class]]
        if picks:
            images = np.stack([read_image(data.paths[i], size=size) for i in picks])
            heat, cls, _ = grad_cam(model, images)
            for i, img, h, c in zip(picks, images, heat, cls):
                save_gradcam_figure(
                    out_dir / "gradcam" / f"{prefix}_{i:05d}_{VIEWS[data.labels[i]]}.png",
                    img, h, title=f"true {VIEWS[data.labels[i]]}, predicted {VIEWS[c]}")
            paths["gradcam"] = str(out_dir / "gradcam")
    return _scores(result.report), paths


def _fold_table(rows):
    keys = ("accuracy", "f1_weighted", "auc_ovr")
    table = [dict(r) for r in rows]
    for label, fn in (("mean", np.nanmean), ("std", np.nanstd)):
        table.append({"fold": label, "n": "",
                      **{k: float(fn([r[k] for r in rows])) for k in keys}})
    return table


def cross_validate(train, out_dir, *, config, build_model=None, groups=None, extra=None):
    """Stratified k-fold cross-validation on ``train``, a fresh model per fold.

    The original's ``StratifiedKFold(k, shuffle=True, random_state=seed)``; with ``groups``
    (e.g. :func:`~keras_medseg.brainview.data.block_groups`) whole groups stay in one fold.
    ``extra`` training images are added to each fold's training side only (see
    :func:`train_model`).
    Writes ``folds.csv`` and ``folds.md`` (per fold accuracy, weighted F1, AUC, then mean and
    std) and each fold's runner folder ``fold<i>/`` with its curves ``fold<i>/curves.png``.

    Returns
    -------
    list of dict
        One row per fold.
    """
    out_dir = Path(out_dir)
    splits = kfold(len(train), config.k, seed=config.seed, stratify=train.labels,
                   groups=groups)
    rows = []
    for i, split in enumerate(splits):
        fold_train, fold_val = train.subset(split.train), train.subset(split.val)
        model, history = train_model(fold_train, config=config, run_dir=out_dir / f"fold{i}",
                                     val=fold_val, build_model=build_model, extra=extra)
        plot_accuracy_loss(out_dir / f"fold{i}" / "curves.png", history,
                           title=f"fold {i}: accuracy")
        ds = make_dataset(fold_val, image_size=(config.image_size,) * 2,
                          batch_size=config.batch_size)
        y_true, y_score = predict_scores(_scorer(model, config), ds)
        report = classification_report(y_true, y_score, class_names=list(VIEWS))
        rows.append({"fold": i, **_scores(report)})
    table = _fold_table(rows)
    write_csv(out_dir / "folds.csv", table)
    write_text(out_dir / "folds.md", markdown_table(table))
    return rows


def _finish(out_dir, config, train, test, model, history, folds, extra_paths, name,
            n_extra=None):
    out_dir = Path(out_dir)
    paths = dict(extra_paths)
    paths["curves"] = str(plot_accuracy_loss(out_dir / "curves.png", history,
                                             title=f"{name}: training accuracy"))
    scores, eval_paths = evaluate_model(model, test, out_dir, config=config, prefix="test")
    paths.update(eval_paths)
    sizes = {"train": len(train), "test": len(test)}
    if n_extra is not None:
        sizes["train_extra"] = int(n_extra)
    summary = {"test": scores, "sizes": sizes,
               "folds": folds,
               "fold_mean": {k: float(np.mean([f[k] for f in folds])) for k in
                             ("accuracy", "f1_weighted", "auc_ovr")} if folds else {}}
    paths["results"] = str(write_json(out_dir / "results.json", summary))
    return ExperimentResult(folds=folds, test=scores, paths=paths, model=model, sizes=sizes)


def _save_run_files(out_dir, config, split_items):
    runner = Runner(out_dir, tensorboard=False)
    runner.save_config(brainview=config)
    runner.save_splits(split_items)


def run_kfold(data, out_dir, *, config, build_model=None, test_data=None, train_extra=None,
              mirror=None):
    """The whole k-fold experiment on ``data`` (see the module docstring).

    Parameters
    ----------
    data : ViewSlices
        One or several datasets (concatenated).
    out_dir : path-like
    config : BrainviewConfig
    build_model : callable, optional
        ``build_model(config) -> keras.Model`` (a fresh model per call).
    test_data : ViewSlices, optional
        An explicit test set (then ``data`` is all training data and is not split).
    train_extra : ViewSlices, optional
        Training-only images keyed to items of ``data`` by stack and position (e.g.
        :func:`~keras_medseg.brainview.data.icbm152_map_views`): those of the training
        side's items (after the near-black filter, the split and its guard; per fold in
        cross-validation) are added to the training set; none is ever tested on. Listed in
        ``splits/train_extra.txt``.
    mirror : mapping, optional
        Passed to :func:`~keras_medseg.brainview.data.split_train_test` (symmetric volumes:
        also guard against the mirror images of test slices).

    Returns
    -------
    ExperimentResult
    """
    out_dir = Path(out_dir)
    size = (config.image_size,) * 2
    kept, keep = drop_near_black(data, threshold=config.black_threshold,
                                 scale=config.black_scale, size=size)
    if test_data is None:
        split = split_train_test(kept, method=config.split, test_size=config.test_size,
                                 random_state=config.seed, block_size=config.block_size,
                                 gap=config.gap, mirror=mirror)
        train, test = kept.subset(split.train), kept.subset(split.test)
    else:
        train = kept
        test, _ = drop_near_black(test_data, threshold=config.black_threshold,
                                  scale=config.black_scale, size=size)
    if len(test) == 0 or len(train) == 0:
        raise ValueError(f"after the near-black filter the split has {len(train)} training and "
                         f"{len(test)} test images; lower black_threshold or add data")
    used_extra = matching_slices(train_extra, train) if train_extra is not None else None
    split_items = {"train": train.paths, "test": test.paths,
                   "near_black": [p for p, k in zip(data.paths, keep) if not k]}
    if used_extra is not None:
        split_items["train_extra"] = used_extra.paths
    _save_run_files(out_dir, config, split_items)
    folds, paths = [], {}
    if config.k:
        groups = block_groups(train, config.block_size) if config.split == "blocks" else None
        if config.split == "volume":
            groups = train.datasets if len(set(train.datasets)) >= config.k else None
        folds = cross_validate(train, out_dir / "cv", config=config, build_model=build_model,
                               groups=groups, extra=used_extra)
        paths["folds"] = str(out_dir / "cv" / "folds.md")
    model, history = train_model(train, config=config, run_dir=out_dir / "final",
                                 build_model=build_model, extra=used_extra)
    return _finish(out_dir, config, train, test, model, history, folds, paths, "final model",
                   n_extra=None if used_extra is None else len(used_extra))


def run_cross_dataset(train_data, test_data, out_dir, *, config, build_model=None):
    """Train on ``train_data`` (all of it, no cross-validation) and test on ``test_data``.

    The original's cross-dataset experiment (train on one atlas, test on another); writes the
    same test reports as :func:`run_kfold`.

    Returns
    -------
    ExperimentResult
    """
    cfg = dataclasses.replace(config, k=0)
    return run_kfold(train_data, out_dir, config=cfg, build_model=build_model,
                     test_data=test_data)


def fold_summary(folds):
    """``(mean, std)`` of each score over folds: ``{"accuracy": (m, s), ...}``."""
    return {k: (float(np.mean([f[k] for f in folds])), float(np.std([f[k] for f in folds])))
            for k in ("accuracy", "f1_weighted", "auc_ovr")} if folds else {}
