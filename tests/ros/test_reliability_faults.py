"""Faults around a running node: driver restart, QoS mismatch, TF pause, CUDA OOM, restarts.

Each test checks that the node stayed alive, that /diagnostics and /rosout said what happened,
and that the following good frame produced output. An exception inside the model is proven in
test_node_inputs.py (``test_exception_inside_the_pipeline_counted_node_alive``).
"""

import logging
import threading
import time
import weakref

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')
torch = pytest.importorskip('torch')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from l3rocc_core.refiner.geometry import GeometryRefiner  # noqa: E402
import rclpy  # noqa: E402
from rclpy.event_handler import SubscriptionEventCallbacks  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

# These tests wait for DDS discovery events (QoS incompatibility, a restarted publisher, TF
# resuming) inside a long suite; on a 2-core machine one run in three missed an event within
# its 10 s wait. A failure must repeat twice more to count. Each test gets its own node and
# client: in one fresh-clone run the in-process client's images stopped reaching the node after
# the previous test destroyed a subscription of the same participant, and with one node for the
# whole module every later test (and every rerun) failed with it.
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.flaky(reruns=2, reruns_delay=2)]

NAME = 'l3rocc_rel_faults'


@pytest.fixture
def flt(ros_context, wall):
    """Return the running node (tf_timeout_s 0.3 s, every problem logged) and its client."""
    run = wall.Running(ros_context, {'tf_timeout_s': 0.3, 'log_period_s': 0.0},
                       node_name=NAME, inputs='/flt')
    run.context = ros_context
    run.log = wall.RosoutCollector(run.client.node, NAME)
    assert wall.wait_until(lambda: run.log.sub.get_publisher_count() > 0, 10.0)
    last = run.client.feed(range(2))
    assert run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 60.0)
    yield run
    run.close()


def processed(run, wall, frames, timeout: float = 30.0) -> int:
    """Feed ``frames`` (view indices) at 10 Hz; assert the last one's ~/points arrive."""
    last = run.client.feed(frames)
    got = run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, timeout)
    assert got is not None, f'frame {last} not processed; {run.node.stats.snapshot()}'
    return last


def status_of(run, wall, predicate, timeout: float = 5.0):
    """Return the node's first DiagnosticStatus (and values) for which ``predicate`` holds."""
    hw = run.node.get_fully_qualified_name()

    def ok(msg) -> bool:
        mine = [s for s in msg.status if s.hardware_id == hw]
        return bool(mine) and predicate(mine[0], wall.diagnostic_values(msg, hw))
    msg = run.client.wait_for('diagnostics', ok, timeout)
    assert msg is not None, [(s.message, wall.diagnostic_values(m, hw).get('degraded'))
                             for m in run.client.get('diagnostics')[-3:] for s in m.status
                             if s.hardware_id == hw]
    return [s for s in msg.status if s.hardware_id == hw][0]


def test_camera_driver_restart(flt, wall) -> None:
    """The publishing node dies and a new one comes up: frames flow again."""
    node = flt.node
    processed(flt, wall, [2, 3])
    old = flt.client
    flt.executor.remove_node(old.node)
    old.node.destroy_node()
    assert wall.wait_until(lambda: node.sub_image.get_publisher_count() == 0, 10.0)
    flt.client = wall.Client(flt.context, '/flt', NAME)  # the driver's node is back, silent
    flt.executor.add_node(flt.client.node)
    status_of(flt, wall, lambda s, v: s.level == DiagnosticStatus.WARN
              and 'no images received' in s.message, timeout=10.0)
    assert wall.wait_until(lambda: node.sub_image.get_publisher_count() == 1
                           and flt.client.pub_image.get_subscription_count() == 1
                           and node.pub_points.get_subscription_count() == 1, 10.0)
    flt.log = wall.RosoutCollector(flt.client.node, NAME)
    processed(flt, wall, [4, 5, 6])


