"""brainview robustness options: extra training contrasts, stronger augmentation, weight EMA,
flip test-time augmentation."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_medseg import brainview as bv
from keras_medseg.sampledata import fetch as F
from keras_medseg.sampledata import generate_brainview


def _slices(stacks, positions, labels, prefix="x"):
    n = len(stacks)
    return bv.ViewSlices([f"{prefix}{i}.png" for i in range(n)], labels,
                         [s.split("/")[0] for s in stacks], stacks, positions)


class MatchingSlicesTest(tf.test.TestCase):

    def test_keeps_only_items_at_a_stack_and_position_of_data(self):
        data = _slices(["a/coronal", "a/coronal", "a/sagittal", "b/coronal"], [3, 4, 3, 7],
                       [1, 1, 2, 1])
        extra = _slices(["a/coronal", "a/coronal", "a/sagittal", "a/sagittal", "b/coronal",
                         "a/coronal"], [4, 5, 3, 4, 7, 3], [1, 1, 2, 2, 1, 1], prefix="e")
        got = bv.matching_slices(extra, data)
        self.assertEqual(got.paths, ["e0.png", "e2.png", "e4.png", "e5.png"])
        self.assertAllEqual(got.labels, [1, 2, 1, 1])
        self.assertEmpty(bv.matching_slices(extra, data.subset([])))

    def test_label_conflict_raises(self):
        data = _slices(["a/coronal"], [3], [1])
        extra = _slices(["a/coronal"], [3], [0], prefix="e")
        with self.assertRaisesRegex(ValueError, "view horizontal"):
            bv.matching_slices(extra, data)


class MirrorGuardTest(tf.test.TestCase):

    def test_training_never_holds_the_mirror_image_of_a_test_slice(self):
        n = 60  # one symmetric stack: slice p shows the same as slice 59 - p
        stacks = ["v/sagittal"] * n + ["v/coronal"] * n
        data = _slices(stacks, list(range(n)) * 2, [2] * n + [1] * n)
        plain = bv.split_train_test(data, method="blocks", block_size=5, gap=1,
                                    test_size=0.2, random_state=4)
        guarded = bv.split_train_test(data, method="blocks", block_size=5, gap=1,
                                      test_size=0.2, random_state=4,
                                      mirror={"v/sagittal": n - 1})
        self.assertAllEqual(plain.test, guarded.test)
        self.assertTrue(set(guarded.train) <= set(plain.train))

        def mirrored_near(train):
            test = [data.positions[i] for i in plain.test if data.stacks[i] == "v/sagittal"]
            return [i for i in train if data.stacks[i] == "v/sagittal"
                    and min(abs((n - 1 - t) - data.positions[i]) for t in test) <= 1]

        self.assertNotEmpty(mirrored_near(plain.train))
        self.assertEmpty(mirrored_near(guarded.train))
        # the other stack is untouched
        self.assertEqual([i for i in plain.train if data.stacks[i] == "v/coronal"],
                         [i for i in guarded.train if data.stacks[i] == "v/coronal"])
        for bad in ({"v/sagittal": 1.5}, [1, 2], {3: 4}):
            with self.assertRaisesRegex(ValueError, "mirror"):
                bv.split_train_test(data, method="blocks", block_size=5, mirror=bad)

    @pytest.mark.slow
    def test_icbm152_sagittal_slices_are_mirror_images(self):
        if not F.is_cached("icbm152"):
            pytest.skip("real sample data 'icbm152' not cached; run `make sample-data`")
        t1 = F.load_icbm152(offline=True).image.array  # (z, y, x)
        (stack, total), = bv.ICBM152_MIRROR.items()
        self.assertEqual(stack, "icbm152/sagittal")
        self.assertEqual(total, t1.shape[2] - 1)
        for x in (30, 60, 97):
            self.assertAllEqual(t1[:, :, x], t1[:, :, total - x])
        self.assertGreater(np.abs(t1[:, :, 60] - t1[:, :, 63]).mean(), 1.0)


class AugmentationOptionsTest(tf.test.TestCase):

    def test_defaults_unchanged_and_options_add_layers(self):
        plain = bv.view_augmentation(seed=3)
        self.assertEqual([la.name for la in plain], ["augment_flip", "augment_rotation",
                                                     "augment_zoom", "augment_shift"])
        self.assertEqual({la.seed for la in plain}, {3})  # the first recipe: one seed
        strong = bv.view_augmentation(seed=3, stretch=0.2, zoom_out=0.5, contrast=0.3,
                                      brightness=0.1, independent=True)
        self.assertEqual([la.name for la in strong][4:], ["augment_stretch",
                                                          "augment_zoom_out",
                                                          "augment_contrast",
                                                          "augment_brightness"])
        self.assertEqual([la.seed for la in strong], list(range(3, 11)))
        for name in ("rotation", "stretch", "zoom_out", "contrast", "brightness"):
            with self.assertRaisesRegex(ValueError, name):
                bv.view_augmentation(**{name: -0.1})

    def test_shared_seed_couples_rotation_and_zoom(self):
        x = np.zeros((64, 16, 16, 3), np.float32)
        for independent, coupled in ((False, True), (True, False)):
            layers = bv.view_augmentation(seed=3, independent=independent)
            angle = np.asarray(layers[1].get_random_transformation(x)["angle"]).ravel()
            zoom = np.asarray(layers[2].get_random_transformation(x)["height_zoom"]).ravel()
            r = np.corrcoef(angle, zoom)[0, 1]
            if coupled:
                self.assertGreater(r, 0.999)
            else:
                self.assertLess(abs(r), 0.5)

    def test_stretch_is_anisotropic(self):
        # a centred square: an isotropic zoom keeps its height == width, the stretch does not
        x = np.zeros((16, 64, 64, 3), np.float32)
        x[:, 16:48, 16:48] = 255.0
        stretch = bv.view_augmentation(seed=1, rotation=0.0, zoom=0.0, shift=0.0,
                                       stretch=0.3, independent=True)[-1]
        out = np.asarray(stretch(x, training=True))[..., 0] > 127
        heights = out.any(axis=2).sum(axis=1)
        widths = out.any(axis=1).sum(axis=1)
        self.assertGreater(np.abs(heights - widths).max(), 4)
        self.assertAllEqual(np.asarray(stretch(x, training=False)), x)

    def test_zoom_out_only_shrinks(self):
        x = np.zeros((16, 64, 64, 3), np.float32)
        x[:, 16:48, 16:48] = 255.0
        layer = bv.view_augmentation(seed=2, zoom_out=0.5)[-1]
        out = np.asarray(layer(x, training=True))[..., 0] > 127
        heights = out.any(axis=2).sum(axis=1)
        widths = out.any(axis=1).sum(axis=1)
        # isotropic, never larger than the 32-pixel square, down to 32 / 1.5 at most
        self.assertAllClose(heights, widths, atol=1)
        self.assertAllInRange(heights, 32 / 1.5 - 1, 32)
        self.assertLess(heights.min(), 28)

    def test_contrast_changes_intensities_not_geometry(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
        layer = bv.view_augmentation(seed=1, contrast=0.5)[-1]
        out = np.asarray(layer(x, training=True))
        self.assertGreater(np.abs(out - x).mean(), 1.0)
        self.assertAllInRange(out, 0.0, 255.0)
        # a contrast change is monotonic per image: the pixel order is kept
        for a, b in zip(x[..., 0], out[..., 0]):
            order = np.argsort(a.ravel())
            self.assertTrue(np.all(np.diff(b.ravel()[order]) >= -1e-3))

    def test_config_fields_and_checks(self):
        cfg = bv.BrainviewConfig()
        self.assertEqual((cfg.augment_stretch, cfg.augment_zoom_out, cfg.augment_contrast,
                          cfg.augment_brightness, cfg.augment_independent, cfg.ema_momentum,
                          cfg.tta), (0.0, 0.0, 0.0, 0.0, False, 0.0, False))
        for name, value in (("augment_stretch", -1.0), ("augment_contrast", -0.1),
                            ("augment_zoom_out", -0.2),
                            ("ema_momentum", 1.0), ("ema_momentum", -0.5)):
            with self.assertRaisesRegex(ValueError, name):
                bv.BrainviewConfig(**{name: value})


def _tiny_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 10, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class FlipTTATest(tf.test.TestCase):

    def test_mean_of_the_four_flips(self):
        model = _tiny_classifier()
        x = np.random.default_rng(1).uniform(0, 255, (5, 8, 10, 3)).astype(np.float32)
        tta = bv.flip_tta_model(model)
        expected = np.mean([_softmax(np.asarray(model(v), np.float64))
                            for v in (x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1])], axis=0)
        got = _softmax(np.asarray(tta(x), np.float64))
        self.assertAllClose(got, expected, atol=1e-5)
        # flip-invariant by construction; the plain model is not
        self.assertAllClose(np.asarray(tta(x[:, ::-1])), np.asarray(tta(x)), atol=1e-5)
        self.assertGreater(np.abs(np.asarray(model(x[:, ::-1])) - np.asarray(model(x))).max(),
                           1e-3)
        self.assertEqual(tta.name, f"{model.name}_tta")


class EMATest(tf.test.TestCase):

    def test_fit_ends_with_the_moving_average_of_the_weights(self):
        model = _tiny_classifier(seed=2)
        bv.compile_brainview_model(model, learning_rate=1e-2, ema_momentum=0.5)
        self.assertTrue(model.optimizer.use_ema)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (12, 8, 10, 3)).astype(np.float32)
        y = rng.integers(0, 3, 12).astype(np.int32)
        seen = []

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                seen.append([np.asarray(v).copy() for v in model.trainable_variables])

        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  callbacks=[Record()])
        self.assertLen(seen, 6)
        average = seen[0]
        for step in seen[1:]:
            average = [0.5 * a + 0.5 * w for a, w in zip(average, step)]
        for got, want, last in zip(model.trainable_variables, average, seen[-1]):
            self.assertAllClose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
        self.assertGreater(max(np.abs(np.asarray(v) - w).max()
                               for v, w in zip(model.trainable_variables, seen[-1])), 1e-6)

    def test_bad_momentum(self):
        model = _tiny_classifier()
        for bad in (0.0, 1.0, True):
            with self.assertRaisesRegex(ValueError, "ema_momentum"):
                bv.compile_brainview_model(model, ema_momentum=bad)
        bv.compile_brainview_model(model)
        self.assertFalse(model.optimizer.use_ema)


class ICBM152MapsTest(tf.test.TestCase):

    @pytest.mark.slow
    def test_map_slices_keyed_to_the_t1_slices(self):
        if not F.is_cached("icbm152"):
            pytest.skip("real sample data 'icbm152' not cached; run `make sample-data`")
        from keras_medseg.io.volumes import read_volume

        out = self.get_temp_dir()
        t1 = bv.icbm152_views(out, size=16, step=60, offline=True)
        maps = bv.icbm152_map_views(out, maps=("gm", "wm"), size=16, step=60, offline=True)
        self.assertLen(maps, 2 * len(t1))
        self.assertEqual(set(maps.datasets.tolist()), {"icbm152"})
        self.assertEqual(set(maps.stacks.tolist()), set(t1.stacks.tolist()))
        # each T1 slice has exactly one GM and one WM companion of the same view
        both = bv.matching_slices(maps, t1)
        self.assertLen(both, len(maps))
        self.assertAllEqual(np.sort(both.positions), np.sort(np.tile(t1.positions, 2)))
        self.assertFalse(set(maps.paths) & set(t1.paths))
        # the GM coronal slice at y = 120 is the min-max scaled map, rows flipped
        paths = F.fetch("icbm152", offline=True)
        gm = read_volume(paths["mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"]).array
        i = [k for k, (p, s) in enumerate(zip(maps.paths, maps.stacks))
             if s == "icbm152/coronal" and "icbm152_gm" in p and maps.positions[k] == 120][0]
        img = np.asarray(Image.open(maps.paths[i]), np.float64)[..., 0]
        ref = gm[:, 120, :][::-1]
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        from skimage.transform import resize

        ref = resize(ref, (16, 16), order=1, anti_aliasing=True) * 255
        self.assertGreater(np.corrcoef(img.ravel(), ref.ravel())[0, 1], 0.9)
        with self.assertRaisesRegex(ValueError, "maps"):
            bv.icbm152_map_views(out, maps=("gm", "gm"), offline=True)
        with self.assertRaisesRegex(ValueError, "maps"):
            bv.icbm152_map_views(out, maps=("csf",), offline=True)


def _inverted_copies(data, root):
    """The same slices in another contrast (inverted), keyed to the same stack/position."""
    paths = []
    for i, p in enumerate(data.paths):
        img = np.asarray(Image.open(p).convert("RGB"))
        path = os.path.join(root, f"inv_{i:04d}.png")
        Image.fromarray(255 - img).save(path)
        paths.append(path)
    return bv.ViewSlices(paths, data.labels, data.datasets, data.stacks, data.positions)


def _small_builder(built):
    """A small stand-in for EfficientNet (fast): the options under test do not depend on it."""
    def build(cfg):
        keras.utils.set_random_seed(cfg.seed)
        inp = keras.Input(cfg.input_shape)
        x = keras.layers.Rescaling(1 / 255)(inp)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        m = keras.Model(inp, keras.layers.Dense(3)(x))
        built.append(m)
        return m
    return build


class TrainExtraEndToEndTest(tf.test.TestCase):

    @pytest.mark.slow
    def test_extra_images_train_only_per_fold_and_robust_options_run(self):
        root = self.get_temp_dir()
        sample = generate_brainview(os.path.join(root, "data"), seed=0, image_size=32,
                                    slices_per_view=8, volume_shape=(32, 20, 26),
                                    datasets=("atlasA",))
        data = bv.load_png_views(sample.datasets["atlasA"])
        extra = _inverted_copies(data, root)
        config = bv.BrainviewConfig(
            image_size=32, batch_size=4, epochs=1, k=2, learning_rate=1e-3,
            encoder_weights=None, calibrate_bn=False, split="blocks", block_size=2, gap=1,
            black_threshold=0.6, black_scale="0-255", gradcam_per_class=0,
            max_misclassified=2, ema_momentum=0.9, tta=True)
        built = []
        out = os.path.join(root, "run")
        result = bv.run_kfold(data, out, config=config, build_model=_small_builder(built),
                              train_extra=extra)
        self.assertLen(built, 3)
        read = lambda name: open(os.path.join(out, "splits", name)).read().splitlines()  # noqa
        train, test, used = read("train.txt"), read("test.txt"), read("train_extra.txt")
        key = {p: (s, int(q)) for p, s, q in zip(data.paths + extra.paths,
                                                 np.concatenate([data.stacks, extra.stacks]),
                                                 np.concatenate([data.positions,
                                                                 extra.positions]))}
        # exactly the copies of the training slices, none of a test slice's position
        self.assertEqual(sorted(key[p] for p in used), sorted(key[p] for p in train))
        self.assertFalse({key[p] for p in used} & {key[p] for p in test})
        res = json.load(open(os.path.join(out, "results.json")))
        self.assertEqual(res["sizes"], {"train": len(train), "test": len(test),
                                        "train_extra": len(used)})
        self.assertEqual(result.sizes["train_extra"], len(used))
        self.assertEqual(res["test"]["n"], len(test))
        # every fold trained on its training side plus one copy each (batches of 4), the
        # final model on all training slices plus theirs
        n_val = [int(r.split(",")[-1]) for r in
                 open(os.path.join(out, "cv", "folds.csv")).read().splitlines()[1:3]]
        self.assertEqual(sum(n_val), len(train))
        for m, n in zip(built, n_val + [0]):
            self.assertEqual(int(m.optimizer.iterations), -(-2 * (len(train) - n) // 4))
            self.assertTrue(m.optimizer.use_ema)
        # the test scores are the flip-averaged ones
        from keras_medseg.training.reports import predict_scores

        labels = [bv.VIEWS.index(key[p][0].split("/")[1]) for p in test]
        test_set = bv.ViewSlices(test, labels, ["a"] * len(test),
                                 [key[p][0] for p in test], [key[p][1] for p in test])
        _, scores = predict_scores(bv.flip_tta_model(built[-1]),
                                   bv.make_dataset(test_set, image_size=(32, 32)))
        self.assertAllClose(res["test"]["accuracy"], np.mean(scores.argmax(1) == labels))

    def test_default_builder_uses_the_augmentation_options(self):
        from keras_medseg.brainview.experiment import _default_builder

        cfg = bv.BrainviewConfig(image_size=32, encoder_weights=None, fine_tune_at="0",
                                 augment=True, augment_stretch=0.1, augment_zoom_out=0.2,
                                 augment_contrast=0.3, augment_independent=True, seed=5)
        names = [la.name for la in _default_builder(cfg).layers]
        self.assertEqual(names[1:8], ["augment_flip", "augment_rotation", "augment_zoom",
                                      "augment_shift", "augment_stretch", "augment_zoom_out",
                                      "augment_contrast"])
