"""Writing rosbag2 recordings (mcap or sqlite3) of a camera with the ``rosbags`` package.

Pure Python, no ROS install needed; the bags play with ``ros2 bag play`` on Humble, Jazzy and
Kilted (the ROS 2 message definitions of sensor_msgs, tf2_msgs and nav_msgs are the same there).

:class:`CameraBagWriter` writes Image (colour, and depth as 16UC1 mm or 32FC1 m), CompressedImage,
CameraInfo, TFMessage and Odometry with header stamps and log times in nanoseconds; mcap output
can be zstd-compressed by chunk (``compress=True``), which ``ros2 bag`` reads without options.
The output is written under a temporary name and renamed when the writer closes without an
error, so a half-written bag never looks complete.
``path`` ending in ``.mcap`` or ``.db3`` gives a single storage file (``ros2 bag play FILE``
and :func:`l3rocc_core.sources.open_source` read it); any other path gives a rosbag2 directory
(``metadata.yaml`` + storage file).
"""

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.convert import DEPTH_ENCODINGS, ns_to_sec_nanosec
from l3rocc_core.transforms import matrix_to_quat

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
SUFFIX_STORAGE = {'.mcap': 'mcap', '.db3': 'sqlite3'}
DEFAULT_TOPICS = {
    'image': '/camera/image_raw',
    'compressed': '/camera/image_raw/compressed',
    'depth': '/camera/depth_registered/image_raw',
    'camera_info': '/camera/camera_info',
    'tf': '/tf',
    'tf_static': '/tf_static',
    'odometry': '/odom',
}
TYPES = {
    'image': 'sensor_msgs/msg/Image',
    'compressed': 'sensor_msgs/msg/CompressedImage',
    'depth': 'sensor_msgs/msg/Image',
    'camera_info': 'sensor_msgs/msg/CameraInfo',
    'tf': 'tf2_msgs/msg/TFMessage',
    'tf_static': 'tf2_msgs/msg/TFMessage',
    'odometry': 'nav_msgs/msg/Odometry',
}
# rgb input -> (cv2 conversion or None, channels)
IMAGE_ENCODINGS = {
    'rgb8': (None, 3), 'bgr8': (cv2.COLOR_RGB2BGR, 3), 'rgba8': (cv2.COLOR_RGB2RGBA, 4),
    'bgra8': (cv2.COLOR_RGB2BGRA, 4), 'mono8': (cv2.COLOR_RGB2GRAY, 1),
}
# depth dtype -> encoding: millimetres as uint16 (16UC1), metres as float32 (32FC1).
DEPTH_ENCODING_OF_DTYPE = {np.dtype(kind): enc for enc, (kind, _) in DEPTH_ENCODINGS.items()}
Transform = Tuple[str, str, np.ndarray]  # (parent, child, T_parent_child [4, 4])


def default_typestore() -> Any:
    """Return the rosbags typestore used for writing (ROS 2 Jazzy definitions)."""
    return get_typestore(Stores.ROS2_JAZZY)


def _qos(reliable: bool, transient_local: bool) -> Qos:
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1 if transient_local else 10,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=(QosDurability.TRANSIENT_LOCAL if transient_local
                           else QosDurability.VOLATILE),
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


