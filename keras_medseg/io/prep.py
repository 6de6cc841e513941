"""Folder-level data preparation: the originals' preparation scripts as package functions.

The command-line scripts in ``data_prep/`` parse arguments and call these functions:

=====================================  ==================================================
function                               original script
=====================================  ==================================================
:func:`crop_frames`                    nerve ``cropLeftOnly-1080To512``
:func:`resize_images`                  nerve ``512-resize``
:func:`make_imagesets_from_folder`     nerve ``generateTxt`` (seeded here, optionally by video)
:func:`tfrecords_from_imagesets`       nerve TFRecord writer (driven by ``ImageSets``)
:func:`prepare_iseg_folder`            iseg ``prepare_hdf5_cutedge``
=====================================  ==================================================

All of them share one behaviour (:func:`check_output_location`, :func:`process_files`):

* the output folder may not be an input folder or lie inside one (``ValueError``), and no
  input file is ever written, renamed or deleted (the nerve original renamed every source
  image to ``*.done``);
* every output is written atomically (a hidden temporary file beside it, renamed when
  complete), so an interrupted run never leaves a half-written file that could pass as
  finished;
* re-running skips the outputs that already exist (``overwrite=True`` redoes them), so a
  second run with the same arguments writes nothing;
* a tqdm progress bar, and a :class:`PrepSummary` whose ``str`` is a one-line summary
  (what was written, what was skipped and where).

Errors about a file name the file: :class:`keras_medseg.io.images.ImageFileError`,
``FileNotFoundError``, :class:`keras_medseg.io.volumes.VolumeError` or a ``ValueError``
whose message starts with the path. :data:`PREP_ERRORS` is the tuple a command line catches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.io.images import (IMAGE_EXTENSIONS, ImageFileError, _check_size, _open_loaded,
                                    groups_from_names, list_images)
from keras_medseg.utils import atomic_path, write_json

__all__ = [
    "RAW_FRAME_HEIGHT", "CROP_RATIO", "CROP_BOX", "INTERPOLATIONS", "PREP_ERRORS",
    "PrepSummary", "check_output_location", "process_files", "crop_frame_1080_to_512",
    "resize_image", "crop_frames", "resize_images", "make_imagesets_from_folder",
    "tfrecords_from_imagesets", "find_iseg_subjects", "prepare_iseg_folder",
]

RAW_FRAME_HEIGHT = 1080
"""Height in pixels of the nerve original's raw camera frames (1920x1080)."""

CROP_RATIO = 1080 / 1608
"""``r`` of ``cropLeftOnly-1080To512``: the crop box was laid out on a 1608-pixel-high frame."""

CROP_BOX = (340 * CROP_RATIO, 0.0, 1608 * CROP_RATIO, 1608 * CROP_RATIO)
"""``(left, top, right, bottom)`` in pixels of a 1080-high frame: about
``(228.36, 0, 1080, 1080)``, an 851.64 x 1080 region (not square: the resize to 512x512
squeezes it horizontally, as in the original)."""

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
"""Resampling filters accepted by the image functions (use "nearest" for label masks)."""

PREP_ERRORS = (ValueError, OSError)
"""Exceptions a command line reports as ``error: <message>``: bad arguments and bad or
missing files (``ImageFileError``, ``VolumeError``, ``TFRecordError``, ``Hdf5FormatError``
are ValueErrors; ``FileNotFoundError``, ``FileExistsError`` are OSErrors)."""

_PIL_SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}


# ------------------------------------------------------------------------ shared behaviour
@dataclasses.dataclass
class PrepSummary:
    """What one preparation call did.

    Attributes
    ----------
    task : str
        Name used in the summary line (e.g. ``"crop_frames"``).
    out_dir : pathlib.Path
        Output folder.
    written : list of pathlib.Path
        Outputs written by this call.
    skipped : list of pathlib.Path
        Outputs that already existed (finished by an earlier run) and were left alone.
    """

    task: str
    out_dir: Path
    written: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    def __str__(self):
        text = f"{self.task}: wrote {len(self.written)}, skipped {len(self.skipped)}"
        if self.skipped:
            text += " already finished (pass --overwrite / overwrite=True to redo them)"
        return f"{text}; output in {self.out_dir}"


def _real(path):
    return Path(os.path.realpath(os.fspath(path)))


