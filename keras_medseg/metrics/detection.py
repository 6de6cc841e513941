"""Lesion detection metrics: hit test, FROC and CPM (LUNA16 protocol), recall at a score
threshold and average precision.

Input format
------------
Scans are given either as a sequence with one entry per scan (index = scan number) or as a
mapping ``scan_id -> entry``; the same form for ``candidates``, ``lesions`` and
``irrelevant``. A scan missing from a mapping (or an empty entry) has no items; every scan
up to ``num_scans`` counts in the false positives per scan.

* one scan's candidates: an array_like (n, 4) of rows ``(c0, c1, c2, score)`` with the
  centre in mm, or a sequence of mappings ``{"centre": (3,), "score": float}``;
* one scan's lesions (and irrelevant lesions): an array_like (m, 4) of rows
  ``(c0, c1, c2, diameter)`` in mm, or a sequence of mappings
  ``{"centre": (3,), "diameter": float}``.

The centre's axis order does not matter as long as candidates and lesions use the same.

Hit rule (LUNA16 ``noduleCADEvaluation``)
-----------------------------------------
A candidate hits a lesion when the squared distance of their centres is below
``(diameter / 2) ** 2``. A lesion is detected when any candidate hits it, with the highest
score among its hits (several hits count once). A candidate that hits no lesion is a false
positive, except that candidates hitting an ``irrelevant`` lesion (LUNA16's excluded
annotations) are neither hits nor false positives. A candidate hitting two lesions counts
for both, as in LUNA16.

FROC and CPM
------------
With ``P`` the highest scores of the detected lesions, ``N`` the false-positive scores,
``L`` the number of lesions and ``S`` the number of scans, the curve is the ROC of ``P``
against ``N`` (:func:`sklearn.metrics.roc_curve`) rescaled as LUNA16 does:
``fps = fpr * len(N) / S`` and ``sensitivity = tpr * len(P) / L`` (lesions never hit keep
the sensitivity below 1). When there is no false positive, ``fps`` is 0 everywhere. The
sensitivity at each FP rate is ``numpy.interp(rate, fps, sensitivity)``: linear
interpolation between the curve's corner points, the last (highest) value where the curve
jumps at ``rate``, and the final sensitivity beyond the curve's last FP rate. LUNA16 reads
the same interpolant off a grid of 10001 points on [1/8, 8]; we evaluate it exactly at the
rates. CPM is the mean over the rates (1/8, 1/4, 1/2, 1, 2, 4, 8 by default).

References
----------
* A. A. A. Setio et al., "Validation, comparison, and combination of algorithms for
  automatic detection of pulmonary nodules in CT images: the LUNA16 challenge",
  Med. Image Anal. 42, 2017.
* M. Everingham et al., "The PASCAL Visual Object Classes challenge", IJCV 88, 2010
  (average precision).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

__all__ = [
    "LUNA16_FP_RATES",
    "FROCResult",
    "RecallResult",
    "froc",
    "recall_at_threshold",
    "average_precision",
]

LUNA16_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class FROCResult(NamedTuple):
    """Result of :func:`froc`.

    Attributes
    ----------
    fp_rates : ndarray (k,)
        The average false positives per scan the sensitivities are read at.
    sensitivities : ndarray (k,)
        Interpolated sensitivity at each FP rate (NaN when there are no lesions).
    cpm : float
        Mean of ``sensitivities`` (competition performance metric).
    fps, sensitivity, thresholds : ndarray (c,)
        The FROC curve's corner points: false positives per scan, sensitivity and the score
        threshold (candidates with ``score >= threshold``) of each point.
    num_lesions, num_detected, num_false_positives, num_scans : int
        Relevant lesions, lesions hit by any candidate, false-positive candidates, scans.
    bootstrap : dict or None
        With ``bootstrap > 0``: ``"mean"``, ``"lower"``, ``"upper"`` (ndarrays (k,), the mean
        and the 2.5th/97.5th percentiles of the resampled sensitivities at each FP rate),
        ``"cpm_lower"``, ``"cpm_upper"`` and ``"num_resamples"``.
    """

    fp_rates: np.ndarray
    sensitivities: np.ndarray
    cpm: float
    fps: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    num_lesions: int
    num_detected: int
    num_false_positives: int
    num_scans: int
    bootstrap: dict | None


class RecallResult(NamedTuple):
    """Result of :func:`recall_at_threshold` (convnet3d's report).

    ``recall`` (detected / lesions, NaN without lesions), ``fps_per_scan``, and the counts
    ``num_detected``, ``num_lesions``, ``num_false_positives``, ``num_scans``."""

    recall: float
    fps_per_scan: float
    num_detected: int
    num_lesions: int
    num_false_positives: int
    num_scans: int


# --------------------------------------------------------------------------------------------
# parsing


def _check_num_scans(num_scans):
    if (not isinstance(num_scans, numbers.Integral) or isinstance(num_scans, bool)
            or num_scans < 1):
        raise ValueError(f"num_scans must be a positive integer; got {num_scans!r}")
    return int(num_scans)


def _parse_rows(entry, value_key, *, name):
    """One scan's entry -> (centres (n, 3), values (n,)) as float64."""
    if entry is None:
        return np.zeros((0, 3)), np.zeros(0)
    as_mappings = (not isinstance(entry, np.ndarray) and len(entry) > 0
                   and isinstance(entry[0], Mapping))
    if not as_mappings:
        try:
            arr = np.asarray(entry, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} entries must be arrays (n, 4) or lists of mappings with "
                             f"'centre' and '{value_key}'; got {entry!r}")
        if arr.size == 0:
            return np.zeros((0, 3)), np.zeros(0)
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(f"{name} entries must have shape (n, 4) "
                             f"(c0, c1, c2, {value_key}); got shape {arr.shape}")
        centres, values = arr[:, :3], arr[:, 3]
    else:
        try:
            centres = np.array([np.asarray(item["centre"], dtype=np.float64) for item in entry])
            values = np.array([float(item[value_key]) for item in entry])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{name} items must be mappings with 'centre' (3 numbers) and "
                             f"'{value_key}'; got {entry!r}")
        if centres.ndim != 2 or centres.shape[1] != 3:
            raise ValueError(f"{name} centres must have 3 coordinates; got {centres.shape}")
    if not (np.all(np.isfinite(centres)) and np.all(np.isfinite(values))):
        raise ValueError(f"{name} holds NaN or inf")
    if value_key == "diameter" and np.any(values <= 0):
        raise ValueError(f"{name} diameters must be positive; got {values[values <= 0][:5]}")
    return centres, values


