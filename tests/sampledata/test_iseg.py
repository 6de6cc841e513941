import os

import nibabel as nib
import numpy as np
import tensorflow as tf

from keras_medseg.sampledata.iseg import LABEL_VALUES, generate_iseg


def _read(path):
    img = nib.load(str(path))
    return img, np.asarray(img.dataobj)


class IsegTest(tf.test.TestCase):
    KW = dict(n_subjects=2, shape=(40, 48, 44))

    def test_analyze_files_labels_and_contrast(self):
        data = generate_iseg(os.path.join(self.get_temp_dir(), "a"), seed=0, **self.KW)
        self.assertEqual([s["id"] for s in data.subjects], [1, 2])
        for s in data.subjects:
            for kind in ("T1", "T2", "label"):
                hdr = data.root / f"subject-{s['id']}-{kind}.hdr"
                self.assertEqual(s[kind], hdr)
                self.assertTrue(hdr.with_suffix(".img").is_file())
                img, arr = _read(hdr)
                self.assertIsInstance(img, nib.AnalyzeImage)
                self.assertEqual(arr.shape, (40, 48, 44))
                self.assertAllClose(img.header.get_zooms(), (1.0, 1.0, 1.0))
            _, t1 = _read(s["T1"])
            _, t2 = _read(s["T2"])
            _, lab = _read(s["label"])
            self.assertEqual(set(np.unique(lab)), set(LABEL_VALUES))
            # Background exactly 0 and the T1 > 0 mask is the labelled brain.
            self.assertAllEqual(t1 > 0, lab > 0)
            self.assertAllEqual(t2 > 0, lab > 0)
            m1 = {v: t1[lab == v].mean() for v in LABEL_VALUES[1:]}
            m2 = {v: t2[lab == v].mean() for v in LABEL_VALUES[1:]}
            # T1: CSF dark, GM/WM contrast low (isointense infant); T2: CSF bright, inverted.
            self.assertLess(m1[10], 0.7 * m1[150])
            self.assertLess(abs(m1[250] - m1[150]) / m1[150], 0.3)
            self.assertGreater(m2[10], 1.2 * m2[150])
            self.assertGreater(m2[150], m2[250])
            # Nested layers: WM is deeper inside the brain than GM, GM deeper than CSF.
            from scipy import ndimage as ndi

            depth = ndi.distance_transform_edt(lab > 0)
            self.assertLess(depth[lab == 10].mean(), depth[lab == 150].mean())
            self.assertLess(depth[lab == 150].mean(), depth[lab == 250].mean())

    def test_deterministic(self):
        kw = dict(n_subjects=1, shape=(32, 32, 32))
        a = generate_iseg(os.path.join(self.get_temp_dir(), "x"), seed=1, **kw)
        b = generate_iseg(os.path.join(self.get_temp_dir(), "y"), seed=1, **kw)
        c = generate_iseg(os.path.join(self.get_temp_dir(), "z"), seed=2, **kw)
        img = lambda d: d.subjects[0]["T2"].with_suffix(".img").read_bytes()  # noqa: E731
        self.assertEqual(img(a), img(b))
        self.assertNotEqual(img(a), img(c))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "shape"):
            generate_iseg(self.get_temp_dir(), shape=(8, 32, 32))
        with self.assertRaisesRegex(ValueError, "n_subjects"):
            generate_iseg(self.get_temp_dir(), n_subjects=0)
