"""Shared building blocks (2D and 3D, channels-last) for the task models.

Blocks are functions ``apply_<block>(x, filters, *, name)`` in the keras.applications style:
they take a Keras tensor, add layers named ``f"{name}_{op}"`` and return the output tensor, so
features can be pulled out of a model by stable layer names. The spatial rank (2D or 3D) is
read from the input tensor. Batch normalisation defaults to Keras' own (momentum 0.99,
epsilon 1e-3); the PyTorch ports pass ``bn_momentum=0.9, bn_epsilon=1e-5``, which is
PyTorch's default.

The few operations Keras has no layer for are small registered layers
(:class:`SqueezeExcite`, :class:`BroadcastLike`, :class:`GroupedConvTranspose`) written with
``keras.ops`` only, so they run under the TensorFlow, JAX and torch backends and round-trip
through the ``.keras`` format.

References
----------
Hu, Shen, Sun. Squeeze-and-Excitation Networks. CVPR 2018.
Chen et al. Rethinking Atrous Convolution for Semantic Image Segmentation (ASPP). 2017.
Jha et al. DoubleU-Net. CBMS 2020 (conv_block with squeeze-excite, ASPP).
Kaul, Manandhar, Pears. FocusNet. ISBI 2019 (residual blocks, gated squeeze-excite).
"""
from __future__ import annotations

import numbers

import keras
from keras import ops

__all__ = [
    "SqueezeExcite",
    "BroadcastLike",
    "GroupedConvTranspose",
    "apply_conv_bn_relu",
    "apply_conv_block",
    "apply_squeeze_excite",
    "apply_aspp",
    "apply_residual_block",
    "apply_residual_block_3d",
    "apply_preact_residual_unit",
    "apply_upsample",
]

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_CONV_T = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}
_GAP = {2: keras.layers.GlobalAveragePooling2D, 3: keras.layers.GlobalAveragePooling3D}


def _spatial_rank(x, allowed=(2, 3)):
    rank = len(x.shape) - 2
    if rank not in allowed:
        raise ValueError(f"x must be a channels-last batch of {' or '.join(map(str, allowed))}D "
                         f"feature maps (rank {' or '.join(str(a + 2) for a in allowed)}); "
                         f"got shape {tuple(x.shape)}")
    return rank


def _check_filters(filters, name="filters"):
    if not isinstance(filters, numbers.Integral) or isinstance(filters, bool) or filters < 1:
        raise ValueError(f"{name} must be a positive integer; got {filters!r}")
    return int(filters)


def _batch_norm(name, momentum, epsilon):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)


