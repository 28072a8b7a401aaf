"""Validation during training: pixel IoU of the foreground and F1 of centre peaks on held-out slices."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from efficientcellseg.trainset import Sample

THRESHOLD_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))  # 0.30 .. 0.70
CENTER_THRESHOLD_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(13))  # 0.10 .. 0.70


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
            tp[k] += _greedy_matches(np.stack([pz, py, px], 1), cen, match_px)
    return 2 * tp / np.maximum(n_pred + n_true, 1)


def _greedy_matches(pred: np.ndarray, true: np.ndarray, match_px: float, max_dz: int = 2) -> int:
    """Matches of predicted and true centres (z, y, x): predictions in order of their nearest true centre take the
    nearest one still free within ``match_px`` in xy and ``max_dz`` slices. Only pairs within reach are formed (a
    k-d tree), so a flat heatmap with millions of peaks costs memory in proportion to those pairs, not to
    peaks x centres."""
    pairs = cKDTree(pred[:, 1:].astype(np.float64)).sparse_distance_matrix(
        cKDTree(true[:, 1:].astype(np.float64)), match_px, output_type="coo_matrix")
    rows, cols, dist = pairs.row, pairs.col, pairs.data
    keep = np.abs(pred[rows, 0] - true[cols, 0]) <= max_dz
    rows, cols, dist = rows[keep], cols[keep], dist[keep]
    if len(rows) == 0:
        return 0
    by_pair = np.lexsort((cols, dist, rows))  # per prediction, its candidates nearest first
    rows, cols, dist = rows[by_pair], cols[by_pair], dist[by_pair]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    used = np.zeros(len(true), bool)
    n = 0
    for i in np.argsort(dist[starts], kind="stable"):  # predictions by their nearest distance
        for j in cols[starts[i]:ends[i]]:
            if not used[j]:
                used[j] = True
                n += 1
                break
    return n


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
