"""Tests of keras_medseg.metrics.detection: hand-computed FROC/CPM/recall/AP, the LUNA16
noduleCADEvaluation definition, input formats, edge cases and errors."""
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from sklearn.metrics import roc_curve

from keras_medseg.metrics.detection import (LUNA16_FP_RATES, average_precision, froc,
                                            recall_at_threshold)

# Scan 0: lesion A (0,0,0) d=10 is hit by c1 (0.9) and c2 (0.6: a double hit, counts once);
# lesion B (50,0,0) d=4 is hit by c4 (0.3); c5 sits exactly on B's radius (d^2 = 4, not < 4)
# and c3 is far: both false positives. Scan 1: lesion C is never hit; c6 (0.99) sits on an
# irrelevant lesion (ignored); c7 is at distance 5 from C (radius 3): a false positive.
CANDIDATES = [
    [[1, 1, 1, 0.9], [2, 0, 0, 0.6], [30, 0, 0, 0.8], [50, 1.9, 0, 0.3], [50, 2, 0, 0.95]],
    [[102, 0, 0, 0.99], [0, 0, 5, 0.5]],
]
LESIONS = [[[0, 0, 0, 10], [50, 0, 0, 4]], [[0, 0, 0, 6]]]
IRRELEVANT = [[], [[100, 0, 0, 10]]]


def _as_dicts(table, key):
    return [[{"centre": row[:3], key: row[3]} for row in scan] for scan in table]


def _luna16_reference(candidates, lesions, irrelevant, num_scans):
    """The LUNA16 noduleCADEvaluation recipe, written as loops over lesions: FROC vectors
    with missed lesions at the minimum probability (excluded from the ROC), sklearn's ROC,
    fps = fpr * (candidates - detected) / scans, sens = tpr * detected / lesions."""
    gt, prob, exclude = [], [], []
    for scan in range(num_scans):
        cands = [list(c) for c in candidates[scan]]
        remaining = set(range(len(cands)))
        annotations = [(a, True) for a in lesions[scan]] + [(a, False) for a in irrelevant[scan]]
        for (x, y, z, d), included in annotations:
            matches = []
            for k, (x2, y2, z2, _score) in enumerate(cands):
                if (x - x2) ** 2 + (y - y2) ** 2 + (z - z2) ** 2 < (d / 2.0) ** 2:
                    matches.append(k)
                    remaining.discard(k)
            if included:
                gt.append(1.0)
                prob.append(max(cands[k][3] for k in matches) if matches else -1e9)
                exclude.append(not matches)
        for k in sorted(remaining):
            gt.append(0.0)
            prob.append(cands[k][3])
            exclude.append(False)
    gt_local = [g for g, e in zip(gt, exclude) if not e]
    prob_local = [p for p, e in zip(prob, exclude) if not e]
    detected = sum(gt_local)
    fpr, tpr, _ = roc_curve(gt_local, prob_local)
    fps = fpr * (len(prob_local) - detected) / num_scans
    sens = tpr * detected / sum(gt)
    return fps, sens


