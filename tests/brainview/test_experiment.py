"""brainview experiments end to end at a tiny size: fresh model per fold, every file."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_medseg import brainview as bv
from keras_medseg.sampledata import generate_brainview


def _tiny_config(**kw):
    base = dict(image_size=32, batch_size=8, epochs=1, k=2, learning_rate=1e-3,
                encoder_weights=None, split="blocks", block_size=2, gap=0,
                black_threshold=0.6, black_scale="0-255", gradcam_per_class=1,
                max_misclassified=3)
    base.update(kw)
    return bv.BrainviewConfig(**base)


@pytest.mark.slow
class KFoldEndToEndTest(tf.test.TestCase):

    def test_kfold_fresh_models_and_files(self):
        root = self.get_temp_dir()
        sample = generate_brainview(os.path.join(root, "data"), seed=0, image_size=32,
                                    slices_per_view=6, volume_shape=(32, 20, 26),
                                    datasets=("atlasA",))
        data = bv.load_png_views(sample.datasets["atlasA"])
        built, initial = [], []

        def build(config):
            m = bv.build_brainview_model(config.input_shape, encoder_weights=None)
            built.append(m)
            initial.append([w.copy() for w in m.get_weights()])
            return m

        out = os.path.join(root, "run")
        result = bv.run_kfold(data, out, config=_tiny_config(), build_model=build)
        self.assertLen(built, 3)  # two folds + the final model
        self.assertEqual(len({id(m) for m in built}), 3)
        # fold 2 starts from fresh weights, not from where fold 1 ended
        end_fold1 = built[0].get_weights()
        trained = [i for i, (a, b) in enumerate(zip(initial[0], end_fold1))
                   if not np.array_equal(a, b)]
        self.assertNotEmpty(trained)
        for i in trained:
            self.assertFalse(np.array_equal(initial[1][i], end_fold1[i]))
        self.assertLen(result.folds, 2)
        for name in ("config.json", "splits/train.txt", "splits/test.txt", "cv/folds.csv",
                     "cv/folds.md", "cv/fold0/log.csv", "cv/fold0/curves.png",
                     "cv/fold1/curves.png", "final/log.csv", "curves.png", "test_CM.txt",
                     "test_F1.txt", "test_AUC.txt", "test_roc.png",
                     "test_confusion_matrix.png", "results.json"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        test_files = open(os.path.join(out, "splits", "test.txt")).read().splitlines()
        views = {v for v in bv.VIEWS for f in test_files if f"_{v}_" in os.path.basename(f)}
        self.assertLen(os.listdir(os.path.join(out, "gradcam")), len(views))
        table = open(os.path.join(out, "cv", "folds.csv")).read().splitlines()
        self.assertEqual(table[0].split(",")[:2], ["fold", "accuracy"])
        self.assertEqual([r.split(",")[0] for r in table[1:]], ["0", "1", "mean", "std"])
        res = json.load(open(os.path.join(out, "results.json")))
        self.assertEqual(res["test"]["n"], result.sizes["test"])
        self.assertEqual(res["test"]["n"], len(test_files))
        self.assertEqual(result.sizes["train"], len(
            open(os.path.join(out, "splits", "train.txt")).read().splitlines()))
        wrong = os.path.join(out, "misclassified")
        n_wrong = round((1 - res["test"]["accuracy"]) * res["test"]["n"])
        self.assertEqual(len(os.listdir(wrong)) if os.path.isdir(wrong) else 0,
                         min(n_wrong, 3))

    def test_augmented_whole_backbone_recalibrates_batchnorm(self):
        # the offline recipe: whole backbone trainable, augmentation, BatchNorm statistics
        # recomputed during training and once more at the end
        root = self.get_temp_dir()
        sample = generate_brainview(os.path.join(root, "data3"), seed=2, image_size=32,
                                    slices_per_view=4, volume_shape=(32, 20, 26),
                                    datasets=("atlasA",))
        data = bv.load_png_views(sample.datasets["atlasA"])
        config = _tiny_config(k=0, fine_tune_at="0", augment=True, calibration_every=1)
        model, _ = bv.train_model(data, config=config, run_dir=os.path.join(root, "aug"))
        self.assertIn("augment_flip", [la.name for la in model.layers])
        backbone = model.get_layer("backbone").layer
        bn = backbone.get_layer("stem_bn")
        images = bv.experiment._calibration_images(data, config)
        stem = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)
        x = np.asarray(stem(model.get_layer("preprocess")(images)))
        # the statistics match the trained weights (not those at the start of training)
        self.assertAllClose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-3,
                            atol=1e-4)

    def test_cross_dataset(self):
        root = self.get_temp_dir()
        sample = generate_brainview(os.path.join(root, "data2"), seed=1, image_size=32,
                                    slices_per_view=3, volume_shape=(32, 20, 26))
        a = bv.load_png_views(sample.datasets["atlasA"])
        b = bv.load_png_views(sample.datasets["atlasB"])
        out = os.path.join(root, "cross")
        result = bv.run_cross_dataset(a, b, out, config=_tiny_config(gradcam_per_class=0))
        self.assertEqual(result.sizes, {"train": len(a), "test": len(b)})
        self.assertEqual(result.folds, [])
        self.assertTrue(os.path.isfile(os.path.join(out, "test_F1.txt")))
        self.assertEqual(open(os.path.join(out, "splits", "test.txt")).read().splitlines(),
                         b.paths)
