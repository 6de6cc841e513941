"""Tests of keras_medseg.metrics.neuron: Vaa3D neuron distance on analytic cases, empty and
single-node trees, errors, and agreement with a brute-force point-to-every-segment search."""
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.swc import SwcTree
from keras_medseg.metrics import neuron
from keras_medseg.metrics import (NeuronDistance, directed_neuron_distances,
                                  distance_to_neuron, neuron_distance, sample_neuron_points)


def _tree(xyz, parents):
    """Tree with ids 1..N; ``parents`` are 0-based rows (-1 for roots)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    parents = np.asarray(parents)
    n = len(parents)
    return SwcTree.from_arrays(np.arange(1, n + 1), np.full(n, 3), xyz.reshape(n, 3),
                               np.ones(n), np.where(parents >= 0, parents + 1, -1))


def _line(p, q):
    return _tree([p, q], [-1, 0])


def _random_forest(rng, n, *, n_roots=2, n_lone=2, long_edges=0, offset=0.0):
    """Branching random walks (n nodes over ``n_roots`` trees), plus isolated nodes and
    a few long edges (up to 40 units)."""
    xyz = [rng.uniform(0, 30, 3) + offset for _ in range(n_roots)]
    parents = [-1] * n_roots
    for _ in range(n - n_roots):
        p = int(rng.integers(len(parents)))
        xyz.append(xyz[p] + rng.normal(0, 1.2, 3))
        parents.append(p)
    for _ in range(long_edges):
        p = int(rng.integers(len(parents)))
        xyz.append(xyz[p] + rng.uniform(-40, 40, 3))
        parents.append(p)
    for _ in range(n_lone):
        xyz.append(rng.uniform(0, 30, 3) + offset)
        parents.append(-1)
    return _tree(np.asarray(xyz), np.asarray(parents))


def _brute_directed(points, tree):
    """Minimum over every segment (edges, and isolated nodes as points), one segment at a
    time; independent of the module's vectorised code."""
    pidx = tree.parent_index
    best = np.full(len(points), np.inf)
    has_child = np.zeros(len(tree), bool)
    has_child[pidx[pidx >= 0]] = True
    for i in range(len(tree)):
        a = tree.xyz[i]
        if pidx[i] < 0:
            if not has_child[i]:
                best = np.minimum(best, np.linalg.norm(points - a, axis=1))
            continue
        b = tree.xyz[pidx[i]]
        v = b - a
        t = np.clip((points - a) @ v / (v @ v), 0, 1) if v @ v > 0 else np.zeros(len(points))
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * v), axis=1))
    return best


def _brute_scores(ta, tb, threshold=2.0):
    d_ab = _brute_directed(sample_neuron_points(ta), tb)
    d_ba = _brute_directed(sample_neuron_points(tb), ta)
    far = [d[d >= threshold] for d in (d_ab, d_ba)]
    dsa = [f.mean() for f in far if f.size]
    return {"esa": (d_ab.mean() + d_ba.mean()) / 2, "dsa": np.mean(dsa) if dsa else 0.0,
            "pds": ((d_ab >= threshold).mean() + (d_ba >= threshold).mean()) / 2,
            "dist_max": min(d_ab.max(), d_ba.max())}, d_ab, d_ba


