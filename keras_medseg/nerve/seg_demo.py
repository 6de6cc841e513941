"""Demo stage ``nerve-segment``: UNet-MobileNetV2 from scratch on real nuclei and synthetic
nerve frames, then the linked pipeline over a synthetic video.

1. Real data: the 2018 Data Science Bowl nuclei image (512x512, ``load_nuclei``). The network
   trains on random 128x128 tiles from the top 352 rows (69 %) and is tested on the bottom
   160 x 512 strip it never saw (one pass over the whole strip, same weights).
2. Synthetic nerve frames (``generate_nerve``): the Supervisely export, split by video into
   fixed ImageSets, trained and evaluated with :func:`train_segmenter` (all of the
   original's output files).
3. Linked pipeline: a frame classifier on the trained U-Net's encoder
   (:func:`build_encoder_classifier`), then :func:`run_linked` over the first test video in
   both layouts (shared encoder, two models), writing frames, an MP4 and the timing table.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from keras_medseg.demo import Artifact, StageResult, register_stage
from keras_medseg.utils import markdown_table, write_text

__all__ = ["nuclei_rgb", "run", "train_nuclei"]

NUCLEI_TRAIN_ROWS = 352  # rows [0, 352) train, [352, 512) test


def nuclei_rgb(image):
    """uint16 fluorescence image -> uint8 RGB (1st-99.8th percentile stretch, grey to RGB)."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, (1.0, 99.8))
    grey = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1) * 255.0
    return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=-1)


def _tiles(image, mask, n, size, rng):
    ys = rng.integers(0, image.shape[0] - size + 1, n)
    xs = rng.integers(0, image.shape[1] - size + 1, n)
    x = np.stack([image[y:y + size, x0:x0 + size] for y, x0 in zip(ys, xs)]).astype(np.float32)
    m = np.stack([mask[y:y + size, x0:x0 + size] for y, x0 in zip(ys, xs)]).astype(np.uint8)
    return x, m[..., None]


