"""Nerve segmentation: configs with the originals' defaults, data, training and evaluation.

One entry point trains the three networks of :mod:`keras_medseg.nerve.segmentation_models`
with the shared :class:`keras_medseg.training.Runner` (``config.json``, ``splits/``,
``log.csv``, ``best.keras``, resume, TensorBoard) and each original's recipe:

==================  ===============================  =========  =====  ======  ==========
model               loss                             optimiser  batch  epochs  input
==================  ===============================  =========  =====  ======  ==========
unet_mobilenetv2    sparse CE from logits            Adam 1e-3  1      13      224, 0..255
doubleunet          BCE + (1 - Dice) against [y, y]  Adam 1e-4  3      20      224, median
deeplabv3plus       sparse CE from logits            SGD 0.9,   5      (steps  512, 0..255
                                                     poly 1e-4         60000)
==================  ===============================  =========  =====  ======  ==========

DoubleU-Net also gets ReduceLROnPlateau(val_loss, 0.1, patience 20) and EarlyStopping(50);
its metrics are Dice, IoU, recall and precision and its prediction is channel -1 (network 2)
thresholded at 0.5. The softmax models predict ``argmax == foreground`` (class 1, nerve).

Data: a Supervisely export (``img/`` + ``masks_machine/``) or the TFRecords
(``trainval.tfrecords`` / ``test.tfrecords``) of :mod:`keras_medseg.io.tfrecord`. The split
is FIXED by ``ImageSets/{train,val,test}.txt`` files (read from the data folder or from
``imagesets``; written into the run folder, seeded, when there are none): the same files every
epoch and at evaluation (the original re-drew its split every epoch). Masks are resized with
nearest neighbour and the random flip runs after the cache, so it differs between epochs.

Evaluation per image: IoU and Dice, plain (both masks empty: NaN, skipped and counted) and
the original's smoothed form (``smooth = 1e-15``), summarised as mean, SEM and 95% CI
(t distribution) into ``TrainValResult.txt`` (train and val) and ``evaluation.txt`` (test);
plots ``loss.png``, ``accuracy.png``, ``IOU.png``; prediction panels image | truth |
prediction.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.utils import new_figure, save_figure, write_csv, write_text

__all__ = [
    "MODELS",
    "SMOOTH",
    "SegDataConfig",
    "SegModelConfig",
    "SegTrainConfig",
    "SegmentationScores",
    "SegmentationRun",
    "PredictionSampleCallback",
    "build_segmenter",
    "compile_arguments",
    "default_configs",
    "evaluate_segmenter",
    "load_split_names",
    "make_datasets",
    "model_input",
    "plot_segmentation_history",
    "predict_foreground",
    "save_prediction_panels",
    "score_masks",
    "set_batchnorm_momentum",
    "train_segmenter",
    "write_evaluation",
]

MODELS = ("unet_mobilenetv2", "doubleunet", "deeplabv3plus")
SMOOTH = 1e-15  # the nerve original's smoothing of the evaluation IoU / Dice
SOURCES = ("supervisely", "tfrecord")


# ----------------------------------------------------------------------------- configs
@dataclasses.dataclass
class SegDataConfig:
    """Where the segmentation data is and how it is split, resized and batched."""

    data_dir: str = dataclasses.field(
        default="", metadata={"help": "Supervisely export, or folder of trainval/test.tfrecords"})
    source: str = dataclasses.field(default="supervisely",
                                    metadata={"choices": SOURCES, "help": "data format"})
    imagesets: str = dataclasses.field(
        default="", metadata={"help": "folder holding ImageSets/{train,val,test}.txt "
                                      "(default: data_dir if it has them, else a new seeded "
                                      "split written into the run folder)"})
    image_size: tuple[int, ...] = (224, 224)
    batch_size: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 1337
    augment: bool = True
    cache: bool = True

    def __post_init__(self):
        check_choice(self.source, SOURCES, name="source")
        check_positive(self.batch_size, name="batch_size")
        if len(tuple(self.image_size)) != 2:
            raise ValueError(f"image_size must be (height, width); got {self.image_size!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)!r}")


@dataclasses.dataclass
class SegModelConfig:
    """Which network (defaults: the UNet-MobileNetV2 of the nerve original)."""

    model: str = dataclasses.field(default="unet_mobilenetv2", metadata={"choices": MODELS})
    num_classes: int = 2
    encoder_weights: str | None = dataclasses.field(
        default="imagenet", metadata={"help": "'imagenet', a weights file, or none"})
    freeze_encoder: bool = True
    dropout: float = 0.2
    encoder: str = "mobilenetv2"
    backbone: str = "xception"
    output_stride: int = 16
    bn_momentum: float | None = dataclasses.field(
        default=None, metadata={"help": "BatchNorm momentum of every layer (e.g. 0.9 when "
                                        "training from scratch; none keeps the builders')"})

    def __post_init__(self):
        check_choice(self.model, MODELS, name="model")
        check_positive(self.num_classes, name="num_classes")
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be None or in [0, 1); got {self.bn_momentum!r}")


@dataclasses.dataclass
class SegTrainConfig:
    """How to train (defaults: the UNet original; see :func:`default_configs`)."""

    run_dir: str = "runs/nerve/segmentation"
    epochs: int = 13
    steps: int | None = dataclasses.field(
        default=None, metadata={"help": "train for this many batches instead (DeepLab)"})
    learning_rate: float = 1e-3
    optimizer: str = dataclasses.field(default="adam", metadata={"choices": ("adam", "sgd")})
    momentum: float = 0.9
    poly_power: float | None = dataclasses.field(
        default=None, metadata={"help": "polynomial learning-rate decay power (DeepLab 0.9)"})
    reduce_lr_patience: int | None = None
    reduce_lr_factor: float = 0.1
    early_stopping_patience: int | None = None
    sample_every_epoch: bool = True
    panels: int = 4
    strategy: str = dataclasses.field(default="default",
                                      metadata={"choices": ("default", "mirrored", "multiworker")})
    seed: int = 1337
    monitor: str = "val_loss"
    tensorboard: bool = True
    progress: str = dataclasses.field(default="keras",
                                      metadata={"choices": ("keras", "tqdm", "none")})
    resume: bool = True

    def __post_init__(self):
        check_positive(self.epochs, name="epochs", allow_zero=True)
        check_positive(self.learning_rate, name="learning_rate")
        check_choice(self.optimizer, ("adam", "sgd"), name="optimizer")
        if self.steps is not None:
            check_positive(self.steps, name="steps")


def default_configs(model="unet_mobilenetv2"):
    """The original's data, model and training settings for ``model``.

    Returns
    -------
    (SegDataConfig, SegModelConfig, SegTrainConfig)

    Raises
    ------
    ValueError
        For an unknown model name.
    """
    check_choice(model, MODELS, name="model")
    if model == "unet_mobilenetv2":
        return (SegDataConfig(), SegModelConfig(),
                SegTrainConfig(run_dir="runs/nerve/unet_mobilenetv2"))
    if model == "doubleunet":
        return (SegDataConfig(batch_size=3),
                SegModelConfig(model="doubleunet", num_classes=1, freeze_encoder=False,
                               dropout=0.0, encoder="vgg19"),
                SegTrainConfig(run_dir="runs/nerve/doubleunet", epochs=20, learning_rate=1e-4,
                               reduce_lr_patience=20, reduce_lr_factor=0.1,
                               early_stopping_patience=50))
    return (SegDataConfig(image_size=(512, 512), batch_size=5),
            SegModelConfig(model="deeplabv3plus", num_classes=3, freeze_encoder=False,
                           dropout=0.1, backbone="xception", output_stride=16),
            SegTrainConfig(run_dir="runs/nerve/deeplabv3plus", epochs=1, steps=60000,
                           learning_rate=1e-4, optimizer="sgd", momentum=0.9, poly_power=0.9))


# ------------------------------------------------------------------------------ models
def set_batchnorm_momentum(model, momentum):
    """Set ``momentum`` on every BatchNormalization layer of ``model`` (nested models too).

    keras.applications builds its backbones with momentum 0.999, made for long ImageNet
    runs; a short run from scratch needs a smaller value for the moving statistics to catch
    up. Call it before compiling. Returns the number of layers changed.
    """
    import keras

    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            n += 1
    return n


def build_segmenter(model_config, image_size=(224, 224)):
    """Build the network named by ``model_config.model`` for ``image_size`` inputs."""
    from keras_medseg.nerve import segmentation_models as sm

    mc = model_config
    shape = (int(image_size[0]), int(image_size[1]), 3)
    if mc.model == "unet_mobilenetv2":
        model = sm.build_unet_mobilenetv2(shape, mc.num_classes,
                                          encoder_weights=mc.encoder_weights,
                                          freeze_encoder=mc.freeze_encoder, dropout=mc.dropout,
                                          encoder=mc.encoder)
    elif mc.model == "doubleunet":
        model = sm.build_doubleunet(shape, encoder_weights=mc.encoder_weights)
    else:
        model = sm.build_deeplabv3plus(shape, mc.num_classes, backbone=mc.backbone,
                                       output_stride=mc.output_stride,
                                       encoder_weights=mc.encoder_weights, dropout=mc.dropout)
        if mc.freeze_encoder:
            model.get_layer("backbone").trainable = False
    if mc.bn_momentum is not None:
        set_batchnorm_momentum(model, mc.bn_momentum)
    return model


def compile_arguments(model_config, train_config, *, steps_per_epoch=None):
    """``optimizer``, ``loss`` and ``metrics`` for :meth:`Runner.compile`.

    The optimizer is a zero-argument factory (created inside the strategy scope).
    """
    import keras

    from keras_medseg.metrics import keras as mk

    tc = train_config
    lr = tc.learning_rate
    if tc.poly_power is not None:
        total = tc.steps or max(1, tc.epochs * (steps_per_epoch or 1))
        lr = keras.optimizers.schedules.PolynomialDecay(tc.learning_rate, total,
                                                        end_learning_rate=0.0,
                                                        power=tc.poly_power)

    def optimizer():
        if tc.optimizer == "sgd":
            return keras.optimizers.SGD(lr, momentum=tc.momentum)
        return keras.optimizers.Adam(lr)

    if model_config.model == "doubleunet":
        return dict(optimizer=optimizer, loss=mk.bce_dice_loss,
                    metrics=[mk.DiceCoefficient(name="dice"), mk.IoU(name="iou"),
                             keras.metrics.Recall(name="recall"),
                             keras.metrics.Precision(name="precision"),
                             keras.metrics.BinaryAccuracy(name="accuracy")])
    n = max(2, model_config.num_classes)
    return dict(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy",
                         keras.metrics.IoU(n, target_class_ids=[1], sparse_y_pred=False,
                                           name="iou")])


def model_input(images, kind):
    """The model input for 0..255 ``images``: DoubleU-Net's median normalisation, else as is."""
    if kind == "doubleunet":
        from keras_medseg.nerve.segmentation_models import doubleunet_preprocess

        return doubleunet_preprocess(images)
    return images


