"""Linking: relabel the masks of a result folder so each cell keeps its label over time, write ``res_track.txt``.

What it does (``efficientcellseg track --res DIR`` or ``predict --track``):

1. **Read** every ``maskTTT.tif`` once and keep only small tables: per object its label, volume and centroid
   in micrometres (voxel size from the dataset's :class:`~efficientcellseg.datasets.DatasetConfig`), and the
   voxel overlaps between consecutive frames. Only two masks are in memory at a time.
2. **Frame-to-frame links** by a sparse linear assignment (``scipy.sparse.csgraph.
   min_weight_full_bipartite_matching``) on the cost ``(1 - IoU) + (d / gate)^2``; a pair is allowed when
   the objects overlap or their centroids are at most ``gate = 3 x track_displacement_um`` apart. Each
   object may stay unlinked at cost 1 (so a link costs less than a death plus a birth). Only allowed pairs
   are stored, so thousands of TRIC nuclei (or of noise fragments) never make a dense matrix.
3. **Divisions**: a mother at t-1 whose track ends (or continues into one of the two) and two cells at t
   within ``division_distance_um`` of it whose volumes fit (together 0.5-1.6x the mother, each at most
   0.85x the mother, the smaller at least 0.35x the larger) -> both daughters start new tracks with the
   mother as parent. Best-scoring candidates are taken first; every object is used once. A mother that
   goes on unchanged beside two new cells does not divide.
4. **Gaps** of up to ``track_max_gap`` frames: track ends that did not divide and track starts without a
   parent, at most ``gate x (frames apart)`` apart, are paired by a second assignment; with the CTC
   convention the later track gets the earlier one as its parent (labels stay distinct).
5. **Write**: tracks numbered 1..K in order of appearance (more than 65535 is an error before anything is
   written); every relabelled mask is written to a temporary file first, and only when all of them and
   ``res_track.txt`` are complete are they renamed over the originals. Any error before that leaves the
   folder as it was.

Why scipy's assignment and not a tracking library: scipy is already a dependency, the assignment is
exact and costs milliseconds per frame pair. laptrack (the same LAP formulation with gap closing and
splitting) would add a dependency and its own cost conventions for what our gates already express;
btrack-style Bayesian trackers need per-dataset motion models we cannot fit without real data. Measured on synthetic
data (``benchmarks/tracking.py``, RESULTS.md "Tracking"): linking the true masks with shuffled labels gives
TRA 1.000 on MDA231 and TRIC (``tests/test_track.py`` requires >= 0.99), and linking a folder costs
0.1-0.3 network passes per frame, 0.2 % (MDA231) and 1.3 % (TRIC) of the segmentation time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from efficientcellseg.ctc_io import MASK_RE, MAX_LABEL, list_frames, read_tiff, write_mask, write_text_atomic
from efficientcellseg.datasets import DatasetConfig, get_dataset
from efficientcellseg.errors import CTCInputError

log = logging.getLogger(__name__)

GATE_FACTOR = 3.0
"""A link without overlap is allowed up to this many typical displacements."""
NO_LINK_COST = 1.0
"""Cost of leaving one object unlinked (a track end or start)."""
_LUT_MAX = 1 << 24
"""Labels below this are compressed with a look-up table; above it with np.unique."""


@dataclass(frozen=True)
class TrackParams:
    """Linking gates in micrometres (from a dataset configuration or given directly in tests)."""

    voxel_size_zyx: tuple[float, float, float]
    displacement_um: float
    division_distance_um: float
    max_gap: int = 2

    @property
    def gate_um(self) -> float:
        """Largest centroid distance of a frame-to-frame link between objects that do not overlap."""
        return GATE_FACTOR * self.displacement_um

    @classmethod
    def from_dataset(cls, cfg: DatasetConfig, max_gap: int | None = None) -> TrackParams:
        """The gates of dataset ``cfg`` (``max_gap`` overrides its ``track_max_gap``)."""
        return cls(tuple(cfg.voxel_size_zyx), cfg.track_displacement_um, cfg.division_distance_um,
                   cfg.track_max_gap if max_gap is None else int(max_gap))


@dataclass(frozen=True)
class FrameObjects:
    """The objects of one mask: sorted labels, volumes (voxels) and centroids (µm, (n, 3) z, y, x)."""

    labels: np.ndarray
    volumes: np.ndarray
    centroids: np.ndarray

    @property
    def n(self) -> int:
        """Number of objects."""
        return int(self.labels.size)


@dataclass(frozen=True)
class Overlap:
    """Voxel overlaps between the objects of two frames: index pairs into their ``FrameObjects`` and counts."""

    prev: np.ndarray
    cur: np.ndarray
    count: np.ndarray


@dataclass(frozen=True)
class Tracks:
    """The result of linking: per frame, the track id of each object (aligned with ``FrameObjects.labels``),
    and the ``res_track.txt`` rows ``(label, begin, end, parent)`` as an (n, 4) int array."""

    ids: list[np.ndarray]
    table: np.ndarray

    def relabel(self, t: int, objects: FrameObjects, mask: np.ndarray) -> np.ndarray:
        """Frame ``t``'s ``mask`` (whose objects are ``objects``) with track ids as labels, uint16."""
        top = int(objects.labels.max(initial=0))
        if top < _LUT_MAX:
            lut = np.zeros(top + 1, np.uint16)
            lut[objects.labels] = self.ids[t]
            return lut[mask]
        pos = np.searchsorted(objects.labels, mask)
        ids = np.concatenate([self.ids[t], [0]]).astype(np.uint16)
        return np.where(mask > 0, ids[np.minimum(pos, objects.n)], 0).astype(np.uint16)

    def text(self) -> str:
        """``res_track.txt`` content: one ``L B E P`` line per track."""
        return "".join(f"{l} {b} {e} {p}\n" for l, b, e, p in self.table.tolist())  # noqa: E741


