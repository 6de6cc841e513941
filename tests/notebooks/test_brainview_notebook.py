"""Executes notebooks/brainview.ipynb end to end with nbclient at a tiny size."""
import os

import nbformat
import pytest
import tensorflow as tf

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks", "brainview.ipynb")


@pytest.mark.slow
class BrainviewNotebookTest(tf.test.TestCase):

    def test_runs_at_tiny_size(self):
        from nbclient import NotebookClient

        out = self.get_temp_dir()
        env = {"BRAINVIEW_OUT": out, "BRAINVIEW_SIZE": "32", "BRAINVIEW_EPOCHS": "1",
               "BRAINVIEW_K": "2", "BRAINVIEW_SLICES": "8", "BRAINVIEW_ICBM": "0"}
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
        self.assertIn("final model, test:", text)
        self.assertIn("cross-dataset test:", text)
        self.assertIn("threshold 0.6 on scale 0-255", text)
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        self.assertGreaterEqual(len(images), 2)
        self.assertTrue(os.path.isfile(os.path.join(out, "kfold", "cv", "folds.md")))
        self.assertTrue(os.path.isfile(os.path.join(out, "cross", "test_F1.txt")))
