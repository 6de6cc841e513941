"""Synthetic surgical-video frames for the ``nerve`` task.

Each "video" is a sequence of slowly changing RGB frames of reddish tissue (coarse and
fine texture, vignetting, specular highlights, blur, noise, JPEG). A video has one segment
per class, in random order; every frame of a segment shows the same structure while the
camera drifts:

- ``nerve``: a narrow, curving, yellowish-white cord with a flat-topped profile and a thin
  vessel running along it (the binary nerve mask marks it);
- ``opening wound``: a dark, spindle-shaped opening with a blood-red rim;
- ``tendon``: a wide, nearly straight, bluish-white band with fibres along its length.

Frames are named ``v<video:03d>_f<frame:04d>.jpg``; the first ``n_videos - test_videos``
videos are the "training and validation" set and the rest the test set, so splits by
video can be checked. Layouts written under ``out_dir`` (those of the original):

- ``classification/{train_val,test}/<class>/<name>.jpg`` (class folders ``nerve``,
  ``opening wound``, ``tendon``);
- ``segmentation/img/<name>.jpg`` and ``segmentation/masks_machine/<name>.png``
  (Supervisely export: RGB PNG whose R channel is the class index 0/1), nerve frames of
  every video;
- ``raw_frames/<name>.jpg``: 1920x1080 frames whose surgical field lies in the crop box of
  ``cropLeftOnly-1080To512`` (optional);
- ``linked/{input,hdversion,annotation,order}``: every frame of the first test video at
  224x224 (``input``) and ``image_size`` (``hdversion``), the nerve masks (0/255 PNG) of
  its nerve frames (``annotation``), and ``order/<k:04d>_<name>.jpg`` (the 224 frames, the
  ``k`` prefix giving the chronological order);
- ``frames.csv``: ``name,video,frame,class,split`` for every frame.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from keras_medseg.sampledata._common import (check_int, check_seed, load_marker, save_marker,
                                             save_pil, smooth_noise)
from keras_medseg.utils import write_csv

CLASS_NAMES = ("nerve", "opening wound", "tendon")
RAW_SIZE = (1920, 1080)  # width, height of the raw camera frames
_RAW_R = 1080 / 1608
RAW_CROP_BOX = (340 * _RAW_R, 0.0, 1608 * _RAW_R, 1608 * _RAW_R)  # left, top, right, bottom


@dataclasses.dataclass
class NerveSampleData:
    """What :func:`generate_nerve` wrote.

    Attributes
    ----------
    root : Path
    classification_dir : Path
        Holds ``train_val/<class>/`` and ``test/<class>/``.
    segmentation_dir : Path
        Holds ``img/`` and ``masks_machine/``.
    linked_dir : Path
    raw_frames_dir : Path or None
    frames_csv : Path
    counts : dict
        ``"<split>/<class>"`` -> number of frames, plus ``"segmentation"``, ``"linked"``
        and ``"raw"``.
    """

    root: Path
    classification_dir: Path
    segmentation_dir: Path
    linked_dir: Path
    raw_frames_dir: Path | None
    frames_csv: Path
    counts: dict


def _centreline(rng, size, kind):
    """Dense points (N, 2) (x, y) of the structure's centre line and its half-width (N,)."""
    c = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    base = size / 1.25  # canvas is 1.25x the frame
    if kind == "nerve":
        length, amp, freq = 1.6 * size, rng.uniform(0.05, 0.12) * base, rng.uniform(0.6, 1.4)
        half = np.full(4 * size, rng.uniform(0.02, 0.035) * base)
        half *= 1 + 0.15 * np.sin(np.linspace(0, rng.uniform(2, 6), half.size))
    elif kind == "tendon":
        length, amp, freq = 1.6 * size, rng.uniform(0.0, 0.03) * base, rng.uniform(0.3, 0.7)
        half = np.full(4 * size, rng.uniform(0.07, 0.11) * base)
    else:  # opening wound: a spindle
        length, amp, freq = rng.uniform(0.45, 0.7) * base, rng.uniform(0.0, 0.04) * base, 0.5
        s = np.linspace(0, 1, 4 * size)
        half = rng.uniform(0.08, 0.14) * base * np.sin(np.pi * s) ** 0.7 + 1.0
    s = np.linspace(-0.5, 0.5, half.size)
    phase = rng.uniform(0, 2 * np.pi)
    offset = amp * np.sin(2 * np.pi * freq * s + phase)
    pts = c + np.outer(s * length, direction) + np.outer(offset, normal)
    return pts, half


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _render_scene(rng, kind, canvas):
    """Float RGB image (canvas, canvas, 3) in [0, 1] and the nerve mask (bool)."""
    tissue = np.array([0.64, 0.24, 0.21]) * rng.uniform(0.85, 1.1, 3)
    fat = np.array([0.85, 0.66, 0.38])
    coarse = smooth_noise(rng, (canvas, canvas), canvas / 10, coarse=8)
    fatty = np.clip(smooth_noise(rng, (canvas, canvas), canvas / 14, coarse=8) - 0.8, 0, 1)
    fine = smooth_noise(rng, (canvas, canvas), 1.2)
    img = tissue * (1 + 0.18 * coarse + 0.06 * fine)[..., None]
    img = img * (1 - fatty[..., None] * 0.6) + fat * (fatty[..., None] * 0.6)

    pts, half = _centreline(rng, canvas, kind)
    ij = np.round(pts[:, ::-1]).astype(int)
    keep = np.all((ij >= 0) & (ij < canvas), axis=1)
    ij, half = ij[keep], half[keep]
    line = np.ones((canvas, canvas), bool)
    width = np.zeros((canvas, canvas))
    line[ij[:, 0], ij[:, 1]] = False
    width[ij[:, 0], ij[:, 1]] = half
    dist, (ni, nj) = ndi.distance_transform_edt(line, return_indices=True)
    w = width[ni, nj]
    rel = dist / np.maximum(w, 1e-6)
    mask = np.zeros((canvas, canvas), bool)
    along = smooth_noise(rng, (canvas, canvas), 3.0)
    if kind == "nerve":
        alpha = np.exp(-rel ** 4)[..., None]
        colour = np.array([0.96, 0.9, 0.64]) * rng.uniform(0.92, 1.04)
        shade = 1 - 0.12 * rel.clip(0, 1) ** 2 + 0.03 * along
        layer = colour * shade[..., None]
        vessel = np.exp(-((rel - 0.45) / 0.08) ** 2)[..., None] * 0.5
        layer = layer * (1 - vessel) + np.array([0.7, 0.15, 0.12]) * vessel
        mask = rel <= 1.0
    elif kind == "tendon":
        alpha = _sigmoid((1 - rel) * 12)[..., None]
        period = rng.uniform(3.0, 5.0)
        fibres = 0.5 + 0.5 * np.sin(2 * np.pi * dist / period + 1.5 * along)
        layer = np.array([0.9, 0.9, 0.93]) * (1 - 0.14 * fibres)[..., None]
    else:
        alpha = _sigmoid((1 - rel) * 8)[..., None]
        depth = np.clip(1 - rel, 0, 1)[..., None]
        layer = np.array([0.34, 0.07, 0.06]) * (1 - depth) + np.array([0.09, 0.02, 0.02]) * depth
        rim = np.exp(-((rel - 1.05) / 0.12) ** 2)[..., None] * 0.5
        img = img * (1 - rim) + np.array([0.55, 0.05, 0.05]) * rim
    img = img * (1 - alpha) + layer * alpha
    return img, mask


