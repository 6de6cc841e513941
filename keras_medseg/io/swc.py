"""SWC neuron reconstructions: an immutable array-backed tree, reader, writer and edits.

An SWC file holds one node per line, seven whitespace-separated columns::

    id  type  x  y  z  radius  parent

``parent`` is ``-1`` for a root (any negative parent is read as ``-1``). Lines starting with
``#`` are comments; blank lines are skipped. Nodes may appear in any order, a file may hold
several trees (several roots) and needs no soma.

:class:`SwcTree` keeps the columns as read-only numpy arrays; every edit (:meth:`SwcTree.sort`,
:meth:`SwcTree.resample`, :meth:`SwcTree.crop`, :meth:`SwcTree.prune_spurs`,
:meth:`SwcTree.remove_small_fragments`, ...) returns a new tree. Traversals are iterative
(no recursion limit), so trees of any depth work.

Coordinates are ``(x, y, z)`` in the file's units (voxels for Vaa3D tracings, nm for the
hemibrain skeletons); image arrays indexed ``(z, y, x)`` see a node at
``array[round(z), round(y), round(x)]``.

Example
-------
>>> import numpy as np
>>> tree = SwcTree.from_arrays([1, 2, 3], [1, 3, 3],
...                            [[0, 0, 0], [1, 0, 0], [3, 0, 0]], [1, 1, 1], [-1, 1, 2])
>>> tree.path_length()
3.0
>>> len(tree.resample(0.5))
7
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import os
from pathlib import Path

import numpy as np

from keras_medseg._checks import check_positive
from keras_medseg.utils import atomic_write

__all__ = ["SwcError", "SwcTree", "read_swc", "write_swc", "near_face"]


class SwcError(ValueError):
    """A malformed SWC file or tree; the message names the file (when there is one),
    the line or node, and what is wrong."""


def _where(source):
    return f"{source}: " if source else ""


@dataclasses.dataclass(frozen=True, eq=False)
class SwcTree:
    """An SWC forest held as parallel read-only arrays (one entry per node).

    Attributes
    ----------
    ids : ndarray of int64, shape (N,)
        Node ids, unique (any integers; not necessarily 1..N or sorted).
    types : ndarray of int64, shape (N,)
        SWC structure type (0 undefined, 1 soma, 2 axon, 3 dendrite, ...).
    xyz : ndarray of float64, shape (N, 3)
        Node positions, columns ``x, y, z``.
    radius : ndarray of float64, shape (N,)
        Node radii, same units as ``xyz``.
    parents : ndarray of int64, shape (N,)
        Parent node id, ``-1`` for roots.
    comments : tuple of str
        Header comment lines (without the leading ``#``) read from the file; written back by
        :func:`write_swc` unless another header is given.

    Build trees with :meth:`from_arrays` (which converts dtypes and validates); the plain
    constructor only freezes the arrays. Two trees compare equal (``==``) when all five
    arrays are identical element by element (comments are ignored).
    """

    ids: np.ndarray
    types: np.ndarray
    xyz: np.ndarray
    radius: np.ndarray
    parents: np.ndarray
    comments: tuple = ()

    def __post_init__(self):
        for name in ("ids", "types", "xyz", "radius", "parents"):
            arr = getattr(self, name)
            if isinstance(arr, np.ndarray) and arr.flags.writeable:
                arr = arr.copy()
                arr.flags.writeable = False
                object.__setattr__(self, name, arr)
        object.__setattr__(self, "comments", tuple(self.comments))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, ids, types, xyz, radius, parents, *, validate=True, comments=(),
                    source=None):
        """Build a tree from column arrays (copied; the inputs are not modified).

        Parameters
        ----------
        ids, types, parents : array_like of int, shape (N,)
            Node ids, SWC types and parent ids (negative parent = root, stored as -1).
            Integral floats (``3.0``) are accepted.
        xyz : array_like of float, shape (N, 3)
            Positions, columns ``x, y, z``.
        radius : array_like of float, shape (N,)
        validate : bool
            When True (default) run :meth:`validate`: unique ids, every parent present, no
            cycles, finite coordinates and radii.
        comments : sequence of str
            Header comment lines to keep with the tree.
        source : str or path, optional
            Name used in error messages (the file the arrays came from).

        Raises
        ------
        SwcError
            On mismatched lengths, non-integral ids/types/parents, or (with ``validate``) an
            invalid tree.
        """
        where = _where(source)
        xyz = np.array(xyz, dtype=np.float64, copy=True)
        if xyz.ndim == 1 and xyz.size == 0:
            xyz = xyz.reshape(0, 3)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise SwcError(f"{where}xyz must have shape (N, 3); got {xyz.shape}")
        n = xyz.shape[0]
        cols = {}
        for name, values in (("ids", ids), ("types", types), ("parents", parents)):
            arr = np.asarray(values)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise SwcError(f"{where}{name} must have shape ({n},) like xyz; got {arr.shape}")
            if arr.dtype.kind == "f":
                if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                    bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
                    raise SwcError(f"{where}{name} must be integers; node at row {bad} has "
                                   f"{name[:-1]} {arr[bad]!r}")
            elif arr.dtype.kind not in "iub" and n:
                raise SwcError(f"{where}{name} must be integers; got dtype {arr.dtype}")
            cols[name] = arr.astype(np.int64)
        radius = np.array(radius, dtype=np.float64, copy=True).reshape(-1) if n else \
            np.zeros(0, np.float64)
        if radius.shape != (n,):
            raise SwcError(f"{where}radius must have shape ({n},) like xyz; got {radius.shape}")
        par = cols["parents"].copy()
        par[par < 0] = -1
        tree = cls(cols["ids"], cols["types"], xyz, radius, par, tuple(comments))
        if validate:
            tree.validate(source=source)
        return tree

    def __len__(self):
        return int(self.ids.shape[0])

    def __eq__(self, other):
        if not isinstance(other, SwcTree):
            return NotImplemented
        return (len(self) == len(other) and np.array_equal(self.ids, other.ids)
                and np.array_equal(self.types, other.types)
                and np.array_equal(self.xyz, other.xyz)
                and np.array_equal(self.radius, other.radius)
                and np.array_equal(self.parents, other.parents))

    __hash__ = None

    def __repr__(self):
        trees = self.num_trees if self._structure_ok() else "?"
        return f"SwcTree(nodes={len(self)}, trees={trees}, comments={len(self.comments)})"

    def _structure_ok(self):
        try:
            self.parent_index  # noqa: B018
        except SwcError:
            return False
        return True

    def _replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def validate(self, *, source=None):
        """Check the tree; return it unchanged when valid.

        Checks: ids unique; every non-negative parent id is a node id; no node is its own
        ancestor (cycles, including ``parent == id``); coordinates and radii finite.

        Raises
        ------
        SwcError
            Naming ``source`` (when given) and the offending node id.
        """
        where = _where(source)
        if not (np.all(np.isfinite(self.xyz)) and np.all(np.isfinite(self.radius))):
            bad = np.flatnonzero(~np.isfinite(self.xyz).all(axis=1) | ~np.isfinite(self.radius))
            raise SwcError(f"{where}node {int(self.ids[bad[0]])} has a non-finite coordinate "
                           f"or radius")
        self._bfs_order(source)  # checks ids and parents first, then cycles
        return self

    def _compute_parent_index(self, source=None):
        where = _where(source)
        ids = self.ids
        sorter = np.argsort(ids, kind="stable")
        sorted_ids = ids[sorter]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if dup.size:
            did = int(sorted_ids[dup[0]])
            rows = np.flatnonzero(ids == did)
            raise SwcError(f"{where}duplicate node id {did} (rows {rows.tolist()[:5]}); "
                           f"node ids must be unique")
        has_parent = self.parents >= 0
        pos = np.searchsorted(sorted_ids, self.parents)
        pos = np.minimum(pos, max(len(ids) - 1, 0))
        found = np.zeros(len(ids), dtype=bool)
        if len(ids):
            found = sorted_ids[pos] == self.parents
        missing = has_parent & ~found
        if np.any(missing):
            k = int(np.flatnonzero(missing)[0])
            raise SwcError(f"{where}node {int(ids[k])} has parent {int(self.parents[k])}, "
                           f"which is not a node id ({int(missing.sum())} node(s) with a "
                           f"missing parent)")
        pidx = np.where(has_parent, sorter[pos] if len(ids) else pos, -1).astype(np.int64)
        return pidx

    def _bfs_order(self, source=None):
        """Node indices, parents before children (breadth first); raises on cycles."""
        pidx = self.parent_index if source is None else self._compute_parent_index(source)
        n = len(self)
        ptr, kids = _csr_children(pidx, n)
        order = np.empty(n, dtype=np.int64)
        frontier = np.flatnonzero(pidx < 0)
        filled = 0
        while frontier.size:
            order[filled:filled + frontier.size] = frontier
            filled += frontier.size
            counts = ptr[frontier + 1] - ptr[frontier]
            if not counts.sum():
                break
            starts = np.repeat(ptr[frontier], counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            frontier = kids[starts + offsets]
        if filled < n:
            seen = np.zeros(n, dtype=bool)
            seen[order[:filled]] = True
            start = int(np.flatnonzero(~seen)[0])
            # Follow parents until a node repeats: that node lies on the cycle.
            visited = set()
            node = start
            while node not in visited:
                visited.add(node)
                node = int(pidx[node])
            cycle = [node]
            nxt = int(pidx[node])
            while nxt != node and len(cycle) < 10:
                cycle.append(nxt)
                nxt = int(pidx[nxt])
            ids = [int(self.ids[i]) for i in cycle]
            raise SwcError(f"{_where(source)}cycle in parent links through node {ids[0]} "
                           f"(path {' -> '.join(map(str, ids))}"
                           f"{' ...' if len(cycle) >= 10 else ''}); "
                           f"{n - filled} node(s) are not connected to a root")
        return order

    # ------------------------------------------------------------------ structure
    @functools.cached_property
    def parent_index(self):
        """Row index of each node's parent, ``-1`` for roots; int64 (N,). Read-only."""
        pidx = self._compute_parent_index()
        pidx.flags.writeable = False
        return pidx

    @functools.cached_property
    def _children_csr(self):
        return _csr_children(self.parent_index, len(self))

    @functools.cached_property
    def topological_order(self):
        """Row indices ordered parents before children (breadth first from the roots)."""
        order = self._bfs_order()
        order.flags.writeable = False
        return order

    @property
    def num_children(self):
        """Number of children of each node; int64 (N,)."""
        ptr, _ = self._children_csr
        return np.diff(ptr)

    def children(self, node_id):
        """Ids of the children of node ``node_id`` (in file order); int64 array."""
        i = self.index_of(node_id)
        ptr, kids = self._children_csr
        return self.ids[kids[ptr[i]:ptr[i + 1]]]

    def index_of(self, node_id):
        """Row index of node ``node_id``; raises ``KeyError`` if absent."""
        hit = np.flatnonzero(self.ids == int(node_id))
        if not hit.size:
            raise KeyError(f"no node with id {node_id}")
        return int(hit[0])

    @property
    def roots(self):
        """Ids of the root nodes (parent -1), in file order."""
        return self.ids[self.parents < 0]

    @property
    def num_trees(self):
        """Number of connected trees (roots)."""
        return int(np.count_nonzero(self.parents < 0))

    def branch_points(self):
        """Ids of nodes with two or more children."""
        return self.ids[self.num_children >= 2]

    def tips(self):
        """Ids of nodes without children (a single-node tree counts as a tip)."""
        return self.ids[self.num_children == 0]

    def segments(self):
        """Every parent-child edge as a pair of points.

        Returns
        -------
        ndarray of float64, shape (E, 2, 3)
            ``[:, 0]`` the child's ``xyz``, ``[:, 1]`` the parent's; E = N - num_trees.
        """
        child = np.flatnonzero(self.parent_index >= 0)
        return np.stack([self.xyz[child], self.xyz[self.parent_index[child]]], axis=1)

    def edge_lengths(self):
        """Euclidean length of the edge from each node to its parent (0 for roots); (N,)."""
        pidx = self.parent_index
        out = np.zeros(len(self))
        child = pidx >= 0
        out[child] = np.linalg.norm(self.xyz[child] - self.xyz[pidx[child]], axis=1)
        return out

    def path_length(self):
        """Total cable length: the sum of all edge lengths (file units)."""
        return float(self.edge_lengths().sum())

    def tree_labels(self):
        """For each node, the row index of the root of its tree; int64 (N,)."""
        pidx = self.parent_index
        label = np.arange(len(self), dtype=np.int64)
        for i in self.topological_order:
            if pidx[i] >= 0:
                label[i] = label[pidx[i]]
        return label

    def to_array(self):
        """The tree as an (N, 7) float64 array in SWC column order."""
        return np.column_stack([self.ids, self.types, self.xyz, self.radius, self.parents]
                               ).astype(np.float64)

    # ------------------------------------------------------------------ edits
    def subset(self, keep):
        """Keep the nodes selected by the boolean mask ``keep`` (N,), in their order.

        A kept node whose parent is dropped becomes a root, so every fragment is re-rooted
        at its top-most kept node. Ids are unchanged.
        """
        keep = np.asarray(keep, dtype=bool).reshape(-1)
        if keep.shape != (len(self),):
            raise ValueError(f"keep must be a boolean mask of shape ({len(self)},); "
                             f"got {keep.shape}")
        pidx = self.parent_index
        parents = self.parents.copy()
        orphan = (pidx >= 0) & ~keep[np.maximum(pidx, 0)]
        parents[orphan] = -1
        return SwcTree(self.ids[keep], self.types[keep], self.xyz[keep], self.radius[keep],
                       parents[keep], self.comments)

    def sort(self):
        """Order parents before children and renumber ids ``1..N``.

        The order is stable: of all parent-before-child orders it is the one closest to the
        current order (the lexicographically smallest by current row), so an already sorted
        tree only gets renumbered.
        """
        pidx = self.parent_index
        self.topological_order  # noqa: B018  (raises SwcError on cycles)
        ptr, kids = self._children_csr
        heap = np.flatnonzero(pidx < 0).tolist()
        heapq.heapify(heap)
        order = []
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for c in kids[ptr[i]:ptr[i + 1]].tolist():
                heapq.heappush(heap, c)
        order = np.asarray(order, dtype=np.int64)
        return self._renumbered(order)

    def _renumbered(self, order):
        n = len(order)
        new_id = np.empty(len(self), dtype=np.int64)
        new_id[order] = np.arange(1, n + 1)
        pidx = self.parent_index[order]
        parents = np.where(pidx >= 0, new_id[np.maximum(pidx, 0)], -1)
        return SwcTree(np.arange(1, n + 1, dtype=np.int64), self.types[order],
                       self.xyz[order], self.radius[order], parents, self.comments)

    def translate(self, offset):
        """Shift every node by ``offset`` (x, y, z); returns a new tree."""
        offset = np.asarray(offset, dtype=np.float64).reshape(-1)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)):
            raise ValueError(f"offset must be three finite numbers (x, y, z); got {offset!r}")
        return self._replace(xyz=self.xyz + offset)

    def unbranched_paths(self):
        """Decompose the forest into unbranched paths.

        Each path is a list of row indices starting at a root or branch point and running
        child-wards to the next branch point or tip (both ends included). Single-node trees
        give one-element paths. Every edge belongs to exactly one path.
        """
        pidx = self.parent_index
        nchild = self.num_children
        ptr, kids = self._children_csr
        paths = []
        starts = [i for i in self.topological_order.tolist() if pidx[i] < 0 or nchild[i] >= 2]
        for s in starts:
            if nchild[s] == 0:
                paths.append([s])
                continue
            for c in kids[ptr[s]:ptr[s + 1]].tolist():
                path = [s, c]
                while nchild[c] == 1:
                    c = int(kids[ptr[c]])
                    path.append(c)
                paths.append(path)
        return paths

    def resample(self, step):
        """Re-place nodes every ``step`` units of arc length along each unbranched path.

        Roots, branch points and tips are kept with their type and radius; along each path
        (see :meth:`unbranched_paths`) new nodes sit at arc lengths ``step, 2*step, ...``
        from the path start, strictly before its end. A new node's radius is interpolated
        linearly along the edge it falls on and its type is that edge's child node's type.
        The result is sorted (parents before children) and numbered ``1..M``.

        Parameters
        ----------
        step : float
            Spacing between consecutive nodes (file units), > 0.
        """
        check_positive(step, name="step")
        step = float(step)
        pidx = self.parent_index
        n = len(self)
        critical = (pidx < 0) | (self.num_children != 1)
        crit_rows = np.flatnonzero(critical)
        new_index = np.full(n, -1, dtype=np.int64)
        xyz, radius, types, parents = [], [], [], []
        # Critical nodes keep their identity; order them topologically.
        count = 0
        for i in self.topological_order.tolist():
            if critical[i]:
                new_index[i] = count
                count += 1
        crit_sorted = crit_rows[np.argsort(new_index[crit_rows])]
        xyz.append(self.xyz[crit_sorted])
        radius.append(self.radius[crit_sorted])
        types.append(self.types[crit_sorted])
        crit_parent = np.full(len(crit_sorted), -1, dtype=np.int64)
        for path in self.unbranched_paths():
            if len(path) == 1:
                continue
            rows = np.asarray(path)
            pts = self.xyz[rows]
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            cum = np.concatenate([[0.0], np.cumsum(seg)])
            total = cum[-1]
            s = np.arange(1, int(np.floor(total / step)) + 1) * step
            s = s[s < total - 1e-9 * max(step, total)]
            end_new = new_index[rows[-1]]
            if s.size == 0:
                crit_parent[end_new] = new_index[rows[0]]
                continue
            edge = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
            frac = (s - cum[edge]) / np.where(seg[edge] > 0, seg[edge], 1.0)
            p = pts[edge] + frac[:, None] * (pts[edge + 1] - pts[edge])
            r = self.radius[rows[edge]] + frac * (self.radius[rows[edge + 1]]
                                                  - self.radius[rows[edge]])
            t = self.types[rows[edge + 1]]
            first = count
            k = s.size
            count += k
            xyz.append(p)
            radius.append(r)
            types.append(t)
            par = np.arange(first - 1, first + k - 1, dtype=np.int64)
            par[0] = new_index[rows[0]]
            parents.append(par)
            crit_parent[end_new] = first + k - 1
        all_parents = np.concatenate([crit_parent] + parents)
        out = SwcTree(np.arange(1, count + 1, dtype=np.int64),
                      np.concatenate(types).astype(np.int64), np.concatenate(xyz, axis=0),
                      np.concatenate(radius), np.where(all_parents >= 0, all_parents + 1, -1),
                      self.comments)
        return out.sort()

    def crop(self, box_min, box_max, *, shift=False):
        """Keep the nodes strictly inside the box ``box_min < xyz < box_max`` (all axes).

        Kept nodes whose parent lies outside become roots (fragments are re-rooted); ids
        and order are unchanged (call :meth:`sort` to renumber).

        Parameters
        ----------
        box_min, box_max : array_like of float, shape (3,)
            Box corners, ``(x, y, z)``; ``box_min < box_max``.
        shift : bool
            When True, subtract ``box_min`` from the kept coordinates.
        """
        lo = _as_xyz(box_min, "box_min")
        hi = _as_xyz(box_max, "box_max")
        if np.any(lo >= hi):
            raise ValueError(f"box_min must be below box_max on every axis; got "
                             f"box_min={lo.tolist()}, box_max={hi.tolist()}")
        inside = np.all((self.xyz > lo) & (self.xyz < hi), axis=1)
        out = self.subset(inside)
        return out.translate(-lo) if shift else out

    def prune_spurs(self, max_nodes):
        """Remove short terminal branches ("spurs").

        A spur is the chain of nodes from a tip up to, but excluding, the nearest branch
        point; it is removed when it holds at most ``max_nodes`` nodes. When every child
        branch of a branch point is a spur, the one with the most nodes (first in file order
        on ties) is kept so the main line is not shortened. Chains from a tip to a root
        without a branch point are whole fragments, left to
        :meth:`remove_small_fragments`. One pass; ids unchanged.

        Parameters
        ----------
        max_nodes : int
            Largest spur size removed (>= 1).
        """
        _check_count(max_nodes, "max_nodes")
        pidx = self.parent_index
        nchild = self.num_children
        spurs = {}  # branch point row -> list of (size, first_row, rows)
        for tip in np.flatnonzero(nchild == 0).tolist():
            rows = [tip]
            node = tip
            while pidx[node] >= 0 and nchild[pidx[node]] == 1:
                node = int(pidx[node])
                rows.append(node)
                if len(rows) > max_nodes:
                    break
            if len(rows) > max_nodes or pidx[node] < 0:
                continue
            spurs.setdefault(int(pidx[node]), []).append(rows)
        drop = np.zeros(len(self), dtype=bool)
        for bp, branches in spurs.items():
            if len(branches) == nchild[bp]:
                longest = max(range(len(branches)), key=lambda k: (len(branches[k]),
                                                                   -branches[k][-1]))
                branches = [b for k, b in enumerate(branches) if k != longest]
            for rows in branches:
                drop[rows] = True
        return self.subset(~drop)

    def remove_small_fragments(self, min_nodes, *, keep=None):
        """Remove trees (connected fragments) with fewer than ``min_nodes`` nodes.

        Parameters
        ----------
        min_nodes : int
            Fragments with fewer nodes are removed (``min_nodes=4`` removes those with
            <= 3 nodes).
        keep : callable, optional
            ``keep(fragment) -> bool`` called on each small fragment (an :class:`SwcTree`);
            True spares it. :func:`near_face` builds the neurotrace rule (keep fragments
            near a block face).
        """
        _check_count(min_nodes, "min_nodes")
        if keep is not None and not callable(keep):
            raise ValueError(f"keep must be callable or None; got {keep!r}")
        labels = self.tree_labels()
        uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        small = counts < min_nodes
        if keep is not None:
            for k in np.flatnonzero(small).tolist():
                if keep(self.subset(inverse == k)):
                    small[k] = False
        return self.subset(~small[inverse])


