"""Execute notebooks/iseg.ipynb at tiny size with nbclient."""
import os
from pathlib import Path

import pytest
import tensorflow as tf

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "iseg.ipynb"


@pytest.mark.slow
class IsegNotebookTest(tf.test.TestCase):

    def test_runs_tiny(self):
        nbformat = pytest.importorskip("nbformat")
        nbclient = pytest.importorskip("nbclient")
        tmp = Path(self.get_temp_dir())
        env = dict(ISEG_NB_OUT=str(tmp / "nb"), ISEG_NB_SUBJECTS="2", ISEG_NB_SHAPE="24,24,24",
                   ISEG_NB_CROP="16,16,16", ISEG_NB_EPOCHS="1", ISEG_NB_DOWNSAMPLE="8",
                   ISEG_NB_EAGER="1")
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            nb = nbformat.read(NOTEBOOK, as_version=4)
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(tmp)}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.get("outputs", []))
        self.assertIn("mean DSC over CSF/GM/WM", text)
        self.assertIn("| mean |", text)
        self.assertTrue((tmp / "nb" / "synthetic" / "splits" / "val.txt").is_file())
        self.assertTrue(list((tmp / "nb" / "icbm152_eval").glob("overlay_*.png")))
