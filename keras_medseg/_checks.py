"""Shared argument validation (scikit-image style): every check raises ``ValueError``
naming the argument and what was received."""
from __future__ import annotations

import numbers

import numpy as np


def check_shape_equality(a, b, *, names=("y_true", "y_pred")):
    """Raise unless ``a`` and ``b`` have the same shape."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; "
            f"got {names[0]}.shape={a.shape} and {names[1]}.shape={b.shape}"
        )
    return a, b


def check_nd(array, ndims, *, name):
    """Raise unless ``array.ndim`` is in ``ndims`` (an int or a tuple of ints)."""
    array = np.asarray(array)
    allowed = (ndims,) if isinstance(ndims, numbers.Integral) else tuple(ndims)
    if array.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions; "
                         f"got shape {array.shape}")
    return array


def as_binary_mask(mask, *, name):
    """Return ``mask`` as a boolean array; raise if it holds values other than 0/1."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric or boolean mask; got dtype {mask.dtype}")
    if mask.size and mask.dtype.kind == "f" and not np.all(np.isfinite(mask)):
        raise ValueError(f"{name} must be a binary mask; it contains NaN or inf")
    values = np.unique(mask)
    if not np.all(np.isin(values, (0, 1))):
        shown = values[:6].tolist()
        raise ValueError(f"{name} must be binary (0/1 or bool); got values {shown}"
                         f"{' ...' if values.size > 6 else ''}. Pass labels= for label maps.")
    return mask.astype(bool)


def check_spacing(spacing, ndim, *, name="spacing"):
    """Return spacing as a float64 array of length ``ndim`` (1.0 each when None)."""
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    if isinstance(spacing, numbers.Number):
        spacing = [spacing] * ndim
    try:
        arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of {ndim} positive numbers; got {spacing!r}")
    if arr.size != ndim:
        raise ValueError(f"{name} must have one value per spatial axis ({ndim}); got {spacing!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite; got {spacing!r}")
    return arr


def check_choice(value, choices, *, name):
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices, key=repr)}; got {value!r}")
    return value


def check_positive(value, *, name, allow_zero=False):
    """Raise unless ``value`` is a positive (or non-negative) finite number."""
    if not isinstance(value, numbers.Number) or isinstance(value, bool) or not np.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} number; got {value!r}")
    return value
