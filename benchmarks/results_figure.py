"""What the shipped models draw, next to the classical baseline: one annotated slice per sequence.

For each ``--seq DATASET:PATH`` (a labelled sequence, e.g. one made by ``synth --family b``), the first
annotated frame is segmented as ``predict`` segments it (the model set's input settings, normalisation
adaptation where the folder asks for it, post-processing as shipped) and by ``benchmarks/classical.py``. The
figure shows the annotated slice four times: raw, truth outlines, the models' outlines and the baseline's, each
with that slice's SEG; the script prints the same numbers as a table. Synthetic data, not CTC results::

    .venv/bin/python benchmarks/results_figure.py --models models \
        --seq MDA231:runs/acc_mda/data/B-default/Fluo-C3DL-MDA231/01 \
        --seq TRIC:runs/acc_tric/data/B-default/Fluo-N3DL-TRIC/01 \
        --seq A549-SIM:runs/trk18/acc_a549/data/B-default/Fluo-C3DH-A549-SIM/01 --out docs/images/results_family_b.png
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT / "benchmarks", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from classical import segment_classical  # noqa: E402
from figure_cli import (  # noqa: E402
    figure_rows,
    first_truth,
    model_set_segmenter,
    pyplot,
    save_figure,
    shown_slice,
)

from efficientcellseg.ctc_io import read_frame, read_tiff  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.preview import overlay_slice  # noqa: E402
from evaluation.matching import seg_score  # noqa: E402

DENSE = 30
"""A slice with more annotated objects than this is shown as a ``WINDOW`` px crop around the truth's centre."""
WINDOW = 200


def crop_box(truth: np.ndarray) -> tuple[slice, slice]:
    """The whole slice, or for a dense one a ``WINDOW`` x ``WINDOW`` window centred on its annotated pixels."""
    if len(np.unique(truth)) - 1 <= DENSE:
        return slice(None), slice(None)
    ys, xs = np.nonzero(truth)
    box = []
    for c, n in ((int(ys.mean()), truth.shape[0]), (int(xs.mean()), truth.shape[1])):
        lo = min(max(c - WINDOW // 2, 0), max(n - WINDOW, 0))
        box.append(slice(lo, lo + WINDOW))
    return box[0], box[1]


def outlined(raw: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The raw slice as :func:`overlay_slice` stretches it, with every object's outline 2 px wide in ``colour``
    (wide enough to survive the figure's downscaling; touching objects keep a visible border)."""
    rgb = overlay_slice(raw, np.zeros_like(labels))
    rgb[find_boundaries(labels, mode="thick")] = colour
    return rgb


def probe(dataset: str, seq: Path, models: Path) -> dict[str, object]:
    """Raw slice, truth slice and both methods' label slices (with their SEG) of ``seq``'s first annotation."""
    cfg = get_dataset(dataset)
    raw_path, gt_path, z_gt = first_truth(seq)
    raw = read_frame(raw_path, max_z=cfg.max_z)
    truth = read_tiff(gt_path)
    seg = model_set_segmenter(cfg, models, adapt_to=seq)
    methods = {"shipped": seg.segment(raw), "classical": segment_classical(raw, cfg.key)}
    z_gt, truth = shown_slice(truth, z_gt)
    row: dict[str, object] = {"dataset": cfg.key, "frame": f"{seq.parent.parent.name}/{seq.name}/{raw_path.stem}",
                              "z": z_gt, "raw": raw[z_gt], "truth": truth, "objects": int(len(np.unique(truth)) - 1)}
    for name, labels in methods.items():
        row[name] = labels[z_gt]
        row[f"seg_{name}"] = seg_score(truth, labels[z_gt])
    return row


def main(argv: Sequence[str] | None = None) -> int:
    a, rows = figure_rows(__doc__, probe, argv)
    plt = pyplot()
    print("| dataset | frame | slice | objects | SEG shipped | SEG classical |")
    print("|---|---|---|---|---|---|")
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.4 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        print(f"| {r['dataset']} | {r['frame']} | {r['z']} | {r['objects']} | {r['seg_shipped']:.3f} "
              f"| {r['seg_classical']:.3f} |")
        box = crop_box(r["truth"])
        where = "" if box[0] == slice(None) else f", crop y {box[0].start}, x {box[1].start}"
        empty = np.zeros_like(r["truth"])
        panels = ((f"{r['dataset']} z={r['z']}{where}", empty, (0, 0, 0)), ("truth", r["truth"], (255, 220, 0)),
                  (f"models, SEG {r['seg_shipped']:.2f}", r["shipped"], (0, 230, 255)),
                  (f"classical, SEG {r['seg_classical']:.2f}", r["classical"], (255, 60, 200)))
        for ax, (title, labels, colour) in zip(ax_row, panels):
            ax.imshow(outlined(r["raw"][box], labels[box], colour), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("Synthetic frames (not CTC data): object outlines on the annotated slice; SEG of that slice",
                 fontsize=10)
    return save_figure(fig, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
