"""``l3rocc replay``: the node's pipeline on a recorded input, every frame, no drops.

Messages are converted exactly as the node converts them (:mod:`l3rocc_core.convert`,
:class:`~l3rocc_core.convert.FrameBuilder`), poses come from the same
:class:`~l3rocc_core.tf_tree.TransformBuffer` at the image stamp, and every frame goes through
``OccupancyPipeline(config).push(frame)``. Where the node would wait for TF (and drop after
``tf_timeout_s``), replay holds images back until the TF covering their stamp has been read
(back-pressure) and gives up on a frame only when its transform can no longer arrive: the bag
ended, TF is older than the cache, or TF has moved more than ``TF_HORIZON_S`` past its stamp.

Writes ``DIR/occupancy.npz`` (contract format, one row per processed frame, with
``visible_packed``), ``DIR/cameras.npz`` (each row's camera, :mod:`l3rocc_core.camera_log`) and
``DIR/timing.json``; all atomically, and none when the run fails.
With ``pose_source: visual_odometry`` the poses come from the images
(:class:`~l3rocc_core.poses.visual_odometry_source.VisualOdometrySource`, started from TF at
the first image when the bag has it) and ``DIR/trajectory.tum`` holds them.
``--rerun FILE.rrd`` also records every frame for the Rerun viewer
(:mod:`l3rocc_core.viewers.rerun_log`) and ``--mcap FILE.mcap`` writes the node's output
topics of every frame (:mod:`l3rocc_core.viewers.mcap_log`); both atomically, only on success.
"""

import argparse
from collections import deque
from dataclasses import dataclass, field
import json
import os
import sys
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from l3rocc_core import cli
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.camera_log import CameraLog, CAMERAS_FILE
from l3rocc_core.config import PipelineConfig, parse_set_arguments
from l3rocc_core.convert import (camera_from_info, compressed_to_rgb, ConversionError,
                                 depth_image_to_metres, FrameBuilder, image_to_rgb,
                                 pose_to_matrix, stamp_to_ns)
from l3rocc_core.occupancy import Occupancy4D, OccupancySequenceWriter
from l3rocc_core.pipeline import OccupancyPipeline, StageError
from l3rocc_core.poses.visual_odometry_source import VisualOdometrySource, write_tum_trajectory
from l3rocc_core.sources import (BagMessage, BagSource, RawFrame, SourceError, camera_factory,
                                 open_source)
from l3rocc_core.stream import DepthPairing, FrameDropped, PoseSelector, StampGate
from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable
from l3rocc_core.viewers import check_output_file, ViewerUnavailable
from l3rocc_core.viewers.rerun_log import import_rerun

HELP = "run the node's pipeline on a bag, video or image folder; write occupancy.npz"
TF_HORIZON_S = 2.0     # an image gives up on TF once TF has moved this far past its stamp
MAX_PENDING = 64       # images held back waiting for TF/CameraInfo (bag order problems)
OCCUPANCY_FILE = 'occupancy.npz'
TIMING_FILE = 'timing.json'
DEPTH_FILE = 'depth.npz'
TRAJECTORY_FILE = 'trajectory.tum'


class ReplayError(RuntimeError):
    """A replay that cannot produce a result; ``kind`` names the reason."""

    def __init__(self, kind: str, message: str):
        """Store the kind with the message."""
        super().__init__(message)
        self.kind = kind


@dataclass
class ReplayResult:
    """What a replay did.

    :param frames: frames processed (rows of occupancy.npz)
    :param frames_in: images read from the source
    :param skipped: frames not processed, by reason (diagnostics kinds)
    :param wall_s: whole run, loading included (seconds)
    :param stages_ms: median milliseconds per frame for each stage
    :param messages: one example message per skip reason
    """

    frames: int = 0
    frames_in: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    stages_ms: Dict[str, float] = field(default_factory=dict)
    messages: Dict[str, str] = field(default_factory=dict)
    ignored: Dict[str, int] = field(default_factory=dict)
    device: str = ''
    source: str = ''
    #: pose_source visual_odometry: how the world started (``vo_start*`` values)
    visual_odometry: Dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Return processed frames per wall-clock second."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def timing(self) -> Dict[str, Any]:
        """Return the content of ``timing.json``."""
        out = {'frames': self.frames, 'wall_s': round(self.wall_s, 4),
               'fps': round(self.fps, 4), 'stages_ms': self.stages_ms,
               'frames_in': self.frames_in, 'skipped': self.skipped,
               'skip_reasons': self.messages, 'ignored_messages': self.ignored,
               'device': self.device, 'source': self.source}
        if self.visual_odometry:
            out['visual_odometry'] = self.visual_odometry
        return out


