"""Executes notebooks/nerve_classification.ipynb end to end with nbclient at a tiny size."""
import os

import pytest
import tensorflow as tf

from ._execute import run_notebook

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks", "nerve_classification.ipynb")


@pytest.mark.slow
class NerveClassificationNotebookTest(tf.test.TestCase):

    def test_runs_at_tiny_size(self):
        out = self.get_temp_dir()
        env = {"NERVE_CLS_OUT": out, "NERVE_CLS_FRAME_SIZE": "32", "NERVE_CLS_INPUT_SIZE": "32",
               "NERVE_CLS_VIDEOS": "4", "NERVE_CLS_TEST_VIDEOS": "1", "NERVE_CLS_FRAMES": "1",
               "NERVE_CLS_INITIAL_EPOCHS": "1", "NERVE_CLS_FINE_TUNE_EPOCHS": "1"}
        nb = run_notebook(NOTEBOOK, env, cwd=out, timeout=300)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        text = "".join(o.get("text", "") for o in outputs)
        self.assertIn("test: accuracy", text)
        self.assertIn("saved model on the test video: accuracy", text)
        self.assertIn("videos on both sides: set()", text)
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        self.assertGreaterEqual(len(figures), 4)  # frames, curves, ROC, samples
        run = os.path.join(out, "run")
        for name in ("MobileNetV2_test_CM.txt", "MobileNetV2_test_roc.png", "model.keras",
                     "acc_loss_after_fine_tuning.png"):
            self.assertTrue(os.path.isfile(os.path.join(run, name)), name)
