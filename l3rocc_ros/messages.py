"""Pipeline results to ROS messages, and input messages to images (no per-point Python loops).

- :func:`occupancy_to_pointcloud2`: every occupied voxel centre of every slice of the window,
  float32 fields ``x, y, z, t, probability`` (``t`` = slice stamp - header stamp, seconds).
- :func:`occupancy_to_msg` / :func:`occupancy_from_msg`: ``l3rocc/msg/Occupancy4D`` (CSR window).
- :class:`MarkerEncoder`: the ``MarkerArray`` (a DELETEALL, then one CUBE_LIST of the newest
  slice in ns ``occupancy`` and, when asked, one per older slice in ns ``history``), serialised
  straight from numpy arrays: the CDR bytes of the points and colours are spliced into the
  serialisation of a one-point template made by the RMW itself
  (:class:`~l3rocc_core.viewers.node_outputs.MarkerSplicer`), so no ``Point`` object is
  created per voxel. A self-check at start-up falls back to building message objects when the
  RMW's encoding does not allow the splice.
- :func:`image_msg_to_rgb`: Image or CompressedImage to RGB through ``l3rocc_core.convert``.

Conversions of input messages live in ``l3rocc_core.convert`` (shared with replay); this module
only dispatches to them.
"""

import array
import sys
from typing import Any, Optional, Sequence, Tuple

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, TransformStamped
from l3rocc.msg import Occupancy4D as Occupancy4DMsg
from l3rocc_core.convert import compressed_to_rgb, image_to_rgb, ns_to_sec_nanosec, stamp_to_ns
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.transforms import matrix_to_quat
from l3rocc_core.viewers.node_outputs import (check_slices, height_colors,  # noqa: F401
                                              HISTORY_NS, MARKER_NS, marker_slices,
                                              MarkerSlice, MarkerSplicer,
                                              occupancy_points, POINT_DTYPE, POINT_FIELDS,
                                              pointcloud_to_array, Sparse)
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray


def stamp_msg(stamp_ns: int) -> Time:
    """builtin_interfaces/Time of a stamp in nanoseconds."""
    sec, nanosec = ns_to_sec_nanosec(int(stamp_ns))
    return Time(sec=sec, nanosec=nanosec)


def header_for(occ: Occupancy4D) -> Header:
    """Header of every output of ``occ``: the newest frame's stamp, the grid's frame."""
    return Header(stamp=stamp_msg(occ.newest_stamp_ns), frame_id=occ.grid.frame_id)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a sensor_msgs/Image or CompressedImage.

    :raises l3rocc_core.convert.ConversionError: the message cannot become an image
    """
    if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


# ------------------------------------------------------------------------------- point cloud
def array_to_pointcloud2(points: np.ndarray, header: Header) -> PointCloud2:
    """Unorganised PointCloud2 (height 1) of a structured array of float32 fields.

    :param points: structured [N] of little-endian float32 fields
    :param header: stamp and frame of the points
    """
    points = np.ascontiguousarray(points)
    fields = [PointField(name=name, offset=points.dtype.fields[name][1],
                         datatype=PointField.FLOAT32, count=1) for name in points.dtype.names]
    data = array.array('B')
    data.frombytes(points.tobytes())
    return PointCloud2(header=header, height=1, width=int(points.shape[0]), fields=fields,
                       is_bigendian=False, point_step=points.dtype.itemsize,
                       row_step=points.dtype.itemsize * int(points.shape[0]), data=data,
                       is_dense=True)


def occupancy_to_pointcloud2(occ: Occupancy4D, sparse: Optional[Sparse] = None) -> PointCloud2:
    """``~/points``: all occupied voxel centres of the window (see :func:`occupancy_points`)."""
    return array_to_pointcloud2(occupancy_points(occ, sparse), header_for(occ))


def pointcloud2_to_array(msg: PointCloud2) -> np.ndarray:
    """Structured array of a PointCloud2's fields (:func:`pointcloud_to_array`)."""
    return pointcloud_to_array(msg)


