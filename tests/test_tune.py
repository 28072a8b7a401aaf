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


def test_mda231_tune_reuses_the_watershed_with_the_same_scores(tmp_path: Path) -> None:
    """tune caches the centre watershed while only the end-slice settings change; every trial must score
    exactly as the plain post-processing with that parameter set (shipped models, one generated frame)."""
    from evaluation.ctc_seg import list_gt_files, read_gt

    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.infer import build_segmenter
    from efficientcellseg.postprocess import postprocess
    from efficientcellseg.tune import seg_of_labels

    ds = generate("MDA231", tmp_path, frames=1, seed=31)
    grid = {"prob_threshold": (0.5, 0.7), "end_threshold": (0.0, 0.9), "end_fraction": (0.5, 0.9)}
    r = tune_postprocess("MDA231", ds / "01", grid=grid, device="cpu")
    assert len(r.trials) == 8
    seg = build_segmenter("MDA231", device="cpu")
    probs = seg.probabilities(read_frame(list_frames(ds / "01")[0].path), all_slices=True)
    gts = list_gt_files(ds / "01_GT" / "SEG")
    arrays = [read_gt(g) for g in gts]
    scores = []
    for params, s in r.trials:
        labels = postprocess("centers_watershed", probs["seg"], params, centers=probs["centers"],
                             signal=probs["signal"])  # the shipped folder gates on the raw signal
        assert s == pytest.approx(seg_of_labels({0: labels}, gts, arrays), abs=1e-12)
        scores.append(s)
    assert len(set(scores)) > 1  # the end-slice settings change the result on this frame
    with pytest.raises(ValueError, match=r"unknown centers_watershed parameter\(s\) \['nope'\]"):
        tune_postprocess("MDA231", ds / "01", grid={"nope": (1,)}, device="cpu")
