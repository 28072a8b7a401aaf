"""Weight-space blend of two model folders (efficientcellseg.blend, `efficientcellseg blend`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from efficientcellseg.blend import blend_model_folders
from efficientcellseg.cli import main
from efficientcellseg.errors import ModelError
from efficientcellseg.weights import (create_untrained_model_folder, load_model_folder, update_thresholds,
                                      verify_model_folder)

SMALL = (16, 8, 8, 8)  # a small decoder keeps the folders quick to write


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blend")
    base = create_untrained_model_folder(root / "base", "A549-SIM", seed=1, decoder_channels=SMALL)
    tuned = create_untrained_model_folder(root / "tuned", "A549-SIM", seed=2, decoder_channels=SMALL)
    update_thresholds(base, {"prob_threshold": 0.7})
    update_thresholds(tuned, {"prob_threshold": 0.2})
    return base, tuned


def _floats(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_model_folder(folder).net.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_blend_is_the_weighted_mean(pair: tuple[Path, Path], tmp_path: Path, alpha: float) -> None:
    base, tuned = pair
    out = blend_model_folders(base, tuned, alpha, tmp_path / "mix")
    verify_model_folder(out)
    b, t, m = _floats(base), _floats(tuned), _floats(out)
    assert b.keys() == m.keys()
    differ = 0
    for k in b:
        want = ((1 - alpha) * b[k] + alpha * t[k]).half().float()
        assert torch.allclose(m[k], want, rtol=2e-3, atol=1e-4), k
        differ += int(not torch.equal(b[k], t[k]))
    assert differ > 10  # the two seeds give different networks, so the check above means something


def test_blend_keeps_the_base_settings_and_records_both(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, tuned = pair
    out = blend_model_folders(base, tuned, 0.5, tmp_path / "mix")
    config = json.loads((out / "config.json").read_text())
    record = config["training"]["blend"]
    assert record["alpha"] == 0.5
    assert record["base_weights_sha256"] == verify_model_folder(base)["weights.safetensors"]
    assert record["tuned_weights_sha256"] == verify_model_folder(tuned)["weights.safetensors"]
    assert config["name"] == "mix" and config["dataset"] == "A549-SIM"
    assert json.loads((out / "thresholds.json").read_text())["prob_threshold"] == 0.7
    assert "## Weight-space blend" in (out / "MODEL_CARD.md").read_text()


def test_a_blend_of_a_blend_keeps_the_earlier_record(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Fine-tuning a shipped blend and blending again must not lose how the shipped weights were made."""
    base, tuned = pair
    first = blend_model_folders(base, tuned, 1.0, tmp_path / "first")
    second = blend_model_folders(first, base, 0.5, tmp_path / "second")
    record = json.loads((second / "config.json").read_text())["training"]["blend"]
    assert record["base"] == str(first) and record["alpha"] == 0.5
    assert record["base_blend"]["tuned"] == str(tuned) and record["base_blend"]["alpha"] == 1.0
    assert "base_blend" not in record["base_blend"]  # the first blend's base was a plain training


def test_blend_refuses_other_networks_and_bad_alpha(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = pair
    other = create_untrained_model_folder(tmp_path / "other", "TRIC", seed=1, decoder_channels=SMALL)
    with pytest.raises(ModelError, match="dataset"):
        blend_model_folders(base, other, 0.5, tmp_path / "mix")
    with pytest.raises(ValueError, match="alpha"):
        blend_model_folders(base, base, 1.5, tmp_path / "mix")
    with pytest.raises(ValueError, match="new folder"):
        blend_model_folders(base, other, 0.5, base)
    assert main(["blend", str(base), str(base), "--alpha", "2", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert not (tmp_path / "x").exists()
    before = verify_model_folder(base)
    assert main(["blend", str(base), str(base), "--alpha", "0.5", "--out", str(base), "-q"]) == 2
    assert verify_model_folder(base) == before  # the input folder was not written


def test_blend_command_writes_a_loadable_folder(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, tuned = pair
    assert main(["blend", str(base), str(tuned), "--alpha", "0.5", "--out", str(tmp_path / "cli"), "-q"]) == 0
    net = load_model_folder(tmp_path / "cli").net
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 64, 64))
    assert y.shape[-2:] == (64, 64) and torch.isfinite(y).all()