def run_prep(func, *args, **kwargs):
    """Run a prep function for a ``data_prep`` script: print its summary and return the exit
    code (0), or print ``error: ...`` to stderr and return 1 for :data:`PREP_ERRORS`."""
    import sys

    try:
        summary = func(*args, **kwargs)
    except PREP_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def check_output_location(out_dir, inputs, *, name="out_dir"):
    """Raise unless ``out_dir`` is outside every input folder.

    Parameters
    ----------
    out_dir : str or path-like
        Folder the outputs go to (need not exist).
    inputs : sequence of str or path-like
        Input folders (or files: a file's folder is used).
    name : str, optional
        Argument name used in the message.

    Returns
    -------
    pathlib.Path
        ``out_dir`` as given.

    Raises
    ------
    ValueError
        If ``out_dir`` is an input folder or lies inside one (symbolic links resolved);
        the message names both folders.
    """
    out = _real(out_dir)
    for inp in inputs:
        folder = _real(inp)
        if folder.is_file():
            folder = folder.parent
        if out == folder or folder in out.parents:
            where = "is" if out == folder else "lies inside"
            raise ValueError(f"{name} {os.fspath(out_dir)!r} {where} the input folder "
                             f"{os.fspath(inp)!r}; choose an output folder outside the inputs "
                             f"(inputs are never written to)")
    return Path(out_dir)


def _progress(iterable, *, desc, total=None, enabled=True):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file")


def process_files(jobs, work, *, task, out_dir, overwrite=False, progress=True):
    """Run ``work(source, tmp_target)`` for each ``(source, target)`` whose target is missing.

    Each target is written through :func:`keras_medseg.utils.atomic_path`: ``work`` writes
    a temporary file (same folder and suffix as the target), which replaces the target only
    when ``work`` returns, so a target that exists is always complete.

    Parameters
    ----------
    jobs : sequence of (source, target)
        ``target`` paths must be unique.
    work : callable
        ``work(source, tmp_path)`` writes one output to ``tmp_path``.
    task : str
        Name for the progress bar and the summary.
    out_dir : path-like
        Reported in the summary.
    overwrite : bool, optional
        Redo targets that exist.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    PrepSummary

    Raises
    ------
    ValueError
        If two jobs share a target (naming both sources). Errors of ``work`` propagate
        unchanged after the targets finished so far are kept.
    """
    jobs = [(s, Path(t)) for s, t in jobs]
    seen = {}
    for source, target in jobs:
        if target in seen:
            raise ValueError(f"{str(seen[target])!r} and {str(source)!r} would both be "
                             f"written to {str(target)!r}")
        seen[target] = source
    summary = PrepSummary(task, Path(out_dir))
    for source, target in _progress(jobs, desc=task, enabled=progress):
        if target.exists() and not overwrite:
            summary.skipped.append(target)
            continue
        with atomic_path(target) as tmp:
            work(source, tmp)
        summary.written.append(target)
    return summary


# ------------------------------------------------------------------------ image transforms
def _resample(interpolation):
    from PIL import Image

    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    return {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
            "lanczos": Image.LANCZOS}[interpolation]


