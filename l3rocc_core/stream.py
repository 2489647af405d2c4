"""The stream front-end: the one set of rules that turns camera input into frames.

The node and ``l3rocc replay`` both call it, so a recorded stream and a live one are admitted,
posed and paired the same way:

- :class:`StampGate`: which image stamps may be processed (zero, far-future, duplicate,
  out-of-order, and a jump back in time that restarts the window once confirmed);
- :class:`PoseSelector`: the pose of each frame for ``pose_source`` (TF at the image stamp,
  odometry with the camera as its child frame, a fixed pose from ``camera_pose`` or from TF at
  the first image);
- :class:`DepthPairing`: registered depth images waiting for the image of the same stamp
  (``depth_source: topic``).

How poses and messages arrive differs (the node waits for TF with a deadline, replay holds
images back until the bag's TF covers them), so each caller passes its own ``lookup``.
"""

import math
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence, Set

import numpy as np

from l3rocc_core.config import InputConfig
from l3rocc_core.tf_tree import TransformUnavailable

#: An image this much older than the previous one means that time jumped back (bag loop).
JUMP_BACK_NS = 1_000_000_000
#: Depth images kept while waiting for their image (about a second of a 30 Hz camera).
DEPTH_PAIRING_CAPACITY = 32

#: ``lookup(parent, child, stamp_ns or None)`` -> float64 [4, 4] T_parent_child; None = the
#: latest (static) transform; raises :class:`~l3rocc_core.tf_tree.TransformUnavailable`.
Lookup = Callable[[str, str, Optional[int]], np.ndarray]

#: camera_link (REP 103: x forward, y left, z up) -> optical frame (z forward, x right, y down).
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class FrameDropped(Exception):
    """A frame that cannot be processed; ``kind`` is its diagnostics counter."""

    def __init__(self, kind: str, message: str):
        """Store the counter name with the message."""
        super().__init__(message)
        self.kind = kind


class StampGate:
    """Admits image stamps in order; a confirmed jump back in time restarts the stream.

    A stamp ``JUMP_BACK_NS`` or more older than the previous frame's is a jump back. It
    restarts the stream when the caller's clock went back too (``use_sim_time`` and a bag
    loop), or when the next frame confirms the new time line (a bag replayed on wall time); a
    single stray frame is dropped and the window kept.
    """

    def __init__(self) -> None:
        """Start with no previous frame."""
        self.last_ns: Optional[int] = None
        self._candidate_ns: Optional[int] = None

    def reset(self) -> None:
        """Forget the previous frame (a new stream starts)."""
        self.last_ns = None
        self._candidate_ns = None

    def check(self, stamp_ns: int, now_ns: int = 0, max_future_s: float = 0.0) -> bool:
        """Tell whether a frame with ``stamp_ns`` may be processed, and whether time jumped back.

        Call :meth:`accept` once the frame was built.

        :param stamp_ns: the image stamp (nanoseconds)
        :param now_ns: the caller's clock (nanoseconds; 0 = no clock: no future or clock check)
        :param max_future_s: stamps more than this ahead of ``now_ns`` are dropped (0 = no check)
        :return: True when time jumped back: the caller restarts its window and transforms
        :raises FrameDropped: zero, far-future, duplicate, out-of-order or stray stamp
        """
        if stamp_ns <= 0:
            raise FrameDropped('bad_stamp', f'image stamp {stamp_ns} ns is zero or negative')
        ahead_s = (stamp_ns - now_ns) / 1e9
        if max_future_s > 0 and now_ns > 0 and ahead_s > max_future_s:
            raise FrameDropped('stamp_future', f'image stamp {stamp_ns / 1e9:.6f} s is '
                               f'{ahead_s:.1f} s ahead of the node clock (max_future_stamp_s '
                               f'{max_future_s})')
        last = self.last_ns
        candidate, self._candidate_ns = self._candidate_ns, None
        if last is None or stamp_ns > last:
            return False
        if last - stamp_ns < JUMP_BACK_NS:
            kind = 'stamp_duplicate' if stamp_ns == last else 'stamp_out_of_order'
            raise FrameDropped(kind, f'image stamp {stamp_ns / 1e9:.6f} s is not newer than '
                               f'the previous frame stamp {last / 1e9:.6f} s')
        clock_went_back = 0 < now_ns < last - JUMP_BACK_NS
        if clock_went_back or (candidate is not None and candidate < stamp_ns < last):
            self.reset()
            return True
        self._candidate_ns = stamp_ns
        raise FrameDropped('stamp_jump_back', f'image stamp {stamp_ns / 1e9:.6f} s is '
                           f'{(last - stamp_ns) / 1e9:.1f} s older than the previous frame; '
                           'dropped unless the next frame confirms that time jumped back')

    def accept(self, stamp_ns: int) -> None:
        """Record ``stamp_ns`` as the newest processed frame's."""
        self.last_ns = int(stamp_ns)


def pose_from_xyz_rpy(camera_pose: Sequence[float]) -> np.ndarray:
    """Return T_world_optical of a camera mounted at ``[x, y, z, roll, pitch, yaw]``.

    The six values are the pose of the camera's body frame (REP 103: x forward, y left, z up)
    in the world (metres; radians, rotations about the fixed x, y, z axes in that order, so
    pitch > 0 looks down); the optical frame (z forward, x right, y down) follows by the
    standard rotation.

    :param camera_pose: 6 values
    :return: float64 [4, 4] pose of the optical frame in the world
    """
    x, y, z, roll, pitch, yaw = (float(v) for v in camera_pose)
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    R_world_link = np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr]])
    T = np.eye(4)
    T[:3, :3] = R_world_link @ R_LINK_OPTICAL
    T[:3, 3] = (x, y, z)
    return T


