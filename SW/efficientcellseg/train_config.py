"""The settings of a training run (:func:`efficientcellseg.train.train`), one flag of the CLI's ``train`` each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from efficientcellseg.augment import AugmentConfig
from efficientcellseg.denoise import DenoiseSettings

TASKS = ("seg", "centers", "seg_centers")
"""``seg_centers``: one network with two output channels, foreground (0) and centre heatmap (1)."""
NEEDS_3D = ("centers", "seg_centers")
KEEP = ("best", "last")


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
    val_seqs: tuple[str, ...] = ()
    """Validate on every frame of these sequences (never trained on) instead of frames drawn from ``seqs``;
    e.g. domain-randomized draws held out, so the validation says whether the draws are being learned."""
    keep: str = "best"
    """Which weights the model folder holds: ``best`` (the best-validated epoch) or ``last`` (the last epoch's;
    for fine-tunings whose validation set does not measure what they are for)."""
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
    ceiling_percentile: float = 0.0
    """With ``denoise_target``: clip every frame at this percentile of its values first (the shipped folders'
    ``ceiling_percentile``; denoise.py); 0: not clipped."""
    ceiling_median: int = 0
    """With ``ceiling_percentile``: take it of the frame median-filtered in-plane with this odd window
    (``ceiling_median``; denoise.py); 0: of the frame itself."""
    ema_decay: float = 0.0
    """Exponential moving average of weights and BN statistics per step (e.g. 0.999); validation and the
    saved model use the average, which smooths the epoch-to-epoch noise of small batches. 0 = off."""
    distill_from: tuple[Path, ...] = ()
    """Teacher model folders (:mod:`efficientcellseg.distill`), one per output of the task in channel order, e.g.
    the shipped MDA231-seg and MDA231-centers for ``seg_centers``: their outputs on each augmented crop are
    targets; empty: labels only."""
    distill_weight: float = 1.0
    """With ``distill_from``: loss = ``distill_weight`` x teacher loss + (1 - ``distill_weight``) x label loss."""
    freeze_encoder: bool = False
    """Train only the decoder and head (encoder weights and normalisation statistics stay as initialised);
    about half the cost of a step on a CPU and the start's features are kept."""
    freeze_decoder_blocks: int = 0
    """Keep the first K of the 4 decoder blocks as initialised too (weights and statistics); with a new output
    (``--init-from`` a seg folder, task ``seg_centers``) the old output then drifts only through the later blocks."""
    freeze_bn: bool = False
    """Keep the running statistics of every batch-normalisation layer as initialised (layers normalise with them
    in training too); the weights still train. Without it a fine-tuning re-estimates them on augmented crops,
    which moved a distilled MDA231 foreground channel away from its teacher (docs/generalization.md)."""
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


def denoise_settings(cfg: TrainConfig) -> DenoiseSettings | None:
    """The input smoothing the run trains with (stored with the model), or None; bad combinations raise."""
    if cfg.denoise_target is None:
        if cfg.background_radius > 0:
            raise ValueError("--background-radius needs --denoise-target (the background is removed before the "
                             "noise-adaptive smoothing)")
        if cfg.denoise_min_ratio > 0:
            raise ValueError("--denoise-min-ratio needs --denoise-target")
        if cfg.ceiling_percentile > 0 or cfg.ceiling_median > 0:
            raise ValueError("--ceiling-percentile and --ceiling-median need --denoise-target")
        return None
    return DenoiseSettings(cfg.denoise_target, background_radius=cfg.background_radius,
                           min_ratio=cfg.denoise_min_ratio, ceiling_percentile=cfg.ceiling_percentile,
                           ceiling_median=float(cfg.ceiling_median))
