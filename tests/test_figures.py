"""The figures' shared command line (benchmarks/figure_cli.py), the gate figure and the results figure end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gate_figure  # noqa: E402
import numpy as np  # noqa: E402
import results_figure  # noqa: E402
from figure_cli import figure_rows  # noqa: E402

from efficientcellseg.synth import generate  # noqa: E402


def test_figure_rows_names_a_malformed_seq(capsys) -> None:
    with pytest.raises(SystemExit):
        figure_rows("doc", lambda *a: {}, ["--seq", "runs/x/01", "--out", "x.png"])
    assert "--seq 'runs/x/01': give DATASET:PATH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def a549_seq(tmp_path_factory) -> Path:
    """One generated A549-SIM frame with full-volume truth (seed 41), shared by the figure tests."""
    return generate("A549-SIM", tmp_path_factory.mktemp("data"), frames=1, seed=41) / "01"


def test_gate_figure_on_a_generated_frame(a549_seq, tmp_path, capsys) -> None:
    """Shipped A549-SIM folder (it has a gate): one PNG and one table row with both IoUs of the frame."""
    out = tmp_path / "fig" / "gate.png"
    assert gate_figure.main(["--seq", f"A549-SIM:{a549_seq}", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 10_000
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "A549-SIM" and row[3].strip() == "0.4"
    off, on = float(row[4]), float(row[5])
    assert 0.5 < off <= 1 and 0.5 < on <= 1  # the shipped model finds the in-distribution cell either way


def test_results_figure_on_a_generated_frame(a549_seq, tmp_path, capsys) -> None:
    """Shipped models and the classical baseline on the same annotated slice: one PNG and one table row whose SEG
    values are those of the slice (both find the in-distribution cell)."""
    out = tmp_path / "fig" / "results.png"
    assert results_figure.main(["--seq", f"A549-SIM:{a549_seq}", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 10_000
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "A549-SIM" and row[4].strip() == "1"
    assert 0.7 < float(row[5]) <= 1 and 0.5 < float(row[6]) <= 1


def test_results_figure_crops_dense_slices_only() -> None:
    """A slice with few objects is shown whole; a dense one as a window inside the slice around its objects."""
    sparse = np.zeros((300, 400), np.uint16)
    sparse[10:20, 10:20], sparse[280:290, 380:390] = 1, 2
    assert results_figure.crop_box(sparse) == (slice(None), slice(None))
    dense = np.zeros((300, 400), np.uint16)
    for k in range(results_figure.DENSE + 1):
        dense[250 + (k % 5) * 8: 254 + (k % 5) * 8, 300 + (k // 5) * 12: 304 + (k // 5) * 12] = k + 1
    ys, xs = results_figure.crop_box(dense)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (results_figure.WINDOW, results_figure.WINDOW)
    assert ys.stop <= 300 and xs.stop <= 400  # kept inside the slice although the objects sit near its corner
    assert dense[ys, xs].astype(bool).sum() == dense.astype(bool).sum()
