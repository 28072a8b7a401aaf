"""benchmarks/postprocess_threads.py: its table, the identical-result check on a real frame (post-processing and
pseudocoloring), and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from postprocess_threads import main, table  # noqa: E402


def test_table_gives_medians_and_speed_up() -> None:
    text = table("TRIC", "f.tif", {1: [4.0, 6.0, 5.0], 2: [2.5, 2.4, 2.6]})
    assert "| 1 | 5.00 | 4.00, 6.00, 5.00 | 1.00x |" in text
    assert "| 2 | 2.50 | 2.50, 2.40, 2.60 | 2.00x |" in text


def test_one_and_two_threads_on_a_generated_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from efficientcellseg.synth import generate

    ds = generate(profile="MDA231", out_root=tmp_path, seq="01", frames=1, seed=4, small=True)
    frame = Path(ds) / "01" / "t000.tif"
    assert main(["--dataset", "MDA231", "--frame", str(frame), "--rounds", "1", "--threads", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 1 |" in out and "| 2 |" in out and "1.00x" in out
    assert main(["--dataset", "MDA231", "--frame", str(frame), "--rounds", "1", "--threads", "1", "3",
                 "--stage", "pseudocolor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Pseudocoloring of") and "| 3 |" in out


def test_a_differing_result_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check that makes the table trustworthy: a stage whose output changes with the threads is an error."""
    import numpy as np

    import efficientcellseg.pseudocolor as pc
    from postprocess_threads import time_threads

    monkeypatch.setattr(pc, "pseudocolor_stack", lambda raw, out_dtype, threads: np.full(3, threads))
    with pytest.raises(AssertionError, match="2 threads gave another result than 1"):
        time_threads("MDA231", np.zeros((2, 8, 8), np.uint16), "x", [1, 2], 1, stage="pseudocolor")


def test_missing_frame_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--frame", str(tmp_path / "t000.tif")]) == 2
    assert "no such frame" in capsys.readouterr().err
