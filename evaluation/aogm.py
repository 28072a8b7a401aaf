"""The Cell Tracking Challenge TRA and DET measures (AOGM) as pure functions, and the command line.

Semantics (Matula et al. 2015, the official CTC evaluation tool):

- **Nodes** are the objects of every frame: reference markers (``TRA/man_trackTTT.tif``) and result objects
  (``maskTTT.tif``). A result object S *matches* a marker R when it covers more than half of it,
  ``|R ∩ S| > 0.5 |R|`` (strict), so a marker has at most one match.
- **Vertex operations**: a marker without a match is a false negative (FN); a result object without any
  marker is a false positive (FP); a result object matching k > 1 markers must be split (NS += k - 1).
- **Edges** of both graphs: a *track link* joins a label in frame t to the same label in frame t+1; a
  *parent link* joins a parent track's last node to its child's first node (``L B E P`` rows). Result edges
  are compared only between result objects that match exactly one marker (an induced subgraph, as the
  official tool does): one that is not a reference edge is redundant (ED), a reference edge that no result
  edge maps to is missing (EA), a mapped edge with the other kind (track vs parent link) has the wrong
  semantics (EC).
- ``AOGM = 5 NS + 10 FN + 1 FP + 1 ED + 1.5 EA + 1 EC``; ``AOGM_0 = 10 * reference nodes + 1.5 * reference
  edges`` (building the reference graph from nothing); ``TRA = 1 - min(AOGM, AOGM_0) / AOGM_0``.
  ``DET`` is the same with vertex operations only (``5 NS + 10 FN + 1 FP`` against ``10 * nodes``).

Folder walking and the validity check live in :mod:`evaluation.ctc_tra`, the command line in
:mod:`evaluation.tra` (``python -m evaluation.tra``)::

    python -m evaluation.tra --gt DATASET/01_GT --res DATASET/01_RES [--check]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .matching import match_objects

W_NS, W_FN, W_FP, W_ED, W_EA, W_EC = 5.0, 10.0, 1.0, 1.0, 1.5, 1.0
"""The official AOGM weights (split, false negative, false positive, redundant, missing, wrong edge)."""

TRACK_LINK, PARENT_LINK = 0, 1


@dataclass(frozen=True)
class FrameMatch:
    """The nodes of one frame and their matches: sorted reference and result labels, and for every
    reference label its matched result label (0: none)."""

    t: int
    gt_labels: np.ndarray
    res_labels: np.ndarray
    gt_to_res: np.ndarray


@dataclass(frozen=True)
class GraphOps:
    """Counts of the graph operations that turn the result graph into the reference graph."""

    ns: int
    fn: int
    fp: int
    ed: int
    ea: int
    ec: int
    n_nodes: int
    n_edges: int

    @property
    def aogm(self) -> float:
        """Weighted cost of all operations."""
        return (W_NS * self.ns + W_FN * self.fn + W_FP * self.fp + W_ED * self.ed + W_EA * self.ea
                + W_EC * self.ec)

    @property
    def aogm_d(self) -> float:
        """Weighted cost of the vertex operations only (DET)."""
        return W_NS * self.ns + W_FN * self.fn + W_FP * self.fp


def _labels(arr: np.ndarray) -> np.ndarray:
    u = np.unique(arr)
    return u[u != 0].astype(np.int64)


def match_frame(t: int, gt: np.ndarray, res: np.ndarray) -> FrameMatch:
    """Match the markers of ``gt`` with the objects of ``res`` (same shape) by the > 50 % coverage rule."""
    m = match_objects(gt, res)
    return FrameMatch(t, m.gt_labels.astype(np.int64), _labels(res), m.res_labels.astype(np.int64))


def graph_edges(tracks: np.ndarray, frame_labels: Sequence[np.ndarray],
                frames: Sequence[int]) -> dict[tuple[int, int, int, int], int]:
    """Edges ``(t1, label1, t2, label2) -> TRACK_LINK | PARENT_LINK`` of a graph.

    Track links join a label present in two consecutive frames (``frame_labels[i]`` are the labels of frame
    ``frames[i]``); parent links join each parent's end node to its child's begin node (rows ``L B E P`` of
    ``tracks``), where both nodes exist.
    """
    edges: dict[tuple[int, int, int, int], int] = {}
    present = {t: set(labs.tolist()) for t, labs in zip(frames, frame_labels, strict=True)}
    for i in range(len(frames) - 1):
        t1, t2 = frames[i], frames[i + 1]
        if t2 != t1 + 1:
            continue
        for lab in np.intersect1d(frame_labels[i], frame_labels[i + 1]).tolist():
            edges[(t1, lab, t2, lab)] = TRACK_LINK
    ends = {int(r[0]): int(r[2]) for r in np.asarray(tracks).reshape(-1, 4)}
    for lab, begin, _, parent in np.asarray(tracks).reshape(-1, 4).tolist():
        if parent == 0 or parent not in ends:
            continue
        pe = ends[parent]
        if parent in present.get(pe, ()) and lab in present.get(begin, ()):
            edges[(pe, parent, begin, lab)] = PARENT_LINK
    return edges


def _vertices(matches: Sequence[FrameMatch]) -> tuple[int, int, int, int, dict[tuple[int, int], int]]:
    """``(ns, fn, fp, n_nodes, res_to_gt)`` of the per-frame matches; ``res_to_gt`` maps each uniquely matched
    result node ``(t, label)`` to its marker's label."""
    ns = fn = fp = n_nodes = 0
    res_to_gt: dict[tuple[int, int], int] = {}
    for m in matches:
        n_nodes += m.gt_labels.size
        hit = m.gt_to_res > 0
        fn += int((~hit).sum())
        used, counts = np.unique(m.gt_to_res[hit], return_counts=True)
        ns += int((counts - 1).sum())
        fp += int(np.setdiff1d(m.res_labels, used).size)
        for r, g in zip(m.gt_to_res[hit].tolist(), m.gt_labels[hit].tolist(), strict=True):
            if counts[np.searchsorted(used, r)] == 1:
                res_to_gt[(m.t, r)] = g
    return ns, fn, fp, n_nodes, res_to_gt


