"""Node health: thread-safe counters and rates, published as diagnostic_msgs/DiagnosticArray.

One :class:`NodeStats` is shared by the input callbacks, the worker and the 1 Hz diagnostics
timer. Rates are measured over the last ``window_s`` seconds (monotonic clock); latency is the
age of the image stamp when its result is published, over the last ``latency_samples`` results.
"""

from collections import Counter, deque
import threading
import time
from typing import Any, Deque, Dict, Mapping, Optional, Sequence, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from std_msgs.msg import Header

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


class NodeStats:
    """Counters of frames in, processed, published, dropped, and errors by kind.

    :param window_s: seconds over which rates and recent errors are measured
    :param latency_samples: number of recent latencies kept for p50/p95
    """

    def __init__(self, window_s: float = 5.0, latency_samples: int = 200):
        """Start with zero counts."""
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._received: Deque[float] = deque()
        self._processed: Deque[float] = deque()
        self._recent_errors: Deque[Tuple[float, str]] = deque()
        self._latency_s: Deque[float] = deque(maxlen=latency_samples)
        self.totals: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_error = ''

    def received(self) -> None:
        """Count one input frame."""
        with self._lock:
            self.totals['frames_received'] += 1
            self._push(self._received, time.monotonic())

    def dropped_queue_full(self, n: int = 1) -> None:
        """Count frames replaced in the input queue by newer ones (latest wins)."""
        with self._lock:
            self.totals['dropped_queue_full'] += n

    def processed(self) -> None:
        """Count one frame that went through the pipeline."""
        with self._lock:
            self.totals['frames_processed'] += 1
            self._push(self._processed, time.monotonic())

    def published(self, latency_s: Optional[float]) -> None:
        """Count one published result; ``latency_s``: image stamp to publication (or None)."""
        with self._lock:
            self.totals['results_published'] += 1
            if latency_s is not None and np.isfinite(latency_s):
                self._latency_s.append(float(latency_s))

    def error(self, kind: str, message: str, dropped: bool = True) -> None:
        """Count one problem of ``kind`` (and one dropped frame when ``dropped``)."""
        with self._lock:
            self.errors[kind] += 1
            if dropped:
                self.totals['dropped_frames'] += 1
            self.last_error = f'{kind}: {message}'
            self._push(self._recent_errors, (time.monotonic(), kind))

    def _push(self, q: Deque, item: Any) -> None:
        q.append(item)
        now = time.monotonic()
        while q and (q[0][0] if isinstance(q[0], tuple) else q[0]) < now - self.window_s:
            q.popleft()

    def snapshot(self) -> Dict[str, Any]:
        """Return the figures: rates (Hz), totals, latency percentiles (ms), errors by kind."""
        now = time.monotonic()
        with self._lock:
            for q in (self._received, self._processed, self._recent_errors):
                while q and (q[0][0] if isinstance(q[0], tuple) else q[0]) < now - self.window_s:
                    q.popleft()
            span = max(min(self.window_s, now - self._start), 1e-3)
            lat = np.asarray(self._latency_s, np.float64)
            snap = {
                'input_rate_hz': len(self._received) / span,
                'processed_rate_hz': len(self._processed) / span,
                'recent_received': len(self._received),
                'recent_processed': len(self._processed),
                'recent_errors': Counter(k for _, k in self._recent_errors),
                'uptime_s': now - self._start,
                'latency_p50_ms': float(np.percentile(lat, 50) * 1e3) if lat.size else None,
                'latency_p95_ms': float(np.percentile(lat, 95) * 1e3) if lat.size else None,
                'errors': dict(self.errors),
                'last_error': self.last_error,
            }
            for key in ('frames_received', 'frames_processed', 'results_published',
                        'dropped_frames', 'dropped_queue_full'):
                snap[key] = self.totals[key]
        return snap


def assess(snap: Mapping[str, Any], waiting_for: str = '',
           degraded: Sequence[str] = ()) -> Tuple[bytes, str]:
    """Level and one-line message of a :meth:`NodeStats.snapshot`.

    - WARN: waiting for an input (``waiting_for``, e.g. camera_info).
    - ERROR: frames arrive but none was processed in the window, and errors explain why.
    - WARN: the node runs degraded (``degraded``: e.g. geometry only after a checkpoint failed,
      CPU after CUDA ran out of memory), errors in the window, or no images at all.
    - OK otherwise (frames replaced in the queue under load are reported, not a warning).
    """
    recent = snap['recent_errors']
    if waiting_for:
        return WARN, f'waiting for {waiting_for}'
    if snap['recent_received'] and not snap['recent_processed'] and recent:
        worst = recent.most_common(1)[0][0]
        return ERROR, f'no frame processed in the last seconds; failing with {worst} ' \
                      f'({snap["last_error"]})'
    parts = [f'degraded: {d}' for d in degraded]
    if not snap['recent_received']:
        parts.append('no images received in the last seconds')
    if recent:
        parts.append('recent problems: ' + ', '.join(f'{k} x{n}'
                                                     for k, n in sorted(recent.items())))
    if parts:
        return WARN, '; '.join(parts)
    return OK, f'{snap["processed_rate_hz"]:.1f} Hz processed'


def _fmt(value: Any) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def diagnostic_array(header: Header, name: str, hardware_id: str, snap: Mapping[str, Any],
                     extra: Mapping[str, Any], waiting_for: str = '',
                     degraded: Sequence[str] = ()) -> DiagnosticArray:
    """One DiagnosticStatus with the node's figures as key/values.

    Keys: ``input_rate_hz``, ``processed_rate_hz``, ``frames_received``, ``frames_processed``,
    ``results_published``, ``dropped_frames`` (all reasons), ``dropped_queue_full``,
    ``latency_p50_ms``, ``latency_p95_ms``, ``errors_total``, ``error.<kind>`` per kind,
    ``last_error``, then ``extra`` (device, refiner, stage timings...).

    :param header: stamp of the report
    :param name: status name, e.g. ``'l3rocc: pipeline'``
    :param hardware_id: e.g. the node's full name
    :param waiting_for: an input the node waits for (WARN)
    :param degraded: reasons the node runs degraded (WARN, and key ``degraded``)
    """
    level, message = assess(snap, waiting_for, degraded)
    values = [KeyValue(key=k, value=_fmt(snap[k])) for k in (
        'input_rate_hz', 'processed_rate_hz', 'frames_received', 'frames_processed',
        'results_published', 'dropped_frames', 'dropped_queue_full', 'latency_p50_ms',
        'latency_p95_ms')]
    values.append(KeyValue(key='errors_total', value=str(sum(snap['errors'].values()))))
    values += [KeyValue(key=f'error.{k}', value=str(n)) for k, n in sorted(snap['errors'].items())]
    values.append(KeyValue(key='last_error', value=snap['last_error']))
    values.append(KeyValue(key='degraded', value='; '.join(degraded)))
    values += [KeyValue(key=str(k), value=_fmt(v)) for k, v in extra.items()]
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=values)
    return DiagnosticArray(header=header, status=[status])
