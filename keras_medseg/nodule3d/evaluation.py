"""Whole-volume evaluation of the two-stage nodule3d detector: FROC, CPM, recall.

Detection of one resampled, normalised volume (:func:`detect_volume`):

1. stage 1 screens the whole volume (:func:`keras_medseg.nodule3d.screening.screen_volume`,
   exact tiling when large);
2. candidates: map positions whose class is not background with score above
   ``screening_threshold``, greedy 3D NMS of ``roi_size`` boxes at ``iou_threshold``, the
   ``max_candidates`` best (:func:`~keras_medseg.nodule3d.screening.boxes_from_probability_map`);
3. stage 2 classifies a crop of its input size centred on every candidate (voxels outside
   the volume take ``pad_value``); a candidate's score is its largest non-background
   stage-2 probability (``score="cascade"``: times its stage-1 probability;
   ``score="odds"``: the two stages' odds multiplied, ``p1 p2 / (p1 p2 + q1 q2)`` with ``q``
   the background probabilities, computed in log space and float64). With a
   regression head and ``use_regression``, the decoded lesion centre replaces the candidate
   centre.

Scoring (:func:`evaluate_detections`) uses :mod:`keras_medseg.metrics.detection`: a
candidate hits a lesion when its centre lies strictly within the lesion's radius (in mm),
one hit per lesion; recall and false positives per scan at score thresholds, the FROC
curve, the sensitivities at the seven LUNA16 rates (1/8 .. 8 FPs/scan), their mean (CPM) and
a bootstrap band over scans. (convnet3d's hit test was inverted: it counted detections
FARTHER than the radius as hits.)

Files of :func:`evaluate_series` (one fold) and :func:`pool_evaluations` (all folds)::

    candidates.csv   scan,series,z,y,x (mm, resampled grid),score,stage1_score,label
    lesions.csv      scan,series,z,y,x (mm),d (mm)
    froc.csv/.md     sensitivity at each FP rate, CPM, bootstrap band
    recall.csv/.md   recall and FPs/scan at score thresholds
    froc.png         FROC curve with the band
    metrics.json     everything above as numbers
    folds.csv/.md    (pooled only) one row per fold
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import scipy.special

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.io.tables import group_by_series, read_series_csv
from keras_medseg.io.volumes import NODULE3D_MEAN
from keras_medseg.metrics import LUNA16_FP_RATES, froc, recall_at_threshold
from keras_medseg.nodule3d.data import load_series
from keras_medseg.nodule3d.losses import decode_regression
from keras_medseg.nodule3d.models import _load_model
from keras_medseg.nodule3d.screening import boxes_from_probability_map, screen_volume
from keras_medseg.utils import (markdown_table, new_figure, save_figure, write_csv, write_json,
                                write_text)

__all__ = [
    "EvalConfig", "Detections", "EvaluationReport", "crop_patches", "detect_volume",
    "evaluate_detections", "evaluate_series", "pool_evaluations", "plot_froc",
    "write_report", "read_candidates", "read_lesions", "odds_score",
]

# The normalised value of air (HU -1000 windowed to 0, minus the mean): crop padding.
AIR = -float(NODULE3D_MEAN)


# Candidate scores of EvalConfig.score.
SCORES = ("stage2", "cascade", "odds")


@dataclasses.dataclass
class EvalConfig:
    """Detection and scoring settings (the full detector's defaults)."""

    screening_threshold: float = dataclasses.field(
        default=0.25, metadata={"help": "stage-1 score a candidate must exceed"})
    iou_threshold: float = dataclasses.field(default=0.5, metadata={"help": "3D NMS IoU"})
    max_candidates: int = dataclasses.field(
        default=100, metadata={"help": "candidates per scan after NMS (top-k)"})
    roi_size: tuple[int, ...] = dataclasses.field(
        default=(25, 60, 60), metadata={"help": "NMS box (z, y, x)"})
    score: str = dataclasses.field(default="stage2", metadata={
        "choices": SCORES,
        "help": "candidate score: stage2 (the paper), cascade (stage-1 x stage-2 "
                "probability) or odds (stage-1 x stage-2 odds, as a probability)"})
    use_regression: bool = dataclasses.field(
        default=False, metadata={"help": "move candidates to the regressed centre"})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "stage-2 crops per pass"})
    recall_thresholds: tuple[float, ...] = (0.05, 0.5, 0.9)
    bootstrap: int = dataclasses.field(default=1000, metadata={"help": "FROC resamples"})
    seed: int = 0
    max_tile_voxels: int = dataclasses.field(
        default=2 ** 21, metadata={"help": "stage-1 tile budget (input voxels)"})

    def __post_init__(self):
        for name in ("screening_threshold", "iou_threshold"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1]; got {v!r}")
        check_positive(self.max_candidates, name="max_candidates")
        check_choice(self.score, SCORES, name="score")
        check_positive(self.batch_size, name="batch_size")
        check_positive(self.bootstrap, name="bootstrap", allow_zero=True)
        if len(self.roi_size) != 3 or any(int(s) < 1 for s in self.roi_size):
            raise ValueError(f"roi_size must be 3 positive ints; got {self.roi_size!r}")


