"""Demo stage ``metrics``: the whole metrics module on a synthetic 3D multi-class segmentation.

A nested-ellipsoid phantom (CSF / GM / WM shells, anisotropic voxels) is the ground truth; the
"prediction" is the same phantom with a smooth random boundary displacement and speckle
errors, together with per-voxel class probabilities. The stage scores it with every part of
``keras_medseg.metrics``: overlap, surface distances in all four modes, the summary with
95% confidence intervals, the voxel-level classification report files of the nerve original,
and FROC / CPM on synthetic lesion detections.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from keras_medseg import metrics
from keras_medseg.demo import Artifact, StageResult, register_stage
from keras_medseg.utils import markdown_table, new_figure, save_figure, write_csv, write_text

CLASS_NAMES = ("CSF", "GM", "WM")
SPACING = (1.2, 0.9, 0.9)  # mm, array axis order (z, y, x)


def phantom(shape, rng, *, displacement=0.0):
    """Label map with nested ellipsoidal shells 1=CSF, 2=GM, 3=WM (0 background).

    ``displacement`` (in voxels) perturbs the shell boundaries with a smooth random field.
    """
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grids))
    if displacement:
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=4)
        field *= displacement / (np.abs(field).max() + 1e-12) * 2.0 / min(shape)
        radius = radius + field
    labels = np.zeros(shape, np.uint8)
    labels[radius < 0.85] = 1
    labels[radius < 0.75] = 2
    labels[radius < 0.55] = 3
    return labels


def perturbed_prediction(truth, rng, *, displacement, speckles):
    """A plausible segmentation: displaced boundaries plus isolated wrong voxels."""
    pred = phantom(truth.shape, rng, displacement=displacement)
    idx = rng.integers(0, truth.size, speckles)
    pred.reshape(-1)[idx] = rng.integers(0, 4, speckles)
    return pred


def soft_scores(pred, rng, num_classes=4, confidence=3.0):
    """Per-voxel probabilities whose argmax is mostly ``pred`` (softmax of noisy logits)."""
    logits = rng.normal(0, 1.0, pred.shape + (num_classes,))
    logits += confidence * np.eye(num_classes)[pred]
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


def synthetic_detections(rng, num_scans, lesions_per_scan=4, fps_per_scan=12):
    """Lesions (centre mm, diameter) and candidates (centre mm, score) for FROC."""
    lesions, candidates = [], []
    for _ in range(num_scans):
        les = np.column_stack([rng.uniform(20, 180, (lesions_per_scan, 3)),
                               rng.uniform(4, 20, lesions_per_scan)])
        hits = [np.r_[c[:3] + rng.normal(0, c[3] / 8, 3), rng.beta(5, 2)]
                for c in les if rng.random() < 0.85]
        fps = np.column_stack([rng.uniform(0, 200, (fps_per_scan, 3)),
                               rng.beta(2, 5, fps_per_scan)])
        lesions.append(les)
        candidates.append(np.vstack([np.array(hits).reshape(-1, 4), fps]))
    return candidates, lesions


@register_stage("metrics", description="the metrics module on a synthetic 3D multi-class "
                                       "segmentation (overlap, surface modes, FROC, reports)",
                order=0)
def run(stage_dir, *, seed=0, quick=True):
    rng = np.random.default_rng(seed)
    shape = (40, 56, 56) if quick else (96, 128, 128)
    num_subjects = 4 if quick else 8
    labels = [1, 2, 3]
    overlap_rows, surface_rows = [], []
    dice_all, hd95_all = [], []
    for s in range(num_subjects):
        truth = phantom(shape, rng, displacement=0.0 if s == 0 else 1.0)
        pred = perturbed_prediction(truth, rng, displacement=2.0 + s, speckles=20 * (s + 1))
        dice = metrics.compute_dice(truth[None], pred[None], labels=labels)[0]
        iou = metrics.compute_iou(truth[None], pred[None], labels=labels)[0]
        dice_all.append(dice)
        for c, name in enumerate(CLASS_NAMES):
            overlap_rows.append({"subject": s, "class": name, "dice": float(dice[c]),
                                 "iou": float(iou[c])})
        for mode in ("surface", "medpy", "surfel", "evalseg"):
            m = metrics.compute_surface_metrics(truth, pred, labels=labels, spacing=SPACING,
                                                mode=mode)
            if mode == "surface":
                hd95_all.append(m["hd95"])
            for c, name in enumerate(CLASS_NAMES):
                surface_rows.append({"subject": s, "class": name, "mode": mode,
                                     "hd_mm": float(m["hd"][c]), "hd95_mm": float(m["hd95"][c]),
                                     "asd_mm": float(m["asd"][c])})
        if s == 0:
            last = (truth, pred)

    # Per-class summary over subjects (mean, SEM, 95% CI with the t distribution).
    summary_rows = []
    for metric_name, values in (("dice", np.array(dice_all)), ("hd95_mm", np.array(hd95_all))):
        for c, name in enumerate(CLASS_NAMES):
            sm = metrics.summarize(values[:, c])
            summary_rows.append({"metric": metric_name, "class": name, "n": sm.n,
                                 "mean": sm.mean, "sem": sm.sem,
                                 "ci95": f"[{sm.ci95_low:.4g}, {sm.ci95_high:.4g}]"})

    write_csv(stage_dir / "overlap.csv", overlap_rows)
    write_text(stage_dir / "overlap.md", markdown_table(overlap_rows))
    write_csv(stage_dir / "surface.csv", surface_rows)
    write_text(stage_dir / "surface.md", markdown_table(surface_rows))
    write_text(stage_dir / "summary.md", markdown_table(summary_rows))

    # Voxel-level classification report files (the nerve original's CM/F1/AUC/roc).
    truth, pred = last
    sample = rng.choice(truth.size, size=min(20000, truth.size), replace=False)
    scores = soft_scores(pred.reshape(-1)[sample], rng)
    report, _ = metrics.write_classification_reports(
        stage_dir, "voxels", truth.reshape(-1)[sample], scores,
        class_names=("background",) + CLASS_NAMES)

    # Detection: FROC and CPM on synthetic lesions.
    candidates, lesions = synthetic_detections(rng, num_scans=20)
    fr = metrics.froc(candidates, lesions, num_scans=20, bootstrap=200 if quick else 1000,
                      seed=seed)
    band = fr.bootstrap
    froc_rows = [{"FPs/scan": f"{r:g}", "sensitivity": float(s),
                  "95% band": f"[{lo:.3f}, {hi:.3f}]"}
                 for r, s, lo, hi in zip(fr.fp_rates, fr.sensitivities, band["lower"],
                                         band["upper"])]
    froc_rows.append({"FPs/scan": "CPM", "sensitivity": float(fr.cpm),
                      "95% band": f"[{band['cpm_lower']:.3f}, {band['cpm_upper']:.3f}]"})
    write_text(stage_dir / "froc.md", markdown_table(froc_rows))
    fig = new_figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(fr.fps, fr.sensitivity, label=f"FROC (CPM {fr.cpm:.3f})")
    ax.fill_between(fr.fp_rates, band["lower"], band["upper"], alpha=0.3,
                    label="bootstrap 95% band")
    ax.plot(fr.fp_rates, fr.sensitivities, "o", label="LUNA16 FP rates")
    ax.set_xscale("log")
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1)
    ax.set_xlabel("average false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    save_figure(fig, stage_dir / "froc.png")

    # Overlay of the middle slices.
    fig = new_figure(figsize=(9, 3.2))
    mid = [n // 2 for n in truth.shape]
    for i, (title, sl) in enumerate((("axial", np.s_[mid[0]]), ("coronal", np.s_[:, mid[1]]),
                                     ("sagittal", np.s_[:, :, mid[2]]))):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(truth[sl], cmap="gray", vmin=0, vmax=3, interpolation="nearest")
        ax.contour(pred[sl], levels=[0.5, 1.5, 2.5], colors=["c", "y", "r"], linewidths=0.7)
        ax.set_title(f"{title}: truth (grey), prediction (lines)", fontsize=7)
        ax.axis("off")
    save_figure(fig, stage_dir / "overlay.png")

    mean_dice = np.nanmean(np.array(dice_all), axis=0)
    summary = (f"{num_subjects} synthetic subjects of {shape} voxels at {SPACING} mm. "
               f"Mean Dice CSF/GM/WM: {mean_dice[0]:.3f} / {mean_dice[1]:.3f} / "
               f"{mean_dice[2]:.3f}. Voxel accuracy {report.accuracy:.3f}, "
               f"macro AUC {report.auc_macro:.3f}. FROC CPM {fr.cpm:.3f}.\n\n"
               "Surface distances are reported in the four modes of the metrics module "
               "(surface, medpy, surfel, evalseg): the same segmentation gives different "
               "numbers, which is why every distance names its mode.")
    return StageResult(summary=summary, artifacts=[
        Artifact("Per-class summary over subjects (mean, SEM, 95% CI)", "summary.md", "table"),
        Artifact("Dice and IoU per subject and class", "overlap.md", "table"),
        Artifact("Surface distances per subject, class and mode", "surface.md", "table"),
        Artifact("Overlay of truth and prediction", "overlay.png", "figure"),
        Artifact("FROC sensitivities and CPM", "froc.md", "table"),
        Artifact("FROC curve", "froc.png", "figure"),
        Artifact("Voxel classification ROC", "voxels_roc.png", "figure"),
        Artifact("Voxel confusion matrix", "voxels_CM.txt"),
        Artifact("Voxel F1 report", "voxels_F1.txt"),
        Artifact("Voxel AUC report", "voxels_AUC.txt"),
    ])
