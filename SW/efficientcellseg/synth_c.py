"""Family C synthetic CTC data: a third image model, written independently, for validation only.

Family C shares no code and no construction with family A (``synth``, the training data) or family B
(``synth_b``); nothing was tuned on it. It exists to check how models trained on family A fare on images
made in a different way. Never train, tune thresholds or pick models on family-C data.

How a frame is made (all sizes in pixels of the profile's grid):

* **Shapes.** MDA231: each cell is a metaball, the level set ``F = 0.5`` of a sum of 3-7 anisotropic 3D
  Gaussian blobs, plus 0-4 filopodia (tapered tubes along short segments leaving the body); bodies are
  flattened and cut flat on a slightly tilted substrate plane. TRIC: nuclei are randomly rotated ellipsoids
  centred on a bent sheet (saddle or cylinder segment) inside an irregular embryo outline; centres come from
  a jittered hexagonal grid relaxed by a few rounds of pairwise pushing, so nuclei touch; about 2% are mitotic
  (smaller, brighter, a condensed plate). A549-SIM: one metaball of 6-12 large blobs plus surface blebs,
  holes filled, largest component kept. Overlaps are resolved per voxel by the largest field (metaballs) or
  the smallest scaled distance (ellipsoids), so labels never overlap.
* **Dynamics.** Centres follow damped random-walk velocities (TRIC adds a smooth tissue flow), blob offsets
  drift slowly. No divisions: an object appears once it has a minimum number of voxels in the field (TRIC
  nuclei flow in) and ends for good when it falls below that (it left the field or was squeezed out), so
  every label is present exactly in frames ``begin..end`` of ``man_track.txt`` (parent 0).
* **Texture.** Worley (cellular) noise gives granules, random puncta (impulses blurred into small Gaussian
  spots) add bright dots, a value-noise lattice (cubic ``zoom``) modulates brightness; MDA231 cells have a
  darker nuclear region, TRIC nuclei a dim rim and a dark nucleolus, the A549 cell a bright cortex. Per-cell
  brightness is gamma distributed, so some cells are much dimmer than others.
* **Optics.** A depth-dependent "defocus cone" in real space: slice ``z`` of the image is a weighted sum over
  source offsets ``dz`` of 2D Gaussian blurs with ``sigma = s0 + k |dz|`` (``k`` from the numerical
  aperture), weights ``1 / (1 + (dz / zr)^2)`` normalised. One or two unlabelled ghost cells, very blurred
  blobs from outside the stack, are added.
* **Background.** A smooth autofluorescence level (value noise), a random 2nd-degree polynomial illumination
  field, faint unlabelled fibres (quadratic Bezier curves) and a few bright unlabelled debris specks placed
  away from the cells.
* **Camera.** EMCCD-like: Poisson photons, gamma-distributed electron multiplication (shape = photons,
  scale = gain: excess noise), Gaussian read noise, offset, a per-row fixed-pattern offset, a few hot pixels,
  then rounding and clipping to the dtype (MDA231 12-bit in uint16, TRIC uint8 with some saturation,
  A549-SIM uint16).
* **Knobs.** :class:`FamilyCParams`: ``snr`` scales the photon count (the EM gain is lowered by
  ``sqrt(snr)`` so that bright frames stay in range), ``brightness`` scales the cells' emission.
  :data:`CONDITIONS` holds the presets ``default``, ``dim`` and ``bright``.
* **Sizes.** MDA231 30x512x512, TRIC 13x2454x1693 (``small``: 13x700x1000, the size to use; the full one
  needs a few GB), A549-SIM 29x300x350; ``small`` MDA231 is 30x256x256 with proportionally fewer cells.

Every random draw comes from ``numpy.random.default_rng([salt, seed, purpose, t])``: the same seed gives
byte-identical files and frame ``t`` does not depend on how many frames were requested.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from efficientcellseg.datasets import get_dataset
from efficientcellseg.log import progress
from efficientcellseg.synth_io import SequenceWriter, claim_folder, record_sequence

log = logging.getLogger(__name__)

FAMILY_C_VERSION = 1
PROFILES_C = ("MDA231", "TRIC", "A549-SIM")
NOTE_C = "SYNTHETIC, validation only (family C): never train or tune on these data"
_GENERATOR = "efficientcellseg.synth_c"
_SALT = 0xC3FA
(_P_LAYOUT, _P_MOTION, _P_TEXTURE, _P_FIBRES, _P_GHOSTS, _P_DEBRIS, _P_BACKGROUND, _P_FIXED, _P_CAMERA,
 _P_GT) = range(1, 11)
_LEVEL = 0.5  # metaball threshold
_F32 = np.float32


@dataclass(frozen=True)
class FamilyCParams:
    """Imaging knobs: ``snr`` multiplies the photon count, ``brightness`` the cells' emission (both > 0)."""

    snr: float = 1.0
    brightness: float = 1.0

    def __post_init__(self) -> None:
        for name in ("snr", "brightness"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"FamilyCParams.{name} must be a finite number > 0, got {v!r}")


CONDITIONS: dict[str, FamilyCParams] = {
    "default": FamilyCParams(),
    "dim": FamilyCParams(snr=0.25, brightness=0.6),
    "bright": FamilyCParams(snr=4.0, brightness=1.25),
}


