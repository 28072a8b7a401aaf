"""Why the input ceiling exists: what the network sees of one slice, and its foreground, without and with it.

For each ``--seq DATASET:PATH`` (a labelled sequence), one slice of the first annotated frame is shown as the
network's green channel (the slice min-max normalised after the model's input smoothing) without and with the
frame clipped at the model folder's ``ceiling_percentile`` (99.9 when it has none), and the foreground
probability of each (the central 200 px are shown). It prints the share of the truth's pixels above the
model's ``prob_threshold`` and the median green value inside the truth, without -> with::

    .venv/bin/python benchmarks/ceiling_figure.py --models models \
        --seq TRIC:runs/s24/acc_tric/data/C-dim/Fluo-N3DL-TRIC/01 --out docs/images/ceiling_dim.png
"""

from __future__ import annotations

import dataclasses
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
from efficientcellseg.denoise import DenoiseSettings, denoise_frame  # noqa: E402
from efficientcellseg.pseudocolor import minmax  # noqa: E402
from figure_cli import (  # noqa: E402
    figure_rows,
    first_truth,
    model_set_segmenter,
    pyplot,
    save_figure,
    shown_slice,
)

log = logging.getLogger("efficientcellseg.benchmarks.ceiling_figure")
PERCENTILE = 99.9
"""Used when the model folder has no ceiling of its own."""


def probe(dataset: str, seq: Path, models: Path) -> dict[str, object]:
    """One slice as the network sees it and its probability, without and with the ceiling, plus summaries."""
    cfg = get_dataset(dataset)
    raw_path, gt_path, z_gt = first_truth(seq)
    raw = read_frame(raw_path, max_z=cfg.max_z)
    gt = read_tiff(gt_path) > 0
    seg = model_set_segmenter(cfg, models)
    base = seg.denoise or DenoiseSettings(target_ratio=1.0)  # 1.0: no smoothing, only the ceiling acts
    q = base.ceiling_percentile or PERCENTILE
    threshold = float(seg.params.get("prob_threshold", 0.5))
    row: dict[str, object] = {"dataset": cfg.key, "q": q}
    z, truth = shown_slice(gt, z_gt)
    for tag, settings in (("off", dataclasses.replace(base, ceiling_percentile=0.0)),
                          ("on", dataclasses.replace(base, ceiling_percentile=q))):
        prob = dataclasses.replace(seg, denoise=settings).probabilities(raw)["seg"]
        green = minmax(denoise_frame(raw, settings)[z])
        row.update({f"green_{tag}": green, f"p_{tag}": prob[z], "gt": truth, "frame": f"{raw_path.name} z{z}",
                    f"found_{tag}": float((prob[z][truth] > threshold).mean()),
                    f"level_{tag}": float(np.median(green[truth]))})
    return row


CROP = 200
"""The figure shows the central CROP x CROP pixels of the slice (the numbers are of the whole slice)."""


def _centre(a: np.ndarray) -> np.ndarray:
    y, x = (max(0, (n - CROP) // 2) for n in a.shape)
    return a[y:y + CROP, x:x + CROP]


def main(argv: Sequence[str] | None = None) -> int:
    a, rows = figure_rows(__doc__, probe, argv)
    plt = pyplot()
    print("| dataset | frame | percentile | truth pixels found: without -> with | median input inside: without -> with |")
    print("|---|---|---|---|---|")
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.4 * len(rows)), squeeze=False)
    for ax, r in zip(axes, rows):
        print(f"| {r['dataset']} | {r['frame']} | {r['q']} | {r['found_off']:.2f} -> {r['found_on']:.2f} "
              f"| {r['level_off']:.2f} -> {r['level_on']:.2f} |")
        for i, tag in enumerate(("off", "on")):
            label = "min-max" if tag == "off" else f"p{r['q']:g} ceiling"
            ax[2 * i].imshow(_centre(r[f"green_{tag}"]), cmap="gray", vmin=0, vmax=1)
            ax[2 * i].contour(_centre(r["gt"]), levels=[0.5], colors="yellow", linewidths=0.5)
            ax[2 * i].set_title(f"input ({label}): median inside {r[f'level_{tag}']:.2f}", fontsize=9)
            ax[2 * i + 1].imshow(_centre(r[f"p_{tag}"]), cmap="magma", vmin=0, vmax=1)
            ax[2 * i + 1].set_title(f"p(cell): {r[f'found_{tag}']:.0%} of the truth found", fontsize=9)
        ax[0].set_ylabel(f"{r['dataset']} {r['frame']}, central {CROP} px")
        for x in ax:
            x.set_xticks([])
            x.set_yticks([])
    return save_figure(fig, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
