"""Synthetic 6-month-infant brain MRI (T1, T2, tissue labels) for the ``iseg`` task.

A phantom is a skull-stripped brain: an ellipsoid whose surface is displaced by a smooth
random field, with nested tissue layers measured as depth below that surface: CSF, a
grey-matter ribbon folded by a second random field (sulci push CSF and the ribbon
inwards) and white matter inside, plus paired lateral ventricles (CSF) and deep grey
nuclei (GM). Intensities follow the isointense phase of a 6-month infant: on T1, GM and
WM differ by only a few percent and CSF is dark; on T2, CSF is bright and GM slightly
brighter than WM. Partial-volume blur, tissue texture, a smooth multiplicative bias field
per modality and Rician noise are added; the background is exactly 0.

Written under ``out_dir`` (the iSeg-2017 layout): ``subject-<i>-T1.hdr/.img``,
``subject-<i>-T2.hdr/.img`` (int16) and ``subject-<i>-label.hdr/.img`` (uint8, values
0 background, 10 CSF, 150 GM, 250 WM), Analyze 7.5 with 1 mm voxels, ``i`` from 1.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.sampledata._common import (atomic_file_set, check_int, check_seed,
                                             check_shape, load_marker, save_marker,
                                             smooth_noise)

LABEL_VALUES = (0, 10, 150, 250)  # background, CSF, GM, WM as stored in the label files
REAL_SHAPE = (144, 192, 256)  # the iSeg-2017 volumes


@dataclasses.dataclass
class IsegSampleData:
    """What :func:`generate_iseg` wrote.

    Attributes
    ----------
    root : Path
    subjects : list of dict
        Per subject: ``"id"`` (int, from 1) and the ``.hdr`` paths ``"T1"``, ``"T2"``,
        ``"label"``.
    shape : list of int
        Volume shape (nibabel array order).
    """

    root: Path
    subjects: list
    shape: list


def make_phantom(rng, shape):
    """One infant-brain phantom.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of 3 int
        Volume shape; 1 mm voxels.

    Returns
    -------
    t1, t2 : ndarray, float32, ``shape``
        Intensities about 0..1000 inside the brain, exactly 0 outside.
    labels : ndarray, uint8, ``shape``
        0 background, 1 CSF, 2 GM, 3 WM.
    """
    shape = tuple(int(s) for s in shape)
    centre = np.array(shape) / 2 + rng.uniform(-0.02, 0.02, 3) * np.array(shape)
    semi = 0.42 * np.array(shape) * rng.uniform(0.92, 1.02, 3)
    axes = [(np.arange(n, dtype=np.float32) - c) / a for n, c, a in zip(shape, centre, semi)]
    u = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    coarse = max(2, min(shape) // 16)
    rho = rho * (1 + 0.04 * smooth_noise(rng, shape, min(shape) / 6, coarse=coarse))
    mean_semi = float(np.mean(semi))
    depth = (1 - rho) * mean_semi  # approx. mm below the brain surface
    brain = depth > 0
    fold = smooth_noise(rng, shape, 2.0)
    sulcus = 9.0 * np.clip(fold - 0.7, 0, None)  # sulcal depth, mm
    t_csf, t_gm = rng.uniform(1.0, 1.6), rng.uniform(2.6, 3.4)
    tissue = brain & (depth >= t_csf + sulcus)  # inside the folded pial surface
    # The cortex is a ribbon of constant thickness under the folded surface.
    below = ndi.distance_transform_edt(tissue)
    labels = np.zeros(shape, np.uint8)
    labels[brain] = 1
    labels[tissue] = 2
    labels[tissue & (below > t_gm)] = 3

    def ellipsoid(c, a):
        return sum(((ui - ci) / ai) ** 2 for ui, ci, ai in zip(u, c, a)) < 1

    # Axis 0 is left-right (nibabel x): paired structures mirror across it.
    deep = (ellipsoid((0.18, -0.05, 0.0), (0.14, 0.2, 0.22))
            | ellipsoid((-0.18, -0.05, 0.0), (0.14, 0.2, 0.22)))
    vent = (ellipsoid((0.1, 0.1, 0.05), (0.05, 0.35, 0.1))
            | ellipsoid((-0.1, 0.1, 0.05), (0.05, 0.35, 0.1)))
    labels[deep & brain] = 2
    labels[vent & brain] = 1

    means_t1 = np.array([0.0, 0.22, 0.55, 0.60]) * rng.uniform(0.95, 1.05, 4)
    means_t2 = np.array([0.0, 0.95, 0.56, 0.49]) * rng.uniform(0.95, 1.05, 4)
    mask = ndi.gaussian_filter(brain.astype(np.float32), 0.6) > 0.5
    texture = smooth_noise(rng, shape, 1.5)
    out = []
    for means, tex_amp in ((means_t1, 0.02), (means_t2, 0.03)):
        img = ndi.gaussian_filter(means[labels].astype(np.float32), 0.6)
        img = img * (1 + tex_amp * texture)
        img = img * np.exp(0.12 * smooth_noise(rng, shape, min(shape) / 3, coarse=coarse))
        sd = 0.025
        img = np.sqrt((img + rng.normal(0, sd, shape)) ** 2 + rng.normal(0, sd, shape) ** 2)
        img = np.where(mask, np.maximum(img * 1000, 1), 0).astype(np.float32)
        out.append(img)
    labels[~mask] = 0
    return out[0], out[1], labels


def _write_analyze(array, path):
    import nibabel as nib

    img = nib.AnalyzeImage(array, np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0))
    hdr = Path(path)
    with atomic_file_set([hdr, hdr.with_suffix(".img")]) as (tmp_hdr, _):
        img.to_filename(str(tmp_hdr))
    return hdr


def generate_iseg(out_dir, *, seed=0, n_subjects=4, shape=(64, 80, 72)):
    """Write synthetic iSeg-2017-style subjects (see the module docstring).

    Parameters
    ----------
    out_dir : path-like
    seed : int
    n_subjects : int
        Number of subjects (>= 1); the challenge's training set has 10.
    shape : tuple of 3 int
        Volume shape in 1 mm voxels, each >= 24; ``REAL_SHAPE`` (144, 192, 256) gives the
        challenge's size (a few seconds per subject).

    Returns
    -------
    IsegSampleData
    """
    seed = check_seed(seed)
    n_subjects = check_int(n_subjects, name="n_subjects", minimum=1)
    shape = check_shape(shape, name="shape", ndim=3, minimum=24)
    params = dict(seed=seed, n_subjects=n_subjects, shape=list(shape))
    out = Path(out_dir)
    done = load_marker(out, "iseg", params, IsegSampleData)
    if done is not None:
        return done
    rng = np.random.default_rng(seed)
    lut = np.asarray(LABEL_VALUES, np.uint8)
    subjects = []
    for i in range(1, n_subjects + 1):
        t1, t2, labels = make_phantom(rng, shape)
        subjects.append({
            "id": i,
            "T1": _write_analyze(np.round(t1).astype(np.int16), out / f"subject-{i}-T1.hdr"),
            "T2": _write_analyze(np.round(t2).astype(np.int16), out / f"subject-{i}-T2.hdr"),
            "label": _write_analyze(lut[labels], out / f"subject-{i}-label.hdr"),
        })
    result = IsegSampleData(root=out, subjects=subjects, shape=list(shape))
    save_marker(out, "iseg", params, result)
    return result
