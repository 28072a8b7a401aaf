"""The CTC layout written by the validation-only image models (families B and C), in one place.

The image models stay independent of each other and of family A (nothing here renders pixels); what they share
is the folder: who may write into it, which old files of a sequence are replaced, how frames, tracking truth
and segmentation truth are named, and the ``synth.json`` record that marks the folder as synthetic.

- :func:`claim_folder` refuses a folder that holds another family's data or any files without a
  ``synth.json`` (real CTC data, say), clears the files an earlier run wrote for the same sequence and marks
  the folder as the family's at once (so an interrupted run can be repeated).
- :class:`SequenceWriter` writes ``tTTT.tif``, ``man_trackTTT.tif`` and either full ``man_segTTT.tif``
  volumes or ``man_seg_TTT_ZZZ.tif`` slices, and counts the objects.
- :func:`record_sequence` writes the finished sequence into ``synth.json``.

Every file is written atomically (:mod:`efficientcellseg.ctc_io`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from efficientcellseg.ctc_io import (
    FRAME_RE,
    MAN_SEG_RE,
    MAN_SEG_SLICE_RE,
    MAN_TRACK_RE,
    write_text_atomic,
    write_tiff_atomic,
)

META = "synth.json"
_TRACK_TXT = re.compile(r"^man_track\.txt$")


def _write_meta(ds: Path, family: str, generator: str, note: str, sequences: dict[str, Any]) -> None:
    meta = {"family": family, "generator": generator, "note": note, "sequences": dict(sorted(sequences.items()))}
    write_text_atomic(ds / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def claim_folder(ds: Path, seq: str, family: str, generator: str, note: str) -> dict[str, Any]:
    """Make ``ds`` family ``family``'s folder for sequence ``seq`` and return the records of its other sequences.

    Raises ValueError (nothing written) when ``ds`` holds another family's ``synth.json``, an unreadable one,
    or files without one. Old frames and truth of ``seq`` (from an earlier, maybe longer run) are deleted."""
    meta_path = ds / META
    sequences: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{meta_path}: unreadable {META} ({exc}); write family {family} elsewhere") from exc
        found = meta.get("family", "A") if isinstance(meta, dict) else "?"
        if found != family:
            raise ValueError(f"{ds} holds family-{found} synthetic data; write family {family} into another folder")
        sequences = dict(meta.get("sequences") or {})
    elif ds.exists() and (not ds.is_dir() or any(ds.iterdir())):
        raise ValueError(f"{ds}: not a family-{family} folder (files but no {META}); choose another --out")
    old_files = ((ds / seq, (FRAME_RE,)), (ds / f"{seq}_GT" / "SEG", (MAN_SEG_RE, MAN_SEG_SLICE_RE)),
                 (ds / f"{seq}_GT" / "TRA", (MAN_TRACK_RE, _TRACK_TXT)))
    for folder, patterns in old_files:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file() and any(r.match(p.name) for r in patterns):
                    p.unlink()
    sequences.pop(seq, None)
    ds.mkdir(parents=True, exist_ok=True)
    _write_meta(ds, family, generator, note, sequences)
    return sequences


class SequenceWriter:
    """Writes the frames and truth of one sequence (``ds/seq``, ``ds/seq_GT/{SEG,TRA}``) and counts objects."""

    def __init__(self, ds: Path, seq: str, n_frames: int) -> None:
        self.raw_dir, self.seg_dir, self.tra_dir = ds / seq, ds / f"{seq}_GT" / "SEG", ds / f"{seq}_GT" / "TRA"
        for d in (self.raw_dir, self.seg_dir, self.tra_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.digits = 4 if n_frames > 1000 else 3
        self.objects_per_frame: list[int] = []
        self.gold_objects = 0

    def frame(self, t: int, raw: np.ndarray, labels: np.ndarray,
              gold_slices: Iterable[tuple[int, np.ndarray]] | None = None) -> None:
        """Frame ``t`` and its tracking truth; the segmentation truth is the whole label volume, or
        ``gold_slices`` ((z, labels of slice z) pairs) when given."""
        tt = f"{t:0{self.digits}d}"
        write_tiff_atomic(self.raw_dir / f"t{tt}.tif", raw)
        write_tiff_atomic(self.tra_dir / f"man_track{tt}.tif", labels, compression="zlib")
        self.objects_per_frame.append(_count(labels))
        if gold_slices is None:
            write_tiff_atomic(self.seg_dir / f"man_seg{tt}.tif", labels, compression="zlib")
            self.gold_objects += self.objects_per_frame[-1]
            return
        for z, sl in gold_slices:
            write_tiff_atomic(self.seg_dir / f"man_seg_{tt}_{int(z):03d}.tif", sl, compression="zlib")
            self.gold_objects += _count(sl)

    def tracks(self, text: str) -> None:
        """The sequence's ``man_track.txt``."""
        write_text_atomic(self.tra_dir / "man_track.txt", text)


def _count(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels."""
    return int(np.count_nonzero(np.bincount(np.asarray(labels).ravel())[1:]))


def record_sequence(ds: Path, family: str, generator: str, note: str, sequences: dict[str, Any], seq: str,
                    record: dict[str, Any]) -> None:
    """Write ``synth.json`` with ``record`` as sequence ``seq`` beside the other ``sequences``."""
    sequences[seq] = record
    _write_meta(ds, family, generator, note, sequences)
