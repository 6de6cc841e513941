"""SWC trees: file round trips, structure queries and every edit on hand-built trees."""
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.swc import SwcError, SwcTree, near_face, read_swc, write_swc


def y_tree():
    """Root 1 -> 2 -> 3 (branch) -> 4 -> 5 (tip); 3 -> 6 (one-node spur)."""
    xyz = [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0], [2, 1, 0]]
    return SwcTree.from_arrays([1, 2, 3, 4, 5, 6], [1, 3, 3, 3, 3, 3], xyz,
                               [2.0, 1.0, 1.0, 0.5, 0.5, 0.3], [-1, 1, 2, 3, 4, 3])


def chain(n, step=1.0, start=(0.0, 0.0, 0.0), first_id=1):
    ids = np.arange(first_id, first_id + n)
    parents = ids - 1
    parents[0] = -1
    xyz = np.zeros((n, 3)) + start
    xyz[:, 0] += np.arange(n) * step
    return ids, np.full(n, 3), xyz, np.ones(n), parents


class SwcFileTest(tf.test.TestCase):

    def test_round_trip_preserves_arrays_and_comments(self):
        tree = y_tree()._replace(comments=("made by hand", "units: um"))
        tree = tree.translate([0.1, 1 / 3, 1e-7])
        path = os.path.join(self.get_temp_dir(), "t.swc")
        write_swc(path, tree)
        back = read_swc(path)
        self.assertTrue(back == tree)
        self.assertEqual(back.comments, ("made by hand", "units: um"))
        # Independent reader: numpy's loadtxt sees the same seven columns.
        ref = np.loadtxt(path, comments="#")
        np.testing.assert_array_equal(ref, tree.to_array())

    def test_header_argument_replaces_comments(self):
        path = os.path.join(self.get_temp_dir(), "h.swc")
        write_swc(path, y_tree()._replace(comments=("old",)), header="new line 1\nline 2")
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.startswith("# new line 1\n# line 2\n1 1 "))
        self.assertNotIn("old", text)

    def test_any_order_several_roots_no_soma_blank_lines(self):
        text = ("# header\n\n"
                "12 3 2 0 0 1 11\n"
                "11 3 1 0 0 1 10\n"
                "   # a comment between nodes is ignored\n"
                "10 2 0 0 0 1 -1\n"
                "20 3 5 5 5 1 -1\n"
                "21 3 6 5 5 1 20\n")
        path = os.path.join(self.get_temp_dir(), "forest.swc")
        with open(path, "w") as f:
            f.write(text)
        tree = read_swc(path)
        self.assertEqual(len(tree), 5)
        self.assertEqual(tree.num_trees, 2)
        self.assertAllEqual(tree.roots, [10, 20])
        self.assertAllEqual(tree.ids, [12, 11, 10, 20, 21])
        self.assertEqual(tree.comments, ("header",))
        self.assertNotIn(1, tree.types)  # no soma needed
        self.assertAllClose(tree.path_length(), 3.0)

    def test_write_is_atomic_on_failure(self):
        path = os.path.join(self.get_temp_dir(), "keep.swc")
        write_swc(path, y_tree())
        with open(path) as f:
            before = f.read()
        with self.assertRaisesRegex(ValueError, "SwcTree"):
            write_swc(path, "not a tree")
        with open(path) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual([p for p in os.listdir(self.get_temp_dir()) if p.endswith(".tmp")], [])


