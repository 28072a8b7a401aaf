"""The diagnosis figures' shared command line (benchmarks/figure_cli.py) and the gate figure end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gate_figure  # noqa: E402
from figure_cli import figure_rows  # noqa: E402

from efficientcellseg.synth import generate  # noqa: E402


def test_figure_rows_names_a_malformed_seq(capsys) -> None:
    with pytest.raises(SystemExit):
        figure_rows("doc", lambda *a: {}, ["--seq", "runs/x/01", "--out", "x.png"])
    assert "--seq 'runs/x/01': give DATASET:PATH" in capsys.readouterr().err


def test_gate_figure_on_a_generated_frame(tmp_path, capsys) -> None:
    """Shipped A549-SIM folder (it has a gate): one PNG and one table row with both IoUs of the frame."""
    ds = generate("A549-SIM", tmp_path / "data", frames=1, seed=41)
    out = tmp_path / "fig" / "gate.png"
    assert gate_figure.main(["--seq", f"A549-SIM:{ds / '01'}", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 10_000
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "A549-SIM" and row[3].strip() == "0.4"
    off, on = float(row[4]), float(row[5])
    assert 0.5 < off <= 1 and 0.5 < on <= 1  # the shipped model finds the in-distribution cell either way
