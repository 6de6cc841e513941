"""Train and evaluate the 3D-SSM (staged: ResNet, FCN, two LSTM heads, fusion x repeats).

The input is a labelled block index CSV (see ``keras_medseg.neurotrace.training.load_block_data``).

Example::

    python experiments/neurotrace/train_3dssm.py --data-blocks-csv blocks/blocks.csv

``--oracle-history`` trains the sequence heads with the previous blocks' true labels, as the
original did; the report always shows test results for both the predicted and the oracle
history.
"""
import argparse
import sys

from keras_medseg.neurotrace import training as T
from keras_medseg.training import add_config_arguments, config_from_args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, T.SSMDataConfig, prefix="data")
    add_config_arguments(parser, T.SSMModelConfig, prefix="model")
    add_config_arguments(parser, T.SSMTrainConfig, prefix="train")
    parser.add_argument("--oracle-history", action="store_true",
                        help="same as --train-oracle-history")
    parser.add_argument("--features", default=None,
                        help="feature CSV (neuron, block + 32 L-Measure columns) when the block "
                             "CSV has none")
    args = parser.parse_args(argv)
    data_config = config_from_args(T.SSMDataConfig, args, prefix="data")
    model_config = config_from_args(T.SSMModelConfig, args, prefix="model")
    train_config = config_from_args(T.SSMTrainConfig, args, prefix="train")
    if args.oracle_history:
        train_config.oracle_history = True
    csv_path = data_config.blocks_csv
    if not csv_path:
        parser.error("--data-blocks-csv is required")
    data = T.load_block_data(csv_path, features=args.features, subset=data_config.subset)
    print(f"{len(data)} labelled blocks from {len(set(data.neurons))} neurons "
          f"({int(data.labels.sum())} high difficulty)")
    result = T.train_3dssm(data, data_config=data_config, model_config=model_config,
                           train_config=train_config, log=print)
    print((result.run_dir / "results.md").read_text())
    for protocol in ("predicted", "oracle"):
        r = result.result("ssm3d", "test", protocol)
        print(f"3D-SSM test ({protocol} history): accuracy {r['accuracy']:.4f}, "
              f"F1 (high) {r['f1_high']:.4f}, macro F1 {r['f1_macro']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
