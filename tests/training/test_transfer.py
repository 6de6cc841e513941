"""Transfer recipe: logits head, freezing, BatchNorm in inference mode, two stages that number
epochs on, augmentation that really runs, .keras round trip."""
import os

import keras
import numpy as np
import scipy.special
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.training import (
    InferenceMode,
    Runner,
    build_transfer_classifier,
    fit_two_stage,
    freeze_backbone,
    get_backbone,
    unfreeze_from,
)


def tiny_classifier(num_classes=3, size=8):
    """A 2-block conv/BN backbone wrapped like build_transfer_classifier does (fast)."""
    inp = keras.Input((size, size, 3))
    x = inp
    for i in (1, 2):
        x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"b{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"b{i}_bn")(x)
        x = keras.layers.ReLU(name=f"b{i}_relu")(x)
    backbone = keras.Model(inp, x, name="tiny")
    backbone.trainable = False
    outer = keras.Input((size, size, 3))
    y = InferenceMode(backbone, name="backbone")(outer)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(num_classes, name="logits")(y)
    return keras.Model(outer, y)


def data(n=12, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = (np.arange(n) % 3).astype("int32")
    return x, y


def snapshot(layer):
    return [w.numpy().copy() for w in layer.weights]


class ClassifierTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_logits_and_frozen_backbone(self):
        model = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3),
                                          backbone_kwargs={"alpha": 0.35})
        self.assertIs(model.layers[-1].activation, keras.activations.linear)
        self.assertEqual(model.layers[-1].name, "logits")
        # only the Dense head trains: kernel + bias
        self.assertEqual(len(model.trainable_weights), 2)
        backbone = get_backbone(model)
        self.assertFalse(any(w.trainable for w in backbone.weights))
        x, _ = data(4, 32)
        out = model(x, training=False).numpy()
        self.assertFalse(np.allclose(out.sum(axis=1), 1.0))  # not probabilities
        # save/load round trip through .keras
        path = os.path.join(self.get_temp_dir(), "clf.keras")
        model.save(path)
        again = keras.models.load_model(path)
        self.assertAllClose(again(x, training=False), out, atol=1e-5)

    def test_mlp_head(self):
        model = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3), head="mlp",
                                          dropout=0.0, backbone_kwargs={"alpha": 0.35})
        hidden = model.get_layer("hidden")
        self.assertEqual(hidden.units, 128)
        self.assertIs(hidden.activation, keras.activations.relu)
        self.assertNotIn("dropout", [la.name for la in model.layers])
        self.assertEqual(len(model.trainable_weights), 4)

    def test_augmentation_runs_only_in_training(self):
        x, _ = data(4, 32)
        def relative(model):  # random-init outputs are tiny: compare on their own scale
            ref = model(x, training=False).numpy()
            scale = np.abs(ref).max()
            return model(x, training=True).numpy() / scale, ref / scale

        plain = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3), dropout=0.0,
                                          backbone_kwargs={"alpha": 0.35})
        self.assertAllClose(*relative(plain), atol=1e-5)
        aug = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3), dropout=0.0,
                                        augmentation="default", backbone_kwargs={"alpha": 0.35})
        self.assertNotAllClose(*relative(aug), atol=1e-2)
        # the augmentation layers themselves change training inputs
        sub = keras.Model(aug.input, aug.get_layer("augment_rotation").output)
        self.assertNotAllClose(sub(x, training=True), x)
        self.assertAllClose(sub(x, training=False), x)

    def test_argument_errors(self):
        kw = dict(input_shape=(32, 32, 3), backbone_kwargs={"alpha": 0.35})
        for bad, pattern in [(dict(num_classes=1), "num_classes"), (dict(dropout=1.0), "dropout"),
                             (dict(head="deep"), "head"), (dict(hidden_units=0), "hidden_units"),
                             (dict(augmentation=["flip"]), "augmentation"),
                             (dict(augmentation="strong"), "augmentation")]:
            args = {"num_classes": 3, **kw, **bad}
            with self.assertRaisesRegex(ValueError, pattern):
                build_transfer_classifier("mobilenetv2", **args)
        with self.assertRaisesRegex(ValueError, "backbone"):
            build_transfer_classifier("resnet", 3)


class FreezingTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_unfreeze_from_name_and_index(self):
        model = tiny_classifier()
        backbone = get_backbone(model)
        index = unfreeze_from(model, "b2_conv")
        self.assertEqual(index, [la.name for la in backbone.layers].index("b2_conv"))
        self.assertEqual([la.trainable for la in backbone.layers],
                         [i >= index for i in range(len(backbone.layers))])
        # trainable: b2 conv kernel, b2 BN gamma/beta, head kernel/bias
        self.assertEqual(len(model.trainable_weights), 5)
        freeze_backbone(model)
        self.assertEqual(len(model.trainable_weights), 2)
        self.assertEqual(unfreeze_from(model, index), index)
        self.assertEqual(len(model.trainable_weights), 5)
        with self.assertRaisesRegex(ValueError, "b2_conv"):
            unfreeze_from(model, "b2_con")

    def test_batchnorm_stays_in_inference_mode(self):
        model = tiny_classifier()
        backbone = get_backbone(model)
        x, y = data()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
        before = {la.name: snapshot(la) for la in backbone.layers}
        h1, h2 = fit_two_stage(model, ds, None, initial_epochs=1, fine_tune_epochs=1,
                               fine_tune_at="b2_conv", runner=Runner(progress="none"))
        for name in ("b1_bn", "b2_bn"):
            bn = backbone.get_layer(name)
            self.assertAllEqual(bn.moving_mean.numpy(), before[name][2])
            self.assertAllEqual(bn.moving_variance.numpy(), before[name][3])
        # layers before the fine-tune point did not change; those after did (gamma included)
        for a, b in zip(snapshot(backbone.get_layer("b1_conv")), before["b1_conv"]):
            self.assertAllEqual(a, b)
        self.assertNotAllClose(backbone.get_layer("b2_conv").kernel.numpy(), before["b2_conv"][0])
        self.assertNotAllClose(backbone.get_layer("b2_bn").gamma.numpy(), before["b2_bn"][0])
        # the recorded training=False in a plain functional nesting is not enough in Keras 3
        self.assertAllClose(model(x, training=True), model(x, training=False))


class TwoStageTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_epochs_continue_and_learning_rates(self):
        model = tiny_classifier()
        x, y = data()
        h1, h2 = fit_two_stage(model, (x, y), (x, y), initial_epochs=2, fine_tune_epochs=3,
                               fine_tune_at="b2_conv", base_learning_rate=1e-2,
                               runner=Runner(progress="none"))
        self.assertEqual(h1["epoch"], [0, 1])
        self.assertEqual(h2["epoch"], [2, 3, 4])
        self.assertLen(h2["val_loss"], 3)
        self.assertAllClose(float(model.optimizer.learning_rate.numpy()), 1e-3)

    def test_stage2_starts_after_epochs_stage1_really_ran(self):
        class StopAfterFirst(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    self.model.stop_training = True

        model = tiny_classifier()
        x, y = data()
        runner = Runner(progress="none")
        h1, _ = fit_two_stage(model, (x, y), None, initial_epochs=3, fine_tune_epochs=0,
                              fine_tune_at=0, runner=runner, callbacks=[StopAfterFirst()])
        self.assertEqual(h1["epoch"], [0])
        _, h2 = fit_two_stage(tiny_classifier(), (x, y), None, initial_epochs=0,
                              fine_tune_epochs=2, fine_tune_at="b1_conv", runner=runner)
        self.assertEqual(h2["epoch"], [0, 1])

    def test_brainview_style_stage2_only(self):
        model = tiny_classifier()
        x, y = data()
        h1, h2 = fit_two_stage(model, (x, y), None, initial_epochs=0, fine_tune_epochs=2,
                               fine_tune_at="b2_bn", runner=Runner(progress="none"))
        self.assertEqual(h1, {})
        self.assertEqual(h2["epoch"], [0, 1])
        self.assertFalse(get_backbone(model).get_layer("b2_conv").trainable)
        self.assertTrue(get_backbone(model).get_layer("b2_bn").trainable)

    def test_errors_before_training(self):
        model = tiny_classifier()
        x, y = data()
        with self.assertRaisesRegex(ValueError, "fine_tune_at"):
            fit_two_stage(model, (x, y), initial_epochs=1)
        with self.assertRaisesRegex(ValueError, "no layer named"):
            fit_two_stage(model, (x, y), initial_epochs=1, fine_tune_epochs=1,
                          fine_tune_at="nope")
        self.assertIsNone(getattr(model, "optimizer", None))  # nothing compiled
        with self.assertRaisesRegex(ValueError, "initial_epochs"):
            fit_two_stage(model, (x, y), initial_epochs=-1, fine_tune_epochs=1, fine_tune_at=0)
        with self.assertRaisesRegex(ValueError, "base_learning_rate"):
            fit_two_stage(model, (x, y), fine_tune_epochs=1, fine_tune_at=0,
                          base_learning_rate=0)

    def test_registry_defaults(self):
        model = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3),
                                          backbone_kwargs={"alpha": 0.35})
        x, y = data(6, 32)
        _, h2 = fit_two_stage(model, (x, y), None, backbone="mobilenetv2", initial_epochs=0,
                              fine_tune_epochs=0, runner=Runner(progress="none"))
        self.assertEqual(h2["epoch"], [])
        self.assertAllClose(float(model.optimizer.learning_rate.numpy()), 1e-4)
        backbone = get_backbone(model)
        names = [la.name for la in backbone.layers]
        k = names.index("block_16_project")
        self.assertFalse(any(la.trainable for la in backbone.layers[:k]))
        self.assertTrue(all(la.trainable for la in backbone.layers[k:]))
        # the logits head gives the same softmax as the report path
        logits = model.predict(x, verbose=0)
        probs = scipy.special.softmax(logits, axis=1)
        self.assertAllClose(probs.sum(axis=1), np.ones(6))

