"""Proper-rotation augmentation of iseg training crops and rotation test-time augmentation."""
import argparse

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.io import hdf5 as H
from keras_medseg.iseg import evaluation as E
from keras_medseg.iseg import pipeline as P
from keras_medseg.training import add_config_arguments, config_from_args


def _key(a):
    return (a.shape, np.ascontiguousarray(a).tobytes())


def _rot90_closure(volume):
    """Every array reachable from ``volume`` by compositions of np.rot90 over axis pairs
    (the reference group, built without cube_rotations)."""
    seen = {_key(volume): volume}
    frontier = [volume]
    while frontier:
        nxt = []
        for v in frontier:
            for axes in ((0, 1), (0, 2), (1, 2)):
                w = np.rot90(v, 1, axes=axes)
                if _key(w) not in seen:
                    seen[_key(w)] = w
                    nxt.append(w)
        frontier = nxt
    return seen


def _chiral_cube(n=4, seed=0):
    return np.random.default_rng(seed).random((n, n, n))


class CubeRotationsTest(parameterized.TestCase, tf.test.TestCase):
    def test_24_distinct_proper_rotations_equal_the_rot90_group(self):
        cube = _chiral_cube()
        rotations = H.cube_rotations()
        self.assertLen(rotations, 24)
        self.assertEqual(rotations[0], H.CubeRotation((0, 1, 2), (False, False, False)))
        outputs = {_key(H.rotate_volume(cube, r)) for r in rotations}
        self.assertLen(outputs, 24)
        reference = _rot90_closure(cube)
        self.assertLen(reference, 24)
        self.assertEqual(outputs, set(reference))
        # reflections of the input (a mirror, then any rotation) are never produced
        reflections = set(_rot90_closure(np.flip(cube, 0)))
        self.assertLen(reflections, 24)
        self.assertEmpty(outputs & reflections)
        for r in rotations:
            m = r.matrix
            self.assertAllEqual(m @ m.T, np.eye(3, dtype=np.int64))
            self.assertEqual(round(np.linalg.det(m)), 1)

    def test_matrix_maps_centred_coordinates(self):
        shape = (3, 5, 7)
        centre = (np.array(shape) - 1) / 2
        for r in H.cube_rotations():
            for v in ((0, 0, 0), (2, 1, 6), (1, 4, 3)):
                vol = np.zeros(shape)
                vol[v] = 1
                out = H.rotate_volume(vol, r)
                self.assertEqual(out.shape, r.output_shape(shape))
                u = r.matrix @ (np.array(v) - centre) + (np.array(out.shape) - 1) / 2
                self.assertEqual(tuple(np.argwhere(out)[0]), tuple(np.rint(u).astype(int)))

    @parameterized.parameters(0, 1, 2)
    def test_rotations_about_one_axis(self, axis):
        cube = _chiral_cube(5, seed=axis)
        plane = tuple(i for i in range(3) if i != axis)
        expected = {_key(np.rot90(cube, k, axes=plane)) for k in range(4)}
        rotations = H.cube_rotations(axis)
        self.assertLen(rotations, 4)
        self.assertEqual({_key(H.rotate_volume(cube, r)) for r in rotations}, expected)

    def test_inverse_round_trip_with_channels_and_input_unchanged(self):
        vol = np.random.default_rng(1).random((5, 6, 7, 2)).astype(np.float32)
        before = vol.copy()
        for r in H.cube_rotations():
            out = H.rotate_volume(vol, r)
            self.assertEqual(out.shape, r.output_shape(vol.shape[:3]) + (2,))
            self.assertAllEqual(out[..., 1], H.rotate_volume(vol[..., 1], r))
            self.assertAllEqual(H.rotate_volume(out, r, inverse=True), vol)
        self.assertAllEqual(vol, before)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "proper rotation"):
            H.rotate_volume(np.zeros((2, 2, 2)), ((0, 1, 2), (True, False, False)))
        with self.assertRaisesRegex(ValueError, "proper rotation"):
            H.rotate_volume(np.zeros((2, 2, 2)), ((1, 0, 2), (False, False, False)))
        with self.assertRaisesRegex(ValueError, "at least 3 dimensions"):
            H.rotate_volume(np.zeros((2, 2)), H.cube_rotations()[0])
        with self.assertRaisesRegex(ValueError, "axis"):
            H.cube_rotations(3)


