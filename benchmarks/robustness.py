"""Robustness curves: SEG of learned models and of the classical baseline while one image factor varies.

Frames come from the independent image model "family B" (:func:`efficientcellseg.synth_b.frame_b`). For each
factor of ``FamilyBParams`` (snr, z_blur, texture, bg_gradient, brightness, density) and each level (default
0.25, 0.5, 1, 2, 4: a log scale around the default 1), that ONE factor is set to the level and all others stay
at 1; every point uses the same frame seeds (:data:`SEED_BASE` + i, i < frames per point), so along a curve
only the factor changes. Each model set (``--models NAME=DIR``, default the shipped ``models/``) and the
classical baseline (``benchmarks/classical.py``) segment the same frames.

Scoring (``evaluation.seg`` pure functions, in memory, the same for every method): the frame's complete
truth is the reference. Datasets whose CTC truth is 2D slices (MDA231, TRIC) are scored **in 2D, every
z-slice, every object cross-section of the full 3D truth** (each (slice, object) is one reference object, as
in the challenge's slice GT but with all slices and all objects); datasets with full 3D CTC truth
(A549-SIM) in 3D. SEG is pooled over all reference objects of all frames of a point.

Network-free parts are cached under ``--cache`` (``.npz`` per frame: raw, truth and the classical labels),
keyed by dataset, seed, size, the factor values and a hash of the generator's source file, so a rerun with
other models or more levels only computes what is new. The network labels of the default point (all
factors 1) are computed once and shared by the six curves.

Writes ``OUT/robustness_<DATASET>.png`` (six panels, SEG vs factor level, one line per method) and
``OUT/robustness.md`` (the table and the command). Example (reduced)::

    .venv/bin/python benchmarks/robustness.py --datasets A549-SIM --levels 0.5 2 --frames-per-point 1
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from classical import segment_classical  # noqa: E402
from efficientcellseg.datasets import DATASETS, get_dataset  # noqa: E402
from evaluation.seg import ObjectMatches, match_objects, pooled_seg  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.robustness")

FACTORS = ("snr", "z_blur", "texture", "bg_gradient", "brightness", "density")
DEFAULT_LEVELS = (0.25, 0.5, 1.0, 2.0, 4.0)
SEED_BASE = 401
"""Frame i of every point uses seed SEED_BASE + i (unseen: training 101-106, tuning 150-152, tables 201+)."""
CLASSICAL = "classical"

FrameSource = Callable[[str, int, bool, Mapping[str, float]], tuple[np.ndarray, np.ndarray]]
"""``(dataset, seed, small, factors) -> (raw (Z, Y, X), uint16 truth labels)``."""
Segment = Callable[[np.ndarray], np.ndarray]


def family_b_frame(dataset: str, seed: int, small: bool, factors: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """One family B frame with ``FamilyBParams(**factors)``: ``(raw, uint16 labels)``."""
    from efficientcellseg.synth_b import FamilyBParams, frame_b

    return frame_b(dataset, seed=seed, small=small, params=FamilyBParams(**factors))


def source_version(source: FrameSource) -> str:
    """A short hash of the source file defining ``source`` (family B: the generator module), for cache keys."""
    if source is family_b_frame:
        import efficientcellseg.synth_b as mod

        path = inspect.getsourcefile(mod)
    else:
        path = inspect.getsourcefile(source)
    data = Path(path).read_bytes() if path else repr(source).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Point:
    """SEG of one method at one (dataset, factor, level)."""

    dataset: str
    factor: str
    level: float
    method: str
    seg: float
    objects: int
    frames: int


def score(truth: np.ndarray, labels: np.ndarray, dataset: str) -> ObjectMatches | list[ObjectMatches]:
    """Matches of ``labels`` against the full truth: per z-slice in 2D for slice-GT datasets, else in 3D."""
    if get_dataset(dataset).gt_kind == "slices":
        return [match_objects(truth[z], labels[z]) for z in range(truth.shape[0])]
    return match_objects(truth, labels)


class FrameCache:
    """Raw frame, truth and classical labels per (dataset, seed, size, factors, generator version)."""

    def __init__(self, folder: Path | None, source: FrameSource) -> None:
        self.folder = folder
        self.source = source
        self.version = source_version(source)

    def key(self, dataset: str, seed: int, small: bool, factors: Mapping[str, float]) -> str:
        """The cache key (also the file name stem)."""
        text = json.dumps([dataset, seed, small, sorted(factors.items()), self.version])
        return f"{dataset}-{seed}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"

    def get(self, dataset: str, seed: int, small: bool, factors: Mapping[str, float]
            ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(key, raw, truth, classical labels)``, computing and storing what is not cached."""
        key = self.key(dataset, seed, small, factors)
        path = None if self.folder is None else self.folder / f"{key}.npz"
        if path is not None and path.is_file():
            with np.load(path) as z:
                return key, z["raw"], z["truth"], z["classical"]
        raw, truth = self.source(dataset, seed, small, factors)
        classical = segment_classical(raw, dataset)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.part.npz")
            np.savez_compressed(tmp, raw=raw, truth=np.asarray(truth, np.uint16), classical=classical)
            tmp.replace(path)
        return key, raw, np.asarray(truth), classical


