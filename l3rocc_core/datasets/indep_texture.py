"""Textures of the independent evaluation set: video patches and procedural images.

Two sources, neither shared with ``l3rocc synth``:

- photo tiles cut from frames of the Intel IoT devkit sample video ``car-detection.mp4``
  (CC BY 4.0, see ``data/independent/README.md``): asphalt, road paint, car bodies;
- procedural images made here: Worley cells, hexagonal tiles, wooden planks, polka dots, plaid,
  marble veins, tread plate, terrazzo chips, camouflage blobs and a knitted weave.

Every texture is a float32 [S, S, 3] linear-RGB image with a mip pyramid, sampled bilinearly with
mirrored repeat (so photo tiles tile without seams) at the level that matches each pixel's
footprint on the surface.
"""

from dataclasses import dataclass
import os
from typing import Callable, Dict, List

import cv2
import numpy as np

from l3rocc_core.paths import share_candidates

#: The photo tiles: a 3 x 2 atlas of 128 x 128 crops.
PATCH_FILE = os.path.join('data', 'independent', 'video_patches.png')
PATCH_NAMES = ('asphalt', 'road_paint', 'red_car', 'grey_car', 'asphalt_streaks', 'white_car')
_PATCH_SIDE = 128
_SIDE = 128


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB-encoded float [..., 3] in [0, 1] to linear (gamma 2.2 approximation)."""
    return np.power(np.clip(rgb, 0.0, 1.0), 2.2).astype(np.float32)


def patch_path() -> str:
    """Path of the photo-tile atlas.

    :raises FileNotFoundError: when no share folder has it
    """
    for root in share_candidates():
        path = os.path.join(root, PATCH_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f'{PATCH_FILE} not found in {share_candidates()}')


def photo_tiles() -> Dict[str, np.ndarray]:
    """Return the photo tiles by name, float32 [128, 128, 3] linear RGB."""
    bgr = cv2.imread(patch_path(), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (2 * _PATCH_SIDE, 3 * _PATCH_SIDE):
        raise ValueError(f'{patch_path()} is not the 384x256 tile atlas')
    rgb = srgb_to_linear(bgr[..., ::-1].astype(np.float32) / 255.0)
    s = _PATCH_SIDE
    return {name: np.ascontiguousarray(rgb[(i // 3) * s:(i // 3 + 1) * s, (i % 3) * s:
                                           (i % 3 + 1) * s])
            for i, name in enumerate(PATCH_NAMES)}


# --------------------------------------------------------------------------------------------
# Procedural images (periodic on the S x S square)
# --------------------------------------------------------------------------------------------

def _coords(side: int = _SIDE) -> np.ndarray:
    """float64 [S, S, 2] pixel-centre coordinates in [0, 1)."""
    g = (np.arange(side) + 0.5) / side
    return np.stack(np.meshgrid(g, g, indexing='xy'), -1)


def _blobs(rng: np.random.Generator, sigma: float, side: int = _SIDE) -> np.ndarray:
    """Smooth periodic random field in [0, 1], float64 [S, S] (blurred white noise, wrapped)."""
    from scipy import ndimage
    f = ndimage.gaussian_filter(rng.standard_normal((side, side)), sigma, mode='wrap')
    return (f - f.min()) / (np.ptp(f) + 1e-12)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


def _cells(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Worley cells: flat stones with dark joints."""
    pts = rng.random((int(rng.integers(12, 30)), 2))
    p = _coords()
    d = p[:, :, None, :] - pts[None, None]
    d -= np.round(d)                                                      # periodic distance
    dist = np.sort(np.linalg.norm(d, axis=-1), axis=-1)
    which = np.argmin(np.linalg.norm(d, axis=-1), axis=-1)
    shade = rng.uniform(0.7, 1.15, len(pts))[which]
    joint = np.clip((dist[..., 1] - dist[..., 0]) / 0.02, 0, 1)
    return _mix(c[2], c[0] * shade[..., None], joint)


