"""Resource figures of processes: RSS, peak RSS, threads, CPU time (Linux ``/proc``), load.

:class:`ProcessMonitor` samples ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM`` = peak RSS,
``Threads``), the process's CPU time, the machine's CPU time (:func:`machine_cpu`) and load
average from a background thread, optionally with a fixed-work speed probe
(:func:`speed_probe`); :func:`run_monitored` runs a command under it.
"""

import os
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

MB = 1024.0 * 1024.0


def proc_status(pid: int) -> Optional[Dict[str, float]]:
    """RSS and peak RSS (MB), thread count and CPU seconds of a live process, or None if gone.

    ``cpu_s`` is the process's user + system time so far (all threads; children excluded).

    :param pid: process id
    """
    try:
        with open(f'/proc/{pid}/status', 'r', encoding='utf-8') as f:
            text = f.read()
    except OSError:
        return None
    out: Dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            out['rss_mb' if key == 'VmRSS' else 'peak_rss_mb'] = int(value.split()[0]) / 1024.0
        elif key == 'Threads':
            out['threads'] = float(value.strip())
    try:
        with open(f'/proc/{pid}/stat', 'r', encoding='utf-8') as f:
            stat = f.read()
        # fields after the parenthesised command name; utime and stime are fields 14 and 15
        fields = stat[stat.rindex(')') + 2:].split()
        out['cpu_s'] = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        pass
    return out or None


def machine_cpu() -> Dict[str, float]:
    """Return the machine's CPU seconds so far, all cores: ``busy_s`` and ``steal_s``.

    From the ``cpu`` line of ``/proc/stat``: busy = user + nice + system + irq + softirq
    (guest time is inside user); steal = time the hypervisor gave this VM's CPUs to others.
    Empty where unknown.
    """
    try:
        with open('/proc/stat', 'r', encoding='utf-8') as f:
            fields = f.readline().split()
        ticks = [int(v) for v in fields[1:9]]
    except (OSError, ValueError):
        return {}
    if len(ticks) < 8 or fields[0] != 'cpu':
        return {}
    hz = float(os.sysconf('SC_CLK_TCK'))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return {'busy_s': (user + nice + system + irq + softirq) / hz, 'steal_s': steal / hz}


def speed_probe(repeats: int = 3) -> float:
    """Return the CPU milliseconds (this thread's) of a fixed numpy workload, median of 3.

    The same work every call, timed in thread CPU time (not wall time, so waiting for a core
    does not count): it rises only when the machine itself gets slower per cycle of work
    (frequency, a noisy neighbour sharing caches and memory bandwidth). About 8 ms per
    repetition on the 2-core bench VM.
    """
    data = np.random.default_rng(0).random(1_000_000)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        np.sort(data)
        float(np.sum(np.sqrt(data)))
        times.append(time.thread_time() - start)
    return float(np.median(times)) * 1e3


def load_average() -> List[float]:
    """Return the 1, 5 and 15 minute load averages (empty where unknown)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ProcessMonitor:
    """Samples a process every ``period_s`` seconds until :meth:`stop`.

    :param pid: process id
    :param period_s: sampling period
    :param probe_every_s: also run :func:`speed_probe` this often (``probe_ms`` in that
        sample); None = never
    """

    def __init__(self, pid: int, period_s: float = 0.5, probe_every_s: Optional[float] = None):
        """Start sampling at once."""
        self.pid = pid
        self.period_s = float(period_s)
        self.probe_every_s = probe_every_s
        self._next_probe = 0.0
        self.samples: List[Dict[str, float]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f'monitor-{pid}', daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def sample(self) -> Optional[Dict[str, float]]:
        """Take one sample now (also called by the thread); None when the process is gone."""
        st = proc_status(self.pid)
        if st is not None:
            st['t_s'] = time.monotonic() - self.t0
            load = load_average()
            if load:
                st['load1'] = load[0]
            st.update({f'machine_{k}': v for k, v in machine_cpu().items()})
            if self.probe_every_s is not None and st['t_s'] >= self._next_probe:
                st['probe_ms'] = speed_probe()
                self._next_probe = st['t_s'] + self.probe_every_s
            self.samples.append(st)
        return st

    def stop(self) -> None:
        """Stop sampling (waits for the thread)."""
        self._stop.set()
        self._thread.join(timeout=2.0)

    @property
    def peak_rss_mb(self) -> Optional[float]:
        """Largest VmHWM seen (the kernel's peak RSS), in MB."""
        vals = [s['peak_rss_mb'] for s in self.samples if 'peak_rss_mb' in s]
        return max(vals) if vals else None

    @property
    def max_threads(self) -> Optional[int]:
        """Largest thread count seen."""
        vals = [s['threads'] for s in self.samples if 'threads' in s]
        return int(max(vals)) if vals else None


def run_monitored(cmd: Sequence[str], env: Optional[Dict[str, str]] = None,
                  timeout_s: Optional[float] = None, cwd: Optional[str] = None,
                  stdout: Any = None) -> Dict[str, Any]:
    """Run ``cmd`` to completion while sampling its memory.

    :param cmd: argument list (never a shell string)
    :param env: environment (default: this one)
    :param timeout_s: kill after this many seconds
    :param stdout: where the child's stdout goes (default: inherited)
    :return: ``rc``, ``wall_s``, ``peak_rss_mb`` (see below), ``max_threads``, ``timed_out``

    ``peak_rss_mb`` is the child's VmHWM (the kernel's high-water mark, sampled every 0.25 s,
    so a peak in its last quarter second can be missed), raised to the child's ``ru_maxrss``
    only where that exceeds this process's own peak RSS when the child started. Below that,
    ``ru_maxrss`` says nothing: Python starts children with vfork, and Linux records the shared
    memory's high-water mark, the parent's peak, as the child's ``ru_maxrss`` at exec (measured:
    a child that only sleeps reported its parent's 408 MB; both replays of ``l3rocc bench``
    reported the bench process's 3.4 GB).
    """
    own = (proc_status(os.getpid()) or {}).get('peak_rss_mb', 0.0)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=stdout)
    mon = ProcessMonitor(proc.pid, 0.25)
    timed_out = False
    ru_maxrss_mb = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                # Reaped here (for its rusage): tell Popen so it does not wait again.
                proc.returncode = os.waitstatus_to_exitcode(status)
                ru_maxrss_mb = usage.ru_maxrss / 1024.0      # Linux: kilobytes
                break
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                timed_out = True
                proc.kill()
            time.sleep(0.1)
    finally:
        mon.stop()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    peak = mon.peak_rss_mb
    if ru_maxrss_mb is not None and ru_maxrss_mb > 1.05 * own + 16.0:
        peak = max(peak or 0.0, ru_maxrss_mb)
    return {'rc': proc.returncode, 'wall_s': time.perf_counter() - t0,
            'peak_rss_mb': peak, 'max_threads': mon.max_threads, 'timed_out': timed_out}
