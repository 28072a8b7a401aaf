"""Domain-randomized image formation for synthetic training data (``synth --randomize``).

The fixed profiles of :mod:`efficientcellseg.synth` draw one narrow look per dataset, so a network trained on
them learns that look (its texture, noise level, blur) instead of cells. Following the idea of SynthSeg and
AnyStar, a randomized sequence keeps the profile's cells, motion, divisions and truth but draws every
appearance and imaging parameter from ranges far wider than any real dataset. The network can then only rely
on shape and on contrast with the surroundings.

Parameters are drawn once per sequence (:func:`draw_sequence`), a few of them again per frame (illumination
flicker, noise). Every range is listed in :data:`RANGES` (name -> (low, high, meaning)), which the tests check
draw by draw and ``docs/synth.md`` reproduces. Choices (texture kinds, bit depth) are listed in
:data:`TEXTURE_KINDS` and :data:`BIT_DEPTHS`.

Image formation of a randomized frame, in this order:

1. **Cells**: per-cell brightness (log-normal spread, some cells much dimmer than the rest, possibly dimmer than
   the debris), one texture kind per cell from the sequence's kinds (smooth, granular, speckled, dark nucleoli or
   holes, bright rim, cytoplasmic stain with a dark nucleus), texture strength.
2. **Debris**: small bright blobs placed outside every cell. They are never labelled, so a network learns that
   a bright spot is not a cell.
3. **Optics**: anisotropic Gaussian PSF with lateral and axial widths from wide ranges (strong z-blur included)
   and out-of-focus haze (a wide blur of the signal added back).
4. **Background and illumination**: background level, a smooth linear gradient, vignetting, stripes and
   shadows (multiplicative), bleaching over time.
5. **Detector**: photon budget from very dim to bright (Poisson), camera offset and Gaussian read noise, a
   non-linear response (gamma), quantisation to 8 bit (with saturation), 12 bit in uint16, or full uint16.

All draws come from ``numpy.random.default_rng`` seeded by the caller, so a seed gives byte-identical output.
This module imports nothing from the rest of the generator: it maps (labels, distance, cell levels) to an image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

TEXTURE_KINDS = ("smooth", "granular", "speckled", "nucleoli", "rim", "cytoplasmic")
"""Inner appearance of a cell; each sequence uses one to three of them, each cell one."""

BIT_DEPTHS = (8, 12, 16)
"""Output encodings: 8 bit in uint8 (may saturate), 12 bit in uint16 (values <= 4095), full uint16."""

RANGES: dict[str, tuple[float, float, str]] = {
    "photons": (3.0, 3000.0, "mean photons per voxel of a typical cell at its centre (log-uniform)"),
    "fill": (0.15, 1.3, "typical cell signal as a fraction of the output range (> 1 saturates 8 bit)"),
    "offset": (0.0, 0.12, "camera offset as a fraction of the output range"),
    "read_noise": (0.0, 6.0, "Gaussian read noise in photon units"),
    "background": (0.0, 0.6, "background level relative to a typical cell"),
    "gradient": (0.0, 0.8, "peak-to-peak amplitude of a linear background/illumination gradient"),
    "vignetting": (0.0, 0.6, "illumination loss at the field corners"),
    "haze": (0.0, 0.5, "fraction of the signal added back as out-of-focus haze"),
    "haze_sigma": (6.0, 30.0, "lateral width (pixels) of the haze blur"),
    "psf_xy": (0.4, 3.0, "lateral PSF sigma in pixels"),
    "psf_z": (0.3, 3.5, "axial PSF sigma in slices"),
    "texture": (0.0, 0.8, "texture strength (relative modulation inside cells)"),
    "spread": (0.0, 0.7, "log-normal sigma of the per-cell brightness"),
    "dim_fraction": (0.0, 0.3, "fraction of cells made much dimmer than the rest"),
    "dim_factor": (0.15, 0.5, "brightness factor of those dim cells"),
    "debris_density": (0.0, 40.0, "debris blobs per 512x512 pixels of a slice plane"),
    "debris_radius": (0.8, 3.5, "debris blob radius in pixels"),
    "debris_level": (0.3, 2.5, "debris brightness relative to a typical cell"),
    "stripes": (0.0, 0.25, "amplitude of stripes (0 in about 70% of the sequences)"),
    "stripe_period": (4.0, 60.0, "stripe period in pixels"),
    "shadows": (0.0, 0.7, "attenuation at the centre of the darkest shadow (0 in about half)"),
    "bleach": (0.0, 0.05, "bleaching rate per frame (signal x exp(-rate t))"),
    "gamma": (0.6, 1.6, "detector response exponent applied to the normalised signal"),
    "flicker": (0.0, 0.08, "frame-to-frame illumination change (relative sigma)"),
    "shape_xy": (0.75, 1.35, "lateral scale of every cell (per sequence)"),
    "shape_z": (0.6, 1.8, "axial scale of every cell: thinner or thicker cells, i.e. another z-spacing"),
    "irregularity": (0.5, 2.0, "factor on the surface-wave amplitude (smooth to lobed outlines)"),
    "elongation": (0.75, 1.4, "stretch of the long axis against the short one"),
    "density": (0.6, 1.5, "factor on the number of cells (TRIC keeps a fraction, MDA231 adds cells)"),
}


@dataclass(frozen=True)
class SequenceLook:
    """Appearance and imaging parameters of one randomized sequence (see :data:`RANGES`)."""

    bit_depth: int
    textures: tuple[str, ...]
    photons: float
    fill: float
    offset: float
    read_noise: float
    background: float
    gradient: float
    gradient_angle: float
    vignetting: float
    haze: float
    haze_sigma: float
    psf_xy: float
    psf_z: float
    texture: float
    spread: float
    dim_fraction: float
    dim_factor: float
    debris_density: float
    debris_radius: float
    debris_level: float
    stripes: float
    stripe_period: float
    stripe_angle: float
    shadows: float
    bleach: float
    gamma: float
    flicker: float
    shape_xy: float
    shape_z: float
    irregularity: float
    elongation: float
    density: float

    @property
    def dtype(self) -> str:
        """Output dtype: uint8 for 8 bit, uint16 otherwise."""
        return "uint8" if self.bit_depth == 8 else "uint16"

    @property
    def max_value(self) -> int:
        """Largest output grey value of the encoding (255, 4095 or 65535)."""
        return (1 << self.bit_depth) - 1

    def to_json(self) -> dict:
        """Plain JSON-able dict (for synth.json and model cards)."""
        d = asdict(self)
        d["textures"] = list(self.textures)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def _u(rng: np.random.Generator, name: str) -> float:
    lo, hi, _ = RANGES[name]
    return float(rng.uniform(lo, hi))


def _logu(rng: np.random.Generator, name: str) -> float:
    lo, hi, _ = RANGES[name]
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _maybe(rng: np.random.Generator, name: str, p: float = 0.5) -> float:
    """A value from the range with probability ``p``, else the range's low end (the artefact is absent)."""
    return _u(rng, name) if rng.random() < p else RANGES[name][0]


