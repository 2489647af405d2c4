"""Process measurements of the benchmark (:mod:`l3rocc_bench.resources`)."""

import os
import sys

from l3rocc_bench.resources import proc_status, run_monitored


def test_resources_measure_a_child_and_this_process() -> None:
    me = proc_status(os.getpid())
    assert me['rss_mb'] > 10 and me['peak_rss_mb'] >= me['rss_mb'] and me['threads'] >= 1
    # (held for 0.6 s: VmHWM is sampled every 0.25 s)
    run = run_monitored([sys.executable, '-c', 'import time; b = bytearray(80_000_000); '
                         'b[::4096] = b"x" * len(b[::4096]); time.sleep(0.6)'])
    assert run['rc'] == 0 and not run['timed_out']
    assert run['peak_rss_mb'] >= 75, run
    # A small child of a parent that was big is small: its ru_maxrss carries the parent's peak.
    big = bytearray(300_000_000)
    big[::4096] = b'x' * len(big[::4096])
    run = run_monitored([sys.executable, '-c', 'import time; time.sleep(0.3)'])
    assert run['rc'] == 0 and run['peak_rss_mb'] < 100, run
    del big
    run = run_monitored([sys.executable, '-c', 'import time; time.sleep(0.3)'])
    assert run['rc'] == 0 and run['peak_rss_mb'] < 100, run
