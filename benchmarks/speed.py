"""Speed of EfficientCellSeg on the machine this runs on, in one run, as host times and as multiples of t_slice.

**t_slice** is the median time of one fp32 384x384 pass of the network in ONNX Runtime (batch 1, all cores, random
weights), measured at the start and at the end of the run; its drift between the two says how steady the host
was (shorter windows between the profiles are printed too: this host runs in phases of some seconds, up to
~30 % apart, so a frame's network stage per pass can differ from t_slice by that much; the end-to-end table
therefore also gives each frame over its own network stage, a ratio from one frame). Every figure is printed
both in seconds and in units of t_slice, which compare across hosts far better than seconds (on a shared
machine the absolute times move by 2-3x between sessions, the ratios much less).

1. The network alone, per 384x384 slice, for every backend (batch 1 and batched): PyTorch fp32 (plain NCHW and
   the pipeline's channels_last runner), PyTorch bf16 (opt-in), ONNX Runtime on the literal trace, on the
   simplified export that the pipeline uses and its int8 quantisation (opt-in), optionally torch.compile, and
   CUDA fp16 when a GPU is present. Variants are timed in interleaved rounds (a noisy machine slows all alike).
2. End to end per dataset profile at real CTC frame sizes: frames are generated first, in their own process,
   so that generation never counts in memory or time. Then, each in a fresh child process that reports its
   peak resident memory (``VmHWM``): (a) frames one after the other with stage times (read, pseudocolor,
   network, postprocess, write; frame 1 is a warm-up), (b) a whole sequence through ``predict_sequence`` with
   the interpreter start, imports and model loading included (MDA231: 8 frames; TRIC: 1 full-size frame),
   optionally (c) the first int8 run with a fresh cache, quantisation included (its peak memory).
   Ratios with targets: TRIC frame <= 1.15 x tile passes x t_slice, A549-SIM frame <= 1.2 x Z x t_slice,
   TRIC peak RSS <= 2 GB.
3. The methods users would pick instead, for one MDA231 volume (30x512x512), in the same run and units: Cellpose
   3's network (CPnet, 2D tiles of 224), nnU-Net's 3d_fullres network with and without its default test-time
   mirroring (8 flips), from the separate ``.bench-venv`` (``benchmarks/setup_competitors.sh``), and the classical
   baseline ``benchmarks/classical.py::segment_classical`` when that file exists (else the row says so).

Usage::

    .venv/bin/python benchmarks/speed.py                      # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/speed.py --quick --small      # a rough look (small TRIC frame), ~5 min
    .venv/bin/python benchmarks/speed.py --md speed.md --json speed.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SW"))
sys.path.insert(1, str(ROOT))

log = logging.getLogger("speed")

PROFILES = ("MDA231", "A549-SIM", "TRIC")
FRAME_SHAPES = {"MDA231": (30, 512, 512), "A549-SIM": (29, 300, 350), "TRIC": (13, 1745, 2440)}
PAPER_MS_PER_SLICE = 334.0
BENCH_VENV = ROOT / ".bench-venv"
STARTUP_FRAMES = {"MDA231": 8, "A549-SIM": 4, "TRIC": 1}
"""Frames per start-up-included sequence run (interpreter start, imports and model loading counted)."""
TARGETS = {"TRIC": 1.15, "A549-SIM": 1.2}
"""Targets per frame, in units of (network passes x t_slice): TRIC passes are tiles, A549-SIM passes slices."""
TRIC_RSS_TARGET_MIB = 2048
NNUNET_MIRRORS = 8
"""nnU-Net's default test-time mirroring for 3D: all 2^3 flips of the three axes, one network pass each."""


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM`` (per address space, so it starts afresh in a child
    process; ``ru_maxrss`` is inherited from the parent across fork + exec on Linux and over-reports)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------- machine
def machine() -> dict[str, str]:
    """CPU model, cores, memory, library versions and GPU (if any) of this machine."""
    import numpy as np
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
        flags = ", ".join(f for f in wanted if f" {f}" in text)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "cpu flags": flags, "memory": mem, "gpu": gpu,
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
        "numpy": np.__version__, "torch threads": str(torch.get_num_threads()),
        "bf16 native": str(bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())),
    }


# ----------------------------------------------------------------------------------------------- t_slice
def measure_t_slice(folder: Path, reps: int = 20) -> dict[str, float]:
    """t_slice: median ms of one fp32 384x384 ONNX Runtime pass (batch 1, all cores) of the network in ``folder``."""
    import torch

    from efficientcellseg.onnx_backend import OnnxRunner
    from efficientcellseg.weights import load_model_folder

    run = OnnxRunner(load_model_folder(folder), threads=os.cpu_count() or 1)
    x = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    run(x)
    run(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "n": reps}


