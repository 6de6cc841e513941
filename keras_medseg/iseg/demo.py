"""Demo stage ``iseg``: FocusNet quick training, sliding-window inference and per-class metrics.

Two short runs, each with the task's real recipe at a reduced size:

1. synthetic infant phantoms (T1 + T2 Analyze files -> ``prepare_hdf5_cutedge`` HDF5),
   a subject-level split, training on small random crops, then whole-subject
   sliding-window inference of the held-out subject;
2. the real ICBM152 template (T1 only) cut at the mid-sagittal plane: training on one
   hemisphere, evaluation on the other, at 3 mm (quick) or 2 mm (full) voxels.

Each writes the per-subject and mean tables (DSC, MHD and ASD in the ``surface`` and
``evalseg`` definitions) and overlay figures. The quick runs are far too short to converge;
the README gives the longer run's figures and command.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from keras_medseg.demo import Artifact, StageResult, register_stage
from keras_medseg.iseg import evaluation as E
from keras_medseg.iseg import pipeline as P
from keras_medseg.utils import markdown_table, write_text

__all__ = ["QUICK", "FULL", "WIDTH", "run", "run_synthetic", "run_icbm152"]

WIDTH = 0.25
"""FocusNet channel-width multiplier of every demo model (1 = the original)."""
QUICK = {
    "synthetic": dict(n_subjects=4, shape=(40, 48, 40), crop=(24, 24, 24), batch=2, repeats=2,
                      epochs=16, lr=1e-3),
    "icbm152": dict(downsample=3, crop=(24, 24, 24), batch=2, repeats=8, epochs=16, lr=1e-3),
}
FULL = {
    "synthetic": dict(n_subjects=6, shape=(64, 80, 72), crop=(32, 32, 32), batch=4, repeats=4,
                      epochs=20, lr=1e-3),
    "icbm152": dict(downsample=2, crop=(32, 32, 32), batch=4, repeats=36, epochs=10, lr=1e-3),
}


def _configs(settings, run_dir, seed, val_fraction):
    data = P.IsegDataConfig(crop_size=settings["crop"], batch_size=settings["batch"],
                            repeats=settings["repeats"], val_fraction=val_fraction, seed=seed)
    train = P.IsegTrainConfig(run_dir=str(run_dir), epochs=settings["epochs"],
                              learning_rate=settings["lr"], val_every=settings["epochs"],
                              seed=seed, progress="none", tensorboard=False)
    return data, P.IsegModelConfig(width=WIDTH), train


def run_synthetic(stage_dir, settings, seed):
    """Train on synthetic phantoms and evaluate the held-out subject(s)."""
    stage_dir = Path(stage_dir)
    data, model, train = _configs(settings, stage_dir / "run", seed, val_fraction=0.25)
    t0 = time.perf_counter()
    result = P.train_synthetic(data, model, train, n_subjects=settings["n_subjects"],
                               shape=settings["shape"], verbose=0)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = E.evaluate_subjects(result.model, result.splits["val"], stage_dir / "eval",
                             window=data.crop_size, overlap=0.25, batch_size=4)
    return result, ev, train_s, time.perf_counter() - t0


def run_icbm152(stage_dir, settings, seed, volume=None):
    """Train on one ICBM152 hemisphere and evaluate on the other."""
    stage_dir = Path(stage_dir)
    data, model, train = _configs(settings, stage_dir / "run", seed, val_fraction=0.0)
    t0 = time.perf_counter()
    result = P.train_icbm152(data, model, train, downsample=settings["downsample"],
                             volume=volume, verbose=0, fallback="synthetic", seed=seed)
    train_s = time.perf_counter() - t0
    record = json.loads((stage_dir / "run" / "data" / "split.json").read_text())
    crop = tuple(json.loads((stage_dir / "run" / "config.json").read_text())["data"]["crop_size"])
    t0 = time.perf_counter()
    ev = E.evaluate_subjects(result.model, [record["test"]], stage_dir / "eval", window=crop,
                             overlap=0.25, batch_size=4, spacing=record["spacing"])
    return result, ev, train_s, time.perf_counter() - t0, record


@register_stage("iseg", description="FocusNet 3D segmentation: quick training on synthetic "
                                    "infant phantoms and on an ICBM152 hemisphere, "
                                    "sliding-window inference, DSC/MHD/ASD tables", order=40)
def run(stage_dir, *, seed=0, quick=True):
    stage_dir = Path(stage_dir)
    settings = QUICK if quick else FULL
    syn, syn_ev, syn_train_s, syn_eval_s = run_synthetic(stage_dir / "synthetic",
                                                         settings["synthetic"], seed)
    icbm, icbm_ev, icbm_train_s, icbm_eval_s, record = run_icbm152(
        stage_dir / "icbm152", settings["icbm152"], seed)

    rows = []
    for name, ev in (("synthetic (held-out subject)", syn_ev),
                     (f"ICBM152 ({record['source']}) held-out hemisphere", icbm_ev)):
        for r in ev.summary:
            rows.append({"data": name, **{k: r[k] for k in ("class", *E.METRIC_COLUMNS)}})
    write_text(stage_dir / "metrics.md", markdown_table(rows))
    s, i = settings["synthetic"], settings["icbm152"]
    summary = (
        f"FocusNet model 1 at {WIDTH:g} of the original's channel widths "
        f"({syn.model.count_params():,} parameters), the original's optimiser "
        f"(Adam with PyTorch-style L2 weight decay 6e-4, betas 0.97/0.999) at learning rate "
        f"{s['lr']:g}, cross-entropy, sliding-window inference with Gaussian blending of "
        f"probabilities (25% overlap).\n\n"
        f"- synthetic: {s['n_subjects']} phantoms {s['shape']} (T1 + T2), train "
        f"{len(syn.splits['train'])} / held out {len(syn.splits['val'])} subjects, "
        f"{s['epochs']} epochs of {s['crop']} crops, batch {s['batch']}: training "
        f"{syn_train_s:.0f} s, inference + metrics {syn_eval_s:.0f} s; mean DSC "
        f"{syn_ev.mean_dsc:.3f}.\n"
        f"- ICBM152 ({record['source']}), T1 only, {record['spacing'][0]:g} mm voxels: trained "
        f"on one hemisphere, {i['epochs']} epochs of {i['crop']} crops, batch {i['batch']}: "
        f"training {icbm_train_s:.0f} s, inference + metrics {icbm_eval_s:.0f} s; mean DSC on "
        f"the other hemisphere {icbm_ev.mean_dsc:.3f}. (The symmetric template's hemispheres "
        f"are mirror images: this tests mirrored anatomy, not a new brain.)\n\n"
        "These runs are a few dozen optimiser steps, far from converged; see the README's "
        "iseg section for the longer run. MHD and "
        "ASD are in mm, in the standard (`surface`) and the challenge's (`evalseg`) "
        "definitions.")
    artifacts = [Artifact("Mean per class (both runs)", "metrics.md", "table")]
    for sub, ev in (("synthetic", syn_ev), ("icbm152", icbm_ev)):
        artifacts.append(Artifact(f"{sub}: per subject and class",
                                  f"{sub}/eval/metrics_per_subject.md", "table"))
        for key, path in ev.files.items():
            if key.startswith("overlay_"):
                artifacts.append(Artifact(f"{sub}: {path.stem}", f"{sub}/eval/{path.name}",
                                          "figure"))
    return StageResult(summary=summary, artifacts=artifacts)


