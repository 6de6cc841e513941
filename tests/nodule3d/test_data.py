"""Tests of the nodule3d data workflow (keras_medseg.nodule3d.data and its data_prep scripts)."""
import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage as ndi

from keras_medseg.io.tables import (PatchRow, SeriesRow, TableError, group_by_series,
                                    read_patch_csv, read_series_csv, write_series_csv)
from keras_medseg.io.volumes import Volume, nodule3d_normalize, write_volume
from keras_medseg.nodule3d import data as nd

REPO = Path(__file__).resolve().parents[2]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_dp_{name}", REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A planted volume: stored geometry (z, y, x) spacing (2, 1.5, 1) mm, so stored index
# (z, y, x) maps to resampled (2z, 1.5y, x); an off-axis direction and a non-zero origin.
SPACING = (2.0, 1.5, 1.0)
DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
ORIGIN = (10.0, -20.0, 5.0)
LESIONS = [  # (x, y, z) stored, diameter mm, HU at the centre voxel
    ((20, 20, 10), 6.0, 300),
    ((40, 14, 8), 4.0, 250),
    ((3, 20, 10), 5.0, 200),    # 3 voxels from the x border: every patch crosses it
]


def _planted_series(folder, seed=0):
    rng = np.random.default_rng(seed)
    hu = np.round(rng.normal(-200, 40, size=(20, 40, 64))).clip(-300, -100).astype(np.int16)
    for (x, y, z), _, value in LESIONS:
        hu[z, y, x] = value
    path = write_volume(Path(folder) / "planted.mhd",
                        Volume(hu, spacing=SPACING, origin=ORIGIN, direction=DIRECTION))
    rows = [SeriesRow(str(path), "nodule", tuple(float(v) for v in xyz), d, "planted")
            for xyz, d, _ in LESIONS]
    csv = write_series_csv(Path(folder) / "series.csv", rows)
    return path, csv, hu


def _expected_zyx(xyz):
    x, y, z = xyz
    return np.array([2.0 * z, 1.5 * y, float(x)])


class KFoldTest(tf.test.TestCase):

    def _csv(self, folder):
        rows = []
        for s in range(7):
            for j in range(s % 3 + 1):
                rows.append(SeriesRow(f"/data/s{s}.mhd", "nodule", (10.0 + j, 5.0, 3.0), 4.0,
                                      f"g{s}"))
        rows.append(SeriesRow("/data/empty.mhd", None, None, None, "g_empty"))
        return write_series_csv(Path(folder) / "in" / "series.csv", rows), rows

    def test_folds_are_disjoint_by_series_and_cover_all(self):
        tmp = self.get_temp_dir()
        csv, rows = self._csv(tmp)
        pairs = nd.make_kfold(csv, Path(tmp) / "kfold", k=3, seed=4)
        self.assertLen(pairs, 3)
        all_rows = sorted((r.path, r.xyz or ()) for r in rows)
        tested = []
        for f, (train, test) in enumerate(pairs):
            self.assertEqual((train.name, test.name),
                             (f"kfold_series{f}_train.csv", f"kfold_series{f}_test.csv"))
            tr = read_series_csv(train)
            te = read_series_csv(test)
            self.assertEmpty({r.path for r in tr} & {r.path for r in te})
            self.assertEmpty({r.group for r in tr} & {r.group for r in te})
            self.assertEqual(sorted((r.path, r.xyz or ()) for r in tr + te), all_rows)
            self.assertNotEmpty(te)
            tested += [(r.path, r.xyz or ()) for r in te]
        self.assertEqual(sorted(tested), all_rows)

    def test_idempotent_and_seeded(self):
        tmp = self.get_temp_dir()
        csv, _ = self._csv(tmp)
        first = [(a.read_bytes(), b.read_bytes())
                 for a, b in nd.make_kfold(csv, Path(tmp) / "a", k=3, seed=1)]
        again = [(a.read_bytes(), b.read_bytes())
                 for a, b in nd.make_kfold(csv, Path(tmp) / "a", k=3, seed=1)]
        other = [(a.read_bytes(), b.read_bytes())
                 for a, b in nd.make_kfold(csv, Path(tmp) / "b", k=3, seed=1)]
        self.assertEqual(first, again)
        self.assertEqual(first, other)

    def test_errors(self):
        tmp = self.get_temp_dir()
        csv, rows = self._csv(tmp)
        with self.assertRaisesRegex(ValueError, "out_dir"):
            nd.make_kfold(csv, csv.parent, k=3)
        with self.assertRaisesRegex(ValueError, "k must be"):
            nd.make_kfold(csv, Path(tmp) / "x", k=1)
        with self.assertRaisesRegex(ValueError, "k=9 folds need at least 9 groups"):
            nd.make_kfold(csv, Path(tmp) / "x", k=9)
        bad = write_series_csv(Path(tmp) / "in" / "bad.csv",
                               rows[:1] + [SeriesRow(rows[0].path, "nodule", (1.0, 1.0, 1.0),
                                                     None, "other")])
        with self.assertRaisesRegex(TableError, "bad.csv: line 2: .* groups"):
            nd.make_kfold(bad, Path(tmp) / "x", k=2)


