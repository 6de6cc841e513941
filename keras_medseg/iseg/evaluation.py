"""Whole-subject evaluation of the iseg task: sliding-window label maps, per-class DSC / MHD /
ASD in two definitions, tables and overlay figures.

For every subject (a prepared HDF5 file with a label):

1. :func:`predict_labels`: sliding-window inference over the whole volume
   (:func:`keras_medseg.inference.sliding_window_inference`: exact covering grid, Gaussian
   blending of softmax probabilities, batched windows), optionally averaged over proper
   rotations of the volume (test-time augmentation, :func:`tta_rotations`), then argmax;
2. :func:`score_labels`: per class (CSF = 1, GM = 2, WM = 3) the Dice coefficient
   (:func:`keras_medseg.metrics.compute_dice`) and, from
   :func:`keras_medseg.metrics.compute_surface_metrics`, the "MHD" and "ASD" in two modes:

   * ``surface`` (the standard definitions): MHD = the larger of the two directed 95th
     percentiles of boundary-to-boundary distances, ASD = the symmetric average surface
     distance (all distances of both directions pooled);
   * ``evalseg`` (what the iSeg-2017 challenge computed with EvaluateSegmentation):
     MHD = HDRFDST@0.95 over the mismatched voxels, ASD = AVGDIST;

   distances in mm with the subject's ``spacing``;
3. :func:`evaluate_subjects`: one table with a row per subject and class plus the mean over
   subjects, written as CSV and markdown, and an overlay figure (axial, coronal, sagittal
   middle slices of the image with the ground truth and the prediction) per subject.

The original I-seg_Focus ``metrics.py`` called an undefined medpy helper and computed a
one-directional ASD; these numbers come from the shared metrics module instead.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.iseg.pipeline import CLASS_NAMES

__all__ = ["METRIC_COLUMNS", "TTA_CHOICES", "tta_rotations", "load_model", "predict_labels",
           "score_labels", "summarize_rows", "overlay_figure", "evaluate_subjects",
           "EvaluationResult"]

#: Columns of the metric tables (distances in mm).
METRIC_COLUMNS = ("DSC", "MHD_surface", "ASD_surface", "MHD_evalseg", "ASD_evalseg")

#: Names accepted by :func:`tta_rotations`.
TTA_CHOICES = ("none", "axis0", "axis1", "axis2", "all")


def tta_rotations(name):
    """The proper rotations of a test-time augmentation, by name.

    Parameters
    ----------
    name : {"none", "axis0", "axis1", "axis2", "all"}
        ``"none"``: no augmentation (returns None); ``"axis<i>"``: the 4 rotations about array
        axis ``i`` (0, 90, 180, 270 degrees); ``"all"``: the 24 rotations of the cube. No
        reflections.

    Returns
    -------
    tuple of keras_medseg.io.hdf5.CubeRotation, or None
    """
    from keras_medseg.io.hdf5 import cube_rotations

    name = check_choice(name, TTA_CHOICES, name="tta")
    if name == "none":
        return None
    return cube_rotations(None if name == "all" else int(name[-1]))


def load_model(path):
    """Load a saved iseg model (``.keras``, e.g. a run's ``best.keras``) with the package's
    custom layers, optimiser and loss registered.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    import keras

    import keras_medseg.iseg.models  # noqa: F401  (registers the shared layers)
    from keras_medseg.iseg import pipeline

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    for name in ("AdamL2", "DiceCELoss"):  # build (and so register) the lazy classes
        getattr(pipeline, name)
    return keras.saving.load_model(path)


def predict_labels(model, data, *, window=(64, 64, 64), overlap=0.5, batch_size=4,
                   blend="gaussian", progress=False, return_probabilities=False,
                   rotations=None):
    """Label map of one whole subject by sliding-window inference.

    Parameters
    ----------
    model : keras.Model or callable
        Maps ``(b, *window, M)`` to logits ``(b, *window, K)``.
    data : ndarray, float32 ``(Z, X, Y, M)``
        Channels-last subject (as :func:`keras_medseg.io.hdf5.read_iseg_hdf5` returns it).
    window : sequence of 3 int
        Window size (use the training crop size, so training and inference see the same
        context).
    overlap : float in [0, 1)
    batch_size : int
    blend : {"gaussian", "constant"}
    progress : bool
    return_probabilities : bool
        Also return the blended probabilities ``(Z, X, Y, K)``.
    rotations : sequence of CubeRotation, optional
        Test-time augmentation: for each rotation the volume is rotated
        (:func:`keras_medseg.io.hdf5.rotate_volume`), predicted with the window rotated the
        same way, and the probabilities rotated back; the probabilities are the mean over
        the rotations (e.g. :func:`tta_rotations`). None: the volume as it is.

    Returns
    -------
    labels : ndarray uint8 ``(Z, X, Y)`` (and probabilities float32)

    Raises
    ------
    ValueError
        As :func:`keras_medseg.inference.sliding_window_inference` raises (bad window,
        overlap, batch size, or ``data`` that is not ``(Z, X, Y, M)``), for an empty
        ``rotations``, a window without 3 entries, or a rotation that is not proper.
    """
    from keras_medseg.inference import sliding_window_inference
    from keras_medseg.io.hdf5 import CubeRotation, rotate_volume

    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"data must be (Z, X, Y, modalities); got shape {data.shape}")
    window = tuple(window)

    def infer(volume, win):
        return sliding_window_inference(volume, model, window=win, overlap=overlap,
                                        blend=blend, batch_size=batch_size, progress=progress,
                                        pad_mode="edge")

    if rotations is None:
        probs = infer(data, window)
    else:
        rotations = [r if isinstance(r, CubeRotation) else CubeRotation(*r) for r in rotations]
        if not rotations:
            raise ValueError("rotations must list at least one rotation (or be None)")
        if len(window) != 3:
            raise ValueError(f"window must have 3 entries; got {window!r}")
        probs = None
        for rotation in rotations:
            p = rotate_volume(infer(rotate_volume(data, rotation),
                                    rotation.output_shape(window)), rotation, inverse=True)
            probs = p.astype(np.float64) if probs is None else probs + p
        probs = (probs / len(rotations)).astype(np.float32)
    labels = np.argmax(probs, axis=-1).astype(np.uint8)
    return (labels, probs) if return_probabilities else labels


