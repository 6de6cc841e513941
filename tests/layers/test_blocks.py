"""Shared blocks: output shapes, layer names, numerics against NumPy, serialization."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from scipy.special import expit

from keras_medseg.layers import (
    BroadcastLike,
    GroupedConvTranspose,
    SqueezeExcite,
    apply_aspp,
    apply_conv_block,
    apply_conv_bn_relu,
    apply_preact_residual_unit,
    apply_residual_block,
    apply_residual_block_3d,
    apply_squeeze_excite,
    apply_upsample,
)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _input(rank, channels, size=None):
    return keras.Input((size,) * rank + (channels,))


class ConvBnReluTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((2, 1, 12), (2, 2, 6), (3, 1, 8), (3, 2, 4))
    def test_shapes_and_names(self, rank, strides, out_size):
        x = _input(rank, 3, 8 if rank == 3 else 12)
        y = apply_conv_bn_relu(x, 5, strides=strides, name="b")
        self.assertEqual(tuple(y.shape), (None,) + (out_size,) * rank + (5,))
        model = keras.Model(x, y)
        self.assertEqual([layer.name for layer in model.layers[1:]], ["b_conv", "b_bn", "b_relu"])
        self.assertFalse(model.get_layer("b_conv").use_bias)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "filters must be a positive integer"):
            apply_conv_bn_relu(_input(2, 3), 0, name="b")
        with self.assertRaisesRegex(ValueError, "2 or 3D"):
            apply_conv_bn_relu(keras.Input((4, 3)), 4, name="b")


class SqueezeExciteTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((1, False), (2, True), (3, True))
    def test_matches_numpy(self, rank, use_bias):
        rng = np.random.default_rng(rank)
        x = rng.normal(size=(2,) + (5,) * rank + (32,)).astype(np.float32)
        layer = SqueezeExcite(ratio=8, use_bias=use_bias)
        layer.build(x.shape)
        weights = [rng.normal(size=w.shape).astype(np.float32) for w in layer.weights]
        layer.set_weights(weights)
        got = keras.ops.convert_to_numpy(layer(x))
        mean = x.mean(axis=tuple(range(1, rank + 1)), keepdims=True)
        hidden = mean @ weights[0] + (weights[2] if use_bias else 0)
        scale = expit(np.maximum(hidden, 0) @ weights[1] + (weights[3] if use_bias else 0))
        self.assertAllClose(got, x * scale, rtol=1e-4, atol=1e-5)
        self.assertLen(layer.weights, 4 if use_bias else 2)
        self.assertEqual(tuple(layer.weights[0].shape), (32, 4))

    def test_shared_weights_when_called_twice(self):
        x = _input(3, 32)
        se = SqueezeExcite(ratio=16)
        model = keras.Model(x, se(se(x)))
        self.assertLen(model.weights, 2)

    def test_apply_and_errors(self):
        x = _input(2, 16)
        y = apply_squeeze_excite(x, ratio=4, name="se")
        self.assertEqual(tuple(y.shape), (None, None, None, 16))
        with self.assertRaisesRegex(ValueError, "ratio=32 is larger than the number of channels"):
            apply_squeeze_excite(x, ratio=32, name="se2")
        with self.assertRaisesRegex(ValueError, "ratio must be a positive integer"):
            SqueezeExcite(ratio=0)


class AsppTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(2, 3)
    def test_shapes_dynamic_sizes(self, rank):
        x = _input(rank, 6)
        model = keras.Model(x, apply_aspp(x, 4, rates=(1, 2), name="aspp"))
        names = {layer.name for layer in model.layers}
        for expected in ("aspp_pool", "aspp_pool_conv", "aspp_pool_broadcast", "aspp_1x1_conv",
                         "aspp_rate1_conv", "aspp_rate2_conv", "aspp_concat",
                         "aspp_project_conv"):
            self.assertIn(expected, names)
        self.assertEqual(model.get_layer("aspp_concat").output.shape[-1], 4 * 4)
        pool_model = keras.Model(x, model.get_layer("aspp_pool_broadcast").output)
        rng = np.random.default_rng(0)
        for size in (5, 9):  # two spatial sizes through the same model
            data = rng.normal(size=(2,) + (size,) * rank + (6,)).astype(np.float32)
            self.assertEqual(model.predict_on_batch(data).shape, (2,) + (size,) * rank + (4,))
            pooled = pool_model.predict_on_batch(data)
            # The image-pooling branch is constant over space (broadcast of a 1x1 map).
            flat = pooled.reshape(2, -1, 4)
            self.assertAllClose(flat, np.broadcast_to(flat[:, :1], flat.shape))

    def test_static_sizes_and_errors(self):
        x = _input(2, 6, 14)
        self.assertEqual(tuple(apply_aspp(x, 8, name="a").shape), (None, 14, 14, 8))
        with self.assertRaisesRegex(ValueError, "rates must be"):
            apply_aspp(x, 8, rates=(), name="b")
        with self.assertRaisesRegex(ValueError, "rates must be"):
            apply_aspp(x, 8, rates=(0, 6), name="c")

    def test_broadcast_like(self):
        pooled = np.arange(6, dtype=np.float32).reshape(2, 1, 1, 1, 3)
        ref = np.zeros((2, 3, 4, 5, 7), np.float32)
        got = keras.ops.convert_to_numpy(BroadcastLike()([pooled, ref]))
        self.assertAllEqual(got, np.broadcast_to(pooled, (2, 3, 4, 5, 3)))


class GroupedConvTransposeTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((2, 1), (2, 4), (3, 2), (3, 4))
    def test_matches_block_diagonal_full_kernel(self, rank, groups):
        rng = np.random.default_rng(groups)
        x = rng.normal(size=(2,) + (3,) * rank + (8,)).astype(np.float32)
        layer = GroupedConvTranspose(8, 4, strides=2, groups=groups)
        got = keras.ops.convert_to_numpy(layer(x))
        self.assertEqual(got.shape, (2,) + (6,) * rank + (8,))
        reference = {2: keras.layers.Conv2DTranspose,
                     3: keras.layers.Conv3DTranspose}[rank](8, 4, strides=2, padding="same",
                                                             use_bias=False)
        reference.build(x.shape)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        full = np.zeros((4,) * rank + (8, 8), np.float32)
        step = 8 // groups
        for g in range(groups):
            full[..., g * step:(g + 1) * step, g * step:(g + 1) * step] = kernel[g]
        reference.set_weights([full])
        self.assertAllClose(got, keras.ops.convert_to_numpy(reference(x)), atol=1e-5)
        self.assertEqual(layer.count_params(), 4 ** rank * 8 * 8 // groups)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "divisible by groups"):
            GroupedConvTranspose(6, 4, groups=4)
        with self.assertRaisesRegex(ValueError, "input channels .* divisible"):
            GroupedConvTranspose(8, 4, groups=4)(_input(2, 6))


class ResidualBlocksTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((2, 1), (2, 2), (3, 1), (3, 2))
    def test_residual_block_is_conv_path_plus_shortcut(self, rank, strides):
        keras.utils.set_random_seed(1)
        x = _input(rank, 3, 8)
        y = apply_residual_block(x, 6, strides=strides, name="rb")
        self.assertEqual(tuple(y.shape), (None,) + (8 // strides,) * rank + (6,))
        model = keras.Model(x, [y, model_out("rb_conv2", x, y), model_out("rb_shortcut_bn", x, y)])
        self.assertFalse(model.get_layer("rb_conv1").use_bias)
        self.assertTrue(model.get_layer("rb_conv2").use_bias)
        self.assertFalse(model.get_layer("rb_shortcut_conv").use_bias)
        self.assertEqual(model.get_layer("rb_shortcut_conv").kernel_size, (1,) * rank)
        data = np.random.default_rng(0).normal(size=(2,) + (8,) * rank + (3,)).astype("float32")
        out, main, shortcut = model.predict_on_batch(data)
        # Plain sum, no activation after it: negative values survive.
        self.assertAllClose(out, main + shortcut, atol=1e-5)
        self.assertLess(out.min(), 0)

    def test_3d_only_variant(self):
        self.assertEqual(tuple(apply_residual_block_3d(_input(3, 2, 4), 4, name="r").shape),
                         (None, 4, 4, 4, 4))
        with self.assertRaisesRegex(ValueError, "3D"):
            apply_residual_block_3d(_input(2, 2, 4), 4, name="r")

    def test_preact_unit_identity_with_zero_kernels(self):
        x = _input(3, 4, 5)
        model = keras.Model(x, apply_preact_residual_unit(x, name="ru",
                                                          kernel_initializer="zeros"))
        self.assertEqual([l.name for l in model.layers[1:]],
                         ["ru_1_bn", "ru_1_relu", "ru_1_conv", "ru_2_bn", "ru_2_relu",
                          "ru_2_conv", "ru_add"])
        data = np.random.default_rng(0).normal(size=(1, 5, 5, 5, 4)).astype("float32")
        self.assertAllClose(model.predict_on_batch(data), data)

    def test_conv_block(self):
        x = _input(2, 3, 8)
        model = keras.Model(x, apply_conv_block(x, 16, name="cb"))
        self.assertEqual(model.output.shape, (None, 8, 8, 16))
        self.assertEqual(model.get_layer("cb_se").ratio, 8)
        self.assertIn("cb_2_relu", [l.name for l in model.layers])


def model_out(name, x, y):
    return keras.Model(x, y).get_layer(name).output


class UpsampleTest(tf.test.TestCase, parameterized.TestCase):

    def test_modes(self):
        x2, x3 = _input(2, 8, 4), _input(3, 8, 4)
        self.assertEqual(tuple(apply_upsample(x2, 4, name="u").shape), (None, 8, 8, 4))
        self.assertEqual(tuple(apply_upsample(x3, 4, groups=4, name="g").shape),
                         (None, 8, 8, 8, 4))
        self.assertEqual(tuple(apply_upsample(x2, mode="bilinear", name="b").shape),
                         (None, 8, 8, 8))
        self.assertEqual(tuple(apply_upsample(x3, mode="nearest", name="n").shape),
                         (None, 8, 8, 8, 8))
        with self.assertRaisesRegex(ValueError, "2D only"):
            apply_upsample(x3, mode="bilinear", name="x")
        with self.assertRaisesRegex(ValueError, "filters must be None"):
            apply_upsample(x2, 4, mode="nearest", name="y")
        with self.assertRaisesRegex(ValueError, "mode must be one of"):
            apply_upsample(x2, 4, mode="cubic", name="z")


class SerializationTest(tf.test.TestCase):

    def test_configs_are_constructor_args(self):
        layers = [SqueezeExcite(ratio=4, use_bias=True, name="se"),
                  GroupedConvTranspose(8, (4, 4, 2), strides=(2, 2, 1), groups=2, name="g"),
                  BroadcastLike(name="b")]
        for layer in layers:
            config = layer.get_config()
            clone = layer.__class__.from_config(config)
            self.assertEqual(clone.get_config(), config)

    def test_keras_round_trip_all_blocks(self):
        keras.utils.set_random_seed(0)
        x = _input(3, 4)
        y = apply_aspp(x, 8, rates=(1, 2), name="aspp")
        y = apply_residual_block(y, 8, strides=2, name="rb")
        y = apply_squeeze_excite(y, ratio=4, use_bias=True, name="se")
        y = apply_preact_residual_unit(y, name="ru")
        y = apply_upsample(y, 8, groups=4, name="up")
        model = keras.Model(x, y)
        data = np.random.default_rng(0).normal(size=(2, 8, 6, 4, 4)).astype("float32")
        expected = model.predict_on_batch(data)
        path = os.path.join(self.get_temp_dir(), "blocks.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertAllClose(restored.predict_on_batch(data), expected, atol=1e-6)
        self.assertIsInstance(restored.get_layer("se"), SqueezeExcite)
        self.assertIsInstance(restored.get_layer("up_convt"), GroupedConvTranspose)


@pytest.mark.slow
class OtherBackendTest(tf.test.TestCase):
    """The custom layers use keras.ops only: the same model gives the same output under JAX."""

    def test_jax_matches_tensorflow(self):
        pytest.importorskip("jax")
        keras.utils.set_random_seed(0)
        x = _input(3, 4)
        y = apply_aspp(x, 8, rates=(1,), name="aspp")
        y = apply_squeeze_excite(y, ratio=4, use_bias=True, name="se")
        y = apply_upsample(y, 8, groups=4, name="up")
        model = keras.Model(x, y)
        data = np.random.default_rng(0).normal(size=(1, 4, 6, 4, 4)).astype("float32")
        tmp = self.get_temp_dir()
        model.save(os.path.join(tmp, "m.keras"))
        np.save(os.path.join(tmp, "x.npy"), data)
        script = textwrap.dedent(f"""
            import numpy as np, keras
            import keras_medseg.layers
            m = keras.saving.load_model({os.path.join(tmp, 'm.keras')!r})
            out = m.predict_on_batch(np.load({os.path.join(tmp, 'x.npy')!r}))
            np.save({os.path.join(tmp, 'y.npy')!r}, np.asarray(out))
            print(keras.backend.backend())
        """)
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-c", script], env=env, cwd=_REPO,
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(result.stdout.strip().splitlines()[-1], "jax")
        self.assertAllClose(np.load(os.path.join(tmp, "y.npy")), model.predict_on_batch(data),
                            atol=1e-4)
