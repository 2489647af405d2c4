"""Rigid transforms: quaternions and 4x4 matrices (``T_a_b`` maps points from b to a)."""

from typing import Sequence

import numpy as np


class PoseError(ValueError):
    """A pose that cannot be used (NaN, zero or non-normalisable quaternion)."""

    kind = 'bad_pose'


def quat_to_matrix(q_xyzw: Sequence[float]) -> np.ndarray:
    """Rotation matrix of a quaternion (x, y, z, w), normalised first.

    :raises PoseError: NaN/Inf or a norm far from 1 (< 0.5 or > 2): such a message is broken
    """
    q = np.asarray(q_xyzw, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.all(np.isfinite(q)) or not 0.5 < n < 2.0:
        raise PoseError(f'quaternion {list(q)} is not a rotation (norm {n:.3g})')
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), w >= 0, of a rotation matrix [3, 3]."""
    m = np.asarray(R, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def make_transform(t_xyz: Sequence[float], q_xyzw: Sequence[float]) -> np.ndarray:
    """float64 [4, 4] from a translation (metres) and a quaternion (x, y, z, w).

    :raises PoseError: on NaN/Inf translation or a broken quaternion
    """
    t = np.asarray(t_xyz, dtype=np.float64)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise PoseError(f'translation {list(t)} is not finite')
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q_xyzw)
    T[:3, 3] = t
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform [4, 4]."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix [3, 3] in degrees."""
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
