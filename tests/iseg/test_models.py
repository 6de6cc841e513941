"""FocusNet-style iseg models: layout against the original's layer list, sizes, serialization."""
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.iseg.models import (
    build_focusnet3d,
    build_focusnet3d_model1,
    build_focusnet3d_model2,
)
from keras_medseg.layers import GroupedConvTranspose, SqueezeExcite


# Independent count of the original's trainable parameters (PyTorch layer list of
# I-seg_Focus src/model1.py / model2.py, leaving out modules its forward() never uses).
def _rb(cin, cout):  # conv1 (no bias) + BN + conv2 (bias) + shortcut conv (no bias) + BN
    return 27 * cin * cout + 2 * cout + 27 * cout * cout + cout + cin * cout + 2 * cout


def _up(cin, cout, groups):
    return 64 * cin * cout // groups


def _se(c):
    return 2 * c * (c // 16) + c // 16 + c


def _original_trainable(levels, groups=4, classes=4):
    n = 27 * 2 * 24  # initial_conv_block
    n += _rb(24, 32) + _rb(32, 64) + _rb(64, 64)  # pool1, conv2, pool2
    if levels == 3:
        n += _rb(64, 128) + _rb(128, 128) + _rb(128, 256)  # conv3, pool3, conv4
        n += _up(256, 128, groups) + _rb(256, 128)  # up_5, conv5
    else:
        n += _rb(64, 128)  # conv4
    n += _up(128, 128, groups) + _rb(192, 128) + _up(128, 64, groups) + _rb(88, 64)
    n += 343 * 2 * 64 + 64 + 2 * 64  # conv1r + bn1r
    n += 2 * _rb(64, 64) + _se(64) + _rb(64, 128) + _rb(128, 128) + _se(128)  # levels 1, 2
    if levels == 3:
        n += 2 * _rb(128, 128) + _se(128)  # block3, block30, se3
    n += 2 * _rb(128, 128) + _se(128)  # block4, block40, se4
    if levels == 3:
        n += _up(128, 128, groups) + _rb(256, 128)  # up2_5, conv2_5
    n += _up(128, 128, groups) + _rb(256, 128) + _up(128, 64, groups) + _rb(128, 64)
    n += _up(64, 32, groups) + _rb(96, 16) + _rb(16, 8) + _rb(8, 4)
    return n + 4 * classes + classes  # conv_class


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


_CONCATS = {
    2: {"gate_up2_concat": (32, 192), "gate_up1_concat": (64, 88),
        "focus_up2_concat": (16, 256), "focus_up1_concat": (32, 128),
        "focus_up0_concat": (64, 96)},
    3: {"gate_up3_concat": (16, 256), "gate_up2_concat": (32, 192),
        "gate_up1_concat": (64, 88), "focus_up3_concat": (8, 256),
        "focus_up2_concat": (16, 256), "focus_up1_concat": (32, 128),
        "focus_up0_concat": (64, 96)},
}


class FocusNetLayoutTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(2, 3)
    def test_concatenations_gates_and_parameters(self, levels):
        model = build_focusnet3d((64, 64, 64, 2), 4, levels=levels)
        self.assertEqual(model.name, f"focusnet3d_model{levels - 1}")
        concats = {l.name: (l.output.shape[1], l.output.shape[-1]) for l in model.layers
                   if l.name.endswith("_concat")}
        self.assertEqual(concats, _CONCATS[levels])
        for level, (size, channels) in enumerate([(64, 64), (32, 128), (16, 128)][:levels], 1):
            self.assertEqual(tuple(model.get_layer(f"gate{level}_add").output.shape),
                             (None,) + (size,) * 3 + (channels,))
            se = model.get_layer(f"focus{level}_se")
            self.assertIsInstance(se, SqueezeExcite)
            self.assertLen(se._inbound_nodes, 2)  # one SE, applied twice around the gate
            self.assertEqual((se.ratio, se.use_bias), (16, True))
        bottom = model.get_layer("focus_bottom_down_add").output.shape
        self.assertEqual(bottom[1:], (64 // 2 ** (levels + 1),) * 3 + (128,))
        self.assertEqual(tuple(model.output.shape), (None, 64, 64, 64, 4))
        self.assertEqual(model.get_layer("gate_bottom_dropout").rate, 0.2)
        self.assertEqual(model.get_layer("focus_up0_convt").groups, 4)
        self.assertEqual(_trainable(model), _original_trainable(levels))
        self.assertEqual(model.count_params(), {2: 8976708, 3: 17883468}[levels])

    def test_variants_and_options(self):
        model = build_focusnet3d_model2((None, None, None, 1), 3, up_groups=1, dropout=0.0,
                                        name="m")
        self.assertEqual(model.name, "m")
        self.assertEqual(model.output.shape[-1], 3)
        self.assertNotIsInstance(model.get_layer("focus_up0_convt"), GroupedConvTranspose)
        self.assertEqual(_trainable(model) - _trainable(build_focusnet3d_model2(
            (None, None, None, 1), 3, up_groups=4)), 0.75 * sum(
            _up(a, b, 1) for a, b in [(256, 128), (128, 128), (128, 64), (128, 128),
                                      (128, 128), (128, 64), (64, 32)]))
        self.assertEqual(build_focusnet3d_model1().name, "focusnet3d_model1")

    def test_errors(self):
        cases = [
            (dict(levels=4), "levels must be 2 or 3"),
            (dict(input_shape=(20, 16, 16, 2)), "multiples of 8 for levels=2"),
            (dict(input_shape=(8, 8, 8, 2), levels=3), "multiples of 16 for levels=3"),
            (dict(input_shape=(16, 16, 2)), r"input_shape must be \(D, H, W, channels\)"),
            (dict(input_shape=(16, 16, 16, 0)), "channels must be a positive"),
            (dict(num_classes=0), "num_classes must be a positive"),
            (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
            (dict(up_groups=3), "up_groups must be a positive divisor of 32"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs):
                with self.assertRaisesRegex(ValueError, message):
                    build_focusnet3d(**kwargs)


class FocusNetRunTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(2, 3)
    def test_tiny_forward_dynamic_sizes(self, levels):
        keras.utils.set_random_seed(0)
        model = build_focusnet3d((None, None, None, 2), 4, levels=levels)
        rng = np.random.default_rng(0)
        for shape in [(16, 16, 16), (16, 32, 16)]:
            out = model.predict_on_batch(rng.normal(size=(1,) + shape + (2,)).astype("float32"))
            self.assertEqual(out.shape, (1,) + shape + (4,))
            self.assertTrue(np.all(np.isfinite(out)))

    def test_keras_round_trip(self):
        keras.utils.set_random_seed(0)
        model = build_focusnet3d((16, 16, 16, 2), 4, levels=2)
        data = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 2)).astype("float32")
        expected = model.predict_on_batch(data)
        path = os.path.join(self.get_temp_dir(), "focusnet.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertAllClose(restored.predict_on_batch(data), expected, atol=1e-5)
        self.assertLen(restored.get_layer("focus1_se")._inbound_nodes, 2)
