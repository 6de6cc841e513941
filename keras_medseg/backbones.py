"""One registry of pretrained backbones: name -> keras.applications builder, preprocessing,
default input size, multi-scale feature layers and the fine-tune point.

Every task that uses an ImageNet backbone goes through :func:`build_backbone` (the headless
network, ``include_top=False``) or :func:`build_feature_extractor` (a dict of feature maps
keyed by stride level). Layer names, not indices, identify the fine-tune point and the
features, because layer counts shift between Keras versions.

Feature levels
--------------
``"Pk"`` is the last layer at stride ``2**k`` before the next downsampling (``"P0"``, stride 1,
exists only for VGG). Xception and Inception use valid padding, so their maps are a pixel or
two smaller than ``size / 2**k``.

Fine-tune points (nerve original, ``ORIGINALS.md`` section 1)
-------------------------------------------------------------
The original unfroze ``base_model.layers[fine_tune_at:]`` with an integer index counted in
TF 2.3. The registry stores the first trainable layer by name. For DenseNet and ResNetV2 the
Keras 3 index of that name equals the original index. MobileNetV2 is the exception: TF 2.3's
MobileNetV2 started with an extra ``ZeroPadding2D`` layer (``Conv1_pad``) that Keras 3
dropped, so every later index moved down by one; the original's index 150 meant
``block_16_project`` (Keras 3 index 149), which is what the registry stores (Keras 3 index
150 is ``block_16_project_BN``). EfficientNetB0 (brainview) trains its last 5 layers, i.e.
from ``block7a_project_conv`` on.

ImageNet weights and offline use
--------------------------------
``weights="imagenet"`` looks for the file keras itself would download, under
``$KERAS_HOME/models/`` (``~/.keras/models`` when ``KERAS_HOME`` is unset), and loads it
without any network access when it is there. When it is missing, the network is checked first
(a TCP connection to the weights host with a 3 s timeout) and nothing is attempted when the
environment variable ``KERAS_MEDSEG_OFFLINE`` is ``1``/``true``/``yes``: in both offline cases
a ``FileNotFoundError`` names the exact file and folder to place it in, and the URL to fetch
it from on a connected machine.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import numbers
import os
import socket
import types
from pathlib import Path
from typing import Callable, Mapping

import keras
from keras import ops

from keras_medseg._checks import check_choice

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "BackbonePreprocessing",
    "build_backbone",
    "build_feature_extractor",
    "get_backbone_spec",
    "imagenet_weights_location",
    "list_backbones",
    "resolve_layer",
]

OFFLINE_ENV = "KERAS_MEDSEG_OFFLINE"
_WEIGHTS_HOST = ("storage.googleapis.com", 443)
_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"

PREPROCESSING_MODES = ("tf", "torch", "caffe", "none")


# --------------------------------------------------------------------------------------------
# ImageNet weight file names: derived from keras' own constants where keras exposes them.
# --------------------------------------------------------------------------------------------
def _keras_constant(module, attr, fallback):
    """``keras.src.applications.<module>.<attr>`` when present, else ``fallback``."""
    try:
        mod = importlib.import_module(f"keras.src.applications.{module}")
    except ImportError:  # pragma: no cover - depends on the keras layout
        return fallback
    return getattr(mod, attr, fallback)


def _notop(folder, stem):
    return f"{_GCS}{folder}/{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _url_constant(module, attr, fallback):
    def location(rows, kwargs):
        url = _keras_constant(module, attr, fallback)
        return url.rsplit("/", 1)[-1], url
    return location


def _resnet_location(weights_name):
    def location(rows, kwargs):
        base = _keras_constant("resnet", "BASE_WEIGHTS_PATH", _GCS + "resnet/")
        file_name = f"{weights_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return file_name, base + file_name
    return location


def _efficientnet_location(model_name):
    def location(rows, kwargs):
        base = _keras_constant("efficientnet", "BASE_WEIGHTS_PATH",
                               "https://storage.googleapis.com/keras-applications/")
        file_name = f"{model_name}_notop.h5"
        return file_name, base + file_name
    return location


def _mobilenet_rows(rows):
    # keras falls back to the 224 weights for any other (or non-square) size
    return rows if rows in (128, 160, 192, 224) else 224


def _mobilenet_location(rows, kwargs):
    alpha = float(kwargs.get("alpha", 1.0))
    texts = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
    if alpha not in texts:
        raise ValueError(f"alpha must be one of {sorted(texts)} for ImageNet MobileNet weights; "
                         f"got {alpha!r}")
    base = _keras_constant("mobilenet", "BASE_WEIGHT_PATH", _GCS + "mobilenet/")
    file_name = f"mobilenet_{texts[alpha]}_{_mobilenet_rows(rows)}_tf_no_top.h5"
    return file_name, base + file_name


def _mobilenet_v2_location(rows, kwargs):
    alpha = float(kwargs.get("alpha", 1.0))
    allowed = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    if alpha not in allowed:
        raise ValueError(f"alpha must be one of {list(allowed)} for ImageNet MobileNetV2 "
                         f"weights; got {alpha!r}")
    rows = rows if rows in (96, 128, 160, 192, 224) else 224
    base = _keras_constant("mobilenet_v2", "BASE_WEIGHT_PATH", _GCS + "mobilenet_v2/")
    file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
    return file_name, base + file_name


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build, feed and fine-tune one keras.applications backbone.

    Attributes
    ----------
    name : str
        Registry key (lower case, e.g. ``"mobilenetv2"``).
    builder : str
        Attribute of ``keras.applications`` that builds it (e.g. ``"MobileNetV2"``).
    module : str
        ``keras.applications`` submodule holding its ``preprocess_input``.
    preprocessing : str
        What ``preprocess_input`` does to 0..255 RGB: ``"tf"`` (to [-1, 1]), ``"torch"``
        ([0, 1] then ImageNet mean/std), ``"caffe"`` (RGB->BGR minus the ImageNet mean) or
        ``"none"`` (the network rescales inside: EfficientNet).
    default_size : int
        Input height and width of the ImageNet weights.
    features : Mapping[str, str]
        Feature layer names keyed by stride level ``"P0"``..``"P5"`` (empty when not defined).
    fine_tune_at : str or None
        First layer trained in the fine-tuning stage; None when no original defines one.
    fine_tune_epochs : int or None
        Fine-tuning epochs of the original recipe.
    original_fine_tune_index : int or None
        The index the original code used (for the record; TF 2.3 layer count).
    """

    name: str
    builder: str
    module: str
    preprocessing: str
    default_size: int
    weights_location: Callable = dataclasses.field(repr=False, compare=False)
    features: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fine_tune_at: str | None = None
    fine_tune_epochs: int | None = None
    original_fine_tune_index: int | None = None

    @property
    def preprocess_input(self):
        """keras' own ``preprocess_input`` for this backbone (numpy or tensors)."""
        return getattr(getattr(keras.applications, self.module), "preprocess_input")

    @property
    def build_fn(self):
        """The ``keras.applications`` builder function."""
        return getattr(keras.applications, self.builder)


