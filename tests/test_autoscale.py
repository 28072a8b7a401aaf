"""predict --scale auto: the scale at which the network is least undecided, relative to the model's reference."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from efficientcellseg.autoscale import (
    CANDIDATES,
    SLICES,
    ambiguity,
    least_ambiguous,
    probe_window,
    relative_scale,
)
from efficientcellseg.errors import ModelError
from efficientcellseg.infer import build_segmenter, frame_scale, sequence_scale
from efficientcellseg.weights import create_untrained_model_folder, default_models_dir, update_config


def test_ambiguity_counts_undecided_and_foreground_pixels() -> None:
    p = np.array([[0.0, 0.1, 0.3, 0.5], [0.6, 0.79, 0.81, 1.0]], np.float32)
    assert ambiguity(p) == (4, 4)  # 0.3 0.5 0.6 0.79 undecided; 0.6 0.79 0.81 1.0 above 0.5
    assert ambiguity(np.zeros((3, 4))) == (0, 0)


def test_probe_window_takes_the_bright_region_and_the_slices_with_objects() -> None:
    raw = np.full((9, 900, 1000), 10, np.uint16)
    raw[:, 700:800, 850:950] = 12  # faint everywhere in z
    for z in (2, 6, 7):
        raw[z, 650:880, 800:990:3] = 500  # striped objects in three slices, bottom right
    win = probe_window(raw, size=300, slices=3)
    assert win.shape == (3, 300, 300)
    assert (win == 500).sum() == (raw[[2, 6, 7]] == 500).sum()  # the whole bright region is inside
    small = np.arange(2 * 50 * 60, dtype=np.uint16).reshape(2, 50, 60)
    assert np.array_equal(probe_window(small), small)  # a small frame is used whole
    assert probe_window(np.zeros((SLICES + 4, 20, 20), np.uint8)).shape == (SLICES, 20, 20)
    with pytest.raises(ValueError, match="Z, Y, X"):
        probe_window(np.zeros((20, 20)))


def test_least_ambiguous_picks_the_sharpest_scale() -> None:
    """A fake network that is sharpest at 1.6 and blurrier the further the scale is from it."""
    def prob_at(w: np.ndarray, s: float) -> np.ndarray:
        edge = 1 + 6 * abs(np.log(s / 1.6))
        x = np.linspace(-20, 20, w.shape[-1])
        return np.broadcast_to(1 / (1 + np.exp(-x / edge)), w.shape)

    best, ratios = least_ambiguous(prob_at, [np.zeros((2, 8, 64))])
    assert best == 1.6 and set(ratios) == set(CANDIDATES)
    assert ratios[1.6] == min(ratios.values()) and ratios[0.64] > ratios[1.0] > ratios[1.6]
    best, ratios = least_ambiguous(lambda w, s: np.zeros(w.shape), [np.zeros((1, 4, 4))])
    assert best == 1.0 and all(r == float("inf") for r in ratios.values())  # nothing found: no change
    with pytest.raises(ValueError, match="no frames"):
        least_ambiguous(prob_at, [])


def test_relative_scale() -> None:
    assert relative_scale(2.0, 1.25) == 1.6
    assert relative_scale(1.25, 1.25) == 1.0
    assert relative_scale(2.5, 0.5) == 4.0 and relative_scale(0.64, 4.0) == 0.25  # kept within 0.25-4
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="reference"):
            relative_scale(1.0, bad)


def test_frame_scale_needs_the_model_reference_and_honours_its_minimum(tmp_path: Path) -> None:
    from dataclasses import replace

    folder = create_untrained_model_folder(tmp_path / "TRIC-seg", "TRIC", seed=1)
    raw = np.random.default_rng(3).integers(0, 255, (3, 60, 70), dtype=np.uint8)
    update_config(folder, {"autoscale": {"reference": 0.64, "min": 1.0}})
    seg = build_segmenter("TRIC", model_dir=folder, device="cpu")
    assert seg.autoscale == {"reference": 0.64, "min": 1.0}
    with pytest.raises(ModelError, match="autoscale.reference"):
        frame_scale(replace(seg, autoscale=None), raw)
    s = frame_scale(seg, raw)
    assert s in {round(c / 0.64, 3) for c in CANDIDATES} | {1.0, 4.0} and s >= 1.0
    assert "autoscale" in seg.timer.seconds


def test_sequence_scale_is_one_for_datasets_resized_whole(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert sequence_scale("MDA231", []) == 1.0
    assert "tiled datasets" in caplog.text


def test_shipped_tric_model_undoes_a_magnification(tmp_path: Path) -> None:
    """The shipped TRIC network with its reference: scale 1 for a frame like its training data, > 1 for the
    same frame with nuclei 0.6x as wide (measured 1.6; docs/generalization.md, twenty-first session)."""
    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.preprocess import rescale_frame
    from efficientcellseg.synth import generate

    seq = generate(profile="TRIC", out_root=tmp_path, seq="01", frames=1, seed=12, small=True) / "01"
    raw = read_frame(list_frames(seq)[0].path)
    seg = build_segmenter("TRIC", model_dir=default_models_dir() / "TRIC-seg", device="cpu")
    assert seg.autoscale is not None and seg.autoscale["reference"] > 0
    assert frame_scale(seg, raw) == 1.0
    assert frame_scale(seg, rescale_frame(raw, 0.6)) >= 1.25


def test_predict_sequence_auto_builds_the_network_once_and_matches_the_given_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """--scale auto measures with the network that then segments (one runner built, not two), and its masks are
    those of the same run with the chosen scale given explicitly."""
    import re

    import tifffile

    from efficientcellseg import infer

    folder = create_untrained_model_folder(tmp_path / "TRIC-seg", "TRIC", seed=1)
    update_config(folder, {"autoscale": {"reference": 0.8}})
    seq = tmp_path / "data" / "01"
    seq.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for t in range(2):
        tifffile.imwrite(seq / f"t{t:03d}.tif", rng.integers(0, 255, (3, 60, 70), dtype=np.uint8),
                         photometric="minisblack")
    built = []
    real = infer.make_runner
    monkeypatch.setattr(infer, "make_runner", lambda *a, **k: built.append(1) or real(*a, **k))
    with caplog.at_level(logging.INFO):
        infer.predict_sequence("TRIC", seq, tmp_path / "auto", model_dir=folder, device="cpu", scale="auto")
    assert len(built) == 1
    chosen = float(re.search(r"--scale auto: ([0-9.]+)", caplog.text).group(1))
    infer.predict_sequence("TRIC", seq, tmp_path / "given", model_dir=folder, device="cpu", scale=chosen)
    for t in range(2):
        a = tifffile.imread(tmp_path / "auto" / f"mask{t:03d}.tif")
        assert np.array_equal(a, tifffile.imread(tmp_path / "given" / f"mask{t:03d}.tif")) and a.shape == (3, 60, 70)
