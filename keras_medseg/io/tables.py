"""The nodule3d (convnet3d) CSV files: series annotations, class mapping, patch lists.

All three are header-less comma-separated files, as convnet3d wrote them; a first line that
spells the column names (below) is accepted and skipped. Blank lines are skipped.

Series CSV, one row per lesion, 7 columns::

    path/to/series,class,x,y,z,d,group

``x, y, z`` are zero-based voxel indices of the lesion centre in the series as stored
(floats allowed), ``d`` its diameter (empty when unknown), ``group`` the series id used for
grouped k-fold splits. A series WITHOUT a lesion is one row with ``x, y, z, d`` all empty and
class ``bg`` (or empty)::

    path/to/series,bg,,,,,group

It is read as a :class:`SeriesRow` with ``class_name=None`` and ``xyz=None`` and written back
with class ``bg``. Relative series paths are resolved against the CSV's folder unless
``resolve_paths=False``.

Class mapping CSV, ``class_name,class_id`` per row; ``bg,0`` is required, names and ids are
unique, ids are non-negative integers.

Patch CSV, one row per saved patch (``d`` usually empty), 7 columns::

    /path/patch.npy,class,x,y,z,d,/path/to/series

``x, y, z`` locate the patch centre (voxel indices of the resampled series).
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from keras_medseg.utils import atomic_write

__all__ = [
    "TableError", "SeriesRow", "PatchRow", "read_series_csv", "write_series_csv",
    "read_class_mapping", "write_class_mapping", "read_patch_csv", "write_patch_csv",
    "group_by_series", "SERIES_COLUMNS", "PATCH_COLUMNS", "MAPPING_COLUMNS",
]

SERIES_COLUMNS = ("path", "class", "x", "y", "z", "d", "group")
PATCH_COLUMNS = ("patch", "class", "x", "y", "z", "d", "series")
MAPPING_COLUMNS = ("class_name", "class_id")


class TableError(ValueError):
    """A malformed CSV row; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class SeriesRow:
    """One row of a series CSV.

    Attributes
    ----------
    path : str
        Series location (DICOM folder, single file, ``.mhd``/``.nrrd``/``.nii``...).
    class_name : str or None
        Lesion class; None for a series without lesion.
    xyz : tuple of 3 float or None
        Lesion centre ``(x, y, z)``, zero-based voxel indices; None without lesion.
    diameter : float or None
        Lesion diameter; None when not given.
    group : str
        Series id for grouped splits.
    line : int
        Line number in the file it was read from (0 when built in code).
    """

    path: str
    class_name: str | None
    xyz: tuple | None
    diameter: float | None
    group: str
    line: int = 0

    @property
    def has_lesion(self):
        return self.xyz is not None


@dataclasses.dataclass(frozen=True)
class PatchRow:
    """One row of a patch CSV: ``patch`` (.npy path), ``class_name``, centre ``xyz``,
    ``diameter`` (or None), source ``series`` path, and the ``line`` it was read from."""

    patch: str
    class_name: str
    xyz: tuple
    diameter: float | None
    series: str
    line: int = 0


