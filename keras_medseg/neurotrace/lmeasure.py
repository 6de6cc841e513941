"""L-Measure morphometrics of SWC trees (32 features) and the automatic-label features.

The original (3D-SSM) ran L-Measure on every automatic block and fed 32 of its outputs to a
fully connected network; which 32 is not recorded, so this module computes 32 standard
L-Measure functions that an SWC tree defines, each reduced to one number the way L-Measure
reports it (``total`` = L-Measure's Total_Sum, ``mean`` = its Average, ``max`` = its
Maximum).

Terms
-----
* soma node: SWC type 1. A *compartment* is a node that has a parent and is not soma; its
  length ``L`` is the distance to its parent, its diameter ``D = 2 * radius``.
* root: a node without parent (a fragmented reconstruction has several); roots and soma
  nodes are where stems start.
* children below count compartment children only. A *bifurcation* is a compartment with
  >= 2 children (a multifurcation counts once and uses its first two children in file
  order); a *tip* a compartment with none.
* a *branch* runs from an origin (a root, a soma node or a bifurcation) through
  single-child compartments to the next bifurcation or tip (its end). Its path length is the
  sum of its compartments' lengths; its start diameter is the origin's, or its first
  compartment's when the origin is soma.
* angles are in degrees; the *local* vectors of a bifurcation ``b`` go from ``b`` to its two
  daughter nodes, the *remote* ones from ``b`` to the ends of its two daughter branches; the
  local father vector goes from ``b``'s parent to ``b``, the remote one from the origin of
  ``b``'s branch to ``b``.

Features (in this order)
------------------------
=======================  ========================================================  ========
name                     per item                                                  reduced
=======================  ========================================================  ========
Soma_Surface             soma node: ``4 pi r^2`` (no soma parent) or ``2 pi r L``  total
                         (cylinder, soma parent); 0 without soma
N_stems                  compartments whose parent is a root or a soma node        total
N_bifs                   bifurcations                                              total
N_branch                 branches                                                  total
N_tips                   tips                                                      total
Width                    ``max x - min x`` over all nodes                          (range)
Height                   ``max y - min y``                                         (range)
Depth                    ``max z - min z``                                         (range)
Diameter                 compartment ``D``                                         mean
Length                   compartment ``L``                                         total
Surface                  compartment ``pi D L`` (cylinder side)                    total
Volume                   compartment ``pi (D/2)^2 L``                              total
EucDistance              compartment: straight distance to its tree's root         max
PathDistance             compartment: path length to its tree's root               max
Branch_Order             compartment: bifurcations between it and its root         max
Terminal_degree          compartment: tips in its subtree                          mean
Contraction              branch: end-to-end distance / path length                 mean
Fragmentation            branch: number of compartments                            total
Branch_pathlength        branch: path length                                       mean
Partition_asymmetry      bifurcation with ``n1, n2`` tips below its daughters:     mean
                         ``|n1 - n2| / (n1 + n2 - 2)``, 0 when ``n1 + n2 = 2``
Bif_ampl_local           angle between the two local daughter vectors              mean
Bif_ampl_remote          angle between the two remote daughter vectors             mean
Bif_tilt_local           smaller angle between the local father vector and a       mean
                         local daughter vector
Bif_tilt_remote          the same with remote vectors                              mean
Bif_torque_local         angle (0-90) between the plane of a bifurcation's local   mean
                         daughter vectors and that of the bifurcation its branch
                         starts at (bifurcations whose branch starts at one)
Bif_torque_remote        the same with remote vectors                              mean
Taper_1                  branch: (start D - end D) / path length (Burke)           mean
Taper_2                  branch: (start D - end D) / start D (Hillman)             mean
Daughter_Ratio           bifurcation: larger / smaller daughter ``D``              mean
Parent_Daughter_Ratio    each daughter of a bifurcation: daughter D / parent D     mean
Pk_classic               bifurcation: ``(D1^1.5 + D2^1.5) / Dp^1.5`` (Rall)        mean
Last_parent_diam         terminal branch starting at a bifurcation: that           mean
                         bifurcation's ``D``
=======================  ========================================================  ========

NaN rule: totals and counts are 0 over an empty set; a mean or a maximum over an empty set
is NaN (e.g. every bifurcation feature of a tree without bifurcations, Diameter of a
single-node tree, Width of an empty tree). Items whose value is undefined (an angle with a
zero-length vector, a ratio with a zero denominator, a contraction of a zero-length branch)
are left out of the mean.

Differences from L-Measure: Width/Height/Depth are the full coordinate ranges of the file's
axes (L-Measure trims 5% of outlying points); distances are measured from each tree's root
(L-Measure: from the soma); bifurcation features use the first two children of a
multifurcation.

Every per-node quantity is computed with numpy (pointer jumping along parent links, no
recursion, no per-node Python loop), so 5,000-node trees take milliseconds.

Example
-------
>>> from keras_medseg.io.swc import SwcTree
>>> y = SwcTree.from_arrays([1, 2, 3, 4], [3, 3, 3, 3],
...                         [[0, 0, 0], [0, 10, 0], [-3, 14, 0], [3, 14, 0]],
...                         [1, 1, 1, 1], [-1, 1, 2, 2])
>>> f = lmeasure_features(y)
>>> f["N_bifs"], f["N_tips"], f["Length"], round(f["Bif_ampl_local"], 2)
(1.0, 2.0, 20.0, 73.74)
"""
from __future__ import annotations

