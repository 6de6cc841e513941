"""Make nodule3d training patches: stage 1 (candidate screening) or stage 2 (false-positive
reduction, mined with a trained stage-1 model).

    python data_prep/make_patches.py --stage 1 --out-dir work/patches \\
        --series-csv work/kfold/kfold_series0_train.csv work/kfold/kfold_series0_test.csv
    python data_prep/make_patches.py --stage 2 --model runs/stage1/model.keras \\
        --out-dir work/patches --series-csv work/kfold/kfold_series0_train.csv

Stage 1 writes (15, 30, 30) patches: each lesion centred plus 4 jittered copies, and 3x as
many random negatives clear of every lesion. Stage 2 writes (25, 60, 60) patches: the same
positives and the stage-1 model's false positives (score > 0.8, NMS) until there are
3 x 5 x lesions of them. Series are resampled to 1 mm and windowed (80/600) once and cached
under OUT_DIR/resampled. For each series CSV ``kfold_series<f>_<phase>.csv`` the patch CSV
is ``kfold_patches<f>_detection_<phase>.csv`` (stage 1) or
``kfold_patches<f>_reduction_<phase>.csv`` (stage 2); OUT_DIR/mapping.csv holds the class
mapping. Reruns skip finished series and patches, so an interrupted run resumes.
"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True,
                        help="1: candidate-screening patches; 2: false-positive reduction")
    parser.add_argument("--series-csv", nargs="+", required=True,
                        help="series CSV(s), e.g. the kfold_series<f>_<phase>.csv files")
    parser.add_argument("--out-dir", required=True,
                        help="output folder (not an input folder)")
    parser.add_argument("--model", default=None,
                        help="stage 2: the trained stage-1 model (.keras file)")
    parser.add_argument("--classes", default=None,
                        help="class-mapping CSV (class_name,class_id with bg,0)")
    parser.add_argument("--patch-csv", default=None,
                        help="patch CSV to write (only with one --series-csv)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--score-threshold", type=float, default=0.8,
                        help="stage 2: stage-1 score threshold of candidates (default 0.8)")
    parser.add_argument("--jitter-in-lesion", action="store_true",
                        help="keep jittered positives centred inside their lesion (default: "
                             "the original's shifts of up to 5 voxels per axis)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.stage == 2 and args.model is None:
        parser.error("--stage 2 needs --model (a trained stage-1 .keras model)")
    if args.stage == 1 and args.model is not None:
        parser.error("--model is only used with --stage 2")
    if args.patch_csv is not None and len(args.series_csv) != 1:
        parser.error("--patch-csv needs exactly one --series-csv")

    from keras_medseg.nodule3d.data import make_stage1_patches, make_stage2_patches

    try:
        for series_csv in args.series_csv:
            if args.stage == 1:
                path = make_stage1_patches(series_csv, args.out_dir, patch_csv=args.patch_csv,
                                           classes=args.classes, seed=args.seed,
                                           jitter_in_lesion=args.jitter_in_lesion,
                                           progress=not args.quiet)
            else:
                path = make_stage2_patches(series_csv, args.model, args.out_dir,
                                           patch_csv=args.patch_csv, classes=args.classes,
                                           seed=args.seed,
                                           score_threshold=args.score_threshold,
                                           jitter_in_lesion=args.jitter_in_lesion,
                                           progress=not args.quiet)
            print(path)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
