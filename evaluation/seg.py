"""Command line of the SEG / PESEG scorer; the measure itself lives in :mod:`evaluation.matching`.

The array functions are re-exported here (``from evaluation.seg import match_objects`` keeps working).
Folder walking lives in :mod:`evaluation.ctc_seg`; both are imported by this module, never the other way.

Command line::

    python -m evaluation.seg --gt DATASET/01_GT/SEG --res DATASET/01_RES [--params N | --model DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import ctc_seg
from .ctc_seg import CSV_HEADER, SegError, SequenceScore, score_sequence, write_csv_rows
from .matching import ObjectMatches, match_objects, peseg, pooled_seg, seg_score

__all__ = ["ObjectMatches", "build_parser", "main", "match_objects", "peseg", "pooled_seg", "seg_score"]

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    """argparse type: a positive integer such as 6628809."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (write 6700000, not 6.7M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m evaluation.seg``."""
    p = argparse.ArgumentParser(
        prog="python -m evaluation.seg",
        description="Cell Tracking Challenge SEG (official semantics) and PESEG = SEG / N * 1e6.",
    )
    p.add_argument("--gt", action="append", default=[], type=Path, metavar="DIR",
                   help="GT folder with man_segTTT.tif / man_seg_TTT_ZZZ.tif, e.g. DATASET/01_GT/SEG; "
                        "repeat together with --res for several sequences (paired in order)")
    p.add_argument("--res", action="append", default=[], type=Path, metavar="DIR",
                   help="result folder with maskTTT.tif, e.g. DATASET/01_RES (one per --gt)")
    p.add_argument("--dataset-dir", action="append", default=[], type=Path, metavar="DIR",
                   help="dataset folder: score every NN_GT/SEG against NN_RES (repeatable)")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--params", type=_positive_int, metavar="N",
                   help="number of trainable parameters of all models used, to print PESEG")
    n.add_argument("--model", action="append", default=[], type=Path, metavar="DIR",
                   help="model folder whose config.json has integer 'n_params'; repeatable (summed)")
    p.add_argument("--csv", type=Path, metavar="FILE",
                   help="write one row per reference object: file,t,z,gt_label,res_label,gt_size,"
                        "intersection,jaccard")
    p.add_argument("--lenient", action="store_true",
                   help="score a missing, unreadable, non-uint16 or wrongly shaped result file as empty "
                        "(J=0 for its objects) with a warning instead of failing")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log per-file progress")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    return p


def _format_table(rows: Sequence[tuple[str, str, str, str, str]]) -> str:
    """Return ``rows`` (header first) as left/right aligned text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1])]
                               + [r[i].rjust(widths[i]) for i in range(2, 5)]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return 0 on success, 2 on a scoring error (one line on stderr naming the file).

    Prints ``SEG x.xxxxxx`` (and ``PESEG x.xxxxxx`` when the parameter count is known) on stdout. With several
    sequences a table comes first; SEG is then the mean over dataset folders of each folder's mean over its
    sequences (the challenge's dataset score when there is one folder).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.gt) != len(args.res):
        parser.error(f"--gt given {len(args.gt)} times but --res {len(args.res)} times; give them in pairs")
    if not args.gt and not args.dataset_dir:
        parser.error("give --gt DIR --res DIR (repeatable) or --dataset-dir DIR")
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    package_log = logging.getLogger(__package__ or "evaluation")
    previous_level = package_log.level
    package_log.setLevel(level)  # restored below: main() may run in-process (tests, notebooks)
    try:
        n_params = args.params
        if args.model:
            n_params = sum(ctc_seg.read_model_params(m) for m in args.model)
        pairs = list(zip(args.gt, args.res, strict=True))
        for d in args.dataset_dir:
            pairs.extend(ctc_seg.find_sequences(d))
        scores = _score_all(pairs, args.lenient, args.csv)
    except ctc_seg.SegError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    finally:
        package_log.setLevel(previous_level)

    if len(scores) > 1:
        print(_summary(scores))
        seg_value = _mean_of_datasets(scores)
    else:
        seg_value = scores[0].seg
    print(f"SEG {seg_value:.6f}")
    if n_params is not None:
        print(f"PESEG {peseg(seg_value, n_params):.6f}")
    return 0


def _score_all(pairs: list[tuple[Path, Path]], lenient: bool, csv_path: Path | None) -> list[SequenceScore]:
    """Score every (gt_dir, res_dir) pair, streaming per-object rows to ``csv_path`` when given; return the
    sequence scores in order. Raises SegError on the first scoring error."""
    if csv_path is None:
        return [score_sequence(gt_dir, res_dir, lenient=lenient) for gt_dir, res_dir in pairs]
    try:
        fh = open(csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise SegError(f"{csv_path}: cannot write the CSV file ({exc.strerror or exc})") from None
    scores = []
    with fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for gt_dir, res_dir in pairs:
            scores.append(score_sequence(gt_dir, res_dir, lenient=lenient,
                                         on_file=lambda fs: write_csv_rows(writer, fs)))
    return scores


def _dataset_means(scores: list[SequenceScore]) -> dict[str, list[SequenceScore]]:
    """Return the sequence scores grouped by dataset folder, in first-seen order."""
    groups: dict[str, list] = {}
    for s in scores:
        groups.setdefault(s.dataset, []).append(s)
    return groups


def _mean_of_datasets(scores: list[SequenceScore]) -> float:
    """Return the mean over dataset folders of the mean SEG over each folder's sequences."""
    groups = _dataset_means(scores)
    return sum(sum(s.seg for s in g) / len(g) for g in groups.values()) / len(groups)


def _summary(scores: list[SequenceScore]) -> str:
    """Return the summary table: one row per sequence, one mean row per dataset folder, the overall mean."""
    rows = [("dataset", "seq", "files", "objects", "SEG")]
    groups = _dataset_means(scores)
    for name, group in groups.items():
        for s in group:
            rows.append((name, s.sequence, str(s.n_files), str(s.n_objects), f"{s.seg:.6f}"))
        rows.append((name, "mean", str(sum(s.n_files for s in group)), str(sum(s.n_objects for s in group)),
                     f"{sum(s.seg for s in group) / len(group):.6f}"))
    rows.append((f"mean of {len(groups)} dataset(s)", "", str(sum(s.n_files for s in scores)),
                 str(sum(s.n_objects for s in scores)), f"{_mean_of_datasets(scores):.6f}"))
    return _format_table(rows)


if __name__ == "__main__":
    from .seg import main as _main  # the package's own module, not this __main__ copy

    sys.exit(_main())
