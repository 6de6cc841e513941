"""The nodule3d fold loop as one command: k-fold split, patches, both stages, evaluation.

Per fold ``f`` (:func:`run_fold`)::

    make_kfold -> stage-1 patches (train side) -> train stage 1 -> mine stage-2 patches with
    it -> regression targets -> train stage 2 (C1-C3 from stage 1) -> evaluate on the test side

and :func:`run_pipeline` runs the selected folds and pools their evaluations.

Every step is resumable and idempotent: a finished step leaves
``fold<f>/steps/<step>.json`` with a digest of its settings and inputs; a rerun with the
same settings skips it (and the data functions and the training runner resume inside an
interrupted step). A rerun with different settings in the same ``out_dir`` raises
``ValueError`` instead of mixing runs.

Layout of ``out_dir``::

    kfold/kfold_series<f>_{train,test}.csv
    data/          resampled cache, patches, patch CSVs, mapping.csv, regression targets
    fold<f>/stage1/, fold<f>/stage2/      run folders (model.keras, log.csv, config.json ...)
    fold<f>/stage2_m<i>/, stage2_ensemble/ with ``stage2_members > 1``: the other members and
                                          their average (model.keras)
    fold<f>/detector.keras                the full two-stage detector (optional)
    fold<f>/evaluation/                   candidates, lesions, FROC/recall tables and plot
    fold<f>/steps/<step>.json
    summary/       pooled FROC over the folds run, folds.csv/.md, pipeline.json
    <name>/        :func:`reevaluate_run`: fold<f>/ evaluations and summary/ with other
                   evaluation settings, steps/ markers
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import NamedTuple

from keras_medseg._checks import check_positive
from keras_medseg.nodule3d.data import (kfold_file_names, make_kfold, make_stage1_patches,
                                        make_stage2_patches)
from keras_medseg.nodule3d.evaluation import (EvalConfig, _score_files, evaluate_series,
                                              pool_evaluations)
from keras_medseg.nodule3d.models import _load_model, average_models, build_detector
from keras_medseg.nodule3d.training import (Stage1Config, Stage2Config, quick_stage1_config,
                                            quick_stage2_config, train_stage1, train_stage2,
                                            write_regression_targets)
from keras_medseg.training.config import config_to_dict
from keras_medseg.utils import atomic_path, write_json

__all__ = ["PipelineConfig", "FoldResult", "PipelineResult", "quick_configs", "run_fold",
           "run_pipeline", "reevaluate_run"]


@dataclasses.dataclass
class PipelineConfig:
    """Data workflow settings of the fold loop (convnet3d's defaults)."""

    k: int = dataclasses.field(default=5, metadata={"help": "number of folds"})
    folds: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "folds to run (default: all)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "split and sampling seed"})
    n_jitter: int = dataclasses.field(default=4, metadata={"help": "jittered copies/lesion"})
    max_jitter: int = 5
    jitter_in_lesion: bool = dataclasses.field(default=False, metadata={
        "help": "jittered positives stay centred inside their lesion (the original jitters "
                "every lesion by up to max_jitter voxels, off small lesions)"})
    negative_ratio: int = dataclasses.field(default=3, metadata={"help": "stage-1 negatives"})
    fp_ratio: int = dataclasses.field(default=3, metadata={"help": "stage-2 FPs per positive"})
    mining_threshold: float = dataclasses.field(
        default=0.8, metadata={"help": "stage-1 score of mined candidates"})
    spacing: float = dataclasses.field(default=1.0, metadata={"help": "resampled voxel (mm)"})
    save_detector: bool = dataclasses.field(
        default=True, metadata={"help": "save the full detector as fold<f>/detector.keras"})
    stage2_members: int = dataclasses.field(default=1, metadata={
        "help": "stage-2 networks trained with seeds seed, seed+1, ...; their outputs are "
                "averaged (1 = one network, the original)"})

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k must be an int >= 2; got {self.k!r}")
        bad = [f for f in self.folds if not 0 <= int(f) < self.k]
        if bad:
            raise ValueError(f"folds must be in [0, k={self.k}); got {list(self.folds)}")
        for name in ("n_jitter", "max_jitter", "negative_ratio", "fp_ratio"):
            check_positive(getattr(self, name), name=name, allow_zero=True)
        check_positive(self.spacing, name="spacing")
        if not isinstance(self.stage2_members, int) or self.stage2_members < 1:
            raise ValueError(f"stage2_members must be an int >= 1; got {self.stage2_members!r}")
        if not 0 <= self.mining_threshold <= 1:
            raise ValueError(f"mining_threshold must be in [0, 1]; got {self.mining_threshold}")


class FoldResult(NamedTuple):
    """Paths of one fold's outputs and its FROC report."""

    fold: int
    stage1_model: Path
    stage2_model: Path
    evaluation_dir: Path
    report: object


class PipelineResult(NamedTuple):
    """:func:`run_pipeline`' result: per-fold results, the pooled report and the summary
    folder (``folds.md``, ``froc.png`` ...)."""

    folds: list
    pooled: object
    summary_dir: Path


def quick_configs(*, stage1_epochs=8, stage2_epochs=2):
    """Settings of the quick mode: ``(PipelineConfig, Stage1Config, Stage2Config,
    EvalConfig)`` with one jittered copy less work (2 copies, FP ratio 1), the quick training
    configs (:func:`~keras_medseg.nodule3d.training.quick_stage1_config`), 30 candidates per
    scan and 200 bootstrap resamples."""
    return (PipelineConfig(n_jitter=2, fp_ratio=1, save_detector=True),
            quick_stage1_config(epochs=stage1_epochs),
            quick_stage2_config(epochs=stage2_epochs),
            EvalConfig(max_candidates=30, bootstrap=200))


def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Steps:
    """Done-markers of one fold's steps."""

    def __init__(self, folder, log):
        self.folder = Path(folder)
        self.log = log

    def record(self, name):
        """The done-marker of a finished step (step, digest, settings, result, seconds)."""
        return json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))

    def run(self, name, settings, func):
        marker = self.folder / f"{name}.json"
        digest = _digest(settings)
        if marker.is_file():
            record = json.loads(marker.read_text(encoding="utf-8"))
            if record.get("digest") == digest:
                self.log(f"[nodule3d] {self.folder.parent.name}: {name}: done, skipped")
                return record["result"], digest
            raise ValueError(f"{marker}: step {name!r} was run with other settings in this "
                             f"out_dir; use another out_dir (or delete {self.folder.parent})")
        self.log(f"[nodule3d] {self.folder.parent.name}: {name} ...")
        t0 = time.perf_counter()
        result = func()
        write_json(marker, dict(step=name, digest=digest, settings=settings, result=result,
                                seconds=time.perf_counter() - t0))
        return result, digest


