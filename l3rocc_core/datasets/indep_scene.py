"""What the independent scenes are made of: actors, camera rigs, materials, light.

World frame: ``odom``, z up, the floor's top at z = 0, metres. Every actor is a list of closed
part meshes (:mod:`l3rocc_core.datasets.indep_mesh`) with a pose per part at any time, so
articulated actors (walking people whose limbs swing, carts and forklifts whose wheels turn and
forks lift, a robot arm) are rigid per part. :mod:`l3rocc_core.datasets.indep_layout` places
them in a room. Camera rigs give the pose of the optical frame (x right, y down, z forward):
a fixed camera on a pole looking down, a handheld orbit, a slow dolly.

Nothing here comes from ``l3rocc synth``: other shapes, other motions, other cameras, other
texture sources (:mod:`l3rocc_core.datasets.indep_texture`).
"""

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from l3rocc_core.datasets import indep_mesh as mesh
from l3rocc_core.datasets.indep_mesh import Mesh, rotation, translate
from l3rocc_core.datasets.indep_texture import Texture

_X, _Y, _Z = np.eye(3)


@dataclass
class Material:
    """Surface look.

    :param texture: index into the scene's textures, -1 = plain colour
    :param scale_m: metres per texture width
    :param tint: float [3] multiplies the texture (or is the colour)
    :param offset: float [2] texture-coordinate offset
    """

    texture: int
    scale_m: float
    tint: np.ndarray
    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))


class Actor:
    """A set of rigid closed parts with a pose per part at any time.

    :param name: label (meta.json)
    :param meshes: part meshes in their own frames
    :param materials: material index per part
    :param dynamic: whether it moves (its voxels are dynamic ground truth)
    """

    def __init__(self, name: str, meshes: List[Mesh], materials: List[int], dynamic: bool):
        """Keep the parts."""
        if len(meshes) != len(materials):
            raise ValueError(f'{name}: {len(meshes)} meshes but {len(materials)} materials')
        self.name = name
        self.meshes = meshes
        self.materials = materials
        self.dynamic = dynamic

    def part_poses(self, t: float) -> np.ndarray:
        """Return float64 [P, 4, 4] ``T_world_part`` at ``t`` seconds."""
        raise NotImplementedError

    def footprint(self, t: float) -> np.ndarray:
        """Return the xy position (float [2]) used to keep actors apart."""
        return self.part_poses(t)[0, :2, 3]


class PathActor(Actor):
    """An actor that follows a :class:`Path2D` (``path`` set by the subclass)."""

    path: 'Path2D'

    def footprint(self, t: float) -> np.ndarray:
        """Return the path's xy at ``t``."""
        return self.path.at(t)[0]


class StaticActor(Actor):
    """Parts that never move.

    :param poses: float [P, 4, 4] ``T_world_part``
    """

    def __init__(self, name: str, meshes: List[Mesh], materials: List[int], poses: np.ndarray):
        """Keep the parts and their poses."""
        super().__init__(name, meshes, materials, False)
        self.poses = np.asarray(poses, np.float64)

    def part_poses(self, t: float) -> np.ndarray:
        """Return the fixed poses."""
        return self.poses


@dataclass
class Path2D:
    """A gently weaving straight walk on the floor.

    ``p(t) = start + direction * speed * t + normal * amplitude * sin(omega * t + phase)``.

    :param start: float [2] metres at t = 0
    :param direction: float [2] unit
    :param speed: metres per second along ``direction``
    :param amplitude: sideways weave (metres)
    :param omega: weave rate (radians per second)
    :param phase: weave phase (radians)
    """

    start: np.ndarray
    direction: np.ndarray
    speed: float
    amplitude: float = 0.0
    omega: float = 0.0
    phase: float = 0.0

    def at(self, t: float) -> Tuple[np.ndarray, float]:
        """Return (xy float [2], heading radians) at ``t``."""
        n = np.array([-self.direction[1], self.direction[0]])
        s = np.sin(self.omega * t + self.phase) * self.amplitude
        v = self.direction * self.speed + n * self.amplitude * self.omega * np.cos(
            self.omega * t + self.phase)
        return self.start + self.direction * self.speed * t + n * s, float(np.arctan2(v[1], v[0]))

    def distance(self, t: float) -> float:
        """Return the distance walked along ``direction`` by ``t`` (metres)."""
        return self.speed * t


