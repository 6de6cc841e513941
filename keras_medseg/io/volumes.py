"""Medical volumes: one :class:`Volume` type, readers and writers, isotropic resampling and
CT intensity windowing.

Axis conventions
----------------
``Volume.array`` is indexed ``(z, y, x)`` for 3D (``(y, x)`` for 2D), exactly as
``SimpleITK.GetArrayFromImage`` returns it. ``Volume.spacing`` is in the SAME array axis order,
in mm: ``spacing[0]`` is the distance between slices. ``origin`` and ``direction`` are stored
as SimpleITK reports them, in physical ``(x, y, z)`` LPS order:

* ``origin`` : the physical position (mm) of the centre of voxel ``array[0, 0, 0]``;
* ``direction`` : a (d, d) matrix whose column ``j`` is the unit vector of image index axis
  ``j`` (SimpleITK's ``GetDirection`` reshaped row-major), where index axis 0 is x, i.e. the
  LAST array axis. The identity means axis-aligned.

So the physical point of array index ``(k, j, i)`` is
``origin + direction @ (spacing[::-1] * (i, j, k))``; :meth:`Volume.index_to_physical` and
:attr:`Volume.affine` do this arithmetic.

Formats
-------
Every format is read with SimpleITK, so NIfTI and Analyze files get the same orientation as
in SimpleITK (and ITK-SNAP). Suffixes: ``.nii``, ``.nii.gz``, ``.hdr``/``.img`` (Analyze 7.5
or NIfTI pair; name either file), ``.nrrd``/``.nhdr``, ``.mha``/``.mhd``, ``.dcm`` (a single
DICOM file), a folder (a DICOM series), and files without a suffix that carry the DICOM
``DICM`` marker. NIfTI, NRRD and MetaImage are written with SimpleITK; ``.hdr``/``.img`` is
written as true Analyze 7.5 (with nibabel), the format the iSeg-2017 data use: Analyze stores
spacing but neither origin nor direction.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice, check_positive

__all__ = [
    "Volume", "VolumeError", "read_volume", "write_volume", "resample_isotropic",
    "hu_window", "nodule3d_normalize", "NODULE3D_MEAN", "from_sitk", "to_sitk",
    "READ_SUFFIXES", "WRITE_SUFFIXES",
]

#: Mean subtracted after the HU window in the nodule3d recipe (convnet3d).
NODULE3D_MEAN = 60.039

READ_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".nrrd", ".mha", ".mhd")


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """An image volume with its geometry (see the module docstring for the axis order).

    Parameters
    ----------
    array : ndarray, shape (Z, Y, X) or (Y, X)
        Voxel values (not copied).
    spacing : sequence of float, optional
        Voxel size in mm per ARRAY axis (``(sz, sy, sx)``); default 1.0 each.
    origin : sequence of float, optional
        Physical ``(x, y, z)`` (LPS, mm) of voxel ``array[0, 0, 0]``; default zeros.
    direction : array_like, shape (d, d), optional
        SimpleITK direction matrix (columns = index axes x, y, z); default identity.

    Raises
    ------
    ValueError
        If the array is not 2D or 3D, or spacing / origin / direction have the wrong length,
        are not finite, spacing is not positive, or direction is singular.
    """

    array: np.ndarray
    spacing: tuple = None
    origin: tuple = None
    direction: np.ndarray = None

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim not in (2, 3):
            raise ValueError(f"array must be 2D or 3D; got shape {array.shape}")
        d = array.ndim
        spacing = (1.0,) * d if self.spacing is None else self.spacing
        spacing = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
        if len(spacing) != d or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing must be {d} positive finite numbers (array axis order);"
                             f" got {self.spacing!r}")
        origin = (0.0,) * d if self.origin is None else self.origin
        origin = tuple(float(s) for s in np.asarray(origin, dtype=np.float64).reshape(-1))
        if len(origin) != d or not all(np.isfinite(origin)):
            raise ValueError(f"origin must be {d} finite numbers (x, y, z); got {self.origin!r}")
        direction = np.eye(d) if self.direction is None else self.direction
        direction = np.array(direction, dtype=np.float64).reshape(-1)
        if direction.size != d * d or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite {d}x{d} matrix; got {self.direction!r}")
        direction = direction.reshape(d, d)
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError(f"direction must be non-singular; got {direction.tolist()}")
        direction.flags.writeable = False
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def shape(self):
        return self.array.shape

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def affine(self):
        """(d+1, d+1) matrix mapping homogeneous ARRAY indices ``(k, j, i, 1)`` to physical
        ``(x, y, z, 1)`` (LPS, mm)."""
        d = self.ndim
        out = np.eye(d + 1)
        out[:d, :d] = (self.direction * np.asarray(self.spacing[::-1]))[:, ::-1]
        out[:d, d] = self.origin
        return out

    def index_to_physical(self, index):
        """Physical ``(x, y, z)`` of array indices ``index`` (..., d) in array order."""
        index = np.asarray(index, dtype=np.float64)
        a = self.affine
        return index @ a[:-1, :-1].T + a[:-1, -1]

    def with_array(self, array):
        """The same geometry around a new array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"array must have shape {self.shape}; got {array.shape}")
        return dataclasses.replace(self, array=array)


