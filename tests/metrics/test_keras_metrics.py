"""Tests of keras_medseg.metrics.keras: streaming metrics and losses against the numpy
functions, in compile/fit, and through a .keras save/load round trip."""
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.metrics import (
    DiceCoefficient,
    IoU,
    bce_dice_loss,
    compute_dice,
    compute_iou,
    dice_loss,
)


def _batches(seed, n_batches=3, shape=(2, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    y = [(rng.random(shape) > 0.6).astype(np.float32) for _ in range(n_batches)]
    p = [np.clip(0.5 * t + 0.6 * rng.random(shape), 0, 1).astype(np.float32) for t in y]
    return y, p


def _np_bce(y, p, eps=1e-7):
    p = np.clip(p.astype(np.float64), eps, 1 - eps)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


class StreamingMetricTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.parameters((DiceCoefficient, compute_dice), (IoU, compute_iou))
    def test_streaming_equals_pooled_numpy(self, cls, fn):
        y, p = _batches(0)
        metric = cls()
        for t, q in zip(y, p):
            metric.update_state(t, q)
        expected = fn(np.concatenate(y), np.concatenate(p) >= 0.5, batched=False)[0, 0]
        self.assertAllClose(float(metric.result()), expected, rtol=1e-6)
        metric.reset_state()
        metric.update_state(y[0], p[0])
        self.assertAllClose(float(metric.result()),
                            fn(y[0], p[0] >= 0.5, batched=False)[0, 0], rtol=1e-6)

    @parameterized.parameters(0.3, 0.7)
    def test_threshold(self, threshold):
        y, p = _batches(1)
        metric = IoU(threshold=threshold)
        metric.update_state(y[0], p[0])
        self.assertAllClose(float(metric.result()),
                            compute_iou(y[0], p[0] >= threshold, batched=False)[0, 0],
                            rtol=1e-6)

    def test_soft_and_smooth(self):
        y, p = _batches(2)
        t, q = y[0].astype(np.float64), p[0].astype(np.float64)
        inter, st, sp = np.sum(t * q), np.sum(t), np.sum(q)
        dice = DiceCoefficient(threshold=None, smooth=1.0)
        dice.update_state(y[0], p[0])
        self.assertAllClose(float(dice.result()), (2 * inter + 1) / (st + sp + 1), rtol=1e-5)
        iou = IoU(threshold=None)
        iou.update_state(y[0], p[0])
        self.assertAllClose(float(iou.result()), inter / (st + sp - inter), rtol=1e-5)

    def test_empty_rule(self):
        zeros = np.zeros((2, 4, 4, 1), np.float32)
        for cls in (DiceCoefficient, IoU):
            with self.subTest(cls=cls.__name__):
                m = cls()
                m.update_state(zeros, zeros + 0.1)
                self.assertTrue(np.isnan(float(m.result())))
                m.update_state(zeros, zeros + 0.9)  # one empty: 0
                self.assertEqual(float(m.result()), 0.0)
                smoothed = cls(smooth=1.0)
                smoothed.update_state(zeros, zeros)
                self.assertEqual(float(smoothed.result()), 1.0)

    def test_trailing_channel_alignment(self):
        y, p = _batches(3)
        a, b = DiceCoefficient(), DiceCoefficient()
        a.update_state(y[0][..., 0], p[0])   # (B, H, W) against (B, H, W, 1)
        b.update_state(y[0], p[0][..., 0])   # (B, H, W, 1) against (B, H, W)
        expected = compute_dice(y[0], p[0] >= 0.5, batched=False)[0, 0]
        self.assertAllClose(float(a.result()), expected, rtol=1e-6)
        self.assertAllClose(float(b.result()), expected, rtol=1e-6)

    def test_class_id_one_hot_and_sparse(self):
        rng = np.random.default_rng(4)
        labels = rng.integers(0, 3, (2, 6, 6))
        logits = rng.normal(size=(2, 6, 6, 3)) + 2.0 * np.eye(3)[labels]
        probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
        onehot = np.eye(3, dtype=np.float32)[labels]
        for k in range(3):
            expected = compute_dice(labels == k, probs[..., k] >= 0.5, batched=False)[0, 0]
            for y_true in (onehot, labels, labels[..., None]):
                with self.subTest(k=k, y_true_shape=y_true.shape):
                    m = DiceCoefficient(class_id=k)
                    m.update_state(y_true, probs)
                    self.assertAllClose(float(m.result()), expected, rtol=1e-6)

    def test_sample_weight(self):
        y, p = _batches(5)
        weighted = DiceCoefficient()
        weighted.update_state(y[0], p[0], sample_weight=np.array([1.0, 0.0]))
        first_only = DiceCoefficient()
        first_only.update_state(y[0][:1], p[0][:1])
        self.assertAllClose(float(weighted.result()), float(first_only.result()))
        doubled = IoU()
        doubled.update_state(y[0], p[0], sample_weight=np.array([2.0, 2.0]))
        plain = IoU()
        plain.update_state(y[0], p[0])
        self.assertAllClose(float(doubled.result()), float(plain.result()))

    def test_config_round_trip(self):
        m = IoU(threshold=0.3, class_id=2, smooth=1e-3, name="iou_tendon")
        config = m.get_config()
        self.assertEqual({k: config[k] for k in ("threshold", "class_id", "smooth", "name")},
                         dict(threshold=0.3, class_id=2, smooth=1e-3, name="iou_tendon"))
        clone = IoU.from_config(config)
        self.assertEqual(clone.get_config(), config)
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
        self.assertIsInstance(restored, IoU)
        self.assertEqual(restored.get_config(), config)

    def test_errors(self):
        cases = [
            (dict(threshold=0.0), "threshold"),
            (dict(threshold=1.5), "threshold"),
            (dict(threshold="0.5"), "threshold"),
            (dict(class_id=-1), "class_id"),
            (dict(class_id=1.0), "class_id"),
            (dict(smooth=-1.0), "smooth"),
            (dict(smooth=float("nan")), "smooth"),
        ]
        for cls in (DiceCoefficient, IoU):
            for kwargs, message in cases:
                with self.subTest(cls=cls.__name__, kwargs=kwargs):
                    with self.assertRaisesRegex(ValueError, message):
                        cls(**kwargs)
        y = np.zeros((2, 4, 4, 1), np.float32)
        with self.assertRaisesRegex(ValueError, "y_true and y_pred must have compatible"):
            DiceCoefficient().update_state(y, np.zeros((2, 4, 5, 1), np.float32))
        with self.assertRaisesRegex(ValueError, "y_true and y_pred must have compatible"):
            DiceCoefficient().update_state(y, np.zeros((2, 4, 4, 2), np.float32))
        with self.assertRaisesRegex(ValueError, "class_id=3 is out of range"):
            DiceCoefficient(class_id=3).update_state(y, np.zeros((2, 4, 4, 3), np.float32))
        with self.assertRaisesRegex(ValueError, "y_pred must have a trailing class axis"):
            DiceCoefficient(class_id=0).update_state(np.zeros(4), np.zeros(4, np.float32))
        with self.assertRaisesRegex(ValueError, "y_true must be one-hot"):
            DiceCoefficient(class_id=0).update_state(np.zeros((2, 4, 4, 2)),
                                                     np.zeros((2, 4, 4, 3), np.float32))


class LossTest(tf.test.TestCase):

    def test_dice_loss_matches_numpy(self):
        y, p = _batches(6)
        t, q = y[0].astype(np.float64), p[0].astype(np.float64)
        for smooth in (1.0, 1e-5):
            expected = 1 - (2 * np.sum(t * q) + smooth) / (np.sum(t) + np.sum(q) + smooth)
            self.assertAllClose(float(dice_loss(y[0], p[0], smooth=smooth)), expected,
                                rtol=1e-5)
        # Binary probabilities at the threshold's output: 1 - the numpy Dice.
        hard = (p[0] >= 0.5).astype(np.float32)
        self.assertAllClose(float(dice_loss(y[0], hard, smooth=0.0)),
                            1 - compute_dice(y[0], hard, batched=False)[0, 0], rtol=1e-6)
        self.assertAllClose(float(dice_loss(y[0], y[0])), 0.0, atol=1e-7)

    def test_bce_dice_loss_matches_numpy(self):
        y, p = _batches(7)
        t, q = y[0].astype(np.float64), p[0].astype(np.float64)
        dice = (2 * np.sum(t * q) + 1) / (np.sum(t) + np.sum(q) + 1)
        expected = _np_bce(t, q) + 1 - dice
        self.assertAllClose(float(bce_dice_loss(y[0], p[0])), expected, rtol=1e-5)
        # The same value Keras' own BinaryCrossentropy gives, plus the Dice loss.
        keras_bce = float(keras.losses.BinaryCrossentropy()(y[0], p[0]))
        self.assertAllClose(float(bce_dice_loss(y[0], p[0])),
                            keras_bce + float(dice_loss(y[0], p[0])), rtol=1e-5)

    def test_errors(self):
        y = np.zeros((1, 4, 4, 1), np.float32)
        for fn in (dice_loss, bce_dice_loss):
            with self.subTest(fn=fn.__name__):
                with self.assertRaisesRegex(ValueError, "smooth"):
                    fn(y, y, smooth=-1.0)
                with self.assertRaisesRegex(ValueError, "y_true and y_pred must have"):
                    fn(y, np.zeros((1, 4, 4, 2), np.float32))


def _tiny_model():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="head")(
        inputs)
    return keras.Model(inputs, outputs)


class KerasIntegrationTest(tf.test.TestCase):

    def test_compile_fit_evaluate_save_load(self):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(8)
        x = rng.random((4, 8, 8, 1)).astype(np.float32)
        y = (x > 0.5).astype(np.float32)
        model = _tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=bce_dice_loss,
                      metrics=[DiceCoefficient(), IoU(threshold=0.5, name="iou")])
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        self.assertEqual(set(history.history), {"loss", "dice", "iou"})
        self.assertTrue(np.isfinite(history.history["loss"][0]))

        logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        pred = model.predict(x, verbose=0)
        self.assertAllClose(logs["dice"], compute_dice(y, pred >= 0.5, batched=False)[0, 0],
                            rtol=1e-5)
        self.assertAllClose(logs["iou"], compute_iou(y, pred >= 0.5, batched=False)[0, 0],
                            rtol=1e-5)
        # evaluate averages the per-batch (batch-level) losses.
        expected_loss = np.mean([float(bce_dice_loss(y[i:i + 2], pred[i:i + 2]))
                                 for i in (0, 2)])
        self.assertAllClose(logs["loss"], expected_loss, rtol=1e-4)

        path = os.path.join(self.get_temp_dir(), "tiny.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertAllClose(restored.predict(x, verbose=0), pred)
        restored_logs = restored.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        for key in ("loss", "dice", "iou"):
            self.assertAllClose(restored_logs[key], logs[key], rtol=1e-5)
        restored.fit(x, y, batch_size=4, epochs=1, verbose=0)  # the restored loss trains

    def test_dice_loss_in_compile(self):
        keras.utils.set_random_seed(1)
        x = np.random.default_rng(9).random((2, 8, 8, 1)).astype(np.float32)
        y = (x > 0.4).astype(np.float32)
        model = _tiny_model()
        model.compile(optimizer="adam", loss=dice_loss, metrics=[DiceCoefficient(smooth=1.0)])
        model.fit(x, y, batch_size=2, epochs=1, verbose=0)
        logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        pred = model.predict(x, verbose=0)
        self.assertAllClose(logs["loss"], float(dice_loss(y, pred)), rtol=1e-5)


class LazyImportTest(tf.test.TestCase):

    def test_metrics_package_does_not_import_keras(self):
        code = ("import sys, keras_medseg.metrics as m; "
                "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules; "
                "m.DiceCoefficient; assert 'keras' in sys.modules; "
                "import keras_medseg.metrics as mm\n"
                "try:\n    mm.no_such_name\nexcept AttributeError:\n    print('ok')")
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(result.stdout.strip(), "ok")


if __name__ == "__main__":
    tf.test.main()
