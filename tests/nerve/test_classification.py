"""Tests of keras_medseg.nerve.classification and the nerve classification scripts."""
import contextlib
import importlib.util
import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import confusion_matrix, roc_auc_score

from keras_medseg.io.images import groups_from_names, list_class_folders
from keras_medseg.nerve import classification as C
from keras_medseg.training import build_transfer_classifier, get_backbone

REPO = Path(__file__).resolve().parents[2]


def _write_frames(root, videos, frames, classes=C.CLASS_NAMES, size=12, seed=0):
    """``root/<class>/v<k>_f<j>.jpg`` with random content; return root."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(videos):
            for f in range(frames):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"v{v}_f{c}{f}.jpg")
    return Path(root)


def _load_script(name):
    path = REPO / "experiments" / "nerve" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"nerve_{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_cm(path):
    rows = [line.split("\t") for line in Path(path).read_text().splitlines()
            if line and not line.startswith("#")]
    return rows[0][1:], np.array([[int(v) for v in r[1:]] for r in rows[1:]])


class SplitTest(tf.test.TestCase):

    def test_image_split_is_the_keras_split_of_the_original(self):
        root = _write_frames(os.path.join(self.get_temp_dir(), "img"), videos=3, frames=4)
        listing = list_class_folders(root)
        split = C.split_train_val(listing.paths, validation_split=0.2, seed=1337)
        train_ds, val_ds = keras.utils.image_dataset_from_directory(
            str(root), validation_split=0.2, subset="both", seed=1337, image_size=(12, 12),
            verbose=False)
        take = split.take(listing.paths)
        self.assertEqual(set(take["train"]), set(train_ds.file_paths))
        self.assertEqual(set(take["val"]), set(val_ds.file_paths))
        self.assertLen(take["val"], int(0.2 * len(listing.paths)))

    def test_video_split_never_puts_a_video_on_both_sides(self):
        paths = [f"{c}/v{v:02d}_f{f:03d}.jpg" for c in "abc" for v in range(10)
                 for f in range(v + 2)]
        for seed in (0, 1, 1337):
            split = C.split_train_val(paths, validation_split=0.25, seed=seed, split_by="video")
            groups = np.array(groups_from_names(paths, C.DEFAULT_GROUP_PATTERN))
            train_videos = set(groups[list(split.train)])
            val_videos = set(groups[list(split.val)])
            self.assertEmpty(train_videos & val_videos)
            self.assertEqual(train_videos | val_videos, set(groups))
            self.assertEqual(len(split.train) + len(split.val), len(paths))
            self.assertNotEmpty(split.val)
            self.assertBetween(len(split.val) / len(paths), 0.1, 0.4)

    def test_split_errors(self):
        with self.assertRaisesRegex(ValueError, "split_by"):
            C.split_train_val(["a_1.jpg", "b_1.jpg"], split_by="frame")
        with self.assertRaisesRegex(ValueError, "at least 2 videos"):
            C.split_train_val(["v1_1.jpg", "v1_2.jpg", "v1_3.jpg"], split_by="video")
        with self.assertRaisesRegex(ValueError, "does not match"):
            C.split_train_val(["v1_1.jpg", "noscore.jpg"], split_by="video")
        with self.assertRaisesRegex(ValueError, "too few"):
            C.split_train_val(["a.jpg", "b.jpg"], validation_split=0.2)
        with self.assertRaisesRegex(ValueError, "validation_split"):
            C.split_train_val(["a.jpg", "b.jpg"], validation_split=1.0)


class ConfigTest(tf.test.TestCase):

    def test_original_defaults_per_backbone(self):
        expected = {"densenet169": (20, "conv5_block29_0_bn"),
                    "densenet201": (20, "conv5_block28_0_bn"),
                    "mobilenetv2": (15, "block_16_project"),
                    "resnet50v2": (15, "conv5_block3_1_bn"),
                    "resnet101v2": (15, "conv5_block2_2_bn"),
                    "resnet152v2": (15, "conv5_block3_1_relu")}
        self.assertCountEqual(expected, C.NERVE_BACKBONES)
        for backbone, (epochs, layer) in expected.items():
            config = C.default_classifier_config(backbone)
            self.assertEqual(config.train.fine_tune_epochs, epochs)
            self.assertEqual(config.train.fine_tune_at, layer)
            self.assertEqual(config.train.initial_epochs, 10)
            self.assertEqual(config.train.learning_rate, 1e-3)
            self.assertEqual(config.data.batch_size, 12)
            self.assertEqual(config.data.image_size, (224, 224))
            self.assertEqual((config.data.split_by, config.data.seed), ("image", 1337))
            self.assertEqual(config.model.dropout, 0.3)

    def test_config_errors(self):
        with self.assertRaisesRegex(ValueError, "backbone"):
            C.ClassifierModelConfig(backbone="resnet7")
        with self.assertRaisesRegex(ValueError, "image_size"):
            C.ClassifierDataConfig(image_size=(32,))
        with self.assertRaisesRegex(ValueError, "group_pattern"):
            C.ClassifierDataConfig(group_pattern="(")
        with self.assertRaisesRegex(ValueError, "split_by"):
            C.ClassifierDataConfig(split_by="frame")
        with self.assertRaisesRegex(ValueError, "initial_epochs"):
            C.ClassifierTrainConfig(initial_epochs=-1)
        with self.assertRaisesRegex(ValueError, "config must be a ClassifierConfig"):
            C.train_classifier({"data": {}})
        with self.assertRaisesRegex(ValueError, "data_dir"):
            C.train_classifier(C.ClassifierConfig())


class CalibrationTest(tf.test.TestCase):

    def test_moving_statistics_equal_numpy_statistics_of_each_layer_input(self):
        keras.utils.set_random_seed(3)
        model = build_transfer_classifier("mobilenetv2", 3, input_shape=(32, 32, 3),
                                          encoder_weights=None, backbone_kwargs={"alpha": 0.35})
        backbone = get_backbone(model)
        images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
        before = [layer.trainable for layer in backbone.layers]
        n = C.calibrate_batchnorm(model, images)
        bns = [la for la in backbone.layers if isinstance(la, keras.layers.BatchNormalization)]
        self.assertEqual(n, len(bns))
        self.assertEqual([layer.trainable for layer in backbone.layers], before)
        self.assertTrue(all(la.momentum == 0.999 for la in bns))
        x = images / 127.5 - 1.0  # MobileNetV2's preprocessing
        for bn in (bns[0], bns[len(bns) // 2], bns[-1]):
            inputs = np.asarray(keras.Model(backbone.input, bn.input)(x, training=False))
            self.assertAllClose(np.asarray(bn.moving_mean), inputs.mean(axis=(0, 1, 2)),
                                rtol=1e-3, atol=1e-4)
            self.assertAllClose(np.asarray(bn.moving_variance), inputs.var(axis=(0, 1, 2)),
                                rtol=2e-3, atol=1e-4)

    def test_errors(self):
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
        with self.assertRaisesRegex(ValueError, "InferenceMode"):
            C.calibrate_batchnorm(model, np.zeros((1, 4, 4, 3)))
        with self.assertRaisesRegex(ValueError, "non-empty batch"):
            C.calibrate_batchnorm(model, np.zeros((4, 4, 3)))


class HelpTest(tf.test.TestCase):

    def test_scripts_help(self):
        for name, flags in (("train_classifier", ("--backbone", "--strategy", "--run-dir",
                                                  "--encoder-weights", "--image-size",
                                                  "--fine-tune-epochs", "--split-by",
                                                  "--data-group-pattern")),
                            ("evaluate_classifier", ("--model", "--test-dir", "--out"))):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as cm:
                _load_script(name).main(["--help"])
            self.assertEqual(cm.exception.code, 0)
            for flag in flags:
                self.assertIn(flag, out.getvalue())

    def test_help_shows_the_backbone_defaults(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            _load_script("train_classifier").main(["--backbone", "densenet169", "--help"])
        self.assertIn("conv5_block29_0_bn", out.getvalue())


@pytest.mark.slow
class EndToEndTest(tf.test.TestCase):

    def test_tiny_run_writes_every_report_and_evaluates_again(self):
        from keras_medseg.sampledata import generate_nerve

        tmp = Path(self.get_temp_dir())
        data = generate_nerve(tmp / "data", seed=1, image_size=32, n_videos=5, test_videos=1,
                              frames_per_class=2, raw_frames=0)
        cls = data.classification_dir
        config = C.ClassifierConfig(
            data=C.ClassifierDataConfig(data_dir=str(cls / "train_val"),
                                        test_dir=str(cls / "test"), image_size=(32, 32),
                                        batch_size=4, split_by="video", seed=3),
            model=C.ClassifierModelConfig(encoder_weights=None, alpha=0.35,
                                          calibration_images=8),
            train=C.ClassifierTrainConfig(initial_epochs=1, fine_tune_epochs=1,
                                          tensorboard=False, progress="none", run_name="r1"))
        run = tmp / "run"
        result = C.train_classifier(config, run)
        name = "MobileNetV2"
        files = ["config.json", "log.csv", "best.keras", "model.keras", "acc_loss.png",
                 "acc_loss_after_fine_tuning.png", "model.txt", "splits/train.txt",
                 "splits/val.txt", "splits/test.txt"]
        files += [f"{name}_{side}_{kind}" for side in ("train", "val", "test")
                  for kind in ("CM.txt", "F1.txt", "AUC.txt", "roc.png")]
        for f in files:
            self.assertTrue((run / f).is_file(), f)
        # epochs numbered on across the stages, no repeated epoch
        self.assertEqual(result.history1["epoch"], [0])
        self.assertEqual(result.history2["epoch"], [1])
        # the reports parse and agree with scikit-learn on the returned scores
        for side, ev in result.evaluations.items():
            names, cm = _read_cm(run / f"{name}_{side}_CM.txt")
            self.assertEqual(names, list(C.CLASS_NAMES))
            self.assertEqual(int(cm.sum()), len(ev.y_true))
            self.assertAllEqual(cm, confusion_matrix(ev.y_true, ev.y_pred, labels=[0, 1, 2]))
            f1 = (run / f"{name}_{side}_F1.txt").read_text()
            self.assertIn(f"samples: {len(ev.y_true)}", f1)
            self.assertIn(f"accuracy: {ev.accuracy:.4f}", f1)
        test = result.evaluations["test"]
        self.assertLen(test.y_true, 6)
        micro = roc_auc_score(np.eye(3)[test.y_true].ravel(), test.y_score.ravel())
        self.assertAlmostEqual(result.auc("test")["micro"], micro, places=6)
        self.assertIn("micro", (run / f"{name}_test_AUC.txt").read_text())
        # one sample per test batch (6 frames, batch 4), named as the original
        samples = sorted(p.name for p in (run / "samples").glob("*.png"))
        self.assertLen(samples, 2)
        self.assertTrue(all(s.startswith(f"{name}r1") for s in samples))
        # the split by video: no video on two sides, test videos apart
        side_videos = {}
        for side in ("train", "val", "test"):
            lines = (run / "splits" / f"{side}.txt").read_text().splitlines()
            side_videos[side] = {os.path.basename(p).split("_")[0] for p in lines}
        self.assertEmpty(side_videos["train"] & side_videos["val"])
        self.assertEqual(side_videos["test"], {"v004"})
        saved = json.loads((run / "config.json").read_text())
        self.assertEqual(saved["data"]["split_by"], "video")
        self.assertEqual(saved["classes"]["class_names"], list(C.CLASS_NAMES))
        self.assertIn("trainable variables", (run / "model.txt").read_text())
        # the saved model evaluated on the test folder gives the same predictions
        out = tmp / "video"
        again = C.evaluate_classifier_folder(run / "model.keras", cls / "test", out,
                                             batch_size=4)
        self.assertAllEqual(again.y_true, test.y_true)
        self.assertAllClose(again.y_score, test.y_score, atol=1e-5)
        for kind in ("CM.txt", "F1.txt", "AUC.txt", "roc.png"):
            self.assertTrue((out / f"{name}_test_{kind}").is_file())
        with self.assertRaisesRegex(FileNotFoundError, "missing.keras"):
            C.evaluate_classifier_folder(tmp / "missing.keras", cls / "test", out)
        two = _write_frames(tmp / "two", videos=1, frames=1, classes=("a", "b"), size=32)
        with self.assertRaisesRegex(ValueError, "2 classes"):
            C.evaluate_classifier_folder(run / "model.keras", two, out)
