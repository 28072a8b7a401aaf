"""benchmarks/postprocess_revision.py: its table, the identical-label check, a real run against HEAD, its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from postprocess_revision import main, table, time_both  # noqa: E402


def test_table_gives_medians_t_slice_units_and_speed_up() -> None:
    text = table("TRIC", "f.tif", {"HEAD": [4.0, 6.0, 5.0], "working tree": [2.5, 2.4, 2.6]}, (90.0, 110.0))
    assert "t_slice = 100.0 ms (start 90.0, end 110.0)" in text
    assert "| HEAD | 5.00 | 50.0 | 4.00, 6.00, 5.00 | 1.00x |" in text
    assert "| working tree | 2.50 | 25.0 | 2.50, 2.40, 2.60 | 2.00x |" in text


def test_other_labels_or_dtype_fail_the_comparison() -> None:
    a = np.zeros((2, 3, 3), np.uint16)
    b = a.copy()
    b[0, 0, 0] = 1
    times = time_both({"old": lambda: a, "new": lambda: a.copy()}, rounds=2)
    assert [len(t) for t in times.values()] == [2, 2]
    with pytest.raises(AssertionError, match="new gave other labels than old"):
        time_both({"old": lambda: a, "new": lambda: b}, rounds=1)
    with pytest.raises(AssertionError, match="other labels"):
        time_both({"old": lambda: a, "new": lambda: a.astype(np.int32)}, rounds=1)


def test_against_head_on_a_generated_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from efficientcellseg.synth import generate

    ds = generate(profile="MDA231", out_root=tmp_path, seq="01", frames=1, seed=4, small=True)
    frame = Path(ds) / "01" / "t000.tif"
    assert main(["--dataset", "MDA231", "--frame", str(frame), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "identical labels" in out and "| HEAD |" in out and "| working tree |" in out


@pytest.mark.parametrize("args, needle", [
    (["--against", "no-such-revision-xyz"], "git cannot show"),
    (["--frame", "/no/such/t000.tif"], "no such frame"),
])
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main(["--dataset", "MDA231", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
