"""Dataclass configs with the originals' defaults, command-line overrides and JSON round trip.

Every task describes a run with dataclasses (the generic :class:`DataConfig`,
:class:`ModelConfig` and :class:`TrainConfig` below, or its own). :func:`add_config_arguments`
turns the fields into ``--flags`` (defaults shown in ``--help``) and
:func:`config_from_args` builds the dataclass back; :func:`save_config` writes the resolved
configs to ``config.json`` in the run folder and :func:`load_config` reads them back, so
any run can be repeated exactly.

Supported field types: ``int``, ``float``, ``str``, ``bool`` (``--prefix-flag``/``--no-prefix-flag``),
``X | None`` (the word ``none`` on the command line gives None) and ``tuple[X, ...]``
(several values after the flag). ``field(metadata={"help": ..., "choices": ...})`` adds help
text and allowed values.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_config_arguments(parser, TrainConfig, prefix="train")
>>> args = parser.parse_args(["--train-epochs", "3", "--train-fine-tune-at", "none"])
>>> config_from_args(TrainConfig, args, prefix="train").epochs
3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path

from keras_medseg._checks import check_choice, check_positive
from keras_medseg.utils import json_default, write_json

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "add_config_arguments",
    "config_from_args",
    "config_from_dict",
    "config_sections",
    "config_to_dict",
    "load_config",
    "save_config",
]


def _choices(*values, help=None):
    return {"choices": values, "help": help}


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is split and batched (nerve classification defaults)."""

    data_dir: str = dataclasses.field(default="", metadata={"help": "training/validation data"})
    test_dir: str = dataclasses.field(default="", metadata={"help": "separate test data"})
    image_size: tuple[int, ...] = (224, 224)
    batch_size: int = 12
    validation_split: float = 0.2
    split_by: str = dataclasses.field(
        default="image", metadata=_choices("image", "group", help="split unit: image or group "
                                           "(video/volume), so groups never straddle splits"))
    seed: int = 1337
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        check_positive(self.batch_size, name="batch_size")
        if not 0 <= self.validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1); got {self.validation_split!r}")
        check_choice(self.split_by, ("image", "group"), name="split_by")


@dataclasses.dataclass
class ModelConfig:
    """Which network and head (nerve classification defaults)."""

    backbone: str = "mobilenetv2"
    num_classes: int = 3
    channels: int = 3
    dropout: float = 0.3
    encoder_weights: str | None = dataclasses.field(
        default="imagenet", metadata={"help": "'imagenet', a weights file, or none"})
    head: str = dataclasses.field(default="linear", metadata=_choices("linear", "mlp"))
    hidden_units: int = 128
    augment: bool = False

    def __post_init__(self):
        check_positive(self.num_classes, name="num_classes")
        check_positive(self.channels, name="channels")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        check_choice(self.head, ("linear", "mlp"), name="head")


@dataclasses.dataclass
class TrainConfig:
    """How to train (nerve classification defaults: 10 frozen epochs at Adam 1e-3)."""

    run_dir: str = "runs/run"
    epochs: int = 10
    fine_tune_epochs: int | None = dataclasses.field(
        default=None, metadata={"help": "default: the backbone's registry value"})
    fine_tune_at: str | None = dataclasses.field(
        default=None, metadata={"help": "first trainable layer name; default: registry"})
    learning_rate: float = 1e-3
    strategy: str = dataclasses.field(default="default",
                                      metadata=_choices("default", "mirrored", "multiworker"))
    seed: int = 1337
    monitor: str = "val_loss"
    tensorboard: bool = True
    progress: str = dataclasses.field(default="keras", metadata=_choices("keras", "tqdm", "none"))
    resume: bool = True

    def __post_init__(self):
        check_positive(self.epochs, name="epochs", allow_zero=True)
        if self.fine_tune_epochs is not None:
            check_positive(self.fine_tune_epochs, name="fine_tune_epochs", allow_zero=True)
        check_positive(self.learning_rate, name="learning_rate")
        check_choice(self.strategy, ("default", "mirrored", "multiworker"), name="strategy")
        check_choice(self.progress, ("keras", "tqdm", "none"), name="progress")


# --------------------------------------------------------------------------------------------
def _check_dataclass(cls, name="config"):
    if not (dataclasses.is_dataclass(cls)):
        raise ValueError(f"{name} must be a dataclass or dataclass instance; got {cls!r}")
    return cls if isinstance(cls, type) else type(cls)


