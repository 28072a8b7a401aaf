"""Fast inference paths give the reference results: ONNX Runtime vs PyTorch, batched vs one slice at a time,
float16 pseudocolour input vs float32, and the out-of-memory fall-back to smaller batches.

A freshly initialised network predicts an almost constant map (its outputs vary by ~1e-4), which would make
any mask comparison vacuous. The fixture therefore recalibrates the BatchNorm statistics of an untrained model
on random images and moves the head's bias so that half of the pixels are foreground: a well-conditioned
network whose masks change if the computation changes (bf16, for instance, gives mask IoU ~0.8 on it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from efficientcellseg.datasets import get_dataset
from efficientcellseg.errors import ModelError
from efficientcellseg.infer import BatchFallback, TorchRunner, is_out_of_memory, make_runner, predict_slices
from efficientcellseg.onnx_backend import OnnxRunner, export_onnx
from efficientcellseg.weights import create_untrained_model_folder, load_model_folder, save_model_folder

CPU = torch.device("cpu")


def _iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """An untrained model folder with recalibrated BatchNorm and a head bias giving ~50 % foreground."""
    root = tmp_path_factory.mktemp("fast")
    model = load_model_folder(create_untrained_model_folder(root / "raw", "A549-SIM", seed=3))
    net = model.net
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration batches
    g = torch.Generator().manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(2, 3, 128, 128, generator=g))
    net.eval()
    head = [m for m in net.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias -= net(torch.rand(1, 3, 384, 384, generator=g)).median()
    cfg = dict(model.config, name="calibrated")
    return save_model_folder(root / "calibrated", net, cfg, {}, dtype=torch.float32)


def _x(b: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, 384, 384, generator=torch.Generator().manual_seed(seed))


def test_onnx_equals_torch_reference(calibrated) -> None:
    x = _x(2)
    ref = TorchRunner(load_model_folder(calibrated), CPU, precision="fp32")(x)
    assert 0.2 < float((ref > 0.5).float().mean()) < 0.8  # the comparison below is not vacuous
    for simplify in (True, False):
        p = OnnxRunner(load_model_folder(calibrated), simplify=simplify)(x)
        assert p.shape == ref.shape == (2, 384, 384)
        assert torch.allclose(p, ref, atol=1e-4), float((p - ref).abs().max())
        assert _iou(p > 0.5, ref > 0.5) >= 0.999


def test_simplified_export_has_no_pad_or_padding_arithmetic(calibrated) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load(str(export_onnx(load_model_folder(calibrated)))).graph.node}
    assert not ops & {"Pad", "Ceil", "ReduceMean"}, ops & {"Pad", "Ceil", "ReduceMean"}
    assert "GlobalAveragePool" in ops


def test_batched_equals_one_at_a_time(calibrated) -> None:
    x = _x(3, seed=2)
    for run in (TorchRunner(load_model_folder(calibrated), CPU), OnnxRunner(load_model_folder(calibrated))):
        together = run(x)
        alone = torch.cat([run(x[i : i + 1]) for i in range(3)])
        assert torch.allclose(together, alone, atol=1e-4), type(run).__name__


def test_predict_slices_fast_path_vs_reference(calibrated) -> None:
    """The default CPU path (ONNX, batched, float16 pseudocolour) vs PyTorch fp32 one slice at a time."""
    cfg = get_dataset("A549-SIM")  # whole slices resized to 384 and back
    rng = np.random.default_rng(4)
    pc = rng.random((3, 3, 150, 175), dtype=np.float32)
    ref = predict_slices({"seg": TorchRunner(load_model_folder(calibrated), CPU)}, pc, cfg, 1, CPU)["seg"]
    onnx_run = {"seg": make_runner(load_model_folder(calibrated), CPU, "auto")}
    assert isinstance(onnx_run["seg"], OnnxRunner)
    fast = predict_slices(onnx_run, pc, cfg, 2, CPU)["seg"]
    assert fast.shape == ref.shape == (3, 150, 175) and fast.dtype == np.float32
    assert np.allclose(fast, ref, atol=1e-4)
    half = predict_slices(onnx_run, pc.astype(np.float16), cfg, 3, CPU)["seg"]  # cast per batch
    assert _iou(half > 0.5, ref > 0.5) >= 0.99


def test_runner_choice_and_precision_checks(calibrated) -> None:
    model = load_model_folder(calibrated)
    assert isinstance(make_runner(model, CPU, "torch"), TorchRunner)
    bf16 = make_runner(model, CPU, "auto", precision="bf16")
    assert isinstance(bf16, TorchRunner) and bf16.precision == "bf16"
    assert bf16(_x(1)).dtype == torch.float32
    with pytest.raises(ModelError, match="fp16 needs a CUDA device"):
        TorchRunner(model, CPU, precision="fp16")
    with pytest.raises(ModelError, match="onnx backend runs fp32 or int8 on the CPU only"):
        make_runner(model, CPU, "onnx", precision="bf16")
    with pytest.raises(ModelError, match="int8 runs with ONNX Runtime on the CPU only"):
        make_runner(model, CPU, "torch", precision="int8")
    with pytest.raises(ModelError, match="int8 runs with ONNX Runtime on the CPU, not with PyTorch"):
        TorchRunner(model, CPU, precision="int8")
    with pytest.raises(ModelError, match="backend must be auto, torch or onnx"):
        make_runner(model, CPU, "tensorrt")


class _OOMAbove:
    """A fake network: raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x[:, 0] * 2


