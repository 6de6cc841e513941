"""Image and SWC blocks of whole neurons (the original's Vaa3D plugin, in Python).

From one neuron's image volume, its gold-standard reconstruction and an automatic one
(APP2 in the original), 3D-SSM cuts blocks along the gold tree:

1. the gold tree is resampled to 1-voxel steps (:meth:`SwcTree.resample`) and put in
   depth-first order (:func:`depth_first`), so consecutive nodes follow the neurites;
2. every ``every``-th node (rows 0, 100, 200, ... of that order) is a block centre ``c``,
   rounded to the nearest voxel (``floor(x + 0.5)``);
3. the image block is ``[c - 32, c + 31]`` in x and y and ``[c - 16, c + 15]`` in z: an
   array ``(32, 64, 64)`` indexed ``(z, y, x)`` in the volume's dtype. Where the block leaves
   the volume it is padded with 0 (the ``padded`` column of the index says so);
4. the gold and auto SWC blocks are the nodes STRICTLY inside that box (``c - 32 < x <
   c + 31``, same in y, ``c - 16 < z < c + 15``), shifted to block coordinates (the box
   corner ``c - (32, 32, 16)`` subtracted, so a node sits at ``block[round(z), round(y),
   round(x)]``) and re-sorted (parents before children, ids 1..N). The gold block is cut
   from the resampled gold tree, the auto block from the automatic tree as read;
5. cleaning (both blocks): spurs (terminal branches) of <= 3 nodes are removed
   (:meth:`SwcTree.prune_spurs`), then fragments of <= 3 nodes none of whose nodes lies
   within 10% of the block extent of a block face (:meth:`SwcTree.remove_small_fragments`
   with :func:`keras_medseg.io.swc.near_face`);
6. a block whose cleaned auto block has fewer than 10 nodes is ``few`` (the original
   discarded it), else ``many``. Few blocks are written and indexed too, so what was left
   out stays visible.

Coordinates of SWC files are taken to be voxels of the image (x, y, z), as Vaa3D writes them.

Output folder
-------------
::

    blocks.csv                       the index, one row per block (see CSV_COLUMNS)
    images/<neuron>_<block:04d>.npy  image block, (32, 64, 64) (z, y, x), volume dtype
    gold/<neuron>_<block:04d>.swc    gold block, block coordinates
    auto/<neuron>_<block:04d>.swc    auto block, block coordinates
    .blocks/<neuron>.json            what the neuron's blocks were made from (resume check)

The index replaces the original's names ``<neuron>_<block>_x_<x>_y_<y>_z_<z>_l<label>``,
which every later step had to parse apart. Paths in it are relative to the CSV.

Large volumes
-------------
A volume is never loaded whole when it is a TIFF or a ``.npy`` file: an uncompressed TIFF
is memory-mapped (:func:`tifffile.memmap`), a compressed or otherwise unmappable TIFF is read
page by page (only the 32 z-pages of a block), and ``.npy`` files are opened with
``mmap_mode="r"``. Other formats (:data:`keras_medseg.io.volumes.READ_SUFFIXES`) are read
whole with :func:`keras_medseg.io.volumes.read_volume`; convert very large ones to TIFF.
Pages of a memory map that were read count as resident memory of the process, but they are
file-backed page cache the system reclaims when it needs the memory (cutting a 2 GiB TIFF
kept the process's anonymous memory near 20 MiB).

Runs are idempotent and resumable: every file is written atomically, existing block files
are kept (``overwrite=True`` redoes them), a neuron whose record in ``.blocks/`` matches
its inputs and options is skipped, and the index is rewritten after each neuron. Input
files are identified by path, size and modification time, in-memory arrays and trees by a
SHA-256 of their content; blocks made from other inputs are refused unless ``overwrite``.

Example
-------
>>> summary = cut_blocks_folder("sample/neurotrace", "work/blocks")  # doctest: +SKIP
>>> rows = read_blocks_csv("work/blocks/blocks.csv")  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from keras_medseg.io.prep import PrepSummary, check_output_location
from keras_medseg.io.swc import SwcTree, near_face, read_swc, write_swc
from keras_medseg.utils import atomic_path, atomic_write, write_json

__all__ = [
    "BLOCK_SIZE", "BLOCK_EVERY", "FEW_AUTO_NODES", "CSV_COLUMNS", "VOLUME_SUFFIXES",
    "BlockSummary", "VolumeReader", "open_volume", "depth_first", "resample_gold",
    "block_centres", "block_box", "extract_block", "clean_block_swc", "cut_swc_block",
    "cut_blocks", "cut_blocks_folder", "find_neurons", "read_blocks_csv", "write_blocks_csv",
    "block_name",
]

BLOCK_SIZE = (32, 64, 64)
"""Image block shape ``(z, y, x)`` in voxels (64 x 64 x 32 as x, y, z)."""

BLOCK_EVERY = 100
"""A block centre every this many nodes of the 1-voxel resampled gold tree."""

FEW_AUTO_NODES = 10
"""Auto blocks with fewer (cleaned) nodes are ``few``, the rest ``many``."""

SPUR_NODES = 3
"""Spurs (terminal branches) of at most this many nodes are removed."""

FRAGMENT_NODES = 3
"""Fragments of at most this many nodes away from the block faces are removed."""

FACE_FRACTION = 0.1
"""Width of the face band that spares a small fragment, as a fraction of the block extent."""

CSV_COLUMNS = ("neuron", "block", "node", "x", "y", "z", "image", "gold_swc", "auto_swc",
               "n_gold", "n_auto", "subset", "padded", "label")
"""Columns of ``blocks.csv``: ``neuron`` name; ``block`` number (0, 1, ... along the
depth-first gold tree); ``node`` row of the centre in the resampled gold tree; ``x, y, z``
block centre in voxels of the volume; ``image``, ``gold_swc``, ``auto_swc`` paths relative to
the CSV; ``n_gold``, ``n_auto`` cleaned node counts; ``subset`` ``few`` or ``many``;
``padded`` 1 when the block leaves the volume (zero padding); ``label`` empty until
labelled (0 low, 1 high tracing difficulty)."""

TIFF_SUFFIXES = (".tif", ".tiff")
VOLUME_SUFFIXES = TIFF_SUFFIXES + (".npy",)
"""Suffixes read without loading the volume whole (other formats: ``READ_SUFFIXES``)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_INT_COLUMNS = ("block", "node", "x", "y", "z", "n_gold", "n_auto", "padded")
_RECORD_VERSION = 1


