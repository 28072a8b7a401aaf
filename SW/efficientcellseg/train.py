"""Training of segmentation and cell-centre models on CTC-layout data (real or from ``efficientcellseg.synth``).

Pipeline: every usable frame is read once, pseudocolored (or grey-stacked) and scaled to network pixels
exactly as inference does (:mod:`efficientcellseg.preprocess`); the slices are kept in RAM as float16 and the
network is trained on random augmented crops of them.

Training samples, per frame:

- Full 3D reference (``man_segTTT.tif`` in ``_GT/SEG``): every slice, all pixels known.
- Silver truth (``_ST/SEG``, with ``use_st``): every slice, all pixels known. Where a gold 2D slice file
  exists for the same slice, the gold objects replace the ST ones they overlap (gold boundaries win) and
  ST objects the gold file did not annotate stay foreground.
- Gold 2D slice files alone (``man_seg_TTT_ZZZ.tif``, no ST): slice GT is sparse, so unlabelled pixels far
  from annotated objects are *unknown*: the loss is computed only on the annotated objects and a background
  ring of ``ring_px`` network pixels around them; everything else is masked out.

Task ``seg_centers`` trains one network with both outputs (channel 0 foreground, channel 1 centre heatmap; loss
= segmentation loss + ``center_weight`` x focal loss), so MDA231 needs one forward pass per slice instead of two.

Cell-centre targets (MDA231's second model) are Gaussian heatmaps around each object's 3D centroid, computed
from full 3D labels (GT or ST) with the anisotropic voxel size: sigma ``center_sigma`` network pixels in xy and
the matching number of slices in z (at least one slice).

Validation is split by frame (never by slice), chosen from the seed. Losses: Dice + BCE for segmentation
(``bce_weight=0`` gives the paper's pure Dice), a soft-target focal loss for centres (see
:mod:`efficientcellseg.losses`). Adam, ReduceLROnPlateau on the validation score, early stopping, a
``checkpoint.pt`` after every epoch (resumable, loaded with ``weights_only=True``) and a complete model
folder written whenever validation improves, so the best weights are the ones saved.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from efficientcellseg import __version__
from efficientcellseg.augment import AugmentConfig, augment_sample, random_crop
from efficientcellseg.ctc_io import MAN_SEG_RE, list_frames, list_gt_seg, read_frame, read_tiff
from efficientcellseg.datasets import DatasetConfig, get_dataset
from efficientcellseg.denoise import DenoiseSettings, denoise_frame
from efficientcellseg.errors import CTCInputError, ModelError
from efficientcellseg.log import progress
from efficientcellseg.losses import seg_loss, soft_focal_loss
from efficientcellseg.preprocess import network_shape, resize_to_network

_T = TypeVar("_T")
log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
TASKS = ("seg", "centers", "seg_centers")
"""``seg_centers``: one network with two output channels, foreground (0) and centre heatmap (1)."""
NEEDS_3D = ("centers", "seg_centers")
THRESHOLD_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))  # 0.30 .. 0.70
CENTER_THRESHOLD_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(13))  # 0.10 .. 0.70


@dataclass
class TrainConfig:
    """Everything a training run depends on (the CLI's ``train`` flags map one to one)."""

    dataset: str
    data: Path
    out: Path
    seqs: tuple[str, ...] = ("01", "02")
    task: str = "seg"
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 8
    crop: int | None = None
    lr: float = 1e-3
    use_st: bool = False
    pseudocolor: bool = True
    decoder_channels: tuple[int, ...] | None = None
    device: str = "auto"
    encoder_weights: str = "none"
    seed: int = 0
    resume: bool = False
    time_limit_min: float | None = None
    val_fraction: float = 0.15
    patience: int = 10
    threads: int | None = None
    init_from: Path | None = None
    """Start from all weights of this model folder (fine-tuning; same architecture), not from scratch."""
    denoise_target: float | None = None
    """Noise-adaptive input smoothing (denoise.py) with this target noise ratio, in training and (through the
    model's config.json) in inference; None: the paper's input."""
    background_radius: float = 0.0
    """With ``denoise_target``: first remove the background under objects narrower than a disk of this radius
    (pixels; a top-hat, denoise.py)."""
    denoise_min_ratio: float = 0.0
    """With ``denoise_target``: frames whose noise ratio is at or below this stay unsmoothed (the shipped
    MDA231 and TRIC folders' ``min_ratio``, so a fine-tuning sees the input inference gives it); 0: none."""
    ema_decay: float = 0.0
    """Exponential moving average of weights and BN statistics per step (e.g. 0.999); validation and the
    saved model use the average, which smooths the epoch-to-epoch noise of small batches. 0 = off."""
    # Not on the command line:
    bce_weight: float = 1.0
    """Weight of BCE added to the Dice loss (0 = the paper's pure Dice)."""
    center_weight: float = 1.0
    """Weight of the centre loss against the segmentation loss for ``seg_centers``."""
    center_sigma: float = 3.0
    """Gaussian sigma of the centre heatmap in network pixels (xy)."""
    ring_px: int = 12
    """Known-background ring around annotated objects for sparse slice GT without ST (network pixels)."""
    max_val_frames: int = 3
    max_val_samples: int = 64
    """Cap on validation slices for segmentation (evenly spaced); centre validation keeps whole frames."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lr_patience: int = 3
    """ReduceLROnPlateau patience in epochs (factor 0.5)."""
    frames: tuple[int, ...] | None = None
    """Use only these time points (None: all frames that have labels)."""
    data_note: str | None = None
    """Free text for the model card / training record, e.g. how synthetic data were generated."""


@dataclass
class Sample:
    """One network-scale training slice."""

    image: torch.Tensor
    """(3, H, W) float16 in [0, 1]."""
    target: torch.Tensor
    """(C, H, W) float16: foreground (seg), centre heatmap (centers) or both (seg_centers, C = 2)."""
    mask: torch.Tensor | None
    """(1, H, W) uint8 loss mask (1 = known) or None when every pixel is known."""
    fg: np.ndarray
    """(K, 2) foreground pixel positions (for foreground-centred crops)."""
    key: tuple[str, int, int]
    """(sequence, time point, z)."""
    source: str
    centers: np.ndarray | None = None
    """(K, 3) object centres (z, y, x) in network pixels for centre validation (same array for a frame)."""


@dataclass
class _FrameRef:
    seq: str
    t: int
    raw: Path
    gt_full: Path | None
    gt_slices: dict[int, Path]
    st: Path | None


# ----------------------------------------------------------------------------------------------------- data


def _st_index(st_dir: Path) -> dict[int, Path]:
    if not st_dir.is_dir():
        return {}
    out = {}
    for p in st_dir.iterdir():
        if m := MAN_SEG_RE.match(p.name):
            out[int(m.group(1))] = p
    return out


def discover(cfg: TrainConfig) -> list[_FrameRef]:
    """Frames of the requested sequences that have usable labels for ``cfg.task``."""
    data = Path(cfg.data)
    if not data.is_dir():
        raise CTCInputError(f"{data}: training data folder does not exist")
    refs: list[_FrameRef] = []
    seqs = [s for s in cfg.seqs if (data / s).is_dir()]
    if not seqs:
        raise CTCInputError(f"{data}: none of the sequences {list(cfg.seqs)} exists; give the dataset folder")
    for seq in seqs:
        frames = {f.index: f.path for f in list_frames(data / seq)}
        gt_dir = data / f"{seq}_GT" / "SEG"
        gts = list_gt_seg(gt_dir) if gt_dir.is_dir() else []
        st = _st_index(data / f"{seq}_ST" / "SEG") if cfg.use_st else {}
        for t in sorted(frames):
            if cfg.frames is not None and t not in cfg.frames:
                continue
            full = next((g.path for g in gts if g.t == t and g.z is None), None)
            slices = {g.z: g.path for g in gts if g.t == t and g.z is not None}
            ref = _FrameRef(seq, t, frames[t], full, slices, st.get(t))
            if cfg.task in NEEDS_3D and ref.gt_full is None and ref.st is None:
                continue
            if ref.gt_full is None and not ref.gt_slices and ref.st is None:
                continue
            refs.append(ref)
    if not refs:
        hint = " (centre targets need 3D labels: add --use-st)" if cfg.task in NEEDS_3D and not cfg.use_st else ""
        raise CTCInputError(f"{data}: no frame of {seqs} has labels usable for task {cfg.task!r}{hint}")
    return refs


def _fg_coords(target: np.ndarray, known: np.ndarray | None, limit: int = 512) -> np.ndarray:
    sel = target >= 0.5
    if known is not None:
        sel &= known
    yx = np.argwhere(sel)
    if len(yx) > limit:
        yx = yx[np.linspace(0, len(yx) - 1, limit).astype(np.int64)]
    return yx.astype(np.int32)


def _resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, Y, X) float maps to network ``shape`` (same interpolation as the images)."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    if tuple(t.shape[-2:]) != tuple(shape):
        t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


def _check_shape(path: Path, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise CTCInputError(f"{path}: label shape {tuple(got)} does not match the raw frame's {tuple(want)}")


def _combine_gold_st(gold: np.ndarray, st: np.ndarray) -> np.ndarray:
    """Foreground of a gold slice, completed with the ST objects the gold slice did not annotate."""
    gold_fg = gold > 0
    covered = np.unique(st[gold_fg])
    st_rest = (st > 0) & ~np.isin(st, covered[covered > 0])
    return (gold_fg | st_rest).astype(np.float32)


def _object_centres(labels: np.ndarray) -> np.ndarray:
    """(K, 3) centroids (z, y, x) of the labelled objects of a 3D label volume, vectorised with bincount."""
    lab = labels.ravel().astype(np.int64)
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return np.zeros((0, 3), np.float64)
    counts = np.bincount(lab, minlength=n + 1)
    zz, yy, xx = np.unravel_index(np.arange(lab.size), labels.shape)
    cz = np.bincount(lab, weights=zz, minlength=n + 1)
    cy = np.bincount(lab, weights=yy, minlength=n + 1)
    cx = np.bincount(lab, weights=xx, minlength=n + 1)
    ok = counts > 0
    ok[0] = False
    return np.stack([cz[ok], cy[ok], cx[ok]], 1) / counts[ok][:, None]


def centre_heatmaps(
    centres: np.ndarray, n_z: int, shape: tuple[int, int], sigma_xy: float, sigma_z: float
) -> np.ndarray:
    """(n_z, H, W) heatmaps: max over objects of an anisotropic Gaussian (peak 1) at each centre (z, y, x)."""
    heat = np.zeros((n_z, *shape), np.float32)
    r = int(math.ceil(3 * sigma_xy))
    rz = int(math.ceil(3 * sigma_z))
    for cz, cy, cx in centres:
        z0, z1 = max(0, int(cz) - rz), min(n_z, int(cz) + rz + 2)
        y0, y1 = max(0, int(cy) - r), min(shape[0], int(cy) + r + 2)
        x0, x1 = max(0, int(cx) - r), min(shape[1], int(cx) + r + 2)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        gz = np.exp(-((np.arange(z0, z1) - cz) ** 2) / (2 * sigma_z**2))[:, None, None]
        gy = np.exp(-((np.arange(y0, y1) - cy) ** 2) / (2 * sigma_xy**2))[None, :, None]
        gx = np.exp(-((np.arange(x0, x1) - cx) ** 2) / (2 * sigma_xy**2))[None, None, :]
        np.maximum(heat[z0:z1, y0:y1, x0:x1], (gz * gy * gx).astype(np.float32), out=heat[z0:z1, y0:y1, x0:x1])
    return heat


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


def _make_ema(net: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """Weight + BN-statistics average updated after every step, or None when ``decay`` is 0."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or 0 (off), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _pseudocolor(raw: np.ndarray, pseudocolor: bool) -> np.ndarray:
    from efficientcellseg.pseudocolor import grey_stack, pseudocolor_stack

    return pseudocolor_stack(raw) if pseudocolor else grey_stack(raw)


def _denoise_settings(cfg: TrainConfig) -> DenoiseSettings | None:
    if cfg.denoise_target is None:
        if cfg.background_radius > 0:
            raise ValueError("--background-radius needs --denoise-target (the background is removed before the "
                             "noise-adaptive smoothing)")
        if cfg.denoise_min_ratio > 0:
            raise ValueError("--denoise-min-ratio needs --denoise-target")
        return None
    return DenoiseSettings(cfg.denoise_target, background_radius=cfg.background_radius,
                           min_ratio=cfg.denoise_min_ratio)


def _network_images(raw: np.ndarray, ds: DatasetConfig, pseudocolor: bool,
                    denoise: DenoiseSettings | None = None) -> torch.Tensor:
    """(Z, 3, H, W) float16 network-scale input slices of a raw (Z, Y, X) frame (smoothed first with ``denoise``,
    exactly as inference does)."""
    raw = denoise_frame(raw, denoise)
    pc = torch.from_numpy(np.ascontiguousarray(_pseudocolor(raw, pseudocolor), dtype=np.float32))
    return resize_to_network(pc, ds).clamp_(0, 1).to(torch.float16)


def frame_samples(ref: _FrameRef, cfg: TrainConfig, ds: DatasetConfig) -> list[Sample]:
    """All training slices of one frame (see the module docstring for how labels are combined)."""
    raw = read_frame(ref.raw, ds.max_z)
    n_z = raw.shape[0]
    shape = network_shape(ds, raw.shape[1:])
    imgs = _network_images(raw, ds, cfg.pseudocolor, _denoise_settings(cfg))
    labels3d = None
    if ref.gt_full is not None:
        labels3d = read_tiff(ref.gt_full)
        _check_shape(ref.gt_full, labels3d.shape, raw.shape)
        source = "gt3d"
    elif ref.st is not None:
        labels3d = read_tiff(ref.st)
        _check_shape(ref.st, labels3d.shape, raw.shape)
        source = "st"
    samples: list[Sample] = []
    key = (ref.seq, ref.t)
    heat = cen_net = None
    if cfg.task in NEEDS_3D:
        assert labels3d is not None  # discover() guarantees 3D labels for centres
        cen = _object_centres(labels3d)
        sy, sx = shape[0] / raw.shape[1], shape[1] / raw.shape[2]
        cen_net = np.stack([cen[:, 0], (cen[:, 1] + 0.5) * sy - 0.5, (cen[:, 2] + 0.5) * sx - 0.5], 1)
        vz, vy, _ = ds.voxel_size_zyx
        sigma_z = max(1.0, cfg.center_sigma / sy * vy / vz)
        heat = centre_heatmaps(cen_net, n_z, shape, cfg.center_sigma, sigma_z)
    if cfg.task == "centers":
        for z in range(n_z):
            samples.append(Sample(imgs[z], torch.from_numpy(heat[z][None]).half(), None,
                                  _fg_coords(heat[z], None), (*key, z), source, cen_net))
        return samples
    if labels3d is not None:
        fg = (labels3d > 0).astype(np.float32)
        if source == "st":
            for z, p in ref.gt_slices.items():
                gold = read_tiff(p)
                _check_shape(p, gold.shape, raw.shape[1:])
                fg[z] = _combine_gold_st(gold, labels3d[z])
            source = "st+gold" if ref.gt_slices else "st"
        fg_net = _resize_maps(fg, shape)
        for z in range(n_z):
            target = fg_net[z][None] if heat is None else np.stack([fg_net[z], heat[z]])
            samples.append(Sample(imgs[z], torch.from_numpy(target).half(), None,
                                  _fg_coords(fg_net[z], None), (*key, z), source, cen_net))
        return samples
    for z, p in sorted(ref.gt_slices.items()):
        if not 0 <= z < n_z:
            raise CTCInputError(f"{p}: slice {z} is outside the frame's {n_z} slices")
        gold = read_tiff(p)
        _check_shape(p, gold.shape, raw.shape[1:])
        fg_net = _resize_maps((gold > 0)[None], shape)[0]
        obj = fg_net >= 0.5
        known = ndi.distance_transform_edt(~obj) <= cfg.ring_px if obj.any() else np.zeros_like(obj)
        mask = torch.from_numpy(known[None].astype(np.uint8))
        samples.append(Sample(imgs[z], torch.from_numpy(fg_net[None]).half(), mask,
                              _fg_coords(fg_net, known), (*key, z), "gold-sparse"))
    return samples


def split_frames(refs: list[_FrameRef], cfg: TrainConfig) -> tuple[list[_FrameRef], list[_FrameRef]]:
    """Validation frames chosen from the seed (at least one, at most ``max_val_frames``), the rest trains."""
    n = len(refs)
    if n < 2:
        raise CTCInputError(f"{cfg.data}: only {n} labelled frame(s); need at least 2 (one for validation)")
    n_val = min(n - 1, cfg.max_val_frames, max(1, round(cfg.val_fraction * n)))
    order = np.random.default_rng([cfg.seed, 7]).permutation(n)
    val_idx = set(order[:n_val].tolist())
    return [r for i, r in enumerate(refs) if i not in val_idx], [r for i, r in enumerate(refs) if i in val_idx]


# ------------------------------------------------------------------------------------------------ evaluation


def _pad16(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w


@torch.no_grad()
def predict_samples(net: torch.nn.Module, samples: list[Sample], device: torch.device,
                    batch_size: int = 4) -> list[np.ndarray]:
    """Sigmoid outputs (H, W) float32 for whole network-scale slices (padded to multiples of 16); for a network
    with several outputs, (C, H, W)."""
    net.eval()
    out: list[np.ndarray] = []
    i = 0
    while i < len(samples):
        shape = samples[i].image.shape
        j = i
        while j < len(samples) and j - i < batch_size and samples[j].image.shape == shape:
            j += 1
        x = torch.stack([s.image.float() for s in samples[i:j]]).to(device)
        x, h, w = _pad16(x)
        p = torch.sigmoid(net(x.contiguous(memory_format=torch.channels_last)).float())[:, :, :h, :w]
        out.extend(p[:, 0].cpu().numpy() if p.shape[1] == 1 else p.cpu().numpy())
        i = j
    return out


def iou_counts(probs: list[np.ndarray], samples: list[Sample],
               thresholds: tuple[float, ...] = THRESHOLD_GRID) -> np.ndarray:
    """(T, 4) pooled pixel counts (tp, fp, fn, tn) per threshold over the known pixels of all samples."""
    counts = np.zeros((len(thresholds), 4), np.int64)
    thr = np.asarray(thresholds, np.float32)[:, None]
    for p, s in zip(probs, samples):
        y = s.target[0].float().numpy() >= 0.5  # channel 0 is the foreground for seg and seg_centers
        known = np.ones_like(y) if s.mask is None else s.mask[0].numpy().astype(bool)
        pv, yv = p[known][None], y[known][None]
        pred = pv >= thr
        counts[:, 0] += (pred & yv).sum(1)
        counts[:, 1] += (pred & ~yv).sum(1)
        counts[:, 2] += (~pred & yv).sum(1)
        counts[:, 3] += (~pred & ~yv).sum(1)
    return counts


def iou_from_counts(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground IoU and two-class MeanIoU (background and cell, as the paper defines it) per row."""
    tp, fp, fn, tn = (c[:, i].astype(np.float64) for i in range(4))
    fg = tp / np.maximum(tp + fp + fn, 1)
    bg = tn / np.maximum(tn + fn + fp, 1)
    return fg, (fg + bg) / 2


def centre_detection_f1(probs: list[np.ndarray], samples: list[Sample], min_dist: int = 5,
                        match_px: float = 6.0, thresholds: tuple[float, ...] = CENTER_THRESHOLD_GRID
                        ) -> np.ndarray:
    """F1 of 3D heatmap peaks (local maxima, ``min_dist`` px apart in xy) against true centres, per threshold."""
    frames: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(samples):
        frames.setdefault(s.key[:2], []).append(i)
    tp = np.zeros(len(thresholds))
    n_pred = np.zeros(len(thresholds))
    n_true = 0
    for idx in frames.values():
        idx = sorted(idx, key=lambda i: samples[i].key[2])
        heat = np.stack([probs[i] for i in idx])
        cen = samples[idx[0]].centers
        n_true += len(cen)
        peak = heat == ndi.maximum_filter(heat, size=(3, 2 * min_dist + 1, 2 * min_dist + 1), mode="nearest")
        for k, t in enumerate(thresholds):
            pz, py, px = np.nonzero(peak & (heat > t))
            n_pred[k] += len(pz)
            if len(pz) == 0 or len(cen) == 0:
                continue
            d = np.hypot(py[:, None] - cen[None, :, 1], px[:, None] - cen[None, :, 2])
            d[np.abs(pz[:, None] - cen[None, :, 0]) > 2] = np.inf
            used = np.zeros(len(cen), bool)
            for pi in np.argsort(d.min(1)):
                j = int(np.argmin(np.where(used, np.inf, d[pi])))
                if d[pi, j] <= match_px and not used[j]:
                    used[j] = True
                    tp[k] += 1
    return 2 * tp / np.maximum(n_pred + n_true, 1)


def validate(net: torch.nn.Module, samples: list[Sample], task: str, device: torch.device) -> dict[str, Any]:
    """Validation score (``score``: foreground IoU at 0.5, or soft heatmap IoU for centres) and thresholds."""
    probs = predict_samples(net, samples, device)
    if task == "seg_centers":  # both scores; the mean of foreground IoU and centre F1 selects the best epoch
        seg = _validate_seg([p[0] for p in probs], samples)
        cen = _validate_centers([p[1] for p in probs], samples, channel=1)
        return {**seg, "heatmap_iou": cen["score"], "center_threshold": cen["center_threshold"],
                "center_f1": cen["center_f1"], "fg_iou": seg["score"],
                "score": (seg["score"] + cen["center_f1"]) / 2}
    if task == "centers":
        return _validate_centers(probs, samples)
    return _validate_seg(probs, samples)


def _validate_seg(probs: list[np.ndarray], samples: list[Sample]) -> dict[str, Any]:
    fg, miou = iou_from_counts(iou_counts(probs, samples))
    k = int(np.argmax(fg))
    i05 = THRESHOLD_GRID.index(0.5)
    return {"score": float(fg[i05]), "mean_iou": float(miou[i05]), "prob_threshold": THRESHOLD_GRID[k],
            "iou_at_threshold": float(fg[k])}


def _validate_centers(probs: list[np.ndarray], samples: list[Sample], channel: int = 0) -> dict[str, Any]:
    heats = [s.target[channel].float().numpy() for s in samples]
    inter = sum(float(np.minimum(p, h).sum()) for p, h in zip(probs, heats))
    union = sum(float(np.maximum(p, h).sum()) for p, h in zip(probs, heats))
    f1 = centre_detection_f1(probs, samples)
    k = int(np.argmax(f1))
    return {"score": inter / max(union, 1e-9), "center_threshold": CENTER_THRESHOLD_GRID[k],
            "center_f1": float(f1[k])}


# -------------------------------------------------------------------------------------------------- training


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
    if cfg.task == "centers":
        return soft_focal_loss(logits, y, m)
    if cfg.task == "seg_centers":
        return (seg_loss(logits[:, :1], y[:, :1], m, cfg.bce_weight)
                + cfg.center_weight * soft_focal_loss(logits[:, 1:], y[:, 1:], m))
    return seg_loss(logits, y, m, cfg.bce_weight)


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
        f"- Sequences {', '.join(record['seqs'])}; validation frames {record['val_frames']} (split by frame).",
        f"- Input: {'Context Aware Pseudocoloring' if cfg.pseudocolor else 'grey stack'}, network scale as in "
        f"inference (input size {ds.input_size}), random crops of {record['crop']} px, batch {cfg.batch_size}.",
        *([f"- Noise-adaptive input smoothing (denoise.py): target noise ratio {cfg.denoise_target}"
           + (f", frames at or below {cfg.denoise_min_ratio} left unsmoothed" if cfg.denoise_min_ratio > 0 else "")
           + ", in training and inference."] if cfg.denoise_target is not None else []),
        *([f"- Background removal before it (denoise.py): every slice minus its grey opening with a disk of "
           f"{cfg.background_radius} px (a top-hat), clipped at 0, in training and inference."]
          if cfg.background_radius > 0 else []),
        *randomized,
        aug_line,
        *([f"- Outputs: channel 0 foreground probability, channel 1 cell-centre heatmap (one network; "
           f"centre loss weight {cfg.center_weight})."] if cfg.task == "seg_centers" else []),
        f"- Encoder initialisation: {cfg.encoder_weights} (no ImageNet weights are available offline here).",
        *_init_lines(record.get("init_from")),
        *([f"- Weights: exponential moving average (decay {cfg.ema_decay}) of the training weights."]
          if cfg.ema_decay else []),
        f"- {record['epochs']} epochs, {record['steps']} optimizer steps, {record['wall_time_s'] / 60:.1f} min "
        f"wall time on {record['device']} with {record['torch_threads']} torch thread(s).",
        f"- Best validation (epoch {record['best_epoch']}): " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float)
                                                                        else f"{k} {v}" for k, v in val.items()),
        f"- Thresholds chosen on the validation frames: {json.dumps(thresholds)}.",
        "",
        "Validation scores are pixel-level scores at network scale on held-out frames of the training data, "
        "not CTC SEG scores" + (" and not results on real CTC data." if synthetic else "."),
        "",
    ]
    return "\n".join(lines)


def _save_folder(out: Path, net_state: dict[str, torch.Tensor], arch: dict[str, Any], cfg: TrainConfig,
                 ds: DatasetConfig, record: dict[str, Any], thresholds: dict[str, Any]) -> None:
    from efficientcellseg.model import EfficientCellSeg
    from efficientcellseg.weights import save_model_folder

    net = EfficientCellSeg(**arch)
    net.load_state_dict(net_state)
    config = {"name": out.name, "dataset": ds.key, "task": cfg.task, "input_size": ds.input_size,
              "pseudocolor": cfg.pseudocolor, "trained": True, "training": record}
    settings = _denoise_settings(cfg)
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


def train(cfg: TrainConfig) -> Path:
    """Train a model as configured and write its model folder to ``cfg.out``; returns the folder."""
    t_start = time.perf_counter()
    ds = get_dataset(cfg.dataset)
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    crop = cfg.crop or ds.input_size
    if crop % 16 or crop < 32:
        raise ValueError(f"crop must be a multiple of 16 and >= 32 network pixels, got {crop}")
    _denoise_settings(cfg)  # a bad input setting fails here, before any data is read
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
    ema = _make_ema(net, cfg.ema_decay)
    eval_net = ema.module if ema is not None else net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=cfg.lr_patience)
    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(len(train_s) / cfg.batch_size))

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0,
                             "history": [], "elapsed_s": 0.0, "best_val": {}, "init_from": parent}
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
        log.info("no checkpoint in %s; starting from scratch", out)

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
        losses: list[float] = []
        timed_out = False
        batches = _prefetched(
            lambda step: _batch(train_s, order[step * cfg.batch_size:(step + 1) * cfg.batch_size], crop, rng, cfg),
            steps_per_epoch, ahead=2 if device.type == "cuda" else 0)
        for x, y, m in batches:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            logits = net(x)
            loss = _loss(logits, y.to(device), m.to(device), cfg)
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
        record = _record(cfg, ds, refs, val_refs, state, crop, device, steps_per_epoch, len(train_s), len(val_s))
        if improved:
            _save_folder(out, best_state, arch, cfg, ds, record, _thresholds(cfg, state["best_val"]))
        _save_checkpoint(ckpt_path, net, opt, sched, best_state, state, ema)
        if timed_out:
            stop_reason = "time limit"
            log.info("time limit of %.1f min reached; checkpoint and best model saved", cfg.time_limit_min)
            break
    bar.close()
    state["stop_reason"] = stop_reason
    record = _record(cfg, ds, refs, val_refs, state, crop, device, steps_per_epoch, len(train_s), len(val_s))
    _save_folder(out, best_state, arch, cfg, ds, record, _thresholds(cfg, state["best_val"]))
    log.info("stopped (%s) after %d epochs / %d steps; best validation %.4f at epoch %d; model folder %s",
             stop_reason, state["epoch"], state["step"], state["best_score"], state["best_epoch"], out)
    return out


def _thresholds(cfg: TrainConfig, best_val: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if cfg.task != "centers":
        out["prob_threshold"] = float(best_val.get("prob_threshold", 0.5))
    if cfg.task in NEEDS_3D:
        out["center_threshold"] = float(best_val.get("center_threshold", 0.3))
    return out


def _record(cfg: TrainConfig, ds: DatasetConfig, refs: list[_FrameRef], val_refs: list[_FrameRef],
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
        "best_validation": state["best_val"],
        "final_validation": state["history"][-1] if state["history"] else None,
        "stop_reason": state.get("stop_reason"),
        "init_from": state.get("init_from"),
        "history": state["history"],
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


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
