"""Benchmark: HD95 + ASSD of a 3-class label map, keras_medseg.metrics vs medpy.

Builds an iSeg-sized (144 x 192 x 256) phantom of nested ellipsoidal shells (CSF outside,
GM, WM inside) with smoothly folded interfaces, perturbs it the way a segmentation model
errs (a smooth random boundary displacement of 1-2 voxels plus a few speckles of wrong
labels), then times, in the same run,

* ours: :func:`keras_medseg.metrics.compute_surface_metrics` with ``mode="medpy"``
  (one nearest-surface computation per class and direction, on the cropped masks), and
* medpy: ``medpy.metric.binary.hd95`` + ``assd`` per class (what iSeg evaluations call),

checks that the values agree (to 1e-6 mm), prints a table and ends with one JSON line.

Usage: ``python benchmarks/surface_metrics.py [--size D H W] [--spacing SZ SY SX] [--seed N]``
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage

from keras_medseg.metrics import compute_surface_metrics
from keras_medseg.utils import markdown_table

CLASSES = {1: "CSF", 2: "GM", 3: "WM"}


def smooth_field(shape, sigma, rng):
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / field.std()


def make_phantom(shape, seed=0):
    """Return (truth, prediction) label maps (uint8, values 0..3) of ``shape``."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [(s - 1) / 2 for s in shape]
    semi = [0.42 * s for s in shape]
    rho = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi)))
    rho = rho.astype(np.float32)
    scale = min(shape) / 144.0
    folds = smooth_field(shape, 4.0 * scale, rng)          # cortical folding of the truth
    shift = smooth_field(shape, 6.0 * scale, rng)          # smooth model error

    def labels(radius, fold):
        out = np.zeros(shape, np.uint8)
        out[radius < 1.0] = 1
        out[radius + 0.04 * fold < 0.90] = 2
        out[radius + 0.06 * fold < 0.76] = 3
        return out

    truth = labels(rho, folds)
    # about 1.5 voxels of smooth boundary displacement
    pred = labels(rho + (1.5 / min(semi)) * shift, folds)
    for _ in range(12):                                    # speckles of a wrong label
        centre_vox = [rng.integers(0, s) for s in shape]
        radius = rng.uniform(1.0, 3.0) * scale
        ball = sum(((g - c) / radius) ** 2 for g, c in zip(grids, centre_vox)) <= 1.0
        pred[ball] = rng.integers(0, 4)
    return truth, pred


def run_ours(truth, pred, spacing):
    out = compute_surface_metrics(truth, pred, labels=list(CLASSES), spacing=spacing,
                                  mode="medpy")
    return out["hd95"], out["asd"]


def run_medpy(truth, pred, spacing):
    from medpy.metric.binary import assd, hd95

    hd, asd = [], []
    for label in CLASSES:
        t, p = truth == label, pred == label
        hd.append(hd95(p, t, voxelspacing=spacing))
        asd.append(assd(p, t, voxelspacing=spacing))
    return np.array(hd), np.array(asd)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(144, 192, 256),
                        metavar=("D", "H", "W"), help="label map shape (default iSeg's)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                        metavar=("SD", "SH", "SW"), help="voxel size in mm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spacing = tuple(args.spacing)

    truth, pred = make_phantom(args.size, seed=args.seed)
    t0 = time.perf_counter()
    ours_hd, ours_asd = run_ours(truth, pred, spacing)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_hd, ref_asd = run_medpy(truth, pred, spacing)
    medpy_s = time.perf_counter() - t0

    diff = float(max(np.max(np.abs(ours_hd - ref_hd)), np.max(np.abs(ours_asd - ref_asd))))
    rows = [{"class": name, "HD95 ours": ours_hd[i], "HD95 medpy": ref_hd[i],
             "ASSD ours": ours_asd[i], "ASSD medpy": ref_asd[i]}
            for i, name in enumerate(CLASSES.values())]
    print(f"label map {tuple(args.size)}, spacing {spacing} mm, seed {args.seed}")
    print(markdown_table(rows, floatfmt=".6f"))
    ratio = medpy_s / ours_s
    print(f"ours {ours_s:.3f} s, medpy {medpy_s:.3f} s: {ratio:.1f}x faster; "
          f"max |difference| {diff:.2e} mm")
    agree = diff <= 1e-6
    if not agree:
        print("VALUES DISAGREE beyond 1e-6 mm")
    print(json.dumps({"benchmark": "surface_metrics", "shape": list(args.size),
                      "ours_s": round(ours_s, 4), "medpy_s": round(medpy_s, 4),
                      "ratio": round(ratio, 2), "max_abs_diff": diff, "agree": agree}))
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
