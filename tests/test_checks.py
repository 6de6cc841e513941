"""Shared argument validation."""
import numpy as np
import tensorflow as tf

from keras_medseg import _checks


class ChecksTest(tf.test.TestCase):

    def test_shape_equality(self):
        with self.assertRaisesRegex(ValueError, r"y_true.shape=\(2,\).*y_pred.shape=\(3,\)"):
            _checks.check_shape_equality(np.zeros(2), np.zeros(3))

    def test_binary_mask(self):
        self.assertAllEqual(_checks.as_binary_mask([0, 1, 1], name="m"), [False, True, True])
        with self.assertRaisesRegex(ValueError, "m must be binary"):
            _checks.as_binary_mask([0, 2], name="m")
        with self.assertRaisesRegex(ValueError, "NaN"):
            _checks.as_binary_mask([0.0, np.nan], name="m")
        with self.assertRaisesRegex(ValueError, "dtype"):
            _checks.as_binary_mask(np.array(["a"]), name="m")

    def test_spacing(self):
        self.assertAllEqual(_checks.check_spacing(None, 3), [1, 1, 1])
        self.assertAllEqual(_checks.check_spacing(2, 2), [2, 2])
        for bad in ([1, 2], [1, 0, 1], [1, -1, 1], "abc", [1, np.inf, 1]):
            with self.assertRaisesRegex(ValueError, "spacing"):
                _checks.check_spacing(bad, 3)

    def test_misc(self):
        with self.assertRaisesRegex(ValueError, "mode must be one of"):
            _checks.check_choice("x", {"a"}, name="mode")
        with self.assertRaisesRegex(ValueError, "fallback must be one of"):
            _checks.check_choice("x", (None, "synthetic"), name="fallback")
        with self.assertRaisesRegex(ValueError, "k must be a positive"):
            _checks.check_positive(0, name="k")
        self.assertEqual(_checks.check_positive(0, name="k", allow_zero=True), 0)
        with self.assertRaisesRegex(ValueError, "dimensions"):
            _checks.check_nd(np.zeros((2, 2)), 3, name="x")
