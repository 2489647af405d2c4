"""Motion over time: object motions (rigid or scaling) and camera trajectories.

World frame: z up, metres. Object poses are affine ``T_world_obj`` [4, 4] (rotation, translation
and, for breathing objects, scale). Camera poses are rigid ``T_world_cam`` of the optical frame
(x right, y down, z forward).
"""

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

CAMERA_MOTIONS = ('handheld', 'vehicle', 'orbit', 'pan', 'static')


def rot_z(angle: float) -> np.ndarray:
    """float64 [4, 4] rotation about z by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T


def rot_axis(axis: Sequence[float], angle: float) -> np.ndarray:
    """float64 [4, 4] rotation about a unit ``axis`` by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    return T


def translation(t: Sequence[float]) -> np.ndarray:
    """float64 [4, 4] translation by ``t`` metres."""
    T = np.eye(4)
    T[:3, 3] = t
    return T


def pose_xyz_yaw(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """float64 [4, 4] placement at (x, y, z) turned by ``yaw`` radians about z."""
    T = rot_z(yaw)
    T[:3, 3] = (x, y, z)
    return T


class Motion:
    """Base class: ``pose(t)`` is the object's affine ``T_world_obj`` [4, 4] at ``t`` seconds."""

    dynamic = True

    def pose(self, t: float) -> np.ndarray:
        """Return ``T_world_obj`` float64 [4, 4] at time ``t`` (seconds)."""
        raise NotImplementedError


@dataclass
class Still(Motion):
    """An object that never moves.

    :param T_world_obj: float64 [4, 4]
    """

    T_world_obj: np.ndarray
    dynamic = False

    def pose(self, t: float) -> np.ndarray:
        """Return the fixed pose."""
        return self.T_world_obj


@dataclass
class Spin(Motion):
    """Rotation about the object's own z axis (rotating arms, turntables, fans).

    :param T_world_base: float64 [4, 4] pivot pose
    :param rate: rad/s; with ``sweep`` > 0 the arm swings ``sweep * sin(rate * t)`` instead
    :param phase: radians
    :param sweep: radians; 0 = continuous rotation
    """

    T_world_base: np.ndarray
    rate: float
    phase: float = 0.0
    sweep: float = 0.0

    def pose(self, t: float) -> np.ndarray:
        """Return ``T_world_base @ Rz(angle(t))``."""
        if self.sweep > 0:
            angle = self.sweep * np.sin(self.rate * t + self.phase)
        else:
            angle = self.rate * t + self.phase
        return self.T_world_base @ rot_z(angle)


@dataclass
class Oscillate(Motion):
    """Back-and-forth translation (sliding carriages, pistons).

    :param T_world_base: float64 [4, 4] middle pose
    :param direction: [3] unit vector in the world frame
    :param amplitude: metres
    :param period: seconds
    :param phase: radians
    :param square: 0..1, how much the stroke dwells at its ends (0 = sinusoid)
    """

    T_world_base: np.ndarray
    direction: np.ndarray
    amplitude: float
    period: float
    phase: float = 0.0
    square: float = 0.0

    def pose(self, t: float) -> np.ndarray:
        """Return the base pose translated along the stroke."""
        s = np.sin(2 * np.pi * t / self.period + self.phase)
        if self.square > 0:
            s = np.tanh(s * (1 + 6 * self.square)) / np.tanh(1 + 6 * self.square)
        d = np.asarray(self.direction, np.float64)
        return translation(d / np.linalg.norm(d) * self.amplitude * s) @ self.T_world_base


@dataclass
class Conveyor(Motion):
    """Linear travel from ``start`` to ``end`` at constant speed, wrapping around.

    :param start: [3] metres
    :param end: [3] metres
    :param speed: m/s
    :param offset: metres along the path at t = 0
    :param yaw: heading of the item (radians)
    """

    start: np.ndarray
    end: np.ndarray
    speed: float
    offset: float = 0.0
    yaw: float = 0.0

    def pose(self, t: float) -> np.ndarray:
        """Return the item's pose along the belt."""
        a, b = np.asarray(self.start, np.float64), np.asarray(self.end, np.float64)
        length = np.linalg.norm(b - a)
        s = (self.offset + self.speed * t) % length
        p = a + (b - a) * s / length
        return pose_xyz_yaw(p[0], p[1], p[2], self.yaw)


@dataclass
class Walk(Motion):
    """Travel around a closed polyline at constant speed, facing along it (people, cars).

    :param waypoints: float64 [K, 2] x, y in metres (closed: the last joins the first)
    :param speed: m/s
    :param z: height of the object frame (metres)
    :param offset: metres along the loop at t = 0
    :param bob: vertical bobbing amplitude in metres (walking gait)
    """

    waypoints: np.ndarray
    speed: float
    z: float = 0.0
    offset: float = 0.0
    bob: float = 0.0

    def __post_init__(self) -> None:
        """Precompute the loop's arc length."""
        w = np.asarray(self.waypoints, np.float64).reshape(-1, 2)
        if len(w) < 2:
            raise ValueError('a walk needs at least 2 waypoints')
        self._pts = np.concatenate([w, w[:1]])
        seg = np.linalg.norm(np.diff(self._pts, axis=0), axis=1)
        self._cum = np.concatenate([[0.0], np.cumsum(seg)])

    def pose(self, t: float) -> np.ndarray:
        """Return the walker's pose at ``t``."""
        s = (self.offset + self.speed * t) % self._cum[-1]
        i = int(np.searchsorted(self._cum, s, side='right') - 1)
        i = min(i, len(self._pts) - 2)
        a, b = self._pts[i], self._pts[i + 1]
        f = (s - self._cum[i]) / max(self._cum[i + 1] - self._cum[i], 1e-9)
        p = a + (b - a) * f
        yaw = np.arctan2(b[1] - a[1], b[0] - a[0])
        z = self.z + self.bob * abs(np.sin(np.pi * s / 0.7))
        return pose_xyz_yaw(p[0], p[1], z, yaw)


@dataclass
class Breathe(Motion):
    """Non-rigid "breathing": uniform scaling about the object origin.

    :param T_world_base: float64 [4, 4]
    :param amplitude: relative scale swing (0.2 = +-20 %)
    :param period: seconds
    :param phase: radians
    :param axes: [3] which axes scale (1) and which keep size (0)
    """

    T_world_base: np.ndarray
    amplitude: float
    period: float
    phase: float = 0.0
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))

    def pose(self, t: float) -> np.ndarray:
        """Return ``T_world_base @ diag(scale(t))``."""
        s = 1.0 + self.amplitude * np.sin(2 * np.pi * t / self.period + self.phase)
        S = np.eye(4)
        S[:3, :3] = np.diag(1.0 + (s - 1.0) * np.asarray(self.axes, np.float64))
        return self.T_world_base @ S


