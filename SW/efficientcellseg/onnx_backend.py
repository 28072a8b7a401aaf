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

Opt-in int8 (``--precision int8``): the cached fp32 graph is quantised statically (QDQ, unsigned 8-bit
activations, signed 8-bit per-channel weights, min/max ranges) and cached beside it. The activation ranges
are calibrated on the user's own data: network inputs recorded exactly as inference makes them from a few
frames (by default of the sequence being segmented; see :func:`efficientcellseg.infer.int8_calibration`).
This module only receives those inputs (:class:`Calibration`) and never makes data itself. The cache file is
keyed by the calibration frames' sha256 and the fp32 export's sha256: other frames give another file, the same
frames reuse it. Quantising is deterministic for the same frames. It runs about 1.8x faster than fp32 on CPUs
with 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI) and changes masks slightly (measured in
benchmarks/RESULTS.md); the default stays exact fp32.

How much it changes them depends on the data (dim, noisy frames more), so quantising also checks itself on the
user's data: the int8 graph's foreground (output > 0.5) against the fp32 graph's on up to
:data:`AGREEMENT_INPUTS` of the calibration inputs (the fp32 outputs come free with the calibration pass). The
figure is stored beside the cached file (``.agreement.json``), logged whenever the file is loaded, and a warning
says so when it is below :data:`AGREEMENT_WARN`.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from efficientcellseg.errors import ModelError
from efficientcellseg.weights import LoadedModel, load_model_folder, write_json_atomic

log = logging.getLogger(__name__)


class _ProbabilityHead(nn.Module):
    """net -> sigmoid -> channel 0: (B, 3, S, S) -> (B, S, S) probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.net(x))
        return y[:, 0] if y.shape[1] == 1 else y


EXPORT_VERSION = 2
"""Bumped whenever the exported graph changes, so old cache files are not reused."""
INT8_VERSION = 3
"""Bumped whenever the int8 quantisation or the way its calibration inputs are made changes."""
AGREEMENT_INPUTS = 12
"""At most this many calibration inputs (evenly spaced) check the int8 graph against fp32 after quantising."""
AGREEMENT_WARN = 0.95
"""Foreground IoU of the int8 and fp32 network outputs on the calibration inputs below which loading the int8
graph warns. Network outputs at 0.5, not masks: on 12 sequences of both families (benchmarks/RESULTS.md,
2026-12-07) the one below it (TRIC family B dim, 0.947) is the one whose masks moved most (IoU 0.867); the others
were 0.952-0.994 with masks at 0.957-1.000."""


@dataclass(frozen=True)
class Calibration:
    """The data that calibrate the int8 activation ranges.

    ``key`` names the data (e.g. the sha256 of the calibration frames' files and how inputs are taken from
    them); it is part of the cache file name. ``inputs`` yields (3, S, S) or (B, 3, S, S) float32 network inputs
    and is called only when no cached quantised file exists. ``description`` is for log messages.
    """

    key: str
    inputs: Callable[[], Iterable[np.ndarray]]
    description: str = "calibration frames"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def _constant_fold(src: str, dst: str, keep_batchnorm: bool = False) -> None:
    """ONNX Runtime's portable (hardware-independent) "basic" optimisations, saved to ``dst``; these fold
    each BatchNormalization into the convolution before it unless ``keep_batchnorm``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = dst
    opts.log_severity_level = 3
    ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"],
                         disabled_optimizers=["ConvBNFusion"] if keep_batchnorm else None)


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


_TRANSIENT_DIR: list[Path] = []


def _transient_dir() -> Path:
    """This process's temporary folder for exports of transient (in-memory, adapted) networks."""
    if not _TRANSIENT_DIR:
        _TRANSIENT_DIR.append(Path(tempfile.mkdtemp(prefix="efficientcellseg-onnx-")))
        atexit.register(shutil.rmtree, _TRANSIENT_DIR[0], ignore_errors=True)
    return _TRANSIENT_DIR[0]