def network_segmenters(dataset: str, models: Mapping[str, Path], backend: str = "auto") -> dict[str, Segment]:
    """``{name: raw -> labels}`` for each model set folder (holding ``<dataset>-seg`` etc.), on the CPU.

    A model set that adapts its normalisation to each sequence (``norm_adaptation``, efficientcellseg.adapt)
    adapts to each frame here, as ``predict`` does on a one-frame sequence."""
    from efficientcellseg.infer import build_segmenter, model_folders, wants_adaptation

    cfg = get_dataset(dataset)
    out: dict[str, Segment] = {}
    for name, folder in models.items():
        found = model_folders(cfg, folder)
        dirs = {"model_dir": found["seg"], "centers_model_dir": found.get("centers")}
        if wants_adaptation(cfg, **dirs):
            out[name] = (lambda raw, dirs=dirs: build_segmenter(cfg.key, **dirs, device="cpu", backend=backend,
                                                                adapt_frames=[raw]).segment(raw))
        else:
            out[name] = build_segmenter(cfg.key, **dirs, device="cpu", backend=backend).segment
    return out


def run_robustness(datasets: Sequence[str], factors: Sequence[str], levels: Sequence[float], frames: int,
                   models: Mapping[str, Path], cache: FrameCache, tric_small: bool = True,
                   backend: str = "auto") -> list[Point]:
    """Compute every point (dataset x factor x level x method); see the module notes."""
    for f in factors:
        if f not in FACTORS:
            raise ValueError(f"unknown factor {f!r}; known: {', '.join(FACTORS)}")
    if frames < 1 or not levels or any(v <= 0 for v in levels):
        raise ValueError(f"need frames >= 1 and positive levels (got {frames} frames, levels {list(levels)})")
    points = []
    for ds in datasets:
        key_ds = get_dataset(ds).key
        small = tric_small and key_ds == "TRIC"
        nets = network_segmenters(key_ds, models, backend)
        memo: dict[tuple[str, str], list[ObjectMatches]] = {}  # (method, frame key) -> matches
        for factor in factors:
            for level in levels:
                fac = {f: 1.0 for f in FACTORS}
                fac[factor] = float(level)
                start = time.perf_counter()
                per_method: dict[str, list[ObjectMatches]] = {m: [] for m in (*nets, CLASSICAL)}
                for i in range(frames):
                    fkey, raw, truth, classical = cache.get(key_ds, SEED_BASE + i, small, fac)
                    for method in per_method:
                        if (method, fkey) not in memo:
                            labels = classical if method == CLASSICAL else nets[method](raw)
                            m = score(truth, labels, key_ds)
                            memo[(method, fkey)] = m if isinstance(m, list) else [m]
                        per_method[method] += memo[(method, fkey)]
                for method, matches in per_method.items():
                    n_obj = sum(m.n_objects for m in matches)
                    seg = pooled_seg(matches) if n_obj else float("nan")
                    points.append(Point(key_ds, factor, float(level), method, seg, n_obj, frames))
                log.info("%s %s=%g: %s (%.1f s)", key_ds, factor, level,
                         ", ".join(f"{p.method} {p.seg:.3f}" for p in points[-len(per_method):]),
                         time.perf_counter() - start)
    return points


def format_table(points: Sequence[Point]) -> str:
    """Markdown: one table per dataset, rows (factor, level), one SEG column per method, reference objects."""
    out = []
    for ds in dict.fromkeys(p.dataset for p in points):
        pts = [p for p in points if p.dataset == ds]
        methods = list(dict.fromkeys(p.method for p in pts))
        kind = "2D slices of the full 3D truth" if get_dataset(ds).gt_kind == "slices" else "3D"
        out.append(f"#### {ds} (family B, {pts[0].frames} frame(s) per point, scored in {kind})\n")
        out.append("| factor | level | " + " | ".join(f"SEG {m}" for m in methods) + " | objects |")
        out.append("|---|---|" + "---|" * len(methods) + "---|")
        for factor in dict.fromkeys(p.factor for p in pts):
            for level in dict.fromkeys(p.level for p in pts if p.factor == factor):
                row = {p.method: p for p in pts if p.factor == factor and p.level == level}
                segs = " | ".join(f"{row[m].seg:.3f}" for m in methods)
                out.append(f"| {factor} | {level:g} | {segs} | {row[methods[0]].objects} |")
        out.append("")
    return "\n".join(out)