def _per_scan(table, num_scans, value_key, *, name):
    """A sequence or ``scan_id``-keyed mapping -> list of ``num_scans`` (centres, values)."""
    empty = (np.zeros((0, 3)), np.zeros(0))
    if table is None:
        return [empty] * num_scans
    if isinstance(table, Mapping):
        if len(table) > num_scans:
            raise ValueError(f"{name} has {len(table)} scans but num_scans={num_scans}")
        return [_parse_rows(v, value_key, name=name) for v in table.values()] + \
            [empty] * (num_scans - len(table))
    if isinstance(table, (str, bytes)):
        raise ValueError(f"{name} must be a sequence or mapping of scans; got {table!r}")
    table = list(table)
    if len(table) != num_scans:
        raise ValueError(f"{name} must have one entry per scan (num_scans={num_scans}); "
                         f"got {len(table)}")
    return [_parse_rows(v, value_key, name=name) for v in table]


def _parse(candidates, lesions, irrelevant, num_scans):
    """Align the three tables by scan; per scan return
    (candidate centres, scores, lesion centres, diameters, irrelevant centres, diameters)."""
    num_scans = _check_num_scans(num_scans)
    tables = [candidates, lesions, irrelevant]
    mappings = [t for t in tables if isinstance(t, Mapping)]
    if mappings and len(mappings) != sum(t is not None for t in tables):
        raise ValueError("candidates, lesions and irrelevant must all be sequences or all be "
                         "scan_id-keyed mappings")
    if mappings:
        ids = list(dict.fromkeys(k for t in mappings for k in t))
        if len(ids) > num_scans:
            raise ValueError(f"the tables name {len(ids)} scans but num_scans={num_scans}")
        tables = [None if t is None else {k: t.get(k) for k in ids} for t in tables]
    cands = _per_scan(tables[0], num_scans, "score", name="candidates")
    les = _per_scan(tables[1], num_scans, "diameter", name="lesions")
    irr = _per_scan(tables[2], num_scans, "diameter", name="irrelevant")
    return [(c[0], c[1], l[0], l[1], i[0], i[1]) for c, l, i in zip(cands, les, irr)], num_scans


