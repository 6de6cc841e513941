"""Throughput of the nerve classifier recipe: our tf.data pipeline against in-memory arrays.

Claim: the input pipeline (:func:`keras_medseg.io.images.classification_dataset`, reading and
decoding JPEG files from disk every epoch, resizing, shuffling, batching, prefetching) is not
the bottleneck of the MobileNetV2 recipe: training and inference images/s through it are at
least 0.9 of those of the same model fed from numpy arrays already decoded in memory
(``Model.fit(x, y)`` / ``Model.predict(x)``), measured in the same run.

Both feeds train the same compiled model (frozen backbone: the recipe's first stage, whose
cheap steps make the input pipeline matter most) for the same number of epochs; the runs
alternate (pipeline, memory, pipeline, ...) and the median of ``--repeats`` timed epochs
is kept, after one warm-up epoch each. The last line is one JSON object with ``"ratio"``
(the smaller of the training and inference ratios).

Usage::

    python benchmarks/classifier_throughput.py [--images 360] [--size 96] [--alpha 0.35]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=360, help="training frames (about)")
    parser.add_argument("--frame-size", type=int, default=128, help="JPEG side on disk")
    parser.add_argument("--size", type=int, default=96, help="model input side")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per feed")
    parser.add_argument("--stage", choices=("frozen", "fine-tune"), default="frozen",
                        help="train the frozen-backbone stage or the whole network")
    parser.add_argument("--workdir", default=None, help="where the frames are written")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from keras_medseg.io.images import classification_dataset, list_class_folders
    from keras_medseg.sampledata import generate_nerve
    from keras_medseg.training import build_transfer_classifier, unfreeze_from

    workdir = args.workdir or tempfile.mkdtemp(prefix="classifier_throughput_")
    videos = max(2, round(args.images / 6)) + 1  # 2 frames x 3 classes per video
    data = generate_nerve(workdir, seed=0, image_size=args.frame_size, n_videos=videos,
                          test_videos=1, frames_per_class=2, raw_frames=0)
    listing = list_class_folders(data.classification_dir / "train_val")
    paths, labels = listing.paths, listing.labels
    n = len(paths)
    size = (args.size, args.size)

    def pipeline():
        return classification_dataset(paths, labels, image_size=size,
                                      batch_size=args.batch_size, shuffle=True, seed=0)

    # the same decoded, resized images, held in memory
    x = np.concatenate([np.asarray(b[0]) for b in classification_dataset(
        paths, labels, image_size=size, batch_size=64)])
    y = np.asarray(labels)

    keras.utils.set_random_seed(0)
    model = build_transfer_classifier("mobilenetv2", len(listing.class_names),
                                      input_shape=size + (3,), encoder_weights=None,
                                      backbone_kwargs={"alpha": args.alpha})
    if args.stage == "fine-tune":
        unfreeze_from(model, 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    # built once; every pass reads and decodes the JPEG files again (no cache)
    train_ds = pipeline()
    infer_ds = classification_dataset(paths, labels, image_size=size,
                                      batch_size=args.batch_size)

    def fit_pipeline():
        model.fit(train_ds, epochs=1, verbose=0)

    def fit_memory():
        model.fit(x, y, batch_size=args.batch_size, shuffle=True, epochs=1, verbose=0)

    def predict_pipeline():
        model.predict(infer_ds, verbose=0)

    def predict_memory():
        model.predict(x, batch_size=args.batch_size, verbose=0)

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    results = {}
    for kind, ours, base in (("train", fit_pipeline, fit_memory),
                             ("infer", predict_pipeline, predict_memory)):
        ours(), base()  # warm-up: tracing, caches
        t_ours, t_base = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours))
            t_base.append(timed(base))
        ips_ours = n / statistics.median(t_ours)
        ips_base = n / statistics.median(t_base)
        results[kind] = (ips_ours, ips_base)
        print(f"{kind}: pipeline {ips_ours:.1f} images/s, in-memory {ips_base:.1f} images/s, "
              f"ratio {ips_ours / ips_base:.3f}")

    train_ratio = results["train"][0] / results["train"][1]
    infer_ratio = results["infer"][0] / results["infer"][1]
    print(json.dumps({
        "benchmark": "classifier_throughput",
        "ratio": round(min(train_ratio, infer_ratio), 4),
        "train_ratio": round(train_ratio, 4),
        "infer_ratio": round(infer_ratio, 4),
        "train_images_per_s_pipeline": round(results["train"][0], 2),
        "train_images_per_s_memory": round(results["train"][1], 2),
        "infer_images_per_s_pipeline": round(results["infer"][0], 2),
        "infer_images_per_s_memory": round(results["infer"][1], 2),
        "images": n, "input_size": args.size, "alpha": args.alpha,
        "batch_size": args.batch_size, "stage": args.stage, "repeats": args.repeats,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
