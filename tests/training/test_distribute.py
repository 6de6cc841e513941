"""Strategies: mirrored training on two logical CPUs matches single-device training."""
import json
import os
import subprocess
import sys
import textwrap
import types
from unittest import mock

import pytest
import tensorflow as tf

from keras_medseg.training import configure_logical_cpus, get_strategy, is_chief

# Runs in a fresh interpreter: logical devices must be configured before TF initialises.
_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from keras_medseg.training import configure_logical_cpus, get_strategy, train
    configure_logical_cpus(2)
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")

    def build():
        inp = keras.Input((3,))
        return keras.Model(inp, keras.layers.Dense(1, kernel_initializer="zeros")(inp))

    out = {}
    for name in ("default", "mirrored"):
        strategy = get_strategy(name)
        model, history = train(build, (x, y), epochs=3, run_dir=sys.argv[1] + "/" + name,
                               strategy=strategy, seed=0, progress="none", tensorboard=False,
                               compile_kwargs=dict(optimizer=lambda: keras.optimizers.SGD(0.1),
                                                   loss="mse"),
                               fit_kwargs=dict(batch_size=8, shuffle=False))
        out[name] = dict(replicas=strategy.num_replicas_in_sync,
                         kernel=model.weights[0].numpy().ravel().tolist(),
                         loss=history["loss"])
    print("RESULT" + json.dumps(out))
""")


class StrategyTest(tf.test.TestCase):

    def test_default_and_errors(self):
        self.assertEqual(get_strategy("default").num_replicas_in_sync, 1)
        strategy = get_strategy("default")
        self.assertIs(get_strategy(strategy), strategy)
        with self.assertRaisesRegex(ValueError, "strategy"):
            get_strategy("tpu")
        with self.assertRaisesRegex(ValueError, "strategy"):
            get_strategy(3)

    def test_malformed_tf_config(self):
        for raw, pattern in [("{oops", "JSON"), ('{"cluster": {}}', "'task'"),
                             ('{"cluster": {}, "task": {"type": "worker"}}', "index")]:
            with mock.patch.dict(os.environ, {"TF_CONFIG": raw}):
                with self.assertRaisesRegex(ValueError, pattern):
                    get_strategy("multiworker")

    def test_is_chief(self):
        def strategy(task_type, task_id, jobs):
            resolver = types.SimpleNamespace(
                task_type=task_type, task_id=task_id,
                cluster_spec=lambda: types.SimpleNamespace(as_dict=lambda: jobs))
            return types.SimpleNamespace(cluster_resolver=resolver)

        self.assertTrue(is_chief(get_strategy("default")))
        self.assertTrue(is_chief(strategy("worker", 0, {"worker": ["a", "b"]})))
        self.assertFalse(is_chief(strategy("worker", 1, {"worker": ["a", "b"]})))
        self.assertFalse(is_chief(strategy("worker", 0, {"chief": ["c"], "worker": ["a"]})))
        self.assertTrue(is_chief(strategy("chief", 0, {"chief": ["c"], "worker": ["a"]})))

    def test_configure_logical_cpus_after_start(self):
        with self.assertRaisesRegex(ValueError, "n must be"):
            configure_logical_cpus(0)
        tf.constant(1.0)  # the runtime is initialised now
        n = len(tf.config.list_logical_devices("CPU"))
        with self.assertRaisesRegex(RuntimeError, "already initialised"):
            configure_logical_cpus(n + 1)

    @pytest.mark.slow
    def test_mirrored_on_two_logical_cpus_matches_default(self):
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, self.get_temp_dir()],
                              capture_output=True, text=True, env=env, timeout=300,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__)))))
        self.assertEqual(proc.returncode, 0, msg=proc.stderr[-3000:])
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
        out = json.loads(line[len("RESULT"):])
        self.assertEqual(out["default"]["replicas"], 1)
        self.assertEqual(out["mirrored"]["replicas"], 2)
        # same global batches, gradients summed over replicas: same training trajectory
        self.assertAllClose(out["mirrored"]["kernel"], out["default"]["kernel"], atol=1e-5)
        self.assertAllClose(out["mirrored"]["loss"], out["default"]["loss"], rtol=1e-4)
        self.assertLess(out["mirrored"]["loss"][-1], out["mirrored"]["loss"][0])