# --------------------------------------------------------------------------- volumes
class VolumeReader:
    """Read-only 3D volume ``(z, y, x)`` opened without loading it whole (when possible).

    Index it like an array with three slices (``reader[z0:z1, y0:y1, x0:x1]``, in bounds,
    step 1); only that slab is read. Use :func:`open_volume` to make one, ideally as a
    context manager (``close`` releases the file).

    Attributes
    ----------
    path : pathlib.Path
    shape : tuple of int
        ``(Z, Y, X)``.
    dtype : numpy.dtype
    mode : {"memmap", "pages", "loaded"}
        ``memmap``: a memory map (uncompressed TIFF, ``.npy``); ``pages``: TIFF pages read on
        demand (compressed TIFF); ``loaded``: the whole volume in memory (other formats).
    """

    def __init__(self, path, mode, shape, dtype, *, array=None, tiff=None, squeeze=None):
        self.path = Path(path)
        self.mode = mode
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._array = array
        self._tiff = tiff
        self._squeeze = squeeze

    @property
    def ndim(self):
        return 3

    def __getitem__(self, key):
        if not (isinstance(key, tuple) and len(key) == 3
                and all(isinstance(k, slice) and k.step in (None, 1) for k in key)):
            raise ValueError("VolumeReader is indexed with three slices of step 1, "
                             f"(z, y, x); got {key!r}")
        bounds = [k.indices(s)[:2] for k, s in zip(key, self.shape)]
        if self.mode != "pages":
            return np.asarray(self._array[tuple(slice(a, b) for a, b in bounds)])
        (z0, z1), (y0, y1), (x0, x1) = bounds
        if z1 <= z0:
            return np.zeros((0, max(y1 - y0, 0), max(x1 - x0, 0)), self.dtype)
        pages = self._tiff.asarray(key=list(range(z0, z1)), series=0)
        pages = pages.reshape((z1 - z0,) + self.shape[1:])
        return np.asarray(pages[:, y0:y1, x0:x1])

    def close(self):
        """Release the file (memory map or TIFF handle)."""
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None
        mm = getattr(self._array, "_mmap", None)
        self._array = None
        if mm is not None:
            mm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"VolumeReader({str(self.path)!r}, shape={self.shape}, mode={self.mode!r})"


def _squeeze_3d(shape, path):
    core = tuple(s for s in shape if s != 1)
    if len(core) > 3 or len(shape) < 3:
        raise ValueError(f"{str(path)!r}: expected a 3D (z, y, x) volume; got shape "
                         f"{tuple(shape)}")
    if len(core) < 3:  # keep singleton axes at the front so a (1, Y, X) stack stays 3D
        core = tuple(shape[-3:])
    return core


