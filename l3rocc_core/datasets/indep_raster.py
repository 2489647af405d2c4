"""A numpy z-buffer rasteriser for the independent evaluation set.

Triangles are clipped against the near plane, back faces culled, projected, and scan-converted
row by row: each image row that crosses a triangle gets the exact span of pixel centres between
the triangle's edges (all vectorised, in chunks). The depth of a fragment comes from the plane of
its triangle: for a ray ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` and the plane ``n . p = d``
(camera frame), ``1 / z = n . r / d`` is affine in (u, v), so the depth at every pixel centre is
the exact z of the ray's intersection with the triangle. The nearest fragment of each pixel
wins; the barycentric coordinates of the visible point in its (unclipped) triangle are computed
afterwards for the winners only, for deferred shading.

Pixel (u, v) has its centre at integer coordinates, its ray being ``((u - cx) / fx,
(v - cy) / fy, 1)`` as in :meth:`l3rocc_core.camera.PinholeCamera.pixel_rays`.
"""

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.datasets.indep_mesh import rotate

#: Most bounding-box pixels scan-converted at once (bounds the temporary memory).
CHUNK_PIXELS = 2_000_000


@dataclass
class Raster:
    """The visible surface of every pixel.

    :param width: pixels
    :param height: pixels
    :param depth: float64 [H * W] z (perspective) or map depth (orthographic); inf = nothing
    :param tri: int64 [H * W] triangle index, -1 = nothing
    """

    width: int
    height: int
    depth: np.ndarray
    tri: np.ndarray

    @classmethod
    def empty(cls, width: int, height: int) -> 'Raster':
        """Return a raster with nothing drawn."""
        n = width * height
        return cls(width, height, np.full(n, np.inf), np.full(n, -1, np.int64))

    def copy(self) -> 'Raster':
        """Return an independent copy."""
        return Raster(self.width, self.height, self.depth.copy(), self.tri.copy())


def clip_near(tri_cam: np.ndarray, near: float) -> Tuple[np.ndarray, np.ndarray]:
    """Clip triangles to z >= near (camera frame), keeping their winding.

    :param tri_cam: float [F, 3, 3] corners in the camera frame (metres)
    :param near: metres, > 0
    :return: (corners float64 [F', 3, 3], source triangle int64 [F'])
    """
    behind = tri_cam[..., 2] < near
    count = behind.sum(1)
    out_p, out_src = [tri_cam[count == 0]], [np.flatnonzero(count == 0)]
    for n_behind in (1, 2):
        src = np.flatnonzero(count == n_behind)
        if not len(src):
            continue
        # Roll each triangle so its odd corner (the one behind, or the one in front) comes first;
        # a cyclic roll keeps the winding.
        odd = np.argmax(behind[src] if n_behind == 1 else ~behind[src], axis=1)
        order = (odd[:, None] + np.arange(3)[None, :]) % 3
        p = np.take_along_axis(tri_cam[src], order[..., None], 1)
        a, pb, pc = p[:, 0], p[:, 1], p[:, 2]
        ab = a + ((near - a[:, 2]) / (pb[:, 2] - a[:, 2]))[:, None] * (pb - a)
        ac = a + ((near - a[:, 2]) / (pc[:, 2] - a[:, 2]))[:, None] * (pc - a)
        if n_behind == 1:
            out_p += [np.stack([ab, pb, pc], 1), np.stack([ab, pc, ac], 1)]
            out_src += [src, src]
        else:
            out_p.append(np.stack([a, ab, ac], 1))
            out_src.append(src)
    return np.concatenate(out_p).astype(np.float64), np.concatenate(out_src).astype(np.int64)


