"""Block sequences of the 3D-SSM: neighbouring blocks of one neuron, oldest first.

Blocks are cut along a neuron's gold tree (a centre every 100 nodes), so a block's
predecessor along the tree is usually close by. The sequence heads of the 3D-SSM read a
length-5 sequence ending at the block to classify:

1. :func:`previous_blocks`: the predecessor of a block is the most recent earlier block
   (largest smaller ``block`` number) of the SAME neuron whose centre is within
   ``max_distance`` voxels (Euclidean distance between the centres, ``<=``). The original
   additionally required all three coordinates to differ, which dropped neighbours that
   share one coordinate (e.g. two blocks in the same z plane); that test is not reproduced.
2. :func:`block_chains`: following predecessors gives the chain
   ``[p4, p3, p2, p1, block]`` (row indices, oldest first). A shorter chain is padded at the
   front by repeating its oldest block, so a block without predecessor gives
   ``[block] * 5``.
3. :func:`sequence_inputs`: the values of the sequence. The current block always enters
   as the SOFTMAX PROBABILITIES of a base network (the original mixed raw logits with
   one-hot labels); the previous blocks enter as

   * predicted mode (default, the test-time protocol): the same network's probabilities for
     those blocks, so no true label is used anywhere;
   * oracle mode (``labels=``, the original's protocol): one-hot TRUE labels of the
     previous blocks. This leaks labels at test time and is offered only to reproduce the
     original's figures. Padding positions that repeat the current block still carry its
     probabilities, never its label.

Example
-------
>>> import numpy as np
>>> prev = previous_blocks(["a", "a", "a"], [0, 1, 2], [[0, 0, 0], [50, 0, 0], [300, 0, 0]])
>>> prev.tolist()
[-1, 0, -1]
>>> block_chains(prev, length=3).tolist()
[[0, 0, 0], [0, 0, 1], [2, 2, 2]]
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["previous_blocks", "block_chains", "sequence_inputs", "check_probabilities"]


def previous_blocks(neurons, blocks, centres, *, max_distance=100.0):
    """Row index of each block's predecessor (-1 where none).

    Parameters
    ----------
    neurons : sequence, shape (n,)
        Neuron id of each row (any hashable values; compared for equality).
    blocks : sequence of int, shape (n,)
        Block number within its neuron (order of the centres along the gold tree); unique
        within a neuron.
    centres : array-like, shape (n, 3)
        Block centres in voxels (x, y, z).
    max_distance : float
        Largest centre distance (voxels, inclusive) of a predecessor; 100 in the original.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        For row ``i``, the row ``j`` of the same neuron with the largest ``blocks[j] <
        blocks[i]`` and ``|centres[i] - centres[j]| <= max_distance``; -1 if there is none.

    Raises
    ------
    ValueError
        If the lengths differ, ``centres`` is not (n, 3) finite, a block number repeats within
        a neuron or is not an integer, or ``max_distance`` is not a non-negative number.
    """
    neurons = np.asarray(neurons)
    n = neurons.shape[0] if neurons.ndim == 1 else -1
    if neurons.ndim != 1:
        raise ValueError(f"neurons must be 1-D; got shape {neurons.shape}")
    blocks = np.asarray(blocks)
    if blocks.shape != (n,):
        raise ValueError(f"blocks must have shape ({n},) like neurons; got {blocks.shape}")
    if n and not (np.issubdtype(blocks.dtype, np.integer)
                  or (np.issubdtype(blocks.dtype, np.floating)
                      and np.all(np.isfinite(blocks)) and np.all(blocks == np.round(blocks)))):
        raise ValueError("blocks must hold integer block numbers")
    blocks = blocks.astype(np.int64)
    centres = np.asarray(centres, dtype=np.float64)
    if centres.shape != (n, 3) or not np.all(np.isfinite(centres)):
        raise ValueError(f"centres must be a finite ({n}, 3) array; got shape {centres.shape}")
    if not isinstance(max_distance, numbers.Real) or isinstance(max_distance, bool) \
            or not max_distance >= 0:
        raise ValueError(f"max_distance must be a non-negative number; got {max_distance!r}")
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    _, group = np.unique(neurons, return_inverse=True)
    group = group.reshape(-1)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        rows = rows[np.argsort(blocks[rows], kind="stable")]
        b = blocks[rows]
        if np.any(b[1:] == b[:-1]):
            dup = int(b[1:][b[1:] == b[:-1]][0])
            raise ValueError(f"block number {dup} appears twice for neuron "
                             f"{neurons[rows[0]]!r}")
        c = centres[rows]
        d2 = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
        ok = np.tril(d2 <= float(max_distance) ** 2, k=-1)  # j < i: earlier blocks only
        has = ok.any(axis=1)
        last = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)  # latest earlier neighbour
        out[rows[has]] = rows[last[has]]
    return out


def block_chains(previous, *, length=5):
    """Chains of predecessors, oldest first, padded at the front with the oldest block.

    Parameters
    ----------
    previous : array-like of int, shape (n,)
        From :func:`previous_blocks` (-1 = none; other values are row indices).
    length : int
        Sequence length (5).

    Returns
    -------
    numpy.ndarray of int64, shape (n, length)
        Row ``i`` is ``[..., previous[previous[i]], previous[i], i]``; positions before the
        oldest block of the chain repeat it.

    Raises
    ------
    ValueError
        If ``previous`` is not 1-D integer with values in ``[-1, n)``, a block is its own
        predecessor, or ``length < 1``.
    """
    previous = np.asarray(previous)
    if previous.ndim != 1 or (previous.size and not np.issubdtype(previous.dtype, np.integer)):
        raise ValueError(f"previous must be a 1-D integer array; got shape {previous.shape}, "
                         f"dtype {previous.dtype}")
    n = previous.shape[0]
    if previous.size and (previous.min() < -1 or previous.max() >= n):
        raise ValueError(f"previous must hold -1 or row indices in [0, {n})")
    if np.any(previous == np.arange(n)):
        raise ValueError("previous names a block as its own predecessor")
    if not isinstance(length, numbers.Integral) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be a positive integer; got {length!r}")
    chains = np.empty((n, int(length)), dtype=np.int64)
    chains[:, -1] = np.arange(n)
    for t in range(int(length) - 2, -1, -1):
        p = previous[chains[:, t + 1]]
        chains[:, t] = np.where(p >= 0, p, chains[:, t + 1])
    return chains


def check_probabilities(probabilities, *, name="probabilities", atol=1e-3):
    """Return ``probabilities`` as float32 (n, C) after checking they are probabilities.

    Raises
    ------
    ValueError
        If the array is not 2-D with C >= 2, has non-finite values or values outside
        [0, 1], or a row does not sum to 1 (within ``atol``): e.g. logits.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name} must be an (n, C) array with C >= 2; got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be finite")
    if p.size and (p.min() < -atol or p.max() > 1 + atol
                   or np.max(np.abs(p.sum(axis=1) - 1)) > atol):
        raise ValueError(f"{name} must be softmax probabilities (values in [0, 1], rows summing "
                         f"to 1); got values that are not (logits?)")
    return p.astype(np.float32)


