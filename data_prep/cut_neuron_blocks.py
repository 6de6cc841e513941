"""Cut neuron image volumes and SWC reconstructions into 3D-SSM blocks (the Vaa3D plugin's job).

    python data_prep/cut_neuron_blocks.py sample/neurotrace work/neurotrace_blocks

DATA_DIR holds gold/<name>.swc, auto/<name>.swc and images/<name>.tif (or .npy, .nii.gz, ...),
paired by name. The gold tree is resampled to 1-voxel steps; every 100th node is the centre
of a block of 64x64x32 voxels (x, y, z; array (32, 64, 64), zero-padded outside the volume).
Writes OUT_DIR/images/<name>_<block>.npy, OUT_DIR/gold|auto/<name>_<block>.swc (nodes strictly
inside the block, block coordinates, cleaned) and one index OUT_DIR/blocks.csv (neuron, block,
x, y, z, paths, n_gold, n_auto, subset few|many, label). TIFF volumes are memory-mapped or read
page by page, never loaded whole. Finished neurons are skipped, so an interrupted run resumes.

--features also writes OUT_DIR/features.csv (8 gold-vs-auto difference features and the 32
L-Measure features of each auto block). --manual-labels CSV (neuron,block,label) or, for the
synthetic data, --simulated-labels then chooses the labelling model (feature-subset search,
logistic regression and MLPs, splits by neuron), saves it in OUT_DIR/labeller/ and fills the
label column of every 'many' block.
"""
import argparse
import sys

from keras_medseg.io.prep import PREP_ERRORS


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="folder with gold/, auto/ and images/")
    parser.add_argument("out_dir", help="output folder (must lie outside data_dir)")
    parser.add_argument("--every", type=int, default=100,
                        help="a block centre every N resampled gold nodes (default 100)")
    parser.add_argument("--no-clean", action="store_true",
                        help="keep spurs and small fragments in the block SWCs")
    parser.add_argument("--features", action="store_true",
                        help="also write features.csv (difference and L-Measure features)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--manual-labels", metavar="CSV",
                        help="manual labels (neuron,block,label): label all 'many' blocks")
    labels.add_argument("--simulated-labels", action="store_true",
                        help="synthetic data only: manual labels from the simulated image "
                             "quality, then label all 'many' blocks")
    parser.add_argument("--quick", action="store_true",
                        help="small labelling search (3 repeats, MLP on 8 subsets)")
    parser.add_argument("--mlp-subsets", default=None,
                        help="MLP tried on the N best logistic subsets, or 'all' "
                             "(default 32; --quick 8)")
    parser.add_argument("--seed", type=int, default=0, help="labelling search seed (default 0)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel processes for the labelling search (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo blocks, features and labeller already written")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from keras_medseg.neurotrace.blocks import cut_blocks_folder
    from keras_medseg.neurotrace.labels import (auto_label_blocks, compute_block_features,
                                                simulated_manual_labels)

    mlp_subsets = "auto"
    if args.mlp_subsets is not None:
        if args.mlp_subsets == "all":
            mlp_subsets = None
        else:
            try:
                mlp_subsets = int(args.mlp_subsets)
            except ValueError:
                print(f"error: --mlp-subsets must be an integer or 'all'; got "
                      f"{args.mlp_subsets!r}", file=sys.stderr)
                return 1
    progress = not args.no_progress
    try:
        summary = cut_blocks_folder(args.data_dir, args.out_dir, every=args.every,
                                    clean=not args.no_clean, overwrite=args.overwrite,
                                    progress=progress)
        print(summary)
        labelling = args.manual_labels or args.simulated_labels
        if args.features and not labelling:
            path = compute_block_features(summary.csv_path, overwrite=args.overwrite,
                                          progress=progress)
            print(f"features: {path}")
        if labelling:
            manual = args.manual_labels
            if args.simulated_labels:
                manual = simulated_manual_labels(args.data_dir, summary.csv_path)
            result = auto_label_blocks(summary.csv_path, manual, quick=args.quick,
                                       seed=args.seed, mlp_subsets=mlp_subsets,
                                       n_jobs=args.jobs, overwrite=args.overwrite,
                                       progress=progress)
            print(result)
    except PREP_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