def _placement(xy: np.ndarray, heading: float, z: float = 0.0) -> np.ndarray:
    T = rotation(_Z, heading)
    T[:3, 3] = (xy[0], xy[1], z)
    return T


def _hanging(radius: float, length: float) -> Mesh:
    """Capsule from z = -length to 0 (a limb hanging from its joint)."""
    return mesh.capsule(radius, length, segments=12, rings=3).transformed(translate(z=-length))


class Walker(PathActor):
    """A person of capsules walking along a path, legs and arms swinging with the gait.

    Body frame: x forward, y left, z up, on the floor under the pelvis.

    :param path: where it walks
    :param height: metres
    :param materials: (shirt, trousers, skin) material indices
    :param stride: metres per gait cycle
    :param offset: body offset behind the path point (metres; a cart's pusher)
    """

    def __init__(self, name: str, path: Path2D, height: float, materials: Sequence[int],
                 stride: float = 1.3, offset: float = 0.0, arms_forward: bool = False):
        """Build the parts."""
        shirt, trousers, skin = materials
        h = height
        self.path, self.stride, self.offset = path, stride, offset
        self.arms_forward = arms_forward
        self.leg = 0.245 * h
        self.hip_h = 2 * self.leg
        self.shoulder_h = 0.81 * h
        self.hip_w, self.shoulder_w = 0.09 * h / 1.75, 0.2 * h / 1.75
        r_torso = 0.15 * h / 1.75
        self.torso_z = self.hip_h - 0.06
        self.head_z = 0.92 * h
        parts = [mesh.capsule(r_torso, self.shoulder_h + 0.07 - self.torso_z, 16, 4),
                 mesh.sphere(0.105 * h / 1.75, 16, 8),
                 _hanging(0.045, 0.34 * h), _hanging(0.045, 0.34 * h),
                 _hanging(0.065, self.leg + 0.03), _hanging(0.065, self.leg + 0.03),
                 _hanging(0.055, self.leg), _hanging(0.055, self.leg)]
        super().__init__(name, parts, [shirt, skin, shirt, shirt, trousers, trousers,
                                       trousers, trousers], True)

    def part_poses(self, t: float) -> np.ndarray:
        """Pose every part at ``t``."""
        xy, heading = self.path.at(t)
        xy = xy - self.offset * np.array([np.cos(heading), np.sin(heading)])
        phase = 2 * np.pi * self.path.distance(t) / self.stride
        # Forward swing angles: each arm swings against the leg of its side.
        leg_fwd = np.radians(24) * np.sin(phase)
        # The body sinks while the legs are spread, so the standing foot stays on the floor.
        body = _placement(xy, heading, -2 * self.leg * (1 - np.cos(leg_fwd)))
        out = [body @ translate(z=self.torso_z), body @ translate(z=self.head_z)]
        arm_fwd = np.radians(20) * np.sin(phase)
        for side in (1.0, -1.0):
            if self.arms_forward:
                arm = rotation(_Y, np.radians(-70) - 0.1 * side * arm_fwd)
            else:
                arm = rotation(_Y, side * arm_fwd)
            out.append(body @ translate(0, side * self.shoulder_w, self.shoulder_h) @ arm)
        thighs, shins = [], []
        for side in (1.0, -1.0):
            hip = body @ translate(0, side * self.hip_w, self.hip_h) @ rotation(
                _Y, -side * leg_fwd)
            # The knee bends backwards while its leg swings forward.
            knee = np.radians(45) * max(0.0, side * np.cos(phase)) ** 2
            thighs.append(hip)
            shins.append(hip @ translate(z=-self.leg) @ rotation(_Y, knee))
        return np.stack(out + thighs + shins)


