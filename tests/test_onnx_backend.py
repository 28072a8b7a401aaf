"""The ONNX Runtime backend gives the same probabilities as PyTorch and caches its export; int8 calibration on the
user's frames: which inputs, how the cache is keyed, when it is reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from efficientcellseg.datasets import get_dataset
from efficientcellseg.errors import ModelError
from efficientcellseg.infer import (TorchRunner, build_segmenter, choose_calibration_frames, int8_calibration,
                                    network_inputs, predict_slices)
from efficientcellseg import onnx_backend
from efficientcellseg.onnx_backend import (Calibration, OnnxRunner, agreement_path, export_onnx, int8_path,
                                           output_agreement, quantize_onnx, read_agreement)
from efficientcellseg.pseudocolor import pseudocolor_stack
from efficientcellseg.weights import create_untrained_model_folder, load_model_folder


def test_onnx_matches_torch_and_is_cached(tmp_path) -> None:
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    model = load_model_folder(folder)
    x = torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    p_onnx = OnnxRunner(model)(x)
    p_torch = TorchRunner(load_model_folder(folder), torch.device("cpu"))(x)
    assert p_onnx.shape == (2, 384, 384)
    assert torch.allclose(p_onnx, p_torch, atol=1e-4)
    cached = list((folder / ".onnx-cache").glob("*.onnx"))
    assert len(cached) == 1 and model.sha256[:16] in cached[0].name
    mtime = cached[0].stat().st_mtime_ns
    assert export_onnx(model) == cached[0] and cached[0].stat().st_mtime_ns == mtime  # reused, not re-exported


def _frame_file(path: Path, seed: int, shape: tuple[int, int, int] = (5, 48, 56)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rng.integers(0, 255, shape, dtype=np.uint8))
    return path


def test_calibration_frames_are_evenly_spaced(tmp_path) -> None:
    for t in range(7):
        (tmp_path / f"t{t:03d}.tif").write_bytes(b"")
    assert [p.name for p in choose_calibration_frames(tmp_path)] == ["t000.tif", "t003.tif", "t006.tif"]
    assert [p.name for p in choose_calibration_frames(tmp_path, n=10)] == [f"t{t:03d}.tif" for t in range(7)]


def test_int8_cache_is_keyed_by_frames_and_model(tmp_path) -> None:
    """Same frame bytes -> same int8 file name (wherever the file lies); other frames or weights -> another."""
    cfg = get_dataset("A549-SIM")
    a = _frame_file(tmp_path / "a" / "t000.tif", 1)
    a_copy = tmp_path / "b" / "t005.tif"
    a_copy.parent.mkdir()
    a_copy.write_bytes(a.read_bytes())
    other = _frame_file(tmp_path / "c" / "t000.tif", 2)
    m1 = load_model_folder(create_untrained_model_folder(tmp_path / "m1", "A549-SIM", seed=1))
    m2 = load_model_folder(create_untrained_model_folder(tmp_path / "m2", "A549-SIM", seed=2))
    key = {name: int8_calibration([f], cfg) for name, f in (("a", a), ("copy", a_copy), ("other", other))}
    assert key["a"].key == key["copy"].key != key["other"].key
    assert int8_path(m1, key["a"]) == int8_path(m1, key["copy"])
    assert int8_path(m1, key["a"]) != int8_path(m1, key["other"])
    assert int8_path(m1, key["a"]).name.split("-int8")[1] != int8_path(m2, key["a"]).name.split("-int8")[1]


@pytest.mark.parametrize("dataset, shape", [("A549-SIM", (5, 60, 70)), ("TRIC", (3, 800, 900))])
def test_calibration_inputs_are_the_network_inputs_of_inference(dataset, shape) -> None:
    """network_inputs returns exactly inputs that predict_slices gives the network, evenly spaced over them."""
    cfg = get_dataset(dataset)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 200, shape, dtype=np.uint8)
    seen: list[np.ndarray] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.extend(x.numpy().copy())
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1])

    predict_slices({"r": record}, pseudocolor_stack(raw), cfg, 1, torch.device("cpu"))
    got = list(network_inputs(raw, cfg, n=4))
    want = np.unique(np.linspace(0, len(seen) - 1, 4).round().astype(int))
    assert len(got) == len(want) and len(seen) > 4
    for g, i in zip(got, want):
        np.testing.assert_array_equal(g, seen[i])
    assert list(network_inputs(np.full(shape, 7, np.uint8), cfg)) == []  # constant frames are skipped


def test_int8_needs_calibration_frames(tmp_path) -> None:
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    with pytest.raises(ModelError, match="int8 needs calibration frames"):
        OnnxRunner(load_model_folder(folder), int8=True)
    with pytest.raises(ModelError, match="precision int8 needs calibration frames"):
        build_segmenter("A549-SIM", model_dir=folder, device="cpu", precision="int8")


def test_quantised_once_per_calibration_and_reused(tmp_path) -> None:
    """Quantising reads the calibration inputs once; a second runner with the same frames reuses the file."""
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    frame = _frame_file(tmp_path / "seq" / "t000.tif", 3)
    base = int8_calibration([frame], get_dataset("A549-SIM"), n_inputs=2)
    calls = []

    def inputs():
        calls.append(1)
        return base.inputs()

    cal = Calibration(base.key, inputs, base.description)
    path = quantize_onnx(load_model_folder(folder), cal)
    stamp = path.stat().st_mtime_ns
    run = OnnxRunner(load_model_folder(folder), int8=True, calibration=cal)
    assert run.precision == "int8" and calls == [1] and path.stat().st_mtime_ns == stamp
    assert run(torch.rand(1, 3, 384, 384)).shape == (1, 384, 384)
    assert run.agreement == read_agreement(path) and run.agreement["inputs"] == 2


def test_output_agreement_golden() -> None:
    """Pooled foreground IoU at 0.5 over all inputs (channel 0 of two-channel outputs), mean and largest |diff|."""
    a = [np.array([[[0.9, 0.6], [0.1, 0.2]]]), np.array([[[0.7, 0.0], [0.0, 0.0]]])]
    b = [np.array([[[0.8, 0.4], [0.1, 0.6]]]), np.array([[[0.7, 0.0], [0.0, 0.0]]])]
    got = output_agreement(a, b, "seg")
    assert got["foreground_iou"] == pytest.approx(2 / 4)  # 0.9/0.8 and 0.7/0.7 shared; 0.6/0.4, 0.2/0.6 not
    assert got["mean_abs_diff"] == pytest.approx((0.1 + 0.2 + 0.4) / 8)
    assert got["max_abs_diff"] == pytest.approx(0.4) and got["inputs"] == 2
    two = [np.stack([x, 1 - x], axis=1) for x in a], [np.stack([x, 1 - x], axis=1) for x in b]  # (1, 2, 2, 2)
    assert output_agreement(*two, "seg_centers")["foreground_iou"] == pytest.approx(0.5)
    assert output_agreement(a, b, "centers")["foreground_iou"] is None  # a heatmap has no foreground
    assert output_agreement([np.zeros((1, 2, 2))], [np.zeros((1, 2, 2))], "seg")["foreground_iou"] == 1.0
    with pytest.raises(ValueError, match="must have one shape"):
        output_agreement(a, [np.zeros((1, 3, 3))] * 2, "seg")


def test_int8_checks_itself_against_fp32_on_the_calibration_inputs(tmp_path, caplog, monkeypatch) -> None:
    """Quantising records the int8 graph's agreement with fp32 on the calibration inputs; the record equals the
    agreement of the two runners on those inputs, and loading warns when it is below AGREEMENT_WARN."""
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    frame = _frame_file(tmp_path / "seq" / "t000.tif", 5)
    cal = int8_calibration([frame], get_dataset("A549-SIM"), n_inputs=3)
    path = quantize_onnx(load_model_folder(folder), cal)
    record = read_agreement(path)
    assert agreement_path(path).is_file() and record["inputs"] == 3 and cal.description in record["calibration"]
    xs = torch.from_numpy(np.stack([np.asarray(x, np.float32) for x in cal.inputs()]))
    fp32 = OnnxRunner(load_model_folder(folder))(xs).numpy()
    monkeypatch.setattr(onnx_backend, "AGREEMENT_WARN", 0.0)  # an untrained network's figure is arbitrary
    with caplog.at_level("INFO", logger="efficientcellseg.onnx_backend"):
        int8 = OnnxRunner(load_model_folder(folder), int8=True, calibration=cal)
    assert "int8 vs fp32 foreground IoU" in caplog.text and "WARNING" not in [r.levelname for r in caplog.records]
    again = output_agreement(list(fp32[:, None]), list(int8(xs).numpy()[:, None]), "seg")
    assert record["foreground_iou"] == pytest.approx(again["foreground_iou"], abs=1e-3)
    assert record["mean_abs_diff"] == pytest.approx(again["mean_abs_diff"], rel=1e-3, abs=1e-6)
    monkeypatch.setattr(onnx_backend, "AGREEMENT_WARN", record["foreground_iou"] + 1e-6)
    caplog.clear()
    OnnxRunner(load_model_folder(folder), int8=True, calibration=cal)
    assert any(r.levelname == "WARNING" and "int8 moves this network's output" in r.getMessage()
               for r in caplog.records)


def test_ranges_merged_per_input_equal_onnx_runtimes_own(tmp_path) -> None:
    """_calibrate_ranges merges the min/max ranges after every input (bounded memory); they equal, bit for bit,
    those of ONNX Runtime's calibrator collecting every input first, and they are not the last input's alone."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, load_tensors_data

    from efficientcellseg.onnx_backend import _calibrate_ranges

    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    fp32 = export_onnx(load_model_folder(folder))
    rng = np.random.default_rng(4)
    xs = [rng.random((1, 3, 384, 384), dtype=np.float32) * s for s in (1.0, 3.0, 0.5)]

    class Reader:
        def __init__(self, items: list[np.ndarray]) -> None:
            self.items = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(({"x": x} for x in self.items), None)

    def ranges(data) -> dict[str, tuple[float, float]]:
        return {k: tuple(float(np.asarray(v).ravel()[0]) for v in t.range_value) for k, t in data.data.items()}

    def ours(items: list[np.ndarray], name: str) -> dict[str, tuple[float, float]]:
        _calibrate_ranges(fp32, Reader(items), tmp_path / f"{name}.aug.onnx", tmp_path / f"{name}.json")
        return ranges(load_tensors_data(tmp_path / f"{name}.json"))

    reference = create_calibrator(fp32, None, augmented_model_path=str(tmp_path / "ref.onnx"),
                                  calibrate_method=CalibrationMethod.MinMax)
    reference.collect_data(Reader(xs))
    want = ranges(reference.compute_data())
    got = ours(xs, "all")
    assert len(want) > 100 and got == want
    last_only = ours(xs[-1:], "last")
    assert any(last_only[k] != got[k] for k in got)
