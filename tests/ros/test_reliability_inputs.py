"""Bad input catalogue: every kind of broken image, camera_info, stamp, pose and parameter.

One node (wall clock, poses from /tf, ``log_period_s`` 0 so that every case logs) takes each
bad input in turn. For each case the test asserts that the node stayed alive, that /rosout got
a line naming the topic and the problem, that /diagnostics counts the problem at WARN or ERROR
level, and that the next good frame is processed normally (its ~/points arrive). Cases already
proven elsewhere: missing camera_info, duplicate and out-of-order stamps, a bag loop under
``use_sim_time``, a missing TF sample and a fault in the refiner (test_node_inputs.py), a
``yuv422`` image (test_node.py).
"""

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from l3rocc_ros.messages import occupancy_from_msg, pointcloud2_to_array  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = 'l3rocc_rel_in'
IMAGE, INFO = '/rel/image', '/rel/camera_info'
DAY_NS = 86_400 * 1_000_000_000


@pytest.fixture(scope='module')
def rel(ros_context, wall):
    """Return the running node (tf_timeout_s 0.3 s, every problem logged) with a /rosout log."""
    run = wall.Running(ros_context, {'tf_timeout_s': 0.3, 'log_period_s': 0.0},
                       node_name=NAME, inputs='/rel')
    run.log = wall.RosoutCollector(run.client.node, NAME)
    run.k = 0
    assert wall.wait_until(lambda: run.log.sub.get_publisher_count() > 0, 10.0)
    for _ in range(2):
        good_frame(run, wall, timeout=60.0)
    yield run
    run.close()


def good_frame(run, wall, timeout: float = 30.0) -> int:
    """Publish the good camera_info, then a good frame; assert its ~/points arrive.

    :return: the frame's stamp
    """
    run.k = (run.k + 1) % 12
    client = run.client
    info = client.camera_info(time.time_ns())
    client.pub_info.publish(info)
    # the node holds the good camera_info before the image is converted
    assert wall.wait_until(lambda: wall.holds_camera_info(run.node, wall.stamp_of(info)), 10.0)
    stamp = client.publish_frame(run.k)
    got = client.wait_for('points', lambda m: wall.stamp_of(m) == stamp, timeout)
    assert got is not None, (f'the good frame after the bad input was not processed; node '
                             f'stats {run.node.stats.snapshot()}')
    return stamp


def diag_counts(run, wall, kinds: Dict[str, int], timeout: float = 5.0) -> Any:
    """Return the first /diagnostics status of the node whose counters reach ``kinds``."""
    hw = run.node.get_fully_qualified_name()

    def ok(msg) -> bool:
        values = wall.diagnostic_values(msg, hw)
        return bool(values) and all(int(values.get(f'error.{k}', 0)) >= n
                                    for k, n in kinds.items())
    msg = run.client.wait_for('diagnostics', ok, timeout)
    assert msg is not None, f'/diagnostics never counted {kinds}'
    return [s for s in msg.status if s.hardware_id == hw][0]


# ------------------------------------------------------------------------ the catalogue
@dataclass
class Case:
    """One bad input: what to send, which counters rise, what the log line says."""

    name: str
    send: Callable[[Any, Any, int], None]  # (run, wall, stamp_ns)
    kinds: Tuple[str, ...]
    topic: str
    says: Tuple[str, ...]
    processed: bool = False  # the input is repaired or accepted: its own frame is published


W, H = 160, 120


def _roi(x: int, y: int, w: int, h: int) -> Any:
    from sensor_msgs.msg import RegionOfInterest
    return RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)


def _image(**fields: Any) -> Callable[[Any, Any, int], None]:
    def send(run, wall, stamp: int) -> None:
        run.client.pub_tf.publish(wall.tf_msg(stamp))
        run.client.pub_image.publish(wall.image_msg(stamp, **fields))
    return send


def _camera_info_held(run, wall, info: Any) -> None:
    """Publish ``info`` and wait until the node holds it (then the image may follow)."""
    run.client.pub_info.publish(info)
    assert wall.wait_until(lambda: wall.holds_camera_info(run.node, wall.stamp_of(info)), 10.0)


