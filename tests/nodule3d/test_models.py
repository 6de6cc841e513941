"""Tests of the nodule3d networks, the stage-1 index map, the detector layers and the full
detector (parameter counts, exact patch equivalence, NumPy references, .keras round trips)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.nodule3d import layers as L
from keras_medseg.nodule3d import models as M
from keras_medseg.nodule3d.losses import decode_regression
from keras_medseg.nodule3d.screening import boxes_from_probability_map


def randomise(model, seed):
    """He-scaled random convolution/dense weights and non-trivial BatchNorm statistics, so
    that outputs vary strongly with the input (N(0, 0.01) leaves every output near 0.5)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv3D, keras.layers.Dense)):
            k, b = layer.get_weights()
            fan_in = np.prod(k.shape[:-1])
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / fan_in), k.shape),
                               rng.normal(0, 0.1, b.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, mu.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def crop_numpy(volume, centre, size, pad_value=0.0):
    """Reference crop: ``volume[c - size // 2 :][:size]`` with constant padding."""
    out = np.full(tuple(size) + volume.shape[3:], pad_value, dtype=volume.dtype)
    src, dst = [], []
    for c, s, n in zip(centre, size, volume.shape[:3]):
        a = int(c) - s // 2
        lo, hi = max(a, 0), min(a + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = volume[tuple(src)]
    return out


class ParameterCountTest(tf.test.TestCase):

    def test_candidate_screening_counts(self):
        # The original's 2,364,000 includes a BatchNormalization (4 x 2 parameters) between
        # C5 and the softmax; the fixed model drops it.
        self.assertEqual(M.build_candidate_screening(final_batchnorm=True).count_params(),
                         2_364_000)
        model = M.build_candidate_screening()
        self.assertEqual(model.count_params(), 2_364_000 - 8)
        self.assertIsInstance(model.get_layer("probabilities").input._keras_history.operation,
                              keras.layers.Conv3D)

    def test_fp_reduction_counts(self):
        self.assertEqual(M.build_fp_reduction(regression=False).count_params(), 8_094_658)
        flat = 6 * 8 * 8 * 128        # (25, 60, 60) -> (6, 8, 8) x 128 before Flatten
        head = (flat * 128 + 128) + (128 * 4 + 4)
        self.assertEqual(M.build_fp_reduction().count_params(), 8_094_658 + head)

    def test_layer_settings(self):
        s1 = M.build_candidate_screening()
        s2 = M.build_fp_reduction()
        for model in (s1, s2):
            for layer in model.layers:
                if isinstance(layer, keras.layers.Conv3D):
                    init = layer.kernel_initializer
                    self.assertIsInstance(init, keras.initializers.RandomNormal)
                    self.assertEqual((init.mean, init.stddev), (0.0, 0.01))
                    self.assertAllEqual(layer.bias.numpy(), np.zeros(layer.filters))
                    expected = "same" if layer.name.startswith("res") else "valid"
                    self.assertEqual(layer.padding, expected, layer.name)
        for layer in s2.layers:
            if isinstance(layer, keras.layers.Conv3D):
                self.assertAllClose(layer.kernel_regularizer.l2, 1e-4)
        self.assertEqual(s2.get_layer("c5_conv").strides, (2, 2, 2))
        self.assertEqual(s1.get_layer("c1_conv").kernel_size, (4, 5, 5))
        self.assertEqual(s1.get_layer("pool1").pool_size, (1, 2, 2))


class IndexMapTest(tf.test.TestCase):

    def test_helpers(self):
        self.assertAllEqual(M.output_to_input([0, 0, 0]), [7, 15, 15])
        self.assertAllEqual(M.output_to_input([2, 3, 4]), [9, 21, 23])
        self.assertAllEqual(M.output_to_input([2, 3, 4], mode="start"), [2, 6, 8])
        self.assertAllClose(M.output_to_input([2, 3, 4], mode="exact"), [9, 20.5, 22.5])
        grid = np.stack(np.meshgrid(*[np.arange(-3, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self.assertAllEqual(M.input_to_output(M.output_to_input(grid)), grid)
        # Every voxel maps to the output whose patch's geometric centre is nearest.
        vox = np.stack(np.meshgrid(*[np.arange(14, 40)] * 3, indexing="ij"), -1).reshape(-1, 3)
        out = M.input_to_output(vox)
        dist = np.abs(M.output_to_input(out, mode="exact") - vox)
        for delta in ([0, 1, 0], [0, -1, 0], [0, 0, 1], [1, 0, 0]):
            other = np.abs(M.output_to_input(out + delta, mode="exact") - vox)
            self.assertTrue(np.all(dist.sum(1) < other.sum(1)))

    def test_helper_errors(self):
        with self.assertRaisesRegex(ValueError, "length 3"):
            M.output_to_input([1, 2])
        with self.assertRaisesRegex(ValueError, "mode"):
            M.output_to_input([1, 2, 3], mode="middle")
        with self.assertRaisesRegex(ValueError, "integer"):
            M.output_to_input([1.5, 2, 3])
        with self.assertRaisesRegex(ValueError, "finite"):
            M.input_to_output([np.nan, 2, 3])

    def test_map_position_equals_patch_classifier(self):
        model = randomise(M.build_candidate_screening(), seed=0)
        rng = np.random.default_rng(1)
        vol = rng.normal(size=(22, 47, 48, 1)).astype(np.float32)
        full = model(vol[None], training=False).numpy()[0]
        self.assertEqual(full.shape[:3], M.output_shape_for(vol.shape[:3]))
        self.assertEqual(full.shape[:3], (8, 9, 10))
        idx = np.stack(np.meshgrid([0, 3, 7], [0, 4, 8], [0, 5, 9], indexing="ij"),
                       -1).reshape(-1, 3)

        def patches(shift):
            out = []
            for o in idx:
                c = M.output_to_input(o) + shift
                out.append(crop_numpy(vol, c, M.RECEPTIVE_FIELD))
            return np.stack(out)

        got = full[tuple(idx.T)]
        per_patch = model(patches(np.zeros(3, int)), training=False).numpy()[:, 0, 0, 0]
        self.assertAllClose(got, per_patch, atol=1e-5)
        self.assertGreater(np.std(got[:, 1]), 0.05)     # the outputs do depend on the input
        # One voxel off in any axis (as the original's (6, 14, 14) map is) no longer matches.
        for shift in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):
            moved = model(patches(np.asarray(shift)), training=False).numpy()[:, 0, 0, 0]
            self.assertGreater(np.max(np.abs(moved - got)), 1e-2)

    def test_planted_voxel_support_and_peak(self):
        # Averaging kernels and identity BatchNorm: the response to one bright voxel is
        # positive exactly on the outputs whose receptive field contains it, and peaks at
        # the output whose patch is centred on it.
        model = M.build_candidate_screening()
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv3D):
                k, b = layer.get_weights()
                layer.set_weights([np.full(k.shape, 1.0 / np.prod(k.shape[:-1])),
                                   np.zeros_like(b)])
            elif isinstance(layer, keras.layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.set_weights([np.ones(n), np.zeros(n), np.zeros(n),
                                   np.full(n, 1.0 - layer.epsilon)])
        logits = keras.Model(model.input, model.get_layer("c5_conv").output)
        shape = (26, 52, 53)
        n_out = M.output_shape_for(shape)
        for voxel in ([12, 24, 25], [13, 25, 26], [14, 27, 24]):
            with self.subTest(voxel=voxel):
                vol = np.zeros(shape + (1,), np.float32)
                vol[tuple(voxel)] = 1.0
                resp = logits(vol[None]).numpy()[0, ..., 0]
                o = np.stack(np.meshgrid(*[np.arange(n) for n in n_out], indexing="ij"), -1)
                start = M.output_to_input(o, mode="start")
                inside = np.all((start <= voxel) & (voxel < start + M.RECEPTIVE_FIELD), -1)
                self.assertAllEqual(resp > 1e-12, inside)
                peak = np.unravel_index(np.argmax(resp), resp.shape)
                self.assertAllEqual(peak, M.input_to_output(voxel))
                # The original's offset puts the peak one voxel deeper in z.
                self.assertEqual(peak[0], voxel[0] - M.CENTRE_OFFSET[0])
                self.assertNotEqual(peak[0], voxel[0] - M.ORIGINAL_OFFSET[0])


class BuilderErrorTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(
        ((None, None, 1),), ((1, 15, 30, 30),), ((14, 30, 30, 1),), ((15, 29, 30, 1),),
        ((None, None, None, None),), ((15, 30, 30.0, 1),), ("volume",))
    def test_bad_input_shape(self, shape):
        with self.assertRaisesRegex(ValueError, "input_shape"):
            M.build_candidate_screening(shape)

    def test_other_arguments(self):
        with self.assertRaisesRegex(ValueError, "num_classes"):
            M.build_candidate_screening(num_classes=1)
        with self.assertRaisesRegex(ValueError, "weights"):
            M.build_candidate_screening(weights="/nonexistent/file.weights.h5")
        with self.assertRaisesRegex(ValueError, "fully known"):
            M.build_fp_reduction((None, 60, 60, 1))
        with self.assertRaisesRegex(ValueError, "l2"):
            M.build_fp_reduction(l2=-1.0)
        with self.assertRaisesRegex(ValueError, "regression"):
            M.build_fp_reduction(regression="yes")


@pytest.mark.slow
class SerializationTest(tf.test.TestCase):

    def test_round_trips_and_stage1_init(self):
        rng = np.random.default_rng(2)
        s1 = randomise(M.build_candidate_screening(), seed=3)
        s2 = randomise(M.build_fp_reduction((15, 30, 30, 1)), seed=4)
        x1 = rng.normal(size=(1, 17, 34, 33, 1)).astype(np.float32)
        x2 = rng.normal(size=(3, 15, 30, 30, 1)).astype(np.float32)
        for model, x in ((s1, x1), (s2, x2)):
            path = os.path.join(self.get_temp_dir(), f"{model.name}.keras")
            model.save(path)
            loaded = keras.models.load_model(path)
            tf.nest.map_structure(lambda a, b: self.assertAllClose(a, b, atol=0, rtol=0),
                                  model(x), loaded(x))
        M.init_fp_reduction_from_screening(s2, s1)
        for name in ("c1_conv", "c1_bn", "c2_conv", "c2_bn", "c3_conv", "c3_bn"):
            for a, b in zip(s1.get_layer(name).get_weights(), s2.get_layer(name).get_weights()):
                self.assertAllEqual(a, b)
        with self.assertRaisesRegex(ValueError, "c1_conv"):
            M.init_fp_reduction_from_screening(
                M.build_fp_reduction((15, 30, 30, 2)), s1)


class ProposalLayerTest(tf.test.TestCase, parameterized.TestCase):

    def _map(self, seed, shape=(6, 9, 11)):
        rng = np.random.default_rng(seed)
        p1 = rng.uniform(0, 1, shape).astype(np.float32)
        p1[rng.uniform(size=shape) < 0.5] = 0.1           # many background positions
        return np.stack([1 - p1, p1], -1)

    @parameterized.parameters((0, (5, 10, 10), 0.5), (1, (9, 20, 20), 0.3),
                              (2, (25, 60, 60), 0.5))
    def test_matches_numpy_nms(self, seed, roi, iou):
        maps = np.stack([self._map(seed), self._map(seed + 10)])
        layer = L.ScreeningProposals(roi, iou_threshold=iou, max_proposals=12,
                                     pre_nms_top_k=1000)
        boxes, scores, labels, valid = [np.asarray(t) for t in layer(maps)]
        for b in range(2):
            ref = boxes_from_probability_map(maps[b], iou_threshold=iou, max_proposals=12,
                                             roi_size=roi)
            n = len(ref.scores)
            self.assertAllEqual(valid[b], np.arange(12) < n)
            self.assertAllClose(boxes[b, :n], ref.boxes)
            self.assertAllClose(scores[b, :n], ref.scores)
            self.assertAllEqual(labels[b, :n], ref.labels)
            self.assertAllEqual(boxes[b, n:], np.zeros((12 - n, 6)))
            self.assertAllEqual(scores[b, n:], np.zeros(12 - n))

    def test_threshold_background_and_padding(self):
        p = np.zeros((3, 4, 4, 3), np.float32)
        p[..., 0] = 1.0
        p[1, 2, 3] = [0.1, 0.2, 0.7]        # class 2, kept
        p[2, 0, 0] = [0.7, 0.3, 0.0]        # background wins: dropped
        p[0, 1, 1] = [0.4, 0.35, 0.25]      # background wins
        p[2, 3, 0] = [0.2, 0.22, 0.58]      # class 2, kept
        layer = L.ScreeningProposals((3, 4, 4), max_proposals=4, score_threshold=0.6)
        boxes, scores, labels, valid = [np.asarray(t)[0] for t in layer(p[None])]
        self.assertAllEqual(valid, [1, 0, 0, 0])
        self.assertAllClose(scores[0], 0.7)
        self.assertEqual(labels[0], 2)
        centre = M.output_to_input([1, 2, 3])
        self.assertAllClose(boxes[0], np.r_[centre - [1, 2, 2], centre + [2, 2, 2]])

    def test_layer_argument_errors(self):
        with self.assertRaisesRegex(ValueError, "roi_size"):
            L.ScreeningProposals((25, 60))
        with self.assertRaisesRegex(ValueError, "iou_threshold"):
            L.ScreeningProposals(iou_threshold=1.5)
        with self.assertRaisesRegex(ValueError, "max_proposals"):
            L.ScreeningProposals(max_proposals=0)
        with self.assertRaisesRegex(ValueError, "pad_value"):
            L.CropProposals(pad_value=float("nan"))
        with self.assertRaisesRegex(ValueError, "std"):
            L.DecodeProposalRegression(std=0.0)
        with self.assertRaisesRegex(ValueError, "batch, d, h, w"):
            L.ScreeningProposals()(np.zeros((4, 4, 4, 2), np.float32))

    def test_crop_matches_numpy_with_padding(self):
        rng = np.random.default_rng(5)
        vol = rng.normal(size=(2, 12, 20, 22, 2)).astype(np.float32)
        centres = np.array([[[6, 10, 11], [0, 0, 21]], [[11, 19, 3], [5, 2, 20]]])
        size = np.array([5, 8, 9])
        boxes = np.concatenate([centres - size // 2, centres - size // 2 + size], -1)
        crops = np.asarray(L.CropProposals((5, 8, 9), pad_value=-3.0)(
            [vol, boxes.astype(np.float32)]))
        self.assertEqual(crops.shape, (4, 5, 8, 9, 2))
        for b in range(2):
            for n in range(2):
                ref = crop_numpy(vol[b], centres[b, n], (5, 8, 9), pad_value=-3.0)
                self.assertAllEqual(crops[2 * b + n], ref)

    def test_decode_matches_numpy(self):
        rng = np.random.default_rng(6)
        reg = rng.normal(size=(2, 3, 4)).astype(np.float32)
        centres = rng.integers(20, 80, size=(2, 3, 3))
        boxes = np.concatenate([centres - [12, 30, 30], centres + [13, 30, 30]], -1)
        valid = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
        got_c, got_d = [np.asarray(t) for t in L.DecodeProposalRegression()(
            [boxes.astype(np.float32), reg, valid])]
        ref_c, ref_d = decode_regression(reg.reshape(-1, 4))
        ref_c = ref_c.reshape(2, 3, 3) + centres - [12, 30, 30]
        self.assertAllClose(got_c, ref_c * valid[..., None], rtol=1e-5)
        self.assertAllClose(got_d, ref_d.reshape(2, 3) * valid, rtol=1e-5)


@pytest.mark.slow
class DetectorTest(tf.test.TestCase):

    def test_end_to_end_and_round_trip(self):
        keras.utils.set_random_seed(0)
        s1 = randomise(M.build_candidate_screening(), seed=7)
        s2 = randomise(M.build_fp_reduction((15, 30, 30, 1)), seed=8)
        det = M.build_detector(s1, s2, max_proposals=5, score_threshold=0.25)
        rng = np.random.default_rng(9)
        vol = rng.normal(size=(2, 20, 36, 38, 1)).astype(np.float32)
        out = {k: np.asarray(v) for k, v in det(vol).items()}
        self.assertEqual(out["boxes"].shape, (2, 5, 6))
        for b in range(2):
            pmap = s1(vol[b:b + 1]).numpy()[0]
            self.assertAllClose(out["probability_map"][b], pmap, atol=1e-6)
            ref = boxes_from_probability_map(pmap, max_proposals=5, roi_size=(15, 30, 30))
            n = len(ref.scores)
            self.assertGreater(n, 0)
            self.assertAllClose(out["boxes"][b, :n], ref.boxes)
            crops = np.stack([crop_numpy(vol[b], c, (15, 30, 30)) for c in ref.centres])
            s2_out = s2(crops)
            self.assertAllClose(out["class_probabilities"][b, :n],
                                s2_out["classification"], atol=1e-5)
            self.assertAllClose(out["regression"][b, :n], s2_out["regression"], atol=1e-5)
            self.assertAllEqual(out["class_probabilities"][b, n:], np.zeros((5 - n, 2)))
        path = os.path.join(self.get_temp_dir(), "detector.keras")
        det.save(path)
        loaded = keras.models.load_model(path)
        again = loaded(vol)
        for key, value in out.items():
            self.assertAllEqual(value, np.asarray(again[key]), msg=key)
        self.assertEqual(loaded.get_layer("proposals").get_config()["max_proposals"], 5)

    def test_detector_errors(self):
        s1 = M.build_candidate_screening()
        with self.assertRaisesRegex(ValueError, "channels"):
            M.build_detector(s1, M.build_fp_reduction((15, 30, 30, 2), regression=False))
        with self.assertRaisesRegex(ValueError, "fp_model"):
            M.build_detector(s1, "model")


class AverageModelsTest(tf.test.TestCase):

    def test_mean_of_members_round_trip_and_detector(self):
        keras.utils.set_random_seed(0)
        members = [randomise(M.build_fp_reduction((15, 30, 30, 1)), seed=s) for s in (1, 2, 3)]
        ensemble = M.average_models(members)
        x = np.random.default_rng(5).normal(size=(3, 15, 30, 30, 1)).astype(np.float32)
        outs = [m(x) for m in members]
        got = ensemble(x)
        self.assertEqual(set(got), {"classification", "regression"})
        for key in got:
            ref = np.mean([np.asarray(o[key]) for o in outs], axis=0)
            self.assertAllClose(got[key], ref, atol=1e-6)
            # the members really differ, so the mean is not one of them
            self.assertGreater(np.abs(np.asarray(outs[0][key]) - ref).max(), 1e-3)
        path = os.path.join(self.get_temp_dir(), "ensemble.keras")
        ensemble.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        again = loaded(x)
        for key in got:
            self.assertAllClose(again[key], got[key], atol=1e-6)
        det = M.build_detector(M.build_candidate_screening(), loaded, max_proposals=2)
        self.assertIn("centres", det.output)
        # a single-output model, and files as members
        plain = [randomise(M.build_fp_reduction((15, 30, 30, 1), regression=False), seed=s)
                 for s in (4, 5)]
        paths = []
        for i, m in enumerate(plain):
            paths.append(os.path.join(self.get_temp_dir(), f"m{i}.keras"))
            m.save(paths[-1])
        mean = M.average_models(paths)(x)
        self.assertAllClose(mean, (np.asarray(plain[0](x)) + np.asarray(plain[1](x))) / 2,
                            atol=1e-6)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "at least one"):
            M.average_models([])
        a = M.build_fp_reduction((15, 30, 30, 1), regression=False)
        with self.assertRaisesRegex(ValueError, r"models\[1\] must take one input"):
            M.average_models([a, M.build_fp_reduction((16, 30, 30, 1), regression=False)])
        with self.assertRaisesRegex(ValueError, r"models\[1\] outputs"):
            M.average_models([a, M.build_fp_reduction((15, 30, 30, 1))])
        with self.assertRaisesRegex(ValueError, "keras.Model or a model file"):
            M.average_models([a, 3])
