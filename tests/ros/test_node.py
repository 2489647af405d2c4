"""The node in-process with real rclpy and Fast DDS, fed an analytic textured-wall scene.

A second node publishes Image + CameraInfo + /tf of a camera translating sideways 2 m in front
of a textured wall (the plane y = 2 m of ``odom``, see wall_scene.py) and receives
``~/points``, ``~/markers``, ``~/occupancy`` and ``/diagnostics``.
"""

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from l3rocc_ros.messages import occupancy_from_msg, pointcloud2_to_array  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope='module')
def running(ros_context, wall):
    """Return the running node and its client (wall_scene.Running)."""
    run = wall.Running(ros_context)
    yield run
    run.close()


@pytest.fixture(scope='module')
def outputs(running, wall):
    """Return (last stamp, points, markers, occupancy) after 12 frames at 10 Hz."""
    client = running.client
    last = client.feed(range(12))
    points = client.wait_for('points', lambda m: wall.stamp_of(m) == last, 60.0)
    assert points is not None, (f'no ~/points for the last frame; node stats '
                                f'{running.node.stats.snapshot()}')
    occupancy = client.wait_for('occupancy', lambda m: wall.stamp_of(m) == last, 5.0)
    markers = client.wait_for('markers', lambda m: wall.stamp_of(m.markers[0]) == last, 5.0)
    return last, points, markers, occupancy


def test_points_fields_frame_and_stamps(running, outputs, wall) -> None:
    last, points, _, _ = outputs
    client = running.client
    assert [(f.name, f.datatype) for f in points.fields] == [
        (n, 7) for n in ('x', 'y', 'z', 't', 'probability')]
    assert points.header.frame_id == wall.WORLD
    for msg in client.get('points'):
        assert wall.stamp_of(msg) in client.stamps  # always an image's stamp
    pts = pointcloud2_to_array(points)
    assert len(pts) > 0
    assert np.all(pts['t'] <= 0.0) and np.any(pts['t'] == 0.0)
    assert np.all(np.isfinite(pts['x'])) and np.all(pts['probability'] >= 0.5)
    # the slices' t are the stamps of earlier images relative to the newest one
    got = {round(float(t), 4) for t in np.unique(pts['t'])}
    assert got <= {round((s - last) / 1e9, 4) for s in client.stamps}


def test_points_lie_on_the_wall(outputs, wall) -> None:
    pts = pointcloud2_to_array(outputs[1])
    newest = pts[pts['t'] == 0.0]
    assert len(newest) >= 50, f'only {len(newest)} occupied voxels in the newest slice'
    dist = np.abs(newest['y'] - wall.WALL_Y)
    assert np.median(dist) <= 0.1, f'median distance to the wall {np.median(dist):.3f} m'
    assert np.mean(dist <= 0.15) >= 0.6


def test_occupancy_consistent_with_points(outputs, wall) -> None:
    last, points, _, occ_msg = outputs
    assert occ_msg is not None
    occ = occupancy_from_msg(occ_msg)
    assert occ.newest_stamp_ns == last and occ.grid.frame_id == wall.WORLD
    assert occ.num_slices <= wall.OVERRIDES['window_size']
    assert occ.grid.voxel_size == pytest.approx(0.05)
    indptr, indices, prob = occ.sparse_window()
    xyz = occ.grid.flat_to_world(indices)
    t = np.repeat((occ.stamps_ns - last) / 1e9, np.diff(indptr))
    pts = pointcloud2_to_array(points)
    got = np.stack([pts['x'], pts['y'], pts['z'], pts['t'], pts['probability']], -1)
    want = np.concatenate([xyz, t[:, None], prob[:, None]], -1).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_markers_valid_for_rviz(outputs, wall, marker_problems) -> None:
    last, _, markers, occ_msg = outputs
    assert markers is not None
    assert markers.markers[0].action == Marker.DELETEALL
    cube = markers.markers[1]
    assert (cube.ns, cube.id, cube.type) == ('occupancy', 0, Marker.CUBE_LIST)
    assert cube.header.frame_id == wall.WORLD and wall.stamp_of(cube) == last
    assert cube.scale.x == pytest.approx(0.05)
    newest = list(occ_msg.slice_indptr)[-2:]
    assert len(cube.points) == newest[1] - newest[0]
    assert all(m.ns == 'history' for m in markers.markers[2:])  # publish_history is on
    assert marker_problems(markers) == []


