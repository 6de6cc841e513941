"""TFRecord files of image/mask pairs, in the nerve original's format.

One ``tf.train.Example`` per image, uncompressed, with the original's feature keys:

=====================  =======  ==========================================================
key                    type     content
=====================  =======  ==========================================================
``height``, ``width``  int64    image size in pixels
``depth``              int64    3 (RGB)
``depth_segmentation`` int64    1
``image``              bytes    raw uint8 HWC bytes (``encoding="raw"``) or a PNG file
``segmentation_mask``  bytes    raw uint8 HW bytes (``encoding="raw"``) or a PNG file
``file_name``          bytes    image file name (UTF-8)
``encoding``           bytes    ``b"raw"`` or ``b"png"`` (added here; absent means raw)
=====================  =======  ==========================================================

Raw records stay readable by the original's parser (it ignores the extra ``encoding`` key).
Writing is driven by ImageSets name lists (:func:`keras_medseg.io.splits.read_imageset`),
atomic (temporary files, renamed when every shard is complete), deterministic (the same
inputs give byte-identical files) and never touches its inputs (the original renamed each
source image to ``*.done``).
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.io.images import IMAGE_EXTENSIONS, ImageFileError, _check_size, read_image, read_mask
from keras_medseg.io.splits import read_imageset
from keras_medseg.utils import atomic_path

__all__ = [
    "FEATURE_KEYS", "ENCODINGS", "TFRecordError", "encode_example", "decode_example",
    "write_tfrecords", "read_tfrecords", "validate_tfrecords", "shard_paths", "read_imageset",
]

FEATURE_KEYS = ("height", "width", "depth", "depth_segmentation", "image",
                "segmentation_mask", "file_name")
"""The original's feature keys (``encoding`` is the one key added here)."""

ENCODINGS = ("raw", "png")


class TFRecordError(ValueError):
    """A TFRecord file is missing, truncated or holds a corrupt record.

    Attributes
    ----------
    path : str
        The file.
    index : int or None
        0-based index of the first bad record in that file (None when the file as a whole
        is at fault).
    """

    def __init__(self, message, path, index=None):
        super().__init__(message)
        self.path = str(path)
        self.index = index


# ------------------------------------------------------------------------------- encode
def _png_bytes(array):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def encode_example(image, mask, file_name, *, encoding="raw"):
    """Serialise one image/mask pair as a ``tf.train.Example``.

    Parameters
    ----------
    image : numpy.ndarray of uint8, shape (height, width, 3)
    mask : numpy.ndarray of uint8, shape (height, width) or (height, width, 1)
    file_name : str
    encoding : {"raw", "png"}, optional

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        For wrong dtypes or shapes or an image/mask size mismatch.
    """
    import tensorflow as tf

    check_choice(encoding, ENCODINGS, name="encoding")
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 of shape (height, width, 3); got {image.dtype} "
                         f"{image.shape}")
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"mask must be uint8 of shape (height, width); got {mask.dtype} {mask.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"image and mask sizes differ: {image.shape[:2]} and {mask.shape}")
    h, w = mask.shape
    if encoding == "raw":
        image_bytes = np.ascontiguousarray(image).tobytes()
        mask_bytes = np.ascontiguousarray(mask).tobytes()
    else:
        image_bytes, mask_bytes = _png_bytes(image), _png_bytes(mask)

    def i64(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feature = {
        "height": i64(h), "width": i64(w), "depth": i64(3), "depth_segmentation": i64(1),
        "image": b(image_bytes), "segmentation_mask": b(mask_bytes),
        "file_name": b(str(file_name).encode("utf-8")), "encoding": b(encoding.encode("ascii")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _feature_spec():
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in FEATURE_KEYS[:4]}
    spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in FEATURE_KEYS[4:]})
    spec["encoding"] = tf.io.FixedLenFeature([], tf.string, default_value="raw")
    return spec


def decode_example(serialized):
    """Parse and decode one serialised example (graph-compatible, for ``Dataset.map``).

    Returns
    -------
    dict
        ``image`` uint8 (h, w, 3), ``segmentation_mask`` uint8 (h, w, 1), ``file_name``
        string, ``height``, ``width`` int64, ``encoding`` string.
    """
    import tensorflow as tf

    f = tf.io.parse_single_example(serialized, _feature_spec())
    h, w = f["height"], f["width"]
    d, ds = f["depth"], f["depth_segmentation"]
    is_png = tf.equal(f["encoding"], "png")

    def decode(data, channels, depth):
        shape = tf.stack([h, w, depth])
        out = tf.cond(is_png,
                      lambda: tf.reshape(tf.io.decode_png(data, channels=channels), shape),
                      lambda: tf.reshape(tf.io.decode_raw(data, tf.uint8), shape))
        out.set_shape([None, None, channels])
        return out

    return {
        "image": decode(f["image"], 3, d),
        "segmentation_mask": decode(f["segmentation_mask"], 1, ds),
        "file_name": f["file_name"], "height": h, "width": w, "encoding": f["encoding"],
    }