def predict_foreground(model, images, *, kind, foreground=1, threshold=0.5, batch_size=8):
    """Boolean foreground masks ``(n, h, w)`` predicted for 0..255 ``images`` ``(n, h, w, 3)``.

    Softmax models: ``argmax == foreground``; DoubleU-Net: channel -1 (network 2) >= 0.5.
    """
    images = np.asarray(images, dtype=np.float32)
    out = []
    for start in range(0, len(images), batch_size):
        x = model_input(images[start:start + batch_size], kind)
        y = np.asarray(model(x, training=False))
        if kind == "doubleunet":
            out.append(y[..., -1] >= threshold)
        else:
            out.append(np.argmax(y, axis=-1) == foreground)
    return np.concatenate(out, axis=0)


# --------------------------------------------------------------------------------- data
def _stem(path):
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def load_split_names(data_config, names, *, run_dir=None):
    """The fixed ``train`` / ``val`` / ``test`` name lists.

    Read from ``ImageSets`` in ``data_config.imagesets`` or ``data_config.data_dir`` when
    present; otherwise a seeded split (``val_fraction``, ``test_fraction``, ``seed``) is
    written to ``run_dir/ImageSets`` (never into the data folder) and returned.

    Raises
    ------
    ValueError
        If a listed name is not in ``names``, or the lists overlap.
    FileNotFoundError
        If there are no ImageSets and no ``run_dir`` to write them to.
    """
    from keras_medseg.io.splits import make_imagesets, read_imageset

    dc = data_config
    folder = None
    for cand in (dc.imagesets, dc.data_dir):
        if cand and (Path(cand) / "ImageSets" / "train.txt").is_file():
            folder = Path(cand)
            break
        if cand and Path(cand).name == "ImageSets" and (Path(cand) / "train.txt").is_file():
            folder = Path(cand).parent
            break
    if folder is None:
        if run_dir is None:
            raise FileNotFoundError(f"no ImageSets/train.txt in {dc.imagesets or dc.data_dir!r} "
                                    f"and no run_dir to write a new split to")
        make_imagesets(list(names), run_dir, val_fraction=dc.val_fraction,
                       test_fraction=dc.test_fraction, seed=dc.seed)
        folder = Path(run_dir)
    known = set(names)
    splits = {}
    for split in ("train", "val", "test"):
        path = folder / "ImageSets" / f"{split}.txt"
        listed = read_imageset(folder, split) if path.is_file() else []
        unknown = [n for n in listed if n not in known]
        if unknown:
            raise ValueError(f"{str(path)!r} lists {len(unknown)} names that are not in the "
                             f"data (first: {unknown[0]!r})")
        splits[split] = listed
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = set(splits[a]) & set(splits[b])
        if both:
            raise ValueError(f"ImageSets {a} and {b} overlap ({len(both)} names, e.g. "
                             f"{sorted(both)[0]!r})")
    return splits