class SwcStructureTest(tf.test.TestCase):

    def test_queries_on_y_tree(self):
        t = y_tree()
        self.assertAllEqual(t.children(3), [4, 6])
        self.assertAllEqual(t.children(5), [])
        self.assertAllEqual(t.branch_points(), [3])
        self.assertAllEqual(sorted(t.tips()), [5, 6])
        self.assertEqual(t.num_trees, 1)
        self.assertAllClose(t.path_length(), 5.0)
        seg = t.segments()
        self.assertEqual(seg.shape, (5, 2, 3))
        self.assertAllClose(np.linalg.norm(seg[:, 0] - seg[:, 1], axis=1).sum(), 5.0)
        self.assertAllEqual(t.parent_index, [-1, 0, 1, 2, 3, 2])
        paths = [[int(t.ids[i]) for i in p] for p in t.unbranched_paths()]
        self.assertCountEqual(paths, [[1, 2, 3], [3, 4, 5], [3, 6]])
        with self.assertRaises(KeyError):
            t.children(99)

    def test_arrays_are_read_only_and_inputs_untouched(self):
        ids, types, xyz, radius, parents = chain(4)
        xyz_before = xyz.copy()
        parents_in = parents.copy()
        parents_in[0] = -7
        t = SwcTree.from_arrays(ids, types, xyz, radius, parents_in)
        self.assertEqual(int(t.parents[0]), -1)
        self.assertEqual(int(parents_in[0]), -7)
        np.testing.assert_array_equal(xyz, xyz_before)
        with self.assertRaises(ValueError):
            t.xyz[0, 0] = 5.0
        self.assertEqual(t.ids.dtype, np.int64)
        self.assertEqual(t.xyz.dtype, np.float64)

    def test_sort_parents_first_renumbered_and_stable(self):
        t = y_tree()
        perm = [4, 2, 5, 0, 3, 1]
        shuffled = SwcTree.from_arrays(t.ids[perm], t.types[perm], t.xyz[perm], t.radius[perm],
                                       t.parents[perm])
        s = shuffled.sort()
        self.assertAllEqual(s.ids, np.arange(1, 7))
        pos = {int(i): k for k, i in enumerate(s.ids)}
        for i, p in zip(s.ids, s.parents):
            if p >= 0:
                self.assertLess(pos[int(p)], pos[int(i)])
        # Same nodes and edges: compare edges as coordinate pairs.
        edges = sorted(map(tuple, s.segments().reshape(-1, 6).tolist()))
        self.assertEqual(edges, sorted(map(tuple, t.segments().reshape(-1, 6).tolist())))
        # Stable: an already sorted tree keeps its order (only renumbered).
        self.assertTrue(t.sort() == t)
        renum = SwcTree.from_arrays(t.ids * 10, t.types, t.xyz, t.radius,
                                    np.where(t.parents > 0, t.parents * 10, -1))
        self.assertTrue(renum.sort() == t)

    def test_deep_chain_without_recursion_limit(self):
        n = 5000
        ids, types, xyz, radius, parents = chain(n, step=0.5)
        perm = np.random.default_rng(0).permutation(n)
        t = SwcTree.from_arrays(ids[perm], types, xyz[perm], radius, parents[perm])
        s = t.sort()
        np.testing.assert_allclose(s.xyz[:, 0], np.arange(n) * 0.5)
        r = s.resample(2.0)
        gaps = np.diff(r.xyz[:, 0])  # length 2499.5: steps of 2, then a last gap of 1.5
        np.testing.assert_allclose(gaps[:-1], 2.0, atol=1e-9)
        self.assertAllClose(gaps[-1], 1.5)
        self.assertAllClose(r.path_length(), (n - 1) * 0.5)
        self.assertEqual(s.prune_spurs(3).num_trees, 1)
        # A cycle at the far end of a long chain is still found.
        bad_parents = parents.copy()
        bad_parents[0] = n
        with self.assertRaisesRegex(SwcError, "cycle"):
            SwcTree.from_arrays(ids, types, xyz, radius, bad_parents)


