"""The brainview view classifier: EfficientNetB0 with its last 5 layers trainable.

Architecture (``ORIGINALS.md`` section 2)::

    Input (0..255 RGB, 512x512 in the original) -> EfficientNetB0 (rescales and normalises
    inside) -> GlobalAveragePooling2D -> Dense(128, relu) -> Dense(3)

built with the shared :func:`keras_medseg.training.build_transfer_classifier` (``head="mlp"``,
no dropout). The backbone is frozen up to ``block7a_project_conv``; that layer and the four
after it (``block7a_project_bn``, ``top_conv``, ``top_bn``, ``top_activation``) train, with
the head, under ``Adam(1e-4)`` and sparse categorical cross-entropy for 10 epochs. The last
layer returns logits (``from_logits=True``), so the softmax is applied once, at evaluation.

Without ImageNet weights
------------------------
A frozen, randomly initialised backbone in inference mode uses BatchNormalization statistics
(mean 0, variance 1) that do not match its activations: the signal dies out through the
blocks (feature standard deviation about 1e-6 at the top) and training stays at loss ln 3.
:func:`calibrate_batchnorm` sets every BatchNormalization's moving mean and variance to the
statistics of a batch of training images (keras calls only, any backend), after which the
frozen random features carry signal. The experiment does this when ``encoder_weights`` is
None; with ImageNet weights nothing is recalibrated.
"""
from __future__ import annotations

import numbers

import keras

from keras_medseg._checks import check_positive
from keras_medseg.training.transfer import (build_transfer_classifier, calibrate_batchnorm,
                                            get_backbone, unfreeze_from)

__all__ = [
    "BACKBONE",
    "FINE_TUNE_AT",
    "build_brainview_model",
    "calibrate_batchnorm",
    "compile_brainview_model",
    "flip_tta_model",
    "trainable_backbone_layers",
    "view_augmentation",
]

BACKBONE = "efficientnetb0"
FINE_TUNE_AT = "block7a_project_conv"
"""First trainable backbone layer: the original trained the last 5 layers."""


def view_augmentation(*, seed=None, rotation=0.05, zoom=0.1, shift=0.05, stretch=0.0,
                      zoom_out=0.0, contrast=0.0, brightness=0.0, independent=False):
    """Augmentation layers that keep the view of a brain slice: left-right and up-down flips,
    rotation by up to ``rotation`` of a turn, zoom and shift by up to ``zoom`` / ``shift`` of
    the image size. Active only in training.

    Optional layers imitate other heads and scanners (all off by default):

    ``stretch``
        A second zoom with independent height and width factors in
        ``[-stretch, stretch]`` (anisotropic scaling: longer, shorter, wider heads).
    ``zoom_out``
        A further isotropic zoom out by a factor in ``[0, zoom_out]`` of the image size
        (smaller sections, as the slices near the ends of a stack are).
    ``contrast``
        ``keras.layers.RandomContrast(contrast)`` on the 0..255 range.
    ``brightness``
        ``keras.layers.RandomBrightness(brightness)`` (an offset of up to ``brightness`` of
        the 0..255 range).

    Parameters
    ----------
    seed : int, optional
    rotation, zoom, shift, stretch, zoom_out, contrast, brightness : float
        Non-negative fractions (see above).
    independent : bool
        Give every layer its own seed (``seed + i``). With one shared seed (the default, the
        first recipe) the layers draw from identical random streams: the rotation angle and
        the zoom factor of an image are then the same uniform draw (correlation 1).

    Returns
    -------
    list of keras layers

    Raises
    ------
    ValueError
        For a negative fraction.
    """
    for name, value in (("rotation", rotation), ("zoom", zoom), ("shift", shift),
                        ("stretch", stretch), ("zoom_out", zoom_out), ("contrast", contrast),
                        ("brightness", brightness)):
        check_positive(value, name=name, allow_zero=True)
    counter = iter(range(100))

    def next_seed():
        i = next(counter)
        return None if seed is None else (int(seed) + i if independent else seed)

    layers = [keras.layers.RandomFlip("horizontal_and_vertical", seed=next_seed(),
                                      name="augment_flip"),
              keras.layers.RandomRotation(rotation, fill_mode="constant", seed=next_seed(),
                                          name="augment_rotation"),
              keras.layers.RandomZoom(zoom, fill_mode="constant", seed=next_seed(),
                                      name="augment_zoom"),
              keras.layers.RandomTranslation(shift, shift, fill_mode="constant",
                                             seed=next_seed(), name="augment_shift")]
    if stretch:
        layers.append(keras.layers.RandomZoom((-stretch, stretch), (-stretch, stretch),
                                              fill_mode="constant", seed=next_seed(),
                                              name="augment_stretch"))
    if zoom_out:
        layers.append(keras.layers.RandomZoom((0.0, zoom_out), fill_mode="constant",
                                              seed=next_seed(), name="augment_zoom_out"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255),
                                                  seed=next_seed(), name="augment_contrast"))
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255),
                                                    seed=next_seed(),
                                                    name="augment_brightness"))
    return layers


