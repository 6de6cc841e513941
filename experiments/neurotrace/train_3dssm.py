"""Train and evaluate the 3D-SSM (staged: ResNet, FCN, two LSTM heads, fusion x repeats).

The input is a labelled block index CSV (see ``keras_medseg.neurotrace.training.load_block_data``),
or, with ``--synthetic N``, N synthetic neurons that this script generates, cuts into blocks,
describes (neuron distance and L-Measure features) and labels automatically first
(``keras_medseg.neurotrace.demo.prepare_sample_blocks``; data in ``--synthetic-dir``, reused
when it is already there).

Examples::

    python experiments/neurotrace/train_3dssm.py --data-blocks-csv blocks/blocks.csv
    python experiments/neurotrace/train_3dssm.py --synthetic 64 \\
        --synthetic-dir runs/neurotrace_synthetic --train-run-dir runs/neurotrace_ssm

``--oracle-history`` trains the sequence heads with the previous blocks' true labels, as the
original did; the report always shows test results for both the predicted and the oracle
history.
"""
import argparse
import sys
import time
from pathlib import Path

from keras_medseg.neurotrace import training as T
from keras_medseg.training import add_config_arguments, config_from_args


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers z,y,x; got {text!r}") \
            from None
    if len(shape) != 3 or min(shape) < 16:
        raise argparse.ArgumentTypeError(f"expected three integers z,y,x, each >= 16; got "
                                         f"{text!r}")
    return shape


def build_parser():
    """The argument parser (every config field is a flag, plus the synthetic-data options)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, T.SSMDataConfig, prefix="data")
    add_config_arguments(parser, T.SSMModelConfig, prefix="model")
    add_config_arguments(parser, T.SSMTrainConfig, prefix="train")
    parser.add_argument("--oracle-history", action="store_true",
                        help="same as --train-oracle-history")
    parser.add_argument("--features", default=None,
                        help="feature CSV (neuron, block + 32 L-Measure columns) when the block "
                             "CSV has none")
    syn = parser.add_argument_group("synthetic data (instead of --data-blocks-csv)")
    syn.add_argument("--synthetic", type=int, default=0, metavar="N",
                     help="generate N synthetic neurons (keras_medseg.sampledata."
                          "generate_neurotrace), cut, describe and label their blocks, then "
                          "train on them (default: 0, off)")
    syn.add_argument("--synthetic-seed", type=int, default=0, help="generator seed (default 0)")
    syn.add_argument("--synthetic-dir", default="runs/neurotrace_synthetic",
                     help="folder of the generated neurons and blocks; existing data made with "
                          "the same settings is reused (default: %(default)s)")
    syn.add_argument("--synthetic-nodes", type=int, default=2000,
                     help="gold nodes per neuron (a block every 100; default 2000)")
    syn.add_argument("--synthetic-shape", type=_shape, default=(48, 160, 160),
                     help="image volume per neuron, z,y,x voxels (default 48,160,160)")
    syn.add_argument("--synthetic-quick-labels", action="store_true",
                     help="quick labeller search (3 splits, MLP on the 8 best subsets) instead "
                          "of the default (5 splits, 32 subsets)")
    return parser


def parse_args(argv=None):
    """Parse and check the command line.

    Returns
    -------
    (argparse.Namespace, SSMDataConfig, SSMModelConfig, SSMTrainConfig)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    data_config = config_from_args(T.SSMDataConfig, args, prefix="data")
    model_config = config_from_args(T.SSMModelConfig, args, prefix="model")
    train_config = config_from_args(T.SSMTrainConfig, args, prefix="train")
    if args.oracle_history:
        train_config.oracle_history = True
    if args.synthetic < 0:
        parser.error(f"--synthetic must be >= 0; got {args.synthetic}")
    if args.synthetic:
        if data_config.blocks_csv:
            parser.error("give either --synthetic or --data-blocks-csv, not both")
        if args.synthetic < 3:
            parser.error("--synthetic needs at least 3 neurons (train, validation and test "
                         "are split by neuron)")
        if args.synthetic_nodes < 100:
            parser.error(f"--synthetic-nodes must be >= 100 (a block every 100 nodes); got "
                         f"{args.synthetic_nodes}")
        if args.synthetic_seed < 0:
            parser.error(f"--synthetic-seed must be >= 0; got {args.synthetic_seed}")
    elif not data_config.blocks_csv:
        parser.error("--data-blocks-csv or --synthetic N is required")
    return args, data_config, model_config, train_config


def main(argv=None):
    args, data_config, model_config, train_config = parse_args(argv)
    csv_path = data_config.blocks_csv
    if args.synthetic:
        from keras_medseg.neurotrace.demo import prepare_sample_blocks

        start = time.perf_counter()
        csv_path = prepare_sample_blocks(
            Path(args.synthetic_dir), seed=args.synthetic_seed, n_neurons=args.synthetic,
            n_nodes=args.synthetic_nodes, shape=args.synthetic_shape,
            quick=args.synthetic_quick_labels, log=print)
        data_config.blocks_csv = str(csv_path)
        print(f"synthetic data ready in {time.perf_counter() - start:.1f} s: {csv_path}")
    data = T.load_block_data(csv_path, features=args.features, subset=data_config.subset)
    print(f"{len(data)} labelled blocks from {len(set(data.neurons))} neurons "
          f"({int(data.labels.sum())} high difficulty)")
    start = time.perf_counter()
    result = T.train_3dssm(data, data_config=data_config, model_config=model_config,
                           train_config=train_config, log=print)
    print(f"training and evaluation: {time.perf_counter() - start:.1f} s")
    print((result.run_dir / "results.md").read_text())
    for protocol in ("predicted", "oracle"):
        r = result.result("ssm3d", "test", protocol)
        print(f"3D-SSM test ({protocol} history): accuracy {r['accuracy']:.4f}, "
              f"F1 (high) {r['f1_high']:.4f}, macro F1 {r['f1_macro']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
