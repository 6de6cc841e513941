"""Nerve segmentation networks of real-nerveseg2021, as keras.applications-style builders.

* :func:`build_unet_mobilenetv2`: the TF pix2pix-tutorial U-Net on a frozen MobileNetV2
  encoder (any registry backbone with ``"P1".."P5"`` feature layers can replace it).
* :func:`build_doubleunet`: DoubleU-Net (Jha et al. 2020), VGG19 encoder, two stacked U-Nets,
  output ``concat[output1, output2]``; :func:`doubleunet_preprocess` is its data-pipeline
  image normalisation.
* :func:`build_deeplabv3plus`: DeepLabV3+ (Chen et al. 2018) on Xception, MobileNetV2 or
  ResNet50 with output stride 16 or 8 (:func:`dilate_backbone`).

All builders validate their arguments before building anything and raise ``ValueError``
naming the argument. Encoders come from :mod:`keras_medseg.backbones`, so
``encoder_weights="imagenet"`` loads keras' ImageNet weights from the Keras cache and,
offline, fails with a ``FileNotFoundError`` that says where to put the file. Every model is
made of Keras layers and ``keras.ops`` only and round-trips through the ``.keras`` format.

Input scaling
-------------
The U-Net and DeepLabV3+ models take **0..255 RGB** images (uint8 or float) and carry the
backbone's ``preprocess_input`` as their first layer (``preprocess``,
:class:`keras_medseg.backbones.BackbonePreprocessing`): MobileNetV2 and Xception see
``[-1, 1]``, ResNet50 sees BGR minus the ImageNet mean. The nerve original fed MobileNetV2
``[0, 1]`` images, a listed defect. The DoubleU-Net model takes what
:func:`doubleunet_preprocess` returns (``[0, 1]``), as the original, whose VGG19 encoder was
trained end to end on that scale.

Output stride of DeepLabV3+
---------------------------
keras.applications builders have no ``output_stride`` option. :func:`dilate_backbone`
rebuilds a built backbone from its config with every downsampling beyond the requested stride
removed (``strides`` set to 1) and every later spatial convolution dilated by the factor
removed before it (2 for stride 32 -> 16; 2 and 4 for stride 8), then copies the weights over
unchanged, so ImageNet weights stay usable. Zero padding before a formerly strided ``valid``
convolution (MobileNetV2) becomes ``(r * left, r * (k - 1) - r * left)``. For ResNet50 and
MobileNetV2 the dilated network is then *exactly* the original one sampled more densely: for
input sides divisible by 32, its output at positions ``0, s, 2s, ...``
(``s = 32 / output_stride``) equals the original network's output (tested). Xception is only approximately so: its exit-flow max pooling
(3x3, stride 2, ``same``) becomes a stride-1 pooling whose window is centred one pixel
earlier than the strided window, and pooling has no dilation, so at output stride 8 the
windows after ``block4_pool`` / ``block13_pool`` cover half the original extent. Google's
DeepLab used its modified Xception-65, with strided separable convolutions instead of
pooling; keras.applications ships only Chollet's original Xception.

References
----------
Ronneberger, Fischer, Brox. U-Net. MICCAI 2015; TensorFlow "Image segmentation" tutorial
(pix2pix upsample blocks).
Jha, Riegler, Johansen, Halvorsen, Johansen. DoubleU-Net: A Deep Convolutional Neural
Network for Medical Image Segmentation. CBMS 2020.
Chen, Zhu, Papandreou, Schroff, Adam. Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation (DeepLabV3+). ECCV 2018.
"""
from __future__ import annotations

import copy
import math
import numbers
import os

import keras
import numpy as np
from keras import ops

from keras_medseg.backbones import (
    BackbonePreprocessing,
    build_backbone,
    build_feature_extractor,
    get_backbone_spec,
)
from keras_medseg.layers import apply_aspp, apply_conv_block, apply_conv_bn_relu, apply_upsample

__all__ = [
    "DEEPLAB_BACKBONES",
    "DOUBLEUNET_DECODER_FILTERS",
    "DOUBLEUNET_ENCODER2_FILTERS",
    "UNET_DECODER_FILTERS",
    "apply_pix2pix_upsample",
    "build_deeplabv3plus",
    "build_doubleunet",
    "build_unet_mobilenetv2",
    "dilate_backbone",
    "doubleunet_preprocess",
]

