"""GPU check in one call: correctness against the CPU fp32 path, network and end-to-end speed, training throughput.

Written for a lent GPU machine (one call of at most 8 minutes, no internet; ``benchmarks/gpu_check.sh`` installs
what is missing from a local wheel folder and then runs this). Steps, each timed and guarded so that one failure
or an exhausted time budget never loses the others' results:

1. ``env``: torch / CUDA / GPU name and memory.
2. ``correctness``: every dataset (MDA231, TRIC, A549-SIM), shipped models, generated frames: labels of the GPU
   path (default fp16 autocast, and bf16, fp32) against the exact CPU fp32 path (ONNX Runtime); foreground IoU
   must be >= 0.99 per frame.
3. ``network``: ms per 384x384 slice for fp32 / fp16 / bf16 autocast (channels_last), batch 1 and batched; CPU
   t_slice (ONNX Runtime fp32, batch 1, all cores) as the unit of the ratios, measured at the start and the end.
4. ``end_to_end``: MDA231 (30x512x512) and TRIC (13x1745x2440) frames read to labels on the GPU, stage times.
5. ``training``: optimizer steps per second of the training loop (model, Dice + BCE, Adam; fp32 as ``train``
   runs it, and bf16 autocast for comparison).

Writes ``gpu_check.json`` and ``gpu_check.md`` (a section to append to benchmarks/RESULTS.md) into ``--out``.
``--dry-run`` (or ``GPU_CHECK_DRY_RUN=1``) runs every step tiny on the CPU (the "GPU" path is then PyTorch on the
CPU): the test suite uses it. Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SW"))

log = logging.getLogger("gpu_check")

DATASETS = ("MDA231", "TRIC", "A549-SIM")
IOU_MIN = 0.99
DRY_SHAPES = {"MDA231": (3, 64, 64), "TRIC": (2, 96, 120), "A549-SIM": (3, 48, 64)}
"""Frame shapes of the dry run (tiny, made without the generator so that the test stays fast)."""


class Budget:
    """Wall-clock budget of the whole check; steps ask it before starting optional work."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def left(self) -> float:
        """Seconds left."""
        return self.seconds - (time.perf_counter() - self.start)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], reps: int, device: Any) -> float:
    """Median wall ms of ``fn`` after one warm-up call (synchronised on CUDA)."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def foreground_iou(a: Any, b: Any) -> float:
    """IoU of the foregrounds (label > 0) of two label volumes; 1.0 when both are empty."""
    a, b = a > 0, b > 0
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def dry_frame(dataset: str, seed: int) -> Any:
    """A small uint8/uint16 frame of bright blobs on noise (dry run only)."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    shape = DRY_SHAPES[dataset]
    img = np.zeros(shape, np.float32)
    for _ in range(12):
        img[tuple(int(rng.integers(0, s)) for s in shape)] = 1.0
    img = ndi.gaussian_filter(img, (1.0, 5.0, 5.0))
    img = img / img.max() * 200 + rng.normal(10, 3, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_frame(dataset: str, seed: int, dry: bool, small: bool) -> Any:
    """One generated frame: tiny blobs in the dry run, else :func:`generate_frame_for_benchmark`."""
    if dry:
        return dry_frame(dataset, seed)
    from efficientcellseg.synth import generate_frame_for_benchmark

    return generate_frame_for_benchmark(dataset, seed=seed, small=small)[0]


# ----------------------------------------------------------------------------------------------- steps
def step_env(dev: Any) -> dict[str, Any]:
    """Versions, GPU name and memory."""
    import numpy as np
    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                           "cpu_cores": os.cpu_count(), "device": str(dev), "cuda_available": torch.cuda.is_available()}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = ort.__version__
    except ImportError:
        out["onnxruntime"] = None
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_mib=p.total_memory / 2**20, capability=f"{p.major}.{p.minor}",
                   cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())
    return out


