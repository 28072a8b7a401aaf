"""Context Aware Pseudocoloring (paper section 2.2) of a whole (Z, Y, X) stack in one pass.

For slice ``z`` the output has three channels (red, green, blue):

* green ``G`` = slice ``z`` min-max normalised to [0, 1];
* red = ``minmax(M[z-1] * G + G)``, blue = ``minmax(M[z+1] * G + G)``, where ``M[j]`` is the binary
  region-of-interest mask of the neighbour slice ``j`` (``M = 0`` beyond either end of the stack).

The mask of a slice: CLAHE (``clip_limit``, ``tile_grid`` x ``tile_grid`` tiles; an all-zero slice is left
as is), min-max normalisation, ``blur`` x ``blur`` box blur (``cv2.blur``), then an adaptive threshold.
With ``t_k = thresh_start + thresh_step * k`` (k = 0 .. max_steps-1) and ``M_k = blurred > t_k``
(strict), the first ``k`` whose mask is non-empty and covers at most ``max_coverage`` of the slice is
chosen; if none qualifies, the last one (``k = max_steps - 1``), as in the paper's reference code.

Deliberate fix of the reference code (whose loop can end on an empty mask): the mask is never empty unless
the blurred slice is constant. If the chosen ``M_k`` is empty, the last non-empty ``M_k`` is used; if even
``M_0`` is empty, the mask is ``blurred >= blurred.max()``. A neighbour whose blurred map is constant
(all-zero or constant slice, the zero slices beyond the stack ends) gives ``M = 0``. Min-max normalisation
of a constant array gives zeros (never a division by zero).

Everything is computed in float32; the blurred map is compared with float64 thresholds. Each slice is
CLAHE-filtered, normalised, blurred and thresholded once and its mask reused for both neighbours, and the
threshold is found by bisection over exact counts (:func:`context_threshold`), not one comparison each.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from efficientcellseg.clahe import clahe_u16
from efficientcellseg.errors import CTCInputError

log = logging.getLogger(__name__)

_NEAR = 1e-6
"""Blurred values within this many threshold steps of a threshold are compared exactly."""


def minmax(a: np.ndarray) -> np.ndarray:
    """``(a - min) / (max - min)`` as float32; a constant array gives zeros. Min is exactly 0, max 1."""
    af = np.asarray(a, dtype=np.float32)
    mn, mx = af.min(), af.max()
    if not mx > mn:
        return np.zeros(af.shape, np.float32)
    out = np.subtract(af, mn, dtype=np.float32)
    out /= mx - mn
    return out


def threshold_counts(blurred: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``counts[k] = count_nonzero(blurred > thresholds[k])`` for evenly spaced increasing ``thresholds``.

    One histogram instead of one comparison per threshold: each value's bin (the number of thresholds strictly
    below it) is computed arithmetically, values within ``1e-6`` steps of a threshold are re-binned with exact
    comparisons (``np.searchsorted``), and the counts are a cumulative sum of the histogram. Comparisons are
    done in float64, exactly as ``blurred > thresholds[k]`` with a float64 threshold.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    n = t.size
    if n == 0:
        return np.zeros(0, np.int64)
    step = (t[-1] - t[0]) / (n - 1) if n > 1 else 1.0
    if n > 1 and not (step > 0 and np.abs(t - (t[0] + step * np.arange(n))).max() <= 1e-7 * step):
        raise ValueError(f"thresholds must be evenly spaced and increasing, got {t}")
    b = np.asarray(blurred, dtype=np.float64).ravel()
    x = b - t[0]
    x /= step
    bins = np.ceil(x)
    np.clip(bins, 0, n, out=bins)
    idx = bins.astype(np.intp)
    frac = np.rint(x)
    np.subtract(x, frac, out=frac)
    np.abs(frac, out=frac)
    near = np.flatnonzero(frac <= _NEAR)
    if near.size:
        idx[near] = np.searchsorted(t, b[near], side="left")
    hist = np.bincount(idx, minlength=n + 1)
    return b.size - np.cumsum(hist)[:n]


def choose_threshold(counts: np.ndarray, n_pixels: int, max_coverage: float) -> int:
    """Index of the threshold whose mask is used, from ``counts[k] = #(blurred > t_k)``.

    The first ``k`` with ``0 < counts[k] / n_pixels <= max_coverage``; if none, the last ``k``; if that
    mask is empty, the last ``k`` with a non-empty mask; ``-1`` when every mask is empty (the caller then
    uses ``blurred >= blurred.max()``).
    """
    c = np.asarray(counts)
    cover = c / float(n_pixels)
    ok = np.flatnonzero((c > 0) & (cover <= max_coverage))
    k = int(ok[0]) if ok.size else c.size - 1
    if c[k] > 0:
        return k
    nonempty = np.flatnonzero(c > 0)
    return int(nonempty[-1]) if nonempty.size else -1


def count_above(blurred: np.ndarray, threshold: float) -> int:
    """``count_nonzero(blurred > threshold)`` with ``threshold`` a float64, as NumPy compares them.

    A float32 map is compared in float32 with the smallest float32 above ``threshold`` (``v > t`` is
    ``v >= that`` for every float32 ``v``): the same count without a float64 copy of the map.
    """
    if blurred.dtype == np.float32:
        f = np.float32(threshold)
        if not float(f) > threshold:
            f = np.nextafter(f, np.float32(np.inf))
        return int(np.count_nonzero(blurred >= f))
    return int(np.count_nonzero(blurred > threshold))


def context_threshold(blurred: np.ndarray, thresholds: np.ndarray, max_coverage: float) -> int:
    """``choose_threshold(threshold_counts(blurred, thresholds), blurred.size, max_coverage)``, from a few counts.

    The counts fall as the thresholds rise, so the first threshold whose mask covers at most
    ``max_coverage`` is found by bisection (about log2(len(thresholds)) + 2 counts instead of a histogram of
    every value). ``benchmarks/pseudocolor_speed.py``, 2026-12-06: 11x faster on a full-size TRIC frame
    (7.05 -> 0.63 t_slice per frame), 9x on MDA231 and A549-SIM frames; the same index on every slice.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    n, size = t.size, blurred.size
    cache: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in cache:
            cache[k] = count_above(blurred, float(t[k]))
        return cache[k]

    def fits(k: int) -> bool:
        return count(k) / float(size) <= max_coverage

    lo, hi = 0, n  # the first k that fits is in [lo, hi]; hi == n: none fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    if lo == n:
        return n - 1  # none fits: the last (not empty, since it covers more than max_coverage)
    if count(lo) > 0:
        return lo
    # the first that fits is empty, so are all after it and none fits: the last non-empty one, or none
    return lo - 1 if lo > 0 else -1