@dataclass(frozen=True)
class _Profile:
    """Geometry, optics and camera of one profile (emission in units of a mean cell = 1)."""

    key: str
    shape: tuple[int, int, int]
    small: tuple[int, int, int]
    dtype: type
    max_adu: int
    um: tuple[float, float]  # z step, xy pixel (µm)
    na: float
    n_imm: float
    reach: int  # defocus cone: source slices on each side
    grain_px: float  # Worley feature spacing
    grain_down: int  # Worley is computed on a grid this much coarser in y, x
    grain_amp: float
    mod_cell: tuple[int, int, int]  # value-noise lattice spacing (z, y, x)
    puncta_per: int  # one punctum per this many cell voxels
    n_fibres: tuple[int, int]
    n_debris: tuple[int, int]
    ghost_px: float
    background: float  # autofluorescence, emission units
    photons: float  # photons per voxel for emission 1 at snr 1
    em_gain: float
    read_e: float  # read noise, electrons
    adu_unit: float  # ADU for emission 1 at snr 1
    offset: float
    banding: float  # std of the per-row offset, ADU
    min_voxels: int  # smaller labels end their track
    gt_min_px: int
    gt_fraction: float  # share of qualifying objects per GT slice; 0 = full 3D GT

    @property
    def zscale(self) -> float:
        return self.um[0] / self.um[1]

    def cone(self) -> tuple[float, float, float]:
        """(s0 px, k px per slice, zr slices) of the defocus cone for 520 nm light."""
        half_angle = math.asin(self.na / self.n_imm)
        s0 = max(0.6, 0.21 * 0.52 / self.na / self.um[1])
        k = 0.5 * math.tan(half_angle) * self.zscale
        zr = max(0.5, self.n_imm * 0.52 / self.na ** 2 / self.um[0])
        return s0, k, zr


_PROFILES = {
    "MDA231": _Profile(
        key="MDA231", shape=(30, 512, 512), small=(30, 256, 256), dtype=np.uint16, max_adu=4095,
        um=(6.0, 1.242), na=0.4, n_imm=1.0, reach=3, grain_px=5.0, grain_down=2, grain_amp=0.5,
        mod_cell=(6, 48, 48), puncta_per=400, n_fibres=(3, 7), n_debris=(4, 10), ghost_px=35.0, background=0.08,
        photons=80.0, em_gain=60.0, read_e=50.0, adu_unit=700.0, offset=100.0, banding=3.0, min_voxels=60,
        gt_min_px=10, gt_fraction=1.0),
    "TRIC": _Profile(
        key="TRIC", shape=(13, 2454, 1693), small=(13, 700, 1000), dtype=np.uint8, max_adu=255,
        um=(1.0, 1.0), na=1.0, n_imm=1.33, reach=3, grain_px=3.0, grain_down=2, grain_amp=0.45,
        mod_cell=(4, 64, 64), puncta_per=150, n_fibres=(1, 3), n_debris=(6, 14), ghost_px=40.0, background=0.1,
        photons=40.0, em_gain=40.0, read_e=40.0, adu_unit=80.0, offset=6.0, banding=0.8, min_voxels=20,
        gt_min_px=15, gt_fraction=0.35),
    "A549-SIM": _Profile(
        key="A549-SIM", shape=(29, 300, 350), small=(29, 300, 350), dtype=np.uint16, max_adu=65535,
        um=(1.0, 0.126), na=1.2, n_imm=1.33, reach=4, grain_px=10.0, grain_down=4, grain_amp=0.4,
        mod_cell=(6, 60, 60), puncta_per=2000, n_fibres=(1, 2), n_debris=(2, 5), ghost_px=60.0, background=0.06,
        photons=150.0, em_gain=50.0, read_e=50.0, adu_unit=5000.0, offset=400.0, banding=20.0, min_voxels=500,
        gt_min_px=1, gt_fraction=0.0),
}


def _rng(seed: int, purpose: int, t: int = 0) -> np.random.Generator:
    return np.random.default_rng([_SALT, int(seed), purpose, int(t)])


# ---------------------------------------------------------------- fields and textures


def _blob_field(zz: np.ndarray, yy: np.ndarray, xx: np.ndarray, blobs: np.ndarray) -> np.ndarray:
    """Sum of ``w exp(-q/2)`` over blobs; rows z, y, x, sz, sa, sb, angle, w (sa, sb rotated in y-x)."""
    field = np.zeros(np.broadcast_shapes(zz.shape, yy.shape, xx.shape), _F32)
    for z, y, x, sz, sa, sb, ang, w in blobs.tolist():
        dy, dx = yy - _F32(y), xx - _F32(x)
        c, s = _F32(math.cos(ang)), _F32(math.sin(ang))
        q = ((dy * c + dx * s) / _F32(sa)) ** 2 + ((dx * c - dy * s) / _F32(sb)) ** 2
        q = q + ((zz - _F32(z)) / _F32(sz)) ** 2
        field += _F32(w) * np.exp(_F32(-0.5) * q)
    return field


def _tube(hz: np.ndarray, yy: np.ndarray, xx: np.ndarray, fil: tuple[float, ...]) -> np.ndarray:
    """Field of a filopodium: a tube along a segment whose width tapers to 30% at the tip."""
    py, px, uy, ux, length, w0, h = fil
    ry, rx = yy - _F32(py), xx - _F32(px)
    s = np.clip((ry * _F32(uy) + rx * _F32(ux)) / _F32(length), 0, 1)
    oy, ox = ry - s * _F32(length * uy), rx - s * _F32(length * ux)
    width = _F32(w0) * (1 - _F32(0.7) * s)
    q = (oy * oy + ox * ox) / (width * width) + ((hz - _F32(h)) / _F32(0.6)) ** 2
    return _F32(1.2) * np.exp(_F32(-0.5) * q)