def step_correctness(dev: Any, dry: bool, frames: int, budget: Budget) -> dict[str, Any]:
    """Foreground IoU of the GPU labels (fp16 default, bf16, fp32) against the CPU fp32 labels, per frame."""
    from efficientcellseg.infer import build_segmenter

    precisions = ("fp32",) if dry else ("auto", "bf16", "fp32")
    rows = []
    for ds in DATASETS:
        cpu = build_segmenter(ds, device="cpu", backend="onnx", precision="fp32")
        gpus = {p: build_segmenter(ds, device=dev.type, backend="torch", precision=p) for p in precisions}
        for i in range(frames):
            if budget.left() < 60 and rows:
                log.warning("correctness: time budget nearly spent, stopping after %d frames", len(rows))
                return {"rows": rows, "passed": all(r["passed"] for r in rows), "truncated": True}
            raw = make_frame(ds, 500 + i, dry, small=ds == "TRIC")
            ref = cpu.segment(raw)
            for p, seg in gpus.items():
                t0 = time.perf_counter()
                got = seg.segment(raw)
                iou = foreground_iou(ref, got)
                rows.append({"dataset": ds, "frame": i, "shape": list(raw.shape), "precision": p, "iou": iou,
                             "labels_cpu": int(ref.max()), "labels_gpu": int(got.max()),
                             "seconds": time.perf_counter() - t0, "passed": iou >= IOU_MIN})
                log.info("correctness %s frame %d %s: IoU %.4f", ds, i, p, iou)
    return {"rows": rows, "passed": bool(rows) and all(r["passed"] for r in rows)}


def t_slice_ms(folder: Path, reps: int) -> float:
    """CPU t_slice: median ms of one fp32 384x384 ONNX Runtime pass (batch 1, all cores) of ``folder``'s network."""
    import torch

    from efficientcellseg.onnx_backend import OnnxRunner
    from efficientcellseg.weights import load_model_folder

    run = OnnxRunner(load_model_folder(folder), threads=os.cpu_count() or 1)
    x = torch.rand(1, 3, 384, 384)
    return _median_ms(lambda: run(x), reps, torch.device("cpu"))


