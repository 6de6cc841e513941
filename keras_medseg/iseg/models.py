"""FocusNet-style 3D segmentation networks of I-seg_Focus (iSeg-2017), channels-last Keras.

Two branches share the input (T1, T2):

* a *gate* branch, a plain residual U-Net whose decoder outputs (``gate1`` at full
  resolution, ``gate2`` at 1/2, ``gate3`` at 1/4 for the three-level model) are used only as
  attention gates;
* a *focus* branch: a 7^3 stem, then per level ``RB -> SE -> x sigmoid(gate) -> SE (same
  weights) -> RB stride 2``, a bottom ``RB -> SE -> RB stride 2``, and a decoder of grouped
  transposed convolutions and residual blocks with skip concatenations, ending in
  ``RB 96->16 -> RB 16->8 -> RB 8->4 -> Conv1^3 -> logits``.

``levels=2`` is the original's "model 1" (``src/model1.py``), ``levels=3`` its "model 2"
(``src/model2.py``): one more encoder level in the gate branch (RB 64->128 at 1/4, RB s2,
bottom RB 128->256, up to 1/4, concat, RB 256->128 = ``gate3``) and one more gated level in
the focus branch (RB 128->128 at 1/4 gated by ``gate3``), so the focus branch reaches 1/16.
Both are laid out from :data:`LEVEL_CHANNELS`.

Channel counts of every concatenation (skip first, then the upsampled tensor, as in the
original's ``torch.cat([skip, up], 1)``):

========================  ==============================  ==============================
concatenation             levels=2 (model 1)              levels=3 (model 2)
========================  ==============================  ==============================
``gate_up3_concat``       --                              128 + 128 = 256 (1/4)
``gate_up2_concat``       64 + 128 = 192 (1/2)            64 + 128 = 192 (1/2)
``gate_up1_concat``       24 + 64 = 88 (full)             24 + 64 = 88 (full)
``focus_up3_concat``      --                              128 + 128 = 256 (1/8)
``focus_up2_concat``      128 + 128 = 256 (1/4)           128 + 128 = 256 (1/4)
``focus_up1_concat``      64 + 64 = 128 (1/2)             64 + 64 = 128 (1/2)
``focus_up0_concat``      64 + 32 = 96 (full)             64 + 32 = 96 (full)
========================  ==============================  ==============================

Faithful details: residual blocks have no activation after the sum; the squeeze-excite
blocks (ratio 16, with biases) are applied twice with shared weights around each gate; the
transposed convolutions (kernel 4, stride 2, no bias) use 4 channel groups, as the original
passed ``groups=num_classes`` with ``num_classes=4`` (``up_groups`` changes it); the gate
branch's first convolution has no BN/ReLU; dropout (0.2) follows the gate branch's bottom
block; BatchNorm uses PyTorch's momentum (0.1, i.e. Keras 0.9) and epsilon 1e-5; convolution
kernels are He-normal (the original's ``kaiming_normal``), biases zero.

``width`` (not in the original) multiplies every channel count above except the residual head
(16 -> 8 -> 4, already narrow): ``width=0.25`` has about 1/16 of the parameters and
convolution work of the full model, which is what makes training on a CPU practical.
"""
from __future__ import annotations

import numbers

import keras

from keras_medseg.layers import (
    SqueezeExcite,
    apply_residual_block,
    apply_upsample,
)

__all__ = ["LEVEL_CHANNELS", "build_focusnet3d", "build_focusnet3d_model1",
           "build_focusnet3d_model2"]

#: Channels of the gate outputs and of the focus blocks per level (level 1 = full resolution).
LEVEL_CHANNELS = (64, 128, 128)
#: Gate branch: first convolution, first down-sampling block and the level-2 block.
GATE_STEM_FILTERS, GATE_DOWN1_FILTERS, GATE_LEVEL2_FILTERS = 24, 32, 64
#: Focus branch: 7^3 stem, last upsampling, and the residual head before the 1^3 classifier.
FOCUS_STEM_FILTERS, FOCUS_LAST_UP_FILTERS, HEAD_FILTERS = 64, 32, (16, 8, 4)
SE_RATIO = 16

_BN = dict(bn_momentum=0.9, bn_epsilon=1e-5)


def _rb(x, filters, name, strides=1):
    return apply_residual_block(x, filters, strides=strides, name=name, **_BN)


