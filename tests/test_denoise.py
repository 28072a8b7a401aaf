"""Noise-adaptive input smoothing: the noise estimate, the sigma rule, dtype handling, and how a model folder's
``denoise`` setting reaches inference and int8 calibration."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from efficientcellseg.datasets import get_dataset
from efficientcellseg.denoise import (DenoiseSettings, adaptive_sigma, ceiling, ceiling_value, denoise_frame,
                                      noise_ratio, noise_std, smooth_stack, subtract_background)
from efficientcellseg.errors import ModelError
from efficientcellseg.infer import build_segmenter, network_inputs, predict_slices
from efficientcellseg.pseudocolor import pseudocolor_stack
from efficientcellseg.weights import create_untrained_model_folder, update_config, verify_model_folder


def _cell_frame(noise: float, seed: int = 0, shape: tuple[int, int, int] = (4, 96, 96)) -> np.ndarray:
    """A bright disc (signal 1000 over background 2000) with white Gaussian noise of std ``noise``, as uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    disc = ((yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 < (shape[1] / 4) ** 2) * 1000.0
    frame = 2000.0 + disc[None] + rng.normal(0, noise, shape)
    return np.clip(np.rint(frame), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("noise", [5.0, 40.0, 200.0])
def test_noise_std_recovers_white_noise(noise) -> None:
    """The MAD estimate of neighbour differences is the noise std within 5%, edges of a cell notwithstanding."""
    assert noise_std(_cell_frame(noise)) == pytest.approx(noise, rel=0.05)


def test_sigma_is_zero_for_clean_frames_and_grows_with_noise() -> None:
    s = DenoiseSettings(target_ratio=0.05, max_sigma=3.0)
    clean, noisy, noisier = (_cell_frame(n) for n in (10.0, 150.0, 300.0))
    assert noise_ratio(clean) < 0.05 and adaptive_sigma(clean, s) == 0.0
    assert 0.5 < adaptive_sigma(noisy, s) < adaptive_sigma(noisier, s) < 3.0
    assert adaptive_sigma(noisier, DenoiseSettings(0.05, max_sigma=1.0)) == 1.0  # capped
    assert denoise_frame(clean, s) is clean and denoise_frame(noisy, None) is noisy


def test_frames_in_the_trained_noise_range_are_not_smoothed() -> None:
    """``min_ratio``: a frame between the target and ``min_ratio`` stays as it is; a noisier one is smoothed to
    the target exactly as without ``min_ratio``."""
    noisy, noisier = _cell_frame(150.0), _cell_frame(300.0)
    plain = DenoiseSettings(target_ratio=0.05)
    ranged = DenoiseSettings(target_ratio=0.05, min_ratio=(noise_ratio(noisy) + noise_ratio(noisier)) / 2)
    assert adaptive_sigma(noisy, plain) > 0.5 and adaptive_sigma(noisy, ranged) == 0.0
    assert denoise_frame(noisy, ranged) is noisy
    assert adaptive_sigma(noisier, ranged) == adaptive_sigma(noisier, plain) > 1.0
    assert DenoiseSettings.from_config({"denoise": ranged.to_config()}) == ranged
    assert "min_ratio" not in plain.to_config() and ranged.key() != plain.key()
    with pytest.raises(ValueError, match="min_ratio"):
        DenoiseSettings(0.05, min_ratio=-0.1)


def test_smoothing_keeps_integer_dtype_lowers_noise_and_leaves_the_input_alone() -> None:
    frame = _cell_frame(150.0)
    before = frame.copy()
    out = smooth_stack(frame, 2.0)
    assert out.dtype == np.uint16 and out.shape == frame.shape
    np.testing.assert_array_equal(frame, before)
    assert noise_std(out) < noise_std(frame) / 4
    assert smooth_stack(frame.astype(np.float64), 1.0).dtype == np.float32


def test_settings_round_trip_and_reject_bad_values() -> None:
    s = DenoiseSettings(0.04, 2.5)
    assert DenoiseSettings.from_config({"denoise": s.to_config()}) == s
    assert DenoiseSettings.from_config({}) is None
    with pytest.raises(ValueError, match="target_ratio"):
        DenoiseSettings(0.0)
    flat = DenoiseSettings(0.03, 3.0, background_radius=12.0)
    assert flat.to_config()["background_radius"] == 12.0 and "background_radius" not in s.to_config()
    assert DenoiseSettings.from_config({"denoise": flat.to_config()}) == flat and flat.key() != s.key()
    with pytest.raises(ValueError, match="background_radius"):
        DenoiseSettings(0.03, background_radius=-1.0)
    # a key this version does not know (e.g. the Gaussian background_sigma of an older experiment) is refused,
    # not silently ignored
    with pytest.raises(ValueError, match="background_sigma"):
        DenoiseSettings.from_config({"denoise": {"target_ratio": 0.03, "background_sigma": 25.0}})


def _hazy_nuclei(seed: int = 0) -> np.ndarray:
    """uint8 frame: a bright haze (a wide Gaussian hump up to 200) with small nuclei 20 grey levels above it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :160]
    haze = 40.0 + 160.0 * np.exp(-((yy - 64) ** 2 + (xx - 80) ** 2) / (2 * 45.0 ** 2))
    nuclei = np.zeros_like(haze)
    for cy, cx in ((30, 30), (64, 80), (100, 130), (40, 120)):
        nuclei[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = 20.0
    frame = haze[None] + nuclei[None] + rng.normal(0, 1.0, (3, 128, 160))
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def test_background_removal_flattens_haze_keeps_dtype_and_uses_the_range() -> None:
    """Nuclei on a haze that spans most of the uint8 range: in the raw frame a nucleus at the rim is darker than
    the background at the centre; after removal one global level separates every nucleus from the background.
    The dtype is kept and the largest value is the frame's maximum."""
    frame = _hazy_nuclei()
    before = frame.copy()
    flat = subtract_background(frame, 12.0)
    np.testing.assert_array_equal(frame, before)
    assert flat.dtype == np.uint8 and flat.shape == frame.shape and flat.max() == frame.max()
    def centre_bg_and_rim_nucleus(a: np.ndarray) -> tuple[float, float]:
        return float(np.median(a[:, 56:72, 56:64])), float(a[:, 30, 30].min())

    bg, nucleus = centre_bg_and_rim_nucleus(frame)
    assert nucleus < bg  # raw: no global threshold can work
    bg, nucleus = centre_bg_and_rim_nucleus(flat)
    assert nucleus > 2 * bg and flat[:, 64, 80].min() > 2 * bg
    assert subtract_background(frame.astype(np.float64), 12.0).dtype == np.float32
    np.testing.assert_array_equal(subtract_background(frame, 0.0), frame)


def _nucleus_sheet(first: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """A 120 x 120 TRIC-like sheet: nuclei of radius 4 px on a grid from ``first`` to 109, ``step`` px apart.
    Returns the coordinate grids ``yy``, ``xx``, the nucleus mask and the centres."""
    yy, xx = np.mgrid[:120, :120]
    nuclei = np.zeros((120, 120), bool)
    centres = [(cy, cx) for cy in range(first, 110, step) for cx in range(first, 110, step)]
    for cy, cx in centres:
        nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 < 16
    return yy, xx, nuclei, centres


def test_background_removal_keeps_densely_packed_nuclei() -> None:
    """Nuclei of radius 4 px packed 10 px apart on a flat background of 30 (a TRIC-like sheet): the opening with a
    12 px disk sits on the gaps, so every nucleus keeps its contrast; an in-plane Gaussian mean of the same
    width would sit halfway up the nuclei and take most of it away."""
    yy, xx, nuclei, centres = _nucleus_sheet(15, 10)
    frame = np.where(nuclei, 130, 30).astype(np.uint8)[None]
    flat = subtract_background(frame, 12.0)[0].astype(float)
    inside = [flat[cy, cx] for cy, cx in centres]
    assert min(inside) > 0.8 * flat.max()  # no nucleus lost its brightness, in the packed middle neither
    assert np.median(flat[~nuclei & (np.abs(yy - 60) < 40) & (np.abs(xx - 60) < 40)]) < 0.15 * flat.max()


def test_denoise_frame_removes_the_background_before_measuring_noise() -> None:
    frame = _hazy_nuclei()
    s = DenoiseSettings(0.5, background_radius=12.0)  # a target so high that nothing is smoothed
    np.testing.assert_array_equal(denoise_frame(frame, s), subtract_background(frame, 12.0))
    # the calibration inputs are made from the same flattened frame as inference's
    cfg = get_dataset("TRIC")
    got = list(network_inputs(frame, cfg, n=3, denoise=s))
    want = list(network_inputs(subtract_background(frame, 12.0), cfg, n=3))
    assert len(got) == 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_noisy_frame_is_smoothed_before_its_background_is_removed() -> None:
    """Dim nuclei (25 grey levels over 30) under noise of 12: an opening of the noisy slice follows the noise
    minima, so a top-hat taken first and smoothed after leaves the gaps at ~60% of the nuclei; smoothing first
    and then taking the top-hat leaves them near 0. The noise is measured on the flattened raw frame."""
    rng = np.random.default_rng(0)
    nuclei = _nucleus_sheet(12, 12)[2]
    frame = np.clip(np.rint(30 + 25 * nuclei[None] + rng.normal(0, 12, (3, 120, 120))), 0, 255).astype(np.uint8)
    before = frame.copy()
    s = DenoiseSettings(0.03, 3.0, background_radius=8.0)
    sigma = adaptive_sigma(subtract_background(frame, 8.0), s)
    assert sigma > 1.0
    got = denoise_frame(frame, s)
    np.testing.assert_array_equal(got, subtract_background(smooth_stack(frame, sigma), 8.0))
    np.testing.assert_array_equal(frame, before)  # the input is not touched
    gaps = cv2.dilate(nuclei.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    old = smooth_stack(subtract_background(frame, 8.0), sigma).astype(float)
    new = got.astype(float)
    assert np.median(old[:, gaps]) > 0.4 * np.median(old[:, nuclei])  # what the old order gave
    assert np.median(new[:, gaps]) < 0.15 * np.median(new[:, nuclei])
    # the calibration windows are the same frame
    cfg = get_dataset("TRIC")
    for g, w in zip(network_inputs(frame, cfg, n=3, denoise=s), network_inputs(got, cfg, n=3), strict=True):
        np.testing.assert_array_equal(g, w)


def _folder_with_denoise(tmp_path, target: float | None):
    folder = create_untrained_model_folder(tmp_path / f"A549-SIM-seg-{target}", "A549-SIM", seed=1)
    update_config(folder, {"denoise": None if target is None else {"target_ratio": target, "max_sigma": 3.0}})
    verify_model_folder(folder)  # the sums were refreshed
    return folder


def test_model_config_switches_smoothing_on_inference(tmp_path) -> None:
    off = build_segmenter("A549-SIM", _folder_with_denoise(tmp_path, None), backend="torch")
    on = build_segmenter("A549-SIM", _folder_with_denoise(tmp_path, 0.02), backend="torch")
    assert off.denoise is None and on.denoise == DenoiseSettings(0.02, 3.0)
    noisy = _cell_frame(150.0, shape=(3, 64, 64))
    assert not np.allclose(off.probabilities(noisy)["seg"], on.probabilities(noisy)["seg"])


def test_no_denoise_feeds_the_paper_input(tmp_path) -> None:
    """``denoise=False`` (predict --no-denoise) ignores the folder's setting: same probabilities as without it."""
    off = build_segmenter("A549-SIM", _folder_with_denoise(tmp_path, None), backend="torch")
    forced = build_segmenter("A549-SIM", _folder_with_denoise(tmp_path, 0.02), backend="torch", denoise=False)
    assert forced.denoise is None
    noisy = _cell_frame(150.0, shape=(3, 64, 64))
    np.testing.assert_array_equal(off.probabilities(noisy)["seg"], forced.probabilities(noisy)["seg"])


def _mda231_pair(root, seg_denoise: dict | None, centers_denoise: dict | None):
    seg = create_untrained_model_folder(root / "MDA231-seg", "MDA231", seed=1)
    centers = create_untrained_model_folder(root / "MDA231-centers", "MDA231", task="centers", seed=2)
    update_config(seg, {"denoise": seg_denoise})
    update_config(centers, {"denoise": centers_denoise})
    return seg, centers


def test_each_network_is_fed_as_its_own_folder_says(tmp_path) -> None:
    """A centre network whose folder has no ceiling gets the unclipped input while the segmentation network gets
    the clipped one: each output equals that of a pair where both folders say what that network's folder says,
    on every slice (``all_slices``) and on the foreground slices only (inference)."""
    rng = np.random.default_rng(3)
    frame = rng.integers(5, 40, (2, 48, 48)).astype(np.uint8)
    frame[:, 10, 10] = frame[:, 40, 20] = 255  # hot pixels: the ceiling changes the input
    clip = {"target_ratio": 1.0, "ceiling_percentile": 99.0}
    plain = {"target_ratio": 1.0}
    mixed = build_segmenter("MDA231", *_mda231_pair(tmp_path / "mixed", clip, plain), backend="torch")
    assert mixed.denoise == DenoiseSettings(1.0, ceiling_percentile=99.0)
    assert mixed.own_inputs == {"centers": DenoiseSettings(1.0)}
    both_clip = build_segmenter("MDA231", *_mda231_pair(tmp_path / "clip", clip, clip), backend="torch")
    both_plain = build_segmenter("MDA231", *_mda231_pair(tmp_path / "plain", plain, plain), backend="torch")
    assert both_clip.own_inputs == {} and both_plain.own_inputs == {}
    for seg in (mixed, both_clip, both_plain):
        seg.params["prob_threshold"] = 0.0  # an untrained network: every slice counts as foreground
    for all_slices in (True, False):
        got = mixed.probabilities(frame, all_slices=all_slices)
        clipped = both_clip.probabilities(frame, all_slices=all_slices)
        unclipped = both_plain.probabilities(frame, all_slices=all_slices)
        np.testing.assert_array_equal(got["seg"], clipped["seg"])
        np.testing.assert_array_equal(got["centers"], unclipped["centers"])
        assert not np.array_equal(clipped["centers"], unclipped["centers"])  # the test can tell them apart
    update_config(tmp_path / "mixed" / "MDA231-seg", {"denoise": {"target_ratio": -1}})
    with pytest.raises(ModelError, match="MDA231-seg: config.json has an invalid 'denoise' entry"):
        build_segmenter("MDA231", tmp_path / "mixed" / "MDA231-seg", tmp_path / "mixed" / "MDA231-centers",
                        backend="torch")


def test_int8_calibrates_each_network_on_its_own_input(tmp_path, monkeypatch) -> None:
    """int8: the centre network fed its own input is calibrated on that input (its own calibration key)."""
    import efficientcellseg.infer as infer
    import tifffile

    seen = {}

    def fake_runner(model, device, backend, precision="auto", calibration=None):
        seen[model.config["task"]] = calibration
        return lambda x: torch.zeros(x.shape[0], x.shape[-2], x.shape[-1])

    monkeypatch.setattr(infer, "make_runner", fake_runner)
    frame = tmp_path / "t000.tif"
    tifffile.imwrite(frame, np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8),
                     photometric="minisblack")
    seg, centers = _mda231_pair(tmp_path, {"target_ratio": 1.0, "ceiling_percentile": 99.0}, {"target_ratio": 1.0})
    build_segmenter("MDA231", seg, centers, backend="onnx", precision="int8", calibration_frames=[frame])
    assert "ceiling=99.0" in seen["seg"].key and "ceiling" not in seen["centers"].key
    update_config(centers, {"denoise": {"target_ratio": 1.0, "ceiling_percentile": 99.0}})
    build_segmenter("MDA231", seg, centers, backend="onnx", precision="int8", calibration_frames=[frame])
    assert seen["seg"].key == seen["centers"].key


def test_calibration_inputs_follow_the_smoothing() -> None:
    """int8 calibration sees exactly the smoothed network inputs that inference gives the network."""
    cfg = get_dataset("A549-SIM")
    s = DenoiseSettings(0.02)
    raw = _cell_frame(150.0, shape=(5, 60, 70))
    seen: list[np.ndarray] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.extend(x.numpy().copy())
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1])

    predict_slices({"r": record}, pseudocolor_stack(denoise_frame(raw, s)), cfg, 1, torch.device("cpu"))
    got = list(network_inputs(raw, cfg, n=5, denoise=s))
    assert len(got) == len(seen) == 5
    for g, w in zip(got, seen):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[2], next(iter(list(network_inputs(raw, cfg, n=5))[2:3])))


