r"""Write image/mask pairs listed in ImageSets into TFRecord files (nerve TFRecord script).

    python data_prep/images_to_tfrecord.py sample/nerve/segmentation/img \
        sample/nerve/segmentation/masks_machine sample/nerve/segmentation sample/nerve/tfrecords

One tf.train.Example per image with the original's keys (height, width, depth,
depth_segmentation, image, segmentation_mask, file_name), raw uint8 bytes or PNG, one file
<split>.tfrecords per split (or shards <split>-0000i-of-0000n.tfrecords). A split whose
manifest <split>.tfrecords.json matches the request is skipped. Source images are never
renamed or modified (the original renamed each to *.done).
"""
import argparse
import sys

from keras_medseg.io.prep import run_prep, tfrecords_from_imagesets


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image_dir", help="folder of images (e.g. a Supervisely export's img/)")
    parser.add_argument("mask_dir", help="folder of masks (e.g. masks_machine/)")
    parser.add_argument("imagesets", help="dataset folder holding ImageSets/, or the "
                                          "ImageSets folder itself")
    parser.add_argument("out_dir", help="output folder (outside every input folder)")
    parser.add_argument("--splits", nargs="+", default=["trainval", "test"],
                        help="ImageSets lists to convert (default: trainval test)")
    parser.add_argument("--encoding", choices=("raw", "png"), default="raw",
                        help="raw uint8 bytes as the original (default) or PNG")
    parser.add_argument("--records-per-shard", type=int, default=None, metavar="N",
                        help="split each output into shards of at most N records")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="resize before writing (bilinear image, nearest mask)")
    parser.add_argument("--mask-channel", type=int, default=0,
                        help="channel of RGB masks holding the class index (default 0 = red)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite finished splits")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    size = None if args.size is None else tuple(args.size)
    return run_prep(tfrecords_from_imagesets, args.image_dir, args.mask_dir, args.imagesets,
                    args.out_dir, splits=args.splits, encoding=args.encoding,
                    records_per_shard=args.records_per_shard, size=size,
                    mask_channel=args.mask_channel, overwrite=args.overwrite,
                    progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
