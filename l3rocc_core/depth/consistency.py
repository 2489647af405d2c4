"""Geometric consistency of each depth map with the window's previous depth maps.

A depth sample whose 3D point the other views of the window do not see where it claims to be
is an outlier of the depth stage (a wrong plane-sweep match, a reflection, a blurred frame):
fused as it is, it becomes an occupied voxel in free space. As the depth-map fusion filters of
COLMAP and MVSNet do, :class:`ConsistencyFilter` keeps the last ``depth_consistency_frames``
depth maps with their poses and, for every valid pixel ``x`` of a new map with depth ``z``:

1. back-projects it, ``P = T_world_cam (z K^-1 [x, 1])``, and projects ``P`` into every kept
   view ``j``: pixel ``x_j`` (float) at depth ``z_j``;
2. reads view ``j``'s own depth ``d_j`` at the nearest pixel of ``x_j`` (where it is valid);
3. view ``j`` confirms the sample when ``|z_j - d_j| / d_j < depth_consistency_rel_error`` and
   view ``j``'s surface point on that ray, ``d_j K^-1 [x_j, 1]``, projects back into the new map
   within ``depth_consistency_reproj_px`` of ``x`` (the two checks of MVSNet's fusion: depth
   agreement, and agreement of the image positions, which weighs the depth difference by the
   baseline);
4. samples confirmed by at least ``depth_consistency_views`` kept views keep their confidence;
   the others get it multiplied by ``depth_consistency_penalty`` (0: they become invalid).

A sample nobody can vouch for is unconfirmed: out of every kept view's image, hidden behind
what the kept views saw, or seen with no valid depth there. While fewer maps than
``depth_consistency_views`` are kept (the first frames after a start or reset), each sample
needs every kept map; with none kept the map passes unchanged.

Moving objects are never consistent across time: every sample on a moving part disagrees
with the older maps. Where the depth comes from matching window frames (``plane_sweep``) that
costs nothing, because the matching itself assumes a static scene and its samples on moving
parts are wrong already. A single-view source (``network``, ``topic``, ``model``) measures
moving parts correctly in every frame, and the filter would erase them: with
``depth_consistency_scope: multi_view`` (the default) the filter passes their maps unchanged.

Kept maps are the raw maps as they came in (not the filtered ones), so a sample confirmed
later still confirms others. The history restarts when the stamp goes back or the depth map's
camera changes. Everything is vectorised over pixels and kept views (torch, any device).
"""

from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource, WrappedDepthSource
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame

__all__ = ['ConsistencyFilter', 'FilteredDepthSource', 'MULTI_VIEW_SOURCES', 'SCOPES']

#: ``depth_source`` values whose every sample is a multi-view match (static-scene assumption).
MULTI_VIEW_SOURCES = ('plane_sweep',)
#: ``depth_consistency_scope`` values.
SCOPES = ('multi_view', 'all')
_MIN_Z = 1e-3               # metres: points closer to a camera plane count as behind it


@dataclass
class _View:
    """A kept depth map: its depth, validity and pose."""

    depth: torch.Tensor         # float32 [N] metres (flat, row-major), 0 where invalid
    T_cam_world: np.ndarray     # float64 [4, 4] world to camera
    T_world_cam: np.ndarray     # float64 [4, 4] camera to world