def _write_subject(path, shape=(20, 22, 24), modalities=2, seed=0):
    """A subject whose label is a function of modality 0: floor(4 * data[0])."""
    data = np.random.default_rng(seed).random((modalities, *shape)).astype(np.float32)
    label = np.minimum(np.floor(4 * data[0]), 3).astype(np.uint8)
    return H.write_iseg_hdf5(path, data, label)


class SamplerAugmentationTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        d = self.get_temp_dir()
        self.files = [_write_subject(f"{d}/s{i}.h5", seed=i) for i in range(2)]

    def test_default_stream_unchanged(self):
        # the documented stream of the original sampler: file order from (seed, epoch),
        # each corner from (seed, epoch, position), read with read_iseg_crop
        crop, seed, epoch = (8, 8, 8), 5, 3
        for kwargs in ({}, {"rotate": False, "intensity": 0.0}):
            s = H.IsegPatchSampler(self.files, crop_size=crop, batch_size=3, repeats=3,
                                   seed=seed, **kwargs)
            order = np.random.default_rng([seed, epoch]).permutation(np.repeat([0, 1], 3))
            for b in range(len(s)):
                x, y = s.get_batch(b, epoch)
                for j, pos in enumerate(range(3 * b, min(3 * b + 3, 6))):
                    rng = np.random.default_rng([seed, epoch, pos])
                    start = [rng.integers(0, n - c + 1) for n, c in zip((20, 22, 24), crop)]
                    ex, ey = H.read_iseg_crop(self.files[order[pos]], start, crop)
                    self.assertAllEqual(x[j], ex)
                    self.assertAllEqual(y[j], ey)

    def test_rotation_turns_image_and_labels_together(self):
        crop = (8, 8, 8)
        plain = H.IsegPatchSampler(self.files, crop_size=crop, batch_size=4, repeats=8, seed=2)
        rot = H.IsegPatchSampler(self.files, crop_size=crop, batch_size=4, repeats=8, seed=2,
                                 rotate=True)
        rotations = H.cube_rotations()
        used = set()
        for epoch in range(2):
            for b in range(len(rot)):
                x0, y0 = plain.get_batch(b, epoch)
                x1, y1 = rot.get_batch(b, epoch)
                self.assertEqual(x1.shape, x0.shape)
                self.assertEqual(y1.dtype, np.int32)
                for j in range(len(x0)):
                    # labels stay the function of the (rotated) image
                    self.assertAllEqual(y1[j], np.minimum(np.floor(4 * x1[j, ..., 0]), 3))
                    match = [i for i, r in enumerate(rotations)
                             if np.array_equal(H.rotate_volume(x0[j], r), x1[j])]
                    self.assertLen(match, 1)
                    self.assertAllEqual(H.rotate_volume(y0[j], rotations[match[0]]), y1[j])
                    used.add(match[0])
        self.assertGreater(len(used), 8)  # 32 draws from 24 rotations
        # never a reflection of the plain crop
        x0, _ = plain.get_batch(0, 0)
        x1, _ = rot.get_batch(0, 0)
        for j in range(len(x0)):
            mirrored = {_key(H.rotate_volume(np.flip(x0[j], 0), r)) for r in rotations}
            self.assertNotIn(_key(x1[j]), mirrored)

    def test_rotation_about_one_axis_and_validation_untouched(self):
        s = H.IsegPatchSampler(self.files, crop_size=(6, 8, 8), batch_size=4, repeats=4,
                               seed=1, rotate=True, rotate_axis=0)
        plain = H.IsegPatchSampler(self.files, crop_size=(6, 8, 8), batch_size=4, repeats=4,
                                   seed=1)
        x1, _ = s.get_batch(0, 0)
        x0, _ = plain.get_batch(0, 0)
        for j in range(len(x0)):
            options = [_key(np.rot90(x0[j], k, axes=(1, 2))) for k in range(4)]
            self.assertIn(_key(x1[j]), options)
        val = H.IsegPatchSampler(self.files, crop_size=(8, 8, 8), batch_size=2, mode="val",
                                 rotate=True, intensity=0.5)
        val0 = H.IsegPatchSampler(self.files, crop_size=(8, 8, 8), batch_size=2, mode="val")
        for a, b in zip(val.get_batch(0), val0.get_batch(0)):
            self.assertAllEqual(a, b)

    def test_intensity_is_a_per_modality_affine_map(self):
        kw = dict(crop_size=(8, 8, 8), batch_size=4, repeats=2, seed=3)
        plain = H.IsegPatchSampler(self.files, **kw)
        aug = H.IsegPatchSampler(self.files, intensity=0.2, **kw)
        x0, y0 = plain.get_batch(0, 1)
        x1, y1 = aug.get_batch(0, 1)
        self.assertAllEqual(y0, y1)
        scales = []
        for j in range(len(x0)):
            for m in range(2):
                a, b = np.polyfit(x0[j, ..., m].ravel(), x1[j, ..., m].ravel(), 1)
                self.assertAllClose(x1[j, ..., m], a * x0[j, ..., m] + b, atol=1e-5)
                self.assertBetween(a, 0.8 - 1e-6, 1.2 + 1e-6)
                self.assertBetween(b, -0.2 - 1e-6, 0.2 + 1e-6)
                scales.append(a)
        self.assertGreater(np.ptp(scales), 1e-3)  # different per modality and crop

    def test_bad_augmentation_arguments(self):
        with self.assertRaisesRegex(ValueError, "crop_size"):
            H.IsegPatchSampler(self.files, crop_size=(8, 8, 6), rotate=True)
        with self.assertRaisesRegex(ValueError, "crop_size"):
            H.IsegPatchSampler(self.files, crop_size=(8, 6, 8), rotate=True, rotate_axis=0)
        H.IsegPatchSampler(self.files, crop_size=(8, 6, 8), rotate=False)  # fine unrotated
        with self.assertRaisesRegex(ValueError, "rotate_axis"):
            H.IsegPatchSampler(self.files, crop_size=(8, 8, 8), rotate=True, rotate_axis=3)
        with self.assertRaisesRegex(ValueError, "intensity"):
            H.IsegPatchSampler(self.files, crop_size=(8, 8, 8), intensity=1.5)
        with self.assertRaisesRegex(ValueError, "crop_size"):
            H.IsegPatchDataset(self.files, crop_size=(8, 8, 6), rotate=True)

    def test_dataset_passes_the_options(self):
        ds = H.IsegPatchDataset(self.files, crop_size=(8, 8, 8), batch_size=2, repeats=2,
                                seed=4, rotate=True, intensity=0.1)
        s = H.IsegPatchSampler(self.files, crop_size=(8, 8, 8), batch_size=2, repeats=2,
                               seed=4, rotate=True, intensity=0.1)
        ds.on_epoch_end()
        for a, b in zip(ds[1], s.get_batch(1, 1)):
            self.assertAllEqual(a, b)


