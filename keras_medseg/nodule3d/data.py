"""The nodule3d data workflow: k-fold series files, resampled-volume cache, stage-1 and
stage-2 training patches, positive-only augmentation and a Keras batch generator.

This is convnet3d's CSV pipeline (``kfoldCV_dataset.py``) as package functions:

1. :func:`make_kfold` splits a series CSV by series (grouped, seeded) into
   ``kfold_series<f>_train.csv`` / ``kfold_series<f>_test.csv`` for ``f = 0 .. k - 1``.
2. :func:`load_series` reads a series, resamples it to 1 mm isotropic (linear), applies
   the HU window (level 80, width 600, to [0, 255]) minus 60.039 and caches the result as
   ``.npy`` + ``.json`` (atomic; reused while the source file is unchanged).
   :meth:`ResampledSeries.to_resampled` maps lesion voxel indices of the series as stored to
   the resampled grid through physical coordinates.
3. :func:`make_stage1_patches`: (15, 30, 30) (z, y, x) patches: each lesion centred, plus 4
   copies jittered by integers in [-5, 5] per axis, plus 3x as many random negatives whose
   patch box does not touch any lesion sphere; patches crossing the volume border are dropped.
4. :func:`make_stage2_patches`: (25, 60, 60) patches: positives again centred + 4 jittered;
   false positives mined with the stage-1 model over the training series (score > 0.8, NMS)
   until there are at least 3 x 5 x (number of lesions).
5. :func:`augment_patch` and :class:`PatchDataset` (a ``keras.utils.PyDataset``) feed
   training, augmenting positives only.

Conventions
-----------
Arrays are ``(z, y, x)``; CSV coordinates are ``x, y, z`` (as the original wrote them).
A patch of size ``s`` centred on the integer voxel ``c`` is ``volume[c - s // 2 : c - s // 2
+ s]`` (so ``patch[s // 2] == volume[c]``), the convention of
:mod:`keras_medseg.nodule3d.models`. Patches are saved as float32 ``.npy`` of the
normalised volume. The patch CSV is the original's ``/path/patch.npy,class,x,y,z,d,
/path/to/series`` with ``x, y, z`` the patch centre in the RESAMPLED series; ``d`` (mm) is
written for positives (the original left it empty) and empty for negatives.

Output layout under ``out_dir``::

    resampled/<series key>.npy, .json          cache of normalised 1 mm volumes
    patches/stage1_<settings hash>/<series key>/{op,rp,ng}_<i>.npy, done.json
    patches/stage2_<settings hash>/<series key>/{op,rp,fp}_<i>.npy, done.json
    kfold_patches<f>_detection_<phase>.csv, kfold_patches<f>_reduction_train.csv

``op`` marks an original positive, ``rp`` a jittered copy, ``ng`` a random negative and
``fp`` a mined false positive. A series folder is keyed by the settings (seed, sizes,
ratios, model weights), so a rerun with the same settings skips every finished series (its
``done.json`` lists the rows) and every patch file already written: interrupted runs resume.

Deviations from the original
----------------------------
* Random negatives are rejected when their box touches a lesion sphere (diameter ``d``;
  ``default_diameter`` when the CSV has none); the original did not check.
* Sampling is seeded per series (from ``seed`` and the series path), so results do not depend
  on the order or subset of series processed; the original used the global NumPy state.
* Stage-2 mining screens the whole volume at once (exact fully-convolutional map of
  :func:`keras_medseg.nodule3d.screening.screen_volume`) instead of non-overlapping
  (25, 60, 60) windows, which missed candidates near window edges; and positives of ALL
  training series are written, not only of the series visited before the FP quota was met.
* The number of negatives is 3x the positives actually kept (after border dropping).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import warnings
import zlib
from pathlib import Path

import keras
import numpy as np

from keras_medseg.io.splits import kfold
from keras_medseg.io.tables import (PatchRow, TableError, group_by_series,
                                    read_class_mapping, read_patch_csv, read_series_csv,
                                    write_class_mapping, write_patch_csv, write_series_csv)
from keras_medseg.io.volumes import (NODULE3D_MEAN, nodule3d_normalize, read_volume,
                                     resample_isotropic)
from keras_medseg.nodule3d.models import _load_model
from keras_medseg.utils import atomic_path, write_json

__all__ = [
    "STAGE1_PATCH", "STAGE2_PATCH", "ResampledSeries", "PatchSample", "make_kfold",
    "kfold_file_names", "load_series", "series_key", "patch_box", "extract_patch",
    "box_touches_sphere", "plan_positives", "plan_negatives", "make_stage1_patches",
    "make_stage2_patches", "mine_false_positives", "screening_candidates",
    "augment_patch", "PatchDataset", "check_out_dir", "default_patch_csv_name",
]

STAGE1_PATCH = (15, 30, 30)
STAGE2_PATCH = (25, 60, 60)
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------- helpers
def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_size(size, name):
    try:
        values = tuple(size)
    except TypeError:
        raise ValueError(f"{name} must be 3 positive integers (z, y, x); got {size!r}") from None
    if len(values) != 3 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                   and v >= 1 for v in values):
        raise ValueError(f"{name} must be 3 positive integers (z, y, x); got {size!r}")
    return tuple(int(v) for v in values)


def _check_fraction(value, name, *, upper=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or not 0 <= value <= upper:
        raise ValueError(f"{name} must be a number in [0, {upper}]; got {value!r}")
    return float(value)


def _rng(seed, *salt):
    return np.random.default_rng([int(seed), *(int(s) for s in salt)])


def _crc(text):
    return zlib.crc32(str(text).encode("utf-8"))


def _settings_hash(settings):
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def check_out_dir(out_dir, inputs):
    """Refuse to write into an input folder.

    Parameters
    ----------
    out_dir : path-like
    inputs : iterable of path-like
        Input files or folders (CSV files, series files, DICOM folders); the folder holding
        each of them (for a folder: the folder itself) is an input folder.

    Returns
    -------
    pathlib.Path
        ``out_dir`` resolved.

    Raises
    ------
    ValueError
        If ``out_dir`` is one of the input folders.
    """
    out = Path(out_dir).resolve()
    for p in inputs:
        p = Path(p).resolve()
        folder = p if p.is_dir() else p.parent
        if out == folder:
            raise ValueError(f"out_dir {str(out_dir)!r} is the folder of the input {str(p)!r}; "
                             f"choose another output folder (inputs are never overwritten)")
    return out


# ----------------------------------------------------------------------------- k-fold
def kfold_file_names(fold):
    """``("kfold_series<fold>_train.csv", "kfold_series<fold>_test.csv")``."""
    return f"kfold_series{fold}_train.csv", f"kfold_series{fold}_test.csv"


def make_kfold(series_csv, out_dir, *, k=5, seed=0, classes=None):
    """Grouped, seeded k-fold split of a series CSV (convnet3d's ``makeKFold``).

    Every row of a series goes to the same side (groups are the CSV's ``group`` column);
    fold ``f`` writes ``kfold_series<f>_train.csv`` and ``kfold_series<f>_test.csv`` in the
    series CSV format with absolute series paths. The test sides of the ``k`` folds are
    disjoint and cover every row. The files depend only on the input and ``seed``, so a
    rerun rewrites identical files.

    Parameters
    ----------
    series_csv : path-like
    out_dir : path-like
        Output folder; must not be the folder of ``series_csv``.
    k : int
        Number of folds, >= 2 and at most the number of series.
    seed : int
        Non-negative seed of :func:`keras_medseg.io.splits.kfold`.
    classes : mapping or collection of str, optional
        Known class names, checked while reading.

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        ``(train, test)`` files per fold.

    Raises
    ------
    ValueError
        For a bad ``k`` or ``seed``, an ``out_dir`` equal to the input folder, or (as
        :class:`~keras_medseg.io.tables.TableError`) a series listed under two groups.
    """
    series_csv = Path(series_csv)
    rows = read_series_csv(series_csv, classes=classes)
    out = check_out_dir(out_dir, [series_csv])
    k = _check_int(k, "k", 2)
    owner = {}
    for r in rows:
        if owner.setdefault(r.path, r.group) != r.group:
            raise TableError(f"{series_csv}: line {r.line}: series {r.path!r} is listed under "
                             f"groups {owner[r.path]!r} and {r.group!r}; one series, one group")
    folds = kfold(len(rows), k, seed=seed, groups=[r.group for r in rows])
    written = []
    for f, split in enumerate(folds):
        train_name, test_name = kfold_file_names(f)
        train = write_series_csv(out / train_name, [rows[i] for i in split.train])
        test = write_series_csv(out / test_name, [rows[i] for i in split.val])
        written.append((train, test))
    return written


def default_patch_csv_name(series_csv, stage):
    """The patch-CSV name for a series CSV: ``kfold_series<f>_<phase>.csv`` becomes
    ``kfold_patches<f>_detection_<phase>.csv`` (stage 1) or ``..._reduction_<phase>.csv``
    (stage 2), as in the original; any other ``<name>.csv`` becomes
    ``<name>_patches_stage<stage>.csv``."""
    stage = _check_stage(stage)
    name = Path(series_csv).name
    what = "detection" if stage == 1 else "reduction"
    m = re.fullmatch(r"kfold_series(\d+)_(train|test)(\.csv)?", name)
    if m:
        return f"kfold_patches{m.group(1)}_{what}_{m.group(2)}.csv"
    stem = name[:-4] if name.lower().endswith(".csv") else name
    return f"{stem}_patches_stage{stage}.csv"


def _check_stage(stage):
    if stage not in (1, 2) or isinstance(stage, bool):
        raise ValueError(f"stage must be 1 or 2; got {stage!r}")
    return int(stage)


# ----------------------------------------------------------------------------- volumes
@dataclasses.dataclass(frozen=True, eq=False)
class ResampledSeries:
    """A series resampled to 1 mm and normalised, with the geometry to map lesions.

    Attributes
    ----------
    path : str
        The source series.
    array : numpy.ndarray, (z, y, x), float32
        HU window (80, 600) to [0, 255] minus 60.039 (:func:`nodule3d_normalize`).
    spacing : tuple of 3 float
        Resampled voxel size in mm, array order.
    source_affine, affine : numpy.ndarray, (4, 4)
        Homogeneous array index ``(k, j, i, 1)`` -> physical ``(x, y, z, 1)`` (LPS mm) of
        the series as stored and of the resampled grid (:attr:`keras_medseg.io.volumes.Volume.affine`).
    """

    path: str
    array: np.ndarray
    spacing: tuple
    source_affine: np.ndarray
    affine: np.ndarray

    @property
    def shape(self):
        return self.array.shape

    def to_resampled(self, xyz):
        """Map voxel indices ``(x, y, z)`` of the stored series to resampled ``(z, y, x)``.

        The index goes to physical coordinates with the stored geometry and back with the
        resampled one, so the mapping is exact for any spacing, origin and direction.

        Parameters
        ----------
        xyz : array_like, (..., 3)
            ``x, y, z`` as in the series CSV (zero-based, x = last array axis).

        Returns
        -------
        numpy.ndarray, (..., 3), float64
            Resampled array indices ``(z, y, x)`` (not rounded).
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim == 0 or xyz.shape[-1] != 3:
            raise ValueError(f"xyz must have a last axis of 3 (x, y, z); got shape {xyz.shape}")
        zyx = xyz[..., ::-1]
        physical = zyx @ self.source_affine[:3, :3].T + self.source_affine[:3, 3]
        inverse = np.linalg.inv(self.affine)
        return physical @ inverse[:3, :3].T + inverse[:3, 3]


def series_key(path):
    """A file-name-safe key of a series path: its name without volume suffixes plus a CRC of
    the absolute path (two series with the same name in different folders differ)."""
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr", ".hdr", ".img", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "series"
    return f"{name[:60]}_{_crc(p.resolve()):08x}"


def _source_stamp(path):
    p = Path(path)
    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    if p.is_file() and p.name.lower().endswith(".mhd"):
        files += [q for q in p.parent.glob(p.stem + ".*") if q != p and q.suffix != ".mhd"]
    stats = [(q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in files]
    return hashlib.sha1(json.dumps(stats).encode("utf-8")).hexdigest()


def load_series(path, cache_dir=None, *, spacing=1.0, level=80, width=600,
                mean=NODULE3D_MEAN):
    """Read a series, resample it (linear) and normalise it; cache the result.

    Parameters
    ----------
    path : path-like
        Any volume :func:`keras_medseg.io.volumes.read_volume` reads (NIfTI, NRRD, MetaImage,
        Analyze, DICOM file or series folder), 3D.
    cache_dir : path-like, optional
        Folder for ``<series key>.npy`` + ``.json``; the ``.json`` is written last, so only
        finished entries are used. An entry is reused while the settings and the source
        files' names, sizes and modification times are unchanged. None: no cache.
    spacing : float or 3 floats
        Resampled voxel size in mm (default 1 mm isotropic).
    level, width, mean
        HU window and the mean subtracted after it (:func:`nodule3d_normalize`).

    Returns
    -------
    ResampledSeries
    """
    path = Path(path)
    settings = dict(version=_CACHE_VERSION, spacing=np.broadcast_to(
        np.asarray(spacing, dtype=np.float64), (3,)).tolist(), level=level, width=width,
        mean=mean)
    meta_path = npy_path = None
    if cache_dir is not None:
        key = series_key(path)
        npy_path = Path(cache_dir) / f"{key}.npy"
        meta_path = Path(cache_dir) / f"{key}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: series file or folder not found")
        stamp = _source_stamp(path)
        if meta_path.is_file() and npy_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = None
            if meta and meta.get("settings") == settings and meta.get("stamp") == stamp \
                    and meta.get("source") == str(path.resolve()):
                array = np.load(npy_path, mmap_mode="r")
                if tuple(array.shape) == tuple(meta["shape"]):
                    return ResampledSeries(str(path), array, tuple(meta["spacing"]),
                                           np.asarray(meta["source_affine"]),
                                           np.asarray(meta["affine"]))
    source = read_volume(path, ndim=3)
    resampled = resample_isotropic(source, spacing, interpolator="linear",
                                   default_value=float(source.array.min()))
    array = nodule3d_normalize(resampled.array, level=level, width=width, mean=mean)
    result = ResampledSeries(str(path), array, resampled.spacing, source.affine,
                             resampled.affine)
    if cache_dir is not None:
        with atomic_path(npy_path) as tmp:
            np.save(tmp, array)
        write_json(meta_path, dict(settings=settings, stamp=stamp, source=str(path.resolve()),
                                   shape=list(array.shape), spacing=list(resampled.spacing),
                                   source_affine=source.affine.tolist(),
                                   affine=resampled.affine.tolist()))
    return result


# ----------------------------------------------------------------------------- patches
def patch_box(centre, size):
    """``(start, stop)`` int arrays of the patch of ``size`` centred on integer voxel
    ``centre`` (z, y, x): ``start = centre - size // 2``, ``stop = start + size``."""
    c = np.asarray(centre, dtype=np.int64)
    s = np.asarray(size, dtype=np.int64)
    start = c - s // 2
    return start, start + s


def extract_patch(array, centre, size):
    """The patch of ``size`` centred on ``centre`` (z, y, x), or None if it crosses the
    border of ``array``. Returns a float32 copy."""
    start, stop = patch_box(centre, size)
    if np.any(start < 0) or np.any(stop > np.asarray(array.shape[:3])):
        return None
    return np.array(array[tuple(slice(a, b) for a, b in zip(start, stop))], dtype=np.float32)


def box_touches_sphere(start, stop, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """Whether the voxel box ``[start, stop)`` (its voxels' extent ``start - 0.5`` to
    ``stop - 0.5``) comes within ``radius`` mm of the sphere centre ``centre`` (z, y, x,
    voxels, float allowed); touching counts as overlapping.

    Parameters
    ----------
    start, stop : array_like, (3,)
    centre : array_like, (..., 3)
        One or several sphere centres.
    radius : float or array_like, (...,)
        Radii in mm.
    spacing : 3 floats
        Voxel size in mm.

    Returns
    -------
    bool or numpy.ndarray of bool, (...,)
    """
    lo = np.asarray(start, dtype=np.float64) - 0.5
    hi = np.asarray(stop, dtype=np.float64) - 0.5
    c = np.asarray(centre, dtype=np.float64)
    nearest = np.clip(c, lo, hi)
    dist = np.sqrt(np.sum(((nearest - c) * np.asarray(spacing, dtype=np.float64)) ** 2, axis=-1))
    return dist <= np.asarray(radius, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class PatchSample:
    """A planned patch: integer ``centre`` (z, y, x) in the resampled series, ``class_name``,
    ``kind`` (``"op"`` original positive, ``"rp"`` jittered copy, ``"ng"`` random negative,
    ``"fp"`` mined false positive) and lesion ``diameter`` (mm) for positives."""

    centre: tuple
    class_name: str
    kind: str
    diameter: float | None = None


def _inside(centre, size, shape):
    start, stop = patch_box(centre, size)
    return bool(np.all(start >= 0) and np.all(stop <= np.asarray(shape)))


def plan_positives(lesions, shape, size, rng, *, n_jitter=4, max_jitter=5,
                   jitter_in_lesion=False, spacing=(1.0, 1.0, 1.0), default_diameter=10.0):
    """Positive patch centres: each lesion rounded to the nearest voxel, then ``n_jitter``
    copies shifted by integers drawn uniformly from ``[-max_jitter, max_jitter]`` per axis.
    Patches crossing the border of ``shape`` are dropped.

    With ``jitter_in_lesion`` the shift is drawn uniformly from the integer shifts of that
    cube that keep the copy's centre inside the lesion (``|shift * spacing| <= diameter /
    2``; the zero shift when no other one does), so every positive patch is centred in its
    lesion, as a detection must be to count as a hit. The original jitters every lesion by
    up to 5 voxels per axis, which for a lesion smaller than ~10 mm labels patches centred
    outside it as positive and teaches stage 1 to fire beside small lesions.

    Parameters
    ----------
    lesions : sequence of (centre (z, y, x) floats, class_name, diameter or None)
    shape, size : 3 ints
        Volume and patch shape (z, y, x).
    rng : numpy.random.Generator
    n_jitter, max_jitter : int
    jitter_in_lesion : bool
    spacing : 3 floats
        Voxel size (mm) of the grid, for ``jitter_in_lesion``.
    default_diameter : float
        Diameter (mm) of lesions without one, for ``jitter_in_lesion``.

    Returns
    -------
    list of PatchSample
        For each lesion, the original (``"op"``) then its copies (``"rp"``).
    """
    n_jitter = _check_int(n_jitter, "n_jitter", 0)
    max_jitter = _check_int(max_jitter, "max_jitter", 0)
    out = []
    if jitter_in_lesion:
        grid = np.arange(-max_jitter, max_jitter + 1)
        cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
        length = np.linalg.norm(cube * np.asarray(spacing, dtype=np.float64), axis=1)
    for centre, name, diameter in lesions:
        c = np.floor(np.asarray(centre, dtype=np.float64) + 0.5).astype(np.int64)
        if jitter_in_lesion:
            d = default_diameter if diameter is None else float(diameter)
            allowed = cube[length <= d / 2.0]          # always holds the zero shift
            offsets = allowed[rng.integers(0, len(allowed), size=n_jitter)]
        else:
            offsets = rng.integers(-max_jitter, max_jitter + 1, size=(n_jitter, 3))
        for kind, cc in [("op", c)] + [("rp", c + o) for o in offsets]:
            if _inside(cc, size, shape):
                out.append(PatchSample(tuple(int(v) for v in cc), name, kind, diameter))
    return out


def plan_negatives(n, lesions, shape, size, rng, *, spacing=(1.0, 1.0, 1.0),
                   default_diameter=10.0, max_tries=None):
    """``n`` random negative patch centres whose boxes lie inside ``shape`` and touch no
    lesion sphere (:func:`box_touches_sphere`).

    Parameters
    ----------
    n : int
    lesions : sequence of (centre (z, y, x) floats, class_name, diameter mm or None)
    shape, size : 3 ints
    rng : numpy.random.Generator
    spacing : 3 floats
        Voxel size (mm) of the volume.
    default_diameter : float
        Diameter (mm) assumed for lesions without one.
    max_tries : int, optional
        Random draws before giving up (default ``1000 * n + 1000``); fewer than ``n`` are
        returned, with a warning, when the volume has too little lesion-free room.

    Returns
    -------
    list of PatchSample (kind ``"ng"``, class ``"bg"``)
    """
    n = _check_int(n, "n", 0)
    shape = np.asarray(shape, dtype=np.int64)
    size = np.asarray(size, dtype=np.int64)
    lo = size // 2
    hi = shape - size + size // 2          # inclusive upper bound of a centre
    if n == 0:
        return []
    if np.any(hi < lo):
        warnings.warn(f"volume shape {tuple(shape)} is smaller than the patch {tuple(size)}; "
                      f"no negatives drawn", stacklevel=2)
        return []
    centres = np.asarray([c for c, _, _ in lesions], dtype=np.float64).reshape(-1, 3)
    radii = np.asarray([default_diameter if d is None else d for _, _, d in lesions],
                       dtype=np.float64) / 2
    tries = 1000 * n + 1000 if max_tries is None else _check_int(max_tries, "max_tries", 1)
    out = []
    for _ in range(tries):
        c = rng.integers(lo, hi + 1)
        start, stop = patch_box(c, size)
        if len(centres) and np.any(box_touches_sphere(start, stop, centres, radii, spacing)):
            continue
        out.append(PatchSample(tuple(int(v) for v in c), "bg", "ng"))
        if len(out) == n:
            break
    if len(out) < n:
        warnings.warn(f"only {len(out)} of {n} negatives found clear of lesions in "
                      f"{tries} draws", stacklevel=2)
    return out


def _lesions_of(series, rows):
    """[(centre zyx float in resampled grid, class, diameter)] of a series' lesion rows."""
    return [(tuple(series.to_resampled(r.xyz)), r.class_name, r.diameter) for r in rows]


def _write_samples(series, samples, folder, size):
    """Save each sample's patch (skipping files already there); return PatchRows."""
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        target = folder / f"{s.kind}_{i:04d}.npy"
        if not target.is_file():
            patch = extract_patch(series.array, s.centre, size)
            if patch is None:          # planned samples are inside; kept as a guard
                continue
            with atomic_path(target) as tmp:
                np.save(tmp, patch)
        rows.append(PatchRow(str(target.resolve()), s.class_name, tuple(float(v) for v in
                             s.centre[::-1]), s.diameter, series.path))
    return rows


def _done_path(folder):
    return folder / "done.json"


def _read_done(folder):
    p = _done_path(folder)
    if not p.is_file():
        return None
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
        return [PatchRow(r["patch"], r["class"], tuple(r["xyz"]), r["d"], r["series"])
                for r in record["rows"]], record.get("extra", {})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_done(folder, rows, extra=None):
    if any(not Path(r.patch).is_file() for r in rows):
        raise RuntimeError(f"{folder}: a patch file vanished while writing")
    write_json(_done_path(folder), dict(
        rows=[dict(patch=r.patch, **{"class": r.class_name}, xyz=list(r.xyz), d=r.diameter,
                   series=r.series) for r in rows], extra=extra or {}))


def _progress(iterable, progress, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress, **kwargs)


def _read_inputs(series_csv, classes):
    series_csv = Path(series_csv)
    if classes is not None and not isinstance(classes, (dict, list, tuple, set, frozenset)):
        classes = read_class_mapping(classes)
    rows = read_series_csv(series_csv, classes=classes)
    if not rows:
        raise TableError(f"{series_csv}: the series CSV lists no series")
    return series_csv, rows, classes


def _write_mapping(out, rows, classes):
    mapping = dict(classes) if isinstance(classes, dict) else None
    if mapping is None:
        names = sorted({r.class_name for r in rows if r.has_lesion} | set(classes or ()) - {"bg"})
        mapping = {"bg": 0, **{n: i + 1 for i, n in enumerate(names)}}
    path = out / "mapping.csv"
    if path.is_file():
        try:
            if read_class_mapping(path) == mapping:
                return path
        except (ValueError, OSError):
            pass
    return write_class_mapping(path, mapping)


def make_stage1_patches(series_csv, out_dir, *, patch_csv=None, classes=None, seed=0,
                        patch_size=STAGE1_PATCH, n_jitter=4, max_jitter=5, negative_ratio=3,
                        default_diameter=10.0, spacing=1.0, jitter_in_lesion=False,
                        progress=True):
    """Candidate-screening training patches of every series of a series CSV.

    Per series: the lesion centres are mapped to the resampled grid
    (:meth:`ResampledSeries.to_resampled`), each gives a centred patch and ``n_jitter``
    jittered copies (:func:`plan_positives`), and ``negative_ratio`` times as many random
    negatives as positives kept are drawn clear of every lesion (:func:`plan_negatives`).
    Patches crossing the border are dropped. Sampling is seeded by ``seed`` and the series
    path. Finished series and written patch files are skipped on a rerun.

    Parameters
    ----------
    series_csv : path-like
        A series CSV (e.g. ``kfold_series0_train.csv``).
    out_dir : path-like
        Output folder (layout in the module docstring); not the folder of ``series_csv`` or
        of a series.
    patch_csv : path-like, optional
        Patch CSV to write; default ``out_dir /`` :func:`default_patch_csv_name`.
    classes : mapping, collection or path of a class-mapping CSV, optional
        Known classes; with a mapping (or file) it is also written as ``mapping.csv``,
        otherwise ``mapping.csv`` maps ``bg`` to 0 and the lesion classes (sorted) to 1, 2...
    seed : int
    patch_size : 3 ints
        (z, y, x), default (15, 30, 30).
    n_jitter, max_jitter : int
        Jittered copies per lesion and their largest shift (voxels) per axis.
    negative_ratio : int
        Negatives per positive patch.
    default_diameter : float
        Diameter (mm) assumed for lesions without one when keeping negatives clear.
    spacing : float
        Resampled voxel size in mm.
    jitter_in_lesion : bool
        Keep jittered centres inside their lesion (:func:`plan_positives`).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pathlib.Path
        The patch CSV (positives first, then negatives, series by series).
    """
    series_csv, rows, classes = _read_inputs(series_csv, classes)
    by_series = group_by_series(rows)
    out = check_out_dir(out_dir, [series_csv, *by_series])
    seed = _check_int(seed, "seed", 0)
    patch_size = _check_size(patch_size, "patch_size")
    negative_ratio = _check_int(negative_ratio, "negative_ratio", 0)
    settings = dict(stage=1, seed=seed, patch_size=patch_size, n_jitter=n_jitter,
                    max_jitter=max_jitter, negative_ratio=negative_ratio,
                    default_diameter=default_diameter, spacing=spacing)
    if jitter_in_lesion:       # only then: folders of earlier runs keep their names
        settings["jitter_in_lesion"] = True
    root = out / "patches" / f"stage1_{_settings_hash(settings)}"
    _write_mapping(out, rows, classes)
    patch_rows = []
    for path, lesion_rows in _progress(by_series.items(), progress, desc="stage-1 patches",
                                       unit="series"):
        folder = root / series_key(path)
        done = _read_done(folder)
        if done is not None:
            patch_rows += done[0]
            continue
        series = load_series(path, out / "resampled", spacing=spacing)
        lesions = _lesions_of(series, lesion_rows)
        rng = _rng(seed, 1, _crc(Path(path).resolve()))
        positives = plan_positives(lesions, series.shape, patch_size, rng, n_jitter=n_jitter,
                                   max_jitter=max_jitter, jitter_in_lesion=jitter_in_lesion,
                                   spacing=series.spacing, default_diameter=default_diameter)
        negatives = plan_negatives(negative_ratio * len(positives), lesions, series.shape,
                                   patch_size, rng, spacing=series.spacing,
                                   default_diameter=default_diameter)
        written = _write_samples(series, positives + negatives, folder, patch_size)
        _write_done(folder, written)
        patch_rows += written
    target = Path(patch_csv) if patch_csv is not None else \
        out / default_patch_csv_name(series_csv, 1)
    return write_patch_csv(target, patch_rows)


# ----------------------------------------------------------------------------- mining
def screening_candidates(model, volume, *, score_threshold=0.8, iou_threshold=0.5,
                         nms_size=STAGE2_PATCH):
    """Stage-1 candidates of a whole volume: centres (z, y, x) and scores after NMS.

    Parameters
    ----------
    model : keras.Model or callable
        The stage-1 network, screened with
        :func:`keras_medseg.nodule3d.screening.screen_volume`; or any callable
        ``model(volume) -> (probabilities, centres)`` with ``probabilities`` of shape
        ``(d, h, w, classes)`` and ``centres`` ``(d, h, w, 3)`` int (the input voxel each
        map position is centred on), e.g. a wrapper of another screening function.
    volume : numpy.ndarray, (z, y, x)
        Normalised resampled volume.
    score_threshold, iou_threshold : float
        Keep map positions whose arg-max class is not background with probability above
        ``score_threshold``; greedy NMS of ``nms_size`` boxes at ``iou_threshold``.

    Returns
    -------
    centres : numpy.ndarray, (n, 3), int64
    scores : numpy.ndarray, (n,), float32
        By descending score.
    """
    from keras_medseg.nodule3d.screening import boxes_from_probability_map, screen_volume

    if isinstance(model, keras.Model):
        result = screen_volume(model, volume)
        probabilities, centres = result.probabilities, result.centre_grid()
    elif callable(model):
        probabilities, centres = model(volume)
        probabilities = np.asarray(probabilities)
        centres = np.asarray(centres)
        if probabilities.ndim != 4 or centres.shape != probabilities.shape[:3] + (3,):
            raise ValueError(f"the screening callable must return probabilities (d, h, w, C) "
                             f"and centres (d, h, w, 3); got shapes {probabilities.shape} "
                             f"and {centres.shape}")
    else:
        raise ValueError(f"model must be a keras.Model or a callable; got "
                         f"{type(model).__name__}")
    proposals = boxes_from_probability_map(probabilities, score_threshold=score_threshold,
                                           iou_threshold=iou_threshold, max_proposals=None,
                                           roi_size=nms_size)
    flat = centres.reshape(-1, 3)
    index = np.ravel_multi_index(tuple(proposals.map_indices.T), probabilities.shape[:3]) \
        if len(proposals.scores) else np.zeros(0, dtype=np.int64)
    return flat[index].astype(np.int64), proposals.scores


def mine_false_positives(candidates, lesions, *, spacing=(1.0, 1.0, 1.0),
                         default_diameter=10.0):
    """The candidates that hit no lesion: centre distance (mm) >= the lesion radius for
    every lesion.

    Parameters
    ----------
    candidates : array_like, (n, 3)
        Candidate centres (z, y, x) voxels.
    lesions : sequence of (centre (z, y, x), class_name, diameter mm or None)

    Returns
    -------
    numpy.ndarray of bool, (n,)
        True for a false positive.
    """
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, 3)
    if not lesions:
        return np.ones(len(c), dtype=bool)
    centres = np.asarray([x for x, _, _ in lesions], dtype=np.float64)
    radii = np.asarray([default_diameter if d is None else d for _, _, d in lesions]) / 2
    diff = (c[:, None, :] - centres[None]) * np.asarray(spacing, dtype=np.float64)
    dist = np.sqrt(np.sum(diff ** 2, axis=-1))
    return np.all(dist >= radii[None], axis=1)


def _model_fingerprint(model):
    if isinstance(model, (str, os.PathLike)):
        h = hashlib.sha1()
        with open(model, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    if isinstance(model, keras.Model):
        h = hashlib.sha1()
        for w in model.get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
        return h.hexdigest()
    return getattr(model, "fingerprint", None) or repr(model)


def make_stage2_patches(series_csv, model, out_dir, *, patch_csv=None, classes=None, seed=0,
                        patch_size=STAGE2_PATCH, n_jitter=4, max_jitter=5, fp_ratio=3,
                        score_threshold=0.8, iou_threshold=0.5, nms_size=STAGE2_PATCH,
                        default_diameter=10.0, spacing=1.0, jitter_in_lesion=False,
                        progress=True):
    """False-positive-reduction training patches, mined with a stage-1 model.

    Every lesion of every series gives a centred patch and ``n_jitter`` jittered copies.
    Then the series are screened in file order (:func:`screening_candidates`) and all
    candidates that hit no lesion (:func:`mine_false_positives`) and whose patch lies inside
    the volume are kept, series after series, until there are at least
    ``fp_ratio * (1 + n_jitter) * n_lesions`` false positives (as convnet3d: the last series
    screened contributes all of its false positives).

    Parameters
    ----------
    series_csv : path-like
        Training series CSV (e.g. ``kfold_series0_train.csv``).
    model : path, keras.Model or callable
        The trained stage-1 model (a ``.keras`` file or model; spatial input may be None),
        or a screening callable (see :func:`screening_candidates`). A callable may carry a
        ``fingerprint`` attribute (str) that identifies it for resuming.
    out_dir, patch_csv, classes, seed, n_jitter, max_jitter, default_diameter, spacing,
    jitter_in_lesion, progress
        As in :func:`make_stage1_patches`.
    patch_size : 3 ints
        Default (25, 60, 60).
    fp_ratio : int
        False positives per positive patch (3).
    score_threshold, iou_threshold, nms_size
        Candidate extraction (0.8, 0.5, (25, 60, 60) boxes).

    Returns
    -------
    pathlib.Path
        The patch CSV: positives of each series, then its false positives.
    """
    series_csv, rows, classes = _read_inputs(series_csv, classes)
    by_series = group_by_series(rows)
    out = check_out_dir(out_dir, [series_csv, *by_series])
    seed = _check_int(seed, "seed", 0)
    patch_size = _check_size(patch_size, "patch_size")
    fp_ratio = _check_int(fp_ratio, "fp_ratio", 0)
    n_jitter = _check_int(n_jitter, "n_jitter", 0)
    score_threshold = _check_fraction(score_threshold, "score_threshold")
    iou_threshold = _check_fraction(iou_threshold, "iou_threshold")
    settings = dict(stage=2, seed=seed, patch_size=patch_size, n_jitter=n_jitter,
                    max_jitter=max_jitter, score_threshold=score_threshold,
                    iou_threshold=iou_threshold, nms_size=list(nms_size),
                    default_diameter=default_diameter, spacing=spacing,
                    model=_model_fingerprint(model))
    if jitter_in_lesion:
        settings["jitter_in_lesion"] = True
    root = out / "patches" / f"stage2_{_settings_hash(settings)}"
    _write_mapping(out, rows, classes)
    n_lesions = sum(len(v) for v in by_series.values())
    target_fp = fp_ratio * (1 + n_jitter) * n_lesions
    loaded = None
    n_fp = 0
    patch_rows = []
    for path, lesion_rows in _progress(by_series.items(), progress, desc="stage-2 patches",
                                       unit="series"):
        folder = root / series_key(path)
        mine = n_fp < target_fp
        done = _read_done(folder)
        if done is not None and (done[1].get("mined") or not mine):
            kept = done[0] if mine else [r for r in done[0] if r.class_name != "bg"]
            patch_rows += kept
            n_fp += sum(r.class_name == "bg" for r in kept)
            continue
        series = load_series(path, out / "resampled", spacing=spacing)
        lesions = _lesions_of(series, lesion_rows)
        rng = _rng(seed, 2, _crc(Path(path).resolve()))
        samples = plan_positives(lesions, series.shape, patch_size, rng, n_jitter=n_jitter,
                                 max_jitter=max_jitter, jitter_in_lesion=jitter_in_lesion,
                                 spacing=series.spacing, default_diameter=default_diameter)
        if mine:
            if loaded is None:
                loaded = (_load_model(model, what="stage-1 model")
                          if isinstance(model, (str, os.PathLike)) else model)
            centres, _ = screening_candidates(loaded, series.array,
                                              score_threshold=score_threshold,
                                              iou_threshold=iou_threshold, nms_size=nms_size)
            false = mine_false_positives(centres, lesions, spacing=series.spacing,
                                         default_diameter=default_diameter)
            samples += [PatchSample(tuple(int(v) for v in c), "bg", "fp") for c in centres[false]
                        if _inside(c, patch_size, series.shape)]
        written = _write_samples(series, samples, folder, patch_size)
        _write_done(folder, written, extra=dict(mined=mine))
        patch_rows += written
        n_fp += sum(r.class_name == "bg" for r in written)
    if n_fp < target_fp:
        warnings.warn(f"{series_csv}: mined {n_fp} false positives, fewer than the "
                      f"{target_fp} wanted ({fp_ratio} x {1 + n_jitter} x {n_lesions} lesions)",
                      stacklevel=2)
    target = Path(patch_csv) if patch_csv is not None else \
        out / default_patch_csv_name(series_csv, 2)
    return write_patch_csv(target, patch_rows)


# ----------------------------------------------------------------------------- augmentation
def augment_patch(patch, rng, *, scale_range=(0.9, 1.1), max_rotation=0.1,
                  flip_probability=0.5, max_translation=0.1):
    """Random affine augmentation of a (z, y, x) patch about its centre (SimpleITK, linear).

    Output voxel ``p`` (physical, unit spacing, centre ``c = (shape - 1) / 2``) samples the
    input at ``A (p - c) + c + t`` with ``A = R(theta) S F``: ``F`` flips x and y each with
    ``flip_probability``, ``S`` scales each axis by a factor from ``scale_range``, ``R``
    rotates in the (x, y) plane by ``theta`` drawn from ``[-max_rotation, max_rotation]``
    radians, and ``t`` shifts each axis by up to ``max_translation`` times its size. Points
    outside the patch take the nearest edge value.

    Parameters
    ----------
    patch : array_like, (z, y, x)
        Not modified.
    rng : numpy.random.Generator
    scale_range : (float, float)
        Positive, low <= high; (1, 1) disables scaling.
    max_rotation : float
        Radians, >= 0.
    flip_probability : float
        In [0, 1].
    max_translation : float
        Fraction of the patch size, in [0, 1].

    Returns
    -------
    numpy.ndarray, same shape, float32
        With all parameters at identity (``(1, 1)``, 0, 0, 0) the patch itself.
    """
    import SimpleITK as sitk

    x = np.asarray(patch)
    if x.ndim != 3 or x.dtype.kind not in "biuf":
        raise ValueError(f"patch must be a numeric (z, y, x) array; got shape {x.shape}, "
                         f"dtype {x.dtype}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"scale_range must be (low, high); got {scale_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high; "
                         f"got {scale_range!r}")
    if isinstance(max_rotation, bool) or not isinstance(max_rotation, numbers.Real) \
            or not np.isfinite(max_rotation) or max_rotation < 0:
        raise ValueError(f"max_rotation must be a finite number >= 0; got {max_rotation!r}")
    flip_probability = _check_fraction(flip_probability, "flip_probability")
    max_translation = _check_fraction(max_translation, "max_translation")

    scale = rng.uniform(lo, hi, size=3)                   # (x, y, z)
    theta = rng.uniform(-max_rotation, max_rotation)
    flips = rng.random(2) < flip_probability              # x, y
    shift = rng.uniform(-max_translation, max_translation, size=3) * np.asarray(x.shape[::-1])
    f = np.diag([-1.0 if flips[0] else 1.0, -1.0 if flips[1] else 1.0, 1.0])
    r = np.array([[math.cos(theta), -math.sin(theta), 0.0],
                  [math.sin(theta), math.cos(theta), 0.0],
                  [0.0, 0.0, 1.0]])
    a = r @ np.diag(scale) @ f
    centre = (np.asarray(x.shape[::-1], dtype=np.float64) - 1) / 2
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(a.reshape(-1)))
    transform.SetCenter(tuple(centre))
    transform.SetTranslation(tuple(shift))
    image = sitk.GetImageFromArray(np.ascontiguousarray(x, dtype=np.float32))
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(image)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetTransform(transform)
    resampler.SetUseNearestNeighborExtrapolator(True)
    return sitk.GetArrayFromImage(resampler.Execute(image)).astype(np.float32, copy=False)


def load_patch(path):
    """Read one ``.npy`` patch (z, y, x); a clear ValueError names an unreadable or
    wrongly shaped file."""
    try:
        patch = np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read patch ({e})") from None
    if patch.ndim != 3:
        raise ValueError(f"{path}: patch must be (z, y, x); got shape {patch.shape}")
    return patch


class PatchDataset(keras.utils.PyDataset):
    """Batches ``(patches[..., None], labels)`` from a patch CSV, augmenting positives.

    The order is a seeded permutation that changes every epoch (``on_epoch_end``);
    augmentation draws from a generator seeded by ``(seed, epoch, position)``, so a batch is
    the same whichever worker builds it.

    Parameters
    ----------
    patches : path-like or sequence of PatchRow
        A patch CSV (:func:`make_stage1_patches` / :func:`make_stage2_patches`) or its rows.
    class_mapping : mapping or path-like
        ``{class_name: class_id}`` or a class-mapping CSV (``mapping.csv``); ``bg`` is 0
        and every row's class must be in it.
    batch_size : int
    augment : bool
        Apply :func:`augment_patch` to positives (class id != 0) only.
    shuffle : bool
        Seeded shuffle per epoch; False keeps file order.
    balance : bool
        Draw positives with replacement so that each epoch holds as many positives as
        negatives (all negatives once); False uses every row once.
    label_mode : {"onehot", "onehot_map", "sparse"}
        ``(b, classes)`` float32, ``(b, 1, 1, 1, classes)`` float32 (the stage-1 fully
        convolutional output on a patch) or ``(b,)`` int32 class ids.
    seed : int
    augment_kwargs : dict, optional
        Options of :func:`augment_patch`.
    **kwargs
        ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``keras.utils.PyDataset``.
    """

    def __init__(self, patches, class_mapping, *, batch_size=32, augment=True, shuffle=True,
                 balance=False, label_mode="onehot", seed=0, augment_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(class_mapping, (str, os.PathLike)):
            class_mapping = read_class_mapping(class_mapping)
        mapping = dict(class_mapping)
        if mapping.get("bg") != 0:
            raise ValueError(f"class_mapping must map 'bg' to 0; got {mapping!r}")
        if isinstance(patches, (str, os.PathLike)):
            rows = read_patch_csv(patches, classes=mapping)
        else:
            rows = list(patches)
            for i, r in enumerate(rows):
                if not isinstance(r, PatchRow):
                    raise ValueError(f"patches[{i}] must be a PatchRow; got {type(r).__name__}")
                if r.class_name not in mapping:
                    raise ValueError(f"patches[{i}]: class {r.class_name!r} is not in "
                                     f"class_mapping")
        if not rows:
            raise ValueError("patches is empty")
        if label_mode not in ("onehot", "onehot_map", "sparse"):
            raise ValueError(f"label_mode must be 'onehot', 'onehot_map' or 'sparse'; "
                             f"got {label_mode!r}")
        self.rows = rows
        self.labels = np.asarray([mapping[r.class_name] for r in rows], dtype=np.int32)
        self.num_classes = max(mapping.values()) + 1
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.balance = bool(balance)
        self.label_mode = label_mode
        self.seed = _check_int(seed, "seed", 0)
        self.augment_kwargs = dict(augment_kwargs or {})
        if self.augment:
            augment_patch(np.zeros((2, 2, 2), np.float32), np.random.default_rng(0),
                          **self.augment_kwargs)            # validate the options now
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self):
        rng = _rng(self.seed, 7, self.epoch)
        positives = np.flatnonzero(self.labels != 0)
        negatives = np.flatnonzero(self.labels == 0)
        if self.balance and len(positives) and len(negatives):
            order = np.concatenate([negatives, rng.choice(positives, len(negatives))])
        else:
            order = np.arange(len(self.rows))
        if self.shuffle:
            order = rng.permutation(order)
        return order

    def __len__(self):
        return math.ceil(len(self._order) / self.batch_size)

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)})")
        picks = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        xs = []
        for position, i in zip(range(index * self.batch_size, len(self._order)), picks):
            row = self.rows[i]
            patch = load_patch(row.patch)
            if self.augment and self.labels[i] != 0:
                patch = augment_patch(patch, _rng(self.seed, 11, self.epoch, position),
                                      **self.augment_kwargs)
            xs.append(patch.astype(np.float32, copy=False))
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"patches in one batch must share a shape; got {sorted(shapes)}")
        y = self.labels[picks]
        if self.label_mode != "sparse":
            y = np.eye(self.num_classes, dtype=np.float32)[y]
            if self.label_mode == "onehot_map":
                y = y[:, None, None, None, :]
        return np.stack(xs)[..., None], y
