"""Camera poses for the node: ``/tf`` + ``/tf_static`` (and odometry) with a bounded wait.

Two back-ends with one interface (:class:`PoseLookup`):

- :class:`TopicPoseLookup` subscribes to ``/tf`` (reliable, depth 100) and ``/tf_static``
  (reliable, transient local) and fills :class:`l3rocc_core.tf_tree.TransformBuffer`. Used where
  tf2_ros is not installed (the PyPI wheels) and by the tests.
- :class:`Tf2PoseLookup` uses ``tf2_ros.Buffer`` + ``TransformListener`` when tf2_ros imports
  (a ROS 2 installation).

Odometry (``pose_source: odometry``) is stored as the transform ``header.frame_id`` ->
``child_frame_id``, so a camera mounted on the odometry's child frame resolves through
``/tf_static``. A lookup waits for transforms that may still arrive until a deadline, then
raises :class:`l3rocc_core.tf_tree.TransformUnavailable` with its ``kind``.
"""

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from l3rocc_core.convert import ConversionError, pose_to_matrix, stamp_to_ns, transform_to_matrix
from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable
import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
JUMP_BACK_NS = 1_000_000_000  # a transform this much older than the newest one: time jumped

ErrorCallback = Callable[[str, str, str], None]  # (kind, topic, message)


