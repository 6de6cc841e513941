"""Sliding-window inference: grid, padding, blending, batching and argument checks."""
import itertools

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal.windows import gaussian
from scipy.special import softmax

from keras_medseg.inference import grid_positions, importance_map, sliding_window_inference


def _identity(batch):
    return batch


def _content_logits(batch):
    """Per-voxel logits that depend on the whole window (so windows disagree)."""
    mean = batch.mean(axis=tuple(range(1, batch.ndim)), keepdims=True)
    return np.concatenate([batch[..., :1], 3.0 * mean * np.ones_like(batch[..., :1]),
                           -batch[..., :1] ** 2], axis=-1)


def _reference(image, predictor, window, stride, weights):
    """Loop-by-loop weighted average of window softmaxes (no padding, no batching)."""
    ndim = len(window)
    total = np.zeros(image.shape[:ndim] + (3,))
    count = np.zeros(image.shape[:ndim] + (1,))
    axes = [sorted(set(list(range(0, n - w + 1, s)) + [n - w]))
            for n, w, s in zip(image.shape, window, stride)]
    for start in itertools.product(*axes):
        sl = tuple(slice(p, p + w) for p, w in zip(start, window))
        probs = softmax(predictor(image[sl][None].astype(np.float64))[0], axis=-1)
        total[sl] += probs * weights[..., None]
        count[sl] += weights[..., None]
    return total / count


class GridPositionsTest(tf.test.TestCase, parameterized.TestCase):

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.integers(1, 300), st.integers(1, 80), st.integers(1, 80))
    def test_covers_exactly(self, size, window, stride):
        window = min(window, size)
        stride = min(stride, window)
        (starts,) = grid_positions((size,), window, stride)
        self.assertEqual(starts[0], 0)
        self.assertEqual(starts[-1], size - window)
        self.assertTrue(np.all(np.diff(starts) > 0))
        self.assertTrue(np.all(np.diff(starts) <= stride))
        covered = np.zeros(size, int)
        for p in starts:
            covered[p:p + window] += 1
        self.assertTrue(np.all(covered >= 1))
        # As few windows as the stride allows: ceil((size - window) / stride) + 1.
        self.assertLen(starts, -(-(size - window) // stride) + 1)

    def test_multi_axis_and_examples(self):
        z, y, x = grid_positions((144, 192, 256), (64, 64, 64), 32)
        self.assertAllEqual(z, [0, 32, 64, 80])
        self.assertAllEqual(y, [0, 32, 64, 96, 128])
        self.assertAllEqual(x, [0, 32, 64, 96, 128, 160, 192])
        self.assertAllEqual(grid_positions((5, 7), (5, 3), (1, 3))[1], [0, 3, 4])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "larger than the image"):
            grid_positions((10,), 11, 1)
        with self.assertRaisesRegex(ValueError, "stride .* must not exceed"):
            grid_positions((10,), 4, 5)
        with self.assertRaisesRegex(ValueError, "window must be >= 1"):
            grid_positions((10, 10), (0, 2), 1)
        with self.assertRaisesRegex(ValueError, "stride must be an integer or a sequence of 2"):
            grid_positions((10, 10), 2, (1, 1, 1))


class ImportanceMapTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(((7, 8),), ((5, 6, 9),))
    def test_gaussian_matches_scipy(self, window):
        expected = np.ones(())
        for w in window:
            expected = np.multiply.outer(expected, gaussian(w, std=0.125 * w))
        expected /= expected.max()
        got = importance_map(window, blend="gaussian", sigma_scale=0.125)
        self.assertEqual(got.dtype, np.float32)
        self.assertAllClose(got, expected, rtol=1e-6)
        self.assertAllEqual(importance_map(window, blend="constant"), np.ones(window))

    def test_floor_avoids_zero_weight(self):
        got = importance_map((64, 64), sigma_scale=0.005)
        self.assertGreater(got.min(), 0)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "blend must be one of"):
            importance_map((4, 4), blend="linear")
        with self.assertRaisesRegex(ValueError, "sigma_scale must be a positive"):
            importance_map((4, 4), sigma_scale=0)


class SlidingWindowTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    @parameterized.product(blend=["gaussian", "constant"],
                           case=[((37, 50, 2), (16, 16), 5),
                                 ((19, 23, 26, 1), (8, 8, 8), None)])
    def test_identity_reproduces_input(self, blend, case):
        shape, window, stride = case
        image = self.rng.normal(size=shape).astype(np.float32)
        before = image.copy()
        out = sliding_window_inference(image, _identity, window=window, stride=stride,
                                       blend=blend, apply_softmax=False)
        self.assertEqual(out.dtype, np.float32)
        self.assertAllClose(out, image, rtol=1e-6, atol=1e-6)
        self.assertAllEqual(image, before)  # inputs are not modified

    @parameterized.parameters("constant", "edge", "reflect", "symmetric")
    def test_window_larger_than_image(self, pad_mode):
        image = self.rng.normal(size=(10, 21, 3)).astype(np.float32)
        out = sliding_window_inference(image, _identity, window=(16, 16), blend="constant",
                                       pad_mode=pad_mode, apply_softmax=False)
        self.assertAllClose(out, image, atol=1e-6)
        seen = []

        def record(batch):
            seen.append(batch.copy())
            return batch

        sliding_window_inference(image, record, window=(16, 21), pad_mode="constant",
                                 pad_value=-5.0, apply_softmax=False)
        padded = np.concatenate(seen)
        self.assertEqual(padded.shape, (1, 16, 21, 3))
        # 6 rows of padding split evenly: 3 above, 3 below, filled with pad_value.
        self.assertAllEqual(padded[:, :3], np.full((len(padded), 3, 21, 3), -5.0))
        self.assertAllEqual(padded[:, -3:], np.full((len(padded), 3, 21, 3), -5.0))
        self.assertAllEqual(padded[0, 3:13], image)

    def test_probabilities_are_blended_analytic(self):
        # One row of 6 pixels, windows of 4 at stride 2: starts 0 and 2, overlap on 2..3.
        image = np.arange(6, dtype=np.float32).reshape(1, 6, 1)

        def predictor(batch):  # logits (0, first pixel of the window * 2)
            first = batch[:, :, :1, :] * 2.0
            return np.concatenate([np.zeros_like(batch), np.broadcast_to(first, batch.shape)],
                                  axis=-1)

        out = sliding_window_inference(image, predictor, window=(1, 4), stride=(1, 2),
                                       blend="constant")
        p0, p1 = softmax([0.0, 0.0]), softmax([0.0, 4.0])
        expected = np.stack([p0, p0, (p0 + p1) / 2, (p0 + p1) / 2, p1, p1])[None]
        self.assertAllClose(out, expected, atol=1e-6)
        # Averaging logits instead would have given softmax([0, 2]) in the overlap.
        self.assertNotAllClose(out[0, 2], softmax([0.0, 2.0]), atol=1e-3)

    @parameterized.parameters("gaussian", "constant")
    def test_matches_reference_loop_3d(self, blend):
        image = self.rng.normal(size=(13, 17, 11, 1)).astype(np.float32)
        window, stride = (8, 8, 6), (3, 5, 4)
        out = sliding_window_inference(image, _content_logits, window=window, stride=stride,
                                       blend=blend, batch_size=3)
        weights = importance_map(window, blend=blend).astype(np.float64)
        expected = _reference(image, _content_logits, window, stride, weights)
        self.assertAllClose(out, expected, atol=1e-5)
        self.assertAllClose(out.sum(-1), np.ones(image.shape[:3]), atol=1e-5)

    def test_batching_invariance(self):
        image = self.rng.normal(size=(30, 41, 2)).astype(np.float32)
        results = [sliding_window_inference(image, _content_logits, window=(16, 16),
                                            overlap=0.5, batch_size=b) for b in (1, 3, 4, 100)]
        for other in results[1:]:
            self.assertAllEqual(results[0], other)

    def test_keras_model_and_leading_batch_axis(self):
        keras.utils.set_random_seed(0)
        inp = keras.Input((None, None, 2))
        model = keras.Model(inp, keras.layers.Conv2D(3, 3, padding="same")(inp))
        images = self.rng.normal(size=(2, 20, 27, 2)).astype(np.float32)
        out = sliding_window_inference(images, model, window=(16, 16), batch_size=4,
                                       output_channels=3)
        self.assertEqual(out.shape, (2, 20, 27, 3))
        self.assertAllClose(out.sum(-1), np.ones((2, 20, 27)), atol=1e-5)
        single = sliding_window_inference(images[1], model, window=(16, 16), batch_size=1)
        self.assertAllClose(out[1], single, atol=1e-5)

    def test_progress_bar(self):
        image = self.rng.normal(size=(20, 20, 1)).astype(np.float32)
        out = sliding_window_inference(image, _identity, window=(8, 8), progress=True,
                                       apply_softmax=False)
        self.assertAllClose(out, image, atol=1e-6)

    def test_errors(self):
        image = np.zeros((20, 20, 1), np.float32)
        cases = [
            (dict(window=8), "window must be a sequence"),
            (dict(window=(8,)), "window must have 2 or 3 entries"),
            (dict(window=(8, 0)), "window must be >= 1"),
            (dict(window=(8, 8, 8)), "3 spatial axes"),
            (dict(window=(8, 8), stride=9), "stride must not exceed"),
            (dict(window=(8, 8), stride=0), "stride must be >= 1"),
            (dict(window=(8, 8), overlap=1.0), "overlap must be a number in"),
            (dict(window=(8, 8), overlap=-0.1), "overlap must be a number in"),
            (dict(window=(8, 8), overlap=0.5, stride=4), "either overlap or stride"),
            (dict(window=(8, 8), batch_size=0), "batch_size must be a positive"),
            (dict(window=(8, 8), blend="max"), "blend must be one of"),
            (dict(window=(8, 8), pad_mode="wrap"), "pad_mode must be one of"),
            (dict(window=(8, 8), sigma_scale=-1.0), "sigma_scale must be a positive"),
            (dict(window=(8, 8), output_channels=2), "output_channels=2"),
            (dict(window=(8, 8), output_channels=0), "output_channels must be"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs):
                with self.assertRaisesRegex(ValueError, message):
                    sliding_window_inference(image, _identity, **kwargs)
        with self.assertRaisesRegex(ValueError, "must return"):
            sliding_window_inference(image, lambda b: b[:, :4], window=(8, 8))
        with self.assertRaisesRegex(ValueError, "predictor must be a Keras model or a callable"):
            sliding_window_inference(image, "model", window=(8, 8))
        with self.assertRaisesRegex(ValueError, "inputs must be numeric"):
            sliding_window_inference(np.full((8, 8, 1), "a"), _identity, window=(8, 8))
