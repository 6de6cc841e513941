"""Volumes: round trips per format, geometry conventions, DICOM, resampling, HU windows."""
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io.volumes import (NODULE3D_MEAN, Volume, VolumeError, from_sitk, hu_window,
                                     nodule3d_normalize, read_volume, resample_isotropic,
                                     to_sitk, write_volume)

# A proper rotation (permutation with a flip) so axis mix-ups cannot cancel out.
DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def sample_volume(dtype=np.float32):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(4, 5, 6)) * 100).astype(dtype)
    return Volume(array, spacing=(2.5, 0.75, 0.5), origin=(-10.0, 20.5, 3.0),
                  direction=DIRECTION)


def write_dicom_series_with_sitk(folder, array, spacing_zyx, origin):
    """Independent reference writer: one CT slice per file, tags set by hand."""
    os.makedirs(folder, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.99887766"
    for k in range(array.shape[0]):
        img = sitk.GetImageFromArray(array[k])
        img.SetSpacing((spacing_zyx[2], spacing_zyx[1]))
        pos = (origin[0], origin[1], origin[2] + k * spacing_zyx[0])
        tags = {
            "0008|0060": "CT", "0010|0010": "Test^Phantom", "0020|000d": series_uid + ".0",
            "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": str(spacing_zyx[0]),
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for key, value in tags.items():
            img.SetMetaData(key, value)
        writer.SetFileName(os.path.join(folder, f"slice{k:03d}.dcm"))
        writer.Execute(img)


class VolumeRoundTripTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.parameters(".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
    def test_round_trip_keeps_values_and_geometry(self, suffix):
        vol = sample_volume()
        path = write_volume(os.path.join(self.get_temp_dir(), "v" + suffix), vol)
        back = read_volume(path)
        np.testing.assert_array_equal(back.array, vol.array)
        self.assertEqual(back.array.dtype, np.float32)
        np.testing.assert_allclose(back.spacing, vol.spacing)
        np.testing.assert_allclose(back.origin, vol.origin, atol=1e-5)
        np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
        # Only the named file(s) and no temporary leftovers.
        names = sorted(os.listdir(self.get_temp_dir()))
        self.assertFalse([n for n in names if n.startswith(".")], names)

    @parameterized.parameters(np.int16, np.uint8, np.int32)
    def test_integer_dtypes_preserved(self, dtype):
        vol = Volume(np.arange(24, dtype=dtype).reshape(2, 3, 4), spacing=(3, 1, 1))
        path = write_volume(os.path.join(self.get_temp_dir(), "i.nii.gz"), vol)
        back = read_volume(path)
        self.assertEqual(back.array.dtype, dtype)
        np.testing.assert_array_equal(back.array, vol.array)

    def test_analyze_pair_is_true_analyze_and_round_trips(self):
        vol = Volume(sample_volume().array, spacing=(2.5, 0.75, 0.5))
        path = write_volume(os.path.join(self.get_temp_dir(), "subject-1-T1.img"), vol)
        self.assertEqual(path.suffix, ".hdr")
        self.assertTrue(path.with_suffix(".img").is_file())
        # Independent check with nibabel: Analyze 7.5 (not a NIfTI pair), (x, y, z) on disk.
        ref = nib.load(str(path))
        self.assertIsInstance(ref, nib.AnalyzeImage)
        self.assertNotIsInstance(ref, nib.Nifti1Pair)
        np.testing.assert_array_equal(np.asarray(ref.dataobj), np.transpose(vol.array, (2, 1, 0)))
        np.testing.assert_allclose(ref.header.get_zooms(), (0.5, 0.75, 2.5))
        for name in (path, path.with_suffix(".img")):
            back = read_volume(name)
            np.testing.assert_array_equal(back.array, vol.array)
            np.testing.assert_allclose(back.spacing, vol.spacing)

    def test_analyze_warns_when_dropping_geometry(self):
        with self.assertWarnsRegex(UserWarning, "neither origin nor direction"):
            write_volume(os.path.join(self.get_temp_dir(), "g.hdr"), sample_volume())

    def test_analyze_rejects_unsupported_dtype(self):
        vol = Volume(np.zeros((2, 2, 2), np.uint16))
        with self.assertRaisesRegex(VolumeError, "uint16"):
            write_volume(os.path.join(self.get_temp_dir(), "u.hdr"), vol)

    def test_nifti_orientation_matches_nibabel_affine(self):
        # nibabel writes RAS+ affines; SimpleITK (and so read_volume) reports LPS.
        data_xyz = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
        affine = np.array([[0.0, 0.0, -2.0, 10.0], [0.7, 0.0, 0.0, -5.0],
                           [0.0, 1.5, 0.0, 7.0], [0, 0, 0, 1.0]])
        path = os.path.join(self.get_temp_dir(), "ras.nii")
        nib.Nifti1Image(data_xyz, affine).to_filename(path)
        vol = read_volume(path)
        np.testing.assert_array_equal(vol.array, np.transpose(data_xyz, (2, 1, 0)))
        ras_to_lps = np.diag([-1.0, -1.0, 1.0])
        for ijk in [(0, 0, 0), (2, 3, 4), (1, 0, 3)]:
            expected = ras_to_lps @ (affine[:3, :3] @ ijk + affine[:3, 3])
            got = vol.index_to_physical(ijk[::-1])  # array order (k, j, i)
            np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(vol.spacing, (2.0, 1.5, 0.7), atol=1e-6)

    def test_affine_agrees_with_simpleitk(self):
        vol = sample_volume()
        image = to_sitk(vol)
        for kji in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
            expected = image.TransformIndexToPhysicalPoint(tuple(int(v) for v in kji[::-1]))
            np.testing.assert_allclose(vol.index_to_physical(kji), expected)
        back = from_sitk(image)
        np.testing.assert_array_equal(back.array, vol.array)
        self.assertEqual(back.spacing, vol.spacing)

    def test_dicom_series_folder(self):
        rng = np.random.default_rng(1)
        array = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
        folder = os.path.join(self.get_temp_dir(), "series")
        write_dicom_series_with_sitk(folder, array, (2.0, 0.5, 0.75), (-20.0, 5.0, 100.0))
        vol = read_volume(folder)
        np.testing.assert_array_equal(vol.array, array)
        np.testing.assert_allclose(vol.spacing, (2.0, 0.5, 0.75), atol=1e-5)
        np.testing.assert_allclose(vol.origin, (-20.0, 5.0, 100.0), atol=1e-4)
        # A single slice file reads as 3D with one slice.
        one = read_volume(os.path.join(folder, "slice002.dcm"))
        self.assertEqual(one.shape, (1, 6, 7))
        np.testing.assert_array_equal(one.array[0], array[2])
        # A DICOM file without suffix is recognised by its DICM marker.
        bare = os.path.join(self.get_temp_dir(), "IM0001")
        with open(os.path.join(folder, "slice000.dcm"), "rb") as src, open(bare, "wb") as dst:
            dst.write(src.read())
        np.testing.assert_array_equal(read_volume(bare).array[0], array[0])

    def test_dimensionality(self):
        path = os.path.join(self.get_temp_dir(), "flat.nrrd")
        write_volume(path, Volume(np.ones((4, 5), np.float32), spacing=(0.5, 0.25)))
        with self.assertRaisesRegex(VolumeError, r"flat.nrrd: expected a 3D volume; got 2D"):
            read_volume(path)
        vol2d = read_volume(path, ndim=2)
        self.assertEqual(vol2d.spacing, (0.5, 0.25))
        self.assertEqual(read_volume(path, ndim=None).ndim, 2)
        vec = os.path.join(self.get_temp_dir(), "vec.nii")
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32),
                                               isVector=True), vec)
        with self.assertRaisesRegex(VolumeError, "vec.nii: has 2 components"):
            read_volume(vec)

    def test_volume_validation(self):
        with self.assertRaisesRegex(ValueError, "2D or 3D"):
            Volume(np.zeros((2, 2, 2, 2)))
        with self.assertRaisesRegex(ValueError, "spacing"):
            Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
        with self.assertRaisesRegex(ValueError, "origin"):
            Volume(np.zeros((2, 2, 2)), origin=(0, 0))
        with self.assertRaisesRegex(ValueError, "non-singular"):
            Volume(np.zeros((2, 2, 2)), direction=np.zeros((3, 3)))
        with self.assertRaisesRegex(ValueError, "shape"):
            Volume(np.zeros((2, 2, 2))).with_array(np.zeros((2, 2)))

    def test_file_errors(self):
        d = self.get_temp_dir()
        with self.assertRaisesRegex(FileNotFoundError, "missing.nii"):
            read_volume(os.path.join(d, "missing.nii"))
        odd = os.path.join(d, "volume.xyz")
        with open(odd, "w") as f:
            f.write("not a volume")
        with self.assertRaisesRegex(VolumeError, r"volume.xyz: unsupported volume format '.xyz'"):
            read_volume(odd)
        with self.assertRaisesRegex(VolumeError, r"out.png: cannot write format"):
            write_volume(os.path.join(d, "out.png"), sample_volume())
        broken = os.path.join(d, "broken.nii")
        with open(broken, "wb") as f:
            f.write(b"\x00" * 10)
        with self.assertRaisesRegex(VolumeError, "broken.nii: cannot read volume"):
            read_volume(broken)
        empty = os.path.join(d, "empty_folder")
        os.makedirs(empty)
        with self.assertRaisesRegex(VolumeError, "no DICOM series"):
            read_volume(empty)