def _cache_dir(model: LoadedModel) -> Path:
    if model.transient:
        return _transient_dir()
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

    ``simplify=False`` keeps the literal trace (dynamic "same" padding, no folding): only for comparisons. A
    transient network that differs from its folder's only in its BatchNorm statistics (adapted to a sequence)
    is not traced again: its statistics are written into the folder's cached graph that keeps its BatchNorm
    layers (:func:`_statistics_template`), which is then folded like any export (same graph; 0.06 s instead of 1.8 s
    and no torch tracing, which raised the resident memory by about 0.9 GB).
    """
    if not isinstance(model, LoadedModel):
        model = load_model_folder(model)
    size = int(input_size or model.config.get("input_size", 384))
    kind = f"v{EXPORT_VERSION}" if simplify else "trace"
    path = _cache_dir(model) / f"{model.folder.name}-{model.sha256[:16]}-{size}-{kind}.onnx"
    if path.is_file():
        return path
    if model.transient and model.base_sha256 and simplify:
        log.info("%s: writing the adapted normalisation into its ONNX graph (a temporary file, deleted once "
                 "loaded)", model.folder)
        _write_statistics(_statistics_template(model, size), path, batchnorm_statistics(model.net))
        return path
    if model.transient:
        log.info("exporting %s (normalisation adapted) to ONNX (a temporary file, deleted once loaded)",
                 model.folder)
    else:
        log.info("exporting %s to ONNX (once; cached at %s)", model.folder, path)
    _trace(model.net, size, path, simplify)
    return path


def _trace(net: nn.Module, size: int, path: Path, simplify: bool, keep_batchnorm: bool = False) -> None:
    """Trace ``net`` with its sigmoid for ``size`` x ``size`` inputs into ``path`` (atomically); ``simplify``
    makes the export-friendly, constant-folded graph (BatchNorm folded into the convolutions unless
    ``keep_batchnorm``)."""
    net = export_friendly(net, size) if simplify else net.float().eval().cpu()
    wrapper = _ProbabilityHead(net)
    x = torch.rand(1, 3, size, size)
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp_opt = tmp[: -len(".onnx")] + ".basic.onnx"
    # eval mode folds BatchNorm into the convolutions while tracing; "preserve" (the network is in eval mode)
    # keeps them as BatchNormalization nodes whose statistics are named initializers
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints: the size is fixed on purpose
            torch.onnx.export(wrapper, (x,), tmp, input_names=["x"], output_names=["p"],
                              dynamic_axes={"x": {0: "batch"}, "p": {0: "batch"}}, opset_version=17, dynamo=False,
                              training=mode)
        if simplify:
            _constant_fold(tmp, tmp_opt, keep_batchnorm)
            log.debug("folded %d Pad nodes into convolutions", fold_pads_into_convs(tmp_opt))
            os.replace(tmp_opt, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp_opt).unlink(missing_ok=True)


def batchnorm_statistics(net: nn.Module) -> dict[str, np.ndarray]:
    """Every BatchNorm layer's running mean and variance, by the names their ONNX initializers have."""
    return {f"net.{name}.{stat}": getattr(m, stat).detach().float().cpu().numpy()
            for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for stat in ("running_mean", "running_var")}


def _statistics_template(model: LoadedModel, size: int) -> Path:
    """The folder's cached export (from ``model.base_sha256``'s weights) that keeps its BatchNormalization
    nodes, with placeholder statistics (mean 0, variance 1) that :func:`_write_statistics` replaces."""
    cache = _cache_dir(replace(model, transient=False))
    path = cache / f"{model.folder.name}-{model.base_sha256[:16]}-{size}-v{EXPORT_VERSION}bn.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX with its normalisation layers kept (once; cached at %s)", model.folder, path)
        fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=cache)
        os.close(fd)
        try:
            _trace(model.net, size, Path(tmp), simplify=True, keep_batchnorm=True)
            placeholders = {k: (np.zeros_like(v) if k.endswith("mean") else np.ones_like(v))
                            for k, v in batchnorm_statistics(model.net).items()}
            _write_statistics(Path(tmp), path, placeholders, fold=False)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path


