"""The shared transfer-learning recipe: frozen ImageNet backbone + small head, then fine-tuning.

Model (nerve original, ``ORIGINALS.md`` section 1)::

    Input (0..255 RGB) -> [augmentation] -> preprocessing -> backbone (inference mode)
        -> GlobalAveragePooling2D -> [Dense(hidden, relu)] -> Dropout -> Dense(num_classes)

The last layer returns LOGITS: train with ``SparseCategoricalCrossentropy(from_logits=True)``
and apply one softmax for evaluation (the original put a softmax in the model *and* used
``from_logits=True``, so probabilities went through softmax twice, three times in its ROC).

Inference mode of the backbone
------------------------------
The original called ``base_model(x, training=False)`` so that BatchNormalization kept using
its ImageNet moving statistics, also after unfreezing. In Keras 3 a functional model passes
the outer ``training`` flag to every nested layer and overrides that ``training=False``, so
the backbone is wrapped in :class:`InferenceMode`, which always calls it with
``training=False``: BatchNormalization normalises with (and never updates) its moving
statistics and the backbone's own dropout is off, in both stages. Its BatchNormalization
gamma/beta after the fine-tune point are trainable in stage 2, as in the original.

Two stages (:func:`fit_two_stage`)
----------------------------------
1. backbone frozen, ``Adam(base_learning_rate)`` for ``initial_epochs`` epochs;
2. layers from ``fine_tune_at`` on trainable (those before stay frozen),
   ``Adam(base_learning_rate / 10)`` for ``fine_tune_epochs`` more epochs, numbered on from
   the epochs stage 1 actually ran (the original restarted at ``history.epoch[-1]`` and so
   ran that epoch number twice).
"""
from __future__ import annotations

import numbers

import keras
import numpy as np

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.backbones import (
    BackbonePreprocessing,
    build_backbone,
    get_backbone_spec,
    resolve_layer,
)

__all__ = [
    "InferenceMode",
    "build_transfer_classifier",
    "default_augmentation",
    "fit_two_stage",
    "freeze_backbone",
    "get_backbone",
    "unfreeze_from",
]

HEADS = ("linear", "mlp")


@keras.saving.register_keras_serializable(package="keras_medseg")
class InferenceMode(keras.layers.Wrapper):
    """Call the wrapped layer (a backbone) with ``training=False`` whatever the caller says.

    Parameters
    ----------
    layer : keras.layers.Layer
        Usually a keras.applications model.
    """

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def default_augmentation(*, seed=None):
    """The augmentation the original defined (and never applied): horizontal flip and
    rotation by up to 0.2 of a full turn. Active only in training (``fit``).

    Returns
    -------
    list of keras layers
    """
    return [keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip"),
            keras.layers.RandomRotation(0.2, seed=seed, name="augment_rotation")]


def build_transfer_classifier(backbone, num_classes, *, input_shape=(224, 224, 3), dropout=0.3,
                              encoder_weights=None, head="linear", hidden_units=128,
                              augmentation=None, backbone_kwargs=None, name=None):
    """Build the transfer-learning classifier with a frozen backbone.

    Parameters
    ----------
    backbone : str
        Registry name (:func:`keras_medseg.backbones.list_backbones`).
    num_classes : int
        Number of classes (>= 2); the output is ``(batch, num_classes)`` float32 logits.
    input_shape : tuple of int
        ``(height, width, channels)`` of the 0..255 input images.
    dropout : float
        Dropout rate before the last Dense, in [0, 1); 0 adds no Dropout layer.
    encoder_weights : None, "imagenet" or path
        Backbone weights, see :func:`keras_medseg.backbones.build_backbone`.
    head : {"linear", "mlp"}
        ``"linear"`` (nerve): GAP -> Dropout -> Dense(num_classes). ``"mlp"`` (brainview):
        GAP -> Dense(hidden_units, relu) -> Dropout -> Dense(num_classes); brainview uses
        ``dropout=0``.
    hidden_units : int
        Width of the hidden Dense of the ``"mlp"`` head.
    augmentation : None, "default" or sequence of keras layers
        Layers applied to the raw images before preprocessing; Keras' random layers act only
        when training. ``"default"`` is :func:`default_augmentation`.
    backbone_kwargs : dict, optional
        Extra keras builder arguments (e.g. ``{"alpha": 0.35}``).
    name : str, optional
        Model name; default ``"<backbone>_classifier"``.

    Returns
    -------
    keras.Model
        With the backbone (wrapped in :class:`InferenceMode`, layer name ``"backbone"``)
        frozen.

    Raises
    ------
    ValueError
        For an unknown backbone or head, ``num_classes`` < 2, a dropout outside [0, 1), a
        non-positive ``hidden_units``, an ``augmentation`` that is not a list of layers, and as
        :func:`~keras_medseg.backbones.build_backbone` raises.
    """
    spec = get_backbone_spec(backbone)
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")
    check_choice(head, HEADS, name="head")
    if not isinstance(hidden_units, numbers.Integral) or hidden_units < 1:
        raise ValueError(f"hidden_units must be a positive int; got {hidden_units!r}")
    if augmentation is None:
        aug_layers = []
    elif isinstance(augmentation, str):
        check_choice(augmentation, ("default",), name="augmentation")
        aug_layers = default_augmentation()
    else:
        aug_layers = list(augmentation)
        if not all(isinstance(layer, keras.layers.Layer) for layer in aug_layers):
            raise ValueError(f"augmentation must be None, 'default' or a sequence of keras "
                             f"layers; got {augmentation!r}")
    base = build_backbone(spec.name, input_shape, weights=encoder_weights,
                          **dict(backbone_kwargs or {}))
    base.trainable = False

    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for layer in aug_layers:
        x = layer(x)
    x = BackbonePreprocessing(spec.preprocessing, name="preprocess")(x)
    x = InferenceMode(base, name="backbone")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if head == "mlp":
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name or f"{spec.name}_classifier")


