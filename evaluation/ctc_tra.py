"""TRA/DET over Cell Tracking Challenge folders, the validity check of a tracking result, and the command line.

Reference: ``SEQ_GT/TRA/man_trackTTT.tif`` markers and ``man_track.txt``; result: ``SEQ_RES/maskTTT.tif``
(uint16) and ``res_track.txt``. Frames are paired by the index parsed from the file names; every reference
frame needs its mask. One frame pair is in memory at a time. Before scoring, the result is checked like the
official tool does (:func:`evaluation.tra.check_tracks`); an invalid result is an error, not a score.

    python -m evaluation.tra --gt DATASET/01_GT --res DATASET/01_RES      # TRA x.xxxxxx / DET x.xxxxxx
    python -m evaluation.tra --res DATASET/01_RES --check                 # one line per broken rule
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .ctc_seg import SegError, list_masks
from .aogm import (FrameMatch, GraphOps, check_tracks, det_score, graph_ops, match_frame, tra_score,
                   vertex_ops)

log = logging.getLogger(__name__)

MARKER_RE = re.compile(r"^man_track(\d{3,4})\.tiff?$")


class TraError(ValueError):
    """A scoring error; the message is one line that names the offending file or folder."""


@dataclass(frozen=True)
class TraScore:
    """TRA and DET of one sequence with the operation counts behind them."""

    tra: float
    det: float
    ops: GraphOps


def read_track_file(path: Path) -> np.ndarray:
    """The rows ``L B E P`` of a ``man_track.txt``/``res_track.txt`` as an (n, 4) int64 array."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraError(f"{path}: cannot read the track file ({type(exc).__name__}: {exc})") from None
    rows = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 4:
                raise ValueError
            rows.append([int(x) for x in parts])
        except ValueError:
            raise TraError(f"{path}: line {no} {line.strip()!r} is not four integers 'L B E P'") from None
    return np.array(rows, np.int64).reshape(-1, 4)


def read_labels(path: Path, require_uint16: bool) -> np.ndarray:
    """A label image; unreadable files, non-integer dtypes (or non-uint16 results) raise TraError."""
    try:
        arr = np.asarray(tifffile.imread(path))
    except Exception as exc:  # any reader failure: name the file
        raise TraError(f"{path}: unreadable file ({type(exc).__name__}: {exc})") from None
    if arr.size == 0:
        raise TraError(f"{path}: unreadable file (no image data: empty or corrupt TIFF)")
    if require_uint16 and arr.dtype != np.uint16:
        raise TraError(f"{path}: result mask dtype is {arr.dtype}; the CTC requires uint16")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TraError(f"{path}: dtype {arr.dtype} is not an integer label type")
    return arr


def _labels(arr: np.ndarray) -> np.ndarray:
    u = np.unique(arr)
    return u[u != 0].astype(np.int64)


def tra_folder(gt_dir: Path) -> Path:
    """The folder with the markers: ``gt_dir/TRA`` when it exists, else ``gt_dir`` itself."""
    gt_dir = Path(gt_dir)
    return gt_dir / "TRA" if (gt_dir / "TRA").is_dir() else gt_dir


def list_markers(tra_dir: Path) -> dict[int, Path]:
    """``{t: path}`` of the ``man_trackTTT.tif`` files of ``tra_dir``."""
    if not tra_dir.is_dir():
        raise TraError(f"{tra_dir}: TRA folder does not exist (give SEQ_GT or SEQ_GT/TRA)")
    out = {int(m.group(1)): p for p in tra_dir.iterdir() if (m := MARKER_RE.match(p.name))}
    if not out:
        raise TraError(f"{tra_dir}: no man_trackTTT.tif markers")
    return out


def _masks(res_dir: Path) -> dict[int, Path]:
    if not Path(res_dir).is_dir():
        raise TraError(f"{res_dir}: result folder does not exist")
    try:
        return list_masks(Path(res_dir))
    except SegError as exc:
        raise TraError(str(exc)) from None


def check_result(res_dir: Path) -> list[str]:
    """Every broken rule of the tracking result in ``res_dir`` (masks + ``res_track.txt``), one line each."""
    problems = []
    masks = _masks(res_dir)
    if not masks:
        problems.append(f"{res_dir}: no maskTTT.tif files")
    try:
        tracks = read_track_file(Path(res_dir) / "res_track.txt")
    except TraError as exc:
        problems.append(str(exc))
        tracks = None
    frame_labels = []
    for t in sorted(masks):
        try:
            frame_labels.append((t, _labels(read_labels(masks[t], require_uint16=True))))
        except TraError as exc:
            problems.append(str(exc))
    if tracks is not None:
        problems.extend(check_tracks(tracks, frame_labels, name=str(Path(res_dir) / "res_track.txt")))
    return problems


