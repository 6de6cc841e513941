"""Tests of whole-volume screening: exact tiling, centres, and NumPy candidate boxes."""
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.nodule3d import models as M
from keras_medseg.nodule3d import screening as S
from tests.nodule3d.test_models import randomise


class PlanTilesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(((30, 61, 64), (17, 34, 36)), ((15, 30, 30), (15, 30, 30)),
                              ((40, 90, 75), (20, 31, 100)))
    def test_tiles_cover_map_with_aligned_inputs(self, shape, tile):
        n_out = M.output_shape_for(shape)
        count = np.zeros(n_out, int)
        sizes = set()
        for s_in, s_out in S.plan_tiles(shape, tile):
            count[s_out] += 1
            sizes.add(tuple(s.stop - s.start for s in s_in))
            for a in range(3):
                self.assertEqual(s_in[a].start, s_out[a].start * M.STRIDE[a])
                m = s_out[a].stop - s_out[a].start
                self.assertEqual(s_in[a].stop - s_in[a].start,
                                 (m - 1) * M.STRIDE[a] + M.RECEPTIVE_FIELD[a])
                self.assertLessEqual(s_in[a].stop, shape[a])
                self.assertLessEqual(s_in[a].stop - s_in[a].start, max(tile[a], 0))
        self.assertTrue(np.all(count >= 1))
        self.assertLen(sizes, 1)                   # one tile shape: one traced graph

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "tile_shape"):
            S.plan_tiles((30, 60, 60), (14, 30, 30))
        with self.assertRaisesRegex(ValueError, "volume_shape"):
            S.plan_tiles((30, 20, 60), (15, 30, 30))


class ScreenVolumeTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = randomise(M.build_candidate_screening(), seed=0)
        cls.volume = np.random.default_rng(1).normal(size=(24, 50, 53)).astype(np.float32)
        cls.untiled = S.screen_volume(cls.model, cls.volume, tile_shape=None)

    def test_untiled_equals_model(self):
        ref = self.model(self.volume[None, ..., None]).numpy()[0]
        self.assertAllClose(self.untiled.probabilities, ref, atol=1e-6)
        self.assertEqual(self.untiled.probabilities.dtype, np.float32)

    @parameterized.parameters(((19, 40, 44), 1), ((24, 50, 31), 3), ((15, 50, 53), 4))
    def test_tiled_equals_untiled(self, tile, batch_size):
        before = self.volume.copy()
        tiled = S.screen_volume(self.model, self.volume, tile_shape=tile,
                                batch_size=batch_size)
        self.assertGreater(len(S.plan_tiles(self.volume.shape, tile)), 1)
        # Equal up to float32 round-off (convolution blocking depends on the input size).
        self.assertAllClose(tiled.probabilities, self.untiled.probabilities, atol=2e-5, rtol=0)
        self.assertAllEqual(self.volume, before)

    def test_auto_tiles_and_shifted_tiles_differ(self):
        auto = S.screen_volume(self.model, self.volume, max_tile_voxels=20 * 40 * 40)
        self.assertAllClose(auto.probabilities, self.untiled.probabilities, atol=2e-5, rtol=0)
        # A tiling that started tiles one voxel off the stride grid would not match.
        shifted = S.screen_volume(self.model, self.volume[:, 1:, :], tile_shape=None)
        n = shifted.probabilities.shape[1]
        diff = np.abs(shifted.probabilities - self.untiled.probabilities[:, :n])
        self.assertGreater(diff.max(), 1e-2)

    def test_centres(self):
        r = self.untiled
        d, h, w = r.probabilities.shape[:3]
        grid = r.centre_grid()
        self.assertEqual(grid.shape, (d, h, w, 3))
        idx = np.stack(np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij"), -1)
        self.assertAllEqual(grid, M.output_to_input(idx))
        self.assertAllEqual(r.y_centres[:3], [15, 17, 19])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "volume must be"):
            S.screen_volume(self.model, np.zeros((30, 30)))
        with self.assertRaisesRegex(ValueError, "receptive field"):
            S.screen_volume(self.model, np.zeros((14, 30, 30)))
        with self.assertRaisesRegex(ValueError, "channels"):
            S.screen_volume(self.model, np.zeros((15, 30, 30, 2)))
        with self.assertRaisesRegex(ValueError, "tile_shape"):
            S.screen_volume(self.model, self.volume, tile_shape="big")
        with self.assertRaisesRegex(ValueError, "tile_shape"):
            S.screen_volume(self.model, self.volume, tile_shape=(10, 30, 30))
        with self.assertRaisesRegex(ValueError, "batch_size"):
            S.screen_volume(self.model, self.volume, batch_size=0)


class BoxesFromMapTest(tf.test.TestCase):

    def _background(self, shape=(10, 30, 30)):
        p = np.zeros(shape + (2,), np.float32)
        p[..., 0] = 0.9
        p[..., 1] = 0.1
        return p

    def test_nms_by_analytic_iou(self):
        # Boxes (25, 60, 60) shifted by dy along y only: IoU = (60 - dy) / (60 + dy), above
        # 0.5 exactly when dy < 20, i.e. fewer than 10 map rows apart (stride 2).
        p = self._background()
        p[4, 5, 5] = [0.05, 0.95]
        p[4, 14, 5] = [0.1, 0.9]      # dy = 18: IoU 0.538 -> suppressed
        p[4, 26, 5] = [0.2, 0.8]      # dy = 42 from the first: kept
        p[4, 16, 5] = [0.3, 0.7]      # dy = 22 from the first, 20 from the third: kept
        p[9, 29, 29] = [0.8, 0.2]     # background: never a candidate
        r = S.boxes_from_probability_map(p, iou_threshold=0.5)
        self.assertAllClose(r.scores, [0.95, 0.8, 0.7])
        self.assertAllEqual(r.map_indices, [[4, 5, 5], [4, 26, 5], [4, 16, 5]])
        self.assertAllEqual(r.centres, M.output_to_input(r.map_indices))
        self.assertAllEqual(r.boxes[:, 3:] - r.boxes[:, :3], np.tile([25, 60, 60], (3, 1)))
        self.assertAllEqual(r.boxes[0, :3], r.centres[0] - [12, 30, 30])
        self.assertAllEqual(r.labels, [1, 1, 1])
        top1 = S.boxes_from_probability_map(p, max_proposals=1)
        self.assertAllClose(top1.scores, [0.95])
        # At 0.55 the second (IoU 0.538) survives and now suppresses the last (dy = 4).
        loose = S.boxes_from_probability_map(p, iou_threshold=0.55)
        self.assertAllClose(loose.scores, [0.95, 0.9, 0.8])

    def test_threshold_and_empty(self):
        p = self._background()
        p[1, 1, 1] = [0.4, 0.6]
        r = S.boxes_from_probability_map(p, score_threshold=0.6)
        self.assertEqual(r.boxes.shape, (0, 6))
        self.assertEqual(r.scores.shape, (0,))
        self.assertLen(S.boxes_from_probability_map(p, score_threshold=0.59).scores, 1)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "probabilities"):
            S.boxes_from_probability_map(np.zeros((4, 4, 4)))
        with self.assertRaisesRegex(ValueError, "max_proposals"):
            S.boxes_from_probability_map(np.zeros((4, 4, 4, 2)), max_proposals=0)
        with self.assertRaisesRegex(ValueError, "score_threshold"):
            S.boxes_from_probability_map(np.zeros((4, 4, 4, 2)), score_threshold=2)
