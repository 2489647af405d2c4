"""Output converters on small fixed arrays, through real CDR serialisation."""

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

from l3rocc.msg import Occupancy4D as Occupancy4DMsg  # noqa: E402
from l3rocc_core.grid import VoxelGrid  # noqa: E402
from l3rocc_core.occupancy import Occupancy4D  # noqa: E402
from l3rocc_ros import messages  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

pytestmark = pytest.mark.ros

T0_NS = 1_700_000_000_123_456_789


def small_occupancy() -> Occupancy4D:
    """Three slices 0.1 s apart on a 4x3x2 grid of 0.5 m voxels with hand-placed voxels."""
    grid = VoxelGrid((1.0, -2.0, 0.25), 0.5, (4, 3, 2), 'odom')
    prob = np.zeros((3, 4, 3, 2), np.float32)
    prob[0, 0, 0, 0] = 0.9          # oldest slice: one voxel
    prob[0, 3, 2, 1] = 0.4          # below the threshold: not listed
    prob[2, 1, 2, 0] = 0.6          # newest slice: two voxels
    prob[2, 3, 0, 1] = 1.0
    stamps = T0_NS + np.array([-200_000_000, -100_000_000, 0], np.int64)
    return Occupancy4D(grid, stamps, prob, None, 0.5)


