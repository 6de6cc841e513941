"""iSeg HDF5: preparation, layout, crops and the patch loader."""
import os

import h5py
import numpy as np
import tensorflow as tf

from keras_medseg.io import hdf5
from keras_medseg.io.hdf5 import (Hdf5FormatError, IsegPatchSampler, cut_edge_bounds,
                                  iseg_hdf5_shape, map_iseg_labels, patch_tf_dataset,
                                  prepare_hdf5_cutedge, read_iseg_crop, read_iseg_hdf5,
                                  write_iseg_hdf5)


def phantom(shape=(20, 24, 28), box=((5, 12), (6, 20), (3, 25)), seed=0):
    rng = np.random.default_rng(seed)
    t1 = np.zeros(shape, np.int16)
    t2 = np.zeros(shape, np.int16)
    label = np.zeros(shape, np.uint8)
    sl = tuple(slice(a, b) for a, b in box)
    t1[sl] = rng.integers(50, 400, size=t1[sl].shape)
    t2[sl] = rng.integers(10, 900, size=t2[sl].shape)
    inner = rng.choice(np.array([10, 150, 250], np.uint8), size=label[sl].shape)
    label[sl] = inner
    return t1, t2, label


class PrepareTest(tf.test.TestCase):

    def test_map_labels(self):
        out = map_iseg_labels(np.array([[0, 10], [150, 250]], np.int16))
        np.testing.assert_array_equal(out, [[0, 1], [2, 3]])
        self.assertEqual(out.dtype, np.uint8)
        with self.assertRaisesRegex(ValueError, r"values \[3, 11\] outside"):
            map_iseg_labels(np.array([0, 3, 10, 11]))

    def test_cut_edge_bounds_reference(self):
        mask = np.zeros((30, 40, 50), bool)
        mask[10:12, 5:30, 40:45] = True
        idx = np.argwhere(mask)
        for margin in (0, 3, 32):
            lo = np.maximum(idx.min(0) - margin, 0)
            hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
            self.assertEqual(cut_edge_bounds(mask, margin), tuple(zip(lo.tolist(), hi.tolist())))
        with self.assertRaisesRegex(ValueError, "empty"):
            cut_edge_bounds(np.zeros((3, 3)), 1)
        with self.assertRaisesRegex(ValueError, "margin"):
            cut_edge_bounds(mask, -1)

    def test_prepare_normalises_and_crops(self):
        t1, t2, label = phantom()
        t1_before = t1.copy()
        out = prepare_hdf5_cutedge(t1, t2, label, margin=2)
        np.testing.assert_array_equal(t1, t1_before)
        self.assertEqual(out.bounds, ((3, 14), (4, 22), (1, 27)))
        self.assertEqual(out.data.shape, (2, 11, 18, 26))
        self.assertEqual(out.data.dtype, np.float32)
        mask = t1 > 0
        crop = tuple(slice(a, b) for a, b in out.bounds)
        for c, raw in enumerate((t1, t2)):
            ref = (raw[crop] - raw[mask].mean()) / raw[mask].std()
            np.testing.assert_allclose(out.data[c], ref, rtol=1e-5, atol=1e-5)
            inside = out.data[c][mask[crop]]
            self.assertAllClose(inside.mean(), 0.0, atol=1e-5)
            self.assertAllClose(inside.std(), 1.0, atol=1e-5)
        np.testing.assert_array_equal(out.label, map_iseg_labels(label[crop]))
        # A margin larger than the volume clamps to the volume.
        self.assertEqual(prepare_hdf5_cutedge(t1, t2, margin=32).bounds,
                         ((0, 20), (0, 24), (0, 28)))
        self.assertIsNone(prepare_hdf5_cutedge(t1, t2).label)

    def test_prepare_errors(self):
        t1, t2, label = phantom()
        with self.assertRaisesRegex(ValueError, "same shape"):
            prepare_hdf5_cutedge(t1, t2[1:])
        with self.assertRaisesRegex(ValueError, "mask"):
            prepare_hdf5_cutedge(np.zeros_like(t1), t2)
        with self.assertRaisesRegex(ValueError, "t2 is constant"):
            prepare_hdf5_cutedge(t1, np.ones_like(t2))
        bad = label.copy()
        bad[0, 0, 0] = 7
        with self.assertRaisesRegex(ValueError, r"\[7\]"):
            prepare_hdf5_cutedge(t1, t2, bad)


