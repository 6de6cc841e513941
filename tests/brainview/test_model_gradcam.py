"""brainview model freezing, BatchNormalization calibration and Grad-CAM."""
import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.brainview import gradcam, model as bvmodel
from keras_medseg.training import get_backbone


class ModelTest(tf.test.TestCase):

    def test_last_five_layers_and_head_trainable(self):
        m = bvmodel.build_brainview_model((32, 32, 3))
        backbone = get_backbone(m)
        trainable = [la.name for la in backbone.layers if la.trainable]
        self.assertEqual(trainable, ["block7a_project_conv", "block7a_project_bn", "top_conv",
                                     "top_bn", "top_activation"])
        self.assertEqual([la.name for la in backbone.layers[-5:]], trainable)
        # head: GAP -> Dense(128, relu) -> Dense(3) logits, no dropout
        self.assertEqual(m.get_layer("hidden").units, 128)
        self.assertEqual(m.get_layer("hidden").activation.__name__, "relu")
        self.assertEqual(m.get_layer("logits").units, 3)
        self.assertNotIn("dropout", [la.name for la in m.layers])
        expected = set()
        for name in trainable:
            expected.update(id(v) for v in backbone.get_layer(name).trainable_weights)
        for name in ("hidden", "logits"):
            expected.update(id(v) for v in m.get_layer(name).trainable_weights)
        self.assertEqual({id(v) for v in m.trainable_weights}, expected)
        self.assertEqual(m.output.shape, (None, 3))

    def test_calibrate_batchnorm_restores_flags_and_sets_statistics(self):
        keras.utils.set_random_seed(0)
        m = bvmodel.build_brainview_model((32, 32, 3))
        before = [la.trainable for la in get_backbone(m).layers]
        images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        backbone = get_backbone(m)
        feats0 = np.std(np.asarray(backbone(m.get_layer("preprocess")(images))))
        n = bvmodel.calibrate_batchnorm(m, images)
        self.assertGreater(n, 40)
        self.assertEqual([la.trainable for la in backbone.layers], before)
        self.assertEqual(backbone.get_layer("stem_bn").momentum, 0.99)
        # the first BN now holds the batch statistics of its input
        stem = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)
        x = np.asarray(stem(m.get_layer("preprocess")(images)))
        bn = backbone.get_layer("stem_bn")
        self.assertAllClose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-4,
                            atol=1e-5)
        self.assertAllClose(bn.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-3,
                            atol=1e-5)
        feats1 = np.std(np.asarray(backbone(m.get_layer("preprocess")(images))))
        self.assertGreater(feats1, 100 * feats0)  # the random features no longer vanish
        with self.assertRaisesRegex(ValueError, "images"):
            bvmodel.calibrate_batchnorm(m, images[0])


class AugmentationTest(tf.test.TestCase):

    def test_view_augmentation_only_in_training_and_keeps_shape(self):
        keras.utils.set_random_seed(0)
        aug = bvmodel.view_augmentation(seed=3)
        m = bvmodel.build_brainview_model((32, 32, 3), augmentation=aug, fine_tune_at=0)
        names = [la.name for la in m.layers]
        self.assertEqual(names[1:5], ["augment_flip", "augment_rotation", "augment_zoom",
                                      "augment_shift"])
        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        pipeline = keras.Sequential(aug)
        self.assertAllEqual(np.asarray(pipeline(x, training=False)), x)
        moved = np.asarray(pipeline(x, training=True))
        self.assertEqual(moved.shape, x.shape)
        self.assertGreater(np.abs(moved - x).mean(), 1.0)
        # the whole backbone trains with fine_tune_at=0
        self.assertTrue(all(la.trainable for la in get_backbone(m).layers))

    def test_cosine_decay_schedule(self):
        m = bvmodel.build_brainview_model((32, 32, 3))
        bvmodel.compile_brainview_model(m, learning_rate=1e-3, decay_steps=10)
        schedule = m.optimizer._learning_rate
        self.assertIsInstance(schedule, keras.optimizers.schedules.CosineDecay)
        self.assertAllClose(float(schedule(0)), 1e-3)
        self.assertAllClose(float(schedule(5)), 1e-3 * (0.01 + 0.99 * 0.5))
        self.assertAllClose(float(schedule(10)), 1e-5)
        with self.assertRaisesRegex(ValueError, "decay_steps"):
            bvmodel.compile_brainview_model(m, decay_steps=0)

    def test_config_checks_calibration_every(self):
        from keras_medseg.brainview import BrainviewConfig

        with self.assertRaisesRegex(ValueError, "calibration_every"):
            BrainviewConfig(calibration_every=-1)
        with self.assertRaisesRegex(ValueError, "lr_schedule"):
            BrainviewConfig(lr_schedule="step")
        self.assertFalse(BrainviewConfig().augment)


