"""benchmarks/int8_agreement.py: the foreground IoU it reports, its table and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from int8_agreement import foreground_iou, format_table, main  # noqa: E402


def test_foreground_iou_ignores_label_values() -> None:
    a = np.zeros((2, 4, 4), np.uint16)
    b = np.zeros_like(a)
    assert foreground_iou(a, b) == 1.0  # both empty
    a[0, :2, :2] = 1
    a[1, :2, :2] = 7
    b[0, :2, :2] = 3  # same voxels, other labels
    b[1, :2, :3] = 3  # two more voxels
    assert foreground_iou(a, b) == pytest.approx(8 / 10)


def test_table_flags_datasets_below_the_target() -> None:
    rows = [{"tag": "A-fixed", "dataset": "MDA231", "seq": "s", "t": 0, "iou": 0.995, "objects_fp32": 5,
             "objects_int8": 5, "seg_fp32": 0.8, "seg_int8": 0.79, "network_iou": 0.9712},
            {"tag": "B-dim", "dataset": "TRIC", "seq": "s2", "t": 0, "iou": 0.98, "objects_fp32": 9,
             "objects_int8": 8, "seg_fp32": None, "seg_int8": None}]
    text = format_table(rows)
    assert "| MDA231 | A-fixed | `s` | 0 | 0.9950 | 5 / 5 | 0.800 / 0.790 | 0.971 |" in text
    assert "| TRIC | B-dim | `s2` | 0 | 0.9800 | 9 / 8 | - / - | - |" in text  # no recorded self-check
    assert text.endswith("MDA231 0.9950, TRIC 0.9800 (NOT met)")


def test_bad_sequence_argument_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seq", f"A-fixed:HeLa:{tmp_path}"]) == 2
    assert main(["--seq", f"A-fixed:TRIC:{tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "HeLa" in err[0] and "missing" in err[1]
