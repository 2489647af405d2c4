"""The ground plane under the camera: metric scale for monocular visual odometry.

Monocular geometry is known up to scale. Where the ground is visible and the camera height
above it is known, the plane fitted to the points below the camera fixes the scale: the
camera's distance to the plane must equal that height.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
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
#: the ground instead (a table top has texture too, the floor lies below it) ...
LOWER_PLANE_RATIO = 1.15
#: ... when tilted no more than it from ``up`` (``up`` is gravity), or, with a tilted normal
#: allowed (``up`` a guess), parallel to it within this angle (degrees) through other points.
PARALLEL_DEG = 5.0


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
    may tilt that far (``up`` is a guess: a camera guessed level), refined by weighted total
    least squares (weights fall with the squared distance, like the precision of triangulated
    points). Either way the camera is above the plane, and the ground is the best supported
    plane or one lower down that has half its support (see ``LOWER_PLANE_RATIO``).

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
    on = np.abs(P @ n.T + h) < band[:, None]            # [points, hypotheses]
    support = on.sum(0)
    best = int(np.argmax(support))
    if support[best] < MIN_INLIERS:
        return None
    vertical = h / (n @ up)
    if max_tilt_deg <= 0:
        alike = n @ up >= n[best] @ up - 1e-9               # no lower by tilting alone
    else:
        # Parallel to the best plane (refined: three points give a rough normal), and another
        # surface: most of its points are not on the best plane (a plane tilted through the
        # same points can be farther from the camera).
        alike = ((n @ _refine(P[on[:, best]], weight[on[:, best]], n[best])[0]
                  >= np.cos(np.radians(PARALLEL_DEG)))
                 & ((on & ~on[:, best:best + 1]).sum(0) * 2 > support))
    lower = np.flatnonzero((support >= support[best] // 2)
                           & (vertical > LOWER_PLANE_RATIO * vertical[best]) & alike)
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
    """Return the value where the cumulative weight reaches half."""
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


#: Photometric ground height: pixels whose ray points at least this far below the horizon
#: are swept; a pixel votes for its best height when the zero-mean normalised
#: cross-correlation of its window (side ``PHOTO_WINDOW`` pixels) reaches ``PHOTO_MIN_NCC``
#: there and its window is textured (intensity variance >= ``PHOTO_MIN_VARIANCE``, 0..255
#: scale). Heights are voted in bins of ``PHOTO_BIN`` (log); the ground is the farthest mode
#: holding at least ``PHOTO_MODE_SHARE`` of the strongest one's votes (obstacles on the floor
#: are nearer planes), and needs ``PHOTO_MIN_VOTES`` votes.
PHOTO_BELOW_HORIZON_DEG = 20.0
PHOTO_WINDOW = 9
PHOTO_MIN_NCC = 0.8
PHOTO_MIN_VARIANCE = 4.0
PHOTO_BIN = 0.01
PHOTO_MODE_SHARE = 0.3
PHOTO_MIN_VOTES = 300


def ground_homography(K: np.ndarray, R_b_a: np.ndarray, t_b_a: np.ndarray, up_a: np.ndarray,
                      height: float) -> np.ndarray:
    """Homography [3, 3] mapping pixels of view a to view b for the ground plane.

    The ground lies ``height`` below camera a along ``-up_a`` (points with
    ``up_a . X = -height`` in a's coordinates); ``X_b = R_b_a X_a + t_b_a``.
    """
    n = np.asarray(up_a, np.float64) / np.linalg.norm(up_a)
    return K @ (R_b_a - np.outer(t_b_a, n) / height) @ np.linalg.inv(K)


def photometric_ground_height(gray_a: np.ndarray, gray_b: np.ndarray, K: np.ndarray,
                              R_b_a: np.ndarray, t_b_a: np.ndarray, up_a: np.ndarray,
                              heights: np.ndarray) -> Optional[float]:
    """Find the camera height above the ground that best explains two images (plane sweep).

    Each candidate height defines the ground's homography between the views; image b is
    warped onto a with it and compared window by window over the pixels that look at least
    ``PHOTO_BELOW_HORIZON_DEG`` below the horizon. Every textured ground pixel votes, so
    weakly textured floors (few corners) still give the height; a box on the floor votes for
    a nearer plane and loses to the floor behind it (see the module constants).

    :param gray_a: uint8 [H, W] first view
    :param gray_b: uint8 [H, W] second view
    :param K: [3, 3] intrinsics
    :param R_b_a: [3, 3] rotation from a to b
    :param t_b_a: [3] translation from a to b (the map's units)
    :param up_a: [3] up (against gravity) in a's camera coordinates
    :param heights: increasing candidate heights (the map's units), geometrically spaced
    :return: the height, or None when the images do not single one out (no textured ground
        below the horizon, too little baseline)
    """
    h, w = gray_a.shape
    up = np.asarray(up_a, np.float64) / np.linalg.norm(up_a)
    v, u = np.mgrid[0:h, 0:w]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((h, w))], -1)
    below = -(rays @ up) / np.linalg.norm(rays, axis=-1)
    region = below > np.sin(np.radians(PHOTO_BELOW_HORIZON_DEG))
    if region.sum() < PHOTO_MIN_VOTES:
        return None
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    y0, x0 = rows[0], cols[0]
    box = (PHOTO_WINDOW, PHOTO_WINDOW)
    a = gray_a.astype(np.float32)[y0:rows[-1] + 1, x0:cols[-1] + 1]
    mask = region[y0:rows[-1] + 1, x0:cols[-1] + 1]
    mean_a = cv2.blur(a, box)
    var_a = cv2.blur(a * a, box) - mean_a ** 2
    b = gray_b.astype(np.float32)
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])   # ROI -> image a
    size = (a.shape[1], a.shape[0])
    ncc = np.full((len(heights),) + a.shape, -1.0, np.float32)
    for i, height in enumerate(heights):       # one warp and three box filters per candidate
        H = ground_homography(K, R_b_a, t_b_a, up, float(height)) @ shift
        wb = cv2.warpPerspective(b, H, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderValue=-1.0)
        mean_b = cv2.blur(wb, box)
        var_b = cv2.blur(wb * wb, box) - mean_b ** 2
        cov = cv2.blur(a * wb, box) - mean_a * mean_b
        ok = (var_b > PHOTO_MIN_VARIANCE) & (cv2.erode((wb >= 0).astype(np.uint8),
                                                       np.ones(box, np.uint8)) > 0)
        ncc[i] = np.where(ok, cov / np.sqrt(np.maximum(var_a * var_b, 1e-12)), -1.0)
    best = ncc.argmax(0)
    peak = np.take_along_axis(ncc, best[None], 0)[0]
    vote = (mask & (var_a > PHOTO_MIN_VARIANCE) & (peak >= PHOTO_MIN_NCC) & (best > 0)
            & (best < len(heights) - 1))
    if vote.sum() < PHOTO_MIN_VOTES:
        return None
    k = best[vote]
    s0, s1, s2 = (ncc[k + d, vote] for d in (-1, 0, 1))
    den = s0 - 2 * s1 + s2
    offset = np.clip(np.where(den < 0, 0.5 * (s0 - s2) / np.where(den < 0, den, -1.0), 0.0),
                     -0.5, 0.5)
    step = np.log(heights[1] / heights[0])
    log_h = np.log(heights[0]) + (k + offset) * step
    bins = np.arange(log_h.min(), log_h.max() + 2 * PHOTO_BIN, PHOTO_BIN)
    hist, _ = np.histogram(log_h, bins)
    hist = np.convolve(hist, np.ones(5), 'same')                # about +-2 bins
    peaks = np.flatnonzero((hist >= PHOTO_MODE_SHARE * hist.max())
                           & (hist >= np.r_[0, hist[:-1]]) & (hist >= np.r_[hist[1:], 0]))
    mode = bins[peaks[-1]] + PHOTO_BIN / 2                      # the farthest strong mode
    near = np.abs(log_h - mode) < 3 * PHOTO_BIN
    if near.sum() < PHOTO_MIN_VOTES:
        return None
    return float(np.exp(np.median(log_h[near])))
