"""iseg training pipeline: optimiser, loss, schedule, splits, ICBM152 hemispheres, end to end."""
import csv
import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_medseg.io.hdf5 import read_iseg_hdf5, write_iseg_hdf5
from keras_medseg.iseg import evaluation as E
from keras_medseg.iseg import pipeline as P


def _torch_adam_reference(w, grads, *, lr, b1, b2, eps, wd):
    """PyTorch ``Adam(weight_decay=wd)`` written out in NumPy (L2 added to the gradient)."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


class OptimiserTest(tf.test.TestCase):
    def test_adam_l2_matches_pytorch_adam(self):
        rng = np.random.default_rng(0)
        w0 = rng.normal(size=(5,)).astype(np.float64)
        grads = [rng.normal(size=(5,)) for _ in range(4)]
        config = P.IsegTrainConfig(learning_rate=0.05, weight_decay=0.3)
        opt = P.make_optimizer(config)
        self.assertIsInstance(opt, P.AdamL2)
        var = keras.Variable(w0.astype(np.float32))
        for g in grads:
            opt.apply_gradients([(keras.ops.convert_to_tensor(g.astype(np.float32)), var)])
        expected = _torch_adam_reference(w0, grads, lr=0.05, b1=0.97, b2=0.999, eps=1e-8,
                                         wd=0.3)
        self.assertAllClose(keras.ops.convert_to_numpy(var), expected, rtol=1e-5, atol=1e-6)
        # Decoupled decay (AdamW) gives a different trajectory.
        adamw = P.make_optimizer(P.IsegTrainConfig(learning_rate=0.05, weight_decay=0.3,
                                                   weight_decay_mode="adamw"))
        self.assertIsInstance(adamw, keras.optimizers.AdamW)
        var2 = keras.Variable(w0.astype(np.float32))
        for g in grads:
            adamw.apply_gradients([(keras.ops.convert_to_tensor(g.astype(np.float32)), var2)])
        self.assertGreater(np.abs(keras.ops.convert_to_numpy(var2) - expected).max(), 1e-3)

    def test_adam_l2_serializes(self):
        opt = P.AdamL2(l2=6e-4, learning_rate=2e-4, beta_1=0.97)
        clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
        self.assertIsInstance(clone, P.AdamL2)
        self.assertEqual(clone.l2, 6e-4)
        self.assertAllClose(clone.beta_1, 0.97)
        with self.assertRaisesRegex(ValueError, "weight_decay"):
            P.AdamL2(l2=1e-3, weight_decay=1e-3)

    def test_step_decay(self):
        got = [P.step_decay(e, learning_rate=2e-4, step_epochs=5000, factor=0.1)
               for e in (0, 4999, 5000, 12000)]
        self.assertAllClose(got, [2e-4, 2e-4, 2e-5, 2e-6])

    def test_config_defaults_are_the_originals(self):
        t = P.IsegTrainConfig()
        self.assertEqual((t.learning_rate, t.beta_1, t.beta_2, t.weight_decay,
                          t.lr_step_epochs, t.lr_step_factor, t.loss, t.weight_decay_mode),
                         (2e-4, 0.97, 0.999, 6e-4, 5000, 0.1, "ce", "l2"))
        d = P.IsegDataConfig()
        self.assertEqual((d.crop_size, d.batch_size, d.repeats, d.val_fraction),
                         ((64, 64, 64), 4, 4, 0.1))
        with self.assertRaisesRegex(ValueError, "weight_decay_mode"):
            P.IsegTrainConfig(weight_decay_mode="sgd")
        with self.assertRaisesRegex(ValueError, "crop_size"):
            P.IsegDataConfig(crop_size=(64, 64))
        with self.assertRaisesRegex(ValueError, "levels"):
            P.IsegModelConfig(levels=4)
        self.assertEqual(P.IsegModelConfig().width, 1.0)
        with self.assertRaisesRegex(ValueError, "width must be a positive number"):
            P.IsegModelConfig(width=0.0)


class DiceCELossTest(tf.test.TestCase):
    def test_against_numpy(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(2, 4, 5, 3, 4)).astype(np.float32)
        labels = rng.integers(0, 4, size=(2, 4, 5, 3))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        onehot = np.eye(4)[labels]
        ce = -np.log((p * onehot).sum(-1)).mean()
        dice = (2 * (p * onehot).sum((0, 1, 2, 3)) + 1) / (p.sum((0, 1, 2, 3))
                                                          + onehot.sum((0, 1, 2, 3)) + 1)
        loss = P.make_loss("dice_ce")(labels, logits)
        self.assertAllClose(loss, ce + 1 - dice.mean(), rtol=1e-5)
        ce_only = P.make_loss("ce")(labels, logits)
        self.assertAllClose(ce_only, ce, rtol=1e-5)
        with self.assertRaisesRegex(ValueError, "loss"):
            P.make_loss("focal")


class SplitTest(tf.test.TestCase):
    def test_subject_split(self):
        files = [f"/d/subject-{i}.h5" for i in range(1, 11)]
        split = P.split_subjects(files, val_fraction=0.1, seed=3)
        self.assertLen(split["val"], 1)
        self.assertLen(split["train"], 9)
        self.assertEmpty(set(split["train"]) & set(split["val"]))
        self.assertEqual(P.split_subjects(files, val_fraction=0.1, seed=3), split)
        named = P.split_subjects(files, val_subjects=("subject-10", "subject-2"))
        self.assertEqual([f.name for f in named["val"]], ["subject-2.h5", "subject-10.h5"])
        self.assertEqual(named["train"][-1].name, "subject-9.h5")  # natural order
        with self.assertRaisesRegex(ValueError, "val_subjects"):
            P.split_subjects(files, val_subjects=("subject-11",))
        with self.assertRaisesRegex(ValueError, "at least 2"):
            P.split_subjects(files[:1], val_fraction=0.1)

    def test_validation_crops_cover_every_voxel(self):
        tmp = self.get_temp_dir()
        rng = np.random.default_rng(2)
        label = rng.integers(0, 4, (20, 13, 18)).astype(np.uint8)
        data = np.stack([label.astype(np.float32), -label.astype(np.float32)])
        path = write_iseg_hdf5(f"{tmp}/s.h5", data, label)
        x, y = P.validation_crops([path], (8, 16, 8))  # axis 1 smaller than the crop: padded
        self.assertEqual(x.shape[1:], (8, 16, 8, 2))
        self.assertAllEqual(x[..., 0], y)
        # Reassemble: every voxel of the subject appears in some crop at its place.
        recon = np.full((20, 16, 18), -1)
        i = 0
        for z in (0, 8, 12):
            for xx in (0, 8, 10):
                recon[z:z + 8, :, xx:xx + 8] = y[i]
                i += 1
        self.assertEqual(i, len(y))
        self.assertAllEqual(recon[:, :13], label)


class IcbmHemisphereTest(tf.test.TestCase):
    def _volume(self):
        rng = np.random.default_rng(4)
        shape = (12, 14, 21)
        labels = rng.integers(0, 4, shape).astype(np.uint8)
        image = np.where(labels > 0, 50.0 * labels + rng.normal(0, 5, shape), 0)
        image = image.astype(np.float32)
        vol = types.SimpleNamespace(array=image, spacing=(1.0, 1.0, 1.0))
        return types.SimpleNamespace(image=vol, labels=types.SimpleNamespace(array=labels),
                                     source="test"), image, labels

    def test_downsample_against_loops(self):
        _, image, labels = self._volume()
        img, lab = P.downsample_volume(image, labels, 2)
        self.assertEqual(img.shape, (6, 7, 10))
        for idx in [(0, 0, 0), (5, 6, 9), (2, 3, 4)]:
            block = tuple(slice(2 * i, 2 * i + 2) for i in idx)
            self.assertAllClose(img[idx], image[block].mean(), rtol=1e-5)
            counts = np.bincount(labels[block].ravel(), minlength=4)
            self.assertEqual(lab[idx], np.argmax(counts))

    def test_hemispheres_disjoint_and_normalised(self):
        volume, image, labels = self._volume()
        tmp = self.get_temp_dir()
        rec = P.prepare_icbm152_hemispheres(tmp, downsample=1, margin=0, volume=volume)
        self.assertEqual(rec["midplane_x"], 10)
        x_tr, y_tr = read_iseg_hdf5(rec["train"])
        x_te, y_te = read_iseg_hdf5(rec["test"])
        self.assertEqual(x_tr.shape[-1], 1)
        # With margin 0 the crops are the masks' bounding boxes inside each half.
        (b_tr, b_te) = rec["bounds"]["train"], rec["bounds"]["test"]
        first = labels[:, :, :10]
        second = labels[:, :, 10:]
        sl_tr = tuple(slice(a, b) for a, b in b_tr)
        sl_te = tuple(slice(a, b) for a, b in b_te)
        self.assertAllEqual(y_tr, first[sl_tr])
        self.assertAllEqual(y_te, second[sl_te])
        # Global x ranges of the two subjects do not overlap.
        self.assertLessEqual(b_tr[2][1], 10)
        self.assertGreaterEqual(10 + b_te[2][0], 10)
        # z-score inside each half's own mask.
        half = image[:, :, 10:]
        inside = half[half > 0]
        self.assertAllClose(x_te[..., 0], ((half - inside.mean()) / inside.std())[sl_te],
                            atol=1e-4)
        with open(f"{tmp}/split.json") as f:
            self.assertEqual(json.load(f)["train_half"], "first")
        rec2 = P.prepare_icbm152_hemispheres(f"{tmp}/b", downsample=1, margin=0,
                                             volume=volume, train_half="second")
        self.assertAllEqual(read_iseg_hdf5(rec2["train"])[1], y_te)

    def test_crop_size_for(self):
        self.assertEqual(P.crop_size_for((94, 116, 49), (64, 64, 64)), (64, 64, 48))
        self.assertEqual(P.crop_size_for((20, 5, 40), (32, 32, 32), levels=3), (16, 16, 32))


@pytest.mark.slow
class EndToEndTest(tf.test.TestCase):
    def test_train_resume_and_evaluate(self):
        tmp = self.get_temp_dir()
        files = P.prepare_synthetic_subjects(f"{tmp}/sample", n_subjects=3, shape=(24, 24, 24),
                                             margin=4)
        self.assertLen(files, 3)
        data = P.IsegDataConfig(crop_size=(16, 16, 16), batch_size=2, repeats=1,
                                val_fraction=0.34, seed=0)
        train = P.IsegTrainConfig(run_dir=f"{tmp}/run", epochs=2, learning_rate=1e-3,
                                  progress="none", seed=0, run_eagerly=True)

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    raise KeyboardInterrupt("simulated interruption")

        model = P.IsegModelConfig(width=0.25)
        with self.assertRaises(KeyboardInterrupt):
            P.train_iseg(data, model, train, files=files, callbacks=[Interrupt()], verbose=0)

        started = []

        class Record(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                started.append(epoch)

        result = P.train_iseg(data, model, train, files=files, callbacks=[Record()], verbose=0)
        self.assertEqual(started, [1])  # resumed after the finished epoch 0
        self.assertEqual(result.channels, 2)
        with open(f"{tmp}/run/log.csv", newline="") as f:
            log = list(csv.DictReader(f))
        self.assertEqual([int(r["epoch"]) for r in log], [0, 1])
        self.assertIn("val_loss", log[-1])
        splits = {k: open(f"{tmp}/run/splits/{k}.txt").read().split() for k in ("train", "val")}
        self.assertLen(splits["val"], 1)
        self.assertEmpty(set(splits["train"]) & set(splits["val"]))
        with open(f"{tmp}/run/config.json") as f:
            config = json.load(f)
        self.assertEqual(config["train"]["beta_1"], 0.97)
        self.assertEqual(config["model"]["width"], 0.25)
        best = E.load_model(f"{tmp}/run/best.keras")
        self.assertEqual(best.count_params(),
                         P.build_model(P.IsegModelConfig(**config["model"]), 2).count_params())
        self.assertLess(best.count_params(), P.build_model(P.IsegModelConfig(), 2).count_params())
        self.assertIsInstance(best.optimizer, P.AdamL2)
        self.assertAllClose(best.optimizer.l2, 6e-4)
        with self.assertRaisesRegex(FileNotFoundError, "missing.keras"):
            E.load_model(f"{tmp}/missing.keras")

        ev = E.evaluate_subjects(result.model, result.splits["val"], f"{tmp}/eval",
                                 window=(16, 16, 16), batch_size=2)
        self.assertLen(ev.rows, 3)
        self.assertTrue(np.all(np.isfinite([r["DSC"] for r in ev.rows])
                               | np.isnan([r["DSC"] for r in ev.rows])))
        stem = result.splits["val"][0].stem
        for name in ("metrics_per_subject.csv", "metrics_mean.md", f"overlay_{stem}.png"):
            self.assertTrue(tf.io.gfile.exists(f"{tmp}/eval/{name}"), name)
