"""What a training run writes besides the weights: its record, model card and thresholds, and the model folder."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from efficientcellseg import __version__
from efficientcellseg.datasets import DatasetConfig, get_dataset
from efficientcellseg.train_config import NEEDS_3D, TrainConfig, denoise_settings
from efficientcellseg.trainset import FrameRef


def _init_lines(parent: dict[str, Any] | None) -> list[str]:
    """Model-card lines for a run that started from another model folder (chained fine-tunings included)."""
    lines = []
    while parent:
        wall = parent.get("wall_time_s")
        lines.append(f"- Started from {parent['folder']} (sha256 {parent['sha256'][:12]}...): "
                     f"{parent.get('epochs', '?')} epochs, {parent.get('steps', '?')} steps"
                     + (f", {wall / 60:.1f} min on {parent.get('device', '?')}" if wall is not None else "")
                     + "; the counts below are this run only.")
        parent = parent.get("init_from")
    return lines



def _distill_lines(cfg: TrainConfig, teachers: list[dict[str, str]] | None) -> list[str]:
    """Model-card lines for a distilled run and a frozen encoder."""
    lines = []
    if teachers:
        names = ", ".join(f"{t['folder']} (sha256 {t['sha256'][:12]}...)" for t in teachers)
        share = ("the teachers' outputs on every augmented crop are the only targets" if cfg.distill_weight >= 1
                 else f"loss = {cfg.distill_weight} x the teachers' outputs as targets + {1 - cfg.distill_weight:g}"
                      " x the labels")
        lines.append(f"- Distilled from {names}: {share}.")
    if cfg.freeze_encoder or cfg.freeze_decoder_blocks:
        kept = (["encoder"] if cfg.freeze_encoder else []) + (
            [f"the first {cfg.freeze_decoder_blocks} of 4 decoder blocks"] if cfg.freeze_decoder_blocks else [])
        lines.append(f"- Frozen (weights and normalisation statistics as initialised): {' and '.join(kept)}; the "
                     "rest trained.")
    if cfg.freeze_bn:
        lines.append("- Batch-normalisation statistics kept as initialised in every layer (weights trained).")
    return lines


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return json.loads(json.dumps(d, default=str))


def _model_card(name: str, cfg: TrainConfig, record: dict[str, Any], thresholds: dict[str, Any]) -> str:
    ds = get_dataset(cfg.dataset)
    synthetic = record.get("synthetic_data")
    origin = (
        "**SYNTHETIC** data generated with `efficientcellseg.synth` (not Cell Tracking Challenge data); "
        + (cfg.data_note or "see the training record in config.json for the data path")
        if synthetic
        else f"the data in `{record['data']}` ({cfg.data_note or 'source not recorded'})"
    )
    val = record.get("best_validation", {})
    seqs = ((record.get("synth_record") or {}).get("sequences") or {})
    used = [seqs[q] for q in record["seqs"] if q in seqs]
    n_rand = sum(1 for q in used if q.get("randomized"))
    randomized = ([f"- {n_rand} of {len(used)} training sequences are domain-randomized (`synth --randomize`: "
                   "photons, camera, background, PSF, textures, debris, artefacts, bit depth and cell geometry "
                   "drawn per sequence from the ranges in `efficientcellseg.randomize.RANGES`, listed in "
                   "docs/synth.md); their draws are in config.json (`training.synth_record`)."]
                  if n_rand else [])
    aug = cfg.augment
    aug_line = (f"- Augmentation: flips, rot90, zoom {aug.scale_range}, gamma {aug.gamma_range}, contrast "
                f"{aug.contrast_range}, noise <= {aug.noise_max}"
                + (f", blur <= {aug.blur_max} px, multiplicative noise <= {aug.speckle_max}, random texture <= "
                   f"{aug.texture_max}, channel gain +-{aug.channel_gain}" if aug.blur_max or aug.texture_max
                   else "") + "." if aug.enabled else "- Augmentation: off.")
    lines = [
        f"# {name}",
        "",
        f"EfficientCellSeg {cfg.task} model for {ds.ctc_name} ({ds.key}).",
        "",
        f"- Trained on {origin}.",
        f"- Sequences {', '.join(record['seqs'])}; validation frames {record['val_frames']} "
        + (f"(the held-out sequences {', '.join(cfg.val_seqs)}, never trained on)." if cfg.val_seqs
           else "(split by frame)."),
        f"- Input: {'Context Aware Pseudocoloring' if cfg.pseudocolor else 'grey stack'}, network scale as in "
        f"inference (input size {ds.input_size}), random crops of {record['crop']} px, batch {cfg.batch_size}.",
        *([f"- Noise-adaptive input smoothing (denoise.py): target noise ratio {cfg.denoise_target}"
           + (f", frames at or below {cfg.denoise_min_ratio} left unsmoothed" if cfg.denoise_min_ratio > 0 else "")
           + ", in training and inference."] if cfg.denoise_target is not None else []),
        *([f"- Background removal before it (denoise.py): every slice minus its grey opening with a disk of "
           f"{cfg.background_radius} px (a top-hat), clipped at 0, in training and inference."]
          if cfg.background_radius > 0 else []),
        *([f"- Before both (denoise.py): every frame clipped at its {cfg.ceiling_percentile}th percentile"
           + (f" of its {cfg.ceiling_median}x{cfg.ceiling_median} in-plane median" if cfg.ceiling_median > 0 else "")
           + ", so a few very bright voxels do not squeeze the min-max input range, in training and inference."]
          if cfg.ceiling_percentile > 0 else []),
        *randomized,
        aug_line,
        *([f"- Outputs: channel 0 foreground probability, channel 1 cell-centre heatmap (one network; "
           f"centre loss weight {cfg.center_weight})."] if cfg.task == "seg_centers" else []),
        f"- Encoder initialisation: {cfg.encoder_weights} (no ImageNet weights are available offline here).",
        *_distill_lines(cfg, record.get("teachers")),
        *_init_lines(record.get("init_from")),
        *([f"- Weights: exponential moving average (decay {cfg.ema_decay}) of the training weights."]
          if cfg.ema_decay else []),
        f"- {record['epochs']} epochs, {record['steps']} optimizer steps, {record['wall_time_s'] / 60:.1f} min "
        f"wall time on {record['device']} with {record['torch_threads']} torch thread(s).",
        f"- Best validation (epoch {record['best_epoch']}): " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float)
                                                                        else f"{k} {v}" for k, v in val.items()),
        *([f"- The folder holds the **last** epoch's weights (epoch {record['kept_epoch']}, validation "
           f"{record['final_validation']['val']:.4f}), not the best-validated epoch's."]
          if record.get("kept") == "last" and record.get("final_validation") else []),
        f"- Thresholds chosen on the validation frames: {json.dumps(thresholds)}.",
        "",
        "Validation scores are pixel-level scores at network scale on held-out frames of the training data, "
        "not CTC SEG scores" + (" and not results on real CTC data." if synthetic else "."),
        "",
    ]
    return "\n".join(lines)


def save_folder(out: Path, net_state: dict[str, torch.Tensor], arch: dict[str, Any], cfg: TrainConfig,
                 ds: DatasetConfig, record: dict[str, Any], thresholds: dict[str, Any]) -> None:
    from efficientcellseg.model import EfficientCellSeg
    from efficientcellseg.weights import save_model_folder

    net = EfficientCellSeg(**arch)
    net.load_state_dict(net_state)
    config = {"name": out.name, "dataset": ds.key, "task": cfg.task, "input_size": ds.input_size,
              "pseudocolor": cfg.pseudocolor, "trained": True, "training": record}
    settings = denoise_settings(cfg)
    if settings is not None:
        config["denoise"] = settings.to_config()
    save_model_folder(out, net, config, thresholds, _model_card(out.name, cfg, record, thresholds))


def _synthetic_info(data: Path) -> dict[str, Any] | None:
    """What ``efficientcellseg.synth`` recorded about a generated dataset, if it left a record."""
    for name in ("synth.json", "SYNTH.json", "synth_meta.json"):
        for p in [data / name, *sorted(data.glob(f"*/{name}"))]:
            if p.is_file():
                try:
                    return {"file": str(p), **json.loads(p.read_text())}
                except json.JSONDecodeError:
                    return {"file": str(p)}
    return None


def thresholds_from_validation(cfg: TrainConfig, best_val: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if cfg.task != "centers":
        out["prob_threshold"] = float(best_val.get("prob_threshold", 0.5))
    if cfg.task in NEEDS_3D:
        out["center_threshold"] = float(best_val.get("center_threshold", 0.3))
    return out


def training_record(cfg: TrainConfig, ds: DatasetConfig, refs: list[FrameRef], val_refs: list[FrameRef],
            state: dict[str, Any], crop: int, device: torch.device, steps_per_epoch: int, n_train: int,
            n_val: int) -> dict[str, Any]:
    synth = _synthetic_info(Path(cfg.data))
    return {
        "data": str(cfg.data),
        "data_note": cfg.data_note,
        "synthetic_data": synth is not None or (cfg.data_note is not None and "synth" in cfg.data_note.lower()),
        "synth_record": synth,
        "seqs": sorted({r.seq for r in refs}),
        "n_frames": len(refs),
        "val_frames": [f"{r.seq}/t{r.t:03d}" for r in val_refs],
        "n_train_slices": n_train,
        "n_val_slices": n_val,
        "config": _jsonable(cfg),
        "crop": crop,
        "steps_per_epoch": steps_per_epoch,
        "epochs": state["epoch"],
        "steps": state["step"],
        "wall_time_s": round(state["elapsed_s"], 1),
        "device": str(device) if device.type != "cpu" else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "package_version": __version__,
        "best_epoch": state["best_epoch"],
        "kept": cfg.keep,
        "kept_epoch": state.get("kept_epoch", state["best_epoch"]),
        "best_validation": state["best_val"],
        "final_validation": state["history"][-1] if state["history"] else None,
        "stop_reason": state.get("stop_reason"),
        "init_from": state.get("init_from"),
        "teachers": state.get("teachers"),
        "history": state["history"],
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
