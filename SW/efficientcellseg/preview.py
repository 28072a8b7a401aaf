"""Preview pictures: a few slices of a frame with the label outlines drawn in colour."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """A stable, bright RGB colour per label id (hash of the id), (n, 3) uint8 indexed by label."""
    ids = np.arange(int(labels.max()) + 1, dtype=np.uint64)
    h = (ids * np.uint64(2654435761)) % np.uint64(2**32)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=1).astype(np.uint8)
    return np.maximum(rgb, 80)


def overlay_slice(raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 picture of a 2D slice (1-99.8 percentile stretch) with label outlines in colour."""
    lo, hi = np.percentile(raw, (1, 99.8))
    grey = np.clip((raw.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    if labels.max() > 0:
        edge = find_boundaries(labels, mode="inner")
        rgb[edge] = _label_colours(labels)[labels[edge]]
    return rgb


def pick_slices(labels: np.ndarray, n: int = 3) -> list[int]:
    """``n`` slice indices: those with the most labelled pixels (spread out), else evenly spaced."""
    z = labels.shape[0]
    if z <= n:
        return list(range(z))
    area = (labels > 0).reshape(z, -1).sum(1)
    if area.max() == 0:
        return [int(round(q * (z - 1))) for q in np.linspace(0.25, 0.75, n)]
    centre = int(np.argmax(area))
    spread = max(1, z // (n + 1))
    cand = sorted({min(max(centre + k * spread, 0), z - 1) for k in range(-(n // 2), n - n // 2)})
    return cand[:n]


def write_preview(path: Path, raw: np.ndarray, labels: np.ndarray, n: int = 3) -> Path:
    """Write a PNG with ``n`` slices side by side (raw + outlines); max 1024 px per slice edge."""
    from PIL import Image

    tiles = [overlay_slice(raw[z], labels[z]) for z in pick_slices(labels, n)]
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
    img = Image.fromarray(np.concatenate(tiles, axis=1))
    scale = min(1.0, 1024 * len(tiles) / img.width)
    if scale < 1.0:
        img = img.resize((int(img.width * scale), int(img.height * scale)))
    return save_png_atomic(path, img)


def save_png_atomic(path: Path, img) -> Path:
    """Save a PIL image as PNG through a temporary file in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path


def preview_sequence(input_dir: Path, res_dir: Path, out_dir: Path, n_frames: int = 2) -> list[Path]:
    """Preview PNGs for the first and last frame (``n_frames`` evenly spaced) of a segmented sequence."""
    from efficientcellseg.ctc_io import list_frames, read_frame, read_tiff
    from efficientcellseg.errors import CTCInputError

    frames = list_frames(input_dir)
    picks = sorted({frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, max(1, n_frames))},
                   key=lambda f: f.index)
    written = []
    for fr in picks:
        mask_path = Path(res_dir) / fr.mask_name
        raw, labels = read_frame(fr.path), read_tiff(mask_path)
        if labels.shape != raw.shape:
            raise CTCInputError(f"{mask_path}: shape {labels.shape} differs from the frame's {raw.shape}")
        written.append(write_preview(Path(out_dir) / f"{Path(input_dir).name}_t{fr.digits}.png", raw, labels))
    return written