def _write_statistics(template: Path, path: Path, statistics: dict[str, np.ndarray], fold: bool = True) -> None:
    """Write ``template`` with its BatchNorm statistics replaced by ``statistics`` to ``path`` (atomically);
    ``fold`` then folds the BatchNorm layers into the convolutions, as every export is."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(template))
    inits = {t.name: t for t in proto.graph.initializer}
    kept = {n.input[i] for n in proto.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    if set(statistics) != kept or not kept.issubset(inits):
        raise ModelError(f"{template}: its BatchNorm statistics do not match the network's; delete the file "
                         "(it is a cache) and run again")
    for name, value in statistics.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    # not mkstemp: its files are private (0600), and this one may become a cache file others read
    tmp = str(path.parent / f".stats.{os.getpid()}.{uuid.uuid4().hex[:12]}.onnx")
    folded = tmp[: -len(".onnx")] + ".basic.onnx"
    try:
        onnx.save(proto, tmp)
        if fold:
            _constant_fold(tmp, folded)
        os.replace(folded if fold else tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(folded).unlink(missing_ok=True)


def int8_path(model: LoadedModel, calibration: Calibration) -> Path:
    """Where the int8 copy of the model's fp32 export, calibrated on ``calibration``, is cached."""
    fp32 = export_onnx(model)
    key = hashlib.sha256(f"{file_sha256(fp32)}|{calibration.key}|{INT8_VERSION}".encode()).hexdigest()
    return fp32.with_name(fp32.stem + f"-int8v{INT8_VERSION}-{key[:16]}.onnx")


def agreement_path(int8_file: Path) -> Path:
    """The record of the int8 file's check against fp32 (:func:`quantize_onnx`), beside it."""
    return int8_file.with_name(int8_file.stem + ".agreement.json")


def read_agreement(int8_file: Path) -> dict[str, Any] | None:
    """The int8 file's recorded check against fp32, or None (not recorded, e.g. a file of an older version)."""
    try:
        return json.loads(agreement_path(int8_file).read_text())
    except (OSError, ValueError):
        return None


