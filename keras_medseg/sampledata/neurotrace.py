"""Synthetic neurons, microscope-like image volumes and simulated automatic tracings for
the ``neurotrace`` task.

For each neuron:

1. A tree grows from a soma near the centre of the volume: primary neurites leave in
   random directions, each segment walks in 1-voxel steps with persistent direction
   (reflected at the top and bottom z faces, stopped at the side faces) and either ends
   or bifurcates; radii shrink at every bifurcation. This is the gold standard.
2. The image (uint8, axes z, y, x) renders the tree as tubes: node intensities are splatted
   and blurred with an anisotropic Gaussian point-spread function (stronger in z). A
   smooth random quality field (0 poor .. 1 good, :func:`quality_field`; correlation length
   about one block, mostly clearly good or clearly poor) scales the signal and the photon
   budget (:func:`photon_budget`: about 5x more relative shot noise at quality 0 than at
   1); some segments are dim and some have gaps; a smooth background, Poisson shot noise
   and Gaussian read noise are added. So image quality varies across space and neurons,
   and a block's noise level shows it.
3. The "automatic" tracing (an APP2 stand-in) breaks down where the local quality falls
   below about 0.5 (:func:`failure_rate`, a steep logistic of the quality, like a tracer's
   foreground threshold): there whole segments are missed (the tracing falls apart into
   fragments), single nodes are lost, positions jitter by up to about 2 voxels (worse in
   z), spurious short branches grow off the tracing and isolated noise fragments appear.
   Where the quality is good the tracing follows the gold tree within a fraction of a
   voxel (gaps in the signal still break it). So the density of tracing errors is driven by
   the image quality, which the image block shows, and tracing difficulty is learnable.

Written under ``out_dir``: ``gold/<name>.swc``, ``auto/<name>.swc`` (SWC, x y z in voxels
of the image, node at ``image[round(z), round(y), round(x)]``) and ``images/<name>.tif``
(multi-page TIFF, z pages of y x), with ``name = neuron_<k:03d>``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.sampledata._common import (check_int, check_seed, check_shape, load_marker,
                                             save_marker, smooth_noise)
from keras_medseg.utils import atomic_path

PSF_SIGMA = (1.6, 0.9, 0.9)  # z, y, x voxels
GENERATOR_VERSION = 2
"""Version of the simulation, recorded with the data (2: quality-driven tracer breakdown)."""


@dataclasses.dataclass
class NeuronSkeleton:
    """A grown tree. ``xyz`` (N, 3) voxel positions (x, y, z); ``parent`` (N,) parent
    index (-1 for the soma); ``radius`` (N,) voxels; ``segment`` (N,) id of the unbranched
    segment a node belongs to (0 = soma); ``segment_parent`` (S,) parent segment id."""

    xyz: np.ndarray
    parent: np.ndarray
    radius: np.ndarray
    segment: np.ndarray
    segment_parent: np.ndarray


def grow_neuron(rng, shape, *, n_nodes=1500, margin=3):
    """Grow a random neuron tree inside a (z, y, x) volume of ``shape``.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of 3 int
        (z, y, x) voxels.
    n_nodes : int
        Target node count (growth stops there; a few hundred to a few thousand).
    margin : int
        Distance in voxels kept from the volume faces.

    Returns
    -------
    NeuronSkeleton
    """
    nz, ny, nx = shape
    upper = np.array([nx, ny, nz], float) - 1 - margin
    lower = np.full(3, float(margin))
    soma = np.array([nx, ny, nz]) * np.array([rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6),
                                               rng.uniform(0.4, 0.6)])
    xyz, parent, radius, segment = [soma], [-1], [rng.uniform(3.0, 4.5)], [0]
    seg_parent = [-1]
    tips = []

    def random_direction(scale_z=0.35):
        d = rng.normal(size=3)
        d[2] *= scale_z
        return d / np.linalg.norm(d)

    def add_primary():
        tips.append((0, random_direction(), rng.uniform(1.2, 1.8), 0))

    for _ in range(int(rng.integers(4, 8))):
        add_primary()
    while len(xyz) < n_nodes:
        if not tips:
            add_primary()
        node, direction, r, parent_seg = tips.pop(int(rng.integers(len(tips))))
        seg_id = len(seg_parent)
        seg_parent.append(parent_seg)
        length = int(rng.integers(12, 60))
        pos = xyz[node].copy()
        if node == 0:
            pos = pos + direction * radius[0]  # start on the soma surface
        prev = node
        for step in range(length):
            direction = direction + rng.normal(0, 0.18, 3)
            direction[2] *= 0.9
            direction /= np.linalg.norm(direction)
            nxt = pos + direction
            if nxt[2] < lower[2] or nxt[2] > upper[2]:  # reflect at the z faces
                direction[2] = -direction[2]
                nxt = pos + direction
            if np.any(nxt[:2] < lower[:2]) or np.any(nxt[:2] > upper[:2]):
                break
            pos = nxt
            xyz.append(pos)
            parent.append(prev)
            radius.append(max(0.5, r * (1 - 0.004 * step)))
            segment.append(seg_id)
            prev = len(xyz) - 1
            if len(xyz) >= n_nodes:
                break
        else:
            if rng.random() < 0.75 and r > 0.55:
                angle = rng.uniform(0.35, 0.9)
                for sign in (-1, 1):
                    ortho = np.cross(direction, random_direction(1.0))
                    ortho /= max(np.linalg.norm(ortho), 1e-9)
                    d2 = np.cos(angle) * direction + sign * np.sin(angle) * ortho
                    tips.append((prev, d2 / np.linalg.norm(d2), r * 0.82, seg_id))
    return NeuronSkeleton(xyz=np.asarray(xyz), parent=np.asarray(parent),
                          radius=np.asarray(radius), segment=np.asarray(segment),
                          segment_parent=np.asarray(seg_parent))


def tree_to_swc(skeleton, keep=None, xyz=None):
    """Convert a :class:`NeuronSkeleton` (or the nodes ``keep`` of it, with optional new
    positions ``xyz``) to an :class:`keras_medseg.io.swc.SwcTree` with ids 1..M; a node
    whose parent is not kept becomes a root."""
    from keras_medseg.io.swc import SwcTree

    n = len(skeleton.parent)
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    xyz = skeleton.xyz if xyz is None else np.asarray(xyz)
    new_id = np.full(n, -1)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1)
    par = skeleton.parent[keep]
    parents = np.where(par >= 0, new_id[np.maximum(par, 0)], -1)
    types = np.where(skeleton.parent[keep] < 0, 1, 3)
    return SwcTree.from_arrays(new_id[keep], types, xyz[keep], skeleton.radius[keep], parents)


@dataclasses.dataclass
class SimulatedNeuron:
    """One neuron in memory: ``gold`` and ``auto`` SwcTree, ``image`` uint8 (z, y, x),
    ``node_quality`` (N,) the quality field (0..1) at each gold node, ``quality`` the field
    (z, y, x) float32."""

    gold: object
    auto: object
    image: np.ndarray
    node_quality: np.ndarray
    quality: np.ndarray


QUALITY_SMOOTHING = 0.4
"""Correlation length of the quality field as a fraction of the smaller lateral side."""
QUALITY_GAIN = 4.0
"""Steepness of the quality field: ``sigmoid(QUALITY_GAIN * s + offset)``."""
FAILURE_QUALITY = 0.5
"""Quality at which the simulated tracer errs at half its full rate."""
FAILURE_WIDTH = 0.06
"""Width of the tracer's breakdown (logistic scale, quality units)."""


