"""Per-dataset facts as data: one frozen configuration object per CTC dataset.

Everything the pipeline needs to know about a dataset (folder name, dtype, axes, tiling, which models,
which post-processing and its default parameters) lives here, not in ``if dataset == ...`` branches.
Post-processing defaults can be overridden by a model folder's ``thresholds.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

POSTPROCESS_KINDS = ("centers_watershed", "distance_watershed", "largest_component")


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class DatasetConfig:
    """Static description of one CTC dataset and of how EfficientCellSeg processes it."""

    key: str
    """Short name used on the command line, e.g. ``"TRIC"``."""
    ctc_name: str
    """CTC dataset folder name, e.g. ``"Fluo-N3DL-TRIC"``."""
    dtype: str
    """Raw image dtype in the challenge data (``uint8`` or ``uint16``); both are accepted."""
    shape: tuple[int, int, int]
    """Typical frame shape (Z, Y, X)."""
    voxel_size_zyx: tuple[float, float, float]
    """Voxel size in micrometres (z, y, x) where the challenge gives one."""
    gt_kind: str
    """``"slices"`` (sparse 2D slice GT) or ``"full"`` (3D GT every frame)."""
    postprocess: str
    """One of :data:`POSTPROCESS_KINDS`."""
    models: Mapping[str, str]
    """Task -> model folder name under ``models/`` (``seg`` always, ``centers`` for MDA231)."""
    postprocess_defaults: Mapping[str, float | int | bool] = field(default_factory=lambda: _frozen({}))
    """Default post-processing parameters; a model folder's ``thresholds.json`` overrides them."""
    input_size: int = 384
    """Network input edge in pixels (the paper's 384x384)."""
    tile_size: int | None = None
    """Tile edge in original pixels for sliding-window inference; ``None`` resizes the whole slice."""
    tile_overlap: int = 0
    """Overlap between neighbouring tiles in original pixels."""
    max_z: int = 64
    """Frames whose smallest axis is not Z, or with more slices than this, are rejected as mis-oriented."""
    track_displacement_um: float = 5.0
    """Typical centroid displacement of a cell between two frames (µm, in ``voxel_size_zyx`` units); linking
    (``track.py``) accepts a link without overlap up to 3x this distance and weighs distance by it."""
    division_distance_um: float = 20.0
    """Largest distance of a daughter's centroid from its mother's last centroid (µm) for a division."""
    track_max_gap: int = 2
    """Largest number of missing frames that linking bridges (the later track gets the earlier as parent)."""


DATASETS: Mapping[str, DatasetConfig] = _frozen(
    {
        "MDA231": DatasetConfig(
            key="MDA231",
            ctc_name="Fluo-C3DL-MDA231",
            dtype="uint8",
            shape=(30, 512, 512),
            voxel_size_zyx=(6.0, 1.242, 1.242),
            gt_kind="slices",
            postprocess="centers_watershed",
            models=_frozen({"seg": "MDA231-seg", "centers": "MDA231-centers"}),
            postprocess_defaults=_frozen(
                {
                    "prob_threshold": 0.5,
                    "center_threshold": 0.3,
                    "center_min_distance": 10,
                    "z_scale": 4.8,
                    "min_size": 300,
                    "fill_holes": True,
                }
            ),
            # cells migrate a few µm per frame (synthetic: 1-5 px of 1.242 µm); daughters start 10-20 px from
            # the mother's centre (half a long cell axis) and move on, so 35 µm covers them
            track_displacement_um=5.0,
            division_distance_um=35.0,
        ),
        "TRIC": DatasetConfig(
            key="TRIC",
            ctc_name="Fluo-N3DL-TRIC",
            dtype="uint8",
            shape=(13, 2454, 1693),
            voxel_size_zyx=(1.0, 1.0, 1.0),
            gt_kind="slices",
            postprocess="distance_watershed",
            models=_frozen({"seg": "TRIC-seg"}),
            postprocess_defaults=_frozen(
                {
                    "prob_threshold": 0.5,
                    "min_distance": 4,
                    "z_scale": 1.0,
                    "min_size": 20,
                    "fill_holes": False,
                }
            ),
            tile_size=768,
            tile_overlap=128,
            # densely packed nuclei (centres ~16 px apart) drifting ~1-2 px per frame: the gate (3x) stays
            # below half the nucleus spacing; daughters start ~5 px from the mother's centre
            track_displacement_um=2.0,
            division_distance_um=12.0,
        ),
        "A549-SIM": DatasetConfig(
            key="A549-SIM",
            ctc_name="Fluo-C3DH-A549-SIM",
            dtype="uint16",
            shape=(29, 300, 350),
            voxel_size_zyx=(1.0, 0.126, 0.126),
            gt_kind="full",
            postprocess="largest_component",
            models=_frozen({"seg": "A549-SIM-seg"}),
            postprocess_defaults=_frozen({"prob_threshold": 0.5, "fill_holes": True, "min_size": 0}),
            # one large cell that moves well under a micrometre per frame; no divisions in the data
            track_displacement_um=1.0,
            division_distance_um=10.0,
        ),
    }
)


def get_dataset(name: str) -> DatasetConfig:
    """Look a dataset up by short key (``TRIC``) or CTC folder name (``Fluo-N3DL-TRIC``), case-insensitive."""
    wanted = name.strip().upper()
    for cfg in DATASETS.values():
        if wanted in (cfg.key.upper(), cfg.ctc_name.upper()):
            return cfg
    known = ", ".join(f"{c.key} ({c.ctc_name})" for c in DATASETS.values())
    raise KeyError(f"unknown dataset {name!r}; known datasets: {known}")
