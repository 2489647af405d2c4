"""Exact per-frame ground truth of a synthetic scene on any :class:`VoxelGrid`.

- Occupancy of solids at time ``t``: a voxel is occupied when its centre lies inside a part's
  closed mesh (Open3D ``RaycastingScene.compute_occupancy``, queried in the part's own frame so
  the query scene is built once) OR when a point of the part's surface lies in it (dense regular
  surface samples, nudged 0.1 mm inwards so faces lying exactly on voxel boundaries belong to the
  voxel on the solid side), so thin parts (plates, poles, legs) count.
- Dynamic mask: the same for the parts of moving objects only.
- Observed mask: voxels a camera ray traverses up to and including its first hit, from the exact
  depth, by the shared ray caster :mod:`l3rocc_core.raycast` (no second ray caster here).

Static parts are evaluated once per grid; moving parts only inside their axis-aligned bounds.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import open3d as o3d

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.raycast import observed_and_hits
from l3rocc_core.synth.render import SceneGeometry
from l3rocc_core.synth.scene import Part, Scene

_O3C = o3d.core
_INWARD_M = 1e-4
_MAX_LATTICE = 400


def surface_samples(part: Part, spacing: float) -> np.ndarray:
    """Regular samples of a part's surface in its own frame, nudged inwards by 0.1 mm.

    Each triangle gets a barycentric lattice whose step along the longest edge is at most
    ``spacing`` (capped at 400 steps; such large faces belong to thick solids whose voxels the
    centre test already finds).

    :param part: the part
    :param spacing: metres between samples (a third of the voxel size is used)
    :return: float64 [N, 3] metres in the part frame
    """
    v = part.vertices[part.triangles]                                    # [F, 3, 3]
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    normal = np.cross(e1, e2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    longest = np.max(np.linalg.norm(np.stack([e1, e2, v[:, 2] - v[:, 1]], 1), axis=2), 1)
    steps = np.clip(np.ceil(longest / spacing), 1, _MAX_LATTICE).astype(np.int64)
    out = []
    for n in np.unique(steps):
        sel = steps == n
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
        keep = (i + j) <= n
        a = (i[keep] / n)[None, :, None]
        b = (j[keep] / n)[None, :, None]
        p = v[sel, 0][:, None] + a * e1[sel][:, None] + b * e2[sel][:, None]
        p -= _INWARD_M * normal[sel][:, None]
        out.append(p.reshape(-1, 3))
    return np.concatenate(out)


class GroundTruth:
    """Occupancy, dynamic and observed masks of one scene on one grid.

    :param scene: the scene
    :param grid: any voxel grid (the world frame of the scene)
    :param nsamples: rays per query point of ``compute_occupancy`` (majority vote)
    :param geometry: an existing :class:`SceneGeometry` of ``scene`` to share
    """

    def __init__(self, scene: Scene, grid: VoxelGrid, nsamples: int = 3,
                 geometry: Optional[SceneGeometry] = None):
        """Prepare per-part query scenes and evaluate the static parts."""
        self.scene = scene
        self.grid = grid
        self.nsamples = int(nsamples)
        self.geometry = geometry if geometry is not None else SceneGeometry(scene)
        self._query: Dict[int, o3d.t.geometry.RaycastingScene] = {}
        self._samples: Dict[int, np.ndarray] = {}
        g = self.geometry
        self.dynamic_parts = np.flatnonzero(g.part_dynamic)
        static_parts = np.flatnonzero(~g.part_dynamic)
        T0 = g.object_poses(0.0)
        A0 = T0[g.part_obj] @ g.T_obj_part
        static = np.zeros(grid.num_voxels, bool)
        for p in static_parts:
            static[self.part_voxels(int(p), A0[p])] = True
        self.static = static.reshape(grid.dims)

    def _part_scene(self, p: int) -> o3d.t.geometry.RaycastingScene:
        rs = self._query.get(p)
        if rs is None:
            part = self.geometry.parts[p]
            rs = o3d.t.geometry.RaycastingScene()
            rs.add_triangles(_O3C.Tensor(part.vertices.astype(np.float32)),
                             _O3C.Tensor(part.triangles.astype(np.uint32)))
            self._query[p] = rs
        return rs

    def _part_samples(self, p: int) -> np.ndarray:
        s = self._samples.get(p)
        if s is None:
            s = surface_samples(self.geometry.parts[p], self.grid.voxel_size / 3.0)
            self._samples[p] = s
        return s

    def part_voxels(self, p: int, A_world_part: np.ndarray) -> np.ndarray:
        """Flat indices of the voxels part ``p`` occupies when placed by ``A_world_part``.

        :param p: part index in :attr:`geometry`
        :param A_world_part: float64 [4, 4] affine part-to-world
        :return: int64 [n] flat voxel indices (may repeat)
        """
        grid = self.grid
        part = self.geometry.parts[p]
        v_world = part.vertices @ A_world_part[:3, :3].T + A_world_part[:3, 3]
        lo = np.maximum(grid.world_to_ijk(v_world.min(0)), 0)
        hi = np.minimum(grid.world_to_ijk(v_world.max(0)), np.asarray(grid.dims) - 1)
        if np.any(hi < lo):
            return np.zeros(0, np.int64)
        axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
        ijk = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
        centres = grid.ijk_to_world(ijk)
        A_inv = np.linalg.inv(A_world_part)
        local = (centres @ A_inv[:3, :3].T + A_inv[:3, 3]).astype(np.float32)
        inside = self._part_scene(p).compute_occupancy(
            _O3C.Tensor(local), nsamples=self.nsamples).numpy() > 0.5
        flat_in = grid.ijk_to_flat(ijk[inside])
        samples = self._part_samples(p)
        s_world = samples @ A_world_part[:3, :3].T + A_world_part[:3, 3]
        flat_s, valid = grid.world_to_flat(s_world)
        return np.concatenate([flat_in, flat_s[valid]])

    def occupancy(self, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """Occupancy of solids and of moving objects at time ``t``.

        :param t: seconds
        :return: (occupied bool [X, Y, Z], dynamic bool [X, Y, Z]); dynamic is a subset
        """
        g = self.geometry
        dyn = np.zeros(self.grid.num_voxels, bool)
        if len(self.dynamic_parts):
            T = g.object_poses(t)
            for p in self.dynamic_parts:
                A = T[g.part_obj[p]] @ g.T_obj_part[p]
                dyn[self.part_voxels(int(p), A)] = True
        dyn = dyn.reshape(self.grid.dims)
        return self.static | dyn, dyn

    def object_occupancy(self, obj: int, t: float) -> np.ndarray:
        """Return the voxels of object ``obj`` alone at time ``t`` (bool [X, Y, Z])."""
        g = self.geometry
        out = np.zeros(self.grid.num_voxels, bool)
        T = self.scene.objects[obj].motion.pose(t)
        for p in np.flatnonzero(g.part_obj == obj):
            out[self.part_voxels(int(p), T @ g.T_obj_part[p])] = True
        return out.reshape(self.grid.dims)

    def observed(self, depth: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray,
                 max_depth: float, ray_stride: int = 1) -> np.ndarray:
        """Voxels traversed up to and including the first hit (the scoring mask).

        Rays without a return (sky) or beyond ``max_depth`` observe free space up to
        ``max_depth``.

        :param depth: float32 [H, W] exact depth (z, metres), 0 = no hit
        :param camera: undistorted pinhole model of ``depth``
        :param T_world_cam: float64 [4, 4]
        :param max_depth: metres
        :param ray_stride: pixel stride of the traversal
        :return: bool [X, Y, Z]
        """
        obs, _ = observed_and_hits(self.grid, depth, camera, T_world_cam, max_depth,
                                   ray_stride=ray_stride, clear_no_return=True)
        return obs


def suggest_grid(scene: Scene, poses: List[np.ndarray], voxel_size: float = 0.05,
                 max_extent_m: Tuple[float, float] = (9.6, 8.0), frame_id: str = 'odom'
                 ) -> VoxelGrid:
    """Choose a grid covering what the camera looks at over a sequence.

    Industrial scenes use their region of interest. Otherwise the grid covers points 2-8 m
    ahead of the camera (horizontally, +-0.6 m sideways per metre ahead) at every pose, plus a
    1 m margin, capped to
    ``max_extent_m`` (x, y) around their centre; z spans the scene's ROI heights.

    :param poses: ``T_world_cam`` [4, 4] of the sequence
    :param voxel_size: metres
    :param max_extent_m: largest x and y extent (metres)
    """
    lo, hi = scene.roi_min.astype(np.float64).copy(), scene.roi_max.astype(np.float64).copy()
    if scene.family != 'industrial' and poses:
        pts = []
        for T in poses:
            fwd = T[:3, 2].copy()
            fwd[2] = 0.0
            fwd /= max(np.linalg.norm(fwd), 1e-9)
            left = np.array([-fwd[1], fwd[0], 0.0])
            pts += [T[:3, 3] + fwd * s + left * s * side for s in (2.0, 5.0, 8.0)
                    for side in (-0.6, 0.0, 0.6)]
        pts = np.asarray(pts)
        c = 0.5 * (pts.min(0) + pts.max(0))
        half = np.minimum(0.5 * (pts.max(0) - pts.min(0)) + 1.0, np.r_[max_extent_m, 1e9] / 2)
        lo[:2], hi[:2] = (c - half)[:2], (c + half)[:2]
    # Snap to whole voxels so grids of one scene line up.
    lo = np.round(np.floor(lo / voxel_size + 1e-9) * voxel_size, 9)
    hi = np.round(np.ceil(hi / voxel_size - 1e-9) * voxel_size, 9)
    return VoxelGrid.from_bounds(lo.tolist(), hi.tolist(), voxel_size, frame_id)
