"""Data augmentation on precomputed network-scale slices (torch tensors), driven by a numpy Generator.

Every random draw comes from the ``numpy.random.Generator`` passed in, so a training run is reproducible
from its seed. Geometry (scale, crop, flips, 90-degree rotations) is applied identically to the image, the
target and the loss mask; intensity changes (gamma, contrast/brightness, Gaussian noise) to the image only.

:data:`STRONG` adds photometric changes meant to make a network rely on shape rather than on one texture or
noise level (used with domain-randomized training data): blur, multiplicative noise, multiplication by a
random smooth texture, per-channel gain and wider gamma/contrast/noise ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    blur_max: float = 0.0
    """Largest Gaussian blur sigma in network pixels (applied with probability ``p_extra``; 0 = off)."""
    speckle_max: float = 0.0
    """Largest sigma of multiplicative per-pixel noise (``img * (1 + n)``; 0 = off)."""
    texture_max: float = 0.0
    """Largest amplitude of multiplication by a random smooth field (``img * (1 + a * field)``; 0 = off)."""
    channel_gain: float = 0.0
    """Per-channel gain jitter (``img[c] * U(1 - g, 1 + g)``; 0 = off)."""
    p_extra: float = 0.5
    """Probability of each of the four changes above, drawn independently."""


STRONG = AugmentConfig(gamma_range=(0.5, 2.0), contrast_range=(0.6, 1.4), brightness=0.15, noise_max=0.08,
                       p_intensity=0.9, blur_max=1.5, speckle_max=0.2, texture_max=0.5, channel_gain=0.15)
"""Photometric augmentation for training towards invariance (``train --augment strong``)."""

AUGMENT_PRESETS = {"default": AugmentConfig(), "strong": STRONG, "off": AugmentConfig(enabled=False)}


def with_scale_range(cfg: AugmentConfig, scale_range: tuple[float, float] | list[float]) -> AugmentConfig:
    """``cfg`` with another zoom range; ValueError unless ``0.25 <= lo <= hi <= 4`` (finite numbers)."""
    lo, hi = (float(v) for v in scale_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.25 <= lo <= hi <= 4.0):
        raise ValueError(f"the zoom range must satisfy 0.25 <= LO <= HI <= 4, got {lo} {hi}")
    return replace(cfg, scale_range=(lo, hi))


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
    ``fg_coords`` (K, 2) are foreground pixel positions used to centre some crops on cells. ``target`` may
    have several channels (foreground + centre heatmap); ``binary_target`` thresholds only the first one.
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
    c, ct = image.shape[0], target.shape[0]
    img, tgt, msk = stack[:c], stack[c : c + ct], stack[c + ct :]
    if binary_target:  # the first target channel is a foreground mask; further ones (heatmaps) stay soft
        tgt = torch.cat([(tgt[:1] >= 0.5).float(), tgt[1:]], 0)
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
    c, ct = image.shape[0], target.shape[0]
    img, target, mask = stack[:c].contiguous(), stack[c : c + ct].contiguous(), stack[c + ct :].contiguous()
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
    img = _extra_photometric(img, rng, cfg)
    return img, target, mask


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (C, H, W) tensor with reflect padding."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(img.dtype)
    c = img.shape[0]
    out = F.pad(img[None], (r, r, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, r, r), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _extra_photometric(img: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Blur, multiplicative noise, random smooth texture and per-channel gain (see :data:`STRONG`)."""
    c, h, w = img.shape
    if cfg.blur_max > 0 and rng.random() < cfg.p_extra:
        img = _gaussian_blur(img, float(rng.uniform(0.3, cfg.blur_max)))
    if cfg.texture_max > 0 and rng.random() < cfg.p_extra:
        cells = int(rng.integers(3, 17))
        coarse = torch.from_numpy(rng.standard_normal((1, 1, cells, cells), dtype=np.float32))
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = img * (1 + float(rng.uniform(0, cfg.texture_max)) * field.clamp(-2, 2) / 2)
    if cfg.speckle_max > 0 and rng.random() < cfg.p_extra:
        n = torch.from_numpy(rng.standard_normal((1, h, w), dtype=np.float32))
        img = img * (1 + float(rng.uniform(0, cfg.speckle_max)) * n)
    if cfg.channel_gain > 0 and rng.random() < cfg.p_extra:
        g = rng.uniform(1 - cfg.channel_gain, 1 + cfg.channel_gain, (c, 1, 1)).astype(np.float32)
        img = img * torch.from_numpy(g)
    return img.clamp(0, 1)
