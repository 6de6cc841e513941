"""Demo stage ``nerve-classify``: the nerve classifier's two-stage recipe on synthetic frames.

Synthetic surgical videos (:func:`keras_medseg.sampledata.generate_nerve`) are split by
video into training and validation, the last videos form the test ("video") folder, and a
MobileNetV2 (random initialisation: no ImageNet weights offline, reduced width, small
input) is trained with the original's two stages through the shared runner. The stage
writes the original's report files and a table of the test scores.
"""
from __future__ import annotations

from keras_medseg.demo import Artifact, StageResult, register_stage

__all__ = ["quick_config", "run"]


def quick_config(data_dir, test_dir, *, quick=True, seed=0):
    """The demo's :class:`~keras_medseg.nerve.classification.ClassifierConfig`.

    MobileNetV2 (alpha 0.35, ``encoder_weights=None``, BatchNorm calibration, augmentation)
    at 64x64 (96x96 with ``quick=False``); 2 frozen epochs at Adam 1e-2, then the whole
    backbone (from ``Conv1``) for 25 (30) epochs at 1e-3; split by video.
    """
    from keras_medseg.nerve.classification import (ClassifierConfig, ClassifierDataConfig,
                                                   ClassifierModelConfig, ClassifierTrainConfig)

    size = 64 if quick else 96
    return ClassifierConfig(
        data=ClassifierDataConfig(data_dir=str(data_dir), test_dir=str(test_dir),
                                  image_size=(size, size), batch_size=12, split_by="video",
                                  seed=seed),
        model=ClassifierModelConfig(backbone="mobilenetv2", encoder_weights=None, alpha=0.35,
                                    augment=True),
        train=ClassifierTrainConfig(initial_epochs=2, fine_tune_epochs=25 if quick else 30,
                                    fine_tune_at="Conv1", learning_rate=1e-2, seed=seed,
                                    tensorboard=False, progress="none"))


@register_stage("nerve-classify", description="nerve frame classifier (MobileNetV2, two-stage "
                                              "transfer recipe) on synthetic surgical videos",
                order=20)
def run(stage_dir, *, seed=0, quick=True):
    from keras_medseg.nerve.classification import train_classifier
    from keras_medseg.sampledata import generate_nerve
    from keras_medseg.utils import markdown_table, write_text

    data = generate_nerve(stage_dir / "data", seed=seed, image_size=96 if quick else 128,
                          n_videos=60 if quick else 90, test_videos=10 if quick else 15,
                          frames_per_class=2 if quick else 3, raw_frames=0)
    config = quick_config(data.classification_dir / "train_val",
                          data.classification_dir / "test", quick=quick, seed=seed)
    run_dir = stage_dir / "run"
    result = train_classifier(config, run_dir)
    name = result.model.name
    rows = []
    for side in ("train", "val", "test"):
        ev = result.evaluations[side]
        auc = result.auc(side)
        rows.append({"split": side, "n": len(ev.y_true), "accuracy": round(ev.accuracy, 4),
                     "MCC": round(float(ev.report.mcc), 4),
                     **{f"AUC {c}": round(auc[c], 4) for c in result.class_names},
                     "AUC micro": round(auc["micro"], 4), "AUC macro": round(auc["macro"], 4)})
    write_text(stage_dir / "scores.md", markdown_table(rows))
    test = rows[-1]
    summary = (
        f"MobileNetV2 (alpha 0.35, random init, {config.data.image_size[0]}x"
        f"{config.data.image_size[1]} input) trained with the two-stage recipe "
        f"({config.train.initial_epochs} frozen + {config.train.fine_tune_epochs} fine-tuning "
        f"epochs) on {rows[0]['n']} synthetic frames, split by video. **Test video accuracy "
        f"{test['accuracy']:.3f}** (n={test['n']}), micro AUC {test['AUC micro']:.3f}, macro "
        f"AUC {test['AUC macro']:.3f}; training took {result.seconds:.0f} s.")
    rel = "run/"
    samples = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    artifacts = [
        Artifact("Scores per split", "scores.md", "table"),
        Artifact("Accuracy and loss (stage 1)", rel + "acc_loss.png", "figure"),
        Artifact("Accuracy and loss (after fine tuning)",
                 rel + "acc_loss_after_fine_tuning.png", "figure"),
        Artifact("ROC curves (test)", rel + f"{name}_test_roc.png", "figure"),
        Artifact("Confusion matrix (test)", rel + f"{name}_test_CM.txt"),
        Artifact("F1 report (test)", rel + f"{name}_test_F1.txt"),
        Artifact("AUC report (test)", rel + f"{name}_test_AUC.txt"),
        Artifact("Model summary", rel + "model.txt"),
    ]
    if samples:
        artifacts.append(Artifact(f"Test sample ({samples[0]})", rel + "samples/" + samples[0],
                                  "figure"))
    return StageResult(summary=summary, artifacts=artifacts)