def score_labels(truth, pred, *, spacing=None, labels=(1, 2, 3), class_names=CLASS_NAMES):
    """Per-class DSC and MHD / ASD in the ``surface`` and ``evalseg`` modes.

    Parameters
    ----------
    truth, pred : array_like of int, same 3D shape
        Label maps (0 background).
    spacing : sequence of 3 float, optional
        Voxel size in mm in array axis order; default 1 mm (distances in voxels).
    labels : sequence of int
        Classes to score.
    class_names : sequence of str
        One name per label.

    Returns
    -------
    list of dict
        One row per class: ``"class"`` and :data:`METRIC_COLUMNS` (floats; NaN where both
        masks are empty, inf distances where exactly one is, per the metrics module's rule).

    Raises
    ------
    ValueError
        If ``class_names`` and ``labels`` differ in length, and as the metrics module raises
        (shapes, spacing, labels).
    """
    from keras_medseg.metrics import compute_dice, compute_surface_metrics

    labels = list(labels)
    if len(class_names) != len(labels):
        raise ValueError(f"class_names must name every label; got {len(class_names)} names "
                         f"for labels {labels}")
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    dice = compute_dice(truth, pred, labels=labels, batched=False)[0]
    surface = compute_surface_metrics(truth, pred, labels=labels, spacing=spacing,
                                      mode="surface")
    evalseg = compute_surface_metrics(truth, pred, labels=labels, spacing=spacing,
                                      mode="evalseg")
    return [{"class": name, "DSC": float(dice[i]),
             "MHD_surface": float(surface["hd95"][i]), "ASD_surface": float(surface["asd"][i]),
             "MHD_evalseg": float(evalseg["hd95"][i]), "ASD_evalseg": float(evalseg["asd"][i])}
            for i, name in enumerate(class_names)]


def summarize_rows(rows, class_names=CLASS_NAMES):
    """Mean over subjects per class, and the mean over classes, of per-subject rows.

    Parameters
    ----------
    rows : list of dict
        Rows with ``"class"`` and :data:`METRIC_COLUMNS` (other keys ignored).

    Returns
    -------
    list of dict
        One row per class plus a ``"mean"`` row; ``"n"`` subjects. Means skip NaN values;
        an infinite distance makes its mean infinite.
    """
    out = []
    for name in class_names:
        sel = [r for r in rows if r["class"] == name]
        row = {"class": name, "n": len(sel)}
        for col in METRIC_COLUMNS:
            vals = np.array([r[col] for r in sel], dtype=np.float64)
            row[col] = float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else float("nan")
        out.append(row)
    mean = {"class": "mean", "n": out[0]["n"] if out else 0}
    for col in METRIC_COLUMNS:
        vals = np.array([r[col] for r in out], dtype=np.float64)
        mean[col] = float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else float("nan")
    out.append(mean)
    return out


_COLOURS = np.array([[0, 0, 0, 0], [0.2, 0.6, 1.0, 0.45], [1.0, 0.85, 0.1, 0.45],
                     [1.0, 0.2, 0.2, 0.45]], dtype=np.float32)


