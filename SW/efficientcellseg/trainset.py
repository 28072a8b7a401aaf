"""Training data: every labelled frame of a CTC-layout folder as network-scale slices with their targets.

Every usable frame is read once, pseudocolored (or grey-stacked) and scaled to network pixels exactly as
inference does (:mod:`efficientcellseg.preprocess`); the slices are kept in RAM as float16.

Training samples, per frame:

- Full 3D reference (``man_segTTT.tif`` in ``_GT/SEG``): every slice, all pixels known.
- Silver truth (``_ST/SEG``, with ``use_st``): every slice, all pixels known. Where a gold 2D slice file
  exists for the same slice, the gold objects replace the ST ones they overlap (gold boundaries win) and
  ST objects the gold file did not annotate stay foreground.
- Gold 2D slice files alone (``man_seg_TTT_ZZZ.tif``, no ST): slice GT is sparse, so unlabelled pixels far
  from annotated objects are *unknown*: the loss is computed only on the annotated objects and a background
  ring of ``ring_px`` network pixels around them; everything else is masked out.

Cell-centre targets (MDA231's second model) are Gaussian heatmaps around each object's 3D centroid, computed
from full 3D labels (GT or ST) with the anisotropic voxel size: sigma ``center_sigma`` network pixels in xy and
the matching number of slices in z (at least one slice). Validation is split by frame, never by slice, or
takes whole held-out sequences (``val_seqs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from efficientcellseg.ctc_io import MAN_SEG_RE, list_frames, list_gt_seg, read_frame, read_tiff
from efficientcellseg.datasets import DatasetConfig
from efficientcellseg.denoise import DenoiseSettings, denoise_frame
from efficientcellseg.errors import CTCInputError
from efficientcellseg.preprocess import network_shape, resize_to_network
from efficientcellseg.train_config import NEEDS_3D, TrainConfig, denoise_settings


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
class FrameRef:
    seq: str
    t: int
    raw: Path
    gt_full: Path | None
    gt_slices: dict[int, Path]
    st: Path | None


def _st_index(st_dir: Path) -> dict[int, Path]:
    if not st_dir.is_dir():
        return {}
    out = {}
    for p in st_dir.iterdir():
        if m := MAN_SEG_RE.match(p.name):
            out[int(m.group(1))] = p
    return out


def discover(cfg: TrainConfig) -> list[FrameRef]:
    """Frames of the requested sequences that have usable labels for ``cfg.task``."""
    data = Path(cfg.data)
    if not data.is_dir():
        raise CTCInputError(f"{data}: training data folder does not exist")
    refs: list[FrameRef] = []
    both = sorted(set(cfg.seqs) & set(cfg.val_seqs))
    if both:
        raise CTCInputError(f"{data}: sequence(s) {both} are in both --seqs and --val-seqs; a validation "
                            "sequence must not be trained on")
    seqs = [s for s in cfg.seqs if (data / s).is_dir()]
    if not seqs:
        raise CTCInputError(f"{data}: none of the sequences {list(cfg.seqs)} exists; give the dataset folder")
    seqs += [s for s in cfg.val_seqs if (data / s).is_dir()]
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
            ref = FrameRef(seq, t, frames[t], full, slices, st.get(t))
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


def _pseudocolor(raw: np.ndarray, pseudocolor: bool) -> np.ndarray:
    from efficientcellseg.pseudocolor import grey_stack, pseudocolor_stack

    return pseudocolor_stack(raw) if pseudocolor else grey_stack(raw)


def network_images(raw: np.ndarray, ds: DatasetConfig, pseudocolor: bool,
                    denoise: DenoiseSettings | None = None) -> torch.Tensor:
    """(Z, 3, H, W) float16 network-scale input slices of a raw (Z, Y, X) frame (smoothed first with ``denoise``,
    exactly as inference does)."""
    raw = denoise_frame(raw, denoise)
    pc = torch.from_numpy(np.ascontiguousarray(_pseudocolor(raw, pseudocolor), dtype=np.float32))
    return resize_to_network(pc, ds).clamp_(0, 1).to(torch.float16)


def frame_samples(ref: FrameRef, cfg: TrainConfig, ds: DatasetConfig) -> list[Sample]:
    """All training slices of one frame (see the module docstring for how labels are combined)."""
    raw = read_frame(ref.raw, ds.max_z)
    n_z = raw.shape[0]
    shape = network_shape(ds, raw.shape[1:])
    imgs = network_images(raw, ds, cfg.pseudocolor, denoise_settings(cfg))
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


def split_frames(refs: list[FrameRef], cfg: TrainConfig) -> tuple[list[FrameRef], list[FrameRef]]:
    """Training and validation frames: every frame of ``cfg.val_seqs`` validates when given; otherwise frames
    chosen from the seed (at least one, at most ``max_val_frames``) validate and the rest trains."""
    if cfg.val_seqs:
        val = [r for r in refs if r.seq in cfg.val_seqs]
        missing = sorted(set(cfg.val_seqs) - {r.seq for r in val})
        if missing:
            raise CTCInputError(f"{cfg.data}: validation sequence(s) {missing} have no frame with labels usable "
                                f"for task {cfg.task!r}; give sequences that exist and are labelled")
        train = [r for r in refs if r.seq not in cfg.val_seqs]
        if not train:
            raise CTCInputError(f"{cfg.data}: every labelled frame is in --val-seqs; give training --seqs too")
        return train, val
    n = len(refs)
    if n < 2:
        raise CTCInputError(f"{cfg.data}: only {n} labelled frame(s); need at least 2 (one for validation)")
    n_val = min(n - 1, cfg.max_val_frames, max(1, round(cfg.val_fraction * n)))
    order = np.random.default_rng([cfg.seed, 7]).permutation(n)
    val_idx = set(order[:n_val].tolist())
    return [r for i, r in enumerate(refs) if i not in val_idx], [r for i, r in enumerate(refs) if i in val_idx]
