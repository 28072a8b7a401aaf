"""Sliding-window prediction: starts cover everything, tiled == untiled, batching across z, small frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from efficientcellseg.tiling import WEIGHT_FLOOR, gaussian_weight, predict_tiled, tile_starts


def test_tile_starts_cover_everything() -> None:
    n_checked = 0
    for length in list(range(1, 70)) + [255, 256, 257, 1000, 1745, 2440]:
        for tile in (1, 2, 3, 7, 16, 33, 64, 384, 768):
            for overlap in sorted({0, 1, tile // 4, tile // 2, tile - 1}):
                if overlap >= tile:
                    continue
                s = tile_starts(length, tile, overlap)
                n_checked += 1
                assert s[0] == 0
                if length <= tile:
                    assert s == [0]
                    continue
                assert s[-1] == length - tile
                d = np.diff(s)
                assert d.min() >= 1 and d.max() <= tile - overlap, (length, tile, overlap, s)
                assert d.max() - d.min() <= 1  # evenly spaced
                assert len(s) == 1 + -(-(length - tile) // (tile - overlap))  # as few as possible
                covered = np.zeros(length, bool)
                for a in s:
                    covered[a : a + tile] = True
                assert covered.all()
    assert n_checked > 1000


def test_tile_starts_examples_and_errors() -> None:
    assert tile_starts(10, 4, 0) == [0, 3, 6]  # span 6 in 2 gaps of 3 (<= 4)
    assert tile_starts(2440, 768, 128) == [0, 557, 1115, 1672]
    assert tile_starts(100, 100, 10) == [0]
    with pytest.raises(ValueError, match=r"overlap must be an integer in \[0, tile=8\), got 8"):
        tile_starts(20, 8, 8)
    with pytest.raises(ValueError, match="tile must be a positive integer, got 0"):
        tile_starts(20, 0, 0)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        tile_starts(0, 8, 0)


@pytest.mark.parametrize("tile", [1, 2, 7, 64, 768])
def test_gaussian_weight(tile: int) -> None:
    w = gaussian_weight(tile)
    assert w.shape == (tile, tile) and w.dtype == np.float32
    assert w.max() == 1.0 and w.min() >= WEIGHT_FLOOR > 0
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    np.testing.assert_array_equal(w, w.T)
    assert gaussian_weight(tile) is w  # cached
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 0.0
    if tile >= 64:
        c = tile // 2
        assert w[0, 0] < 1e-3 * w[c, c]  # tile borders count little


def _stack(shape: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _pixelwise(batch: np.ndarray) -> np.ndarray:
    """A translation-invariant 'network': a pixelwise non-linear mix of the channels."""
    return 1.0 / (1.0 + np.exp(-(2.0 * batch[:, 0] - 1.5 * batch[:, 1] + batch[:, 2] ** 2)))


@pytest.mark.parametrize(("shape", "tile", "overlap"), [
    ((3, 3, 100, 130), 32, 8),
    ((2, 3, 97, 61), 40, 30),
    ((1, 3, 64, 64), 64, 16),
    ((2, 3, 50, 200), 64, 0),  # Y smaller than the tile
])
def test_pixelwise_function_tiled_equals_untiled(shape: tuple[int, int, int, int], tile: int,
                                                 overlap: int) -> None:
    x = _stack(shape, seed=1)
    np.testing.assert_allclose(predict_tiled(x, lambda b: b[:, 0], tile, overlap, 5), x[:, 0], rtol=0,
                               atol=1e-6)
    out = predict_tiled(x, _pixelwise, tile, overlap, 4)
    assert out.dtype == np.float32 and out.shape == shape[:1] + shape[2:]
    np.testing.assert_allclose(out, _pixelwise(x), rtol=0, atol=1e-6)


def test_mean_filter_exact_away_from_inner_tile_edges() -> None:
    """A 3x3 mean is only translation-invariant where no covering tile has its edge next to the pixel."""
    x = _stack((2, 1, 90, 110), seed=2)
    tile, overlap = 32, 8

    def mean3(b: np.ndarray) -> np.ndarray:
        return ndi.uniform_filter(b[:, 0], size=(1, 3, 3), mode="nearest")

    out = predict_tiled(x, mean3, tile, overlap, 3)
    full = mean3(x)
    dirty = np.zeros(x.shape[2:], bool)  # pixels on an edge of some tile that is not the frame's edge
    for y0 in tile_starts(90, tile, overlap):
        for a in (y0, y0 + tile - 1):
            if 0 < a < 89:
                dirty[a, :] = True
    for x0 in tile_starts(110, tile, overlap):
        for a in (x0, x0 + tile - 1):
            if 0 < a < 109:
                dirty[:, a] = True
    assert (~dirty).mean() > 0.8
    np.testing.assert_allclose(out[:, ~dirty], full[:, ~dirty], rtol=0, atol=1e-6)
    assert np.abs(out[:, dirty] - full[:, dirty]).max() > 1e-4  # the check above can tell the difference


def test_every_pixel_predicted_and_tile_borders_suppressed() -> None:
    x = _stack((2, 3, 150, 170), seed=3)
    ones = predict_tiled(x, lambda b: np.ones(b.shape[:1] + b.shape[2:], np.float32), 64, 32, 8)
    np.testing.assert_allclose(ones, 1.0, rtol=0, atol=1e-6)  # no zero-weight (NaN) or missing pixels

    def bad_borders(b: np.ndarray) -> np.ndarray:
        p = np.ones(b.shape[:1] + b.shape[2:], np.float32)
        p[:, :2] = p[:, -2:] = p[:, :, :2] = p[:, :, -2:] = 0.0
        return p

    out = predict_tiled(x, bad_borders, 64, 32, 8)
    assert out[:, 2:-2, 2:-2].min() > 0.99  # inner tile edges are outweighed by the neighbouring tiles
    assert out[:, 0].max() == 0.0  # the frame's own border is only ever seen at a tile edge


def test_batches_mix_slices_and_batch_size_does_not_change_results() -> None:
    x = _stack((5, 3, 70, 90), seed=4)
    seen: list[tuple[int, ...]] = []

    def fn(b: np.ndarray) -> np.ndarray:
        assert b.dtype == np.float32 and b.shape[1:] == (3, 40, 40)
        seen.append(b.shape)
        return ndi.uniform_filter(b[:, 1], size=(1, 5, 5), mode="constant") * b[:, 0]  # position-dependent

    r7 = predict_tiled(x, fn, 40, 10, 7)
    n_tiles = 5 * len(tile_starts(70, 40, 10)) * len(tile_starts(90, 40, 10))
    assert sum(s[0] for s in seen) == n_tiles and max(s[0] for s in seen) == 7
    assert len(seen) == -(-n_tiles // 7)  # tiles of different slices share batches
    seen.clear()
    r1 = predict_tiled(x, fn, 40, 10, 1)
    assert len(seen) == n_tiles
    np.testing.assert_array_equal(r1, r7)
    r_big = predict_tiled(x, fn, 40, 10, 1000)
    np.testing.assert_array_equal(r1, r_big)


def test_small_frames_are_padded_and_cropped() -> None:
    x = _stack((2, 3, 20, 25), seed=5)
    batches: list[np.ndarray] = []

    def fn(b: np.ndarray) -> np.ndarray:
        batches.append(b.copy())
        return b[:, 2]

    out = predict_tiled(x, fn, 32, 8, 4)
    np.testing.assert_allclose(out, x[:, 2], atol=1e-6)
    assert len(batches) == 1 and batches[0].shape == (2, 3, 32, 32)
    expected = np.pad(x, ((0, 0), (0, 0), (6, 6), (3, 4)), mode="reflect")  # centred, reflected
    np.testing.assert_array_equal(batches[0], expected)

    tiny = _stack((1, 3, 5, 40), seed=6)  # too short along Y to reflect into 32 px: zeros there
    batches.clear()
    out = predict_tiled(tiny, fn, 32, 8, 4)
    np.testing.assert_allclose(out, tiny[:, 2], atol=1e-6)
    assert batches[0].shape == (2, 3, 32, 32)
    assert not batches[0][:, :, :13].any() and not batches[0][:, :, 18:].any()
    np.testing.assert_array_equal(batches[0][0, :, 13:18], tiny[0, :, :, :32])


def test_predict_tiled_errors() -> None:
    x = _stack((1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"predict_fn returned shape \(4, 32\) .* expected \(4, 32, 32\)"):
        predict_tiled(x, lambda b: b[:, 0, 0], 32, 8, 4)
    with pytest.raises(ValueError, match=r"\(Z, C, Y, X\) array, got shape \(40, 40\)"):
        predict_tiled(x[0, 0], lambda b: b[:, 0], 32, 8, 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        predict_tiled(x, lambda b: b[:, 0], 32, 8, 0)