class ResampleTest(tf.test.TestCase):

    def test_bright_voxel_found_at_mapped_index(self):
        tmp = self.get_temp_dir()
        path, _, hu = _planted_series(tmp)
        series = nd.load_series(path)
        self.assertEqual(series.shape, (39, 59, 64))
        self.assertAllClose(series.spacing, (1.0, 1.0, 1.0))
        for xyz, _, value in LESIONS:
            zyx = series.to_resampled(xyz)
            self.assertAllClose(zyx, _expected_zyx(xyz), atol=1e-9)
            idx = tuple(int(v) for v in np.round(zyx))
            self.assertAllClose(series.array[idx], nodule3d_normalize(np.float32(value)),
                                atol=1e-3)
        # the brightest lesion (300 HU) is the global maximum, at its mapped index
        top = np.unravel_index(np.argmax(series.array), series.shape)
        self.assertEqual(top, tuple(int(v) for v in _expected_zyx(LESIONS[0][0])))

    def test_mapping_matches_simpleitk_physical_points(self):
        import SimpleITK as sitk

        from keras_medseg.io.volumes import resample_isotropic, to_sitk

        tmp = self.get_temp_dir()
        path, _, hu = _planted_series(tmp)
        series = nd.load_series(path)
        source = sitk.ReadImage(str(path))
        target = to_sitk(resample_isotropic(Volume(hu, spacing=SPACING, origin=ORIGIN,
                                                   direction=DIRECTION)))
        points = np.random.default_rng(3).uniform(0, 19, size=(6, 3))
        for xyz in points:
            physical = source.TransformContinuousIndexToPhysicalPoint(tuple(xyz))
            expected = target.TransformPhysicalPointToContinuousIndex(physical)[::-1]
            self.assertAllClose(series.to_resampled(xyz), expected, atol=1e-9)

    def test_cache_is_reused_and_invalidated(self):
        tmp = self.get_temp_dir()
        path, _, hu = _planted_series(tmp)
        cache = Path(tmp) / "cache"
        first = nd.load_series(path, cache)
        npy = next(cache.glob("*.npy"))
        stamp = npy.stat().st_mtime_ns
        second = nd.load_series(path, cache)
        self.assertEqual(npy.stat().st_mtime_ns, stamp)
        self.assertAllEqual(first.array, second.array)
        self.assertAllClose(first.affine, second.affine)
        self.assertEqual(sorted(p.name for p in cache.iterdir() if p.name.startswith(".")), [])
        hu2 = hu.copy()
        hu2[0, 0, 0] = 350
        write_volume(path, Volume(hu2, spacing=SPACING, origin=ORIGIN, direction=DIRECTION))
        os.utime(path, ns=(stamp + 10 ** 9, stamp + 10 ** 9))
        third = nd.load_series(path, cache)
        self.assertAllClose(third.array[0, 0, 0], nodule3d_normalize(np.float32(350)), atol=1e-3)