# -------------------------------------------------------------------------------- write
def shard_paths(out_path, num_shards):
    """File names of ``num_shards`` shards of ``out_path``:
    ``trainval.tfrecords`` -> ``trainval-00000-of-00003.tfrecords``, ...; one shard is
    ``out_path`` itself."""
    out_path = Path(out_path)
    if num_shards == 1:
        return [out_path]
    stem, suffix = _split_suffix(out_path.name)
    return [out_path.with_name(f"{stem}-{i:05d}-of-{num_shards:05d}{suffix}") for i in range(num_shards)]


def _split_suffix(name):
    for suffix in (".tfrecords", ".tfrecord"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return os.path.splitext(name)


def _existing_outputs(out_path):
    """Files a previous :func:`write_tfrecords` to ``out_path`` may have left (any shard count)."""
    out_path = Path(out_path)
    stem, suffix = _split_suffix(out_path.name)
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(suffix) + r"$")
    found = [out_path] if out_path.is_file() else []
    if out_path.parent.is_dir():
        found += sorted(p for p in out_path.parent.iterdir() if pattern.match(p.name))
    return found


def _folder_index(folder, extensions):
    """``{stem: [paths]}`` and ``{file name: path}`` of the image files of ``folder``."""
    by_stem, by_name = {}, {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in extensions and entry.is_file():
            by_stem.setdefault(stem, []).append(Path(entry.path))
            by_name[entry.name] = Path(entry.path)
    return by_stem, by_name


def _resolve(index, folder, name, extensions, what):
    """The file for ImageSets ``name``: the name itself when it is a file, else
    ``<name>.<ext>``, else (for a name with an image suffix, e.g. the mask of ``frame.jpg``)
    ``<stem>.<ext>``; suffixes are matched case-insensitively."""
    by_stem, by_name = index
    if name in by_name:
        return by_name[name]
    bases = [name]
    if os.path.splitext(name)[1].lower() in extensions:
        bases.append(os.path.splitext(name)[0])
    for base in bases:
        matches = by_stem.get(base, [])
        if len(matches) > 1:
            raise ImageFileError(f"{what} {name!r} is ambiguous in {str(folder)!r}: "
                                 f"{[m.name for m in matches]}", *matches)
        if matches:
            return matches[0]
    raise FileNotFoundError(f"{what} {name!r} (listed in the names) not found in "
                            f"{str(folder)!r} with a suffix in {list(extensions)}")


def write_tfrecords(image_dir, mask_dir, names, out_path, *, encoding="raw",
                    records_per_shard=None, size=None, mask_channel=0, progress=True):
    """Write image/mask pairs listed by name into TFRecord file(s).

    Parameters
    ----------
    image_dir, mask_dir : str or path-like
        Folders holding the images (any of jpg/jpeg/png/bmp) and the masks (class index
        in ``mask_channel`` for RGB masks, see :func:`keras_medseg.io.images.read_mask`).
    names : sequence of str, or str / path-like
        Image names (stems such as ``frame_0001`` or full file names), in record order;
        or the path of an ImageSets text file (see :func:`read_imageset`). Each name is
        looked up in both folders as the file itself, as ``<name>.<ext>``, or, for a full
        file name such as ``frame.jpg``, as ``frame.<ext>`` (suffixes case-insensitive).
    out_path : str or path-like
        Output file, e.g. ``trainval.tfrecords``.
    encoding : {"raw", "png"}, optional
        Raw uint8 bytes (the original's format) or PNG-compressed.
    records_per_shard : int, optional
        When set and there are more names, write ``ceil(n / records_per_shard)`` shards
        named ``<stem>-00000-of-0000N<suffix>``.
    size : (int, int), optional
        Resize to ``(height, width)`` before writing (bilinear image, nearest mask).
    mask_channel : int, optional
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    list of pathlib.Path
        The files written. Shards or files of an earlier run to ``out_path`` with a
        different shard count are removed after the new files are in place.

    Raises
    ------
    ValueError
        For an empty or repeated name list and invalid options.
    FileNotFoundError
        Naming a listed image or mask that is missing.
    ImageFileError
        For a truncated/corrupt file or an image/mask size mismatch (naming both).
    """
    import tensorflow as tf

    check_choice(encoding, ENCODINGS, name="encoding")
    size = _check_size(size)
    if isinstance(names, (str, os.PathLike)):
        if not Path(names).is_file():
            raise FileNotFoundError(f"names file {os.fspath(names)!r} does not exist")
        names = read_imageset(names, None)
    names = [os.fspath(n) for n in names]
    if not names:
        raise ValueError("names is empty: nothing to write")
    if len(set(names)) != len(names):
        raise ValueError("names must be unique; a name is listed more than once")
    if records_per_shard is not None and (not isinstance(records_per_shard, int)
                                          or isinstance(records_per_shard, bool)
                                          or records_per_shard < 1):
        raise ValueError(f"records_per_shard must be a positive integer or None; got "
                         f"{records_per_shard!r}")
    for folder, what in ((image_dir, "image_dir"), (mask_dir, "mask_dir")):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} {str(folder)!r} is not a directory")

    # Resolve every file before writing anything, so a missing name fails fast.
    exts = IMAGE_EXTENSIONS
    image_index, mask_index = _folder_index(image_dir, exts), _folder_index(mask_dir, exts)
    pairs = [(_resolve(image_index, image_dir, n, exts, "image"),
              _resolve(mask_index, mask_dir, n, exts, "mask")) for n in names]
    num_shards = 1
    if records_per_shard is not None and len(names) > records_per_shard:
        num_shards = -(-len(names) // records_per_shard)
    targets = shard_paths(out_path, num_shards)
    per_shard = -(-len(names) // num_shards)
    stale = [p for p in _existing_outputs(out_path) if p not in targets]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc=f"write {Path(out_path).name}", unit="img")
    try:
        with contextlib.ExitStack() as stack:
            for s, target in enumerate(targets):
                tmp = stack.enter_context(atomic_path(target))
                with tf.io.TFRecordWriter(str(tmp)) as writer:
                    for image_path, mask_path in pairs[s * per_shard:(s + 1) * per_shard]:
                        image = read_image(image_path)
                        mask = read_mask(mask_path, channel=mask_channel)
                        if image.shape[:2] != mask.shape:
                            raise ImageFileError(
                                f"image/mask size mismatch: image {str(image_path)!r} is "
                                f"{image.shape[0]}x{image.shape[1]} but mask {str(mask_path)!r} "
                                f"is {mask.shape[0]}x{mask.shape[1]}", image_path, mask_path)
                        if size is not None and image.shape[:2] != size:
                            image, mask = _resize_pair(image, mask, size)
                        writer.write(encode_example(image, mask, image_path.name, encoding=encoding))
                        if bar is not None:
                            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return targets


def _resize_pair(image, mask, size):
    from PIL import Image

    h, w = size
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return image, mask


# --------------------------------------------------------------------------------- read
def _expand_paths(paths):
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            out.append(p)
            continue
        shards = [q for q in _existing_outputs(p) if q != p]
        if not shards:
            raise FileNotFoundError(f"TFRecord file {str(p)!r} does not exist (nor any "
                                    f"{_split_suffix(p.name)[0]}-NNNNN-of-NNNNN shard)")
        out.extend(shards)
    if not out:
        raise ValueError("paths is empty")
    return [str(p) for p in out]


def _locate_bad_record(path):
    """Index of the first unreadable record of ``path`` and TF's message (None if all read)."""
    import tensorflow as tf

    index = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            index += 1
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
        return index, e.message.split("}}")[-1].strip()
    return None, None


def _raise_bad(path, index, detail):
    raise TFRecordError(f"TFRecord file {path!r}: record {index} (0-based) is truncated or "
                        f"corrupt ({detail}); earlier records read fine", path, index)


def _record_counter():
    """A traced-once function counting the records of one file in native code."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def count(path):
        return tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda c, _: c + 1)

    return count


def _check_framing(path, counter):
    """Read every record of ``path`` once (no decoding); return their number, or raise
    :class:`TFRecordError` with the first bad record's index."""
    import tensorflow as tf

    try:
        return int(counter(tf.constant(path)))
    except tf.errors.DataLossError as e:
        index, detail = _locate_bad_record(path)
        if index is None:  # pragma: no cover - the error did not reproduce
            index, detail = -1, e.message
        _raise_bad(path, index, detail)


def read_tfrecords(paths, *, as_dict=False, check=True, num_parallel_calls=None,
                   deterministic=True):
    """Stream decoded (image, mask, file_name) records from TFRecord files.

    Parameters
    ----------
    paths : str, path-like or sequence of them
        Files; a name written with shards (``trainval.tfrecords``) expands to its shards.
    as_dict : bool, optional
        Yield the dict of :func:`decode_example` instead of a tuple.
    check : bool, optional
        Before building the dataset, read each file's records once in native code (no
        decoding, about one pass of file I/O) and raise :class:`TFRecordError` with file and
        record index at the first truncated or corrupt record. TensorFlow's own
        ``DataLossError`` names neither; with ``check=False`` that error surfaces during
        iteration instead.
    num_parallel_calls : int, optional
        Parallel decoding (default ``tf.data.AUTOTUNE``).
    deterministic : bool, optional
        Keep file/record order.

    Returns
    -------
    tf.data.Dataset
        ``(image, mask, file_name)``: uint8 (h, w, 3), uint8 (h, w, 1), string; raw and
        PNG records are both decoded.

    Raises
    ------
    FileNotFoundError
        For a missing file.
    TFRecordError
        For a truncated or corrupt record (when ``check``), naming file and record index.
    """
    import tensorflow as tf

    files = _expand_paths(paths)
    if check:
        counter = _record_counter()
        for f in files:
            _check_framing(f, counter)
    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = tf.data.TFRecordDataset(files)
    if as_dict:
        ds = ds.map(decode_example, num_parallel_calls=calls, deterministic=deterministic)
    else:
        def to_tuple(serialized):
            d = decode_example(serialized)
            return d["image"], d["segmentation_mask"], d["file_name"]

        ds = ds.map(to_tuple, num_parallel_calls=calls, deterministic=deterministic)
    return ds


def validate_tfrecords(paths):
    """Fully check TFRecord files: framing and checksums, every example's keys, sizes and
    payload (raw byte counts; PNG records are decoded).

    Parameters
    ----------
    paths : str, path-like or sequence of them

    Returns
    -------
    dict of str to int
        Number of records per file.

    Raises
    ------
    FileNotFoundError
        For a missing file.
    TFRecordError
        At the first bad record, naming the file and the 0-based record index.
    """
    import tensorflow as tf

    counts = {}
    for path in _expand_paths(paths):
        index = 0
        iterator = iter(tf.data.TFRecordDataset(path))
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except tf.errors.DataLossError as e:
                _raise_bad(path, index, e.message.split("}}")[-1].strip())
            problem = _example_problem(record.numpy())
            if problem:
                raise TFRecordError(f"TFRecord file {path!r}: record {index} (0-based) is "
                                    f"invalid: {problem}", path, index)
            index += 1
        counts[path] = index
    return counts


def _example_problem(data):
    """Why serialised example ``data`` is not a valid record (None when it is)."""
    import io

    import tensorflow as tf
    from PIL import Image

    try:
        example = tf.train.Example.FromString(data)
    except Exception as e:  # protobuf DecodeError
        return f"not a tf.train.Example ({e})"
    feats = example.features.feature
    missing = [k for k in FEATURE_KEYS if k not in feats]
    if missing:
        return f"missing features {missing}"
    try:
        h, w, d, ds = (feats[k].int64_list.value[0] for k in FEATURE_KEYS[:4])
        image, mask = feats["image"].bytes_list.value[0], feats["segmentation_mask"].bytes_list.value[0]
    except IndexError:
        return "an empty feature"
    encoding = feats["encoding"].bytes_list.value[0].decode() if "encoding" in feats else "raw"
    if encoding == "raw":
        for key, data_, depth in (("image", image, d), ("segmentation_mask", mask, ds)):
            if len(data_) != h * w * depth:
                return f"{key} holds {len(data_)} bytes, expected {h}*{w}*{depth} = {h * w * depth}"
    elif encoding == "png":
        for key, data_ in (("image", image), ("segmentation_mask", mask)):
            try:
                with Image.open(io.BytesIO(data_)) as im:
                    im.load()
                    if im.size != (w, h):
                        return f"{key} PNG is {im.size[1]}x{im.size[0]}, header says {h}x{w}"
            except (OSError, SyntaxError, ValueError) as e:
                return f"{key} PNG cannot be decoded ({e})"
    else:
        return f"unknown encoding {encoding!r}"
    return None