class SwcEditTest(parameterized.TestCase, tf.test.TestCase):

    def test_resample_straight_line_analytic(self):
        ids, types, xyz, radius, parents = chain(3, step=5.0)  # length 10
        radius = np.array([1.0, 2.0, 3.0])
        t = SwcTree.from_arrays(ids, types, xyz, radius, parents)
        r = t.resample(1.0)
        self.assertLen(r, 11)
        np.testing.assert_allclose(r.xyz[:, 0], np.arange(11.0))
        np.testing.assert_allclose(r.xyz[:, 1:], 0.0)
        # Radius interpolated linearly along each edge: 1 -> 2 over [0, 5], 2 -> 3 over [5, 10].
        np.testing.assert_allclose(r.radius, 1.0 + np.arange(11.0) / 5.0)
        self.assertAllEqual(r.parents, np.r_[-1, np.arange(1, 11)])

    @parameterized.parameters(0.3, 0.7, 1.0, 2.5)
    def test_resample_keeps_branch_points_and_tips(self, step):
        t = y_tree()
        r = t.resample(step)
        keep = t.xyz[np.isin(t.ids, np.r_[t.roots, t.branch_points(), t.tips()])]
        for p in keep:
            self.assertTrue(np.any(np.all(np.isclose(r.xyz, p), axis=1)), msg=str(p))
        self.assertLen(r.branch_points(), 1)
        self.assertLen(r.tips(), 2)
        # Straight edges: length is preserved and no edge is longer than the step.
        self.assertAllClose(r.path_length(), t.path_length())
        self.assertLessEqual(r.edge_lengths().max(), step + 1e-9)
        # Node count per path: floor-based placement on each unbranched path.
        expected = 1 + sum(int(np.ceil(L / step - 1e-9)) for L in (2.0, 2.0, 1.0))
        self.assertLen(r, expected)

    def test_resample_rejects_bad_step(self):
        with self.assertRaisesRegex(ValueError, "step"):
            y_tree().resample(0)

    def test_crop_strict_and_reroot(self):
        t = y_tree()
        c = t.crop([1.5, -1, -1], [10, 10, 1])
        # Node 2 at x=1 is out; node 3 (x=2), 4, 5, 6 stay; 3 becomes a root.
        self.assertAllEqual(c.ids, [3, 4, 5, 6])
        self.assertAllEqual(c.parents, [-1, 3, 4, 3])
        # Strictly inside: a node exactly on the face is dropped.
        c2 = t.crop([2, -1, -1], [10, 10, 1])  # drops 3 (x=2) and 6 (x=2)
        self.assertAllEqual(c2.ids, [4, 5])
        self.assertAllEqual(c2.parents, [-1, 4])
        c3 = t.crop([1.5, -1, -1], [10, 0.5, 1])  # drops 6 (y=1): one fragment left
        self.assertAllEqual(c3.ids, [3, 4, 5])
        c4 = t.crop([2.5, -1, -1], [10, 10, 1]).num_trees, t.crop([-1, 0.5, -1], [10, 10, 1])
        self.assertEqual(c4[0], 1)
        self.assertAllEqual(c4[1].ids, [6])
        self.assertAllEqual(c4[1].parents, [-1])
        shifted = t.crop([1.5, -1, -1], [10, 10, 1], shift=True)
        np.testing.assert_allclose(shifted.xyz, c.xyz - [1.5, -1, -1])
        with self.assertRaisesRegex(ValueError, "box_min"):
            t.crop([0, 0, 0], [0, 1, 1])

    def test_prune_spurs(self):
        t = y_tree()
        p = t.prune_spurs(1)
        self.assertAllEqual(p.ids, [1, 2, 3, 4, 5])
        # The branch 3 -> 4 -> 5 has two nodes: kept with max_nodes=1, and at max_nodes=2
        # both children of 3 are spurs, so the longer one (4, 5) is kept.
        self.assertAllEqual(t.prune_spurs(2).ids, [1, 2, 3, 4, 5])
        # A whole unbranched tree is not a spur.
        ids, types, xyz, radius, parents = chain(3)
        line = SwcTree.from_arrays(ids, types, xyz, radius, parents)
        self.assertLen(line.prune_spurs(5), 3)
        with self.assertRaisesRegex(ValueError, "max_nodes"):
            t.prune_spurs(0)

    def test_remove_small_fragments_with_keep_rule(self):
        a = chain(5, start=(10, 10, 10))
        b = chain(2, start=(30, 30, 30), first_id=100)  # interior, small
        c = chain(2, start=(1, 50, 50), first_id=200)  # small, near the x=0 face
        cols = [np.concatenate(parts) for parts in zip(a, b, c)]
        forest = SwcTree.from_arrays(*cols)
        self.assertEqual(forest.num_trees, 3)
        out = forest.remove_small_fragments(3)
        self.assertAllEqual(out.ids, a[0])
        box = ([0, 0, 0], [64, 64, 64])
        kept = forest.remove_small_fragments(3, keep=near_face(*box, fraction=0.1))
        self.assertAllEqual(kept.ids, np.r_[a[0], c[0]])
        seen = []
        forest.remove_small_fragments(3, keep=lambda frag: seen.append(len(frag)) or False)
        self.assertEqual(sorted(seen), [2, 2])
        with self.assertRaisesRegex(ValueError, "keep"):
            forest.remove_small_fragments(3, keep="near")

    def test_subset_and_tree_labels(self):
        t = y_tree()
        sub = t.subset(t.ids != 3)
        self.assertEqual(sub.num_trees, 3)  # 1-2, 4-5 and 6
        labels = sub.tree_labels()
        self.assertEqual(len(np.unique(labels)), 3)
        with self.assertRaisesRegex(ValueError, "keep"):
            t.subset([True])


