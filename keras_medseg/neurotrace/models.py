"""The 3D-SSM networks: 3D-ResNet-10, the L-Measure FCN, the two sequence heads, the fusion
MLP and the assembled 3D-SSM (``ORIGINALS.md`` section 5).

Architecture (channels-last; ``w`` = the ``width`` multiplier, 1 in the original)::

    3D-ResNet-10   (32, 64, 64, 1) image block (z, y, x, channel)
                   -> Conv3D 64w (3,3,3) stride (1,2,2) -> BN -> ReLU
                   -> MaxPool3D 3 stride 2
                   -> 4 stages, each SpatialDropout3D(0.2) -> BasicBlock
                      (64w, 128w, 256w, 512w filters; strides 1, 2, 2, 2; shortcut B:
                      Conv3D 1x1x1 + BN where the shape changes, identity otherwise)
                   -> GlobalAveragePooling3D -> Dense(2)            logits
    FCN            (32,) L-Measure features -> Dense(100) relu -> Dense(50) relu -> Dense(2)
    sequence head  (5, 2) sequence -> LSTM(10) -> LSTM(10) -> last step -> Dense(2)
    fusion (MF)    two (2,) head outputs -> concatenate (4) -> Dense(30) relu -> Dense(2)

A BasicBlock is Conv3D 3x3x3 (stride) -> BN -> ReLU -> Conv3D 3x3x3 -> BN, added to the
shortcut, then ReLU. Convolutions have no bias (BN follows); BatchNormalization uses
PyTorch's defaults (momentum 0.9 in Keras terms, epsilon 1e-5), as the original was PyTorch.

Every network returns LOGITS (train with ``SparseCategoricalCrossentropy(from_logits=True)``);
the original applied a ReLU to the ResNet's final logits, which clips negative evidence to 0
and is not reproduced. The sequence heads take PROBABILITIES (softmax of a base network's
logits, or one-hot labels for the history in oracle mode), see
:mod:`keras_medseg.neurotrace.sequences`.

:func:`build_3dssm` assembles the trained networks into one model whose input is the
sequence of 5 blocks (images and features) ending at the block to classify: the base
networks run in inference mode and are frozen (:class:`keras_medseg.training.InferenceMode`),
their softmax probabilities form the two sequences (the previous blocks' PREDICTED
probabilities, never true labels), and the output is the fusion logits.

Example
-------
>>> m = build_resnet10(width=0.125)
>>> m.output.shape
(None, 2)
"""
from __future__ import annotations

import numbers

import keras

from keras_medseg._checks import check_positive
from keras_medseg.training.transfer import InferenceMode

__all__ = [
    "BLOCK_SHAPE",
    "NUM_FEATURES",
    "SEQUENCE_LENGTH",
    "RESNET10_STAGES",
    "apply_basic_block",
    "build_resnet10",
    "build_fcn",
    "build_sequence_head",
    "build_fusion",
    "build_3dssm",
    "freeze",
]

BLOCK_SHAPE = (32, 64, 64, 1)
"""Image block input (z, y, x, channel): 64 x 64 x 32 voxels (x, y, z)."""
NUM_FEATURES = 32
"""L-Measure features per block."""
SEQUENCE_LENGTH = 5
"""Blocks per sequence: 4 previous blocks, then the block to classify."""
NUM_CLASSES = 2
RESNET10_STAGES = (
    # filters, stride, blocks
    (64, 1, 1),
    (128, 2, 1),
    (256, 2, 1),
    (512, 2, 1),
)
"""3D-ResNet-10 stages (MedicalNet layout [1, 1, 1, 1]) at ``width=1``."""

_BN = dict(momentum=0.9, epsilon=1e-5)  # PyTorch BatchNorm3d defaults


