"""nodule3d: two-stage 3D lesion detector (convnet3d after Dou et al. 2017).

Stage 1 screens whole volumes with a fully convolutional net
(:func:`build_candidate_screening`, :func:`screen_volume`); stage 2 reduces false positives
on (25, 60, 60) crops (:func:`build_fp_reduction`); :func:`build_detector` chains both in
one Keras model.

The names below are loaded on first access, so that importing the subpackage (e.g. for its
data preparation) does not import Keras.
"""
from keras_medseg._lazy import lazy_exports

_EXPORTS = {
    "layers": ("CropProposals", "DecodeProposalRegression", "ScreeningProposals",
               "UnflattenProposals"),
    "losses": ("OnlineSampleFilteringLoss", "PositiveSmoothL1Loss", "decode_regression",
               "encode_regression_targets", "fp_reduction_losses", "hybrid_loss",
               "pack_regression_targets"),
    "models": ("CENTRE_OFFSET", "RECEPTIVE_FIELD", "STRIDE", "average_models",
               "build_candidate_screening",
               "build_detector", "build_fp_reduction", "init_fp_reduction_from_screening",
               "input_to_output", "output_to_input"),
    "screening": ("ScreeningResult", "boxes_from_probability_map", "screen_volume"),
    "data": ("PatchDataset", "augment_patch", "load_series", "make_kfold",
             "make_stage1_patches", "make_stage2_patches"),
    "training": ("RegressionPatchDataset", "Stage1Config", "Stage2Config",
                 "quick_stage1_config", "quick_stage2_config", "train_stage1", "train_stage2",
                 "write_regression_targets"),
    "evaluation": ("Detections", "EvalConfig", "crop_patches", "detect_volume",
                   "evaluate_detections", "evaluate_series", "odds_score", "plot_froc",
                   "pool_evaluations"),
    "pipeline": ("FoldResult", "PipelineConfig", "PipelineResult", "quick_configs",
                 "reevaluate_run", "run_fold", "run_pipeline"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
