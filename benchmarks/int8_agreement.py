"""How far opt-in int8 moves the masks from the exact fp32 path, per sequence (issue #15: foreground IoU >= 0.99).

For each ``--seq TAG:DATASET:PATH`` the first frame(s) are segmented twice with the shipped (or ``--models``)
folders: exact fp32 ONNX Runtime, and int8 calibrated as ``predict --precision int8`` calibrates it (on the
sequence itself, :func:`efficientcellseg.infer.choose_calibration_frames`). Prints a Markdown table: foreground
IoU of the two label volumes, object counts, and SEG of both against the truth where the frame has some::

    .venv/bin/python benchmarks/int8_agreement.py \\
        --seq A-fixed:MDA231:runs/acc_dn/data/A-fixed/Fluo-C3DL-MDA231/01 \\
        --seq B-dim:MDA231:runs/acc_dn/data/B-dim/Fluo-C3DL-MDA231/01

Deterministic for the same frames and machine; the int8 kernels may round differently on other CPUs.
Quantising writes the int8 files into the model folders' ``.onnx-cache/`` (reused by later runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from evaluation.ctc_seg import list_gt_files, read_gt  # noqa: E402
from gpu_check import IOU_MIN, foreground_iou  # noqa: E402  (the device check's IoU and its bound)

from efficientcellseg.ctc_io import list_frames, read_frame  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.infer import build_segmenter, choose_calibration_frames, model_folders  # noqa: E402
from efficientcellseg.tune import seg_of_labels  # noqa: E402

log = logging.getLogger("int8_agreement")


def agreement_rows(specs: Sequence[tuple[str, str, Path]], models: Path | None, frames: int) -> list[dict]:
    """One row per (sequence, frame): foreground IoU int8 vs fp32, object counts, SEG of both."""
    rows = []
    for tag, dataset, seq in specs:
        cfg = get_dataset(dataset)
        kw = {}
        if models is not None:
            found = model_folders(cfg, models)
            kw["model_dir"] = found["seg"]
            if "centers" in found and found["centers"].is_dir():
                kw["centers_model_dir"] = found["centers"]
        exact = build_segmenter(dataset, device="cpu", backend="onnx", **kw)
        fast = build_segmenter(dataset, device="cpu", precision="int8",
                               calibration_frames=choose_calibration_frames(seq), **kw)
        gt_dir = seq.parent / f"{seq.name}_GT" / "SEG"
        truth = list_gt_files(gt_dir) if gt_dir.is_dir() else []
        for frame in list_frames(seq)[:frames]:
            raw = read_frame(frame.path, max_z=cfg.max_z)
            a, b = exact.segment(raw), fast.segment(raw)
            check = fast.int8_checks.get("seg") or {}
            row = {"tag": tag, "dataset": cfg.key, "seq": str(seq), "t": frame.index,
                   "iou": foreground_iou(a, b), "objects_fp32": int(a.max()), "objects_int8": int(b.max()),
                   "network_iou": check.get("foreground_iou")}
            gts = [g for g in truth if g.t == frame.index]
            arrays = [read_gt(g) for g in gts]  # read once, scored for both precisions
            for name, labels in (("fp32", a), ("int8", b)):
                row[f"seg_{name}"] = seg_of_labels({frame.index: labels}, gts, arrays) if gts else None
            log.info("%s %s t%03d: IoU %.4f", tag, cfg.key, frame.index, row["iou"])
            rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`agreement_rows`, with the minimum IoU per dataset below it."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| dataset | family | sequence | frame | foreground IoU int8 vs fp32 | objects fp32 / int8 | SEG fp32 / int8 "
             "| network IoU on the calibration inputs (int8's self-check) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['tag']} | `{r['seq']}` | {r['t']} | {r['iou']:.4f} | "
                     f"{r['objects_fp32']} / {r['objects_int8']} | {f(r['seg_fp32'])} / {f(r['seg_int8'])} | "
                     f"{f(r.get('network_iou'))} |")
    worst = {}
    for r in rows:
        worst[r["dataset"]] = min(worst.get(r["dataset"], 1.0), r["iou"])
    lines.append("")
    lines.append(f"Lowest IoU per dataset (target >= {IOU_MIN}): "
                 + ", ".join(f"{k} {v:.4f}{'' if v >= IOU_MIN else ' (NOT met)'}" for k, v in worst.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", action="append", required=True, metavar="TAG:DATASET:PATH")
    ap.add_argument("--models", type=Path, default=None, help="folder with the model folders (default: models/)")
    ap.add_argument("--frames", type=int, default=1, help="frames per sequence (the first ones)")
    ap.add_argument("--md", type=Path, default=None, help="also write the table here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    specs = []
    for s in a.seq:
        try:
            tag, ds, path = s.split(":", 2)
            get_dataset(ds)
        except (ValueError, KeyError):
            print(f"error: --seq {s}: expected TAG:DATASET:PATH with DATASET one of MDA231, TRIC, A549-SIM",
                  file=sys.stderr)
            return 2
        if not Path(path).is_dir():
            print(f"error: --seq {s}: {path} is not a folder", file=sys.stderr)
            return 2
        specs.append((tag, ds, Path(path)))
    text = format_table(agreement_rows(specs, a.models, a.frames))
    cmd = "python benchmarks/int8_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{cmd.strip()}`\n\n{text}\n"
    print(text)
    if a.md:
        a.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