class ConfigTest(tf.test.TestCase):
    def test_command_line_flags(self):
        parser = add_config_arguments(argparse.ArgumentParser(), P.IsegDataConfig,
                                      prefix="data")
        config = config_from_args(P.IsegDataConfig, parser.parse_args(
            ["--data-crop-size", "32", "32", "32", "--data-rotate", "--data-rotate-axis", "0",
             "--data-intensity", "0.1"]), prefix="data")
        self.assertTrue(config.rotate)
        self.assertEqual(config.rotate_axis, 0)
        self.assertEqual(config.intensity, 0.1)
        default = config_from_args(P.IsegDataConfig, parser.parse_args([]), prefix="data")
        self.assertFalse(default.rotate)
        self.assertIsNone(default.rotate_axis)
        self.assertEqual(default.intensity, 0.0)

    def test_config_checks(self):
        with self.assertRaisesRegex(ValueError, "crop_size"):
            P.IsegDataConfig(crop_size=(32, 32, 16), rotate=True)
        P.IsegDataConfig(crop_size=(16, 32, 32), rotate=True, rotate_axis=0)
        with self.assertRaisesRegex(ValueError, "rotate_axis"):
            P.IsegDataConfig(rotate_axis=4)
        with self.assertRaisesRegex(ValueError, "intensity"):
            P.IsegDataConfig(intensity=-0.1)