def open_volume(path):
    """Open a 3D volume for slab reads (see the module docstring, "Large volumes").

    Parameters
    ----------
    path : str or path-like
        A multi-page TIFF (z pages of (y, x)), a ``.npy`` array (z, y, x), or a file that
        :func:`keras_medseg.io.volumes.read_volume` reads (loaded whole).

    Returns
    -------
    VolumeReader

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file, when it is not a readable 3D single-channel volume.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: image volume not found")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            tif = tifffile.TiffFile(path)
        except Exception as e:  # tifffile raises several types for a corrupt file
            raise ValueError(f"{str(path)!r}: cannot read TIFF: {e}") from None
        series = tif.series[0]
        shape = _squeeze_3d(series.shape, path)
        try:
            mm = tifffile.memmap(path, mode="r")
        except (ValueError, OSError):
            mm = None
        if mm is not None and int(np.prod(mm.shape)) == int(np.prod(shape)):
            tif.close()
            return VolumeReader(path, "memmap", shape, mm.dtype, array=mm.reshape(shape))
        if len(series.pages) != shape[0] or int(np.prod(series.pages[0].shape)) != \
                shape[1] * shape[2]:
            tif.close()
            raise ValueError(f"{str(path)!r}: TIFF of shape {tuple(series.shape)} is neither "
                             f"memory-mappable nor one (y, x) page per z slice")
        return VolumeReader(path, "pages", shape, series.dtype, tiff=tif)
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{str(path)!r}: cannot memory-map .npy: {e}") from None
        shape = _squeeze_3d(arr.shape, path)
        return VolumeReader(path, "memmap", shape, arr.dtype, array=arr.reshape(shape))
    from keras_medseg.io.volumes import read_volume

    arr = read_volume(path, ndim=3).array
    return VolumeReader(path, "loaded", arr.shape, arr.dtype, array=arr)


# --------------------------------------------------------------------------- geometry
def _check_size(size):
    try:
        values = tuple(size)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and v >= 2 for v in values):
        raise ValueError(f"size must be three integers >= 2 (z, y, x); got {size!r}")
    return tuple(int(v) for v in values)


def _check_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def depth_first(tree):
    """``tree`` with nodes in depth-first pre-order, ids renumbered ``1..N``.

    Roots are taken in row order and children in row order (first child first), so a
    neurite is listed from its start to its tip before the next one begins.

    Parameters
    ----------
    tree : SwcTree

    Returns
    -------
    SwcTree
    """
    if not isinstance(tree, SwcTree):
        raise ValueError(f"tree must be an SwcTree; got {type(tree).__name__}")
    n = len(tree)
    pidx = tree.parent_index
    tree.topological_order  # noqa: B018  (raises SwcError on cycles)
    children = [[] for _ in range(n)]
    for child, parent in enumerate(pidx.tolist()):
        if parent >= 0:
            children[parent].append(child)
    order = []
    stack = np.flatnonzero(pidx < 0)[::-1].tolist()
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(children[i][::-1])
    order = np.asarray(order, dtype=np.int64)
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(1, n + 1)
    par = pidx[order]
    parents = np.where(par >= 0, new_id[np.maximum(par, 0)], -1)
    return SwcTree(np.arange(1, n + 1, dtype=np.int64), tree.types[order], tree.xyz[order],
                   tree.radius[order], parents, tree.comments)


def resample_gold(tree, *, step=1.0):
    """The gold tree resampled to ``step``-voxel spacing, in depth-first order.

    Parameters
    ----------
    tree : SwcTree
        Gold-standard reconstruction (voxel coordinates).
    step : float, optional
        Node spacing in voxels (1 in the original).

    Returns
    -------
    SwcTree
    """
    if not isinstance(tree, SwcTree):
        raise ValueError(f"tree must be an SwcTree; got {type(tree).__name__}")
    return depth_first(tree.resample(step))


def block_centres(gold, *, every=BLOCK_EVERY, step=1.0):
    """Block centres along the gold tree: every ``every``-th node of :func:`resample_gold`.

    Parameters
    ----------
    gold : SwcTree
        Gold-standard reconstruction (voxel coordinates).
    every : int, optional
        Spacing of the centres in resampled nodes (100 in the original).
    step : float, optional
        Resampling step in voxels.

    Returns
    -------
    resampled : SwcTree
        The depth-first resampled gold tree.
    nodes : ndarray of int64, shape (K,)
        Rows of the centres in ``resampled``: ``0, every, 2 * every, ...``.
    centres : ndarray of int64, shape (K, 3)
        Centre voxels ``(x, y, z)``: ``floor(xyz + 0.5)`` of those nodes.

    Examples
    --------
    >>> line = SwcTree.from_arrays([1, 2], [3, 3], [[0, 5, 5], [250, 5, 5]], [1, 1], [-1, 1])
    >>> block_centres(line)[2][:, 0].tolist()
    [0, 100, 200]
    """
    every = _check_int(every, "every")
    resampled = resample_gold(gold, step=step)
    nodes = np.arange(0, len(resampled), every, dtype=np.int64)
    centres = np.floor(resampled.xyz[nodes] + 0.5).astype(np.int64).reshape(-1, 3)
    return resampled, nodes, centres


def block_box(centre, size=BLOCK_SIZE):
    """First and last voxel ``(x, y, z)`` of the block around ``centre``.

    With ``size = (sz, sy, sx)`` the box is ``centre - (sx, sy, sz) // 2`` to
    ``centre - (sx, sy, sz) // 2 + (sx, sy, sz) - 1``: ``[c - 32, c + 31]`` in x and y and
    ``[c - 16, c + 15]`` in z for the default size.

    Returns
    -------
    lo, hi : ndarray of int64, shape (3,)
    """
    size = _check_size(size)
    c = np.asarray(centre).reshape(-1)
    if c.shape != (3,) or not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
        raise ValueError(f"centre must be three integer voxel coordinates (x, y, z); "
                         f"got {centre!r}")
    extent = np.array(size[::-1], dtype=np.int64)
    lo = c.astype(np.int64) - extent // 2
    return lo, lo + extent - 1


def extract_block(volume, centre, size=BLOCK_SIZE, *, fill=0):
    """The image block around ``centre``, padded with ``fill`` outside the volume.

    Parameters
    ----------
    volume : array-like, shape (Z, Y, X)
        A numpy array, memory map or :class:`VolumeReader`; only the block's slab is read.
    centre : sequence of int, shape (3,)
        Block centre voxel ``(x, y, z)``.
    size : (int, int, int), optional
        Block shape ``(z, y, x)``; see :func:`block_box` for the placement.
    fill : scalar, optional
        Value of the voxels outside the volume (0).

    Returns
    -------
    block : ndarray, shape ``size``, dtype of ``volume``
    padded : bool
        True when part of the block lies outside the volume.

    Examples
    --------
    >>> vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (z, y, x)
    >>> block, padded = extract_block(vol, (6, 1, 1), (2, 2, 2))  # x 5..6, y 0..1, z 0..1
    >>> padded, int(block[1, 1, 0]), int(block[1, 1, 1])  # vol[1, 1, 5]; x = 6 is outside
    (True, 41, 0)
    """
    size = _check_size(size)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ValueError(f"volume must be 3D (z, y, x); got shape {shape}")
    lo, _ = block_box(centre, size)
    start = lo[::-1]  # z, y, x
    stop = start + np.array(size)
    a = np.clip(start, 0, shape)
    b = np.clip(stop, 0, shape)
    out = np.full(size, fill, dtype=np.dtype(volume.dtype))
    padded = bool(np.any(start < 0) or np.any(stop > np.array(shape)))
    if np.all(b > a):
        slab = volume[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        o0 = a - start
        o1 = o0 + (b - a)
        out[o0[0]:o1[0], o0[1]:o1[1], o0[2]:o1[2]] = slab
    return out, padded


def clean_block_swc(tree, extent, *, spur_nodes=SPUR_NODES, fragment_nodes=FRAGMENT_NODES,
                    face_fraction=FACE_FRACTION):
    """The original's cleaning of a block SWC, then sorted (ids 1..N).

    Removes spurs of at most ``spur_nodes`` nodes (:meth:`SwcTree.prune_spurs`), then
    fragments of at most ``fragment_nodes`` nodes none of whose nodes lies within
    ``face_fraction`` of the block extent of a block face (per axis).

    Parameters
    ----------
    tree : SwcTree
        Block SWC in block coordinates (box ``[0, extent]`` per axis).
    extent : sequence of float, shape (3,)
        Block extent ``(x, y, z)`` (63, 63, 31 for the default block: last voxel index).
    spur_nodes, fragment_nodes : int, optional
    face_fraction : float, optional

    Returns
    -------
    SwcTree
    """
    if not isinstance(tree, SwcTree):
        raise ValueError(f"tree must be an SwcTree; got {type(tree).__name__}")
    _check_int(spur_nodes, "spur_nodes")
    _check_int(fragment_nodes, "fragment_nodes")
    if len(tree):
        tree = tree.prune_spurs(spur_nodes)
        tree = tree.remove_small_fragments(fragment_nodes + 1,
                                           keep=near_face((0.0, 0.0, 0.0), extent,
                                                          fraction=face_fraction))
    return tree.sort()


def cut_swc_block(tree, centre, size=BLOCK_SIZE, *, clean=True):
    """The nodes of ``tree`` strictly inside the block box, in block coordinates, sorted.

    Parameters
    ----------
    tree : SwcTree
        Reconstruction in volume voxel coordinates.
    centre : sequence of int, shape (3,)
        Block centre ``(x, y, z)``.
    size : (int, int, int), optional
        Block shape ``(z, y, x)``.
    clean : bool, optional
        Apply :func:`clean_block_swc` (default True, as the original).

    Returns
    -------
    SwcTree
        Nodes with ``lo < xyz < hi`` (:func:`block_box`), shifted by ``-lo``, parents before
        children, ids ``1..N``; a node whose parent left the box is a root.
    """
    if not isinstance(tree, SwcTree):
        raise ValueError(f"tree must be an SwcTree; got {type(tree).__name__}")
    lo, hi = block_box(centre, size)
    block = tree.crop(lo, hi, shift=True)
    if clean:
        return clean_block_swc(block, (hi - lo).astype(np.float64))
    return block.sort()


def block_name(neuron, block):
    """File stem of a block: ``<neuron>_<block:04d>``."""
    return f"{neuron}_{int(block):04d}"


# --------------------------------------------------------------------------- CSV index
def read_blocks_csv(path):
    """Read a block index written by :func:`cut_blocks`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list of dict
        One dict per row with the :data:`CSV_COLUMNS` (and any extra columns, as text):
        ``block``, ``node``, ``x``, ``y``, ``z``, ``n_gold``, ``n_auto``, ``padded`` as int,
        ``label`` as int or None (empty), the rest as str (paths relative to the CSV).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file (and row) for a missing column, a non-integer value, a subset
        other than few/many or a label other than empty, 0 or 1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: block index not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        raw = list(reader)
    missing = [c for c in CSV_COLUMNS if c not in fields]
    if missing:
        raise ValueError(f"{str(path)!r}: block index lacks the column(s) {missing}")
    rows = []
    for line, r in enumerate(raw, start=2):
        row = dict(r)
        for col in _INT_COLUMNS:
            text = (r[col] or "").strip()
            try:
                row[col] = int(text)
            except ValueError:
                raise ValueError(f"{str(path)!r} line {line}: column {col!r} must be an "
                                 f"integer; got {text!r}") from None
        if row["subset"] not in ("few", "many"):
            raise ValueError(f"{str(path)!r} line {line}: subset must be 'few' or 'many'; "
                             f"got {row['subset']!r}")
        label = (r["label"] or "").strip()
        if label not in ("", "0", "1"):
            raise ValueError(f"{str(path)!r} line {line}: label must be empty, 0 or 1; "
                             f"got {label!r}")
        row["label"] = int(label) if label else None
        rows.append(row)
    return rows