def _to_model_batch(kind, num_outputs_doubleunet=2):
    import tensorflow as tf

    def fn(image, mask):
        if kind == "doubleunet":
            y = tf.cast(mask > 0, tf.float32)
            return model_input(image, kind), tf.concat([y] * num_outputs_doubleunet, axis=-1)
        return image, mask

    return fn


def make_datasets(data_config, model_config, *, run_dir=None):
    """Fixed-split ``tf.data`` pipelines of raw (0..255 image, uint8 mask) pairs.

    Returns
    -------
    datasets : dict
        ``"train"``, ``"val"``, ``"test"`` -> unbatched datasets of ``(image float32
        (h, w, 3) 0..255, mask uint8 (h, w, 1))``; only the train split is shuffled and
        flipped (after the cache, so differently every epoch). Use :func:`_to_model_batch`
        (done by :func:`train_segmenter`) to get the model's inputs and targets.
    splits : dict
        Split name -> list of names.
    """
    import tensorflow as tf

    from keras_medseg.io.images import random_flip_left_right, read_supervisely, segmentation_dataset

    dc = data_config
    size = tuple(int(s) for s in dc.image_size)
    if not dc.data_dir:
        raise ValueError("data_dir must name the Supervisely export or the TFRecord folder")
    datasets = {}
    if dc.source == "supervisely":
        images, masks = read_supervisely(dc.data_dir)
        by_name = {_stem(i): (i, m) for i, m in zip(images, masks)}
        splits = load_split_names(dc, list(by_name), run_dir=run_dir)
        for split, names in splits.items():
            if not names:
                continue
            train = split == "train"
            datasets[split] = segmentation_dataset(
                [by_name[n][0] for n in names], [by_name[n][1] for n in names],
                image_size=size, batch_size=None, shuffle=train, seed=dc.seed,
                cache=dc.cache, augment=random_flip_left_right if (train and dc.augment) else None,
                mask_mode="binary" if model_config.model == "doubleunet" else "index",
                prefetch=False)
        return datasets, splits

    from keras_medseg.io.tfrecord import read_tfrecords

    root = Path(dc.data_dir)
    files = {"trainval": root / "trainval.tfrecords", "test": root / "test.tfrecords"}

    def names_of(path):
        return [_stem(n.decode()) for n in
                read_tfrecords(path).map(lambda i, m, n: n).as_numpy_iterator()]

    all_names = names_of(files["trainval"]) + (names_of(files["test"]) if files["test"].exists()
                                                else [])
    splits = load_split_names(dc, all_names, run_dir=run_dir)
    for split, names in splits.items():
        if not names:
            continue
        src = files["test"] if split == "test" and files["test"].exists() else files["trainval"]
        if split == "test" and not files["test"].exists():
            src = files["trainval"]
        wanted = tf.constant(names)
        ds = read_tfrecords(src)

        def keep(image, mask, name, wanted=wanted):
            stem = tf.strings.regex_replace(name, r"\.[^.]*$", "")
            return tf.reduce_any(tf.equal(stem, wanted))

        def resize(image, mask, name):
            image = tf.image.resize(image, size, method="bilinear")
            mask = tf.cast(tf.image.resize(mask, size, method="nearest"), tf.uint8)
            if model_config.model == "doubleunet":
                mask = tf.cast(mask > 0, tf.uint8)
            return image, mask

        ds = ds.filter(keep).map(resize, num_parallel_calls=tf.data.AUTOTUNE)
        if dc.cache:
            ds = ds.cache()
        if split == "train":
            ds = ds.shuffle(len(names), seed=dc.seed, reshuffle_each_iteration=True)
            if dc.augment:
                seeds = tf.data.Dataset.random(seed=dc.seed,
                                               rerandomize_each_iteration=True).batch(2)
                ds = tf.data.Dataset.zip((ds, seeds)).map(
                    lambda el, s: random_flip_left_right(el[0], el[1], s),
                    num_parallel_calls=tf.data.AUTOTUNE)
        datasets[split] = ds
    return datasets, splits