def draw_sequence(rng: np.random.Generator) -> SequenceLook:
    """Draw the look of one sequence from :data:`RANGES`."""
    n_tex = int(rng.integers(1, 4))
    textures = tuple(sorted(rng.choice(len(TEXTURE_KINDS), size=n_tex, replace=False).tolist()))
    return SequenceLook(
        bit_depth=int(rng.choice(BIT_DEPTHS, p=[0.5, 0.25, 0.25])),
        textures=tuple(TEXTURE_KINDS[i] for i in textures),
        photons=_logu(rng, "photons"), fill=_u(rng, "fill"), offset=_u(rng, "offset"),
        read_noise=_u(rng, "read_noise"), background=_u(rng, "background"), gradient=_u(rng, "gradient"),
        gradient_angle=float(rng.uniform(0, 2 * math.pi)), vignetting=_maybe(rng, "vignetting"),
        haze=_maybe(rng, "haze"), haze_sigma=_u(rng, "haze_sigma"), psf_xy=_u(rng, "psf_xy"),
        psf_z=_u(rng, "psf_z"), texture=_u(rng, "texture"), spread=_u(rng, "spread"),
        dim_fraction=_maybe(rng, "dim_fraction"), dim_factor=_u(rng, "dim_factor"),
        debris_density=_maybe(rng, "debris_density", 0.7), debris_radius=_u(rng, "debris_radius"),
        debris_level=_u(rng, "debris_level"), stripes=_maybe(rng, "stripes", 0.3),
        stripe_period=_logu(rng, "stripe_period"), stripe_angle=float(rng.uniform(0, math.pi)),
        shadows=_maybe(rng, "shadows"), bleach=_u(rng, "bleach"), gamma=_logu(rng, "gamma"),
        flicker=_u(rng, "flicker"), shape_xy=_u(rng, "shape_xy"), shape_z=_logu(rng, "shape_z"),
        irregularity=_logu(rng, "irregularity"), elongation=_u(rng, "elongation"), density=_u(rng, "density"),
    )


