"""Family B synthetic data (validation only): layout, GT consistency, tracks, debris, determinism, knobs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficientcellseg.cli import main
from efficientcellseg.ctc_io import list_gt_seg
from validation_layout import check_validation_layout, imported_names
from efficientcellseg.synth_b import (
    CONDITIONS,
    PROFILE_B_DEFS,
    FamilyBParams,
    _A549Sim,
    _MDASim,
    _render,
    _TRICSim,
    frame_b,
    generate_b,
)

MODULE = Path(__file__).resolve().parents[1] / "SW" / "efficientcellseg" / "synth_b.py"
SEED_DIVIDES = 1  # MDA231 seed with a division in frame 1 (checked below)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_b("MDA231", tmp_path_factory.mktemp("mda"), frames=2, seed=SEED_DIVIDES)


@pytest.fixture(scope="module")
def tric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_b("TRIC", tmp_path_factory.mktemp("tric"), frames=1, seed=2, small=True)


@pytest.fixture(scope="module")
def a549(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_b("A549-SIM", tmp_path_factory.mktemp("a549"), seq="02", frames=1, seed=3)


def _layout(ds: Path, seq: str, n: int, shape: tuple[int, int, int], dtype: type) -> None:
    rec = check_validation_layout(ds, seq, n, shape, dtype, "B")
    assert rec["params"] == {k: 1.0 for k in ("snr", "z_blur", "texture", "bg_gradient", "brightness", "density")}


def _slice_gt_is_cut_of_truth(ds: Path, seq: str, sparse: bool) -> None:
    gt = list_gt_seg(ds / f"{seq}_GT" / "SEG")
    assert gt and all(g.z is not None for g in gt)
    for g in gt:
        assert re.fullmatch(r"man_seg_\d{3}_\d{3}\.tif", g.path.name)
        sl = tifffile.imread(g.path)
        full = tifffile.imread(ds / f"{seq}_GT" / "TRA" / f"man_track{g.t:03d}.tif")[g.z]
        assert sl.dtype == np.uint16 and sl.shape == full.shape
        ids = np.unique(sl[sl > 0])
        assert ids.size > 0
        np.testing.assert_array_equal(sl, np.where(np.isin(full, ids), full, 0))  # whole objects, cut at z
        in_slice = np.unique(full[full > 0]).size
        if sparse:
            assert ids.size < 0.6 * in_slice
        else:
            assert ids.size >= in_slice - 3  # all objects but tiny fragments


def _tracks_consistent(ds: Path, seq: str, need_division: bool) -> dict[int, tuple[int, int, int]]:
    tra_dir = ds / f"{seq}_GT" / "TRA"
    rec = {}
    for line in (tra_dir / "man_track.txt").read_text().splitlines():
        i, b, e, p = map(int, line.split())
        rec[i] = (b, e, p)
    masks = sorted(tra_dir.glob("man_track*.tif"))
    for t, m in enumerate(masks):
        present = set(np.unique(tifffile.imread(m)).tolist()) - {0}
        assert present == {i for i, (b, e, _) in rec.items() if b <= t <= e}, t
    kids = [(b, p) for b, _, p in rec.values() if p]
    assert kids or not need_division
    for b, p in kids:
        assert rec[p][1] == b - 1
    return rec


def test_mda231_layout_slice_gt_tracks_and_py_ctcmetrics(mda: Path) -> None:
    _layout(mda, "01", 2, (30, 512, 512), np.uint8)
    _slice_gt_is_cut_of_truth(mda, "01", sparse=False)
    rec = _tracks_consistent(mda, "01", need_division=True)
    assert 5 <= sum(b == 0 for b, _, _ in rec.values()) <= 20
    from ctc_metrics.metrics import valid
    from ctc_metrics.utils.filesystem import parse_masks, read_tracking_file

    tra_dir = mda / "01_GT" / "TRA"
    masks = parse_masks(str(tra_dir))
    labels = [[int(v) for v in np.unique(tifffile.imread(m)) if v] for m in masks]
    assert valid(masks, read_tracking_file(str(tra_dir / "man_track.txt")), labels) == 1


def test_tric_small_dense_touching_sparse_gt(tric: Path) -> None:
    """One frame (TRIC's motion and divisions: test_tracks_stay_consistent_over_many_frames)."""
    _layout(tric, "01", 1, (13, 700, 1000), np.uint8)
    _slice_gt_is_cut_of_truth(tric, "01", sparse=True)
    _tracks_consistent(tric, "01", need_division=False)
    lab = tifffile.imread(tric / "01_GT" / "TRA" / "man_track000.tif")
    assert np.unique(lab).size - 1 > 1000
    a, b = lab[:, :, :-1], lab[:, :, 1:]
    assert np.count_nonzero((a > 0) & (b > 0) & (a != b)) > 1000  # neighbours touch
    radii = np.sqrt(np.bincount(lab.max(axis=0).ravel())[1:] / np.pi)
    assert 4.5 < np.median(radii[radii > 0]) < 9


def test_a549_full_gt_one_cell_uint16(a549: Path) -> None:
    _layout(a549, "02", 1, (37, 300, 400), np.uint16)
    gt = list_gt_seg(a549 / "02_GT" / "SEG")
    assert [(g.t, g.z) for g in gt] == [(0, None)]
    for g in gt:
        lab = tifffile.imread(g.path)
        assert set(np.unique(lab).tolist()) == {0, 1} and 0.05 < (lab > 0).mean() < 0.6
    assert (a549 / "02_GT" / "TRA" / "man_track.txt").read_text() == "1 0 0 0\n"


@pytest.mark.parametrize("sim", [lambda: _MDASim((30, 512, 512), 0, FamilyBParams()),
                                 lambda: _TRICSim((13, 300, 400), 1, FamilyBParams())], ids=["MDA231", "TRIC"])
def test_tracks_stay_consistent_over_many_frames(sim) -> None:
    """Labels only (no rendering): 10 frames of motion, divisions and cells leaving the field."""
    s = sim()
    present = []
    for t in range(10):
        lab, _ = s.frame(t)
        present.append(set(np.unique(lab).tolist()) - {0})
    rec = s.tracks.rec
    for t, ids in enumerate(present):
        assert ids == {i for i, (b, e, _) in rec.items() if b <= t <= e}, t
    kids = [(b, p) for b, _, p in rec.values() if p]
    assert len(kids) >= 2
    assert all(rec[p][1] == b - 1 for b, p in kids)


def test_debris_bright_but_unlabelled(crop) -> None:
    lab = crop[0]
    raw, parts = _render_parts(crop)
    deb = parts["debris"]
    assert deb.sum() > 0 and not lab[deb].any()
    assert raw[deb].mean() > np.percentile(raw[lab == 0], 99)


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path, a549: Path) -> None:
    stale = tmp_path / "Fluo-C3DH-A549-SIM"
    for name in ("02/t005.tif", "02_GT/TRA/man_track005.tif", "02_GT/SEG/man_seg005.tif"):
        (stale / name).parent.mkdir(parents=True, exist_ok=True)
        (stale / name).write_bytes(b"left over from a longer run")
    (stale / "synth.json").write_text('{"family": "B"}')
    again = generate_b("A549-SIM", tmp_path, seq="02", frames=1, seed=3)
    assert _digest(again) == _digest(a549)  # same bytes, and the stale frame 5 is gone
    lab3 = _A549Sim((37, 300, 400), 3, FamilyBParams()).frame(0)[0]
    lab4 = _A549Sim((37, 300, 400), 4, FamilyBParams()).frame(0)[0]
    np.testing.assert_array_equal(lab3, tifffile.imread(a549 / "02_GT" / "TRA" / "man_track000.tif"))
    assert not np.array_equal(lab3, lab4)


