"""Seeded, group-aware data splits and the text files that record them.

A split is a :class:`Split` of *indices* into the caller's item list (paths, names, rows).
Every function is deterministic given ``seed``: the same inputs and seed give the same split
and byte-identical split files, so a run can be repeated from the files saved beside it.

``groups`` (one label per item: a video id for nerve frames, a volume for brain slices, a
CT series, a neuron) keep every member of a group on one side, which the originals'
image-level splits did not (neighbouring video frames and slices leaked across sides).
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_medseg.utils import write_text

__all__ = [
    "Split", "SPLIT_NAMES", "train_val_test_split", "kfold", "contiguous_groups",
    "make_imagesets", "read_imageset", "write_split", "read_split",
]

SPLIT_NAMES = ("train", "val", "test")
"""Sides of a :class:`Split`, also the file names ``<side>.txt`` of :func:`write_split`."""


@dataclass(frozen=True)
class Split:
    """Indices of the items on each side of a split.

    Attributes
    ----------
    train, val, test : tuple of int
        Sorted, pairwise disjoint indices into the item list. ``test`` is empty for a
        k-fold fold (the held-out fold is ``val``).

    Raises
    ------
    ValueError
        On construction, if an index is negative or appears twice.
    """

    train: tuple
    val: tuple = ()
    test: tuple = ()

    def __post_init__(self):
        seen = set()
        for side in SPLIT_NAMES:
            values = tuple(sorted(int(i) for i in getattr(self, side)))
            if any(i < 0 for i in values):
                raise ValueError(f"Split.{side} holds a negative index")
            if len(set(values)) != len(values) or seen.intersection(values):
                raise ValueError(f"Split.{side} repeats an index or shares one with another side")
            seen.update(values)
            object.__setattr__(self, side, values)

    @property
    def trainval(self):
        """Sorted union of ``train`` and ``val``."""
        return tuple(sorted(self.train + self.val))

    def sizes(self):
        """``{"train": n, "val": n, "test": n}``."""
        return {side: len(getattr(self, side)) for side in SPLIT_NAMES}

    def take(self, items):
        """The items of each side: ``{"train": [...], "val": [...], "test": [...]}``.

        Raises
        ------
        ValueError
            If an index is out of range for ``items``.
        """
        items = list(items)
        top = max((max(getattr(self, s), default=-1) for s in SPLIT_NAMES), default=-1)
        if top >= len(items):
            raise ValueError(f"split index {top} is out of range for {len(items)} items")
        return {side: [items[i] for i in getattr(self, side)] for side in SPLIT_NAMES}


# ------------------------------------------------------------------------------ helpers
def _n_items(items):
    if isinstance(items, numbers.Integral) and not isinstance(items, bool):
        n = int(items)
    else:
        n = len(items)
    if n <= 0:
        raise ValueError(f"items must be a positive count or a non-empty sequence; got {n} items")
    return n


def _check_fraction(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) \
            or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def _check_seed(seed):
    if seed is None or not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (splits are always seeded); got {seed!r}")
    return int(seed)


def _labels(values, n, name):
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must hold one value per item ({n}); got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1)


def _random_state(seed, salt=0):
    return np.random.default_rng([seed, salt])


def _cut_groups(order, counts, targets):
    """Walk groups in ``order``; return the cut positions whose cumulative counts come closest
    to the cumulative ``targets`` (each side with a positive target gets >= 1 group)."""
    cum = np.concatenate([[0], np.cumsum(counts[order])])
    cuts, start = [], 0
    remaining_sides = sum(1 for t in targets if t > 0)
    for goal, t in zip(np.cumsum(targets), targets):
        if t <= 0:
            cuts.append(start)
            continue
        remaining_sides -= 1
        # leave at least one group for every later side that needs one, and one for train
        hi = len(order) - remaining_sides - 1
        lo = start + 1
        if lo > hi:
            raise ValueError(f"not enough groups ({len(order)}) for a non-empty train, val and "
                             f"test side; use more groups or zero fractions")
        candidates = np.arange(lo, hi + 1)
        best = candidates[np.argmin(np.abs(cum[candidates] - goal))]
        cuts.append(int(best))
        start = int(best)
    return cuts


# ------------------------------------------------------------------------------- splits
def train_val_test_split(items, *, val_fraction=0.15, test_fraction=0.15, seed=0,
                         groups=None, stratify=None):
    """Seeded train / validation / test split, optionally by group and/or stratified.

    * no groups, no stratify: a seeded permutation; ``round(n * fraction)`` items for val
      and test (at least one when the fraction is positive), the rest train;
    * ``stratify`` only: scikit-learn's ``train_test_split(stratify=...)``, first test then
      val out of the rest, with ``random_state=seed`` (so ``val_fraction=0,
      test_fraction=0.2, seed=15`` reproduces the brainview original's split exactly);
    * ``groups``: whole groups are shuffled with the seed and cut where the item counts come
      closest to the fractions; every group is on exactly one side;
    * ``groups`` and ``stratify``: scikit-learn's ``StratifiedGroupKFold(shuffle=True,
      random_state=seed)`` with ``round(1 / fraction)`` folds picks the test groups, then the
      validation groups from the rest; fractions are met approximately.

    Parameters
    ----------
    items : int or sequence
        Number of items, or the items themselves (only their count is used).
    val_fraction, test_fraction : float, optional
        Fractions in [0, 1) of the items; their sum must be < 1 (train gets the rest).
    seed : int, optional
        Non-negative; required (no unseeded splits).
    groups : sequence, optional
        Group label per item.
    stratify : sequence, optional
        Class label per item.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        For fractions outside [0, 1) or summing to 1 or more, label arrays of the wrong
        length, a missing seed, or too few items/groups for the non-empty sides requested.
    """
    n = _n_items(items)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1 to leave a training set; "
                         f"got {val_fraction} + {test_fraction}")
    seed = _check_seed(seed)
    group_codes = _labels(groups, n, "groups")
    strata = _labels(stratify, n, "stratify")
    index = np.arange(n)

    if group_codes is None and strata is None:
        perm = _random_state(seed).permutation(n)
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        if n_test + n_val >= n:
            raise ValueError(f"{n} items are too few for the requested val/test fractions "
                             f"({val_fraction}, {test_fraction})")
        return Split(train=perm[n_test + n_val:], val=perm[n_test:n_test + n_val], test=perm[:n_test])

    if group_codes is None:
        from sklearn.model_selection import train_test_split

        rest, test = (index, index[:0])
        if test_fraction > 0:
            rest, test = train_test_split(index, test_size=test_fraction, stratify=strata,
                                          random_state=seed)
        train, val = rest, index[:0]
        if val_fraction > 0:
            train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                          stratify=strata[rest], random_state=seed)
        return Split(train=train, val=val, test=test)

    n_groups = int(group_codes.max()) + 1
    if strata is None:
        counts = np.bincount(group_codes, minlength=n_groups)
        order = _random_state(seed).permutation(n_groups)
        targets = [n * test_fraction, n * val_fraction]
        cut_test, cut_val = _cut_groups(order, counts, targets)
        side_of_group = np.zeros(n_groups, dtype=np.int64)  # 0 train, 1 val, 2 test
        side_of_group[order[:cut_test]] = 2
        side_of_group[order[cut_test:cut_val]] = 1
        side = side_of_group[group_codes]
        return Split(train=index[side == 0], val=index[side == 1], test=index[side == 2])

    from sklearn.model_selection import StratifiedGroupKFold

    def held_out(subset, fraction, salt):
        k = max(2, round(1 / fraction))
        if len(np.unique(group_codes[subset])) < k:
            raise ValueError(f"{len(np.unique(group_codes[subset]))} groups are too few for a "
                             f"fraction of {fraction} ({k} folds)")
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + salt)
        keep, out = next(cv.split(subset, strata[subset], group_codes[subset]))
        return subset[keep], subset[out]

    rest, test = (index, index[:0])
    if test_fraction > 0:
        rest, test = held_out(index, test_fraction, 0)
    train, val = rest, index[:0]
    if val_fraction > 0:
        train, val = held_out(rest, val_fraction / (1 - test_fraction), 1)
    return Split(train=train, val=val, test=test)


def kfold(items, k, *, seed=0, groups=None, stratify=None):
    """Seeded k-fold cross-validation, optionally by group and/or stratified.

    * no groups: scikit-learn ``KFold`` / ``StratifiedKFold`` with ``shuffle=True,
      random_state=seed`` (``stratify=y, k=5, seed=15`` is the brainview original);
    * ``groups``: groups are shuffled with the seed, then, largest first, each is given to
      the fold holding the fewest items so far (scikit-learn's ``GroupKFold`` balances the
      same way but cannot be seeded);
    * ``groups`` and ``stratify``: ``StratifiedGroupKFold(shuffle=True, random_state=seed)``.

    Parameters
    ----------
    items : int or sequence
    k : int
        Number of folds, >= 2 and <= the number of items (or groups).
    seed, groups, stratify
        As in :func:`train_val_test_split`.

    Returns
    -------
    list of Split
        ``k`` splits; fold ``i``'s held-out part is ``val``, the rest ``train``, ``test`` empty.

    Raises
    ------
    ValueError
        For ``k < 2``, ``k`` larger than the number of items or groups, label arrays of the
        wrong length, or a missing seed.
    """
    n = _n_items(items)
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 2:
        raise ValueError(f"k must be an integer >= 2; got {k!r}")
    seed = _check_seed(seed)
    group_codes = _labels(groups, n, "groups")
    strata = _labels(stratify, n, "stratify")
    index = np.arange(n)

    if group_codes is None:
        if k > n:
            raise ValueError(f"k={k} folds need at least {k} items; got {n}")
        from sklearn.model_selection import KFold, StratifiedKFold

        if strata is None:
            cv = KFold(n_splits=k, shuffle=True, random_state=seed)
        else:
            cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [Split(train=tr, val=va) for tr, va in cv.split(index, strata)]

    n_groups = int(group_codes.max()) + 1
    if k > n_groups:
        raise ValueError(f"k={k} folds need at least {k} groups; got {n_groups}")
    if strata is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [Split(train=tr, val=va) for tr, va in cv.split(index, strata, group_codes)]

    counts = np.bincount(group_codes, minlength=n_groups)
    order = _random_state(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += counts[g]
    fold = fold_of_group[group_codes]
    return [Split(train=index[fold != i], val=index[fold == i]) for i in range(k)]


def contiguous_groups(n, block_size):
    """Group labels ``i // block_size`` for ``n`` ordered items (e.g. consecutive slices of
    one volume), so near-identical neighbours stay on one side of a split.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    n = _n_items(n)
    if not isinstance(block_size, numbers.Integral) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
    return np.arange(n, dtype=np.int64) // int(block_size)