def context_mask(
    blurred: np.ndarray,
    *,
    thresh_start: float = 0.2,
    thresh_step: float = 0.01,
    max_coverage: float = 0.03,
    max_steps: int = 30,
) -> tuple[np.ndarray | None, int | None]:
    """Binary ROI mask of one blurred, normalised neighbour slice and the threshold index used.

    Returns ``(None, None)`` for a constant map (``M = 0``), ``(mask, k)`` for threshold ``k``, and
    ``(mask, -1)`` when every threshold gives an empty mask and ``blurred >= blurred.max()`` is used.
    """
    mx = blurred.max()
    if not mx > blurred.min():
        return None, None
    t = thresh_start + thresh_step * np.arange(max_steps, dtype=np.float64)
    k = context_threshold(blurred, t, max_coverage)
    if k < 0:
        return blurred >= mx, -1
    return blurred > t[k], k


def _validate(stack: np.ndarray) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim != 3 or 0 in stack.shape:
        raise CTCInputError(f"pseudocoloring needs a non-empty (Z, Y, X) stack, got shape {stack.shape}")
    if not (np.issubdtype(stack.dtype, np.integer) or np.issubdtype(stack.dtype, np.floating)
            or stack.dtype == np.bool_):
        raise CTCInputError(f"pseudocoloring needs a real-valued stack, got dtype {stack.dtype}")
    if np.issubdtype(stack.dtype, np.floating) and not np.isfinite(stack).all():
        raise CTCInputError("pseudocoloring: the stack contains NaN or infinite values")
    return stack


def _validate_options(clip_limit: float, tile_grid: int, blur: int, thresh_step: float,
                      max_coverage: float, max_steps: int) -> None:
    bad = []
    if not clip_limit > 0:
        bad.append(f"clip_limit={clip_limit} (must be > 0)")
    if int(tile_grid) != tile_grid or tile_grid < 1:
        bad.append(f"tile_grid={tile_grid} (must be an integer >= 1)")
    if int(blur) != blur or blur < 1:
        bad.append(f"blur={blur} (must be an integer >= 1)")
    if not thresh_step > 0:
        bad.append(f"thresh_step={thresh_step} (must be > 0)")
    if not 0 <= max_coverage <= 1:
        bad.append(f"max_coverage={max_coverage} (must be in [0, 1])")
    if int(max_steps) != max_steps or max_steps < 1:
        bad.append(f"max_steps={max_steps} (must be an integer >= 1)")
    if bad:
        raise ValueError("invalid pseudocoloring options: " + ", ".join(bad))


