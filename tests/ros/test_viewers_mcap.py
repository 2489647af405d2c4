"""``replay --mcap`` writes, byte for byte in content, what the node publishes.

The MCAP writer builds its messages with rosbags (the core has no rclpy); here its records are
decoded by rclpy and compared with the node's own converters (:mod:`l3rocc_ros.messages`).
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc_core.grid import VoxelGrid  # noqa: E402
from l3rocc_core.occupancy import Occupancy4D  # noqa: E402
from l3rocc_core.viewers.mcap_log import OutputBagWriter, TOPICS  # noqa: E402
from l3rocc_ros import messages  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

T0_NS = 1_700_000_000_123_456_789


def _windows(n: int):
    """Yield n windows of 4 slices on a 20x20x10 grid (a slice of the second one empty)."""
    rng = np.random.default_rng(5)
    grid = VoxelGrid((-1.0, -1.0, -0.5), 0.1, (20, 20, 10), 'world')
    for k in range(n):
        prob = np.where(rng.random((4,) + grid.dims) > 0.97, 0.5 + 0.5 * rng.random(
            (4,) + grid.dims), 0.1).astype(np.float32)
        if k == 1:
            prob[2] = 0.0
        stamps = T0_NS + (np.arange(4, dtype=np.int64) + k) * 33_000_000
        yield Occupancy4D(grid, stamps, prob, None, 0.5)


@pytest.mark.parametrize('history', [False, True])
def test_mcap_records_equal_the_node_messages(tmp_path: Path, history: bool, marker_problems):
    path = tmp_path / 'out.mcap'
    writer = OutputBagWriter(str(path), publish_history=history, images=False)
    occs = list(_windows(3))
    poses = []
    for k, occ in enumerate(occs):
        T = np.eye(4)
        T[:3, 3] = [0.1 * k, -0.2, 1.5]
        T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]   # optical frame: z forward along x
        poses.append(T)
        writer.add(occ, T, 'camera_optical', None, None)
    writer.close()
    records = {}
    with Reader(str(path)) as reader:
        for con, log_ns, raw in reader.messages():
            records.setdefault(con.topic, []).append((log_ns, bytes(raw)))
    assert set(records) == {TOPICS['points'], TOPICS['markers'], TOPICS['tf']}
    encoder = messages.MarkerEncoder()
    for k, occ in enumerate(occs):
        log_ns, raw = records[TOPICS['points']][k]
        assert log_ns == occ.newest_stamp_ns
        assert deserialize_message(raw, PointCloud2) == messages.occupancy_to_pointcloud2(occ)
        _, raw = records[TOPICS['markers']][k]
        got = deserialize_message(raw, MarkerArray)
        node = messages.occupancy_to_markers(occ, history, encoder)   # bytes, as published
        assert got == deserialize_message(node, MarkerArray)
        assert marker_problems(got) == []
        _, raw = records[TOPICS['tf']][k]
        want = messages.transform_stamped(poses[k], 'world', 'camera_optical',
                                          occ.newest_stamp_ns)
        assert deserialize_message(raw, TFMessage).transforms[0] == want
    assert serialize_message(got)   # a message rclpy can publish again as it is
