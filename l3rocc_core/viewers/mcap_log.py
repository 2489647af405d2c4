"""The node's outputs of an offline run as a ROS 2 MCAP (``l3rocc replay --mcap FILE.mcap``).

Per processed frame, with the frame's stamp as header stamp and log time, the topics the node
publishes (its default name ``l3rocc``, :data:`TOPICS`): ``/l3rocc/points`` (PointCloud2 of the
whole window, :func:`~l3rocc_core.viewers.node_outputs.occupancy_points`), ``/l3rocc/markers``
(MarkerArray: a DELETEALL, the newest slice's CUBE_LIST, older slices when ``publish_history``),
and ``/tf`` (the camera's optical frame in the grid's world frame); with ``images``, also the
frame as ``/camera/image_raw`` (rgb8, at the pipeline's working resolution) and its
``/camera/camera_info``, the topics of ``rviz/l3rocc.rviz``, so Foxglove's image panel and
RViz's image display have the picture. The MCAP chunks are zstd-compressed.

Messages are rosbags objects serialised to CDR by rosbags (no rclpy: this is the core), written
by :class:`l3rocc_core.bags.CameraBagWriter` with the message definitions in the file, so
Foxglove opens it as is and ``ros2 bag play`` plays it to RViz. The marker points are spliced
into a serialised template (:class:`~l3rocc_core.viewers.node_outputs.MarkerSplicer`), never
built as one object per voxel.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from l3rocc_core.bags import CameraBagWriter
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.viewers.node_outputs import (check_slices, marker_slices, MarkerSlice,
                                              MarkerSplicer, occupancy_points,
                                              POINTFIELD_FLOAT32)

NODE_NAME = 'l3rocc'
#: role -> topic of the MCAP
TOPICS = {'points': f'/{NODE_NAME}/points', 'markers': f'/{NODE_NAME}/markers', 'tf': '/tf',
          'image': '/camera/image_raw', 'camera_info': '/camera/camera_info'}
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'


class RosbagsMarkerEncoder(MarkerSplicer):
    """The node's MarkerArray serialised with rosbags (see :class:`MarkerSplicer`).

    :param typestore: the rosbags typestore of the bag
    :raises RuntimeError: when the splice does not reproduce the object-built message
    """

    def __init__(self, typestore: Any):
        """Check the splice once on a small known array."""
        self.typestore = typestore
        self._t = typestore.types
        slices = check_slices()
        header = self.header(12_000_000_345, 'odom')
        spliced = self.splice(header, 0.05, slices)
        built = self.template(header, 0.05, slices, lambda i: (
            slices[i][3].tolist(), slices[i][4].tolist()) if len(slices[i][3]) else None)
        if spliced != built:
            raise RuntimeError('the spliced MarkerArray differs from the object-built one')

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        """Return a std_msgs/Header of a stamp in nanoseconds."""
        t = self._t
        return t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](
            sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
            frame_id=frame_id)

    def _marker(self, header: Any, ns: str, mid: int, action: int, kind: int, alpha: float,
                voxel_size: float, points: List[Any], colors: List[Any]) -> Any:
        t = self._t
        vec = t['geometry_msgs/msg/Vector3']
        white = 0.0 if action == t['visualization_msgs/msg/Marker'].DELETEALL else 1.0
        return t['visualization_msgs/msg/Marker'](
            header=header, ns=ns, id=int(mid), type=int(kind), action=int(action),
            pose=t['geometry_msgs/msg/Pose'](
                position=t['geometry_msgs/msg/Point'](x=0.0, y=0.0, z=0.0),
                orientation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)),
            scale=vec(x=float(voxel_size), y=float(voxel_size), z=float(voxel_size)),
            color=t['std_msgs/msg/ColorRGBA'](r=white, g=white, b=white, a=float(alpha)),
            lifetime=t['builtin_interfaces/msg/Duration'](sec=0, nanosec=0),
            frame_locked=False, points=points, colors=colors, texture_resource='',
            texture=t['sensor_msgs/msg/CompressedImage'](
                header=self.header(0, ''), format='', data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text='', mesh_resource='',
            mesh_file=t['visualization_msgs/msg/MeshFile'](filename='',
                                                           data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)

    def template(self, header: Any, voxel_size: float, slices: Sequence[MarkerSlice],
                 sentinel: Any) -> bytes:
        """Serialise a MarkerArray with rosbags (see ``MarkerSplicer.template``)."""
        t = self._t
        m = t['visualization_msgs/msg/Marker']
        point, colour = t['geometry_msgs/msg/Point'], t['std_msgs/msg/ColorRGBA']
        markers = [self._marker(header, '', 0, m.DELETEALL, m.ARROW, 0.0, 0.0, [], [])]
        for i, (ns, mid, alpha, _, _) in enumerate(slices):
            fill = sentinel(i)
            pts = [] if fill is None else [point(x=x, y=y, z=z) for x, y, z in fill[0]]
            cols = [] if fill is None else [colour(r=r, g=g, b=b, a=a) for r, g, b, a in fill[1]]
            markers.append(self._marker(header, ns, mid, m.ADD, m.CUBE_LIST, alpha, voxel_size,
                                        pts, cols))
        return bytes(self.typestore.serialize_cdr(t[MARKER_ARRAY](markers=markers),
                                                  MARKER_ARRAY))


class OutputBagWriter:
    """Writes the node's outputs of each processed frame into an MCAP file (atomically).

    :param path: the ``.mcap`` file; an existing file is replaced when :meth:`close` succeeds
    :param publish_history: older slices as markers too (the node's ``publish_history``)
    :param markers: write the MarkerArray at all (the node's ``publish_markers``)
    :param images: also write each frame's picture and CameraInfo
    """

    def __init__(self, path: str, publish_history: bool = False, markers: bool = True,
                 images: bool = True):
        """Open the bag under a temporary name."""
        if not str(path).endswith('.mcap'):
            raise ValueError(f'{path}: the MCAP output must end in .mcap')
        self.path = str(path)
        self.publish_history = publish_history
        self.publish_markers = markers
        self.images = images
        self._tmp = os.path.join(os.path.dirname(os.path.abspath(self.path)),
                                 '.partial.' + os.path.basename(self.path))
        if os.path.exists(self._tmp):
            os.remove(self._tmp)
        self.bag = CameraBagWriter(self._tmp, compress=True, topics={
            k: v for k, v in TOPICS.items() if k in ('image', 'camera_info')})
        self._t = self.bag.typestore.types
        self.encoder = RosbagsMarkerEncoder(self.bag.typestore)

    @property
    def counts(self) -> Dict[str, int]:
        """Messages written per topic."""
        return dict(self.bag.counts)

    def add(self, occ: Occupancy4D, T_world_cam: Optional[np.ndarray], frame_id: str,
            camera: Any = None, rgb: Optional[np.ndarray] = None) -> None:
        """Write the outputs of one processed frame (stamped with the newest slice's stamp).

        :param occ: the window after the frame (``occ.grid.frame_id`` = the world frame)
        :param T_world_cam: float64 [4, 4] pose of ``frame_id`` in the world frame, or None
        :param frame_id: the image's optical frame
        :param camera: the frame's :class:`~l3rocc_core.camera.PinholeCamera` (for CameraInfo)
        :param rgb: uint8 [H, W, 3] the frame's picture, matching ``camera``
        """
        stamp = occ.newest_stamp_ns
        header = self.encoder.header(stamp, occ.grid.frame_id)
        self.bag.write_message(TOPICS['points'], POINTCLOUD2,
                               self._cloud(occupancy_points(occ), header), stamp)
        if self.publish_markers:
            raw = self.encoder.splice(header, occ.grid.voxel_size,
                                      marker_slices(occ, self.publish_history))
            self.bag.write_serialized(TOPICS['markers'], MARKER_ARRAY, raw, stamp)
        if T_world_cam is not None:
            self.bag.write_tf([(occ.grid.frame_id, frame_id, T_world_cam)], stamp,
                              topic=TOPICS['tf'])
        if self.images and rgb is not None:
            self.bag.write_image(rgb, stamp, frame_id)
            if camera is not None:
                self.bag.write_camera_info(camera, stamp, frame_id)

    def _cloud(self, points: np.ndarray, header: Any) -> Any:
        """sensor_msgs/PointCloud2 (height 1) of a structured array of float32 fields."""
        t = self._t
        points = np.ascontiguousarray(points)
        fields = [t['sensor_msgs/msg/PointField'](
            name=name, offset=points.dtype.fields[name][1], datatype=POINTFIELD_FLOAT32,
            count=1) for name in points.dtype.names]
        return t[POINTCLOUD2](
            header=header, height=1, width=int(points.shape[0]), fields=fields,
            is_bigendian=False, point_step=points.dtype.itemsize,
            row_step=points.dtype.itemsize * int(points.shape[0]),
            data=np.frombuffer(points.tobytes(), np.uint8), is_dense=True)

    def close(self) -> None:
        """Finish the file and move it to ``path``."""
        self.bag.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        self.bag.abort()
