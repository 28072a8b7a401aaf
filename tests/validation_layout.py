"""Shared check of the CTC layout written by the validation-only image models (families B and C)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from efficientcellseg.ctc_io import list_frames


def check_validation_layout(ds: Path, seq: str, n: int, shape: tuple[int, int, int], dtype: type,
                            family: str) -> dict:
    """Frames ``t000..``, one ``man_track`` per frame (uint16, the frame's shape), the frames' dtype and shape,
    ``synth.json`` naming ``family`` and "validation only", no silver truth; returns the sequence's record."""
    assert [f.path.name for f in list_frames(ds / seq)] == [f"t{t:03d}.tif" for t in range(n)]
    tra = sorted(p.name for p in (ds / f"{seq}_GT" / "TRA").glob("*.tif"))
    assert tra == [f"man_track{t:03d}.tif" for t in range(n)]
    for t in range(n):
        raw = tifffile.imread(ds / seq / f"t{t:03d}.tif")
        lab = tifffile.imread(ds / f"{seq}_GT" / "TRA" / f"man_track{t:03d}.tif")
        assert raw.dtype == dtype and raw.shape == shape
        assert lab.dtype == np.uint16 and lab.shape == shape
    meta = json.loads((ds / "synth.json").read_text())
    assert meta["family"] == family and "validation only" in meta["note"]
    assert not (ds / f"{seq}_ST").exists()
    return meta["sequences"][seq]


def imported_names(module: Path) -> set[str]:
    """Every module (and ``module.name``) that the Python file ``module`` imports, read from its syntax tree."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names
