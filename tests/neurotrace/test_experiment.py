"""experiments/neurotrace/train_3dssm.py: argument handling and the --synthetic mode end to
end at a tiny size (data generated once and reused on a rerun)."""
import contextlib
import csv
import importlib.util
import io
import os
from pathlib import Path

import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[2]


def _load_script():
    path = REPO / "experiments" / "neurotrace" / "train_3dssm.py"
    spec = importlib.util.spec_from_file_location("neurotrace_train_3dssm_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ArgumentTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.script = _load_script()

    def _error(self, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as ctx:
            self.script.parse_args(argv)
        self.assertEqual(ctx.exception.code, 2)
        return err.getvalue()

    def test_synthetic_options(self):
        args, dc, mc, tc = self.script.parse_args(
            ["--synthetic", "12", "--synthetic-seed", "3", "--synthetic-dir", "d",
             "--synthetic-nodes", "900", "--synthetic-shape", "40,128,96",
             "--train-class-weight", "balanced", "--model-width", "0.5", "--oracle-history"])
        self.assertEqual((args.synthetic, args.synthetic_seed, args.synthetic_dir),
                         (12, 3, "d"))
        self.assertEqual((args.synthetic_nodes, args.synthetic_shape), (900, (40, 128, 96)))
        self.assertFalse(args.synthetic_quick_labels)
        self.assertEqual(tc.class_weight, "balanced")
        self.assertTrue(tc.oracle_history)
        self.assertEqual(mc.width, 0.5)
        self.assertEqual(dc.blocks_csv, "")
        args, dc, _, tc = self.script.parse_args(["--data-blocks-csv", "b.csv"])
        self.assertEqual((args.synthetic, dc.blocks_csv, tc.class_weight), (0, "b.csv", "none"))

    def test_errors(self):
        self.assertIn("--data-blocks-csv or --synthetic", self._error([]))
        self.assertIn("not both", self._error(["--synthetic", "5", "--data-blocks-csv", "b"]))
        self.assertIn("at least 3", self._error(["--synthetic", "2"]))
        self.assertIn(">= 0", self._error(["--synthetic", "-1"]))
        self.assertIn("--synthetic-nodes", self._error(["--synthetic", "5",
                                                        "--synthetic-nodes", "50"]))
        self.assertIn("--synthetic-seed", self._error(["--synthetic", "5",
                                                       "--synthetic-seed", "-2"]))
        self.assertIn("z,y,x", self._error(["--synthetic", "5", "--synthetic-shape", "8,64,64"]))
        self.assertIn("z,y,x", self._error(["--synthetic", "5", "--synthetic-shape", "a,b"]))
        self.assertIn("--train-class-weight", self._error(["--synthetic", "5",
                                                   "--train-class-weight", "auto"]))


@pytest.mark.slow
class SyntheticEndToEndTest(tf.test.TestCase):

    def test_generates_once_trains_and_reports(self):
        script = _load_script()
        root = Path(self.get_temp_dir())
        argv = ["--synthetic", "6", "--synthetic-dir", str(root / "data"),
                "--synthetic-nodes", "800", "--synthetic-shape", "40,128,128",
                "--synthetic-quick-labels", "--train-run-dir", str(root / "run"),
                "--data-val-fraction", "0.25", "--data-test-fraction", "0.3",
                "--model-width", "0.0625", "--train-class-weight", "balanced",
                "--train-resnet-epochs", "1", "--train-fcn-epochs", "2",
                "--train-image-head-epochs", "1", "--train-feature-head-epochs", "1",
                "--train-fusion-epochs", "1", "--train-fusion-repeats", "1"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(script.main(argv), 0)
        text = out.getvalue()
        self.assertIn("6 synthetic neurons", text)
        self.assertIn("3D-SSM test (predicted history): accuracy", text)
        self.assertIn("3D-SSM test (oracle history): accuracy", text)
        blocks_csv = root / "data" / "blocks" / "blocks.csv"
        with open(blocks_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        labelled = [r for r in rows if r["subset"] == "many" and r["label"] != ""]
        self.assertNotEmpty(labelled)
        with open(root / "run" / "results.csv", newline="") as f:
            results = list(csv.DictReader(f))
        test_n = {int(r["n"]) for r in results if r["split"] == "test"}
        self.assertLen(test_n, 1)
        with open(root / "run" / "splits" / "test.txt") as f:
            self.assertLen([line for line in f if line.strip()], test_n.pop())
        # A rerun reuses the generated data and the finished stages.
        image = root / "data" / "neurons" / "images" / "neuron_000.tif"
        stamps = (image.stat().st_mtime_ns, blocks_csv.stat().st_mtime_ns)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(script.main(argv), 0)
        self.assertEqual((image.stat().st_mtime_ns, blocks_csv.stat().st_mtime_ns), stamps)
        self.assertIn(text.split("training and evaluation")[1].split("3D-SSM test")[1].strip(),
                      out.getvalue())
        self.assertTrue(os.path.isfile(root / "run" / "models" / "fusion.keras"))