class Detections(NamedTuple):
    """Detections of one volume, by descending ``scores``.

    centres (n, 3) float64 voxels (z, y, x) of the resampled volume; scores (n,) float32
    (stage 2; float64 with ``score="odds"``); stage1_scores (n,) float32; labels (n,) int64
    (class ids != 0); diameters (n,) float64 voxels (NaN without regression)."""

    centres: np.ndarray
    scores: np.ndarray
    stage1_scores: np.ndarray
    labels: np.ndarray
    diameters: np.ndarray


class EvaluationReport(NamedTuple):
    """:func:`evaluate_detections`' result: the FROC (``keras_medseg.metrics.FROCResult``),
    ``recall`` rows (threshold, recall, fps_per_scan, detected, lesions, false_positives)
    and ``froc_rows`` (one per FP rate plus the CPM row)."""

    froc: object
    recall: list
    froc_rows: list


def crop_patches(volume, centres, size, *, pad_value=AIR):
    """Crops of ``size`` centred on integer ``centres`` (``start = c - size // 2``).

    Parameters
    ----------
    volume : array_like, (z, y, x)
    centres : array_like, (n, 3)
        Rounded to the nearest voxel.
    size : 3 ints
    pad_value : float
        Value of crop voxels outside the volume.

    Returns
    -------
    numpy.ndarray, (n, *size), float32
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x); got shape {vol.shape}")
    c = np.floor(np.asarray(centres, dtype=np.float64).reshape(-1, 3) + 0.5).astype(np.int64)
    size = np.asarray(size, dtype=np.int64)
    if size.shape != (3,) or np.any(size < 1):
        raise ValueError(f"size must be 3 positive ints; got {size.tolist()}")
    out = np.full((len(c),) + tuple(int(s) for s in size), pad_value, dtype=np.float32)
    shape = np.asarray(vol.shape)
    for i, ci in enumerate(c):
        start = ci - size // 2
        lo = np.maximum(start, 0)
        hi = np.minimum(start + size, shape)
        if np.any(hi <= lo):
            continue
        src = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
        out[i][dst] = vol[src]
    return out


def _stage2_outputs(fp_model, crops, batch_size):
    probs, regs = [], []
    for i in range(0, len(crops), batch_size):
        y = fp_model(crops[i:i + batch_size, ..., None], training=False)
        if isinstance(y, dict):
            probs.append(keras.ops.convert_to_numpy(y["classification"]))
            regs.append(keras.ops.convert_to_numpy(y["regression"]))
        else:
            probs.append(keras.ops.convert_to_numpy(y))
    p = np.concatenate(probs).astype(np.float32)
    return p, (np.concatenate(regs).astype(np.float64) if regs else None)


def odds_score(p1, q1, p2, q2):
    """Posterior of two independent stages: ``p1 p2 / (p1 p2 + q1 q2)`` (float64).

    ``p`` is a stage's probability of the candidate's class and ``q`` its background
    probability; the log-odds of the stages add (a naive-Bayes combination with equal class
    priors). Computed from ``q`` directly and in log space, so a stage-1 probability that
    rounds to 1 in float32 still ranks by its background probability; only posteriors within
    about 1e-16 of 1 tie.
    """
    tiny = np.finfo(np.float64).tiny
    f = [np.maximum(np.asarray(a, dtype=np.float64), tiny) for a in (p1, q1, p2, q2)]
    logit = np.log(f[0]) - np.log(f[1]) + np.log(f[2]) - np.log(f[3])
    return scipy.special.expit(logit)


def detect_volume(screening_model, fp_model, volume, *, config=None, pad_value=AIR):
    """Two-stage detection on one resampled, normalised volume (module docstring).

    Parameters
    ----------
    screening_model : keras.Model
        Stage 1 with spatial input ``(None, None, None)``.
    fp_model : keras.Model or None
        Stage 2 (fixed input size, classification or ``{"classification", "regression"}``
        outputs). None scores candidates with stage 1 alone.
    volume : array_like, (z, y, x)
    config : EvalConfig, optional

    Returns
    -------
    Detections
    """
    cfg = EvalConfig() if config is None else config
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x); got shape {vol.shape}")
    result = screen_volume(screening_model, vol, max_tile_voxels=cfg.max_tile_voxels)
    prop = boxes_from_probability_map(result.probabilities,
                                      score_threshold=cfg.screening_threshold,
                                      iou_threshold=cfg.iou_threshold,
                                      max_proposals=cfg.max_candidates,
                                      roi_size=tuple(int(s) for s in cfg.roi_size))
    centres = prop.centres.astype(np.float64)
    n = len(centres)
    diam = np.full(n, np.nan)
    if fp_model is None or n == 0:
        return Detections(centres, prop.scores.copy(), prop.scores, prop.labels, diam)
    size = tuple(int(s) for s in fp_model.inputs[0].shape[1:4])
    crops = crop_patches(vol, centres, size, pad_value=pad_value)
    p, reg = _stage2_outputs(fp_model, crops, cfg.batch_size)
    fg = p[:, 1:]
    labels = np.argmax(fg, axis=1) + 1
    scores = fg[np.arange(n), labels - 1].astype(np.float32)
    if cfg.score == "cascade":
        scores = scores * prop.scores.astype(np.float32)
    elif cfg.score == "odds":
        mi = prop.map_indices
        q1 = result.probabilities[mi[:, 0], mi[:, 1], mi[:, 2], 0]
        scores = odds_score(prop.scores, q1, scores, p[:, 0])
    if reg is not None:
        rel, diam = decode_regression(reg, patch_size=size)
        if cfg.use_regression:
            start = np.floor(centres + 0.5) - np.asarray(size) // 2
            centres = start + rel
    order = np.argsort(-scores, kind="stable")
    return Detections(centres[order], scores[order], prop.scores[order], labels[order],
                      diam[order])


def _froc_rows(result):
    band = result.bootstrap
    rows = []
    for i, (r, s) in enumerate(zip(result.fp_rates, result.sensitivities)):
        row = {"fps_per_scan": float(r), "sensitivity": float(s)}
        if band:
            row.update(lower=float(band["lower"][i]), upper=float(band["upper"][i]))
        rows.append(row)
    cpm = {"fps_per_scan": "CPM", "sensitivity": float(result.cpm)}
    if band:
        cpm.update(lower=band["cpm_lower"], upper=band["cpm_upper"])
    rows.append(cpm)
    return rows


def evaluate_detections(candidates, lesions, num_scans, *, thresholds=(0.05, 0.5, 0.9),
                        fp_rates=LUNA16_FP_RATES, bootstrap=0, seed=0):
    """Score detections against lesions: FROC/CPM and recall at thresholds.

    Parameters
    ----------
    candidates : sequence of array_like (n_i, 4)
        Per scan ``(z, y, x, score)`` in mm.
    lesions : sequence of array_like (m_i, 4)
        Per scan ``(z, y, x, diameter)`` in mm.
    num_scans : int
    thresholds : sequence of float
        Score thresholds of the recall table (``score >= threshold``).
    fp_rates, bootstrap, seed
        As :func:`keras_medseg.metrics.froc`.

    Returns
    -------
    EvaluationReport
    """
    result = froc(candidates, lesions, num_scans, fp_rates=fp_rates, bootstrap=bootstrap,
                  seed=seed)
    recall = []
    for t in thresholds:
        r = recall_at_threshold(candidates, lesions, num_scans, threshold=float(t))
        recall.append(dict(threshold=float(t), recall=r.recall, fps_per_scan=r.fps_per_scan,
                           detected=r.num_detected, lesions=r.num_lesions,
                           false_positives=r.num_false_positives))
    return EvaluationReport(result, recall, _froc_rows(result))


def plot_froc(result, path, *, title="FROC"):
    """FROC curve (log FP axis), the LUNA16 points and the bootstrap band; returns the path."""
    fig = new_figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    fps = np.maximum(np.asarray(result.fps, dtype=np.float64), 1e-3)
    ax.step(fps, result.sensitivity, where="post", label=f"FROC (CPM {result.cpm:.3f})")
    if result.bootstrap:
        ax.fill_between(result.fp_rates, result.bootstrap["lower"], result.bootstrap["upper"],
                        alpha=0.3, label="bootstrap 95% band")
    ax.plot(result.fp_rates, result.sensitivities, "o", label="LUNA16 FP rates")
    ax.set_xscale("log")
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("average false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def write_report(report, out_dir, *, title="FROC"):
    """Write froc.csv/.md, recall.csv/.md, froc.png and metrics.json of an
    :class:`EvaluationReport` into ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    write_csv(out / "froc.csv", report.froc_rows)
    write_csv(out / "recall.csv", report.recall)
    write_text(out / "froc.md", markdown_table(report.froc_rows))
    write_text(out / "recall.md", markdown_table(report.recall))
    plot_froc(report.froc, out / "froc.png", title=title)
    r = report.froc
    write_json(out / "metrics.json", dict(
        cpm=r.cpm, fp_rates=r.fp_rates, sensitivities=r.sensitivities,
        num_lesions=r.num_lesions, num_detected=r.num_detected,
        num_false_positives=r.num_false_positives, num_scans=r.num_scans,
        bootstrap=r.bootstrap, recall=report.recall))
    return out


