"""Occupancy flow from feature matching: the targets of the motion-consistency loss term.

Between two frames, corners of the older image (Shi-Tomasi) are tracked into the newer one
with pyramidal Lucas-Kanade and kept only when tracking back lands within ``fb_max_px`` of the
start (forward-backward check). Both ends are lifted into the world frame with their frame's
depth (bilinear) and camera pose. A match is dropped when a depth is missing, when it sits on a
depth edge (the four depths around it spread by more than ``edge_rel``) or when it implies a
surface faster than ``max_speed`` (a mismatch). The flow of a match is the world displacement
of the surface point divided by the frame interval (m/s), filed under the voxel holding its
newer end: ``flow[t, v]`` is the velocity with which the surface in voxel ``v`` arrived there at
slice ``t``. Static surfaces get ~0 whatever the camera does (the poses are applied), moving
parts their velocity; matches in the same voxel are averaged. A voxel with no match has no
target (``valid`` False), and the loss reads only valid voxels.

In ``l3rocc synth --dataset`` the depth is the renderer's (training targets, like the ground
truth occupancy); the correspondences come from the images alone. On the synthetic training
split static surfaces get a median of 0.05 m/s (90th percentile 0.3 m/s: tracking noise),
moving parts 0.2-0.8 m/s.
"""

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from l3rocc_core.grid import VoxelGrid


@dataclass
class MatchOptions:
    """Feature matching and lifting parameters.

    :param max_corners: corners detected in the older image
    :param quality: Shi-Tomasi quality level (relative to the best corner)
    :param min_distance_px: smallest distance between corners
    :param window_px: Lucas-Kanade window size
    :param levels: pyramid levels
    :param fb_max_px: largest forward-backward tracking error kept
    :param edge_rel: largest spread of the four depths around a matched point, relative to
        their mean (larger: a depth edge, where the point's depth is ambiguous)
    :param max_speed: matches implying a faster surface (m/s) are dropped as mismatches (the
        synthetic world's fastest parts move at about 4 m/s)
    """

    max_corners: int = 600
    quality: float = 0.005
    min_distance_px: float = 4.0
    window_px: int = 15
    levels: int = 3
    fb_max_px: float = 0.5
    edge_rel: float = 0.03
    max_speed: float = 6.0


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return np.ascontiguousarray(image.astype(np.uint8))
    return cv2.cvtColor(np.ascontiguousarray(image.astype(np.uint8)), cv2.COLOR_RGB2GRAY)


