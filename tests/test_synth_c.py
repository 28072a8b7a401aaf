"""Family C synthetic data (validation only): layout, GT, tracks, clutter, determinism, knobs, CLI."""

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
from efficientcellseg.synth_c import (
    CONDITIONS,
    FAMILY_C_VERSION,
    PROFILES_C,
    _PROFILES,
    _SCENES,
    FamilyCParams,
    _frame_parts_c,
    _slice_gt,
    frame_c,
    generate_c,
)

MODULE = Path(__file__).resolve().parents[1] / "SW" / "efficientcellseg" / "synth_c.py"
TRIC_CROP = (13, 200, 300)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_c("MDA231", tmp_path_factory.mktemp("mda"), frames=2, seed=1, small=True)


@pytest.fixture(scope="module")
def tric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_c("TRIC", tmp_path_factory.mktemp("tric"), frames=1, seed=2, small=True)


@pytest.fixture(scope="module")
def a549(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_c("A549-SIM", tmp_path_factory.mktemp("a549"), seq="02", frames=1, seed=3)


@pytest.fixture(scope="module")
def mda_parts() -> dict[str, tuple]:
    """One small MDA231 frame rendered under each condition (same labels, same seed)."""
    return {c: _frame_parts_c("MDA231", seed=5, small=True, params=CONDITIONS[c])
            for c in ("dim", "default", "bright")}


def _layout(ds: Path, seq: str, n: int, shape: tuple[int, int, int], dtype: type) -> dict:
    rec = check_validation_layout(ds, seq, n, shape, dtype, "C")
    meta = json.loads((ds / "synth.json").read_text())
    assert meta["generator"] == "efficientcellseg.synth_c" and "never train" in meta["note"]
    assert rec["version"] == FAMILY_C_VERSION and rec["frames"] == n and rec["shape"] == list(shape)
    assert rec["params"] == {"snr": 1.0, "brightness": 1.0} and rec["condition"] == "default"
    assert len(rec["objects_per_frame"]) == n and rec["gold_objects"] >= 1
    return rec


def _tracks_consistent(tra_dir: Path) -> dict[int, tuple[int, int, int]]:
    rec = {}
    for line in (tra_dir / "man_track.txt").read_text().splitlines():
        i, b, e, p = map(int, line.split())
        rec[i] = (b, e, p)
    for t, m in enumerate(sorted(tra_dir.glob("man_track*.tif"))):
        present = set(np.unique(tifffile.imread(m)).tolist()) - {0}
        assert present == {i for i, (b, e, _) in rec.items() if b <= t <= e}, t
    assert all(p == 0 for _, _, p in rec.values())
    return rec


def _slice_gt_files(ds: Path, seq: str, min_px: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(slice GT, full label slice, number of qualifying objects) per file, after the shared checks."""
    out = []
    gt = list_gt_seg(ds / f"{seq}_GT" / "SEG")
    assert gt and all(g.z is not None for g in gt)
    per_frame = {}
    for g in gt:
        assert re.fullmatch(r"man_seg_\d{3}_\d{3}\.tif", g.path.name)
        per_frame[g.t] = per_frame.get(g.t, 0) + 1
        sl = tifffile.imread(g.path)
        full = tifffile.imread(ds / f"{seq}_GT" / "TRA" / f"man_track{g.t:03d}.tif")[g.z]
        assert sl.dtype == np.uint16 and sl.shape == full.shape
        ids, counts = np.unique(sl[sl > 0], return_counts=True)
        assert ids.size > 0 and counts.min() >= min_px
        np.testing.assert_array_equal(sl, np.where(np.isin(full, ids), full, 0))  # whole cross-sections
        full_counts = np.bincount(full.ravel())[1:]
        out.append((sl, full, int(np.count_nonzero(full_counts >= min_px))))
    assert all(2 <= k <= 3 for k in per_frame.values()), per_frame
    return out


def test_mda231_layout_slice_gt_and_tracks(mda: Path) -> None:
    rec = _layout(mda, "01", 2, (30, 256, 256), np.uint16)
    for sl, _, qualifying in _slice_gt_files(mda, "01", min_px=10):
        assert np.unique(sl).size - 1 == qualifying  # every object of >= 10 px is annotated
    tracks = _tracks_consistent(mda / "01_GT" / "TRA")
    assert rec["tracks"] == len(tracks) >= 2
    raw = tifffile.imread(mda / "01" / "t000.tif")
    assert raw.max() <= 4095  # 12-bit camera in uint16


def test_tric_small_dense_touching_sparse_gt(tric: Path) -> None:
    _layout(tric, "01", 1, (13, 700, 1000), np.uint8)
    files = _slice_gt_files(tric, "01", min_px=15)
    picked = sum(np.unique(sl).size - 1 for sl, _, _ in files)
    qualifying = sum(q for _, _, q in files)
    assert all(np.unique(sl).size - 1 < 0.6 * q for sl, _, q in files)
    assert 0.2 < picked / qualifying < 0.5  # about 35% of the objects
    _tracks_consistent(tric / "01_GT" / "TRA")
    lab = tifffile.imread(tric / "01_GT" / "TRA" / "man_track000.tif")
    assert np.unique(lab).size - 1 > 2000
    a, b = lab[:, :, :-1], lab[:, :, 1:]
    assert np.count_nonzero((a > 0) & (b > 0) & (a != b)) > 5000  # neighbours touch
    radii = np.sqrt(np.bincount(lab.max(axis=0).ravel())[1:] / np.pi)
    assert 4 < np.median(radii[radii > 0]) < 9
    raw = tifffile.imread(tric / "01" / "t000.tif")
    assert 0 < np.mean(raw == 255) < 0.01  # some saturation, not much


def test_a549_full_gt_one_cell_uint16(a549: Path) -> None:
    _layout(a549, "02", 1, (29, 300, 350), np.uint16)
    gt = list_gt_seg(a549 / "02_GT" / "SEG")
    assert [(g.t, g.z) for g in gt] == [(0, None)]
    lab = tifffile.imread(gt[0].path)
    assert lab.dtype == np.uint16 and set(np.unique(lab).tolist()) == {0, 1} and 0.03 < (lab > 0).mean() < 0.6
    from scipy import ndimage

    assert ndimage.label(lab)[1] == 1 and np.array_equal(ndimage.binary_fill_holes(lab > 0), lab > 0)
    assert (a549 / "02_GT" / "TRA" / "man_track.txt").read_text() == "1 0 0 0\n"


@pytest.mark.parametrize("key,shape,n", [("MDA231", (30, 256, 256), 5), ("TRIC", TRIC_CROP, 6)])
def test_tracks_match_label_presence_over_frames(key: str, shape: tuple[int, int, int], n: int) -> None:
    """Labels only: motion, nuclei flowing in and out; a label is present exactly in frames begin..end."""
    scene = _SCENES[key](_PROFILES[key], shape, 1)
    present = []
    for t in range(n):
        lab, _ = scene.frame(t)
        counts = np.bincount(lab.ravel())[1:]
        assert counts[counts > 0].min() >= _PROFILES[key].min_voxels
        present.append(set(np.flatnonzero(counts) + 1))
    rec = {int(r.split()[0]): tuple(map(int, r.split()[1:])) for r in scene.track_lines().splitlines()}
    for t, ids in enumerate(present):
        assert ids == {i for i, (b, e, _) in rec.items() if b <= t <= e}, t
    if key == "TRIC":
        assert any(e < n - 1 for _, e, _ in rec.values())  # some nuclei leave the field and end
    frame1 = _SCENES[key](_PROFILES[key], shape, 1).frame(1)[0]  # a fresh scene stepped to t=1 agrees
    assert set(np.unique(frame1).tolist()) - {0} == present[1]


def test_mda231_full_frame_has_8_to_16_cells() -> None:
    scenes = [_SCENES["MDA231"](_PROFILES["MDA231"], (30, 512, 512), s) for s in (0, 7)]
    counts = [np.unique(sc.frame(0)[0]).size - 1 for sc in scenes]
    assert all(8 <= c <= 16 for c in counts), counts


def test_debris_and_fibres_bright_but_unlabelled(mda_parts) -> None:
    raw, lab, parts = mda_parts["default"]
    deb, fib = parts["debris"], parts["fibres"]
    assert deb.sum() >= 4 and fib.sum() > 50
    assert not lab[deb].any()  # debris lies away from the cells
    assert np.array_equal(parts["unlabelled"], deb | fib)
    bg = lab == 0
    assert raw[deb].mean() > np.percentile(raw[bg], 99)
    exp = parts["expected"]
    fib_bg = fib & bg & ~deb
    assert exp[fib_bg].mean() > np.median(exp[bg]) + 3  # faint, but above the background


@pytest.mark.parametrize("cond,min_z", [("dim", 1.0), ("default", 3.0)])
def test_gt_objects_stand_out_from_background(cond: str, min_z: float) -> None:
    """Every TRIC GT object (the dimmest kind) has expected light above the background, beyond its noise."""
    raw, lab, parts = _frame_parts_c("TRIC", seed=2, shape=TRIC_CROP, params=CONDITIONS[cond])
    exp, haze = parts["expected"], parts["background"]
    assert np.all(exp >= haze - 1e-3)  # background (offset, autofluorescence, ghosts) is below everything
    slices = _slice_gt(_PROFILES["TRIC"], lab, np.random.default_rng(0))
    assert len(slices) >= 2
    for z, sl in slices:
        for i in np.unique(sl[sl > 0]):
            inside = sl == i
            signal = float((exp[z][inside] - haze[z][inside]).mean())
            noise = float(np.std(raw[z][inside] - exp[z][inside]))
            assert signal > 1.0 and signal / (noise / np.sqrt(inside.sum())) > min_z, (z, i, signal, noise)


def test_dim_darker_and_noisier_than_bright(mda_parts) -> None:
    def measure(cond: str) -> tuple[float, float]:
        raw, lab, parts = mda_parts[cond]
        fg, exp = lab > 0, parts["expected"]
        signal = exp[fg].mean() - np.median(exp[lab == 0])
        noise = np.std(raw[fg].astype(np.float32) - exp[fg])
        return float(raw[fg].mean()), float(signal / noise)

    (m_dim, snr_dim), (m_def, snr_def), (m_bright, snr_bright) = map(measure, ("dim", "default", "bright"))
    assert m_dim < m_def < m_bright
    assert snr_dim < 0.6 * snr_def and snr_def < 0.6 * snr_bright
    np.testing.assert_array_equal(mda_parts["dim"][1], mda_parts["bright"][1])  # knobs change the look only


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path, a549: Path) -> None:
    stale = tmp_path / "Fluo-C3DH-A549-SIM"
    for name in ("02/t005.tif", "02_GT/TRA/man_track005.tif", "02_GT/SEG/man_seg005.tif"):
        (stale / name).parent.mkdir(parents=True, exist_ok=True)
        (stale / name).write_bytes(b"left over from a longer run")
    (stale / "synth.json").write_text('{"family": "C"}')
    again = generate_c("A549-SIM", tmp_path, seq="02", frames=1, seed=3)
    assert _digest(again) == _digest(a549)  # same bytes, and the stale frame 5 is gone
    lab4 = _SCENES["A549-SIM"](_PROFILES["A549-SIM"], (29, 300, 350), 4).frame(0)[0]
    assert not np.array_equal(lab4, tifffile.imread(a549 / "02_GT" / "TRA" / "man_track000.tif"))


def test_frames_do_not_depend_on_sequence_length(mda: Path) -> None:
    raw, lab = frame_c("MDA231", seed=1, small=True)
    np.testing.assert_array_equal(raw, tifffile.imread(mda / "01" / "t000.tif"))
    np.testing.assert_array_equal(lab, tifffile.imread(mda / "01_GT" / "TRA" / "man_track000.tif"))
    raw1, lab1, _ = _frame_parts_c("MDA231", seed=1, small=True, t=1)
    np.testing.assert_array_equal(raw1, tifffile.imread(mda / "01" / "t001.tif"))
    assert not np.array_equal(raw1, raw)


def test_conditions_and_parameter_errors(tmp_path: Path) -> None:
    assert PROFILES_C == ("MDA231", "TRIC", "A549-SIM") and set(CONDITIONS) == {"default", "dim", "bright"}
    assert CONDITIONS["dim"].snr < 1 < CONDITIONS["bright"].snr
    assert CONDITIONS["dim"].brightness < 1 < CONDITIONS["bright"].brightness
    with pytest.raises(ValueError, match="unknown family C condition"):
        generate_c("MDA231", tmp_path, condition="foggy")
    with pytest.raises(ValueError, match="not both"):
        generate_c("MDA231", tmp_path, condition="dim", params=FamilyCParams(snr=2))
    with pytest.raises(ValueError, match="snr must be a finite number > 0"):
        FamilyCParams(snr=-1)
    with pytest.raises(ValueError, match="brightness must be"):
        FamilyCParams(brightness=float("nan"))
    with pytest.raises(ValueError, match="frames must be >= 1"):
        generate_c("MDA231", tmp_path, frames=0)
    with pytest.raises(ValueError, match="seq must be two digits"):
        generate_c("MDA231", tmp_path, seq="1")
    with pytest.raises(ValueError, match="unknown family C profile"):
        generate_c("HeLa", tmp_path)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        frame_c("A549-SIM", seed=-1)
    assert not any(tmp_path.iterdir())  # nothing written by refused calls


def test_refuses_other_families_and_foreign_folders(tmp_path: Path) -> None:
    for fam, text in (("B", '{"family": "B", "sequences": {}}'), ("A", '{"sequences": {}}')):
        d = tmp_path / fam / "Fluo-C3DH-A549-SIM"
        d.mkdir(parents=True)
        (d / "synth.json").write_text(text)
        with pytest.raises(ValueError, match=f"holds family-{fam} synthetic data"):
            generate_c("A549-SIM", tmp_path / fam, frames=1)
        assert sorted(p.name for p in d.iterdir()) == ["synth.json"]
    (tmp_path / "real" / "Fluo-C3DH-A549-SIM" / "01").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a family-C folder"):
        generate_c("A549-SIM", tmp_path / "real", frames=1)


def test_cli_family_c_with_condition(tmp_path: Path) -> None:
    assert main(["synth", "--profile", "A549-SIM", "--out", str(tmp_path), "--frames", "1", "--seed", "2",
                 "--family", "c", "--condition", "dim", "--preview", str(tmp_path / "p.png"), "-q"]) == 0
    meta = json.loads((tmp_path / "Fluo-C3DH-A549-SIM" / "synth.json").read_text())
    rec = meta["sequences"]["01"]
    assert meta["family"] == "C" and rec["condition"] == "dim"
    assert rec["params"] == {"snr": 0.25, "brightness": 0.6}
    assert (tmp_path / "p.png").is_file()
    assert main(["synth", "--family", "c", "--randomize", "--profile", "A549-SIM", "--out", str(tmp_path),
                 "-q"]) == 2
    assert main(["synth", "--family", "c", "--profile", "A549-SIM", "--out", str(tmp_path), "--frames", "0",
                 "-q"]) == 2


def test_does_not_import_families_a_or_b() -> None:
    names = imported_names(MODULE)
    ours = {n.split(".")[1] for n in names if n.startswith("efficientcellseg.") and n.count(".") >= 1}
    assert ours <= {"ctc_io", "datasets", "log", "synth_io"}, ours
    assert not ours & {"synth", "synth_b", "randomize", "augment", "trainset"}
    # the shared CTC-layout writer renders nothing, so it brings no image model with it
    writer = {n.split(".")[1] for n in imported_names(MODULE.with_name("synth_io.py"))
              if n.startswith("efficientcellseg.")}
    assert writer == {"ctc_io"}, writer
