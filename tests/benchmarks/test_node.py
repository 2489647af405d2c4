"""The node benchmark's time series (:mod:`l3rocc_bench.node`); no node is started here."""

import os

import pytest

from l3rocc_bench.resources import machine_cpu, proc_status, speed_probe


def test_soak_series_says_where_the_time_went() -> None:
    """Each bucket: stage medians, node CPU (cores, ms per frame) and the machine's load."""
    from types import SimpleNamespace

    from l3rocc_bench.node import _series
    pub = SimpleNamespace(sent=[0.5 + k / 30.0 for k in range(600)])   # 30 Hz for 20 s
    # diagnostics at 1 Hz: 5 frames/s processed; the refiner slows down in the second bucket
    diags = [(float(t), {'frames_processed': 5.0 * t, 'frames_received': 30.0 * t,
                         'stage_ms.depth': 60.0, 'stage_ms.refiner': 30.0 if t < 10 else 45.0})
             for t in range(21)]
    # the node process uses 1.5 cores throughout
    # the machine: 1.9 cores busy (0.4 of them other processes), 0.05 cores stolen
    samples = [{'t_s': t / 2.0, 'cpu_s': 0.75 * t, 'rss_mb': 500.0, 'threads': 20.0,
                'load1': 1.0 + t / 40.0, 'machine_busy_s': 0.95 * t,
                'machine_steal_s': 0.025 * t, **({'probe_ms': 7.0 + t} if t % 4 == 0 else {})}
               for t in range(41)]
    rows = _series(pub, [], diags, samples, 0.0, 20.0, 10.0)
    assert [r['t_s'] for r in rows] == [10.0, 20.0]
    assert rows[0]['processed_fps'] == pytest.approx(5.0)
    assert rows[0]['node_cpu_cores'] == pytest.approx(1.5)
    assert rows[0]['cpu_ms_per_frame'] == pytest.approx(300.0)
    assert rows[0]['stage_ms'] == {'depth': 60.0, 'refiner': 30.0}
    assert rows[1]['stage_ms'] == {'depth': 60.0, 'refiner': 45.0}
    assert rows[1]['load1'] == pytest.approx(1.975) and rows[1]['rss_mb'] == 500.0
    assert rows[0]['other_cores'] == pytest.approx(0.4)
    assert rows[0]['steal_cores'] == pytest.approx(0.05)
    assert rows[0]['probe_ms'] == pytest.approx(15.0)   # median of t = 0, 4, ..., 16
    me = proc_status(os.getpid())
    assert me['cpu_s'] > 0
    machine = machine_cpu()
    assert machine['busy_s'] >= me['cpu_s'] * 0.5 and machine['steal_s'] >= 0.0
    assert speed_probe(repeats=1) > 0.0