# ----------------------------------------------------------------------------------------------- per frame
@dataclass(frozen=True)
class Foreground:
    """The foreground of one mask: flat voxel positions (sorted) and the object index (0..n-1) of each."""

    size: int
    idx: np.ndarray
    obj: np.ndarray


def frame_objects(mask: np.ndarray, voxel_size_zyx: tuple[float, float, float]) -> tuple[FrameObjects, Foreground]:
    """Objects of ``mask`` and its foreground (input of :func:`overlaps`); one pass over the volume, then
    work on foreground voxels only."""
    flat = mask.ravel()
    idx = np.flatnonzero(flat)
    vals = flat[idx]
    top = int(vals.max(initial=0))
    if top < _LUT_MAX:
        v = vals if np.can_cast(vals.dtype, np.intp) else vals.astype(np.intp)
        vol_all = np.bincount(v, minlength=top + 1)
        labels = np.flatnonzero(vol_all)
        lut = np.zeros(top + 1, np.int32)
        lut[labels] = np.arange(labels.size, dtype=np.int32)
        obj, vol = lut[v], vol_all[labels]
    else:
        labels, obj, vol = np.unique(vals, return_inverse=True, return_counts=True)
        obj = obj.astype(np.int32)
    n = labels.size
    cen = np.zeros((n, 3))
    rest = idx
    for axis in range(mask.ndim - 1, -1, -1):  # x, then y, then z from the flat index
        rest, coord = np.divmod(rest, mask.shape[axis])
        cen[:, axis] = np.bincount(obj, weights=coord, minlength=n) / np.maximum(vol, 1) * voxel_size_zyx[axis]
    return (FrameObjects(labels.astype(np.int64), vol.astype(np.int64), cen),
            Foreground(flat.size, idx, obj))