def _field_kind(tp):
    """(base type, optional, is_tuple) of a supported annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise ValueError(f"unsupported config field type {tp!r}")
        optional, tp, origin = True, args[0], typing.get_origin(args[0])
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise ValueError(f"tuple config fields must be tuple[X, ...]; got {tp!r}")
        return args[0], optional, True
    if tp not in (int, float, str, bool):
        raise ValueError(f"unsupported config field type {tp!r}")
    return tp, optional, False


def _parser_for(base, optional):
    def parse(text):
        if optional and text.lower() == "none":
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected a boolean; got {text!r}")
        return base(text)
    parse.__name__ = base.__name__
    return parse


def _flag(prefix, name):
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


def _dest(prefix, name):
    return (f"{prefix.replace('-', '_')}_" if prefix else "") + name


def add_config_arguments(parser, config, *, prefix=""):
    """Add one ``--flag`` per field of the dataclass ``config`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    config : dataclass type or instance
        An instance's values become the defaults.
    prefix : str
        Flag prefix: field ``batch_size`` with prefix ``"data"`` becomes ``--data-batch-size``.

    Returns
    -------
    parser

    Raises
    ------
    ValueError
        If ``config`` is not a dataclass or has a field of an unsupported type.
    """
    cls = _check_dataclass(config)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base, optional, is_tuple = _field_kind(hints[f.name])
        if isinstance(config, type):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        else:
            default = getattr(config, f.name)
        help_text = f.metadata.get("help") or f.name.replace("_", " ")
        kwargs = dict(dest=_dest(prefix, f.name), default=default,
                      help=f"{help_text} (default: {default!r})")
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"]) + ([None] if optional else [])
        if base is bool and not is_tuple and not optional:
            kwargs.pop("choices", None)
            parser.add_argument(_flag(prefix, f.name), action=argparse.BooleanOptionalAction,
                                **kwargs)
            continue
        kwargs["type"] = _parser_for(base, optional)
        if is_tuple:
            kwargs["nargs"] = "*"
        parser.add_argument(_flag(prefix, f.name), **kwargs)
    return parser


def config_from_args(cls, args, *, prefix=""):
    """Build ``cls`` from an ``argparse.Namespace`` filled by :func:`add_config_arguments`."""
    cls = _check_dataclass(cls, "cls")
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(prefix, f.name)
        if not hasattr(args, dest):
            raise ValueError(f"args has no attribute {dest!r}; was add_config_arguments called "
                             f"with prefix={prefix!r}?")
        values[f.name] = getattr(args, dest)
    return config_from_dict(cls, values)


def config_to_dict(config):
    """A dataclass instance as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"config must be a dataclass instance; got {config!r}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls, data):
    """Build ``cls`` from a dict such as :func:`config_to_dict` returns.

    Missing keys take the defaults; lists become tuples for tuple fields.

    Raises
    ------
    ValueError
        If ``data`` has keys that are not fields of ``cls``, or as ``cls`` validates.
    """
    cls = _check_dataclass(cls, "cls")
    if not isinstance(data, dict):
        raise ValueError(f"data must be a dict; got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
    values = {}
    for key, value in data.items():
        _, _, is_tuple = _field_kind(hints[key])
        values[key] = tuple(value) if is_tuple and value is not None else value
    return cls(**values)


def config_sections(**sections):
    """The sections as :func:`save_config` stores them (JSON values: tuples become lists),
    without the ``versions`` entry."""
    out = {name: config_to_dict(s) if dataclasses.is_dataclass(s) else s
           for name, s in sections.items()}
    return json.loads(json.dumps(out, default=json_default))


def save_config(run_dir, **sections):
    """Write ``config.json`` into ``run_dir``: one key per section, plus library versions.

    Parameters
    ----------
    run_dir : str or Path
    **sections
        Dataclass instances or JSON-ready dicts, e.g. ``data=DataConfig(), train=...``.

    Returns
    -------
    Path
        The written file.
    """
    import keras

    import keras_medseg

    out = config_sections(**sections)
    out["versions"] = {"keras_medseg": keras_medseg.__version__, "keras": keras.__version__,
                       "backend": keras.backend.backend()}
    return write_json(Path(run_dir) / "config.json", out)


def load_config(path, **classes):
    """Read ``config.json`` (a file or its run folder) back into dataclasses.

    Parameters
    ----------
    path : str or Path
    **classes
        Section name -> dataclass, e.g. ``data=DataConfig``; other sections come back as dicts.

    Returns
    -------
    dict
        Section name -> instance (or dict).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a JSON object or a section does not match its class.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a JSON object")
    out = dict(data)
    for name, cls in classes.items():
        if name not in data:
            raise ValueError(f"config file {str(path)!r} has no section {name!r}")
        out[name] = config_from_dict(cls, data[name])
    return out