# --------------------------------------------------------------------------- evaluation
@dataclasses.dataclass
class SegmentationScores:
    """Per-image scores of one split (arrays of shape (n,), float64)."""

    names: list
    iou: np.ndarray
    dice: np.ndarray
    iou_smooth: np.ndarray
    dice_smooth: np.ndarray

    def summaries(self):
        """``{metric: keras_medseg.metrics.Summary}`` for the four metrics."""
        from keras_medseg.metrics import summarize

        return {k: summarize(getattr(self, k)) for k in ("iou", "dice", "iou_smooth",
                                                         "dice_smooth")}


def score_masks(y_true, y_pred, names=None):
    """Per-image IoU / Dice of boolean masks ``(n, h, w)``: plain and smoothed (1e-15)."""
    from keras_medseg.metrics import compute_dice, compute_iou

    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    names = list(names) if names is not None else [str(i) for i in range(len(y_true))]
    return SegmentationScores(
        names=names,
        iou=compute_iou(y_true, y_pred)[:, 0], dice=compute_dice(y_true, y_pred)[:, 0],
        iou_smooth=compute_iou(y_true, y_pred, smooth=SMOOTH)[:, 0],
        dice_smooth=compute_dice(y_true, y_pred, smooth=SMOOTH)[:, 0])