def _check_side(size, name="size"):
    """``size`` as ``(height, width)``: an int gives a square."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    out = _check_size(size, name)
    if out is None:
        raise ValueError(f"{name} must be a positive integer or (height, width); got None")
    return out


def _as_pil(image, name="image"):
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8; got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(f"{name} must have shape (height, width), (height, width, 3) or "
                         f"(height, width, 4); got {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr))


def _crop_pil(im, size, resample):
    if im.height != RAW_FRAME_HEIGHT or im.width < CROP_BOX[2]:
        raise ValueError(f"frame is {im.height}x{im.width} (height x width); the "
                         f"cropLeftOnly-1080To512 box needs a frame {RAW_FRAME_HEIGHT} pixels "
                         f"high and at least {int(CROP_BOX[2])} wide (raw frames are 1920x1080)")
    # One resampling of the exact (sub-pixel) box: no rounding of 340 r to whole pixels.
    return im.resize((size[1], size[0]), resample, box=CROP_BOX)


def crop_frame_1080_to_512(image, *, size=512, interpolation="bilinear"):
    """Crop the surgical field of a raw 1920x1080 frame and resize it (``cropLeftOnly-1080To512``).

    With ``r = 1080 / 1608`` the crop box is ``(340 r, 0, 1608 r, 1608 r)`` =
    (228.36, 0, 1080, 1080) as (left, top, right, bottom) pixels (:data:`CROP_BOX`); it is
    resampled to ``size`` in one step at sub-pixel precision, so output pixel ``(i, j)``
    samples the frame at ``x = left + (j + 0.5) * (right - left) / width - 0.5``,
    ``y = top + (i + 0.5) * (bottom - top) / height - 0.5``.

    Parameters
    ----------
    image : array_like of uint8, shape (1080, W) or (1080, W, C), C in {1, 3, 4}
        A raw frame, ``W >= 1080`` (1920 for the original camera).
    size : int or (int, int), optional
        Output ``(height, width)``; an int gives a square (512 in the original).
    interpolation : {"nearest", "bilinear", "bicubic", "lanczos"}, optional
        Resampling filter; "nearest" for label masks.

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width) or (height, width, C)

    Raises
    ------
    ValueError
        If the frame is not uint8, has an unsupported shape, is not 1080 pixels high or
        is narrower than 1080, or for invalid options.

    Examples
    --------
    >>> frame = np.zeros((1080, 1920, 3), np.uint8)
    >>> crop_frame_1080_to_512(frame).shape
    (512, 512, 3)
    """
    size = _check_side(size)
    resample = _resample(interpolation)
    squeeze = np.asarray(image).ndim == 3 and np.asarray(image).shape[-1] == 1
    out = np.asarray(_crop_pil(_as_pil(image), size, resample))
    return out[..., None] if squeeze else out


def resize_image(image, *, size=512, interpolation="bilinear"):
    """Resize an image to ``size`` regardless of its aspect ratio (``512-resize``).

    Parameters
    ----------
    image : array_like of uint8, shape (h, w) or (h, w, C), C in {1, 3, 4}
    size : int or (int, int), optional
        Output ``(height, width)``; an int gives a square.
    interpolation : {"nearest", "bilinear", "bicubic", "lanczos"}, optional

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width) or (height, width, C)

    Raises
    ------
    ValueError
        For a non-uint8 image, an unsupported shape or invalid options.
    """
    size = _check_side(size)
    resample = _resample(interpolation)
    squeeze = np.asarray(image).ndim == 3 and np.asarray(image).shape[-1] == 1
    out = np.asarray(_as_pil(image).resize((size[1], size[0]), resample))
    return out[..., None] if squeeze else out


def _image_jobs(in_dir, out_dir, *, recursive, suffix):
    in_dir = Path(in_dir)
    paths = list_images(in_dir, recursive=recursive)
    if not paths:
        raise FileNotFoundError(f"no image (suffix in {list(IMAGE_EXTENSIONS)}) in "
                                f"{os.fspath(in_dir)!r}")
    if suffix is not None:
        suffix = suffix if suffix.startswith(".") else "." + suffix
        check_choice(suffix.lower(), tuple(_PIL_SUFFIX_FORMATS), name="suffix")
    jobs = []
    for p in paths:
        rel = Path(os.path.relpath(p, in_dir))
        if suffix is not None:
            rel = rel.with_suffix(suffix)
        jobs.append((Path(p), Path(out_dir) / rel))
    return jobs


def _transform_folder(in_dir, out_dir, transform, *, task, recursive, suffix, quality,
                      overwrite, progress):
    check_output_location(out_dir, [in_dir])
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
            or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100]; got {quality!r}")
    jobs = _image_jobs(in_dir, out_dir, recursive=recursive, suffix=suffix)

    def work(source, tmp):
        im = _open_loaded(source)
        try:
            try:
                out = transform(im)
            except ValueError as e:
                raise ImageFileError(f"{os.fspath(source)!r}: {e}", source) from e
        finally:
            im.close()
        fmt = _PIL_SUFFIX_FORMATS[Path(tmp).suffix.lower()]
        options = {}
        if fmt == "JPEG":
            options = {"quality": int(quality)}
            if out.mode not in ("L", "RGB", "CMYK"):
                out = out.convert("RGB")
        out.save(tmp, format=fmt, **options)

    return process_files(jobs, work, task=task, out_dir=out_dir, overwrite=overwrite,
                         progress=progress)


def crop_frames(in_dir, out_dir, *, size=512, interpolation="bilinear", recursive=False,
                suffix=None, quality=95, overwrite=False, progress=True):
    """Apply :func:`crop_frame_1080_to_512` to every image of a folder.

    Outputs keep the input file names (and, with ``recursive``, the sub-folders) under
    ``out_dir``; the image mode is kept (RGB stays RGB, a grey or palette mask stays so).

    Parameters
    ----------
    in_dir : str or path-like
        Folder of raw 1920x1080 frames (jpg, jpeg, png, bmp).
    out_dir : str or path-like
        Output folder, outside ``in_dir``.
    size : int or (int, int), optional
    interpolation : {"nearest", "bilinear", "bicubic", "lanczos"}, optional
        "nearest" for label masks.
    recursive : bool, optional
        Also process sub-folders, mirrored under ``out_dir``.
    suffix : {".jpg", ".jpeg", ".png", ".bmp"}, optional
        Output format; default: the input file's own suffix.
    quality : int, optional
        JPEG quality (1-100).
    overwrite : bool, optional
        Redo outputs that already exist.
    progress : bool, optional

    Returns
    -------
    PrepSummary

    Raises
    ------
    ValueError
        If ``out_dir`` is ``in_dir`` or inside it, or for invalid options.
    FileNotFoundError
        If ``in_dir`` does not exist or holds no image.
    ImageFileError
        Naming a corrupt frame or one that is not 1080 pixels high.
    """
    size = _check_side(size)
    resample = _resample(interpolation)
    return _transform_folder(in_dir, out_dir, lambda im: _crop_pil(im, size, resample),
                             task="crop_frames", recursive=recursive, suffix=suffix,
                             quality=quality, overwrite=overwrite, progress=progress)


def resize_images(in_dir, out_dir, size=512, *, interpolation="bilinear", recursive=False,
                  suffix=None, quality=95, overwrite=False, progress=True):
    """Resize every image of a folder to ``size`` (``512-resize``).

    Parameters and behaviour as :func:`crop_frames`, with :func:`resize_image` as the
    transform (any input size is accepted; the aspect ratio is not kept).

    Returns
    -------
    PrepSummary

    Raises
    ------
    ValueError
        If ``out_dir`` is ``in_dir`` or inside it, or for invalid options.
    FileNotFoundError
        If ``in_dir`` does not exist or holds no image.
    ImageFileError
        Naming a corrupt image.
    """
    size = _check_side(size)
    resample = _resample(interpolation)
    return _transform_folder(in_dir, out_dir,
                             lambda im: im.resize((size[1], size[0]), resample),
                             task="resize_images", recursive=recursive, suffix=suffix,
                             quality=quality, overwrite=overwrite, progress=progress)


# ------------------------------------------------------------------------------ ImageSets
def _image_names(image_dir):
    """Stems of the images of ``image_dir`` (sorted) and their paths."""
    paths = list_images(image_dir)
    if not paths:
        raise FileNotFoundError(f"no image (suffix in {list(IMAGE_EXTENSIONS)}) in "
                                f"{os.fspath(image_dir)!r}")
    by_stem = {}
    for p in paths:
        stem = Path(p).stem
        if stem in by_stem:
            raise ImageFileError(f"{by_stem[stem]!r} and {p!r} share the name {stem!r}; "
                                 f"ImageSets list names without suffix", by_stem[stem], p)
        by_stem[stem] = p
    return list(by_stem), list(by_stem.values())


def make_imagesets_from_folder(image_dir, out_dir, *, val_fraction=0.15, test_fraction=0.15,
                               seed=0, group_pattern=None, overwrite=False):
    """Seeded ``generateTxt``: split the images of a folder into ``out_dir/ImageSets/``.

    Names are the image file stems (sorted); the split is
    :func:`keras_medseg.io.splits.make_imagesets` (``train``, ``val``, ``trainval`` =
    train + val, ``test``), by group when ``group_pattern`` is given, so that e.g. all
    frames of one video land on the same side. ``ImageSets/imagesets.json`` records the
    settings and the side sizes (and the groups of each side).

    The files are made in a temporary folder first: when ``ImageSets/`` already holds the
    same files the call writes nothing (all skipped); when it holds different ones it
    raises unless ``overwrite``, then replaces them.

    Parameters
    ----------
    image_dir : str or path-like
        Folder of images (not searched recursively).
    out_dir : str or path-like
        Dataset folder receiving ``ImageSets/``; outside ``image_dir``.
    val_fraction, test_fraction : float, optional
        Fractions of the images (groups are whole); the defaults give the nerve UNet's
        7 : 1.5 : 1.5.
    seed : int, optional
    group_pattern : str, optional
        Regular expression giving each image's group from its file name
        (:func:`keras_medseg.io.images.groups_from_names`), e.g. ``r"^(v\\d+)_"``.
    overwrite : bool, optional
        Replace existing ImageSets files that differ.

    Returns
    -------
    PrepSummary

    Raises
    ------
    ValueError
        If ``out_dir`` lies in ``image_dir``, the pattern misses a file name (naming it),
        or for invalid fractions or too few images/groups.
    FileNotFoundError
        If ``image_dir`` holds no image.
    FileExistsError
        If ``ImageSets/`` holds different files and ``overwrite`` is False.
    ImageFileError
        If two images share a stem.
    """
    from keras_medseg.io.splits import IMAGESET_NAMES, make_imagesets, train_val_test_split

    check_output_location(out_dir, [image_dir])
    names, paths = _image_names(image_dir)
    groups = None if group_pattern is None else groups_from_names(paths, group_pattern)
    # Split once here first: bad fractions or too few groups fail before anything is made.
    split = train_val_test_split(len(names), val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed, groups=groups)
    record = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
              "group_pattern": group_pattern, "n_images": len(names),
              "counts": {k: int(len(getattr(split, k))) for k in IMAGESET_NAMES}}
    if groups is not None:
        record["groups"] = {k: sorted({groups[i] for i in getattr(split, k)})
                            for k in ("train", "val", "test")}
    folder = Path(out_dir) / "ImageSets"
    folder.mkdir(parents=True, exist_ok=True)
    summary = PrepSummary("make_imagesets", folder)
    tmp_root = Path(tempfile.mkdtemp(prefix=".imagesets-", dir=folder))
    try:
        made = make_imagesets(names, tmp_root, val_fraction=val_fraction,
                              test_fraction=test_fraction, seed=seed, groups=groups)
        made = dict(made)
        made["settings"] = write_json(tmp_root / "ImageSets" / "imagesets.json", record)
        pairs = [(src, folder / src.name) for src in made.values()]
        differing = [dst for src, dst in pairs
                     if not (dst.is_file() and filecmp.cmp(src, dst, shallow=False))]
        existing = [dst for dst in differing if dst.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{str(existing[0])!r} already exists with different contents "
                                  f"(made from other images or settings); pass --overwrite / "
                                  f"overwrite=True to replace the ImageSets files")
        for src, dst in pairs:
            if dst in differing:
                os.replace(src, dst)
                summary.written.append(dst)
            else:
                summary.skipped.append(dst)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return summary


# ------------------------------------------------------------------------------ TFRecords
def _imagesets_folder(imagesets):
    p = Path(imagesets)
    if p.is_file():
        return p.parent
    if p.name == "ImageSets":
        return p
    return p / "ImageSets"


def _file_stamp(path):
    st = os.stat(path)
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def tfrecords_from_imagesets(image_dir, mask_dir, imagesets, out_dir, *,
                             splits=("trainval", "test"), encoding="raw", records_per_shard=None,
                             size=None, mask_channel=0, overwrite=False, progress=True):
    """Write ``out_dir/<split>.tfrecords`` for each ImageSets split (the nerve TFRecord script).

    Each split's names are read from ``ImageSets/<split>.txt`` and written with
    :func:`keras_medseg.io.tfrecord.write_tfrecords` (the original's keys; raw or PNG
    bytes; sharded when ``records_per_shard`` is set). Beside each output a manifest
    ``<split>.tfrecords.json`` records the request (names, options, size and modification
    time of every source file) and the files written; a split whose manifest matches the
    request and whose files all exist is skipped. The manifest is removed before and
    written after the records, so a run interrupted in between is redone.

    Parameters
    ----------
    image_dir, mask_dir : str or path-like
        Images and masks (e.g. a Supervisely export's ``img/`` and ``masks_machine/``).
    imagesets : str or path-like
        The dataset folder holding ``ImageSets/``, the ``ImageSets`` folder itself, or one
        list file (then every split is read from that file's folder).
    out_dir : str or path-like
        Output folder; outside ``image_dir``, ``mask_dir`` and the ImageSets folder.
    splits : sequence of str, optional
        ImageSets files to convert (the original: ``trainval`` and ``test``).
    encoding : {"raw", "png"}, optional
    records_per_shard : int, optional
    size : (int, int), optional
        Resize before writing (bilinear images, nearest masks).
    mask_channel : int, optional
        Channel holding the class index in RGB masks (0 for Supervisely).
    overwrite : bool, optional
        Rewrite splits whose manifest matches.
    progress : bool, optional

    Returns
    -------
    PrepSummary
        ``written`` / ``skipped`` list the record files.

    Raises
    ------
    ValueError
        If ``out_dir`` lies in an input folder, a split list is empty (naming it), or for
        invalid options.
    FileNotFoundError
        For a missing list file, image or mask (naming it).
    ImageFileError
        For a corrupt file or an image/mask size mismatch (naming them).
    """
    from keras_medseg.io.splits import read_imageset
    from keras_medseg.io.tfrecord import ENCODINGS, _folder_index, _resolve, write_tfrecords

    sets_dir = _imagesets_folder(imagesets)
    check_output_location(out_dir, [image_dir, mask_dir, sets_dir])
    check_choice(encoding, ENCODINGS, name="encoding")
    if isinstance(splits, str) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of split names; got {splits!r}")
    size = _check_size(size)
    for folder, what in ((image_dir, "image_dir"), (mask_dir, "mask_dir")):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} {os.fspath(folder)!r} is not a directory")
    out_dir = Path(out_dir)
    summary = PrepSummary("images_to_tfrecord", out_dir)
    image_index = _folder_index(image_dir, IMAGE_EXTENSIONS)
    mask_index = _folder_index(mask_dir, IMAGE_EXTENSIONS)
    for split in dict.fromkeys(splits):
        list_file = sets_dir / f"{split}.txt"
        names = read_imageset(list_file, split)
        if not names:
            raise ValueError(f"{str(list_file)!r} lists no image; nothing to write for split "
                             f"{split!r}")
        sources = [[_file_stamp(_resolve(image_index, image_dir, n, IMAGE_EXTENSIONS, "image")),
                    _file_stamp(_resolve(mask_index, mask_dir, n, IMAGE_EXTENSIONS, "mask"))]
                   for n in names]
        request = {"names": names, "encoding": encoding, "records_per_shard": records_per_shard,
                   "size": None if size is None else list(size), "mask_channel": mask_channel,
                   "sources_sha256": hashlib.sha256(
                       json.dumps(sources).encode("utf-8")).hexdigest()}
        target = out_dir / f"{split}.tfrecords"
        manifest = out_dir / f"{split}.tfrecords.json"
        done = _read_manifest(manifest)
        if not overwrite and done is not None and done.get("request") == request \
                and all((out_dir / f).is_file() for f in done.get("files", ["?"])):
            summary.skipped.extend(out_dir / f for f in done["files"])
            continue
        with contextlib.suppress(FileNotFoundError):
            manifest.unlink()
        files = write_tfrecords(image_dir, mask_dir, names, target, encoding=encoding,
                                records_per_shard=records_per_shard, size=size,
                                mask_channel=mask_channel, progress=progress)
        write_json(manifest, {"request": request, "files": [f.name for f in files],
                              "records": len(names)})
        summary.written.extend(files)
    return summary


def _read_manifest(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- iSeg HDF5
_ISEG_SUFFIXES = (".hdr", ".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
_ISEG_T1 = re.compile(r"^subject-(\d+)-T1(" + "|".join(re.escape(s) for s in _ISEG_SUFFIXES)
                      + r")$")


def find_iseg_subjects(in_dir):
    """The iSeg subjects of a folder: ``subject-<i>-T1``, ``-T2`` and optional ``-label``.

    Parameters
    ----------
    in_dir : str or path-like
        Folder of ``subject-<i>-{T1,T2,label}.hdr/.img`` (Analyze, as distributed) or the
        same names with ``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``.

    Returns
    -------
    list of dict
        Sorted by subject number: ``{"id": int, "T1": Path, "T2": Path, "label": Path or
        None}`` (test subjects have no label).

    Raises
    ------
    FileNotFoundError
        If ``in_dir`` is not a folder, holds no ``subject-<i>-T1`` file, or a subject's T2
        is missing (naming the file expected).
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"iSeg folder {os.fspath(in_dir)!r} does not exist or is not a "
                                f"directory")
    subjects = []
    for entry in sorted(os.scandir(in_dir), key=lambda e: e.name):
        m = _ISEG_T1.match(entry.name)
        if m is None or not entry.is_file():
            continue
        number, suffix = int(m.group(1)), m.group(2)
        stem = f"subject-{m.group(1)}"
        t2 = in_dir / f"{stem}-T2{suffix}"
        if not t2.is_file():
            raise FileNotFoundError(f"{str(t2)!r} is missing (subject {number} has "
                                    f"{entry.name!r})")
        label = in_dir / f"{stem}-label{suffix}"
        subjects.append({"id": number, "T1": Path(entry.path), "T2": t2,
                         "label": label if label.is_file() else None})
    if not subjects:
        raise FileNotFoundError(f"no subject-<i>-T1 volume ({', '.join(_ISEG_SUFFIXES)}) in "
                                f"{os.fspath(in_dir)!r}")
    numbers = [s["id"] for s in subjects]
    if len(set(numbers)) != len(numbers):
        dup = next(n for i, n in enumerate(numbers) if n in numbers[:i])
        raise ValueError(f"{os.fspath(in_dir)!r} holds subject {dup} in more than one format")
    return sorted(subjects, key=lambda s: s["id"])


def prepare_iseg_folder(in_dir, out_dir, margin=32, *, leading_axes=False, overwrite=False,
                        progress=True):
    """``prepare_hdf5_cutedge`` over a folder: ``subject-<i>-T1/-T2/-label`` -> ``subject-<i>.h5``.

    Each subject is read with :func:`keras_medseg.io.volumes.read_volume`, put in the
    original's ``(Z, X, Y)`` axis order (``transpose(0, 2, 1)`` of the ``(z, y, x)`` array),
    normalised and cropped by :func:`keras_medseg.io.hdf5.prepare_hdf5_cutedge` (z-score of
    T1 and T2 inside the mask ``T1 > 0``, bounding box of the mask +- ``margin``, labels
    {0, 10, 150, 250} -> {0, 1, 2, 3}) and written by
    :func:`keras_medseg.io.hdf5.write_iseg_hdf5` (keys ``data`` float32 (2, Z, X, Y) and,
    for labelled subjects, ``label`` uint8 (Z, X, Y)).

    Parameters
    ----------
    in_dir : str or path-like
        See :func:`find_iseg_subjects`.
    out_dir : str or path-like
        Output folder, outside ``in_dir``.
    margin : int, optional
        Voxels kept around the mask's bounding box (32 in the original).
    leading_axes : bool, optional
        Store the original's caffe layout ``(1, 2, Z, X, Y)`` / ``(1, 1, Z, X, Y)``.
    overwrite : bool, optional
        Redo subjects whose file exists.
    progress : bool, optional

    Returns
    -------
    PrepSummary

    Raises
    ------
    ValueError
        If ``out_dir`` lies in ``in_dir`` or ``margin`` is negative; and, with the subject's
        files named, for volumes of different shapes, an empty mask, a modality constant
        inside the mask or label values outside {0, 10, 150, 250}.
    FileNotFoundError, VolumeError
        For missing or unreadable volumes (naming the file).
    """
    from keras_medseg.io.hdf5 import prepare_hdf5_cutedge, write_iseg_hdf5
    from keras_medseg.io.volumes import read_volume

    check_output_location(out_dir, [in_dir])
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer; got {margin!r}")
    subjects = find_iseg_subjects(in_dir)
    jobs = [(s, Path(out_dir) / f"subject-{s['id']}.h5") for s in subjects]

    def work(subject, tmp):
        roles = [r for r in ("T1", "T2", "label") if subject[r] is not None]
        arrays = {r: np.transpose(read_volume(subject[r], ndim=3).array, (0, 2, 1))
                  for r in roles}
        shapes = {r: a.shape for r, a in arrays.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError("; ".join(f"{str(subject[r])!r} has shape {shapes[r]}" for r in roles)
                             + " (T1, T2 and label must have one shape)")
        try:
            prepared = prepare_hdf5_cutedge(arrays["T1"], arrays["T2"], arrays.get("label"),
                                            margin=int(margin))
        except ValueError as e:
            names = ", ".join(repr(str(subject[r])) for r in roles)
            raise ValueError(f"subject {subject['id']} ({names}): {e}") from e
        write_iseg_hdf5(tmp, prepared.data, prepared.label, leading_axes=leading_axes)

    return process_files(jobs, work, task="prepare_hdf5_cutedge", out_dir=out_dir,
                         overwrite=overwrite, progress=progress)