def _spans(xy: np.ndarray, width: int, height: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Pixel centres covered by triangles in pixel coordinates, chunk by chunk.

    A pixel centre on an edge belongs to both triangles (the depth test picks one).

    :param xy: float64 [F, 3, 2] corners (pixels)
    :return: iterator of (triangle int64 [M], flat pixel index int64 [M])
    """
    y0 = np.maximum(np.ceil(xy[..., 1].min(1)), 0).astype(np.int64)
    y1 = np.minimum(np.floor(xy[..., 1].max(1)), height - 1).astype(np.int64)
    x_lo = np.maximum(np.ceil(xy[..., 0].min(1)), 0)
    x_hi = np.minimum(np.floor(xy[..., 0].max(1)), width - 1)
    rows = np.maximum(y1 - y0 + 1, 0)
    area = rows * np.maximum(x_hi - x_lo + 1, 0)
    live = np.flatnonzero(area > 0)
    cum = np.cumsum(area[live])
    cuts = np.searchsorted(cum, np.arange(CHUNK_PIXELS, cum[-1] if len(cum) else 0,
                                          CHUNK_PIXELS), side='right')
    for sel in np.split(live, cuts):
        if not len(sel):
            continue
        t = np.repeat(sel, rows[sel])
        start = np.cumsum(rows[sel]) - rows[sel]
        y = (y0[t] + np.arange(len(t)) - np.repeat(start, rows[sel])).astype(np.float64)
        # x where the row crosses each edge that spans it (horizontal edges span no row alone).
        a, b = xy[t], np.roll(xy[t], -1, axis=1)                         # [R, 3, 2] edges a->b
        dy = b[..., 1] - a[..., 1]
        s = (y[:, None] - a[..., 1]) / np.where(dy == 0, 1.0, dy)
        spans = (dy != 0) & (s >= 0) & (s <= 1)
        x = a[..., 0] + s * (b[..., 0] - a[..., 0])
        xl = np.ceil(np.where(spans, x, np.inf).min(1))
        xr = np.floor(np.where(spans, x, -np.inf).max(1))
        xl = np.maximum(xl, x_lo[t])
        xr = np.minimum(xr, x_hi[t])
        n = np.where(np.isfinite(xl) & np.isfinite(xr), np.maximum(xr - xl + 1, 0), 0).astype(
            np.int64)
        owner = np.repeat(np.arange(len(t)), n)
        first = np.cumsum(n) - n
        px = xl[owner].astype(np.int64) + np.arange(len(owner)) - np.repeat(first, n)
        yield t[owner], y[owner].astype(np.int64) * width + px


def _plane_coefficients(tri: np.ndarray, camera: Optional[PinholeCamera]) -> np.ndarray:
    """Coefficients (a, b, c) with value = a u + b v + c at pixel (u, v), per triangle.

    Perspective (``camera`` given): the value is 1/z of the triangle's plane along the pixel's
    ray. Orthographic (``camera`` None; ``tri`` in map coordinates): the value is the map depth.

    :param tri: float64 [F, 3, 3]
    :return: float64 [F, 3]
    """
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    d = np.einsum('fk,fk->f', n, tri[:, 0])
    if camera is None:
        # n . (u, v, z) = d  ->  z = (d - n_u u - n_v v) / n_z
        nz = np.where(n[:, 2] == 0, 1e-300, n[:, 2])
        return np.stack([-n[:, 0] / nz, -n[:, 1] / nz, d / nz], 1)
    d = np.where(d == 0, 1e-300, d)
    return np.stack([n[:, 0] / (camera.fx * d), n[:, 1] / (camera.fy * d),
                     (n[:, 2] - n[:, 0] * camera.cx / camera.fx
                      - n[:, 1] * camera.cy / camera.fy) / d], 1)


def _draw(out: Raster, xy: np.ndarray, coef: np.ndarray, src: np.ndarray,
          perspective: bool) -> None:
    """Scan-convert and depth-test triangles into ``out`` (in place)."""
    width = out.width
    for t, pix in _spans(xy, out.width, out.height):
        c = coef[t]
        value = c[:, 0] * (pix % width) + c[:, 1] * (pix // width) + c[:, 2]
        if perspective:
            ok = value > 0
            t, pix, depth = t[ok], pix[ok], 1.0 / value[ok]
        else:
            depth = value
        best = out.depth.copy()
        np.minimum.at(best, pix, depth)
        win = depth < out.depth[pix]
        win &= depth == best[pix]
        out.depth[pix[win]] = depth[win]
        out.tri[pix[win]] = src[t[win]]


def rasterise(tri_world: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray,
              near: float = 0.05, into: Optional[Raster] = None,
              tri_offset: int = 0) -> Raster:
    """Draw triangles through a pinhole camera into a z-buffer.

    :param tri_world: float [F, 3, 3] triangle corners in the world frame (outward winding:
        triangles seen from behind are culled)
    :param camera: undistorted pinhole camera
    :param T_world_cam: float [4, 4] camera (optical frame) to world
    :param near: near clipping distance (metres)
    :param into: an existing raster to draw over (modified and returned), e.g. the static scene
    :param tri_offset: added to the triangle indices written into the raster
    :return: the raster (depth = z in metres)
    """
    out = into if into is not None else Raster.empty(camera.width, camera.height)
    T = np.asarray(T_world_cam, np.float64)
    p_cam = rotate(T[:3, :3].T, np.asarray(tri_world, np.float64) - T[:3, 3])  # R^T (p - t)
    # Back faces: the outward normal points away from the camera at the origin.
    n = np.cross(p_cam[:, 1] - p_cam[:, 0], p_cam[:, 2] - p_cam[:, 0])
    front = np.flatnonzero(np.einsum('fk,fk->f', n, p_cam[:, 0]) < 0)
    coef = _plane_coefficients(p_cam[front], camera)
    p, src = clip_near(p_cam[front], near)
    z = p[..., 2]
    xy = np.stack([camera.fx * p[..., 0] / z + camera.cx, camera.fy * p[..., 1] / z + camera.cy],
                  -1)
    _draw(out, xy, coef[src], front[src] + tri_offset, True)
    return out


def rasterise_ortho(tri_map: np.ndarray, width: int, height: int,
                    into: Optional[Raster] = None) -> Raster:
    """Draw triangles given in map coordinates (x, y in pixels, z depth) orthographically.

    Both sides of each triangle are drawn (shadow maps); faces seen edge-on are skipped.

    :param tri_map: float [F, 3, 3]
    :param into: an existing raster to draw over
    """
    out = into if into is not None else Raster.empty(width, height)
    tri_map = np.asarray(tri_map, np.float64)
    n = np.cross(tri_map[:, 1] - tri_map[:, 0], tri_map[:, 2] - tri_map[:, 0])
    keep = np.flatnonzero(np.abs(n[:, 2]) > 1e-12)
    _draw(out, tri_map[keep, :, :2], _plane_coefficients(tri_map[keep], None), keep, False)
    return out


def barycentric(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """3D barycentric coordinates of points lying in triangles.

    :param points: float [M, 3]
    :param tri: float [M, 3, 3] the triangle of each point
    :return: float64 [M, 3]
    """
    e1, e2, q = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], points - tri[:, 0]
    d11 = np.einsum('mk,mk->m', e1, e1)
    d12 = np.einsum('mk,mk->m', e1, e2)
    d22 = np.einsum('mk,mk->m', e2, e2)
    q1 = np.einsum('mk,mk->m', q, e1)
    q2 = np.einsum('mk,mk->m', q, e2)
    den = d11 * d22 - d12 * d12
    den = np.where(den == 0, 1.0, den)
    b = (d22 * q1 - d12 * q2) / den
    c = (d11 * q2 - d12 * q1) / den
    return np.stack([1 - b - c, b, c], 1)
