"""The node in simulated time, and what it does with missing or inconsistent inputs.

The node runs with ``use_sim_time`` (the client publishes /clock = each frame's stamp, starting
at 1000 s), inputs remapped to ``/sim/...``. Each test checks the node stayed alive, counted the
problem in /diagnostics, and processed the next good frame.
"""

import time
from typing import Dict, List

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from l3rocc_ros.messages import occupancy_from_msg  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = 'l3rocc_sim'
T0 = 1000 * 1_000_000_000
DT = 100_000_000


@pytest.fixture(scope='module')
def sim(ros_context, wall):
    """Return the running node (use_sim_time, tf_timeout_s 0.3 s) and its client."""
    run = wall.Running(ros_context, {'use_sim_time': True, 'tf_timeout_s': 0.3},
                       node_name=NAME, inputs='/sim')
    run.next_k = 0
    run.next_stamp = T0
    yield run
    run.close()


def frames(run, n: int) -> List[int]:
    """Return the next ``n`` (k, stamp) pairs of the scene and advance the counters."""
    out = [(run.next_k + i, run.next_stamp + i * DT) for i in range(n)]
    run.next_k += n
    run.next_stamp += n * DT
    return out


def feed(run, n: int) -> int:
    """Publish the next ``n`` good frames with /clock; return the last stamp."""
    pairs = frames(run, n)
    return run.client.feed([k for k, _ in pairs], stamps=[s for _, s in pairs], clock=True)


def diag(run, wall, predicate, timeout: float = 5.0) -> Dict[str, str]:
    """Return the values of the first /diagnostics of the node satisfying ``predicate``."""
    hw = run.node.get_fully_qualified_name()
    msg = run.client.wait_for('diagnostics', lambda m: any(
        s.hardware_id == hw for s in m.status) and predicate(
        wall.diagnostic_values(m, hw), [s for s in m.status if s.hardware_id == hw][0]),
        timeout)
    assert msg is not None, 'no matching /diagnostics'
    return wall.diagnostic_values(msg, run.node.get_fully_qualified_name())


def published(run, wall, stamp: int, timeout: float = 30.0) -> bool:
    """Tell whether ~/points for ``stamp`` arrived."""
    return run.client.wait_for('points', lambda m: wall.stamp_of(m) == stamp,
                               timeout) is not None


def test_waits_for_camera_info_then_processes(sim, wall) -> None:
    for k, stamp in frames(sim, 3):
        sim.client.publish_clock(stamp)
        sim.client.publish_frame(k, stamp, camera_info=False)
        time.sleep(0.1)
    values = diag(sim, wall, lambda v, s: int(v.get('error.no_camera_info', 0)) >= 1
                  and s.level == DiagnosticStatus.WARN and 'camera_info' in s.message)
    assert values['results_published'] == '0'
    assert sim.client.get('points') == []
    last = feed(sim, 6)
    assert published(sim, wall, last)


def test_sim_time_drives_stamps_and_latency(sim, wall) -> None:
    last = sim.client.stamps[-1]
    values = diag(sim, wall, lambda v, s: v.get('latency_p95_ms', 'n/a') != 'n/a')
    # stamps are at ~1000 s: with the wall clock the latency would be ~1.7e12 ms
    assert 0.0 <= float(values['latency_p95_ms']) < 10_000
    stamps = [wall.stamp_of(m) for m in sim.client.get('diagnostics')]
    assert any(abs(s - last) < 10 * 1_000_000_000 for s in stamps)