class ResampleTest(parameterized.TestCase, tf.test.TestCase):

    def test_isotropic_shape_spacing_and_linear_values(self):
        # f = 2*z_mm + 3*y_mm - x_mm is reproduced exactly by linear interpolation.
        spacing = (2.5, 0.8, 1.6)
        shape = (5, 9, 7)
        k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        f = 2 * k * spacing[0] + 3 * j * spacing[1] - i * spacing[2]
        vol = Volume(f.astype(np.float32), spacing=spacing, origin=(1, 2, 3), direction=DIRECTION)
        out = resample_isotropic(vol, 1.0)
        expected_shape = tuple(int(np.floor((n - 1) * s)) + 1 for n, s in zip(shape, spacing))
        self.assertEqual(out.shape, expected_shape)  # (11, 7, 10)
        self.assertEqual(out.spacing, (1.0, 1.0, 1.0))
        self.assertEqual(out.origin, vol.origin)
        np.testing.assert_allclose(out.direction, DIRECTION)
        self.assertEqual(out.array.dtype, np.float32)
        kk, jj, ii = np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij")
        np.testing.assert_allclose(out.array, 2 * kk + 3 * jj - ii, atol=1e-4)

    def test_nearest_keeps_labels_and_dtype(self):
        labels = np.zeros((3, 4, 4), np.uint8)
        labels[1:, 2:, 1:3] = 7
        vol = Volume(labels, spacing=(2.0, 1.0, 1.0))
        out = resample_isotropic(vol, (1.0, 0.5, 1.0), interpolator="nearest")
        self.assertEqual(out.array.dtype, np.uint8)
        self.assertEqual(out.shape, (5, 7, 4))
        self.assertEqual(set(np.unique(out.array)), {0, 7})
        # Voxel index i maps to i * old / new: the new grid hits the old centres exactly.
        np.testing.assert_array_equal(out.array[::2, ::2], labels)

    def test_argument_errors(self):
        vol = sample_volume()
        with self.assertRaisesRegex(ValueError, "interpolator"):
            resample_isotropic(vol, 1.0, interpolator="cubic")
        with self.assertRaisesRegex(ValueError, "spacing"):
            resample_isotropic(vol, (1.0, 1.0))
        with self.assertRaisesRegex(ValueError, "Volume"):
            resample_isotropic(vol.array, 1.0)


