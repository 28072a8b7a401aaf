"""Network-scale preprocessing shared by training and inference (so both see the same pixels).

Whole-slice datasets (``tile_size is None``: MDA231, A549-SIM) resize every slice to
``input_size x input_size``; tiled datasets (TRIC) scale by ``input_size / tile_size`` so that one tile of
``tile_size`` pixels becomes one network input. Resizing is bilinear with ``align_corners=False``.
"""

from __future__ import annotations

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
