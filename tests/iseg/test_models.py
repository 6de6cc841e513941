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


def _original_trainable(levels, groups=4, classes=4, channels=2, width=1.0):
    # With width < 1 every width except the head's 16/8/4 is scaled (c = 24, 32, 64, 128).
    a, b, c, d = (round(k * width) for k in (24, 32, 64, 128))
    n = 27 * channels * a  # initial_conv_block
    n += _rb(a, b) + _rb(b, c) + _rb(c, c)  # pool1, conv2, pool2
    if levels == 3:
        n += _rb(c, 2 * c) + _rb(2 * c, 2 * c) + _rb(2 * c, 4 * c)  # conv3, pool3, conv4
        n += _up(4 * c, d, groups) + _rb(2 * c + d, d)  # up_5, conv5
    else:
        n += _rb(c, 2 * c)  # conv4
    n += _up(2 * c if levels == 2 else d, d, groups) + _rb(c + d, d)  # up_6, conv6
    n += _up(d, c, groups) + _rb(a + c, c)  # up_7, conv7
    n += 343 * channels * c + c + 2 * c  # conv1r + bn1r
    n += 2 * _rb(c, c) + _se(c) + _rb(c, d) + _rb(d, d) + _se(d)  # levels 1, 2
    if levels == 3:
        n += 2 * _rb(d, d) + _se(d)  # block3, block30, se3
    n += 2 * _rb(d, d) + _se(d)  # block4, block40, se4
    if levels == 3:
        n += _up(d, d, groups) + _rb(2 * d, d)  # up2_5, conv2_5
    n += _up(d, d, groups) + _rb(2 * d, d) + _up(d, c, groups) + _rb(2 * c, c)
    n += _up(c, b, groups) + _rb(c + b, 16) + _rb(16, 8) + _rb(8, 4)
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
            (dict(width=0), "width must be a positive number"),
            (dict(width=True), "width must be a positive number"),
            (dict(width=0.2), r"leaves 13 channels at the squeeze-excite blocks.*width >= 0.25"),
            (dict(width=0.3), r"up_groups=4 must divide .* width=0.3 gives \[10, 19, 38\]"),
            (dict(width=0.75, levels=3, up_groups=32), r"gives \[24, 48\]"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs):
                with self.assertRaisesRegex(ValueError, message):
                    build_focusnet3d(**kwargs)


class FocusNetWidthTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((2, 0.25), (3, 0.25), (2, 0.5), (3, 0.75))
    def test_scaled_widths_and_parameters(self, levels, width):
        model = build_focusnet3d((None, None, None, 1), 4, levels=levels, width=width)
        self.assertEqual(_trainable(model),
                         _original_trainable(levels, channels=1, width=width))
        self.assertLess(model.count_params(),
                        build_focusnet3d((None, None, None, 1), 4, levels=levels)
                        .count_params())
        c = round(64 * width)
        self.assertEqual(model.get_layer("gate1_add").output.shape[-1], c)
        self.assertEqual(model.get_layer("focus_stem_conv").filters, c)
        self.assertEqual(model.get_layer("head1_add").output.shape[-1], 16)  # head not scaled
        self.assertEqual(model.get_layer("focus_up0_convt").filters, round(32 * width))

    def test_width_one_is_the_original(self):
        self.assertEqual(build_focusnet3d((64, 64, 64, 2), 4, width=1.0).count_params(),
                         8976708)

    def test_narrow_forward_and_round_trip(self):
        keras.utils.set_random_seed(0)
        model = build_focusnet3d((None, None, None, 1), 4, width=0.25)
        data = np.random.default_rng(2).normal(size=(2, 16, 24, 16, 1)).astype("float32")
        expected = model.predict_on_batch(data)
        self.assertEqual(expected.shape, (2, 16, 24, 16, 4))
        self.assertTrue(np.all(np.isfinite(expected)))
        path = os.path.join(self.get_temp_dir(), "narrow.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertEqual(restored.count_params(), model.count_params())
        self.assertAllClose(restored.predict_on_batch(data), expected, atol=1e-5)


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