def neighbour_blurred(
    raw: np.ndarray, clahe: cv2.CLAHE, blur: int, scale: tuple[float, float] | None = None
) -> np.ndarray:
    """CLAHE, min-max normalisation and box blur of one slice (float32).

    ``raw`` is uint8/uint16; with ``scale = (lo, hi)`` any other dtype is first mapped linearly from
    [lo, hi] to [0, 65535] and rounded to uint16.
    """
    if scale is not None:
        lo, hi = scale
        f = np.asarray(raw, dtype=np.float64) - lo
        f *= 65535.0 / (hi - lo) if hi > lo else 0.0
        raw = np.rint(f).astype(np.uint16)
    if not raw.max() > 0:
        img = raw
    elif raw.dtype == np.uint16 and raw.ndim == 2 and clahe.getTilesGridSize()[0] == clahe.getTilesGridSize()[1]:
        img = clahe_u16(raw, clahe.getClipLimit(), clahe.getTilesGridSize()[0])  # OpenCV's result, faster
    else:
        img = clahe.apply(raw)
    return cv2.blur(minmax(img), (blur, blur))


def pseudocolor_stack(
    stack: np.ndarray,
    *,
    clip_limit: float = 10.0,
    tile_grid: int = 16,
    blur: int = 8,
    thresh_start: float = 0.2,
    thresh_step: float = 0.01,
    max_coverage: float = 0.03,
    max_steps: int = 30,
    out_dtype: np.dtype | type = np.float32,
    threads: int = 1,
) -> np.ndarray:
    """Context Aware Pseudocoloring of a (Z, Y, X) stack: (Z, 3, Y, X) in [0, 1], channels (z-1, z, z+1).

    Accepts uint8, uint16 (CLAHE on the raw values) and other real dtypes (scaled to uint16 over the whole
    stack's range for CLAHE). See the module docstring for the exact definition. ``threads`` > 1 makes the
    slices' masks and channels in that many threads (OpenCV and NumPy release the GIL; one CLAHE object per
    thread, as OpenCV's is not thread-safe), holding every slice's mask at once; the output is identical.
    """
    stack = _validate(stack)
    _validate_options(clip_limit, tile_grid, blur, thresh_step, max_coverage, max_steps)
    scale = None
    if stack.dtype not in (np.uint8, np.uint16):
        scale = (float(stack.min()), float(stack.max()))
    opts = dict(thresh_start=thresh_start, thresh_step=thresh_step, max_coverage=max_coverage,
                max_steps=int(max_steps))
    local = threading.local()

    def mask_of(j: int) -> np.ndarray | None:
        clahe = getattr(local, "clahe", None)
        if clahe is None:
            clahe = local.clahe = cv2.createCLAHE(clipLimit=float(clip_limit),
                                                  tileGridSize=(int(tile_grid), int(tile_grid)))
        m, k = context_mask(neighbour_blurred(stack[j], clahe, int(blur), scale), **opts)
        log.debug("slice %d: context threshold index %s", j, k)
        return m

    def channel(g: np.ndarray, m: np.ndarray | None) -> np.ndarray:
        if m is None:
            return g  # minmax(g) == g exactly for a min-max normalised g
        return minmax(np.where(m, g + g, g))

    nz = stack.shape[0]
    out = np.empty((nz, 3) + stack.shape[1:], dtype=out_dtype)

    def fill(z: int, prev_m: np.ndarray | None, next_m: np.ndarray | None) -> None:
        g = minmax(stack[z])
        out[z, 0] = channel(g, prev_m)
        out[z, 1] = g
        out[z, 2] = channel(g, next_m)

    if threads > 1 and nz > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            masks = [None, *pool.map(mask_of, range(nz)), None]
            list(pool.map(lambda z: fill(z, masks[z], masks[z + 2]), range(nz)))
        return out
    prev_m, next_m = None, mask_of(0)  # one slice at a time: at most three masks held
    for z in range(nz):
        cur_m, next_m = next_m, (mask_of(z + 1) if z + 1 < nz else None)
        fill(z, prev_m, next_m)
        prev_m = cur_m
    return out


def grey_stack(stack: np.ndarray, *, out_dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The ablation baseline: three copies of each min-max normalised slice, (Z, 3, Y, X) in [0, 1]."""
    stack = _validate(stack)
    out = np.empty((stack.shape[0], 3) + stack.shape[1:], dtype=out_dtype)
    for z in range(stack.shape[0]):
        out[z, :] = minmax(stack[z])[None]
    return out
