"""Brain-view datasets: PNG folders per view, volumes cut into slices, splits without leakage.

Every dataset becomes a :class:`ViewSlices`: a list of image files (PNG, 0..255 RGB) with a
view label per file (horizontal = 0, coronal = 1, sagittal = 2, the original's class ids),
the dataset it came from, the *stack* it belongs to (the ordered run of slices it was cut
from: ``"<dataset>/<view>"``) and its position in that stack. Volumes are cut into PNG files
once (min-max scaled per slice, a constant slice gives zeros instead of a division by zero)
and then streamed with ``tf.data`` like any folder, so nothing is held in memory (the
original loaded every image, about 4 GB).

Splits (:func:`split_train_test`)
--------------------------------
``"stratified"``
    The original: per dataset ``train_test_split(test_size=0.2, stratify=y,
    random_state=15)``, then concatenated. Neighbouring slices of one volume are nearly
    identical, so this split leaks.
``"blocks"``
    Each stack is cut into contiguous blocks of ``block_size`` slices; whole blocks are held
    out (stratified by view, per dataset), and training slices within ``gap`` positions of a
    held-out slice of the same stack are dropped, so no slice has a neighbour on the other
    side. A symmetric volume (the ICBM152 ``sym`` template) cut across its symmetry plane
    has two copies of every sagittal slice; ``mirror`` (:data:`ICBM152_MIRROR`) also drops
    the training slices near the mirror image of a held-out slice.
``"volume"``
    Whole datasets (volumes) are held out.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import types
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.io.images import (filter_near_black, list_class_folders, slice_to_rgb,
                                    classification_dataset)
from keras_medseg.io.splits import Split, train_val_test_split
from keras_medseg.utils import atomic_path

__all__ = [
    "ICBM152_MAPS",
    "ICBM152_MIRROR",
    "SPLIT_METHODS",
    "VIEWS",
    "ViewSlices",
    "block_groups",
    "drop_near_black",
    "icbm152_map_views",
    "icbm152_views",
    "load_png_views",
    "load_volume_views",
    "make_dataset",
    "matching_slices",
    "slice_volume",
    "split_train_test",
]

VIEWS = ("horizontal", "coronal", "sagittal")
"""Class names; the index is the class id (the original's labels 0, 1, 2)."""

SPLIT_METHODS = ("stratified", "blocks", "volume")


@dataclasses.dataclass
class ViewSlices:
    """Image files with their view labels and where each slice came from.

    Attributes
    ----------
    paths : list of str
        PNG (or other image) files, RGB 0..255.
    labels : ndarray of int32, shape (n,)
        View index into :data:`VIEWS`.
    datasets : ndarray of str, shape (n,)
        Dataset (atlas or volume) name per file.
    stacks : ndarray of str, shape (n,)
        Ordered run of slices the file belongs to (``"<dataset>/<view>"``).
    positions : ndarray of int64, shape (n,)
        Slice index within its stack (neighbours differ by 1 when every slice was kept).
    """

    paths: list
    labels: np.ndarray
    datasets: np.ndarray
    stacks: np.ndarray
    positions: np.ndarray

    def __post_init__(self):
        self.paths = [os.fspath(p) for p in self.paths]
        n = len(self.paths)
        self.labels = np.asarray(self.labels, dtype=np.int32).reshape(-1)
        self.datasets = np.asarray(self.datasets, dtype=str).reshape(-1)
        self.stacks = np.asarray(self.stacks, dtype=str).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.int64).reshape(-1)
        for name in ("labels", "datasets", "stacks", "positions"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"ViewSlices.{name} must have one entry per path ({n}); got "
                                 f"shape {getattr(self, name).shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(VIEWS)):
            raise ValueError(f"ViewSlices.labels must be in 0..{len(VIEWS) - 1}")

    def __len__(self):
        return len(self.paths)

    def subset(self, indices):
        """The items at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return ViewSlices([self.paths[i] for i in idx], self.labels[idx], self.datasets[idx],
                          self.stacks[idx], self.positions[idx])

    @classmethod
    def concat(cls, *parts):
        """Join several :class:`ViewSlices` (e.g. datasets) into one."""
        if not parts:
            raise ValueError("concat needs at least one ViewSlices")
        return cls(sum((list(p.paths) for p in parts), []),
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.datasets for p in parts]),
                   np.concatenate([p.stacks for p in parts]),
                   np.concatenate([p.positions for p in parts]))

    def counts(self):
        """``{view: number of items}``."""
        return {v: int(np.sum(self.labels == i)) for i, v in enumerate(VIEWS)}


# --------------------------------------------------------------------------------- loading
def load_png_views(root, *, name=None):
    """A dataset stored as PNG folders per view (``root/horizontal``, ``coronal``, ``sagittal``).

    Parameters
    ----------
    root : path-like
        Folder whose sub-folders are named after views (a subset of :data:`VIEWS` is fine).
    name : str, optional
        Dataset name; default the folder name.

    Returns
    -------
    ViewSlices
        Positions are the rank of each file within its view folder (sorted file names, which
        the sample data and most exports number along the cutting axis).

    Raises
    ------
    FileNotFoundError, ImageFileError
        As :func:`keras_medseg.io.images.list_class_folders` raises.
    ValueError
        If a sub-folder is not a view name.
    """
    root = Path(root)
    listed = list_class_folders(root)
    unknown = [c for c in listed.class_names if c not in VIEWS]
    if unknown:
        raise ValueError(f"dataset folder {str(root)!r} has sub-folders {unknown} that are not "
                         f"views; expected some of {list(VIEWS)}")
    name = root.name if name is None else str(name)
    labels = np.asarray([VIEWS.index(listed.class_names[c]) for c in listed.labels], np.int32)
    positions = np.zeros(len(labels), np.int64)
    for c in np.unique(listed.labels):
        members = np.flatnonzero(listed.labels == c)
        positions[members] = np.arange(members.size)
    stacks = [f"{name}/{VIEWS[i]}" for i in labels]
    return ViewSlices(listed.paths, labels, [name] * len(labels), stacks, positions)


def _check_axis(axis):
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2; got {axis!r}")
    return int(axis)


def _check_size(size):
    if isinstance(size, numbers.Integral):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or (height, width); got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive; got {size!r}")
    return h, w


def slice_volume(array, out_dir, *, name, axis, view, size=(512, 512), step=1, flip_rows=False,
                 pad_to=None):
    """Cut a 3D array into slices along ``axis`` and write each as an RGB PNG.

    Each slice is [padded,] min-max scaled to 0..255 on its own (a constant slice becomes all
    zeros), resized to ``size`` and written to ``out_dir/<name>/<view>/<name>_<view>_<k:04d>.png``
    (``k`` the slice index). Existing files of the same name are replaced atomically.

    Parameters
    ----------
    array : array_like, 3D, finite numbers
    out_dir : path-like
    name : str
        Dataset name (file and folder names).
    axis : {0, 1, 2}
        Array axis to cut along.
    view : str
        One of :data:`VIEWS`: the label of every slice.
    size : int or (int, int)
        Output ``(height, width)``.
    step : int
        Keep every ``step``-th slice.
    flip_rows : bool
        Flip each slice upside down (to put the superior/anterior side up).
    pad_to : int, optional
        Pad each slice, centred, with its minimum to a ``pad_to`` x ``pad_to`` square before
        scaling and resizing, so the anatomy keeps its aspect ratio (and, with the same
        ``pad_to`` for every axis, its size in pixels per millimetre). Must be at least the
        slice's height and width.

    Returns
    -------
    ViewSlices
        One stack ``"<name>/<view>"`` with positions = slice indices.

    Raises
    ------
    ValueError
        For a non-3D array, a bad axis, view, size, step or ``pad_to``, or a non-finite slice.
    """
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"array must be 3D; got shape {arr.shape}")
    axis = _check_axis(axis)
    check_choice(view, VIEWS, name="view")
    size = _check_size(size)
    if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step must be a positive int; got {step!r}")
    name = str(name)
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a non-empty file-name-safe string; got {name!r}")
    plane = [n for i, n in enumerate(arr.shape) if i != axis]
    if pad_to is not None and (not isinstance(pad_to, numbers.Integral)
                               or isinstance(pad_to, bool) or pad_to < max(plane)):
        raise ValueError(f"pad_to must be an int >= the slice size {tuple(plane)}; "
                         f"got {pad_to!r}")
    folder = Path(out_dir) / name / view
    paths, positions = [], []
    for k in range(0, arr.shape[axis], int(step)):
        sl = np.take(arr, k, axis=axis)
        if flip_rows:
            sl = sl[::-1]
        if pad_to is not None:
            before = [(int(pad_to) - n) // 2 for n in sl.shape]
            sl = np.pad(sl, [(b, int(pad_to) - n - b) for b, n in zip(before, sl.shape)],
                        constant_values=np.min(sl) if sl.size else 0)
        rgb = slice_to_rgb(sl, size=size)
        path = folder / f"{name}_{view}_{k:04d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        paths.append(str(path))
        positions.append(k)
    n = len(paths)
    return ViewSlices(paths, [VIEWS.index(view)] * n, [name] * n, [f"{name}/{view}"] * n,
                      positions)


def load_volume_views(path, out_dir, *, axis=0, view="coronal", size=(512, 512), name=None,
                      step=1):
    """A volume file (NRRD, NIfTI, ... as :func:`keras_medseg.io.volumes.read_volume` reads)
    cut along one axis into PNG slices of one view (the original's Nissl NRRD: axis 0,
    coronal). See :func:`slice_volume` for the other arguments.

    Returns
    -------
    ViewSlices
    """
    from keras_medseg.io.volumes import read_volume

    vol = read_volume(path)
    if name is None:
        name = Path(path).name.split(".")[0]
    return slice_volume(vol.array, out_dir, name=name, axis=axis, view=view, size=size,
                        step=step)


# ICBM152 as read by read_volume: array axes (z, y, x) = (inferior->superior,
# posterior->anterior, left->right). A slice at fixed z is horizontal (axial), at fixed y
# coronal, at fixed x sagittal.
_ICBM_AXES = (("horizontal", 0), ("coronal", 1), ("sagittal", 2))


def icbm152_views(out_dir, *, size=(512, 512), step=1, name="icbm152", keep_aspect=False,
                  cache_dir=None, offline=None):
    """The real ICBM152 2009a T1 template cut in the three planes, as PNG slices.

    Horizontal slices are cut along array axis 0 (z), coronal along 1 (y), sagittal along 2
    (x); rows are flipped so the superior (or anterior) side is up. Slices outside the brain
    are all zero: remove them with :func:`drop_near_black`. With ``keep_aspect`` every slice is
    first padded to a square of the volume's largest side (233 voxels), so all views keep the
    anatomy's aspect ratio and the same 1 mm voxel size, as a scanner's or microscope's images
    of one brain would; without it each slice is stretched to the square ``size``.

    Parameters
    ----------
    out_dir : path-like
    size, step
        As for :func:`slice_volume`.
    name : str
        Dataset name.
    keep_aspect : bool
        Pad to a common square field of view before resizing (see above).
    cache_dir, offline
        As for :func:`keras_medseg.sampledata.fetch.fetch`.

    Returns
    -------
    ViewSlices
        Three stacks ``"<name>/<view>"``.

    Raises
    ------
    keras_medseg.sampledata.SampleDataError
        When the template is not in the real-data cache and cannot be fetched.
    """
    from keras_medseg.sampledata.fetch import load_icbm152

    volume = load_icbm152(cache_dir=cache_dir, offline=offline)
    array = volume.image.array
    pad_to = int(max(array.shape)) if keep_aspect else None
    parts = [slice_volume(array, out_dir, name=name, axis=axis, view=view, size=size,
                          step=step, flip_rows=True, pad_to=pad_to) for view, axis in _ICBM_AXES]
    return ViewSlices.concat(*parts)


ICBM152_MIRROR = types.MappingProxyType({"icbm152/sagittal": 196})
"""The 2009a template is symmetric (``sym``): its sagittal slice at x is identical to the one
at 196 - x (197 slices). A split that holds out one and trains on the other tests on a
training image; pass this as ``mirror`` to :func:`split_train_test` to guard against it."""

ICBM152_MAPS = ("gm", "wm")
"""Probability maps of the ICBM152 template that :func:`icbm152_map_views` can cut."""


def icbm152_map_views(out_dir, *, maps=ICBM152_MAPS, size=(512, 512), step=1, name="icbm152",
                      keep_aspect=False, cache_dir=None, offline=None):
    """The ICBM152 grey- and white-matter probability maps cut like :func:`icbm152_views`.

    The maps are the same template as the T1 (same grid, same anatomy) in other contrasts,
    so their slices can serve as extra *training* images of the T1 slices at the same
    position: every returned item carries the dataset name ``name`` and stack
    ``"<name>/<view>"`` of the T1 slice it belongs to, so :func:`matching_slices` finds the
    ones whose T1 slice is on the training side of a split. The files are written to
    ``out_dir/<name>_<map>/<view>/``. Use them for training only; testing on them would test
    on another picture of the same held-out anatomy.

    Parameters
    ----------
    out_dir : path-like
    maps : sequence of {"gm", "wm"}
        Which maps (each a non-empty subset of :data:`ICBM152_MAPS`, no repeats).
    size, step, name, keep_aspect, cache_dir, offline
        As for :func:`icbm152_views`.

    Returns
    -------
    ViewSlices
        ``3 * len(maps)`` stacks' worth of items, positions = slice indices.

    Raises
    ------
    ValueError
        For an unknown or repeated map.
    keras_medseg.sampledata.SampleDataError
        When the template is not in the real-data cache and cannot be fetched.
    """
    from keras_medseg.io.volumes import read_volume
    from keras_medseg.sampledata.fetch import fetch

    maps = [maps] if isinstance(maps, str) else list(maps)
    if not maps or len(set(maps)) != len(maps):
        raise ValueError(f"maps must be a non-empty sequence without repeats; got {maps!r}")
    for m in maps:
        check_choice(m, ICBM152_MAPS, name="maps")
    paths = fetch("icbm152", cache_dir=cache_dir, offline=offline)
    parts = []
    for m in maps:
        array = read_volume(paths[f"mni_icbm152_{m}_tal_nlin_sym_09a_converted.nii.gz"]).array
        pad_to = int(max(array.shape)) if keep_aspect else None
        for view, axis in _ICBM_AXES:
            cut = slice_volume(array, out_dir, name=f"{name}_{m}", axis=axis, view=view,
                               size=size, step=step, flip_rows=True, pad_to=pad_to)
            parts.append(ViewSlices(cut.paths, cut.labels, [name] * len(cut),
                                    [f"{name}/{view}"] * len(cut), cut.positions))
    return ViewSlices.concat(*parts)


def matching_slices(extra, data):
    """The items of ``extra`` at a (stack, position) that ``data`` has.

    Parameters
    ----------
    extra : ViewSlices
        E.g. other contrasts of the same volume (:func:`icbm152_map_views`).
    data : ViewSlices
        E.g. the training side of a split.

    Returns
    -------
    ViewSlices
        In ``extra``'s order; labels are ``extra``'s.

    Raises
    ------
    ValueError
        If a matched item's label differs from the label of its ``data`` item.
    """
    label_at = {(s, int(p)): int(c) for s, p, c in zip(data.stacks, data.positions,
                                                         data.labels)}
    keep = []
    for i, (s, p, c) in enumerate(zip(extra.stacks, extra.positions, extra.labels)):
        found = label_at.get((s, int(p)))
        if found is None:
            continue
        if found != int(c):
            raise ValueError(f"extra item {extra.paths[i]!r} has view {VIEWS[c]} but the item at "
                             f"stack {s!r} position {int(p)} has {VIEWS[found]}")
        keep.append(i)
    return extra.subset(keep)


def drop_near_black(data, *, threshold, scale, size=None):
    """Remove near-black images (mean intensity below ``threshold`` on ``scale``).

    Parameters
    ----------
    data : ViewSlices
    threshold : float
    scale : {"0-255", "fraction"}
        See :func:`keras_medseg.io.images.is_near_black` (the original's 0.6 was applied on
        the 0..255 scale: ``threshold=0.6, scale="0-255"``).
    size : (int, int), optional
        Resize before measuring, as the model input would be.

    Returns
    -------
    kept : ViewSlices
    keep : ndarray of bool, shape (n,)
    """
    if len(data) == 0:
        return data, np.zeros(0, bool)
    keep = filter_near_black(data.paths, threshold=threshold, scale=scale, size=size)
    return data.subset(np.flatnonzero(keep)), keep


# ---------------------------------------------------------------------------------- splits
def block_groups(data, block_size):
    """Group label per item: ``"<stack>#<position // block_size>"`` (contiguous blocks).

    Returns
    -------
    ndarray of str, shape (n,)
    """
    if not isinstance(block_size, numbers.Integral) or isinstance(block_size, bool) \
            or block_size < 1:
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    return np.asarray([f"{s}#{p // int(block_size)}"
                       for s, p in zip(data.stacks, data.positions)])


def _guard(data, train, test, gap, mirror=None):
    """Drop training items within ``gap`` positions of a test item of the same stack (or of
    its mirror image, ``mirror[stack] - position``)."""
    mirror = mirror or {}
    if (gap == 0 and not mirror) or not len(test):
        return train
    keep = []
    test_pos = {}
    for i in test:
        test_pos.setdefault(data.stacks[i], []).append(data.positions[i])
        if data.stacks[i] in mirror:
            test_pos[data.stacks[i]].append(mirror[data.stacks[i]] - data.positions[i])
    test_pos = {s: np.asarray(v) for s, v in test_pos.items()}
    for i in train:
        near = test_pos.get(data.stacks[i])
        if near is None or np.min(np.abs(near - data.positions[i])) > gap:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def split_train_test(data, *, method="stratified", test_size=0.2, random_state=15,
                     block_size=10, gap=2, test_datasets=None, mirror=None):
    """Split ``data`` into training and test items (see the module docstring).

    Parameters
    ----------
    data : ViewSlices
    method : {"stratified", "blocks", "volume"}
    test_size : float
        Fraction held out, in (0, 1) (per dataset for ``"stratified"`` and ``"blocks"``).
    random_state : int
        Seed (15 in the original).
    block_size : int
        Slices per block (``"blocks"``).
    gap : int
        ``"blocks"``: training slices closer than or equal to ``gap`` positions to a test slice
        of the same stack are dropped (0 keeps them; then the slices on either side of a block
        border are neighbours on both sides).
    mirror : mapping of str to int, optional
        ``"blocks"``: stacks cut across the symmetry plane of a symmetric volume, each with the
        sum ``s`` such that its slice at position ``p`` shows the same as the slice at
        ``s - p`` (:data:`ICBM152_MIRROR`); training slices within ``gap`` positions of the
        mirror image of a test slice are dropped as well.
    test_datasets : sequence of str, optional
        ``"volume"``: the datasets to hold out; default a seeded choice of about
        ``test_size`` of them (at least one).

    Returns
    -------
    Split
        Indices into ``data``; ``val`` empty. With ``gap > 0`` some items are on no side.

    Raises
    ------
    ValueError
        For an unknown method, bad fractions or sizes, ``"volume"`` with fewer than two
        datasets or unknown ``test_datasets``, or too few items/blocks per dataset.
    """
    check_choice(method, SPLIT_METHODS, name="method")
    if not isinstance(test_size, numbers.Real) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1); got {test_size!r}")
    if not isinstance(gap, numbers.Integral) or isinstance(gap, bool) or gap < 0:
        raise ValueError(f"gap must be a non-negative int; got {gap!r}")
    if len(data) == 0:
        raise ValueError("data is empty")
    names = list(dict.fromkeys(data.datasets.tolist()))
    if method == "volume":
        if len(names) < 2:
            raise ValueError(f"method='volume' needs at least two datasets; got {names}")
        if test_datasets is None:
            rng = np.random.default_rng(random_state)
            n_test = max(1, min(len(names) - 1, round(len(names) * test_size)))
            test_datasets = sorted(rng.choice(names, n_test, replace=False).tolist())
        unknown = sorted(set(test_datasets) - set(names))
        if unknown or not test_datasets or set(test_datasets) >= set(names):
            raise ValueError(f"test_datasets must be a non-empty proper subset of {names}; got "
                             f"{test_datasets!r}")
        is_test = np.isin(data.datasets, list(test_datasets))
        return Split(train=np.flatnonzero(~is_test), test=np.flatnonzero(is_test))

    groups = block_groups(data, block_size) if method == "blocks" else None
    train, test = [], []
    for name in names:
        members = np.flatnonzero(data.datasets == name)
        split = train_val_test_split(members.size, val_fraction=0.0,
                                     test_fraction=float(test_size), seed=int(random_state),
                                     stratify=data.labels[members],
                                     groups=None if groups is None else groups[members])
        train.append(members[list(split.train)])
        test.append(members[list(split.test)])
    train, test = np.concatenate(train), np.concatenate(test)
    if method == "blocks":
        train = _guard(data, train, test, int(gap), _check_mirror(mirror))
    return Split(train=train, test=test)


def _check_mirror(mirror):
    if mirror is None:
        return {}
    try:
        items = dict(mirror).items()
    except (TypeError, ValueError):
        raise ValueError(f"mirror must map stack names to ints; got {mirror!r}") from None
    for k, v in items:
        if not isinstance(k, str) or not isinstance(v, numbers.Integral) \
                or isinstance(v, bool):
            raise ValueError(f"mirror must map stack names to ints; got {mirror!r}")
    return {k: int(v) for k, v in items}


# -------------------------------------------------------------------------------- pipeline
def make_dataset(data, *, image_size=(512, 512), batch_size=32, shuffle=False, seed=None,
                 cache=False):
    """Streaming ``tf.data`` pipeline of ``(image, label)`` batches for ``data``.

    Images are float32 0..255 RGB ``(batch, h, w, 3)`` (EfficientNet rescales inside the
    model), labels int32; files are decoded lazily
    (:func:`keras_medseg.io.images.classification_dataset`).
    """
    return classification_dataset(data.paths, data.labels, image_size=_check_size(image_size),
                                  batch_size=batch_size, shuffle=shuffle, seed=seed,
                                  cache=cache)
