"""Command line: ``keras-medseg demo`` and ``keras-medseg <task> <command>``.

Task subpackages add their commands through :data:`TASK_COMMANDS` (task -> dotted path of a
module with ``add_arguments(subparsers)``), so this file does not grow with every task.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# task name -> module exposing ``add_commands(subparsers)`` (filled in by the task issues).
TASK_COMMANDS: dict[str, str] = {}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-medseg",
        description="keras_medseg: medical-imaging research recipes in Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run every task's quick recipe on sample data and "
                                       "write runs/demo/report.md")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--stages", default=None,
                      help="comma-separated stage names (default: all); see --list")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--full", action="store_true",
                      help="larger sizes and more epochs than the quick default")
    demo.add_argument("--force", action="store_true",
                      help="re-run stages already finished, from an empty stage folder")
    demo.add_argument("--list", action="store_true", help="list the stages and exit")
    demo.set_defaults(handler=_run_demo)

    for task, module in sorted(TASK_COMMANDS.items()):
        task_parser = sub.add_parser(task, help=f"{task} commands")
        importlib.import_module(module).add_commands(task_parser.add_subparsers(
            dest="task_command", required=True))
    return parser


def _run_demo(args):
    from keras_medseg.utils import import_tensorflow_quietly

    import_tensorflow_quietly()
    from keras_medseg.demo import available_stages, run_demo

    if args.list:
        for s in available_stages():
            print(f"{s.name:12s} {s.description}")
        return 0
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    run_demo(args.out, stages=stages, seed=args.seed, quick=not args.full, force=args.force)
    return 0


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"keras-medseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
