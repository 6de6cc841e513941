"""Tests of keras_medseg.io.images: listing, Supervisely, numpy readers, tf.data pipelines,
brainview helpers."""
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from keras_medseg.io import images as im


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, **kwargs).save(path)
    return path


def _blocks(rng, h, w, c=None):
    """An image made of 2x2 constant blocks: (2h, 2w[, c]) and its (h, w[, c]) block values."""
    shape = (h, w) if c is None else (h, w, c)
    small = rng.integers(0, 256, shape, dtype=np.uint8)
    kron = np.ones((2, 2) if c is None else (2, 2, 1), dtype=np.uint8)
    return np.kron(small, kron), small


class ListingTest(tf.test.TestCase):

    def _class_tree(self):
        root = os.path.join(self.get_temp_dir(), "classes")
        rng = np.random.default_rng(0)
        for cls, names in {"tendon": ["b.png", "a.jpg"], "nerve": ["x.JPG", "sub/y.jpeg"],
                           "opening wound": ["m.bmp", "n.png", "z.PNG"]}.items():
            for n in names:
                arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[
                    os.path.splitext(n)[1].lower()]
                path = os.path.join(root, cls, n)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(arr).save(path, format=fmt)
        with open(os.path.join(root, "nerve", "notes.txt"), "w") as f:
            f.write("not an image")
        os.makedirs(os.path.join(root, ".hidden"))
        return root

    def test_class_folders_match_keras_order(self):
        import keras

        root = self._class_tree()
        paths, labels, class_names = im.list_class_folders(root)
        self.assertEqual(class_names, ["nerve", "opening wound", "tendon"])
        self.assertEqual(labels.dtype, np.int32)
        self.assertLen(paths, 7)
        # Independent reference: Keras' own directory indexing (same class order and labels).
        ds = keras.utils.image_dataset_from_directory(root, shuffle=False, batch_size=None,
                                                      image_size=(6, 5), verbose=False)
        self.assertEqual(ds.class_names, class_names)
        reference = dict(zip(ds.file_paths, [int(y) for _, y in ds]))
        self.assertEqual(reference, dict(zip(paths, labels.tolist())))
        # grouped by class, sorted within
        self.assertEqual([os.path.basename(p) for p in paths[:2]], ["y.jpeg", "x.JPG"])  # sorted by relative path: sub/y < x

    def test_list_images_case_insensitive_and_sorted(self):
        root = self._class_tree()
        files = im.list_images(os.path.join(root, "opening wound"))
        self.assertEqual([os.path.basename(f) for f in files], ["m.bmp", "n.png", "z.PNG"])
        self.assertEqual(im.list_images(os.path.join(root, "nerve"), extensions=(".png",)), [])
        with self.assertRaisesRegex(ValueError, "extensions"):
            im.list_images(root, extensions=".png")

    def test_pair_by_stem_including_supervisely_names(self):
        d = self.get_temp_dir()
        rng = np.random.default_rng(1)
        for name in ("f1.jpg", "f2.png", "f3.JPG"):
            _save(os.path.join(d, "pi", name), rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        for name in ("f1.png", "f2.png", "f3.jpg.png", "orphan.png"):
            _save(os.path.join(d, "pm", name), np.zeros((4, 4), np.uint8))
        imgs, masks = im.pair_images_masks(os.path.join(d, "pi"), os.path.join(d, "pm"))
        self.assertEqual([os.path.basename(p) for p in imgs], ["f1.jpg", "f2.png", "f3.JPG"])
        self.assertEqual([os.path.basename(p) for p in masks], ["f1.png", "f2.png", "f3.jpg.png"])
        with self.assertRaisesRegex(im.ImageFileError, "orphan.png"):
            im.pair_images_masks(os.path.join(d, "pi"), os.path.join(d, "pm"),
                                 unmatched_masks="raise")

    def test_read_supervisely_red_channel_and_ignored_folders(self):
        root = os.path.join(self.get_temp_dir(), "sly", "ds0")
        rng = np.random.default_rng(2)
        expected = {}
        for k in range(3):
            image = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
            labels = rng.integers(0, 2, (8, 6), dtype=np.uint8)
            rgb = np.stack([labels, np.full_like(labels, 7), np.full_like(labels, 200)], -1)
            _save(os.path.join(root, "img", f"frame{k}.jpg"), image)
            _save(os.path.join(root, "masks_machine", f"frame{k}.png"), rgb)
            _save(os.path.join(root, "masks_human", f"frame{k}.png"), rgb * 100)
            expected[f"frame{k}.png"] = labels
        os.makedirs(os.path.join(root, "ann"))
        with open(os.path.join(root, "ann", "frame0.jpg.json"), "w") as f:
            f.write("{}")
        for folder in (root, os.path.dirname(root)):  # dataset folder or project folder
            imgs, masks = im.read_supervisely(folder)
            self.assertEqual([os.path.basename(m) for m in masks], sorted(expected))
            self.assertTrue(all("masks_machine" in m for m in masks))
            for m in masks:
                self.assertAllEqual(im.read_mask(m), expected[os.path.basename(m)])
        ds = im.segmentation_dataset(imgs, masks, image_size=None, batch_size=None)
        for (_, mask), m in zip(ds, masks):
            self.assertAllEqual(mask[..., 0], expected[os.path.basename(m)])

    def test_groups_from_names(self):
        names = ["/a/vid03_0001.jpg", "vid03_0002.jpg", "vid11_0001.png"]
        self.assertEqual(im.groups_from_names(names, r"^(vid\d+)_"), ["vid03", "vid03", "vid11"])
        self.assertEqual(im.groups_from_names(names, r"_(?P<group>\d+)\."), ["0001", "0002", "0001"])
        self.assertEqual(im.groups_from_names(names, r"vid\d"), ["vid0", "vid0", "vid1"])
        with self.assertRaisesRegex(ValueError, "other.jpg"):
            im.groups_from_names(names + ["other.jpg"], r"^(vid\d+)_")


class NumpyReaderTest(tf.test.TestCase):

    def test_read_image_modes(self):
        d = self.get_temp_dir()
        rng = np.random.default_rng(3)
        grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
        rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
        out = im.read_image(_save(os.path.join(d, "g.png"), grey))
        self.assertEqual(out.dtype, np.uint8)
        self.assertAllEqual(out, np.repeat(grey[..., None], 3, -1))
        self.assertAllEqual(im.read_image(_save(os.path.join(d, "a.png"), rgba)), rgba[..., :3])
        self.assertEqual(im.read_image(os.path.join(d, "a.png"), size=(3, 4)).shape, (3, 4, 3))
        with self.assertRaisesRegex(FileNotFoundError, "nope.png"):
            im.read_image(os.path.join(d, "nope.png"))
        with self.assertRaisesRegex(ValueError, "size"):
            im.read_image(os.path.join(d, "a.png"), size=(0, 4))

    def test_read_mask_modes_and_nearest_resize(self):
        d = self.get_temp_dir()
        big, small = _blocks(np.random.default_rng(4), 4, 3)
        big %= 5
        small %= 5
        self.assertAllEqual(im.read_mask(_save(os.path.join(d, "l.png"), big)), big)
        pal = Image.fromarray(big, mode="L").convert("P")
        pal.putpalette([(i * 40) % 256 for i in range(768)])
        pal.save(os.path.join(d, "p.png"))
        self.assertAllEqual(im.read_mask(os.path.join(d, "p.png")), big)
        rgb = np.stack([big, big + 1, big + 2], -1)
        self.assertAllEqual(im.read_mask(_save(os.path.join(d, "rgb.png"), rgb), channel=2), big + 2)
        self.assertAllEqual(im.read_mask(os.path.join(d, "l.png"), size=(4, 3)), small)
        with self.assertRaisesRegex(im.ImageFileError, "channel=3"):
            im.read_mask(os.path.join(d, "rgb.png"), channel=3)


class PipelineTest(tf.test.TestCase, parameterized.TestCase):

    def _files(self, n=6, seed=5):
        d = os.path.join(self.get_temp_dir(), f"pipe{seed}")
        rng = np.random.default_rng(seed)
        paths, masks, smalls, small_masks = [], [], [], []
        for k in range(n):
            big, small = _blocks(rng, 4, 5, 3)
            mbig = rng.integers(0, 3, (8, 10), dtype=np.uint8)
            paths.append(_save(os.path.join(d, "img", f"i{k}.png"), big))
            masks.append(_save(os.path.join(d, "mask", f"i{k}.png"), mbig))
            smalls.append(small)
            small_masks.append(mbig[1::2, 1::2])
        return paths, masks, smalls, small_masks

    def test_classification_dataset_resizes_and_batches(self):
        paths, _, smalls, _ = self._files()
        labels = np.array([0, 1, 2, 0, 1, 2])
        ds = im.classification_dataset(paths, labels, image_size=(4, 5), batch_size=4)
        batches = list(ds)
        self.assertEqual([b[0].shape[0] for b in batches], [4, 2])
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(y.dtype, np.int32)
        # bilinear halving of 2x2 constant blocks gives the block values exactly
        self.assertAllClose(x, np.stack(smalls).astype(np.float32), atol=1e-4)
        self.assertAllEqual(y, labels)
        full = next(iter(im.classification_dataset(paths, labels, image_size=None, batch_size=None)))
        self.assertAllEqual(full[0], im.read_image(paths[0]).astype(np.float32))

    def test_segmentation_dataset_masks_use_nearest(self):
        paths, masks, smalls, small_masks = self._files()
        ds = im.segmentation_dataset(paths, masks, image_size=(4, 5), batch_size=3)
        xs, ms = zip(*[(x.numpy(), m.numpy()) for x, m in ds])
        x, m = np.concatenate(xs), np.concatenate(ms)
        self.assertEqual(m.dtype, np.uint8)
        self.assertEqual(m.shape, (6, 4, 5, 1))
        self.assertAllEqual(m[..., 0], np.stack(small_masks))  # half-pixel-centre nearest
        self.assertAllClose(x, np.stack(smalls).astype(np.float32), atol=1e-4)
        # 0/255 masks -> binary
        binary = im.segmentation_dataset(paths[:1], masks[:1], image_size=None, batch_size=None,
                                         mask_mode="binary")
        mask = next(iter(binary))[1].numpy()[..., 0]
        self.assertAllEqual(mask, (im.read_mask(masks[0]) > 0).astype(np.uint8))

    def test_seeded_shuffle_is_reproducible_and_reshuffles(self):
        paths, _, _, _ = self._files(n=12, seed=6)

        labels = np.arange(12)
        a = im.classification_dataset(paths, labels, image_size=(2, 2), batch_size=None,
                                      shuffle=True, seed=11)
        b = im.classification_dataset(paths, labels, image_size=(2, 2), batch_size=None,
                                      shuffle=True, seed=11)
        a = [[int(y) for _, y in a] for _ in range(2)]
        b = [[int(y) for _, y in b] for _ in range(2)]
        self.assertEqual(a, b)
        self.assertNotEqual(a[0], a[1])
        self.assertEqual(sorted(a[0]), list(range(12)))
        self.assertNotEqual(a[0], list(range(12)))

    def test_augmentation_after_cache_stays_random(self):
        paths, masks, _, _ = self._files(n=8, seed=7)
        # masks that are a function of the image, to check the pair is flipped together
        d = os.path.join(self.get_temp_dir(), "aug")
        mask_paths = []
        for p in paths:
            mask_paths.append(_save(os.path.join(d, os.path.basename(p)),
                                    (im.read_image(p)[..., 0] > 127).astype(np.uint8)))

        def run(seed):
            ds = im.segmentation_dataset(paths, mask_paths, image_size=None, batch_size=None,
                                         cache=True, seed=seed,
                                         augment=im.random_flip_left_right)
            return [[(x.numpy(), m.numpy()) for x, m in ds] for _ in range(2)]

        first = run(3)
        originals = [im.read_image(p).astype(np.float32) for p in paths]
        flips = []
        for epoch in first:
            row = []
            for (x, m), orig in zip(epoch, originals):
                flipped = not np.array_equal(x, orig)
                if flipped:
                    self.assertAllEqual(x, orig[:, ::-1])
                self.assertAllEqual(m[..., 0], (x[..., 0] > 127).astype(np.uint8))
                row.append(flipped)
            flips.append(row)
        self.assertNotEqual(flips[0], flips[1])  # different per epoch despite the cache
        self.assertTrue(any(flips[0]) and not all(flips[0]))
        again = run(3)
        for e1, e2 in zip(first, again):
            for (x1, _), (x2, _) in zip(e1, e2):
                self.assertAllEqual(x1, x2)

    def test_argument_errors(self):
        paths, masks, _, _ = self._files(n=2, seed=8)
        with self.assertRaisesRegex(ValueError, "labels must have shape"):
            im.classification_dataset(paths, [0, 1, 2])
        with self.assertRaisesRegex(ValueError, "same length"):
            im.segmentation_dataset(paths, masks[:1])
        with self.assertRaisesRegex(ValueError, "mask_mode"):
            im.segmentation_dataset(paths, masks, mask_mode="soft")
        with self.assertRaisesRegex(ValueError, "batch_size"):
            im.segmentation_dataset(paths, masks, batch_size=0)
        with self.assertRaisesRegex(ValueError, "single path"):
            im.segmentation_dataset(paths[0], masks[0])
        with self.assertRaisesRegex(ValueError, "empty"):
            im.classification_dataset([], [])


class BrainviewHelpersTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(np.float32, np.int16, np.uint16, np.float64)
    def test_minmax_matches_skimage(self, dtype):
        from skimage.exposure import rescale_intensity

        rng = np.random.default_rng(9)
        x = (rng.normal(size=(9, 11)) * 300).astype(dtype)
        ref = np.rint(rescale_intensity(x.astype(np.float64), out_range=(0.0, 255.0)))
        out = im.minmax_to_uint8(x)
        self.assertEqual(out.dtype, np.uint8)
        self.assertAllEqual(out, ref.astype(np.uint8))
        self.assertEqual((out.min(), out.max()), (0, 255))

    def test_minmax_constant_and_invalid(self):
        self.assertAllEqual(im.minmax_to_uint8(np.full((4, 4), 7.5)), np.zeros((4, 4), np.uint8))
        with self.assertRaisesRegex(ValueError, "NaN"):
            im.minmax_to_uint8([[0.0, np.nan]])
        with self.assertRaisesRegex(ValueError, "empty"):
            im.minmax_to_uint8(np.zeros((0, 3)))
        rgb = im.slice_to_rgb(np.arange(12.0).reshape(3, 4), size=(6, 8))
        self.assertEqual(rgb.shape, (6, 8, 3))
        self.assertAllEqual(rgb[..., 0], rgb[..., 2])
        self.assertAllEqual(im.slice_to_rgb(np.arange(12.0).reshape(3, 4), size=None)[..., 1],
                            im.minmax_to_uint8(np.arange(12.0).reshape(3, 4)))

    def test_near_black_threshold_scale(self):
        grey = np.full((4, 4, 3), 100, np.uint8)  # mean 100 of 255
        black = np.zeros((4, 4, 3), np.uint8)
        self.assertFalse(im.is_near_black(grey, threshold=0.6, scale="0-255"))
        self.assertTrue(im.is_near_black(grey, threshold=0.6, scale="fraction"))  # 100 < 153
        self.assertTrue(im.is_near_black(black, threshold=0.6, scale="0-255"))
        self.assertFalse(im.is_near_black(grey, threshold=100, scale="0-255"))  # strict <
        self.assertTrue(im.is_near_black(grey, threshold=100.5, scale="0-255"))
        with self.assertRaisesRegex(ValueError, "scale"):
            im.is_near_black(grey, threshold=0.6, scale="percent")
        with self.assertRaisesRegex(ValueError, "threshold"):
            im.is_near_black(grey, threshold=1.5, scale="fraction")
        with self.assertRaisesRegex(ValueError, "threshold"):
            im.is_near_black(grey, threshold=-1, scale="0-255")
        d = self.get_temp_dir()
        files = [_save(os.path.join(d, "nb0.png"), black), _save(os.path.join(d, "nb1.png"), grey),
                 _save(os.path.join(d, "nb2.png"), np.full((4, 4, 3), 200, np.uint8))]
        self.assertAllEqual(im.filter_near_black(files, threshold=0.6, scale="0-255"),
                            [False, True, True])
        self.assertAllEqual(im.filter_near_black(files, threshold=0.6, scale="fraction"),
                            [False, False, True])