def near_face(box_min, box_max, *, fraction=0.1):
    """A ``keep`` rule for :meth:`SwcTree.remove_small_fragments`: True when any node of the
    fragment lies within ``fraction`` of the box size of one of the box's faces (per axis).

    Parameters
    ----------
    box_min, box_max : array_like of float, shape (3,)
        Box corners (x, y, z), in the fragment's coordinates.
    fraction : float
        Band width as a fraction of the box extent along each axis (0.1 = 10%).
    """
    lo = _as_xyz(box_min, "box_min")
    hi = _as_xyz(box_max, "box_max")
    check_positive(fraction, name="fraction")
    band = (hi - lo) * float(fraction)

    def rule(fragment):
        p = fragment.xyz
        return bool(np.any((p - lo <= band) | (hi - p <= band)))

    return rule


def _as_xyz(value, name):
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be three finite numbers (x, y, z); got {value!r}")
    return arr


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _csr_children(pidx, n):
    """Children of each row as CSR (ptr (n+1,), kids), children in row order."""
    child = np.flatnonzero(pidx >= 0)
    par = pidx[child]
    order = np.argsort(par, kind="stable")
    kids = child[order]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(par, minlength=n), out=ptr[1:])
    return ptr, kids


# ---------------------------------------------------------------------- file I/O
def read_swc(path, *, validate=True):
    """Read an SWC file.

    Parameters
    ----------
    path : str or path-like
    validate : bool
        Run :meth:`SwcTree.validate` (default True).

    Returns
    -------
    SwcTree
        Nodes in file order; header comments (lines starting with ``#`` before the first
        node, leading ``#`` and one space stripped) in ``comments``; later comments are ignored.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SwcError
        Naming the file and line for a line without exactly 7 columns or with a non-numeric
        value, and the file and node for duplicate ids, missing parents or cycles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SWC file not found")
    comments, rows = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                if not rows:
                    body = text[1:]
                    comments.append(body[1:] if body.startswith(" ") else body)
                continue
            parts = text.split()
            if len(parts) != 7:
                raise SwcError(f"{path}: line {lineno}: expected 7 columns "
                               f"(id type x y z radius parent); got {len(parts)}: {text[:80]!r}")
            try:
                values = [float(v) for v in parts]
            except ValueError:
                bad = next(v for v in parts if not _is_number(v))
                raise SwcError(f"{path}: line {lineno}: non-numeric value {bad!r}") from None
            for col, name in ((0, "id"), (1, "type"), (6, "parent")):
                v = values[col]
                if not np.isfinite(v) or v != int(v):
                    raise SwcError(f"{path}: line {lineno}: {name} must be an integer; "
                                   f"got {parts[col]!r}")
            for col in (2, 3, 4, 5):
                if not np.isfinite(values[col]):
                    raise SwcError(f"{path}: line {lineno}: non-finite value {parts[col]!r}")
            rows.append(values)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return SwcTree.from_arrays(table[:, 0], table[:, 1], table[:, 2:5], table[:, 5],
                               table[:, 6], validate=validate, comments=comments, source=path)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_swc(path, tree, *, header=None):
    """Write ``tree`` to ``path`` atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or path-like
    tree : SwcTree
    header : str or sequence of str, optional
        Comment lines written first, each prefixed with ``# ``; defaults to
        ``tree.comments``.

    Floats are written in Python's shortest round-trip form, so :func:`read_swc` gives back
    exactly the same arrays. Returns the path.
    """
    if not isinstance(tree, SwcTree):
        raise ValueError(f"tree must be an SwcTree; got {type(tree).__name__}")
    if header is None:
        lines = list(tree.comments)
    elif isinstance(header, str):
        lines = header.splitlines()
    else:
        lines = [str(h) for h in header]
    out = [f"# {h}".rstrip() + "\n" for h in lines]
    xyz = tree.xyz.tolist()
    for i, t, (x, y, z), r, p in zip(tree.ids.tolist(), tree.types.tolist(), xyz,
                                     tree.radius.tolist(), tree.parents.tolist()):
        out.append(f"{i} {t} {x!r} {y!r} {z!r} {r!r} {p}\n")
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.writelines(out)
    return Path(os.fspath(path))