def network_passes(profile: str, shape: tuple[int, int, int]) -> int:
    """Network passes of one frame per network: slices (whole-slice datasets) or slice tiles (tiled ones)."""
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.tiling import tile_starts

    cfg = get_dataset(profile)
    z, ny, nx = shape
    if cfg.tile_size is None:
        return int(z)
    return int(z) * len(tile_starts(ny, cfg.tile_size, cfg.tile_overlap)) * len(
        tile_starts(nx, cfg.tile_size, cfg.tile_overlap))


def _calibration_for(folder: Path, tmp: Path) -> Any:
    """An int8 calibration for a random-weights model: one generated A549-SIM frame (benchmarks may generate)."""
    import tifffile

    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import int8_calibration
    from efficientcellseg.synth import generate_frame_for_benchmark

    path = tmp / "calibration" / "t000.tif"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, generate_frame_for_benchmark("A549-SIM", seed=7)[0])
    return int8_calibration([path], get_dataset("A549-SIM"))


# ----------------------------------------------------------------------------------------------- network
def _model_folder(tmp: Path, name: str = "bench", dataset: str = "A549-SIM", task: str = "seg") -> Path:
    from efficientcellseg.weights import create_untrained_model_folder

    folder = tmp / name
    if not (folder / "config.json").is_file():
        create_untrained_model_folder(folder, dataset, task=task, seed=0)
    return folder


