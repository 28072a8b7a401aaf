"""clahe.clahe_u16 against OpenCV's CLAHE: bit-identical on shapes, ranges, tile grids and clip limits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import efficientcellseg.clahe as clahe_mod
from efficientcellseg.clahe import clahe_u16


def _opencv(img: np.ndarray, clip: float, grid: int) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(img)


def _cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(8, 260)), int(rng.integers(8, 260))
        if i % 4 == 0:  # a multiple of the grid along one axis only: OpenCV still extends both
            h = 16 * int(rng.integers(1, 12))
        hi = int(rng.choice([40, 255, 4095, 30000, 65535]))
        lo = int(rng.integers(0, hi))
        if i % 2:
            img = rng.integers(lo, hi + 1, (h, w))
        else:
            img = rng.normal(lo, 0.1 * (hi - lo) + 1, (h, w))
        grid = int(rng.choice([1, 2, 5, 8, 16]))
        clip = float(rng.choice([0.0, 0.5, 2.0, 10.0, 40.0, 3000.0]))
        yield np.clip(img, 0, 65535).astype(np.uint16), clip, grid


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_opencv_on_random_images(seed: int) -> None:
    for img, clip, grid in _cases(40, seed):
        np.testing.assert_array_equal(clahe_u16(img, clip, grid), _opencv(img, clip, grid),
                                      err_msg=f"shape {img.shape}, clip {clip}, grid {grid}")


def test_equals_opencv_on_large_tiles_with_spread_to_every_level() -> None:
    """Tiles of > 65,536 pixels with a clip limit of 1: OpenCV adds ``clipped // 65536`` to every grey level."""
    img = np.random.default_rng(3).integers(1000, 1100, (600, 700)).astype(np.uint16)
    np.testing.assert_array_equal(clahe_u16(img, 0.01, 2), _opencv(img, 0.01, 2))


def test_equals_opencv_on_constant_tiny_and_blob_images() -> None:
    rng = np.random.default_rng(4)
    blobs = np.zeros((120, 90), np.float32)
    blobs[rng.integers(0, 120, 30), rng.integers(0, 90, 30)] = 1.0
    blobs = cv2.GaussianBlur(blobs, (0, 0), 4)
    images = [np.full((33, 47), 7, np.uint16), np.zeros((20, 20), np.uint16), np.full((17, 16), 65535, np.uint16),
              rng.integers(0, 3, (1, 1)).astype(np.uint16), rng.integers(0, 50, (3, 40)).astype(np.uint16),
              (blobs / blobs.max() * 3000 + 100).astype(np.uint16)]
    for img in images:
        for grid in (1, 3, 16):
            np.testing.assert_array_equal(clahe_u16(img, 10.0, grid), _opencv(img, 10.0, grid),
                                          err_msg=f"shape {img.shape}, grid {grid}")


def test_many_distinct_values_go_to_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    img = np.random.default_rng(5).integers(0, 65536, (64, 64)).astype(np.uint16)
    calls = []
    monkeypatch.setattr(clahe_mod, "_tables", lambda *a: calls.append(1))
    monkeypatch.setattr(clahe_mod, "MAX_TABLE_ENTRIES", 16 * 16 * 100)
    np.testing.assert_array_equal(clahe_u16(img, 10.0, 16), _opencv(img, 10.0, 16))
    assert calls == []


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((2, 8, 8), np.uint16),
                                 np.zeros((8, 8), np.float32)])
def test_rejects_other_dtypes_and_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2D uint16"):
        clahe_u16(bad, 10.0, 4)
