"""The nerve original's training outputs, shared by every classification task.

* ``acc_loss.png`` / ``acc_loss_after_fine_tuning.png``: accuracy and loss against epoch
  (2x1 subplots), epochs numbered on across stages (:func:`plot_accuracy_loss`,
  :func:`write_history_plots`);
* ``model.txt``: depth (number of layers), trainable variables and parameter counts
  (:func:`write_model_summary`);
* sample images named ``<model><run><Correct|Wrong><true><pred><batch><index>.png`` with the
  true and predicted label drawn on them (:func:`save_prediction_sample`);
* ``<prefix>_CM.txt``, ``_F1.txt``, ``_AUC.txt``, ``_roc.png`` from the softmax of the
  model's logits (:func:`evaluate_classifier`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keras_medseg.utils import atomic_path, new_figure, save_figure, write_text

__all__ = [
    "EvaluationResult",
    "evaluate_classifier",
    "plot_accuracy_loss",
    "predict_scores",
    "save_prediction_sample",
    "write_history_plots",
    "write_model_summary",
]


def _as_history(history):
    if hasattr(history, "history") and hasattr(history, "epoch"):  # keras History
        return {"epoch": list(history.epoch), **history.history}
    if not isinstance(history, dict):
        raise ValueError(f"each history must be a dict or a keras History; got "
                         f"{type(history).__name__}")
    return history


def _join_histories(histories):
    """Concatenate histories; return (epochs 1-based, series dict, stage start epochs)."""
    epochs, series, starts = [], {}, []
    next_epoch = 0
    for h in map(_as_history, histories):
        lengths = {len(v) for k, v in h.items() if k not in ("epoch", "stage")}
        n = max(lengths) if lengths else 0
        if len(lengths) > 1:
            raise ValueError(f"history series have different lengths {sorted(lengths)}")
        ep = list(h.get("epoch", range(next_epoch, next_epoch + n)))
        if len(ep) != n and n:
            raise ValueError(f"history has {len(ep)} epochs but {n} values per metric")
        if not ep:
            continue
        starts.append(ep[0] + 1)
        for k in set(series) | {k for k in h if k not in ("epoch", "stage")}:
            series.setdefault(k, [math.nan] * len(epochs))
            series[k].extend(h.get(k, [math.nan] * len(ep)))
        epochs.extend(e + 1 for e in ep)
        next_epoch = ep[-1] + 1
    return epochs, series, starts


def plot_accuracy_loss(path, *histories, metric="accuracy", title=None):
    """Plot ``metric`` and loss (training and validation) against epoch, 2x1 subplots.

    Parameters
    ----------
    path : str or Path
        Image file (format from the suffix), written atomically.
    *histories : dict or keras.callbacks.History
        ``{"epoch": [...], "loss": [...], "val_loss": [...], metric: [...], ...}`` per stage;
        ``epoch`` (0-based) is optional: without it a stage continues the numbering of the
        one before. A vertical line marks where each later stage starts.
    metric : str
        The accuracy-like key to plot on top.
    title : str, optional

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        With no history, series of unequal length or no ``loss`` and no ``metric`` at all.
    """
    if not histories:
        raise ValueError("at least one history is needed")
    epochs, series, starts = _join_histories(histories)
    if not any(k in series for k in ("loss", metric, f"val_{metric}", "val_loss")):
        raise ValueError(f"histories hold neither 'loss' nor {metric!r}; keys: {sorted(series)}")
    fig = new_figure(figsize=(7, 9))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, label in ((axes[0], metric, metric.replace("_", " ").capitalize()),
                           (axes[1], "loss", "Loss")):
        for k, name in ((key, f"Training {label.lower()}"),
                        (f"val_{key}", f"Validation {label.lower()}")):
            if k in series:
                ax.plot(epochs, series[k], marker="o", markersize=3, label=name)
        for s in starts[1:]:
            ax.axvline(s - 0.5, color="gray", linestyle="--", label="Start fine tuning")
        ax.set_ylabel(label)
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("Epoch")
    axes[0].set_title(title or f"Training and validation {metric.replace('_', ' ')}")
    return save_figure(fig, path)


def write_history_plots(out_dir, history1, history2=None, *, metric="accuracy"):
    """Write ``acc_loss.png`` (stage 1; skipped when stage 1 ran no epoch) and, with
    ``history2``, ``acc_loss_after_fine_tuning.png`` (both stages); return the written paths."""
    out_dir = Path(out_dir)
    paths = []
    if any(len(v) for k, v in _as_history(history1).items() if k not in ("epoch", "stage")):
        paths.append(plot_accuracy_loss(out_dir / "acc_loss.png", history1, metric=metric))
    if history2 is not None:
        paths.append(plot_accuracy_loss(out_dir / "acc_loss_after_fine_tuning.png", history1,
                                        history2, metric=metric,
                                        title=f"Training and validation {metric} "
                                              "(after fine tuning)"))
    return paths


def _count(variables):
    return int(sum(int(np.prod(v.shape)) for v in variables))


def write_model_summary(path, model):
    """Write ``model.txt``: depth, trainable variables and parameter counts.

    Depth is the number of layers of the backbone when ``model`` comes from
    :func:`~keras_medseg.training.transfer.build_transfer_classifier` (what the original
    printed), and of ``model`` itself otherwise; the classifier's own layer count follows.

    Returns
    -------
    Path
    """
    from keras_medseg.training.transfer import get_backbone

    backbone = get_backbone(model)
    lines = [
        f"model: {model.name}",
        f"backbone: {backbone.name}",
        f"depth (backbone layers): {len(backbone.layers)}",
        f"model layers: {len(model.layers)}",
        f"trainable variables: {len(model.trainable_variables)}",
        f"trainable params: {_count(model.trainable_weights)}",
        f"non-trainable params: {_count(model.non_trainable_weights)}",
        f"total params: {_count(model.weights)}",
    ]
    return write_text(path, "\n".join(lines) + "\n")


def _to_uint8(image):
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be (height, width[, 1|3|4]); got shape {image.shape}")
    if image.size and np.nanmax(image) <= 1.0 and np.nanmin(image) >= 0.0:
        image = image * 255.0
    image = np.clip(np.nan_to_num(image), 0, 255).round().astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def _label_name(label, class_names):
    if class_names is not None and 0 <= int(label) < len(class_names):
        return str(class_names[int(label)])
    return str(int(label))


def save_prediction_sample(out_dir, image, *, true_label, pred_label, model_name, run="",
                           batch=0, index=0, class_names=None):
    """Save ``image`` with its true and predicted labels drawn in the top-left corner.

    The file is ``<model_name><run><Correct|Wrong><true><pred><batch><index>.png`` (true and
    predicted as class indices), as in the original.

    Parameters
    ----------
    out_dir : str or Path
    image : array (height, width[, channels])
        0..255 (or 0..1 floats, scaled up), 1, 3 or 4 channels.
    true_label, pred_label : int
    model_name : str
    run : str or int
    batch, index : int
        Batch number and index within the batch.
    class_names : sequence of str, optional
        Names drawn on the image (indices when None).

    Returns
    -------
    Path
    """
    from PIL import Image, ImageDraw

    true_label, pred_label = int(true_label), int(pred_label)
    verdict = "Correct" if true_label == pred_label else "Wrong"
    name = f"{model_name}{run}{verdict}{true_label}{pred_label}{int(batch)}{int(index)}.png"
    if "/" in name or "\\" in name:
        raise ValueError(f"model_name and run must not contain path separators; got {name!r}")
    pil = Image.fromarray(_to_uint8(image))
    draw = ImageDraw.Draw(pil)
    text = (f"true: {_label_name(true_label, class_names)}\n"
            f"pred: {_label_name(pred_label, class_names)}")
    box = draw.multiline_textbbox((2, 2), text)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.multiline_text((2, 2), text, fill=(0, 255, 0) if verdict == "Correct" else (255, 0, 0))
    path = Path(out_dir) / name
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return path


def _softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict_scores(model, dataset, *, from_logits=True, on_batch=None):
    """Run ``model`` (inference mode) over ``dataset``; return ``y_true`` and ``y_score``.

    Parameters
    ----------
    model : keras.Model
        Classifier returning (batch, classes) logits (or probabilities with
        ``from_logits=False``).
    dataset : iterable of (images, labels) batches
        E.g. a batched ``tf.data.Dataset``; labels are class indices (or one-hot).
    from_logits : bool
        Apply one softmax to the outputs.
    on_batch : callable, optional
        ``on_batch(batch_number, images, labels, scores)`` after each batch (numpy arrays).

    Returns
    -------
    y_true : int64 array (n,)
    y_score : float64 array (n, classes), rows summing to 1 when ``from_logits``.
    """
    ys, scores = [], []
    for b, batch in enumerate(dataset):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("dataset must yield (images, labels) batches")
        images, labels = np.asarray(batch[0]), np.asarray(batch[1])
        out = np.asarray(model(images, training=False), dtype=np.float64)
        score = _softmax(out) if from_logits else out
        if labels.ndim == 2 and labels.shape[-1] == score.shape[-1]:
            labels = labels.argmax(axis=-1)
        labels = labels.reshape(-1).astype(np.int64)
        if labels.shape[0] != score.shape[0]:
            raise ValueError(f"batch {b}: {labels.shape[0]} labels for {score.shape[0]} images")
        if on_batch is not None:
            on_batch(b, images, labels, score)
        ys.append(labels)
        scores.append(score)
    if not ys:
        raise ValueError("dataset yielded no batches")
    return np.concatenate(ys), np.concatenate(scores)


class EvaluationResult:
    """What :func:`evaluate_classifier` returns: ``y_true``, ``y_score``, ``y_pred``,
    ``report`` (or None), ``paths`` (report files) and ``samples`` (sample image paths)."""

    def __init__(self, y_true, y_score, report, paths, samples):
        self.y_true, self.y_score = y_true, y_score
        self.y_pred = y_score.argmax(axis=-1)
        self.report, self.paths, self.samples = report, paths, samples

    @property
    def accuracy(self):
        return float(np.mean(self.y_pred == self.y_true))


def evaluate_classifier(model, dataset, *, class_names, out_dir=None, prefix=None,
                        sample_dir=None, model_name=None, run="", from_logits=True):
    """Evaluate a classifier the original's way.

    Collects ``y_true`` and ``y_score`` (softmax of the logits, applied once), writes
    ``<prefix>_CM.txt``, ``_F1.txt``, ``_AUC.txt`` and ``_roc.png`` into ``out_dir`` via
    :func:`keras_medseg.metrics.write_classification_reports`, and saves the last image of
    every batch to ``sample_dir`` with :func:`save_prediction_sample`.

    Parameters
    ----------
    model, dataset, from_logits
        As for :func:`predict_scores`. Images should be 0..255 for the samples.
    class_names : sequence of str
        One per class (output column).
    out_dir, prefix : optional
        Report folder and file prefix (e.g. ``"MobileNetV2_test"``); both or neither.
    sample_dir : optional
        Folder for sample images; None saves none.
    model_name, run : str
        Sample file-name parts; ``model_name`` defaults to ``model.name``.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        Only one of ``out_dir``/``prefix`` given, or as :func:`predict_scores` and the report
        writer raise.
    """
    if (out_dir is None) != (prefix is None):
        raise ValueError("out_dir and prefix must be given together")
    if isinstance(class_names, (str, bytes)) or len(class_names) < 2:
        raise ValueError(f"class_names must be a sequence of >= 2 names; got {class_names!r}")
    model_name = model.name if model_name is None else str(model_name)
    samples = []

    def keep_last(b, images, labels, scores):
        if sample_dir is None:
            return
        i = images.shape[0] - 1
        samples.append(save_prediction_sample(
            sample_dir, images[i], true_label=labels[i], pred_label=int(scores[i].argmax()),
            model_name=model_name, run=run, batch=b, index=i, class_names=class_names))

    y_true, y_score = predict_scores(model, dataset, from_logits=from_logits,
                                     on_batch=keep_last)
    if y_score.shape[1] != len(class_names):
        raise ValueError(f"model outputs {y_score.shape[1]} classes but class_names has "
                         f"{len(class_names)}")
    report, paths = None, {}
    if out_dir is not None:
        from keras_medseg.metrics import write_classification_reports

        report, paths = write_classification_reports(out_dir, prefix, y_true, y_score,
                                                     class_names=list(class_names))
    return EvaluationResult(y_true, y_score, report, paths, samples)
