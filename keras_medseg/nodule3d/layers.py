"""Custom layers of the full nodule3d detector (keras.ops only, serializable).

The detector (:func:`keras_medseg.nodule3d.models.build_detector`) chains:

1. :class:`ScreeningProposals`: stage-1 probability map -> boxes of ``roi_size`` at the
   mapped centres -> keep ``score > score_threshold`` and ``label != 0`` -> 3D greedy NMS
   -> at most ``max_proposals`` boxes per volume (fixed-size, zero-padded, with a mask).
2. :class:`CropProposals`: a ``patch_size`` crop of the input volume centred on each box
   (outside the volume filled with ``pad_value``), flattened to ``(batch * N, ...)``.
3. stage 2 on the crops, then :class:`UnflattenProposals` back to ``(batch, N, ...)`` and
   :class:`DecodeProposalRegression` for the box-regression head.

Boxes are ``(z1, y1, x1, z2, y2, x2)`` in input voxels, half-open: a box centred on the
integer voxel ``c`` starts at ``c - roi_size // 2``.

These layers also define the stage-1 geometry constants (re-exported by ``models``).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = [
    "RECEPTIVE_FIELD",
    "STRIDE",
    "CENTRE_OFFSET",
    "ScreeningProposals",
    "CropProposals",
    "UnflattenProposals",
    "DecodeProposalRegression",
]

RECEPTIVE_FIELD = (15, 30, 30)
STRIDE = (1, 2, 2)
CENTRE_OFFSET = tuple(r // 2 for r in RECEPTIVE_FIELD)     # (7, 15, 15)
_INVALID = -1.0


def _int_triple(value, name, *, minimum=1):
    try:
        t = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be 3 ints (z, y, x); got {value!r}")
    if len(t) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                              and v >= minimum for v in t):
        raise ValueError(f"{name} must be 3 ints >= {minimum} (z, y, x); got {value!r}")
    return tuple(int(v) for v in t)


def _fraction(value, name, *, low=0.0, high=1.0):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) \
            or not (low <= float(value) <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}")
    return float(value)


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def equal_box_iou(dz, dy, dx, roi_size):
    """IoU of two boxes of the same size ``roi_size`` whose centres differ by (dz, dy, dx)
    (keras.ops, elementwise)."""
    inter = 1.0
    for d, s in zip((dz, dy, dx), roi_size):
        inter = inter * ops.maximum(float(s) - ops.abs(d), 0.0)
    volume = float(np.prod(roi_size))
    return inter / (2.0 * volume - inter)


@keras.saving.register_keras_serializable(package="keras_medseg")
class ScreeningProposals(keras.layers.Layer):
    """Stage-1 probability map -> at most ``max_proposals`` boxes per volume.

    Each map position ``o`` is a candidate centred on ``o * stride + centre_offset`` with
    label ``argmax`` over classes and score the probability of that label. Candidates with
    ``label != 0`` and ``score > score_threshold`` enter a class-agnostic greedy 3D NMS
    (boxes of ``roi_size``, suppress IoU > ``iou_threshold``).

    NMS is fixed-size so that it compiles on every backend: the ``pre_nms_top_k`` best
    candidates are taken with ``top_k``, then ``max_proposals`` greedy rounds each pick the
    best remaining candidate and suppress its overlaps. The result equals greedy NMS over all
    candidates unless the top-k are all picked or suppressed before ``max_proposals`` picks
    while candidates outside the top-k remain. Ties are resolved towards the lower flat
    map index (the order of ``top_k`` and ``argmax``).

    Input: ``(batch, d, h, w, classes)`` probabilities. Outputs (tuple):
    ``boxes`` (batch, N, 6) float32, ``scores`` (batch, N) float32, ``labels`` (batch, N)
    int32, ``valid`` (batch, N) float32 (1 for a proposal, 0 for padding; padded entries
    are all zero), proposals sorted by descending score.
    """

    def __init__(self, roi_size=(25, 60, 60), *, score_threshold=0.25, iou_threshold=0.5,
                 max_proposals=20, pre_nms_top_k=1000, stride=STRIDE,
                 centre_offset=CENTRE_OFFSET, **kwargs):
        super().__init__(**kwargs)
        self.roi_size = _int_triple(roi_size, "roi_size")
        self.score_threshold = _fraction(score_threshold, "score_threshold")
        self.iou_threshold = _fraction(iou_threshold, "iou_threshold")
        self.max_proposals = _positive_int(max_proposals, "max_proposals")
        self.pre_nms_top_k = _positive_int(pre_nms_top_k, "pre_nms_top_k")
        self.stride = _int_triple(stride, "stride")
        self.centre_offset = _int_triple(centre_offset, "centre_offset", minimum=0)

    def call(self, probabilities):
        if len(probabilities.shape) != 5:
            raise ValueError(f"ScreeningProposals expects (batch, d, h, w, classes); got "
                             f"{tuple(probabilities.shape)}")
        probs = ops.cast(probabilities, "float32")
        shape = ops.shape(probs)
        batch, h, w = shape[0], shape[2], shape[3]
        k = self.pre_nms_top_k
        flat = ops.reshape(probs, (batch, -1, probs.shape[-1]))
        labels = ops.cast(ops.argmax(flat, axis=-1), "int32")
        scores = ops.max(flat, axis=-1)
        keep = ops.logical_and(ops.not_equal(labels, 0), scores > self.score_threshold)
        cand = ops.where(keep, scores, _INVALID)
        # Pad so that top_k never asks for more entries than the map has.
        cand = ops.concatenate([cand, ops.full((batch, k), _INVALID, dtype="float32")], axis=1)
        labels = ops.concatenate([labels, ops.zeros((batch, k), dtype="int32")], axis=1)
        remaining, idx = ops.top_k(cand, k)
        idx = ops.cast(idx, "int32")
        top_labels = ops.take_along_axis(labels, idx, axis=1)
        hw = h * w
        grid = (idx // hw, (idx // w) % h, idx % w)
        centres = [ops.cast(g * s + o, "float32")
                   for g, s, o in zip(grid, self.stride, self.centre_offset)]
        out_c, out_s, out_l, out_v = [], [], [], []
        for _ in range(self.max_proposals):
            best = ops.argmax(remaining, axis=1)[:, None]
            best_score = ops.take_along_axis(remaining, best, axis=1)
            valid = ops.cast(best_score > 0.5 * _INVALID, "float32")          # (batch, 1)
            best_c = [ops.take_along_axis(c, best, axis=1) for c in centres]
            iou = equal_box_iou(*(c - b for c, b in zip(centres, best_c)), self.roi_size)
            picked = ops.one_hot(best[:, 0], k, dtype="float32") > 0
            suppress = ops.logical_or(iou > self.iou_threshold, picked)
            remaining = ops.where(suppress, _INVALID, remaining)
            out_c.append(ops.concatenate(best_c, axis=1) * valid)
            out_s.append(best_score * valid)
            out_l.append(ops.take_along_axis(top_labels, best, axis=1)
                         * ops.cast(valid, "int32"))
            out_v.append(valid)
        centre = ops.stack(out_c, axis=1)                                      # (b, N, 3)
        half = ops.convert_to_tensor([s // 2 for s in self.roi_size], dtype="float32")
        size = ops.convert_to_tensor(list(self.roi_size), dtype="float32")
        valid = ops.concatenate(out_v, axis=1)
        start = (centre - half) * valid[..., None]
        boxes = ops.concatenate([start, start + size * valid[..., None]], axis=-1)
        return (boxes, ops.concatenate(out_s, axis=1), ops.concatenate(out_l, axis=1), valid)

    def compute_output_shape(self, input_shape):
        b, n = input_shape[0], self.max_proposals
        return (b, n, 6), (b, n), (b, n), (b, n)

    def compute_output_spec(self, probabilities):
        b, n = probabilities.shape[0], self.max_proposals
        return (keras.KerasTensor((b, n, 6), "float32"), keras.KerasTensor((b, n), "float32"),
                keras.KerasTensor((b, n), "int32"), keras.KerasTensor((b, n), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(roi_size=self.roi_size, score_threshold=self.score_threshold,
                      iou_threshold=self.iou_threshold, max_proposals=self.max_proposals,
                      pre_nms_top_k=self.pre_nms_top_k, stride=self.stride,
                      centre_offset=self.centre_offset)
        return config


@keras.saving.register_keras_serializable(package="keras_medseg")
class CropProposals(keras.layers.Layer):
    """Crop a ``patch_size`` patch of the volume around each box centre.

    Inputs ``[volume (batch, D, H, W, C), boxes (batch, N, 6)]``; box centre =
    ``start + (end - start) // 2``, patch = ``volume[centre - patch_size // 2 :][:patch_size]``,
    voxels outside the volume set to ``pad_value``. Output ``(batch * N, pz, py, px, C)``,
    grouped by volume (rows ``b * N ... b * N + N - 1`` belong to volume ``b``).
    """

    def __init__(self, patch_size=(25, 60, 60), *, pad_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = _int_triple(patch_size, "patch_size")
        if not isinstance(pad_value, (int, float, np.integer, np.floating)) \
                or isinstance(pad_value, bool) or not np.isfinite(pad_value):
            raise ValueError(f"pad_value must be a finite number; got {pad_value!r}")
        self.pad_value = float(pad_value)

    def call(self, inputs):
        volume, boxes = inputs
        if len(volume.shape) != 5 or len(boxes.shape) != 3 or boxes.shape[-1] != 6:
            raise ValueError(f"CropProposals expects [volume (batch, z, y, x, C), boxes "
                             f"(batch, N, 6)]; got {tuple(volume.shape)}, {tuple(boxes.shape)}")
        channels = volume.shape[-1]
        shape = ops.shape(volume)
        dims = (shape[1], shape[2], shape[3])
        boxes = ops.cast(ops.round(boxes), "int32")
        start, end = boxes[..., :3], boxes[..., 3:]
        centre = start + (end - start) // 2
        axes, inside = [], []
        for a, p in enumerate(self.patch_size):
            pos = (centre[..., a] - p // 2)[..., None] + ops.arange(p, dtype="int32")  # (b,N,p)
            inside.append(ops.logical_and(pos >= 0, pos < dims[a]))
            axes.append(ops.clip(pos, 0, dims[a] - 1))
        zz, yy, xx = axes
        b = ops.arange(shape[0], dtype="int32")[:, None, None, None, None]
        flat = (((b * dims[0] + zz[:, :, :, None, None]) * dims[1] + yy[:, :, None, :, None])
                * dims[2] + xx[:, :, None, None, :])
        mask = ops.logical_and(
            ops.logical_and(inside[0][:, :, :, None, None], inside[1][:, :, None, :, None]),
            inside[2][:, :, None, None, :])
        values = ops.take(ops.reshape(volume, (-1, channels)), ops.reshape(flat, (-1,)), axis=0)
        values = ops.where(ops.reshape(mask, (-1, 1)), values,
                           ops.cast(self.pad_value, values.dtype))
        return ops.reshape(values, (-1,) + self.patch_size + (channels,))

    def compute_output_shape(self, input_shape):
        vol, boxes = input_shape
        b = None if vol[0] is None or boxes[1] is None else vol[0] * boxes[1]
        return (b,) + self.patch_size + (vol[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, pad_value=self.pad_value)
        return config


@keras.saving.register_keras_serializable(package="keras_medseg")
class UnflattenProposals(keras.layers.Layer):
    """``[x (batch * N, ...), valid (batch, N)]`` -> ``(batch, N, ...)`` with the entries of
    padded proposals (``valid == 0``) set to zero."""

    def __init__(self, num_proposals, **kwargs):
        super().__init__(**kwargs)
        self.num_proposals = _positive_int(num_proposals, "num_proposals")

    def call(self, inputs):
        x, valid = inputs
        x = ops.reshape(x, (-1, self.num_proposals) + tuple(x.shape[1:]))
        mask = ops.reshape(ops.cast(valid, x.dtype),
                           (-1, self.num_proposals) + (1,) * (len(x.shape) - 2))
        return x * mask

    def compute_output_shape(self, input_shape):
        x, valid = input_shape
        return (valid[0], self.num_proposals) + tuple(x[1:])

    def get_config(self):
        config = super().get_config()
        config.update(num_proposals=self.num_proposals)
        return config


@keras.saving.register_keras_serializable(package="keras_medseg")
class DecodeProposalRegression(keras.layers.Layer):
    """Refined lesion centres and diameters from the stage-2 regression output.

    Inputs ``[boxes (batch, N, 6), regression (batch, N, 4), valid (batch, N)]``;
    ``t = regression * std + mean``; centre = box centre + ``t[:3] * (patch_size // 2)``;
    diameter = ``|patch diagonal| * exp(t[3])`` (the inverse of
    :func:`keras_medseg.nodule3d.losses.encode_regression_targets` for the crop centred on
    the box). Outputs ``centres (batch, N, 3)`` and ``diameters (batch, N)`` in input voxels,
    zero for padded proposals.
    """

    def __init__(self, patch_size=(25, 60, 60), *, mean=0.0, std=0.2, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = _int_triple(patch_size, "patch_size")
        m = np.broadcast_to(np.asarray(mean, dtype=np.float64), (4,))
        s = np.broadcast_to(np.asarray(std, dtype=np.float64), (4,))
        if not np.all(np.isfinite(m)) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"mean must be finite and std positive; got {mean!r}, {std!r}")
        self.mean = [float(v) for v in m]
        self.std = [float(v) for v in s]

    def call(self, inputs):
        boxes, regression, valid = inputs
        boxes = ops.cast(boxes, "float32")
        t = ops.cast(regression, "float32") * ops.convert_to_tensor(self.std, "float32") \
            + ops.convert_to_tensor(self.mean, "float32")
        start, end = boxes[..., :3], boxes[..., 3:]
        centre = start + ops.floor((end - start) / 2.0)
        pc = ops.convert_to_tensor([p // 2 for p in self.patch_size], "float32")
        valid = ops.cast(valid, "float32")
        centres = (centre + t[..., :3] * pc) * valid[..., None]
        diagonal = float(np.sqrt(np.sum(np.square(self.patch_size))))
        return centres, diagonal * ops.exp(t[..., 3]) * valid

    def compute_output_shape(self, input_shape):
        b, n = input_shape[0][0], input_shape[0][1]
        return (b, n, 3), (b, n)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, mean=self.mean, std=self.std)
        return config