# ------------------------------------------------------------------------------ occupancy msg
def occupancy_to_msg(occ: Occupancy4D, sparse: Optional[Sparse] = None) -> Occupancy4DMsg:
    """``~/occupancy``: the whole window as CSR rows of occupied voxels.

    :param sparse: ``occ.sparse_window()`` when already computed
    :raises ValueError: a grid too large for uint32 voxel indices
    """
    if occ.grid.num_voxels >= 2 ** 32:
        raise ValueError(f'grid of {occ.grid.num_voxels} voxels does not fit uint32 indices')
    indptr, indices, prob = occ.sparse_window() if sparse is None else sparse
    msg = Occupancy4DMsg(header=header_for(occ), voxel_size=float(occ.grid.voxel_size),
                         occupancy_threshold=float(occ.threshold))
    msg.slice_stamps = [stamp_msg(s) for s in occ.stamps_ns]  # one per slice, not per voxel
    ox, oy, oz = (float(v) for v in occ.grid.origin)
    msg.origin = Point(x=ox, y=oy, z=oz)
    msg.dims = np.asarray(occ.grid.dims, np.uint32)
    msg.slice_indptr = _typed_array('I', indptr.astype(np.uint32))
    msg.voxel_indices = _typed_array('I', indices.astype(np.uint32))
    msg.probabilities = _typed_array('f', prob.astype(np.float32))
    return msg


def occupancy_from_msg(msg: Occupancy4DMsg) -> Occupancy4D:
    """Dense :class:`Occupancy4D` of a received ``l3rocc/msg/Occupancy4D``.

    :raises ValueError: inconsistent CSR rows or indices outside the grid
    """
    dims = tuple(int(v) for v in msg.dims)
    grid = VoxelGrid((msg.origin.x, msg.origin.y, msg.origin.z), float(msg.voxel_size), dims,
                     msg.header.frame_id)
    stamps = np.array([stamp_to_ns(s) for s in msg.slice_stamps], np.int64)
    indptr = np.asarray(msg.slice_indptr, np.int64)
    indices = np.asarray(msg.voxel_indices, np.int64)
    prob_sparse = np.asarray(msg.probabilities, np.float32)
    t = len(stamps)
    if (len(indptr) != t + 1 or (t and (indptr[0] != 0 or np.any(np.diff(indptr) < 0)))
            or indptr[-1] != len(indices) or len(prob_sparse) != len(indices)):
        raise ValueError('Occupancy4D message has inconsistent CSR rows')
    if len(indices) and indices.max() >= grid.num_voxels:
        raise ValueError('Occupancy4D message has voxel indices outside the grid')
    prob = np.zeros((t, grid.num_voxels), np.float32)
    rows = np.repeat(np.arange(t), np.diff(indptr))
    prob[rows, indices] = prob_sparse
    return Occupancy4D(grid, stamps, prob.reshape((t,) + dims),
                       threshold=float(msg.occupancy_threshold))


def _typed_array(typecode: str, values: np.ndarray) -> array.array:
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


# ---------------------------------------------------------------------------------- markers
def _marker(header: Header, ns: str, mid: int, alpha: float, voxel_size: float) -> Marker:
    m = Marker(header=header, ns=ns, id=mid, type=Marker.CUBE_LIST, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = float(voxel_size)
    m.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=float(alpha))
    m.frame_locked = False
    return m


def _delete_all(header: Header) -> Marker:
    m = Marker(header=header, action=Marker.DELETEALL)
    m.pose.orientation.w = 1.0
    return m


def markers_to_msg(header: Header, voxel_size: float,
                   slices: Sequence[Tuple[str, int, float, np.ndarray, np.ndarray]]
                   ) -> MarkerArray:
    """Build the message objects of :func:`marker_slices` (one Python object per point).

    The reference for :class:`MarkerEncoder` and its fallback.
    """
    markers = [_delete_all(header)]
    for ns, mid, alpha, xyz, rgba in slices:
        m = _marker(header, ns, mid, alpha, voxel_size)
        m.points = [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]
        m.colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in rgba.tolist()]
        markers.append(m)
    return MarkerArray(markers=markers)


