"""Post-processing or pseudocoloring of one frame with 1 and N threads: the same result, how much faster (#15).

``--stage post`` (default): the network runs once (shipped folders, exact fp32); then the dataset's
post-processing runs ``--rounds`` times per thread count on those outputs
(:func:`efficientcellseg.cpu_threads.set_threads`). ``--stage pseudocolor``: Context Aware Pseudocoloring of the
raw frame (``pseudocolor_stack(..., threads=N)``, the dtype inference uses). Every run must give a result
identical to the first thread count's (the script fails otherwise). Prints a Markdown table of seconds per run
and the speed-up; the figures are ratios within one run, as the host's speed varies between sessions::

    .venv/bin/python benchmarks/postprocess_threads.py --dataset TRIC              # a full-size TRIC frame
    .venv/bin/python benchmarks/postprocess_threads.py --dataset TRIC --stage pseudocolor
    .venv/bin/python benchmarks/postprocess_threads.py --dataset MDA231 --frame PATH/t000.tif

Without ``--frame`` the first frame of the fixed profile at CTC size (seed 9) is generated in memory
(:func:`efficientcellseg.synth.generate_frame_for_benchmark`, as ``benchmarks/speed.py`` makes its frames).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SW") not in sys.path:
    sys.path.insert(0, str(ROOT / "SW"))

from efficientcellseg import cpu_threads  # noqa: E402
from efficientcellseg.ctc_io import read_frame  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.infer import build_segmenter  # noqa: E402
from efficientcellseg.log import setup_logging  # noqa: E402

log = logging.getLogger("postprocess_threads")


def time_threads(dataset: str, raw: np.ndarray, name: str, threads: list[int], rounds: int, stage: str = "post"
                 ) -> dict[int, list[float]]:
    """Seconds of each run of the stage on the frame ``raw`` per thread count; raises if any result differs
    from the first count's."""
    if stage == "pseudocolor":
        from efficientcellseg.infer import PC_FLOAT32_MAX_BYTES
        from efficientcellseg.pseudocolor import pseudocolor_stack

        dtype = np.float16 if 3 * raw.size * 4 > PC_FLOAT32_MAX_BYTES else np.float32
        run = lambda n: pseudocolor_stack(raw, out_dtype=dtype, threads=n)  # noqa: E731
    else:
        seg = build_segmenter(dataset, device="cpu", backend="onnx")
        probs = seg.probabilities(raw)
        run = lambda n: seg.labels(probs)  # noqa: E731  (threads set below)
    reference = None
    out: dict[int, list[float]] = {n: [] for n in threads}
    try:
        for _ in range(rounds):
            for n in threads:
                cpu_threads.set_threads(n)
                t0 = time.perf_counter()
                result = run(n)
                out[n].append(time.perf_counter() - t0)
                if reference is None:
                    reference = result
                elif not np.array_equal(reference, result):
                    raise AssertionError(f"{n} threads gave another result than {threads[0]} on {name} ({stage})")
    finally:
        cpu_threads.set_threads(None)
    log.info("%s: identical %s output for threads %s", name, stage, threads)
    return out


def table(dataset: str, frame: str, times: dict[int, list[float]], stage: str = "post") -> str:
    """Markdown: median seconds per thread count and the speed-up over the first."""
    first = next(iter(times))
    base = float(np.median(times[first]))
    what = "Pseudocoloring" if stage == "pseudocolor" else "Post-processing"
    lines = [f"{what} of {frame} ({dataset}), median of {len(times[first])} runs:", "",
             "| threads | seconds | runs | speed-up |", "|---|---|---|---|"]
    for n, ts in times.items():
        med = float(np.median(ts))
        lines.append(f"| {n} | {med:.2f} | {', '.join(f'{t:.2f}' for t in ts)} | {base / med:.2f}x |")
    return "\n".join(lines)


def benchmark_frame(dataset: str, frame: Path | None) -> tuple[np.ndarray, str]:
    """The raw frame ``frame`` (``max_z`` of the dataset applied), or without one the first frame of the fixed
    profile at CTC size (seed 9) generated in memory, and its name; ValueError when ``frame`` is missing."""
    if frame is None:
        from efficientcellseg.synth import generate_frame_for_benchmark

        return generate_frame_for_benchmark(dataset, seed=9)[0], f"generated {dataset} frame (seed 9)"
    if not frame.is_file():
        raise ValueError(f"{frame}: no such frame; give a raw CTC frame (tTTT.tif) with --frame")
    return read_frame(frame, max_z=get_dataset(dataset).max_z), str(frame)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="TRIC", choices=["MDA231", "TRIC", "A549-SIM"], help="dataset")
    p.add_argument("--frame", type=Path, default=None, help="raw frame (default: generate one at CTC size)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, the first is the base")
    p.add_argument("--rounds", type=int, default=2, help="runs per thread count")
    p.add_argument("--stage", default="post", choices=["post", "pseudocolor"], help="which stage to time")
    a = p.parse_args(argv)
    setup_logging(0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        raw, name = benchmark_frame(a.dataset, a.frame)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(a.dataset, name, time_threads(a.dataset, raw, name, a.threads, a.rounds, a.stage), a.stage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