def _check_input_shape(input_shape, levels):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple (D, H, W, channels); got {input_shape!r}")
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (D, H, W, channels); got {input_shape!r}")
    factor = 2 ** (levels + 1)
    for size in shape[:3]:
        if size is not None and (not isinstance(size, numbers.Integral) or size < factor
                                 or size % factor):
            raise ValueError(f"input_shape spatial sizes must be None or positive multiples of "
                             f"{factor} for levels={levels}; got {input_shape!r}")
    if not isinstance(shape[3], numbers.Integral) or shape[3] < 1:
        raise ValueError(f"input_shape channels must be a positive integer; got {input_shape!r}")
    return shape


def _check_width(width, up_groups, levels):
    if not isinstance(width, numbers.Real) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width must be a positive number; got {width!r}")

    def scale(channels):
        return max(1, int(round(channels * width)))

    se_channels = min(scale(c) for c in LEVEL_CHANNELS)
    if se_channels < SE_RATIO:
        raise ValueError(f"width={width!r} leaves {se_channels} channels at the squeeze-excite "
                         f"blocks, fewer than their ratio {SE_RATIO}; use width >= "
                         f"{SE_RATIO / min(LEVEL_CHANNELS):g}")
    # inputs and outputs of the transposed convolutions: the level widths, the last
    # up-sampling's output and the gate branch's bottom block
    up_channels = {scale(c) for c in LEVEL_CHANNELS[:levels] + (FOCUS_LAST_UP_FILTERS,)}
    up_channels.add(scale(GATE_LEVEL2_FILTERS) * 2 ** (levels - 1))
    bad = sorted(c for c in up_channels if c % up_groups)
    if bad:
        raise ValueError(f"up_groups={up_groups!r} must divide the channels of every "
                         f"up-sampling, but width={width!r} gives {bad}; choose another "
                         f"width or up_groups")
    return scale


