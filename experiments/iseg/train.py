"""Train the iseg FocusNet (I-seg_Focus recipe) on prepared HDF5 subjects or sample data.

Examples
--------
iSeg-2017 subjects prepared by data_prep/prepare_hdf5_cutedge.py (the original's defaults)::

    python experiments/iseg/train.py --data-data-dir iseg_hdf5 --train-run-dir runs/iseg/full

Synthetic infant phantoms (generated, prepared, then trained; T1 + T2)::

    python experiments/iseg/train.py --synthetic 10 --data-crop-size 32 32 32 \\
        --train-epochs 20 --train-run-dir runs/iseg/synthetic

ICBM152 hemisphere split (the README figure): train on one hemisphere, T1 only, at 2 mm,
with a quarter of the original's channel widths (``--model-width 1`` is the original)::

    python experiments/iseg/train.py --icbm152 --icbm-downsample 2 --model-width 0.25 \\
        --data-crop-size 32 32 32 --data-repeats 40 --train-epochs 60 \\
        --train-learning-rate 1e-3 --train-lr-step-epochs 45 --train-loss dice_ce \\
        --train-run-dir runs/iseg/icbm152
    python experiments/iseg/evaluate.py --run-dir runs/iseg/icbm152

Add ``--data-rotate`` to turn every training crop by a random proper rotation of the cube
(one of 24, never a reflection; ``--data-rotate-axis 0`` for the 4 about array axis 0) and
``--data-intensity 0.1`` for a random per-modality scale and shift; both are off by default,
as in the original.

The resolved configuration goes to ``<run dir>/config.json`` and the subject split to
``<run dir>/splits/``; running the same command again resumes an interrupted run.
"""
import argparse
import sys

from keras_medseg.iseg import pipeline as P
from keras_medseg.training import add_config_arguments, config_from_args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, P.IsegDataConfig, prefix="data")
    add_config_arguments(parser, P.IsegModelConfig, prefix="model")
    add_config_arguments(parser, P.IsegTrainConfig, prefix="train")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="generate N synthetic phantoms into <run dir>/sample and train on them")
    source.add_argument("--icbm152", action="store_true",
                        help="train on one hemisphere of the ICBM152 template (T1 only)")
    parser.add_argument("--synthetic-shape", type=int, nargs=3, default=(64, 80, 72))
    parser.add_argument("--icbm-downsample", type=int, default=2,
                        help="block size for the ICBM152 template (2 = 2 mm voxels)")
    parser.add_argument("--icbm-train-half", default="first", choices=("first", "second"))
    args = parser.parse_args(argv)
    data = config_from_args(P.IsegDataConfig, args, prefix="data")
    model = config_from_args(P.IsegModelConfig, args, prefix="model")
    train = config_from_args(P.IsegTrainConfig, args, prefix="train")
    try:
        if args.icbm152:
            result = P.train_icbm152(data, model, train, downsample=args.icbm_downsample,
                                     train_half=args.icbm_train_half)
        elif args.synthetic:
            result = P.train_synthetic(data, model, train, n_subjects=args.synthetic,
                                       shape=tuple(args.synthetic_shape))
        else:
            if not data.data_dir:
                parser.error("give --data-data-dir, --synthetic N or --icbm152")
            result = P.train_iseg(data, model, train)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = {k: v[-1] for k, v in result.history.items() if v and k != "epoch"}
    print(f"trained {len(result.history.get('epoch', []))} epochs in {result.run_dir}: {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
