"""Nerve segmentation builders: layout against the original's tables, independent parameter
counts, atrous rewrite equivalence, serialization, one training step, error paths."""
import os
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.backbones import build_backbone
from keras_medseg.metrics import bce_dice_loss
from keras_medseg.nerve.segmentation_models import (
    build_deeplabv3plus,
    build_doubleunet,
    build_unet_mobilenetv2,
    dilate_backbone,
    doubleunet_preprocess,
)


def _n_params(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def _image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


def _round_trip(test, model, x):
    path = os.path.join(test.get_temp_dir(), f"{model.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    test.assertAllClose(model(x, training=False), loaded(x, training=False),
                        rtol=1e-5, atol=1e-5)
    return loaded


# --------------------------------------------------------------------------------------------
# U-Net with the MobileNetV2 encoder
# --------------------------------------------------------------------------------------------
# ORIGINALS.md section 1: skip layers of the nerve U-Net at 224x224 (name, shape).
_UNET_SKIPS_224 = {
    "P1": ("block_1_expand_relu", (112, 112, 96)),
    "P2": ("block_3_expand_relu", (56, 56, 144)),
    "P3": ("block_6_expand_relu", (28, 28, 192)),
    "P4": ("block_13_expand_relu", (14, 14, 576)),
    "P5": ("block_16_project", (7, 7, 320)),
}


def _unet_decoder_params(bottleneck, skips, num_classes):
    """Trainable parameters of the pix2pix decoder: ConvT 3x3 (no bias) + BN gamma/beta per
    upsample block, last ConvT 3x3 with bias."""
    n, cin = 0, bottleneck
    for f, skip in zip((512, 256, 128, 64), skips):
        n += 9 * cin * f + 2 * f
        cin = f + skip
    return n + 9 * cin * num_classes + num_classes


class UNetMobileNetV2Test(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1)

    def test_skip_layers_and_shapes_at_224(self):
        model = build_unet_mobilenetv2((224, 224, 3), 2)
        self.assertEqual(tuple(model.output.shape), (None, 224, 224, 2))
        encoder = model.get_layer("encoder")
        for level, (layer_name, shape) in _UNET_SKIPS_224.items():
            self.assertEqual(tuple(encoder.output[level].shape[1:]), shape, level)
            self.assertIs(encoder.output[level], encoder.get_layer(layer_name).output)
        # decoder: concat channels = upsample filters + skip channels
        for i, (f, level) in enumerate(zip((512, 256, 128, 64), ("P4", "P3", "P2", "P1")), 1):
            concat = model.get_layer(f"decoder_up{i}_concat").output
            self.assertEqual(concat.shape[-1], f + _UNET_SKIPS_224[level][1][-1])

    def test_frozen_encoder_trains_decoder_only(self):
        frozen = build_unet_mobilenetv2((64, 64, 3), 2)
        self.assertFalse(frozen.get_layer("encoder").trainable)
        self.assertEqual(frozen.get_layer("encoder").trainable_weights, [])
        self.assertEqual(_n_params(frozen.trainable_weights),
                         _unet_decoder_params(320, (576, 192, 144, 96), 2))
        unfrozen = build_unet_mobilenetv2((64, 64, 3), 2, freeze_encoder=False)
        encoder = unfrozen.get_layer("encoder")
        self.assertEqual(_n_params(unfrozen.trainable_weights),
                         _unet_decoder_params(320, (576, 192, 144, 96), 2)
                         + _n_params(encoder.trainable_weights))
        self.assertGreater(_n_params(encoder.trainable_weights), 0)

    def test_decoder_layers_follow_pix2pix(self):
        model = build_unet_mobilenetv2((64, 64, 3), 3, dropout=0.2)
        convt = model.get_layer("decoder_up1_convt")
        self.assertEqual((convt.filters, convt.kernel_size, convt.strides, convt.use_bias),
                         (512, (3, 3), (2, 2), False))
        self.assertAllClose(convt.kernel_initializer.stddev, 0.02)
        self.assertAllClose(model.get_layer("decoder_up4_dropout").rate, 0.2)
        last = model.get_layer("logits")
        self.assertEqual((last.filters, last.kernel_size, last.strides, last.use_bias),
                         (3, (3, 3), (2, 2), True))
        self.assertEqual(tuple(model.output.shape), (None, 64, 64, 3))
        no_dropout = build_unet_mobilenetv2((64, 64, 3), 2, dropout=0.0)
        self.assertNotIn("decoder_up1_dropout", [la.name for la in no_dropout.layers])

    def test_input_scaled_to_mobilenet_range_inside_model(self):
        model = build_unet_mobilenetv2((32, 32, 3), 2)
        scaled = keras.Model(model.input, model.get_layer("preprocess").output)
        x = np.zeros((1, 32, 32, 3), "float32")
        x[0, 0, 0] = 255.0
        y = keras.ops.convert_to_numpy(scaled(x))
        self.assertAllClose(y[0, 0, 0], [1.0, 1.0, 1.0])
        self.assertAllClose(y[0, 1, 1], [-1.0, -1.0, -1.0])
        # uint8 input gives the same logits as float input
        img = _image((1, 32, 32, 3)).round()
        self.assertAllClose(model(img.astype("uint8")), model(img), atol=1e-5)

    def test_other_registry_encoder(self):
        model = build_unet_mobilenetv2((64, 64, 3), 2, encoder="mobilenet")
        self.assertEqual(tuple(model.output.shape), (None, 64, 64, 2))
        encoder = model.get_layer("encoder")
        self.assertIs(encoder.output["P4"], encoder.get_layer("conv_pw_11_relu").output)
        self.assertEqual(_n_params(model.trainable_weights),
                         _unet_decoder_params(1024, (512, 256, 128, 64), 2))

    def test_train_step_and_round_trip(self):
        model = build_unet_mobilenetv2((32, 32, 3), 2)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)  # one step: tracing would cost far more than it
        x = _image((2, 32, 32, 3))
        y = (np.random.default_rng(1).random((2, 32, 32)) > 0.5).astype("int32")
        encoder_before = [w.copy() for w in model.get_layer("encoder").get_weights()]
        decoder_before = model.get_layer("decoder_up4_convt").get_weights()[0].copy()
        loss = model.train_on_batch(x, y)
        self.assertTrue(np.isfinite(loss))
        for before, after in zip(encoder_before, model.get_layer("encoder").get_weights()):
            self.assertAllEqual(before, after)
        self.assertNotAllClose(decoder_before,
                               model.get_layer("decoder_up4_convt").get_weights()[0])
        loaded = _round_trip(self, model, x)
        self.assertFalse(loaded.get_layer("encoder").trainable)

    @parameterized.named_parameters(
        ("not_divisible", dict(input_shape=(48, 64, 3)), "input_shape"),
        ("bad_shape", dict(input_shape=(64, 64)), "input_shape"),
        ("num_classes", dict(num_classes=0), "num_classes"),
        ("dropout", dict(dropout=1.0), "dropout"),
        ("unknown_encoder", dict(encoder="mobilenetv9"), "backbone"),
        ("encoder_without_features", dict(encoder="inceptionv3"), "encoder"),
        ("weights_type", dict(encoder_weights=3), "encoder_weights"),
    )
    def test_errors(self, kwargs, word):
        args = dict(input_shape=(64, 64, 3), num_classes=2)
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, word):
            build_unet_mobilenetv2(args.pop("input_shape"), args.pop("num_classes"), **args)

    def test_valid_padding_encoder_rejected(self):
        with self.assertRaisesRegex(ValueError, "encoder 'xception' gives P1 feature maps"):
            build_unet_mobilenetv2((96, 96, 3), 2, encoder="xception")

    def test_imagenet_offline_error(self):
        home = self.get_temp_dir()
        with mock.patch.dict(os.environ, {"KERAS_HOME": home, "KERAS_MEDSEG_OFFLINE": "1"}):
            with self.assertRaisesRegex(
                    FileNotFoundError,
                    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"):
                build_unet_mobilenetv2((224, 224, 3), 2, encoder_weights="imagenet")


# --------------------------------------------------------------------------------------------
# DoubleU-Net
# --------------------------------------------------------------------------------------------
def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c):  # gamma, beta, moving mean, moving variance
    return 4 * c


