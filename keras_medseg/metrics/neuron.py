"""Vaa3D neuron distance between two SWC reconstructions (ESA, DSA, PDS, max distance).

Definition (Vaa3D ``neuron_distance``, ``neuron_sim_scores.cpp``)
-----------------------------------------------------------------
Every edge (child ``c`` -> parent ``p``) of a tree is sampled at
``N = floor(L / step + 1.5)`` points (``L`` the edge length, ``step`` = ``resample_step``,
1 in Vaa3D): ``c + j / (N - 1) * (p - c)`` for ``j = 0 .. N - 1`` (both ends included, so
consecutive points are about ``step`` apart); an edge shorter than ``step / 2`` gives its
child point only. For each sample point of tree A the distance to the nearest LINE SEGMENT
(edge) of tree B is taken; these are the directed distances ``d_AB`` (and ``d_BA`` the other
way round). Then, with ``T`` = ``threshold`` (2.0 in Vaa3D):

================  ==============================================================================
``esa_ab``        mean of ``d_AB`` (entire-structure average, A to B)
``esa``           ``(esa_ab + esa_ba) / 2``
``pds_ab``        fraction of ``d_AB >= T`` (percent of different structure, A to B)
``pds``           ``(pds_ab + pds_ba) / 2``
``dsa_ab``        mean of the ``d_AB >= T`` (NaN when none is)
``dsa``           Vaa3D's combination: ``(dsa_ab + dsa_ba) / 2`` when both directions have
                  points at ``>= T``; the one defined value when only one has; 0 when neither
``max_ab``        largest of ``d_AB``
``dist_max``      Vaa3D's: the SMALLER of the two directed maxima, ``min(max_ab, max_ba)``
                  (Vaa3D takes the smaller so that different start/end points of two tracings
                  do not dominate it); ``max(max_ab, max_ba)`` is the Hausdorff-like value
================  ==============================================================================

Points exactly at ``T`` count as different (``>=``, as Vaa3D).

Differences from Vaa3D (documented choices)
-------------------------------------------
* Distances use float64 throughout (Vaa3D computes the projection parameter in float32).
* A node without parent and without children (a single-node fragment) is a zero-length edge:
  it is sampled once and is a point target. Vaa3D skips it, and refuses trees with fewer
  than two nodes; here a single-node tree gives point-to-point distances.
* Empty trees: both empty -> every value NaN; exactly one empty -> ``esa``, ``dsa`` and
  ``dist_max`` are ``inf`` and ``pds`` is 1 (the project's empty-mask rule), the directed
  values from the empty tree are NaN and those towards it ``inf`` (``pds`` 1).

Speed
-----
The nearest segment is found exactly with a k-d tree over points sampled along the target
segments (spacing ``h``, every point of a segment within ``g <= h / 2`` of one of its
samples): the segments owning the ``k`` nearest samples are measured exactly; any other
segment is at least ``d_k - g`` away (``d_k`` the ``k``-th sample distance), so a point
whose best exact distance is ``<= d_k - g`` is final, and the rest are re-queried with a
larger ``k`` and finally with a ball of radius ``best + g``. The result equals the brute
force minimum over all segments (``benchmarks/neuron_distance.py``).

Example
-------
>>> from keras_medseg.io.swc import SwcTree
>>> a = SwcTree.from_arrays([1, 2], [3, 3], [[0, 0, 0], [10, 0, 0]], [1, 1], [-1, 1])
>>> b = SwcTree.from_arrays([1, 2], [3, 3], [[0, 3, 0], [10, 3, 0]], [1, 1], [-1, 1])
>>> r = neuron_distance(a, b)
>>> float(r.esa), float(r.dsa), float(r.pds), float(r.dist_max)
(3.0, 3.0, 1.0, 3.0)

References
----------
Peng H., Ruan Z., Long F., Simpson J.H., Myers E.W. "V3D enables real-time 3D visualization
and quantitative analysis of large-scale biological image data sets", Nature Biotechnology
28, 348-353 (2010) (supplementary: the neuron distance scores).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from keras_medseg._checks import check_positive

__all__ = ["NeuronDistance", "neuron_distance", "directed_neuron_distances",
           "sample_neuron_points", "distance_to_neuron"]

_FIRST_K = (4, 16, 64)     # k-nearest passes before the ball query
_BALL_PAIRS = 2_000_000     # bound on (point, sample) pairs held at once in the ball pass


class NeuronDistance(NamedTuple):
    """Vaa3D neuron distance scores (see the module docstring for the definitions).

    ``*_ab`` are directed from ``tree_a`` to ``tree_b`` (A's sample points measured against
    B's segments), ``*_ba`` the other way; ``n_ab`` / ``n_ba`` are the numbers of sample
    points. Distances are in the trees' units.
    """

    esa: float
    dsa: float
    pds: float
    dist_max: float
    esa_ab: float
    esa_ba: float
    dsa_ab: float
    dsa_ba: float
    pds_ab: float
    pds_ba: float
    max_ab: float
    max_ba: float
    n_ab: int
    n_ba: int


def _check_tree(tree, name):
    from keras_medseg.io.swc import SwcTree

    if not isinstance(tree, SwcTree):
        raise ValueError(f"{name} must be an SwcTree (keras_medseg.io.swc); "
                         f"got {type(tree).__name__}")
    return tree


def _edges(tree):
    """Segments of ``tree`` as (start, end) arrays: every child->parent edge (start = child)
    then every isolated node (no parent, no child) as a zero-length segment."""
    pidx = tree.parent_index
    child = np.flatnonzero(pidx >= 0)
    has_child = np.zeros(len(tree), dtype=bool)
    has_child[pidx[child]] = True
    lone = np.flatnonzero((pidx < 0) & ~has_child)
    start = np.concatenate([tree.xyz[child], tree.xyz[lone]])
    end = np.concatenate([tree.xyz[pidx[child]], tree.xyz[lone]])
    return start, end


def sample_neuron_points(tree, *, step=1.0):
    """Vaa3D's sample points of ``tree``: ``floor(L / step + 1.5)`` points per edge.

    Parameters
    ----------
    tree : SwcTree
    step : float
        Target spacing of the points along each edge (file units), > 0.

    Returns
    -------
    ndarray of float64, shape (P, 3)
        Points ``(x, y, z)``, edge by edge in node order (child end first, parent end last);
        isolated nodes contribute their own position once.
    """
    _check_tree(tree, "tree")
    check_positive(step, name="step")
    start, end = _edges(tree)
    return _sample_segments(start, end, float(step))


def _sample_segments(start, end, step):
    if start.shape[0] == 0:
        return np.zeros((0, 3))
    length = np.linalg.norm(end - start, axis=1)
    count = np.floor(length / step + 1.5).astype(np.int64)
    seg = np.repeat(np.arange(start.shape[0]), count)
    first = np.repeat(np.cumsum(count) - count, count)
    j = np.arange(seg.size) - first
    denom = np.maximum(count - 1, 1)[seg]
    frac = np.where(count[seg] > 1, j / denom, 0.0)
    return start[seg] + frac[:, None] * (end[seg] - start[seg])


class _SegmentIndex:
    """k-d tree over points sampled along segments, for exact nearest-segment queries."""

    def __init__(self, start, end):
        delta = end - start
        delta2 = np.einsum("ij,ij->i", delta, delta)
        # coordinate planes (3, K) make the gathers below contiguous
        self.start = np.ascontiguousarray(start.T)
        self.delta = np.ascontiguousarray(delta.T)
        self.inv_delta2 = np.divide(1.0, delta2, out=np.zeros_like(delta2), where=delta2 > 0)
        length = np.sqrt(delta2)
        positive = length[length > 0]
        h = 1.0
        if positive.size:
            # median edge length, but never so small that there are over 5 samples per segment
            # on average
            h = max(float(np.median(positive)), float(length.sum()) / (4.0 * len(length)))
        n = np.maximum(np.ceil(length / h), 1).astype(np.int64)  # samples per segment
        # samples at the centres of n equal parts: every point of a segment lies within
        # length / (2 n) of one of its samples
        self.gap = float(np.max(length / (2.0 * n)))
        seg = np.repeat(np.arange(len(length)), n)
        first = np.repeat(np.cumsum(n) - n, n)
        t = (np.arange(seg.size) - first + 0.5) / n[seg]
        samples = start[seg] + t[:, None] * delta[seg]
        self.sample_segment = seg
        self.kdtree = cKDTree(samples)
        self.n_samples = samples.shape[0]
        scale = float(np.max(np.abs(samples))) if samples.size else 1.0
        self.slack = 1e-9 * max(scale, 1.0)  # rounding margin on the pruning bounds

    def squared(self, points, seg):
        """Squared exact distances from points (P, 3) to the segments ``seg`` (P, k)."""
        dx, dy, dz = self.delta[0][seg], self.delta[1][seg], self.delta[2][seg]
        wx = points[:, 0:1] - self.start[0][seg]
        wy = points[:, 1:2] - self.start[1][seg]
        wz = points[:, 2:3] - self.start[2][seg]
        t = (wx * dx + wy * dy + wz * dz) * self.inv_delta2[seg]
        np.clip(t, 0.0, 1.0, out=t)
        wx -= t * dx
        wy -= t * dy
        wz -= t * dz
        return wx * wx + wy * wy + wz * wz

    def query(self, points):
        out = np.empty(points.shape[0])
        todo = np.arange(points.shape[0])
        upper = None
        for k in _FIRST_K:
            if not todo.size:
                return out
            k = min(k, self.n_samples)
            dist_k, idx = self.kdtree.query(points[todo], k=[k] if k == 1 else k)
            if k == 1:
                dist_k, idx = dist_k.reshape(-1, 1), idx.reshape(-1, 1)
            best = np.sqrt(self.squared(points[todo], self.sample_segment[idx]).min(axis=1))
            if k == self.n_samples:  # every segment was a candidate
                out[todo] = best
                return out
            final = best <= dist_k[:, -1] - self.gap - self.slack
            out[todo[final]] = best[final]
            upper = best[~final]
            todo = todo[~final]
        if todo.size:
            self._ball(points, todo, upper + self.gap + self.slack, out)
        return out

    def _ball(self, points, todo, radius, out):
        counts = self.kdtree.query_ball_point(points[todo], radius, return_length=True)
        bounds = np.cumsum(counts)
        lo = 0
        while lo < todo.size:
            base = bounds[lo - 1] if lo else 0
            hi = max(int(np.searchsorted(bounds, base + _BALL_PAIRS, side="right")), lo + 1)
            rows = todo[lo:hi]
            lists = self.kdtree.query_ball_point(points[rows], radius[lo:hi])
            lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64,
                               count=int(lengths.sum()))
            owner = np.repeat(np.arange(rows.size), lengths)
            seg = self.sample_segment[flat]
            exact = self.squared(points[rows][owner], seg[:, None])[:, 0]
            best = np.full(rows.size, np.inf)
            np.minimum.at(best, owner, exact)
            out[rows] = np.sqrt(best)
            lo = hi


def distance_to_neuron(points, tree):
    """Exact distance from each point to the nearest segment (edge) of ``tree``.

    Parameters
    ----------
    points : array_like of float, shape (P, 3)
        ``(x, y, z)`` in the tree's units.
    tree : SwcTree
        Isolated nodes count as zero-length segments (point targets).

    Returns
    -------
    ndarray of float64, shape (P,)
        ``inf`` for every point when ``tree`` has no node.
    """
    _check_tree(tree, "tree")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (P, 3); got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points must be finite")
    start, end = _edges(tree)
    return _distances(pts, start, end)


def _distances(points, start, end):
    if points.shape[0] == 0:
        return np.zeros(0)
    if start.shape[0] == 0:
        return np.full(points.shape[0], np.inf)
    return _SegmentIndex(start, end).query(points)


def directed_neuron_distances(tree_a, tree_b, *, resample_step=1.0):
    """Distances from ``tree_a``'s Vaa3D sample points to the nearest segment of ``tree_b``.

    Parameters
    ----------
    tree_a, tree_b : SwcTree
    resample_step : float
        Spacing of the sample points along ``tree_a``'s edges (see
        :func:`sample_neuron_points`), > 0.

    Returns
    -------
    ndarray of float64, shape (P,)
        One distance per sample point of ``tree_a`` (empty when ``tree_a`` is; ``inf`` when
        ``tree_b`` is empty).
    """
    _check_tree(tree_a, "tree_a")
    _check_tree(tree_b, "tree_b")
    check_positive(resample_step, name="resample_step")
    pts = _sample_segments(*_edges(tree_a), float(resample_step))
    return _distances(pts, *_edges(tree_b))


def _directed_scores(d, threshold):
    if d.size == 0:
        return np.nan, np.nan, np.nan, np.nan, 0
    far = d >= threshold
    dsa = float(d[far].mean()) if far.any() else np.nan
    return float(d.mean()), dsa, float(far.mean()), float(d.max()), int(d.size)


def neuron_distance(tree_a, tree_b, *, threshold=2.0, resample_step=1.0):
    """Vaa3D neuron distance (ESA, DSA, PDS, max distance) between two reconstructions.

    Parameters
    ----------
    tree_a, tree_b : SwcTree
        The two reconstructions, in the same coordinates (e.g. gold standard, automatic).
    threshold : float
        Distance at or above which a sample point counts as a different structure (file
        units, >= 0; Vaa3D's default 2.0).
    resample_step : float
        Spacing of the sample points along each edge, > 0 (Vaa3D: 1.0).

    Returns
    -------
    NeuronDistance
        Symmetric scores ``esa``, ``dsa``, ``pds``, ``dist_max`` and the directed parts; see
        the module docstring for the exact definitions, the empty-tree rule and the
        differences from Vaa3D.

    Raises
    ------
    ValueError
        If a tree is not an :class:`~keras_medseg.io.swc.SwcTree`, ``threshold`` is
        negative or not finite, or ``resample_step`` is not positive.
    """
    _check_tree(tree_a, "tree_a")
    _check_tree(tree_b, "tree_b")
    check_positive(threshold, name="threshold", allow_zero=True)
    check_positive(resample_step, name="resample_step")
    step = float(resample_step)
    seg_a = _edges(tree_a)
    seg_b = _edges(tree_b)
    d_ab = _distances(_sample_segments(*seg_a, step), *seg_b)
    d_ba = _distances(_sample_segments(*seg_b, step), *seg_a)
    esa_ab, dsa_ab, pds_ab, max_ab, n_ab = _directed_scores(d_ab, threshold)
    esa_ba, dsa_ba, pds_ba, max_ba, n_ba = _directed_scores(d_ba, threshold)
    if n_ab == 0 and n_ba == 0:
        esa = dsa = pds = dist_max = np.nan
    elif n_ab == 0 or n_ba == 0:
        esa = dsa = dist_max = np.inf
        pds = 1.0
    else:
        esa = (esa_ab + esa_ba) / 2.0
        pds = (pds_ab + pds_ba) / 2.0
        defined = [v for v in (dsa_ab, dsa_ba) if not np.isnan(v)]
        dsa = float(np.mean(defined)) if defined else 0.0
        dist_max = min(max_ab, max_ba)
    return NeuronDistance(esa=esa, dsa=dsa, pds=pds, dist_max=dist_max, esa_ab=esa_ab,
                          esa_ba=esa_ba, dsa_ab=dsa_ab, dsa_ba=dsa_ba, pds_ab=pds_ab,
                          pds_ba=pds_ba, max_ab=max_ab, max_ba=max_ba, n_ab=n_ab, n_ba=n_ba)
