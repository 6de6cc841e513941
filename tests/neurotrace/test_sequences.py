"""Tests of the 3D-SSM block sequences on hand-built block tables: neighbours within 100
voxels, chains padded by repetition, predicted history without labels and the oracle mode."""
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_medseg.neurotrace.sequences import (block_chains, check_probabilities,
                                               previous_blocks, sequence_inputs)


def brute_force_previous(neurons, blocks, centres, max_distance):
    out = []
    for i in range(len(neurons)):
        best, best_block = -1, None
        for j in range(len(neurons)):
            if neurons[j] != neurons[i] or blocks[j] >= blocks[i]:
                continue
            if np.linalg.norm(np.subtract(centres[i], centres[j])) <= max_distance:
                if best_block is None or blocks[j] > best_block:
                    best, best_block = j, blocks[j]
        out.append(best)
    return out


class PreviousBlocksTest(tf.test.TestCase):

    def test_hand_built_table(self):
        # rows deliberately out of block order; neuron "b" shares positions with "a"
        neurons = ["a", "a", "a", "a", "b", "a"]
        blocks = [3, 0, 1, 2, 1, 4]
        centres = [[0, 0, 160],     # a3: 100 from a2 (inclusive), 160 from a0
                   [0, 0, 0],       # a0: first block
                   [60, 80, 0],     # a1: exactly 100 from a0
                   [0, 0, 60],      # a2: 60 from a0, 100 from a1 (sqrt(60^2+80^2+60^2)=116.6)
                   [0, 0, 1],       # b1: alone in its neuron (b0 absent)
                   [0, 0, 160.01]]  # a4: a3 is 0.01 away (most recent), a2 100.01 away
        prev = previous_blocks(neurons, blocks, centres)
        self.assertEqual(prev.tolist(), [3, -1, 1, 1, -1, 0])
        self.assertEqual(prev.dtype, np.int64)

    def test_distance_is_inclusive_and_earlier_only(self):
        prev = previous_blocks(["n"] * 3, [0, 1, 2], [[0, 0, 0], [100, 0, 0], [200.5, 0, 0]])
        self.assertEqual(prev.tolist(), [-1, 0, -1])  # 100.5 from block 1: too far
        prev = previous_blocks(["n"] * 2, [1, 0], [[0, 0, 0], [3, 0, 0]])
        self.assertEqual(prev.tolist(), [1, -1])  # only EARLIER block numbers

    def test_neighbours_sharing_a_coordinate_count(self):
        # the original required x, y and z to all differ; same z plane must still count
        prev = previous_blocks(["n"] * 3, [0, 1, 2], [[10, 10, 5], [40, 10, 5], [40, 50, 5]])
        self.assertEqual(prev.tolist(), [-1, 0, 1])

    def test_matches_brute_force(self):
        rng = np.random.default_rng(3)
        n = 60
        neurons = rng.choice(["p", "q", "r"], n)
        blocks = np.empty(n, int)
        for name in ("p", "q", "r"):
            idx = np.flatnonzero(neurons == name)
            blocks[idx] = rng.permutation(len(idx)) * 2 + 1
        centres = rng.uniform(0, 250, (n, 3))
        for dist in (0.0, 60.0, 100.0, 400.0):
            self.assertEqual(previous_blocks(neurons, blocks, centres, max_distance=dist).tolist(),
                             brute_force_previous(neurons, blocks, centres, dist))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "appears twice"):
            previous_blocks(["n", "n"], [1, 1], [[0, 0, 0], [1, 1, 1]])
        with self.assertRaisesRegex(ValueError, "centres"):
            previous_blocks(["n"], [0], [[0, 0]])
        with self.assertRaisesRegex(ValueError, "centres"):
            previous_blocks(["n"], [0], [[0, np.nan, 0]])
        with self.assertRaisesRegex(ValueError, "blocks"):
            previous_blocks(["n", "n"], [0], [[0, 0, 0], [1, 1, 1]])
        with self.assertRaisesRegex(ValueError, "integer"):
            previous_blocks(["n"], [0.5], [[0, 0, 0]])
        with self.assertRaisesRegex(ValueError, "max_distance"):
            previous_blocks(["n"], [0], [[0, 0, 0]], max_distance=-1)
        self.assertEqual(previous_blocks([], [], np.zeros((0, 3))).shape, (0,))