def _info(**fields: Any) -> Callable[[Any, Any, int], None]:
    def send(run, wall, stamp: int) -> None:
        info = run.client.camera_info(stamp)
        for key, value in fields.items():
            setattr(info, key, value)
        _camera_info_held(run, wall, info)
        run.client.pub_tf.publish(wall.tf_msg(stamp))
        run.client.pub_image.publish(wall.image_msg(stamp))
    return send


def _tf(**tf_fields: Any) -> Callable[[Any, Any, int], None]:
    def send(run, wall, stamp: int) -> None:
        before = wall.errors_of(run.node).get('bad_tf', 0)
        run.client.pub_tf.publish(wall.tf_msg(stamp, **tf_fields))
        # the node refused the transform before the image asks for it
        assert wall.wait_until(lambda: wall.errors_of(run.node).get('bad_tf', 0) > before, 10.0)
        run.client.pub_image.publish(wall.image_msg(stamp))
    return send


def _stamp(shift_ns: int = 0, absolute: int = None) -> Callable[[Any, Any, int], None]:
    def send(run, wall, stamp: int) -> None:
        s = absolute if absolute is not None else stamp + shift_ns
        run.client.pub_tf.publish(wall.tf_msg(s))
        run.client.pub_image.publish(wall.image_msg(s))
    return send


def _resolution_change(run, wall, stamp: int) -> None:
    """Switch the camera to 160x100 (rows 10..109 of the view): a new camera model."""
    info = run.client.camera_info(stamp)
    info.height = 100
    k = list(info.k)
    k[5] -= 10.0
    info.k = k
    _camera_info_held(run, wall, info)
    run.client.pub_tf.publish(wall.tf_msg(stamp))
    crop = wall.render(-0.1)[10:110]
    run.client.pub_image.publish(wall.image_msg(stamp, height=100, data=crop.tobytes()))


def _not_connected(run, wall, stamp: int) -> None:
    run.client.pub_tf.publish(wall.tf_msg(stamp, parent='island', child='island_cam'))
    assert wall.wait_until(lambda: wall.knows_frame(run.node, 'island_cam'), 10.0)
    run.client.pub_image.publish(wall.image_msg(stamp, frame_id='island_cam'))


def _scaled_quaternion(run, wall, stamp: int) -> None:
    from l3rocc_core.transforms import matrix_to_quat
    q = matrix_to_quat(wall.R_WORLD_CAM) * 1.3
    run.client.pub_tf.publish(wall.tf_msg(stamp, q=q))
    assert wall.wait_until(lambda: wall.holds_pose(run.node, stamp), 10.0)
    run.client.pub_image.publish(wall.image_msg(stamp))


