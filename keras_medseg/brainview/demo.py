"""Demo stage ``brainview``: the view-recognition recipe at quick sizes.

Quick mode (the default of ``keras-medseg demo``): 64x64 input instead of 512x512, batch 16,
4 epochs at Adam 1e-3 instead of 10 at 1e-4, k = 2 folds instead of 5, no ImageNet weights.
The phantoms run the original's last-5-layer recipe on the random backbone (its
BatchNormalization statistics calibrated); the real ICBM152 slices run the offline recipe of
the README: the whole backbone trains (``fine_tune_at="0"``) with view-preserving
augmentation, its BatchNormalization statistics recomputed every 4 training batches, 15
epochs of batch 32. Steps:

1. synthetic phantoms (two atlases): k-fold + final model, tested on held-out slice blocks;
2. cross-dataset: train on atlas A, test on atlas B;
3. real ICBM152 slices in the three planes (when the real-data cache is filled), tested on
   held-out contiguous slice blocks with a 2-slice guard.
"""
from __future__ import annotations

import dataclasses

from keras_medseg.brainview.data import (ICBM152_MIRROR, ViewSlices, icbm152_views,
                                         load_png_views)
from keras_medseg.brainview.experiment import BrainviewConfig, run_cross_dataset, run_kfold
from keras_medseg.demo import Artifact, StageResult, register_stage
from keras_medseg.utils import markdown_table, write_text


def quick_config(quick=True, *, seed=15):
    """The demo's :class:`BrainviewConfig` (see the module docstring)."""
    if not quick:
        return BrainviewConfig(image_size=128, batch_size=32, epochs=10, learning_rate=1e-3,
                               k=5, seed=seed, split="blocks", block_size=4, gap=1,
                               encoder_weights=None, black_threshold=0.05,
                               black_scale="fraction", cache=True)
    return BrainviewConfig(image_size=64, batch_size=16, epochs=4, learning_rate=1e-3, k=2,
                           seed=seed, split="blocks", block_size=4, gap=1,
                           encoder_weights=None, black_threshold=0.05, black_scale="fraction",
                           gradcam_per_class=1, max_misclassified=12, cache=True)


def _row(name, result):
    t = result.test
    return {"experiment": name, "train": result.sizes["train"], "test": t["n"],
            "accuracy": t["accuracy"], "weighted F1": t["f1_weighted"], "AUC (ovr)": t["auc_ovr"]}


@register_stage("brainview", description="brain view recognition (EfficientNetB0, k-fold, "
                                         "Grad-CAM, cross-dataset, ICBM152 slices)", order=30)
def run(stage_dir, *, seed=0, quick=True):
    from keras_medseg.sampledata import SampleDataError, generate_brainview

    config = quick_config(quick)
    sample = generate_brainview(stage_dir / "data", seed=seed, image_size=96,
                                slices_per_view=16 if quick else 40,
                                volume_shape=(64, 40, 52) if quick else (128, 80, 104))
    atlases = [load_png_views(sample.datasets[name]) for name in sorted(sample.datasets)]
    rows, artifacts = [], []

    phantom = run_kfold(ViewSlices.concat(*atlases), stage_dir / "phantom", config=config)
    rows.append(_row("phantoms, held-out slice blocks", phantom))
    cross = run_cross_dataset(atlases[0], atlases[1], stage_dir / "cross_dataset",
                              config=config)
    rows.append(_row(f"cross-dataset: train {atlases[0].datasets[0]}, test "
                     f"{atlases[1].datasets[0]}", cross))
    artifacts += [
        Artifact("Phantoms: fold scores (mean, std)", "phantom/cv/folds.md", "table"),
        Artifact("Phantoms: final model curves", "phantom/curves.png", "figure"),
        Artifact("Phantoms: test confusion matrix", "phantom/test_confusion_matrix.png",
                 "figure"),
        Artifact("Phantoms: test ROC", "phantom/test_roc.png", "figure"),
        Artifact("Phantoms: F1 report", "phantom/test_F1.txt"),
        Artifact("Cross-dataset confusion matrix", "cross_dataset/test_confusion_matrix.png",
                 "figure"),
    ]
    for path in sorted((stage_dir / "phantom" / "gradcam").glob("*.png"))[:3]:
        artifacts.append(Artifact(f"Grad-CAM ({path.stem})", f"phantom/gradcam/{path.name}",
                                  "figure"))

    icbm_note = ""
    icbm_config = dataclasses.replace(config, k=0, epochs=15 if quick else 40, batch_size=32,
                                      fine_tune_at="0", augment=True)
    try:
        icbm = icbm152_views(stage_dir / "icbm152_slices", size=config.image_size)
    except SampleDataError as exc:
        icbm = None
        icbm_note = (f"\n\nReal ICBM152 slices skipped: the real-data cache is not filled "
                     f"(`make sample-data`). {str(exc).splitlines()[0][:200]}")
    if icbm is not None:
        res = run_kfold(icbm, stage_dir / "icbm152", config=icbm_config,
                        mirror=ICBM152_MIRROR)       # mirror-image sagittal slices stay out
        rows.append(_row("ICBM152 T1 slices, held-out blocks", res))
        artifacts += [
            Artifact("ICBM152: test confusion matrix", "icbm152/test_confusion_matrix.png",
                     "figure"),
            Artifact("ICBM152: curves", "icbm152/curves.png", "figure"),
        ]
        for path in sorted((stage_dir / "icbm152" / "gradcam").glob("*.png"))[:3]:
            artifacts.append(Artifact(f"ICBM152 Grad-CAM ({path.stem})",
                                      f"icbm152/gradcam/{path.name}", "figure"))
    write_text(stage_dir / "results.md", markdown_table(rows))
    artifacts.insert(0, Artifact("Test results", "results.md", "table"))
    summary = (f"EfficientNetB0 (GAP -> Dense(128) -> Dense(3)) at "
               f"{config.image_size}x{config.image_size}, no ImageNet weights offline. "
               f"Phantoms: the original's last 5 layers on a random backbone with calibrated "
               f"BatchNormalization, {config.epochs} epochs, k={config.k} folds. ICBM152: "
               f"the offline recipe (whole backbone, view-preserving augmentation, "
               f"BatchNormalization recalibrated every 4 batches), {icbm_config.epochs} "
               f"epochs. Splits hold out contiguous blocks of "
               f"{config.block_size} slices with a {config.gap}-slice guard (for ICBM152 "
               f"also around the mirror image of each held-out sagittal slice); near-black "
               f"filter: mean below {config.black_threshold} of the range."
               + icbm_note)
    return StageResult(summary=summary, artifacts=artifacts)
