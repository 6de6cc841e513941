"""iseg: FocusNet-style 3D segmentation of infant brain MRI (I-seg_Focus, iSeg-2017).

* :mod:`.models`: :func:`build_focusnet3d` (model 1 ``levels=2``, model 2 ``levels=3``);
* :mod:`.pipeline`: configs with the original's defaults, subject split, PyTorch-style Adam
  with L2 weight decay, step decay, training on prepared HDF5 subjects through the shared
  runner, synthetic and ICBM152-hemisphere sample runs;
* :mod:`.evaluation`: whole-subject sliding-window inference and per-class DSC / MHD / ASD
  tables (``surface`` and ``evalseg`` definitions) with overlay figures.

Data preparation (Analyze -> HDF5) lives in :mod:`keras_medseg.io.hdf5` /
:mod:`keras_medseg.io.prep`. The names below load on first access, so importing the
subpackage does not import Keras.
"""
from keras_medseg._lazy import lazy_exports

_EXPORTS = {
    "models": ("LEVEL_CHANNELS", "build_focusnet3d", "build_focusnet3d_model1",
               "build_focusnet3d_model2"),
    "pipeline": ("CLASS_NAMES", "IsegDataConfig", "IsegModelConfig", "IsegTrainConfig",
                 "AdamL2", "DiceCELoss", "TrainResult", "find_hdf5_subjects", "split_subjects",
                 "make_optimizer", "make_loss", "step_decay", "validation_crops",
                 "build_model", "train_iseg", "downsample_volume",
                 "prepare_icbm152_hemispheres", "prepare_synthetic_subjects",
                 "train_synthetic", "train_icbm152", "crop_size_for", "epochs_for_iterations"),
    "evaluation": ("METRIC_COLUMNS", "EvaluationResult", "load_model", "predict_labels", "score_labels",
                   "summarize_rows", "overlay_figure", "evaluate_subjects"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
