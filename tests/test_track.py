"""Linking (efficientcellseg.track): hand-made golden cases, folder errors, true masks with shuffled labels,
the run script with EFFICIENTCELLSEG_TRACK=1."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficientcellseg.cli import main as cli_main
from efficientcellseg.errors import CTCInputError
from efficientcellseg.synth import simulator
from efficientcellseg.track import TrackParams, link_masks, track_folder
from efficientcellseg.weights import create_untrained_model_folder
from evaluation.ctc_tra import check_result
from evaluation.tra import check_tracks, graph_ops, match_frame, tra_score

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 40, 40)
PARAMS = TrackParams((1.0, 1.0, 1.0), displacement_um=2.0, division_distance_um=10.0, max_gap=2)


def _ball(centre: tuple[float, float, float], r: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + ((y - centre[1]) ** 2 + (x - centre[2]) ** 2) < r * r


def _frame(*cells: tuple[int, tuple[float, float, float], float]) -> np.ndarray:
    """A uint16 mask with one ball per ``(label, centre, radius)``."""
    m = np.zeros(SHAPE, np.uint16)
    for lab, c, r in cells:
        m[_ball(c, r)] = lab
    return m


def _label_at(mask: np.ndarray, zyx: tuple[int, int, int]) -> int:
    return int(mask[zyx])


def _rows(table: np.ndarray) -> list[tuple[int, int, int, int]]:
    return sorted(map(tuple, table.tolist()))


# ----------------------------------------------------------------------------------------------- golden cases
def test_moving_cells_keep_their_labels() -> None:
    """Two cells, one moving 2 px per frame; their labels are swapped and renumbered in every input frame."""
    labels = [(5, 9), (300, 2), (1, 7), (2, 1)]
    masks = [_frame((a, (4, 10, 10 + 2 * t), 4), (b, (4, 30, 30), 4)) for t, (a, b) in enumerate(labels)]
    out, table = link_masks(masks, PARAMS)
    mover = {_label_at(m, (4, 10, 10 + 2 * t)) for t, m in enumerate(out)}
    still = {_label_at(m, (4, 30, 30)) for m in out}
    assert len(mover) == 1 and len(still) == 1 and mover != still
    assert _rows(table) == [(1, 0, 3, 0), (2, 0, 3, 0)]
    assert all(m.dtype == np.uint16 for m in out)
    assert check_tracks(table, [(t, np.unique(m)[1:]) for t, m in enumerate(out)]) == []


def test_division_gives_two_daughters_with_the_mother_as_parent() -> None:
    mother = [_frame((4, (4, 20, 20), 5)) for _ in range(2)]
    daughters = [_frame((8, (4, 20, 14 - t), 4), (3, (4, 20, 26 + t), 4)) for t in range(2)]
    out, table = link_masks(mother + daughters, PARAMS)
    m = _label_at(out[0], (4, 20, 20))
    d1, d2 = _label_at(out[2], (4, 20, 14)), _label_at(out[2], (4, 20, 26))
    assert len({m, d1, d2}) == 3
    assert _label_at(out[3], (4, 20, 13)) == d1 and _label_at(out[3], (4, 20, 27)) == d2
    assert _rows(table) == sorted([(m, 0, 1, 0), (d1, 2, 3, m), (d2, 2, 3, m)])


def test_a_moving_cell_next_to_a_new_cell_is_not_a_division() -> None:
    """Volumes that do not fit (a full-size cell plus a small newcomer) keep the track going."""
    masks = [_frame((1, (4, 20, 20 + t), 5)) for t in range(2)]
    masks.append(_frame((1, (4, 20, 22), 5), (2, (4, 20, 31), 2.5)))
    out, table = link_masks(masks, PARAMS)
    assert _label_at(out[0], (4, 20, 20)) == _label_at(out[2], (4, 20, 22))
    assert _rows(table) == [(1, 0, 2, 0), (2, 2, 2, 0)]


def test_a_continuing_cell_does_not_also_divide() -> None:
    """Two new half-size cells appear beside a cell that goes on unchanged: no division (its track goes on)."""
    masks = [_frame((1, (4, 20, 20), 5)) for _ in range(2)]
    masks.append(_frame((1, (4, 20, 20), 5), (2, (4, 13, 25), 4), (3, (4, 27, 25), 4)))
    out, table = link_masks(masks, PARAMS)
    assert _rows(table) == [(1, 0, 2, 0), (2, 2, 2, 0), (3, 2, 2, 0)]
    assert check_tracks(table, [(t, np.unique(m)[1:]) for t, m in enumerate(out)]) == []


@pytest.mark.parametrize("max_gap", [2, 0])
def test_gap_is_closed_with_the_ctc_parent_convention(max_gap: int) -> None:
    """Present in frames 0, 1 and 3: two tracks, the later one's parent is the earlier (not with max_gap 0)."""
    still = (9, (4, 30, 8), 4)
    masks = [_frame((2, (4, 10, 10), 4), still), _frame((2, (4, 10, 11), 4), still), _frame(still),
             _frame((6, (4, 10, 13), 4), still)]
    params = TrackParams((1.0, 1.0, 1.0), 2.0, 10.0, max_gap=max_gap)
    out, table = link_masks(masks, params)
    first, later, s = _label_at(out[0], (4, 10, 10)), _label_at(out[3], (4, 10, 13)), _label_at(out[0], (4, 30, 8))
    assert first != later
    assert _rows(table) == sorted([(first, 0, 1, 0), (s, 0, 3, 0), (later, 3, 3, first if max_gap else 0)])
    assert check_tracks(table, [(t, np.unique(m)[1:]) for t, m in enumerate(out)]) == []


