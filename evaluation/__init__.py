"""Standalone Cell Tracking Challenge SEG, PESEG, TRA and DET (official semantics; imports nothing from this project).

Array functions live in :mod:`evaluation.matching`, folder walking in :mod:`evaluation.ctc_seg`, the
command line in :mod:`evaluation.seg`; the names
below are imported on first use so that ``python -m evaluation.seg`` runs without a double import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ObjectMatches": "matching",
    "match_objects": "matching",
    "pooled_seg": "matching",
    "seg_score": "matching",
    "peseg": "matching",
    "SegError": "ctc_seg",
    "GtFile": "ctc_seg",
    "FileScore": "ctc_seg",
    "SequenceScore": "ctc_seg",
    "score_sequence": "ctc_seg",
    "find_sequences": "ctc_seg",
    "FrameMatch": "aogm",
    "GraphOps": "aogm",
    "match_frame": "aogm",
    "graph_ops": "aogm",
    "vertex_ops": "aogm",
    "tra_score": "aogm",
    "det_score": "aogm",
    "check_tracks": "aogm",
    "TraError": "ctc_tra",
    "score_tracking": "ctc_tra",
    "score_detection": "ctc_tra",
    "check_result": "ctc_tra",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Return the exported ``name`` from its module (PEP 562 lazy attribute)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
