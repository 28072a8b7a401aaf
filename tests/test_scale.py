"""predict --scale: frames resampled in xy before the network, labels back to the frame's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficientcellseg.errors import ModelError
from efficientcellseg.infer import build_segmenter
from efficientcellseg.preprocess import check_scale, rescale_frame, restore_labels, scaled_shape
from efficientcellseg.weights import create_untrained_model_folder


def test_rescale_frame_keeps_dtype_and_scales_xy_only() -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16, np.float32):
        a = (rng.random((3, 40, 50)) * 200).astype(dtype)
        assert rescale_frame(a, 1.0) is a
        up, down = rescale_frame(a, 1.5), rescale_frame(a, 0.5)
        assert up.shape == (3, 60, 75) and down.shape == (3, 20, 25)
        assert up.dtype == dtype and down.dtype == dtype
    flat = np.full((2, 30, 30), 77, np.uint16)
    assert (rescale_frame(flat, 0.37) == 77).all() and (rescale_frame(flat, 2.9) == 77).all()


def test_restore_labels_puts_objects_back_where_they_were() -> None:
    lab = np.zeros((2, 60, 80), np.uint16)
    lab[:, 10:30, 20:50] = 3
    lab[1, 40:58, 60:78] = 9
    small = restore_labels(lab, (30, 40))
    assert small.shape == (2, 30, 40) and small.dtype == np.uint16
    ys, xs = np.nonzero(small[0] == 3)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 14, 10, 24)
    assert set(np.unique(small[1])) == {0, 3, 9}
    back = restore_labels(rescale_frame(lab, 1.0), (60, 80))
    assert back is lab  # same size: untouched


@pytest.mark.parametrize("bad", [0.0, 0.2, 4.5, float("nan"), float("inf"), -1.0])
def test_scale_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="0.25 to 4"):
        check_scale(bad)
    assert scaled_shape((13, 10), 0.25) == (3, 2) and scaled_shape((1, 1), 0.25) == (1, 1)


def test_segmenter_with_scale_returns_labels_of_the_frame_size(tmp_path: Path) -> None:
    folder = create_untrained_model_folder(tmp_path / "TRIC-seg", "TRIC", seed=1)
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 255, (3, 90, 110), dtype=np.uint8)
    plain = build_segmenter("TRIC", model_dir=folder, device="cpu")
    for s in (0.5, 1.7):
        seg = build_segmenter("TRIC", model_dir=folder, device="cpu", scale=s)
        probs = seg.probabilities(raw)
        assert probs["seg"].shape == (3,) + scaled_shape(raw.shape[1:], s)
        assert probs["frame_shape"] == raw.shape
        lab = seg.labels(probs)
        assert lab.shape == raw.shape and lab.dtype == np.uint16
        assert "rescale" in seg.timer.seconds
    assert np.array_equal(build_segmenter("TRIC", model_dir=folder, device="cpu", scale=1.0).segment(raw),
                          plain.segment(raw))  # scale 1 is the plain path
    with pytest.raises(ModelError, match="--scale"):
        build_segmenter("TRIC", model_dir=folder, device="cpu", scale=5)


def test_int8_calibration_is_keyed_and_fed_by_the_scale(tmp_path: Path) -> None:
    import tifffile

    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import int8_calibration

    rng = np.random.default_rng(2)
    frame = tmp_path / "t000.tif"
    tifffile.imwrite(frame, rng.integers(0, 255, (3, 64, 80), dtype=np.uint8), photometric="minisblack")
    cfg = get_dataset("A549-SIM")
    plain, scaled = int8_calibration([frame], cfg, n_inputs=2), int8_calibration([frame], cfg, n_inputs=2, scale=0.5)
    assert plain.key != scaled.key and "scale=0.5" in scaled.key
    assert len(list(scaled.inputs())) == 2  # the resampled frame still gives its network inputs