class SamplingTest(tf.test.TestCase, parameterized.TestCase):

    def test_edge_of_length_ten_gives_eleven_unit_steps(self):
        pts = sample_neuron_points(_line([10, 0, 0], [0, 0, 0]))
        # the child (node 2 at the origin) first, the parent last
        self.assertAllClose(pts, np.stack([np.arange(11.0), np.zeros(11), np.zeros(11)], 1))

    @parameterized.parameters((2.6, 1.0, 4), (0.4, 1.0, 1), (0.5, 1.0, 2), (10.0, 2.0, 6),
                              (0.0, 1.0, 1))
    def test_vaa3d_point_count(self, length, step, expected):
        # Vaa3D: N = int(1 + L / step + 0.5) points, both ends included when N > 1
        pts = sample_neuron_points(_line([0, 0, 0], [length, 0, 0]), step=step)
        self.assertLen(pts, expected)
        self.assertAllClose(pts[0], [length, 0, 0])
        if expected > 1:
            self.assertAllClose(np.diff(pts[:, 0]), np.full(expected - 1, -length / (expected - 1)))

    def test_isolated_nodes_are_sampled_once(self):
        t = _tree([[0, 0, 0], [3, 0, 0], [7, 7, 7]], [-1, 0, -1])
        pts = sample_neuron_points(t)
        self.assertLen(pts, 4 + 1)
        self.assertAllClose(pts[-1], [7, 7, 7])

    def test_empty_tree(self):
        empty = _tree(np.zeros((0, 3)), np.zeros(0, int))
        self.assertEqual(sample_neuron_points(empty).shape, (0, 3))
        self.assertAllEqual(distance_to_neuron([[1.0, 2.0, 3.0]], empty), [np.inf])


class AnalyticTest(tf.test.TestCase, parameterized.TestCase):

    def test_parallel_lines(self):
        r = neuron_distance(_line([0, 0, 0], [10, 0, 0]), _line([0, 3, 0], [10, 3, 0]))
        self.assertIsInstance(r, NeuronDistance)
        for name in ("esa", "dsa", "dist_max", "esa_ab", "esa_ba", "dsa_ab", "dsa_ba",
                     "max_ab", "max_ba"):
            self.assertAllClose(getattr(r, name), 3.0, atol=1e-12, msg=name)
        self.assertEqual((r.pds, r.pds_ab, r.pds_ba), (1.0, 1.0, 1.0))
        self.assertEqual((r.n_ab, r.n_ba), (11, 11))

    def test_point_to_segment_not_to_node(self):
        long = _line([0, 0, 0], [100, 0, 0])
        self.assertAllClose(distance_to_neuron([[50.0, 1.0, 0.0], [-3.0, 4.0, 0.0]], long),
                            [1.0, 5.0], atol=1e-12)
        r = neuron_distance(_tree([[50, 1, 0]], [-1]), long)
        self.assertAllClose(r.esa_ab, 1.0, atol=1e-12)
        x = np.arange(101.0)  # the long edge's sample points, measured to the single node
        self.assertAllClose(r.esa_ba, np.mean(np.hypot(x - 50, 1.0)), atol=1e-12)
        self.assertAllClose(r.max_ab, 1.0)
        self.assertAllClose(r.dist_max, 1.0)  # Vaa3D: the smaller directed maximum

    def test_identical_trees_all_zero(self):
        t = _random_forest(np.random.default_rng(3), 60)
        r = neuron_distance(t, t)
        for name in ("esa", "dsa", "pds", "dist_max", "esa_ab", "esa_ba", "pds_ab", "pds_ba",
                     "max_ab", "max_ba"):
            self.assertAllClose(getattr(r, name), 0.0, atol=1e-12, msg=name)
        self.assertTrue(np.isnan(r.dsa_ab) and np.isnan(r.dsa_ba))

    def test_partial_overlap_vaa3d_combinations(self):
        # A covers x in [0, 10], B only [0, 4]: d_AB = max(0, x - 4) at x = 0..10, d_BA = 0
        a, b = _line([0, 0, 0], [10, 0, 0]), _line([0, 0, 0], [4, 0, 0])
        r = neuron_distance(a, b, threshold=1.5)
        d_ab = np.maximum(np.arange(11.0) - 4, 0)
        self.assertAllClose(r.esa_ab, d_ab.mean())
        self.assertAllClose(r.esa_ba, 0.0)
        self.assertAllClose(r.esa, d_ab.mean() / 2)
        self.assertAllClose(r.dsa_ab, 4.0)       # mean of 2, 3, 4, 5, 6
        self.assertTrue(np.isnan(r.dsa_ba))      # no far point from B
        self.assertAllClose(r.dsa, 4.0)          # Vaa3D: the one defined direction
        self.assertAllClose(r.pds_ab, 5 / 11)
        self.assertAllClose(r.pds, 5 / 22)
        self.assertAllClose((r.max_ab, r.max_ba, r.dist_max), (6.0, 0.0, 0.0))

    @parameterized.parameters((1.5, 1.0, 1.5), (1.49, 1.0, 1.5), (1.6, 0.0, 0.0),
                              (0.0, 1.0, 1.5))
    def test_threshold_is_inclusive(self, threshold, pds, dsa):
        r = neuron_distance(_line([0, 0, 0], [6, 0, 0]), _line([0, 1.5, 0], [6, 1.5, 0]),
                            threshold=threshold)
        self.assertAllClose((r.pds, r.dsa), (pds, dsa), atol=1e-12)
        self.assertAllClose(r.esa, 1.5)

    def test_resample_step(self):
        a, b = _line([0, 0, 0], [10, 0, 0]), _line([0, 2, 0], [10, 2, 0])
        r = neuron_distance(a, b, resample_step=2.0)
        self.assertEqual((r.n_ab, r.n_ba), (6, 6))
        self.assertAllClose(r.esa, 2.0)

    def test_single_node_trees_point_to_point(self):
        r = neuron_distance(_tree([[0, 0, 0]], [-1]), _tree([[3, 4, 0]], [-1]))
        self.assertEqual((r.n_ab, r.n_ba), (1, 1))
        for name in ("esa", "dsa", "dist_max", "esa_ab", "max_ba"):
            self.assertAllClose(getattr(r, name), 5.0, msg=name)
        self.assertEqual(r.pds, 1.0)

    def test_both_empty_is_nan(self):
        empty = _tree(np.zeros((0, 3)), np.zeros(0, int))
        r = neuron_distance(empty, empty)
        self.assertTrue(all(np.isnan(v) for v in r[:12]))
        self.assertEqual((r.n_ab, r.n_ba), (0, 0))

    def test_one_empty_is_inf(self):
        empty = _tree(np.zeros((0, 3)), np.zeros(0, int))
        line = _line([0, 0, 0], [4, 0, 0])
        for r, n_from_line in ((neuron_distance(line, empty), "ab"),
                               (neuron_distance(empty, line), "ba")):
            self.assertEqual((r.esa, r.dsa, r.dist_max, r.pds), (np.inf, np.inf, np.inf, 1.0))
            other = "ba" if n_from_line == "ab" else "ab"
            self.assertEqual(getattr(r, f"esa_{n_from_line}"), np.inf)
            self.assertEqual(getattr(r, f"pds_{n_from_line}"), 1.0)
            self.assertTrue(np.isnan(getattr(r, f"esa_{other}")))
            self.assertEqual(getattr(r, f"n_{n_from_line}"), 5)
            self.assertEqual(getattr(r, f"n_{other}"), 0)

    def test_inputs_not_modified(self):
        rng = np.random.default_rng(0)
        a, b = _random_forest(rng, 40), _random_forest(rng, 40)
        before = (a.xyz.copy(), b.xyz.copy())
        neuron_distance(a, b)
        self.assertAllEqual(a.xyz, before[0])
        self.assertAllEqual(b.xyz, before[1])


class BruteForceTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ("plain", 0, {}),
        ("long_edges_far_offset", 1, {"long_edges": 6, "offset": 1e4}),
        ("many_roots", 2, {"n_roots": 6, "n_lone": 5}),
    )
    def test_agrees_with_brute_force(self, seed, kwargs):
        rng = np.random.default_rng(seed)
        a = _random_forest(rng, 250, **kwargs)
        b = _random_forest(rng, 180, **kwargs)
        ref, ref_ab, ref_ba = _brute_scores(a, b)
        self.assertAllClose(directed_neuron_distances(a, b), ref_ab, atol=1e-9, rtol=0)
        self.assertAllClose(directed_neuron_distances(b, a), ref_ba, atol=1e-9, rtol=0)
        r = neuron_distance(a, b)
        for name, value in ref.items():
            self.assertAllClose(getattr(r, name), value, atol=1e-9, rtol=0, msg=name)

    @parameterized.parameters(((1,), 10**9), ((1,), 7), ((2, 3), 50))
    def test_ball_query_path_agrees(self, first_k, ball_pairs):
        # few k-nearest passes force most points through the (chunked) ball query
        rng = np.random.default_rng(5)
        a = _random_forest(rng, 200, long_edges=4)
        b = _random_forest(rng, 150, long_edges=4)
        pts = sample_neuron_points(a)
        with mock.patch.object(neuron, "_FIRST_K", first_k), \
                mock.patch.object(neuron, "_BALL_PAIRS", ball_pairs):
            got = distance_to_neuron(pts, b)
        self.assertAllClose(got, _brute_directed(pts, b), atol=1e-9, rtol=0)

    def test_points_anywhere(self):
        rng = np.random.default_rng(7)
        b = _random_forest(rng, 120, long_edges=3)
        pts = rng.uniform(-60, 90, (500, 3))
        self.assertAllClose(distance_to_neuron(pts, b), _brute_directed(pts, b), atol=1e-9,
                            rtol=0)

    def test_symmetry(self):
        rng = np.random.default_rng(11)
        a, b = _random_forest(rng, 150), _random_forest(rng, 120)
        ab, ba = neuron_distance(a, b), neuron_distance(b, a)
        for name in ("esa", "dsa", "pds", "dist_max"):
            self.assertAllClose(getattr(ab, name), getattr(ba, name), atol=1e-12, msg=name)
        for x, y in (("esa_ab", "esa_ba"), ("dsa_ab", "dsa_ba"), ("pds_ab", "pds_ba"),
                     ("max_ab", "max_ba"), ("n_ab", "n_ba")):
            self.assertAllClose(getattr(ab, x), getattr(ba, y), atol=1e-12, msg=x)

    def test_node_order_does_not_matter(self):
        rng = np.random.default_rng(2)
        a, b = _random_forest(rng, 120), _random_forest(rng, 100)
        perm = rng.permutation(len(b))
        shuffled = SwcTree.from_arrays(b.ids[perm], b.types[perm], b.xyz[perm],
                                       b.radius[perm], b.parents[perm])
        r1, r2 = neuron_distance(a, b), neuron_distance(a, shuffled)
        for name in ("esa", "dsa", "pds", "dist_max"):
            self.assertAllClose(getattr(r1, name), getattr(r2, name), atol=1e-12)


