"""SEG when objects are smaller or larger in pixels than in the training data, with and without ``predict --scale``
(synthetic data, not CTC).

Two tables:

* ``family-b``: family B default frames (seeds ``--seeds``) resampled in xy by each magnification ``M`` (frame
  and truth; truth by nearest neighbour), segmented by the shipped models with each ``--scale`` and by the
  classical baseline. Pairs are given as ``M:S`` (``0.6:1.667`` undoes a 0.6x magnification).
* ``tuning``: the family A tuning sequences of ``benchmarks/tuning.py`` at each ``--scale``, optionally
  resampled by each of ``--magnifications`` first; this is where a default (or a model) would be chosen.

A scale may be ``auto`` (``predict --scale auto``): chosen per frame (family B) or per sequence (tuning set, on
its middle frame) by :func:`efficientcellseg.infer.frame_scale`, for each model set with its own
``autoscale`` settings; the chosen scales are listed under the table.

Every ``--models NAME=DIR`` (default ``shipped=models``; ``DIR`` holds the model folders under their usual names,
as in ``benchmarks/accuracy.py``) gets its own column::

    .venv/bin/python benchmarks/magnification.py family-b --dataset TRIC --pairs 0.6:1 0.6:1.667 1:1 1:1.25
    .venv/bin/python benchmarks/magnification.py tuning --dataset TRIC --scales 1 1.25 1.5
    .venv/bin/python benchmarks/magnification.py tuning --dataset TRIC --magnifications 0.6 1 \
        --models shipped=models --models zoom=runs/variants/tric_zoom
    .venv/bin/python benchmarks/magnification.py family-b --dataset TRIC --pairs 0.6:1 0.6:auto 1:1 1:auto
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "SW", ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402

log = logging.getLogger("efficientcellseg.benchmarks.magnification")


Scale = float | str
"""A ``--scale``: a number or ``"auto"``."""


def parse_scale(text: str) -> Scale:
    """``"auto"`` or a number > 0; ValueError otherwise."""
    if text == "auto":
        return text
    s = float(text)
    if not s > 0:
        raise ValueError(f"scale {text!r} must be > 0 or auto")
    return s


def parse_pairs(items: Sequence[str]) -> list[tuple[float, Scale]]:
    """``["0.6:1.667", "0.6:auto", ...]`` -> ``[(0.6, 1.667), (0.6, "auto"), ...]`` (magnification, scale);
    ValueError names a bad item."""
    out = []
    for item in items:
        try:
            m_text, s_text = item.split(":")
            m, s = float(m_text), parse_scale(s_text)
        except ValueError:
            raise ValueError(f"--pairs {item!r}: expected MAGNIFICATION:SCALE with numbers > 0 (SCALE may be "
                             "auto), e.g. 0.6:1.667") from None
        if not m > 0:
            raise ValueError(f"--pairs {item!r}: the magnification must be > 0")
        out.append((m, s))
    return out


def magnify_truth(truth: np.ndarray, m: float) -> np.ndarray:
    """(Z, Y, X) or (Y, X) truth labels resampled in xy by ``m`` (nearest; ``truth`` itself for 1)."""
    from efficientcellseg.preprocess import restore_labels, scaled_shape

    if m == 1.0:
        return truth
    vol = np.asarray(truth, np.uint16)
    out = restore_labels(vol if vol.ndim == 3 else vol[None], scaled_shape(vol.shape[-2:], m))
    return out if vol.ndim == 3 else out[0]


def magnify(raw: np.ndarray, truth: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its truth resampled in xy by ``m`` (frame as ``predict --scale`` does, truth nearest)."""
    from efficientcellseg.preprocess import rescale_frame

    return rescale_frame(raw, m), magnify_truth(truth, m)


def _segmenters(key: str, models: Mapping[str, Path], scale: float, adapt_frames: Sequence[Path] | None = None
                ) -> dict[str, Any]:
    """``{name: Segmenter}`` of each model set at ``scale`` (CPU, exact fp32)."""
    from accuracy import model_folders

    from efficientcellseg.infer import build_segmenter

    out = {}
    for name, folder in models.items():
        f = model_folders(folder, key)
        out[name] = build_segmenter(key, f["seg"], f.get("centers"), device="cpu", scale=scale,
                                    adapt_frames=adapt_frames)
    return out


