"""Tests of the 3D-SSM networks: shapes, parameter counts against hand formulas, an LSTM
NumPy reference, .keras round trips and the frozen inference-mode sub-models of the
assembled model."""
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.neurotrace import models as M


def resnet10_params(width=1.0, in_channels=1, num_classes=2):
    """Parameters of the 3D-ResNet-10 counted by hand (BN: gamma, beta, mean, variance)."""
    f = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    total = 27 * in_channels * f[0] + 4 * f[0]  # stem conv (no bias) + BN
    c_in = f[0]
    for c in f:
        total += 27 * c_in * c + 27 * c * c + 2 * 4 * c  # two 3x3x3 convs + two BNs
        if c != c_in:
            total += c_in * c + 4 * c  # 1x1x1 shortcut conv + BN
        c_in = c
    return total + c_in * num_classes + num_classes


def lstm_params(n_in, units):
    return 4 * (units * (n_in + units) + units)


def numpy_lstm(x, kernel, recurrent, bias):
    """Keras LSTM (gates i, f, c, o; sigmoid/tanh); returns all hidden states."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros((x.shape[0], units))
    out = []
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


class ShapeAndCountTest(tf.test.TestCase, parameterized.TestCase):

    def test_resnet10_full_width_parameter_count(self):
        model = M.build_resnet10()
        self.assertEqual(model.count_params(), resnet10_params())
        self.assertEqual(model.count_params(), 14_342_082)

    @parameterized.parameters(0.125, 0.25)
    def test_resnet10_shapes(self, width):
        model = M.build_resnet10(width=width)
        c = int(round(64 * width))
        self.assertEqual(model.count_params(), resnet10_params(width))
        self.assertEqual(model.get_layer("stem_relu").output.shape[1:], (32, 32, 32, c))
        self.assertEqual(model.get_layer("stem_pool").output.shape[1:], (16, 16, 16, c))
        self.assertEqual(model.get_layer("stage4_block1_relu").output.shape[1:],
                         (2, 2, 2, 8 * c))
        self.assertEqual(model.output.shape, (None, 2))
        # stage 1 keeps the shape (identity shortcut); stages 2-4 project (shortcut B)
        names = {layer.name for layer in model.layers}
        self.assertNotIn("stage1_block1_shortcut_conv", names)
        for i in (2, 3, 4):
            self.assertIn(f"stage{i}_block1_shortcut_conv", names)
            self.assertIsInstance(model.get_layer(f"stage{i}_dropout"),
                                  keras.layers.SpatialDropout3D)

    def test_resnet10_returns_unclipped_logits(self):
        model = M.build_resnet10(width=0.125)
        last = model.get_layer("logits")
        self.assertIs(last.activation, keras.activations.linear)
        rng = np.random.default_rng(0)
        for layer in model.layers:  # random final layer: some logits must be negative
            if layer.name == "logits":
                k, b = layer.get_weights()
                layer.set_weights([rng.normal(0, 1, k.shape), b])
        out = model.predict(rng.random((4, 32, 64, 64, 1)).astype("float32"), verbose=0)
        self.assertLess(out.min(), 0.0)

    def test_fcn_head_fusion_counts(self):
        self.assertEqual(M.build_fcn().count_params(), 32 * 100 + 100 + 100 * 50 + 50 + 102)
        head = M.build_sequence_head()
        self.assertEqual(head.count_params(),
                         lstm_params(2, 10) + lstm_params(10, 10) + 10 * 2 + 2)
        self.assertEqual(head.input_shape, (None, 5, 2))
        fusion = M.build_fusion()
        self.assertEqual(fusion.count_params(), 4 * 30 + 30 + 30 * 2 + 2)

    def test_sequence_head_matches_numpy_lstm(self):
        head = M.build_sequence_head(units=4)
        rng = np.random.default_rng(1)
        x = rng.random((3, 5, 2)).astype("float32")
        h = x.astype(np.float64)
        for i in (1, 2):
            h = numpy_lstm(h, *head.get_layer(f"lstm{i}").get_weights())
        k, b = head.get_layer("logits").get_weights()
        expected = h[:, -1] @ k + b
        self.assertAllClose(head.predict(x, verbose=0), expected, atol=1e-5)

    def test_fusion_concatenates_image_then_feature_head(self):
        fusion = M.build_fusion(units=3)
        a = np.array([[1.0, -2.0]], "float32")
        b = np.array([[0.5, 3.0]], "float32")
        k1, b1 = fusion.get_layer("dense1").get_weights()
        k2, b2 = fusion.get_layer("logits").get_weights()
        hidden = np.maximum(np.concatenate([a, b], 1) @ k1 + b1, 0)
        self.assertAllClose(fusion.predict([a, b], verbose=0), hidden @ k2 + b2, atol=1e-5)

    @parameterized.parameters(
        (dict(width=0), "width"), (dict(width=-1.0), "width"), (dict(dropout=1.0), "dropout"),
        (dict(num_classes=0), "num_classes"), (dict(input_shape=(32, 64, 64)), "input_shape"))
    def test_resnet_errors(self, kwargs, word):
        with self.assertRaisesRegex(ValueError, word):
            M.build_resnet10(**kwargs)

    def test_other_builder_errors(self):
        with self.assertRaisesRegex(ValueError, "units"):
            M.build_fcn(units=(100, 0))
        with self.assertRaisesRegex(ValueError, "num_layers"):
            M.build_sequence_head(num_layers=0)
        with self.assertRaisesRegex(ValueError, "units"):
            M.build_fusion(units=2.5)
        with self.assertRaisesRegex(ValueError, "model"):
            M.freeze("resnet")
        with self.assertRaisesRegex(ValueError, "fcn"):
            M.build_3dssm(M.build_resnet10(width=0.125), None, M.build_sequence_head(),
                          M.build_sequence_head(), M.build_fusion())


def small_ssm(seed=0, *, train_fusion=False):
    keras.utils.set_random_seed(seed)
    parts = dict(resnet=M.build_resnet10(width=0.125), fcn=M.build_fcn(units=(8,)),
                 image_head=M.build_sequence_head(units=4, name="image_head"),
                 feature_head=M.build_sequence_head(units=4, name="feature_head"),
                 fusion=M.build_fusion(units=5))
    # non-trivial BatchNorm statistics, so inference and training modes differ
    rng = np.random.default_rng(seed)
    for layer in parts["resnet"].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([g, b, rng.normal(0, 0.2, mu.shape), rng.uniform(0.5, 2, var.shape)])
    ssm = M.build_3dssm(parts["resnet"], parts["fcn"], parts["image_head"],
                        parts["feature_head"], parts["fusion"], train_fusion=train_fusion)
    return parts, ssm


def ssm_inputs(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": rng.random((n, 5, 32, 64, 64, 1)).astype("float32"),
            "features": rng.random((n, 5, 32)).astype("float32")}


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class RoundTripTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ("resnet", lambda: M.build_resnet10(width=0.125), (2, 32, 64, 64, 1)),
        ("fcn", lambda: M.build_fcn(), (2, 32)),
        ("head", lambda: M.build_sequence_head(), (2, 5, 2)))
    def test_save_load(self, build, shape):
        model = build()
        x = np.random.default_rng(0).random(shape).astype("float32")
        path = os.path.join(self.get_temp_dir(), f"{model.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                            atol=1e-6)

    def test_assembled_model_matches_composition_and_round_trips(self):
        parts, ssm = small_ssm()
        x = ssm_inputs()
        n = x["images"].shape[0]
        p_img = softmax(parts["resnet"].predict(x["images"].reshape(n * 5, 32, 64, 64, 1),
                                                verbose=0)).reshape(n, 5, 2)
        p_feat = softmax(parts["fcn"].predict(x["features"].reshape(n * 5, 32),
                                              verbose=0)).reshape(n, 5, 2)
        expected = parts["fusion"].predict(
            [parts["image_head"].predict(p_img, verbose=0),
             parts["feature_head"].predict(p_feat, verbose=0)], verbose=0)
        out = ssm.predict(x, verbose=0)
        self.assertAllClose(out, expected, atol=1e-5)
        path = os.path.join(self.get_temp_dir(), "ssm3d.keras")
        ssm.save(path)
        self.assertAllClose(keras.models.load_model(path).predict(x, verbose=0), out, atol=1e-5)


class FrozenSubModelTest(tf.test.TestCase):

    def test_fitting_the_fusion_leaves_sub_models_and_bn_statistics_unchanged(self):
        parts, ssm = small_ssm(train_fusion=True)
        x = ssm_inputs(n=4, seed=2)
        before = {k: [w.copy() for w in m.get_weights()] for k, m in parts.items()}
        bn = parts["resnet"].get_layer("stem_bn")
        moving = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
        # only the fusion is trainable
        self.assertEqual(len(ssm.trainable_weights), len(parts["fusion"].trainable_weights))
        ssm.compile(keras.optimizers.Adam(0.05),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ssm.fit(x, np.array([0, 1, 0, 1]), epochs=3, batch_size=2, verbose=0)
        for name in ("resnet", "fcn", "image_head", "feature_head"):
            for a, b in zip(before[name], parts[name].get_weights()):
                self.assertAllEqual(a, b)
        self.assertAllEqual(bn.moving_mean.numpy(), moving[0])
        self.assertAllEqual(bn.moving_variance.numpy(), moving[1])
        changed = [not np.array_equal(a, b)
                   for a, b in zip(before["fusion"], parts["fusion"].get_weights())]
        self.assertTrue(any(changed))

    def test_sub_models_run_in_inference_mode_when_training(self):
        _, ssm = small_ssm()
        x = ssm_inputs(n=2, seed=3)
        self.assertAllClose(ssm(x, training=True), ssm(x, training=False), atol=1e-6)
