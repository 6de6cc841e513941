"""Distribution strategies for the shared runner (TensorFlow backend).

``tf.distribute`` is TensorFlow's; under the JAX or torch backends only ``"default"`` (one
device, a no-op scope) is available.
"""
from __future__ import annotations

import contextlib
import json
import os

import keras

from keras_medseg._checks import check_choice

__all__ = ["STRATEGIES", "configure_logical_cpus", "get_strategy", "is_chief"]

STRATEGIES = ("default", "mirrored", "multiworker")


class SingleDeviceStrategy:
    """Stand-in for backends without ``tf.distribute``: one replica, a no-op scope."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG must be JSON; it does not parse ({exc})") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task' keys; got "
                         f"{raw[:200]!r}")
    task = config["task"]
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG['task'] must have 'type' and 'index'; got {task!r}")
    return config


def get_strategy(name="default"):
    """Return a ``tf.distribute`` strategy by name.

    Parameters
    ----------
    name : {"default", "mirrored", "multiworker"} or strategy
        ``"default"``: the current (default, single-device) strategy. ``"mirrored"``:
        ``MirroredStrategy`` over all local GPUs, or over all logical CPU devices when there is
        no GPU (see :func:`configure_logical_cpus`). ``"multiworker"``:
        ``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment variable
        (one worker when unset); create it at program start, before other TensorFlow work.
        A strategy object is returned unchanged.

    Raises
    ------
    ValueError
        Unknown name, a malformed ``TF_CONFIG``, or ``"mirrored"``/``"multiworker"`` under a
        backend other than TensorFlow.
    """
    if not isinstance(name, str):
        if hasattr(name, "scope"):
            return name
        raise ValueError(f"strategy must be one of {list(STRATEGIES)} or a strategy object; "
                         f"got {name!r}")
    check_choice(name, STRATEGIES, name="strategy")
    if keras.backend.backend() != "tensorflow":
        if name != "default":
            raise ValueError(f"strategy={name!r} needs the TensorFlow backend; the current "
                             f"backend is {keras.backend.backend()!r}")
        return SingleDeviceStrategy()
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    _check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def configure_logical_cpus(n):
    """Split the first physical CPU into ``n`` logical devices (for ``"mirrored"`` on CPU).

    Must run before TensorFlow initialises its runtime (before any tensor is created).

    Raises
    ------
    ValueError
        If ``n`` is not a positive int.
    RuntimeError
        If the TensorFlow runtime is already initialised with another device layout.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) == n:
            return
        raise RuntimeError(f"cannot configure {n} logical CPUs: TensorFlow is already "
                           f"initialised ({exc}); call configure_logical_cpus first") from None


def is_chief(strategy):
    """True unless ``strategy`` is multi-worker and this process is not its chief.

    The chief is task ``chief``, or worker 0 when the cluster has no ``chief`` job; only the
    chief writes logs, checkpoints and configs.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or task_type is None:
        return True
    if task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in jobs
