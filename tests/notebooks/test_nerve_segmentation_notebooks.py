"""The nerve segmentation and linked-pipeline notebooks run end to end at tiny size."""
import os

import nbformat
import pytest
import tensorflow as tf
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks")


@pytest.mark.slow
class NerveNotebookTest(tf.test.TestCase):
    def _run(self, name, env):
        path = os.path.join(NOTEBOOKS, name)
        nb = nbformat.read(path, as_version=4)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": self.get_temp_dir()}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return nb

    def test_nerve_segmentation(self):
        nb = self._run("nerve_segmentation.ipynb",
                       {"NB_IMAGE_SIZE": "32", "NB_EPOCHS": "1", "NB_VIDEOS": "4",
                        "NB_OUT": os.path.join(self.get_temp_dir(), "seg")})
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.get("outputs", []))
        self.assertIn("Dice (smooth 1e-15)", text)
        self.assertTrue(os.path.isfile(os.path.join(self.get_temp_dir(), "seg", "run",
                                                    "TrainValResult.txt")))

    def test_linked_pipeline(self):
        out = os.path.join(self.get_temp_dir(), "linked")
        self._run("linked_pipeline.ipynb", {"NB_FRAMES_PER_CLASS": "1", "NB_OUT": out})
        self.assertTrue(os.path.isfile(os.path.join(out, "shared", "linked.mp4")))
        self.assertTrue(os.path.isfile(os.path.join(out, "shared", "output", "frame3.png")))