def test_cell_leaving_the_volume_ends_its_track() -> None:
    still = (1, (4, 30, 8), 4)
    masks = [_frame((2, (4, 10, 30 + 4 * t), 4), still) for t in range(3)] + [_frame(still)]
    out, table = link_masks(masks, PARAMS)
    leaving = {_label_at(out[t], (4, 10, min(30 + 4 * t, 39))) for t in range(3)}
    assert len(leaving) == 1
    assert _rows(table) == sorted([(_label_at(out[0], (4, 30, 8)), 0, 3, 0), (leaving.pop(), 0, 2, 0)])


# ----------------------------------------------------------------------------------------------- folders
def _write_masks(res: Path, masks: list[np.ndarray], digits: int = 3) -> None:
    res.mkdir(parents=True, exist_ok=True)
    for t, m in enumerate(masks):
        tifffile.imwrite(res / f"mask{t:0{digits}d}.tif", m)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_track_folder_relabels_every_mask_and_writes_a_valid_res_track(tmp_path) -> None:
    res = tmp_path / "Fluo-N3DL-TRIC" / "01_RES"
    mother = [_frame((4, (4, 20, 20), 5)) for _ in range(2)]
    _write_masks(res, mother + [_frame((8, (4, 20, 14), 4), (3, (4, 20, 26), 4))])
    report = track_folder(res, dataset="TRIC")
    assert (report.n_frames, report.n_tracks, report.n_divisions) == (3, 3, 1)
    assert sorted(p.name for p in res.iterdir()) == ["mask000.tif", "mask001.tif", "mask002.tif", "res_track.txt"]
    assert (res / "res_track.txt").read_text() == "1 0 1 0\n2 2 2 1\n3 2 2 1\n"
    assert tifffile.imread(res / "mask002.tif").dtype == np.uint16
    assert check_result(res) == []
    # the dataset comes from the folder name; a second run gives the same result
    before = _digest(res)
    assert cli_main(["track", "--res", str(res), "-q"]) == 0
    assert _digest(res) == before


def _assert_untouched(res: Path, before: dict[str, str]) -> None:
    assert _digest(res) == before  # no mask relabelled, no res_track.txt, no temporary file left


def test_missing_frame_is_an_error_and_changes_nothing(tmp_path, caplog) -> None:
    res = tmp_path / "res"
    _write_masks(res, [_frame((1, (4, 10, 10), 4))] * 3)
    (res / "mask001.tif").unlink()
    before = _digest(res)
    with pytest.raises(CTCInputError, match=r"no mask for frame\(s\) \[1\] between 0 and 2"):
        track_folder(res, dataset="TRIC")
    _assert_untouched(res, before)
    assert cli_main(["track", "--res", str(res), "--dataset", "TRIC"]) == 2
    assert "no mask for frame" in caplog.text


