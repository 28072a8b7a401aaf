"""Training losses. All take logits (B, 1, H, W), a target in [0, 1] and a loss mask (1 = known pixel).

- Segmentation: soft Dice (Milletari et al., as in the paper) over the whole batch, optionally plus BCE.
- Distillation (a teacher network's probabilities as targets): binary cross-entropy, whose minimum is at the
  teacher's value for any target; for a heatmap normalised by the target mass so its few peaks are not
  drowned by background pixels.
- Cell centres: a binary focal loss for *soft* targets (Lin et al.'s focal loss with the modulating factor
  ``|y - p|**gamma`` instead of ``(1 - p_t)**gamma``, so that Gaussian heatmap targets are allowed; this is
  the "quality focal loss" form). Chosen over CenterNet's penalty-reduced focal loss because random crops
  and 2D slices of 3D Gaussians rarely contain a pixel whose target is exactly 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_sum(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return (x * mask).sum() if mask is not None else x.sum()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) and target, pooled over the batch (stable on empty crops)."""
    p = torch.sigmoid(logits)
    inter = _masked_sum(p * target, mask)
    denom = _masked_sum(p, mask) + _masked_sum(target, mask)
    return 1.0 - (2.0 * inter + eps) / (denom + eps)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over known pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    n = mask.sum().clamp_min(1.0) if mask is not None else torch.tensor(float(bce.numel()))
    return _masked_sum(bce, mask) / n


def seg_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             bce_weight: float = 1.0) -> torch.Tensor:
    """Dice loss plus ``bce_weight`` x BCE (``bce_weight=0`` gives the paper's pure Dice loss)."""
    loss = dice_loss(logits, target, mask)
    if bce_weight:
        loss = loss + bce_weight * masked_bce(logits, target, mask)
    return loss


def soft_focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                    gamma: float = 2.0, pos_weight: float = 4.0) -> torch.Tensor:
    """Focal loss for soft targets: ``|y - p|**gamma * BCE(p, y)``; positive part weighted by ``pos_weight``.

    Normalised by the target mass (sum of y, at least 1) as CenterNet normalises by the number of peaks, so
    the loss scale does not depend on how much background a crop holds.
    """
    p = torch.sigmoid(logits)
    bce_pos = -target * F.logsigmoid(logits)
    bce_neg = -(1.0 - target) * F.logsigmoid(-logits)
    mod = (target - p).abs().pow(gamma)
    per_px = mod * (pos_weight * bce_pos + bce_neg)
    norm = _masked_sum(target, mask).clamp_min(1.0)
    return _masked_sum(per_px, mask) / norm


def heatmap_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over pixels and divided by the target mass (sum of y, at least 1): for soft
    heatmap targets such as a teacher's, where the focal loss's ``|y - p|**gamma`` makes the gradient vanish
    for low peaks; the minimum is at p = y."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return bce / target.sum().clamp_min(1.0)