class FrocTest(tf.test.TestCase, parameterized.TestCase):

    def test_hand_computed_case(self):
        # Curve corners (fps, sens): (0,0) (0.5,0) (0.5,1/3) (1.5,1/3) (1.5,2/3).
        result = froc(CANDIDATES, LESIONS, 2, irrelevant=IRRELEVANT)
        expected = [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3]
        self.assertAllClose(result.sensitivities, expected, atol=1e-12)
        self.assertAllClose(result.cpm, 8 / 21, atol=1e-12)
        self.assertEqual((result.num_lesions, result.num_detected, result.num_false_positives),
                         (3, 2, 3))
        self.assertAllClose(result.fp_rates, LUNA16_FP_RATES)

    def test_irrelevant_candidates_are_not_false_positives(self):
        without = froc(CANDIDATES, LESIONS, 2)
        self.assertEqual(without.num_false_positives, 4)  # c6 now counts
        self.assertEqual(without.num_lesions, 3)

    def test_input_formats_agree(self):
        ref = froc(CANDIDATES, LESIONS, 2, irrelevant=IRRELEVANT)
        as_dicts = froc(_as_dicts(CANDIDATES, "score"), _as_dicts(LESIONS, "diameter"), 2,
                        irrelevant=_as_dicts(IRRELEVANT, "diameter"))
        keyed = froc({"s1": np.array(CANDIDATES[1]), "s0": np.array(CANDIDATES[0])},
                     {"s0": LESIONS[0], "s1": LESIONS[1]}, 2,
                     irrelevant={"s1": IRRELEVANT[1]})
        for other in (as_dicts, keyed):
            self.assertAllClose(other.sensitivities, ref.sensitivities)
        # two more scans without anything halve the FP rates
        wider = froc({"s0": CANDIDATES[0], "s1": CANDIDATES[1]}, {"s0": LESIONS[0],
                     "s1": LESIONS[1]}, 4, irrelevant={"s1": IRRELEVANT[1]})
        self.assertAllClose(wider.sensitivities, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])

    def test_matches_luna16_definition_on_random_cases(self):
        rng = np.random.default_rng(0)
        for trial in range(5):
            num_scans = 6
            lesions, candidates, irrelevant = [], [], []
            for _ in range(num_scans):
                n_les = rng.integers(0, 4)
                les = np.c_[rng.uniform(0, 100, (n_les, 3)), rng.uniform(4, 20, n_les)]
                near = les[rng.integers(0, max(n_les, 1), 6) % max(n_les, 1), :3] \
                    if n_les else np.zeros((0, 3))
                near = near + rng.normal(0, 3, near.shape)
                far = rng.uniform(0, 100, (rng.integers(0, 8), 3))
                cand = np.r_[near, far]
                cand = np.c_[cand, rng.random(len(cand))]
                n_irr = rng.integers(0, 2)
                irr = np.c_[rng.uniform(0, 100, (n_irr, 3)), rng.uniform(4, 20, n_irr)]
                lesions.append(les)
                candidates.append(cand)
                irrelevant.append(irr)
            fps, sens = _luna16_reference(candidates, lesions, irrelevant, num_scans)
            result = froc(candidates, lesions, num_scans, irrelevant=irrelevant)
            self.assertAllClose(result.sensitivities, np.interp(LUNA16_FP_RATES, fps, sens),
                                atol=1e-12, msg=f"trial {trial}")
            # LUNA16 reads the interpolant off a 10001-point grid on [1/8, 8]
            grid = np.linspace(0.125, 8, 10001)
            on_grid = np.interp(grid, fps, sens)
            nearest = [on_grid[np.argmin(np.abs(grid - r))] for r in LUNA16_FP_RATES]
            self.assertAllClose(result.cpm, np.mean(nearest), atol=0.02)

    def test_no_false_positives_and_no_candidates(self):
        lesions = [[[0, 0, 0, 10]], [[0, 0, 0, 10]]]
        only_hits = froc([[[0, 0, 1, 0.4]], []], lesions, 2)
        self.assertAllClose(only_hits.sensitivities, np.full(7, 0.5))
        nothing = froc([[], []], lesions, 2)
        self.assertAllClose(nothing.sensitivities, np.zeros(7))
        self.assertEqual(nothing.cpm, 0.0)
        no_lesions = froc([[[0, 0, 1, 0.4]], []], [[], []], 2)
        self.assertTrue(np.isnan(no_lesions.cpm))

    def test_bootstrap_band(self):
        a = froc(CANDIDATES, LESIONS, 2, irrelevant=IRRELEVANT, bootstrap=200, seed=1)
        b = froc(CANDIDATES, LESIONS, 2, irrelevant=IRRELEVANT, bootstrap=200, seed=1)
        band = a.bootstrap
        self.assertEqual(band["num_resamples"], 200)
        self.assertAllClose(band["mean"], b.bootstrap["mean"])
        self.assertTrue(np.all(band["lower"] <= band["mean"] + 1e-12))
        self.assertTrue(np.all(band["mean"] <= band["upper"] + 1e-12))
        self.assertLessEqual(band["cpm_lower"], band["cpm_upper"])
        self.assertIsNone(froc(CANDIDATES, LESIONS, 2).bootstrap)

    @parameterized.named_parameters(
        ("num_scans_zero", dict(num_scans=0), "num_scans"),
        ("length", dict(num_scans=3), "one entry per scan"),
        ("shape", dict(candidates=[[[1, 2, 3]], []]), r"shape \(n, 4\)"),
        ("diameter", dict(lesions=[[[0, 0, 0, -1]], []]), "diameters must be positive"),
        ("nan", dict(candidates=[[[np.nan, 0, 0, 1]], []]), "NaN"),
        ("keys", dict(candidates=[[{"center": (0, 0, 0), "score": 1}], []]), "'centre'"),
        ("fp_rates", dict(fp_rates=(1, 0.5)), "fp_rates"),
        ("bootstrap", dict(bootstrap=-1), "bootstrap"),
        ("mixed", dict(lesions={"a": []}), "all be sequences"),
    )
    def test_errors(self, kwargs, message):
        args = dict(candidates=CANDIDATES, lesions=LESIONS, num_scans=2)
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            froc(args.pop("candidates"), args.pop("lesions"), args.pop("num_scans"), **args)


