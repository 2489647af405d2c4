"""Software rendering of occupancy for previews: shaded voxel cubes from a fixed 3/4 view.

No GPU and no display: voxel faces are point-sampled, projected with a virtual pinhole camera and
splatted into a z-buffer (torch ``scatter_reduce`` 'amin'), all vectorised. Only the faces that
look towards the virtual camera and are not covered by an occupied neighbour are drawn; each face
is coloured by the voxel's height (a matplotlib colormap) and shaded by a fixed light, with darker
edges so individual cubes stay readable.

Conventions: the virtual camera is an optical frame (x right, y down, z forward) given as
``T_world_view`` (view to world); the world's up axis is +z (gravity-aligned ``world_frame``).
"""

from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from l3rocc_core.grid import VoxelGrid

BACKGROUND = (24, 26, 30)
_LUTS: Dict[str, np.ndarray] = {}


def colormap_lut(name: str = 'turbo') -> np.ndarray:
    """Return a matplotlib colormap as a uint8 [256, 3] RGB lookup table (cached)."""
    if name not in _LUTS:
        import matplotlib
        cmap = matplotlib.colormaps[name]
        _LUTS[name] = (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return _LUTS[name]


def colorize_depth(depth: np.ndarray, vmin: Optional[float] = None,
                   vmax: Optional[float] = None, cmap: str = 'turbo') -> np.ndarray:
    """Colour-map a depth image; pixels without depth are black.

    :param depth: float [H, W] metres, 0 / NaN = invalid
    :param vmin: metres at the colormap's start (default: 2nd percentile of valid depth)
    :param vmax: metres at its end (default: 98th percentile)
    :return: uint8 [H, W, 3] RGB
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f'depth must be [H, W], got {d.shape}')
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), np.uint8)
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if vmin is None else float(vmin)
    hi = float(np.percentile(d[valid], 98)) if vmax is None else float(vmax)
    t = np.clip((d - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    idx = (np.nan_to_num(t) * 255).astype(np.int64)
    out[valid] = colormap_lut(cmap)[idx[valid]]
    return out


@dataclass(frozen=True)
class ViewCamera:
    """A virtual pinhole camera (optical frame) for rendering.

    :param T_world_view: float64 [4, 4] view (optical frame) to world
    :param width: pixels
    :param height: pixels
    :param f: focal length in pixels (square pixels)
    :param cx: principal point x in pixels (default: the image centre)
    :param cy: principal point y in pixels (default: the image centre)
    """

    T_world_view: np.ndarray
    width: int
    height: int
    f: float
    cx: Optional[float] = None
    cy: Optional[float] = None

    @property
    def eye(self) -> np.ndarray:
        """float64 [3] camera centre in the world."""
        return self.T_world_view[:3, 3]

    def project(self, p_world: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project world points.

        :param p_world: [..., 3] metres
        :return: (uv float [..., 2] pixels, z [...] metres along the view axis)
        """
        R = self.T_world_view[:3, :3]
        p = (np.asarray(p_world, np.float64) - self.eye) @ R
        z = p[..., 2]
        zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
        cx = (self.width - 1) / 2 if self.cx is None else self.cx
        cy = (self.height - 1) / 2 if self.cy is None else self.cy
        uv = np.stack([self.f * p[..., 0] / zs + cx, self.f * p[..., 1] / zs + cy], -1)
        return uv, z

    def fitted(self, p_world: np.ndarray, fill: float = 0.9) -> 'ViewCamera':
        """Return this pose with focal length and principal point set to fit ``p_world``.

        :param p_world: [n, 3] points that must be visible (in front of the camera)
        :param fill: share of the image width/height the points' extent should take
        """
        uv, z = self.project(p_world)
        uv = uv[z > 1e-6]
        if len(uv) < 2:
            return self
        cx = (self.width - 1) / 2 if self.cx is None else self.cx
        cy = (self.height - 1) / 2 if self.cy is None else self.cy
        lo, hi = uv.min(0), uv.max(0)
        ext = np.maximum(hi - lo, 1.0)
        s = fill * min(self.width / ext[0], self.height / ext[1])
        mid = (lo + hi) / 2
        return ViewCamera(self.T_world_view, self.width, self.height, self.f * s,
                          (self.width - 1) / 2 - s * (mid[0] - cx),
                          (self.height - 1) / 2 - s * (mid[1] - cy))


def look_at(eye: Sequence[float], target: Sequence[float],
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Pose of an optical frame at ``eye`` looking at ``target`` with ``up`` towards image top.

    :return: float64 [4, 4] T_world_view (x right, y down, z forward)
    """
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-9:          # looking straight along up: any x will do
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def three_quarter_view(bounds_min: Sequence[float], bounds_max: Sequence[float], width: int,
                       height: int, azimuth_deg: float = 45.0, elevation_deg: float = 35.0,
                       fov_deg: float = 50.0) -> ViewCamera:
    """Return a view from above one corner that fits an axis-aligned box.

    :param bounds_min: [3] metres, box min corner
    :param bounds_max: [3] metres, box max corner
    :param width: pixels
    :param height: pixels
    :param azimuth_deg: direction of the camera from the box centre, from +x towards +y
    :param elevation_deg: height angle of the camera above the horizontal
    :param fov_deg: horizontal field of view
    """
    lo = np.asarray(bounds_min, np.float64)
    hi = np.asarray(bounds_max, np.float64)
    centre = (lo + hi) / 2
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    f = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    half = math.atan(min(width, height) / 2 / f)
    dist = radius / math.sin(half)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                          math.sin(el)])
    view = ViewCamera(look_at(centre + dist * direction, centre), int(width), int(height), f)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    return view.fitted(corners)


class VoxelRenderer:
    """Renders occupied voxels of a grid as shaded cubes from one :class:`ViewCamera`.

    :param grid: the voxel grid of the occupancy
    :param view: the virtual camera
    :param height_range: (z_min, z_max) metres mapped onto the colormap (default: the grid's)
    :param cmap: matplotlib colormap name for the height colours
    :param background: RGB of empty pixels
    :param device: torch device of the z-buffer
    """

    def __init__(self, grid: VoxelGrid, view: ViewCamera,
                 height_range: Optional[Tuple[float, float]] = None, cmap: str = 'turbo',
                 background: Tuple[int, int, int] = BACKGROUND, device: str = 'cpu'):
        """Prepare colours and the light."""
        self.grid = grid
        self.view = view
        z0 = grid.origin[2]
        self.height_range = height_range or (z0, z0 + grid.dims[2] * grid.voxel_size)
        self.lut = colormap_lut(cmap).astype(np.float32)
        self.background = np.asarray(background, np.uint8)
        self.device = device
        R = view.T_world_view[:3, :3]
        # Light from above, slightly from the viewer's left: top faces brightest.
        light = 0.8 * np.array([0.0, 0.0, 1.0]) - 0.45 * R[:, 2] - 0.35 * R[:, 0]
        self.light = light / np.linalg.norm(light)

    def render(self, occupied: np.ndarray) -> np.ndarray:
        """Draw the occupied voxels.

        :param occupied: bool [X, Y, Z] on the renderer's grid
        :return: uint8 [H, W, 3] RGB
        """
        occ = np.asarray(occupied, bool)
        if occ.shape != tuple(self.grid.dims):
            raise ValueError(f'occupied shape {occ.shape} != grid {self.grid.dims}')
        v = self.view
        h, w = v.height, v.width
        image = np.empty((h * w, 3), np.uint8)
        image[:] = self.background
        ijk = np.argwhere(occ)
        if len(ijk) == 0:
            return image.reshape(h, w, 3)
        pts, colours = self._face_samples(occ, ijk)
        if len(pts) == 0:
            return image.reshape(h, w, 3)
        uv, z = v.project(pts)
        ok = (z > 1e-3) & (uv[:, 0] > -1) & (uv[:, 0] < w) & (uv[:, 1] > -1) & (uv[:, 1] < h)
        uv, z, colours = uv[ok], z[ok], colours[ok]
        # 2 x 2 splats: samples are at most ~1.5 px apart, so faces come out closed.
        base = np.floor(uv - 0.5).astype(np.int64)
        offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.int64)
        px = (base[:, None, :] + offsets[None]).reshape(-1, 2)
        zz = np.repeat(z, 4)
        cc = np.repeat(colours, 4, axis=0)
        keep = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        px, zz, cc = px[keep], zz[keep], cc[keep]
        flat = torch.from_numpy(px[:, 1] * w + px[:, 0]).to(self.device)
        zt = torch.from_numpy(zz.astype(np.float32)).to(self.device)
        zbuf = torch.full((h * w,), float('inf'), device=self.device)
        zbuf.scatter_reduce_(0, flat, zt, reduce='amin', include_self=True)
        win = (zt <= zbuf[flat]).cpu().numpy()
        image[px[win, 1] * w + px[win, 0]] = cc[win]
        return image.reshape(h, w, 3)

    def _face_samples(self, occ: np.ndarray, ijk: np.ndarray
                      ) -> Tuple[np.ndarray, np.ndarray]:
        """Sample points on the visible, exposed faces of the occupied voxels.

        :return: (points float64 [P, 3] metres, colours uint8 [P, 3])
        """
        g = self.grid
        vs = g.voxel_size
        dims = np.asarray(g.dims)
        centres = np.asarray(g.origin) + (ijk + 0.5) * vs
        eye = self.view.eye
        dist = np.linalg.norm(centres - eye, axis=1)
        t = (centres[:, 2] - self.height_range[0]) / max(
            self.height_range[1] - self.height_range[0], 1e-6)
        base_col = self.lut[np.clip((t * 255).astype(np.int64), 0, 255)]        # [N, 3]
        # Sub-samples per face edge so that samples land <= ~1.5 px apart.
        m_vox = np.clip(np.ceil(self.view.f * vs / np.maximum(dist, 1e-3) / 1.5), 1,
                        12).astype(np.int64)
        pts_all: List[np.ndarray] = []
        col_all: List[np.ndarray] = []
        for axis in range(3):
            sign = np.where(eye[axis] >= centres[:, axis], 1, -1)
            nb = ijk.copy()
            nb[:, axis] += sign
            inside = (nb[:, axis] >= 0) & (nb[:, axis] < dims[axis])
            covered = np.zeros(len(ijk), bool)
            covered[inside] = occ[nb[inside, 0], nb[inside, 1], nb[inside, 2]]
            faces = np.flatnonzero(~covered)
            if faces.size == 0:
                continue
            normal = np.zeros((faces.size, 3))
            normal[:, axis] = sign[faces]
            shade = 0.35 + 0.65 * np.clip(normal @ self.light, 0.0, 1.0)
            b_ax, c_ax = [a for a in range(3) if a != axis]
            for m in np.unique(m_vox[faces]):
                sel = faces[m_vox[faces] == m]
                grid_uv = (np.arange(m) + 0.5) / m - 0.5
                uu, vv = np.meshgrid(grid_uv, grid_uv, indexing='ij')
                offs = np.zeros((m * m, 3))
                offs[:, b_ax] = uu.reshape(-1) * vs
                offs[:, c_ax] = vv.reshape(-1) * vs
                edge = np.ones(m * m, np.float32)
                if m >= 3:
                    border = (np.abs(uu) > 0.5 - 1.0 / m) | (np.abs(vv) > 0.5 - 1.0 / m)
                    edge = np.where(border.reshape(-1), 0.72, 1.0).astype(np.float32)
                face_c = centres[sel].copy()
                face_c[:, axis] += sign[sel] * 0.5 * vs
                pts_all.append((face_c[:, None, :] + offs[None]).reshape(-1, 3))
                k = np.searchsorted(faces, sel)
                col = (base_col[sel][:, None, :] * shade[k][:, None, None]
                       * edge[None, :, None])
                col_all.append(np.clip(col, 0, 255).astype(np.uint8).reshape(-1, 3))
        if not pts_all:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        return np.concatenate(pts_all), np.concatenate(col_all)

    def draw_box(self, image: np.ndarray, lo: Sequence[float], hi: Sequence[float],
                 colour: Tuple[int, int, int] = (90, 90, 100)) -> np.ndarray:
        """Draw the floor rectangle of an axis-aligned box (z = lo[2]) as thin lines, in place."""
        corners = np.array([[lo[0], lo[1], lo[2]], [hi[0], lo[1], lo[2]],
                            [hi[0], hi[1], lo[2]], [lo[0], hi[1], lo[2]]])
        uv, z = self.view.project(corners)
        if np.all(z > 0):
            pts = np.round(uv).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], True, colour, 1, cv2.LINE_AA)
        return image

    def draw_camera(self, image: np.ndarray, T_world_cam: np.ndarray,
                    trajectory: Optional[np.ndarray] = None, size_m: float = 0.12,
                    colour: Tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        """Draw a real camera as a small frustum (and its path so far), in place.

        :param image: uint8 [H, W, 3] from :meth:`render`
        :param T_world_cam: float64 [4, 4] camera (optical frame) to world
        :param trajectory: float [K, 3] earlier camera positions, or None
        :param size_m: frustum depth in metres
        """
        if trajectory is not None and len(trajectory) > 1:
            uv, z = self.view.project(np.asarray(trajectory))
            if np.all(z > 0):
                pts = np.round(uv).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(image, [pts], False, (200, 200, 200), 1, cv2.LINE_AA)
        s = size_m
        corners_cam = np.array([[0, 0, 0], [-0.6 * s, -0.45 * s, s], [0.6 * s, -0.45 * s, s],
                                [0.6 * s, 0.45 * s, s], [-0.6 * s, 0.45 * s, s]])
        p = corners_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
        uv, z = self.view.project(p)
        if np.any(z <= 0):
            return image
        q = [tuple(int(round(c)) for c in pt) for pt in uv]
        for a, b in ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)):
            cv2.line(image, q[a], q[b], colour, 1, cv2.LINE_AA)
        return image


def occupied_bounds(grid: VoxelGrid, flat_indices: np.ndarray, lo_pct: float = 1.0,
                    hi_pct: float = 99.0) -> Tuple[np.ndarray, np.ndarray]:
    """Robust box around occupied voxels (percentiles of their centres, plus one voxel).

    :param grid: the grid of ``flat_indices``
    :param flat_indices: int64 [n] occupied voxels (any rows, repeats allowed)
    :return: (min [3], max [3]) metres; the whole grid when ``flat_indices`` is empty
    """
    if len(flat_indices) == 0:
        return np.asarray(grid.origin, np.float64), grid.grid_max
    c = grid.flat_to_world(np.asarray(flat_indices, np.int64))
    lo = np.percentile(c, lo_pct, axis=0) - grid.voxel_size
    hi = np.percentile(c, hi_pct, axis=0) + grid.voxel_size
    return lo, hi


def put_label(image: np.ndarray, text: str, origin: Tuple[int, int] = (6, 18),
              scale: float = 0.5) -> np.ndarray:
    """Write ``text`` with a dark outline (readable on any background), in place."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return image


def fit_panel(image: Optional[np.ndarray], width: int, height: int,
              label: str = '') -> np.ndarray:
    """Resize an RGB image into a ``width`` x ``height`` panel (letterboxed); None = blank.

    :param image: uint8 [h, w, 3] or None
    :return: uint8 [height, width, 3]
    """
    panel = np.zeros((height, width, 3), np.uint8)
    panel[:] = BACKGROUND
    if image is not None:
        h, w = image.shape[:2]
        s = min(width / w, height / h)
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        y0, x0 = (height - nh) // 2, (width - nw) // 2
        panel[y0:y0 + nh, x0:x0 + nw] = small
    if label:
        put_label(panel, label)
    return panel