def _upsample(a: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``zoom`` ``a`` to exactly ``shape`` (corners aligned)."""
    out = ndimage.zoom(a, [s / n for s, n in zip(shape, a.shape)], order=order, mode="nearest")
    return np.ascontiguousarray(out[tuple(slice(0, s) for s in shape)], dtype=_F32)


def _value_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: tuple[int, ...]) -> np.ndarray:
    """Smooth noise of std about 1: a Gaussian random lattice (a node per ``cell``) upsampled with order 3.

    Large 3D outputs take the cubic step on a grid 4x coarser in y, x and finish with a linear zoom (speed).
    """
    lattice = rng.standard_normal([max(2, -(-s // c) + 2) for s, c in zip(shape, cell)]).astype(_F32)
    if len(shape) == 2 or math.prod(shape) <= 2 ** 20:
        return _upsample(lattice, shape, order=3)
    mid = (shape[0],) + tuple(-(-s // 4) for s in shape[1:])
    return _upsample(_upsample(lattice, mid, order=3), shape, order=1)


def _worley(rng: np.random.Generator, shape: tuple[int, int, int], spacing: float,
            sampling: tuple[float, float, float]) -> np.ndarray:
    """Cellular (Worley F1) noise in [0, 1]: 1 at random feature points, 0 at ``spacing`` from the nearest."""
    n = int(math.prod(shape) * math.prod(sampling) / spacing ** 3) + 1
    free = np.ones(shape, bool)
    free[tuple(rng.integers(0, c, n) for c in shape)] = False
    dist = ndimage.distance_transform_edt(free, sampling=sampling).astype(_F32)
    return np.clip(1 - dist / _F32(spacing), 0, 1)


def _texture(rng: np.random.Generator, prof: _Profile, shape: tuple[int, int, int]) -> np.ndarray:
    """Cell texture around 1: granules (Worley) times a smooth value-noise modulation, made on a grid
    ``grain_down`` times coarser in y, x and upsampled once (linear)."""
    d = prof.grain_down
    coarse = (shape[0], -(-shape[1] // d), -(-shape[2] // d))
    grain = _worley(rng, coarse, prof.grain_px, (prof.zscale, d, d))
    cell = (prof.mod_cell[0], max(1, prof.mod_cell[1] // d), max(1, prof.mod_cell[2] // d))
    mod = np.clip(1 + _F32(0.35) * _value_noise(rng, coarse, cell), 0.3, None)
    return _upsample((_F32(1 - prof.grain_amp) + _F32(prof.grain_amp) * grain) * mod, shape)


def _blur_xy(a: np.ndarray, sigma: float) -> np.ndarray:
    """2D Gaussian blur of every slice; wide kernels as three box passes of equal variance (linear time)."""
    if sigma < 2.0:
        return ndimage.gaussian_filter(a, (0, sigma, sigma), truncate=3.0)
    width = int(math.sqrt(4 * sigma * sigma + 1)) | 1
    for axis in (1, 2):
        for _ in range(3):
            a = ndimage.uniform_filter1d(a, width, axis=axis)
    return a


def _defocus_cone(src: np.ndarray, s0: float, k: float, zr: float, reach: int) -> np.ndarray:
    """Slice z = sum over dz of w(dz) * blur(src[z + dz], s0 + k |dz|), w = 1 / (1 + (dz/zr)^2) normalised."""
    d = np.arange(-reach, reach + 1)
    w = 1.0 / (1.0 + (d / zr) ** 2)
    w = (w / w.sum()).astype(_F32)
    out = np.zeros_like(src)
    for dz in range(min(reach, src.shape[0] - 1) + 1):
        b = _blur_xy(src, s0 + k * dz)
        if dz == 0:
            out += w[reach] * b
        else:
            out[:-dz] += w[reach + dz] * b[dz:]
            out[dz:] += w[reach - dz] * b[:-dz]
    return out


# ---------------------------------------------------------------- scenes (labels and dynamics)


class _Scene:
    """Objects of one sequence. ``frame(t)`` advances the state frame by frame and draws the labels."""

    def __init__(self, prof: _Profile, shape: tuple[int, int, int], seed: int) -> None:
        self.prof, self.shape, self.seed = prof, shape, seed
        self._start_all()

    def _start_all(self) -> None:
        self.t = -1
        self._start()
        n = len(self.bright)
        if n > 65535:
            raise ValueError(f"{n} objects do not fit uint16 labels; use a smaller frame")
        self.alive = np.ones(n, bool)
        self.first = np.full(n, -1)
        self.last = np.full(n, -1)
        self.lut = np.concatenate([[0.0], self.bright]).astype(_F32)

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels (uint16) and shading (float32) of frame ``t``.

        An object is present once it has ``min_voxels`` in the field; a present object that falls below that
        (it left the field or was squeezed out) ends its track for good.
        """
        if t <= self.t:
            self._start_all()
        while True:
            self.t += 1
            if self.t > 0:
                self._advance(self.t)
            lab, shade = self._draw()
            counts = np.bincount(lab.ravel(), minlength=len(self.alive) + 1)[1:]
            self.alive &= (self.first < 0) | (counts >= self.prof.min_voxels)  # seen and now too small: ended
            present = self.alive & (counts >= self.prof.min_voxels)  # the others have not entered yet
            if np.any(~present & (counts > 0)):
                lab[np.isin(lab, np.flatnonzero(~present & (counts > 0)) + 1)] = 0
            self.first[present & (self.first < 0)] = self.t
            self.last[present] = self.t
            if self.t == t:
                return lab, shade

    def track_lines(self) -> str:
        """``man_track.txt``: ``label begin end parent`` for every object seen so far (no divisions)."""
        return "".join(f"{i + 1} {self.first[i]} {self.last[i]} 0\n" for i in np.flatnonzero(self.first >= 0))

    def _box(self, lo: tuple[float, ...], hi: tuple[float, ...]) -> tuple[slice, ...] | None:
        sl = tuple(slice(max(0, int(math.floor(a))), min(s, int(math.ceil(b)) + 1))
                   for a, b, s in zip(lo, hi, self.shape))
        return None if any(s.start >= s.stop for s in sl) else sl

    @staticmethod
    def _grid(sl: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.arange(s.start, s.stop, dtype=_F32).reshape([-1 if i == j else 1 for j in range(3)])
                     for i, s in enumerate(sl))

    def _start(self) -> None:
        raise NotImplementedError

    def _advance(self, t: int) -> None:
        raise NotImplementedError

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _MDAScene(_Scene):
    """8-16 migrating metaball cells with filopodia on a tilted substrate (fewer on smaller fields)."""

    def _start(self) -> None:
        Z, Y, X = self.shape
        rng = _rng(self.seed, _P_LAYOUT)
        n = max(2, round(int(rng.integers(8, 17)) * Y * X / 512 ** 2))
        self.sub = (rng.uniform(0.3, 0.5) * Z, rng.uniform(-3, 3) / Y, rng.uniform(-3, 3) / X)
        pos: list[np.ndarray] = []
        while len(pos) < n:
            p = rng.uniform([30, 30], [Y - 30, X - 30])
            if all(np.hypot(*(p - q)) > 28 for q in pos) or rng.random() < 0.05:
                pos.append(p)
        self.pos, self.vel = np.array(pos), rng.normal(0, 1.0, (n, 2))
        self.cells = []
        for _ in range(n):
            nb, axis, elong = int(rng.integers(3, 8)), rng.uniform(0, np.pi), rng.uniform(1.0, 2.5)
            along, across = rng.normal(0, 15, nb), rng.normal(0, 15 / elong, nb)
            along[0] = across[0] = 0.0  # blob 0: the body with the nucleus
            off = np.stack([along * np.sin(axis) + across * np.cos(axis),
                            along * np.cos(axis) - across * np.sin(axis)], 1)
            sa = rng.uniform(8, 15, nb)
            blobs = np.stack([rng.uniform(0.5, 1.3, nb), off[:, 0], off[:, 1], rng.uniform(0.8, 1.3, nb), sa,
                              sa * rng.uniform(0.4, 0.9, nb), axis + rng.normal(0, 0.5, nb),
                              rng.uniform(0.8, 1.2, nb)], 1)
            filo = []
            for _ in range(int(rng.integers(0, 5))):
                b, phi = int(rng.integers(nb)), rng.uniform(0, 2 * np.pi)
                u = (math.sin(phi), math.cos(phi))
                filo.append((b, u, rng.uniform(12, 35), rng.uniform(1.3, 2.0), rng.uniform(0.3, 0.6)))
            self.cells.append((blobs, filo))
        self.drift = [np.zeros((len(c[0]), 2)) for c in self.cells]
        self.bright = np.clip(rng.gamma(2.5, 1 / 2.5, n), 0.15, 4.0)

    def _advance(self, t: int) -> None:
        rng = _rng(self.seed, _P_MOTION, t)
        self.vel = 0.75 * self.vel + rng.normal(0, 0.9, self.vel.shape)
        self.pos = self.pos + self.vel
        jitter = rng.normal(0, 0.5, (sum(len(d) for d in self.drift), 2))
        k = 0
        for i, d in enumerate(self.drift):
            self.drift[i] = 0.85 * d + jitter[k:k + len(d)]
            k += len(d)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        Z, Y, X = self.shape
        z0, ty, tx = self.sub
        best = np.full(self.shape, _LEVEL, _F32)
        lab, shade = np.zeros(self.shape, np.uint16), np.ones(self.shape, _F32)
        for i in np.flatnonzero(self.alive):
            blobs, filo = self.cells[i]
            blobs = blobs.copy()
            blobs[:, 1:3] += self.pos[i] + self.drift[i]
            tubes = [(blobs[b, 1] + u[0] * blobs[b, 4] * 0.4, blobs[b, 2] + u[1] * blobs[b, 4] * 0.4,
                      u[0], u[1], length, w0, h) for b, u, length, w0, h in filo]
            ext = max([3 * float(blobs[:, 4].max())]
                      + [ln + 0.4 * blobs[b, 4] + 3 for b, _, ln, _, _ in filo])
            lo_y, hi_y = blobs[:, 1].min() - ext, blobs[:, 1].max() + ext
            lo_x, hi_x = blobs[:, 2].min() - ext, blobs[:, 2].max() + ext
            zs = [z0 + ty * (y - Y / 2) + tx * (x - X / 2) for y in (lo_y, hi_y) for x in (lo_x, hi_x)]
            sl = self._box((min(zs) - 1, lo_y, lo_x), (max(zs) + float((blobs[:, 0] + 3 * blobs[:, 3]).max()),
                                                        hi_y, hi_x))
            if sl is None:
                continue
            zz, yy, xx = self._grid(sl)
            hz = zz - (_F32(z0) + _F32(ty) * (yy - _F32(Y / 2)) + _F32(tx) * (xx - _F32(X / 2)))
            field = _blob_field(hz, yy, xx, blobs)
            for fil in tubes:
                field += _tube(hz, yy, xx, fil)
            field *= np.clip(hz + _F32(0.5), 0, 1)  # flat bottom on the substrate
            nucleus = blobs[:1].copy()
            nucleus[0, 4:6] *= 0.75  # a darker nuclear region in the body
            nucleus[0, 7] = 1.0
            win = field > best[sl]
            best[sl][win] = field[win]
            lab[sl][win] = i + 1
            shade[sl][win] = (1 - _F32(0.55) * _blob_field(hz, yy, xx, nucleus))[win]
        return lab, shade


class _TRICScene(_Scene):
    """Thousands of touching ellipsoidal nuclei on a bent sheet, drifting with a smooth tissue flow."""

    def _start(self) -> None:
        Z, Y, X = self.shape
        rng = _rng(self.seed, _P_LAYOUT)
        r0 = 6.0
        s = 2 * r0 * 0.92
        rows = np.arange(-40, Y + 40, s * math.sqrt(3) / 2)  # nuclei outside the field may flow in later
        cols = np.arange(-40, X + 40, s)
        gy, gx = np.meshgrid(rows, cols, indexing="ij")
        gx = gx + (np.arange(rows.size)[:, None] % 2) * s / 2
        p = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, 0.18 * s, (gy.size, 2))
        lattice = rng.standard_normal((8, 8))  # value noise bends the embryo outline
        v, u = (p[:, 0] - Y / 2) / (Y / 2), (p[:, 1] - X / 2) / (X / 2)
        wobble = ndimage.map_coordinates(lattice, [(v + 1) * 3.5, (u + 1) * 3.5], order=3, mode="nearest")
        ax, ay = rng.uniform(0.9, 1.25), rng.uniform(0.8, 1.15)
        p = p[(u / ax) ** 2 + (v / ay) ** 2 + 0.25 * wobble < 1]
        n = len(p)
        mitotic = rng.random(n) < 0.02
        ry = np.clip(rng.normal(r0, 0.6, n), 4.5, 8.0) * np.where(mitotic, 0.7, 1.0)
        radii = np.stack([rng.uniform(2.0, 2.8, n) * np.where(mitotic, 0.8, 1.0), ry,
                          ry * rng.uniform(0.75, 1.0, n)], 1)
        rxy = radii[:, 1:].mean(1)
        for _ in range(6):  # push overlapping neighbours apart
            i, j = cKDTree(p).query_pairs(2 * rxy.max(), output_type="ndarray").T
            d = p[j] - p[i]
            dist = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
            push = (np.clip(0.92 * (rxy[i] + rxy[j]) - dist, 0, None) / 2 / dist)[:, None] * d
            np.add.at(p, i, -push)
            np.add.at(p, j, push)
        phi, tilt = rng.uniform(0, np.pi, n), rng.normal(0, 0.25, n)
        cp, sp, ct, st = np.cos(phi), np.sin(phi), np.cos(tilt), np.sin(tilt)
        rot = np.zeros((n, 3, 3))
        rot[:, 0] = np.stack([ct, -st, 0 * ct], 1)
        rot[:, 1] = np.stack([cp * st, cp * ct, -sp], 1)
        rot[:, 2] = np.stack([sp * st, sp * ct, cp], 1)
        self.prec = np.einsum("nij,nj,nkj->nik", rot, 1 / radii ** 2, rot)
        self.normal = rot[:, :, 1]
        self.radii, self.mitotic = radii, mitotic
        self.nucleolus = rng.uniform(-0.35, 0.35, (n, 3)) * radii
        self.pos, self.vel = p, np.zeros((n, 2))
        self.flow = (rng.normal(0, 0.8, 2), rng.normal(0, 0.6, 2))
        bend = rng.uniform(1.0, 2.0, 2) * rng.choice([-1, 1], 2)
        if rng.random() < 0.5:
            bend[1] = 0.0  # cylinder segment instead of a saddle
        self.sheet = ((Z - 1) / 2 - bend.sum() / 2, bend[0], bend[1])
        self.bright = np.clip(rng.gamma(4.0, 0.25, n), 0.25, 3.0) * np.where(mitotic, 2.2, 1.0)

    def _advance(self, t: int) -> None:
        rng = _rng(self.seed, _P_MOTION, t)
        Y, X = self.shape[1:]
        self.vel = 0.7 * self.vel + rng.normal(0, 0.3, self.vel.shape)
        v = (self.pos[:, :1] - Y / 2) / (Y / 2)
        self.pos = self.pos + self.flow[0] + self.flow[1] * v + self.vel

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        Z, Y, X = self.shape
        zc, a, b = self.sheet
        u, v = (self.pos[:, 1] - X / 2) / (X / 2), (self.pos[:, 0] - Y / 2) / (Y / 2)
        cz = zc + a * u ** 2 + b * v ** 2
        best = np.ones(self.shape, _F32)
        lab, shade = np.zeros(self.shape, np.uint16), np.ones(self.shape, _F32)
        for i in np.flatnonzero(self.alive):
            c = (cz[i], self.pos[i, 0], self.pos[i, 1])
            r = float(self.radii[i].max()) + 1
            sl = self._box((c[0] - r, c[1] - r, c[2] - r), (c[0] + r, c[1] + r, c[2] + r))
            if sl is None:
                continue
            dz, dy, dx = (g - _F32(ci) for g, ci in zip(self._grid(sl), c))
            (azz, azy, azx), (_, ayy, ayx), (_, _, axx) = self.prec[i].astype(_F32)
            q = (azz * dz * dz + ayy * dy * dy + axx * dx * dx
                 + 2 * (azy * dz * dy + azx * dz * dx + ayx * dy * dx))
            win = q < best[sl]
            if not win.any():
                continue
            best[sl][win] = q[win]
            lab[sl][win] = i + 1
            if self.mitotic[i]:
                nz, ny, nx = self.normal[i].astype(_F32)
                plate = (dz * nz + dy * ny + dx * nx) / _F32(0.25 * self.radii[i, 1])
                sh = _F32(0.3) + _F32(2.0) * np.exp(_F32(-0.5) * plate * plate)
            else:
                oz, oy, ox = self.nucleolus[i].astype(_F32)
                dn = (dz - oz) ** 2 + (dy - oy) ** 2 + (dx - ox) ** 2
                sh = (1 - _F32(0.3) * q) * (1 - _F32(0.55) * np.exp(dn / _F32(-2 * 1.3 ** 2)))
            shade[sl][win] = sh[win]
        return lab, shade