CASES = [
    # images
    Case('encoding 32FC1', _image(encoding='32FC1', step=W * 4, data=bytes(W * H * 4)),
         ('unsupported_encoding',), IMAGE, ("'32FC1' is not supported",)),
    Case('encoding bayer_rggb8', _image(encoding='bayer_rggb8', step=W, data=bytes(W * H)),
         ('unsupported_encoding',), IMAGE, ("'bayer_rggb8'",)),
    Case('big-endian mono16', _image(encoding='mono16', is_bigendian=1, step=W * 2,
                                     data=bytes(W * H * 2)),
         ('unsupported_encoding',), IMAGE, ("'mono16'",)),
    Case('step smaller than width x channels', _image(step=W * 3 - 1,
                                                      data=bytes((W * 3 - 1) * H)),
         ('bad_image_step',), IMAGE, ('step 479 < width 160',)),
    Case('step not matching data', _image(data=bytes(W * 3 * (H - 1))),
         ('bad_image_data',), IMAGE, ('expected step 480 x height 120',)),
    Case('zero width', _image(width=0, step=0, data=b''), ('bad_image_size',), IMAGE,
         ('is empty',)),
    Case('8K+ frame (8192x4608, refused before reading data)',
         _image(width=8192, height=4608, step=8192 * 3, data=b''), ('bad_image_size',), IMAGE,
         ('exceeds the', '8K')),
    Case('empty data', _image(data=b''), ('bad_image_data',), IMAGE, ('data has 0 bytes',)),
    Case('frame_id differs from camera_info', _image(frame_id='other_optical'),
         ('frame_id_mismatch', 'tf_missing'), IMAGE,
         ("image frame_id 'other_optical' differs",)),
    Case('image size differs from camera_info', _image(width=80, height=60, step=240,
                                                       data=bytes(240 * 60)),
         ('size_mismatch',), IMAGE, ('80x60 does not match camera_info 160x120',)),
    Case('resolution change mid-stream', _resolution_change, ('camera_changed',), INFO,
         ('camera model changed', 'window restarted'), processed=True),
    # camera_info
    Case('all-zero K', _info(k=[0.0] * 9), ('bad_camera_info',), INFO, ('all-zero K',)),
    Case('NaN in K', _info(k=[math.nan, 0.0, 79.5, 0.0, 120.0, 59.5, 0.0, 0.0, 1.0]),
         ('bad_camera_info',), INFO, ('NaN/Inf',)),
    Case('Inf in D', _info(d=[0.1, math.inf, 0.0, 0.0, 0.0]), ('bad_camera_info',), INFO,
         ('D has NaN/Inf',)),
    Case('unknown distortion model', _info(distortion_model='equidistant',
                                           d=[0.1, 0.01, 0.0, 0.0]),
         ('bad_camera_info',), INFO, ("unknown distortion model 'equidistant'",)),
    Case('D of the wrong length', _info(d=[0.1, 0.01, 0.001]), ('bad_camera_info',), INFO,
         ('D has 3 coefficients',)),
    Case('binning inconsistent with the image', _info(binning_x=2, binning_y=2),
         ('size_mismatch',), IMAGE, ('does not match camera_info 80x60',)),
    Case('ROI outside the sensor', _info(roi=_roi(100, 0, 100, 120)), ('bad_camera_info',),
         INFO, ('lies outside the 160x120 sensor',)),
    Case('ROI inconsistent with the image size', _info(roi=_roi(40, 30, 80, 60)),
         ('size_mismatch',), IMAGE, ('does not match camera_info 80x60',)),
    # stamps
    Case('zero stamp', _stamp(absolute=0), ('bad_stamp',), IMAGE, ('zero or negative',)),
    Case('far future stamp (+1 day)', _stamp(DAY_NS), ('stamp_future',), IMAGE,
         ('ahead of the node clock',)),
    Case('far past stamp (-1 day), a stray frame', _stamp(-DAY_NS), ('stamp_jump_back',),
         IMAGE, ('older than the previous frame',)),
    # poses
    Case('camera frame not connected to world_frame', _not_connected,
         ('tf_not_connected',), IMAGE, ("'island_cam'", 'not connected')),
    Case('NaN quaternion on /tf', _tf(q=(math.nan, 0.0, 0.0, 1.0)),
         ('bad_tf', 'tf_extrapolation'), '/tf', ('is not a rotation',)),
    Case('zero quaternion on /tf', _tf(q=(0.0, 0.0, 0.0, 0.0)),
         ('bad_tf', 'tf_extrapolation'), '/tf', ('norm 0',)),
    Case('NaN translation on /tf', _tf(t=(math.nan, 0.0, 0.0)),
         ('bad_tf', 'tf_extrapolation'), '/tf', ('not finite',)),
    Case('non-normalised quaternion (norm 1.3) is normalised', _scaled_quaternion, (), '', (),
         processed=True),
]


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input_reported_and_next_frame_processed(rel, wall, case: Case) -> None:
    node, client = rel.node, rel.client
    before = wall.errors_of(node)
    mark = rel.log.mark()
    stamp = time.time_ns()
    case.send(rel, wall, stamp)
    if case.processed:
        s = stamp
        assert client.wait_for('points', lambda m: wall.stamp_of(m) == s, 30.0) is not None, \
            f'{case.name}: the repaired/accepted frame was not processed'
    for kind in case.kinds:  # wait until the node has handled the bad input
        assert wall.wait_until(lambda: wall.errors_of(node).get(kind, 0) > before.get(kind, 0),
                               10.0), f'{case.name}: {kind} not counted; {node.stats.last_error}'
    good = good_frame(rel, wall)
    assert good > stamp
    if case.kinds:
        status = diag_counts(rel, wall, {k: before.get(k, 0) + 1 for k in case.kinds})
        assert status.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
        assert any(k in status.message for k in case.kinds), status.message
        line = rel.log.wait(mark, case.topic, *case.says)
        assert line is not None, (f'{case.name}: no log line with {case.topic!r} and '
                                  f'{case.says}; got {[m.msg for m in rel.log.since(mark)]}')
    assert node.executor is not None and rel.thread.is_alive()


