"""Ray-cast rendering of a :class:`~l3rocc_core.synth.scene.Scene` with Open3D.

Each time ``t`` the moved meshes are concatenated into one Open3D ``RaycastingScene`` (building
it takes well under a millisecond for a few ten thousand triangles); every pixel's ray is cast
once and the colour is computed vectorised over the hit buffers: object-local texture
coordinates, analytic normals for spheres and cylinders, Lambert + ambient + highlight, sky for
misses. Depth is the z of the hit in the optical frame (metres).

Lens distortion (plumb_bob) is rendered exactly: the rays of the distorted image are the
undistorted directions of its pixels (``cv2.undistortPoints``). Depth is always given for the
undistorted pinhole camera with the same K, which is what the pipeline's undistortion produces.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import open3d as o3d

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.synth.appearance import MaterialTable, Sensor, ValueNoise, albedo, shade, sky
from l3rocc_core.synth.scene import PART_KINDS, Scene

_O3C = o3d.core


@dataclass
class GeometryState:
    """The scene's geometry at one time.

    :param t: seconds
    :param vertices: float32 [V, 3] world
    :param triangles: uint32 [F, 3]
    :param tri_part: int64 [F] part index of every triangle
    :param A_world_part: float64 [P, 4, 4] affine part-to-world
    :param A_part_world: float64 [P, 4, 4] its inverse
    :param A_obj_world: float64 [O, 4, 4] world-to-object (texture frame)
    """

    t: float
    vertices: np.ndarray
    triangles: np.ndarray
    tri_part: np.ndarray
    A_world_part: np.ndarray
    A_part_world: np.ndarray
    A_obj_world: np.ndarray

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        """Build a fresh Open3D scene of these triangles (one geometry, id 0)."""
        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(_O3C.Tensor(self.vertices), _O3C.Tensor(self.triangles))
        return rs


class SceneGeometry:
    """The scene's parts flattened into arrays, posed at any time.

    :param scene: the scene
    """

    def __init__(self, scene: Scene):
        """Flatten every part; static parts are posed once."""
        self.scene = scene
        parts, part_obj = [], []
        for o, obj in enumerate(scene.objects):
            for p in obj.parts:
                parts.append(p)
                part_obj.append(o)
        if not parts:
            raise ValueError('the scene has no parts')
        self.parts = parts
        self.part_obj = np.asarray(part_obj, np.int64)                      # [P]
        self.part_kind = np.array([PART_KINDS.index(p.kind) for p in parts], np.int64)
        self.part_dynamic = np.array([scene.objects[o].dynamic for o in part_obj], bool)
        counts = np.array([len(p.vertices) for p in parts])
        self.vert_offset = np.concatenate([[0], np.cumsum(counts)])
        self.local_vertices = np.concatenate([p.vertices for p in parts])      # [V, 3]
        self.vert_part = np.repeat(np.arange(len(parts)), counts)
        self.triangles = np.concatenate(
            [p.triangles + off for p, off in zip(parts, self.vert_offset[:-1])]).astype(np.uint32)
        self.tri_part = np.repeat(np.arange(len(parts)),
                                  [len(p.triangles) for p in parts]).astype(np.int64)
        self.T_obj_part = np.stack([p.T_obj_part for p in parts])            # [P, 4, 4]
        self._static_A = None
        self._static_world = None

    def object_poses(self, t: float) -> np.ndarray:
        """float64 [O, 4, 4] affine ``T_world_obj`` of every object at ``t``."""
        return np.stack([obj.motion.pose(t) for obj in self.scene.objects])

    def at(self, t: float) -> GeometryState:
        """Pose every part at time ``t`` (seconds)."""
        T_obj = self.object_poses(t)
        A = T_obj[self.part_obj] @ self.T_obj_part                           # [P, 4, 4]
        Av = A[self.vert_part]                                                # [V, 4, 4]
        v = np.einsum('vij,vj->vi', Av[:, :3, :3], self.local_vertices) + Av[:, :3, 3]
        return GeometryState(float(t), v.astype(np.float32), self.triangles, self.tri_part, A,
                             np.linalg.inv(A), np.linalg.inv(T_obj))


@dataclass
class RenderResult:
    """One rendered frame.

    :param image: uint8 [H, W, 3] RGB of the (possibly distorted) camera
    :param depth: float32 [H, W] metres (z) for the undistorted pinhole camera, 0 = no hit
    :param object_index: int32 [H, W] object hit by each pinhole pixel, -1 = none
    """

    image: np.ndarray
    depth: np.ndarray
    object_index: np.ndarray


def _affine(A: np.ndarray, idx: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply the affine maps ``A[idx]`` (A float [K, 4, 4]) row-wise to points p [N, 3].

    :return: float32 [N, 3]
    """
    A32 = A[:, :3, :].astype(np.float32)
    M = A32[idx]                                                  # [N, 3, 4]
    return (M[:, :, 0] * p[:, :1] + M[:, :, 1] * p[:, 1:2] + M[:, :, 2] * p[:, 2:3]
            + M[:, :, 3])