def test_output_qos_mismatch_reported(flt, wall) -> None:
    """A subscriber asking for transient-local points (the node offers volatile) is reported."""
    node, client = flt.node, flt.client
    before = wall.errors_of(node).get('qos_incompatible', 0)
    mark = flt.log.mark()
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    told = []  # the subscriber is told too (and rclpy's default handler stays quiet)
    sub = client.node.create_subscription(
        PointCloud2, f'/{NAME}/points', lambda m: None, qos,
        event_callbacks=SubscriptionEventCallbacks(incompatible_qos=told.append))
    try:
        assert wall.wait_until(lambda: wall.errors_of(node).get('qos_incompatible', 0) > before,
                               10.0), 'no incompatible-QoS event on ~/points'
        line = flt.log.wait(mark, f'/{NAME}/points', 'DURABILITY', 'receives nothing')
        assert line is not None, [m.msg for m in flt.log.since(mark)]
        processed(flt, wall, [7, 8])  # the compatible subscriber still gets everything
        status = status_of(flt, wall, lambda s, v: int(v.get('error.qos_incompatible', 0))
                           > before)
        assert status.level == DiagnosticStatus.WARN and 'qos_incompatible' in status.message
        assert told
    finally:
        client.node.destroy_subscription(sub)


def test_tf_publisher_pause(flt, wall) -> None:
    """/tf stops for a second: frames dropped with a reason, then the stream recovers."""
    node, client = flt.node, flt.client
    before = wall.errors_of(node).get('tf_extrapolation', 0)
    mark = flt.log.mark()
    for k in range(9, 19):  # one second of images without /tf
        client.publish_frame(k, tf=False)
        time.sleep(0.1)
    assert wall.wait_until(lambda: wall.errors_of(node).get('tf_extrapolation', 0) > before,
                           10.0)
    status_of(flt, wall, lambda s, v: s.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
              and 'tf_extrapolation' in s.message)
    assert flt.log.wait(mark, '/flt/image', 'tf_extrapolation', 'within tf_timeout_s 0.3 s')
    start = time.monotonic()
    processed(flt, wall, [19, 20])
    # each frame waited at most tf_timeout_s: the worker was not stuck on the pause
    assert time.monotonic() - start < 20.0
    assert wall.wait_until(lambda: not node.busy and node.diagnostics_extra()['queued'] == 0,
                           10.0)
    snap = node.stats.snapshot()
    accounted = (snap['frames_processed'] + snap['dropped_frames'] + snap['dropped_queue_full'])
    assert accounted == snap['frames_received'], snap


OOM_TEXT = 'CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)'


class OutOfMemoryRefiner(GeometryRefiner):
    """A real refiner whose GPU allocation fails: raises a real ``torch.cuda.OutOfMemoryError``.

    Like a real stage, it holds a work tensor in a local variable when the allocation fails;
    ``buffers`` keeps weak references to them.
    """

    calls = 0
    buffers: list = []

    def refine(self, features, logodds, observed):
        """Fail like a CUDA allocation of a too large buffer, after a first one succeeded."""
        OutOfMemoryRefiner.calls += 1
        work = torch.empty_like(logodds)
        OutOfMemoryRefiner.buffers.append(weakref.ref(work))
        raise torch.cuda.OutOfMemoryError(OOM_TEXT)


def spy_on_freeing(node) -> list:
    """Record, each time the node frees device memory, which OOM work tensors are still alive.

    Wraps the node's own ``_free_device_memory`` (the real one still runs).
    """
    alive = []
    real = node._free_device_memory

    def free() -> None:
        real()
        alive.append([r for r in OutOfMemoryRefiner.buffers if r() is not None])
    node._free_device_memory = free
    return alive


