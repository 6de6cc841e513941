"""I/O throughput: TFRecord write/read against reading PNG files, and the training input
pipeline against the rate a MobileNetV2 training step consumes batches.

Generates ``--n`` synthetic 512x512 RGB images and masks (PNG) in a temporary folder, then
measures, in this run and on this machine:

1. TFRecord write time (raw and PNG encoding) with :func:`keras_medseg.io.tfrecord.write_tfrecords`;
2. read + decode throughput (images/s, image and mask) of the raw and PNG TFRecords
   (:func:`read_tfrecords`) against a ``tf.data`` pipeline that reads the same PNG files
   from disk with ``decode_png``; ratios are against the PNG-file pipeline;
3. the segmentation input pipeline (:func:`keras_medseg.io.images.segmentation_dataset`,
   224x224, batch 8, shuffle + random flip) in batches/s, against MobileNetV2 (weights=None,
   224x224x3, 3 classes) training steps/s on batches of 8; the requirement is that the input
   pipeline is at least 2x faster than the training step consumes.

Ends with one JSON line: ``{"benchmark": "io_throughput", "ratio": <raw TFRecord / PNG files
read rate>, ...}``.

    python benchmarks/io_throughput.py [--n 200] [--size 512]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _synthetic(folder, n, size, seed=0):
    """``n`` smooth-textured RGB frames with a bright elliptical 'nerve' and its 0/1 mask."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "img"))
    os.makedirs(os.path.join(folder, "mask"))
    yy, xx = np.mgrid[:size, :size]
    names = []
    for k in range(n):
        low = (rng.random((16, 16, 3)) * 160 + 40).astype(np.uint8)
        image = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float32)
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.05, 0.2, 2) * size
        mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1
        image[mask] = image[mask] * 0.5 + 120
        image += rng.normal(0, 6, image.shape)
        name = f"frame_{k:04d}"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, "img", name + ".png"))
        Image.fromarray(mask.astype(np.uint8)).save(os.path.join(folder, "mask", name + ".png"))
        names.append(name)
    return names


def _rate(make_ds, count, repeats=3):
    """Best elements/s over ``repeats`` full passes (after one warm-up pass)."""
    ds = make_ds()
    for _ in ds:
        pass
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        for _ in ds:
            n += 1
        dt = time.perf_counter() - t0
        assert n == count, (n, count)
        best = max(best, n / dt)
    return best


