"""The data_prep/ scripts end to end on tiny synthetic data (keras_medseg.sampledata).

Each script is run in-process through its ``main(argv)``; ``--help`` runs in a subprocess.
Checked for every script: outputs against independent references, inputs unchanged (sha256),
a second run skips everything and leaves outputs (content and mtime) unchanged, and an
output folder inside the input folder is refused.
"""
import contextlib
import hashlib
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from keras_medseg.io import prep
from keras_medseg.io.images import ImageFileError, read_image, read_mask
from keras_medseg.sampledata import generate_iseg, generate_nerve

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("crop_frames", "resize_images", "make_imagesets", "images_to_tfrecord",
           "prepare_hdf5_cutedge")


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"_data_prep_{name}",
                                                  REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name, argv):
    """(return code, stdout, stderr) of ``data_prep/<name>.py argv`` run in-process."""
    argv = [str(a) for a in argv]
    if name != "make_imagesets":  # the one script without a progress bar
        argv.append("--no-progress")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = load_script(name).main(argv)
    return rc, out.getvalue(), err.getvalue()


def tree_state(folder):
    """{relative path: (sha256, mtime_ns)} of every file under ``folder`` (hidden included)."""
    state = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            state[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                 p.stat().st_mtime_ns)
    return state


def nerve_data(root, raw_frames=0):
    return generate_nerve(Path(root) / "nerve", seed=3, image_size=32, n_videos=6,
                          test_videos=1, frames_per_class=2, raw_frames=raw_frames)


def coordinate_frame():
    """A 1080x1920 RGB frame whose pixels encode their own (x, y): 12-bit x and y split
    over the three channels."""
    y, x = np.mgrid[:1080, :1920]
    return np.stack([x & 255, y & 255, (x >> 8) | ((y >> 8) << 4)], axis=-1).astype(np.uint8)


def decode_coordinates(image):
    image = image.astype(np.int64)
    return image[..., 0] | ((image[..., 2] & 15) << 8), image[..., 1] | ((image[..., 2] >> 4) << 8)


class HelpTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*SCRIPTS)
    def test_help_in_subprocess(self, name):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, str(REPO / "data_prep" / f"{name}.py"), "--help"],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("usage:", proc.stdout)
        self.assertIn("out_dir", proc.stdout)
        self.assertIn("python data_prep/", proc.stdout)  # the documented example command


