"""The Cell Tracking Challenge SEG measure and PESEG as pure functions on label arrays.

SEG semantics (the official CTC evaluation tool): for every reference object R of a GT image, the result
object S with ``|R ∩ S| > 0.5 |R|`` (strict) is its match and scores ``J = |R ∩ S| / |R ∪ S|``; without
such an S, R scores 0. Background (label 0) is never an object. SEG is the mean of J over *all* reference
objects of all GT images (pooled). PESEG = SEG / N * 1e6 with N the number of trainable parameters.

One image is scored in one pass: the GT foreground pixels are paired with the result labels under them and
counted with one ``np.bincount`` over compressed label pairs (or ``np.unique`` over pair codes when the
dense table would be large), so labels up to 65535 and beyond never allocate a labels x labels matrix.

This module is the bottom of the scorer: :mod:`evaluation.ctc_seg` (folders) and :mod:`evaluation.seg`
(command line) import it, it imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Label values below this are compressed with a bincount look-up table (O(n), no sort); above it np.unique.
_LUT_MAX_LABEL = 1 << 22
# Pixels per chunk when counting result object sizes over a whole image (bounds temporary copies).
_CHUNK = 1 << 22
# Largest dense joint histogram (GT labels x result labels under the GT foreground), in cells (int64).
DEFAULT_MAX_DENSE_CELLS = 1 << 22


@dataclass(frozen=True)
class ObjectMatches:
    """Per reference object of one GT image (all arrays have one entry per object, sorted by GT label).

    ``res_labels`` is the matched result label (0: no match), ``res_sizes`` its size |S| in the image
    (0: no match), ``intersections`` |R ∩ S| of the match (0: no match) and ``jaccard`` J (0.0: no match).
    """

    gt_labels: np.ndarray
    gt_sizes: np.ndarray
    res_labels: np.ndarray
    res_sizes: np.ndarray
    intersections: np.ndarray
    jaccard: np.ndarray

    @property
    def n_objects(self) -> int:
        """The number of reference objects."""
        return int(self.gt_labels.size)


def _check_labels(name: str, arr: np.ndarray) -> None:
    """Raise ValueError unless ``arr`` is an integer label array without negative values."""
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` has dtype {arr.dtype}; label images must have an integer dtype")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and int(arr.min()) < 0:
        raise ValueError(f"`{name}` has negative labels (min {int(arr.min())}); labels must be >= 0")


def _compress(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(labels, inverse, counts)``: the sorted distinct values (int64), the index of each value in
    ``labels`` (intp, same length as ``values``) and how often each label occurs (int64)."""
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.intp), np.zeros(0, np.int64)
    top = int(values.max())
    if top < _LUT_MAX_LABEL:
        v = values if np.can_cast(values.dtype, np.intp) else values.astype(np.intp)
        counts_all = np.bincount(v, minlength=top + 1)
        labels = np.flatnonzero(counts_all)
        lut = np.zeros(top + 1, np.intp)
        lut[labels] = np.arange(labels.size)
        return labels.astype(np.int64), lut[v], counts_all[labels].astype(np.int64)
    labels, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return labels.astype(np.int64), inverse.reshape(-1).astype(np.intp), counts.astype(np.int64)


