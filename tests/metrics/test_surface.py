"""Tests of keras_medseg.metrics.surface: analytic cases, empty masks, errors, and agreement
with brute force, medpy and DeepMind surface-distance."""
import warnings
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy import ndimage
from scipy.spatial.distance import cdist

from keras_medseg.metrics import surface
from keras_medseg.metrics.surface import (compute_asd, compute_hausdorff, compute_hd95,
                                          compute_surface_dice, compute_surface_distances,
                                          compute_surface_metrics)

MODES = ("surface", "medpy", "surfel", "evalseg")


def _point_masks(shape, a, b):
    t = np.zeros(shape, bool)
    p = np.zeros(shape, bool)
    t[a] = True
    p[b] = True
    return t, p


def _random_pair(rng, shape, smooth=True):
    a = rng.random(shape) < (0.55 if smooth else 0.3)
    if smooth:
        a = ndimage.binary_opening(a)
    b = ndimage.binary_dilation(a) ^ (rng.random(shape) < 0.05)
    return a, b


def _engines():
    """Patch the engine choice: always the distance transform, always the k-d tree."""
    return (mock.patch.object(surface, "_KDTREE_FRACTION", 0.0),
            mock.patch.object(surface, "_KDTREE_FRACTION", np.inf))


class AnalyticTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*MODES)
    def test_two_points_2d_anisotropic(self, mode):
        t, p = _point_masks((5, 6), (2, 1), (2, 4))
        out = compute_surface_metrics(t, p, spacing=(1.0, 2.0), mode=mode)
        # surfels: the 4 corners of each voxel, 2 at 4 mm and 2 at 6 mm from the other square
        asd = 5.0 if mode == "surfel" else 6.0
        expected = {"hd": 6.0, "hd95": 6.0, "asd": asd, "asd_true_to_pred": asd,
                    "asd_pred_to_true": asd}
        for key, value in expected.items():
            self.assertAllClose(out[key], value, atol=1e-12, msg=key)

    @parameterized.parameters(*MODES)
    def test_two_points_3d_anisotropic(self, mode):
        t, p = _point_masks((6, 7, 3), (1, 1, 1), (4, 5, 1))
        expected = np.sqrt((3 * 2.0) ** 2 + (4 * 0.5) ** 2)
        self.assertAllClose(compute_hausdorff(t, p, spacing=(2.0, 0.5, 1.0), mode=mode),
                            expected, atol=1e-12)
        if mode == "surfel":  # corner offsets: 3 or 2 voxels along axis 0, 4 or 3 along 1
            expected = np.mean([np.hypot(2.0 * a, 0.5 * b) for a in (3, 2) for b in (4, 3)])
        self.assertAllClose(compute_asd(t, p, spacing=(2.0, 0.5, 1.0), mode=mode,
                                        symmetric=False), [expected, expected], atol=1e-12)

    @parameterized.parameters(*MODES)
    def test_shifted_cube_hausdorff_is_the_shift(self, mode):
        t = np.zeros((12, 9, 9), bool)
        t[2:6, 2:6, 2:6] = True
        p = np.roll(t, 2, axis=0)
        spacing = (1.7, 0.6, 0.9)
        self.assertAllClose(compute_hausdorff(t, p, spacing=spacing, mode=mode), 2 * 1.7)

    def test_shifted_cube_evalseg_closed_form(self):
        # shift k along axis 0: the FN (FP) voxels are k slabs of 4x4 at distances j*s0,
        # j = 1..k; AVGDIST = 16*s0*k(k+1)/2 / 64 = s0*k(k+1)/8; 32 distances s0, 32 of 2*s0.
        t = np.zeros((12, 9, 9), bool)
        t[2:6, 2:6, 2:6] = True
        p = np.roll(t, 2, axis=0)
        s0 = 1.7
        out = compute_surface_metrics(t, p, spacing=(s0, 0.6, 0.9), mode="evalseg")
        self.assertAllClose(out["asd"], s0 * 2 * 3 / 8)
        self.assertAllClose(out["hd95"], 2 * s0)  # element int(0.95*63)=59 of 64
        self.assertAllClose(compute_hd95(t, p, spacing=(s0, 0.6, 0.9), mode="evalseg",
                                         percentile=40), s0)  # element int(0.4*63)=25
        self.assertAllClose(out["asd_true_to_pred"], out["asd_pred_to_true"])

    def test_concentric_spheres(self):
        grid = np.indices((25, 25, 25)) - 12
        r = np.sqrt(np.sum(grid ** 2, axis=0))
        t, p = r <= 6, r <= 9
        for mode in ("surface", "medpy", "surfel"):
            out = compute_surface_metrics(t, p, mode=mode)
            self.assertBetween(out["hd"], 2.0, 4.0, msg=mode)
            self.assertBetween(out["asd"], 2.5, 3.5, msg=mode)
            self.assertLessEqual(out["hd95"], out["hd"])

    @parameterized.parameters(*MODES)
    def test_identical_masks_give_zero(self, mode):
        grid = np.indices((9, 10, 11)) - 5
        t = np.sum(grid ** 2, axis=0) <= 9
        out = compute_surface_metrics(t, t, spacing=(0.5, 1.0, 2.0), mode=mode)
        for key, value in out.items():
            self.assertEqual(value, 0.0, msg=key)
        if mode != "evalseg":
            self.assertEqual(compute_surface_dice(t, t, tolerance_mm=0.0, mode=mode), 1.0)

    def test_surface_dice_counts_within_tolerance(self):
        # 1x3 bar vs the same bar shifted by one row, spacing 2 mm along the shift:
        t = np.zeros((6, 7), bool)
        t[2, 2:5] = True
        p = np.roll(t, 1, axis=0)
        self.assertEqual(compute_surface_dice(t, p, tolerance_mm=1.9, spacing=(2.0, 1.0)), 0.0)
        self.assertEqual(compute_surface_dice(t, p, tolerance_mm=2.0, spacing=(2.0, 1.0)), 1.0)

    def test_percentile_zero_and_hundred(self):
        rng = np.random.default_rng(3)
        t, p = _random_pair(rng, (10, 12, 9))
        for mode in MODES:
            self.assertAllClose(compute_hd95(t, p, mode=mode, percentile=100),
                                compute_hausdorff(t, p, mode=mode), msg=mode)


class EmptyMaskTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.full = np.zeros((4, 5, 6), bool)
        self.full[1:3, 1:4, 2:5] = True
        self.empty = np.zeros_like(self.full)
        self.spacing = (1.5, 2.0, 0.5)
        self.diagonal = np.sqrt((4 * 1.5) ** 2 + (5 * 2.0) ** 2 + (6 * 0.5) ** 2)

    @parameterized.parameters(*MODES)
    def test_both_empty_is_nan(self, mode):
        out = compute_surface_metrics(self.empty, self.empty, mode=mode,
                                      empty_policy="diagonal")
        for key, value in out.items():
            self.assertTrue(np.isnan(value), msg=key)
        self.assertTrue(np.all(np.isnan(compute_asd(self.empty, self.empty, mode=mode,
                                                    symmetric=False))))
        if mode != "evalseg":
            self.assertTrue(np.isnan(compute_surface_dice(self.empty, self.empty,
                                                          tolerance_mm=1.0, mode=mode)))

    @parameterized.product(mode=MODES, swap=(False, True))
    def test_one_empty_is_inf_or_diagonal(self, mode, swap):
        a, b = (self.empty, self.full) if swap else (self.full, self.empty)
        out = compute_surface_metrics(a, b, mode=mode, spacing=self.spacing)
        for key, value in out.items():
            self.assertEqual(value, np.inf, msg=key)
        out = compute_surface_metrics(a, b, mode=mode, spacing=self.spacing,
                                      empty_policy="diagonal")
        for key, value in out.items():
            self.assertAllClose(value, self.diagonal, msg=key)
        if mode != "evalseg":
            self.assertEqual(compute_surface_dice(a, b, tolerance_mm=5.0, mode=mode), 0.0)

    def test_distance_sets_with_an_empty_mask(self):
        sd = compute_surface_distances(self.full, self.empty, mode="surfel")
        self.assertEqual(sd.distances_pred_to_true.shape, (0,))
        self.assertTrue(np.all(np.isinf(sd.distances_true_to_pred)))
        self.assertLen(sd.areas_true, len(sd.distances_true_to_pred))
        self.assertEqual((sd.num_true, sd.num_pred), (18, 0))
        sd = compute_surface_distances(self.empty, self.empty)
        self.assertEqual(sd.distances_true_to_pred.shape, (0,))
        self.assertIsNone(sd.areas_true)

    def test_evalseg_without_mismatch_is_zero(self):
        out = compute_surface_metrics(self.full, self.full, mode="evalseg")
        self.assertEqual(out["hd95"], 0.0)
        self.assertEqual(out["asd"], 0.0)


