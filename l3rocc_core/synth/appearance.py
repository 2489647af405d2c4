"""Appearance of synthetic scenes: procedural textures, shading, sky and the camera sensor.

Textures are functions of object-local 3D coordinates of the surface point (metres), so they move
with their object. The ``photo`` pattern tiles patches cut from real photographs (the JPEGs in
``textures/`` beside this file, CC BY 4.0, see its README) over the surface. Every function is
vectorised over the hit buffer (``N`` hits). Colours are linear RGB in [0, 1] until
:class:`Sensor` applies exposure, gamma and noise.
"""

from dataclasses import dataclass, field
from functools import lru_cache
import os
from typing import List, Sequence

import numpy as np
from scipy import ndimage

PATTERNS = ('noise', 'checker', 'brick', 'stripes', 'weak', 'photo')
#: the procedural patterns (the default draw of :func:`random_material`)
PROCEDURAL = PATTERNS[:5]
#: folder of the photo texture patches (square JPEGs)
TEXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'textures')

_GRID = 128  # side of the periodic noise volume (power of two)


@dataclass
class Material:
    """Surface look of one object.

    :param colors: float32 [3, 3] linear RGB palette (primary, secondary, accent/mortar)
    :param pattern: one of :data:`PATTERNS`
    :param scale: metres per pattern cell (checker square, brick length, stripe period, blotch)
    :param contrast: 0..1 amplitude of the fine multi-scale noise
    :param specular: 0..1 strength of the Blinn-Phong highlight
    :param shininess: Blinn-Phong exponent
    :param offset: float32 [3] noise-space offset (decorrelates objects with the same pattern)
    :param texture: index of the photo patch (pattern ``photo``; taken modulo the number of
        patches), ``scale`` metres per patch
    """

    colors: np.ndarray
    pattern: str = 'noise'
    scale: float = 0.3
    contrast: float = 0.5
    specular: float = 0.0
    shininess: float = 30.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    texture: int = 0

    def __post_init__(self) -> None:
        """Check the palette and pattern on entry."""
        self.colors = np.asarray(self.colors, np.float32).reshape(3, 3)
        self.offset = np.asarray(self.offset, np.float32).reshape(3)
        if self.pattern not in PATTERNS:
            raise ValueError(f'unknown pattern {self.pattern!r} (known: {PATTERNS})')
        if self.scale <= 0:
            raise ValueError(f'material scale must be > 0, got {self.scale}')


def random_material(rng: np.random.Generator, base_rgb: Sequence[float],
                    patterns: Sequence[str] = PROCEDURAL, specular_prob: float = 0.15,
                    scale_range: Sequence[float] = (0.08, 0.6)) -> Material:
    """Draw a material around a base colour with a random pattern, palette and finish.

    :param rng: random generator (consumed deterministically)
    :param base_rgb: [3] linear RGB of the primary colour
    :param patterns: patterns to draw from
    :param specular_prob: probability of a specular-looking finish
    :param scale_range: (lo, hi) metres, drawn log-uniformly
    """
    base = np.clip(np.asarray(base_rgb, np.float32) * rng.uniform(0.8, 1.2, 3), 0.02, 0.95)
    second = np.clip(base * rng.uniform(0.35, 0.8) * rng.uniform(0.85, 1.15, 3), 0.01, 0.95)
    grey = rng.uniform(0.1, 0.8)
    accent = np.clip(0.7 * grey + 0.3 * rng.uniform(0.05, 0.9, 3), 0.01, 0.95)
    pattern = str(rng.choice(list(patterns)))
    lo, hi = scale_range
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    specular = float(rng.uniform(0.3, 0.8)) if rng.random() < specular_prob else 0.0
    contrast = float(rng.uniform(0.03, 0.1)) if pattern == 'weak' else float(
        rng.uniform(0.35, 0.8))
    return Material(np.stack([base, second, accent]), pattern, scale, contrast, specular,
                    float(rng.uniform(15.0, 80.0)),
                    rng.uniform(0.0, _GRID, 3).astype(np.float32))


class ValueNoise:
    """Periodic 3D fractal value noise, baked once into a 128^3 volume, sampled trilinearly.

    The volume sums value noise with lattice spacings of 16, 4 and 1 voxels (amplitudes 0.5,
    0.3, 0.2), so one trilinear lookup yields three octaves; its period is 8 coarse cells.

    :param seed: lattice seed
    """

    def __init__(self, seed: int):
        """Bake (or reuse) the volume of ``seed``."""
        self.volume = _baked_volume(int(seed) % 1024)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """Noise in about [0, 1] at volume coordinates ``p`` (16 units = one coarse cell).

        :param p: float32 [N, 3]
        :return: float32 [N]
        """
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f'points must be [N, 3], got {p.shape}')
        return ndimage.map_coordinates(self.volume, p.T, order=1, mode='grid-wrap',
                                       prefilter=False)

    def cell(self, ijk: np.ndarray) -> np.ndarray:
        """Volume value at integer cells (a cheap per-cell random number in about [0, 1]).

        :param ijk: int64 [N, 3]
        :return: float32 [N]
        """
        i = ijk & (_GRID - 1)
        return self.volume[i[:, 0], i[:, 1], i[:, 2]]


