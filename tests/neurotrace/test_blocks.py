"""Block cutting (keras_medseg.neurotrace.blocks) and data_prep/cut_neuron_blocks.py."""
import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tifffile
from absl.testing import parameterized

from keras_medseg.io.swc import SwcTree, read_swc, write_swc
from keras_medseg.io.volumes import Volume, write_volume
from keras_medseg.neurotrace import blocks as B
from keras_medseg.neurotrace.lmeasure import difference_features, lmeasure_features

REPO = Path(__file__).resolve().parents[2]


def line_tree(start, end, *, reverse=False):
    """A two-node straight line (start -> end) as an SwcTree."""
    xyz = np.array([start, end], float)
    if reverse:  # child listed before its parent
        return SwcTree.from_arrays([2, 1], [3, 3], xyz[::-1], [1, 1], [1, -1])
    return SwcTree.from_arrays([1, 2], [3, 3], xyz, [1, 1], [-1, 1])


def chain(points, *, first_id=1, parent=-1):
    """Ids, xyz and parents of a chain of nodes (the first attached to ``parent``)."""
    n = len(points)
    ids = list(range(first_id, first_id + n))
    parents = [parent] + ids[:-1]
    return ids, [list(p) for p in points], parents


def tree_from_chains(*chains):
    ids, xyz, parents = [], [], []
    for i, p, q in chains:
        ids += i
        xyz += p
        parents += q
    return SwcTree.from_arrays(ids, [3] * len(ids), xyz, [1] * len(ids), parents)


