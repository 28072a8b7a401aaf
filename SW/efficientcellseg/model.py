"""The EfficientCellSeg network: a truncated EfficientNet-B5 encoder and a small U-Net decoder.

Encoder: timm's ``tf_efficientnet_b5`` layout (TensorFlow "same" padding, as in the paper's Keras model),
truncated after the first expansion of stage 6 (block 6a's ``expand_activation``: 1056 channels at stride 16).
Skip connections are taken where the paper's Keras model takes them:

=========================  ==========  ======  =====================================
Keras layer                 timm module  stride  channels
=========================  ==========  ======  =====================================
block1a_dwconv activation   blocks.0.0.bn1   2     48
block3a_expand_activation   blocks.2.0.bn1   4     240
block4a_expand_activation   blocks.3.0.bn1   8     384
block6a_expand_activation   blocks.5.0.bn1  16    1056 (bottleneck)
=========================  ==========  ======  =====================================

Decoder: segmentation-models-pytorch's ``UnetDecoder`` with filters (64, 48, 32, 16) and bilinear upsampling,
followed by a 3x3 convolution to one output channel (logits). Difference from the Keras original: smp's
decoder does not use the full-resolution input as a fourth skip connection (it drops the stride-1 feature),
so the last upsampling block has no skip. Parameter names follow timm's, so ImageNet weights for
``tf_efficientnet_b5`` load into the encoder unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

PAPER_DECODER_CHANNELS = (64, 48, 32, 16)
ENCODER_CHANNELS = (3, 48, 240, 384, 1056)
TIMM_NAME = "tf_efficientnet_b5"


class _ExpansionOnly(nn.Module):
    """Block 6a cut after its expansion: 1x1 conv + BN + SiLU (names as in timm's InvertedResidual)."""

    def __init__(self, conv_pw: nn.Module, bn1: nn.Module) -> None:
        super().__init__()
        self.conv_pw = conv_pw
        self.bn1 = bn1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv_pw(x))


def _first_block_split(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the first block of a stage and return (its first activation, its output).

    For a depthwise-separable block (stage 1) the first activation is the depthwise conv's; for an
    inverted-residual block it is the expansion's. Equivalent to ``block(x)`` for the output (tested).
    """
    if hasattr(block, "conv_pwl"):  # InvertedResidual
        act = block.bn1(block.conv_pw(x))
        y = block.bn3(block.conv_pwl(block.se(block.aa(block.bn2(block.conv_dw(act))))))
    else:  # DepthwiseSeparableConv
        act = block.bn1(block.conv_dw(x))
        y = block.bn2(block.conv_pw(block.se(block.aa(act))))
    if block.has_skip:
        y = block.drop_path(y) + x
    return act, y


class TruncatedEfficientNetB5(nn.Module):
    """EfficientNet-B5 (timm ``tf_efficientnet_b5``) stem, stages 1-5 and block 6a's expansion.

    ``forward`` returns the feature list ``[input, s2 (48), s4 (240), s8 (384), s16 (1056)]`` expected by
    smp's ``UnetDecoder``.
    """

    out_channels = ENCODER_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        import timm

        full = timm.create_model(TIMM_NAME, pretrained=False)
        self.conv_stem = full.conv_stem
        self.bn1 = full.bn1
        block6a = full.blocks[5][0]
        self.blocks = nn.ModuleList(list(full.blocks[:5]) + [nn.Sequential(_ExpansionOnly(block6a.conv_pw, block6a.bn1))])

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act, x = _first_block_split(self.blocks[i][0], x)
        for blk in self.blocks[i][1:]:
            x = blk(x)
        return act, x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        x = self.bn1(self.conv_stem(x))
        s2, x = self._stage(0, x)
        x = self.blocks[1](x)
        s4, x = self._stage(2, x)
        s8, x = self._stage(3, x)
        x = self.blocks[4](x)
        s16 = self.blocks[5](x)
        feats += [s2, s4, s8, s16]
        return feats

    def load_timm_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights of a full timm ``tf_efficientnet_b5`` state dict (extra keys such as the head are ignored)."""
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise ValueError(f"encoder weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        for k, v in picked.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"encoder weight {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict(picked, strict=True)


class EfficientCellSeg(nn.Module):
    """The paper's network: truncated EfficientNet-B5 encoder + U-Net decoder + 3x3 head (logits out).

    Build it only from keyword arguments (they are stored in each model folder's ``config.json``).
    """

    def __init__(self, decoder_channels: Sequence[int] = PAPER_DECODER_CHANNELS, out_channels: int = 1) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 values (one per upsampling block), got {decoder_channels}")
        self.init_kwargs: dict[str, Any] = {"decoder_channels": [int(c) for c in decoder_channels],
                                            "out_channels": int(out_channels)}
        self.encoder = TruncatedEfficientNetB5()
        self.decoder = UnetDecoder(
            encoder_channels=list(ENCODER_CHANNELS),
            decoder_channels=list(decoder_channels),
            n_blocks=4,
            use_norm="batchnorm",
            interpolation_mode="bilinear",
        )
        self.head = SegmentationHead(in_channels=decoder_channels[-1], out_channels=out_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1], H and W multiples of 16 -> (B, out_channels, H, W) logits."""
        return self.head(self.decoder(self.encoder(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {"EfficientCellSeg": EfficientCellSeg}


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """Instantiate a network from ``{"class": name, "kwargs": {...}}`` (as stored in ``config.json``)."""
    name = architecture.get("class")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**architecture.get("kwargs", {}))


def count_parameters(net: nn.Module) -> dict[str, int]:
    """Trainable parameters of the encoder, the decoder (incl. head) and in total."""
    enc = sum(p.numel() for p in net.encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"encoder": enc, "decoder": total - enc, "total": total}


def load_encoder_weights(net: EfficientCellSeg, spec: str) -> None:
    """Initialise the encoder: ``none`` (random), ``imagenet`` (timm's weights, must be cached or online),
    or a PATH to a safetensors / torch file holding a timm ``tf_efficientnet_b5`` state dict."""
    if spec == "none":
        return
    if spec == "imagenet":
        import timm

        try:
            full = timm.create_model(TIMM_NAME, pretrained=True)
        except Exception as exc:  # no network / no cache: many exception types
            raise RuntimeError(
                f"ImageNet weights for {TIMM_NAME} are not available offline ({type(exc).__name__}); "
                "download them on a connected machine and pass --encoder-weights PATH, or use none"
            ) from exc
        net.encoder.load_timm_state_dict(full.state_dict())
        return
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder weights file not found (use none, imagenet or a file path)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    net.encoder.load_timm_state_dict(state)
