"""In-graph overlap metrics and losses for training (``keras.ops`` only: any Keras backend).

* :class:`DiceCoefficient` and :class:`IoU` are streaming ``keras.metrics.Metric``\\ s: they
  accumulate the intersection ``sum(t p)`` and the sums ``sum(t)``, ``sum(p)`` over every
  batch since the last reset and report ``(2 I + s) / (T + P + s)`` and
  ``(I + s) / (T + P - I + s)`` for the pooled counts (the "global" Dice of all pixels seen,
  not a mean of per-image values; :func:`keras_medseg.metrics.compute_dice` gives those).
  With ``smooth == 0`` and nothing in either mask the result is NaN (the empty-mask rule).
* :func:`dice_loss` and :func:`bce_dice_loss` are the DoubleU-Net original's losses: one soft
  Dice over the whole batch (all pixels, all channels), ``1 - Dice``, plus the mean binary
  cross-entropy. Being batch-level, they return a scalar and ignore per-sample weights.

Input conventions
-----------------
``y_true`` must hold 0/1 values (binary masks or one-hot) or integer labels (sparse, with
``class_id``); ``y_pred`` must hold probabilities (apply a sigmoid / softmax to logits first).

* ``class_id=None`` (binary): ``y_true`` and ``y_pred`` have the same shape, except that
  either may carry one extra trailing axis of size 1 (``(B, H, W)`` against
  ``(B, H, W, 1)``). Multi-channel arrays are pooled over all channels.
* ``class_id=k`` (one class of a multi-channel output ``y_pred`` of shape ``(..., C)``):
  the prediction is channel ``k``; ``y_true`` is one-hot ``(..., C)`` (channel ``k`` taken)
  or sparse labels ``(...)`` / ``(..., 1)`` (``y_true == k``). When ``y_true``'s last axis
  equals ``C`` it is read as one-hot.
* ``threshold=t`` binarises the prediction as ``p >= t`` (default 0.5);
  ``threshold=None`` uses the probabilities as they are (soft Dice / IoU).
* ``sample_weight`` (optional) is broadcast from the leading axes and weights every pixel.
"""
from __future__ import annotations

import numbers

import keras
from keras import ops

__all__ = ["DiceCoefficient", "IoU", "bce_dice_loss", "dice_loss"]


def _static_shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def _check_compatible(t, p, *, what):
    st, sp = _static_shape(t), _static_shape(p)
    if len(st) != len(sp) or any(a is not None and b is not None and a != b
                                 for a, b in zip(st, sp)):
        raise ValueError(f"y_true and y_pred must have compatible shapes {what}; got "
                         f"y_true.shape={st} and y_pred.shape={sp}")


def _align_binary(y_true, y_pred):
    """Drop one trailing size-1 axis from whichever side has one more axis."""
    rt, rp = len(y_true.shape), len(y_pred.shape)
    if rt == rp - 1 and y_pred.shape[-1] == 1:
        y_pred = ops.squeeze(y_pred, axis=-1)
    elif rp == rt - 1 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    _check_compatible(y_true, y_pred, what="(up to a trailing axis of size 1)")
    return y_true, y_pred


def _select_class(y_true, y_pred, class_id, dtype):
    """(mask of class ``class_id`` in y_true, channel ``class_id`` of y_pred)."""
    if len(y_pred.shape) < 2:
        raise ValueError(f"y_pred must have a trailing class axis when class_id is given; "
                         f"got y_pred.shape={_static_shape(y_pred)}")
    channels = y_pred.shape[-1]
    if channels is not None and class_id >= channels:
        raise ValueError(f"class_id={class_id} is out of range for y_pred with {channels} "
                         f"channels (shape {_static_shape(y_pred)})")
    pred = y_pred[..., class_id]
    rt, rp = len(y_true.shape), len(y_pred.shape)
    if rt == rp and y_true.shape[-1] == channels:
        true = ops.cast(y_true[..., class_id], dtype)
    else:
        if rt == rp and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
        elif rt != rp - 1:
            raise ValueError(f"y_true must be one-hot (..., C) or sparse labels (...) or "
                             f"(..., 1) for y_pred of shape (..., C); got "
                             f"y_true.shape={_static_shape(y_true)} and "
                             f"y_pred.shape={_static_shape(y_pred)}")
        true = ops.cast(ops.equal(ops.cast(y_true, "int32"), class_id), dtype)
    _check_compatible(true, pred, what="(after selecting class_id)")
    return true, pred


def _check_smooth(smooth):
    if not isinstance(smooth, numbers.Real) or isinstance(smooth, bool) or smooth < 0 \
            or smooth != smooth or smooth == float("inf"):
        raise ValueError(f"smooth must be a non-negative finite number; got {smooth!r}")
    return float(smooth)


