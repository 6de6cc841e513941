"""Score the trained models of a finished nodule3d run again with other evaluation settings.

    # the run of the README, ranked by the stage-1 x stage-2 odds instead
    python experiments/nodule3d/evaluate.py --run-dir runs/nodule3d_k3 --name eval_odds \\
        --eval-use-regression --eval-score odds

Every finished fold of ``--run-dir`` (a ``run_folds.py`` output folder) is evaluated on its
test series with its own stage-1 and stage-2 models (the averaged ensemble when the run
trained several); nothing of the run itself is changed. Results: ``RUN_DIR/NAME/fold<f>/``
(candidates, FROC, recall, plot) and ``RUN_DIR/NAME/summary/folds.md`` (per fold and pooled).
Resumable; other settings under the same ``--name`` are refused.
"""
import argparse
import sys
from pathlib import Path


def main(argv=None):
    from keras_medseg.nodule3d.evaluation import EvalConfig
    from keras_medseg.nodule3d.pipeline import reevaluate_run
    from keras_medseg.training import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="output folder of run_folds.py")
    parser.add_argument("--name", required=True, help="folder under RUN_DIR for the results")
    parser.add_argument("--progress", action="store_true", help="progress bar per fold")
    add_config_arguments(parser.add_argument_group("eval"), EvalConfig(), prefix="eval")
    args = parser.parse_args(argv)
    config = config_from_args(EvalConfig, args, prefix="eval")
    try:
        reevaluate_run(args.run_dir, args.name, evaluation=config, progress=args.progress)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((Path(args.run_dir) / args.name / "summary" / "folds.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