def write_blocks_csv(path, rows):
    """Write a block index atomically, rows sorted by ``(neuron, block)``.

    Parameters
    ----------
    path : str or path-like
    rows : sequence of dict
        With at least the :data:`CSV_COLUMNS`; other keys are written as extra columns
        after them (in first-seen order). ``label`` None is written empty.

    Returns
    -------
    pathlib.Path
    """
    rows = list(rows)
    extra = []
    for r in rows:
        missing = [c for c in CSV_COLUMNS if c not in r]
        if missing:
            raise ValueError(f"block row {r.get('neuron')!r}/{r.get('block')!r} lacks "
                             f"{missing}")
        extra.extend(k for k in r if k not in CSV_COLUMNS and k not in extra)
    columns = list(CSV_COLUMNS) + extra
    keys = [(str(r["neuron"]), int(r["block"])) for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"block {dup[0]!r}/{dup[1]} appears twice")
    order = sorted(range(len(rows)), key=lambda i: keys[i])
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for i in order:
            w.writerow({c: "" if rows[i].get(c) is None else rows[i].get(c, "")
                        for c in columns})
    return Path(path)


# --------------------------------------------------------------------------- cutting
@dataclasses.dataclass
class BlockSummary(PrepSummary):
    """What a cutting call did: :class:`~keras_medseg.io.prep.PrepSummary` plus the rows.

    Attributes
    ----------
    rows : list of dict
        The index rows of the neurons processed (see :func:`read_blocks_csv`).
    csv_path : pathlib.Path or None
        The block index.
    """

    rows: list = dataclasses.field(default_factory=list)
    csv_path: Path = None

    def __str__(self):
        many = sum(r["subset"] == "many" for r in self.rows)
        neurons = len({r["neuron"] for r in self.rows})
        return (f"{super().__str__()}; {len(self.rows)} blocks of {neurons} neuron(s): "
                f"{many} many, {len(self.rows) - many} few (< {FEW_AUTO_NODES} auto nodes)")