def output_agreement(fp32: Sequence[np.ndarray], int8: Sequence[np.ndarray], task: str) -> dict[str, Any]:
    """How far the int8 network outputs are from fp32 on the same inputs: pooled foreground IoU at 0.5 (channel
    0; a ``centers`` heatmap has no foreground, so None there), and the mean and largest absolute difference."""
    a = np.stack([np.asarray(x, np.float32) for x in fp32])
    b = np.stack([np.asarray(x, np.float32) for x in int8])
    if a.shape != b.shape:
        raise ValueError(f"fp32 outputs {a.shape} and int8 outputs {b.shape} must have one shape")
    diff = np.abs(a - b)
    iou = None
    if task != "centers":
        fa, fb = ((v[:, :, 0] if v.ndim == 5 else v) > 0.5 for v in (a, b))  # (N, 1, C, S, S): channel 0
        union = int((fa | fb).sum())
        iou = 1.0 if union == 0 else float((fa & fb).sum() / union)
    return {"foreground_iou": iou, "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "inputs": int(a.shape[0])}


def _check_int8(int8_file: str | os.PathLike, inputs: Sequence[np.ndarray], fp32_outputs: Sequence[np.ndarray],
                task: str) -> dict[str, Any]:
    """:func:`output_agreement` of the int8 graph in ``int8_file`` against ``fp32_outputs`` on ``inputs``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = False  # a short check: no arena kept beside the runner's own session
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(int8_file), opts, providers=["CPUExecutionProvider"])
    return output_agreement(fp32_outputs, [session.run(None, {"x": x})[0] for x in inputs], task)


def quantize_onnx(model: LoadedModel | str | os.PathLike, calibration: Calibration) -> Path:
    """Static int8 quantisation of the model's cached ONNX export (see the module notes); returns its path.

    Memory: the calibration inputs are made first (one frame at a time; only the chosen inputs are kept, ~1.8 MB
    each) and the frames freed before ONNX Runtime's calibration session runs, so the two peaks never add up.
    The check against fp32 (:func:`output_agreement`, recorded in :func:`agreement_path`) runs after the
    calibration session is gone.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if not isinstance(model, LoadedModel):
        model = load_model_folder(model)
    fp32 = export_onnx(model)
    path = int8_path(model, calibration)
    if path.is_file():
        return path
    log.info("quantising %s to int8 (once for these data; calibrated on %s; cached at %s)", model.folder,
             calibration.description, path)
    size = int(model.config.get("input_size", 384))
    inputs: list[np.ndarray] = []
    for x in calibration.inputs():
        x = np.asarray(x, np.float32)
        x = x[None] if x.ndim == 3 else x
        if x.shape[1:] != (3, size, size):
            raise ModelError(f"{model.folder}: calibration input of shape {x.shape}, the network takes "
                             f"(B, 3, {size}, {size})")
        inputs.extend(np.ascontiguousarray(one[None]) for one in x)
    if not inputs:
        raise ModelError(f"no int8 calibration input from {calibration.description} (constant frames?); "
                         "give other frames with --calibrate DIR")
    stream = iter({"x": x} for x in inputs)

    class _Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(stream, None)

    fd, tmp = tempfile.mkstemp(prefix=".int8.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    hint = _DropMessage("pre-processing before quantization")  # advice on the root logger: not for our users
    logging.getLogger().addFilter(hint)
    try:
        check = [int(i) for i in evenly_spaced(len(inputs), AGREEMENT_INPUTS)]
        with tempfile.TemporaryDirectory(prefix=".calibrate.", dir=path.parent) as work:
            ranges = Path(work) / "ranges.json"
            outputs = _calibrate_ranges(fp32, _Reader(), Path(work) / "augmented.onnx", ranges, keep=check)
            quantize_static(str(fp32), tmp, None, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                            calibration_cache_path=str(ranges))
        shutil.copymode(fp32, tmp)  # mkstemp makes the file private; give it the export's permissions
        if outputs:
            record = _check_int8(tmp, [inputs[i] for i in check], outputs, str(model.config.get("task", "seg")))
            record["calibration"] = calibration.description
            write_json_atomic(agreement_path(path), record)
        os.replace(tmp, path)
    finally:
        logging.getLogger().removeFilter(hint)
        Path(tmp).unlink(missing_ok=True)
    return path


def evenly_spaced(total: int, n: int) -> np.ndarray:
    """Up to ``n`` distinct indices evenly spaced over ``range(total)``, first and last included."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def _calibrate_ranges(fp32: Path, reader: Any, augmented: Path, out: Path,
                      keep: Sequence[int] = ()) -> list[np.ndarray]:
    """Min/max activation ranges of ``fp32`` over the reader's inputs (ONNX Runtime's MinMax calibrator), saved as
    a calibration cache for ``quantize_static``. Returns the fp32 network outputs of the inputs numbered ``keep``
    (in order; empty when this ONNX Runtime's calibrator is not the one this was written against).

    ONNX Runtime's calibrator is used with two changes that keep its arithmetic and its ranges (min of the
    minima, max of the maxima, bit for bit):

    - its session runs without the memory arena and without memory patterns: with them, quantising one model
      peaked at 2.9 GB resident (of which ~0.9 GB is the Python process with torch), without them at 1.9 GB;
    - the ranges are merged after every input instead of once at the end. ``collect_data`` keeps every
      input's ~850 small reduction outputs until the end, and the process grew with the number of inputs
      (TRIC model alone in a bare process: peak 1.51 GB for 4 inputs, 2.10 GB for 12); merged per input it
      stays at 1.08-1.10 GB for either. (ONNX Runtime's own ``max_intermediate_outputs`` option cannot be
      used instead: in 1.32 it drops the collected outputs without merging them.)
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(fp32, None, augmented_model_path=str(augmented),
                                   calibrate_method=CalibrationMethod.MinMax)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator's own session
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(augmented), opts, providers=["CPUExecutionProvider"])
    calibrator.infer_session = session
    if not all(hasattr(calibrator, a) for a in ("intermediate_outputs", "model_original_outputs",
                                                "clear_collected_data")):
        # another ONNX Runtime than the one this was written against: its own collect-then-merge (more memory)
        calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), out)
        return []
    names = [o.name for o in session.get_outputs()]
    first_output = next(i for i, name in enumerate(names) if name in calibrator.model_original_outputs)
    wanted, kept = set(keep), []
    for n_seen in itertools.count():
        inputs = reader.get_next()
        if inputs is None:
            break
        values = session.run(None, inputs)
        if n_seen in wanted:
            kept.append(np.array(values[first_output]))
        calibrator.intermediate_outputs.append(
            [None if name in calibrator.model_original_outputs else v for name, v in zip(names, values, strict=True)])
        calibrator.compute_data()  # merges this input's ranges into calibrator.calibrate_tensors_range
        calibrator.clear_collected_data()
    ranges = calibrator.compute_data()
    if ranges is None:
        raise ModelError("no int8 calibration input reached the calibrator")
    save_tensors_data(ranges, out)
    return kept


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _log_agreement(model: LoadedModel, record: dict[str, Any] | None) -> None:
    """One line on how far int8 moves this network's output on the calibration inputs; a warning when far."""
    if record is None:
        log.info("%s: int8 graph without a recorded check against fp32 (quantised by an older version of this "
                 "package, or with an ONNX Runtime whose calibrator gives no outputs)", model.folder)
        return
    iou = record.get("foreground_iou")
    what = (f"foreground IoU {iou:.3f}" if iou is not None else "no foreground (heatmap)") + (
        f", mean |difference| {record['mean_abs_diff']:.4f} on {record['inputs']} calibration inputs")
    if iou is not None and iou < AGREEMENT_WARN:
        log.warning("%s: int8 moves this network's output on your frames (int8 vs fp32 %s, below %.2f); masks "
                    "will differ from the exact fp32 ones: for results you score use fp32 (the default)",
                    model.folder, what, AGREEMENT_WARN)
    else:
        log.info("%s: int8 vs fp32 %s", model.folder, what)


