"""The l3rocc streaming node: camera images + poses in, 4D occupancy out.

Threading: input callbacks only store messages (images go into a bounded queue where the latest
wins) and wake the worker, a thread of the node's own (not an executor callback), which turns
queued images into frames (``l3rocc_core.convert``), looks up their poses, pushes them through
``l3rocc_core.pipeline.OccupancyPipeline`` and publishes. Every executor callback is short, so
one executor thread serves inputs, parameters and diagnostics while the worker computes
(:func:`main` spins a SingleThreadedExecutor; a MultiThreadedExecutor works too, but rclpy's
loops while a ready callback waits for its busy callback group, which on two busy cores costs
CPU and the GIL the worker needs; docs/experiments.md tells how the worker as an executor
callback made the node 3x slower). Every failure is counted by kind in ``/diagnostics``, logged
at most once per few seconds per kind, and costs only the frame it concerns.
"""

from collections import deque
from dataclasses import replace
import gc
import logging
import threading
import time
from typing import Any, Deque, Dict, Optional, Tuple

from l3rocc_core.config import PipelineConfig
from l3rocc_core.convert import (camera_from_info, ConversionError, depth_image_to_metres,
                                 FrameBuilder, stamp_to_ns)
from l3rocc_core.frame import Frame
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.poses.visual_odometry_source import VisualOdometrySource
from l3rocc_core.stream import DepthPairing, FrameDropped, PoseSelector, StampGate
from l3rocc_core.tf_tree import TransformUnavailable
from l3rocc_ros.diagnostics import NodeStats, diagnostic_array
from l3rocc_ros.logs import RateLimitedLog, RosLogHandler
from l3rocc_ros.memwatch import release_free_memory
from l3rocc_ros.messages import image_msg_to_rgb, transform_stamped
from l3rocc_ros.params import NodeParameters, changed_stages
from l3rocc_ros.publishing import OutputPublishers
from l3rocc_ros.recovery import forget_traceback, is_cuda_oom
from l3rocc_ros.tf_buffer import make_pose_lookup, PoseLookup
from nav_msgs.msg import Odometry
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import (HistoryPolicy, QoSProfile, qos_profile_sensor_data, ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

# Stages whose change needs a new pipeline (the window restarts); output/input apply at once.
PIPELINE_STAGES = ('camera', 'window', 'depth', 'grid', 'fusion', 'refiner')
STOP_BUDGET_S = 1.5  # shutdown waits this long for the frame in hand, then leaves it
WORKER_POLL_S = 0.25  # the worker thread checks for a stop request at least this often
MALLOC_TRIM_PERIOD_S = 10.0  # the worker gives the heap's free pages back this often


class FrameQueue:
    """Bounded FIFO of (message, receive time); when full the oldest entry is dropped."""

    def __init__(self, size: int):
        """Hold at most ``size`` entries."""
        self._q: Deque[Tuple[Any, float]] = deque(maxlen=max(1, int(size)))
        self._lock = threading.Lock()

    def put(self, msg: Any, received: float) -> int:
        """Append; return how many older entries were dropped to make room (0 or 1)."""
        with self._lock:
            dropped = int(len(self._q) == self._q.maxlen)
            self._q.append((msg, received))
            return dropped

    def pop(self) -> Optional[Tuple[Any, float]]:
        """Oldest entry, or None when empty."""
        with self._lock:
            return self._q.popleft() if self._q else None

    def __len__(self) -> int:
        """Entries waiting."""
        with self._lock:
            return len(self._q)


class L3roccNode(Node):
    """Monocular camera to 4D occupancy (see the contract for topics and parameters).

    :param node_name: default ``'l3rocc'``, so outputs are ``/l3rocc/points`` etc.
    :param kwargs: passed to ``rclpy.node.Node`` (``context``, ``parameter_overrides``, ...)
    :raises ValueError: invalid start-up parameters, or a pipeline that cannot be built
    """

    def __init__(self, node_name: str = 'l3rocc', **kwargs: Any):
        """Declare parameters, build the pipeline, create publishers and subscriptions."""
        super().__init__(node_name, **kwargs)
        self._core_log = RosLogHandler(self.get_logger())
        try:
            self._setup()
        except BaseException:
            # a node that cannot start leaves nothing behind: no handler, no rcl node
            logging.getLogger('l3rocc_core').removeHandler(self._core_log)
            Node.destroy_node(self)
            raise

    def _setup(self) -> None:
        """Set the node up, in the order data flows; each step is one method below."""
        self._init_state()
        self._init_logging()
        self._params = NodeParameters(self, on_change=self._on_config_change,
                                      on_reject=self._on_parameters_rejected)
        cfg = self._params.config
        self._log.period_s = cfg.output.log_period_s
        self._pipeline = self._make_pipeline(cfg)
        self._init_stream(cfg)
        self._outputs = OutputPublishers(self, self._qos_events)
        self._subscribe_camera(cfg)
        self._subscribe_depth(cfg)
        self._subscribe_poses(cfg)
        self._diag_timer = self.create_timer(1.0, self.publish_diagnostics,
                                             callback_group=self._diag_group,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._start_worker()
        # last: the line that says the node is up (scripts and tests wait for it)
        self.get_logger().info(
            f'l3rocc: {self.image_topic} + {self.camera_info_topic} -> '
            f'{self.pub_points.topic_name}, {self.pub_markers.topic_name}, '
            f'{self.pub_occupancy.topic_name}; poses: {cfg.input.pose_source} in '
            f'{cfg.grid.world_frame!r}; depth: {cfg.depth.depth_source}; device '
            f'{self._pipeline.device}, refiner {self._refiner_name()}')

    def _init_state(self) -> None:
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._rebuild = False
        self._device_override: Optional[str] = None
        self._degraded: Dict[str, str] = {}
        self.stats = NodeStats()
        self._last_occ: Optional[Occupancy4D] = None
        self._next_trim = time.monotonic() + MALLOC_TRIM_PERIOD_S
        self._trim_ms: Optional[float] = None
        #: Stage timings of the last completed frame (the pipeline's own dict is rewritten
        #: while a frame is being processed, so diagnostics read this copy).
        self._stage_ms: Dict[str, float] = {}
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()

    def _init_logging(self) -> None:
        self._log = RateLimitedLog(self.get_logger())
        core_logger = logging.getLogger('l3rocc_core')
        if core_logger.level == logging.NOTSET:
            core_logger.setLevel(logging.INFO)
        core_logger.addHandler(self._core_log)

    def _init_stream(self, cfg: PipelineConfig) -> None:
        """Set up the stream front-end: frame building, stamp rules, pose selection."""
        self._builder = FrameBuilder(cfg.camera)
        self._queue = FrameQueue(cfg.input.queue_size)
        self._camera_info: Optional[CameraInfo] = None
        self._camera_info_used: Optional[CameraInfo] = None
        self._camera = None
        self._last_frame_camera = None
        self._stamps = StampGate()
        self._pose_selector = PoseSelector(cfg.input, cfg.grid.world_frame)
        self._vo = (VisualOdometrySource(cfg) if cfg.input.pose_source == 'visual_odometry'
                    else None)
        self._tf_pub = (self.create_publisher(TFMessage, '/tf', 100)
                        if self._vo is not None and cfg.vo.vo_publish_tf else None)

    def _subscribe_camera(self, cfg: PipelineConfig) -> None:
        qos = self._input_qos(cfg)
        if cfg.input.image_transport == 'compressed':
            self.sub_image = self.create_subscription(
                CompressedImage, 'image/compressed', self._on_image, qos,
                callback_group=self._input_group,
                event_callbacks=self._qos_events('image/compressed'))
        else:
            self.sub_image = self.create_subscription(
                Image, 'image', self._on_image, qos, callback_group=self._input_group,
                event_callbacks=self._qos_events('image'))
        self.sub_camera_info = self.create_subscription(
            CameraInfo, 'camera_info', self._on_camera_info, qos,
            callback_group=self._input_group, event_callbacks=self._qos_events('camera_info'))
        self.image_topic = self.sub_image.topic_name
        self.camera_info_topic = self.sub_camera_info.topic_name

    def _subscribe_depth(self, cfg: PipelineConfig) -> None:
        """``depth_source: topic``: registered depth images, paired with images by stamp."""
        self._depth_pairing: Optional[DepthPairing] = None
        self.sub_depth = None
        if cfg.depth.depth_source == 'topic':
            self._depth_pairing = DepthPairing()
            self._depth_unpaired_seen = 0
            self.sub_depth = self.create_subscription(
                Image, 'depth', self._on_depth, self._input_qos(cfg),
                callback_group=self._input_group, event_callbacks=self._qos_events('depth'))

    def _subscribe_poses(self, cfg: PipelineConfig) -> None:
        """TF (tf, static) or odometry; nothing for poses estimated from the images."""
        self._poses: Optional[PoseLookup] = None
        self.sub_odometry = None
        if cfg.input.pose_source in ('tf', 'odometry', 'static', 'visual_odometry'):
            # (visual odometry: TF at the first image, when there is one, anchors the world)
            self._poses = make_pose_lookup(
                self, subscribe_dynamic=cfg.input.pose_source != 'odometry',
                callback_group=self._input_group, on_error=self._input_error)
            self._poses.max_future_ns = int(cfg.input.max_future_stamp_s * 1e9)
        if cfg.input.pose_source == 'odometry':
            self.sub_odometry = self.create_subscription(
                Odometry, 'odometry', self._on_odometry,
                QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT),
                callback_group=self._input_group)

    def _start_worker(self) -> None:
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._work, name='l3rocc_worker', daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------- set-up helpers
    @property
    def pub_occupancy(self) -> Any:
        """The ``~/occupancy`` publisher."""
        return self._outputs.occupancy

    @property
    def pub_points(self) -> Any:
        """The ``~/points`` publisher."""
        return self._outputs.points

    @property
    def pub_markers(self) -> Any:
        """The ``~/markers`` publisher."""
        return self._outputs.markers

    @property
    def pub_diagnostics(self) -> Any:
        """The ``/diagnostics`` publisher."""
        return self._outputs.diagnostics

    @property
    def config(self) -> PipelineConfig:
        """The configuration in force."""
        return self._params.config

    @property
    def pipeline(self) -> Any:
        """The ``OccupancyPipeline`` in use (replaced on a rebuild or a CUDA OOM fallback)."""
        return self._pipeline

    @property
    def degraded(self) -> Dict[str, str]:
        """Why the node runs degraded, by cause ('refiner', 'device'); empty when it does not."""
        return dict(self._degraded)

    def _make_pipeline(self, cfg: PipelineConfig) -> Any:
        """Build the pipeline of ``cfg`` (on the CPU after a CUDA OOM).

        A refiner checkpoint that cannot be used is an error, unless ``refiner_fallback`` asks
        for geometry only; then the checkpoint's kind is counted and the node reports itself
        degraded.

        :raises ValueError: the pipeline cannot be built (the message says why)
        """
        from l3rocc_core.pipeline import OccupancyPipeline
        from l3rocc_core.refiner.checkpoint import CheckpointError
        if self._device_override is not None:
            # (after a CUDA OOM: no compiling on the CPU, where it gains nothing)
            cfg = cfg.with_values({'device': self._device_override, 'network_compile': False})
        try:
            pipeline = OccupancyPipeline(cfg)
        except CheckpointError as exc:
            if not cfg.refiner.refiner_fallback:
                raise ValueError(f'cannot use the refiner checkpoint ({exc.kind}): {exc}; set '
                                 'refiner_fallback: true to run geometry only instead, or '
                                 'refiner: none') from exc
            reason = f'geometry only, the refiner checkpoint cannot be used ({exc.kind}: {exc})'
            self.stats.error(exc.kind, str(exc), dropped=False)
            self.get_logger().error(f'refiner_fallback: {reason}')
            try:
                pipeline = OccupancyPipeline(cfg.with_values({'refiner': 'none'}))
            except (ValueError, OSError, RuntimeError) as exc2:
                raise ValueError(f'cannot build the occupancy pipeline: {exc2}') from exc2
            self._degraded['refiner'] = reason
            return pipeline
        except (ValueError, OSError, RuntimeError) as exc:
            raise ValueError(f'cannot build the occupancy pipeline: {exc}') from exc
        self._degraded.pop('refiner', None)
        return pipeline

    def _refiner_name(self) -> str:
        return str(getattr(self._pipeline, 'refiner_name', self.config.refiner.refiner))

    @staticmethod
    def _input_qos(cfg: PipelineConfig) -> QoSProfile:
        if cfg.input.input_qos == 'reliable':
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                              reliability=ReliabilityPolicy.RELIABLE)
        return qos_profile_sensor_data

    def _qos_events(self, topic: str, publisher: bool = False) -> Any:
        """Event callbacks reporting QoS incompatible with the peers of ``topic``."""
        def on_event(event: Any) -> None:
            self._on_incompatible_qos(topic, event, publisher)
        if publisher:
            return PublisherEventCallbacks(incompatible_qos=on_event)
        return SubscriptionEventCallbacks(incompatible_qos=on_event)

    def _on_config_change(self, old: PipelineConfig, new: PipelineConfig) -> None:
        self._log.set_period(new.output.log_period_s)
        if self._poses is not None:
            self._poses.max_future_ns = int(new.input.max_future_stamp_s * 1e9)
        if set(changed_stages(old, new)) & set(PIPELINE_STAGES):
            self._rebuild = True  # the worker rebuilds before its next frame

    def _on_parameters_rejected(self, reason: str) -> None:
        self.stats.error('param_rejected', reason, dropped=False)
        self._log.log('param_rejected', f'parameter change rejected, nothing applied: {reason}')

    # ------------------------------------------------------------------------ input callbacks
    def _on_image(self, msg: Any) -> None:
        self.stats.received()
        dropped = self._queue.put(msg, time.monotonic())
        if dropped:
            self.stats.dropped_queue_full(dropped)
        self._wake.set()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_depth(self, msg: Image) -> None:
        self._depth_pairing.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_odometry(self, msg: Odometry) -> None:
        self._poses.add_odometry(msg, self.config.grid.world_frame)
        self._pose_selector.add_odometry_child(msg.child_frame_id)

    def _on_incompatible_qos(self, topic: str, event: Any, publisher: bool) -> None:
        name = self.resolve_topic_name(topic)
        policy = getattr(event.last_policy_kind, 'name', str(event.last_policy_kind))
        if publisher:
            text = (f'{name}: a subscriber requests QoS this output does not offer (policy '
                    f'{policy}; the node publishes reliable, volatile); it receives nothing')
        else:
            text = (f'{name}: a publisher offers QoS incompatible with input_qos '
                    f'{self.config.input.input_qos!r} (policy {policy}); its messages are not '
                    'received')
        self.stats.error('qos_incompatible', text, dropped=False)
        self._log.log(f'qos_incompatible {name}', text)

    def _input_error(self, kind: str, topic: str, message: str) -> None:
        if not topic.startswith('/'):
            topic = self.resolve_topic_name(topic)
        self.stats.error(kind, message, dropped=False)
        self._log.log(kind, f'{topic}: {message}')

    # --------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        """Body of the worker thread: wait for images, process them, until :meth:`stop`.

        It also ends when the node's ROS context is shut down without the node being destroyed
        (an in-process user that only calls ``rclpy.shutdown``).
        """
        while not self._stopping and self.context.ok():
            self._wake.wait(WORKER_POLL_S)
            self._wake.clear()   # before draining: an image queued from now on wakes it again
            try:
                self._drain()
            except Exception as exc:  # noqa: B902 - the worker thread must survive anything
                self.stats.error('internal_error', f'{type(exc).__name__}: {exc}')
                self._log.log('internal_error', f'worker: unexpected {type(exc).__name__}: '
                              f'{exc}', 'error')

    def _drain(self) -> None:
        """Process queued frames until the queue is empty (in the worker thread)."""
        while not self._stopping:
            item = self._queue.pop()
            if item is None:
                return
            self._idle.clear()
            if self._stopping:   # stop() came between the check above and now: leave it
                self._idle.set()
                return
            try:
                self._process(*item)
            except Exception as exc:  # noqa: B902 - one bad frame must not stop the worker
                self.stats.error('internal_error', f'{type(exc).__name__}: {exc}')
                self._log.log('internal_error', f'{self.image_topic}: frame dropped after an '
                              f'unexpected {type(exc).__name__}: {exc}', 'error')
            finally:
                self._idle.set()
            self._trim_heap()

    def _trim_heap(self) -> None:
        """Every ``MALLOC_TRIM_PERIOD_S``, between frames: return the heap's free pages.

        Without it the RSS grew by ~170 MB over the first minutes of a soak while the memory in
        use stayed flat (glibc's per-thread arenas keep what is freed in them).
        """
        now = time.monotonic()
        if now < self._next_trim or self._stopping:
            return
        self._next_trim = now + MALLOC_TRIM_PERIOD_S
        start = time.perf_counter()
        if release_free_memory():
            self._trim_ms = (time.perf_counter() - start) * 1e3

    def _process(self, msg: Any, received: float) -> None:
        cfg = self.config
        if self._rebuild:
            self._rebuild_pipeline(cfg)
        if self._pipeline.config.output != cfg.output:
            self._pipeline.set_output(cfg.output)  # threshold, hysteresis: no rebuild needed
        try:
            frame = self._make_frame(msg, received, cfg)
        except (ConversionError, TransformUnavailable, FrameDropped) as exc:
            self._drop(exc.kind, str(exc))
            return
        if frame is None:
            return
        oom: Optional[BaseException] = None
        try:
            occ = self._pipeline.push(frame)
        except Exception as exc:  # noqa: B902 - the stage boundary: count, log, keep running
            if not is_cuda_oom(exc):
                # a stage error that names its cause (a depth source's input) is counted by it
                kind = getattr(getattr(exc, 'error', None), 'kind', None) or 'pipeline_error'
                self._drop(kind, f'{type(exc).__name__}: {exc}')
                return
            oom, occ = exc, None
        if oom is not None:
            # outside the except block: the exception being handled would keep the failed
            # stage's frames, and with them its device tensors, alive during the recovery
            occ = self._recover_from_oom(frame, oom, cfg)
            if occ is None:
                return
        self.stats.processed()
        self._stage_ms = dict(getattr(self._pipeline, 'timings_ms', {}) or {})
        if occ is None or self._stopping:
            return
        self._last_occ = occ
        try:
            self._publish(occ, cfg)
        except Exception as exc:  # noqa: B902 - a failing output must not stop the node
            self.stats.error('publish_error', f'{type(exc).__name__}: {exc}', dropped=False)
            self._log.log('publish_error', f'publishing failed: {type(exc).__name__}: {exc}',
                          'error')

    def _recover_from_oom(self, frame: Frame, exc: BaseException, cfg: PipelineConfig
                          ) -> Optional[Occupancy4D]:
        """CUDA ran out of memory: free it, rebuild the pipeline on the CPU, retry the frame.

        The window restarts (its buffers lived on the GPU). The node stays on the CPU until it
        is restarted, and says so in /diagnostics.

        :return: the retried frame's result, or None when the retry failed too (counted)
        """
        forget_traceback(exc)   # its frames hold the failed stage's tensors
        self.stats.error('cuda_oom', f'{type(exc).__name__}: {exc}', dropped=False)
        first = 'device' not in self._degraded
        self._device_override = 'cpu'
        try:
            cpu_pipeline = self._make_pipeline(cfg)
        except ValueError as exc2:
            self._drop('pipeline_error', f'CUDA out of memory and no CPU pipeline either: {exc2}')
            return None
        old, self._pipeline = self._pipeline, cpu_pipeline
        del old
        self._free_device_memory()
        self._degraded['device'] = 'running on the CPU since CUDA ran out of memory'
        text = (f'{self.image_topic}: CUDA out of memory ({str(exc).splitlines()[0][:200]}); '
                'GPU memory freed, pipeline rebuilt on the CPU (window restarted), frame '
                'retried; the node stays on the CPU until restarted')
        if first:
            self.get_logger().warning(text)
        else:
            self._log.log('cuda_oom', text)
        try:
            return self._pipeline.push(frame)
        except Exception as exc2:  # noqa: B902 - the stage boundary, as in _process
            self._drop('pipeline_error', f'{type(exc2).__name__}: {exc2}')
            return None

    def _free_device_memory(self) -> None:
        """Collect unreachable tensors, then give the CUDA caching allocator's blocks back."""
        gc.collect()
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _drop(self, kind: str, message: str) -> None:
        self.stats.error(kind, message)
        topic = self.camera_info_topic if kind == 'bad_camera_info' else self.image_topic
        self._log.log(kind, f'{topic}: frame dropped ({kind}): {message}',
                      'error' if kind in ('pipeline_error', 'cuda_oom') else 'warning')

    def _rebuild_pipeline(self, cfg: PipelineConfig) -> None:
        self._rebuild = False
        try:
            self._pipeline = self._make_pipeline(cfg)
        except ValueError as exc:
            self.stats.error('pipeline_error', str(exc), dropped=False)
            self.get_logger().error(f'{exc}; keeping the previous pipeline')
            return
        self._builder = FrameBuilder(cfg.camera)
        self._last_frame_camera = None
        self.get_logger().info('pipeline rebuilt with the new parameters (window restarted)')

    def _make_frame(self, msg: Any, received: float, cfg: PipelineConfig) -> Optional[Frame]:
        """Frame of an image message, or None while camera_info is missing.

        :raises ConversionError: bad image or camera_info
        :raises TransformUnavailable: no pose within ``tf_timeout_s``
        :raises FrameDropped: bad or out-of-order stamp
        """
        info = self._camera_info
        if info is None:
            self.stats.error('no_camera_info', 'no camera_info yet')
            self.get_logger().warning(
                f'waiting for camera_info on {self.camera_info_topic} (images on '
                f'{self.image_topic} are dropped until it arrives)', throttle_duration_sec=5.0)
            return None
        if info is not self._camera_info_used:
            self._camera = camera_from_info(info)
            self._camera_info_used = info
        rgb = image_msg_to_rgb(msg)
        stamp_ns = self._check_stamp(stamp_to_ns(msg.header.stamp), cfg)
        frame_id = msg.header.frame_id or info.header.frame_id
        if info.header.frame_id and frame_id != info.header.frame_id:
            self.stats.error('frame_id_mismatch', 'image and camera_info frames differ',
                             dropped=False)
            self._log.log('frame_id_mismatch',
                          f'{self.image_topic}: image frame_id {frame_id!r} differs from '
                          f'camera_info frame_id {info.header.frame_id!r}; using the image frame')
        if not frame_id:
            raise FrameDropped('no_frame_id', 'image and camera_info have an empty frame_id')
        T_world_cam = self._pose(frame_id, stamp_ns, received, cfg)
        depth = self._paired_depth(stamp_ns, received, cfg)
        frame = self._builder.build(rgb, self._camera, stamp_ns, T_world_cam, frame_id,
                                    depth=depth)
        if self._last_frame_camera is not None and frame.camera != self._last_frame_camera:
            # the pipeline restarts its window itself on a new camera model
            text = (f'{self.camera_info_topic}: camera model changed '
                    f'({self._last_frame_camera.width}x{self._last_frame_camera.height} -> '
                    f'{frame.camera.width}x{frame.camera.height} at working resolution); '
                    'window restarted')
            self.stats.error('camera_changed', text, dropped=False)
            self._log.log('camera_changed', text)
        self._last_frame_camera = frame.camera
        self._stamps.accept(stamp_ns)
        if self._vo is not None:
            frame = self._visual_odometry(frame, cfg)
        return frame

    def _visual_odometry(self, frame: Frame, cfg: PipelineConfig) -> Frame:
        """``pose_source: visual_odometry``: ``frame`` with its pose estimated from the images.

        The first pose is TF at the first image when there is one (else ``camera_pose``, else
        ``camera_height_m`` above the ground with the pitch and roll the first map measures);
        a lost track restarts the window. The estimate is
        published on /tf (``vo_publish_tf``).

        :raises FrameDropped: no pose yet or tracking lost (``vo_initializing``, ``vo_lost``)
        """
        world = cfg.grid.world_frame
        if not self._vo.started and self._poses is not None:
            start = self._vo.tf_start_pose(self._poses.lookup, world, frame.frame_id,
                                           frame.stamp_ns)
            frame = replace(frame, T_world_cam=start)
        result = self._vo.estimate(frame)
        if result.state == 'lost':
            self._pipeline.reset()    # the next map starts afresh: so does the window
        posed = self._vo.posed(frame, result)
        if posed is None:
            raise FrameDropped(f'vo_{result.state}', f'visual odometry {result.state}: '
                               f'{result.message}')
        if self._tf_pub is not None:
            self._tf_pub.publish(TFMessage(transforms=[transform_stamped(
                posed.T_world_cam, world, posed.frame_id, posed.stamp_ns)]))
        return posed

    def _check_stamp(self, stamp_ns: int, cfg: PipelineConfig) -> int:
        """Return ``stamp_ns`` when a frame with it may be processed (:class:`StampGate`).

        A confirmed jump back in time restarts the window, the transforms and the depth
        pairing.

        :raises FrameDropped: zero, far-future, duplicate, out-of-order or stray stamp
        """
        last = self._stamps.last_ns
        if self._stamps.check(stamp_ns, self.get_clock().now().nanoseconds,
                              cfg.input.max_future_stamp_s):
            text = (f'{self.image_topic}: time jumped back by {(last - stamp_ns) / 1e9:.1f} s '
                    '(bag loop or clock reset); window restarted')
            self.stats.error('time_jump_back', text, dropped=False)
            self._log.log('time_jump_back', text)
            self._pipeline.reset()
            if self._poses is not None:
                self._poses.on_time_jump()
            if self._depth_pairing is not None:
                self._depth_pairing.clear()
            if self._vo is not None:
                self._vo = VisualOdometrySource(cfg)
        return stamp_ns

    def _paired_depth(self, stamp_ns: int, received: float,
                      cfg: PipelineConfig) -> Optional[np.ndarray]:
        """Return the registered depth (metres) stamped like the image (``depth_source: topic``).

        Waits for it until ``tf_timeout_s`` after the image arrived; depth images that can no
        longer meet their image are counted (``depth_unpaired``) and logged.

        :raises FrameDropped: no depth with the image's stamp (``depth_missing``)
        :raises ConversionError: a depth image of another encoding (``bad_depth_encoding``)
        """
        pairing = self._depth_pairing
        if pairing is None:
            return None
        msg = pairing.take(stamp_ns, received + cfg.input.tf_timeout_s)
        unpaired = pairing.unpaired - self._depth_unpaired_seen
        if unpaired > 0:
            self._depth_unpaired_seen = pairing.unpaired
            text = (f'{self.sub_depth.topic_name}: {unpaired} depth image(s) without an image '
                    f'of the same stamp on {self.image_topic}; dropped')
            self.stats.error('depth_unpaired', text, dropped=False)
            self._log.log('depth_unpaired', text)
        if msg is None:
            raise FrameDropped('depth_missing', f'no depth image stamped {stamp_ns / 1e9:.6f} s '
                               f'on {self.sub_depth.topic_name} within tf_timeout_s '
                               f'{cfg.input.tf_timeout_s} s (depth_source topic)')
        return depth_image_to_metres(msg)

    def _pose(self, frame_id: str, stamp_ns: int, received: float,
              cfg: PipelineConfig) -> Optional[np.ndarray]:
        """Pose of the image frame (:class:`PoseSelector`), waiting up to ``tf_timeout_s``."""
        deadline = received + cfg.input.tf_timeout_s

        def lookup(parent: str, child: str, stamp: Optional[int]) -> np.ndarray:
            if stamp is None:   # the fixed camera's pose: TF at the first image, no waiting
                return self._poses.lookup(parent, child, None)
            return self._poses.wait_lookup(parent, child, stamp, deadline)

        try:
            has_frame = self._poses.has_frame if self._poses is not None else None
            return self._pose_selector.pose(frame_id, stamp_ns, lookup, has_frame)
        except TransformUnavailable as exc:
            if cfg.input.pose_source == 'static':
                raise
            raise TransformUnavailable(
                exc.kind, f'no pose of {frame_id!r} in {cfg.grid.world_frame!r} at '
                f'{stamp_ns / 1e9:.6f} s within tf_timeout_s {cfg.input.tf_timeout_s} s: {exc}',
                exc.future) from exc

    # ------------------------------------------------------------------------------- outputs
    def _publish(self, occ: Occupancy4D, cfg: PipelineConfig) -> None:
        self._outputs.publish(occ, cfg.output)
        now_ns = self.get_clock().now().nanoseconds
        self.stats.published((now_ns - occ.newest_stamp_ns) / 1e9 if now_ns > 0 else None)

    def diagnostics_extra(self) -> Dict[str, Any]:
        """Node-specific diagnostic values: device, refiner, depth, inputs, stage timings."""
        cfg = self.config
        extra: Dict[str, Any] = {
            'device': str(self._pipeline.device), 'refiner': self._refiner_name(),
            'depth_source': self._pipeline.depth_active,
            'pose_source': cfg.input.pose_source, 'world_frame': cfg.grid.world_frame,
            'image_topic': self.image_topic,
            'camera_info': 'received' if self._camera_info is not None else 'missing',
            'queue_size': cfg.input.queue_size, 'queued': len(self._queue),
            'worker': 'running' if self._worker.is_alive() else 'stopped',
        }
        vo = self._vo.last if self._vo is not None else None
        if vo is not None:
            extra.update({'vo_state': vo.state, 'vo_inliers': vo.inliers,
                          'vo_reprojection_error_px': float(vo.reprojection_error_px),
                          'vo_scale_source': vo.scale_source})
            extra.update(self._vo.start_summary())
        compiled = getattr(self._pipeline.refiner, 'compile_status', 'off')
        if compiled != 'off':
            extra['network_compile'] = compiled
        occ = self._last_occ
        if occ is not None:
            extra['window_slices'] = occ.num_slices
        for stage, ms in self._stage_ms.items():
            extra[f'stage_ms.{stage}'] = float(ms)
        if self._outputs.last_ms is not None:
            extra['stage_ms.publish'] = self._outputs.last_ms
        if self._trim_ms is not None:
            extra['malloc_trim_ms'] = self._trim_ms
        return extra

    def publish_diagnostics(self) -> None:
        """Publish one DiagnosticArray (the 1 Hz timer's callback)."""
        try:
            self._publish_diagnostics()
        except Exception as exc:  # noqa: B902 - an exception here would stop the executor
            self._log.log('diagnostics_error', f'/diagnostics not published: '
                          f'{type(exc).__name__}: {exc}', 'error')

    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        waiting = ''
        if self._camera_info is None and snap['recent_received']:
            waiting = f'camera_info on {self.camera_info_topic}'
        degraded = list(self._degraded.values())
        compiled = str(getattr(self._pipeline.refiner, 'compile_status', ''))
        if compiled.startswith('failed'):
            degraded.append(f'network_compile {compiled}; the network runs eagerly')
        if not self._worker.is_alive() and not self._stopping:
            degraded.append('the worker thread has ended: no frame will be processed')
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_diagnostics.publish(diagnostic_array(
            header, f'{self.get_name()}: occupancy pipeline', self.get_fully_qualified_name(),
            snap, self.diagnostics_extra(), waiting, degraded))

    def stop(self) -> None:
        """Ask the worker to stop after the frame in hand (a waiting TF lookup ends at once)."""
        self._stopping = True
        self._wake.set()
        if self._poses is not None:
            self._poses.stopping = True

    def destroy_node(self, timeout_s: float = STOP_BUDGET_S) -> bool:
        """Stop the worker (it finishes the frame in hand, up to ``timeout_s``), then destroy.

        :return: whether the worker was idle when the node was destroyed (False: a frame was
            still being computed; its result is discarded)
        """
        self.stop()
        start = time.monotonic()
        idle = self._idle.wait(timeout=timeout_s)
        if idle:  # the loop ends at its next check; a frame still in hand is not waited for
            self._worker.join(timeout=max(0.0, timeout_s - (time.monotonic() - start)))
            idle = not self._worker.is_alive()
        logging.getLogger('l3rocc_core').removeHandler(self._core_log)
        super().destroy_node()
        return idle

    @property
    def busy(self) -> bool:
        """Tell whether the worker is computing a frame right now."""
        return not self._idle.is_set()