def build_focusnet3d(input_shape=(64, 64, 64, 2), num_classes=4, *, levels=2, dropout=0.2,
                     up_groups=4, width=1.0, name=None):
    """Build the I-seg_Focus FocusNet-style network ("model 1" or "model 2").

    Parameters
    ----------
    input_shape : tuple
        ``(D, H, W, channels)``, channels-last. Spatial sizes may be None (fully
        convolutional); given sizes must be multiples of 8 (``levels=2``) or 16
        (``levels=3``), the focus branch's total down-sampling.
    num_classes : int
        Output channels (logits; no softmax). The residual head before the classifier keeps
        the original's fixed widths 16 -> 8 -> 4.
    levels : {2, 3}
        2 = the original's model 1, 3 = model 2.
    dropout : float in [0, 1)
        Dropout rate after the gate branch's bottom block (the original ran with 0.2).
    up_groups : int
        Channel groups of the transposed convolutions (4 in the original); must divide every
        up-sampling's input and output channels (1, 2, 4, 8, 16 or 32 do at ``width=1``).
    width : float > 0
        Multiplier of every channel count except the residual head's (16 -> 8 -> 4): each
        becomes ``max(1, round(channels * width))``. 1 is the original; 0.25 has about 1/16
        of its parameters. The level channels (64, 128) must stay >= 16 (the squeeze-excite
        ratio), i.e. ``width >= 0.25``, and ``up_groups`` must divide every scaled
        up-sampling width.
    name : str, optional
        Model name; default ``"focusnet3d_model1"`` / ``"focusnet3d_model2"``.

    Returns
    -------
    keras.Model
        ``(batch, D, H, W, channels)`` float -> ``(batch, D, H, W, num_classes)`` logits.
        With the defaults (2 input channels, 4 classes, 4 groups) ``count_params()`` is
        8,976,708 for ``levels=2`` (8,971,220 trainable; the rest are BatchNorm moving
        statistics) and 17,883,468 for ``levels=3`` (17,874,396 trainable); the trainable
        counts equal the original PyTorch models' (modules their ``forward`` never calls
        left out), which the tests check against an independent count.

    Raises
    ------
    ValueError
        If ``levels`` is not 2 or 3, ``input_shape`` is not ``(D, H, W, channels)`` with
        spatial sizes None or multiples of ``2 ** (levels + 1)``, or ``num_classes``,
        ``dropout``, ``up_groups`` or ``width`` are out of range or incompatible.

    Examples
    --------
    >>> model = build_focusnet3d((None, None, None, 2), 4, levels=2)  # doctest: +SKIP
    >>> model.get_layer("gate2_add").output.shape  # doctest: +SKIP
    (None, None, None, None, 128)
    """
    if levels not in (2, 3) or isinstance(levels, bool):
        raise ValueError(f"levels must be 2 or 3; got {levels!r}")
    shape = _check_input_shape(input_shape, levels)
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    # Every up-sampling maps between channel counts that are multiples of 32.
    if (not isinstance(up_groups, numbers.Integral) or isinstance(up_groups, bool)
            or up_groups < 1 or 32 % up_groups):
        raise ValueError(f"up_groups must be a positive divisor of 32; got {up_groups!r}")
    scale = _check_width(width, up_groups, levels)
    level_channels = tuple(scale(c) for c in LEVEL_CHANNELS)
    if name is None:
        name = f"focusnet3d_model{levels - 1}"

    inputs = keras.Input(shape, name="image")

    def up(x, filters, block_name):
        return apply_upsample(x, filters, kernel_size=4, strides=2, groups=up_groups,
                              use_bias=False, name=block_name)

    # ---- gate branch: plain residual U-Net -------------------------------------------------
    skips = {1: keras.layers.Conv3D(scale(GATE_STEM_FILTERS), 3, padding="same",
                                    use_bias=False, kernel_initializer="he_normal",
                                    name="gate_stem_conv")(inputs)}
    x = _rb(skips[1], scale(GATE_DOWN1_FILTERS), "gate_down1", strides=2)
    x = _rb(x, scale(GATE_LEVEL2_FILTERS), "gate_level2")
    skips[2] = x
    filters = scale(GATE_LEVEL2_FILTERS)
    for level in range(3, levels + 1):
        x = _rb(x, filters, f"gate_down{level - 1}", strides=2)
        filters *= 2
        x = _rb(x, filters, f"gate_level{level}")
        skips[level] = x
    x = _rb(x, filters, f"gate_down{levels}", strides=2)
    x = _rb(x, 2 * filters, "gate_bottom")
    x = keras.layers.Dropout(dropout, name="gate_bottom_dropout")(x)
    gates = {}
    for level in range(levels, 0, -1):
        x = up(x, level_channels[level - 1], f"gate_up{level}")
        x = keras.layers.Concatenate(name=f"gate_up{level}_concat")([skips[level], x])
        x = _rb(x, level_channels[level - 1], f"gate{level}")
        gates[level] = x

    # ---- focus branch -----------------------------------------------------------------------
    x = keras.layers.Conv3D(scale(FOCUS_STEM_FILTERS), 7, padding="same",
                            kernel_initializer="he_normal", name="focus_stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="focus_stem_bn")(x)
    stem = keras.layers.ReLU(name="focus_stem_relu")(x)
    x = stem
    focus_skips = {}
    for level in range(1, levels + 1):
        channels = level_channels[level - 1]
        x = _rb(x, channels, f"focus{level}_block")
        se = SqueezeExcite(ratio=SE_RATIO, use_bias=True, name=f"focus{level}_se")
        gate = keras.layers.Activation("sigmoid", name=f"gate{level}_sigmoid")(gates[level])
        x = keras.layers.Multiply(name=f"focus{level}_gate_multiply")([se(x), gate])
        x = se(x)  # the same weights again, as in the original
        x = _rb(x, channels, f"focus{level}_down", strides=2)
        focus_skips[level] = x
    channels = level_channels[levels - 1]
    x = _rb(x, channels, "focus_bottom_block")
    x = SqueezeExcite(ratio=SE_RATIO, use_bias=True, name="focus_bottom_se")(x)
    x = _rb(x, channels, "focus_bottom_down", strides=2)
    for level in range(levels, 0, -1):
        channels = level_channels[level - 1]
        x = up(x, channels, f"focus_up{level}")
        x = keras.layers.Concatenate(name=f"focus_up{level}_concat")([focus_skips[level], x])
        x = _rb(x, channels, f"focus_decoder{level}")
    x = up(x, scale(FOCUS_LAST_UP_FILTERS), "focus_up0")
    x = keras.layers.Concatenate(name="focus_up0_concat")([stem, x])
    for i, filters in enumerate(HEAD_FILTERS, start=1):
        x = _rb(x, filters, f"head{i}")
    logits = keras.layers.Conv3D(num_classes, 1, kernel_initializer="he_normal",
                                 name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def build_focusnet3d_model1(input_shape=(64, 64, 64, 2), num_classes=4, **kwargs):
    """The original's two-level "model 1": ``build_focusnet3d(..., levels=2)``."""
    return build_focusnet3d(input_shape, num_classes, levels=2, **kwargs)


def build_focusnet3d_model2(input_shape=(64, 64, 64, 2), num_classes=4, **kwargs):
    """The original's three-level "model 2": ``build_focusnet3d(..., levels=3)``."""
    return build_focusnet3d(input_shape, num_classes, levels=3, **kwargs)