# ------------------------------------------------------------------------------------------------ cells
MAX_LABELS = 65536
"""Per-label properties are drawn for every possible uint16 label at once, so a cell keeps its look over time
and a label's look does not depend on how many cells exist when it is first seen."""


def cell_properties(look: SequenceLook, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-label brightness factor (float32) and texture kind index into :data:`TEXTURE_KINDS` (int).

    Both are indexed by label (length :data:`MAX_LABELS`; label 0 = background gets factor 0).
    """
    factor = np.exp(rng.normal(0.0, look.spread, MAX_LABELS)).astype(np.float32)
    dim = rng.random(MAX_LABELS) < look.dim_fraction
    factor[dim] *= np.float32(look.dim_factor)
    factor[0] = 0
    kinds = np.array([TEXTURE_KINDS.index(k) for k in look.textures])
    kind = kinds[rng.integers(0, len(kinds), MAX_LABELS)]
    return factor, kind


def _smooth_noise(shape: tuple[int, ...], sigma: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (float32)."""
    n = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=2.5)
    return n / np.float32(max(float(n.std()), 1e-6))


def cell_signal(lab: np.ndarray, dist: np.ndarray, levels: np.ndarray, factor: np.ndarray, kind: np.ndarray,
                look: SequenceLook, rng: np.random.Generator) -> np.ndarray:
    """Noise-free emitter density inside cells (float32, typical cell ~1), before blur.

    ``levels[label]`` is the profile's brightness of each cell (normalised here by its median over visible
    cells), ``factor``/``kind`` come from :func:`cell_properties`, ``dist`` is the normalised distance from the
    cell centre (0) to its border (1).
    """
    inside = lab > 0
    sig = np.zeros(lab.shape, np.float32)
    if not inside.any():
        return sig
    ids = np.unique(lab[inside])
    ref = float(np.median(levels[ids])) or 1.0
    lev = (levels / np.float32(ref)).astype(np.float32) * factor[: len(levels)]
    base = lev[lab[inside]]
    d = np.minimum(dist[inside], 1.0)
    k = kind[lab[inside]]
    tex = np.float32(look.texture)
    prof = np.ones_like(base)
    prof -= np.float32(0.3) * d * d  # slightly dimmer edges for every kind
    rim = k == TEXTURE_KINDS.index("rim")
    prof[rim] = 0.45 + 0.9 * d[rim] ** 4
    cyto = k == TEXTURE_KINDS.index("cytoplasmic")
    prof[cyto] = np.where(d[cyto] < 0.45, 0.2, 1.0)
    mod = np.ones_like(base)
    gran = k == TEXTURE_KINDS.index("granular")
    if gran.any():
        mod[gran] += tex * _smooth_noise(lab.shape, (0.4, 0.8, 0.8), rng)[inside][gran]
    spk = k == TEXTURE_KINDS.index("speckled")
    if spk.any():
        spots = (rng.random(lab.shape, dtype=np.float32) < 0.01).astype(np.float32)
        spots = ndi.gaussian_filter(spots, (0.5, 1.0, 1.0), truncate=2.0)
        spots /= np.float32(max(float(spots.max()), 1e-6))
        mod[spk] += 4 * tex * spots[inside][spk]
    nuc = k == TEXTURE_KINDS.index("nucleoli")
    if nuc.any():
        blobs = _smooth_noise(lab.shape, (0.8, 3.0, 3.0), rng)[inside][nuc]
        mod[nuc] *= np.where(blobs > 1.2, 1 - 0.9 * min(1.0, 0.3 + look.texture), 1.0).astype(np.float32)
    smooth_mod = _smooth_noise(lab.shape, (0.6, 2.5, 2.5), rng)[inside]
    mod *= np.clip(1 + 0.3 * tex * smooth_mod, 0.2, None)
    sig[inside] = base * np.clip(prof * mod, 0.02, None)
    return sig


