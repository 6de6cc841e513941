"""Linked pipeline throughput: ours (compiled, batched, shared MobileNetV2 encoder) against the
original's approach (one ``model.predict`` call per frame for the classifier and, for nerve
frames, another for the segmenter), on the same 224x224 frames and models, in one run.

The classifier (MobileNetV2 + GAP + Dense(3)) and the UNet-MobileNetV2 share their encoder
weights (weights=None, the segmenter's encoder copied from the classifier's backbone, as
with the original's two ImageNet-initialised encoders). The classifier's last layer is fitted
by least squares on the frames' pooled features so that exactly one frame in three is
classified nerve (the share of nerve frames in the surgical videos); both pipelines then
segment the same frames. Frames are synthetic surgical frames (sampledata.generate_nerve).

Prints frames/s of each variant and ends with one JSON line ("benchmark", "ratio" = ours
shared-encoder frames/s / original frames/s).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def _frames(n, seed):
    from PIL import Image

    from keras_medseg.sampledata.nerve import generate_nerve

    with tempfile.TemporaryDirectory() as tmp:
        per = max(1, -(-n // 6))
        data = generate_nerve(tmp, seed=seed, image_size=224, n_videos=3, test_videos=1,
                              frames_per_class=per, raw_frames=0)
        paths = sorted((data.classification_dir).rglob("*.jpg"))[:n]
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]
                        ).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed passes of ours (best kept)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import keras

    from keras_medseg.nerve.linked import LinkedPipeline
    from keras_medseg.nerve.segmentation_models import build_unet_mobilenetv2
    from keras_medseg.training import build_transfer_classifier, get_backbone

    keras.utils.set_random_seed(args.seed)
    frames = _frames(args.frames, args.seed)
    n = len(frames)
    classifier = build_transfer_classifier("mobilenetv2", 3, encoder_weights=None)
    segmenter = build_unet_mobilenetv2((224, 224, 3), 2, encoder_weights=None)
    backbone = get_backbone(classifier)
    for layer in segmenter.get_layer("encoder").layers:
        if layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
    # Head fitted so that frames 0, 3, 6, ... are "nerve" (class 0), the rest alternate 1 / 2.
    pooled = keras.Model(classifier.input, classifier.get_layer("pool").output)
    feats = np.asarray(pooled.predict(frames, verbose=0), np.float64)
    target = np.where(np.arange(n) % 3 == 0, 0, 1 + (np.arange(n) // 3) % 2)
    onehot = np.eye(3)[target] * 20.0 - 10.0
    a = np.hstack([feats, np.ones((n, 1))])
    w = np.linalg.lstsq(a, onehot, rcond=None)[0]
    classifier.get_layer("logits").set_weights([w[:-1].astype("float32"),
                                                w[-1].astype("float32")])
    pred = np.argmax(np.asarray(classifier.predict(frames, verbose=0)), axis=1)
    nerve = pred == 0
    print(f"{n} frames of 224x224, {int(nerve.sum())} classified nerve "
          f"(target {int((target == 0).sum())})")

    # --- the original approach: model.predict per frame, per model ---------------------
    for f in frames[:2]:  # warm up both predict functions
        classifier.predict(f[None], verbose=0)
        segmenter.predict(f[None], verbose=0)
    t0 = time.perf_counter()
    orig_masks = {}
    for i, f in enumerate(frames):
        c = int(np.argmax(classifier.predict(f[None], verbose=0)[0]))
        if c == 0:
            orig_masks[i] = np.argmax(segmenter.predict(f[None], verbose=0)[0], -1) == 1
    orig_s = time.perf_counter() - t0
    orig_fps = n / orig_s
    print(f"original (model.predict per frame and model): {orig_fps:.2f} frames/s "
          f"({1000 * orig_s / n:.1f} ms/frame)")

    results = {}
    for layout, bs in (("shared", args.batch_size), ("two-model", args.batch_size),
                       ("shared", 1)):
        pipe = LinkedPipeline(classifier, segmenter, layout=layout, batch_size=bs).warmup()
        best, res = None, None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = pipe.process_array(frames)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        agree = float(np.mean([np.mean(res.masks[i] == m) for i, m in orig_masks.items()]))
        same = bool(np.array_equal(res.segmented, nerve)) and agree >= 0.999
        key = f"{layout}_b{bs}"
        results[key] = {"fps": n / best, "same_decisions_and_masks": same,
                        "pixel_agreement": agree,
                        "segmenter_calls": res.seg_calls}
        print(f"ours {layout:9s} batch {bs}: {n / best:7.2f} frames/s "
              f"({1000 * best / n:.1f} ms/frame), {res.seg_calls} segmenter calls, "
              f"same decisions and masks as the original approach: {same} (pixel agreement "
              f"{agree:.5f})")
    ours = results[f"shared_b{args.batch_size}"]["fps"]
    ratio = ours / orig_fps
    print(f"shared encoder vs original: {ratio:.1f}x; target >= 5x and >= 30 frames/s: "
          f"{'met' if ratio >= 5 and ours >= 30 else 'NOT met'}")
    out = {"benchmark": "linked_pipeline", "frames": n, "frame_size": [224, 224],
           "nerve_frames": int(nerve.sum()), "batch_size": args.batch_size,
           "ours_fps": round(ours, 2), "original_fps": round(orig_fps, 2),
           "ratio": round(ratio, 2),
           "two_model_fps": round(results[f"two-model_b{args.batch_size}"]["fps"], 2),
           "shared_batch1_fps": round(results["shared_b1"]["fps"], 2),
           "outputs_match_original": all(r["same_decisions_and_masks"]
                                         for r in results.values())}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
