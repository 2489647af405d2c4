"""Pinhole projection, triangulation and rotations for visual odometry (numpy, batched).

Poses here are ``T_cam_world`` (world points to camera coordinates: ``p_cam = R p_world + t``),
the form projection needs; :func:`l3rocc_core.transforms.invert` turns them into the
``T_world_cam`` every other stage uses. Pixels follow OpenCV (x right, y down, origin at the
centre of the top-left pixel).
"""

from typing import Callable, Tuple

import numpy as np


def skew(v: np.ndarray) -> np.ndarray:
    """Return the cross-product matrices of vectors.

    :param v: [..., 3]
    :return: [..., 3, 3] with ``skew(v) @ w == cross(v, w)``
    """
    v = np.asarray(v, np.float64)
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _skew_series(omega: np.ndarray, a: Callable[[np.ndarray], np.ndarray],
                 b: Callable[[np.ndarray], np.ndarray], small_a: float, small_b: float,
                 small: float) -> np.ndarray:
    """Return ``I + a(theta) [w]x + b(theta) [w]x^2`` for rotation vectors ``omega`` [..., 3].

    Below ``small`` radians the limits ``small_a``, ``small_b`` replace the coefficients.
    """
    omega = np.asarray(omega, np.float64)
    theta = np.linalg.norm(omega, axis=-1)[..., None, None]
    K = skew(omega)
    tiny = theta < small
    t = np.where(tiny, 1.0, theta)
    return (np.eye(3) + np.where(tiny, small_a, a(t)) * K
            + np.where(tiny, small_b, b(t)) * (K @ K))


def so3_exp(omega: np.ndarray) -> np.ndarray:
    """Return rotation matrices of rotation vectors (Rodrigues).

    :param omega: [..., 3] axis times angle (radians)
    :return: [..., 3, 3]
    """
    return _skew_series(omega, lambda t: np.sin(t) / t, lambda t: (1.0 - np.cos(t)) / t ** 2,
                        1.0, 0.5, 1e-8)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Return the rotation vector of one rotation matrix (inverse of :func:`so3_exp`)."""
    R = np.asarray(R, np.float64)
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos))
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if theta < 1e-8:
        return w / 2.0
    if np.pi - theta < 1e-6:   # 180 degrees: the axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(R) + 1.0) / 2.0, 0.0, None))
        axis *= np.where(w >= 0, 1.0, -1.0)
        return axis / max(np.linalg.norm(axis), 1e-12) * theta
    return w * theta / (2.0 * np.sin(theta))


def so3_left_jacobian(omega: np.ndarray) -> np.ndarray:
    """Return the left Jacobians of SO(3): ``exp(w + d) ~ exp(J(w) d) exp(w)``.

    :param omega: [..., 3]
    :return: [..., 3, 3]
    """
    return _skew_series(omega, lambda t: (1.0 - np.cos(t)) / t ** 2,
                        lambda t: (t - np.sin(t)) / t ** 3, 0.5, 1.0 / 6.0, 1e-6)


def transform_points(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply one [4, 4] transform (or one per point, [N, 4, 4]) to points [N, 3]."""
    T = np.asarray(T, np.float64)
    if T.ndim == 2:
        return p @ T[:3, :3].T + T[:3, 3]
    return np.einsum('nij,nj->ni', T[:, :3, :3], p) + T[:, :3, 3]


def project(K: np.ndarray, T_cam_world: np.ndarray, p_world: np.ndarray
            ) -> Tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    :param K: [3, 3] intrinsics
    :param T_cam_world: [4, 4], or [N, 4, 4] one pose per point
    :param p_world: [N, 3] metres
    :return: (uv [N, 2] pixels, z [N] depth along the optical axis; <= 0 behind the camera)
    """
    p = transform_points(T_cam_world, p_world)
    z = p[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([K[0, 0] * p[:, 0] / zs + K[0, 2], K[1, 1] * p[:, 1] / zs + K[1, 2]], -1)
    return uv, z


def bearings(K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Return unit viewing rays [N, 3] in camera coordinates of pixels ``uv`` [N, 2]."""
    x = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1],
                  np.ones(len(uv))], -1)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def triangulate(K: np.ndarray, T_a: np.ndarray, uv_a: np.ndarray, T_b: np.ndarray,
                uv_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Triangulate pixel pairs seen from two poses (linear, batched DLT).

    :param K: [3, 3] intrinsics
    :param T_a: T_cam_world of the first view, [4, 4] or [N, 4, 4]
    :param uv_a: [N, 2] pixels in the first view
    :param T_b: T_cam_world of the second view, [4, 4] or [N, 4, 4]
    :param uv_b: [N, 2] pixels in the second view
    :return: (p_world [N, 3], parallax [N] degrees between the two rays at the point)
    """
    n = len(uv_a)
    Ta = np.broadcast_to(np.asarray(T_a, np.float64), (n, 4, 4))
    Tb = np.broadcast_to(np.asarray(T_b, np.float64), (n, 4, 4))
    Kinv = np.linalg.inv(K)
    xa = np.c_[uv_a, np.ones(n)] @ Kinv.T
    xb = np.c_[uv_b, np.ones(n)] @ Kinv.T
    Pa, Pb = Ta[:, :3, :], Tb[:, :3, :]
    A = np.stack([xa[:, :1] * Pa[:, 2] - Pa[:, 0], xa[:, 1:2] * Pa[:, 2] - Pa[:, 1],
                  xb[:, :1] * Pb[:, 2] - Pb[:, 0], xb[:, 1:2] * Pb[:, 2] - Pb[:, 1]], 1)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1]
    w = np.where(np.abs(X[:, 3]) < 1e-12, 1e-12, X[:, 3])
    p = X[:, :3] / w[:, None]
    ca = -np.einsum('nji,nj->ni', Ta[:, :3, :3], Ta[:, :3, 3])   # camera centres in the world
    cb = -np.einsum('nji,nj->ni', Tb[:, :3, :3], Tb[:, :3, 3])
    ra, rb = p - ca, p - cb
    cos = np.einsum('ni,ni->n', ra, rb) / np.maximum(
        np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-12)
    return p, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def camera_centre(T_cam_world: np.ndarray) -> np.ndarray:
    """Return the camera position [3] in the world of a ``T_cam_world`` [4, 4]."""
    return -T_cam_world[:3, :3].T @ T_cam_world[:3, 3]


def roll_pitch_deg(R_world_optical: np.ndarray) -> Tuple[float, float]:
    """Return (roll, pitch) in degrees of a camera's optical frame in a z-up world.

    The angles of ``camera_pose`` (:func:`l3rocc_core.stream.pose_from_xyz_rpy`): those of the
    camera's body frame (x forward, y left, z up); pitch > 0 looks down, roll > 0 turns the
    image clockwise as seen from behind (the right side down).

    :param R_world_optical: [3, 3] rotation of the optical frame (z forward, x right, y down)
    """
    # The body axes in the world: forward = optical z, left = -optical x, up = -optical y.
    R = np.asarray(R_world_optical, np.float64)
    forward, left, up = R[:, 2], -R[:, 0], -R[:, 1]
    pitch = np.degrees(np.arcsin(np.clip(-forward[2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(left[2], up[2]))
    return float(roll), float(pitch)
