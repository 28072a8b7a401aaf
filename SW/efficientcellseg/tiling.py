"""Overlapping sliding-window prediction of a (Z, C, Y, X) stack with Gaussian blending.

Tiles are evenly spaced so that they cover every pixel (no unpredicted remainder at the borders), each tile's
prediction is weighted by a Gaussian that is largest at the tile centre and strictly positive everywhere, and
the result is ``sum(w * p) / sum(w)``. Tiles of all slices are batched together. Memory: the (Z, Y, X)
accumulator, one (Y, X) weight sum and one batch of tiles.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

WEIGHT_FLOOR = 1e-6
"""Smallest blending weight: tile corners never get zero weight."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced starts covering ``[0, length)``: first 0, last ``length - tile``, step <= tile - overlap.

    A single start 0 when ``length <= tile`` (the frame is then padded to the tile).
    """
    if int(length) != length or length < 1:
        raise ValueError(f"length must be a positive integer, got {length}")
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile}")
    if int(overlap) != overlap or not 0 <= overlap < tile:
        raise ValueError(f"overlap must be an integer in [0, tile={tile}), got {overlap}")
    length, tile, overlap = int(length), int(tile), int(overlap)
    if length <= tile:
        return [0]
    span = length - tile
    stride = tile - overlap
    gaps = -(-span // stride)  # ceil: the fewest steps of at most ``stride``
    # start_i = round(i * span / gaps), in integers (round half up)
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(gaps + 1)]


@lru_cache(maxsize=16)
def gaussian_weight(tile: int, sigma_scale: float = 0.125) -> np.ndarray:
    """(tile, tile) float32 Gaussian centred on the tile, sigma = ``sigma_scale * tile``, max 1, >= floor.

    Cached; the returned array is read-only.
    """
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile}")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    d = np.arange(tile, dtype=np.float64) - (tile - 1) / 2.0
    g = np.exp(-0.5 * (d / (sigma_scale * tile)) ** 2)
    w = np.outer(g, g)
    w /= w.max()
    w = np.maximum(w, WEIGHT_FLOOR).astype(np.float32)
    w.setflags(write=False)
    return w


def _pad_widths(size: int, tile: int) -> tuple[int, int]:
    pad = max(tile - size, 0)
    return pad // 2, pad - pad // 2


def predict_tiled(
    stack: np.ndarray,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    tile: int,
    overlap: int,
    batch_size: int,
) -> np.ndarray:
    """Blend ``predict_fn`` over overlapping tiles of every slice: (Z, C, Y, X) -> (Z, Y, X) float32.

    ``predict_fn`` maps a (B, C, tile, tile) float32 batch (B <= ``batch_size``; tiles of different slices
    share a batch) to (B, tile, tile) probabilities. A frame smaller than the tile along Y or X is padded
    (centred; reflected, or zeros along an axis too short to reflect once) and the prediction cropped back.
    """
    stack = np.asarray(stack)
    if stack.ndim != 4 or 0 in stack.shape:
        raise ValueError(f"stack must be a non-empty (Z, C, Y, X) array, got shape {stack.shape}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    nz, nc, ny, nx = stack.shape
    ys, xs = tile_starts(ny, tile, overlap), tile_starts(nx, tile, overlap)
    tile = int(tile)
    w_full = gaussian_weight(tile)
    (py0, py1), (px0, px1) = _pad_widths(ny, tile), _pad_widths(nx, tile)
    y_mode = "reflect" if max(py0, py1) < ny else "constant"
    x_mode = "reflect" if max(px0, px1) < nx else "constant"
    th, tw = min(ny, tile), min(nx, tile)  # extent of a tile inside the frame
    w = w_full[py0 : py0 + th, px0 : px0 + tw]

    acc = np.zeros((nz, ny, nx), np.float32)
    wsum = np.zeros((ny, nx), np.float32)
    for y0 in ys:
        for x0 in xs:
            wsum[y0 : y0 + th, x0 : x0 + tw] += w
    positions = [(z, y0, x0) for z in range(nz) for y0 in ys for x0 in xs]
    log.debug("tiling: %d tiles of %d px (%d x %d per slice), batch %d", len(positions), tile, len(ys),
              len(xs), batch_size)
    for b0 in range(0, len(positions), int(batch_size)):
        chunk = positions[b0 : b0 + int(batch_size)]
        batch = np.empty((len(chunk), nc, tile, tile), np.float32)
        for i, (z, y0, x0) in enumerate(chunk):
            part = stack[z, :, y0 : y0 + th, x0 : x0 + tw]
            if th < tile:
                part = np.pad(part, ((0, 0), (py0, py1), (0, 0)), mode=y_mode)
            if tw < tile:
                part = np.pad(part, ((0, 0), (0, 0), (px0, px1)), mode=x_mode)
            batch[i] = part
        pred = np.asarray(predict_fn(batch))
        if pred.shape != (len(chunk), tile, tile):
            raise ValueError(
                f"predict_fn returned shape {pred.shape} for a batch of shape {batch.shape}; "
                f"expected {(len(chunk), tile, tile)}"
            )
        for i, (z, y0, x0) in enumerate(chunk):
            p = pred[i, py0 : py0 + th, px0 : px0 + tw].astype(np.float32, copy=False)
            acc[z, y0 : y0 + th, x0 : x0 + tw] += w * p
    acc /= wsum
    return acc
