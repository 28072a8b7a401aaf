"""Post-processing on constructed volumes: watershed splits, border nuclei, largest component, labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

import efficientcellseg.postprocess as pp
from efficientcellseg import cpu_threads
from efficientcellseg.datasets import DATASETS
from efficientcellseg.errors import CTCInputError
from efficientcellseg.postprocess import (
    _per_label_quantile,
    _per_label_quantile_parts,
    _ring_pixels,
    capped_edt,
    centers_watershed,
    distance_watershed,
    fill_holes_per_label,
    find_seeds,
    largest_component,
    parameter_names,
    needs_signal,
    postprocess,
    refine_boundaries,
    remove_small_objects,
    rescue_missed,
    SignalSlices,
    signal_gate,
    signal_map,
    to_uint16_labels,
    trim_end_slices,
)


def ellipsoid(shape: tuple[int, int, int], center: tuple[float, float, float],
              radii: tuple[float, float, float]) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c, r = center, radii
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0


def as_prob(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 0.9, 0.1).astype(np.float32)


def assert_consecutive_uint16(labels: np.ndarray, n: int) -> None:
    assert labels.dtype == np.uint16
    assert np.array_equal(np.unique(labels), np.arange(n + 1))


# ---------------------------------------------------------------------------------------------- distance
def test_two_touching_spheres_get_two_labels() -> None:
    shape = (26, 44, 64)
    a = ellipsoid(shape, (13, 22, 20), (10, 10, 10))
    b = ellipsoid(shape, (13, 22, 36), (7, 7, 7))
    assert ndi.label(a | b)[1] == 1  # they touch: one connected component
    lab = distance_watershed(as_prob(a | b), min_size=20)
    assert_consecutive_uint16(lab, 2)
    assert lab[13, 22, 20] != lab[13, 22, 36]
    for m, o in ((a, b), (b, a)):  # each sphere (apart from the overlap) is one label
        assert np.unique(lab[m & ~o]).size == 1


def test_sphere_across_five_slices_is_one_label_in_all() -> None:
    shape = (9, 64, 64)
    m = ellipsoid(shape, (4, 32, 32), (2.4, 14, 14))
    assert set(np.flatnonzero(m.any(axis=(1, 2)))) == {2, 3, 4, 5, 6}
    lab = distance_watershed(as_prob(m))
    assert_consecutive_uint16(lab, 1)
    assert np.array_equal(lab > 0, m)


def test_nuclei_touching_first_and_last_slice_are_found() -> None:
    shape = (13, 60, 90)
    top = ellipsoid(shape, (0, 20, 20), (4, 7, 7))
    bottom = ellipsoid(shape, (12, 30, 60), (4, 7, 7))
    middle = ellipsoid(shape, (6, 40, 30), (4, 7, 7))
    lab = distance_watershed(as_prob(top | bottom | middle))
    assert_consecutive_uint16(lab, 3)
    for m in (top, bottom, middle):
        assert np.unique(lab[m]).size == 1 and lab[m].min() > 0


def test_touching_nuclei_at_the_stack_border_are_split() -> None:
    shape = (13, 40, 60)
    a = ellipsoid(shape, (0, 20, 20), (5, 8, 8))
    b = ellipsoid(shape, (0, 20, 34), (5, 8, 8))
    lab = distance_watershed(as_prob(a | b))
    assert_consecutive_uint16(lab, 2)
    assert lab[0, 20, 20] != lab[0, 20, 34]


def test_distance_watershed_removes_small_and_keeps_separate_objects() -> None:
    shape = (10, 50, 50)
    big = ellipsoid(shape, (5, 15, 15), (4, 6, 6))
    small = ellipsoid(shape, (5, 35, 35), (1, 1.5, 1.5))
    assert 5 <= small.sum() < 20 <= big.sum()
    lab = distance_watershed(as_prob(big | small), min_size=20)
    assert_consecutive_uint16(lab, 1)
    assert not lab[small].any() and lab[big].all()
    lab0 = distance_watershed(as_prob(big | small), min_size=0)
    assert_consecutive_uint16(lab0, 2)


def test_empty_probability_gives_zeros() -> None:
    prob = np.zeros((5, 20, 30), np.float32)
    for lab in (distance_watershed(prob), largest_component(prob), centers_watershed(prob, prob)):
        assert lab.dtype == np.uint16 and lab.shape == prob.shape and not lab.any()


# ---------------------------------------------------------------------------------------------- centres
def _two_elongated_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A wide and a narrow elongated cell touching along y, their centre heatmap, and a separate blob."""
    shape = (8, 60, 120)
    a = ellipsoid(shape, (4, 22, 60), (3, 9, 40))
    b = ellipsoid(shape, (4, 36, 60), (3, 5, 30))
    other = ellipsoid(shape, (4, 52, 20), (2, 5, 12))  # separate, no centre predicted
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centers = np.zeros(shape)
    for cy, sy, sx, amp in ((22, 24, 400, 1.0), (36, 8, 200, 0.6)):
        g = amp * np.exp(-((zz - 4.0) ** 2 / 4 + (yy - cy) ** 2 / sy + (xx - 60.0) ** 2 / sx))
        centers = np.maximum(centers, g)
    return a, b, other, centers.astype(np.float32)


def test_centers_watershed_splits_touching_cells_and_keeps_markerless_component() -> None:
    a, b, other, centers = _two_elongated_cells()
    assert ndi.label(a | b)[1] == 1
    lab = centers_watershed(as_prob(a | b | other), centers, min_size=50)
    assert_consecutive_uint16(lab, 3)
    la, lb, lo = (np.bincount(lab[m]).argmax() for m in (a, b, other))
    assert len({la, lb, lo}) == 3 and 0 not in (la, lb, lo)
    assert (lab[a] == la).mean() > 0.95 and (lab[b] == lb).mean() > 0.95
    assert np.array_equal(lab == lo, other)


def test_centers_closer_than_min_distance_give_one_seed() -> None:
    a, b, _, _ = _two_elongated_cells()
    centers = np.zeros(a.shape, np.float32)
    centers[4, 30, 55] = centers[4, 30, 62] = 0.8  # equal peaks 7 px apart (< 10)
    lab = centers_watershed(as_prob(a | b), centers, min_size=50)
    assert_consecutive_uint16(lab, 1)
    lab = centers_watershed(as_prob(a | b), centers, center_min_distance=5, min_size=50)
    assert_consecutive_uint16(lab, 2)


@pytest.mark.parametrize(("length", "n_expected"), [(3, 1), (4, 2)])
def test_seeds_exactly_min_distance_apart(length: int, n_expected: int) -> None:
    prob = np.zeros((3, 5, 8), np.float32)
    prob[1, 2, :length] = 1.0  # a line of voxels
    centers = np.zeros_like(prob)
    centers[1, 2, 0] = 0.9
    centers[1, 2, length - 1] = 0.8  # length - 1 px apart; min distance 2
    lab = centers_watershed(prob, centers, center_min_distance=2, z_scale=1.0, min_size=0)
    assert_consecutive_uint16(lab, n_expected)


def test_centers_watershed_min_size_and_shape_check() -> None:
    a, b, other, centers = _two_elongated_cells()
    lab = centers_watershed(as_prob(a | b | other), centers, min_size=int(other.sum()) + 1)
    assert_consecutive_uint16(lab, 2)
    assert not lab[other].any()
    with pytest.raises(ValueError, match=r"centers \(shape \(8, 60, 119\)\) must have the same shape"):
        centers_watershed(as_prob(a), centers[..., 1:])


def _tapered_object() -> tuple[np.ndarray, np.ndarray]:
    """One object over 3 slices: 10x10 = 100 px in the middle, 5x5 = 25 px above and below; a second object
    (one slice, 4 px) that is its own largest cross-section. Probabilities: 0.99 in the middle rows and
    columns 2-3 of every 5x5 end section (10 px each), 0.8 elsewhere inside, 0 outside."""
    lab = np.zeros((3, 12, 20), np.int32)
    prob = np.zeros(lab.shape, np.float32)
    lab[1, 1:11, 1:11] = 1
    lab[0, 3:8, 3:8] = lab[2, 3:8, 3:8] = 1
    lab[1, 1:3, 15:17] = 2
    prob[lab > 0] = 0.8
    prob[0, 3:8, 5:7] = prob[2, 3:8, 5:7] = 0.99
    return lab, prob


