"""nerve: nerve / opening wound / tendon frames (real-nerveseg2021): classification, nerve
segmentation (U-Net on MobileNetV2, DoubleU-Net, DeepLabV3+) and the linked pipeline.

The names below are loaded on first access, so that importing the subpackage does not
import Keras.
"""
import importlib

_EXPORTS = {
    "segmentation_models": ("build_deeplabv3plus", "build_doubleunet", "build_unet_mobilenetv2",
                            "dilate_backbone", "doubleunet_preprocess"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