def quality_field(rng, shape, *, coarse=1):
    """Smooth random image-quality field in (0, 1) (0 poor, 1 good), float32 (z, y, x).

    ``sigmoid(QUALITY_GAIN * s + o)`` with ``s`` Gaussian-smoothed unit noise (correlation
    length :data:`QUALITY_SMOOTHING` of the smaller lateral side, about one block) and a
    per-neuron offset ``o ~ U(-1.5, 1.5)``: most regions are clearly good or clearly poor,
    as with uneven staining or depth, and neurons differ in their overall quality.
    """
    s = smooth_noise(rng, shape, min(shape[1:]) * QUALITY_SMOOTHING, coarse=coarse)
    return (1 / (1 + np.exp(-(QUALITY_GAIN * s + rng.uniform(-1.5, 1.5))))).astype(np.float32)


def failure_rate(quality):
    """How often the simulated tracer errs at a given quality, in (0, 1).

    ``sigmoid((FAILURE_QUALITY - q) / FAILURE_WIDTH)``: an automatic tracer works while the
    signal stands clear of the noise and breaks down quickly below that (APP2's
    foreground threshold), so its error density is a steep function of image quality.
    """
    q = np.asarray(quality, dtype=np.float64)
    return 1 / (1 + np.exp(-(FAILURE_QUALITY - q) / FAILURE_WIDTH))


