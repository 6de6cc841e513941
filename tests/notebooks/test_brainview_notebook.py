"""Executes notebooks/brainview.ipynb end to end with nbclient at a tiny size."""
import os

import pytest
import tensorflow as tf

from ._execute import run_notebook, output_text, output_images

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks", "brainview.ipynb")


@pytest.mark.slow
class BrainviewNotebookTest(tf.test.TestCase):

    def test_runs_at_tiny_size(self):
        out = self.get_temp_dir()
        env = {"BRAINVIEW_OUT": out, "BRAINVIEW_SIZE": "32", "BRAINVIEW_EPOCHS": "1",
               "BRAINVIEW_K": "2", "BRAINVIEW_SLICES": "8", "BRAINVIEW_ICBM": "0"}
        nb = run_notebook(NOTEBOOK, env, cwd=out, timeout=300)
        text = output_text(nb)
        self.assertIn("final model, test:", text)
        self.assertIn("cross-dataset test:", text)
        self.assertIn("threshold 0.6 on scale 0-255", text)
        images = output_images(nb)
        self.assertGreaterEqual(len(images), 2)
        self.assertTrue(os.path.isfile(os.path.join(out, "kfold", "cv", "folds.md")))
        self.assertTrue(os.path.isfile(os.path.join(out, "cross", "test_F1.txt")))
