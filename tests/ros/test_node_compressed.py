"""``image_transport: compressed``: JPEG frames on image/compressed give the same occupancy."""

import time

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc_ros.messages import pointcloud2_to_array  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_jpeg_frames_processed(ros_context, wall) -> None:
    run = wall.Running(ros_context, {'image_transport': 'compressed'}, node_name='l3rocc_jpeg',
                       inputs='/jpeg')
    try:
        assert run.node.image_topic == '/jpeg/image/compressed'
        last = 0
        for k in range(8):
            last = run.client.publish_frame(k, jpeg=True)
            time.sleep(0.1)
        points = run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 60.0)
        assert points is not None, run.node.stats.snapshot()
        pts = pointcloud2_to_array(points)
        newest = pts[pts['t'] == 0.0]
        assert len(newest) >= 50
        assert np.median(np.abs(newest['y'] - wall.WALL_Y)) <= 0.1
    finally:
        run.close()
