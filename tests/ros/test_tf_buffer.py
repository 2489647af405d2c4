"""Poses from real /tf and /tf_static messages: late-joining static, waiting, time jumps."""

import threading
import time
from typing import Any, List, Tuple

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('tf2_msgs.msg', reason='tf2_msgs is not built (make setup)')

from geometry_msgs.msg import TransformStamped  # noqa: E402
from l3rocc_core.tf_tree import TransformUnavailable  # noqa: E402
from l3rocc_ros.tf_buffer import TF_STATIC_QOS, TopicPoseLookup  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

pytestmark = pytest.mark.ros

S = 1_000_000_000


def transform(parent: str, child: str, stamp_ns: int, xyz=(0.0, 0.0, 0.0),
              q=(0.0, 0.0, 0.0, 1.0)) -> TransformStamped:
    """Return a TransformStamped parent -> child."""
    ts = TransformStamped(child_frame_id=child)
    ts.header.frame_id = parent
    ts.header.stamp.sec, ts.header.stamp.nanosec = divmod(int(stamp_ns), S)
    t = ts.transform.translation
    t.x, t.y, t.z = (float(v) for v in xyz)
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return ts


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope='module')
def tf_setup(ros_context, wall):
    """Return (lookup, publisher node's /tf publisher, errors list) on a spinning executor.

    ``/tf_static`` is published before the lookup exists (a late joiner must still get it).
    """
    pub_node = rclpy.create_node('tf_test_publisher', context=ros_context)
    static_pub = pub_node.create_publisher(TFMessage, '/tf_static', TF_STATIC_QOS)
    static_pub.publish(TFMessage(transforms=[
        transform('base', 'cam', 0, xyz=(0.0, 0.0, 1.0), q=(0.0, 0.0, 0.7071068, 0.7071068))]))
    tf_pub = pub_node.create_publisher(TFMessage, '/tf', 100)
    node = rclpy.create_node('tf_test_node', context=ros_context)
    errors: List[Tuple[str, str, str]] = []
    lookup = TopicPoseLookup(node, on_error=lambda *a: errors.append(a))
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    executor.add_node(pub_node)
    thread = wall.spin_in_thread(executor)
    assert wait_until(lambda: tf_pub.get_subscription_count() > 0)
    yield lookup, tf_pub, errors
    thread.stop()
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    pub_node.destroy_node()


def publish(tf_pub: Any, *transforms: TransformStamped) -> None:
    """Publish one TFMessage."""
    tf_pub.publish(TFMessage(transforms=list(transforms)))


def test_static_received_by_late_joiner_and_dynamic_interpolated(tf_setup) -> None:
    lookup, tf_pub, _ = tf_setup
    assert wait_until(lambda: lookup.has_frame('cam')), 'static transform not received'
    publish(tf_pub, transform('odom', 'base', 1 * S, xyz=(1.0, 0.0, 0.0)))
    publish(tf_pub, transform('odom', 'base', 2 * S, xyz=(3.0, 0.0, 0.0)))
    T = lookup.wait_lookup('odom', 'cam', int(1.5 * S), time.monotonic() + 5.0)
    # base at x = 2 (halfway), camera 1 m above it, turned 90 degrees about z
    np.testing.assert_allclose(T[:3, 3], [2.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-6)


def test_wait_returns_when_the_transform_arrives(tf_setup) -> None:
    lookup, tf_pub, _ = tf_setup
    publish(tf_pub, transform('odom', 'base', 3 * S, xyz=(4.0, 0.0, 0.0)))
    assert wait_until(lambda: lookup.has_frame('base'))
    timer = threading.Timer(0.3, publish, (tf_pub, transform('odom', 'base', 4 * S,
                                                             xyz=(6.0, 0.0, 0.0))))
    start = time.monotonic()
    timer.start()
    T = lookup.wait_lookup('odom', 'base', int(3.5 * S), start + 5.0)
    waited = time.monotonic() - start
    assert 0.2 <= waited < 4.0
    np.testing.assert_allclose(T[:3, 3], [5.0, 0.0, 0.0], atol=1e-6)


def test_wait_gives_up_at_the_deadline_with_a_kind(tf_setup) -> None:
    lookup, _, _ = tf_setup
    start = time.monotonic()
    with pytest.raises(TransformUnavailable) as err:
        lookup.wait_lookup('odom', 'cam', 50 * S, start + 0.3)
    assert err.value.kind == 'tf_extrapolation'
    assert 0.25 <= time.monotonic() - start < 2.0
    with pytest.raises(TransformUnavailable) as err:
        lookup.wait_lookup('odom', 'no_such_frame', 3 * S, time.monotonic() + 0.1)
    assert err.value.kind == 'tf_missing' and 'no_such_frame' in str(err.value)


def test_bad_quaternion_reported_not_stored(tf_setup) -> None:
    lookup, tf_pub, errors = tf_setup
    publish(tf_pub, transform('odom', 'broken', 3 * S, q=(0.0, 0.0, 0.0, 0.0)))
    assert wait_until(lambda: any(e[0] == 'bad_tf' for e in errors))
    kind, topic, message = [e for e in errors if e[0] == 'bad_tf'][0]
    assert topic == '/tf' and 'broken' in message
    assert not lookup.has_frame('broken')


def test_time_jump_back_clears_dynamic_keeps_static(tf_setup) -> None:
    lookup, tf_pub, _ = tf_setup
    publish(tf_pub, transform('odom', 'base', 100 * S, xyz=(9.0, 0.0, 0.0)))
    assert wait_until(lambda: lookup.wait_lookup('odom', 'base', 100 * S,
                                                 time.monotonic() + 1.0) is not None)
    publish(tf_pub, transform('odom', 'base', 1 * S, xyz=(7.0, 0.0, 0.0)))  # bag loop
    publish(tf_pub, transform('odom', 'base', 1 * S + S // 10, xyz=(7.0, 0.0, 0.0)))
    assert wait_until(lambda: not _resolves(lookup, 100 * S))
    T = lookup.wait_lookup('odom', 'cam', 1 * S, time.monotonic() + 1.0)
    np.testing.assert_allclose(T[:3, 3], [7.0, 0.0, 1.0], atol=1e-6)


def test_stray_old_stamp_is_reported_and_keeps_the_buffer(tf_setup) -> None:
    """One transform stamped zero in a stream at 200 s is not a bag loop: nothing is cleared."""
    lookup, tf_pub, errors = tf_setup
    publish(tf_pub, transform('odom', 'base', 200 * S, xyz=(2.0, 0.0, 0.0)))
    assert wait_until(lambda: _resolves(lookup, 200 * S))
    publish(tf_pub, transform('odom', 'base', 0, xyz=(5.0, 0.0, 0.0)))  # uninitialised stamp
    assert wait_until(lambda: any(e[0] == 'tf_stamp_jump_back' for e in errors))
    publish(tf_pub, transform('odom', 'base', 201 * S, xyz=(3.0, 0.0, 0.0)))
    T = lookup.wait_lookup('odom', 'base', 200 * S + S // 2, time.monotonic() + 2.0)
    np.testing.assert_allclose(T[:3, 3], [2.5, 0.0, 0.0], atol=1e-6)


def _resolves(lookup: TopicPoseLookup, stamp_ns: int) -> bool:
    try:
        lookup.lookup('odom', 'base', stamp_ns)
    except TransformUnavailable:
        return False
    return True
