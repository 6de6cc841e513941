"""Tests of keras_medseg.neurotrace.lmeasure: hand-computed L-Measure values on small trees,
NaN rules, agreement with simple per-node loops on random trees, invariances, and the
automatic-label difference features."""
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.swc import SwcTree
from keras_medseg.metrics import neuron_distance
from keras_medseg.neurotrace.lmeasure import (DIFFERENCE_FEATURES, LMEASURE_FEATURES,
                                              difference_features, difference_matrix,
                                              lmeasure_features, lmeasure_matrix)

BIF_FEATURES = ("Partition_asymmetry", "Bif_ampl_local", "Bif_ampl_remote", "Bif_tilt_local",
                "Bif_tilt_remote", "Bif_torque_local", "Bif_torque_remote", "Daughter_Ratio",
                "Parent_Daughter_Ratio", "Pk_classic", "Last_parent_diam")


def _tree(xyz, parents, radius=None, types=None):
    """Tree with ids 1..N from 0-based parent rows (-1 for roots)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    parents = np.asarray(parents, dtype=np.int64)
    n = len(parents)
    radius = np.ones(n) if radius is None else radius
    types = np.full(n, 3) if types is None else types
    return SwcTree.from_arrays(np.arange(1, n + 1), types, xyz, radius,
                               np.where(parents >= 0, parents + 1, -1))


def _y_tree(offset=(0, 0, 0)):
    #   tips (-3, 14) and (3, 14), bifurcation (0, 10), root (0, 0); radii 2, 1.5, 1, 0.5
    xyz = np.array([[0, 0, 0], [0, 10, 0], [-3, 14, 0], [3, 14, 0]], float) + offset
    return _tree(xyz, [-1, 0, 1, 1], radius=[2.0, 1.5, 1.0, 0.5])


def _random_tree(rng, n, n_roots=1):
    xyz = [rng.uniform(0, 20, 3) for _ in range(n_roots)]
    parents = [-1] * n_roots
    for _ in range(n - n_roots):
        p = int(rng.integers(len(parents)))
        xyz.append(xyz[p] + rng.normal(0, 2.0, 3))
        parents.append(p)
    return _tree(np.asarray(xyz), parents, radius=rng.uniform(0.2, 2.0, n))


class NamesTest(tf.test.TestCase):

    def test_32_fixed_names(self):
        self.assertLen(LMEASURE_FEATURES, 32)
        self.assertLen(set(LMEASURE_FEATURES), 32)
        self.assertEqual(LMEASURE_FEATURES[:5],
                         ("Soma_Surface", "N_stems", "N_bifs", "N_branch", "N_tips"))
        f = lmeasure_features(_y_tree())
        self.assertEqual(tuple(f), LMEASURE_FEATURES)
        self.assertLen(DIFFERENCE_FEATURES, 8)

    def test_matrix(self):
        trees = [_y_tree(), _tree([[0, 0, 0], [1, 0, 0]], [-1, 0]), _y_tree((5, 5, 5))]
        m = lmeasure_matrix(trees)
        self.assertEqual(m.shape, (3, 32))
        self.assertEqual(m.dtype, np.float64)
        for row, t in zip(m, trees):
            self.assertAllClose(row, list(lmeasure_features(t).values()))
        self.assertEqual(lmeasure_matrix([]).shape, (0, 32))


class HandBuiltTest(tf.test.TestCase, parameterized.TestCase):

    def test_y_tree(self):
        f = lmeasure_features(_y_tree())
        half = np.degrees(np.arctan2(3, 4))           # each arm is 36.87 deg off the trunk
        expected = {
            "Soma_Surface": 0, "N_stems": 1, "N_bifs": 1, "N_branch": 3, "N_tips": 2,
            "Width": 6, "Height": 14, "Depth": 0,
            "Diameter": (3 + 2 + 1) / 3, "Length": 20,
            "Surface": np.pi * (3 * 10 + 2 * 5 + 1 * 5),
            "Volume": np.pi * (1.5 ** 2 * 10 + 1 ** 2 * 5 + 0.5 ** 2 * 5),
            "EucDistance": np.hypot(3, 14), "PathDistance": 15, "Branch_Order": 1,
            "Terminal_degree": (2 + 1 + 1) / 3, "Contraction": 1, "Fragmentation": 3,
            "Branch_pathlength": 20 / 3, "Partition_asymmetry": 0,
            "Bif_ampl_local": 2 * half, "Bif_ampl_remote": 2 * half,
            "Bif_tilt_local": half, "Bif_tilt_remote": half,
            "Bif_torque_local": np.nan, "Bif_torque_remote": np.nan,
            # branches: trunk 4 -> 3 over 10, arms 3 -> 2 and 3 -> 1 over 5
            "Taper_1": np.mean([1 / 10, 1 / 5, 2 / 5]), "Taper_2": np.mean([1 / 4, 1 / 3, 2 / 3]),
            "Daughter_Ratio": 2, "Parent_Daughter_Ratio": np.mean([2 / 3, 1 / 3]),
            "Pk_classic": (2 ** 1.5 + 1) / 3 ** 1.5, "Last_parent_diam": 3,
        }
        for name, value in expected.items():
            self.assertAllClose(f[name], value, atol=1e-12, msg=name)

    def test_straight_line(self):
        xyz = np.stack([np.arange(5) * 2.0, np.zeros(5), np.zeros(5)], 1)
        f = lmeasure_features(_tree(xyz, [-1, 0, 1, 2, 3], radius=[3, 2.5, 2, 1.5, 1]))
        expected = {"N_stems": 1, "N_bifs": 0, "N_branch": 1, "N_tips": 1, "Length": 8,
                    "Width": 8, "Contraction": 1, "PathDistance": 8, "EucDistance": 8,
                    "Branch_Order": 0, "Terminal_degree": 1, "Fragmentation": 4,
                    "Branch_pathlength": 8, "Diameter": 3.5, "Taper_1": (6 - 2) / 8,
                    "Taper_2": 4 / 6}
        for name, value in expected.items():
            self.assertAllClose(f[name], value, atol=1e-12, msg=name)
        for name in BIF_FEATURES:
            self.assertTrue(np.isnan(f[name]), msg=name)

    def test_zigzag_contraction(self):
        f = lmeasure_features(_tree([[0, 0, 0], [3, 4, 0], [6, 0, 0]], [-1, 0, 1]))
        self.assertAllClose(f["Contraction"], 6 / 10)
        self.assertAllClose(f["EucDistance"], 6)
        self.assertAllClose(f["PathDistance"], 10)

    def test_torque_and_partition_asymmetry(self):
        # bifurcation B1 at the origin, daughters in the xy plane; daughter A bifurcates
        # again in a plane through the y axis parallel to yz: the planes are at 90 deg
        xyz = [[0, -10, 0], [0, 0, 0], [5, 5, 0], [-5, 5, 0], [5, 10, 5], [5, 10, -5]]
        f = lmeasure_features(_tree(xyz, [-1, 0, 1, 1, 2, 2]))
        self.assertAllClose(f["Bif_torque_local"], 90.0)
        self.assertAllClose(f["Bif_torque_remote"], 90.0)
        self.assertAllClose(f["Partition_asymmetry"], np.mean([1.0, 0.0]))  # 2 vs 1, 1 vs 1
        self.assertAllClose(f["Branch_Order"], 2)
        self.assertAllClose(f["Terminal_degree"], (3 + 2 + 1 + 1 + 1) / 5)
        self.assertAllClose(f["N_bifs"], 2)
        self.assertAllClose(f["N_branch"], 5)
        self.assertAllClose(f["Bif_ampl_local"], 90.0)
        # local tilt at A: father (5, 5, 0) vs daughters (0, 5, +-5): cos = 25 / 50
        self.assertAllClose(f["Bif_tilt_local"], np.mean([45.0, 60.0]))

    def test_torque_in_same_plane_is_zero(self):
        xyz = [[0, -10, 0], [0, 0, 0], [5, 5, 0], [-5, 5, 0], [5, 10, 0], [10, 5, 0]]
        f = lmeasure_features(_tree(xyz, [-1, 0, 1, 1, 2, 2]))
        self.assertAllClose(f["Bif_torque_local"], 0.0, atol=1e-6)

    def test_remote_angles_use_branch_ends(self):
        # arms bend after their first compartment: local and remote angles differ
        xyz = [[0, 0, 0], [0, 10, 0], [-1, 11, 0], [1, 11, 0], [-1, 21, 0], [1, 21, 0]]
        f = lmeasure_features(_tree(xyz, [-1, 0, 1, 1, 2, 3]))
        self.assertAllClose(f["Bif_ampl_local"], 90.0)
        self.assertAllClose(f["Bif_ampl_remote"], 2 * np.degrees(np.arctan2(1, 11)))
        self.assertAllClose(f["N_branch"], 3)
        self.assertAllClose(f["Fragmentation"], 5)

    def test_soma(self):
        # one-point soma of radius 5 with two unbranched stems
        xyz = [[0, 0, 0], [6, 0, 0], [10, 0, 0], [-6, 0, 0]]
        f = lmeasure_features(_tree(xyz, [-1, 0, 1, 0], radius=[5, 1, 0.5, 1],
                                    types=[1, 3, 3, 3]))
        self.assertAllClose(f["Soma_Surface"], 4 * np.pi * 25)
        self.assertAllClose(f["N_stems"], 2)
        self.assertAllClose(f["N_bifs"], 0)   # the soma is not a bifurcation
        self.assertAllClose(f["N_branch"], 2)
        self.assertAllClose(f["N_tips"], 2)
        self.assertAllClose(f["Diameter"], (2 + 1 + 2) / 3)
        # tapers start at the first compartment, not at the soma: (2 - 1) / 10 and 0 / 6
        self.assertAllClose(f["Taper_1"], np.mean([1 / 10, 0.0]))
        self.assertAllClose(f["Taper_2"], np.mean([0.5, 0.0]))

    def test_three_point_soma(self):
        xyz = [[0, 0, 0], [0, 4, 0], [0, -4, 0], [8, 0, 0]]
        f = lmeasure_features(_tree(xyz, [-1, 0, 0, 0], radius=[4, 4, 4, 1],
                                    types=[1, 1, 1, 3]))
        self.assertAllClose(f["Soma_Surface"], 4 * np.pi * 16 + 2 * (2 * np.pi * 4 * 4))
        self.assertAllClose(f["N_stems"], 1)
        self.assertAllClose(f["Length"], 8)

    def test_soma_less_multi_root(self):
        line = np.array([[20, 0, 0], [20, 5, 0], [20, 9, 0]], float)
        y = _y_tree()
        merged = _tree(np.concatenate([y.xyz, line]), [-1, 0, 1, 1, -1, 4, 5],
                       radius=np.concatenate([y.radius, [1, 1, 1]]))
        f = lmeasure_features(merged)
        f_y = lmeasure_features(y)
        f_line = lmeasure_features(_tree(line, [-1, 0, 1]))
        for name in ("N_stems", "N_bifs", "N_branch", "N_tips", "Length", "Surface",
                     "Volume", "Fragmentation"):
            self.assertAllClose(f[name], f_y[name] + f_line[name], msg=name)
        self.assertAllClose(f["N_stems"], 2)
        self.assertAllClose(f["Width"], 23)
        self.assertAllClose(f["EucDistance"], np.hypot(3, 14))  # from each tree's own root
        self.assertAllClose(f["Bif_ampl_local"], f_y["Bif_ampl_local"])
        self.assertAllClose(f["Terminal_degree"], (2 + 1 + 1 + 1 + 1) / 5)

    def test_tiny_trees(self):
        empty = lmeasure_features(_tree(np.zeros((0, 3)), np.zeros(0, int)))
        single = lmeasure_features(_tree([[1, 2, 3]], [-1]))
        for f in (empty, single):
            for name in ("Soma_Surface", "N_stems", "N_bifs", "N_branch", "N_tips", "Length",
                         "Surface", "Volume", "Fragmentation"):
                self.assertEqual(f[name], 0.0, msg=name)
            for name in ("Diameter", "EucDistance", "PathDistance", "Branch_Order",
                         "Contraction", "Taper_1") + BIF_FEATURES:
                self.assertTrue(np.isnan(f[name]), msg=name)
        self.assertTrue(np.isnan(empty["Width"]))
        self.assertEqual((single["Width"], single["Height"], single["Depth"]), (0, 0, 0))
        two = lmeasure_features(_tree([[0, 0, 0], [0, 0, 2]], [-1, 0]))
        self.assertEqual((two["N_branch"], two["N_tips"], two["Length"]), (1, 1, 2))

    def test_nan_only_for_undefined_items(self):
        # zero radii: ratios with a zero denominator are left out, tapers by length are 0
        y = _y_tree()
        flat = _tree(y.xyz, [-1, 0, 1, 1], radius=np.zeros(4))
        f = lmeasure_features(flat)
        for name in ("Daughter_Ratio", "Parent_Daughter_Ratio", "Pk_classic", "Taper_2"):
            self.assertTrue(np.isnan(f[name]), msg=name)
        self.assertEqual((f["Taper_1"], f["Diameter"], f["Last_parent_diam"]), (0, 0, 0))
        # a zero-length daughter: its angle is undefined, the other one is used
        xyz = [[0, 0, 0], [0, 10, 0], [0, 10, 0], [3, 14, 0]]
        g = lmeasure_features(_tree(xyz, [-1, 0, 1, 1]))
        self.assertTrue(np.isnan(g["Bif_ampl_local"]))
        self.assertAllClose(g["Bif_tilt_local"], np.degrees(np.arctan2(3, 4)))


class RandomTreeTest(tf.test.TestCase):

    def _loops(self, tree):
        """Straightforward per-node loops over parent links (independent reference)."""
        pidx = tree.parent_index.tolist()
        n = len(pidx)
        kids = [[] for _ in range(n)]
        for i, p in enumerate(pidx):
            if p >= 0:
                kids[p].append(i)
        tips = [i for i in range(n) if pidx[i] >= 0 and not kids[i]]
        bifs = {i for i in range(n) if pidx[i] >= 0 and len(kids[i]) >= 2}
        path, order, euc, below = [], [], [], [0] * n
        for t in tips:
            i = t
            while i >= 0:
                below[i] += 1
                i = pidx[i]
        for i in range(n):
            if pidx[i] < 0:
                continue
            length, nb, j = 0.0, 0, i
            while pidx[j] >= 0:
                length += np.linalg.norm(tree.xyz[j] - tree.xyz[pidx[j]])
                j = pidx[j]
                nb += j in bifs
            path.append(length)
            order.append(nb)
            euc.append(np.linalg.norm(tree.xyz[i] - tree.xyz[j]))
        degree = [below[i] for i in range(n) if pidx[i] >= 0]
        n_branch = sum(len(p) > 1 for p in tree.unbranched_paths())
        return {"PathDistance": max(path), "Branch_Order": max(order),
                "EucDistance": max(euc), "Terminal_degree": np.mean(degree),
                "N_tips": len(tips), "N_bifs": len(bifs), "N_branch": n_branch,
                "Length": float(tree.path_length())}

    def test_agrees_with_loops(self):
        rng = np.random.default_rng(0)
        for n, roots in ((300, 1), (200, 3)):
            tree = _random_tree(rng, n, n_roots=roots)
            f = lmeasure_features(tree)
            for name, value in self._loops(tree).items():
                self.assertAllClose(f[name], value, atol=1e-9, msg=name)

    def test_invariant_to_node_order_and_rigid_motion(self):
        rng = np.random.default_rng(1)
        tree = _random_tree(rng, 200, n_roots=2)
        perm = rng.permutation(len(tree))
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        moved = SwcTree.from_arrays(tree.ids[perm], tree.types[perm],
                                    tree.xyz[perm] @ q.T + 7.0, tree.radius[perm],
                                    tree.parents[perm])
        f, g = lmeasure_features(tree), lmeasure_features(moved)
        for name in LMEASURE_FEATURES:
            if name in ("Width", "Height", "Depth"):
                continue
            if name.startswith(("Bif_", "Daughter", "Parent_Daughter", "Pk", "Partition")):
                # the daughter pair of a multifurcation depends on the file order
                continue
            self.assertAllClose(f[name], g[name], atol=1e-9, msg=name)

    def test_binary_tree_invariant_to_node_order(self):
        rng = np.random.default_rng(2)
        xyz, parents = [np.zeros(3)], [-1]
        frontier = [0]
        while len(parents) < 150:
            p = frontier.pop(0)
            for _ in range(2 if rng.random() < 0.4 else 1):
                xyz.append(xyz[p] + rng.normal(0, 2, 3))
                parents.append(p)
                frontier.append(len(parents) - 1)
        tree = _tree(np.asarray(xyz), parents, radius=rng.uniform(0.5, 2, len(parents)))
        perm = rng.permutation(len(tree))
        shuffled = SwcTree.from_arrays(tree.ids[perm], tree.types[perm], tree.xyz[perm],
                                       tree.radius[perm], tree.parents[perm])
        self.assertAllClose(lmeasure_matrix([tree]), lmeasure_matrix([shuffled]), atol=1e-9)

    def test_5000_nodes_fast(self):
        tree = _random_tree(np.random.default_rng(3), 5000)
        lmeasure_features(tree)
        t0 = time.perf_counter()
        f = lmeasure_features(tree)
        self.assertLess(time.perf_counter() - t0, 0.5)
        self.assertEqual(f["Fragmentation"], 4999)

    def test_deep_chain_no_recursion_limit(self):
        n = 20000
        xyz = np.stack([np.arange(n) * 0.5, np.zeros(n), np.zeros(n)], 1)
        f = lmeasure_features(_tree(xyz, np.arange(n) - 1))
        self.assertAllClose(f["PathDistance"], (n - 1) * 0.5)
        self.assertEqual(f["N_branch"], 1)


class DifferenceFeaturesTest(tf.test.TestCase):

    def test_columns(self):
        gold = _y_tree()
        # the automatic tracing misses one arm, is shifted by 1, and has a 2-node fragment
        auto = _tree([[0, 1, 0], [0, 11, 0], [-3, 15, 0], [30, 0, 0], [30, 5, 0]],
                     [-1, 0, 1, -1, 3])
        out = difference_features(gold, auto)
        nd = neuron_distance(gold, auto)
        self.assertEqual(out.shape, (8,))
        self.assertAllClose(out[:5], [nd.esa_ab, nd.esa_ba, nd.dsa, nd.pds_ab, nd.pds_ba])
        # gold: 3 branches, 4 nodes, 1 tree; auto: 2 branches (the trunk and arm merge
        # into one, plus the fragment), 5 nodes, 2 trees
        self.assertAllClose(out[5:], [abs(2 - 3), 1, 1])
        self.assertAllClose(difference_features(gold, gold), np.zeros(8), atol=1e-12)

    def test_matrix_and_errors(self):
        gold, auto = _y_tree(), _y_tree((0, 1, 0))
        m = difference_matrix([gold, auto], [auto, gold], threshold=0.5)
        self.assertEqual(m.shape, (2, 8))
        self.assertAllClose(m[0], difference_features(gold, auto, threshold=0.5))
        with self.assertRaisesRegex(ValueError, "golds and autos must pair up"):
            difference_matrix([gold], [])
        with self.assertRaisesRegex(ValueError, "auto must be an SwcTree"):
            difference_features(gold, "auto.swc")
        with self.assertRaisesRegex(ValueError, "tree must be an SwcTree"):
            lmeasure_features(np.zeros((3, 7)))


if __name__ == "__main__":
    tf.test.main()
