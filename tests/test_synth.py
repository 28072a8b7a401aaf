"""Synthetic CTC sequences: layout, names, dtypes, shapes, visible GT, valid tracks, determinism."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficientcellseg.cli import main
from efficientcellseg.ctc_io import list_frames, list_gt_seg
from efficientcellseg.synth import generate, generate_frame_for_benchmark

SEED_DIVIDES = 3  # MDA231 seed whose 4 frames contain a division (checked below)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("MDA231", tmp_path_factory.mktemp("mda"), frames=4, seed=SEED_DIVIDES)


@pytest.fixture(scope="module")
def a549(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("A549-SIM", tmp_path_factory.mktemp("a549"), seq="02", frames=2, seed=5)


@pytest.fixture(scope="module")
def tric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("TRIC", tmp_path_factory.mktemp("tric"), frames=2, seed=5, small=True)


def _check_layout(ds: Path, seq: str, n: int, shape: tuple[int, ...] | None, dtype: type) -> list[np.ndarray]:
    frames = list_frames(ds / seq)
    assert [f.path.name for f in frames] == [f"t{t:03d}.tif" for t in range(n)]
    raws = [tifffile.imread(f.path) for f in frames]
    for r in raws:
        assert r.dtype == dtype and r.ndim == 3
        assert r.shape[0] == min(r.shape)
        if shape is not None:
            assert r.shape == shape
    for sub, pat in (("_GT/TRA", r"man_track\d{3}\.tif"), ("_ST/SEG", r"man_seg\d{3}\.tif")):
        names = sorted(p.name for p in (ds / f"{seq}{sub}").glob("*.tif"))
        assert len(names) == n and all(re.fullmatch(pat, x) for x in names), (sub, names)
        for name, raw in zip(names, raws, strict=True):
            lab = tifffile.imread(ds / f"{seq}{sub}" / name)
            assert lab.dtype == np.uint16 and lab.shape == raw.shape
    assert (ds / f"{seq}_GT" / "TRA" / "man_track.txt").is_file()
    return raws


def _objects_brighter_than_background(raw: np.ndarray, lab: np.ndarray, margin: float) -> None:
    """Every labelled object's mean intensity exceeds the background median by ``margin`` grey values."""
    ids = lab.ravel().astype(np.int64)
    sums = np.bincount(ids, weights=raw.ravel().astype(np.float64))
    counts = np.bincount(ids)
    present = np.flatnonzero(counts)
    present = present[present > 0]
    assert present.size > 0
    bg = float(np.median(raw[lab == 0]))
    means = sums[present] / counts[present]
    assert means.min() > bg + margin, (means.min(), bg)


def test_mda231_layout_and_slice_gt(mda: Path) -> None:
    assert mda.name == "Fluo-C3DL-MDA231"
    raws = _check_layout(mda, "01", 4, (30, 512, 512), np.uint8)
    gt = list_gt_seg(mda / "01_GT" / "SEG")
    assert gt and all(g.z is not None for g in gt)
    assert {g.t for g in gt} == set(range(4))
    for g in gt:
        sl = tifffile.imread(g.path)
        assert sl.dtype == np.uint16 and sl.shape == (512, 512) and sl.max() > 0
        _objects_brighter_than_background(raws[g.t][g.z], sl, margin=20)
        # slice GT is the cut of the full 3D truth at that z
        tra = tifffile.imread(mda / "01_GT" / "TRA" / f"man_track{g.t:03d}.tif")[g.z]
        assert np.all(tra[sl > 0] == sl[sl > 0])
    n_cells = [np.unique(tifffile.imread(p)).size - 1 for p in sorted((mda / "01_GT" / "TRA").glob("*.tif"))]
    assert all(5 <= n <= 20 for n in n_cells)


def test_a549_full_gt_uint16_and_second_sequence_shape(a549: Path) -> None:
    raws = _check_layout(a549, "02", 2, (37, 300, 400), np.uint16)
    gt = list_gt_seg(a549 / "02_GT" / "SEG")
    assert [(g.t, g.z) for g in gt] == [(0, None), (1, None)]
    for g in gt:
        lab = tifffile.imread(g.path)
        assert lab.shape == raws[g.t].shape and set(np.unique(lab)) == {0, 1}
        assert 0.05 < (lab > 0).mean() < 0.6  # one large cell
        _objects_brighter_than_background(raws[g.t], lab, margin=300)