# ---------------------------------------------------------------------- reading helpers
def _rows(path, columns):
    """Yield (line number, fields) for non-blank rows, skipping a header line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CSV file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        first = True
        try:
            for fields in reader:
                lineno = reader.line_num
                if not fields or all(not v.strip() for v in fields):
                    continue
                fields = [v.strip() for v in fields]
                if first and [v.lower() for v in fields] == list(columns):
                    first = False
                    continue
                first = False
                yield lineno, fields
        except csv.Error as e:
            raise TableError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None


def _check_width(path, lineno, fields, columns):
    if len(fields) != len(columns):
        raise TableError(f"{path}: line {lineno}: expected {len(columns)} columns "
                         f"({','.join(columns)}); got {len(fields)}: {','.join(fields)[:120]!r}")


def _number(path, lineno, column, text, *, positive=False, nonnegative=False):
    try:
        value = float(text)
    except ValueError:
        raise TableError(f"{path}: line {lineno}: column {column!r} must be a number; "
                         f"got {text!r}") from None
    if not math.isfinite(value):
        raise TableError(f"{path}: line {lineno}: column {column!r} must be finite; got {text!r}")
    if positive and value <= 0:
        raise TableError(f"{path}: line {lineno}: column {column!r} must be positive; got {text!r}")
    if nonnegative and value < 0:
        raise TableError(f"{path}: line {lineno}: column {column!r} must be >= 0 (zero-based "
                         f"voxel index); got {text!r}")
    return value


def _xyz(path, lineno, fields):
    return tuple(_number(path, lineno, c, v, nonnegative=True)
                 for c, v in zip(("x", "y", "z"), fields))


def _check_class(path, lineno, name, classes):
    if classes is not None and name not in classes:
        raise TableError(f"{path}: line {lineno}: unknown class {name!r} "
                         f"(known: {', '.join(sorted(classes))})")


def _resolve(base, text, resolve):
    if not resolve or not text:
        return text
    p = Path(text)
    return str(p if p.is_absolute() else (base / p))


# ---------------------------------------------------------------------- series CSV
def read_series_csv(path, *, classes=None, resolve_paths=True):
    """Read a series CSV (see the module docstring).

    Parameters
    ----------
    path : str or path-like
    classes : mapping or collection of str, optional
        Known class names (e.g. from :func:`read_class_mapping`); lesion classes must be
        among them.
    resolve_paths : bool
        Make relative series paths relative to the CSV's folder (default True).

    Returns
    -------
    list of SeriesRow, in file order.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    TableError
        Naming the file and line: wrong number of columns, empty path or group, partial or
        non-numeric or negative coordinates, non-positive diameter, a lesion row without a
        class or with class ``bg``, a no-lesion row with another class, an unknown class.
    """
    path = Path(path)
    base = path.parent
    out = []
    for lineno, fields in _rows(path, SERIES_COLUMNS):
        _check_width(path, lineno, fields, SERIES_COLUMNS)
        series, name, x, y, z, d, group = fields
        if not series:
            raise TableError(f"{path}: line {lineno}: empty series path")
        if not group:
            raise TableError(f"{path}: line {lineno}: empty group (series id)")
        coords = (x, y, z)
        if not any(coords):
            if d:
                raise TableError(f"{path}: line {lineno}: diameter {d!r} given without "
                                 f"x, y, z")
            if name not in ("", "bg"):
                raise TableError(f"{path}: line {lineno}: class {name!r} without x, y, z; a "
                                 f"series without lesion has class 'bg' or empty")
            out.append(SeriesRow(_resolve(base, series, resolve_paths), None, None, None,
                                 group, lineno))
            continue
        if not all(coords):
            raise TableError(f"{path}: line {lineno}: x, y, z must be all given or all "
                             f"empty; got {x!r}, {y!r}, {z!r}")
        if not name or name == "bg":
            raise TableError(f"{path}: line {lineno}: a lesion row needs a class other than "
                             f"'bg'; got {name!r}")
        _check_class(path, lineno, name, classes)
        diameter = _number(path, lineno, "d", d, positive=True) if d else None
        out.append(SeriesRow(_resolve(base, series, resolve_paths), name,
                             _xyz(path, lineno, coords), diameter, group, lineno))
    return out


def _fmt(value):
    if value is None:
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)


def write_series_csv(path, rows):
    """Write :class:`SeriesRow` objects as a header-less series CSV, atomically; returns the
    path. Rows without lesion are written as ``path,bg,,,,,group``."""
    lines = []
    for i, r in enumerate(rows):
        if not isinstance(r, SeriesRow):
            raise ValueError(f"rows[{i}] must be a SeriesRow; got {type(r).__name__}")
        if r.xyz is None:
            lines.append([r.path, "bg", "", "", "", "", r.group])
        else:
            lines.append([r.path, r.class_name, *map(_fmt, r.xyz), _fmt(r.diameter), r.group])
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(lines)
    return Path(path)


def group_by_series(rows):
    """``{series path: [lesion rows]}`` in first-seen order (no-lesion series map to [])."""
    out = {}
    for r in rows:
        out.setdefault(r.path, [])
        if r.has_lesion:
            out[r.path].append(r)
    return out


# ---------------------------------------------------------------------- class mapping
def read_class_mapping(path):
    """Read ``class_name,class_id`` rows into a dict (file order).

    Raises
    ------
    FileNotFoundError, TableError
        Naming the file (and line): wrong number of columns, empty name, non-integer or
        negative id, duplicate name or id, or no ``bg,0`` row.
    """
    path = Path(path)
    out, seen_ids = {}, {}
    for lineno, fields in _rows(path, MAPPING_COLUMNS):
        _check_width(path, lineno, fields, MAPPING_COLUMNS)
        name, text = fields
        if not name:
            raise TableError(f"{path}: line {lineno}: empty class name")
        try:
            cid = int(text)
        except ValueError:
            raise TableError(f"{path}: line {lineno}: class id must be an integer; "
                             f"got {text!r}") from None
        if cid < 0:
            raise TableError(f"{path}: line {lineno}: class id must be >= 0; got {cid}")
        if name in out:
            raise TableError(f"{path}: line {lineno}: duplicate class name {name!r}")
        if cid in seen_ids:
            raise TableError(f"{path}: line {lineno}: class id {cid} already used by "
                             f"{seen_ids[cid]!r}")
        out[name] = cid
        seen_ids[cid] = name
    if out.get("bg") != 0:
        raise TableError(f"{path}: the background mapping 'bg,0' is required")
    return out


def write_class_mapping(path, mapping):
    """Write ``{class_name: class_id}`` (must map ``bg`` to 0, unique non-negative ids),
    header-less and atomically; returns the path."""
    mapping = dict(mapping)
    if mapping.get("bg") != 0:
        raise ValueError(f"mapping must contain 'bg': 0; got {mapping!r}")
    ids = list(mapping.values())
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids) \
            or len(set(ids)) != len(ids):
        raise ValueError(f"mapping ids must be unique non-negative integers; got {mapping!r}")
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([[k, v] for k, v in mapping.items()])
    return Path(path)


# ---------------------------------------------------------------------- patch CSV
def read_patch_csv(path, *, classes=None, resolve_paths=True):
    """Read a patch CSV (see the module docstring).

    Parameters
    ----------
    classes : mapping or collection of str, optional
        Known class names (``bg`` included); each row's class must be among them.
    resolve_paths : bool
        Make relative patch and series paths relative to the CSV's folder.

    Returns
    -------
    list of PatchRow

    Raises
    ------
    FileNotFoundError, TableError
        Naming the file and line: wrong number of columns, empty patch path, class or series,
        missing / non-numeric / negative coordinates, non-positive diameter, unknown class.
    """
    path = Path(path)
    base = path.parent
    out = []
    for lineno, fields in _rows(path, PATCH_COLUMNS):
        _check_width(path, lineno, fields, PATCH_COLUMNS)
        patch, name, x, y, z, d, series = fields
        for column, value in (("patch", patch), ("class", name), ("series", series),
                              ("x", x), ("y", y), ("z", z)):
            if not value:
                raise TableError(f"{path}: line {lineno}: column {column!r} is empty")
        _check_class(path, lineno, name, classes)
        out.append(PatchRow(_resolve(base, patch, resolve_paths), name,
                            _xyz(path, lineno, (x, y, z)),
                            _number(path, lineno, "d", d, positive=True) if d else None,
                            _resolve(base, series, resolve_paths), lineno))
    return out


def write_patch_csv(path, rows):
    """Write :class:`PatchRow` objects as a header-less patch CSV, atomically."""
    lines = []
    for i, r in enumerate(rows):
        if not isinstance(r, PatchRow):
            raise ValueError(f"rows[{i}] must be a PatchRow; got {type(r).__name__}")
        lines.append([r.patch, r.class_name, *map(_fmt, r.xyz), _fmt(r.diameter), r.series])
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(lines)
    return Path(path)
