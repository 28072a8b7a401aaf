"""SEG over Cell Tracking Challenge folders: GT file discovery, result mask reading and validation, slice GT.

Every GT file is its own image: ``man_segTTT.tif`` is compared with the whole ``maskTTT.tif`` (2D or 3D);
``man_seg_TTT_ZZZ.tif`` is compared in 2D with slice ZZZ of ``maskTTT.tif`` (a frame with two slice files is
scored twice, once per slice, never stacked). GT files and masks are paired by the index parsed from their
names (a mask may have 3 or 4 digits), never by sorting. Images are read one at a time; for slice GT only the
needed page of the mask is read when the TIFF stores one page per slice.

Like the official tool, a missing or unreadable result file, a mask that is not uint16 or a shape mismatch is
an error (:class:`SegError`, one line naming the file); with ``lenient=True`` such a file is scored as empty
(J = 0 for its objects) and a warning is logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tifffile

from .matching import ObjectMatches, match_objects, pooled_seg

log = logging.getLogger(__name__)

GT_FULL_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
GT_SLICE_RE = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tiff?$")
MASK_RE = re.compile(r"^mask(\d{3,4})\.tiff?$")
SEQ_GT_RE = re.compile(r"^(\d{2,})_GT$")

CSV_HEADER = ("file", "t", "z", "gt_label", "res_label", "gt_size", "intersection", "jaccard")


class SegError(ValueError):
    """A scoring error; the message is one line that names the offending file or folder."""


@dataclass(frozen=True)
class GtFile:
    """One SEG reference file: a full frame (``z is None``) or the 2D slice ``z`` of frame ``t``."""

    path: Path
    t: int
    z: int | None
    digits: str

    @property
    def mask_name(self) -> str:
        """The result file name with the GT's digits, e.g. ``mask012.tif`` (used in messages)."""
        return f"mask{self.digits}.tif"


@dataclass(frozen=True)
class FileScore:
    """The matches of one GT file; ``mask`` is the result file used (None if missing) and ``problem`` the
    reason it was scored as empty under ``lenient`` (None when it was scored normally)."""

    gt: GtFile
    mask: Path | None
    matches: ObjectMatches
    problem: str | None = None


@dataclass(frozen=True)
class SequenceScore:
    """All file scores of one sequence. ``dataset`` and ``sequence`` are display names."""

    gt_dir: Path
    res_dir: Path
    dataset: str
    sequence: str
    files: tuple[FileScore, ...]

    @property
    def n_files(self) -> int:
        """The number of GT files scored."""
        return len(self.files)

    @property
    def n_objects(self) -> int:
        """The number of reference objects over all GT files."""
        return sum(f.matches.n_objects for f in self.files)

    @property
    def seg(self) -> float:
        """SEG: mean J over all reference objects of all GT files (pooled)."""
        return pooled_seg(f.matches for f in self.files)


def _squeeze_leading(shape: tuple[int, ...], min_ndim: int) -> tuple[int, ...]:
    """Return ``shape`` without leading length-1 axes, keeping at least ``min_ndim`` axes."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > min_ndim and shape[0] == 1:
        shape = shape[1:]
    return shape


def list_gt_files(gt_dir: Path) -> list[GtFile]:
    """Return the GT files of ``gt_dir`` sorted by (t, z) with full-frame files first.
    Raises SegError for a missing folder, no GT file, or two files with the same parsed index."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise SegError(f"{gt_dir}: GT folder does not exist (expected e.g. DATASET/01_GT/SEG)")
    found: dict[tuple[int, int], GtFile] = {}
    for path in gt_dir.iterdir():
        full, sliced = GT_FULL_RE.match(path.name), GT_SLICE_RE.match(path.name)
        if full:
            gt = GtFile(path, int(full.group(1)), None, full.group(1))
        elif sliced:
            gt = GtFile(path, int(sliced.group(1)), int(sliced.group(2)), sliced.group(1))
        else:
            if path.suffix.lower() in (".tif", ".tiff"):
                log.warning("%s: not a GT file name (man_segTTT.tif or man_seg_TTT_ZZZ.tif); ignored", path)
            continue
        key = (gt.t, -1 if gt.z is None else gt.z)
        if key in found:
            raise SegError(f"{path}: same frame/slice index as {found[key].path.name}; remove one of them")
        found[key] = gt
    if not found:
        raise SegError(f"{gt_dir}: no GT files (man_segTTT.tif or man_seg_TTT_ZZZ.tif)")
    return [found[k] for k in sorted(found)]


