"""Noise/range ratio of sequences (denoise.py), and the smoothing each model target would apply.

The ratio is the input statistic behind the noise-adaptive smoothing: a robust white-noise standard deviation
over the signal range of a frame (``efficientcellseg.denoise.noise_ratio``). This prints, per sequence, the
median ratio over its frames and the in-plane Gaussian sigma that the default targets of
``benchmarks/denoise_variant.py`` would choose, as a Markdown table::

    .venv/bin/python benchmarks/noise_ratio.py --seq A-fixed:MDA231:runs/acc_dn/data/A-fixed/Fluo-C3DL-MDA231/01
    .venv/bin/python benchmarks/noise_ratio.py --data runs/acc_dn/data     # every FAMILY/Fluo-*/01 below it
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from denoise_variant import TRAINING_RATIOS  # noqa: E402
from efficientcellseg.ctc_io import list_frames, read_frame  # noqa: E402
from efficientcellseg.datasets import DATASETS, get_dataset  # noqa: E402
from efficientcellseg.denoise import DenoiseSettings, adaptive_sigma, noise_ratio  # noqa: E402


def sequence_ratios(seq: Path, dataset: str, max_frames: int = 3) -> tuple[float, float]:
    """Median noise ratio and median smoothing sigma (default target of ``dataset``) over the first frames."""
    cfg = get_dataset(dataset)
    settings = DenoiseSettings(TRAINING_RATIOS[cfg.key])
    ratios, sigmas = [], []
    for frame in list_frames(seq)[:max_frames]:
        raw = read_frame(frame.path, max_z=cfg.max_z)
        ratios.append(noise_ratio(raw))
        sigmas.append(adaptive_sigma(raw, settings))
    return statistics.median(ratios), statistics.median(sigmas)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", action="append", default=[], metavar="TAG:DATASET:PATH")
    ap.add_argument("--data", type=Path, default=None, help="folder with FAMILY/<CTC name>/01 sequences")
    ap.add_argument("--frames", type=int, default=3, help="frames per sequence (the first ones)")
    a = ap.parse_args(argv)
    seqs = []
    for s in a.seq:
        tag, ds, path = s.split(":", 2)
        seqs.append((tag, ds, Path(path)))
    if a.data is not None:
        ctc_names = {cfg.ctc_name for cfg in DATASETS.values()}
        for fam in sorted(p for p in a.data.iterdir() if p.is_dir()):
            for ds_dir in sorted(fam.iterdir()):
                if ds_dir.name in ctc_names and (ds_dir / "01").is_dir():
                    seqs.append((fam.name, get_dataset(ds_dir.name).key, ds_dir / "01"))
    if not seqs:
        ap.error("give --seq or --data")
    print("| family | dataset | noise/range (median) | target | sigma (px) |")
    print("|---|---|---|---|---|")
    for tag, ds, path in seqs:
        ratio, sigma = sequence_ratios(path, ds, a.frames)
        key = get_dataset(ds).key
        print(f"| {tag} | {key} | {ratio:.3f} | {TRAINING_RATIOS[key]} | {sigma:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
