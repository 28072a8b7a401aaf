"""Score variants of a model folder on the family A tuning sequences, where input and post-processing settings
are chosen (synthetic data, not CTC).

Each dataset has one fixed tuning set (:data:`TUNING_SETS`): fixed-profile sequences and six domain-randomized
ones (``synth --randomize``), with seeds that no training or evaluation uses. Family B is never part of it:
settings are chosen here and only then measured with ``benchmarks/accuracy.py``.

For every sequence the script prints SEG (pooled over the reference objects of its frames) of every model set
and of the classical baseline, and the noise/range ratio of its raw first frame (``denoise.noise_ratio``; a
model with a top-hat measures it after the top-hat, so TRIC's own figure differs); then pooled rows over the
fixed, the randomized and all sequences. ``--det`` also links each result over time
(``efficientcellseg.track``) and adds DET, which is how TRIC's ``min_size`` was chosen. Model sets are given as in
``accuracy.py`` (``--models NAME=DIR``; ``benchmarks/denoise_variant.py`` makes variants of the shipped folders).

Example (the MDA231 smoothing-target probe of docs/generalization.md)::

    .venv/bin/python benchmarks/denoise_variant.py --datasets MDA231 --scale 0.5454545 --out runs/variants/t03
    .venv/bin/python benchmarks/tuning.py --datasets MDA231 --models shipped=models \\
        --models t03=runs/variants/t03 --work runs/tuning --md runs/tuning/mda231.md
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from accuracy import CLASSICAL, SeqSpec, model_folders, parse_model_sets, run_method  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from evaluation.ctc_seg import FileScore, score_sequence  # noqa: E402
from evaluation.seg import pooled_seg  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.tuning")


@dataclass(frozen=True)
class TuningSet:
    """The family A tuning sequences of one dataset."""

    fixed_seeds: tuple[int, ...]
    random_seeds: tuple[int, ...]
    frames: int
    small: bool

    def sequences(self) -> list[tuple[str, int, bool]]:
        """``(tag, seed, randomized)`` for every sequence; the tag names the sequence in tables."""
        return ([(f"fixed-{s}", s, False) for s in self.fixed_seeds]
                + [(f"random-{s}", s, True) for s in self.random_seeds])


TUNING_SETS = {
    # TRIC: where the top-hat radius, the order of smoothing and top-hat and min_size were chosen (2026-12-04)
    "TRIC": TuningSet((151,), tuple(range(481, 487)), 3, True),
    # MDA231: the smoothing-target and top-hat probes (2026-12-04, fixed seed 153 only). Fixed seeds 155 and 156
    # were added for min_ratio: their frames are noisier (noise/range 0.063 and 0.069, as fixed-profile frames
    # can be), and a setting must not smooth away what the network was trained on
    "MDA231": TuningSet((153, 155, 156), tuple(range(501, 507)), 3, True),
    # A549-SIM: first used 2026-12-04 (late); earlier A549-SIM choices used seeds 150-152 and 201-206. Fixed seeds
    # 157 and 158 were added later that day: one fixed sequence (3 objects, one cell per frame) could not show
    # whether a setting costs anything in distribution
    "A549-SIM": TuningSet((154, 157, 158), tuple(range(511, 517)), 3, False),
}
"""Seeds used nowhere else (test_tuning_seeds_are_used_nowhere_else): training uses 101-106, 1011-1058,
2011-2066, 2101-2348 (the GPU batch) and 3101-3248 (CPU one-frame draws), evaluation 201-206, 221-222,
301-309, 321-322, 420-445, 460-465 and 530-545, the first tuning of the shipped post-processing 150-152 (TRIC's
151 is kept here)."""


@dataclass
class SeqResult:
    """Scores of every method on one tuning sequence."""

    tag: str
    randomized: bool
    noise_ratio: float
    files: dict[str, list[FileScore]]
    det: dict[str, float]


def ensure_sequences(data_root: Path, dataset: str, frames: int | None = None) -> list[tuple[str, bool, SeqSpec]]:
    """Generate the tuning sequences of ``dataset`` under ``data_root`` where missing (deterministic for the
    seeds) and return ``(tag, randomized, spec)`` for each. A sequence counts as present when its folder holds
    as many frames as asked for and its SEG truth exists."""
    from efficientcellseg.synth import generate

    cfg = get_dataset(dataset)
    ts = TUNING_SETS[cfg.key]
    n = frames or ts.frames
    out = []
    for tag, seed, randomized in ts.sequences():
        root = data_root / f"{tag}-{n}"
        spec = SeqSpec(tag, cfg.key, root / cfg.ctc_name / "01")
        if not (spec.gt_dir.is_dir() and len(list(spec.path.glob("t*.tif"))) == n):
            log.info("generating %s %s: seed %d, %d frames", dataset, tag, seed, n)
            generate(spec.dataset, root, seq="01", frames=n, seed=seed, small=ts.small, randomize=randomized)
        out.append((tag, randomized, spec))
    return out


def first_frame_noise_ratio(spec: SeqSpec) -> float:
    """``denoise.noise_ratio`` of the sequence's raw first frame (a model with a top-hat measures it after that)."""
    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.denoise import noise_ratio

    return noise_ratio(read_frame(list_frames(spec.path)[0].path))


