"""Accuracy table: learned models vs the classical baseline, in and out of distribution (synthetic data).

Every method runs on the same labelled sequences and is scored with ``evaluation/`` (SEG pooled over all
reference objects of a sequence, PESEG = SEG / parameters * 1e6 for the networks, and DET, the CTC's detection
measure, pooled over the tracking markers where the sequence has ``PATH_GT/TRA``: false positives cost DET but
never SEG):

- each model set given with ``--models NAME=DIR`` (``DIR`` holds the model folders under their usual names,
  e.g. ``MDA231-seg``, ``MDA231-centers``; ``shipped=models`` are the shipped ones), through
  :func:`efficientcellseg.infer.predict_sequence` exactly as ``efficientcellseg predict`` runs;
- the classical baseline of ``benchmarks/classical.py`` (always).

Sequences are given as ``--seq TAG:DATASET:PATH`` (PATH is the sequence folder with ``tTTT.tif``; its truth
is ``PATH_GT/SEG``). The tag names the data family, e.g. ``A-fixed`` (the shipped models' training
distribution), ``A-random``, ``B-dim``, ``B-bright``; tags listed in ``--in-distribution`` (default
``A-fixed``) form the in-distribution part of the table, all others the out-of-distribution part.
Sequences with the same tag and dataset are pooled into one row.

``--generate`` makes the sequences itself under ``WORK/data/<family>/`` (sequence 01), one per dataset and
family, with the seeds of :data:`FAMILY_SEEDS` plus the dataset's index (MDA231 +0, TRIC +1, A549-SIM +2):
family A fixed profiles 201-203 (the seeds of ``benchmarks/shipped_seg.sh``), randomized family A 204-206,
family B 301 and up, family C (``efficientcellseg.synth_c``, a third image model that no setting was ever chosen
on) 601 and up. Training used seeds 101-106 and post-processing tuning 150-152; they are never used here.

Everything is deterministic (fixed seeds, exact fp32 networks), so the table does not depend on the machine
load. Example::

    .venv/bin/python benchmarks/accuracy.py --generate --datasets MDA231 TRIC A549-SIM \
        --families A-fixed B-dim B-bright --frames 3 --models shipped=models --work runs/accuracy \
        --md runs/accuracy/table.md
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from classical import segment_sequence  # noqa: E402
from efficientcellseg.datasets import DATASETS, get_dataset  # noqa: E402
from evaluation.aogm import GraphOps, det_score  # noqa: E402
from evaluation.ctc_seg import FileScore, read_model_params, score_sequence  # noqa: E402
from evaluation.ctc_tra import score_detection  # noqa: E402
from evaluation.seg import peseg, pooled_seg  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.accuracy")

CLASSICAL = "classical"
DATASET_ORDER = ("MDA231", "TRIC", "A549-SIM")
FAMILY_SEEDS = {"A-fixed": 201, "A-random": 204, "B-default": 301, "B-dim": 304, "B-bright": 307,
                "C-default": 601, "C-dim": 604, "C-bright": 607}
"""First seed of each generated family; the dataset's index in :data:`DATASET_ORDER` is added."""


@dataclass(frozen=True)
class SeqSpec:
    """One labelled sequence: family tag, dataset key, sequence folder (truth in ``<folder>_GT/SEG``)."""

    tag: str
    dataset: str
    path: Path

    @property
    def gt_dir(self) -> Path:
        """The SEG truth folder of the sequence."""
        return self.path.parent / f"{self.path.name}_GT" / "SEG"

    @property
    def tra_dir(self) -> Path:
        """The tracking-marker folder of the sequence (DET is scored where it exists)."""
        return self.path.parent / f"{self.path.name}_GT" / "TRA"


@dataclass(frozen=True)
class Row:
    """One line of the table: pooled scores of one method on one (tag, dataset)."""

    in_distribution: bool
    dataset: str
    tag: str
    method: str
    frames: int
    gt_files: int
    objects: int
    seg: float
    peseg: float | None
    det: float | None = None


