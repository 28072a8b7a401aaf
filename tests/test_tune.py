"""Post-processing tuning: grid search scored with SEG, written into the model folder with a new sha256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efficientcellseg.cli import main
from efficientcellseg.synth import generate
from efficientcellseg.tune import tune_postprocess
from efficientcellseg.weights import create_untrained_model_folder, load_model_folder, verify_model_folder


@pytest.fixture(scope="module")
def a549(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("A549-SIM", tmp_path_factory.mktemp("a549"), frames=2, seed=5)


def test_grid_search_scores_every_combination(a549: Path, tmp_path: Path) -> None:
    model = create_untrained_model_folder(tmp_path / "m", "A549-SIM", seed=1)
    grid = {"prob_threshold": (0.2, 0.5, 0.8)}
    r = tune_postprocess("A549-SIM", a549 / "01", model_dir=model, grid=grid, device="cpu")
    assert [p["prob_threshold"] for p, _ in r.trials] == [0.2, 0.5, 0.8]
    assert all(0.0 <= s <= 1.0 for _, s in r.trials)
    assert r.best_seg == max([r.current_seg] + [s for _, s in r.trials])
    assert r.frames == [0, 1] and r.n_objects == 2  # one cell per frame, full 3D GT


def test_cli_tune_write_updates_thresholds_and_checksums(a549: Path, tmp_path: Path) -> None:
    model = create_untrained_model_folder(tmp_path / "m", "A549-SIM", seed=1)
    before = verify_model_folder(model)
    rc = main(["tune", "--dataset", "A549-SIM", "--input", str(a549 / "01"), "--model", str(model),
               "--device", "cpu", "--write", "-q"])
    assert rc == 0
    after = verify_model_folder(model)  # SHA256SUMS was refreshed, so the folder still verifies
    assert after["weights.safetensors"] == before["weights.safetensors"]
    assert after["thresholds.json"] != before["thresholds.json"]
    th = json.loads((model / "thresholds.json").read_text())
    assert "prob_threshold" in th and "fill_holes" in th
    assert load_model_folder(model).thresholds == th
    assert "tuned" in (model / "MODEL_CARD.md").read_text()
