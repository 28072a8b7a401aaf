"""Distillation targets: trained model folders (teachers) give the outputs a network in training should match.

Used to train MDA231 as one network with two outputs from the shipped pair (issue #14 item 4): the foreground
folder's probability becomes the target of channel 0, the centre folder's heatmap that of channel 1. The teachers
see the same augmented crop as the network in training, so their targets are dense and consistent (every pixel,
every augmentation), not the sparse labels of a few annotated frames.

A teacher must take the input the run trains on (pseudocoloring, input smoothing, background removal), so it is
checked against the run's settings when loaded; a mismatch is one clear error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from efficientcellseg.denoise import DenoiseSettings, without_ceiling
from efficientcellseg.errors import ModelError
from efficientcellseg.losses import heatmap_bce

log = logging.getLogger(__name__)

_CHANNELS = {"seg": ("seg",), "centers": ("centers",), "seg_centers": ("seg", "centers")}
"""What each output channel of a task is: a foreground probability (``seg``) or a centre heatmap (``centers``)."""


def _folder_channels(config: dict[str, Any]) -> tuple[str, ...]:
    return _CHANNELS.get(str(config.get("task", "seg")), ("seg",))


def _input_settings(config: dict[str, Any]) -> tuple[bool, DenoiseSettings | None]:
    """The input-side settings a folder's network was trained with: (pseudocolor, input smoothing)."""
    return bool(config.get("pseudocolor", True)), DenoiseSettings.from_config(config)


def _without_ceiling(settings: tuple[bool, DenoiseSettings | None]) -> tuple[bool, DenoiseSettings | None]:
    """Input settings with any ceiling removed (a ceiling added to a folder after training, e.g. MDA231-seg's)."""
    return settings[0], without_ceiling(settings[1])


@dataclass
class Teachers:
    """Frozen networks whose sigmoid outputs, concatenated in folder order, are the targets (every output of
    every teacher: :func:`load_teachers` checks that they cover the task's channels exactly once)."""

    nets: list[torch.nn.Module]
    """One network per teacher folder, in eval mode, gradients off."""
    folders: list[dict[str, str]]
    """Folder path and weights sha256 of each teacher (for the training record)."""

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) teacher probabilities for the network input ``x`` (B, 3, H, W)."""
        return torch.cat([torch.sigmoid(net(x).float()) for net in self.nets], dim=1)

    def to(self, device: torch.device) -> Teachers:
        self.nets = [n.to(device).to(memory_format=torch.channels_last) for n in self.nets]
        return self


def load_teachers(folders: Sequence[Path], task: str, dataset: str, pseudocolor: bool,
                  denoise: DenoiseSettings | None) -> Teachers:
    """Load teacher folders whose outputs, in the given order, cover the task's channels exactly once.

    For ``seg_centers`` that is a foreground folder then a centre folder (e.g. the shipped ``MDA231-seg`` and
    ``MDA231-centers``), or one ``seg_centers`` folder. Raises :class:`ModelError` (one line naming the folder)
    when a folder is for another dataset, gives other outputs, or was trained on another input.
    """
    from efficientcellseg.weights import load_model_folder

    want = _CHANNELS[task]
    run_input = (bool(pseudocolor), denoise)
    nets, record, have = [], [], []
    for folder in folders:
        lm = load_model_folder(folder)
        cfg = lm.config
        if cfg.get("dataset") != dataset:
            raise ModelError(f"{folder}: a {cfg.get('dataset')} model cannot teach a {dataset} network; "
                             f"pass teacher folders of the same dataset")
        got = _input_settings(cfg)
        if got != run_input and _without_ceiling(got) == _without_ceiling(run_input):
            log.warning("%s: its folder clips the input at %s (an inference setting; the weights are taught on "
                        "this run's input, which differs only there)", folder,
                        got[1].ceiling_percentile if got[1] else 0.0)
        elif got != run_input:
            raise ModelError(f"{folder}: trained on input (pseudocolor, smoothing) {got}, this run trains on "
                             f"{run_input}; a teacher must see the input the network is trained on (match --grey "
                             "and --denoise-* to the folder's config.json)")
        nets.append(lm.net.eval().requires_grad_(False))
        record.append({"folder": str(folder), "sha256": lm.sha256})
        have.extend(_folder_channels(cfg))
    if tuple(have) != want:
        raise ModelError(f"teachers {[str(f) for f in folders]} give outputs {have}; task {task} needs {list(want)} "
                         "in that order (e.g. a seg folder, then a centers folder)")
    log.info("distilling from %s", ", ".join(f"{r['folder']} ({r['sha256'][:12]})" for r in record))
    return Teachers(nets, record)


def distill_loss(logits: torch.Tensor, target: torch.Tensor, task: str, center_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy against the teachers' probabilities over every pixel of the crop (minimal where the
    network gives the teacher's output): averaged over pixels for a foreground channel, divided by the target
    mass for a heatmap channel (weighted by ``center_weight``)."""
    loss = logits.new_zeros(())
    for c, kind in enumerate(_CHANNELS[task]):
        if kind == "seg":
            loss = loss + F.binary_cross_entropy_with_logits(logits[:, c:c + 1], target[:, c:c + 1])
        else:
            loss = loss + center_weight * heatmap_bce(logits[:, c:c + 1], target[:, c:c + 1])
    return loss
