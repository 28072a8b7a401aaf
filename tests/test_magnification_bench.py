"""benchmarks/magnification.py: its argument parsing, the resampling of frame and truth, and its error line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import magnification  # noqa: E402


def test_parse_pairs() -> None:
    assert magnification.parse_pairs(["0.6:1.667", "1:1"]) == [(0.6, 1.667), (1.0, 1.0)]
    assert magnification.parse_pairs(["0.6:auto"]) == [(0.6, "auto")]
    with pytest.raises(ValueError, match="MAGNIFICATION:SCALE"):
        magnification.parse_pairs(["0.6:0"])
    with pytest.raises(ValueError, match="MAGNIFICATION:SCALE"):
        magnification.parse_pairs(["0.6"])
    with pytest.raises(ValueError, match="> 0"):
        magnification.parse_pairs(["0:1"])


def test_magnify_resamples_frame_and_truth_alike() -> None:
    raw = np.zeros((2, 40, 60), np.uint8)
    truth = np.zeros((2, 40, 60), np.uint16)
    raw[:, 10:20, 10:30] = 200
    truth[:, 10:20, 10:30] = 4
    r, t = magnification.magnify(raw, truth, 0.5)
    assert r.shape == t.shape == (2, 20, 30) and t.dtype == np.uint16
    assert set(np.unique(t)) == {0, 4}
    assert np.array_equal(r[0] > 100, t[0] == 4)  # the object stays where the frame's bright region is
    same_r, same_t = magnification.magnify(raw, truth, 1.0)
    assert same_r is raw and same_t is truth


def test_bad_pairs_give_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert magnification.main(["family-b", "--pairs", "x:y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MAGNIFICATION:SCALE" in err[0]


def test_magnify_truth_takes_a_seg_slice_or_a_volume() -> None:
    sl = np.zeros((40, 60), np.uint16)
    sl[10:20, 10:30] = 3
    small = magnification.magnify_truth(sl, 0.5)
    assert small.shape == (20, 30) and np.count_nonzero(small == 3) == 50
    vol = magnification.magnify_truth(np.stack([sl, sl]), 2.0)
    assert vol.shape == (2, 80, 120) and np.count_nonzero(vol[1] == 3) == 800
    assert magnification.magnify_truth(sl, 1.0) is sl


@pytest.mark.parametrize("args, needle", [
    (["tuning", "--magnifications", "0"], "--magnifications"),
    (["tuning", "--models", "x"], "NAME=DIR"),
    (["family-b", "--models", "zoom=/no/such/folder"], "does not exist"),
])
def test_bad_models_or_magnifications_give_one_error_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                                          needle: str) -> None:
    assert magnification.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
