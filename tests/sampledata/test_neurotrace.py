import os

import numpy as np
import tensorflow as tf
import tifffile
from scipy.spatial import cKDTree

from keras_medseg.io.swc import read_swc
from keras_medseg.sampledata.neurotrace import generate_neurotrace, grow_neuron, simulate_neuron


class NeurotraceTest(tf.test.TestCase):
    KW = dict(n_neurons=2, shape=(24, 64, 64), n_nodes=300)

    def test_files_read_back(self):
        data = generate_neurotrace(os.path.join(self.get_temp_dir(), "a"), seed=0, **self.KW)
        self.assertEqual([n["name"] for n in data.neurons], ["neuron_000", "neuron_001"])
        for n in data.neurons:
            self.assertEqual(n["gold"].parent.name, "gold")
            self.assertEqual(n["auto"].parent.name, "auto")
            self.assertEqual(n["gold"].name, n["auto"].name)
            image = tifffile.imread(n["image"])
            self.assertEqual(image.shape, (24, 64, 64))
            self.assertEqual(image.dtype, np.uint8)
            with tifffile.TiffFile(n["image"]) as tif:
                self.assertLen(tif.pages, 24)
            gold, auto = read_swc(n["gold"]), read_swc(n["auto"])
            self.assertLen(gold, n["gold_nodes"])
            self.assertLen(auto, n["auto_nodes"])
            self.assertEqual(gold.num_trees, 1)
            self.assertEqual(int(gold.types[gold.parents == -1][0]), 1)  # soma root
            # Nodes lie in the volume and the image is brighter on the neuron.
            zyx = np.round(gold.xyz[:, ::-1]).astype(int)
            self.assertTrue(np.all((zyx >= 0) & (zyx < image.shape)))
            on = image[zyx[:, 0], zyx[:, 1], zyx[:, 2]].astype(float)
            self.assertGreater(np.median(on), np.median(image) + 10)
            # Successive gold nodes are about one voxel apart.
            steps = gold.edge_lengths()
            self.assertAllClose(np.median(steps[steps > 0]), 1.0, atol=0.05)

    def test_tree_size_and_radius_taper(self):
        sk = grow_neuron(np.random.default_rng(1), (32, 96, 96), n_nodes=800)
        self.assertLen(sk.parent, 800)
        self.assertEqual(int((sk.parent == -1).sum()), 1)
        self.assertTrue(np.all(sk.parent[1:] < np.arange(1, 800)))  # parents come first
        self.assertGreater(sk.radius[0], 2 * np.median(sk.radius[1:]))
        # Some bifurcations.
        self.assertGreater(int((np.bincount(sk.parent[1:], minlength=800)[1:] == 2).sum()), 3)

    def test_auto_errors_grow_where_quality_is_low(self):
        low_err, high_err = [], []
        for seed in range(3):
            sim = simulate_neuron(np.random.default_rng(seed), (32, 96, 96), n_nodes=600)
            dist, _ = cKDTree(sim.auto.xyz).query(sim.gold.xyz)
            low = sim.node_quality < np.median(sim.node_quality)
            low_err.append((dist[low] > 2).mean())
            high_err.append((dist[~low] > 2).mean())
            self.assertNotEqual(len(sim.auto), len(sim.gold))
        self.assertGreater(np.mean(low_err), np.mean(high_err) + 0.05)

    def test_deterministic(self):
        a = generate_neurotrace(os.path.join(self.get_temp_dir(), "x"), seed=3, n_neurons=1,
                                shape=(16, 48, 48), n_nodes=100)
        b = generate_neurotrace(os.path.join(self.get_temp_dir(), "y"), seed=3, n_neurons=1,
                                shape=(16, 48, 48), n_nodes=100)
        c = generate_neurotrace(os.path.join(self.get_temp_dir(), "z"), seed=4, n_neurons=1,
                                shape=(16, 48, 48), n_nodes=100)
        for key in ("gold", "auto", "image"):
            self.assertEqual(a.neurons[0][key].read_bytes(), b.neurons[0][key].read_bytes())
            self.assertNotEqual(a.neurons[0][key].read_bytes(), c.neurons[0][key].read_bytes())

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "n_nodes"):
            generate_neurotrace(self.get_temp_dir(), n_nodes=10)
        with self.assertRaisesRegex(ValueError, "shape"):
            generate_neurotrace(self.get_temp_dir(), shape=(4, 64, 64))