class _OverlapMetric(keras.metrics.Metric):
    """Accumulates ``sum(t p)``, ``sum(t)`` and ``sum(p)``; subclasses define the ratio."""

    def __init__(self, *, threshold=0.5, class_id=None, smooth=0.0, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if threshold is not None and (not isinstance(threshold, numbers.Real)
                                      or isinstance(threshold, bool)
                                      or not 0.0 < threshold < 1.0):
            raise ValueError(f"threshold must be None or a number in (0, 1); got {threshold!r}")
        if class_id is not None and (not isinstance(class_id, numbers.Integral)
                                     or isinstance(class_id, bool) or class_id < 0):
            raise ValueError(f"class_id must be None or a non-negative integer; "
                             f"got {class_id!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.class_id = None if class_id is None else int(class_id)
        self.smooth = _check_smooth(smooth)
        self.intersection = self.add_variable(shape=(), initializer="zeros",
                                              name="intersection")
        self.true_sum = self.add_variable(shape=(), initializer="zeros", name="true_sum")
        self.pred_sum = self.add_variable(shape=(), initializer="zeros", name="pred_sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        y_true = ops.convert_to_tensor(y_true)
        if self.class_id is None:
            y_true, y_pred = _align_binary(ops.cast(y_true, self.dtype), y_pred)
        else:
            y_true, y_pred = _select_class(y_true, y_pred, self.class_id, self.dtype)
        if self.threshold is not None:
            y_pred = ops.cast(ops.greater_equal(y_pred, self.threshold), self.dtype)
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            while len(weight.shape) < len(y_true.shape):
                weight = ops.expand_dims(weight, axis=-1)
            weight = ops.broadcast_to(weight, ops.shape(y_true))
        else:
            weight = ops.ones_like(y_true)
        self.intersection.assign_add(ops.sum(weight * y_true * y_pred))
        self.true_sum.assign_add(ops.sum(weight * y_true))
        self.pred_sum.assign_add(ops.sum(weight * y_pred))

    def _ratio(self, numerator, denominator):
        safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
        return ops.where(denominator > 0, numerator / safe,
                         ops.full_like(denominator, float("nan")))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "class_id": self.class_id, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="keras_medseg")
class DiceCoefficient(_OverlapMetric):
    """Streaming Dice ``(2 I + s) / (T + P + s)`` over all batches since the last reset.

    Parameters
    ----------
    threshold : float in (0, 1) or None, optional
        Binarise predictions as ``y_pred >= threshold`` (default 0.5); None: soft Dice.
    class_id : int, optional
        Score channel ``class_id`` of a multi-channel ``y_pred`` against one-hot or sparse
        ``y_true`` (see the module docstring); None (default): binary inputs.
    smooth : float, optional
        Additive smoothing ``s >= 0``; 0 (default) gives NaN when both masks are empty.
    name, dtype : optional
        As for ``keras.metrics.Metric`` (default name ``"dice"``).

    Raises
    ------
    ValueError
        At construction for a bad ``threshold``, ``class_id`` or ``smooth``; in
        ``update_state`` for incompatible static shapes or ``class_id`` >= the channel count.

    Examples
    --------
    >>> m = DiceCoefficient()
    >>> m.update_state([[1, 1, 0, 0]], [[0.9, 0.2, 0.1, 0.0]])
    >>> float(m.result())  # doctest: +ELLIPSIS
    0.666...
    """

    def __init__(self, *, threshold=0.5, class_id=None, smooth=0.0, name="dice", dtype=None):
        super().__init__(threshold=threshold, class_id=class_id, smooth=smooth, name=name,
                         dtype=dtype)

    def result(self):
        return self._ratio(2.0 * self.intersection + self.smooth,
                           self.true_sum + self.pred_sum + self.smooth)


@keras.saving.register_keras_serializable(package="keras_medseg")
class IoU(_OverlapMetric):
    """Streaming IoU ``(I + s) / (T + P - I + s)`` over all batches since the last reset.

    Same parameters, input conventions and errors as :class:`DiceCoefficient` (default name
    ``"iou"``).

    Examples
    --------
    >>> m = IoU()
    >>> m.update_state([[1, 1, 0, 0]], [[0.9, 0.2, 0.1, 0.8]])
    >>> float(m.result())  # doctest: +ELLIPSIS
    0.333...
    """

    def __init__(self, *, threshold=0.5, class_id=None, smooth=0.0, name="iou", dtype=None):
        super().__init__(threshold=threshold, class_id=class_id, smooth=smooth, name=name,
                         dtype=dtype)

    def result(self):
        return self._ratio(self.intersection + self.smooth,
                           self.true_sum + self.pred_sum - self.intersection + self.smooth)


def _soft_dice(y_true, y_pred, smooth):
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    y_true, y_pred = _align_binary(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    return (2.0 * intersection + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package="keras_medseg")
def dice_loss(y_true, y_pred, smooth=1.0):
    """``1 - (2 sum(y p) + s) / (sum(y) + sum(p) + s)`` over the whole batch (a scalar).

    Parameters
    ----------
    y_true : tensor of 0/1 values, shape like ``y_pred`` (up to one trailing axis of size 1)
    y_pred : tensor of probabilities
    smooth : float, optional
        ``s >= 0`` (default 1, as the DoubleU-Net original).

    Raises
    ------
    ValueError
        If the static shapes are incompatible or ``smooth`` is negative or not finite.
    """
    smooth = _check_smooth(smooth)
    return 1.0 - _soft_dice(y_true, y_pred, smooth)


@keras.saving.register_keras_serializable(package="keras_medseg")
def bce_dice_loss(y_true, y_pred, smooth=1.0):
    """The DoubleU-Net original's loss: mean binary cross-entropy + :func:`dice_loss`.

    The cross-entropy clips probabilities to ``[eps, 1 - eps]`` (``keras.config.epsilon()``),
    as Keras does. Same arguments and errors as :func:`dice_loss`; returns a scalar.
    """
    smooth = _check_smooth(smooth)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    y_true, y_pred = _align_binary(y_true, y_pred)
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred))
    return bce + 1.0 - _soft_dice(y_true, y_pred, smooth)