class ConsistencyFilter:
    """Lowers the confidence of depth samples the window's previous depth maps do not confirm.

    One :meth:`filter` call per frame, in stamp order, between the depth stage and fusion.

    :param config: the depth stage's parameters (``depth_consistency_*``, ``depth_source``,
        ``min_confidence``)
    :param device: torch device of the kept maps and of the computation
    :raises ValueError: an unknown ``depth_consistency_scope``
    """

    def __init__(self, config: DepthConfig, device: Union[str, torch.device] = 'cpu'):
        """Keep the parameters; no map is kept yet."""
        if config.depth_consistency_scope not in SCOPES:
            raise ValueError(f'depth_consistency_scope must be one of {list(SCOPES)}, got '
                             f'{config.depth_consistency_scope!r}')
        self.config = config
        self.device = torch.device(device)
        self._views: Deque[_View] = deque(maxlen=max(1, config.depth_consistency_frames))
        self._camera: Optional[PinholeCamera] = None
        self._last_stamp: Optional[int] = None
        self._pixels: Optional[torch.Tensor] = None     # float32 [2, N] pixel coordinates
        #: samples checked and samples left unconfirmed since construction (diagnostics)
        self.checked = 0
        self.unconfirmed = 0

    @property
    def active(self) -> bool:
        """Whether maps of this ``depth_source`` are checked at all."""
        cfg = self.config
        return cfg.depth_consistency_views > 0 and (
            cfg.depth_consistency_scope == 'all' or cfg.depth_source in MULTI_VIEW_SOURCES)

    @property
    def num_views(self) -> int:
        """Depth maps kept as references now."""
        return len(self._views)

    def reset(self) -> None:
        """Forget the kept maps (a new stream)."""
        self._views.clear()
        self._camera = None
        self._last_stamp = None

    def filter(self, depth: Optional[DepthResult], frame: Frame) -> Optional[DepthResult]:
        """Check ``depth`` against the kept maps, then keep it as a reference.

        :param depth: the depth stage's result for ``frame`` (None passes through)
        :param frame: the frame it belongs to: ``T_world_cam`` (required for the check; a
            frame without a pose passes unchanged) and ``stamp_ns``
        :return: a new result with the confidence of unconfirmed samples multiplied by
            ``depth_consistency_penalty`` (and those below ``min_confidence`` or at 0 invalid),
            or ``depth`` itself when the filter does not apply
        """
        if depth is None or not self.active or frame.T_world_cam is None:
            return depth
        cam = depth.camera
        stamp = int(frame.stamp_ns)
        if self._camera != cam or (self._last_stamp is not None and stamp < self._last_stamp):
            self.reset()
            self._camera = cam
            self._pixels = None
        self._last_stamp = stamp
        d = torch.where(depth.valid, depth.depth.to(self.device, torch.float32),
                        torch.zeros((), device=self.device)).reshape(-1)
        T_world_cam = np.asarray(frame.T_world_cam, np.float64)
        out = depth
        if self._views:
            confirmed = self._confirmations(d, cam, T_world_cam)
            needed = min(self.config.depth_consistency_views, len(self._views))
            out = self._apply(depth, (confirmed >= needed).view(cam.height, cam.width))
        if bool((d > 0).any()) and self._far_enough(T_world_cam):
            self._views.append(_View(d.clone(), np.linalg.inv(T_world_cam), T_world_cam))
        return out

    # -- internals ---------------------------------------------------------------------------
    def _far_enough(self, T_world_cam: np.ndarray) -> bool:
        """Whether the camera moved ``depth_consistency_baseline_m`` from the newest kept map."""
        if not self._views:
            return True
        step = T_world_cam[:3, 3] - self._views[-1].T_world_cam[:3, 3]
        return float(np.linalg.norm(step)) >= self.config.depth_consistency_baseline_m

    def _pixel_grid(self, cam: PinholeCamera) -> torch.Tensor:
        """float32 [2, N] pixel-centre coordinates (u, v) of the map, row-major (cached)."""
        if self._pixels is None:
            v, u = torch.meshgrid(torch.arange(cam.height, dtype=torch.float32,
                                               device=self.device),
                                  torch.arange(cam.width, dtype=torch.float32,
                                               device=self.device), indexing='ij')
            self._pixels = torch.stack([u.reshape(-1), v.reshape(-1)])
        return self._pixels

    def _confirmations(self, d: torch.Tensor, cam: PinholeCamera,
                       T_world_cam: np.ndarray) -> torch.Tensor:
        """Kept views that confirm each pixel's sample.

        :param d: float32 [N] the new map's depth (metres, 0 = invalid), row-major
        :param T_world_cam: float64 [4, 4] the new map's pose
        :return: int64 [N] (0 where the sample is invalid)
        """
        cfg = self.config
        dev = self.device
        views = list(self._views)
        W, H = cam.width, cam.height
        uv = self._pixel_grid(cam)                                         # [2, N]
        # Points in the new camera, [3, N]: z K^-1 [u, v, 1].
        p = torch.stack([(uv[0] - cam.cx) / cam.fx * d, (uv[1] - cam.cy) / cam.fy * d, d])
        # Relative poses in float64 (poses may be far from the origin), applied in float32.
        T_j_cur = np.stack([v.T_cam_world @ T_world_cam for v in views])  # [K, 4, 4]
        T_cur_j = np.stack([np.linalg.inv(T) for T in T_j_cur])
        p_j, z_j, ahead, u_j, v_j = self._project(T_j_cur, p, cam)        # [K, 3, N], [K, N]
        col = torch.floor(u_j + 0.5)
        row = torch.floor(v_j + 0.5)
        inside = ahead & (col >= 0) & (col <= W - 1) & (row >= 0) & (row <= H - 1)
        index = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1)).to(torch.int64)
        stored = torch.stack([v.depth for v in views])                     # [K, N]
        d_j = torch.gather(stored, 1, index)                               # [K, N]
        seen = inside & (d_j > 0) & (d > 0)[None]
        d_safe = torch.where(seen, d_j, torch.ones((), device=dev))
        agree = (z_j - d_safe).abs() < cfg.depth_consistency_rel_error * d_safe
        # View j's own surface point on the same ray: p_j scaled to depth d_j, back in the new
        # camera (the reprojection check of MVSNet's fusion).
        _, _, back, u, v = self._project(T_cur_j, p_j * (d_safe / z_j)[:, None], cam)
        du, dv = u - uv[0], v - uv[1]
        close = back & (du.square() + dv.square() < cfg.depth_consistency_reproj_px ** 2)
        return (seen & agree & close).sum(0)

    def _project(self, T: np.ndarray, p: torch.Tensor, cam: PinholeCamera
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
        """Points moved by K rigid transforms and projected with ``cam``.

        :param T: float64 [K, 4, 4] transforms (applied in float32)
        :param p: float32 [3, N] or [K, 3, N] points
        :return: (points float32 [K, 3, N], their z [K, N] (1 where not in front),
            in front bool [K, N], u and v float32 [K, N] pixel coordinates)
        """
        dev = self.device
        R = torch.as_tensor(T[:, :3, :3], dtype=torch.float32, device=dev)
        t = torch.as_tensor(T[:, :3, 3:], dtype=torch.float32, device=dev)
        q = torch.matmul(R, p) + t
        front = q[:, 2] > _MIN_Z
        z = torch.where(front, q[:, 2], torch.ones((), device=dev))
        return q, z, front, q[:, 0] / z * cam.fx + cam.cx, q[:, 1] / z * cam.fy + cam.cy

    def _apply(self, depth: DepthResult, confirmed: torch.Tensor) -> DepthResult:
        """Return the result with the confidence of unconfirmed valid samples lowered.

        :param confirmed: bool [H, W]
        """
        cfg = self.config
        valid = depth.valid.to(self.device)
        doubted = valid & ~confirmed
        self.checked += int(valid.sum())
        self.unconfirmed += int(doubted.sum())
        zero = torch.zeros((), device=self.device)
        conf = depth.confidence.to(self.device, torch.float32)
        conf = torch.where(doubted, conf * cfg.depth_consistency_penalty, conf)
        valid = valid & (conf > 0) & (conf >= cfg.min_confidence)
        return DepthResult(torch.where(valid, depth.depth.to(self.device), zero),
                           torch.where(valid, conf, zero), valid, depth.camera)


class FilteredDepthSource(WrappedDepthSource):
    """A depth source whose every result passes through a :class:`ConsistencyFilter`.

    It answers :attr:`~DepthSource.uses_sources` and :attr:`~DepthSource.requires_sources` as
    the wrapped source does, so the pipeline treats it as that source.

    :param source: the depth source (``make_depth_source``)
    :param consistency: the filter its results pass through
    """

    def __init__(self, source: DepthSource, consistency: ConsistencyFilter):
        """Wrap ``source``."""
        super().__init__(source)
        self.consistency = consistency

    def reset(self) -> None:
        """Forget the filter's reference maps and reset the wrapped source."""
        self.consistency.reset()
        super().reset()

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Return the wrapped source's depth of ``frame``, through the filter.

        :raises DepthInputError: as the wrapped source
        """
        return self.consistency.filter(self.source.estimate(frame, sources), frame)