# ---------------------------------------------------------------------- SimpleITK bridge
def to_sitk(volume):
    """Convert a :class:`Volume` to a ``SimpleITK.Image`` (array copied)."""
    import SimpleITK as sitk

    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(tuple(volume.spacing[::-1]))
    image.SetOrigin(tuple(volume.origin))
    image.SetDirection(tuple(volume.direction.reshape(-1)))
    return image


def from_sitk(image, *, source=None):
    """Convert a scalar ``SimpleITK.Image`` (2D or 3D) to a :class:`Volume`."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{_name(source)}has {image.GetNumberOfComponentsPerPixel()} "
                          f"components per voxel; only scalar volumes are supported")
    d = image.GetDimension()
    if d not in (2, 3):
        raise VolumeError(f"{_name(source)}is {d}D (size {image.GetSize()}); only 2D and 3D "
                          f"volumes are supported")
    array = sitk.GetArrayFromImage(image)
    return Volume(array, spacing=image.GetSpacing()[::-1], origin=image.GetOrigin(),
                  direction=np.asarray(image.GetDirection()).reshape(d, d))


def _name(source):
    return f"{source}: " if source else ""


def _suffix(path):
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


@contextlib.contextmanager
def _quiet_itk():
    """Silence ITK's 'Analyze is deprecated' warning for one read, then restore the setting."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _is_dicom_file(path):
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# ---------------------------------------------------------------------- reading
def read_volume(path, *, ndim=3, check_finite=True, series_id=None):
    """Read a volume file or a DICOM series folder.

    Parameters
    ----------
    path : str or path-like
        A file with one of :data:`READ_SUFFIXES` (Analyze may be named by its ``.hdr`` or its
        ``.img``), a DICOM file without a suffix, or a folder holding a DICOM series.
    ndim : {3, 2, None}
        Required number of dimensions; None accepts 2D and 3D. A single DICOM slice reads
        as 3D with one slice.
    check_finite : bool
        Raise if a floating-point volume contains NaN or inf (default True). For NIfTI and
        Analyze files the raw voxels are checked with nibabel, because SimpleITK's reader
        silently replaces NaN with 0 there; with ``check_finite=False`` those NaN read as 0.
    series_id : str, optional
        For a folder with several DICOM series, the SeriesInstanceUID to read.

    Returns
    -------
    Volume
        Array ``(z, y, x)`` in the file's pixel type, spacing in array order (mm).

    Raises
    ------
    FileNotFoundError
        If ``path`` (or an Analyze header's ``.img``) does not exist.
    VolumeError
        For an unsupported suffix, an empty folder, several DICOM series without
        ``series_id``, an unreadable file, non-scalar voxels, the wrong number of
        dimensions, or non-finite values.
    """
    import SimpleITK as sitk

    if ndim not in (2, 3, None):
        raise ValueError(f"ndim must be 2, 3 or None; got {ndim!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: volume file or folder not found")
    if path.is_dir():
        image = _read_dicom_series(path, series_id)
    else:
        suffix = _suffix(path)
        if suffix in (".hdr", ".img"):
            header, data = path.with_suffix(".hdr"), path.with_suffix(".img")
            for part, role in ((header, "header"), (data, "image data")):
                if not part.is_file():
                    raise FileNotFoundError(f"{path}: Analyze/NIfTI-pair {role} file {part} "
                                            f"is missing (a .hdr needs its .img beside it)")
            path = header
        elif suffix not in READ_SUFFIXES and not _is_dicom_file(path):
            raise VolumeError(f"{path}: unsupported volume format {suffix or '(no suffix)'!r}; "
                              f"expected one of {', '.join(READ_SUFFIXES)}, a DICOM file or "
                              f"a DICOM series folder")
        try:
            with (_quiet_itk() if suffix in (".hdr", ".img") else contextlib.nullcontext()):
                image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise VolumeError(f"{path}: cannot read volume: {_first_line(e)}") from None
    vol = from_sitk(image, source=path)
    if ndim is not None and vol.ndim != ndim:
        raise VolumeError(f"{path}: expected a {ndim}D volume; got {vol.ndim}D with shape "
                          f"{vol.shape}")
    if check_finite:
        _check_finite(vol.array, path)
        if not path.is_dir() and _suffix(path) in (".nii", ".nii.gz", ".hdr"):
            _check_finite_nibabel(path)
    return vol


