"""Benchmark: whole-volume stage-1 candidate screening vs classifying every patch position.

Claim: running the fully convolutional stage-1 network once over the volume
(:func:`keras_medseg.nodule3d.screen_volume`) gives the same probability map as the
original's windowing (each (15, 30, 30) patch at every position the map covers, classified
by the same model in batches) at least 20x faster.

Both paths run in the same process on the same model (random He-scaled weights, so that the
outputs depend strongly on the input) and the same random volume, through the same eager
``model(x, training=False)`` call. Each path is warmed up once on a small input first.
When the map has more than ``--max-full-positions`` positions, the patch baseline is timed
on a random subset of ``--patch-positions`` positions and extrapolated per position
(reported as ``"baseline_extrapolated": true``); agreement (max absolute difference of the
probabilities, required <= 1e-4) is checked on every position that was classified.

The last line printed is one JSON object with ``"benchmark": "candidate_screening"``.

Usage::

    python benchmarks/candidate_screening.py --size 300
    python benchmarks/candidate_screening.py --size 96 --patch-positions 1024
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_medseg.nodule3d import models as M  # noqa: E402
from keras_medseg.nodule3d.screening import (  # noqa: E402
    auto_tile_shape,
    plan_tiles,
    screen_volume,
)

TOLERANCE = 1e-4
TARGET_RATIO = 20.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=300,
                   help="edge of the cubic test volume in voxels (default 300)")
    p.add_argument("--patch-positions", type=int, default=2048,
                   help="positions timed for the patch baseline when it is extrapolated")
    p.add_argument("--max-full-positions", type=int, default=20000,
                   help="run the patch baseline on every position up to this many")
    p.add_argument("--batch-size", type=int, default=64, help="patches per forward pass")
    p.add_argument("--max-tile-voxels", type=int, default=2 ** 21,
                   help="tile budget of the whole-volume path (input voxels per tile)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.size < max(M.RECEPTIVE_FIELD):
        p.error(f"--size must be at least {max(M.RECEPTIVE_FIELD)}")
    for name in ("patch_positions", "max_full_positions", "batch_size", "max_tile_voxels"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def random_weights(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            k, b = layer.get_weights()
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / np.prod(k.shape[:-1])), k.shape),
                               rng.normal(0, 0.1, b.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, mu.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def classify_patches(model, volume, positions, batch_size):
    """The original's windowing: the (15, 30, 30) patch starting at ``o * STRIDE`` for each
    map position ``o``, classified in batches. Returns (n, classes) probabilities."""
    windows = np.lib.stride_tricks.sliding_window_view(volume, M.RECEPTIVE_FIELD)
    out = []
    for i in range(0, len(positions), batch_size):
        start = M.output_to_input(positions[i:i + batch_size], mode="start")
        patches = windows[start[:, 0], start[:, 1], start[:, 2]][..., None]
        y = model(np.ascontiguousarray(patches, dtype=np.float32), training=False)
        out.append(keras.ops.convert_to_numpy(y)[:, 0, 0, 0])
    return np.concatenate(out)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = random_weights(M.build_candidate_screening(), args.seed)
    shape = (args.size,) * 3
    volume = rng.normal(size=shape).astype(np.float32)
    map_shape = M.output_shape_for(shape)
    n_positions = int(np.prod(map_shape))

    # Warm-up of both paths (one-time kernel/primitive set-up is not what is measured).
    small = rng.normal(size=(20, 40, 40)).astype(np.float32)
    screen_volume(model, small, tile_shape=None)
    classify_patches(model, small, np.zeros((args.batch_size, 3), np.int64), args.batch_size)

    t0 = time.perf_counter()
    result = screen_volume(model, volume, max_tile_voxels=args.max_tile_voxels)
    whole_s = time.perf_counter() - t0
    n_tiles = len(plan_tiles(shape, auto_tile_shape(shape,
                                                    max_tile_voxels=args.max_tile_voxels)))

    extrapolated = n_positions > args.max_full_positions
    if extrapolated:
        flat = np.sort(rng.choice(n_positions, size=min(args.patch_positions, n_positions),
                                  replace=False))
    else:
        flat = np.arange(n_positions)
    positions = np.stack(np.unravel_index(flat, map_shape), axis=1).astype(np.int64)
    t0 = time.perf_counter()
    patch_probs = classify_patches(model, volume, positions, args.batch_size)
    timed_s = time.perf_counter() - t0
    per_position_s = timed_s / len(positions)
    baseline_s = per_position_s * n_positions
    max_diff = float(np.max(np.abs(result.probabilities[tuple(positions.T)] - patch_probs)))
    ratio = baseline_s / whole_s

    print(f"volume {shape}, probability map {map_shape} = {n_positions} positions")
    print(f"whole-volume screening: {whole_s:.2f} s ({n_tiles} tile(s), "
          f"{1e6 * whole_s / n_positions:.2f} us/position)")
    label = "extrapolated from" if extrapolated else "measured on"
    print(f"patch classifier baseline: {baseline_s:.1f} s ({label} {len(positions)} positions,"
          f" {1e3 * per_position_s:.3f} ms/position, {timed_s:.1f} s timed)")
    print(f"ratio {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x); max |difference| "
          f"{max_diff:.2e} on {len(positions)} positions (tolerance {TOLERANCE:.0e})")
    record = {
        "benchmark": "candidate_screening",
        "volume_shape": list(shape),
        "map_shape": list(map_shape),
        "positions": n_positions,
        "whole_volume_s": round(whole_s, 4),
        "tiles": n_tiles,
        "baseline_s": round(baseline_s, 3),
        "baseline_extrapolated": extrapolated,
        "baseline_positions_timed": int(len(positions)),
        "baseline_timed_s": round(timed_s, 3),
        "baseline_ms_per_position": round(1e3 * per_position_s, 5),
        "batch_size": args.batch_size,
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio >= TARGET_RATIO),
        "max_abs_diff": max_diff,
        "tolerance": TOLERANCE,
        "agree": bool(max_diff <= TOLERANCE),
        "backend": keras.backend.backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(record, sort_keys=False))
    return 0 if record["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
