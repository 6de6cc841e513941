r"""Resize every image of a folder to 512x512 (nerve ``512-resize``).

    python data_prep/resize_images.py sample/nerve/classification sample/nerve/classification_256 \
        --size 256 --recursive

The aspect ratio is not kept (keras_medseg.io.prep.resize_images). Use
``--interpolation nearest`` for label masks. Outputs keep the file names; images already
resized are skipped, so an interrupted run resumes. Inputs are never modified.
"""
import argparse
import sys

from keras_medseg.io.prep import INTERPOLATIONS, resize_images, run_prep


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", help="folder of images (jpg/png/bmp)")
    parser.add_argument("out_dir", help="output folder (must lie outside in_dir)")
    parser.add_argument("--size", type=int, nargs="+", default=[512], metavar="N",
                        help="output side, or height and width (default 512)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="bilinear",
                        help="resampling filter (default bilinear; 'nearest' for label masks)")
    parser.add_argument("--recursive", action="store_true",
                        help="also process sub-folders (e.g. class folders), mirrored "
                             "under out_dir")
    parser.add_argument("--suffix", default=None, choices=(".jpg", ".jpeg", ".png", ".bmp"),
                        help="output format (default: each input's own suffix)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes one side or a height and a width")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    return run_prep(resize_images, args.in_dir, args.out_dir, size,
                    interpolation=args.interpolation, recursive=args.recursive,
                    suffix=args.suffix, quality=args.quality, overwrite=args.overwrite,
                    progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
