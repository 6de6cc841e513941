"""Grad-CAM computed directly, and overlay figures that are written once.

For class ``c`` with score ``y_c`` (the logit) and the activation ``A`` of a convolutional
layer (``top_activation`` in EfficientNetB0, shape ``(h, w, k)``)::

    alpha_k = mean_{i,j} d y_c / d A_{ijk}          (global average of the gradients)
    cam     = ReLU(sum_k alpha_k A_{..k})            (h, w)
    heatmap = upsample(cam) / max(upsample(cam))     (H, W), in [0, 1]

(Selvaraju et al., ICCV 2017). A map whose maximum is 0 stays all zero.

Backends
--------
Everything except the gradient uses ``keras.ops``. The gradient of the score with respect to
an *intermediate* activation needs the backend's autodiff: :func:`_score_gradients` is the
one TensorFlow-specific function (``tf.GradientTape``); under another Keras backend it raises
``NotImplementedError``.

The original overlaid the heat map on an image that was already an overlay and cast the sum
to ``uint8`` (values above 255 wrapped round). :func:`overlay_heatmap` blends in float and
clips once.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_medseg.utils import new_figure, save_figure

__all__ = ["grad_cam", "overlay_heatmap", "save_gradcam_figure", "DEFAULT_LAYER"]

DEFAULT_LAYER = "top_activation"


def _find_host(model, layer_name):
    """(host layer of ``model``, inner model) holding ``layer_name``; host None if direct."""
    for layer in model.layers:
        if layer.name == layer_name:
            return None, model
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # keras Wrapper (e.g. InferenceMode) or model
        if isinstance(inner, keras.Model):
            try:
                inner.get_layer(layer_name)
            except ValueError:
                continue
            return layer, inner
    names = [la.name for la in model.layers]
    raise ValueError(f"layer_name {layer_name!r} is neither a layer of model {model.name!r} "
                     f"nor of a model nested in it; its layers are {names}")


def _activation_and_logits_fn(model, layer_name):
    """``f(images) -> (activation, logits)`` for ``layer_name`` (inference mode)."""
    host, inner = _find_host(model, layer_name)
    if host is None:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        two = keras.Model(inputs, [model.get_layer(layer_name).output, model.outputs[0]])
        return lambda x: two(x, training=False)
    inner_two = keras.Model(inner.inputs[0] if len(inner.inputs) == 1 else inner.inputs,
                            [inner.get_layer(layer_name).output, inner.outputs[0]])
    chain = model.layers[1:] if isinstance(model.layers[0], keras.layers.InputLayer) \
        else model.layers
    for prev, layer in zip(chain, chain[1:]):
        inbound = layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else []
        if len(inbound) != 1 or inbound[0] is not prev.output:
            raise ValueError(f"Grad-CAM on a layer of a nested model needs the top-level "
                             f"layers of {model.name!r} to form a chain; layer "
                             f"{layer.name!r} does not take {prev.name!r}'s output alone")

    def run(x):
        activation = None
        for layer in chain:
            if layer is host:
                activation, x = inner_two(x, training=False)
            else:
                x = layer(x, training=False)
        return activation, x
    return run


def _score_gradients(fn, images, class_index):
    """TensorFlow only: (activation, logits, d logit[class] / d activation)."""
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"grad_cam needs gradients with respect to an intermediate activation, which is "
            f"implemented for the TensorFlow backend only; the Keras backend is "
            f"{keras.backend.backend()!r}")
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(images)  # record every op, also where no variable is involved
        activation, logits = fn(images)
        score = tf.reduce_sum(tf.gather(logits, class_index, axis=1, batch_dims=1))
    grads = tape.gradient(score, activation)
    return activation, logits, grads


def grad_cam(model, images, *, class_index=None, layer_name=DEFAULT_LAYER):
    """Grad-CAM heat maps of ``model`` for ``images``.

    Parameters
    ----------
    model : keras.Model
        A classifier returning ``(batch, classes)`` scores (logits). ``layer_name`` is one of
        its layers, or a layer of a model nested in it (the backbone of
        :func:`~keras_medseg.training.build_transfer_classifier`).
    images : array, shape (n, H, W, C)
        Model inputs (0..255 for brainview).
    class_index : int or sequence of int, optional
        Class explained per image; default the predicted class.
    layer_name : str
        A convolutional layer with 4D output (``"top_activation"``).

    Returns
    -------
    heatmaps : ndarray of float32, shape (n, H, W)
        In [0, 1], maximum 1 unless the map is all zero.
    class_index : ndarray of int64, shape (n,)
    logits : ndarray of float32, shape (n, classes)

    Raises
    ------
    ValueError
        For images that are not a 4D batch, a layer that is not found or not 4D, or a class
        index out of range.
    NotImplementedError
        Under a Keras backend other than TensorFlow.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (n, height, width, channels); got {images.shape}")
    fn = _activation_and_logits_fn(model, layer_name)
    if class_index is None:
        _, logits = fn(images)
        class_index = np.argmax(ops.convert_to_numpy(logits), axis=-1)
    class_index = np.broadcast_to(np.asarray(class_index, dtype=np.int64),
                                  (images.shape[0],)).copy()
    n_classes = int(model.outputs[0].shape[-1])
    if class_index.min() < 0 or class_index.max() >= n_classes:
        raise ValueError(f"class_index must be in 0..{n_classes - 1}; got {class_index}")
    activation, logits, grads = _score_gradients(fn, images, class_index)
    if len(activation.shape) != 4:
        raise ValueError(f"layer {layer_name!r} has output shape {tuple(activation.shape)}; "
                         f"Grad-CAM needs a 4D (batch, h, w, channels) activation")
    weights = ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(weights * activation, axis=-1, keepdims=True))
    cam = ops.image.resize(cam, images.shape[1:3], interpolation="bilinear")
    cam = ops.maximum(ops.squeeze(cam, axis=-1), 0.0)
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    cam = ops.where(peak > 0, cam / ops.where(peak > 0, peak, 1.0), 0.0)
    return (ops.convert_to_numpy(cam).astype(np.float32), class_index,
            ops.convert_to_numpy(logits).astype(np.float32))


