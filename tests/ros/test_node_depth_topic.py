"""A fixed camera with a registered depth topic: ``pose_source static`` + ``depth_source topic``.

The wall scene's camera stands still at x = 0 looking at the wall y = 2 m of ``odom`` (no TF at
all: its pose is ``camera_pose``); a real rclpy client publishes the image, camera_info and a
32FC1 depth image of 2 m with the same stamp. The node must publish the wall, and count each bad
depth input by its kind while the next good frame is still processed.
"""

import array
import math
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc_ros.messages import pointcloud2_to_array  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = 'l3rocc_fixed'
# camera_link at the origin, yawed to look along +y (the wall): its optical frame is the scene's
CAMERA_POSE = [0.0, 0.0, 0.0, 0.0, 0.0, math.pi / 2]


@pytest.fixture(scope='module')
def fixed(ros_context, wall):
    """Return the running node (static camera, depth topic) with a depth publisher added."""
    from rclpy.qos import qos_profile_sensor_data
    run = wall.Running(ros_context, {'pose_source': 'static', 'camera_pose': CAMERA_POSE,
                                     'depth_source': 'topic', 'tf_timeout_s': 0.5},
                       node_name=NAME)
    run.pub_depth = run.client.node.create_publisher(Image, '/depth', qos_profile_sensor_data)
    assert wall.wait_until(lambda: run.node.sub_depth.get_publisher_count() > 0, 10.0)
    yield run
    run.close()


def depth_msg(run, stamp_ns: int, depth: np.ndarray, encoding: str = '32FC1') -> Image:
    """Return a sensor_msgs/Image of ``depth`` (float32 metres or uint16 millimetres)."""
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(depth).tobytes())
    h, w = depth.shape
    return Image(header=run.client.header(stamp_ns), height=h, width=w,
                 encoding=encoding, is_bigendian=0, step=w * depth.itemsize, data=data)


def publish(run, wall, depth=None, image: bool = True, encoding: str = '32FC1') -> int:
    """Publish depth (default: the wall at 2 m) and then the image of one stamp."""
    stamp = time.time_ns()
    if depth is None:
        depth = np.full((wall.H, wall.W), wall.WALL_Y, np.float32)
    if depth is not False:
        run.pub_depth.publish(depth_msg(run, stamp, depth, encoding))
    if image:
        run.client.publish_frame(5, stamp, tf=False)
    return stamp


def test_fixed_camera_sees_the_wall_from_depth_alone(fixed, wall) -> None:
    stamps = []
    for _ in range(3):
        stamps.append(publish(fixed, wall))
        time.sleep(0.15)
    msg = fixed.client.wait_for('points', lambda m: wall.stamp_of(m) == stamps[-1], 30.0)
    assert msg is not None, wall.errors_of(fixed.node)
    pts = pointcloud2_to_array(msg)
    newest = pts[pts['t'] == 0.0]
    assert len(newest) > 50
    # every occupied voxel of the newest slice is the wall layer (y = 2 m, 5 cm voxels)
    assert np.all(np.abs(newest['y'] - wall.WALL_Y) <= 0.05 + 1e-6), np.unique(newest['y'])


@pytest.mark.parametrize('name, depth, encoding, kind', [
    ('no depth for the image', False, '32FC1', 'depth_missing'),
    ('depth of another size', np.full((60, 80), 2.0, np.float32), '32FC1',
     'depth_size_mismatch'),
    ('another encoding', np.full((120, 160), 2000, np.uint16), 'mono16', 'bad_depth_encoding'),
    ('all NaN', np.full((120, 160), np.nan, np.float32), '32FC1', 'depth_empty'),
])
def test_bad_depth_is_counted_and_the_next_frame_processed(fixed, wall, name, depth,
                                                           encoding, kind) -> None:
    before = wall.errors_of(fixed.node).get(kind, 0)
    publish(fixed, wall, depth, encoding=encoding)
    assert wall.wait_until(lambda: wall.errors_of(fixed.node).get(kind, 0) > before, 10.0), \
        f'{name}: {wall.errors_of(fixed.node)}'
    good = publish(fixed, wall)
    assert fixed.client.wait_for('points', lambda m: wall.stamp_of(m) == good, 30.0), name


def test_depth_without_its_image_is_counted(fixed, wall) -> None:
    before = wall.errors_of(fixed.node).get('depth_unpaired', 0)
    publish(fixed, wall, image=False)          # a depth image whose image never comes
    time.sleep(0.05)
    good = publish(fixed, wall)
    assert fixed.client.wait_for('points', lambda m: wall.stamp_of(m) == good, 30.0)
    assert wall.wait_until(
        lambda: wall.errors_of(fixed.node).get('depth_unpaired', 0) > before, 10.0)


def test_static_pose_from_tf_at_the_first_image(ros_context, wall) -> None:
    """Without camera_pose the fixed pose is TF world_frame -> camera at the first image."""
    from rclpy.qos import qos_profile_sensor_data
    run = wall.Running(ros_context, {'pose_source': 'static', 'depth_source': 'topic',
                                     'tf_timeout_s': 0.5}, node_name='l3rocc_fixed_tf')
    try:
        run.pub_depth = run.client.node.create_publisher(Image, '/depth',
                                                         qos_profile_sensor_data)
        assert wall.wait_until(lambda: run.node.sub_depth.get_publisher_count() > 0, 10.0)
        stamp = time.time_ns()
        run.client.publish_frame(5, stamp, camera_info=False, tf=True)   # TF of x = 0
        time.sleep(0.2)
        last = 0
        for _ in range(3):
            last = publish(run, wall)
            time.sleep(0.15)
        msg = run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 30.0)
        assert msg is not None, wall.errors_of(run.node)
        newest = pointcloud2_to_array(msg)
        newest = newest[newest['t'] == 0.0]
        assert len(newest) > 50
        assert np.all(np.abs(newest['y'] - wall.WALL_Y) <= 0.05 + 1e-6)
        # the wall spans x = 0 +- 1.3 m in view: centred on the camera at x = 0
        assert abs(float(np.median(newest['x']))) < 0.1
    finally:
        run.close()
