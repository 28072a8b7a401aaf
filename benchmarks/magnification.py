"""SEG when objects are smaller or larger in pixels than in the training data, with and without ``predict --scale``
(synthetic data, not CTC).

Two tables:

* ``family-b``: family B default frames (seeds ``--seeds``) resampled in xy by each magnification ``M`` (frame
  and truth; truth by nearest neighbour), segmented by the shipped models with each ``--scale`` and by the
  classical baseline. Pairs are given as ``M:S`` (``0.6:1.667`` undoes a 0.6x magnification).
* ``tuning``: the family A tuning sequences of ``benchmarks/tuning.py`` at each ``--scale``; this is where a
  default would be chosen.

    .venv/bin/python benchmarks/magnification.py family-b --dataset TRIC --pairs 0.6:1 0.6:1.667 1:1 1:1.25
    .venv/bin/python benchmarks/magnification.py tuning --dataset TRIC --scales 1 1.25 1.5
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.magnification")


def parse_pairs(items: Sequence[str]) -> list[tuple[float, float]]:
    """``["0.6:1.667", ...]`` -> ``[(0.6, 1.667), ...]`` (magnification, scale); ValueError names a bad item."""
    out = []
    for item in items:
        try:
            m, s = (float(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"--pairs {item!r}: expected MAGNIFICATION:SCALE, e.g. 0.6:1.667") from None
        if not (m > 0 and s > 0):
            raise ValueError(f"--pairs {item!r}: both numbers must be > 0")
        out.append((m, s))
    return out


def magnify(raw: np.ndarray, truth: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its truth resampled in xy by ``m`` (frame as ``predict --scale`` does, truth nearest)."""
    from efficientcellseg.preprocess import rescale_frame, restore_labels, scaled_shape

    if m == 1.0:
        return raw, truth
    return rescale_frame(raw, m), restore_labels(np.asarray(truth, np.uint16), scaled_shape(truth.shape[1:], m))


def family_b_table(dataset: str, seeds: Sequence[int], pairs: Sequence[tuple[float, float]]) -> str:
    """Markdown: SEG of the shipped models and of the classical baseline per (magnification, scale)."""
    from classical import segment_classical
    from robustness import family_b_frame, score

    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import build_segmenter
    from evaluation.seg import pooled_seg

    key = get_dataset(dataset).key
    frames = [family_b_frame(key, s, key == "TRIC", {}) for s in seeds]
    lines = [f"| {key} magnification | --scale | shipped SEG | classical SEG | objects |", "|---|---|---|---|---|"]
    segs = {}
    for m, s in pairs:
        if s not in segs:
            segs[s] = build_segmenter(key, device="cpu", scale=s)
        net, cla = [], []
        start = time.perf_counter()
        for raw, truth in frames:
            r, t = magnify(raw, truth, m)
            for out, labels in ((net, segs[s].segment(r)), (cla, segment_classical(r, key))):
                got = score(t, labels, key)
                out.extend(got if isinstance(got, list) else [got])
        n = sum(x.n_objects for x in net)
        lines.append(f"| {m:g} | {s:g} | {pooled_seg(net):.3f} | {pooled_seg(cla):.3f} | {n} |")
        log.info("%s M=%g S=%g: %s (%.0f s)", key, m, s, lines[-1], time.perf_counter() - start)
    return "\n".join(lines) + f"\n\nFamily B default frames, seeds {', '.join(map(str, seeds))}; SEG pooled.\n"


def tuning_table(dataset: str, scales: Sequence[float]) -> str:
    """Markdown: SEG of the shipped models on the family A tuning sequences at each scale."""
    from tuning import ensure_sequences

    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import build_segmenter, choose_calibration_frames
    from evaluation.ctc_seg import list_gt_files, read_gt
    from evaluation.seg import match_objects, pooled_seg

    key = get_dataset(dataset).key
    specs = ensure_sequences(ROOT / "runs" / "tuning" / "data", key)
    lines = [f"| {key} tuning set, --scale | fixed | randomized | mean |", "|---|---|---|---|"]
    for s in scales:
        acc: dict[bool, list] = {False: [], True: []}
        for _tag, randomized, spec in specs:
            seg = build_segmenter(key, device="cpu", scale=s, adapt_frames=choose_calibration_frames(spec.path))
            frames = {f.index: f for f in list_frames(spec.path)}
            gts = list_gt_files(spec.gt_dir)
            for t in sorted({g.t for g in gts} & set(frames)):
                labels = seg.segment(read_frame(frames[t].path, max_z=seg.cfg.max_z))
                acc[randomized] += [match_objects(read_gt(g), labels if g.z is None else labels[g.z])
                                    for g in gts if g.t == t]
        f, r = pooled_seg(acc[False]), pooled_seg(acc[True])
        lines.append(f"| {s:g} | {f:.4f} | {r:.4f} | {(f + r) / 2:.4f} |")
        log.info("%s", lines[-1])
    return "\n".join(lines) + "\n\nSEG pooled over reference objects of the family A tuning sequences.\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints one Markdown table."""
    from efficientcellseg.errors import CTCInputError, ModelError
    from efficientcellseg.log import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", choices=["family-b", "tuning"])
    ap.add_argument("--dataset", default="TRIC", choices=["MDA231", "TRIC", "A549-SIM"])
    ap.add_argument("--pairs", nargs="+", default=["0.6:1", "0.6:1.667", "1:1", "1:1.25"],
                    help="family-b: MAGNIFICATION:SCALE pairs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[531, 532], help="family-b: family B seeds")
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.25, 1.5], help="tuning: --scale values")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    a = ap.parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    try:
        text = (family_b_table(a.dataset, a.seeds, parse_pairs(a.pairs)) if a.table == "family-b"
                else tuning_table(a.dataset, a.scales))
    except (ValueError, CTCInputError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Command: `benchmarks/magnification.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
