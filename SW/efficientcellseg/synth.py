"""Synthetic Cell Tracking Challenge sequences with known truth (MDA231, TRIC and A549-SIM profiles).

No CTC data may be downloaded or shipped here, so tests, the demo and the shipped models all use sequences
from this module. They are written in the exact CTC layout (``../shared/docs/CTC.md``)::

    ROOT/<dataset folder>/<seq>/tTTT.tif              raw frames (Z, Y, X), uint8 or uint16
    ROOT/<dataset folder>/<seq>_GT/SEG/...            gold truth: 2D slice files or full 3D, as the real dataset
    ROOT/<dataset folder>/<seq>_GT/TRA/...            man_trackTTT.tif + man_track.txt (label begin end parent)
    ROOT/<dataset folder>/<seq>_ST/SEG/man_segTTT.tif silver truth (full 3D, small fragments dropped)
    ROOT/<dataset folder>/synth.json                  how each sequence was generated (profile, seed, ...)

How a frame is made (no toy shapes, but no microscope simulator either, see ``docs/synth.md``):

1. **Cells** are unions of ellipsoids ("parts") with a smooth random radial perturbation (a sum of plane
   waves over the surface direction), so outlines are irregular. MDA231 cells are elongated bodies with thin
   protrusions, TRIC nuclei are small ellipsoids packed on a curved sheet so that neighbours touch, A549-SIM
   is one large cell with a rough, blebbed surface.
2. **Rasterisation** gives each voxel to the cell with the smallest normalised distance (a power-diagram
   rule): touching cells share a clean border and a cell's centre voxel always stays its own.
3. **Dynamics** between frames: persistent random migration, growth, divisions with daughter ids and the
   parent recorded in ``man_track.txt``; a cell leaving the field of view ends its track.
4. **Image formation**: per-cell brightness, inner texture and dimmer edges, an uneven background,
   anisotropic Gaussian blur (z much coarser than xy), slight bleaching over time, Poisson photon noise
   plus Gaussian read noise, quantisation to the dataset's dtype.

Everything is drawn from ``numpy.random.default_rng`` seeded with ``(seed, purpose, t)``, so the same seed
gives byte-identical files, and frame ``t`` does not depend on how many frames were asked for.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage as ndi

from efficientcellseg.ctc_io import write_text_atomic, write_tiff_atomic
from efficientcellseg.datasets import get_dataset
from efficientcellseg.log import progress
from efficientcellseg.randomize import SequenceLook, cell_properties, draw_sequence, render_random

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
PROFILES = ("MDA231", "TRIC", "A549-SIM")


# ----------------------------------------------------------------------------------------------- data types
@dataclass
class Part:
    """One ellipsoid of a cell: centre offset from the cell centre (z, y, x), semi-axes (c, b, a) along
    (z, v, u), in-plane angle of the long axis ``u``, and surface waves (k: (J, 3), amp: (J,), phase: (J,))."""

    offset: np.ndarray
    axes: np.ndarray
    angle: float
    k: np.ndarray
    amp: np.ndarray
    phase: np.ndarray


@dataclass
class Cell:
    """A simulated cell (or nucleus) with a track id and everything needed to draw and move it."""

    id: int
    centre: np.ndarray
    parts: list[Part]
    level: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    age: int = 0


@dataclass(frozen=True)
class Imaging:
    """Image formation parameters of a profile (intensities in output grey values)."""

    dtype: str
    background: float
    background_var: float
    level: tuple[float, float]
    texture: float
    edge_dim: float
    blur_zyx: tuple[float, float, float]
    gain: float
    read_noise: float
    bleach: float


@dataclass(frozen=True)
class Profile:
    """One synthetic dataset: folder name, frame shape per sequence, default length, GT kind, imaging."""

    key: str
    shape: Callable[[str, bool], tuple[int, int, int]]
    default_frames: int
    imaging: Imaging
    init: Callable[["_Sim"], None]
    step: Callable[["_Sim"], None]
    gt: str  # "slices" (MDA231), "sparse_slices" (TRIC) or "full" (A549-SIM)
    st_min_voxels: int


# ----------------------------------------------------------------------------------------------- geometry
def _waves(rng: np.random.Generator, n: int, freq: tuple[float, float], amp: float) -> tuple[np.ndarray, ...]:
    """``n`` random plane waves on the unit sphere with frequencies in ``freq`` and total amplitude ``amp``."""
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = d * rng.uniform(*freq, size=(n, 1))
    a = rng.uniform(0.5, 1.0, size=n)
    a *= amp / a.sum()
    return k, a, rng.uniform(0, 2 * np.pi, size=n)


def _paint_part(lab: np.ndarray, dist: np.ndarray, label: int, centre: np.ndarray, p: Part) -> None:
    """Draw one part into ``lab`` where its normalised distance beats the one stored in ``dist`` (and < 1)."""
    nz, ny, nx = lab.shape
    cz, cy, cx = centre + p.offset
    c, b, a = p.axes
    ext = 1.0 + float(p.amp.sum())
    rxy, rz = max(a, b) * ext, c * ext
    z0, z1 = max(0, math.floor(cz - rz)), min(nz, math.ceil(cz + rz) + 1)
    y0, y1 = max(0, math.floor(cy - rxy)), min(ny, math.ceil(cy + rxy) + 1)
    x0, x1 = max(0, math.floor(cx - rxy)), min(nx, math.ceil(cx + rxy) + 1)
    if z0 >= z1 or y0 >= y1 or x0 >= x1:
        return
    w = ((np.arange(z0, z1, dtype=np.float32) - cz) / c)[:, None, None]
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[None, :, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, None, :]
    ca, sa = math.cos(p.angle), math.sin(p.angle)
    u = (ca * dx + sa * dy) / a
    v = (ca * dy - sa * dx) / b
    r = np.sqrt(u * u + v * v + w * w) + np.float32(1e-6)
    if p.amp.size:
        rad = np.ones_like(r)
        for (kw, kv, ku), am, ph in zip(p.k, p.amp, p.phase, strict=True):
            rad += np.float32(am) * np.cos((np.float32(ku) * u + np.float32(kv) * v + np.float32(kw) * w) / r
                                           + np.float32(ph))
        r = r / rad
    sub_d = dist[z0:z1, y0:y1, x0:x1]
    win = r < sub_d
    if win.any():
        lab[z0:z1, y0:y1, x0:x1][win] = label
        sub_d[win] = r[win]


def _rasterise(cells: list[Cell], shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label volume (int32) and normalised distance (float32, 1 outside cells) of all cells."""
    lab = np.zeros(shape, np.int32)
    dist = np.ones(shape, np.float32)
    for cell in cells:
        for p in cell.parts:
            _paint_part(lab, dist, cell.id, cell.centre, p)
    return lab, dist


