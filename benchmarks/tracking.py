"""Tracking benchmark: linking cost in units of one network pass, and TRA/DET on unseen synthetic time-lapses.

In one run, for MDA231 and TRIC (``--small`` frames) on freshly generated SYNTHETIC sequences (seeds 2xx,
never used for training 101-106 or tuning 150-152; not CTC data):

1. ``t_slice``: median time of one fp32 384x384 pass of the project's network in ONNX Runtime, batch 1 (the
   shipped TRIC-seg weights, the pipeline's simplified export), timed before and after the rest.
2. (a) The true TRA masks with every frame's labels shuffled, linked by ``efficientcellseg.track``: TRA/DET
   and linking time per frame (reading, linking and writing every mask and res_track.txt).
3. (b) The shipped models end to end through ``./run_<DATASET>.sh`` with ``EFFICIENTCELLSEG_TRACK=1``:
   TRA/DET (and SEG for context), the run's time per frame, and linking time per frame on those masks.

Linking per frame is printed in units of t_slice and as a fraction of the segmentation time per frame
(predict's own ``timing: ... total`` line of the same run, without start-up and linking). The machine is shared: timings are noisy, ratios from one run are what counts.

Usage::

    .venv/bin/python benchmarks/tracking.py [--out DIR] [--frames-mda231 8] [--frames-tric 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "SW"), str(ROOT)]

FOLDERS = {"MDA231": "Fluo-C3DL-MDA231", "TRIC": "Fluo-N3DL-TRIC"}
SEEDS = {"MDA231": 221, "TRIC": 222}


def t_slice_ms(rounds: int = 15) -> float:
    """Median ms of one fp32 384x384 ONNX Runtime pass, batch 1, of the shipped TRIC-seg network."""
    import torch

    from efficientcellseg.onnx_backend import OnnxRunner
    from efficientcellseg.weights import default_models_dir, load_model_folder

    run = OnnxRunner(load_model_folder(default_models_dir() / "TRIC-seg"))
    x = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    run(x)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def warm_up_models(key: str) -> None:
    """Export the dataset's shipped networks to ONNX once (cached) so that no run below pays for it."""
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import model_folders
    from efficientcellseg.onnx_backend import OnnxRunner
    from efficientcellseg.weights import load_model_folder

    for folder in model_folders(get_dataset(key)).values():
        OnnxRunner(load_model_folder(folder))


def shuffled_truth(ds: Path, out: Path, seed: int = 0) -> None:
    """Copy ``ds/01_GT/TRA`` markers to ``out`` as maskTTT.tif with every frame's labels randomly permuted."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted((ds / "01_GT" / "TRA").glob("man_track*.tif")):
        perm = np.zeros(65536, np.uint16)
        perm[1:] = rng.permutation(65535) + 1
        tifffile.imwrite(out / p.name.replace("man_track", "mask"), perm[tifffile.imread(p)], compression="zlib")


def timed_link(res: Path, dataset: str) -> tuple[float, int]:
    """Seconds of one ``track_folder`` run on ``res`` and its number of frames."""
    from efficientcellseg.track import track_folder

    t0 = time.perf_counter()
    rep = track_folder(res, dataset=dataset)
    return time.perf_counter() - t0, rep.n_frames


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report."""
    from efficientcellseg.log import setup_logging
    from efficientcellseg.synth import generate
    from evaluation.ctc_seg import score_sequence
    from evaluation.ctc_tra import score_tracking

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--frames-mda231", type=int, default=8, help="MDA231 frames (30x512x512)")
    p.add_argument("--frames-tric", type=int, default=5, help="TRIC --small frames (13x700x1000)")
    args = p.parse_args(argv)
    setup_logging(-1)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "SW"), str(ROOT),
                                                       os.environ.get("PYTHONPATH", "")]))
    ts = [t_slice_ms()]
    rows = []
    for key, n in (("MDA231", args.frames_mda231), ("TRIC", args.frames_tric)):
        ds = work / FOLDERS[key]
        shutil.rmtree(ds, ignore_errors=True)
        generate(profile=key, out_root=work, seq="01", frames=n, seed=SEEDS[key], small=key == "TRIC")
        shuf = ds / "01_SHUF"
        shuffled_truth(ds, shuf)
        link_s, nf = timed_link(shuf, key)
        a = score_tracking(ds / "01_GT", shuf)
        warm_up_models(key)
        t0 = time.perf_counter()
        r = subprocess.run([str(ROOT / f"run_{key}.sh"), "01", str(work)], env=dict(env, EFFICIENTCELLSEG_TRACK="1"),
                           capture_output=True, text=True)
        run_s = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        seg_total = re.findall(r"timing: .*; total ([0-9.]+)s", r.stderr)
        b = score_tracking(ds / "01_GT", ds / "01_RES")
        seg = score_sequence(ds / "01_GT" / "SEG", ds / "01_RES").seg
        link_pred_s, _ = timed_link(ds / "01_RES", key)
        rows.append(dict(key=key, frames=nf, n_tracks=len((ds / "01_GT" / "TRA" / "man_track.txt").read_text()
                                                            .splitlines()),
                         a=a, b=b, seg=seg, link_true=link_s / nf, run=run_s / nf, link_pred=link_pred_s / nf,
                         segment=float(seg_total[-1]) / nf if seg_total else run_s / nf))
    ts.append(t_slice_ms())
    t = statistics.median(ts) / 1000
    print(f"t_slice (fp32 384x384 ONNX Runtime, batch 1): {1000 * t:.0f} ms (before {ts[0]:.0f}, after {ts[1]:.0f})")
    print("SYNTHETIC sequences (not CTC data); seeds MDA231 221, TRIC 222 (--small); shared machine, noisy times\n")
    print("| dataset | frames | true tracks | (a) shuffled truth TRA / DET | linking s/frame (t_slice) "
          "| (b) shipped models TRA / DET / SEG | segmentation s/frame (t_slice) | run script s/frame "
          "| linking s/frame (t_slice) | linking / segmentation |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['key']} | {r['frames']} | {r['n_tracks']} | {r['a'].tra:.6f} / {r['a'].det:.6f} "
              f"| {r['link_true']:.2f} ({r['link_true'] / t:.1f}) "
              f"| {r['b'].tra:.6f} / {r['b'].det:.6f} / {r['seg']:.3f} | {r['segment']:.1f} ({r['segment'] / t:.0f}) "
              f"| {r['run']:.1f} | {r['link_pred']:.2f} ({r['link_pred'] / t:.1f}) "
              f"| {100 * r['link_pred'] / r['segment']:.1f} % |")
    for r in rows:
        o = r["b"].ops
        print(f"{r['key']} (b) operations: nodes {o.n_nodes} edges {o.n_edges} NS {o.ns} FN {o.fn} FP {o.fp} "
              f"ED {o.ed} EA {o.ea} EC {o.ec}")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
