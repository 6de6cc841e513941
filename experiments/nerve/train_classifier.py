"""Train a nerve / opening wound / tendon frame classifier (two-stage transfer recipe).

One script for every backbone of the original (``--backbone densenet169``, ``densenet201``,
``mobilenetv2``, ``resnet50v2``, ``resnet101v2``, ``resnet152v2``; any registry name works):
the defaults are that backbone's original settings (batch 12, 224x224, dropout 0.3, Adam
1e-3, 10 frozen epochs, then its fine-tune epochs from its fine-tune layer). Every config
field is also a ``--data-*``, ``--model-*`` or ``--train-*`` flag; the short flags below
override them.

Examples
--------
The original's DenseNet169 run on real frames::

    python experiments/nerve/train_classifier.py --backbone densenet169 \\
        --data-dir frames/train_val --test-dir frames/video --run-dir runs/nerve/densenet169

Split by video instead of by image (frames named ``<video>_<frame>.jpg``)::

    python experiments/nerve/train_classifier.py --data-dir frames/train_val \\
        --test-dir frames/video --split-by video --data-group-pattern '^(?P<group>[^_]+)_'

Without ``--data-dir`` synthetic frames are generated first (``--synthetic-dir``).
"""
import argparse
import sys

from keras_medseg.backbones import list_backbones
from keras_medseg.nerve import classification as C
from keras_medseg.training import add_config_arguments, config_from_args


def _pre_parse(argv):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backbone", default="mobilenetv2", choices=list_backbones())
    return pre.parse_known_args(argv)[0].backbone


def build_parser(backbone="mobilenetv2"):
    defaults = C.default_classifier_config(backbone)
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    quick = parser.add_argument_group("common options (override the config flags)")
    quick.add_argument("--backbone", default="mobilenetv2", choices=list_backbones(),
                       help="registry backbone; sets the original's per-backbone defaults")
    quick.add_argument("--data-dir", dest="short_data_dir", default=None,
                       help="training and validation class folders")
    quick.add_argument("--test-dir", dest="short_test_dir", default=None,
                       help="test ('video') class folders")
    quick.add_argument("--run-dir", default=None, help="run folder")
    quick.add_argument("--strategy", default=None, choices=("default", "mirrored", "multiworker"))
    quick.add_argument("--encoder-weights", default=None,
                       help="'imagenet', a weights file, or 'none'")
    quick.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                       help="input size: N or H W")
    quick.add_argument("--initial-epochs", type=int, default=None, help="frozen-stage epochs")
    quick.add_argument("--fine-tune-epochs", type=int, default=None, help="fine-tuning epochs")
    quick.add_argument("--split-by", default=None, choices=C.SPLIT_BY,
                       help="image (the original) or video")
    synth = parser.add_argument_group("synthetic data (used when no data folder is given)")
    synth.add_argument("--synthetic-dir", default="runs/nerve/sample",
                       help="where synthetic frames are written")
    synth.add_argument("--synthetic-videos", type=int, default=60)
    synth.add_argument("--synthetic-size", type=int, default=128)
    add_config_arguments(parser.add_argument_group("data config"), defaults.data, prefix="data")
    add_config_arguments(parser.add_argument_group("model config"), defaults.model,
                         prefix="model")
    add_config_arguments(parser.add_argument_group("train config"), defaults.train,
                         prefix="train")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_pre_parse(argv)).parse_args(argv)
    data = config_from_args(C.ClassifierDataConfig, args, prefix="data")
    model = config_from_args(C.ClassifierModelConfig, args, prefix="model")
    train = config_from_args(C.ClassifierTrainConfig, args, prefix="train")
    model.backbone = args.backbone if args.backbone else model.backbone
    if args.short_data_dir:
        data.data_dir = args.short_data_dir
    if args.short_test_dir:
        data.test_dir = args.short_test_dir
    if args.run_dir:
        train.run_dir = args.run_dir
    if args.strategy:
        train.strategy = args.strategy
    if args.encoder_weights:
        model.encoder_weights = (None if args.encoder_weights.lower() == "none"
                                 else args.encoder_weights)
    if args.image_size:
        if len(args.image_size) not in (1, 2):
            raise SystemExit("--image-size takes N or H W")
        data.image_size = tuple(args.image_size * (2 // len(args.image_size)))
    if args.initial_epochs is not None:
        train.initial_epochs = args.initial_epochs
    if args.fine_tune_epochs is not None:
        train.fine_tune_epochs = args.fine_tune_epochs
    if args.split_by:
        data.split_by = args.split_by
    if not data.data_dir:
        from keras_medseg.sampledata import generate_nerve

        sample = generate_nerve(args.synthetic_dir, seed=data.seed,
                                image_size=args.synthetic_size,
                                n_videos=args.synthetic_videos,
                                test_videos=max(1, args.synthetic_videos // 6),
                                frames_per_class=2, raw_frames=0)
        data.data_dir = str(sample.classification_dir / "train_val")
        data.test_dir = str(sample.classification_dir / "test")
        print(f"synthetic frames in {sample.classification_dir}")
    # re-run the checks of the dataclasses on the overridden values
    config = C.ClassifierConfig(data=C.ClassifierDataConfig(**vars(data)),
                                model=C.ClassifierModelConfig(**vars(model)),
                                train=C.ClassifierTrainConfig(**vars(train)))
    result = C.train_classifier(config, log=print)
    for side, ev in result.evaluations.items():
        auc = result.auc(side)
        print(f"{side}: accuracy {ev.accuracy:.4f} (n={len(ev.y_true)}), AUC micro "
              f"{auc['micro']:.4f}, macro {auc['macro']:.4f}")
    print(f"reports in {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