class _A549Scene(_Scene):
    """One large metaball cell with surface blebs, wandering near the field centre."""

    def _start(self) -> None:
        Z, Y, X = self.shape
        rng = _rng(self.seed, _P_LAYOUT)
        nb = int(rng.integers(6, 13))
        self.home = np.array([Z / 2, Y / 2, X / 2]) + rng.uniform([-1, -15, -15], [1, 15, 15])
        sa = rng.uniform(28, 48, nb)
        body = np.stack([rng.normal(0, 1.2, nb), rng.normal(0, 32, nb), rng.normal(0, 32, nb),
                         rng.uniform(2.5, 3.8, nb), sa, sa * rng.uniform(0.6, 1.0, nb),
                         rng.uniform(0, np.pi, nb), rng.uniform(0.8, 1.2, nb)], 1)
        nbl = int(rng.integers(3, 8))
        phi, height = rng.uniform(0, 2 * np.pi, nbl), rng.normal(0, 1.0, nbl)
        steps = np.arange(0, 200, 1.0)
        blebs = []
        for k in range(nbl):  # march out from the centre to the surface of the body
            ray = (np.full_like(steps, height[k]), steps * math.sin(phi[k]), steps * math.cos(phi[k]))
            f = _blob_field(*(np.asarray(r, _F32) for r in ray), body)
            out = int(np.argmax(f < _LEVEL)) if (f < _LEVEL).any() else len(steps) - 1
            s = rng.uniform(5, 10)
            blebs.append([ray[0][out], 0.95 * ray[1][out], 0.95 * ray[2][out], rng.uniform(0.7, 1.1), s,
                          s * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi), 1.0])
        self.blobs = np.concatenate([body, np.array(blebs)])
        self.pos, self.vel = self.home.copy(), np.zeros(3)
        self.drift = np.zeros((len(self.blobs), 3))
        self.bright = np.array([rng.uniform(0.8, 1.2)])

    def _advance(self, t: int) -> None:
        rng = _rng(self.seed, _P_MOTION, t)
        self.vel = 0.7 * self.vel + rng.normal(0, [0.15, 1.5, 1.5]) - 0.05 * (self.pos - self.home)
        self.pos = self.pos + self.vel
        self.drift = 0.9 * self.drift + rng.normal(0, [0.1, 1.0, 1.0], self.drift.shape)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        Z, Y, X = self.shape
        blobs = self.blobs.copy()
        blobs[:, :3] += self.pos + self.drift
        zz, yy, xx = self._grid((slice(0, Z), slice(0, Y), slice(0, X)))
        field = np.zeros(self.shape, _F32)
        for row in blobs:
            r = 3.5 * max(row[4], row[5])
            ys = slice(max(0, int(row[1] - r)), min(Y, int(row[1] + r) + 1))
            xs = slice(max(0, int(row[2] - r)), min(X, int(row[2] + r) + 1))
            if ys.start < ys.stop and xs.start < xs.stop:
                field[:, ys, xs] += _blob_field(zz, yy[:, ys], xx[:, :, xs], row[None])
        mask = ndimage.binary_fill_holes(field > _LEVEL)
        cc, n = ndimage.label(mask)
        if n > 1:
            mask = cc == 1 + int(np.argmax(np.bincount(cc.ravel())[1:]))
        inner = ndimage.distance_transform_edt(mask, sampling=(self.prof.zscale, 1, 1)).astype(_F32)
        shade = _F32(0.75) + _F32(0.9) * np.exp(inner / _F32(-5.0))  # bright cortex
        nucleus = blobs[:1].copy()
        nucleus[0, 3:6] *= 0.6
        nucleus[0, 7] = 0.35
        shade *= 1 - _blob_field(zz, yy, xx, nucleus)
        return mask.astype(np.uint16), shade


