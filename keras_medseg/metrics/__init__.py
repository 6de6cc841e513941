"""Evaluation metrics shared by every task (definitions: ``shared/METRICS.md``).

Conventions
-----------
* Argument order is Keras's: ``(y_true, y_pred)``.
* Arrays are numpy; masks are boolean (or 0/1) or label maps selected with ``labels=``.
* ``spacing`` gives one value per spatial axis in ARRAY axis order, in mm. Distance metrics
  called without ``spacing`` use 1.0 per axis (distances are then in voxels).
* Every invalid argument raises ``ValueError`` naming the argument and what was received.

The empty-mask rule (the same everywhere)
-----------------------------------------
* both masks empty: overlap metrics (Dice, IoU) and distances are NaN (undefined);
  :func:`summarize` skips NaNs and reports how many it skipped (``n_nan``);
* exactly one mask empty: Dice = IoU = 0 and distances are ``inf`` (or, with
  ``empty_policy="diagonal"``, the image diagonal in mm, as BraTS-style evaluations do).

Distance modes (``mode=``)
--------------------------
``"surface"`` (default, MONAI-like), ``"medpy"`` (medpy.metric.binary), ``"surfel"``
(DeepMind surface-distance) and ``"evalseg"`` (the EvaluateSegmentation tool used by
iSeg-2017); see :mod:`keras_medseg.metrics.surface`.
"""
# Each submodule's public names are imported below, one block per submodule.

# classification, overlap and aggregation; the Keras metrics and losses load lazily (below).
from keras_medseg.metrics.aggregate import Summary, summarize, summarize_per_class  # noqa: E402
from keras_medseg.metrics.classification import (  # noqa: E402
    BinaryMetrics,
    ClassificationReport,
    ConfusionCounts,
    RocCurve,
    classification_report,
    confusion_counts,
    plot_roc,
    write_auc_report,
    write_classification_reports,
    write_confusion_matrix,
    write_f1_report,
)
from keras_medseg.metrics.overlap import compute_dice, compute_iou  # noqa: E402

# surface distances and detection (FROC / CPM, recall, AP).
from keras_medseg.metrics.detection import (  # noqa: E402
    LUNA16_FP_RATES,
    FROCResult,
    RecallResult,
    average_precision,
    froc,
    recall_at_threshold,
)
from keras_medseg.metrics.surface import (  # noqa: E402
    SurfaceDistances,
    compute_asd,
    compute_hausdorff,
    compute_hd95,
    compute_surface_dice,
    compute_surface_distances,
    compute_surface_metrics,
)

# neuron reconstructions (Vaa3D neuron distance).
from keras_medseg.metrics.neuron import (  # noqa: E402
    NeuronDistance,
    directed_neuron_distances,
    distance_to_neuron,
    neuron_distance,
    sample_neuron_points,
)

_KERAS_NAMES = ("DiceCoefficient", "IoU", "dice_loss", "bce_dice_loss")


def __getattr__(name):
    """Import :mod:`keras_medseg.metrics.keras` on first use of one of its names, so that
    importing ``keras_medseg.metrics`` imports neither Keras nor TensorFlow."""
    if name in _KERAS_NAMES:
        from keras_medseg.metrics import keras as _keras_metrics

        return getattr(_keras_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_KERAS_NAMES])
