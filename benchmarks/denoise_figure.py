"""Why the input smoothing exists: one noisy slice, the network's foreground probability without and with it.

For each ``--seq DATASET:PATH`` (a labelled sequence), one slice of the first annotated frame (the fullest
slice of a 3D truth, or the annotated slice) is shown raw, with the foreground probability of the given
models without smoothing, and with the noise-adaptive smoothing of their ``denoise`` target
(``benchmarks/denoise_variant.py`` defaults when the folder has none). It also prints the mean probability inside and outside the true cells, which is the
diagnosis number of docs/generalization.md::

    .venv/bin/python benchmarks/denoise_figure.py --models models \
        --seq A549-SIM:runs/acc_dn/data/B-dim/Fluo-C3DH-A549-SIM/01 \
        --seq MDA231:runs/acc_dn/data/B-dim/Fluo-C3DL-MDA231/01 --out docs/images/denoise_dim.png
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

from denoise_variant import TRAINING_RATIOS  # noqa: E402
from efficientcellseg.ctc_io import read_frame, read_tiff  # noqa: E402
from efficientcellseg.datasets import get_dataset  # noqa: E402
from efficientcellseg.denoise import DenoiseSettings, adaptive_sigma  # noqa: E402
from figure_cli import (  # noqa: E402
    figure_rows,
    first_truth,
    model_set_segmenter,
    pyplot,
    save_figure,
    shown_slice,
)

log = logging.getLogger("efficientcellseg.benchmarks.denoise_figure")


def probe(dataset: str, seq: Path, models: Path) -> dict[str, object]:
    """One raw slice, its truth, and the probability without and with smoothing, plus summary numbers."""
    cfg = get_dataset(dataset)
    raw_path, gt_path, z_gt = first_truth(seq)
    raw = read_frame(raw_path, max_z=cfg.max_z)
    gt = read_tiff(gt_path) > 0
    seg = model_set_segmenter(cfg, models)
    settings = seg.denoise or DenoiseSettings(TRAINING_RATIOS[cfg.key])
    off = dataclasses.replace(seg, denoise=None).probabilities(raw)["seg"]
    on = dataclasses.replace(seg, denoise=settings).probabilities(raw)["seg"]
    z, shown = shown_slice(gt, z_gt)
    if z_gt is None:  # full-volume truth: score the volume, show its fullest slice
        truth, p_off, p_on = gt, off, on
    else:  # one annotated slice: score and show it
        truth, p_off, p_on = shown, off[z], on[z]
    return {"dataset": cfg.key, "raw": raw[z], "gt": shown, "off": off[z], "on": on[z],
            "sigma": adaptive_sigma(raw, settings), "frame": f"{raw_path.name} z{z}",
            "in_off": float(p_off[truth].mean()), "in_on": float(p_on[truth].mean()),
            "out_off": float(p_off[~truth].mean()), "out_on": float(p_on[~truth].mean())}


def main(argv: Sequence[str] | None = None) -> int:
    a, rows = figure_rows(__doc__, probe, argv)
    plt = pyplot()
    print("| dataset | frame | sigma (px) | mean p inside cells: off -> on | outside: off -> on |")
    print("|---|---|---|---|---|")
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for ax, r in zip(axes, rows):
        print(f"| {r['dataset']} | {r['frame']} | {r['sigma']:.2f} | {r['in_off']:.2f} -> {r['in_on']:.2f} "
              f"| {r['out_off']:.2f} -> {r['out_on']:.2f} |")
        lo, hi = np.percentile(r["raw"], (1, 99.8))
        ax[0].imshow(r["raw"], cmap="gray", vmin=lo, vmax=hi)
        ax[0].contour(r["gt"], levels=[0.5], colors="yellow", linewidths=0.6)
        ax[0].set_title(f"{r['dataset']} {r['frame']} (truth in yellow)")
        ax[1].imshow(r["off"], cmap="magma", vmin=0, vmax=1)
        ax[1].set_title(f"p(cell), paper input: {r['in_off']:.2f} inside")
        ax[2].imshow(r["on"], cmap="magma", vmin=0, vmax=1)
        ax[2].set_title(f"p(cell), smoothed sigma {r['sigma']:.1f}: {r['in_on']:.2f} inside")
        for x in ax:
            x.axis("off")
    return save_figure(fig, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
