"""NaN-aware aggregation: mean, standard error and 95% confidence interval.

The nerve original reported every per-image metric as mean, SEM and the 95% confidence
interval of the mean from the t distribution with n-1 degrees of freedom; :func:`summarize`
does the same and skips NaNs (undefined values, e.g. Dice of two empty masks), reporting how
many it skipped. Infinite values (e.g. a distance to an empty mask) are kept: they make the
mean infinite and the SEM and interval NaN, which is the honest answer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Summary", "summarize", "summarize_per_class"]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Summary of one set of values.

    Attributes
    ----------
    n : int
        Number of values used (NaNs excluded).
    n_nan : int
        Number of NaN values skipped.
    mean : float
        Mean of the used values (NaN when ``n == 0``).
    sem : float
        Standard error of the mean, ``std(ddof=1) / sqrt(n)`` (NaN when ``n < 2``).
    ci95_low, ci95_high : float
        ``mean -/+ t_{0.975, n-1} * sem`` (NaN when ``n < 2``).
    """

    n: int
    n_nan: int
    mean: float
    sem: float
    ci95_low: float
    ci95_high: float

    def as_dict(self):
        """The fields as a plain dict."""
        return dataclasses.asdict(self)

    def __str__(self):
        return (f"{self.mean:.4f} (SEM {self.sem:.4f}, 95% CI [{self.ci95_low:.4f}, "
                f"{self.ci95_high:.4f}], n={self.n}, skipped NaN={self.n_nan})")


def _as_float_array(values, *, name):
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {type(values).__name__}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric (bool, int or float); got dtype {arr.dtype}")
    return arr.astype(np.float64)


def summarize(values):
    """Mean, SEM and 95% t confidence interval of ``values``, skipping NaNs.

    Parameters
    ----------
    values : array-like of numbers, any shape
        Flattened before summarising.

    Returns
    -------
    Summary

    Raises
    ------
    ValueError
        If ``values`` is not numeric.

    Examples
    --------
    >>> s = summarize([1.0, 2.0, 3.0, np.nan])
    >>> s.n, s.n_nan, s.mean, round(s.sem, 4)
    (3, 1, 2.0, 0.5774)
    """
    from scipy import stats

    arr = _as_float_array(values, name="values").ravel()
    nan = np.isnan(arr)
    used = arr[~nan]
    n = int(used.size)
    mean = float(used.mean()) if n else float("nan")
    if n >= 2:
        with np.errstate(invalid="ignore"):
            sem = float(used.std(ddof=1) / np.sqrt(n))
            half = float(stats.t.ppf(0.975, n - 1) * sem)
        low, high = mean - half, mean + half
    else:
        sem = low = high = float("nan")
    return Summary(n=n, n_nan=int(nan.sum()), mean=mean, sem=sem, ci95_low=low, ci95_high=high)


def summarize_per_class(values, *, class_names=None):
    """:func:`summarize` each column of a (batch, classes) array (as returned by
    :func:`~keras_medseg.metrics.compute_dice`).

    Parameters
    ----------
    values : array-like of numbers, shape (batch, classes)
    class_names : sequence of str, optional
        One name per column; default ``"0"``, ``"1"``, ...

    Returns
    -------
    dict
        ``{class_name: Summary}`` in column order.

    Raises
    ------
    ValueError
        If ``values`` is not numeric or not 2-D, or ``class_names`` does not hold one unique
        string per column.
    """
    arr = _as_float_array(values, name="values")
    if arr.ndim != 2:
        raise ValueError(f"values must have shape (batch, classes); got shape {arr.shape}")
    if class_names is None:
        names = [str(k) for k in range(arr.shape[1])]
    else:
        if isinstance(class_names, str):
            raise ValueError(f"class_names must be a sequence of strings; got {class_names!r}")
        names = list(class_names)
        if len(names) != arr.shape[1] or len(set(names)) != len(names) \
                or not all(isinstance(c, str) for c in names):
            raise ValueError(f"class_names must hold {arr.shape[1]} unique strings (one per "
                             f"column of values); got {class_names!r}")
    return {name: summarize(arr[:, k]) for k, name in enumerate(names)}
