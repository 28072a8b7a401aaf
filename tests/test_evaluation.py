"""Tests of the standalone CTC SEG / PESEG package ``evaluation`` (golden hand-computed cases).

Every expected number is worked out by hand in the comment next to it. J = |R∩S| / |R∪S| with
|R∪S| = |R| + |S| - |R∩S|; a match needs 2|R∩S| > |R| (strict).
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from evaluation import ctc_seg
from evaluation.ctc_seg import SegError, score_sequence
from evaluation.seg import main, match_objects, peseg, pooled_seg, seg_score

# ------------------------------------------------------------------------------------------------ helpers


def write_tif(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` as a (multi-page, one page per slice for 3D) TIFF and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="minisblack")
    return path


def objects(m) -> dict[int, tuple[int, float]]:
    """{gt_label: (matched res label, J)} of an ObjectMatches."""
    return {int(g): (int(r), float(j)) for g, r, j in zip(m.gt_labels, m.res_labels, m.jaccard, strict=True)}


# ------------------------------------------------------------------------------------- pure array: golden


def test_exactly_half_overlap_is_no_match() -> None:
    gt = np.zeros((4, 6), np.uint16)
    gt[1, 0:4] = 1  # |R| = 4
    res = np.zeros_like(gt)
    res[1, 2:6] = 5  # covers 2 of the 4 pixels: 2 > 0.5*4 is false -> J = 0 (the IoU 2/6 is not used)
    m = match_objects(gt, res)
    assert objects(m) == {1: (0, 0.0)}
    assert m.intersections.tolist() == [0]
    assert seg_score(gt, res) == 0.0


def test_just_over_half_matches_with_exact_jaccard() -> None:
    gt = np.zeros((4, 8), np.uint16)
    gt[1, 0:5] = 1  # |R| = 5
    res = np.zeros_like(gt)
    res[1, 2:7] = 3  # |S| = 5, |R∩S| = 3 (columns 2,3,4): 3 > 2.5 -> match
    # J = 3 / (5 + 5 - 3) = 3/7
    m = match_objects(gt, res)
    assert objects(m) == {1: (3, pytest.approx(3 / 7, abs=1e-15))}
    assert m.gt_sizes.tolist() == [5]
    assert m.res_sizes.tolist() == [5]
    assert m.intersections.tolist() == [3]


def test_split_object_no_majority_scores_zero_one_majority_matches() -> None:
    gt = np.zeros((2, 10), np.uint16)
    gt[0, :] = 1  # R1, 10 px
    gt[1, :] = 2  # R2, 10 px
    res = np.zeros_like(gt)
    res[0, :5], res[0, 5:] = 11, 12  # R1 split 5 + 5: neither > 5 -> J = 0
    res[1, :6], res[1, 6:] = 21, 22  # R2 split 6 + 4: 21 matches, J = 6 / (10 + 6 - 6) = 0.6
    m = match_objects(gt, res)
    assert objects(m) == {1: (0, 0.0), 2: (21, pytest.approx(0.6, abs=1e-15))}
    # SEG = (0 + 0.6) / 2 = 0.3
    assert seg_score(gt, res) == pytest.approx(0.3, abs=1e-15)


def test_merged_result_object_matches_both_gt_objects() -> None:
    gt = np.zeros((3, 10), np.uint16)
    gt[1, 0:4] = 1  # A, 4 px
    gt[1, 4:10] = 2  # B, 6 px
    res = np.zeros_like(gt)
    res[1, :] = 8  # one S of 10 px covering both: A 4/4 > 0.5, B 6/6 > 0.5
    # J_A = 4 / (4 + 10 - 4) = 0.4 ; J_B = 6 / (6 + 10 - 6) = 0.6 ; SEG = 0.5
    m = match_objects(gt, res)
    assert objects(m) == {1: (8, pytest.approx(0.4, abs=1e-15)), 2: (8, pytest.approx(0.6, abs=1e-15))}
    assert m.res_sizes.tolist() == [10, 10]
    assert seg_score(gt, res) == pytest.approx(0.5, abs=1e-15)


def test_background_majority_is_no_match_and_false_positives_do_not_count() -> None:
    gt = np.zeros((4, 4), np.uint16)
    gt[0, :] = 1  # |R| = 4
    res = np.zeros_like(gt)
    res[0, 0] = 2  # 1 px of R in S, 3 px in background: no S with > 2 px -> J = 0
    res[3, :] = 9  # a false positive far away: no effect
    assert objects(match_objects(gt, res)) == {1: (0, 0.0)}


def test_result_without_background_pixels() -> None:
    gt = np.zeros((4, 4), np.uint16)
    gt[0, :] = 1  # R1: 4 px
    gt[2, :2] = 2  # R2: 2 px
    res = np.full((4, 4), 4, np.uint16)  # S4: 12 px, no background anywhere
    res[2, :] = 5  # S5: 4 px
    # R1: |R∩S4| = 4 > 2, J = 4 / (4 + 12 - 4) = 1/3 ; R2: |R∩S5| = 2 > 1, J = 2 / (2 + 4 - 2) = 1/2
    # SEG = (1/3 + 1/2) / 2 = 5/12 (py-ctcmetrics 1.3.3 drops label 4 as if it were background: 0.25)
    m = match_objects(gt, res)
    assert objects(m) == {1: (4, pytest.approx(1 / 3, abs=1e-15)), 2: (5, 0.5)}
    assert seg_score(gt, res) == pytest.approx(5 / 12, abs=1e-15)


def test_empty_result_scores_zero() -> None:
    gt = np.zeros((5, 5), np.uint16)
    gt[0:2, 0:2] = 1
    gt[3:5, 3:5] = 2
    m = match_objects(gt, np.zeros_like(gt))
    assert objects(m) == {1: (0, 0.0), 2: (0, 0.0)}
    assert seg_score(gt, np.zeros_like(gt)) == 0.0


def test_non_consecutive_labels() -> None:
    gt = np.zeros((4, 4), np.uint16)
    gt[0, 0:4] = 7  # |R7| = 4
    gt[2:4, 0:2] = 300  # |R300| = 4
    res = np.zeros_like(gt)
    res[0, 0:3] = 65535  # |S| = 3, |R7∩S| = 3 > 2: J = 3 / (4 + 3 - 3) = 0.75
    res[2:4, 0:2] = 2
    res[3, 2] = 2  # |S2| = 5, |R300∩S2| = 4: J = 4 / (4 + 5 - 4) = 0.8
    m = match_objects(gt, res)
    assert objects(m) == {7: (65535, 0.75), 300: (2, pytest.approx(0.8, abs=1e-15))}
    # SEG = (0.75 + 0.8) / 2 = 0.775
    assert seg_score(gt, res) == pytest.approx(0.775, abs=1e-15)


def test_more_than_65535_gt_labels_in_int32() -> None:
    n = 70_000
    gt = np.repeat(np.arange(1, n + 1, dtype=np.int32), 2).reshape(280, 500)  # object L = 2 adjacent px
    res = np.where(gt <= 65535, gt, 0).astype(np.uint16)  # objects 1..65535 exact (J = 1), the rest empty
    # SEG = 65535 / 70000. Casting the GT to uint16 would wrap 65536.. onto 0.. and merge objects 1..4464
    # with them (|R| = 4, |R∩S| = 2 = half -> J = 0), giving (65535 - 4464) / 65536 instead.
    m = match_objects(gt, res)
    assert m.n_objects == n
    assert int(m.gt_labels[-1]) == n
    assert seg_score(gt, res) == pytest.approx(65535 / 70000, abs=1e-12)
    # labels above the bincount look-up range (np.unique / searchsorted paths), both images int64
    big_gt = np.where(gt > 0, gt.astype(np.int64) + 5_000_000, 0)
    big_res = np.where(res > 0, res.astype(np.int64) + 9_000_000, 0)
    m2 = match_objects(big_gt, big_res)
    assert m2.n_objects == n
    assert m2.res_labels[:3].tolist() == [9_000_001, 9_000_002, 9_000_003]
    assert float(m2.jaccard.sum()) == 65535.0


def test_dense_and_sparse_joint_histograms_agree() -> None:
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 40, size=(30, 30)).astype(np.uint16)
    gt = np.repeat(np.repeat(gt, 2, 0), 2, 1)  # 2x2 blocks so that some majorities exist
    res = np.roll(gt, 1, axis=1) * 3
    dense = match_objects(gt, res)
    sparse = match_objects(gt, res, max_dense_cells=0)
    assert np.count_nonzero(dense.res_labels) > 10
    for field in ("gt_labels", "gt_sizes", "res_labels", "res_sizes", "intersections", "jaccard"):
        np.testing.assert_array_equal(getattr(dense, field), getattr(sparse, field))


def test_result_sizes_counted_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluation.matching as seg_module

    gt = np.zeros((6, 9), np.uint16)
    gt[1, 0:4] = 3  # |R| = 4
    res = np.zeros((6, 9), np.uint16)
    res[1, 0:3] = 8  # |R∩S| = 3
    res[4:6, :] = 8  # + 18 px elsewhere: |S| = 21, J = 3 / (4 + 21 - 3) = 3/22
    expected = [3 / 22]
    for chunk in (7, 1 << 22):  # many chunks (the last one partial) and one chunk
        monkeypatch.setattr(seg_module, "_CHUNK", chunk)
        assert match_objects(gt, res).jaccard.tolist() == expected
        big = match_objects(gt.astype(np.int64) * 10**7, res.astype(np.int64) * 10**7)  # searchsorted path
        assert big.res_sizes.tolist() == [21] and big.jaccard.tolist() == expected


def test_match_against_brute_force_per_object() -> None:
    rng = np.random.default_rng(11)
    gt = np.kron(rng.integers(0, 25, size=(12, 12)), np.ones((3, 3), np.int64)).astype(np.uint16)
    res = np.roll(gt, 1, axis=1) * 2  # shifted copy: some majorities, some not
    res[rng.random(res.shape) < 0.2] = 99  # noise
    m = match_objects(gt, res)
    for lab, j in zip(m.gt_labels.tolist(), m.jaccard.tolist(), strict=True):  # slow reference, per object
        r = gt == lab
        expect = 0.0
        for s in np.unique(res[r]):
            inter = int(np.count_nonzero(r & (res == s)))
            if s != 0 and 2 * inter > int(r.sum()):
                expect = inter / int(np.count_nonzero(r | (res == s)))
        assert j == expect
    assert 0 < np.count_nonzero(m.jaccard) < m.n_objects


def test_pooled_mean_differs_from_mean_of_per_image_means() -> None:
    a = np.zeros((4, 4), np.uint16)
    a[0, 0] = 1  # image A: one object, matched exactly: J = 1
    b = np.zeros((4, 4), np.uint16)
    b[0, 0], b[1, 1], b[2, 2] = 1, 2, 3  # image B: three objects, empty result: J = 0, 0, 0
    ma, mb = match_objects(a, a), match_objects(b, np.zeros_like(b))
    # pooled: (1 + 0 + 0 + 0) / 4 = 0.25 ; mean of per-image means would be (1 + 0) / 2 = 0.5
    assert pooled_seg([ma, mb]) == 0.25
    with pytest.raises(ValueError, match="no reference objects"):
        pooled_seg([match_objects(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))])


def test_array_validation_messages() -> None:
    gt = np.ones((5, 7), np.uint16)
    with pytest.raises(ValueError, match=r"shape \(5, 6\).*shape \(5, 7\)"):
        match_objects(gt, np.ones((5, 6), np.uint16))
    with pytest.raises(ValueError, match="float32"):
        match_objects(gt, np.ones((5, 7), np.float32))
    with pytest.raises(ValueError, match="negative"):
        match_objects(-np.ones((5, 7), np.int32), gt)


def test_peseg_reproduces_paper_tables() -> None:
    # 0.951 / 6.7e6 * 1e6 = 0.14194 -> 0.142 ; 0.646 / 13.4 = 0.04821 -> 0.048
    # 0.782 / 6.7 = 0.11672 -> 0.117 ; 0.955 / 176.0 = 0.005426 -> 0.005
    assert round(peseg(0.951, 6_700_000), 3) == 0.142
    assert round(peseg(0.646, 13_400_000), 3) == 0.048
    assert round(peseg(0.782, 6_700_000), 3) == 0.117
    assert round(peseg(0.955, 176_000_000), 3) == 0.005
    assert peseg(0.5, 1_000_000) == 0.5
    with pytest.raises(ValueError, match="positive integer"):
        peseg(0.9, 0)
    with pytest.raises(ValueError, match="positive integer"):
        peseg(0.9, 6.7e6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        peseg(1.5, 10)


# ------------------------------------------------------------------------------------------- CTC folders


def slice_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Frame 000 (Z=5, 6x8) with slice GT files z=1 and z=3 of the same cell (label 5), and the mask.

    Slice 1: R = 4 px, mask label 9 covers 3 of them and nothing else in that slice: J = 3 / 4 = 0.75.
    Slice 3: R = 4 px, label 9 covers exactly 2 of them: no match, J = 0.
    Slice 2 holds a big label 9 region that must be ignored (|S| is counted in the compared slice only).
    SEG = (0.75 + 0) / 2 = 0.375. (Stacking both slices as one image would give R = 8 px, |R∩S| = 5 > 4,
    J = 5 / (8 + 5 - 5) = 0.625, counted once.)
    """
    gt_dir, res_dir = tmp_path / "DS" / "01_GT" / "SEG", tmp_path / "DS" / "01_RES"
    g1 = np.zeros((6, 8), np.uint16)
    g1[2, 2:6] = 5
    g3 = g1.copy()
    write_tif(gt_dir / "man_seg_000_001.tif", g1)
    write_tif(gt_dir / "man_seg_000_003.tif", g3)
    mask = np.zeros((5, 6, 8), np.uint16)
    mask[1, 2, 2:5] = 9
    mask[2, :, :] = 9
    mask[3, 2, 2:4] = 9
    write_tif(res_dir / "mask000.tif", mask)
    return gt_dir, res_dir