def _du(paths):
    return sum(os.path.getsize(p) for p in paths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of synthetic images")
    parser.add_argument("--size", type=int, default=512, help="image height = width")
    parser.add_argument("--batches", type=int, default=60, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from keras_medseg.io import images as im
    from keras_medseg.io import tfrecord as tr

    work = tempfile.mkdtemp(prefix="io_throughput_")
    try:
        t0 = time.perf_counter()
        names = _synthetic(work, args.n, args.size)
        print(f"generated {args.n} {args.size}x{args.size} images + masks in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        img_dir, mask_dir = os.path.join(work, "img"), os.path.join(work, "mask")
        image_paths = [os.path.join(img_dir, n + ".png") for n in names]
        mask_paths = [os.path.join(mask_dir, n + ".png") for n in names]

        # 1. write
        t0 = time.perf_counter()
        raw = tr.write_tfrecords(img_dir, mask_dir, names, os.path.join(work, "raw.tfrecords"),
                                 progress=False)
        write_raw_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        png = tr.write_tfrecords(img_dir, mask_dir, names, os.path.join(work, "png.tfrecords"),
                                 encoding="png", progress=False)
        write_png_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr.read_tfrecords(raw, check=True)
        check_raw_s = time.perf_counter() - t0

        # 2. read + decode (image and mask)
        def png_files():
            def load(ip, mp):
                return (tf.io.decode_png(tf.io.read_file(ip), channels=3),
                        tf.io.decode_png(tf.io.read_file(mp), channels=1))

            return (tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
                    .map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

        def records(files):
            return lambda: tr.read_tfrecords(files, check=False).prefetch(tf.data.AUTOTUNE)

        rate_files = _rate(png_files, args.n)
        rate_raw = _rate(records(raw), args.n)
        rate_png = _rate(records(png), args.n)

        # 3. training input pipeline vs training step
        seg = im.segmentation_dataset(image_paths, mask_paths, image_size=(224, 224),
                                      batch_size=8, shuffle=True, seed=0,
                                      augment=im.random_flip_left_right,
                                      drop_remainder=True).repeat()
        it = iter(seg)
        for _ in range(5):
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        pipeline_bps = args.batches / (time.perf_counter() - t0)

        def resize(image, mask, _):
            return (tf.image.resize(image, (224, 224)),
                    tf.cast(tf.image.resize(mask, (224, 224), method="nearest"), tf.uint8))

        rec = (tr.read_tfrecords(raw, check=False).map(resize, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(8, drop_remainder=True).prefetch(tf.data.AUTOTUNE).repeat())
        it = iter(rec)
        for _ in range(5):
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        tfrecord_pipeline_bps = args.batches / (time.perf_counter() - t0)

        import keras

        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=3)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy())
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32)
        y = rng.integers(0, 3, (8,))
        for _ in range(3):
            model.train_on_batch(x, y)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        train_sps = args.steps / (time.perf_counter() - t0)

        gpus = tf.config.list_physical_devices("GPU")
        result = {
            "benchmark": "io_throughput",
            "ratio": round(rate_raw / rate_files, 3),
            "ratio_png_tfrecord_vs_png_files": round(rate_png / rate_files, 3),
            "n_images": args.n, "size": args.size,
            "write_raw_s": round(write_raw_s, 3), "write_png_s": round(write_png_s, 3),
            "check_raw_s": round(check_raw_s, 3),
            "raw_tfrecord_mb": round(_du(raw) / 2**20, 1),
            "png_tfrecord_mb": round(_du(png) / 2**20, 1),
            "png_files_mb": round(_du(image_paths + mask_paths) / 2**20, 1),
            "read_raw_tfrecord_img_per_s": round(rate_raw, 1),
            "read_png_tfrecord_img_per_s": round(rate_png, 1),
            "read_png_files_img_per_s": round(rate_files, 1),
            "pipeline_batches_per_s": round(pipeline_bps, 2),
            "tfrecord_pipeline_batches_per_s": round(tfrecord_pipeline_bps, 2),
            "train_steps_per_s": round(train_sps, 3),
            "pipeline_vs_train_ratio": round(pipeline_bps / train_sps, 2),
            "pipeline_requirement_met": bool(pipeline_bps >= 2 * train_sps),
            "device": f"GPU x{len(gpus)}" if gpus else "CPU",
            "cpu_count": os.cpu_count(),
        }
        print(f"TFRecord write: raw {write_raw_s:.2f} s, png {write_png_s:.2f} s "
              f"({result['raw_tfrecord_mb']} / {result['png_tfrecord_mb']} MB; "
              f"PNG files {result['png_files_mb']} MB); framing check {check_raw_s:.2f} s")
        print(f"read+decode img/s: raw TFRecord {rate_raw:.1f}, PNG TFRecord {rate_png:.1f}, "
              f"PNG files {rate_files:.1f}  -> raw/files {result['ratio']}x, "
              f"png-record/files {result['ratio_png_tfrecord_vs_png_files']}x")
        print(f"segmentation pipeline 224x224 batch 8: {pipeline_bps:.2f} batches/s from PNG "
              f"files, {tfrecord_pipeline_bps:.2f} from raw TFRecord; MobileNetV2 training "
              f"{train_sps:.3f} steps/s ({result['device']}) -> pipeline/train "
              f"{result['pipeline_vs_train_ratio']}x (requirement >= 2x: "
              f"{'met' if result['pipeline_requirement_met'] else 'NOT met'})")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