class LabelsTest(tf.test.TestCase):

    def test_label_maps_match_binary_calls_and_shapes(self):
        rng = np.random.default_rng(7)
        truth = ndimage.median_filter(rng.integers(0, 3, (10, 11, 12)), size=3)
        pred = ndimage.median_filter(rng.integers(0, 3, (10, 11, 12)), size=3)
        labels = [1, 2, 5]  # 5 is absent from both -> NaN
        spacing = (0.8, 1.1, 2.0)
        for mode in MODES:
            hd = compute_hausdorff(truth, pred, labels=labels, spacing=spacing, mode=mode)
            asd = compute_asd(truth, pred, labels=labels, spacing=spacing, mode=mode,
                              symmetric=False)
            self.assertEqual(hd.shape, (3,))
            self.assertEqual(asd.shape, (3, 2))
            self.assertTrue(np.isnan(hd[2]))
            for i, lab in enumerate(labels[:2]):
                self.assertAllClose(hd[i], compute_hausdorff(truth == lab, pred == lab,
                                                             spacing=spacing, mode=mode))
                self.assertAllClose(asd[i], compute_asd(truth == lab, pred == lab,
                                                        spacing=spacing, mode=mode,
                                                        symmetric=False))
            metrics = compute_surface_metrics(truth, pred, labels=labels, spacing=spacing,
                                              mode=mode)
            self.assertAllClose(metrics["hd"], hd)
            self.assertAllClose(metrics["asd_true_to_pred"], asd[:, 0])

    def test_binary_results_are_floats(self):
        t, p = _point_masks((5, 5), (1, 1), (3, 3))
        self.assertIsInstance(compute_hd95(t, p), float)
        self.assertEqual(compute_asd(t, p, symmetric=False).shape, (2,))


class ErrorTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.t, self.p = _point_masks((5, 6, 7), (1, 1, 1), (3, 3, 3))

    @parameterized.named_parameters(
        ("shape", dict(y_pred=np.zeros((5, 6, 8), bool)), "same shape"),
        ("non_binary", dict(y_true=np.full((5, 6, 7), 2)), "y_true must be binary"),
        ("one_d", dict(y_true=np.zeros(5, bool), y_pred=np.zeros(5, bool)), "y_true must have"),
        ("spacing_length", dict(spacing=(1.0, 2.0)), "spacing"),
        ("spacing_sign", dict(spacing=(1.0, -2.0, 1.0)), "spacing must be positive"),
        ("spacing_zero", dict(spacing=0.0), "spacing must be positive"),
        ("mode", dict(mode="monai"), "mode must be one of"),
        ("connectivity_zero", dict(connectivity=0), "connectivity"),
        ("connectivity_big", dict(connectivity=4), "connectivity"),
        ("connectivity_float", dict(connectivity=1.5), "connectivity"),
        ("empty_policy", dict(empty_policy="zero"), "empty_policy"),
        ("labels_empty", dict(labels=[]), "labels"),
        ("labels_str", dict(labels="12"), "labels"),
        ("percentile_high", dict(percentile=101), "percentile"),
        ("percentile_negative", dict(percentile=-1), "percentile"),
        ("percentile_str", dict(percentile="95"), "percentile"),
    )
    def test_value_errors(self, kwargs, message):
        kwargs = dict(kwargs)
        y_true = kwargs.pop("y_true", self.t)
        y_pred = kwargs.pop("y_pred", self.p)
        with self.assertRaisesRegex(ValueError, message):
            compute_hd95(y_true, y_pred, **kwargs)

    def test_surface_dice_errors(self):
        with self.assertRaisesRegex(ValueError, "tolerance_mm"):
            compute_surface_dice(self.t, self.p, tolerance_mm=-1.0)
        with self.assertRaisesRegex(ValueError, "evalseg"):
            compute_surface_dice(self.t, self.p, tolerance_mm=1.0, mode="evalseg")
        with self.assertRaisesRegex(ValueError, "evalseg"):
            compute_surface_metrics(self.t, self.p, tolerance_mm=1.0, mode="evalseg")

    def test_other_functions_validate(self):
        with self.assertRaisesRegex(ValueError, "mode"):
            compute_surface_distances(self.t, self.p, mode="x")
        with self.assertRaisesRegex(ValueError, "y_pred must be binary"):
            compute_asd(self.t, self.p * 3)
        with self.assertRaisesRegex(ValueError, "empty_policy"):
            compute_hausdorff(self.t, self.p, empty_policy=None)

    def test_inputs_not_modified(self):
        t, p = self.t.copy(), self.p.copy()
        compute_surface_metrics(t, p, mode="surfel", tolerance_mm=1.0)
        self.assertAllEqual(t, self.t)
        self.assertAllEqual(p, self.p)


