"""CTC I/O: name parsing, validated reading with one-line errors, atomic uint16 writing."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from efficientcellseg.ctc_io import (
    check_output_dir,
    list_frames,
    list_gt_seg,
    read_frame,
    write_mask,
)
from efficientcellseg.errors import CTCInputError


def _frame(shape=(5, 32, 40), dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, shape).astype(dtype)


def test_list_frames_parses_indices_3_and_4_digits(tmp_path) -> None:
    for name in ["t010.tif", "t002.tif", "t1000.tif", "notes.txt", "mask001.tif", "t3.tif"]:
        (tmp_path / name).write_bytes(b"")
    frames = list_frames(tmp_path)
    assert [(f.index, f.digits, f.mask_name) for f in frames] == [
        (2, "002", "mask002.tif"), (10, "010", "mask010.tif"), (1000, "1000", "mask1000.tif")]


def test_list_frames_errors(tmp_path) -> None:
    with pytest.raises(CTCInputError, match="input folder does not exist"):
        list_frames(tmp_path / "01")
    with pytest.raises(CTCInputError, match="no frames named tTTT.tif"):
        list_frames(tmp_path)
    (tmp_path / "t001.tif").write_bytes(b"")
    (tmp_path / "t001.tiff").write_bytes(b"")
    with pytest.raises(CTCInputError, match=r"several files for time point\(s\) \[1\]"):
        list_frames(tmp_path)


def test_list_gt_seg_full_and_slice_files(tmp_path) -> None:
    for name in ["man_seg_003_012.tif", "man_seg001.tif", "man_seg_003_002.tif", "man_track001.tif"]:
        (tmp_path / name).write_bytes(b"")
    assert [(g.t, g.z) for g in list_gt_seg(tmp_path)] == [(1, None), (3, 2), (3, 12)]


def test_read_frame_accepts_uint8_uint16_and_squeezes_channel(tmp_path) -> None:
    for dt in (np.uint8, np.uint16):
        a = _frame(dtype=dt)
        tifffile.imwrite(tmp_path / "t000.tif", a)
        b = read_frame(tmp_path / "t000.tif")
        assert b.dtype == dt and np.array_equal(a, b)
    tifffile.imwrite(tmp_path / "t001.tif", _frame()[:, None], imagej=True)  # ZCYX with C=1
    assert read_frame(tmp_path / "t001.tif").shape == (5, 32, 40)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((32, 40), np.uint8), r"expected a 3D \(Z, Y, X\) frame, got shape \(32, 40\)"),
        (np.zeros((5, 32, 40), np.float32), "must be uint8 or uint16, got float32"),
        (np.zeros((40, 32, 5), np.uint8), r"shape \(40, 32, 5\) does not look like \(Z, Y, X\)"),
    ],
)
def test_read_frame_rejects_bad_frames(tmp_path, array, match) -> None:
    p = tmp_path / "t000.tif"
    tifffile.imwrite(p, array)
    with pytest.raises(CTCInputError, match=match) as exc:
        read_frame(p)
    assert str(p) in str(exc.value)


def test_read_frame_corrupt_and_empty_files(tmp_path) -> None:
    p = tmp_path / "t000.tif"
    p.write_bytes(b"II*\x00garbage")
    with pytest.raises(CTCInputError, match=r"t000\.tif: cannot read TIFF"):
        read_frame(p)
    p.write_bytes(b"")
    with pytest.raises(CTCInputError, match="cannot read TIFF"):
        read_frame(p)


def test_write_mask_is_uint16_atomic_and_refuses_overflow(tmp_path) -> None:
    labels = np.zeros((3, 8, 8), np.int32)
    labels[1, 2:4, 2:4] = 70000
    with pytest.raises(CTCInputError, match="outside 0..65535"):
        write_mask(tmp_path / "mask000.tif", labels)
    assert not (tmp_path / "mask000.tif").exists()
    labels[1, 2:4, 2:4] = 65535
    write_mask(tmp_path / "mask000.tif", labels)
    back = tifffile.imread(tmp_path / "mask000.tif")
    assert back.dtype == np.uint16 and back.shape == (3, 8, 8) and back.max() == 65535
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask000.tif"]  # no temp files left


def test_check_output_dir_never_writes_into_input_or_gt(tmp_path) -> None:
    seq = tmp_path / "01"
    seq.mkdir()
    with pytest.raises(CTCInputError, match="refusing to write results into the input folder"):
        check_output_dir(seq, seq)
    with pytest.raises(CTCInputError, match="input folder"):
        check_output_dir(seq / "RES", seq)
    with pytest.raises(CTCInputError, match="GT/ST folder"):
        check_output_dir(tmp_path / "01_GT" / "SEG", seq)
    assert check_output_dir(tmp_path / "01_RES", seq).is_dir()
