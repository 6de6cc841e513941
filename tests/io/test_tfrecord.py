"""Tests of keras_medseg.io.tfrecord: the original's format, PNG option, shards, atomicity."""
import hashlib
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from keras_medseg.io import tfrecord as tr
from keras_medseg.io.images import ImageFileError, read_image, read_mask
from keras_medseg.io.splits import make_imagesets


def _tree_digest(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _original_parser(serialized):
    """The nerve original's reader: its seven keys only, raw bytes reshaped."""
    spec = {"height": tf.io.FixedLenFeature([], tf.int64),
            "width": tf.io.FixedLenFeature([], tf.int64),
            "depth": tf.io.FixedLenFeature([], tf.int64),
            "depth_segmentation": tf.io.FixedLenFeature([], tf.int64),
            "image": tf.io.FixedLenFeature([], tf.string),
            "segmentation_mask": tf.io.FixedLenFeature([], tf.string),
            "file_name": tf.io.FixedLenFeature([], tf.string)}
    f = tf.io.parse_single_example(serialized, spec)
    image = tf.reshape(tf.io.decode_raw(f["image"], tf.uint8), [f["height"], f["width"], f["depth"]])
    mask = tf.reshape(tf.io.decode_raw(f["segmentation_mask"], tf.uint8),
                      [f["height"], f["width"], f["depth_segmentation"]])
    return image, mask, f["file_name"]


class TFRecordTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.get_temp_dir(), f"data_{self.id().split('.')[-1]}")
        rng = np.random.default_rng(0)
        self.names = []
        for k in range(5):
            name = f"frame_{k:03d}"
            image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            labels = rng.integers(0, 2, (12, 10), dtype=np.uint8)
            os.makedirs(os.path.join(self.root, "img"), exist_ok=True)
            os.makedirs(os.path.join(self.root, "mask"), exist_ok=True)
            ext = ".png" if k % 2 else ".jpg"
            Image.fromarray(image).save(os.path.join(self.root, "img", name + ext))
            rgb = np.stack([labels, labels * 9, np.full_like(labels, 3)], -1)  # index in R
            Image.fromarray(rgb).save(os.path.join(self.root, "mask", name + ".png"))
            self.names.append(name)
        self.img_dir = os.path.join(self.root, "img")
        self.mask_dir = os.path.join(self.root, "mask")
        self.inputs = _tree_digest(self.root)
        self.out = os.path.join(self.get_temp_dir(), f"out_{self.id().split('.')[-1]}")

    def tearDown(self):
        self.assertEqual(_tree_digest(self.root), self.inputs)  # inputs never modified
        super().tearDown()

    def _expected(self, name):
        path = next(p for p in os.listdir(self.img_dir) if p.startswith(name))
        return (read_image(os.path.join(self.img_dir, path)),
                read_mask(os.path.join(self.mask_dir, name + ".png")), path)

    @parameterized.parameters("raw", "png")
    def test_roundtrip(self, encoding):
        files = tr.write_tfrecords(self.img_dir, self.mask_dir, self.names,
                                   os.path.join(self.out, "trainval.tfrecords"),
                                   encoding=encoding, progress=False)
        self.assertEqual([f.name for f in files], ["trainval.tfrecords"])
        records = list(tr.read_tfrecords(files))
        self.assertLen(records, 5)
        for (image, mask, fname), name in zip(records, self.names):
            exp_image, exp_mask, exp_name = self._expected(name)
            self.assertEqual(image.dtype, tf.uint8)
            self.assertEqual(mask.shape, (12, 10, 1))
            self.assertAllEqual(image, exp_image)
            self.assertAllEqual(mask[..., 0], exp_mask)
            self.assertEqual(fname.numpy().decode(), exp_name)
        self.assertEqual(tr.validate_tfrecords(files), {str(files[0]): 5})
        d = next(iter(tr.read_tfrecords(files, as_dict=True)))
        self.assertEqual(d["encoding"].numpy().decode(), encoding)
        self.assertEqual((int(d["height"]), int(d["width"])), (12, 10))

    def test_raw_is_readable_by_the_original_parser(self):
        files = tr.write_tfrecords(self.img_dir, self.mask_dir, self.names,
                                   os.path.join(self.out, "test.tfrecords"), progress=False)
        ds = tf.data.TFRecordDataset([str(f) for f in files]).map(_original_parser)
        for (image, mask, fname), name in zip(ds, self.names):
            exp_image, exp_mask, exp_name = self._expected(name)
            self.assertAllEqual(image, exp_image)
            self.assertAllEqual(mask[..., 0], exp_mask)
            self.assertEqual(fname.numpy().decode(), exp_name)
        example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(files[0])))).numpy())
        self.assertEqual(set(example.features.feature), set(tr.FEATURE_KEYS) | {"encoding"})
        self.assertEqual(example.features.feature["depth_segmentation"].int64_list.value[0], 1)
        self.assertLen(example.features.feature["image"].bytes_list.value[0], 12 * 10 * 3)

    def test_shards_idempotent_and_stale_shards_removed(self):
        out = os.path.join(self.out, "trainval.tfrecords")
        files = tr.write_tfrecords(self.img_dir, self.mask_dir, self.names, out,
                                   records_per_shard=2, progress=False)
        self.assertEqual([f.name for f in files], [f"trainval-0000{i}-of-00003.tfrecords"
                                                   for i in range(3)])
        self.assertEqual(list(tr.validate_tfrecords(files).values()), [2, 2, 1])
        first = _tree_digest(self.out)
        tr.write_tfrecords(self.img_dir, self.mask_dir, self.names, out, records_per_shard=2,
                           progress=False)
        self.assertEqual(_tree_digest(self.out), first)  # byte-identical rerun, no temp files
        names = [r[2].numpy().decode()[:9] for r in tr.read_tfrecords(out)]  # shard expansion
        self.assertEqual(names, self.names)
        # mixed encodings in one read
        png = tr.write_tfrecords(self.img_dir, self.mask_dir, self.names[:2],
                                 os.path.join(self.out, "p.tfrecords"), encoding="png",
                                 progress=False)
        self.assertLen(list(tr.read_tfrecords(files + png)), 7)
        # a rerun without sharding replaces the shards
        single = tr.write_tfrecords(self.img_dir, self.mask_dir, self.names, out, progress=False)
        self.assertEqual(sorted(os.listdir(self.out)), ["p.tfrecords", "trainval.tfrecords"])
        self.assertEqual([f.name for f in single], ["trainval.tfrecords"])

    def test_driven_by_imagesets_with_resize(self):
        sets = make_imagesets(self.names, self.root + "_sets", seed=0, val_fraction=0.2,
                              test_fraction=0.2)
        files = tr.write_tfrecords(self.img_dir, self.mask_dir, sets["test"],
                                   os.path.join(self.out, "test.tfrecords"), size=(6, 5),
                                   progress=False)
        test_names = tr.read_imageset(self.root + "_sets", "test")
        records = list(tr.read_tfrecords(files))
        self.assertEqual([r[2].numpy().decode().split(".")[0] for r in records], test_names)
        for image, mask, _ in records:
            self.assertEqual(image.shape, (6, 5, 3))
            self.assertTrue(set(np.unique(mask.numpy())) <= {0, 1})  # nearest: labels kept
        # full file names work as names too
        full = [n + (".png" if int(n[-1]) % 2 else ".jpg") for n in self.names]
        f2 = tr.write_tfrecords(self.img_dir, self.mask_dir, full,
                                os.path.join(self.out, "full.tfrecords"), progress=False)
        self.assertLen(list(tr.read_tfrecords(f2)), 5)

    def test_failed_write_leaves_previous_output_and_no_temp_files(self):
        out = os.path.join(self.out, "trainval.tfrecords")
        tr.write_tfrecords(self.img_dir, self.mask_dir, self.names[:2], out, progress=False)
        before = _tree_digest(self.out)
        bad_root = self.root + "_bad"
        os.makedirs(os.path.join(bad_root, "mask"))
        os.makedirs(os.path.join(bad_root, "img"))
        for n in self.names:
            for sub, ext in (("img", ".png"), ("mask", ".png")):
                Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(bad_root, sub, n + ext))
        # the last image is larger than its mask: found while writing the last record
        Image.fromarray(np.zeros((5, 4), np.uint8)).save(os.path.join(bad_root, "img", self.names[-1] + ".png"))
        with self.assertRaisesRegex(ImageFileError, "frame_004.png"):
            tr.write_tfrecords(os.path.join(bad_root, "img"), os.path.join(bad_root, "mask"),
                               self.names, out, records_per_shard=2, progress=False)
        self.assertEqual(_tree_digest(self.out), before)

    def test_encode_example_errors(self):
        image = np.zeros((4, 4, 3), np.uint8)
        with self.assertRaisesRegex(ValueError, "image must be uint8"):
            tr.encode_example(image.astype(np.float32), np.zeros((4, 4), np.uint8), "a")
        with self.assertRaisesRegex(ValueError, "sizes differ"):
            tr.encode_example(image, np.zeros((4, 5), np.uint8), "a")
        with self.assertRaisesRegex(ValueError, "encoding"):
            tr.encode_example(image, np.zeros((4, 4), np.uint8), "a", encoding="jpeg")
        with self.assertRaisesRegex(ValueError, "records_per_shard"):
            tr.write_tfrecords(self.img_dir, self.mask_dir, self.names, self.out + "/x.tfrecords",
                               records_per_shard=0, progress=False)
        with self.assertRaisesRegex(ValueError, "unique"):
            tr.write_tfrecords(self.img_dir, self.mask_dir, self.names[:1] * 2,
                               self.out + "/x.tfrecords", progress=False)
        with self.assertRaisesRegex(FileNotFoundError, "missing.tfrecords"):
            tr.read_tfrecords(self.out + "/missing.tfrecords")
