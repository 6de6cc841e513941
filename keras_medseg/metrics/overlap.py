"""Overlap metrics: Dice and IoU per image and per class (numpy).

Conventions
-----------
* Inputs are batched by default: axis 0 indexes images and every other axis is spatial, so
  ``(B, H, W)`` is B 2-D images and ``(B, D, H, W)`` B volumes. Pass ``batched=False`` to
  score a whole array as ONE image (a single ``(H, W)`` slice or ``(D, H, W)`` volume). The
  result always has shape ``(batch, classes)``: ``(B, 1)`` for binary masks, ``(B, K)`` for
  ``K`` labels, and ``(1, ...)`` with ``batched=False``.
* ``labels=None``: the inputs are binary masks (bool, or numbers that are all 0 or 1).
  ``labels=[l1, l2, ...]``: the inputs are integer label maps and label ``l`` is scored as the
  masks ``y_true == l`` and ``y_pred == l`` (background is scored only if listed).
* With ``smooth == 0`` (default) the empty-mask rule of :mod:`keras_medseg.metrics` applies:
  both masks empty -> NaN; exactly one empty -> 0. With ``smooth > 0`` the nerve original's
  smoothed forms are used, which are never NaN (both empty -> 1):
  ``Dice = (2 sum(y p) + s) / (sum(y) + sum(p) + s)`` and
  ``IoU = (sum(y p) + s) / (sum(y) + sum(p) - sum(y p) + s)``.
"""
from __future__ import annotations

import numbers

import numpy as np

from keras_medseg._checks import as_binary_mask, check_positive, check_shape_equality

__all__ = ["compute_dice", "compute_iou"]


def _check_labels(labels):
    if isinstance(labels, (str, bytes)) or np.ndim(labels) != 1:
        raise ValueError(f"labels must be None or a 1-D sequence of integer labels; "
                         f"got {labels!r}")
    values = list(labels)
    if not values:
        raise ValueError("labels must not be empty; pass None for binary masks")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"labels must be integers; got {values!r}")
    if len(set(int(v) for v in values)) != len(values):
        raise ValueError(f"labels must not repeat; got {values!r}")
    return np.asarray(values, dtype=np.int64)


def _as_label_map(array, *, name):
    array = np.asarray(array)
    if array.dtype == bool or array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "f":
        if array.size and (not np.all(np.isfinite(array)) or np.any(array != np.round(array))):
            raise ValueError(f"{name} must be an integer label map when labels= is given; "
                             f"it holds non-integer values")
        return array
    raise ValueError(f"{name} must be an integer label map when labels= is given; "
                     f"got dtype {array.dtype}")


def _overlap_counts(y_true, y_pred, labels, batched):
    """Intersection and the two mask sizes, each int64 of shape (batch, classes)."""
    y_true, y_pred = check_shape_equality(y_true, y_pred)
    if not isinstance(batched, bool):
        raise ValueError(f"batched must be True or False; got {batched!r}")
    min_ndim = 2 if batched else 1
    if y_true.ndim < min_ndim:
        what = "(batch, spatial...)" if batched else "at least one spatial axis"
        raise ValueError(f"y_true and y_pred must have shape {what}; got shape {y_true.shape}"
                         + (" (pass batched=False for a single image)" if batched else ""))
    if y_true.size == 0:
        raise ValueError(f"y_true and y_pred must not be empty arrays; got shape {y_true.shape}")
    if labels is None:
        masks_t = as_binary_mask(y_true, name="y_true")[..., None]
        masks_p = as_binary_mask(y_pred, name="y_pred")[..., None]
    else:
        labels = _check_labels(labels)
        y_true = _as_label_map(y_true, name="y_true")
        y_pred = _as_label_map(y_pred, name="y_pred")
        masks_t = y_true[..., None] == labels
        masks_p = y_pred[..., None] == labels
    batch = masks_t.shape[0] if batched else 1
    masks_t = masks_t.reshape(batch, -1, masks_t.shape[-1])
    masks_p = masks_p.reshape(batch, -1, masks_p.shape[-1])
    inter = np.count_nonzero(masks_t & masks_p, axis=1).astype(np.int64)
    size_t = np.count_nonzero(masks_t, axis=1).astype(np.int64)
    size_p = np.count_nonzero(masks_p, axis=1).astype(np.int64)
    return inter, size_t, size_p


def _ratio(num, den, smooth):
    num = num.astype(np.float64) + smooth
    den = den.astype(np.float64) + smooth
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def compute_dice(y_true, y_pred, *, labels=None, smooth=0.0, batched=True):
    """Dice coefficient ``2|A and B| / (|A| + |B|)`` per image and per class.

    Parameters
    ----------
    y_true, y_pred : array-like, same shape (B, spatial...) (or (spatial...) with
        ``batched=False``)
        Binary masks (bool or 0/1 numbers) when ``labels`` is None, else integer label maps
        (integer, bool or integer-valued float dtype).
    labels : sequence of int, optional
        Labels to score one by one (distinct integers, e.g. ``[1, 2, 3]``).
    smooth : float, optional
        Additive smoothing ``s >= 0`` of numerator and denominator (the nerve original used
        1e-15 for evaluation, the DoubleU-Net original 1); 0 (default) applies the empty-mask
        rule.
    batched : bool, optional
        True (default): axis 0 indexes images. False: the whole array is one image.

    Returns
    -------
    ndarray of float64, shape (batch, classes)
        ``classes`` is 1 for binary masks, ``len(labels)`` otherwise; ``batch`` is 1 when
        ``batched=False``. NaN where both masks are empty (``smooth == 0`` only).

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are empty or have too few axes (``y_true`` names
        the problem), masks are not binary (``labels=None``), label maps are not integer,
        ``labels`` is empty, repeats a label or holds non-integers, ``smooth`` is negative or
        not finite, or ``batched`` is not a bool.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 0]])
    >>> b = np.array([[1, 0, 0, 0]])
    >>> compute_dice(a, b)
    array([[0.66666667]])
    >>> compute_dice(np.zeros((2, 2)), np.zeros((2, 2)), batched=False)
    array([[nan]])
    """
    check_positive(smooth, name="smooth", allow_zero=True)
    inter, size_t, size_p = _overlap_counts(y_true, y_pred, labels, batched)
    return _ratio(2 * inter, size_t + size_p, float(smooth))


def compute_iou(y_true, y_pred, *, labels=None, smooth=0.0, batched=True):
    """Intersection over union (Jaccard index) ``|A and B| / |A or B|`` per image and class.

    Same arguments, result shape, empty-mask rule and errors as :func:`compute_dice`; with
    ``smooth = s > 0`` it is ``(|A and B| + s) / (|A| + |B| - |A and B| + s)``. For every
    pair of masks ``Dice = 2 IoU / (1 + IoU)`` (``smooth == 0``).

    Examples
    --------
    >>> compute_iou(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 1]]))
    array([[0.33333333]])
    """
    check_positive(smooth, name="smooth", allow_zero=True)
    inter, size_t, size_p = _overlap_counts(y_true, y_pred, labels, batched)
    return _ratio(inter, size_t + size_p - inter, float(smooth))