def _configs(pipeline, stage1, stage2, evaluation):
    return (PipelineConfig() if pipeline is None else pipeline,
            Stage1Config() if stage1 is None else stage1,
            Stage2Config() if stage2 is None else stage2,
            EvalConfig() if evaluation is None else evaluation)


def run_fold(fold, out_dir, *, pipeline=None, stage1=None, stage2=None, evaluation=None,
             classes=None, progress=False, log=print):
    """Run one fold after :func:`make_kfold` wrote ``out_dir/kfold`` (see the module).

    Parameters
    ----------
    fold : int
    out_dir : path-like
    pipeline, stage1, stage2, evaluation : configs, optional
        Defaults: the original's settings.
    classes : path-like or mapping, optional
        Class mapping (``bg`` 0); default from the series CSV.
    progress : bool
        Progress bars of the data steps.
    log : callable
        Receives one line per step.

    Returns
    -------
    FoldResult
    """
    p, c1, c2, ev = _configs(pipeline, stage1, stage2, evaluation)
    out = Path(out_dir)
    train_csv, test_csv = (out / "kfold" / n for n in kfold_file_names(fold))
    for f in (train_csv, test_csv):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: fold file missing; run make_kfold (run_pipeline "
                                    f"does) first")
    data = out / "data"
    fdir = out / f"fold{fold}"
    steps = _Steps(fdir / "steps", log)
    common = dict(seed=p.seed, n_jitter=p.n_jitter, max_jitter=p.max_jitter, spacing=p.spacing)
    if p.jitter_in_lesion:     # only then: step records of earlier runs stay valid
        common["jitter_in_lesion"] = True
    cls = str(classes) if classes is not None and not isinstance(classes, dict) else classes

    s1_csv, d1 = steps.run("stage1_patches", dict(fold=fold, classes=cls, **common,
                                                   negative_ratio=p.negative_ratio),
                           lambda: str(make_stage1_patches(
                               train_csv, data, classes=classes, negative_ratio=p.negative_ratio,
                               progress=progress, **common)))
    mapping = data / "mapping.csv"
    s1_cfg = config_to_dict(c1)
    s1_model, d2 = steps.run("train_stage1", dict(upstream=d1, config=s1_cfg),
                             lambda: str(train_stage1(s1_csv, fdir / "stage1", mapping,
                                                      config=c1)))
    s2_csv, d3 = steps.run("stage2_patches", dict(upstream=d2, fp_ratio=p.fp_ratio,
                                                  threshold=p.mining_threshold, **common),
                           lambda: str(make_stage2_patches(
                               train_csv, s1_model, data, classes=classes, fp_ratio=p.fp_ratio,
                               score_threshold=p.mining_threshold, progress=progress,
                               **common)))
    targets = None
    if c2.regression:
        targets, d3 = steps.run("regression_targets", dict(upstream=d3),
                                lambda: str(write_regression_targets(
                                    s2_csv, train_csv, data / "resampled", spacing=p.spacing)))
    # member 0 is the original's single network (step train_stage2, folder stage2/); member i
    # differs only by its seed
    members, digests = [], []
    for i in range(p.stage2_members):
        ci = dataclasses.replace(c2, seed=c2.seed + i)
        step, folder = ("train_stage2", "stage2") if i == 0 else (f"train_stage2_m{i}",
                                                                    f"stage2_m{i}")
        path, di = steps.run(step, dict(upstream=d3, config=config_to_dict(ci)),
                             lambda: str(train_stage2(
                                 s2_csv, fdir / folder, mapping, targets=targets,
                                 stage1_model=s1_model, config=ci)))
        members.append(path)
        digests.append(di)
    s2_model, d4 = members[0], digests[0]
    if len(members) > 1:
        s2_model, d4 = steps.run("stage2_ensemble", dict(members=digests),
                                 lambda: _save_model(average_models(members),
                                                     fdir / "stage2_ensemble" / "model.keras"))
    if p.save_detector:
        steps.run("detector", dict(upstream=d4, stage1=d2),
                  lambda: _save_detector(s1_model, s2_model, fdir / "detector.keras"))
    ev_dir = fdir / "evaluation"
    ev_cfg = config_to_dict(ev)
    steps.run("evaluate", dict(upstream=d4, stage1=d2, config=ev_cfg),
              lambda: float(evaluate_series(s1_model, s2_model, test_csv, ev_dir,
                                            cache_dir=data / "resampled", config=ev,
                                            spacing=p.spacing, progress=progress).froc.cpm))
    report = _score_files(ev_dir, _num_scans(ev_dir), ev, title=f"FROC (fold {fold})")
    return FoldResult(fold, Path(s1_model), Path(s2_model), ev_dir, report)