def test_out_of_order_and_duplicate_stamps_dropped(sim, wall) -> None:
    node = sim.node
    last = sim.client.stamps[-1]
    k = sim.next_k
    before = wall.errors_of(node)

    def risen(kind: str) -> bool:
        return wall.errors_of(node).get(kind, 0) > before.get(kind, 0)
    sim.client.publish_frame(k, last)  # duplicate
    assert wall.wait_until(lambda: risen('stamp_duplicate'), 10.0)
    sim.client.publish_frame(k, last - DT // 2)  # older than the previous frame
    assert wall.wait_until(lambda: risen('stamp_out_of_order'), 10.0)
    good = feed(sim, 2)
    assert published(sim, wall, good)
    after = wall.errors_of(node)
    added = {kind: n - before.get(kind, 0) for kind, n in after.items()
             if n != before.get(kind, 0)}
    assert added == {'stamp_duplicate': 1, 'stamp_out_of_order': 1}
    # /diagnostics says the same: two more errors, the last one the out-of-order frame's
    values = diag(sim, wall, lambda v, s: int(v.get('errors_total', 0)) == sum(after.values()))
    assert values['error.stamp_duplicate'] == str(after['stamp_duplicate'])
    assert values['error.stamp_out_of_order'] == str(after['stamp_out_of_order'])
    assert values['last_error'].startswith(
        f'stamp_out_of_order: image stamp {(last - DT // 2) / 1e9:.6f} s is not newer than '), \
        values['last_error']
    assert not any(wall.stamp_of(m) == last - DT // 2 for m in sim.client.get('points'))


def test_missing_tf_dropped_after_timeout_then_recovers(sim, wall) -> None:
    (k, stamp), = frames(sim, 1)
    sim.client.publish_clock(stamp)
    sim.client.publish_frame(k, stamp, tf=False)
    values = diag(sim, wall, lambda v, s: int(v.get('error.tf_extrapolation', 0)) >= 1)
    assert 'tf_timeout_s' in values['last_error']
    good = feed(sim, 2)
    assert published(sim, wall, good)
    assert not any(wall.stamp_of(m) == stamp for m in sim.client.get('points'))


def test_time_jump_back_restarts_the_window(sim, wall) -> None:
    before = len(sim.client.get('occupancy'))
    sim.next_stamp = T0 - 100 * 1_000_000_000  # bag loop: 100 s back
    last = feed(sim, 3)
    assert published(sim, wall, last)
    occ_msgs = sim.client.get('occupancy')[before:]
    newest = [m for m in occ_msgs if wall.stamp_of(m) == last]
    assert newest, 'no ~/occupancy after the jump'
    occ = occupancy_from_msg(newest[0])
    assert occ.num_slices <= 3  # only frames after the jump
    assert occ.stamps_ns.min() >= T0 - 100 * 1_000_000_000


def test_exception_inside_the_pipeline_counted_node_alive(sim, wall, monkeypatch) -> None:
    refiner = sim.node._pipeline.refiner
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError('injected refiner fault')

    monkeypatch.setattr(refiner, 'refine', broken)
    (k, stamp), = frames(sim, 1)
    sim.client.publish_clock(stamp)
    sim.client.publish_frame(k, stamp)
    values = diag(sim, wall, lambda v, s: int(v.get('error.pipeline_error', 0)) >= 1)
    assert 'injected refiner fault' in values['last_error'] and calls
    monkeypatch.undo()
    good = feed(sim, 2)
    assert published(sim, wall, good)
    assert not any(wall.stamp_of(m) == stamp for m in sim.client.get('points'))


def test_parameter_change_rebuilds_the_pipeline(sim, wall) -> None:
    from rclpy.parameter import Parameter
    old = sim.node._pipeline
    result = sim.node.set_parameters([Parameter('num_depth_planes', value=24)])[0]
    assert result.successful, result.reason
    good = feed(sim, 2)
    assert published(sim, wall, good)
    assert sim.node._pipeline is not old
    assert sim.node._pipeline.config.depth.num_depth_planes == 24


def test_output_parameter_change_reaches_the_pipeline_without_a_rebuild(sim, wall) -> None:
    from rclpy.parameter import Parameter
    old = sim.node._pipeline
    result = sim.node.set_parameters([Parameter('occupancy_hysteresis', value=0.05)])[0]
    assert result.successful, result.reason
    good = feed(sim, 2)
    assert published(sim, wall, good)
    assert sim.node._pipeline is old       # the window goes on
    assert sim.node._pipeline.config.output.occupancy_hysteresis == 0.05
