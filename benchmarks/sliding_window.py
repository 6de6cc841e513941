"""Benchmark: batched Gaussian sliding-window inference vs the I-seg_Focus original's loop.

On an iSeg-sized two-channel volume (144 x 192 x 256) and a FocusNet model 1, times in the
same run

* ours: :func:`keras_medseg.inference.sliding_window_inference`, 64^3 windows at 50% overlap
  (stride 32, last window flush with the edge), Gaussian weighting of probabilities,
  ``--batch-size`` windows per call, argmax;
* original: 64^3 windows at stride 8, one window per call, logits summed and divided by the
  count, argmax (I-seg_Focus ``val.py``; its grid ``arange(0, n - 64 + 8, 8)`` overshoots
  when ``n - 64`` is not a multiple of 8: here the overshooting start is clamped to
  ``n - 64``, identical for the iSeg sizes).

The original loop needs ~4,700 model calls at full size (hours on a CPU), so it is timed on
``--sample-windows`` random windows of its grid and EXTRAPOLATED to the full grid (labelled
as such). The label agreement (Dice per class between the two argmax maps, mean over the
classes present) comes from a complete, faithful run of both methods on a smaller
``--reference-size`` volume, where the original loop is also timed in full.

The model: by default FocusNet is first trained briefly (``--train-steps``, Adam 1e-3,
cross-entropy, random 32^3 crops, batch 2) on synthetic infant phantoms
(:func:`keras_medseg.sampledata.iseg.make_phantom`, z-scored by
:func:`keras_medseg.io.hdf5.prepare_hdf5_cutedge`), and both volumes are such phantoms, so the
two label maps are real segmentations and their agreement means something (each is also
scored against the phantom's ground truth). ``--weights PATH`` loads weights (or a
``.keras`` model) instead; ``--train-steps 0`` keeps the random initialisation on smooth
random fields (the earlier behaviour, whose agreement figure says little).

Peak memory: ``resource.getrusage`` max RSS of the process right after our inference
(model and volume included; the original loop runs afterwards), and the tracemalloc peak of
the NumPy accumulation buffers during our inference.

Usage: ``python benchmarks/sliding_window.py [--size D H W] [--reference-size D H W]
[--sample-windows N] [--batch-size B] [--seed N] [--train-steps N | --weights PATH]``
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
import tracemalloc

import keras
import numpy as np
from scipy import ndimage
from scipy.special import softmax

from keras_medseg.inference import grid_positions, sliding_window_inference
from keras_medseg.iseg.models import build_focusnet3d
from keras_medseg.metrics.overlap import compute_dice

WINDOW = (64, 64, 64)
ORIGINAL_STRIDE = 8


def make_volume(shape, seed):
    """Two z-scored smooth random fields (T1/T2 stand-ins), float32 ``(*shape, 2)``."""
    rng = np.random.default_rng(seed)
    channels = []
    for sigma in (3.0, 5.0):
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
        channels.append((field - field.mean()) / field.std())
    return np.stack(channels, axis=-1)


def make_phantom_volume(shape, seed):
    """A synthetic infant phantom: z-scored (T1, T2) float32 ``(*shape, 2)`` and its labels."""
    from keras_medseg.io.hdf5 import prepare_hdf5_cutedge
    from keras_medseg.sampledata.iseg import make_phantom

    t1, t2, labels = make_phantom(np.random.default_rng(seed), shape)
    # margin as large as the volume: z-score inside the T1 mask, no crop
    prepared = prepare_hdf5_cutedge(t1, t2, margin=max(shape))
    return np.moveaxis(prepared.data, 0, -1), labels


def train_briefly(model, steps, seed, *, crop=32, batch=2, shape=(64, 80, 72), subjects=4):
    """Train ``model`` for ``steps`` Adam steps on random crops of synthetic phantoms."""
    rng = np.random.default_rng(seed + 100)
    volumes = [make_phantom_volume(shape, seed + 100 + i) for i in range(subjects)]
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = float("nan")
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            x, y = volumes[rng.integers(len(volumes))]
            start = [rng.integers(0, n - crop + 1) for n in y.shape]
            sl = tuple(slice(a, a + crop) for a in start)
            xs.append(x[sl])
            ys.append(y[sl])
        loss = float(np.asarray(model.train_on_batch(np.stack(xs), np.stack(ys))))
    return loss


def original_starts(shape):
    """The original's per-axis window starts, overshooting starts clamped to n - 64."""
    return [np.unique(np.minimum(np.arange(0, n - w + ORIGINAL_STRIDE, ORIGINAL_STRIDE), n - w))
            for n, w in zip(shape, WINDOW)]