@lru_cache(maxsize=4)
def _baked_volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 77])
    out = np.zeros((_GRID,) * 3, np.float32)
    ax = np.arange(_GRID, dtype=np.float32)
    for spacing, amp in ((16, 0.5), (4, 0.3), (1, 0.2)):
        n = _GRID // spacing
        lattice = rng.random((n, n, n)).astype(np.float32)
        if spacing == 1:
            out += amp * lattice
            continue
        c = ax / spacing
        f = c - np.floor(c)
        w = f * f * (3 - 2 * f)                      # smoothstep between lattice points
        i0 = np.floor(c).astype(np.int64) % n
        i1 = (i0 + 1) % n
        # Separable smooth interpolation along each axis.
        a = lattice[i0] * (1 - w)[:, None, None] + lattice[i1] * w[:, None, None]
        a = a[:, i0] * (1 - w)[None, :, None] + a[:, i1] * w[None, :, None]
        a = a[:, :, i0] * (1 - w)[None, None, :] + a[:, :, i1] * w[None, None, :]
        out += amp * a
    return out


@dataclass
class MaterialTable:
    """Materials of every object as arrays, so colour lookups are gathers.

    :param materials: one per object index
    """

    materials: List[Material]

    def __post_init__(self) -> None:
        """Stack the fields."""
        m = self.materials
        self.colors = np.stack([x.colors for x in m]).astype(np.float32)   # [O, 3, 3]
        self.pattern = np.array([PATTERNS.index(x.pattern) for x in m], np.int64)
        self.scale = np.array([x.scale for x in m], np.float32)
        self.contrast = np.array([x.contrast for x in m], np.float32)
        self.specular = np.array([x.specular for x in m], np.float32)
        self.shininess = np.array([x.shininess for x in m], np.float32)
        self.offset = np.stack([x.offset for x in m]).astype(np.float32)   # [O, 3]
        self.texture = np.array([x.texture for x in m], np.int64)


def albedo(p_obj: np.ndarray, obj: np.ndarray, table: MaterialTable, noise: ValueNoise
           ) -> np.ndarray:
    """Surface colour of hits from their object-local coordinates.

    :param p_obj: float32 [N, 3] hit points in their object's frame (metres)
    :param obj: int64 [N] object index of every hit
    :param table: the scene's materials
    :param noise: the scene's value noise
    :return: float32 [N, 3] linear RGB albedo
    """
    if p_obj.shape != (len(obj), 3):
        raise ValueError(f'p_obj {p_obj.shape} and obj {obj.shape} disagree')
    n = len(obj)
    out = np.zeros((n, 3), np.float32)
    if n == 0:
        return out
    scale = table.scale[obj][:, None]
    q = p_obj.astype(np.float32) / scale + table.offset[obj]         # pattern cells
    # Three octaves at the pattern scale (blotches, 1/4 and 1/16 of a cell) in one lookup, and
    # a ~2 cm grain so every surface carries texture at the working resolution.
    coarse = noise(q * 16.0)
    grain = noise(p_obj.astype(np.float32) * 100.0 + table.offset[obj] * 5.0)
    detail = 0.5 * (coarse - 0.5) + 0.5 * (grain - 0.5)
    pattern = table.pattern[obj]
    cols = table.colors[obj]                                         # [N, 3, 3]
    mix = coarse.copy()                                              # 0 -> primary, 1 -> second
    accent = np.zeros(n, np.float32)
    cell = np.floor(q)
    chk = pattern == PATTERNS.index('checker')
    if chk.any():
        parity = (cell[chk].astype(np.int64).sum(1) & 1).astype(np.float32)
        mix[chk] = 0.8 * parity + 0.2 * coarse[chk]
    brk = pattern == PATTERNS.index('brick')
    if brk.any():
        qb = q[brk]
        h = 0.5                                                      # brick height / length
        row = np.floor(qb[:, 2] / h)
        u = qb[:, 0] + qb[:, 1] + 0.5 * (row.astype(np.int64) & 1)
        col = np.floor(u)
        fu, fz = u - col, qb[:, 2] / h - row
        mortar = (fu < 0.06) | (fz < 0.1)
        per_brick = noise.cell(np.stack([col, row, np.zeros_like(row)], 1).astype(np.int64))
        mix[brk] = 0.25 * per_brick + 0.3 * coarse[brk]
        accent[brk] = mortar.astype(np.float32)
    stp = pattern == PATTERNS.index('stripes')
    if stp.any():
        qs = q[stp]
        s = 0.5 + 0.5 * np.sin(2.0 * np.pi * (qs[:, 0] + 0.37 * qs[:, 1] + 0.61 * qs[:, 2]))
        mix[stp] = 0.75 * (s > 0.5) + 0.25 * coarse[stp]
    weak = pattern == PATTERNS.index('weak')
    mix[weak] = 0.15 * coarse[weak]
    base = cols[:, 0] + (cols[:, 1] - cols[:, 0]) * mix[:, None]
    base = base + (cols[:, 2] - base) * accent[:, None]
    pho = pattern == PATTERNS.index('photo')
    if pho.any():
        # One oblique projection maps every axis-aligned face (x, y or z constant) onto the
        # patch without degenerating; the primary colour tints the photograph.
        qp = q[pho]
        photo = sample_photo(table.texture[obj[pho]], qp[:, 0] + 0.5 * qp[:, 1],
                             qp[:, 2] + 0.5 * qp[:, 1])
        tint = cols[pho, 0] / (cols[pho, 0].mean(1, keepdims=True) + 1e-3)
        base[pho] = photo * (0.7 + 0.3 * tint)
    contrast = table.contrast[obj][:, None]
    out = base * (1.0 + 2.0 * contrast * detail[:, None])
    return np.clip(out, 0.0, 1.0)


