import csv
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_medseg.sampledata.nerve import CLASS_NAMES, RAW_CROP_BOX, generate_nerve


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.startswith("."):
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, root)] = fh.read()
    return out


class NerveTest(tf.test.TestCase):
    KW = dict(image_size=48, n_videos=3, test_videos=1, frames_per_class=2, raw_frames=1)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="nerve_")
        cls.out = os.path.join(cls.tmp, "a")
        cls.data = generate_nerve(cls.out, seed=3, **cls.KW)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_layout_and_formats(self):
        d = self.data
        for split, videos in (("train_val", 2), ("test", 1)):
            folder = d.classification_dir / split
            self.assertEqual(sorted(p.name for p in folder.iterdir()), sorted(CLASS_NAMES))
            for cls in CLASS_NAMES:
                files = sorted((folder / cls).glob("*.jpg"))
                self.assertLen(files, 2 * videos)
                with Image.open(files[0]) as im:
                    self.assertEqual((im.format, im.mode, im.size), ("JPEG", "RGB", (48, 48)))
        # Test videos never appear in train_val.
        train = {p.name[:4] for p in (d.classification_dir / "train_val").rglob("*.jpg")}
        test = {p.name[:4] for p in (d.classification_dir / "test").rglob("*.jpg")}
        self.assertEqual(train, {"v000", "v001"})
        self.assertEqual(test, {"v002"})
        # Supervisely export: one mask per nerve frame, R channel 0/1, nerve present.
        imgs = sorted((d.segmentation_dir / "img").glob("*.jpg"))
        self.assertLen(imgs, 3 * 2)
        for img in imgs:
            mask = np.asarray(Image.open(d.segmentation_dir / "masks_machine" / f"{img.stem}.png"))
            self.assertEqual(mask.shape, (48, 48, 3))
            self.assertTrue(set(np.unique(mask[..., 0])) <= {0, 1})
            self.assertGreater(mask[..., 0].sum(), 0)
            self.assertEqual(mask[..., 1:].max(), 0)
        # Linked folder: the test video, all frames, masks 0/255 for nerve frames.
        linked = d.linked_dir
        names = sorted(p.stem for p in (linked / "input").glob("*.jpg"))
        self.assertLen(names, 6)
        self.assertTrue(all(n.startswith("v002_") for n in names))
        self.assertEqual(Image.open(linked / "input" / f"{names[0]}.jpg").size, (224, 224))
        self.assertEqual(Image.open(linked / "hdversion" / f"{names[0]}.jpg").size, (48, 48))
        order = sorted(p.name for p in (linked / "order").glob("*.jpg"))
        self.assertEqual([o.split("_", 1)[1][:-4] for o in order], names)
        ann = sorted((linked / "annotation").glob("*.png"))
        self.assertLen(ann, 2)
        self.assertEqual(set(np.unique(np.asarray(Image.open(ann[0])))), {0, 255})
        # Raw frame: 1920x1080 with the field inside the crop box.
        raw = sorted(d.raw_frames_dir.glob("*.jpg"))
        self.assertLen(raw, 1)
        arr = np.asarray(Image.open(raw[0]))
        self.assertEqual(arr.shape, (1080, 1920, 3))
        left, _, right, _ = RAW_CROP_BOX
        inside = arr[:, int(left) + 5:int(right) - 5].mean()
        self.assertGreater(inside, 3 * arr[:, :int(left) - 5].mean())
        with open(d.frames_csv) as f:
            rows = list(csv.DictReader(f))
        self.assertLen(rows, 18)
        self.assertEqual(set(rows[0]), {"name", "video", "frame", "class", "split"})

    def test_nerve_mask_marks_bright_yellowish_pixels(self):
        img = np.asarray(Image.open(sorted((self.data.segmentation_dir / "img").glob("*.jpg"))[0]),
                         float)
        mask = np.asarray(Image.open(sorted(
            (self.data.segmentation_dir / "masks_machine").glob("*.png"))[0]))[..., 0] == 1
        # Nerve pixels are brighter and less red-dominated than tissue.
        self.assertGreater(img[mask].mean(), img[~mask].mean() + 30)
        self.assertGreater(img[mask][:, 1].mean(), img[~mask][:, 1].mean() + 40)

    def test_deterministic_and_idempotent(self):
        same = generate_nerve(os.path.join(self.get_temp_dir(), "b"), seed=3, **self.KW)
        self.assertEqual(_tree_bytes(self.out), _tree_bytes(same.root))
        other = generate_nerve(os.path.join(self.get_temp_dir(), "c"), seed=4, **self.KW)
        self.assertNotEqual(_tree_bytes(self.out), _tree_bytes(other.root))
        # A second call skips the work and returns the same description.
        target = next((self.data.classification_dir / "test" / "nerve").glob("*.jpg"))
        mtime = target.stat().st_mtime_ns
        again = generate_nerve(self.out, seed=3, **self.KW)
        self.assertEqual(again, self.data)
        self.assertEqual(target.stat().st_mtime_ns, mtime)
        with self.assertRaisesRegex(ValueError, "different settings"):
            generate_nerve(self.out, seed=5, **self.KW)

    def test_bad_arguments(self):
        out = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "test_videos"):
            generate_nerve(out, n_videos=2, test_videos=2)
        with self.assertRaisesRegex(ValueError, "image_size"):
            generate_nerve(out, image_size=8)
        with self.assertRaisesRegex(ValueError, "seed"):
            generate_nerve(out, seed=-1)