def test_denoise_variant_copies_weights_and_sets_only_the_target(tmp_path) -> None:
    """benchmarks/denoise_variant.py: the copy verifies, has the same weights and differs by ``denoise`` alone."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from denoise_variant import TRAINING_RATIOS, make_variant

    src = tmp_path / "models"
    create_untrained_model_folder(src / "TRIC-seg", "TRIC", "seg", seed=0)
    out = make_variant(src, tmp_path / "dn2", scale=2.0, datasets=["TRIC", "MDA231"])
    verify_model_folder(out / "TRIC-seg")
    old = json.loads((src / "TRIC-seg" / "config.json").read_text())
    new = json.loads((out / "TRIC-seg" / "config.json").read_text())
    assert new.pop("denoise") == {"target_ratio": round(2 * TRAINING_RATIOS["TRIC"], 4), "max_sigma": 3.0}
    assert new == old
    assert ((out / "TRIC-seg" / "weights.safetensors").read_bytes()
            == (src / "TRIC-seg" / "weights.safetensors").read_bytes())
    assert not (out / "MDA231-seg").exists()
    card = (out / "TRIC-seg" / "MODEL_CARD.md").read_text()
    assert "## Input settings" in card and str(round(2 * TRAINING_RATIOS["TRIC"], 4)) in card


def test_update_config_note_is_one_card_section_that_tuning_keeps(tmp_path) -> None:
    """The card's input-settings section is replaced, not repeated, and survives a later ``tune --write``."""
    from efficientcellseg.weights import update_config, update_thresholds

    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", "seg", seed=0)
    update_thresholds(folder, {"prob_threshold": 0.6}, note="tuned here")
    update_config(folder, {"denoise": {"target_ratio": 0.1, "max_sigma": 3.0}}, note="smoothing, first note")
    update_config(folder, {"denoise": {"target_ratio": 0.2, "max_sigma": 3.0}}, note="smoothing, second note")
    update_thresholds(folder, {"prob_threshold": 0.5}, note="tuned again")
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.count("## Input settings") == 1 and "second note" in card and "first note" not in card
    assert card.index("## Input settings") < card.index("## Post-processing parameters (tuned)")
    assert "tuned again" in card and "tuned here" not in card
    verify_model_folder(folder)


