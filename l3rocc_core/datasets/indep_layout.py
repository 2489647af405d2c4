"""Layout of the independent scenes: a room, a camera rig, moving actors, props, light.

:func:`make_scene` draws everything from one seeded generator: the room (floor slab with its top
at z = 0, two to four walls), the rig (a pole camera by a wall looking down into the room, a
handheld orbit, or a dolly along a wall), the moving actors, placed to cross the camera's view
(some near it, so moving objects fill a real share of the image) without walking into the
camera or each other, then static props where they leave the movers and the camera free.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from l3rocc_core.datasets import indep_mesh as mesh
from l3rocc_core.datasets.indep_mesh import Mesh, rotation, translate
from l3rocc_core.datasets.indep_scene import Actor, DollyRig, IndependentScene, Lighting, \
    make_cart, make_forklift, Material, optical_pose, OrbitRig, Path2D, PoleRig, Rig, RobotArm, \
    Shake, StaticActor, Walker
from l3rocc_core.datasets.indep_texture import PATCH_NAMES, photo_tiles, procedural, Texture

#: Camera rigs: 'pole' never moves.
CAMERA_RIGS = ('pole', 'orbit', 'dolly')
#: What moves in a scene.
ACTOR_SETS = ('people', 'carts', 'arm', 'vehicles', 'mixed')

_X, _Y, _Z = np.eye(3)

#: Named linear-RGB colours the palettes are drawn from.
COLOURS = {
    'navy': (0.03, 0.05, 0.16), 'orange': (0.8, 0.25, 0.03), 'hivis': (0.75, 0.8, 0.05),
    'grey': (0.25, 0.25, 0.26), 'denim': (0.08, 0.15, 0.3), 'red': (0.6, 0.04, 0.04),
    'green': (0.08, 0.3, 0.08), 'wood': (0.45, 0.25, 0.1), 'concrete': (0.42, 0.41, 0.38),
    'steel': (0.5, 0.52, 0.55), 'cream': (0.8, 0.75, 0.6), 'black': (0.03, 0.03, 0.035),
    'teal': (0.05, 0.35, 0.35), 'purple': (0.25, 0.08, 0.35), 'sand': (0.6, 0.5, 0.3),
    'white': (0.85, 0.85, 0.82),
}
_SKIN = ((0.55, 0.36, 0.26), (0.35, 0.2, 0.12), (0.72, 0.52, 0.4), (0.18, 0.1, 0.06))


class _Builder:
    """Draws one scene (all randomness from one generator)."""

    def __init__(self, seed: int, rig_kind: str, actor_set: str, duration: float):
        if rig_kind not in CAMERA_RIGS:
            raise ValueError(f'camera rig must be one of {CAMERA_RIGS}, got {rig_kind!r}')
        if actor_set not in ACTOR_SETS:
            raise ValueError(f'actor set must be one of {ACTOR_SETS}, got {actor_set!r}')
        self.rng = np.random.default_rng([seed, 0x1D3])
        self.seed, self.rig_kind, self.actor_set = seed, rig_kind, actor_set
        self.duration = duration
        self.textures = [Texture.from_image(n, img) for n, img in photo_tiles().items()]
        self.materials: List[Material] = []
        self.actors: List[Actor] = []
        self.moving: List[Actor] = []
        self.times = np.linspace(0.0, duration, 9)

    # ------------------------------------------------------------------ looks
    def _palette(self, names: Sequence[str]) -> np.ndarray:
        rng = self.rng
        picks = rng.choice(list(names), 3)
        return np.clip(np.array([COLOURS[n] for n in picks]) * rng.uniform(0.8, 1.2, (3, 3)),
                       0.01, 0.95)

    def material(self, kinds: Sequence[str], colours: Sequence[str],
                 scale: Tuple[float, float]) -> int:
        """Add a material whose texture is one of ``kinds`` (procedural or photo or 'plain')."""
        rng = self.rng
        kind = str(rng.choice(list(kinds)))
        tint = np.ones(3)
        if kind == 'plain':
            tex = -1
            tint = self._palette(colours)[0]
        elif kind in PATCH_NAMES:
            tex = PATCH_NAMES.index(kind)
            tint = rng.uniform(0.85, 1.15, 3)
        else:
            tex = len(self.textures)
            self.textures.append(Texture.from_image(kind, procedural(kind, rng,
                                                                     self._palette(colours))))
        lo, hi = scale
        self.materials.append(Material(tex, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                                       tint, rng.uniform(0, 1, 2)))
        return len(self.materials) - 1

    # ------------------------------------------------------------------ room and rig
    def room(self) -> None:
        rng = self.rng
        self.rx, self.ry = float(rng.uniform(4.0, 6.0)), float(rng.uniform(3.5, 5.0))
        floor_mat = self.material(('asphalt', 'asphalt_streaks', 'road_paint', 'terrazzo',
                                   'tread', 'planks', 'hexagons'),
                                  ('concrete', 'sand', 'grey', 'wood', 'steel', 'cream'),
                                  (0.8, 2.5))
        wall_mat = self.material(('marble', 'cells', 'hexagons', 'camouflage', 'asphalt',
                                  'plain', 'knit'),
                                 ('cream', 'white', 'concrete', 'teal', 'sand', 'grey'),
                                 (1.0, 3.0))
        rx, ry = self.rx, self.ry
        parts, poses, mats = [mesh.box(2 * rx + 0.4, 2 * ry + 0.4, 0.1)], [translate(z=-0.05)], [
            floor_mat]
        self.wall_h = float(rng.uniform(2.6, 3.2))
        walls = [(translate(rx + 0.1, 0, self.wall_h / 2), (0.2, 2 * ry + 0.4)),
                 (translate(-rx - 0.1, 0, self.wall_h / 2), (0.2, 2 * ry + 0.4)),
                 (translate(0, ry + 0.1, self.wall_h / 2), (2 * rx, 0.2)),
                 (translate(0, -ry - 0.1, self.wall_h / 2), (2 * rx, 0.2))]
        if rng.random() < 0.3:
            walls.pop(int(rng.integers(len(walls))))
        for T, (sx, sy) in walls:
            parts.append(mesh.box(sx, sy, self.wall_h))
            poses.append(T)
            mats.append(wall_mat)
        self.actors.append(StaticActor('room', parts, mats, np.stack(poses)))

    def rig(self) -> Rig:
        rng = self.rng
        rx, ry = self.rx, self.ry
        if self.rig_kind == 'pole':
            side = int(rng.integers(4))
            along = float(rng.uniform(-0.4, 0.4))
            inward = [(-1, 0), (1, 0), (0, -1), (0, 1)][side]
            eye = np.array([(rx - 0.4) * -inward[0] if inward[0] else along * rx,
                            (ry - 0.4) * -inward[1] if inward[1] else along * ry,
                            rng.uniform(1.5, 3.0)])
            yaw = np.arctan2(inward[1], inward[0]) + np.radians(rng.uniform(-25, 25))
            pitch = np.radians(rng.uniform(20, 40))
            T = optical_pose(eye, yaw, pitch, np.radians(rng.uniform(-2, 2)))
            # Where the optical axis meets the floor, kept 2-5 m away.
            reach = np.clip(eye[2] / np.tan(pitch), 2.0, 5.0)
            self.focus = eye[:2] + reach * np.array([np.cos(yaw), np.sin(yaw)])
            return PoleRig(T)
        shake = Shake(rng, 0.012, np.radians(0.6))
        if self.rig_kind == 'orbit':
            centre = np.r_[rng.uniform(-1, 1, 2), rng.uniform(0.5, 0.9)]
            radius = float(min(rng.uniform(2.2, 3.2), min(rx, ry) - 0.4))
            self.focus = centre[:2]
            return OrbitRig(centre, radius, float(rng.uniform(1.3, 1.8)),
                            float(rng.uniform(0, 2 * np.pi)),
                            float(rng.uniform(0.1, 0.22) * rng.choice([-1, 1])), shake)
        # Dolly: along a wall, looking into the room.
        along_x = bool(rng.random() < 0.5)
        sign = float(rng.choice([-1, 1]))
        speed = float(rng.uniform(0.2, 0.45)) * float(rng.choice([-1, 1]))
        travel = abs(speed) * self.duration
        if along_x:
            start = np.array([-speed / abs(speed) * travel / 2, sign * (ry - 1.0), 0.0])
            velocity = np.array([speed, 0.0, 0.0])
            yaw = np.arctan2(-sign, 0.0)
        else:
            start = np.array([sign * (rx - 1.0), -speed / abs(speed) * travel / 2, 0.0])
            velocity = np.array([0.0, speed, 0.0])
            yaw = np.arctan2(0.0, -sign)
        start[2] = rng.uniform(1.0, 1.7)
        yaw += np.radians(rng.uniform(-25, 25))
        self.focus = start[:2] + velocity[:2] * self.duration / 2 + 3.0 * np.array(
            [np.cos(yaw), np.sin(yaw)])
        return DollyRig(start, velocity, float(yaw), float(np.radians(rng.uniform(5, 20))),
                        Shake(rng, 0.003, np.radians(0.15)))

    # ------------------------------------------------------------------ placement checks
    def _inside(self, xy: np.ndarray, margin: float) -> bool:
        return bool(np.all(np.abs(xy[..., 0]) <= self.rx - margin)
                    and np.all(np.abs(xy[..., 1]) <= self.ry - margin))

    def _camera_xy(self) -> np.ndarray:
        return np.stack([self.rig_obj.pose(t)[:2, 3] for t in self.times])

    def _free(self, track: np.ndarray, clearance: float) -> bool:
        """Whether a track (float [T, 2] at :attr:`times`) keeps clear of cameras and movers."""
        if np.min(np.linalg.norm(track - self._camera_xy(), axis=1)) < clearance + 0.6:
            return False
        for other in self.moving:
            theirs = np.stack([other.footprint(t) for t in self.times])
            if np.min(np.linalg.norm(track - theirs, axis=1)) < clearance + 0.5:
                return False
        return True

    def _crossing_path(self, speed: Tuple[float, float], near: Optional[Tuple[float, float]]
                       ) -> Optional[Path2D]:
        """Draw a walk across the camera's view (None when no try fits).

        It passes through the focus region, or with ``near`` (a range of metres) that far
        ahead of the camera horizontally.
        """
        rng = self.rng
        cam = self.rig_obj.pose(self.duration / 2)
        view = cam[:2, 2] / (np.linalg.norm(cam[:2, 2]) + 1e-9)
        for _ in range(60):
            if near:
                through = cam[:2, 3] + view * rng.uniform(*near) + rng.uniform(-0.4, 0.4, 2)
            else:
                through = self.focus + rng.uniform(-1.2, 1.2, 2)
            a = np.arctan2(view[1], view[0]) + np.pi / 2 + np.radians(rng.uniform(-35, 35))
            d = np.array([np.cos(a), np.sin(a)]) * rng.choice([-1, 1])
            v = float(rng.uniform(*speed))
            t_c = float(rng.uniform(0.35, 0.65)) * self.duration
            path = Path2D(through - d * v * t_c, d, v, float(rng.uniform(0.0, 0.25)),
                          float(rng.uniform(0.3, 1.0)), float(rng.uniform(0, 2 * np.pi)))
            track = np.stack([path.at(t)[0] for t in self.times])
            if self._inside(track, 0.6) and self._free(track, 0.4):
                return path
        return None

    # ------------------------------------------------------------------ movers
    def _person_materials(self) -> List[int]:
        shirt = self.material(('knit', 'plaid', 'dots', 'camouflage', 'plain', 'red_car'),
                              ('navy', 'orange', 'hivis', 'denim', 'red', 'green', 'white',
                               'black', 'purple'), (0.25, 0.6))
        trousers = self.material(('knit', 'plain', 'camouflage', 'plaid'),
                                 ('denim', 'black', 'grey', 'navy', 'sand'), (0.3, 0.6))
        skin = len(self.materials)
        self.materials.append(Material(-1, 1.0, np.asarray(_SKIN[int(self.rng.integers(4))])))
        return [shirt, trousers, skin]

    def walker(self, near: bool) -> bool:
        path = self._crossing_path((0.8, 1.4), (1.4, 2.4) if near else None)
        if path is None:
            return False
        w = Walker(f'person{len(self.moving)}', path, float(self.rng.uniform(1.55, 1.9)),
                   self._person_materials(), float(self.rng.uniform(1.1, 1.5)))
        self.moving.append(w)
        return True

    def _cargo_materials(self) -> List[int]:
        return [self.material(('white_car', 'grey_car', 'red_car', 'planks', 'cells', 'tread'),
                              ('wood', 'sand', 'cream', 'teal'), (0.3, 0.9)) for _ in range(3)]

    def cart(self, near: bool) -> bool:
        path = self._crossing_path((0.5, 1.0), (1.8, 2.8) if near else None)
        if path is None:
            return False
        frame = self.material(('tread', 'plain', 'dots'), ('steel', 'orange', 'green', 'navy',
                                                           'red'), (0.3, 0.8))
        wheel = self.material(('plain',), ('black', 'grey'), (1.0, 1.0))
        cart = make_cart(f'cart{len(self.moving)}', path, self.rng,
                         [frame, wheel] + self._cargo_materials())
        self.moving.append(cart)
        # Its pusher walks behind the handle.
        pusher = Walker(f'person{len(self.moving)}', path, float(self.rng.uniform(1.6, 1.9)),
                        self._person_materials(), float(self.rng.uniform(0.9, 1.2)),
                        offset=cart.length / 2 + 0.45, arms_forward=True)
        self.moving.append(pusher)
        return True

    def forklift(self, near: bool) -> bool:
        path = self._crossing_path((0.5, 1.1), (2.4, 3.4) if near else None)
        if path is None:
            return False
        body = self.material(('plain', 'dots', 'camouflage'), ('hivis', 'orange', 'red',
                                                               'green'), (0.4, 1.0))
        wheel = self.material(('plain',), ('black',), (1.0, 1.0))
        guard = self.material(('plain', 'tread'), ('black', 'grey', 'steel'), (0.3, 0.6))
        driver = self._person_materials()[0]
        pallet = self.material(('planks',), ('wood', 'sand'), (0.4, 0.8))
        self.moving.append(make_forklift(f'forklift{len(self.moving)}', path, self.rng,
                                         [body, wheel, guard, driver, pallet]
                                         + self._cargo_materials()))
        return True

    def arm(self) -> bool:
        rng = self.rng
        cam = self.rig_obj.pose(self.duration / 2)
        view = cam[:2, 2] / (np.linalg.norm(cam[:2, 2]) + 1e-9)
        for _ in range(60):
            xy = cam[:2, 3] + view * rng.uniform(2.0, 3.0) + rng.uniform(-0.6, 0.6, 2)
            track = np.repeat(xy[None], len(self.times), 0)
            if self._inside(xy, 1.2) and self._free(track, 1.2):
                break
        else:
            return False
        h = float(rng.uniform(0.3, 0.6))
        pedestal = self.material(('tread', 'plain'), ('steel', 'grey', 'black'), (0.4, 0.8))
        self.actors.append(StaticActor('arm_pedestal', [mesh.frustum(0.38, 0.3, h, 24)],
                                       [pedestal], translate(xy[0], xy[1], 0)[None]))
        links = self.material(('plain', 'camouflage', 'dots', 'tread'),
                              ('orange', 'hivis', 'white', 'teal', 'red'), (0.3, 0.8))
        joint = self.material(('plain',), ('black', 'grey', 'steel'), (1.0, 1.0))
        grip = self.material(('tread', 'plain'), ('steel', 'black'), (0.2, 0.4))
        self.moving.append(RobotArm(f'arm{len(self.moving)}', translate(xy[0], xy[1], h),
                                    float(rng.uniform(1.3, 1.9)), rng, [links, joint, grip]))
        return True

    # ------------------------------------------------------------------ props
    def _prop(self, kind: str) -> Tuple[List[Mesh], List[int], List[np.ndarray], float]:
        """Meshes, materials and local poses of one prop, and its radius (metres)."""
        rng = self.rng
        if kind == 'table':
            sx, sy, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.8)
            top = self.material(('planks', 'marble', 'plain', 'terrazzo'),
                                ('wood', 'cream', 'white', 'grey'), (0.5, 1.5))
            leg = self.material(('plain',), ('steel', 'black', 'wood'), (1.0, 1.0))
            meshes = [mesh.box(sx, sy, 0.04)]
            poses = [translate(z=h - 0.02)]
            for x in (-1, 1):
                for y in (-1, 1):
                    meshes.append(mesh.box(0.05, 0.05, h - 0.04))
                    poses.append(translate(x * (sx / 2 - 0.06), y * (sy / 2 - 0.06),
                                           (h - 0.04) / 2))
            return meshes, [top] + [leg] * 4, poses, float(np.hypot(sx, sy) / 2)
        if kind == 'shelf':
            sx, sy, h = rng.uniform(1.0, 2.0), rng.uniform(0.35, 0.5), rng.uniform(1.4, 2.2)
            frame = self.material(('plain', 'tread'), ('steel', 'orange', 'navy', 'grey'),
                                  (0.4, 1.0))
            goods = self.material(('white_car', 'grey_car', 'planks', 'dots', 'cells'),
                                  ('sand', 'cream', 'wood', 'red', 'teal'), (0.3, 0.8))
            meshes, poses, mats = [], [], []
            for x in (-1, 1):
                for y in (-1, 1):
                    meshes.append(mesh.box(0.05, 0.05, h))
                    poses.append(translate(x * (sx / 2 - 0.025), y * (sy / 2 - 0.025), h / 2))
                    mats.append(frame)
            levels = int(rng.integers(3, 5))
            for k in range(levels):
                z = 0.12 + k * (h - 0.2) / (levels - 1)
                meshes.append(mesh.box(sx, sy, 0.03))
                poses.append(translate(z=z))
                mats.append(frame)
                if k < levels - 1 and rng.random() < 0.7:
                    gx, gz = rng.uniform(0.2, 0.5) * sx, rng.uniform(0.1, 0.25)
                    meshes.append(mesh.box(gx, sy * 0.8, gz, 0.5))
                    poses.append(translate(rng.uniform(-0.25, 0.25) * sx, 0, z + 0.015 + gz / 2))
                    mats.append(goods)
            return meshes, mats, poses, float(np.hypot(sx, sy) / 2)
        if kind == 'boxes':
            mats = [self.material(('planks', 'white_car', 'cells', 'plain', 'grey_car'),
                                  ('wood', 'sand', 'cream'), (0.3, 0.8)) for _ in range(2)]
            meshes, poses, ms = [], [], []
            z, size = 0.0, rng.uniform(0.5, 0.9)
            for k in range(int(rng.integers(2, 5))):
                sx, sy, sz = size * rng.uniform(0.7, 1.0), size * rng.uniform(0.6, 1.0), \
                    rng.uniform(0.2, 0.5)
                meshes.append(mesh.box(sx, sy, sz, 0.5))
                poses.append(translate(*(rng.uniform(-0.08, 0.08, 2)), z + sz / 2)
                             @ rotation(_Z, rng.uniform(-0.4, 0.4)))
                ms.append(mats[k % 2])
                z += sz
                size *= rng.uniform(0.7, 0.95)
            return meshes, ms, poses, 0.6
        if kind == 'cone':
            m = self.material(('plain',), ('orange', 'red', 'hivis'), (1.0, 1.0))
            base = self.material(('plain',), ('black',), (1.0, 1.0))
            h = rng.uniform(0.5, 0.9)
            return ([mesh.box(0.4, 0.4, 0.04), mesh.frustum(0.16, 0.025, h, 20),
                     mesh.torus(0.1, 0.025, 20, 8)], [base, m, base],
                    [translate(z=0.02), translate(z=0.04), translate(z=0.04 + 0.45 * h)], 0.3)
        if kind == 'tyres':
            m = self.material(('plain', 'tread'), ('black', 'grey'), (0.2, 0.5))
            n = int(rng.integers(1, 5))
            R, r = rng.uniform(0.22, 0.35), rng.uniform(0.07, 0.11)
            return ([mesh.torus(R, r, 28, 10) for _ in range(n)], [m] * n,
                    [translate(z=r + 2 * r * k) for k in range(n)], float(R + r))
        if kind == 'bollard':
            m = self.material(('plain', 'dots'), ('hivis', 'orange', 'steel'), (0.2, 0.5))
            return [mesh.capsule(rng.uniform(0.06, 0.12), rng.uniform(0.6, 1.1), 16, 4)], [m], \
                [np.eye(4)], 0.15
        # 'ring': a torus standing on a post.
        m = self.material(('plain', 'camouflage', 'hexagons'), ('teal', 'purple', 'red', 'green'),
                          (0.3, 0.6))
        post = self.material(('plain',), ('steel', 'black'), (1.0, 1.0))
        R = rng.uniform(0.3, 0.5)
        return ([mesh.cylinder(0.04, 0.9, 12), mesh.torus(R, 0.06, 28, 10),
                 mesh.box(0.35, 0.35, 0.05)], [post, m, post],
                [translate(z=0.05), translate(z=0.95 + R) @ rotation(_X, np.pi / 2),
                 translate(z=0.025)], float(R + 0.1))

    def props(self) -> None:
        rng = self.rng
        kinds = ('table', 'shelf', 'boxes', 'cone', 'tyres', 'bollard', 'ring')
        placed: List[Tuple[np.ndarray, float]] = []
        for i in range(int(rng.integers(7, 13))):
            kind = str(rng.choice(kinds))
            meshes, mats, local, radius = self._prop(kind)
            for _ in range(40):
                against_wall = kind == 'shelf' or rng.random() < 0.3
                if against_wall:
                    side = int(rng.integers(4))
                    yaw = [np.pi / 2, -np.pi / 2, 0.0, np.pi][side]
                    xy = [np.array([rng.uniform(-1, 1) * (self.rx - 1), self.ry - radius * 0.6]),
                          np.array([rng.uniform(-1, 1) * (self.rx - 1), -self.ry + radius * 0.6]),
                          np.array([self.rx - radius * 0.6, rng.uniform(-1, 1) * (self.ry - 1)]),
                          np.array([-self.rx + radius * 0.6, rng.uniform(-1, 1) * (self.ry - 1)])
                          ][side]
                    yaw += np.pi / 2
                else:
                    xy = rng.uniform([-self.rx + radius, -self.ry + radius],
                                     [self.rx - radius, self.ry - radius])
                    yaw = rng.uniform(-np.pi, np.pi)
                track = np.repeat(xy[None], len(self.times), 0)
                clear = all(np.linalg.norm(xy - p) > radius + r + 0.3 for p, r in placed)
                if clear and self._free(track, radius + 0.3):
                    break
            else:
                continue
            placed.append((xy, radius))
            T = translate(xy[0], xy[1], 0.0) @ rotation(_Z, yaw)
            self.actors.append(StaticActor(f'{kind}{i}', meshes, mats,
                                           np.stack([T @ L for L in local])))

    def movers(self) -> None:
        plan = {'people': ['walker_near', 'walker_near', 'walker', 'walker', 'walker?'],
                'carts': ['cart_near', 'cart', 'walker?'],
                'arm': ['arm', 'walker_near', 'walker?'],
                'vehicles': ['forklift_near', 'cart', 'walker?'],
                'mixed': ['walker_near', 'forklift', 'cart', 'arm', 'walker?']}[self.actor_set]
        for item in plan:
            if item.endswith('?'):
                if self.rng.random() < 0.5:
                    continue
                item = item[:-1]
            near = item.endswith('_near')
            kind = item.replace('_near', '')
            if kind == 'walker':
                self.walker(near)
            elif kind == 'cart':
                self.cart(near)
            elif kind == 'forklift':
                self.forklift(near)
            else:
                self.arm()

    def lighting(self) -> Lighting:
        rng = self.rng
        az, el = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(40, 75))
        sun_dir = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        warm = np.array([1.0, rng.uniform(0.85, 0.97), rng.uniform(0.7, 0.9)])
        return Lighting(sun_dir, warm * rng.uniform(1.6, 3.0), np.array([0.55, 0.6, 0.7])
                        * rng.uniform(0.5, 0.9), np.array([0.7, 0.72, 0.75]),
                        np.array([0.3, 0.45, 0.8]))

    def build(self) -> IndependentScene:
        self.room()
        self.rig_obj = self.rig()
        self.movers()
        self.props()
        return IndependentScene(self.seed, self.rig_obj, self.actors + self.moving,
                                self.materials, self.textures, self.lighting(),
                                np.array([-self.rx, -self.ry, 0.0]),
                                np.array([self.rx, self.ry, self.wall_h]), 6.0)


def make_scene(seed: int, rig: str, actors: str, duration: float) -> IndependentScene:
    """Build a scene (deterministic in its arguments).

    :param seed: any int >= 0
    :param rig: one of :data:`CAMERA_RIGS`
    :param actors: one of :data:`ACTOR_SETS`
    :param duration: seconds the motions must stay sensible
    """
    return _Builder(seed, rig, actors, duration).build()
