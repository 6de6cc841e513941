"""The iSeg-2017 HDF5 layout, its preparation (``prepare_hdf5_cutedge``) and a patch loader.

File layout (one file per subject, as the I-seg_Focus original wrote it):

* ``data`` : float32, ``(modalities, Z, X, Y)`` (T1 then T2), z-scored inside the brain mask;
* ``label`` : uint8, ``(Z, X, Y)`` with classes 0 background, 1 CSF, 2 GM, 3 WM
  (absent for unlabelled test subjects).

The original also carried caffe-style singleton axes, ``data`` ``(1, M, Z, X, Y)`` and
``label`` ``(1, 1, Z, X, Y)``; :func:`write_iseg_hdf5` writes them with
``leading_axes=True`` and every reader here accepts both forms. Inside Keras the arrays are
channels-last: :func:`read_iseg_hdf5` returns ``data`` as ``(Z, X, Y, M)``.

Axis names follow the original: it loaded the Analyze files as ``(x, y, z)`` arrays and
transposed them to ``(z, x, y)``. :func:`keras_medseg.io.volumes.read_volume` returns
``(z, y, x)`` arrays; ``np.transpose(a, (0, 2, 1))`` gives the original's ``(Z, X, Y)``.
Nothing here depends on the axis meaning.

:class:`IsegPatchSampler` draws random (training) or centre (validation) crops from a list of
such files, opening each file only for the crop it needs, so long file lists never sit in
memory; ``IsegPatchDataset`` wraps it as a ``keras.utils.PyDataset`` for ``model.fit`` and
:func:`patch_tf_dataset` as a ``tf.data.Dataset``.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.utils import atomic_path

__all__ = [
    "ISEG_LABEL_VALUES", "ISEG_CLASS_NAMES", "Hdf5FormatError", "IsegSubject",
    "map_iseg_labels", "cut_edge_bounds", "prepare_hdf5_cutedge", "write_iseg_hdf5",
    "read_iseg_hdf5", "iseg_hdf5_shape", "read_iseg_crop", "CubeRotation", "cube_rotations",
    "rotate_volume", "check_augmentation", "IsegPatchSampler", "IsegPatchDataset", "patch_tf_dataset",
]

#: Label values in the iSeg-2017 files, in class order (background, CSF, GM, WM).
ISEG_LABEL_VALUES = (0, 10, 150, 250)
ISEG_CLASS_NAMES = ("background", "CSF", "GM", "WM")


class Hdf5FormatError(ValueError):
    """An HDF5 file without the iSeg keys or shapes; the message names the file."""


class IsegSubject(NamedTuple):
    """Result of :func:`prepare_hdf5_cutedge`.

    Attributes
    ----------
    data : ndarray of float32, shape (2, z, x, y)
        Z-scored T1 and T2, cropped.
    label : ndarray of uint8, shape (z, x, y), or None
        Classes 0-3, cropped (None when no label was given).
    bounds : tuple of (start, stop) per axis
        The crop in the input arrays (``stop`` exclusive), to paste predictions back.
    """

    data: np.ndarray
    label: np.ndarray
    bounds: tuple


# ---------------------------------------------------------------------- preparation
def map_iseg_labels(label, *, name="label"):
    """Map iSeg label values {0, 10, 150, 250} to classes {0, 1, 2, 3} (uint8).

    Raises
    ------
    ValueError
        If ``label`` holds any other value (the message lists them).
    """
    label = np.asarray(label)
    if label.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric; got dtype {label.dtype}")
    values = np.unique(label)
    unexpected = values[~np.isin(values, ISEG_LABEL_VALUES)]
    if unexpected.size:
        raise ValueError(f"{name} holds values {unexpected[:8].tolist()}"
                         f"{' ...' if unexpected.size > 8 else ''} outside the iSeg label set "
                         f"{list(ISEG_LABEL_VALUES)}")
    lut = np.zeros(256, dtype=np.uint8)
    lut[list(ISEG_LABEL_VALUES)] = np.arange(len(ISEG_LABEL_VALUES))
    return lut[label.astype(np.int64)]


def cut_edge_bounds(mask, margin):
    """Bounding box of the non-zero voxels of ``mask``, grown by ``margin`` and clamped.

    Returns
    -------
    tuple of (start, stop) per axis, ``stop`` exclusive.

    Raises
    ------
    ValueError
        If ``mask`` is empty or ``margin`` is negative.
    """
    mask = np.asarray(mask).astype(bool)
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer; got {margin!r}")
    if not mask.any():
        raise ValueError("mask is empty: no voxel above zero to crop around")
    bounds = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        bounds.append((max(0, int(hit[0]) - margin),
                       min(mask.shape[axis], int(hit[-1]) + 1 + margin)))
    return tuple(bounds)


def prepare_hdf5_cutedge(t1, t2, label=None, *, margin=32):
    """Normalise and crop one iSeg subject as the original ``prepare_hdf5_cutedge`` did.

    1. mask = ``T1 > 0`` (the brain; the original used this T1 mask for both modalities, and
       so does this function);
    2. each modality is z-scored with the mean and standard deviation of its own voxels
       inside that mask: ``(x - mean) / std`` over the whole volume (voxels outside the mask
       are shifted too, not zeroed, as in the original);
    3. everything is cropped to the bounding box of the mask grown by ``margin`` voxels on
       each side, clamped to the volume;
    4. labels {0, 10, 150, 250} become {0, 1, 2, 3}.

    Parameters
    ----------
    t1, t2 : array_like, shape (Z, X, Y)
        The two modalities (any numeric dtype; not modified).
    label : array_like, shape (Z, X, Y), optional
        iSeg label values.
    margin : int
        Voxels kept around the mask (32 = half the 64^3 training crop).

    Returns
    -------
    IsegSubject
        ``data`` (2, z, x, y) float32, ``label`` (z, x, y) uint8 or None, ``bounds``.

    Raises
    ------
    ValueError
        On non-3D or mismatched shapes, an empty mask, a modality constant inside the mask,
        non-finite values, or unexpected label values.
    """
    t1 = np.asarray(t1)
    t2 = np.asarray(t2)
    for name, arr in (("t1", t1), ("t2", t2)):
        if arr.ndim != 3:
            raise ValueError(f"{name} must be 3D; got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
    if t2.shape != t1.shape:
        raise ValueError(f"t1 and t2 must have the same shape; got {t1.shape} and {t2.shape}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != t1.shape:
            raise ValueError(f"label must have the shape of t1 {t1.shape}; got {label.shape}")
        label = map_iseg_labels(label)
    mask = t1 > 0
    if not mask.any():
        raise ValueError("t1 has no voxel above 0: the brain mask (T1 > 0) is empty")
    bounds = cut_edge_bounds(mask, int(margin))
    crop = tuple(slice(a, b) for a, b in bounds)
    channels = []
    for name, arr in (("t1", t1), ("t2", t2)):
        x = arr.astype(np.float64)
        inside = x[mask]
        std = inside.std()
        if not std > 0:
            raise ValueError(f"{name} is constant inside the mask; cannot z-score it")
        channels.append(((x[crop] - inside.mean()) / std).astype(np.float32))
    data = np.stack(channels, axis=0)
    return IsegSubject(data, None if label is None else label[crop], bounds)


# ---------------------------------------------------------------------- files
def write_iseg_hdf5(path, data, label=None, *, leading_axes=False):
    """Write one subject atomically with keys ``data`` and (if given) ``label``.

    Parameters
    ----------
    path : str or path-like
    data : array_like, shape (M, Z, X, Y)
        Stored as float32.
    label : array_like of int, shape (Z, X, Y), optional
        Classes 0-255, stored as uint8.
    leading_axes : bool
        Store the original's caffe layout, ``(1, M, Z, X, Y)`` and ``(1, 1, Z, X, Y)``.

    Returns
    -------
    Path
    """
    import h5py

    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"data must have shape (modalities, Z, X, Y); got {data.shape}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ValueError("data contains NaN or inf")
    if label is not None:
        label = np.asarray(label)
        if label.shape != data.shape[1:]:
            raise ValueError(f"label must have shape {data.shape[1:]} (Z, X, Y of data); "
                             f"got {label.shape}")
        if label.dtype.kind not in "biu" or label.min() < 0 or label.max() > 255:
            raise ValueError("label must hold integers in [0, 255]")
        label = label.astype(np.uint8)
    data = data.astype(np.float32)
    if leading_axes:
        data = data[None]
        label = None if label is None else label[None, None]
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=data)
            if label is not None:
                f.create_dataset("label", data=label)
    return path


def _open(path):
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: HDF5 file not found")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise Hdf5FormatError(f"{path}: not a readable HDF5 file ({e})") from None


def _layout(f, path):
    """(data dataset, number of leading singleton axes, label dataset or None, label lead)."""
    if "data" not in f:
        raise Hdf5FormatError(f"{path}: no 'data' dataset (keys: {sorted(f.keys())})")
    data = f["data"]
    if data.ndim == 5 and data.shape[0] == 1:
        lead = 1
    elif data.ndim == 4:
        lead = 0
    else:
        raise Hdf5FormatError(f"{path}: 'data' must be (M, Z, X, Y) or (1, M, Z, X, Y); "
                              f"got shape {data.shape}")
    spatial = data.shape[lead + 1:]
    label, llead = None, 0
    if "label" in f:
        label = f["label"]
        llead = label.ndim - 3
        if llead < 0 or label.shape[llead:] != spatial or any(s != 1 for s in label.shape[:llead]):
            raise Hdf5FormatError(f"{path}: 'label' shape {label.shape} does not match 'data' "
                                  f"spatial shape {spatial}")
    return data, lead, label, llead


def iseg_hdf5_shape(path):
    """``((Z, X, Y), modalities, has_label)`` of an iSeg HDF5 file, without reading voxels."""
    with _open(path) as f:
        data, lead, label, _ = _layout(f, path)
        return tuple(data.shape[lead + 1:]), int(data.shape[lead]), label is not None


def read_iseg_hdf5(path, *, channels_last=True):
    """Read a whole subject.

    Returns
    -------
    data : ndarray of float32
        ``(Z, X, Y, M)`` (``channels_last``) or ``(M, Z, X, Y)``.
    label : ndarray of uint8, shape (Z, X, Y), or None when the file has no ``label``.

    Raises
    ------
    FileNotFoundError, Hdf5FormatError
        Naming the file: missing, unreadable, no ``data`` key, or inconsistent shapes.
    """
    with _open(path) as f:
        data, lead, label, llead = _layout(f, path)
        x = np.asarray(data[(0,) * lead], dtype=np.float32)
        y = None if label is None else np.asarray(label[(0,) * llead], dtype=np.uint8)
    if channels_last:
        x = np.moveaxis(x, 0, -1)
    return x, y


def read_iseg_crop(path, start, size, *, pad_value=0.0, channels_last=True):
    """Read one box from a subject file, padding where it leaves the volume.

    Only the box is read from disk.

    Parameters
    ----------
    path : str or path-like
    start : sequence of 3 int
        Box corner (Z, X, Y); may be negative or run past the end (padded).
    size : sequence of 3 int
        Box size.
    pad_value : float
        Data value outside the volume (labels are padded with 0).

    Returns
    -------
    data : ndarray of float32, ``size + (M,)`` (or ``(M,) + size``)
    label : ndarray of uint8, ``size``, or None
    """
    start = [int(s) for s in start]
    size = [int(s) for s in size]
    with _open(path) as f:
        data, lead, label, llead = _layout(f, path)
        shape = data.shape[lead + 1:]
        src, dst = [], []
        for s, n, dim in zip(start, size, shape):
            lo, hi = max(s, 0), min(s + n, dim)
            if hi <= lo:
                lo = hi = 0
            src.append(slice(lo, hi))
            dst.append(slice(lo - s, lo - s + (hi - lo)))
        m = data.shape[lead]
        x = np.full((m, *size), pad_value, dtype=np.float32)
        if all(sl.stop > sl.start for sl in src):
            x[(slice(None), *dst)] = data[(0,) * lead + (slice(None), *src)]
        y = None
        if label is not None:
            y = np.zeros(size, dtype=np.uint8)
            if all(sl.stop > sl.start for sl in src):
                y[tuple(dst)] = label[(0,) * llead + tuple(src)]
    if channels_last:
        x = np.moveaxis(x, 0, -1)
    return x, y


# ---------------------------------------------------------------------- cube rotations
class CubeRotation(NamedTuple):
    """A proper rotation of a voxel grid by multiples of 90 degrees (never a reflection).

    Applied to an array (:func:`rotate_volume`), the first three axes are permuted by
    ``perm`` (``np.transpose``) and then reversed where ``flips`` is True; with centred voxel
    coordinates ``v`` (input) and ``u`` (output), ``u = matrix @ v``. Only the 24 signed
    permutations with determinant +1 are rotations; :func:`cube_rotations` lists them.
    """

    perm: tuple
    flips: tuple

    @property
    def matrix(self):
        """``(3, 3)`` int matrix, ``matrix[i, perm[i]] = -1 if flips[i] else 1``."""
        m = np.zeros((3, 3), dtype=np.int64)
        for i, (p, f) in enumerate(zip(self.perm, self.flips)):
            m[i, p] = -1 if f else 1
        return m

    def output_shape(self, shape):
        """Spatial shape after the rotation of a volume of spatial ``shape``."""
        return tuple(int(shape[p]) for p in self.perm)


def cube_rotations(axis=None):
    """The proper rotations of a cube that map the voxel grid onto itself.

    Parameters
    ----------
    axis : {None, 0, 1, 2}
        None: all 24 rotations (the rotation group of the cube, every composition of
        ``np.rot90`` over axis pairs); an axis: the 4 rotations about it (by 0, 90, 180 and
        270 degrees in the plane of the two other axes).

    Returns
    -------
    tuple of CubeRotation
        Distinct, identity first, each of determinant +1.
    """
    import itertools

    if axis is not None:
        axis = check_choice(axis, (0, 1, 2), name="axis")
    out = []
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            rotation = CubeRotation(tuple(perm), tuple(flips))
            if round(np.linalg.det(rotation.matrix)) != 1:
                continue
            if axis is not None and (perm[axis] != axis or flips[axis]):
                continue
            out.append(rotation)
    return tuple(out)


def rotate_volume(array, rotation, *, inverse=False):
    """Rotate the first three axes of ``array`` (later axes, e.g. channels, stay put).

    Parameters
    ----------
    array : array_like, ndim >= 3
    rotation : CubeRotation
    inverse : bool
        Apply the inverse rotation (undoes ``rotate_volume(array, rotation)``).

    Returns
    -------
    ndarray
        A new contiguous array; the input is not modified.
    """
    array = np.asarray(array)
    if array.ndim < 3:
        raise ValueError(f"array must have at least 3 dimensions; got shape {array.shape}")
    if not isinstance(rotation, CubeRotation):
        rotation = CubeRotation(*rotation)
    if sorted(rotation.perm) != [0, 1, 2] or len(rotation.flips) != 3 or \
            round(np.linalg.det(rotation.matrix)) != 1:
        raise ValueError(f"rotation must be a proper rotation of 3 axes; got {rotation!r}")
    rest = tuple(range(3, array.ndim))
    flipped = tuple(i for i, f in enumerate(rotation.flips) if f)
    if inverse:
        out = np.flip(array, flipped) if flipped else array
        out = np.transpose(out, tuple(int(i) for i in np.argsort(rotation.perm)) + rest)
    else:
        out = np.transpose(array, tuple(rotation.perm) + rest)
        out = np.flip(out, flipped) if flipped else out
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------- patch sampling
def check_augmentation(crop_size, *, rotate, rotate_axis, intensity):
    """Check the training-augmentation options of :class:`IsegPatchSampler`.

    Returns
    -------
    rotate_axis : int or None
    intensity : float

    Raises
    ------
    ValueError
        For a ``rotate_axis`` not in {None, 0, 1, 2}, a ``crop_size`` that ``rotate`` cannot
        turn onto itself (not cubic; with ``rotate_axis``, unequal along the two other axes)
        or an ``intensity`` outside [0, 1).
    """
    if rotate_axis is not None:
        rotate_axis = check_choice(rotate_axis, (0, 1, 2), name="rotate_axis")
    if rotate:
        others = {c for i, c in enumerate(crop_size) if i != rotate_axis}
        if len(others) != 1:
            need = ("cubic" if rotate_axis is None else
                    f"equal along the axes other than rotate_axis={rotate_axis}")
            raise ValueError(f"crop_size must be {need} to rotate crops; got {crop_size}")
    if isinstance(intensity, bool) or not isinstance(intensity, numbers.Real) \
            or not 0 <= intensity < 1:
        raise ValueError(f"intensity must be a number in [0, 1); got {intensity!r}")
    return rotate_axis, float(intensity)


class IsegPatchSampler:
    """Batches of crops from a list of iSeg HDF5 files (a picklable, numpy-only sampler).

    Training (``mode="train"``): every epoch visits each file ``repeats`` times in an order
    shuffled from ``(seed, epoch)``; each visit takes a random crop (uniform corner, or with
    ``class_balanced`` a centre drawn on a random voxel of a class chosen uniformly among the
    classes present, the crop then shifted to lie inside the volume). Validation
    (``mode="val"``): one centre crop per file, in file order. A volume smaller than the crop
    along an axis is padded (data with ``pad_value``, labels with 0); in training it is placed
    at a random offset inside the crop, in validation centred.

    Augmentation of training crops (off by default; validation crops are never changed):
    ``rotate`` turns each crop, image and labels together, by a rotation drawn uniformly from
    :func:`cube_rotations` (all 24, or the 4 about ``rotate_axis``): proper rotations only,
    never a reflection. ``intensity`` multiplies each modality of a crop by a factor drawn
    from ``[1 - intensity, 1 + intensity]`` and adds a shift from ``[-intensity, intensity]``
    (in the z-scored units of the files).

    Each item's randomness comes from ``(seed, epoch, position)`` alone, so batches do not
    depend on the order workers fetch them; the augmentations draw from streams of their
    own, so the crop positions are the same with and without them.

    Parameters
    ----------
    files : sequence of path
        iSeg HDF5 files (each must hold ``label``); shapes are read once, voxels per crop.
    crop_size : sequence of 3 int
        ``(Z, X, Y)`` crop, default (64, 64, 64).
    batch_size : int
    repeats : int
        Visits per file per training epoch (4 in the original).
    mode : {"train", "val"}
    seed : int
    class_balanced : bool
        Centre training crops on class-balanced voxels (reads the file's label per crop).
    pad_value : float
    rotate : bool
        Rotate training crops (needs a cubic ``crop_size``; with ``rotate_axis``, equal sizes
        along the two other axes).
    rotate_axis : {None, 0, 1, 2}
        None: the 24 rotations of the cube; an axis: the 4 rotations about it.
    intensity : float in [0, 1)
        Amplitude of the random per-modality scale and shift (0: off).

    Raises
    ------
    ValueError
        For bad arguments, naming them (``crop_size`` when ``rotate`` needs other sizes).
    """

    def __init__(self, files, *, crop_size=(64, 64, 64), batch_size=4, repeats=4,
                 mode="train", seed=0, class_balanced=False, pad_value=0.0, rotate=False,
                 rotate_axis=None, intensity=0.0):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("files must list at least one HDF5 file")
        crop_size = tuple(int(c) for c in np.asarray(crop_size).reshape(-1))
        if len(crop_size) != 3 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be three positive integers; got {crop_size!r}")
        for name, v in (("batch_size", batch_size), ("repeats", repeats)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        self.mode = check_choice(mode, ("train", "val"), name="mode")
        self.crop_size = crop_size
        self.batch_size = int(batch_size)
        self.repeats = int(repeats) if mode == "train" else 1
        self.seed = int(seed)
        self.class_balanced = bool(class_balanced)
        self.pad_value = float(pad_value)
        self.rotate = bool(rotate)
        self.rotate_axis, self.intensity = check_augmentation(
            crop_size, rotate=self.rotate, rotate_axis=rotate_axis, intensity=intensity)
        self.rotations = cube_rotations(self.rotate_axis) if self.rotate else ()
        self.shapes = []
        for f in self.files:
            shape, _, has_label = iseg_hdf5_shape(f)
            if not has_label:
                raise Hdf5FormatError(f"{f}: no 'label' dataset; training and validation "
                                      f"crops need labels")
            self.shapes.append(shape)

    def __len__(self):
        return math.ceil(len(self.files) * self.repeats / self.batch_size)

    def epoch_order(self, epoch):
        """File indices visited in ``epoch``, in order."""
        order = np.repeat(np.arange(len(self.files)), self.repeats)
        if self.mode == "train":
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(order)
        return order

    def crop_start(self, file_index, epoch, position):
        """Crop corner (Z, X, Y) for one visit."""
        shape = np.asarray(self.shapes[file_index])
        crop = np.asarray(self.crop_size)
        if self.mode == "val":
            return (shape - crop) // 2
        rng = np.random.default_rng([self.seed, int(epoch), int(position)])
        if self.class_balanced:
            _, label = read_iseg_hdf5(self.files[file_index], channels_last=True)
            classes = np.unique(label)
            c = rng.choice(classes)
            voxels = np.flatnonzero(label.reshape(-1) == c)
            centre = np.asarray(np.unravel_index(rng.choice(voxels), label.shape))
            start = centre - crop // 2
            fits = shape >= crop
            start = np.where(fits, np.clip(start, 0, np.maximum(shape - crop, 0)),
                             np.clip(start, shape - crop, 0))
            return start
        lo = np.minimum(shape - crop, 0)
        hi = np.maximum(shape - crop, 0)
        return np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)])

    def augment(self, x, y, epoch, position):
        """The training augmentation of one crop ``x`` (Z, X, Y, M), ``y`` (Z, X, Y) at
        ``(epoch, position)``: the rotation, then the intensity change (each only when on;
        in validation mode, and with both off, the crop is returned unchanged)."""
        if self.mode != "train":
            return x, y
        if self.rotate:
            rng = np.random.default_rng([self.seed, int(epoch), int(position), 1])
            rotation = self.rotations[int(rng.integers(len(self.rotations)))]
            x, y = rotate_volume(x, rotation), rotate_volume(y, rotation)
        if self.intensity:
            rng = np.random.default_rng([self.seed, int(epoch), int(position), 2])
            m = x.shape[-1]
            scale = rng.uniform(1 - self.intensity, 1 + self.intensity, m)
            shift = rng.uniform(-self.intensity, self.intensity, m)
            x = (x * scale + shift).astype(np.float32)
        return x, y

    def get_batch(self, index, epoch=0):
        """Batch ``index`` of ``epoch``: ``(x, y)`` with x float32 (B, Z, X, Y, M) and
        y int32 (B, Z, X, Y) class ids."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)})")
        order = self.epoch_order(epoch)
        positions = range(index * self.batch_size,
                          min((index + 1) * self.batch_size, len(order)))
        xs, ys = [], []
        for pos in positions:
            fi = int(order[pos])
            start = self.crop_start(fi, epoch, pos)
            x, y = read_iseg_crop(self.files[fi], start, self.crop_size,
                                  pad_value=self.pad_value)
            x, y = self.augment(x, y, epoch, pos)
            xs.append(x)
            ys.append(y.astype(np.int32))
        return np.stack(xs), np.stack(ys)

    def batches(self, epoch=0):
        """Iterate over the batches of one epoch."""
        for i in range(len(self)):
            yield self.get_batch(i, epoch)


