"""2D images on disk: class folders, Supervisely exports, image/mask pairs, streaming pipelines.

Conventions used throughout this module:

* Images are channels-last ``(height, width, 3)`` RGB. Numpy readers return ``uint8``;
  ``tf.data`` pipelines return ``float32`` in ``[0, 255]`` (the value range Keras'
  ``image_dataset_from_directory`` yields; the model's ``preprocess_input`` rescales).
* Masks are class-index maps ``(height, width)`` (numpy) or ``(height, width, 1)``
  (pipelines), ``uint8``. They are only ever resized with nearest-neighbour interpolation,
  so no new label values appear.
* Sizes are ``(height, width)`` in pixels.
* Nothing here writes to or renames an input file.

Pipelines are built from *path lists* and decode files lazily, so a dataset never has to fit
in memory; listing functions return plain Python lists that can be split
(:mod:`keras_medseg.io.splits`) before the pipeline is built.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_medseg._checks import check_choice, check_nd, check_positive

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File suffixes (compared case-insensitively) that the listing functions treat as images."""

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFileError", "LabeledPaths", "list_class_folders",
    "list_images", "pair_images_masks", "read_supervisely", "check_pair_sizes",
    "read_image", "read_mask", "validate_images", "groups_from_names",
    "classification_dataset", "segmentation_dataset", "random_flip_left_right",
    "minmax_to_uint8", "slice_to_rgb", "mean_intensity", "is_near_black", "filter_near_black",
]


class ImageFileError(ValueError):
    """An image or mask file is unreadable, truncated, missing its partner or inconsistent.

    The message names the file(s); ``paths`` holds them as a tuple of strings.
    """

    def __init__(self, message, *paths):
        super().__init__(message)
        self.paths = tuple(str(p) for p in paths)


class LabeledPaths(NamedTuple):
    """Result of :func:`list_class_folders`.

    Attributes
    ----------
    paths : list of str
        Image files, grouped by class in ``class_names`` order, sorted within a class.
    labels : numpy.ndarray of int32, shape (n,)
        Class index of each path (position in ``class_names``).
    class_names : list of str
        Sorted sub-folder names.
    """

    paths: list
    labels: np.ndarray
    class_names: list


# ------------------------------------------------------------------------------- listing
def _is_image(name, extensions):
    return name.lower().endswith(extensions)


def _check_extensions(extensions):
    if isinstance(extensions, str) or not extensions:
        raise ValueError(f"extensions must be a non-empty sequence of suffixes such as "
                         f"('.jpg', '.png'); got {extensions!r}")
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def list_images(folder, *, extensions=IMAGE_EXTENSIONS, recursive=False):
    """Sorted paths of the image files in ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Folder to list.
    extensions : sequence of str, optional
        Suffixes accepted, case-insensitively (``.JPG`` matches ``.jpg``).
    recursive : bool, optional
        Also list sub-folders (hidden ones, starting with ``.``, are skipped).

    Returns
    -------
    list of str
        Sorted file paths (sorted by their path relative to ``folder``).

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a directory")
    extensions = _check_extensions(extensions)
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(os.path.join(root, f) for f in files
                         if _is_image(f, extensions) and not f.startswith("."))
    else:
        found = [str(p) for p in folder.iterdir()
                 if p.is_file() and _is_image(p.name, extensions) and not p.name.startswith(".")]
    return sorted(found, key=lambda p: os.path.relpath(p, folder))


def list_class_folders(root, *, extensions=IMAGE_EXTENSIONS, allow_empty=False):
    """List a class-per-folder dataset (``root/<class>/<image>``).

    Classes are the sorted names of the sub-folders of ``root`` (hidden folders skipped), the
    order Keras' ``image_dataset_from_directory`` uses, so the nerve classes come out as
    0 = nerve, 1 = opening wound, 2 = tendon. Images inside a class folder are found
    recursively.

    Parameters
    ----------
    root : str or path-like
        Dataset folder.
    extensions : sequence of str, optional
        Image suffixes, compared case-insensitively.
    allow_empty : bool, optional
        Keep a class folder that holds no image (its class index is kept). By default an
        empty class folder raises, since it usually means a wrong folder or extension.

    Returns
    -------
    LabeledPaths
        ``(paths, labels, class_names)``.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a directory.
    ImageFileError
        If ``root`` has no class sub-folder, or a class folder holds no image (unless
        ``allow_empty``); the message names the folder.

    Examples
    --------
    >>> paths, labels, class_names = list_class_folders("train")  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist or is not a directory")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise ImageFileError(f"dataset folder {str(root)!r} has no class sub-folders "
                             f"(expected root/<class>/<image>)", root)
    paths, labels = [], []
    for index, name in enumerate(class_names):
        files = list_images(root / name, extensions=extensions, recursive=True)
        if not files and not allow_empty:
            raise ImageFileError(
                f"class folder {str(root / name)!r} holds no image with a suffix in "
                f"{list(_check_extensions(extensions))}; remove it or pass allow_empty=True",
                root / name)
        paths.extend(files)
        labels.extend([index] * len(files))
    return LabeledPaths(paths, np.asarray(labels, dtype=np.int32), class_names)


