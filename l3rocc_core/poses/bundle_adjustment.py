"""Local bundle adjustment: the keyframes of a window and the landmarks they see, refined together.

Minimises, with a Huber loss, the reprojection errors of every observation plus an optional
prior that carries the metric scale: measured depth (an RGB-D camera or a depth topic). Solved
by Levenberg-Marquardt with an analytic Jacobian and the Schur complement (landmarks
eliminated in 3x3 blocks, a dense system of 6 unknowns per free keyframe); the number of
iterations is bounded, so one adjustment has a bounded cost.

Each free keyframe is parametrised by an increment ``(w, dt)`` of its starting pose:
``R = exp(w) R0``, ``t = t0 + dt``; the exact derivative of ``exp(w) v`` is
``-[exp(w) v]_x J_l(w)`` (left Jacobian of SO(3)).
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from l3rocc_core.poses.geometry import skew, so3_exp, so3_left_jacobian

#: Observations farther than this many Huber thresholds from their landmark are left out.
OUTLIER_GATE = 3.0
#: Smallest depth used in the projection (metres or map units); points behind get large errors.
MIN_Z = 1e-3


@dataclass
class BAProblem:
    """One local bundle adjustment.

    :param K: [3, 3] intrinsics (pixels)
    :param T_cam_world: [F, 4, 4] keyframe poses
    :param fixed: bool [F], keyframes held fixed (the gauge: at least one)
    :param points: [L, 3] landmark positions in the world
    :param obs_frame: int [M] keyframe of each observation
    :param obs_point: int [M] landmark of each observation
    :param obs_uv: [M, 2] observed pixels
    :param depth_obs: int [D] observations with a measured depth
    :param depth: [D] measured z-depth of those observations
    :param depth_sigma: [D] standard deviation of that depth
    """

    K: np.ndarray
    T_cam_world: np.ndarray
    fixed: np.ndarray
    points: np.ndarray
    obs_frame: np.ndarray
    obs_point: np.ndarray
    obs_uv: np.ndarray
    depth_obs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    depth: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_sigma: np.ndarray = field(default_factory=lambda: np.ones(0))


class _Model:
    """Residuals and Jacobian of a :class:`BAProblem` as functions of the parameter vector."""

    def __init__(self, pb: BAProblem):
        self.pb = pb
        self.free = np.flatnonzero(~pb.fixed)
        F = len(pb.T_cam_world)
        self.slot = np.full(F, -1)
        self.slot[self.free] = np.arange(len(self.free))
        self.n_pose = 6 * len(self.free)
        self.R0 = pb.T_cam_world[:, :3, :3]
        #: observations taking part (the others are outliers)
        self.active = np.ones(len(pb.obs_frame), bool)
        self.t0 = pb.T_cam_world[:, :3, 3]

    def unpack(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (R [F, 3, 3], t [F, 3], points [L, 3], w [F, 3]) of parameters ``x``."""
        w = np.zeros((len(self.R0), 3))
        dt = np.zeros((len(self.R0), 3))
        pose = x[:self.n_pose].reshape(-1, 6)
        w[self.free], dt[self.free] = pose[:, :3], pose[:, 3:]
        R = so3_exp(w) @ self.R0
        return R, self.t0 + dt, x[self.n_pose:].reshape(-1, 3), w

    def camera_points(self, x: np.ndarray):
        R, t, P, w = self.unpack(x)
        pb = self.pb
        RP = np.einsum('mij,mj->mi', R[pb.obs_frame], P[pb.obs_point])
        return RP, RP + t[pb.obs_frame], R, P, w

    def residuals(self, x: np.ndarray) -> np.ndarray:
        pb = self.pb
        _, Xc, _, _, _ = self.camera_points(x)
        z = np.maximum(Xc[:, 2], MIN_Z)
        fx, fy, cx, cy = pb.K[0, 0], pb.K[1, 1], pb.K[0, 2], pb.K[1, 2]
        r_uv = np.stack([fx * Xc[:, 0] / z + cx, fy * Xc[:, 1] / z + cy], -1) - pb.obs_uv
        r_d = (Xc[pb.depth_obs, 2] - pb.depth) / pb.depth_sigma
        return np.concatenate([r_uv.ravel(), r_d])

    def blocks(self, x: np.ndarray):
        """Residuals and Jacobian blocks at ``x``.

        :return: (r_uv [M, 2], J_pose_uv [M, 2, 6], J_point_uv [M, 2, 3], r_d [D],
            J_pose_d [D, 6], J_point_d [D, 3])
        """
        pb = self.pb
        RP, Xc, R, _, w = self.camera_points(x)
        M = len(Xc)
        z = np.maximum(Xc[:, 2], MIN_Z)
        fx, fy, cx, cy = pb.K[0, 0], pb.K[1, 1], pb.K[0, 2], pb.K[1, 2]
        r_uv = np.stack([fx * Xc[:, 0] / z + cx, fy * Xc[:, 1] / z + cy], -1) - pb.obs_uv
        Jp = np.zeros((M, 2, 3))                       # d(uv) / d(p_cam)
        Jp[:, 0, 0] = fx / z
        Jp[:, 0, 2] = -fx * Xc[:, 0] / z ** 2
        Jp[:, 1, 1] = fy / z
        Jp[:, 1, 2] = -fy * Xc[:, 1] / z ** 2
        dX_dP = R[pb.obs_frame]                          # [M, 3, 3]
        dX_dc = np.concatenate([-skew(RP) @ so3_left_jacobian(w)[pb.obs_frame],
                                np.broadcast_to(np.eye(3), (M, 3, 3))], 2)   # [M, 3, 6]
        d = pb.depth_obs
        inv = 1.0 / pb.depth_sigma
        r_d = (Xc[d, 2] - pb.depth) * inv
        return (r_uv, Jp @ dX_dc, Jp @ dX_dP, r_d, dX_dc[d, 2, :] * inv[:, None],
                dX_dP[d, 2, :] * inv[:, None])