def train_nuclei(out_dir, *, seed=0, steps=500, batch_size=8, tile=128, log=print):
    """Train UNet-MobileNetV2 (weights=None) on the top of the nuclei image, test below.

    Returns
    -------
    dict
        ``dice``, ``iou`` of the whole held-out strip, per-tile scores (four 160x128 tiles)
        and the run folder.
    """
    import tensorflow as tf

    from keras_medseg.io.images import random_flip_left_right
    from keras_medseg.nerve.segmentation import (SegModelConfig, SegTrainConfig, build_segmenter,
                                                 compile_arguments, save_prediction_panels,
                                                 score_masks, write_evaluation)
    from keras_medseg.sampledata.fetch import load_nuclei
    from keras_medseg.training import Runner

    data = load_nuclei()
    rgb = nuclei_rgb(data.image)
    mask = np.asarray(data.mask, dtype=np.uint8)
    rows = NUCLEI_TRAIN_ROWS
    rng = np.random.default_rng(seed)
    x_tr, y_tr = _tiles(rgb[:rows], mask[:rows], 1024, tile, rng)
    x_val, y_val = _tiles(rgb[:rows], mask[:rows], 32, tile, np.random.default_rng(seed + 1))
    mc = SegModelConfig(encoder_weights=None, freeze_encoder=False, dropout=0.2, bn_momentum=0.9)
    epochs = 5
    tc = SegTrainConfig(run_dir=str(Path(out_dir)), epochs=epochs, learning_rate=1e-3,
                        tensorboard=False, progress="none", resume=False)
    runner = Runner(out_dir, seed=seed, tensorboard=False, progress="none", resume=False)
    runner.save_config(model=mc, train=tc, data={"source": "stardist 0.9.2 img2d.tif",
                                                 "train_rows": [0, rows], "test_rows": [rows, 512],
                                                 "tile": tile, "batch_size": batch_size})
    model = runner.build(build_segmenter, mc, (tile, tile))
    runner.compile(model, **compile_arguments(mc, tc))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    train = (tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).shuffle(len(x_tr), seed=seed)
             .repeat())
    train = (tf.data.Dataset.zip((train, seeds))
             .map(lambda el, s: random_flip_left_right(el[0], el[1], s))
             .batch(batch_size).prefetch(2))
    per_epoch = max(1, steps // epochs)
    t0 = time.perf_counter()
    history = runner.fit(model, train, (x_val, y_val), epochs=epochs, steps_per_epoch=per_epoch,
                         verbose=0)
    log(f"[nerve-segment] nuclei: {per_epoch * epochs} steps in {time.perf_counter() - t0:.0f} s")
    # The whole held-out strip at once: same weights, input 160 x 512.
    test_img = rgb[rows:].astype(np.float32)[None]
    test_mask = mask[rows:].astype(bool)[None]
    full = build_segmenter(mc, test_img.shape[1:3])
    full.set_weights(model.get_weights())
    pred = np.argmax(np.asarray(full(test_img, training=False)), axis=-1) == 1
    whole = score_masks(test_mask, pred, ["test strip"])
    tiles_t = np.concatenate(np.split(test_mask, 4, axis=2))
    tiles_p = np.concatenate(np.split(pred, 4, axis=2))
    per_tile = score_masks(tiles_t, tiles_p, [f"tile{i}" for i in range(4)])
    out_dir = Path(out_dir)
    write_evaluation(out_dir / "evaluation.txt", {"held-out strip (rows 352-511)": whole,
                                                  "its four 160x128 tiles": per_tile},
                     header="UNet-MobileNetV2 from scratch, nuclei sample, train rows 0-351")
    save_prediction_panels(out_dir / "predictions_test.png", test_img, test_mask, pred)
    return {"dice": float(whole.dice[0]), "iou": float(whole.iou[0]),
            "tile_dice_mean": float(np.mean(per_tile.dice)), "history": history,
            "steps": per_epoch * epochs, "run_dir": out_dir}


def _nerve_imagesets(data, run_dir, seed):
    from keras_medseg.io.images import groups_from_names, read_supervisely
    from keras_medseg.io.splits import make_imagesets

    images, _ = read_supervisely(data.segmentation_dir)
    names = [Path(p).stem for p in images]
    make_imagesets(names, run_dir, val_fraction=0.15, test_fraction=0.2, seed=seed,
                   groups=groups_from_names(names, r"^(v\d+)_"))
    return run_dir


def fit_head_on_features(classifier, data, *, epochs=300, seed=0):
    """Fit the classifier's last Dense on cached pooled encoder features of the
    ``train_val`` class folders (the encoder is frozen, so this equals training the head
    end to end without dropout, at a fraction of the cost). Returns (accuracy, class names).
    """
    import keras

    from keras_medseg.io.images import classification_dataset, list_class_folders

    paths, labels, class_names = list_class_folders(data.classification_dir / "train_val")
    ds = classification_dataset(paths, labels, image_size=classifier.input.shape[1:3],
                                batch_size=16)
    pooled = keras.Model(classifier.input, classifier.get_layer("pool").output)
    feats = np.concatenate([np.asarray(pooled(x, training=False)) for x, _ in ds])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input(feats.shape[1:]), keras.layers.Dense(3)])
    head.compile(keras.optimizers.Adam(1e-2),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    hist = head.fit((feats - mean) / std, labels, epochs=epochs, batch_size=len(feats),
                    verbose=0)
    kernel, bias = head.layers[-1].get_weights()
    # Fold the standardisation into the Dense layer: W' = W / std, b' = b - (mean / std) W.
    classifier.get_layer("logits").set_weights([kernel / std[:, None],
                                                bias - (mean / std) @ kernel])
    return float(hist.history["accuracy"][-1]), class_names


@register_stage("nerve-segment", description="UNet-MobileNetV2 from scratch on the real nuclei "
                                             "sample and synthetic nerve frames; linked "
                                             "classify-then-segment pipeline over a synthetic "
                                             "video", order=12)
def run(stage_dir, *, seed=0, quick=True, log=print):
    from keras_medseg.nerve.linked import LinkedPipeline, build_encoder_classifier, run_linked
    from keras_medseg.nerve.segmentation import SegDataConfig, SegModelConfig, SegTrainConfig, \
        train_segmenter
    from keras_medseg.sampledata.nerve import generate_nerve

    stage_dir = Path(stage_dir)
    t_start = time.perf_counter()
    nuc = train_nuclei(stage_dir / "nuclei", seed=seed, steps=180 if quick else 1500, log=log)

    data = generate_nerve(stage_dir / "data", seed=seed, image_size=224,
                          n_videos=8 if quick else 14, test_videos=2,
                          frames_per_class=8 if quick else 12, raw_frames=0)
    run_dir = stage_dir / "unet_nerve"
    _nerve_imagesets(data, run_dir, seed)
    dc = SegDataConfig(data_dir=str(data.segmentation_dir), imagesets=str(run_dir),
                       batch_size=4, seed=seed)
    mc = SegModelConfig(encoder_weights=None, freeze_encoder=False, bn_momentum=0.9)
    tc = SegTrainConfig(run_dir=str(run_dir), epochs=8 if quick else 40, learning_rate=1e-3,
                        tensorboard=False, progress="none", resume=False, seed=seed, panels=3)
    nerve = train_segmenter(dc, mc, tc, log=log)

    classifier = build_encoder_classifier(nerve.model, 3)
    cls_acc, class_names = fit_head_on_features(classifier, data)
    with open(data.frames_csv, newline="") as f:
        labels = {r["name"].rsplit(".", 1)[0]: r["class"] for r in csv.DictReader(f)}
    linked = {}
    for layout in ("shared", "two-model"):
        pipe = LinkedPipeline(classifier, nerve.model, layout=layout, batch_size=8)
        linked[layout] = run_linked(pipe, data.linked_dir, stage_dir / f"linked_{layout}",
                                    class_names=tuple(class_names), labels=labels,
                                    video="linked.mp4" if layout == "shared" else None,
                                    write_frames=layout == "shared", log=log)

    test = nerve.scores["test"].summaries()
    rows = [
        {"data": "nuclei (real), held-out strip 160x512", "model": "UNet-MobileNetV2 scratch",
         "Dice": nuc["dice"], "IoU": nuc["iou"]},
        {"data": f"synthetic nerve, test videos (n={test['dice'].n})",
         "model": "UNet-MobileNetV2 scratch", "Dice": test["dice"].mean,
         "IoU": test["iou"].mean},
        {"data": "original (real nerve test set, n=862)", "model": "UNet-MobileNetV2 ImageNet",
         "Dice": 0.786, "IoU": 0.672},
    ]
    write_text(stage_dir / "segmentation.md", markdown_table(rows, floatfmt=".3f"))
    trows = []
    for layout, res in linked.items():
        s = res.summary
        trows.append({"layout": layout, "frames/s (model)": s["model_fps"],
                      "ms with seg.": s["time_with_segmentation"]["mean_ms"],
                      "ms without seg.": s["time_without_segmentation"]["mean_ms"],
                      "segmenter calls": s["segmenter_calls"],
                      "accuracy": s["classification_accuracy"],
                      "nerve AUC": s.get("nerve_auc", float("nan")),
                      "mean IoU": s["iou_segmented_nerve_frames"]["mean"],
                      "missed nerve frames": s["missed_nerve_frames"]})
    write_text(stage_dir / "linked_timing.md", markdown_table(trows, floatfmt=".3g"))
    secs = time.perf_counter() - t_start
    summary = (
        f"UNet-MobileNetV2 trained from scratch (weights=None, {nuc['steps']} steps) on the "
        f"top 69 % of the real nuclei image reaches Dice {nuc['dice']:.3f} (IoU "
        f"{nuc['iou']:.3f}) on the held-out bottom strip. On synthetic nerve frames (split by "
        f"video) test Dice {test['dice'].mean:.3f}, IoU {test['iou'].mean:.3f}; the "
        f"original reported test IoU 0.672 / Dice 0.786 on real frames with ImageNet weights. "
        f"Linked pipeline (classifier head on the U-Net's frozen encoder, training "
        f"accuracy {cls_acc:.3f}): shared encoder "
        f"{linked['shared'].summary['model_fps']:.1f} frames/s vs two models "
        f"{linked['two-model'].summary['model_fps']:.1f} frames/s (model time). "
        f"Stage time {secs:.0f} s.")
    arts = [Artifact("Segmentation results", "segmentation.md", "table"),
            Artifact("Linked pipeline", "linked_timing.md", "table"),
            Artifact("Nuclei: held-out strip (image | truth | prediction)",
                     "nuclei/predictions_test.png", "figure"),
            Artifact("Synthetic nerve test frames", "unet_nerve/predictions_test.png", "figure"),
            Artifact("Loss", "unet_nerve/loss.png", "figure"),
            Artifact("IoU", "unet_nerve/IOU.png", "figure"),
            Artifact("Nerve evaluation", "unet_nerve/evaluation.txt"),
            Artifact("Train/val results", "unet_nerve/TrainValResult.txt"),
            Artifact("Linked timing (shared)", "linked_shared/timing.md", "table"),
            Artifact("Linked video", "linked_shared/linked.mp4"),
            Artifact("Linked ROC", "linked_shared/linked_nerve_roc.png", "figure")]
    arts = [a for a in arts if (stage_dir / a.path).exists()]
    return StageResult(summary=summary, artifacts=arts)
