"""ONNX Runtime backend for CPU inference.

The network (with its sigmoid) is exported once per weights file and cached: next to the model folder in
``.onnx-cache/`` when that is writable, else in ``$XDG_CACHE_HOME/efficientcellseg``. The cache file name
holds the weights' sha256, so changed weights never reuse a stale export. The export is checked against
PyTorch in the tests.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from efficientcellseg.weights import LoadedModel, load_model_folder

log = logging.getLogger(__name__)


class _ProbabilityHead(nn.Module):
    """net -> sigmoid -> channel 0: (B, 3, S, S) -> (B, S, S) probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))[:, 0]


def _cache_dir(model: LoadedModel) -> Path:
    local = model.folder / ".onnx-cache"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "efficientcellseg"
    base.mkdir(parents=True, exist_ok=True)
    return base


def export_onnx(model: LoadedModel | str | os.PathLike, input_size: int | None = None) -> Path:
    """Export (or find the cached export of) a model folder's network to ONNX; returns the .onnx path."""
    if not isinstance(model, LoadedModel):
        model = load_model_folder(model)
    size = int(input_size or model.config.get("input_size", 384))
    path = _cache_dir(model) / f"{model.folder.name}-{model.sha256[:16]}-{size}.onnx"
    if path.is_file():
        return path
    log.info("exporting %s to ONNX (once; cached at %s)", model.folder, path)
    wrapper = _ProbabilityHead(model.net.float().eval().cpu())
    x = torch.rand(1, 3, size, size)
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        torch.onnx.export(wrapper, (x,), tmp, input_names=["x"], output_names=["p"],
                          dynamic_axes={"x": {0: "batch"}, "p": {0: "batch"}}, opset_version=17, dynamo=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class OnnxRunner:
    """Runs an exported network with ONNX Runtime on the CPU: (B, 3, S, S) -> (B, S, S) probabilities."""

    def __init__(self, model: LoadedModel, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.input_size = int(model.config.get("input_size", 384))
        path = export_onnx(model, self.input_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"ONNX model expects {self.input_size}x{self.input_size} inputs, got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": arr})[0])
