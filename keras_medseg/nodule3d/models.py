"""The two networks of the nodule3d detector (convnet3d after Dou et al. 2017).

Stage 1, :func:`build_candidate_screening`, is a fully convolutional classifier of
(15, 30, 30) (z, y, x) patches: on a whole volume it returns a probability map whose
output index ``o`` classifies the input patch starting at ``o * STRIDE`` (see
:func:`output_to_input`). Stage 2, :func:`build_fp_reduction`, is a residual classifier of
(25, 60, 60) patches with an optional box-regression head.

Kernels are given as (z, y, x); padding is ``"valid"`` except inside the residual units;
convolution kernels are initialised from N(0, 0.01) with zero biases, as in the original.
CBA = Conv3D -> BatchNormalization -> ReLU. Inputs are channels-last
``(batch, z, y, x, channels)``.

Index map (stage 1)
-------------------
The stage-1 net has output stride ``STRIDE = (1, 2, 2)`` and receptive field
``RECEPTIVE_FIELD = (15, 30, 30)``. Output index ``o`` sees exactly the input voxels
``[o * STRIDE, o * STRIDE + RECEPTIVE_FIELD)``: the same numbers as the patch classifier
applied to that patch. Its geometric centre is ``o * STRIDE + (7, 14.5, 14.5)``.
A patch "centred" at an integer voxel ``c`` is ``volume[c - size // 2 : c - size // 2 + size]``
(the convention every patch extractor of this package uses), so the integer centre of output
``o`` is ``o * STRIDE + (7, 15, 15)`` (:data:`CENTRE_OFFSET`).

The original mapped ``in = out * (1, 2, 2) + (6, 14, 14)``: it summed ``floor((k - 1) / 2)``
over the layers, which loses half a voxel at each even kernel (two (4, ., .) kernels in z: one
voxel; the 2-wide pooling in y, x: half a voxel) and so pointed one voxel too shallow in z and
one voxel short of the patch-extraction centre in y and x.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from keras_medseg._checks import check_positive
from keras_medseg.nodule3d.layers import (
    CENTRE_OFFSET,
    RECEPTIVE_FIELD,
    STRIDE,
    CropProposals,
    DecodeProposalRegression,
    ScreeningProposals,
    UnflattenProposals,
)

__all__ = [
    "RECEPTIVE_FIELD",
    "STRIDE",
    "CENTRE_OFFSET",
    "ORIGINAL_OFFSET",
    "FP_REDUCTION_PATCH",
    "SCREENING_BLOCKS",
    "apply_cba",
    "apply_preact_residual_unit",
    "build_candidate_screening",
    "build_fp_reduction",
    "build_detector",
    "average_models",
    "init_fp_reduction_from_screening",
    "output_to_input",
    "input_to_output",
    "output_shape_for",
]

# RECEPTIVE_FIELD (15, 30, 30), STRIDE (1, 2, 2), CENTRE_OFFSET (7, 15, 15) = RECEPTIVE_FIELD // 2
ORIGINAL_OFFSET = (6, 14, 14)          # the original's map, half a voxel off per even kernel
FP_REDUCTION_PATCH = (25, 60, 60)

# Architecture as data: (name, filters, kernel (z, y, x)); "pool" = MaxPool (1, 2, 2).
SCREENING_BLOCKS = (
    ("c1", 32, (4, 5, 5)),
    ("pool", None, (1, 2, 2)),
    ("c2", 32, (4, 5, 5)),
    ("c3", 64, (5, 5, 5)),
    ("c4", 250, (5, 5, 5)),
)
_FP_SHARED = SCREENING_BLOCKS[:4]      # C1, pool, C2, C3: shared with stage 1


def _conv_init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.01)


def _conv(filters, kernel_size, *, name, strides=1, padding="valid", l2=None):
    return keras.layers.Conv3D(
        filters, kernel_size, strides=strides, padding=padding,
        kernel_initializer=_conv_init(), bias_initializer="zeros",
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None, name=name)


def apply_cba(x, filters, kernel_size, *, name, l2=None):
    """Conv3D (valid) -> BatchNormalization -> ReLU; layers ``{name}_conv/_bn/_relu``."""
    x = _conv(filters, kernel_size, name=f"{name}_conv", l2=l2)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_preact_residual_unit(x, filters, *, name, l2=None):
    """Pre-activation residual unit: ``x + (BN-ReLU-Conv3^3 same) twice``.

    The input must already have ``filters`` channels (identity shortcut).
    """
    if x.shape[-1] != filters:
        raise ValueError(f"apply_preact_residual_unit: input has {x.shape[-1]} channels, "
                         f"filters={filters}; the identity shortcut needs them equal")
    y = x
    for i in (1, 2):
        y = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(y)
        y = keras.layers.ReLU(name=f"{name}_relu{i}")(y)
        y = _conv(filters, 3, padding="same", name=f"{name}_conv{i}", l2=l2)(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def _apply_blocks(x, blocks, *, l2=None):
    for name, filters, kernel in blocks:
        if name == "pool":
            x = keras.layers.MaxPooling3D(kernel, name="pool1")(x)
        else:
            x = apply_cba(x, filters, kernel, name=name, l2=l2)
    return x


def _check_input_shape(input_shape, minimum, *, name="input_shape"):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple (z, y, x, channels); got {input_shape!r}")
    if len(shape) != 4:
        raise ValueError(f"{name} must be (z, y, x, channels), channels last; got {input_shape!r}")
    for i, d in enumerate(shape):
        if d is None:
            if i == 3:
                raise ValueError(f"{name}: the channel axis must be known; got {input_shape!r}")
            continue
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
            raise ValueError(f"{name} entries must be positive ints or None; got {input_shape!r}")
        if i < 3 and d < minimum[i]:
            raise ValueError(
                f"{name}={input_shape!r} is smaller than the smallest input {tuple(minimum)} "
                "(z, y, x) this network accepts; inputs are channels-last (z, y, x, channels)")
    return shape


def _check_num_classes(num_classes):
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (class 0 = background); "
                         f"got {num_classes!r}")
    return int(num_classes)


def _check_weights(weights):
    if weights is not None and not (isinstance(weights, (str, os.PathLike))
                                    and os.path.isfile(weights)):
        raise ValueError(f"weights must be None or the path of an existing weights file; "
                         f"got {weights!r}")
    return weights


def build_candidate_screening(input_shape=(None, None, None, 1), num_classes=2, *,
                              weights=None, final_batchnorm=False,
                              name="candidate_screening"):
    """Stage-1 fully convolutional candidate-screening network.

    C1 (4,5,5)x32 -> MaxPool (1,2,2) -> C2 (4,5,5)x32 -> C3 5^3x64 -> C4 5^3x250 (all CBA,
    valid) -> C5 1^3 x num_classes -> softmax.

    Parameters
    ----------
    input_shape : tuple
        ``(z, y, x, channels)``; spatial entries may be None (whole volumes). Known spatial
        entries must be at least :data:`RECEPTIVE_FIELD`. Trains on ``(15, 30, 30, 1)``.
    num_classes : int
        Number of classes including background (class 0); at least 2.
    weights : None or path
        A weights file to load (``model.load_weights``); checked to exist before building.
    final_batchnorm : bool
        Put a BatchNormalization between C5 and the softmax, as the original did (a defect:
        it rescales the logits with batch statistics). With it the model has the original's
        2,364,000 parameters (2 classes); without it (default) 2,363,992.

    Returns
    -------
    keras.Model
        Output ``(batch, z - 14, (y - 30) // 2 + 1, (x - 30) // 2 + 1, num_classes)``
        float32 probabilities; layer ``"probabilities"``.
    """
    shape = _check_input_shape(input_shape, RECEPTIVE_FIELD)
    num_classes = _check_num_classes(num_classes)
    _check_weights(weights)
    inputs = keras.Input(shape, name="volume")
    x = _apply_blocks(inputs, SCREENING_BLOCKS)
    x = _conv(num_classes, 1, name="c5_conv")(x)
    if final_batchnorm:
        x = keras.layers.BatchNormalization(name="c5_bn")(x)
    outputs = keras.layers.Activation("softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def build_fp_reduction(input_shape=FP_REDUCTION_PATCH + (1,), num_classes=2, *,
                       regression=True, l2=1e-4, weights=None, name="fp_reduction"):
    """Stage-2 false-positive-reduction residual network.

    C1 (4,5,5)x32 -> MaxPool (1,2,2) -> C2 (4,5,5)x32 -> C3 5^3x64 (CBA, valid) ->
    C4 Conv 3^3x64 (valid) -> residual unit 64 -> BN-ReLU -> C5 Conv 3^3x128 stride 2 (valid)
    -> residual unit 128 -> BN-ReLU -> Flatten -> Dense(128, sigmoid) -> Dense(num_classes,
    softmax). Residual units are pre-activation (BN-ReLU-Conv3^3 same, twice, identity add).
    With ``(25, 60, 60, 1)`` inputs and 2 classes the classifier has 8,094,658 parameters.

    Parameters
    ----------
    input_shape : tuple
        ``(z, y, x, channels)``, all known (Flatten), at least ``(15, 30, 30)``.
    num_classes : int
        Classes including background; at least 2.
    regression : bool
        Add the paper's box-regression head: Flatten -> Dense(128, sigmoid) -> Dense(4)
        (normalised ``(t_z, t_y, t_x, t_d)``, see
        :func:`keras_medseg.nodule3d.losses.encode_regression_targets`). The model then
        returns a dict ``{"classification": (batch, num_classes), "regression": (batch, 4)}``.
    l2 : float
        L2 factor on convolution kernels (0 disables).
    weights : None or path
        A weights file to load; checked to exist before building.

    Returns
    -------
    keras.Model
    """
    shape = _check_input_shape(input_shape, RECEPTIVE_FIELD)
    if any(d is None for d in shape):
        raise ValueError(f"input_shape must be fully known for the Flatten layer; "
                         f"got {input_shape!r}")
    num_classes = _check_num_classes(num_classes)
    check_positive(l2, name="l2", allow_zero=True)
    if not isinstance(regression, bool):
        raise ValueError(f"regression must be True or False; got {regression!r}")
    _check_weights(weights)
    l2 = float(l2) or None
    inputs = keras.Input(shape, name="patch")
    x = _apply_blocks(inputs, _FP_SHARED, l2=l2)
    x = _conv(64, 3, name="c4_conv", l2=l2)(x)
    x = apply_preact_residual_unit(x, 64, name="res64", l2=l2)
    x = keras.layers.BatchNormalization(name="res64_out_bn")(x)
    x = keras.layers.ReLU(name="res64_out_relu")(x)
    x = _conv(128, 3, strides=2, name="c5_conv", l2=l2)(x)
    x = apply_preact_residual_unit(x, 128, name="res128", l2=l2)
    x = keras.layers.BatchNormalization(name="res128_out_bn")(x)
    x = keras.layers.ReLU(name="res128_out_relu")(x)
    features = keras.layers.Flatten(name="flatten")(x)
    h = keras.layers.Dense(128, activation="sigmoid", name="cls_fc")(features)
    cls = keras.layers.Dense(num_classes, activation="softmax", name="classification")(h)
    if not regression:
        outputs = cls
    else:
        r = keras.layers.Dense(128, activation="sigmoid", name="reg_fc")(features)
        reg = keras.layers.Dense(4, name="regression")(r)
        outputs = {"classification": cls, "regression": reg}
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def init_fp_reduction_from_screening(fp_model, screening_model):
    """Copy C1-C3 (convolutions and their BatchNormalization) from stage 1 into stage 2.

    Modifies ``fp_model`` in place and returns it. Raises ``ValueError`` when a layer is
    missing or its weight shapes differ (e.g. a different number of input channels).
    """
    for block in ("c1", "c2", "c3"):
        for op in ("conv", "bn"):
            lname = f"{block}_{op}"
            try:
                src = screening_model.get_layer(lname)
                dst = fp_model.get_layer(lname)
            except ValueError:
                raise ValueError(f"init_fp_reduction_from_screening: layer {lname!r} missing "
                                 "in one of the models")
            w = src.get_weights()
            if [a.shape for a in w] != [a.shape for a in dst.get_weights()]:
                raise ValueError(f"init_fp_reduction_from_screening: layer {lname!r} weight "
                                 f"shapes differ: {[a.shape for a in w]} vs "
                                 f"{[a.shape for a in dst.get_weights()]}")
            dst.set_weights(w)
    return fp_model


def build_detector(screening_model, fp_model, *, roi_size=None, score_threshold=0.25,
                   iou_threshold=0.5, max_proposals=20, pre_nms_top_k=1000, pad_value=0.0,
                   regression_mean=0.0, regression_std=0.2, name="nodule3d_detector"):
    """The full two-stage detector as one Keras model (saves to and loads from ``.keras``).

    volume -> stage 1 probability map -> :class:`ScreeningProposals` (boxes of ``roi_size``
    at the mapped centres, score > ``score_threshold``, label != background, greedy 3D NMS
    at ``iou_threshold``, at most ``max_proposals``) -> :class:`CropProposals` (crops of the
    stage-2 input size) -> stage 2.

    Parameters
    ----------
    screening_model : keras.Model
        From :func:`build_candidate_screening` (any spatial input size).
    fp_model : keras.Model
        From :func:`build_fp_reduction`; its input shape fixes the crop size and its channels
        must equal stage 1's.
    roi_size : 3 ints or None
        Proposal box size (z, y, x); None uses the stage-2 crop size (the original).
    pad_value : float
        Value of crop voxels outside the volume (in the normalised intensity scale).
    regression_mean, regression_std : float or 4 floats
        Normalisation of the regression targets (paper: 0, 0.2).

    Returns
    -------
    keras.Model
        Input ``(batch, z, y, x, C)``; output dict: ``probability_map`` (stage 1),
        ``boxes`` (batch, N, 6), ``proposal_scores``, ``proposal_labels``, ``valid``
        (batch, N), ``class_probabilities`` (batch, N, classes) from stage 2, and with a
        regression head ``regression`` (batch, N, 4), ``centres`` (batch, N, 3),
        ``diameters`` (batch, N). Padded proposals (``valid == 0``) are all zero.
    """
    for arg, m in (("screening_model", screening_model), ("fp_model", fp_model)):
        if not isinstance(m, keras.Model) or len(m.inputs) != 1:
            raise ValueError(f"{arg} must be a single-input keras.Model; got {m!r}")
    s1_shape = tuple(screening_model.inputs[0].shape)
    s2_shape = tuple(fp_model.inputs[0].shape)
    if len(s1_shape) != 5 or len(s2_shape) != 5 or any(d is None for d in s2_shape[1:]):
        raise ValueError(f"screening_model input must be (batch, z, y, x, C) and fp_model's "
                         f"fully known; got {s1_shape} and {s2_shape}")
    if s1_shape[-1] != s2_shape[-1]:
        raise ValueError(f"screening_model and fp_model must take the same channels; got "
                         f"{s1_shape[-1]} and {s2_shape[-1]}")
    patch_size = tuple(int(d) for d in s2_shape[1:4])
    roi_size = patch_size if roi_size is None else roi_size
    proposals = ScreeningProposals(
        roi_size, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_proposals=max_proposals, pre_nms_top_k=pre_nms_top_k, name="proposals")
    inputs = keras.Input((None, None, None, s1_shape[-1]), name="volume")
    probs = screening_model(inputs)
    boxes, scores, labels, valid = proposals(probs)
    crops = CropProposals(patch_size, pad_value=pad_value, name="crop_proposals")(
        [inputs, boxes])
    stage2 = fp_model(crops)
    n = proposals.max_proposals
    outputs = {"probability_map": probs, "boxes": boxes, "proposal_scores": scores,
               "proposal_labels": labels, "valid": valid}
    if isinstance(stage2, dict):
        if set(stage2) != {"classification", "regression"}:
            raise ValueError(f"fp_model outputs must be a tensor or the dict "
                             f"{{'classification', 'regression'}}; got {sorted(stage2)}")
        cls = UnflattenProposals(n, name="unflatten_classification")(
            [stage2["classification"], valid])
        reg = UnflattenProposals(n, name="unflatten_regression")([stage2["regression"], valid])
        centres, diameters = DecodeProposalRegression(
            patch_size, mean=regression_mean, std=regression_std, name="decode_regression")(
            [boxes, reg, valid])
        outputs.update(regression=reg, centres=centres, diameters=diameters)
    else:
        cls = UnflattenProposals(n, name="unflatten_classification")([stage2, valid])
    outputs["class_probabilities"] = cls
    return keras.Model(inputs, outputs, name=name)


def average_models(models, *, name="fp_reduction_ensemble"):
    """One model whose outputs are the means of ``models``' outputs (an ensemble).

    Used for an ensemble of stage-2 networks trained with different seeds
    (``PipelineConfig.stage2_members``): the class probabilities and, with a regression head, the
    encoded regression outputs are averaged output by output, so the result is a drop-in
    stage-2 model (:func:`build_detector`, ``evaluate_series``) and saves as one ``.keras``
    file.

    Parameters
    ----------
    models : sequence of keras.Model or path-like
        At least one single-input model; all with the same input shape and the same outputs
        (one tensor each, or dicts with the same keys). Paths are loaded without compiling.
    name : str

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        For an empty sequence, a model with several inputs, or members whose input shapes
        or output structures differ (naming the member).
    """
    members = [_load_model(m) for m in models]
    if not members:
        raise ValueError("models must hold at least one model")
    shape = tuple(members[0].inputs[0].shape)
    inputs = keras.Input(shape[1:], name="patch")
    outs = []
    for i, member in enumerate(members):
        if len(member.inputs) != 1 or tuple(member.inputs[0].shape) != shape:
            raise ValueError(f"models[{i}] must take one input of shape {shape}; got "
                             f"{[tuple(t.shape) for t in member.inputs]}")
        # a copy with a unique name: nested models of one name cannot share a functional model
        wrapped = keras.Model(member.inputs, member.output, name=f"member_{i}")
        out = wrapped(inputs)
        keys = sorted(out) if isinstance(out, dict) else None
        if outs and keys != outs[0][0]:
            raise ValueError(f"models[{i}] outputs {keys or 'one tensor'}; models[0] outputs "
                             f"{outs[0][0] or 'one tensor'}")
        outs.append((keys, out))
    if len(members) == 1:
        return keras.Model(inputs, outs[0][1], name=name)

    def mean(tensors, label):
        return keras.layers.Average(name=f"mean_{label}")(list(tensors))

    keys = outs[0][0]
    if keys is None:
        outputs = mean([o for _, o in outs], "output")
    else:
        outputs = {k: mean([o[k] for _, o in outs], k) for k in keys}
    return keras.Model(inputs, outputs, name=name)


def _load_model(model, *, what="model"):
    """``model`` itself when it is a keras.Model, else the model of the ``.keras`` file it
    names, loaded without compiling (the nodule3d custom layers and losses registered)."""
    if isinstance(model, keras.Model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"expected a keras.Model or a model file; got {model!r}")
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    import keras_medseg.nodule3d.losses  # noqa: F401  (registers the losses; layers above)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot load the {what}: {e}") from None


# ----------------------------------------------------------------------------- index map


def _as_index_array(idx, name):
    arr = np.asarray(idx)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must have a last axis of length 3 (z, y, x); "
                         f"got shape {arr.shape}")
    if arr.dtype.kind not in "iuf" or (arr.size and not np.all(np.isfinite(arr))):
        raise ValueError(f"{name} must hold finite numbers; got dtype {arr.dtype}")
    return arr


def output_to_input(idx, *, mode="centre"):
    """Map stage-1 output indices to input voxel coordinates (exact).

    Parameters
    ----------
    idx : array_like, (..., 3)
        Output indices (z, y, x).
    mode : {"centre", "start", "exact"}
        ``"centre"``: the integer voxel the output's patch is centred on,
        ``idx * STRIDE + (7, 15, 15)`` (patch = ``volume[c - size // 2 :][:size]``);
        ``"start"``: the first voxel of the (15, 30, 30) patch, ``idx * STRIDE``;
        ``"exact"``: the patch's geometric centre ``idx * STRIDE + (7, 14.5, 14.5)`` (float).

    Returns
    -------
    numpy.ndarray, (..., 3)
        int64 for ``"centre"``/``"start"``, float64 for ``"exact"``.
    """
    arr = _as_index_array(idx, "idx")
    if mode not in ("centre", "start", "exact"):
        raise ValueError(f"mode must be one of ['centre', 'exact', 'start']; got {mode!r}")
    if mode == "exact":
        return arr.astype(np.float64) * STRIDE + (np.asarray(RECEPTIVE_FIELD) - 1) / 2.0
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError("idx must hold integer indices")
    start = arr.astype(np.int64) * np.asarray(STRIDE)
    return start if mode == "start" else start + np.asarray(CENTRE_OFFSET)


def input_to_output(coords):
    """The stage-1 output index whose patch is centred nearest each input voxel.

    ``round((c - (7, 14.5, 14.5)) / STRIDE)``: no ties occur for integer voxels, and
    ``input_to_output(output_to_input(o)) == o``. Indices are not clipped to a map's shape.

    Parameters
    ----------
    coords : array_like, (..., 3)
        Input voxel coordinates (z, y, x).

    Returns
    -------
    numpy.ndarray, (..., 3), int64
    """
    arr = _as_index_array(coords, "coords").astype(np.float64)
    exact = (arr - (np.asarray(RECEPTIVE_FIELD) - 1) / 2.0) / np.asarray(STRIDE)
    return np.floor(exact + 0.5).astype(np.int64)


def output_shape_for(volume_shape):
    """Stage-1 probability-map spatial shape for a ``(z, y, x)`` volume shape."""
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or any(s < r for s, r in zip(shape, RECEPTIVE_FIELD)):
        raise ValueError(f"volume_shape must be (z, y, x) of at least {RECEPTIVE_FIELD}; "
                         f"got {volume_shape!r}")
    return tuple((s - r) // st + 1 for s, r, st in zip(shape, RECEPTIVE_FIELD, STRIDE))
