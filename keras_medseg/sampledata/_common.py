"""Helpers shared by the synthetic generators: argument checks, completion markers,
atomic writes of multi-file formats and smooth random fields."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.utils import atomic_path, write_json

_MARKER_VERSION = 1


def check_seed(seed):
    """Return ``seed`` as a non-negative int; raise ValueError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def check_int(value, *, name, minimum=1):
    """Return ``value`` as an int >= ``minimum``; raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_shape(shape, *, name, ndim, minimum=8):
    """Return ``shape`` as a tuple of ``ndim`` ints >= ``minimum``; raise ValueError otherwise."""
    try:
        values = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {ndim} integers; got {shape!r}") from None
    if len(values) != ndim or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
            for v in values):
        raise ValueError(f"{name} must be {ndim} integers >= {minimum}; got {shape!r}")
    return tuple(int(v) for v in values)


def check_range(value, *, name, low=0.0, integer=False):
    """Return ``(a, b)`` with ``low <= a <= b``; raise ValueError otherwise."""
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max); got {value!r}") from None
    kinds = numbers.Integral if integer else numbers.Real
    if not all(isinstance(v, kinds) and not isinstance(v, bool) and np.isfinite(v)
               for v in (a, b)) or a < low or b < a:
        raise ValueError(f"{name} must be a pair (min, max) with {low} <= min <= max; "
                         f"got {value!r}")
    return (int(a), int(b)) if integer else (float(a), float(b))


# --------------------------------------------------------------------------------------
# Completion markers: a generator writes ``.<name>.complete.json`` last; a later call with
# the same settings reads the result back from it instead of generating again.


def _marker_path(out_dir, name):
    return Path(out_dir) / f".{name}.complete.json"


def _to_record(value, root):
    if isinstance(value, Path):
        return {"__path__": os.path.relpath(value, root)}
    if isinstance(value, dict):
        return {str(k): _to_record(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_record(v, root) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_record(value, root):
    if isinstance(value, dict):
        if set(value) == {"__path__"}:
            return Path(root) / value["__path__"]
        return {k: _from_record(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_record(v, root) for v in value]
    return value


def load_marker(out_dir, name, params, cls):
    """Return the ``cls`` instance recorded by a finished run with ``params``, or None.

    Raises
    ------
    ValueError
        If ``out_dir`` holds a finished run made with different settings.
    """
    marker = _marker_path(out_dir, name)
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # unreadable marker: generate again (files are overwritten atomically)
    if record.get("version") != _MARKER_VERSION:
        return None
    if record.get("params") != json.loads(json.dumps(params)):
        raise ValueError(
            f"{out_dir} already holds {name} sample data generated with different settings "
            f"({record.get('params')}); requested {params}. Use another out_dir or delete it.")
    fields = _from_record(record["result"], Path(out_dir))
    return cls(**fields)


def save_marker(out_dir, name, params, result):
    """Record ``result`` (a dataclass) and ``params`` as the completion marker of ``name``."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    write_json(_marker_path(out_dir, name), {
        "version": _MARKER_VERSION,
        "params": params,
        "result": _to_record(fields, Path(out_dir)),
    })


# --------------------------------------------------------------------------------------
# Writers


@contextlib.contextmanager
def atomic_file_set(paths):
    """Yield temporary paths (same base names, one hidden folder) for a writer that
    produces several linked files at once (``.mhd`` + ``.raw``, Analyze ``.hdr`` + ``.img``);
    on success move them into place, the first path last (the header that names the data)."""
    paths = [Path(p) for p in paths]
    parent = paths[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{paths[0].stem}.tmp.", dir=parent))
    try:
        tmp_paths = [tmp_dir / p.name for p in paths]
        yield tmp_paths
        for tmp, final in list(zip(tmp_paths, paths))[::-1]:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def save_pil(image, path, **kwargs):
    """Save a PIL image atomically (format from the suffix)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)
    return path


def write_sitk(image, path):
    """Write a SimpleITK image atomically; ``.mhd`` also writes its ``.raw`` beside it."""
    import SimpleITK as sitk

    path = Path(path)
    if path.suffix.lower() == ".mhd":
        with atomic_file_set([path, path.with_suffix(".raw")]) as (tmp_mhd, _):
            sitk.WriteImage(image, str(tmp_mhd))
        return path
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


# --------------------------------------------------------------------------------------
# Random fields


def smooth_noise(rng, shape, sigma, *, coarse=1):
    """Gaussian-filtered white noise normalised to mean 0, std 1.

    ``coarse`` > 1 draws the noise on a grid ``coarse`` times smaller and zooms it up
    (cubic), which is much faster for large smoothing lengths.
    """
    shape = tuple(int(s) for s in shape)
    small = tuple(max(2, -(-s // coarse)) for s in shape)
    field = ndi.gaussian_filter(rng.standard_normal(small), sigma / coarse, mode="wrap")
    if small != shape:
        factors = [s / m for s, m in zip(shape, small)]
        field = ndi.zoom(field, factors, order=1, mode="nearest", grid_mode=True)
        field = field[tuple(slice(0, s) for s in shape)]
        if field.shape != shape:
            pad = [(0, s - f) for s, f in zip(shape, field.shape)]
            field = np.pad(field, pad, mode="edge")
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)