#: Filters of the pix2pix upsampling blocks, deepest first (one per skip "P4".."P1").
UNET_DECODER_FILTERS = (512, 256, 128, 64)
#: Skip levels of the U-Net, deepest first; "P5" is the bottleneck.
UNET_SKIP_LEVELS = ("P4", "P3", "P2", "P1")

#: VGG19 levels used by DoubleU-Net: skips block1_conv2 .. block4_conv4, bottleneck block5_conv4.
DOUBLEUNET_VGG_LEVELS = ("P0", "P1", "P2", "P3", "P4")
#: Encoder of network 2 (conv_block then 2x2 max pooling each).
DOUBLEUNET_ENCODER2_FILTERS = (32, 64, 128, 256)
#: Decoder filters of both networks, deepest first.
DOUBLEUNET_DECODER_FILTERS = (256, 128, 64, 32)
DOUBLEUNET_ASPP_FILTERS = 64
DOUBLEUNET_SE_RATIO = 8

#: Backbones of :func:`build_deeplabv3plus`: registry name -> (low-level, high-level) level.
DEEPLAB_BACKBONES = {"xception": ("P2", "P5"), "mobilenetv2": ("P2", "P5"),
                     "resnet50": ("P2", "P5")}
DEEPLAB_ASPP_FILTERS = 256
DEEPLAB_LOW_LEVEL_FILTERS = 48
DEEPLAB_DECODER_FILTERS = 256


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_input_shape(input_shape, *, divisor, what):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape!r}")
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                  and s > 0 for s in shape):
        raise ValueError(f"input_shape must be three positive ints (height, width, channels); "
                         f"got {input_shape!r}")
    if shape[0] % divisor or shape[1] % divisor:
        raise ValueError(f"input_shape height and width must be divisible by {divisor} "
                         f"({what}); got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _check_num_classes(num_classes):
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    return int(num_classes)


def _check_rate(value, *, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def _check_weights_type(weights, name="encoder_weights"):
    if weights is None or isinstance(weights, (str, os.PathLike)):
        return weights
    raise ValueError(f"{name} must be None, 'imagenet' or a weights file path; got {weights!r}")


# --------------------------------------------------------------------------------------------
# U-Net with a MobileNetV2 (or other registry) encoder
# --------------------------------------------------------------------------------------------
def apply_pix2pix_upsample(x, filters, *, name, dropout=0.0):
    """The pix2pix tutorial's ``upsample``: ConvTranspose 3x3 s2 -> BN -> ReLU (-> Dropout).

    The transposed convolution has no bias and an ``N(0, 0.02)`` kernel initialiser, as in
    ``tensorflow_examples.models.pix2pix.upsample``. Layers: ``{name}_convt``, ``{name}_bn``,
    ``{name}_relu`` and, when ``dropout > 0``, ``{name}_dropout``.

    Parameters
    ----------
    x : keras tensor ``(batch, h, w, C)``
    filters : int
    dropout : float
        Dropout rate after the ReLU (the nerve original: 0.2).

    Returns
    -------
    keras tensor ``(batch, 2h, 2w, filters)``.
    """
    x = apply_upsample(x, filters, name=name, mode="transpose", kernel_size=3, strides=2,
                       use_bias=False,
                       kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02))
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_unet_mobilenetv2(input_shape=(224, 224, 3), num_classes=2, *, encoder_weights=None,
                           freeze_encoder=True, dropout=0.2, encoder="mobilenetv2",
                           name="unet_mobilenetv2"):
    """U-Net with a pretrained encoder and the pix2pix decoder (nerve original).

    Encoder: the registry backbone ``encoder`` (default MobileNetV2) as a nested model named
    ``"encoder"`` with outputs ``{"P1": ..., "P5": ...}``; for MobileNetV2 at 224x224 these are
    ``block_1_expand_relu`` 112x112x96, ``block_3_expand_relu`` 56x56x144,
    ``block_6_expand_relu`` 28x28x192, ``block_13_expand_relu`` 14x14x576 and the bottleneck
    ``block_16_project`` 7x7x320. Decoder, from P5 up: for ``f`` in 512, 256, 128, 64:
    :func:`apply_pix2pix_upsample` (``decoder_up{i}``) -> Dropout(``dropout``) -> concatenate
    with the skip of the same size (``decoder_up{i}_concat``); then
    ``Conv2DTranspose(num_classes, 3, strides=2, padding="same")`` (``logits``).

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``, height and width divisible by 32.
    num_classes : int
        Output channels (logits); the original: 2 (background, nerve).
    encoder_weights : None, "imagenet" or path
        Passed to :func:`keras_medseg.backbones.build_backbone` (checked there before
        anything is built).
    freeze_encoder : bool
        Set the encoder's ``trainable`` to False (the original), which also runs its
        BatchNorm layers in inference mode.
    dropout : float in [0, 1)
        Dropout after each upsampling block (the original: 0.2).
    encoder : str
        Registry name of a backbone with feature levels ``"P1".."P5"`` at strides 2..32
        (e.g. ``"mobilenetv2"``, ``"resnet50"``, ``"densenet121"``, ``"vgg16"``,
        ``"efficientnetb0"``).

    Returns
    -------
    keras.Model
        Input ``(batch, *input_shape)``: 0..255 RGB, scaled inside the model by the
        encoder's preprocessing (layer ``preprocess``). Output ``(batch, height, width,
        num_classes)`` float logits; use ``SparseCategoricalCrossentropy(from_logits=True)``.

    Raises
    ------
    ValueError
        Malformed ``input_shape`` or sides not divisible by 32; ``num_classes < 1``;
        ``dropout`` outside [0, 1); unknown ``encoder`` or one without ``"P1".."P5"``, or
        whose feature maps are not exactly ``size / 2**k`` (valid-padding backbones such as
        Xception); bad ``encoder_weights`` (see :func:`build_backbone`).
    FileNotFoundError
        ``encoder_weights`` names a missing file, or ImageNet weights are neither cached nor
        downloadable.

    Examples
    --------
    >>> model = build_unet_mobilenetv2((64, 64, 3), 2)  # doctest: +SKIP
    >>> model.output.shape  # doctest: +SKIP
    (None, 64, 64, 2)
    """
    shape = _check_input_shape(input_shape, divisor=32, what="five stride-2 stages")
    num_classes = _check_num_classes(num_classes)
    dropout = _check_rate(dropout, name="dropout")
    _check_weights_type(encoder_weights)
    if not isinstance(encoder, str):
        raise ValueError(f"encoder must be a backbone registry name; got {encoder!r}")
    spec = get_backbone_spec(encoder)
    levels = ("P1", "P2", "P3", "P4", "P5")
    missing = [lv for lv in levels if lv not in spec.features]
    if missing:
        raise ValueError(f"encoder {encoder!r} defines no feature layers {missing}; choose a "
                         f"backbone with levels P1..P5")

    features = build_feature_extractor(spec.name, shape, weights=encoder_weights,
                                       levels=levels)
    for k, level in enumerate(levels, start=1):
        got = tuple(features.output[level].shape[1:3])
        want = (shape[0] // 2 ** k, shape[1] // 2 ** k)
        if got != want:
            raise ValueError(f"encoder {encoder!r} gives {level} feature maps of size {got} "
                             f"for input_shape {shape}, not {want}; the U-Net decoder needs "
                             f"feature maps of exactly size / 2**k")
    encoder_model = keras.Model(features.input, features.output, name="encoder")
    encoder_model.trainable = not freeze_encoder

    inputs = keras.Input(shape, name="image")
    x = BackbonePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    skips = encoder_model(x)
    x = skips["P5"]
    for i, (filters, level) in enumerate(zip(UNET_DECODER_FILTERS, UNET_SKIP_LEVELS), start=1):
        x = apply_pix2pix_upsample(x, filters, name=f"decoder_up{i}", dropout=dropout)
        x = keras.layers.Concatenate(name=f"decoder_up{i}_concat")([x, skips[level]])
    outputs = keras.layers.Conv2DTranspose(num_classes, 3, strides=2, padding="same",
                                           name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------------------------
# DoubleU-Net
# --------------------------------------------------------------------------------------------
def doubleunet_preprocess(image):
    """DoubleU-Net image normalisation: ``clip(image - median(image) + 127, 0, 255) / 255``.

    The median is taken over all pixels and channels of each image (``numpy.median`` of the
    whole array in the original, which read one image at a time). Inputs are not modified.

    Parameters
    ----------
    image : array or tensor, ``(H, W, C)`` or a batch ``(N, H, W, C)``, 0..255 values
        NumPy arrays (and lists) are computed with NumPy; anything else (a TensorFlow, JAX
        or torch tensor, e.g. inside ``tf.data``) with ``keras.ops``.

    Returns
    -------
    float32 array or tensor, same shape, values in [0, 1].

    Raises
    ------
    ValueError
        If ``image`` does not have 3 or 4 dimensions.

    Examples
    --------
    >>> doubleunet_preprocess(np.array([[[0], [100], [200]]], dtype=np.uint8)).ravel()
    array([0.10588235, 0.49803922, 0.8901961 ], dtype=float32)
    """
    is_numpy = isinstance(image, (np.ndarray, list, tuple, numbers.Number))
    x = np.asarray(image, dtype=np.float32) if is_numpy \
        else ops.cast(ops.convert_to_tensor(image), "float32")
    if len(x.shape) not in (3, 4):
        raise ValueError(f"image must have 3 (H, W, C) or 4 (N, H, W, C) dimensions; got "
                         f"shape {tuple(x.shape)}")
    axes = (0, 1, 2) if len(x.shape) == 3 else (1, 2, 3)
    if is_numpy:
        med = np.median(x, axis=axes, keepdims=True)
        return (np.clip(x - med + 127.0, 0.0, 255.0) / 255.0).astype(np.float32)
    med = ops.median(x, axis=axes, keepdims=True)
    return ops.clip(x - med + 127.0, 0.0, 255.0) / 255.0


def _doubleunet_output(x, *, name):
    x = keras.layers.Conv2D(1, 1, padding="same", name=f"{name}_conv")(x)
    return keras.layers.Activation("sigmoid", name=name)(x)


def build_doubleunet(input_shape=(224, 224, 3), *, encoder_weights=None, name="doubleunet"):
    """DoubleU-Net (Jha et al. 2020) as in the nerve original.

    Network 1: VGG19 (nested model ``"encoder1"``, trainable) with skips ``block1_conv2``,
    ``block2_conv2``, ``block3_conv4``, ``block4_conv4`` and bottleneck ``block5_conv4``
    (stride 16) -> ASPP(64) (``aspp1``) -> decoder (``decoder1_up{i}``): bilinear
    ``UpSampling2D(2)``, concatenate ``[up, skip]``, conv_block (2 x Conv3x3-BN-ReLU +
    squeeze-excite with ``f / 8`` units) for ``f`` in 256, 128, 64, 32 -> ``output1``
    (Conv1x1(1) + sigmoid). Network 2: ``input * output1`` (``masked_input``) -> conv_blocks
    32, 64, 128, 256 each followed by MaxPool 2x2 (``encoder2_block{i}``,
    ``encoder2_pool{i}``) -> ASPP(64) (``aspp2``) -> decoder concatenating
    ``[up, VGG skip, network-2 skip]`` with filters 256, 128, 64, 32 -> ``output2``. Output
    ``concat[output1, output2]`` (``outputs``); predictions use channel -1 at 0.5.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``, sides divisible by 16; the original: 224x224x3.
    encoder_weights : None, "imagenet" or path
        VGG19 weights, see :func:`keras_medseg.backbones.build_backbone`.

    Returns
    -------
    keras.Model
        Input ``(batch, *input_shape)`` float images as returned by
        :func:`doubleunet_preprocess` (``[0, 1]``); output ``(batch, height, width, 2)``
        probabilities (sigmoid) of network 1 and network 2; train against ``[y, y]`` with
        :func:`keras_medseg.metrics.bce_dice_loss`.

    Raises
    ------
    ValueError
        Malformed ``input_shape`` or sides not divisible by 16; bad ``encoder_weights``.
    FileNotFoundError
        As :func:`keras_medseg.backbones.build_backbone`.

    Notes
    -----
    The original's conv_block convolutions had a bias in front of BatchNorm; the shared
    :func:`keras_medseg.layers.apply_conv_block` leaves it out, as BatchNorm's offset makes
    it redundant (2,880 fewer parameters at any input size, 0.01 % of the model).
    """
    shape = _check_input_shape(input_shape, divisor=16, what="four 2x2 poolings")
    _check_weights_type(encoder_weights)
    vgg = build_feature_extractor("vgg19", shape, weights=encoder_weights,
                                  levels=DOUBLEUNET_VGG_LEVELS)
    vgg = keras.Model(vgg.input, vgg.output, name="encoder1")

    inputs = keras.Input(shape, name="image")
    features = vgg(inputs)
    skips1 = [features[level] for level in reversed(DOUBLEUNET_VGG_LEVELS[:-1])]

    x = apply_aspp(features[DOUBLEUNET_VGG_LEVELS[-1]], DOUBLEUNET_ASPP_FILTERS, name="aspp1")
    for i, (filters, skip) in enumerate(zip(DOUBLEUNET_DECODER_FILTERS, skips1), start=1):
        x = apply_upsample(x, name=f"decoder1_up{i}", mode="bilinear")
        x = keras.layers.Concatenate(name=f"decoder1_up{i}_concat")([x, skip])
        x = apply_conv_block(x, filters, name=f"decoder1_block{i}",
                             se_ratio=DOUBLEUNET_SE_RATIO)
    output1 = _doubleunet_output(x, name="output1")

    x = keras.layers.Multiply(name="masked_input")([inputs, output1])
    skips2 = []
    for i, filters in enumerate(DOUBLEUNET_ENCODER2_FILTERS, start=1):
        x = apply_conv_block(x, filters, name=f"encoder2_block{i}", se_ratio=DOUBLEUNET_SE_RATIO)
        skips2.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"encoder2_pool{i}")(x)
    x = apply_aspp(x, DOUBLEUNET_ASPP_FILTERS, name="aspp2")
    for i, (filters, skip1, skip2) in enumerate(
            zip(DOUBLEUNET_DECODER_FILTERS, skips1, reversed(skips2)), start=1):
        x = apply_upsample(x, name=f"decoder2_up{i}", mode="bilinear")
        x = keras.layers.Concatenate(name=f"decoder2_up{i}_concat")([x, skip1, skip2])
        x = apply_conv_block(x, filters, name=f"decoder2_block{i}",
                             se_ratio=DOUBLEUNET_SE_RATIO)
    output2 = _doubleunet_output(x, name="output2")
    outputs = keras.layers.Concatenate(name="outputs")([output1, output2])
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------------------------
# DeepLabV3+
# --------------------------------------------------------------------------------------------
_STRIDED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _inbound_layer_names(layer_config):
    names = []

    def walk(obj):
        if isinstance(obj, dict):
            history = obj.get("config", {}).get("keras_history") \
                if obj.get("class_name") == "__keras_tensor__" else None
            if history is not None:
                names.append(history[0])
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(layer_config.get("inbound_nodes", []))
    return names


def dilate_backbone(backbone, output_stride):
    """Rebuild a 2D backbone with output stride ``output_stride`` by atrous convolution.

    Every downsampling layer (convolution or pooling with stride 2) whose output would be
    coarser than ``output_stride`` gets stride 1, and every later convolution with a kernel
    larger than 1 gets the dilation rate ``original stride of its input / output_stride``;
    a ``ZeroPadding2D`` feeding a formerly strided ``valid`` convolution is widened to keep
    the map size. The weights are copied unchanged (see the module docstring for when the
    result is exactly the original network sampled densely).

    Parameters
    ----------
    backbone : keras.Model
        A functional 2D channels-last model with a static input size, e.g. from
        :func:`keras_medseg.backbones.build_backbone`. It is not modified.
    output_stride : int
        A power of two, at least 2.

    Returns
    -------
    keras.Model
        Same layer names, inputs and weights; feature maps beyond ``output_stride`` stay at
        ``input / output_stride``. ``backbone`` itself when no stride exceeds
        ``output_stride``.

    Raises
    ------
    ValueError
        ``output_stride`` not a power of two >= 2, or a backbone without a static input
        height, or one this rewrite cannot handle (a ``valid`` pooling or a ``valid``
        convolution without a ``ZeroPadding2D`` in front of it beyond ``output_stride``).
    """
    if not isinstance(output_stride, numbers.Integral) or isinstance(output_stride, bool) \
            or output_stride < 2 or output_stride & (output_stride - 1):
        raise ValueError(f"output_stride must be a power of two >= 2; got {output_stride!r}")
    height = backbone.input.shape[1]
    if height is None:
        raise ValueError("backbone must have a static input height to be dilated")

    def level(tensor):
        return 2 ** round(math.log2(height / tensor.shape[1]))

    config = copy.deepcopy(backbone.get_config())
    by_name = {entry["name"]: entry for entry in config["layers"]}
    for entry in config["layers"]:
        entry.pop("build_config", None)  # spatial sizes change; layers rebuild on call
    changed = False
    for layer in backbone.layers:
        if not isinstance(layer, _STRIDED):
            continue
        entry = by_name[layer.name]
        cfg = entry["config"]
        in_level = level(layer.input)
        rate = max(1, in_level // output_stride)
        stride = int(layer.strides[0]) if layer.strides is not None else 1
        removed = stride > 1 and in_level * stride > output_stride
        if removed:
            cfg["strides"] = (1, 1)
            changed = True
        if isinstance(layer, _CONVS):
            kernel = int(layer.kernel_size[0])
            if kernel == 1 or not (removed or rate > 1):
                continue
            cfg["dilation_rate"] = (rate, rate)
            if layer.padding == "valid":
                sources = _inbound_layer_names(entry)
                pad = by_name[sources[0]] if len(sources) == 1 else None
                if pad is None or pad["class_name"] != "ZeroPadding2D":
                    raise ValueError(f"cannot dilate layer {layer.name!r}: valid padding "
                                     f"without a ZeroPadding2D in front of it")
                (top, _), (left, _) = pad["config"]["padding"]
                total = rate * (kernel - 1)
                pad["config"]["padding"] = ((rate * top, total - rate * top),
                                            (rate * left, total - rate * left))
        elif removed and layer.padding == "valid":
            raise ValueError(f"cannot remove the stride of pooling layer {layer.name!r} with "
                             f"valid padding (the map would shrink)")
    if not changed:
        return backbone
    dilated = keras.Model.from_config(config)
    for layer in backbone.layers:
        weights = layer.get_weights()
        if weights:
            dilated.get_layer(layer.name).set_weights(weights)
    return dilated


def _resize(x, size, *, name):
    return keras.layers.Resizing(size[0], size[1], interpolation="bilinear", name=name)(x)


def build_deeplabv3plus(input_shape=(512, 512, 3), num_classes=3, *, backbone="xception",
                        output_stride=16, atrous_rates=(6, 12, 18), encoder_weights=None,
                        dropout=0.1, name=None):
    """DeepLabV3+ (Chen et al. 2018) on a keras.applications backbone.

    Layout: ``preprocess`` (the backbone's ``preprocess_input``) -> backbone dilated to
    ``output_stride`` (nested model ``"backbone"`` with outputs ``{"P2", "P5"}``, see
    :func:`dilate_backbone`) -> ASPP on P5 (``aspp``: image pooling, 1x1 and three atrous
    3x3 branches, 256 channels each, 1x1 projection to 256) -> Dropout(``dropout``) ->
    bilinear resize to the stride-4 low-level map (``decoder_aspp_resize``); low-level P2 ->
    Conv1x1(48)-BN-ReLU (``decoder_low_level``); concatenate (``decoder_concat``) -> 2 x
    Conv3x3(256)-BN-ReLU (``decoder_conv1``, ``decoder_conv2``) -> Conv1x1(num_classes)
    (``logits_conv``) -> bilinear resize to the input size (``logits``).

    ============  ====================  ===================  ====================
    backbone      low level (stride 4)  high level           original stride of P5
    ============  ====================  ===================  ====================
    xception      block3_sepconv2_bn    block14_sepconv2_act 32
    mobilenetv2   block_3_expand_relu   block_16_project     32
    resnet50      conv2_block3_out      conv5_block3_out     32
    ============  ====================  ===================  ====================

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``; sides divisible by ``output_stride``. The original
        trained on 513x513 crops (TF1 ``align_corners`` convention); use 512 here.
    num_classes : int
        Logit channels (the nerve original: 3).
    backbone : {"xception", "mobilenetv2", "resnet50"}
    output_stride : {16, 8}
    atrous_rates : sequence of 3 positive ints
        ASPP rates at output stride 16; doubled for output stride 8 (6, 12, 18 -> 12, 24, 36).
    encoder_weights : None, "imagenet" or path
        Backbone weights, see :func:`keras_medseg.backbones.build_backbone`.
    dropout : float in [0, 1)
        Dropout after the ASPP projection (DeepLab: keep probability 0.9).

    Returns
    -------
    keras.Model
        Input 0..255 RGB ``(batch, *input_shape)``; output ``(batch, height, width,
        num_classes)`` logits.

    Raises
    ------
    ValueError
        Unknown ``backbone``, ``output_stride`` not 8 or 16, malformed ``input_shape`` or
        sides not divisible by ``output_stride``, ``num_classes < 1``, ``atrous_rates`` not
        three positive ints, ``dropout`` outside [0, 1), bad ``encoder_weights``.
    FileNotFoundError
        As :func:`keras_medseg.backbones.build_backbone`.
    """
    if not isinstance(backbone, str) or backbone.lower() not in DEEPLAB_BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(DEEPLAB_BACKBONES)}; got "
                         f"{backbone!r}")
    backbone = backbone.lower()
    if not isinstance(output_stride, numbers.Integral) or isinstance(output_stride, bool) \
            or output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16; got {output_stride!r}")
    shape = _check_input_shape(input_shape, divisor=output_stride,
                               what=f"output_stride={output_stride}")
    num_classes = _check_num_classes(num_classes)
    try:
        rates = tuple(atrous_rates)
    except TypeError:
        rates = ()
    if len(rates) != 3 or not all(isinstance(r, numbers.Integral) and not isinstance(r, bool)
                                  and r > 0 for r in rates):
        raise ValueError(f"atrous_rates must be three positive ints; got {atrous_rates!r}")
    rates = tuple(int(r) * (16 // output_stride) for r in rates)
    dropout = _check_rate(dropout, name="dropout")
    _check_weights_type(encoder_weights)

    spec = get_backbone_spec(backbone)
    low_level, high_level = DEEPLAB_BACKBONES[backbone]
    base = dilate_backbone(build_backbone(backbone, shape, weights=encoder_weights),
                           output_stride)
    feature_maps = {level: base.get_layer(spec.features[level]).output
                    for level in (low_level, high_level)}
    encoder = keras.Model(base.input, feature_maps, name="backbone")

    inputs = keras.Input(shape, name="image")
    x = BackbonePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    features = encoder(x)
    low = features[low_level]
    x = apply_aspp(features[high_level], DEEPLAB_ASPP_FILTERS, rates=rates, name="aspp")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="aspp_dropout")(x)
    x = _resize(x, low.shape[1:3], name="decoder_aspp_resize")
    low = apply_conv_bn_relu(low, DEEPLAB_LOW_LEVEL_FILTERS, kernel_size=1,
                             name="decoder_low_level")
    x = keras.layers.Concatenate(name="decoder_concat")([x, low])
    for i in (1, 2):
        x = apply_conv_bn_relu(x, DEEPLAB_DECODER_FILTERS, name=f"decoder_conv{i}")
    x = keras.layers.Conv2D(num_classes, 1, name="logits_conv")(x)
    outputs = _resize(x, shape[:2], name="logits")
    return keras.Model(inputs, outputs,
                       name=name or f"deeplabv3plus_{backbone}_os{output_stride}")