class ChainsTest(tf.test.TestCase):

    def test_padding_by_repetition(self):
        # 0 <- 1 <- 2 <- 3 <- 4 <- 5 ; 6 alone ; 7 <- 8
        prev = np.array([-1, 0, 1, 2, 3, 4, -1, -1, 7])
        chains = block_chains(prev, length=5)
        self.assertAllEqual(chains, [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 2],
                                     [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5],
                                     [6, 6, 6, 6, 6], [7, 7, 7, 7, 7], [7, 7, 7, 7, 8]])
        self.assertAllEqual(block_chains(prev, length=1), np.arange(9)[:, None])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "own predecessor"):
            block_chains([0])
        with self.assertRaisesRegex(ValueError, "row indices"):
            block_chains([-1, 5])
        with self.assertRaisesRegex(ValueError, "length"):
            block_chains([-1], length=0)
        with self.assertRaisesRegex(ValueError, "integer"):
            block_chains([-1.0, 0.0])


class SequenceInputsTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.chains = block_chains(np.array([-1, 0, 1, -1]), length=5)
        self.probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
        self.labels = np.array([1, 0, 1, 0])

    def test_predicted_mode_uses_probabilities_only(self):
        seq = sequence_inputs(self.chains, self.probs)
        self.assertEqual(seq.shape, (4, 5, 2))
        self.assertEqual(seq.dtype, np.float32)
        self.assertAllClose(seq[2], self.probs[[0, 0, 0, 1, 2]])
        self.assertAllClose(seq[3], np.repeat(self.probs[3:4], 5, axis=0))
        # the true labels are not an input, and no one-hot row appears
        self.assertFalse(np.any(np.all(np.isin(seq, (0.0, 1.0)), axis=-1)))

    def test_oracle_mode_feeds_previous_true_labels(self):
        seq = sequence_inputs(self.chains, self.probs, labels=self.labels)
        onehot = np.eye(2)[self.labels]
        self.assertAllClose(seq[2], [onehot[0], onehot[0], onehot[0], onehot[1], self.probs[2]])
        # the current block (last position and padding that repeats it) is never its label
        self.assertAllClose(seq[0], np.repeat(self.probs[0:1], 5, axis=0))
        self.assertAllClose(seq[:, -1], self.probs)
        # changing the current block's label changes nothing of its own sequence
        other = self.labels.copy()
        other[2] = 1 - other[2]
        self.assertAllClose(sequence_inputs(self.chains, self.probs, labels=other)[2], seq[2])

    @parameterized.parameters(
        (np.array([[2.0, -1.0]] * 4), "logits"),
        (np.array([[0.5, 0.6]] * 4), "logits"),
        (np.ones((4, 1)), "C >= 2"),
        (np.array([[np.nan, 1]] * 4), "finite"))
    def test_rejects_non_probabilities(self, probs, word):
        with self.assertRaisesRegex(ValueError, word):
            sequence_inputs(self.chains, probs)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "chains"):
            sequence_inputs(self.chains[:3], self.probs)
        with self.assertRaisesRegex(ValueError, "own block"):
            sequence_inputs(self.chains[::-1], self.probs)
        with self.assertRaisesRegex(ValueError, "labels"):
            sequence_inputs(self.chains, self.probs, labels=[0, 1, 2, 0])
        with self.assertRaisesRegex(ValueError, "labels"):
            sequence_inputs(self.chains, self.probs, labels=[0.0, 1.0, 1.0, 0.0])
        p = check_probabilities([[0.25, 0.75]])
        self.assertEqual(p.dtype, np.float32)