def overlay_heatmap(image, heatmap, *, alpha=0.4, colormap="jet"):
    """Blend a [0, 1] heat map (coloured with ``colormap``) over an image, once.

    Parameters
    ----------
    image : array, shape (H, W) or (H, W, 3)
        0..255 (any numeric dtype).
    heatmap : array, shape (H, W)
        Values in [0, 1].
    alpha : float
        Weight of the heat map, in [0, 1].
    colormap : str
        A matplotlib colormap name.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        ``(1 - alpha) * image + alpha * 255 * colormap(heatmap)``, computed in float and
        clipped to 0..255 (no wrap-around).

    Raises
    ------
    ValueError
        For mismatched shapes, a heat map outside [0, 1] or alpha outside [0, 1].
    """
    import matplotlib

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    heat = np.asarray(heatmap, dtype=np.float64)
    if img.ndim != 3 or img.shape[-1] != 3 or heat.shape != img.shape[:2]:
        raise ValueError(f"image (H, W[, 3]) and heatmap (H, W) must match; got {img.shape} "
                         f"and {heat.shape}")
    if heat.size and (np.nanmin(heat) < 0 or np.nanmax(heat) > 1 or np.isnan(heat).any()):
        raise ValueError("heatmap values must be in [0, 1]")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    colours = matplotlib.colormaps[colormap](heat)[..., :3] * 255.0
    out = (1.0 - alpha) * img + alpha * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_gradcam_figure(path, image, heatmap, *, title=None, alpha=0.4):
    """Write one figure: the image, the heat map and their overlay side by side.

    Returns
    -------
    Path
    """
    img = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
    fig = new_figure(figsize=(9, 3.3))
    panels = ((img, "image", None), (np.asarray(heatmap), "Grad-CAM", "jet"),
              (overlay_heatmap(img, heatmap, alpha=alpha), "overlay", None))
    for i, (data, label, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(data, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
