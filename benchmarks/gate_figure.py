"""Why the raw-signal gate exists: side views (X-Z) of z-blurred cells, masks without and with the gate.

For each ``--seq DATASET:PATH`` (a sequence with full-volume truth in ``PATH_GT/SEG``), the first annotated
frame is segmented once with the model folder's post-processing as shipped and once with ``signal_fraction``
0 (no gate; everything else, e.g. edges drawn on the raw signal, as shipped). The figure shows the X-Z section
through the cell's widest row with the truth (yellow), the mask without the gate (red) and with it (cyan), and
the script prints the foreground IoU of both::

    .venv/bin/python benchmarks/gate_figure.py --models models \
        --seq A549-SIM:runs/acc_dn/data/B-bright/Fluo-C3DH-A549-SIM/01 --out docs/images/signal_gate.png
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from efficientcellseg.ctc_io import read_frame, read_tiff  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.postprocess import postprocess  # noqa: E402
from figure_cli import figure_rows, first_truth, model_set_segmenter, pyplot, save_figure  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.gate_figure")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def probe(dataset: str, seq: Path, models: Path) -> dict[str, object]:
    """Raw frame, truth and the masks without / with the gate for the first full-volume truth of ``seq``."""
    cfg = get_dataset(dataset)
    raw_path, gt_path, z_gt = first_truth(seq)
    if z_gt is not None:
        raise FileNotFoundError(f"{seq}_GT/SEG: no full-volume truth man_segTTT.tif")
    raw = read_frame(raw_path, max_z=cfg.max_z)
    truth = read_tiff(gt_path) > 0
    seg = model_set_segmenter(cfg, models)
    fraction = float(seg.params.get("signal_fraction", 0.0))
    if not fraction > 0:
        raise SystemExit(f"{models / cfg.models['seg']}: no signal_fraction in thresholds.json; nothing to show")
    probs = seg.probabilities(raw, all_slices=True)
    extra = {"centers": probs.get("centers")}
    # only the gate off: the edges drawn on the raw signal (where shipped) stay, so they read the signal too
    off = postprocess(cfg.postprocess, probs["seg"], {**seg.params, "signal_fraction": 0.0},
                      signal=probs["signal"], **extra) > 0
    on = postprocess(cfg.postprocess, probs["seg"], seg.params, signal=probs["signal"], **extra) > 0
    y = int(np.argmax(truth.sum(axis=(0, 2))))
    return {"dataset": cfg.key, "frame": f"{seq.parent.parent.name}/{seq.name}/{raw_path.stem}", "y": y,
            "fraction": fraction, "raw": raw[:, y], "truth": truth[:, y], "off": off[:, y], "on": on[:, y],
            "iou_off": _iou(off, truth), "iou_on": _iou(on, truth)}


def main(argv: Sequence[str] | None = None) -> int:
    a, rows = figure_rows(__doc__, probe, argv)
    plt = pyplot()
    print("| dataset | frame | signal_fraction | foreground IoU without gate | with gate |")
    print("|---|---|---|---|---|")
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        print(f"| {r['dataset']} | {r['frame']} | {r['fraction']} | {r['iou_off']:.3f} | {r['iou_on']:.3f} |")
        lo, hi = np.percentile(r["raw"], (1, 99.8))
        ax.imshow(r["raw"], cmap="gray", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        for key, colour in (("truth", "yellow"), ("off", "red"), ("on", "cyan")):
            ax.contour(r[key], levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"{r['dataset']} {r['frame']}, X-Z section at y={r['y']}: truth (yellow), "
                     f"no gate IoU {r['iou_off']:.2f} (red), gate {r['fraction']} IoU {r['iou_on']:.2f} (cyan)",
                     fontsize=8)
        ax.set_ylabel("z (slice)")
        ax.set_xlabel("x (pixel)")
    return save_figure(fig, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
