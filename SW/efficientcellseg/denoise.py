"""Noise-adaptive input smoothing applied before pseudocoloring (an addition to the paper, off by default).

The networks were found to read pixel noise as "background": a plainly visible but noisy cell got foreground
probability ~0, and the same frame smoothed with a small Gaussian got ~1 (see docs/generalization.md). So a
frame whose noise is high relative to its signal range is smoothed in-plane until its noise-to-range ratio is
about that of the training data; frames that are already as clean as the training data are left as they are.

- noise: a robust estimate of the standard deviation of white noise, from the median absolute deviation of
  horizontal neighbour differences (``1.4826 * MAD / sqrt(2)``), median over the slices;
- signal range: ``p99.9 - p1`` of the frame after a fixed sigma-2 in-plane Gaussian (on every 2nd pixel);
- the Gaussian ``sigma`` (pixels, Y and X only) that brings the ratio down to ``target_ratio``, using that a
  Gaussian of width ``sigma`` divides white-noise standard deviation by ``2 * sqrt(pi) * sigma``; capped at
  ``max_sigma``; 0 when the ratio is already at or below the target.

The setting lives in the model folder's ``config.json`` (key ``denoise``), so training and inference of one
model always agree; a model folder without the key is run exactly as in the paper.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

RANGE_SIGMA = 2.0
"""In-plane Gaussian applied before measuring the signal range (so noise does not widen it)."""


@dataclass(frozen=True)
class DenoiseSettings:
    """Noise-adaptive smoothing: aim for ``noise / range <= target_ratio`` with a Gaussian of at most ``max_sigma``."""

    target_ratio: float
    max_sigma: float = 3.0

    def __post_init__(self) -> None:
        if not self.target_ratio > 0:
            raise ValueError(f"denoise target_ratio must be > 0, got {self.target_ratio}")
        if not self.max_sigma >= 0:
            raise ValueError(f"denoise max_sigma must be >= 0, got {self.max_sigma}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DenoiseSettings | None:
        """The settings stored in a model folder's config (key ``denoise``), or None when smoothing is off."""
        d = config.get("denoise")
        if not d:
            return None
        return cls(float(d["target_ratio"]), float(d.get("max_sigma", 3.0)))

    def to_config(self) -> dict[str, float]:
        """The JSON form stored under ``denoise`` in ``config.json``."""
        return {"target_ratio": self.target_ratio, "max_sigma": self.max_sigma}


def noise_std(stack: np.ndarray) -> float:
    """Robust white-noise standard deviation of a (Z, Y, X) stack (median over slices of the per-slice MAD)."""
    vals = []
    for sl in np.asarray(stack):
        d = np.diff(sl.astype(np.float32, copy=False), axis=1).ravel()
        vals.append(1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2.0))
    return float(np.median(vals)) if vals else 0.0


def smooth_stack(stack: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian of ``sigma`` pixels on every slice (a new array).

    Integer frames come back in their own dtype (rounded), so pseudocoloring treats them exactly as raw frames
    (CLAHE on the integer values); other dtypes come back as float32.
    """
    stack = np.asarray(stack)
    out = stack.astype(np.float32)
    if sigma > 0:
        for z in range(out.shape[0]):
            out[z] = cv2.GaussianBlur(out[z], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if np.issubdtype(stack.dtype, np.integer):
        info = np.iinfo(stack.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(stack.dtype)
    return out


def signal_range(stack: np.ndarray) -> float:
    """``p99.9 - p1`` of the stack after a sigma-2 in-plane Gaussian, on every 2nd pixel in Y and X."""
    sm = smooth_stack(np.asarray(stack)[:, ::2, ::2], RANGE_SIGMA / 2)
    lo, hi = np.percentile(sm, (1.0, 99.9))
    return float(hi - lo)


def noise_ratio(stack: np.ndarray) -> float:
    """Noise standard deviation over signal range (0 for a stack without signal range)."""
    rng = signal_range(stack)
    return noise_std(stack) / rng if rng > 0 else 0.0


def adaptive_sigma(stack: np.ndarray, settings: DenoiseSettings) -> float:
    """The in-plane Gaussian sigma that brings the stack's noise ratio to ``settings.target_ratio`` (capped)."""
    ratio = noise_ratio(stack)
    if ratio <= settings.target_ratio:
        return 0.0
    sigma = ratio / (settings.target_ratio * 2.0 * math.sqrt(math.pi))
    return float(min(settings.max_sigma, round(sigma, 2)))


def denoise_frame(stack: np.ndarray, settings: DenoiseSettings | None) -> np.ndarray:
    """The frame as the network should see it: smoothed by :func:`adaptive_sigma`, or unchanged when off."""
    if settings is None:
        return stack
    sigma = adaptive_sigma(stack, settings)
    log.debug("noise-adaptive smoothing: sigma %.2f px", sigma)
    return smooth_stack(stack, sigma) if sigma > 0 else stack