def _hits(cand_centres, centres, diameters):
    """Boolean (n_candidates, n_lesions): squared centre distance < (diameter / 2) ** 2."""
    if len(cand_centres) == 0 or len(centres) == 0:
        return np.zeros((len(cand_centres), len(centres)), dtype=bool)
    d2 = np.sum((cand_centres[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    return d2 < (diameters[None, :] / 2.0) ** 2


def _scan_outcome(scan):
    """(best score of each lesion or -inf when missed, false-positive scores) of one scan."""
    cand, scores, les, diam, irr, irr_d = scan
    hits = _hits(cand, les, diam)
    best = np.where(hits, scores[:, None], -np.inf).max(axis=0) if len(cand) else \
        np.full(len(les), -np.inf)
    on_any = hits.any(axis=1) | _hits(cand, irr, irr_d).any(axis=1)
    return best, scores[~on_any]


# --------------------------------------------------------------------------------------------
# FROC


def _froc_curve(best, fp_scores, num_lesions, num_scans):
    """LUNA16 curve (fps, sensitivity, thresholds) from per-lesion best scores."""
    from sklearn.metrics import roc_curve

    detected = best[np.isfinite(best)]
    if num_lesions == 0:
        return np.zeros(1), np.full(1, np.nan), np.full(1, np.inf)
    if len(detected) == 0 or len(fp_scores) == 0:
        # roc_curve needs both classes; count directly (LUNA16: no FP -> fps are all 0).
        thresholds = np.r_[np.inf, np.unique(np.r_[detected, fp_scores])[::-1]]
        fps = np.count_nonzero(fp_scores[None, :] >= thresholds[:, None], axis=1) / num_scans
        sens = np.count_nonzero(detected[None, :] >= thresholds[:, None], axis=1) / num_lesions
        return fps, sens, thresholds
    y = np.r_[np.ones(len(detected)), np.zeros(len(fp_scores))]
    fpr, tpr, thresholds = roc_curve(y, np.r_[detected, fp_scores])
    fps = fpr * len(fp_scores) / num_scans
    return fps, tpr * len(detected) / num_lesions, thresholds


def _froc_from_outcomes(outcomes, num_scans, fp_rates):
    best = np.concatenate([o[0] for o in outcomes]) if outcomes else np.zeros(0)
    fp_scores = np.concatenate([o[1] for o in outcomes]) if outcomes else np.zeros(0)
    fps, sens, thresholds = _froc_curve(best, fp_scores, len(best), num_scans)
    at_rates = (np.interp(fp_rates, fps, sens) if len(best) else np.full(len(fp_rates), np.nan))
    return at_rates, (fps, sens, thresholds, best, fp_scores)


def froc(candidates, lesions, num_scans, *, irrelevant=None, fp_rates=LUNA16_FP_RATES,
         bootstrap=0, seed=0):
    """FROC curve, sensitivities at fixed FP rates and CPM (LUNA16 protocol).

    Parameters
    ----------
    candidates : sequence or mapping
        Per scan, the detections ``(c0, c1, c2, score)`` in mm (module docstring).
    lesions : sequence or mapping
        Per scan, the reference lesions ``(c0, c1, c2, diameter)`` in mm.
    num_scans : int
        Number of scans (the false-positive divisor; scans without entries count).
    irrelevant : sequence or mapping, optional
        Per scan, lesions whose hits are ignored (neither hits nor false positives).
    fp_rates : sequence of float
        False positives per scan to read the sensitivity at (positive, increasing).
    bootstrap : int
        Number of bootstrap resamples of the scans (with replacement); 0 for none.
        LUNA16 uses 1000.
    seed : int
        Seed of the bootstrap's ``numpy.random.default_rng``.

    Returns
    -------
    FROCResult

    Raises
    ------
    ValueError
        For malformed tables (wrong shape, missing keys, non-positive diameters, NaN), a
        number of scans that does not match, bad ``fp_rates`` or ``bootstrap``.

    Examples
    --------
    >>> lesions = [[[10.0, 10.0, 10.0, 6.0]], []]
    >>> candidates = [[[11.0, 10.0, 10.0, 0.9], [40.0, 0.0, 0.0, 0.5]], [[5.0, 5.0, 5.0, 0.2]]]
    >>> float(froc(candidates, lesions, 2).cpm)
    1.0
    """
    fp_rates = np.asarray(fp_rates, dtype=np.float64).reshape(-1)
    if fp_rates.size == 0 or not np.all(np.isfinite(fp_rates)) or np.any(fp_rates <= 0) \
            or np.any(np.diff(fp_rates) <= 0):
        raise ValueError(f"fp_rates must be positive and increasing; got {fp_rates.tolist()}")
    if not isinstance(bootstrap, numbers.Integral) or isinstance(bootstrap, bool) \
            or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer; got {bootstrap!r}")
    scans, num_scans = _parse(candidates, lesions, irrelevant, num_scans)
    outcomes = [_scan_outcome(s) for s in scans]
    at_rates, (fps, sens, thresholds, best, fp_scores) = _froc_from_outcomes(
        outcomes, num_scans, fp_rates)
    band = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, len(fp_rates)))
        for b in range(bootstrap):
            pick = rng.integers(0, num_scans, num_scans)
            samples[b] = _froc_from_outcomes([outcomes[i] for i in pick], num_scans,
                                             fp_rates)[0]
        cpms = samples.mean(axis=1)
        band = {"mean": np.nanmean(samples, axis=0),
                "lower": np.nanpercentile(samples, 2.5, axis=0),
                "upper": np.nanpercentile(samples, 97.5, axis=0),
                "cpm_lower": float(np.nanpercentile(cpms, 2.5)),
                "cpm_upper": float(np.nanpercentile(cpms, 97.5)),
                "num_resamples": int(bootstrap)}
    return FROCResult(fp_rates=fp_rates, sensitivities=at_rates,
                      cpm=float(np.mean(at_rates)), fps=fps, sensitivity=sens,
                      thresholds=thresholds, num_lesions=len(best),
                      num_detected=int(np.count_nonzero(np.isfinite(best))),
                      num_false_positives=len(fp_scores), num_scans=num_scans, bootstrap=band)


def recall_at_threshold(candidates, lesions, num_scans, *, threshold, irrelevant=None):
    """Recall and false positives per scan of the candidates with ``score >= threshold``.

    Parameters
    ----------
    candidates, lesions, num_scans, irrelevant
        As in :func:`froc`.
    threshold : float
        Score threshold; candidates below it are discarded first.

    Returns
    -------
    RecallResult

    Raises
    ------
    ValueError
        As :func:`froc`, and for a non-finite ``threshold``.
    """
    if not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    scans, num_scans = _parse(candidates, lesions, irrelevant, num_scans)
    detected = lesions_total = false_pos = 0
    for cand, scores, les, diam, irr, irr_d in scans:
        keep = scores >= threshold
        best, fp_scores = _scan_outcome((cand[keep], scores[keep], les, diam, irr, irr_d))
        detected += int(np.count_nonzero(np.isfinite(best)))
        lesions_total += len(best)
        false_pos += len(fp_scores)
    recall = detected / lesions_total if lesions_total else float("nan")
    return RecallResult(recall=float(recall), fps_per_scan=false_pos / num_scans,
                        num_detected=detected, num_lesions=lesions_total,
                        num_false_positives=false_pos, num_scans=num_scans)


def average_precision(candidates, lesions, *, irrelevant=None):
    """VOC-style average precision of the candidates ranked by SCORE.

    All candidates of all scans are ranked by descending score (ties keep their input
    order). Going down the ranking, a candidate is a true positive when the nearest lesion
    it hits is not yet claimed (it then claims it); a candidate hitting a claimed lesion or
    none is a false positive, unless it hits an ``irrelevant`` lesion, in which case it is
    ignored. AP is the area under the precision envelope (VOC 2010+ all-point
    interpolation): precision made non-increasing from the right, integrated over recall.

    Parameters
    ----------
    candidates, lesions, irrelevant
        As in :func:`froc` (sequences, or ``scan_id``-keyed mappings).

    Returns
    -------
    float
        AP in [0, 1]; NaN when there are no lesions, 0 when there are no candidates.

    Raises
    ------
    ValueError
        For malformed tables, or sequences of different lengths.
    """
    if isinstance(candidates, Mapping) or isinstance(lesions, Mapping):
        keys = set(candidates) | set(lesions) | (set(irrelevant) if isinstance(irrelevant, Mapping)
                                                  else set())
        num_scans = max(len(keys), 1)
    else:
        num_scans = len(candidates)
        for name, table in (("lesions", lesions), ("irrelevant", irrelevant)):
            if table is not None and len(table) != num_scans:
                raise ValueError(f"{name} must have one entry per scan of candidates "
                                 f"({num_scans}); got {len(table)}")
    scans, _ = _parse(candidates, lesions, irrelevant, num_scans)
    num_lesions = sum(len(s[2]) for s in scans)
    if num_lesions == 0:
        return float("nan")
    ranked = []  # (score, order, scan, candidate index)
    for s, (cand, scores, *_rest) in enumerate(scans):
        ranked.extend((-scores[i], len(ranked), s, i) for i in range(len(scores)))
    ranked.sort()
    claimed = [np.zeros(len(s[2]), dtype=bool) for s in scans]
    flags = []  # 1 true positive, 0 false positive
    for _neg, _order, s, i in ranked:
        cand, _scores, les, diam, irr, irr_d = scans[s]
        point = cand[i:i + 1]
        hits = _hits(point, les, diam)[0]
        on_irrelevant = bool(_hits(point, irr, irr_d).any())
        if hits.any():
            dist = np.sum((les - point) ** 2, axis=1)
            nearest = int(np.flatnonzero(hits)[np.argmin(dist[hits])])
            if not claimed[s][nearest]:
                claimed[s][nearest] = True
                flags.append(1)
                continue
        if not on_irrelevant:
            flags.append(0)
    if not flags:
        return 0.0
    flags = np.asarray(flags, dtype=np.float64)
    tp = np.cumsum(flags)
    recall = tp / num_lesions
    precision = tp / np.arange(1, len(flags) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