class HuWindowTest(tf.test.TestCase):

    def test_window_values(self):
        hu = np.array([-2000, -220, -219, 80, 379, 380, 3000], dtype=np.int16)
        out = hu_window(hu)
        # DICOM linear VOI: ((x - c + 0.5) / (w - 1) + 0.5) * 255, clipped.
        ref = np.clip(((hu.astype(float) - 80 + 0.5) / 599 + 0.5) * 255, 0, 255)
        np.testing.assert_allclose(out, ref, rtol=1e-6)
        self.assertEqual(out.dtype, np.float32)
        np.testing.assert_array_equal(out[[0, 1]], 0)
        self.assertGreater(out[2], 0)
        np.testing.assert_array_equal(out[[4, 5, 6]], 255)
        np.testing.assert_allclose(out[3], 255 * (0.5 / 599 + 0.5), rtol=1e-6)
        self.assertEqual(hu.dtype, np.int16)  # input untouched

    def test_out_range_and_normalize(self):
        hu = np.linspace(-300, 500, 17)
        np.testing.assert_allclose(hu_window(hu, 0, 101, out_range=(-1, 1)),
                                   np.clip(((hu + 0.5) / 100 + 0.5) * 2 - 1, -1, 1), rtol=1e-6)
        np.testing.assert_allclose(nodule3d_normalize(hu), hu_window(hu) - 60.039, rtol=1e-6)
        self.assertEqual(NODULE3D_MEAN, 60.039)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "width"):
            hu_window(np.zeros(3), 0, 0.5)
        with self.assertRaisesRegex(ValueError, "out_range"):
            hu_window(np.zeros(3), out_range=(1, 1))
        with self.assertRaisesRegex(ValueError, "level"):
            hu_window(np.zeros(3), float("nan"))


