"""Nerve segmentation training and evaluation: hand-computed IoU/Dice, fixed ImageSets split,
augmentation that changes between epochs, and a tiny end-to-end train + evaluate."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_medseg.nerve import segmentation as seg


def _export(root, n=12, size=32):
    """A Supervisely export whose image i is constant 10 * (i + 1) in the green channel and
    bright in its left half (so a horizontal flip is visible)."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks_machine"), exist_ok=True)
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 1] = 10 * (i + 1)
        img[:, : size // 2, 0] = 250
        mask = np.zeros((size, size, 3), np.uint8)
        mask[size // 4: size // 2, 2:9, 0] = 1
        Image.fromarray(img).save(os.path.join(root, "img", f"f{i:02d}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks_machine", f"f{i:02d}.png"))
    return root


class ScoreTest(tf.test.TestCase):
    def test_hand_cases(self):
        t = np.zeros((3, 4, 4), bool)
        p = np.zeros((3, 4, 4), bool)
        t[0, :2, :2] = True          # 4 px
        p[0, :2, :1] = True          # 2 px inside: I=2, U=4
        t[1, 0, 0] = True            # one mask empty -> 0
        # image 2: both empty -> NaN plain, 1 smoothed
        s = seg.score_masks(t, p, ["a", "b", "c"])
        np.testing.assert_allclose(s.iou[:2], [0.5, 0.0])
        np.testing.assert_allclose(s.dice[:2], [2 * 2 / 6, 0.0])
        self.assertTrue(np.isnan(s.iou[2]) and np.isnan(s.dice[2]))
        np.testing.assert_allclose(s.iou_smooth, [(2 + 1e-15) / (4 + 1e-15), 1e-15 / (1 + 1e-15), 1.0])
        np.testing.assert_allclose(s.dice_smooth[2], 1.0)
        summ = s.summaries()
        self.assertEqual((summ["iou"].n, summ["iou"].n_nan), (2, 1))
        self.assertAlmostEqual(summ["iou"].mean, 0.25)

    def test_write_evaluation(self):
        s = seg.score_masks(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool))
        path = seg.write_evaluation(os.path.join(self.get_temp_dir(), "e.txt"), {"test": s})
        text = open(path).read()
        self.assertIn("Dice: mean 1.0000", text)
        self.assertIn("95% CI", text)

    def test_default_configs(self):
        d, m, t = seg.default_configs("unet_mobilenetv2")
        self.assertEqual((d.batch_size, t.epochs, t.learning_rate, m.dropout), (1, 13, 1e-3, 0.2))
        d, m, t = seg.default_configs("doubleunet")
        self.assertEqual((d.batch_size, t.epochs, t.learning_rate, t.reduce_lr_patience,
                          t.early_stopping_patience), (3, 20, 1e-4, 20, 50))
        d, m, t = seg.default_configs("deeplabv3plus")
        self.assertEqual((d.image_size, d.batch_size, t.steps, m.output_stride),
                         ((512, 512), 5, 60000, 16))
        with self.assertRaisesRegex(ValueError, "model"):
            seg.default_configs("segnet")


class SplitTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.root = _export(os.path.join(self.get_temp_dir(), "export"))
        self.run_dir = os.path.join(self.get_temp_dir(), "run")
        self.dc = seg.SegDataConfig(data_dir=self.root, image_size=(32, 32), seed=3)
        self.mc = seg.SegModelConfig(encoder_weights=None)

    @staticmethod
    def _ids(ds):
        return [int(round(float(x[0, 0, 1]) / 10)) - 1 for x, _ in ds.as_numpy_iterator()]

    def test_fixed_split_and_random_flip(self):
        datasets, splits = seg.make_datasets(self.dc, self.mc, run_dir=self.run_dir)
        self.assertTrue(os.path.isfile(os.path.join(self.run_dir, "ImageSets", "train.txt")))
        names = {k: set(v) for k, v in splits.items()}
        self.assertFalse(names["train"] & names["val"] or names["train"] & names["test"]
                         or names["val"] & names["test"])
        self.assertEqual(len(names["train"] | names["val"] | names["test"]), 12)
        epochs, flips = [], []
        for _ in range(3):
            xs = list(datasets["train"].as_numpy_iterator())
            epochs.append(sorted(int(round(float(x[0, 0, 1]) / 10)) - 1 for x, _ in xs))
            flips.append([bool(x[0, 0, 0] < 128) for x, _ in xs])
            for x, m in xs:  # the mask is flipped with its image
                flipped = bool(x[0, 0, 0] < 128)
                self.assertEqual((m[10, 5, 0], m[10, 26, 0]), (0, 1) if flipped else (1, 0))
        want = sorted(int(n[1:]) for n in splits["train"])
        self.assertEqual(epochs[0], want)
        self.assertEqual(epochs[1], want)
        self.assertEqual(epochs[2], want)
        self.assertNotEqual(flips[0], flips[1])
        # The same split is read back from the run folder (never re-drawn).
        again = seg.load_split_names(seg.SegDataConfig(data_dir=self.root,
                                                       imagesets=self.run_dir),
                                     [f"f{i:02d}" for i in range(12)])
        self.assertEqual(again, splits)
        # Masks keep their label values (nearest resize).
        _, m = next(datasets["val"].as_numpy_iterator())
        self.assertTrue(set(np.unique(m)) <= {0, 1})

    def test_bad_imagesets(self):
        folder = os.path.join(self.get_temp_dir(), "sets")
        os.makedirs(os.path.join(folder, "ImageSets"))
        for split, names in (("train", "f00\nf01\n"), ("val", "f01\n"), ("test", "")):
            with open(os.path.join(folder, "ImageSets", f"{split}.txt"), "w") as f:
                f.write(names)
        dc = seg.SegDataConfig(data_dir=self.root, imagesets=folder)
        with self.assertRaisesRegex(ValueError, "overlap"):
            seg.load_split_names(dc, [f"f{i:02d}" for i in range(12)])
        with self.assertRaisesRegex(ValueError, "not in the data"):
            seg.load_split_names(dc, ["f00"])
        with self.assertRaisesRegex(FileNotFoundError, "ImageSets"):
            seg.load_split_names(seg.SegDataConfig(data_dir=self.root), ["f00"])

    def test_doubleunet_targets(self):
        img = tf.constant(np.full((4, 4, 3), 200, np.float32))
        mask = tf.constant(np.eye(4, dtype=np.uint8)[..., None])
        x, y = seg._to_model_batch("doubleunet")(img, mask)
        self.assertAllClose(x, np.full((4, 4, 3), 127 / 255))
        self.assertAllEqual(y, np.stack([np.eye(4)] * 2, -1))

    @pytest.mark.slow
    def test_tiny_end_to_end(self):
        dc = seg.SegDataConfig(data_dir=self.root, image_size=(32, 32), batch_size=4, seed=1)
        tc = seg.SegTrainConfig(run_dir=self.run_dir, epochs=2, tensorboard=False,
                                progress="none", panels=2)
        run = seg.train_segmenter(dc, self.mc, tc, log=lambda *a: None)
        for f in ("TrainValResult.txt", "evaluation.txt", "loss.png", "accuracy.png", "IOU.png",
                  "predictions_test.png", "config.json", "splits/train.txt", "log.csv",
                  "samples/epoch_002.png", "final.keras", "per_image_test.csv"):
            self.assertTrue(os.path.isfile(os.path.join(self.run_dir, f)), f)
        self.assertIn("Dice (smooth 1e-15)", open(os.path.join(self.run_dir,
                                                               "evaluation.txt")).read())
        self.assertEqual(len(run.scores["test"].names), len(run.splits["test"]))
        # The evaluation's masks are the model's argmax == 1 predictions.
        ds = run.run_dir
        x, y = next(iter(seg.make_datasets(dataclasses_replace(dc), self.mc,
                                           run_dir=ds)[0]["test"].batch(8)))
        pred = seg.predict_foreground(run.model, x.numpy(), kind="unet_mobilenetv2")
        want = seg.score_masks(y.numpy()[..., 0] == 1, pred).dice
        np.testing.assert_allclose(run.scores["test"].dice, want)


def dataclasses_replace(dc):
    import dataclasses

    return dataclasses.replace(dc, augment=False)
