"""Tests of nodule3d training: regression targets, augmented targets, both stages' runs."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_medseg.io.tables import read_patch_csv, read_series_csv
from keras_medseg.nodule3d import data as nd
from keras_medseg.nodule3d.losses import decode_regression
from keras_medseg.nodule3d.training import (RegressionPatchDataset, Stage1Config, Stage2Config,
                                            augmented_target, quick_stage1_config,
                                            quick_stage2_config, read_regression_targets,
                                            train_stage1, train_stage2,
                                            write_regression_targets)


def _no_candidates(volume):
    """A screening callable that finds nothing (stage-2 patches = positives only)."""
    shape = (2, 2, 2)
    probs = np.zeros(shape + (2,), np.float32)
    probs[..., 0] = 1
    return probs, np.zeros(shape + (3,), np.int64)


class AugmentedTargetTest(tf.test.TestCase):

    def test_flips_mirror_the_centre(self):
        shape, centre = (25, 60, 60), np.array([12.0, 20.3, 41.0])
        c, d = augmented_target(shape, centre, 8.0, [0], scale_range=(1, 1), max_rotation=0,
                                flip_probability=1.0, max_translation=0)
        self.assertAllClose(c, [12.0, 59 - 20.3, 59 - 41.0], atol=1e-3)
        self.assertAllClose(d, 8.0, atol=1e-3)

    def test_scale_moves_towards_the_centre_and_shrinks(self):
        # output p samples input at s (p - m) + m: a lesion at q appears at m + (q - m) / s
        shape, centre = (25, 60, 60), np.array([10.0, 25.0, 35.0])
        m = (np.asarray(shape) - 1) / 2
        c, d = augmented_target(shape, centre, 6.0, [1], scale_range=(1.2, 1.2),
                                max_rotation=0, flip_probability=0, max_translation=0)
        self.assertAllClose(c, m + (centre - m) / 1.2, atol=0.06)  # blob sampling
        self.assertAllClose(d, 6.0 / 1.2, rtol=0.02)


class RegressionTargetsTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "nodule3d_training"
        sample = generate_nodule3d(cls.tmp / "in", seed=3, n_series=1, shape=(24, 160, 160),
                                   spacing=(2.0, 0.8, 0.8), nodules_per_series=(2, 2),
                                   diameter_range=(6.0, 12.0))
        cls.series_csv = sample.series_csv
        cls.out = cls.tmp / "out"
        with pytest.warns(UserWarning, match="false positives"):
            cls.patch_csv = nd.make_stage2_patches(sample.series_csv, _no_candidates, cls.out,
                                                   n_jitter=2, progress=False)
        cls.targets_csv = write_regression_targets(cls.patch_csv, sample.series_csv,
                                                   cls.out / "resampled")

    def test_targets_point_at_the_lesions(self):
        rows = [r for r in read_patch_csv(self.patch_csv) if r.class_name != "bg"]
        self.assertNotEmpty(rows)
        targets = read_regression_targets(self.targets_csv)
        self.assertEqual(set(targets), {r.patch for r in rows})
        series = nd.load_series(rows[0].series, self.out / "resampled")
        lesions = {les.diameter: series.to_resampled(les.xyz)
                   for les in read_series_csv(self.series_csv)}
        for r in rows:
            centre, d = targets[r.patch]
            start = np.asarray(r.xyz[::-1]) - np.asarray([25, 60, 60]) // 2
            self.assertAllClose(start + centre, lesions[r.diameter], atol=1e-6)
            self.assertAllClose(d, r.diameter)          # 1 mm voxels
            patch = np.load(r.patch)
            # the patch is bright (nodule) at the target centre
            self.assertGreater(patch[tuple(np.round(centre).astype(int))], 0)

    def test_dataset_labels_decode_to_the_targets(self):
        ds = RegressionPatchDataset(self.patch_csv, self.out / "mapping.csv", self.targets_csv,
                                    batch_size=64, augment=False, shuffle=False)
        x, y = ds[0]
        self.assertEqual(x.shape[1:], (25, 60, 60, 1))
        self.assertAllEqual(y["classification"].argmax(1), ds.labels)
        reg = y["regression"]
        pos = reg[:, 0] == 1
        self.assertAllEqual(pos, ds.labels != 0)
        centres, diam = decode_regression(reg[pos, 1:])
        targets = read_regression_targets(self.targets_csv)
        rows = [r for r, p in zip(ds.rows, pos) if p]
        self.assertAllClose(centres, [targets[r.patch][0] for r in rows], atol=1e-4)
        self.assertAllClose(diam, [targets[r.patch][1] for r in rows], rtol=1e-4)
        # augmented: same classes, targets still finite and near the patch
        ds_aug = RegressionPatchDataset(self.patch_csv, self.out / "mapping.csv",
                                        self.targets_csv, batch_size=64, augment=True,
                                        shuffle=False)
        _, y2 = ds_aug[0]
        self.assertAllEqual(y2["classification"], y["classification"])
        self.assertTrue(np.all(np.isfinite(y2["regression"])))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "target"):
            RegressionPatchDataset(self.patch_csv, self.out / "mapping.csv", {})
        with self.assertRaisesRegex(ValueError, "label_mode"):
            RegressionPatchDataset(self.patch_csv, self.out / "mapping.csv", self.targets_csv,
                                   label_mode="sparse")
        with self.assertRaisesRegex(FileNotFoundError, "missing.csv"):
            read_regression_targets(self.out / "missing.csv")
        with self.assertRaisesRegex(ValueError, "targets must be given"):
            train_stage2(self.patch_csv, self.out / "s2", self.out / "mapping.csv",
                         config=quick_stage2_config(init_from_stage1=False))
        with self.assertRaisesRegex(ValueError, "stage1_model"):
            train_stage2(self.patch_csv, self.out / "s2", self.out / "mapping.csv",
                         targets=self.targets_csv, config=quick_stage2_config())
        with self.assertRaisesRegex(ValueError, "Stage1Config"):
            train_stage1(self.patch_csv, self.out / "s1", self.out / "mapping.csv",
                         config=Stage2Config())


class ConfigTest(tf.test.TestCase):

    def test_defaults_are_the_originals(self):
        c = Stage1Config()
        self.assertEqual((c.batch_size, c.epochs, c.learning_rate, c.clipnorm, c.lr_factor,
                          c.lr_patience), (32, 50, 1e-5, 0.001, 0.1, 2))
        c2 = Stage2Config()
        self.assertTrue(c2.regression)
        self.assertEqual(c2.l2, 1e-4)
        self.assertEqual(quick_stage1_config().learning_rate, 1e-3)

    def test_errors(self):
        for kwargs, name in ((dict(batch_size=0), "batch_size"), (dict(lr_factor=1.5), "lr_factor"),
                             (dict(progress="x"), "progress"), (dict(learning_rate=-1),
                                                                 "learning_rate")):
            with self.assertRaisesRegex(ValueError, name):
                Stage1Config(**kwargs)
        with self.assertRaisesRegex(ValueError, "regression_weight"):
            Stage2Config(regression_weight=-1)


class TrainStage1Test(tf.test.TestCase):

    def test_one_epoch_resume_and_other_settings(self):
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        tmp = Path(self.get_temp_dir())
        sample = generate_nodule3d(tmp / "in", seed=5, n_series=1, shape=(16, 64, 64),
                                   spacing=(2.0, 0.8, 0.8), nodules_per_series=(2, 2),
                                   diameter_range=(4.0, 8.0))
        csv = nd.make_stage1_patches(sample.series_csv, tmp / "out", n_jitter=2,
                                     progress=False)
        cfg = quick_stage1_config(epochs=1, epoch_checkpoints=True)
        run = tmp / "s1"
        path = train_stage1(csv, run, tmp / "out" / "mapping.csv", config=cfg)
        for name in ("model.keras", "log.csv", "config.json", "best.keras",
                     "checkpoints/epoch_001.weights.h5", "stages/stage1.json"):
            self.assertTrue((run / name).is_file(), name)
        saved = json.loads((run / "config.json").read_text())["stage1"]
        self.assertEqual(saved["learning_rate"], 1e-3)
        import keras

        model = keras.saving.load_model(path, compile=False)
        self.assertEqual(model.inputs[0].shape[1:4], (None, None, None))
        mtime = os.path.getmtime(path)
        self.assertEqual(train_stage1(csv, run, tmp / "out" / "mapping.csv", config=cfg), path)
        self.assertEqual(os.path.getmtime(path), mtime)
        with self.assertRaisesRegex(ValueError, "other settings"):
            train_stage1(csv, run, tmp / "out" / "mapping.csv",
                         config=quick_stage1_config(epochs=2))