def test_missing_mask_for_an_input_frame(tmp_path) -> None:
    seq = tmp_path / "01"
    seq.mkdir()
    for t in range(3):
        (seq / f"t{t:03d}.tif").write_bytes(b"")
    res = tmp_path / "01_RES"
    _write_masks(res, [_frame((1, (4, 10, 10), 4))] * 2)
    before = _digest(res)
    with pytest.raises(CTCInputError, match=r"mask002.tif: missing \(raw frame t002.tif has no mask\)"):
        track_folder(res, dataset="TRIC", input_dir=seq)
    _assert_untouched(res, before)
    (seq / "t002.tif").unlink()
    (seq / "t001.tif").unlink()
    with pytest.raises(CTCInputError, match=r"mask001.tif: no raw frame t001.tif in .* remove it before linking"):
        track_folder(res, dataset="TRIC", input_dir=seq)
    _assert_untouched(res, before)


def test_frames_of_different_shapes(tmp_path) -> None:
    res = tmp_path / "res"
    _write_masks(res, [_frame((1, (4, 10, 10), 4))] * 2)
    tifffile.imwrite(res / "mask002.tif", np.zeros((8, 40, 41), np.uint16))
    before = _digest(res)
    with pytest.raises(CTCInputError, match=r"mask002.tif: shape \(8, 40, 41\) differs from the first mask's"):
        track_folder(res, dataset="TRIC")
    _assert_untouched(res, before)


def test_unreadable_mask(tmp_path) -> None:
    res = tmp_path / "res"
    _write_masks(res, [_frame((1, (4, 10, 10), 4))] * 2)
    (res / "mask001.tif").write_bytes(b"II*\x00 not a tiff")
    before = _digest(res)
    with pytest.raises(CTCInputError, match=r"mask001.tif: cannot read TIFF"):
        track_folder(res, dataset="TRIC")
    _assert_untouched(res, before)


def test_more_than_65535_tracks_is_an_error_before_writing(tmp_path) -> None:
    """40000 single-voxel objects per frame, far from each other's frame: 80000 tracks cannot be uint16."""
    res = tmp_path / "res"
    a = np.zeros((1, 400, 900), np.uint16)
    b = np.zeros_like(a)
    a[0, ::2, 0:400:2] = np.arange(1, 40001).reshape(200, 200)
    b[0, ::2, 500:900:2] = np.arange(1, 40001).reshape(200, 200)
    _write_masks(res, [a, b])
    before = _digest(res)
    with pytest.raises(CTCInputError, match=r"linking gives 80000 tracks, more than the 65535"):
        track_folder(res, dataset="TRIC")
    _assert_untouched(res, before)


# ----------------------------------------------------------------------------------------------- synthetic truth
@pytest.mark.parametrize(("profile", "small", "frames"), [("MDA231", False, 8), ("TRIC", True, 4)])
def test_linking_shuffled_true_masks_reaches_tra_099(profile: str, small: bool, frames: int) -> None:
    """The generator's true masks with every frame's labels shuffled: linking must recover the tracks."""
    from efficientcellseg.datasets import get_dataset

    sim = simulator(profile, seed=231, small=small)
    truth = [lab.astype(np.uint16) for _, lab, _, _ in sim.run(frames)]
    gt_tracks = np.array([[i, *v] for i, v in sorted(sim.tracks.items())], np.int64)
    assert check_tracks(gt_tracks, [(t, np.unique(m)[1:]) for t, m in enumerate(truth)]) == []  # truth consistent
    assert (gt_tracks[:, 3] > 0).any()  # the sequence has divisions
    rng = np.random.default_rng(0)
    shuffled = []
    for m in truth:
        perm = np.zeros(65536, np.uint16)
        perm[1:] = rng.permutation(65535) + 1
        shuffled.append(perm[m])
    out, table = link_masks(shuffled, TrackParams.from_dataset(get_dataset(profile)))
    ops = graph_ops(gt_tracks, table, [match_frame(t, g, r) for t, (g, r) in enumerate(zip(truth, out, strict=True))])
    assert ops.fn == ops.fp == ops.ns == 0
    assert tra_score(ops) >= 0.99, ops


# ----------------------------------------------------------------------------------------------- run script
@pytest.fixture(scope="module")
def a549_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    create_untrained_model_folder(root / "A549-SIM-seg", "A549-SIM", task="seg", seed=1)
    return root