def _stamp(path):
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fingerprint(value):
    if isinstance(value, (str, os.PathLike)):
        return _stamp(value)
    if isinstance(value, np.memmap) and value.filename:
        return _stamp(value.filename)
    if isinstance(value, SwcTree):
        return {"sha256": hashlib.sha256(value.to_array().tobytes()).hexdigest()}
    if isinstance(value, VolumeReader):
        return _stamp(value.path)
    arr = np.ascontiguousarray(value)
    return {"sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "shape": list(arr.shape),
            "dtype": str(arr.dtype)}


def _load_tree(value, role):
    if isinstance(value, SwcTree):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_swc(value)
    raise ValueError(f"{role} must be an SWC path or an SwcTree; got {type(value).__name__}")


def _open_image(image):
    if isinstance(image, VolumeReader):
        return image, False
    if isinstance(image, (str, os.PathLike)):
        return open_volume(image), True
    arr = image if isinstance(image, np.ndarray) else np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D (z, y, x) array or a volume path; got shape "
                         f"{arr.shape}")
    return arr, False


def _read_record(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _merge_index(csv_path, neuron, rows):
    """Replace ``neuron``'s rows of the index by ``rows``; keep a label whose block kept
    its centre and counts."""
    old = read_blocks_csv(csv_path) if Path(csv_path).is_file() else []
    previous = {r["block"]: r for r in old if r["neuron"] == neuron}
    same = ("x", "y", "z", "n_gold", "n_auto", "subset")
    merged = [r for r in old if r["neuron"] != neuron]
    for r in rows:
        p = previous.get(r["block"])
        keep = {k: v for k, v in (p or {}).items() if k not in CSV_COLUMNS}
        if p is not None and all(p[k] == r[k] for k in same):
            r = {**keep, **r, "label": p["label"]}
        merged.append(r)
    write_blocks_csv(csv_path, merged)


def _check_neuron(neuron, source=None):
    if not isinstance(neuron, str) or not _NAME.match(neuron):
        where = f"{str(source)!r}: " if source else ""
        raise ValueError(f"{where}neuron must be a name of letters, digits and _ . + - "
                         f"(starting with a letter or digit); got {neuron!r}")
    return neuron


def _input_dirs(*values):
    out = []
    for v in values:
        if isinstance(v, (str, os.PathLike)):
            out.append(Path(v).parent)
        elif isinstance(v, VolumeReader):
            out.append(v.path.parent)
    return out


def cut_blocks(image, gold_swc, auto_swc, out_dir, *, neuron, every=BLOCK_EVERY,
               size=BLOCK_SIZE, clean=True, overwrite=False, progress=True):
    """Cut one neuron into image and SWC blocks and add them to ``out_dir/blocks.csv``.

    See the module docstring for the rules and the output layout.

    Parameters
    ----------
    image : str, path-like, VolumeReader or array (Z, Y, X)
        The neuron's image volume (see :func:`open_volume` for the files read lazily).
    gold_swc, auto_swc : str, path-like or SwcTree
        Gold-standard and automatic reconstructions, voxel coordinates of ``image``.
    out_dir : str or path-like
        Output folder; outside the folders of the input files.
    neuron : str
        Neuron name (letters, digits, ``_ . + -``); names the block files and the rows.
    every : int, optional
        A block centre every ``every`` resampled gold nodes (100).
    size : (int, int, int), optional
        Block shape ``(z, y, x)`` (32, 64, 64).
    clean : bool, optional
        Clean the block SWCs (:func:`clean_block_swc`; default True).
    overwrite : bool, optional
        Redo the neuron's files even if they exist or were made from other inputs.
    progress : bool, optional
        Show a tqdm progress bar over the blocks.

    Returns
    -------
    BlockSummary
        ``written`` / ``skipped`` list the image files; ``rows`` the neuron's index rows.

    Raises
    ------
    ValueError
        For invalid options, ``out_dir`` inside an input folder, or when ``out_dir`` holds
        blocks of ``neuron`` made from other inputs or options (pass ``overwrite=True``).
    FileNotFoundError, keras_medseg.io.swc.SwcError
        For missing or malformed input files (naming them).
    """
    _check_neuron(neuron)
    every = _check_int(every, "every")
    size = _check_size(size)
    out_dir = Path(out_dir)
    check_output_location(out_dir, _input_dirs(image, gold_swc, auto_swc))
    summary = BlockSummary("cut_blocks", out_dir, csv_path=out_dir / "blocks.csv")
    _cut_neuron(image, gold_swc, auto_swc, out_dir, neuron, every=every, size=size,
                clean=bool(clean), overwrite=bool(overwrite), summary=summary,
                progress=progress)
    return summary


def _cut_neuron(image, gold_swc, auto_swc, out_dir, neuron, *, every, size, clean, overwrite,
                summary, progress):
    record_path = out_dir / ".blocks" / f"{neuron}.json"
    request = {"version": _RECORD_VERSION, "every": every, "size": list(size),
               "clean": clean, "image": _fingerprint(image),
               "gold": _fingerprint(gold_swc),
               "auto": _fingerprint(auto_swc)}
    request = json.loads(json.dumps(request))
    record = _read_record(record_path)
    csv_path = out_dir / "blocks.csv"
    if record is not None and not overwrite:
        if record.get("request") != request:
            raise ValueError(f"{str(out_dir)!r} holds blocks of neuron {neuron!r} made from "
                             f"other inputs or options (see {str(record_path)!r}); pass "
                             f"overwrite=True (--overwrite) to redo them")
        rows = record.get("rows", [])
        if all((out_dir / r[c]).is_file() for r in rows
               for c in ("image", "gold_swc", "auto_swc")):
            summary.skipped.extend(out_dir / r["image"] for r in rows)
            summary.rows.extend(rows)
            index = {(r["neuron"], r["block"]) for r in read_blocks_csv(csv_path)} \
                if csv_path.is_file() else set()
            if any((neuron, r["block"]) not in index for r in rows):
                _merge_index(csv_path, neuron, [dict(r) for r in rows])
            return
    if record_path.exists():
        record_path.unlink()  # the record is rewritten last, when the neuron is complete
    gold = _load_tree(gold_swc, "gold_swc")
    auto = _load_tree(auto_swc, "auto_swc")
    resampled, nodes, centres = block_centres(gold, every=every)
    volume, owned = _open_image(image)
    rows = []
    try:
        shape = np.array(volume.shape)
        iterator = range(len(nodes))
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"cut_blocks {neuron}", unit="block")
        for k in iterator:
            centre = centres[k]
            name = block_name(neuron, k)
            rel = {"image": f"images/{name}.npy", "gold_swc": f"gold/{name}.swc",
                   "auto_swc": f"auto/{name}.swc"}
            g = cut_swc_block(resampled, centre, size, clean=clean)
            a = cut_swc_block(auto, centre, size, clean=clean)
            corner = tuple(int(v) for v in block_box(centre, size)[0])
            for key, tree, kind in (("gold_swc", g, "gold"), ("auto_swc", a, "auto")):
                target = out_dir / rel[key]
                if overwrite or not target.is_file():
                    write_swc(target, tree, header=[
                        f"{kind} block {k} of neuron {neuron}; centre (x, y, z) "
                        f"{tuple(int(v) for v in centre)}; block coordinates = volume "
                        f"voxels - {corner}"])
            target = out_dir / rel["image"]
            lo, _ = block_box(centre, size)
            start = lo[::-1]
            padded = bool(np.any(start < 0) or np.any(start + np.array(size) > shape))
            if overwrite or not target.is_file():
                block, padded = extract_block(volume, centre, size)
                with atomic_path(target) as tmp:
                    np.save(tmp, block, allow_pickle=False)
                summary.written.append(target)
            else:
                summary.skipped.append(target)
            rows.append({"neuron": neuron, "block": k, "node": int(nodes[k]),
                         "x": int(centre[0]), "y": int(centre[1]), "z": int(centre[2]),
                         **rel, "n_gold": len(g), "n_auto": len(a),
                         "subset": "few" if len(a) < FEW_AUTO_NODES else "many",
                         "padded": int(padded), "label": None})
    finally:
        if owned:
            volume.close()
    if record is not None:  # remove files of blocks that no longer exist
        current = {r["block"] for r in rows}
        for r in record.get("rows", []):
            if r["block"] not in current:
                for c in ("image", "gold_swc", "auto_swc"):
                    (out_dir / r[c]).unlink(missing_ok=True)
    _merge_index(csv_path, neuron, [dict(r) for r in rows])
    write_json(record_path, {"request": request, "rows": rows})
    summary.rows.extend(rows)


