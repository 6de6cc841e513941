"""brainview data: volume slicing, near-black filter, constant slices, leak-free splits."""
import os

import numpy as np
import tensorflow as tf

from keras_medseg.brainview import data as bvdata
from keras_medseg.io.images import read_image


def _fake_slices(n_per_stack=40, datasets=("a", "b")):
    paths, labels, names, stacks, pos = [], [], [], [], []
    for d in datasets:
        for v, view in enumerate(bvdata.VIEWS):
            for k in range(n_per_stack):
                paths.append(f"/nowhere/{d}_{view}_{k}.png")
                labels.append(v)
                names.append(d)
                stacks.append(f"{d}/{view}")
                pos.append(k)
    return bvdata.ViewSlices(paths, labels, names, stacks, pos)


class SliceVolumeTest(tf.test.TestCase):

    def test_slices_minmax_constant_safe_and_labels(self):
        vol = np.zeros((5, 6, 7), np.float32)
        vol[1] = 7.0                              # constant, non-zero slice
        vol[2] = np.arange(42, dtype=np.float32).reshape(6, 7)  # a ramp
        vol[3, 0, 0] = np.float32(1e-3)           # tiny range still reaches 255
        before = vol.copy()
        out = self.get_temp_dir()
        s = bvdata.slice_volume(vol, out, name="vol", axis=0, view="coronal", size=(6, 7))
        np.testing.assert_array_equal(vol, before)  # input untouched
        self.assertLen(s, 5)
        np.testing.assert_array_equal(s.labels, [1] * 5)
        np.testing.assert_array_equal(s.positions, np.arange(5))
        self.assertEqual(set(s.stacks), {"vol/coronal"})
        imgs = [read_image(p) for p in s.paths]
        self.assertEqual(imgs[0].max(), 0)          # empty slice -> zeros, no NaN
        self.assertEqual(imgs[1].max(), 0)          # constant slice -> zeros (no 0/0)
        ramp = np.rint(np.arange(42).reshape(6, 7) * 255.0 / 41).astype(np.uint8)
        np.testing.assert_array_equal(imgs[2][..., 0], ramp)
        self.assertEqual(imgs[3].max(), 255)

    def test_axis_and_step(self):
        vol = np.random.default_rng(0).random((4, 5, 6))
        s = bvdata.slice_volume(vol, self.get_temp_dir(), name="v", axis=2, view="sagittal",
                                size=8, step=2)
        np.testing.assert_array_equal(s.positions, [0, 2, 4])
        self.assertEqual(read_image(s.paths[0]).shape, (8, 8, 3))
        with self.assertRaisesRegex(ValueError, "axis"):
            bvdata.slice_volume(vol, self.get_temp_dir(), name="v", axis=3, view="coronal")
        with self.assertRaisesRegex(ValueError, "view"):
            bvdata.slice_volume(vol, self.get_temp_dir(), name="v", axis=0, view="axial")

    def test_pad_to_keeps_aspect_and_centres(self):
        vol = np.random.default_rng(1).uniform(1, 2, (3, 4, 8))
        out = self.get_temp_dir()
        s = bvdata.slice_volume(vol, out, name="p", axis=0, view="horizontal", size=8,
                                pad_to=8)
        img = read_image(s.paths[1])[..., 0]
        self.assertEqual(img.shape, (8, 8))
        np.testing.assert_array_equal(img[:2], 0)       # padded rows (the slice minimum)
        np.testing.assert_array_equal(img[6:], 0)
        sl = vol[1]
        expected = np.rint((sl - sl.min()) * 255.0 / (sl.max() - sl.min())).astype(np.uint8)
        np.testing.assert_array_equal(img[2:6], expected)
        with self.assertRaisesRegex(ValueError, "pad_to"):
            bvdata.slice_volume(vol, out, name="p", axis=0, view="horizontal", size=8,
                                pad_to=5)

    def test_near_black_filter_threshold_scale(self):
        vol = np.zeros((3, 8, 8))
        vol[1, :4] = 1.0   # mean 127.5 on the 0..255 scale
        vol[2, :, :] = np.linspace(0, 1, 64).reshape(8, 8)  # mean 127.5
        vol[0, 0, 0] = 1.0  # one bright pixel: mean 255/64 ~ 3.98
        s = bvdata.slice_volume(vol, self.get_temp_dir(), name="v", axis=0, view="coronal",
                                size=8)
        kept, keep = bvdata.drop_near_black(s, threshold=0.6, scale="0-255")
        np.testing.assert_array_equal(keep, [True, True, True])
        kept, keep = bvdata.drop_near_black(s, threshold=4.0, scale="0-255")
        np.testing.assert_array_equal(keep, [False, True, True])
        kept, keep = bvdata.drop_near_black(s, threshold=0.6, scale="fraction")  # < 153
        np.testing.assert_array_equal(keep, [False, False, False])
        self.assertLen(kept, 0)
        with self.assertRaisesRegex(ValueError, "threshold"):
            bvdata.drop_near_black(s, threshold=2.0, scale="fraction")


