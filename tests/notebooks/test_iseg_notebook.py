"""Execute notebooks/iseg.ipynb at tiny size with nbclient."""
from pathlib import Path

import pytest
import tensorflow as tf

from ._execute import run_notebook, output_text

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "iseg.ipynb"


@pytest.mark.slow
class IsegNotebookTest(tf.test.TestCase):

    def test_runs_tiny(self):
        tmp = Path(self.get_temp_dir())
        env = dict(ISEG_NB_OUT=str(tmp / "nb"), ISEG_NB_SUBJECTS="2", ISEG_NB_SHAPE="24,24,24",
                   ISEG_NB_CROP="16,16,16", ISEG_NB_EPOCHS="1", ISEG_NB_DOWNSAMPLE="8",
                   ISEG_NB_EAGER="1")
        nb = run_notebook(NOTEBOOK, env, cwd=str(tmp), timeout=600)
        text = output_text(nb)
        self.assertIn("mean DSC over CSF/GM/WM", text)
        self.assertIn("| mean |", text)
        self.assertTrue((tmp / "nb" / "synthetic" / "splits" / "val.txt").is_file())
        self.assertTrue(list((tmp / "nb" / "icbm152_eval").glob("overlay_*.png")))
