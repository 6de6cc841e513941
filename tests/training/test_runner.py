"""The shared runner: resume after interruption without repeated epochs, best checkpoint,
finished stages skipped on rerun, config/splits files; dataclass configs and argparse."""
import argparse
import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_medseg.training import (
    DataConfig,
    ModelConfig,
    Runner,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
    config_to_dict,
    load_config,
    read_csv_log,
    train,
)


def build_linear():
    inp = keras.Input((3,))
    return keras.Model(inp, keras.layers.Dense(1, name="dense")(inp))


def linear_data(n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3).astype("float32")
    return x, y


COMPILE = dict(optimizer=lambda: keras.optimizers.SGD(0.05), loss="mse")


class Interrupt(keras.callbacks.Callback):
    """Raise at the start of epoch ``at`` (a killed process, as far as fit can tell)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated kill")


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.start_weights = [], None

    def on_train_begin(self, logs=None):
        self.start_weights = [w.numpy().copy() for w in self.model.weights]

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


class RunnerTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.run_dir = Path(self.get_temp_dir()) / self._testMethodName
        self.data = linear_data()

    def runner(self, **kwargs):
        kwargs.setdefault("progress", "none")
        kwargs.setdefault("tensorboard", False)
        return Runner(self.run_dir, seed=1, **kwargs)

    def test_resume_after_interruption(self):
        runner = self.runner()
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        with self.assertRaises(KeyboardInterrupt):
            runner.fit(model, self.data, self.data, epochs=4, callbacks=[Interrupt(2)])
        after_two = [w.numpy().copy() for w in model.weights]
        self.assertEqual([r["epoch"] for r in read_csv_log(runner.log_path)], [0, 1])

        runner2 = self.runner()
        model2 = runner2.build(build_linear)  # fresh weights (another seed state)
        runner2.compile(model2, **COMPILE)
        rec = Record()
        history = runner2.fit(model2, self.data, self.data, epochs=4, callbacks=[rec])
        self.assertEqual(rec.epochs, [2, 3])  # continued at the third epoch
        for a, b in zip(rec.start_weights, after_two):
            self.assertAllClose(a, b)
        epochs = [r["epoch"] for r in read_csv_log(runner.log_path)]
        self.assertEqual(epochs, [0, 1, 2, 3])  # no repeated epoch
        self.assertEqual(history["epoch"], [0, 1, 2, 3])
        self.assertLen(history["val_loss"], 4)
        # best checkpoint follows the best val_loss of all four epochs
        best = json.loads((self.run_dir / "best.json").read_text())
        self.assertEqual(best["epoch"], int(np.argmin(history["val_loss"])))
        self.assertAllClose(best["best"], min(history["val_loss"]))
        self.assertTrue((self.run_dir / "best.keras").is_file())
        self.assertFalse((self.run_dir / "backup" / "train").exists())

    def test_finished_stage_is_skipped_on_rerun(self):
        runner = self.runner()
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        h1 = runner.fit(model, self.data, epochs=2, stage="stage1")
        trained = [w.numpy().copy() for w in model.weights]
        model2 = runner.build(build_linear)
        runner.compile(model2, **COMPILE)
        rec = Record()
        again = runner.fit(model2, self.data, epochs=2, stage="stage1", callbacks=[rec])
        self.assertEqual(rec.epochs, [])
        self.assertEqual(again, h1)
        for a, b in zip(model2.weights, trained):
            self.assertAllClose(a.numpy(), b)
        # resume=False trains the stage again and replaces its log rows
        fresh = self.runner(resume=False)
        fresh.compile(model2, **COMPILE)
        rec = Record()
        fresh.fit(model2, self.data, epochs=2, stage="stage1", callbacks=[rec])
        self.assertEqual(rec.epochs, [0, 1])
        self.assertEqual([r["epoch"] for r in read_csv_log(fresh.log_path)], [0, 1])

    def test_fresh_run_forgets_an_earlier_best_model(self):
        runner = self.runner()
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        runner.fit(model, self.data, self.data, epochs=2, stage="stage1")
        self.assertTrue(runner.best_model_path.exists())
        state = runner.best_model_path.with_suffix(".json")
        self.assertTrue(state.exists())
        fresh = self.runner(resume=False)
        self.assertFalse(runner.best_model_path.exists())
        self.assertFalse(state.exists())
        fresh.compile(model, **COMPILE)
        fresh.fit(model, self.data, self.data, epochs=1, stage="stage1")
        self.assertTrue(fresh.best_model_path.exists())

    def test_train_writes_config_and_splits(self):
        cfg = dict(data=DataConfig(data_dir="d", batch_size=4), train=TrainConfig(epochs=2))
        model, history = train(build_linear, self.data, self.data, epochs=2, compile_kwargs=COMPILE,
                               run_dir=self.run_dir, seed=3, configs=cfg,
                               splits={"train": ["a.png", "b.png"], "val": ["c.png"]},
                               progress="none", tensorboard=False)
        self.assertEqual(history["epoch"], [0, 1])
        self.assertEqual((self.run_dir / "splits" / "train.txt").read_text(), "a.png\nb.png\n")
        self.assertEqual((self.run_dir / "splits" / "val.txt").read_text(), "c.png\n")
        loaded = load_config(self.run_dir, data=DataConfig, train=TrainConfig)
        self.assertEqual(loaded["data"], cfg["data"])
        self.assertEqual(loaded["train"], cfg["train"])
        self.assertEqual(loaded["versions"]["keras"], keras.__version__)
        whole = Runner(self.run_dir, tensorboard=False).history()
        self.assertEqual(whole["stage"], ["train", "train"])

    def test_resuming_under_other_settings_is_refused(self):
        cfg = dict(data=DataConfig(data_dir="d", batch_size=4),
                   train=TrainConfig(epochs=2, learning_rate=1e-3))
        runner = self.runner()
        runner.save_config(**cfg)       # an empty folder: nothing to compare with
        runner.save_config(data=cfg["data"], train=TrainConfig(epochs=2, learning_rate=0.5))
        runner.save_config(**cfg)
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        runner.fit(model, self.data, epochs=1, stage="stage1")
        # same settings, or only ones that leave the result alone: resumes
        self.runner().save_config(**cfg)
        self.runner().save_config(data=cfg["data"], train=dataclasses.replace(
            cfg["train"], progress="none", tensorboard=False))
        changed = dict(data=cfg["data"], train=dataclasses.replace(cfg["train"],
                                                                    learning_rate=1e-4))
        with self.assertRaisesRegex(ValueError, r"other settings \(train\.learning_rate: "
                                                r"0\.001 -> 0\.0001\)"):
            self.runner().save_config(**changed)
        with self.assertRaisesRegex(ValueError, r"train: \{.*\} -> missing"):
            self.runner().save_config(data=cfg["data"])
        # a section or field added since the run (a later version's default) is not compared
        self.runner().save_config(**cfg, extra={"a": 1})
        self.runner(resume=False).save_config(**cfg)
        self.assertEqual(json.loads((self.run_dir / "config.json").read_text())["train"]
                         ["learning_rate"], 1e-3)          # not overwritten
        # starting afresh is allowed and records the new settings
        self.runner(resume=False).save_config(**changed)
        self.assertEqual(json.loads((self.run_dir / "config.json").read_text())["train"]
                         ["learning_rate"], 1e-4)

    def test_no_run_dir_writes_nothing(self):
        cwd = os.getcwd()
        os.chdir(self.get_temp_dir())
        try:
            before = set(os.listdir("."))
            runner = Runner(progress="none")
            model = runner.build(build_linear)
            runner.compile(model, **COMPILE)
            history = runner.fit(model, self.data, epochs=2)
            self.assertEqual(history["epoch"], [0, 1])
            self.assertEqual(set(os.listdir(".")), before)
            self.assertEqual(runner.save_splits({"train": ["x"]}), {})
            with self.assertRaisesRegex(ValueError, "run_dir"):
                runner.history()
        finally:
            os.chdir(cwd)

    def test_tqdm_progress(self):
        import contextlib
        import io

        runner = self.runner(progress="tqdm")
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            history = runner.fit(model, self.data, epochs=2)
        self.assertEqual(history["epoch"], [0, 1])
        self.assertIn("2/2", err.getvalue())

    def test_argument_errors(self):
        runner = self.runner()
        model = runner.build(build_linear)
        runner.compile(model, **COMPILE)
        with self.assertRaisesRegex(ValueError, "stage"):
            runner.fit(model, self.data, epochs=1, stage="a/b")
        with self.assertRaisesRegex(ValueError, "initial_epoch"):
            runner.fit(model, self.data, epochs=1, initial_epoch=2)
        with self.assertRaisesRegex(ValueError, "epochs"):
            runner.fit(model, self.data, epochs=1.5)
        with self.assertRaisesRegex(ValueError, "fit_kwargs"):
            runner.fit(model, self.data, epochs=1, validation_data=self.data)
        with self.assertRaisesRegex(ValueError, r"\(x, y\)"):
            runner.fit(model, self.data + (None,), epochs=1)
        with self.assertRaisesRegex(ValueError, "progress"):
            Runner(progress="bar")
        with self.assertRaisesRegex(ValueError, "strategy"):
            Runner(strategy="tpu")
        with self.assertRaisesRegex(ValueError, "split name"):
            runner.save_splits({"../x": ["a"]})
        with self.assertRaisesRegex(ValueError, "line break"):
            runner.save_splits({"train": ["a\nb"]})


@dataclasses.dataclass
class _Odd:
    value: complex = 1j


class ConfigTest(tf.test.TestCase):

    def parser(self):
        parser = argparse.ArgumentParser(exit_on_error=False)
        add_config_arguments(parser, DataConfig, prefix="data")
        add_config_arguments(parser, ModelConfig(backbone="densenet169"), prefix="model")
        add_config_arguments(parser, TrainConfig, prefix="train")
        return parser

    def test_defaults_are_the_originals(self):
        args = self.parser().parse_args([])
        data = config_from_args(DataConfig, args, prefix="data")
        model = config_from_args(ModelConfig, args, prefix="model")
        train_cfg = config_from_args(TrainConfig, args, prefix="train")
        self.assertEqual((data.batch_size, data.image_size, data.validation_split, data.seed),
                         (12, (224, 224), 0.2, 1337))
        self.assertEqual((model.backbone, model.dropout, model.num_classes), ("densenet169", 0.3, 3))
        self.assertEqual((train_cfg.epochs, train_cfg.learning_rate), (10, 1e-3))

    def test_flags_override(self):
        args = self.parser().parse_args(
            ["--data-image-size", "64", "48", "--data-batch-size", "3", "--model-encoder-weights",
             "none", "--no-train-tensorboard", "--train-fine-tune-epochs", "5",
             "--data-class-names", "nerve", "opening wound", "tendon", "--model-augment"])
        data = config_from_args(DataConfig, args, prefix="data")
        model = config_from_args(ModelConfig, args, prefix="model")
        train_cfg = config_from_args(TrainConfig, args, prefix="train")
        self.assertEqual(data.image_size, (64, 48))
        self.assertEqual(data.class_names, ("nerve", "opening wound", "tendon"))
        self.assertEqual(data.batch_size, 3)
        self.assertIsNone(model.encoder_weights)
        self.assertTrue(model.augment)
        self.assertFalse(train_cfg.tensorboard)
        self.assertEqual(train_cfg.fine_tune_epochs, 5)
        # JSON round trip
        for cfg in (data, model, train_cfg):
            again = config_from_dict(type(cfg), json.loads(json.dumps(config_to_dict(cfg))))
            self.assertEqual(again, cfg)

    def test_errors(self):
        with self.assertRaises(argparse.ArgumentError):
            self.parser().parse_args(["--train-strategy", "tpu"])
        with self.assertRaisesRegex(ValueError, "batch_size"):
            DataConfig(batch_size=0)
        with self.assertRaisesRegex(ValueError, "unknown DataConfig fields"):
            config_from_dict(DataConfig, {"batchsize": 3})
        with self.assertRaisesRegex(ValueError, "unsupported"):
            add_config_arguments(argparse.ArgumentParser(), _Odd)
        with self.assertRaisesRegex(ValueError, "dataclass"):
            add_config_arguments(argparse.ArgumentParser(), dict)
        with self.assertRaisesRegex(ValueError, "prefix"):
            config_from_args(DataConfig, argparse.Namespace(), prefix="x")
        path = Path(self.get_temp_dir()) / "cfg" / "config.json"
        with self.assertRaisesRegex(FileNotFoundError, "config.json"):
            load_config(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json")
        with self.assertRaisesRegex(ValueError, "not valid JSON"):
            load_config(path)


class TwoStageResumeTest(tf.test.TestCase):

    @pytest.mark.slow
    def test_killed_in_stage2_resumes_there(self):
        from keras_medseg.training import fit_two_stage
        from tests.training.test_transfer import data, tiny_classifier

        run_dir = Path(self.get_temp_dir()) / "two_stage"
        x, y = data()
        kw = dict(initial_epochs=2, fine_tune_epochs=2, fine_tune_at="b2_conv")
        keras.utils.set_random_seed(0)
        with self.assertRaises(KeyboardInterrupt):
            fit_two_stage(tiny_classifier(), (x, y), (x, y), callbacks=[Interrupt(3)],
                          runner=Runner(run_dir, progress="none", tensorboard=False), **kw)
        rec = Record()
        h1, h2 = fit_two_stage(tiny_classifier(), (x, y), (x, y), callbacks=[rec],
                               runner=Runner(run_dir, progress="none", tensorboard=False), **kw)
        self.assertEqual(rec.epochs, [3])  # stage 1 loaded, stage 2 continued at epoch 3
        self.assertEqual(h1["epoch"], [0, 1])
        self.assertEqual(h2["epoch"], [2, 3])
        rows = read_csv_log(run_dir / "log.csv")
        self.assertEqual([(r["epoch"], r["stage"]) for r in rows],
                         [(0, "stage1"), (1, "stage1"), (2, "stage2"), (3, "stage2")])