def test_oom_fallback_halves_the_batch_and_remembers(caplog) -> None:
    fake = _OOMAbove(limit=2)
    run = BatchFallback(fake, name="fake")
    x = torch.rand(8, 3, 4, 4)
    with caplog.at_level(logging.WARNING, logger="efficientcellseg.infer"):
        y = run(x)
    assert torch.equal(y, x[:, 0] * 2)
    assert fake.sizes == [8, 4, 2, 2, 2, 2]  # 8 fails, 4 fails, then four chunks of 2
    assert run.max_batch == 2
    assert "out of memory on a batch of 8; falling back to batches of 4" in caplog.text
    assert "out of memory on a batch of 4; falling back to batches of 2" in caplog.text
    fake.sizes.clear()
    assert torch.equal(run(x[:5]), x[:5, 0] * 2) and fake.sizes == [2, 2, 1]  # remembered: no new failure


def test_oom_fallback_reraises_other_errors_and_oom_at_batch_one() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDNN_STATUS_EXECUTION_FAILED")

    with pytest.raises(RuntimeError, match="CUDNN_STATUS"):
        BatchFallback(broken)(torch.zeros(4, 1))
    with pytest.raises(torch.OutOfMemoryError):
        BatchFallback(_OOMAbove(limit=0))(torch.zeros(4, 1))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(ValueError("out of range"))


def test_torch_runner_falls_back_on_oom(calibrated, caplog) -> None:
    class FakeGPURunner(TorchRunner):
        def _forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super()._forward(x)

    x = _x(2, seed=5)
    ref = TorchRunner(load_model_folder(calibrated), CPU)(x)
    runner = FakeGPURunner(load_model_folder(calibrated), CPU)
    with caplog.at_level(logging.WARNING, logger="efficientcellseg.infer"):
        p = runner(x)
    assert torch.allclose(p, ref, atol=1e-4) and runner.max_batch == 1
    assert "falling back to batches of 1" in caplog.text


def test_large_frames_pseudocolor_in_float16_same_masks(calibrated, monkeypatch) -> None:
    """Frames above PC_FLOAT32_MAX_BYTES keep the pseudocolored stack in float16 (half the memory)."""
    import efficientcellseg.infer as infer

    cfg = get_dataset("A549-SIM")
    raw = np.random.default_rng(6).integers(0, 4000, (3, 120, 140), dtype=np.uint16)
    seg = infer.Segmenter(cfg, {"seg": OnnxRunner(load_model_folder(calibrated))}, {}, CPU, 2)
    ref = seg.probabilities(raw)["seg"]
    seen = []
    real = infer.predict_slices
    monkeypatch.setattr(infer, "predict_slices", lambda r, pc, *a: seen.append(pc.dtype) or real(r, pc, *a))
    monkeypatch.setattr(infer, "PC_FLOAT32_MAX_BYTES", 0)
    half = seg.probabilities(raw)["seg"]
    assert seen == [np.float16] and half.dtype == np.float32
    thr = float(np.median(ref))  # half of the pixels foreground: the comparison is not vacuous
    assert _iou(half > thr, ref > thr) >= 0.99, _iou(half > thr, ref > thr)


def test_shared_outputs_one_pass_per_batch() -> None:
    """SharedOutputs serves each channel of a multi-output runner from one network pass per input batch."""
    from efficientcellseg.errors import ModelError
    from efficientcellseg.infer import SharedOutputs

    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return torch.stack([x[:, 0], 1 - x[:, 0]], 1)

    shared = SharedOutputs(net, ("seg", "centers"))
    runners = shared.outputs()
    x = torch.rand(3, 3, 8, 8)
    seg, cen = runners["seg"](x), runners["centers"](x)
    assert len(calls) == 1 and shared.passes == 1
    assert torch.equal(seg, x[:, 0]) and torch.equal(cen, 1 - x[:, 0])
    runners["seg"](x.clone())  # another tensor (equal values): a new pass, never a stale output
    assert shared.passes == 2
    with pytest.raises(ModelError, match="expected 3 channels"):
        SharedOutputs(net, ("a", "b", "c")).outputs()["a"](x)