def vertex_ops(matches: Sequence[FrameMatch]) -> GraphOps:
    """The vertex operations (NS, FN, FP) of the per-frame matches, with no edges: detection alone (DET)."""
    ns, fn, fp, n_nodes, _ = _vertices(matches)
    return GraphOps(ns, fn, fp, 0, 0, 0, n_nodes, 0)


def graph_ops(gt_tracks: np.ndarray, res_tracks: np.ndarray, matches: Sequence[FrameMatch]) -> GraphOps:
    """Count the AOGM operations from the per-frame matches and both track tables ((n, 4) ``L B E P``)."""
    frames = [m.t for m in matches]
    ns, fn, fp, n_nodes, res_to_gt = _vertices(matches)
    gt_edges = graph_edges(gt_tracks, [m.gt_labels for m in matches], frames)
    res_edges = graph_edges(res_tracks, [m.res_labels for m in matches], frames)
    ed = ec = 0
    mapped = set()
    for (t1, l1, t2, l2), kind in res_edges.items():
        g1, g2 = res_to_gt.get((t1, l1)), res_to_gt.get((t2, l2))
        if g1 is None or g2 is None:
            continue  # not between uniquely matched nodes: left to the vertex operations
        key = (t1, g1, t2, g2)
        if key not in gt_edges:
            ed += 1
            continue
        mapped.add(key)
        ec += int(gt_edges[key] != kind)
    ea = len(gt_edges) - len(mapped)
    return GraphOps(ns, fn, fp, ed, ea, ec, n_nodes, len(gt_edges))


def tra_score(ops: GraphOps) -> float:
    """TRA = 1 - min(AOGM, AOGM_0) / AOGM_0 with AOGM_0 = 10 * nodes + 1.5 * edges of the reference."""
    aogm0 = W_FN * ops.n_nodes + W_EA * ops.n_edges
    if aogm0 == 0:
        raise ValueError("the reference graph is empty (no markers); TRA is undefined")
    return 1.0 - min(ops.aogm, aogm0) / aogm0


def det_score(ops: GraphOps) -> float:
    """DET = 1 - min(AOGM_D, AOGM_D0) / AOGM_D0 with AOGM_D0 = 10 * reference nodes."""
    aogm0 = W_FN * ops.n_nodes
    if aogm0 == 0:
        raise ValueError("the reference graph is empty (no markers); DET is undefined")
    return 1.0 - min(ops.aogm_d, aogm0) / aogm0


def check_tracks(tracks: np.ndarray, frame_labels: Iterable[tuple[int, np.ndarray]],
                 name: str = "res_track.txt") -> list[str]:
    """Broken rules of a tracking result, one message per problem (empty list: valid).

    ``frame_labels`` gives ``(t, labels present in maskTTT)`` for every frame. Rules: labels are > 0 and
    unique in the file, B <= E, every mask label has a track whose [B, E] holds that frame, a track's label is
    present in every frame from B to E (no gap), a parent exists and ends before its child begins.
    """
    problems = []
    rows = np.asarray(tracks, np.int64).reshape(-1, 4)
    info: dict[int, tuple[int, int, int]] = {}
    for lab, b, e, p in rows.tolist():
        if lab <= 0:
            problems.append(f"{name}: track label {lab} (line '{lab} {b} {e} {p}'); labels must be 1..65535")
            continue
        if lab in info:
            problems.append(f"{name}: label {lab} is listed twice; each track needs its own label")
        if e < b:
            problems.append(f"{name}: track {lab} ends (frame {e}) before it begins (frame {b})")
        if p < 0:
            problems.append(f"{name}: track {lab} has parent {p}; use 0 for no parent")
        info[lab] = (b, e, p)
    seen: dict[int, set[int]] = {}
    for t, labs in frame_labels:
        for lab in labs.tolist():
            seen.setdefault(lab, set()).add(t)
            if lab not in info:
                problems.append(f"mask{t:03d}: label {lab} is in the mask but not in {name}; add a track line for it")
            elif not info[lab][0] <= t <= info[lab][1]:
                problems.append(f"mask{t:03d}: label {lab} is outside its track's frames "
                                f"{info[lab][0]}-{info[lab][1]} in {name}")
    for lab, (b, e, p) in info.items():
        frames = seen.get(lab, set())
        missing = [t for t in range(b, e + 1) if t not in frames]
        if missing:
            problems.append(f"{name}: track {lab} ({b}-{e}) is absent from frame(s) {missing[:5]}; a track may "
                            "not have gaps (start a new track with this one as parent)")
        if p > 0:
            if p not in info:
                problems.append(f"{name}: track {lab} has parent {p}, which is not a track")
            elif info[p][1] >= b:
                problems.append(f"{name}: parent {p} of track {lab} ends at frame {info[p][1]}, not before its "
                                f"child begins (frame {b})")
    return problems