class MessageFactory:
    """Builds rosbags message objects of the camera types from numpy data."""

    def __init__(self, typestore: Any = None):
        """Use ``typestore`` (default: :func:`default_typestore`)."""
        self.typestore = typestore if typestore is not None else default_typestore()
        self._t = self.typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        """Return a std_msgs/Header."""
        sec, nsec = ns_to_sec_nanosec(stamp_ns)
        return self._t['std_msgs/msg/Header'](
            stamp=self._t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec),
            frame_id=frame_id)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8'
              ) -> Any:
        """Return a sensor_msgs/Image of an RGB picture.

        :param rgb: uint8 [H, W, 3] RGB (or [H, W] grey for mono8)
        :param encoding: rgb8, bgr8, rgba8, bgra8 or mono8 (converted from RGB)
        """
        if encoding not in IMAGE_ENCODINGS:
            raise ValueError(f'encoding {encoding!r} not in {sorted(IMAGE_ENCODINGS)}')
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or not (rgb.ndim == 3 and rgb.shape[2] == 3 or (
                rgb.ndim == 2 and encoding == 'mono8')):
            raise ValueError(f'image must be uint8 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}')
        code, channels = IMAGE_ENCODINGS[encoding]
        data = rgb if code is None or rgb.ndim == 2 else cv2.cvtColor(rgb, code)
        h, w = data.shape[:2]
        return self.image_raw(np.ascontiguousarray(data).reshape(-1), w, h, w * channels,
                              encoding, stamp_ns, frame_id)

    def image_raw(self, data: np.ndarray, width: int, height: int, step: int, encoding: str,
                  stamp_ns: int, frame_id: str, is_bigendian: int = 0) -> Any:
        """Return a sensor_msgs/Image with exactly these fields (no checks: bad input too)."""
        return self._t['sensor_msgs/msg/Image'](
            header=self.header(stamp_ns, frame_id), height=int(height), width=int(width),
            encoding=encoding, is_bigendian=int(is_bigendian), step=int(step),
            data=np.asarray(data, np.uint8).reshape(-1))

    def depth_image(self, depth: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
        """Return a sensor_msgs/Image of a depth map (little endian).

        :param depth: uint16 [H, W] millimetres (16UC1) or float32 [H, W] metres (32FC1);
            0 = no return
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or depth.dtype not in DEPTH_ENCODING_OF_DTYPE:
            raise ValueError(f'depth must be uint16 mm or float32 m [H, W], got {depth.dtype} '
                             f'{depth.shape}')
        h, w = depth.shape
        data = np.ascontiguousarray(depth, depth.dtype.newbyteorder('<')).view(np.uint8)
        return self.image_raw(data.reshape(-1), w, h, w * depth.dtype.itemsize,
                              DEPTH_ENCODING_OF_DTYPE[depth.dtype], stamp_ns, frame_id)

    def compressed(self, rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = 'jpeg',
                   quality: int = 90) -> Any:
        """Return a sensor_msgs/CompressedImage (jpeg or png) of an RGB picture."""
        ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
        if ext is None:
            raise ValueError(f'format {fmt!r} must be jpeg or png')
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == '.jpg' else []
        ok, buf = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR),
                               params)
        if not ok:
            raise ValueError(f'cv2 could not encode the image as {fmt}')
        return self._t['sensor_msgs/msg/CompressedImage'](
            header=self.header(stamp_ns, frame_id), format='rgb8; jpeg compressed bgr8'
            if ext == '.jpg' else 'rgb8; png compressed bgr8', data=buf.reshape(-1))

    def camera_info(self, camera: PinholeCamera, stamp_ns: int, frame_id: str,
                    binning: Tuple[int, int] = (0, 0),
                    roi: Tuple[int, int, int, int] = (0, 0, 0, 0)) -> Any:
        """Return a sensor_msgs/CameraInfo of ``camera`` (P = K, R = identity).

        :param camera: full-sensor model; distortion 'none' is written as plumb_bob zeros
        :param binning: (binning_x, binning_y)
        :param roi: (x_offset, y_offset, width, height); zeros = full image
        """
        model = camera.distortion_model
        d = np.asarray(camera.D, np.float64)
        if model == 'none':
            model, d = 'plumb_bob', np.zeros(5)
        K = camera.K
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self._t['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp_ns, frame_id), height=int(camera.height),
            width=int(camera.width), distortion_model=model, d=d,
            k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=int(binning[0]), binning_y=int(binning[1]),
            roi=self._t['sensor_msgs/msg/RegionOfInterest'](
                x_offset=int(roi[0]), y_offset=int(roi[1]), width=int(roi[2]),
                height=int(roi[3]), do_rectify=False))

    def transform(self, T: np.ndarray) -> Any:
        """Return a geometry_msgs/Transform of a 4x4 matrix."""
        T = np.asarray(T, np.float64)
        if T.shape != (4, 4):
            raise ValueError(f'transform must be [4, 4], got {T.shape}')
        q = matrix_to_quat(T[:3, :3])
        t = self._t
        return t['geometry_msgs/msg/Transform'](
            translation=t['geometry_msgs/msg/Vector3'](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            rotation=t['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))

    def tf_message(self, transforms: Sequence[Transform], stamp_ns: int) -> Any:
        """Return a tf2_msgs/TFMessage; every transform carries ``stamp_ns``.

        :param transforms: (parent, child, T_parent_child float64 [4, 4]) triples
        """
        stamped = [self._t['geometry_msgs/msg/TransformStamped'](
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=self.transform(T)) for parent, child, T in transforms]
        return self._t['tf2_msgs/msg/TFMessage'](transforms=stamped)

    def odometry(self, T_frame_child: np.ndarray, stamp_ns: int, frame_id: str,
                 child_frame_id: str, linear: Sequence[float] = (0.0, 0.0, 0.0),
                 angular: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
        """Return a nav_msgs/Odometry: pose of ``child_frame_id`` in ``frame_id``.

        :param T_frame_child: float64 [4, 4]
        :param linear: twist linear velocity in the child frame (m/s)
        :param angular: twist angular velocity in the child frame (rad/s)
        """
        t = self._t
        tf = self.transform(T_frame_child)
        pose = t['geometry_msgs/msg/Pose'](
            position=t['geometry_msgs/msg/Point'](x=tf.translation.x, y=tf.translation.y,
                                                  z=tf.translation.z),
            orientation=tf.rotation)
        vec = t['geometry_msgs/msg/Vector3']
        twist = t['geometry_msgs/msg/Twist'](linear=vec(*map(float, linear)),
                                             angular=vec(*map(float, angular)))
        return t['nav_msgs/msg/Odometry'](
            header=self.header(stamp_ns, frame_id), child_frame_id=child_frame_id,
            pose=t['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=np.zeros(36)),
            twist=t['geometry_msgs/msg/TwistWithCovariance'](twist=twist,
                                                             covariance=np.zeros(36)))


class CameraBagWriter:
    """Writes a camera recording as rosbag2 (mcap or sqlite3), atomically.

    Use as a context manager; on an exception the partial output is removed. Topics default
    to :data:`DEFAULT_TOPICS` and can be renamed per writer (``topics={'image': '/cam/image'}``)
    or per call (``topic=...``). Log times default to the header stamps.

    :param path: output: a directory, or a ``.mcap``/``.db3`` file; must not exist
    :param storage: 'mcap' or 'sqlite3'; a ``.mcap``/``.db3`` suffix decides on its own
    :param topics: overrides of :data:`DEFAULT_TOPICS` by role
    :param typestore: rosbags typestore (default ROS 2 Jazzy)
    :param version: rosbag2 metadata version (8 or 9)
    :param compress: zstd-compress the mcap chunks (mcap storage only)
    """

    def __init__(self, path: str, storage: str = 'mcap',
                 topics: Optional[Dict[str, str]] = None, typestore: Any = None,
                 version: int = 9, compress: bool = False):
        """Open the temporary output."""
        self.path = Path(path)
        suffix_storage = SUFFIX_STORAGE.get(self.path.suffix)
        self.storage = suffix_storage or storage
        if self.storage not in STORAGES:
            raise ValueError(f'storage {storage!r} must be one of {sorted(STORAGES)}')
        if compress and self.storage != 'mcap':
            raise ValueError(f'compression is offered for mcap only, not {self.storage}')
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists; remove it or choose another path')
        self.single_file = suffix_storage is not None
        self.topics = dict(DEFAULT_TOPICS, **(topics or {}))
        self.factory = MessageFactory(typestore)
        self.typestore = self.factory.typestore
        self.counts: Dict[str, int] = {}
        # rosbags names the storage file after the bag directory: write <tmp>/<name>/ so the
        # final names are right, then move it into place.
        self._tmp_parent = self.path.parent / f'.{self.path.name}.partial'
        if self._tmp_parent.exists():
            shutil.rmtree(self._tmp_parent)
        self._tmp_parent.mkdir(parents=True)
        self._tmp = self._tmp_parent / (self.path.stem if self.single_file else self.path.name)
        try:
            self._writer = Writer(self._tmp, version=version,
                                  storage_plugin=STORAGES[self.storage])
            if compress:
                # STORAGE mode = the mcap file's own chunk compression, as rosbag2's mcap
                # presets write it: no .zstd file suffix, any mcap reader opens it.
                self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            self._writer.open()
        except BaseException:
            shutil.rmtree(self._tmp_parent, ignore_errors=True)
            raise
        self._connections: Dict[str, Any] = {}
        self._closed = False

    def __enter__(self) -> 'CameraBagWriter':
        """Return self."""
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Finish the bag, or remove it when the block raised."""
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ generic
    def write_message(self, topic: str, msgtype: str, msg: Any, log_time_ns: int,
                      transient_local: bool = False) -> None:
        """Serialise ``msg`` (a rosbags message of ``msgtype``) to ``topic`` at ``log_time_ns``.

        :param transient_local: QoS offered by the recorded publisher (latched, as /tf_static)
        """
        self.write_serialized(topic, msgtype, self.typestore.serialize_cdr(msg, msgtype),
                              log_time_ns, transient_local)

    def write_serialized(self, topic: str, msgtype: str, data: bytes, log_time_ns: int,
                         transient_local: bool = False) -> None:
        """Write a message of ``msgtype`` already serialised to CDR (as :meth:`write_message`)."""
        if self._closed:
            raise RuntimeError(f'{self.path}: the writer is closed')
        con = self._connections.get(topic)
        if con is None:
            con = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore,
                offered_qos_profiles=[_qos(True, transient_local)])
            self._connections[topic] = con
        elif con.msgtype != msgtype:
            raise ValueError(f'topic {topic} already holds {con.msgtype}, not {msgtype}')
        self._writer.write(con, int(log_time_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _write(self, role: str, msg: Any, stamp_ns: int, topic: Optional[str],
               log_time_ns: Optional[int], transient_local: bool = False) -> None:
        self.write_message(topic or self.topics[role], TYPES[role], msg,
                           stamp_ns if log_time_ns is None else log_time_ns, transient_local)

    # ------------------------------------------------------------------ camera types
    def write_image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str,
                    topic: Optional[str] = None, encoding: str = 'rgb8',
                    log_time_ns: Optional[int] = None) -> None:
        """Write a sensor_msgs/Image of an RGB picture (uint8 [H, W, 3]).

        :param encoding: rgb8, bgr8, rgba8, bgra8 or mono8 (converted from RGB)
        """
        self._write('image', self.factory.image(rgb, stamp_ns, frame_id, encoding), stamp_ns,
                    topic, log_time_ns)

    def write_compressed(self, rgb: np.ndarray, stamp_ns: int, frame_id: str,
                         topic: Optional[str] = None, fmt: str = 'jpeg', quality: int = 90,
                         log_time_ns: Optional[int] = None) -> None:
        """Write a sensor_msgs/CompressedImage (jpeg or png) of an RGB picture."""
        self._write('compressed', self.factory.compressed(rgb, stamp_ns, frame_id, fmt, quality),
                    stamp_ns, topic, log_time_ns)

    def write_depth(self, depth: np.ndarray, stamp_ns: int, frame_id: str,
                    topic: Optional[str] = None, log_time_ns: Optional[int] = None) -> None:
        """Write a depth sensor_msgs/Image (:meth:`MessageFactory.depth_image`)."""
        self._write('depth', self.factory.depth_image(depth, stamp_ns, frame_id), stamp_ns,
                    topic, log_time_ns)

    def write_camera_info(self, camera: PinholeCamera, stamp_ns: int, frame_id: str,
                          topic: Optional[str] = None, binning: Tuple[int, int] = (0, 0),
                          roi: Tuple[int, int, int, int] = (0, 0, 0, 0),
                          log_time_ns: Optional[int] = None) -> None:
        """Write a sensor_msgs/CameraInfo of ``camera`` (:meth:`MessageFactory.camera_info`)."""
        self._write('camera_info', self.factory.camera_info(camera, stamp_ns, frame_id, binning,
                                                            roi), stamp_ns, topic, log_time_ns)

    def write_tf(self, transforms: Sequence[Transform], stamp_ns: int, static: bool = False,
                 topic: Optional[str] = None, log_time_ns: Optional[int] = None) -> None:
        """Write a tf2_msgs/TFMessage to /tf (or /tf_static, latched, when ``static``).

        :param transforms: (parent, child, T_parent_child float64 [4, 4]) triples
        """
        role = 'tf_static' if static else 'tf'
        self._write(role, self.factory.tf_message(transforms, stamp_ns), stamp_ns, topic,
                    log_time_ns, transient_local=static)

    def write_odometry(self, T_frame_child: np.ndarray, stamp_ns: int, frame_id: str = 'odom',
                       child_frame_id: str = 'base_link', topic: Optional[str] = None,
                       linear: Sequence[float] = (0.0, 0.0, 0.0),
                       angular: Sequence[float] = (0.0, 0.0, 0.0),
                       log_time_ns: Optional[int] = None) -> None:
        """Write a nav_msgs/Odometry: pose of ``child_frame_id`` in ``frame_id``."""
        self._write('odometry', self.factory.odometry(T_frame_child, stamp_ns, frame_id,
                                                      child_frame_id, linear, angular),
                    stamp_ns, topic, log_time_ns)

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Finish the bag and move it to ``path``.

        :return: the final path
        """
        if self._closed:
            return self.path
        self._writer.close()
        self._closed = True
        if self.single_file:
            files = [p for p in self._tmp.iterdir() if p.suffix == self.path.suffix]
            if len(files) != 1:
                raise RuntimeError(f'{self._tmp}: expected one {self.path.suffix} file, found '
                                   f'{[p.name for p in files]}')
            os.replace(files[0], self.path)
        else:
            os.replace(self._tmp, self.path)
        shutil.rmtree(self._tmp_parent)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial output (nothing is left at ``path``)."""
        if not self._closed:
            self._closed = True
            try:
                self._writer.close()
            finally:
                shutil.rmtree(self._tmp_parent, ignore_errors=True)
