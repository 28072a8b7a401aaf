"""Centre detection F1 of the training validation: the sparse greedy matching against a dense reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efficientcellseg.trainset import Sample
from efficientcellseg.validation import _greedy_matches, centre_detection_f1


def _dense_matches(pred: np.ndarray, true: np.ndarray, match_px: float, max_dz: int = 2) -> int:
    """The all-pairs form of the rule (predictions by nearest distance take the nearest free centre in reach)."""
    d = np.hypot(pred[:, None, 1] - true[None, :, 1], pred[:, None, 2] - true[None, :, 2])
    d[np.abs(pred[:, None, 0] - true[None, :, 0]) > max_dz] = np.inf
    used = np.zeros(len(true), bool)
    n = 0
    for i in np.argsort(d.min(1), kind="stable"):
        j = int(np.argmin(np.where(used, np.inf, d[i])))
        if d[i, j] <= match_px and not used[j]:
            used[j] = True
            n += 1
    return n


@pytest.mark.parametrize("seed", range(6))
def test_greedy_matches_equal_the_dense_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = np.c_[rng.integers(0, 8, 30), rng.uniform(0, 80, (30, 2))]
    pred = np.c_[rng.integers(0, 8, 45), rng.uniform(0, 80, (45, 2))]
    pred[:20] = true[:20] + np.c_[rng.integers(-3, 4, 20), rng.normal(0, 3, (20, 2))]  # near misses and hits
    n = _greedy_matches(pred, true, 6.0)
    assert n == _dense_matches(pred, true, 6.0)
    assert 0 < n <= 30


def test_golden_matches() -> None:
    true = np.array([[0, 10.0, 10.0], [0, 10.0, 20.0]])
    # both predictions are nearest to the first centre; the nearer one takes it, the other the second
    assert _greedy_matches(np.array([[0, 10.0, 14.0], [0, 10.0, 12.0]]), true, 6.0) == 2
    assert _greedy_matches(np.array([[3, 10.0, 10.0]]), true, 6.0) == 0  # 3 slices apart
    assert _greedy_matches(np.array([[0, 10.0, 16.5]]), true, 6.0) == 1  # 3.5 px from the second
    assert _greedy_matches(np.array([[0, 30.0, 30.0]]), true, 6.0) == 0


def test_flat_heatmap_is_scored_without_all_pairs() -> None:
    """A saturated heatmap makes every pixel a peak (2.5 M here, against 400 centres: 8 GB as all pairs); the
    F1 is computed in pair memory and is near 0."""
    z, h, w = 10, 500, 500
    rng = np.random.default_rng(0)
    cen = np.c_[rng.integers(0, z, 400), rng.uniform(0, h, (400, 2))]
    samples = [Sample(image=torch.zeros(3, h, w, dtype=torch.float16), target=torch.zeros(2, h, w),
                      mask=None, fg=np.zeros((0, 2)), key=("01", 0, k), source="gt3d", centers=cen)
               for k in range(z)]
    f1 = centre_detection_f1([np.ones((h, w), np.float32)] * z, samples, thresholds=(0.5,))
    assert 0 < f1[0] < 0.001