def overlaps(prev: Foreground, cur: Foreground, n_prev: int, n_cur: int) -> Overlap:
    """Voxel overlaps of the objects of two frames of the same shape (from :func:`frame_objects`)."""
    dense = np.zeros(prev.size, np.int32)
    dense[prev.idx] = prev.obj + 1
    under = dense[cur.idx]
    keep = under > 0
    a, b = under[keep].astype(np.int64) - 1, cur.obj[keep].astype(np.int64)
    if n_prev * n_cur <= _LUT_MAX:
        counts = np.bincount(a * n_cur + b, minlength=n_prev * n_cur)
        code = np.flatnonzero(counts)
        counts = counts[code]
    else:
        code, counts = np.unique(a * n_cur + b, return_counts=True)
    return Overlap(code // max(n_cur, 1), code % max(n_cur, 1), counts)


# ----------------------------------------------------------------------------------------------- linking
def _assign(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray, cost: np.ndarray) -> list[tuple[int, int]]:
    """Optimal links between ``n_rows`` and ``n_cols`` items given sparse allowed pairs (each pair once: the
    sparse matrix would add the costs of a repeated pair) and their costs; every item may stay unlinked at
    :data:`NO_LINK_COST`.

    The usual augmented assignment (real items against "unlinked" stand-ins, Jaqaman et al. 2008), kept sparse:
    the stand-in block only holds the transposed allowed pairs, which admits every set of links the dense zero
    block does, so the optimum is the same. Solved in one call of scipy's sparse ``LAPJVsp``
    (``min_weight_full_bipartite_matching``). The dense ``linear_sum_assignment`` it replaces, one per connected
    component, held a (rows + cols)^2 matrix per component: on a noisy TRIC frame with ~8,700 objects one
    component had thousands of items and a frame pair did not finish in 2 minutes."""
    if rows.size == 0:
        return []
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    a, b = ur.size, uc.size
    ar, br = np.arange(a), np.arange(b)
    # rows: real 0..a-1, then "born" stand-ins a..a+b-1; columns: real 0..b-1, then "ended" stand-ins b..b+a-1
    i = np.concatenate([ri, ar, a + br, a + ci])
    j = np.concatenate([ci, b + ar, br, b + ri])
    w = np.concatenate([cost, np.full(a + b, NO_LINK_COST), np.zeros(ri.size)])
    # every full matching has a + b edges, so a constant offset keeps the optimum and no weight is 0 (absent)
    m = csr_matrix((w + 1.0, (i, j)), shape=(a + b, a + b))
    r, c = min_weight_full_bipartite_matching(m)
    keep = (r < a) & (c < b)
    return list(zip(ur[r[keep]].tolist(), uc[c[keep]].tolist(), strict=True))


def link_frames(prev: FrameObjects, cur: FrameObjects, ov: Overlap, params: TrackParams) -> np.ndarray:
    """For each object of ``cur``, the index of the object of ``prev`` it continues (-1: none)."""
    succ = np.full(cur.n, -1, np.int64)
    if prev.n == 0 or cur.n == 0:
        return succ
    gate = params.gate_um
    near = cKDTree(prev.centroids).sparse_distance_matrix(cKDTree(cur.centroids), gate, output_type="coo_matrix")
    rows = np.concatenate([ov.prev, near.row]).astype(np.int64)
    cols = np.concatenate([ov.cur, near.col]).astype(np.int64)
    pair, first = np.unique(rows * cur.n + cols, return_index=True)
    rows, cols = rows[first], cols[first]
    inter = np.zeros(pair.size)
    pos = np.searchsorted(pair, ov.prev * cur.n + ov.cur)
    inter[pos] = ov.count
    iou = inter / (prev.volumes[rows] + cur.volumes[cols] - inter)
    d = np.linalg.norm(prev.centroids[rows] - cur.centroids[cols], axis=1)
    cost = (1.0 - iou) + (d / gate) ** 2
    for i, j in _assign(prev.n, cur.n, rows, cols, cost):
        succ[j] = i
    return succ


def detect_divisions(prev: FrameObjects, cur: FrameObjects, pred: np.ndarray,
                     params: TrackParams) -> list[tuple[int, int, int]]:
    """Divisions between two frames as ``(mother index in prev, daughter, daughter)`` (indices into ``cur``).

    ``pred`` are the frame-to-frame links (:func:`link_frames`). A daughter is a new object (no predecessor)
    or the mother's own continuation; the other daughter must be new. Both lie within
    ``division_distance_um`` of the mother's centroid, their volumes sum to 0.5-1.6x the mother's, each is
    at most 0.85x the mother and the smaller at least 0.35x the larger. Candidates are taken best first
    (volume misfit + mean distance).
    """
    new = np.flatnonzero(pred < 0)
    if prev.n == 0 or new.size == 0:
        return []
    cont = np.full(prev.n, -1, np.int64)
    linked = np.flatnonzero(pred >= 0)
    cont[pred[linked]] = linked
    dmax = params.division_distance_um
    tree = cKDTree(cur.centroids[new])
    cands = []
    for i, near in enumerate(tree.query_ball_point(prev.centroids, dmax)):
        news = sorted(int(new[k]) for k in near)
        if cont[i] < 0:  # the mother ended: any two new cells
            pairs = list(combinations(news, 2))
        elif np.linalg.norm(cur.centroids[cont[i]] - prev.centroids[i]) <= dmax:  # it continues into one
            pairs = [(int(cont[i]), j) for j in news]
        else:
            continue
        for j, k in pairs:
            vj, vk, vm = cur.volumes[j], cur.volumes[k], prev.volumes[i]
            ratio = (vj + vk) / vm
            if not (0.5 <= ratio <= 1.6 and max(vj, vk) <= 0.85 * vm and min(vj, vk) >= 0.35 * max(vj, vk)):
                continue
            dist = (np.linalg.norm(cur.centroids[j] - prev.centroids[i])
                    + np.linalg.norm(cur.centroids[k] - prev.centroids[i])) / (2 * dmax)
            cands.append((abs(ratio - 1.0) + dist, i, j, k))
    cands.sort()
    used_m, used_d, out = set(), set(), []
    for _, i, j, k in cands:
        if i in used_m or j in used_d or k in used_d:
            continue
        used_m.add(i)
        used_d.update((j, k))
        out.append((i, j, k))
    return out


def link(objects: list[FrameObjects], ovs: list[Overlap], params: TrackParams) -> Tracks:
    """Link the objects of consecutive frames (``ovs[t]`` = overlaps of frames t and t+1) into tracks."""
    n_frames = len(objects)
    # segment id per object: an object continues its predecessor's segment unless it is a daughter
    seg: list[np.ndarray] = []
    seg_begin: list[int] = []
    seg_end: list[int] = []
    seg_parent: list[int] = []  # segment index of the parent, -1 none
    seg_first: list[int] = []  # object index in its first frame (for gap distances)
    seg_last: list[int] = []
    divided: set[int] = set()
    for t in range(n_frames):
        cur = objects[t]
        ids = np.full(cur.n, -1, np.int64)
        mother_of = {}
        if t > 0:
            prev = objects[t - 1]
            pred = link_frames(prev, cur, ovs[t - 1], params)
            for i, j, k in detect_divisions(prev, cur, pred, params):
                pred[[j, k]] = -1
                mother_of[j] = mother_of[k] = int(seg[t - 1][i])
                divided.add(int(seg[t - 1][i]))
            cont = np.flatnonzero(pred >= 0)
            ids[cont] = seg[t - 1][pred[cont]]
        for j in np.flatnonzero(ids < 0):
            ids[j] = len(seg_begin)
            seg_begin.append(t)
            seg_end.append(t)
            seg_parent.append(mother_of.get(int(j), -1))
            seg_first.append(int(j))
            seg_last.append(int(j))
        for j, s in enumerate(ids.tolist()):
            seg_end[s] = t
            seg_last[s] = j
        seg.append(ids)
    _close_gaps(objects, params, seg_begin, seg_end, seg_parent, seg_first, seg_last, divided)
    n_tracks = len(seg_begin)
    if n_tracks > MAX_LABEL:
        raise CTCInputError(f"linking gives {n_tracks} tracks, more than the {MAX_LABEL} labels a uint16 mask can "
                            "hold; split the sequence or lower the number of objects")
    # number tracks 1..K in order of appearance (segments are created in that order already)
    table = np.array([[s + 1, seg_begin[s], seg_end[s], seg_parent[s] + 1] for s in range(n_tracks)],
                     np.int64).reshape(-1, 4)
    return Tracks([(s + 1).astype(np.uint16) for s in seg], table)


def _close_gaps(objects: list[FrameObjects], params: TrackParams, begin: list[int], end: list[int],
                parent: list[int], first: list[int], last: list[int], divided: set[int]) -> None:
    """Give track starts without a parent the best ended track (gap of 1..max_gap frames) as parent."""
    if params.max_gap < 1:
        return
    n_frames = len(objects)
    by_end: dict[int, list[int]] = {}
    by_begin: dict[int, list[int]] = {}
    for s in range(len(begin)):
        if end[s] < n_frames - 1 and s not in divided:
            by_end.setdefault(end[s], []).append(s)
        if begin[s] > 0 and parent[s] < 0:
            by_begin.setdefault(begin[s], []).append(s)
    ends = [s for t in sorted(by_end) for s in by_end[t]]
    starts = [s for t in sorted(by_begin) for s in by_begin[t]]
    end_pos = {s: i for i, s in enumerate(ends)}
    start_pos = {s: i for i, s in enumerate(starts)}
    rows, cols, costs = [], [], []
    for te, es in by_end.items():
        pe = objects[te].centroids[[last[s] for s in es]]
        for frames in range(2, params.max_gap + 2):
            bs = by_begin.get(te + frames)
            if not bs:
                continue
            pb = objects[te + frames].centroids[[first[s] for s in bs]]
            gate = params.gate_um * frames
            near = cKDTree(pe).sparse_distance_matrix(cKDTree(pb), gate, output_type="coo_matrix")
            rows.extend(end_pos[es[i]] for i in near.row.tolist())
            cols.extend(start_pos[bs[j]] for j in near.col.tolist())
            costs.extend(((near.data / gate) ** 2 + 0.1 * (frames - 1)).tolist())
    for a, b in _assign(len(ends), len(starts), np.array(rows, np.int64), np.array(cols, np.int64),
                        np.array(costs, float)):
        parent[starts[b]] = ends[a]


# ----------------------------------------------------------------------------------------------- folders
def list_masks(res_dir: Path, input_dir: Path | None = None) -> list[tuple[int, Path]]:
    """``(t, path)`` of the masks of ``res_dir`` sorted by t; the frames must be consecutive and, with
    ``input_dir``, there must be one mask per raw frame."""
    if not res_dir.is_dir():
        raise CTCInputError(f"{res_dir}: result folder does not exist; give the folder with maskTTT.tif files")
    masks: dict[int, Path] = {}
    for p in res_dir.iterdir():
        if m := MASK_RE.match(p.name):
            t = int(m.group(1))
            if t in masks:
                raise CTCInputError(f"{p}: same frame index as {masks[t].name}; remove one of them")
            masks[t] = p
    if not masks:
        raise CTCInputError(f"{res_dir}: no maskTTT.tif files; run predict first")
    if input_dir is not None:
        frames = list_frames(input_dir)
        for fr in frames:
            if fr.index not in masks:
                raise CTCInputError(f"{res_dir / fr.mask_name}: missing (raw frame {fr.path.name} has no mask); "
                                    "run predict again")
        extra = sorted(set(masks) - {fr.index for fr in frames})
        if extra:
            raise CTCInputError(f"{masks[extra[0]]}: no raw frame t{masks[extra[0]].name[4:]} in {input_dir} "
                                "(left from another run?); remove it before linking")
    ts = sorted(masks)
    missing = sorted(set(range(ts[0], ts[-1] + 1)) - set(ts))
    if missing:
        raise CTCInputError(f"{res_dir}: no mask for frame(s) {missing[:10]} between {ts[0]} and {ts[-1]}; "
                            "every frame needs a mask before linking")
    return [(t, masks[t]) for t in ts]


def _read_mask(path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = read_tiff(path)
    if arr.dtype.kind not in "ui":
        raise CTCInputError(f"{path}: mask dtype is {arr.dtype}; masks must hold integer labels (uint16)")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise CTCInputError(f"{path}: negative labels; masks must hold labels >= 0")
    if arr.dtype not in (np.uint8, np.uint16, np.uint32):
        arr = arr.astype(np.int64)
    if shape is not None and arr.shape != shape:
        raise CTCInputError(f"{path}: shape {arr.shape} differs from the first mask's {shape}; "
                            "all frames of a sequence must have one shape")
    return arr


@dataclass(frozen=True)
class TrackReport:
    """What :func:`track_folder` did."""

    res_dir: Path
    n_frames: int
    n_tracks: int
    n_divisions: int
    n_gaps_closed: int


def _resolve_dataset(res_dir: Path, dataset: str | None) -> DatasetConfig:
    name = dataset or res_dir.resolve().parent.name
    try:
        return get_dataset(name)
    except KeyError:
        if dataset:
            raise CTCInputError(f"unknown dataset {dataset!r}; use MDA231, TRIC or A549-SIM") from None
        raise CTCInputError(f"{res_dir}: cannot tell the dataset from the folder name {name!r}; "
                            "give --dataset MDA231|TRIC|A549-SIM") from None


def track_folder(res_dir: str | os.PathLike, dataset: str | None = None, input_dir: str | os.PathLike | None = None,
                 max_gap: int | None = None) -> TrackReport:
    """Relabel the masks of ``res_dir`` into tracks and write ``res_track.txt`` (all or nothing)."""
    res = Path(res_dir)
    cfg = _resolve_dataset(res, dataset)
    params = TrackParams.from_dataset(cfg, max_gap)
    masks = list_masks(res, None if input_dir is None else Path(input_dir))
    objects, ovs = [], []
    shape, prev_comp = None, None
    for _, path in masks:
        arr = _read_mask(path, shape)
        shape = arr.shape
        obj, comp = frame_objects(arr, params.voxel_size_zyx)
        if prev_comp is not None:
            ovs.append(overlaps(prev_comp, comp, objects[-1].n, obj.n))
        objects.append(obj)
        prev_comp = comp
    del prev_comp
    tracks = link(objects, ovs, params)
    _write_all(res, masks, objects, tracks, shape)
    _, n_children = np.unique(tracks.table[tracks.table[:, 3] > 0, 3], return_counts=True)
    n_div, n_gap = int((n_children >= 2).sum()), int((n_children == 1).sum())
    log.info("%s: %d frames linked into %d tracks (%d divisions, %d gaps closed); wrote res_track.txt",
             res, len(masks), len(tracks.table), n_div, n_gap)
    return TrackReport(res, len(masks), len(tracks.table), n_div, n_gap)


def _write_all(res: Path, masks: list[tuple[int, Path]], objects: list[FrameObjects], tracks: Tracks,
               shape: tuple[int, ...] | None) -> None:
    """Write every relabelled mask and ``res_track.txt`` to temporary files, then rename them all."""
    staged: list[tuple[Path, Path]] = []
    try:
        for t, (_, path) in enumerate(masks):
            arr = _read_mask(path, shape)
            new = tracks.relabel(t, objects[t], arr)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".track.part", dir=res)
            os.close(fd)
            staged.append((Path(tmp), path))
            write_mask(tmp, new)
        fd, tmp = tempfile.mkstemp(prefix=".res_track.txt.", suffix=".track.part", dir=res)
        os.close(fd)
        staged.append((Path(tmp), res / "res_track.txt"))
        write_text_atomic(tmp, tracks.text())
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)


def link_masks(masks: list[np.ndarray], params: TrackParams) -> tuple[list[np.ndarray], np.ndarray]:
    """In-memory linking of a list of label volumes: relabelled uint16 masks and the (n, 4) track table."""
    objects, comps, ovs = [], [], []
    for m in masks:
        obj, comp = frame_objects(np.asarray(m), params.voxel_size_zyx)
        if comps:
            ovs.append(overlaps(comps[-1], comp, objects[-1].n, obj.n))
        objects.append(obj)
        comps.append(comp)
    tracks = link(objects, ovs, params)
    out = [tracks.relabel(t, objects[t], np.asarray(m)) for t, m in enumerate(masks)]
    return out, tracks.table