def _first_line(err):
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return lines[-1] if lines else type(err).__name__


def _check_finite(array, source):
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise VolumeError(f"{_name(source)}volume contains {bad} NaN or inf value(s) "
                          f"(first at array index {first}); pass check_finite=False to accept")


def _check_finite_nibabel(path):
    """SimpleITK's NIfTI/Analyze reader turns NaN into 0; look at the raw voxels instead."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception:  # noqa: BLE001  (SimpleITK read it; nothing more to check)
        return
    if np.dtype(image.get_data_dtype()).kind not in "fc":
        return
    raw = np.asanyarray(image.dataobj)
    if not np.all(np.isfinite(raw)):
        bad = np.argwhere(~np.isfinite(raw))[0][:3][::-1]
        raise VolumeError(f"{path}: volume contains {int(np.count_nonzero(~np.isfinite(raw)))} "
                          f"NaN or inf value(s) (first at array index "
                          f"{tuple(int(i) for i in bad)}; SimpleITK would read them as 0); "
                          f"pass check_finite=False to accept")


def _read_dicom_series(folder, series_id):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise VolumeError(f"{folder}: folder holds no DICOM series")
    if series_id is None:
        if len(ids) > 1:
            raise VolumeError(f"{folder}: folder holds {len(ids)} DICOM series "
                              f"({', '.join(ids)}); pass series_id= to choose one")
        series_id = ids[0]
    elif series_id not in ids:
        raise VolumeError(f"{folder}: no DICOM series {series_id!r}; found {', '.join(ids)}")
    files = reader.GetGDCMSeriesFileNames(str(folder), series_id)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise VolumeError(f"{folder}: cannot read DICOM series: {_first_line(e)}") from None


# ---------------------------------------------------------------------- writing
def write_volume(path, volume, *, check_finite=True, compress=None):
    """Write ``volume`` atomically; the format follows the suffix.

    All files are written into a temporary folder beside ``path`` and then moved into place
    (for two-file formats, the data file first and the header last), so an interrupted write
    never leaves a readable partial volume.

    Parameters
    ----------
    path : str or path-like
        Ends with one of :data:`WRITE_SUFFIXES`. ``.hdr`` or ``.img`` writes an Analyze 7.5
        pair (both files; spacing only, origin and direction are not stored and a warning is
        issued when they are not the defaults; dtypes uint8, int16, int32, float32, float64).
        ``.mhd`` writes ``.mhd`` + ``.raw``.
    volume : Volume
    check_finite : bool
        Raise if a floating-point volume contains NaN or inf (default True).
    compress : bool, optional
        Compress the voxel data where the format allows it; default True for ``.nii.gz``,
        False otherwise.

    Returns
    -------
    Path
        The written path (for Analyze, the ``.hdr``).
    """
    import SimpleITK as sitk

    if not isinstance(volume, Volume):
        raise ValueError(f"volume must be a Volume; got {type(volume).__name__}")
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise VolumeError(f"{path}: cannot write format {suffix or '(no suffix)'!r}; expected "
                          f"one of {', '.join(WRITE_SUFFIXES)}")
    if check_finite:
        _check_finite(volume.array, path)
    if suffix == ".img":
        path = path.with_suffix(".hdr")
    if compress is None:
        compress = suffix == ".nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        target = tmpdir / path.name
        if suffix in (".hdr", ".img"):
            _write_analyze(target, volume)
            produced = [target.with_suffix(".img"), target]
        else:
            sitk.WriteImage(to_sitk(volume), str(target), bool(compress))
            produced = sorted((p for p in tmpdir.iterdir() if p != target),
                              key=lambda p: p.name) + [target]
        for p in produced:
            os.replace(p, path.parent / p.name)
    except RuntimeError as e:
        raise VolumeError(f"{path}: cannot write volume: {_first_line(e)}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


_ANALYZE_DTYPES = (np.uint8, np.int16, np.int32, np.float32, np.float64)


def _write_analyze(target, volume):
    import nibabel as nib

    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.type not in _ANALYZE_DTYPES:
        raise VolumeError(f"{target.name}: Analyze 7.5 cannot store dtype {array.dtype}; "
                          f"use uint8, int16, int32, float32 or float64")
    if volume.ndim != 3:
        raise VolumeError(f"{target.name}: write 3D volumes as Analyze; got {volume.ndim}D")
    if any(volume.origin) or not np.allclose(volume.direction, np.eye(3)):
        warnings.warn(f"{target.name}: Analyze 7.5 stores neither origin nor direction; "
                      f"they are dropped", stacklevel=3)
    image = nib.AnalyzeImage(np.ascontiguousarray(np.transpose(array, (2, 1, 0))),
                             np.diag(list(volume.spacing[::-1]) + [1.0]))
    image.header.set_zooms(volume.spacing[::-1])
    image.to_filename(str(target))


# ---------------------------------------------------------------------- resampling
def resample_isotropic(volume, spacing=1.0, *, interpolator="linear", default_value=0.0):
    """Resample ``volume`` to a new (by default 1 mm isotropic) grid with SimpleITK.

    The new grid keeps the origin (voxel 0 stays where it was) and direction and spans the
    same physical extent from the first to the last voxel centre, as convnet3d did: along an
    axis with ``n`` voxels of size ``s`` it has ``floor((n - 1) * s / spacing) + 1`` voxels.
    A voxel index ``i`` (array order) thus maps to ``i * s / spacing``.

    Parameters
    ----------
    volume : Volume
    spacing : float or sequence of float
        New voxel size in mm, one value or one per array axis.
    interpolator : {"linear", "nearest"}
        ``"linear"`` returns float32; ``"nearest"`` keeps the dtype (use it for labels).
    default_value : float
        Value for points outside the input (only reachable through rounding).

    Returns
    -------
    Volume
    """
    import SimpleITK as sitk

    from keras_medseg._checks import check_spacing

    if not isinstance(volume, Volume):
        raise ValueError(f"volume must be a Volume; got {type(volume).__name__}")
    check_choice(interpolator, ("linear", "nearest"), name="interpolator")
    new = check_spacing(spacing, volume.ndim, name="spacing")
    old = np.asarray(volume.spacing)
    n = np.asarray(volume.shape)
    size = np.floor((n - 1) * old / new + 1e-6).astype(int) + 1
    image = to_sitk(volume)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing(tuple(float(s) for s in new[::-1]))
    resampler.SetSize([int(s) for s in size[::-1]])
    resampler.SetOutputOrigin(image.GetOrigin())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetDefaultPixelValue(float(default_value))
    if interpolator == "linear":
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
    else:
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    out = from_sitk(resampler.Execute(image))
    if interpolator == "nearest" and out.array.dtype != volume.array.dtype:
        out = out.with_array(out.array.astype(volume.array.dtype))
    return out


# ---------------------------------------------------------------------- intensities
def hu_window(array, level=80, width=600, *, out_range=(0, 255)):
    """Map CT values through a window (DICOM PS3.3 C.11.2.1.2 linear VOI function).

    ``y = ((x - level + 0.5) / (width - 1) + 0.5) * (hi - lo) + lo``, clipped to
    ``[lo, hi] = out_range``; the formula convnet3d used. With level 80 and width 600,
    -220 HU and below map to 0 and 379 HU and above to 255.

    Parameters
    ----------
    array : array_like
        Hounsfield units (not modified).
    level, width : float
        Window centre and width (HU); width >= 1.
    out_range : (float, float)
        Output interval, low < high.

    Returns
    -------
    ndarray of float32, same shape.
    """
    if not isinstance(level, (int, float, np.number)) or not np.isfinite(level):
        raise ValueError(f"level must be a finite number; got {level!r}")
    check_positive(width, name="width")
    if width < 1:
        raise ValueError(f"width must be >= 1; got {width!r}")
    lo, hi = (float(v) for v in out_range)
    if not lo < hi:
        raise ValueError(f"out_range must be (low, high) with low < high; got {out_range!r}")
    x = np.asarray(array, dtype=np.float64)
    y = ((x - level + 0.5) / (width - 1) + 0.5) * (hi - lo) + lo
    return np.clip(y, lo, hi).astype(np.float32)


def nodule3d_normalize(array, *, level=80, width=600, mean=NODULE3D_MEAN):
    """The nodule3d input normalisation: :func:`hu_window` to [0, 255] minus ``mean``
    (60.039, convnet3d's training-set mean). Returns float32."""
    return hu_window(array, level, width, out_range=(0, 255)) - np.float32(mean)