def sequence_inputs(chains, probabilities, *, labels=None):
    """Sequence-head input: previous blocks' history, then the current block's probabilities.

    Parameters
    ----------
    chains : array-like of int, shape (n, L)
        From :func:`block_chains`; the last column must be ``0 .. n-1`` (row ``i`` ends at
        block ``i``).
    probabilities : array-like of float, shape (n, C)
        A base network's softmax probabilities for every block (never logits).
    labels : array-like of int, shape (n,), optional
        True labels in ``[0, C)``. None (default): predicted mode, the history is the
        previous blocks' probabilities and no label is read. Given: oracle mode, the history
        positions hold one-hot labels of the previous blocks (the original's leakage).

    Returns
    -------
    numpy.ndarray of float32, shape (n, L, C)

    Raises
    ------
    ValueError
        If ``chains`` is not (n, L) integer with valid row indices and the last column
        ``0 .. n-1``, ``probabilities`` are not probabilities (see
        :func:`check_probabilities`) of n rows, or ``labels`` are not n integers in
        ``[0, C)``.
    """
    chains = np.asarray(chains)
    p = check_probabilities(probabilities)
    n, c = p.shape
    if chains.ndim != 2 or chains.shape[0] != n or \
            (chains.size and not np.issubdtype(chains.dtype, np.integer)):
        raise ValueError(f"chains must be an integer ({n}, L) array; got shape {chains.shape}")
    if chains.size and (chains.min() < 0 or chains.max() >= n):
        raise ValueError(f"chains must hold row indices in [0, {n})")
    own = np.arange(n)
    if not np.array_equal(chains[:, -1], own):
        raise ValueError("chains[:, -1] must be 0 .. n-1 (each sequence ends at its own block)")
    seq = p[chains]
    if labels is None:
        return seq
    labels = np.asarray(labels)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be {n} integer labels; got shape {labels.shape}, "
                         f"dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must be in [0, {c})")
    onehot = np.eye(c, dtype=np.float32)[labels]
    history = chains != own[:, None]  # positions showing another block
    seq[history] = onehot[chains[history]]
    return seq
