"""Bad 3D inputs: each fails with an error naming the file, and no input is modified."""
import hashlib
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.hdf5 import Hdf5FormatError, read_iseg_hdf5
from keras_medseg.io.swc import SwcError, read_swc
from keras_medseg.io.tables import TableError, read_class_mapping, read_patch_csv, read_series_csv
from keras_medseg.io.volumes import VolumeError, read_volume


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class BadInput3dTest(parameterized.TestCase, tf.test.TestCase):

    def assert_fails_untouched(self, paths, error, pattern, fn, *args):
        before = {p: sha256(p) for p in paths}
        listing = sorted(os.listdir(self.get_temp_dir()))
        with self.assertRaisesRegex(error, pattern) as ctx:
            fn(*args)
        self.assertIn(os.path.basename(paths[0]), str(ctx.exception))
        self.assertEqual({p: sha256(p) for p in paths}, before)
        self.assertEqual(sorted(os.listdir(self.get_temp_dir())), listing)

    def test_analyze_header_without_image(self):
        hdr = os.path.join(self.get_temp_dir(), "subject-1-T1.hdr")
        nib.AnalyzeImage(np.zeros((4, 4, 4), np.int16), np.eye(4)).to_filename(hdr)
        os.remove(hdr[:-4] + ".img")
        self.assert_fails_untouched([hdr], FileNotFoundError, r"subject-1-T1.img is missing",
                                    read_volume, hdr)

    @parameterized.parameters(".nii.gz", ".mha", ".hdr")
    def test_volume_with_nan(self, suffix):
        path = os.path.join(self.get_temp_dir(), "nan" + suffix)
        array = np.ones((3, 4, 5), np.float32)
        array[1, 2, 3] = np.nan
        if suffix == ".hdr":
            nib.AnalyzeImage(np.transpose(array, (2, 1, 0)), np.eye(4)).to_filename(path)
        else:
            sitk.WriteImage(sitk.GetImageFromArray(array), path)
        self.assert_fails_untouched([path], VolumeError, r"1 NaN or inf .* \(1, 2, 3\)",
                                    read_volume, path)
        # Opting out reads the file (SimpleITK turns NaN into 0 in NIfTI and Analyze).
        value = read_volume(path, check_finite=False).array[1, 2, 3]
        self.assertTrue(np.isnan(value) if suffix == ".mha" else value == 0)

    def test_corrupt_volume(self):
        path = os.path.join(self.get_temp_dir(), "corrupt.nrrd")
        with open(path, "w") as f:
            f.write("NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n\n")
        self.assert_fails_untouched([path], VolumeError, "cannot read volume", read_volume, path)

    @parameterized.named_parameters(
        ("cycle", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 4\n3 3 2 0 0 1 2\n4 3 3 0 0 1 3\n",
         r"cycle in parent links through node"),
        ("missing_parent", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 9\n", r"node 2 has parent 9"),
        ("duplicate_ids", "1 1 0 0 0 1 -1\n2 3 1 0 0 1 1\n2 3 2 0 0 1 1\n",
         r"duplicate node id 2"),
        ("columns", "1 1 0 0 0 1\n", r"line 1: expected 7 columns"),
    )
    def test_bad_swc(self, text, pattern):
        path = os.path.join(self.get_temp_dir(), "neuron.swc")
        with open(path, "w") as f:
            f.write(text)
        self.assert_fails_untouched([path], SwcError, pattern, read_swc, path)

    @parameterized.named_parameters(
        ("series", read_series_csv, "/a.mhd,nodule,1,2,3\n", r"line 1: expected 7 columns"),
        ("patch", read_patch_csv, "/p.npy,bg,1,2,3,/a.mhd\n", r"line 1: expected 7 columns"),
        ("mapping", read_class_mapping, "bg\n", r"line 1: expected 2 columns"),
    )
    def test_csv_missing_columns(self, reader, text, pattern):
        path = os.path.join(self.get_temp_dir(), "rows.csv")
        with open(path, "w") as f:
            f.write(text)
        self.assert_fails_untouched([path], TableError, pattern, reader, path)

    def test_hdf5_without_keys(self):
        import h5py

        path = os.path.join(self.get_temp_dir(), "wrong.h5")
        with h5py.File(path, "w") as f:
            f["images"] = np.zeros((2, 2, 2), np.float32)
        self.assert_fails_untouched([path], Hdf5FormatError, "no 'data' dataset",
                                    read_iseg_hdf5, path)
