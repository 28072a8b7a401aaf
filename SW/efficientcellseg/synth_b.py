"""Synthetic "family B": a second, independent image model of the three CTC datasets, for validation only.

The shipped networks were trained on :mod:`efficientcellseg.synth` ("family A"). Family B is the project's own
out-of-distribution check: other cell shapes, texture, optics, background and camera, built without any code or
construction rule of family A (this module does not import it; a test checks that). **Nothing made here may be
used for training or for choosing post-processing parameters.** It writes the same CTC layout as family A::

    ROOT/<dataset folder>/<seq>/tTTT.tif               raw frames (Z, Y, X), uint8 or uint16
    ROOT/<dataset folder>/<seq>_GT/SEG/...             2D slice files (MDA231 all objects, TRIC a sparse subset)
                                                       or full 3D man_segTTT.tif (A549-SIM)
    ROOT/<dataset folder>/<seq>_GT/TRA/...             man_trackTTT.tif + man_track.txt (label begin end parent)
    ROOT/<dataset folder>/synth.json                   family "B", profile, seed, params, "SYNTHETIC, validation only"

No silver truth (``_ST``) is written: family B is not training data.

How a frame is made
-------------------
**Shapes.**

* MDA231: each cell is a star-convex 2D outline ``r(theta) = R exp(sum_k a_k cos k theta + b_k sin k theta)``
  (random radial Fourier series, k = 1..6, amplitudes falling as 1/k) with narrow angular bumps that make thin
  protrusions and broad ones that make lamellipodia. The outline is lofted through z: a cell lies on a tilted
  bottom plane and its thickness falls from 3-8 slices over the body to one slice in the protrusions. Cells
  that round up after a division are compact and thick. Overlaps are resolved by painting every cell's core
  first, then the remaining parts where the volume is still empty (first come, first served).
* TRIC: nucleus centres are a random-sequential-adsorption point set (vectorised rounds of dart throwing with
  a minimum distance, thinned by a patchy density field) inside an embryo region given by a level set of smooth
  noise. Every pixel belongs to its nearest centre (a Voronoi partition, k-d tree), and inside that territory
  to the nucleus where an elliptic distance plus smooth noise stays below 1, so crowded neighbours touch
  along straight Voronoi edges. The 2D masks are lofted onto a curved sheet (a dome with ripples) with a
  per-nucleus half-thickness.
* A549-SIM: one cell, the zero level set of ``1 - |x - c|_E + a N_t(x) + blebs`` on a physical grid (``|.|_E`` the
  norm of an elongated ellipsoid with a random in-plane direction), with
  ``N_t`` smooth Fourier-synthesised 3D noise that morphs over time (a rotation between two fixed fields) and
  blebs that swell and shrink on their own schedules; holes filled, largest component kept.

**Dynamics.** MDA231: persistent random walk with soft repulsion, slow outline and protrusion changes,
divisions (two rounded daughters, parent recorded), cells that leave the field end their track. TRIC: a smooth
convergent tissue flow plus jitter and pairwise repulsion, divisions, nuclei leaving the embryo end. A549-SIM:
a deterministic drift and shape morph per time point. A label is present exactly in frames ``begin..end``
(checked on the rasterised labels every frame); daughters start the frame after the parent's last frame.

**Fluorophore density.** Per-cell brightness (log-normal), multiplied by 1/f ("pink") noise synthesised in
Fourier space, granules and dark holes (nucleoli) from the tails of a band-pass noise field, a brighter
membrane rim for some cells, depth attenuation and bleaching. A few bright debris specks that are **not**
labelled are added outside the cells.

**Optics.** A widefield-like PSF applied in Fourier space (tiled along y for large frames): an in-focus term
whose lateral transfer function is the circular-pupil (Airy) OTF and whose axial profile is a Lorentzian (heavy
z tails), plus a defocus term that is laterally broader and axially longer. Out-of-focus haze (a very broad,
long-tailed copy of the signal) is added separately; it belongs to the background knob.

**Background and camera.** Autofluorescence floor, vignetting, a linear illumination ramp and a smooth 2D
background structure; an sCMOS-like camera with per-pixel offset, gain and read-noise maps (fixed for the
sequence), Poisson photon noise, a soft saturation knee near the top of the dtype range, rounding and clipping.

Knobs (:class:`FamilyBParams`, each acting alone):

* ``snr`` multiplies the photon budget: the expected image in grey values is unchanged, photons per grey value
  scale with ``snr``, so shot noise relative to signal falls as ``1/sqrt(snr)`` and read noise as ``1/snr``.
* ``z_blur`` multiplies every axial width of the PSF (in-focus, defocus and haze terms).
* ``texture`` multiplies the amplitude of the pink-noise texture, granules, holes and membrane rim (0: each
  cell is uniform apart from optics and noise).
* ``bg_gradient`` multiplies vignetting depth, illumination ramp, background structure and haze (0: flat).
* ``brightness`` multiplies the cells' (and debris') expected grey values; fewer photons come with it.
* ``density`` multiplies the number of cells (MDA231) or the nucleus density (TRIC: target count and a
  minimum distance shrunk by ``1/sqrt(density)`` above 1). A549-SIM always has one cell; ``density`` has no
  effect there.

Every random draw comes from ``numpy.random.default_rng`` seeded with ``(family salt, seed, purpose, t)``:
the same seed gives byte-identical files, and frame ``t`` does not depend on how many frames were requested.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from efficientcellseg.datasets import get_dataset
from efficientcellseg.log import progress
from efficientcellseg.synth_io import SequenceWriter, claim_folder, record_sequence

log = logging.getLogger(__name__)

FAMILY_B_VERSION = 1
PROFILES_B = ("MDA231", "TRIC", "A549-SIM")
_SALT = 0x5EB  # keeps family B's random streams apart from anything else seeded with the same number
_PURPOSE = {"layout": 1, "motion": 2, "texture": 3, "debris": 4, "camera": 5, "camera_fixed": 6, "gold": 7,
            "background": 8, "shape": 9}
_NOTE = "SYNTHETIC, validation only (family B): never train or tune post-processing on these data"
_GENERATOR = "efficientcellseg.synth_b"


@dataclass(frozen=True)
class FamilyBParams:
    """Image-model knobs of family B; 1.0 is the reference, each knob acts alone (see the module docstring)."""

    snr: float = 1.0
    """Photon budget multiplier (0.1 very dim/noisy, 10 bright/clean); the expected grey values do not change."""
    z_blur: float = 1.0
    """Multiplier of every axial width of the PSF."""
    texture: float = 1.0
    """Amplitude of the intra-cell texture, granules, holes and rim (0 = smooth cells)."""
    bg_gradient: float = 1.0
    """Strength of vignetting, illumination ramp, background structure and out-of-focus haze (0 = flat)."""
    brightness: float = 1.0
    """Scale of the cells' expected grey values relative to the dtype range."""
    density: float = 1.0
    """Multiplier of the number of cells / nuclei (no effect on A549-SIM, which has one cell)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"FamilyBParams.{name} must be a finite number, got {value!r}")
            low = 0.0 if name in ("texture", "bg_gradient") else 1e-3
            if value < low:
                raise ValueError(f"FamilyBParams.{name} must be >= {low}, got {value}")


CONDITIONS: dict[str, FamilyBParams] = {
    "default": FamilyBParams(),
    "dim": FamilyBParams(snr=0.25, brightness=0.45),
    "bright": FamilyBParams(snr=5.0, brightness=1.25),
}


def _rng(seed: int, purpose: str, t: int = 0) -> np.random.Generator:
    return np.random.default_rng([_SALT, int(seed), _PURPOSE[purpose], int(t)])


# ------------------------------------------------------------------------------------------- noise fields
def _fourier_noise(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], beta: float,
                   low: float, high: float) -> np.ndarray:
    """Zero-mean, unit-std float32 noise with power ~ 1/f**beta for wavelengths between ``high`` and ``low``.

    ``spacing`` is the sample distance per axis in the units of the wavelengths. Synthesised on a fast FFT size
    and cropped, so large prime-sized frames stay quick.
    """
    fast = tuple(sfft.next_fast_len(int(n), real=True) for n in shape)
    f2 = np.zeros((), np.float32)
    for ax, (n, d) in enumerate(zip(fast, spacing, strict=True)):
        f = sfft.rfftfreq(n, d) if ax == len(fast) - 1 else sfft.fftfreq(n, d)
        sh = [1] * len(fast)
        sh[ax] = f.size
        f2 = f2 + np.square(f.astype(np.float32)).reshape(sh)
    # amplitude f**(-beta/2) (flat below 1/low), Gaussian roll-off above 1/high; computed on f**2
    amp = np.exp(f2 * np.float32(-high * high))
    if beta:
        base = np.maximum(f2, np.float32(1.0 / (low * low)))
        q = np.sqrt(np.sqrt(base))  # f ** 0.5
        del base
        amp /= q if beta == 1 else (q * q if beta == 2 else np.power(q, np.float32(beta)))
        del q
    amp.flat[0] = 0.0
    del f2
    # white noise drawn directly as a complex spectrum (saves the forward transform)
    spec = rng.standard_normal((*amp.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spec *= amp
    del amp
    out = sfft.irfftn(spec, s=fast, workers=2)[tuple(slice(0, n) for n in shape)]
    out = np.ascontiguousarray(out, dtype=np.float32)
    out -= np.float32(out.mean())
    out /= np.float32(max(float(out.std()), 1e-12))
    return out


# ------------------------------------------------------------------------------------------- optics
@dataclass(frozen=True)
class _Optics:
    """Widefield-like PSF in pixels: lateral pupil cut-off, Lorentzian axial half widths, term weights."""

    cutoff: float  # lateral OTF cut-off in cycles per pixel (Airy OTF reaches 0 there)
    gamma_z: float  # axial Lorentzian half width of the in-focus term (slices)
    defocus_w: float  # weight of the defocus term
    defocus_xy: float  # lateral Gaussian sigma of the defocus term (pixels)
    defocus_z: float  # axial Lorentzian half width of the defocus term (slices)
    haze_xy: float  # lateral sigma of the haze (pixels)
    haze_z: float  # axial Lorentzian half width of the haze (slices)


def _otf(shape: tuple[int, int, int], op: _Optics, z_blur: float) -> np.ndarray:
    """Real transfer function (rfftn layout) of the in-focus + defocus PSF for a padded volume."""
    nz, ny, nx = shape
    kz = np.abs(sfft.fftfreq(nz)).astype(np.float32)[:, None, None]
    ky = sfft.fftfreq(ny).astype(np.float32)[None, :, None]
    kx = sfft.rfftfreq(nx).astype(np.float32)[None, None, :]
    kr = np.sqrt(ky * ky + kx * kx)
    nu = np.clip(kr / np.float32(op.cutoff), 0, 1)
    airy = (2 / np.pi) * (np.arccos(nu) - nu * np.sqrt(1 - nu * nu))  # circular-pupil OTF
    # Fourier transform of a Lorentzian of half width g along z: exp(-2 pi g |kz|)
    lz1 = np.exp(-2 * np.pi * op.gamma_z * z_blur * kz)
    lz2 = np.exp(-2 * np.pi * op.defocus_z * z_blur * kz)
    g2 = np.exp(-2 * np.pi**2 * op.defocus_xy**2 * (ky * ky + kx * kx))
    w = np.float32(op.defocus_w)
    return ((1 - w) * lz1 * airy.astype(np.float32) + w * lz2 * (g2 * airy)).astype(np.float32)


def _apply_psf(vol: np.ndarray, op: _Optics, z_blur: float, tile: int = 768) -> np.ndarray:
    """Convolve ``vol`` with the PSF in Fourier space; zero padding in z, mirrored in y/x; tiled along y."""
    nz, ny, nx = vol.shape
    pz = int(min(3 * nz, math.ceil(4 * max(op.gamma_z, op.defocus_z) * z_blur) + 2))
    pxy = int(math.ceil(3 * op.defocus_xy + 6))
    out = np.empty(vol.shape, np.float32)
    step = ny if ny <= tile + 2 * pxy else tile
    otf_cache: dict[tuple[int, int, int], np.ndarray] = {}
    for y0 in range(0, ny, step):
        y1 = min(ny, y0 + step)
        a, b = max(0, y0 - pxy), min(ny, y1 + pxy)
        block = vol[:, a:b]
        block = np.pad(block, ((pz, pz), (pxy - (y0 - a), pxy - (b - y1)), (pxy, pxy)),
                       mode="reflect" if min(block.shape[1:]) > pxy else "edge")
        block[:pz] = 0
        block[-pz:] = 0
        fast = (sfft.next_fast_len(block.shape[0], real=True), sfft.next_fast_len(block.shape[1], real=True),
                sfft.next_fast_len(block.shape[2], real=True))
        if fast not in otf_cache:
            otf_cache[fast] = _otf(fast, op, z_blur)
        spec = sfft.rfftn(block, s=fast, workers=2)
        spec *= otf_cache[fast]
        res = sfft.irfftn(spec, s=fast, workers=2)
        out[:, y0:y1] = res[pz:pz + nz, pxy:pxy + (y1 - y0), pxy:pxy + nx]
    return out


def _lorentz_kernel(g: float, n: int) -> np.ndarray:
    dz = np.arange(-n, n + 1, dtype=np.float32)
    k = 1.0 / (1.0 + np.square(dz / np.float32(max(g, 1e-3))))
    return (k / k.sum()).astype(np.float32)


def _haze(sig: np.ndarray, op: _Optics, z_blur: float) -> np.ndarray:
    """Out-of-focus haze: the signal blurred very broadly in y/x (at 1/4 resolution) and with long z tails."""
    nz, ny, nx = sig.shape
    f = 4
    py, px = (-ny) % f, (-nx) % f
    small = np.pad(sig, ((0, 0), (0, py), (0, px)), mode="edge")
    small = small.reshape(nz, small.shape[1] // f, f, small.shape[2] // f, f).mean(axis=(2, 4))
    small = ndi.gaussian_filter(small, (0, op.haze_xy / f, op.haze_xy / f), mode="reflect", truncate=3.0)
    small = ndi.convolve1d(small, _lorentz_kernel(op.haze_z * z_blur, nz), axis=0, mode="constant")
    big = np.repeat(np.repeat(small, f, axis=1), f, axis=2)[:, :ny, :nx]
    return ndi.uniform_filter(big, (1, f, f), mode="nearest")  # smooths the 4x4 blocks


# ------------------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class _Look:
    """Grey values, photon budget, texture and background of a profile (all at knob value 1)."""

    dtype: str
    cell_adu: float  # expected grey value of an average cell above the offset
    offset_adu: float  # camera offset
    floor_adu: float  # autofluorescence / background above the offset
    photons: float  # photons at cell_adu (the photon budget at snr 1)
    read_e: float  # median read noise in photo-electrons
    pink: float  # pink texture amplitude (fraction of the cell level)
    pink_band: tuple[float, float]  # (low, high) wavelength limits of the texture, pixels
    granules: float
    holes: float
    rim: float  # membrane rim gain for cells that have one
    vignette: float
    ramp: float
    structure: float  # smooth background structure, fraction of the floor
    haze: float  # haze weight relative to the signal
    attenuation: float  # signal loss per slice into the sample
    bleach: float  # per frame
    debris: int  # debris specks per frame at full size
    optics: _Optics = field(default_factory=lambda: _Optics(0.3, 1.0, 0.3, 2.0, 2.0, 20.0, 4.0))


@dataclass(frozen=True)
class _ProfileB:
    key: str
    shape: Callable[[str, bool], tuple[int, int, int]]
    default_frames: int
    look: _Look
    gt: str  # "slices", "sparse_slices" or "full"


# ------------------------------------------------------------------------------------------- simulation
@dataclass
class _Cell:
    """One MDA231 cell: outline Fourier series, protrusions, placement in z, motion and appearance."""

    id: int
    yx: np.ndarray
    z0: float
    height: float
    radius: float
    coef: np.ndarray  # (K, 2) log-radius Fourier coefficients
    bumps: np.ndarray  # (P, 3) angle, relative length, angular width
    tilt: np.ndarray  # (2,) slices per pixel along y, x
    heading: float
    speed: float
    level: float
    rim: bool
    rounding: float = 0.0
    age: int = 0


class _Tracks:
    """Track bookkeeping from the rasterised labels: a label is present exactly in frames begin..end."""

    def __init__(self) -> None:
        self.rec: dict[int, list[int]] = {}
        self.next_id = 1

    def new(self, t: int, parent: int = 0) -> int:
        i = self.next_id
        self.next_id += 1
        self.rec[i] = [t, t, parent]
        return i

    def observe(self, t: int, alive: list[int], lab: np.ndarray) -> set[int]:
        """Extend the tracks of the labels present at ``t`` and forget tracks born at ``t`` that never showed
        (e.g. a daughter placed outside the field). Returns the alive ids absent from ``lab``: the caller drops
        them, so their tracks end at ``t - 1``."""
        counts = np.bincount(lab.ravel(), minlength=self.next_id)
        gone = {i for i in alive if counts[i] == 0}
        for i in alive:
            if i not in gone:
                self.rec[i][1] = t
        for i in [i for i, (b, _, _) in self.rec.items() if b == t and counts[i] == 0]:
            del self.rec[i]
        return gone

    def text(self) -> str:
        return "".join(f"{i} {b} {e} {p}\n" for i, (b, e, p) in sorted(self.rec.items()))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


class _MDASim:
    """Flat, spread MDA231 cells with protrusions, migrating and dividing in a 3D matrix."""

    def __init__(self, shape: tuple[int, int, int], seed: int, params: FamilyBParams) -> None:
        self.shape, self.seed, self.params = shape, seed, params
        self.tracks = _Tracks()
        rng = _rng(seed, "layout")
        nz, ny, nx = shape
        n = max(1, int(round(rng.integers(8, 13) * params.density)))
        self.cells: list[_Cell] = []
        tries = 0
        while len(self.cells) < n and tries < 50 * n:
            tries += 1
            c = self._new_cell(rng, 0, rng.uniform([20, 20], [ny - 20, nx - 20]))
            if all(np.hypot(*(c.yx - o.yx)) > 0.8 * (c.radius + o.radius) for o in self.cells):
                self.cells.append(c)
            else:
                del self.tracks.rec[c.id]
        self.t = -1

    def _new_cell(self, rng: np.random.Generator, t: int, yx: np.ndarray, parent: int = 0) -> _Cell:
        nz = self.shape[0]
        k = np.arange(1, 7)[:, None]
        coef = rng.normal(0, 1, (6, 2)) * (0.22 / k)
        coef[1] *= 2.6  # k = 2: elongation
        n_b = int(rng.integers(1, 5))
        bumps = np.stack([rng.uniform(-np.pi, np.pi, n_b),
                          np.where(rng.uniform(0, 1, n_b) < 0.55, rng.uniform(0.7, 1.8, n_b),
                                   rng.uniform(0.25, 0.6, n_b)), np.zeros(n_b)], axis=1)
        bumps[:, 2] = np.where(bumps[:, 1] > 0.5, rng.uniform(0.07, 0.15, n_b), rng.uniform(0.4, 0.8, n_b))
        height = float(rng.uniform(3, 8))
        return _Cell(id=self.tracks.new(t, parent), yx=np.asarray(yx, float),
                     z0=float(rng.uniform(1, max(1.5, nz - height - 2))), height=height,
                     radius=float(rng.uniform(13, 22)), coef=coef, bumps=bumps,
                     tilt=rng.normal(0, 0.012, 2), heading=float(rng.uniform(-np.pi, np.pi)),
                     speed=float(rng.uniform(1.0, 4.0)), level=float(rng.lognormal(0, 0.3)),
                     rim=bool(rng.uniform() < 0.35))

    def _step(self, t: int) -> None:
        rng = _rng(self.seed, "motion", t)
        nz, ny, nx = self.shape
        out: list[_Cell] = []
        for c in self.cells:
            c.age += 1
            c.heading += float(rng.normal(0, 0.35))
            c.yx = c.yx + c.speed * np.array([math.sin(c.heading), math.cos(c.heading)])
            c.z0 = float(np.clip(c.z0 + rng.normal(0, 0.25), 0.5, nz - 2))
            c.coef = 0.9 * c.coef + rng.normal(0, 0.03, c.coef.shape) / np.arange(1, 7)[:, None]
            c.bumps[:, 0] += rng.normal(0, 0.12, len(c.bumps))
            c.bumps[:, 1] = np.clip(c.bumps[:, 1] * rng.lognormal(0, 0.15, len(c.bumps)), 0.1, 2.0)
            c.rounding *= 0.45
            c.radius = min(c.radius * 1.03, 22.0)  # daughters grow back
            if c.age >= 1 and rng.uniform() < 0.035 and len(self.cells) < 40:
                axis = rng.uniform(-np.pi, np.pi)
                d = 0.45 * c.radius * np.array([math.sin(axis), math.cos(axis)])
                for s in (1, -1):
                    kid = self._new_cell(rng, t, c.yx + s * d, parent=c.id)
                    kid.radius = 0.8 * c.radius
                    kid.z0, kid.level, kid.rounding = c.z0, c.level * 1.1, 1.0
                    kid.heading = axis if s > 0 else axis + np.pi
                    out.append(kid)
            else:
                out.append(c)
        for a in out:  # soft repulsion between cells at similar depth
            for b in out:
                if a.id < b.id and abs(a.z0 - b.z0) < 0.6 * (a.height + b.height):
                    d = a.yx - b.yx
                    dist = float(np.hypot(*d)) + 1e-6
                    lim = 0.9 * (a.radius + b.radius)
                    if dist < lim:
                        push = 0.5 * (lim - dist) * d / dist
                        a.yx, b.yx = a.yx + 0.5 * push, b.yx - 0.5 * push
        self.cells = [c for c in out if -5 < c.yx[0] < ny + 5 and -5 < c.yx[1] < nx + 5]

    def _mask(self, c: _Cell) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """(y/x box, 3D mask over all z in the box, core mask) of one cell."""
        nz, ny, nx = self.shape
        r_body = c.radius * (1 - 0.3 * c.rounding)
        coef = c.coef * (1 - c.rounding)
        lengths = c.bumps[:, 1] * (1 - c.rounding)
        ext = r_body * math.exp(float(np.abs(coef).sum())) * (1 + float(lengths.max(initial=0))) + 2
        y0, y1 = max(0, int(c.yx[0] - ext)), min(ny, int(c.yx[0] + ext) + 2)
        x0, x1 = max(0, int(c.yx[1] - ext)), min(nx, int(c.yx[1] + ext) + 2)
        if y1 <= y0 or x1 <= x0:
            return (slice(0, 0), slice(0, 0)), np.zeros((nz, 0, 0), bool), np.zeros((nz, 0, 0), bool)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(c.yx[0])
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(c.yx[1])
        th = np.arctan2(dy, dx)
        k = np.arange(1, 7, dtype=np.float32)[:, None, None]
        logr = (coef[:, 0, None, None] * np.cos(k * th) + coef[:, 1, None, None] * np.sin(k * th)).sum(0)
        body = r_body * np.exp(logr)
        bump = np.zeros_like(body)
        for (ang, _, width), length in zip(c.bumps, lengths, strict=True):
            bump += length * np.exp(-0.5 * np.square(_wrap(th - ang) / width))
        dist = np.hypot(dy, dx)
        inside = dist < body * (1 + bump)
        rho_body = dist / body
        thick = 1.0 + (c.height * (1 - c.rounding) + c.rounding * max(3.0, 0.4 * r_body) - 1.0) * np.power(
            np.clip(1 - rho_body * rho_body, 0, 1), 0.8)
        zb = c.z0 + c.tilt[0] * dy + c.tilt[1] * dx
        lo = np.floor(zb + 0.5)
        hi = np.floor(zb + thick + 0.5)
        z = np.arange(nz, dtype=np.float32)[:, None, None]
        m = inside[None] & (z >= lo[None]) & (z < hi[None])
        core = m & (rho_body < 0.45)[None]
        return (slice(y0, y1), slice(x0, x1)), m, core

    def frame(self, t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Advance to frame ``t`` (called with t = 0, 1, 2, ...) and rasterise: (labels, per-label properties)."""
        if t != self.t + 1:
            raise ValueError("frames must be requested in order")
        if t > 0:
            self._step(t)
        self.t = t
        lab = np.zeros(self.shape, np.int32)
        masks = [(c, *self._mask(c)) for c in self.cells]
        for c, box, _, core in masks:
            view = lab[:, box[0], box[1]]
            view[core & (view == 0)] = c.id
        for c, box, m, _ in masks:
            view = lab[:, box[0], box[1]]
            view[m & (view == 0)] = c.id
        gone = self.tracks.observe(t, [c.id for c in self.cells], lab)
        self.cells = [c for c in self.cells if c.id not in gone]
        props = _props(self.tracks.next_id, {c.id: (c.level * (1 + 0.4 * c.rounding), c.rim) for c in self.cells})
        return lab, props