def find_neurons(data_dir, *, gold_dir=None, auto_dir=None, image_dir=None):
    """Pair gold SWCs, automatic SWCs and image volumes by file name.

    Parameters
    ----------
    data_dir : str or path-like
        Folder with ``gold/``, ``auto/`` and ``images/`` (the layout of
        :func:`keras_medseg.sampledata.generate_neurotrace`).
    gold_dir, auto_dir, image_dir : str or path-like, optional
        Override those sub-folders.

    Returns
    -------
    list of dict
        Sorted by name: ``{"neuron": stem, "gold": Path, "auto": Path, "image": Path}``.
        Images without a gold SWC are ignored.

    Raises
    ------
    FileNotFoundError
        If a folder is missing, holds no SWC, or a gold or auto SWC lacks its partner
        SWC or image (naming them).
    ValueError
        If one name has several images (e.g. ``.tif`` and ``.nii.gz``).
    """
    from keras_medseg.io.volumes import READ_SUFFIXES

    data_dir = Path(data_dir)
    dirs = {"gold": Path(gold_dir) if gold_dir else data_dir / "gold",
            "auto": Path(auto_dir) if auto_dir else data_dir / "auto",
            "image": Path(image_dir) if image_dir else data_dir / "images"}
    for role, folder in dirs.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{role} folder {str(folder)!r} does not exist")
    swcs = {role: {p.stem: p for p in sorted(dirs[role].iterdir())
                   if p.is_file() and p.suffix.lower() == ".swc" and not p.name.startswith(".")}
            for role in ("gold", "auto")}
    if not swcs["gold"]:
        raise FileNotFoundError(f"no .swc file in {str(dirs['gold'])!r}")
    images = {}
    suffixes = VOLUME_SUFFIXES + READ_SUFFIXES
    for p in sorted(dirs["image"].iterdir()):
        low = p.name.lower()
        suffix = next((s for s in sorted(suffixes, key=len, reverse=True) if low.endswith(s)),
                      None)
        if suffix is None or not p.is_file() or p.name.startswith(".") or suffix == ".img":
            continue
        stem = p.name[:-len(suffix)]
        if stem in images:
            raise ValueError(f"neuron {stem!r} has several images: {str(images[stem])!r} and "
                             f"{str(p)!r}")
        images[stem] = p
    problems = []
    for name in sorted(set(swcs["gold"]) | set(swcs["auto"])):
        for role, table, folder in (("gold SWC", swcs["gold"], dirs["gold"]),
                                    ("auto SWC", swcs["auto"], dirs["auto"]),
                                    ("image", images, dirs["image"])):
            if name not in table:
                problems.append(f"{name}: no {role} in {str(folder)!r}")
    if problems:
        raise FileNotFoundError("unpaired neuron files (gold, auto and image are paired by "
                                "name): " + "; ".join(problems[:10]))
    return [{"neuron": n, "gold": swcs["gold"][n], "auto": swcs["auto"][n], "image": images[n]}
            for n in sorted(swcs["gold"])]