import numpy as np

from keras_medseg.metrics.neuron import neuron_distance

__all__ = ["LMEASURE_FEATURES", "DIFFERENCE_FEATURES", "lmeasure_features", "lmeasure_matrix",
           "difference_features", "difference_matrix"]

LMEASURE_FEATURES = (
    "Soma_Surface", "N_stems", "N_bifs", "N_branch", "N_tips", "Width", "Height", "Depth",
    "Diameter", "Length", "Surface", "Volume", "EucDistance", "PathDistance", "Branch_Order",
    "Terminal_degree", "Contraction", "Fragmentation", "Branch_pathlength",
    "Partition_asymmetry", "Bif_ampl_local", "Bif_ampl_remote", "Bif_tilt_local",
    "Bif_tilt_remote", "Bif_torque_local", "Bif_torque_remote", "Taper_1", "Taper_2",
    "Daughter_Ratio", "Parent_Daughter_Ratio", "Pk_classic", "Last_parent_diam",
)

DIFFERENCE_FEATURES = (
    "esa_gold_to_auto", "esa_auto_to_gold", "dsa", "pds_gold_to_auto", "pds_auto_to_gold",
    "n_branch_diff", "n_compartments_diff", "n_trees_diff",
)


def _check_tree(tree, name):
    from keras_medseg.io.swc import SwcTree

    if not isinstance(tree, SwcTree):
        raise ValueError(f"{name} must be an SwcTree (keras_medseg.io.swc); "
                         f"got {type(tree).__name__}")
    return tree


# ---------------------------------------------------------------------- vector helpers
def _fixpoint(up):
    """Follow ``up`` links to their fixed points by pointer jumping (log2(depth) steps)."""
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            return up
        up = nxt


def _path_sums(parent, weights):
    """``s[i]`` = sum of ``weights`` over ``i`` and all its ancestors (``parent`` -1 at roots)."""
    s = np.asarray(weights, dtype=np.float64).copy()
    anc = parent.copy()
    while True:
        has = np.flatnonzero(anc >= 0)
        if not has.size:
            return s
        up = anc[has]
        s[has] += s[up]
        anc[has] = anc[up]


def _angle(u, v):
    """Angles in degrees between rows of u and v; NaN where a vector has zero length."""
    nu = np.linalg.norm(u, axis=-1)
    nv = np.linalg.norm(v, axis=-1)
    ok = (nu > 0) & (nv > 0)
    cos = np.einsum("...k,...k->...", u, v) / np.where(ok, nu * nv, 1.0)
    return np.where(ok, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), np.nan)