# ---------------------------------------------------------------------------------------------
# Camera trajectories


def look_at(eye: Sequence[float], target: Sequence[float], roll: float = 0.0,
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Optical-frame pose looking from ``eye`` at ``target`` (z forward, x right, y down).

    :param eye: [3] camera centre, metres
    :param target: [3] point on the optical axis
    :param roll: radians about the optical axis
    :param up: world up direction
    :return: ``T_world_cam`` float64 [4, 4]
    """
    z = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = eye
    if roll:
        T = T @ rot_axis([0, 0, 1], roll)
    return T


class SmoothNoise:
    """A smooth random signal: a sum of sinusoids with random frequencies and phases.

    :param rng: random generator
    :param dims: output dimension
    :param freq_range: (lo, hi) Hz
    :param amplitude: per-dimension amplitude (std of the sum)
    :param terms: sinusoids per dimension
    """

    def __init__(self, rng: np.random.Generator, dims: int, freq_range: Sequence[float],
                 amplitude: float, terms: int = 4):
        """Draw the sinusoids."""
        self.freq = rng.uniform(freq_range[0], freq_range[1], (terms, dims))
        self.phase = rng.uniform(0, 2 * np.pi, (terms, dims))
        self.amp = amplitude * np.sqrt(2.0 / terms) * rng.uniform(0.5, 1.5, (terms, dims))

    def __call__(self, t: float) -> np.ndarray:
        """float64 [dims] at ``t`` seconds."""
        return np.sum(self.amp * np.sin(2 * np.pi * self.freq * t + self.phase), 0)


class CameraTrajectory:
    """Base class: ``pose(t)`` is ``T_world_cam`` (optical frame) at ``t`` seconds."""

    kind = 'static'

    def pose(self, t: float) -> np.ndarray:
        """Return ``T_world_cam`` float64 [4, 4]."""
        raise NotImplementedError


class StaticCamera(CameraTrajectory):
    """A fixed monitoring camera.

    :param eye: [3] metres
    :param target: [3] metres
    :param roll: radians
    """

    kind = 'static'

    def __init__(self, eye: Sequence[float], target: Sequence[float], roll: float = 0.0):
        """Fix the pose."""
        self._T = look_at(eye, target, roll)

    def pose(self, t: float) -> np.ndarray:
        """Return the fixed pose."""
        return self._T.copy()


class PanCamera(CameraTrajectory):
    """A fixed camera panning slowly left and right (and a little up and down).

    :param eye: [3] metres
    :param target: [3] centre of the sweep
    :param yaw_amplitude: radians
    :param period: seconds of one sweep
    :param phase: radians
    :param tilt_amplitude: radians
    """

    kind = 'pan'

    def __init__(self, eye: Sequence[float], target: Sequence[float], yaw_amplitude: float,
                 period: float, phase: float = 0.0, tilt_amplitude: float = 0.0):
        """Store the sweep."""
        self.eye = np.asarray(eye, np.float64)
        d = np.asarray(target, np.float64) - self.eye
        self.dist = np.linalg.norm(d)
        self.yaw0 = np.arctan2(d[1], d[0])
        self.pitch0 = np.arcsin(d[2] / self.dist)
        self.yaw_amplitude, self.period, self.phase = yaw_amplitude, period, phase
        self.tilt_amplitude = tilt_amplitude

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        w = 2 * np.pi * t / self.period + self.phase
        yaw = self.yaw0 + self.yaw_amplitude * np.sin(w)
        pitch = self.pitch0 + self.tilt_amplitude * np.sin(0.5 * w)
        d = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
        return look_at(self.eye, self.eye + d)


class OrbitCamera(CameraTrajectory):
    """A camera circling a point while looking at it.

    :param centre: [3] the looked-at point, metres
    :param radius: metres (horizontal)
    :param height: camera z, metres
    :param rate: rad/s (sign = direction)
    :param phase: start angle, radians
    :param target_height: z of the looked-at point
    """

    kind = 'orbit'

    def __init__(self, centre: Sequence[float], radius: float, height: float, rate: float,
                 phase: float, target_height: float):
        """Store the circle."""
        self.centre = np.asarray(centre, np.float64)
        self.radius, self.height, self.rate, self.phase = radius, height, rate, phase
        self.target_height = target_height

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        a = self.phase + self.rate * t
        eye = [self.centre[0] + self.radius * np.cos(a),
               self.centre[1] + self.radius * np.sin(a), self.height]
        return look_at(eye, [self.centre[0], self.centre[1], self.target_height])


class HandheldCamera(CameraTrajectory):
    """Someone walking slowly on an arc around a point of interest, filming it by hand.

    Smooth path (arc + slow sway) plus jitter: small fast translations and rotations.

    :param rng: random generator
    :param centre: [3] point of interest
    :param radius: metres
    :param height: eye height, metres
    :param phase: start angle, radians
    :param speed: walking speed along the arc (m/s, signed)
    :param jitter: scale of the hand shake (1 = typical)
    """

    kind = 'handheld'

    def __init__(self, rng: np.random.Generator, centre: Sequence[float], radius: float,
                 height: float, phase: float, speed: float, jitter: float = 1.0):
        """Draw the sway and shake signals."""
        self.centre = np.asarray(centre, np.float64)
        self.radius, self.height, self.phase, self.speed = radius, height, phase, speed
        self.sway = SmoothNoise(rng, 3, (0.05, 0.3), 0.12)
        self.look = SmoothNoise(rng, 3, (0.05, 0.25), 0.25)
        self.shake = SmoothNoise(rng, 3, (2.0, 7.0), 0.004 * jitter, terms=6)
        self.twist = SmoothNoise(rng, 3, (1.5, 6.0), np.radians(0.35) * jitter, terms=6)

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        a = self.phase + self.speed * t / self.radius
        eye = np.array([self.centre[0] + self.radius * np.cos(a),
                        self.centre[1] + self.radius * np.sin(a), self.height])
        eye = eye + self.sway(t) * [1.0, 1.0, 0.4] + self.shake(t)
        target = self.centre + self.look(t)
        T = look_at(eye, target)
        r = self.twist(t)
        return T @ rot_axis([1, 0, 0], r[0]) @ rot_axis([0, 1, 0], r[1]) @ rot_axis(
            [0, 0, 1], r[2])


class VehicleCamera(CameraTrajectory):
    """A camera on a vehicle driving forward and turning (bicycle-free planar kinematics).

    The vehicle starts at (x0, y0) heading ``yaw0``; its yaw rate is 0 until ``turn_start``,
    ``yaw_rate`` until ``turn_start + turn_duration``, then 0 again (smoothly blended). The
    camera sits at ``height`` looking forward (turned by ``mount_yaw``), pitched down by
    ``pitch``, with a little suspension vibration.

    :param rng: random generator (vibration)
    :param start: (x0, y0, yaw0) metres and radians
    :param speed: m/s
    :param yaw_rate: rad/s during the turn
    :param turn_start: seconds
    :param turn_duration: seconds
    :param height: camera height, metres
    :param pitch: downward tilt, radians
    :param mount_yaw: camera yaw relative to the vehicle heading (radians, left positive)
    :param duration: seconds of trajectory to precompute (longer times extrapolate straight)
    """

    kind = 'vehicle'

    def __init__(self, rng: np.random.Generator, start: Sequence[float], speed: float,
                 yaw_rate: float, turn_start: float, turn_duration: float, height: float,
                 pitch: float, mount_yaw: float = 0.0, duration: float = 60.0):
        """Integrate the path on a fine time grid."""
        self.dt = 0.005
        ts = np.arange(0.0, duration + self.dt, self.dt)
        ramp = 0.5
        rate = yaw_rate * (_smoothstep((ts - turn_start) / ramp)
                           - _smoothstep((ts - turn_start - turn_duration) / ramp))
        yaw = start[2] + np.concatenate([[0.0], np.cumsum(rate[:-1]) * self.dt])
        x = start[0] + np.concatenate([[0.0], np.cumsum(np.cos(yaw[:-1])) * speed * self.dt])
        y = start[1] + np.concatenate([[0.0], np.cumsum(np.sin(yaw[:-1])) * speed * self.dt])
        self._ts, self._x, self._y, self._yaw = ts, x, y, yaw
        self.speed, self.height, self.pitch, self.mount_yaw = speed, height, pitch, mount_yaw
        self.vibration = SmoothNoise(rng, 3, (3.0, 12.0), 0.003, terms=5)
        self.sway = SmoothNoise(rng, 2, (0.3, 1.5), np.radians(0.4), terms=3)

    def pose(self, t: float) -> np.ndarray:
        """Return the pose at ``t``."""
        ts = self._ts
        if t <= ts[-1]:
            x = np.interp(t, ts, self._x)
            y = np.interp(t, ts, self._y)
            yaw = np.interp(t, ts, self._yaw)
        else:
            yaw = self._yaw[-1]
            x = self._x[-1] + np.cos(yaw) * self.speed * (t - ts[-1])
            y = self._y[-1] + np.sin(yaw) * self.speed * (t - ts[-1])
        vib = self.vibration(t)
        sway = self.sway(t)
        h = yaw + self.mount_yaw
        pitch = self.pitch + sway[0]
        eye = np.array([x, y, self.height]) + vib
        d = np.array([np.cos(pitch) * np.cos(h), np.cos(pitch) * np.sin(h), -np.sin(pitch)])
        return look_at(eye, eye + d, roll=sway[1])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