class OnnxRunner:
    """Runs an exported network with ONNX Runtime on the CPU: (B, 3, S, S) -> (B, S, S) probabilities.

    ``int8`` runs the statically quantised graph (:func:`quantize_onnx`, calibrated on ``calibration``, which
    int8 needs) instead of the exact fp32 one.
    """

    def __init__(self, model: LoadedModel, threads: int | None = None, simplify: bool = True,
                 int8: bool = False, calibration: Calibration | None = None) -> None:
        import onnxruntime as ort

        self.input_size = int(model.config.get("input_size", 384))
        self.precision = "int8" if int8 else "fp32"
        if int8 and calibration is None:
            raise ModelError("int8 needs calibration frames (the sequence being segmented or --calibrate DIR)")
        path = quantize_onnx(model, calibration) if int8 else export_onnx(model, self.input_size, simplify=simplify)
        # int8: the recorded check against fp32 on the calibration inputs (output_agreement), or None
        self.agreement = read_agreement(path) if int8 else None
        if int8:
            _log_agreement(model, self.agreement)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if model.transient:  # loaded: an adapted network's files are not kept
            for f in {path, export_onnx(model, self.input_size, simplify=simplify), agreement_path(path)}:
                f.unlink(missing_ok=True)
        self.device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"ONNX model expects {self.input_size}x{self.input_size} inputs, got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": arr})[0])