# --------------------------------------------------------------------------------------------
# Custom layers
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_medseg")
class SqueezeExcite(keras.layers.Layer):
    """Channel squeeze-and-excitation for 1D, 2D or 3D channels-last feature maps.

    ``y = x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)`` where the mean runs over all spatial
    axes, ``W1`` maps C -> C // ratio and ``W2`` maps back to C. One layer instance may be
    called several times to share its weights (FocusNet applies the same block twice around
    its gate).

    Parameters
    ----------
    ratio : int
        Channel reduction ratio; ``C // ratio`` must be at least 1 (checked when built).
    use_bias : bool
        Whether both dense projections have a bias (DoubleU-Net: no; FocusNet: yes).
    kernel_initializer : str or keras.initializers.Initializer
        Initialiser of both projection matrices.

    Input shape: ``(batch, *spatial, C)``; output shape: the same.
    """

    def __init__(self, ratio=16, use_bias=False, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(ratio, numbers.Integral) or isinstance(ratio, bool) or ratio < 1:
            raise ValueError(f"ratio must be a positive integer; got {ratio!r}")
        self.ratio = int(ratio)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("SqueezeExcite needs a known number of channels; got None")
        reduced = channels // self.ratio
        if reduced < 1:
            raise ValueError(f"ratio={self.ratio} is larger than the number of channels "
                             f"({channels}); the bottleneck would have 0 units")
        self.reduce_kernel = self.add_weight(name="reduce_kernel", shape=(channels, reduced),
                                             initializer=self.kernel_initializer)
        self.expand_kernel = self.add_weight(name="expand_kernel", shape=(reduced, channels),
                                             initializer=self.kernel_initializer)
        if self.use_bias:
            self.reduce_bias = self.add_weight(name="reduce_bias", shape=(reduced,),
                                               initializer="zeros")
            self.expand_bias = self.add_weight(name="expand_bias", shape=(channels,),
                                               initializer="zeros")

    def call(self, inputs):
        axes = tuple(range(1, len(inputs.shape) - 1))
        s = ops.mean(inputs, axis=axes, keepdims=True)
        s = ops.matmul(s, self.reduce_kernel)
        if self.use_bias:
            s = s + self.reduce_bias
        s = ops.relu(s)
        s = ops.matmul(s, self.expand_kernel)
        if self.use_bias:
            s = s + self.expand_bias
        return inputs * ops.sigmoid(s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(ratio=self.ratio, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="keras_medseg")
class BroadcastLike(keras.layers.Layer):
    """Broadcast a globally pooled map back to the spatial size of a reference tensor.

    Called on ``[pooled, reference]`` where ``pooled`` has size 1 on every spatial axis
    (``(batch, 1, ..., 1, C)``) and ``reference`` is ``(batch, *spatial, C_ref)``; returns
    ``(batch, *spatial, C)``. This is the "upsample back" of an ASPP image-pooling branch:
    bilinear upsampling of a 1x1 map is a constant map, so broadcasting is exact, needs no
    interpolation op (it works for 2D and 3D alike) and works with spatial sizes only known
    at run time.
    """

    def call(self, inputs):
        pooled, reference = inputs
        return pooled + ops.zeros_like(reference[..., :1], dtype=pooled.dtype)

    def compute_output_shape(self, input_shape):
        pooled_shape, reference_shape = input_shape
        return tuple(reference_shape[:-1]) + (pooled_shape[-1],)


@keras.saving.register_keras_serializable(package="keras_medseg")
class GroupedConvTranspose(keras.layers.Layer):
    """Transposed convolution with channel groups (``padding="same"``), 2D or 3D.

    Keras' ``Conv{2,3}DTranspose`` has no ``groups`` argument; PyTorch's ``ConvTranspose3d``
    does and FocusNet uses it. The input channels are split into ``groups`` equal parts, each
    part is transposed-convolved to ``filters // groups`` outputs with its own kernel, and
    the results are concatenated (PyTorch's channel order). With ``groups=1`` it equals
    ``Conv{2,3}DTranspose(padding="same")``. Spatial output size is ``input * strides``.

    Parameters
    ----------
    filters : int
        Output channels; must be divisible by ``groups``.
    kernel_size, strides : int or tuple of int
        Per spatial axis (an int applies to every axis).
    groups : int
        Number of groups; the input channels must be divisible by it (checked when built).
    use_bias : bool
    kernel_initializer : str or keras.initializers.Initializer
    """

    def __init__(self, filters, kernel_size, strides=2, groups=1, use_bias=False,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.groups = _check_filters(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(f"filters ({filters}) must be divisible by groups ({groups})")
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _per_axis(self, value, rank, what):
        if isinstance(value, numbers.Integral):
            return (int(value),) * rank
        value = tuple(int(v) for v in value)
        if len(value) != rank:
            raise ValueError(f"{what} must have {rank} entries; got {value}")
        return value

    def build(self, input_shape):
        rank = len(input_shape) - 2
        if rank not in (2, 3):
            raise ValueError(f"GroupedConvTranspose takes 2D or 3D inputs; got {input_shape}")
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"input channels ({channels}) must be divisible by groups "
                             f"({self.groups})")
        self._rank = rank
        self._kernel = self._per_axis(self.kernel_size, rank, "kernel_size")
        self._strides = self._per_axis(self.strides, rank, "strides")
        # keras.ops.conv_transpose kernels are (*kernel, out_channels, in_channels).
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.groups,) + self._kernel
            + (self.filters // self.groups, channels // self.groups),
            initializer=self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs):
        step = inputs.shape[-1] // self.groups
        outputs = []
        for g in range(self.groups):
            part = inputs[..., g * step:(g + 1) * step]
            outputs.append(ops.conv_transpose(part, self.kernel[g], strides=self._strides,
                                              padding="same", data_format="channels_last"))
        y = outputs[0] if self.groups == 1 else ops.concatenate(outputs, axis=-1)
        if self.use_bias:
            y = y + self.bias
        return y

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) - 2
        strides = self._per_axis(self.strides, rank, "strides")
        spatial = tuple(None if s is None else s * k for s, k in zip(input_shape[1:-1], strides))
        return (input_shape[0],) + spatial + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      groups=self.groups, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


# --------------------------------------------------------------------------------------------
# Block functions
# --------------------------------------------------------------------------------------------
def apply_conv_bn_relu(x, filters, *, name, kernel_size=3, strides=1, dilation_rate=1,
                       use_bias=False, kernel_initializer="he_normal", kernel_regularizer=None,
                       bn_momentum=0.99, bn_epsilon=1e-3):
    """Conv (same padding) -> BatchNorm -> ReLU, 2D or 3D.

    Layers: ``{name}_conv``, ``{name}_bn``, ``{name}_relu``.

    Parameters
    ----------
    x : keras tensor, ``(batch, *spatial, C)`` with 2 or 3 spatial axes.
    filters : int
        Output channels.
    name : str
        Prefix of the layer names.
    kernel_size, strides, dilation_rate : int or tuple
        Passed to the Keras convolution.
    use_bias : bool
        Bias of the convolution (redundant before BatchNorm, hence off by default).

    Returns
    -------
    keras tensor ``(batch, *spatial / strides, filters)``.
    """
    rank = _spatial_rank(x)
    filters = _check_filters(filters)
    x = _CONV[rank](filters, kernel_size, strides=strides, padding="same",
                    dilation_rate=dilation_rate, use_bias=use_bias,
                    kernel_initializer=kernel_initializer,
                    kernel_regularizer=kernel_regularizer, name=f"{name}_conv")(x)
    x = _batch_norm(f"{name}_bn", bn_momentum, bn_epsilon)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_squeeze_excite(x, *, name, ratio=16, use_bias=False):
    """Squeeze-and-excitation (GAP -> Dense(C/ratio, relu) -> Dense(C, sigmoid) -> multiply).

    Adds one :class:`SqueezeExcite` layer named ``name`` (the block is a single layer so that
    model code can call it twice with shared weights, as FocusNet does).

    Parameters
    ----------
    x : keras tensor ``(batch, *spatial, C)``, 1, 2 or 3 spatial axes.
    ratio : int
        Reduction ratio (DoubleU-Net 8, FocusNet 16); ``C // ratio >= 1``.
    use_bias : bool
        Bias in the two projections (DoubleU-Net: no; FocusNet: yes).

    Returns
    -------
    keras tensor, same shape as ``x``.
    """
    _spatial_rank(x, allowed=(1, 2, 3))
    return SqueezeExcite(ratio=ratio, use_bias=use_bias, name=name)(x)


def apply_conv_block(x, filters, *, name, se_ratio=8, bn_momentum=0.99, bn_epsilon=1e-3):
    """DoubleU-Net ``conv_block``: 2 x [Conv3x3 -> BN -> ReLU] then squeeze-excite.

    Layers: ``{name}_1_conv/bn/relu``, ``{name}_2_conv/bn/relu``, ``{name}_se``.
    ``se_ratio=None`` leaves out the squeeze-excite.
    """
    for i in (1, 2):
        x = apply_conv_bn_relu(x, filters, name=f"{name}_{i}", bn_momentum=bn_momentum,
                               bn_epsilon=bn_epsilon)
    if se_ratio is not None:
        x = apply_squeeze_excite(x, ratio=se_ratio, name=f"{name}_se")
    return x


def apply_aspp(x, filters, *, name, rates=(6, 12, 18), bn_momentum=0.99, bn_epsilon=1e-3):
    """Atrous spatial pyramid pooling, 2D or 3D (DoubleU-Net / DeepLabV3 layout).

    Branches, concatenated in this order: image pooling (global average -> Conv1x1 with bias
    -> BN -> ReLU -> broadcast back to the feature size, :class:`BroadcastLike`), Conv1x1,
    and one dilated Conv3x3 per rate (no bias, BN, ReLU); then Conv1x1 (no bias) -> BN -> ReLU.

    Layers: ``{name}_pool``, ``{name}_pool_conv/bn/relu``, ``{name}_pool_broadcast``,
    ``{name}_1x1_conv/bn/relu``, ``{name}_rate{r}_conv/bn/relu``, ``{name}_concat``,
    ``{name}_project_conv/bn/relu``.

    Parameters
    ----------
    x : keras tensor ``(batch, *spatial, C)``; spatial sizes may be None.
    filters : int
        Channels of every branch and of the output.
    rates : sequence of positive int
        Dilation rates of the 3x3 branches.

    Returns
    -------
    keras tensor ``(batch, *spatial, filters)``.
    """
    rank = _spatial_rank(x)
    filters = _check_filters(filters)
    rates = tuple(rates) if hasattr(rates, "__iter__") else (rates,)
    if not rates or any(not isinstance(r, numbers.Integral) or r < 1 for r in rates):
        raise ValueError(f"rates must be a non-empty sequence of positive integers; got {rates}")
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    pooled = _GAP[rank](keepdims=True, name=f"{name}_pool")(x)
    pooled = apply_conv_bn_relu(pooled, filters, kernel_size=1, use_bias=True,
                                name=f"{name}_pool", **bn)
    branches = [BroadcastLike(name=f"{name}_pool_broadcast")([pooled, x]),
                apply_conv_bn_relu(x, filters, kernel_size=1, name=f"{name}_1x1", **bn)]
    for r in rates:
        branches.append(apply_conv_bn_relu(x, filters, kernel_size=3, dilation_rate=r,
                                           name=f"{name}_rate{r}", **bn))
    y = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")(branches)
    return apply_conv_bn_relu(y, filters, kernel_size=1, name=f"{name}_project", **bn)


def apply_residual_block(x, filters, *, name, strides=1, kernel_initializer="he_normal",
                         bn_momentum=0.99, bn_epsilon=1e-3):
    """FocusNet residual block (RB), 2D or 3D.

    Main path: Conv3 (``strides``, no bias) -> BN -> ReLU -> Conv3 (stride 1, with bias);
    shortcut: Conv1 (same ``strides``, no bias) -> BN; output = sum, with no activation after
    it (as in I-seg_Focus ``_residual_block``).

    Layers: ``{name}_conv1``, ``{name}_bn``, ``{name}_relu``, ``{name}_conv2``,
    ``{name}_shortcut_conv``, ``{name}_shortcut_bn``, ``{name}_add``.

    Returns
    -------
    keras tensor ``(batch, *ceil(spatial / strides), filters)``.
    """
    rank = _spatial_rank(x)
    filters = _check_filters(filters)
    conv = _CONV[rank]
    shortcut = x
    y = conv(filters, 3, strides=strides, padding="same", use_bias=False,
             kernel_initializer=kernel_initializer, name=f"{name}_conv1")(x)
    y = _batch_norm(f"{name}_bn", bn_momentum, bn_epsilon)(y)
    y = keras.layers.ReLU(name=f"{name}_relu")(y)
    y = conv(filters, 3, padding="same", use_bias=True, kernel_initializer=kernel_initializer,
             name=f"{name}_conv2")(y)
    shortcut = conv(filters, 1, strides=strides, padding="same", use_bias=False,
                    kernel_initializer=kernel_initializer, name=f"{name}_shortcut_conv")(shortcut)
    shortcut = _batch_norm(f"{name}_shortcut_bn", bn_momentum, bn_epsilon)(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def apply_residual_block_3d(x, filters, *, name, strides=1, **kwargs):
    """:func:`apply_residual_block` for 3D inputs only (raises ValueError otherwise)."""
    _spatial_rank(x, allowed=(3,))
    return apply_residual_block(x, filters, name=name, strides=strides, **kwargs)


def apply_preact_residual_unit(x, *, name, kernel_initializer="he_normal",
                               kernel_regularizer=None, bn_momentum=0.99, bn_epsilon=1e-3):
    """Pre-activation residual unit (He et al. 2016; Dou et al. 2017 stage 2), 2D or 3D.

    ``x + Conv3(ReLU(BN(Conv3(ReLU(BN(x))))))``, both convolutions with ``C`` filters, same
    padding and a bias. Layers: ``{name}_1_bn/relu/conv``, ``{name}_2_bn/relu/conv``,
    ``{name}_add``.
    """
    rank = _spatial_rank(x)
    channels = x.shape[-1]
    y = x
    for i in (1, 2):
        y = _batch_norm(f"{name}_{i}_bn", bn_momentum, bn_epsilon)(y)
        y = keras.layers.ReLU(name=f"{name}_{i}_relu")(y)
        y = _CONV[rank](channels, 3, padding="same", kernel_initializer=kernel_initializer,
                        kernel_regularizer=kernel_regularizer, name=f"{name}_{i}_conv")(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_upsample(x, filters=None, *, name, mode="transpose", kernel_size=4, strides=2,
                   groups=1, use_bias=False, kernel_initializer="he_normal"):
    """Upsample by ``strides``, 2D or 3D.

    ``mode="transpose"``: transposed convolution to ``filters`` channels (same padding,
    output ``spatial * strides``; :class:`GroupedConvTranspose` when ``groups > 1``), one layer
    ``{name}_convt``. ``mode="bilinear"`` / ``"nearest"``: ``UpSampling{2,3}D`` (3D supports
    nearest only, so ``"bilinear"`` on 3D inputs raises), layer ``{name}_upsample``;
    ``filters`` must then be None.
    """
    rank = _spatial_rank(x)
    if mode == "transpose":
        filters = _check_filters(filters)
        if groups == 1:
            return _CONV_T[rank](filters, kernel_size, strides=strides, padding="same",
                                 use_bias=use_bias, kernel_initializer=kernel_initializer,
                                 name=f"{name}_convt")(x)
        return GroupedConvTranspose(filters, kernel_size, strides=strides, groups=groups,
                                    use_bias=use_bias, kernel_initializer=kernel_initializer,
                                    name=f"{name}_convt")(x)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be one of ['bilinear', 'nearest', 'transpose']; got {mode!r}")
    if filters is not None:
        raise ValueError(f"filters must be None for mode={mode!r}; got {filters!r}")
    if rank == 2:
        return keras.layers.UpSampling2D(strides, interpolation=mode, name=f"{name}_upsample")(x)
    if mode == "bilinear":
        raise ValueError("mode='bilinear' is 2D only; use 'nearest' or 'transpose' for 3D")
    return keras.layers.UpSampling3D(strides, name=f"{name}_upsample")(x)