class MarkerEncoder(MarkerSplicer):
    """Serialises occupancy MarkerArrays from numpy arrays, with the RMW's own encoding.

    The splice of :class:`~l3rocc_core.viewers.node_outputs.MarkerSplicer` into templates
    serialised by ``rclpy.serialization``. :meth:`self_check` compares a decoded result with the
    object-built message; when it fails, :meth:`encode` returns None and callers publish
    :func:`markers_to_msg` instead.
    """

    def __init__(self) -> None:
        """Run the self-check once."""
        self.ok = False
        self.reason = ''
        self.ok, self.reason = self.self_check()

    def template(self, header: Header, voxel_size: float, slices: Sequence[MarkerSlice],
                 sentinel: Any) -> bytes:
        """Serialise the template MarkerArray with rclpy (see ``MarkerSplicer.template``)."""
        markers = [_delete_all(header)]
        for i, (ns, mid, alpha, _, _) in enumerate(slices):
            m = _marker(header, ns, mid, alpha, voxel_size)
            fill = sentinel(i)
            if fill is not None:
                m.points = [Point(x=x, y=y, z=z) for x, y, z in fill[0]]
                m.colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in fill[1]]
            markers.append(m)
        return serialize_message(MarkerArray(markers=markers))

    def encode(self, header: Header, voxel_size: float, slices: Sequence) -> Optional[bytes]:
        """Serialise the MarkerArray of :func:`marker_slices` output; None when disabled.

        :raises ValueError: when a sentinel cannot be located (the caller falls back)
        """
        if not self.ok:
            return None
        return self.splice(header, voxel_size, slices)

    def self_check(self) -> Tuple[bool, str]:
        """Encode a small known MarkerArray and compare its decoding with the object-built one.

        :return: (usable, reason when not)
        """
        if sys.byteorder != 'little':
            return False, 'big-endian host'
        header = Header(stamp=Time(sec=12, nanosec=345), frame_id='odom')
        slices = check_slices()
        try:
            got = deserialize_message(self.splice(header, 0.05, slices), MarkerArray)
        except Exception as exc:  # noqa: B902 - any RMW decoding failure disables the path
            return False, f'splice does not decode: {exc}'
        want = deserialize_message(serialize_message(markers_to_msg(header, 0.05, slices)),
                                   MarkerArray)
        if got != want:
            return False, 'spliced MarkerArray differs from the reference'
        return True, ''


def occupancy_to_markers(occ: Occupancy4D, publish_history: bool,
                         encoder: Optional[MarkerEncoder] = None):
    """``~/markers`` of ``occ``: serialised bytes when ``encoder`` works, else a MarkerArray.

    :return: ``bytes`` (publish as is) or ``MarkerArray``
    """
    header = header_for(occ)
    slices = marker_slices(occ, publish_history)
    if encoder is not None and encoder.ok:
        return encoder.encode(header, occ.grid.voxel_size, slices)
    return markers_to_msg(header, occ.grid.voxel_size, slices)


def transform_stamped(T_parent_child: np.ndarray, parent: str, child: str,
                      stamp_ns: int) -> TransformStamped:
    """Return a geometry_msgs/TransformStamped of ``T_parent_child`` (float [4, 4]) at a stamp."""
    ts = TransformStamped(child_frame_id=child)
    ts.header.frame_id = parent
    ts.header.stamp.sec, ts.header.stamp.nanosec = ns_to_sec_nanosec(int(stamp_ns))
    t = ts.transform.translation
    t.x, t.y, t.z = (float(v) for v in T_parent_child[:3, 3])
    q = matrix_to_quat(np.asarray(T_parent_child, np.float64)[:3, :3])
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return ts