def test_mda_frames_do_not_depend_on_sequence_length(tmp_path: Path, mda: Path) -> None:
    raw, lab = frame_b("MDA231", seed=SEED_DIVIDES)
    np.testing.assert_array_equal(raw, tifffile.imread(mda / "01" / "t000.tif"))
    np.testing.assert_array_equal(lab, tifffile.imread(mda / "01_GT" / "TRA" / "man_track000.tif"))


@pytest.fixture(scope="module")
def crop() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 30x192x192 piece of an MDA231 label frame with cells (rendering it is quick)."""
    lab, props = _MDASim((30, 512, 512), 5, FamilyBParams()).frame(0)
    cov = (lab > 0).any(axis=0)
    ys, xs = np.nonzero(cov)
    y0 = int(np.clip(np.median(ys) - 96, 0, 512 - 192))
    x0 = int(np.clip(np.median(xs) - 96, 0, 512 - 192))
    piece = np.ascontiguousarray(lab[:, y0:y0 + 192, x0:x0 + 192])
    assert piece.any()
    return piece, props


def _render_parts(crop, **kw) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    lab, props = crop
    return _render(PROFILE_B_DEFS["MDA231"], lab, props, FamilyBParams(**kw), 0, 11, parts=True)


def test_knobs_act_as_documented(crop) -> None:
    lab = crop[0]
    fg, bg = lab > 0, lab == 0

    def rel_noise(snr: float) -> float:
        raw, p = _render_parts(crop, snr=snr)
        signal = p["expected"][fg] - p["offset"].mean()
        return float(np.std(raw[fg].astype(np.float32) - p["expected"][fg]) / signal.mean())

    assert rel_noise(4.0) < 0.6 * rel_noise(1.0)

    def axial_energy(z_blur: float) -> float:
        e = _render_parts(crop, z_blur=z_blur)[1]["expected"]
        return float(np.mean(np.square(np.diff(e, axis=0))))

    assert axial_energy(2.5) < 0.7 * axial_energy(1.0)

    def cell_cv(texture: float) -> float:
        e = _render_parts(crop, texture=texture, z_blur=0.3)[1]["expected"]
        inner = fg & (np.roll(lab, 1, 2) == lab) & (np.roll(lab, -1, 2) == lab)
        return float(e[inner].std() / e[inner].mean())

    assert cell_cv(0.0) < cell_cv(1.0) < cell_cv(2.0)

    def bg_spread(g: float) -> float:
        e = _render_parts(crop, bg_gradient=g)[1]["expected"]
        return float(np.std(e[bg]))

    assert bg_spread(0.0) < 0.8 * bg_spread(2.0)

    def cell_mean(b: float) -> float:
        return float(_render_parts(crop, brightness=b)[1]["expected"][fg].mean())

    dark = cell_mean(1e-3)  # background, haze of nothing: what brightness does not scale
    assert cell_mean(2.0) - dark == pytest.approx(2 * (cell_mean(1.0) - dark), rel=0.01)


def test_density_knob_changes_object_count() -> None:
    n = [len(np.unique(_MDASim((30, 512, 512), 7, FamilyBParams(density=d)).frame(0)[0])) - 1 for d in (0.5, 2.0)]
    assert n[0] < n[1]
    counts = [len(_TRICSim((13, 300, 400), 7, FamilyBParams(density=d)).ids) for d in (0.5, 1.0, 1.6)]
    assert counts[0] < counts[1] < counts[2]


def test_conditions_and_parameter_errors(tmp_path: Path) -> None:
    assert {"default", "dim", "bright"} <= set(CONDITIONS)
    assert CONDITIONS["dim"].snr < 1 < CONDITIONS["bright"].snr
    with pytest.raises(ValueError, match="unknown family B condition"):
        generate_b("MDA231", tmp_path, condition="foggy")
    with pytest.raises(ValueError, match="not both"):
        generate_b("MDA231", tmp_path, condition="dim", params=FamilyBParams(snr=2))
    with pytest.raises(ValueError, match="snr must be >="):
        FamilyBParams(snr=-1)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        generate_b("MDA231", tmp_path, frames=0)


def test_cli_family_b_and_condition_only_with_b(tmp_path: Path) -> None:
    assert main(["synth", "--profile", "A549-SIM", "--out", str(tmp_path), "--frames", "1", "--seed", "2",
                 "--family", "b", "--condition", "dim", "--preview", str(tmp_path / "p.png"), "-q"]) == 0
    meta = json.loads((tmp_path / "Fluo-C3DH-A549-SIM" / "synth.json").read_text())
    assert meta["sequences"]["01"]["condition"] == "dim" and (tmp_path / "p.png").is_file()
    assert main(["synth", "--profile", "A549-SIM", "--out", str(tmp_path / "a"), "--condition", "dim", "-q"]) == 2
    assert main(["synth", "--family", "b", "--profile", "A549-SIM", "--out", str(tmp_path), "--frames", "0"]) == 2
    # a family-A folder is never mixed with family B
    (tmp_path / "x" / "Fluo-C3DH-A549-SIM").mkdir(parents=True)
    (tmp_path / "x" / "Fluo-C3DH-A549-SIM" / "synth.json").write_text('{"sequences": {}}')
    with pytest.raises(ValueError, match="family-A"):
        generate_b("A549-SIM", tmp_path / "x", frames=1)
    # nor is a folder with other data (e.g. real CTC frames) written into
    (tmp_path / "real" / "Fluo-C3DH-A549-SIM" / "01").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a family-B folder"):
        generate_b("A549-SIM", tmp_path / "real", frames=1)


def test_does_not_import_family_a() -> None:
    names = imported_names(MODULE)
    assert not any(n == "efficientcellseg.synth" or n.startswith("efficientcellseg.synth.") for n in names), names
    assert "synth" not in {n.rsplit(".", 1)[-1] for n in names if n.startswith("efficientcellseg")}
