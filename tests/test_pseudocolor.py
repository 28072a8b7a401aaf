"""Context Aware Pseudocoloring: hand-made slices, stack ends, constant slices, a slow per-slice reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from efficientcellseg.errors import CTCInputError
from efficientcellseg.pseudocolor import (
    choose_threshold,
    context_threshold,
    count_above,
    context_mask,
    grey_stack,
    minmax,
    pseudocolor_stack,
    threshold_counts,
)

T = 0.2 + 0.01 * np.arange(30)


# ---------------------------------------------------------------- slow literal reference, one slice at a time
def _norm(a: np.ndarray) -> np.ndarray:
    af = a.astype(np.float32)
    lo, hi = af.min(), af.max()
    return np.zeros_like(af) if hi == lo else (af - lo) / (hi - lo)


def _ref_mask(neighbour: np.ndarray) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=10.0, tileGridSize=(16, 16))
    img = clahe.apply(neighbour) if neighbour.max() > 0 else neighbour
    b = cv2.blur(_norm(img), (8, 8))
    if b.max() == b.min():
        return np.zeros(b.shape, bool)
    m = None
    for k in range(30):  # the reference code's loop
        m = b > T[k]
        if m.any() and m.mean() <= 0.03:
            break
    if not m.any():  # our fix: never end on an empty mask
        nonempty = [b > t for t in T if (b > t).any()]
        m = nonempty[-1] if nonempty else b >= b.max()
    return m


def reference_pseudocolor(stack: np.ndarray, clahe_stack: np.ndarray | None = None) -> np.ndarray:
    """Slow per-slice version; ``clahe_stack`` (uint8/uint16) gives the neighbours if ``stack`` is float."""
    nb = stack if clahe_stack is None else clahe_stack
    z_n = stack.shape[0]
    out = np.zeros((z_n, 3) + stack.shape[1:], np.float32)
    zeros = np.zeros(stack.shape[1:], nb.dtype)
    for z in range(z_n):
        g = _norm(stack[z])
        prev = nb[z - 1] if z > 0 else zeros
        nxt = nb[z + 1] if z < z_n - 1 else zeros
        out[z, 0] = _norm(_ref_mask(prev) * g + g)
        out[z, 1] = g
        out[z, 2] = _norm(_ref_mask(nxt) * g + g)
    return out


def blob_stack(
    shape: tuple[int, int, int], dtype: type = np.uint8, seed: int = 0, noise: float = 0.0
) -> np.ndarray:
    """Gaussian blobs whose density varies from slice to slice on a flat (or noisy) background."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    img = np.zeros(shape, np.float32)
    for i in range(z):
        n = int(rng.integers(1, 40))
        img[i, rng.integers(0, y, n), rng.integers(0, x, n)] = rng.uniform(0.3, 1.0, n)
    img = ndi.gaussian_filter(img, (0.7, 3, 3))
    img = img / img.max() + rng.normal(0.1, noise, shape)
    top = 255 if dtype == np.uint8 else 4000
    return np.clip(img * top, 0, top).astype(dtype)


# ---------------------------------------------------------------- threshold search
def test_threshold_needs_higher_k_than_t0() -> None:
    b = np.zeros((100, 100))
    b[:10] = T[5]  # 10% of the slice exactly at t_5: above t_0..t_4, not above t_5 (strict)
    b[50, :50] = 0.6  # 0.5% bright
    b[60, :50] = 0.6
    m, k = context_mask(b)
    assert k == 5
    assert np.array_equal(m, b > T[5])
    assert m.sum() == 100


