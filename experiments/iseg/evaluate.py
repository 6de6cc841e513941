"""Evaluate a trained iseg run on whole subjects: sliding-window label maps, per-class
DSC / MHD / ASD (``surface`` and ``evalseg`` definitions) as CSV + markdown, overlay figures.

Examples
--------
The held-out subjects of a run (``<run dir>/splits/val.txt``), or the held-out ICBM152
hemisphere when the run was trained with ``--icbm152`` (``<run dir>/data/split.json``)::

    python experiments/iseg/evaluate.py --run-dir runs/iseg/icbm152

Other subjects, another checkpoint::

    python experiments/iseg/evaluate.py --run-dir runs/iseg/full --model runs/iseg/full/best.keras \\
        --files iseg_hdf5/subject-9.h5 iseg_hdf5/subject-10.h5 --overlap 0.5

The ICBM152 training hemisphere instead of the held-out one, and test-time augmentation
averaged over the 4 proper rotations about array axis 0 (no reflections)::

    python experiments/iseg/evaluate.py --run-dir runs/iseg/icbm152 --icbm-half train
    python experiments/iseg/evaluate.py --run-dir runs/iseg/icbm152 --tta axis0

Writes to ``<run dir>/eval`` (``eval_train`` for ``--icbm-half train``, ``_tta-<name>``
appended with ``--tta``) unless ``--out`` is given.
"""
import argparse
import json
import sys
from pathlib import Path

from keras_medseg.iseg import evaluation as E


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="training run folder")
    parser.add_argument("--model", default=None, help="model file (default <run dir>/best.keras)")
    parser.add_argument("--files", nargs="*", default=None, help="HDF5 subjects to evaluate")
    parser.add_argument("--out", default=None, help="output folder (default <run dir>/eval)")
    parser.add_argument("--window", type=int, nargs=3, default=None,
                        help="sliding window (default: the run's training crop)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--spacing", type=float, nargs=3, default=None,
                        help="voxel size in mm (default: the ICBM152 split's, else 1 mm)")
    parser.add_argument("--icbm-half", default="test", choices=("test", "train"),
                        help="ICBM152 runs without --files: the held-out (test) or the "
                             "training hemisphere")
    parser.add_argument("--tta", default="none", choices=E.TTA_CHOICES,
                        help="test-time augmentation: mean probabilities over the 4 proper "
                             "rotations about an array axis, or all 24 (never reflections)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        window = tuple(args.window or config["data"]["crop_size"])
        files, spacing = args.files, args.spacing
        icbm = run_dir / "data" / "split.json"
        if files is None and icbm.is_file():
            record = json.loads(icbm.read_text())
            files, spacing = [record[args.icbm_half]], spacing or record["spacing"]
        elif files is None:
            files = (run_dir / "splits" / "val.txt").read_text().split()
        model = E.load_model(args.model or run_dir / "best.keras")
        out = args.out
        if out is None:
            out = "eval" + ("_train" if args.icbm_half == "train" else "")
            out = run_dir / (out + (f"_tta-{args.tta}" if args.tta != "none" else ""))
        result = E.evaluate_subjects(model, files, out, window=window, overlap=args.overlap,
                                     batch_size=args.batch_size, spacing=spacing,
                                     progress=args.progress, rotations=E.tta_rotations(args.tta))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(result.files["mean_md"]).read_text())
    print(f"mean DSC over CSF/GM/WM: {result.mean_dsc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
