"""The one training runner every task uses.

A :class:`Runner` owns a run folder and a distribution strategy. It builds and compiles
models inside ``strategy.scope()``, and runs ``Model.fit`` with the shared callbacks:

=============================  =============================================================
``log.csv``                    :class:`~keras_medseg.training.callbacks.EpochCSVLogger`, one
                               row per epoch of every stage, no repeated epochs after resume
``best.keras`` / ``best.json`` :class:`~keras_medseg.training.callbacks.BestModelCheckpoint`
                               of the best ``monitor`` value (across stages and resumes)
``backup/<stage>/``            ``keras.callbacks.BackupAndRestore``: a killed run started again
                               with the same arguments continues after its last finished epoch
``stages/<stage>.json`` and    a finished stage's history and weights: a rerun skips the
``stages/<stage>.weights.h5``  stage and loads them
``tensorboard/``               ``keras.callbacks.TensorBoard`` (optional)
``config.json``, ``splits/``   :meth:`Runner.save_config`, :meth:`Runner.save_splits`
=============================  =============================================================

``BackupAndRestore`` restores the weights and the epoch; the optimizer state (e.g. Adam's
moments) restarts. Under a multi-worker strategy only the chief writes these files.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import keras

from keras_medseg._checks import check_choice
from keras_medseg.training.callbacks import (
    BestModelCheckpoint,
    EpochCSVLogger,
    TqdmProgress,
    read_csv_log,
)
from keras_medseg.training.distribute import get_strategy, is_chief
from keras_medseg.training.config import config_sections, save_config
from keras_medseg.utils import atomic_path, write_json, write_text

__all__ = ["Runner", "train"]

PROGRESS = ("keras", "tqdm", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _tensorboard_available():
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    warnings.warn("the tensorboard package is not installed: no TensorBoard logs are written "
                  "(pip install tensorboard)", RuntimeWarning, stacklevel=3)
    return False


def _check_name(value, *, name):
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{name} must be a file-name-safe string (letters, digits, '_', '-', "
                         f"'.'); got {value!r}")
    return value


class Runner:
    """Strategy, callbacks, logs and resume for ``Model.fit``.

    Parameters
    ----------
    run_dir : str or Path, optional
        Run folder; None writes nothing (no log file, checkpoint or backup).
    strategy : {"default", "mirrored", "multiworker"} or strategy
        See :func:`keras_medseg.training.distribute.get_strategy`.
    seed : int, optional
        Passed to ``keras.utils.set_random_seed`` (Python, NumPy and backend seeds).
    monitor : str
        Quantity the best checkpoint follows.
    mode : {"auto", "min", "max"}
        Direction of ``monitor``.
    tensorboard : bool
        Add a TensorBoard callback (``run_dir/tensorboard``) when the ``tensorboard`` package
        is installed; without it a warning is issued here and no TensorBoard logs are written.
    progress : {"keras", "tqdm", "none"}
        Keras' progress bar, an epoch-level tqdm bar, or nothing.
    resume : bool
        Continue an interrupted run found in ``run_dir``; False starts every stage afresh
        (old log rows of re-run epochs are replaced).
    """

    def __init__(self, run_dir=None, *, strategy="default", seed=None, monitor="val_loss",
                 mode="auto", tensorboard=True, progress="keras", resume=True):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.strategy = get_strategy(strategy)
        check_choice(progress, PROGRESS, name="progress")
        check_choice(mode, ("auto", "min", "max"), name="mode")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name; got {monitor!r}")
        self.monitor, self.mode = monitor, mode
        self.progress, self.resume = progress, bool(resume)
        self.tensorboard = bool(tensorboard) and run_dir is not None and _tensorboard_available()
        self.seed = seed
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
        self.is_chief = is_chief(self.strategy)
        self._logger = None
        if self.run_dir is not None and not self.resume and self._writes():
            # A fresh run must not compete with the best score of an earlier one.
            for stale in (self.best_model_path, self.best_model_path.with_suffix(".json")):
                stale.unlink(missing_ok=True)

    # -- paths ------------------------------------------------------------------------------
    def _writes(self):
        return self.run_dir is not None and self.is_chief

    @property
    def log_path(self):
        return None if self.run_dir is None else self.run_dir / "log.csv"

    @property
    def best_model_path(self):
        return None if self.run_dir is None else self.run_dir / "best.keras"

    def _stage_files(self, stage):
        d = self.run_dir / "stages"
        return d / f"{stage}.json", d / f"{stage}.weights.h5"

    # -- building ---------------------------------------------------------------------------
    def scope(self):
        """``strategy.scope()``: create models, optimizers and metrics inside it."""
        return self.strategy.scope()

    def build(self, build_fn, *args, **kwargs):
        """Call ``build_fn(*args, **kwargs)`` inside the strategy scope; return the model."""
        with self.scope():
            return build_fn(*args, **kwargs)

    def compile(self, model, *, optimizer, loss, metrics=None, **kwargs):
        """``model.compile`` inside the strategy scope.

        ``optimizer`` may be a zero-argument callable returning the optimizer, so that it is
        created inside the scope (needed by mirrored strategies), a string or an instance.
        """
        with self.scope():
            if callable(optimizer) and not isinstance(optimizer, keras.optimizers.Optimizer):
                optimizer = optimizer()
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        return model

    # -- run metadata -----------------------------------------------------------------------
    def save_config(self, **sections):
        """Write the resolved configs to ``run_dir/config.json`` (see
        :func:`keras_medseg.training.config.save_config`); returns the path or None.

        Raises
        ------
        ValueError
            When resuming a run folder that holds training state (finished stages or a
            backup) of a run whose ``config.json`` has other settings: resuming would reuse
            its weights and skip its finished stages. Settings that do not change the
            result (:data:`RESUME_FREE_KEYS`) may differ, and keys the old file lacks
            (fields added since) are not compared.
        """
        if not self._writes():
            return None
        if self.resume:
            self._check_same_settings(sections)
        return save_config(self.run_dir, **sections)

    #: Config keys that may change between a run and its resumption.
    RESUME_FREE_KEYS = frozenset({"progress", "tensorboard", "resume", "strategy", "verbose",
                                  "run_eagerly"})

    def _check_same_settings(self, sections):
        path = self.run_dir / "config.json"
        state = [self.run_dir / "stages", self.run_dir / "backup"]
        if not path.is_file() or not any(d.is_dir() and any(d.iterdir()) for d in state):
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return                      # unreadable: nothing to compare with, overwritten
        old.pop("versions", None)
        changed = _differences(old, config_sections(**sections), self.RESUME_FREE_KEYS)
        if changed:
            shown = "; ".join(changed[:5]) + (f"; ... ({len(changed)} in all)"
                                                if len(changed) > 5 else "")
            raise ValueError(
                f"run folder {str(self.run_dir)!r} holds a run with other settings ({shown}); "
                f"resuming it would reuse its trained weights. Use another run folder, or "
                f"resume=False to train again from scratch in it")

    def save_splits(self, splits):
        """Write ``run_dir/splits/<name>.txt``, one item (file name, id) per line.

        Parameters
        ----------
        splits : Mapping[str, Iterable[str]]
            E.g. ``{"train": [...], "val": [...], "test": [...]}``.

        Returns
        -------
        dict
            Split name -> written path (empty without a run folder).

        Raises
        ------
        ValueError
            For split names that are not file-name safe, or items with line breaks.
        """
        if not hasattr(splits, "items"):
            raise ValueError(f"splits must be a mapping name -> items; got {type(splits).__name__}")
        checked = {}
        for name, items in splits.items():
            _check_name(name, name="split name")
            items = [str(i) for i in items]
            if any("\n" in i or "\r" in i for i in items):
                raise ValueError(f"split {name!r} has an item containing a line break")
            checked[name] = items
        if not self._writes():
            return {}
        return {name: write_text(self.run_dir / "splits" / f"{name}.txt",
                                 "".join(f"{i}\n" for i in items))
                for name, items in checked.items()}

    # -- fitting ----------------------------------------------------------------------------
    def callbacks(self, stage):
        """The shared callbacks for ``stage`` (the CSV logger is ``self.logger``)."""
        writes = self._writes()
        cbs = []
        if self.run_dir is not None and self.resume:
            cbs.append(keras.callbacks.BackupAndRestore(str(self.run_dir / "backup" / stage)))
        self._logger = EpochCSVLogger(self.log_path if writes else None, stage=stage)
        cbs.append(self._logger)
        if writes:
            cbs.append(BestModelCheckpoint(self.best_model_path, monitor=self.monitor,
                                           mode=self.mode))
            if self.tensorboard:
                cbs.append(keras.callbacks.TensorBoard(str(self.run_dir / "tensorboard"),
                                                       write_graph=False))
        if self.progress == "tqdm":
            cbs.append(TqdmProgress(desc=stage))
        return cbs

    def fit(self, model, train_data, val_data=None, *, epochs, initial_epoch=0, stage="train",
            callbacks=(), verbose="auto", **fit_kwargs):
        """Run ``model.fit`` for epochs ``initial_epoch .. epochs - 1`` of ``stage``.

        A stage finished earlier in this run folder is not run again: its weights and history
        are loaded (when ``resume``). An interrupted stage continues after its last finished
        epoch.

        Parameters
        ----------
        model : keras.Model
            Compiled (see :meth:`compile`).
        train_data, val_data
            A ``tf.data.Dataset`` of ``(x, y)`` batches (or anything else ``Model.fit`` takes
            as ``x``), or an ``(x, y)`` tuple of arrays; ``val_data`` is ``validation_data``.
        epochs : int
            Index of the epoch to stop before (as in ``Model.fit``).
        initial_epoch : int
            First epoch of this stage (the number of epochs of earlier stages).
        stage : str
            File-name-safe stage name.
        callbacks : sequence
            Extra callbacks, run after the shared ones.
        verbose
            Passed to ``Model.fit`` when ``progress == "keras"``.
        **fit_kwargs
            Other ``Model.fit`` arguments (``class_weight``, ``steps_per_epoch`` ...).

        Returns
        -------
        dict
            ``{"epoch": [...], "loss": [...], ...}``: every epoch of this stage, including
            those run before an interruption.

        Raises
        ------
        ValueError
            For a bad stage name or ``epochs < initial_epoch``.
        """
        _check_name(stage, name="stage")
        for value, name in ((epochs, "epochs"), (initial_epoch, "initial_epoch")):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int; got {value!r}")
        if epochs < initial_epoch:
            raise ValueError(f"epochs ({epochs}) must be >= initial_epoch ({initial_epoch})")
        reserved = {"epochs", "initial_epoch", "callbacks", "validation_data", "x", "y"}
        bad = reserved & set(fit_kwargs)
        if bad:
            raise ValueError(f"pass {sorted(bad)} as Runner.fit arguments, not fit_kwargs")

        if self.run_dir is not None and self.resume:
            done = self._load_finished_stage(model, stage)
            if done is not None:
                return done
        if self.run_dir is not None and not self.resume:
            shutil.rmtree(self.run_dir / "backup" / stage, ignore_errors=True)

        cbs = self.callbacks(stage) + list(callbacks)
        if self.progress != "keras":
            verbose = 0
        # Keras keeps the epoch restored by BackupAndRestore on the model and would start any
        # later fit() there; clear it so each stage starts at its own initial_epoch.
        if getattr(model, "_initial_epoch", None) is not None:
            model._initial_epoch = None
        if not isinstance(train_data, tuple) and "shuffle" not in fit_kwargs:
            # Datasets and PyDatasets shuffle themselves; Keras would warn that it ignores
            # its default shuffle=True for them.
            fit_kwargs["shuffle"] = False
        try:
            x, y = train_data, None
            if isinstance(train_data, tuple):
                if len(train_data) != 2:
                    raise ValueError(f"train_data as a tuple must be (x, y); got "
                                     f"{len(train_data)} elements")
                x, y = train_data
            keras_history = model.fit(x, y, validation_data=val_data, epochs=epochs,
                                      initial_epoch=initial_epoch, callbacks=cbs,
                                      verbose=verbose, **fit_kwargs)
        finally:
            if getattr(model, "_initial_epoch", None) is not None:
                model._initial_epoch = None
        history = self._logger.history(stage)
        if not history["epoch"]:  # nothing ran (epochs == initial_epoch)
            history = {"epoch": list(keras_history.epoch), **keras_history.history}
        if self._writes():
            self._save_finished_stage(model, stage, history)
        return history

    def _save_finished_stage(self, model, stage, history):
        json_path, weights_path = self._stage_files(stage)
        with atomic_path(weights_path) as tmp:
            model.save_weights(tmp)
        write_json(json_path, {"stage": stage, "history": history})

    def _load_finished_stage(self, model, stage):
        json_path, weights_path = self._stage_files(stage)
        if not (json_path.is_file() and weights_path.is_file()):
            return None
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"stage record {str(json_path)!r} is not valid JSON ({exc}); "
                             f"delete it to run stage {stage!r} again") from None
        with warnings.catch_warnings():
            # the saved optimizer state is not needed: every stage compiles a fresh optimizer
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(weights_path))
        return record["history"]

    def history(self, stage=None):
        """History of ``stage`` (default: all stages, with a ``stage`` list) from ``log.csv``."""
        if self.log_path is None:
            raise ValueError("this Runner has no run_dir, so there is no log to read")
        rows = {r["epoch"]: r for r in read_csv_log(self.log_path)}
        if stage is None:
            return _all_stages(rows)
        logger = EpochCSVLogger(None, stage=stage)
        logger.rows = rows
        return logger.history()


def _differences(old, new, free, prefix=""):
    """``"key: old -> new"`` for every leaf that differs, keys in ``free`` and keys new
    since the old run (config fields added by a later version, which default to the old
    behaviour) excepted."""
    out = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in free or key not in old:
                continue
            name = f"{prefix}{key}"
            if key not in new:
                out.append(f"{name}: {old[key]!r} -> missing")
            else:
                out += _differences(old[key], new[key], free, prefix=name + ".")
    elif old != new:
        out.append(f"{prefix.rstrip('.')}: {old!r} -> {new!r}")
    return out


def _all_stages(rows):
    ordered = [rows[e] for e in sorted(rows)]
    out = {"epoch": [r["epoch"] for r in ordered], "stage": [r.get("stage", "") for r in ordered]}
    keys = []
    for r in ordered:
        keys += [k for k in r if k not in ("epoch", "stage") and k not in keys]
    for k in keys:
        out[k] = [r.get(k, float("nan")) for r in ordered]
    return out


def train(build_model, train_data, val_data=None, *, epochs, compile_kwargs, run_dir=None,
          strategy="default", seed=None, configs=None, splits=None, stage="train",
          initial_epoch=0, callbacks=(), verbose="auto", fit_kwargs=None, **runner_kwargs):
    """Build, compile and fit a model with the shared runner in one call.

    Parameters
    ----------
    build_model : callable
        ``build_model() -> keras.Model``; called inside the strategy scope.
    train_data, val_data
        As for :meth:`Runner.fit`.
    epochs : int
        Number of epochs (stop before this index).
    compile_kwargs : dict
        ``optimizer`` (instance, string or zero-argument factory), ``loss``, ``metrics`` ...
    run_dir : str or Path, optional
        Run folder (see :class:`Runner`).
    strategy, seed
        As for :class:`Runner`.
    configs : dict, optional
        Section name -> dataclass config, written to ``config.json``.
    splits : dict, optional
        Split name -> items, written to ``splits/<name>.txt``.
    stage, initial_epoch, callbacks, verbose
        As for :meth:`Runner.fit`.
    fit_kwargs : dict, optional
        Extra ``Model.fit`` arguments.
    **runner_kwargs
        Other :class:`Runner` options (``monitor``, ``tensorboard``, ``progress``, ``resume``).

    Returns
    -------
    model : keras.Model
    history : dict
    """
    runner = Runner(run_dir, strategy=strategy, seed=seed, **runner_kwargs)
    if configs:
        runner.save_config(**configs)
    if splits:
        runner.save_splits(splits)
    model = runner.build(build_model)
    runner.compile(model, **dict(compile_kwargs))
    history = runner.fit(model, train_data, val_data, epochs=epochs, initial_epoch=initial_epoch,
                         stage=stage, callbacks=callbacks, verbose=verbose, **dict(fit_kwargs or {}))
    return model, history
