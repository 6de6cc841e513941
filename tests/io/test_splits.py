"""Tests of keras_medseg.io.splits: seeded group-aware splits, k-fold, ImageSets, split files."""
import hashlib
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io import splits as sp


def _groups(sizes):
    """Group labels 'g0', 'g0', 'g1', ... for groups of the given sizes, interleaved by a
    fixed permutation so that groups are not contiguous."""
    labels = np.concatenate([[f"g{i}"] * s for i, s in enumerate(sizes)])
    return labels[np.random.default_rng(0).permutation(labels.size)]


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class SplitDataclassTest(tf.test.TestCase):

    def test_sorted_disjoint_and_take(self):
        s = sp.Split(train=np.array([3, 0]), val=[2], test=(1,))
        self.assertEqual(s.train, (0, 3))
        self.assertEqual(s.trainval, (0, 2, 3))
        self.assertEqual(s.sizes(), {"train": 2, "val": 1, "test": 1})
        self.assertEqual(s.take("abcd"), {"train": ["a", "d"], "val": ["c"], "test": ["b"]})
        with self.assertRaisesRegex(ValueError, "out of range"):
            s.take("abc")
        with self.assertRaisesRegex(ValueError, "another side"):
            sp.Split(train=[0, 1], val=[1])
        with self.assertRaisesRegex(ValueError, "negative"):
            sp.Split(train=[-1])


class TrainValTestTest(tf.test.TestCase, parameterized.TestCase):

    def _check_partition(self, split, n):
        all_idx = split.train + split.val + split.test
        self.assertEqual(sorted(all_idx), list(range(n)))

    def test_plain_sizes_and_seed(self):
        s = sp.train_val_test_split(100, val_fraction=0.15, test_fraction=0.15, seed=1)
        self._check_partition(s, 100)
        self.assertEqual(s.sizes(), {"train": 70, "val": 15, "test": 15})
        self.assertEqual(s, sp.train_val_test_split(list(range(100)), seed=1))
        self.assertNotEqual(s, sp.train_val_test_split(100, seed=2))
        tiny = sp.train_val_test_split(5, val_fraction=0.05, test_fraction=0.05, seed=0)
        self.assertEqual(tiny.sizes(), {"train": 3, "val": 1, "test": 1})

    def test_stratified_reproduces_sklearn_original(self):
        from sklearn.model_selection import train_test_split

        y = np.repeat([0, 1, 2], [30, 20, 50])
        s = sp.train_val_test_split(100, val_fraction=0.0, test_fraction=0.2, seed=15, stratify=y)
        tr, te = train_test_split(np.arange(100), test_size=0.2, stratify=y, random_state=15)
        self.assertEqual(s.train, tuple(sorted(tr)))
        self.assertEqual(s.test, tuple(sorted(te)))
        self.assertEqual(s.val, ())
        # class proportions are kept on every side
        s3 = sp.train_val_test_split(100, val_fraction=0.2, test_fraction=0.2, seed=3, stratify=y)
        self._check_partition(s3, 100)
        for side in (s3.val, s3.test):
            self.assertAllEqual(np.bincount(y[list(side)]), [6, 4, 10])

    @parameterized.parameters(0, 1, 2, 3)
    def test_groups_never_cross_sides(self, seed):
        groups = _groups([7, 3, 12, 5, 9, 4, 6, 8, 2, 10, 5, 9])  # 80 items, 12 groups
        s = sp.train_val_test_split(groups, val_fraction=0.15, test_fraction=0.15, seed=seed,
                                    groups=groups)
        self._check_partition(s, groups.size)
        sides = [set(groups[list(x)]) for x in (s.train, s.val, s.test)]
        self.assertTrue(all(sides))
        self.assertFalse(sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        # whole groups: the item counts come within one largest group of the targets
        self.assertLessEqual(abs(len(s.test) - 12), 12)
        self.assertLessEqual(abs(len(s.val) - 12), 12)

    def test_groups_with_stratify(self):
        groups = np.repeat(np.arange(20), 5)
        y = np.repeat(np.arange(20) % 2, 5)  # each group has one class
        s = sp.train_val_test_split(100, val_fraction=0.2, test_fraction=0.2, seed=4,
                                    groups=groups, stratify=y)
        self._check_partition(s, 100)
        sides = [set(groups[list(x)]) for x in (s.train, s.val, s.test)]
        self.assertFalse(sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        for side in (s.val, s.test):
            self.assertEqual(set(y[list(side)]), {0, 1})

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "val_fraction \\+ test_fraction"):
            sp.train_val_test_split(10, val_fraction=0.5, test_fraction=0.5)
        with self.assertRaisesRegex(ValueError, "test_fraction"):
            sp.train_val_test_split(10, test_fraction=-0.1)
        with self.assertRaisesRegex(ValueError, "seed"):
            sp.train_val_test_split(10, seed=None)
        with self.assertRaisesRegex(ValueError, "groups must hold one value"):
            sp.train_val_test_split(10, groups=[0, 1])
        with self.assertRaisesRegex(ValueError, "not enough groups"):
            sp.train_val_test_split(10, groups=[0] * 5 + [1] * 5)
        with self.assertRaisesRegex(ValueError, "too few"):
            sp.train_val_test_split(2)
        with self.assertRaisesRegex(ValueError, "items"):
            sp.train_val_test_split(0)


class KFoldTest(tf.test.TestCase):

    def test_matches_sklearn_stratified_kfold(self):
        from sklearn.model_selection import StratifiedKFold

        y = np.repeat([0, 1, 2], [20, 25, 15])
        folds = sp.kfold(60, 5, seed=15, stratify=y)
        ref = StratifiedKFold(5, shuffle=True, random_state=15).split(np.zeros(60), y)
        for f, (tr, va) in zip(folds, ref):
            self.assertEqual(f.train, tuple(tr))
            self.assertEqual(f.val, tuple(va))
            self.assertEqual(f.test, ())

    def test_group_folds_seeded_balanced_and_disjoint(self):
        groups = _groups([7, 3, 12, 5, 9, 4, 6, 8, 2, 10, 5, 9])
        folds = sp.kfold(groups.size, 4, seed=0, groups=groups)
        self.assertLen(folds, 4)
        vals = np.concatenate([f.val for f in folds])
        self.assertEqual(sorted(vals), list(range(groups.size)))  # each item held out once
        held = [set(groups[list(f.val)]) for f in folds]
        for i, f in enumerate(folds):
            self.assertFalse(held[i] & set(groups[list(f.train)]))
        sizes = [len(f.val) for f in folds]
        self.assertLessEqual(max(sizes) - min(sizes), 12)  # at most the largest group
        same = sp.kfold(groups.size, 4, seed=0, groups=groups)
        self.assertEqual(folds, same)
        other = sp.kfold(groups.size, 4, seed=1, groups=groups)
        self.assertNotEqual([f.val for f in folds], [f.val for f in other])

    def test_stratified_group_folds(self):
        groups = np.repeat(np.arange(12), 4)
        y = np.repeat(np.arange(12) % 3, 4)
        folds = sp.kfold(48, 3, seed=2, groups=groups, stratify=y)
        for f in folds:
            self.assertFalse(set(groups[list(f.val)]) & set(groups[list(f.train)]))
            self.assertEqual(set(y[list(f.val)]), {0, 1, 2})

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "k must be an integer >= 2"):
            sp.kfold(10, 1)
        with self.assertRaisesRegex(ValueError, "at least 4 groups"):
            sp.kfold(10, 4, groups=[0, 1, 2] * 3 + [0])
        with self.assertRaisesRegex(ValueError, "at least 11 items"):
            sp.kfold(10, 11)

    def test_contiguous_groups(self):
        self.assertAllEqual(sp.contiguous_groups(7, 3), [0, 0, 0, 1, 1, 1, 2])
        with self.assertRaisesRegex(ValueError, "block_size"):
            sp.contiguous_groups(7, 0)


