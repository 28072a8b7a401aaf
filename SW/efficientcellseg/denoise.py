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
  ``max_sigma``; 0 when the ratio is already at or below the target, or at or below ``min_ratio`` (optional:
  the noise range the network saw unsmoothed in training, so such frames reach it as they were).

Optionally (``background_radius`` > 0) the background is removed too, as a top-hat: every slice minus its
grey opening with a disk of ``background_radius`` pixels (what is left under any object narrower than the disk;
computed on a block-averaged copy of the slice and smoothed, see :func:`background`), clipped at 0 and rescaled
to the frame's own maximum in its own dtype. This is for small nuclei on a bright, hazy or uneven background
(TRIC): the opening follows the background between densely packed nuclei, where an in-plane Gaussian mean
(tried first) also takes the nuclei away. The noise is measured on the flattened frame; when it calls for
smoothing, the raw frame is smoothed first and the top-hat taken of the smoothed frame. (An opening of a noisy
slice follows the noise minima, so a top-hat taken before smoothing leaves a raised, blotchy background of about
two noise deviations under everything; on family A tuning frames this order lifted the low-photon randomized
sequences from SEG 0.00 to 0.17-0.36, see docs/generalization.md.)

Optionally (``ceiling_percentile`` > 0) the frame is first clipped at that percentile of its own values (see
:func:`ceiling`). Pseudocoloring min-max normalises every slice, so a handful of very bright voxels (hot
pixels of an EMCCD, saturated debris) otherwise squeeze the cells into the bottom few percent of the network's
input range; a high percentile leaves ordinary frames as they were. The noise and range above are measured on
the clipped frame. This is the percentile normalisation of StarDist and Cellpose, kept one-sided (the minimum
stays exact) so the paper's min-max is unchanged wherever nothing is that bright. With ``ceiling_median`` the
percentile is taken of the frame median-filtered in-plane, so that only outliers narrower than the window (hot
pixels) can set it; at percentile 100 that clips exactly those outliers and nothing else. By default the
raw-signal map that post-processing reads is made from the clipped frame too; with ``ceiling_signal`` false it
is made from the frame without the ceiling, so the clip changes only what the network sees
(:func:`signal_settings`).

The setting lives in the model folder's ``config.json`` (key ``denoise``), so training and inference of one
model always agree; a model folder without the key is run exactly as in the paper.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from efficientcellseg.config_sections import config_section

log = logging.getLogger(__name__)

RANGE_SIGMA = 2.0
"""In-plane Gaussian applied before measuring the signal range (so noise does not widen it)."""


