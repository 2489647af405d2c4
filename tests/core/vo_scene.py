"""Analytic scenes for visual odometry tests: textured planes seen by a pinhole camera.

Each pixel's ray is intersected with every plane (vectorised); the nearest hit takes the
plane's texture (smooth random noise, tiled) at its metric plane coordinates. Planes may move
(a function of time), so moving objects with exact geometry are available too. The world is
z up with the ground at z = 0.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import cv2
import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.stream import pose_from_xyz_rpy

TEXTURE_SIZE = 256
METRES_PER_TEXEL = 0.04
#: Rendered at this many times the resolution, then averaged down (no texture aliasing).
SUPERSAMPLE = 2


def noise_texture(seed: int) -> np.ndarray:
    """float32 [256, 256] texture in [0, 1]: blurred noise at two scales (corners everywhere)."""
    rng = np.random.default_rng(seed)
    n = TEXTURE_SIZE

    def periodic_blur(sigma: float) -> np.ndarray:
        # Blurred as a 3 x 3 tiling, so that the texture tiles seamlessly.
        tiled = np.tile(rng.random((n, n)).astype(np.float32), (3, 3))
        return cv2.GaussianBlur(tiled, (0, 0), sigma)[n:2 * n, n:2 * n]
    fine, coarse = periodic_blur(1.2), periodic_blur(5.0)
    t = 0.6 * (fine - fine.mean()) / fine.std() + 0.4 * (coarse - coarse.mean()) / coarse.std()
    return np.clip(0.5 + 0.18 * t, 0.0, 1.0).astype(np.float32)


@dataclass
class Plane:
    """A textured rectangle (or unbounded plane): ``origin + a e1 + b e2``.

    :param origin: [3] metres
    :param e1: [3] unit vector along the first texture axis
    :param e2: [3] unit vector along the second texture axis
    :param extent: (a_max, b_max) metres from the origin, or None (unbounded)
    :param seed: texture seed
    :param motion: t (s) -> [3] displacement of the plane (moving objects), or None
    """

    origin: Sequence[float]
    e1: Sequence[float]
    e2: Sequence[float]
    extent: Optional[Sequence[float]] = None
    seed: int = 0
    motion: Optional[Callable[[float], np.ndarray]] = None


def room(seed: int = 0) -> List[Plane]:
    """Ground (z = 0), a front wall 6 m ahead (x = 6), side walls at y = +-4, two boxes."""
    return [
        Plane([-20, -20, 0], [1, 0, 0], [0, 1, 0], None, seed),
        Plane([6, -10, 0], [0, 1, 0], [0, 0, 1], None, seed + 1),
        Plane([-20, 4, 0], [1, 0, 0], [0, 0, 1], None, seed + 2),
        Plane([-20, -4, 0], [1, 0, 0], [0, 0, 1], None, seed + 3),
        Plane([3.5, -1.5, 0], [0, 1, 0], [0, 0, 1], (0.8, 0.9), seed + 4),
        Plane([4.0, 0.8, 0], [0, 1, 0], [0, 0, 1], (1.0, 1.4), seed + 5),
    ]


class Renderer:
    """Renders a list of planes with a pinhole camera.

    :param camera: the camera (no distortion)
    :param planes: the scene
    """

    def __init__(self, camera: PinholeCamera, planes: List[Plane]):
        """Precompute the pixel rays and textures."""
        self.camera = camera
        self.planes = planes
        self.textures = [noise_texture(p.seed) for p in planes]
        k = SUPERSAMPLE
        # Sub-pixel sample positions: pixel centres at integers, k x k samples per pixel.
        u, v = np.meshgrid((np.arange(camera.width * k) + 0.5) / k - 0.5,
                           (np.arange(camera.height * k) + 0.5) / k - 0.5)
        self.rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy,
                              np.ones_like(u, dtype=np.float64)], -1).reshape(-1, 3)

    def render(self, T_world_cam: np.ndarray, t: float = 0.0, depth: bool = False):
        """Return uint8 [H, W, 3] RGB at pose ``T_world_cam`` and time ``t`` (+ depth [H, W])."""
        k = SUPERSAMPLE
        h, w = self.camera.height * k, self.camera.width * k
        d = self.rays @ T_world_cam[:3, :3].T
        o = T_world_cam[:3, 3]
        best = np.full(len(d), np.inf)
        value = np.full(len(d), 0.5, np.float32)
        for plane, tex in zip(self.planes, self.textures):
            e1, e2 = np.asarray(plane.e1, float), np.asarray(plane.e2, float)
            p0 = np.asarray(plane.origin, float)
            if plane.motion is not None:
                p0 = p0 + plane.motion(t)
            E = np.stack([e1, e2, np.cross(e1, e2)], 1)      # plane axes and normal
            dE = d @ E
            oE = (o - p0) @ E
            with np.errstate(divide='ignore', invalid='ignore'):
                s = -oE[2] / dE[:, 2]                         # ray parameter = z-depth
            a, b = oE[0] + s * dE[:, 0], oE[1] + s * dE[:, 1]
            ok = np.isfinite(s) & (s > 1e-6) & (s < best)
            if plane.extent is not None:
                ok &= (a >= 0) & (a <= plane.extent[0]) & (b >= 0) & (b <= plane.extent[1])
            if not ok.any():
                continue
            # Texel coordinates; the texture tiles the plane (BORDER_WRAP), clipped to the
            # range remap handles.
            map_x = np.clip(np.where(ok, a, 0.0) / METRES_PER_TEXEL, -3e4, 3e4)
            map_y = np.clip(np.where(ok, b, 0.0) / METRES_PER_TEXEL, -3e4, 3e4)
            sample = cv2.remap(tex, map_x.astype(np.float32).reshape(h, w),
                               map_y.astype(np.float32).reshape(h, w), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_WRAP).ravel()
            value[ok] = sample[ok]
            best[ok] = s[ok]
        out = (self.camera.width, self.camera.height)
        value = cv2.resize(value.reshape(h, w), out, interpolation=cv2.INTER_AREA)
        gray = np.clip(value * 255.0, 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        if depth:
            z = np.where(np.isfinite(best), best, 0.0).reshape(h, w).astype(np.float32)
            return rgb, z[k // 2::k, k // 2::k]
        return rgb


def camera_pose(x: float, y: float, z: float, yaw_deg: float = 0.0,
                pitch_deg: float = 15.0) -> np.ndarray:
    """T_world_cam (optical frame) of a camera at (x, y, z) turned by yaw, pitched down."""
    return pose_from_xyz_rpy([x, y, z, 0.0, np.radians(pitch_deg), np.radians(yaw_deg)])