def original_loop(volume, model, starts, num_classes):
    """Faithful original: one window per call, summed logits / count.

    Returns ``(mean_logits, mean_probabilities)``: the second is the same windows with
    softmax probabilities averaged instead (a diagnostic, computed in the same pass).
    """
    shape = volume.shape[:3]
    total = np.zeros(shape + (num_classes,), np.float32)
    total_probs = np.zeros(shape + (num_classes,), np.float32)
    count = np.zeros(shape + (1,), np.float32) + 1e-5
    for z, y, x in starts:
        sl = (slice(z, z + WINDOW[0]), slice(y, y + WINDOW[1]), slice(x, x + WINDOW[2]))
        logits = model.predict_on_batch(volume[sl][None])[0]
        total[sl] += logits
        total_probs[sl] += softmax(logits, axis=-1)
        count[sl] += 1
    return total / count, total_probs / count


def mean_dice_agreement(a, b, num_classes):
    dice = compute_dice(a, b, labels=list(range(num_classes)), batched=False)[0]
    return float(np.nanmean(dice)), dice


def ours(volume, model, batch_size):
    return sliding_window_inference(volume, model, window=WINDOW, overlap=0.5,
                                    blend="gaussian", batch_size=batch_size)


def max_rss_gb():
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(144, 192, 256),
                        help="volume size (D H W), each >= 64")
    parser.add_argument("--reference-size", type=int, nargs=3, default=(72, 80, 96),
                        help="volume size of the complete runs used for the Dice agreement")
    parser.add_argument("--sample-windows", type=int, default=12,
                        help="original-loop windows timed for the extrapolation")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=60,
                        help="brief training on synthetic phantoms first (0: random weights "
                             "on random fields)")
    parser.add_argument("--weights", default=None,
                        help="weights file (.weights.h5) or .keras model to use instead")
    args = parser.parse_args(argv)
    for name in ("size", "reference_size"):
        if min(getattr(args, name)) < 64:
            parser.error(f"--{name.replace('_', '-')} must be at least 64 on every axis")

    num_classes = 4
    keras.utils.set_random_seed(args.seed)
    model = build_focusnet3d((None, None, None, 2), num_classes, levels=2)
    train_s, train_loss = 0.0, None
    if args.weights:
        if args.weights.endswith(".keras"):
            import keras_medseg.iseg.pipeline  # noqa: F401  (custom optimiser/loss classes)

            model = keras.saving.load_model(args.weights)
        else:
            model.load_weights(args.weights)
        trained = f"weights from {args.weights}"
    elif args.train_steps > 0:
        t0 = time.perf_counter()
        train_loss = train_briefly(model, args.train_steps, args.seed)
        train_s = time.perf_counter() - t0
        trained = (f"trained {args.train_steps} steps on synthetic phantoms in {train_s:.0f} s, "
                   f"last loss {train_loss:.3f}")
    else:
        trained = "random init"
    use_phantoms = trained != "random init"
    truth = truth_small = None
    if use_phantoms:
        volume, truth = make_phantom_volume(tuple(args.size), args.seed)
    else:
        volume = make_volume(tuple(args.size), args.seed)
    warm = np.zeros((args.batch_size,) + WINDOW + (2,), np.float32)
    model.predict_on_batch(warm)        # compile both call shapes before timing
    model.predict_on_batch(warm[:1])

    # ---- full size: original sampled windows, timed half before and half after ours -------
    # (on a shared machine the load drifts; bracketing our run averages the drift out)
    grid = list(itertools.product(*original_starts(args.size)))
    rng = np.random.default_rng(args.seed)
    sample = [grid[i] for i in rng.choice(len(grid), min(args.sample_windows, len(grid)),
                                          replace=False)]
    half = len(sample) // 2
    t0 = time.perf_counter()
    original_loop(volume, model, sample[:half], num_classes)
    original_sample_s = time.perf_counter() - t0

    # ---- full size: ours, measured --------------------------------------------------------
    tracemalloc.start()
    t0 = time.perf_counter()
    probs = ours(volume, model, args.batch_size)
    ours_s = time.perf_counter() - t0
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_gb = max_rss_gb()
    n_ours = int(np.prod([len(s) for s in grid_positions(args.size, WINDOW, 32)]))

    t0 = time.perf_counter()
    original_loop(volume, model, sample[half:], num_classes)
    original_sample_s += time.perf_counter() - t0
    per_window = original_sample_s / len(sample)
    original_s = per_window * len(grid)
    ratio = original_s / ours_s

    # ---- reduced size: complete runs of both for the agreement ----------------------------
    if use_phantoms:
        small, truth_small = make_phantom_volume(tuple(args.reference_size), args.seed + 1)
    else:
        small = make_volume(tuple(args.reference_size), args.seed + 1)
    t0 = time.perf_counter()
    labels_small_ours = ours(small, model, args.batch_size).argmax(-1)
    ref_ours_s = time.perf_counter() - t0
    small_grid = list(itertools.product(*original_starts(args.reference_size)))
    t0 = time.perf_counter()
    small_logits, small_probs = original_loop(small, model, small_grid, num_classes)
    ref_orig_s = time.perf_counter() - t0
    labels_small_orig = small_logits.argmax(-1)
    dsc_mean, dsc = mean_dice_agreement(labels_small_orig, labels_small_ours, num_classes)
    # Diagnostics: how much of the disagreement is logits-vs-probabilities averaging alone
    # (same windows), and how much is the window grid and weighting.
    dsc_probs_mean, _ = mean_dice_agreement(labels_small_orig, small_probs.argmax(-1),
                                            num_classes)
    dsc_grid_mean, _ = mean_dice_agreement(small_probs.argmax(-1), labels_small_ours,
                                           num_classes)
    vs_truth = {}
    if truth_small is not None:
        for name, lab in (("ours", labels_small_ours), ("original", labels_small_orig)):
            vs_truth[name] = mean_dice_agreement(truth_small, lab, num_classes)[0]
        vs_truth["ours_full_size"] = mean_dice_agreement(truth, probs.argmax(-1),
                                                         num_classes)[0]
    class_share = np.bincount(labels_small_orig.ravel(), minlength=num_classes) \
        / labels_small_orig.size

    print(f"volume {tuple(args.size)} x 2 channels, FocusNet model 1 "
          f"({model.count_params():,} parameters, {trained}, seed {args.seed}), "
          f"window {WINDOW}")
    print(f"ours:     {n_ours} windows (50% overlap, gaussian, batch {args.batch_size}) "
          f"in {ours_s:.1f} s (measured)")
    print(f"original: {len(grid)} windows (stride 8, one per call): {per_window:.2f} s/window "
          f"on {len(sample)} sampled windows -> {original_s:.0f} s EXTRAPOLATED")
    print(f"speed-up: {ratio:.1f}x (extrapolated original / measured ours)")
    print(f"agreement on a complete run at {tuple(args.reference_size)}: ours "
          f"{ref_ours_s:.1f} s vs original {len(small_grid)} windows {ref_orig_s:.1f} s "
          f"(measured, {ref_orig_s / ref_ours_s:.1f}x); Dice per class "
          f"{np.round(dsc, 4).tolist()} (original's class shares "
          f"{np.round(class_share, 3).tolist()}), mean {dsc_mean:.4f} "
          f"= {100 * (1 - dsc_mean):.2f} points below full agreement")
    print(f"  diagnostics: original grid averaging probabilities vs logits: mean Dice "
          f"{dsc_probs_mean:.4f}; ours vs original grid averaging probabilities: "
          f"{dsc_grid_mean:.4f}")
    if vs_truth:
        print("mean Dice against the phantoms' ground truth (classes 0-3): "
              + ", ".join(f"{k} {v:.4f}" for k, v in vs_truth.items()))
    print(f"peak memory: max RSS {rss_gb:.2f} GB after our inference; NumPy accumulation "
          f"peak {numpy_peak / 1e9:.3f} GB (tracemalloc)")
    result = {
        "benchmark": "sliding_window",
        "shape": list(args.size),
        "ratio": round(ratio, 2),
        "ratio_is_extrapolated": True,
        "ours_s": round(ours_s, 2),
        "ours_windows": n_ours,
        "original_s_extrapolated": round(original_s, 1),
        "original_windows": len(grid),
        "original_s_per_window": round(per_window, 3),
        "original_sampled_windows": len(sample),
        "reference_shape": list(args.reference_size),
        "reference_ratio_measured": round(ref_orig_s / ref_ours_s, 2),
        "dice_agreement_mean": round(dsc_mean, 4),
        "dice_agreement_per_class": [None if np.isnan(d) else round(float(d), 4) for d in dsc],
        "dice_points_below_agreement": round(100 * (1 - dsc_mean), 2),
        "dice_original_logits_vs_probs": round(dsc_probs_mean, 4),
        "dice_ours_vs_original_grid_probs": round(dsc_grid_mean, 4),
        "peak_rss_gb": round(rss_gb, 3),
        "numpy_peak_gb": round(numpy_peak / 1e9, 3),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "model": trained,
        "train_steps": 0 if args.weights else args.train_steps,
        "train_s": round(train_s, 1),
        "dice_vs_truth": {k: round(v, 4) for k, v in vs_truth.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
