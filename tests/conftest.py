"""Test environment: nothing written to the user's home, no display, quiet TensorFlow."""
import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="keras_medseg_tests_")
os.environ.setdefault("KERAS_HOME", os.path.join(_TMP, "keras_home"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "mpl"))
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Real sample-data cache (filled by `make sample-data`, which `make test` runs first).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_MEDSEG_DATA", os.path.join(_REPO, ".cache", "sample_data"))
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(_TMP, "hypothesis"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase inherits a `test_session` context manager that pytest would collect
    # and report as a skipped "test"; it is not one.
    items[:] = [item for item in items if item.name != "test_session"]
