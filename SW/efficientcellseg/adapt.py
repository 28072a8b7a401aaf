"""Test-time adaptation of a network's batch-normalisation statistics to the sequence being segmented.

A model folder whose ``config.json`` has ``"norm_adaptation": {"weight": w}`` is adapted before each sequence:
every BatchNorm layer's running mean and variance are re-estimated on network inputs of that sequence's own
frames (the deterministic choice of frames and inputs that also calibrates int8) and mixed with the trained
statistics, ``w * sequence + (1 - w) * trained`` (AdaBN, Li et al. 2016; the mixed form of Schneider et al.,
NeurIPS 2020). The learned weights stay as they are; only the normalisation follows the data, so a frame
whose noise or contrast lies outside the training range is not fed to layers that expect the training data's
statistics. Layers are adapted in one pass, in order: each layer is normalised with its mixed statistics
while the next layers' statistics are gathered.

The adapted network is a copy with its own identity (:attr:`LoadedModel.sha256` derived from the adapted
statistics) and marked transient: its ONNX graph is the folder's cached graph with the adapted statistics
written in (:func:`efficientcellseg.onnx_backend.export_onnx`; no second trace), made in a temporary folder and
deleted once ONNX Runtime has loaded it, so a model folder's cache does not grow by one export per sequence.
Why it is switched on for A549-SIM only, and what it measured: docs/generalization.md.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from efficientcellseg.config_sections import config_section
from efficientcellseg.weights import LoadedModel

log = logging.getLogger(__name__)

CONFIG_KEY = "norm_adaptation"
"""The ``config.json`` key that switches the adaptation on for a model folder."""


@dataclass(frozen=True)
class AdaptSettings:
    """How far the normalisation statistics move towards the sequence's: 1 replaces them, 0.5 averages."""

    weight: float
    batch_size: int = 2
    """Network inputs per statistics batch. Each layer is normalised with its batch's statistics while the next
    layers' are gathered, so this changes the result slightly; 2 was measured on A549-SIM (tuning set as good as
    6 or better, the pass 1.5x faster and 0.2 GB lighter; docs/generalization.md)."""

    def __post_init__(self) -> None:
        if not 0 < self.weight <= 1:
            raise ValueError(f"norm_adaptation weight must be in (0, 1], got {self.weight}")
        if self.batch_size < 2:
            raise ValueError(f"norm_adaptation batch_size must be >= 2, got {self.batch_size}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdaptSettings | None:
        """The settings stored in a model folder's config (key ``norm_adaptation``), or None when off."""
        d = config_section(config, CONFIG_KEY, cls)
        if d is None:
            return None
        return cls(weight=float(d["weight"]), batch_size=int(d.get("batch_size", cls.batch_size)))

    def to_config(self) -> dict[str, float | int]:
        """The JSON form stored under ``norm_adaptation`` in ``config.json``."""
        return {"weight": self.weight, "batch_size": self.batch_size}


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``net`` (timm's BatchNormAct2d included), in module order."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _mix(w: float, mean: torch.Tensor, var: torch.Tensor, mean0: torch.Tensor, var0: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the mixture ``w * (mean, var) + (1 - w) * (mean0, var0)``."""
    return w * mean + (1 - w) * mean0, w * var + (1 - w) * var0 + w * (1 - w) * (mean - mean0) ** 2


def adapt_batchnorm(net: nn.Module, inputs: Iterable[np.ndarray], settings: AdaptSettings) -> int:
    """Re-estimate ``net``'s BatchNorm statistics on ``inputs`` ((3, S, S) float32 each) in place.

    Returns the number of inputs used (0 leaves the network as it was). The statistics of all inputs are
    pooled (mean of the batches' first and second moments), then mixed with the trained ones at
    ``settings.weight``.
    """
    layers = batchnorm_layers(net)
    trained = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    sums = [[torch.zeros_like(m.running_mean, dtype=torch.float64),
             torch.zeros_like(m.running_var, dtype=torch.float64)] for m in layers]
    w = settings.weight

    def gather(i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].float()
            mean = x.mean(dim=(0, 2, 3))
            square = (x * x).mean(dim=(0, 2, 3))
            sums[i][0] += mean.double()
            sums[i][1] += square.double()
            mixed = _mix(w, mean, (square - mean * mean).clamp_min(0), *trained[i])
            module.running_mean.copy_(mixed[0])
            module.running_var.copy_(mixed[1])
        return hook

    xs = [np.asarray(x, np.float32) for x in inputs]
    if not xs:
        return 0
    size = settings.batch_size
    hooks = [m.register_forward_pre_hook(gather(i)) for i, m in enumerate(layers)]
    try:
        net.eval().to(memory_format=torch.channels_last)  # 1.6x faster on the CPU (measured, 2 threads)
        with torch.inference_mode():
            for s in range(0, len(xs), size):
                net(torch.from_numpy(np.stack(xs[s : s + size])).contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    batches = -(-len(xs) // size)  # the last one may be smaller
    for m, (mean0, var0), (s1, s2) in zip(layers, trained, sums, strict=True):
        mean = (s1 / batches).float()
        var = (s2 / batches).float() - mean * mean
        mixed = _mix(w, mean, var.clamp_min(0), mean0, var0)
        m.running_mean.copy_(mixed[0])
        m.running_var.copy_(mixed[1])
    return len(xs)


def statistics_digest(net: nn.Module) -> str:
    """sha256 of all BatchNorm statistics of ``net`` (identifies an adaptation)."""
    h = hashlib.sha256()
    for m in batchnorm_layers(net):
        h.update(m.running_mean.detach().cpu().numpy().tobytes())
        h.update(m.running_var.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def adapted_model(model: LoadedModel, inputs: Iterable[np.ndarray], settings: AdaptSettings) -> LoadedModel:
    """A copy of ``model`` whose network is adapted to ``inputs`` (:func:`adapt_batchnorm`); ``model`` itself
    is left unchanged. The copy's ``sha256`` combines the weights' with the adapted statistics, so caches keyed
    by it tell the two apart. No input: ``model`` itself is returned."""
    net = copy.deepcopy(model.net).float().cpu()
    n = adapt_batchnorm(net, inputs, settings)
    if n == 0:
        log.warning("%s: no network input to adapt the normalisation on (constant frames?); using the trained "
                    "statistics", model.folder)
        return model
    digest = hashlib.sha256(f"{model.sha256}|{statistics_digest(net)}".encode()).hexdigest()
    log.info("%s: normalisation adapted to the sequence (%d inputs, %d layers, weight %g)", model.folder.name, n,
             len(batchnorm_layers(net)), settings.weight)
    return replace(model, net=net, sha256=digest, transient=True, base_sha256=model.base_sha256 or model.sha256)
