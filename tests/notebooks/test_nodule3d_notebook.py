"""Execute notebooks/nodule3d.ipynb at tiny size with nbclient."""
import os
from pathlib import Path

import pytest
import tensorflow as tf

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "nodule3d.ipynb"


@pytest.mark.slow
class Nodule3DNotebookTest(tf.test.TestCase):

    def test_runs_tiny(self):
        nbformat = pytest.importorskip("nbformat")
        nbclient = pytest.importorskip("nbclient")
        tmp = Path(self.get_temp_dir())
        env = dict(NODULE3D_NB_OUT=str(tmp / "nb"), NODULE3D_NB_SERIES="2",
                   NODULE3D_NB_SHAPE="16,128,128", NODULE3D_NB_EPOCHS1="1",
                   NODULE3D_NB_EPOCHS2="1", NODULE3D_NB_CANDIDATES="3", NODULE3D_NB_SEED="4", NODULE3D_NB_MINING="0.0")
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
        self.assertIn("CPM", text)
        self.assertTrue((tmp / "nb" / "run" / "summary" / "froc.png").is_file())
