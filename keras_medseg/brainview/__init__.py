"""brainview: horizontal / coronal / sagittal view recognition of brain slices.

Reproduces View_Recognition_of_Mouse_Brains (``ORIGINALS.md`` section 2): EfficientNetB0
with its last 5 layers trainable and a GAP -> Dense(128, relu) -> Dense(3) head, stratified
5-fold cross-validation with a fresh model per fold, a final model on all training data,
evaluation with accuracy, weighted F1 and one-vs-rest AUC, Grad-CAM on ``top_activation``,
and the cross-dataset experiment. Fixed: Grad-CAM computed directly and overlaid once,
leak-free splits by contiguous slice blocks or by volume, constant slices safe in min-max
scaling, images streamed with ``tf.data``, the near-black threshold given with its scale.
"""
from keras_medseg.brainview.data import (ICBM152_MAPS, ICBM152_MIRROR, SPLIT_METHODS, VIEWS,
                                         ViewSlices, block_groups, drop_near_black,
                                         icbm152_map_views, icbm152_views, load_png_views,
                                         load_volume_views, make_dataset, matching_slices,
                                         slice_volume, split_train_test)
from keras_medseg.brainview.experiment import (BrainviewConfig, ExperimentResult,
                                               cross_validate, evaluate_model, fold_summary,
                                               plot_confusion_matrix, run_cross_dataset,
                                               run_kfold, train_model)
from keras_medseg.brainview.gradcam import (DEFAULT_LAYER, grad_cam, overlay_heatmap,
                                            save_gradcam_figure)
from keras_medseg.brainview.model import (BACKBONE, FINE_TUNE_AT, build_brainview_model,
                                          calibrate_batchnorm, compile_brainview_model,
                                          flip_tta_model, trainable_backbone_layers,
                                          view_augmentation)

__all__ = [
    "BACKBONE", "BrainviewConfig", "DEFAULT_LAYER", "ExperimentResult", "FINE_TUNE_AT",
    "ICBM152_MAPS", "ICBM152_MIRROR", "SPLIT_METHODS", "VIEWS", "ViewSlices", "block_groups",
    "build_brainview_model", "calibrate_batchnorm", "compile_brainview_model",
    "cross_validate", "drop_near_black", "evaluate_model", "flip_tta_model", "fold_summary",
    "grad_cam", "icbm152_map_views", "icbm152_views", "load_png_views", "load_volume_views",
    "make_dataset", "matching_slices", "overlay_heatmap", "plot_confusion_matrix",
    "run_cross_dataset", "run_kfold", "save_gradcam_figure", "slice_volume",
    "split_train_test", "train_model", "trainable_backbone_layers", "view_augmentation",
]
