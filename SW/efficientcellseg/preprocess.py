"""Network-scale preprocessing shared by training and inference (so both see the same pixels).

Whole-slice datasets (``tile_size is None``: MDA231, A549-SIM) resize every slice to
``input_size x input_size``; tiled datasets (TRIC) scale by ``input_size / tile_size`` so that one tile of
``tile_size`` pixels becomes one network input. Resizing is bilinear with ``align_corners=False``.

A user's ``scale`` (``predict --scale``) resamples the whole raw frame in xy before all of that
(:func:`rescale_frame`), and the labels back afterwards (:func:`restore_labels`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from efficientcellseg.datasets import DatasetConfig


def network_scale(cfg: DatasetConfig, shape_yx: tuple[int, int]) -> tuple[float, float]:
    """Scale factors (sy, sx) from original pixels to network pixels for a slice of ``shape_yx``."""
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    if ny < 1 or nx < 1:
        raise ValueError(f"slice shape {shape_yx} must be positive")
    if cfg.tile_size is None:
        return cfg.input_size / ny, cfg.input_size / nx
    s = cfg.input_size / cfg.tile_size
    return s, s


def network_shape(cfg: DatasetConfig, shape_yx: tuple[int, int]) -> tuple[int, int]:
    """The (Y, X) size of a slice of ``shape_yx`` once scaled to network pixels."""
    sy, sx = network_scale(cfg, shape_yx)
    return max(1, round(shape_yx[0] * sy)), max(1, round(shape_yx[1] * sx))


def resize_to_network(x: torch.Tensor, cfg: DatasetConfig) -> torch.Tensor:
    """Bilinearly resize (N, C, Y, X) slices to network scale (see :func:`network_scale`)."""
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, Y, X) tensor, got shape {tuple(x.shape)}")
    size = network_shape(cfg, (x.shape[-2], x.shape[-1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def check_scale(scale: float) -> float:
    """``scale`` as a float, or ValueError unless it is a finite number in [0.25, 4]."""
    s = float(scale)
    if not (np.isfinite(s) and 0.25 <= s <= 4.0):
        raise ValueError(f"scale must be a number from 0.25 to 4 (1 = as recorded), got {scale}")
    return s


def scaled_shape(shape_yx: tuple[int, int], scale: float) -> tuple[int, int]:
    """The (Y, X) size of a slice of ``shape_yx`` resampled by ``scale`` (at least one pixel each)."""
    return max(1, round(shape_yx[0] * scale)), max(1, round(shape_yx[1] * scale))


def rescale_frame(frame: np.ndarray, scale: float) -> np.ndarray:
    """A (Z, Y, X) frame resampled in xy by ``scale`` (OpenCV, per slice; same dtype); ``scale == 1``: ``frame``.

    Why: the networks saw objects of the sizes they were trained on (TRIC: nuclei a few network pixels across);
    a user whose objects are smaller or larger in pixels resamples the frame so that they match (StarDist's
    ``scale``, Cellpose's diameter). Shrinking averages pixels (``INTER_AREA``), enlarging interpolates
    bilinearly (``INTER_LINEAR``).
    """
    if scale == 1.0:
        return frame
    if frame.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) frame, got shape {frame.shape}")
    ny, nx = scaled_shape(frame.shape[1:], scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((frame.shape[0], ny, nx), frame.dtype)
    for z, sl in enumerate(frame):
        out[z] = cv2.resize(np.ascontiguousarray(sl), (nx, ny), interpolation=interp)
    return out


def restore_labels(labels: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """(Z, Y, X) uint16 labels of a rescaled frame, brought back to the recorded frame's ``shape_yx``.

    Nearest neighbour with pixel centres aligned (``cv2.INTER_NEAREST_EXACT``), per slice; an object too
    small to keep a pixel disappears.
    """
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    if labels.shape[1:] == (ny, nx):
        return labels
    out = np.empty((labels.shape[0], ny, nx), labels.dtype)
    for z, sl in enumerate(labels):
        out[z] = cv2.resize(np.ascontiguousarray(sl), (nx, ny), interpolation=cv2.INTER_NEAREST_EXACT)
    return out
