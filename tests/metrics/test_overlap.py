"""Tests of keras_medseg.metrics.overlap: analytic cases, scikit-learn / SciPy references,
the empty-mask rule and hypothesis properties."""
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial import distance
from sklearn.metrics import f1_score, jaccard_score

from keras_medseg.metrics import compute_dice, compute_iou


def _square(shape, top, left, size):
    m = np.zeros(shape, dtype=bool)
    m[top:top + size, left:left + size] = True
    return m


# Pairs of same-shape boolean batches (B, H, W), small enough to be fast.
_shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
_mask_pairs = _shapes.flatmap(lambda s: st.tuples(hnp.arrays(bool, s), hnp.arrays(bool, s)))


class OverlapAnalyticTest(parameterized.TestCase, tf.test.TestCase):

    def test_two_squares(self):
        # 4x4 squares offset by (2, 1): intersection 2x3 = 6 pixels, sizes 16 + 16.
        a = _square((10, 10), 1, 1, 4)
        b = _square((10, 10), 3, 2, 4)
        self.assertAllClose(compute_dice(a, b, batched=False), [[12 / 32]])
        self.assertAllClose(compute_iou(a, b, batched=False), [[6 / 26]])
        self.assertAllClose(compute_dice(a[None], b[None]), [[12 / 32]])

    def test_batch_axis_and_shapes(self):
        a = np.stack([_square((8, 8), 0, 0, 4), _square((8, 8), 0, 0, 2)])
        b = np.stack([_square((8, 8), 0, 0, 2), _square((8, 8), 0, 0, 2)])
        dice = compute_dice(a, b)
        self.assertEqual(dice.shape, (2, 1))
        self.assertEqual(dice.dtype, np.float64)
        self.assertAllClose(dice, [[8 / 20], [1.0]])
        # batched=False pools the whole array into one image.
        self.assertAllClose(compute_dice(a, b, batched=False), [[2 * 8 / (20 + 8)]])
        # A 3-D volume batch (B, D, H, W).
        vol = np.zeros((1, 3, 4, 4), dtype=np.uint8)
        vol[0, :, :2, :2] = 1
        self.assertAllClose(compute_iou(vol, vol), [[1.0]])

    def test_label_maps_per_label(self):
        y_true = np.array([[[0, 1, 1], [2, 2, 0]], [[3, 3, 3], [0, 0, 0]]])
        y_pred = np.array([[[0, 1, 2], [2, 2, 2]], [[3, 3, 0], [0, 0, 1]]])
        dice = compute_dice(y_true, y_pred, labels=[1, 2, 3])
        iou = compute_iou(y_true, y_pred, labels=[1, 2, 3])
        self.assertEqual(dice.shape, (2, 3))
        # image 0: label 1: |T|=2 |P|=1 I=1; label 2: |T|=2 |P|=4 I=2; label 3 absent.
        # image 1: label 1: |T|=0 |P|=1; label 2 absent; label 3: |T|=3 |P|=2 I=2.
        expected_dice = [[2 / 3, 4 / 6, np.nan], [0.0, np.nan, 4 / 5]]
        expected_iou = [[1 / 2, 2 / 4, np.nan], [0.0, np.nan, 2 / 3]]
        self.assertAllClose(dice, expected_dice)
        self.assertAllClose(iou, expected_iou)
        # Label order is respected and background is scored only when asked.
        self.assertAllClose(compute_dice(y_true, y_pred, labels=[3, 0])[1], [4 / 5, 2 * 2 / 6])
        # Integer-valued floats are accepted as label maps.
        self.assertAllClose(compute_dice(y_true.astype(np.float32), y_pred, labels=[1, 2, 3]),
                            expected_dice)

    def test_empty_mask_rule(self):
        empty = np.zeros((1, 4, 4), dtype=bool)
        full = np.ones((1, 4, 4), dtype=bool)
        for fn in (compute_dice, compute_iou):
            with self.subTest(fn=fn.__name__):
                self.assertTrue(np.isnan(fn(empty, empty)[0, 0]))
                self.assertEqual(fn(empty, full)[0, 0], 0.0)
                self.assertEqual(fn(full, empty)[0, 0], 0.0)
                self.assertEqual(fn(full, full)[0, 0], 1.0)

    def test_smoothed_forms(self):
        # The nerve original's formulas with s = 1e-15 and DoubleU-Net's s = 1.
        a = _square((6, 6), 0, 0, 3)  # 9 px
        b = _square((6, 6), 1, 1, 3)  # 9 px, intersection 4
        for s in (1e-15, 1.0):
            with self.subTest(smooth=s):
                self.assertAllClose(compute_dice(a, b, smooth=s, batched=False),
                                    [[(8 + s) / (18 + s)]])
                self.assertAllClose(compute_iou(a, b, smooth=s, batched=False),
                                    [[(4 + s) / (18 - 4 + s)]])
        empty = np.zeros((2, 3, 3))
        self.assertAllEqual(compute_dice(empty, empty, smooth=1.0), [[1.0], [1.0]])
        self.assertAllEqual(compute_iou(empty, empty, smooth=1e-15), [[1.0], [1.0]])
        self.assertAllClose(compute_dice(empty, np.ones((2, 3, 3)), smooth=1.0),
                            [[0.1], [0.1]])

    def test_matches_sklearn_and_scipy(self):
        rng = np.random.default_rng(0)
        a = rng.random((4, 16, 16)) > 0.6
        b = rng.random((4, 16, 16)) > 0.5
        dice = compute_dice(a, b)[:, 0]
        iou = compute_iou(a, b)[:, 0]
        for i in range(4):
            t, p = a[i].ravel(), b[i].ravel()
            self.assertAllClose(dice[i], f1_score(t, p))
            self.assertAllClose(iou[i], jaccard_score(t, p))
            self.assertAllClose(dice[i], 1 - distance.dice(t, p))
            self.assertAllClose(iou[i], 1 - distance.jaccard(t, p))
        labels_t = rng.integers(0, 4, (2, 8, 8, 8))
        labels_p = rng.integers(0, 4, (2, 8, 8, 8))
        got = compute_iou(labels_t, labels_p, labels=[1, 2, 3])
        for i in range(2):
            ref = jaccard_score(labels_t[i].ravel(), labels_p[i].ravel(), labels=[1, 2, 3],
                                average=None)
            self.assertAllClose(got[i], ref)

    @parameterized.parameters(np.uint8, np.int32, np.float32, bool)
    def test_dtypes(self, dtype):
        a = _square((5, 5), 0, 0, 2)[None].astype(dtype)
        b = _square((5, 5), 0, 0, 3)[None].astype(dtype)
        self.assertAllClose(compute_dice(a, b), [[8 / 13]])

    def test_inputs_not_modified(self):
        a = np.array([[0, 1, 1, 0]], dtype=np.uint8)
        b = np.array([[1, 1, 0, 0]], dtype=np.uint8)
        a0, b0 = a.copy(), b.copy()
        compute_dice(a, b)
        compute_iou(a, b, labels=[1], smooth=1.0)
        self.assertAllEqual(a, a0)
        self.assertAllEqual(b, b0)

    def test_errors(self):
        m = np.zeros((2, 3, 3), dtype=np.uint8)
        cases = [
            ((m, m[:1]), {}, "y_true and y_pred must have the same shape"),
            ((m + 2, m), {}, "y_true must be binary"),
            ((m, m.astype(float) + 0.5), {}, "y_pred must be binary"),
            ((m.astype(str), m.astype(str)), {}, "y_true must be a numeric"),
            ((m[0, 0], m[0, 0]), {}, "batch, spatial"),
            ((np.zeros(()), np.zeros(())), dict(batched=False), "at least one spatial axis"),
            ((np.zeros((0, 3)), np.zeros((0, 3))), {}, "must not be empty"),
            ((m, m), dict(batched=1), "batched must be True or False"),
            ((m, m), dict(smooth=-1.0), "smooth must be a non-negative"),
            ((m, m), dict(smooth=np.nan), "smooth"),
            ((m, m), dict(labels=[]), "labels must not be empty"),
            ((m, m), dict(labels=[1, 1]), "labels must not repeat"),
            ((m, m), dict(labels=[1.5]), "labels must be integers"),
            ((m, m), dict(labels=[True]), "labels must be integers"),
            ((m, m), dict(labels="1"), "labels must be None or a 1-D"),
            ((m, m), dict(labels=[[1, 2]]), "labels must be None or a 1-D"),
            ((m + 0.5, m), dict(labels=[1]), "y_true must be an integer label map"),
            ((m, m.astype(str)), dict(labels=[1]), "y_pred must be an integer label map"),
        ]
        for fn in (compute_dice, compute_iou):
            for args, kwargs, message in cases:
                with self.subTest(fn=fn.__name__, message=message):
                    with self.assertRaisesRegex(ValueError, message):
                        fn(*args, **kwargs)


