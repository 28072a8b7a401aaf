"""TRA/DET (evaluation.tra): hand-computed golden cases, the validity check, py-ctcmetrics cross-check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from evaluation.ctc_tra import TraError, main, score_detection, score_tracking
from evaluation.tra import W_EA, W_EC, W_ED, W_FN, W_FP, W_NS, det_score, graph_ops, match_frame, tra_score

SHAPE = (20, 40)


def _sq(m: np.ndarray, lab: int, y: int, x: int, n: int = 6) -> np.ndarray:
    m[y:y + n, x:x + n] = lab
    return m


def _gt() -> tuple[list[np.ndarray], np.ndarray]:
    """Two cells over three frames, one moving: 6 nodes, 4 track links; AOGM_0 = 10*6 + 1.5*4 = 66."""
    frames = [_sq(_sq(np.zeros(SHAPE, np.uint16), 1, 2, 2 + t), 2, 12, 20) for t in range(3)]
    return frames, np.array([[1, 0, 2, 0], [2, 0, 2, 0]])


def _ops(gt: list[np.ndarray], gt_tracks: np.ndarray, res: list[np.ndarray], res_tracks: np.ndarray):
    return graph_ops(np.asarray(gt_tracks), np.asarray(res_tracks),
                     [match_frame(t, g, r) for t, (g, r) in enumerate(zip(gt, res, strict=True))])


def test_official_weights() -> None:
    assert (W_NS, W_FN, W_FP, W_ED, W_EA, W_EC) == (5, 10, 1, 1, 1.5, 1)


def test_perfect_result() -> None:
    gt, tracks = _gt()
    ops = _ops(gt, tracks, gt, tracks)
    assert (ops.n_nodes, ops.n_edges, ops.aogm) == (6, 4, 0)
    assert tra_score(ops) == 1.0 and det_score(ops) == 1.0


def test_one_false_negative() -> None:
    """Cell 2 missed in frame 2: FN 1 and its track link missing (EA 1): AOGM 10 + 1.5."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[2][res[2] == 2] = 0
    ops = _ops(gt, tracks, res, [[1, 0, 2, 0], [2, 0, 1, 0]])
    assert (ops.fn, ops.fp, ops.ns, ops.ed, ops.ea, ops.ec) == (1, 0, 0, 0, 1, 0)
    assert tra_score(ops) == pytest.approx(1 - 11.5 / 66, abs=1e-12)
    assert det_score(ops) == pytest.approx(1 - 10 / 60, abs=1e-12)


def test_one_false_positive() -> None:
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    _sq(res[1], 3, 12, 2)
    ops = _ops(gt, tracks, res, [[1, 0, 2, 0], [2, 0, 2, 0], [3, 1, 1, 0]])
    assert (ops.fn, ops.fp, ops.ns, ops.ed, ops.ea, ops.ec) == (0, 1, 0, 0, 0, 0)
    assert tra_score(ops) == pytest.approx(1 - 1 / 66, abs=1e-12)
    assert det_score(ops) == pytest.approx(1 - 1 / 60, abs=1e-12)


def test_half_coverage_is_not_a_match() -> None:
    """A result object covering exactly half of a marker does not match it (strict > 0.5): FN + FP."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[0][res[0] == 2] = 0
    res[0][12:15, 20:26] = 2  # 18 of 36 pixels
    ops = _ops(gt, tracks, res, tracks)
    assert (ops.fn, ops.fp, ops.ea) == (1, 1, 1)


def test_wrong_edge_semantics() -> None:
    """Cell 2 continues under a new label with cell 2 as parent: the track link became a parent link (EC 1)."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[2][res[2] == 2] = 3
    ops = _ops(gt, tracks, res, [[1, 0, 2, 0], [2, 0, 1, 0], [3, 2, 2, 2]])
    assert (ops.ed, ops.ea, ops.ec) == (0, 0, 1)
    assert tra_score(ops) == pytest.approx(1 - 1 / 66, abs=1e-12)
    assert det_score(ops) == 1.0
    # without the parent the link is missing instead (EA, weight 1.5)
    ops = _ops(gt, tracks, res, [[1, 0, 2, 0], [2, 0, 1, 0], [3, 2, 2, 0]])
    assert (ops.ed, ops.ea, ops.ec) == (0, 1, 0)
    assert tra_score(ops) == pytest.approx(1 - 1.5 / 66, abs=1e-12)


