"""The CTC-layout writer shared by the validation-only image models (synth_io)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficientcellseg.synth_io import SequenceWriter, claim_folder, record_sequence


def _labels() -> np.ndarray:
    lab = np.zeros((3, 8, 8), np.uint16)
    lab[0, :2, :2] = 1
    lab[1, 4:, 4:] = 2
    lab[2, 4:, :2] = 5
    return lab


def test_claim_marks_the_folder_at_once_and_a_repeat_replaces_only_its_sequence(tmp_path: Path) -> None:
    ds = tmp_path / "Fluo-N3DH-X"
    others = claim_folder(ds, "01", "C", "gen", "validation only")
    assert others == {} and json.loads((ds / "synth.json").read_text())["family"] == "C"
    out = SequenceWriter(ds, "01", 3)
    for t in range(3):
        out.frame(t, np.full((3, 8, 8), t, np.uint8), _labels())
    out.tracks("1 0 2 0\n")
    record_sequence(ds, "C", "gen", "validation only", others, "01", {"frames": 3})
    # sequence 02 beside it, then 01 again with fewer frames: 01's old frames go, 02 stays
    others = claim_folder(ds, "02", "C", "gen", "validation only")
    assert list(others) == ["01"]
    SequenceWriter(ds, "02", 1).frame(0, np.zeros((3, 8, 8), np.uint8), _labels())
    record_sequence(ds, "C", "gen", "validation only", others, "02", {"frames": 1})
    others = claim_folder(ds, "01", "C", "gen", "validation only")
    assert others == {"02": {"frames": 1}}
    assert list(json.loads((ds / "synth.json").read_text())["sequences"]) == ["02"]
    assert not list((ds / "01").glob("t*.tif")) and not (ds / "01_GT" / "TRA" / "man_track.txt").exists()
    assert (ds / "02" / "t000.tif").is_file()


def test_refusals_name_the_folder_and_write_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "synth.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"synth\.json: unreadable synth\.json .*write family B elsewhere"):
        claim_folder(bad, "01", "B", "gen", "note")
    real = tmp_path / "real"
    (real / "01").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a family-B folder"):
        claim_folder(real, "01", "B", "gen", "note")
    assert sorted(p.name for p in real.iterdir()) == ["01"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "synth.json").write_text('{"family": "C"}')
    with pytest.raises(ValueError, match="holds family-C synthetic data; write family B"):
        claim_folder(other, "01", "B", "gen", "note")


def test_writer_counts_objects_of_volumes_and_of_annotated_slices(tmp_path: Path) -> None:
    lab = _labels()
    full = SequenceWriter(tmp_path / "full", "01", 2)
    full.frame(0, np.zeros(lab.shape, np.uint16), lab)
    assert full.objects_per_frame == [3] and full.gold_objects == 3
    assert np.array_equal(tifffile.imread(tmp_path / "full" / "01_GT" / "SEG" / "man_seg000.tif"), lab)
    sliced = SequenceWriter(tmp_path / "sl", "01", 1200)  # over 1000 frames: four digits
    sliced.frame(7, np.zeros(lab.shape, np.uint16), lab, [(1, lab[1]), (2, lab[2])])
    assert sliced.objects_per_frame == [3] and sliced.gold_objects == 2
    names = sorted(p.name for p in (tmp_path / "sl" / "01_GT" / "SEG").iterdir())
    assert names == ["man_seg_0007_001.tif", "man_seg_0007_002.tif"]
    assert (tmp_path / "sl" / "01" / "t0007.tif").is_file()
