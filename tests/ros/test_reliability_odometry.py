"""Poses from nav_msgs/Odometry with reliable inputs: broken odometry and a QoS mismatch.

The node runs with ``pose_source: odometry`` and ``input_qos: reliable``; the camera publishes
reliably. A NaN odometry message is counted and its frame dropped; a best-effort camera
publisher (the usual ``sensor_data`` profile) cannot reach a reliable subscription, and the
node says so. Each case ends with a good frame that is processed.
"""

import math
import time

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = 'l3rocc_rel_odom'
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                      reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope='module')
def odo(ros_context, wall):
    """Return the running node (odometry poses, reliable inputs) with a reliable camera."""
    run = wall.Running(ros_context, {'pose_source': 'odometry', 'input_qos': 'reliable',
                                     'tf_timeout_s': 0.3, 'log_period_s': 0.0},
                       node_name=NAME, inputs='/odo', camera_qos=RELIABLE)
    client = run.client
    run.pub_odom = client.node.create_publisher(Odometry, '/odometry', 50)
    run.log = wall.RosoutCollector(client.node, NAME)
    run.k = 0
    assert wall.wait_until(lambda: run.node.sub_image.get_publisher_count() == 1
                           and run.node.sub_odometry.get_publisher_count() == 1
                           and run.log.sub.get_publisher_count() > 0, 10.0)
    for _ in range(2):
        good(run, wall, timeout=60.0)
    yield run
    run.close()


def odometry(stamp_ns: int, k: int, wall, position=None, orientation=None) -> Odometry:
    """Return the camera pose as nav_msgs/Odometry (odom -> optical frame) for view ``k``."""
    tf = wall.tf_msg(stamp_ns, k).transforms[0]
    msg = Odometry(header=tf.header, child_frame_id=wall.CAMERA)
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = position or (tf.transform.translation.x, 0.0, 0.0)
    r = tf.transform.rotation
    q.x, q.y, q.z, q.w = orientation or (r.x, r.y, r.z, r.w)
    return msg


def send(run, wall, stamp: int, **odom) -> None:
    """Publish odometry, camera_info and the image of view run.k at ``stamp``."""
    run.pub_odom.publish(odometry(stamp, run.k, wall, **odom))
    run.client.pub_info.publish(run.client.camera_info(stamp))
    # the image after its camera_info (a pose that comes late is waited for, tf_timeout_s)
    assert wall.wait_until(lambda: wall.holds_camera_info(run.node, stamp), 10.0)
    run.client.pub_image.publish(wall.image_msg(stamp, run.k))


def good(run, wall, timeout: float = 30.0) -> int:
    """Publish a good frame with its odometry; assert its ~/points arrive."""
    run.k = (run.k + 1) % 12
    stamp = time.time_ns()
    send(run, wall, stamp)
    got = run.client.wait_for('points', lambda m: wall.stamp_of(m) == stamp, timeout)
    assert got is not None, f'good frame not processed; {run.node.stats.snapshot()}'
    return stamp


@pytest.mark.parametrize('odom, says', [
    ({'position': (math.nan, 0.0, 0.0)}, 'is not finite'),
    ({'orientation': (0.0, math.nan, 0.0, 1.0)}, 'is not a rotation'),
], ids=['NaN position', 'NaN orientation'])
def test_nan_odometry_counted_frame_dropped_next_processed(odo, wall, odom, says) -> None:
    node = odo.node
    before = wall.errors_of(node)
    mark = odo.log.mark()
    stamp = time.time_ns()
    send(odo, wall, stamp, **odom)
    assert wall.wait_until(lambda: wall.errors_of(node).get('tf_extrapolation', 0)
                           > before.get('tf_extrapolation', 0), 10.0)
    assert wall.errors_of(node).get('bad_odometry', 0) == before.get('bad_odometry', 0) + 1
    line = odo.log.wait(mark, '/odometry', says)
    assert line is not None, [m.msg for m in odo.log.since(mark)]
    good(odo, wall)
    assert not any(wall.stamp_of(m) == stamp for m in odo.client.get('points'))
    hw = node.get_fully_qualified_name()
    msg = odo.client.wait_for('diagnostics', lambda m: int(wall.diagnostic_values(m, hw).get(
        'error.bad_odometry', 0)) > before.get('bad_odometry', 0), 5.0)
    status = [s for s in msg.status if s.hardware_id == hw][0]
    assert status.level == DiagnosticStatus.WARN and 'bad_odometry' in status.message


def test_best_effort_camera_into_reliable_input_reported(odo, wall) -> None:
    node, client = odo.node, odo.client
    before = wall.errors_of(node).get('qos_incompatible', 0)
    mark = odo.log.mark()
    told = []  # the publisher is told too (and rclpy's default handler stays quiet)
    best_effort = client.node.create_publisher(
        Image, '/odo/image', qos_profile_sensor_data,
        event_callbacks=PublisherEventCallbacks(incompatible_qos=told.append))
    try:
        assert wall.wait_until(lambda: wall.errors_of(node).get('qos_incompatible', 0) > before,
                               10.0), 'no incompatible-QoS event on the image input'
        line = odo.log.wait(mark, '/odo/image', 'RELIABILITY', "input_qos 'reliable'")
        assert line is not None, [m.msg for m in odo.log.since(mark)]
        best_effort.publish(wall.image_msg(time.time_ns()))  # never arrives
        good(odo, wall)  # the reliable camera still gets through
        assert told
    finally:
        client.node.destroy_publisher(best_effort)
