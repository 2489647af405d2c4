"""A pure-Python transform buffer with tf2 semantics (no ROS import), thread-safe.

Frames form a forest: every child has one parent per edge (the last ``set_transform`` for a child
names its parent). Dynamic edges keep time-stamped samples for ``cache_time_s``; static edges are
valid at all times. :meth:`TransformBuffer.lookup` walks the tree in any direction and interpolates
each dynamic edge between the two samples that bracket the requested stamp (translation linearly,
rotation by slerp); it never extrapolates beyond ``max_extrapolation_ns``, exactly like tf2.

``T_a_b`` maps points from frame b to frame a (``p_a = T_a_b @ p_b``).
"""

import bisect
from dataclasses import dataclass, field
import functools
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np

from l3rocc_core.convert import stamp_to_ns, transform_to_matrix
from l3rocc_core.transforms import invert, make_transform, matrix_to_quat

MAX_TREE_DEPTH = 1000

KINDS = ('tf_missing', 'tf_extrapolation', 'tf_not_connected')
F = TypeVar('F', bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run ``method`` under the buffer's lock (TF callbacks and lookups on other threads)."""
    @functools.wraps(method)
    def wrapper(self: 'TransformBuffer', *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class TransformUnavailable(LookupError):
    """A lookup that cannot be answered; ``kind`` names the diagnostics counter.

    :param kind: 'tf_missing' (unknown frame or an edge without samples), 'tf_extrapolation' (the
        stamp lies outside an edge's buffered samples), 'tf_not_connected' (no common ancestor)
    :param message: human-readable reason naming the frames and stamps
    :param future: True when the stamp is newer than the buffered data (or data may still arrive),
        so waiting for more transforms can help; False when the stamp is older than the cache
    """

    def __init__(self, kind: str, message: str, future: bool = True):
        """Store the counter name and whether waiting could help."""
        super().__init__(message)
        self.kind = kind
        self.future = future


@dataclass
class _Edge:
    """Transforms of one child frame relative to its parent."""

    parent: str
    static: bool
    stamps: List[int] = field(default_factory=list)
    trans: List[np.ndarray] = field(default_factory=list)
    quats: List[np.ndarray] = field(default_factory=list)


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w).

    :param q0: float64 [4] at alpha 0
    :param q1: float64 [4] at alpha 1
    :param alpha: in [0, 1]
    :return: float64 [4] unit quaternion on the shorter arc
    """
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    s = np.sin(theta)
    return (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / s


class TransformBuffer:
    """Time-stamped transform tree with interpolating lookups and bounded memory.

    :param cache_time_s: how long (seconds) samples of a dynamic edge are kept, measured back
        from that edge's newest sample
    :param max_extrapolation_ns: a stamp this far outside an edge's samples still resolves to
        the nearest sample (0 = exact, like tf2)
    """

    def __init__(self, cache_time_s: float = 10.0, max_extrapolation_ns: int = 0):
        """Start empty."""
        if not cache_time_s > 0:
            raise ValueError(f'cache_time_s must be > 0, got {cache_time_s}')
        if max_extrapolation_ns < 0:
            raise ValueError(f'max_extrapolation_ns must be >= 0, got {max_extrapolation_ns}')
        self.cache_ns = int(round(cache_time_s * 1e9))
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self._edges: Dict[str, _Edge] = {}
        self._parents: set = set()
        self.dropped_old = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ filling
    @_locked
    def clear(self) -> None:
        """Forget every transform (e.g. when time jumps back at a bag loop)."""
        self._edges.clear()
        self._parents.clear()
        self.dropped_old = 0

    @_locked
    def set_transform(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray,
                      static: bool = False) -> bool:
        """Store the pose of ``child`` in ``parent`` at ``stamp_ns``.

        A child re-attached to another parent (or switching between static and dynamic) loses
        its old samples, as in tf2 the newest declaration wins.

        :param parent: parent frame id (leading '/' stripped)
        :param child: child frame id
        :param stamp_ns: stamp in nanoseconds (ignored for static edges)
        :param T_parent_child: float64 [4, 4] rigid transform child -> parent
        :param static: valid at all times (``/tf_static``)
        :return: False when the sample is older than the cache and was dropped
        :raises ValueError: empty or equal frame ids, non-finite or non-rigid matrix
        """
        parent, child = _clean(parent), _clean(child)
        if not parent or not child:
            raise ValueError(f'frame ids must be non-empty, got parent {parent!r} '
                             f'child {child!r}')
        if parent == child:
            raise ValueError(f'transform from {child!r} to itself')
        T = np.asarray(T_parent_child, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f'T_{parent}_{child} must be a finite 4x4 matrix')
        q = matrix_to_quat(T[:3, :3])
        t = T[:3, 3].copy()
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = _Edge(parent, static)
            self._edges[child] = edge
            self._parents = {e.parent for e in self._edges.values()}
        if static:
            edge.stamps, edge.trans, edge.quats = [0], [t], [q]
            return True
        stamp_ns = int(stamp_ns)
        if edge.stamps and stamp_ns < edge.stamps[-1] - self.cache_ns:
            self.dropped_old += 1
            return False
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
            edge.trans[i], edge.quats[i] = t, q
        else:
            edge.stamps.insert(i, stamp_ns)
            edge.trans.insert(i, t)
            edge.quats.insert(i, q)
        cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
        if cut > 0:
            del edge.stamps[:cut], edge.trans[:cut], edge.quats[:cut]
        return True

    @_locked
    def add_tf_message(self, msg: Any, static: bool = False) -> int:
        """Store every transform of a tf2_msgs/TFMessage (rclpy or rosbags message).

        :param msg: object with ``transforms``, each with ``header.frame_id``,
            ``header.stamp``, ``child_frame_id`` and ``transform``
        :param static: the message came from ``/tf_static``
        :return: number of transforms stored
        :raises l3rocc_core.convert.ConversionError: a transform with NaN or a broken
            quaternion (kind 'bad_pose'); the transforms before it are kept
        :raises ValueError: empty frame ids
        """
        n = 0
        for ts in msg.transforms:
            T = transform_to_matrix(ts.transform)
            if self.set_transform(ts.header.frame_id, ts.child_frame_id,
                                  stamp_to_ns(ts.header.stamp), T, static):
                n += 1
        return n

    # ------------------------------------------------------------------ queries
    @_locked
    def frames(self) -> List[str]:
        """Return every frame id known (as parent or child), sorted."""
        return sorted(set(self._edges) | self._parents)

    @_locked
    def has_frame(self, frame: str) -> bool:
        """Tell whether ``frame`` appeared in any transform."""
        frame = _clean(frame)
        return frame in self._edges or frame in self._parents

    @_locked
    def parent_of(self, frame: str) -> Optional[str]:
        """Return the parent of ``frame``, or None for a root or an unknown frame."""
        edge = self._edges.get(_clean(frame))
        return edge.parent if edge else None

    @_locked
    def lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> np.ndarray:
        """Return the transform mapping points from ``source`` to ``target`` at ``stamp_ns``.

        :param target: target frame id
        :param source: source frame id
        :param stamp_ns: stamp in nanoseconds; None = the latest time at which every edge on
            the path has data (like tf2's time 0)
        :return: float64 [4, 4] ``T_target_source``
        :raises TransformUnavailable: kind 'tf_missing', 'tf_extrapolation' or
            'tf_not_connected'
        """
        target, source = _clean(target), _clean(source)
        if target == source:
            return np.eye(4)
        up_source, up_target = self._path(target, source)
        if stamp_ns is None:
            stamp_ns = self._latest_common(up_source + up_target, target, source)
        T_anc_source = np.eye(4)
        for child in up_source:
            T_anc_source = self._edge_at(child, int(stamp_ns), target, source) @ T_anc_source
        T_anc_target = np.eye(4)
        for child in up_target:
            T_anc_target = self._edge_at(child, int(stamp_ns), target, source) @ T_anc_target
        return invert(T_anc_target) @ T_anc_source

    def can_transform(self, target: str, source: str, stamp_ns: Optional[int]) -> bool:
        """Tell whether :meth:`lookup` would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformUnavailable:
            return False
        return True

    @_locked
    def latest_stamp(self, target: str, source: str) -> Optional[int]:
        """Return the latest stamp at which ``target`` <- ``source`` resolves (None: static only).

        :raises TransformUnavailable: when the frames are unknown or not connected
        """
        target, source = _clean(target), _clean(source)
        if target == source:
            return None
        up_source, up_target = self._path(target, source)
        chain = [c for c in up_source + up_target if not self._edges[c].static]
        if not chain:
            return None
        return self._latest_common(chain, target, source)

    @_locked
    def time_range(self, child: str) -> Optional[Tuple[int, int]]:
        """Return (oldest, newest) stamps of the edge of ``child``; None when static or unknown."""
        edge = self._edges.get(_clean(child))
        if edge is None or edge.static or not edge.stamps:
            return None
        return edge.stamps[0], edge.stamps[-1]

    # ------------------------------------------------------------------ internals
    def _chain(self, frame: str) -> List[str]:
        """Frames from ``frame`` up to its root, ``frame`` first."""
        out = [frame]
        while out[-1] in self._edges:
            out.append(self._edges[out[-1]].parent)
            if len(out) > MAX_TREE_DEPTH:
                raise TransformUnavailable(
                    'tf_not_connected', f'the transform tree above {frame!r} has a loop '
                    f'(through {out[-3:]})', future=False)
        return out

    def _path(self, target: str, source: str) -> Tuple[List[str], List[str]]:
        """Child frames whose edges lead from source and target up to their common ancestor."""
        for f in (target, source):
            if not self.has_frame(f):
                known = ', '.join(self.frames()) or 'none yet'
                raise TransformUnavailable(
                    'tf_missing', f'frame {f!r} does not exist (known frames: {known})')
        chain_s, chain_t = self._chain(source), self._chain(target)
        pos_t = {f: i for i, f in enumerate(chain_t)}
        for i, f in enumerate(chain_s):
            if f in pos_t:
                return chain_s[:i], chain_t[:pos_t[f]]
        raise TransformUnavailable(
            'tf_not_connected', f'frames {target!r} and {source!r} are not connected: '
            f'{source!r} has root {chain_s[-1]!r}, {target!r} has root {chain_t[-1]!r}')

    def _latest_common(self, children: List[str], target: str, source: str) -> int:
        latest = None
        for c in children:
            e = self._edges[c]
            if e.static:
                continue
            if not e.stamps:
                raise TransformUnavailable('tf_missing', f'no transform {e.parent!r} -> {c!r} '
                                           f'yet (looking up {target!r} <- {source!r})')
            latest = e.stamps[-1] if latest is None else min(latest, e.stamps[-1])
        return 0 if latest is None else latest

    def _edge_at(self, child: str, stamp_ns: int, target: str, source: str) -> np.ndarray:
        """T_parent_child of one edge at ``stamp_ns`` (interpolated)."""
        e = self._edges[child]
        if e.static:
            return _matrix(e.trans[0], e.quats[0])
        if not e.stamps:
            raise TransformUnavailable('tf_missing', f'no transform {e.parent!r} -> {child!r} '
                                       f'yet (looking up {target!r} <- {source!r})')
        lo, hi = e.stamps[0], e.stamps[-1]
        tol = self.max_extrapolation_ns
        if stamp_ns < lo - tol or stamp_ns > hi + tol:
            future = stamp_ns > hi
            when = 'future' if future else 'past'
            raise TransformUnavailable(
                'tf_extrapolation',
                f'lookup {target!r} <- {source!r} at {_sec(stamp_ns)} would extrapolate into '
                f'the {when}: {e.parent!r} -> {child!r} is buffered from {_sec(lo)} to '
                f'{_sec(hi)}', future=future)
        if stamp_ns <= lo:
            return _matrix(e.trans[0], e.quats[0])
        if stamp_ns >= hi:
            return _matrix(e.trans[-1], e.quats[-1])
        i = bisect.bisect_left(e.stamps, stamp_ns)
        if e.stamps[i] == stamp_ns:
            return _matrix(e.trans[i], e.quats[i])
        t0, t1 = e.stamps[i - 1], e.stamps[i]
        a = (stamp_ns - t0) / float(t1 - t0)
        t = (1.0 - a) * e.trans[i - 1] + a * e.trans[i]
        return _matrix(t, slerp(e.quats[i - 1], e.quats[i], a))


def _clean(frame: str) -> str:
    return str(frame).lstrip('/')


def _sec(stamp_ns: int) -> str:
    return f'{stamp_ns / 1e9:.6f} s'


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    return make_transform(t, q)