def parse_seq(text: str) -> SeqSpec:
    """Parse ``TAG:DATASET:PATH``; raises ValueError naming the argument when it is malformed."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--seq {text!r}: expected TAG:DATASET:PATH, e.g. A-fixed:MDA231:data/Fluo-C3DL-MDA231/01")
    tag, dataset, path = parts
    try:
        key = get_dataset(dataset).key
    except KeyError as exc:
        raise ValueError(f"--seq {text!r}: {exc.args[0]}") from None
    spec = SeqSpec(tag, key, Path(path))
    if not spec.path.is_dir():
        raise ValueError(f"--seq {text!r}: sequence folder {spec.path} does not exist")
    if not spec.gt_dir.is_dir():
        raise ValueError(f"--seq {text!r}: truth folder {spec.gt_dir} does not exist")
    return spec


def parse_models(text: str) -> tuple[str, Path]:
    """Parse ``NAME=DIR``; raises ValueError when malformed, the folder is missing or NAME is reserved."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"--models {text!r}: expected NAME=DIR, e.g. shipped=models")
    if name == CLASSICAL:
        raise ValueError(f"--models {text!r}: the name {CLASSICAL!r} is reserved for the classical baseline")
    if not Path(folder).is_dir():
        raise ValueError(f"--models {text!r}: model folder {folder} does not exist")
    return name, Path(folder)


def parse_model_sets(texts: Sequence[str]) -> dict[str, Path | None]:
    """``--models`` arguments -> ``{name: folder}`` in the given order; ValueError for a malformed or repeated
    one (see :func:`parse_models`)."""
    methods: dict[str, Path | None] = {}
    for text in texts:
        name, folder = parse_models(text)
        if name in methods:
            raise ValueError(f"--models {text!r}: the name {name!r} is given twice")
        methods[name] = folder
    return methods


def model_folders(models_dir: Path, dataset: str) -> dict[str, Path]:
    """Return ``{task: folder}`` of the dataset's models inside ``models_dir`` (e.g. ``seg``, ``centers``;
    :func:`efficientcellseg.infer.model_folders`: a ``seg_centers`` folder is the whole set). Raises ValueError
    when one is missing."""
    from efficientcellseg.infer import model_folders as folders_of_run

    cfg = get_dataset(dataset)
    out = folders_of_run(cfg, models_dir)
    missing = [str(p) for p in out.values() if not (p / "config.json").is_file()]
    if missing:
        raise ValueError(f"{models_dir}: no model folder {', '.join(missing)} for dataset {cfg.key}")
    return out


def generate_sequences(data_root: Path, datasets: Sequence[str], families: Sequence[str], frames: int,
                       tric_small: bool) -> list[SeqSpec]:
    """Generate sequence 01 of every (family, dataset) under ``data_root/<family>`` (replacing old ones) and
    return their specs. Raises ValueError for an unknown family or one whose generator is not available."""
    specs = []
    for family in families:
        if family not in FAMILY_SEEDS:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_SEEDS)}")
        for ds in datasets:
            key = get_dataset(ds).key
            seed = FAMILY_SEEDS[family] + DATASET_ORDER.index(key)
            small = tric_small and key == "TRIC"
            root = data_root / family
            shutil.rmtree(root / get_dataset(key).ctc_name, ignore_errors=True)
            log.info("generating %s %s: seed %d, %d frames%s", family, key, seed, frames, ", small" if small else "")
            ds_dir = _generate(family, key, root, frames, seed, small)
            specs.append(SeqSpec(family, key, ds_dir / "01"))
    return specs


def _generate(family: str, dataset: str, root: Path, frames: int, seed: int, small: bool) -> Path:
    """Write one sequence of ``family``; returns the dataset folder."""
    if family.startswith("A-"):
        from efficientcellseg.synth import generate

        kwargs = {}
        if family == "A-random":
            if "randomize" not in inspect.signature(generate).parameters:
                raise ValueError("family A-random needs synth.generate(..., randomize=True), which this "
                                 "checkout does not have")
            kwargs["randomize"] = True
        return Path(generate(dataset, root, seq="01", frames=frames, seed=seed, small=small, **kwargs))
    letter, _, condition = family.partition("-")
    module = f"efficientcellseg.synth_{letter.lower()}"
    try:
        gen = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"family {family} needs {module}, which is not importable ({exc})") from None
    if condition not in gen.CONDITIONS:
        raise ValueError(f"family {family}: {module} has no condition {condition!r}; "
                         f"known: {', '.join(gen.CONDITIONS)}")
    generate = getattr(gen, f"generate_{letter.lower()}")
    return Path(generate(dataset, root, seq="01", frames=frames, seed=seed, small=small, condition=condition))