class OverlapPropertyTest(tf.test.TestCase):
    """Hypothesis properties: 4 x 60 = 240 generated cases (derandomized: the same cases on
    every run)."""

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(_mask_pairs)
    def test_bounds_and_symmetry(self, pair):
        a, b = pair
        for fn in (compute_dice, compute_iou):
            v = fn(a, b)
            defined = v[~np.isnan(v)]
            self.assertTrue(np.all((defined >= 0) & (defined <= 1)))
            np.testing.assert_array_equal(v, fn(b, a))
            nonempty = a.reshape(len(a), -1).any(axis=1)
            np.testing.assert_array_equal(fn(a, a)[nonempty, 0], 1.0)
            self.assertTrue(np.all(np.isnan(fn(a, a)[~nonempty, 0])))

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(_mask_pairs)
    def test_dice_iou_relation(self, pair):
        a, b = pair
        dice, iou = compute_dice(a, b), compute_iou(a, b)
        np.testing.assert_array_equal(np.isnan(dice), np.isnan(iou))
        ok = ~np.isnan(iou)
        self.assertAllClose(dice[ok], 2 * iou[ok] / (1 + iou[ok]))
        self.assertTrue(np.all(iou[ok] <= dice[ok] + 1e-12))

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(_mask_pairs)
    def test_empty_rule(self, pair):
        a, b = pair
        dice, iou = compute_dice(a, b)[:, 0], compute_iou(a, b)[:, 0]
        empty_a = ~a.reshape(len(a), -1).any(axis=1)
        empty_b = ~b.reshape(len(b), -1).any(axis=1)
        both = empty_a & empty_b
        one = empty_a ^ empty_b
        np.testing.assert_array_equal(np.isnan(dice), both)
        np.testing.assert_array_equal(np.isnan(iou), both)
        np.testing.assert_array_equal(dice[one], 0.0)
        np.testing.assert_array_equal(iou[one], 0.0)

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(_mask_pairs, st.sampled_from([1e-15, 1e-3, 1.0, 10.0]))
    def test_smoothed_is_defined_bounded_and_consistent(self, pair, smooth):
        a, b = pair
        dice = compute_dice(a, b, smooth=smooth)
        iou = compute_iou(a, b, smooth=smooth)
        for v in (dice, iou):
            self.assertFalse(np.any(np.isnan(v)))
            self.assertTrue(np.all((v > 0) & (v <= 1 + 1e-12)))
        inter = (a & b).reshape(len(a), -1).sum(1)
        sizes = a.reshape(len(a), -1).sum(1) + b.reshape(len(b), -1).sum(1)
        self.assertAllClose(dice[:, 0], (2 * inter + smooth) / (sizes + smooth))
        self.assertAllClose(iou[:, 0], (inter + smooth) / (sizes - inter + smooth))


if __name__ == "__main__":
    tf.test.main()
