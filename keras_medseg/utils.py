"""Small shared utilities: atomic file output and headless figures.

Every file the toolkit writes goes through :func:`atomic_write` (write to a temporary file in
the same folder, then ``os.replace``), so an interrupted run never leaves a half-written
output that a resumed run would mistake for a finished one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _umask_mode():
    """File mode an ordinary ``open()`` would give (mkstemp creates files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open a temporary file beside ``path``; on success replace ``path`` with it.

    >>> with atomic_write("out.txt") as f:  # doctest: +SKIP
    ...     f.write("hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` for a writer that wants a file name
    (``np.save``, ``h5py``, SimpleITK); it replaces ``path`` only on success.
    The temporary name keeps ``path``'s suffixes so format detection still works."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text):
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path, obj):
    """Write ``obj`` as indented JSON atomically; return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(obj):
    """``json.dumps`` ``default`` of :func:`write_json`: NumPy scalars and arrays, paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def new_figure(*args, **kwargs):
    """A matplotlib ``Figure`` bound to the Agg canvas: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(*args, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, **kwargs):
    """Save ``fig`` to ``path`` atomically (format from the suffix); return the path."""
    path = Path(path)
    kwargs.setdefault("dpi", 100)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def markdown_table(rows, columns=None, floatfmt=".4g"):
    """Render a list of dicts as a GitHub markdown table."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []

    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path, rows, columns=None):
    """Write a list of dicts as CSV atomically; return the path."""
    import csv

    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up banner (oneDNN, CPU-feature notices) hidden.

    TensorFlow writes those lines straight to file descriptor 2 before its log level applies,
    so ``TF_CPP_MIN_LOG_LEVEL`` alone does not silence them. This silences descriptor 2 for
    the duration of the import only, and only when the user has not asked for TensorFlow's
    logs (``TF_CPP_MIN_LOG_LEVEL`` unset or >= 1). Errors raised by the import still reach
    Python as exceptions. Returns the module, or None when TensorFlow is not installed.
    """
    import importlib.util
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if importlib.util.find_spec("tensorflow") is None:
        return None
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0",):
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tensorflow