def tree_state(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            out[str(p.relative_to(folder))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


class GeometryTest(tf.test.TestCase, parameterized.TestCase):

    def test_straight_line_crossing_a_box(self):
        # Gold: a line along x at y=50, z=20, resampled to 251 nodes at x = 0..250.
        resampled, nodes, centres = B.block_centres(line_tree([0, 50, 20], [250, 50, 20]))
        self.assertLen(resampled, 251)
        self.assertAllEqual(nodes, [0, 100, 200])
        self.assertAllEqual(centres, [[0, 50, 20], [100, 50, 20], [200, 50, 20]])
        lo, hi = B.block_box(centres[1])
        self.assertAllEqual(lo, [68, 18, 4])
        self.assertAllEqual(hi, [131, 81, 35])
        block = B.cut_swc_block(resampled, centres[1], clean=False)
        # Strictly inside: 68 < x < 131, so x = 69..130 (the nodes at 68 and 131 are out).
        self.assertLen(block, 62)
        self.assertAllClose(block.xyz[:, 0], np.arange(69, 131) - 68)
        self.assertAllClose(block.xyz[:, 1], np.full(62, 32.0))
        self.assertAllClose(block.xyz[:, 2], np.full(62, 16.0))
        self.assertAllEqual(block.ids, np.arange(1, 63))
        self.assertAllEqual(block.parents, np.concatenate([[-1], np.arange(1, 62)]))
        # A node sits at block[round(z), round(y), round(x)] of the image block.
        vol = np.zeros((60, 100, 260), np.uint8)
        vol[20, 50, 69:131] = 1
        img, padded = B.extract_block(vol, centres[1])
        self.assertFalse(padded)
        zyx = np.round(block.xyz[:, ::-1]).astype(int)
        self.assertAllEqual(img[zyx[:, 0], zyx[:, 1], zyx[:, 2]], np.ones(62))
        self.assertEqual(int(img.sum()), 62)

    def test_block_swc_is_resorted(self):
        # The auto tree is cut as read; a child-first file comes out parents-first, ids 1..N,
        # and a line leaving and re-entering the box gives two re-rooted fragments.
        pts = [[x, 50.0, 20.0] for x in range(60, 140, 4)]
        pts += [[140.0, 50.0 + 4 * k, 20.0] for k in range(1, 20)]
        pts += [[120.0, 130.0 - 8 * k, 20.0] for k in range(1, 12)]
        n = len(pts)
        order = np.arange(n)[::-1]
        ids = np.arange(1, n + 1)[order] + 100
        parents = np.where(np.arange(n) == 0, -1, np.arange(n) + 100)[order]
        tree = SwcTree.from_arrays(ids, [3] * n, np.array(pts)[order], [1] * n, parents)
        block = B.cut_swc_block(tree, (100, 50, 20), clean=False)
        lo, hi = B.block_box((100, 50, 20))
        inside = np.array([np.all((np.array(p) > lo) & (np.array(p) < hi)) for p in pts])
        self.assertLen(block, int(inside.sum()))
        self.assertAllEqual(block.ids, np.arange(1, len(block) + 1))
        pidx = block.parent_index
        self.assertTrue(np.all(pidx < np.arange(len(block))))
        self.assertEqual(block.num_trees, 2)
        got = sorted(map(tuple, block.xyz + lo))
        self.assertEqual(got, sorted(map(tuple, np.array(pts, float)[inside])))

    def test_depth_first_matches_recursive_reference(self):
        # A small branching tree with children listed out of order.
        ids = [1, 5, 2, 3, 4, 6, 7]
        parents = [-1, 1, 1, 2, 2, 5, 3]
        xyz = np.arange(21, dtype=float).reshape(7, 3)
        tree = SwcTree.from_arrays(ids, [3] * 7, xyz, [1] * 7, parents)

        def visit(node_id, out):
            out.append(node_id)
            for row in np.flatnonzero(np.array(parents) == node_id):
                visit(ids[row], out)

        expected = []
        visit(1, expected)
        dfs = B.depth_first(tree)
        rows = [ids.index(i) for i in expected]
        self.assertAllEqual(dfs.xyz, xyz[rows])
        self.assertAllEqual(dfs.ids, np.arange(1, 8))
        new_of = {old: k + 1 for k, old in enumerate(expected)}
        self.assertAllEqual(dfs.parents, [-1 if parents[r] < 0 else new_of[parents[r]]
                                          for r in rows])

    def test_centres_every_100_resampled_nodes(self):
        # Branching gold tree with long, unevenly sampled edges.
        tree = tree_from_chains(
            chain([[10, 10, 5], [80, 12, 6], [150, 40, 9]]),
            chain([[160, 120, 9], [230, 130, 12]], first_id=10, parent=3),
            chain([[200, 20, 4], [260, 5, 2]], first_id=20, parent=3))
        resampled, nodes, centres = B.block_centres(tree)
        reference = B.depth_first(tree.resample(1.0))
        self.assertEqual(resampled, reference)
        self.assertAllEqual(nodes, np.arange(0, len(reference), 100))
        self.assertAllEqual(centres, np.floor(reference.xyz[::100] + 0.5))
        steps = resampled.edge_lengths()[1:]
        self.assertLessEqual(float(steps.max()), 1.0 + 1e-9)
        _, nodes50, _ = B.block_centres(tree, every=50)
        self.assertAllEqual(nodes50, np.arange(0, len(reference), 50))

    @parameterized.parameters(((20, 35, 45),), ((0, 0, 0),), ((79, 5, 2),), ((-40, 200, 9),))
    def test_image_block_is_the_zero_padded_slab(self, centre):
        rng = np.random.default_rng(0)
        vol = rng.integers(1, 60000, size=(40, 70, 90)).astype(np.uint16)
        block, padded = B.extract_block(vol, centre)
        self.assertEqual(block.shape, (32, 64, 64))
        self.assertEqual(block.dtype, np.uint16)
        # Reference: pad the volume generously with zeros and slice.
        p = 300
        big = np.pad(vol, p)
        cx, cy, cz = centre
        ref = big[p + cz - 16:p + cz + 16, p + cy - 32:p + cy + 32, p + cx - 32:p + cx + 32]
        self.assertAllEqual(block, ref)
        inside = (cz - 16 >= 0 and cz + 16 <= 40 and cy - 32 >= 0 and cy + 32 <= 70
                  and cx - 32 >= 0 and cx + 32 <= 90)
        self.assertEqual(padded, not inside)

    def test_block_geometry_errors(self):
        with self.assertRaisesRegex(ValueError, "centre"):
            B.block_box((1.5, 2, 3))
        with self.assertRaisesRegex(ValueError, "size"):
            B.block_box((1, 2, 3), (32, 64))
        with self.assertRaisesRegex(ValueError, "3D"):
            B.extract_block(np.zeros((4, 4)), (0, 0, 0))
        with self.assertRaisesRegex(ValueError, "every"):
            B.block_centres(line_tree([0, 0, 0], [10, 0, 0]), every=0)
        with self.assertRaisesRegex(ValueError, "SwcTree"):
            B.depth_first([1, 2])


class CleaningTest(tf.test.TestCase):

    EXTENT = (63.0, 63.0, 31.0)

    def test_spurs_up_to_three_nodes_are_removed(self):
        main = chain([[5 + 2 * k, 32, 16] for k in range(25)])  # ids 1..25
        spur3 = chain([[25, 33 + k, 16] for k in range(1, 4)], first_id=100, parent=10)
        branch4 = chain([[35, 31 - k, 16] for k in range(1, 5)], first_id=200, parent=15)
        tree = tree_from_chains(main, spur3, branch4)
        out = B.clean_block_swc(tree, self.EXTENT)
        self.assertLen(out, 25 + 4)
        kept = {tuple(p) for p in out.xyz.tolist()}
        self.assertNotIn((25.0, 34.0, 16.0), kept)
        self.assertIn((35.0, 27.0, 16.0), kept)
        self.assertAllEqual(out.ids, np.arange(1, 30))

    def test_small_fragments_away_from_faces_are_removed(self):
        main = chain([[10 + k, 10, 16] for k in range(20)])
        mid3 = chain([[32, 32 + k, 16] for k in range(3)], first_id=100)      # removed
        face3 = chain([[3, 40 + k, 16] for k in range(3)], first_id=200)      # x=3 <= 6.3
        zface3 = chain([[40, 50 + k, 29] for k in range(3)], first_id=300)    # 31-29 <= 3.1
        mid4 = chain([[45, 30 + k, 15] for k in range(4)], first_id=400)      # 4 nodes: kept
        near_but_not = chain([[7, 45 + k, 16] for k in range(3)], first_id=500)  # x=7 > 6.3
        tree = tree_from_chains(main, mid3, face3, zface3, mid4, near_but_not)
        out = B.clean_block_swc(tree, self.EXTENT)
        kept = {tuple(p) for p in out.xyz.tolist()}
        self.assertLen(out, 20 + 3 + 3 + 4)
        for p, expect in (((32, 33, 16), False), ((3, 41, 16), True), ((40, 51, 29), True),
                          ((45, 31, 15), True), ((7, 46, 16), False)):
            self.assertEqual(tuple(map(float, p)) in kept, expect, p)
        self.assertEqual(out.num_trees, 4)

    def test_clean_flag_in_cut(self):
        main = chain([[70 + k, 40, 20] for k in range(30)])
        frag = chain([[100, 60, 21], [101, 60, 21]], first_id=100)
        tree = tree_from_chains(main, frag)
        self.assertLen(B.cut_swc_block(tree, (100, 50, 20), clean=False), 32)
        self.assertLen(B.cut_swc_block(tree, (100, 50, 20)), 30)


class CuttingTest(tf.test.TestCase):

    def make_neuron(self, folder, *, compress=False, suffix=".tif"):
        """A volume (40, 90, 120) and a gold tree whose auto tree covers only its start."""
        rng = np.random.default_rng(1)
        vol = rng.integers(0, 255, size=(40, 90, 120)).astype(np.uint8)
        gold = tree_from_chains(chain([[5, 45, 20], [115, 45, 20]]),
                                chain([[60, 85, 12]], first_id=10, parent=2))
        # Auto: the first 60 voxels of the main line, 1-voxel steps.
        auto = tree_from_chains(chain([[5 + k, 46, 20] for k in range(60)]))
        folder = Path(folder)
        for sub in ("gold", "auto", "images"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        write_swc(folder / "gold" / "n1.swc", gold)
        write_swc(folder / "auto" / "n1.swc", auto)
        image = folder / "images" / f"n1{suffix}"
        if suffix == ".tif":
            tifffile.imwrite(image, vol, compression="zlib" if compress else None)
        elif suffix == ".npy":
            np.save(image, vol)
        else:
            write_volume(image, Volume(vol))
        return vol, gold, auto

    def check_outputs(self, out, vol, gold, auto, rows):
        resampled, nodes, centres = B.block_centres(gold)
        self.assertLen(rows, len(nodes))
        for r, node, c in zip(rows, nodes, centres):
            self.assertEqual((r["x"], r["y"], r["z"]), tuple(int(v) for v in c))
            self.assertEqual(r["node"], node)
            img = np.load(out / r["image"])
            self.assertAllEqual(img, B.extract_block(vol, c)[0])
            g, a = read_swc(out / r["gold_swc"]), read_swc(out / r["auto_swc"])
            self.assertEqual(g, B.cut_swc_block(resampled, c))
            self.assertEqual(a, B.cut_swc_block(auto, c))
            self.assertEqual((r["n_gold"], r["n_auto"]), (len(g), len(a)))
            self.assertEqual(r["subset"], "few" if len(a) < 10 else "many")
            self.assertIsNone(r["label"])

    def test_cut_folder_few_many_and_index(self):
        data = Path(self.get_temp_dir()) / "data_fm"
        vol, gold, auto = self.make_neuron(data)
        out = Path(self.get_temp_dir()) / "blocks_fm"
        summary = B.cut_blocks_folder(data, out, progress=False)
        rows = B.read_blocks_csv(out / "blocks.csv")
        self.check_outputs(out, vol, gold, auto, rows)
        subsets = [r["subset"] for r in rows]
        self.assertIn("few", subsets)
        self.assertIn("many", subsets)
        self.assertEqual([r["block"] for r in rows], list(range(len(rows))))
        self.assertLen(summary.written, len(rows))
        self.assertIn("few", str(summary))
        self.assertEqual(rows, [dict(r, label=None) for r in summary.rows])

    def test_tiff_is_memory_mapped_not_loaded(self):
        data = Path(self.get_temp_dir()) / "data_mm"
        vol, gold, auto = self.make_neuron(data)
        with B.open_volume(data / "images" / "n1.tif") as reader:
            self.assertEqual(reader.mode, "memmap")
            self.assertIsInstance(reader._array, np.memmap)
            self.assertEqual(reader.shape, vol.shape)
        out = Path(self.get_temp_dir()) / "blocks_mm"
        boom = mock.Mock(side_effect=AssertionError("whole volume read"))
        with mock.patch.object(tifffile, "imread", boom), \
                mock.patch.object(tifffile.TiffFile, "asarray", boom):
            B.cut_blocks(data / "images" / "n1.tif", data / "gold" / "n1.swc",
                         data / "auto" / "n1.swc", out, neuron="n1", progress=False)
        boom.assert_not_called()
        self.check_outputs(out, vol, gold, auto, B.read_blocks_csv(out / "blocks.csv"))

    def test_compressed_tiff_reads_only_block_pages(self):
        data = Path(self.get_temp_dir()) / "data_zip"
        vol, gold, auto = self.make_neuron(data, compress=True)
        keys = []
        original = tifffile.TiffFile.asarray

        def recording(self_, *args, **kwargs):
            keys.append(kwargs.get("key"))
            return original(self_, *args, **kwargs)

        out = Path(self.get_temp_dir()) / "blocks_zip"
        with mock.patch.object(tifffile.TiffFile, "asarray", recording):
            with B.open_volume(data / "images" / "n1.tif") as reader:
                self.assertEqual(reader.mode, "pages")
            B.cut_blocks_folder(data, out, progress=False)
        self.assertTrue(keys)
        self.assertTrue(all(k is not None and 0 < len(k) <= 32 for k in keys), keys)
        self.check_outputs(out, vol, gold, auto, B.read_blocks_csv(out / "blocks.csv"))

    def test_npy_and_nifti_volumes(self):
        for suffix, mode in ((".npy", "memmap"), (".nii.gz", "loaded")):
            data = Path(self.get_temp_dir()) / f"data{suffix}"
            vol, gold, auto = self.make_neuron(data, suffix=suffix)
            with B.open_volume(data / "images" / f"n1{suffix}") as reader:
                self.assertEqual(reader.mode, mode)
            out = Path(self.get_temp_dir()) / f"blocks{suffix}"
            B.cut_blocks_folder(data, out, progress=False)
            self.check_outputs(out, vol, gold, auto, B.read_blocks_csv(out / "blocks.csv"))

    def test_in_memory_inputs(self):
        data = Path(self.get_temp_dir()) / "data_mem"
        vol, gold, auto = self.make_neuron(data)
        out = Path(self.get_temp_dir()) / "blocks_mem"
        summary = B.cut_blocks(vol, gold, auto, out, neuron="n1", progress=False)
        self.check_outputs(out, vol, gold, auto, summary.rows)

    def test_idempotent_resumable_and_input_changes(self):
        data = Path(self.get_temp_dir()) / "data_idem"
        vol, gold, auto = self.make_neuron(data)
        out = Path(self.get_temp_dir()) / "blocks_idem"
        B.cut_blocks_folder(data, out, progress=False)
        rows = B.read_blocks_csv(out / "blocks.csv")
        rows[0]["label"] = 1
        B.write_blocks_csv(out / "blocks.csv", rows)
        before = tree_state(out)
        inputs = tree_state(data)
        second = B.cut_blocks_folder(data, out, progress=False)
        self.assertEqual(second.written, [])
        self.assertLen(second.skipped, len(rows))
        self.assertEqual(tree_state(out), before)
        self.assertEqual(tree_state(data), inputs)
        # Resume: an interrupted neuron (no record, one image missing) redoes only that file;
        # labels of unchanged blocks survive.
        (out / ".blocks" / "n1.json").unlink()
        (out / rows[1]["image"]).unlink()
        third = B.cut_blocks_folder(data, out, progress=False)
        self.assertEqual(third.written, [out / rows[1]["image"]])
        self.assertEqual(B.read_blocks_csv(out / "blocks.csv")[0]["label"], 1)
        # Changed inputs: refused unless overwrite.
        write_swc(data / "auto" / "n1.swc", auto.translate((0, 1, 0)))
        with self.assertRaisesRegex(ValueError, "other inputs"):
            B.cut_blocks_folder(data, out, progress=False)
        redone = B.cut_blocks_folder(data, out, overwrite=True, progress=False)
        self.assertLen(redone.written, len(rows))
        self.assertEqual(read_swc(out / rows[0]["auto_swc"]),
                         B.cut_swc_block(auto.translate((0, 1, 0)), (5, 45, 20)))

    def test_refuses_output_inside_input_and_bad_inputs(self):
        data = Path(self.get_temp_dir()) / "data_bad"
        self.make_neuron(data)
        with self.assertRaisesRegex(ValueError, "input folder"):
            B.cut_blocks_folder(data, data / "blocks", progress=False)
        with self.assertRaisesRegex(ValueError, "neuron must be"):
            B.cut_blocks(np.zeros((4, 4, 4)), data / "gold" / "n1.swc",
                         data / "auto" / "n1.swc", Path(self.get_temp_dir()) / "o",
                         neuron="../x")
        odd = Path(self.get_temp_dir()) / "data_odd"
        shutil.copytree(data, odd)
        for sub, suffix in (("gold", ".swc"), ("auto", ".swc"), ("images", ".tif")):
            (odd / sub / f"n1{suffix}").rename(odd / sub / f"n 1{suffix}")
        with self.assertRaisesRegex(ValueError, "neuron must be"):
            B.cut_blocks_folder(odd, Path(self.get_temp_dir()) / "o_odd", progress=False)
        (data / "auto" / "n2.swc").write_text("1 3 0 0 0 1 -1\n")
        with self.assertRaisesRegex(FileNotFoundError, "n2: no gold SWC"):
            B.find_neurons(data)
        (data / "auto" / "n2.swc").unlink()
        (data / "images" / "n1.tif").write_bytes(b"not a tiff")
        with self.assertRaisesRegex(ValueError, "n1.tif"):
            B.open_volume(data / "images" / "n1.tif")
        with self.assertRaisesRegex(FileNotFoundError, "missing.tif"):
            B.open_volume(data / "images" / "missing.tif")
        tifffile.imwrite(data / "images" / "n1.tif", np.zeros((5, 6), np.uint8))
        with self.assertRaisesRegex(ValueError, "3D"):
            B.open_volume(data / "images" / "n1.tif")


class CsvTest(tf.test.TestCase):

    def test_round_trip(self):
        rows = [{"neuron": "b", "block": 0, "node": 0, "x": 1, "y": 2, "z": 3,
                 "image": "images/b_0000.npy", "gold_swc": "gold/b_0000.swc",
                 "auto_swc": "auto/b_0000.swc", "n_gold": 60, "n_auto": 4, "subset": "few",
                 "padded": 1, "label": None, "note": "x"},
                {"neuron": "a", "block": 1, "node": 100, "x": -5, "y": 20, "z": 30,
                 "image": "images/a_0001.npy", "gold_swc": "gold/a_0001.swc",
                 "auto_swc": "auto/a_0001.swc", "n_gold": 62, "n_auto": 50, "subset": "many",
                 "padded": 0, "label": 1, "note": ""}]
        path = Path(self.get_temp_dir()) / "idx" / "blocks.csv"
        B.write_blocks_csv(path, rows)
        back = B.read_blocks_csv(path)
        self.assertEqual(back, [rows[1], rows[0]])  # sorted by neuron, block
        header = path.read_text().splitlines()[0].split(",")
        self.assertEqual(header[:len(B.CSV_COLUMNS)], list(B.CSV_COLUMNS))

    def test_errors_name_the_file(self):
        path = Path(self.get_temp_dir()) / "bad.csv"
        cols = ",".join(B.CSV_COLUMNS)
        good = "n,0,0,1,2,3,i,g,a,5,6,many,0,"
        for body, pattern in ((f"{cols}\n{good}2\n", "label"),
                              (f"{cols}\n{good.replace('many', 'some')}\n", "subset"),
                              (f"{cols}\n{good.replace('n,0,', 'n,x,', 1)}\n", "'block'"),
                              ("neuron,block\nn,0\n", "lacks")):
            path.write_text(body)
            with self.assertRaisesRegex(ValueError, "bad.csv"):
                B.read_blocks_csv(path)
            with self.assertRaisesRegex(ValueError, pattern):
                B.read_blocks_csv(path)
        with self.assertRaisesRegex(FileNotFoundError, "nope.csv"):
            B.read_blocks_csv(Path(self.get_temp_dir()) / "nope.csv")
        with self.assertRaisesRegex(ValueError, "twice"):
            row = dict(zip(B.CSV_COLUMNS, good.split(",")))
            B.write_blocks_csv(path, [row, row])


def load_script():
    spec = importlib.util.spec_from_file_location("_cut_neuron_blocks",
                                                  REPO / "data_prep" / "cut_neuron_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = load_script().main([str(a) for a in argv] + ["--no-progress"])
    return rc, out.getvalue(), err.getvalue()


class ScriptTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from keras_medseg.sampledata import generate_neurotrace

        cls.tmp = Path(tempfile.mkdtemp(prefix="cut_neuron_blocks_"))
        cls.sample = generate_neurotrace(cls.tmp / "data", seed=3, n_neurons=3,
                                         shape=(32, 96, 96), n_nodes=400)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_help(self):
        res = subprocess.run([sys.executable, str(REPO / "data_prep" / "cut_neuron_blocks.py"),
                              "--help"], capture_output=True, text=True, timeout=120,
                             cwd=REPO)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("cut_neuron_blocks.py", res.stdout)
        self.assertIn("--simulated-labels", res.stdout)

    @pytest.mark.slow
    def test_end_to_end_with_simulated_labels(self):
        from keras_medseg.neurotrace.labels import (load_labeller, read_block_features,
                                                    read_manual_labels)

        data, out = self.tmp / "data", self.tmp / "out"
        inputs = tree_state(data)
        rc, stdout, stderr = run_main([data, out, "--simulated-labels", "--quick"])
        self.assertEqual(rc, 0, stderr)
        self.assertIn("cut_blocks: wrote", stdout)
        self.assertIn("auto_label_blocks:", stdout)
        rows = B.read_blocks_csv(out / "blocks.csv")
        self.assertEqual({r["neuron"] for r in rows}, {"neuron_000", "neuron_001", "neuron_002"})
        for r in rows:
            self.assertEqual(r["label"] is None, r["subset"] == "few")
        # Features are those of the block files.
        feats = read_block_features(out / "features.csv")
        index = feats.index()
        r = next(r for r in rows if r["subset"] == "many")
        g, a = read_swc(out / r["gold_swc"]), read_swc(out / r["auto_swc"])
        k = index[(r["neuron"], r["block"])]
        self.assertAllClose(feats.difference[k], difference_features(g, a))
        self.assertAllClose(feats.lmeasure[k], list(lmeasure_features(a).values()))
        # Labels are the saved labeller's predictions; manual labels were recorded.
        labeller = load_labeller(out / "labeller")
        many = [r for r in rows if r["subset"] == "many"]
        x = feats.difference[[index[(r["neuron"], r["block"])] for r in many]]
        self.assertAllEqual([r["label"] for r in many], labeller.predict(x))
        self.assertEqual(set(read_manual_labels(out / "manual_labels.csv")),
                         {(r["neuron"], r["block"]) for r in rows})
        # Second run: nothing written, inputs untouched.
        before = tree_state(out)
        rc, stdout, stderr = run_main([data, out, "--simulated-labels", "--quick"])
        self.assertEqual(rc, 0, stderr)
        self.assertIn("wrote 0", stdout)
        self.assertEqual(tree_state(out), before)
        self.assertEqual(tree_state(data), inputs)

    def test_features_only(self):
        out = self.tmp / "out_features"
        rc, stdout, stderr = run_main([self.tmp / "data", out, "--features", "--every", "150"])
        self.assertEqual(rc, 0, stderr)
        self.assertIn("features:", stdout)
        rows = B.read_blocks_csv(out / "blocks.csv")
        self.assertTrue(all(r["node"] % 150 == 0 and r["label"] is None for r in rows))
        header = (out / "features.csv").read_text().splitlines()[0].split(",")
        self.assertEqual(header[:3], ["neuron", "block", "esa_gold_to_auto"])
        self.assertLen(header, 2 + 8 + 32)
        self.assertFalse((out / "labeller").exists())

    def test_errors(self):
        data = self.tmp / "data"
        rc, _, err = run_main([data, data / "inside"])
        self.assertEqual(rc, 1)
        self.assertIn("error:", err)
        self.assertIn("input folder", err)
        rc, _, err = run_main([self.tmp / "missing", self.tmp / "o2"])
        self.assertEqual(rc, 1)
        self.assertIn("does not exist", err)
        rc, _, err = run_main([data, self.tmp / "o3", "--manual-labels", self.tmp / "no.csv"])
        self.assertEqual(rc, 1)
        self.assertIn("no.csv", err)


if __name__ == "__main__":
    tf.test.main()
