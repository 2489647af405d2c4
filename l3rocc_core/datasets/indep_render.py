"""Rendering of independent scenes: z-buffer rasterisation, shadow maps, textures, a sensor.

Per frame the posed triangles are rasterised (:mod:`l3rocc_core.datasets.indep_raster`); for a
camera that has not moved the static scene's z-buffer and the static part of the shadow map are
reused and only moving actors are drawn over copies of them. Visible points are shaded in a
deferred pass: interpolated vertex normals, texture at the mip level of the pixel footprint,
Lambert sun light with a 3 x 3 percentage-closer shadow-map test, plus hemispheric sky light.
Rays that hit nothing see a sky gradient. The sensor applies an exposure fixed at the first
frame, vignetting, shot and read noise, and sRGB-like gamma.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.datasets.indep_mesh import rotate
from l3rocc_core.datasets.indep_raster import Raster, barycentric, rasterise, rasterise_ortho
from l3rocc_core.datasets.indep_scene import IndependentScene, Lighting

_SHADOW_BIAS_M = 0.02


class PosedScene:
    """The scene's parts flattened into arrays, static parts first, posed at any time.

    :param scene: the scene
    """

    def __init__(self, scene: IndependentScene):
        """Flatten every part of every actor."""
        self.scene = scene
        entries = []                                       # (static?, actor, part)
        for a, actor in enumerate(scene.actors):
            for p in range(len(actor.meshes)):
                entries.append((actor.dynamic, a, p))
        entries.sort(key=lambda e: e[0])                   # stable: static parts first
        self.order = entries
        meshes = [scene.actors[a].meshes[p] for _, a, p in entries]
        self.part_actor = np.array([a for _, a, _ in entries], np.int64)
        self.part_dynamic = np.array([d for d, _, _ in entries], bool)
        self.part_material = np.array([scene.actors[a].materials[p] for _, a, p in entries],
                                      np.int64)
        nv = np.array([len(m.vertices) for m in meshes])
        nf = np.array([len(m.triangles) for m in meshes])
        self.meshes = meshes
        self.vert_part = np.repeat(np.arange(len(meshes)), nv)
        self.tri_part = np.repeat(np.arange(len(meshes)), nf)
        offsets = np.concatenate([[0], np.cumsum(nv)[:-1]])
        self.triangles = np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)])
        self.local_vertices = np.concatenate([m.vertices for m in meshes])
        self.local_normals = np.concatenate([m.normals for m in meshes])
        self.uv = np.concatenate([m.uv for m in meshes])
        self.n_static_parts = int((~self.part_dynamic).sum())
        self.n_static_tris = int(nf[:self.n_static_parts].sum())
        self.n_static_verts = int(nv[:self.n_static_parts].sum())
        self._static: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def part_poses(self, t: float) -> np.ndarray:
        """Return float64 [P, 4, 4] ``T_world_part`` of every part (this class's order)."""
        per_actor = {}
        out = np.empty((len(self.order), 4, 4))
        for k, (_, a, p) in enumerate(self.order):
            if a not in per_actor:
                per_actor[a] = self.scene.actors[a].part_poses(t)
            out[k] = per_actor[a][p]
        return out

    def posed(self, t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (vertices float64 [V, 3], normals float64 [V, 3], part poses [P, 4, 4]) at t."""
        A = self.part_poses(t)
        s = self.n_static_verts
        if self._static is None:
            Av = A[self.vert_part[:s]]
            self._static = (np.einsum('vij,vj->vi', Av[:, :3, :3], self.local_vertices[:s])
                            + Av[:, :3, 3],
                            np.einsum('vij,vj->vi', Av[:, :3, :3], self.local_normals[:s]))
        Av = A[self.vert_part[s:]]
        v = np.einsum('vij,vj->vi', Av[:, :3, :3], self.local_vertices[s:]) + Av[:, :3, 3]
        n = np.einsum('vij,vj->vi', Av[:, :3, :3], self.local_normals[s:])
        return (np.concatenate([self._static[0], v]), np.concatenate([self._static[1], n]), A)


@dataclass
class Frame:
    """One rendered frame.

    :param image: uint8 [H, W, 3] RGB
    :param depth: float32 [H, W] z in metres, 0 = no surface
    :param moving: bool [H, W] pixels that see a moving actor
    :param actor: int64 [H, W] actor index seen by each pixel, -1 = sky
    """

    image: np.ndarray
    depth: np.ndarray
    moving: np.ndarray
    actor: np.ndarray


class ShadowMap:
    """Orthographic depth map seen from the sun over the room.

    :param scene: the scene (room bounds and sun direction)
    :param resolution: texels per side
    """

    def __init__(self, scene: IndependentScene, resolution: int = 1024):
        """Set up the light frame and the map's extent."""
        w = np.asarray(scene.light.sun_dir, np.float64)
        e1 = np.cross(w, [0.0, 0.0, 1.0] if abs(w[2]) < 0.99 else [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        self.axes = np.stack([e1, np.cross(w, e1), -w])          # rows: map x, map y, depth
        lo = scene.room_min - [1.0, 1.0, 0.2]
        hi = scene.room_max + [1.0, 1.0, 1.0]
        corners = np.stack(np.meshgrid(*zip(lo, hi), indexing='ij'), -1).reshape(-1, 3)
        m = rotate(self.axes[:2], corners)
        self.lo = m.min(0)
        self.texel = float((m.max(0) - self.lo).max() / resolution)
        self.res = resolution
        self.static: Optional[Raster] = None

    def to_map(self, p: np.ndarray) -> np.ndarray:
        """Map coordinates (x, y in texels, depth in metres) of world points [..., 3]."""
        q = rotate(self.axes, p)
        q[..., :2] = (q[..., :2] - self.lo) / self.texel
        return q

    def draw(self, tri_world: np.ndarray, n_static: int) -> Raster:
        """Return the map of all triangles (the static ones drawn once and kept)."""
        if self.static is None:
            self.static = rasterise_ortho(self.to_map(tri_world[:n_static]), self.res, self.res)
        out = self.static.copy()
        if len(tri_world) > n_static:
            rasterise_ortho(self.to_map(tri_world[n_static:]), self.res, self.res, into=out)
        return out

    def lit(self, raster: Raster, p_world: np.ndarray, cos_sun: np.ndarray) -> np.ndarray:
        """Return the lit fraction float32 [M] of points (3 x 3 percentage-closer filter)."""
        q = self.to_map(p_world)
        bias = _SHADOW_BIAS_M + 2 * self.texel * np.sqrt(np.clip(1 - cos_sun ** 2, 0, 1)) / (
            np.maximum(cos_sun, 0.2))
        ix, iy = np.round(q[:, 0]).astype(np.int64), np.round(q[:, 1]).astype(np.int64)
        lit = np.zeros(len(q), np.float32)
        depth = raster.depth.reshape(self.res, self.res)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                x, y = np.clip(ix + dx, 0, self.res - 1), np.clip(iy + dy, 0, self.res - 1)
                lit += q[:, 2] <= depth[y, x] + bias
        return lit / 9.0


class Sensor:
    """Fixed exposure, vignetting, shot and read noise, gamma.

    The exposure puts a mid-grey surface (albedo 0.3) under the scene's typical light at a
    drawn brightness key, whatever the frame, so frames can be rendered in any order.

    :param seed: noise seed
    :param camera: the camera (vignetting centre and radius)
    :param light: the scene's lighting
    """

    def __init__(self, seed: int, camera: PinholeCamera, light: Lighting):
        """Draw the sensor's constants."""
        rng = np.random.default_rng([seed, 0x5E45])
        self.seed = seed
        self.key = float(rng.uniform(0.35, 0.5))
        self.read_noise = float(rng.uniform(0.004, 0.01))
        self.shot_noise = float(rng.uniform(0.01, 0.025))
        u = (np.arange(camera.width) - camera.cx) / camera.fx
        v = (np.arange(camera.height) - camera.cy) / camera.fy
        r2 = u[None, :] ** 2 + v[:, None] ** 2
        self.vignette = (1.0 / (1.0 + r2) ** 2 * (1 + rng.uniform(0, 0.3) * r2)).astype(
            np.float32)[..., None]
        typical = 0.3 * float(np.mean(0.6 * np.asarray(light.sun) + np.asarray(light.ambient)))
        self.gain = self.key / typical

    def develop(self, radiance: np.ndarray, frame_index: int) -> np.ndarray:
        """Turn linear radiance float [H, W, 3] into uint8 RGB."""
        x = radiance * self.vignette * self.gain
        rng = np.random.default_rng([self.seed, 0x5E45, frame_index])
        sigma = np.sqrt(self.read_noise ** 2 + self.shot_noise ** 2 * np.clip(x, 0, None))
        x = x + rng.standard_normal(x.shape).astype(np.float32) * sigma
        return (np.power(np.clip(x, 0.0, 1.0), 1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


class SceneRenderer:
    """Renders an :class:`IndependentScene` through one camera.

    :param scene: the scene
    :param camera: undistorted pinhole camera
    :param shadow_resolution: texels per side of the sun's shadow map
    """

    def __init__(self, scene: IndependentScene, camera: PinholeCamera,
                 shadow_resolution: int = 1024):
        """Flatten the scene and prepare the shadow map and sensor."""
        self.scene = scene
        self.camera = camera
        self.posed = PosedScene(scene)
        self.shadow = ShadowMap(scene, shadow_resolution)
        self.sensor = Sensor(scene.seed, camera, scene.light)
        mats = scene.materials
        self.mat_texture = np.array([m.texture for m in mats], np.int64)
        self.mat_scale = np.array([m.scale_m for m in mats], np.float64)
        self.mat_tint = np.stack([m.tint for m in mats]).astype(np.float32)
        self.mat_offset = np.stack([m.offset for m in mats])
        self.rays = camera.pixel_rays().reshape(-1, 3).astype(np.float64)   # z = 1
        self._static_key: Optional[bytes] = None
        self._static_raster: Optional[Raster] = None

    def _raster(self, tri_world: np.ndarray, T_world_cam: np.ndarray) -> Raster:
        """z-buffer of the frame; the static layer is reused while the camera stays put."""
        n_static = self.posed.n_static_tris
        key = np.asarray(T_world_cam, np.float64).tobytes()
        if key != self._static_key:
            self._static_raster = rasterise(tri_world[:n_static], self.camera, T_world_cam)
            self._static_key = key
        out = self._static_raster.copy()
        if len(tri_world) > n_static:
            rasterise(tri_world[n_static:], self.camera, T_world_cam, into=out,
                      tri_offset=n_static)
        return out

    def render(self, t: float, T_world_cam: np.ndarray, frame_index: int) -> Frame:
        """Render the scene at time ``t`` (seconds) from ``T_world_cam`` (float [4, 4])."""
        cam = self.camera
        h, w = cam.height, cam.width
        verts, normals, _ = self.posed.posed(t)
        tris = self.posed.triangles
        tri_world = verts[tris]
        raster = self._raster(tri_world, T_world_cam)
        hit = np.flatnonzero(raster.tri >= 0)
        tri = raster.tri[hit]
        T = np.asarray(T_world_cam, np.float64)
        depth = raster.depth[hit]
        rays_w = rotate(T, self.rays)
        p_world = T[:3, 3] + rays_w[hit] * depth[:, None]
        bary = barycentric(p_world, tri_world[tri])
        corners = tris[tri]
        n = np.einsum('mk,mkj->mj', bary, normals[corners])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        view = rays_w[hit] / np.linalg.norm(rays_w[hit], axis=1, keepdims=True)
        # Interpolated normals may lean away from the viewer at silhouettes.
        n = np.where((np.einsum('mk,mk->m', n, view) > 0)[:, None], -n, n)
        part = self.posed.tri_part[tri]
        mat = self.posed.part_material[part]
        albedo = self._albedo(mat, np.einsum('mk,mkj->mj', bary, self.posed.uv[corners]),
                              depth, np.abs(np.einsum('mk,mk->m', n, view)))
        light = self.scene.light
        cos_sun = n @ light.sun_dir
        shadow_map = self.shadow.draw(tri_world, self.posed.n_static_tris)
        lit = self.shadow.lit(shadow_map, p_world, cos_sun)
        irradiance = (np.clip(cos_sun, 0, None)[:, None] * lit[:, None] * light.sun
                      + (0.6 + 0.4 * n[:, 2:3]) * light.ambient)
        radiance = np.empty((h * w, 3), np.float32)
        up = np.clip(rays_w[:, 2] / np.linalg.norm(rays_w, axis=1), 0, 1)[:, None]
        radiance[:] = light.sky_low * (1 - up) + light.sky_high * up
        radiance[hit] = albedo * irradiance
        image = self.sensor.develop(radiance.reshape(h, w, 3), frame_index)
        out_depth = np.zeros(h * w, np.float32)
        out_depth[hit] = depth
        actor = np.full(h * w, -1, np.int64)
        actor[hit] = self.posed.part_actor[part]
        moving = np.zeros(h * w, bool)
        moving[hit] = self.posed.part_dynamic[part]
        return Frame(image, out_depth.reshape(h, w), moving.reshape(h, w), actor.reshape(h, w))

    def _albedo(self, mat: np.ndarray, uv: np.ndarray, depth: np.ndarray,
                cos_view: np.ndarray) -> np.ndarray:
        """Texture colour float32 [M, 3] of visible points.

        :param mat: int [M] material
        :param uv: float [M, 2] surface coordinates (metres)
        :param depth: float [M] z (metres)
        :param cos_view: float [M] |cos| of the viewing angle
        """
        out = np.empty((len(mat), 3), np.float32)
        scale = self.mat_scale[mat]
        st = uv / scale[:, None] + self.mat_offset[mat]
        # Size of one pixel on the surface, in texture widths.
        footprint = depth / self.camera.fx / np.maximum(cos_view, 0.15) / scale
        tex = self.mat_texture[mat]
        for k in np.unique(tex):
            sel = np.flatnonzero(tex == k)
            out[sel] = (1.0 if k < 0 else self.scene.textures[k].sample(st[sel], footprint[sel]))
        return out * self.mat_tint[mat]


def actor_names(scene: IndependentScene) -> List[dict]:
    """Return meta entries ``{name, dynamic}`` of every actor."""
    return [{'name': a.name, 'dynamic': bool(a.dynamic)} for a in scene.actors]
