"""benchmarks/speed.py: the report's ratios (no timing here; speed is shown by running the benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from speed import between_text, network_split, report  # noqa: E402


def _serial_row(wall: float, network: float) -> dict:
    return {"profile": "TRIC", "shape": [13, 2454, 1693], "trained_models": True, "backend": "auto",
            "precision": "auto", "passes": 156, "peak_rss_mib": 1700.0, "gpu_peak_mib": None,
            "serial_median": {"wall_s": wall, "read": 0.1, "denoise": 0.8, "pseudocolor": 2.8, "network": network,
                              "postprocess": 5.3, "write": 0.3}}


def test_network_split_separates_the_network_from_the_other_stages() -> None:
    # 156 passes of 0.18 s against a t_slice of 0.15 s; the frame adds 9 s to its network stage
    net, frame = network_split({"wall_s": 37.08, "network": 28.08}, 156, 0.15)
    assert (net, frame) == ("1.20", "1.32")
    assert network_split({"wall_s": 1.0}, 156, 0.15) == ("-", "-")  # e.g. an empty frame: no network stage


def test_report_rows_have_every_column_and_the_verdict() -> None:
    t_slice = {"start": {"median_ms": 140.0}, "end": {"median_ms": 160.0},
               "between": [{"after": "TRIC", "median_ms": 175.0}]}
    text = report({"cpu": "test"}, t_slice, [], [_serial_row(37.08, 28.08), {"profile": "MDA231", "error": "boom"}],
                  [], None, None, "cmd")
    assert "drift +14.3 %; between profiles: 175.0 ms (after TRIC)" in text
    header = next(line for line in text.splitlines() if line.startswith("| profile | frame |"))
    rows = [line for line in text.splitlines() if line.startswith(("| TRIC | 13x", "| MDA231 | error"))]
    assert len(rows) == 2
    assert all(r.count("|") == header.count("|") for r in rows)  # the error row is as wide as the header
    # t_slice = 0.15 s: 37.08 / (156 x 0.15) = 1.58 > 1.15; network 28.08 / 156 / 0.15 = 1.20; 37.08 / 28.08 = 1.32
    assert "| 1.58 (target <= 1.15: NOT met) | 1.20 | 1.32 |" in rows[0]
    assert between_text([]) == ""
