"""End-to-end test of the nodule3d fold loop at tiny size: every artefact, then resume."""
import dataclasses
import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from keras_medseg.nodule3d.pipeline import (PipelineConfig, quick_configs, reevaluate_run,
                                            run_pipeline)


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

    def test_stage2_ensemble(self):
        import keras
        import numpy as np

        import keras_medseg.nodule3d.layers  # noqa: F401
        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        tmp = Path(self.get_temp_dir())
        sample = generate_nodule3d(tmp / "in", seed=4, n_series=2, shape=(16, 160, 160),
                                   spacing=(2.0, 0.8, 0.8), nodules_per_series=(2, 2),
                                   diameter_range=(6.0, 10.0), nifti_series=0)
        p, s1, s2, ev = tiny_configs(stage2_members=2)
        s1 = dataclasses.replace(s1, epoch_checkpoints=False)
        out = tmp / "run"
        lines = []
        run_pipeline(sample.series_csv, out, pipeline=p, stage1=s1, stage2=s2, evaluation=ev,
                     log=lines.append)
        f0 = out / "fold0"
        self.assertIn("[nodule3d] fold0: train_stage2_m1 ...", lines)
        load = lambda name: keras.saving.load_model(f0 / name, compile=False)  # noqa: E731
        members = [load("stage2/model.keras"), load("stage2_m1/model.keras")]
        ensemble = load("stage2_ensemble/model.keras")
        x = np.random.default_rng(0).normal(size=(2,) + tuple(ensemble.inputs[0].shape[1:]))
        x = x.astype(np.float32)
        outs = [m(x) for m in members]
        # the second member has its own seed: different weights, different outputs
        self.assertGreater(np.abs(np.asarray(outs[0]["classification"])
                                  - np.asarray(outs[1]["classification"])).max(), 1e-4)
        got = ensemble(x)
        for key in ("classification", "regression"):
            self.assertAllClose(got[key], (np.asarray(outs[0][key]) + np.asarray(outs[1][key]))
                                / 2, atol=1e-5)
        self.assertTrue((f0 / "evaluation" / "metrics.json").is_file())
        det = keras.saving.load_model(f0 / "detector.keras", compile=False)
        nested = [m for m in det.layers if isinstance(m, keras.Model)]   # the ensemble
        self.assertIn("member_1", [layer.name for m in nested for layer in m.layers])
        with self.assertRaisesRegex(ValueError, "stage2_members"):
            PipelineConfig(stage2_members=0)

        # re-evaluation of the finished run: same settings reproduce the run's own evaluation
        # (so the ensemble, not member 0, is scored); other settings go to their own folder
        own = f0 / "evaluation" / "candidates.csv"
        before = (own.read_text(), os.path.getmtime(own))
        same = reevaluate_run(out, "eval_same", evaluation=ev, log=lines.append)
        self.assertEqual((out / "eval_same" / "fold0" / "candidates.csv").read_text(),
                         before[0])
        self.assertAllClose(same.froc.cpm, json.loads(
            (f0 / "evaluation" / "metrics.json").read_text())["cpm"])
        ev_odds = dataclasses.replace(ev, score="odds")
        odds = reevaluate_run(out, "eval_odds", evaluation=ev_odds, log=lines.append)
        self.assertTrue((out / "eval_odds" / "summary" / "folds.md").is_file())
        self.assertEqual(odds.froc.num_lesions, same.froc.num_lesions)
        self.assertEqual((own.read_text(), os.path.getmtime(own)), before)
        lines.clear()
        reevaluate_run(out, "eval_odds", evaluation=ev_odds, log=lines.append)   # resumes
        self.assertIn("[nodule3d] eval_odds: fold0: done, skipped", lines)
        with self.assertRaisesRegex(ValueError, "other settings"):
            reevaluate_run(out, "eval_odds", evaluation=ev, log=lines.append)
        for bad in ("summary", "fold0", "a/b", ""):
            with self.assertRaisesRegex(ValueError, "name"):
                reevaluate_run(out, bad, evaluation=ev)
        with self.assertRaisesRegex(FileNotFoundError, "no finished fold"):
            reevaluate_run(tmp / "in", "x", evaluation=ev)
        # the documented script
        import importlib.util

        script = Path(__file__).parents[2] / "experiments" / "nodule3d" / "evaluate.py"
        spec = importlib.util.spec_from_file_location("nodule3d_evaluate", script)
        cli = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cli)
        args = ["--run-dir", str(out), "--eval-score", "odds", "--eval-max-candidates", "4",
                "--eval-bootstrap", "10"]
        self.assertEqual(cli.main(args + ["--name", "eval_cli"]), 0)
        self.assertEqual((out / "eval_cli" / "fold0" / "candidates.csv").read_text(),
                         (out / "eval_odds" / "fold0" / "candidates.csv").read_text())
        self.assertEqual(cli.main(args + ["--name", "summary"]), 1)

    def test_config_errors(self):
        with self.assertRaisesRegex(ValueError, "folds"):
            PipelineConfig(k=3, folds=(3,))
        with self.assertRaisesRegex(ValueError, "k must"):
            PipelineConfig(k=1)