class FilesTest(tf.test.TestCase):

    def test_make_imagesets_byte_identical_and_consistent(self):
        names = [f"frame_{i:04d}" for i in range(40)]
        a = sp.make_imagesets(names, os.path.join(self.get_temp_dir(), "a"), seed=7)
        b = sp.make_imagesets(names, os.path.join(self.get_temp_dir(), "b"), seed=7)
        c = sp.make_imagesets(names, os.path.join(self.get_temp_dir(), "c"), seed=8)
        self.assertEqual(sorted(a), ["test", "train", "trainval", "val"])
        for key in a:
            self.assertEqual(a[key].parent.name, "ImageSets")
            self.assertEqual(_sha(a[key]), _sha(b[key]))
        self.assertNotEqual(_sha(a["test"]), _sha(c["test"]))
        root = a["train"].parent.parent
        read = {k: sp.read_imageset(root, k) for k in a}
        self.assertEqual(sorted(read["train"] + read["val"]), sorted(read["trainval"]))
        self.assertEqual(sorted(read["trainval"] + read["test"]), names)
        self.assertEqual((len(read["val"]), len(read["test"])), (6, 6))
        self.assertEqual(read["test"], sp.read_imageset(a["test"], "ignored"))
        self.assertEqual(read["val"], sp.read_imageset(root / "ImageSets", "val"))

    def test_make_imagesets_by_group(self):
        names = [f"vid{v}_{i:03d}" for v in range(6) for i in range(5)]
        groups = [n.split("_")[0] for n in names]
        files = sp.make_imagesets(names, self.get_temp_dir(), seed=0, groups=groups,
                                  val_fraction=0.2, test_fraction=0.2)
        vids = {k: {n.split("_")[0] for n in sp.read_imageset(files[k], k)} for k in files}
        self.assertFalse(vids["train"] & vids["test"] or vids["val"] & vids["test"]
                         or vids["train"] & vids["val"])

    def test_write_read_split_roundtrip(self):
        items = [f"case{i}.nii.gz" for i in range(20)]
        s = sp.train_val_test_split(items, seed=3)
        d = os.path.join(self.get_temp_dir(), "run")
        paths = sp.write_split(d, s, items)
        self.assertEqual(sorted(p.name for p in paths.values()), ["test.txt", "train.txt", "val.txt"])
        with open(paths["val"]) as f:
            self.assertEqual(f.read(), "".join(items[i] + "\n" for i in s.val))
        self.assertEqual(sp.read_split(d, items), s)
        with self.assertRaisesRegex(ValueError, r"val.txt' line 1: item"):
            sp.read_split(d, [x for i, x in enumerate(items) if i != s.val[0]])
        with self.assertRaisesRegex(FileNotFoundError, "train.txt"):
            sp.read_split(self.get_temp_dir() + "/empty", items)
        with self.assertRaisesRegex(ValueError, "unique"):
            sp.make_imagesets(["a", "a", "b"], self.get_temp_dir())
        with self.assertRaisesRegex(ValueError, "line breaks"):
            sp.write_split(d, s, ["a\nb"] + items[1:])
