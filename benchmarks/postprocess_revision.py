"""Post-processing of the working tree against a git revision's: the same labels, and how much faster (#15).

The network runs once on one frame (shipped folders, exact fp32 ONNX). Then the dataset's post-processing of
``SW/efficientcellseg/postprocess.py`` as it is now and as it was at ``--against`` (default ``HEAD``, read with
``git show``) run alternately ``--rounds`` times on those outputs. Every result must be identical to the first
one (the script fails otherwise): a speed-up of the post-processing is only taken when the labels stay the same
bit for bit. Seconds are also given in t_slice (one fp32 384x384 ONNX Runtime pass of the dataset's network,
timed at the start and the end of the same run), as the host's speed varies between sessions::

    .venv/bin/python benchmarks/postprocess_revision.py --dataset TRIC            # a full-size TRIC frame
    .venv/bin/python benchmarks/postprocess_revision.py --dataset TRIC --against 291ba21 --rounds 5
    .venv/bin/python benchmarks/postprocess_revision.py --dataset MDA231 --frame PATH/t000.tif

Without ``--frame`` the first frame of the fixed profile at CTC size (seed 9) is generated in memory, as
``benchmarks/postprocess_threads.py`` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.log import setup_logging  # noqa: E402

log = logging.getLogger("postprocess_revision")
MODULE = "SW/efficientcellseg/postprocess.py"


def module_at(revision: str, workdir: Path) -> ModuleType:
    """The post-processing module as it was at ``revision`` (imported under its own name); ValueError when git
    cannot give it."""
    res = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{MODULE}"], capture_output=True, text=True)
    if res.returncode != 0:
        raise ValueError(f"--against {revision}: git cannot show {MODULE} there ({res.stderr.strip()[:120]}); "
                         "give a commit of this repository")
    path = workdir / f"postprocess_at_{abs(hash(revision))}.py"
    path.write_text(res.stdout)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_both(runs: dict[str, Callable[[], np.ndarray]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each run per code version, alternating; raises AssertionError when any result differs from the
    first one."""
    reference = None
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            result = run()
            out[name].append(time.perf_counter() - t0)
            if reference is None:
                reference = result
            elif not (np.array_equal(reference, result) and reference.dtype == result.dtype):
                raise AssertionError(f"the post-processing of {name} gave other labels than {next(iter(runs))}")
    return out


def table(dataset: str, frame: str, times: dict[str, list[float]], t_slice_ms: tuple[float, float]) -> str:
    """Markdown: median seconds and t_slice per code version, and the speed-up over the first."""
    first = next(iter(times))
    base = float(np.median(times[first]))
    ts = sum(t_slice_ms) / 2 / 1000
    lines = [f"Post-processing of {frame} ({dataset}), median of {len(times[first])} runs each, alternating; "
             f"identical labels. t_slice = {ts * 1000:.1f} ms (start {t_slice_ms[0]:.1f}, end {t_slice_ms[1]:.1f}).",
             "", "| code | seconds | x t_slice | runs | speed-up |", "|---|---|---|---|---|"]
    for name, t in times.items():
        med = float(np.median(t))
        lines.append(f"| {name} | {med:.2f} | {med / ts:.1f} | {', '.join(f'{x:.2f}' for x in t)} | "
                     f"{base / med:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="TRIC", choices=["MDA231", "TRIC", "A549-SIM"], help="dataset")
    p.add_argument("--frame", type=Path, default=None, help="raw frame (default: generate one at CTC size)")
    p.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    p.add_argument("--rounds", type=int, default=3, help="runs per code version")
    a = p.parse_args(argv)
    setup_logging(0)
    from efficientcellseg import postprocess as current
    from efficientcellseg.infer import build_segmenter, model_folders
    from postprocess_threads import benchmark_frame
    from speed import measure_t_slice

    with tempfile.TemporaryDirectory() as tmp:
        try:
            old = module_at(a.against, Path(tmp))
            raw, name = benchmark_frame(a.dataset, a.frame)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cfg = get_dataset(a.dataset)
        folder = model_folders(cfg)["seg"]
        start = measure_t_slice(folder)["median_ms"]
        seg = build_segmenter(a.dataset, device="cpu", backend="onnx")
        probs: dict[str, Any] = seg.probabilities(raw)

        def with_module(module: ModuleType) -> Callable[[], np.ndarray]:
            return lambda: module.postprocess(cfg.postprocess, probs["seg"], seg.params, centers=probs.get("centers"),
                                              signal=probs.get("signal"))

        try:
            times = time_both({a.against: with_module(old), "working tree": with_module(current)}, a.rounds)
        except AssertionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        end = measure_t_slice(folder)["median_ms"]
    print(table(a.dataset, name, times, (start, end)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