def score_all(specs: Sequence[tuple[str, bool, SeqSpec]], methods: dict[str, Path | None], work: Path,
              threads: int | None, reuse: bool, det: bool) -> list[SeqResult]:
    """Run and score every method on every tuning sequence (with ``det``, link and score DET as well)."""
    from efficientcellseg.track import track_folder
    from evaluation.ctc_tra import score_tracking

    results = []
    for tag, randomized, spec in specs:
        r = SeqResult(tag, randomized, first_frame_noise_ratio(spec), {}, {})
        for method, models_dir in methods.items():
            res = run_method(method, models_dir, spec, work, "auto", threads, reuse)
            r.files[method] = list(score_sequence(spec.gt_dir, res).files)
            if det:
                track_folder(res, spec.dataset, spec.path)
                r.det[method] = score_tracking(spec.path.parent / f"{spec.path.name}_GT", res).det
        results.append(r)
    return results


def format_table(dataset: str, results: Sequence[SeqResult], methods: Sequence[str], det: bool) -> str:
    """Markdown: one row per sequence (SEG, and DET with ``det``) and the two pooled rows."""
    cols = [f"{m} SEG" for m in methods] + ([f"{m} DET" for m in methods] if det else [])
    lines = [f"| {dataset} tuning sequence | objects | noise/range | " + " | ".join(cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]

    def row(name: str, part: Sequence[SeqResult], noise: str) -> str:
        segs = [pooled_seg(f.matches for r in part for f in r.files[m]) for m in methods]
        cells = [f"{s:.3f}" for s in segs]
        if det:
            cells += [f"{sum(r.det[m] for r in part) / len(part):.3f}" for m in methods]
        return f"| {name} | {sum_objects(part, methods[0])} | {noise} | " + " | ".join(cells) + " |"

    for r in results:
        lines.append(row(r.tag, [r], f"{r.noise_ratio:.3f}"))
    fixed = [r for r in results if not r.randomized]
    if len(fixed) > 1:
        lines.append(row("**fixed, pooled**", fixed, "-"))
    rand = [r for r in results if r.randomized]
    if rand:
        lines.append(row("**randomized, pooled**", rand, "-"))
    lines.append(row("**all, pooled**", list(results), "-"))
    note = ("SEG pooled over reference objects; DET is the mean over sequences. " if det else
            "SEG pooled over reference objects. ")
    return "\n".join(lines) + "\n\n" + note + "Family A tuning sequences (synthetic, not CTC).\n"


def sum_objects(part: Sequence[SeqResult], method: str) -> int:
    """Reference objects over several sequences."""
    return sum(f.matches.n_objects for r in part for f in r.files[method])


def parse_grid(items: Sequence[str], kind: str) -> dict[str, tuple[float | int | bool, ...]]:
    """``["prob_threshold=0.4,0.5", ...]`` -> ``{"prob_threshold": (0.4, 0.5)}`` for post-processing ``kind``.
    Whole values of an int or bool parameter (by its default, ``postprocess.canonical_params``) become that
    type, as in ``thresholds.json``. ValueError names a malformed item or an unknown parameter."""
    from efficientcellseg.postprocess import canonical_params, check_parameter_names

    defaults = canonical_params(kind, {})
    grid: dict[str, tuple[float | int | bool, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            parsed = tuple(float(v) for v in values.split(","))
        except ValueError:
            parsed = ()
        if not sep or not name or not parsed:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2,..., e.g. prob_threshold=0.4,0.5")
        try:
            check_parameter_names(kind, [name])
        except ValueError as exc:
            raise ValueError(f"--grid {item!r}: {exc}") from None
        kind_of = type(defaults[name])
        grid[name] = tuple(kind_of(v) if kind_of in (int, bool) and v.is_integer() else v for v in parsed)
    return grid


def grid_table(dataset: str, specs: Sequence[tuple[str, bool, SeqSpec]], name: str, models_dir: Path,
               grid: dict[str, tuple[float | int | bool, ...]]) -> str:
    """Markdown: the post-processing grid of one model set on every tuning sequence (one network pass each, by
    ``efficientcellseg.tune.tune_postprocess``), pooled over fixed, randomized and all sequences; the folder's
    own setting first."""
    from efficientcellseg.postprocess import canonical_params
    from efficientcellseg.tune import tune_postprocess

    kind = get_dataset(dataset).postprocess
    folders = model_folders(models_dir, dataset)
    per_seq = []
    for tag, randomized, spec in specs:
        r = tune_postprocess(spec.dataset, spec.path, model_dir=folders["seg"], centers_model_dir=folders.get("centers"),
                             grid=grid, device="cpu")
        trials = [(r.current, r.current_seg)] + r.trials
        per_seq.append((randomized, r.n_objects, {repr(sorted(p.items())): (p, s) for p, s in trials}))
    keys = list(per_seq[0][2])
    names = list(grid)

    def pooled(key: str, which: Sequence[bool]) -> float:
        part = [(n, d[key][1]) for rnd, n, d in per_seq if rnd in which]
        return sum(n * s for n, s in part) / max(1, sum(n for n, _ in part))

    lines = [f"| {dataset} {name}: " + " | ".join(names) + " | fixed | randomized | all |",
             "|---|" + "---|" * (len(names) + 2)]
    for i, key in enumerate(keys):
        params = canonical_params(kind, per_seq[0][2][key][0])  # the folder's own may omit a default
        cells = [str(params[n]) for n in names]
        if i == 0:
            cells[0] = f"{cells[0]} (folder)"
        lines.append("| " + " | ".join(cells) + f" | {pooled(key, [False]):.3f} | {pooled(key, [True]):.3f} | "
                     f"{pooled(key, [False, True]):.3f} |")
    return "\n".join(lines) + "\n\nSEG pooled over reference objects of the family A tuning sequences.\n"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = argparse.ArgumentParser(description="SEG (and DET) of model-folder variants on the family A tuning "
                                 "sequences, next to the classical baseline.")
    ap.add_argument("--datasets", nargs="+", default=["MDA231"], choices=sorted(TUNING_SETS),
                    help="datasets whose tuning sets to score")
    ap.add_argument("--models", action="append", default=[], metavar="NAME=DIR",
                    help="a model set: folder holding <dataset>-seg (and MDA231-centers); repeatable")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per tuning sequence (default: the set's, 3); other counts get their own folders")
    ap.add_argument("--det", action="store_true", help="also link the results over time and report DET")
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                    help="instead of the table, grid-search these post-processing parameters for each --models "
                         "set (one network pass per sequence); repeatable")
    ap.add_argument("--no-classical", action="store_true", help="leave the classical baseline out")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "tuning", help="folder for the data and results")
    ap.add_argument("--md", type=Path, default=None, help="also write the Markdown tables to this file")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the networks (default: all)")
    ap.add_argument("--reuse-results", action="store_true",
                    help="keep result folders under --work that hold a mask for every frame")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; prints one table per dataset and returns the exit code."""
    from efficientcellseg.ctc_io import write_text_atomic
    from efficientcellseg.errors import CTCInputError, ModelError
    from efficientcellseg.log import setup_logging
    from evaluation.ctc_seg import SegError
    from evaluation.ctc_tra import TraError

    a = build_parser().parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    try:
        if a.frames is not None and a.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {a.frames}")
        methods = parse_model_sets(a.models)
        if not a.no_classical:
            methods[CLASSICAL] = None
        if not methods:
            raise ValueError("nothing to score: give --models NAME=DIR or leave out --no-classical")
        # checked before any sequence is generated or network run
        grids = {ds: parse_grid(a.grid, get_dataset(ds).postprocess) for ds in a.datasets} if a.grid else {}
        tables = []
        for ds in a.datasets:
            specs = ensure_sequences(a.work / "data", ds, a.frames)
            if a.grid:
                tables += [grid_table(get_dataset(ds).key, specs, name, folder, grids[ds])
                           for name, folder in methods.items() if folder is not None]
                continue
            results = score_all(specs, methods, a.work, a.threads, a.reuse_results, a.det)
            tables.append(format_table(get_dataset(ds).key, results, list(methods), a.det))
    except (ValueError, CTCInputError, ModelError, SegError, TraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "benchmarks/tuning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{command}`\n\n" + "\n".join(tables)
    print(text)
    if a.md is not None:
        write_text_atomic(a.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