class ErrorTest(tf.test.TestCase, parameterized.TestCase):

    def test_not_a_tree(self):
        line = _line([0, 0, 0], [1, 0, 0])
        with self.assertRaisesRegex(ValueError, "tree_a must be an SwcTree"):
            neuron_distance(np.zeros((2, 7)), line)
        with self.assertRaisesRegex(ValueError, "tree_b must be an SwcTree"):
            directed_neuron_distances(line, "b.swc")
        with self.assertRaisesRegex(ValueError, "tree must be an SwcTree"):
            sample_neuron_points(None)

    @parameterized.parameters(-1.0, np.nan, np.inf, "2")
    def test_bad_threshold(self, value):
        line = _line([0, 0, 0], [1, 0, 0])
        with self.assertRaisesRegex(ValueError, "threshold"):
            neuron_distance(line, line, threshold=value)

    @parameterized.parameters(0.0, -1.0, np.nan)
    def test_bad_step(self, value):
        line = _line([0, 0, 0], [1, 0, 0])
        with self.assertRaisesRegex(ValueError, "resample_step"):
            neuron_distance(line, line, resample_step=value)
        with self.assertRaisesRegex(ValueError, "step"):
            sample_neuron_points(line, step=value)

    def test_bad_points(self):
        line = _line([0, 0, 0], [1, 0, 0])
        with self.assertRaisesRegex(ValueError, r"points must have shape \(P, 3\)"):
            distance_to_neuron(np.zeros((4, 2)), line)
        with self.assertRaisesRegex(ValueError, "points must be finite"):
            distance_to_neuron([[0.0, np.nan, 0.0]], line)


if __name__ == "__main__":
    tf.test.main()
