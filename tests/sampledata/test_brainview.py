import os

import numpy as np
import SimpleITK as sitk
import tensorflow as tf
from PIL import Image

from keras_medseg.sampledata.brainview import VIEWS, generate_brainview, make_brain_phantom


class BrainviewTest(tf.test.TestCase):
    KW = dict(image_size=40, slices_per_view=3, volume_shape=(40, 24, 32), empty_slices=2)

    def test_layout_formats_and_nrrd(self):
        data = generate_brainview(os.path.join(self.get_temp_dir(), "a"), seed=1, **self.KW)
        self.assertEqual(sorted(data.datasets), ["atlasA", "atlasB"])
        modes = set()
        for name, folder in data.datasets.items():
            for view in VIEWS:
                files = sorted((folder / view).glob("*.png"))
                self.assertLen(files, 3)
                self.assertEqual(data.counts[name][view], 3)
                with Image.open(files[1]) as im:
                    self.assertEqual((im.format, im.size), ("PNG", (40, 40)))
                    modes.add(im.mode)
                    arr = np.asarray(im, float)
                # Not blank: the slice crosses the brain.
                self.assertGreater(arr.std(), 10)
        self.assertEqual(modes, {"RGB", "L"})  # the datasets differ in contrast
        vol = sitk.GetArrayFromImage(sitk.ReadImage(str(data.nrrd_path)))
        self.assertEqual(vol.shape, (40 + 4, 24, 32))
        self.assertEqual(vol.dtype, np.uint16)
        scaled = vol.astype(float) / vol.max() * 255
        means = scaled.reshape(vol.shape[0], -1).mean(axis=1)
        # Empty ends, faint slices next to them, tissue in between.
        self.assertEqual(means[:2].max(), 0)
        self.assertEqual(means[-2:].max(), 0)
        self.assertLess(means[2], 0.6)
        self.assertGreater(means[vol.shape[0] // 2], 20)

    def test_views_differ_in_symmetry(self):
        # Coronal and horizontal cuts are left-right symmetric, sagittal cuts are not.
        vol = make_brain_phantom(np.random.default_rng(0), (64, 40, 48), style=1)
        sym = lambda a: np.abs(a - a[:, ::-1]).mean() / a.mean()  # noqa: E731
        self.assertLess(sym(vol[32]), 0.1)
        self.assertLess(sym(vol[:, 15, :]), 0.1)
        self.assertGreater(sym(vol[:, :, 24].T), 0.3)

    def test_deterministic(self):
        a = generate_brainview(os.path.join(self.get_temp_dir(), "x"), seed=2, **self.KW)
        b = generate_brainview(os.path.join(self.get_temp_dir(), "y"), seed=2, **self.KW)
        c = generate_brainview(os.path.join(self.get_temp_dir(), "z"), seed=3, **self.KW)
        read = lambda d: [np.asarray(Image.open(p)) for p in  # noqa: E731
                          sorted((d.datasets["atlasA"] / "coronal").glob("*.png"))]
        for x, y in zip(read(a), read(b)):
            self.assertAllEqual(x, y)
        self.assertNotAllEqual(np.stack(read(a)), np.stack(read(c)))

    def test_bad_arguments(self):
        out = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "datasets"):
            generate_brainview(out, datasets=("a", "a"))
        with self.assertRaisesRegex(ValueError, "datasets"):
            generate_brainview(out, datasets=("nissl",))
        with self.assertRaisesRegex(ValueError, "volume_shape"):
            generate_brainview(out, volume_shape=(40, 24))