class Replayer:
    """Feeds a source through the pipeline, frame by frame, as the node does.

    :param config: the pipeline configuration (``world_frame``, ``pose_source``, ...)
    :param pipeline: an object with ``push(frame)`` and ``timings_ms`` (default: a new
        ``OccupancyPipeline(config)``)
    :param intrinsics: replaces CameraInfo (``--intrinsics``), see
        :func:`l3rocc_core.sources.parse_intrinsics`
    :param max_frames: stop after this many processed frames
    :param save_depth: also keep every frame's depth estimate for ``depth.npz``
    :param viewers: recorders of every processed frame (:class:`ViewerOutputs`), or None
    """

    def __init__(self, config: PipelineConfig, pipeline: Any = None, intrinsics: Any = None,
                 max_frames: Optional[int] = None, save_depth: bool = False,
                 viewers: Optional['ViewerOutputs'] = None):
        """Prepare the conversion state (no pipeline work yet)."""
        self.config = config
        self.pipeline = pipeline if pipeline is not None else OccupancyPipeline(config)
        self.builder = FrameBuilder(config.camera)
        self.buffer = TransformBuffer(cache_time_s=max(10.0, 2 * TF_HORIZON_S))
        self.intrinsics = camera_factory(intrinsics)
        self.max_frames = max_frames
        self.world_frame = config.grid.world_frame
        self.pose_source = config.input.pose_source
        self.camera: Optional[PinholeCamera] = None
        self.writer: Optional[OccupancySequenceWriter] = None
        self.result = ReplayResult(device=str(getattr(self.pipeline, 'device', '')))
        self._pending: Deque[BagMessage] = deque()
        self._newest_tf_ns: Optional[int] = None
        self._stage_ms: Dict[str, List[float]] = {}
        self.poses = PoseSelector(config.input, self.world_frame)
        self.stamps = StampGate()
        self.depth = DepthPairing(MAX_PENDING) if config.depth.depth_source == 'topic' else None
        self._bar: Optional[tqdm] = None
        self.save_depth = save_depth
        self._depth_rows: List[Tuple[int, Optional[np.ndarray]]] = []
        self.cameras = CameraLog()
        self.vo = VisualOdometrySource(config) if self.pose_source == 'visual_odometry' else None
        self._source_has_tf = False
        self.viewers = viewers

    # ------------------------------------------------------------------ bookkeeping
    def _skip(self, kind: str, message: str) -> None:
        self.result.skipped[kind] = self.result.skipped.get(kind, 0) + 1
        self.result.messages.setdefault(kind, message)

    def _time(self, stage: str, ms: float) -> None:
        self._stage_ms.setdefault(stage, []).append(ms)

    @property
    def done(self) -> bool:
        """Whether ``max_frames`` frames were processed."""
        return self.max_frames is not None and self.result.frames >= self.max_frames

    # ------------------------------------------------------------------ running
    def run(self, source: Any, progress: bool = True) -> ReplayResult:
        """Process the whole source.

        :raises SourceError: unreadable input
        :raises ReplayError: kind 'no_frames' when no frame could be processed
        """
        self.result.source = source.describe()
        total = getattr(source, 'num_images', None) or getattr(source, 'num_frames', None)
        if self.max_frames is not None and total:
            total = min(total, self.max_frames)
        self._bar = tqdm(total=total or None, desc='replay', unit='frame',
                         disable=not progress, file=sys.stderr)
        try:
            if isinstance(source, BagSource):
                self._run_bag(source)
                for topic, n in source.bad_messages.items():
                    self.result.skipped['bad_message'] = (
                        self.result.skipped.get('bad_message', 0) + n)
                    self.result.messages.setdefault('bad_message', source.last_error or topic)
                self.result.ignored = dict(source.skipped)
            else:
                self._run_frames(source)
        finally:
            self._bar.close()
        self.result.stages_ms = {k: round(float(np.median(v)), 3)
                                 for k, v in self._stage_ms.items() if v}
        if self.vo is not None:
            self.result.visual_odometry = self.vo.start_summary()
        if self.result.frames == 0:
            reasons = '; '.join(f'{k} x{n}: {self.result.messages.get(k, "")}'
                                for k, n in self.result.skipped.items()) or 'no images'
            raise ReplayError('no_frames', f'no frame could be processed ({reasons})')
        return self.result

    def _run_bag(self, source: BagSource) -> None:
        roles = set(source.roles.values())
        self._source_has_tf = bool(roles & {'tf', 'tf_static'})
        needs_tf = self.pose_source == 'tf' or (self.pose_source == 'static'
                                                and self.poses.fixed_pose is None)
        if needs_tf and not roles & {'tf', 'tf_static'}:
            raise ReplayError('no_poses', f'{source.path} has no TFMessage topic '
                              f'({source.describe()}) while pose_source is tf: record /tf, '
                              'name it with --tf-topic, or --set pose_source=odometry, or '
                              'pose_source=static with camera_pose=[x,y,z,roll,pitch,yaw]')
        if self.pose_source == 'odometry' and 'odometry' not in roles:
            raise ReplayError('no_poses', f'{source.path} has no nav_msgs/Odometry topic while '
                              'pose_source is odometry (--odom-topic names it)')
        for ev in source:
            if self.done:
                return
            role = ev.role
            if role in ('image', 'compressed'):
                self.result.frames_in += 1
                self._pending.append(ev)
            elif role == 'camera_info':
                try:
                    self.camera = camera_from_info(ev.msg)
                except ConversionError as exc:
                    self._skip(exc.kind, str(exc))
            elif role in ('tf', 'tf_static'):
                self._add_tf(ev, role == 'tf_static')
            elif role == 'odometry':
                self._add_odometry(ev)
            elif role == 'depth' and self.depth is not None:
                self.depth.add(stamp_to_ns(ev.msg.header.stamp), ev)
            self._drain(final=False)
        self._drain(final=True)

    def _add_tf(self, ev: BagMessage, static: bool) -> None:
        try:
            self.buffer.add_tf_message(ev.msg, static=static)
        except (ConversionError, ValueError) as exc:
            self._skip('bad_tf', f'{ev.topic}: {exc}')
        if not static:
            for ts in ev.msg.transforms:
                s = stamp_to_ns(ts.header.stamp)
                self._newest_tf_ns = s if self._newest_tf_ns is None else max(
                    self._newest_tf_ns, s)

    def _add_odometry(self, ev: BagMessage) -> None:
        msg = ev.msg
        try:
            T = pose_to_matrix(msg.pose.pose)
            stamp = stamp_to_ns(msg.header.stamp)
            self.buffer.set_transform(msg.header.frame_id, msg.child_frame_id, stamp, T)
        except (ConversionError, ValueError) as exc:
            self._skip('bad_odometry', f'{ev.topic}: {exc}')
            return
        self.poses.add_odometry_child(msg.child_frame_id)
        self._newest_tf_ns = stamp if self._newest_tf_ns is None else max(self._newest_tf_ns,
                                                                          stamp)

    # ------------------------------------------------------------------ waiting images
    def _drain(self, final: bool) -> None:
        """Process the pending images whose pose and camera are known (in order)."""
        while self._pending and not self.done:
            ev = self._pending[0]
            stamp = stamp_to_ns(ev.msg.header.stamp)
            overflow = len(self._pending) > MAX_PENDING
            if self.intrinsics is None and self.camera is None:
                if not (final or overflow):
                    return
                self._pending.popleft()
                self._skip('no_camera_info', 'no CameraInfo before this image (give '
                           '--intrinsics or --camera-info-topic)')
                continue
            if (self.depth is not None and not self.depth.has(stamp)
                    and not (final or overflow)):
                return   # its depth image may come later in the bag
            T, error = self._pose(ev.msg.header.frame_id, stamp)
            if error is not None:
                horizon = (self._newest_tf_ns is not None
                           and self._newest_tf_ns > stamp + TF_HORIZON_S * 1e9)
                if error.future and not (final or overflow or horizon):
                    return
                if self.vo is None:
                    self._pending.popleft()
                    self._skip(error.kind, str(error))
                    continue
                T = None    # no TF at the first image: camera_pose or camera_height_m
            self._pending.popleft()
            self._process_message(ev, stamp, T)

    def _pose(self, frame_id: str, stamp: int):
        """Return (T_world_cam or None, TransformUnavailable or None) per ``pose_source``."""
        t0 = time.perf_counter()
        try:
            if self.vo is not None:     # only the first pose comes from TF (when there is TF)
                if self.vo.started or not self._source_has_tf:
                    return None, None
                return self.buffer.lookup(self.world_frame, frame_id, stamp), None
            return self.poses.pose(frame_id, stamp, self.buffer.lookup,
                                   self.buffer.has_frame), None
        except TransformUnavailable as exc:
            return None, exc
        finally:
            self._time('pose', (time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ frames
    def _process_message(self, ev: BagMessage, stamp: int, T: Optional[np.ndarray]) -> None:
        t0 = time.perf_counter()
        try:
            self._check_stamp(stamp)
            rgb = compressed_to_rgb(ev.msg) if ev.role == 'compressed' else image_to_rgb(ev.msg)
            camera = (self.intrinsics(rgb.shape[1], rgb.shape[0]) if self.intrinsics
                      else self.camera)
            depth = None
            if self.depth is not None:
                d = self.depth.take(stamp)
                if d is None:
                    raise FrameDropped('depth_missing', f'no depth image stamped '
                                       f'{stamp / 1e9:.6f} s (depth_source topic)')
                depth = depth_image_to_metres(d.msg)
            frame = self.builder.build(rgb, camera, stamp, T, str(ev.msg.header.frame_id),
                                       depth=depth)
        except (ConversionError, FrameDropped) as exc:
            self._skip(exc.kind, f'{ev.topic}: {exc}')
            return
        self._time('decode', (time.perf_counter() - t0) * 1e3)
        self._push(frame)

    def _run_frames(self, source: Any) -> None:
        has_poses = getattr(source, 'poses', None) is not None
        if not has_poses and self.pose_source == 'static' and self.poses.fixed_pose is None:
            raise ReplayError('no_poses', f'{source.describe()} has no poses and no TF: '
                              'pose_source static needs --set camera_pose=[x,y,z,roll,pitch,'
                              'yaw] (the camera in world_frame, metres and radians)')
        if not has_poses and self.pose_source in ('tf', 'odometry'):
            raise ReplayError('no_poses', f'{source.describe()} has no poses while pose_source '
                              f'is {self.pose_source!r}: give --poses FILE (TUM format) or '
                              '--set pose_source=static (fixed camera) or visual_odometry')
        for raw in source:
            if self.done:
                return
            self.result.frames_in += 1
            self._process_raw(raw)

    def _process_raw(self, raw: RawFrame) -> None:
        T = raw.T_world_cam
        if T is None and self.pose_source in ('tf', 'odometry'):
            self._skip('no_pose', f'frame {raw.index} at {raw.stamp_ns / 1e9:.6f} s lies '
                       'outside the poses file')
            return
        if T is None and self.pose_source == 'static':
            T = self.poses.fixed_pose
        t0 = time.perf_counter()
        try:   # (stamps of our own making: the message stamp rules do not apply)
            frame = self.builder.build(raw.rgb, raw.camera, raw.stamp_ns, T, raw.frame_id)
        except ConversionError as exc:
            self._skip(exc.kind, str(exc))
            return
        self._time('decode', (time.perf_counter() - t0) * 1e3)
        self._push(frame)

    def _check_stamp(self, stamp: int) -> None:
        """Apply the node's stamp rules (no clock: the next frame confirms a jump back).

        :raises FrameDropped: a stamp the node would drop
        """
        if self.stamps.check(stamp):
            self.result.skipped['time_jump_back'] = (
                self.result.skipped.get('time_jump_back', 0) + 1)
            self.pipeline.reset()
        self.stamps.accept(stamp)

    def _push(self, frame: Any) -> None:
        if self.vo is not None:
            frame = self._estimate_pose(frame)
            if frame is None:
                return
        try:
            occ = self.pipeline.push(frame)
        except StageError as exc:
            self._skip(exc.kind, f'frame at {frame.stamp_ns / 1e9:.6f} s: {exc}')
            return
        finally:
            for stage, ms in (getattr(self.pipeline, 'timings_ms', None) or {}).items():
                self._time(stage, float(ms))
        if occ is None:
            if frame.T_world_cam is None:
                self._skip('no_pose', 'the pipeline needs a pose for every frame')
            else:
                self._skip('duplicate_stamp', f'a second frame with stamp '
                           f'{frame.stamp_ns / 1e9:.6f} s')
            return
        self._add_row(occ)
        self.cameras.add(frame)
        depth = None
        if self.save_depth or self.viewers is not None:
            est = getattr(self.pipeline, 'last_depth', None)
            depth = None if est is None else est.depth.detach().cpu().numpy().astype(np.float32)
        if self.save_depth:
            self._depth_rows.append((int(frame.stamp_ns), depth))
        if self.viewers is not None:
            self.viewers.add(self.result.frames, frame, occ, depth)
        self.result.frames += 1
        self._bar.update(1)

    def _estimate_pose(self, frame: Any) -> Optional[Any]:
        """Visual odometry: ``frame`` with its estimated pose, or None (counted) without."""
        t0 = time.perf_counter()
        result = self.vo.estimate(frame)
        self._time('visual_odometry', (time.perf_counter() - t0) * 1e3)
        if result.state == 'lost':
            self.pipeline.reset()       # the next map starts afresh: so does the window
        posed = self.vo.posed(frame, result)
        if posed is None:
            self._skip(f'vo_{result.state}', f'visual odometry {result.state} at '
                       f'{frame.stamp_ns / 1e9:.6f} s: {result.message}')
        return posed

    def _add_row(self, occ: Occupancy4D) -> None:
        if self.writer is None:
            self.writer = OccupancySequenceWriter(occ.grid, occ.threshold, keep_visible=True)
        elif occ.grid != self.writer.grid:
            raise ReplayError('grid_changed', f'the grid moved ({self.writer.grid} -> '
                              f'{occ.grid}); occupancy.npz holds one grid: use grid_anchor '
                              'world for replay')
        self.writer.add_occupancy(occ)

    # ------------------------------------------------------------------ output
    def write(self, out_dir: str) -> None:
        """Write ``occupancy.npz`` and ``timing.json`` into ``out_dir`` (atomically)."""
        if self.writer is None:
            raise ReplayError('no_frames', 'nothing to write')
        os.makedirs(out_dir, exist_ok=True)
        self.writer.write(os.path.join(out_dir, OCCUPANCY_FILE))
        self.cameras.write(os.path.join(out_dir, CAMERAS_FILE))
        if self.save_depth:
            write_depth_file(os.path.join(out_dir, DEPTH_FILE), self._depth_rows)
        if self.vo is not None and self.vo.trajectory:
            write_tum_trajectory(os.path.join(out_dir, TRAJECTORY_FILE), self.vo.trajectory)
        write_json_atomic(os.path.join(out_dir, TIMING_FILE), self.result.timing())


def write_depth_file(path: str, rows: List[Tuple[int, Optional[np.ndarray]]]) -> None:
    """Write per-frame depth estimates as ``depth.npz`` (atomically).

    Keys: ``stamps`` int64 [N] ns, ``depth`` float32 [N, h, w] metres (0 = invalid or no
    estimate for that frame). Frames of another size than the most common one are zero.

    :param rows: (stamp_ns, depth [h, w] or None) per processed frame
    """
    shapes = [d.shape for _, d in rows if d is not None]
    shape = max(set(shapes), key=shapes.count) if shapes else (1, 1)
    depth = np.zeros((len(rows),) + tuple(shape), np.float32)
    for n, (_, d) in enumerate(rows):
        if d is not None and d.shape == shape:
            depth[n] = d
    tmp = path + '.partial'
    with open(tmp, 'wb') as f:
        np.savez_compressed(f, stamps=np.asarray([s for s, _ in rows], np.int64), depth=depth)
    os.replace(tmp, path)


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    """Write ``data`` as JSON under a temporary name, then rename it to ``path``."""
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write('\n')
    os.replace(tmp, path)


class ViewerOutputs:
    """The ``--rerun`` and ``--mcap`` recorders of a replay.

    :param config: the run's configuration (output threshold, markers, history)
    :param rerun: the ``.rrd`` file, or None
    :param mcap: the ``.mcap`` file, or None
    :param name: the recording's name in the viewer
    :raises ViewerUnavailable: rerun-sdk is missing; ``OSError``: a file cannot be written
    """

    def __init__(self, config: PipelineConfig, rerun: Optional[str] = None,
                 mcap: Optional[str] = None, name: str = ''):
        """Open the recorders (their files appear only on :meth:`close`)."""
        self.output = config.output
        self.rerun = self.mcap = None
        try:
            if rerun:
                from l3rocc_core.viewers.rerun_log import RerunRecorder
                self.rerun = RerunRecorder(rerun, name)
            if mcap:
                from l3rocc_core.viewers.mcap_log import OutputBagWriter
                self.mcap = OutputBagWriter(mcap, self.output.publish_history,
                                            markers=self.output.publish_markers)
        except BaseException:
            self.abort()
            raise

    def add(self, index: int, frame: Any, occ: Occupancy4D, depth: Optional[np.ndarray]) -> None:
        """Record one processed frame.

        :param index: the row of ``occupancy.npz``
        :param frame: the :class:`~l3rocc_core.frame.Frame` (picture, camera, pose)
        :param occ: the window after it
        :param depth: float32 [h, w] its depth estimate in metres, or None
        """
        if occ.threshold != self.output.occupancy_threshold:   # as the node publishes it
            occ = Occupancy4D(occ.grid, occ.stamps_ns, occ.prob, occ.observed,
                              self.output.occupancy_threshold)
        if self.rerun is not None:
            flat, prob = occ.occupied(-1)
            cam = frame.camera
            self.rerun.log(index, occ.newest_stamp_ns, occ.grid.flat_to_world(flat), prob,
                           occ.grid.voxel_size, frame.T_world_cam,
                           (cam.fx, cam.fy, cam.cx, cam.cy), (cam.width, cam.height),
                           frame.image, depth if depth is not None else frame.depth)
        if self.mcap is not None:
            self.mcap.add(occ, frame.T_world_cam, frame.frame_id, frame.camera, frame.image)

    def close(self) -> None:
        """Finish the files."""
        for rec in (self.rerun, self.mcap):
            if rec is not None:
                rec.close()

    def abort(self) -> None:
        """Drop the partial files."""
        for rec in (self.rerun, self.mcap):
            if rec is not None:
                rec.abort()


def load_config(params_file: Optional[str], sets: Optional[List[str]]) -> PipelineConfig:
    """Build the PipelineConfig from a ROS 2 parameter file and ``name=value`` overrides.

    :raises ValueError: unknown names, bad values (nothing applied)
    """
    config = PipelineConfig.from_yaml(params_file) if params_file else PipelineConfig()
    if sets:
        config = config.with_values(parse_set_arguments(sets))
    return config


def replay(source_path: str, out_dir: str, config: PipelineConfig,
           max_frames: Optional[int] = None, progress: bool = True, pipeline: Any = None,
           intrinsics: Any = None, save_depth: bool = False, rerun: Optional[str] = None,
           mcap: Optional[str] = None, recording_name: Optional[str] = None,
           **source_options: Any) -> ReplayResult:
    """Replay ``source_path`` into ``out_dir`` (the ``l3rocc replay`` job as a function).

    Stale ``occupancy.npz``/``timing.json`` in ``out_dir`` are removed first, so a failed run
    never leaves results that look like its own.

    :param save_depth: also write ``depth.npz`` (see :func:`write_depth_file`)
    :param rerun: also write this Rerun recording (``.rrd``)
    :param mcap: also write the node's outputs to this ROS 2 MCAP (``.mcap``)
    :param recording_name: the Rerun recording's name in the viewer (default: the source's file
        or folder name)
    :param source_options: passed to :func:`l3rocc_core.sources.open_source`
    :raises SourceError: unreadable input
    :raises ReplayError: nothing processed, grid changes
    :raises ViewerUnavailable: ``rerun`` without rerun-sdk
    """
    t0 = time.perf_counter()
    for name in (OCCUPANCY_FILE, TIMING_FILE, DEPTH_FILE, CAMERAS_FILE, TRAJECTORY_FILE):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
    if pipeline is None:
        pipeline = _make_pipeline(config)
    transport = source_options.pop('image_transport', config.input.image_transport)
    source = open_source(source_path, intrinsics=intrinsics, image_transport=transport,
                         want_depth=config.depth.depth_source == 'topic', **source_options)
    viewers = None
    try:
        try:
            if rerun or mcap:
                viewers = ViewerOutputs(config, rerun, mcap, recording_name
                                        or os.path.basename(str(source_path)))
            rep = Replayer(config, pipeline, intrinsics, max_frames, save_depth, viewers)
            result = rep.run(source, progress)
        finally:
            source.close()
        result.wall_s = time.perf_counter() - t0
        rep.write(out_dir)
        if viewers is not None:
            viewers.close()
    except BaseException:
        if viewers is not None:
            viewers.abort()
        raise
    return result


def _make_pipeline(config: PipelineConfig) -> OccupancyPipeline:
    """Build the pipeline; an unusable refiner checkpoint fails, or falls back when asked.

    :raises ReplayError: ``bad_config``, or the checkpoint's kind (``checkpoint_missing``,
        ``checkpoint_corrupt``, ``checkpoint_unsafe``, ``checkpoint_incompatible``)
    """
    from l3rocc_core.refiner.checkpoint import CheckpointError
    try:
        return OccupancyPipeline(config)
    except ValueError as exc:
        raise ReplayError('bad_config', f'the pipeline refuses this configuration: {exc}')
    except CheckpointError as exc:
        if not config.refiner.refiner_fallback:
            raise ReplayError(exc.kind, f'{exc}; set refiner_fallback=true to run geometry '
                              'only instead, or refiner=none')
        print(f'l3rocc replay: refiner_fallback: geometry only, the refiner checkpoint cannot be '
              f'used ({exc.kind}: {exc})', file=sys.stderr)
        return OccupancyPipeline(config.with_values({'refiner': 'none'}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the tool's arguments."""
    parser.add_argument('source', metavar='SOURCE',
                        help='rosbag2 directory, .mcap or .db3 file, video file, or image folder')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder for occupancy.npz and timing.json')
    parser.add_argument('--params-file', metavar='YAML',
                        help='ROS 2 parameter file (as config/l3rocc.yaml)')
    parser.add_argument('--set', nargs='+', action='extend', default=[], metavar='NAME=VALUE',
                        help='parameter overrides with YAML values, e.g. '
                        '--set world_frame=world grid_min=[-2.0,-2.0,-0.05]')
    parser.add_argument('--intrinsics', metavar='SPEC',
                        help='camera for videos/images (or replacing CameraInfo): '
                        'fx,fy,cx,cy[,k1,k2,p1,p2[,k3]], fov=DEG (horizontal), or a calibration '
                        'YAML')
    parser.add_argument('--poses', metavar='FILE',
                        help='TUM trajectory (timestamp tx ty tz qx qy qz qw, camera to world) '
                        'for videos/images')
    parser.add_argument('--fps', type=float, help='frame rate of a video/image folder without '
                        "stamps (default: the container's, or 30)")
    parser.add_argument('--image-topic', help='bag image topic (default: auto)')
    parser.add_argument('--camera-info-topic', help='bag CameraInfo topic (default: auto)')
    parser.add_argument('--odom-topic', help='bag nav_msgs/Odometry topic (default: auto)')
    parser.add_argument('--depth-topic', help='bag registered depth Image topic, read with '
                        "--set depth_source=topic (default: the Image topic named like 'depth')")
    parser.add_argument('--tf-topic', default='/tf', help='default: %(default)s')
    parser.add_argument('--tf-static-topic', default='/tf_static', help='default: %(default)s')
    parser.add_argument('--frame-id', default='camera',
                        help='frame name of video/image frames (default: %(default)s)')
    parser.add_argument('--max-frames', type=int, metavar='N',
                        help='stop after N processed frames')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--save-depth', action='store_true',
                        help="also write depth.npz: every frame's estimated depth (for render)")
    parser.add_argument('--rerun', metavar='FILE.rrd',
                        help='also write a Rerun recording: picture, depth, occupied voxels, '
                        'camera and trajectory of every frame (open with: rerun FILE.rrd)')
    parser.add_argument('--mcap', metavar='FILE.mcap',
                        help="also write the node's output topics of every frame (points, "
                        'markers, /tf, picture, CameraInfo) as a ROS 2 MCAP for Foxglove or RViz')


def run(args: argparse.Namespace) -> int:
    """Run the replay; return the exit status (0 ok, 1 failed run, 2 bad arguments)."""
    try:
        config = load_config(args.params_file, args.set)
    except (OSError, ValueError) as exc:
        print(f'l3rocc replay: bad parameters: {exc}', file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print('l3rocc replay: --max-frames must be >= 1', file=sys.stderr)
        return 2
    try:   # before the run: a long replay must not end in an unwritable file
        for path, suffix in ((args.rerun, '.rrd'), (args.mcap, '.mcap')):
            if path:
                check_output_file(path, suffix)
        if args.rerun:
            import_rerun()
    except (OSError, ValueError, ViewerUnavailable) as exc:
        cli.report_error('replay', exc)
        return 2
    try:
        result = replay(args.source, args.out, config, args.max_frames, not args.no_progress,
                        intrinsics=args.intrinsics, poses=args.poses, fps=args.fps,
                        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                        odom_topic=args.odom_topic, depth_topic=args.depth_topic,
                        tf_topic=args.tf_topic,
                        tf_static_topic=args.tf_static_topic, frame_id=args.frame_id,
                        save_depth=args.save_depth, rerun=args.rerun, mcap=args.mcap)
    except (SourceError, ReplayError, OSError) as exc:
        cli.report_error('replay', exc)
        return 1
    except KeyboardInterrupt:
        print('l3rocc replay: interrupted; nothing written', file=sys.stderr)
        return 130
    print(f'replay: {result.frames} frames in {result.wall_s:.2f} s ({result.fps:.2f} fps) -> '
          f'{os.path.join(args.out, OCCUPANCY_FILE)}')
    for path in (args.rerun, args.mcap):
        if path:
            print(f'replay: wrote {path}')
    if result.skipped:
        print('skipped: ' + ', '.join(f'{k} x{n}' for k, n in result.skipped.items()),
              file=sys.stderr)
        for kind, msg in result.messages.items():
            print(f'  {kind}: {msg}', file=sys.stderr)
    stages = ', '.join(f'{k} {v:.1f}' for k, v in result.stages_ms.items())
    print(f'median ms per frame: {stages}')
    return 0
