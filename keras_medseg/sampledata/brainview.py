"""Synthetic mouse-brain-like slices for the ``brainview`` task.

A phantom brain is a 3D volume with axes (anterior-posterior, dorsal-ventral, left-right):
an elongated cerebrum with a cortex-like outer shell and a dorsal midline fissure, paired
lateral ventricles and striatum-like nuclei, olfactory bulbs in front, a foliated
cerebellum-like lobe behind and a brainstem below. So the three planes look different:
coronal cuts are round and left-right symmetric with ventricles, horizontal cuts are long
and symmetric with bulbs and cerebellum at the ends, sagittal cuts show the asymmetric
profile with the cerebellum's folia.

Each dataset has its own shape, contrast and noise (``atlasA``: Nissl-like purple on a
white background; ``atlasB``: MRI-like grey on black; further ones alternate), so training
on one and testing on another shows the cross-dataset drop of the original.

Written under ``out_dir``:

- ``<dataset>/<view>/<dataset>_<view>_<k:03d>.png`` (views ``horizontal``, ``coronal``,
  ``sagittal``; RGB or greyscale PNG, ``image_size`` square, slight random rotation);
- ``<nrrd_name>/<nrrd_name>.nrrd``: one uint16 volume whose numpy axis 0 (as SimpleITK
  reads it; the last NRRD axis) is anterior-posterior, so every slice along it is coronal,
  like the original's Nissl volume. Its first and last ``empty_slices`` slices are 0 and
  the next ones hold only faint tissue, so the near-black filter matters.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.sampledata._common import (check_int, check_seed, check_shape, load_marker,
                                             save_marker, save_pil, smooth_noise, write_sitk)

VIEWS = ("horizontal", "coronal", "sagittal")  # class ids 0, 1, 2


@dataclasses.dataclass
class BrainviewSampleData:
    """What :func:`generate_brainview` wrote.

    Attributes
    ----------
    root : Path
    datasets : dict
        Dataset name -> folder holding ``horizontal/``, ``coronal/``, ``sagittal/``.
    nrrd_path : Path
        The single-volume dataset (all slices coronal along numpy axis 0).
    counts : dict
        Dataset name -> {view: number of PNG files}.
    nrrd_empty_slices : int
        Number of all-zero slices at each end of the NRRD volume's axis 0.
    """

    root: Path
    datasets: dict
    nrrd_path: Path
    counts: dict
    nrrd_empty_slices: int


def _ellipsoid(grid, centre, axes):
    """Squared normalised radius ((p - c) / a)^2 summed over the three axes."""
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes))


def make_brain_phantom(rng, shape, *, style=0):
    """A brain phantom volume (AP, DV, LR), float in [0, 1], background 0.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of 3 int
        (anterior-posterior, dorsal-ventral, left-right) voxels.
    style : int
        0: Nissl-like contrast (dense cortex and nuclei dark-ish, fine granular texture);
        1: MRI-like contrast (grey matter bright, fibre tracts darker, smoother).

    Returns
    -------
    ndarray, float32, shape ``shape``
        Intensity in [0, 1]; 0 outside the brain. The dorsal side has small DV indices
        (row 0 is dorsal), the anterior side small AP indices.
    """
    n_ap, n_dv, n_lr = shape
    # Normalised coordinates in [-1, 1]; ap > 0 anterior, dv > 0 dorsal, lr symmetric.
    ap = np.linspace(1, -1, n_ap)[:, None, None]
    dv = np.linspace(1, -1, n_dv)[None, :, None]
    lr = np.linspace(-1, 1, n_lr)[None, None, :]
    grid = (ap, dv, lr)
    j = rng.uniform(0.92, 1.08, 6)  # shape jitter

    cereb = _ellipsoid(grid, (0.12, 0.05, 0.0), (0.68 * j[0], 0.8 * j[1], 0.8 * j[2]))
    fissure = (np.abs(lr) < 0.025) & (dv > 0.15) & (cereb < 1)
    bulbs = np.minimum(_ellipsoid(grid, (0.8 * j[3], -0.1, 0.11), (0.18, 0.25, 0.11)),
                       _ellipsoid(grid, (0.8 * j[3], -0.1, -0.11), (0.18, 0.25, 0.11)))
    cbl = _ellipsoid(grid, (-0.6 * j[4], 0.0, 0.0), (0.26, 0.6 * j[5], 0.55))
    stem = _ellipsoid(grid, (-0.35, -0.5, 0.0), (0.55, 0.28, 0.22))
    vent = np.minimum(_ellipsoid(grid, (0.15, 0.15, 0.2), (0.28, 0.07, 0.05)),
                      _ellipsoid(grid, (0.15, 0.15, -0.2), (0.28, 0.07, 0.05)))
    striatum = np.minimum(_ellipsoid(grid, (0.3, -0.05, 0.35), (0.22, 0.25, 0.18)),
                          _ellipsoid(grid, (0.3, -0.05, -0.35), (0.22, 0.25, 0.18)))
    brain = ((cereb < 1) & ~fissure) | (bulbs < 1) | (cbl < 1) | (stem < 1)

    texture = smooth_noise(rng, shape, 0.8)
    if style == 0:  # Nissl-like: stain density
        vol = np.full(shape, 0.45)
        vol[cereb < 1] = 0.45
        vol[(cereb >= 0.7) & (cereb < 1) & (dv > -0.3)] = 0.75  # cortex: dense cell layer
        vol[striatum < 1] = 0.6
        vol[bulbs < 1] = 0.7
        folia = 0.5 + 0.5 * np.sin(np.sqrt(cbl) * 9 * np.pi + 2 * np.abs(lr))
        vol = np.where(cbl < 1, 0.35 + 0.5 * folia, vol)
        vol[stem < 1] = np.where(cbl[stem < 1] < 1, vol[stem < 1], 0.4)
        vol[vent < 1] = 0.1
        vol = vol + 0.12 * texture
    else:  # MRI-like
        vol = np.full(shape, 0.55)
        vol[(cereb >= 0.75) & (cereb < 1)] = 0.7
        vol[striatum < 1] = 0.62
        vol[bulbs < 1] = 0.66
        folia = 0.5 + 0.5 * np.sin(np.sqrt(cbl) * 7 * np.pi)
        vol = np.where(cbl < 1, 0.45 + 0.3 * folia, vol)
        vol[(stem < 1) & (cbl >= 1)] = 0.42
        vol[vent < 1] = 0.95
        vol = vol + 0.04 * texture
    vol = ndi.gaussian_filter(np.where(brain, vol, 0.0), 0.7)
    vol *= ndi.gaussian_filter(brain.astype(np.float64), 0.7) > 0.5
    return np.clip(vol, 0, 1).astype(np.float32)


_STYLES = (
    # style, inverted background, RGB tint, noise sd
    dict(style=0, invert=True, tint=(0.55, 0.35, 0.75), noise=0.03),
    dict(style=1, invert=False, tint=None, noise=0.04),
)


def _slice(vol, view, index):
    """A 2D slice with dorsal or anterior up."""
    if view == "coronal":  # fixed AP: rows DV, cols LR
        return vol[index]
    if view == "horizontal":  # fixed DV: rows AP, cols LR
        return vol[:, index, :]
    return vol[:, :, index].T  # sagittal, fixed LR: rows DV, cols AP


def _to_image(rng, sl, size, style):
    from PIL import Image

    h, w = sl.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = sl
    pil = Image.fromarray((square * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    pil = pil.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
    arr = np.asarray(pil, np.float64) / 255
    arr = np.clip(arr + rng.normal(0, style["noise"], arr.shape) * (arr > 0.02), 0, 1)
    if style["tint"] is not None:
        tint = np.asarray(style["tint"])
        rgb = 1 - arr[..., None] * (1 - tint) * 1.6 if style["invert"] else arr[..., None] * tint
        return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    if style["invert"]:
        arr = 1 - arr
    return Image.fromarray((arr * 255).astype(np.uint8), "L")


def generate_brainview(out_dir, *, seed=0, datasets=("atlasA", "atlasB"), image_size=256,
                       slices_per_view=24, volume_shape=(128, 80, 104), nrrd_name="nissl",
                       empty_slices=6):
    """Write the synthetic brain-view datasets (see the module docstring for the layout).

    Parameters
    ----------
    out_dir : path-like
    seed : int
    datasets : sequence of str
        Names of the PNG datasets (>= 1, unique, distinct from ``nrrd_name``).
    image_size : int
        Side of the PNG slices (>= 32).
    slices_per_view : int
        PNG slices per view and dataset, evenly spaced through the inner 80% of the brain.
    volume_shape : tuple of 3 int
        Phantom grid (anterior-posterior, dorsal-ventral, left-right), each >= 16.
    nrrd_name : str
        Name of the single-volume dataset.
    empty_slices : int
        All-zero coronal slices added at each end of the NRRD volume (>= 0).

    Returns
    -------
    BrainviewSampleData
    """
    seed = check_seed(seed)
    datasets = [str(d) for d in datasets]
    if not datasets or len(set(datasets)) != len(datasets) or nrrd_name in datasets \
            or any(not d or "/" in d for d in datasets):
        raise ValueError(f"datasets must be unique non-empty folder names other than "
                         f"nrrd_name={nrrd_name!r}; got {datasets!r}")
    image_size = check_int(image_size, name="image_size", minimum=32)
    slices_per_view = check_int(slices_per_view, name="slices_per_view", minimum=1)
    volume_shape = check_shape(volume_shape, name="volume_shape", ndim=3, minimum=16)
    empty_slices = check_int(empty_slices, name="empty_slices", minimum=0)
    params = dict(seed=seed, datasets=datasets, image_size=image_size,
                  slices_per_view=slices_per_view, volume_shape=list(volume_shape),
                  nrrd_name=nrrd_name, empty_slices=empty_slices)
    out = Path(out_dir)
    done = load_marker(out, "brainview", params, BrainviewSampleData)
    if done is not None:
        return done

    rng = np.random.default_rng(seed)
    folders, counts = {}, {}
    for k, name in enumerate(datasets):
        style = _STYLES[k % len(_STYLES)]
        vol = make_brain_phantom(rng, volume_shape, style=style["style"])
        support = vol > 0.02
        folders[name] = out / name
        counts[name] = {}
        for axis_view, view in ((1, "horizontal"), (0, "coronal"), (2, "sagittal")):
            other = tuple(a for a in range(3) if a != axis_view)
            idx = np.flatnonzero(support.any(axis=other))
            lo, hi = idx[0] + 0.1 * (idx[-1] - idx[0]), idx[0] + 0.9 * (idx[-1] - idx[0])
            positions = np.unique(np.round(np.linspace(lo, hi, slices_per_view)).astype(int))
            if positions.size < slices_per_view:  # thin axis: allow repeats with new jitter
                positions = np.round(np.linspace(lo, hi, slices_per_view)).astype(int)
            for i, pos in enumerate(positions):
                img = _to_image(rng, _slice(vol, view, int(pos)), image_size, style)
                save_pil(img, out / name / view / f"{name}_{view}_{i:03d}.png")
            counts[name][view] = len(positions)

    import SimpleITK as sitk

    vol = make_brain_phantom(rng, volume_shape, style=0)
    vol = vol + rng.normal(0, 0.01, vol.shape) * (vol > 0)
    data = np.clip(vol * 4000, 0, 65535).astype(np.uint16)
    faint = min(3, volume_shape[0] // 4)
    data[:faint] = data[:faint] // 200  # next to the empty ends: only faint tissue
    data[-faint:] = data[-faint:] // 200
    pad = np.zeros((empty_slices,) + data.shape[1:], np.uint16)
    data = np.concatenate([pad, data, pad], axis=0)
    image = sitk.GetImageFromArray(data)
    sp = 11.0 / volume_shape[0]  # about an 11 mm long mouse brain, isotropic voxels
    image.SetSpacing((sp, sp, sp))
    nrrd_path = write_sitk(image, out / nrrd_name / f"{nrrd_name}.nrrd")
    result = BrainviewSampleData(root=out, datasets=folders, nrrd_path=nrrd_path,
                                 counts=counts, nrrd_empty_slices=empty_slices)
    save_marker(out, "brainview", params, result)
    return result
