"""What the node's ``~/points`` and ``~/markers`` hold, as numpy arrays (no ROS types).

Shared by the node's messages (:mod:`l3rocc_ros.messages`, rclpy types) and the MCAP writer of
``l3rocc replay --mcap`` (:mod:`l3rocc_core.viewers.mcap_log`, rosbags types), so both carry the
same points, colours and marker layout:

- :func:`occupancy_points`: every occupied voxel centre of every slice, float32 fields
  ``x, y, z, t, probability``; :func:`pointcloud_to_array` reads such a cloud back;
- :func:`marker_slices`: the CUBE_LISTs of the MarkerArray, coloured by :func:`height_colors`;
- :class:`MarkerSplicer`: serialises a MarkerArray of those CUBE_LISTs straight from numpy
  arrays, splicing the points' and colours' CDR bytes into a serialised one-point template, so
  no message object is made per voxel. Subclasses supply the template's serialiser.
"""

import struct
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from l3rocc_core.occupancy import Occupancy4D

POINT_FIELDS = ('x', 'y', 'z', 't', 'probability')
POINT_DTYPE = np.dtype([(n, '<f4') for n in POINT_FIELDS])
MARKER_NS = 'occupancy'
HISTORY_NS = 'history'
#: sensor_msgs/PointField datatype constants -> numpy type codes.
POINTFIELD_DTYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}
POINTFIELD_FLOAT32 = 7
Sparse = Tuple[np.ndarray, np.ndarray, np.ndarray]  # (indptr, indices, prob), sparse_window()
#: (ns, id, alpha, centres float [n, 3] metres, rgba float32 [n, 4]) of one CUBE_LIST
MarkerSlice = Tuple[str, int, float, np.ndarray, np.ndarray]