def test_diagnostics_report(running, outputs, wall) -> None:
    client, hw = running.client, running.node.get_fully_qualified_name()

    def complete(msg: DiagnosticArray) -> bool:
        values = wall.diagnostic_values(msg, hw)
        return (values.get('frames_received') == str(len(client.stamps))
                and values.get('latency_p95_ms', 'n/a') != 'n/a')

    msg = client.wait_for('diagnostics', complete, 5.0)
    assert msg is not None, 'no /diagnostics counting every frame sent'
    values = wall.diagnostic_values(msg, hw)
    for key in ('input_rate_hz', 'processed_rate_hz', 'frames_received', 'frames_processed',
                'dropped_frames', 'latency_p50_ms', 'latency_p95_ms', 'errors_total',
                'device', 'refiner', 'depth_source'):
        assert key in values, f'{key} missing from {sorted(values)}'
    assert values['device'] == 'cpu' and values['refiner'] != ''
    # the depth source that gave the newest frame's depth (the default: the network)
    assert values['depth_source'] == running.node._pipeline.depth_active
    assert values['depth_source'] == 'network', values['depth_source']
    assert 0.0 < float(values['latency_p50_ms']) <= float(values['latency_p95_ms']) < 60_000


def test_unsupported_encoding_counted_and_next_frame_processed(running, outputs, wall) -> None:
    node, client, hw = running.node, running.client, running.node.get_fully_qualified_name()
    # an idle node with an empty queue: the bad frame is converted, not replaced in the queue
    assert wall.wait_until(lambda: not node.busy and node.diagnostics_extra()['queued'] == 0,
                           30.0)
    before = wall.errors_of(node).get('unsupported_encoding', 0)
    client.publish_frame(20, encoding='yuv422')
    assert wall.wait_until(lambda: wall.errors_of(node).get('unsupported_encoding', 0) > before,
                           10.0)
    good = client.feed([21, 22])
    assert client.wait_for('points', lambda m: wall.stamp_of(m) == good, 30.0) is not None
    msg = client.wait_for('diagnostics', lambda m: int(wall.diagnostic_values(m, hw).get(
        'error.unsupported_encoding', 0)) >= 1, 5.0)
    assert msg is not None
    assert 'yuv422' in wall.diagnostic_values(msg, hw)['last_error']


def test_parameters_described_and_validated_over_services(running, wall) -> None:
    client = running.client
    names = ['voxel_size', 'grid_anchor', 'window_size', 'min_depth']
    described = client.call(DescribeParameters, '/l3rocc/describe_parameters',
                            DescribeParameters.Request(names=names)).descriptors
    by_name = {d.name: d for d in described}
    assert by_name['voxel_size'].read_only and 'metres' in by_name['voxel_size'].description
    assert by_name['voxel_size'].floating_point_range[0].to_value == pytest.approx(2.0)
    assert 'world' in by_name['grid_anchor'].additional_constraints
    assert by_name['window_size'].integer_range[0].from_value == 3

    bad = [Parameter('min_depth', value=9.0).to_parameter_msg()]
    result = client.call(SetParameters, '/l3rocc/set_parameters',
                         SetParameters.Request(parameters=bad)).results[0]
    assert not result.successful and 'max_depth' in result.reason
    ro = [Parameter('grid_min', value=[1.0, 1.0, 1.0]).to_parameter_msg()]
    result = client.call(SetParameters, '/l3rocc/set_parameters',
                         SetParameters.Request(parameters=ro)).results[0]
    assert not result.successful and 'read-only' in result.reason
    values = client.call(GetParameters, '/l3rocc/get_parameters',
                         GetParameters.Request(names=['min_depth', 'grid_min'])).values
    assert values[0].double_value == wall.OVERRIDES['min_depth']
    assert list(values[1].double_array_value) == wall.OVERRIDES['grid_min']
    assert running.node.config.depth.min_depth == wall.OVERRIDES['min_depth']
