"""Bad 2D inputs give clear errors naming the file, and no input file is ever modified."""
import hashlib
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_medseg.io import images as im
from keras_medseg.io import tfrecord as tr
from keras_medseg.io.splits import read_imageset


def _digest(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _truncate(path, n_bytes):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-n_bytes])


class BadInput2DTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.get_temp_dir(), f"in_{self.id().split('.')[-1]}")
        self.out = os.path.join(self.get_temp_dir(), f"out_{self.id().split('.')[-1]}")
        rng = np.random.default_rng(0)
        for sub in ("img", "mask"):
            os.makedirs(os.path.join(self.root, sub))
        for k in range(4):
            image = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
            Image.fromarray(image).save(os.path.join(self.root, "img", f"f{k}.jpg" if k % 2 else f"f{k}.png"))
            Image.fromarray((rng.random((32, 24)) > 0.5).astype(np.uint8)).save(
                os.path.join(self.root, "mask", f"f{k}.png"))
        self.names = [f"f{k}" for k in range(4)]
        self.img = os.path.join(self.root, "img")
        self.mask = os.path.join(self.root, "mask")

    def _snapshot(self):
        self.before = _digest(self.root)

    def tearDown(self):
        if hasattr(self, "before"):
            self.assertEqual(_digest(self.root), self.before)  # no input modified
        super().tearDown()

    def test_truncated_jpeg_and_png(self):
        jpg, png = os.path.join(self.img, "f1.jpg"), os.path.join(self.img, "f0.png")
        _truncate(jpg, 200)
        _truncate(png, 200)
        self._snapshot()
        for path in (jpg, png):
            with self.assertRaisesRegex(im.ImageFileError, "truncated or corrupt") as ctx:
                im.read_image(path)
            self.assertIn(path, str(ctx.exception))
            self.assertEqual(ctx.exception.paths, (path,))
        with self.assertRaisesRegex(im.ImageFileError, "f0.png"):
            im.validate_images(sorted(im.list_images(self.img)))
        with self.assertRaisesRegex(im.ImageFileError, "f1.jpg"):
            tr.write_tfrecords(self.img, self.mask, ["f1"], os.path.join(self.out, "a.tfrecords"),
                               progress=False)
        self.assertFalse(os.path.exists(self.out) and os.listdir(self.out))

    def test_corrupt_bytes_in_image(self):
        path = os.path.join(self.img, "f0.png")
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 50)
        self._snapshot()
        with self.assertRaisesRegex(im.ImageFileError, "f0.png"):
            im.read_image(path)

    def test_mask_image_size_mismatch_names_both(self):
        Image.fromarray(np.zeros((31, 24), np.uint8)).save(os.path.join(self.mask, "f2.png"))
        self._snapshot()
        with self.assertRaises(im.ImageFileError) as ctx:
            im.pair_images_masks(self.img, self.mask, check_sizes=True)
        msg = str(ctx.exception)
        self.assertIn(os.path.join(self.img, "f2.png"), msg)
        self.assertIn(os.path.join(self.mask, "f2.png"), msg)
        self.assertIn("32x24", msg)
        self.assertIn("31x24", msg)
        with self.assertRaisesRegex(im.ImageFileError, "f2.png.*f2.png"):
            tr.write_tfrecords(self.img, self.mask, self.names, os.path.join(self.out, "a.tfrecords"),
                               progress=False)

    def test_supervisely_missing_mask_and_mismatch(self):
        sly = os.path.join(self.root, "sly")
        os.makedirs(os.path.join(sly, "img"))
        os.makedirs(os.path.join(sly, "masks_machine"))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(sly, "img", "a.jpg"))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(sly, "img", "b.jpg"))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(sly, "masks_machine", "a.png"))
        self._snapshot()
        with self.assertRaisesRegex(im.ImageFileError, r"b\.jpg' has no mask"):
            im.read_supervisely(sly)
        Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(os.path.join(sly, "masks_machine", "b.png"))
        self._snapshot()
        with self.assertRaisesRegex(im.ImageFileError, r"img/b\.jpg.*masks_machine/b\.png"):
            im.read_supervisely(sly)
        with self.assertRaisesRegex(FileNotFoundError, "not a Supervisely export"):
            im.read_supervisely(self.mask)

    def test_empty_class_folder(self):
        classes = os.path.join(self.root, "classes")
        os.makedirs(os.path.join(classes, "nerve"))
        os.makedirs(os.path.join(classes, "tendon"))
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(os.path.join(classes, "nerve", "a.png"))
        with open(os.path.join(classes, "tendon", "readme.txt"), "w") as f:
            f.write("x")
        self._snapshot()
        with self.assertRaisesRegex(im.ImageFileError, "tendon' holds no image"):
            im.list_class_folders(classes)
        paths, labels, names = im.list_class_folders(classes, allow_empty=True)
        self.assertEqual((len(paths), names), (1, ["nerve", "tendon"]))
        with self.assertRaisesRegex(im.ImageFileError, "no class sub-folders"):
            im.list_class_folders(os.path.join(classes, "nerve"))
        with self.assertRaisesRegex(FileNotFoundError, "nope"):
            im.list_class_folders(os.path.join(classes, "nope"))

    def test_missing_imagesets_name_and_file(self):
        sets = os.path.join(self.root, "ImageSets")
        os.makedirs(sets)
        with open(os.path.join(sets, "test.txt"), "w") as f:
            f.write("f0\nf9\n")
        self._snapshot()
        names = read_imageset(self.root, "test")
        with self.assertRaisesRegex(FileNotFoundError, "image 'f9'.*" + self.img):
            tr.write_tfrecords(self.img, self.mask, names, os.path.join(self.out, "t.tfrecords"),
                               progress=False)
        with self.assertRaisesRegex(FileNotFoundError, "image 'f9'"):
            tr.write_tfrecords(self.img, self.mask, os.path.join(sets, "test.txt"),
                               os.path.join(self.out, "t.tfrecords"), progress=False)
        self.assertFalse(os.path.exists(os.path.join(self.out, "t.tfrecords")))
        with self.assertRaisesRegex(FileNotFoundError, "ImageSets/val.txt"):
            read_imageset(self.root, "val")
        os.remove(os.path.join(self.mask, "f0.png"))
        self._snapshot()
        with self.assertRaisesRegex(FileNotFoundError, "mask 'f0'"):
            tr.write_tfrecords(self.img, self.mask, ["f0"], os.path.join(self.out, "t.tfrecords"),
                               progress=False)

    def _records(self):
        path = os.path.join(self.root, "data.tfrecords")
        tr.write_tfrecords(self.img, self.mask, self.names, path, progress=False)
        with open(path, "rb") as f:
            data = f.read()
        return path, data

    def test_truncated_tfrecord(self):
        path, data = self._records()
        with open(path, "wb") as f:
            f.write(data[:-7])
        self._snapshot()
        for fn in (tr.read_tfrecords, tr.validate_tfrecords):
            with self.assertRaises(tr.TFRecordError) as ctx:
                fn(path)
            self.assertEqual((ctx.exception.path, ctx.exception.index), (path, 3))
            self.assertRegex(str(ctx.exception), r"data\.tfrecords'.*record 3 .*truncated")
        # without the check, TensorFlow's own DataLossError surfaces during iteration
        with self.assertRaises(tf.errors.DataLossError):
            list(tr.read_tfrecords(path, check=False))

    def test_corrupted_tfrecord(self):
        path, data = self._records()
        record = len(data) // 4
        middle = record + record // 2  # inside the payload of record 1
        corrupt = bytearray(data)
        for i in range(middle, middle + 8):
            corrupt[i] ^= 0xFF
        with open(path, "wb") as f:
            f.write(bytes(corrupt))
        self._snapshot()
        for fn in (tr.read_tfrecords, tr.validate_tfrecords):
            with self.assertRaises(tr.TFRecordError) as ctx:
                fn([path])
            self.assertEqual((ctx.exception.path, ctx.exception.index), (path, 1))
            self.assertIn("corrupt", str(ctx.exception))

    def test_record_with_wrong_payload_size(self):
        path = os.path.join(self.root, "bad_payload.tfrecords")
        good = tr.encode_example(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "a")
        example = tf.train.Example.FromString(good)
        example.features.feature["image"].bytes_list.value[0] = b"\x00" * 47
        with tf.io.TFRecordWriter(path) as w:
            w.write(good)
            w.write(example.SerializeToString())
        self._snapshot()
        with self.assertRaisesRegex(tr.TFRecordError, r"record 1 .*image holds 47 bytes") as ctx:
            tr.validate_tfrecords(path)
        self.assertEqual(ctx.exception.path, path)
