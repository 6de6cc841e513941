"""Shared Keras building blocks (2D/3D, channels-last, ``keras.ops`` only).

Block functions follow ``apply_<block>(x, filters, *, name)`` and name their layers
``f"{name}_{op}"``; the custom layers are registered under the ``keras_medseg`` package so
models that use them load from ``.keras`` files.
"""
from keras_medseg.layers.blocks import (
    BroadcastLike,
    GroupedConvTranspose,
    SqueezeExcite,
    apply_aspp,
    apply_conv_block,
    apply_conv_bn_relu,
    apply_preact_residual_unit,
    apply_residual_block,
    apply_residual_block_3d,
    apply_squeeze_excite,
    apply_upsample,
)

__all__ = [
    "BroadcastLike",
    "GroupedConvTranspose",
    "SqueezeExcite",
    "apply_aspp",
    "apply_conv_block",
    "apply_conv_bn_relu",
    "apply_preact_residual_unit",
    "apply_residual_block",
    "apply_residual_block_3d",
    "apply_squeeze_excite",
    "apply_upsample",
]