def debris_centres(lab: np.ndarray, look: SequenceLook, rng: np.random.Generator) -> np.ndarray:
    """(K, 3) integer voxel positions of debris blobs, all outside every cell (label 0)."""
    nz, ny, nx = lab.shape
    n = rng.poisson(look.debris_density * ny * nx / 512**2)
    if n == 0:
        return np.zeros((0, 3), int)
    pos = np.stack([rng.integers(0, nz, 3 * n), rng.integers(0, ny, 3 * n), rng.integers(0, nx, 3 * n)], 1)
    free = lab[pos[:, 0], pos[:, 1], pos[:, 2]] == 0
    return pos[free][:n]


def debris_signal(shape: tuple[int, int, int], centres: np.ndarray, look: SequenceLook,
                  rng: np.random.Generator) -> np.ndarray:
    """Emitter density of the debris blobs (float32), zero where there is none."""
    out = np.zeros(shape, np.float32)
    if len(centres) == 0:
        return out
    lev = look.debris_level * np.exp(rng.normal(0, 0.3, len(centres)))
    out[centres[:, 0], centres[:, 1], centres[:, 2]] = lev.astype(np.float32)
    r = look.debris_radius
    blob = ndi.gaussian_filter(out, (max(0.5, r / 2.5), r, r), truncate=3.0)
    peak = 1.0 / ((2 * math.pi) ** 1.5 * max(0.5, r / 2.5) * r * r)
    return blob / np.float32(peak)


# ------------------------------------------------------------------------------------------------ optics/camera
def illumination(shape: tuple[int, int], look: SequenceLook, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative (Y, X) illumination field: gradient, vignetting, stripes, shadows (float32, > 0)."""
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) / max(ny, nx)
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) / max(ny, nx)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    ca, sa = math.cos(look.gradient_angle), math.sin(look.gradient_angle)
    field = 1 + look.gradient * (ca * xx + sa * yy)
    field *= 1 - look.vignetting * np.clip(2 * (xx * xx + yy * yy), 0, 1)
    if look.stripes > 0:
        cs, ss = math.cos(look.stripe_angle), math.sin(look.stripe_angle)
        phase = 2 * math.pi * (cs * xx + ss * yy) * max(ny, nx) / look.stripe_period
        field *= 1 + look.stripes * np.sin(phase + rng.uniform(0, 2 * math.pi))
    if look.shadows > 0:
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(-0.5, 0.5, 2)
            s = rng.uniform(0.05, 0.25)
            depth = look.shadows * rng.uniform(0.4, 1.0)
            field *= 1 - depth * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.clip(field, 0.05, None).astype(np.float32)


def render_random(lab: np.ndarray, dist: np.ndarray, levels: np.ndarray, look: SequenceLook, cells: tuple,
                  t: int, rng: np.random.Generator) -> np.ndarray:
    """Randomized microscope image of a label volume (dtype ``look.dtype``).

    ``cells`` is ``(factor, kind)`` from :func:`cell_properties`; ``rng`` should be seeded per frame.
    """
    factor, kind = cells
    sig = cell_signal(lab, dist, levels, factor, kind, look, rng)
    sig += debris_signal(lab.shape, debris_centres(lab, look, rng), look, rng)
    sig *= np.float32(math.exp(-look.bleach * t) * (1 + rng.normal(0, look.flicker)))
    img = ndi.gaussian_filter(sig, (look.psf_z, look.psf_xy, look.psf_xy), truncate=3.0)
    if look.haze > 0:
        img += np.float32(look.haze) * ndi.gaussian_filter(sig, (2.0 * look.psf_z + 1, look.haze_sigma,
                                                                  look.haze_sigma), truncate=2.5)
    img += np.float32(look.background)
    img *= illumination(lab.shape[1:], look, rng)[None]
    photons = rng.poisson(np.clip(img, 0, None) * np.float32(look.photons)).astype(np.float32)
    photons += rng.normal(0, look.read_noise, img.shape).astype(np.float32)
    norm = np.clip(photons / np.float32(look.photons), 0, None)  # ~1 for a typical cell
    top = look.max_value
    out = look.offset * top + look.fill * top * np.power(norm / 2.0, np.float32(look.gamma)) * 2.0
    return np.clip(np.rint(out), 0, top).astype(look.dtype)