def evaluate_series(screening_model, fp_model, series_csv, out_dir, *, cache_dir, config=None,
                    spacing=1.0, progress=False):
    """Detect on every series of a series CSV (e.g. a fold's test side) and score it.

    Lesions are mapped to the resampled grid; coordinates are reported in mm of that grid
    (index times the resampled spacing). Series without lesions count as scans.

    Parameters
    ----------
    screening_model, fp_model : keras.Model or path-like
        Stage 1 and stage 2 (``.keras`` files are loaded); ``fp_model`` may be None.
    series_csv : path-like
    out_dir : path-like
        Where the files of the module docstring go.
    cache_dir : path-like
        Resampled-volume cache (:func:`keras_medseg.nodule3d.data.load_series`).
    config : EvalConfig, optional
    spacing : float
        Resampled voxel size (mm).
    progress : bool

    Returns
    -------
    EvaluationReport
    """
    from tqdm.auto import tqdm

    cfg = EvalConfig() if config is None else config
    s1 = _load_model(screening_model)
    s2 = _load_model(fp_model) if fp_model is not None else None
    by_series = group_by_series(read_series_csv(series_csv))
    cand_rows, lesion_rows = [], []
    for scan, (path, rows) in enumerate(tqdm(by_series.items(), disable=not progress,
                                             desc="evaluate", unit="series")):
        series = load_series(path, cache_dir, spacing=spacing)
        sp = np.asarray(series.spacing, dtype=np.float64)
        det = detect_volume(s1, s2, series.array, config=cfg)
        for c, s, s1s, lab in zip(det.centres, det.scores, det.stage1_scores, det.labels):
            mm = c * sp
            cand_rows.append(dict(scan=scan, series=path, z=mm[0], y=mm[1], x=mm[2],
                                  score=float(s), stage1_score=float(s1s), label=int(lab)))
        for r in rows:
            mm = np.asarray(series.to_resampled(r.xyz)) * sp
            d = r.diameter if r.diameter is not None else float("nan")
            lesion_rows.append(dict(scan=scan, series=path, z=mm[0], y=mm[1], x=mm[2], d=d))
    out = Path(out_dir)
    write_csv(out / "candidates.csv", cand_rows,
              ["scan", "series", "z", "y", "x", "score", "stage1_score", "label"])
    write_csv(out / "lesions.csv", lesion_rows, ["scan", "series", "z", "y", "x", "d"])
    return _score_files(out, len(by_series), cfg, title=f"FROC ({Path(series_csv).name})")


