import csv
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tensorflow as tf

from keras_medseg.sampledata.nodule3d import generate_nodule3d


class Nodule3DTest(tf.test.TestCase):
    KW = dict(n_series=3, shape=(20, 96, 96), spacing=(2.5, 1.0, 1.0), nodules_per_series=(1, 2),
              diameter_range=(4.0, 7.0), nifti_series=1)

    def test_files_csv_and_intensities(self):
        data = generate_nodule3d(os.path.join(self.get_temp_dir(), "a"), seed=0, **self.KW)
        self.assertEqual([p.name for p in data.series],
                         ["series_000.mhd", "series_001.mhd", "series_002.nii.gz"])
        self.assertTrue(data.series[0].with_suffix(".raw").is_file())
        with open(data.series_csv) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), ["path", "class", "x", "y", "z", "d", "group"])
        self.assertEqual({r["group"] for r in rows}, {"series_000", "series_001", "series_002"})
        with open(data.classes_csv) as f:
            self.assertEqual(list(csv.reader(f)), [["class_name", "class_id"], ["bg", "0"],
                                                   ["nodule", "1"]])
        for row in rows:
            image = sitk.ReadImage(row["path"])
            self.assertAllClose(image.GetSpacing(), (1.0, 1.0, 2.5))
            hu = sitk.GetArrayFromImage(image)
            self.assertEqual(hu.shape, (20, 96, 96))
            self.assertEqual(hu.dtype, np.int16)
            x, y, z, d = int(row["x"]), int(row["y"]), int(row["z"]), float(row["d"])
            self.assertBetween(d, 4.0, 7.0)
            self.assertEqual(row["class"], "nodule")
            # The listed voxel is the centre of a solid ball of diameter d (mm) lying in a
            # lung: soft-tissue density inside, mostly air-filled lung just outside.
            zz, yy, xx = np.ogrid[:20, :96, :96]
            dist = np.sqrt(((zz - z) * 2.5) ** 2 + (yy - y) ** 2 + (xx - x) ** 2)
            self.assertGreater(hu[dist <= d / 2 - 1].mean(), -300)  # lung: -850
            shell = (dist > d / 2 + 1.5) & (dist <= d / 2 + 4)
            self.assertGreater((hu[shell] < -600).mean(), 0.25)
        # HU ranges: air outside, lungs inside.
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(data.series[0])))
        self.assertLess(hu[:, 0, 0].mean(), -900)
        self.assertLess(np.percentile(hu, 20), -700)
        # The NIfTI file reads with nibabel too (x, y, z order).
        self.assertEqual(nib.load(str(data.series[2])).shape, (96, 96, 20))

    def test_deterministic(self):
        kw = dict(self.KW, n_series=1, nifti_series=0)
        a = generate_nodule3d(os.path.join(self.get_temp_dir(), "x"), seed=5, **kw)
        b = generate_nodule3d(os.path.join(self.get_temp_dir(), "y"), seed=5, **kw)
        c = generate_nodule3d(os.path.join(self.get_temp_dir(), "z"), seed=6, **kw)
        raw = lambda d: d.series[0].with_suffix(".raw").read_bytes()  # noqa: E731
        self.assertEqual(raw(a), raw(b))
        self.assertNotEqual(raw(a), raw(c))
        self.assertEqual([{k: v for k, v in r.items() if k != "path"} for r in a.nodules],
                         [{k: v for k, v in r.items() if k != "path"} for r in b.nodules])

    def test_bad_arguments(self):
        out = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "nodules_per_series"):
            generate_nodule3d(out, nodules_per_series=(0, 2))
        with self.assertRaisesRegex(ValueError, "spacing"):
            generate_nodule3d(out, spacing=(1.0, -1.0, 1.0))
        with self.assertRaisesRegex(ValueError, "nifti_series"):
            generate_nodule3d(out, n_series=1, nifti_series=2)
