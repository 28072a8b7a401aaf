"""Data augmentation on precomputed network-scale slices (torch tensors), driven by a numpy Generator.

Every random draw comes from the ``numpy.random.Generator`` passed in, so a training run is reproducible
from its seed. Geometry (scale, crop, flips, 90-degree rotations) is applied identically to the image, the
target and the loss mask; intensity changes (gamma, contrast/brightness, Gaussian noise) to the image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (``enabled=False`` gives plain random crops, e.g. for tests)."""

    enabled: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)
    """Zoom factor range (log-uniform); >1 magnifies."""
    fg_prob: float = 0.5
    """Probability of centring a crop on a random foreground pixel instead of a uniform position."""
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.08
    noise_max: float = 0.03
    p_intensity: float = 0.8


def _region_origin(size: int, src: int, centre: int | None, rng: np.random.Generator) -> int:
    """Top-left coordinate of a window of ``src`` pixels inside an axis of ``size`` pixels."""
    hi = max(size - src, 0)
    if centre is None:
        return int(rng.integers(0, hi + 1))
    jitter = int(rng.integers(-(src // 4), src // 4 + 1))
    return int(np.clip(centre - src // 2 + jitter, 0, hi))


def random_crop(
    image: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    crop: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    fg_coords: np.ndarray | None = None,
    binary_target: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``crop x crop`` window of (C, H, W) image, (1, H, W) target and mask, with random zoom.

    Windows reaching outside the slice are zero-padded with mask 0 (ignored by the loss).
    ``fg_coords`` (K, 2) are foreground pixel positions used to centre some crops on cells.
    """
    scale = float(np.exp(rng.uniform(*np.log(cfg.scale_range)))) if cfg.enabled else 1.0
    src = max(8, int(round(crop / scale)))
    centre = None
    if fg_coords is not None and len(fg_coords) and rng.random() < cfg.fg_prob:
        centre = fg_coords[int(rng.integers(0, len(fg_coords)))]
    h, w = image.shape[-2:]
    y0 = _region_origin(h, src, None if centre is None else int(centre[0]), rng)
    x0 = _region_origin(w, src, None if centre is None else int(centre[1]), rng)
    stack = torch.cat([image.float(), target.float(), mask.float()], 0)[:, y0 : y0 + src, x0 : x0 + src]
    ph, pw = src - stack.shape[1], src - stack.shape[2]
    if ph or pw:
        stack = F.pad(stack, (0, pw, 0, ph))
    if src != crop:
        stack = F.interpolate(stack[None], size=(crop, crop), mode="bilinear", align_corners=False)[0]
    c = image.shape[0]
    img, tgt, msk = stack[:c], stack[c : c + 1], stack[c + 1 :]
    if binary_target:
        tgt = (tgt >= 0.5).float()
    return img, tgt, (msk >= 0.5).float()


def augment_sample(
    image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips, 90-degree rotation (square crops) and intensity changes of one cropped sample."""
    if not cfg.enabled:
        return image, target, mask
    stack = torch.cat([image, target, mask], 0)
    if rng.random() < 0.5:
        stack = stack.flip(-1)
    if rng.random() < 0.5:
        stack = stack.flip(-2)
    k = int(rng.integers(0, 4))
    if k and stack.shape[-1] == stack.shape[-2]:
        stack = torch.rot90(stack, k, dims=(-2, -1))
    c = image.shape[0]
    img, target, mask = stack[:c].contiguous(), stack[c : c + 1].contiguous(), stack[c + 1 :].contiguous()
    if rng.random() < cfg.p_intensity:
        gamma = float(np.exp(rng.uniform(*np.log(cfg.gamma_range))))
        img = img.clamp(0, 1).pow(gamma)
        a = float(rng.uniform(*cfg.contrast_range))
        b = float(rng.uniform(-cfg.brightness, cfg.brightness))
        img = img * a + b
        sigma = float(rng.uniform(0, cfg.noise_max))
        if sigma > 0:
            noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
            img = img + torch.from_numpy(noise)
        img = img.clamp(0, 1)
    return img, target, mask