def _sum_by(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum ``values`` [M, ...] into ``n`` bins by ``index`` [M] (a fast ``np.add.at``)."""
    flat = values.reshape(len(values), int(np.prod(values.shape[1:])))
    out = np.empty((n, flat.shape[1]))
    for k in range(flat.shape[1]):      # one bincount per matrix entry (at most 36)
        out[:, k] = np.bincount(index, weights=flat[:, k], minlength=n)
    return out.reshape((n,) + values.shape[1:])


def _huber_weights(norm: np.ndarray, k: float) -> np.ndarray:
    """IRLS weights of the Huber loss for residual norms ``norm``."""
    return np.where(norm <= k, 1.0, k / np.maximum(norm, 1e-12))


def _huber_cost(norm: np.ndarray, k: float) -> float:
    """Sum of the Huber loss of residual norms (0.5 r^2 inside ``k``, linear outside)."""
    return float(np.sum(np.where(norm <= k, 0.5 * norm ** 2, k * norm - 0.5 * k * k)))


def bundle_adjust(pb: BAProblem, f_scale_px: float, max_iterations: int
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine keyframe poses and landmarks of ``pb`` (Levenberg-Marquardt, Schur complement).

    Each iteration linearises once, weights residuals by the Huber loss (IRLS), eliminates the
    landmarks (3x3 blocks) and solves the reduced camera system (6 per free keyframe), then
    keeps the step only when the robust cost falls. Observations farther than
    ``OUTLIER_GATE`` Huber thresholds from their landmark are left out, judged before the
    first and before the second half of the iterations: a Huber loss still lets a few gross
    outliers (a moving object) pull every pose a little.

    :param f_scale_px: Huber threshold (pixels; depth residuals are in sigmas)
    :param max_iterations: bound on linearisations (the cost of one adjustment)
    :return: (T_cam_world [F, 4, 4], points [L, 3], reprojection error [M] pixels per
        observation after the adjustment)
    """
    model = _Model(pb)
    x = np.concatenate([np.zeros(model.n_pose), pb.points.ravel()])
    k = float(f_scale_px)
    iterations = max(0, int(max_iterations)) if len(pb.obs_frame) else 0
    for rounds in (iterations - iterations // 2, iterations // 2):
        model.active = _reprojection_errors(model, x) < OUTLIER_GATE * k
        x = _levenberg_marquardt(model, x, k, rounds)
    R, t, P, _ = model.unpack(x)
    T = np.tile(np.eye(4), (len(R), 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, t
    return T, P, _reprojection_errors(model, x)


def _reprojection_errors(model: _Model, x: np.ndarray) -> np.ndarray:
    """Reprojection error [M] (pixels) of every observation at ``x``."""
    r = model.residuals(x)[:2 * len(model.pb.obs_frame)].reshape(-1, 2)
    return np.linalg.norm(r, axis=1)


def _levenberg_marquardt(model: _Model, x: np.ndarray, k: float, iterations: int
                         ) -> np.ndarray:
    """Up to ``iterations`` damped steps from ``x``; a step is kept when the cost falls."""
    lam = 1e-3
    cost = _total_cost(model, x, k)
    for _ in range(iterations):
        step = _lm_step(model, x, k, lam)
        if step is None:
            break
        x_new = x + step
        new_cost = _total_cost(model, x_new, k)
        if np.isfinite(new_cost) and new_cost < cost:
            done = cost - new_cost < 1e-6 * cost
            x, cost, lam = x_new, new_cost, max(lam / 3.0, 1e-7)
            if done:
                break
        else:
            lam *= 8.0
            if lam > 1e4:
                break
    return x


def _total_cost(model: _Model, x: np.ndarray, k: float) -> float:
    """Robust cost of the active observations (reprojection pairs by norm, depth rows)."""
    M = len(model.pb.obs_frame)
    r = model.residuals(x)
    uv = np.linalg.norm(r[:2 * M].reshape(-1, 2), axis=1)[model.active]
    depth = np.abs(r[2 * M:])[model.active[model.pb.depth_obs]]
    return _huber_cost(uv, k) + _huber_cost(depth, k)


def _lm_step(model: _Model, x: np.ndarray, k: float, lam: float) -> Optional[np.ndarray]:
    """One damped Gauss-Newton step with the landmarks eliminated; None when singular."""
    pb = model.pb
    r_uv, Jc_uv, Jp_uv, r_d, Jc_d, Jp_d = model.blocks(x)
    L, nf = len(pb.points), len(model.free)
    w_uv = _huber_weights(np.linalg.norm(r_uv, axis=1), k) * model.active
    w_d = _huber_weights(np.abs(r_d), k) * model.active[pb.depth_obs]
    # Landmark blocks: H_pp [L, 3, 3], g_p [L, 3].
    Hpp = np.zeros((L, 3, 3))
    gp = np.zeros((L, 3))
    JpT = w_uv[:, None, None] * Jp_uv.transpose(0, 2, 1)
    Hpp += _sum_by(pb.obs_point, JpT @ Jp_uv, L)
    gp += _sum_by(pb.obs_point, (JpT @ r_uv[:, :, None])[:, :, 0], L)
    dp = pb.obs_point[pb.depth_obs]
    Hpp += _sum_by(dp, w_d[:, None, None] * Jp_d[:, :, None] * Jp_d[:, None, :], L)
    gp += _sum_by(dp, (w_d * r_d)[:, None] * Jp_d, L)
    diag = np.einsum('lii->li', Hpp)
    Hpp_damped = Hpp + lam * (diag + 1e-9)[:, :, None] * np.eye(3)
    try:
        Hpp_inv = np.linalg.inv(Hpp_damped)
    except np.linalg.LinAlgError:
        return None
    if nf == 0:
        dx_points = -(Hpp_inv @ gp[:, :, None])[:, :, 0]
        return np.concatenate([np.zeros(0), dx_points.ravel()])
    # Camera blocks and the coupling E [L, nf, 6, 3] (one observation per frame and landmark).
    slot = model.slot[pb.obs_frame]
    free = slot >= 0
    Hcc = np.zeros((nf, 6, 6))
    gc = np.zeros((nf, 6))
    E = np.zeros((L, nf, 6, 3))
    JcT = w_uv[free, None, None] * Jc_uv[free].transpose(0, 2, 1)      # [m, 6, 2]
    Hcc += _sum_by(slot[free], JcT @ Jc_uv[free], nf)
    gc += _sum_by(slot[free], (JcT @ r_uv[free][:, :, None])[:, :, 0], nf)
    E[pb.obs_point[free], slot[free]] += JcT @ Jp_uv[free]   # one per (landmark, frame)
    ds = model.slot[pb.obs_frame[pb.depth_obs]]
    fd = ds >= 0
    if fd.any():
        wd = w_d[fd]
        Hcc += _sum_by(ds[fd], wd[:, None, None] * Jc_d[fd][:, :, None] * Jc_d[fd][:, None, :],
                       nf)
        gc += _sum_by(ds[fd], (wd * r_d[fd])[:, None] * Jc_d[fd], nf)
        E += _sum_by(dp[fd] * nf + ds[fd], wd[:, None, None] * Jc_d[fd][:, :, None]
                     * Jp_d[fd][:, None, :], L * nf).reshape(E.shape)
    H = np.zeros((nf, 6, nf, 6))
    H[np.arange(nf), :, np.arange(nf), :] = Hcc
    H = H.reshape(6 * nf, 6 * nf)
    H[np.diag_indices(6 * nf)] *= 1.0 + lam
    E = E.reshape(L, 6 * nf, 3)
    EHinv = E @ Hpp_inv                                                # [L, 6 nf, 3]
    S = H - EHinv.transpose(1, 0, 2).reshape(6 * nf, 3 * L) @ E.transpose(
        1, 0, 2).reshape(6 * nf, 3 * L).T
    b = -gc.ravel() + (EHinv @ gp[:, :, None]).sum(0)[:, 0]
    try:
        dc = np.linalg.solve(S + 1e-9 * np.eye(6 * nf), b)
    except np.linalg.LinAlgError:
        return None
    dx_points = -(Hpp_inv @ (gp + E.transpose(0, 2, 1) @ dc)[:, :, None])[:, :, 0]
    return np.concatenate([dc, dx_points.ravel()])
