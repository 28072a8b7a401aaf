"""A small classical baseline: Gaussian smoothing, Otsu threshold, anisotropic distance-transform watershed.

Per frame (Z, Y, X), with the voxel size (µm) of the dataset from :mod:`efficientcellseg.datasets`:

1. Gaussian smoothing with ``sigma_um`` µm per axis (converted to voxels per axis).
2. One global Otsu threshold of the smoothed volume (``skimage.filters.threshold_otsu``).
3. Per xy slice: holes filled (``ndi.binary_fill_holes``), then 2D components under ``min_area_um2`` µm²
   removed (``skimage.morphology.remove_small_objects``).
4. A549-SIM (one cell per frame): the largest 3D connected component, holes filled per slice, label 1. Done.
5. Otherwise: Euclidean distance transform in µm (``ndi.distance_transform_edt`` with ``sampling`` = the
   voxel size); markers are the regional maxima of height at least ``h_um`` µm (``skimage.morphology.
   h_maxima``) that are also the maximum of the EDT within +-``min_distance_um`` µm along every axis (a box,
   ``ndi.maximum_filter``); connected markers form one seed (``ndi.label``, full connectivity). Marker-
   controlled watershed of the negative EDT inside the foreground (``skimage.segmentation.watershed``).
   Foreground components without a marker are dropped by the watershed (only possible for a component
   without a maximum of height ``h_um``, i.e. thinner than ``h_um`` µm).

The parameters are fixed per dataset (:data:`PARAMS`) and were **not tuned on any data**: ``sigma_um`` about
one micrometre (a little above the xy pixel size), ``min_distance_um`` about the radius of the smallest
expected object (MDA231 cell bodies ~10 µm, TRIC nuclei ~4 voxels, the learned TRIC post-processing's own
default), ``h_um`` a quarter of that, ``min_area_um2`` a few per cent of an object's cross-section.

Command line (writes ``maskTTT.tif`` uint16 atomically, like ``efficientcellseg predict``)::

    python benchmarks/classical.py --dataset MDA231 --input DATA/Fluo-C3DL-MDA231/01 \
        --output DATA/Fluo-C3DL-MDA231/01_RES
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label as cc_label
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SW") not in sys.path:
    sys.path.insert(0, str(ROOT / "SW"))

from efficientcellseg.datasets import get_dataset  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.classical")


@dataclass(frozen=True)
class ClassicalParams:
    """Fixed parameters of the classical baseline for one dataset (lengths in µm, areas in µm²)."""

    sigma_um: float
    """Gaussian smoothing sigma in µm (per axis: sigma_um / voxel size, so z is smoothed less)."""
    min_area_um2: float
    """2D components (per xy slice) smaller than this are removed after hole filling."""
    min_distance_um: float
    """A marker must be the EDT maximum within +- this distance along each axis."""
    h_um: float
    """Minimum height (dynamic) of an EDT maximum to become a marker."""
    largest_component: bool
    """Keep only the largest 3D connected component as the single object (one cell per frame)."""


PARAMS: dict[str, ClassicalParams] = {
    "MDA231": ClassicalParams(sigma_um=1.5, min_area_um2=20.0, min_distance_um=10.0, h_um=2.5,
                              largest_component=False),
    "TRIC": ClassicalParams(sigma_um=1.0, min_area_um2=10.0, min_distance_um=4.0, h_um=1.0,
                            largest_component=False),
    "A549-SIM": ClassicalParams(sigma_um=0.5, min_area_um2=2.0, min_distance_um=5.0, h_um=1.0,
                                largest_component=True),
}


MAX_COMPONENT_LOOP = 256
"""Up to this many foreground components, h-maxima run per component; above it on the whole volume."""


def params_for(dataset: str) -> tuple[ClassicalParams, tuple[float, float, float]]:
    """Return the fixed parameters and the voxel size (z, y, x) in µm of ``dataset`` (key or CTC name).
    Raises KeyError for an unknown dataset."""
    cfg = get_dataset(dataset)
    if cfg.key not in PARAMS:
        raise KeyError(f"no classical parameters for dataset {cfg.key!r}; known: {', '.join(PARAMS)}")
    return PARAMS[cfg.key], tuple(float(v) for v in cfg.voxel_size_zyx)  # type: ignore[return-value]


def _foreground(raw: np.ndarray, p: ClassicalParams, voxel: tuple[float, float, float]) -> np.ndarray:
    """Smoothed, Otsu-thresholded foreground with holes filled and small components removed per slice."""
    sigma = tuple(p.sigma_um / v for v in voxel)
    smooth = ndi.gaussian_filter(raw.astype(np.float32), sigma, truncate=3.0)
    if float(smooth.max()) <= float(smooth.min()):
        return np.zeros(raw.shape, bool)
    fg = smooth > threshold_otsu(smooth)
    min_px = max(1, int(round(p.min_area_um2 / (voxel[1] * voxel[2]))))
    for z in range(fg.shape[0]):
        filled = ndi.binary_fill_holes(fg[z])
        fg[z] = remove_small_objects(filled, max_size=min_px - 1) if min_px > 1 else filled
    return fg


def _largest_component(fg: np.ndarray) -> np.ndarray:
    """Label 1 on the largest 3D connected component of ``fg`` (holes filled per slice), uint16."""
    comps = cc_label(fg, connectivity=fg.ndim)
    if comps.max() == 0:
        return np.zeros(fg.shape, np.uint16)
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    keep = comps == int(np.argmax(sizes))
    for z in range(keep.shape[0]):
        keep[z] = ndi.binary_fill_holes(keep[z])
    return keep.astype(np.uint16)


def _watershed(fg: np.ndarray, p: ClassicalParams, voxel: tuple[float, float, float]) -> np.ndarray:
    """Marker-controlled watershed of the anisotropic EDT of ``fg`` (see the module notes), uint16 labels."""
    if not fg.any():
        return np.zeros(fg.shape, np.uint16)
    edt = ndi.distance_transform_edt(fg, sampling=voxel).astype(np.float32)
    box = tuple(2 * int(p.min_distance_um / v) + 1 for v in voxel)
    # h-maxima per connected component when there are few (same result as on the whole volume, where
    # background separates the components, but the reconstruction only sorts the voxels of each component's
    # bounding box); on the whole volume at once when there are many (a noisy frame), where the per-call
    # overhead of thousands of tiny components would dominate
    comps, n_comps = ndi.label(fg, structure=np.ones((3,) * fg.ndim, bool))
    if n_comps > MAX_COMPONENT_LOOP:
        hmax = h_maxima(edt, p.h_um).astype(bool) & fg
    else:
        hmax = np.zeros(fg.shape, bool)
        for i, sl in enumerate(ndi.find_objects(comps), 1):
            if sl is None:
                continue
            inside = comps[sl] == i
            hmax[sl] |= h_maxima(np.where(inside, edt[sl], 0), p.h_um).astype(bool) & inside
    peaks = hmax & (edt >= ndi.maximum_filter(edt, size=box))
    markers, n = ndi.label(peaks, structure=np.ones((3,) * fg.ndim, bool))
    if n == 0:
        return np.zeros(fg.shape, np.uint16)
    labels = watershed(-edt, markers, mask=fg)
    labels, _, _ = relabel_sequential(labels)
    if int(labels.max()) > 65535:
        raise ValueError(f"{int(labels.max())} objects do not fit uint16 labels (max 65535)")
    return labels.astype(np.uint16)


def segment_classical(raw: np.ndarray, dataset: str) -> np.ndarray:
    """Segment one raw frame (Z, Y, X) of ``dataset`` with the classical baseline; uint16 labels, same shape.

    A constant (e.g. empty) frame gives all zeros. Raises ValueError for a frame that is not 3D or not
    numeric, KeyError for an unknown dataset.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ValueError(f"`raw` has shape {raw.shape}; a 3D (Z, Y, X) frame is expected")
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"`raw` has dtype {raw.dtype}; a numeric image is expected")
    p, voxel = params_for(dataset)
    if raw.size == 0 or raw.max() == raw.min():
        return np.zeros(raw.shape, np.uint16)
    fg = _foreground(raw, p, voxel)
    return _largest_component(fg) if p.largest_component else _watershed(fg, p, voxel)