def get_backbone(model):
    """The backbone inside a classifier from :func:`build_transfer_classifier`.

    A model without an :class:`InferenceMode` layer is returned unchanged (it is taken to be
    the backbone itself).
    """
    for layer in model.layers:
        if isinstance(layer, InferenceMode):
            return layer.layer
    return model


def freeze_backbone(model):
    """Make every layer of the backbone non-trainable; return the backbone."""
    backbone = get_backbone(model)
    backbone.trainable = False
    return backbone


def unfreeze_from(model, layer):
    """Make the backbone trainable from ``layer`` on; the layers before it stay frozen.

    Parameters
    ----------
    model : keras.Model
        A classifier from :func:`build_transfer_classifier`, or a backbone.
    layer : str or int
        The first trainable layer, by name (preferred: indices shift between Keras
        versions) or index into the backbone's ``layers``.

    Returns
    -------
    int
        Index of ``layer`` in the backbone's ``layers``.

    Notes
    -----
    BatchNormalization layers after the point get trainable gamma/beta but stay in inference
    mode (moving statistics used, never updated) because the classifier calls the backbone
    through :class:`InferenceMode`. Recompile the model after calling this.
    """
    backbone = get_backbone(model)
    target = resolve_layer(backbone, layer)
    index = next(i for i, la in enumerate(backbone.layers) if la is target)
    backbone.trainable = True
    for la in backbone.layers[:index]:
        la.trainable = False
    return index


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit_two_stage(model, train_data, val_data=None, *, backbone=None, initial_epochs=10,
                  fine_tune_epochs=None, fine_tune_at=None, base_learning_rate=1e-3,
                  metrics=("accuracy",), runner=None, callbacks=(), verbose="auto"):
    """Train ``model`` with the original's two stages; return both histories.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_transfer_classifier` (logits output; build it inside
        ``runner.scope()`` when a distribution strategy is used).
    train_data, val_data
        Anything ``Model.fit`` accepts as ``x`` (``tf.data.Dataset`` of ``(image, label)``
        batches, integer labels) and ``validation_data``.
    backbone : str, optional
        Registry name whose ``fine_tune_at`` / ``fine_tune_epochs`` are the defaults.
    initial_epochs : int
        Stage-1 epochs (frozen backbone); 0 skips stage 1 (brainview trains stage 2 only).
    fine_tune_epochs : int, optional
        Stage-2 epochs; default the spec's.
    fine_tune_at : str or int, optional
        First trainable backbone layer in stage 2; default the spec's.
    base_learning_rate : float
        Adam learning rate of stage 1; stage 2 uses a tenth of it.
    metrics : sequence
        Keras metrics (``"accuracy"`` works on logits with integer labels).
    runner : keras_medseg.training.Runner, optional
        Supplies the strategy, callbacks, logs and resume; default an in-memory
        ``Runner()`` that writes nothing.
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks for both stages.
    verbose
        As for ``Model.fit`` (with ``runner.progress == "keras"``).

    Returns
    -------
    history1, history2 : dict
        ``{"epoch": [...], "loss": [...], ...}`` per stage, epochs 0-based and continuous
        across the stages (history1 is empty when ``initial_epochs == 0``).

    Raises
    ------
    ValueError
        Negative epochs, a non-positive learning rate, or no fine-tune point/epochs given
        and none registered for ``backbone``.
    """
    from keras_medseg.training.runner import Runner

    spec = get_backbone_spec(backbone) if backbone is not None else None
    if fine_tune_at is None:
        fine_tune_at = spec.fine_tune_at if spec is not None else None
    if fine_tune_epochs is None:
        fine_tune_epochs = spec.fine_tune_epochs if spec is not None else None
    if fine_tune_at is None or fine_tune_epochs is None:
        raise ValueError("fine_tune_at and fine_tune_epochs must be given, or backbone must "
                         f"name a registry entry that defines them; got backbone={backbone!r}, "
                         f"fine_tune_at={fine_tune_at!r}, fine_tune_epochs={fine_tune_epochs!r}")
    for value, arg in ((initial_epochs, "initial_epochs"), (fine_tune_epochs, "fine_tune_epochs")):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{arg} must be a non-negative int; got {value!r}")
    check_positive(base_learning_rate, name="base_learning_rate")
    runner = runner if runner is not None else Runner()
    resolve_layer(get_backbone(model), fine_tune_at)  # fail before any training

    history1 = {}
    start = 0
    if initial_epochs > 0:
        freeze_backbone(model)
        runner.compile(model, optimizer=lambda: keras.optimizers.Adam(base_learning_rate),
                       loss=_loss(), metrics=list(metrics))
        history1 = runner.fit(model, train_data, val_data, epochs=initial_epochs,
                              initial_epoch=0, stage="stage1", callbacks=callbacks,
                              verbose=verbose)
        start = (max(history1["epoch"]) + 1) if history1.get("epoch") else 0

    unfreeze_from(model, fine_tune_at)
    runner.compile(model, optimizer=lambda: keras.optimizers.Adam(base_learning_rate / 10),
                   loss=_loss(), metrics=list(metrics))
    history2 = runner.fit(model, train_data, val_data, epochs=start + fine_tune_epochs,
                          initial_epoch=start, stage="stage2", callbacks=callbacks,
                          verbose=verbose)
    return history1, history2