def _num_scans(ev_dir):
    return int(json.loads((Path(ev_dir) / "metrics.json").read_text(encoding="utf-8"))
               ["num_scans"])


def _save_model(model, target):
    """Save ``model`` atomically as ``target`` (folders created); returns the path as str."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        model.save(str(tmp))
    return str(target)


def _save_detector(s1_path, s2_path, target):
    return _save_model(build_detector(_load_model(s1_path), _load_model(s2_path)), target)


def run_pipeline(series_csv, out_dir, *, pipeline=None, stage1=None, stage2=None,
                 evaluation=None, classes=None, progress=False, log=print):
    """The whole k-fold experiment: split, then :func:`run_fold` per fold, then the pooled
    evaluation in ``out_dir/summary``.

    Parameters
    ----------
    series_csv : path-like
        Series CSV ``path,class,x,y,z,d,group``.
    out_dir : path-like
        Output folder (layout in the module docstring); not the folder of ``series_csv``.
    pipeline, stage1, stage2, evaluation : configs, optional
        :class:`PipelineConfig`, :class:`~keras_medseg.nodule3d.training.Stage1Config`,
        :class:`~keras_medseg.nodule3d.training.Stage2Config`,
        :class:`~keras_medseg.nodule3d.evaluation.EvalConfig`; :func:`quick_configs` gives
        the quick mode.
    classes, progress, log
        As :func:`run_fold`.

    Returns
    -------
    PipelineResult
    """
    p, c1, c2, ev = _configs(pipeline, stage1, stage2, evaluation)
    out = Path(out_dir)
    make_kfold(series_csv, out / "kfold", k=p.k, seed=p.seed)
    folds = list(p.folds) if p.folds else list(range(p.k))
    results = [run_fold(f, out, pipeline=p, stage1=c1, stage2=c2, evaluation=ev,
                        classes=classes, progress=progress, log=log) for f in folds]
    summary = out / "summary"
    pooled = pool_evaluations({r.fold: r.evaluation_dir for r in results}, summary, config=ev)
    write_json(summary / "pipeline.json", dict(
        series_csv=str(series_csv), folds=folds, cpm=pooled.froc.cpm,
        pipeline=config_to_dict(p), stage1=config_to_dict(c1), stage2=config_to_dict(c2),
        evaluation=config_to_dict(ev)))
    log(f"[nodule3d] pooled CPM over folds {folds}: {pooled.froc.cpm:.3f} "
        f"({summary / 'folds.md'})")
    return PipelineResult(results, pooled, summary)


_RESERVED = {"data", "kfold", "summary", "synthetic"}


def reevaluate_run(out_dir, name, *, evaluation=None, progress=False, log=print):
    """Evaluate the trained models of a finished :func:`run_pipeline` folder again, with
    other evaluation settings, without touching its own results.

    Every fold whose ``evaluate`` step is done is scored on its test series with its
    stage-1 model and its stage-2 model (``stage2_ensemble/`` when the run trained several
    members); the results go to ``out_dir/<name>/fold<f>/`` and the pooled FROC to
    ``out_dir/<name>/summary/`` (``folds.md``). Resumable: a rerun skips folds already
    scored with the same settings and refuses other settings in the same ``name``.

    Parameters
    ----------
    out_dir : path-like
        A run folder of :func:`run_pipeline`.
    name : str
        Folder name under ``out_dir`` for these results (not ``fold<f>``, ``data``, ``kfold``,
        ``summary``, ``synthetic``).
    evaluation : EvalConfig, optional
    progress, log
        As :func:`run_fold`.

    Returns
    -------
    EvaluationReport
        Of the pooled folds.
    """
    ev = EvalConfig() if evaluation is None else evaluation
    out = Path(out_dir)
    name = str(name)
    if (not name or Path(name).name != name or name in _RESERVED or name.startswith("fold")
            or name.startswith(".")):
        raise ValueError(f"name must be a plain folder name other than fold<f>, "
                         f"{', '.join(sorted(_RESERVED))}; got {name!r}")
    folds = sorted(int(d.name[4:]) for d in out.glob("fold*")
                   if d.name[4:].isdigit() and (d / "steps" / "evaluate.json").is_file())
    if not folds:
        raise FileNotFoundError(f"{out}: no finished fold (fold<f>/steps/evaluate.json); run "
                                f"run_folds.py first")
    target = out / name
    steps = _Steps(target / "steps", log)
    ev_cfg = config_to_dict(ev)
    dirs = {}
    for fold in folds:
        fdir = out / f"fold{fold}"
        done = _Steps(fdir / "steps", log)
        spacing = float(done.record("stage1_patches")["settings"].get("spacing", 1.0))
        # the stage-2 model the fold evaluated: the ensemble when it trained several members
        s2_step, s2_dir = (("stage2_ensemble", "stage2_ensemble")
                           if (done.folder / "stage2_ensemble.json").is_file()
                           else ("train_stage2", "stage2"))
        s1, s2 = fdir / "stage1" / "model.keras", fdir / s2_dir / "model.keras"
        for f in (s1, s2):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: model missing in a finished fold")
        test_csv = out / "kfold" / kfold_file_names(fold)[1]
        ev_dir = target / f"fold{fold}"
        upstream = [done.record(k)["digest"] for k in ("train_stage1", s2_step)]
        steps.run(f"fold{fold}", dict(upstream=upstream, config=ev_cfg),
                  lambda: float(evaluate_series(s1, s2, test_csv, ev_dir,
                                                cache_dir=out / "data" / "resampled",
                                                config=ev, spacing=spacing,
                                                progress=progress).froc.cpm))
        dirs[fold] = ev_dir
    pooled = pool_evaluations(dirs, target / "summary", config=ev)
    write_json(target / "summary" / "evaluation.json", dict(folds=folds, cpm=pooled.froc.cpm,
                                                            evaluation=ev_cfg))
    log(f"[nodule3d] {name}: pooled CPM over folds {folds}: {pooled.froc.cpm:.3f} "
        f"({target / 'summary' / 'folds.md'})")
    return pooled