class Vehicle(PathActor):
    """A wheeled actor following a path: rigid parts, turning wheels, an optional lift.

    Vehicle frame: x forward, y left, z up, on the floor.

    :param path: where it rolls
    :param meshes: part meshes (wheels built with their axle along y, centred)
    :param materials: material index per part
    :param local: float [P, 4, 4] part poses in the vehicle frame
    :param wheels: indices of the parts that turn with the distance rolled
    :param wheel_r: wheel radius (metres)
    :param lifted: indices of the parts that ride the lift
    :param lift: (lowest, travel metres, rate radians per second, phase) of the lift
    :param length: body length (metres; a pusher walks behind it)
    """

    def __init__(self, name: str, path: Path2D, meshes: List[Mesh], materials: List[int],
                 local: List[np.ndarray], wheels: Sequence[int], wheel_r: float,
                 lifted: Sequence[int] = (), lift: Tuple[float, float, float, float] = (
                     0.0, 0.0, 0.0, 0.0), length: float = 1.0):
        """Keep the parts."""
        super().__init__(name, meshes, materials, True)
        self.path, self.local = path, np.stack(local)
        self.wheels, self.wheel_r = list(wheels), wheel_r
        self.lifted, self.lift = list(lifted), lift
        self.length = length

    def part_poses(self, t: float) -> np.ndarray:
        """Pose every part at ``t``."""
        xy, heading = self.path.at(t)
        base = _placement(xy, heading)
        out = base @ self.local
        out[self.wheels] = out[self.wheels] @ rotation(_Y, self.path.distance(t) / self.wheel_r)
        lo, travel, rate, phase = self.lift
        height = lo + travel * (1 - np.cos(rate * t + phase)) / 2
        out[self.lifted] = base @ translate(z=height) @ self.local[self.lifted]
        return out


def _wheel(radius: float, width: float) -> Mesh:
    """Make a wheel with its axle along y, centred on the origin."""
    return mesh.cylinder(radius, width, 16).transformed(rotation(_X, np.pi / 2)
                                                        @ translate(z=-width / 2))


def _add_wheels(parts: List[Mesh], local: List[np.ndarray], mats: List[int], mat: int,
                radius: float, width: float, x: float, y: float) -> List[int]:
    """Append four wheels at (+-x, +-y, radius); return their part indices."""
    idx = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            idx.append(len(parts))
            parts.append(_wheel(radius, width))
            local.append(translate(sx * x, sy * y, radius))
            mats.append(mat)
    return idx


def _cargo(rng: np.random.Generator, parts: List[Mesh], local: List[np.ndarray],
           mats: List[int], cargo_mats: Sequence[int], sx: float, sy: float, z: float,
           n: int) -> List[int]:
    """Stack ``n`` boxes (or a tyre) from height z on an sx x sy deck; return their indices."""
    idx = []
    for k in range(n):
        idx.append(len(parts))
        if k == 2 and rng.random() < 0.5:
            parts.append(mesh.torus(0.18, 0.07, 20, 10))
            local.append(translate(rng.uniform(-0.1, 0.1), 0, z + 0.07))
            z += 0.14
        else:
            bx, by = float(rng.uniform(0.3, 0.9)) * sx, float(rng.uniform(0.4, 0.95)) * sy
            bz = float(rng.uniform(0.15, 0.45))
            parts.append(mesh.box(bx, by, bz, 0.5))
            local.append(translate(rng.uniform(-0.05, 0.05) * sx, 0, z + bz / 2)
                         @ rotation(_Z, rng.uniform(-0.2, 0.2)))
            z += bz
        mats.append(cargo_mats[k % len(cargo_mats)])
    return idx


def make_cart(name: str, path: Path2D, rng: np.random.Generator,
              materials: Sequence[int]) -> Vehicle:
    """Make a hand cart: deck on four wheels, a push handle at the back, cargo.

    :param materials: (frame, wheels, cargo...) material indices
    """
    length, width = float(rng.uniform(0.9, 1.4)), float(rng.uniform(0.55, 0.8))
    wheel_r = float(rng.uniform(0.08, 0.14))
    deck = 2 * wheel_r + 0.04
    frame = materials[0]
    parts: List[Mesh] = [mesh.box(length, width, 0.05)]
    local, mats = [translate(z=deck + 0.025)], [frame]
    wheels = _add_wheels(parts, local, mats, materials[1], wheel_r, 0.05,
                         length / 2 - wheel_r, width / 2 - 0.04)
    grip_h = float(rng.uniform(0.85, 1.05))
    for y in (-1, 1):
        parts.append(mesh.capsule(0.02, grip_h - deck, 8, 2))
        local.append(translate(-length / 2 + 0.03, y * (width / 2 - 0.03), deck))
        mats.append(frame)
    parts.append(mesh.capsule(0.022, width, 8, 2))
    local.append(translate(-length / 2 + 0.03, -width / 2, grip_h) @ rotation(_X, -np.pi / 2))
    mats.append(frame)
    _cargo(rng, parts, local, mats, list(materials[2:]) or [frame], length, width,
           deck + 0.05, int(rng.integers(1, 4)))
    return Vehicle(name, path, parts, mats, local, wheels, wheel_r, length=length)


