"""The ONNX Runtime backend gives the same probabilities as PyTorch and caches its export."""

from __future__ import annotations

import torch

from efficientcellseg.infer import TorchRunner
from efficientcellseg.onnx_backend import OnnxRunner, export_onnx
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