def result_dir(work: Path, method: str, spec: SeqSpec) -> Path:
    """The result folder of ``method`` on ``spec`` under ``work``: one per sequence folder.

    Sequences of one family are often all called ``01`` in different dataset folders, so the folder is keyed by
    a digest of the sequence's resolved path (before 2026-12-04 it was not, and ``--reuse-results`` scored the
    masks of one such sequence against the truth of the others)."""
    key = hashlib.sha256(str(spec.path.resolve()).encode()).hexdigest()[:10]
    return (work / "results" / method / spec.tag / f"{spec.path.name}-{key}" / get_dataset(spec.dataset).ctc_name
            / f"{spec.path.name}_RES")


def method_digest(models_dir: Path | None, dataset: str) -> str:
    """What a result folder was made with: sha256 of the dataset's model folders' ``SHA256SUMS`` (it lists the
    digests of config.json, thresholds.json and the weights, and loading refuses a folder that does not match
    it), or of ``benchmarks/classical.py`` for the classical baseline (``models_dir`` None). Changes to the
    package's own code are not part of it."""
    h = hashlib.sha256()
    if models_dir is None:
        h.update((ROOT / "benchmarks" / "classical.py").read_bytes())
        return h.hexdigest()
    for task, folder in sorted(model_folders(models_dir, dataset).items()):
        sums = folder / "SHA256SUMS"
        h.update(task.encode() + (sums.read_bytes() if sums.is_file() else b"<missing>"))
    return h.hexdigest()