@dataclass(frozen=True)
class DenoiseSettings:
    """Noise-adaptive smoothing: aim for ``noise / range <= target_ratio`` with a Gaussian of at most ``max_sigma``,
    after removing the background under objects narrower than ``background_radius`` pixels (0: not removed)."""

    target_ratio: float
    max_sigma: float = 3.0
    background_radius: float = 0.0
    min_ratio: float = 0.0
    """Frames whose ratio is at or below this are left unsmoothed even when above ``target_ratio`` (the noise
    range the network was trained on unsmoothed; 0: no such range)."""
    ceiling_percentile: float = 0.0
    """Clip the frame at this percentile of its values before anything else (0: not clipped; see
    :func:`ceiling`)."""
    ceiling_median: float = 0.0
    """Take the ceiling's percentile of the frame median-filtered in-plane with this odd window (0: of the frame
    itself). A bright feature narrower than half the window (a hot pixel) then sets no ceiling, so with
    ``ceiling_percentile`` 100 the frame is clipped at the brightest value that a window's majority reaches:
    isolated outliers go, nothing wider is touched (see :func:`ceiling`)."""
    ceiling_signal: bool = True
    """Whether the raw-signal map that post-processing reads is made from the clipped frame too (True) or
    from the frame as it would be without the ceiling (False: the ceiling changes the network input only)."""

    def __post_init__(self) -> None:
        if not self.target_ratio > 0:
            raise ValueError(f"denoise target_ratio must be > 0, got {self.target_ratio}")
        if not self.max_sigma >= 0:
            raise ValueError(f"denoise max_sigma must be >= 0, got {self.max_sigma}")
        if not self.background_radius >= 0:
            raise ValueError(f"denoise background_radius must be >= 0, got {self.background_radius}")
        if not self.min_ratio >= 0:
            raise ValueError(f"denoise min_ratio must be >= 0, got {self.min_ratio}")
        q, whole = self.ceiling_percentile, self.ceiling_median > 0  # 100 (the maximum) only of a median frame
        if not (q == 0 or 50 <= q < 100 or (whole and q == 100)):
            raise ValueError(f"denoise ceiling_percentile must be 0 (off) or from 50 to "
                             f"{'100' if whole else 'below 100'}, got {q}")
        if not (self.ceiling_median == 0 or (self.ceiling_median >= 3 and self.ceiling_median % 2 == 1)):
            raise ValueError(f"denoise ceiling_median must be 0 (off) or an odd window of at least 3 pixels, "
                             f"got {self.ceiling_median}")
        if self.ceiling_median > 0 and self.ceiling_percentile == 0:
            raise ValueError("denoise ceiling_median needs a ceiling_percentile")
        if not isinstance(self.ceiling_signal, bool):
            raise ValueError(f"denoise ceiling_signal must be true or false, got {self.ceiling_signal!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DenoiseSettings | None:
        """The settings stored in a model folder's config (key ``denoise``), or None when smoothing is off."""
        d = config_section(config, "denoise", cls)
        if d is None:
            return None
        return cls(**{k: (v if k == "ceiling_signal" else float(v)) for k, v in d.items()})

    def to_config(self) -> dict[str, float | bool]:
        """The JSON form stored under ``denoise`` in ``config.json`` (``background_radius``, ``min_ratio`` and
        ``ceiling_percentile`` and ``ceiling_median`` only when used, ``ceiling_signal`` only when false)."""
        out = {"target_ratio": self.target_ratio, "max_sigma": self.max_sigma}
        if self.background_radius > 0:
            out["background_radius"] = self.background_radius
        if self.min_ratio > 0:
            out["min_ratio"] = self.min_ratio
        if self.ceiling_percentile > 0:
            out["ceiling_percentile"] = self.ceiling_percentile
        if self.ceiling_median > 0:
            out["ceiling_median"] = self.ceiling_median
        if not self.ceiling_signal:
            out["ceiling_signal"] = False
        return out

    def key(self) -> str:
        """A short text that identifies the setting (for caches keyed by the network input)."""
        return (f"denoise={self.target_ratio},{self.max_sigma}"
                + (f",bg_radius={self.background_radius}" if self.background_radius > 0 else "")
                + (f",min_ratio={self.min_ratio}" if self.min_ratio > 0 else "")
                + (f",ceiling={self.ceiling_percentile}" if self.ceiling_percentile > 0 else "")
                + (f",ceiling_median={self.ceiling_median}" if self.ceiling_median > 0 else "")
                + ("" if self.ceiling_signal else ",ceiling_signal=false"))


def noise_std(stack: np.ndarray) -> float:
    """Robust white-noise standard deviation of a (Z, Y, X) stack (median over slices of the per-slice MAD of
    the differences between neighbouring pixels along X)."""
    stack = np.asarray(stack)
    mad = _slice_mad_int if np.issubdtype(stack.dtype, np.integer) else _slice_mad
    vals = [1.4826 * mad(sl) / math.sqrt(2.0) for sl in stack]
    return float(np.median(vals)) if vals else 0.0


def _slice_mad(sl: np.ndarray) -> float:
    """Median absolute deviation of one slice's X differences (NumPy medians)."""
    d = np.diff(sl.astype(np.float32, copy=False), axis=1).ravel()
    return float(np.median(np.abs(d - np.median(d))))


def _median_of_counts(counts: np.ndarray) -> float:
    """``np.median`` of the integers 0, 1, ... taken ``counts[i]`` times each (mean of the two middle values)."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, n // 2 + 1))
    return (lo + hi) / 2.0


def _slice_mad_int(sl: np.ndarray) -> float:
    """:func:`_slice_mad` of an integer slice, the same value exactly, from histograms (``np.bincount``).

    The differences are integers, so their median m is a whole or half number and 2|d - m| is an integer:
    both medians are read off counts instead of partitioning ~4 M floats twice. Measured on a random
    13x2454x1693 uint8 frame: ``noise_std`` 1.03 s -> 0.31 s (MDA231 30x512x512: 0.14 -> 0.03 s), same value;
    ``tests/test_denoise.py`` checks the equality."""
    d = np.diff(sl.astype(np.int32), axis=1).ravel()
    if d.size == 0:
        return float("nan")
    low = int(d.min())
    twice_m = int(round(2 * (_median_of_counts(np.bincount(d - low)) + low)))
    return _median_of_counts(np.bincount(np.abs(2 * d - twice_m))) / 2.0


def _gaussian(f: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian of ``sigma`` pixels of one float32 slice (reflecting borders)."""
    return cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def smooth_stack(stack: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian of ``sigma`` pixels on every slice (a new array).

    Integer frames come back in their own dtype (rounded), so pseudocoloring treats them exactly as raw frames
    (CLAHE on the integer values); other dtypes come back as float32. Done slice by slice, so an integer frame
    never has a float copy of the whole frame.
    """
    stack = np.asarray(stack)
    integer = np.issubdtype(stack.dtype, np.integer)
    out = np.empty(stack.shape, stack.dtype if integer else np.float32)
    info = np.iinfo(stack.dtype) if integer else None
    for z, sl in enumerate(stack):
        f = sl.astype(np.float32)
        if sigma > 0:
            f = _gaussian(f, sigma)
        out[z] = np.clip(np.rint(f), info.min, info.max) if info is not None else f
    return out


BACKGROUND_BLOCK_RADIUS = 4.0
"""The opening runs on the slice block-averaged so that the disk is about this many pixels in radius (cost)."""


def background(sl: np.ndarray, radius: float) -> np.ndarray:
    """The smooth background of one slice under objects narrower than a disk of ``radius`` px (float32).

    The slice is block-averaged by ``b = max(1, round(radius / 4))`` (which also averages the noise, so the
    opening is not pulled down to the noise minimum), opened with a disk of ``radius / b`` pixels, smoothed
    with a Gaussian of half that radius and resized back (bilinear)."""
    f = np.asarray(sl, dtype=np.float32)
    h, w = f.shape
    b = max(1, int(round(radius / BACKGROUND_BLOCK_RADIUS)))
    small = cv2.resize(f, (max(1, -(-w // b)), max(1, -(-h // b))), interpolation=cv2.INTER_AREA) if b > 1 else f
    r = max(1, int(round(radius / b)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    bg = cv2.morphologyEx(small, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
    bg = _gaussian(bg, r / 2.0)
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR) if b > 1 else bg


def _flat_slice(sl: np.ndarray, radius: float) -> np.ndarray:
    """One slice minus its :func:`background`, clipped at 0 (float32)."""
    f = sl.astype(np.float32)
    np.subtract(f, background(f, radius), out=f)
    return np.maximum(f, 0.0, out=f)


def subtract_background(stack: np.ndarray, radius: float) -> np.ndarray:
    """Every slice minus its :func:`background` of ``radius`` pixels, clipped at 0 (a top-hat; a new array).

    Integer frames come back in their own dtype, rescaled so the frame's largest flattened value becomes the
    raw frame's maximum (a uint8 frame whose haze covers most of its range keeps all its grey levels for the
    cells); other dtypes come back as float32, not rescaled. ``radius`` 0 returns an unchanged copy. Integer
    frames are done slice by slice in two passes (the maximum, then the rescaled slices), so no float copy of
    the whole frame is held (216 MB for a full-size TRIC frame).
    """
    stack = np.asarray(stack)
    if radius <= 0:
        return stack.copy()
    if not np.issubdtype(stack.dtype, np.integer):
        flat = np.empty(stack.shape, np.float32)
        for z, sl in enumerate(stack):
            flat[z] = _flat_slice(sl, radius)
        return flat
    top = max((float(_flat_slice(sl, radius).max()) for sl in stack), default=0.0)
    scale = float(stack.max()) / top if top > 0 else 1.0
    out = np.empty_like(stack)
    hi = np.iinfo(stack.dtype).max
    for z, sl in enumerate(stack):
        f = _flat_slice(sl, radius)
        f *= scale
        out[z] = np.clip(np.rint(f), 0, hi)
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


def ceiling_value(stack: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of a stack's values (every voxel; integer stacks from a histogram, exact as
    ``np.percentile``'s default linear interpolation)."""
    stack = np.asarray(stack)
    if stack.size == 0:
        raise ValueError("cannot take a percentile of an empty frame")
    if stack.dtype in (np.uint8, np.uint16):
        counts = np.bincount(stack.ravel(), minlength=1)
        cum = np.cumsum(counts)
        pos = (stack.size - 1) * percentile / 100.0
        lo = int(np.searchsorted(cum, math.floor(pos) + 1))
        hi = int(np.searchsorted(cum, math.ceil(pos) + 1))
        return lo + (hi - lo) * (pos - math.floor(pos))
    return float(np.percentile(stack, percentile))


def median_slices(stack: np.ndarray, window: int) -> np.ndarray:
    """Each (Y, X) slice of a (Z, Y, X) stack median-filtered with a ``window`` x ``window`` square (edges
    replicated; OpenCV for windows 3 and 5 of uint8, uint16 and float32 slices, SciPy otherwise)."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"median_slices needs a (Z, Y, X) stack, got shape {stack.shape}")
    if window in (3, 5) and stack.dtype in (np.uint8, np.uint16, np.float32) and min(stack.shape[1:]) >= window:
        return np.stack([cv2.medianBlur(np.ascontiguousarray(sl), window) for sl in stack])
    return ndi.median_filter(stack, size=(1, window, window), mode="nearest")


def ceiling(stack: np.ndarray, percentile: float, median: int = 0) -> np.ndarray:
    """The stack clipped from above at its own ``percentile`` (a new array in the same dtype; 0: a copy), or
    with ``median`` > 0 at that percentile of :func:`median_slices` of it (100: its maximum, so that only
    outliers narrower than half the window are clipped).

    Integer stacks are clipped at the percentile rounded down to a whole grey value."""
    stack = np.asarray(stack)
    if percentile <= 0:
        return stack.copy()
    top = ceiling_value(median_slices(stack, int(median)) if median > 0 else stack, percentile)
    if np.issubdtype(stack.dtype, np.integer):
        top = math.floor(top)
    return np.minimum(stack, np.asarray(top).astype(stack.dtype))


def adaptive_sigma(stack: np.ndarray, settings: DenoiseSettings) -> float:
    """The in-plane Gaussian sigma that brings the stack's noise ratio to ``settings.target_ratio`` (capped).

    ``stack`` is the frame after any background removal (see :func:`denoise_frame`)."""
    ratio = noise_ratio(stack)
    if ratio <= max(settings.target_ratio, settings.min_ratio):
        return 0.0
    sigma = ratio / (settings.target_ratio * 2.0 * math.sqrt(math.pi))
    return float(min(settings.max_sigma, round(sigma, 2)))


def denoise_plan(stack: np.ndarray, settings: DenoiseSettings | None) -> tuple[np.ndarray, float]:
    """A frame and the in-plane sigma still to apply to it, such that any window of whole slices of that frame
    smoothed by the sigma is the same window of :func:`denoise_frame`'s result (int8 calibration uses this).

    Without background removal: ``stack`` itself and :func:`adaptive_sigma`. With it: the finished frame and 0,
    because the top-hat (whose rescaling looks at the whole frame) is taken after smoothing."""
    if settings is None:
        return stack, 0.0
    if settings.ceiling_percentile > 0:
        stack = ceiling(stack, settings.ceiling_percentile, int(settings.ceiling_median))
    if settings.background_radius <= 0:
        return stack, adaptive_sigma(stack, settings)
    flat = subtract_background(stack, settings.background_radius)
    sigma = adaptive_sigma(flat, settings)
    if sigma <= 0:
        return flat, 0.0
    del flat
    log.debug("noise-adaptive smoothing: sigma %.2f px, then the top-hat", sigma)
    return subtract_background(smooth_stack(stack, sigma), settings.background_radius), 0.0


def denoise_frame(stack: np.ndarray, settings: DenoiseSettings | None) -> np.ndarray:
    """The frame as the network should see it: clipped at its ``ceiling_percentile`` (when set), smoothed by
    :func:`adaptive_sigma` (measured after any background removal), and with the background removed (when set)
    from the smoothed frame; unchanged when off."""
    if settings is None:
        return stack
    stack, sigma = denoise_plan(stack, settings)
    if sigma > 0:
        log.debug("noise-adaptive smoothing: sigma %.2f px", sigma)
    return smooth_stack(stack, sigma) if sigma > 0 else stack


def signal_settings(settings: DenoiseSettings | None) -> DenoiseSettings | None:
    """The settings whose :func:`denoise_frame` gives the frame that post-processing's raw-signal map is made
    from: ``settings`` itself, or without the ceiling when ``ceiling_signal`` is false (then equal to the
    settings of a folder that has no ceiling, so inference makes that frame once for both)."""
    if settings is None or settings.ceiling_signal or settings.ceiling_percentile <= 0:
        return settings
    return without_ceiling(settings)


def without_ceiling(settings: DenoiseSettings | None) -> DenoiseSettings | None:
    """``settings`` with any ceiling removed (percentile, median window and ``ceiling_signal`` at their
    defaults), i.e. the settings of the same folder without a ceiling."""
    if settings is None:
        return None
    return replace(settings, ceiling_percentile=0.0, ceiling_median=0.0, ceiling_signal=True)
