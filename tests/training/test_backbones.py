"""Backbone registry: layer names resolve in the real keras.applications models, preprocessing
matches keras, weights are validated before building, offline "imagenet" fails helpfully."""
import os
import socket
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg import backbones
from keras_medseg.backbones import (
    BACKBONES,
    BackbonePreprocessing,
    build_backbone,
    build_feature_extractor,
    get_backbone_spec,
    imagenet_weights_location,
    resolve_layer,
)

# (name, input size, builder kwargs); the big ones are marked slow below.
_FAST = [("vgg19", 64, {}), ("resnet50", 64, {}), ("resnet50v2", 64, {}),
         ("mobilenet", 64, {"alpha": 0.25}),
         ("mobilenetv2", 64, {"alpha": 0.35}), ("xception", 96, {}), ("efficientnetb0", 64, {})]
_SLOW = [("densenet121", 64, {}), ("resnet101v2", 64, {}), ("resnet152v2", 64, {}), ("densenet169", 64, {}),
         ("densenet201", 64, {})]

# The nerve original's fine-tune table (ORIGINALS.md): Keras 3 index of the registered layer.
# MobileNetV2: TF 2.3 index 150 is one more than Keras 3's (TF 2.3 had Conv1_pad).
_KERAS3_INDEX = {"densenet169": 565, "densenet201": 670, "resnet50v2": 180,
                 "resnet101v2": 360, "resnet152v2": 555, "mobilenetv2": 149}


