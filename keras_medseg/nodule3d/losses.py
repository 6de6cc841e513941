"""Losses of the nodule3d detector and the stage-2 box-regression encoding.

- :class:`OnlineSampleFilteringLoss` (stage 1): per-sample cross-entropy, keep the
  ``floor(B / 2)`` hardest samples plus a random ``floor((B - floor(B / 2)) / 2)`` of the rest
  (B = 32: 16 hard + 8 random); the loss is the mean over the kept samples.
- :class:`PositiveSmoothL1Loss` and :func:`hybrid_loss` (stage 2, Dou et al. 2017): cross-
  entropy + ``regression_weight`` * smooth-L1 (sigma 1) of the box regression, on positive
  samples only.
- :func:`encode_regression_targets` / :func:`decode_regression`: ``t_c = (box_centre -
  patch_centre) / patch_centre`` per axis and ``t_d = log(d / patch_diagonal)``, normalised
  to mean 0, std 0.2 (``t_norm = (t - mean) / std``).

Coordinates are (z, y, x) voxels. The patch centre is the integer voxel ``patch_size // 2``
(the package's patch convention: a patch centred on ``c`` starts at ``c - size // 2``).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_medseg._checks import check_positive
from keras_medseg.nodule3d.models import FP_REDUCTION_PATCH

__all__ = [
    "OnlineSampleFilteringLoss",
    "PositiveSmoothL1Loss",
    "smooth_l1",
    "hybrid_loss",
    "fp_reduction_losses",
    "encode_regression_targets",
    "decode_regression",
    "pack_regression_targets",
    "REGRESSION_STD",
]

REGRESSION_STD = 0.2
_EPS = 1e-7


def _per_sample_crossentropy(y_true, y_pred, from_logits):
    """Categorical cross-entropy over the last axis, averaged over any other non-batch axes:
    shape (batch,). Stage-1 training outputs are (batch, 1, 1, 1, classes)."""
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_true.shape) != len(y_pred.shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(y_true.shape, y_pred.shape)):
        raise ValueError(f"y_true (one-hot) and y_pred must have the same shape; got "
                         f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}")
    if len(y_pred.shape) < 2:
        raise ValueError(f"y_pred must be (batch, ..., classes); got shape {tuple(y_pred.shape)}")
    y_true = ops.cast(y_true, y_pred.dtype)
    ce = keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=from_logits)
    if len(ce.shape) > 1:
        ce = ops.mean(ce, axis=tuple(range(1, len(ce.shape))))
    return ce


def _ranks_descending(values):
    """Rank of each entry of a 1-D tensor sorted descending (0 = largest; ties broken by
    position). Pairwise counting, O(B^2): deterministic on every backend, unlike an
    unstable argsort, and cheap for batch sizes."""
    vi = values[:, None]
    vj = values[None, :]
    pos = ops.arange(ops.shape(values)[0])
    earlier = pos[None, :] < pos[:, None]
    ahead = ops.logical_or(vj > vi, ops.logical_and(ops.equal(vj, vi), earlier))
    return ops.sum(ops.cast(ahead, "int32"), axis=1)


@keras.saving.register_keras_serializable(package="keras_medseg")
class OnlineSampleFilteringLoss(keras.losses.Loss):
    """Stage-1 online sample filtering loss (hard samples + a random share of the rest).

    Per-sample categorical cross-entropy ``l`` over a batch of ``B`` samples; the
    ``h = max(floor(B / 2), 1)`` largest are kept, plus ``r = floor((B - h) / 2)`` drawn
    uniformly without replacement from the others; the loss is the mean of the kept ``l``.
    (For ``B >= 2`` this is the original's rule; ``B = 1`` keeps its one sample.)

    :meth:`call` returns per-sample values: ``l * B / (h + r)`` for kept samples and 0
    otherwise, so the default ``"sum_over_batch_size"`` reduction yields the mean over the
    kept samples. Ties in ``l`` are broken by batch position.

    Parameters
    ----------
    from_logits : bool
        ``y_pred`` holds logits instead of probabilities.
    seed : int or None
        Seed of the :class:`keras.random.SeedGenerator` drawing the random share; two
        instances with the same seed draw the same sequence.

    Notes
    -----
    The random draw uses a ``SeedGenerator`` owned by the loss. Under TensorFlow its state
    advances at every training step. Under JAX, Keras' trainer (jitted or
    ``run_eagerly=True``) runs the loss in a stateless scope and does not carry a loss's
    generator state between steps, so every step draws from the same key (the random
    share then changes only as the per-sample losses change); train with this loss under
    TensorFlow for fresh draws.
    """

    def __init__(self, from_logits=False, seed=None, name="online_sample_filtering",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not isinstance(from_logits, bool):
            raise ValueError(f"from_logits must be True or False; got {from_logits!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer))
                                 or isinstance(seed, bool)):
            raise ValueError(f"seed must be None or an int; got {seed!r}")
        self.from_logits = from_logits
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def selection_mask(self, per_sample_loss):
        """Draw the kept samples for per-sample losses ``(B,)``: float32 mask ``(B,)``.

        Advances the seed generator (one draw per call, as in :meth:`call`).
        """
        per_sample_loss = ops.convert_to_tensor(per_sample_loss)
        if len(per_sample_loss.shape) != 1:
            raise ValueError(f"per_sample_loss must be 1-D (batch,); got shape "
                             f"{tuple(per_sample_loss.shape)}")
        n = ops.shape(per_sample_loss)[0]
        n_hard = ops.maximum(n // 2, 1)
        n_rand = (n - n_hard) // 2
        hard = _ranks_descending(per_sample_loss) < n_hard
        noise = keras.random.uniform(ops.shape(per_sample_loss), seed=self.seed_generator)
        noise = ops.where(hard, -1.0, noise)           # hard ones rank last among the draws
        rand = ops.logical_and(ops.logical_not(hard), _ranks_descending(noise) < n_rand)
        return ops.cast(ops.logical_or(hard, rand), "float32")

    def call(self, y_true, y_pred):
        per_sample = _per_sample_crossentropy(y_true, y_pred, self.from_logits)
        keep = ops.cast(self.selection_mask(ops.stop_gradient(per_sample)), per_sample.dtype)
        n = ops.cast(ops.shape(per_sample)[0], per_sample.dtype)
        return per_sample * keep * (n / ops.sum(keep))

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits, seed=self.seed)
        return config


def smooth_l1(x, sigma=1.0):
    """Elementwise smooth-L1: ``0.5 (sigma x)^2`` if ``|x| < 1 / sigma^2`` else
    ``|x| - 0.5 / sigma^2`` (keras.ops; accepts numpy arrays)."""
    x = ops.convert_to_tensor(x)
    s2 = float(sigma) ** 2
    ax = ops.abs(x)
    return ops.where(ax < 1.0 / s2, 0.5 * s2 * x * x, ax - 0.5 / s2)


@keras.saving.register_keras_serializable(package="keras_medseg")
class PositiveSmoothL1Loss(keras.losses.Loss):
    """Smooth-L1 box-regression loss over positive samples only.

    ``y_true`` is ``(batch, 5)``: column 0 is 1 for positive samples (0 otherwise) and
    columns 1-4 the normalised targets (:func:`pack_regression_targets`); ``y_pred`` is
    ``(batch, 4)``. The loss is ``sum_{positives} sum_{4 coords} smooth_l1 / max(P, 1)``
    with ``P`` the number of positives (0 for a batch without positives). :meth:`call`
    returns per-sample values scaled by ``B / max(P, 1)`` (zero for negatives) so the
    default mean reduction gives that figure.

    Parameters
    ----------
    sigma : float
        Smooth-L1 sigma (1 in the paper).
    """

    def __init__(self, sigma=1.0, name="positive_smooth_l1", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        check_positive(sigma, name="sigma")
        self.sigma = float(sigma)

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_true.shape) != 2 or y_true.shape[-1] != 5 or len(y_pred.shape) != 2 \
                or y_pred.shape[-1] != 4:
            raise ValueError(f"PositiveSmoothL1Loss expects y_true (batch, 5) = [positive, "
                             f"t_z, t_y, t_x, t_d] and y_pred (batch, 4); got "
                             f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}")
        y_true = ops.cast(y_true, y_pred.dtype)
        positive = y_true[:, 0]
        per_sample = ops.sum(smooth_l1(y_pred - y_true[:, 1:], self.sigma), axis=-1) * positive
        n = ops.cast(ops.shape(per_sample)[0], per_sample.dtype)
        return per_sample * (n / ops.maximum(ops.sum(positive), 1.0))

    def get_config(self):
        config = super().get_config()
        config.update(sigma=self.sigma)
        return config


def fp_reduction_losses(*, regression_weight=1.0, sigma=1.0):
    """``(loss, loss_weights)`` dicts for ``model.compile`` of a stage-2 model built with
    ``regression=True``: categorical cross-entropy + ``regression_weight`` *
    :class:`PositiveSmoothL1Loss`. Regression labels are :func:`pack_regression_targets`."""
    check_positive(regression_weight, name="regression_weight", allow_zero=True)
    loss = {"classification": keras.losses.CategoricalCrossentropy(),
            "regression": PositiveSmoothL1Loss(sigma=sigma)}
    return loss, {"classification": 1.0, "regression": float(regression_weight)}


def hybrid_loss(y_true_cls, y_pred_cls, y_true_reg, y_pred_reg, *, regression_weight=1.0,
                sigma=1.0):
    """The paper's stage-2 loss as one scalar (keras.ops).

    Parameters
    ----------
    y_true_cls, y_pred_cls : (batch, classes)
        One-hot labels and softmax probabilities.
    y_true_reg : (batch, 5)
        ``[positive, t_z, t_y, t_x, t_d]`` (:func:`pack_regression_targets`).
    y_pred_reg : (batch, 4)
    regression_weight : float
        lambda.

    Returns
    -------
    scalar tensor: ``mean CE + lambda * sum_{pos} smooth_l1 / max(P, 1)``.
    """
    check_positive(regression_weight, name="regression_weight", allow_zero=True)
    ce = ops.mean(keras.losses.categorical_crossentropy(
        ops.cast(y_true_cls, "float32"), ops.cast(y_pred_cls, "float32")))
    reg = PositiveSmoothL1Loss(sigma=sigma)(y_true_reg, y_pred_reg)
    return ce + regression_weight * reg


# ------------------------------------------------------------------ regression encoding
def _check_patch_size(patch_size):
    ps = np.asarray(patch_size)
    if ps.shape != (3,) or ps.dtype.kind not in "iu" or np.any(ps < 1):
        raise ValueError(f"patch_size must be 3 positive ints (z, y, x); got {patch_size!r}")
    return ps.astype(np.float64)


def _check_norm(mean, std):
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (4,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (4,))
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"mean must be finite and std positive (scalars or 4 values); got "
                         f"mean={mean.tolist()} std={std.tolist()}")
    return mean, std


def encode_regression_targets(centres, diameters, *, patch_size=FP_REDUCTION_PATCH,
                              mean=0.0, std=REGRESSION_STD):
    """Normalised stage-2 regression targets of lesions in patches.

    Parameters
    ----------
    centres : array_like, (n, 3)
        Lesion centres (z, y, x) in voxels, relative to the patch's first voxel.
    diameters : array_like, (n,)
        Lesion diameters in voxels (positive).
    patch_size : 3 ints
        Patch shape (z, y, x); the patch centre is ``patch_size // 2`` and its diagonal
        ``sqrt(sum(patch_size^2))``.
    mean, std : float or 4 floats
        Normalisation: ``t_norm = (t - mean) / std`` (paper: 0 and 0.2).

    Returns
    -------
    numpy.ndarray, (n, 4), float32
        ``(t_z, t_y, t_x, t_d)`` normalised.
    """
    ps = _check_patch_size(patch_size)
    mean, std = _check_norm(mean, std)
    c = np.asarray(centres, dtype=np.float64)
    d = np.asarray(diameters, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"centres must be (n, 3) (z, y, x); got shape {c.shape}")
    if d.shape != (c.shape[0],):
        raise ValueError(f"diameters must be (n,) matching centres; got shape {d.shape}")
    if not np.all(np.isfinite(c)) or not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("centres must be finite and diameters positive and finite")
    pc = np.floor(ps / 2)
    t = np.concatenate([(c - pc) / pc, np.log(d / np.sqrt(np.sum(ps ** 2)))[:, None]], axis=1)
    return ((t - mean) / std).astype(np.float32)


def decode_regression(targets, *, patch_size=FP_REDUCTION_PATCH, mean=0.0,
                      std=REGRESSION_STD):
    """Inverse of :func:`encode_regression_targets`.

    Parameters
    ----------
    targets : array_like, (n, 4)
        Normalised ``(t_z, t_y, t_x, t_d)`` (e.g. the stage-2 regression output).

    Returns
    -------
    centres : numpy.ndarray, (n, 3), float64
        Relative to the patch's first voxel.
    diameters : numpy.ndarray, (n,), float64
    """
    ps = _check_patch_size(patch_size)
    mean, std = _check_norm(mean, std)
    t = np.asarray(targets, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"targets must be (n, 4); got shape {t.shape}")
    t = t * std + mean
    pc = np.floor(ps / 2)
    return pc + t[:, :3] * pc, np.sqrt(np.sum(ps ** 2)) * np.exp(t[:, 3])


def pack_regression_targets(targets, positive):
    """Regression labels for :class:`PositiveSmoothL1Loss`: ``(n, 5)`` float32
    ``[positive, t_z, t_y, t_x, t_d]``; targets of negatives are set to 0 (ignored).

    Parameters
    ----------
    targets : array_like, (n, 4)
    positive : array_like of bool or 0/1, (n,)
    """
    t = np.asarray(targets, dtype=np.float32)
    p = np.asarray(positive)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"targets must be (n, 4); got shape {t.shape}")
    if p.shape != (t.shape[0],) or not np.all(np.isin(p, (0, 1))):
        raise ValueError(f"positive must be (n,) of 0/1 or bool matching targets; got shape "
                         f"{p.shape}")
    p = p.astype(np.float32)
    return np.concatenate([p[:, None], t * p[:, None]], axis=1)
