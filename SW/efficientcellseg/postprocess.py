"""Per-dataset post-processing: probability maps (Z, Y, X) -> uint16 labels numbered 1..n.

* :func:`centers_watershed` (MDA231): seeds from a cell-centre heatmap, 3D marker-controlled watershed.
* :func:`distance_watershed` (TRIC): seeds from the 3D distance transform, so one nucleus keeps one label
  through all its slices.
* :func:`largest_component` (A549-SIM): the largest 3D connected component, holes filled; optionally
  trimmed where the raw signal is weak (:func:`signal_gate`).

Shared conventions: foreground = ``prob > prob_threshold``; connected components and watershed use face
connectivity (6-neighbourhood in 3D); the watersheds run on each foreground component's bounding box
separately (memory follows the largest component, not the frame); a component without a seed keeps one
label of its own (no cell is dropped because its seed was missed); objects below ``min_size`` voxels are
removed, and so are objects spanning fewer than ``min_slices`` z-slices (default 1: none); ``fill_holes``
fills, per object, every hole enclosed within an xy slice (which includes every 3D cavity, and holes cut open
by the first or last slice); labels are renumbered 1..n as uint16 and more than 65535 objects raise
:class:`CTCInputError`.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.segmentation import expand_labels, watershed

from efficientcellseg import cpu_threads
from efficientcellseg.ctc_io import MAX_LABEL
from efficientcellseg.errors import CTCInputError

log = logging.getLogger(__name__)

DISTANCE_CAP = 64.0
"""Distance-transform values are ``min(EDT, DISTANCE_CAP)`` (in xy pixels): only matters for huge blobs."""
_MAX_EDT_VOXELS = 1 << 23
"""Components with bigger bounding boxes get their capped EDT in overlapping xy chunks (bounded memory)."""
_EDT_CHUNK = 512
_RING_TILE = 512
"""Ring pixels (:func:`_ring_pixels`) are found in tiles of this size (plus the ring on each side)."""
_PLATEAU_POINTS = 4096
"""Above this many peak voxels :func:`_plateaus` labels their bounding box instead of pairing points: a
flat blob capped at ``DISTANCE_CAP`` (e.g. an untrained network's all-foreground output) has millions, and
pairing them took 37 s on one small TRIC frame against ~0.1 s for the box."""


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_FACE = _readonly(ndi.generate_binary_structure(3, 1))
_SLICE_2D = _readonly(np.pad(ndi.generate_binary_structure(2, 1)[None], ((1, 1), (0, 0), (0, 0))))
"""Face connectivity within an xy slice only: hole filling slice by slice in one call."""


# ---------------------------------------------------------------------------------------------- label helpers
def _label_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count per label 0..n, slice by slice (one ``np.bincount`` of all would copy it to int64).

    Only the object voxels are counted (label 0 is the rest): 5x faster on a full-size TRIC frame, whose
    objects cover ~7% of it (0.06 s instead of 0.29 s in a probe of 2026-12-06; the whole
    post-processing against an earlier commit: ``benchmarks/postprocess_revision.py``).
    """
    sizes = np.zeros(n + 1, np.int64)
    for part in labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else [labels]:
        sizes += np.bincount(part[part != 0], minlength=n + 1)[: n + 1]
    sizes[0] = labels.size - sizes[1:].sum()
    return sizes


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise CTCInputError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise CTCInputError(f"labels must be >= 0, got minimum {labels.min()}")
    return labels


def to_uint16_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels to 1..n (0 stays background) as uint16; more than 65535 objects raise CTCInputError."""
    labels = _check_labels(labels)
    top = int(labels.max(initial=0))
    if top <= max(4 * labels.size, 1 << 20):
        return _renumber(labels, top, 1)
    uniq, inv = np.unique(labels, return_inverse=True)  # huge label values: sort instead of a table
    n = uniq.size - int(uniq[0] == 0)
    _check_count(n)
    inv = inv.reshape(labels.shape)
    return (inv if uniq[0] == 0 else inv + 1).astype(np.uint16)


def _z_extents(labels: np.ndarray, top: int) -> np.ndarray:
    """Number of z-slices from the first to the last one each label 0..``top`` of a (Z, Y, X) array occupies
    (0 for absent labels; label 0 is not meaningful)."""
    out = np.zeros(top + 1, np.int64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=top), start=1):
        if sl is not None:
            out[i] = sl[0].stop - sl[0].start
    return out


def _renumber(labels: np.ndarray, top: int, min_size: int, min_slices: int = 1) -> np.ndarray:
    """uint16 labels: objects of ``labels`` (values 0..``top``) with at least ``min_size`` voxels (and, for a
    (Z, Y, X) array with ``min_slices`` > 1, spanning at least ``min_slices`` z-slices) numbered 1..n in label
    order, the rest 0, in one pass over the object voxels; more than 65535 raise CTCInputError."""
    out = np.zeros(labels.shape, np.uint16)
    if top == 0:
        return out
    keep = _label_sizes(labels, top) >= max(int(min_size), 1)
    if min_slices > 1 and labels.ndim == 3:
        keep &= _z_extents(labels, top) >= int(min_slices)
    keep[0] = False
    n = int(np.count_nonzero(keep))
    _check_count(n)
    lut = np.zeros(top + 1, np.uint16)
    lut[keep] = np.arange(1, n + 1, dtype=np.uint16)
    _relabel_objects(labels, lut, out)
    return out


def _check_count(n: int) -> None:
    if n > MAX_LABEL:
        raise CTCInputError(
            f"{n} objects found, but CTC masks are uint16 and hold at most {MAX_LABEL}; "
            "raise min_size or the probability threshold"
        )


def remove_small_objects(labels: np.ndarray, min_size: int, *, in_place: bool = False) -> np.ndarray:
    """Set labels with fewer than ``min_size`` voxels to 0 (sizes from one bincount, no per-object loop)."""
    labels = _check_labels(labels)
    out = labels if in_place else labels.copy()
    if min_size <= 1 or out.size == 0:
        return out
    small = _label_sizes(out, int(out.max())) < min_size
    small[0] = False
    if small.any():
        lut = np.arange(small.size, dtype=out.dtype)
        lut[small] = 0
        _relabel_objects(out, lut, out)
    return out


def _relabel_objects(labels: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """``out[v] = lut[labels[v]]`` at the object voxels (label > 0) only, slice by slice: on a sparse frame
    (a full-size TRIC frame's objects cover ~7 %) much less work than ``lut[labels]`` over every voxel;
    ``out`` may be ``labels``."""
    pairs = zip(labels, out, strict=True) if labels.ndim > 1 else [(labels, out)]
    for src, dst in pairs:  # a boolean mask: 3x faster than np.nonzero's index tuple here
        m = src != 0
        dst[m] = lut[src[m]]


def fill_holes_per_label(labels: np.ndarray, *, per_slice: bool = True, in_place: bool = False) -> np.ndarray:
    """Fill each object's holes with its label (only background voxels change).

    ``per_slice=True`` fills holes enclosed within each xy slice of the object, which includes every 3D
    cavity and holes opened by the stack's first or last slice; ``False`` fills 3D cavities only.
    """
    labels = _check_labels(labels)
    out = labels if in_place else labels.copy()
    structure = _SLICE_2D if (per_slice and out.ndim == 3) else None
    for i, sl in enumerate(ndi.find_objects(out), 1):
        if sl is None:
            continue
        view = out[sl]
        obj = view == i
        holes = ndi.binary_fill_holes(obj, structure=structure)
        holes &= view == 0
        view[holes] = i
    return out


# ---------------------------------------------------------------------------------------------- seeds
def _grow(sl: tuple[slice, ...], by: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - by, 0), min(s.stop + by, n)) for s, n in zip(sl, shape, strict=True))


def _window(min_distance: float, z_scale: float) -> tuple[int, int, int]:
    r = int(math.floor(min_distance))
    rz = int(math.floor(min_distance / z_scale))
    return (2 * rz + 1, 2 * r + 1, 2 * r + 1)


def _plateaus(coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, int]:
    """Label (1..k, int32) of each voxel in ``coords`` (``np.nonzero`` order) by 26-connected group, and k.

    The same numbers as ``ndi.label(..., structure=ones((3, 3, 3)))`` at those voxels (groups numbered by
    their first voxel in C order), from the few voxels alone instead of a pass over the whole box: a
    full-size TRIC frame labels ~1,800 component boxes for ~200 peak voxels each.
    """
    n = int(coords[0].size)
    if n == 0:
        return np.zeros(0, np.int32), 0
    if n > _PLATEAU_POINTS:  # C order inside the box is C order in the volume: the same numbering
        lo = [int(c.min()) for c in coords]
        box = np.zeros([int(c.max()) - a + 1 for c, a in zip(coords, lo, strict=True)], bool)
        local = tuple(c - a for c, a in zip(coords, lo, strict=True))
        box[local] = True
        lab, k = ndi.label(box, structure=np.ones((3,) * len(coords), bool))
        return lab[local].astype(np.int32, copy=False), int(k)
    pts = np.stack(coords, axis=1)
    pairs = cKDTree(pts).query_pairs(1.0, p=np.inf, output_type="ndarray")  # Chebyshev 1: 26-neighbours
    if len(pairs) == 0:  # no two peak voxels touch (most components): each is its own group
        return np.arange(1, n + 1, dtype=np.int32), n
    graph = coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    k, group = connected_components(graph, directed=False)
    first = np.full(k, n, np.int64)
    np.minimum.at(first, group, np.arange(n))
    rank = np.empty(k, np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(1, k + 1, dtype=np.int32)
    return rank[group], int(k)


def find_seeds(
    height: np.ndarray, mask: np.ndarray, *, min_distance: float, z_scale: float, threshold: float
) -> tuple[np.ndarray, int]:
    """Seed labels (int32, 1..k) at the local maxima of ``height`` inside ``mask``, and k.

    A seed voxel is ``> threshold`` and equal to the maximum of ``height`` (restricted to ``mask``) over the
    box ``|dz| * z_scale <= min_distance, |dy|, |dx| <= min_distance`` (borders included, along z too).
    Connected plateaus form one seed; seeds still closer than ``min_distance`` (Euclidean, z scaled) to a
    higher (or equally high, earlier) seed are dropped.
    """
    h = np.where(mask, height, -np.inf).astype(np.float32, copy=False)
    peaks = (h == ndi.maximum_filter(h, size=_window(min_distance, z_scale), mode="nearest"))
    peaks &= mask
    peaks &= h > threshold
    coords = np.nonzero(peaks)  # seeds are sparse: plateaus, centroids and maxima from the seed voxels alone
    which, k = _plateaus(coords)
    seeds = np.zeros(h.shape, np.int32)
    seeds[coords] = which
    if k <= 1:
        return seeds, k
    idx = np.arange(1, k + 1)
    count = np.bincount(which, minlength=k + 1)[1:]
    pos = np.stack([np.bincount(which, weights=c, minlength=k + 1)[1:] / count for c in coords], axis=1)
    pos *= np.array([z_scale, 1.0, 1.0])
    val = np.full(k + 1, -np.inf, h.dtype)  # each seed's highest value (ndi.maximum would argsort the volume)
    np.maximum.at(val, which, h[coords])
    val = val[1:]
    pairs = cKDTree(pos).query_pairs(np.nextafter(min_distance, 0), output_type="ndarray")
    if len(pairs) == 0:
        return seeds, k
    order = np.lexsort((idx, -val))  # highest first, ties: lower label first
    rank = np.empty(k, np.intp)
    rank[order] = np.arange(k)
    near: list[list[int]] = [[] for _ in range(k)]
    for a, b in pairs:
        near[a].append(b)
        near[b].append(a)
    keep = np.ones(k, bool)
    for s in order:  # greedy suppression over seeds (a handful per component)
        if keep[s]:
            for t in near[s]:
                if rank[t] > rank[s]:
                    keep[t] = False
    lut = np.zeros(k + 1, np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    seeds[coords] = lut[which]
    return seeds, int(keep.sum())


def capped_edt(mask: np.ndarray, z_scale: float, cap: float = DISTANCE_CAP) -> np.ndarray:
    """``min(EDT(mask), cap)`` as float32, sampling (z_scale, 1, 1); outside the array is not background.

    Large arrays are done in xy chunks with a margin of ``ceil(cap)``: exact, since a value <= cap has its
    nearest background within the margin, and a chunk can only over-estimate the true distance.
    """
    sampling = (float(z_scale), 1.0, 1.0)
    if mask.all():
        return np.full(mask.shape, cap, np.float32)
    if mask.size <= _MAX_EDT_VOXELS:
        return np.minimum(ndi.distance_transform_edt(mask, sampling=sampling), cap).astype(np.float32)
    out = np.empty(mask.shape, np.float32)
    m = int(math.ceil(cap))
    _, ny, nx = mask.shape
    for y0 in range(0, ny, _EDT_CHUNK):
        for x0 in range(0, nx, _EDT_CHUNK):
            ya, yb = max(y0 - m, 0), min(y0 + _EDT_CHUNK + m, ny)
            xa, xb = max(x0 - m, 0), min(x0 + _EDT_CHUNK + m, nx)
            part = mask[:, ya:yb, xa:xb]
            inner = (slice(None), slice(y0 - ya, y0 - ya + _EDT_CHUNK), slice(x0 - xa, x0 - xa + _EDT_CHUNK))
            if part.all():
                d = np.full(part.shape, cap)
            else:
                d = np.minimum(ndi.distance_transform_edt(part, sampling=sampling), cap)
            out[:, y0 : y0 + _EDT_CHUNK, x0 : x0 + _EDT_CHUNK] = d[inner]
    return out


# ---------------------------------------------------------------------------------------------- engine
def _split_components(
    fg: np.ndarray,
    height_fn: Callable[[np.ndarray, tuple[slice, ...]], np.ndarray],
    *,
    min_distance: float,
    z_scale: float,
    threshold: float,
    min_size: int,
) -> np.ndarray:
    """int32 labels (not consecutive): each foreground component split by a seeded watershed on ``-height``.

    A component keeps its own label when it has fewer than two seeds, when it is smaller than ``min_size``
    (it is removed later anyway) or when its bounding box fits inside one seed window (then no two voxels
    can be seeds of their own, up to exact ties). Pieces of split components get new labels above the
    component count, so a later component's bounding box is never confused by them.
    """
    lab, n = ndi.label(fg, structure=_FACE)
    if n == 0:
        return lab
    sizes = _label_sizes(lab, n)
    win = _window(min_distance, z_scale)
    todo = []
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        if sl is None or sizes[i] < min_size:
            continue
        if all(s.stop - s.start <= (w + 1) // 2 for s, w in zip(sl, win, strict=True)):
            continue
        todo.append((i, _grow(sl, 1, lab.shape)))

    def split(item: tuple[int, tuple[slice, ...]]) -> tuple[np.ndarray, np.ndarray | None, int]:
        # reads only the voxels of component i, which no other component's write touches
        i, sl = item
        comp = lab[sl] == i
        height = height_fn(comp, sl)
        seeds, k = find_seeds(height, comp, min_distance=min_distance, z_scale=z_scale, threshold=threshold)
        return comp, (watershed(-height, seeds, mask=comp) if k > 1 else None), k

    next_label = n + 1
    n_split = 0
    for (_, sl), (comp, ws, k) in zip(todo, cpu_threads.ordered_map(split, todo), strict=True):
        if ws is not None:  # written in component order: the same labels for any number of threads
            lab[sl][comp] = ws[comp] + (next_label - 1)
            next_label += k
            n_split += 1
    n_tried = len(todo)
    log.debug("watershed: %d components, %d searched for seeds, %d split into %d", n, n_tried, n_split,
              next_label - n - 1)
    return lab


def _finish(labels: np.ndarray, min_size: int, fill_holes: bool, min_slices: int = 1) -> np.ndarray:
    """Objects below ``min_size`` voxels or spanning fewer than ``min_slices`` z-slices removed and the rest
    numbered 1..n as uint16 (:func:`_renumber`: as :func:`remove_small_objects` then :func:`to_uint16_labels`;
    the renumbering keeps the order, so hole filling fills the same holes), then holes filled."""
    labels = _check_labels(labels)
    out = _renumber(labels, int(labels.max(initial=0)), min_size, min_slices)
    if fill_holes:
        fill_holes_per_label(out, in_place=True)
    return out


def _check_prob(prob: np.ndarray, name: str = "prob") -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"{name} must be a (Z, Y, X) array, got shape {prob.shape}")
    if not (np.issubdtype(prob.dtype, np.floating) or np.issubdtype(prob.dtype, np.integer)):
        raise ValueError(f"{name} must be real-valued, got dtype {prob.dtype}")
    return prob


def _check_params(**checks: tuple[Any, bool, str]) -> None:
    bad = [f"{k}={v!r} ({why})" for k, (v, ok, why) in checks.items() if not ok]
    if bad:
        raise ValueError("invalid post-processing parameters: " + ", ".join(bad))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)


# ---------------------------------------------------------------------------------------------- raw signal
BOUNDARY_BACKGROUND_QUANTILE = 10.0
"""Percentile of the raw signal in an object's ring that :func:`refine_boundaries` takes as its background (a
low one: in dense tissue part of the ring lies on neighbouring objects; 10 was chosen against 20, 30 and 50 on
TRIC's family A tuning frames, docs/generalization.md)."""
BOUNDARY_TOP_QUANTILE = 90.0
"""Percentile of the raw signal inside an object that :func:`refine_boundaries` takes as its bright level."""
SIGNAL_SIGMA = 2.0
"""In-plane Gaussian (pixels) of the raw frame that :func:`signal_gate` compares (noise does not decide)."""


def _signal_slice(sl: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(sl.astype(np.float32), SIGNAL_SIGMA, mode="nearest")


def signal_map(raw: np.ndarray) -> np.ndarray:
    """The raw (Z, Y, X) frame smoothed in-plane with a Gaussian of :data:`SIGNAL_SIGMA` pixels, as float32."""
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ValueError(f"raw frame must be (Z, Y, X), got shape {raw.shape}")
    out = np.empty(raw.shape, np.float32)
    for z, sl in enumerate(raw):
        out[z] = _signal_slice(sl)
    return out


class SignalSlices:
    """:func:`signal_map` of a raw (Z, Y, X) frame, made one slice at a time when read (``signal[z]``).

    A full-size TRIC frame's map is a 216 MB float32 volume; :func:`refine_boundaries` reads each slice once,
    so it needs none. ``np.asarray(signal)`` makes the whole map (what :func:`signal_gate` reads).
    """

    def __init__(self, raw: np.ndarray) -> None:
        if raw.ndim != 3:
            raise ValueError(f"raw frame must be (Z, Y, X), got shape {raw.shape}")
        self.raw = raw
        self.shape: tuple[int, ...] = tuple(raw.shape)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        if not isinstance(z, (int, np.integer)):
            raise TypeError(f"SignalSlices gives one slice (signal[z]); use np.asarray(signal) for {z!r}")
        return _signal_slice(self.raw[z])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = signal_map(self.raw)
        return full if dtype is None else full.astype(dtype)


def signal_gate(labels: np.ndarray, signal: np.ndarray, fraction: float) -> np.ndarray:
    """Drop each object's voxels whose raw signal is weak for that object, in place; returns ``labels``.

    Per object, the bright level ``top`` is the 90th percentile of ``signal`` inside it and the background
    ``bg`` the median of ``signal`` outside every object; voxels with ``signal <= bg + fraction * (top - bg)``
    are removed. Why: each slice is min-max normalised before the network (pseudocoloring), so the network
    cannot tell a sharp cell slice from the dim, blurred copy of the cell that z-blur puts into the slices
    above and below it, and draws the cell several slices too tall. The raw signal still knows the
    difference (docs/generalization.md). ``fraction <= 0`` changes nothing.
    """
    if labels.shape != signal.shape:
        raise ValueError(f"labels {labels.shape} and signal {signal.shape} must have one shape")
    signal = np.asarray(signal)
    fg = labels > 0
    if not fraction > 0 or not fg.any():
        return labels
    bg = float(np.median(signal[~fg])) if not fg.all() else float(signal.min())
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        obj = labels[sl] == i
        s = signal[sl]
        top = float(np.percentile(s[obj], 90))
        labels[sl][obj & (s <= bg + fraction * (top - bg))] = 0
    return labels


RESCUE_MARGIN = 3
"""Voxels (in z, y and x) around each found object that :func:`rescue_missed` leaves alone: its blurred halo,
not another cell."""
RESCUE_STAT_VOXELS = 1 << 20
"""About this many voxels (an even in-plane sample) estimate the background and noise of :func:`rescue_missed`."""
RESCUE_LOW = 0.5
"""Hysteresis: a rescued object extends down to ``RESCUE_LOW`` times the seed level's height above the
background."""


def rescue_missed(labels: np.ndarray, signal: np.ndarray, *, sigma: float, min_size: int,
                  margin: int = RESCUE_MARGIN) -> np.ndarray:
    """Add, as new objects, bright regions of the raw ``signal`` that no object covers; in place, returns
    ``labels`` (an integer array wide enough for the new labels, e.g. int32).

    Away from the objects (more than ``margin`` voxels) the background is the median of ``signal`` and the
    noise its MAD (scaled to a standard deviation). A candidate is a 3D region above ``bg + RESCUE_LOW *
    sigma * noise`` whose brightest voxel is above ``bg + sigma * noise`` (hysteresis), has at least
    ``min_size`` voxels and is brightest inside, not where it meets the margin around a found object (a
    region whose brightest voxel is there is that object's blurred halo). Why: the network misses whole
    cells that are much dimmer than their neighbours (on family B MDA231 frames a cell at a third of the
    others' contrast, foreground probability about 0 inside it), and a missed cell costs SEG and TRA more
    than anything else; an unexplained bright region of cell size is cheap to find in the raw signal.
    ``sigma <= 0`` changes nothing.
    """
    if labels.shape != signal.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and signal {signal.shape} must be (Z, Y, X) arrays of one shape")
    if not sigma > 0:
        return labels
    near = labels > 0
    if margin > 0:  # each object dilated in its own box: the same as dilating the volume, in less time
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is not None:
                box = _grow(sl, int(margin), labels.shape)
                near[box] |= ndi.maximum_filter(labels[box] == i, size=2 * int(margin) + 1, mode="constant")
    free = ~near
    step = max(1, int(math.isqrt(free.size // RESCUE_STAT_VOXELS)))
    vals = signal[:, ::step, ::step][free[:, ::step, ::step]]  # a fixed, even sample: same statistics, less time
    if vals.size < 2:
        return labels
    bg = float(np.median(vals))
    noise = 1.4826 * float(np.median(np.abs(vals - bg)))
    if not noise > 0:
        return labels
    comp, n = ndi.label(free & (signal > bg + RESCUE_LOW * sigma * noise))
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[0] = 0
    cands = np.flatnonzero(sizes >= int(min_size))
    boxes = ndi.find_objects(comp, max_label=int(cands.max())) if cands.size else []
    kept = []
    for i in cands:  # few regions are cell-sized: each is looked at in its own box
        sl = _grow(boxes[i - 1], 1, comp.shape)
        own = comp[sl] == i
        val = signal[sl][own]
        shell = (ndi.maximum_filter(near[sl], size=3) & ~near[sl])[own]  # its voxels next to the margin
        peak = float(val.max())
        if peak > bg + sigma * noise and peak > float(val[shell].max(initial=-np.inf)):
            kept.append(i)
    ids = np.asarray(kept, np.int64)
    if ids.size:
        top = int(labels.max(initial=0))
        for k, i in enumerate(ids, start=1):
            sl = boxes[i - 1]
            labels[sl][comp[sl] == i] = top + k
        log.debug("rescued %d object(s) the network missed (bg %.1f, noise %.2f)", ids.size, bg, noise)
    return labels


def _sortable_bits(val: np.ndarray) -> np.ndarray:
    """uint32 codes of float32 values that sort as the values do (IEEE 754 bits, sign flipped; negatives
    inverted). Made in place in one new array (a full-size TRIC frame codes ~6 M values at once)."""
    val = np.ascontiguousarray(val, dtype=np.float32)
    code = val.view(np.uint32).copy()
    neg = np.signbit(val)
    np.invert(code, out=code, where=neg)
    np.bitwise_or(code, np.uint32(0x80000000), out=code, where=~neg)
    return code


def _from_sortable_bits(code: np.ndarray) -> np.ndarray:
    """The float32 values of :func:`_sortable_bits` codes."""
    code = code.astype(np.uint32)
    return np.where(code & np.uint32(0x80000000), code & np.uint32(0x7FFFFFFF), ~code).view(np.float32)


def _per_label_quantile(lab: np.ndarray, val: np.ndarray, n: int, q: float) -> np.ndarray:
    """float64 array of length ``n + 1``: the ``q``-th percentile (lower value, no interpolation) of the values
    ``val`` (float32) of each label 1..n in ``lab`` (1D, labels > 0 only); NaN for labels without values and
    for 0. See :func:`_per_label_quantile_parts`."""
    return _per_label_quantile_parts([(lab, val)], n, q)


def _per_label_quantile_parts(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int, q: float) -> np.ndarray:
    """:func:`_per_label_quantile` of the (labels, values) pairs ``parts`` taken together (e.g. one per slice),
    without concatenating them first.

    One in-place sort of 64-bit keys (label in the high half, the value's sortable bits in the low half)
    instead of ``np.lexsort((val, lab))``: the same values, 4x faster (0.56 s instead of 2.27 s for 6 M values
    of 10 000 labels on the 2-core machine, 2026-12-05; a full-size TRIC frame sorts ~3 M and ~6 M) and no
    index array. The keys are written part by part into one array, so the memory peak is that array (8 bytes
    per value) and one part's codes, not the concatenated labels and values beside it.
    """
    total = sum(int(np.asarray(lab).size) for lab, _ in parts)
    key = np.empty(total, np.uint64)
    count = np.zeros(n + 1, np.int64)
    at = 0
    for lab, val in parts:
        lab = np.asarray(lab)
        if lab.size != np.asarray(val).size:
            raise ValueError(f"labels ({lab.size}) and values ({np.asarray(val).size}) must have one length")
        seg = key[at : at + lab.size]
        seg[:] = lab
        seg <<= np.uint64(32)
        seg |= _sortable_bits(val)
        count += np.bincount(lab, minlength=n + 1)[: n + 1]
        at += lab.size
    key.sort()
    start = np.cumsum(count) - count
    out = np.full(n + 1, np.nan)
    has = count > 0
    has[0] = False
    pick = start[has] + np.floor(q / 100.0 * (count[has] - 1)).astype(np.int64)
    out[has] = _from_sortable_bits(key[pick] & np.uint64(0xFFFFFFFF))
    return out


def _ring_pixels(sl: np.ndarray, ring: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions (int64, ascending) and labels of the background pixels of the 2D label slice ``sl`` that
    :func:`skimage.segmentation.expand_labels` by ``ring`` gives to an object.

    The same pixels and owners as ``expand_labels`` on the whole slice, in less time and memory: only the
    objects' bounding box grown by ``ring`` is looked at (no pixel further away can join), in tiles of
    :data:`_RING_TILE` pixels each grown by ``ring`` (a ring pixel's owner is the nearest object pixel, lowest
    column then lowest row among equally near ones, in SciPy's feature transform; all candidates lie within
    ``ring``, so inside the grown tile). 2.7x faster than one call on a full-size TRIC frame's slices (a probe
    of 2026-12-06, identical pixels on all 13 slices); tests compare against the whole slice with small tiles.
    """
    rows, cols = np.flatnonzero(sl.any(axis=1)), np.flatnonzero(sl.any(axis=0))
    if ring <= 0 or rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, sl.dtype)
    y0, y1 = max(rows[0] - ring, 0), min(rows[-1] + ring + 1, sl.shape[0])
    x0, x1 = max(cols[0] - ring, 0), min(cols[-1] + ring + 1, sl.shape[1])
    crop = sl[y0:y1, x0:x1]
    grown = np.zeros_like(crop)
    ny, nx = crop.shape
    t = _RING_TILE
    for ty in range(0, ny, t):
        for tx in range(0, nx, t):
            ya, xa = max(ty - ring, 0), max(tx - ring, 0)
            part = crop[ya : min(ty + t + ring, ny), xa : min(tx + t + ring, nx)]
            if part.any():
                grown[ty : ty + t, tx : tx + t] = expand_labels(part, ring)[ty - ya : ty - ya + t, tx - xa : tx - xa + t]
    yy, xx = np.nonzero((grown > 0) & (crop == 0))
    return (yy + y0) * sl.shape[1] + (xx + x0), grown[yy, xx]


def refine_boundaries(labels: np.ndarray, signal: np.ndarray | SignalSlices, *, fraction: float, ring: int,
                      grow_only: bool = False, in_place: bool = False,
                      background_quantile: float = BOUNDARY_BACKGROUND_QUANTILE,
                      top_quantile: float = BOUNDARY_TOP_QUANTILE) -> np.ndarray:
    """Redraw each object's boundary where its raw signal crosses ``fraction`` of the way from its own
    surroundings to its own bright level; int32 labels (objects may grow or shrink, never change owner).

    Per object: the bright level is the ``top_quantile`` percentile of ``signal`` inside it, the background
    the ``background_quantile`` percentile in a ring of ``ring`` pixels around it in its xy slices (the
    pixels that :func:`skimage.segmentation.expand_labels` gives it; a ring-less object uses the median
    outside every ring). The object becomes the voxels of its own label or ring whose signal is above
    ``bg + fraction * (top - bg)``; an object whose bright level is not above its background is kept as it
    is. Why: a network trained on one point spread function draws edges at the place it learned, and a
    wider or narrower blur moves the true edge away from there (too large by a median 27% in area on the
    independent image model's TRIC frames, docs/generalization.md); an edge relative to the object's own
    contrast moves with the blur. With ``grow_only`` every voxel of an object stays and only ring voxels
    are added (MDA231, whose :func:`signal_gate` already removes weak voxels). ``fraction <= 0`` changes
    nothing. ``in_place`` (int32 ``labels`` only) writes the result into ``labels``.

    Memory: each signal slice is read once (``signal`` may be :class:`SignalSlices`, which makes them one at
    a time) and only the object and ring pixels' positions and values are kept (a full-size TRIC frame has
    54 M voxels, about 12% of them object or ring).
    """
    if labels.shape != tuple(signal.shape) or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and signal {signal.shape} must be (Z, Y, X) arrays of one shape")
    if in_place and labels.dtype != np.int32:
        raise ValueError(f"refine_boundaries in place needs int32 labels, got {labels.dtype}")
    out = labels if in_place else np.array(labels, dtype=np.int32)
    n = int(out.max(initial=0))
    if not fraction > 0 or n == 0:
        return out

    # positions within a slice kept as int32 where they fit (a full-size TRIC slice has 4.2 M pixels): ~9 M
    # object and ring voxels of such a frame then take 36 MB less at the post-processing's memory peak
    pos_type = np.int32 if out[0].size <= np.iinfo(np.int32).max else np.int64

    def pixels(z: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        flat, sig = out[z].reshape(-1), signal[z].reshape(-1)
        pos = np.flatnonzero(flat).astype(pos_type)
        rpos, rlab = _ring_pixels(out[z], ring)
        rpos = rpos.astype(pos_type)
        return (pos, flat[pos], sig[pos]), (rpos, rlab, sig[rpos])

    # per slice: flat positions, labels and signal of the object / ring pixels (slices in threads)
    own, rings = (list(part) for part in zip(*cpu_threads.ordered_map(pixels, range(len(out))), strict=True))
    top = _per_label_quantile_parts([(lab, val) for _, lab, val in own], n, top_quantile)
    bg = _per_label_quantile_parts([(lab, val) for _, lab, val in rings], n, background_quantile)
    ringless = np.isnan(bg) & ~np.isnan(top)  # label ids without voxels (gaps in the numbering) need no level
    if ringless.any():
        outside = []
        for z, sl in enumerate(out):
            away = sl == 0
            away.reshape(-1)[rings[z][0]] = False
            outside.append(signal[z][away])
        outside_all = np.concatenate(outside)
        bg[ringless] = (float(np.median(outside_all)) if outside_all.size
                        else min(float(signal[z].min()) for z in range(len(out))))
        del outside, outside_all
    level = bg + fraction * (top - bg)
    kept = ~(top > bg)  # no contrast (or no voxel): the object stays exactly as drawn
    keep_level = np.where(kept, -np.inf, level)  # an own voxel stays when its signal is above this
    add_level = np.where(kept, np.inf, level)    # a ring voxel joins its object when its signal is above this
    for z in range(len(out)):
        flat = out[z].reshape(-1)
        if not grow_only:
            pos, lab, val = own[z]
            flat[pos[~(val > keep_level[lab])]] = 0
        pos, lab, val = rings[z]
        add = val > add_level[lab]
        flat[pos[add]] = lab[add]
    return out


def _fraction_check(fraction: Any) -> tuple[Any, bool, str]:
    return fraction, _finite(fraction) and 0 <= fraction < 1, "must be in [0, 1)"


def _whole_check(value: Any, low: int) -> tuple[Any, bool, str]:
    return value, _finite(value) and value >= low and float(value).is_integer(), f"must be a whole number >= {low}"


def _ring_check(ring: Any) -> tuple[Any, bool, str]:
    return _whole_check(ring, 0)


def _need_signal(kind: str, signal: np.ndarray | SignalSlices | None, fraction: float,
                 name: str = "signal_fraction") -> None:
    if fraction > 0 and signal is None:
        raise ValueError(f"{kind} with {name} > 0 needs the raw signal: pass signal=")


# ---------------------------------------------------------------------------------------------- methods
def centers_watershed(
    prob: np.ndarray,
    centers: np.ndarray,
    signal: np.ndarray | SignalSlices | None = None,
    *,
    prob_threshold: float = 0.5,
    center_threshold: float = 0.3,
    center_min_distance: float = 10,
    z_scale: float = 4.8,
    end_threshold: float = 0.0,
    end_fraction: float = 0.8,
    signal_fraction: float = 0.0,
    min_size: int = 300,
    fill_holes: bool = True,
    grow_fraction: float = 0.0,
    grow_ring: int = 14,
    rescue_sigma: float = 0.0,
    rescue_min_size: int = 1000,
    min_slices: int = 1,
    background_detrend: bool = False,
) -> np.ndarray:
    """MDA231: watershed of each foreground component from the peaks of the cell-centre heatmap.

    Seeds: local maxima of ``centers`` above ``center_threshold`` inside the component, at least
    ``center_min_distance`` apart in xy pixels (z distances multiplied by ``z_scale``, the z/xy voxel size
    ratio). Watershed on ``-centers`` restricted to the component; a component without a seed keeps one label.
    Then :func:`trim_end_slices` with ``end_threshold`` and ``end_fraction`` (off while ``end_threshold`` is
    not above ``prob_threshold``, the default), and :func:`signal_gate` with ``signal_fraction`` (off at 0, the
    default; otherwise ``signal`` from :func:`signal_map` of the raw frame is required), and growth into each
    object's ring where the raw signal is bright for it (``grow_fraction``, off at 0), after cells the network
    missed are added from the raw signal (``rescue_sigma``, off at 0; :func:`rescue_missed`;
    :func:`centers_finish`). Last, objects spanning fewer than ``min_slices`` z-slices are removed (1: none).
    With ``background_detrend`` the gate, the rescue and the growth read the signal with a smooth background
    surface fitted away from the objects (``2 * grow_ring`` pixels) subtracted (:func:`detrend_background`).

    The two stages are also available separately (:func:`centers_split`, :func:`centers_finish`), so that
    :mod:`efficientcellseg.tune` can try several end-slice settings on one watershed.
    """
    labels = centers_split(prob, centers, prob_threshold=prob_threshold, center_threshold=center_threshold,
                           center_min_distance=center_min_distance, z_scale=z_scale, min_size=min_size)
    return centers_finish(labels, prob, signal, end_threshold=end_threshold, end_fraction=end_fraction,
                          signal_fraction=signal_fraction, min_size=min_size, fill_holes=fill_holes,
                          grow_fraction=grow_fraction, grow_ring=grow_ring, rescue_sigma=rescue_sigma,
                          rescue_min_size=rescue_min_size, min_slices=min_slices,
                          background_detrend=background_detrend)


def centers_split(prob: np.ndarray, centers: np.ndarray, *, prob_threshold: float, center_threshold: float,
                  center_min_distance: float, z_scale: float, min_size: int) -> np.ndarray:
    """First stage of :func:`centers_watershed`: int32 labels of the split components, not consecutive."""
    prob = _check_prob(prob)
    centers = _check_prob(centers, "centers")
    if centers.shape != prob.shape:
        raise ValueError(
            f"centers (shape {centers.shape}) must have the same shape as prob (shape {prob.shape})"
        )
    _check_params(
        prob_threshold=(prob_threshold, _finite(prob_threshold), "must be a finite number"),
        center_threshold=(center_threshold, _finite(center_threshold), "must be a finite number"),
        center_min_distance=(center_min_distance, _finite(center_min_distance) and center_min_distance >= 1,
                             "must be >= 1"),
        z_scale=(z_scale, _finite(z_scale) and z_scale > 0, "must be > 0"),
        min_size=(min_size, _finite(min_size) and min_size >= 0, "must be >= 0"),
    )
    return _split_components(
        prob > prob_threshold,
        lambda comp, sl: centers[sl].astype(np.float32, copy=False),
        min_distance=float(center_min_distance),
        z_scale=float(z_scale),
        threshold=float(center_threshold),
        min_size=int(min_size),
    )


def centers_finish(labels: np.ndarray, prob: np.ndarray, signal: np.ndarray | SignalSlices | None = None, *,
                   end_threshold: float, end_fraction: float, signal_fraction: float = 0.0, min_size: int,
                   fill_holes: bool, grow_fraction: float = 0.0, grow_ring: int = 14, rescue_sigma: float = 0.0,
                   rescue_min_size: int = 1000, min_slices: int = 1,
                   background_detrend: bool = False) -> np.ndarray:
    """Second stage of :func:`centers_watershed` on the labels of :func:`centers_split` (changed in place):
    end slices trimmed, weak-signal voxels gated, cells the network missed added from the raw signal
    (``rescue_sigma > 0``: :func:`rescue_missed`, regions of at least ``rescue_min_size`` voxels), small
    objects removed, objects grown into their ring where the raw signal is bright for them
    (``grow_fraction > 0``: :func:`refine_boundaries` with ``grow_only``, ring ``grow_ring`` pixels), objects
    spanning fewer than ``min_slices`` z-slices removed (a fragment in one slice of a 3D stack is not a cell),
    holes filled; uint16 labels 1..n."""
    _check_params(
        end_threshold=(end_threshold, _finite(end_threshold), "must be a finite number"),
        end_fraction=(end_fraction, _finite(end_fraction) and 0 <= end_fraction <= 1, "must be in [0, 1]"),
        signal_fraction=_fraction_check(signal_fraction),
        min_size=(min_size, _finite(min_size) and min_size >= 0, "must be >= 0"),
        grow_fraction=_fraction_check(grow_fraction),
        grow_ring=_ring_check(grow_ring),
        rescue_sigma=(rescue_sigma, _finite(rescue_sigma) and rescue_sigma >= 0, "must be >= 0"),
        rescue_min_size=(rescue_min_size, _finite(rescue_min_size) and rescue_min_size >= 1, "must be >= 1"),
        min_slices=_whole_check(min_slices, 1),
    )
    _need_signal("centers_watershed", signal, signal_fraction)
    _need_signal("centers_watershed", signal, grow_fraction, "grow_fraction")
    _need_signal("centers_watershed", signal, rescue_sigma, "rescue_sigma")
    trim_end_slices(labels, _check_prob(prob), end_threshold=float(end_threshold),
                    end_fraction=float(end_fraction))
    if background_detrend and (signal_fraction > 0 or rescue_sigma > 0 or grow_fraction > 0) and labels.any():
        signal = detrend_background(np.asarray(signal), labels > 0, 2 * int(grow_ring))
    elif signal_fraction > 0 or rescue_sigma > 0:
        signal = np.asarray(signal)  # made once for the gate, the rescue and the growth (SignalSlices)
    if signal_fraction > 0:
        signal_gate(labels, signal, float(signal_fraction))
    if rescue_sigma > 0:
        if labels.dtype != np.int32:
            labels = labels.astype(np.int32)
        rescue_missed(labels, signal, sigma=float(rescue_sigma), min_size=int(rescue_min_size))
    if grow_fraction > 0:
        remove_small_objects(labels, int(min_size), in_place=True)
        labels = refine_boundaries(labels, signal, fraction=float(grow_fraction), ring=int(grow_ring),
                                   grow_only=True, in_place=labels.dtype == np.int32)
    return _finish(labels, int(min_size), bool(fill_holes), int(min_slices))


def trim_end_slices(
    labels: np.ndarray, prob: np.ndarray, *, end_threshold: float, end_fraction: float
) -> np.ndarray:
    """Raise the probability threshold on the end slices of each object, in place; returns ``labels``.

    A slice in which an object covers less than ``end_fraction`` of its largest cross-section (its tapering
    top and bottom) keeps only the object's voxels with ``prob > end_threshold``. Why: z-blur makes a cell's
    signal spill into the slices above and below it, and a slice-wise network then draws those small end
    cross-sections too large (on synthetic MDA231 1.5x the true area for sections under 200 px, while the
    large central ones come out slightly too small at the same threshold). ``end_threshold`` <= the
    foreground threshold changes nothing.
    """
    if labels.ndim != 3 or labels.shape != prob.shape:
        raise ValueError(f"labels {labels.shape} and prob {prob.shape} must be (Z, Y, X) arrays of one shape")
    vox = np.flatnonzero(labels)
    if vox.size == 0 or not end_threshold > 0:
        return labels
    p = prob.reshape(-1)[vox]
    low = np.flatnonzero(p <= end_threshold)
    if low.size == 0:
        return labels
    nz, plane = labels.shape[0], labels.shape[1] * labels.shape[2]
    lab = labels.reshape(-1)[vox].astype(np.int64)
    ids, inv = np.unique(lab, return_inverse=True)
    key = inv * nz + vox // plane
    area = np.bincount(key, minlength=ids.size * nz).reshape(ids.size, nz)
    largest = area.max(axis=1)
    k = key[low]
    end = area.reshape(-1)[k] < end_fraction * largest[inv[low]]
    labels[np.unravel_index(vox[low[end]], labels.shape)] = 0
    return labels


def distance_watershed(
    prob: np.ndarray,
    signal: np.ndarray | SignalSlices | None = None,
    *,
    prob_threshold: float = 0.5,
    min_distance: float = 4,
    z_scale: float = 1.0,
    min_size: int = 20,
    fill_holes: bool = False,
    smooth_sigma: float = 1.0,
    boundary_fraction: float = 0.0,
    boundary_ring: int = 4,
) -> np.ndarray:
    """TRIC: watershed of each foreground component from the maxima of its 3D distance transform.

    Distance: Euclidean, sampling ``(z_scale, 1, 1)``, of the component (capped at :data:`DISTANCE_CAP`),
    smoothed with a Gaussian of ``smooth_sigma`` xy pixels (``smooth_sigma / z_scale`` slices; 0 = none).
    Seeds: its local maxima at least ``min_distance`` apart, stack borders included (a nucleus cut by the
    first or last slice is found). Watershed on ``-distance`` in 3D: a nucleus has one label in all slices.
    With ``boundary_fraction > 0`` (``signal`` from :func:`signal_map` required), objects of at least
    ``min_size`` voxels then get their edges redrawn on the raw signal (:func:`refine_boundaries`, ring
    ``boundary_ring`` pixels).
    """
    prob = _check_prob(prob)
    _check_params(
        prob_threshold=(prob_threshold, _finite(prob_threshold), "must be a finite number"),
        min_distance=(min_distance, _finite(min_distance) and min_distance >= 1, "must be >= 1"),
        z_scale=(z_scale, _finite(z_scale) and z_scale > 0, "must be > 0"),
        min_size=(min_size, _finite(min_size) and min_size >= 0, "must be >= 0"),
        smooth_sigma=(smooth_sigma, _finite(smooth_sigma) and smooth_sigma >= 0, "must be >= 0"),
        boundary_fraction=_fraction_check(boundary_fraction),
        boundary_ring=_ring_check(boundary_ring),
    )
    _need_signal("distance_watershed", signal, boundary_fraction, "boundary_fraction")
    sigma = (smooth_sigma / z_scale, smooth_sigma, smooth_sigma)

    def height(comp: np.ndarray, sl: tuple[slice, ...]) -> np.ndarray:
        d = capped_edt(comp, z_scale)
        return ndi.gaussian_filter(d, sigma, mode="nearest") if smooth_sigma > 0 else d

    labels = _split_components(
        prob > prob_threshold,
        height,
        min_distance=float(min_distance),
        z_scale=float(z_scale),
        threshold=0.0,
        min_size=int(min_size),
    )
    if boundary_fraction > 0:
        remove_small_objects(labels, int(min_size), in_place=True)
        refine_boundaries(labels, signal, fraction=float(boundary_fraction), ring=int(boundary_ring),
                          in_place=True)
    return _finish(labels, int(min_size), bool(fill_holes))


def _largest(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest face-connected component of ``mask`` as uint16 0/1, and its size (0 when empty)."""
    lab, n = ndi.label(mask, structure=_FACE)
    if n == 0:
        return np.zeros(mask.shape, np.uint16), 0
    sizes = _label_sizes(lab, n)
    best = int(np.argmax(sizes[1:])) + 1
    return (lab == best).astype(np.uint16), int(sizes[best])


DETREND_SAMPLE = 4
""":func:`detrend_background` fits its surface to every ``DETREND_SAMPLE``-th pixel along y and x."""


def detrend_background(signal: np.ndarray, mask: np.ndarray, margin: int) -> np.ndarray:
    """``signal`` (Z, Y, X) minus, per slice, a quadratic surface in (y, x) fitted to the background: the
    pixels further than ``margin`` pixels (in-plane) from ``mask``; float32, a new array.

    The fit is least squares on a regular sample of those pixels, then once more without the pixels whose
    residual exceeds 3 robust standard deviations (debris, a neighbour). The surface's mean over the slice is
    added back, so levels stay in the signal's range. With fewer than 50 background samples (the same sample
    positions in every slice) the signal is returned as it is, as a copy. Why: an illumination ramp or vignetting makes one side of a large cell's surroundings brighter
    than the other, and an edge level taken from the whole ring is then too high on the dark side and too low
    on the bright side (A549-SIM's randomized family A frames gained; out-of-focus haze around the cell is not
    removed by a surface fitted away from it, docs/generalization.md, "The fourteenth fix").
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 3 or mask.shape != signal.shape:
        raise ValueError(f"signal {signal.shape} and mask {mask.shape} must be (Z, Y, X) arrays of one shape")
    ny, nx = signal.shape[1:]
    yy, xx = np.mgrid[0:ny:DETREND_SAMPLE, 0:nx:DETREND_SAMPLE].astype(np.float64)
    yy, xx = yy / max(ny - 1, 1) - 0.5, xx / max(nx - 1, 1) - 0.5
    design = np.stack([np.ones_like(yy), yy, xx, yy * yy, yy * xx, xx * xx], axis=-1)
    gy, gx = np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx)
    out = np.empty(signal.shape, np.float32)
    near = ndi.binary_dilation(mask.any(axis=0), iterations=int(margin)) if margin > 0 else mask.any(axis=0)
    far = ~near[::DETREND_SAMPLE, ::DETREND_SAMPLE]  # one in-plane sample for every slice
    if np.count_nonzero(far) < 50:
        out[:] = signal
        return out
    a = design[far]
    for z, sl in enumerate(signal):
        vals = sl[::DETREND_SAMPLE, ::DETREND_SAMPLE][far].astype(np.float64)
        coef = np.linalg.lstsq(a, vals, rcond=None)[0]
        res = vals - a @ coef
        mad = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        ok = np.abs(res) <= 3 * mad if mad > 0 else np.ones(res.shape, bool)
        if ok.sum() >= 50:
            coef = np.linalg.lstsq(a[ok], vals[ok], rcond=None)[0]
        _, cy, cx, cyy, cyx, cxx = coef  # the constant term stays: only the slope and curvature go
        surface = (cy * gy + cyy * gy * gy)[:, None] + (cx * gx + cxx * gx * gx)[None, :] + cyx * np.outer(gy, gx)
        out[z] = sl - (surface - surface.mean()).astype(np.float32)
    return out


BOUNDARY_SETTLED = 0.01
"""A repeated edge redraw (``boundary_passes`` > 1) has settled when a pass changes at most this fraction of
the cell's voxels."""


def _settled_redraw(redraw: Callable[[np.ndarray, bool], tuple[np.ndarray, int]], cell: np.ndarray,
                    passes: int) -> tuple[np.ndarray, int]:
    """``redraw(cell, grow_only)`` applied up to ``passes`` times, each to the last result (the first pass both
    ways, later passes only adding voxels), until a pass changes at most :data:`BOUNDARY_SETTLED` of the cell;
    the first pass's result when it has not settled by then.

    Why: one redraw moves an edge by at most its ring, and it takes the background from a ring that lies
    partly inside a cell the network drew too small, so such a cell stays too small. Repeating lets the edge
    walk out to where the signal really falls (family A tuning frames with the network's cell shrunk by 20
    px, a stand-in for a network that finds only part of a textured cell: SEG 0.82 -> 0.96). Later passes only
    grow: allowed to cut, they ate into the dim side of a cell under an illumination ramp pass after pass
    (family B, background gradient x4: 0.746 -> 0.689). Where noise lies above the level all around, the
    cell grows pass after pass without settling: that is the sign to keep the single redraw (a near-pure-noise
    draw of the tuning set, which with 12 passes settled only after spreading through the frame).
    """
    first = prev = cell
    first_size = 0
    for i in range(max(int(passes), 1)):
        out, size = redraw(prev, i > 0)
        if i == 0:
            first, first_size = out, size
        if size == 0:
            break
        if np.count_nonzero(out != prev) <= BOUNDARY_SETTLED * size:
            return out, size
        prev = out
    return first, first_size


def largest_component(
    prob: np.ndarray,
    signal: np.ndarray | SignalSlices | None = None,
    *,
    prob_threshold: float = 0.5,
    fill_holes: bool = True,
    min_size: int = 0,
    signal_fraction: float = 0.0,
    boundary_fraction: float = 0.0,
    boundary_ring: int = 4,
    boundary_top_quantile: float = BOUNDARY_TOP_QUANTILE,
    boundary_passes: int = 1,
    background_detrend: bool = False,
) -> np.ndarray:
    """A549-SIM (one cell per frame): the largest 3D component of the foreground as label 1, holes filled.

    With ``signal_fraction > 0`` (``signal`` from :func:`signal_map` of the raw frame required), the component
    is trimmed by :func:`signal_gate` and its largest remaining component is kept. With ``boundary_fraction >
    0`` (``signal`` required) its edge is then redrawn on the raw signal (:func:`refine_boundaries`, ring
    ``boundary_ring`` pixels, the cell's level the ``boundary_top_quantile`` percentile of its signal: 50 with
    ``boundary_fraction`` 0.5 puts the edge halfway from the surroundings to the cell's median, the half height
    of a blurred step whatever the blur) and the largest component kept again. With ``boundary_passes`` N > 1
    the redraw is repeated on its own result, only growing, until a pass changes at most
    :data:`BOUNDARY_SETTLED` of the cell's voxels; a cell that has not settled after N passes keeps the first
    pass's edge (see :func:`_settled_redraw`). With ``background_detrend`` the gate and the redraw read the
    signal with a smooth background surface fitted away from the network's cell (``2 * boundary_ring`` pixels)
    subtracted (:func:`detrend_background`). An empty foreground, or a largest component below ``min_size``
    voxels, gives all zeros.
    """
    prob = _check_prob(prob)
    _check_params(
        prob_threshold=(prob_threshold, _finite(prob_threshold), "must be a finite number"),
        min_size=(min_size, _finite(min_size) and min_size >= 0, "must be >= 0"),
        signal_fraction=_fraction_check(signal_fraction),
        boundary_fraction=_fraction_check(boundary_fraction),
        boundary_ring=_ring_check(boundary_ring),
        boundary_top_quantile=(boundary_top_quantile, _finite(boundary_top_quantile)
                               and 0 < boundary_top_quantile <= 100, "must be in (0, 100]"),
        boundary_passes=_whole_check(boundary_passes, 1),
    )
    _need_signal("largest_component", signal, signal_fraction)
    _need_signal("largest_component", signal, boundary_fraction, "boundary_fraction")
    out, size = _largest(prob > prob_threshold)
    if size and background_detrend and (signal_fraction > 0 or boundary_fraction > 0):
        signal = detrend_background(np.asarray(signal), out > 0, 2 * int(boundary_ring))
    if size and signal_fraction > 0:
        signal = np.asarray(signal)  # made once for the gate and the edge (SignalSlices)
        out, size = _largest(signal_gate(out, signal, signal_fraction) > 0)
    if size and boundary_fraction > 0:

        def redraw(cell: np.ndarray, grow_only: bool) -> tuple[np.ndarray, int]:
            return _largest(refine_boundaries(cell.astype(np.int32), signal, fraction=float(boundary_fraction),
                                              ring=int(boundary_ring), grow_only=grow_only, in_place=True,
                                              top_quantile=float(boundary_top_quantile)) > 0)

        out, size = _settled_redraw(redraw, out, int(boundary_passes))
    if size == 0 or size < min_size:
        return np.zeros(prob.shape, np.uint16)
    if fill_holes:
        fill_holes_per_label(out, in_place=True)
    return out


_METHODS: Mapping[str, Callable[..., np.ndarray]] = {
    "centers_watershed": centers_watershed,
    "distance_watershed": distance_watershed,
    "largest_component": largest_component,
}


def _keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of ``fn`` and their defaults, in signature order."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


CENTERS_SPLIT_PARAMS = tuple(_keyword_defaults(centers_split))
"""The :func:`centers_watershed` parameters of its first stage, :func:`centers_split`."""
CENTERS_FINISH_PARAMS = tuple(_keyword_defaults(centers_finish))
"""The :func:`centers_watershed` parameters of its second stage, :func:`centers_finish` (``min_size`` is in
both stages)."""


def parameter_names(kind: str) -> tuple[str, ...]:
    """The parameters ``kind`` accepts (its keyword-only arguments)."""
    if kind not in _METHODS:
        raise ValueError(f"unknown post-processing kind {kind!r}; known kinds: {', '.join(_METHODS)}")
    return tuple(_keyword_defaults(_METHODS[kind]))


def check_parameter_names(kind: str, names: Iterable[str]) -> None:
    """ValueError naming the unknown parameter names of ``kind`` and the allowed ones, if there are any."""
    allowed = parameter_names(kind)
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {kind} parameter(s) {unknown}; allowed: {list(allowed)}")


def canonical_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` completed with the defaults of ``kind``, settings that cannot change the result normalised:
    two parameter sets with equal canonical forms give the same labels (``tune`` scores each once).

    Only case so far: end-slice trimming that is off (``end_threshold`` not above ``prob_threshold``) makes
    ``end_fraction`` irrelevant.
    """
    check_parameter_names(kind, params)
    full = {**_keyword_defaults(_METHODS[kind]), **params}
    if kind == "centers_watershed" and not full["end_threshold"] > full["prob_threshold"]:
        full.update(end_threshold=0.0, end_fraction=0.0)
    return full


SIGNAL_PARAMS = ("signal_fraction", "boundary_fraction", "grow_fraction", "rescue_sigma")
"""Parameters that make a post-processing kind read the raw signal (:func:`signal_map`) when above 0."""


def needs_signal(kind: str, params: Mapping[str, Any]) -> bool:
    """True when ``kind`` with ``params`` reads the raw signal (one of its :data:`SIGNAL_PARAMS` is > 0)."""
    names = set(parameter_names(kind)) & set(SIGNAL_PARAMS)
    return any(float(params.get(k, 0) or 0) > 0 for k in names)


def postprocess(
    kind: str,
    prob: np.ndarray,
    params: Mapping[str, Any],
    centers: np.ndarray | None = None,
    signal: np.ndarray | SignalSlices | None = None,
) -> np.ndarray:
    """Run post-processing ``kind`` with ``params`` (missing names take the function's defaults).

    Unknown parameter names raise ValueError naming them and the allowed ones; ``centers`` is required by
    ``centers_watershed`` and rejected by the other kinds; ``signal`` (:func:`signal_map` of the raw frame, or
    its :class:`SignalSlices`) is passed on, and required when :func:`needs_signal`.
    """
    check_parameter_names(kind, params)
    if kind == "centers_watershed":
        if centers is None:
            raise ValueError("centers_watershed needs the cell-centre heatmap: pass centers=")
        return centers_watershed(prob, centers, signal, **params)
    if centers is not None:
        raise ValueError(f"{kind} does not use a cell-centre heatmap, but centers= was given")
    return _METHODS[kind](prob, signal, **params)