def _check_rate(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def _check_width(width):
    if not isinstance(width, numbers.Real) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width must be a positive number; got {width!r}")
    return float(width)


def _check_units(value, name):
    check_positive(value, name=name)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _scaled(filters, width):
    return max(1, int(round(filters * width)))


def apply_basic_block(x, filters, *, name, strides=1, weight_decay=None):
    """ResNet BasicBlock (3D) with a type-B shortcut.

    Layers: ``{name}_conv1``, ``{name}_bn1``, ``{name}_relu1``, ``{name}_conv2``,
    ``{name}_bn2``, ``{name}_shortcut_conv`` and ``{name}_shortcut_bn`` (only where
    ``strides != 1`` or the channels change), ``{name}_add``, ``{name}_relu``.

    Parameters
    ----------
    x : keras tensor ``(batch, z, y, x, C)``
    filters : int
    name : str
    strides : int
    weight_decay : float, optional
        L2 factor of the convolution kernels (None: no regulariser).

    Returns
    -------
    keras tensor ``(batch, ceil(z / s), ceil(y / s), ceil(x / s), filters)``
    """
    if len(x.shape) != 5:
        raise ValueError(f"x must be a 5-D (batch, z, y, x, channels) tensor; got shape "
                         f"{tuple(x.shape)}")
    filters = _check_units(filters, "filters")
    reg = None if weight_decay is None else keras.regularizers.L2(weight_decay)
    conv = dict(use_bias=False, kernel_initializer="he_normal", kernel_regularizer=reg)
    y = keras.layers.Conv3D(filters, 3, strides=strides, padding="same", name=f"{name}_conv1",
                            **conv)(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv3D(filters, 3, padding="same", name=f"{name}_conv2", **conv)(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv3D(filters, 1, strides=strides, padding="same",
                                       name=f"{name}_shortcut_conv", **conv)(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn", **_BN)(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def build_resnet10(input_shape=BLOCK_SHAPE, num_classes=NUM_CLASSES, *, width=1.0,
                   dropout=0.2, weight_decay=None, name="resnet10"):
    """3D-ResNet-10 on image blocks; returns logits.

    Parameters
    ----------
    input_shape : tuple of 4 int
        ``(z, y, x, channels)``; default ``(32, 64, 64, 1)``. Spatial sizes may be None.
    num_classes : int
        Output logits (2: low / high tracing difficulty).
    width : float
        Filter multiplier (1: 64, 128, 256, 512); small values for tests and quick runs.
    dropout : float
        ``SpatialDropout3D`` rate before each stage (whole channels dropped, as PyTorch's
        ``Dropout3d``), in [0, 1); 0 adds no dropout layers.
    weight_decay : float, optional
        L2 factor on the convolution and dense kernels. The original's Adam weight decay is
        applied by the optimizer in :mod:`keras_medseg.neurotrace.training` instead, so the
        default is None.
    name : str

    Returns
    -------
    keras.Model
        ``(batch, *input_shape)`` float32 -> ``(batch, num_classes)`` logits. Layers:
        ``stem_conv/bn/relu``, ``stem_pool``, ``stage{i}_dropout``, ``stage{i}_block1_*``,
        ``pool``, ``logits``.

    Raises
    ------
    ValueError
        For an input shape that is not 4-D, a non-positive width or class count, or a
        dropout rate outside [0, 1).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (z, y, x, channels); got {input_shape!r}")
    num_classes = _check_units(num_classes, "num_classes")
    width = _check_width(width)
    dropout = _check_rate(dropout, "dropout")
    reg = None if weight_decay is None else keras.regularizers.L2(weight_decay)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv3D(_scaled(64, width), 3, strides=(1, 2, 2), padding="same",
                            use_bias=False, kernel_initializer="he_normal",
                            kernel_regularizer=reg, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn", **_BN)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling3D(3, strides=2, padding="same", name="stem_pool")(x)
    for i, (filters, strides, blocks) in enumerate(RESNET10_STAGES, start=1):
        if dropout > 0:
            x = keras.layers.SpatialDropout3D(dropout, name=f"stage{i}_dropout")(x)
        for b in range(1, blocks + 1):
            x = apply_basic_block(x, _scaled(filters, width), name=f"stage{i}_block{b}",
                                  strides=strides if b == 1 else 1, weight_decay=weight_decay)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_fcn(num_features=NUM_FEATURES, num_classes=NUM_CLASSES, *, units=(100, 50),
              name="fcn"):
    """The L-Measure FCN: ``num_features -> 100 relu -> 50 relu -> num_classes`` logits.

    Parameters
    ----------
    num_features : int
        Features per block (32 normalised L-Measure features).
    num_classes : int
    units : sequence of int
        Hidden widths.
    name : str

    Returns
    -------
    keras.Model ``(batch, num_features) -> (batch, num_classes)`` logits; layers
    ``dense{i}`` and ``logits``.
    """
    num_features = _check_units(num_features, "num_features")
    num_classes = _check_units(num_classes, "num_classes")
    units = [_check_units(u, "units") for u in units]
    inputs = keras.Input((num_features,), name="features")
    x = inputs
    for i, u in enumerate(units, start=1):
        x = keras.layers.Dense(u, activation="relu", name=f"dense{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_sequence_head(sequence_length=SEQUENCE_LENGTH, num_classes=NUM_CLASSES, *, units=10,
                        num_layers=2, name="sequence_head"):
    """LSTM sequence head: ``(length, C)`` probabilities -> stacked LSTM -> last step -> Dense.

    Parameters
    ----------
    sequence_length : int
        5 in the original (4 previous blocks, then the block to classify).
    num_classes : int
        Size of each sequence element and of the output.
    units : int
        LSTM hidden size (10).
    num_layers : int
        Stacked LSTM layers (2).
    name : str

    Returns
    -------
    keras.Model ``(batch, sequence_length, num_classes) -> (batch, num_classes)`` logits;
    layers ``lstm{i}`` and ``logits``.
    """
    sequence_length = _check_units(sequence_length, "sequence_length")
    num_classes = _check_units(num_classes, "num_classes")
    units = _check_units(units, "units")
    num_layers = _check_units(num_layers, "num_layers")
    inputs = keras.Input((sequence_length, num_classes), name="sequence")
    x = inputs
    for i in range(1, num_layers + 1):
        x = keras.layers.LSTM(units, return_sequences=i < num_layers, name=f"lstm{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_fusion(num_classes=NUM_CLASSES, *, units=30, name="fusion"):
    """MF: concatenate the two sequence heads' outputs -> Dense(30, relu) -> Dense(C).

    Returns
    -------
    keras.Model
        Inputs ``[image_head (batch, C), feature_head (batch, C)]`` (the heads' logits),
        output ``(batch, C)`` logits; layers ``concat``, ``dense1``, ``logits``.
    """
    num_classes = _check_units(num_classes, "num_classes")
    units = _check_units(units, "units")
    a = keras.Input((num_classes,), name="image_head")
    b = keras.Input((num_classes,), name="feature_head")
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.Dense(units, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model([a, b], outputs, name=name)


def freeze(model, *, name=None):
    """Wrap ``model`` so that it is frozen and always runs in inference mode.

    Returns an :class:`keras_medseg.training.InferenceMode` layer with ``trainable=False``:
    BatchNormalization normalises with its moving statistics and never updates them, dropout
    is off, and no weight is trained, whatever ``training`` flag the caller passes. The
    layer is named ``name`` (default ``"<model name>_frozen"``).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model; got {type(model).__name__}")
    layer = InferenceMode(model, name=name or f"{model.name}_frozen")
    layer.trainable = False
    return layer


def build_3dssm(resnet, fcn, image_head, feature_head, fusion, *,
                sequence_length=SEQUENCE_LENGTH, train_fusion=False, name="ssm3d"):
    """Assemble trained networks into the 3D-SSM (predicted-history protocol).

    Inputs are the sequences of ``sequence_length`` blocks (oldest first, the block to
    classify last; see :func:`keras_medseg.neurotrace.sequences.block_chains`). Each base
    network (frozen, inference mode) scores every block of its sequence, the softmax
    probabilities form the head's input sequence, and the fusion combines the two heads::

        images (b, L, 32, 64, 64, 1) -> ResNet per block -> softmax -> image_head  \\
                                                                                  fusion
        features (b, L, 32)          -> FCN per block    -> softmax -> feature_head /

    The base networks and the heads are frozen and in inference mode (:func:`freeze`);
    so is the fusion unless ``train_fusion``, in which case fitting the returned model
    trains the fusion alone (the original's last stage, run end to end).

    Parameters
    ----------
    resnet, fcn, image_head, feature_head, fusion : keras.Model
        As built by :func:`build_resnet10`, :func:`build_fcn`, :func:`build_sequence_head`
        (twice) and :func:`build_fusion`.
    sequence_length : int
    train_fusion : bool
        Leave the fusion trainable (it then also follows the ``training`` flag).
    name : str

    Returns
    -------
    keras.Model
        Inputs ``{"images": (b, L, *resnet input), "features": (b, L, n_features)}``,
        output ``(b, C)`` fusion logits.
    """
    sequence_length = _check_units(sequence_length, "sequence_length")
    for model, label in ((resnet, "resnet"), (fcn, "fcn"), (image_head, "image_head"),
                         (feature_head, "feature_head"), (fusion, "fusion")):
        if not isinstance(model, keras.Model):
            raise ValueError(f"{label} must be a keras.Model; got {type(model).__name__}")
    images = keras.Input((sequence_length,) + tuple(resnet.input_shape[1:]), name="images")
    features = keras.Input((sequence_length,) + tuple(fcn.input_shape[1:]), name="features")
    p_img = keras.layers.TimeDistributed(freeze(resnet, name="resnet_frozen"),
                                         name="resnet_per_block")(images)
    p_img = keras.layers.Softmax(name="resnet_probabilities")(p_img)
    p_feat = keras.layers.TimeDistributed(freeze(fcn, name="fcn_frozen"),
                                          name="fcn_per_block")(features)
    p_feat = keras.layers.Softmax(name="fcn_probabilities")(p_feat)
    h_img = freeze(image_head, name="image_head_frozen")(p_img)
    h_feat = freeze(feature_head, name="feature_head_frozen")(p_feat)
    top = fusion if train_fusion else freeze(fusion, name="fusion_frozen")
    outputs = top([h_img, h_feat])
    return keras.Model({"images": images, "features": features}, outputs, name=name)
