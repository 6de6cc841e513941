"""Executes notebooks/neurotrace.ipynb end to end with nbclient at a tiny size."""
import os

import pytest
import tensorflow as tf

from ._execute import run_notebook, output_text

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks", "neurotrace.ipynb")


@pytest.mark.slow
class NeurotraceNotebookTest(tf.test.TestCase):

    def test_runs_at_tiny_size(self):
        out = self.get_temp_dir()
        env = {"NEUROTRACE_OUT": out, "NEUROTRACE_NEURONS": "6", "NEUROTRACE_NODES": "800",
               "NEUROTRACE_SHAPE": "40,128,128", "NEUROTRACE_WIDTH": "0.0625",
               "NEUROTRACE_EPOCHS": "1", "NEUROTRACE_REPEATS": "1"}
        nb = run_notebook(NOTEBOOK, env, cwd=out, timeout=300)
        text = output_text(nb)
        self.assertIn("3D-SSM, predicted history: accuracy", text)
        self.assertIn("3D-SSM, oracle history: accuracy", text)
        self.assertTrue(os.path.isfile(os.path.join(out, "run", "results.csv")))
        self.assertTrue(os.path.isfile(os.path.join(out, "run", "splits", "test.txt")))