class RegistryLayersTest(tf.test.TestCase, parameterized.TestCase):

    def _check(self, name, size, kwargs):
        spec = get_backbone_spec(name)
        model = build_backbone(name, (size, size, 3), **kwargs)
        names = [la.name for la in model.layers]
        if spec.fine_tune_at is not None:
            self.assertIn(spec.fine_tune_at, names)
            if name in _KERAS3_INDEX:
                self.assertEqual(names.index(spec.fine_tune_at), _KERAS3_INDEX[name])
            if spec.original_fine_tune_index is not None and name != "mobilenetv2":
                self.assertEqual(names.index(spec.fine_tune_at), spec.original_fine_tune_index)
        if name == "efficientnetb0":  # brainview: the last 5 layers train
            self.assertEqual(names.index(spec.fine_tune_at), len(names) - 5)
        # Feature level Pk sits at stride 2**k (valid-padding nets within 3 pixels).
        for level, layer_name in spec.features.items():
            k = int(level[1:])
            h = model.get_layer(layer_name).output.shape[1]
            self.assertLessEqual(abs(h - size / 2 ** k), 3, msg=f"{name} {level} {layer_name}")
            if spec.name != "xception":
                self.assertEqual(h, size // 2 ** k, msg=f"{name} {level} {layer_name}")
        return model

    @parameterized.named_parameters((n, n, s, kw) for n, s, kw in _FAST)
    def test_registered_layers_exist(self, name, size, kwargs):
        self._check(name, size, kwargs)

    @pytest.mark.slow
    def test_registered_layers_exist_large_models(self):
        for name, size, kwargs in _SLOW:
            self._check(name, size, kwargs)

    def test_table_entries(self):
        expected = {"densenet169": ("conv5_block29_0_bn", 20), "densenet201": ("conv5_block28_0_bn", 20),
                    "mobilenetv2": ("block_16_project", 15), "resnet50v2": ("conv5_block3_1_bn", 15),
                    "resnet101v2": ("conv5_block2_2_bn", 15), "resnet152v2": ("conv5_block3_1_relu", 15),
                    "efficientnetb0": ("block7a_project_conv", 10)}
        for name, (layer, epochs) in expected.items():
            spec = BACKBONES[name]
            self.assertEqual((spec.fine_tune_at, spec.fine_tune_epochs), (layer, epochs))
        self.assertEqual(dict(BACKBONES["mobilenetv2"].features),
                         {"P1": "block_1_expand_relu", "P2": "block_3_expand_relu",
                          "P3": "block_6_expand_relu", "P4": "block_13_expand_relu",
                          "P5": "block_16_project"})

    def test_unknown_name_suggests(self):
        with self.assertRaisesRegex(ValueError, "mobilenetv2"):
            get_backbone_spec("mobilenet_v2")
        with self.assertRaisesRegex(ValueError, "registry name"):
            get_backbone_spec(3)

    def test_feature_extractor(self):
        fx = build_feature_extractor("mobilenetv2", (64, 64, 3), alpha=0.35,
                                     levels=("P2", "P5"))
        out = fx(np.zeros((1, 64, 64, 3), "float32"))
        self.assertEqual(set(out), {"P2", "P5"})
        self.assertEqual(tuple(out["P2"].shape[1:3]), (16, 16))
        self.assertEqual(tuple(out["P5"].shape), (1, 2, 2, 112))  # block_16_project, alpha 0.35
        with self.assertRaisesRegex(ValueError, "levels"):
            build_feature_extractor("mobilenetv2", (64, 64, 3), levels=("P9",))
        with self.assertRaisesRegex(ValueError, "no feature layers"):
            build_feature_extractor("inceptionv3", (96, 96, 3))


class PreprocessingTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("vgg19", "densenet121", "mobilenetv2", "efficientnetb0")
    def test_matches_keras_preprocess_input(self, name):
        spec = BACKBONES[name]
        x = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")
        expected = spec.preprocess_input(x.copy())
        got = BackbonePreprocessing(spec.preprocessing)(x)
        self.assertAllClose(got, expected, atol=1e-4)

    def test_config_round_trip_and_bad_mode(self):
        layer = BackbonePreprocessing("caffe", name="p")
        again = BackbonePreprocessing.from_config(layer.get_config())
        self.assertEqual(again.mode, "caffe")
        with self.assertRaisesRegex(ValueError, "mode"):
            BackbonePreprocessing("bgr")


class WeightsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.home = Path(self.get_temp_dir()) / f"keras_home_{self._testMethodName}"
        (self.home / "models").mkdir(parents=True, exist_ok=True)

    def _env(self, **extra):
        return mock.patch.dict(os.environ, {"KERAS_HOME": str(self.home),
                                            "KERAS_MEDSEG_OFFLINE": "1", **extra})

    def test_expected_file_names(self):
        from keras.src.applications import densenet, efficientnet, resnet

        with self._env():
            cases = {("mobilenetv2", (96, 96, 3), 0.35):
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5",
                     ("mobilenetv2", (64, 64, 3), 1.0):  # keras falls back to the 224 file
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                     ("densenet169", None, None):
                     densenet.DENSENET169_WEIGHT_PATH_NO_TOP.rsplit("/", 1)[1],
                     ("resnet50v2", None, None):
                     "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     ("efficientnetb0", None, None): "efficientnetb0_notop.h5"}
            for (name, shape, alpha), file_name in cases.items():
                kwargs = {} if alpha is None else {"alpha": alpha}
                path, url = imagenet_weights_location(name, shape, **kwargs)
                self.assertEqual(path, self.home / "models" / file_name)
                self.assertTrue(url.endswith("/" + file_name))
            _, url = imagenet_weights_location("resnet50v2")
            self.assertTrue(url.startswith(resnet.BASE_WEIGHTS_PATH))
            _, url = imagenet_weights_location("efficientnetb0")
            self.assertTrue(url.startswith(efficientnet.BASE_WEIGHTS_PATH))
            with self.assertRaisesRegex(ValueError, "alpha"):
                imagenet_weights_location("mobilenetv2", alpha=0.6)

    def test_imagenet_offline_message(self):
        with self._env():
            with self.assertRaises(FileNotFoundError) as ctx:
                build_backbone("mobilenetv2", (96, 96, 3), weights="imagenet", alpha=0.35)
        message = str(ctx.exception)
        self.assertIn("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5", message)
        self.assertIn(str(self.home / "models"), message)
        self.assertIn("KERAS_MEDSEG_OFFLINE", message)
        self.assertIn("https://", message)

    def test_imagenet_from_cache(self):
        source = build_backbone("mobilenetv2", (96, 96, 3), alpha=0.35)
        path, _ = imagenet_weights_location("mobilenetv2", (96, 96, 3), alpha=0.35)
        target = self.home / "models" / path.name
        with self._env():
            source.save(str(target))  # keras' legacy .h5 layout, like the real files
            model = build_backbone("mobilenetv2", (96, 96, 3), weights="imagenet", alpha=0.35)
        for a, b in zip(source.weights, model.weights):
            self.assertAllEqual(a.numpy(), b.numpy())

    def test_weights_from_file(self):
        source = build_backbone("mobilenetv2", (32, 32, 3), alpha=0.35)
        path = os.path.join(self.get_temp_dir(), "enc.weights.h5")
        source.save_weights(path)
        model = build_backbone("mobilenetv2", (32, 32, 3), weights=Path(path), alpha=0.35)
        for a, b in zip(source.weights, model.weights):
            self.assertAllEqual(a.numpy(), b.numpy())

    def test_weights_validated_before_building(self):
        missing = os.path.join(self.get_temp_dir(), "missing.weights.h5")
        with mock.patch.object(keras.applications, "MobileNetV2") as builder:
            with self.assertRaisesRegex(FileNotFoundError, "missing.weights.h5"):
                build_backbone("mobilenetv2", (32, 32, 3), weights=missing)
            txt = os.path.join(self.get_temp_dir(), "w.txt")
            Path(txt).write_text("x")
            with self.assertRaisesRegex(ValueError, "w.txt"):
                build_backbone("mobilenetv2", (32, 32, 3), weights=txt)
            with self.assertRaisesRegex(ValueError, "weights must be"):
                build_backbone("mobilenetv2", (32, 32, 3), weights=3)
            with self.assertRaisesRegex(ValueError, "3 input channels"):
                build_backbone("mobilenetv2", (32, 32, 1), weights="imagenet")
            with self.assertRaisesRegex(ValueError, "include_top"):
                build_backbone("mobilenetv2", (32, 32, 3), include_top=True)
            with self.assertRaisesRegex(ValueError, "input_shape"):
                build_backbone("mobilenetv2", (32, 32))
            builder.assert_not_called()

    def test_network_check_fails_fast_on_closed_port(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.assertFalse(backbones._network_available("127.0.0.1", port, timeout=1.0))


class ResolveLayerTest(tf.test.TestCase):

    def test_name_index_and_errors(self):
        inp = keras.Input((4,))
        out = keras.layers.Dense(2, name="dense_a")(keras.layers.Dense(3, name="dense_b")(inp))
        model = keras.Model(inp, out)
        self.assertIs(resolve_layer(model, "dense_a"), model.layers[2])
        self.assertIs(resolve_layer(model, 1), model.layers[1])
        self.assertIs(resolve_layer(model, -1), model.layers[2])
        with self.assertRaisesRegex(ValueError, "out of range"):
            resolve_layer(model, 3)
        with self.assertRaisesRegex(ValueError, "dense_a"):
            resolve_layer(model, "dense_c")
        with self.assertRaisesRegex(ValueError, "name .* or an index"):
            resolve_layer(model, 1.5)
        with self.assertRaisesRegex(ValueError, "name .* or an index"):
            resolve_layer(model, True)