def test_cuda_oom_falls_back_to_cpu(flt, wall) -> None:
    """CUDA OOM inside the model: memory freed, pipeline rebuilt on the CPU, frame retried.

    No GPU is needed: the error is a real ``torch.cuda.OutOfMemoryError`` raised by a real
    refiner object put into the running pipeline through its public ``refiner`` attribute.
    When the memory is freed, nothing (no traceback) keeps the failed stage's tensors alive.
    """
    node, client = flt.node, flt.client
    old = node.pipeline
    old.refiner = OutOfMemoryRefiner()
    alive = spy_on_freeing(node)
    mark = flt.log.mark()
    stamp = client.publish_frame(21)
    assert client.wait_for('points', lambda m: wall.stamp_of(m) == stamp, 30.0) is not None, \
        f'the frame that hit the OOM was not retried; {node.stats.snapshot()}'
    assert OutOfMemoryRefiner.calls == 1
    assert alive == [[]], 'a tensor of the failed stage was still referenced when memory was freed'
    assert node.pipeline is not old and str(node.pipeline.device) == 'cpu'
    assert not isinstance(node.pipeline.refiner, OutOfMemoryRefiner)
    assert 'device' in node.degraded
    line = flt.log.wait(mark, '/flt/image', 'CUDA out of memory', 'rebuilt on the CPU')
    assert line is not None and line.level == 30  # WARN
    status = status_of(flt, wall, lambda s, v: int(v.get('error.cuda_oom', 0)) == 1
                       and 'degraded' in s.message)
    assert status.level == DiagnosticStatus.WARN and 'CPU' in status.message
    processed(flt, wall, [22, 23])


def test_cuda_oom_in_the_depth_stage_again(flt, wall) -> None:
    """A second OOM, in the plane sweep this time: counted, logged, frame retried, node alive.

    The running pipeline's depth estimator raises a real ``torch.cuda.OutOfMemoryError`` (its
    ``estimate`` replaced on that one instance).
    """
    node, client = flt.node, flt.client
    processed(flt, wall, [24, 25])    # the window has sources: the next frame runs the sweep
    before = int(node.stats.snapshot()['errors'].get('cuda_oom', 0))
    old = node.pipeline
    calls = []

    def estimate(ref, sources):
        calls.append(ref.stamp_ns)
        raise torch.cuda.OutOfMemoryError(OOM_TEXT)
    old.depth_estimator.estimate = estimate
    mark = flt.log.mark()
    stamp = client.publish_frame(26)
    assert client.wait_for('points', lambda m: wall.stamp_of(m) == stamp, 30.0) is not None, \
        f'the frame that hit the OOM was not retried; {node.stats.snapshot()}'
    assert len(calls) == 1 and node.pipeline is not old
    assert int(node.stats.snapshot()['errors']['cuda_oom']) == before + 1
    # log_period_s 0 here: the repeated OOM is logged too (rate-limited otherwise)
    assert flt.log.wait(mark, '/flt/image', 'CUDA out of memory',
                        'depth stage failed') is not None
    processed(flt, wall, [27, 28])


def test_restart_safe_in_fresh_contexts(wall) -> None:
    """Start, use and stop the node twice, each in a new rclpy context: nothing accumulates."""
    core_handlers = len(logging.getLogger('l3rocc_core').handlers)
    threads = None
    for i in range(2):
        context = rclpy.context.Context()
        rclpy.init(context=context)
        try:
            run = wall.Running(context, {'tf_timeout_s': 0.3}, node_name='l3rocc_rel_restart',
                               inputs='/rst')
            try:
                assert len(logging.getLogger('l3rocc_core').handlers) == core_handlers + 1
                last = run.client.feed(range(3))
                assert run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 60.0)
            finally:
                run.close()
        finally:
            rclpy.try_shutdown(context=context)
        assert len(logging.getLogger('l3rocc_core').handlers) == core_handlers
        if threads is None:  # close() joins the node's threads: none is still ending here
            threads = threading.active_count()
    assert wall.wait_until(lambda: threading.active_count() <= threads, 5.0), \
        f'threads left behind by a stopped node: {[t.name for t in threading.enumerate()]}'