def test_points_fields_and_values() -> None:
    occ = small_occupancy()
    msg = deserialize_message(serialize_message(messages.occupancy_to_pointcloud2(occ)),
                              PointCloud2)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('t', 12, 7, 1),
        ('probability', 16, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 20, 60)
    assert msg.header.frame_id == 'odom'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert not msg.is_bigendian and len(msg.data) == 60
    pts = messages.pointcloud2_to_array(msg)
    # voxel centres: origin + (ijk + 0.5) * 0.5, oldest slice first
    want_xyz = np.array([[1.25, -1.75, 0.5], [1.75, -0.75, 0.5], [2.75, -1.75, 1.0]])
    got_xyz = np.stack([pts['x'], pts['y'], pts['z']], -1)
    np.testing.assert_allclose(got_xyz, want_xyz, atol=1e-6)
    np.testing.assert_allclose(pts['t'], [-0.2, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(pts['probability'], [0.9, 0.6, 1.0], atol=1e-6)


def test_points_empty_window() -> None:
    occ = small_occupancy()
    occ.prob[:] = 0.0
    msg = messages.occupancy_to_pointcloud2(occ)
    assert msg.width == 0 and len(msg.data) == 0 and len(msg.fields) == 5
    assert messages.pointcloud2_to_array(msg).shape == (0,)


def test_pointcloud2_reader_rejects_truncated_data() -> None:
    msg = messages.occupancy_to_pointcloud2(small_occupancy())
    msg.data = msg.data[:-4]
    with pytest.raises(ValueError, match='bytes'):
        messages.pointcloud2_to_array(msg)


def test_occupancy_message_round_trip() -> None:
    occ = small_occupancy()
    msg = deserialize_message(serialize_message(messages.occupancy_to_msg(occ)),
                              Occupancy4DMsg)
    assert list(msg.dims) == [4, 3, 2]
    assert list(msg.slice_indptr) == [0, 1, 1, 3]
    # flat index = (x * Y + y) * Z + z
    assert list(msg.voxel_indices) == [0, (1 * 3 + 2) * 2 + 0, (3 * 3 + 0) * 2 + 1]
    assert msg.header.stamp == msg.slice_stamps[-1]
    back = messages.occupancy_from_msg(msg)
    assert back.grid == occ.grid
    np.testing.assert_array_equal(back.stamps_ns, occ.stamps_ns)
    np.testing.assert_allclose(back.prob, np.where(occ.prob >= 0.5, occ.prob, 0.0))


def test_occupancy_message_rejects_inconsistent_rows() -> None:
    msg = messages.occupancy_to_msg(small_occupancy())
    msg.slice_indptr = msg.slice_indptr[:-1]
    with pytest.raises(ValueError, match='CSR'):
        messages.occupancy_from_msg(msg)


def test_markers_newest_slice_cube_list(marker_problems) -> None:
    occ = small_occupancy()
    msg = messages.occupancy_to_markers(occ, publish_history=False)
    assert isinstance(msg, MarkerArray)
    assert msg.markers[0].action == Marker.DELETEALL
    assert len(msg.markers) == 2
    m = msg.markers[1]
    assert (m.ns, m.id, m.type, m.action) == ('occupancy', 0, Marker.CUBE_LIST, Marker.ADD)
    assert (m.scale.x, m.scale.y, m.scale.z) == (0.5, 0.5, 0.5)
    assert m.header == msg.markers[0].header
    assert [(p.x, p.y, p.z) for p in m.points] == [(1.75, -0.75, 0.5), (2.75, -1.75, 1.0)]
    # coloured by height: the lower voxel is bluer, the higher one redder
    assert m.colors[0].b > m.colors[1].b and m.colors[1].r > m.colors[0].r
    assert marker_problems(msg) == []


def test_markers_history_and_empty_slices(marker_problems) -> None:
    msg = messages.occupancy_to_markers(small_occupancy(), publish_history=True)
    ids = [(m.ns, m.id) for m in msg.markers[1:]]
    assert ids == [('occupancy', 0), ('history', 2)]  # the empty middle slice is left out
    assert msg.markers[2].color.a < msg.markers[1].color.a
    assert marker_problems(msg) == []


def test_marker_encoder_matches_message_objects(marker_problems) -> None:
    rng = np.random.default_rng(3)
    grid = VoxelGrid((-1.0, -1.0, -0.5), 0.1, (20, 20, 10), 'map')
    prob = (rng.random((5,) + grid.dims) > 0.97).astype(np.float32)
    prob[2] = 0.0
    occ = Occupancy4D(grid, T0_NS + np.arange(5, dtype=np.int64) * 33_000_000, prob, None, 0.5)
    encoder = messages.MarkerEncoder()
    assert encoder.ok, encoder.reason
    for history in (False, True):
        raw = messages.occupancy_to_markers(occ, history, encoder)
        assert isinstance(raw, bytes)
        reference = messages.occupancy_to_markers(occ, history)
        got = deserialize_message(raw, MarkerArray)
        assert got == deserialize_message(serialize_message(reference), MarkerArray)
        assert marker_problems(got) == []
    assert len(got.markers) == 1 + 4  # DELETEALL + four non-empty slices
    assert len(got.markers[1].points) == int((prob[-1] >= 0.5).sum())


def test_height_colours_span_blue_to_red() -> None:
    rgba = messages.height_colors(np.array([0.0, 0.5, 1.0, 7.0]), 0.0, 1.0, 0.7)
    assert rgba.dtype == np.float32 and rgba.shape == (4, 4)
    assert np.all((rgba >= 0) & (rgba <= 1))
    np.testing.assert_allclose(rgba[0], [0.0, 0.0, 0.5, 0.7])
    np.testing.assert_allclose(rgba[2], [0.5, 0.0, 0.0, 0.7])
    np.testing.assert_allclose(rgba[3], rgba[2])  # clipped above the grid


def test_image_dispatch_uses_core_conversion() -> None:
    from l3rocc_core.convert import ConversionError
    from sensor_msgs.msg import CompressedImage, Image
    img = Image(height=2, width=3, encoding='bgr8', step=9, data=bytes(range(18)))
    rgb = messages.image_msg_to_rgb(img)
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == [2, 1, 0]
    with pytest.raises(ConversionError) as err:
        messages.image_msg_to_rgb(CompressedImage(format='jpeg', data=b'not a jpeg'))
    assert err.value.kind == 'bad_image_data'
