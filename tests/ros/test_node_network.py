"""The node with ``refiner: network`` and the bundled checkpoint, fed the textured-wall scene.

Real rclpy and Fast DDS; checks that the published occupancy comes from the temporal-attention
network (diagnostics say so) and still lies on the wall.
"""

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc_ros.messages import pointcloud2_to_array  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope='module')
def running(ros_context, wall):
    """Return the running node (network refiner) and its client."""
    run = wall.Running(ros_context, {'refiner': 'network', 'depth_source': 'plane_sweep'},
                       node_name='l3rocc_net')
    yield run
    run.close()


def test_network_refiner_publishes_occupancy_on_the_wall(running, wall) -> None:
    node, client = running.node, running.client
    assert node.pipeline.refiner_name == 'network'
    # One frame at a time, each after the previous one's output: on a loaded machine the
    # latest-wins queue would otherwise replace frames and leave the window with few slices.
    for k in range(10):
        last = client.feed([k])
        points = client.wait_for('points', lambda m, s=last: wall.stamp_of(m) == s, 90.0)
        assert points is not None, f'no ~/points for frame {k}: {node.stats.snapshot()}'
    assert node.stats.snapshot()['frames_processed'] == 10
    pts = pointcloud2_to_array(points)
    newest = pts[pts['t'] == 0.0]
    assert len(newest) > 50, f'{len(newest)} occupied voxels in the newest slice; ' \
        f'node: {node.stats.snapshot()}; stamps {sorted(set(pts["t"]))}'
    assert np.all(pts['probability'] >= 0.5) and np.all(pts['probability'] <= 1.0)
    # The wall is the plane y = 2 m: the network's occupied voxels stay near it.
    dist = np.abs(newest['y'] - wall.WALL_Y)
    assert np.median(dist) < 0.1, f'median distance to the wall {np.median(dist):.3f} m'
    hw = node.get_fully_qualified_name()
    diag = client.wait_for(
        'diagnostics', lambda m: wall.diagnostic_values(m, hw).get('refiner') == 'network', 5.0)
    assert diag is not None, 'diagnostics do not report the network refiner'


@pytest.mark.usefixtures('inductor_cache')
def test_network_compile_in_the_node(ros_context, wall) -> None:
    """``network_compile``: compiled when the node starts, used once the window is full."""
    run = wall.Running(ros_context, {'refiner': 'network', 'network_update': 'window',
                                     'network_compile': True}, node_name='l3rocc_compiled')
    try:
        node, client = run.node, run.client
        refiner = node.pipeline.refiner
        assert refiner.compile_status == 'compiled' and refiner.compile_window == 6
        calls, compiled = [], refiner._compiled

        def counted(x, **kw):
            calls.append(x.shape[1])
            return compiled(x, **kw)

        refiner._compiled = counted
        for k in range(8):   # 6 slices fill the window: the last 3 frames run compiled
            last = client.feed([k])
            assert client.wait_for('points', lambda m, s=last: wall.stamp_of(m) == s, 90.0), k
        assert node.stats.snapshot()['frames_processed'] == 8
        assert calls == [6, 6, 6] and refiner.compile_status == 'compiled'
        hw = node.get_fully_qualified_name()
        assert client.wait_for('diagnostics', lambda m: wall.diagnostic_values(m, hw).get(
            'network_compile') == 'compiled', 5.0)
    finally:
        run.close()