def test_resolution_change_restarted_the_window(rel, wall) -> None:
    """After the 160x100 frame and back, the window held only the new camera's frames."""
    occ = [occupancy_from_msg(m) for m in rel.client.get('occupancy')]
    sizes = [o.num_slices for o in occ]
    assert 1 in sizes[1:], f'no window restart in {sizes}'
    last = good_frame(rel, wall)
    msg = rel.client.wait_for('occupancy', lambda m: wall.stamp_of(m) == last, 10.0)
    assert occupancy_from_msg(msg).num_slices >= 2  # good frames accumulate again


def test_stray_far_past_frame_keeps_the_window(rel, wall) -> None:
    first = good_frame(rel, wall)
    before = wall.errors_of(rel.node).get('stamp_jump_back', 0)
    rel.client.pub_image.publish(wall.image_msg(first - DAY_NS))
    assert wall.wait_until(lambda: wall.errors_of(rel.node).get('stamp_jump_back', 0) > before,
                           10.0)
    last = good_frame(rel, wall)
    msg = rel.client.wait_for('occupancy', lambda m: wall.stamp_of(m) == last, 10.0)
    occ = occupancy_from_msg(msg)
    assert first in occ.stamps_ns.tolist() and occ.num_slices >= 2


def test_rejected_parameters_reported_and_not_applied(rel, wall) -> None:
    node = rel.node
    pipeline, config = node.pipeline, node.config
    before = wall.errors_of(node).get('param_rejected', 0)
    mark = rel.log.mark()
    for params, reason in (
            ([Parameter('num_depth_planes', value=24), Parameter('min_depth', value=9.0)],
             'must be < max_depth'),
            ([Parameter('occupancy_threshold', value=1.5)], 'above its maximum'),
            ([Parameter('voxel_size', value=0.1)], 'read-only'),
            ([Parameter('tf_timeout_s', value='soon')], None)):
        result = node.set_parameters_atomically(params)
        assert not result.successful and result.reason
        if reason:
            line = rel.log.wait(mark, 'parameter change rejected', reason)
            assert line is not None, [m.msg for m in rel.log.since(mark)]
    assert node.config is config
    assert node.get_parameter('num_depth_planes').value == config.depth.num_depth_planes
    good_frame(rel, wall)
    assert node.pipeline is pipeline  # nothing was applied, so nothing was rebuilt
    status = diag_counts(rel, wall, {'param_rejected': before + 3})
    assert status.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


def test_repeated_problems_are_rate_limited(rel, wall) -> None:
    node, client = rel.node, rel.client
    assert node.set_parameters([Parameter('log_period_s', value=60.0)])[0].successful
    before = wall.errors_of(node).get('unsupported_encoding', 0)
    mark = rel.log.mark()
    for _ in range(5):
        client.pub_image.publish(wall.image_msg(time.time_ns(), encoding='yuv422'))
        time.sleep(0.05)
    assert wall.wait_until(lambda: wall.errors_of(node).get('unsupported_encoding', 0)
                           >= before + 5, 10.0)
    # A sixth frame with reports no longer limited: its line comes after any line of the
    # five on the node's one /rosout stream, so once it is here all of theirs are too.
    assert node.set_parameters([Parameter('log_period_s', value=0.0)])[0].successful
    client.pub_image.publish(wall.image_msg(time.time_ns(), encoding='yuv422'))
    last = rel.log.wait(mark, 'unsupported_encoding', '(4 more since the last report)')
    assert last is not None, [m.msg for m in rel.log.since(mark)]
    lines = [m.msg for m in rel.log.since(mark) if 'unsupported_encoding' in m.msg]
    assert len(lines) == 2 and lines[-1] == last.msg, lines  # one line for five frames
    good_frame(rel, wall)


def test_after_the_catalogue_the_output_is_still_right(rel, wall) -> None:
    for _ in range(3):
        good_frame(rel, wall)
    last = good_frame(rel, wall)
    points = rel.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 5.0)
    pts = pointcloud2_to_array(points)
    newest = pts[pts['t'] == 0.0]
    assert len(newest) >= 50
    assert np.median(np.abs(newest['y'] - wall.WALL_Y)) <= 0.1
    assert rel.node.degraded == {}
