"""Evaluate a trained nerve frame classifier on a test ("video") folder of class folders.

Writes ``<prefix>_CM.txt``, ``_F1.txt``, ``_AUC.txt``, ``_roc.png`` and ``samples/`` (the last
image of every batch, named Correct/Wrong with the true and predicted class) into ``--out``.

Example::

    python experiments/nerve/evaluate_classifier.py --model runs/nerve/mobilenetv2/model.keras \\
        --test-dir frames/video --out runs/nerve/mobilenetv2/video
"""
import argparse
import sys

from keras_medseg.nerve.classification import evaluate_classifier_folder


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="model.keras from train_classifier.py")
    parser.add_argument("--test-dir", required=True, help="test folder (<dir>/<class>/<frame>)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--prefix", default=None, help="report prefix (default <model>_test)")
    parser.add_argument("--run", default="", help="run tag inside the sample names")
    parser.add_argument("--no-samples", action="store_true", help="save no sample images")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = evaluate_classifier_folder(args.model, args.test_dir, args.out,
                                        batch_size=args.batch_size, prefix=args.prefix,
                                        samples=not args.no_samples, run=args.run)
    print(f"accuracy {result.accuracy:.4f} (n={len(result.y_true)}), AUC micro "
          f"{result.report.auc_micro:.4f}, macro {result.report.auc_macro:.4f}")
    for name, path in result.paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