def run_method(method: str, models_dir: Path | None, spec: SeqSpec, work: Path, backend: str,
               threads: int | None, reuse: bool = False) -> Path:
    """Segment ``spec`` with one method into a fresh result folder under ``work``; returns that folder.

    With ``reuse``, a result folder that already holds a mask for every frame is kept as it is when it was made
    with the same model folders (:func:`method_digest`, kept beside it as ``<folder>.method``; a method name
    whose folders changed is recomputed). The methods are deterministic, so this only saves time; masks are
    written atomically, so an interrupted run leaves no half-written mask and that folder is recomputed."""
    from efficientcellseg.ctc_io import list_frames

    cfg = get_dataset(spec.dataset)
    res = result_dir(work, method, spec)
    stamp = res.parent / f"{res.name}.method"
    digest = method_digest(models_dir, cfg.key)
    if (reuse and res.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest
            and all((res / fr.mask_name).is_file() for fr in list_frames(spec.path))):
        log.info("%s on %s %s: reusing %s", method, spec.tag, cfg.key, res)
        return res
    shutil.rmtree(res, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    start = time.perf_counter()
    if models_dir is None:
        segment_sequence(cfg.key, spec.path, res)
    else:
        from efficientcellseg.infer import predict_sequence

        folders = model_folders(models_dir, cfg.key)
        predict_sequence(cfg.key, spec.path, res, model_dir=folders["seg"],
                         centers_model_dir=folders.get("centers"), device="cpu", backend=backend,
                         threads=threads)
    stamp.write_text(digest + "\n")
    log.info("%s on %s %s: %.1f s", method, spec.tag, cfg.key, time.perf_counter() - start)
    return res


def build_rows(specs: Sequence[SeqSpec], methods: dict[str, Path | None], work: Path,
               in_distribution: Sequence[str], backend: str = "auto", threads: int | None = None,
               reuse: bool = False) -> list[Row]:
    """Run every method on every sequence, score with ``evaluation``, and pool per (tag, dataset, method)."""
    pooled: dict[tuple[str, str, str], list[FileScore]] = {}
    detection: dict[tuple[str, str, str], list[GraphOps | None]] = {}
    for spec in specs:
        for method, models_dir in methods.items():
            res = run_method(method, models_dir, spec, work, backend, threads, reuse)
            score = score_sequence(spec.gt_dir, res)
            pooled.setdefault((spec.dataset, spec.tag, method), []).extend(score.files)
            ops = score_detection(spec.tra_dir, res) if spec.tra_dir.is_dir() else None
            detection.setdefault((spec.dataset, spec.tag, method), []).append(ops)
    rows = []
    for (dataset, tag, method), files in pooled.items():
        seg = pooled_seg(f.matches for f in files)
        models_dir = methods[method]
        pe = None
        if models_dir is not None:
            pe = peseg(seg, sum(read_model_params(p) for p in model_folders(models_dir, dataset).values()))
        rows.append(Row(tag in in_distribution, dataset, tag, method, len({(f.gt.path.parent, f.gt.t) for f in files}),
                        len(files), sum(f.matches.n_objects for f in files), seg, pe,
                        pooled_det(detection[(dataset, tag, method)])))
    order = {m: i for i, m in enumerate(methods)}
    rows.sort(key=lambda r: (not r.in_distribution, _dataset_rank(r.dataset), r.tag, order[r.method]))
    return rows


def pooled_det(ops: Sequence[GraphOps | None]) -> float | None:
    """DET pooled over sequences (their vertex costs over 10 x their markers); None unless every one has
    markers."""
    if not ops or any(o is None for o in ops):
        return None
    total = GraphOps(*(sum(counts) for counts in zip(*(astuple(o) for o in ops), strict=True)))
    return det_score(total) if total.n_nodes else None


def _dataset_rank(key: str) -> int:
    return DATASET_ORDER.index(key) if key in DATASET_ORDER else len(DATASET_ORDER)


def format_table(rows: Sequence[Row], in_distribution: Sequence[str]) -> str:
    """Markdown: an in-distribution section and an out-of-distribution section, one row per method."""
    head = ("| dataset | family | method | frames | GT files | objects | SEG | PESEG | DET |\n"
            "|---|---|---|---|---|---|---|---|---|")
    out = []
    for flag, title in ((True, f"In distribution ({', '.join(in_distribution)})"),
                        (False, "Out of distribution")):
        part = [r for r in rows if r.in_distribution == flag]
        out.append(f"#### {title}\n")
        if not part:
            out.append("(no sequences)\n")
            continue
        lines = [head]
        for r in part:
            pe = "-" if r.peseg is None else f"{r.peseg:.4f}"
            det = "-" if r.det is None else f"{r.det:.3f}"
            lines.append(f"| {r.dataset} | {r.tag} | {r.method} | {r.frames} | {r.gt_files} | {r.objects} | "
                         f"{r.seg:.3f} | {pe} | {det} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = argparse.ArgumentParser(description="Accuracy table (SEG, PESEG, DET): model sets vs the classical baseline "
                                 "on labelled sequences, in and out of distribution.")
    ap.add_argument("--seq", action="append", default=[], metavar="TAG:DATASET:PATH",
                    help="a labelled sequence folder (truth in PATH_GT/SEG) with its family tag; repeatable")
    ap.add_argument("--models", action="append", default=[], metavar="NAME=DIR",
                    help="a model set: folder holding <dataset>-seg (and MDA231-centers); repeatable")
    ap.add_argument("--in-distribution", nargs="+", default=["A-fixed"], metavar="TAG",
                    help="tags of the models' training distribution (default: A-fixed)")
    ap.add_argument("--generate", action="store_true", help="generate sequences for --datasets x --families")
    ap.add_argument("--datasets", nargs="+", default=list(DATASET_ORDER), choices=sorted(DATASETS),
                    help="datasets to generate (with --generate)")
    ap.add_argument("--families", nargs="+", default=["A-fixed"], choices=list(FAMILY_SEEDS),
                    help="families to generate (with --generate; B-* and C-* need efficientcellseg.synth_b or synth_c)")
    ap.add_argument("--frames", type=int, default=3, help="frames per generated sequence")
    ap.add_argument("--tric-full", action="store_true", help="generate full-size TRIC frames (default: small)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "accuracy",
                    help="folder for generated data and result masks")
    ap.add_argument("--md", type=Path, default=None, help="also write the Markdown table to this file")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="network runtime (CPU)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the networks (default: all)")
    ap.add_argument("--reuse-results", action="store_true",
                    help="keep result folders under --work that hold a mask for every frame (deterministic methods)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; prints the table (and the command) and returns the exit code."""
    from efficientcellseg.ctc_io import write_text_atomic
    from efficientcellseg.errors import CTCInputError, ModelError
    from efficientcellseg.log import setup_logging
    from evaluation.ctc_seg import SegError

    a = build_parser().parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    try:
        if a.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {a.frames}")
        methods = parse_model_sets(a.models)
        methods[CLASSICAL] = None
        specs = [parse_seq(s) for s in a.seq]
        if a.generate:
            specs += generate_sequences(a.work / "data", a.datasets, a.families, a.frames, not a.tric_full)
        if not specs:
            raise ValueError("no sequences: give --seq TAG:DATASET:PATH or --generate")
        rows = build_rows(specs, methods, a.work, a.in_distribution, a.backend, a.threads, a.reuse_results)
    except (ValueError, CTCInputError, ModelError, SegError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"Command: `{command}`\n\nSEG pooled over all reference objects of each (dataset, family), DET over "
            "their tracking markers (- without TRA truth); synthetic data, not CTC.\n\n"
            + format_table(rows, a.in_distribution))
    print(text)
    if a.md is not None:
        write_text_atomic(a.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