def _stem_key(name, extensions):
    """File name without its image suffixes: ``a.jpg.png`` and ``a.png`` both give ``a``."""
    stem = name
    while True:
        base, ext = os.path.splitext(stem)
        if ext and ext.lower() in extensions:
            stem = base
        else:
            return stem


def pair_images_masks(image_dir, mask_dir, *, extensions=IMAGE_EXTENSIONS,
                      unmatched_masks="ignore", check_sizes=False):
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by file stem.

    ``img/frame_01.jpg`` pairs with ``mask/frame_01.png``; a Supervisely-style mask name
    that repeats the image suffix (``frame_01.jpg.png``) pairs as well.

    Parameters
    ----------
    image_dir, mask_dir : str or path-like
        Folders holding the images and the masks.
    extensions : sequence of str, optional
        Suffixes accepted for both, case-insensitively.
    unmatched_masks : {"ignore", "raise"}, optional
        What to do with a mask that has no image.
    check_sizes : bool, optional
        Also read each file's header and raise on an image/mask size mismatch (see
        :func:`check_pair_sizes`).

    Returns
    -------
    image_paths, mask_paths : list of str
        Paired paths, in sorted image order.

    Raises
    ------
    ImageFileError
        For an image without a mask (naming the image and the mask folder), for two files
        with the same stem in one folder, for a mask without an image when
        ``unmatched_masks="raise"``, and for a size mismatch when ``check_sizes``.
    """
    check_choice(unmatched_masks, ("ignore", "raise"), name="unmatched_masks")
    exts = _check_extensions(extensions)
    images = list_images(image_dir, extensions=exts)
    masks = list_images(mask_dir, extensions=exts)

    def index(paths):
        out = {}
        for p in paths:
            key = _stem_key(os.path.basename(p), exts)
            if key in out:
                raise ImageFileError(f"two files share the stem {key!r}: {out[key]!r} and {p!r}",
                                     out[key], p)
            out[key] = p
        return out

    image_by_key, mask_by_key = index(images), index(masks)
    image_paths, mask_paths = [], []
    for key, image_path in image_by_key.items():
        if key not in mask_by_key:
            raise ImageFileError(f"image {image_path!r} has no mask named {key!r}.<ext> in "
                                 f"{str(mask_dir)!r}", image_path)
        image_paths.append(image_path)
        mask_paths.append(mask_by_key[key])
    if unmatched_masks == "raise":
        extra = sorted(set(mask_by_key) - set(image_by_key))
        if extra:
            raise ImageFileError(f"mask {mask_by_key[extra[0]]!r} has no image in "
                                 f"{str(image_dir)!r} ({len(extra)} unmatched masks)",
                                 mask_by_key[extra[0]])
    if check_sizes:
        check_pair_sizes(image_paths, mask_paths)
    return image_paths, mask_paths


def read_supervisely(root, *, check_sizes=True):
    """Image and mask paths of a Supervisely export.

    Supervisely exports one folder per dataset holding ``img/`` (the frames) and
    ``masks_machine/`` (one PNG per frame whose red channel holds the class index, 0/1 for
    the nerve masks). ``ann/`` (JSON) and ``masks_human/`` (colour previews) are ignored.
    ``root`` may be such a dataset folder or a project folder holding several of them
    (``root/<dataset>/img``); datasets are then concatenated in sorted order.
    Read the masks with :func:`read_mask` (``channel=0``) or :func:`segmentation_dataset`
    (``mask_channel=0``, the default).

    Parameters
    ----------
    root : str or path-like
        Dataset or project folder.
    check_sizes : bool, optional
        Read each image's and mask's header and raise on a size mismatch.

    Returns
    -------
    image_paths, mask_paths : list of str

    Raises
    ------
    FileNotFoundError
        If ``root`` holds neither ``img/`` + ``masks_machine/`` nor dataset folders with them.
    ImageFileError
        For an image without a mask, or an image/mask size mismatch (naming both files).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Supervisely folder {str(root)!r} does not exist")
    if (root / "img").is_dir():
        datasets = [root]
    else:
        datasets = sorted(p for p in root.iterdir() if (p / "img").is_dir())
    if not datasets:
        raise FileNotFoundError(f"{str(root)!r} is not a Supervisely export: no 'img/' folder in "
                                f"it or in its sub-folders")
    image_paths, mask_paths = [], []
    for ds in datasets:
        if not (ds / "masks_machine").is_dir():
            raise FileNotFoundError(f"Supervisely dataset {str(ds)!r} has 'img/' but no "
                                    f"'masks_machine/' folder (export with machine masks)")
        imgs, masks = pair_images_masks(ds / "img", ds / "masks_machine", check_sizes=check_sizes)
        image_paths.extend(imgs)
        mask_paths.extend(masks)
    return image_paths, mask_paths


