"""Split a nodule3d series CSV into grouped, seeded k-fold train/test series CSVs.

    python data_prep/make_kfold.py data/series.csv --out-dir work/kfold -k 5 --seed 0

Writes ``kfold_series<f>_train.csv`` and ``kfold_series<f>_test.csv`` (f = 0 .. k-1) in the
series CSV format (``path,class,x,y,z,d,group``, absolute series paths); every series (group)
is on one side of each fold and in exactly one test side. Reruns write identical files.
"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("series_csv", help="series CSV: path,class,x,y,z,d,group")
    parser.add_argument("--out-dir", required=True,
                        help="output folder (not the folder of the series CSV)")
    parser.add_argument("-k", "--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--classes", default=None,
                        help="class-mapping CSV (class_name,class_id) to check classes against")
    args = parser.parse_args(argv)

    from keras_medseg.io.tables import read_class_mapping
    from keras_medseg.nodule3d.data import make_kfold

    try:
        classes = read_class_mapping(args.classes) if args.classes else None
        pairs = make_kfold(args.series_csv, args.out_dir, k=args.folds, seed=args.seed,
                           classes=classes)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for train, test in pairs:
        print(f"{train}\n{test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
