"""nerve: nerve / opening wound / tendon frames (real-nerveseg2021): classification, nerve
segmentation (U-Net on MobileNetV2, DoubleU-Net, DeepLabV3+) and the linked pipeline.

The names below are loaded on first access, so that importing the subpackage does not
import Keras.
"""
import importlib

_EXPORTS = {
    "classification": ("ClassifierConfig", "ClassifierDataConfig", "ClassifierModelConfig",
                       "ClassifierTrainConfig", "calibrate_batchnorm",
                       "default_classifier_config", "evaluate_classifier_folder",
                       "load_classifier", "split_train_val", "train_classifier"),
    "segmentation_models": ("build_deeplabv3plus", "build_doubleunet", "build_unet_mobilenetv2",
                            "dilate_backbone", "doubleunet_preprocess"),
    "segmentation": ("SegDataConfig", "SegModelConfig", "SegTrainConfig", "build_segmenter",
                     "default_configs", "evaluate_segmenter", "make_datasets",
                     "predict_foreground", "score_masks", "train_segmenter",
                     "write_evaluation"),
    "linked": ("LinkedPipeline", "build_encoder_classifier", "build_shared_model",
               "list_linked_frames", "overlay_mask", "run_linked", "write_video"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
