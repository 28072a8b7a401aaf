"""Tune the post-processing parameters of a model folder for SEG on labelled validation frames.

The network runs once per frame; every parameter combination of a small grid is then post-processed and
scored with the official SEG semantics (:mod:`evaluation.seg`), and the best combination can be written into
the model folder's ``thresholds.json`` (its sha256 is updated), as StarDist's ``optimize_thresholds`` does
for its two thresholds. Use frames that were *not* used to report results.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from efficientcellseg.ctc_io import list_frames, read_frame
from efficientcellseg.errors import CTCInputError
from efficientcellseg.log import progress

log = logging.getLogger(__name__)

DEFAULT_GRIDS: Mapping[str, Mapping[str, Sequence[Any]]] = {
    "centers_watershed": {"prob_threshold": (0.4, 0.5, 0.6, 0.7), "center_threshold": (0.1, 0.2),
                          "center_min_distance": (14, 17, 20), "end_threshold": (0.0, 0.85, 0.9),
                          "end_fraction": (0.7, 0.8, 0.9), "signal_fraction": (0.0, 0.3),
                          "grow_fraction": (0.0, 0.4), "rescue_sigma": (0.0, 5.0)},
    "distance_watershed": {"prob_threshold": (0.4, 0.5, 0.55, 0.6), "min_distance": (2, 3, 4, 6),
                           "z_scale": (1.0, 2.0, 3.0), "boundary_fraction": (0.0, 0.35)},
    "largest_component": {"prob_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
                          "signal_fraction": (0.0, 0.3, 0.35, 0.4, 0.45), "boundary_fraction": (0.0, 0.4)},
}


@dataclass
class TuneResult:
    """Outcome of :func:`tune_postprocess`: SEG of the current and of the best parameters, and every trial."""

    current: dict[str, Any]
    current_seg: float
    best: dict[str, Any]
    best_seg: float
    trials: list[tuple[dict[str, Any], float]]
    n_objects: int
    frames: list[int]


def seg_of_labels(labels_by_t: Mapping[int, np.ndarray], gts: Sequence[Any], gt_arrays: Sequence[np.ndarray]
                  ) -> float:
    """Pooled SEG of label volumes (by time point) against truth files ``gts`` (``evaluation.ctc_seg`` entries:
    full 3D or one slice ``z``) whose arrays are ``gt_arrays``."""
    from evaluation.seg import match_objects, pooled_seg

    matches = []
    for g, arr in zip(gts, gt_arrays, strict=True):
        res = labels_by_t[g.t]
        matches.append(match_objects(arr, res if g.z is None else res[g.z]))
    return pooled_seg(matches)


def tune_postprocess(
    dataset: str,
    input_dir: Path,
    gt_dir: Path | None = None,
    model_dir: Path | None = None,
    centers_model_dir: Path | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    max_frames: int | None = None,
    device: str = "auto",
) -> TuneResult:
    """Grid-search the post-processing parameters of ``dataset``'s model(s) for SEG on ``input_dir`` frames.

    ``gt_dir`` defaults to ``<input_dir>_GT/SEG``; only frames with GT are used (at most ``max_frames``,
    evenly spaced). Parameters not in ``grid`` keep their current values.
    """
    from evaluation.ctc_seg import list_gt_files, read_gt

    from efficientcellseg.infer import build_segmenter, choose_calibration_frames
    from efficientcellseg.postprocess import (
        CENTERS_FINISH_PARAMS,
        CENTERS_SPLIT_PARAMS,
        canonical_params,
        centers_finish,
        centers_split,
        check_parameter_names,
        postprocess,
    )

    input_dir = Path(input_dir)
    gt_dir = Path(gt_dir) if gt_dir is not None else input_dir.parent / f"{input_dir.name}_GT" / "SEG"
    seg = build_segmenter(dataset, model_dir=model_dir, centers_model_dir=centers_model_dir, device=device,
                          adapt_frames=choose_calibration_frames(input_dir))  # as predict adapts the models
    kind = seg.cfg.postprocess
    grid = dict(grid if grid is not None else DEFAULT_GRIDS[kind])
    check_parameter_names(kind, set(grid) | set(seg.params))  # before the network pass
    gts = list_gt_files(gt_dir)
    frames = {f.index: f for f in list_frames(input_dir)}
    ts = sorted({g.t for g in gts} & set(frames))
    if not ts:
        raise CTCInputError(f"{gt_dir}: no GT file matches a frame of {input_dir}")
    if max_frames is not None and len(ts) > max_frames:
        ts = [ts[i] for i in np.linspace(0, len(ts) - 1, max_frames).round().astype(int)]
    gts = [g for g in gts if g.t in ts]
    gt_arrays = [read_gt(g) for g in gts]
    n_obj = sum(int(np.count_nonzero(np.unique(a))) for a in gt_arrays)
    probs = {}
    t0 = time.perf_counter()
    for t in progress(ts, desc=f"tune {dataset}: network", unit="frame"):
        probs[t] = seg.probabilities(read_frame(frames[t].path, max_z=seg.cfg.max_z), all_slices=True)
    log.info("network on %d frames in %.1fs; %d reference objects", len(ts), time.perf_counter() - t0, n_obj)

    # The watershed does not depend on the end-slice settings: keep it (per frame) while only those change;
    # they vary fastest in the grid, so one watershed setting is held at a time.
    watersheds: dict[str, dict[int, np.ndarray]] = {}

    def labels_for(t: int, full: Mapping[str, Any]) -> np.ndarray:
        p = probs[t]
        if kind != "centers_watershed":
            return postprocess(kind, p["seg"], full, centers=p.get("centers"), signal=p.get("signal"))
        split = {k: full[k] for k in CENTERS_SPLIT_PARAMS}
        key = repr(sorted(split.items()))
        if key not in watersheds:
            watersheds.clear()
            watersheds[key] = {}
        frames_ws = watersheds[key]
        if t not in frames_ws:
            frames_ws[t] = centers_split(p["seg"], p["centers"], **split)
        finish = {k: full[k] for k in CENTERS_FINISH_PARAMS}
        return centers_finish(frames_ws[t].copy(), p["seg"], p.get("signal"), **finish)

    scores: dict[str, float] = {}

    def run(params: Mapping[str, Any]) -> float:
        full = canonical_params(kind, params)
        key = repr(sorted(full.items()))
        if key not in scores:
            scores[key] = seg_of_labels({t: labels_for(t, full) for t in probs}, gts, gt_arrays)
        return scores[key]

    current = dict(seg.params)
    current_seg = run(current)
    names = list(grid)
    trials = []
    combos = list(itertools.product(*(grid[n] for n in names)))
    for values in progress(combos, desc=f"tune {dataset}: grid", unit="setting"):
        params = {**current, **dict(zip(names, values, strict=True))}
        s = run(params)
        trials.append((params, s))
        log.debug("%s -> SEG %.4f", {n: params[n] for n in names}, s)
    best, best_seg = max(trials, key=lambda x: x[1]) if trials else (current, current_seg)
    if best_seg <= current_seg:
        best, best_seg = current, current_seg
    return TuneResult(current, current_seg, dict(best), best_seg, trials, n_obj, ts)


def _gives_centres(folder: Path) -> bool:
    """True for a one-network model with foreground and centre outputs (task ``seg_centers``)."""
    import json

    from efficientcellseg.weights import gives_centres

    return gives_centres(json.loads((Path(folder) / "config.json").read_text()))


def write_tuned(result: TuneResult, dataset: str, model_dir: Path | None = None,
                centers_model_dir: Path | None = None, note: str = "") -> list[Path]:
    """Store the tuned parameters in the model folder(s): ``center_*`` in the centre model, the rest in the
    segmentation model (the order in which :func:`efficientcellseg.infer.build_segmenter` merges them); all in
    the one folder of a two-output (``seg_centers``) model."""
    from efficientcellseg.datasets import get_dataset
    from efficientcellseg.infer import resolve_model_dir
    from efficientcellseg.weights import update_thresholds

    cfg = get_dataset(dataset)
    seg_dir = resolve_model_dir(cfg, "seg", model_dir)
    changed = dict(result.best)  # the complete parameter set, so the folder documents what is used
    two_networks = cfg.postprocess == "centers_watershed" and not _gives_centres(seg_dir)
    centre_keys = {k for k in changed if k.startswith("center_")} if two_networks else set()
    written = [update_thresholds(seg_dir, {k: v for k, v in changed.items() if k not in centre_keys}, note)]
    if centre_keys:
        c_dir = resolve_model_dir(cfg, "centers", centers_model_dir, model_dir)
        written.append(update_thresholds(c_dir, {k: changed[k] for k in centre_keys}, note))
    return written