def _props(n: int, d: dict[int, tuple[float, bool]]) -> dict[str, np.ndarray]:
    level = np.zeros(n + 1, np.float32)
    rim = np.zeros(n + 1, np.float32)
    for i, (lv, r) in d.items():
        level[i], rim[i] = lv, float(r)
    return {"level": level, "rim": rim}


class _TRICSim:
    """Dense nuclei on a curved sheet: RSA centres, Voronoi-clipped noisy blobs, tissue flow, divisions."""

    def __init__(self, shape: tuple[int, int, int], seed: int, params: FamilyBParams) -> None:
        self.shape, self.seed, self.params = shape, seed, params
        self.tracks = _Tracks()
        nz, ny, nx = shape
        rng = _rng(seed, "layout")
        # embryo region and patchy density: smooth noise fields on a coarse grid (cheap at any frame size)
        cy, cx = max(8, ny // 32), max(8, nx // 32)
        self._region_coarse = _fourier_noise(rng, (cy, cx), (1.0, 1.0), 3.0, 8.0, 1.5)
        self._dens_coarse = _fourier_noise(rng, (cy, cx), (1.0, 1.0), 2.0, 6.0, 1.0)
        self.ay, self.ax = rng.uniform(0.40, 0.47) * ny, rng.uniform(0.40, 0.47) * nx
        self.cy, self.cx = ny / 2 + rng.normal(0, 0.02 * ny), nx / 2 + rng.normal(0, 0.02 * nx)
        self.sheet_tilt = rng.normal(0, 1.0, 2)
        self.ripple = (rng.uniform(0.3, 0.8), rng.uniform(2, 4) * 2 * np.pi / ny, rng.uniform(-np.pi, np.pi))
        self.d0 = 11.5 / math.sqrt(max(params.density, 1.0))
        pts = self._rsa(rng, target=params.density)
        n = len(pts)
        self.yx = pts
        self.ids = np.array([self.tracks.new(0) for _ in range(n)], np.int64)
        self.rad = rng.uniform(5.8, 7.8, n)
        self.elong = rng.uniform(1.0, 1.35, n)
        self.angle = rng.uniform(0, np.pi, n)
        self.hz = rng.uniform(1.1, 1.9, n)
        self.dz = rng.normal(0, 0.5, n)
        self.level = rng.lognormal(0, 0.3, n)
        self.rim = rng.uniform(0, 1, n) < 0.15
        self.fresh = np.zeros(n)
        self.t = -1

    def _field(self, coarse: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        _, ny, nx = self.shape
        cy, cx = coarse.shape
        return ndi.map_coordinates(coarse, [y * (cy - 1) / max(ny - 1, 1), x * (cx - 1) / max(nx - 1, 1)],
                                   order=1, mode="nearest")

    def region(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Signed embryo field (> 0 inside) at points (y, x)."""
        e = 1 - np.square((y - self.cy) / self.ay) - np.square((x - self.cx) / self.ax)
        return e + 0.18 * self._field(self._region_coarse, y, x)

    def sheet(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Height (slice) of the curved sheet at (y, x): a dome with a tilt and ripples."""
        nz, ny, nx = self.shape
        u, v = (y - self.cy) / (0.6 * ny), (x - self.cx) / (0.6 * nx)
        amp, k, ph = self.ripple
        z = 2.8 + 6.5 * np.clip(1 - u * u - v * v, 0, 1) + self.sheet_tilt[0] * u + self.sheet_tilt[1] * v
        return np.clip(z + amp * np.sin(k * y + ph), 2.0, nz - 3.0)

    def _rsa(self, rng: np.random.Generator, target: float) -> np.ndarray:
        """Random sequential adsorption in vectorised rounds, thinned by the patchy density field."""
        _, ny, nx = self.shape
        d = self.d0
        n_goal = int(0.66 * math.pi * self.ay * self.ax / 11.5**2 * target)
        acc = np.zeros((0, 2))
        for _ in range(12):
            m = int(1.5 * max(n_goal - len(acc), 0)) + 64
            c = rng.uniform([0, 0], [ny, nx], (m, 2))
            keep = self.region(c[:, 0], c[:, 1]) > 0.02
            keep &= rng.uniform(0, 1, m) < np.clip(0.75 + 0.35 * self._field(self._dens_coarse, c[:, 0], c[:, 1]),
                                                   0.15, 1)
            c = c[keep]
            if len(acc):
                dist, _ = cKDTree(acc).query(c, k=1, distance_upper_bound=d)
                c = c[~np.isfinite(dist)]
            if len(c) > 1:
                pairs = cKDTree(c).query_pairs(d, output_type="ndarray")
                bad = np.zeros(len(c), bool)
                bad[pairs.max(axis=1)] = True
                c = c[~bad]
            acc = np.concatenate([acc, c[: max(n_goal - len(acc), 0)]])
            if len(acc) >= n_goal:
                break
        return acc

    def _step(self, t: int) -> None:
        rng = _rng(self.seed, "motion", t)
        _, ny, nx = self.shape
        y, x = self.yx[:, 0], self.yx[:, 1]
        # convergent extension: drift towards the long midline, spreading along y
        vy = 0.8 * (y - self.cy) / self.ay
        vx = -1.0 * (x - self.cx) / self.ax
        self.yx = self.yx + np.stack([vy, vx], 1) + rng.normal(0, 0.6, self.yx.shape)
        self.dz += rng.normal(0, 0.1, len(self.dz))
        self.angle += rng.normal(0, 0.1, len(self.angle))
        self.fresh *= 0.4
        # divisions
        div = np.flatnonzero(rng.uniform(0, 1, len(self.ids)) < 0.006)
        keep = np.ones(len(self.ids), bool)
        new_rows = []
        for i in div:
            a = rng.uniform(0, np.pi)
            off = 0.42 * self.d0 * np.array([math.sin(a), math.cos(a)])
            keep[i] = False
            for s in (1, -1):
                new_rows.append((self.tracks.new(t, int(self.ids[i])), self.yx[i] + s * off, 0.82 * self.rad[i],
                                 1.05, a, self.hz[i], self.dz[i], 1.25 * self.level[i], self.rim[i]))
        if new_rows:
            cols = list(zip(*new_rows, strict=True))
            self.ids = np.concatenate([self.ids[keep], np.array(cols[0], np.int64)])
            self.yx = np.concatenate([self.yx[keep], np.array(cols[1])])
            self.rad = np.concatenate([self.rad[keep], cols[2]])
            self.elong = np.concatenate([self.elong[keep], cols[3]])
            self.angle = np.concatenate([self.angle[keep], cols[4]])
            self.hz = np.concatenate([self.hz[keep], cols[5]])
            self.dz = np.concatenate([self.dz[keep], cols[6]])
            self.level = np.concatenate([self.level[keep], cols[7]])
            self.rim = np.concatenate([self.rim[keep], np.array(cols[8], bool)])
            self.fresh = np.concatenate([self.fresh[keep], np.ones(len(new_rows))])
        self.rad = np.where(self.fresh < 0.05, np.minimum(self.rad * 1.03, 7.8), self.rad)
        # pairwise repulsion keeps the packing
        pairs = cKDTree(self.yx).query_pairs(0.75 * self.d0, output_type="ndarray")
        if len(pairs):
            d = self.yx[pairs[:, 0]] - self.yx[pairs[:, 1]]
            dist = np.hypot(d[:, 0], d[:, 1])[:, None] + 1e-6
            push = 0.25 * (0.75 * self.d0 - dist) * d / dist
            np.add.at(self.yx, pairs[:, 0], push)
            np.add.at(self.yx, pairs[:, 1], -push)
        inside = (self.region(self.yx[:, 0], self.yx[:, 1]) > -0.05) & (self.yx[:, 0] >= 0) & (
            self.yx[:, 0] < ny) & (self.yx[:, 1] >= 0) & (self.yx[:, 1] < nx)
        self._keep(inside)

    def _keep(self, m: np.ndarray) -> None:
        for name in ("ids", "yx", "rad", "elong", "angle", "hz", "dz", "level", "rim", "fresh"):
            setattr(self, name, getattr(self, name)[m])

    def frame(self, t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Advance to frame ``t`` and rasterise: (labels, per-label properties)."""
        if t != self.t + 1:
            raise ValueError("frames must be requested in order")
        if t > 0:
            self._step(t)
        self.t = t
        nz, ny, nx = self.shape
        rng = _rng(self.seed, "shape", t)
        lab2d = np.zeros((ny, nx), np.int32)
        zc = np.zeros((ny, nx), np.float32)
        hz = np.zeros((ny, nx), np.float32)
        noise = _fourier_noise(rng, (ny, nx), (1.0, 1.0), 2.0, 12.0, 3.5)
        tree = cKDTree(self.yx)
        rmax = float(self.rad.max(initial=1) * 1.5 + 2)
        for y0 in range(0, ny, 256):  # rows in blocks to bound memory
            y1 = min(ny, y0 + 256)
            gy, gx = np.mgrid[y0:y1, 0:nx]
            pts = np.stack([gy.ravel(), gx.ravel()], 1).astype(np.float64)
            dist, idx = tree.query(pts, k=1, distance_upper_bound=rmax, workers=2)
            ok = np.isfinite(dist)
            j = idx[ok]
            d = pts[ok] - self.yx[j]
            ca, sa = np.cos(self.angle[j]), np.sin(self.angle[j])
            u = (d[:, 0] * ca + d[:, 1] * sa) / (self.rad[j] * self.elong[j])
            v = (-d[:, 0] * sa + d[:, 1] * ca) * self.elong[j] / self.rad[j]
            q = np.sqrt(u * u + v * v) + 0.15 * noise[y0:y1].ravel()[ok] * np.clip(np.sqrt(u * u + v * v), 0, 1)
            inn = q < 1
            flat = np.flatnonzero(ok)[inn]
            jj = j[inn]
            blk = lab2d[y0:y1].reshape(-1)
            blk[flat] = self.ids[jj]
            py, px = pts[ok][inn].T
            zc[y0:y1].reshape(-1)[flat] = self.sheet(py, px) + self.dz[jj]
            hz[y0:y1].reshape(-1)[flat] = self.hz[jj] * (1 + 0.6 * self.fresh[jj]) * np.sqrt(
                np.clip(1 - q[inn] ** 2, 0, 1)) + 0.5
        zc = np.clip(zc, 0.5, nz - 1.5)
        lab = np.zeros(self.shape, np.int32)
        for z in range(nz):
            lab[z] = np.where(np.abs(np.float32(z) - zc) <= hz, lab2d, 0)
        gone = self.tracks.observe(t, self.ids.tolist(), lab)
        if gone:
            self._keep(~np.isin(self.ids, np.fromiter(gone, np.int64)))
        props = _props(self.tracks.next_id, {int(i): (float(lv * (1 + 0.5 * f)), bool(r)) for i, lv, f, r in
                                              zip(self.ids, self.level, self.fresh, self.rim, strict=True)})
        return lab, props


class _A549Sim:
    """One large A549 cell: zero level set of a sphere plus morphing smooth noise plus blebs."""

    def __init__(self, shape: tuple[int, int, int], seed: int, params: FamilyBParams) -> None:
        self.shape, self.seed = shape, seed
        self.tracks = _Tracks()
        self.id = self.tracks.new(0)
        rng = _rng(seed, "layout")
        self.spacing = (1.0, 0.126, 0.126)  # micrometres (z, y, x)
        self.n1 = _fourier_noise(rng, shape, self.spacing, 3.0, 14.0, 4.0)
        self.n2 = _fourier_noise(rng, shape, self.spacing, 3.0, 14.0, 4.0)
        nz, ny, nx = shape
        ext = np.array([nz, ny * 0.126, nx * 0.126])
        self.c0 = ext / 2 + rng.normal(0, [0.3, 1.0, 1.0])
        base = 0.31 * min(ext[1], ext[2])
        self.axes = np.array([min(0.34 * ext[0], 11.0) * rng.uniform(0.85, 1.05), base * rng.uniform(1.05, 1.3),
                              base * rng.uniform(0.8, 0.95)])
        self.theta = float(rng.uniform(0, np.pi))  # in-plane direction of the long axis
        self.drift = rng.normal(0, [0.08, 0.25, 0.25], (2, 3))
        nb = int(rng.integers(4, 9))
        dirs = rng.normal(0, 1, (nb, 3))
        dirs[:, 0] *= 0.6
        self.bleb_dir = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        self.bleb_r = rng.uniform(1.2, 2.6, nb)
        self.bleb_t = rng.uniform(-5, 35, nb)
        self.bleb_life = rng.uniform(4, 14, nb)
        self.level = float(rng.lognormal(0, 0.1))
        self.t = -1

    def frame(self, t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Labels of frame ``t`` (any order; the cell is a pure function of t) and per-label properties."""
        self.t = t
        nz, ny, nx = self.shape
        c = self.c0 + self.drift[0] * math.sin(0.21 * t) * 4 + self.drift[1] * t * 0.5
        z = (np.arange(nz, dtype=np.float32) * self.spacing[0] - c[0])[:, None, None]
        y = (np.arange(ny, dtype=np.float32) * self.spacing[1] - c[1])[None, :, None]
        x = (np.arange(nx, dtype=np.float32) * self.spacing[2] - c[2])[None, None, :]
        ct, st = np.float32(math.cos(self.theta)), np.float32(math.sin(self.theta))
        y, x = y * ct + x * st, x * ct - y * st  # cell frame: y along the long axis
        r = np.sqrt(np.square(z / self.axes[0]) + np.square(y / self.axes[1]) + np.square(x / self.axes[2]))
        w = 0.13 * t
        phi = 1 - r + np.float32(0.09) * (np.float32(math.cos(w)) * self.n1 + np.float32(math.sin(w)) * self.n2)
        for dvec, br, bt, life in zip(self.bleb_dir, self.bleb_r, self.bleb_t, self.bleb_life, strict=True):
            s = math.exp(-0.5 * ((t - bt) / (0.5 * life)) ** 2)
            if s < 0.1:
                continue
            p = dvec * self.axes * 0.97
            d = np.sqrt(np.square(z - p[0]) + np.square(y - p[1]) + np.square(x - p[2]))
            phi = np.maximum(phi, np.float32(s) * (1 - d / np.float32(br * (0.6 + 0.4 * s))))
        inside = phi > 0
        lab_c, n = ndi.label(inside)
        if n > 1:
            sizes = np.bincount(lab_c.ravel())
            sizes[0] = 0
            inside = lab_c == int(np.argmax(sizes))
        inside = ndi.binary_fill_holes(inside)
        lab = inside.astype(np.int32) * self.id
        self.tracks.observe(t, [self.id], lab)
        props = _props(self.tracks.next_id, {self.id: (self.level, True)})
        # a dim nucleus inside the cell (dark region of the cytoplasmic stain)
        rn = np.sqrt(np.square((z - 0.1 * self.axes[0]) / (0.45 * self.axes[0])) + np.square(y / (0.42 * self.axes[1]))
                     + np.square((x + 0.1 * self.axes[2]) / (0.5 * self.axes[2])))
        props["dark"] = np.clip(1.5 * (1 - rn), 0, 1).astype(np.float32)
        return lab, props


# ------------------------------------------------------------------------------------------- rendering
def _rim_mask(lab: np.ndarray) -> np.ndarray:
    """Boundary voxels of every label in-plane (2D per slice)."""
    fp = np.zeros((1, 3, 3), bool)
    fp[0, 1, :] = fp[0, :, 1] = True
    return (lab > 0) & (ndi.grey_erosion(lab, footprint=fp) != lab)


def _debris(rng: np.random.Generator, lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright unlabelled specks outside the cells: (amplitude volume, mask of the speck cores)."""
    nz, ny, nx = lab.shape
    vol = np.zeros(lab.shape, np.float32)
    core = np.zeros(lab.shape, bool)
    placed = 0
    for _ in range(20 * n):
        if placed >= n:
            break
        z, y, x = int(rng.integers(0, nz)), int(rng.integers(4, ny - 4)), int(rng.integers(4, nx - 4))
        r = 6
        box = (slice(max(0, z - 1), z + 2), slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        if lab[box].any():
            continue
        sig = rng.uniform(0.6, 1.6)
        amp = rng.uniform(1.5, 4.0)
        gy, gx = np.mgrid[-3:4, -3:4]
        blob = np.exp(-(gy * gy + gx * gx) / (2 * sig * sig)).astype(np.float32)
        ys, xs = slice(y - 3, y + 4), slice(x - 3, x + 4)
        vol[z, ys, xs] += amp * blob
        if z + 1 < nz:
            vol[z + 1, ys, xs] += 0.3 * amp * blob
        core[z, ys, xs] |= blob > 0.5
        placed += 1
    return vol, core


def _render(prof: _ProfileB, lab: np.ndarray, props: dict[str, np.ndarray], params: FamilyBParams, t: int,
            seed: int, parts: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw frame of ``lab`` (dtype of the profile); with ``parts`` also the expected image and debris mask."""
    lk = prof.look
    nz, ny, nx = lab.shape
    rng_tex = _rng(seed, "texture", t)
    # fluorophore density
    dens = props["level"][lab]
    fg = lab > 0
    if params.texture > 0:
        lo, hi = lk.pink_band
        pink = _fourier_noise(rng_tex, lab.shape, (2.0, 1.0, 1.0), 1.0, lo, hi)
        pink *= np.float32(params.texture * lk.pink)
        pink += 1
        dens *= np.maximum(pink, np.float32(0.05), out=pink)
        del pink
        # granules (upper tail) and dark holes (lower tail) of one band-pass field, computed in place
        spots = _fourier_noise(rng_tex, lab.shape, (2.0, 1.0, 1.0), 0.0, 4.0, 0.8)
        fac = np.where(spots > 2.2, 1 + np.float32(params.texture * lk.granules) * (spots - np.float32(2.2)),
                       np.float32(1.0))
        dens *= fac
        np.subtract(-spots, np.float32(1.9), out=spots)
        np.maximum(spots, 0, out=spots)
        spots *= np.float32(-params.texture * lk.holes)
        spots += 1
        dens *= np.maximum(spots, np.float32(0.15), out=spots)
        del spots, fac
        rim = _rim_mask(lab) & (props["rim"][lab] > 0)
        dens[rim] *= np.float32(1 + params.texture * lk.rim)
        if "dark" in props:
            dens *= 1 - np.float32(min(1.0, 0.55 * params.texture)) * props["dark"]
    dens[~fg] = 0
    depth = np.exp(-lk.attenuation * np.arange(nz, dtype=np.float32))[:, None, None]
    dens *= depth * np.float32(math.exp(-lk.bleach * t))
    n_deb = max(1, int(round(lk.debris * ny * nx / (prof.shape("01", False)[1] * prof.shape("01", False)[2]))))
    deb, deb_core = _debris(_rng(seed, "debris", t), lab, n_deb)
    dens += deb
    del deb
    # optics
    sig = _apply_psf(dens, lk.optics, params.z_blur)
    if params.bg_gradient > 0:
        sig += np.float32(lk.haze * params.bg_gradient) * _haze(dens, lk.optics, params.z_blur)
    del dens
    sig *= np.float32(lk.cell_adu * params.brightness)
    # illumination and background
    rb = _rng(seed, "background", 0)
    yy = (np.arange(ny, dtype=np.float32) / ny - 0.5)[:, None]
    xx = (np.arange(nx, dtype=np.float32) / nx - 0.5)[None, :]
    oy, ox = rb.uniform(-0.2, 0.2, 2)
    g = params.bg_gradient
    illum = np.clip(1 - np.float32(lk.vignette * g) * (np.square(yy - oy) + np.square(xx - ox)) * 2, 0.2, None)
    ang = rb.uniform(0, 2 * np.pi)
    illum = illum * (1 + np.float32(lk.ramp * g) * (math.cos(ang) * yy + math.sin(ang) * xx))
    cy, cx = max(6, ny // 64), max(6, nx // 64)
    struct = _fourier_noise(rb, (cy, cx), (1.0, 1.0), 3.0, 6.0, 1.0)
    struct = ndi.zoom(struct, (ny / cy, nx / cx), order=1, grid_mode=True, mode="nearest")[:ny, :nx]
    floor = np.float32(lk.floor_adu) * np.clip(1 + np.float32(lk.structure * g) * struct, 0.2, None)
    zprof = np.linspace(1.0, 1 + 0.2 * min(g, 3), nz, dtype=np.float32)[:, None, None]
    expected = (sig + floor[None] * zprof) * illum[None].astype(np.float32)
    del sig
    # camera: sCMOS maps fixed for the sequence, photons per grey value set by the photon budget
    rf = _rng(seed, "camera_fixed", 0)
    gain = (1 + rf.normal(0, 0.015, (ny, nx))).astype(np.float32)
    offset = (lk.offset_adu + rf.normal(0, 0.4, (ny, nx))).astype(np.float32)
    read_e = (lk.read_e * rf.lognormal(0, 0.35, (ny, nx))).astype(np.float32)
    ppa = np.float32(lk.photons * params.snr / lk.cell_adu)  # photons per grey value
    rc = _rng(seed, "camera", t)
    photons = rc.poisson(np.maximum(expected, 0) * ppa).astype(np.float32)
    img = photons / ppa
    del photons
    img *= gain[None]
    img += rc.standard_normal(img.shape, dtype=np.float32) * (read_e / ppa)[None]
    img += offset[None]
    top = float(np.iinfo(lk.dtype).max)
    knee = 0.8 * top
    over = img > knee
    img[over] = knee + (top - knee) * np.tanh((img[over] - knee) / (top - knee))
    raw = np.clip(np.rint(img), 0, top).astype(lk.dtype)
    extra: dict[str, np.ndarray] = {}
    if parts:
        extra = {"expected": expected + offset[None], "debris": deb_core, "offset": offset}
    return raw, extra


# ------------------------------------------------------------------------------------------- profiles table
PROFILE_B_DEFS: dict[str, _ProfileB] = {
    "MDA231": _ProfileB(
        key="MDA231", shape=lambda seq, small: (30, 512, 512), default_frames=12, gt="slices",
        look=_Look(dtype="uint8", cell_adu=95.0, offset_adu=6.0, floor_adu=7.0, photons=45.0, read_e=2.0,
                   pink=0.35, pink_band=(40.0, 1.5), granules=0.5, holes=0.6, rim=0.6,
                   vignette=0.5, ramp=0.35, structure=0.35, haze=0.35, attenuation=0.012, bleach=0.01, debris=6,
                   optics=_Optics(cutoff=0.45, gamma_z=0.5, defocus_w=0.35, defocus_xy=2.0, defocus_z=1.2,
                                  haze_xy=25.0, haze_z=3.0))),
    "TRIC": _ProfileB(
        key="TRIC", shape=lambda seq, small: (13, 700, 1000) if small else (
            (13, 2454, 1693) if seq == "01" else (13, 1745, 2440)), default_frames=65, gt="sparse_slices",
        look=_Look(dtype="uint8", cell_adu=110.0, offset_adu=5.0, floor_adu=9.0, photons=35.0, read_e=1.8,
                   pink=0.3, pink_band=(10.0, 0.9), granules=0.6, holes=0.7, rim=0.35,
                   vignette=0.45, ramp=0.3, structure=0.3, haze=0.45, attenuation=0.02, bleach=0.004, debris=120,
                   optics=_Optics(cutoff=0.4, gamma_z=0.6, defocus_w=0.3, defocus_xy=1.8, defocus_z=1.5,
                                  haze_xy=30.0, haze_z=2.5))),
    "A549-SIM": _ProfileB(
        key="A549-SIM", shape=lambda seq, small: (37, 300, 400) if seq == "02" else (29, 300, 350),
        default_frames=30, gt="full",
        look=_Look(dtype="uint16", cell_adu=2200.0, offset_adu=400.0, floor_adu=160.0, photons=140.0, read_e=1.6,
                   pink=0.3, pink_band=(60.0, 2.0), granules=0.7, holes=0.4, rim=0.45,
                   vignette=0.4, ramp=0.3, structure=0.3, haze=0.3, attenuation=0.006, bleach=0.006, debris=3,
                   optics=_Optics(cutoff=0.22, gamma_z=1.0, defocus_w=0.35, defocus_xy=4.0, defocus_z=2.5,
                                  haze_xy=40.0, haze_z=4.0))),
}
_SIMS = {"MDA231": _MDASim, "TRIC": _TRICSim, "A549-SIM": _A549Sim}


def _profile_b(name: str) -> _ProfileB:
    key = get_dataset(name).key
    if key not in PROFILE_B_DEFS:
        raise ValueError(f"family B has no profile {name!r}; known: {', '.join(PROFILES_B)}")
    return PROFILE_B_DEFS[key]


def _resolve(params: FamilyBParams, condition: str | None) -> FamilyBParams:
    if condition is None:
        return params
    if condition not in CONDITIONS:
        raise ValueError(f"unknown family B condition {condition!r}; known: {', '.join(CONDITIONS)}")
    if params != FamilyBParams():
        raise ValueError("give either params or condition, not both")
    return CONDITIONS[condition]


def _frames_b(prof: _ProfileB, seq: str, small: bool, seed: int, params: FamilyBParams, n: int, parts: bool = False):
    """Yield (t, raw, uint16 labels, internals, simulator) for t = 0..n-1; the simulator holds the tracks."""
    sim = _SIMS[prof.key](prof.shape(seq, small), seed, params)
    for t in range(n):
        lab, props = sim.frame(t)
        raw, extra = _render(prof, lab, props, params, t, seed, parts=parts)
        yield t, raw, lab.astype(np.uint16), extra, sim


def _frame_parts_b(profile: str, seed: int = 0, small: bool = False, params: FamilyBParams = FamilyBParams(),
                   seq: str = "01") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Frame 0 with its internals (``expected`` noise-free grey values, ``debris`` mask) for tests."""
    prof = _profile_b(profile)
    _, raw, lab, extra, _ = next(_frames_b(prof, seq, small, seed, params, 1, parts=True))
    return raw, lab, extra


def frame_b(profile: str, seed: int = 0, small: bool = False, params: FamilyBParams = FamilyBParams()
            ) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 of sequence 01 (raw, uint16 3D labels) without writing files; equals ``generate_b``'s t000."""
    prof = _profile_b(profile)
    _, raw, lab, _, _ = next(_frames_b(prof, "01", small, seed, params, 1))
    return raw, lab


def _gold_b(lab: np.ndarray, rng: np.random.Generator, sparse: bool) -> dict[int, np.ndarray]:
    """2-3 annotated slices with enough foreground: every object of >= 10 pixels in the slice (MDA231), or a
    ~35 % subset of the objects of >= 15 pixels (TRIC, sparse like the real gold truth)."""
    nz = lab.shape[0]
    area = np.count_nonzero(lab.reshape(nz, -1), axis=1)
    cand = np.flatnonzero(area >= 0.3 * area.max()) if area.max() else np.arange(nz)
    zs = np.sort(rng.choice(cand, size=min(len(cand), int(rng.integers(2, 4))), replace=False))
    out = {}
    for z in zs.tolist():
        sl = lab[z]
        counts = np.bincount(sl.ravel())
        ids = np.flatnonzero(counts >= (15 if sparse else 10))
        ids = ids[ids > 0]
        if sparse:
            ids = ids[rng.uniform(0, 1, ids.size) < 0.35]
        out[int(z)] = np.where(np.isin(sl, ids), sl, 0).astype(np.uint16)
    return out


def generate_b(profile: str, out_root: str | os.PathLike, seq: str = "01", frames: int | None = 6, seed: int = 0,
               small: bool = False, params: FamilyBParams = FamilyBParams(), condition: str | None = None) -> Path:
    """Write family-B sequence ``seq`` of ``profile`` under ``out_root`` in CTC layout; return the dataset folder.

    ``condition`` (``default``, ``dim``, ``bright``) selects a preset of :data:`CONDITIONS` instead of ``params``.
    """
    prof = _profile_b(profile)
    params = _resolve(params, condition)
    n = 6 if frames is None else int(frames)
    if n < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not (seq.isdigit() and len(seq) == 2):
        raise ValueError(f"seq must be two digits like 01, got {seq!r}")
    ds = Path(out_root) / get_dataset(prof.key).ctc_name
    sequences = claim_folder(ds, seq, "B", _GENERATOR, _NOTE)
    out, sim = SequenceWriter(ds, seq, n), None
    for t, raw, lab, _, sim in progress(_frames_b(prof, seq, small, seed, params, n), total=n,
                                        desc=f"synth-b {prof.key} {seq}", unit="frame"):
        gold = None if prof.gt == "full" else _gold_b(lab, _rng(seed, "gold", t), sparse=prof.gt == "sparse_slices")
        out.frame(t, raw, lab, None if gold is None else gold.items())
    out.tracks(sim.tracks.text())
    counts = out.objects_per_frame
    record_sequence(ds, "B", _GENERATOR, _NOTE, sequences, seq, {
        "profile": prof.key, "seed": seed, "frames": n, "small": small, "shape": list(sim.shape),
        "dtype": prof.look.dtype, "params": asdict(params), "condition": condition, "version": FAMILY_B_VERSION,
        "tracks": len(sim.tracks.rec), "objects_per_frame": counts, "gold_objects": out.gold_objects,
    })
    log.info("family B %s %s: %d frames %s, %d tracks, %d-%d objects per frame", prof.key, seq, n, sim.shape,
             len(sim.tracks.rec), min(counts), max(counts))
    return ds