def _run(models: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EFFICIENTCELLSEG_MODELS=str(models), **env_vars)
    return subprocess.run([str(REPO / "run_A549-SIM.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_run_script_with_tracking_writes_a_valid_submission(tmp_path, a549_models) -> None:
    """Three tiny frames (a bright moving blob, 3 network passes each) through ./run_A549-SIM.sh."""
    seq = tmp_path / "Fluo-C3DH-A549-SIM" / "01"
    seq.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(3):
        raw = rng.normal(300, 20, (3, 64, 64)) + 1200 * _ball((1, 30, 24 + 3 * t), 12, (3, 64, 64))
        tifffile.imwrite(seq / f"t{t:03d}.tif", raw.astype(np.uint16), photometric="minisblack")
    res = _run(a549_models, "01", str(tmp_path), EFFICIENTCELLSEG_TRACK="1")
    assert res.returncode == 0, res.stderr[-2000:]
    out = seq.parent / "01_RES"
    assert sorted(p.name for p in out.iterdir()) == ["mask000.tif", "mask001.tif", "mask002.tif", "res_track.txt"]
    assert check_result(out) == []
    assert "linked into" in res.stderr


def test_run_script_bad_tracking_variable(tmp_path, a549_models) -> None:
    res = _run(a549_models, "01", str(tmp_path), EFFICIENTCELLSEG_TRACK="yes")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: EFFICIENTCELLSEG_TRACK=yes is not 0 or 1"


def _dense_assignment_cost(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray, cost: np.ndarray) -> float:
    """The optimum of the textbook dense augmented matrix (every stand-in pair free), by linear_sum_assignment."""
    from scipy.optimize import linear_sum_assignment

    from efficientcellseg.track import NO_LINK_COST

    m = np.full((n_rows + n_cols, n_cols + n_rows), 1e9)
    m[rows, cols] = cost
    m[np.arange(n_rows), n_cols + np.arange(n_rows)] = NO_LINK_COST
    m[n_rows + np.arange(n_cols), np.arange(n_cols)] = NO_LINK_COST
    m[n_rows:, n_cols:] = 0.0
    r, c = linear_sum_assignment(m)
    return float(m[r, c].sum())


def test_sparse_assignment_reaches_the_dense_optimum() -> None:
    """The sparse augmented assignment (stand-in block = transposed allowed pairs) finds links whose total cost
    (links + NO_LINK_COST per unlinked item) equals the dense formulation's optimum, on random problems with
    ties, empty rows and columns, and pairs dearer than two stand-ins."""
    from efficientcellseg.track import NO_LINK_COST, _assign

    rng = np.random.default_rng(0)
    for trial in range(200):
        nr, nc = (int(v) for v in rng.integers(1, 25, 2))
        idx = rng.choice(nr * nc, size=min(int(rng.integers(1, nr * nc + 1)), 50), replace=False)
        rows, cols = idx // nc, idx % nc
        cost = rng.uniform(0.0, 2.5, idx.size)
        if trial % 3 == 0:
            cost = np.round(cost, 1)  # ties, and exact zeros
        links = _assign(nr, nc, rows, cols, cost)
        assert len({i for i, _ in links}) == len(links) == len({j for _, j in links})  # each item used once
        table = {(int(r), int(c)): w for r, c, w in zip(rows, cols, cost, strict=True)}
        total = sum(table[p] for p in links) + NO_LINK_COST * (nr + nc - 2 * len(links))
        assert total == pytest.approx(_dense_assignment_cost(nr, nc, rows, cols, cost), abs=1e-9)


def test_assignment_of_one_huge_component() -> None:
    """20,000 objects in one chain of allowed pairs (each may go to itself or its neighbour), as a noisy frame
    of thousands of touching fragments gives: the optimum (everyone to itself) comes back. The dense solver per
    component needed a 40,000^2 matrix here."""
    from efficientcellseg.track import _assign

    n = 20_000
    i = np.arange(n)
    rows = np.concatenate([i, i[:-1]])
    cols = np.concatenate([i, i[:-1] + 1])
    cost = np.concatenate([np.full(n, 0.1), np.full(n - 1, 0.5)])
    assert sorted(_assign(n, n, rows, cols, cost)) == [(k, k) for k in range(n)]
