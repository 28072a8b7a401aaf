"""Training of segmentation and cell-centre models on CTC-layout data (real or from ``efficientcellseg.synth``).

The data (:mod:`efficientcellseg.trainset`) are network-scale slices in RAM; the network is trained on random
augmented crops of them (:mod:`efficientcellseg.augment`).

Task ``seg_centers`` trains one network with both outputs (channel 0 foreground, channel 1 centre heatmap; loss
= segmentation loss + ``center_weight`` x focal loss), so MDA231 needs one forward pass per slice instead of two.

Losses: Dice + BCE for segmentation (``bce_weight=0`` gives the paper's pure Dice), a soft-target focal loss for
centres (see :mod:`efficientcellseg.losses`). Adam, ReduceLROnPlateau on the validation score
(:mod:`efficientcellseg.validation`), early stopping, a ``checkpoint.pt`` after every epoch (resumable, loaded
with ``weights_only=True``) and a complete model folder (:mod:`efficientcellseg.train_record`) written whenever
validation improves, so the best weights are the ones saved; with ``keep="last"`` it is written after every
epoch with that epoch's weights instead. ``val_seqs`` validates on whole held-out sequences.

``distill_from``: teacher model folders' outputs on each augmented crop are the targets (:mod:`efficientcellseg.distill`),
alone or beside the labels; ``freeze_encoder`` trains the decoder and head only, ``freeze_decoder_blocks`` keeps
the first decoder blocks too, ``freeze_bn`` every normalisation layer's statistics.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from efficientcellseg.augment import augment_sample, random_crop
from efficientcellseg.datasets import get_dataset
from efficientcellseg.distill import Teachers, distill_loss, load_teachers
from efficientcellseg.errors import ModelError
from efficientcellseg.log import progress
from efficientcellseg.losses import seg_loss, soft_focal_loss
from efficientcellseg.train_config import KEEP, TASKS, TrainConfig, denoise_settings
from efficientcellseg.train_record import save_folder, thresholds_from_validation, training_record
from efficientcellseg.trainset import Sample, discover, frame_samples, split_frames
from efficientcellseg.validation import validate

__all__ = ["CHECKPOINT", "TrainConfig", "train"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def _head_channels(src_task: str, task: str, n_have: int) -> list[int]:
    """Which output channel of the network to train each head channel of the starting folder becomes: a
    ``centers`` folder's heatmap is channel 1 of ``seg_centers``; otherwise channels keep their order."""
    if src_task == "centers" and task == "seg_centers":
        return [1]
    return list(range(n_have))


def _init_from_folder(net: torch.nn.Module, folder: Path, task: str) -> dict[str, Any]:
    """Load all weights of a verified model folder into ``net`` (must have the same architecture);
    returns what the model card should say about that starting point."""
    from efficientcellseg.weights import load_model_folder

    lm = load_model_folder(folder)  # fp32 network rebuilt from the folder's architecture kwargs
    have, want = dict(lm.net.init_kwargs), dict(net.init_kwargs)
    n_have, n_want = have.pop("out_channels", 1), want.pop("out_channels", 1)
    mapping = _head_channels(str(lm.config.get("task", "seg")), task, n_have)
    if have != want or max(mapping) >= n_want:
        raise ModelError(f"{folder}: architecture {lm.net.init_kwargs} differs from the one to train "
                         f"{net.init_kwargs}; use a folder trained with the same decoder and outputs")
    state = lm.net.state_dict()
    new_channels = [c for c in range(n_want) if c not in mapping]
    if mapping != list(range(n_want)):  # e.g. a one-output folder starting a seg_centers model
        own = net.state_dict()
        for k in ("head.0.weight", "head.0.bias"):
            own[k][mapping] = state[k]
            state[k] = own[k]
        log.info("head channels %s of %s come from %s channels %s; %s are new", mapping,
                 net.__class__.__name__, folder, list(range(n_have)), new_channels)
    net.load_state_dict(state)
    log.info("initialised all weights from %s (sha256 %s)", folder, lm.sha256[:12])
    prev = lm.config.get("training", {})
    summary = {"folder": str(folder), "sha256": lm.sha256}
    if new_channels:
        summary["new_head_channels"] = new_channels
    summary.update({k: prev[k] for k in ("epochs", "steps", "wall_time_s", "device", "init_from") if k in prev})
    return summary


