"""Shared command line of the diagnosis figures (denoise_figure.py, gate_figure.py): a model set, one or more
``--seq DATASET:PATH`` labelled sequences and a PNG to write."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def figure_rows(doc: str, probe: Callable[[str, Path, Path], dict[str, Any]],
                argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[dict[str, Any]]]:
    """Parse ``--models --seq --out`` (description: the first line of ``doc``) and run ``probe(dataset,
    sequence, models)`` once per ``--seq``; returns the arguments and the rows."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="model set (folders DATASET-seg ...)")
    ap.add_argument("--seq", action="append", required=True, metavar="DATASET:PATH")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    bad = [s for s in a.seq if ":" not in s]
    if bad:
        ap.error(f"--seq {bad[0]!r}: give DATASET:PATH, e.g. A549-SIM:runs/acc_dn/data/B-dim/Fluo-C3DH-A549-SIM/01")
    return a, [probe(s.split(":", 1)[0], Path(s.split(":", 1)[1]), a.models) for s in a.seq]


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Path) -> int:
    """Lay out and write ``fig`` to ``out`` (its folder is made); returns 0, the script's exit status."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return 0
