"""nerve: nerve / opening wound / tendon frames (real-nerveseg2021): classification, nerve
segmentation (U-Net on MobileNetV2, DoubleU-Net, DeepLabV3+) and the linked pipeline.

The names below are loaded on first access, so that importing the subpackage does not
import Keras.
"""
from keras_medseg._lazy import lazy_exports

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