def test_one_redundant_edge() -> None:
    """The reference says cell 2 ends at frame 1 and a new cell 3 starts at frame 2 in the same place; a result
    that keeps one label links them: one redundant edge (ED 1). AOGM_0 = 10*6 + 1.5*3."""
    gt, _ = _gt()
    gt = [g.copy() for g in gt]
    gt[2][gt[2] == 2] = 3
    gt_tracks = np.array([[1, 0, 2, 0], [2, 0, 1, 0], [3, 2, 2, 0]])
    res, _ = _gt()
    ops = _ops(gt, gt_tracks, res, [[1, 0, 2, 0], [2, 0, 2, 0]])
    assert (ops.n_edges, ops.fn, ops.fp, ops.ed, ops.ea, ops.ec) == (3, 0, 0, 1, 0, 0)
    assert tra_score(ops) == pytest.approx(1 - 1 / 64.5, abs=1e-12)


def test_swapped_identities() -> None:
    """Labels swapped in the last frame: two redundant and two missing edges, AOGM 2*1 + 2*1.5."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[2] = np.where(gt[2] == 1, 2, np.where(gt[2] == 2, 1, 0)).astype(np.uint16)
    ops = _ops(gt, tracks, res, tracks)
    assert (ops.ed, ops.ea, ops.ec) == (2, 2, 0)
    assert tra_score(ops) == pytest.approx(1 - 5 / 66, abs=1e-12)


def test_merged_cells_need_a_split() -> None:
    """One object covers both markers of frame 1: NS 1; its edges are not compared, so all 4 links are missing."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[1][res[1] > 0] = 1
    res[2][res[2] == 2] = 3
    ops = _ops(gt, tracks, res, [[1, 0, 2, 0], [2, 0, 0, 0], [3, 2, 2, 0]])
    assert (ops.ns, ops.fn, ops.fp, ops.ed, ops.ea, ops.ec) == (1, 0, 0, 0, 4, 0)
    assert tra_score(ops) == pytest.approx(1 - 11 / 66, abs=1e-12)
    assert det_score(ops) == pytest.approx(1 - 5 / 60, abs=1e-12)


# ----------------------------------------------------------------------------------------------- folders
def _write_seq(root: Path, gt: list[np.ndarray], gt_tracks, res: list[np.ndarray], res_tracks) -> tuple[Path, Path]:
    gt_dir, res_dir = root / "01_GT", root / "01_RES"
    (gt_dir / "TRA").mkdir(parents=True)
    res_dir.mkdir()
    for t, (g, r) in enumerate(zip(gt, res, strict=True)):
        tifffile.imwrite(gt_dir / "TRA" / f"man_track{t:03d}.tif", g.astype(np.uint16))
        tifffile.imwrite(res_dir / f"mask{t:03d}.tif", r.astype(np.uint16))
    for folder, name, rows in ((gt_dir / "TRA", "man_track.txt", gt_tracks), (res_dir, "res_track.txt", res_tracks)):
        (folder / name).write_text("".join(" ".join(map(str, r)) + "\n" for r in np.asarray(rows).tolist()))
    return gt_dir, res_dir


