"""Synthetic chest-CT-like volumes with spherical nodules for the ``nodule3d`` task.

Each volume is in Hounsfield units (int16, axes z, y, x, anisotropic spacing): air
-1000 outside an elliptic body (soft tissue about +40 with a -100 fat rim, a vertebra of
bone), two lungs near -850 holding branching vessels (tubes about +40, radius tapering
from the hilum) and 1..n spherical nodules (+50, soft edges, diameters in mm), blurred
slightly and with Gaussian noise.

Written under ``out_dir`` (the original's inputs):

- ``series/series_<k:03d>.mhd`` + ``.raw`` (SimpleITK), the last ``nifti_series`` of them
  as ``series_<k:03d>.nii.gz`` instead;
- ``series.csv``: ``path,class,x,y,z,d,group``, one row per nodule; ``path`` absolute,
  ``x, y, z`` the zero-based voxel indices of the nodule centre in the volume as written
  (x = last numpy axis), ``d`` the diameter in mm, ``group`` the series id;
- ``classes.csv``: ``class_name,class_id`` with ``bg,0`` and ``nodule,1``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.sampledata._common import (check_int, check_range, check_seed, check_shape,
                                             load_marker, save_marker, write_sitk)
from keras_medseg.utils import write_csv

HU_AIR, HU_LUNG, HU_TISSUE, HU_FAT, HU_VESSEL, HU_NODULE, HU_BONE = (
    -1000, -850, 40, -100, 40, 50, 600)


@dataclasses.dataclass
class Nodule3DSampleData:
    """What :func:`generate_nodule3d` wrote.

    Attributes
    ----------
    root : Path
    series_csv, classes_csv : Path
    series : list of Path
        The volume files (``.mhd`` or ``.nii.gz``).
    nodules : list of dict
        The rows of ``series.csv`` (``path`` as str, ``x, y, z`` int, ``d`` float mm).
    spacing : list of float
        Voxel size in mm, (z, y, x).
    """

    root: Path
    series_csv: Path
    classes_csv: Path
    series: list
    nodules: list
    spacing: list


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _vessel_centrelines(rng, lung, spacing, hilum, n_branches):
    """Random persistent walks from the hilum: (points (N, 3) voxel, radius mm (N,))."""
    pts, radii = [], []
    sp = np.asarray(spacing)
    for _ in range(n_branches):
        pos = np.asarray(hilum, float)
        direction = rng.normal(size=3)
        direction[0] *= 0.6
        direction /= np.linalg.norm(direction)
        r0 = rng.uniform(1.4, 2.6)
        for step in range(400):
            direction = direction + rng.normal(0, 0.25, 3)
            direction /= np.linalg.norm(direction)
            pos = pos + direction / sp  # 1 mm steps in voxel units
            idx = np.round(pos).astype(int)
            if np.any(idx < 0) or np.any(idx >= lung.shape) or (step > 8 and not lung[tuple(idx)]):
                break
            pts.append(idx)
            radii.append(max(0.5, r0 * np.exp(-step / 45.0)))
    if not pts:
        return np.zeros((0, 3), int), np.zeros(0)
    return np.asarray(pts), np.asarray(radii)


def make_ct_phantom(rng, shape, spacing, n_nodules, diameter_range):
    """One CT-like volume in HU and its nodules.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of 3 int
        (z, y, x) voxels.
    spacing : tuple of 3 float
        (z, y, x) voxel size in mm.
    n_nodules : int
    diameter_range : (float, float)
        Nodule diameters in mm, drawn uniformly.

    Returns
    -------
    hu : ndarray, int16, ``shape``
    nodules : list of dict
        ``x, y, z`` (zero-based voxel indices of the centre) and ``d`` (diameter, mm).
    """
    nz, ny, nx = shape
    sp = np.asarray(spacing, float)
    z, y, x = [np.arange(n, dtype=np.float32) for n in shape]
    zz, yy, xx = z[:, None, None], y[None, :, None], x[None, None, :]
    cy, cx = ny / 2 + rng.uniform(-0.03, 0.03) * ny, nx / 2
    by, bx = 0.36 * ny * rng.uniform(0.95, 1.05), 0.46 * nx * rng.uniform(0.95, 1.05)
    body_r = ((yy - cy) / by) ** 2 + ((xx - cx) / bx) ** 2 + 0 * zz
    vol = np.full(shape, float(HU_AIR), np.float32)
    vol[body_r < 1] = HU_FAT
    vol[body_r < 0.82] = HU_TISSUE
    # Vertebra: a bone cylinder behind the lungs.
    spine = ((yy - (cy + 0.62 * by)) / (0.16 * by)) ** 2 + ((xx - cx) / (0.1 * bx)) ** 2 + 0 * zz
    vol[spine < 1] = HU_BONE
    # Lungs: two ellipsoids, narrowing towards the apex (z = 0).
    lung = np.zeros(shape, bool)
    hila = []
    for side in (-1, 1):
        lx = cx + side * 0.45 * bx
        ly = cy - 0.05 * by
        lz = 0.55 * nz
        taper = np.clip(0.55 + 0.45 * zz / nz, 0, 1)
        r = (((xx - lx) / (0.38 * bx * taper)) ** 2 + ((yy - ly) / (0.7 * by * taper)) ** 2
             + ((zz - lz) / (0.5 * nz)) ** 2)
        lung |= r < 1
        hila.append((lz, ly, cx + side * 0.22 * bx))
    vol[lung] = HU_LUNG
    # Vessels.
    centre_mask = np.ones(shape, bool)
    radius_map = np.zeros(shape, np.float32)
    for hilum in hila:
        pts, radii = _vessel_centrelines(rng, lung, sp, hilum,
                                         n_branches=int(rng.integers(14, 22)))
        if len(pts):
            centre_mask[pts[:, 0], pts[:, 1], pts[:, 2]] = False
            radius_map[pts[:, 0], pts[:, 1], pts[:, 2]] = radii
    if not centre_mask.all():
        dist, idx = ndi.distance_transform_edt(centre_mask, sampling=sp, return_indices=True)
        r = radius_map[idx[0], idx[1], idx[2]]
        a = _sigmoid((r - dist) / 0.3) * lung
        vol = vol * (1 - a) + HU_VESSEL * a
    # Nodules inside the lungs, apart from each other.
    depth = ndi.distance_transform_edt(lung, sampling=sp)
    nodules = []
    for _ in range(n_nodules):
        d = float(np.round(rng.uniform(*diameter_range), 1))
        rad = d / 2
        ok = depth >= min(rad, 0.6 * depth.max())
        for other in nodules:
            oc = np.array([other["z"], other["y"], other["x"]])
            dd = np.sqrt(((zz - oc[0]) * sp[0]) ** 2 + ((yy - oc[1]) * sp[1]) ** 2
                         + ((xx - oc[2]) * sp[2]) ** 2)
            ok &= dd > rad + other["d"] / 2 + 2
        candidates = np.argwhere(ok) if ok.any() else np.argwhere(lung)
        cz_, cy_, cx_ = candidates[rng.integers(len(candidates))]
        lo = np.maximum(0, np.floor([cz_, cy_, cx_] - (rad + 2) / sp).astype(int))
        hi = np.minimum(shape, np.ceil([cz_, cy_, cx_] + (rad + 2) / sp).astype(int) + 1)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        dist = np.sqrt(((zz[box[0]] - cz_) * sp[0]) ** 2 + ((yy[:, box[1]] - cy_) * sp[1]) ** 2
                       + ((xx[..., box[2]] - cx_) * sp[2]) ** 2)
        a = _sigmoid((rad - dist) / 0.4)
        vol[box] = vol[box] * (1 - a) + HU_NODULE * a
        nodules.append(dict(x=int(cx_), y=int(cy_), z=int(cz_), d=d))
    vol = ndi.gaussian_filter(vol, sigma=(0.4, 0.6, 0.6))
    vol += rng.normal(0, 20, shape).astype(np.float32)
    return np.clip(np.round(vol), -1024, 3071).astype(np.int16), nodules


def generate_nodule3d(out_dir, *, seed=0, n_series=4, shape=(64, 128, 128),
                      spacing=(2.5, 0.8, 0.8), nodules_per_series=(1, 3),
                      diameter_range=(3.0, 30.0), nifti_series=1):
    """Write synthetic CT series with the series and class CSVs (see the module docstring).

    Parameters
    ----------
    out_dir : path-like
    seed : int
    n_series : int
        Number of volumes (>= 1).
    shape : tuple of 3 int
        (z, y, x) voxels, each >= 16.
    spacing : tuple of 3 float
        (z, y, x) voxel size in mm, positive.
    nodules_per_series : (int, int)
        Inclusive range of the number of nodules per volume (>= 1 each, so every series
        appears in the CSV).
    diameter_range : (float, float)
        Nodule diameters in mm (> 0).
    nifti_series : int
        How many of the volumes (the last ones) are written as ``.nii.gz`` (0..n_series).

    Returns
    -------
    Nodule3DSampleData
    """
    from keras_medseg._checks import check_spacing

    seed = check_seed(seed)
    n_series = check_int(n_series, name="n_series", minimum=1)
    shape = check_shape(shape, name="shape", ndim=3, minimum=16)
    spacing = tuple(float(s) for s in check_spacing(spacing, 3, name="spacing"))
    nodules_per_series = check_range(nodules_per_series, name="nodules_per_series", low=1,
                                     integer=True)
    diameter_range = check_range(diameter_range, name="diameter_range", low=0.5)
    nifti_series = check_int(nifti_series, name="nifti_series", minimum=0)
    if nifti_series > n_series:
        raise ValueError(f"nifti_series must be at most n_series ({n_series}); "
                         f"got {nifti_series}")
    params = dict(seed=seed, n_series=n_series, shape=list(shape), spacing=list(spacing),
                  nodules_per_series=list(nodules_per_series),
                  diameter_range=list(diameter_range), nifti_series=nifti_series)
    out = Path(out_dir)
    done = load_marker(out, "nodule3d", params, Nodule3DSampleData)
    if done is not None:
        return done

    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    series, rows = [], []
    for k in range(n_series):
        n = int(rng.integers(nodules_per_series[0], nodules_per_series[1] + 1))
        hu, nodules = make_ct_phantom(rng, shape, spacing, n, diameter_range)
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing(spacing[::-1])
        suffix = ".nii.gz" if k >= n_series - nifti_series else ".mhd"
        path = write_sitk(image, out / "series" / f"series_{k:03d}{suffix}")
        series.append(path)
        for nod in nodules:
            rows.append(dict(path=str(path.resolve()), **{"class": "nodule"}, x=nod["x"],
                             y=nod["y"], z=nod["z"], d=nod["d"], group=f"series_{k:03d}"))
    series_csv = write_csv(out / "series.csv", rows,
                           columns=["path", "class", "x", "y", "z", "d", "group"])
    classes_csv = write_csv(out / "classes.csv",
                            [dict(class_name="bg", class_id=0),
                             dict(class_name="nodule", class_id=1)],
                            columns=["class_name", "class_id"])
    result = Nodule3DSampleData(root=out, series_csv=series_csv, classes_csv=classes_csv,
                                series=series, nodules=rows, spacing=list(spacing))
    save_marker(out, "nodule3d", params, result)
    return result
