"""The linked real-time pipeline: classify every frame, segment the nerve frames, overlay.

For each frame, in chronological order (``order/`` folder):

1. classify the 224x224 frame (0 = nerve, 1 = opening wound, 2 = tendon);
2. if it is a nerve frame, segment it (threshold 0.5 / argmax);
3. resize the mask (nearest) to the high-resolution frame (``hdversion/``) and blend it in
   green, ``0.8 frame + 0.2 green mask`` (OpenCV ``addWeighted`` as the original);
4. draw the predicted class, the model time in ms and, when ``annotation/`` has the frame's
   mask, the IoU in the top-right corner; save ``output/frame<k>.png`` and a video.

Two layouts compute the same thing:

* ``"two-model"`` (the original): a classifier and a segmenter, each a compiled function;
* ``"shared"``: when both use the same MobileNetV2 encoder weights, ONE encoder pass feeds
  the classifier head and, for the nerve frames only, the U-Net decoder
  (:func:`build_shared_model`). Its outputs equal the two-model outputs.

Frames are decoded by a prefetching ``tf.data`` pipeline and processed in batches (frames are
independent, so batching does not change any result; ``batch_size=1`` gives the per-frame
latency of a live feed). Model time is measured around the compiled calls only (file
loading, drawing and writing are excluded and run in worker threads), per batch, and shared
out per frame: every frame gets ``t_classify / batch``, every segmented frame also
``t_segment / segmented frames in the batch``.

Fixed defects of the original: IoU against 0..255 masks (masks are binarised here); frames
misclassified as non-nerve scored IoU 0 silently (they are counted and reported separately,
the mean IoU is over segmented nerve frames, and the original's zero-filled mean is given
next to it); timing included file loading.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import time
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.utils import atomic_path, markdown_table, write_csv, write_json, write_text

__all__ = [
    "CLASS_NAMES",
    "LAYOUTS",
    "FrameBatchResult",
    "LinkedFrames",
    "LinkedPipeline",
    "LinkedResult",
    "build_encoder_classifier",
    "build_shared_model",
    "list_linked_frames",
    "natural_key",
    "overlay_mask",
    "run_linked",
    "write_video",
]

CLASS_NAMES = ("nerve", "opening wound", "tendon")
LAYOUTS = ("shared", "two-model")
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


# ------------------------------------------------------------------------------ models
def build_encoder_classifier(segmenter, num_classes=3, *, dropout=0.3,
                             name="encoder_classifier"):
    """A frame classifier on the (frozen) encoder of a U-Net from ``build_unet_mobilenetv2``.

    ``image -> preprocess -> encoder up to P5 (InferenceMode, frozen) -> GAP -> Dropout ->
    Dense(num_classes)`` logits: the layout of
    :func:`keras_medseg.training.build_transfer_classifier`, on the segmenter's own encoder
    layers (shared objects: freezing them freezes the segmenter's encoder too), so the two
    models share their encoder weights and :func:`build_shared_model` applies.

    Raises
    ------
    ValueError
        If ``segmenter`` has no ``"encoder"`` / ``"preprocess"`` layer, ``num_classes < 2``
        or ``dropout`` is outside [0, 1).
    """
    import keras

    from keras_medseg.backbones import BackbonePreprocessing
    from keras_medseg.training.transfer import InferenceMode

    enc, pre = _unet_parts(segmenter)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    backbone = keras.Model(enc.input, enc.output["P5"], name=f"{segmenter.name}_encoder_p5")
    backbone.trainable = False
    inputs = keras.Input(tuple(segmenter.input.shape[1:]), name="image")
    x = BackbonePreprocessing(pre.mode, name="preprocess")(inputs)
    x = InferenceMode(backbone, name="backbone")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _unet_parts(segmenter):
    try:
        return segmenter.get_layer("encoder"), segmenter.get_layer("preprocess")
    except ValueError:
        raise ValueError(f"segmenter {segmenter.name!r} has no 'encoder' and 'preprocess' "
                         f"layers; pass a U-Net from build_unet_mobilenetv2") from None


def _layer_name(tensor):
    return tensor._keras_history.operation.name


def _classifier_parts(classifier):
    from keras_medseg.training.transfer import InferenceMode

    names = [layer.name for layer in classifier.layers]
    if "backbone" not in names or not isinstance(classifier.get_layer("backbone"), InferenceMode):
        raise ValueError(f"classifier {classifier.name!r} has no InferenceMode layer "
                         f"'backbone'; pass a model from build_transfer_classifier or "
                         f"build_encoder_classifier")
    index = names.index("backbone")
    head = classifier.layers[index + 1:]
    return classifier.get_layer("preprocess"), classifier.get_layer("backbone").layer, head


def _shared_parts(classifier, segmenter):
    """(preprocess mode, features model {"cls", P1..P5}, head layers, decoder model)."""
    import keras

    cls_pre, cls_backbone, head = _classifier_parts(classifier)
    enc, seg_pre = _unet_parts(segmenter)
    if cls_pre.mode != seg_pre.mode:
        raise ValueError(f"classifier and segmenter preprocess their inputs differently "
                         f"({cls_pre.mode!r} vs {seg_pre.mode!r}); they cannot share an encoder")
    if tuple(classifier.input.shape[1:]) != tuple(segmenter.input.shape[1:]):
        raise ValueError(f"classifier input {tuple(classifier.input.shape[1:])} and segmenter "
                         f"input {tuple(segmenter.input.shape[1:])} differ")
    wanted = {"cls": _layer_name(cls_backbone.output)}
    wanted.update({lvl: _layer_name(t) for lvl, t in enc.output.items()})
    host = None
    for cand in (cls_backbone, enc):
        have = {layer.name for layer in cand.layers}
        if all(n in have for n in wanted.values()):
            host = cand
            break
    if host is None:
        raise ValueError("neither the classifier's backbone nor the segmenter's encoder holds "
                         "all the layers the other one uses; they cannot share an encoder")
    other = enc if host is cls_backbone else cls_backbone
    host_layers = {layer.name: layer for layer in host.layers}
    for layer in other.layers:
        if not layer.weights or layer.name not in host_layers:
            continue
        mine = host_layers[layer.name]
        if mine is layer:
            continue
        for a, b in zip(layer.get_weights(), mine.get_weights()):
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ValueError(f"classifier and segmenter encoders differ at layer "
                                 f"{layer.name!r}: they do not share their weights, use "
                                 f"layout='two-model'")
    features = keras.Model(host.input, {k: host.get_layer(n).output for k, n in wanted.items()},
                           name="shared_encoder")
    outer = keras.tree.pack_sequence_as(enc.output, enc._inbound_nodes[0].output_tensors)
    levels = sorted(outer)
    decoder = keras.Model([outer[k] for k in levels], segmenter.output, name="decoder")
    return cls_pre.mode, features, head, decoder, levels


def build_shared_model(classifier, segmenter, *, name="linked_shared"):
    """One model computing the classifier's and the segmenter's outputs with ONE encoder pass.

    Parameters
    ----------
    classifier : keras.Model
        From :func:`keras_medseg.training.build_transfer_classifier` (MobileNetV2) or
        :func:`build_encoder_classifier`.
    segmenter : keras.Model
        From :func:`keras_medseg.nerve.build_unet_mobilenetv2` with the same encoder.

    Returns
    -------
    keras.Model
        Input 0..255 frames ``(batch, h, w, 3)``; outputs ``{"class_logits": (batch,
        classes), "seg_logits": (batch, h, w, seg_classes)}``, equal to
        ``classifier(x)`` and ``segmenter(x)``. It shares its layers (and weights) with the
        two models.

    Raises
    ------
    ValueError
        If the two encoders do not hold the same weights (every layer present in both is
        compared exactly), preprocess differently, or take different input sizes.
    """
    import keras

    from keras_medseg.backbones import BackbonePreprocessing

    mode, features, head, decoder, levels = _shared_parts(classifier, segmenter)
    inputs = keras.Input(tuple(segmenter.input.shape[1:]), name="image")
    x = BackbonePreprocessing(mode, name="preprocess")(inputs)
    f = features(x)
    y = f["cls"]
    for layer in head:
        y = layer(y)
    seg = decoder([f[k] for k in levels])
    return keras.Model(inputs, {"class_logits": y, "seg_logits": seg}, name=name)


# ---------------------------------------------------------------------------- compiled
def _input_size(model):
    try:
        shape = model.inputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = None
    if shape is None or shape[1] is None or shape[2] is None:
        raise ValueError(f"classifier {getattr(model, 'name', model)!r} must have a static "
                         f"input size (height, width)")
    return int(shape[1]), int(shape[2])


def _compile(fn):
    """``tf.function`` (shape-relaxed) under the TensorFlow backend; the plain function
    otherwise (Keras' own eager execution)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    return fn


@dataclasses.dataclass
class FrameBatchResult:
    """Outputs for a sequence of frames (arrays over frames)."""

    probs: np.ndarray          # (n, classes) softmax
    pred: np.ndarray           # (n,) predicted class
    segmented: np.ndarray      # (n,) bool
    masks: list                # per frame: bool (h, w) or None
    time_classify: np.ndarray  # (n,) seconds, the frame's share of the batch's classify call
    time_segment: np.ndarray   # (n,) seconds (0 for frames not segmented)
    seg_calls: int = 0         # number of segmenter invocations
    seg_frames: int = 0        # number of frames passed to the segmenter


class LinkedPipeline:
    """Classify then (for nerve frames only) segment batches of frames, with compiled calls.

    Parameters
    ----------
    classifier : keras.Model
        Logits ``(batch, classes)`` for 0..255 frames.
    segmenter : keras.Model
        The U-Net (logits, ``argmax == foreground``) or DoubleU-Net (``segmenter_kind=
        "doubleunet"``: median-normalised input, channel -1 >= ``threshold``).
    layout : {"shared", "two-model"}
        ``"shared"`` needs a U-Net with the classifier's encoder (:func:`build_shared_model`).
    segmenter_kind : {"unet_mobilenetv2", "doubleunet", "deeplabv3plus"}
    nerve_class : int
        Class index that triggers segmentation (0 = nerve).
    foreground : int
        Segmenter class of the nerve (softmax models).
    threshold : float
        DoubleU-Net probability threshold.
    batch_size : int
        Frames per compiled call.
    """

    def __init__(self, classifier, segmenter, *, layout="shared",
                 segmenter_kind="unet_mobilenetv2", nerve_class=0, foreground=1, threshold=0.5,
                 batch_size=8):
        import keras
        from keras import ops

        check_choice(layout, LAYOUTS, name="layout")
        check_choice(segmenter_kind, ("unet_mobilenetv2", "doubleunet", "deeplabv3plus"),
                     name="segmenter_kind")
        check_positive(batch_size, name="batch_size")
        if layout == "shared" and segmenter_kind != "unet_mobilenetv2":
            raise ValueError("layout='shared' needs segmenter_kind='unet_mobilenetv2' (an "
                             "encoder shared with the classifier)")
        self.layout, self.kind = layout, segmenter_kind
        self.nerve_class, self.foreground = int(nerve_class), int(foreground)
        self.threshold, self.batch_size = float(threshold), int(batch_size)
        self.input_size = _input_size(classifier)
        self.classifier, self.segmenter = classifier, segmenter
        kind, fg, thr = self.kind, self.foreground, self.threshold

        def to_mask(y):
            if kind == "doubleunet":
                return ops.greater_equal(y[..., -1], thr)
            return ops.equal(ops.argmax(y, axis=-1), fg)

        if layout == "shared":
            mode, features, head, decoder, levels = _shared_parts(classifier, segmenter)
            from keras_medseg.backbones import BackbonePreprocessing

            prep = BackbonePreprocessing(mode)

            def encode(x):
                f = features(prep(x), training=False)
                y = f["cls"]
                for layer in head:
                    y = layer(y, training=False)
                return ops.softmax(y, axis=-1), [f[k] for k in levels]

            def decode(feats, idx):
                sub = [ops.take(t, idx, axis=0) for t in feats]
                return to_mask(decoder(sub, training=False))

            self._encode, self._decode = _compile(encode), _compile(decode)
        else:
            def encode(x):
                return ops.softmax(classifier(x, training=False), axis=-1), x

            def decode(x, idx):
                sub = ops.take(x, idx, axis=0)
                if kind == "doubleunet":
                    from keras_medseg.nerve.segmentation_models import doubleunet_preprocess

                    sub = doubleunet_preprocess(sub)
                return to_mask(segmenter(sub, training=False))

            self._encode, self._decode = _compile(encode), _compile(decode)

    def warmup(self):
        """Trace the compiled functions for a full and a partial batch (and segmented
        subsets of one and several frames), so later timings exclude tracing."""
        from keras import ops

        for n in sorted({self.batch_size, max(1, self.batch_size - 1), 1}, reverse=True):
            x = ops.convert_to_tensor(np.zeros((n,) + self.input_size + (3,), np.float32))
            _, carry = self._encode(x)
            for k in sorted({1, n}):
                np.asarray(self._decode(carry, ops.convert_to_tensor(np.arange(k, dtype=np.int32))))
        return self

    def process_batch(self, frames):
        """Classify a batch ``(b, h, w, 3)`` (0..255) and segment its nerve frames.

        Returns
        -------
        probs (b, classes), masks (k, h, w) bool of the segmented frames, their indices (k,),
        seconds of the classify call, seconds of the segment call (0 when none).
        """
        from keras import ops

        t0 = time.perf_counter()
        probs, carry = self._encode(ops.convert_to_tensor(frames, dtype="float32"))
        probs = np.asarray(probs)
        t1 = time.perf_counter()
        idx = np.flatnonzero(np.argmax(probs, axis=1) == self.nerve_class).astype(np.int32)
        if idx.size == 0:
            return probs, np.zeros((0,) + self.input_size, bool), idx, t1 - t0, 0.0
        masks = np.asarray(self._decode(carry, ops.convert_to_tensor(idx)))
        return probs, masks, idx, t1 - t0, time.perf_counter() - t1

    def process(self, batches, *, on_batch=None):
        """Run over an iterable of frame batches; return a :class:`FrameBatchResult`.

        ``on_batch(start, frames, probs, masks_by_index)`` is called after each batch (e.g.
        to hand frames to writer threads).
        """
        probs_all, t_cls, t_seg, masks_all, seg = [], [], [], [], []
        calls = frames_seg = 0
        start = 0
        for frames in batches:
            frames = np.asarray(frames)
            n = len(frames)
            probs, masks, idx, tc, ts = self.process_batch(frames)
            per_mask = [None] * n
            for j, i in enumerate(idx):
                per_mask[int(i)] = masks[j]
            flags = np.zeros(n, bool)
            flags[idx] = True
            calls += int(idx.size > 0)
            frames_seg += int(idx.size)
            probs_all.append(probs)
            t_cls.append(np.full(n, tc / n))
            t_seg.append(np.where(flags, ts / max(idx.size, 1), 0.0))
            masks_all.extend(per_mask)
            seg.append(flags)
            if on_batch is not None:
                on_batch(start, frames, probs, per_mask)
            start += n
        if not probs_all:
            raise ValueError("no frames to process")
        probs = np.concatenate(probs_all)
        return FrameBatchResult(probs=probs, pred=probs.argmax(1), segmented=np.concatenate(seg),
                                masks=masks_all, time_classify=np.concatenate(t_cls),
                                time_segment=np.concatenate(t_seg), seg_calls=calls,
                                seg_frames=frames_seg)

    def process_array(self, frames):
        """:meth:`process` over an in-memory array ``(n, h, w, 3)`` in batches."""
        frames = np.asarray(frames)
        return self.process(frames[s:s + self.batch_size]
                            for s in range(0, len(frames), self.batch_size))


# ------------------------------------------------------------------------------ frames
def natural_key(text):
    """Sort key ordering ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


@dataclasses.dataclass
class LinkedFrames:
    """Frames of a linked-pipeline folder in chronological order."""

    names: list            # frame names (file stems without the order prefix)
    input_paths: list      # 224x224 model inputs
    hd_paths: list         # high-resolution frames (or the input when none)
    annotation_paths: list  # ground-truth masks or None


def _index(folder):
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in _IMAGE_EXT and not p.name.startswith(".")}


def list_linked_frames(folder):
    """Read a linked-pipeline folder: ``order/`` (or ``input/``), ``hdversion/``,
    ``annotation/``.

    ``order/`` files (``<k>_<name>.jpg``) are sorted naturally and give the chronological
    order; ``<name>`` finds the frame in ``hdversion/`` and its mask in ``annotation/``.
    Without ``order/``, the files of ``input/`` in natural order are used.

    Raises
    ------
    FileNotFoundError
        If neither ``order/`` nor ``input/`` holds images.
    """
    folder = Path(folder)
    order = _index(folder / "order")
    if order:
        keys = sorted(order, key=natural_key)
        paths = [order[k] for k in keys]
        names = [re.sub(r"^\d+_", "", k) for k in keys]
    else:
        inputs = _index(folder / "input")
        if not inputs:
            raise FileNotFoundError(f"linked folder {str(folder)!r} has no images in 'order/' "
                                    f"or 'input/'")
        names = sorted(inputs, key=natural_key)
        paths = [inputs[k] for k in names]
    hd, ann = _index(folder / "hdversion"), _index(folder / "annotation")
    return LinkedFrames(names=names, input_paths=[str(p) for p in paths],
                        hd_paths=[str(hd.get(n, p)) for n, p in zip(names, paths)],
                        annotation_paths=[str(ann[n]) if n in ann else None for n in names])


def _frame_batches(paths, size, batch_size):
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(image, size, method="bilinear")

    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(2).as_numpy_iterator()


# ----------------------------------------------------------------------------- drawing
def overlay_mask(frame, mask, *, alpha=0.2, color=(0, 255, 0)):
    """``(1 - alpha) frame + alpha colour-mask`` (OpenCV ``addWeighted``, as the original).

    ``mask`` is resized (nearest) to the frame. Returns a new uint8 array.
    """
    from PIL import Image

    frame = np.asarray(frame)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != frame.shape[:2]:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (frame.shape[1], frame.shape[0]), Image.NEAREST)) > 0
    layer = np.zeros_like(frame, dtype=np.float32)
    layer[mask] = color
    out = (1 - alpha) * frame.astype(np.float32) + alpha * layer
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _draw_text(frame, lines):
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(frame)
    size = max(12, frame.shape[0] // 28)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(pil)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), text, font=font)
    x = frame.shape[1] - (box[2] - box[0]) - size // 2
    draw.multiline_text((x, size // 3), text, fill=(255, 255, 255), font=font,
                        stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return np.asarray(pil)


def _read_rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _read_truth(path, size=None):
    from PIL import Image

    with Image.open(path) as im:
        m = np.asarray(im.convert("L"))
    return m > (127 if m.max() > 1 else 0)


def _iou(truth, mask):
    from PIL import Image

    if mask.shape != truth.shape:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (truth.shape[1], truth.shape[0]), Image.NEAREST)) > 0
    union = np.count_nonzero(truth | mask)
    if union == 0:
        return float("nan")
    return np.count_nonzero(truth & mask) / union


def write_video(path, frames, *, fps=2):
    """Write ``frames`` (an iterable of uint8 RGB arrays or image paths) to an MP4 / AVI
    video with imageio's ffmpeg plugin; returns the path. Odd sides are padded to even."""
    import imageio.v2 as imageio

    path = Path(path)
    check_choice(path.suffix.lower(), (".mp4", ".avi"), name="video suffix")
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(str(tmp), fps=fps, macro_block_size=1,
                                    codec="libx264" if path.suffix.lower() == ".mp4" else "mjpeg",
                                    **({"pixelformat": "yuv420p"}
                                       if path.suffix.lower() == ".mp4" else {"quality": 8}))
        try:
            for f in frames:
                f = _read_rgb(f) if isinstance(f, (str, os.PathLike)) else np.asarray(f)
                h, w = f.shape[:2]
                if h % 2 or w % 2:
                    f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
                writer.append_data(f)
        finally:
            writer.close()
    return path


# ------------------------------------------------------------------------------ report
@dataclasses.dataclass
class LinkedResult:
    """Per-frame table and summaries of a linked run (see :func:`run_linked`)."""

    rows: list
    summary: dict
    files: dict
    batch: FrameBatchResult


def _ms_summary(values):
    from keras_medseg.metrics import summarize

    s = summarize(np.asarray(values) * 1000.0)
    return {"n": s.n, "mean_ms": s.mean, "sem_ms": s.sem, "ci95_low_ms": s.ci95_low,
            "ci95_high_ms": s.ci95_high}


def run_linked(pipeline, folder, out_dir, *, class_names=CLASS_NAMES, labels=None,
               video="linked.mp4", fps=2, write_frames=True, workers=2, log=print):
    """Run ``pipeline`` over a linked folder; write frames, video, tables and ROC.

    Parameters
    ----------
    pipeline : LinkedPipeline
    folder : path
        Holds ``order/`` (or ``input/``), optionally ``hdversion/`` and ``annotation/``.
    out_dir : path
        Receives ``output/frame<k>.png`` (k = 1, 2, ... in chronological order), the video,
        ``frames.csv``, ``timing.md``, ``summary.json`` and the ROC files.
    labels : dict, optional
        Frame name -> true class (index or name). Without it a frame counts as nerve when
        ``annotation/`` has its mask and as not-nerve otherwise (binary ROC only).
    video : str or None
        File name (``.mp4`` or ``.avi``) of the video, None for none.

    Returns
    -------
    LinkedResult
    """
    from keras_medseg.metrics import summarize

    frames = list_linked_frames(folder)
    out_dir = Path(out_dir)
    out_frames = out_dir / "output"
    n = len(frames.names)
    names_lower = [c.lower() for c in class_names]
    nerve = pipeline.nerve_class
    pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
    futures = {}
    times = {}

    def finish(k, pred, prob, mask):
        hd = _read_rgb(frames.hd_paths[k])
        iou = float("nan")
        truth_path = frames.annotation_paths[k]
        if truth_path is not None and mask is not None:
            iou = _iou(_read_truth(truth_path), mask)
        img = overlay_mask(hd, mask) if mask is not None else hd
        lines = [f"{class_names[pred]} ({prob:.2f})", f"{times[k]:.1f} ms"]
        if truth_path is not None:
            lines.append(f"IoU {iou:.3f}" if mask is not None else "IoU: not segmented")
        img = _draw_text(img, lines)
        path = None
        if write_frames:
            from PIL import Image

            path = out_frames / f"frame{k + 1}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
        return iou, path

    pipeline.warmup()
    t_wall = time.perf_counter()
    batches = _frame_batches(frames.input_paths, pipeline.input_size, pipeline.batch_size)
    res = pipeline.process(batches)
    t_wall = time.perf_counter() - t_wall
    model_time = res.time_classify + res.time_segment
    for k in range(n):
        times[k] = model_time[k] * 1000.0
        futures[k] = pool.submit(finish, k, int(res.pred[k]), float(res.probs[k].max()),
                                 res.masks[k])
    outcomes = [futures[k].result() for k in range(n)]
    pool.shutdown()

    if labels is not None:
        y_true = []
        for name in frames.names:
            lab = labels[name]
            y_true.append(names_lower.index(str(lab).lower()) if isinstance(lab, str) else int(lab))
        y_true = np.asarray(y_true)
        true_nerve = y_true == nerve
    else:
        y_true = None
        true_nerve = np.asarray([p is not None for p in frames.annotation_paths])
    has_truth = np.asarray([p is not None for p in frames.annotation_paths])
    iou = np.asarray([o[0] for o in outcomes])
    segmented = res.segmented
    rows = []
    for k, name in enumerate(frames.names):
        rows.append(dict(frame=k + 1, name=name, predicted=class_names[res.pred[k]],
                         true=(class_names[y_true[k]] if y_true is not None else
                               ("nerve" if true_nerve[k] else "not nerve")),
                         p_nerve=float(res.probs[k, nerve]), segmented=bool(segmented[k]),
                         classify_ms=res.time_classify[k] * 1000,
                         segment_ms=res.time_segment[k] * 1000, model_ms=model_time[k] * 1000,
                         iou=iou[k]))
    scored = has_truth & segmented
    missed = has_truth & ~segmented
    false_nerve = segmented & ~true_nerve
    iou_summary = summarize(iou[scored])
    zero_filled = np.where(missed, 0.0, iou)[has_truth]
    summary = {
        "layout": pipeline.layout, "batch_size": pipeline.batch_size, "frames": n,
        "segmented_frames": int(segmented.sum()), "segmenter_calls": res.seg_calls,
        "time_with_segmentation": _ms_summary(model_time[segmented]),
        "time_without_segmentation": _ms_summary(model_time[~segmented]),
        "time_all_frames": _ms_summary(model_time),
        "model_fps": n / float(model_time.sum()) if model_time.sum() > 0 else float("nan"),
        "wall_fps_with_loading": n / t_wall,
        "nerve_frames_with_mask": int(has_truth.sum()),
        "iou_segmented_nerve_frames": iou_summary.as_dict(),
        "missed_nerve_frames": int(missed.sum()),
        "false_nerve_frames": int(false_nerve.sum()),
        "iou_original_zero_filled_mean": float(np.nanmean(zero_filled)) if zero_filled.size
        else float("nan"),
        "classification_accuracy": (float(np.mean(res.pred == y_true)) if y_true is not None
                                    else float(np.mean((res.pred == nerve) == true_nerve))),
    }
    files = {}
    if true_nerve.any() and (~true_nerve).any():
        from sklearn.metrics import roc_auc_score

        summary["nerve_auc"] = float(roc_auc_score(true_nerve, res.probs[:, nerve]))
        if y_true is not None and len(np.unique(y_true)) == len(class_names):
            from keras_medseg.metrics import write_classification_reports

            _, paths = write_classification_reports(out_dir, "linked", y_true, res.probs,
                                                    class_names=list(class_names))
            files.update({f"report_{k}": v for k, v in paths.items()})
        files["roc"] = _plot_binary_roc(out_dir / "linked_nerve_roc.png", true_nerve,
                                        res.probs[:, nerve], summary["nerve_auc"])
    files["frames_csv"] = write_csv(out_dir / "frames.csv", rows, list(rows[0]))
    files["timing"] = write_text(out_dir / "timing.md", timing_table(summary))
    files["summary"] = write_json(out_dir / "summary.json", summary)
    if write_frames and video:
        files["video"] = write_video(out_dir / video,
                                     (out_frames / f"frame{k + 1}.png" for k in range(n)),
                                     fps=fps)
    log(f"[linked] {pipeline.layout}: {n} frames, {int(segmented.sum())} segmented, "
        f"{summary['model_fps']:.1f} frames/s (model time), mean IoU "
        f"{iou_summary.mean:.3f} over {iou_summary.n} frames, missed {int(missed.sum())}")
    return LinkedResult(rows=rows, summary=summary, files=files, batch=res)


def timing_table(summary):
    """Markdown table of a run summary's timing rows."""
    rows = []
    for key, label in (("time_with_segmentation", "frames with segmentation"),
                       ("time_without_segmentation", "frames without segmentation"),
                       ("time_all_frames", "all frames")):
        s = summary[key]
        rows.append({"frames": label, "n": s["n"], "mean ms": s["mean_ms"],
                     "95% CI ms": f"[{s['ci95_low_ms']:.2f}, {s['ci95_high_ms']:.2f}]"})
    head = (f"layout `{summary['layout']}`, batch {summary['batch_size']}: "
            f"{summary['model_fps']:.1f} frames/s model time, "
            f"{summary['wall_fps_with_loading']:.1f} frames/s with loading\n\n")
    return head + markdown_table(rows, ["frames", "n", "mean ms", "95% CI ms"], floatfmt=".2f")


def _plot_binary_roc(path, y, score, auc):
    from sklearn.metrics import roc_curve

    from keras_medseg.utils import new_figure, save_figure

    fpr, tpr, _ = roc_curve(y, score)
    fig = new_figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"nerve vs rest (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def main(argv=None):
    """``experiments/nerve/run_linked.py``: load two saved models and run a linked folder."""
    import argparse

    import keras

    p = argparse.ArgumentParser(description="Classify every frame, segment the nerve frames, "
                                            "write overlaid frames, a video and the timing.")
    p.add_argument("folder", help="linked folder (order/ or input/, hdversion/, annotation/)")
    p.add_argument("out_dir")
    p.add_argument("--classifier", required=True, help=".keras classifier (logits)")
    p.add_argument("--segmenter", required=True, help=".keras segmenter")
    p.add_argument("--segmenter-kind", default="unet_mobilenetv2",
                   choices=["unet_mobilenetv2", "doubleunet", "deeplabv3plus"])
    p.add_argument("--layout", default="shared", choices=list(LAYOUTS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--video", default="linked.mp4", help="video file name (.mp4 or .avi)")
    p.add_argument("--fps", type=float, default=2.0)
    args = p.parse_args(argv)
    classifier = keras.models.load_model(args.classifier, compile=False)
    segmenter = keras.models.load_model(args.segmenter, compile=False)
    pipe = LinkedPipeline(classifier, segmenter, layout=args.layout,
                          segmenter_kind=args.segmenter_kind, batch_size=args.batch_size)
    res = run_linked(pipe, args.folder, args.out_dir, video=args.video, fps=args.fps)
    print(timing_table(res.summary))
    return res