# -------------------------------------------------------------------------------- files
def _check_names(names, what="names"):
    names = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in names]
    for x in names:
        if not isinstance(x, str) or not x or x != x.strip() or "\n" in x or "\r" in x:
            raise ValueError(f"{what} must be non-empty strings without surrounding whitespace "
                             f"or line breaks; got {x!r}")
    if len(set(names)) != len(names):
        dup = next(x for i, x in enumerate(names) if x in names[:i])
        raise ValueError(f"{what} must be unique; {dup!r} appears more than once")
    return names


def _lines(items):
    return "".join(f"{x}\n" for x in items)


def write_split(directory, split, items):
    """Write ``train.txt``, ``val.txt`` and ``test.txt`` (one item per line) into
    ``directory``, atomically.

    Parameters
    ----------
    directory : str or path-like
        Typically the run folder.
    split : Split
    items : sequence of str or path-like
        The item list the split indexes; items are written as strings in index order.

    Returns
    -------
    dict of str to pathlib.Path
        The three files.

    Raises
    ------
    ValueError
        If items repeat, contain line breaks, or an index is out of range.
    """
    if not isinstance(split, Split):
        raise ValueError(f"split must be a Split; got {type(split).__name__}")
    items = _check_names(items, "items")
    sides = split.take(items)
    directory = Path(directory)
    return {side: write_text(directory / f"{side}.txt", _lines(sides[side])) for side in SPLIT_NAMES}