def _iterate(data, batch_size=8):
    """(images, masks) numpy batches from a dataset (batched or not) or an (x, y) tuple."""
    if isinstance(data, tuple):
        x, y = data
        for s in range(0, len(x), batch_size):
            yield np.asarray(x[s:s + batch_size]), np.asarray(y[s:s + batch_size])
        return
    spec = data.element_spec
    if len(spec[0].shape) == 3:
        data = data.batch(batch_size)
    for x, y in data.as_numpy_iterator():
        yield x, y


def evaluate_segmenter(model, data, *, kind, foreground=1, names=None, panel_path=None,
                       panels=4, batch_size=8):
    """Predict every image of ``data`` and score it against its mask.

    Parameters
    ----------
    model : keras.Model
    data : tf.data.Dataset of (image 0..255, mask) (batched or not), or (images, masks)
    kind : {"unet_mobilenetv2", "doubleunet", "deeplabv3plus"}
    foreground : int
        Mask value (and softmax class) of the structure (1 = nerve).
    names : list of str, optional
    panel_path : path, optional
        Write image | truth | prediction panels of the first ``panels`` images there.

    Returns
    -------
    SegmentationScores
    """
    check_choice(kind, MODELS, name="kind")
    truths, preds, shown = [], [], []
    for x, y in _iterate(data, batch_size):
        p = predict_foreground(model, x, kind=kind, foreground=foreground, batch_size=batch_size)
        t = (y[..., 0] if y.ndim == 4 else y) == foreground
        truths.append(t)
        preds.append(p)
        if panel_path is not None and sum(len(s[0]) for s in shown) < panels:
            shown.append((x, t, p))
    scores = score_masks(np.concatenate(truths), np.concatenate(preds), names)
    if panel_path is not None and shown:
        xs, ts, ps = (np.concatenate([s[i] for s in shown])[:panels] for i in range(3))
        save_prediction_panels(panel_path, xs, ts, ps)
    return scores