def _frame(rng, scene, mask, offset, size, blur):
    """Crop one frame at ``offset`` and add lighting, highlights, noise and blur."""
    from PIL import Image, ImageFilter

    oy, ox = offset
    img = scene[oy:oy + size, ox:ox + size].copy()
    msk = mask[oy:oy + size, ox:ox + size]
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    vignette = 1 - 0.9 * ((xx / size - 0.5) ** 2 + (yy / size - 0.5) ** 2)
    img *= vignette[..., None] * rng.uniform(0.93, 1.07)
    for _ in range(rng.integers(2, 7)):  # specular highlights
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(0.004, 0.014) * size
        spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = img + spot[..., None] * rng.uniform(0.6, 1.2)
    img += rng.normal(0, 0.015, img.shape)
    pil = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(blur))
    return pil, msk


def generate_nerve(out_dir, *, seed=0, image_size=512, n_videos=6, test_videos=2,
                   frames_per_class=5, raw_frames=2):
    """Write the synthetic nerve dataset (see the module docstring for the layout).

    Parameters
    ----------
    out_dir : path-like
    seed : int
        Seed of ``np.random.default_rng``; the same seed gives the same files.
    image_size : int
        Side of the square frames in pixels (>= 32); the original's frames are 512.
    n_videos : int
        Number of videos (>= 2).
    test_videos : int
        How many of them (the last ones) form the test set; 1 <= test_videos < n_videos.
    frames_per_class : int
        Consecutive frames per class segment in each video (>= 1).
    raw_frames : int
        Number of 1920x1080 raw frames (>= 0; frames taken from the first videos).

    Returns
    -------
    NerveSampleData
        Re-running with the same arguments returns the recorded result without writing.

    Examples
    --------
    >>> data = generate_nerve("sample/nerve", image_size=64, frames_per_class=2)  # doctest: +SKIP
    >>> sorted(p.name for p in (data.classification_dir / "test").iterdir())  # doctest: +SKIP
    ['nerve', 'opening wound', 'tendon']
    """
    seed = check_seed(seed)
    image_size = check_int(image_size, name="image_size", minimum=32)
    n_videos = check_int(n_videos, name="n_videos", minimum=2)
    test_videos = check_int(test_videos, name="test_videos", minimum=1)
    if test_videos >= n_videos:
        raise ValueError(f"test_videos must be smaller than n_videos ({n_videos}); "
                         f"got {test_videos}")
    frames_per_class = check_int(frames_per_class, name="frames_per_class", minimum=1)
    raw_frames = check_int(raw_frames, name="raw_frames", minimum=0)
    params = dict(seed=seed, image_size=image_size, n_videos=n_videos,
                  test_videos=test_videos, frames_per_class=frames_per_class,
                  raw_frames=raw_frames)
    out = Path(out_dir)
    done = load_marker(out, "nerve", params, NerveSampleData)
    if done is not None:
        return done

    from PIL import Image

    rng = np.random.default_rng(seed)
    size = image_size
    margin = size // 8
    canvas = size + 2 * margin
    cls_dir, seg_dir, linked_dir = out / "classification", out / "segmentation", out / "linked"
    raw_dir = out / "raw_frames" if raw_frames else None
    rows, counts = [], {}
    linked_k = 0
    for video in range(n_videos):
        split = "train_val" if video < n_videos - test_videos else "test"
        frame_no = 0
        for class_id in rng.permutation(len(CLASS_NAMES)):
            name_cls = CLASS_NAMES[class_id]
            scene, mask = _render_scene(rng, name_cls, canvas)
            start = rng.uniform(0, 2 * margin, 2)
            drift = rng.uniform(-1, 1, 2) * margin / max(frames_per_class, 2)
            for t in range(frames_per_class):
                pos = np.clip(np.round(start + drift * t), 0, 2 * margin).astype(int)
                pil, msk = _frame(rng, scene, mask, pos, size,
                                  blur=rng.uniform(0.4, 1.4) * size / 512 + 0.2)
                name = f"v{video:03d}_f{frame_no:04d}"
                frame_no += 1
                save_pil(pil, cls_dir / split / name_cls / f"{name}.jpg", quality=92)
                key = f"{split}/{name_cls}"
                counts[key] = counts.get(key, 0) + 1
                rows.append(dict(name=f"{name}.jpg", video=f"v{video:03d}", frame=frame_no - 1,
                                 **{"class": name_cls}, split=split))
                if name_cls == "nerve":
                    save_pil(pil, seg_dir / "img" / f"{name}.jpg", quality=92)
                    rgb = np.zeros((size, size, 3), np.uint8)
                    rgb[..., 0] = msk
                    save_pil(Image.fromarray(rgb), seg_dir / "masks_machine" / f"{name}.png")
                    counts["segmentation"] = counts.get("segmentation", 0) + 1
                if video == n_videos - test_videos:
                    linked_k += 1
                    small = pil.resize((224, 224), Image.BILINEAR)
                    save_pil(pil, linked_dir / "hdversion" / f"{name}.jpg", quality=92)
                    save_pil(small, linked_dir / "input" / f"{name}.jpg", quality=92)
                    save_pil(small, linked_dir / "order" / f"{linked_k:04d}_{name}.jpg",
                             quality=92)
                    if name_cls == "nerve":
                        save_pil(Image.fromarray(msk.astype(np.uint8) * 255),
                                 linked_dir / "annotation" / f"{name}.png")
                if raw_dir is not None and counts.get("raw", 0) < raw_frames:
                    save_pil(_raw_frame(rng, pil), raw_dir / f"{name}.jpg", quality=90)
                    counts["raw"] = counts.get("raw", 0) + 1
    counts["linked"] = linked_k
    frames_csv = write_csv(out / "frames.csv", rows,
                           columns=["name", "video", "frame", "class", "split"])
    result = NerveSampleData(root=out, classification_dir=cls_dir, segmentation_dir=seg_dir,
                             linked_dir=linked_dir, raw_frames_dir=raw_dir,
                             frames_csv=frames_csv, counts=counts)
    save_marker(out, "nerve", params, result)
    return result


def _raw_frame(rng, pil):
    """A 1920x1080 camera frame whose crop box holds ``pil`` (stretched to the box)."""
    from PIL import Image, ImageDraw

    width, height = RAW_SIZE
    left, top, right, bottom = RAW_CROP_BOX
    canvas = Image.new("RGB", RAW_SIZE, (8, 8, 10))
    field = pil.resize((int(round(right - left)), int(round(bottom - top))), Image.BICUBIC)
    canvas.paste(field, (int(round(left)), int(round(top))))
    draw = ImageDraw.Draw(canvas)
    # A dark side panel like a recorder's on-screen display.
    for k in range(int(rng.integers(3, 6))):
        y0 = 80 + 150 * k
        draw.rectangle([1200, y0, 1800, y0 + 90], fill=(40, 42, 48), outline=(90, 90, 100))
    return canvas
