r"""Split a folder's images into ImageSets/{train,val,trainval,test}.txt (nerve ``generateTxt``).

    python data_prep/make_imagesets.py sample/nerve/segmentation/img sample/nerve/segmentation \
        --seed 0 --group-pattern '^(v\d+)_'

Names are the image file stems. The split is seeded (the original's was not) and, with
--group-pattern, by group: the regular expression's first capture group (or named group
``group``) taken from each file name, e.g. the video, so that no video falls on two sides.
ImageSets/imagesets.json records the settings. Re-running with the same images and settings
writes nothing; different existing files are kept unless --overwrite is given.
"""
import argparse
import sys

from keras_medseg.io.prep import make_imagesets_from_folder, run_prep


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image_dir", help="folder of images")
    parser.add_argument("out_dir", help="dataset folder that receives ImageSets/ "
                                        "(must lie outside image_dir)")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="fraction of images for validation (default 0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15,
                        help="fraction of images for test (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--group-pattern", default=None, metavar="REGEX",
                        help="regular expression giving each file's group (e.g. its video); "
                             "groups are never split")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing ImageSets files that differ")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_prep(make_imagesets_from_folder, args.image_dir, args.out_dir,
                    val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                    seed=args.seed, group_pattern=args.group_pattern, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
