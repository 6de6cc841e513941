"""Run the nodule3d k-fold experiment (both stages, evaluation, pooled FROC) in one command.

    # the original's settings on your series CSV (5 folds, 50 epochs per stage)
    python experiments/nodule3d/run_folds.py --series-csv data/series.csv --out-dir runs/nodule3d

    # synthetic CT data (keras_medseg.sampledata), the longer run of the README
    python experiments/nodule3d/run_folds.py --synthetic 12 --out-dir runs/nodule3d_synth \\
        --pipeline-k 4 --pipeline-folds 0 --stage1-epochs 30 --stage1-learning-rate 1e-3 \\
        --stage2-epochs 5 --stage2-learning-rate 1e-3

Every step is resumable: run the same command again after an interruption. ``--quick``
starts from the quick-mode settings (few epochs, learning rate 1e-3) instead of the
original's; flags given explicitly still override them. All results land under
``OUT_DIR/summary`` (pooled FROC, ``folds.md``) and ``OUT_DIR/fold<f>/evaluation``.
"""
import argparse
import sys


def main(argv=None):
    from keras_medseg.nodule3d.evaluation import EvalConfig
    from keras_medseg.nodule3d.pipeline import PipelineConfig, quick_configs, run_pipeline
    from keras_medseg.nodule3d.training import Stage1Config, Stage2Config
    from keras_medseg.training import add_config_arguments, config_from_args

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--quick", action="store_true")
    quick = pre.parse_known_args(argv)[0].quick
    defaults = quick_configs() if quick else (PipelineConfig(), Stage1Config(), Stage2Config(),
                                              EvalConfig())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="start from the quick-mode settings")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--series-csv", help="series CSV: path,class,x,y,z,d,group")
    source.add_argument("--synthetic", type=int, metavar="N",
                        help="generate N synthetic CT series (keras_medseg.sampledata)")
    parser.add_argument("--synthetic-shape", type=int, nargs=3, default=(48, 128, 128),
                        help="synthetic volume shape z y x (default 48 128 128)")
    parser.add_argument("--synthetic-seed", type=int, default=0)
    parser.add_argument("--out-dir", required=True, help="output folder")
    parser.add_argument("--classes", default=None, help="class-mapping CSV (bg,0 required)")
    parser.add_argument("--progress", action="store_true", help="progress bars of data steps")
    for prefix, cfg in zip(("pipeline", "stage1", "stage2", "eval"), defaults):
        add_config_arguments(parser.add_argument_group(prefix), cfg, prefix=prefix)
    args = parser.parse_args(argv)
    configs = [config_from_args(type(cfg), args, prefix=prefix)
               for prefix, cfg in zip(("pipeline", "stage1", "stage2", "eval"), defaults)]
    series_csv = args.series_csv
    if args.synthetic is not None:
        from pathlib import Path

        from keras_medseg.sampledata.nodule3d import generate_nodule3d

        series_csv = generate_nodule3d(Path(args.out_dir) / "synthetic", seed=args.synthetic_seed,
                                       n_series=args.synthetic,
                                       shape=tuple(args.synthetic_shape)).series_csv
    try:
        result = run_pipeline(series_csv, args.out_dir, pipeline=configs[0], stage1=configs[1],
                              stage2=configs[2], evaluation=configs[3], classes=args.classes,
                              progress=args.progress)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((result.summary_dir / "folds.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
