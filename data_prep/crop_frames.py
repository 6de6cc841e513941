"""Crop the surgical field of raw 1920x1080 frames to 512x512 (nerve ``cropLeftOnly-1080To512``).

    python data_prep/crop_frames.py sample/nerve/raw_frames sample/nerve/frames_512

With r = 1080/1608 the crop box is (340r, 0, 1608r, 1608r) of each frame, resized to
512x512 (keras_medseg.io.prep.crop_frame_1080_to_512). Outputs keep the file names; frames
already cropped are skipped, so an interrupted run resumes. Inputs are never modified.
"""
import argparse
import sys

from keras_medseg.io.prep import INTERPOLATIONS, crop_frames, run_prep


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", help="folder of raw 1920x1080 frames (jpg/png/bmp)")
    parser.add_argument("out_dir", help="output folder (must lie outside in_dir)")
    parser.add_argument("--size", type=int, default=512, help="output side in pixels (default 512)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="bilinear",
                        help="resampling filter (default bilinear; 'nearest' for label masks)")
    parser.add_argument("--recursive", action="store_true",
                        help="also process sub-folders, mirrored under out_dir")
    parser.add_argument("--suffix", default=None, choices=(".jpg", ".jpeg", ".png", ".bmp"),
                        help="output format (default: each input's own suffix)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_prep(crop_frames, args.in_dir, args.out_dir, size=args.size,
                    interpolation=args.interpolation, recursive=args.recursive,
                    suffix=args.suffix, quality=args.quality, overwrite=args.overwrite,
                    progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