def _label_sizes(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the number of elements of ``values`` equal to each entry of ``labels`` (int64, same order)."""
    if labels.size == 0:
        return np.zeros(0, np.int64)
    wanted = np.unique(labels)
    small = values.dtype.kind == "u" and values.dtype.itemsize <= 2
    top = int(np.iinfo(values.dtype).max) if small else int(values.max())
    counts = np.zeros(top + 1 if top < _LUT_MAX_LABEL else wanted.size, np.int64)
    # chunks bound the intp copy np.bincount makes of its input (a 13x2454x1693 mask would need 430 MB)
    for start in range(0, values.size, _CHUNK):
        chunk = values[start:start + _CHUNK]
        if top < _LUT_MAX_LABEL:
            counts += np.bincount(chunk.astype(np.intp, copy=False), minlength=top + 1)
        else:  # O(n log k) without sorting the image: position of each pixel's label among the wanted ones
            pos = np.minimum(np.searchsorted(wanted, chunk), wanted.size - 1)
            counts += np.bincount(pos[wanted[pos] == chunk], minlength=wanted.size)
    if top < _LUT_MAX_LABEL:
        counts = counts[wanted]
    return counts[np.searchsorted(wanted, labels)]


def match_objects(
    gt: np.ndarray, res: np.ndarray, *, max_dense_cells: int = DEFAULT_MAX_DENSE_CELLS
) -> ObjectMatches:
    """Match every reference object of ``gt`` to the result object of ``res`` covering more than half of it.

    ``gt`` and ``res`` are integer label images of the same shape (2D or 3D; 0 is background; labels need not
    be consecutive and may exceed 65535). ``max_dense_cells`` bounds the dense joint histogram; above it the
    label pairs are counted sparsely. Returns an :class:`ObjectMatches` with one entry per GT object.
    Raises ValueError for a shape mismatch, a non-integer dtype or negative labels.
    """
    gt = np.asarray(gt)
    res = np.asarray(res)
    if gt.shape != res.shape:
        raise ValueError(f"`res` (shape {res.shape}) must have the same shape as `gt` (shape {gt.shape})")
    _check_labels("gt", gt)
    _check_labels("res", res)
    g = gt.reshape(-1)
    r = res.reshape(-1)
    fg = g != 0
    gt_labels, gi, gt_sizes = _compress(g[fg])
    res_under, ri, _ = _compress(r[fg])
    n_g, n_r = gt_labels.size, res_under.size

    if n_g * n_r <= max_dense_cells:
        joint = np.bincount(gi * n_r + ri, minlength=n_g * n_r)
        pair = np.flatnonzero(joint)
        counts = joint[pair].astype(np.int64)
    else:
        pair, counts = np.unique(gi.astype(np.int64) * n_r + ri, return_counts=True)
        counts = counts.astype(np.int64)
    pi, pj = np.divmod(pair, n_r)
    # strict majority of R, never the background; at most one S per R can satisfy 2|R∩S| > |R|
    keep = (res_under[pj] != 0) & (2 * counts > gt_sizes[pi])
    rows = pi[keep]

    res_labels = np.zeros(n_g, np.int64)
    intersections = np.zeros(n_g, np.int64)
    res_sizes = np.zeros(n_g, np.int64)
    res_labels[rows] = res_under[pj[keep]]
    intersections[rows] = counts[keep]
    res_sizes[rows] = _label_sizes(r, res_labels[rows])

    jaccard = np.zeros(n_g, np.float64)
    union = gt_sizes[rows] + res_sizes[rows] - intersections[rows]
    jaccard[rows] = intersections[rows] / union
    return ObjectMatches(gt_labels, gt_sizes, res_labels, res_sizes, intersections, jaccard)


def pooled_seg(matches: Iterable[ObjectMatches]) -> float:
    """Return SEG: the mean of J over all reference objects of all given images (pooled, not a mean of
    per-image means). Raises ValueError when there is no reference object at all (SEG is undefined)."""
    n = 0
    parts: list[float] = []
    for m in matches:
        parts.extend(m.jaccard.tolist())
        n += m.n_objects
    if n == 0:
        raise ValueError("no reference objects: SEG is undefined")
    return math.fsum(parts) / n


def seg_score(gt: np.ndarray, res: np.ndarray) -> float:
    """Return SEG of one image pair: mean J over the reference objects of ``gt`` (see :func:`match_objects`).
    Raises ValueError when ``gt`` has no object."""
    return pooled_seg([match_objects(gt, res)])


def peseg(seg: float, n_params: int) -> float:
    """Return PESEG = SEG / N * 1e6 (the paper's parameter efficiency), N the number of trainable parameters.
    Raises ValueError unless 0 <= seg <= 1 and N is a positive integer."""
    if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer)) or n_params <= 0:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}")
    if not (math.isfinite(seg) and 0.0 <= seg <= 1.0):
        raise ValueError(f"seg must be in [0, 1], got {seg!r}")
    return seg / int(n_params) * 1e6