def test_threshold_first_k_already_fine() -> None:
    b = np.zeros((100, 100))
    b[0, :200 // 2] = 0.9
    m, k = context_mask(b)
    assert k == 0 and m.sum() == 100


def test_never_empty_mask_uses_last_nonempty_threshold() -> None:
    b = np.zeros((100, 100))
    b[:50] = T[10]  # 50% coverage up to t_9, then empty: no threshold qualifies and k=29 is empty
    m, k = context_mask(b)
    assert k == 9
    assert m.sum() == 5000


def test_never_empty_mask_falls_back_to_maximum() -> None:
    b = np.zeros((64, 64), np.float32)
    b[3, 4] = 0.15  # everything below t_0
    b[10, 10] = 0.15
    b[20, 20] = 0.1
    m, k = context_mask(b)
    assert k == -1
    assert m.sum() == 2 and m[3, 4] and m[10, 10]


def test_constant_map_gives_no_mask() -> None:
    assert context_mask(np.full((8, 8), 0.7, np.float32)) == (None, None)
    assert context_mask(np.zeros((8, 8), np.float32)) == (None, None)


def test_choose_threshold_rules() -> None:
    n = 1000
    assert choose_threshold(np.array([500, 40, 30, 5, 0]), n, 0.03) == 2  # 30/1000 == 0.03 is allowed
    assert choose_threshold(np.array([500, 400, 0, 0]), n, 0.03) == 1  # none fits, last is empty
    assert choose_threshold(np.array([500, 400, 300]), n, 0.03) == 2  # none fits: the last
    assert choose_threshold(np.array([0, 0, 0]), n, 0.03) == -1
    assert choose_threshold(np.array([0, 0, 7]), n, 0.03) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_counts_equal_direct_comparisons(dtype: type) -> None:
    rng = np.random.default_rng(1)
    b = rng.uniform(0.0, 1.0, 20000)
    exact = np.concatenate([T, np.nextafter(T, 0), np.nextafter(T, 1), T.astype(np.float32)])
    b[: exact.size * 5] = np.repeat(exact, 5)  # values exactly at, just below and just above thresholds
    b[-100:] = [0.2 + 0.01 * k for k in range(30)] * 3 + [0.0] * 10
    b = rng.permutation(b).astype(dtype)
    counts = threshold_counts(b, T)
    direct = np.array([np.count_nonzero(b > t) for t in T])
    assert np.array_equal(counts, direct)
    for t_start, t_step, n in ((0.0, 0.1, 11), (0.35, 0.003, 50), (0.5, 1.0, 1)):
        t = t_start + t_step * np.arange(n)
        assert np.array_equal(threshold_counts(b, t), [np.count_nonzero(b > v) for v in t])


def test_threshold_counts_rejects_uneven_thresholds() -> None:
    with pytest.raises(ValueError, match="evenly spaced"):
        threshold_counts(np.zeros(4), np.array([0.1, 0.2, 0.5]))


# ---------------------------------------------------------------- whole stacks
def _chosen_ks(stack: np.ndarray) -> list[int | None]:
    clahe = cv2.createCLAHE(clipLimit=10.0, tileGridSize=(16, 16))
    return [context_mask(cv2.blur(minmax(clahe.apply(s) if s.max() else s), (8, 8)))[1] for s in stack]


def test_matches_slow_reference_uint8() -> None:
    stack = blob_stack((6, 256, 256), np.uint8, seed=2)
    stack[3] = blob_stack((1, 256, 256), np.uint8, seed=9, noise=0.03)[0]  # noisy: no threshold fits
    ks = _chosen_ks(stack)
    assert len(set(ks)) >= 4 and 29 in ks, f"test data should need different thresholds per slice: {ks}"
    out = pseudocolor_stack(stack)
    np.testing.assert_allclose(out, reference_pseudocolor(stack), rtol=0, atol=1e-6)


def test_matches_slow_reference_uint16_with_constant_and_empty_mask_slices() -> None:
    stack = blob_stack((8, 256, 200), np.uint16, seed=3)
    stack[2] = 0
    stack[4] = 1234
    stack[6] = 100
    stack[6, 100, 50] = 3000  # one bright pixel: every thresholded mask is empty -> maximum fallback
    ks = _chosen_ks(stack)
    assert ks[2] is None and ks[4] is None and ks[6] == -1 and len({k for k in ks if k}) >= 3, ks
    out = pseudocolor_stack(stack)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference_pseudocolor(stack), rtol=0, atol=1e-6)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_stack(threads: int) -> None:
    """Masks and channels made in threads (one CLAHE per thread): the output equals one thread's bit for bit,
    for uint16 with constant, empty-mask and all-zero slices, for float input and for a two-slice stack."""
    stack = blob_stack((9, 200, 180), np.uint16, seed=5)
    stack[2] = 0
    stack[4] = 1234
    stack[6] = 100
    stack[6, 100, 50] = 3000
    for s in (stack, stack.astype(np.float32) * 0.5, stack[:2]):
        np.testing.assert_array_equal(pseudocolor_stack(s, threads=threads), pseudocolor_stack(s))
    np.testing.assert_array_equal(pseudocolor_stack(stack, threads=threads, out_dtype=np.float16),
                                  pseudocolor_stack(stack, out_dtype=np.float16))


def test_stack_ends_have_no_context() -> None:
    stack = blob_stack((4, 64, 64), seed=4)
    out = pseudocolor_stack(stack)
    assert np.array_equal(out[0, 0], out[0, 1])  # z=0: red from the zero slice, M=0
    assert np.array_equal(out[-1, 2], out[-1, 1])
    assert not np.array_equal(out[1, 0], out[1, 1])  # inner slices do get context
    assert np.array_equal(out[0, 1], minmax(stack[0]))


def test_context_highlights_where_the_neighbour_has_cells() -> None:
    stack = np.full((3, 64, 64), 10, np.uint8)
    stack[1] += (np.arange(64) % 7).astype(np.uint8)[None, :]  # textured middle slice
    stack[0, 20:30, 20:30] = 200  # a cell only in slice 0
    out = pseudocolor_stack(stack)
    red = out[1, 0]
    green = out[1, 1]
    inside = red[22:28, 22:28] / np.maximum(green[22:28, 22:28], 1e-6)
    outside = red[50:60, 50:60] / np.maximum(green[50:60, 50:60], 1e-6)
    assert inside.min() > 1.5 * outside[green[50:60, 50:60] > 0].max()
    assert np.array_equal(out[1, 2], out[1, 1])  # slice 2 is constant: no context from it


