"""Speed of ``evaluation`` SEG on a generated full-size TRIC-like sequence (synthetic data, not a CTC result).

Builds ``--distinct`` label volumes of shape (13, 2454, 1693) with ~2000 ellipsoid nuclei each (GT) and a
perturbed copy (result: centres moved, radii changed, labels renumbered), writes ``--files`` sparse slice GT
files ``man_seg_TTT_ZZZ.tif`` (one per frame, ~60% of the objects of the slice kept, as in gold truth) and
one ``maskTTT.tif`` per frame (hard links to the distinct masks, so disk use stays small), plus a few full 3D
GT frames. Then scores both sequences in a child process and prints files, objects, seconds, objects/s and
the child's peak RSS.

    .venv/bin/python benchmarks/seg_speed.py [--files 210] [--distinct 2] [--full3d 3] [--keep DIR]

Files are freshly written, so they are read from the page cache: the figure is CPU time, not disk time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

SHAPE = (13, 2454, 1693)


def paint_nuclei(shape: tuple[int, int, int], centres: np.ndarray, radii: np.ndarray,
                 labels: np.ndarray) -> np.ndarray:
    """Return a uint16 volume with one filled ellipsoid per row of ``centres``/``radii`` (later on top)."""
    vol = np.zeros(shape, np.uint16)
    bounds = np.array(shape)
    for c, r, lab in zip(centres, radii, labels, strict=True):
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, bounds)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0
        box = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        box[inside] = lab
    return vol


def make_frame(seed: int, n_nuclei: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return (gt, result) uint16 label volumes: ``n_nuclei`` ellipsoids and a perturbed, relabelled copy."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(2, shape[0] - 3, n_nuclei),
                               rng.uniform(0, shape[1], n_nuclei), rng.uniform(0, shape[2], n_nuclei)])
    radii = np.column_stack([rng.uniform(1.5, 3.0, n_nuclei), rng.uniform(7, 14, n_nuclei),
                             rng.uniform(7, 14, n_nuclei)])
    gt_labels = rng.choice(np.arange(1, 65536), size=n_nuclei, replace=False).astype(np.uint16)
    res_labels = rng.choice(np.arange(1, 65536), size=n_nuclei, replace=False).astype(np.uint16)
    gt = paint_nuclei(shape, centres, radii, gt_labels)
    moved = centres + rng.normal(0, [0.3, 2.0, 2.0], centres.shape)
    scaled = radii * rng.uniform(0.8, 1.2, radii.shape)
    keep = rng.random(n_nuclei) > 0.05  # 5% missed nuclei
    res = paint_nuclei(shape, moved[keep], scaled[keep], res_labels[keep])
    return gt, res


def sparse_slice(gt: np.ndarray, z: int, rng: np.random.Generator, fraction: float = 0.6) -> np.ndarray:
    """Return slice ``z`` of ``gt`` keeping a random ``fraction`` of its objects (sparse gold truth)."""
    sl = gt[z]
    labels = np.unique(sl)
    labels = labels[labels != 0]
    kept = labels[rng.random(labels.size) < fraction]
    return np.where(np.isin(sl, kept), sl, 0).astype(np.uint16)


def build_tree(root: Path, n_files: int, n_distinct: int, n_full3d: int, n_nuclei: int, seed: int) -> None:
    """Write ``root/01_GT/SEG`` (slice GT), ``root/02_GT/SEG`` (full 3D GT) and the ``NN_RES`` masks."""
    rng = np.random.default_rng(seed)
    gt1, res1 = root / "01_GT" / "SEG", root / "01_RES"
    gt2, res2 = root / "02_GT" / "SEG", root / "02_RES"
    for d in (gt1, res1, gt2, res2):
        d.mkdir(parents=True, exist_ok=True)
    store = root / "distinct"
    store.mkdir(exist_ok=True)
    for k in range(n_distinct):
        gt, res = make_frame(seed + k, n_nuclei, SHAPE)
        tifffile.imwrite(store / f"res{k}.tif", res, photometric="minisblack")
        tifffile.imwrite(store / f"gt{k}.tif", gt, photometric="minisblack")
        for t in range(k, n_files, n_distinct):
            z = int(rng.integers(3, SHAPE[0] - 3))
            tifffile.imwrite(gt1 / f"man_seg_{t:03d}_{z:03d}.tif", sparse_slice(gt, z, rng))
            os.link(store / f"res{k}.tif", res1 / f"mask{t:03d}.tif")
        for t in range(k, n_full3d, n_distinct):
            os.link(store / f"gt{k}.tif", gt2 / f"man_seg{t:03d}.tif")
            os.link(store / f"res{k}.tif", res2 / f"mask{t:03d}.tif")
        del gt, res


def score_child(gt_dir: Path, res_dir: Path) -> dict:
    """Score one sequence in this process; return files, objects, seconds, SEG and this process's peak RSS."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from evaluation.ctc_seg import score_sequence

    start = time.perf_counter()
    score = score_sequence(gt_dir, res_dir)
    seconds = time.perf_counter() - start
    return {"files": score.n_files, "objects": score.n_objects, "seconds": seconds, "seg": score.seg,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(gt_dir: Path, res_dir: Path) -> dict:
    """Run :func:`score_child` in a fresh interpreter (peak RSS is the scoring's own); return its dict."""
    out = subprocess.run([sys.executable, __file__, "--score", str(gt_dir), str(res_dir)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=210, help="slice GT files (one per frame) in sequence 01")
    p.add_argument("--distinct", type=int, default=2, help="distinct generated frames (masks hard-linked)")
    p.add_argument("--full3d", type=int, default=3, help="full 3D GT frames in sequence 02")
    p.add_argument("--nuclei", type=int, default=2000, help="ellipsoid nuclei per frame")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--keep", type=Path, help="write the tree here and keep it (default: a temp dir, removed)")
    p.add_argument("--score", nargs=2, type=Path, metavar=("GT", "RES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.score:
        print(json.dumps(score_child(*args.score)))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="seg_speed_"))
    try:
        t0 = time.perf_counter()
        build_tree(root, args.files, args.distinct, args.full3d, args.nuclei, args.seed)
        print(f"generated {args.distinct} distinct frames {SHAPE} in {time.perf_counter() - t0:.1f} s "
              f"(synthetic, under {root})")
        for name, gt_dir, res_dir in (("slice GT (2454x1693)", root / "01_GT/SEG", root / "01_RES"),
                                      ("full 3D GT (13x2454x1693)", root / "02_GT/SEG", root / "02_RES")):
            r = run_child(gt_dir, res_dir)
            print(f"{name}: files {r['files']}  objects {r['objects']}  seconds {r['seconds']:.2f}  "
                  f"objects/s {r['objects'] / r['seconds']:.0f}  s/file {r['seconds'] / r['files']:.3f}  "
                  f"SEG {r['seg']:.6f}  peak RSS {r['peak_rss_mb']:.0f} MB")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
