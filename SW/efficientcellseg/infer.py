"""Inference: a CTC sequence in, one uint16 ``maskTTT.tif`` per frame out.

Per sequence, models that ask for it first adapt their normalisation statistics to a few of its frames
(adapt.py). Per frame: read -> (optional noise-adaptive smoothing, see denoise.py) -> Context Aware Pseudocoloring
(all slices at once) -> network on batches of slices (or of overlapping tiles for large frames, Gaussian-blended)
-> dataset-specific post-processing -> atomic write.
Reading the next frame and writing the previous one overlap with the network through a small thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from efficientcellseg.ctc_io import Frame, check_output_dir, list_frames, read_frame, write_mask
from efficientcellseg.datasets import DatasetConfig, get_dataset
from efficientcellseg.denoise import DenoiseSettings, denoise_frame, denoise_plan, signal_settings, smooth_stack
from efficientcellseg.errors import ModelError
from efficientcellseg.log import StageTimer, progress
from efficientcellseg.onnx_backend import evenly_spaced
from efficientcellseg.preprocess import check_scale, network_shape, resize_to_network, rescale_frame, restore_labels
from efficientcellseg.weights import LoadedModel, default_models_dir, gives_centres, load_model_folder

if TYPE_CHECKING:
    from efficientcellseg.onnx_backend import Calibration

log = logging.getLogger(__name__)


def select_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error, whatever exception type carries it."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class BatchFallback:
    """Runs ``fn`` on a (B, ...) batch in chunks; on out-of-memory halves the chunk and retries.

    The smaller chunk size is remembered for later calls (memory use of one frame predicts the next), and
    each reduction is logged. A single-item chunk that still runs out of memory re-raises the error.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str = "network") -> None:
        self.fn = fn
        self.name = name
        self.max_batch: int | None = None
        """Largest chunk known to fit; ``None`` until an out-of-memory error was seen."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        size = min(n, self.max_batch or n)
        outs: list[torch.Tensor] = []
        start = 0
        while start < n:
            try:
                outs.append(self.fn(x[start : start + size]))
                start += size
                continue
            except Exception as exc:  # noqa: BLE001 - re-raised unless it is an out-of-memory error
                if not is_out_of_memory(exc) or size == 1:
                    raise
            new = max(1, size // 2)
            log.warning("%s: out of memory on a batch of %d; falling back to batches of %d", self.name, size, new)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = self.max_batch = new
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class SharedOutputs:
    """One forward pass of a network with several output channels, served to several consumers by name.

    ``outputs()`` gives one runner per channel (``(B, h, w)`` each). Runners called in turn on the *same*
    input tensor share one pass of the network: the last input and output are kept, and an identical object
    (``is``) returns the stored output. MDA231's two-output model gives foreground and centre heatmap this way.
    """

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], names: tuple[str, ...]) -> None:
        self.runner = runner
        self.names = names
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.passes = 0
        """Number of network passes made (for tests and timing)."""

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        y = self.runner(x)
        if y.ndim != 4 or y.shape[1] != len(self.names):
            raise ModelError(f"the network gave outputs of shape {tuple(y.shape)}; expected {len(self.names)} "
                             f"channels ({', '.join(self.names)})")
        self.passes += 1
        self._last = (x, y)
        return y

    def outputs(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """``{name: runner}`` with each runner returning its channel as (B, h, w); its ``network`` attribute is the
        shared network runner (e.g. to check its backend and precision)."""
        return {name: _Channel(self, k) for k, name in enumerate(self.names)}


class _Channel:
    """One output channel of a :class:`SharedOutputs` network, callable like a one-output runner."""

    def __init__(self, shared: SharedOutputs, k: int) -> None:
        self.shared, self.k = shared, k

    @property
    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The shared network's runner."""
        return self.shared.runner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared._run(x)[:, self.k]