def network_variants(folder: Path, with_compile: bool) -> dict[str, Callable]:
    """name -> callable taking a (B, 3, 384, 384) tensor; all variants that work on this machine."""
    import torch

    from efficientcellseg.infer import TorchRunner
    from efficientcellseg.onnx_backend import OnnxRunner
    from efficientcellseg.weights import load_model_folder

    cpu = torch.device("cpu")
    plain = load_model_folder(folder).net.eval()

    def plain_nchw(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(plain(x))[:, 0]

    variants: dict[str, Callable] = {
        "torch fp32 NCHW, no_grad (naive)": plain_nchw,
        "torch fp32 channels_last, inference_mode (TorchRunner)": TorchRunner(load_model_folder(folder), cpu),
        "torch bf16 autocast channels_last (opt-in --precision bf16)":
            TorchRunner(load_model_folder(folder), cpu, precision="bf16"),
        "ONNX Runtime, literal trace": OnnxRunner(load_model_folder(folder), simplify=False),
        "ONNX Runtime, simplified export (default on CPU)": OnnxRunner(load_model_folder(folder)),
        "ONNX Runtime int8, static quantisation (opt-in --precision int8)":
            OnnxRunner(load_model_folder(folder), int8=True, calibration=_calibration_for(folder, folder.parent)),
    }
    if with_compile:
        variants["torch.compile fp32 (inductor)"] = TorchRunner(load_model_folder(folder), cpu, compile=True)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        gpu16 = TorchRunner(load_model_folder(folder), cuda, precision="fp16")
        gpu32 = TorchRunner(load_model_folder(folder), cuda, precision="fp32")

        def synced(run: Callable) -> Callable:
            def f(x: torch.Tensor) -> torch.Tensor:
                y = run(x.to("cuda", non_blocking=True))
                torch.cuda.synchronize()
                return y
            return f

        variants["CUDA fp16 autocast channels_last"] = synced(gpu16)
        variants["CUDA fp32 channels_last"] = synced(gpu32)
    return variants


def bench_network(folder: Path, batches: dict[str, tuple[int, ...]], rounds: int, with_compile: bool,
                  ) -> list[dict[str, Any]]:
    """Median (and min) ms per slice for every variant and batch size, timed in interleaved rounds."""
    import torch

    variants = network_variants(folder, with_compile)
    xs = {b: torch.rand(b, 3, 384, 384, generator=torch.Generator().manual_seed(b))
          for bs in batches.values() for b in bs}
    jobs = [(name, b) for name in variants for b in batches["cuda" if name.startswith("CUDA") else "cpu"]]
    compile_s = {}
    for name, b in jobs:  # warm-up (and one-off compilation, reported separately)
        t0 = time.perf_counter()
        variants[name](xs[b])
        compile_s[(name, b)] = time.perf_counter() - t0
        variants[name](xs[b])
    times: dict[tuple[str, int], list[float]] = {j: [] for j in jobs}
    for _ in range(rounds):
        for name, b in jobs:
            reps = max(1, 4 // b)
            for _ in range(reps):
                t0 = time.perf_counter()
                variants[name](xs[b])
                times[(name, b)].append((time.perf_counter() - t0) * 1000 / b)
    gpu_mem = {}
    if torch.cuda.is_available():
        for name, b in jobs:
            if name.startswith("CUDA"):
                torch.cuda.reset_peak_memory_stats()
                variants[name](xs[b])
                gpu_mem[(name, b)] = torch.cuda.max_memory_allocated() / 2**20
    return [{"variant": n, "batch": b, "median_ms": statistics.median(times[(n, b)]),
             "min_ms": min(times[(n, b)]), "n": len(times[(n, b)]), "first_call_s": compile_s[(n, b)],
             "gpu_mib": gpu_mem.get((n, b))} for n, b in jobs]


# ----------------------------------------------------------------------------------------------- end to end
def _models_for(profile: str, tmp: Path) -> tuple[Path, bool]:
    """(models root, trained?): the shipped models when all folders of the profile exist, else untrained ones."""
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import model_folders
    from efficientcellseg.weights import create_untrained_model_folder, default_models_dir

    cfg = get_dataset(profile)
    shipped = default_models_dir()
    if all((d / "config.json").is_file() for d in model_folders(cfg, shipped).values()):
        return shipped, True
    root = tmp / "untrained-models"
    for task, name in cfg.models.items():
        if not (root / name / "config.json").is_file():
            create_untrained_model_folder(root / name, profile, task=task, seed=1)
    return root, False


def child_generate(profile: str, frames: int, out: Path, small: bool) -> dict[str, Any]:
    """Runs in a child process: write ``frames`` generated frames ``tTTT.tif`` of ``profile`` into ``out``."""
    import tifffile

    from efficientcellseg.synth import generate_frame_for_benchmark

    out.mkdir(parents=True, exist_ok=True)
    shape = None
    for t in range(frames):
        raw, _ = generate_frame_for_benchmark(profile, seed=100 + t, small=small)
        shape = tuple(int(v) for v in raw.shape)
        tifffile.imwrite(out / f"t{t:03d}.tif", raw)
        del raw
    return {"profile": profile, "shape": shape, "frames": frames, "dir": str(out)}


def _model_dirs(profile: str, tmp: Path, fresh: bool) -> tuple[dict[str, Path], bool]:
    """(task -> model folder, trained?); ``fresh`` copies the folders without their caches (first-run costs)."""
    import shutil

    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import model_folders

    models, trained = _models_for(profile, tmp)
    dirs = model_folders(get_dataset(profile), models)
    if fresh:
        for task, d in list(dirs.items()):
            dst = tmp / "fresh-models" / d.name
            if not dst.exists():
                shutil.copytree(d, dst, ignore=shutil.ignore_patterns(".onnx-cache"))
            dirs[task] = dst
    return dirs, trained


def child_serial(profile: str, seq: Path, backend: str, precision: str, device: str,
                 batch_size: int | None) -> dict[str, Any]:
    """Runs in a child process: every frame of ``seq`` one after the other, with stage times (latency per frame)."""
    import numpy as np
    import torch

    from efficientcellseg.ctc_io import list_frames, read_frame, write_mask
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import build_segmenter, choose_calibration_frames
    from efficientcellseg.log import StageTimer

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = get_dataset(profile)
    tmp = Path(tempfile.mkdtemp(prefix=f"speed-{profile}-"))
    dirs, trained = _model_dirs(profile, tmp, fresh=False)
    t0 = time.perf_counter()
    seg = build_segmenter(profile, dirs["seg"], dirs.get("centers"), device=device, backend=backend,
                          batch_size=batch_size, precision=precision,
                          calibration_frames=choose_calibration_frames(seq) if precision == "int8" else None)
    setup_s = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = tmp / "serial_RES"
    out.mkdir()
    per_frame = []
    shape = None
    for fr in list_frames(seq):
        seg.timer = timer = StageTimer()
        t0 = time.perf_counter()
        with timer.stage("read"):
            raw = read_frame(fr.path, max_z=cfg.max_z)
        shape = tuple(int(v) for v in raw.shape)
        labels = seg.segment(raw)
        with timer.stage("write"):
            write_mask(out / fr.mask_name, labels)
        wall = time.perf_counter() - t0
        per_frame.append({"wall_s": wall, **{k: float(v) for k, v in timer.seconds.items()},
                          "n_labels": int(labels.max())})
        del raw, labels
    counted = per_frame[1:] if len(per_frame) > 1 else per_frame
    keys = sorted({k for f in counted for k in f if k != "n_labels"})
    return {
        "profile": profile, "shape": shape, "frames": len(per_frame), "trained_models": trained, "backend": backend,
        "precision": precision, "setup_s": setup_s, "passes": network_passes(profile, shape),
        "serial_median": {k: float(np.median([f.get(k, 0.0) for f in counted])) for k in keys},
        "serial_frames": per_frame, "peak_rss_mib": _peak_rss_mib(),
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def child_sequence(profile: str, seq: Path, backend: str, precision: str, device: str, batch_size: int | None,
                   fresh: bool) -> dict[str, Any]:
    """Runs in a child process: the whole sequence through ``predict_sequence`` as ``predict`` runs it.

    ``fresh``: model folders copied without caches, so the ONNX export (and int8 quantisation) is included.
    """
    from efficientcellseg.infer import predict_sequence

    tmp = Path(tempfile.mkdtemp(prefix=f"speed-seq-{profile}-"))
    dirs, trained = _model_dirs(profile, tmp, fresh=fresh)
    t0 = time.perf_counter()
    rep = predict_sequence(profile, seq, tmp / "RES", dirs["seg"], dirs.get("centers"), device=device,
                           backend=backend, batch_size=batch_size, precision=precision)
    return {"profile": profile, "frames": rep.n_frames, "trained_models": trained, "precision": precision,
            "fresh_cache": fresh, "in_process_s": time.perf_counter() - t0,
            "stages": {k: float(v) for k, v in rep.timings.items()}, "peak_rss_mib": _peak_rss_mib()}


def run_child(mode: str, args: list[str], flags: list[str] | None = None) -> dict[str, Any]:
    """Run one ``--child MODE`` of this script in a fresh Python process (own peak RSS); its JSON plus ``wall_s``
    (the whole process: interpreter start, imports and model loading included)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, *(flags or []), "--child-args", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1], "wall_s": wall}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "wall_s": wall}


def _child_args(a: argparse.Namespace) -> list[str]:
    out = ["--backend", a.backend, "--device", a.device]
    if a.batch_size:
        out += ["--batch-size", str(a.batch_size)]
    return out


# ----------------------------------------------------------------------------------------------- classical
def bench_classical(raw_path: Path, dataset: str = "MDA231") -> dict[str, Any]:
    """Time ``benchmarks/classical.py::segment_classical`` on one frame (median of 2 after a warm-up), or say
    why it was skipped (the file is written elsewhere; this benchmark only imports it)."""
    try:
        segment_classical = importlib.import_module("benchmarks.classical").segment_classical
    except (ImportError, AttributeError) as exc:
        log.warning("classical baseline skipped: benchmarks/classical.py with segment_classical not found (%s)", exc)
        return {"skipped": f"benchmarks/classical.py not present ({type(exc).__name__})"}
    import tifffile

    raw = tifffile.imread(raw_path)
    segment_classical(raw, dataset)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        labels = segment_classical(raw, dataset)
        times.append(time.perf_counter() - t0)
    return {"volume_s": statistics.median(times), "n_labels": int(labels.max()), "shape": list(raw.shape)}


# ----------------------------------------------------------------------------------------------- competitors
COMPETITOR_SCRIPT = r'''
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
rounds = int(sys.argv[2])
out = {"torch": torch.__version__}

def med(fn, n):
    fn(); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

with torch.inference_mode():
    try:
        from importlib.metadata import version
        from cellpose.resnet_torch import CPnet
        from torch.utils import mkldnn as mkldnn_utils
        out["cellpose_version"] = version("cellpose")
        best = None
        for mk in (True, False):  # Cellpose converts the net to MKL-DNN on CPUs that have it; keep the faster
            net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=mk, max_pool=True, diam_mean=30.0).eval()
            out["cellpose_params"] = sum(p.numel() for p in net.parameters())
            if mk:
                net = mkldnn_utils.to_mkldnn(net)
            x = torch.rand(1, 2, 384, 384)
            tiles = torch.rand(8, 2, 224, 224)  # Cellpose's own tiling: bsize 224, batch 8
            r = (1000 * med(lambda: net(x), rounds),
                 1000 * med(lambda: net(tiles), max(2, rounds // 2)) / 8, "mkldnn" if mk else "dense")
            if best is None or r[0] < best[0]:
                best = r
        out["cellpose_384_b1_ms"], out["cellpose_tile224_ms"], out["cellpose_mode"] = best
    except Exception as exc:
        out["cellpose_error"] = f"{type(exc).__name__}: {exc}"
    try:
        from importlib.metadata import version
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
        from torch import nn
        net = PlainConvUNet(
            1, 7, [32, 64, 128, 256, 320, 320, 320], nn.Conv3d,
            [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
            2, 2, 2, conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False).eval()
        out["nnunet_version"] = version("dynamic_network_architectures")
        out["nnunet_params"] = sum(p.numel() for p in net.parameters())
        x = torch.rand(1, 1, 28, 256, 256)
        out["nnunet_patch"] = list(x.shape[2:])
        out["nnunet_patch_s"] = med(lambda: net(x), max(1, rounds // 4))
    except Exception as exc:
        out["nnunet_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
'''


def bench_competitors(threads: int, rounds: int) -> dict[str, Any] | None:
    """Competitors' network timings from .bench-venv, or None when it is not installed."""
    py = BENCH_VENV / "bin" / "python"
    if not py.is_file():
        return None
    res = subprocess.run([str(py), "-c", COMPETITOR_SCRIPT, str(threads), str(rounds)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def nnunet_patches(shape: tuple[int, int, int], patch: tuple[int, int, int], step: float = 0.5) -> int:
    """Number of sliding-window patches nnU-Net uses for a volume (step = half a patch, evenly spaced)."""
    import math

    n = 1
    for s, p in zip(shape, patch):
        n *= 1 if s <= p else math.ceil((s - p) / (p * step)) + 1
    return n


def cellpose_tiles(ly: int, lx: int, bsize: int = 224, overlap: float = 0.1) -> int:
    """Number of 224x224 tiles Cellpose 3 runs per 2D slice (its ``run_net`` tiling, no augmentation)."""
    import math

    ny = 1 if ly <= bsize else math.ceil((1 + 2 * overlap) * ly / bsize)
    nx = 1 if lx <= bsize else math.ceil((1 + 2 * overlap) * lx / bsize)
    return ny * nx


# ----------------------------------------------------------------------------------------------- report
def _x(seconds: float | None, t_slice_s: float) -> str:
    """``seconds`` as a multiple of t_slice, e.g. '41.2'."""
    return "-" if seconds is None else f"{seconds / t_slice_s:.1f}"


def mda231_networks() -> int:
    """Networks the shipped MDA231 model set runs: 1 for the one-network model (task seg_centers), 2 for the
    paper's pair."""
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import model_folders

    return len(model_folders(get_dataset("MDA231")))


def peers_rows(comp: dict | None, classical: dict | None, ours: dict | None, t_slice_s: float) -> list[list[str]]:
    """Rows (method, params, how measured, volume s, volume / t_slice, vs ours) for one 30x512x512 MDA231 volume."""
    rows: list[list[str]] = []
    ours_s = ours["serial_median"].get("wall_s") if ours and "error" not in ours else None

    def add(name: str, params: str, how: str, vol: float | None) -> None:
        vs = f"{vol / ours_s:.1f}x" if vol is not None and ours_s else "-"
        rows.append([name, params, how, "-" if vol is None else f"{vol:.1f}", _x(vol, t_slice_s), vs])

    if ours_s is not None:
        add(f"EfficientCellSeg, whole frame end to end ({ours['precision']})",
            "6.63M" + (" x2" if mda231_networks() == 2 else ""),
            "median frame, read to write", ours_s)
    add("EfficientCellSeg network only, segmentation network on 30 slices", "6.63M", "30 x t_slice", 30 * t_slice_s)
    if comp is None:
        rows.append(["Cellpose 3 / nnU-Net", "-", "not installed (run benchmarks/setup_competitors.sh)", "-", "-",
                     "-"])
    elif "error" in comp:
        rows.append(["Cellpose 3 / nnU-Net", "-", f"error: {comp['error']}", "-", "-", "-"])
    else:
        if "cellpose_tile224_ms" in comp:
            n = cellpose_tiles(512, 512)
            add(f"Cellpose {comp['cellpose_version']} CPnet (network only, 2D)", f"{comp['cellpose_params'] / 1e6:.2f}M",
                f"30 slices x {n} tiles of 224 x {comp['cellpose_tile224_ms']:.1f} ms ({comp['cellpose_mode']}, "
                "batch 8)", 30 * n * comp["cellpose_tile224_ms"] / 1000)
        else:
            rows.append(["Cellpose 3", "-", comp.get("cellpose_error", "not installed"), "-", "-", "-"])
        if "nnunet_patch_s" in comp:
            n = nnunet_patches((30, 512, 512), tuple(comp["nnunet_patch"]))
            patch = "x".join(map(str, comp["nnunet_patch"]))
            vol = n * comp["nnunet_patch_s"]
            params = f"{comp['nnunet_params'] / 1e6:.1f}M"
            add(f"nnU-Net 3d_fullres PlainConvUNet ({comp['nnunet_version']}), no mirroring", params,
                f"{n} patches of {patch} (step 0.5) x {comp['nnunet_patch_s']:.2f} s", vol)
            add(f"nnU-Net 3d_fullres, default mirroring ({NNUNET_MIRRORS} flips)", params,
                f"{NNUNET_MIRRORS} x the row above (one pass per flip)", NNUNET_MIRRORS * vol)
        else:
            rows.append(["nnU-Net", "-", comp.get("nnunet_error", "not installed"), "-", "-", "-"])
    if classical is None or "skipped" in classical:
        rows.append(["classical baseline", "0", (classical or {}).get("skipped", "not run"), "-", "-", "-"])
    elif "error" in classical:
        rows.append(["classical baseline", "0", f"error: {classical['error']}", "-", "-", "-"])
    else:
        add("classical baseline (benchmarks/classical.py)", "0", "median of 2 runs on one frame",
            classical["volume_s"])
    return rows


def between_text(windows: list[dict]) -> str:
    """'; between profiles: 141.0 (after MDA231), ...' for the t_slice windows measured between profiles."""
    if not windows:
        return ""
    return "; between profiles: " + ", ".join(f"{w['median_ms']:.1f} ms (after {w['after']})" for w in windows)


def network_split(stages: dict[str, float], passes: int, ts: float) -> tuple[str, str]:
    """``(network stage per pass / t_slice, frame / network stage)`` of one frame's median stage times, as text
    ('-' where the frame has no network stage); ``ts`` is t_slice in seconds."""
    net = stages.get("network", 0.0)
    if not net > 0 or passes < 1:
        return "-", "-"
    return f"{net / passes / ts:.2f}", f"{stages.get('wall_s', 0.0) / net:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def report(info: dict[str, str], t_slice: dict[str, dict], net_rows: list[dict], serial: list[dict],
           seqs: list[dict], comp: dict | None, classical: dict | None, cmd: str) -> str:
    """The Markdown report: every figure in host seconds (or ms) and in units of t_slice."""
    t0, t1 = t_slice["start"]["median_ms"], t_slice["end"]["median_ms"]
    ts = (t0 + t1) / 2 / 1000  # the unit: mean of the two measurements, in seconds
    lines = [f"Command: `{cmd}`", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", f"**t_slice = {1000 * ts:.1f} ms** (one fp32 384x384 ONNX Runtime pass, batch 1, all cores; mean of "
              f"{t0:.1f} ms at the start and {t1:.1f} ms at the end of the run: drift {100 * (t1 / t0 - 1):+.1f} %"
              f"{between_text(t_slice.get('between', []))}). Ratios below are multiples of t_slice."]
    if net_rows:
        lines += ["", "### Network only, per 384x384 slice (random weights)", ""]
        rows = []
        for r in net_rows:
            gpu = f"{r['gpu_mib']:.0f}" if r["gpu_mib"] else "-"
            rows.append([r["variant"], str(r["batch"]), f"{r['median_ms']:.1f}", f"{r['median_ms'] / 1000 / ts:.2f}",
                         f"{r['min_ms']:.1f}", str(r["n"]), f"{r['first_call_s']:.1f}",
                         f"{PAPER_MS_PER_SLICE / r['median_ms']:.1f}x", gpu])
        lines += _table(["variant", "batch", "median ms/slice", "x t_slice", "min ms", "n", "first call s",
                         "vs paper 334 ms", "GPU MiB"], rows)
        if not any(r["variant"].startswith("CUDA") for r in net_rows):
            lines.append("\nNo CUDA GPU on this machine: GPU rows are absent.")
    if serial:
        lines += ["", "### End to end per frame, frames one after the other (generated frames at CTC size)", ""]
        rows = []
        for r in serial:
            if "error" in r:
                rows.append([r.get("profile", "?"), f"error: {r['error']}"] + [""] * 16)
                continue
            m = r["serial_median"]
            wall = m.get("wall_s", 0.0)
            passes = r["passes"]
            target = TARGETS.get(r["profile"])
            per_pass = wall / (passes * ts)
            verdict = "" if target is None else f" (target <= {target}: {'met' if per_pass <= target else 'NOT met'})"
            gpu = f"{r['gpu_peak_mib']:.0f}" if r.get("gpu_peak_mib") else "-"
            net_pass, frame_net = network_split(m, passes, ts)
            rows.append([r["profile"], "x".join(map(str, r["shape"])), "trained" if r["trained_models"] else "untrained",
                         f"{r['backend']}/{r['precision']}", f"{wall:.2f}", _x(wall, ts), str(passes),
                         f"{per_pass:.2f}{verdict}", net_pass, frame_net]
                        + [f"{m.get(k, 0):.2f}" for k in ("read", "denoise", "pseudocolor", "network", "postprocess",
                                                           "write")]
                        + [f"{r['peak_rss_mib']:.0f}", gpu])
        lines += _table(["profile", "frame", "models", "backend", "frame s", "x t_slice", "passes per network",
                         "frame / (passes x t_slice)", "network s per pass / t_slice", "frame / network s",
                         "read s", "denoise s", "pseudocolor s", "network s", "postprocess s",
                         "write s", "peak RSS MiB", "GPU MiB"], rows)
        pair = mda231_networks() == 2
        mda = ("MDA231 runs two networks (the paper's pair), the centre network only on slices with foreground"
               if pair else "MDA231 runs one network giving foreground and centre heatmap")
        both = "; MDA231's stage holds both networks' passes" if pair else ""
        lines.append("\nMedian over frames 2..N (frame 1 is a warm-up). Passes: slices (MDA231, A549-SIM) or slice "
                     f"tiles (TRIC) of one network; {mda}. The two columns after the target split it: the network "
                     "stage per pass in t_slice (tiling, resizing and blending, and how fast the host ran during the "
                     f"frame compared with the t_slice windows{both}) and the whole frame over its "
                     "network stage (what the other stages add; both figures of this ratio come from the same "
                     "frame, so host drift hardly moves it).")
    if seqs:
        lines += ["", "### Whole sequences as `predict` runs them (interpreter start, imports, model loading included)",
                  ""]
        rows = []
        for r in seqs:
            if "error" in r:
                rows.append([r.get("profile", "?"), f"error: {r['error']}", "", "", "", "", "", ""])
                continue
            per = r["wall_s"] / r["frames"]
            rss = f"{r['peak_rss_mib']:.0f}"
            if r["profile"] == "TRIC":
                rss += f" (target <= {TRIC_RSS_TARGET_MIB}: {'met' if r['peak_rss_mib'] <= TRIC_RSS_TARGET_MIB else 'NOT met'})"
            first = "first run, fresh cache (export" + (" + quantisation" if r["precision"] == "int8" else "") + ")"
            rows.append([r["profile"], r["precision"], first if r["fresh_cache"] else "cached model files",
                         str(r["frames"]), f"{r['wall_s']:.1f}", f"{per:.2f}", _x(per, ts), rss])
        lines += _table(["profile", "precision", "start", "frames", "process wall s", "per frame s",
                         "per frame x t_slice", "peak RSS MiB"], rows)
    lines += ["", "### One MDA231 volume (30x512x512) with the methods users would pick instead (same run, same units)",
              ""]
    lines += _table(["method", "params", "how", "volume s", "x t_slice", "vs ours end to end"],
                    peers_rows(comp, classical, next((r for r in serial if r.get("profile") == "MDA231"), None), ts))
    lines.append("\nCompetitors' networks with random weights in `.bench-venv` (same torch, all cores); network time "
                 "only (their pre- and post-processing, e.g. Cellpose's flow dynamics, would add to it).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module notes); returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds and frames (a rough look)")
    p.add_argument("--small", action="store_true", help="small generated TRIC frames (about 13x700x1000), for a try-out")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds for the network table")
    p.add_argument("--frames", type=int, default=None, help="frames per profile for the serial table (first is warm-up)")
    p.add_argument("--profiles", nargs="*", default=list(PROFILES), help="dataset profiles end to end")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (costs ~30 s to compile)")
    p.add_argument("--skip-network", action="store_true", help="skip the network-only table")
    p.add_argument("--skip-sequences", action="store_true", help="skip the start-up-included sequence runs")
    p.add_argument("--skip-competitors", action="store_true", help="skip Cellpose / nnU-Net / classical timing")
    p.add_argument("--first-int8", action="store_true",
                   help="also time the first int8 run per profile with a fresh cache (quantisation included)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="end-to-end backend")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="end-to-end precision")
    p.add_argument("--device", default="auto", help="end-to-end device (auto, cpu, cuda)")
    p.add_argument("--batch-size", type=int, default=None, help="end-to-end batch size (default: automatic)")
    p.add_argument("--md", type=Path, default=None, help="also write the Markdown report to this file")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements as JSON to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-args", nargs="*", default=[], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(_run_child_mode(a)))
        return 0
    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(os.cpu_count() or 1)
    rounds = a.rounds or (3 if a.quick else 8)
    info = machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp_name:
        tmp = Path(tmp_name)
        folder = _model_folder(tmp)
        t_slice = {"start": measure_t_slice(folder)}
        print(f"t_slice at start: {t_slice['start']['median_ms']:.1f} ms", flush=True)
        net_rows: list[dict] = []
        if not a.skip_network:
            batches = {"cpu": (1, 4), "cuda": (1, 16, 32)}
            net_rows = bench_network(folder, batches, rounds, a.compile)
            for r in net_rows:
                print(f"network {r['variant']:62s} batch {r['batch']:2d}: {r['median_ms']:7.1f} ms/slice "
                      f"(min {r['min_ms']:.1f}, n={r['n']})", flush=True)
        serial, seqs = [], []
        gen: dict[str, dict] = {}
        for prof in a.profiles:
            frames = max(a.frames or (2 if a.quick or prof == "TRIC" else 4), STARTUP_FRAMES[prof])
            small = a.small and prof == "TRIC"
            gen[prof] = g = run_child("generate", [prof, str(frames), str(tmp / prof / "01"), str(int(small))])
            if "error" in g:
                serial.append({"profile": prof, "error": g["error"]})
                continue
            seq_dir = tmp / prof / "01"
            n_serial = a.frames or (2 if a.quick or prof == "TRIC" else 4)
            serial_dir = tmp / prof / "serial"
            serial_dir.mkdir()
            for t in range(min(n_serial, frames)):
                os.link(seq_dir / f"t{t:03d}.tif", serial_dir / f"t{t:03d}.tif")
            r = run_child("serial", [prof, str(serial_dir), a.precision], _child_args(a))
            serial.append({"profile": prof, **r})
            print(f"serial {prof}: {json.dumps(r)[:300]}", flush=True)
            if not a.skip_sequences:
                seq_n = tmp / prof / "sequence"
                seq_n.mkdir()
                for t in range(STARTUP_FRAMES[prof]):
                    os.link(seq_dir / f"t{t:03d}.tif", seq_n / f"t{t:03d}.tif")
                runs = [(a.precision, False)] + ([("int8", True)] if a.first_int8 else [])
                for precision, fresh in runs:
                    r = run_child("sequence", [prof, str(seq_n), precision, str(int(fresh))], _child_args(a))
                    seqs.append({"profile": prof, **r})
                    print(f"sequence {prof} {precision}: {json.dumps(r)[:300]}", flush=True)
            t_slice.setdefault("between", []).append({"after": prof, **measure_t_slice(folder, reps=10)})
        comp = classical = None
        if not a.skip_competitors:
            comp = bench_competitors(os.cpu_count() or 1, max(2, rounds // 2))
            print(f"competitors: {json.dumps(comp)}", flush=True)
            mda = tmp / "MDA231" / "01" / "t000.tif"
            if not mda.is_file():
                run_child("generate", ["MDA231", "1", str(mda.parent), "0"])
            try:
                classical = bench_classical(mda)
            except Exception as exc:  # noqa: BLE001 - another engineer's code: report, do not abort the run
                classical = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"classical: {json.dumps(classical)}", flush=True)
        t_slice["end"] = measure_t_slice(folder)
        print(f"t_slice at end: {t_slice['end']['median_ms']:.1f} ms", flush=True)
    results.update(t_slice=t_slice, network=net_rows, serial=serial, sequences=seqs, competitors=comp,
                   classical=classical)
    cmd = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(info, t_slice, net_rows, serial, seqs, comp, classical, cmd.strip())
    print("\n" + text)
    if a.md:
        a.md.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


def _run_child_mode(a: argparse.Namespace) -> dict[str, Any]:
    """Dispatch ``--child MODE --child-args ...`` (see :func:`run_child`)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    c = a.child_args
    if a.child == "generate":
        return child_generate(c[0], int(c[1]), Path(c[2]), bool(int(c[3])))
    if a.child == "serial":
        return child_serial(c[0], Path(c[1]), a.backend, c[2], a.device, a.batch_size)
    if a.child == "sequence":
        return child_sequence(c[0], Path(c[1]), a.backend, c[2], a.device, a.batch_size, bool(int(c[3])))
    raise SystemExit(f"unknown child mode {a.child!r}")


if __name__ == "__main__":
    sys.exit(main())
