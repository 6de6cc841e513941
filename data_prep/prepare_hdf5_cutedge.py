"""Normalise and crop iSeg-2017 subjects into one HDF5 file each (iseg ``prepare_hdf5_cutedge``).

    python data_prep/prepare_hdf5_cutedge.py sample/iseg sample/iseg_hdf5 --margin 32

Reads subject-<i>-T1/-T2[-label].hdr/.img (Analyze), z-scores T1 and T2 inside the mask
T1 > 0, crops to the mask's bounding box +- margin voxels, maps labels {0,10,150,250} to
{0,1,2,3} and writes subject-<i>.h5 with 'data' (2, Z, X, Y) float32 and 'label'
(Z, X, Y) uint8. Subjects already written are skipped, so an interrupted run resumes.
"""
import argparse
import sys

from keras_medseg.io.prep import prepare_iseg_folder, run_prep


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", help="folder of subject-<i>-{T1,T2,label} volumes")
    parser.add_argument("out_dir", help="output folder (must lie outside in_dir)")
    parser.add_argument("--margin", type=int, default=32,
                        help="voxels kept around the brain mask (default 32)")
    parser.add_argument("--leading-axes", action="store_true",
                        help="store the original's caffe layout (1, 2, Z, X, Y) / (1, 1, Z, X, Y)")
    parser.add_argument("--overwrite", action="store_true", help="redo subjects already written")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_prep(prepare_iseg_folder, args.in_dir, args.out_dir, args.margin,
                    leading_axes=args.leading_axes, overwrite=args.overwrite, progress=not
                    args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