def test_integer_noise_std_equals_the_numpy_median_version() -> None:
    """The histogram path for integer frames gives exactly what the NumPy medians give (odd and even pixel
    counts, so whole and half medians; uint8 and uint16; constant and skewed slices)."""
    from efficientcellseg.denoise import _slice_mad, _slice_mad_int

    rng = np.random.default_rng(3)
    slices = [np.full((5, 9), 7, np.uint8), rng.integers(0, 3, (4, 5), dtype=np.uint8)]
    for shape in ((7, 12), (8, 13), (31, 64), (50, 51)):
        slices.append(rng.integers(0, 256, shape, dtype=np.uint8))
        slices.append(rng.poisson(rng.uniform(0.2, 30), shape).astype(np.uint16))
        slices.append((rng.normal(2000, 300, shape).clip(0, 65535)).astype(np.uint16))
        slices.append(rng.exponential(5, shape).astype(np.uint8))
    halves = 0
    for sl in slices:
        assert _slice_mad_int(sl) == _slice_mad(sl), sl.shape
        d = np.diff(sl.astype(np.float32), axis=1).ravel()
        halves += float(np.median(d)) % 1 == 0.5 or float(np.median(np.abs(d - np.median(d)))) % 1 == 0.5
    assert halves > 0  # half-integer medians were exercised
    stack = np.stack([rng.integers(0, 4000, (20, 30), dtype=np.uint16) for _ in range(5)])
    assert noise_std(stack) == noise_std(stack.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_ceiling_value_is_numpys_percentile(dtype) -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 9, 4001):
        a = (rng.random(n) * 250).astype(dtype)
        for q in (50.0, 99.0, 99.9, 99.99):
            assert ceiling_value(a, q) == pytest.approx(float(np.percentile(a, q)), rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="empty"):
        ceiling_value(np.zeros(0, np.uint8), 99.9)


