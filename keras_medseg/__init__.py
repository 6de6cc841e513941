"""keras_medseg: five medical-imaging research recipes in one Keras 3 toolkit.

Subpackages: ``metrics`` and ``io`` (shared), ``nerve``, ``brainview``, ``nodule3d``,
``iseg`` and ``neurotrace`` (one per task). Importing the package imports neither
TensorFlow nor Keras; the modules that need them import them.
"""
import os as _os

# TensorFlow's C++ start-up log (CPU feature notices, oneDNN banners) is noise for users;
# a value the user set already wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