def _hexagons(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Hexagonal tiles with grout, three colours in a 3-colouring of the lattice."""
    p = _coords() * int(rng.choice([4, 6, 8]))
    # Cube coordinates of a pointy-top hexagon lattice, rounded to the nearest centre.
    x = np.sqrt(3) / 3 * p[..., 0] - p[..., 1] / 3
    z = 2 / 3 * p[..., 1]
    y = -x - z
    rx, ry, rz = np.round(x), np.round(y), np.round(z)
    ex, ey, ez = np.abs(rx - x), np.abs(ry - y), np.abs(rz - z)
    fix_x = (ex > ey) & (ex > ez)
    fix_y = ~fix_x & (ey > ez)
    fix_z = ~fix_x & ~fix_y
    rx = np.where(fix_x, -ry - rz, rx)
    ry = np.where(fix_y, -rx - rz, ry)
    rz = np.where(fix_z, -rx - ry, rz)
    dx, dy, dz = x - rx, y - ry, z - rz
    # 1 on the perpendicular bisectors to the six neighbours, 0 at the centre.
    edge = np.maximum(np.maximum(np.abs(dx - dy), np.abs(dy - dz)), np.abs(dz - dx))
    colours = np.stack([c[0], c[1], c[0] * 0.75])
    base = colours[((rx - ry) % 3).astype(np.int64)]
    return _mix(base, c[2], np.clip((edge - 0.86) / 0.08, 0, 1))


def _planks(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Wooden planks with growth rings and grain."""
    n = int(rng.integers(3, 6))
    p = _coords()
    plank = np.floor(p[..., 1] * n)
    centre = rng.uniform(-1, 1, (n, 2))
    cy = (plank + 0.5) / n
    ring = np.hypot((p[..., 0] - 0.5 - centre[plank.astype(int), 0]) * 0.6,
                    (p[..., 1] - cy) * 4 + centre[plank.astype(int), 1])
    t = 0.5 + 0.5 * np.sin(ring * rng.uniform(40, 80) + _blobs(rng, 3) * 4)
    wood = _mix(c[0], c[1], t ** 2)
    seam = np.abs(p[..., 1] * n - np.round(p[..., 1] * n)) < 0.04
    return np.where(seam[..., None], c[1] * 0.5, wood)


def _dots(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Polka dots on a plain ground."""
    n = int(rng.choice([4, 6, 8]))
    p = _coords() * n
    stagger = np.floor(p[..., 1]) % 2 * 0.5
    d = np.hypot(p[..., 0] + stagger - np.floor(p[..., 0] + stagger) - 0.5,
                 p[..., 1] - np.floor(p[..., 1]) - 0.5)
    t = np.clip((rng.uniform(0.18, 0.33) - d) / 0.03, 0, 1)
    return _mix(c[0], c[1], t)


def _plaid(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Plaid: crossing bands of three colours."""
    p = _coords()
    k = int(rng.choice([2, 3, 4]))
    bx = (np.sin(2 * np.pi * k * p[..., 0]) > rng.uniform(-0.2, 0.5)).astype(np.float64)
    by = (np.sin(2 * np.pi * k * p[..., 1] + 1.0) > rng.uniform(-0.2, 0.5)).astype(np.float64)
    fine = np.maximum(np.sin(2 * np.pi * 4 * k * p[..., 0]),
                      np.sin(2 * np.pi * 4 * k * p[..., 1])) > 0.8
    out = _mix(_mix(c[0], c[1], 0.5 * bx), c[1], 0.5 * by)
    return np.where(fine[..., None], c[2], out)


def _marble(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Marble: veins along a turbulent sine."""
    p = _coords()
    turb = _blobs(rng, 6) * 3 + _blobs(rng, 2) * 0.8
    v = np.abs(np.sin(2 * np.pi * (p[..., 0] + p[..., 1]) * int(rng.integers(1, 3)) + turb * 3))
    return _mix(c[2], c[0], np.clip(v * 1.4, 0, 1) ** 0.4)


def _tread(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Tread plate: raised lozenges in alternating directions on brushed metal."""
    n = int(rng.choice([6, 8, 10]))
    p = _coords() * n
    cell = np.floor(p).astype(int)
    f = p - cell - 0.5
    flip = (cell[..., 0] + cell[..., 1]) % 2 == 1
    a = np.where(flip, f[..., 0] + f[..., 1], f[..., 0] - f[..., 1]) / np.sqrt(2)
    b = np.where(flip, f[..., 0] - f[..., 1], f[..., 0] + f[..., 1]) / np.sqrt(2)
    bump = ((a / 0.32) ** 2 + (b / 0.08) ** 2) < 1
    brushed = 0.9 + 0.2 * _blobs(rng, 0.7)
    return np.where(bump[..., None], c[0] * 1.25, c[0] * brushed[..., None])


def _terrazzo(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Terrazzo: coloured chips scattered on a cement ground."""
    out = np.broadcast_to(c[0], (_SIDE, _SIDE, 3)).copy()
    p = _coords()
    chips = rng.random((int(rng.integers(60, 140)), 2))
    r = rng.uniform(0.008, 0.03, len(chips))
    colour = rng.integers(1, 3, len(chips))
    d = p[:, :, None, :] - chips[None, None]
    d -= np.round(d)
    inside = np.linalg.norm(d, axis=-1) < r                             # [S, S, N]
    any_chip = inside.any(-1)
    which = np.argmax(inside, axis=-1)
    chip_rgb = c[colour] * rng.uniform(0.8, 1.2, (len(chips), 1))
    out[any_chip] = chip_rgb[which[any_chip]]
    return out


def _camouflage(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Three-tone blobs."""
    a, b = _blobs(rng, 8), _blobs(rng, 5)
    out = np.where((a > 0.55)[..., None], c[1], c[0])
    return np.where(((b > 0.6) & (a < 0.6))[..., None], c[2], out)


def _knit(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Knitted weave: interlocking V stitches."""
    n = int(rng.choice([16, 24, 32]))
    p = _coords() * n
    f = p - np.floor(p)
    v = np.abs(np.abs(f[..., 0] - 0.5) * 2 - f[..., 1])
    stripe = (np.floor(p[..., 1] / int(rng.integers(3, 7))) % 2)[..., None]
    base = _mix(c[0], c[1], stripe[..., 0] * 0.7)
    return base * (0.65 + 0.35 * np.clip(1 - v * 1.5, 0, 1))[..., None]


PROCEDURAL: Dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    'cells': _cells, 'hexagons': _hexagons, 'planks': _planks, 'dots': _dots, 'plaid': _plaid,
    'marble': _marble, 'tread': _tread, 'terrazzo': _terrazzo, 'camouflage': _camouflage,
    'knit': _knit}


def procedural(name: str, rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """Make one procedural texture.

    :param name: a key of :data:`PROCEDURAL`
    :param palette: float [3, 3] linear RGB colours (primary, secondary, accent)
    :return: float32 [128, 128, 3] linear RGB
    """
    img = PROCEDURAL[name](rng, np.asarray(palette, np.float64))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

@dataclass
class Texture:
    """A texture with its mip pyramid.

    :param name: what it is
    :param levels: float32 [S / 2^k, S / 2^k, 3] images, finest first
    """

    name: str
    levels: List[np.ndarray]

    @classmethod
    def from_image(cls, name: str, img: np.ndarray) -> 'Texture':
        """Build the pyramid by 2x2 box filtering down to 4 x 4."""
        levels = [np.asarray(img, np.float32)]
        while levels[-1].shape[0] > 4:
            a = levels[-1]
            levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
        return cls(name, levels)

    def sample(self, st: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Bilinear, mirrored-repeat lookup at the level matching each footprint.

        :param st: float [M, 2] texture coordinates (1 = one texture width)
        :param footprint: float [M] size of a pixel on the surface in texture widths
        :return: float32 [M, 3]
        """
        side = self.levels[0].shape[0]
        level = np.clip(np.floor(np.log2(np.maximum(footprint * side, 1e-9))), 0,
                        len(self.levels) - 1).astype(np.int64)
        out = np.empty((len(st), 3), np.float32)
        for k in np.unique(level):
            sel = np.flatnonzero(level == k)
            img = self.levels[k]
            n = img.shape[0]
            # Mirrored repeat: period 2 in texture widths.
            m = np.mod(st[sel], 2.0)
            m = np.where(m > 1.0, 2.0 - m, m) * n - 0.5
            i0 = np.floor(m).astype(np.int64)
            f = (m - i0).astype(np.float32)
            x0, y0 = np.clip(i0[:, 0], 0, n - 1), np.clip(i0[:, 1], 0, n - 1)
            x1, y1 = np.clip(i0[:, 0] + 1, 0, n - 1), np.clip(i0[:, 1] + 1, 0, n - 1)
            fx, fy = f[:, :1], f[:, 1:]
            out[sel] = ((img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy)
                        + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy)
        return out
