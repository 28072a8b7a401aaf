"""Shared pieces of the diagnosis figures (denoise_figure.py, gate_figure.py, results_figure.py,
ceiling_figure.py): the command line (a model set, one or more ``--seq DATASET:PATH`` labelled sequences and a
PNG to write), the first annotated frame of a sequence and the slice of it to show, the model set's segmenter,
and writing the PNG."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def first_truth(seq: Path) -> tuple[Path, Path, int | None]:
    """(raw frame, truth file, slice) of the first annotated frame of ``seq`` (truth in ``SEQ_GT/SEG``).

    A full-volume ``man_segTTT.tif`` is preferred (slice None); otherwise the first slice annotation
    ``man_seg_TTT_ZZZ.tif``. The folder is read by the scorer's own :func:`evaluation.ctc_seg.list_gt_files`.
    """
    from evaluation.ctc_seg import list_gt_files

    gts = list_gt_files(seq.parent / f"{seq.name}_GT" / "SEG")  # sorted by (t, z), full frames first
    gt = next((g for g in gts if g.z is None), gts[0])
    return seq / f"t{gt.digits}.tif", gt.path, gt.z


def shown_slice(truth: np.ndarray, z_gt: int | None) -> tuple[int, np.ndarray]:
    """(slice, its truth) to show of :func:`first_truth`'s annotation: a full-volume ``truth`` (``z_gt`` None)
    shows its slice with the most annotated pixels; a slice annotation shows itself."""
    if z_gt is None:
        z = int(np.argmax((truth > 0).reshape(truth.shape[0], -1).sum(axis=1)))
        return z, truth[z]
    return int(z_gt), truth.reshape(truth.shape[-2:])


def model_set_segmenter(cfg: Any, models: Path, adapt_to: Path | None = None) -> Any:
    """The CPU (ONNX Runtime) segmenter of dataset ``cfg`` from the model set ``models`` (its centre folder
    when the dataset has one and the set holds it). With ``adapt_to`` (a sequence folder), models that ask for
    it get their normalisation adapted to that sequence's frames, as ``predict`` does."""
    from efficientcellseg.infer import build_segmenter, choose_calibration_frames, model_folders

    found = model_folders(cfg, models)
    centers = found.get("centers")
    return build_segmenter(cfg.key, found["seg"], centers if centers and centers.is_dir() else None,
                           backend="onnx", device="cpu",
                           adapt_frames=choose_calibration_frames(adapt_to) if adapt_to is not None else None)


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