def check_pair_sizes(image_paths, mask_paths):
    """Raise unless every image has the same (height, width) as its mask.

    Only the file headers are read.

    Raises
    ------
    ValueError
        If the two lists differ in length.
    ImageFileError
        Naming both files and both sizes at the first mismatch, or naming a file whose
        header cannot be read.
    """
    from PIL import Image

    if len(image_paths) != len(mask_paths):
        raise ValueError(f"image_paths and mask_paths must have the same length; got "
                         f"{len(image_paths)} and {len(mask_paths)}")
    for image_path, mask_path in zip(image_paths, mask_paths):
        sizes = []
        for p in (image_path, mask_path):
            try:
                with Image.open(p) as im:
                    sizes.append(im.size)  # (width, height)
            except (OSError, SyntaxError, ValueError) as e:
                raise ImageFileError(f"cannot read the header of {str(p)!r}: {e}", p) from e
        if sizes[0] != sizes[1]:
            (iw, ih), (mw, mh) = sizes
            raise ImageFileError(
                f"image/mask size mismatch: image {str(image_path)!r} is {ih}x{iw} (HxW) but "
                f"mask {str(mask_path)!r} is {mh}x{mw}", image_path, mask_path)


def groups_from_names(paths, pattern):
    """Group label of each file, extracted from its base name with a regular expression.

    Used to split by video (frames ``video03_0012.jpg``), volume, series or neuron so that
    no group falls on two sides of a split (:mod:`keras_medseg.io.splits`).

    Parameters
    ----------
    paths : sequence of str or path-like
    pattern : str or compiled regex
        Searched (``re.search``) in each base name. The group is the named group ``group``
        when the pattern has one, else the first capture group, else the whole match.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        Naming the first file whose name the pattern does not match.

    Examples
    --------
    >>> groups_from_names(["v1_000.jpg", "v1_001.jpg", "v2_000.jpg"], r"^(v\\d+)_")
    ['v1', 'v1', 'v2']
    """
    regex = re.compile(pattern)
    out = []
    for p in paths:
        name = os.path.basename(os.fspath(p))
        m = regex.search(name)
        if m is None:
            raise ValueError(f"pattern {regex.pattern!r} does not match the file name of {str(p)!r}")
        if "group" in regex.groupindex:
            out.append(m.group("group"))
        elif regex.groups:
            out.append(m.group(1))
        else:
            out.append(m.group(0))
    return out