class RecallAndAPTest(tf.test.TestCase):

    def test_recall_at_threshold(self):
        r = recall_at_threshold(CANDIDATES, LESIONS, 2, threshold=0.5, irrelevant=IRRELEVANT)
        self.assertAllClose((r.recall, r.fps_per_scan), (1 / 3, 1.5))
        r = recall_at_threshold(CANDIDATES, LESIONS, 2, threshold=0.3, irrelevant=IRRELEVANT)
        self.assertAllClose((r.recall, r.fps_per_scan), (2 / 3, 1.5))
        r = recall_at_threshold(CANDIDATES, LESIONS, 2, threshold=0.97, irrelevant=IRRELEVANT)
        self.assertEqual((r.num_detected, r.num_false_positives), (0, 0))
        with self.assertRaisesRegex(ValueError, "threshold"):
            recall_at_threshold(CANDIDATES, LESIONS, 2, threshold=float("nan"))

    def test_average_precision_hand_computed(self):
        # Ranked by score: c6 ignored, c5 FP, c1 TP, c3 FP, c2 FP (duplicate), c7 FP, c4 TP:
        # envelope precision 1/2 on recall (0, 1/3], 1/3 on (1/3, 2/3] -> AP = 1/6 + 1/9.
        ap = average_precision(CANDIDATES, LESIONS, irrelevant=IRRELEVANT)
        self.assertAllClose(ap, 5 / 18, atol=1e-12)

    def test_average_precision_ranks_by_score_not_coordinates(self):
        lesions = [[[0, 0, 0, 4]]]
        good_first = [[[0, 0, 0, 0.9], [50, 0, 0, 0.1]]]
        good_last = [[[0, 0, 0, 0.1], [50, 0, 0, 0.9]]]
        self.assertEqual(average_precision(good_first, lesions), 1.0)
        self.assertEqual(average_precision(good_last, lesions), 0.5)
        # the same candidates listed in another order give the same AP
        self.assertEqual(average_precision([good_first[0][::-1]], lesions), 1.0)

    def test_average_precision_edge_cases(self):
        self.assertTrue(np.isnan(average_precision([[[0, 0, 0, 1]]], [[]])))
        self.assertEqual(average_precision([[]], [[[0, 0, 0, 4]]]), 0.0)
        with self.assertRaisesRegex(ValueError, "lesions"):
            average_precision([[], []], [[]])


if __name__ == "__main__":
    tf.test.main()
