"""Procedural scenes: closed triangle-mesh parts grouped into objects that move over time.

An object is a list of parts (closed boxes, cylinders, spheres placed in the object's frame), one
material, and one motion giving its affine pose ``T_world_obj(t)``. Two seeded families:

- ``industrial``: a hall (floor, walls) with benches, crates, barrels, shelves, and machinery
  that moves (rotating arms, sliding carriages, pistons, conveyor items), walking people and a
  breathing (scaling) object, around a region of interest at the origin;
- ``driving``: a road with kerbs and sidewalks, a cross street, buildings, parked cars, poles,
  moving cars and pedestrians; the camera vehicle drives along the road and turns.

World frame: z up, metres, the ground at z = 0.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import open3d as o3d

from l3rocc_core.synth.appearance import (Lighting, Material, palette, random_material)
from l3rocc_core.synth.motion import (Breathe, CameraTrajectory, Conveyor, HandheldCamera,
                                      Motion, OrbitCamera, Oscillate, PanCamera, Spin,
                                      StaticCamera, Still, VehicleCamera, Walk, pose_xyz_yaw,
                                      rot_axis, translation, CAMERA_MOTIONS)

FAMILIES = ('industrial', 'driving')
PART_KINDS = ('box', 'cylinder', 'sphere')


@dataclass
class Part:
    """One closed mesh in its object's frame.

    :param kind: 'box' (centred, extents ``size``), 'cylinder' (axis z, centred, radius
        ``size[0]``, height ``size[2]``) or 'sphere' (centred, radius ``size[0]``)
    :param size: [3] metres
    :param T_obj_part: float64 [4, 4] rigid placement in the object frame
    :param resolution: tessellation of cylinders and spheres
    """

    kind: str
    size: Tuple[float, float, float]
    T_obj_part: np.ndarray = field(default_factory=lambda: np.eye(4))
    resolution: int = 24

    def __post_init__(self) -> None:
        """Build the local mesh."""
        if self.kind not in PART_KINDS:
            raise ValueError(f'unknown part kind {self.kind!r} (known: {PART_KINDS})')
        sx, sy, sz = (float(v) for v in self.size)
        if min(sx, sy, sz) <= 0:
            raise ValueError(f'part size must be positive, got {self.size}')
        if self.kind == 'box':
            mesh = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
            mesh.translate([-sx / 2, -sy / 2, -sz / 2])
        elif self.kind == 'cylinder':
            mesh = o3d.geometry.TriangleMesh.create_cylinder(sx, sz, self.resolution, 1)
        else:
            mesh = o3d.geometry.TriangleMesh.create_sphere(sx, max(6, self.resolution // 2))
        self.vertices = np.asarray(mesh.vertices, np.float64)      # [V, 3] part frame
        self.triangles = np.asarray(mesh.triangles, np.int32)      # [F, 3]
        self.T_obj_part = np.asarray(self.T_obj_part, np.float64)

    @property
    def area(self) -> float:
        """Surface area of the mesh in m^2."""
        v = self.vertices[self.triangles]
        return float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]),
                                          axis=1).sum())


def box(sx: float, sy: float, sz: float, x: float = 0.0, y: float = 0.0, z: float = 0.0,
        yaw: float = 0.0) -> Part:
    """Return a box part of extents (sx, sy, sz) centred at (x, y, z) of the object frame."""
    return Part('box', (sx, sy, sz), pose_xyz_yaw(x, y, z, yaw))


def cylinder(r: float, h: float, x: float = 0.0, y: float = 0.0, z: float = 0.0,
             axis: str = 'z', resolution: int = 24) -> Part:
    """Return a cylinder part (radius r, height h) centred at (x, y, z), axis along x, y or z."""
    T = translation([x, y, z])
    if axis == 'x':
        T = T @ rot_axis([0, 1, 0], np.pi / 2)
    elif axis == 'y':
        T = T @ rot_axis([1, 0, 0], np.pi / 2)
    return Part('cylinder', (r, r, h), T, resolution)


def sphere(r: float, x: float = 0.0, y: float = 0.0, z: float = 0.0,
           resolution: int = 24) -> Part:
    """Return a sphere part of radius r centred at (x, y, z)."""
    return Part('sphere', (r, r, r), translation([x, y, z]), resolution)


@dataclass
class SceneObject:
    """Parts sharing one material and one motion.

    :param name: for humans and debugging
    :param parts: closed meshes in the object frame
    :param material: surface look (texture in object coordinates)
    :param motion: ``pose(t)`` = affine ``T_world_obj``
    """

    name: str
    parts: List[Part]
    material: Material
    motion: Motion

    @property
    def dynamic(self) -> bool:
        """Whether the object moves (its voxels are in the dynamic mask)."""
        return bool(self.motion.dynamic)


@dataclass
class Scene:
    """A seeded scene.

    :param family: one of :data:`FAMILIES`
    :param seed: the seed it was made from
    :param objects: every object
    :param light: lighting and sky
    :param focus: float64 [3] point of interest that cameras look at
    :param roi_min: float64 [3] suggested grid min corner (metres)
    :param roi_max: float64 [3] suggested grid max corner (metres)
    :param max_depth: recommended ``max_depth`` for the pipeline on this scene (metres)
    :param road: (half road width, cross street x, cross street half width) for driving
    """

    family: str
    seed: int
    objects: List[SceneObject]
    light: Lighting
    focus: np.ndarray
    roi_min: np.ndarray
    roi_max: np.ndarray
    max_depth: float
    road: Optional[Tuple[float, float, float]] = None

    def add(self, name: str, parts: Sequence[Part], material: Material,
            motion: Motion) -> SceneObject:
        """Append an object and return it."""
        obj = SceneObject(name, list(parts), material, motion)
        self.objects.append(obj)
        return obj


# ---------------------------------------------------------------------------------------------
# Shared building blocks


def _mat(rng: np.random.Generator, colour: str,
         patterns: Sequence[str] = ('noise', 'checker', 'stripes', 'brick'),
         specular_prob: float = 0.1, scale: Sequence[float] = (0.08, 0.5)) -> Material:
    return random_material(rng, palette(colour), patterns, specular_prob, scale)


def _person_parts(rng: np.random.Generator) -> List[Part]:
    """Return a people-sized figure (legs, torso, head; ~1.6-1.9 m) standing on z = 0."""
    h = rng.uniform(0.75, 0.9)
    torso = rng.uniform(0.55, 0.7)
    return [cylinder(0.15, h, z=h / 2, resolution=16),
            box(0.24, 0.42, torso, z=h + torso / 2),
            sphere(0.11, z=h + torso + 0.14, resolution=16)]


def _car_parts(rng: np.random.Generator) -> Tuple[List[Part], float]:
    """Return a car (body, cabin, 4 wheels) facing +x on z = 0, as (parts, length)."""
    length, width = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.95)
    body_h = rng.uniform(0.55, 0.75)
    cab_h = rng.uniform(0.45, 0.6)
    r = rng.uniform(0.3, 0.36)
    parts = [box(length, width, body_h, z=r + body_h / 2 - 0.05),
             box(length * rng.uniform(0.45, 0.6), width * 0.9, cab_h,
                 x=-length * rng.uniform(0.0, 0.1), z=r + body_h - 0.05 + cab_h / 2)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(cylinder(r, 0.2, x=sx * length * 0.32, y=sy * (width / 2 - 0.05),
                                  z=r, axis='y', resolution=16))
    return parts, length


def _free_spot(rng: np.random.Generator, taken: List[Tuple[float, float, float]],
               radius: float, lo: Sequence[float], hi: Sequence[float],
               tries: int = 60) -> Optional[Tuple[float, float]]:
    """Return a spot in the rectangle [lo, hi] whose footprint circle overlaps no taken one."""
    for _ in range(tries):
        x, y = rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])
        if all((x - a) ** 2 + (y - b) ** 2 > (radius + c) ** 2 for a, b, c in taken):
            taken.append((x, y, radius))
            return float(x), float(y)
    return None


def _in_disk(rng: np.random.Generator, taken: List[Tuple[float, float, float]], radius: float,
             disk: float) -> Optional[Tuple[float, float]]:
    for _ in range(80):
        spot = _free_spot(rng, taken, radius, (-disk, -disk), (disk, disk), tries=1)
        if spot is None:
            continue
        if np.hypot(*spot) + radius <= disk:
            return spot
        taken.pop()
    return None


def _random_sun(rng: np.random.Generator, min_elevation_deg: float, max_elevation_deg: float
                ) -> np.ndarray:
    """Draw a sun direction: the elevation (uniform in the range, degrees), then the azimuth.

    :return: float64 [3] unit vector toward the sun (world frame, z up)
    """
    elev = np.radians(rng.uniform(min_elevation_deg, max_elevation_deg))
    az = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)])


# ---------------------------------------------------------------------------------------------
# Industrial hall


def industrial_scene(seed: int) -> Scene:
    """Build a hall with machinery around the origin (region of interest radius ~2.3 m).

    Cameras stand on a ring of radius 2.7-3.7 m, which is kept free.
    """
    rng = np.random.default_rng([seed, 1])
    light = Lighting(_random_sun(rng, 35, 75), ambient=float(rng.uniform(0.25, 0.45)),
                     diffuse=float(rng.uniform(0.6, 0.9)),
                     sky_horizon=np.array([0.3, 0.3, 0.32]) * rng.uniform(0.6, 1.2),
                     sky_zenith=np.array([0.15, 0.16, 0.18]) * rng.uniform(0.6, 1.2))
    scene = Scene('industrial', seed, [], light, np.array([0.0, 0.0, 0.6]),
                  np.array([-2.4, -2.4, -0.1]), np.array([2.4, 2.4, 2.3]), 6.0)
    rx, ry = rng.uniform(4.6, 6.5), rng.uniform(4.6, 6.0)
    floor_mat = _mat(rng, str(rng.choice(['concrete', 'sand', 'steel'])),
                     ('noise', 'checker', 'noise'), 0.05, (0.25, 1.0))
    scene.add('floor', [box(2 * rx + 1, 2 * ry + 1, 0.1, z=-0.05)], floor_mat,
              Still(np.eye(4)))
    wall_col = str(rng.choice(['white', 'concrete', 'brick', 'blue']))
    wall_mat = _mat(rng, wall_col, ('weak', 'brick', 'weak', 'noise'), 0.0, (0.2, 0.8))
    walls = [box(0.2, 2 * ry, 3.0, x=sx * rx, z=1.5) for sx in (-1, 1)]
    walls += [box(2 * rx, 0.2, 3.0, y=sy * ry, z=1.5) for sy in (-1, 1)]
    if rng.random() < 0.3:
        walls.pop(int(rng.integers(len(walls))))
    scene.add('walls', walls, wall_mat, Still(np.eye(4)))
    # Shelves and crates along the walls (beyond the camera ring).
    for i in range(int(rng.integers(2, 5))):
        side = int(rng.integers(4))
        along = rng.uniform(-0.6, 0.6) * (ry if side < 2 else rx)
        depth, length = rng.uniform(0.4, 0.6), rng.uniform(1.2, 2.4)
        height = rng.uniform(1.6, 2.4)
        shelf = [box(0.06, 0.06, height, x=sx * length / 2, y=sy * depth / 2, z=height / 2)
                 for sx in (-1, 1) for sy in (-1, 1)]
        levels = int(rng.integers(3, 5))
        for k in range(levels):
            shelf.append(box(length, depth, 0.04, z=0.15 + k * (height - 0.2) / (levels - 1)))
        if side == 0:
            T = pose_xyz_yaw(rx - 0.1 - depth / 2 - 0.05, along, 0, np.pi / 2)
        elif side == 1:
            T = pose_xyz_yaw(-rx + 0.1 + depth / 2 + 0.05, along, 0, np.pi / 2)
        elif side == 2:
            T = pose_xyz_yaw(along, ry - 0.1 - depth / 2 - 0.05, 0)
        else:
            T = pose_xyz_yaw(along, -ry + 0.1 + depth / 2 + 0.05, 0)
        scene.add(f'shelf{i}', shelf, _mat(rng, str(rng.choice(['orange', 'blue', 'steel'])),
                                           ('noise', 'stripes'), 0.3), Still(T))
        for k in range(int(rng.integers(1, 4))):
            s = rng.uniform(0.2, 0.35)
            lvl = int(rng.integers(0, levels - 1))
            z = 0.17 + lvl * (height - 0.2) / (levels - 1) + s / 2
            scene.add(f'shelf{i}_box{k}',
                      [box(s, s * rng.uniform(0.8, 1.2), s, x=rng.uniform(-0.4, 0.4) * length,
                           z=z)], _mat(rng, str(rng.choice(['wood', 'sand', 'red', 'green']))),
                      Still(T))

    taken: List[Tuple[float, float, float]] = []
    disk = 2.3
    # Rotating arm on a base.
    spot = _in_disk(rng, taken, 0.9, disk)
    if spot is not None:
        base_h = rng.uniform(0.6, 1.0)
        scene.add('arm_base', [cylinder(0.22, base_h, z=base_h / 2)],
                  _mat(rng, 'steel', specular_prob=0.6), Still(pose_xyz_yaw(*spot, 0)))
        arm_len = rng.uniform(0.6, 0.9)
        arm = [box(arm_len, 0.12, 0.1, x=arm_len / 2),
               box(0.12, 0.2, 0.25, x=arm_len, z=-0.17)]
        sweep = rng.uniform(0.8, 1.6) if rng.random() < 0.5 else 0.0
        scene.add('arm', arm, _mat(rng, str(rng.choice(['yellow', 'orange']))),
                  Spin(pose_xyz_yaw(spot[0], spot[1], base_h + 0.06, 0),
                       rate=float(rng.uniform(0.5, 1.4) * rng.choice([-1, 1])),
                       phase=float(rng.uniform(0, 2 * np.pi)), sweep=float(sweep)))
    # Sliding carriage on a rail.
    if rng.random() < 0.8:
        spot = _in_disk(rng, taken, 1.0, disk)
        if spot is not None:
            yaw = rng.uniform(0, np.pi)
            rail_h = rng.uniform(0.3, 0.8)
            T = pose_xyz_yaw(spot[0], spot[1], 0, yaw)
            scene.add('rail', [box(1.8, 0.25, rail_h, z=rail_h / 2)],
                      _mat(rng, 'steel', ('noise', 'stripes'), 0.4), Still(T))
            cs = rng.uniform(0.3, 0.45)
            scene.add('carriage', [box(cs, cs, cs * 0.8, z=rail_h + cs * 0.4)],
                      _mat(rng, str(rng.choice(['red', 'blue', 'green']))),
                      Oscillate(T, np.array([np.cos(yaw), np.sin(yaw), 0.0]),
                                float(rng.uniform(0.4, 0.65)), float(rng.uniform(2.5, 6.0)),
                                float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 1))))
    # Piston in a housing.
    if rng.random() < 0.8:
        spot = _in_disk(rng, taken, 0.45, disk)
        if spot is not None:
            T = pose_xyz_yaw(spot[0], spot[1], 0, rng.uniform(0, np.pi))
            hh = rng.uniform(0.4, 0.7)
            scene.add('piston_housing', [box(0.5, 0.5, hh, z=hh / 2)],
                      _mat(rng, 'steel', specular_prob=0.5), Still(T))
            rod = [cylinder(0.08, 0.5, z=hh + 0.2, resolution=16),
                   box(0.4, 0.4, 0.12, z=hh + 0.51)]
            scene.add('piston', rod, _mat(rng, str(rng.choice(['yellow', 'red']))),
                      Oscillate(T, np.array([0.0, 0.0, 1.0]), float(rng.uniform(0.15, 0.3)),
                                float(rng.uniform(1.2, 3.0)), float(rng.uniform(0, 2 * np.pi)),
                                float(rng.uniform(0, 1))))
    # Conveyor with items.
    if rng.random() < 0.7:
        spot = _in_disk(rng, taken, 1.3, disk)
        if spot is not None:
            yaw = rng.uniform(0, np.pi)
            length, width, h = rng.uniform(1.8, 2.5), rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.8)
            T = pose_xyz_yaw(spot[0], spot[1], 0, yaw)
            scene.add('conveyor', [box(length, width, h, z=h / 2)],
                      _mat(rng, 'dark', ('stripes', 'noise'), 0.0, (0.05, 0.15)), Still(T))
            d = np.array([np.cos(yaw), np.sin(yaw), 0.0]) * length / 2
            c = np.array([spot[0], spot[1], 0.0])
            speed = rng.uniform(0.25, 0.6)
            n_items = int(rng.integers(2, 5))
            for k in range(n_items):
                s = rng.uniform(0.15, 0.3)
                lift = np.array([0, 0, h + s / 2 + 0.001])
                scene.add(f'conveyor_item{k}', [box(s, s * rng.uniform(0.7, 1.0), s)],
                          _mat(rng, str(rng.choice(['wood', 'sand', 'white', 'red']))),
                          Conveyor(c - d + lift, c + d + lift, float(speed),
                                   float(k * 2 * length / n_items / 2), float(yaw)))
    # Benches with small things on top.
    for i in range(int(rng.integers(1, 3))):
        spot = _in_disk(rng, taken, 0.8, disk)
        if spot is None:
            continue
        bl, bw, bh = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.8), rng.uniform(0.75, 0.9)
        T = pose_xyz_yaw(spot[0], spot[1], 0, rng.uniform(0, np.pi))
        bench = [box(bl, bw, 0.05, z=bh - 0.025)]
        bench += [box(0.05, 0.05, bh - 0.05, x=sx * (bl / 2 - 0.05), y=sy * (bw / 2 - 0.05),
                      z=(bh - 0.05) / 2) for sx in (-1, 1) for sy in (-1, 1)]
        scene.add(f'bench{i}', bench, _mat(rng, str(rng.choice(['wood', 'steel', 'green']))),
                  Still(T))
        for k in range(int(rng.integers(1, 4))):
            s = rng.uniform(0.1, 0.25)
            x, y = rng.uniform(-0.35, 0.35) * bl, rng.uniform(-0.3, 0.3) * bw
            part = (box(s, s * rng.uniform(0.6, 1.4), s, x=x, y=y, z=bh + s / 2)
                    if rng.random() < 0.6 else
                    cylinder(s / 2, s * 1.5, x=x, y=y, z=bh + s * 0.75, resolution=16))
            scene.add(f'bench{i}_item{k}', [part],
                      _mat(rng, str(rng.choice(['red', 'blue', 'white', 'sand'])),
                           specular_prob=0.4), Still(T))
    # Crates (sometimes stacked) and barrels.
    for i in range(int(rng.integers(2, 6))):
        s = rng.uniform(0.3, 0.7)
        spot = _in_disk(rng, taken, s * 0.75, disk)
        if spot is None:
            continue
        parts = [box(s, s * rng.uniform(0.8, 1.2), s * rng.uniform(0.7, 1.1), z=0)]
        parts[0].T_obj_part[2, 3] = parts[0].size[2] / 2
        if rng.random() < 0.4:
            s2 = s * rng.uniform(0.5, 0.9)
            parts.append(box(s2, s2, s2, z=parts[0].size[2] + s2 / 2 + 0.001,
                             yaw=rng.uniform(-0.4, 0.4)))
        scene.add(f'crate{i}', parts, _mat(rng, str(rng.choice(['wood', 'sand', 'green'])),
                                           ('noise', 'brick', 'stripes')),
                  Still(pose_xyz_yaw(*spot, 0, rng.uniform(0, np.pi))))
    for i in range(int(rng.integers(0, 3))):
        spot = _in_disk(rng, taken, 0.3, disk)
        if spot is None:
            continue
        scene.add(f'barrel{i}', [cylinder(0.28, 0.9, z=0.45)],
                  _mat(rng, str(rng.choice(['blue', 'red', 'yellow'])), ('stripes', 'noise'),
                       0.5), Still(pose_xyz_yaw(*spot, 0)))
    # A breathing (scaling) object.
    spot = _in_disk(rng, taken, 0.45, disk)
    if spot is not None:
        r = rng.uniform(0.22, 0.35)
        if rng.random() < 0.5:
            parts = [sphere(r)]
        else:
            parts = [box(2 * r, 2 * r, 2 * r)]
        scene.add('breather', parts, _mat(rng, str(rng.choice(['green', 'red', 'blue'])),
                                          specular_prob=0.5),
                  Breathe(pose_xyz_yaw(spot[0], spot[1], r * 1.35, 0),
                          float(rng.uniform(0.12, 0.3)), float(rng.uniform(1.5, 4.0)),
                          float(rng.uniform(0, 2 * np.pi))))
    # People walking loops through the region of interest.
    for i in range(int(rng.integers(1, 4))):
        pts = rng.uniform(-2.0, 2.0, (int(rng.integers(3, 6)), 2))
        scene.add(f'person{i}', _person_parts(rng),
                  _mat(rng, str(rng.choice(['blue', 'orange', 'dark', 'green', 'white'])),
                       ('noise', 'stripes', 'checker')),
                  Walk(pts, float(rng.uniform(0.5, 1.2)), 0.0, float(rng.uniform(0, 10)),
                       float(rng.uniform(0.0, 0.03))))
    return scene


# ---------------------------------------------------------------------------------------------
# Driving street


def driving_scene(seed: int) -> Scene:
    """Build a street along x (right-hand traffic) with a cross street at ``x = xc``."""
    rng = np.random.default_rng([seed, 2])
    light = Lighting(_random_sun(rng, 25, 70), ambient=float(rng.uniform(0.3, 0.5)),
                     diffuse=float(rng.uniform(0.6, 1.0)),
                     sky_horizon=np.array([0.75, 0.8, 0.85]) * rng.uniform(0.8, 1.1),
                     sky_zenith=np.array([0.25, 0.4, 0.75]) * rng.uniform(0.7, 1.1))
    wr = float(rng.uniform(3.0, 4.2))          # half road width
    ws = float(rng.uniform(1.8, 3.0))          # sidewalk width
    xc = float(rng.uniform(16.0, 24.0))        # cross street centre
    wc = float(rng.uniform(3.0, 4.0))          # half cross street width
    x_lo, x_hi = -30.0, 60.0
    scene = Scene('driving', seed, [], light, np.array([6.0, 0.0, 0.8]),
                  np.array([-1.0, -4.8, -0.1]), np.array([8.6, 4.8, 2.3]), 12.0,
                  road=(wr, xc, wc))
    asphalt = _mat(rng, 'asphalt', ('noise',), 0.0, (0.3, 1.0))
    scene.add('road', [box(x_hi - x_lo, 2 * wr, 0.1, x=(x_lo + x_hi) / 2, z=-0.05),
                       box(2 * wc, 80.0, 0.1, x=xc, z=-0.05 - 0.0005)], asphalt,
              Still(np.eye(4)))
    # Lane markings: dashed centre line.
    dashes = [box(2.0, 0.12, 0.01, x=x, z=0.003) for x in np.arange(x_lo, x_hi, 5.0)
              if abs(x - xc) > wc + 1.0]
    scene.add('markings', dashes, _mat(rng, 'white', ('weak',), 0.0), Still(np.eye(4)))
    # Sidewalks (kerb 0.15 m) around the intersection, both sides.
    kerb = float(rng.uniform(0.12, 0.18))
    walk_mat = _mat(rng, str(rng.choice(['concrete', 'sand'])), ('checker', 'noise', 'brick'),
                    0.0, (0.3, 0.6))
    walks = []
    for sy in (-1, 1):
        yc = sy * (wr + ws / 2)
        for lo, hi in ((x_lo, xc - wc), (xc + wc, x_hi)):
            walks.append(box(hi - lo, ws, kerb, x=(lo + hi) / 2, y=yc, z=kerb / 2))
    scene.add('sidewalks', walks, walk_mat, Still(np.eye(4)))
    # Buildings behind the sidewalks.
    for sy in (-1, 1):
        x = x_lo
        while x < x_hi:
            width = float(rng.uniform(5.0, 14.0))
            gap = float(rng.uniform(0.0, 3.0))
            lo, hi = x + gap, x + gap + width
            x = hi
            if hi > xc - wc - ws and lo < xc + wc + ws:
                continue
            depth, height = float(rng.uniform(6, 12)), float(rng.uniform(4, 18))
            y = sy * (wr + ws + 0.3 + depth / 2)
            colour = str(rng.choice(['brick', 'white', 'concrete', 'sand', 'blue']))
            scene.add(f'building{len(scene.objects)}',
                      [box(width, depth, height, x=(lo + hi) / 2, y=y, z=height / 2)],
                      _mat(rng, colour, ('brick', 'weak', 'checker', 'noise', 'stripes'), 0.15,
                           (0.3, 1.2)), Still(np.eye(4)))
    # Poles and lamps on the sidewalks.
    for i in range(int(rng.integers(4, 10))):
        sy = rng.choice([-1, 1])
        x = rng.uniform(x_lo + 5, x_hi - 5)
        if abs(x - xc) < wc + 1:
            continue
        h = rng.uniform(3.0, 6.0)
        parts = [cylinder(0.07, h, z=h / 2, resolution=12),
                 box(0.5, 0.25, 0.15, y=-sy * 0.2, z=h + 0.08)]
        scene.add(f'pole{i}', parts, _mat(rng, str(rng.choice(['steel', 'dark', 'green'])),
                                          ('noise', 'stripes'), 0.5),
                  Still(translation([x, sy * (wr + 0.4), kerb])))
    # Parked cars along the kerbs, never overlapping.
    parked: List[Tuple[float, float]] = []
    for i in range(int(rng.integers(3, 9))):
        parts, length = _car_parts(rng)
        sy = rng.choice([-1, 1])
        x = rng.uniform(x_lo + 10, x_hi - 10)
        if abs(x - xc) < wc + length or any(s == sy and abs(x - px) < 5.5 for s, px in parked):
            continue
        parked.append((sy, x))
        scene.add(f'parked{i}', parts, _mat(rng, str(rng.choice(
            ['red', 'blue', 'white', 'dark', 'steel', 'green'])), ('noise', 'stripes'), 0.7,
            (0.1, 0.4)), Still(pose_xyz_yaw(x, sy * (wr - 1.05), 0, 0 if sy < 0 else np.pi)))
    # Moving cars: oncoming ones in the left lane (wrapping around the street), and ones in the
    # camera vehicle's lane that start ahead of it and drive away faster than it can follow
    # (they never wrap, so none drives through the camera).
    for i in range(int(rng.integers(1, 4))):
        parts, _ = _car_parts(rng)
        if rng.random() < 0.5:
            a = np.array([rng.uniform(6.0, 30.0), -wr / 2, 0.0])
            b = a + np.array([2000.0, 0.0, 0.0])
            motion = Conveyor(a, b, float(rng.uniform(4.5, 8.0)), 0.0, 0.0)
        else:
            a, b = np.array([x_hi, wr / 2, 0.0]), np.array([x_lo, wr / 2, 0.0])
            motion = Conveyor(a, b, float(rng.uniform(3.0, 8.0)), float(rng.uniform(20, 50)),
                              np.pi)
        scene.add(f'car{i}', parts, _mat(rng, str(rng.choice(
            ['red', 'blue', 'white', 'yellow', 'dark'])), ('noise', 'stripes'), 0.7, (0.1, 0.4)),
            motion)
    # Pedestrians walking back and forth on the sidewalks (some crossing the road).
    for i in range(int(rng.integers(2, 6))):
        sy = rng.choice([-1, 1])
        y = sy * (wr + rng.uniform(0.4, ws - 0.4))
        x0 = rng.uniform(-2, 14)
        if rng.random() < 0.25:
            pts = np.array([[x0, y], [x0 + rng.uniform(-1, 1), -y]])
            z = 0.0
        else:
            pts = np.array([[x0, y], [x0 + rng.uniform(4, 10) * rng.choice([-1, 1]), y]])
            z = kerb
        scene.add(f'pedestrian{i}', _person_parts(rng),
                  _mat(rng, str(rng.choice(['blue', 'orange', 'dark', 'red', 'white'])),
                       ('noise', 'stripes', 'checker')),
                  Walk(pts, float(rng.uniform(0.8, 1.5)), z, float(rng.uniform(0, 10)),
                       float(rng.uniform(0.0, 0.03))))
    return scene


def make_scene(family: str, seed: int) -> Scene:
    """Build the scene of ``family`` from ``seed`` (deterministic).

    :raises ValueError: on an unknown family
    """
    if family == 'industrial':
        return industrial_scene(seed)
    if family == 'driving':
        return driving_scene(seed)
    raise ValueError(f'unknown scene family {family!r} (known: {FAMILIES})')


def camera_trajectory(scene: Scene, kind: str, seed: int,
                      duration: float = 60.0) -> CameraTrajectory:
    """Return a camera motion of ``kind`` suited to ``scene`` (deterministic in ``seed``).

    :param kind: one of :data:`~l3rocc_core.synth.motion.CAMERA_MOTIONS`
    :param duration: seconds the trajectory must stay sensible
    :raises ValueError: on an unknown kind
    """
    if kind not in CAMERA_MOTIONS:
        raise ValueError(f'unknown camera motion {kind!r} (known: {CAMERA_MOTIONS})')
    rng = np.random.default_rng([seed, 3, CAMERA_MOTIONS.index(kind)])
    f = scene.focus
    if scene.family == 'industrial':
        radius = rng.uniform(2.8, 3.6)
        phase = rng.uniform(0, 2 * np.pi)
        height = rng.uniform(1.3, 2.1)
        eye = [f[0] + radius * np.cos(phase), f[1] + radius * np.sin(phase), height]
        target = f + np.r_[rng.uniform(-0.4, 0.4, 2), rng.uniform(-0.3, 0.1)]
        if kind == 'static':
            eye[2] = rng.uniform(2.0, 2.8)
            return StaticCamera(eye, target, rng.uniform(-0.03, 0.03))
        if kind == 'pan':
            return PanCamera(eye, target, np.radians(rng.uniform(12, 28)),
                             rng.uniform(6, 14), rng.uniform(0, 2 * np.pi),
                             np.radians(rng.uniform(0, 5)))
        if kind == 'orbit':
            return OrbitCamera(f, radius, height, np.radians(rng.uniform(6, 15)) * rng.choice(
                [-1, 1]), phase, rng.uniform(0.2, 0.7))
        if kind == 'handheld':
            return HandheldCamera(rng, target, radius, rng.uniform(1.3, 1.8), phase,
                                  rng.uniform(0.1, 0.35) * rng.choice([-1, 1]),
                                  rng.uniform(0.6, 1.6))
        # Vehicle: a cart driving around the region on the camera ring, camera turned inwards.
        speed = rng.uniform(0.4, 1.0)
        direction = rng.choice([-1, 1])
        heading = phase + direction * np.pi / 2
        return VehicleCamera(rng, (eye[0], eye[1], heading), speed,
                             direction * speed / radius, 0.0, duration + 10, rng.uniform(1.0, 1.6),
                             np.radians(rng.uniform(8, 20)),
                             direction * np.radians(rng.uniform(45, 75)), duration + 1)
    wr, xc, wc = scene.road
    if kind == 'vehicle':
        speed = rng.uniform(1.5, 4.0)
        x0 = rng.uniform(-4.0, -1.0)
        y0 = -wr / 2 + rng.uniform(-0.3, 0.3)
        choice = rng.integers(3)
        if choice == 0:      # left turn into the cross street
            R = rng.uniform(5.0, 8.0)
            x_turn = xc + wc / 2 - R
            rate, t0, dur = speed / R, (x_turn - x0) / speed, (np.pi / 2) * R / speed
        elif choice == 1:    # right turn
            R = rng.uniform(3.0, 4.0)
            x_turn = xc - wc / 2 - R
            rate, t0, dur = -speed / R, (x_turn - x0) / speed, (np.pi / 2) * R / speed
        else:                # gentle curve while driving on
            rate = np.radians(rng.uniform(2.0, 5.0)) * rng.choice([-1, 1])
            t0, dur = rng.uniform(0.5, 2.0), rng.uniform(1.0, 2.0)
        return VehicleCamera(rng, (x0, y0, 0.0), speed, rate, t0, dur, rng.uniform(1.2, 1.7),
                             np.radians(rng.uniform(2, 9)), 0.0, duration + 1)
    side = rng.choice([-1, 1])
    y_walk = side * (wr + rng.uniform(0.5, 1.5))
    x_eye = rng.uniform(0.0, 6.0)
    target = np.array([x_eye + rng.uniform(5, 9), -side * rng.uniform(0, wr), 0.6])
    if kind == 'static':
        eye = [x_eye, side * (wr + 0.5), rng.uniform(3.0, 5.0)]
        return StaticCamera(eye, target, 0.0)
    if kind == 'pan':
        return PanCamera([x_eye, y_walk, rng.uniform(1.4, 1.8)], target,
                         np.radians(rng.uniform(15, 30)), rng.uniform(6, 14),
                         rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(0, 4)))
    if kind == 'orbit':
        centre = np.array([x_eye + 5.0, 0.0, 0.0])
        return OrbitCamera(centre, wr + 0.8, rng.uniform(1.5, 2.5),
                           np.radians(rng.uniform(4, 8)) * rng.choice([-1, 1]),
                           np.arctan2(side, 0.0), 0.5)
    # Handheld: a pedestrian filming the street, walking along the sidewalk.
    centre = np.array([x_eye, 0.0, 0.5])
    return HandheldCamera(rng, centre + [0, 0, 0.1], abs(y_walk), rng.uniform(1.4, 1.75),
                          np.arctan2(side, 0.0), rng.uniform(0.2, 0.5) * rng.choice([-1, 1]),
                          rng.uniform(0.6, 1.5))
