"""Test environment: nothing written to the user's home, no display, quiet TensorFlow."""
import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="keras_medseg_tests_")
os.environ.setdefault("KERAS_HOME", os.path.join(_TMP, "keras_home"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "mpl"))
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Sample-data cache: tests that need real sample data use their own empty cache unless the
# caller points at a filled one.
os.environ.setdefault("KERAS_MEDSEG_DATA", os.path.join(_TMP, "data_cache"))
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(_TMP, "hypothesis"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