def photon_budget(quality):
    """Expected photons per unit intensity at a given quality: ``10 + 290 q^2``.

    Shot noise relative to the signal scales as ``1 / sqrt(photons)``: about 5x more noise
    at quality 0 than at 1, so the block's noise level shows its quality.
    """
    return 10.0 + 290.0 * np.square(quality)


def simulate_neuron(rng, shape, *, n_nodes=1500):
    """Grow, render and trace one neuron (see the module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of 3 int
        (z, y, x) of the image volume.
    n_nodes : int
        Target size of the gold tree.

    Returns
    -------
    SimulatedNeuron
    """
    sk = grow_neuron(rng, shape, n_nodes=n_nodes)
    n = len(sk.parent)
    zyx = np.round(sk.xyz[:, ::-1]).astype(int)
    zyx = np.clip(zyx, 0, np.array(shape) - 1)
    coarse = max(2, min(shape) // 8)
    quality = quality_field(rng, shape, coarse=coarse)
    q = quality[zyx[:, 0], zyx[:, 1], zyx[:, 2]]

    n_seg = len(sk.segment_parent)
    seg_dim = np.where(rng.random(n_seg) < 0.25, rng.uniform(0.25, 0.5, n_seg), 1.0)
    seg_dim[sk.segment_parent <= 0] = 1.0  # the soma and primary neurites are bright
    amp = seg_dim[sk.segment] * (0.35 + 0.65 * q)
    gap = np.zeros(n, bool)
    for s in np.flatnonzero(rng.random(n_seg) < 0.2):
        idx = np.flatnonzero(sk.segment == s)
        if s and idx.size > 8:
            start = int(rng.integers(2, idx.size - 5))
            gap[idx[start:start + int(rng.integers(2, 5))]] = True
    amp[gap] *= 0.05

    # Render: splat nodes (a ball for the soma), blur with the PSF.
    signal = np.zeros(shape, np.float32)
    np.add.at(signal, (zyx[:, 0], zyx[:, 1], zyx[:, 2]), amp * np.clip(sk.radius, 0.6, 2) ** 2)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    sx, sy, sz = sk.xyz[0]
    signal[((xx - sx) ** 2 + (yy - sy) ** 2 + (zz - sz) ** 2) <= sk.radius[0] ** 2] = 1.0
    signal = ndi.gaussian_filter(signal, PSF_SIGMA) * (2 * np.pi * PSF_SIGMA[0] * PSF_SIGMA[1])
    background = 0.1 + 0.02 * smooth_noise(rng, shape, min(shape) / 3, coarse=coarse)
    photons = photon_budget(quality)
    expected = (np.clip(background + 0.75 * np.minimum(signal, 1.3), 0, None) * photons)
    image = rng.poisson(expected).astype(np.float32) / photons
    image += rng.normal(0, 0.02, shape).astype(np.float32)
    image = np.clip(image * 180, 0, 255).astype(np.uint8)

    # Simulated automatic tracing: errors switch on where the local quality falls below
    # the tracer's breakdown point (failure_rate, steep around quality 0.5).
    fail = failure_rate(q)
    seg_fail = np.zeros(n_seg)
    for s in range(1, n_seg):
        idx = sk.segment == s
        if idx.any():
            seg_fail[s] = fail[idx].mean()
    missed = rng.random(n_seg) < 0.7 * seg_fail  # missed segments (not their subtrees)
    missed[0] = False
    keep = ~missed[sk.segment]
    keep &= ~(gap & (rng.random(n) < 0.8))
    keep &= ~(rng.random(n) < 0.15 * fail)  # single nodes lost: fragmented tracing
    jitter = rng.normal(0, 1, (n, 3)) * (0.25 + 1.8 * fail)[:, None]
    jitter[:, 2] *= 1.5  # worse in z
    auto_xyz = sk.xyz + jitter

    # Spurious branches on noise where quality is low, and isolated noise fragments placed
    # with the density of failures (about 3 per 100 gold nodes where the tracer fails).
    extra_xyz, extra_parent, extra_radius = [], [], []
    kept_idx = np.flatnonzero(keep)
    base = len(sk.parent)
    spur_p = 0.06 * fail[kept_idx]
    starts = [(int(i), auto_xyz[i]) for i in kept_idx[rng.random(kept_idx.size) < spur_p]]
    weight = failure_rate(quality).ravel().astype(np.float64)
    n_fragments = int(rng.poisson(0.03 * n * float(weight.mean())))
    if n_fragments and weight.sum() > 0:
        cells = rng.choice(weight.size, size=n_fragments, p=weight / weight.sum())
        for z, y, x in np.stack(np.unravel_index(cells, shape), axis=1):
            starts.append((-1, np.array([x, y, z], float)))
    for anchor, pos in starts:
        d = rng.normal(size=3)
        d[2] *= 0.4
        d /= np.linalg.norm(d)
        prev = anchor
        for _ in range(int(rng.integers(4, 14))):
            d = d + rng.normal(0, 0.3, 3)
            d /= np.linalg.norm(d)
            pos = pos + d
            extra_xyz.append(pos)
            extra_parent.append(prev)
            extra_radius.append(0.6)
            prev = base + len(extra_xyz) - 1
    all_skeleton = NeuronSkeleton(
        xyz=np.concatenate([auto_xyz, np.reshape(extra_xyz, (-1, 3))]),
        parent=np.concatenate([sk.parent, np.asarray(extra_parent, int)]),
        radius=np.concatenate([sk.radius, np.asarray(extra_radius, float)]),
        segment=np.concatenate([sk.segment, np.full(len(extra_xyz), -1)]),
        segment_parent=sk.segment_parent)
    auto_keep = np.concatenate([keep, np.ones(len(extra_xyz), bool)])
    auto = tree_to_swc(all_skeleton, keep=auto_keep)
    gold = tree_to_swc(sk)
    return SimulatedNeuron(gold=gold, auto=auto, image=image, node_quality=q, quality=quality)


@dataclasses.dataclass
class NeurotraceSampleData:
    """What :func:`generate_neurotrace` wrote.

    Attributes
    ----------
    root : Path
    neurons : list of dict
        Per neuron: ``"name"``, the paths ``"gold"``, ``"auto"``, ``"image"``, node counts
        ``"gold_nodes"``, ``"auto_nodes"`` and the mean image quality ``"quality"`` (0..1).
    shape : list of int
        Image shape (z, y, x).
    """

    root: Path
    neurons: list
    shape: list


def generate_neurotrace(out_dir, *, seed=0, n_neurons=3, shape=(64, 192, 192), n_nodes=1500):
    """Write gold and automatic SWC files with their image volumes (see the module
    docstring for the layout).

    Parameters
    ----------
    out_dir : path-like
    seed : int
    n_neurons : int
        Number of neurons (>= 1).
    shape : tuple of 3 int
        Image (z, y, x), each >= 16. The 3D-SSM blocks are (32, 64, 64).
    n_nodes : int
        Target gold-tree size (>= 50; nodes are 1 voxel apart, and every 100th node is a
        block centre).

    Returns
    -------
    NeurotraceSampleData
    """
    import tifffile

    from keras_medseg.io.swc import write_swc

    seed = check_seed(seed)
    n_neurons = check_int(n_neurons, name="n_neurons", minimum=1)
    shape = check_shape(shape, name="shape", ndim=3, minimum=16)
    n_nodes = check_int(n_nodes, name="n_nodes", minimum=50)
    # ``generator`` changes with the simulation, so data written by an earlier version is
    # refused (load_marker) instead of silently mixed with the current one.
    params = dict(seed=seed, n_neurons=n_neurons, shape=list(shape), n_nodes=n_nodes,
                  generator=GENERATOR_VERSION)
    out = Path(out_dir)
    done = load_marker(out, "neurotrace", params, NeurotraceSampleData)
    if done is not None:
        return done
    rng = np.random.default_rng(seed)
    neurons = []
    for k in range(n_neurons):
        name = f"neuron_{k:03d}"
        sim = simulate_neuron(rng, shape, n_nodes=n_nodes)
        image_path = out / "images" / f"{name}.tif"
        with atomic_path(image_path) as tmp:
            tifffile.imwrite(tmp, sim.image, photometric="minisblack",
                             metadata={"axes": "ZYX"})
        header = ["synthetic neuron from keras_medseg.sampledata.neurotrace",
                  f"seed {seed}, neuron {k}; x y z in voxels of images/{name}.tif"]
        neurons.append(dict(
            name=name,
            gold=write_swc(out / "gold" / f"{name}.swc", sim.gold, header=header + ["gold"]),
            auto=write_swc(out / "auto" / f"{name}.swc", sim.auto,
                           header=header + ["simulated automatic tracing"]),
            image=image_path, gold_nodes=len(sim.gold), auto_nodes=len(sim.auto),
            quality=round(float(sim.quality.mean()), 4)))
    result = NeurotraceSampleData(root=out, neurons=neurons, shape=list(shape))
    save_marker(out, "neurotrace", params, result)
    return result