class LayoutTest(tf.test.TestCase):

    def test_keys_dtypes_and_channels_last(self):
        t1, t2, label = phantom()
        subj = prepare_hdf5_cutedge(t1, t2, label)
        path = write_iseg_hdf5(os.path.join(self.get_temp_dir(), "s1.h5"), subj.data, subj.label)
        with h5py.File(path, "r") as f:
            self.assertEqual(sorted(f.keys()), ["data", "label"])
            self.assertEqual(f["data"].dtype, np.float32)
            self.assertEqual(f["label"].dtype, np.uint8)
            self.assertEqual(f["data"].shape, subj.data.shape)
        x, y = read_iseg_hdf5(path)
        np.testing.assert_array_equal(x, np.moveaxis(subj.data, 0, -1))
        np.testing.assert_array_equal(y, subj.label)
        x2, _ = read_iseg_hdf5(path, channels_last=False)
        np.testing.assert_array_equal(x2, subj.data)
        self.assertEqual(iseg_hdf5_shape(path), (subj.label.shape, 2, True))

    def test_original_caffe_layout_is_readable(self):
        data = np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32)
        label = np.arange(120, dtype=np.uint8).reshape(4, 5, 6) % 4
        path = write_iseg_hdf5(os.path.join(self.get_temp_dir(), "c.h5"), data, label,
                               leading_axes=True)
        with h5py.File(path, "r") as f:
            self.assertEqual(f["data"].shape, (1, 2, 4, 5, 6))
            self.assertEqual(f["label"].shape, (1, 1, 4, 5, 6))
        x, y = read_iseg_hdf5(path)
        np.testing.assert_array_equal(x, np.moveaxis(data, 0, -1))
        np.testing.assert_array_equal(y, label)
        cx, cy = read_iseg_crop(path, (1, 1, 1), (2, 2, 2))
        np.testing.assert_array_equal(cx, np.moveaxis(data, 0, -1)[1:3, 1:3, 1:3])
        np.testing.assert_array_equal(cy, label[1:3, 1:3, 1:3])

    def test_crop_pads_like_numpy(self):
        data = np.random.default_rng(1).normal(size=(1, 5, 6, 7)).astype(np.float32)
        label = (np.arange(210).reshape(5, 6, 7) % 3 + 1).astype(np.uint8)
        path = write_iseg_hdf5(os.path.join(self.get_temp_dir(), "p.h5"), data, label)
        start, size = (-2, 3, 4), (4, 5, 6)
        x, y = read_iseg_crop(path, start, size, pad_value=-9.0)
        padded = np.pad(data[0], 10, constant_values=-9.0)
        lab = np.pad(label, 10)
        sl = tuple(slice(s + 10, s + 10 + n) for s, n in zip(start, size))
        np.testing.assert_array_equal(x[..., 0], padded[sl])
        np.testing.assert_array_equal(y, lab[sl])
        # Completely outside: all padding.
        x, y = read_iseg_crop(path, (50, 50, 50), (2, 2, 2), pad_value=1.5)
        np.testing.assert_array_equal(x, 1.5)
        np.testing.assert_array_equal(y, 0)

    def test_write_validation(self):
        d = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "modalities"):
            write_iseg_hdf5(os.path.join(d, "a.h5"), np.zeros((4, 5, 6)))
        with self.assertRaisesRegex(ValueError, "label must have shape"):
            write_iseg_hdf5(os.path.join(d, "a.h5"), np.zeros((2, 4, 5, 6)), np.zeros((4, 5)))
        with self.assertRaisesRegex(ValueError, "NaN"):
            write_iseg_hdf5(os.path.join(d, "a.h5"), np.full((1, 2, 2, 2), np.nan))
        self.assertFalse(os.path.exists(os.path.join(d, "a.h5")))

    def test_read_errors_name_file(self):
        path = os.path.join(self.get_temp_dir(), "nokey.h5")
        with h5py.File(path, "w") as f:
            f["images"] = np.zeros((2, 3, 3, 3))
        with self.assertRaisesRegex(Hdf5FormatError, r"nokey.h5: no 'data' dataset"):
            read_iseg_hdf5(path)
        with self.assertRaisesRegex(FileNotFoundError, "absent.h5"):
            read_iseg_hdf5(os.path.join(self.get_temp_dir(), "absent.h5"))
        bad = os.path.join(self.get_temp_dir(), "mismatch.h5")
        with h5py.File(bad, "w") as f:
            f["data"] = np.zeros((2, 3, 3, 3), np.float32)
            f["label"] = np.zeros((3, 3, 4), np.uint8)
        with self.assertRaisesRegex(Hdf5FormatError, "mismatch.h5: 'label' shape"):
            read_iseg_hdf5(bad)


class SamplerTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(2)
        self.files = []
        self.arrays = []
        for k, shape in enumerate([(12, 14, 16), (10, 12, 9), (16, 16, 16)]):
            data = rng.normal(size=(2, *shape)).astype(np.float32)
            label = rng.integers(0, 3, size=shape).astype(np.uint8)
            label[:2, :2, :2] = 3  # a rare class in one corner
            path = write_iseg_hdf5(os.path.join(self.get_temp_dir(), f"s{k}.h5"), data, label)
            self.files.append(path)
            self.arrays.append((data, label))

    def _find(self, x, y):
        """Locate a crop in the source volumes (returns file index and corner)."""
        for fi, (data, label) in enumerate(self.arrays):
            shape = label.shape
            for z in range(shape[0] - y.shape[0] + 1):
                for a in range(shape[1] - y.shape[1] + 1):
                    for b in range(shape[2] - y.shape[2] + 1):
                        sl = (slice(z, z + y.shape[0]), slice(a, a + y.shape[1]),
                              slice(b, b + y.shape[2]))
                        if np.array_equal(np.moveaxis(data[(slice(None),) + sl], 0, -1), x):
                            return fi, (z, a, b)
        return None

    def test_train_epoch_structure_and_determinism(self):
        s = IsegPatchSampler(self.files, crop_size=(8, 8, 8), batch_size=4, repeats=4, seed=3)
        self.assertLen(s, 3)  # ceil(3 * 4 / 4)
        order = s.epoch_order(0)
        self.assertEqual(sorted(np.bincount(order).tolist()), [4, 4, 4])
        x, y = s.get_batch(0, epoch=0)
        self.assertEqual(x.shape, (4, 8, 8, 8, 2))
        self.assertEqual(y.shape, (4, 8, 8, 8))
        self.assertEqual((x.dtype, y.dtype), (np.float32, np.int32))
        x_again, _ = s.get_batch(0, epoch=0)
        np.testing.assert_array_equal(x, x_again)
        x_other, _ = s.get_batch(0, epoch=1)
        self.assertFalse(np.array_equal(x, x_other))
        # Every crop is a real sub-block of the file the order says (all files >= 8^3 here).
        for k in range(4):
            found = self._find(x[k], y[k])
            self.assertIsNotNone(found)
            self.assertEqual(found[0], int(order[k]))
            np.testing.assert_array_equal(y[k], self.arrays[found[0]][1][
                tuple(slice(c, c + 8) for c in found[1])])

    def test_val_centre_crop_and_padding(self):
        s = IsegPatchSampler(self.files, crop_size=(8, 10, 12), batch_size=2, mode="val")
        self.assertLen(s, 2)
        x, y = s.get_batch(0)
        data, label = self.arrays[0]
        start = (np.array(label.shape) - (8, 10, 12)) // 2
        sl = tuple(slice(a, a + n) for a, n in zip(start, (8, 10, 12)))
        np.testing.assert_array_equal(x[0], np.moveaxis(data[(slice(None),) + sl], 0, -1))
        np.testing.assert_array_equal(y[0], label[sl])
        # File 1 is 9 voxels deep along the last axis: corner (9 - 12) // 2 = -2, so two
        # padded planes before the data and one after.
        data1, label1 = self.arrays[1]
        self.assertAllEqual(x[1][:, :, :2], np.zeros((8, 10, 2, 2)))
        self.assertAllEqual(x[1][:, :, 11:], np.zeros((8, 10, 1, 2)))
        np.testing.assert_array_equal(x[1][:, :, 2:11], np.moveaxis(data1, 0, -1)[1:9, 1:11])
        np.testing.assert_array_equal(y[1][:, :, 2:11], label1[1:9, 1:11, :])
        xb, _ = s.get_batch(1)
        self.assertEqual(xb.shape[0], 1)  # last, partial batch
        with self.assertRaises(IndexError):
            s.get_batch(2)

    def test_class_balanced_reaches_rare_class(self):
        crop = (4, 4, 4)
        plain = IsegPatchSampler(self.files, crop_size=crop, batch_size=12, repeats=4, seed=5)
        balanced = IsegPatchSampler(self.files, crop_size=crop, batch_size=12, repeats=4, seed=5,
                                    class_balanced=True)
        def rare_fraction(sampler):
            hits = [np.any(sampler.get_batch(0, e)[1] == 3, axis=(1, 2, 3)) for e in range(5)]
            return np.mean(hits)
        # The rare corner covers 8 voxels; balanced sampling picks it in ~1/4 of the crops.
        self.assertGreater(rare_fraction(balanced), 0.15)
        self.assertGreater(rare_fraction(balanced), 2 * rare_fraction(plain))

    def test_sampler_validation(self):
        with self.assertRaisesRegex(ValueError, "files"):
            IsegPatchSampler([])
        with self.assertRaisesRegex(ValueError, "crop_size"):
            IsegPatchSampler(self.files, crop_size=(8, 8))
        with self.assertRaisesRegex(ValueError, "mode"):
            IsegPatchSampler(self.files, mode="test")
        nolabel = write_iseg_hdf5(os.path.join(self.get_temp_dir(), "nl.h5"),
                                  np.zeros((2, 4, 4, 4), np.float32))
        with self.assertRaisesRegex(Hdf5FormatError, "nl.h5: no 'label'"):
            IsegPatchSampler([nolabel])

    def test_keras_fit_with_pydataset_and_tf_data(self):
        import keras

        keras.utils.set_random_seed(0)
        ds = hdf5.IsegPatchDataset(self.files, crop_size=(8, 8, 8), batch_size=2, repeats=2,
                                   seed=1)
        self.assertIsInstance(ds, keras.utils.PyDataset)
        inputs = keras.Input((8, 8, 8, 2))
        model = keras.Model(inputs, keras.layers.Conv3D(4, 1)(inputs))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(ds, epochs=2, verbose=0)
        self.assertLen(history.history["loss"], 2)
        self.assertGreaterEqual(ds.epoch, 2)  # keras may also call on_epoch_end on reset
        tfds = patch_tf_dataset(ds.sampler, epochs=1)
        batches = list(tfds.as_numpy_iterator())
        self.assertLen(batches, len(ds.sampler))
        np.testing.assert_array_equal(batches[0][0], ds.sampler.get_batch(0, 0)[0])