def make_forklift(name: str, path: Path2D, rng: np.random.Generator,
                  materials: Sequence[int]) -> Vehicle:
    """Make a forklift whose forks lift a loaded pallet up and down.

    Chassis, counterweight, overhead guard on four posts, a seated driver, a mast, the fork
    carriage, a pallet and its cargo.

    :param materials: (body, wheels, guard, driver, pallet, cargo...) material indices
    """
    body, wheel_mat, guard, driver, pallet = materials[:5]
    length, width = float(rng.uniform(1.4, 1.9)), float(rng.uniform(0.9, 1.15))
    wheel_r = float(rng.uniform(0.2, 0.26))
    top = wheel_r + 0.5
    parts: List[Mesh] = [mesh.box(length, width, 0.5), mesh.box(0.4, width, 0.55)]
    local = [translate(z=wheel_r + 0.25), translate(-length / 2 + 0.2, 0, top + 0.275)]
    mats = [body, body]
    wheels = _add_wheels(parts, local, mats, wheel_mat, wheel_r, 0.18, length / 2 - wheel_r - 0.05,
                         width / 2 + 0.05)
    roof = float(rng.uniform(2.0, 2.2))
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(mesh.box(0.06, 0.06, roof - top))
            local.append(translate(sx * (length / 2 - 0.35), sy * (width / 2 - 0.05),
                                   (roof + top) / 2))
            mats.append(guard)
    parts.append(mesh.box(length - 0.6, width, 0.05))
    local.append(translate(z=roof))
    mats.append(guard)
    parts += [mesh.capsule(0.17, 0.75, 12, 3), mesh.sphere(0.11, 12, 6)]
    local += [translate(-0.1, 0, top), translate(-0.1, 0, top + 0.85)]
    mats += [driver, driver]
    front = length / 2 + 0.05
    for sy in (-1, 1):
        parts.append(mesh.box(0.1, 0.08, roof + 0.1))
        local.append(translate(front, sy * (width / 2 - 0.2), (roof + 0.1) / 2))
        mats.append(guard)
    lifted = list(range(len(parts), len(parts) + 4))
    parts += [mesh.box(0.05, width - 0.2, 0.5), mesh.box(1.0, 0.1, 0.04),
              mesh.box(1.0, 0.1, 0.04), mesh.box(1.0, 0.9, 0.14, 0.5)]
    local += [translate(front + 0.08, 0, 0.3), translate(front + 0.6, 0.25, 0.07),
              translate(front + 0.6, -0.25, 0.07), translate(front + 0.6, 0, 0.16)]
    mats += [guard, guard, guard, pallet]
    cargo = _cargo(rng, parts, local, mats, list(materials[5:]) or [pallet], 1.0, 0.9, 0.23,
                   int(rng.integers(1, 3)))
    # The cargo sits on the pallet, in front of the mast.
    for i in cargo:
        local[i] = translate(front + 0.6, 0, 0) @ local[i]
    lifted += cargo
    return Vehicle(name, path, parts, mats, local, wheels, wheel_r, lifted,
                   (0.0, float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.8, 1.6)),
                    float(rng.uniform(0, 2 * np.pi))), length)