class SwcErrorTest(parameterized.TestCase, tf.test.TestCase):

    def _write(self, text, name="bad.swc"):
        path = os.path.join(self.get_temp_dir(), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    @parameterized.named_parameters(
        ("columns", "1 1 0 0 0 1 -1\n2 3 1 0 0 1\n", r"line 2: expected 7 columns"),
        ("non_numeric", "1 1 0 0 0 1 -1\n2 3 1 abc 0 1 1\n", r"line 2: non-numeric value 'abc'"),
        ("fractional_id", "1.5 1 0 0 0 1 -1\n", r"line 1: id must be an integer"),
        ("nan", "1 1 nan 0 0 1 -1\n", r"line 1: non-finite"),
        ("duplicate", "1 1 0 0 0 1 -1\n1 3 1 0 0 1 -1\n", r"duplicate node id 1"),
        ("missing_parent", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 7\n", r"node 2 has parent 7"),
        ("cycle", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 3\n3 3 1 0 0 1 2\n", r"cycle .* node"),
        ("self_parent", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 2\n", r"cycle .* node 2"),
    )
    def test_file_errors_name_file_and_place(self, text, pattern):
        path = self._write(text)
        with self.assertRaisesRegex(SwcError, pattern) as ctx:
            read_swc(path)
        self.assertIn(path, str(ctx.exception))

    def test_missing_file(self):
        with self.assertRaisesRegex(FileNotFoundError, "nope.swc"):
            read_swc(os.path.join(self.get_temp_dir(), "nope.swc"))

    def test_validate_false_reads_broken_tree(self):
        path = self._write("1 1 0 0 0 1 -1\n2 3 1 0 0 1 7\n")
        tree = read_swc(path, validate=False)
        self.assertLen(tree, 2)
        with self.assertRaisesRegex(SwcError, "node 2"):
            tree.validate()

    def test_from_arrays_shape_errors(self):
        with self.assertRaisesRegex(SwcError, r"xyz must have shape"):
            SwcTree.from_arrays([1], [1], [[0, 0]], [1], [-1])
        with self.assertRaisesRegex(SwcError, r"parents must have shape"):
            SwcTree.from_arrays([1, 2], [1, 1], np.zeros((2, 3)), [1, 1], [-1])
