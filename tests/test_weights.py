"""Model folders: round trip, sha256 verification, no pickle, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from efficientcellseg.errors import ModelError
from efficientcellseg.model import EfficientCellSeg
from efficientcellseg.weights import (
    create_untrained_model_folder,
    load_model_folder,
    save_model_folder,
    verify_model_folder,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return create_untrained_model_folder(tmp_path_factory.mktemp("m") / "TRIC-seg", "TRIC", seed=3)


def test_round_trip_reproduces_outputs(folder) -> None:
    torch.manual_seed(3)
    ref = EfficientCellSeg().eval()
    loaded = load_model_folder(folder)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(ref(x), loaded.net(x), atol=1e-6)
    cfg = loaded.config
    assert cfg["architecture"] == {"class": "EfficientCellSeg",
                                   "kwargs": {"decoder_channels": [64, 48, 32, 16], "out_channels": 1}}
    assert cfg["n_params"] == 6_628_809 and cfg["dataset"] == "TRIC"


def test_fp16_folder_loads_as_fp32(tmp_path) -> None:
    torch.manual_seed(0)
    net = EfficientCellSeg().eval()
    save_model_folder(tmp_path / "m", net, {"dataset": "A549-SIM", "task": "seg"}, {"prob_threshold": 0.4})
    loaded = load_model_folder(tmp_path / "m")
    assert loaded.config["weights_dtype"] == "float16"
    assert loaded.thresholds == {"prob_threshold": 0.4}
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    w = loaded.net.encoder.conv_stem.weight
    assert torch.allclose(w, net.encoder.conv_stem.weight, atol=1e-3)


def test_weights_file_is_safetensors_not_pickle(folder) -> None:
    raw = (folder / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert "encoder.conv_stem.weight" in header
    assert b"\x80\x04" not in raw[:2]  # not a pickle stream


def test_sha256_mismatch_is_reported_with_file_name(tmp_path, folder) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    with open(bad / "weights.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match=r"weights\.safetensors: sha256 mismatch \(expected [0-9a-f]{16}"):
        verify_model_folder(bad)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model_folder(bad)


def test_missing_files_and_non_model_folder(tmp_path, folder) -> None:
    import shutil

    with pytest.raises(ModelError, match="not a model folder"):
        load_model_folder(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "thresholds.json").unlink()
    with pytest.raises(ModelError, match=r"thresholds\.json: missing"):
        verify_model_folder(broken)
    (broken / "SHA256SUMS").unlink()
    with pytest.raises(ModelError, match="SHA256SUMS: missing"):
        verify_model_folder(broken)


def test_update_thresholds_refreshes_sums_and_replaces_the_tuned_card_section(tmp_path) -> None:
    from efficientcellseg.weights import CARD, update_thresholds

    f = create_untrained_model_folder(tmp_path / "TRIC-seg", "TRIC", seed=1)
    intro = (f / CARD).read_text()
    update_thresholds(f, {"min_distance": 3}, note="first tuning")
    update_thresholds(f, {"min_distance": 5}, note="second tuning")
    verify_model_folder(f)  # sha256 of the new thresholds.json recorded
    assert load_model_folder(f).thresholds["min_distance"] == 5
    card = (f / CARD).read_text()
    assert card.startswith(intro.rstrip("\n")) and card.count("(tuned)") == 1
    assert "second tuning" in card and "first tuning" not in card and "`min_distance`: 5" in card


def test_card_sections_are_replaced_in_place_and_keep_what_follows() -> None:
    """One mechanism for the rewritable card sections: replacing one keeps the sections after it."""
    from efficientcellseg.weights import INPUT_HEADING, TUNED_HEADING, _with_card_section

    card = f"# m\n\nintro\n\n{TUNED_HEADING}\n\n- `a`: 1\n\n## Notes\n\nkeep me\n"
    tuned = _with_card_section(card, TUNED_HEADING, "- `a`: 2\n")
    assert tuned == f"# m\n\nintro\n\n{TUNED_HEADING}\n\n- `a`: 2\n\n## Notes\n\nkeep me\n"
    with_input = _with_card_section(tuned, INPUT_HEADING, "smoothing")
    assert with_input.index(INPUT_HEADING) < with_input.index(TUNED_HEADING) < with_input.index("keep me")
    assert _with_card_section(with_input, INPUT_HEADING, "smoothing") == with_input  # idempotent
    assert _with_card_section("# m\n", TUNED_HEADING, "x") == f"# m\n\n{TUNED_HEADING}\n\nx\n"