class Stage1Test(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tempfile.mkdtemp(prefix="nodule3d_data_"))
        cls.path, cls.csv, cls.hu = _planted_series(cls.tmp / "in")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cls.patch_csv = nd.make_stage1_patches(cls.csv, cls.tmp / "out", seed=5,
                                                   progress=False)
        cls.rows = read_patch_csv(cls.patch_csv)
        cls.series = nd.load_series(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _kind(self, row):
        return Path(row.patch).name.split("_")[0]

    def test_positives_centred_on_lesions(self):
        op = [r for r in self.rows if self._kind(r) == "op"]
        self.assertLen(op, 2)     # the lesion at the border is dropped
        for row, (xyz, d, value) in zip(op, LESIONS[:2]):
            self.assertEqual(row.class_name, "nodule")
            self.assertEqual(row.diameter, d)
            self.assertAllEqual(row.xyz[::-1], _expected_zyx(xyz))
            patch = np.load(row.patch)
            self.assertEqual(patch.shape, (15, 30, 30))
            self.assertAllClose(patch[7, 15, 15], nodule3d_normalize(np.float32(value)),
                                atol=1e-3)

    def test_jitter_within_bounds(self):
        rp = [r for r in self.rows if self._kind(r) == "rp"]
        self.assertLen(rp, 8)
        centres = np.array([_expected_zyx(xyz) for xyz, _, _ in LESIONS[:2]])
        offsets = []
        for row in rp:
            zyx = np.asarray(row.xyz[::-1])
            nearest = centres[np.argmin(np.abs(zyx - centres).max(axis=1))]
            offsets.append(zyx - nearest)
        offsets = np.array(offsets)
        self.assertLessEqual(np.abs(offsets).max(), 5)
        self.assertAllEqual(offsets, np.round(offsets))
        self.assertGreater(len({tuple(o) for o in offsets}), 4)

    def test_negatives_count_and_clear_of_lesions(self):
        neg = [r for r in self.rows if self._kind(r) == "ng"]
        pos = [r for r in self.rows if r.class_name != "bg"]
        self.assertLen(pos, 10)
        self.assertLen(neg, 3 * len(pos))
        self.assertTrue(all(r.class_name == "bg" and r.diameter is None for r in neg))
        # brute force: no voxel centre of a negative box lies within a lesion radius
        grid = np.stack(np.meshgrid(np.arange(15), np.arange(30), np.arange(30),
                                    indexing="ij"), axis=-1).reshape(-1, 3)
        for row in neg:
            start = np.asarray(row.xyz[::-1], dtype=int) - np.array([7, 15, 15])
            voxels = grid + start
            for xyz, d, _ in LESIONS:
                dist = np.sqrt(((voxels - _expected_zyx(xyz)) ** 2).sum(axis=1)).min()
                self.assertGreater(dist, d / 2)

    def test_every_patch_inside_the_volume_and_equal_to_the_volume(self):
        shape = np.array(self.series.shape)
        for row in self.rows:
            c = np.asarray(row.xyz[::-1], dtype=int)
            start, stop = c - [7, 15, 15], c - [7, 15, 15] + [15, 30, 30]
            self.assertTrue(np.all(start >= 0) and np.all(stop <= shape), row)
            expected = self.series.array[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
            self.assertAllClose(np.load(row.patch), expected)
            self.assertEqual(row.series, str(self.path))

    def test_patch_csv_round_trip_and_mapping(self):
        text = self.patch_csv.read_text()
        first = text.splitlines()[0].split(",")
        self.assertLen(first, 7)
        self.assertEqual(first[1], "nodule")
        neg_line = [line for line in text.splitlines() if ",bg," in line][0].split(",")
        self.assertEqual(neg_line[5], "")
        self.assertEqual(self.patch_csv.name, "series_patches_stage1.csv")
        self.assertEqual((self.tmp / "out" / "mapping.csv").read_text(), "bg,0\nnodule,1\n")

    def test_seeded_and_idempotent(self):
        again = nd.make_stage1_patches(self.csv, self.tmp / "out", seed=5, progress=False)
        self.assertEqual(again.read_bytes(), self.patch_csv.read_bytes())
        other = nd.make_stage1_patches(self.csv, self.tmp / "out2", seed=5, progress=False)
        rows2 = read_patch_csv(other)
        self.assertEqual([(r.class_name, r.xyz) for r in rows2],
                         [(r.class_name, r.xyz) for r in self.rows])
        for a, b in zip(self.rows, rows2):
            self.assertAllEqual(np.load(a.patch), np.load(b.patch))
        changed = read_patch_csv(nd.make_stage1_patches(self.csv, self.tmp / "out3", seed=6,
                                                        progress=False))
        self.assertNotEqual([r.xyz for r in changed], [r.xyz for r in self.rows])

    def test_resumes_after_interruption(self):
        out = self.tmp / "resume"
        csv = nd.make_stage1_patches(self.csv, out, seed=5, progress=False)
        rows = read_patch_csv(csv)
        folder = Path(rows[0].patch).parent
        stamps = {r.patch: Path(r.patch).stat().st_mtime_ns for r in rows}
        (folder / "done.json").unlink()
        Path(rows[3].patch).unlink()
        csv2 = nd.make_stage1_patches(self.csv, out, seed=5, progress=False)
        self.assertEqual(csv2.read_bytes(), csv.read_bytes())
        self.assertTrue(Path(rows[3].patch).is_file())
        self.assertAllClose(np.load(rows[3].patch), np.load(self.rows[3].patch))
        for r in rows[4:]:
            self.assertEqual(Path(r.patch).stat().st_mtime_ns, stamps[r.patch])
        self.assertTrue((folder / "done.json").is_file())

    def test_refuses_input_folder(self):
        with self.assertRaisesRegex(ValueError, "out_dir"):
            nd.make_stage1_patches(self.csv, self.csv.parent, progress=False)

    def test_box_touches_sphere_analytic(self):
        start, stop = (0, 0, 0), (10, 10, 10)     # voxel extent -0.5 .. 9.5
        self.assertTrue(nd.box_touches_sphere(start, stop, (5, 5, 15), 5.5))
        self.assertFalse(nd.box_touches_sphere(start, stop, (5, 5, 15), 5.4))
        # corner distance sqrt(3) * 1.5, anisotropic spacing doubles the z part
        self.assertFalse(nd.box_touches_sphere(start, stop, (11, 11, 11), 2.5))
        self.assertTrue(nd.box_touches_sphere(start, stop, (11, 11, 11), 2.6))
        self.assertFalse(nd.box_touches_sphere(start, stop, (11, 11, 11), 3.3,
                                               spacing=(2.0, 1.0, 1.0)))
        self.assertTrue(nd.box_touches_sphere(start, stop, (11, 11, 11), 3.7,
                                              spacing=(2.0, 1.0, 1.0)))

    def test_plan_negatives_warns_when_there_is_no_room(self):
        rng = np.random.default_rng(0)
        lesions = [((10.0, 15.0, 15.0), "nodule", 40.0)]
        with self.assertWarnsRegex(UserWarning, "only 0 of 3 negatives"):
            self.assertEqual(nd.plan_negatives(3, lesions, (20, 30, 30), (15, 30, 30), rng,
                                               max_tries=50), [])


class JitterInLesionTest(tf.test.TestCase):
    """``jitter_in_lesion``: jittered centres stay inside the lesion sphere."""

    LESIONS = [((20.0, 30.0, 30.0), "nodule", 4.6), ((20.0, 30.0, 60.0), "nodule", 12.0),
               ((20.0, 60.0, 30.0), "nodule", 1.0), ((20.0, 60.0, 60.0), "nodule", None)]

    def _offsets(self, lesion, **kwargs):
        rng = np.random.default_rng(3)
        samples = nd.plan_positives([lesion], (40, 90, 90), (15, 30, 30), rng, n_jitter=400,
                                    max_jitter=5, **kwargs)
        centre = np.floor(np.asarray(lesion[0]) + 0.5)
        self.assertEqual([s.kind for s in samples], ["op"] + ["rp"] * 400)
        return np.array([s.centre for s in samples[1:]]) - centre

    def test_inside_the_sphere_and_covering_it(self):
        spacing = (2.0, 1.0, 1.0)
        for lesion in self.LESIONS:
            d = 10.0 if lesion[2] is None else lesion[2]
            off = self._offsets(lesion, jitter_in_lesion=True, spacing=spacing,
                                default_diameter=10.0)
            length = np.linalg.norm(off * np.asarray(spacing), axis=1)
            self.assertLessEqual(length.max(), d / 2 + 1e-9)
            self.assertLessEqual(np.abs(off).max(), 5)
            # the drawn shifts are the allowed integer shifts of the cube (brute force)
            allowed = {(z, y, x) for z in range(-5, 6) for y in range(-5, 6)
                       for x in range(-5, 6) if np.sqrt((2 * z) ** 2 + y ** 2 + x ** 2) <= d / 2}
            drawn = {tuple(int(v) for v in o) for o in off}
            self.assertContainsSubset(drawn, allowed)
            if len(allowed) <= 40:
                self.assertEqual(drawn, allowed)
        # a lesion smaller than a voxel keeps the centred patch only
        off = self._offsets(self.LESIONS[2], jitter_in_lesion=True)
        self.assertAllEqual(off, np.zeros_like(off))

    def test_default_is_the_original_uniform_cube(self):
        off = self._offsets(self.LESIONS[0])
        rng = np.random.default_rng(3)
        self.assertAllEqual(off, rng.integers(-5, 6, size=(400, 3)))
        self.assertGreater(np.linalg.norm(off, axis=1).max(), 4.6 / 2)

    def test_make_stage1_patches_keeps_centres_in_lesions(self):
        tmp = Path(self.get_temp_dir())
        _, csv, _ = _planted_series(tmp / "in")
        patch_csv = nd.make_stage1_patches(csv, tmp / "out", seed=5, progress=False,
                                           jitter_in_lesion=True)
        rows = read_patch_csv(patch_csv)
        rp = [r for r in rows if Path(r.patch).name.startswith("rp_")]
        self.assertLen(rp, 8)
        centres = np.array([_expected_zyx(xyz) for xyz, _, _ in LESIONS[:2]])
        for row in rp:
            zyx = np.asarray(row.xyz[::-1])
            dist = np.linalg.norm(zyx - centres, axis=1)     # resampled grid: 1 mm voxels
            self.assertLessEqual(dist.min(), row.diameter / 2 + 1e-9)
        default = nd.make_stage1_patches(csv, tmp / "out", seed=5, progress=False)
        self.assertNotEqual(Path(read_patch_csv(default)[0].patch).parent.parent,
                            Path(rows[0].patch).parent.parent)


class AugmentTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.patch = np.random.default_rng(0).normal(size=(15, 30, 30)).astype(np.float32)

    def test_shape_and_identity(self):
        out = nd.augment_patch(self.patch, np.random.default_rng(1))
        self.assertEqual(out.shape, self.patch.shape)
        self.assertEqual(out.dtype, np.float32)
        self.assertNotAllClose(out, self.patch)
        same = nd.augment_patch(self.patch, np.random.default_rng(1), scale_range=(1, 1),
                                max_rotation=0, flip_probability=0, max_translation=0)
        self.assertAllClose(same, self.patch, atol=1e-5)

    def test_flips_match_numpy(self):
        out = nd.augment_patch(self.patch, np.random.default_rng(1), scale_range=(1, 1),
                               max_rotation=0, flip_probability=1, max_translation=0)
        self.assertAllClose(out, self.patch[:, ::-1, ::-1], atol=1e-5)

    def test_scale_matches_scipy(self):
        out = nd.augment_patch(self.patch, np.random.default_rng(1), scale_range=(0.5, 0.5),
                               max_rotation=0, flip_probability=0, max_translation=0)
        c = (np.array(self.patch.shape) - 1) / 2
        expected = ndi.affine_transform(self.patch.astype(np.float64), np.diag([0.5] * 3),
                                        offset=c - 0.5 * c, order=1, mode="nearest")
        self.assertAllClose(out, expected, atol=1e-4)

    def test_input_not_modified_and_errors(self):
        copy = self.patch.copy()
        nd.augment_patch(self.patch, np.random.default_rng(2))
        self.assertAllEqual(self.patch, copy)
        with self.assertRaisesRegex(ValueError, "patch"):
            nd.augment_patch(self.patch[0], np.random.default_rng(0))
        with self.assertRaisesRegex(ValueError, "rng"):
            nd.augment_patch(self.patch, 0)
        with self.assertRaisesRegex(ValueError, "scale_range"):
            nd.augment_patch(self.patch, np.random.default_rng(0), scale_range=(1.1, 0.9))
        with self.assertRaisesRegex(ValueError, "flip_probability"):
            nd.augment_patch(self.patch, np.random.default_rng(0), flip_probability=2)


class PatchDatasetTest(tf.test.TestCase):

    def _rows(self):
        tmp = Path(self.get_temp_dir())
        rng = np.random.default_rng(0)
        rows = []
        for i in range(10):
            name = "nodule" if i < 3 else "bg"
            p = tmp / f"p{i}.npy"
            np.save(p, rng.normal(size=(15, 30, 30)).astype(np.float32))
            rows.append(PatchRow(str(p), name, (15.0, 15.0, 7.0), None, "/s.mhd"))
        return rows

    def test_batches_and_positive_only_augmentation(self):
        rows = self._rows()
        ds = nd.PatchDataset(rows, {"bg": 0, "nodule": 1}, batch_size=4, seed=3,
                             label_mode="onehot_map")
        self.assertLen(ds, 3)
        seen = []
        for b in range(len(ds)):
            x, y = ds[b]
            self.assertEqual(x.shape[1:], (15, 30, 30, 1))
            self.assertEqual(y.shape, (x.shape[0], 1, 1, 1, 2))
            for xi, yi, i in zip(x, y, ds._order[b * 4:(b + 1) * 4]):
                raw = np.load(rows[i].patch)
                self.assertEqual(int(np.argmax(yi)), int(rows[i].class_name == "nodule"))
                if rows[i].class_name == "bg":
                    self.assertAllEqual(xi[..., 0], raw)
                else:
                    self.assertNotAllClose(xi[..., 0], raw)
                seen.append(int(i))
        self.assertEqual(sorted(seen), list(range(10)))
        again = nd.PatchDataset(rows, {"bg": 0, "nodule": 1}, batch_size=4, seed=3,
                                label_mode="onehot_map")
        self.assertAllEqual(again[1][0], ds[1][0])
        order = ds._order.copy()
        ds.on_epoch_end()
        self.assertNotAllEqual(order, ds._order)

    def test_balance_and_modes(self):
        rows = self._rows()
        ds = nd.PatchDataset(rows, {"bg": 0, "nodule": 1}, batch_size=5, balance=True,
                             augment=False, label_mode="sparse", seed=0)
        labels = np.concatenate([ds[b][1] for b in range(len(ds))])
        self.assertEqual(labels.dtype, np.int32)
        self.assertEqual((int((labels == 0).sum()), int((labels == 1).sum())), (7, 7))
        plain = nd.PatchDataset(rows, {"bg": 0, "nodule": 1}, batch_size=10, shuffle=False,
                                augment=False)
        x, y = plain[0]
        self.assertAllEqual(y, np.eye(2)[[1, 1, 1] + [0] * 7])
        self.assertAllEqual(x[2, ..., 0], np.load(rows[2].patch))
        with self.assertRaisesRegex(ValueError, "label_mode"):
            nd.PatchDataset(rows, {"bg": 0, "nodule": 1}, label_mode="dense")
        with self.assertRaisesRegex(ValueError, "class_mapping"):
            nd.PatchDataset(rows, {"nodule": 1})
        with self.assertRaisesRegex(ValueError, "not in class_mapping"):
            nd.PatchDataset(rows, {"bg": 0})
        with self.assertRaises(IndexError):
            plain[1]


def _stage1_model(bias=2.0):
    from keras_medseg.nodule3d.models import build_candidate_screening

    model = build_candidate_screening(weights=None)
    layer = model.get_layer("c5_conv")
    kernel, b = layer.get_weights()
    layer.set_weights([kernel, np.array([0.0, bias], dtype=np.float32)])
    return model


class Stage2Test(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        cls.tmp = Path(tempfile.mkdtemp(prefix="nodule3d_stage2_"))
        cls.sample = generate_nodule3d(cls.tmp / "in", seed=1, n_series=2, shape=(20, 96, 96),
                                       spacing=(2.0, 1.0, 1.0), nodules_per_series=(1, 2),
                                       diameter_range=(3.0, 8.0), nifti_series=1)
        # The phantom's nodules sit in the lungs, mostly too close to the border for a
        # (25, 60, 60) patch of this small volume; annotate one more lesion at each centre.
        rows = read_series_csv(cls.sample.series_csv)
        extra = [SeriesRow(p, "nodule", (48.0, 48.0, 10.0), 5.0, rows_[0].group)
                 for p, rows_ in group_by_series(rows).items()]
        cls.series_csv = write_series_csv(cls.tmp / "csv" / "series.csv", rows + extra)
        cls.lesions = [(r.path, r.xyz, r.diameter) for r in rows + extra]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_mine_false_positives_analytic(self):
        lesions = [((10.0, 10.0, 10.0), "nodule", 6.0), ((30.0, 10.0, 10.0), "nodule", None)]
        cands = [(10, 10, 12), (10, 10, 13), (34, 10, 10), (35, 10, 10), (20, 20, 20)]
        self.assertAllEqual(nd.mine_false_positives(cands, lesions),
                            [False, True, False, True, True])
        self.assertAllEqual(nd.mine_false_positives(cands, lesions, spacing=(1, 1, 2)),
                            [True, True, False, True, True])
        self.assertAllEqual(nd.mine_false_positives(cands, []), [True] * 5)

    def test_screening_candidates_callable_protocol(self):
        from keras_medseg.nodule3d.models import output_to_input

        prob = np.zeros((5, 6, 7, 2), np.float32)
        prob[..., 0] = 1.0
        prob[1, 2, 3] = (0.1, 0.9)
        prob[4, 5, 6] = (0.05, 0.95)
        prob[1, 2, 4] = (0.15, 0.85)        # suppressed by NMS (heavily overlapping box)
        grid = output_to_input(np.stack(np.meshgrid(np.arange(5), np.arange(6), np.arange(7),
                                                    indexing="ij"), axis=-1))

        def screen(volume):
            return prob, grid

        centres, scores = nd.screening_candidates(screen, np.zeros((19, 40, 42), np.float32),
                                                  nms_size=(5, 10, 10))
        self.assertAllEqual(centres, output_to_input([[4, 5, 6], [1, 2, 3]]))
        self.assertAllClose(scores, [0.95, 0.9])
        with self.assertRaisesRegex(ValueError, "screening callable"):
            nd.screening_candidates(lambda v: (prob, grid[..., :2]), np.zeros((3, 3, 3)))

    def test_mining_with_random_stage1_model(self):
        out = self.tmp / "out"
        model = _stage1_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            csv = nd.make_stage2_patches(self.series_csv, model, out, seed=0,
                                         progress=False)
        rows = read_patch_csv(csv)
        fps = [r for r in rows if r.class_name == "bg"]
        pos = [r for r in rows if r.class_name == "nodule"]
        self.assertNotEmpty(fps)
        self.assertNotEmpty(pos)
        for r in rows:
            self.assertEqual(np.load(r.patch).shape, (25, 60, 60))
            self.assertIn(Path(r.patch).name[:2], ("op", "rp", "fp"))
        self.assertEqual(sorted({r.series for r in pos}), sorted({p for p, _, _ in
                                                                   self.lesions}))
        by_series = {}
        for path, xyz, d in self.lesions:
            series = nd.load_series(path, out / "resampled")
            by_series.setdefault(path, []).append((series.to_resampled(xyz), d))
        for r in fps:
            for centre, d in by_series[r.series]:
                self.assertGreaterEqual(np.linalg.norm(np.asarray(r.xyz[::-1]) - centre), d / 2)
        self.assertTrue(all(r.diameter is None for r in fps))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = nd.make_stage2_patches(self.series_csv, model, out, seed=0, progress=False)
        self.assertEqual(again.read_bytes(), csv.read_bytes())

    def test_quota_stops_mining(self):
        series_rows = read_series_csv(self.series_csv)
        first = series_rows[0].path
        calls = []

        def screen(volume):
            from keras_medseg.nodule3d.models import output_shape_for, output_to_input

            calls.append(volume.shape)
            shape = output_shape_for(volume.shape)
            prob = np.zeros(shape + (2,), np.float32)
            prob[..., 0] = 0.1
            prob[..., 1] = 0.9
            grid = output_to_input(np.stack(np.meshgrid(*map(np.arange, shape),
                                                        indexing="ij"), axis=-1))
            return prob, grid

        screen.fingerprint = "all-positive"
        out = self.tmp / "quota"
        csv = nd.make_stage2_patches(self.series_csv, screen, out, fp_ratio=1,
                                     n_jitter=0, progress=False)
        rows = read_patch_csv(csv)
        self.assertLen(calls, 1)               # the first series alone meets the quota
        fps = [r for r in rows if r.class_name == "bg"]
        self.assertTrue(all(r.series == first for r in fps))
        self.assertGreaterEqual(len(fps), len(series_rows))
        done = sorted(out.glob("patches/stage2_*/*/done.json"))
        self.assertLen(done, 2)                # the second series still gives its positives


@pytest.mark.slow
class ScriptsTest(tf.test.TestCase):

    def test_end_to_end(self):
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        tmp = Path(self.get_temp_dir())
        sample = generate_nodule3d(tmp / "in", seed=2, n_series=3, shape=(20, 96, 96),
                                   spacing=(2.0, 1.0, 1.0), nodules_per_series=(1, 2),
                                   diameter_range=(3.0, 8.0), nifti_series=1)
        kfold_script = _load_script("make_kfold")
        patches_script = _load_script("make_patches")
        for script in (kfold_script, patches_script):
            with contextlib.redirect_stdout(io.StringIO()) as buf, \
                    self.assertRaises(SystemExit) as cm:
                script.main(["--help"])
            self.assertEqual(cm.exception.code, 0)
            self.assertIn("usage", buf.getvalue())
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(kfold_script.main([str(sample.series_csv), "--out-dir",
                                                str(sample.series_csv.parent)]), 1)
        self.assertIn("out_dir", err.getvalue())
        kdir = tmp / "kfold"
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(kfold_script.main([str(sample.series_csv), "--out-dir", str(kdir),
                                                "-k", "3", "--classes",
                                                str(sample.classes_csv)]), 0)
        self.assertLen(list(kdir.glob("kfold_series*_*.csv")), 6)
        pdir = tmp / "patches"
        args = ["--stage", "1", "--out-dir", str(pdir), "--quiet", "--series-csv",
                str(kdir / "kfold_series0_train.csv"), str(kdir / "kfold_series0_test.csv")]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(patches_script.main(args), 0)
        train_csv = pdir / "kfold_patches0_detection_train.csv"
        self.assertEqual(out.getvalue().split(), [str(train_csv),
                                                  str(pdir / "kfold_patches0_detection_test.csv")])
        rows = read_patch_csv(train_csv)
        self.assertNotEmpty(rows)
        before = train_csv.read_bytes()
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(patches_script.main(args), 0)
        self.assertEqual(train_csv.read_bytes(), before)

        model_path = tmp / "stage1.keras"
        _stage1_model().save(model_path)
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            patches_script.main(["--stage", "2", "--out-dir", str(pdir), "--series-csv",
                                 str(kdir / "kfold_series0_train.csv")])
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.assertEqual(patches_script.main(
                ["--stage", "2", "--model", str(model_path), "--out-dir", str(pdir),
                 "--quiet", "--series-csv", str(kdir / "kfold_series0_train.csv")]), 0)
        rows2 = read_patch_csv(pdir / "kfold_patches0_reduction_train.csv")
        self.assertTrue(any(r.class_name == "bg" for r in rows2))
        self.assertTrue(all(np.load(r.patch).shape == (25, 60, 60) for r in rows2))
        ds = nd.PatchDataset(train_csv, pdir / "mapping.csv", batch_size=8,
                             label_mode="onehot_map")
        x, y = ds[0]
        self.assertEqual(x.shape[1:], (15, 30, 30, 1))
        self.assertEqual(y.shape[1:], (1, 1, 1, 2))