def list_masks(res_dir: Path) -> dict[int, Path]:
    """Return ``{t: path}`` of the ``maskTTT.tif`` files in ``res_dir`` (3 or 4 digits).
    Raises SegError when two files parse to the same index (e.g. mask012.tif and mask0012.tif)."""
    masks: dict[int, Path] = {}
    for path in Path(res_dir).iterdir():
        m = MASK_RE.match(path.name)
        if not m:
            continue
        t = int(m.group(1))
        if t in masks:
            raise SegError(f"{path}: same frame index as {masks[t].name}; remove one of them")
        masks[t] = path
    return masks


def read_gt(gt: GtFile) -> np.ndarray:
    """Return the label image of ``gt``: 2D for a slice file, 2D or 3D for a full frame (integer dtype).
    Raises SegError for an unreadable file, a non-integer dtype, negative labels or a wrong number of axes."""
    try:
        arr = tifffile.imread(gt.path)
    except Exception as exc:  # any reader failure: name the file
        raise SegError(f"{gt.path}: unreadable GT file ({type(exc).__name__}: {exc})") from None
    arr = arr.reshape(_squeeze_leading(arr.shape, 2))
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise SegError(f"{gt.path}: GT dtype {arr.dtype} is not an integer label type")
    if gt.z is not None and arr.ndim != 2:
        raise SegError(f"{gt.path}: slice GT has shape {arr.shape}; a 2D (Y, X) image is expected")
    if gt.z is None and arr.ndim not in (2, 3):
        raise SegError(f"{gt.path}: GT has shape {arr.shape}; a 2D (Y, X) or 3D (Z, Y, X) image is expected")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and int(arr.min()) < 0:
        raise SegError(f"{gt.path}: GT has negative labels (min {int(arr.min())})")
    return arr


