"""The nerve segmentation and linked-pipeline notebooks run end to end at tiny size."""
import os

import pytest
import tensorflow as tf

from ._execute import run_notebook, output_text


@pytest.mark.slow
class NerveNotebookTest(tf.test.TestCase):
    def _run(self, name, env):
        return run_notebook(name, env, cwd=self.get_temp_dir(), timeout=300)

    def test_nerve_segmentation(self):
        nb = self._run("nerve_segmentation.ipynb",
                       {"NB_IMAGE_SIZE": "32", "NB_EPOCHS": "1", "NB_VIDEOS": "4",
                        "NB_OUT": os.path.join(self.get_temp_dir(), "seg")})
        text = output_text(nb)
        self.assertIn("Dice (smooth 1e-15)", text)
        self.assertTrue(os.path.isfile(os.path.join(self.get_temp_dir(), "seg", "run",
                                                    "TrainValResult.txt")))

    def test_linked_pipeline(self):
        out = os.path.join(self.get_temp_dir(), "linked")
        self._run("linked_pipeline.ipynb", {"NB_FRAMES_PER_CLASS": "1", "NB_OUT": out})
        self.assertTrue(os.path.isfile(os.path.join(out, "shared", "linked.mp4")))
        self.assertTrue(os.path.isfile(os.path.join(out, "shared", "output", "frame3.png")))