def occupancy_points(occ: Occupancy4D, sparse: Optional[Sparse] = None) -> np.ndarray:
    """Occupied voxel centres of every slice as a structured array.

    :param occ: the window (``occ.threshold`` decides what is occupied)
    :param sparse: ``occ.sparse_window()`` when already computed
    :return: POINT_DTYPE [N]: x, y, z metres in ``occ.grid.frame_id``, t seconds relative to
        the newest slice (<= 0), probability; oldest slice first
    """
    indptr, indices, prob = occ.sparse_window() if sparse is None else sparse
    out = np.empty(len(indices), POINT_DTYPE)
    if len(indices) == 0:
        return out
    xyz = occ.grid.flat_to_world(indices)
    rel_s = (np.asarray(occ.stamps_ns, np.int64) - occ.newest_stamp_ns) / 1e9
    out['x'], out['y'], out['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out['t'] = np.repeat(rel_s, np.diff(indptr))
    out['probability'] = prob
    return out


def pointcloud_to_array(msg: Any) -> np.ndarray:
    """Structured array of a PointCloud2's fields (any padding skipped).

    :param msg: a sensor_msgs/PointCloud2 of any message library (rclpy, rosbags)
    :raises ValueError: unknown field type, or data length not width * height * point_step
    """
    names, formats, offsets = [], [], []
    order = '>' if msg.is_bigendian else '<'
    for f in msg.fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise ValueError(f'PointCloud2 field {f.name!r} has unknown datatype {f.datatype}')
        names.append(f.name)
        base = order + POINTFIELD_DTYPES[f.datatype]
        formats.append(base if f.count <= 1 else (base, (f.count,)))
        offsets.append(f.offset)
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': msg.point_step})
    n = msg.width * msg.height
    raw = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.row_step != msg.width * msg.point_step or raw.size != msg.row_step * msg.height:
        raise ValueError(f'PointCloud2 data has {raw.size} bytes for {msg.width}x{msg.height} '
                         f'points of {msg.point_step} bytes (row_step {msg.row_step})')
    return raw.view(dtype).reshape(n)


def height_colors(z: np.ndarray, z_min: float, z_max: float, alpha: float) -> np.ndarray:
    """float32 [N, 4] RGBA colours by height (blue low, red high; 'jet').

    :param z: [N] metres
    :param z_min: height mapped to blue
    :param z_max: height mapped to red
    :param alpha: opacity in (0, 1]
    """
    h = np.clip((np.asarray(z, np.float64) - z_min) / max(z_max - z_min, 1e-9), 0.0, 1.0)
    rgba = np.empty((h.shape[0], 4), np.float32)
    rgba[:, 0] = np.clip(1.5 - np.abs(4.0 * h - 3.0), 0.0, 1.0)
    rgba[:, 1] = np.clip(1.5 - np.abs(4.0 * h - 2.0), 0.0, 1.0)
    rgba[:, 2] = np.clip(1.5 - np.abs(4.0 * h - 1.0), 0.0, 1.0)
    rgba[:, 3] = alpha
    return rgba


def marker_slices(occ: Occupancy4D, publish_history: bool) -> List[MarkerSlice]:
    """List the CUBE_LISTs to publish: (ns, id, alpha, centres [n, 3], rgba float32 [n, 4]).

    The newest slice is ns ``occupancy`` id 0 (opaque); with ``publish_history`` every older slice
    k steps back is ns ``history`` id k, fading with age. Empty slices are left out (RViz warns
    about a CUBE_LIST without points; the DELETEALL before them clears old ones).
    """
    g = occ.grid
    z_min = g.origin[2]
    z_max = g.origin[2] + g.dims[2] * g.voxel_size
    t = occ.num_slices
    ages = range(t) if publish_history else range(1)
    out = []
    for age in ages:
        idx, _ = occ.occupied(t - 1 - age)
        if len(idx) == 0:
            continue
        xyz = g.flat_to_world(idx).reshape(-1, 3)
        alpha = 1.0 if age == 0 else 0.1 + 0.4 * (t - age) / t
        ns, mid = (MARKER_NS, 0) if age == 0 else (HISTORY_NS, age)
        out.append((ns, mid, alpha, xyz, height_colors(xyz[:, 2], z_min, z_max, alpha)))
    return out


def check_slices() -> List[MarkerSlice]:
    """Return the small known slices a :class:`MarkerSplicer` checks itself on.

    Three points in ns ``occupancy``, an empty ``history`` slice, and a one-point one.
    """
    xyz = np.array([[0.1, 0.2, 0.3], [-1.0, 2.0, 3.5], [4.0, -5.0, 6.25]])
    rgba = height_colors(xyz[:, 2], 0.0, 4.0, 0.5)
    return [(MARKER_NS, 0, 1.0, xyz, rgba),
            (HISTORY_NS, 1, 0.3, np.zeros((0, 3)), np.zeros((0, 4), np.float32)),
            (HISTORY_NS, 2, 0.2, xyz[:1], rgba[:1])]


class MarkerSplicer:
    """Serialises occupancy MarkerArrays from numpy arrays by splicing into a CDR template.

    For each marker with points, a template with one sentinel point and colour is serialised
    (:meth:`template`, by the subclass's message library); the sentinels locate the two sequence
    counts and their data, which are replaced by the real counts and the arrays' bytes. Every
    inserted block is a multiple of 8 bytes, so the alignment of all later fields is unchanged.
    """

    def template(self, header: Any, voxel_size: float, slices: Sequence[MarkerSlice],
                 sentinel: Any) -> bytes:
        """Return the serialised MarkerArray: a DELETEALL, then one CUBE_LIST per slice.

        :param sentinel: ``sentinel(i)`` -> (point (x, y, z), colour (r, g, b, a)) to put in
            marker ``i`` (repeated ``n`` times) when it has points, or None for no points
        """
        raise NotImplementedError

    @staticmethod
    def _sentinels(i: int) -> Tuple[Tuple[float, float, float], Tuple[float, float, float, float]]:
        p = (-1.2345678901234567e-301 * (i + 1), 9.87654321e-299, -7.77e-297 - i)
        c = (1.0e-38 * (i + 1.5), 2.5e-39, -3.25e-39, 4.125e-38 + i)
        return p, c

    def _template_n(self, header: Any, voxel_size: float, slices: Sequence[MarkerSlice],
                    n: int) -> bytes:
        def sentinel(i: int) -> Optional[Tuple[List[Any], List[Any]]]:
            if len(slices[i][3]) == 0:
                return None
            p, c = self._sentinels(i)
            return [p] * n, [c] * n
        return self.template(header, voxel_size, slices, sentinel)

    def splice(self, header: Any, voxel_size: float, slices: Sequence[MarkerSlice]) -> bytes:
        """Serialise the MarkerArray of ``slices`` (:func:`marker_slices`).

        :raises ValueError: when a sentinel cannot be located
        """
        one = self._template_n(header, voxel_size, slices, 1)
        two = self._template_n(header, voxel_size, slices, 2)
        parts: List[bytes] = []
        pos = 0
        shift = 0  # bytes that earlier markers' second point and colour add in ``two``
        for i, (_, _, _, xyz, rgba) in enumerate(slices):
            n = len(xyz)
            if n == 0:
                continue
            p, c = self._sentinels(i)
            p_at = one.find(struct.pack('<3d', *p), pos)
            c_at = one.find(struct.pack('<4f', *c), pos)
            if p_at < 0 or c_at < p_at + 24:
                raise ValueError('marker template: sentinel not found')
            p_count = _count_position(one, two, p_at, shift)
            c_count = _count_position(one, two, c_at, shift + 24)
            shift += 40
            parts += [one[pos:p_count], struct.pack('<I', n), one[p_count + 4:p_at],
                      np.ascontiguousarray(xyz, '<f8').tobytes(), one[p_at + 24:c_count],
                      struct.pack('<I', n), np.ascontiguousarray(rgba, '<f4').tobytes()]
            pos = c_at + 16
        parts.append(one[pos:])
        return b''.join(parts)


def _count_position(one: bytes, two: bytes, data_at: int, shift: int) -> int:
    """Offset in ``one`` of the sequence count before its data at ``data_at``.

    The count is 1 there and 2 at ``shift`` bytes later in ``two``; the (uninitialised) padding
    that may lie between count and data cannot match both.
    """
    for cand in (data_at - 4, data_at - 8):
        if (cand >= 0 and one[cand:cand + 4] == struct.pack('<I', 1)
                and two[cand + shift:cand + shift + 4] == struct.pack('<I', 2)):
            return cand
    raise ValueError('marker template: sequence count not found')
