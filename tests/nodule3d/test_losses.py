"""Tests of the nodule3d losses and regression encoding against NumPy references."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.nodule3d import losses as LS
from keras_medseg.nodule3d.models import build_candidate_screening, build_fp_reduction


def np_crossentropy(y_true, y_pred):
    p = np.clip(y_pred, 1e-7, 1 - 1e-7)
    return -np.sum(y_true * np.log(p), axis=-1)


def np_smooth_l1(x, sigma=1.0):
    s2 = sigma ** 2
    return np.where(np.abs(x) < 1 / s2, 0.5 * s2 * x ** 2, np.abs(x) - 0.5 / s2)


def batch(n, seed, classes=2, spatial=False):
    rng = np.random.default_rng(seed)
    y_true = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    y_pred = rng.dirichlet(np.ones(classes), n).astype(np.float32)
    if spatial:       # stage-1 training output: (batch, 1, 1, 1, classes)
        y_true, y_pred = y_true[:, None, None, None], y_pred[:, None, None, None]
    return y_true, y_pred


class OnlineSampleFilteringTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((32, 16, 8, False), (32, 16, 8, True), (7, 3, 2, False),
                              (2, 1, 0, False), (1, 1, 0, False), (5, 2, 1, False))
    def test_matches_numpy_reference(self, n, n_hard, n_rand, spatial):
        y_true, y_pred = batch(n, seed=n, spatial=spatial)
        loss = LS.OnlineSampleFilteringLoss(seed=11)(y_true, y_pred)
        # The same seed draws the same selection.
        ce = np_crossentropy(y_true, y_pred).reshape(n)
        mask = np.asarray(LS.OnlineSampleFilteringLoss(seed=11).selection_mask(ce)) > 0
        order = np.argsort(-ce, kind="stable")
        hard, rest = order[:n_hard], order[n_hard:]
        self.assertTrue(np.all(mask[hard]))
        self.assertEqual(int(mask[rest].sum()), n_rand)
        self.assertAllClose(loss, ce[mask].mean(), rtol=1e-5)

    def test_random_part_is_uniform(self):
        ce = np.linspace(2.0, 0.1, 32).astype(np.float32)     # sample i is the i-th hardest
        osf = LS.OnlineSampleFilteringLoss(seed=3)
        draws = np.stack([np.asarray(osf.selection_mask(ce)) for _ in range(400)])
        self.assertTrue(np.all(draws[:, :16] == 1))
        self.assertTrue(np.all(draws[:, 16:].sum(1) == 8))
        freq = draws[:, 16:].mean(0)               # expected 8 / 16 each, sd 0.025
        self.assertAllClose(freq, np.full(16, 0.5), atol=0.1)
        self.assertGreater(len({row.tobytes() for row in draws}), 350)

    def test_seeds(self):
        ce = np.random.default_rng(0).uniform(size=32).astype(np.float32)
        a, b, c = (LS.OnlineSampleFilteringLoss(seed=s) for s in (5, 5, 6))
        ma = [np.asarray(a.selection_mask(ce)) for _ in range(3)]
        mb = [np.asarray(b.selection_mask(ce)) for _ in range(3)]
        mc = [np.asarray(c.selection_mask(ce)) for _ in range(3)]
        self.assertAllEqual(ma, mb)
        self.assertNotAllEqual(ma, mc)

    def test_ties_keep_exact_counts(self):
        ce = np.ones(32, np.float32)
        mask = np.asarray(LS.OnlineSampleFilteringLoss(seed=1).selection_mask(ce))
        self.assertAllEqual(mask[:16], np.ones(16))       # ties broken by position
        self.assertEqual(mask[16:].sum(), 8)

    def test_gradient_only_through_kept_samples(self):
        y_true, y_pred = batch(32, seed=4)
        logits = tf.Variable(np.log(y_pred))
        osf = LS.OnlineSampleFilteringLoss(from_logits=True, seed=2)
        with tf.GradientTape() as tape:
            loss = osf(y_true, logits)
        grad = tape.gradient(loss, logits).numpy()
        ce = np_crossentropy(y_true, tf.nn.softmax(logits).numpy())
        mask = np.asarray(LS.OnlineSampleFilteringLoss(from_logits=True, seed=2)
                          .selection_mask(ce)) > 0
        self.assertAllClose(loss, ce[mask].mean(), rtol=1e-5)
        self.assertTrue(np.all(np.abs(grad[mask]).sum(1) > 0))
        self.assertAllEqual(grad[~mask], np.zeros_like(grad[~mask]))

    def test_serialization_and_errors(self):
        osf = LS.OnlineSampleFilteringLoss(from_logits=True, seed=9)
        again = keras.losses.deserialize(keras.losses.serialize(osf))
        self.assertIsInstance(again, LS.OnlineSampleFilteringLoss)
        self.assertEqual((again.from_logits, again.seed), (True, 9))
        y_true, y_pred = batch(8, seed=1)
        self.assertAllClose(osf(y_true, y_pred), again(y_true, y_pred))
        with self.assertRaisesRegex(ValueError, "same shape"):
            osf(y_true, y_pred[:, :1])
        with self.assertRaisesRegex(ValueError, "seed"):
            LS.OnlineSampleFilteringLoss(seed=1.5)
        with self.assertRaisesRegex(ValueError, "from_logits"):
            LS.OnlineSampleFilteringLoss(from_logits="no")
        with self.assertRaisesRegex(ValueError, "1-D"):
            osf.selection_mask(np.ones((2, 2)))

    @pytest.mark.slow
    def test_trains_stage1_model(self):
        keras.utils.set_random_seed(0)
        model = build_candidate_screening((15, 30, 30, 1))
        model.compile(optimizer=keras.optimizers.Adam(1e-5, clipnorm=0.001),
                      loss=LS.OnlineSampleFilteringLoss(seed=0))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 15, 30, 30, 1)).astype(np.float32)
        y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)][:, None, None, None]
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))


class SmoothL1AndHybridTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(1.0, 3.0, 0.5)
    def test_smooth_l1(self, sigma):
        x = np.linspace(-3, 3, 61).astype(np.float32)
        self.assertAllClose(LS.smooth_l1(x, sigma), np_smooth_l1(x, sigma), rtol=1e-6)

    def test_positive_only(self):
        rng = np.random.default_rng(0)
        targets = rng.normal(size=(10, 4)).astype(np.float32)
        positive = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 0])
        y_true = LS.pack_regression_targets(targets, positive)
        y_pred = rng.normal(size=(10, 4)).astype(np.float32)
        loss = LS.PositiveSmoothL1Loss()(y_true, y_pred)
        pos = positive == 1
        ref = np_smooth_l1(y_pred[pos] - targets[pos]).sum() / pos.sum()
        self.assertAllClose(loss, ref, rtol=1e-5)
        changed = y_pred.copy()
        changed[~pos] += 100.0                      # negatives do not count
        self.assertAllClose(LS.PositiveSmoothL1Loss()(y_true, changed), ref, rtol=1e-5)
        no_pos = LS.pack_regression_targets(targets, np.zeros(10))
        self.assertAllClose(LS.PositiveSmoothL1Loss()(no_pos, y_pred), 0.0)

    def test_hybrid_loss(self):
        y_true, y_pred = batch(12, seed=3)
        rng = np.random.default_rng(3)
        targets = rng.normal(size=(12, 4)).astype(np.float32)
        reg = rng.normal(size=(12, 4)).astype(np.float32)
        pos = y_true[:, 1] == 1
        packed = LS.pack_regression_targets(targets, pos)
        got = LS.hybrid_loss(y_true, y_pred, packed, reg, regression_weight=0.7)
        ref = np_crossentropy(y_true, y_pred).mean() \
            + 0.7 * np_smooth_l1(reg[pos] - targets[pos]).sum() / pos.sum()
        self.assertAllClose(got, ref, rtol=1e-5)

    @pytest.mark.slow
    def test_compiled_fp_reduction_loss(self):
        keras.utils.set_random_seed(1)
        model = build_fp_reduction((15, 30, 30, 1), l2=0.0)
        loss, weights = LS.fp_reduction_losses(regression_weight=0.5)
        model.compile(optimizer="adam", loss=loss, loss_weights=weights)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(6, 15, 30, 30, 1)).astype(np.float32)
        y_cls = np.eye(2, dtype=np.float32)[[1, 0, 1, 0, 0, 1]]
        y_reg = LS.pack_regression_targets(rng.normal(size=(6, 4)), y_cls[:, 1])
        y = {"classification": y_cls, "regression": y_reg}
        out = model(x)
        ref = LS.hybrid_loss(y_cls, out["classification"], y_reg, out["regression"],
                             regression_weight=0.5)
        got = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)["loss"]
        self.assertAllClose(got, ref, rtol=1e-4)
        model.fit(x, y, batch_size=6, epochs=1, verbose=0)
        again = keras.losses.deserialize(keras.losses.serialize(loss["regression"]))
        self.assertEqual(again.sigma, 1.0)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "sigma"):
            LS.PositiveSmoothL1Loss(sigma=0)
        with self.assertRaisesRegex(ValueError, r"\(batch, 5\)"):
            LS.PositiveSmoothL1Loss()(np.zeros((3, 4)), np.zeros((3, 4)))
        with self.assertRaisesRegex(ValueError, "regression_weight"):
            LS.fp_reduction_losses(regression_weight=-1)
        with self.assertRaisesRegex(ValueError, "positive"):
            LS.pack_regression_targets(np.zeros((3, 4)), [1, 2, 0])


class RegressionEncodingTest(tf.test.TestCase):

    def test_analytic_values(self):
        diag = np.sqrt(25 ** 2 + 60 ** 2 + 60 ** 2)
        t = LS.encode_regression_targets([[12, 30, 30], [0, 0, 60], [18, 45, 15]],
                                         [diag, diag * np.e, 10.0])
        self.assertAllClose(t[0], [0, 0, 0, 0])
        self.assertAllClose(t[1], [-1 / 0.2, -1 / 0.2, 1 / 0.2, 1 / 0.2])
        self.assertAllClose(t[2], np.array([0.5, 0.5, -0.5, np.log(10 / diag)]) / 0.2,
                            rtol=1e-6)

    def test_round_trip(self):
        rng = np.random.default_rng(0)
        c = rng.uniform(0, 25, size=(20, 3))
        d = rng.uniform(3, 30, size=20)
        for kwargs in ({}, {"patch_size": (15, 31, 29), "mean": [0.1, 0, 0, -1], "std": 0.5}):
            t = LS.encode_regression_targets(c, d, **kwargs)
            c2, d2 = LS.decode_regression(t, **kwargs)
            self.assertAllClose(c2, c, rtol=1e-5, atol=1e-5)
            self.assertAllClose(d2, d, rtol=1e-5)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "centres"):
            LS.encode_regression_targets([[1, 2]], [3])
        with self.assertRaisesRegex(ValueError, "diameters"):
            LS.encode_regression_targets([[1, 2, 3]], [0.0])
        with self.assertRaisesRegex(ValueError, "patch_size"):
            LS.encode_regression_targets([[1, 2, 3]], [3], patch_size=(25, 60))
        with self.assertRaisesRegex(ValueError, "std"):
            LS.decode_regression(np.zeros((1, 4)), std=0)
        with self.assertRaisesRegex(ValueError, "targets"):
            LS.decode_regression(np.zeros((1, 3)))