def test_trim_end_slices_hand_computed() -> None:
    lab, prob = _tapered_object()
    out = trim_end_slices(lab.copy(), prob, end_threshold=0.9, end_fraction=0.5)
    # end sections: 25 < 0.5 * 100 -> only the 0.99 voxels stay (10 each); the middle (100) and the one-slice
    # object (its own largest, 4 px) keep everything although their prob 0.8 is below 0.9
    assert [int((out[z] == 1).sum()) for z in range(3)] == [10, 100, 10]
    assert int((out == 2).sum()) == 4
    assert np.array_equal(out[0, 3:8, 5:7], lab[0, 3:8, 5:7])
    # end_fraction 0.25: 25 px is not < 0.25 * 100 -> nothing trimmed; a threshold below 0.8 trims nothing
    assert np.array_equal(trim_end_slices(lab.copy(), prob, end_threshold=0.9, end_fraction=0.25), lab)
    assert np.array_equal(trim_end_slices(lab.copy(), prob, end_threshold=0.75, end_fraction=0.5), lab)
    assert np.array_equal(trim_end_slices(lab.copy(), prob, end_threshold=0.0, end_fraction=1.0), lab)
    # in place, also through a non-contiguous view
    big = np.zeros((3, 12, 40), np.int32)
    big[:, :, ::2] = lab
    view = big[:, :, ::2]
    assert trim_end_slices(view, prob, end_threshold=0.9, end_fraction=0.5) is view
    assert np.array_equal(big[:, :, ::2], out)
    with pytest.raises(ValueError, match="one shape"):
        trim_end_slices(lab, prob[:2], end_threshold=0.9, end_fraction=0.5)


def test_centers_watershed_end_slices_equal_the_two_stages() -> None:
    lab, prob = _tapered_object()
    centers = np.zeros_like(prob)
    kw = dict(prob_threshold=0.5, center_threshold=0.3, center_min_distance=10, z_scale=4.8, min_size=0)
    full = centers_watershed(prob, centers, end_threshold=0.9, end_fraction=0.5, fill_holes=False, **kw)
    assert [int((full[z] > 0).sum()) for z in range(3)] == [10, 104, 10]
    split = pp.centers_split(prob, centers, **kw)
    staged = pp.centers_finish(split, prob, end_threshold=0.9, end_fraction=0.5, min_size=0, fill_holes=False)
    assert np.array_equal(full, staged)
    off = centers_watershed(prob, centers, fill_holes=False, **kw)  # default end_threshold 0: unchanged
    # the two stages take every parameter of centers_watershed between them
    stages = set(pp.CENTERS_SPLIT_PARAMS) | set(pp.CENTERS_FINISH_PARAMS)
    assert stages == set(parameter_names("centers_watershed"))
    # trimming off (end_threshold not above prob_threshold): end_fraction does not matter
    assert pp.canonical_params("centers_watershed", {"end_threshold": 0.5, "end_fraction": 0.3}) == \
        pp.canonical_params("centers_watershed", {"end_fraction": 0.9})
    assert pp.canonical_params("centers_watershed", {"end_threshold": 0.9})["end_fraction"] == 0.8
    assert np.array_equal(off > 0, lab > 0)
    with pytest.raises(ValueError, match=r"end_fraction=1.5 \(must be in \[0, 1\]\)"):
        centers_watershed(prob, centers, end_fraction=1.5)


def test_find_seeds_anisotropy_borders_and_plateaus() -> None:
    h = np.zeros((12, 30, 30), np.float32)
    mask = np.ones(h.shape, bool)
    h[0, 5, 5] = 1.0  # on the first slice
    h[3, 5, 5] = 0.9  # 3 slices below: 14.4 um apart with z_scale 4.8 -> separate seed
    h[11, 20, 20:24] = 0.7  # plateau on the last slice -> one seed
    seeds, k = find_seeds(h, mask, min_distance=10, z_scale=4.8, threshold=0.3)
    assert k == 3
    assert seeds[0, 5, 5] != seeds[3, 5, 5] and len(set(seeds[11, 20, 20:24])) == 1
    seeds, k = find_seeds(h, mask, min_distance=10, z_scale=1.0, threshold=0.3)
    assert k == 2 and seeds[3, 5, 5] == 0  # isotropic: within 10 of the higher one
    assert find_seeds(h, mask, min_distance=10, z_scale=4.8, threshold=0.95)[1] == 1
    assert find_seeds(h, np.zeros_like(mask), min_distance=10, z_scale=4.8, threshold=0.0)[1] == 0
    tie = np.zeros((1, 5, 30), np.float32)
    tie[0, 2, 3] = tie[0, 2, 13] = 1.0  # equally high, exactly min_distance apart: both are seeds
    assert find_seeds(tie, tie >= 0, min_distance=10, z_scale=1.0, threshold=0.5)[1] == 2
    tie[0, 2, 13], tie[0, 2, 12] = 0.0, 1.0  # 9 apart: the first one only
    seeds, k = find_seeds(tie, tie >= 0, min_distance=10, z_scale=1.0, threshold=0.5)
    assert k == 1 and seeds[0, 2, 3] == 1


# ---------------------------------------------------------------------------------------------- largest
def test_largest_component_picks_biggest_and_fills_hole() -> None:
    shape = (10, 50, 50)
    big = ellipsoid(shape, (5, 20, 20), (4, 12, 12))
    hole = ellipsoid(shape, (5, 20, 20), (2, 3, 3))
    small = ellipsoid(shape, (5, 42, 42), (3, 4, 4))
    lab = largest_component(as_prob((big & ~hole) | small))
    assert lab.dtype == np.uint16
    assert np.array_equal(lab, big.astype(np.uint16))
    no_fill = largest_component(as_prob((big & ~hole) | small), fill_holes=False)
    assert np.array_equal(no_fill, (big & ~hole).astype(np.uint16))
    assert not largest_component(as_prob(big), min_size=int(big.sum()) + 1).any()


def test_largest_component_redraws_its_edge_on_the_raw_signal() -> None:
    """A549-SIM's kind with ``boundary_fraction``: a probability drawn 3 px too wide around a blurred cell
    comes back close to the cell; the signal is required."""
    truth, signal = _blurred_discs(2.0)
    cell = truth == 2
    prob = as_prob(ndi.binary_dilation(cell, structure=np.ones((1, 7, 7), bool)))
    plain = largest_component(prob)
    refined = postprocess("largest_component", prob, {"boundary_fraction": 0.5, "boundary_ring": 4},
                          signal=signal)
    assert refined.dtype == np.uint16 and refined.max() == 1
    assert _iou(refined > 0, cell) > 0.85 > _iou(plain > 0, cell) + 0.1
    with pytest.raises(ValueError, match="boundary_fraction > 0 needs the raw signal"):
        largest_component(prob, boundary_fraction=0.5)
    assert needs_signal("largest_component", {"boundary_fraction": 0.3})