class PoseSelector:
    """The pose of each frame, as ``pose_source`` says.

    - ``tf``: the image frame in ``world_frame`` at the image stamp;
    - ``odometry``: the same, where the odometry's child frame stands for the camera when the
      image's frame is unknown to the transforms (one child only);
    - ``static``: a fixed pose: ``camera_pose`` when given, else TF at the first image (the
      latest transform, normally a static one), kept from then on;
    - ``visual_odometry``: None (the pipeline estimates it).

    :param config: the input stage (``pose_source``, ``camera_pose``)
    :param world_frame: the fixed frame of poses
    """

    def __init__(self, config: InputConfig, world_frame: str):
        """Keep the source; a ``camera_pose`` is turned into the fixed pose at once."""
        self.source = config.pose_source
        self.world_frame = world_frame
        self.odometry_children: Set[str] = set()
        self._fixed = (pose_from_xyz_rpy(config.camera_pose)
                       if self.source == 'static' and len(config.camera_pose) == 6 else None)

    @property
    def fixed_pose(self) -> Optional[np.ndarray]:
        """The static camera's pose once known (float64 [4, 4]), else None."""
        return None if self._fixed is None else self._fixed.copy()

    def add_odometry_child(self, child_frame_id: str) -> None:
        """Note an odometry message's child frame (the camera, for ``odometry``)."""
        if child_frame_id:
            self.odometry_children.add(str(child_frame_id).lstrip('/'))

    def pose(self, frame_id: str, stamp_ns: int, lookup: Lookup,
             has_frame: Optional[Callable[[str], bool]] = None) -> Optional[np.ndarray]:
        """Return T_world_cam of the image frame ``frame_id`` at ``stamp_ns``.

        :param lookup: the caller's transform lookup (see :data:`Lookup`)
        :param has_frame: whether the transforms know a frame (for the odometry child rule;
            None: every frame is known)
        :raises TransformUnavailable: no pose (``kind`` names the counter)
        """
        if self.source == 'visual_odometry':
            return None
        if self.source == 'static':
            if self._fixed is None:
                try:
                    self._fixed = np.asarray(lookup(self.world_frame, frame_id, None),
                                             np.float64)
                except TransformUnavailable as exc:
                    raise TransformUnavailable(
                        exc.kind, f'pose_source static: no camera_pose parameter and no '
                        f'transform {self.world_frame!r} -> {frame_id!r} ({exc}); set '
                        'camera_pose [x, y, z, roll, pitch, yaw] or publish a static '
                        'transform', exc.future) from exc
            return self._fixed.copy()
        target = frame_id
        if (self.source == 'odometry' and len(self.odometry_children) == 1
                and has_frame is not None and not has_frame(frame_id)):
            target = next(iter(self.odometry_children))  # the camera is the odometry's child
        return lookup(self.world_frame, target, stamp_ns)


class DepthPairing:
    """Registered depth images waiting for the image with the same stamp.

    Thread-safe: one thread adds (the depth subscription), another takes (the worker).

    :param capacity: depth images kept; the oldest is dropped (and counted) beyond it
    """

    def __init__(self, capacity: int = DEPTH_PAIRING_CAPACITY):
        """Start empty."""
        self.capacity = int(capacity)
        self._waiting: 'OrderedDict[int, Any]' = OrderedDict()
        self._cond = threading.Condition()
        #: depth images that never met their image (evicted, or older than a taken image)
        self.unpaired = 0

    def add(self, stamp_ns: int, depth: Any) -> None:
        """Keep ``depth`` (a message or an array) for the image stamped ``stamp_ns``."""
        with self._cond:
            self._waiting[int(stamp_ns)] = depth
            while len(self._waiting) > self.capacity:
                self._waiting.popitem(last=False)
                self.unpaired += 1
            self._cond.notify_all()

    def take(self, stamp_ns: int, deadline: Optional[float] = None) -> Optional[Any]:
        """Return the depth stamped ``stamp_ns`` (removed), waiting until ``deadline``.

        Depth images older than ``stamp_ns`` can no longer be paired and are dropped (counted
        in :attr:`unpaired`).

        :param deadline: ``time.monotonic()`` value to wait until (None: do not wait)
        :return: the depth, or None when none came in time
        """
        stamp_ns = int(stamp_ns)
        with self._cond:
            while stamp_ns not in self._waiting:
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0:
                    break
                self._cond.wait(left)
            depth = self._waiting.pop(stamp_ns, None)
            for old in [s for s in self._waiting if s < stamp_ns]:
                del self._waiting[old]
                self.unpaired += 1
            return depth

    def has(self, stamp_ns: int) -> bool:
        """Tell whether the depth stamped ``stamp_ns`` is waiting."""
        with self._cond:
            return int(stamp_ns) in self._waiting

    def clear(self) -> None:
        """Forget everything waiting (time jumped back)."""
        with self._cond:
            self._waiting.clear()

    def __len__(self) -> int:
        """Depth images waiting."""
        with self._cond:
            return len(self._waiting)