def _summary_lines(title, scores):
    lines = [f"== {title} (n = {len(scores.names)} images) =="]
    labels = {"iou": "IoU", "dice": "Dice", "iou_smooth": f"IoU (smooth {SMOOTH:g})",
              "dice_smooth": f"Dice (smooth {SMOOTH:g})"}
    for key, s in scores.summaries().items():
        lines.append(f"{labels[key]}: mean {s.mean:.4f}, SEM {s.sem:.4f}, 95% CI "
                     f"[{s.ci95_low:.4f}, {s.ci95_high:.4f}], n {s.n}, skipped (both masks "
                     f"empty) {s.n_nan}")
    return lines


def write_evaluation(path, results, *, header=""):
    """Write named :class:`SegmentationScores` summaries to a text file; return the path."""
    lines = [header] if header else []
    for name, scores in results.items():
        lines += _summary_lines(name, scores) + [""]
    return write_text(path, "\n".join(lines))


def write_per_image(path, scores):
    rows = [dict(name=n, iou=a, dice=b, iou_smooth=c, dice_smooth=d)
            for n, a, b, c, d in zip(scores.names, scores.iou, scores.dice, scores.iou_smooth,
                                     scores.dice_smooth)]
    return write_csv(path, rows, ["name", "iou", "dice", "iou_smooth", "dice_smooth"])