def _conv_block(cin, f, bias):
    se = f * (f // 8) * 2
    return _conv(3, cin, f, bias) + _bn(f) + _conv(3, f, f, bias) + _bn(f) + se


def _aspp(cin, f):
    n = _conv(1, cin, f, True) + _bn(f)  # image pooling branch (conv with bias)
    n += _conv(1, cin, f, False) + _bn(f)
    n += 3 * (_conv(3, cin, f, False) + _bn(f))
    return n + _conv(1, 5 * f, f, False) + _bn(f)


def _doubleunet_params(conv_block_bias):
    """All parameters of the original DoubleU-Net (Jha et al. 2020 code), counted by hand."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 3 \
        + [(256, 512)] + [(512, 512)] * 7
    n = sum(_conv(3, a, b) for a, b in vgg)
    vgg_skips = (512, 256, 128, 64)  # block4_conv4, block3_conv4, block2_conv2, block1_conv2
    n += _aspp(512, 64)
    cin = 64
    for f, skip in zip((256, 128, 64, 32), vgg_skips):
        n += _conv_block(cin + skip, f, conv_block_bias)
        cin = f
    n += _conv(1, 32, 1)
    cin = 3
    for f in (32, 64, 128, 256):
        n += _conv_block(cin, f, conv_block_bias)
        cin = f
    n += _aspp(256, 64)
    cin = 64
    for f, skip1, skip2 in zip((256, 128, 64, 32), vgg_skips, (256, 128, 64, 32)):
        n += _conv_block(cin + skip1 + skip2, f, conv_block_bias)
        cin = f
    return n + _conv(1, 32, 1)


class DoubleUNetTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(2)

    def test_parameter_count_at_224(self):
        model = build_doubleunet((224, 224, 3))
        self.assertEqual(tuple(model.output.shape), (None, 224, 224, 2))
        self.assertEqual(tuple(model.get_layer("encoder1").output["P4"].shape), (None, 14, 14, 512))
        # ours = the original minus the redundant conv_block biases in front of BatchNorm
        self.assertEqual(model.count_params(), _doubleunet_params(conv_block_bias=False))
        self.assertEqual(_doubleunet_params(True) - _doubleunet_params(False), 2880)
        self.assertAllClose(model.count_params() / 29.3e6, 1.0, atol=0.01)

    def test_layout_and_outputs(self):
        model = build_doubleunet((32, 32, 3))
        encoder = model.get_layer("encoder1")
        for level, name in zip(("P0", "P1", "P2", "P3", "P4"),
                               ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4",
                                "block5_conv4")):
            self.assertIs(encoder.output[level], encoder.get_layer(name).output)
        self.assertEqual(model.get_layer("decoder2_up1_concat").output.shape[-1], 64 + 512 + 256)
        self.assertEqual(model.get_layer("decoder2_up4_concat").output.shape[-1], 64 + 64 + 32)
        self.assertEqual(model.get_layer("decoder1_block1_se").ratio, 8)
        self.assertEqual(model.get_layer("aspp2_project_conv").filters, 64)
        # output = concat[output1, output2]; network 2 sees input * output1
        probe = keras.Model(model.input, [model.get_layer("output1").output,
                                          model.get_layer("masked_input").output, model.output])
        x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
        out1, masked, out = (keras.ops.convert_to_numpy(t) for t in probe(x))
        self.assertAllClose(out[..., :1], out1)
        self.assertAllClose(masked, x * out1, rtol=1e-6)
        self.assertTrue(np.all((out >= 0) & (out <= 1)))

    def test_train_step_and_round_trip(self):
        model = build_doubleunet((32, 32, 3))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=bce_dice_loss,
                      run_eagerly=True)  # one step: tracing would cost far more than it
        x = np.random.default_rng(3).random((2, 32, 32, 3)).astype("float32")
        y = (np.random.default_rng(4).random((2, 32, 32, 1)) > 0.5).astype("float32")
        before = model.get_layer("output2_conv").get_weights()[0].copy()
        loss = model.train_on_batch(x, np.concatenate([y, y], axis=-1))
        self.assertTrue(np.isfinite(loss))
        self.assertNotAllClose(before, model.get_layer("output2_conv").get_weights()[0])
        _round_trip(self, model, x)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "input_shape"):
            build_doubleunet((40, 48, 3))
        with self.assertRaisesRegex(ValueError, "encoder_weights"):
            build_doubleunet((32, 32, 3), encoder_weights=1.5)
        with mock.patch.dict(os.environ, {"KERAS_HOME": self.get_temp_dir(),
                                          "KERAS_MEDSEG_OFFLINE": "1"}):
            with self.assertRaisesRegex(FileNotFoundError, "vgg19.*notop.h5"):
                build_doubleunet((224, 224, 3), encoder_weights="imagenet")


class DoubleUNetPreprocessTest(tf.test.TestCase):

    def test_hand_example(self):
        image = np.array([[[0], [100], [200]]], dtype=np.uint8)  # median 100
        expected = np.array([27, 127, 227], np.float32) / 255
        out = doubleunet_preprocess(image)
        self.assertEqual(out.dtype, np.float32)
        self.assertAllClose(out.ravel(), expected)
        self.assertAllEqual(image.ravel(), [0, 100, 200])  # input untouched, no uint8 wrap

    def test_clipping_and_per_image_median_in_batch(self):
        rng = np.random.default_rng(5)
        batch = rng.integers(0, 256, size=(3, 5, 4, 3)).astype(np.uint8)
        batch[1] = 250  # constant image: everything maps to 127
        batch[2, 0, 0, 0] = 0
        out = doubleunet_preprocess(batch)
        for i in range(3):
            img = batch[i].astype(np.float64)
            ref = np.minimum(np.maximum(img - np.median(img) + 127, 0), 255) / 255
            self.assertAllClose(out[i], ref, atol=1e-6)
            self.assertAllClose(doubleunet_preprocess(batch[i]), ref, atol=1e-6)
        self.assertAllClose(out[1], np.full((5, 4, 3), 127 / 255))

    def test_tensor_path_matches_numpy(self):
        batch = np.random.default_rng(6).integers(0, 256, size=(2, 6, 7, 3)).astype(np.uint8)
        out = keras.ops.convert_to_numpy(doubleunet_preprocess(tf.constant(batch)))
        self.assertAllClose(out, doubleunet_preprocess(batch), atol=1e-6)
        ds = tf.data.Dataset.from_tensor_slices(batch).map(doubleunet_preprocess)
        for got, image in zip(ds, batch):
            self.assertAllClose(got.numpy(), doubleunet_preprocess(image), atol=1e-6)

    def test_bad_rank(self):
        with self.assertRaisesRegex(ValueError, "image must have 3"):
            doubleunet_preprocess(np.zeros((4, 4)))


# --------------------------------------------------------------------------------------------
# DeepLabV3+
# --------------------------------------------------------------------------------------------
def _randomize(model, rng):
    """He-scaled kernels and near-identity BatchNorm statistics, so that signals keep their
    scale and spatial structure through an untrained deep backbone (keras' default init
    fades them to ~1e-8 in MobileNetV2)."""
    for layer in model.layers:
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        for w in layer.weights:
            shape, leaf = tuple(w.shape), w.path.rsplit("/", 1)[-1]
            if "kernel" in leaf:
                fan_in = np.prod(shape[:2]) * (1 if depthwise else shape[2])
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif leaf in ("gamma", "moving_variance"):
                value = rng.uniform(0.8, 1.2, shape)
            else:  # beta, moving_mean, bias: no constant offsets that would swamp the signal
                value = np.zeros(shape)
            w.assign(value.astype("float32"))


class DilateBackboneTest(tf.test.TestCase, parameterized.TestCase):
    """The atrous rewrite is the original network sampled densely: dilated[::s, ::s] equals
    the stride-32 network's output, with the same weights (inference mode)."""

    @parameterized.named_parameters(
        ("mobilenetv2_os16", "mobilenetv2", "block_16_project", 16),
        ("mobilenetv2_os8", "mobilenetv2", "block_16_project", 8),
        ("resnet50_os16", "resnet50", "conv5_block3_out", 16),
    )
    def test_dense_sampling_equivalence(self, name, layer, output_stride):
        keras.utils.set_random_seed(7)
        base = build_backbone(name, (64, 64, 3))
        _randomize(base, np.random.default_rng(8))
        dilated = dilate_backbone(base, output_stride)
        x = np.random.default_rng(9).normal(size=(1, 64, 64, 3)).astype("float32")
        ref = keras.ops.convert_to_numpy(
            keras.Model(base.input, base.get_layer(layer).output)(x))
        got = keras.ops.convert_to_numpy(
            keras.Model(dilated.input, dilated.get_layer(layer).output)(x))
        # the check is only meaningful on a map that varies in space
        self.assertGreater(ref.std(axis=(1, 2)).mean(), 0.1 * np.abs(ref).mean())
        step = 32 // output_stride
        self.assertEqual(got.shape[1:3], (64 // output_stride,) * 2)
        scale = np.abs(ref).max()
        self.assertGreater(scale, 1e-2)
        self.assertAllClose(got[:, ::step, ::step], ref, rtol=1e-4, atol=1e-5 * scale)
        # off the grid the dense map holds new values, not copies of the coarse ones
        off_grid = np.abs(got[:, 1::step, 1::step] - ref).max()
        self.assertGreater(off_grid, 1e-2 * scale)
        # the input model is untouched
        self.assertEqual(base.get_layer(layer).output.shape[1], 2)

    def test_mobilenetv2_rewrite(self):
        base = build_backbone("mobilenetv2", (64, 64, 3))
        dilated = dilate_backbone(base, 8)
        self.assertEqual(dilated.get_layer("block_6_depthwise").strides, (1, 1))
        self.assertEqual(dilated.get_layer("block_6_pad").padding, ((0, 2), (0, 2)))
        self.assertEqual(dilated.get_layer("block_7_depthwise").dilation_rate, (2, 2))
        self.assertEqual(dilated.get_layer("block_13_depthwise").dilation_rate, (2, 2))
        self.assertEqual(dilated.get_layer("block_13_pad").padding, ((0, 4), (0, 4)))
        self.assertEqual(dilated.get_layer("block_16_depthwise").dilation_rate, (4, 4))
        self.assertEqual(dilated.get_layer("block_3_depthwise").strides, (2, 2))
        self.assertEqual(dilated.count_params(), base.count_params())
        self.assertIs(dilate_backbone(base, 32), base)

    def test_bad_output_stride(self):
        base = build_backbone("mobilenetv2", (32, 32, 3))
        for bad in (12, 1, 16.0):
            with self.assertRaisesRegex(ValueError, "output_stride"):
                dilate_backbone(base, bad)


class DeepLabV3PlusTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(3)

    @parameterized.named_parameters(
        ("mobilenetv2_os16", "mobilenetv2", 16, 64, 144, 320),
        ("mobilenetv2_os8", "mobilenetv2", 8, 64, 144, 320),
        ("xception_os16", "xception", 16, 96, 256, 2048),
    )
    def test_shapes(self, backbone, output_stride, size, low_channels, high_channels):
        model = build_deeplabv3plus((size, size, 3), 3, backbone=backbone,
                                    output_stride=output_stride)
        self.assertEqual(tuple(model.output.shape), (None, size, size, 3))
        features = model.get_layer("backbone").output
        self.assertEqual(features["P5"].shape[1:], (size // output_stride,) * 2 + (high_channels,))
        self.assertEqual(features["P2"].shape[-1], low_channels)
        self.assertEqual(model.get_layer("decoder_low_level_conv").filters, 48)
        self.assertEqual(model.get_layer("decoder_concat").output.shape[-1], 256 + 48)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        for r in rates:
            self.assertEqual(model.get_layer(f"aspp_rate{r}_conv").dilation_rate, (r, r))
        if backbone == "xception":  # exit flow: pooling stride removed, block14 dilated
            base = model.get_layer("backbone")
            self.assertEqual(base.get_layer("block13_pool").strides, (1, 1))
            self.assertEqual(base.get_layer("block14_sepconv1").dilation_rate, (2, 2))
            self.assertEqual(base.get_layer("block4_pool").strides, (2, 2))
        y = keras.ops.convert_to_numpy(model(_image((1, size, size, 3))))
        self.assertEqual(y.shape, (1, size, size, 3))
        self.assertTrue(np.all(np.isfinite(y)))

    @pytest.mark.slow
    def test_resnet50_os8(self):
        model = build_deeplabv3plus((64, 64, 3), 2, backbone="resnet50", output_stride=8)
        features = model.get_layer("backbone").output
        self.assertEqual(features["P5"].shape[1:], (8, 8, 2048))
        self.assertEqual(features["P2"].shape[1:], (16, 16, 256))
        self.assertEqual(model.get_layer("preprocess").mode, "caffe")
        self.assertEqual(tuple(model.output.shape), (None, 64, 64, 2))

    def test_train_step_and_round_trip(self):
        model = build_deeplabv3plus((64, 64, 3), 3, backbone="mobilenetv2", output_stride=8)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)  # one step: tracing would cost far more than it
        x = _image((2, 64, 64, 3))
        y = np.random.default_rng(2).integers(0, 3, size=(2, 64, 64)).astype("int32")
        before = model.get_layer("logits_conv").get_weights()[0].copy()
        self.assertTrue(np.isfinite(model.train_on_batch(x, y)))
        self.assertNotAllClose(before, model.get_layer("logits_conv").get_weights()[0])
        _round_trip(self, model, x)

    @parameterized.named_parameters(
        ("backbone", dict(backbone="vgg16"), "backbone"),
        ("output_stride", dict(output_stride=32), "output_stride"),
        ("output_stride_float", dict(output_stride=16.0), "output_stride"),
        ("not_divisible", dict(input_shape=(72, 64, 3)), "input_shape"),
        ("not_divisible_os8", dict(input_shape=(36, 64, 3), output_stride=8), "input_shape"),
        ("num_classes", dict(num_classes=0), "num_classes"),
        ("rates", dict(atrous_rates=(6, 12)), "atrous_rates"),
        ("rates_type", dict(atrous_rates=(6, 12, 0)), "atrous_rates"),
        ("dropout", dict(dropout=-0.1), "dropout"),
        ("weights_type", dict(encoder_weights=0), "encoder_weights"),
    )
    def test_errors(self, kwargs, word):
        args = dict(input_shape=(64, 64, 3), num_classes=3, backbone="mobilenetv2")
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, word):
            build_deeplabv3plus(args.pop("input_shape"), args.pop("num_classes"), **args)

    def test_imagenet_offline_error(self):
        with mock.patch.dict(os.environ, {"KERAS_HOME": self.get_temp_dir(),
                                          "KERAS_MEDSEG_OFFLINE": "1"}):
            with self.assertRaisesRegex(FileNotFoundError, "resnet50.*notop.h5.*weights=None"):
                build_deeplabv3plus((64, 64, 3), 3, backbone="resnet50",
                                    encoder_weights="imagenet")