class CropFramesTest(tf.test.TestCase):

    def test_geometry_nearest_matches_formula(self):
        out = prep.crop_frame_1080_to_512(coordinate_frame(), interpolation="nearest")
        self.assertEqual(out.shape, (512, 512, 3))
        xs, ys = decode_coordinates(out)
        r = 1080 / 1608
        left, top, right, bottom = 340 * r, 0.0, 1608 * r, 1608 * r
        j = np.arange(512)
        expect_x = np.floor(left + (j + 0.5) * (right - left) / 512).astype(int)
        expect_y = np.floor(top + (j + 0.5) * (bottom - top) / 512).astype(int)
        np.testing.assert_array_equal(xs, np.broadcast_to(expect_x, (512, 512)))
        np.testing.assert_array_equal(ys, np.broadcast_to(expect_y[:, None], (512, 512)))
        self.assertEqual((xs.min(), xs.max(), ys.min(), ys.max()), (229, 1079, 1, 1078))

    def test_geometry_bilinear_ramp(self):
        # A horizontal ramp inside the box: linear filters reproduce it at the sample points.
        x = np.arange(1920, dtype=np.float64)
        slope = 0.299
        ramp = np.clip(np.rint((x - 228) * slope), 0, 255).astype(np.uint8)
        frame = np.broadcast_to(ramp[None, :, None], (1080, 1920, 3)).copy()
        out = prep.crop_frame_1080_to_512(frame, size=(64, 128)).astype(np.float64)
        self.assertEqual(out.shape, (64, 128, 3))
        r = 1080 / 1608
        left, right = 340 * r, 1608 * r
        j = np.arange(128)
        sample_x = left + (j + 0.5) * (right - left) / 128 - 0.5
        expect = (sample_x - 228) * slope
        np.testing.assert_allclose(out[:, 2:-2, 0], np.broadcast_to(expect[2:-2], (64, 124)),
                                   atol=1.0)

    def test_bad_frames(self):
        with self.assertRaisesRegex(ValueError, "1080 pixels high"):
            prep.crop_frame_1080_to_512(np.zeros((720, 1280, 3), np.uint8))
        with self.assertRaisesRegex(ValueError, "uint8"):
            prep.crop_frame_1080_to_512(np.zeros((1080, 1920, 3), np.float32))
        with self.assertRaisesRegex(ValueError, "interpolation"):
            prep.crop_frame_1080_to_512(np.zeros((1080, 1920), np.uint8), interpolation="area")

    def test_script_end_to_end_idempotent_inputs_untouched(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data", raw_frames=2)
        before = tree_state(tmp / "data")
        out = tmp / "out" / "frames_512"
        rc, stdout, _ = run_main("crop_frames", [data.raw_frames_dir, out, "--suffix", ".png"])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 2, skipped 0", stdout)
        sources = sorted(data.raw_frames_dir.glob("*.jpg"))
        self.assertEqual(sorted(p.name for p in out.iterdir()),
                         [p.with_suffix(".png").name for p in sources])
        for src in sources:
            frame = read_image(src)
            self.assertEqual(frame.shape, (1080, 1920, 3))
            got = read_image(out / src.with_suffix(".png").name)
            np.testing.assert_array_equal(got, prep.crop_frame_1080_to_512(frame))
            # The generator pasted its 32x32 frame into the crop box: cropping recovers it.
            original = read_image(next(data.classification_dir.glob(f"*/*/{src.name}")))
            small = np.asarray(Image.fromarray(got).resize((32, 32), Image.BILINEAR))
            self.assertLess(np.abs(small.astype(float) - original).mean(), 8.0)
        first = tree_state(out)
        rc, stdout, _ = run_main("crop_frames", [data.raw_frames_dir, out, "--suffix", ".png"])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 0, skipped 2 already finished", stdout)
        self.assertEqual(tree_state(out), first)
        self.assertEqual(tree_state(tmp / "data"), before)

    def test_refuses_output_in_input(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data", raw_frames=1)
        before = tree_state(data.raw_frames_dir)
        for out in (data.raw_frames_dir, data.raw_frames_dir / "cropped"):
            rc, _, stderr = run_main("crop_frames", [data.raw_frames_dir, out])
            self.assertEqual(rc, 1)
            self.assertIn("input folder", stderr)
            self.assertIn(str(data.raw_frames_dir), stderr)
        self.assertEqual(tree_state(data.raw_frames_dir), before)
        self.assertFalse((data.raw_frames_dir / "cropped").exists())

    def test_bad_input_names_file_and_leaves_no_partial_output(self):
        tmp = Path(self.get_temp_dir())
        src = tmp / "raw"
        src.mkdir()
        Image.fromarray(coordinate_frame()).save(src / "a_good.png")
        Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(src / "b_small.png")
        good = (src / "a_good.png").read_bytes()
        (src / "c_corrupt.png").write_bytes(good[: len(good) // 3])
        out = tmp / "out"
        rc, _, stderr = run_main("crop_frames", [src, out])
        self.assertEqual(rc, 1)
        self.assertIn("b_small.png", stderr)
        self.assertIn("1080", stderr)
        self.assertEqual(sorted(os.listdir(out)), ["a_good.png"])  # no temporary leftovers
        (src / "b_small.png").unlink()
        with self.assertRaisesRegex(ImageFileError, "c_corrupt.png"):
            prep.crop_frames(src, out, progress=False)
        self.assertEqual(sorted(os.listdir(out)), ["a_good.png"])


class ResizeImagesTest(tf.test.TestCase):

    def test_recursive_sizes_nearest_masks_idempotent(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        before = tree_state(tmp / "data")
        out = tmp / "out" / "resized"
        rc, stdout, _ = run_main("resize_images", [data.classification_dir, out, "--size", "24",
                                                   "40", "--recursive"])
        self.assertEqual(rc, 0, stdout)
        sources = sorted(p.relative_to(data.classification_dir)
                         for p in data.classification_dir.rglob("*.jpg"))
        self.assertEqual(sorted(p.relative_to(out) for p in out.rglob("*.jpg")), sources)
        self.assertIn(f"wrote {len(sources)}, skipped 0", stdout)
        for rel in sources:
            with Image.open(out / rel) as im:
                self.assertEqual((im.height, im.width, im.mode), (24, 40, "RGB"))
        first = tree_state(out)
        rc, stdout, _ = run_main("resize_images", [data.classification_dir, out, "--size", "24",
                                                   "40", "--recursive"])
        self.assertEqual(rc, 0)
        self.assertIn(f"wrote 0, skipped {len(sources)} already finished", stdout)
        self.assertEqual(tree_state(out), first)

        masks = data.segmentation_dir / "masks_machine"
        mask_out = tmp / "out" / "masks_16"
        rc, _, _ = run_main("resize_images", [masks, mask_out, "--size", "16",
                                              "--interpolation", "nearest"])
        self.assertEqual(rc, 0)
        for src in masks.glob("*.png"):
            small = read_mask(mask_out / src.name)
            self.assertEqual(small.shape, (16, 16))
            self.assertTrue(set(np.unique(small)) <= {0, 1})
            full = read_mask(src)
            # nearest neighbour: every output pixel is the source pixel its centre falls in
            idx = (np.arange(16) + 0.5) * full.shape[0] / 16
            np.testing.assert_array_equal(small, full[np.ix_(idx.astype(int), idx.astype(int))])
        self.assertEqual(tree_state(tmp / "data"), before)

    def test_refuses_output_in_input_and_bad_args(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        rc, _, stderr = run_main("resize_images", [data.classification_dir,
                                                   data.classification_dir / "nerve" / "small"])
        self.assertEqual(rc, 1)
        self.assertIn("lies inside the input folder", stderr)
        with self.assertRaisesRegex(ValueError, "quality"):
            prep.resize_images(data.classification_dir / "nerve", tmp / "q", quality=0)
        with self.assertRaisesRegex(FileNotFoundError, "no image"):
            prep.resize_images(tmp / "data" / "nerve" / "segmentation", tmp / "empty")


class MakeImagesetsTest(tf.test.TestCase):

    def _read(self, folder):
        return {k: (folder / "ImageSets" / f"{k}.txt").read_text().split()
                for k in ("train", "val", "trainval", "test")}

    def test_seeded_group_disjoint_deterministic_idempotent(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        img = data.segmentation_dir / "img"
        before = tree_state(tmp / "data")
        stems = sorted(p.stem for p in img.glob("*.jpg"))
        args = ["--seed", "7", "--group-pattern", r"^(v\d+)_"]
        rc, stdout, _ = run_main("make_imagesets", [img, tmp / "a"] + args)
        self.assertEqual(rc, 0)
        self.assertIn("wrote 5, skipped 0", stdout)
        sets = self._read(tmp / "a")
        self.assertCountEqual(sets["train"] + sets["val"] + sets["test"], stems)
        self.assertCountEqual(sets["trainval"], sets["train"] + sets["val"])
        videos = {k: {n.split("_")[0] for n in sets[k]} for k in ("train", "val", "test")}
        self.assertTrue(all(videos[k] for k in videos))
        self.assertFalse(videos["train"] & videos["val"] or videos["train"] & videos["test"]
                         or videos["val"] & videos["test"])
        # deterministic: the same seed elsewhere gives byte-identical files
        run_main("make_imagesets", [img, tmp / "b"] + args)
        a, b = tree_state(tmp / "a" / "ImageSets"), tree_state(tmp / "b" / "ImageSets")
        self.assertEqual({k: v[0] for k, v in a.items()}, {k: v[0] for k, v in b.items()})
        # other seeds give other splits (some of seeds 8..12 must differ from seed 7)
        others = []
        for seed in range(8, 13):
            run_main("make_imagesets", [img, tmp / f"s{seed}", "--seed", seed,
                                        "--group-pattern", r"^(v\d+)_"])
            others.append(self._read(tmp / f"s{seed}")["test"])
        self.assertTrue(any(sorted(t) != sorted(sets["test"]) for t in others))
        # idempotent
        rc, stdout, _ = run_main("make_imagesets", [img, tmp / "a"] + args)
        self.assertEqual(rc, 0)
        self.assertIn("wrote 0, skipped 5 already finished", stdout)
        self.assertEqual(tree_state(tmp / "a" / "ImageSets"), a)
        # a different split over existing files is refused unless --overwrite
        rc, _, stderr = run_main("make_imagesets", [img, tmp / "a", "--seed", "8"])
        self.assertEqual(rc, 1)
        self.assertIn("already exists with different contents", stderr)
        self.assertEqual(tree_state(tmp / "a" / "ImageSets"), a)
        rc, _, _ = run_main("make_imagesets", [img, tmp / "a", "--seed", "8", "--overwrite"])
        self.assertEqual(rc, 0)
        self.assertNotEqual(tree_state(tmp / "a" / "ImageSets"), a)
        self.assertEqual([p for p in os.listdir(tmp / "a" / "ImageSets") if p.startswith(".")], [])
        self.assertEqual(tree_state(tmp / "data"), before)

    def test_fractions_without_groups_and_errors(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        img = data.segmentation_dir / "img"
        n = len(list(img.glob("*.jpg")))
        rc, _, _ = run_main("make_imagesets", [img, tmp / "o", "--val-fraction", "0.25",
                                               "--test-fraction", "0.25"])
        self.assertEqual(rc, 0)
        sets = self._read(tmp / "o")
        self.assertEqual((len(sets["val"]), len(sets["test"])), (round(n / 4), round(n / 4)))
        self.assertEqual(len(sets["train"]), n - 2 * round(n / 4))
        rc, _, stderr = run_main("make_imagesets", [img, img])
        self.assertEqual(rc, 1)
        self.assertIn("is the input folder", stderr)
        rc, _, stderr = run_main("make_imagesets", [img, tmp / "p", "--group-pattern", "^x"])
        self.assertEqual(rc, 1)
        self.assertIn(".jpg", stderr)  # names the file the pattern misses
        self.assertFalse((tmp / "p" / "ImageSets").exists())


class ImagesToTfrecordTest(tf.test.TestCase):

    def test_raw_and_png_sharded_equal_to_sources(self):
        from keras_medseg.io.tfrecord import read_tfrecords

        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        img, masks = data.segmentation_dir / "img", data.segmentation_dir / "masks_machine"
        prep.make_imagesets_from_folder(img, tmp / "sets", seed=1, group_pattern=r"^(v\d+)_")
        before = tree_state(tmp / "data")
        out = tmp / "records"
        rc, stdout, _ = run_main("images_to_tfrecord", [img, masks, tmp / "sets", out])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 2, skipped 0", stdout)
        rc, _, _ = run_main("images_to_tfrecord", [img, masks, tmp / "sets" / "ImageSets",
                                                   tmp / "png", "--encoding", "png",
                                                   "--records-per-shard", "3",
                                                   "--splits", "trainval"])
        self.assertEqual(rc, 0)
        names = (tmp / "sets" / "ImageSets" / "trainval.txt").read_text().split()
        shards = sorted((tmp / "png").glob("trainval-*.tfrecords"))
        self.assertLen(shards, math.ceil(len(names) / 3))
        for path in (out / "trainval.tfrecords", tmp / "png" / "trainval.tfrecords"):
            records = list(read_tfrecords(path).as_numpy_iterator())
            self.assertEqual([r[2].decode() for r in records], [f"{n}.jpg" for n in names])
            for (image, mask, _), name in zip(records, names):
                np.testing.assert_array_equal(image, read_image(img / f"{name}.jpg"))
                np.testing.assert_array_equal(mask[..., 0], read_mask(masks / f"{name}.png"))
        test_names = (tmp / "sets" / "ImageSets" / "test.txt").read_text().split()
        self.assertEqual([r[2].decode() for r in read_tfrecords(out / "test.tfrecords")
                          .as_numpy_iterator()], [f"{n}.jpg" for n in test_names])
        first = tree_state(out)
        rc, stdout, _ = run_main("images_to_tfrecord", [img, masks, tmp / "sets", out])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 0, skipped 2 already finished", stdout)
        self.assertEqual(tree_state(out), first)
        self.assertEqual(tree_state(tmp / "data"), before)

    def test_refuses_output_in_input_and_names_missing_file(self):
        tmp = Path(self.get_temp_dir())
        data = nerve_data(tmp / "data")
        img, masks = data.segmentation_dir / "img", data.segmentation_dir / "masks_machine"
        sets = tmp / "sets" / "ImageSets"
        sets.mkdir(parents=True)
        first = sorted(img.glob("*.jpg"))[0].stem
        (sets / "trainval.txt").write_text(f"{first}\nno_such_frame\n")
        rc, _, stderr = run_main("images_to_tfrecord", [img, masks, sets, masks / "rec"])
        self.assertEqual(rc, 1)
        self.assertIn("lies inside the input folder", stderr)
        self.assertFalse((masks / "rec").exists())
        rc, _, stderr = run_main("images_to_tfrecord", [img, masks, sets, tmp / "rec",
                                                        "--splits", "trainval"])
        self.assertEqual(rc, 1)
        self.assertIn("no_such_frame", stderr)
        self.assertEqual(list((tmp / "rec").glob("*")) if (tmp / "rec").exists() else [], [])


class PrepareHdf5CutedgeTest(tf.test.TestCase):

    def _reference(self, subject, margin):
        """Independent reference with nibabel: (Z, X, Y) arrays, bounds, z-scored data."""
        import nibabel as nib

        def load(path):
            return np.transpose(np.asarray(nib.load(str(path)).dataobj), (2, 0, 1))

        t1, t2 = load(subject["T1"]).astype(np.float64), load(subject["T2"]).astype(np.float64)
        mask = t1 > 0
        nz = np.nonzero(mask)
        crop = tuple(slice(max(0, int(ix.min()) - margin), min(n, int(ix.max()) + 1 + margin))
                     for ix, n in zip(nz, mask.shape))
        data = np.stack([(t - t[mask].mean()) / t[mask].std() for t in (t1, t2)])
        data = data[(slice(None),) + crop]
        label = None
        if subject.get("label") is not None:
            raw = load(subject["label"])
            label = np.select([raw == 10, raw == 150, raw == 250], [1, 2, 3], 0)[crop]
        return data, label, mask[crop]

    def test_keys_shapes_zscore_labels_idempotent(self):
        import h5py

        tmp = Path(self.get_temp_dir())
        sample = generate_iseg(tmp / "iseg", seed=2, n_subjects=2, shape=(28, 32, 30))
        # an unlabelled (test) subject
        for role in ("T1", "T2"):
            for ext in (".hdr", ".img"):
                shutil.copy(sample.subjects[0][role].with_suffix(ext),
                            tmp / "iseg" / f"subject-3-{role}{ext}")
        before = tree_state(tmp / "iseg")
        out = tmp / "h5"
        rc, stdout, _ = run_main("prepare_hdf5_cutedge", [tmp / "iseg", out, "--margin", "2"])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 3, skipped 0", stdout)
        self.assertEqual(sorted(os.listdir(out)), ["subject-1.h5", "subject-2.h5", "subject-3.h5"])
        subjects = list(sample.subjects) + [{"id": 3, "T1": tmp / "iseg" / "subject-3-T1.hdr",
                                             "T2": tmp / "iseg" / "subject-3-T2.hdr"}]
        for subject in subjects:
            ref_data, ref_label, mask = self._reference(subject, 2)
            with h5py.File(out / f"subject-{subject['id']}.h5", "r") as f:
                keys = ["data"] if ref_label is None else ["data", "label"]
                self.assertEqual(sorted(f.keys()), keys)
                data = f["data"][()]
                self.assertEqual(data.dtype, np.float32)
                self.assertEqual(data.shape, ref_data.shape)
                self.assertLess(np.prod(data.shape[1:]), 30 * 28 * 32)  # margin 2 really crops
                np.testing.assert_allclose(data, ref_data, rtol=1e-5, atol=1e-5)
                for channel in data:
                    self.assertAllClose([channel[mask].mean(), channel[mask].std()], [0.0, 1.0],
                                        atol=1e-4)
                if ref_label is not None:
                    label = f["label"][()]
                    self.assertEqual(label.dtype, np.uint8)
                    self.assertEqual(set(np.unique(label)), {0, 1, 2, 3})
                    np.testing.assert_array_equal(label, ref_label)
        first = tree_state(out)
        rc, stdout, _ = run_main("prepare_hdf5_cutedge", [tmp / "iseg", out, "--margin", "2"])
        self.assertEqual(rc, 0)
        self.assertIn("wrote 0, skipped 3 already finished", stdout)
        self.assertEqual(tree_state(out), first)
        self.assertEqual(tree_state(tmp / "iseg"), before)

        # default margin 32 keeps the whole (small) volume; caffe layout with --leading-axes
        rc, _, _ = run_main("prepare_hdf5_cutedge", [tmp / "iseg", tmp / "lead", "--leading-axes"])
        self.assertEqual(rc, 0)
        with h5py.File(tmp / "lead" / "subject-1.h5", "r") as f:
            self.assertEqual(f["data"].shape, (1, 2, 30, 28, 32))
            self.assertEqual(f["label"].shape, (1, 1, 30, 28, 32))

    def test_refusal_and_bad_inputs_name_the_file(self):
        import nibabel as nib

        tmp = Path(self.get_temp_dir())
        generate_iseg(tmp / "iseg", seed=2, n_subjects=1, shape=(24, 24, 24))
        rc, _, stderr = run_main("prepare_hdf5_cutedge", [tmp / "iseg", tmp / "iseg" / "h5"])
        self.assertEqual(rc, 1)
        self.assertIn("lies inside the input folder", stderr)
        self.assertFalse((tmp / "iseg" / "h5").exists())

        bad = tmp / "bad"
        bad.mkdir()
        for role in ("T1", "T2"):
            for ext in (".hdr", ".img"):
                shutil.copy(tmp / "iseg" / f"subject-1-{role}{ext}", bad / f"subject-1-{role}{ext}")
        t1 = np.asarray(nib.load(str(bad / "subject-1-T1.hdr")).dataobj)
        label = np.where(t1 > 0, 5, 0).astype(np.uint8)
        nib.save(nib.AnalyzeImage(label, np.eye(4)), str(bad / "subject-1-label.hdr"))
        rc, _, stderr = run_main("prepare_hdf5_cutedge", [bad, tmp / "bad_out"])
        self.assertEqual(rc, 1)
        self.assertIn("subject-1-label.hdr", stderr)
        self.assertIn("[5]", stderr)
        self.assertEqual(os.listdir(tmp / "bad_out") if (tmp / "bad_out").exists() else [], [])

        (bad / "subject-1-T2.img").unlink()
        rc, _, stderr = run_main("prepare_hdf5_cutedge", [bad, tmp / "bad_out"])
        self.assertEqual(rc, 1)
        self.assertIn("subject-1-T2", stderr)
        with self.assertRaisesRegex(FileNotFoundError, "no subject-<i>-T1"):
            prep.find_iseg_subjects(tmp)
        with self.assertRaisesRegex(ValueError, "margin"):
            prep.prepare_iseg_folder(tmp / "iseg", tmp / "m", margin=-1)


class SharedBehaviourTest(tf.test.TestCase):

    def test_check_output_location(self):
        tmp = Path(self.get_temp_dir())
        (tmp / "in" / "sub").mkdir(parents=True)
        (tmp / "link").symlink_to(tmp / "in", target_is_directory=True)
        self.addCleanup((tmp / "link").unlink)
        for out in (tmp / "in", tmp / "in" / "sub" / "x", tmp / "link" / "y"):
            with self.assertRaisesRegex(ValueError, "input folder"):
                prep.check_output_location(out, [tmp / "in"])
        self.assertEqual(prep.check_output_location(tmp / "out", [tmp / "in"]), tmp / "out")
        self.assertEqual(prep.check_output_location(tmp, [tmp / "in"]), tmp)  # parent is fine

    def test_process_files_duplicate_targets_and_summary(self):
        tmp = Path(self.get_temp_dir())
        with self.assertRaisesRegex(ValueError, "would both be written"):
            prep.process_files([("a", tmp / "x"), ("b", tmp / "x")], lambda s, t: None,
                               task="t", out_dir=tmp, progress=False)
        calls = []

        def work(source, target):
            calls.append(source)
            Path(target).write_text(source)

        jobs = [("a", tmp / "o" / "a.txt"), ("b", tmp / "o" / "b.txt")]
        s1 = prep.process_files(jobs, work, task="t", out_dir=tmp / "o", progress=False)
        s2 = prep.process_files(jobs, work, task="t", out_dir=tmp / "o", progress=False)
        s3 = prep.process_files(jobs, work, task="t", out_dir=tmp / "o", overwrite=True,
                                progress=False)
        self.assertEqual(calls, ["a", "b", "a", "b"])
        self.assertEqual((len(s1.written), len(s2.skipped), len(s3.written)), (2, 2, 2))
        self.assertIn("wrote 0, skipped 2 already finished", str(s2))


if __name__ == "__main__":
    tf.test.main()