class _Segmenters:
    """Segmenters of every model set, built once per scale; ``auto`` resolved per frame with each set's own
    ``autoscale`` settings (:func:`efficientcellseg.infer.frame_scale`)."""

    def __init__(self, key: str, models: Mapping[str, Path], adapt_frames: Sequence[Any] | None = None) -> None:
        self.key, self.models, self.adapt_frames = key, models, adapt_frames
        self.built: dict[float, dict[str, Any]] = {}
        self.chosen: list[str] = []

    def at(self, scale: float) -> dict[str, Any]:
        if scale not in self.built:
            self.built[scale] = _segmenters(self.key, self.models, scale, self.adapt_frames)
        return self.built[scale]

    def for_frame(self, scale: Scale, raw: np.ndarray | None, tag: str) -> dict[str, Any]:
        """``{name: Segmenter}`` at ``scale``; ``auto``: each set at the scale it chooses on ``raw`` (needed only
        then)."""
        if scale != "auto":
            return self.at(float(scale))
        if raw is None:
            raise ValueError("--scale auto needs a frame to choose the scale on")
        from efficientcellseg.infer import frame_scale

        out = {}
        for name, seg in self.at(1.0).items():
            s = frame_scale(seg, raw)
            self.chosen.append(f"{tag} {name}: {s:g}")
            out[name] = self.at(s)[name]
        return out


def family_b_table(dataset: str, seeds: Sequence[int], pairs: Sequence[tuple[float, Scale]],
                   models: Mapping[str, Path] | None = None) -> str:
    """Markdown: SEG of each model set and of the classical baseline per (magnification, scale)."""
    from classical import segment_classical
    from robustness import family_b_frame, score

    from efficientcellseg.datasets import get_dataset
    from evaluation.seg import pooled_seg

    models = dict(models or {"shipped": ROOT / "models"})
    key = get_dataset(dataset).key
    frames = [family_b_frame(key, s, key == "TRIC", {}) for s in seeds]
    names = list(models)
    lines = [f"| {key} magnification | --scale | " + " | ".join(f"{n} SEG" for n in names)
             + " | classical SEG | objects |", "|---|---|" + "---|" * (len(names) + 2)]
    segs = _Segmenters(key, models)
    classical: dict[float, float] = {}
    for m, s in pairs:
        got: dict[str, list] = {n: [] for n in [*names, "classical"]}
        start = time.perf_counter()
        for seed, (raw, truth) in zip(seeds, frames, strict=True):
            r, t = magnify(raw, truth, m)
            here = segs.for_frame(s, r, f"seed {seed} at {m:g}x")
            outs = [(n, here[n].segment(r)) for n in names]
            if m not in classical:
                outs.append(("classical", segment_classical(r, key)))
            for n, labels in outs:
                x = score(t, labels, key)
                got[n].extend(x if isinstance(x, list) else [x])
        if m not in classical:
            classical[m] = pooled_seg(got["classical"])
        n_obj = sum(x.n_objects for x in got[names[0]])
        lines.append(f"| {m:g} | {_fmt(s)} | " + " | ".join(f"{pooled_seg(got[n]):.3f}" for n in names)
                     + f" | {classical[m]:.3f} | {n_obj} |")
        log.info("%s M=%g S=%s: %s (%.0f s)", key, m, _fmt(s), lines[-1], time.perf_counter() - start)
    chosen = f"\n\n--scale auto chose: {'; '.join(segs.chosen)}." if segs.chosen else ""
    return ("\n".join(lines) + f"\n\nFamily B default frames, seeds {', '.join(map(str, seeds))}; SEG pooled."
            + chosen + "\n")


def _fmt(scale: Scale) -> str:
    return scale if isinstance(scale, str) else f"{scale:g}"


