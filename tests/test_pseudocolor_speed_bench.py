"""benchmarks/pseudocolor_speed.py: the agreement check and the timings of one small generated frame."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pseudocolor_speed  # noqa: E402


def test_bench_profile_times_both_ways_on_a_generated_frame(tmp_path: Path) -> None:
    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.synth import generate

    ds = generate(profile="MDA231", out_root=tmp_path, seq="01", frames=1, seed=4, small=True)
    raw = read_frame(list_frames(Path(ds) / "01")[0].path)
    r = pseudocolor_speed.bench_profile(raw, reps=1)
    assert set(r) == {"histogram", "bisection", "stack"}
    assert all(v > 0 for v in r.values())


def test_disagreement_stops_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pseudocolor_speed, "context_threshold", lambda *a: -5)
    raw = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    with pytest.raises(SystemExit, match="different thresholds"):
        pseudocolor_speed.bench_profile(raw, reps=1)


def test_uint16_frames_time_clahe_both_ways() -> None:
    rng = np.random.default_rng(1)
    raw = (rng.normal(500, 100, (3, 64, 80)).clip(0, 4095)).astype(np.uint16)
    r = pseudocolor_speed.bench_profile(raw, reps=1)
    assert set(r) == {"histogram", "bisection", "stack", "clahe_cv2", "clahe_ours", "stack_cv2"}
    assert all(v > 0 for v in r.values())
    assert pseudocolor_speed.clahe_mod.MAX_TABLE_ENTRIES > 0  # restored


def test_clahe_disagreement_stops_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pseudocolor_speed.clahe_mod, "clahe_u16", lambda img, *a: img + 1)
    raw = np.random.default_rng(2).integers(0, 4000, (2, 48, 48)).astype(np.uint16)
    with pytest.raises(SystemExit, match="differs from OpenCV"):
        pseudocolor_speed.bench_clahe(raw, reps=1)