def cut_blocks_folder(data_dir, out_dir, *, gold_dir=None, auto_dir=None, image_dir=None,
                      every=BLOCK_EVERY, size=BLOCK_SIZE, clean=True, overwrite=False,
                      progress=True):
    """:func:`cut_blocks` for every neuron of a folder (paired by :func:`find_neurons`).

    Parameters
    ----------
    data_dir : str or path-like
        Folder with ``gold/``, ``auto/`` and ``images/``.
    out_dir : str or path-like
        Output folder, outside ``data_dir`` and the other input folders.
    gold_dir, auto_dir, image_dir : str or path-like, optional
        See :func:`find_neurons`.
    every, size, clean, overwrite : optional
        See :func:`cut_blocks`.
    progress : bool, optional
        A tqdm progress bar over the neurons.

    Returns
    -------
    BlockSummary
        ``written`` / ``skipped`` list the image block files; ``rows`` every index row.

    Raises
    ------
    ValueError, FileNotFoundError, keras_medseg.io.swc.SwcError
        As :func:`find_neurons` and :func:`cut_blocks`.
    """
    every = _check_int(every, "every")
    size = _check_size(size)
    out_dir = Path(out_dir)
    inputs = [data_dir] + [d for d in (gold_dir, auto_dir, image_dir) if d]
    check_output_location(out_dir, inputs)
    neurons = find_neurons(data_dir, gold_dir=gold_dir, auto_dir=auto_dir,
                           image_dir=image_dir)
    check_output_location(out_dir, [p for n in neurons for p in (n["gold"], n["auto"],
                                                                 n["image"])])
    for n in neurons:
        _check_neuron(n["neuron"], n["gold"])
    summary = BlockSummary("cut_blocks", out_dir, csv_path=out_dir / "blocks.csv")
    iterator = neurons
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(neurons, desc="cut_blocks", unit="neuron")
    for n in iterator:
        _cut_neuron(n["image"], n["gold"], n["auto"], out_dir, n["neuron"], every=every,
                    size=size, clean=bool(clean), overwrite=bool(overwrite), summary=summary,
                    progress=False)
    return summary