def patch_tf_dataset(sampler, *, epochs=None):
    """A ``tf.data.Dataset`` of ``sampler``'s batches, epoch after epoch (``epochs=None``:
    forever, for ``fit(..., steps_per_epoch=len(sampler))``)."""
    import tensorflow as tf

    m = iseg_hdf5_shape(sampler.files[0])[1]

    def gen():
        epoch = 0
        while epochs is None or epoch < epochs:
            yield from sampler.batches(epoch)
            epoch += 1

    spec = (tf.TensorSpec((None, *sampler.crop_size, m), tf.float32),
            tf.TensorSpec((None, *sampler.crop_size), tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _make_pydataset_class():
    import keras

    class IsegPatchDataset(keras.utils.PyDataset):
        """``keras.utils.PyDataset`` over an :class:`IsegPatchSampler` (built from the same
        arguments, available as ``.sampler``). Each ``on_epoch_end`` call advances ``.epoch``
        and so draws new crops (keras may also call it when resetting, so ``.epoch`` counts
        calls, not finished epochs). ``rotate``, ``rotate_axis`` and ``intensity`` (training
        augmentation, off by default) are as for the sampler. Extra keyword arguments
        (``workers``, ``use_multiprocessing``, ``max_queue_size``) go to ``PyDataset``."""

        def __init__(self, files, *, crop_size=(64, 64, 64), batch_size=4, repeats=4,
                     mode="train", seed=0, class_balanced=False, pad_value=0.0, rotate=False,
                     rotate_axis=None, intensity=0.0, **kwargs):
            super().__init__(**kwargs)
            self.sampler = IsegPatchSampler(files, crop_size=crop_size, batch_size=batch_size,
                                            repeats=repeats, mode=mode, seed=seed,
                                            class_balanced=class_balanced, pad_value=pad_value,
                                            rotate=rotate, rotate_axis=rotate_axis,
                                            intensity=intensity)
            self.epoch = 0

        def __len__(self):
            return len(self.sampler)

        def __getitem__(self, index):
            return self.sampler.get_batch(index, self.epoch)

        def on_epoch_end(self):
            self.epoch += 1

    IsegPatchDataset.__module__ = __name__
    return IsegPatchDataset


def __getattr__(name):
    # IsegPatchDataset subclasses keras.utils.PyDataset; build it on first use so importing
    # this module does not import keras.
    if name == "IsegPatchDataset":
        cls = _make_pydataset_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
