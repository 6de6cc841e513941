"""brainview cross-dataset experiment: train on one dataset, test on another.

Example
-------
python experiments/brainview/cross_dataset.py --train runs/bv/data/atlasA \\
    --test runs/bv/data/atlasB --out runs/brainview/cross --encoder-weights none
"""
import argparse
import sys
from pathlib import Path

from keras_medseg.brainview import BrainviewConfig, ViewSlices, load_png_views, \
    run_cross_dataset
from keras_medseg.training import add_config_arguments, config_from_args


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", nargs="+", required=True, help="training PNG dataset folders")
    p.add_argument("--test", nargs="+", required=True, help="test PNG dataset folders")
    p.add_argument("--out", required=True)
    add_config_arguments(p, BrainviewConfig)
    args = p.parse_args(argv)
    config = config_from_args(BrainviewConfig, args)
    train = ViewSlices.concat(*[load_png_views(d) for d in args.train])
    test = ViewSlices.concat(*[load_png_views(d) for d in args.test])
    result = run_cross_dataset(train, test, Path(args.out), config=config)
    t = result.test
    print(f"cross-dataset test: accuracy {t['accuracy']:.4f}, weighted F1 "
          f"{t['f1_weighted']:.4f}, AUC {t['auc_ovr']:.4f} (n={t['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
