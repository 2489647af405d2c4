"""OccupancyPipeline: frames in, 4D occupancy out — the one facade of the node and of replay.

``push(frame)`` runs, for every frame with a pose::

    window (source selection) -> depth (``depth_source``) -> fusion (log-odds per slice)
        -> refiner (geometry or network) -> Occupancy4D (numpy, the whole window)

``push_depth(frame, depth)`` is the same path with the depth given (a depth estimated elsewhere,
or ground truth); ``push`` itself calls it after estimating depth.

Stream rules: a frame without pose returns None (counted); a frame whose camera (size or
intrinsics) differs from the window's, or whose stamp goes backwards (bag loop, clock jump),
resets the window first; a frame with the newest frame's stamp again is dropped (counted).
An exception inside a stage propagates as :class:`StageError` naming the stage, and leaves the
pipeline usable for the next frame: each stage commits its state only once it has succeeded.
"""

from dataclasses import replace
import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import OutputConfig, PipelineConfig
from l3rocc_core.device import resolve_device
from l3rocc_core.depth.auto import AutoDepth
from l3rocc_core.depth.base import DepthSource, make_depth_source
from l3rocc_core.depth.consistency import ConsistencyFilter, FilteredDepthSource
from l3rocc_core.depth.foreground import ForegroundDepth, ForegroundDepthSource
from l3rocc_core.depth.ground import GroundSnapSource
from l3rocc_core.frame import Frame
from l3rocc_core.fusion import EvidenceFusion
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.refiner.geometry import GeometryRefiner
from l3rocc_core.refiner.interface import Refiner
from l3rocc_core.window import SlidingWindow

LOG = logging.getLogger(__name__)

STAGES = ('window', 'depth', 'fusion', 'refiner', 'output')


class StageError(RuntimeError):
    """A pipeline stage raised; the frame is lost, the pipeline stays usable.

    :param stage: one of :data:`STAGES`
    :param error: the original exception (also ``__cause__``)
    """

    def __init__(self, stage: str, error: BaseException):
        """Name the stage and keep the original error and its diagnostics kind."""
        super().__init__(f'{stage} stage failed: {type(error).__name__}: {error}')
        self.stage = stage
        self.error = error
        self.kind = getattr(error, 'kind', f'{stage}_error')


def grid_from_config(config: PipelineConfig,
                     grid_origin_hint: Optional[Sequence[float]] = None) -> VoxelGrid:
    """Build the grid of a configuration.

    :param config: the pipeline configuration (``grid_min``/``grid_max`` metres)
    :param grid_origin_hint: optional [3] metres added to both bounds (world anchor), e.g. the
        first camera position, so one configuration fits scenes anywhere in the world frame
    :return: for ``grid_anchor: camera`` the grid relative to the camera position
    """
    g = config.grid
    lo, hi = np.asarray(g.grid_min, np.float64), np.asarray(g.grid_max, np.float64)
    if grid_origin_hint is not None and g.grid_anchor == 'world':
        hint = np.asarray(grid_origin_hint, np.float64).reshape(3)
        if not np.all(np.isfinite(hint)):
            raise ValueError(f'grid_origin_hint must be finite, got {hint.tolist()}')
        lo, hi = lo + hint, hi + hint
    return VoxelGrid.from_bounds(lo.tolist(), hi.tolist(), g.voxel_size, g.world_frame)