def _plane_angle(n1, n2):
    """Angles in degrees (0-90) between planes with normals n1, n2; NaN if degenerate."""
    a = _angle(n1, n2)
    return np.minimum(a, 180.0 - a)


def _ratio(num, den):
    den = np.asarray(den, dtype=np.float64)
    return np.where(den != 0, np.asarray(num, dtype=np.float64) / np.where(den != 0, den, 1.0),
                    np.nan)


def _mean(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else np.nan


def _max(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    return float(values.max()) if values.size else np.nan


# ---------------------------------------------------------------------- structure
class _Structure:
    """Compartments, bifurcations, tips and branches of a tree, as index arrays."""

    def __init__(self, tree):
        n = len(tree)
        rows = np.arange(n)
        pidx = np.asarray(tree.parent_index)
        self.n = n
        self.root = pidx < 0
        self.soma = np.asarray(tree.types) == 1
        self.comp = ~self.root & ~self.soma
        self.par = np.where(self.root, rows, pidx)  # roots point to themselves
        self.pidx = pidx
        comp_rows = np.flatnonzero(self.comp)
        self.nchild = np.bincount(pidx[comp_rows], minlength=n)
        self.bif = self.comp & (self.nchild >= 2)
        self.tip = self.comp & (self.nchild == 0)
        origin = self.root | self.soma | self.bif
        start = self.comp & origin[self.par]
        # first compartment of each compartment's branch: jump over single-child parents
        up = _fixpoint(np.where(self.comp & ~start, self.par, rows))
        self.starts = np.flatnonzero(start)
        nb = self.starts.size
        branch_id = np.full(n, -1)
        branch_id[self.starts] = np.arange(nb)
        self.branch = np.where(self.comp, branch_id[up], -1)
        ends = np.flatnonzero(self.comp & (self.nchild != 1))
        self.ends = np.empty(nb, dtype=np.int64)
        self.ends[self.branch[ends]] = ends
        self.origins = pidx[self.starts]
        # branch tree: the parent branch is the one ending at this branch's origin
        self.branch_parent = np.where(self.bif[self.origins], self.branch[self.origins], -1)
        terminal = self.tip[self.ends]
        self.terminal = terminal
        tips_below = np.zeros(nb)
        cur = np.flatnonzero(terminal)
        while cur.size:
            tips_below += np.bincount(cur, minlength=nb)
            cur = self.branch_parent[cur]
            cur = cur[cur >= 0]
        self.tips_below = tips_below
        # the first two compartment children of each bifurcation, in file order
        order = np.argsort(pidx[comp_rows], kind="stable")
        kids = comp_rows[order]
        ptr = np.concatenate([[0], np.cumsum(self.nchild)])
        self.bifs = np.flatnonzero(self.bif)
        self.d1 = kids[ptr[self.bifs]]
        self.d2 = kids[ptr[self.bifs] + 1]


def _num_branches(tree):
    return int(_Structure(tree).starts.size)


# ---------------------------------------------------------------------- features
def lmeasure_features(tree):
    """The 32 L-Measure features of one tree (table in the module docstring).

    Parameters
    ----------
    tree : SwcTree
        Any SWC forest: with or without soma, several roots, any size (also empty).

    Returns
    -------
    dict of str -> float
        Keys :data:`LMEASURE_FEATURES`, in that order; lengths in the tree's units, angles
        in degrees; NaN only where the feature is undefined (see the NaN rule above).

    Raises
    ------
    ValueError
        If ``tree`` is not an :class:`~keras_medseg.io.swc.SwcTree`.
    """
    _check_tree(tree, "tree")
    s = _Structure(tree)
    xyz = np.asarray(tree.xyz)
    radius = np.asarray(tree.radius)
    diam = 2.0 * radius
    comp = s.comp
    edge = np.linalg.norm(xyz - xyz[s.par], axis=1)  # 0 at roots
    f = {}

    soma_rows = np.flatnonzero(s.soma)
    in_soma = ~s.root[soma_rows] & s.soma[s.par[soma_rows]]
    r_soma = radius[soma_rows]
    f["Soma_Surface"] = float(np.sum(np.where(in_soma, 2 * np.pi * r_soma * edge[soma_rows],
                                              4 * np.pi * r_soma ** 2)))
    f["N_stems"] = float(np.count_nonzero(comp & (s.root | s.soma)[s.par]))
    f["N_bifs"] = float(s.bifs.size)
    f["N_branch"] = float(s.starts.size)
    f["N_tips"] = float(np.count_nonzero(s.tip))
    for name, axis in (("Width", 0), ("Height", 1), ("Depth", 2)):
        f[name] = float(np.ptp(xyz[:, axis])) if s.n else np.nan

    d_c, l_c = diam[comp], edge[comp]
    f["Diameter"] = _mean(d_c)
    f["Length"] = float(l_c.sum())
    f["Surface"] = float(np.sum(np.pi * d_c * l_c))
    f["Volume"] = float(np.sum(np.pi * (d_c / 2) ** 2 * l_c))
    root_of = _fixpoint(s.par)
    f["EucDistance"] = _max(np.linalg.norm(xyz - xyz[root_of], axis=1)[comp])
    f["PathDistance"] = _max(_path_sums(s.pidx, edge)[comp])
    branch_order = _path_sums(s.branch_parent, np.ones(s.starts.size)) - 1.0
    f["Branch_Order"] = _max(branch_order[s.branch[comp]])
    f["Terminal_degree"] = _mean(s.tips_below[s.branch[comp]])

    nb = s.starts.size
    br_len = np.bincount(s.branch[comp], weights=l_c, minlength=nb)
    br_count = np.bincount(s.branch[comp], minlength=nb)
    br_euc = np.linalg.norm(xyz[s.ends] - xyz[s.origins], axis=1)
    f["Contraction"] = _mean(_ratio(br_euc, br_len))
    f["Fragmentation"] = float(br_count.sum())
    f["Branch_pathlength"] = _mean(br_len)

    b, d1, d2 = s.bifs, s.d1, s.d2
    n1, n2 = s.tips_below[s.branch[d1]], s.tips_below[s.branch[d2]]
    f["Partition_asymmetry"] = _mean(np.where(n1 + n2 > 2, np.abs(n1 - n2) /
                                              np.maximum(n1 + n2 - 2, 1), 0.0))
    loc1, loc2 = xyz[d1] - xyz[b], xyz[d2] - xyz[b]
    rem1 = xyz[s.ends[s.branch[d1]]] - xyz[b]
    rem2 = xyz[s.ends[s.branch[d2]]] - xyz[b]
    father_loc = xyz[b] - xyz[s.par[b]]
    father_rem = xyz[b] - xyz[s.origins[s.branch[b]]]
    f["Bif_ampl_local"] = _mean(_angle(loc1, loc2))
    f["Bif_ampl_remote"] = _mean(_angle(rem1, rem2))
    f["Bif_tilt_local"] = _mean(np.fmin(_angle(father_loc, loc1), _angle(father_loc, loc2)))
    f["Bif_tilt_remote"] = _mean(np.fmin(_angle(father_rem, rem1), _angle(father_rem, rem2)))
    prev = s.origins[s.branch[b]]           # where the bifurcation's own branch starts
    has_prev = s.bif[prev]
    slot = np.full(s.n, -1)
    slot[b] = np.arange(b.size)
    prev_slot = slot[prev[has_prev]]
    for name, u, v in (("Bif_torque_local", loc1, loc2), ("Bif_torque_remote", rem1, rem2)):
        normal = np.cross(u, v)
        f[name] = _mean(_plane_angle(normal[has_prev], normal[prev_slot]))

    d_start = np.where(s.soma[s.origins], diam[s.starts], diam[s.origins])
    d_end = diam[s.ends]
    f["Taper_1"] = _mean(_ratio(d_start - d_end, br_len))
    f["Taper_2"] = _mean(_ratio(d_start - d_end, d_start))
    dd1, dd2, dp = diam[d1], diam[d2], diam[b]
    f["Daughter_Ratio"] = _mean(_ratio(np.maximum(dd1, dd2), np.minimum(dd1, dd2)))
    f["Parent_Daughter_Ratio"] = _mean(np.concatenate([_ratio(dd1, dp), _ratio(dd2, dp)]))
    f["Pk_classic"] = _mean(_ratio(dd1 ** 1.5 + dd2 ** 1.5, dp ** 1.5))
    last = s.terminal & s.bif[s.origins]
    f["Last_parent_diam"] = _mean(diam[s.origins[last]])
    return {name: f[name] for name in LMEASURE_FEATURES}


def lmeasure_matrix(trees):
    """Stack :func:`lmeasure_features` of several trees.

    Parameters
    ----------
    trees : iterable of SwcTree

    Returns
    -------
    ndarray of float64, shape (n, 32)
        Row ``i`` holds tree ``i``'s features, columns in :data:`LMEASURE_FEATURES` order.
    """
    rows = [list(lmeasure_features(t).values()) for t in trees]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(LMEASURE_FEATURES))


def difference_features(gold, auto, *, threshold=2.0, resample_step=1.0):
    """The 8 automatic-label features of one block (gold standard vs automatic tracing).

    Columns (:data:`DIFFERENCE_FEATURES`); the first five are the Vaa3D neuron-distance
    columns the original kept (its ``nd`` file columns 2, 3, 5, 6, 7), with neuron 1 = gold
    and neuron 2 = automatic:

    0. ``esa_gold_to_auto`` -- :attr:`NeuronDistance.esa_ab`
    1. ``esa_auto_to_gold`` -- ``esa_ba``
    2. ``dsa`` -- the two-direction different-structure average (Vaa3D's combination)
    3. ``pds_gold_to_auto`` -- ``pds_ab``
    4. ``pds_auto_to_gold`` -- ``pds_ba``
    5. ``n_branch_diff`` -- ``|N_branch(auto) - N_branch(gold)|``
    6. ``n_compartments_diff`` -- ``|len(auto) - len(gold)|`` (every SWC node is an
       L-Measure compartment)
    7. ``n_trees_diff`` -- ``|num_trees(auto) - num_trees(gold)|``

    Parameters
    ----------
    gold, auto : SwcTree
        The two tracings of one block, in the same coordinates.
    threshold, resample_step : float
        Passed to :func:`keras_medseg.metrics.neuron_distance`.

    Returns
    -------
    ndarray of float64, shape (8,)
        NaN / inf in the first five columns follow the neuron-distance empty-tree rule.
    """
    _check_tree(gold, "gold")
    _check_tree(auto, "auto")
    nd = neuron_distance(gold, auto, threshold=threshold, resample_step=resample_step)
    return np.array([nd.esa_ab, nd.esa_ba, nd.dsa, nd.pds_ab, nd.pds_ba,
                     abs(_num_branches(auto) - _num_branches(gold)),
                     abs(len(auto) - len(gold)),
                     abs(auto.num_trees - gold.num_trees)], dtype=np.float64)


def difference_matrix(golds, autos, *, threshold=2.0, resample_step=1.0):
    """:func:`difference_features` of paired sequences of trees; shape (n, 8).

    Raises
    ------
    ValueError
        If ``golds`` and ``autos`` have different lengths.
    """
    golds, autos = list(golds), list(autos)
    if len(golds) != len(autos):
        raise ValueError(f"golds and autos must pair up; got {len(golds)} and {len(autos)} "
                         f"trees")
    rows = [difference_features(g, a, threshold=threshold, resample_step=resample_step)
            for g, a in zip(golds, autos)]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(DIFFERENCE_FEATURES))
