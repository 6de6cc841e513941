"""End-to-end test of the nodule3d fold loop at tiny size: every artefact, then resume."""
import dataclasses
import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from keras_medseg.nodule3d.pipeline import PipelineConfig, quick_configs, run_pipeline


def tiny_configs(**pipeline):
    p, s1, s2, ev = quick_configs(stage1_epochs=1, stage2_epochs=1)
    p = dataclasses.replace(p, k=2, folds=(0,), n_jitter=1, mining_threshold=0.0,
                            **pipeline)
    s1 = dataclasses.replace(s1, epoch_checkpoints=True)
    s2 = dataclasses.replace(s2, batch_size=8)
    ev = dataclasses.replace(ev, max_candidates=4, bootstrap=10)
    return p, s1, s2, ev


@pytest.mark.slow
class PipelineTest(tf.test.TestCase):

    def test_fold_end_to_end_and_resume(self):
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        tmp = Path(self.get_temp_dir())
        sample = generate_nodule3d(tmp / "in", seed=4, n_series=2, shape=(16, 160, 160),
                                   spacing=(2.0, 0.8, 0.8), nodules_per_series=(2, 2),
                                   diameter_range=(6.0, 10.0), nifti_series=0)
        p, s1, s2, ev = tiny_configs()
        out = tmp / "run"
        lines = []
        result = run_pipeline(sample.series_csv, out, pipeline=p, stage1=s1, stage2=s2,
                              evaluation=ev, log=lines.append)
        f0 = out / "fold0"
        for name in ("kfold/kfold_series0_train.csv", "kfold/kfold_series1_test.csv",
                     "data/mapping.csv", "data/kfold_patches0_detection_train.csv",
                     "data/kfold_patches0_reduction_train.csv",
                     "data/kfold_patches0_reduction_train_targets.csv",
                     "fold0/stage1/model.keras", "fold0/stage1/log.csv",
                     "fold0/stage1/config.json", "fold0/stage1/checkpoints/epoch_001.weights.h5",
                     "fold0/stage2/model.keras", "fold0/stage2/log.csv", "fold0/detector.keras",
                     "fold0/evaluation/candidates.csv", "fold0/evaluation/lesions.csv",
                     "fold0/evaluation/froc.png", "fold0/evaluation/froc.md",
                     "fold0/evaluation/recall.md", "fold0/evaluation/metrics.json",
                     "summary/folds.md", "summary/froc.png", "summary/froc.csv",
                     "summary/pipeline.json"):
            self.assertTrue((out / name).is_file(), name)
        self.assertIn("regression_loss", (f0 / "stage2" / "log.csv").read_text())
        targets = (out / "data" / "kfold_patches0_reduction_train_targets.csv").read_text()
        self.assertGreater(len(targets.splitlines()), 1)      # positives with targets
        metrics = json.loads((f0 / "evaluation" / "metrics.json").read_text())
        self.assertEqual(metrics["num_scans"], 1)
        self.assertEqual(metrics["num_lesions"], 2)
        self.assertEqual(result.pooled.froc.num_scans, 1)
        self.assertAllClose(result.pooled.froc.cpm, metrics["cpm"])
        self.assertLen(result.pooled.froc_rows, 8)
        # the saved detector reloads as one model
        import keras

        import keras_medseg.nodule3d.layers  # noqa: F401

        det = keras.saving.load_model(f0 / "detector.keras", compile=False)
        self.assertIn("class_probabilities", det.output)

        # a second call skips every finished step and rewrites no model
        mtimes = {p_: os.path.getmtime(f0 / p_) for p_ in
                  ("stage1/model.keras", "stage2/model.keras", "detector.keras")}
        lines.clear()
        again = run_pipeline(sample.series_csv, out, pipeline=p, stage1=s1, stage2=s2,
                             evaluation=ev, log=lines.append)
        skipped = [l_ for l_ in lines if l_.endswith("done, skipped")]
        self.assertLen(skipped, 7)
        self.assertEqual({p_: os.path.getmtime(f0 / p_) for p_ in mtimes}, mtimes)
        self.assertAllClose(again.pooled.froc.cpm, result.pooled.froc.cpm)
        # other settings in the same out_dir are refused
        p2, *_ = tiny_configs(negative_ratio=1)
        with self.assertRaisesRegex(ValueError, "other settings"):
            run_pipeline(sample.series_csv, out, pipeline=p2, stage1=s1, stage2=s2,
                         evaluation=ev, log=lines.append)
        p3, *_ = tiny_configs(jitter_in_lesion=True)     # reaches the patch steps
        with self.assertRaisesRegex(ValueError, "other settings"):
            run_pipeline(sample.series_csv, out, pipeline=p3, stage1=s1, stage2=s2,
                         evaluation=ev, log=lines.append)

    def test_config_errors(self):
        with self.assertRaisesRegex(ValueError, "folds"):
            PipelineConfig(k=3, folds=(3,))
        with self.assertRaisesRegex(ValueError, "k must"):
            PipelineConfig(k=1)