def _frame_matches(markers: dict[int, Path], masks: dict[int, Path], res_dir: Path) -> list[FrameMatch]:
    """The matches of every marker frame with its mask (``masks`` of ``res_dir``), one frame pair in memory at a
    time."""
    matches: list[FrameMatch] = []
    for t in sorted(markers):
        if t not in masks:
            raise TraError(f"{Path(res_dir)}: no mask for frame {t} ({markers[t].name} exists)")
        gt = read_labels(markers[t], require_uint16=False)
        res = read_labels(masks[t], require_uint16=True)
        if gt.shape != res.shape:
            raise TraError(f"{masks[t]}: shape {res.shape} does not match {markers[t].name} shape {gt.shape}")
        matches.append(match_frame(t, gt, res))
        log.debug("frame %d: %d markers, %d objects", t, matches[-1].gt_labels.size, matches[-1].res_labels.size)
    return matches


def score_detection(gt_dir: Path, res_dir: Path) -> GraphOps:
    """The vertex operations (NS, FN, FP) of the masks in ``res_dir`` against the markers of ``gt_dir`` (SEQ_GT
    or its TRA folder), without a ``res_track.txt``: detection alone, as the CTC segmentation benchmark scores
    it (:func:`evaluation.aogm.det_score` of the result is its DET; no edges are counted).
    Raises TraError for a missing or unreadable file or a shape mismatch."""
    markers = list_markers(tra_folder(gt_dir))
    return vertex_ops(_frame_matches(markers, _masks(res_dir), res_dir))


def score_tracking(gt_dir: Path, res_dir: Path) -> TraScore:
    """TRA and DET of ``res_dir`` against ``gt_dir`` (SEQ_GT or its TRA folder). Raises TraError for a
    missing or unreadable file, a shape mismatch, or an invalid result (its first broken rule)."""
    tra_dir = tra_folder(gt_dir)
    markers = list_markers(tra_dir)
    gt_tracks = read_track_file(tra_dir / "man_track.txt")
    masks = _masks(res_dir)
    res_tracks = read_track_file(Path(res_dir) / "res_track.txt")
    matches = _frame_matches(markers, masks, res_dir)
    problems = check_tracks(res_tracks, [(m.t, m.res_labels) for m in matches],
                            name=str(Path(res_dir) / "res_track.txt"))
    if problems:
        raise TraError(f"invalid result ({len(problems)} problem(s), see --check): {problems[0]}")
    ops = graph_ops(gt_tracks, res_tracks, matches)
    return TraScore(tra_score(ops), det_score(ops), ops)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m evaluation.tra``."""
    p = argparse.ArgumentParser(prog="python -m evaluation.tra",
                                description="Cell Tracking Challenge TRA and DET (AOGM, official weights).")
    p.add_argument("--gt", type=Path, metavar="DIR", help="reference: SEQ_GT (with TRA/) or SEQ_GT/TRA")
    p.add_argument("--res", type=Path, metavar="DIR", required=True,
                   help="result folder with maskTTT.tif and res_track.txt, e.g. DATASET/01_RES")
    p.add_argument("--check", action="store_true",
                   help="only check the result's validity: one error line per broken rule, exit 2 if any")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log per-frame progress")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 on an error or an invalid result (lines on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.check and args.gt is None:
        parser.error("give --gt SEQ_GT to score, or --check to only check the result")
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.check:
            problems = check_result(args.res)
            for line in problems:
                print("error: " + " ".join(line.split()), file=sys.stderr)
            if problems:
                return 2
            print(f"valid {args.res}")
            return 0
        score = score_tracking(args.gt, args.res)
    except TraError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    o = score.ops
    log.info("nodes %d edges %d | NS %d FN %d FP %d ED %d EA %d EC %d | AOGM %.1f", o.n_nodes, o.n_edges,
             o.ns, o.fn, o.fp, o.ed, o.ea, o.ec, o.aogm)
    print(f"TRA {score.tra:.6f}")
    print(f"DET {score.det:.6f}")
    return 0
