"""Shared training: transfer-learning recipe, the one runner, callbacks, strategies, configs
and the original's report files.

Every task trains through :class:`Runner` / :func:`train` (strategy scope, CSV log, best
checkpoint, resume, TensorBoard, ``config.json`` and ``splits/`` in the run folder).
"""
from keras_medseg.training.callbacks import (
    BestModelCheckpoint,
    EpochCSVLogger,
    TqdmProgress,
    read_csv_log,
)
from keras_medseg.training.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from keras_medseg.training.distribute import configure_logical_cpus, get_strategy, is_chief
from keras_medseg.training.reports import (
    EvaluationResult,
    evaluate_classifier,
    plot_accuracy_loss,
    predict_scores,
    save_prediction_sample,
    write_history_plots,
    write_model_summary,
)
from keras_medseg.training.runner import Runner, train
from keras_medseg.training.transfer import (
    BatchNormCalibration,
    calibrate_batchnorm,
    InferenceMode,
    build_transfer_classifier,
    default_augmentation,
    fit_two_stage,
    freeze_backbone,
    get_backbone,
    unfreeze_from,
)

__all__ = [
    "BestModelCheckpoint",
    "EpochCSVLogger",
    "EvaluationResult",
    "InferenceMode",
    "Runner",
    "TqdmProgress",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "add_config_arguments",
    "build_transfer_classifier",
    "BatchNormCalibration",
    "calibrate_batchnorm",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "configure_logical_cpus",
    "default_augmentation",
    "evaluate_classifier",
    "fit_two_stage",
    "freeze_backbone",
    "get_backbone",
    "get_strategy",
    "is_chief",
    "load_config",
    "plot_accuracy_loss",
    "predict_scores",
    "read_csv_log",
    "save_config",
    "save_prediction_sample",
    "train",
    "unfreeze_from",
    "write_history_plots",
    "write_model_summary",
]
