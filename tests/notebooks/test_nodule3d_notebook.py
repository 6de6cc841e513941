"""Execute notebooks/nodule3d.ipynb at tiny size with nbclient."""
from pathlib import Path

import pytest
import tensorflow as tf

from ._execute import run_notebook, output_text

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "nodule3d.ipynb"


@pytest.mark.slow
class Nodule3DNotebookTest(tf.test.TestCase):

    def test_runs_tiny(self):
        tmp = Path(self.get_temp_dir())
        env = dict(NODULE3D_NB_OUT=str(tmp / "nb"), NODULE3D_NB_SERIES="2",
                   NODULE3D_NB_SHAPE="16,128,128", NODULE3D_NB_EPOCHS1="1",
                   NODULE3D_NB_EPOCHS2="1", NODULE3D_NB_CANDIDATES="3", NODULE3D_NB_SEED="4", NODULE3D_NB_MINING="0.0")
        nb = run_notebook(NOTEBOOK, env, cwd=str(tmp), timeout=600)
        text = output_text(nb)
        self.assertIn("CPM", text)
        self.assertTrue((tmp / "nb" / "run" / "summary" / "froc.png").is_file())