def test_ceiling_gives_hot_pixels_no_say_in_the_network_input() -> None:
    """A dim uint8 cell with a few saturated hot pixels: min-max pseudocoloring puts the cell at the bottom of
    the input range; clipped at the 99.9th percentile, the cell spans it again. Frames are never modified."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    cell = ((yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2) * 20.0
    frame = np.clip(np.rint(10.0 + cell[None] + rng.normal(0, 1.0, (3, 64, 64))), 0, 255).astype(np.uint8)
    frame[:, 5, 5] = frame[:, 60, 7] = 255  # hot pixels, 2 of 4096 per slice
    before = frame.copy()
    plain = DenoiseSettings(target_ratio=1.0)  # smoothing never needed: only the ceiling acts
    clipped = DenoiseSettings(target_ratio=1.0, ceiling_percentile=99.9)
    inside = cell > 0
    for settings, low, high in ((plain, 0.0, 0.2), (clipped, 0.8, 1.0)):
        green = pseudocolor_stack(denoise_frame(frame, settings))[1, 1]  # slice 1, green = min-max of the slice
        assert low <= float(np.median(green[inside])) <= high
    np.testing.assert_array_equal(frame, before)
    assert ceiling(frame, 99.9).max() < 255 and ceiling(frame, 0).max() == 255
    assert DenoiseSettings.from_config({"denoise": clipped.to_config()}) == clipped
    assert "ceiling_percentile" not in plain.to_config() and clipped.key() != plain.key()
    for bad in (-1.0, 10.0, 100.0):
        with pytest.raises(ValueError, match="ceiling_percentile"):
            DenoiseSettings(0.03, ceiling_percentile=bad)


def test_ceiling_on_the_network_input_only_leaves_the_signal_map_unclipped(tmp_path) -> None:
    """``ceiling_signal: false``: the network sees the clipped frame exactly as with the default, while the raw
    signal that post-processing reads is made from the frame without the ceiling (hot pixels and all)."""
    from efficientcellseg.denoise import signal_settings
    from efficientcellseg.postprocess import signal_map

    rng = np.random.default_rng(1)
    frame = rng.integers(5, 40, (3, 64, 64)).astype(np.uint8)
    frame[:, 10, 10] = frame[:, 50, 20] = 255
    both = DenoiseSettings(target_ratio=1.0, ceiling_percentile=99.9)
    net_only = DenoiseSettings(target_ratio=1.0, ceiling_percentile=99.9, ceiling_signal=False)
    assert signal_settings(both) is both and signal_settings(None) is None
    assert signal_settings(net_only) == DenoiseSettings(target_ratio=1.0)
    assert DenoiseSettings.from_config({"denoise": net_only.to_config()}) == net_only
    assert net_only.to_config()["ceiling_signal"] is False and "ceiling_signal" not in both.to_config()
    assert net_only.key() != both.key()
    with pytest.raises(ValueError, match="ceiling_signal"):
        DenoiseSettings(0.03, ceiling_percentile=99.9, ceiling_signal="no")  # type: ignore[arg-type]
    outs = {}
    for name, settings in (("both", both), ("net_only", net_only)):
        folder = create_untrained_model_folder(tmp_path / name, "A549-SIM", seed=1)
        update_config(folder, {"denoise": settings.to_config()})
        seg = build_segmenter("A549-SIM", folder, backend="torch")
        assert seg.denoise == settings
        outs[name] = seg.probabilities(frame, all_slices=True)
    np.testing.assert_array_equal(outs["both"]["seg"], outs["net_only"]["seg"])
    np.testing.assert_array_equal(outs["both"]["signal"], signal_map(ceiling(frame, 99.9)))
    np.testing.assert_array_equal(outs["net_only"]["signal"], signal_map(frame))
    assert outs["net_only"]["signal"].max() > outs["both"]["signal"].max()


def test_median_ceiling_clips_isolated_outliers_only() -> None:
    """``ceiling_median`` 3 with percentile 100: hot pixels (one voxel) are clipped to the brightest value a 3x3
    majority reaches, while a bright cell wider than that keeps every grey value; the frame is not modified."""
    from efficientcellseg.denoise import median_slices
    from scipy import ndimage as ndi

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:48, :48]
    frame = (20 + rng.integers(0, 5, (3, 48, 48)) + 150 * ((yy - 24) ** 2 + (xx - 24) ** 2 < 36)).astype(np.uint16)
    frame[:, 3, 40] = frame[:, 44, 5] = 4000  # hot pixels
    before = frame.copy()
    out = ceiling(frame, 100.0, median=3)
    inside = (yy - 24) ** 2 + (xx - 24) ** 2 < 16  # the cell's core, away from its edge
    np.testing.assert_array_equal(out[:, inside], frame[:, inside])
    assert out.max() == median_slices(frame, 3).max() < 200 and out[:, 3, 40].max() < 200
    np.testing.assert_array_equal(frame, before)
    for dtype in (np.uint8, np.uint16, np.float32):
        a = (rng.random((2, 20, 30)) * 200).astype(dtype)
        for window in (3, 5, 7):
            np.testing.assert_array_equal(median_slices(a, window), ndi.median_filter(a, size=(1, window, window),
                                                                                      mode="nearest"))
    s = DenoiseSettings(0.04, ceiling_percentile=100.0, ceiling_median=3.0, ceiling_signal=False)
    assert DenoiseSettings.from_config({"denoise": s.to_config()}) == s and s.key() != replace(s, ceiling_median=5).key()
    for bad in ({"ceiling_percentile": 100.0}, {"ceiling_percentile": 99.0, "ceiling_median": 4.0},
                {"ceiling_median": 3.0}, {"ceiling_percentile": 99.0, "ceiling_median": 1.0}):
        with pytest.raises(ValueError, match="ceiling_"):
            DenoiseSettings(0.04, **bad)
