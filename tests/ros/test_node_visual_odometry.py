"""``pose_source: visual_odometry`` in the node: poses from the images alone, published on TF.

A real rclpy client publishes images and camera_info of a textured room (``tests/core/vo_scene``)
seen by a camera walking sideways, with no TF at all: the first pose is ``camera_pose``. The node
must estimate the poses, publish them on /tf (``world_frame`` -> the image frame) for other
nodes, report its tracking state and its start in /diagnostics, and publish occupancy.
"""

import array
import importlib.util
import math
from pathlib import Path
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc_core.camera import PinholeCamera  # noqa: E402
from l3rocc_core.tf_tree import TransformBuffer  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAME = 'vo_cam_optical'
CAMERA = PinholeCamera(160, 120, 120.0, 120.0, 79.5, 59.5)
HEIGHT = 1.5
PITCH_DEG = 15.0
FRAMES = 30


def _vo_scene():
    path = Path(__file__).resolve().parents[1] / 'core' / 'vo_scene.py'
    spec = importlib.util.spec_from_file_location('l3rocc_tests_vo_scene', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _done(node) -> int:
    snap = node.stats.snapshot()
    return snap['frames_processed'] + snap['dropped_frames']


def test_node_estimates_poses_and_publishes_them_on_tf(ros_context, wall) -> None:
    scene = _vo_scene()
    renderer = scene.Renderer(CAMERA, scene.room())
    truth = [scene.camera_pose(0.0, 0.03 * k, HEIGHT, pitch_deg=PITCH_DEG)
             for k in range(FRAMES)]
    images = [renderer.render(T, t=float(k)) for k, T in enumerate(truth)]
    run = wall.Running(ros_context, {
        'pose_source': 'visual_odometry', 'working_width': 160, 'vo_min_parallax_px': 3.0,
        'camera_pose': [0.0, 0.0, HEIGHT, 0.0, math.radians(PITCH_DEG), 0.0],
        'grid_min': [0.5, -2.0, -0.2], 'grid_max': [5.0, 3.0, 2.0], 'max_depth': 6.0},
        node_name='l3rocc_vo')
    buffer = TransformBuffer()
    heard = []

    def on_tf(msg: TFMessage) -> None:
        for ts in msg.transforms:
            if ts.child_frame_id == FRAME:
                heard.append(ts)
        buffer.add_tf_message(msg)

    client = run.client
    client.node.create_subscription(TFMessage, '/tf', on_tf, 100)
    try:
        stamps = []
        for k, img in enumerate(images):
            stamp = time.time_ns()
            info = client.camera_info(stamp)
            info.header.frame_id = FRAME
            client.pub_info.publish(CameraInfo(
                header=info.header, width=160, height=120, distortion_model='plumb_bob',
                d=[0.0] * 5, k=list(info.k), r=list(info.r), p=list(info.p)))
            data = array.array('B')
            data.frombytes(np.ascontiguousarray(img).tobytes())
            client.pub_image.publish(Image(header=client.header(stamp, FRAME), height=120,
                                           width=160, encoding='rgb8', step=160 * 3, data=data))
            stamps.append(stamp)
            # one frame at a time (the worker keeps only the latest images): wait until it was
            # processed or dropped (no pose while the map starts)
            assert wall.wait_until(lambda: _done(run.node) > k, 20.0), wall.errors_of(run.node)
        assert wall.wait_until(lambda: len(heard) >= FRAMES // 2, 30.0), \
            (len(heard), wall.errors_of(run.node))
        # another node looks the estimate up: the camera walked 3 cm per frame along +y
        last = max(wall.stamp_of(ts) for ts in heard)
        T_last = buffer.lookup('odom', FRAME, last)
        k_last = stamps.index(last)
        np.testing.assert_allclose(T_last[:3, 3], truth[k_last][:3, 3], atol=0.15)
        assert T_last[1, 3] > 0.3
        msg = client.wait_for('points', lambda m: wall.stamp_of(m) == last, 30.0)
        assert msg is not None
        diag = client.wait_for('diagnostics', lambda m: 'vo_state' in wall.diagnostic_values(
            m, run.node.get_fully_qualified_name()), 10.0)
        values = wall.diagnostic_values(diag, run.node.get_fully_qualified_name())
        assert values['vo_state'] == 'tracking' and int(values['vo_inliers']) > 10, values
        assert values['vo_start'] == 'camera_pose', values
    finally:
        run.close()