def test_slice_gt_scored_in_2d_each_file_once(tmp_path: Path) -> None:
    gt_dir, res_dir = slice_tree(tmp_path)
    score = score_sequence(gt_dir, res_dir)
    assert score.n_files == 2
    assert score.n_objects == 2
    assert [(f.gt.t, f.gt.z) for f in score.files] == [(0, 1), (0, 3)]
    assert [objects(f.matches) for f in score.files] == [{5: (9, 0.75)}, {5: (0, 0.0)}]
    assert score.files[0].matches.res_sizes.tolist() == [3]  # the slice's |S|, not the 3D one
    assert score.seg == 0.375
    assert (score.dataset, score.sequence) == (str(tmp_path / "DS"), "01")


def test_slice_gt_honours_slice_index(tmp_path: Path) -> None:
    gt_dir, res_dir = tmp_path / "GT", tmp_path / "RES"
    g = np.zeros((6, 8), np.uint16)
    g[1:3, 1:3] = 4  # R = 4 px
    write_tif(gt_dir / "man_seg_002_004.tif", g)
    mask = np.zeros((6, 6, 8), np.uint16)
    mask[4, 1:3, 1:3] = 12  # slice 4: exact, J = 1
    mask[3, 1:3, 1:3] = 0  # neighbours empty: reading slice 3 or 5 would give J = 0
    mask[5, :, :] = 77
    write_tif(res_dir / "mask002.tif", mask)
    assert score_sequence(gt_dir, res_dir).seg == 1.0