def flip_tta_model(model, *, name=None):
    """Test-time augmentation: ``model`` averaged over the view-preserving flips.

    The returned model runs ``model`` (inference mode) on the image, its left-right flip, its
    up-down flip and both, averages the four softmax outputs and returns the logarithm of the
    mean (logits whose softmax is the mean probability), so it drops in wherever ``model``'s
    logits are expected.

    Parameters
    ----------
    model : keras.Model
        Classifier of ``(batch, h, w, c)`` images returning ``(batch, classes)`` logits.
    name : str, optional
        Default ``"<model.name>_tta"``.

    Returns
    -------
    keras.Model
        Shares ``model``'s weights; output ``(batch, classes)`` float32.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="tta_image")
    views = [inputs, keras.ops.flip(inputs, axis=2), keras.ops.flip(inputs, axis=1),
             keras.ops.flip(keras.ops.flip(inputs, axis=1), axis=2)]
    probs = [keras.ops.softmax(model(v, training=False), axis=-1) for v in views]
    mean = keras.ops.mean(keras.ops.stack(probs, axis=0), axis=0)
    logits = keras.ops.log(keras.ops.maximum(mean, 1e-12))
    return keras.Model(inputs, logits, name=name or f"{model.name}_tta")


def build_brainview_model(input_shape=(512, 512, 3), num_classes=3, *, encoder_weights=None,
                          fine_tune_at=FINE_TUNE_AT, hidden_units=128, augmentation=None,
                          name="brainview"):
    """Build the view classifier with the backbone trainable from ``fine_tune_at`` on.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, 3)`` of the 0..255 input.
    num_classes : int
        3 views in the original.
    encoder_weights : None, "imagenet" or path
        See :func:`keras_medseg.backbones.build_backbone` (the original used ImageNet).
    fine_tune_at : str, int or None
        First trainable backbone layer (name or index); None keeps the whole backbone
        frozen; ``0`` trains all of it.
    hidden_units : int
        Width of the hidden Dense layer (128).
    augmentation : None or sequence of keras layers
        Training-time augmentation before the backbone (e.g. :func:`view_augmentation`);
        the original used none.
    name : str

    Returns
    -------
    keras.Model
        Output ``(batch, num_classes)`` float32 logits. Not compiled.

    Raises
    ------
    ValueError
        As :func:`~keras_medseg.training.build_transfer_classifier` and
        :func:`~keras_medseg.training.unfreeze_from` raise (e.g. an unknown layer name).
    """
    model = build_transfer_classifier(BACKBONE, num_classes, input_shape=tuple(input_shape),
                                      dropout=0.0, encoder_weights=encoder_weights, head="mlp",
                                      hidden_units=hidden_units, augmentation=augmentation,
                                      name=name)
    if fine_tune_at is not None:
        unfreeze_from(model, fine_tune_at)
    return model


def trainable_backbone_layers(model):
    """Names of the backbone layers that are trainable and hold weights, in order."""
    backbone = get_backbone(model)
    return [la.name for la in backbone.layers if la.trainable and la.weights]


def compile_brainview_model(model, *, learning_rate=1e-4, runner=None, jit_compile=False,
                            decay_steps=None, ema_momentum=None):
    """Compile with ``Adam(learning_rate)``, sparse categorical cross-entropy on logits and
    accuracy (inside ``runner``'s strategy scope when given); return the model.

    ``decay_steps`` (optional, a positive int) replaces the constant learning rate with a
    cosine decay from ``learning_rate`` to 1 % of it over that many training steps.
    ``jit_compile`` is passed to ``Model.compile`` (False by default: XLA compilation of
    EfficientNet costs more time on a CPU than the short brainview runs gain).
    ``ema_momentum`` (optional, in (0, 1)) keeps an exponential moving average of the
    trainable weights (``Adam(use_ema=True)``), which ``Model.fit`` copies into the model when
    it ends.
    """
    if ema_momentum is not None and (not isinstance(ema_momentum, numbers.Real)
                                     or isinstance(ema_momentum, bool)
                                     or not 0 < ema_momentum < 1):
        raise ValueError(f"ema_momentum must be in (0, 1); got {ema_momentum!r}")
    ema = {} if ema_momentum is None else {"use_ema": True,
                                           "ema_momentum": float(ema_momentum)}
    if decay_steps is not None and (not isinstance(decay_steps, int) or decay_steps < 1):
        raise ValueError(f"decay_steps must be a positive int; got {decay_steps!r}")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def optimizer():
        if decay_steps is None:
            return keras.optimizers.Adam(learning_rate, **ema)
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps, alpha=0.01), **ema)

    if runner is not None:
        return runner.compile(model, optimizer=optimizer, loss=loss, metrics=["accuracy"],
                              jit_compile=jit_compile)
    model.compile(optimizer=optimizer(), loss=loss, metrics=["accuracy"],
                  jit_compile=jit_compile)
    return model