def _frozen_parts(net: torch.nn.Module, cfg: TrainConfig) -> list[torch.nn.Module]:
    """The modules that keep their initial weights and statistics: the encoder (``freeze_encoder``) and the first
    ``freeze_decoder_blocks`` decoder blocks."""
    blocks = list(net.decoder.blocks)
    if not 0 <= cfg.freeze_decoder_blocks <= len(blocks):
        raise ValueError(f"freeze_decoder_blocks must be 0..{len(blocks)}, got {cfg.freeze_decoder_blocks}")
    return ([net.encoder] if cfg.freeze_encoder else []) + blocks[:cfg.freeze_decoder_blocks]


def _norm_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    """Every batch-normalisation layer of ``net`` (``freeze_bn`` keeps their statistics)."""
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _make_ema(net: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """Weight + BN-statistics average updated after every step, or None when ``decay`` is 0."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or 0 (off), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def _prefetched(make: Callable[[int], _T], n: int, ahead: int = 2) -> Iterator[_T]:
    """``make(0), ..., make(n - 1)`` in order, each made in a worker thread while the caller uses the previous one.

    One worker, so the calls run one after the other in order: a random generator they share is drawn from in
    the same order as in a plain loop, and the results are the same. The training step (PyTorch) and the next
    batch (NumPy / OpenCV crops and augmentation) then overlap; on a GPU the batches are the bottleneck. A
    caller that stops early leaves at most ``ahead`` calls made for nothing. ``ahead=0``: a plain loop, no thread
    (on a 2-core CPU the worker competed with PyTorch's threads: 40 A549-SIM steps took 33 s instead of 25-27 s,
    same weights)."""
    if ahead <= 0:
        yield from (make(i) for i in range(n))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(make, i) for i in range(min(ahead, n)))
        submitted = len(pending)
        try:
            while pending:
                result = pending.popleft().result()
                if submitted < n:
                    pending.append(pool.submit(make, submitted))
                    submitted += 1
                yield result
        finally:
            for future in pending:
                future.cancel()


def _batch(samples: list[Sample], idx: np.ndarray, crop: int, rng: np.random.Generator, cfg: TrainConfig
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ms = [], [], []
    binary = cfg.task != "centers"  # seg_centers: channel 0 binary, the heatmap soft
    for i in idx:
        s = samples[int(i)]
        mask = s.mask if s.mask is not None else torch.ones_like(s.target, dtype=torch.uint8)
        img, tgt, msk = random_crop(s.image, s.target, mask, crop, rng, cfg.augment, s.fg, binary)
        img, tgt, msk = augment_sample(img, tgt, msk, rng, cfg.augment)
        xs.append(img)
        ys.append(tgt)
        ms.append(msk)
    return torch.stack(xs), torch.stack(ys), torch.stack(ms)


def _loss(logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The label loss of the task."""
    if cfg.task == "centers":
        return soft_focal_loss(logits, y, m)
    if cfg.task == "seg_centers":
        return (seg_loss(logits[:, :1], y[:, :1], m, cfg.bce_weight)
                + cfg.center_weight * soft_focal_loss(logits[:, 1:], y[:, 1:], m))
    return seg_loss(logits, y, m, cfg.bce_weight)


def _step_loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, cfg: TrainConfig,
               teachers: Teachers | None) -> torch.Tensor:
    """The label loss, or with teachers ``distill_weight`` x their loss + the rest x the label loss."""
    if teachers is None:
        return _loss(logits, y, m, cfg)
    w = cfg.distill_weight
    loss = w * distill_loss(logits, teachers.targets(x), cfg.task, cfg.center_weight)
    if w < 1.0:
        loss = loss + (1.0 - w) * _loss(logits, y, m, cfg)
    return loss


def _check_distill(cfg: TrainConfig) -> None:
    if cfg.distill_from and not 0.0 < cfg.distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in (0, 1], got {cfg.distill_weight}")


