"""Cell Tracking Challenge file I/O: name parsing, frame discovery, validated reading, atomic writing.

All file names are parsed with the regular expressions below, never by sorting or counting underscores.
Every problem with the input raises :class:`CTCInputError` with one line that names the file and says what
to do; the CLI prints that line and exits non-zero.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from efficientcellseg.errors import CTCInputError

log = logging.getLogger(__name__)

FRAME_RE = re.compile(r"^t(\d{3,4})\.tiff?$")
MASK_RE = re.compile(r"^mask(\d{3,4})\.tiff?$")
MAN_SEG_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
MAN_SEG_SLICE_RE = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tiff?$")
MAN_TRACK_RE = re.compile(r"^man_track(\d{3,4})\.tiff?$")

MAX_LABEL = 65535


@dataclass(frozen=True)
class Frame:
    """One raw frame ``tTTT.tif`` of a sequence."""

    index: int
    digits: str
    path: Path

    @property
    def mask_name(self) -> str:
        """The CTC result file name for this frame, with the same digits (``mask012.tif``)."""
        return f"mask{self.digits}.tif"


@dataclass(frozen=True)
class GTFile:
    """One SEG reference file: a full frame (``z is None``) or one 2D slice ``man_seg_TTT_ZZZ.tif``."""

    t: int
    z: int | None
    path: Path


def list_frames(seq_dir: str | os.PathLike) -> list[Frame]:
    """All ``tTTT.tif`` frames in ``seq_dir``, sorted by their parsed time index."""
    seq = Path(seq_dir)
    if not seq.is_dir():
        raise CTCInputError(f"{seq}: input folder does not exist; give the sequence folder, e.g. .../Fluo-N3DL-TRIC/01")
    frames = []
    for p in seq.iterdir():
        m = FRAME_RE.match(p.name)
        if m and p.is_file():
            frames.append(Frame(int(m.group(1)), m.group(1), p))
    if not frames:
        raise CTCInputError(f"{seq}: no frames named tTTT.tif found; is this a CTC sequence folder?")
    frames.sort(key=lambda f: f.index)
    dup = {f.index for f in frames if sum(g.index == f.index for g in frames) > 1}
    if dup:
        raise CTCInputError(f"{seq}: several files for time point(s) {sorted(dup)}; keep one tTTT.tif per frame")
    return frames


def list_gt_seg(gt_seg_dir: str | os.PathLike) -> list[GTFile]:
    """All SEG reference files (full ``man_segTTT.tif`` and slice ``man_seg_TTT_ZZZ.tif``), sorted by (t, z)."""
    d = Path(gt_seg_dir)
    if not d.is_dir():
        raise CTCInputError(f"{d}: GT folder does not exist")
    out = []
    for p in d.iterdir():
        if m := MAN_SEG_RE.match(p.name):
            out.append(GTFile(int(m.group(1)), None, p))
        elif m := MAN_SEG_SLICE_RE.match(p.name):
            out.append(GTFile(int(m.group(1)), int(m.group(2)), p))
    out.sort(key=lambda g: (g.t, -1 if g.z is None else g.z))
    return out


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF into memory; unreadable files raise :class:`CTCInputError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CTCInputError(f"{p}: file not found")
    try:
        arr = np.asarray(tifffile.imread(p))
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise CTCInputError(f"{p}: cannot read TIFF ({type(exc).__name__}: {exc}); re-export it as a TIFF") from exc
    if arr.size == 0:
        raise CTCInputError(f"{p}: cannot read TIFF (no image data: empty or corrupt file); re-export it as a TIFF")
    return arr


def read_frame(path: str | os.PathLike, max_z: int = 64) -> np.ndarray:
    """Read a raw 3D frame as (Z, Y, X) uint8/uint16 and check it is oriented as CTC data are.

    Singleton axes (e.g. an ImageJ channel axis of length 1) are squeezed. Z must be the smallest axis and
    at most ``max_z`` long; anything else is an error, never a silent transpose.
    """
    arr = read_tiff(path)
    if arr.ndim > 3:
        arr = arr.squeeze()
    if arr.ndim != 3:
        raise CTCInputError(
            f"{path}: expected a 3D (Z, Y, X) frame, got shape {arr.shape}; "
            "save each time point as one multipage TIFF without channel/time axes"
        )
    if arr.dtype not in (np.uint8, np.uint16):
        raise CTCInputError(f"{path}: raw frames must be uint8 or uint16, got {arr.dtype}; convert the image first")
    z, y, x = arr.shape
    if z > min(y, x) or z > max_z or z < 1:
        raise CTCInputError(
            f"{path}: shape {arr.shape} does not look like (Z, Y, X) with Z the smallest axis (<= {max_z}); "
            "check the TIFF axis order"
        )
    if y < 16 or x < 16:
        raise CTCInputError(f"{path}: slices of {y}x{x} pixels are too small to segment")
    return arr


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tiff_atomic(path: str | os.PathLike, array: np.ndarray, **kwargs) -> None:
    """Write a grey-level (multipage) TIFF through a temporary file in the same folder, then rename it.

    ``photometric="minisblack"`` is the default so that a (3, Y, X) stack is never stored as one RGB page.
    """
    kwargs.setdefault("photometric", "minisblack")
    _atomic_write(Path(path), lambda tmp: tifffile.imwrite(tmp, array, **kwargs))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (e.g. ``man_track.txt``) through a temporary file, then rename it."""
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_mask(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a CTC result mask: uint16, labels 0..65535, written atomically (temp file + rename)."""
    if labels.dtype != np.uint16:
        if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
            raise CTCInputError(f"{path}: labels outside 0..{MAX_LABEL} cannot be stored as uint16")
        labels = labels.astype(np.uint16)
    write_tiff_atomic(path, labels, compression="zlib")


def check_output_dir(out_dir: str | os.PathLike, input_dir: str | os.PathLike) -> Path:
    """Refuse to write results into the input sequence or a GT/ST folder; create the folder if needed."""
    out = Path(out_dir).resolve()
    inp = Path(input_dir).resolve()
    if out == inp or inp in out.parents:
        raise CTCInputError(f"{out}: refusing to write results into the input folder {inp}; use e.g. {inp}_RES")
    if any(part.endswith(("_GT", "_ST")) for part in out.parts):
        raise CTCInputError(f"{out}: refusing to write results into a GT/ST folder; use e.g. {inp}_RES")
    out.mkdir(parents=True, exist_ok=True)
    return out