class OccupancyPipeline:
    """Frames with poses in, :class:`~l3rocc_core.occupancy.Occupancy4D` of the window out.

    :param config: the whole configuration (validated here)
    :param grid_origin_hint: see :func:`grid_from_config`
    :raises ValueError: an invalid configuration
    """

    def __init__(self, config: PipelineConfig,
                 grid_origin_hint: Optional[Sequence[float]] = None):
        """Build every stage; buffers are allocated once here."""
        config.validate()
        self.config = config
        self.device = resolve_device(config.refiner.device)
        self.base_grid = grid_from_config(config, grid_origin_hint)
        self.window = SlidingWindow(config.window)
        self.fusion = EvidenceFusion(self.base_grid, config.fusion, config.window.window_size,
                                     config.depth.max_depth, self.device,
                                     anchor=config.grid.grid_anchor)
        self._depth: Any = None
        #: The depth estimate of the last pushed frame (a ``DepthResult``), or None.
        self.last_depth: Any = None
        self.refiner = self._make_refiner()
        self.refiner_name = self.refiner.name
        self.timings_ms: Dict[str, float] = {}
        # no_depth_source: processed frames that got no depth (no window sources for a
        # source that needs them, or a source that gave none, e.g. a still camera's first
        # frames before its background)
        self.stats: Dict[str, int] = {
            'frames': 0, 'processed': 0, 'no_pose': 0, 'duplicate_stamp': 0,
            'reset_camera_changed': 0, 'reset_time_backwards': 0, 'failed': 0,
            'no_depth_source': 0}
        self._camera: Optional[PinholeCamera] = None
        self._last_stamp: Optional[int] = None
        self._scene_depth: Optional[float] = None
        T, N = config.window.window_size, self.base_grid.num_voxels
        # Per-slot caches of the refined output (geometry refiner: a slice never changes).
        self._prob = np.zeros((T, N), np.float32)
        self._obs = np.zeros((T, N), bool)
        self._cache_generation = -1
        self._cached_slots: set = set()

    # -- set-up -----------------------------------------------------------------------------
    def _make_refiner(self) -> Refiner:
        cfg = self.config.refiner
        if cfg.refiner == 'none':
            return GeometryRefiner()
        try:
            from l3rocc_core.refiner.inference import load_refiner
        except ImportError as exc:
            LOG.warning('refiner: network is not available (%s); using geometry only', exc)
            return GeometryRefiner()
        try:
            refiner = load_refiner(cfg, self.device,
                                   window_size=self.config.window.window_size)
        except (FileNotFoundError, OSError, RuntimeError, ValueError) as exc:
            if cfg.checkpoint:
                raise       # an explicit checkpoint that cannot be used is an error
            LOG.warning('refiner: the bundled network checkpoint cannot be used (%s); using '
                        'geometry only', exc)
            return GeometryRefiner()
        fusion = self.config.fusion
        # two full hits (rays passing) in a slice, within the clamps that bound its log-odds
        refiner.keep_evidence(cfg.network_keep_evidence,
                              min(2.0 * fusion.logodds_hit, fusion.logodds_max),
                              max(2.0 * fusion.logodds_miss, fusion.logodds_min))
        seconds = refiner.warm_up(self.base_grid.dims)
        if seconds:
            LOG.info('network_compile: %s in %.1f s', refiner.compile_status, seconds)
        return refiner

    @property
    def depth_estimator(self) -> DepthSource:
        """The depth stage (``depth_source``), built on first use."""
        if self._depth is None:
            cfg = self.config.depth
            # outlier control between depth and fusion (depth_consistency_views; 0 = off)
            depth: DepthSource = make_depth_source(cfg, self.device)
            if isinstance(depth, AutoDepth):
                # a fixed mount needs no frames to show that it stands still
                depth.fixed_mount = self.config.input.pose_source == 'static'
            if isinstance(depth, AutoDepth) and cfg.depth_consistency_scope == 'multi_view':
                # the check of multi-view depth: the sweep's maps, not the still camera's
                depth.sweep = FilteredDepthSource(depth.sweep, ConsistencyFilter(
                    replace(cfg, depth_source=depth.sweep.name), self.device))
            else:
                depth = FilteredDepthSource(depth, ConsistencyFilter(cfg, self.device))
            # depth noise on the floor, put back on the floor (measured depth keeps its own)
            if cfg.ground_snap_height_m > 0 and cfg.depth_source != 'topic':
                depth = GroundSnapSource(depth, cfg)
            # moving objects before a still camera, outside the consistency check (a moving
            # object is never consistent across time); a measured depth needs no such guess
            if cfg.foreground_depth and cfg.depth_source != 'topic':
                depth = ForegroundDepthSource(depth, ForegroundDepth(cfg), cfg)
            self._depth = depth
        return self._depth

    @property
    def depth_active(self) -> str:
        """The depth source of the newest frame: ``depth_source``; with ``auto``, also which.

        E.g. ``'plane_sweep'``, or ``'auto: network'`` for a still camera under ``auto``
        (``'auto'`` before its first frame).
        """
        depth = self._depth
        while depth is not None and not isinstance(depth, AutoDepth):
            depth = getattr(depth, 'source', None)
        if depth is None:
            return self.config.depth.depth_source
        return f'auto: {depth.active}' if depth.active else 'auto'

    @property
    def grid(self) -> VoxelGrid:
        """The grid of the newest slice (it follows the camera with ``grid_anchor: camera``)."""
        return self.fusion.grid

    def reset(self) -> None:
        """Forget the window (frames, keyframes, slices); parameters and buffers are kept."""
        self.window.reset()
        self.fusion.reset()
        if self._depth is not None:
            self._depth.reset()
        self._camera = None
        self._last_stamp = None
        self._scene_depth = None
        self._cached_slots.clear()
        self._forget_encodings()

    # -- per frame --------------------------------------------------------------------------
    def push(self, frame: Frame) -> Optional[Occupancy4D]:
        """Process one frame: depth from the window's sources, fusion, refiner.

        :param frame: a frame at the working resolution, with ``T_world_cam`` (else ignored)
        :return: the window's occupancy with ``frame`` as the newest slice, or None when the
            frame was not processed (no pose, duplicate stamp)
        :raises StageError: a stage failed; the pipeline stays usable
        """
        start = time.perf_counter()
        self.timings_ms = {}
        if not self._admit(frame):
            return None
        estimator = self.depth_estimator
        sources: List[Frame] = []
        with _Stage(self, 'window'):
            if estimator.uses_sources:
                sources = self.window.select_sources(frame, self._scene_depth)
        depth = None
        self.last_depth = None
        with _Stage(self, 'depth'):
            if sources or not estimator.requires_sources:
                depth = estimator.estimate(frame, sources)
                self.last_depth = depth
            if depth is None:
                self.stats['no_depth_source'] += 1
        self.refiner.set_measured_depth(self.config.depth.depth_source == 'topic')
        return self._fuse(frame, depth, start)

    def push_depth(self, frame: Frame, depth: Any, measured: bool = False
                   ) -> Optional[Occupancy4D]:
        """Process one frame whose depth is already known (the path ``push`` takes after depth).

        :param frame: a frame with ``T_world_cam`` (else ignored)
        :param depth: a ``DepthResult`` (``depth`` [h, w] metres, 0 = invalid, ``confidence``,
            ``valid``, ``camera`` of the depth map: when absent the frame's camera scaled to the
            map), a bare [h, w] depth tensor, or None (a slice without new evidence)
        :param measured: True for a measurement (a depth camera, ground truth), False for an
            estimate made elsewhere (``network_keep_evidence: auto`` keeps strong evidence of
            measured depth only)
        :return: as :meth:`push`
        """
        start = time.perf_counter()
        self.timings_ms = {}
        if not self._admit(frame):
            return None
        self.refiner.set_measured_depth(measured)
        return self._fuse(frame, depth, start)

    def _admit(self, frame: Frame) -> bool:
        """Count the frame; reset on a new camera or a stamp going back; False = skip it."""
        self.stats['frames'] += 1
        if frame.T_world_cam is None:
            self.stats['no_pose'] += 1
            return False
        if self._camera is not None and frame.camera != self._camera:
            LOG.info('camera changed (%dx%d -> %dx%d or new intrinsics): window reset',
                     self._camera.width, self._camera.height, frame.camera.width,
                     frame.camera.height)
            self.stats['reset_camera_changed'] += 1
            self.reset()
        if self._last_stamp is not None:
            if frame.stamp_ns < self._last_stamp:
                LOG.info('stamp went back by %.3f s: window reset',
                         (self._last_stamp - frame.stamp_ns) / 1e9)
                self.stats['reset_time_backwards'] += 1
                self.reset()
            elif frame.stamp_ns == self._last_stamp:
                self.stats['duplicate_stamp'] += 1
                return False
        return True

    def _fuse(self, frame: Frame, depth: Any, start: float) -> Occupancy4D:
        with _Stage(self, 'fusion'):
            self.fusion.integrate(frame.T_world_cam, frame.stamp_ns, depth, frame.camera)
            self._cached_slots.discard(self.fusion.head)
            self._forget_encodings(self.fusion.head)
            self.window.push(frame)
            self._camera = frame.camera
            self._last_stamp = int(frame.stamp_ns)
            self._scene_depth = _median_depth(depth) or self._scene_depth
        with _Stage(self, 'refiner'):
            slots = self._refine()
        with _Stage(self, 'output'):
            occ = Occupancy4D(self.fusion.grid, self.fusion.stamps_ns(),
                              self._prob[slots].reshape((len(slots),) + self.grid.dims),
                              self._obs[slots].reshape((len(slots),) + self.grid.dims),
                              self.config.output.occupancy_threshold)
        self.stats['processed'] += 1
        self.timings_ms['total'] = (time.perf_counter() - start) * 1e3
        return occ

    def _forget_encodings(self, slot: Optional[int] = None) -> None:
        """Drop what the refiner cached for ring ``slot`` (None: all)."""
        self.refiner.forget(slot)

    def _refine(self) -> List[int]:
        """Refresh the per-slot numpy caches; return the slots oldest first."""
        fusion = self.fusion
        slots = fusion.slot_order()
        if self._cache_generation != fusion.generation:
            self._cached_slots.clear()
            self._cache_generation = fusion.generation
            self._forget_encodings()
        todo = self.refiner.plan(slots, self._cached_slots)
        prob, ob = self.refiner.estimate(fusion, slots, todo)
        self._prob[todo] = prob.reshape(len(todo), -1).cpu().numpy()
        self._obs[todo] = ob.reshape(len(todo), -1).cpu().numpy()
        self._hold(slots, todo)
        self._cached_slots.update(todo)
        return slots

    def set_output(self, output: OutputConfig) -> None:
        """Use new output parameters (threshold, hysteresis) from the next frame on."""
        self.config = replace(self.config, output=output)

    def _hold(self, slots: List[int], todo: List[int]) -> None:
        """Hysteresis of the occupied state from each slice to the next (``occupancy_hysteresis``).

        For each new slot in window order, the previous slice's state (``p >= threshold``, its
        probabilities already held) sets the threshold per voxel: ``threshold - h`` where it
        was occupied, ``threshold + h`` where it was free, ``threshold`` where the previous slice
        had no estimate of the voxel (neither observed it nor gave it a probability above 0: the
        geometry's never-observed voxels; the network's estimates next to observed space count,
        it completes surfaces there). Probabilities on the wrong side of the threshold for the
        held state are clamped to it (just below it for free), so thresholding the published
        probabilities gives the held state. In ``newest`` mode this chains each newest slice to
        the one published before it; when the window is re-estimated the chain restarts from
        the oldest slice. Cost: a few vectorised passes over the grid per new slice.
        """
        h = self.config.output.occupancy_hysteresis
        if h <= 0:
            return
        thr = np.float32(self.config.output.occupancy_threshold)
        below = np.nextafter(thr, np.float32(0))
        new = set(todo)
        for prev, slot in zip(slots[:-1], slots[1:]):
            if slot not in new:
                continue
            p = self._prob[slot]
            was = self._prob[prev] >= thr
            level = np.where(was, thr - np.float32(h), thr + np.float32(h))
            level[~(self._obs[prev] | (self._prob[prev] > 0))] = thr
            now = p >= level
            np.copyto(p, np.where(now, np.maximum(p, thr), np.minimum(p, below)))


class _Stage:
    """Times a stage into ``timings_ms`` and wraps its exceptions in :class:`StageError`."""

    def __init__(self, pipeline: OccupancyPipeline, name: str):
        self.pipeline = pipeline
        self.name = name

    def __enter__(self) -> '_Stage':
        self.start = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.pipeline.timings_ms[self.name] = (time.perf_counter() - self.start) * 1e3
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, StageError):
            self.pipeline.stats['failed'] += 1
            raise StageError(self.name, exc) from exc
        return False


def _median_depth(depth: Any) -> Optional[float]:
    """Median of the valid depth (metres), or None."""
    if depth is None:
        return None
    d = depth.depth if hasattr(depth, 'depth') else depth
    d = torch.as_tensor(d)
    v = d[d > 0]
    if v.numel() < 16:
        return None
    return float(v.median())