_SCENES = {"MDA231": _MDAScene, "TRIC": _TRICScene, "A549-SIM": _A549Scene}


# ---------------------------------------------------------------- rendering


def _deposit(vol: np.ndarray, pts: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Add ``amp`` at the nearest voxels of points (N, 3) inside ``vol``; return a mask of those voxels."""
    idx = np.rint(pts).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < vol.shape), axis=1)
    idx, amp = idx[ok], amp[ok]
    np.add.at(vol, tuple(idx.T), amp.astype(_F32))
    mask = np.zeros(vol.shape, bool)
    mask[tuple(idx.T)] = True
    return mask


def _render(prof: _Profile, lab: np.ndarray, shade: np.ndarray, lut: np.ndarray, params: FamilyCParams,
            seed: int, t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Image of one frame from its labels: texture, fibres, debris, optics, background, ghosts, camera."""
    Z, Y, X = shape = lab.shape
    fg = lab > 0
    rng = _rng(seed, _P_TEXTURE, t)
    cell = (lut * _F32(params.brightness))[lab]
    emission = cell * shade * _texture(rng, prof, shape)
    fine = np.zeros(shape, _F32)
    flat = np.flatnonzero(fg)
    if flat.size:
        spots = rng.choice(flat, flat.size // prof.puncta_per + 1)
        fine.ravel()[spots] += 3.0 * rng.exponential(1.0, spots.size).astype(_F32) * cell.ravel()[spots]
    # fibres: static faint quadratic Bezier curves, crossing the field anywhere
    rng = _rng(seed, _P_FIBRES)
    fibres = np.zeros(shape, bool)
    for _ in range(int(rng.integers(*prof.n_fibres, endpoint=True))):
        p0 = rng.uniform([1, -0.1 * Y, -0.1 * X], [Z - 2, 1.1 * Y, 1.1 * X])
        p2 = rng.uniform([1, -0.1 * Y, -0.1 * X], [Z - 2, 1.1 * Y, 1.1 * X])
        p1 = (p0 + p2) / 2 + np.r_[0, rng.normal(0, 0.2 * max(Y, X), 2)]
        s = np.linspace(0, 1, int(2 * np.hypot(*(p2 - p0)[1:])) + 2)[:, None]
        pts = (1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s ** 2 * p2
        fibres |= _deposit(fine, pts, np.full(len(pts), rng.uniform(0.25, 0.6)))
    # debris: bright specks of a few voxels, drawn per frame at least 8 px away from the cells
    rng = _rng(seed, _P_DEBRIS, t)
    near = ndimage.maximum_filter(fg.any(axis=0), size=17)
    n_deb = int(rng.integers(*prof.n_debris, endpoint=True))
    cand = rng.uniform([0, 0, 0], [Z - 1, Y - 1, X - 1], (20 * n_deb, 3))
    cand = cand[~near[np.rint(cand[:, 1]).astype(int), np.rint(cand[:, 2]).astype(int)]][:n_deb]
    pts = np.repeat(cand, 3, axis=0)
    pts[:, 1:] += rng.integers(-1, 2, (len(pts), 2))
    debris = _deposit(fine, pts, np.repeat(rng.uniform(15, 40, len(cand)) / 3, 3))
    fine = ndimage.gaussian_filter(fine, (0, 0.7, 0.7), truncate=2.5)
    s0, k, zr = prof.cone()
    image = _defocus_cone(emission + fine, s0, k, zr, prof.reach)
    del emission, fine, cell
    # ghost cells: very blurred blobs from out-of-stack planes, drifting slowly
    rng = _rng(seed, _P_GHOSTS)
    ys, xs = np.arange(Y, dtype=_F32), np.arange(X, dtype=_F32)
    haze = np.zeros(shape, _F32)  # everything but the cells' own light: ghosts, autofluorescence
    zs = np.arange(Z, dtype=_F32)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform([0, 0], [Y, X]) + t * rng.normal(0, 0.7, 2)
        sy, sx = prof.ghost_px * rng.uniform(0.7, 1.3, 2)
        zg = -rng.uniform(2, 4) if rng.random() < 0.5 else Z - 1 + rng.uniform(2, 4)
        wz = rng.uniform(0.15, 0.35) / (1 + ((zs - zg) / 2.5) ** 2)
        haze += (wz[:, None, None] * np.exp(-0.5 * ((ys - cy) / sy) ** 2)[None, :, None]
                  * np.exp(-0.5 * ((xs - cx) / sx) ** 2)[None, None, :]).astype(_F32)
    # background: smooth autofluorescence and a 2nd-degree polynomial illumination field
    rng = _rng(seed, _P_BACKGROUND)
    auto = prof.background * np.clip(1 + 0.3 * _value_noise(rng, (Y, X), (Y // 4 + 1, X // 4 + 1)), 0.3, None)
    v, u = np.meshgrid(np.linspace(-1, 1, Y, dtype=_F32), np.linspace(-1, 1, X, dtype=_F32), indexing="ij")
    c = rng.uniform(-0.15, 0.15, 5)
    illum = np.clip(1 + c[0] * u + c[1] * v + c[2] * u * u + c[3] * u * v + c[4] * v * v, 0.5, None)
    haze = (haze + auto[None].astype(_F32)) * illum[None].astype(_F32)
    image = image * illum[None].astype(_F32) + haze
    # EMCCD camera
    photons = image * _F32(prof.photons * params.snr)
    conv = prof.adu_unit / (prof.photons * prof.em_gain) / math.sqrt(params.snr)
    fix = _rng(seed, _P_FIXED)
    rows = prof.offset + prof.banding * fix.standard_normal(Y)
    n_hot = max(3, Y * X // 40000)
    hot = (fix.integers(0, Y, n_hot), fix.integers(0, X, n_hot))
    hot_adu = prof.offset + fix.uniform(0.2, 0.9, n_hot) * (prof.max_adu - prof.offset)
    rng = _rng(seed, _P_CAMERA, t)
    raw = np.empty(shape, prof.dtype)
    for z in range(Z):  # slice by slice keeps the float64 noise arrays small
        electrons = rng.gamma(rng.poisson(photons[z]), prof.em_gain) + rng.normal(0, prof.read_e, (Y, X))
        adu = electrons * conv + rows[:, None]
        adu[hot] = hot_adu
        raw[z] = np.clip(np.rint(adu), 0, prof.max_adu)
    expected = photons * _F32(prof.em_gain * conv) + rows[None, :, None].astype(_F32)
    expected[:, hot[0], hot[1]] = hot_adu
    background = haze * _F32(prof.photons * params.snr * prof.em_gain * conv) + rows[None, :, None]
    return raw, {"expected": expected, "background": background, "debris": debris, "fibres": fibres,
                 "unlabelled": debris | fibres}


# ---------------------------------------------------------------- public API


def _profile(profile: str) -> _Profile:
    try:
        key = get_dataset(profile).key
    except KeyError:
        key = None
    if key not in _PROFILES:
        raise ValueError(f"unknown family C profile {profile!r}; choose one of {', '.join(PROFILES_C)}")
    return _PROFILES[key]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _frame_parts_c(profile: str, seed: int = 0, small: bool = False, params: FamilyCParams = FamilyCParams(),
                   t: int = 0, shape: tuple[int, int, int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Frame ``t`` with its parts (for tests): raw, labels, {expected, debris, fibres, unlabelled}."""
    prof = _profile(profile)
    shape = shape or (prof.small if small else prof.shape)
    scene = _SCENES[prof.key](prof, tuple(shape), _check_seed(seed))
    lab, shade = scene.frame(t)
    raw, parts = _render(prof, lab, shade, scene.lut, params, seed, t)
    return raw, lab, parts


def frame_c(profile: str, seed: int = 0, small: bool = False,
            params: FamilyCParams = FamilyCParams()) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 of sequence 01 as ``generate_c`` writes it: (raw (Z, Y, X), labels uint16)."""
    raw, lab, _ = _frame_parts_c(profile, seed, small, params)
    return raw, lab


def _slice_gt(prof: _Profile, lab: np.ndarray, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """2-3 annotated slices: objects of >= gt_min_px pixels there (TRIC: a random ~35% of them)."""
    n = int(lab.max()) + 1
    good = [np.flatnonzero(np.bincount(lab[z].ravel(), minlength=n)[1:] >= prof.gt_min_px) + 1
            for z in range(lab.shape[0])]
    counts = np.array([g.size for g in good])
    order = [z for z in np.argsort(-counts, kind="stable") if counts[z] > 0]
    if not order:
        return []
    top = order[:max(3, len(order) // 3)]
    zs = sorted(rng.choice(top, min(int(rng.integers(2, 4)), len(top)), replace=False).tolist())
    out = []
    for z in zs:
        keep = good[z]
        if prof.gt_fraction < 1:
            pick = rng.random(keep.size) < prof.gt_fraction
            keep = keep[pick] if pick.any() else keep[[int(rng.integers(keep.size))]]
        out.append((z, np.where(np.isin(lab[z], keep), lab[z], 0).astype(np.uint16)))
    return out


def generate_c(profile: str, out_root: str | Path, seq: str = "01", frames: int | None = 6, seed: int = 0,
               small: bool = False, params: FamilyCParams = FamilyCParams(),
               condition: str | None = None) -> Path:
    """Write a family-C sequence in CTC layout (raw, SEG GT, TRA, ``synth.json``); return the folder."""
    prof = _profile(profile)
    frames = 6 if frames is None else frames
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames!r}")
    if not re.fullmatch(r"\d{2}", str(seq)):
        raise ValueError(f"seq must be two digits such as 01, got {seq!r}")
    seed = _check_seed(seed)
    if condition is not None:
        if condition not in CONDITIONS:
            known = ", ".join(CONDITIONS)
            raise ValueError(f"unknown family C condition {condition!r}; choose one of {known}")
        if params != FamilyCParams():
            raise ValueError("give params or condition, not both")
        params = CONDITIONS[condition]
    elif not isinstance(params, FamilyCParams):
        raise ValueError(f"params must be a FamilyCParams, got {type(params).__name__}")
    ds = Path(out_root) / get_dataset(prof.key).ctc_name
    sequences = claim_folder(ds, seq, "C", _GENERATOR, NOTE_C)
    shape = prof.small if small else prof.shape
    out = SequenceWriter(ds, seq, frames)
    scene = _SCENES[prof.key](prof, shape, seed)
    for t in progress(range(frames), total=frames, desc=f"family C {prof.key}", unit="frame"):
        lab, shade = scene.frame(t)
        raw, _ = _render(prof, lab, shade, scene.lut, params, seed, t)
        out.frame(t, raw, lab, None if prof.gt_fraction == 0 else _slice_gt(prof, lab, _rng(seed, _P_GT, t)))
    tracks = scene.track_lines()
    out.tracks(tracks)
    named = condition or next((k for k, v in CONDITIONS.items() if v == params), None)
    gold = out.gold_objects
    record_sequence(ds, "C", _GENERATOR, NOTE_C, sequences, seq, {
        "profile": prof.key, "seed": seed, "frames": int(frames), "small": bool(small), "shape": list(shape),
        "dtype": np.dtype(prof.dtype).name, "params": asdict(params), "condition": named,
        "version": FAMILY_C_VERSION, "tracks": tracks.count("\n"), "objects_per_frame": out.objects_per_frame,
        "gold_objects": gold})
    log.info("family C %s seq %s: %d frames, %d tracks, %d gold objects (validation only)", prof.key, seq,
             frames, sequences[seq]["tracks"], gold)
    return ds
