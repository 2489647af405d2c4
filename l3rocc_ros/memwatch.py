"""Memory of the node process: giving free heap back to the system, and soak diagnostics.

:func:`release_free_memory` is called by the node's worker every ``MALLOC_TRIM_PERIOD_S``.

``L3ROCC_MEMWATCH=SECONDS`` logs one line every SECONDS: RSS, the C heap as glibc sees it
(``mallinfo2``: bytes the arenas hold, bytes in use in them, free bytes they keep, bytes in
mmapped chunks) and, with ``L3ROCC_TRACEMALLOC=1`` as well, the Python heap
(``tracemalloc``: traced bytes and the ten source lines whose allocations grew most since the
first report, and since the previous one). Tracing costs CPU: use it to find a leak, not to
measure speed.

The lines go to the ``l3rocc_core.memwatch`` Python logger, which the node forwards to its rclpy
logger (console and ``/rosout``).
"""

import ctypes
import ctypes.util
import logging
import os
import threading
import tracemalloc
from typing import Dict, List, Optional

LOG = logging.getLogger('l3rocc_core.memwatch')
MB = 1024.0 * 1024.0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
        'fordblks', 'keepcost')]


_LIBC: List[Optional[ctypes.CDLL]] = []


def _libc() -> Optional[ctypes.CDLL]:
    """Return the C library (loaded once), or None where it cannot be loaded."""
    if not _LIBC:
        name = ctypes.util.find_library('c')
        try:
            _LIBC.append(ctypes.CDLL(name) if name else None)
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def malloc_figures() -> Dict[str, float]:
    """Figures of glibc's allocator over all arenas (MB); empty where ``mallinfo2`` is missing.

    ``heap_mb``: bytes obtained from the system for the arenas (not mmapped chunks);
    ``in_use_mb``: bytes in use by the program inside them; ``free_mb``: free bytes kept in
    them (fragmentation or cache); ``mmapped_mb``: large chunks served by ``mmap``.
    """
    libc = _libc()
    fn = getattr(libc, 'mallinfo2', None) if libc is not None else None
    if fn is None:
        return {}
    fn.restype = _Mallinfo2
    info = fn()
    return {'heap_mb': info.arena / MB, 'in_use_mb': info.uordblks / MB,
            'free_mb': info.fordblks / MB, 'mmapped_mb': info.hblkhd / MB}


def release_free_memory() -> bool:
    """Give the free memory kept by glibc's arenas back to the system (``malloc_trim(0)``).

    A thread that frees a buffer leaves its pages in its arena for reuse; with a few dozen
    threads (DDS, executor, torch) every arena keeps the peak of what was freed in it, and the
    node's RSS creeps up for minutes although the memory in use is flat. Trimming returns every
    whole free page (``MADV_DONTNEED``), also inside the arenas.

    :return: whether trimming is available (glibc); False elsewhere, where it does nothing
    """
    libc = _libc()
    fn = getattr(libc, 'malloc_trim', None) if libc is not None else None
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn(0)
    return True


M_ARENA_MAX = -8   # mallopt parameter (malloc.h)


def limit_arenas(count: int) -> bool:
    """Let glibc create at most ``count`` malloc arenas (``mallopt(M_ARENA_MAX)``).

    By default every thread that allocates under contention gets an arena of its own (up to
    8 per core), and each arena keeps the peak of what was freed in it. The node's worker runs
    on whichever executor thread is free, so its per-frame buffers end up copied into several
    arenas. Call before the threads start; ``MALLOC_ARENA_MAX`` in the environment wins.

    :return: whether the limit was set (False: not glibc, or the environment sets it)
    """
    if 'MALLOC_ARENA_MAX' in os.environ:
        return False
    libc = _libc()
    fn = getattr(libc, 'mallopt', None) if libc is not None else None
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(fn(M_ARENA_MAX, int(count)))


def rss_mb() -> Optional[float]:
    """Resident set size of this process (MB), or None off Linux."""
    try:
        with open('/proc/self/statm', 'r', encoding='ascii') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / MB
    except (OSError, ValueError, IndexError):
        return None


def _top(diff: List[tracemalloc.StatisticDiff], n: int) -> str:
    rows = []
    for stat in diff[:n]:
        frame = stat.traceback[0]
        rows.append(f'{frame.filename.rsplit("/", 2)[-1]}:{frame.lineno} '
                    f'{stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks, '
                    f'{stat.size / 1024:.0f} KiB now)')
    return '; '.join(rows)


class MemWatch:
    """Logs memory figures every ``period_s`` seconds from a daemon thread.

    :param period_s: seconds between reports
    :param trace: also trace Python allocations (``tracemalloc``) and log the top growth
    """

    def __init__(self, period_s: float, trace: bool = False):
        """Start tracing (when asked) and the reporting thread."""
        self.period_s = float(period_s)
        self.trace = trace
        self._stop = threading.Event()
        self._first: Optional[tracemalloc.Snapshot] = None
        self._last: Optional[tracemalloc.Snapshot] = None
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start(1)
        self._thread = threading.Thread(target=self._loop, name='l3rocc-memwatch', daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.report()
            except (OSError, ValueError, RuntimeError) as exc:
                LOG.warning('memwatch: report failed: %s: %s', type(exc).__name__, exc)

    def report(self) -> str:
        """Log one line (and, when tracing, the top growth); return the first line."""
        m = malloc_figures()
        text = f'memwatch: rss {rss_mb() or 0:.1f} MB' + ''.join(
            f', {k} {v:.1f}' for k, v in m.items())
        if self.trace:
            snap = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),))
            cur, peak = tracemalloc.get_traced_memory()
            text += f', python traced {cur / MB:.1f} MB (peak {peak / MB:.1f})'
            if self._first is None:
                self._first = snap
            else:
                LOG.info('memwatch: growth since first report: %s',
                         _top(snap.compare_to(self._first, 'lineno'), 10))
                LOG.info('memwatch: growth since last report: %s',
                         _top(snap.compare_to(self._last, 'lineno'), 5))
            self._last = snap
        LOG.info(text)
        return text

    def stop(self) -> None:
        """Stop reporting (the thread ends at its next wake-up)."""
        self._stop.set()


def from_environment() -> Optional[MemWatch]:
    """Return a :class:`MemWatch` when ``L3ROCC_MEMWATCH`` is a period in seconds, else None."""
    value = os.environ.get('L3ROCC_MEMWATCH', '').strip()
    if not value:
        return None
    try:
        period = float(value)
    except ValueError:
        LOG.warning('L3ROCC_MEMWATCH=%r is not a number of seconds; memory reports off', value)
        return None
    if not period > 0:
        return None
    return MemWatch(period, os.environ.get('L3ROCC_TRACEMALLOC', '') not in ('', '0'))