# ---------------------------------------------------------------------- BN calibration
# Offline (weights=None) a randomly initialised backbone kept in inference mode has moving
# statistics (mean 0, variance 1) that do not match its activations, so its features vanish
# (std ~1e-11 at MobileNetV2's top). Setting the moving statistics from a batch of training
# images restores a usable signal; with ImageNet weights this is not needed.
def _backbone_input_model(model):
    """(backbone, model from the classifier's input to the backbone's input)."""
    for layer in model.layers:
        if isinstance(layer, InferenceMode):
            return layer.layer, keras.Model(model.input, layer.input)
    raise ValueError(f"model {model.name!r} has no InferenceMode backbone; build it with "
                     f"keras_medseg.training.build_transfer_classifier")


def _batchnorm_layers(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
        elif isinstance(layer, keras.Model):
            out.extend(_batchnorm_layers(layer))
    return out


def calibrate_batchnorm(model, images, *, _parts=None):
    """Set the backbone's BatchNormalization moving mean and variance to the statistics of
    ``images`` (one forward pass with batch statistics at every layer).

    Parameters
    ----------
    model : keras.Model
        A classifier from :func:`keras_medseg.training.build_transfer_classifier`.
    images : array (n, height, width, 3)
        0..255 images of the model's input size (the model's augmentation is not applied).

    Returns
    -------
    int
        Number of BatchNormalization layers set.

    Raises
    ------
    ValueError
        If ``model`` has no :class:`~keras_medseg.training.InferenceMode` backbone or
        ``images`` is not a non-empty 4D batch.

    Notes
    -----
    Each layer gets exactly the mean and (biased) variance of its input over the batch
    when every earlier layer normalises with its own batch statistics, so the backbone in
    inference mode reproduces its training-mode output on ``images``. Trainable flags and
    momenta are restored afterwards; gamma and beta are not changed.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (n, height, width, channels); "
                         f"got shape {images.shape}")
    backbone, to_input = _parts if _parts is not None else _backbone_input_model(model)
    layers = _batchnorm_layers(backbone)
    state = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
            layer.trainable = True
        backbone(to_input(images, training=False), training=True)
    finally:
        for layer, (momentum, trainable) in zip(layers, state):
            layer.momentum = momentum
            layer.trainable = trainable
    return len(layers)


class BatchNormCalibration(keras.callbacks.Callback):
    """Keras callback keeping a random-initialised backbone's BatchNormalization statistics
    in step with its weights: :func:`calibrate_batchnorm` on ``images`` every ``every``
    training batches and before every validation/evaluation pass.

    Parameters
    ----------
    model : keras.Model
        The classifier being trained.
    images : array (n, height, width, 3)
        Fixed calibration batch (0..255).
    every : int
        Calibrate before training batches ``0, every, 2 * every, ...`` of each epoch.

    Raises
    ------
    ValueError
        As :func:`calibrate_batchnorm`, or for ``every`` < 1.
    """

    def __init__(self, model, images, *, every=4):
        super().__init__()
        check_positive(every, name="every")
        self._target = model
        self._images = np.asarray(images, dtype=np.float32)
        if self._images.ndim != 4 or self._images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty batch (n, height, width, channels); "
                             f"got shape {self._images.shape}")
        self._parts = _backbone_input_model(model)
        self.every = int(every)

    def calibrate(self):
        """Calibrate now; return the number of BatchNormalization layers set."""
        return calibrate_batchnorm(self._target, self._images, _parts=self._parts)

    def on_train_batch_begin(self, batch, logs=None):
        if batch % self.every == 0:
            self.calibrate()

    def on_test_begin(self, logs=None):
        self.calibrate()