@lru_cache(maxsize=1)
def photo_textures() -> np.ndarray:
    """Load the photo patches as float32 [T, S, S, 3] linear RGB (once).

    :raises FileNotFoundError: when ``TEXTURE_DIR`` holds no JPEG
    """
    import cv2

    names = sorted(n for n in os.listdir(TEXTURE_DIR) if n.lower().endswith('.jpg'))
    if not names:
        raise FileNotFoundError(f'no photo textures (*.jpg) in {TEXTURE_DIR}')
    patches = [cv2.cvtColor(cv2.imread(os.path.join(TEXTURE_DIR, n)), cv2.COLOR_BGR2RGB)
               for n in names]
    return (np.stack(patches).astype(np.float32) / 255.0) ** 2.2


def sample_photo(index: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup in the photo patches, tiled (wrapping) in both directions.

    :param index: int64 [N] patch of every sample (modulo the number of patches)
    :param u: float32 [N] horizontal coordinate, one unit per patch
    :param v: float32 [N] vertical coordinate, one unit per patch (up the patch)
    :return: float32 [N, 3] linear RGB
    """
    atlas = photo_textures()
    n_tex, size = atlas.shape[0], atlas.shape[1]
    k = np.asarray(index, np.int64) % n_tex
    x = np.asarray(u, np.float32) * size
    y = (1.0 - np.asarray(v, np.float32)) * size
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0 = x0.astype(np.int64) % size
    y0 = y0.astype(np.int64) % size
    x1, y1 = (x0 + 1) % size, (y0 + 1) % size
    top = atlas[k, y0, x0] * (1 - fx) + atlas[k, y0, x1] * fx
    bottom = atlas[k, y1, x0] * (1 - fx) + atlas[k, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass
class Lighting:
    """A directional light plus ambient light.

    :param direction: float32 [3] unit vector from surfaces toward the light (world frame)
    :param ambient: ambient intensity
    :param diffuse: directional intensity
    :param sky_horizon: linear RGB of the sky at the horizon
    :param sky_zenith: linear RGB of the sky straight up
    """

    direction: np.ndarray
    ambient: float = 0.35
    diffuse: float = 0.8
    sky_horizon: np.ndarray = field(
        default_factory=lambda: np.array([0.75, 0.8, 0.85], np.float32))
    sky_zenith: np.ndarray = field(
        default_factory=lambda: np.array([0.25, 0.4, 0.75], np.float32))

    def __post_init__(self) -> None:
        """Normalise the light direction."""
        d = np.asarray(self.direction, np.float32)
        self.direction = d / np.linalg.norm(d)
        self.sky_horizon = np.asarray(self.sky_horizon, np.float32)
        self.sky_zenith = np.asarray(self.sky_zenith, np.float32)


def shade(albedo_rgb: np.ndarray, n_world: np.ndarray, view_world: np.ndarray,
          specular: np.ndarray, shininess: np.ndarray, light: Lighting) -> np.ndarray:
    """Lambert shading with a directional and an ambient light, plus a Blinn-Phong highlight.

    :param albedo_rgb: float32 [N, 3]
    :param n_world: float32 [N, 3] unit normals (flipped to face the camera here)
    :param view_world: float32 [N, 3] unit ray directions (camera to surface)
    :param specular: float32 [N] highlight strength
    :param shininess: float32 [N] exponent
    :param light: the scene's light
    :return: float32 [N, 3] linear radiance (may exceed 1 at highlights)
    """
    sign = np.where(np.einsum('ni,ni->n', n_world, view_world) > 0, -1.0, 1.0).astype(
        np.float32)
    n = n_world * sign[:, None]                                      # facing the camera
    lam = np.maximum(n @ light.direction, 0.0)
    out = albedo_rgb * (light.ambient + light.diffuse * lam)[:, None]
    sel = np.flatnonzero((specular > 0) & (lam > 0))
    if len(sel):
        h = light.direction[None, :] - view_world[sel]
        h /= np.linalg.norm(h, axis=1, keepdims=True) + 1e-9
        cos_h = np.clip(np.einsum('ni,ni->n', n[sel], h), 0.0, 1.0)
        out[sel] += (specular[sel] * cos_h ** shininess[sel] * light.diffuse)[:, None]
    return out


def sky(d_world: np.ndarray, light: Lighting) -> np.ndarray:
    """Sky colour of rays that hit nothing.

    :param d_world: float32 [N, 3] ray directions (any length)
    :return: float32 [N, 3] linear RGB
    """
    up = np.clip(d_world[:, 2] / np.linalg.norm(d_world, axis=1), 0.0, 1.0)[:, None] ** 0.6
    return light.sky_horizon + (light.sky_zenith - light.sky_horizon) * up


@dataclass
class Sensor:
    """Camera sensor: exposure over time, vignetting, gamma, noise, 8-bit quantisation.

    :param exposure: base gain
    :param exposure_swing: relative amplitude of the slow exposure drift
    :param exposure_period_s: period of the drift (seconds)
    :param exposure_phase: phase of the drift (radians)
    :param read_noise: Gaussian noise std (fraction of full scale)
    :param shot_noise: signal-dependent noise factor
    :param vignetting: relative darkening at the image corners
    :param seed: noise seed (combined with the frame index)
    """

    exposure: float = 1.0
    exposure_swing: float = 0.15
    exposure_period_s: float = 6.0
    exposure_phase: float = 0.0
    read_noise: float = 0.01
    shot_noise: float = 0.02
    vignetting: float = 0.25
    seed: int = 0

    def gain(self, t: float) -> float:
        """Exposure gain at time ``t`` seconds."""
        return self.exposure * (1.0 + self.exposure_swing * np.sin(
            2.0 * np.pi * t / self.exposure_period_s + self.exposure_phase))

    def develop(self, radiance: np.ndarray, t: float, frame_index: int) -> np.ndarray:
        """Turn linear radiance into an 8-bit image.

        :param radiance: float32 [H, W, 3] linear RGB
        :param t: time in seconds (exposure)
        :param frame_index: selects the noise draw (deterministic per frame)
        :return: uint8 [H, W, 3] RGB
        """
        h, w = radiance.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        vig = (1.0 - self.vignetting * r2)[..., None]
        x = np.clip(radiance * (self.gain(t) * vig), 0.0, 1.0) ** (1.0 / 2.2)
        rng = np.random.default_rng([self.seed, frame_index])
        sigma = self.read_noise + self.shot_noise * np.sqrt(x)
        x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
        return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def random_sensor(rng: np.random.Generator, seed: int) -> Sensor:
    """Draw a sensor with random exposure behaviour and noise levels."""
    return Sensor(exposure=float(rng.uniform(0.85, 1.25)),
                  exposure_swing=float(rng.uniform(0.03, 0.25)),
                  exposure_period_s=float(rng.uniform(3.0, 10.0)),
                  exposure_phase=float(rng.uniform(0, 2 * np.pi)),
                  read_noise=float(rng.uniform(0.004, 0.015)),
                  shot_noise=float(rng.uniform(0.005, 0.03)),
                  vignetting=float(rng.uniform(0.05, 0.35)), seed=seed)


def palette(name: str) -> np.ndarray:
    """Named base colour (float32 [3], linear RGB) used by the scene families."""
    table = {
        'concrete': [0.45, 0.44, 0.42], 'asphalt': [0.12, 0.12, 0.13],
        'steel': [0.5, 0.52, 0.55], 'yellow': [0.8, 0.6, 0.05], 'orange': [0.85, 0.35, 0.05],
        'wood': [0.55, 0.35, 0.18], 'blue': [0.1, 0.2, 0.6], 'green': [0.15, 0.45, 0.15],
        'red': [0.7, 0.08, 0.06], 'white': [0.85, 0.85, 0.82], 'brick': [0.55, 0.22, 0.12],
        'skin': [0.75, 0.55, 0.42], 'dark': [0.08, 0.08, 0.09], 'sand': [0.7, 0.62, 0.45],
    }
    if name not in table:
        raise KeyError(f'no colour {name!r}')
    return np.asarray(table[name], np.float32)