class RobotArm(Actor):
    """The moving links of a pedestal robot arm (the pedestal is a static prop).

    Joints: turret yaw, shoulder pitch, elbow pitch, a gripper opening and closing; each joint
    angle a sum of two sines.

    :param base: float [4, 4] pose of the pedestal top (z up)
    :param reach: upper arm + forearm length (metres)
    """

    def __init__(self, name: str, base: np.ndarray, reach: float, rng: np.random.Generator,
                 materials: Sequence[int]):
        """Build the links and draw the joint motions."""
        link, joint, gripper = materials
        self.base = np.asarray(base, np.float64)
        self.l1 = reach * float(rng.uniform(0.5, 0.6))
        self.l2 = reach - self.l1
        parts = [mesh.cylinder(0.26, 0.28, 24), mesh.sphere(0.16, 16, 8),
                 mesh.capsule(0.13, self.l1 + 0.26, 16, 4), mesh.sphere(0.13, 16, 8),
                 mesh.capsule(0.1, self.l2 + 0.2, 16, 4), mesh.box(0.2, 0.26, 0.08),
                 mesh.box(0.05, 0.04, 0.18), mesh.box(0.05, 0.04, 0.18)]
        super().__init__(name, parts, [link, joint, link, joint, link, gripper, gripper,
                                       gripper], True)
        # Per joint: (centre, (amplitude, rate, phase) x 2), radians and radians per second.
        self.joints = []
        for centre, amp, rate in ((rng.uniform(-np.pi, np.pi), 1.2, (0.6, 1.4)),
                                  (np.radians(rng.uniform(25, 45)), 0.5, (0.8, 1.8)),
                                  (np.radians(rng.uniform(40, 80)), 0.6, (0.9, 2.0)),
                                  (0.04, 0.035, (2.0, 4.0))):
            waves = [(amp * float(rng.uniform(0.5, 1.0)), float(rng.uniform(*rate)),
                      float(rng.uniform(0, 2 * np.pi))) for _ in range(2)]
            self.joints.append((float(centre), waves))

    def angle(self, j: int, t: float) -> float:
        """Return joint ``j``'s value at ``t`` (radians; the gripper's in metres)."""
        centre, waves = self.joints[j]
        return centre + sum(a * np.sin(w * t + p) for a, w, p in waves) / 2

    def part_poses(self, t: float) -> np.ndarray:
        """Pose every link at ``t``."""
        turret = self.base @ rotation(_Z, self.angle(0, t))
        shoulder = turret @ translate(z=0.4)
        upper = shoulder @ rotation(_Y, self.angle(1, t))
        elbow = upper @ translate(z=self.l1)
        fore = elbow @ rotation(_Y, self.angle(2, t))
        wrist = fore @ translate(z=self.l2 + 0.1)
        gap = max(0.01, self.angle(3, t))
        return np.stack([turret, shoulder, upper @ translate(z=-0.13), elbow,
                         fore @ translate(z=-0.1), wrist,
                         wrist @ translate(0, gap + 0.02, 0.13),
                         wrist @ translate(0, -gap - 0.02, 0.13)])

    def footprint(self, t: float) -> np.ndarray:
        """Return the pedestal's xy."""
        return self.base[:2, 3]


# --------------------------------------------------------------------------------------------
# Camera rigs
# --------------------------------------------------------------------------------------------

#: Optical axes in the body frame (x forward, y left, z up): x right, y down, z forward.
_BODY_TO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def optical_pose(eye: Sequence[float], yaw: float, pitch: float, roll: float = 0.0
                 ) -> np.ndarray:
    """Return ``T_world_cam`` of the optical frame from a position and yaw/pitch/roll.

    :param eye: [3] metres
    :param yaw: heading of the optical axis about +z (radians, 0 = +x)
    :param pitch: downward tilt (radians, positive looks down)
    :param roll: about the optical axis (radians)
    """
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler('ZYX', [yaw, pitch, roll]).as_matrix() @ _BODY_TO_OPTICAL
    T[:3, 3] = eye
    return T


def yaw_pitch_towards(eye: Sequence[float], target: Sequence[float]) -> Tuple[float, float]:
    """Return (yaw, pitch) of the direction from ``eye`` to ``target``."""
    d = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    return float(np.arctan2(d[1], d[0])), float(np.arctan2(-d[2], np.hypot(d[0], d[1])))


class Rig:
    """A camera motion: ``pose(t)`` is ``T_world_cam`` of the optical frame."""

    fixed = False

    def pose(self, t: float) -> np.ndarray:
        """Return float64 [4, 4] at ``t`` seconds."""
        raise NotImplementedError


