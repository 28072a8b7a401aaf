"""ONNX Runtime backend for CPU inference.

The network (with its sigmoid) is exported once per weights file and cached: next to the model folder in
``.onnx-cache/`` when that is writable, else in ``$XDG_CACHE_HOME/efficientcellseg``. The cache file name
holds the weights' sha256, so changed weights never reuse a stale export. The export is checked against
PyTorch in the tests.

The exported graph is specialised to the network input size (always ``input_size`` x ``input_size``; only the
batch axis is dynamic), which lets it be simpler than a literal trace: TensorFlow-"same" padding of the strided
convolutions becomes static and is folded into the convolutions' own (asymmetric) ``pads``, so no ``Pad`` node
and no shape arithmetic remains, and squeeze-excitation pooling is a ``GlobalAveragePool``. Both rewrites are
exact (same arithmetic); the graph is then constant-folded (ONNX Runtime's hardware-independent "basic" level)
before it is cached. At load time ONNX Runtime applies all its CPU optimisations (NCHWc layout, fusions).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import copy

import numpy as np
import torch
import torch.nn.functional as F
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


EXPORT_VERSION = 2
"""Bumped whenever the exported graph changes, so old cache files are not reused."""


class _StaticSamePadConv(nn.Module):
    """A TF-"same" convolution with its padding computed once for a known input size (exact)."""

    def __init__(self, conv: nn.Conv2d, pads: list[int]) -> None:
        super().__init__()
        self.conv = conv
        self.pads = [int(v) for v in pads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


class _PooledSqueezeExcite(nn.Module):
    """timm's SqueezeExcite with its spatial mean written as adaptive average pooling (exports as GAP)."""

    def __init__(self, se: nn.Module) -> None:
        super().__init__()
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        se = self.se
        gate = se.conv_expand(se.act1(se.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * se.gate(gate)


def export_friendly(net: nn.Module, size: int) -> nn.Module:
    """A copy of ``net`` for export at ``size`` x ``size`` inputs: static "same" pads, pooled SE (same results)."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg
    from timm.models._efficientnet_blocks import SqueezeExcite

    net = copy.deepcopy(net).float().eval().cpu()
    in_shapes: dict[str, tuple[int, int]] = {}

    def remember(name: str):
        return lambda mod, args: in_shapes.__setitem__(name, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(remember(n)) for n, m in net.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for parent_name, parent in list(net.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, Conv2dSame):
                pads = pad_same_arg(list(in_shapes[full]), list(child.kernel_size), list(child.stride),
                                    list(child.dilation))
                setattr(parent, name, _StaticSamePadConv(child, pads))
            elif isinstance(child, SqueezeExcite):
                setattr(parent, name, _PooledSqueezeExcite(child))
    return net


def _constant_fold(src: str, dst: str) -> None:
    """ONNX Runtime's portable (hardware-independent) "basic" optimisations, saved to ``dst``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = dst
    opts.log_severity_level = 3
    ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def fold_pads_into_convs(path: str) -> int:
    """Merge constant zero ``Pad`` nodes (spatial axes only) into the ``Conv`` they feed; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = 0
    for node in list(graph.node):
        if node.op_type != "Pad" or node.input[1] not in consts:
            continue
        mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
        value = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        pads = [int(v) for v in consts[node.input[1]]]
        after = users.get(node.output[0], [])
        if (mode != b"constant" or value is None or np.any(value) or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5))
                or len(after) != 1 or after[0].op_type != "Conv" or node.output[0] in outputs):
            continue
        conv = after[0]
        old = [0, 0, 0, 0]
        for a in list(conv.attribute):
            if a.name == "pads":
                old = list(a.ints)
                conv.attribute.remove(a)
            elif a.name == "auto_pad" and a.s not in (b"NOTSET", b""):
                raise ValueError(f"{conv.name}: cannot fold a Pad into a Conv with auto_pad {a.s!r}")
        # ONNX pads: [y_begin, x_begin, y_end, x_end] for Conv; [n, c, y, x, n, c, y, x] for Pad
        conv.attribute.append(helper.make_attribute("pads", [old[0] + pads[2], old[1] + pads[3],
                                                             old[2] + pads[6], old[3] + pads[7]]))
        conv.input[0] = node.input[0]
        graph.node.remove(node)
        folded += 1
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return folded


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


def export_onnx(model: LoadedModel | str | os.PathLike, input_size: int | None = None,
                simplify: bool = True) -> Path:
    """Export (or find the cached export of) a model folder's network to ONNX; returns the .onnx path.

    ``simplify=False`` keeps the literal trace (dynamic "same" padding, no folding): only for comparisons.
    """
    if not isinstance(model, LoadedModel):
        model = load_model_folder(model)
    size = int(input_size or model.config.get("input_size", 384))
    kind = f"v{EXPORT_VERSION}" if simplify else "trace"
    path = _cache_dir(model) / f"{model.folder.name}-{model.sha256[:16]}-{size}-{kind}.onnx"
    if path.is_file():
        return path
    log.info("exporting %s to ONNX (once; cached at %s)", model.folder, path)
    net = export_friendly(model.net, size) if simplify else model.net.float().eval().cpu()
    wrapper = _ProbabilityHead(net)
    x = torch.rand(1, 3, size, size)
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp_opt = tmp[: -len(".onnx")] + ".basic.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints: the size is fixed on purpose
            torch.onnx.export(wrapper, (x,), tmp, input_names=["x"], output_names=["p"],
                              dynamic_axes={"x": {0: "batch"}, "p": {0: "batch"}}, opset_version=17, dynamo=False)
        if simplify:
            _constant_fold(tmp, tmp_opt)
            log.debug("folded %d Pad nodes into convolutions", fold_pads_into_convs(tmp_opt))
            os.replace(tmp_opt, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp_opt).unlink(missing_ok=True)
    return path


class OnnxRunner:
    """Runs an exported network with ONNX Runtime on the CPU: (B, 3, S, S) -> (B, S, S) probabilities."""

    def __init__(self, model: LoadedModel, threads: int | None = None, simplify: bool = True) -> None:
        import onnxruntime as ort

        self.input_size = int(model.config.get("input_size", 384))
        path = export_onnx(model, self.input_size, simplify=simplify)
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
