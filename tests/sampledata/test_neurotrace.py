import os

import numpy as np
import tensorflow as tf
import tifffile
from scipy.spatial import cKDTree

from keras_medseg.io.swc import read_swc
from scipy.special import expit

from keras_medseg.sampledata import neurotrace as NT
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

    def test_tracing_errors_switch_on_below_the_breakdown_quality(self):
        # The property that makes tracing difficulty learnable: where the image is poor the
        # automatic tracing is far off the gold tree, where it is good it is close.
        far = {"poor": [], "good": []}
        for seed in range(6):
            sim = simulate_neuron(np.random.default_rng(10 + seed), (32, 96, 96), n_nodes=800)
            dist, _ = cKDTree(sim.auto.xyz).query(sim.gold.xyz)
            far["poor"].extend(dist[sim.node_quality < 0.35] > 2)
            far["good"].extend(dist[sim.node_quality > 0.65] > 2)
        self.assertGreater(len(far["poor"]), 100)
        self.assertGreater(len(far["good"]), 100)
        self.assertGreater(np.mean(far["poor"]), 0.5)
        self.assertLess(np.mean(far["good"]), 0.1)
        self.assertGreater(np.mean(far["poor"]), 5 * np.mean(far["good"]))

    def test_image_noise_shows_the_quality(self):
        # Background noise (std of x-differences away from the neuron) is larger where the
        # quality is poor: the image block carries what drives the tracing errors.
        rng = np.random.default_rng(5)
        noise = {"poor": [], "good": []}
        for _ in range(3):
            sim = simulate_neuron(rng, (32, 96, 96), n_nodes=300)
            img = sim.image.astype(float)
            diff = np.diff(img, axis=2) / np.sqrt(2)
            q = sim.quality[:, :, 1:]
            dark = img[:, :, 1:] < np.median(img)
            noise["poor"].append(diff[dark & (q < 0.3)].std() if (dark & (q < 0.3)).any()
                                 else np.nan)
            noise["good"].append(diff[dark & (q > 0.7)].std() if (dark & (q > 0.7)).any()
                                 else np.nan)
        self.assertGreater(np.nanmean(noise["poor"]), 1.5 * np.nanmean(noise["good"]))

    def test_failure_rate_and_photon_budget(self):
        q = np.linspace(0, 1, 11)
        self.assertAllClose(NT.failure_rate(q),
                            expit((NT.FAILURE_QUALITY - q) / NT.FAILURE_WIDTH))
        self.assertAllClose(NT.failure_rate(NT.FAILURE_QUALITY), 0.5)
        self.assertTrue(np.all(np.diff(NT.failure_rate(q)) < 0))
        self.assertTrue(np.all(np.diff(NT.photon_budget(q)) > 0))
        field = NT.quality_field(np.random.default_rng(0), (16, 64, 64))
        self.assertEqual(field.dtype, np.float32)
        self.assertTrue(np.all((field > 0) & (field < 1)))

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

    def test_data_of_an_older_generator_version_is_refused(self):
        import json

        out = os.path.join(self.get_temp_dir(), "old")
        kw = dict(seed=0, n_neurons=1, shape=(16, 48, 48), n_nodes=100)
        generate_neurotrace(out, **kw)
        marker = os.path.join(out, ".neurotrace.complete.json")
        with open(marker) as f:
            record = json.load(f)
        self.assertEqual(record["params"]["generator"], NT.GENERATOR_VERSION)
        record["params"]["generator"] = NT.GENERATOR_VERSION - 1
        with open(marker, "w") as f:
            json.dump(record, f)
        with self.assertRaisesRegex(ValueError, "different settings"):
            generate_neurotrace(out, **kw)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "n_nodes"):
            generate_neurotrace(self.get_temp_dir(), n_nodes=10)
        with self.assertRaisesRegex(ValueError, "shape"):
            generate_neurotrace(self.get_temp_dir(), shape=(4, 64, 64))