def blurred_cell(shape: tuple[int, int, int] = (16, 40, 40)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cell in slices 5..10 (true mask), its raw signal with a dim z-blurred copy in every other slice, and
    a probability that (like a per-slice-normalised network) marks the cell's outline in every slice."""
    z = np.arange(shape[0])[:, None, None]
    disc = ellipsoid((1,) + shape[1:], (0, 20, 20), (1, 10, 10))[0]
    truth = (z >= 5) & (z <= 10) & disc
    level = np.where((z >= 5) & (z <= 10), 1000.0, 1000.0 * 0.35 ** np.minimum(np.abs(z - 5), np.abs(z - 10)))
    raw = (100 + level * disc).astype(np.float32)
    return truth, raw, as_prob(np.broadcast_to(disc, shape))


def test_signal_gate_cuts_the_blurred_copies_above_and_below_a_cell() -> None:
    truth, raw, prob = blurred_cell()
    signal = signal_map(raw)
    assert signal.dtype == np.float32 and signal.shape == raw.shape
    assert signal[:, 0, 0].max() == pytest.approx(100, abs=1e-3)  # in-plane only: background stays flat
    assert largest_component(prob).sum() == prob.shape[0] * truth[7].sum()  # without the gate: every slice
    gated = largest_component(prob, signal, signal_fraction=0.4)
    assert gated.dtype == np.uint16
    z_kept = np.flatnonzero(gated.any(axis=(1, 2)))
    assert z_kept.tolist() == list(range(5, 11))  # the 35%-bright neighbours (z 4, 11) go at 0.4
    inter = np.logical_and(gated > 0, truth).sum()
    assert inter / np.logical_or(gated > 0, truth).sum() > 0.9
    keep_more = largest_component(prob, signal, signal_fraction=0.2)  # 12% bright (z 3, 12) goes, 35% stays
    assert np.flatnonzero(keep_more.any(axis=(1, 2))).tolist() == list(range(4, 12))
    assert np.array_equal(largest_component(prob, signal, signal_fraction=0.0), largest_component(prob))


def test_signal_gate_is_relative_to_each_object() -> None:
    labels = np.zeros((1, 10, 30), np.int32)
    labels[0, 2:8, 2:12] = 1
    labels[0, 2:8, 16:26] = 2
    signal = np.full(labels.shape, 10.0, np.float32)
    signal[labels == 1] = 1000.0
    signal[labels == 2] = 100.0  # a dim object: gated against its own bright level, not the other's
    signal[0, 2, 2:12] = 200.0   # a weak edge row of object 1
    out = signal_gate(labels.copy(), signal, 0.5)
    assert (out == 2).sum() == (labels == 2).sum()
    assert (out == 1).sum() == (labels == 1).sum() - 10 and not out[0, 2, 2:12].any()
    assert np.array_equal(signal_gate(labels.copy(), signal, 0.0), labels)


def test_signal_gate_parameter_checks() -> None:
    truth, raw, prob = blurred_cell()
    with pytest.raises(ValueError, match="needs the raw signal: pass signal="):
        largest_component(prob, signal_fraction=0.4)
    with pytest.raises(ValueError, match=r"signal_fraction=1.5 \(must be in \[0, 1\)\)"):
        largest_component(prob, signal_map(raw), signal_fraction=1.5)
    plain = postprocess("distance_watershed", prob, {}, signal=signal_map(raw))  # read only when asked
    assert np.array_equal(plain, distance_watershed(prob))
    via_dispatch = postprocess("largest_component", prob, {"signal_fraction": 0.4}, signal=signal_map(raw))
    assert np.array_equal(via_dispatch, largest_component(prob, signal_map(raw), signal_fraction=0.4))
    with pytest.raises(ValueError, match=r"must be \(Z, Y, X\)"):
        signal_map(raw[0])


def _blurred_discs(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Three true discs (5 slices, radius 8 px) of different brightness on a background of 50, the signal
    blurred in-plane by ``sigma`` (a point spread function) and then by :func:`signal_map`."""
    truth = np.zeros((5, 40, 100), np.int32)
    raw = np.full(truth.shape, 50.0, np.float32)
    for i, (cx, level) in enumerate(((20, 1000.0), (50, 300.0), (80, 120.0)), start=1):
        disc = ellipsoid((1, 40, 100), (0, 20, cx), (1, 8, 8))[0]
        truth[:, disc] = i
        raw[:, disc] += level
    raw = ndi.gaussian_filter(raw, (0, sigma, sigma))
    return truth, signal_map(raw)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_refine_boundaries_moves_edges_too_large_and_too_small_to_the_objects_own_half_contrast(sigma) -> None:
    """Whatever the blur, each object drawn too large (radius 11, ring 4) or too small (radius 6, ring 8)
    comes back close to its true disc (radius 8), each relative to its own brightness (a 1000, a 300 and a
    120 grey-level object). An object drawn too small needs a ring that reaches past its blurred edge into
    the background: with ring 4 the radius-6 disc's ring is mostly blurred cell, and it grows only part of
    the way (IoU 0.74).
    """
    truth, signal = _blurred_discs(sigma)
    for radius, ring in ((11, 4), (6, 8)):
        drawn = np.zeros_like(truth)
        for i, cx in enumerate((20, 50, 80), start=1):
            drawn[:, ellipsoid((1, 40, 100), (0, 20, cx), (1, radius, radius))[0]] = i
        out = refine_boundaries(drawn, signal, fraction=0.5, ring=ring)
        assert out.dtype == np.int32
        for i in (1, 2, 3):
            before, after = _iou(drawn == i, truth == i), _iou(out == i, truth == i)
            assert after > 0.85 and after > before + 0.1, (radius, i, before, after)
    assert np.array_equal(refine_boundaries(truth, signal, fraction=0.0, ring=4), truth)


def test_refine_boundaries_never_changes_owners_and_keeps_objects_without_contrast() -> None:
    """Two touching objects stay apart along their shared edge; an object whose signal is flat is kept as
    drawn; an object only grows within its ring."""
    labels = np.zeros((2, 30, 60), np.int32)
    labels[:, 10:20, 10:20] = 1
    labels[:, 10:20, 20:30] = 2
    labels[:, 10:20, 40:50] = 3
    signal = np.full(labels.shape, 10.0, np.float32)
    signal[:, 8:22, 8:32] = 500.0   # objects 1 and 2 are 2 px too small on their outer sides
    signal[:, 10:20, 40:50] = 10.0  # object 3: no contrast at all
    out = refine_boundaries(labels, signal, fraction=0.5, ring=4)
    assert (out[:, 8:22, 8:20] == 1).all() and (out[:, 8:22, 20:32] == 2).all()
    assert not out[:, :, 32:40].any() and not out[:, :8].any()
    assert np.array_equal(out == 3, labels == 3)
    same = labels.copy()
    assert refine_boundaries(same, signal, fraction=0.5, ring=4, in_place=True) is same
    assert np.array_equal(same, out) and not np.array_equal(labels, out)  # the input is left as it was
    with pytest.raises(ValueError, match="in place needs int32 labels"):
        refine_boundaries(labels.astype(np.uint16), signal, fraction=0.5, ring=4, in_place=True)
    with pytest.raises(ValueError, match="must be \\(Z, Y, X\\) arrays of one shape"):
        refine_boundaries(labels[0], signal[0], fraction=0.5, ring=4)


def test_signal_slices_give_the_signal_map_one_slice_at_a_time_and_the_same_labels() -> None:
    """SignalSlices (what inference passes, so a large frame needs no float32 map) read by every signal-using
    kind gives the labels of the whole map; it hands out single slices only."""
    rng = np.random.default_rng(3)
    truth, _ = _blurred_discs(2.0)
    raw = (ndi.gaussian_filter((truth > 0) * 800.0, (0, 2, 2)) + rng.normal(100, 20, truth.shape)).astype(np.uint16)
    full, lazy = signal_map(raw), SignalSlices(raw)
    assert lazy.shape == full.shape and len(lazy) == len(full)
    assert np.array_equal(lazy[2], full[2]) and np.array_equal(np.asarray(lazy), full)
    with pytest.raises(TypeError, match="one slice"):
        lazy[1:3]
    wide = as_prob(ndi.binary_dilation(truth > 0, structure=np.ones((1, 7, 7), bool)))
    centers = np.zeros(wide.shape, np.float32)
    cases = [("distance_watershed", {"min_distance": 6, "z_scale": 1.0, "min_size": 20, "boundary_fraction": 0.5}),
             ("largest_component", {"signal_fraction": 0.3, "boundary_fraction": 0.5}),
             ("centers_watershed", {"center_threshold": 0.5, "z_scale": 1.0, "min_size": 20, "signal_fraction": 0.3,
                                    "grow_fraction": 0.5, "grow_ring": 8})]
    for kind, params in cases:
        c = centers if kind == "centers_watershed" else None
        a = postprocess(kind, wide, params, centers=c, signal=full)
        b = postprocess(kind, wide, params, centers=c, signal=lazy)
        assert a.any() and np.array_equal(a, b), kind


@pytest.mark.parametrize("q", [0.0, 10.0, 50.0, 90.0, 100.0])
def test_per_label_quantile_is_numpys_lower_percentile_of_each_label(q) -> None:
    """The sort-key percentile equals ``np.percentile(..., method="lower")`` per label, negative values, -0.0
    and infinities included; labels without values (and 0) are NaN."""
    rng = np.random.default_rng(5)
    lab = rng.integers(1, 40, 5000).astype(np.int32)
    lab[lab == 7] = 8  # label 7 has no values
    val = rng.normal(0, 1000, lab.size).astype(np.float32)
    val[:6] = [-0.0, 0.0, np.inf, -np.inf, 1e-30, -1e-30]
    out = _per_label_quantile(lab, val, 40, q)
    assert np.isnan(out[0]) and np.isnan(out[7])
    for i in set(range(1, 40)) - {7}:
        assert out[i] == np.percentile(val[lab == i], q, method="lower"), i


def test_per_label_quantile_of_parts_is_that_of_the_whole() -> None:
    """Keys written part by part (refine_boundaries passes one part per slice, without concatenating) give the
    same percentiles as the concatenated arrays, empty parts included; parts of unequal length are refused."""
    rng = np.random.default_rng(8)
    lab = rng.integers(1, 25, 3000).astype(np.int32)
    val = rng.normal(0, 50, lab.size).astype(np.float32)
    cuts = [0, 0, 400, 401, 1700, 3000]
    parts = [(lab[a:b], val[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    for q in (0.0, 35.0, 90.0):
        np.testing.assert_array_equal(_per_label_quantile_parts(parts, 30, q), _per_label_quantile(lab, val, 30, q))
    with pytest.raises(ValueError, match="must have one length"):
        _per_label_quantile_parts([(lab[:5], val[:4])], 30, 50.0)


@pytest.mark.parametrize("tile", [512, 13, 5])
def test_ring_pixels_are_those_of_expand_labels_on_the_whole_slice(monkeypatch: pytest.MonkeyPatch,
                                                                    tile: int) -> None:
    """The bounding-box and tiling shortcuts give exactly the pixels and owners of expand_labels on the whole
    slice, objects touching the slice border and touching each other included (many equally near owners:
    small tiles cut through them)."""
    monkeypatch.setattr(pp, "_RING_TILE", tile)
    rng = np.random.default_rng(11)
    for trial in range(20):
        sl = np.zeros((60, 80), np.int32)
        for i in range(1, rng.integers(1, 12 if trial % 2 else 6) + 1):
            y, x = rng.integers(0, 60), rng.integers(0, 80)
            sl[max(y - 4, 0):y + 4, max(x - 3, 0):x + 5] = i
        for ring in (0, 1, 4, 9):
            grown = expand_labels(sl, ring) if ring else sl
            want = np.flatnonzero((grown > 0) & (sl == 0))
            pos, lab = _ring_pixels(sl, ring)
            assert np.array_equal(pos, want) and np.array_equal(lab, grown.reshape(-1)[want]), (trial, ring)
    assert _ring_pixels(np.zeros((5, 5), np.int32), 3)[0].size == 0


def test_ring_pixels_of_single_pixel_objects_keep_expand_labels_owners_across_tiles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-pixel objects at random places: many background pixels are equally near to two or more of
    them, and the tiled result still names the owner expand_labels names."""
    rng = np.random.default_rng(2)
    for trial in range(40):
        sl = np.zeros((50, 70), np.int32)
        k = int(rng.integers(2, 40))
        sl[rng.integers(0, 50, k), rng.integers(0, 70, k)] = np.arange(1, k + 1)
        for ring, tile in ((1, 4), (3, 7), (6, 16)):
            monkeypatch.setattr(pp, "_RING_TILE", tile)
            grown = expand_labels(sl, ring)
            want = np.flatnonzero((grown > 0) & (sl == 0))
            pos, lab = _ring_pixels(sl, ring)
            assert np.array_equal(pos, want) and np.array_equal(lab, grown.reshape(-1)[want]), (trial, ring)


def test_refine_boundaries_same_result_with_gaps_in_the_label_numbering() -> None:
    """Label ids without voxels (left by removing small objects) change nothing, and an object without a ring
    (enclosed by another) still takes its background from outside every ring."""
    truth, signal = _blurred_discs(2.0)
    drawn = np.zeros_like(truth)
    for i, cx in enumerate((20, 50, 80), start=1):
        drawn[:, ellipsoid((1, 40, 100), (0, 20, cx), (1, 11, 11))[0]] = i
    gapped = np.where(drawn > 0, drawn * 3 + 1, 0).astype(np.int32)  # ids 4, 7, 10
    out = refine_boundaries(drawn, signal, fraction=0.5, ring=4)
    out_gapped = refine_boundaries(gapped, signal, fraction=0.5, ring=4)
    assert np.array_equal(np.where(out > 0, out * 3 + 1, 0), out_gapped)
    enclosed = np.zeros((1, 30, 30), np.int32)
    enclosed[0, 5:25, 5:25] = 1
    enclosed[0, 12:18, 12:18] = 2  # no ring pixel: every neighbour belongs to object 1
    sig = np.full(enclosed.shape, 10.0, np.float32)
    sig[0, 11:19, 11:19] = 500.0   # object 2 is 1 px too small on every side
    sig[0, 5:25, 5:25][sig[0, 5:25, 5:25] < 500] = 200.0
    sig[0, 12:18, 12] = 100.0      # a dim column inside object 2: below its level from the outside (10 -> 255)
    res = refine_boundaries(enclosed, sig, fraction=0.5, ring=2)
    expect = enclosed == 2
    expect[0, 12:18, 12] = False
    assert np.array_equal(res == 2, expect)  # cannot grow (no ring), loses only its dim column
    assert np.array_equal(res == 1, enclosed == 1)


def test_refine_boundaries_grow_only_adds_ring_voxels_and_keeps_every_own_voxel() -> None:
    """``grow_only`` (MDA231): a disc drawn too small grows to its true edge, one drawn too large keeps all
    its voxels; centers_watershed with ``grow_fraction`` needs the signal and grows a too-small cell."""
    truth, signal = _blurred_discs(1.0)
    small = np.zeros_like(truth)
    large = np.zeros_like(truth)
    for i, cx in enumerate((20, 50, 80), start=1):
        small[:, ellipsoid((1, 40, 100), (0, 20, cx), (1, 6, 6))[0]] = i
        large[:, ellipsoid((1, 40, 100), (0, 20, cx), (1, 11, 11))[0]] = i
    grown = refine_boundaries(small, signal, fraction=0.5, ring=8, grow_only=True)
    assert all(_iou(grown == i, truth == i) > 0.85 for i in (1, 2, 3))
    assert np.array_equal(grown[small > 0], small[small > 0])
    assert np.array_equal(refine_boundaries(large, signal, fraction=0.5, ring=8, grow_only=True), large)
    prob = as_prob(small > 0)
    centers = np.zeros(prob.shape, np.float32)
    params = {"prob_threshold": 0.5, "center_threshold": 0.5, "z_scale": 1.0, "min_size": 20}
    plain = centers_watershed(prob, centers, **params)
    out = centers_watershed(prob, centers, signal, grow_fraction=0.5, grow_ring=8, **params)
    assert out.max() == plain.max() == 3
    assert _iou(out > 0, truth > 0) > 0.85 > _iou(plain > 0, truth > 0) + 0.1
    with pytest.raises(ValueError, match="grow_fraction > 0 needs the raw signal"):
        centers_watershed(prob, centers, grow_fraction=0.5, **params)
    assert needs_signal("centers_watershed", {"grow_fraction": 0.4})


def test_distance_watershed_refines_boundaries_on_the_raw_signal() -> None:
    """TRIC's kind with ``boundary_fraction``: a probability drawn 3 px too wide around three blurred discs
    gives objects close to the discs; the signal is required; ``needs_signal`` says when it is read."""
    truth, signal = _blurred_discs(2.0)
    wide = ndi.binary_dilation(truth > 0, structure=np.ones((1, 7, 7), bool))
    prob = as_prob(wide)
    params = {"prob_threshold": 0.5, "min_distance": 6, "z_scale": 1.0, "min_size": 20}
    plain = distance_watershed(prob, **params)
    refined = postprocess("distance_watershed", prob, {**params, "boundary_fraction": 0.5}, signal=signal)
    assert refined.dtype == np.uint16 and refined.max() == plain.max() == 3
    assert _iou(refined > 0, truth > 0) > 0.85 > _iou(plain > 0, truth > 0) + 0.1
    with pytest.raises(ValueError, match="boundary_fraction > 0 needs the raw signal"):
        distance_watershed(prob, boundary_fraction=0.5)
    with pytest.raises(ValueError, match="boundary_ring=2.5"):
        distance_watershed(prob, signal, boundary_fraction=0.5, boundary_ring=2.5)
    assert needs_signal("distance_watershed", {"boundary_fraction": 0.3})
    assert not needs_signal("distance_watershed", {"boundary_fraction": 0.0, "min_size": 100})
    assert needs_signal("largest_component", {"signal_fraction": 0.4})


def test_hole_opened_by_first_slice_is_filled_per_slice() -> None:
    m = np.zeros((3, 20, 20), bool)
    m[:2, 4:16, 4:16] = True
    m[0, 8:12, 8:12] = False  # a hole in slice 0, open towards z < 0
    lab = fill_holes_per_label(m.astype(np.int32))
    assert lab[0, 8:12, 8:12].all()
    lab3d = fill_holes_per_label(m.astype(np.int32), per_slice=False)
    assert not lab3d[0, 8:12, 8:12].any()


def test_fill_holes_keeps_other_labels() -> None:
    lab = np.zeros((1, 12, 12), np.int32)
    lab[0, 2:10, 2:10] = 1
    lab[0, 4:8, 4:8] = 0
    lab[0, 5:7, 5:7] = 2  # another object inside the hole
    out = fill_holes_per_label(lab)
    assert (out[0, 4:8, 4:8][lab[0, 4:8, 4:8] == 0] == 1).all()
    assert (out[0, 5:7, 5:7] == 2).all()
    assert lab[0, 4, 4] == 0  # the input is not modified


# ---------------------------------------------------------------------------------------------- helpers
def test_remove_small_objects() -> None:
    lab = np.zeros((2, 10, 10), np.int32)
    lab[0, :3, :3] = 4  # 9 voxels
    lab[1, 5:, 5:] = 7  # 25 voxels
    lab[0, 9, 9] = 2  # 1 voxel
    out = remove_small_objects(lab, 10)
    assert set(np.unique(out)) == {0, 7}
    assert set(np.unique(remove_small_objects(lab, 9))) == {0, 4, 7}
    assert set(np.unique(lab)) == {0, 2, 4, 7}


def test_remove_small_objects_in_place_on_a_strided_view_and_in_1d_and_2d() -> None:
    base = np.zeros((3, 12, 12), np.int32)
    base[0, :4, :4] = 3  # 16 voxels, but only 4 of them in the view below
    base[1, 2:10, 2:10] = 5  # 64, 16 in the view
    view = base[:, ::2, ::2]
    assert not view.flags.c_contiguous
    before = base.copy()
    assert remove_small_objects(view, 10, in_place=True) is view
    assert set(np.unique(view)) == {0, 5}
    assert (base[0, ::2, ::2] == 0).all() and (base[0, 1:4:2, 1:4:2] == 3).all()  # only the view changed
    assert np.array_equal(base[1], before[1])
    assert np.array_equal(remove_small_objects(np.array([0, 2, 2, 7, 0, 2]), 3), [0, 2, 2, 0, 0, 2])
    assert np.array_equal(remove_small_objects(np.array([[1, 1], [4, 0]]), 2), [[1, 1], [0, 0]])


def test_label_sizes_count_every_label_and_the_background() -> None:
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 40, size=(4, 30, 20)) * (rng.random((4, 30, 20)) < 0.3)
    assert np.array_equal(pp._label_sizes(lab, 45), np.bincount(lab.ravel(), minlength=46))
    assert np.array_equal(pp._label_sizes(lab[0, 0], 39), np.bincount(lab[0, 0], minlength=40))


@pytest.mark.parametrize("fill_holes", [False, True])
def test_finish_is_remove_small_then_fill_then_renumber(fill_holes: bool) -> None:
    """The one-pass ``_finish`` against the three steps it replaces, on random labels with nested rings."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        lab = (rng.integers(1, 300, size=(3, 24, 24)) * (rng.random((3, 24, 24)) < 0.5)).astype(np.int32)
        lab[1, 2:12, 2:12] = 500  # a ring holding a smaller ring: holes of both, filled in label order
        lab[1, 4:10, 4:10] = 0
        lab[1, 5:9, 5:9] = 700
        lab[1, 6:8, 6:8] = 0
        expected = remove_small_objects(lab, 3)
        if fill_holes:
            fill_holes_per_label(expected, in_place=True)
        expected = to_uint16_labels(expected)
        out = pp._finish(lab.copy(), 3, fill_holes)
        assert out.dtype == np.uint16
        assert np.array_equal(out, expected)
    assert not pp._finish(np.zeros((2, 4, 4), np.int32), 1, True).any()
    with pytest.raises(CTCInputError, match="69999 objects"):
        pp._finish(np.arange(70000, dtype=np.int32).reshape(1, 70, 1000), 0, False)


def test_plateaus_number_26_connected_groups_as_ndimage_label_does() -> None:
    rng = np.random.default_rng(5)
    for density in (0.01, 0.05, 0.2, 0.5):
        peaks = rng.random((5, 18, 16)) < density
        expected, k = ndi.label(peaks, structure=np.ones((3, 3, 3), bool))
        coords = np.nonzero(peaks)
        which, k2 = pp._plateaus(coords)
        assert k2 == k
        assert which.dtype == np.int32
        assert np.array_equal(which, expected[coords])
    assert pp._plateaus(np.nonzero(np.zeros((2, 3, 3), bool)))[1] == 0


def test_plateaus_of_many_voxels_are_labelled_in_their_box_with_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``_PLATEAU_POINTS`` voxels the box is labelled (flat capped blobs): numbering as the point path."""
    rng = np.random.default_rng(8)
    peaks = np.zeros((6, 40, 50), bool)
    peaks[1:5, 5:35, 7:45] = rng.random((4, 30, 38)) < 0.3
    coords = np.nonzero(peaks)
    expected, k = ndi.label(peaks, structure=np.ones((3, 3, 3), bool))
    small, k_small = pp._plateaus(coords)
    monkeypatch.setattr(pp, "_PLATEAU_POINTS", 10)
    big, k_big = pp._plateaus(coords)
    assert coords[0].size > 10 and k_small == k_big == k
    assert big.dtype == np.int32 and np.array_equal(big, small) and np.array_equal(big, expected[coords])


def test_a_flat_capped_blob_is_one_seed() -> None:
    """An all-foreground blob whose distance is capped everywhere inside (an untrained network's output) is one
    plateau of ~10^5 voxels: one seed over all of it (the bounding-box path of ``_plateaus``)."""
    mask = np.zeros((6, 200, 200), bool)
    mask[:, 10:190, 10:190] = True
    height = np.minimum(ndi.distance_transform_edt(mask, sampling=(4.8, 1, 1)), 8.0).astype(np.float32)
    seeds, k = find_seeds(height, mask, min_distance=3, z_scale=4.8, threshold=0.5)
    plateau = mask & (height == 8.0)
    assert plateau.sum() > pp._PLATEAU_POINTS and k == 1
    assert np.array_equal(seeds > 0, plateau) and set(np.unique(seeds[plateau])) == {1}


def test_to_uint16_labels_renumbers_in_order() -> None:
    lab = np.array([[[0, 5, 5, 9], [1000, 0, 9, 5]]], np.int64)
    out = to_uint16_labels(lab)
    assert out.dtype == np.uint16
    assert np.array_equal(out, [[[0, 1, 1, 2], [3, 0, 2, 1]]])
    huge = lab * (1 << 40)  # sparse huge values take the sort path
    assert np.array_equal(to_uint16_labels(huge), out)
    assert np.array_equal(to_uint16_labels(np.array([[[True, False]]])), [[[1, 0]]])
    assert not to_uint16_labels(np.zeros((2, 3, 3), np.int32)).any()


def test_more_than_65535_objects_raise() -> None:
    lab = np.arange(70000, dtype=np.int32).reshape(1, 70, 1000)  # 69999 objects
    msg = "69999 objects found, but CTC masks are uint16 and hold at most 65535;"
    with pytest.raises(CTCInputError, match=msg):
        to_uint16_labels(lab)
    with pytest.raises(CTCInputError, match="69999 objects"):
        to_uint16_labels(lab.astype(np.int64) * (1 << 40))
    ok = to_uint16_labels(np.arange(65536, dtype=np.int32).reshape(1, 256, 256))
    assert ok.max() == 65535
    with pytest.raises(CTCInputError, match="must be an integer array"):
        to_uint16_labels(np.zeros((2, 2), np.float32))
    with pytest.raises(CTCInputError, match=">= 0"):
        to_uint16_labels(np.array([[-1, 2]]))


def test_capped_edt_chunks_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    m = ndi.binary_opening(rng.random((5, 70, 90)) < 0.8, iterations=1)
    m[:, 10:60, 20:80] = True  # a big block where the cap matters
    full = np.minimum(ndi.distance_transform_edt(m, sampling=(2.0, 1, 1)), 6.0)
    monkeypatch.setattr(pp, "_MAX_EDT_VOXELS", 100)
    monkeypatch.setattr(pp, "_EDT_CHUNK", 16)
    chunked = capped_edt(m, 2.0, cap=6.0)
    assert chunked.dtype == np.float32 and (chunked == 6.0).sum() > 1000
    np.testing.assert_allclose(chunked, full, rtol=1e-6)
    assert (capped_edt(np.ones((3, 40, 40), bool), 1.0, cap=6.0) == 6.0).all()


# ---------------------------------------------------------------------------------------------- dispatch
def test_postprocess_dispatch_and_parameter_checks() -> None:
    prob = as_prob(ellipsoid((8, 30, 30), (4, 15, 15), (3, 8, 8)))
    lab = postprocess("distance_watershed", prob, {"min_size": 5})
    assert_consecutive_uint16(lab, 1)
    with pytest.raises(ValueError, match=r"unknown distance_watershed parameter\(s\) \['bogus', 'thr'\]; "
                                         r"allowed: \['prob_threshold', 'min_distance'"):
        postprocess("distance_watershed", prob, {"thr": 0.5, "bogus": 1, "min_size": 3})
    with pytest.raises(ValueError, match="unknown post-processing kind 'watershed'; known kinds: centers_"):
        postprocess("watershed", prob, {})
    with pytest.raises(ValueError, match="needs the cell-centre heatmap"):
        postprocess("centers_watershed", prob, {})
    with pytest.raises(ValueError, match="does not use a cell-centre heatmap"):
        postprocess("largest_component", prob, {}, centers=prob)
    with pytest.raises(ValueError, match=r"min_distance=0 \(must be >= 1\)"):
        postprocess("distance_watershed", prob, {"min_distance": 0})
    with pytest.raises(ValueError, match=r"\(Z, Y, X\) array, got shape \(30, 30\)"):
        postprocess("largest_component", prob[0], {})


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_dataset_defaults_are_accepted(key: str) -> None:
    cfg = DATASETS[key]
    assert set(cfg.postprocess_defaults) <= set(parameter_names(cfg.postprocess))
    a, b, other, centers = _two_elongated_cells()
    prob = as_prob(a | b | other)
    kw = {"centers": centers} if cfg.postprocess == "centers_watershed" else {}
    lab = postprocess(cfg.postprocess, prob, cfg.postprocess_defaults, **kw)
    assert lab.dtype == np.uint16 and lab.shape == prob.shape and lab.any()


def test_segmenter_passes_the_raw_signal_when_the_folder_gates(tmp_path) -> None:
    """A model folder with ``signal_fraction`` in thresholds.json gets ``signal`` from ``probabilities`` and
    gated labels; without it, no signal map is made and the labels are the plain largest component."""
    from efficientcellseg.infer import build_segmenter
    from efficientcellseg.weights import create_untrained_model_folder, update_thresholds

    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    truth, raw, prob = blurred_cell((8, 40, 40))
    raw = raw.astype(np.uint16)
    plain = build_segmenter("A549-SIM", folder, backend="torch")
    assert "signal" not in plain.probabilities(raw)
    update_thresholds(folder, {"signal_fraction": 0.4})
    gated = build_segmenter("A549-SIM", folder, backend="torch")
    probs = gated.probabilities(raw)
    np.testing.assert_array_equal(probs["signal"], signal_map(raw))
    probs["seg"] = prob  # an untrained network's output is arbitrary: gate a known probability instead
    assert np.array_equal(gated.labels(probs), largest_component(prob, probs["signal"], prob_threshold=0.6,
                                                                 signal_fraction=0.4))
    assert not np.array_equal(gated.labels(probs), plain.labels({"seg": prob}))


def test_centers_watershed_gates_each_cell_against_its_own_brightness() -> None:
    """MDA231: two cells, one 10x dimmer, both with z-blurred copies; the gate trims both to their true slices."""
    truth, raw, prob = blurred_cell((16, 40, 40))
    two_truth = np.concatenate([truth, truth], axis=2)
    two_raw = np.concatenate([raw, 100 + (raw - 100) / 10], axis=2)  # second cell 10x dimmer
    two_prob = np.concatenate([prob, prob], axis=2)
    centers = np.zeros_like(two_prob)
    centers[8, 20, 20] = centers[8, 20, 60] = 1.0
    params = dict(prob_threshold=0.5, center_threshold=0.5, center_min_distance=5, min_size=10)
    plain = centers_watershed(two_prob, centers, **params)
    gated = centers_watershed(two_prob, centers, signal_map(two_raw), signal_fraction=0.4, **params)
    assert_consecutive_uint16(gated, 2)
    for lab in (1, 2):
        assert np.flatnonzero((plain == lab).any(axis=(1, 2))).size == 16
        assert np.flatnonzero((gated == lab).any(axis=(1, 2))).tolist() == list(range(5, 11))
    assert np.logical_and(gated > 0, two_truth).sum() / np.logical_or(gated > 0, two_truth).sum() > 0.9
    with pytest.raises(ValueError, match="centers_watershed with signal_fraction > 0 needs the raw signal"):
        centers_watershed(two_prob, centers, signal_fraction=0.3, **params)


def dim_cell_scene(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright found cell (label 1) with a blurred halo, a dim cell the network missed (truth) and small
    debris, in Gaussian noise: labels, raw signal (smoothed like signal_map), the dim cell's mask."""
    rng = np.random.default_rng(seed)
    shape = (12, 60, 90)
    bright = ellipsoid(shape, (6, 30, 22), (3, 10, 10))
    dim = ellipsoid(shape, (6, 30, 68), (3, 9, 9))
    debris = ellipsoid(shape, (6, 8, 45), (1, 2, 2))
    clean = 100 + 1000.0 * bright + 60.0 * dim + 400.0 * debris
    clean = ndi.gaussian_filter(clean, (1.0, 3.0, 3.0))  # blur: the bright cell's halo reaches far
    signal = ndi.gaussian_filter(clean + rng.normal(0, 30, shape), (0, 2, 2)).astype(np.float32)
    return bright.astype(np.int32), signal, dim


def test_rescue_missed_adds_a_dim_cell_but_not_halo_or_debris() -> None:
    labels, signal, dim = dim_cell_scene()
    out = rescue_missed(labels.copy(), signal, sigma=6.0, min_size=600)
    assert np.array_equal(out == 1, labels == 1)  # found objects are never changed
    assert np.unique(out).tolist() == [0, 1, 2]  # one new object: the dim cell (debris is too small)
    new = out == 2
    around = ndi.binary_dilation(dim, iterations=4)  # the dim cell and its own blur
    assert np.logical_and(new, around).sum() / new.sum() > 0.95  # not the bright cell's halo
    assert np.logical_and(new, dim).sum() / dim.sum() > 0.6
    assert np.array_equal(rescue_missed(labels.copy(), signal, sigma=0.0, min_size=600), labels)
    assert np.array_equal(rescue_missed(labels.copy(), signal, sigma=6.0, min_size=100_000), labels)
    faint = rescue_missed(labels.copy(), signal, sigma=200.0, min_size=600)  # seed contrast too high
    assert np.array_equal(faint, labels)


def test_rescue_missed_leaves_a_halo_alone_however_far_it_reaches() -> None:
    """Without the dim cell, the bright cell's blurred halo reaches past the margin; it is brightest
    where it meets the margin, so it is no new cell."""
    labels, signal, dim = dim_cell_scene()
    shape = labels.shape
    wide = ndi.gaussian_filter(100 + 1000.0 * (labels > 0), (2.0, 8.0, 8.0)).astype(np.float32)
    wide += np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    out = rescue_missed(labels.copy(), wide, sigma=4.0, min_size=50)
    assert np.array_equal(out, labels)
    with pytest.raises(ValueError, match="one shape"):
        rescue_missed(labels[0], signal[0], sigma=4.0, min_size=50)


def test_rescue_missed_adds_nothing_without_background_or_noise() -> None:
    labels, signal, dim = dim_cell_scene()
    flat = np.full(signal.shape, 100.0, np.float32)  # no noise: no scale to measure contrast against
    assert np.array_equal(rescue_missed(labels.copy(), flat, sigma=5.0, min_size=1), labels)
    full = np.ones_like(labels)  # one object fills the volume: no background left
    assert np.array_equal(rescue_missed(full.copy(), signal, sigma=5.0, min_size=1), full)


def test_centers_watershed_rescue_is_a_checked_signal_parameter() -> None:
    labels, signal, dim = dim_cell_scene()
    prob = as_prob(labels > 0)
    centers = np.zeros_like(prob)
    centers[6, 30, 22] = 1.0
    params = dict(prob_threshold=0.5, center_threshold=0.5, center_min_distance=5, min_size=50)
    plain = centers_watershed(prob, centers, signal, signal_fraction=0.2, **params)
    rescued = centers_watershed(prob, centers, signal, signal_fraction=0.2, rescue_sigma=6.0,
                                rescue_min_size=600, **params)
    assert_consecutive_uint16(plain, 1)
    assert_consecutive_uint16(rescued, 2)
    assert np.array_equal(rescued == 1, plain == 1)
    assert needs_signal("centers_watershed", {"rescue_sigma": 5.0})
    assert not needs_signal("centers_watershed", {"rescue_sigma": 0.0})
    with pytest.raises(ValueError, match="rescue_sigma > 0 needs the raw signal"):
        centers_watershed(prob, centers, rescue_sigma=5.0, **params)
    with pytest.raises(ValueError, match=r"rescue_sigma=-1"):
        centers_watershed(prob, centers, signal, rescue_sigma=-1.0, **params)


def test_threads_give_the_same_labels_and_are_checked() -> None:
    """The per-component watershed and the per-slice rings run in threads (cpu_threads); the labels are
    written in component order, so 1 and 3 threads give identical results on many touching nuclei."""
    rng = np.random.default_rng(5)
    shape = (9, 96, 96)
    fg = np.zeros(shape, bool)
    for _ in range(40):  # overlapping ellipsoids: touching pairs and clusters to split
        c = (rng.uniform(2, 7), rng.uniform(8, 88), rng.uniform(8, 88))
        fg |= ellipsoid(shape, c, (2.5, rng.uniform(4, 7), rng.uniform(4, 7)))
    prob = as_prob(fg)
    signal = ndi.gaussian_filter(fg.astype(np.float32) * 1000 + rng.normal(100, 20, shape), (0, 1.5, 1.5))
    centers = ndi.gaussian_filter(ndi.distance_transform_edt(fg), 1.0).astype(np.float32)
    centers /= centers.max()
    runs = {}
    try:
        for n in (1, 3):
            cpu_threads.set_threads(n)
            runs[n] = (postprocess("distance_watershed", prob, {"prob_threshold": 0.5, "min_distance": 3,
                                                                 "z_scale": 2.0, "min_size": 10,
                                                                 "boundary_fraction": 0.35}, signal=signal),
                       centers_watershed(prob, centers, prob_threshold=0.5, center_threshold=0.3,
                                         center_min_distance=4, z_scale=2.0, min_size=10))
    finally:
        cpu_threads.set_threads(None)
    assert runs[1][0].max() > 20 and runs[1][1].max() > 10  # many objects, so the threads share work
    assert np.array_equal(runs[1][0], runs[3][0]) and np.array_equal(runs[1][1], runs[3][1])
    with pytest.raises(ValueError, match="CPU stage threads must be >= 1, got 0"):
        cpu_threads.set_threads(0)


def test_min_slices_removes_objects_in_too_few_slices_only() -> None:
    """A fragment confined to one z-slice (the single-slice false positives of MDA231) is removed at
    ``min_slices`` 2; a cell spanning several slices, however small its section, stays; 1 changes nothing."""
    shape = (8, 48, 48)
    fg = ellipsoid(shape, (4, 14, 14), (2.5, 6, 6))  # a cell over several slices
    fg |= ellipsoid(shape, (4, 36, 36), (2.5, 3, 3))  # a small one, still several slices
    flat = np.zeros(shape, bool)
    flat[5, 30:40, 6:16] = True  # a large fragment in one slice
    prob = as_prob(fg | flat)
    centers = ndi.gaussian_filter(ndi.distance_transform_edt(fg | flat), 1.0).astype(np.float32)
    centers /= centers.max()
    params = dict(prob_threshold=0.5, center_threshold=0.2, center_min_distance=4, min_size=20)
    keep = centers_watershed(prob, centers, **params)
    drop = centers_watershed(prob, centers, min_slices=2, **params)
    assert_consecutive_uint16(keep, 3)
    assert_consecutive_uint16(drop, 2)
    assert np.array_equal(drop > 0, fg)  # exactly the fragment went
    assert np.array_equal(centers_watershed(prob, centers, min_slices=1, **params), keep)
    assert "min_slices" in pp.CENTERS_FINISH_PARAMS
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="min_slices"):
            centers_watershed(prob, centers, min_slices=bad, **params)


def test_z_extents_counts_first_to_last_slice() -> None:
    lab = np.zeros((6, 4, 4), np.int32)
    lab[1, 0, 0] = 1
    lab[[0, 4], 1, 1] = 2  # a gap inside still counts as spanned
    lab[5, 2, 2] = 4
    assert pp._z_extents(lab, 4).tolist() == [0, 1, 5, 0, 1]


def test_largest_component_edge_halfway_to_the_cells_median() -> None:
    """``boundary_top_quantile`` 50 with ``boundary_fraction`` 0.5: the edge at half the step from the
    surroundings to the cell's median. A uniform blurred cell drawn 3 px too small comes back to its true
    edge (the 90th percentile at 0.4 stops short of it); the parameter reaches refine_boundaries and is
    checked."""
    shape = (3, 64, 64)
    cell = np.broadcast_to(ellipsoid((1, 64, 64), (0, 32, 32), (1, 14, 14))[0], shape)
    raw = ndi.gaussian_filter(100.0 + 300.0 * cell, (0, 1.0, 1.0))
    raw += np.random.default_rng(3).normal(0, 5, shape)
    signal = signal_map(raw.astype(np.float32))
    drawn = np.broadcast_to(ellipsoid((1, 64, 64), (0, 32, 32), (1, 11, 11))[0], shape)
    prob = as_prob(drawn)
    params = dict(boundary_ring=10, fill_holes=False)
    half = largest_component(prob, signal, boundary_fraction=0.5, boundary_top_quantile=50, **params)
    top = largest_component(prob, signal, boundary_fraction=0.4, **params)
    assert _iou(half > 0, cell) > 0.96 > _iou(top > 0, cell) + 0.01
    direct = refine_boundaries(drawn.astype(np.int32), signal, fraction=0.5, ring=10, top_quantile=50)
    assert np.array_equal(half > 0, direct > 0)
    assert "boundary_top_quantile" in parameter_names("largest_component")
    for bad in (0, 101, float("nan")):
        with pytest.raises(ValueError, match="boundary_top_quantile"):
            largest_component(prob, signal, boundary_fraction=0.5, boundary_top_quantile=bad)


def _textured_cell(shape: tuple[int, int, int] = (3, 120, 120)) -> tuple[np.ndarray, np.ndarray]:
    """A uniform cell of radius 40 px, blurred, on a noisy background: its mask and signal map."""
    cell = np.broadcast_to(ellipsoid((1,) + shape[1:], (0, 60, 60), (1, 40, 40))[0], shape)
    raw = ndi.gaussian_filter(100.0 + 300.0 * cell, (0, 1.5, 1.5))
    raw += np.random.default_rng(5).normal(0, 5, shape)
    return cell, signal_map(raw.astype(np.float32))


def test_repeated_edge_redraw_finds_a_cell_the_network_drew_far_too_small() -> None:
    """``boundary_passes``: a network cell of radius 12 inside a cell of radius 40 (a network that finds only
    the middle of a textured cell) stays far too small after one redraw (ring 14, and a background taken
    partly inside the cell); repeated until it settles, the edge walks out to the cell's own."""
    cell, signal = _textured_cell()
    drawn = np.broadcast_to(ellipsoid((1, 120, 120), (0, 60, 60), (1, 12, 12))[0], cell.shape)
    params = dict(boundary_fraction=0.5, boundary_ring=14, boundary_top_quantile=50)
    once = largest_component(as_prob(drawn), signal, **params)
    settled = largest_component(as_prob(drawn), signal, boundary_passes=8, **params)
    assert _iou(settled > 0, cell) > 0.95 > 0.5 > _iou(once > 0, cell)
    # a cell drawn right settles at once: the same as one redraw
    right = as_prob(cell)
    assert np.array_equal(largest_component(right, signal, boundary_passes=8, **params),
                          largest_component(right, signal, **params))
    assert "boundary_passes" in parameter_names("largest_component")
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="boundary_passes"):
            largest_component(right, signal, boundary_passes=bad, **params)