class PngViewsTest(tf.test.TestCase):

    def test_labels_follow_view_order_not_alphabet(self):
        from PIL import Image

        root = os.path.join(self.get_temp_dir(), "atlas")
        for view in ("sagittal", "coronal", "horizontal"):
            os.makedirs(os.path.join(root, view))
            for k in range(2):
                Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(
                    os.path.join(root, view, f"{view}_{k}.png"))
        s = bvdata.load_png_views(root)
        for p, label in zip(s.paths, s.labels):
            self.assertIn(bvdata.VIEWS[label], p)
        self.assertEqual(s.counts(), {"horizontal": 2, "coronal": 2, "sagittal": 2})
        os.makedirs(os.path.join(root, "axial"))
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(os.path.join(root, "axial", "x.png"))
        with self.assertRaisesRegex(ValueError, "axial"):
            bvdata.load_png_views(root)


class SplitTest(tf.test.TestCase):

    def test_stratified_matches_sklearn_per_dataset(self):
        from sklearn.model_selection import train_test_split

        s = _fake_slices(10)
        split = bvdata.split_train_test(s, method="stratified")
        for d in ("a", "b"):
            members = np.flatnonzero(s.datasets == d)
            _, ref_test = train_test_split(np.arange(members.size), test_size=0.2,
                                           stratify=s.labels[members], random_state=15)
            np.testing.assert_array_equal(sorted(set(split.test) & set(members)),
                                          sorted(members[ref_test]))

    def test_blocks_are_leak_free(self):
        s = _fake_slices(40)
        for gap in (1, 3):
            split = bvdata.split_train_test(s, method="blocks", block_size=8, gap=gap)
            self.assertNotEmpty(split.test)
            train, test = np.asarray(split.train), np.asarray(split.test)
            for i in test:
                same = train[s.stacks[train] == s.stacks[i]]
                self.assertGreater(np.min(np.abs(s.positions[same] - s.positions[i])), gap)
            # held out as whole contiguous blocks
            groups = bvdata.block_groups(s, 8)
            self.assertEmpty(set(groups[train]) & set(groups[test]))
            # every view of every dataset is tested
            for d in ("a", "b"):
                self.assertEqual(set(s.labels[test][s.datasets[test] == d]), {0, 1, 2})

    def test_blocks_gap_zero_keeps_border_neighbours(self):
        s = _fake_slices(40)
        split = bvdata.split_train_test(s, method="blocks", block_size=8, gap=0)
        self.assertEqual(len(split.train) + len(split.test), len(s))

    def test_volume_split(self):
        s = _fake_slices(5, datasets=("a", "b", "c"))
        split = bvdata.split_train_test(s, method="volume", test_datasets=["b"])
        self.assertEqual(set(s.datasets[list(split.test)]), {"b"})
        self.assertEqual(set(s.datasets[list(split.train)]), {"a", "c"})
        with self.assertRaisesRegex(ValueError, "test_datasets"):
            bvdata.split_train_test(s, method="volume", test_datasets=["z"])
        with self.assertRaisesRegex(ValueError, "two datasets"):
            bvdata.split_train_test(_fake_slices(5, ("a",)), method="volume")

    def test_bad_arguments(self):
        s = _fake_slices(5)
        with self.assertRaisesRegex(ValueError, "method"):
            bvdata.split_train_test(s, method="random")
        with self.assertRaisesRegex(ValueError, "test_size"):
            bvdata.split_train_test(s, test_size=1.5)
        with self.assertRaisesRegex(ValueError, "gap"):
            bvdata.split_train_test(s, method="blocks", gap=-1)
        with self.assertRaisesRegex(ValueError, "labels"):
            bvdata.ViewSlices(["x"], [1, 2], ["a"], ["a/x"], [0])
