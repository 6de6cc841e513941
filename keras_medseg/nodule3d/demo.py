"""Demo stage ``nodule3d``: the two-stage detector on synthetic CT volumes, one fold.

Synthetic chest-CT-like series with spherical nodules
(:func:`keras_medseg.sampledata.nodule3d.generate_nodule3d`) go through the whole fold loop
of :func:`keras_medseg.nodule3d.pipeline.run_pipeline` at quick size: k-fold split, stage-1
patches, stage-1 training with online sample filtering, stage-2 mining and training with the
hybrid loss, whole-volume detection on the test series, FROC curve and CPM.
"""
from __future__ import annotations

import dataclasses

from keras_medseg.demo import Artifact, StageResult, register_stage


@register_stage("nodule3d", description="two-stage 3D nodule detector on synthetic CT: one "
                                        "fold through both stages to a FROC curve and CPM",
                order=30)
def run(stage_dir, *, seed=0, quick=True):
    from keras_medseg.nodule3d.pipeline import quick_configs, run_pipeline
    from keras_medseg.sampledata.nodule3d import generate_nodule3d

    n_series, shape = (6, (32, 128, 128)) if quick else (12, (48, 128, 128))
    sample = generate_nodule3d(stage_dir / "data", seed=seed, n_series=n_series, shape=shape,
                               spacing=(2.0, 0.8, 0.8), nodules_per_series=(1, 2),
                               diameter_range=(5.0, 20.0))
    pipeline, stage1, stage2, evaluation = quick_configs(
        stage1_epochs=10 if quick else 30, stage2_epochs=1 if quick else 5)
    pipeline = dataclasses.replace(pipeline, k=3, folds=(0,), seed=seed, save_detector=False)
    result = run_pipeline(sample.series_csv, stage_dir / "run", pipeline=pipeline,
                          stage1=stage1, stage2=stage2, evaluation=evaluation,
                          log=lambda message: None)
    pooled = result.pooled.froc
    rel = "run/summary"
    summary = (
        f"{n_series} synthetic CT series of {shape} voxels at (2.0, 0.8, 0.8) mm with "
        f"{len(sample.nodules)} nodules of 5-20 mm, resampled to 1 mm; fold 0 of 3 "
        f"({pooled.num_scans} test series, {pooled.num_lesions} nodules). Quick mode: "
        f"{stage1.epochs} stage-1 epochs, {stage2.epochs} stage-2 epoch(s) at learning rate "
        f"1e-3 (the original trains 50 epochs per stage at 1e-5), so the figures show the "
        f"pipeline working, not the detector's accuracy (see the README for the longer run).\n\n"
        f"CPM {pooled.cpm:.3f}; {pooled.num_detected} of {pooled.num_lesions} nodules hit by "
        f"a candidate; {pooled.num_false_positives} false-positive candidates.")
    return StageResult(summary=summary, artifacts=[
        Artifact("FROC curve (pooled test series)", f"{rel}/froc.png", "figure"),
        Artifact("Sensitivity at the LUNA16 FP rates and CPM", f"{rel}/froc.md", "table"),
        Artifact("Recall and FPs/scan at score thresholds", f"{rel}/recall.md", "table"),
        Artifact("Per-fold table", f"{rel}/folds.md", "table"),
        Artifact("Candidates (mm, resampled grid)", f"{rel}/candidates.csv"),
        Artifact("Stage-1 training log", "run/fold0/stage1/log.csv"),
        Artifact("Stage-2 training log", "run/fold0/stage2/log.csv"),
    ])