def test_constant_and_zero_slices_give_zeros_not_nan() -> None:
    stack = np.zeros((3, 32, 32), np.uint8)
    stack[1] = 77
    out = pseudocolor_stack(stack)
    assert np.isfinite(out).all()
    assert not out.any()


def test_single_slice_stack() -> None:
    stack = blob_stack((1, 48, 40), seed=5)
    out = pseudocolor_stack(stack)
    assert out.shape == (1, 3, 48, 40)
    for c in range(3):
        assert np.array_equal(out[0, c], minmax(stack[0]))


def test_shape_dtype_range_and_float16() -> None:
    stack = blob_stack((5, 40, 56), seed=6)
    out32 = pseudocolor_stack(stack)
    out16 = pseudocolor_stack(stack, out_dtype=np.float16)
    assert out32.shape == out16.shape == (5, 3, 40, 56)
    assert out32.dtype == np.float32 and out16.dtype == np.float16
    assert out32.min() == 0.0 and out32.max() == 1.0
    np.testing.assert_allclose(out16.astype(np.float32), out32, atol=1e-3)


def test_float_input_is_scaled_to_uint16_for_clahe() -> None:
    stack = blob_stack((4, 128, 128), np.uint16, seed=7)
    as_float = stack.astype(np.float64) / float(stack.max()) * 3.0 - 1.0  # arbitrary float range
    lo, hi = as_float.min(), as_float.max()
    scaled = np.rint((as_float - lo) * (65535.0 / (hi - lo))).astype(np.uint16)
    assert scaled.min() == 0 and scaled.max() == 65535
    out = pseudocolor_stack(as_float)
    np.testing.assert_allclose(out, reference_pseudocolor(as_float, clahe_stack=scaled), rtol=0, atol=1e-6)


def test_grey_stack() -> None:
    stack = blob_stack((3, 20, 30), seed=8)
    stack[1] = 5
    g = grey_stack(stack)
    assert g.shape == (3, 3, 20, 30) and g.dtype == np.float32
    assert np.array_equal(g[:, 0], g[:, 2]) and np.array_equal(g[:, 1], g[:, 0])
    assert np.array_equal(g[0, 0], minmax(stack[0])) and not g[1].any()


def test_invalid_inputs() -> None:
    with pytest.raises(CTCInputError, match=r"\(Z, Y, X\) stack, got shape \(4, 4\)"):
        pseudocolor_stack(np.zeros((4, 4), np.uint8))
    bad = np.zeros((2, 4, 4), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(CTCInputError, match="NaN"):
        pseudocolor_stack(bad)
    with pytest.raises(ValueError, match="thresh_step=0"):
        pseudocolor_stack(np.zeros((2, 4, 4), np.uint8), thresh_step=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_above_equals_the_float64_comparison(dtype: type) -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(0.0, 1.0, 5000)
    exact = np.concatenate([T, np.nextafter(T, 0), np.nextafter(T, 1), T.astype(np.float32),
                            np.nextafter(T.astype(np.float32), np.float32(0)),
                            np.nextafter(T.astype(np.float32), np.float32(1))])
    b[: exact.size] = exact
    b = b.astype(dtype)
    for t in np.concatenate([T, [0.0, 1.0, 0.5]]):
        assert count_above(b, float(t)) == np.count_nonzero(b.astype(np.float64) > t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_coverage", [0.0, 0.01, 0.03, 0.3, 1.0])
def test_context_threshold_equals_the_histogram_rule(dtype: type, max_coverage: float) -> None:
    """Bisection over counts picks the same threshold as the rule applied to every threshold's count, on maps
    where the first fitting mask is non-empty, empty, none fits, and all masks are empty."""
    rng = np.random.default_rng(4)
    maps = [rng.uniform(0.0, 1.0, (40, 50)),            # fits somewhere
            rng.uniform(0.0, 0.19, (40, 50)),           # every mask empty
            rng.uniform(0.5, 1.0, (40, 50)),            # none fits below full coverage
            np.where(rng.random((40, 50)) < 0.1, 0.4, 0.1),  # jumps from 10% to empty at one threshold
            rng.beta(0.5, 5.0, (40, 50))]
    b = maps[0].copy()
    b.ravel()[: T.size * 3] = np.concatenate([T, np.nextafter(T, 0), np.nextafter(T, 1)])  # at thresholds
    maps.append(b)
    for m in maps:
        m = m.astype(dtype)
        for t in (T, T[:1], 0.35 + 0.003 * np.arange(50)):
            want = choose_threshold(threshold_counts(m, t), m.size, max_coverage)
            assert context_threshold(m, t, max_coverage) == want
