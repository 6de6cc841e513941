"""Callbacks of the shared runner: an epoch-keyed CSV log, a resumable best-model checkpoint
and a tqdm progress bar. Every file is written atomically (keras_medseg.utils)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import keras
import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.utils import atomic_path, write_csv, write_json

__all__ = ["BestModelCheckpoint", "EpochCSVLogger", "TqdmProgress", "read_csv_log"]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def read_csv_log(path):
    """Read a log written by :class:`EpochCSVLogger` as a list of row dicts (numbers as
    float, ``epoch`` as int, ``stage`` as str). A missing file gives ``[]``."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for row in csv.DictReader(f):
            out = {k: (v if k == "stage" else _number(v)) for k, v in row.items() if v != ""}
            if "epoch" not in out:
                raise ValueError(f"training log {str(path)!r} has a row without an 'epoch'")
            out["epoch"] = int(out["epoch"])
            rows.append(out)
    return rows


class EpochCSVLogger(keras.callbacks.Callback):
    """One CSV row per epoch (0-based ``epoch``, ``stage`` and every logged metric).

    Rows are keyed by epoch: an epoch run again after a resume replaces its row instead of
    repeating it, and rows of earlier stages or runs are kept (append on resume). The file
    is rewritten atomically at each epoch end.

    Parameters
    ----------
    path : str or Path or None
        CSV file; None keeps the rows in memory only.
    stage : str
        Written in the ``stage`` column.
    """

    def __init__(self, path=None, *, stage="train"):
        super().__init__()
        self.path = None if path is None else Path(path)
        self.stage = str(stage)
        self.rows = {}
        if self.path is not None:
            self.rows = {r["epoch"]: r for r in read_csv_log(self.path)}

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch), "stage": self.stage}
        for key, value in (logs or {}).items():
            row[key] = float(np.asarray(value))
        self.rows[int(epoch)] = row
        if self.path is not None:
            columns = ["epoch", "stage"]
            for r in self.rows.values():
                columns += [k for k in r if k not in columns]
            write_csv(self.path, [self.rows[e] for e in sorted(self.rows)], columns)

    def history(self, stage=None):
        """``{"epoch": [...], metric: [...]}`` of ``stage`` (default this logger's stage)."""
        stage = self.stage if stage is None else stage
        rows = [self.rows[e] for e in sorted(self.rows) if self.rows[e].get("stage") == stage]
        out = {"epoch": [r["epoch"] for r in rows]}
        keys = []
        for r in rows:
            keys += [k for k in r if k not in ("epoch", "stage") and k not in keys]
        for k in keys:
            out[k] = [r.get(k, math.nan) for r in rows]
        return out


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model (``.keras``) whenever ``monitor`` improves.

    The best value so far is kept in a JSON file beside the model, so a resumed run (or a
    later stage) only overwrites the checkpoint with a truly better model.

    Parameters
    ----------
    path : str or Path
        Model file; must end in ``.keras``.
    monitor : str
        Logged quantity, e.g. ``"val_loss"``; epochs without it are skipped.
    mode : {"auto", "min", "max"}
        ``"auto"``: ``"max"`` for names containing ``acc``, ``auc``, ``dice``, ``iou`` or
        ``f1``, else ``"min"``.
    state_path : str or Path, optional
        JSON file with the best value; default ``path`` with ``.json`` instead of ``.keras``.
    """

    def __init__(self, path, *, monitor="val_loss", mode="auto", state_path=None):
        super().__init__()
        self.path = Path(path)
        if self.path.suffix != ".keras":
            raise ValueError(f"path must end in .keras; got {str(path)!r}")
        self.monitor = monitor
        check_choice(mode, ("auto", "min", "max"), name="mode")
        if mode == "auto":
            mode = "max" if any(k in monitor.lower() for k in ("acc", "auc", "dice", "iou", "f1")) \
                else "min"
        self.mode = mode
        self.state_path = Path(state_path) if state_path else self.path.with_suffix(".json")
        self.best = None
        self.best_epoch = None
        if self.state_path.is_file():
            import json

            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            self.best, self.best_epoch = state.get("best"), state.get("epoch")

    def _better(self, value):
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            return
        value = float(np.asarray(logs[self.monitor]))
        if not math.isfinite(value) or not self._better(value):
            return
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)
        self.best, self.best_epoch = value, int(epoch)
        write_json(self.state_path, {"monitor": self.monitor, "mode": self.mode,
                                     "best": value, "epoch": int(epoch)})


class TqdmProgress(keras.callbacks.Callback):
    """An epoch-level tqdm bar (use with ``fit(verbose=0)``)."""

    def __init__(self, *, desc=None):
        super().__init__()
        self.desc = desc
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._bar is None:
            from tqdm.auto import tqdm

            total = self.params.get("epochs") if self.params else None
            self._bar = tqdm(total=total, initial=epoch, desc=self.desc, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            logs = logs or {}
            self._bar.set_postfix({k: f"{float(np.asarray(v)):.4g}" for k, v in logs.items()})
            self._bar.update(1)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
