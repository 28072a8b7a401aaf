"""Speed of Context Aware Pseudocoloring's threshold choice: one histogram of every value against bisection over
exact counts (``pseudocolor.context_threshold``), of uint16 CLAHE: OpenCV against ``clahe.clahe_u16``, and the
whole stack, as multiples of t_slice (synthetic data).

For each profile a frame is generated at CTC size (``synth``, seed 901) unless ``--frame`` names one. Per slice,
the blurred neighbour map (CLAHE, min-max, box blur) is made once; then the threshold index is chosen both ways
(they must agree; the script stops otherwise) and timed. For uint16 frames every slice's CLAHE is timed with
OpenCV and with ``clahe_u16`` (which must give the same image), and the whole ``pseudocolor_stack`` with the
threads ``predict`` uses, both ways (OpenCV by setting ``clahe.MAX_TABLE_ENTRIES`` to 0). t_slice (one fp32 384x384 ONNX Runtime pass of the shipped MDA231 segmentation network,
``benchmarks/speed.py``) is measured in the same run, at the start and at the end.

    .venv/bin/python benchmarks/pseudocolor_speed.py [--profiles TRIC A549-SIM MDA231] [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import efficientcellseg.clahe as clahe_mod  # noqa: E402
from efficientcellseg.pseudocolor import (  # noqa: E402
    choose_threshold,
    context_threshold,
    neighbour_blurred,
    pseudocolor_stack,
    threshold_counts,
)

log = logging.getLogger("efficientcellseg.benchmarks.pseudocolor_speed")

THRESHOLDS = 0.2 + 0.01 * np.arange(30)
"""The default thresholds of ``pseudocolor_stack`` (thresh_start 0.2, thresh_step 0.01, max_steps 30)."""


def median_s(fn: Callable[[], object], reps: int) -> float:
    """Median wall seconds of ``reps`` calls of ``fn`` (after one untimed call)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def frame_for(profile: str, frame: Path | None, tmp: Path) -> np.ndarray:
    """The frame to time: ``frame`` when given, else a generated CTC-size frame of ``profile``."""
    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.synth import generate

    if frame is not None:
        return read_frame(frame)
    generate(profile, tmp / profile, seq="01", frames=1, seed=901)
    seq = tmp / profile / get_dataset(profile).ctc_name / "01"
    return read_frame(list_frames(seq)[0].path)


def bench_clahe(raw: np.ndarray, reps: int) -> dict[str, float]:
    """Seconds per uint16 frame: every slice's CLAHE with OpenCV and with ``clahe_u16`` (identical images)."""
    clahe = cv2.createCLAHE(clipLimit=10.0, tileGridSize=(16, 16))
    slices = [sl for sl in raw if sl.max() > 0]
    for sl in slices:
        if not np.array_equal(clahe.apply(sl), clahe_mod.clahe_u16(sl, 10.0, 16)):
            raise SystemExit("error: clahe_u16 differs from OpenCV's CLAHE; do not use this build")
    return {"clahe_cv2": median_s(lambda: [clahe.apply(sl) for sl in slices], reps),
            "clahe_ours": median_s(lambda: [clahe_mod.clahe_u16(sl, 10.0, 16) for sl in slices], reps)}


def bench_profile(raw: np.ndarray, reps: int) -> dict[str, float]:
    """Seconds per frame: the threshold choice both ways (summed over slices), uint16 CLAHE both ways and the
    whole stack (for uint16 also with OpenCV's CLAHE)."""
    from efficientcellseg.cpu_threads import get_threads

    clahe = cv2.createCLAHE(clipLimit=10.0, tileGridSize=(16, 16))
    scale = None if raw.dtype in (np.uint8, np.uint16) else (float(raw.min()), float(raw.max()))
    maps = [neighbour_blurred(sl, clahe, 8, scale) for sl in raw]
    maps = [m for m in maps if m.max() > m.min()]  # constant maps get no threshold at all
    for m in maps:
        old = choose_threshold(threshold_counts(m, THRESHOLDS), m.size, 0.03)
        if context_threshold(m, THRESHOLDS, 0.03) != old:
            raise SystemExit("error: bisection and histogram chose different thresholds; do not use this build")
    hist = median_s(lambda: [choose_threshold(threshold_counts(m, THRESHOLDS), m.size, 0.03) for m in maps], reps)
    bisect = median_s(lambda: [context_threshold(m, THRESHOLDS, 0.03) for m in maps], reps)

    def stack() -> np.ndarray:
        return pseudocolor_stack(raw, out_dtype=np.float16 if raw.size > 2e7 else np.float32, threads=get_threads())

    r = {"histogram": hist, "bisection": bisect, "stack": median_s(stack, reps)}
    if raw.dtype == np.uint16:
        r.update(bench_clahe(raw, reps))
        ours = stack()
        limit = clahe_mod.MAX_TABLE_ENTRIES
        clahe_mod.MAX_TABLE_ENTRIES = 0  # every slice to OpenCV
        try:
            if not np.array_equal(stack(), ours):
                raise SystemExit("error: the stack differs with OpenCV's CLAHE; do not use this build")
            r["stack_cv2"] = median_s(stack, reps)
        finally:
            clahe_mod.MAX_TABLE_ENTRIES = limit
    return r


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints one Markdown table."""
    from efficientcellseg.log import setup_logging
    from speed import measure_t_slice
    from efficientcellseg.weights import default_models_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["TRIC", "A549-SIM", "MDA231"])
    ap.add_argument("--frame", type=Path, default=None, help="time this frame instead (one profile only)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
    a = ap.parse_args(argv)
    setup_logging(-1)
    if a.frame is not None and len(a.profiles) != 1:
        ap.error("--frame needs exactly one --profiles entry")
    net = default_models_dir() / "MDA231-seg"
    t0 = measure_t_slice(net)["median_ms"] / 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in a.profiles:
            raw = frame_for(profile, a.frame, Path(tmp))
            r = bench_profile(raw, a.reps)
            rows.append((profile, raw, r))
    t1 = measure_t_slice(net)["median_ms"] / 1000
    ts = (t0 + t1) / 2
    print(f"t_slice {ts * 1000:.1f} ms (start {t0 * 1000:.1f}, end {t1 * 1000:.1f}, drift "
          f"{(t1 - t0) / t0 * 100:+.1f} %); per frame, x t_slice\n")
    print("| profile | frame | dtype | threshold choice, histogram | bisection | speed-up | uint16 CLAHE, OpenCV | "
          "`clahe_u16` | speed-up | whole pseudocoloring, OpenCV's CLAHE | now |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for profile, raw, r in rows:
        shape = "x".join(map(str, raw.shape))
        if "clahe_cv2" in r:
            c = (f"{r['clahe_cv2'] / ts:.2f} | {r['clahe_ours'] / ts:.2f} | {r['clahe_cv2'] / r['clahe_ours']:.1f}x | "
                 f"{r['stack_cv2'] / ts:.2f}")
        else:
            c = "- | - | - | (uint8: OpenCV)"
        print(f"| {profile} | {shape} | {raw.dtype} | {r['histogram'] / ts:.2f} | {r['bisection'] / ts:.2f} | "
              f"{r['histogram'] / r['bisection']:.1f}x | {c} | {r['stack'] / ts:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