def read_candidates(path):
    """Rows of a ``candidates.csv`` as dicts (numbers as float, scan as int)."""
    return _read(path, ("scan", "series", "z", "y", "x", "score"))


def read_lesions(path):
    """Rows of a ``lesions.csv`` as dicts."""
    return _read(path, ("scan", "series", "z", "y", "x", "d"))


def _read(path, needed):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(needed) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                out = {k: (v if k == "series" else float(v)) for k, v in row.items()}
            except ValueError:
                raise ValueError(f"{path}: line {i}: non-numeric value") from None
            out["scan"] = int(out["scan"])
            rows.append(out)
    return rows


def _tables(cands, lesions, num_scans):
    c = [np.zeros((0, 4)) for _ in range(num_scans)]
    m = [np.zeros((0, 4)) for _ in range(num_scans)]
    for key, rows, table in (("score", cands, c), ("d", lesions, m)):
        by = {}
        for r in rows:
            if key == "d" and not math.isfinite(r["d"]):
                raise ValueError(f"lesion of {r['series']} has no diameter; the hit test needs "
                                 "one")
            by.setdefault(r["scan"], []).append([r["z"], r["y"], r["x"], r[key]])
        for s, v in by.items():
            table[s] = np.asarray(v, dtype=np.float64)
    return c, m