def overlay_figure(image, truth, pred, path, *, title=None):
    """Save a 2 x 3 figure: ground truth (top) and prediction (bottom) over the image, on the
    middle axial (axis 0), coronal (axis 1) and sagittal (axis 2) slices.

    Parameters
    ----------
    image : ndarray (Z, X, Y)
        Grey values (one modality).
    truth, pred : ndarray of int (Z, X, Y)
        Label maps 0-3 (CSF blue, GM yellow, WM red).
    path : path
        PNG written atomically.
    title : str, optional

    Returns
    -------
    Path
    """
    from keras_medseg.utils import new_figure, save_figure

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or np.shape(truth) != image.shape or np.shape(pred) != image.shape:
        raise ValueError(f"image, truth and pred must be 3D of one shape; got {image.shape}, "
                         f"{np.shape(truth)}, {np.shape(pred)}")
    lo, hi = np.percentile(image, [1, 99])
    mid = [n // 2 for n in image.shape]
    planes = (("axial", np.s_[mid[0], :, :]), ("coronal", np.s_[:, mid[1], :]),
              ("sagittal", np.s_[:, :, mid[2]]))
    fig = new_figure(figsize=(10, 6.6))
    for row, (name, lab) in enumerate((("ground truth", truth), ("prediction", pred))):
        lab = np.clip(np.asarray(lab).astype(np.int64), 0, 3)
        for col, (plane, sl) in enumerate(planes):
            ax = fig.add_subplot(2, 3, row * 3 + col + 1)
            ax.imshow(image[sl], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.imshow(_COLOURS[lab[sl]], interpolation="nearest")
            ax.set_title(f"{plane}: {name}", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(f"{title}  (CSF blue, GM yellow, WM red)", fontsize=9)
    return save_figure(fig, path)


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate_subjects` wrote and computed.

    Attributes
    ----------
    rows : list of dict
        Per subject and class: ``"subject"``, ``"class"`` and :data:`METRIC_COLUMNS`.
    summary : list of dict
        :func:`summarize_rows` of ``rows``.
    files : dict
        Name -> Path of every written file (tables, figures, label maps).
    """

    rows: list
    summary: list
    files: dict

    @property
    def mean_dsc(self):
        """Mean DSC over the classes (of the per-class means over subjects)."""
        return self.summary[-1]["DSC"]


def evaluate_subjects(model, files, out_dir, *, window=(64, 64, 64), overlap=0.5,
                      batch_size=4, spacing=None, blend="gaussian", figures=True,
                      save_predictions=True, progress=False, rotations=None):
    """Predict and score whole subjects; write the tables, figures and label maps.

    Parameters
    ----------
    model : keras.Model or callable
        Logits model (see :func:`predict_labels`).
    files : sequence of path
        Prepared HDF5 subjects with labels.
    out_dir : path
        Receives ``metrics_per_subject.csv/.md``, ``metrics_mean.csv/.md``,
        ``overlay_<subject>.png`` and (``save_predictions``) ``pred_<subject>.h5`` (the
        subject's data with the predicted ``label``).
    window, overlap, batch_size, blend, progress, rotations
        As for :func:`predict_labels` (``rotations``: test-time augmentation).
    spacing : sequence of 3 float, optional
        Voxel size in mm (default 1 mm, the iSeg volumes').
    figures : bool
        Write the overlay figures.
    save_predictions : bool

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        If ``files`` is empty or a file has no label; FileNotFoundError / Hdf5FormatError
        naming a missing or malformed file.
    """
    from keras_medseg.io.hdf5 import read_iseg_hdf5, write_iseg_hdf5
    from keras_medseg.utils import markdown_table, write_csv, write_text

    files = [Path(f) for f in files]
    if not files:
        raise ValueError("files must list at least one subject")
    out_dir = Path(out_dir)
    rows, written = [], {}
    for f in files:
        data, truth = read_iseg_hdf5(f)
        if truth is None:
            raise ValueError(f"{f}: no 'label' dataset; evaluation needs ground truth")
        pred = predict_labels(model, data, window=window, overlap=overlap,
                              batch_size=batch_size, blend=blend, progress=progress,
                              rotations=rotations)
        for row in score_labels(truth, pred, spacing=spacing):
            rows.append({"subject": f.stem, **row})
        if figures:
            written[f"overlay_{f.stem}"] = overlay_figure(
                data[..., 0], truth, pred, out_dir / f"overlay_{f.stem}.png", title=f.stem)
        if save_predictions:
            written[f"pred_{f.stem}"] = write_iseg_hdf5(out_dir / f"pred_{f.stem}.h5",
                                                        np.moveaxis(data, -1, 0), pred)
    summary = summarize_rows(rows)
    columns = ["subject", "class", *METRIC_COLUMNS]
    written["per_subject_csv"] = write_csv(out_dir / "metrics_per_subject.csv", rows, columns)
    written["per_subject_md"] = write_text(out_dir / "metrics_per_subject.md",
                                           markdown_table(rows, columns))
    mean_columns = ["class", "n", *METRIC_COLUMNS]
    written["mean_csv"] = write_csv(out_dir / "metrics_mean.csv", summary, mean_columns)
    written["mean_md"] = write_text(out_dir / "metrics_mean.md",
                                    markdown_table(summary, mean_columns))
    return EvaluationResult(rows=rows, summary=summary, files=written)