def train(cfg: TrainConfig) -> Path:
    """Train a model as configured and write its model folder to ``cfg.out``; returns the folder."""
    t_start = time.perf_counter()
    ds = get_dataset(cfg.dataset)
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {cfg.keep!r}")
    crop = cfg.crop or ds.input_size
    if crop % 16 or crop < 32:
        raise ValueError(f"crop must be a multiple of 16 and >= 32 network pixels, got {crop}")
    denoise_settings(cfg)  # a bad input setting fails here, before any data is read
    _check_distill(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    from efficientcellseg.model import PAPER_DECODER_CHANNELS, EfficientCellSeg, load_encoder_weights
    from efficientcellseg.weights import output_channels

    torch.manual_seed(cfg.seed)
    net = EfficientCellSeg(decoder_channels=cfg.decoder_channels or PAPER_DECODER_CHANNELS,
                           out_channels=output_channels(cfg.task))
    load_encoder_weights(net, cfg.encoder_weights)
    parent = _init_from_folder(net, Path(cfg.init_from), cfg.task) if cfg.init_from is not None else None
    heat_channel = {"centers": 0, "seg_centers": 1}.get(cfg.task)
    if heat_channel is not None and (parent is None or heat_channel in parent.get("new_head_channels", [])):
        with torch.no_grad():  # start from a low heatmap everywhere (sparse targets), as CenterNet does
            net.head[0].bias[heat_channel].fill_(-4.0)
    arch = dict(net.init_kwargs)
    teachers = (load_teachers(cfg.distill_from, cfg.task, ds.key, cfg.pseudocolor, denoise_settings(cfg))
                if cfg.distill_from else None)  # before the data, so a wrong teacher fails at once
    if cfg.freeze_encoder and parent is None and cfg.encoder_weights == "none":
        log.warning("--freeze-encoder without --init-from or --encoder-weights keeps a random encoder")
    if cfg.freeze_bn and parent is None:
        log.warning("--freeze-bn without --init-from keeps the decoder's untrained statistics (mean 0, variance 1)")
    frozen = _frozen_parts(net, cfg)
    for part in frozen:
        part.requires_grad_(False)
    keep_stats = frozen + (_norm_layers(net) if cfg.freeze_bn else [])  # in eval mode while the rest trains

    refs = discover(cfg)
    train_refs, val_refs = split_frames(refs, cfg)
    log.info("%d labelled frames: %d for training, %d for validation %s", len(refs), len(train_refs),
             len(val_refs), [(r.seq, r.t) for r in val_refs])
    train_s: list[Sample] = []
    val_s: list[Sample] = []
    # frames are prepared in torch.get_num_threads() threads (OpenCV and NumPy release the GIL); pool.map keeps
    # the frame order, so the slices and therefore the training are the same for any number of threads
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        prepared = pool.map(lambda r: frame_samples(r, cfg, ds), refs)
        for ref, samples in progress(zip(refs, prepared), total=len(refs), desc="preparing slices", unit="frame"):
            (val_s if ref in val_refs else train_s).extend(samples)
    if cfg.task == "seg" and len(val_s) > cfg.max_val_samples:
        keep = np.linspace(0, len(val_s) - 1, cfg.max_val_samples).round().astype(int)
        val_s = [val_s[i] for i in sorted(set(keep.tolist()))]
    log.info("%d training slices, %d validation slices (%.0f MB in RAM), prepared in %.1fs", len(train_s),
             len(val_s), sum(s.image.numel() * 2 + s.target.numel() * 2 for s in train_s + val_s) / 2**20,
             time.perf_counter() - t_start)

    net = net.to(device).to(memory_format=torch.channels_last)
    if teachers is not None:
        teachers.to(device)
    ema = _make_ema(net, cfg.ema_decay)
    eval_net = ema.module if ema is not None else net
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=cfg.lr_patience)
    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(len(train_s) / cfg.batch_size))

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0,
                             "history": [], "elapsed_s": 0.0, "best_val": {}, "init_from": parent,
                             "teachers": teachers.folders if teachers is not None else None}
    best_state = copy.deepcopy({k: v.cpu() for k, v in eval_net.state_dict().items()})
    ckpt_path = out / CHECKPOINT
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        best_state = ck["best_state"]
        if ema is not None:
            if "ema" in ck:
                ema.load_state_dict(ck["ema"])
            else:
                log.warning("%s has no weight average; the average restarts from the current weights", ckpt_path)
        state = json.loads(ck["state_json"])
        log.info("resumed from %s at epoch %d (step %d, best %.4f)", ckpt_path, state["epoch"], state["step"],
                 state["best_score"])
    elif cfg.resume:
        log.info("no checkpoint in %s; starting from %s", out,
                 cfg.init_from if cfg.init_from is not None else "scratch")

    limit_s = cfg.time_limit_min * 60 if cfg.time_limit_min else None
    elapsed_before = state["elapsed_s"]
    val_cost = 0.0
    stop_reason = "max epochs"
    bar = progress(total=cfg.epochs * steps_per_epoch, initial=state["epoch"] * steps_per_epoch,
                   desc=f"train {ds.key}-{cfg.task}", unit="step")
    last_val = state["history"][-1]["val"] if state["history"] else float("nan")
    epoch = state["epoch"]
    while epoch < cfg.epochs:
        if state["bad_epochs"] >= cfg.patience:
            stop_reason = "early stopping"
            break
        t_ep = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        n_need = steps_per_epoch * cfg.batch_size
        order = np.concatenate([rng.permutation(len(train_s)) for _ in range(math.ceil(n_need / len(train_s)))])
        net.train()
        for part in keep_stats:
            part.eval()  # normalisation statistics stay as initialised
        losses: list[float] = []
        timed_out = False
        batches = _prefetched(
            lambda step: _batch(train_s, order[step * cfg.batch_size:(step + 1) * cfg.batch_size], crop, rng, cfg),
            steps_per_epoch, ahead=2 if device.type == "cuda" else 0)
        for x, y, m in batches:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            logits = net(x)
            loss = _step_loss(logits, x, y.to(device), m.to(device), cfg, teachers)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
            losses.append(float(loss.detach()))
            state["step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", val=f"{last_val:.4f}", refresh=False)
            elapsed = time.perf_counter() - t_start
            if limit_s is not None and elapsed + 1.2 * val_cost + 15 > limit_s:
                timed_out = True
                break
        t_val = time.perf_counter()
        val = validate(eval_net, val_s, cfg.task, device)
        val_cost = time.perf_counter() - t_val
        last_val = val["score"]
        sched.step(val["score"])
        epoch += 1
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)),
                                 "val": float(val["score"]), "lr": opt.param_groups[0]["lr"],
                                 "epoch_s": round(time.perf_counter() - t_ep, 2), "val_s": round(val_cost, 2),
                                 **{k: v for k, v in val.items() if k != "score"}})
        state["elapsed_s"] = elapsed_before + time.perf_counter() - t_start
        improved = val["score"] > state["best_score"]
        log.info("epoch %d: loss %.4f, validation %s %.4f%s (lr %.2e, %.0fs)", epoch, np.mean(losses),
                 {"seg": "IoU", "centers": "heatmap IoU"}.get(cfg.task, "(IoU + centre F1)/2"), val["score"],
                 " (best)" if improved else "",
                 opt.param_groups[0]["lr"], time.perf_counter() - t_ep)
        if improved:
            state.update(best_score=float(val["score"]), best_epoch=epoch, bad_epochs=0, best_val=val)
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in eval_net.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        if improved or cfg.keep == "last":
            weights, kept_val = _kept(cfg, state, best_state, eval_net)
            record = training_record(cfg, ds, refs, val_refs, state, crop, device, steps_per_epoch, len(train_s),
                                     len(val_s))
            save_folder(out, weights, arch, cfg, ds, record, thresholds_from_validation(cfg, kept_val))
        _save_checkpoint(ckpt_path, net, opt, sched, best_state, state, ema)
        if timed_out:
            stop_reason = "time limit"
            log.info("time limit of %.1f min reached; checkpoint and model folder saved", cfg.time_limit_min)
            break
    bar.close()
    state["stop_reason"] = stop_reason
    weights, kept_val = _kept(cfg, state, best_state, eval_net)
    record = training_record(cfg, ds, refs, val_refs, state, crop, device, steps_per_epoch, len(train_s), len(val_s))
    save_folder(out, weights, arch, cfg, ds, record, thresholds_from_validation(cfg, kept_val))
    log.info("stopped (%s) after %d epochs / %d steps; best validation %.4f at epoch %d; model folder %s holds "
             "epoch %d (%s)", stop_reason, state["epoch"], state["step"], state["best_score"], state["best_epoch"],
             out, state["kept_epoch"], cfg.keep)
    return out


def _kept(cfg: TrainConfig, state: dict[str, Any], best_state: dict[str, torch.Tensor],
          eval_net: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights the model folder holds (``cfg.keep``) and their validation; notes their epoch in ``state``."""
    if cfg.keep == "last" and state["history"]:
        state["kept_epoch"] = state["epoch"]
        return {k: v.detach().cpu().clone() for k, v in eval_net.state_dict().items()}, state["history"][-1]
    state["kept_epoch"] = state["best_epoch"]
    return best_state, state["best_val"]


def _save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                     best_state: dict[str, torch.Tensor], state: dict[str, Any],
                     ema: torch.nn.Module | None = None) -> None:
    """Everything needed to resume, as tensors, numbers and strings (loadable with ``weights_only=True``)."""
    ck = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
          "best_state": best_state, "torch_rng": torch.get_rng_state(), "epoch": state["epoch"],
          "state_json": json.dumps(state)}
    if ema is not None:
        ck["ema"] = ema.state_dict()
    tmp = path.with_suffix(".pt.part")
    torch.save(ck, tmp)
    tmp.replace(path)
