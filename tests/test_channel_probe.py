"""benchmarks/channel_probe.py: a one-network MDA231 folder split into one-output folders paired with the pair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from efficientcellseg.errors import ModelError
from efficientcellseg.weights import create_untrained_model_folder, load_model_folder, update_thresholds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _outputs(folder: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_model_folder(folder).net(x)


def test_each_output_keeps_its_values_and_the_pair_its_settings(tmp_path: Path) -> None:
    from channel_probe import channel_probe, main

    src = create_untrained_model_folder(tmp_path / "one" / "MDA231-seg", "MDA231", task="seg_centers", seed=3)
    pair = tmp_path / "pair"
    create_untrained_model_folder(pair / "MDA231-seg", "MDA231", task="seg", seed=1)
    create_untrained_model_folder(pair / "MDA231-centers", "MDA231", task="centers", seed=2)
    update_thresholds(pair / "MDA231-seg", {"prob_threshold": 0.4, "min_size": 300})
    update_thresholds(pair / "MDA231-centers", {"center_threshold": 0.1, "center_min_distance": 17})

    sets = channel_probe(src, tmp_path / "probe", pair)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    both = _outputs(src, x)
    assert torch.equal(_outputs(sets["heatmap"] / "MDA231-centers", x), both[:, 1:2])
    assert torch.equal(_outputs(sets["foreground"] / "MDA231-seg", x), both[:, 0:1])
    assert torch.equal(_outputs(sets["heatmap"] / "MDA231-seg", x), _outputs(pair / "MDA231-seg", x))
    assert torch.equal(_outputs(sets["foreground"] / "MDA231-centers", x), _outputs(pair / "MDA231-centers", x))
    assert json.loads((sets["heatmap"] / "MDA231-centers" / "config.json").read_text())["task"] == "centers"
    merged = json.loads((sets["onenet"] / "MDA231-seg" / "thresholds.json").read_text())
    assert merged == {"prob_threshold": 0.4, "min_size": 300, "center_threshold": 0.1, "center_min_distance": 17}
    assert not (sets["onenet"] / "MDA231-centers").exists()

    # a pair folder is not a one-network folder: one line, exit status 2, nothing written
    assert main(["--src", str(pair / "MDA231-seg"), "--out", str(tmp_path / "bad"), "--pair", str(pair)]) == 2
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ModelError, match="config.json missing"):
        channel_probe(tmp_path / "nowhere", tmp_path / "bad", pair)