class PoseLookup:
    """Base: a thread-safe transform store with a waiting lookup.

    :param on_error: called with (kind, topic, message) for a transform that cannot be stored
    """

    def __init__(self, on_error: Optional[ErrorCallback] = None):
        """Set up the condition that wakes waiting lookups when transforms arrive."""
        self._cond = threading.Condition()
        self._on_error = on_error
        self.stopping = False
        # transforms stamped more than this ahead of the node clock are refused (0 = no check)
        self.max_future_ns = 0

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        raise NotImplementedError

    def lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        """float64 [4, 4] ``T_target_source`` at ``stamp_ns`` (None = latest), no waiting.

        :raises TransformUnavailable: kind 'tf_missing', 'tf_extrapolation', 'tf_not_connected'
        """
        with self._cond:
            return self._lookup(target, source, stamp_ns)

    def wait_lookup(self, target: str, source: str, stamp_ns: int, deadline: float
                    ) -> np.ndarray:
        """Like :meth:`lookup`, waiting for transforms until ``deadline`` (``time.monotonic``).

        Waits only while more data can help (the stamp is newer than the buffered data, or a
        frame is still unknown); tries at least once.

        :raises TransformUnavailable: when the deadline passes or waiting cannot help
        """
        with self._cond:
            while True:
                try:
                    return self._lookup(target, source, stamp_ns)
                except TransformUnavailable as exc:
                    remaining = deadline - time.monotonic()
                    if not exc.future or remaining <= 0 or self.stopping:
                        raise
                    self._cond.wait(min(remaining, 0.05))

    def has_frame(self, frame: str) -> bool:
        """Tell whether ``frame`` appeared in any stored transform."""
        raise NotImplementedError

    def _notify(self) -> None:
        self._cond.notify_all()

    def add_odometry(self, msg: Any, default_parent: str) -> None:
        """Store a nav_msgs/Odometry as ``header.frame_id`` -> ``child_frame_id``.

        :param default_parent: parent frame when ``header.frame_id`` is empty
        """
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every dynamic transform (time jumped back); static ones stay."""
        raise NotImplementedError

    def on_time_jump(self) -> None:
        """Images jumped back in time: drop transforms of the old time line where needed."""
        raise NotImplementedError

    def _error(self, kind: str, topic: str, message: str) -> None:
        if self._on_error is not None:
            self._on_error(kind, topic, message)


class TopicPoseLookup(PoseLookup):
    """Transforms from ``/tf`` and ``/tf_static`` subscriptions into a ``TransformBuffer``.

    :param node: the node that owns the subscriptions
    :param subscribe_dynamic: subscribe to ``/tf`` (False with ``pose_source: odometry``)
    :param callback_group: group of the subscriptions
    :param cache_time_s: seconds of dynamic transforms kept
    """

    def __init__(self, node: Node, subscribe_dynamic: bool = True,
                 callback_group: Optional[CallbackGroup] = None, cache_time_s: float = 10.0,
                 on_error: Optional[ErrorCallback] = None):
        """Create the subscriptions."""
        super().__init__(on_error)
        from tf2_msgs.msg import TFMessage
        self._buffer = TransformBuffer(cache_time_s=cache_time_s)
        self._static: Dict[str, Tuple[str, np.ndarray]] = {}
        self._newest_ns = 0
        # transforms far older than the newest, held until more confirm that time jumped back
        self._jump_candidates: List[Tuple[str, str, int, np.ndarray]] = []
        self._logger = node.get_logger()
        self._clock = node.get_clock()
        self.subscriptions = [node.create_subscription(
            TFMessage, '/tf_static', lambda m: self.add_tf(m, True, '/tf_static'),
            TF_STATIC_QOS, callback_group=callback_group)]
        if subscribe_dynamic:
            self.subscriptions.append(node.create_subscription(
                TFMessage, '/tf', lambda m: self.add_tf(m, False, '/tf'), TF_QOS,
                callback_group=callback_group))

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        return self._buffer.lookup(target, source, stamp_ns)

    def has_frame(self, frame: str) -> bool:
        """Tell whether ``frame`` appeared in any stored transform."""
        with self._cond:
            return self._buffer.has_frame(frame)

    def add_tf(self, msg: Any, static: bool, topic: str = '/tf') -> None:
        """Store every transform of a TFMessage; bad ones are reported and skipped."""
        with self._cond:
            for ts in msg.transforms:
                self._store(ts.header.frame_id, ts.child_frame_id, ts.header.stamp,
                            ts.transform, static, topic, transform_to_matrix, 'bad_tf')
            self._notify()

    def add_odometry(self, msg: Any, default_parent: str) -> None:
        """Store a nav_msgs/Odometry as ``header.frame_id`` -> ``child_frame_id``."""
        parent = msg.header.frame_id or default_parent
        with self._cond:
            self._store(parent, msg.child_frame_id, msg.header.stamp, msg.pose.pose, False,
                        'odometry', pose_to_matrix, 'bad_odometry')
            self._notify()

    def _store(self, parent: str, child: str, stamp: Any, value: Any, static: bool,
               topic: str, to_matrix: Callable[[Any], np.ndarray], kind: str) -> None:
        """Store one transform; a stamp far older than the newest is a jump back in time.

        Such a transform is held back: when a later one continues the older time line (bag
        loop, clock reset) the dynamic transforms are cleared and the held ones stored; when
        the stream goes on at the newest time instead, it was a stray stamp (e.g. zero) and is
        reported as ``tf_stamp_jump_back`` without touching the buffer.
        """
        try:
            T = to_matrix(value)
            stamp_ns = stamp_to_ns(stamp)
            if not static:
                now_ns = self._clock.now().nanoseconds
                if self.max_future_ns > 0 and now_ns > 0 and \
                        stamp_ns > now_ns + self.max_future_ns:
                    self._error('tf_stamp_future', topic,
                                f'{parent!r} -> {child!r}: stamp {stamp_ns / 1e9:.3f} s is '
                                f'{(stamp_ns - now_ns) / 1e9:.1f} s ahead of the node clock; '
                                'ignored (max_future_stamp_s)')
                    return
                if stamp_ns < self._newest_ns - JUMP_BACK_NS:
                    held = self._jump_candidates
                    if not held or stamp_ns <= min(c[2] for c in held):
                        held.append((parent, child, stamp_ns, T))
                        self._error('tf_stamp_jump_back', topic,
                                    f'{parent!r} -> {child!r}: stamp {stamp_ns / 1e9:.3f} s is '
                                    f'{(self._newest_ns - stamp_ns) / 1e9:.1f} s older than the '
                                    'newest transform; ignored unless the next transforms '
                                    'confirm that time jumped back')
                        return
                    self._logger.warning(
                        f'{topic}: transform stamps went back by '
                        f'{(self._newest_ns - stamp_ns) / 1e9:.1f} s (bag loop or clock '
                        'reset); dynamic transforms cleared')
                    self._reset_locked()
                    for c_parent, c_child, c_stamp, c_T in held:
                        self._buffer.set_transform(c_parent, c_child, c_stamp, c_T, False)
                        self._newest_ns = max(self._newest_ns, c_stamp)
                self._jump_candidates = []
                self._newest_ns = max(self._newest_ns, stamp_ns)
            self._buffer.set_transform(parent, child, stamp_ns, T, static)
            if static:
                self._static[child.lstrip('/')] = (parent, T)
        except ValueError as exc:  # ConversionError (NaN, broken quaternion) included
            self._error(kind, topic, f'{parent!r} -> {child!r}: {exc}')

    def reset(self) -> None:
        """Forget every dynamic transform (time jumped back); static ones stay."""
        with self._cond:
            self._reset_locked()

    def on_time_jump(self) -> None:
        """Nothing to do: the buffer restarts itself when /tf stamps jump back (``_store``).

        Clearing here as well would throw away the new time line's transforms that arrived
        before the images that revealed the jump.
        """

    def _reset_locked(self) -> None:
        self._buffer.clear()
        self._newest_ns = 0
        self._jump_candidates = []
        for child, (parent, T) in self._static.items():
            self._buffer.set_transform(parent, child, 0, T, static=True)


class Tf2PoseLookup(PoseLookup):
    """tf2_ros.Buffer + TransformListener (a ROS 2 installation).

    :raises ImportError: when tf2_ros is not installed
    """

    def __init__(self, node: Node, cache_time_s: float = 10.0,
                 on_error: Optional[ErrorCallback] = None):
        """Create the buffer and its listener on ``node`` (spun by the node's executor)."""
        super().__init__(on_error)
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time
        self._tf2 = tf2_ros
        self._time = Time
        self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s), node=node)
        self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        when = self._time() if stamp_ns is None else self._time(nanoseconds=int(stamp_ns))
        tf2 = self._tf2
        try:
            ts = self._buffer.lookup_transform(target, source, when)
        except tf2.ExtrapolationException as exc:
            raise TransformUnavailable('tf_extrapolation', str(exc)) from exc
        except tf2.ConnectivityException as exc:
            raise TransformUnavailable('tf_not_connected', str(exc)) from exc
        except tf2.TransformException as exc:
            raise TransformUnavailable('tf_missing', str(exc)) from exc
        return transform_to_matrix(ts.transform)

    def has_frame(self, frame: str) -> bool:
        """Tell whether ``frame`` is known to the tf2 buffer."""
        import yaml
        frames = yaml.safe_load(self._buffer.all_frames_as_yaml()) or {}
        known = set(frames) | {str(v.get('parent', '')) for v in frames.values()
                               if isinstance(v, dict)}
        return frame.lstrip('/') in known

    def wait_lookup(self, target: str, source: str, stamp_ns: int, deadline: float
                    ) -> np.ndarray:
        """Poll the tf2 buffer (filled by its own listener) until ``deadline``."""
        while True:
            try:
                return self._lookup(target, source, stamp_ns)
            except TransformUnavailable:
                if time.monotonic() >= deadline or self.stopping:
                    raise
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def add_odometry(self, msg: Any, default_parent: str) -> None:
        """Store a nav_msgs/Odometry in the tf2 buffer."""
        from geometry_msgs.msg import TransformStamped
        try:
            pose_to_matrix(msg.pose.pose)  # rejects NaN / broken quaternions
        except ConversionError as exc:
            self._error('bad_odometry', 'odometry', str(exc))
            return
        ts = TransformStamped()
        ts.header.stamp = msg.header.stamp
        ts.header.frame_id = msg.header.frame_id or default_parent
        ts.child_frame_id = msg.child_frame_id
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        ts.transform.translation.x, ts.transform.translation.y = p.x, p.y
        ts.transform.translation.z = p.z
        ts.transform.rotation = q
        try:
            self._buffer.set_transform(ts, 'odometry')
        except self._tf2.TransformException as exc:
            self._error('bad_odometry', 'odometry', str(exc))

    def reset(self) -> None:
        """Clear the tf2 buffer (tf2 keeps static transforms)."""
        self._buffer.clear()

    def on_time_jump(self) -> None:
        """Clear the tf2 buffer: it keeps the old time line's transforms otherwise."""
        self._buffer.clear()


def make_pose_lookup(node: Node, subscribe_dynamic: bool,
                     callback_group: Optional[CallbackGroup] = None,
                     on_error: Optional[ErrorCallback] = None, prefer_tf2: bool = True
                     ) -> PoseLookup:
    """tf2_ros when importable (and ``prefer_tf2``), else the ``/tf`` topic subscriber.

    :param subscribe_dynamic: also use ``/tf`` (pose_source tf); the tf2 back-end always does
    """
    if prefer_tf2:
        try:
            lookup = Tf2PoseLookup(node, on_error=on_error)
            node.get_logger().info('poses from tf2_ros')
            return lookup
        except ImportError as exc:  # no ROS installation: the topic subscriber does the job
            node.get_logger().debug(f'tf2_ros not available ({exc}); subscribing to /tf')
    return TopicPoseLookup(node, subscribe_dynamic, callback_group, on_error=on_error)