@pytest.mark.parametrize("photometric", ["minisblack", "rgb"])
def test_slice_read_same_for_per_page_and_single_page_tiffs(tmp_path: Path, photometric: str) -> None:
    # a (3, Y, X) array stored as one planar "RGB" page is read whole and sliced (the full-read path)
    gt_dir, res_dir = tmp_path / "GT", tmp_path / "RES"
    g = np.zeros((5, 6), np.uint16)
    g[0, 0:3] = 2  # R = 3 px
    write_tif(gt_dir / "man_seg_001_002.tif", g)
    mask = np.zeros((3, 5, 6), np.uint16)
    mask[2, 0, 0:2] = 3  # slice 2: |S| = 2, |R∩S| = 2 > 1.5: J = 2 / 3
    mask[1, 0, 0:3] = 3
    res_dir.mkdir(parents=True)
    planar = "separate" if photometric == "rgb" else None
    tifffile.imwrite(res_dir / "mask001.tif", mask, photometric=photometric, planarconfig=planar)
    with tifffile.TiffFile(res_dir / "mask001.tif") as tif:
        assert len(tif.pages) == (3 if photometric == "minisblack" else 1)
    assert score_sequence(gt_dir, res_dir).seg == pytest.approx(2 / 3, abs=1e-15)


def full_gt_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Full 3D GT for frames 000 and 002 (none for 001); masks for 000, 001 (garbage) and 0002 (4 digits).

    Frame 000: one object, exact result: J = 1. Frame 002: three objects, result only on the first, exact:
    J = 1, 0, 0. Pooled SEG = (1 + 1 + 0 + 0) / 4 = 0.5; a mean of per-frame means would be
    (1 + 1/3) / 2 = 0.6667. Pairing by sorted position would score frame 002 against mask 001 (empty) -> 0.25.
    An empty GT file for frame 003 contributes no objects.
    """
    gt_dir, res_dir = tmp_path / "DS" / "02_GT" / "SEG", tmp_path / "DS" / "02_RES"
    g0 = np.zeros((4, 5, 6), np.uint16)
    g0[1:3, 1:3, 1:3] = 3
    g2 = np.zeros((4, 5, 6), np.uint16)
    g2[0, 0, 0:2] = 1
    g2[2, 2, 2:4] = 2
    g2[3, 4, 4:6] = 40
    write_tif(gt_dir / "man_seg000.tif", g0)
    write_tif(gt_dir / "man_seg002.tif", g2)
    write_tif(gt_dir / "man_seg003.tif", np.zeros((4, 5, 6), np.uint16))
    write_tif(res_dir / "mask000.tif", g0)
    write_tif(res_dir / "mask001.tif", np.zeros((4, 5, 6), np.uint16))
    write_tif(res_dir / "mask0002.tif", np.where(g2 == 1, 1, 0).astype(np.uint16))
    write_tif(res_dir / "mask003.tif", np.zeros((4, 5, 6), np.uint16))
    return gt_dir, res_dir


def test_full_gt_pooled_over_files_paired_by_index(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    score = score_sequence(gt_dir, res_dir)
    assert [f.gt.t for f in score.files] == [0, 2, 3]
    assert [f.matches.n_objects for f in score.files] == [1, 3, 0]
    assert score.files[1].mask is not None and score.files[1].mask.name == "mask0002.tif"
    assert score.seg == 0.5


def test_missing_mask_is_an_error_naming_the_file(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    (res_dir / "mask0002.tif").unlink()
    with pytest.raises(SegError, match=r"mask002\.tif: missing result file for GT man_seg002\.tif"):
        score_sequence(gt_dir, res_dir)


def test_uint8_mask_is_an_error(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    write_tif(res_dir / "mask000.tif", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(SegError, match=r"mask000\.tif: result mask dtype is uint8; the CTC requires uint16"):
        score_sequence(gt_dir, res_dir)


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    write_tif(res_dir / "mask000.tif", np.zeros((4, 5, 7), np.uint16))
    with pytest.raises(SegError, match=r"mask000\.tif: shape \(4, 5, 7\) does not match GT man_seg000\.tif"):
        score_sequence(gt_dir, res_dir)
    gt_s, res_s = slice_tree(tmp_path / "s")
    write_tif(res_s / "mask000.tif", np.zeros((3, 6, 8), np.uint16))  # slice 3 does not exist
    with pytest.raises(SegError, match=r"mask000\.tif: has 3 slices but GT man_seg_000_003\.tif is slice 3"):
        score_sequence(gt_s, res_s)


def test_unreadable_mask_is_an_error(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    (res_dir / "mask000.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(SegError, match=r"mask000\.tif: unreadable result file"):
        score_sequence(gt_dir, res_dir)


def test_lenient_scores_bad_files_as_empty_with_a_warning(tmp_path: Path, caplog) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    write_tif(res_dir / "mask000.tif", np.zeros((4, 5, 6), np.uint8))  # frame 000's object now J = 0
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        score = score_sequence(gt_dir, res_dir, lenient=True)
    # (0 + 1 + 0 + 0) / 4 = 0.25
    assert score.seg == 0.25
    assert score.files[0].problem is not None and "uint8" in score.files[0].problem
    assert any("mask000.tif" in r.getMessage() and "--lenient" in r.getMessage() for r in caplog.records)
    missing = score_sequence(gt_dir, tmp_path / "no_such_RES", lenient=True)
    assert missing.n_objects == 4 and missing.seg == 0.0


def test_all_gt_empty_is_an_error(tmp_path: Path) -> None:
    gt_dir, res_dir = tmp_path / "GT", tmp_path / "RES"
    write_tif(gt_dir / "man_seg000.tif", np.zeros((4, 4), np.uint16))
    write_tif(res_dir / "mask000.tif", np.zeros((4, 4), np.uint16))
    with pytest.raises(SegError, match="no reference object in any GT file"):
        score_sequence(gt_dir, res_dir)


def test_duplicate_mask_index_is_an_error(tmp_path: Path) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    write_tif(res_dir / "mask0000.tif", np.zeros((4, 5, 6), np.uint16))
    with pytest.raises(SegError, match="same frame index"):
        score_sequence(gt_dir, res_dir)


# -------------------------------------------------------------------------------------------------- CLI


def cli_lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_cli_prints_seg_and_peseg(tmp_path: Path, capsys) -> None:
    gt_dir, res_dir = slice_tree(tmp_path)
    assert main(["--gt", str(gt_dir), "--res", str(res_dir), "-q"]) == 0
    assert cli_lines(capsys) == ["SEG 0.375000"]
    # PESEG = 0.375 / 1_500_000 * 1e6 = 0.25
    assert main(["--gt", str(gt_dir), "--res", str(res_dir), "--params", "1500000", "-q"]) == 0
    assert cli_lines(capsys) == ["SEG 0.375000", "PESEG 0.250000"]


def test_cli_model_params_summed(tmp_path: Path, capsys) -> None:
    gt_dir, res_dir = slice_tree(tmp_path)
    for name, n in (("seg", 500_000), ("centre", 250_000)):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(json.dumps({"n_params": n}))
    argv = ["--gt", str(gt_dir), "--res", str(res_dir), "-q",
            "--model", str(tmp_path / "models" / "seg"), "--model", str(tmp_path / "models" / "centre")]
    assert main(argv) == 0
    # N = 750000: PESEG = 0.375 / 750000 * 1e6 = 0.5
    assert cli_lines(capsys) == ["SEG 0.375000", "PESEG 0.500000"]
    (tmp_path / "models" / "centre" / "config.json").write_text(json.dumps({"n_params": "250k"}))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "centre/config.json: needs a positive integer 'n_params'" in err[0]


def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    gt_dir, res_dir = full_gt_tree(tmp_path)
    write_tif(res_dir / "mask0002.tif", np.zeros((4, 5, 6), np.int16))
    assert main(["--gt", str(gt_dir), "--res", str(res_dir), "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "mask0002.tif: result mask dtype is int16" in err[0]
    # --lenient: frame 002 scored empty -> (1 + 0 + 0 + 0) / 4 = 0.25
    assert main(["--gt", str(gt_dir), "--res", str(res_dir), "--lenient", "-q"]) == 0
    assert cli_lines(capsys) == ["SEG 0.250000"]


def test_cli_several_sequences_table_and_csv(tmp_path: Path, capsys) -> None:
    slice_tree(tmp_path)  # DS/01: SEG 0.375
    full_gt_tree(tmp_path)  # DS/02: SEG 0.5
    out_csv = tmp_path / "objects.csv"
    assert main(["--dataset-dir", str(tmp_path / "DS"), "--csv", str(out_csv), "-q"]) == 0
    lines = cli_lines(capsys)
    # dataset score = (0.375 + 0.5) / 2 = 0.4375
    assert lines[-1] == "SEG 0.437500"
    table = "\n".join(lines[:-1])
    assert "0.375000" in table and "0.500000" in table and "0.437500" in table
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(ctc_seg.CSV_HEADER)
    assert len(rows) == 2 + 4  # 2 slice objects + 1 + 3 full-GT objects (the empty file adds none)
    first = rows[0]
    assert (Path(first["file"]).name, first["t"], first["z"], first["gt_label"], first["res_label"],
            first["gt_size"], first["intersection"], float(first["jaccard"])) == (
        "man_seg_000_001.tif", "0", "1", "5", "9", "4", "3", 0.75)
    assert rows[2]["z"] == "" and rows[2]["t"] == "0" and float(rows[2]["jaccard"]) == 1.0
    # the same two sequences as explicit pairs give the same summary
    assert main(["--gt", str(tmp_path / "DS/01_GT/SEG"), "--res", str(tmp_path / "DS/01_RES"),
                 "--gt", str(tmp_path / "DS/02_GT/SEG"), "--res", str(tmp_path / "DS/02_RES"), "-q"]) == 0
    assert cli_lines(capsys)[-1] == "SEG 0.437500"


def test_cli_unpaired_gt_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(tmp_path), "--gt", str(tmp_path), "--res", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.parametrize("module", ["evaluation.seg", "evaluation"])
def test_python_dash_m_entry_points(tmp_path: Path, module: str) -> None:
    gt_dir, res_dir = slice_tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", module, "--gt", str(gt_dir), "--res", str(res_dir),
                           "--params", "6700000"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # 0.375 / 6.7 = 0.0559701...
    assert proc.stdout.splitlines() == ["SEG 0.375000", "PESEG 0.055970"]
    assert "RuntimeWarning" not in proc.stderr


# ------------------------------------------------------------------------------ agreement with py-ctcmetrics


def random_volume(rng: np.random.Generator, shape: tuple[int, int, int], n: int) -> np.ndarray:
    """A deterministic label volume: ``n`` random boxes, random non-consecutive labels (later on top)."""
    vol = np.zeros(shape, np.uint16)
    labels = rng.choice(np.arange(1, 250), size=n, replace=False)
    for lab in labels:
        z0, y0, x0 = (int(rng.integers(0, s - 2)) for s in shape)
        dz, dy, dx = (int(rng.integers(2, 7)) for _ in shape)
        vol[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] = lab
    return vol


def test_agrees_with_py_ctcmetrics_on_full_3d_gt(tmp_path: Path) -> None:
    from ctc_metrics.scripts import evaluate  # py-ctcmetrics is pinned in requirements.txt: a missing one fails

    rng = np.random.default_rng(2024)
    gt_root, res_dir = tmp_path / "01_GT", tmp_path / "01_RES"
    for t in range(3):
        gt = random_volume(rng, (6, 40, 40), 25)
        res = np.roll(gt, shift=(0, int(rng.integers(0, 3)), int(rng.integers(0, 3))), axis=(0, 1, 2))
        res = res.copy()
        res[rng.random(res.shape) < 0.05] = 0  # noise
        perm = np.zeros(256, np.uint16)
        perm[1:] = rng.permutation(np.arange(1, 256))[: 255]
        res = perm[res]  # relabel (a permutation of 1..255, 0 stays 0)
        res[0, 0, 0] = 0
        write_tif(gt_root / "SEG" / f"man_seg{t:03d}.tif", gt)
        write_tif(gt_root / "TRA" / f"man_track{t:03d}.tif", gt)  # py-ctcmetrics needs TRA files
        write_tif(res_dir / f"mask{t:03d}.tif", res)
    ours = score_sequence(gt_root / "SEG", res_dir)
    assert ours.n_objects > 40
    assert 0.2 < ours.seg < 0.95  # a non-trivial case
    theirs = evaluate.evaluate_sequence(str(res_dir), str(gt_root), metrics=["SEG"], threads=1)["SEG"]
    assert abs(ours.seg - theirs) < 1e-6