def _score_files(out, num_scans, cfg, *, title):
    cands = read_candidates(out / "candidates.csv")
    lesions = read_lesions(out / "lesions.csv")
    c, m = _tables(cands, lesions, num_scans)
    report = evaluate_detections(c, m, num_scans, thresholds=cfg.recall_thresholds,
                                 bootstrap=cfg.bootstrap, seed=cfg.seed)
    write_report(report, out, title=title)
    return report


def pool_evaluations(fold_dirs, out_dir, *, config=None):
    """Pool per-fold evaluations: one FROC over all folds' scans plus a per-fold table.

    Parameters
    ----------
    fold_dirs : mapping fold -> path-like, or sequence of path-like
        Folders written by :func:`evaluate_series`.
    out_dir : path-like
    config : EvalConfig, optional
        Recall thresholds and bootstrap settings.

    Returns
    -------
    EvaluationReport
        Of the pooled scans; ``out_dir`` also gets ``folds.csv`` / ``folds.md``.
    """
    import json

    cfg = EvalConfig() if config is None else config
    items = list(fold_dirs.items()) if hasattr(fold_dirs, "items") else list(enumerate(fold_dirs))
    if not items:
        raise ValueError("fold_dirs is empty")
    all_c, all_l, fold_rows, offset = [], [], [], 0
    for fold, d in items:
        d = Path(d)
        cands, lesions = read_candidates(d / "candidates.csv"), read_lesions(d / "lesions.csv")
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        n = int(metrics["num_scans"])
        all_c += [dict(r, scan=r["scan"] + offset) for r in cands]
        all_l += [dict(r, scan=r["scan"] + offset) for r in lesions]
        offset += n
        row = dict(fold=fold, scans=n, lesions=metrics["num_lesions"],
                   detected=metrics["num_detected"], cpm=metrics["cpm"])
        for rate, s in zip(metrics["fp_rates"], metrics["sensitivities"]):
            row[f"sens@{rate:g}"] = s
        fold_rows.append(row)
    out = Path(out_dir)
    write_csv(out / "candidates.csv", all_c,
              ["scan", "series", "z", "y", "x", "score", "stage1_score", "label"])
    write_csv(out / "lesions.csv", all_l, ["scan", "series", "z", "y", "x", "d"])
    report = _score_files(out, offset, cfg, title="FROC (pooled folds)")
    pooled = dict(fold="pooled", scans=offset, lesions=report.froc.num_lesions,
                  detected=report.froc.num_detected, cpm=report.froc.cpm)
    for rate, s in zip(report.froc.fp_rates, report.froc.sensitivities):
        pooled[f"sens@{rate:g}"] = float(s)
    fold_rows.append(pooled)
    write_csv(out / "folds.csv", fold_rows)
    write_text(out / "folds.md", markdown_table(fold_rows))
    return report