def test_command_line_prints_tra_and_det(tmp_path, capsys) -> None:
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[2][res[2] == 2] = 0
    gt_dir, res_dir = _write_seq(tmp_path, gt, tracks, res, [[1, 0, 2, 0], [2, 0, 1, 0]])
    assert main(["--gt", str(gt_dir), "--res", str(res_dir), "-q"]) == 0
    assert capsys.readouterr().out == f"TRA {1 - 11.5 / 66:.6f}\nDET {1 - 10 / 60:.6f}\n"
    assert main(["--gt", str(gt_dir / "TRA"), "--res", str(res_dir), "-q"]) == 0  # the TRA folder itself
    assert main(["--res", str(res_dir), "--check"]) == 0
    assert capsys.readouterr().out.endswith(f"TRA {1 - 11.5 / 66:.6f}\nDET {1 - 10 / 60:.6f}\nvalid {res_dir}\n")


def test_detection_alone_needs_no_track_file(tmp_path) -> None:
    """DET of masks without res_track.txt (the segmentation benchmark's detection): a merge in frame 1 (NS 1),
    cell 2 missed in frame 2 (FN 1) and one false positive there (FP 1): AOGM_D 5 + 10 + 1 against 10 * 6; the
    same as DET of the tracked result."""
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[1][res[1] > 0] = 1
    res[2][res[2] == 2] = 0
    _sq(res[2], 3, 12, 2)
    gt_dir, res_dir = _write_seq(tmp_path, gt, tracks, res, [[1, 0, 2, 0], [2, 0, 0, 0], [3, 2, 2, 0]])
    tracked = score_tracking(gt_dir, res_dir)
    (res_dir / "res_track.txt").unlink()
    ops = score_detection(gt_dir, res_dir)
    assert (ops.ns, ops.fn, ops.fp, ops.n_nodes) == (1, 1, 1, 6)
    assert det_score(ops) == pytest.approx(1 - 16 / 60, abs=1e-12) == tracked.det
    assert det_score(score_detection(gt_dir / "TRA", res_dir)) == det_score(ops)  # the TRA folder itself
    (res_dir / "mask002.tif").unlink()
    with pytest.raises(TraError, match="no mask for frame 2"):
        score_detection(gt_dir, res_dir)