# ----------------------------------------------------------------------------------------------- simulation
class _Sim:
    """Cells of one sequence and their bookkeeping (track records, next free id)."""

    def __init__(self, profile: Profile, shape: tuple[int, int, int], seed: int) -> None:
        self.profile = profile
        self.shape = shape
        self.rng = np.random.default_rng([seed, 1])
        self.cells: list[Cell] = []
        self.tracks: dict[int, list[int]] = {}  # id -> [begin, end, parent]
        self.pending_parent: dict[int, int] = {}
        self.next_id = 1
        self.t = 0
        self.extra: dict = {}

    def new_id(self, parent: int = 0) -> int:
        if self.next_id > 65535:
            raise RuntimeError("synthetic sequence ran out of uint16 track ids; generate fewer frames")
        i = self.next_id
        self.next_id += 1
        self.pending_parent[i] = parent
        return i

    def inside(self, cell: Cell, margin: float = 0.0) -> bool:
        z, y, x = cell.centre
        nz, ny, nx = self.shape
        return -0.5 <= z <= nz - 0.5 and margin <= y <= ny - 1 - margin and margin <= x <= nx - 1 - margin

    def record(self, lab: np.ndarray) -> None:
        """Drop cells not visible in this frame (their tracks end), extend the tracks of the visible ones."""
        present = np.zeros(self.next_id, bool)
        present[np.unique(lab)] = True
        keep = []
        for cell in self.cells:
            if not present[cell.id]:
                continue
            if cell.id in self.tracks:
                self.tracks[cell.id][1] = self.t
            else:
                self.tracks[cell.id] = [self.t, self.t, self.pending_parent.get(cell.id, 0)]
            keep.append(cell)
        self.cells = keep

    def run(self, frames: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(t, labels int32, dist, levels)`` per frame; ``tracks`` is complete once exhausted."""
        for t in range(frames):
            self.t = t
            if t > 0:
                self.profile.step(self)
            lab, dist = _rasterise(self.cells, self.shape)
            self.record(lab)
            levels = np.zeros(self.next_id, np.float32)
            for cell in self.cells:
                levels[cell.id] = cell.level
            yield t, lab, dist, levels

    def divide(self, cell: Cell, split_axis: np.ndarray, scale: float) -> list[Cell]:
        """Two daughters of ``cell``, placed along ``split_axis`` (z, y, x), parts shrunk by ``scale``."""
        kids = []
        for sgn in (-1.0, 1.0):
            parts = [replace(p, offset=p.offset * scale, axes=p.axes * scale, phase=p.phase + self.rng.uniform(
                -0.5, 0.5, p.phase.shape)) for p in cell.parts]
            kids.append(Cell(self.new_id(parent=cell.id), cell.centre + sgn * split_axis, parts,
                             cell.level * self.rng.uniform(0.9, 1.1), cell.velocity.copy()))
        return kids


# MDA231: few elongated, migrating cells with protrusions ------------------------------------------------
def _mda_body(rng: np.random.Generator, angle: float) -> list[Part]:
    a, b, c = rng.uniform(18, 32), rng.uniform(8, 13), rng.uniform(2.0, 3.2)
    parts = [Part(np.zeros(3), np.array([c, b, a]), angle, *_waves(rng, 5, (2, 5), rng.uniform(0.12, 0.22)))]
    for _ in range(rng.integers(0, 4)):
        phi = angle + rng.choice([0.0, np.pi]) + rng.normal(0, 0.6)
        length, width = rng.uniform(10, 24), rng.uniform(2.2, 3.8)
        reach = 0.75 * (a * abs(math.cos(phi - angle)) + b * abs(math.sin(phi - angle))) + 0.7 * length
        off = np.array([rng.normal(0, 0.4), reach * math.sin(phi), reach * math.cos(phi)])
        parts.append(Part(off, np.array([rng.uniform(1.0, 1.6), width, length]), phi,
                          *_waves(rng, 2, (1, 3), 0.1)))
    return parts


def _mda_init(sim: _Sim) -> None:
    rng, (nz, ny, nx) = sim.rng, sim.shape
    n = int(rng.integers(6, 16))
    for _ in range(n):
        angle = rng.uniform(0, np.pi)
        centre = np.array([rng.uniform(0.3 * nz, 0.7 * nz), rng.uniform(40, ny - 40), rng.uniform(40, nx - 40)])
        speed = rng.uniform(1.0, 4.0)
        vel = np.array([0.0, speed * math.sin(angle), speed * math.cos(angle)]) * rng.choice([-1, 1])
        sim.cells.append(Cell(sim.new_id(), centre, _mda_body(rng, angle), rng.uniform(70, 170), vel))


def _mda_step(sim: _Sim) -> None:
    rng, out = sim.rng, []
    for cell in sim.cells:
        cell.age += 1
        cell.velocity = 0.8 * cell.velocity + np.array([rng.normal(0, 0.08), *rng.normal(0, 1.2, 2)])
        cell.centre = cell.centre + cell.velocity
        cell.centre[0] = float(np.clip(cell.centre[0], 3, sim.shape[0] - 4))
        heading = math.atan2(cell.velocity[1], cell.velocity[2])
        turn = rng.normal(0, 0.08)
        for p in cell.parts:
            p.angle += turn
            p.offset = _rotate_yx(p.offset, turn)
            p.axes = p.axes * np.array([1.0, 1.0, rng.uniform(0.97, 1.04)])
            p.phase = p.phase + rng.normal(0, 0.15, p.phase.shape)
        if rng.random() < 0.08:  # protrusions retract and re-form
            cell.parts = [cell.parts[0]] + _mda_body(rng, heading)[1:]
        if cell.age >= 2 and rng.random() < 0.03:
            main = cell.parts[0]
            ax = 0.55 * main.axes[2] * np.array([0.0, math.sin(main.angle), math.cos(main.angle)])
            kids = sim.divide(cell, ax, 0.8)
            for kid in kids:
                kid.parts = [kid.parts[0]]
            out.extend(kids)
        elif sim.inside(cell):
            out.append(cell)
    sim.cells = out


def _rotate_yx(offset: np.ndarray, angle: float) -> np.ndarray:
    z, y, x = offset
    c, s = math.cos(angle), math.sin(angle)
    return np.array([z, c * y + s * x, -s * y + c * x])


# TRIC: thousands of small, densely packed nuclei on a curved sheet ----------------------------------------
def _tric_surface(sim: _Sim, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """z of the curved epithelial sheet at (y, x): a tilted dome inside the stack."""
    nz, ny, nx = sim.shape
    cy, cx, tilt = sim.extra["dome"]
    r2 = ((y - cy) / (0.62 * ny)) ** 2 + ((x - cx) / (0.62 * nx)) ** 2
    return 1.8 + (nz - 5.0) * np.clip(1.0 - r2, 0, 1) + tilt * (x - cx) / nx


def _tric_nucleus(rng: np.random.Generator) -> list[Part]:
    r = rng.uniform(6.0, 8.5)
    el = rng.uniform(1.0, 1.3)
    return [Part(np.zeros(3), np.array([rng.uniform(1.1, 1.7), r / math.sqrt(el), r * math.sqrt(el)]),
                 rng.uniform(0, np.pi), *_waves(rng, 3, (1.5, 3.5), rng.uniform(0.05, 0.12)))]


def _tric_init(sim: _Sim) -> None:
    rng, (_, ny, nx) = sim.rng, sim.shape
    sim.extra["dome"] = (ny * rng.uniform(0.45, 0.55), nx * rng.uniform(0.45, 0.55), rng.uniform(-1.5, 1.5))
    sim.extra["flow"] = rng.normal(0, 1, size=(2, 4, 4))
    spacing = 16.0
    gy, gx = np.meshgrid(np.arange(8, ny - 8, spacing * math.sqrt(3) / 2), np.arange(8, nx - 8, spacing),
                         indexing="ij")
    gx = gx + (np.arange(gy.shape[0])[:, None] % 2) * spacing / 2
    y = gy.ravel() + rng.normal(0, 1.6, gy.size)
    x = gx.ravel() + rng.normal(0, 1.6, gx.size)
    # embryo outline (ellipse with a wavy border) and patchy density inside it
    cy, cx = ny * 0.5, nx * 0.5
    ang = np.arctan2(y - cy, x - cx)
    wav = 1 + 0.06 * np.cos(3 * ang + rng.uniform(0, 6.3)) + 0.04 * np.cos(5 * ang + rng.uniform(0, 6.3))
    inside = ((y - cy) / (0.46 * ny)) ** 2 + ((x - cx) / (0.44 * nx)) ** 2 < wav**2
    coarse = ndi.zoom(rng.uniform(0, 1, (6, 6)), (ny / 6, nx / 6), order=1)
    dens = coarse[np.clip(y.astype(int), 0, ny - 1), np.clip(x.astype(int), 0, nx - 1)]
    keep = inside & (rng.uniform(0, 1, y.size) < 0.6 + 0.4 * dens)
    y, x = y[keep], x[keep]
    z = _tric_surface(sim, y, x) + rng.normal(0, 0.35, y.size)
    for zi, yi, xi in zip(z, y, x, strict=True):
        sim.cells.append(Cell(sim.new_id(), np.array([zi, yi, xi]), _tric_nucleus(rng), rng.uniform(55, 200)))


def _tric_step(sim: _Sim) -> None:
    rng, (_, ny, nx) = sim.rng, sim.shape
    flow = sim.extra["flow"]
    out = []
    for cell in sim.cells:
        cell.age += 1
        z, y, x = cell.centre
        iy, ix = min(int(4 * y / ny), 3), min(int(4 * x / nx), 3)
        drift = np.array([0.0, 0.9 * flow[0, iy, ix], 0.9 * flow[1, iy, ix]])
        cell.centre = cell.centre + drift + np.array([0.0, *rng.normal(0, 0.5, 2)])
        cell.centre[0] = float(_tric_surface(sim, np.array(cell.centre[1]), np.array(cell.centre[2]))
                               + rng.normal(0, 0.2))
        for p in cell.parts:
            p.angle += rng.normal(0, 0.1)
            p.axes = p.axes * np.array([1.0, *rng.uniform(0.99, 1.02, 2)])
        if cell.age > 2 and rng.random() < 0.012:
            phi = rng.uniform(0, np.pi)
            r = float(cell.parts[0].axes[2])
            out.extend(sim.divide(cell, 0.6 * r * np.array([0.0, math.sin(phi), math.cos(phi)]), 0.82))
        elif sim.inside(cell, margin=1.0):
            out.append(cell)
    sim.cells = out


# A549-SIM: one large cell with a textured, irregular surface ----------------------------------------------
def _a549_init(sim: _Sim) -> None:
    rng, (nz, ny, nx) = sim.rng, sim.shape
    centre = np.array([nz / 2 + rng.normal(0, 1), ny / 2 + rng.normal(0, 10), nx / 2 + rng.normal(0, 10)])
    a, b, c = rng.uniform(0.28, 0.36) * nx, rng.uniform(0.28, 0.36) * ny, rng.uniform(0.26, 0.34) * nz
    parts = [Part(np.zeros(3), np.array([c, b, a]), rng.uniform(0, np.pi),
                  *_waves(rng, 14, (1.5, 7.0), rng.uniform(0.22, 0.32)))]
    for _ in range(rng.integers(2, 6)):  # blebs and lamellipodia-like lobes on the surface
        th, ph = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5)
        off = np.array([c * math.sin(ph) * 0.8, b * math.cos(ph) * math.sin(th) * 0.85,
                        a * math.cos(ph) * math.cos(th) * 0.85])
        s = rng.uniform(0.18, 0.35)
        parts.append(Part(off, np.array([c * 0.45, b * s, a * s]), rng.uniform(0, np.pi),
                          *_waves(rng, 4, (1.5, 4.0), 0.15)))
    sim.cells.append(Cell(sim.new_id(), centre, parts, rng.uniform(1100, 1700), rng.normal(0, 0.8, 3) * [0.1, 1, 1]))


def _a549_step(sim: _Sim) -> None:
    rng, (nz, ny, nx) = sim.rng, sim.shape
    for cell in sim.cells:
        cell.velocity = 0.7 * cell.velocity + rng.normal(0, 0.6, 3) * np.array([0.05, 1, 1])
        cell.centre = cell.centre + cell.velocity
        cell.centre = np.clip(cell.centre, [nz * 0.4, ny * 0.35, nx * 0.35], [nz * 0.6, ny * 0.65, nx * 0.65])
        turn = rng.normal(0, 0.03)
        for p in cell.parts:
            p.angle += turn
            p.offset = _rotate_yx(p.offset, turn)
            p.phase = p.phase + rng.normal(0, 0.12, p.phase.shape)
            p.axes = p.axes * rng.uniform(0.985, 1.015, 3)


PROFILE_DEFS: dict[str, Profile] = {
    "MDA231": Profile(
        key="MDA231", shape=lambda seq, small: (30, 512, 512), default_frames=12,
        imaging=Imaging("uint8", background=14, background_var=0.5, level=(70, 170), texture=0.35,
                        edge_dim=0.35, blur_zyx=(0.9, 1.6, 1.6), gain=1.2, read_noise=3.0, bleach=0.012),
        init=_mda_init, step=_mda_step, gt="slices", st_min_voxels=150),
    "TRIC": Profile(
        key="TRIC",
        shape=lambda seq, small: (13, 700, 1000) if small else ((13, 2454, 1693) if seq == "01" else (13, 1745, 2440)),
        default_frames=65,
        imaging=Imaging("uint8", background=9, background_var=0.6, level=(55, 200), texture=0.25,
                        edge_dim=0.45, blur_zyx=(0.7, 1.1, 1.1), gain=1.0, read_noise=2.5, bleach=0.004),
        init=_tric_init, step=_tric_step, gt="sparse_slices", st_min_voxels=12),
    "A549-SIM": Profile(
        key="A549-SIM", shape=lambda seq, small: (29, 300, 350) if seq != "02" else (37, 300, 400),
        default_frames=30,
        imaging=Imaging("uint16", background=300, background_var=0.3, level=(1100, 1700), texture=0.3,
                        edge_dim=0.3, blur_zyx=(1.4, 2.2, 2.2), gain=4.0, read_noise=20.0, bleach=0.006),
        init=_a549_init, step=_a549_step, gt="full", st_min_voxels=0),
}


# ----------------------------------------------------------------------------------------------- imaging
def render(lab: np.ndarray, dist: np.ndarray, levels: np.ndarray, im: Imaging, t: int,
           rng: np.random.Generator) -> np.ndarray:
    """Microscope-like image (dtype ``im.dtype``) of a label volume; ``levels[id]`` is each cell's brightness."""
    nz, ny, nx = lab.shape
    sig = levels[lab].astype(np.float32)
    sig *= 1.0 - np.float32(im.edge_dim) * np.square(np.minimum(dist, 1.0))
    tex = rng.standard_normal(lab.shape, dtype=np.float32)
    tex = ndi.gaussian_filter(tex, (0.5, 1.5, 1.5), truncate=2.5)
    tex *= np.float32(im.texture / max(float(tex.std()), 1e-6))
    sig *= np.clip(1.0 + tex, 0.2, None)
    sig *= np.float32(math.exp(-im.bleach * t))
    coarse = rng.uniform(1 - im.background_var, 1 + im.background_var, (5, 5)).astype(np.float32)
    bg2d = ndi.zoom(coarse, (ny / 5, nx / 5), order=3, grid_mode=True, mode="nearest")[:ny, :nx]
    zprof = np.linspace(0.85, 1.1, nz, dtype=np.float32)[:, None, None]
    img = ndi.gaussian_filter(sig, im.blur_zyx, truncate=3.0)
    img += np.float32(im.background) * np.clip(bg2d, 0.1, None)[None] * zprof
    photons = rng.poisson(img / np.float32(im.gain)).astype(np.float32)
    img = photons * np.float32(im.gain) + rng.normal(0, im.read_noise, img.shape).astype(np.float32)
    info = np.iinfo(im.dtype)
    return np.clip(np.rint(img), 0, info.max).astype(im.dtype)


# ----------------------------------------------------------------------------------------------- writing
def _gold_slices(lab: np.ndarray, rng: np.random.Generator, sparse: bool) -> dict[int, np.ndarray]:
    """2D slice GT: a few slices with enough cell area; all objects of a slice, or ~40% of them when sparse."""
    nz = lab.shape[0]
    area = (lab > 0).reshape(nz, -1).sum(1)
    cand = np.flatnonzero(area >= max(1, 0.25 * area.max())) if area.max() else np.arange(nz)
    n = min(len(cand), int(rng.integers(2, 4)))
    out = {}
    for z in sorted(rng.choice(cand, size=n, replace=False).tolist()):
        sl = lab[z].copy()
        ids, counts = np.unique(sl, return_counts=True)
        small = ids[(ids > 0) & (counts < (15 if sparse else 40))]
        drop = small
        if sparse:
            big = ids[(ids > 0) & (counts >= 15)]
            drop = np.concatenate([small, big[rng.uniform(0, 1, big.size) > 0.4]])
        sl[np.isin(sl, drop)] = 0
        out[int(z)] = sl
    return out


def _silver(lab: np.ndarray, min_voxels: int) -> np.ndarray:
    """Silver truth: the labels without fragments smaller than ``min_voxels`` (ST misses tiny cuts)."""
    if min_voxels <= 0:
        return lab
    counts = np.bincount(lab.ravel())
    small = np.flatnonzero(counts < min_voxels)
    small = small[small > 0]
    if small.size == 0:
        return lab
    out = lab.copy()
    out[np.isin(lab, small)] = 0
    return out


def _digits(n_frames: int) -> int:
    return 4 if n_frames > 1000 else 3


# ----------------------------------------------------------------------------------------------- public API
def _profile(name: str) -> Profile:
    key = get_dataset(name).key
    return PROFILE_DEFS[key]


def simulator(profile: str, seed: int = 0, seq: str = "01", small: bool = False,
              look: SequenceLook | None = None) -> "_Sim":
    """A fresh simulation of ``profile`` (frame shape from ``seq`` and ``small``); iterate ``run(frames)``.

    With a randomized ``look`` the cells' sizes, thickness, outlines and number are changed as it says."""
    prof = _profile(profile)
    sim = _Sim(prof, prof.shape(seq, small), seed)
    prof.init(sim)
    if look is not None:
        _randomize_geometry(sim, look, np.random.default_rng([seed, 4]))
    return sim


MAX_WAVE_AMPLITUDE = 0.6
"""Cap on a part's total surface-wave amplitude after randomization (keeps the radial function positive)."""


def _randomize_geometry(sim: _Sim, look: SequenceLook, rng: np.random.Generator) -> None:
    """Scale, stretch, roughen and thin out (or add to) the initial cells of ``sim`` as ``look`` draws."""
    if look.density > 1 and sim.profile.key == "MDA231":
        extra = _Sim(sim.profile, sim.shape, int(rng.integers(2**31)))
        sim.profile.init(extra)
        n_add = int(round((look.density - 1) * len(sim.cells)))
        for cell in extra.cells[:n_add]:
            cell.id = sim.new_id()
            sim.cells.append(cell)
    elif look.density < 1 and len(sim.cells) > 1:
        keep = rng.random(len(sim.cells)) < look.density
        keep[int(rng.integers(len(sim.cells)))] = True
        sim.cells = [c for c, k in zip(sim.cells, keep, strict=True) if k]
    el = math.sqrt(look.elongation)
    scale = np.array([look.shape_z, look.shape_xy / el, look.shape_xy * el])
    for cell in sim.cells:
        for p in cell.parts:
            p.axes = p.axes * scale
            p.offset = p.offset * np.array([look.shape_z, look.shape_xy, look.shape_xy])
            if p.amp.size:
                p.amp = p.amp * min(look.irregularity, MAX_WAVE_AMPLITUDE / float(p.amp.sum()))


def generate_frame_for_benchmark(profile: str, seed: int = 0, small: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One raw frame and its labels (uint16) at the profile's real size, without writing files."""
    prof = _profile(profile)
    t, lab, dist, levels = next(simulator(prof.key, seed=seed, small=small).run(1))
    return render(lab, dist, levels, prof.imaging, t, np.random.default_rng([seed, 2, t])), lab.astype(np.uint16)


def generate(profile: str, out_root: str | os.PathLike, seq: str = "01", frames: int | None = None,
             seed: int = 0, small: bool = False, preview: str | os.PathLike | None = None,
             randomize: bool = False) -> Path:
    """Write a synthetic sequence ``seq`` of ``profile`` under ``out_root`` in CTC layout; return the dataset folder.

    ``randomize`` draws the sequence's look and cell geometry from the wide ranges of
    :mod:`efficientcellseg.randomize` (domain randomization for training) instead of the profile's fixed look.
    """
    prof = _profile(profile)
    cfg = get_dataset(prof.key)
    n = prof.default_frames if frames is None else int(frames)
    if n < 1:
        raise ValueError(f"frames must be >= 1, got {n}")
    if not (seq.isdigit() and len(seq) == 2):
        raise ValueError(f"seq must be two digits like 01, got {seq!r}")
    ds_dir = Path(out_root) / cfg.ctc_name
    raw_dir, gt_dir = ds_dir / seq, ds_dir / f"{seq}_GT"
    seg_dir, tra_dir, st_dir = gt_dir / "SEG", gt_dir / "TRA", ds_dir / f"{seq}_ST" / "SEG"
    for d in (raw_dir, seg_dir, tra_dir, st_dir):
        d.mkdir(parents=True, exist_ok=True)
    nd = _digits(n)
    stats = {"objects_per_frame": [], "gold_objects": 0}
    preview_data = None
    look = draw_sequence(np.random.default_rng([seed, 5])) if randomize else None
    cells = cell_properties(look, np.random.default_rng([seed, 6])) if look is not None else None
    sim = simulator(prof.key, seed=seed, seq=seq, small=small, look=look)
    for t, lab, dist, levels in progress(sim.run(n), total=n, desc=f"synth {prof.key} {seq}", unit="frame"):
        tt = f"{t:0{nd}d}"
        frame_rng = np.random.default_rng([seed, 2, t])
        if look is None:
            raw = render(lab, dist, levels, prof.imaging, t, frame_rng)
        else:
            raw = render_random(lab, dist, levels, look, cells, t, frame_rng)
        lab16 = lab.astype(np.uint16)
        write_tiff_atomic(raw_dir / f"t{tt}.tif", raw)
        write_tiff_atomic(tra_dir / f"man_track{tt}.tif", lab16, compression="zlib")
        write_tiff_atomic(st_dir / f"man_seg{tt}.tif", _silver(lab16, prof.st_min_voxels), compression="zlib")
        if prof.gt == "full":
            write_tiff_atomic(seg_dir / f"man_seg{tt}.tif", lab16, compression="zlib")
            stats["gold_objects"] += int(np.unique(lab16).size - (lab16.min() == 0))
        else:
            gold = _gold_slices(lab16, np.random.default_rng([seed, 3, t]), sparse=prof.gt == "sparse_slices")
            for z, sl in gold.items():
                write_tiff_atomic(seg_dir / f"man_seg_{tt}_{z:03d}.tif", sl, compression="zlib")
                stats["gold_objects"] += int(np.unique(sl).size - 1)
        stats["objects_per_frame"].append(int(np.unique(lab).size - 1))
        if preview is not None and preview_data is None:
            preview_data = (raw, lab16)
    lines = [f"{i} {b} {e} {p}" for i, (b, e, p) in sorted(sim.tracks.items())]
    write_text_atomic(tra_dir / "man_track.txt", "\n".join(lines) + "\n")
    meta_path = ds_dir / "synth.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.setdefault("generator", "efficientcellseg.synth")
    meta["note"] = "SYNTHETIC data, not Cell Tracking Challenge data"
    meta.setdefault("sequences", {})[seq] = {
        "profile": prof.key, "seed": seed, "frames": n, "small": small, "shape": list(sim.shape),
        "version": GENERATOR_VERSION, "dtype": prof.imaging.dtype if look is None else look.dtype,
        "randomized": None if look is None else look.to_json(), "tracks": len(sim.tracks),
        "objects_per_frame": stats["objects_per_frame"], "gold_objects": stats["gold_objects"],
    }
    write_text_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if preview is not None and preview_data is not None:
        write_projection_preview(Path(preview), *preview_data)
    log.info("%s %s: %d frames %s, %d tracks, %d-%d objects per frame", prof.key, seq, n, sim.shape,
             len(sim.tracks), min(stats["objects_per_frame"]), max(stats["objects_per_frame"]))
    return ds_dir


def write_projection_preview(path: Path, raw: np.ndarray, labels: np.ndarray) -> Path:
    """PNG of the maximum projection of a frame with the outlines of the projected labels (top-most object)."""
    from PIL import Image

    from efficientcellseg.preview import overlay_slice, save_png_atomic

    first = np.argmax(labels > 0, axis=0)  # the top-most object along z at each pixel
    lab2d = np.take_along_axis(labels, first[None], axis=0)[0]
    img = Image.fromarray(overlay_slice(raw.max(axis=0), lab2d))
    if max(img.size) > 1200:
        s = 1200 / max(img.size)
        img = img.resize((int(img.width * s), int(img.height * s)))
    return save_png_atomic(path, img)