# ------------------------------------------------------------------------------- figures
def save_prediction_panels(path, images, truths, preds, *, titles=("image", "ground truth",
                                                                    "prediction")):
    """One row per image: image | ground truth | prediction. Returns the path."""
    images = np.asarray(images, dtype=np.float32)
    n = len(images)
    if not (len(truths) == len(preds) == n) or n == 0:
        raise ValueError(f"images, truths and preds must hold the same non-zero number of "
                         f"items; got {n}, {len(truths)}, {len(preds)}")
    fig = new_figure(figsize=(9, 3 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        img = np.clip(images[i] / 255.0, 0, 1)
        for j, (arr, title) in enumerate(zip((img, truths[i], preds[i]), titles)):
            ax = axes[i, j]
            ax.imshow(arr, cmap=None if j == 0 else "gray", vmin=0, vmax=1)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    return save_figure(fig, path)


def plot_segmentation_history(out_dir, history):
    """Write ``loss.png``, ``accuracy.png`` and ``IOU.png`` (train and val against epoch)."""
    out_dir = Path(out_dir)
    paths = []
    for key, fname, label in (("loss", "loss.png", "Loss"), ("accuracy", "accuracy.png",
                                                             "Accuracy"),
                              ("iou", "IOU.png", "IoU")):
        if key not in history and f"val_{key}" not in history:
            continue
        epochs = [e + 1 for e in history.get("epoch", range(len(history.get(key, []))))]
        fig = new_figure(figsize=(6, 4))
        ax = fig.subplots()
        for k, name in ((key, "training"), (f"val_{key}", "validation")):
            if k in history:
                ax.plot(epochs, history[k], marker="o", markersize=3, label=f"{name} {label}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        paths.append(save_figure(fig, out_dir / fname))
    return paths


def _sample_callback_base():
    import keras

    return keras.callbacks.Callback


class PredictionSampleCallback(_sample_callback_base()):
    """Save an image | truth | prediction panel of fixed samples after every epoch.

    Files ``<out_dir>/epoch_<k:03d>.png`` (k 1-based), as the original's per-epoch sample.
    """

    def __init__(self, out_dir, images, masks, *, kind, foreground=1):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.images = np.asarray(images, dtype=np.float32)
        masks = np.asarray(masks)
        self.truths = (masks[..., 0] if masks.ndim == 4 else masks) == foreground
        self.kind, self.foreground = kind, foreground

    def on_epoch_end(self, epoch, logs=None):
        preds = predict_foreground(self.model, self.images, kind=self.kind,
                                   foreground=self.foreground)
        save_prediction_panels(self.out_dir / f"epoch_{epoch + 1:03d}.png", self.images,
                               self.truths, preds)


# ------------------------------------------------------------------------------ training
@dataclasses.dataclass
class SegmentationRun:
    """What :func:`train_segmenter` produced."""

    model: object
    history: dict
    run_dir: Path
    splits: dict
    scores: dict  # split -> SegmentationScores
    files: dict


def _batched(ds, batch_size, kind, *, drop_remainder=False):
    import tensorflow as tf

    return (ds.map(_to_model_batch(kind), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE))


def train_segmenter(data_config, model_config, train_config, *, datasets=None, splits=None,
                    log=print):
    """Train and evaluate one segmentation network with the shared runner.

    Parameters
    ----------
    data_config, model_config, train_config
        :class:`SegDataConfig`, :class:`SegModelConfig`, :class:`SegTrainConfig`.
    datasets, splits : optional
        Pre-built unbatched datasets ``{"train", "val"[, "test"]}`` of raw (image, mask)
        pairs and their name lists (default: :func:`make_datasets` from ``data_config``).
    log : callable

    Returns
    -------
    SegmentationRun
        The run folder holds ``config.json``, ``splits/``, ``ImageSets/`` (when created),
        ``log.csv``, ``best.keras``, ``final.keras``, ``loss.png``, ``accuracy.png``,
        ``IOU.png``, ``samples/epoch_<k>.png``, ``TrainValResult.txt``, ``evaluation.txt``,
        ``per_image_<split>.csv`` and ``predictions_<split>.png``.
    """
    import keras

    from keras_medseg.training import Runner

    dc, mc, tc = data_config, model_config, train_config
    run_dir = Path(tc.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(run_dir, strategy=tc.strategy, seed=tc.seed, monitor=tc.monitor,
                    tensorboard=tc.tensorboard, progress=tc.progress, resume=tc.resume)
    if datasets is None:
        datasets, splits = make_datasets(dc, mc, run_dir=run_dir)
    if "train" not in datasets:
        raise ValueError("the train split is empty")
    splits = splits or {}
    runner.save_config(data=dc, model=mc, train=tc)
    runner.save_splits({k: v for k, v in splits.items()})
    kind = mc.model
    n_train = len(splits.get("train", [])) or int(datasets["train"].cardinality())
    steps_per_epoch = max(1, math.ceil(n_train / dc.batch_size)) if n_train > 0 else None
    epochs = tc.epochs
    if tc.steps is not None and steps_per_epoch:
        epochs = max(1, math.ceil(tc.steps / steps_per_epoch))
    model = runner.build(build_segmenter, mc, dc.image_size)
    runner.compile(model, **compile_arguments(mc, tc, steps_per_epoch=steps_per_epoch))

    train_ds = _batched(datasets["train"], dc.batch_size, kind)
    val_ds = _batched(datasets["val"], dc.batch_size, kind) if "val" in datasets else None
    callbacks = []
    monitor = tc.monitor if val_ds is not None else tc.monitor.replace("val_", "")
    if tc.reduce_lr_patience is not None:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, factor=tc.reduce_lr_factor,
                                                           patience=tc.reduce_lr_patience))
    if tc.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor,
                                                       patience=tc.early_stopping_patience))
    sample_src = datasets.get("val", datasets["train"])
    if tc.sample_every_epoch and tc.panels > 0:
        xs, ys = next(iter(sample_src.batch(tc.panels).as_numpy_iterator()))
        callbacks.append(PredictionSampleCallback(run_dir / "samples", xs, ys, kind=kind))
    log(f"[segmentation] {kind}: training {epochs} epochs on {n_train} images")
    history = runner.fit(model, train_ds, val_ds, epochs=epochs, callbacks=callbacks)
    model.save(run_dir / "final.keras")
    files = {"plots": plot_segmentation_history(run_dir, history)}
    scores = {}
    for split in ("train", "val", "test"):
        if split not in datasets:
            continue
        ds = datasets[split]
        if split == "train":  # evaluate the fixed training files without augmentation
            ds = _unaugmented(dc, mc, datasets, split, splits, run_dir)
        scores[split] = evaluate_segmenter(model, ds, kind=kind, names=splits.get(split),
                                           panel_path=run_dir / f"predictions_{split}.png",
                                           panels=tc.panels)
        write_per_image(run_dir / f"per_image_{split}.csv", scores[split])
    trainval = {k: scores[k] for k in ("train", "val") if k in scores}
    if trainval:
        files["trainval"] = write_evaluation(run_dir / "TrainValResult.txt", trainval,
                                             header=f"model {kind}")
    if "test" in scores:
        files["evaluation"] = write_evaluation(run_dir / "evaluation.txt",
                                               {"test": scores["test"]}, header=f"model {kind}")
    for split, s in scores.items():
        sm = s.summaries()
        log(f"[segmentation] {split}: IoU {sm['iou'].mean:.4f}  Dice {sm['dice'].mean:.4f}")
    return SegmentationRun(model, history, run_dir, splits, scores, files)


