"""Tests of the nodule3d evaluation path: hit test, NMS, crops, FROC/CPM and report files."""
import json
from pathlib import Path

import keras
import numpy as np
import scipy.special
import tensorflow as tf
from keras import ops

from keras_medseg.nodule3d.evaluation import (EvalConfig, crop_patches, detect_volume,
                                              evaluate_detections, odds_score,
                                              pool_evaluations, write_report)
from keras_medseg.nodule3d.models import RECEPTIVE_FIELD, STRIDE


def _mean_screening_model():
    """A stand-in stage 1: the lesion probability of a map position is the mean of its
    (15, 30, 30) patch (same index map as the real network)."""
    inp = keras.Input((None, None, None, 1))
    x = keras.layers.AveragePooling3D(RECEPTIVE_FIELD, strides=STRIDE, padding="valid")(inp)
    out = keras.layers.Lambda(lambda t: ops.concatenate([1.0 - t, t], axis=-1))(x)
    return keras.Model(inp, out)


def _centre_voxel_fp_model(size=(25, 60, 60)):
    """A stand-in stage 2: lesion probability = the crop's centre voxel."""
    inp = keras.Input(size + (1,))
    c = [s // 2 for s in size]
    x = keras.layers.Cropping3D(tuple((ci, s - ci - 1) for ci, s in zip(c, size)))(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Lambda(lambda t: ops.concatenate([1.0 - t, t], axis=-1))(x)
    return keras.Model(inp, out)


class HitTestTest(tf.test.TestCase):

    def test_near_detection_hits_and_far_one_does_not(self):
        # lesion radius 3 mm: a candidate 2.9 mm away hits, 3.1 mm and 40 mm away do not
        # (the original counted detections FARTHER than the radius as hits).
        lesions = [np.array([[10.0, 10.0, 10.0, 6.0]])]
        for offset, hit in ((2.9, True), (3.1, False), (40.0, False)):
            cands = [np.array([[10.0 + offset, 10.0, 10.0, 0.9]])]
            rep = evaluate_detections(cands, lesions, 1, thresholds=(0.5,))
            self.assertEqual(rep.recall[0]["detected"], int(hit), msg=offset)
            self.assertEqual(rep.recall[0]["false_positives"], int(not hit), msg=offset)

    def test_several_hits_count_once(self):
        lesions = [np.array([[0.0, 0.0, 0.0, 10.0]])]
        cands = [np.array([[1.0, 0, 0, 0.9], [0, 1.0, 0, 0.8], [0, 0, 1.0, 0.7]])]
        rep = evaluate_detections(cands, lesions, 1, thresholds=(0.5,))
        self.assertEqual(rep.recall[0]["detected"], 1)
        self.assertEqual(rep.recall[0]["false_positives"], 0)


class FrocHandComputedTest(tf.test.TestCase):

    def test_cpm(self):
        # scan 0: hit 0.9, FP 0.8; scan 1: FP 0.7, hit 0.6, FP 0.5. Going down the scores:
        # (fps/scan, sensitivity) = (0, .5) (.5, .5) (1, .5) (1, 1) (1.5, 1): sensitivity 0.5 at
        # 1/8, 1/4, 1/2 FPs/scan and 1 at 1, 2, 4, 8 -> CPM = (3 * 0.5 + 4) / 7.
        lesions = [np.array([[0.0, 0, 0, 10]]), np.array([[50.0, 50, 50, 10]])]
        cands = [np.array([[1.0, 0, 0, 0.9], [30, 30, 30, 0.8]]),
                 np.array([[0.0, 0, 0, 0.7], [51, 50, 50, 0.6], [90, 90, 90, 0.5]])]
        rep = evaluate_detections(cands, lesions, 2, thresholds=(0.65, 0.55), bootstrap=50)
        self.assertAllClose(rep.froc.sensitivities, [0.5, 0.5, 0.5, 1, 1, 1, 1])
        self.assertAllClose(rep.froc.cpm, 5.5 / 7)
        self.assertEqual(rep.froc_rows[-1]["fps_per_scan"], "CPM")
        self.assertAllClose(rep.froc_rows[-1]["sensitivity"], 5.5 / 7)
        # recall at 0.65: one of two lesions, FPs 0.8 and 0.7 over 2 scans
        self.assertAllClose([rep.recall[0]["recall"], rep.recall[0]["fps_per_scan"]], [0.5, 1.0])
        self.assertAllClose([rep.recall[1]["recall"], rep.recall[1]["fps_per_scan"]], [1.0, 1.0])
        lo, hi = rep.froc.bootstrap["cpm_lower"], rep.froc.bootstrap["cpm_upper"]
        self.assertLessEqual(lo, hi)

    def test_report_files_and_pooling(self):
        tmp = Path(self.get_temp_dir())
        lesions = [np.array([[0.0, 0, 0, 10]]), np.array([[50.0, 50, 50, 10]])]
        cands = [np.array([[1.0, 0, 0, 0.9], [30, 30, 30, 0.8]]),
                 np.array([[0.0, 0, 0, 0.7], [51, 50, 50, 0.6], [90, 90, 90, 0.5]])]
        # two "folds" of one scan each, written as evaluate_series would
        for f in (0, 1):
            d = tmp / f"f{f}"
            d.mkdir()
            (d / "candidates.csv").write_text(
                "scan,series,z,y,x,score,stage1_score,label\n" + "".join(
                    f"0,s{f},{c[0]},{c[1]},{c[2]},{c[3]},1.0,1\n" for c in cands[f]))
            (d / "lesions.csv").write_text(
                "scan,series,z,y,x,d\n" + "".join(f"0,s{f},{m[0]},{m[1]},{m[2]},{m[3]}\n"
                                                  for m in lesions[f]))
            write_report(evaluate_detections([cands[f]], [lesions[f]], 1, bootstrap=0), d)
        rep = pool_evaluations({0: tmp / "f0", 1: tmp / "f1"}, tmp / "pooled",
                               config=EvalConfig(bootstrap=20))
        self.assertAllClose(rep.froc.cpm, 5.5 / 7)
        for name in ("froc.csv", "froc.md", "recall.csv", "recall.md", "froc.png",
                     "metrics.json", "folds.csv", "folds.md"):
            self.assertTrue((tmp / "pooled" / name).is_file(), name)
        folds = (tmp / "pooled" / "folds.csv").read_text().splitlines()
        self.assertLen(folds, 4)  # header, two folds, pooled
        self.assertAllClose(json.loads((tmp / "pooled" / "metrics.json").read_text())["cpm"],
                            5.5 / 7)


class DetectVolumeTest(tf.test.TestCase):

    def test_crop_patches_pads_outside(self):
        vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
        crops = crop_patches(vol, [[0, 0, 0], [2, 2, 3]], (3, 3, 3), pad_value=-7)
        self.assertAllEqual(crops[1], vol[1:4, 1:4, 2:5])
        self.assertAllEqual(crops[0][1:, 1:, 1:], vol[:2, :2, :2])
        self.assertTrue(np.all(crops[0][0] == -7))
        with self.assertRaisesRegex(ValueError, "volume"):
            crop_patches(vol[0], [[0, 0, 0]], (3, 3, 3))

    def test_nms_keeps_one_candidate_per_blob_at_its_centre(self):
        vol = np.zeros((40, 140, 140), np.float32)
        blobs = [(12, 41, 41), (27, 101, 97)]   # on the map's centre grid (odd y, x)
        for z, y, x in blobs:
            vol[z - 7:z + 8, y - 15:y + 15, x - 15:x + 15] = 1.0
        cfg = EvalConfig(screening_threshold=0.25, max_candidates=10)
        det = detect_volume(_mean_screening_model(), None, vol, config=cfg)
        self.assertLen(det.scores, 2)           # NMS merged each blob's neighbours
        self.assertAllClose(sorted(map(tuple, det.centres)), sorted(blobs))
        self.assertAllClose(det.scores, [1.0, 1.0])
        # without NMS (IoU threshold 1) the neighbours survive
        det_all = detect_volume(_mean_screening_model(), None, vol,
                                config=EvalConfig(iou_threshold=1.0, max_candidates=100))
        self.assertGreater(len(det_all.scores), 2)

    def test_stage2_rescores_candidates(self):
        vol = np.zeros((40, 140, 140), np.float32)
        vol[5:20, 26:56, 26:56] = 0.8              # blob 1 centred (12, 41, 41)
        vol[12, 41, 41] = 0.2                      # its centre voxel
        vol[20:35, 86:116, 82:112] = 0.6           # blob 2 centred (27, 101, 97)
        det = detect_volume(_mean_screening_model(), _centre_voxel_fp_model(), vol,
                            config=EvalConfig(max_candidates=10))
        self.assertLen(det.scores, 2)
        # stage 2 ranks blob 2 first (centre 0.6 > 0.2) though stage 1 preferred blob 1
        self.assertAllClose(det.centres[0], (27, 101, 97))
        self.assertAllClose(det.scores, [0.6, 0.2])
        self.assertGreater(det.stage1_scores[1], det.stage1_scores[0])
        # cascade score: the product of the two stages' probabilities
        casc = detect_volume(_mean_screening_model(), _centre_voxel_fp_model(), vol,
                             config=EvalConfig(max_candidates=10, score="cascade"))
        expected = sorted(zip(det.scores * det.stage1_scores, map(tuple, det.centres)),
                          reverse=True)
        self.assertAllClose(casc.scores, [e[0] for e in expected], rtol=1e-6)
        self.assertAllClose(casc.centres, [e[1] for e in expected])
        # odds score: p1 p2 / (p1 p2 + q1 q2), stage-1 background probability 1 - p1 here
        odds = detect_volume(_mean_screening_model(), _centre_voxel_fp_model(), vol,
                             config=EvalConfig(max_candidates=10, score="odds"))
        p1, p2 = det.stage1_scores.astype(np.float64), det.scores.astype(np.float64)
        post = p1 * p2 / (p1 * p2 + (1 - p1) * (1 - p2))
        expected = sorted(zip(post, map(tuple, det.centres)), reverse=True)
        self.assertEqual(odds.scores.dtype, np.float64)
        self.assertAllClose(odds.scores, [e[0] for e in expected], rtol=1e-5)
        self.assertAllClose(odds.centres, [e[1] for e in expected])
        with self.assertRaisesRegex(ValueError, "score"):
            EvalConfig(score="mean")

    def test_odds_score(self):
        rng = np.random.default_rng(0)
        p1, p2 = rng.uniform(0.01, 0.99, (2, 50))
        got = odds_score(p1, 1 - p1, p2, 1 - p2)
        self.assertAllClose(got, p1 * p2 / (p1 * p2 + (1 - p1) * (1 - p2)), rtol=1e-12)
        # equal odds cancel; a certain stage decides
        self.assertAllClose(odds_score(0.3, 0.7, 0.7, 0.3), 0.5)
        self.assertAllClose(odds_score([1.0, 0.0], [0.0, 1.0], 0.5, 0.5), [1.0, 0.0])
        # stage-1 probabilities that are both 1.0 in float32 still rank by their background
        # probability (the product of probabilities ties them)
        a = odds_score(np.float32(1.0), np.float32(1e-12), 0.6, 0.4)
        b = odds_score(np.float32(1.0), np.float32(1e-9), 0.6, 0.4)
        self.assertGreater(a, b)
        self.assertAllClose(scipy.special.logit(a), np.log(1e12) + np.log(1.5), rtol=1e-4)
