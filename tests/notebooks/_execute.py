"""Shared helper for the notebook tests: execute a notebook with nbclient at a tiny size."""
import contextlib
import os
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@contextlib.contextmanager
def _environment(env):
    """Set ``env`` (the kernel inherits it) and restore the previous values afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebook(name, env, *, cwd, timeout=600):
    """Execute ``notebooks/<name>`` (or a path) in the ``python3`` kernel of this interpreter
    with ``env`` set and ``cwd`` as working folder; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(name) if os.path.isabs(str(name)) else NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    with _environment(env):
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def output_text(nb):
    """All text the notebook's code cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def output_images(nb):
    """The PNG outputs of the notebook's code cells."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