def test_tric_small_dense_touching_nuclei_and_sparse_gt(tric: Path) -> None:
    raws = _check_layout(tric, "01", 2, (13, 700, 1000), np.uint8)
    tra = tifffile.imread(tric / "01_GT" / "TRA" / "man_track000.tif")
    n = np.unique(tra).size - 1
    assert n > 1000
    # touching neighbours: many foreground voxels have a different label right next to them in x
    a, b = tra[:, :, :-1], tra[:, :, 1:]
    assert np.count_nonzero((a > 0) & (b > 0) & (a != b)) > 1000
    gt = list_gt_seg(tric / "01_GT" / "SEG")
    assert gt and all(g.z is not None for g in gt)
    for g in gt:
        sl = tifffile.imread(g.path)
        full = tifffile.imread(tric / "01_GT" / "TRA" / f"man_track{g.t:03d}.tif")[g.z]
        annotated, in_slice = np.unique(sl).size - 1, np.unique(full).size - 1
        assert 0 < annotated < 0.7 * in_slice  # sparse gold truth
        _objects_brighter_than_background(raws[g.t][g.z], sl, margin=10)


def test_tracks_consistent_and_valid_for_py_ctcmetrics(mda: Path) -> None:
    from ctc_metrics.metrics import valid
    from ctc_metrics.utils.filesystem import parse_masks, read_tracking_file

    tra_dir = mda / "01_GT" / "TRA"
    tracks = read_tracking_file(str(tra_dir / "man_track.txt"))
    masks = parse_masks(str(tra_dir))
    labels = [np.unique(tifffile.imread(m)) for m in masks]
    labels = [lab[lab > 0].tolist() for lab in labels]
    assert valid(masks, tracks, labels) == 1
    # our own check: a label is present exactly in frames begin..end; daughters start after the parent ends
    rec = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in tracks}
    for t, present in enumerate(labels):
        assert set(present) == {i for i, (b, e, _) in rec.items() if b <= t <= e}
    daughters = [(i, b, p) for i, (b, e, p) in rec.items() if p > 0]
    assert daughters, "seed chosen to contain a division"
    for _, b, p in daughters:
        assert rec[p][1] == b - 1
        assert sum(q == p for _, _, q in daughters) == 2


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    a = generate("MDA231", tmp_path / "a", frames=2, seed=21)
    b = generate("MDA231", tmp_path / "b", frames=2, seed=21)
    c = generate("MDA231", tmp_path / "c", frames=2, seed=22)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert da["01/t000.tif"] != dc["01/t000.tif"]
    # frame t does not depend on the sequence length
    d = generate("MDA231", tmp_path / "d", frames=1, seed=21)
    assert _tree_digest(d)["01/t000.tif"] == da["01/t000.tif"]


def test_cli_synth_with_preview_and_record(tmp_path: Path) -> None:
    png = tmp_path / "prev.png"
    rc = main(["synth", "--profile", "A549-SIM", "--out", str(tmp_path), "--frames", "1", "--seed", "4",
               "--preview", str(png), "-q"])
    assert rc == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (350, 300) and im.mode == "RGB"
    meta = json.loads((tmp_path / "Fluo-C3DH-A549-SIM" / "synth.json").read_text())
    assert meta["sequences"]["01"]["seed"] == 4 and "SYNTHETIC" in meta["note"]


def test_cli_synth_bad_arguments(tmp_path: Path) -> None:
    import subprocess
    import sys

    with pytest.raises(SystemExit):
        main(["synth", "--profile", "HeLa", "--out", str(tmp_path)])
    with pytest.raises(ValueError):
        generate("MDA231", tmp_path, frames=0)
    # a bad --seq or --frames is one error line and exit code 2, not a traceback; nothing is written
    assert main(["synth", "--profile", "MDA231", "--out", str(tmp_path / "s"), "--frames", "0"]) == 2
    res = subprocess.run([sys.executable, "-m", "efficientcellseg", "synth", "--profile", "MDA231", "--out",
                          str(tmp_path / "s"), "--seq", "100"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "seq must be two digits like 01, got '100'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_benchmark_frame_matches_first_generated_frame(tmp_path: Path, mda: Path) -> None:
    raw, lab = generate_frame_for_benchmark("MDA231", seed=SEED_DIVIDES)
    assert lab.dtype == np.uint16
    np.testing.assert_array_equal(raw, tifffile.imread(mda / "01" / "t000.tif"))
    np.testing.assert_array_equal(lab, tifffile.imread(mda / "01_GT" / "TRA" / "man_track000.tif"))
