"""brainview: k-fold cross-validation, final model and test evaluation (the original's notebook).

Examples
--------
python experiments/brainview/train_kfold.py --data runs/bv/data/atlasA runs/bv/data/atlasB \\
    --out runs/brainview/kfold --encoder-weights none --split blocks
python experiments/brainview/train_kfold.py --icbm152 --out runs/brainview/icbm152 \\
    --encoder-weights none --split blocks --block-size 10 --gap 2 --image-size 96 --epochs 40 \\
    --learning-rate 1e-3 --k 0 --fine-tune-at 0 --augment --black-threshold 0.05 \\
    --black-scale fraction --cache
python experiments/brainview/train_kfold.py --icbm152 --out runs/brainview/icbm152_maps \\
    --encoder-weights none --split blocks --block-size 10 --gap 2 --image-size 96 --epochs 20 \\
    --learning-rate 1e-3 --k 0 --fine-tune-at 0 --augment --black-threshold 0.05 \\
    --black-scale fraction --cache --icbm152-maps gm wm --augment-stretch 0.1 \\
    --augment-contrast 0.3 --augment-independent --ema-momentum 0.99 --tta
python experiments/brainview/train_kfold.py --nrrd nissl.nrrd --nrrd-axis 0 --nrrd-view coronal \\
    --data atlasA --out runs/brainview/merged
"""
import argparse
import sys
from pathlib import Path

from keras_medseg.brainview import (ICBM152_MAPS, ICBM152_MIRROR, BrainviewConfig, ViewSlices,
                                    icbm152_map_views, icbm152_views, load_png_views,
                                    load_volume_views, run_kfold)
from keras_medseg.training import add_config_arguments, config_from_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="*", default=[], help="PNG dataset folders (one sub-folder "
                   "per view: horizontal, coronal, sagittal)")
    p.add_argument("--nrrd", nargs="*", default=[], help="volume files cut into slices")
    p.add_argument("--nrrd-axis", type=int, default=0)
    p.add_argument("--nrrd-view", default="coronal")
    p.add_argument("--icbm152", action="store_true",
                   help="add the real ICBM152 template cut in the three planes")
    p.add_argument("--icbm152-keep-aspect", action="store_true",
                   help="pad the ICBM152 slices to a common square field of view before "
                        "resizing (default: stretch each to the square, as the original)")
    p.add_argument("--icbm152-maps", nargs="*", default=[], choices=ICBM152_MAPS,
                   help="add the slices of these ICBM152 probability maps (gm, wm) at the "
                        "positions of training slices as extra training images (never tested)")
    p.add_argument("--icbm152-mirror-guard", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="the template is left-right symmetric (sagittal slice x equals slice "
                        "196 - x): also drop training sagittal slices within --gap of the "
                        "mirror image of a test slice (default; --no-icbm152-mirror-guard "
                        "lets those identical copies leak into training)")
    p.add_argument("--out", required=True, help="output folder")
    add_config_arguments(p, BrainviewConfig)
    return p.parse_args(argv)


def load_data(args, config, out):
    parts = [load_png_views(d) for d in args.data]
    parts += [load_volume_views(v, out / "slices", axis=args.nrrd_axis, view=args.nrrd_view,
                                size=config.image_size) for v in args.nrrd]
    if args.icbm152:
        parts.append(icbm152_views(out / "slices", size=config.image_size,
                                   keep_aspect=args.icbm152_keep_aspect))
    if not parts:
        raise SystemExit("give at least one of --data, --nrrd, --icbm152")
    return ViewSlices.concat(*parts)


def load_extra(args, config, out):
    if not args.icbm152_maps:
        return None
    if not args.icbm152:
        raise SystemExit("--icbm152-maps needs --icbm152")
    return icbm152_map_views(out / "slices", maps=args.icbm152_maps, size=config.image_size,
                             keep_aspect=args.icbm152_keep_aspect)


def main(argv=None):
    args = parse_args(argv)
    config = config_from_args(BrainviewConfig, args)
    out = Path(args.out)
    result = run_kfold(load_data(args, config, out), out, config=config,
                       train_extra=load_extra(args, config, out),
                       mirror=ICBM152_MIRROR if args.icbm152 and args.icbm152_mirror_guard
                       else None)
    for row in result.folds:
        print(f"fold {row['fold']}: accuracy {row['accuracy']:.4f}, weighted F1 "
              f"{row['f1_weighted']:.4f}, AUC {row['auc_ovr']:.4f}")
    t = result.test
    print(f"test: accuracy {t['accuracy']:.4f}, weighted F1 {t['f1_weighted']:.4f}, "
          f"AUC {t['auc_ovr']:.4f} (n={t['n']}); reports in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