def tuning_table(dataset: str, scales: Sequence[Scale], models: Mapping[str, Path] | None = None,
                 magnifications: Sequence[float] = (1.0,)) -> str:
    """Markdown: SEG of each model set on the family A tuning sequences, resampled by each magnification, at
    each scale."""
    from tuning import ensure_sequences

    from efficientcellseg.ctc_io import list_frames, read_frame
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import choose_calibration_frames
    from efficientcellseg.preprocess import rescale_frame
    from evaluation.ctc_seg import list_gt_files, read_gt
    from evaluation.seg import match_objects, pooled_seg

    models = dict(models or {"shipped": ROOT / "models"})
    cfg = get_dataset(dataset)
    key, max_z = cfg.key, cfg.max_z
    specs = ensure_sequences(ROOT / "runs" / "tuning" / "data", key)
    lines = [f"| {key} tuning set: model | magnification | --scale | fixed | randomized | mean |",
             "|---|---|---|---|---|---|"]
    chosen: list[str] = []
    for m in magnifications:
        for s in scales:
            acc: dict[str, dict[bool, list]] = {n: {False: [], True: []} for n in models}
            for tag, randomized, spec in specs:
                frames = {f.index: f for f in list_frames(spec.path)}
                picks = choose_calibration_frames(spec.path)
                adapt = [p if m == 1.0 else rescale_frame(read_frame(p, max_z=max_z), m) for p in picks]
                pool = _Segmenters(key, models, adapt)
                middle = (rescale_frame(read_frame(picks[len(picks) // 2], max_z=max_z), m) if s == "auto"
                          else None)  # read only for auto
                segs = pool.for_frame(s, middle, f"{tag} at {m:g}x")
                chosen += pool.chosen
                gts = list_gt_files(spec.gt_dir)
                for t in sorted({g.t for g in gts} & set(frames)):
                    raw = rescale_frame(read_frame(frames[t].path, max_z=max_z), m)
                    here = [(g.z, magnify_truth(read_gt(g), m)) for g in gts if g.t == t]
                    for n, seg in segs.items():
                        labels = seg.segment(raw)
                        acc[n][randomized] += [match_objects(tr, labels if z is None else labels[z])
                                               for z, tr in here]
            for n in models:
                f, r_ = pooled_seg(acc[n][False]), pooled_seg(acc[n][True])
                lines.append(f"| {n} | {m:g} | {_fmt(s)} | {f:.4f} | {r_:.4f} | {(f + r_) / 2:.4f} |")
                log.info("%s", lines[-1])
    auto = f"\n\n--scale auto chose: {'; '.join(chosen)}." if chosen else ""
    return ("\n".join(lines) + "\n\nSEG pooled over reference objects of the family A tuning sequences." + auto
            + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints one Markdown table."""
    from efficientcellseg.errors import CTCInputError, ModelError
    from efficientcellseg.log import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", choices=["family-b", "tuning"])
    ap.add_argument("--dataset", default="TRIC", choices=["MDA231", "TRIC", "A549-SIM"])
    ap.add_argument("--pairs", nargs="+", default=["0.6:1", "0.6:1.667", "1:1", "1:1.25"],
                    help="family-b: MAGNIFICATION:SCALE pairs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[531, 532], help="family-b: family B seeds")
    ap.add_argument("--scales", nargs="+", type=parse_scale, default=[1.0, 1.25, 1.5],
                    help="tuning: --scale values (numbers or auto)")
    ap.add_argument("--magnifications", nargs="+", type=float, default=[1.0],
                    help="tuning: resample the tuning frames and truth by these first (e.g. 0.6 1)")
    ap.add_argument("--models", action="append", default=[], metavar="NAME=DIR",
                    help="a model set to score (repeatable; default shipped=models)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    a = ap.parse_args(argv)
    setup_logging(-1 if a.quiet else 0)
    try:
        from accuracy import parse_model_sets

        models = parse_model_sets(a.models) if a.models else None
        if any(not m > 0 for m in a.magnifications):
            raise ValueError(f"--magnifications {a.magnifications}: every value must be > 0")
        text = (family_b_table(a.dataset, a.seeds, parse_pairs(a.pairs), models) if a.table == "family-b"
                else tuning_table(a.dataset, a.scales, models, a.magnifications))
    except (ValueError, CTCInputError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Command: `benchmarks/magnification.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