def _planted_model(size=16, region=(slice(2, 6), slice(9, 14))):
    """A toy model whose class-1 score depends only on the image inside ``region``.

    Its 4D activation ``features`` has two location-specific channels, the image inside and
    outside the region; class 1 = GAP of the inside channel, class 0 = minus that.
    """
    mask = np.zeros((size, size, 1), np.float32)
    mask[region] = 1.0
    inputs = keras.Input((size, size, 1))
    features = keras.layers.Lambda(
        lambda x: keras.ops.concatenate([x * mask, x * (1.0 - mask)], axis=-1),
        name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, use_bias=False, name="logits",
                                kernel_initializer=keras.initializers.Constant(
                                    [[-1.0, 1.0], [0.0, 0.0]]))(pooled)
    return keras.Model(inputs, logits), mask[..., 0].astype(bool)


class GradCamTest(tf.test.TestCase, parameterized.TestCase):

    def test_peaks_in_planted_region(self):
        model, region = _planted_model()
        rng = np.random.default_rng(0)
        images = rng.uniform(0.2, 0.6, (3, 16, 16, 1)).astype("float32")
        images[:, 10:14, 1:5] = 1.0  # a brighter distractor outside the region
        heat, cls, logits = gradcam.grad_cam(model, images, class_index=1,
                                             layer_name="features")
        self.assertEqual(heat.shape, (3, 16, 16))
        np.testing.assert_array_equal(cls, [1, 1, 1])
        for h in heat:
            self.assertAlmostEqual(float(h.max()), 1.0, places=5)
            peak = np.unravel_index(np.argmax(h), h.shape)
            self.assertTrue(region[peak], f"peak {peak} outside the planted region")
            self.assertEqual(float(h[~region].max()), 0.0)
        # analytic reference: alpha = (|region| / 256^2, 0) > 0, so the CAM is the inside
        # channel, normalised by its maximum
        inside = images[..., 0] * region
        self.assertAllClose(heat, inside / inside.max(axis=(1, 2), keepdims=True), atol=1e-5)
        # predicted class by default
        _, cls_default, _ = gradcam.grad_cam(model, images, layer_name="features")
        np.testing.assert_array_equal(cls_default, logits.argmax(-1))
        # class 0 has negative weights: ReLU leaves nothing, the map stays all zero
        heat0, _, _ = gradcam.grad_cam(model, images, class_index=0, layer_name="features")
        self.assertEqual(float(np.abs(heat0).max()), 0.0)
        with self.assertRaisesRegex(ValueError, "class_index"):
            gradcam.grad_cam(model, images, class_index=2, layer_name="features")

    def test_nested_backbone_layer(self):
        m = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(4, 3, padding="same", name="c1"),
                              keras.layers.Activation("relu", name="top_activation")],
                             name="backbone_like")
        inputs = keras.Input((32, 32, 3))
        x = m(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3)(x)
        model = keras.Model(inputs, outputs)
        images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        heat, cls, logits = gradcam.grad_cam(model, images)
        self.assertEqual(heat.shape, (2, 32, 32))
        np.testing.assert_array_equal(cls, logits.argmax(-1))
        self.assertTrue(np.all((heat >= 0) & (heat <= 1)))
        with self.assertRaisesRegex(ValueError, "no_such_layer"):
            gradcam.grad_cam(model, images, layer_name="no_such_layer")

    def test_overlay_no_overflow(self):
        image = np.full((4, 4, 3), 250, np.uint8)
        heat = np.ones((4, 4))
        out = gradcam.overlay_heatmap(image, heat, alpha=0.5)
        self.assertEqual(out.dtype, np.uint8)
        import matplotlib

        colour = np.asarray(matplotlib.colormaps["jet"](1.0)[:3]) * 255
        expected = np.clip(np.rint(0.5 * 250 + 0.5 * colour), 0, 255)
        np.testing.assert_array_equal(out[0, 0], expected.astype(np.uint8))
        # the naive uint8 sum would wrap round: ours never drops below the image's share
        self.assertTrue(np.all(out >= 125))
        with self.assertRaisesRegex(ValueError, "heatmap"):
            gradcam.overlay_heatmap(image, heat * 2)

    def test_figure_written_once(self):
        path = gradcam.save_gradcam_figure(self.get_temp_dir() + "/g.png",
                                           np.zeros((8, 8, 3)), np.eye(8))
        self.assertTrue(path.is_file())