def _linear_t(A: np.ndarray, idx: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Apply the transposed linear parts ``A[idx][:3, :3].T`` row-wise to vectors v [N, 3]."""
    M = A[:, :3, :3].astype(np.float32)[idx]                      # [N, 3, 3]
    return M[:, 0, :] * v[:, :1] + M[:, 1, :] * v[:, 1:2] + M[:, 2, :] * v[:, 2:3]


class Renderer:
    """Renders a scene through one camera.

    :param scene: the scene
    :param camera: the camera of the output images (``distortion_model`` plumb_bob renders a
        distorted image; depth is always for the undistorted pinhole with the same K)
    :param sensor: exposure/noise model; None gives noiseless images at gain 1
    :param noise_seed: seed of the texture lattice (default the scene seed)
    """

    def __init__(self, scene: Scene, camera: PinholeCamera, sensor: Optional[Sensor] = None,
                 noise_seed: Optional[int] = None):
        """Prepare geometry, materials and the ray tables."""
        self.scene = scene
        self.camera = camera
        self.pinhole = PinholeCamera(camera.width, camera.height, camera.fx, camera.fy,
                                     camera.cx, camera.cy)
        self.geometry = SceneGeometry(scene)
        self.materials = MaterialTable([obj.material for obj in scene.objects])
        self.noise = ValueNoise(scene.seed if noise_seed is None else noise_seed)
        self.sensor = sensor
        self.rays_pinhole = self.pinhole.pixel_rays().reshape(-1, 3)          # [HW, 3], z = 1
        if camera.has_distortion:
            h, w = camera.height, camera.width
            uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
            pix = np.stack([uu, vv], -1).reshape(-1, 1, 2)
            und = cv2.undistortPoints(pix, camera.K, np.asarray(camera.D, np.float64)).reshape(
                -1, 2)
            self.rays_image = np.concatenate([und, np.ones((len(und), 1))], 1).astype(
                np.float32)
        else:
            self.rays_image = self.rays_pinhole

    def cast(self, state: GeometryState, T_world_cam: np.ndarray, rays_cam: np.ndarray,
             rs: Optional[o3d.t.geometry.RaycastingScene] = None) -> dict:
        """Cast camera rays into the posed scene.

        :param state: geometry at the frame's time
        :param T_world_cam: float64 [4, 4]
        :param rays_cam: float32 [N, 3] ray directions in the optical frame (z = 1)
        :param rs: an already built raycasting scene of ``state``
        :return: dict with 'origin' [3], 'dirs' [N, 3] world (z_cam = 1 scaling), 't_hit' [N]
            (= depth z, inf on a miss), 'prim' [N], 'normals' [N, 3]
        """
        T = np.asarray(T_world_cam, np.float64)
        if T.shape != (4, 4):
            raise ValueError(f'T_world_cam must be [4, 4], got {T.shape}')
        dirs = (rays_cam @ T[:3, :3].T.astype(np.float32)).astype(np.float32)
        origin = T[:3, 3].astype(np.float32)
        rays = np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], 1)
        rs = rs if rs is not None else state.raycasting_scene()
        ans = rs.cast_rays(_O3C.Tensor(np.ascontiguousarray(rays)))
        return {'origin': origin, 'dirs': dirs, 't_hit': ans['t_hit'].numpy(),
                'prim': ans['primitive_ids'].numpy().astype(np.int64),
                'normals': ans['primitive_normals'].numpy()}

    def radiance(self, state: GeometryState, hits: dict) -> Tuple[np.ndarray, np.ndarray]:
        """Linear RGB of every ray.

        :return: (radiance float32 [N, 3], object index int64 [N], -1 on a miss)
        """
        t_hit, dirs = hits['t_hit'], hits['dirs']
        hit = np.isfinite(t_hit)
        n_rays = len(t_hit)
        out = np.empty((n_rays, 3), np.float32)
        obj_index = np.full(n_rays, -1, np.int64)
        if not hit.all():
            miss = dirs[~hit]
            out[~hit] = sky(miss, self.scene.light)
        if not hit.any():
            return out, obj_index
        d_hit = dirs[hit]
        p_world = hits['origin'][None, :] + t_hit[hit, None] * d_hit        # [M, 3]
        part = self.geometry.tri_part[hits['prim'][hit]]
        obj = self.geometry.part_obj[part]
        obj_index[hit] = obj
        p_obj = _affine(state.A_obj_world, obj, p_world)
        normals = hits['normals'][hit].astype(np.float32)
        kind = self.geometry.part_kind[part]
        round_ = kind != PART_KINDS.index('box')
        if round_.any():
            pr = part[round_]
            p_part = _affine(state.A_part_world, pr, p_world[round_])
            n_part = p_part
            cyl = kind[round_] == PART_KINDS.index('cylinder')
            if cyl.any():
                # Sides get the radial normal, caps keep the flat one.
                n_flat = _linear_t(state.A_world_part, pr[cyl], normals[round_][cyl])
                cap = np.abs(n_flat[:, 2]) >= 0.5 * np.linalg.norm(n_flat, axis=1)
                n_cyl = n_part[cyl]
                n_cyl[:, 2] = 0.0
                n_cyl[cap] = n_flat[cap]
                n_part[cyl] = n_cyl
            normals[round_] = _linear_t(state.A_part_world, pr, n_part)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        unit = d_hit / np.linalg.norm(d_hit, axis=1, keepdims=True)
        table = self.materials
        rgb = albedo(p_obj, obj, table, self.noise)
        out[hit] = shade(rgb, normals, unit, table.specular[obj], table.shininess[obj],
                         self.scene.light)
        return out, obj_index

    def render(self, samples: Sequence[Tuple[float, np.ndarray]], frame_index: int = 0
               ) -> RenderResult:
        """Render one frame, averaging sub-frame samples for motion blur.

        :param samples: [(t seconds, T_world_cam [4, 4])]; the middle one gives depth and the
            exposure time; more than one sample blurs motion
        :param frame_index: selects the sensor noise draw
        :return: :class:`RenderResult`
        """
        if not samples:
            raise ValueError('render needs at least one (t, T_world_cam) sample')
        h, w = self.camera.height, self.camera.width
        mid = len(samples) // 2
        acc = np.zeros((h * w, 3), np.float32)
        depth = obj_mid = None
        for k, (t, T) in enumerate(samples):
            state = self.geometry.at(t)
            rs = state.raycasting_scene()
            hits = self.cast(state, T, self.rays_image, rs)
            rad, obj = self.radiance(state, hits)
            acc += rad
            if k == mid:
                if self.rays_image is self.rays_pinhole:
                    ph = hits
                    obj_mid = obj
                else:
                    ph = self.cast(state, T, self.rays_pinhole, rs)
                    hit = np.isfinite(ph['t_hit'])
                    obj_mid = np.full(len(hit), -1, np.int64)
                    obj_mid[hit] = self.geometry.part_obj[self.geometry.tri_part[
                        ph['prim'][hit]]]
                depth = np.where(np.isfinite(ph['t_hit']), ph['t_hit'], 0.0).astype(np.float32)
        rad = (acc / len(samples)).reshape(h, w, 3)
        t_mid = samples[mid][0]
        if self.sensor is None:
            image = np.clip(rad ** (1 / 2.2) * 255 + 0.5, 0, 255).astype(np.uint8)
        else:
            image = self.sensor.develop(rad, t_mid, frame_index)
        return RenderResult(image, depth.reshape(h, w), obj_mid.reshape(h, w).astype(np.int32))


def blur_samples(trajectory_pose, t: float, exposure_s: float, n: int
                 ) -> List[Tuple[float, np.ndarray]]:
    """Sub-frame (time, pose) samples spread over the exposure, centred on ``t``.

    :param trajectory_pose: callable t -> T_world_cam [4, 4]
    :param exposure_s: open-shutter time (seconds); n = 1 gives no blur
    :param n: number of samples (odd keeps the centre sample at ``t``)
    """
    if n <= 1 or exposure_s <= 0:
        return [(t, trajectory_pose(t))]
    ts = t + (np.arange(n) / (n - 1) - 0.5) * exposure_s
    return [(float(s), trajectory_pose(float(s))) for s in ts]