def _read_lines(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line]


def read_split(directory, items):
    """Read the files of :func:`write_split` back into a :class:`Split` over ``items``.

    Raises
    ------
    FileNotFoundError
        If one of the three files is missing.
    ValueError
        Naming the file and the line whose item is not in ``items``.
    """
    items = _check_names(items, "items")
    position = {x: i for i, x in enumerate(items)}
    sides = {}
    for side in SPLIT_NAMES:
        path = Path(directory) / f"{side}.txt"
        idx = []
        for lineno, name in enumerate(_read_lines(path), start=1):
            if name not in position:
                raise ValueError(f"{str(path)!r} line {lineno}: item {name!r} is not in the "
                                 f"given item list")
            idx.append(position[name])
        sides[side] = idx
    return Split(**sides)


IMAGESET_NAMES = ("train", "val", "trainval", "test")


def make_imagesets(names, out_dir, *, val_fraction=0.15, test_fraction=0.15, seed=0,
                   groups=None, stratify=None):
    """Split image names and write ``out_dir/ImageSets/{train,val,trainval,test}.txt``.

    The nerve original's ``generateTxt`` (unseeded there). The split is
    :func:`train_val_test_split` with the same arguments; ``trainval`` is train + val.
    Names are written as given (typically file stems), one per line, in the order of
    ``names``, so the same inputs and seed give byte-identical files.

    Parameters
    ----------
    names : sequence of str
        Unique image names.
    out_dir : str or path-like
        Dataset folder; ``ImageSets/`` is created inside it.
    val_fraction, test_fraction, seed, groups, stratify
        See :func:`train_val_test_split`.

    Returns
    -------
    dict of str to pathlib.Path
        The four files, keyed ``train``, ``val``, ``trainval``, ``test``.

    Raises
    ------
    ValueError
        For repeated names, names with line breaks, and the errors of
        :func:`train_val_test_split`.
    """
    names = _check_names(names)
    split = train_val_test_split(len(names), val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed, groups=groups,
                                 stratify=stratify)
    folder = Path(out_dir) / "ImageSets"
    chosen = {"train": split.train, "val": split.val, "trainval": split.trainval, "test": split.test}
    return {key: write_text(folder / f"{key}.txt", _lines(names[i] for i in chosen[key]))
            for key in IMAGESET_NAMES}


def read_imageset(root, split):
    """Names listed in ``root/ImageSets/<split>.txt`` (blank lines skipped).

    ``root`` may also be the ``ImageSets`` folder itself, or the text file.

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    ValueError
        If a name is listed twice (naming the file).
    """
    root = Path(root)
    if root.is_file():
        path = root
    elif root.name == "ImageSets":
        path = root / f"{split}.txt"
    else:
        path = root / "ImageSets" / f"{split}.txt"
    names = _read_lines(path)
    if len(set(names)) != len(names):
        dup = next(x for i, x in enumerate(names) if x in names[:i])
        raise ValueError(f"{str(path)!r} lists {dup!r} more than once")
    return names