def match_features(image0: np.ndarray, image1: np.ndarray, opts: MatchOptions = MatchOptions()
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Track corners of ``image0`` into ``image1`` (forward-backward checked).

    :param image0: uint8 [H, W, 3] RGB or [H, W] grey, the older frame
    :param image1: the newer frame, same size
    :return: (uv0, uv1) float32 [M, 2] pixel coordinates (x right, y down) of the matches
    """
    import cv2

    if image0.shape[:2] != image1.shape[:2]:
        raise ValueError(f'images differ in size: {image0.shape[:2]} vs {image1.shape[:2]}')
    g0, g1 = _gray(image0), _gray(image1)
    corners = cv2.goodFeaturesToTrack(g0, opts.max_corners, opts.quality, opts.min_distance_px)
    empty = np.zeros((0, 2), np.float32)
    if corners is None or len(corners) == 0:
        return empty, empty
    p0 = corners.reshape(-1, 1, 2).astype(np.float32)
    lk = dict(winSize=(opts.window_px, opts.window_px), maxLevel=opts.levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, None, **lk)
    if p1 is None:
        return empty, empty
    back, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, None, **lk)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    h, w = g0.shape
    q = p1.reshape(-1, 2)
    ok = ((st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= opts.fb_max_px)
          & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1))
    return p0.reshape(-1, 2)[ok], q[ok]


def lift(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
         edge_rel: float = 0.03) -> Tuple[np.ndarray, np.ndarray]:
    """World points of pixels, with their depth interpolated bilinearly, and which are usable.

    :param uv: float [M, 2] pixel coordinates (pixel centres at integers)
    :param depth: float [H, W] metres along the optical axis (z), 0 = none
    :param K: [3, 3] intrinsics of the depth map's camera
    :param T_world_cam: [4, 4] camera pose (optical frame)
    :param edge_rel: drop pixels whose four neighbouring depths spread by more than this
        fraction of their mean (depth edges, where a corner's depth is ambiguous)
    :return: (points float64 [M, 3] in the world frame, valid bool [M])
    """
    h, w = depth.shape
    u = np.clip(np.asarray(uv[:, 0], np.float64), 0, w - 1)
    v = np.clip(np.asarray(uv[:, 1], np.float64), 0, h - 1)
    c0 = np.minimum(np.floor(u).astype(np.int64), max(w - 2, 0))
    r0 = np.minimum(np.floor(v).astype(np.int64), max(h - 2, 0))
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    fu, fv = u - c0, v - r0
    d = np.stack([depth[r0, c0], depth[r0, c1], depth[r1, c0], depth[r1, c1]], 1)
    d = d.astype(np.float64)
    wts = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], 1)
    z = (d * wts).sum(1)
    valid = np.all(np.isfinite(d) & (d > 0), axis=1)
    valid &= d.max(1) - d.min(1) <= float(edge_rel) * np.maximum(d.mean(1), 1e-6)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    p_cam = np.stack([x, y, z], axis=1)
    p_world = p_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    return p_world, valid


def matched_scene_flow(image0: np.ndarray, image1: np.ndarray, depth0: np.ndarray,
                       depth1: np.ndarray, K: np.ndarray, T_world_cam0: np.ndarray,
                       T_world_cam1: np.ndarray, dt_s: float,
                       opts: MatchOptions = MatchOptions()) -> Tuple[np.ndarray, np.ndarray]:
    """Scene flow of matched surface points between two frames.

    :param image0: older image, uint8 [H, W, 3] (undistorted, camera ``K``)
    :param image1: newer image
    :param depth0: float [H, W] metres of the older frame
    :param depth1: float [H, W] metres of the newer frame
    :param K: [3, 3] intrinsics of both
    :param T_world_cam0: [4, 4] older pose
    :param T_world_cam1: [4, 4] newer pose
    :param dt_s: time between the frames (seconds, > 0)
    :return: (points float64 [M, 3] newer ends in the world frame, flow float64 [M, 3] m/s)
    """
    if dt_s <= 0:
        raise ValueError(f'dt_s must be > 0, got {dt_s}')
    if depth0.shape != image0.shape[:2] or depth1.shape != image1.shape[:2]:
        raise ValueError('depth maps must have the size of their images')
    uv0, uv1 = match_features(image0, image1, opts)
    p0, ok0 = lift(uv0, depth0, K, T_world_cam0, opts.edge_rel)
    p1, ok1 = lift(uv1, depth1, K, T_world_cam1, opts.edge_rel)
    flow = (p1 - p0) / float(dt_s)
    ok = ok0 & ok1 & (np.linalg.norm(flow, axis=1) <= opts.max_speed)
    return p1[ok], flow[ok]


def voxel_flow(points: np.ndarray, flow: np.ndarray,
               grid: VoxelGrid) -> Tuple[np.ndarray, np.ndarray]:
    """Average the flow of the points in each voxel of a grid.

    :param points: float [M, 3] world points (metres)
    :param flow: float [M, 3] their flow (m/s)
    :param grid: the voxel grid (points outside it are dropped)
    :return: (flat voxel indices int64 [V] of the grid, ascending; mean flow float32 [V, 3])
    """
    flat, inside = grid.world_to_flat(np.asarray(points, np.float64))
    uniq, inv = np.unique(flat[inside], return_inverse=True)
    count = np.maximum(np.bincount(inv, minlength=len(uniq)), 1).astype(np.float64)
    f = np.asarray(flow, np.float64)[inside]
    mean = np.stack([np.bincount(inv, f[:, k], len(uniq)) for k in range(3)], axis=1)
    return uniq.astype(np.int64), (mean / count[:, None]).astype(np.float32)


def dense_crop(flat: np.ndarray, values: np.ndarray, grid: VoxelGrid, corner: np.ndarray,
               size: Tuple[int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Dense flow and mask of one crop from the sparse per-voxel flow of the whole grid.

    :param flat: int64 [V] flat voxel indices of ``grid`` (see :func:`voxel_flow`)
    :param values: float [V, 3] flow per voxel
    :param grid: the voxel grid of ``flat``
    :param corner: int [3] crop min corner (voxel ijk)
    :param size: crop size (x, y, z)
    :return: (flow float32 [3, x, y, z], valid bool [x, y, z])
    """
    out = np.zeros((3,) + tuple(size), np.float32)
    valid = np.zeros(tuple(size), bool)
    ijk = grid.flat_to_ijk(np.asarray(flat, np.int64)).reshape(-1, 3) - np.asarray(corner)
    keep = np.all((ijk >= 0) & (ijk < np.asarray(size)), axis=1)
    i, j, k = ijk[keep].T
    out[:, i, j, k] = np.asarray(values, np.float32).reshape(-1, 3)[keep].T
    valid[i, j, k] = True
    return out, valid