class ReferenceTest(tf.test.TestCase):
    """Agreement with brute force and the reference libraries on random anisotropic cases."""

    def _cases(self, seed, count):
        rng = np.random.default_rng(seed)
        for i in range(count):
            ndim = 3 if i % 2 else 2
            shape = tuple(rng.integers(6, 16, ndim))
            spacing = tuple(rng.uniform(0.3, 3.0, ndim))
            t, p = _random_pair(rng, shape, smooth=i % 3 != 0)
            if i % 4 == 1:  # touch the image border
                t[0] = True
            if t.any() and p.any():
                yield t, p, spacing

    def test_surface_mode_against_brute_force(self):
        for t, p, spacing in self._cases(0, 8):
            for conn in (1, t.ndim):
                fp = ndimage.generate_binary_structure(t.ndim, conn)
                bt = np.argwhere(t & ~ndimage.binary_erosion(t, fp)) * spacing
                bp = np.argwhere(p & ~ndimage.binary_erosion(p, fp)) * spacing
                d = cdist(bt, bp)
                d_tp, d_pt = d.min(axis=1), d.min(axis=0)
                out = compute_surface_metrics(t, p, spacing=spacing, connectivity=conn)
                self.assertAllClose(out["hd"], max(d_tp.max(), d_pt.max()))
                self.assertAllClose(out["hd95"], max(np.percentile(d_tp, 95),
                                                     np.percentile(d_pt, 95)))
                self.assertAllClose(out["asd"], np.concatenate([d_tp, d_pt]).mean())
                self.assertAllClose(out["asd_pred_to_true"], d_pt.mean())

    def test_evalseg_against_brute_force(self):
        for t, p, spacing in self._cases(1, 8):
            fn = np.argwhere(t & ~p) * spacing
            fp = np.argwhere(p & ~t) * spacing
            d_fn = cdist(fn, np.argwhere(p) * spacing).min(axis=1) if len(fn) else np.zeros(0)
            d_fp = cdist(fp, np.argwhere(t) * spacing).min(axis=1) if len(fp) else np.zeros(0)
            pooled = np.sort(np.concatenate([d_fn, d_fp]))
            out = compute_surface_metrics(t, p, spacing=spacing, mode="evalseg")
            self.assertAllClose(out["hd95"], pooled[int(0.95 * (len(pooled) - 1))])
            self.assertAllClose(out["asd"], (d_fn.sum() / t.sum() + d_fp.sum() / p.sum()) / 2)

    def test_medpy_agreement(self):
        from medpy.metric import binary as mb

        for t, p, spacing in self._cases(2, 10):
            for conn in range(1, t.ndim + 1):
                out = compute_surface_metrics(t, p, spacing=spacing, mode="medpy",
                                              connectivity=conn)
                ref = {"hd": mb.hd(p, t, spacing, conn), "hd95": mb.hd95(p, t, spacing, conn),
                       "asd": mb.assd(p, t, spacing, conn),
                       "asd_pred_to_true": mb.asd(p, t, spacing, conn),
                       "asd_true_to_pred": mb.asd(t, p, spacing, conn)}
                for key, value in ref.items():
                    self.assertAllClose(out[key], value, atol=1e-9, rtol=0, msg=key)

    def test_surface_distance_agreement(self):
        import surface_distance as sdm

        for t, p, spacing in self._cases(3, 10):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ref = sdm.compute_surface_distances(t, p, spacing)
            ours = compute_surface_distances(t, p, spacing=spacing, mode="surfel")
            self.assertAllClose(ours.distances_true_to_pred, ref["distances_gt_to_pred"],
                                atol=1e-9, rtol=0)
            self.assertAllClose(ours.distances_pred_to_true, ref["distances_pred_to_gt"],
                                atol=1e-9, rtol=0)
            self.assertAllClose(ours.areas_true, ref["surfel_areas_gt"], atol=1e-9, rtol=0)
            self.assertAllClose(ours.areas_pred, ref["surfel_areas_pred"], atol=1e-9, rtol=0)
            out = compute_surface_metrics(t, p, spacing=spacing, mode="surfel",
                                          tolerance_mm=1.2)
            for percent in (50, 95):
                self.assertAllClose(compute_hd95(t, p, spacing=spacing, mode="surfel",
                                                 percentile=percent),
                                    sdm.compute_robust_hausdorff(ref, percent),
                                    atol=1e-9, rtol=0)
            self.assertAllClose(out["hd"], sdm.compute_robust_hausdorff(ref, 100), atol=1e-9)
            directed = sdm.compute_average_surface_distance(ref)
            self.assertAllClose([out["asd_true_to_pred"], out["asd_pred_to_true"]], directed,
                                atol=1e-9, rtol=0)
            self.assertAllClose(out["surface_dice"],
                                sdm.compute_surface_dice_at_tolerance(ref, 1.2),
                                atol=1e-9, rtol=0)

    def test_surfel_tables_match_surface_distance(self):
        # Our bit 4a+2b+c is DeepMind's bit 7-(4a+2b+c) (its kernel [[[128,64],[32,16]],...]).
        from surface_distance import lookup_tables

        for spacing in ((0.7, 1.3, 2.9), (3.1, 0.4, 1.7)):
            ours = surface._surfel_area_table_3d(spacing)
            ref = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
            dm = [sum(1 << (7 - bit) for bit in range(8) if code >> bit & 1)
                  for code in range(256)]
            self.assertAllClose(ours, ref[dm], atol=1e-12, rtol=0)
        ours = surface._contour_length_table((0.7, 2.3))
        ref = lookup_tables.create_table_neighbour_code_to_contour_length((0.7, 2.3))
        dm = [sum(1 << (3 - bit) for bit in range(4) if code >> bit & 1) for code in range(16)]
        self.assertAllClose(ours, ref[dm], atol=1e-12, rtol=0)

    def test_both_engines_and_crop_give_identical_results(self):
        rng = np.random.default_rng(4)
        t = np.zeros((30, 28, 26), bool)
        p = np.zeros_like(t)
        t[5:15, 6:14, 4:12], p[7:16, 6:15, 5:12] = _random_pair(rng, (10, 8, 8))[0], True
        spacing = (1.2, 0.7, 2.1)
        results = []
        for patch in _engines():
            with patch:
                results.append({mode: compute_surface_distances(t, p, spacing=spacing,
                                                                mode=mode)
                                for mode in MODES})
        for mode in MODES:
            for a, b in zip(results[0][mode][:2], results[1][mode][:2]):
                self.assertAllClose(a, b, atol=1e-12, rtol=0)
        # padding the image with background changes nothing (crop invariance)
        big_t, big_p = np.pad(t, 7), np.pad(p, 7)
        for mode in MODES:
            a = compute_surface_metrics(t, p, spacing=spacing, mode=mode)
            b = compute_surface_metrics(big_t, big_p, spacing=spacing, mode=mode)
            for key in a:
                self.assertAllClose(a[key], b[key], atol=1e-12, msg=f"{mode} {key}")


if __name__ == "__main__":
    tf.test.main()