def _pointwise(x):
    """Logits that depend on each voxel alone (so any rotation commutes with the model)."""
    v = np.asarray(x)[..., :1]
    return np.concatenate([v, -v, 2 * v - 1, v * v], axis=-1).astype(np.float32)


def _oriented(x):
    """Logits that depend on the orientation (shifts and running sums along axes)."""
    v = np.asarray(x)[..., 0]
    feats = [v, np.roll(v, 1, axis=1), np.cumsum(v, axis=2) / 4, np.cumsum(v, axis=3) / 3]
    return np.stack(feats, axis=-1).astype(np.float32)


class TestTimeAugmentationTest(tf.test.TestCase):
    def test_pointwise_model_reproduces_the_plain_prediction(self):
        data = np.random.default_rng(0).normal(size=(10, 12, 14, 1)).astype(np.float32)
        labels, probs = E.predict_labels(_pointwise, data, window=(8, 6, 10), overlap=0.5,
                                         return_probabilities=True)
        for name in ("axis0", "axis2", "all"):
            tl, tp = E.predict_labels(_pointwise, data, window=(8, 6, 10), overlap=0.5,
                                      return_probabilities=True,
                                      rotations=E.tta_rotations(name))
            self.assertAllClose(tp, probs, atol=1e-6)
            self.assertAllEqual(tl, labels)

    def test_all_24_make_the_prediction_rotation_equivariant(self):
        data = np.random.default_rng(1).normal(size=(6, 6, 6, 1)).astype(np.float32)
        kw = dict(window=(6, 6, 6), return_probabilities=True)
        rotations = E.tta_rotations("all")
        _, plain = E.predict_labels(_oriented, data, **kw)
        _, tta = E.predict_labels(_oriented, data, rotations=rotations, **kw)
        self.assertNotAllClose(plain, tta)
        plain_errors = []
        for r in rotations[1:]:
            _, p = E.predict_labels(_oriented, H.rotate_volume(data, r), **kw)
            plain_errors.append(np.abs(p - H.rotate_volume(plain, r)).max())
            _, t = E.predict_labels(_oriented, H.rotate_volume(data, r), rotations=rotations,
                                    **kw)
            self.assertAllClose(t, H.rotate_volume(tta, r), atol=1e-5)
        self.assertGreater(max(plain_errors), 1e-2)  # the model alone is not equivariant

    def test_tta_names_and_errors(self):
        self.assertIsNone(E.tta_rotations("none"))
        self.assertLen(E.tta_rotations("axis1"), 4)
        self.assertLen(E.tta_rotations("all"), 24)
        with self.assertRaisesRegex(ValueError, "tta"):
            E.tta_rotations("flip")
        with self.assertRaisesRegex(ValueError, "rotations"):
            E.predict_labels(_pointwise, np.zeros((4, 4, 4, 1), np.float32), window=(4, 4, 4),
                             rotations=())

    def test_evaluate_subjects_with_tta(self):
        d = self.get_temp_dir()
        f = _write_subject(f"{d}/s.h5", shape=(8, 10, 12), modalities=1)

        def oracle(x):  # logits picking floor(4 * data)
            lab = np.minimum(np.floor(4 * np.asarray(x)[..., 0]), 3).astype(int)
            return 10.0 * np.eye(4, dtype=np.float32)[lab]

        result = E.evaluate_subjects(oracle, [f], f"{d}/eval", window=(8, 8, 8),
                                     rotations=E.tta_rotations("all"), figures=False,
                                     save_predictions=False)
        self.assertAllClose([r["DSC"] for r in result.rows], [1.0, 1.0, 1.0])


if __name__ == "__main__":
    pytest.main([__file__])
