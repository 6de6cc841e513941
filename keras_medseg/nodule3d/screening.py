"""Whole-volume candidate screening with the fully convolutional stage-1 network.

:func:`screen_volume` runs stage 1 once over a whole (resampled, normalised) volume, in
overlapping tiles when the volume is too large for one pass, and returns the probability map
with the input centre of every map position. Because the network is fully convolutional
with output stride :data:`STRIDE` and receptive field :data:`RECEPTIVE_FIELD`, map position
``o`` holds exactly the patch classifier's output for the (15, 30, 30) patch starting at
``o * STRIDE``; this replaces the original's classification of every patch position.

Tiling is exact: tiles are laid out on the output grid (so every tile starts on a multiple
of the stride), and neighbouring input tiles overlap by ``RECEPTIVE_FIELD - STRIDE`` voxels,
so each map position is computed from the same input voxels as without tiling.

:func:`boxes_from_probability_map` turns a map into candidate boxes (threshold, greedy 3D
NMS, top-k) in NumPy for the evaluation path; it is the NumPy twin of
:class:`keras_medseg.nodule3d.layers.ScreeningProposals`.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import keras
import numpy as np

from keras_medseg.nodule3d.layers import (
    CENTRE_OFFSET,
    RECEPTIVE_FIELD,
    STRIDE,
    _fraction,
    _int_triple,
)

__all__ = ["ScreeningResult", "Proposals", "screen_volume", "plan_tiles", "auto_tile_shape",
           "boxes_from_probability_map"]

_RF = np.asarray(RECEPTIVE_FIELD)
_ST = np.asarray(STRIDE)


class ScreeningResult(NamedTuple):
    """Output of :func:`screen_volume`.

    Attributes
    ----------
    probabilities : numpy.ndarray, (d, h, w, classes), float32
        Stage-1 probability map.
    z_centres, y_centres, x_centres : numpy.ndarray, int64
        Input voxel on which each map row/column is centred (the map is separable):
        position ``(i, j, k)`` is centred on ``(z_centres[i], y_centres[j], x_centres[k])``
        = ``(i, j, k) * STRIDE + CENTRE_OFFSET``.
    """

    probabilities: np.ndarray
    z_centres: np.ndarray
    y_centres: np.ndarray
    x_centres: np.ndarray

    def centre_grid(self):
        """Centres of all map positions: ``(d, h, w, 3)`` int64 (z, y, x)."""
        return np.stack(np.meshgrid(self.z_centres, self.y_centres, self.x_centres,
                                    indexing="ij"), axis=-1)


class Proposals(NamedTuple):
    """Candidate boxes from :func:`boxes_from_probability_map`, by descending score.

    boxes (n, 6) float64 ``(z1, y1, x1, z2, y2, x2)`` half-open input voxels; scores (n,)
    float32; labels (n,) int64; centres (n, 3) int64; map_indices (n, 3) int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    map_indices: np.ndarray


