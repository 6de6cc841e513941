"""Executes notebooks/neurotrace.ipynb end to end with nbclient at a tiny size."""
import os

import nbformat
import pytest
import tensorflow as tf

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks", "neurotrace.ipynb")


@pytest.mark.slow
class NeurotraceNotebookTest(tf.test.TestCase):

    def test_runs_at_tiny_size(self):
        from nbclient import NotebookClient

        out = self.get_temp_dir()
        env = {"NEUROTRACE_OUT": out, "NEUROTRACE_NEURONS": "6", "NEUROTRACE_NODES": "800",
               "NEUROTRACE_SHAPE": "40,128,128", "NEUROTRACE_WIDTH": "0.0625",
               "NEUROTRACE_EPOCHS": "1", "NEUROTRACE_REPEATS": "1"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            nb = nbformat.read(NOTEBOOK, as_version=4)
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": out}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.get("outputs", []))
        self.assertIn("3D-SSM, predicted history: accuracy", text)
        self.assertIn("3D-SSM, oracle history: accuracy", text)
        self.assertTrue(os.path.isfile(os.path.join(out, "run", "results.csv")))
        self.assertTrue(os.path.isfile(os.path.join(out, "run", "splits", "test.txt")))