def step_network(dev: Any, dry: bool, folder: Path) -> dict[str, Any]:
    """ms per 384x384 slice for fp32 / fp16 / bf16, batch 1 and batched (random weights in ``folder``)."""
    import torch

    from efficientcellseg.infer import TorchRunner
    from efficientcellseg.weights import load_model_folder

    if dry:
        plan = {"fp32": (1,)}
        reps = 1
    else:
        plan = {"fp32": (1, 16, 32), "fp16": (1, 16, 32, 64), "bf16": (1, 16, 32, 64)}
        reps = 20
    rows = []
    for precision, batches in plan.items():
        run = TorchRunner(load_model_folder(folder), dev, precision=precision)
        for b in batches:
            x = torch.rand(b, 3, 384, 384, device=dev)
            ms = _median_ms(lambda x=x: run(x), max(1, reps // max(1, b // 8)), dev)
            mem = None
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                run(x)
                mem = torch.cuda.max_memory_allocated() / 2**20
            rows.append({"precision": precision, "batch": b, "ms_per_slice": ms / b, "gpu_mib": mem})
            log.info("network %s batch %d: %.2f ms/slice", precision, b, ms / b)
    return {"rows": rows}


def step_end_to_end(dev: Any, dry: bool, budget: Budget) -> dict[str, Any]:
    """Read-to-labels time per frame on the device for MDA231 and TRIC (full size unless dry), stage times."""
    import tifffile

    from efficientcellseg.ctc_io import read_frame
    from efficientcellseg.infer import build_segmenter
    from efficientcellseg.log import StageTimer

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for ds, n in (("MDA231", 3), ("TRIC", 2)):
            if budget.left() < (60 if ds == "MDA231" else 150):
                rows.append({"dataset": ds, "skipped": "time budget"})
                continue
            seg = build_segmenter(ds, device=dev.type, backend="torch" if dev.type == "cuda" else "auto")
            times, shape, stages = [], None, {}
            for i in range(n if not dry else 1):
                path = Path(tmp) / f"{ds}_{i}.tif"
                raw = make_frame(ds, 600 + i, dry, small=False)
                shape = list(raw.shape)
                tifffile.imwrite(path, raw)
                del raw
                seg.timer = timer = StageTimer()
                _sync(dev)
                t0 = time.perf_counter()
                with timer.stage("read"):
                    raw = read_frame(path)
                seg.segment(raw)
                _sync(dev)
                times.append(time.perf_counter() - t0)
                stages = {k: float(v) for k, v in timer.seconds.items()}
            counted = times[1:] if len(times) > 1 else times
            rows.append({"dataset": ds, "shape": shape, "frame_s": statistics.median(counted),
                         "first_frame_s": times[0], "stages_last": stages})
            log.info("end to end %s %s: %.2f s per frame", ds, shape, statistics.median(counted))
    return {"rows": rows}


def step_training(dev: Any, dry: bool) -> dict[str, Any]:
    """Optimizer steps per second of the training loop (seg loss, Adam), fp32 as ``train`` runs and bf16."""
    import torch

    from efficientcellseg.losses import seg_loss
    from efficientcellseg.model import EfficientCellSeg

    rows = [_data_rate(dry)]
    batch, size, steps = (2, 64, 1) if dry else (8, 384, 12)
    shapes = [(batch, size)] if dry else [(batch, size), (16, 160)]  # (16, 160): the GPU training batch's MDA231
    for precision, (batch, size) in [(p, bs) for bs in shapes for p in (("fp32",) if dry else ("fp32", "bf16"))]:
        torch.manual_seed(0)
        net = EfficientCellSeg().to(dev).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = torch.rand(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
        y = (torch.rand(batch, 1, size, size, device=dev) > 0.5).float()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(x)
            loss = seg_loss(logits.float(), y)
            loss.backward()
            opt.step()

        step()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(dev)
        dt = time.perf_counter() - t0
        rows.append({"precision": precision, "batch": batch, "crop": size, "steps": steps, "steps_per_s": steps / dt,
                     "images_per_s": steps * batch / dt})
        log.info("training %s: %.2f steps/s (batch %d, %d px)", precision, steps / dt, batch, size)
    return {"rows": rows}


def _data_rate(dry: bool) -> dict[str, Any]:
    """Training batches per second that one CPU thread makes (random crops + strong augmentation, as ``train``
    does between steps): when it is below the GPU's steps/s, the data, not the GPU, bounds training."""
    import numpy as np
    import torch

    from efficientcellseg.augment import STRONG
    from efficientcellseg.train import TrainConfig, _batch
    from efficientcellseg.trainset import Sample

    batch, crop, n = (2, 64, 2) if dry else (16, 160, 20)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(8):
        fg = (rng.random((384, 384)) > 0.7).astype(np.float32)
        samples.append(Sample(torch.rand(3, 384, 384).half(), torch.from_numpy(fg[None]).half(), None,
                              np.argwhere(fg > 0)[:512], ("00", 0, i), "gt3d"))
    cfg = TrainConfig(dataset="MDA231", data="", out="", augment=STRONG, crop=crop, batch_size=batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _batch(samples, np.arange(batch) % len(samples), crop, rng, cfg)
        t0 = time.perf_counter()
        for k in range(n):
            _batch(samples, (np.arange(batch) + k) % len(samples), crop, rng, cfg)
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    log.info("training data: %.1f batches/s on one CPU thread (batch %d, %d px)", n / dt, batch, crop)
    return {"precision": "data (1 CPU thread)", "batch": batch, "crop": crop, "steps": n, "steps_per_s": n / dt,
            "images_per_s": n * batch / dt}


# ----------------------------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    """A section for benchmarks/RESULTS.md from the JSON result."""
    env = res["steps"].get("env", {}).get("result", {})
    ts = res.get("t_slice_ms", {})
    unit = statistics.mean([v for v in ts.values() if v]) if ts else None
    title = "dry run on the CPU (not a GPU result)" if res["dry_run"] else f"GPU check: {env.get('gpu', 'no GPU')}"
    lines = [f"## {res['date']}, {title}", "",
             f"`benchmarks/gpu_check.sh{' --dry-run' if res['dry_run'] else ''}`: torch {env.get('torch')}, CUDA "
             f"{env.get('cuda')}, {env.get('cpu_cores')} CPU cores, onnxruntime {env.get('onnxruntime')}. "
             f"All checks passed: **{res['passed']}**. Total {res['total_s']:.0f} s."]
    if unit:
        lines += ["", f"CPU t_slice (ONNX Runtime fp32, 384x384, batch 1, all cores) {unit:.1f} ms "
                  f"(start {ts.get('start', 0):.1f}, end {ts.get('end', 0):.1f})."]
    for name, step in res["steps"].items():
        if "error" in step:
            lines += ["", f"**{name}: error** `{step['error']}`"]
    corr = res["steps"].get("correctness", {}).get("result")
    if corr:
        lines += ["", "### Correctness against CPU fp32 (foreground IoU per frame, >= 0.99 required)", "",
                  "| dataset | frame | shape | precision | IoU | labels CPU / device | passed |", "|---|---|---|---|---|---|---|"]
        for r in corr["rows"]:
            lines.append(f"| {r['dataset']} | {r['frame']} | {'x'.join(map(str, r['shape']))} | {r['precision']} | "
                         f"{r['iou']:.4f} | {r['labels_cpu']} / {r['labels_gpu']} | {r['passed']} |")
    net = res["steps"].get("network", {}).get("result")
    if net:
        lines += ["", "### Network only, per 384x384 slice", "",
                  "| precision | batch | ms/slice | slices/s | CPU t_slice / this | GPU MiB |", "|---|---|---|---|---|---|"]
        for r in net["rows"]:
            ratio = f"{unit / r['ms_per_slice']:.1f}x" if unit else "-"
            mem = f"{r['gpu_mib']:.0f}" if r["gpu_mib"] else "-"
            lines.append(f"| {r['precision']} | {r['batch']} | {r['ms_per_slice']:.2f} | "
                         f"{1000 / r['ms_per_slice']:.0f} | {ratio} | {mem} |")
    e2e = res["steps"].get("end_to_end", {}).get("result")
    if e2e:
        lines += ["", "### End to end per frame on the device (read to labels; median after a warm-up frame)", "",
                  "| dataset | frame | s per frame | first frame s | stages of the last frame (s) |", "|---|---|---|---|---|"]
        for r in e2e["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['dataset']} | skipped: {r['skipped']} | | | |")
                continue
            st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_last"].items())
            lines.append(f"| {r['dataset']} | {'x'.join(map(str, r['shape']))} | {r['frame_s']:.2f} | "
                         f"{r['first_frame_s']:.2f} | {st} |")
    tr = res["steps"].get("training", {}).get("result")
    if tr:
        lines += ["", "### Training loop throughput (random data, Dice + BCE, Adam; first row: batches made per "
                  "second by one CPU thread, the data side of a step)", "",
                  "| precision | batch | crop | steps/s | images/s |", "|---|---|---|---|---|"]
        for r in tr["rows"]:
            lines.append(f"| {r['precision']} | {r['batch']} | {r['crop']} | {r['steps_per_s']:.2f} | "
                         f"{r['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def run_step(res: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one step, recording its result or its error (one line) and its wall time."""
    t0 = time.perf_counter()
    try:
        res["steps"][name] = {"result": fn()}
    except Exception as exc:  # noqa: BLE001 - a failed step is recorded; the others still run
        res["steps"][name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                              "traceback": traceback.format_exc()}
        log.error("%s failed: %s", name, res["steps"][name]["error"])
    res["steps"][name]["seconds"] = time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run all steps; write gpu_check.json and gpu_check.md into --out; 0 when every check passed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")),
                   help="folder for gpu_check.json and gpu_check.md (default $OUT)")
    p.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_CHECK_DRY_RUN") == "1",
                   help="everything tiny on the CPU (tests); also GPU_CHECK_DRY_RUN=1")
    p.add_argument("--budget", type=float, default=450.0, help="wall-clock budget in seconds for all steps (not in a dry run)")
    p.add_argument("--frames", type=int, default=2, help="generated frames per dataset for the correctness check")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    budget = Budget(float("inf") if a.dry_run else a.budget)  # the dry run checks every step, however slow
    if a.dry_run:
        dev = torch.device("cpu")
    elif torch.cuda.is_available():
        dev = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    else:
        log.error("no CUDA GPU found; use --dry-run on a CPU machine")
        return 2
    from efficientcellseg.weights import create_untrained_model_folder

    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "dry_run": a.dry_run, "steps": {}, "t_slice_ms": {}}
    run_step(res, "env", lambda: step_env(dev))
    reps = 1 if a.dry_run else 20
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    net = create_untrained_model_folder(tmp / "net", "A549-SIM", seed=0)
    res["t_slice_ms"]["start"] = t_slice_ms(net, reps)
    run_step(res, "correctness", lambda: step_correctness(dev, a.dry_run, 1 if a.dry_run else a.frames, budget))
    run_step(res, "network", lambda: step_network(dev, a.dry_run, net))
    run_step(res, "end_to_end", lambda: step_end_to_end(dev, a.dry_run, budget))
    run_step(res, "training", lambda: step_training(dev, a.dry_run))
    res["t_slice_ms"]["end"] = t_slice_ms(net, reps)
    shutil.rmtree(tmp, ignore_errors=True)
    res["total_s"] = time.perf_counter() - budget.start
    corr = res["steps"]["correctness"].get("result", {})
    res["passed"] = bool(corr.get("passed")) and all("error" not in s for s in res["steps"].values())
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    (a.out / "gpu_check.md").write_text(markdown(res))
    log.info("wrote %s and %s; all checks passed: %s", a.out / "gpu_check.json", a.out / "gpu_check.md", res["passed"])
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