def _cell_under_a_ramp(shape: tuple[int, int, int] = (3, 120, 160)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniform blurred cell (radius 30 px) under a steep illumination ramp along x plus debris specks: its
    mask, the ramp-free signal map and the signal map with the ramp."""
    cell = np.broadcast_to(ellipsoid((1,) + shape[1:], (0, 60, 80), (1, 30, 30))[0], shape)
    flat = ndi.gaussian_filter(100.0 + 300.0 * cell, (0, 1.5, 1.5))
    flat += np.random.default_rng(7).normal(0, 5, shape)
    ramp = np.broadcast_to(np.linspace(0.0, 500.0, shape[2]), shape)
    specks = np.zeros(shape)
    specks[:, 10:13, 10:13] = specks[:, 100:103, 140:143] = 2000.0  # bright debris far from the cell
    return cell, signal_map((flat + specks).astype(np.float32)), signal_map((flat + ramp + specks).astype(np.float32))


def test_detrend_background_removes_a_ramp_and_keeps_the_cell() -> None:
    """The quadratic surface fitted away from the cell takes a linear ramp out of the background (debris
    does not bend it) and leaves the cell's contrast; inputs are not modified; a bad shape is refused."""
    cell, flat, ramped = _cell_under_a_ramp()
    before = ramped.copy()
    out = pp.detrend_background(ramped, cell, margin=8)
    assert np.array_equal(ramped, before) and out.dtype == np.float32
    far = ~ndi.binary_dilation(cell, iterations=8)
    far[:, 5:18, 5:18] = far[:, 95:108, 135:148] = False
    assert np.ptp(ramped[0][far[0]]) > 400  # the ramp spans the background
    assert np.std(out[far]) < 3 * np.std(flat[far]) + 1.0  # ... and is gone
    contrast = float(np.median(out[cell]) - np.median(out[far]))
    assert contrast == pytest.approx(300.0, rel=0.1)
    with pytest.raises(ValueError, match="one shape"):
        pp.detrend_background(ramped, cell[0], margin=8)


def test_largest_component_detrended_keeps_a_cell_under_a_ramp_round() -> None:
    """``background_detrend``: under a ramp the edge level from the whole ring is too low on the bright side
    (the cell spills into the bright background) and too high on the dark side; with the ramp taken out
    first the redrawn cell matches the true one, as it does without a ramp."""
    cell, flat, ramped = _cell_under_a_ramp()
    drawn = as_prob(np.broadcast_to(ellipsoid((1, 120, 160), (0, 60, 80), (1, 27, 27))[0], cell.shape))
    params = dict(boundary_fraction=0.5, boundary_ring=14, boundary_top_quantile=50, boundary_passes=8)
    plain = largest_component(drawn, ramped, **params)
    detrended = largest_component(drawn, ramped, background_detrend=True, **params)
    reference = largest_component(drawn, flat, **params)
    assert _iou(detrended > 0, cell) > 0.95 > _iou(plain > 0, cell) + 0.05
    assert _iou(reference > 0, cell) > 0.95
    assert "background_detrend" in parameter_names("largest_component")


def test_settled_redraw_keeps_the_first_pass_when_it_never_settles() -> None:
    start = np.zeros((1, 40, 40), np.uint16)
    start[0, 18:22, 18:22] = 1
    flags: list[bool] = []

    def creeping(cell: np.ndarray, grow_only: bool) -> tuple[np.ndarray, int]:  # one pixel more, forever
        flags.append(grow_only)
        out = ndi.binary_dilation(cell > 0).astype(np.uint16)
        return out, int(out.sum())

    first = ndi.binary_dilation(start > 0).astype(np.uint16)
    out, size = pp._settled_redraw(creeping, start, 5)
    assert flags == [False, True, True, True, True]  # the first pass both ways, later ones only grow
    assert size == int(first.sum()) and np.array_equal(out, first)

    def settling(cell: np.ndarray, grow_only: bool) -> tuple[np.ndarray, int]:  # grows to 10 x 10, then stays
        out = np.zeros_like(cell)
        n = min(int(np.sqrt(cell.sum())) + 2, 10)
        out[0, 15:15 + n, 15:15 + n] = 1
        return out, int(out.sum())

    assert pp._settled_redraw(settling, start, 8)[1] == 100
    assert pp._settled_redraw(settling, start, 1)[1] == 36  # one pass: the first redraw, settled or not
    empty, n = pp._settled_redraw(lambda c, g: (np.zeros_like(c), 0), start, 8)
    assert n == 0 and not empty.any()


def test_repeated_edge_redraw_does_not_eat_into_a_cell_on_a_ramp() -> None:
    """Later passes only grow: on a cell whose brightness falls across it (an illumination ramp), the first
    redraw cuts into its dim side; were every pass allowed to cut, the ring, now on that side's cut part,
    would raise the level and cut further pass after pass."""
    shape = (3, 100, 140)
    cell = np.broadcast_to(ellipsoid((1,) + shape[1:], (0, 50, 70), (1, 35, 50))[0], shape)
    ramp = np.linspace(1.0, 0.25, shape[2])[None, None, :]
    raw = ndi.gaussian_filter((100.0 + 600.0 * cell) * ramp + 40.0 * ramp, (0, 1.5, 1.5))
    signal = signal_map(raw.astype(np.float32))
    params = dict(boundary_fraction=0.5, boundary_ring=14, boundary_top_quantile=50)
    once = largest_component(as_prob(cell), signal, **params)
    settled = largest_component(as_prob(cell), signal, boundary_passes=8, **params)
    assert (settled >= once).all()  # nothing the first pass kept is lost
