"""benchmarks/gpu_check.sh in its CPU dry run: every step runs tiny and the JSON and Markdown reports are written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DEVICE_WHEELS": str(tmp_path / "no-wheels"), "GPU_CHECK_DRY_RUN": "1"}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["dry_run"] is True and data["passed"] is True
    assert set(data["steps"]) == {"env", "correctness", "network", "end_to_end", "training"}
    assert all("error" not in s for s in data["steps"].values())
    rows = data["steps"]["correctness"]["result"]["rows"]
    assert {r["dataset"] for r in rows} == {"MDA231", "TRIC", "A549-SIM"} and all(r["iou"] >= 0.99 for r in rows)
    assert {r["dataset"] for r in data["steps"]["end_to_end"]["result"]["rows"]} == {"MDA231", "TRIC"}
    training = data["steps"]["training"]["result"]["rows"]
    assert all(r["steps_per_s"] > 0 for r in training)
    assert training[0]["precision"] == "data (1 CPU thread)" and training[1]["precision"] == "fp32"
    assert data["t_slice_ms"]["start"] > 0 and data["t_slice_ms"]["end"] > 0
    md = (out / "gpu_check.md").read_text()
    assert "dry run on the CPU (not a GPU result)" in md and "| MDA231 | 0 |" in md and "steps/s" in md
    assert "torch None" not in md  # the environment line is filled in