# ------------------------------------------------------------------------- numpy readers
def _check_size(size, name="size"):
    if size is None:
        return None
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width); got {size!r}") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise ValueError(f"{name} must be two positive integers (height, width); got {size!r}")
    return h, w


def _open_loaded(path):
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} does not exist")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"cannot decode image {path!r} (truncated or corrupt?): {e}",
                             path) from e
    return im


def read_image(path, *, size=None):
    """Read one image as an RGB ``uint8`` array.

    Grey-scale, palette and RGBA images are converted to RGB (alpha dropped).

    Parameters
    ----------
    path : str or path-like
    size : (int, int), optional
        Resize to ``(height, width)`` with bilinear interpolation.

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width, 3)

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageFileError
        If the file is truncated or corrupt (naming it).
    """
    from PIL import Image

    size = _check_size(size)
    im = _open_loaded(path)
    try:
        if im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None and (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()
    finally:
        im.close()


def read_mask(path, *, channel=0, size=None):
    """Read a label mask as a ``uint8`` class-index array.

    Grey-scale (``L``), 1-bit and palette (``P``: the palette *indices* are the labels)
    images are read as they are; for RGB(A) images the labels are taken from ``channel``
    (0 = red, where Supervisely's ``masks_machine`` store the class index).

    Parameters
    ----------
    path : str or path-like
    channel : int, optional
        Channel holding the labels in a multi-channel mask.
    size : (int, int), optional
        Resize to ``(height, width)`` with nearest-neighbour interpolation.

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width)

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageFileError
        If the file is truncated, corrupt, has an unsupported mode (e.g. 16-bit) or fewer
        channels than ``channel + 1``.
    """
    from PIL import Image

    size = _check_size(size)
    im = _open_loaded(path)
    try:
        if im.mode in ("L", "P"):
            arr = np.asarray(im, dtype=np.uint8)
        elif im.mode == "1":
            arr = np.asarray(im).astype(np.uint8)
        elif im.mode in ("RGB", "RGBA", "LA"):
            full = np.asarray(im, dtype=np.uint8)
            if channel >= full.shape[-1] or channel < 0:
                raise ImageFileError(f"mask {str(path)!r} has {full.shape[-1]} channels; "
                                     f"channel={channel} is out of range", path)
            arr = full[..., channel]
        else:
            raise ImageFileError(f"mask {str(path)!r} has unsupported image mode {im.mode!r} "
                                 f"(expected 8-bit L, P, RGB or RGBA)", path)
    finally:
        im.close()
    if size is not None and arr.shape != size:
        arr = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.NEAREST))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def validate_images(paths):
    """Fully decode every file once and raise at the first unreadable one.

    ``tf.data`` decoding errors do not say which file failed; run this once over a new
    dataset (it holds one image in memory at a time) to find it.

    Returns
    -------
    int
        Number of files checked.

    Raises
    ------
    FileNotFoundError, ImageFileError
        Naming the first missing, truncated or corrupt file.
    """
    n = 0
    for p in paths:
        _open_loaded(p).close()
        n += 1
    return n


# ---------------------------------------------------------------------- tf.data pipelines
def _decode_rgb(path):
    import tensorflow as tf

    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def _decode_mask(path, channel):
    import tensorflow as tf

    data = tf.io.read_file(path)
    full = tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8)
    index = tf.minimum(channel, tf.shape(full)[-1] - 1)
    mask = tf.gather(full, [index], axis=-1)
    mask.set_shape([None, None, 1])
    return mask