def _map_shape(spatial):
    return tuple(int(n) for n in (np.asarray(spatial) - _RF) // _ST + 1)


def plan_tiles(volume_shape, tile_shape):
    """Exact tiling of the stage-1 map.

    Parameters
    ----------
    volume_shape : 3 ints
        Input volume (z, y, x).
    tile_shape : 3 ints
        Largest input tile (z, y, x), each at least :data:`RECEPTIVE_FIELD`.

    Returns
    -------
    list of (input_slices, output_slices)
        Tuples of 3 slices each: the input block to run and the map block it fills. All
        tiles have the same shape (the last tile of an axis is moved back to end at the map's
        end, overlapping its neighbour) and their map blocks cover the map.
    """
    vol = np.asarray(volume_shape, dtype=np.int64)
    tile = np.asarray(tile_shape, dtype=np.int64)
    if vol.shape != (3,) or np.any(vol < _RF):
        raise ValueError(f"volume_shape must be (z, y, x) of at least {RECEPTIVE_FIELD}; "
                         f"got {tuple(volume_shape)}")
    if tile.shape != (3,) or np.any(tile < _RF):
        raise ValueError(f"tile_shape must be 3 ints (z, y, x) of at least {RECEPTIVE_FIELD}; "
                         f"got {tile_shape!r}")
    n_out = np.asarray(_map_shape(vol))
    m_out = np.minimum((tile - _RF) // _ST + 1, n_out)
    starts = []
    for n, m in zip(n_out, m_out):
        s = list(range(0, int(n - m) + 1, int(m)))
        if s[-1] != n - m:
            s.append(int(n - m))
        starts.append(s)
    plan = []
    for o in itertools.product(*starts):
        o = np.asarray(o)
        in_start = o * _ST
        in_stop = in_start + (m_out - 1) * _ST + _RF
        plan.append((tuple(slice(int(a), int(b)) for a, b in zip(in_start, in_stop)),
                     tuple(slice(int(a), int(a + m)) for a, m in zip(o, m_out))))
    return plan


def auto_tile_shape(volume_shape, *, max_tile_voxels=2 ** 21):
    """The input tile shape ``screen_volume(tile_shape="auto")`` uses: the whole volume if it
    has at most ``max_tile_voxels`` voxels, else the tile found by halving the map extent of
    the axis with the largest input extent until the input tile fits (3 ints, z, y, x)."""
    if not isinstance(max_tile_voxels, (int, np.integer)) or isinstance(max_tile_voxels, bool) \
            or max_tile_voxels < 1:
        raise ValueError(f"max_tile_voxels must be a positive int; got {max_tile_voxels!r}")
    vol = np.asarray(volume_shape, dtype=np.int64)
    if vol.shape != (3,) or np.any(vol < _RF):
        raise ValueError(f"volume_shape must be (z, y, x) of at least {RECEPTIVE_FIELD}; "
                         f"got {tuple(volume_shape)}")
    m = np.asarray(_map_shape(vol))
    while True:
        size = (m - 1) * _ST + _RF
        if np.prod(size) <= max_tile_voxels or np.all(m == 1):
            return tuple(int(s) for s in size)
        axis = int(np.argmax(np.where(m > 1, size, -1)))
        m[axis] = (m[axis] + 1) // 2


def screen_volume(model, volume, *, tile_shape="auto", max_tile_voxels=2 ** 21,
                  batch_size=1):
    """Stage-1 probability map of a whole volume, tiled exactly when needed.

    Parameters
    ----------
    model : keras.Model
        Stage-1 network (:func:`~keras_medseg.nodule3d.models.build_candidate_screening`)
        with spatial input ``(None, None, None)`` or at least the tile shape.
    volume : array_like, (z, y, x) or (z, y, x, channels)
        Resampled, normalised volume (the model's preprocessing); not modified. Each spatial
        axis must be at least :data:`RECEPTIVE_FIELD`.
    tile_shape : "auto", None or 3 ints
        Input tile shape (z, y, x). None: one pass over the whole volume. ``"auto"``: one
        pass when the volume has at most ``max_tile_voxels`` voxels, else the largest tiles
        under that size.
    max_tile_voxels : int
        Budget of ``"auto"`` in input voxels per tile (C1 alone holds 32 float32 values
        per input voxel: 256 MiB at the default 2**21).
    batch_size : int
        Tiles per forward pass.

    Returns
    -------
    ScreeningResult
    """
    vol = np.asarray(volume)
    if vol.ndim == 3:
        vol = vol[..., None]
    if vol.ndim != 4:
        raise ValueError(f"volume must be (z, y, x) or (z, y, x, channels); got shape "
                         f"{np.shape(volume)}")
    if vol.dtype.kind not in "biuf":
        raise ValueError(f"volume must be numeric; got dtype {vol.dtype}")
    if np.any(np.asarray(vol.shape[:3]) < _RF):
        raise ValueError(f"volume spatial shape {vol.shape[:3]} is smaller than the "
                         f"receptive field {RECEPTIVE_FIELD} (z, y, x)")
    channels = model.inputs[0].shape[-1]
    if channels is not None and vol.shape[-1] != channels:
        raise ValueError(f"volume has {vol.shape[-1]} channels; the model takes {channels}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if tile_shape is None:
        tile = vol.shape[:3]
    elif isinstance(tile_shape, str):
        if tile_shape != "auto":
            raise ValueError(f"tile_shape must be 'auto', None or 3 ints; got {tile_shape!r}")
        tile = auto_tile_shape(vol.shape[:3], max_tile_voxels=max_tile_voxels)
    else:
        tile = tile_shape
    vol = vol.astype(np.float32, copy=False)
    plan = plan_tiles(vol.shape[:3], tile)
    n_out = _map_shape(vol.shape[:3])
    out = None
    for i in range(0, len(plan), batch_size):
        chunk = plan[i:i + batch_size]
        x = np.stack([vol[s_in] for s_in, _ in chunk])
        y = _predict(model, x)
        if out is None:
            out = np.empty(n_out + (y.shape[-1],), dtype=np.float32)
        for (_, s_out), y_tile in zip(chunk, y):
            out[s_out] = y_tile
    centres = [np.arange(n, dtype=np.int64) * s + o
               for n, s, o in zip(n_out, STRIDE, CENTRE_OFFSET)]
    return ScreeningResult(out, *centres)


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32, copy=False)


def boxes_from_probability_map(probabilities, *, score_threshold=0.25, iou_threshold=0.5,
                               max_proposals=20, roi_size=(25, 60, 60)):
    """Candidate boxes from a stage-1 probability map (NumPy, evaluation path).

    Each map position is a candidate centred on ``index * STRIDE + CENTRE_OFFSET`` with
    label ``argmax`` and score the label's probability; candidates with ``label != 0`` and
    ``score > score_threshold`` go through class-agnostic greedy NMS (boxes of
    ``roi_size``, a box is suppressed by a higher-scoring pick when their IoU exceeds
    ``iou_threshold``; equal scores are taken in flat map order).

    Parameters
    ----------
    probabilities : array_like, (d, h, w, classes)
    max_proposals : int or None
        Keep at most this many (None: all survivors).
    roi_size : 3 ints
        Box size (z, y, x).

    Returns
    -------
    Proposals
    """
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[-1] < 2:
        raise ValueError(f"probabilities must be (d, h, w, classes >= 2); got shape {p.shape}")
    score_threshold = _fraction(score_threshold, "score_threshold")
    iou_threshold = _fraction(iou_threshold, "iou_threshold")
    roi = np.asarray(_int_triple(roi_size, "roi_size"), dtype=np.float64)
    if max_proposals is not None and (not isinstance(max_proposals, (int, np.integer))
                                      or isinstance(max_proposals, bool) or max_proposals < 1):
        raise ValueError(f"max_proposals must be a positive int or None; got {max_proposals!r}")
    flat = p.reshape(-1, p.shape[-1])
    labels = np.argmax(flat, axis=1)
    scores = flat[np.arange(flat.shape[0]), labels]
    cand = np.flatnonzero((labels != 0) & (scores > score_threshold))
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    idx = np.stack(np.unravel_index(cand, p.shape[:3]), axis=1).astype(np.int64)
    centres = idx * _ST + np.asarray(CENTRE_OFFSET)
    alive = np.ones(len(cand), dtype=bool)
    picks = []
    volume = float(np.prod(roi))
    limit = len(cand) if max_proposals is None else int(max_proposals)
    pos = 0
    while len(picks) < limit:
        while pos < len(cand) and not alive[pos]:
            pos += 1
        if pos >= len(cand):
            break
        picks.append(pos)
        alive[pos] = False
        rest = np.flatnonzero(alive)
        inter = np.prod(np.maximum(roi - np.abs(centres[rest] - centres[pos]), 0.0), axis=1)
        alive[rest[inter / (2.0 * volume - inter) > iou_threshold]] = False
    picks = np.asarray(picks, dtype=np.int64)
    c = centres[picks]
    start = c - (roi // 2)
    boxes = np.concatenate([start, start + roi], axis=1) if len(picks) else np.zeros((0, 6))
    return Proposals(boxes.astype(np.float64), scores[cand[picks]].astype(np.float32),
                     labels[cand[picks]].astype(np.int64), c, idx[picks])