class PoleRig(Rig):
    """A camera on a pole: one pose for ever."""

    fixed = True

    def __init__(self, T_world_cam: np.ndarray):
        """Keep the pose."""
        self.T = np.asarray(T_world_cam, np.float64)

    def pose(self, t: float) -> np.ndarray:
        """Return a copy of the fixed camera matrix."""
        return self.T.copy()


class Shake:
    """Hand shake: sums of three sines per axis of position (metres) and yaw/pitch/roll.

    :param rng: draws frequencies 0.4-3 Hz and phases
    :param metres: position amplitude
    :param radians: angle amplitude
    """

    def __init__(self, rng: np.random.Generator, metres: float, radians: float):
        """Draw the sines."""
        self.freq = rng.uniform(0.4, 3.0, (6, 3)) * 2 * np.pi
        self.phase = rng.uniform(0, 2 * np.pi, (6, 3))
        self.amp = np.r_[[metres] * 3, [radians] * 3][:, None] / np.sqrt(3) * rng.uniform(
            0.5, 1.0, (6, 3))

    def __call__(self, t: float) -> np.ndarray:
        """Return float [6]: dx, dy, dz, dyaw, dpitch, droll."""
        return (self.amp * np.sin(self.freq * t + self.phase)).sum(1)


class OrbitRig(Rig):
    """Handheld orbit around a point, looking at it, with hand shake.

    :param centre: float [3] the point looked at
    :param radius: horizontal distance (metres)
    :param height: camera height (metres)
    :param angle0: start angle about the centre (radians)
    :param rate: radians per second (signed)
    """

    def __init__(self, centre: Sequence[float], radius: float, height: float, angle0: float,
                 rate: float, shake: Shake):
        """Keep the parameters."""
        self.centre = np.asarray(centre, np.float64)
        self.radius, self.height, self.angle0, self.rate = radius, height, angle0, rate
        self.shake = shake

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        a = self.angle0 + self.rate * t
        s = self.shake(t)
        eye = self.centre[:2] + self.radius * np.array([np.cos(a), np.sin(a)])
        eye = np.r_[eye, self.height] + s[:3]
        yaw, pitch = yaw_pitch_towards(eye, self.centre)
        return optical_pose(eye, yaw + s[3], pitch + s[4], s[5])


class DollyRig(Rig):
    """A camera sliding slowly along a straight rail at a fixed orientation.

    :param start: float [3] position at t = 0
    :param velocity: float [3] metres per second
    :param yaw: radians; ``pitch`` downward tilt
    """

    def __init__(self, start: Sequence[float], velocity: Sequence[float], yaw: float,
                 pitch: float, shake: Shake):
        """Keep the parameters."""
        self.start = np.asarray(start, np.float64)
        self.velocity = np.asarray(velocity, np.float64)
        self.yaw, self.pitch, self.shake = yaw, pitch, shake

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        s = self.shake(t)
        return optical_pose(self.start + self.velocity * t + s[:3], self.yaw + s[3],
                            self.pitch + s[4], s[5])


# --------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------

@dataclass
class Lighting:
    """Light of a scene (linear RGB).

    :param sun_dir: float [3] unit vector towards the sun
    :param sun: float [3] sun irradiance
    :param ambient: float [3] sky light from above (a hemisphere)
    :param sky_low: float [3] sky radiance at the horizon; ``sky_high`` at the zenith
    """

    sun_dir: np.ndarray
    sun: np.ndarray
    ambient: np.ndarray
    sky_low: np.ndarray
    sky_high: np.ndarray


@dataclass
class IndependentScene:
    """Everything that is rendered.

    :param seed: the seed it was made from
    :param rig: the camera motion
    :param actors: static props first, then moving actors
    :param materials: surface looks
    :param textures: texture pyramids (indices of :attr:`Material.texture`)
    :param light: lighting
    :param room_min: float [3] inner corner of the room (metres); ``room_max`` the other
    :param max_depth: depth range for ground truth and the pipeline (metres)
    """

    seed: int
    rig: Rig
    actors: List[Actor]
    materials: List[Material]
    textures: List[Texture]
    light: Lighting
    room_min: np.ndarray
    room_max: np.ndarray
    max_depth: float