def _seed_stream(seed):
    """A dataset of shape-[2] int64 seeds, different on every pass, reproducible from ``seed``."""
    import tensorflow as tf

    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _finish(ds, *, batch_size, drop_remainder, prefetch):
    import tensorflow as tf

    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def _check_pipeline_args(batch_size, shuffle_buffer, cache):
    if batch_size is not None:
        check_positive(batch_size, name="batch_size")
        if int(batch_size) != batch_size:
            raise ValueError(f"batch_size must be an integer; got {batch_size!r}")
    if shuffle_buffer is not None:
        check_positive(shuffle_buffer, name="shuffle_buffer")
    if not (cache is False or cache is True or isinstance(cache, (str, os.PathLike))):
        raise ValueError(f"cache must be False, True (memory) or a file path; got {cache!r}")


def _as_path_list(paths, name):
    if isinstance(paths, (str, os.PathLike)):
        raise ValueError(f"{name} must be a sequence of file paths, not a single path {paths!r}")
    out = [os.fspath(p) for p in paths]
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def classification_dataset(paths, labels, *, image_size=(224, 224), batch_size=32,
                           shuffle=False, seed=None, shuffle_buffer=None, cache=False,
                           augment=None, drop_remainder=False, prefetch=True,
                           interpolation="bilinear"):
    """Streaming ``tf.data`` pipeline of (image, label) batches read from image files.

    Order of operations: [shuffle paths] -> read + decode (RGB) + resize -> [cache ->
    shuffle] -> [augment] -> batch -> prefetch. Without ``cache`` the *path list* is shuffled
    (cheap, whole list); with ``cache`` decoded images are cached and shuffled after the
    cache with ``shuffle_buffer`` elements. Augmentation always runs after the cache, so it
    differs from epoch to epoch.

    Parameters
    ----------
    paths : sequence of str
        Image files (jpg, png, bmp, gif).
    labels : sequence of int, shape (n,)
        Class index per file.
    image_size : (int, int) or None, optional
        ``(height, width)`` to resize to; None keeps the files' size (they must then all
        match to be batched).
    batch_size : int or None, optional
        None yields single elements.
    shuffle : bool, optional
        Reshuffle every epoch.
    seed : int, optional
        Seed of the shuffle and of the augmentation seeds; the same seed gives the same
        sequence of epochs.
    shuffle_buffer : int, optional
        Buffer of the post-cache shuffle (default: the number of files).
    cache : bool or str, optional
        True caches decoded images in memory, a path caches them in that file.
    augment : callable, optional
        ``augment(image, seed) -> image`` with ``image`` float32 ``(h, w, 3)`` and ``seed``
        an int64 tensor of shape (2,) for ``tf.image.stateless_*`` ops.
    drop_remainder : bool, optional
    prefetch : bool, optional
    interpolation : str, optional
        ``tf.image.resize`` method for images.

    Returns
    -------
    tf.data.Dataset
        Elements ``(images, labels)``: float32 ``(batch, h, w, 3)`` in [0, 255] and int32
        ``(batch,)``.

    Raises
    ------
    ValueError
        For mismatched ``paths``/``labels`` lengths, an empty list or invalid options.
    """
    import tensorflow as tf

    paths = _as_path_list(paths, "paths")
    labels = np.asarray(labels)
    if labels.shape != (len(paths),):
        raise ValueError(f"labels must have shape ({len(paths)},) to match paths; got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    image_size = _check_size(image_size, "image_size")
    _check_pipeline_args(batch_size, shuffle_buffer, cache)

    def load(path, label):
        image = _decode_rgb(path)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method=interpolation)
        else:
            image = tf.cast(image, tf.float32)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels.astype(np.int32)))
    if shuffle and not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache("" if cache is True else os.fspath(cache))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer or len(paths), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        ds = tf.data.Dataset.zip((ds, _seed_stream(seed)))
        ds = ds.map(lambda el, s: (augment(el[0], s), el[1]), num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, batch_size=batch_size, drop_remainder=drop_remainder, prefetch=prefetch)