def _features(*names, start=1):
    return types.MappingProxyType({f"P{start + i}": n for i, n in enumerate(names)})


def _resnet_v1(c3, c4):
    return _features("conv1_relu", "conv2_block3_out", f"conv3_block{c3}_out",
                     f"conv4_block{c4}_out", "conv5_block3_out")


def _resnet_v2(c3, c4):
    return _features("conv1_conv", "conv2_block3_1_relu", f"conv3_block{c3}_1_relu",
                     f"conv4_block{c4}_1_relu", "post_relu")


_DENSENET_FEATURES = _features("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu")
_EFFICIENTNET_FEATURES = _features("block2a_expand_activation", "block3a_expand_activation",
                                   "block4a_expand_activation", "block6a_expand_activation",
                                   "top_activation")
_EFFICIENTNET_SIZES = (224, 240, 260, 300, 380, 456, 528, 600)


def _make_registry():
    specs = [
        BackboneSpec("vgg16", "VGG16", "vgg16", "caffe", 224,
                     _url_constant("vgg16", "WEIGHTS_PATH_NO_TOP",
                                   _notop("vgg16", "vgg16")),
                     features=_features("block1_conv2", "block2_conv2", "block3_conv3",
                                        "block4_conv3", "block5_conv3", "block5_pool", start=0)),
        BackboneSpec("vgg19", "VGG19", "vgg19", "caffe", 224,
                     _url_constant("vgg19", "WEIGHTS_PATH_NO_TOP",
                                   _notop("vgg19", "vgg19")),
                     features=_features("block1_conv2", "block2_conv2", "block3_conv4",
                                        "block4_conv4", "block5_conv4", "block5_pool", start=0)),
        BackboneSpec("resnet50", "ResNet50", "resnet", "caffe", 224, _resnet_location("resnet50"),
                     features=_resnet_v1(4, 6)),
        BackboneSpec("resnet101", "ResNet101", "resnet", "caffe", 224,
                     _resnet_location("resnet101"), features=_resnet_v1(4, 23)),
        BackboneSpec("resnet152", "ResNet152", "resnet", "caffe", 224,
                     _resnet_location("resnet152"), features=_resnet_v1(8, 36)),
        BackboneSpec("resnet50v2", "ResNet50V2", "resnet_v2", "tf", 224,
                     _resnet_location("resnet50v2"), features=_resnet_v2(4, 6),
                     fine_tune_at="conv5_block3_1_bn", fine_tune_epochs=15,
                     original_fine_tune_index=180),
        BackboneSpec("resnet101v2", "ResNet101V2", "resnet_v2", "tf", 224,
                     _resnet_location("resnet101v2"), features=_resnet_v2(4, 23),
                     fine_tune_at="conv5_block2_2_bn", fine_tune_epochs=15,
                     original_fine_tune_index=360),
        BackboneSpec("resnet152v2", "ResNet152V2", "resnet_v2", "tf", 224,
                     _resnet_location("resnet152v2"), features=_resnet_v2(8, 36),
                     fine_tune_at="conv5_block3_1_relu", fine_tune_epochs=15,
                     original_fine_tune_index=555),
        BackboneSpec("densenet121", "DenseNet121", "densenet", "torch", 224,
                     _url_constant("densenet", "DENSENET121_WEIGHT_PATH_NO_TOP",
                                   _notop("densenet", "densenet121")),
                     features=_DENSENET_FEATURES),
        BackboneSpec("densenet169", "DenseNet169", "densenet", "torch", 224,
                     _url_constant("densenet", "DENSENET169_WEIGHT_PATH_NO_TOP",
                                   _notop("densenet", "densenet169")),
                     features=_DENSENET_FEATURES, fine_tune_at="conv5_block29_0_bn",
                     fine_tune_epochs=20, original_fine_tune_index=565),
        BackboneSpec("densenet201", "DenseNet201", "densenet", "torch", 224,
                     _url_constant("densenet", "DENSENET201_WEIGHT_PATH_NO_TOP",
                                   _notop("densenet", "densenet201")),
                     features=_DENSENET_FEATURES, fine_tune_at="conv5_block28_0_bn",
                     fine_tune_epochs=20, original_fine_tune_index=670),
        BackboneSpec("mobilenet", "MobileNet", "mobilenet", "tf", 224, _mobilenet_location,
                     features=_features("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu",
                                        "conv_pw_11_relu", "conv_pw_13_relu")),
        BackboneSpec("mobilenetv2", "MobileNetV2", "mobilenet_v2", "tf", 224,
                     _mobilenet_v2_location,
                     features=_features("block_1_expand_relu", "block_3_expand_relu",
                                        "block_6_expand_relu", "block_13_expand_relu",
                                        "block_16_project"),
                     fine_tune_at="block_16_project", fine_tune_epochs=15,
                     original_fine_tune_index=150),
        BackboneSpec("xception", "Xception", "xception", "tf", 299,
                     _url_constant("xception", "WEIGHTS_PATH_NO_TOP",
                                   _notop("xception", "xception")),
                     features=_features("block1_conv2_act", "block3_sepconv2_bn",
                                        "block4_sepconv2_bn", "block13_sepconv2_bn",
                                        "block14_sepconv2_act")),
        BackboneSpec("inceptionv3", "InceptionV3", "inception_v3", "tf", 299,
                     _url_constant("inception_v3", "WEIGHTS_PATH_NO_TOP",
                                   _notop("inception_v3", "inception_v3"))),
    ]
    for i, size in enumerate(_EFFICIENTNET_SIZES):
        name = f"efficientnetb{i}"
        extra = {}
        if i == 0:  # brainview: the last 5 layers train, 10 epochs
            extra = dict(fine_tune_at="block7a_project_conv", fine_tune_epochs=10)
        specs.append(BackboneSpec(name, f"EfficientNetB{i}", "efficientnet", "none", size,
                                  _efficientnet_location(name),
                                  features=_EFFICIENTNET_FEATURES, **extra))
    return types.MappingProxyType({s.name: s for s in specs})