def segment_sequence(dataset: str, input_dir: Path, output_dir: Path) -> int:
    """Segment every ``tTTT.tif`` of ``input_dir`` and write ``maskTTT.tif`` (uint16, atomic) into
    ``output_dir``; returns the number of frames. Raises CTCInputError for bad input or output folders."""
    from efficientcellseg.ctc_io import check_output_dir, list_frames, read_frame, write_mask

    cfg = get_dataset(dataset)
    frames = list_frames(input_dir)
    out = check_output_dir(output_dir, input_dir)
    start = time.perf_counter()
    for fr in frames:
        write_mask(out / fr.mask_name, segment_classical(read_frame(fr.path, max_z=cfg.max_z), cfg.key))
    log.info("classical %s: %d frames from %s to %s (%.1f s)", cfg.key, len(frames), input_dir, out,
             time.perf_counter() - start)
    return len(frames)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: segment a CTC sequence with the classical baseline. Returns the exit code."""
    from efficientcellseg.datasets import DATASETS
    from efficientcellseg.errors import CTCInputError
    from efficientcellseg.log import setup_logging

    ap = argparse.ArgumentParser(description="Classical baseline (Gaussian + Otsu + anisotropic EDT "
                                 "watershed) on a CTC sequence; writes uint16 maskTTT.tif files.")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset (voxel size, parameters)")
    ap.add_argument("--input", required=True, type=Path, help="sequence folder with tTTT.tif, e.g. DATA/01")
    ap.add_argument("--output", required=True, type=Path, help="result folder, e.g. DATA/01_RES (created)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    a = ap.parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    try:
        segment_sequence(a.dataset, a.input, a.output)
    except (CTCInputError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