def segmentation_dataset(image_paths, mask_paths, *, image_size=(224, 224), batch_size=8,
                         shuffle=False, seed=None, shuffle_buffer=None, cache=False,
                         augment=None, mask_channel=0, mask_mode="index",
                         drop_remainder=False, prefetch=True, interpolation="bilinear"):
    """Streaming ``tf.data`` pipeline of (image, mask) batches read from image/mask files.

    Same order of operations as :func:`classification_dataset`. Images are resized with
    ``interpolation`` (bilinear), masks always with nearest neighbour, so a mask keeps its
    label values. ``augment`` runs after the cache and is fed a fresh seed every epoch, so
    augmentation stays random (the original cached after its random flip, which froze it).

    Parameters
    ----------
    image_paths, mask_paths : sequence of str
        Paired files (see :func:`pair_images_masks`, :func:`read_supervisely`).
    image_size : (int, int) or None, optional
        ``(height, width)`` for both image and mask.
    batch_size, shuffle, seed, shuffle_buffer, cache, drop_remainder, prefetch, interpolation
        As in :func:`classification_dataset`.
    augment : callable, optional
        ``augment(image, mask, seed) -> (image, mask)``; image float32 ``(h, w, 3)``, mask
        uint8 ``(h, w, 1)``, ``seed`` int64 shape (2,). See :func:`random_flip_left_right`.
    mask_channel : int, optional
        Channel holding the labels in RGB masks (0 = red, Supervisely); a one-channel mask
        uses its only channel. Palette PNGs are expanded to RGB by TensorFlow, so store
        masks as grey-scale or RGB.
    mask_mode : {"index", "binary"}, optional
        "index" keeps the stored values; "binary" maps every non-zero value to 1 (for 0/255
        masks).

    Returns
    -------
    tf.data.Dataset
        Elements ``(images, masks)``: float32 ``(batch, h, w, 3)`` in [0, 255] and uint8
        ``(batch, h, w, 1)``.

    Raises
    ------
    ValueError
        For mismatched list lengths, an empty list or invalid options.
    """
    import tensorflow as tf

    image_paths = _as_path_list(image_paths, "image_paths")
    mask_paths = _as_path_list(mask_paths, "mask_paths")
    if len(image_paths) != len(mask_paths):
        raise ValueError(f"image_paths and mask_paths must have the same length; got "
                         f"{len(image_paths)} and {len(mask_paths)}")
    image_size = _check_size(image_size, "image_size")
    check_choice(mask_mode, ("index", "binary"), name="mask_mode")
    if not isinstance(mask_channel, int) or isinstance(mask_channel, bool) or mask_channel < 0:
        raise ValueError(f"mask_channel must be a non-negative integer; got {mask_channel!r}")
    _check_pipeline_args(batch_size, shuffle_buffer, cache)

    def load(image_path, mask_path):
        image = _decode_rgb(image_path)
        mask = _decode_mask(mask_path, mask_channel)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method=interpolation)
            mask = tf.image.resize(mask, image_size, method="nearest")
            mask = tf.cast(mask, tf.uint8)
        else:
            image = tf.cast(image, tf.float32)
        if mask_mode == "binary":
            mask = tf.cast(mask > 0, tf.uint8)
        return image, mask

    ds = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    if shuffle and not cache:
        ds = ds.shuffle(len(image_paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache("" if cache is True else os.fspath(cache))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer or len(image_paths), seed=seed,
                            reshuffle_each_iteration=True)
    if augment is not None:
        ds = tf.data.Dataset.zip((ds, _seed_stream(seed)))
        ds = ds.map(lambda el, s: augment(el[0], el[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, batch_size=batch_size, drop_remainder=drop_remainder, prefetch=prefetch)


def random_flip_left_right(image, mask, seed):
    """Flip image and mask together, horizontally, with probability 0.5.

    An ``augment`` hook for :func:`segmentation_dataset` (the nerve UNet's training
    augmentation). Stateless: the same ``seed`` gives the same decision.

    Parameters
    ----------
    image : tf.Tensor, shape (h, w, c)
    mask : tf.Tensor, shape (h, w, 1)
    seed : tf.Tensor of int, shape (2,)

    Returns
    -------
    image, mask : tf.Tensor
    """
    import tensorflow as tf

    flip = tf.random.stateless_uniform([], seed=tf.cast(seed, tf.int64)) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    return image, mask


# ----------------------------------------------------------------------- brainview helpers
def minmax_to_uint8(image):
    """Min-max scale an array to ``uint8`` 0..255 (``round(255 (x - min) / (max - min))``).

    A constant array (max == min, e.g. an empty slice at the edge of a volume) maps to
    zeros instead of dividing by zero.

    Parameters
    ----------
    image : array_like of numbers
        Any shape, e.g. one NRRD slice ``(h, w)``.

    Returns
    -------
    numpy.ndarray of uint8, same shape

    Raises
    ------
    ValueError
        If the array is empty, not numeric, or holds NaN or infinity.

    Examples
    --------
    >>> minmax_to_uint8([[0.0, 0.5], [1.0, 1.0]]).tolist()
    [[0, 128], [255, 255]]
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"image must be numeric; got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError("image is empty")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image holds NaN or infinite values; min-max scaling is undefined")
    lo, hi = arr.min(), arr.max()
    if hi == lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def slice_to_rgb(slice_2d, *, size=(512, 512)):
    """A volume slice as the brainview model input: min-max to 0..255, resize, grey -> RGB.

    Parameters
    ----------
    slice_2d : array_like, shape (h, w)
    size : (int, int) or None, optional
        ``(height, width)``; bilinear resize of the uint8 image (None: no resize).

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width, 3)
    """
    from PIL import Image

    arr = check_nd(slice_2d, 2, name="slice_2d")
    size = _check_size(size)
    grey = minmax_to_uint8(arr)
    if size is not None and grey.shape != size:
        grey = np.asarray(Image.fromarray(grey).resize((size[1], size[0]), Image.BILINEAR))
    return np.repeat(grey[..., None], 3, axis=-1)


_BLACK_SCALES = ("0-255", "fraction")


def mean_intensity(image):
    """Mean over all pixels and channels, as float64 (on the image's own scale)."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise ValueError("image is empty")
    return float(arr.mean(dtype=np.float64))


def is_near_black(image, *, threshold, scale):
    """True if the mean intensity of a 0..255 image is below ``threshold``.

    Parameters
    ----------
    image : array_like, values on the 0..255 scale (e.g. uint8 RGB)
    threshold : float
        Non-negative.
    scale : {"0-255", "fraction"}
        How ``threshold`` is expressed: on the 0..255 intensity scale (how the original's
        code applied its 0.6, which drops only all-black images), or as a fraction of the
        full range (how its README described it: 0.6 drops images whose mean is below 153).

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For a negative threshold, a threshold above 1 (``"fraction"``) or above 255
        (``"0-255"``), or an unknown scale.
    """
    limit = _black_limit(threshold, scale)
    return mean_intensity(image) < limit


def _black_limit(threshold, scale):
    check_choice(scale, _BLACK_SCALES, name="scale")
    check_positive(threshold, name="threshold", allow_zero=True)
    if scale == "fraction":
        if threshold > 1:
            raise ValueError(f"threshold must be in [0, 1] with scale='fraction'; got {threshold!r}")
        return float(threshold) * 255.0
    if threshold > 255:
        raise ValueError(f"threshold must be in [0, 255] with scale='0-255'; got {threshold!r}")
    return float(threshold)


def filter_near_black(paths, *, threshold, scale, size=None):
    """Which image files to keep: ``keep[i]`` is False when file ``i`` is near-black.

    Files are read one at a time (RGB uint8, optionally resized first as the model input
    would be) and tested with :func:`is_near_black`.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
    """
    limit = _black_limit(threshold, scale)
    keep = [mean_intensity(read_image(p, size=size)) >= limit for p in paths]
    return np.asarray(keep, dtype=bool)