def plot(points: Sequence[Point], dataset: str, path: Path) -> Path:
    """Six panels (one per factor present), SEG vs level (log x), one line per method; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    pts = [p for p in points if p.dataset == dataset]
    factors = list(dict.fromkeys(p.factor for p in pts))
    methods = list(dict.fromkeys(p.method for p in pts))
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5), sharey=True)
    for ax, factor in zip(axes.ravel(), FACTORS, strict=True):
        if factor not in factors:
            ax.set_visible(False)
            continue
        for method in methods:
            sel = sorted((p.level, p.seg) for p in pts if p.factor == factor and p.method == method)
            style = "--s" if method == CLASSICAL else "-o"
            ax.plot([x for x, _ in sel], [y for _, y in sel], style, label=method)
        ax.set_xscale("log")
        ticks = sorted({p.level for p in pts if p.factor == factor})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(factor)
        ax.set_xlabel("factor level (1 = default)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("SEG")
    axes.ravel()[[i for i, f in enumerate(FACTORS) if f in factors][0]].legend(loc="lower left")
    fig.suptitle(f"{dataset}: SEG vs one family B factor at a time (synthetic, {pts[0].frames} frame(s)/point)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_outputs(points: Sequence[Point], out: Path, command: str) -> tuple[list[Path], Path]:
    """Write one PNG per dataset and ``robustness.md``; returns (PNG paths, Markdown path)."""
    from efficientcellseg.ctc_io import write_text_atomic

    pngs = [plot(points, ds, out / f"robustness_{ds}.png") for ds in dict.fromkeys(p.dataset for p in points)]
    md = out / "robustness.md"
    write_text_atomic(md, f"Command: `{command}`\n\n{format_table(points)}")
    return pngs, md


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; prints the command and the table, returns the exit code."""
    from efficientcellseg.errors import CTCInputError, ModelError
    from efficientcellseg.log import setup_logging

    ap = argparse.ArgumentParser(description="SEG of model sets and the classical baseline on family B frames "
                                 "while one FamilyBParams factor varies at a time.")
    ap.add_argument("--datasets", nargs="+", default=["MDA231", "TRIC", "A549-SIM"], choices=sorted(DATASETS),
                    help="datasets (one PNG each)")
    ap.add_argument("--factors", nargs="+", default=list(FACTORS), choices=FACTORS, help="factors to vary")
    ap.add_argument("--levels", nargs="+", type=float, default=list(DEFAULT_LEVELS),
                    help="factor levels (1 = default; default 0.25 0.5 1 2 4)")
    ap.add_argument("--frames-per-point", type=int, default=2, help="frames (seeds 401, 402, ...) per point")
    ap.add_argument("--tric-full", action="store_true", help="full-size TRIC frames (default: small)")
    ap.add_argument("--models", action="append", default=None, metavar="NAME=DIR",
                    help="model set(s) to compare (default: shipped=models); repeatable")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "robustness", help="folder for PNGs and table")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "robustness" / "cache",
                    help="cache of network-free results (frames, truth, classical labels)")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="network runtime (CPU)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    a = ap.parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    command = "benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: {command}")
    try:
        models = {}
        for text in a.models or [f"shipped={ROOT / 'models'}"]:
            name, sep, folder = text.partition("=")
            if not sep or not name or not folder or name == CLASSICAL or name in models:
                raise ValueError(f"--models {text!r}: expected NAME=DIR with a new NAME other than {CLASSICAL!r}")
            if not Path(folder).is_dir():
                raise ValueError(f"--models {text!r}: model folder {folder} does not exist")
            models[name] = Path(folder)
        try:
            cache = FrameCache(a.cache, family_b_frame)
        except ImportError as exc:
            raise ValueError(f"family B frames need efficientcellseg.synth_b, which is not importable ({exc})") \
                from None
        points = run_robustness(a.datasets, a.factors, a.levels, a.frames_per_point, models, cache,
                                tric_small=not a.tric_full, backend=a.backend)
        pngs, md = write_outputs(points, a.out, command)
    except (ValueError, CTCInputError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(points))
    print("wrote " + ", ".join(str(p) for p in (*pngs, md)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
