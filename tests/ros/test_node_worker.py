"""The node's worker is a thread of its own: images arriving during a long frame cost nothing.

The worker used to be a guard-condition callback of a MultiThreadedExecutor. While it computed,
every new image made the guard condition ready again; the executor could not run it (its
callback group was busy) and looped in Python at up to a full core, holding the GIL the worker
needed. Now ``l3rocc_node`` spins a SingleThreadedExecutor, whose callbacks are all short, and
the worker is a thread. Here, spun the same way, the pipeline is made to take seconds per frame
(a wait: no CPU) while images keep coming: they must be received during the frame, and the
thread that spins the executor must stay nearly idle (its CPU time read from /proc).
"""

import os
import threading
import time

import pytest

pytest.importorskip('rclpy')

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    with open(f'/proc/self/task/{native_id}/stat', 'r', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='needs Linux /proc')
def test_inputs_are_served_while_the_worker_computes(ros_context, wall) -> None:
    run = wall.Running(ros_context)   # a SingleThreadedExecutor, as l3rocc_node spins
    release = threading.Event()
    try:
        node = run.node
        assert node._worker.is_alive() and node._worker.name == 'l3rocc_worker'
        pipeline = node.pipeline
        started = threading.Event()
        push = pipeline.push

        def slow_push(frame):
            started.set()
            release.wait(10.0)
            return push(frame)

        pipeline.push = slow_push
        run.client.publish_frame(0)
        assert started.wait(10.0), 'the worker never started a frame'
        spin = run.thread.native_id
        cpu0, wall0 = thread_cpu_s(spin), time.monotonic()

        def received() -> int:
            return node.stats.snapshot()['frames_received']

        before = received()
        run.client.feed(range(1, 21), period_s=0.05)   # 1 s of images at 20 Hz
        assert wall.wait_until(lambda: received() >= before + 20, 5.0), received() - before
        cpu = thread_cpu_s(spin) - cpu0
        elapsed = time.monotonic() - wall0
        assert node.busy and not release.is_set()   # all of it during the one frame
        assert cpu < 0.3 * elapsed, f'executor thread: {cpu:.2f} s CPU in {elapsed:.2f} s'
        pipeline.push = push
        release.set()
        last = run.client.feed([21, 22], period_s=0.1)
        assert run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 30.0)
    finally:
        release.set()
        run.close()
    assert not node._worker.is_alive()


@pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning')
def test_a_dead_worker_shows_in_diagnostics(ros_context, wall) -> None:
    """If the worker thread ever ended (nothing it catches), /diagnostics says so (WARN)."""
    from diagnostic_msgs.msg import DiagnosticStatus
    run = wall.Running(ros_context, node_name='l3rocc_dead')
    try:
        node = run.node
        hw = node.get_fully_qualified_name()
        assert run.client.wait_for(
            'diagnostics', lambda m: wall.diagnostic_values(m, hw).get('worker') == 'running',
            5.0)

        def die() -> None:
            raise SystemExit('stand-in for an error the worker does not catch')

        node._drain = die
        run.client.publish_frame(0)
        node._worker.join(5.0)
        assert not node._worker.is_alive()
        dead = run.client.wait_for(
            'diagnostics', lambda m: wall.diagnostic_values(m, hw).get('worker') == 'stopped',
            5.0)
        assert dead is not None
        status = [st for st in dead.status if st.hardware_id == hw][0]
        assert status.level == DiagnosticStatus.WARN and 'worker thread' in status.message
    finally:
        run.close()