def _unaugmented(dc, mc, datasets, split, splits, run_dir):
    """The train split without shuffling or flipping (for evaluation)."""
    if dc.data_dir and splits.get(split):
        plain = dataclasses.replace(dc, augment=False)
        if not dc.imagesets and (Path(run_dir) / "ImageSets" / "train.txt").is_file() \
                and not (Path(dc.data_dir) / "ImageSets" / "train.txt").is_file():
            plain = dataclasses.replace(plain, imagesets=str(run_dir))
        ds, _ = make_datasets(plain, mc, run_dir=run_dir)
        if split in ds:
            return ds[split]
    return datasets[split]


# ---------------------------------------------------------------------- command lines
def _parser(description):
    import argparse

    from keras_medseg.training.config import add_config_arguments

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", choices=MODELS, default="unet_mobilenetv2",
                   help="network; its original's settings are the defaults")
    return p, add_config_arguments


def train_main(argv=None):
    """``experiments/nerve/train_segmenter.py``: train and evaluate one network."""
    import sys

    from keras_medseg.training.config import config_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    pre, add = _parser("Train a nerve segmentation network (original settings as defaults).")
    known, _ = pre.parse_known_args(argv)
    data, model, train = default_configs(known.model)
    parser, _ = _parser(pre.description)
    add(parser.add_argument_group("data"), data, prefix="data")
    add(parser.add_argument_group("model"), model, prefix="model")
    add(parser.add_argument_group("train"), train, prefix="train")
    args = parser.parse_args(argv)
    data = config_from_args(SegDataConfig, args, prefix="data")
    model = config_from_args(SegModelConfig, args, prefix="model")
    model = dataclasses.replace(model, model=args.model)
    train = config_from_args(SegTrainConfig, args, prefix="train")
    run = train_segmenter(data, model, train)
    print(f"run folder: {run.run_dir.resolve()}")
    return run


def evaluate_main(argv=None):
    """``experiments/nerve/evaluate_segmenter.py``: evaluate a saved model on a run's split."""
    import argparse

    import keras

    from keras_medseg.training.config import load_config

    p = argparse.ArgumentParser(description="Evaluate a trained nerve segmentation network on "
                                            "the fixed split of its run folder.")
    p.add_argument("run_dir", help="run folder written by train_segmenter.py")
    p.add_argument("--model-file", default="final.keras", help="model file in the run folder")
    p.add_argument("--splits", nargs="*", default=["test"], choices=["train", "val", "test"])
    p.add_argument("--out", default=None, help="output folder (default: run_dir/eval)")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir, data=SegDataConfig, model=SegModelConfig)
    dc = dataclasses.replace(cfg["data"], augment=False, imagesets=str(run_dir)
                             if (run_dir / "ImageSets").is_dir() else cfg["data"].imagesets)
    mc = cfg["model"]
    model = keras.models.load_model(run_dir / args.model_file, compile=False)
    datasets, splits = make_datasets(dc, mc, run_dir=None)
    out = Path(args.out) if args.out else run_dir / "eval"
    scores = {}
    for split in args.splits:
        if split in datasets:
            scores[split] = evaluate_segmenter(model, datasets[split], kind=mc.model,
                                               names=splits[split],
                                               panel_path=out / f"predictions_{split}.png")
            write_per_image(out / f"per_image_{split}.csv", scores[split])
    path = write_evaluation(out / "evaluation.txt", scores, header=f"model {mc.model}")
    print(path.read_text())
    return scores
