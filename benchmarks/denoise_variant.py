"""Copy a model set and switch on noise-adaptive input smoothing (denoise.py) in the copies, weights unchanged.

This is how the inference-only smoothing was measured against the shipped models (benchmarks/accuracy.py
``--models``): the copy differs from the original only by the ``denoise`` key of each ``config.json``.
The default targets are the noise/range ratios of the fixed-profile training frames (docs/generalization.md)::

    .venv/bin/python benchmarks/denoise_variant.py --src models --out runs/variants/dn1
    .venv/bin/python benchmarks/denoise_variant.py --src models --out runs/variants/dn2 --scale 2
    .venv/bin/python benchmarks/denoise_variant.py --datasets TRIC --background-radius 12 --out runs/variants/th12
    .venv/bin/python benchmarks/denoise_variant.py --datasets A549-SIM --max-sigma 6 --out runs/variants/a549_ms6
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SW") not in sys.path:
    sys.path.insert(0, str(ROOT / "SW"))

from efficientcellseg.denoise import DenoiseSettings  # noqa: E402
from efficientcellseg.weights import update_config  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.denoise_variant")

TRAINING_RATIOS = {"MDA231": 0.055, "TRIC": 0.032, "A549-SIM": 0.027}
"""Noise/range ratio of the fixed-profile training frames of each dataset (upper end of what was measured)."""


def make_variant(src: Path, out: Path, scale: float = 1.0, datasets: Sequence[str] = tuple(TRAINING_RATIOS),
                 background_radius: float = 0.0, min_ratio: float = 0.0, max_sigma: float = 3.0) -> Path:
    """Copy every model folder of ``src`` whose name starts with one of ``datasets`` into ``out`` and set its
    ``denoise`` target to ``scale`` times the dataset's training ratio (and the top-hat background removal of
    ``background_radius`` px before it, when > 0), with the smoothing capped at ``max_sigma`` px. Returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        for folder in sorted(src.glob(f"{ds}-*")):
            if not (folder / "config.json").is_file():
                continue
            dst = out / folder.name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(folder, dst)
            settings = DenoiseSettings(round(TRAINING_RATIOS[ds] * scale, 4), max_sigma=max_sigma,
                                       background_radius=background_radius, min_ratio=min_ratio)
            removal = (f"the background under objects narrower than a disk of {background_radius} px is removed "
                       "(a top-hat), then " if background_radius > 0 else "")
            note = (f"Noise-adaptive input smoothing (`denoise.py`, an addition to the paper) switched on after "
                    f"training, weights unchanged: {removal}a frame whose noise/range ratio is above "
                    f"{settings.target_ratio} (the ratio of the fixed-profile training frames) is smoothed "
                    f"in-plane, sigma at most {settings.max_sigma} px, before pseudocoloring. Frames as clean as "
                    f"the training data are not smoothed"
                    + (f", nor frames with a ratio up to {min_ratio}" if min_ratio > 0 else "")
                    + ". Measured in docs/generalization.md.")
            update_config(dst, {"denoise": settings.to_config()}, note=note)
            log.info("%s: denoise %s", dst, settings.to_config())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT / "models", help="model set to copy (default: models)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the copies")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the default targets by this")
    ap.add_argument("--datasets", nargs="+", default=list(TRAINING_RATIOS), choices=list(TRAINING_RATIOS))
    ap.add_argument("--background-radius", type=float, default=0.0, metavar="PX",
                    help="also remove the background under objects narrower than a disk of PX pixels first")
    ap.add_argument("--min-ratio", type=float, default=0.0, metavar="R",
                    help="leave frames whose noise/range ratio is at most R unsmoothed (denoise min_ratio)")
    ap.add_argument("--max-sigma", type=float, default=3.0, metavar="PX",
                    help="cap of the smoothing Gaussian in pixels (denoise max_sigma; default 3)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_variant(a.src, a.out, a.scale, a.datasets, a.background_radius, a.min_ratio, a.max_sigma)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