def read_mask(path: Path, gt: GtFile, gt_shape: tuple[int, ...]) -> np.ndarray:
    """Return the part of result mask ``path`` that ``gt`` is compared with: the whole mask for a full GT, its
    slice ``gt.z`` (2D) for a slice GT. Raises SegError when the file is unreadable, not uint16, or its shape
    does not fit ``gt_shape``."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            dtype, stored = np.dtype(series.dtype), tuple(series.shape)
            if dtype != np.uint16:
                raise SegError(f"{path}: result mask dtype is {dtype}; the CTC requires uint16")
            if gt.z is None:
                shape = _squeeze_leading(stored, 2)
                if shape != gt_shape:
                    raise SegError(f"{path}: shape {shape} does not match GT {gt.path.name} shape {gt_shape}")
                return series.asarray().reshape(shape)
            shape = _squeeze_leading(stored, 3)
            if len(shape) != 3:
                raise SegError(f"{path}: shape {shape} is not 3D (Z, Y, X) but {gt.path.name} is a slice GT")
            if shape[1:] != gt_shape:
                raise SegError(f"{path}: slice shape {shape[1:]} does not match GT {gt.path.name} "
                               f"shape {gt_shape}")
            if gt.z >= shape[0]:
                raise SegError(f"{path}: has {shape[0]} slices but GT {gt.path.name} is slice {gt.z}")
            pages = series.pages
            if len(pages) == shape[0] and pages[gt.z] is not None and tuple(pages[gt.z].shape) == gt_shape:
                return tif.asarray(key=gt.z, series=0).reshape(gt_shape)  # one page: no full-volume read
            return series.asarray().reshape(shape)[gt.z]
    except SegError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # any reader failure (truncated, not a TIFF, codec error): name the file
        raise SegError(f"{path}: unreadable result file ({type(exc).__name__}: {exc})") from None


def _empty_matches(gt_arr: np.ndarray) -> ObjectMatches:
    """Return the matches of ``gt_arr`` against an empty result (every object J = 0)."""
    return match_objects(gt_arr, np.zeros(gt_arr.shape, np.uint16))


def iter_file_scores(gt_dir: Path, res_dir: Path, *, lenient: bool = False) -> Iterator[FileScore]:
    """Yield the :class:`FileScore` of every GT file of ``gt_dir`` against ``res_dir``, one image in memory at
    a time. Raises SegError on the first error (result-file problems only warn when ``lenient``)."""
    gt_files = list_gt_files(gt_dir)
    res_dir = Path(res_dir)
    if res_dir.is_dir():
        masks = list_masks(res_dir)
    elif lenient:
        log.warning("%s: result folder does not exist; every GT object scores 0 (--lenient)", res_dir)
        masks = {}
    else:
        raise SegError(f"{res_dir}: result folder does not exist")
    for gt in gt_files:
        gt_arr = read_gt(gt)
        mask_path = masks.get(gt.t)
        try:
            if mask_path is None:
                raise SegError(f"{res_dir / gt.mask_name}: missing result file for GT {gt.path.name}")
            res_arr = read_mask(mask_path, gt, gt_arr.shape)
        except SegError as exc:
            if not lenient:
                raise
            log.warning("%s; scored as empty (--lenient)", exc)
            yield FileScore(gt, mask_path, _empty_matches(gt_arr), str(exc))
            continue
        matches = match_objects(gt_arr, res_arr)
        log.debug("%s vs %s: %d objects, mean J %.4f", gt.path.name, mask_path.name, matches.n_objects,
                  float(matches.jaccard.mean()) if matches.n_objects else float("nan"))
        yield FileScore(gt, mask_path, matches)


def _display_names(gt_dir: Path) -> tuple[str, str]:
    """Return (dataset, sequence) display names of ``gt_dir`` (``DATASET/01_GT/SEG``: ``DATASET``, ``01``)."""
    gt_dir = Path(gt_dir)
    m = SEQ_GT_RE.match(gt_dir.parent.name)
    if gt_dir.name == "SEG" and m:
        return str(gt_dir.parent.parent), m.group(1)
    return str(gt_dir.parent), gt_dir.name


def score_sequence(
    gt_dir: Path,
    res_dir: Path,
    *,
    lenient: bool = False,
    on_file: Callable[[FileScore], None] | None = None,
) -> SequenceScore:
    """Score every GT file of ``gt_dir`` against the masks of ``res_dir``; call ``on_file`` after each file.
    Returns the :class:`SequenceScore`. Raises SegError on a scoring error or when no GT file holds
    an object."""
    start = time.perf_counter()
    files = []
    for fs in iter_file_scores(gt_dir, res_dir, lenient=lenient):
        files.append(fs)
        if on_file is not None:
            on_file(fs)
    dataset, sequence = _display_names(gt_dir)
    score = SequenceScore(Path(gt_dir), Path(res_dir), dataset, sequence, tuple(files))
    if score.n_objects == 0:
        raise SegError(f"{gt_dir}: no reference object in any GT file; SEG is undefined")
    log.info("%s: %d GT files, %d objects, SEG %.6f (%.2f s)", gt_dir, score.n_files, score.n_objects,
             score.seg, time.perf_counter() - start)
    return score


def find_sequences(dataset_dir: Path) -> list[tuple[Path, Path]]:
    """Return ``(NN_GT/SEG, NN_RES)`` folder pairs of ``dataset_dir`` sorted by NN.
    Raises SegError when the folder does not exist or holds no ``NN_GT/SEG``."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise SegError(f"{dataset_dir}: dataset folder does not exist")
    pairs = []
    for sub in dataset_dir.iterdir():
        m = SEQ_GT_RE.match(sub.name)
        if m and (sub / "SEG").is_dir():
            pairs.append((int(m.group(1)), sub / "SEG", dataset_dir / f"{m.group(1)}_RES"))
    if not pairs:
        raise SegError(f"{dataset_dir}: no NN_GT/SEG folder found")
    return [(gt, res) for _, gt, res in sorted(pairs)]


def read_model_params(model_dir: Path) -> int:
    """Return the integer ``n_params`` of ``model_dir/config.json``. Raises SegError when the file is missing,
    not JSON, or has no positive integer ``n_params``."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SegError(f"{path}: cannot read model config ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise SegError(f"{path}: not valid JSON ({exc})") from None
    value = config.get("n_params") if isinstance(config, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SegError(f"{path}: needs a positive integer 'n_params', found {value!r}")
    return value


class RowWriter(Protocol):
    """What :func:`write_csv_rows` needs of its writer (a :func:`csv.writer` has it)."""

    def writerows(self, rows: Iterable[Iterable[object]], /) -> object:
        """Write ``rows``."""


def write_csv_rows(writer: RowWriter, file_score: FileScore) -> None:
    """Write one CSV row per reference object of ``file_score`` (columns :data:`CSV_HEADER`) with ``writer``
    (a :func:`csv.writer`)."""
    m = file_score.matches
    gt = file_score.gt
    z = "" if gt.z is None else gt.z
    writer.writerows(
        (str(gt.path), gt.t, z, lab, res, size, inter, repr(j))
        for lab, res, size, inter, j in zip(m.gt_labels.tolist(), m.res_labels.tolist(), m.gt_sizes.tolist(),
                                            m.intersections.tolist(), m.jaccard.tolist(), strict=True)
    )
