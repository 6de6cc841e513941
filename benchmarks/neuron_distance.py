"""Benchmark: Vaa3D neuron distance of two 5,000-node trees, k-d tree search vs brute force.

Builds a random 5,000-node neuron (a persistent random walk that branches), and a second
reconstruction of it the way an automatic tracing differs from a gold standard: nodes
jittered by about 0.3 units, a few subtrees missing and extra branches added (to about
5,000 nodes again). Then times, in the same run,

* ours: :func:`keras_medseg.metrics.neuron_distance` (k-d tree candidate segments, exact
  point-to-segment distances for the candidates only), and
* brute force: every sample point against every segment of the other tree (numpy, in chunks
  of points to bound memory), which is what Vaa3D's ``dist_pt_to_swc`` loop computes,

checks that every directed distance and every score agree to 1e-9, prints a table and ends
with one JSON line.

Usage: ``python benchmarks/neuron_distance.py [--nodes N] [--seed S] [--chunk C]``
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from keras_medseg.io.swc import SwcTree
from keras_medseg.metrics import neuron_distance, sample_neuron_points
from keras_medseg.utils import markdown_table

THRESHOLD = 2.0


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def grow(xyz, parents, start, n_new, rng, *, branch_prob=0.03):
    """Append ``n_new`` nodes to (xyz, parents) lists by a branching persistent random walk
    whose growth tips start at the node rows ``start``."""
    tips = [(int(s), _unit(rng.standard_normal(3))) for s in start]
    for _ in range(n_new):
        k = int(rng.integers(len(tips)))
        row, direction = tips[k]
        direction = _unit(direction + 0.35 * rng.standard_normal(3))
        xyz.append(xyz[row] + direction * rng.uniform(0.8, 2.0))
        parents.append(row)
        tips[k] = (len(xyz) - 1, direction)
        if rng.random() < branch_prob:
            tips.append((len(xyz) - 1, _unit(direction + rng.standard_normal(3))))


def make_tree(n_nodes, rng):
    xyz, parents = [np.zeros(3)], [-1]
    grow(xyz, parents, [0, 0, 0], n_nodes - 1, rng)
    return np.asarray(xyz), np.asarray(parents)


def to_swc(xyz, parents):
    n = len(parents)
    ids = np.arange(1, n + 1)
    return SwcTree.from_arrays(ids, np.full(n, 3), xyz, np.ones(n),
                               np.where(parents >= 0, parents + 1, -1))


def perturb(xyz, parents, rng, *, n_missing=6, jitter=0.3):
    """A tracing of the same neuron: jittered, ``n_missing`` subtrees dropped, extra
    branches grown back to the original node count."""
    n = len(parents)
    drop = np.zeros(n, bool)
    for root in rng.choice(np.arange(1, n), n_missing, replace=False):
        drop[root] = True
    for i in range(n):  # parents come before children, so one pass marks whole subtrees
        if parents[i] >= 0 and drop[parents[i]]:
            drop[i] = True
    keep = np.flatnonzero(~drop)
    new_row = np.full(n, -1)
    new_row[keep] = np.arange(keep.size)
    out_xyz = list(xyz[keep] + jitter * rng.standard_normal((keep.size, 3)))
    out_par = list(np.where(parents[keep] >= 0, new_row[np.maximum(parents[keep], 0)], -1))
    grow(out_xyz, out_par, rng.choice(keep.size, 8, replace=False), n - keep.size, rng)
    return np.asarray(out_xyz), np.asarray(out_par)


def brute_directed(points, tree, chunk):
    """Distance from each point to every segment of ``tree``, minimum per point."""
    pidx = tree.parent_index
    child = np.flatnonzero(pidx >= 0)
    a = tree.xyz[child]
    b = tree.xyz[pidx[child]]
    ab = b - a
    ab2 = np.sum(ab * ab, axis=1)
    out = np.empty(len(points))
    for lo in range(0, len(points), chunk):
        p = points[lo:lo + chunk, None, :]
        ap = p - a[None]
        t = np.clip(np.sum(ap * ab[None], axis=2) / ab2[None], 0.0, 1.0)
        foot = a[None] + t[..., None] * ab[None]
        out[lo:lo + chunk] = np.sqrt(np.min(np.sum((p - foot) ** 2, axis=2), axis=1))
    return out


def brute_scores(tree_a, tree_b, chunk):
    d_ab = brute_directed(sample_neuron_points(tree_a), tree_b, chunk)
    d_ba = brute_directed(sample_neuron_points(tree_b), tree_a, chunk)
    far_ab, far_ba = d_ab >= THRESHOLD, d_ba >= THRESHOLD
    dsa = [d[f].mean() for d, f in ((d_ab, far_ab), (d_ba, far_ba)) if f.any()]
    scores = {"esa": (d_ab.mean() + d_ba.mean()) / 2,
              "dsa": float(np.mean(dsa)) if dsa else 0.0,
              "pds": (far_ab.mean() + far_ba.mean()) / 2,
              "dist_max": min(d_ab.max(), d_ba.max())}
    return scores, d_ab, d_ba


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=256, help="brute force points per chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of ours (best)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    xyz, parents = make_tree(args.nodes, rng)
    gold = to_swc(xyz, parents)
    auto = to_swc(*perturb(xyz, parents, rng))

    from keras_medseg.metrics.neuron import directed_neuron_distances

    ours_s = ours_cpu = np.inf
    for _ in range(max(args.repeats, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        ours = neuron_distance(gold, auto, threshold=THRESHOLD)
        ours_s = min(ours_s, time.perf_counter() - t0)
        ours_cpu = min(ours_cpu, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    ref, ref_ab, ref_ba = brute_scores(gold, auto, args.chunk)
    brute_s = time.perf_counter() - t0
    brute_cpu = time.process_time() - c0

    d_ab = directed_neuron_distances(gold, auto)
    d_ba = directed_neuron_distances(auto, gold)
    diff = float(max(np.max(np.abs(d_ab - ref_ab)), np.max(np.abs(d_ba - ref_ba)),
                     *(abs(getattr(ours, k) - v) for k, v in ref.items())))
    rows = [{"score": k, "ours": float(getattr(ours, k)), "brute force": float(v)}
            for k, v in ref.items()]
    print(f"gold {len(gold)} nodes, auto {len(auto)} nodes; sample points "
          f"{ours.n_ab} + {ours.n_ba}; threshold {THRESHOLD}")
    print(markdown_table(rows, floatfmt=".9f"))
    ratio = brute_s / ours_s
    print(f"ours {ours_s * 1e3:.1f} ms (best of {args.repeats}), brute force {brute_s:.3f} s: "
          f"{ratio:.1f}x faster (CPU time: {ours_cpu * 1e3:.1f} ms vs {brute_cpu:.3f} s, "
          f"{brute_cpu / ours_cpu:.1f}x); max |difference| {diff:.2e}")
    agree = diff <= 1e-9
    if not agree:
        print("VALUES DISAGREE beyond 1e-9")
    print(json.dumps({"benchmark": "neuron_distance", "nodes": [len(gold), len(auto)],
                      "points": [ours.n_ab, ours.n_ba], "ours_s": round(ours_s, 5),
                      "brute_s": round(brute_s, 4), "ratio": round(ratio, 1),
                      "ours_cpu_s": round(ours_cpu, 5), "brute_cpu_s": round(brute_cpu, 4),
                      "max_abs_diff": diff, "agree": agree}))
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