#: Read-only mapping ``name -> BackboneSpec``.
BACKBONES = _make_registry()


def list_backbones():
    """Sorted registry names."""
    return sorted(BACKBONES)


def get_backbone_spec(name):
    """Return the :class:`BackboneSpec` registered as ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If ``name`` is not a registered backbone (the message lists close matches).
    """
    if not isinstance(name, str):
        raise ValueError(f"backbone must be a registry name (str); got {name!r}")
    key = name.lower()
    if key not in BACKBONES:
        close = difflib.get_close_matches(key, BACKBONES, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"backbone must be one of {list_backbones()}; got {name!r}.{hint}")
    return BACKBONES[key]


# --------------------------------------------------------------------------------------------
# Preprocessing as a serializable layer (keras.ops only)
# --------------------------------------------------------------------------------------------
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_medseg")
class BackbonePreprocessing(keras.layers.Layer):
    """A backbone's ``preprocess_input`` as a layer, for 0..255 RGB channels-last images.

    Parameters
    ----------
    mode : {"tf", "torch", "caffe", "none"}
        See :class:`BackboneSpec`. ``"torch"`` and ``"caffe"`` need 3 channels.

    Computes the same values as keras' ``preprocess_input`` for that mode, inside the
    graph, so models saved in the ``.keras`` format carry their preprocessing.
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice(mode, PREPROCESSING_MODES, name="mode")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def _keras_home():
    home = os.environ.get("KERAS_HOME")
    return Path(home) if home else Path(os.path.expanduser("~")) / ".keras"


def _offline_flag():
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _network_available(host=_WEIGHTS_HOST[0], port=_WEIGHTS_HOST[1], *, timeout=3.0):
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_input_shape(input_shape, spec):
    if input_shape is None:
        return (spec.default_size, spec.default_size, 3)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape!r}")
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be three positive ints (height, width, channels); "
                         f"got {input_shape!r}")
    return tuple(int(s) for s in shape)


_RESERVED = ("include_top", "weights", "input_shape", "input_tensor", "classes",
             "classifier_activation")


def _check_builder_kwargs(kwargs):
    bad = sorted(set(kwargs) & set(_RESERVED))
    if bad:
        raise ValueError(f"builder keyword arguments must not include {bad}; build_backbone "
                         f"sets them itself")
    return dict(kwargs)


def imagenet_weights_location(name, input_shape=None, **builder_kwargs):
    """Where ``weights="imagenet"`` looks for the headless ImageNet weights of ``name``.

    Parameters
    ----------
    name : str
        Registry name.
    input_shape : tuple of int, optional
        ``(height, width, channels)``; MobileNet file names depend on the height.
    **builder_kwargs
        Builder options that change the file (``alpha`` for MobileNet/MobileNetV2).

    Returns
    -------
    path : Path
        ``$KERAS_HOME/models/<file name keras expects>``.
    url : str
        Where keras downloads it from.
    """
    spec = get_backbone_spec(name)
    shape = _check_input_shape(input_shape, spec)
    file_name, url = spec.weights_location(shape[0] if shape[0] == shape[1] else -1,
                                           builder_kwargs)
    return _keras_home() / "models" / file_name, url


def _resolve_weights(spec, shape, weights, builder_kwargs):
    """Validate ``weights``; return a file to load or None. Downloads only when online."""
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(f"weights must be None, 'imagenet' or a weights file path; "
                         f"got {weights!r}")
    if weights == "imagenet":
        if shape[2] != 3:
            raise ValueError(f"weights='imagenet' needs 3 input channels; got "
                             f"input_shape={shape}")
        path, url = imagenet_weights_location(spec.name, shape, **builder_kwargs)
        if path.is_file():
            return path
        if _offline_flag() or not _network_available():
            why = (f"{OFFLINE_ENV} is set" if _offline_flag()
                   else f"{_WEIGHTS_HOST[0]} cannot be reached")
            raise FileNotFoundError(
                f"ImageNet weights for backbone {spec.name!r} are not in the Keras cache and "
                f"cannot be downloaded ({why}). Place the file {path.name!r} in the folder "
                f"{str(path.parent)!r} (fetch it from {url} on a connected machine), or pass "
                f"weights=<path to a weights file>, or weights=None.")
        keras.utils.get_file(path.name, origin=url, cache_dir=str(path.parent.parent),
                             cache_subdir="models")
        return path
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist (weights must be "
                                f"None, 'imagenet' or a weights file path)")
    if not (path.name.endswith((".h5", ".hdf5", ".keras"))):
        raise ValueError(f"weights file {str(path)!r} must be a .weights.h5, .h5, .hdf5 or "
                         f".keras file")
    return path


def build_backbone(name, input_shape=None, *, weights=None, **builder_kwargs):
    """Build the headless keras.applications network registered as ``name``.

    Parameters
    ----------
    name : str
        Registry name, see :func:`list_backbones`.
    input_shape : tuple of int, optional
        ``(height, width, channels)``; default the spec's ``default_size`` with 3 channels.
    weights : None, "imagenet" or path
        None: random initialisation. ``"imagenet"``: keras' ImageNet weights from the Keras
        cache (see the module docstring for offline behaviour). A path: a ``.weights.h5``,
        legacy ``.h5`` or ``.keras`` file saved from the same architecture. Checked before
        anything is built.
    **builder_kwargs
        Passed to the keras builder (e.g. ``alpha=0.35`` for MobileNetV2); must not include
        ``include_top``, ``weights``, ``input_shape``, ``input_tensor``, ``classes`` or
        ``classifier_activation``.

    Returns
    -------
    keras.Model
        Input ``input_shape`` (0..255 RGB after the spec's preprocessing), output the last
        feature map.

    Raises
    ------
    ValueError
        Unknown ``name``, malformed ``input_shape``, reserved builder keywords, ``weights``
        of the wrong type or suffix, ``"imagenet"`` with other than 3 channels or an
        ``alpha`` without ImageNet weights.
    FileNotFoundError
        A weights path that does not exist, or ImageNet weights neither cached nor
        downloadable.

    Examples
    --------
    >>> m = build_backbone("mobilenetv2", (32, 32, 3), alpha=0.35)  # doctest: +SKIP
    >>> m.output.shape  # doctest: +SKIP
    (None, 1, 1, 1280)
    """
    spec = get_backbone_spec(name)
    shape = _check_input_shape(input_shape, spec)
    builder_kwargs = _check_builder_kwargs(builder_kwargs)
    path = _resolve_weights(spec, shape, weights, builder_kwargs)
    model = spec.build_fn(include_top=False, weights=None, input_shape=shape, **builder_kwargs)
    if path is not None:
        model.load_weights(str(path))
    return model


def build_feature_extractor(name, input_shape=None, *, weights=None, levels=None,
                            **builder_kwargs):
    """A model mapping an image to the backbone's feature maps, as a dict by stride level.

    Parameters
    ----------
    name, input_shape, weights, **builder_kwargs
        As for :func:`build_backbone`.
    levels : sequence of str, optional
        Stride levels to return (e.g. ``("P1", "P2", "P3", "P4", "P5")``); default all that
        the spec defines.

    Returns
    -------
    keras.Model
        Outputs ``{"P1": (batch, h/2, w/2, c1), ...}``; its ``layers`` are the backbone's.

    Raises
    ------
    ValueError
        As :func:`build_backbone`, or when the spec defines no features or ``levels`` names
        one it does not define.
    """
    spec = get_backbone_spec(name)
    if not spec.features:
        raise ValueError(f"backbone {spec.name!r} defines no feature layers")
    levels = tuple(spec.features) if levels is None else tuple(levels)
    unknown = [lv for lv in levels if lv not in spec.features]
    if unknown or not levels:
        raise ValueError(f"levels must be a non-empty subset of {list(spec.features)} for "
                         f"{spec.name!r}; got {list(levels)}")
    backbone = build_backbone(name, input_shape, weights=weights, **builder_kwargs)
    outputs = {lv: backbone.get_layer(spec.features[lv]).output for lv in levels}
    return keras.Model(backbone.input, outputs, name=f"{backbone.name}_features")


def resolve_layer(model, name_or_index):
    """Return the layer of ``model`` named ``name_or_index`` or at that index of ``model.layers``.

    Parameters
    ----------
    model : keras.Model
    name_or_index : str or int
        A layer name, or an index into ``model.layers`` (negative counts from the end).

    Raises
    ------
    ValueError
        If no layer has that name (close names are suggested), the index is out of range,
        or ``name_or_index`` is neither a str nor an int.
    """
    layers = model.layers
    if isinstance(name_or_index, numbers.Integral) and not isinstance(name_or_index, bool):
        i = int(name_or_index)
        if not -len(layers) <= i < len(layers):
            raise ValueError(f"layer index {i} is out of range for model {model.name!r} with "
                             f"{len(layers)} layers")
        return layers[i]
    if isinstance(name_or_index, str):
        for layer in layers:
            if layer.name == name_or_index:
                return layer
        close = difflib.get_close_matches(name_or_index, [la.name for la in layers], n=3)
        hint = f" Close names: {close}." if close else ""
        raise ValueError(f"model {model.name!r} has no layer named {name_or_index!r}.{hint}")
    raise ValueError(f"layer must be a layer name (str) or an index (int); "
                     f"got {name_or_index!r}")
