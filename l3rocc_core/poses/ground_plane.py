"""The ground plane under the camera: metric scale for monocular visual odometry.

Monocular geometry is known up to scale. Where the ground is visible and the camera height
above it is known, the plane fitted to the points below the camera fixes the scale: the
camera's distance to the plane must equal that height.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: Points must lie at least this far below the horizon (degrees) to count as ground candidates.
MIN_BELOW_HORIZON_DEG = 8.0
#: Inlier band, as a share of each point's distance from the camera (triangulated depth is
#: less certain farther away).
INLIER_SHARE = 0.03
#: Fewest inliers that make a plane.
MIN_INLIERS = 12
#: Plane hypotheses drawn.
ITERATIONS = 200
#: A plane this much lower than the best supported one, with at least half its support, is
#: the ground instead (a table top has texture too, the floor lies below it).
LOWER_PLANE_RATIO = 1.15


@dataclass
class GroundPlane:
    """A plane fitted to points around a camera.

    :param normal: [3] unit normal, pointing up (against gravity)
    :param height: the camera's distance above the plane (the points' units)
    :param inliers: bool [N] the points on the plane
    """

    normal: np.ndarray
    height: float
    inliers: np.ndarray


def fit_ground(p_rel: np.ndarray, up: np.ndarray, rng: np.random.Generator,
               max_tilt_deg: float = 0.0) -> Optional[GroundPlane]:
    """Fit the ground plane to points relative to the camera centre.

    RANSAC over the points below the horizon. With ``max_tilt_deg`` 0 the plane is
    perpendicular to ``up`` (gravity is known: one point makes a hypothesis, and the noise of
    far points cannot tilt the plane); otherwise three points make a hypothesis whose normal
    may tilt that far, refined by weighted total least squares (weights fall with the squared
    distance, like the precision of triangulated points).

    :param p_rel: [N, 3] point positions minus the camera centre (any consistent units)
    :param up: [3] unit vector against gravity, in the frame of ``p_rel``
    :param rng: random generator (hypotheses)
    :param max_tilt_deg: how far the normal may tilt from ``up`` (0: not at all)
    :return: the plane, or None when too few points support one
    """
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    dist = np.linalg.norm(p_rel, axis=1)
    below = -(p_rel @ up)
    cand = np.flatnonzero(below > np.sin(np.radians(MIN_BELOW_HORIZON_DEG)) * dist)
    if len(cand) < MIN_INLIERS:
        return None
    P, band, weight = p_rel[cand], INLIER_SHARE * dist[cand], 1.0 / dist[cand] ** 2
    if max_tilt_deg <= 0:
        h = below[cand][rng.integers(0, len(cand), size=min(ITERATIONS, len(cand)))]
        n = np.tile(up, (len(h), 1))
    else:
        idx = rng.integers(0, len(cand), size=(ITERATIONS, 3))
        a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n, axis=1)
        ok = norm > 1e-12
        n, a = n[ok] / norm[ok, None], a[ok]
        n *= np.where(n @ up < 0, -1.0, 1.0)[:, None]
        h = -np.einsum('ij,ij->i', n, a)         # the camera's distance to each hypothesis
        keep = (n @ up > np.cos(np.radians(max_tilt_deg))) & (h > 0)
        n, h = n[keep], h[keep]
    if len(n) == 0:
        return None
    support = (np.abs(P @ n.T + h) < band[:, None]).sum(0)
    best = int(np.argmax(support))
    if support[best] < MIN_INLIERS:
        return None
    vertical = h / (n @ up)
    lower = np.flatnonzero((support >= support[best] // 2)
                           & (vertical > LOWER_PLANE_RATIO * vertical[best]))
    k = lower[np.argmax(support[lower])] if len(lower) else best
    normal, height = n[k], float(h[k])
    for _ in range(2):
        inl = np.abs(P @ normal + height) < band
        if inl.sum() < MIN_INLIERS:
            return None
        if max_tilt_deg <= 0:
            height = _weighted_median(-(P[inl] @ up), weight[inl])
        else:
            normal, height = _refine(P[inl], weight[inl], normal)
    if normal @ up < np.cos(np.radians(max_tilt_deg)) - 1e-9 or height <= 0:
        return None
    inl = np.abs(P @ normal + height) < band
    inliers = np.zeros(len(p_rel), bool)
    inliers[cand[inl]] = True
    return GroundPlane(normal, height, inliers)


def _weighted_median(values: np.ndarray, weight: np.ndarray) -> float:
    """The value where the cumulative weight reaches half."""
    order = np.argsort(values)
    cum = np.cumsum(weight[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2.0)])


def _refine(P: np.ndarray, weight: np.ndarray, normal: np.ndarray) -> Tuple[np.ndarray, float]:
    """Weighted total least-squares plane through ``P``, oriented like ``normal``."""
    w = weight / weight.sum()
    c = w @ P
    _, _, vt = np.linalg.svd((P - c) * np.sqrt(w)[:, None], full_matrices=False)
    n = vt[-1]
    if n @ normal < 0:
        n = -n
    return n, float(-(n @ c))


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the smallest rotation [3, 3] that turns unit vector ``a`` into ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-9:
        raise ValueError('opposite vectors')
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + K + K @ K / (1.0 + c)