class TorchRunner:
    """Runs a network on (B, 3, h, w) batches at network scale and returns (B, h, w) sigmoid probabilities
    ((B, C, h, w) for a network with C > 1 outputs, see :class:`SharedOutputs`).

    ``precision``: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``fp16`` (CUDA only) or ``bf16``
    (autocast; on CPUs with native bfloat16 support, e.g. AVX512-BF16/AMX, about 1.4x faster than fp32).
    ``compile``: wrap the network in ``torch.compile`` (one-off compile cost of tens of seconds); if compiling
    fails the eager network is used and a warning is logged. Batches that run out of GPU memory are split
    (:class:`BatchFallback`).
    """

    def __init__(self, model: LoadedModel, device: torch.device, precision: str = "auto",
                 compile: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp16" and device.type != "cuda":
            raise ModelError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        if precision == "int8":
            raise ModelError("precision int8 runs with ONNX Runtime on the CPU, not with PyTorch")
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        if precision == "bf16" and device.type == "cpu" and not _cpu_has_native_bf16():
            log.warning("bf16 on this CPU is emulated (no AVX512-BF16/AMX): expect it to be slower than fp32")
        self.device = device
        self.precision = precision
        self.net = model.net.to(device).eval().to(memory_format=torch.channels_last)
        self._forward_net: Callable[[torch.Tensor], torch.Tensor] = self.net
        if compile:
            try:
                self._forward_net = torch.compile(self.net, dynamic=False)
            except Exception as exc:  # noqa: BLE001 - torch.compile raises many types when unsupported
                log.warning("torch.compile unavailable (%s); running the network eagerly", exc)
        self._chunked = BatchFallback(self._forward, name=f"network on {device}")

    @property
    def max_batch(self) -> int | None:
        """Chunk size learned after an out-of-memory error (``None`` while none happened)."""
        return self._chunked.max_batch

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.precision == "fp32":
                y = self._forward_net(x)
            else:
                dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
                with torch.autocast(self.device.type, dtype=dtype):
                    y = self._forward_net(x)
            y = torch.sigmoid(y.float())
            return y[:, 0] if y.shape[1] == 1 else y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._chunked(x)


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) back to ``size`` (align_corners=False); no-op when it matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _cv2_resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes to ``size`` with OpenCV, as float32.

    Same sampling as ``F.interpolate(..., mode="bilinear", align_corners=False)`` (half-pixel centres, no
    antialiasing; differences ~1e-5), but ~100x faster on the CPU than a small torch op, whose intra-op thread
    pool costs ~12 ms per call on a 2-core machine while ONNX Runtime's threads are busy.
    """
    import cv2

    h, w = int(size[0]), int(size[1])
    if tuple(a.shape[-2:]) == (h, w):
        return np.ascontiguousarray(a, dtype=np.float32)
    flat = a.reshape((-1,) + tuple(a.shape[-2:]))
    out = np.empty((flat.shape[0], h, w), np.float32)
    for i, img in enumerate(flat):
        out[i] = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(tuple(a.shape[:-2]) + (h, w))


def predict_slices(
    runners: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    pc: np.ndarray,
    cfg: DatasetConfig,
    batch_size: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Probability maps (Z, Y, X) float32 for every runner, from a pseudocolored stack (Z, 3, Y, X).

    Whole-slice datasets: each slice is resized to the network input and the output back (bilinear); all
    runners share the resized batch. Tiled datasets: overlapping tiles of ``cfg.tile_size`` are scaled to the
    network input and blended. ``pc`` may be float16: it is cast to float32 one batch at a time. On the CPU the
    resizing is done with OpenCV (:func:`_cv2_resize`), on a GPU with torch on the device.
    """
    z, _, ny, nx = pc.shape
    on_cpu = device.type == "cpu"

    def to_net(batch: np.ndarray) -> torch.Tensor:
        if on_cpu:
            return torch.from_numpy(_cv2_resize(batch, network_shape(cfg, tuple(batch.shape[-2:]))))
        xb = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device, non_blocking=True)
        return resize_to_network(xb, cfg)

    def from_net(p: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        if on_cpu:
            return _cv2_resize(p.detach().float().cpu().numpy(), size)
        return _resize(p[:, None].float(), size)[:, 0].cpu().numpy()

    if cfg.tile_size is None:
        out = {name: np.empty((z, ny, nx), np.float32) for name in runners}
        for s in range(0, z, batch_size):
            xb = to_net(pc[s : s + batch_size])
            for name, run in runners.items():
                out[name][s : s + batch_size] = from_net(run(xb), (ny, nx))
        return out

    from efficientcellseg.tiling import predict_tiled

    tile = cfg.tile_size
    out = {}
    for name, run in runners.items():

        def fn(tiles: np.ndarray, run=run) -> np.ndarray:
            return from_net(run(to_net(tiles)), (tile, tile))

        out[name] = predict_tiled(pc, fn, tile=tile, overlap=cfg.tile_overlap, batch_size=batch_size)
    return out


PC_FLOAT32_MAX_BYTES = 256 * 2**20
"""Pseudocolored stacks larger than this as float32 are held as float16 (values in [0, 1]: 11-bit mantissa)."""


@dataclass
class Segmenter:
    """Everything needed to turn one raw frame into a label volume, for one dataset."""

    cfg: DatasetConfig
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]]
    params: dict[str, Any]
    device: torch.device
    batch_size: int
    pseudocolor: bool = True
    timer: StageTimer = field(default_factory=StageTimer)
    shared_forward: bool = False
    """True when all outputs come from one network pass (MDA231's two-output model)."""
    denoise: DenoiseSettings | None = None
    """Noise-adaptive smoothing before pseudocoloring (from the segmentation model's config.json; None: the
    paper's input). The raw-signal map of the post-processing follows it (:func:`signal_settings`)."""
    own_inputs: dict[str, DenoiseSettings | None] = field(default_factory=dict)
    """Per network (``centers``), its own folder's input setting where it differs from :attr:`denoise`: that
    network is fed a second pseudocolored stack made as its folder says. Empty: all networks share one input."""
    folders: tuple[Path, ...] = ()
    """The model folders the runners were loaded from (for the log)."""
    scale: float = 1.0
    """The raw frame is resampled in xy by this factor before everything else and the labels back to the frame's
    size afterwards (:func:`~efficientcellseg.preprocess.rescale_frame`; 1: as recorded)."""
    autoscale: dict[str, float] | None = None
    """The segmentation model's ``config.json`` key ``autoscale`` (``reference``, optional ``min``) for
    ``--scale auto`` (:func:`sequence_scale`); None: the model has none."""
    int8_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """int8: per network (``seg``, ``centers``), its recorded check against fp32 on the calibration inputs
    (:func:`~efficientcellseg.onnx_backend.output_agreement`); empty for fp32."""

    def probabilities(self, raw: np.ndarray, all_slices: bool = False) -> dict[str, Any]:
        """Network outputs (``seg`` and, for MDA231, ``centers``) as (Z, Y, X) float32 in [0, 1].

        When the post-processing reads the raw signal (``signal_fraction``, ``boundary_fraction`` or
        ``grow_fraction`` > 0), ``signal`` is added: the raw frame's signal map (after the input smoothing,
        when the model asks for it) as :class:`~efficientcellseg.postprocess.SignalSlices`, made slice by slice
        where it is read (a full-size TRIC frame's map would be 216 MB). With ``all_slices`` (tuning, which
        post-processes each frame many times) it is the whole map
        (:func:`~efficientcellseg.postprocess.signal_map`).

        The pseudocolored stack of a large frame (more than :data:`PC_FLOAT32_MAX_BYTES` as float32, e.g. a
        13x1745x2440 TRIC frame: 664 MB) is kept as float16 and cast to float32 one batch at a time.

        The centre heatmap is only read inside foreground components (``seg > prob_threshold``), so unless
        ``all_slices`` is set the centre network runs only on slices that contain foreground and the heatmap
        is 0 elsewhere: same labels, fewer forward passes (set ``all_slices`` when the threshold will change,
        e.g. while tuning it).
        """
        from efficientcellseg.cpu_threads import get_threads
        from efficientcellseg.postprocess import SignalSlices, needs_signal, signal_map
        from efficientcellseg.pseudocolor import grey_stack, pseudocolor_stack

        frame_shape = raw.shape
        if self.scale != 1.0:
            with self.timer.stage("rescale"):
                raw = rescale_frame(raw, self.scale)
        dtype = np.float16 if 3 * raw.size * 4 > PC_FLOAT32_MAX_BYTES else np.float32
        signal_raw = None  # the frame the signal map is made from, when it is not the network's input
        own_raw: dict[str, np.ndarray] = {}  # networks whose folders ask for another input
        if self.denoise is not None or self.own_inputs:
            with self.timer.stage("denoise"):
                made: dict[DenoiseSettings | None, np.ndarray] = {None: raw}

                def make(settings: DenoiseSettings | None) -> np.ndarray:
                    if settings not in made:
                        made[settings] = denoise_frame(raw, settings)
                    return made[settings]

                plain = signal_settings(self.denoise)
                if plain is not self.denoise:
                    signal_raw = make(plain)
                own_raw = {name: make(settings) for name, settings in self.own_inputs.items()}
                raw = make(self.denoise)
                del made

        def colour(stack: np.ndarray) -> np.ndarray:
            return (pseudocolor_stack(stack, out_dtype=dtype, threads=get_threads()) if self.pseudocolor
                    else grey_stack(stack, out_dtype=dtype))

        with self.timer.stage("pseudocolor"):
            pc = colour(raw)
            own_pc = {name: colour(stack) for name, stack in own_raw.items()}
        del own_raw
        out = self._network(pc, all_slices, own_pc)
        del pc, own_pc  # before the signal map: a full-size TRIC frame's stack is 324 MB
        if signal_raw is not None:
            raw = signal_raw
        if all_slices:
            with self.timer.stage("signal"):
                out["signal"] = signal_map(raw)
        elif needs_signal(self.cfg.postprocess, self.params):
            out["signal"] = SignalSlices(raw)  # made slice by slice where the post-processing reads it
        if raw.shape != frame_shape:
            out["frame_shape"] = frame_shape  # the labels go back to it (labels())
        return out

    def _network(self, pc: np.ndarray, all_slices: bool, own_pc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.timer.stage("network"):
            if all_slices or self.shared_forward or self.cfg.postprocess != "centers_watershed":
                out = predict_slices({t: r for t, r in self.runners.items() if t not in own_pc}, pc, self.cfg,
                                     self.batch_size, self.device)
                for name, own in own_pc.items():
                    out.update(predict_slices({name: self.runners[name]}, own, self.cfg, self.batch_size,
                                              self.device))
                return out
            out = predict_slices({"seg": self.runners["seg"]}, pc, self.cfg, self.batch_size, self.device)
            need = np.flatnonzero((out["seg"] > self.params["prob_threshold"]).any(axis=(1, 2)))
            centers = np.zeros_like(out["seg"])
            if need.size:
                part = predict_slices({"centers": self.runners["centers"]}, own_pc.get("centers", pc)[need],
                                      self.cfg, self.batch_size, self.device)
                centers[need] = part["centers"]
            log.debug("centre network on %d of %d slices (the others have no foreground)", need.size, len(pc))
            out["centers"] = centers
            return out

    def labels(self, probs: Mapping[str, Any]) -> np.ndarray:
        """uint16 labels (Z, Y, X) from the network outputs of :meth:`probabilities` (post-processing)."""
        from efficientcellseg.postprocess import postprocess

        with self.timer.stage("postprocess"):
            labels = postprocess(self.cfg.postprocess, probs["seg"], self.params, centers=probs.get("centers"),
                                 signal=probs.get("signal"))
        if "frame_shape" in probs:
            with self.timer.stage("rescale"):
                labels = restore_labels(labels, probs["frame_shape"][1:])
        return labels

    def segment(self, raw: np.ndarray) -> np.ndarray:
        """uint16 labels (Z, Y, X) for one raw frame."""
        if raw.max() == raw.min():
            return np.zeros(raw.shape, np.uint16)
        return self.labels(self.probabilities(raw))


def segment_frame_file(seg: Segmenter, frame_path: Path, mask_path: Path, preview_path: Path | None = None) -> None:
    """Read one raw frame, segment it and write its mask atomically: one frame, nothing overlapped.

    The per-frame unit of work of a cluster worker (:mod:`efficientcellseg.distributed`); the masks are the same
    bytes as :func:`predict_sequence` writes. Unreadable frames raise the same :class:`CTCInputError`.
    """
    with seg.timer.stage("read"):
        raw = read_frame(frame_path, max_z=seg.cfg.max_z)
    if raw.max() == raw.min():
        log.warning("%s: frame is constant (empty); writing an empty mask", frame_path)
    labels = seg.segment(raw)
    if preview_path is not None:
        from efficientcellseg.preview import write_preview

        write_preview(Path(preview_path), raw, labels)
    with seg.timer.stage("write"):
        write_mask(mask_path, labels)


def resolve_model_dir(cfg: DatasetConfig, task: str, given: Path | None, seg_dir: Path | None = None) -> Path:
    """The model folder to use: the one given, else ``models/<name>`` shipped with the package. A centre folder
    not given is the one beside the segmentation folder ``seg_dir`` when there is one (a pair kept together in
    one model set), else the shipped one as before (``predict`` logs which folders it loaded)."""
    if given is not None:
        return Path(given)
    if task not in cfg.models:
        raise ModelError(f"dataset {cfg.key} has no {task!r} model")
    if task != "seg" and seg_dir is not None:
        beside = Path(seg_dir).parent / cfg.models[task]
        if (beside / "config.json").is_file():
            return beside
    return default_models_dir() / cfg.models[task]


def model_folders(cfg: DatasetConfig, models_dir: Path | None = None) -> dict[str, Path]:
    """``{task: folder}`` a run of the dataset loads from ``models_dir`` (default: the shipped ``models/``): every
    model of the dataset, except that a ``seg`` folder giving the centre heatmap itself (task ``seg_centers``,
    MDA231 as one network) is the whole set. Reads only ``config.json``; a missing folder is left to the loader."""
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    out = {task: root / name for task, name in cfg.models.items()}
    return {"seg": out["seg"]} if folder_gives_centres(out["seg"]) else out


def folder_gives_centres(folder: Path) -> bool:
    """True when the model folder's ``config.json`` says its network also outputs the centre heatmap (task
    ``seg_centers``); False when it does not or cannot be read (loading the folder reports that properly)."""
    import json

    try:
        return gives_centres(json.loads((Path(folder) / "config.json").read_text()))
    except (OSError, ValueError):
        return False


def build_segmenter(
    dataset: str,
    model_dir: Path | None = None,
    centers_model_dir: Path | None = None,
    device: str = "auto",
    backend: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    calibration_frames: Sequence[Path] | None = None,
    denoise: bool = True,
    adapt_frames: Sequence[Path | np.ndarray] | None = None,
    scale: float = 1.0,
) -> Segmenter:
    """Load and verify the dataset's model folder(s) and prepare the runners and post-processing parameters.

    A segmentation folder whose task is ``seg_centers`` (one network, outputs foreground and centre heatmap)
    serves both outputs and no centre folder is loaded; otherwise MDA231 uses a second, centre network (the
    paper's configuration).

    ``precision`` (see :class:`TorchRunner`): ``auto`` keeps fp32 on the CPU (ONNX Runtime) and fp16 autocast
    on CUDA; ``bf16`` trades exactness for speed on CPUs with native bfloat16; ``int8`` needs
    ``calibration_frames`` (raw frame files, e.g. :func:`choose_calibration_frames` of the sequence to segment).
    ``denoise=False`` ignores the models' noise-adaptive input smoothing (``config.json`` key ``denoise``) and
    feeds the network exactly as the paper does. ``adapt_frames`` (raw frame files or arrays of the sequence to
    segment, e.g. :func:`choose_calibration_frames`): models whose ``config.json`` asks for it (key ``norm_adaptation``)
    get their normalisation statistics adapted to these frames (:mod:`efficientcellseg.adapt`); ``None``
    keeps the trained statistics. ``scale`` (0.25-4): every frame, those of the adaptation and the int8
    calibration included, is resampled in xy by it before the network and the labels back afterwards.
    """
    try:
        scale = check_scale(scale)
    except ValueError as exc:
        raise ModelError(f"--scale: {exc}") from None
    cfg = get_dataset(dataset)
    dev = select_device(device)
    models = {"seg": load_model_folder(resolve_model_dir(cfg, "seg", model_dir), device="cpu")}
    two_outputs = gives_centres(models["seg"].config)
    if two_outputs and centers_model_dir is not None:
        raise ModelError(f"{models['seg'].folder} gives the centre heatmap itself (task seg_centers); "
                         "leave out the centre model")
    if cfg.postprocess == "centers_watershed" and not two_outputs:
        models["centers"] = load_model_folder(resolve_model_dir(cfg, "centers", centers_model_dir, model_dir),
                                              device="cpu")
    pseudo = {bool(m.config.get("pseudocolor", True)) for m in models.values()}
    if len(pseudo) != 1:
        raise ModelError("the segmentation and centre models disagree on pseudocoloring; retrain one of them")
    inputs = _denoise_settings(models) if denoise else dict.fromkeys(models)
    denoise_settings = inputs["seg"]
    own_inputs = {t: d for t, d in inputs.items() if d != denoise_settings}
    if own_inputs:
        log.info("%s: fed its own input (%s), the segmentation network %s", ", ".join(own_inputs),
                 "; ".join(d.key() if d else "the paper's" for d in own_inputs.values()),
                 denoise_settings.key() if denoise_settings else "the paper's")
    for t, m in models.items():
        if m.config.get("dataset") not in (None, cfg.key):
            log.warning("%s: trained for dataset %s, used for %s", m.folder, m.config.get("dataset"), cfg.key)
        if int(m.config.get("input_size", cfg.input_size)) != cfg.input_size:
            raise ModelError(f"{m.folder}: input_size {m.config.get('input_size')} != {cfg.input_size}")
    params = dict(cfg.postprocess_defaults)
    for m in models.values():
        params.update(m.thresholds)
    timer = StageTimer()
    if adapt_frames and wants_adaptation_config(models):
        with timer.stage("adapt"):
            models = adapt_models(models, adapt_frames, cfg, next(iter(pseudo)), inputs, scale)
    calibration: dict[str, Calibration | None] = dict.fromkeys(models)
    if precision == "int8":
        if not calibration_frames:
            raise ModelError("precision int8 needs calibration frames (the sequence to segment or --calibrate DIR)")
        by_input = {d: int8_calibration(calibration_frames, cfg, next(iter(pseudo)), denoise=d, scale=scale)
                    for d in set(inputs.values())}
        calibration = {t: by_input[d] for t, d in inputs.items()}
    # an adapted network gets its own ONNX graph (make_runner): part of the adaptation's cost
    adapted = any(m.transient for m in models.values())
    if adapted and precision == "int8":
        log.warning("int8 with the normalisation adapted to the sequence: the adapted network is quantised again "
                    "for every sequence (not cached; about 30 s on 2 cores), which short sequences do not win "
                    "back; exact fp32 (the default) or --no-adapt avoid it")
    with timer.stage("adapt") if adapted else contextlib.nullcontext():
        if two_outputs:
            shared = make_runner(models["seg"], dev, backend, precision, calibration["seg"])
            checks = {"seg": getattr(shared, "agreement", None)}
            runners = SharedOutputs(shared, ("seg", "centers")).outputs()
        else:
            runners = {t: make_runner(m, dev, backend, precision, calibration[t]) for t, m in models.items()}
            checks = {t: getattr(r, "agreement", None) for t, r in runners.items()}
    if batch_size is None:
        batch_size = 16 if dev.type == "cuda" else 1
    if batch_size < 1:
        raise ModelError(f"--batch-size must be >= 1, got {batch_size}")
    auto = models["seg"].config.get("autoscale")
    return Segmenter(cfg, runners, params, dev, batch_size, pseudocolor=pseudo.pop(), shared_forward=two_outputs,
                     denoise=denoise_settings, own_inputs=own_inputs, timer=timer,
                     folders=tuple(Path(m.folder) for m in models.values()),
                     scale=scale, autoscale=dict(auto) if isinstance(auto, dict) else None,
                     int8_checks={t: c for t, c in checks.items() if c is not None})


def sequence_scale(dataset: str, frames: Sequence[Path], model_dir: Path | None = None,
                   centers_model_dir: Path | None = None, device: str = "auto", backend: str = "auto",
                   denoise: bool = True) -> float:
    """``--scale auto``: the scale that brings a sequence's objects to the size the network was trained on
    (:func:`sequence_scales` of one sequence)."""
    return sequence_scales(dataset, [frames], model_dir, centers_model_dir, device, backend, denoise)[0]


def sequence_scales(dataset: str, sequences: Sequence[Sequence[Path]], model_dir: Path | None = None,
                    centers_model_dir: Path | None = None, device: str = "auto", backend: str = "auto",
                    denoise: bool = True) -> list[float]:
    """``--scale auto`` for each sequence (its frames, or its folder), with one network for all of them.

    Per sequence, :func:`measured_scale`, with the network in
    fp32 and its trained normalisation statistics. Datasets whose slices are resized whole to the network (MDA231,
    A549-SIM) get 1 with a warning: their network input does not depend on the scale.
    """
    cfg = get_dataset(dataset)
    if cfg.tile_size is None:
        log.warning("%s: --scale auto applies to tiled datasets (TRIC); %s resizes every slice whole to the "
                    "network, so the scale is 1 (give --scale S to change its post-processing's pixel sizes)",
                    cfg.key, cfg.key)
        return [1.0] * len(sequences)
    seg = build_segmenter(dataset, model_dir, centers_model_dir, device, backend, denoise=denoise)
    return [measured_scale(seg, frames) for frames in sequences]


def measured_scale(seg: Segmenter, frames: Path | Sequence[Frame]) -> float:
    """:func:`frame_scale` of the middle one of a sequence's :func:`choose_calibration_frames` (a sequence folder
    or its listed frames)."""
    picks = choose_calibration_frames(frames)
    return frame_scale(seg, read_frame(picks[len(picks) // 2], max_z=seg.cfg.max_z))


def frame_scale(seg: Segmenter, raw: np.ndarray) -> float:
    """The scale that :mod:`efficientcellseg.autoscale` chooses on one raw (Z, Y, X) frame with ``seg``'s network.

    A window of the frame is run at each of :data:`~efficientcellseg.autoscale.CANDIDATES`; the least undecided
    scale divided by the model's ``autoscale.reference`` is the result, at least ``autoscale.min``.
    """
    from efficientcellseg.autoscale import least_ambiguous, probe_window, relative_scale

    auto = seg.autoscale or {}
    where = seg.folders[0] if seg.folders else "the model"
    if "reference" not in auto:
        raise ModelError(f"{where}: config.json has no autoscale.reference, so --scale auto cannot be used with "
                         "this model; give --scale S (S > 1 for objects smaller than the training data's)")
    with seg.timer.stage("autoscale"):
        best, ratios = least_ambiguous(lambda w, s: replace(seg, scale=s).probabilities(w)["seg"],
                                       [probe_window(raw)])
    try:
        scale = max(relative_scale(best, float(auto["reference"])), float(auto.get("min", 0.25)))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: config.json autoscale: {exc}") from None
    log.info("%s: --scale auto: %g (least undecided at %g, model reference %g; undecided per foreground pixel %s)",
             seg.cfg.key, scale, best, float(auto["reference"]),
             ", ".join(f"{s:g}: {r:.3f}" for s, r in ratios.items()))
    return scale


def wants_adaptation(cfg: DatasetConfig, model_dir: Path | None = None, centers_model_dir: Path | None = None
                     ) -> bool:
    """True when one of the dataset's model folders asks for normalisation adaptation (``norm_adaptation`` in
    its ``config.json``; read without loading the weights)."""
    import json

    from efficientcellseg.adapt import CONFIG_KEY

    given = {"seg": model_dir, "centers": centers_model_dir}
    for task in cfg.models:
        config = resolve_model_dir(cfg, task, given.get(task), model_dir) / "config.json"
        try:
            if json.loads(config.read_text()).get(CONFIG_KEY):
                return True
        except (OSError, ValueError):
            continue  # loading the folder reports it properly
    return False


def wants_adaptation_config(models: Mapping[str, LoadedModel]) -> bool:
    """True when a loaded model's ``config.json`` has a non-empty ``norm_adaptation`` entry (valid or not: an
    invalid one is reported by :func:`adapt_models`), the same test as :func:`wants_adaptation` on the files."""
    from efficientcellseg.adapt import CONFIG_KEY

    return any(m.config.get(CONFIG_KEY) for m in models.values())


def adapt_models(models: Mapping[str, LoadedModel], frames: Sequence[Path | np.ndarray], cfg: DatasetConfig,
                 pseudocolor: bool, denoise: Mapping[str, DenoiseSettings | None], scale: float = 1.0
                 ) -> dict[str, LoadedModel]:
    """The models, those whose config asks for it with their normalisation adapted to ``frames`` (raw frame
    files or arrays, resampled by ``scale`` as inference does; :func:`efficientcellseg.adapt.adapted_model` on
    :data:`CALIBRATION_INPUTS` network inputs per frame, each made with that model's input setting
    ``denoise[task]``)."""
    from efficientcellseg.adapt import AdaptSettings, adapted_model

    try:
        settings = {t: AdaptSettings.from_config(m.config) for t, m in models.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"a model's config.json has an invalid 'norm_adaptation' entry ({exc}); fix or remove it"
                         ) from None
    if not any(settings.values()):
        return dict(models)
    inputs: dict[DenoiseSettings | None, list[np.ndarray]] = {denoise.get(t): [] for t in models if settings[t]}
    for f in frames:
        raw = rescale_frame(f if isinstance(f, np.ndarray) else read_frame(f, max_z=cfg.max_z), scale)
        for d, found in inputs.items():
            found.extend(network_inputs(raw, cfg, pseudocolor, CALIBRATION_INPUTS, d))
    return {t: adapted_model(m, inputs[denoise.get(t)], settings[t]) if settings[t] else m for t, m in models.items()}


def _denoise_settings(models: Mapping[str, LoadedModel]) -> dict[str, DenoiseSettings | None]:
    """Each loaded model's input setting (``config.json`` key ``denoise``; None: the paper's input). Models that
    differ are each fed as their own folder says (:attr:`Segmenter.own_inputs`)."""
    found = {}
    for t, m in models.items():
        try:
            found[t] = DenoiseSettings.from_config(m.config)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{m.folder}: config.json has an invalid 'denoise' entry ({exc}); fix or remove it"
                             ) from None
    return found


def make_runner(model: LoadedModel, device: torch.device, backend: str, precision: str = "auto",
                calibration: Calibration | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable network runner: PyTorch (any device) or ONNX Runtime (CPU, fp32 or int8).

    ``auto`` picks ONNX Runtime on the CPU in fp32 (the fastest exact path measured, see
    benchmarks/RESULTS.md) and PyTorch otherwise; ``bf16`` on the CPU needs PyTorch, ``int8`` (statically
    quantised, opt-in) needs ONNX Runtime on the CPU and a ``calibration`` (:func:`int8_calibration`).
    """
    if backend not in ("auto", "torch", "onnx"):
        raise ModelError(f"backend must be auto, torch or onnx, got {backend!r}")
    int8 = precision == "int8"
    if int8 and (device.type != "cpu" or backend == "torch" or not _onnx_available()):
        raise ModelError("precision int8 runs with ONNX Runtime on the CPU only: use --device cpu and "
                         "--backend auto or onnx (and install onnxruntime)")
    if backend == "onnx" and (device.type != "cpu" or precision not in ("auto", "fp32", "int8")):
        raise ModelError(f"the onnx backend runs fp32 or int8 on the CPU only (device {device.type}, "
                         f"precision {precision})")
    exact_cpu = device.type == "cpu" and precision in ("auto", "fp32")
    if int8 or backend == "onnx" or (backend == "auto" and exact_cpu and _onnx_available()):
        from efficientcellseg.onnx_backend import OnnxRunner

        return OnnxRunner(model, int8=int8, calibration=calibration)
    return TorchRunner(model, device, precision=precision)


def _onnx_available() -> bool:
    try:
        import efficientcellseg.onnx_backend  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class PredictReport:
    """Summary of one predicted sequence."""

    n_frames: int
    output_dir: Path
    timings: dict[str, float]


def predict_sequence(
    dataset: str,
    input_dir: Path,
    output_dir: Path,
    model_dir: Path | None = None,
    centers_model_dir: Path | None = None,
    device: str = "auto",
    backend: str = "auto",
    batch_size: int | None = None,
    threads: int | None = None,
    preview_dir: Path | None = None,
    precision: str = "auto",
    overlap: bool | None = None,
    calibrate: Path | None = None,
    denoise: bool = True,
    adapt: bool = True,
    scale: float | str = 1.0,
) -> PredictReport:
    """Segment every frame of a CTC sequence folder and write ``maskTTT.tif`` files into ``output_dir``.

    The next frame is read while the current one is processed. With ``overlap`` the post-processing and writing
    of frame t also run while the network processes frame t+1 (one frame in flight, so memory stays bounded);
    ``None`` turns it on with a CUDA device, where the CPU is otherwise idle during the network, and off on the
    CPU, where both compete for the same cores and a second frame's arrays would raise the peak memory.

    ``precision="int8"`` calibrates on :data:`CALIBRATION_FRAMES` frames of ``calibrate`` (a sequence folder),
    by default of ``input_dir`` itself. ``denoise=False``: see :func:`build_segmenter`. ``adapt``: models
    that ask for it adapt their normalisation to :data:`CALIBRATION_FRAMES` frames of ``input_dir``
    (:mod:`efficientcellseg.adapt`); ``False`` keeps the trained statistics. ``scale``: see
    :func:`build_segmenter` (the masks keep the frames' size); ``"auto"``: :func:`measured_scale`, with the
    network that then segments (int8 and the normalisation adaptation depend on the scale, so with them
    :func:`sequence_scale` measures first and the network is built after).
    """
    from efficientcellseg.cpu_threads import set_threads

    if threads:
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    set_threads(threads)  # pseudocoloring and post-processing threads (None: the cores, at most 4)
    frames = list_frames(input_dir)
    cfg = get_dataset(dataset)
    out = check_output_dir(output_dir, input_dir)
    own = choose_calibration_frames(frames)  # the sequence's own frames for the adaptation and int8
    calib = None
    if precision == "int8":
        calib = choose_calibration_frames(calibrate) if calibrate is not None else own
    elif calibrate is not None:
        log.warning("--calibrate %s is ignored: it applies to --precision int8 only", calibrate)
    seg = None
    if scale == "auto" and cfg.tile_size is not None and precision in ("auto", "fp32") and not (
            adapt and wants_adaptation(cfg, model_dir, centers_model_dir)):
        # the network that measures the scale is the one that segments: only the scale changes (built once)
        seg = build_segmenter(dataset, model_dir, centers_model_dir, device, backend, batch_size, precision,
                              denoise=denoise)
        seg = replace(seg, scale=measured_scale(seg, frames))
    elif scale == "auto":  # int8 calibration and adaptation depend on the scale: measure first, then build
        scale = sequence_scale(dataset, frames, model_dir, centers_model_dir, device, backend, denoise)
    if seg is None:
        seg = build_segmenter(dataset, model_dir, centers_model_dir, device, backend, batch_size, precision, calib,
                              denoise, own if adapt else None, float(scale))
    if overlap is None:
        overlap = seg.device.type == "cuda"
    log.info("%s: %d frames from %s on %s (batch %d%s), model %s", cfg.key, len(frames), input_dir, seg.device,
             seg.batch_size, ", post-processing overlapped with the network" if overlap else "",
             " + ".join(str(f) for f in seg.folders))
    timer = seg.timer
    preview_at = {frames[0].index, frames[-1].index} if preview_dir else set()

    def load(fr: Frame) -> np.ndarray:
        with timer.stage("read"):
            return read_frame(fr.path, max_z=cfg.max_z)

    def label(fr: Frame, raw: np.ndarray, probs: dict[str, Any] | None) -> np.ndarray:
        labels = np.zeros(raw.shape, np.uint16) if probs is None else seg.labels(probs)
        if fr.index in preview_at:
            from efficientcellseg.preview import write_preview

            write_preview(Path(preview_dir) / f"{cfg.key}_{Path(input_dir).name}_t{fr.digits}.png", raw, labels)
        return labels

    def save(fr: Frame, labels: np.ndarray) -> None:
        with timer.stage("write"):
            write_mask(out / fr.mask_name, labels)

    def finish(fr: Frame, raw: np.ndarray, probs: dict[str, Any] | None) -> None:
        save(fr, label(fr, raw, probs))

    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as finisher:
        next_raw: Future = reader.submit(load, frames[0])
        pending: Future | None = None
        for i, fr in enumerate(progress(frames, desc=f"{cfg.key} {Path(input_dir).name}", unit="frame")):
            raw = next_raw.result()
            if i + 1 < len(frames):
                next_raw = reader.submit(load, frames[i + 1])
            if raw.max() == raw.min():
                log.warning("%s: frame is constant (empty); writing an empty mask", fr.path)
                probs = None
            else:
                probs = seg.probabilities(raw)
            if overlap:
                if pending is not None:
                    pending.result()  # one frame in flight at most; re-raises a failed post-processing or write
                pending = finisher.submit(finish, fr, raw, probs)
            else:
                labels = label(fr, raw, probs)
                if pending is not None:
                    pending.result()  # re-raises a failed write
                pending = finisher.submit(save, fr, labels)
                del labels
            del raw, probs
        if pending is not None:
            pending.result()
    log.info(timer.summary())
    return PredictReport(len(frames), out, dict(timer.seconds))


# ----------------------------------------------------------------------------------------------- int8 calibration
CALIBRATION_FRAMES = 3
"""int8: frames of a sequence (evenly spaced, first and last included) whose network inputs calibrate it."""
CALIBRATION_INPUTS = 12
"""int8: network inputs taken from each calibration frame (slices or tiles, evenly spaced over the frame)."""


def choose_calibration_frames(seq: Path | Sequence[Frame], n: int = CALIBRATION_FRAMES) -> list[Path]:
    """The raw frame files of a sequence that calibrate int8 (and adapt the normalisation): ``n`` evenly spaced
    ``tTTT.tif`` of a sequence folder, or of its already listed frames."""
    frames = list_frames(seq) if isinstance(seq, (str, os.PathLike)) else list(seq)
    return [frames[i].path for i in evenly_spaced(len(frames), n)]


def network_inputs(raw: np.ndarray, cfg: DatasetConfig, pseudocolor: bool = True,
                   n: int = CALIBRATION_INPUTS, denoise: DenoiseSettings | None = None) -> Iterator[np.ndarray]:
    """Yield ``n`` (3, S, S) float32 network inputs of one raw frame, exactly as inference makes them.

    Each chosen slice is pseudocolored (or grey-stacked) as in :meth:`Segmenter.probabilities` (same dtype rule)
    from itself and its two neighbours only, which gives exactly its slice of the whole stack (Context Aware
    Pseudocoloring of slice z reads slices z-1, z, z+1 of a uint8/uint16 frame and nothing else) without holding
    the whole pseudocolored stack (0.66 GB for a full TRIC frame); then :func:`predict_slices` itself cuts and
    resizes it, and its network inputs are recorded. The ``n`` inputs are evenly spaced over all slices (or slice
    tiles) of the frame. A constant (empty) frame yields nothing, as inference skips it. With ``denoise`` the
    frame's smoothing sigma is chosen from the whole frame (as inference does) and applied to each window.
    """
    from efficientcellseg.pseudocolor import grey_stack, pseudocolor_stack
    from efficientcellseg.tiling import tile_starts

    if raw.max() == raw.min():
        return
    if raw.dtype not in (np.uint8, np.uint16):
        raise ModelError(f"calibration frames must be uint8 or uint16, got {raw.dtype}")
    dtype = np.float16 if 3 * raw.size * 4 > PC_FLOAT32_MAX_BYTES else np.float32
    raw, sigma = denoise_plan(raw, denoise)
    z, ny, nx = raw.shape
    per_slice = 1
    if cfg.tile_size is not None:
        per_slice = len(tile_starts(ny, cfg.tile_size, cfg.tile_overlap)) * len(tile_starts(nx, cfg.tile_size,
                                                                                            cfg.tile_overlap))
    chosen = evenly_spaced(z * per_slice, n)
    for s in np.unique(chosen // per_slice):
        lo, hi = max(0, s - 1), min(z, s + 2)
        part = smooth_stack(raw[lo:hi], sigma) if sigma > 0 else raw[lo:hi]
        window = pseudocolor_stack(part, out_dtype=dtype) if pseudocolor else grey_stack(part, out_dtype=dtype)
        wanted = set((chosen[chosen // per_slice == s] % per_slice).tolist())
        seen: list[np.ndarray] = []
        calls = [0]

        def record(x: torch.Tensor, wanted: set[int] = wanted, seen: list = seen, calls: list = calls) -> torch.Tensor:
            if calls[0] in wanted:  # batch size 1: one input per call, in predict_slices' order
                seen.append(x[0].numpy().astype(np.float32, copy=True))
            calls[0] += 1
            return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1])

        predict_slices({"record": record}, window[s - lo : s - lo + 1], cfg, 1, torch.device("cpu"))
        yield from seen


def int8_calibration(frames: Sequence[Path], cfg: DatasetConfig, pseudocolor: bool = True,
                     n_inputs: int = CALIBRATION_INPUTS, denoise: DenoiseSettings | None = None,
                     scale: float = 1.0) -> Calibration:
    """The int8 calibration of these raw frame files: keyed by their sha256, inputs by :func:`network_inputs`
    (of the frames resampled by ``scale``, as inference does).

    Hashing reads the files once; the frames are read again (one at a time) only if the model has to be
    quantised, i.e. when no int8 file for the same frames is cached.
    """
    from efficientcellseg.onnx_backend import Calibration, file_sha256

    paths = [Path(f) for f in frames]
    if not paths:
        raise ModelError("int8 calibration needs at least one frame")
    digests = [file_sha256(p) for p in paths]
    key = "|".join(digests + [cfg.key, str(cfg.input_size), str(cfg.tile_size), str(cfg.tile_overlap),
                              f"pc={pseudocolor}", f"n={n_inputs}"]
                   + ([denoise.key()] if denoise is not None else [])
                   + ([f"scale={scale!r}"] if scale != 1.0 else []))

    def inputs() -> Iterator[np.ndarray]:
        for p in paths:
            yield from network_inputs(rescale_frame(read_frame(p, max_z=cfg.max_z), scale), cfg, pseudocolor,
                                      n_inputs, denoise)

    names = ", ".join(p.name for p in paths)
    return Calibration(key=key, inputs=inputs, description=f"{len(paths)} frame(s) of {paths[0].parent} ({names})")