def _check_lines(tmp_path: Path, capsys, res_tracks_text: str, edit=None) -> list[str]:
    gt, tracks = _gt()
    _, res_dir = _write_seq(tmp_path, gt, tracks, gt, tracks)
    (res_dir / "res_track.txt").write_text(res_tracks_text)
    if edit:
        edit(res_dir)
    assert main(["--res", str(res_dir), "--check"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(ln.startswith("error: ") for ln in lines)
    return lines


@pytest.mark.parametrize(("text", "needle"), [
    ("1 0 2 0\n", "label 2 is in the mask but not in"),
    ("1 0 2 0\n2 0 2 0\n0 1 1 0\n", "track label 0"),
    ("1 0 2 0\n2 0 2 1\n", "parent 1 of track 2 ends at frame 2, not before its child begins (frame 0)"),
    ("1 0 2 0\n2 0 2 0\n2 0 2 0\n", "label 2 is listed twice"),
    ("1 0 2 0\n2 0 x 0\n", "line 2 '2 0 x 0' is not four integers"),
    ("1 0 2 0\n2 0 2 0\n3 0 0 2\n", "parent 2 of track 3 ends at frame 2"),
])
def test_check_names_each_broken_rule(tmp_path, capsys, text: str, needle: str) -> None:
    lines = _check_lines(tmp_path, capsys, text)
    assert any(needle in ln for ln in lines), lines


def test_check_reports_every_problem_on_its_own_line(tmp_path, capsys) -> None:
    def edit(res_dir: Path) -> None:
        m = tifffile.imread(res_dir / "mask001.tif")
        m[m == 2] = 0  # gap in track 2
        tifffile.imwrite(res_dir / "mask001.tif", m)
        (res_dir / "mask002.tif").write_bytes(b"II*\x00 not a tiff")  # unreadable

    lines = _check_lines(tmp_path, capsys, "1 0 2 0\n2 0 2 0\n0 1 1 0\n", edit)
    assert len(lines) == 4, lines
    assert "mask002.tif: unreadable file" in lines[0]
    assert any("track label 0" in ln for ln in lines)
    assert any("track 2 (0-2) is absent from frame(s) [1, 2]" in ln for ln in lines)
    assert any("track 1 (0-2) is absent from frame(s) [2]" in ln for ln in lines)


def test_missing_res_track_and_scoring_an_invalid_result(tmp_path, capsys) -> None:
    gt, tracks = _gt()
    gt_dir, res_dir = _write_seq(tmp_path, gt, tracks, gt, tracks)
    (res_dir / "res_track.txt").write_text("1 0 2 0\n")
    assert main(["--gt", str(gt_dir), "--res", str(res_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid result" in err[0] and "label 2 is in the mask but not in" in err[0]
    (res_dir / "res_track.txt").unlink()
    assert main(["--res", str(res_dir), "--check"]) == 2
    assert "res_track.txt: cannot read the track file" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- py-ctcmetrics
def _ctc_metrics(gt_dir: Path, res_dir: Path) -> tuple[float, float]:
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate_sequence(str(res_dir), str(gt_dir), metrics=["TRA", "DET"], threads=1)
    return r["TRA"], r["DET"]


def test_golden_cases_agree_with_py_ctcmetrics(tmp_path) -> None:
    gt, tracks = _gt()
    res = [g.copy() for g in gt]
    res[1][res[1] > 0] = 1  # a merge (NS) ...
    res[2][res[2] == 2] = 3  # ... a new track
    _sq(res[2], 4, 12, 2)  # ... and a false positive
    gt_dir, res_dir = _write_seq(tmp_path, gt, tracks, res, [[1, 0, 2, 0], [2, 0, 0, 0], [3, 2, 2, 0], [4, 2, 2, 0]])
    ours = score_tracking(gt_dir, res_dir)
    assert (ours.tra, ours.det) == pytest.approx(_ctc_metrics(gt_dir, res_dir), abs=1e-6)


def test_generated_sequence_agrees_with_py_ctcmetrics(tmp_path) -> None:
    """Synthetic MDA231 truth (with divisions), perturbed (objects dropped, two cells merged, a false positive,
    labels shuffled) and linked by efficientcellseg.track: TRA and DET equal py-ctcmetrics' to 1e-6."""
    from efficientcellseg.synth import simulator
    from efficientcellseg.track import track_folder

    sim = simulator("MDA231", seed=7)
    truth = [lab[:, ::2, ::2].astype(np.uint16) for _, lab, _, _ in sim.run(6)]  # subsampled: fast
    gt_tracks = []
    for lab in sorted(sim.tracks):
        present = [t for t, m in enumerate(truth) if (m == lab).any()]
        if present:
            gt_tracks.append([lab, present[0], present[-1], sim.tracks[lab][2]])
    rng = np.random.default_rng(3)
    res = []
    for m in truth:
        ids = np.unique(m)[1:]
        out = m.astype(np.int64)
        out[np.isin(m, ids[rng.random(ids.size) < 0.1])] = 0
        i, j = rng.choice(ids, 2, replace=False)
        out[m == j] = i
        out[10, 100:106, 100:106] = 900
        perm = np.arange(1000)
        perm[1:] = rng.permutation(999) + 1
        res.append(perm[out])
    gt_dir, res_dir = _write_seq(tmp_path / "Fluo-C3DL-MDA231", truth, gt_tracks, res, [])
    track_folder(res_dir, dataset="MDA231")
    ours = score_tracking(gt_dir, res_dir)
    assert ours.ops.ns > 0 and ours.ops.fp > 0 and ours.ops.ea > 0
    assert (ours.tra, ours.det) == pytest.approx(_ctc_metrics(gt_dir, res_dir), abs=1e-6)
