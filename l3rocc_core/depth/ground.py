"""Estimated depth close to the ground plane is the ground plane.

The ground z = 0 of ``world_frame`` seen from a known pose gives every pixel whose ray goes down
an exact depth: where the ray meets the plane. An estimated depth (the network's, the plane
sweep's, a model's) on the floor is that depth plus noise, and a few percent of noise at a
grazing angle lifts the sample a voxel or two above the floor: the floor is then fused as a layer
of occupied voxels in the free space above it. A relative depth error e of a floor sample moves
its point by about e times the camera's height, so the higher the camera the thicker that layer.
:class:`GroundSnapSource` puts every estimated sample whose point lies within
``ground_snap_height_m`` of the plane (above or below) on the plane's depth along its ray, a
hair behind it (:data:`BEHIND`), so that it ends in the voxel of the floor's matter below z = 0
rather than on the voxel boundary. Samples farther from the plane (an object standing on the
floor, a table) keep their depth. The pipeline wraps every source but ``topic`` (a measured
depth keeps its own) when ``ground_snap_height_m`` > 0.

Limits, by construction: what stands lower than ``ground_snap_height_m`` on the floor (a kerb, a
pallet, a mat) is taken for floor; a floor that is not at z = 0 of ``world_frame`` (a ramp, a
wrong ``camera_height_m``) gains nothing and loses such samples' own depth.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource, WrappedDepthSource
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame

#: snapped samples lie this share of their depth behind the plane (below z = 0), so that a
#: floor on a voxel boundary ends in the voxel under it, whatever the rounding
BEHIND = 1e-3


def ground_depth(camera: PinholeCamera, T_world_cam: np.ndarray, max_depth: float,
                 rays: Optional[np.ndarray] = None) -> np.ndarray:
    """Return the z-depth at which each pixel's ray meets the ground z = 0.

    :param camera: pinhole camera of the depth map
    :param T_world_cam: float64 [4, 4] optical frame to world (z up, ground at z = 0)
    :param max_depth: farther meetings (metres) count as none
    :param rays: float64 [H, W, 3] ``camera.pixel_rays()`` when already at hand
    :return: float32 [H, W] metres, 0 where the ray does not go down to the ground within
        ``max_depth`` or the camera is not above it
    """
    if rays is None:
        rays = camera.pixel_rays().astype(np.float64)
    T = np.asarray(T_world_cam, np.float64)
    d_z = rays @ T[2, :3]                 # world z of each ray with z_cam = 1
    height = T[2, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        s = -height / d_z                 # the z-depth: the rays have z_cam = 1
    hits = (d_z < 0) & (height > 0) & (s > 0) & (s <= max_depth)
    return np.where(hits, s, 0.0).astype(np.float32)


class GroundSnapSource(WrappedDepthSource):
    """A depth source whose samples near the ground plane are put on it.

    :param source: the wrapped depth source
    :param config: ``ground_snap_height_m``, ``max_depth``
    """

    def __init__(self, source: DepthSource, config: DepthConfig):
        """Wrap ``source``."""
        super().__init__(source)
        self.config = config
        self._rays: Dict[Tuple, np.ndarray] = {}
        #: samples put on the ground plane in the last frame
        self.last_snapped = 0

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Return the wrapped source's depth with the samples near the ground on the ground.

        :param frame: the frame; without a pose, or with the camera not above z = 0, the
            wrapped source's result passes unchanged
        :param sources: window frames, passed to the wrapped source
        :return: the wrapped source's result (None when it gave none) with ``depth`` float32
            [H, W] metres replaced on the snapped pixels; ``confidence``, ``valid`` and
            ``camera`` unchanged
        :raises DepthInputError: as the wrapped source
        """
        result = self.source.estimate(frame, sources)
        self.last_snapped = 0
        if result is None or frame.T_world_cam is None:
            return result
        # A point at depth d on the ray that meets the plane at depth g lies h (1 - d / g) above
        # it (h: the camera's height), so the height band is a band of relative depth.
        height = float(frame.T_world_cam[2, 3])
        if height <= 0.0:
            return result
        cam = result.camera
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        rays = self._rays.get(key)
        if rays is None:
            rays = cam.pixel_rays().astype(np.float64)
            self._rays = {key: rays}
        # Snapped samples must stay within max_depth, where fusion still counts them.
        plane = torch.as_tensor(ground_depth(cam, frame.T_world_cam,
                                             self.config.max_depth / (1.0 + BEHIND), rays),
                                device=result.depth.device)
        band = self.config.ground_snap_height_m / height
        near = result.valid & (plane > 0) & ((result.depth - plane).abs() <= band * plane)
        self.last_snapped = int(near.sum())
        if not self.last_snapped:
            return result
        depth = torch.where(near, plane * (1.0 + BEHIND), result.depth)
        return DepthResult(depth, result.confidence, result.valid, cam)
