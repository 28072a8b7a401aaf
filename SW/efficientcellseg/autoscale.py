"""The scale for a sequence whose objects may be smaller or larger in pixels than the training data's
(``predict --scale auto``; the Cellpose diameter estimate's job, done with the segmentation network itself).

A network that has learned objects of one size in pixels is least undecided about its foreground when the
objects it sees have that size: on frames resampled in xy, the share of pixels with a foreground probability
between 0.2 and 0.8 (per foreground pixel, :func:`ambiguity`) is lowest near the resampling that brings the
objects back to the training size (docs/generalization.md, twenty-first session). So a crop of the sequence is
run through the network at each of :data:`CANDIDATES` and the least ambiguous scale is taken, divided by the
model's ``reference``: the scale that is least ambiguous on frames like its training data (``config.json`` key
``autoscale.reference``), so that frames like the training data get scale 1.

Only tiled datasets (TRIC) have a network input that depends on the scale; MDA231 and A549-SIM resize every slice
whole to the network input, so the scale only changes their post-processing's pixel sizes and this cannot
measure it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

log = logging.getLogger(__name__)

CANDIDATES: tuple[float, ...] = (0.64, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5)
"""Scales tried (steps of 1.25x); the result is one of them divided by the model's reference."""
AMBIGUOUS = (0.2, 0.8)
"""Foreground probabilities counted as undecided."""
CROP = 640
"""Side (frame pixels) of the xy window that is run at every candidate scale."""
SLICES = 5
"""z-slices of the window used: those whose signal spreads most (where the objects are)."""


def ambiguity(prob: np.ndarray) -> tuple[int, int]:
    """``(undecided pixels, foreground pixels)`` of a probability map (undecided: within :data:`AMBIGUOUS`)."""
    p = np.asarray(prob)
    lo, hi = AMBIGUOUS
    return int(np.count_nonzero((p > lo) & (p < hi))), int(np.count_nonzero(p > 0.5))


def probe_window(raw: np.ndarray, size: int = CROP, slices: int = SLICES) -> np.ndarray:
    """The (z, size, size) part of a (Z, Y, X) frame that the scale is measured on.

    In xy the window of the brightest mean maximum projection (where most objects are), in z the ``slices``
    slices with the largest standard deviation inside it, in their order. Smaller frames give all they have.
    """
    if raw.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) frame, got shape {raw.shape}")
    z, ny, nx = raw.shape
    wy, wx = min(size, ny), min(size, nx)
    y0 = x0 = 0
    if (wy, wx) != (ny, nx):
        step = max(1, min(ny, nx) // 128)  # a coarse grid is enough to place the window
        proj = raw[:, ::step, ::step].max(axis=0).astype(np.float32)
        k = (max(1, wy // step), max(1, wx // step))
        mean = ndi.uniform_filter(proj, k, mode="constant")
        # window centres that keep the window inside the frame
        cy0, cx0 = k[0] // 2, k[1] // 2
        inner = mean[cy0:max(cy0 + 1, proj.shape[0] - (k[0] - cy0) + 1), cx0:max(cx0 + 1, proj.shape[1] - (k[1] - cx0) + 1)]
        iy, ix = np.unravel_index(int(np.argmax(inner)), inner.shape)
        y0 = min(max(0, iy * step), ny - wy)
        x0 = min(max(0, ix * step), nx - wx)
    win = raw[:, y0:y0 + wy, x0:x0 + wx]
    if z > slices:
        spread = win.reshape(z, -1).astype(np.float32).std(axis=1)
        keep = np.sort(np.argsort(spread, kind="stable")[::-1][:slices])
        win = win[keep]
    return np.ascontiguousarray(win)


def least_ambiguous(prob_at: Callable[[np.ndarray, float], np.ndarray], windows: Sequence[np.ndarray],
                    candidates: Sequence[float] = CANDIDATES) -> tuple[float, dict[float, float]]:
    """The candidate scale with the fewest undecided pixels per foreground pixel over ``windows``.

    ``prob_at(window, scale)`` returns the network's foreground probability of the window resampled by
    ``scale``. Returns the scale and the ratio at every candidate (``inf`` where nothing was foreground).
    """
    if not windows:
        raise ValueError("no frames to measure the scale on")
    ratios: dict[float, float] = {}
    for s in candidates:
        und = fg = 0
        for w in windows:
            u, f = ambiguity(prob_at(w, s))
            und, fg = und + u, fg + f
        ratios[float(s)] = und / fg if fg else float("inf")
    best = min(ratios, key=lambda s: (ratios[s], abs(np.log(s))))
    return best, ratios


def relative_scale(best: float, reference: float) -> float:
    """``best / reference`` rounded to 3 decimals and kept within ``predict --scale``'s 0.25-4."""
    if not (np.isfinite(reference) and reference > 0):
        raise ValueError(f"autoscale reference must be a number > 0, got {reference!r}")
    return float(np.clip(round(best / reference, 3), 0.25, 4.0))
