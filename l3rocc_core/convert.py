"""Message conversion shared by the node and by replay (duck-typed, no ROS import).

Works on rclpy messages and on ``rosbags`` deserialised messages alike: only attribute names of
sensor_msgs/Image (colour and depth), CompressedImage, CameraInfo, geometry_msgs/Transform and
Pose are used.
Every failure raises :class:`ConversionError` whose ``kind`` names a diagnostics counter.
"""

from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from l3rocc_core.camera import CameraModelError, PinholeCamera, Undistorter
from l3rocc_core.config import CameraConfig
from l3rocc_core.frame import Frame
from l3rocc_core.transforms import make_transform

ENCODINGS: Dict[str, Tuple[int, Optional[int]]] = {
    # encoding: (channels, cv2 conversion to RGB or None)
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
}
DEPTH_ENCODINGS: Dict[str, Tuple[str, float]] = {
    # encoding: (numpy type, metres per unit)
    '16UC1': ('u2', 1e-3),
    '32FC1': ('f4', 1.0),
}
MAX_IMAGE_PIXELS = 7680 * 4320  # 8K; larger frames are refused
OPENCV_D_SIZES = (4, 5, 8, 12, 14)  # distortion vector lengths cv2 undistortion accepts


class ConversionError(ValueError):
    """A message that cannot become a frame; ``kind`` is the diagnostics counter name."""

    def __init__(self, kind: str, message: str):
        """Store the counter name with the message."""
        super().__init__(message)
        self.kind = kind


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time (``sec``, ``nanosec``)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nanosec(stamp_ns: int) -> Tuple[int, int]:
    """(sec, nanosec) of a stamp in nanoseconds, for builtin_interfaces/Time."""
    return int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)


def _bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _encoding(table: Dict[str, Any], enc: str, msg: Any, kind: str, what: str) -> Any:
    """Return the entry of ``table`` for the normalised encoding ``enc`` of ``msg``.

    :raises ConversionError: ``kind`` when the table has no such encoding
    """
    if enc not in table:
        raise ConversionError(kind, f'{what} encoding {msg.encoding!r} is not supported '
                              f'(supported: {", ".join(table)})')
    return table[enc]


def _pixel_rows(msg: Any, pixel_bytes: int, enc: str) -> np.ndarray:
    """uint8 [H, W * pixel_bytes] view of a sensor_msgs/Image's pixels (row padding dropped).

    :raises ConversionError: zero or huge size, a step shorter than a row, data that is not
        step x height bytes (truncated)
    """
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError('bad_image_size', f'image size {w}x{h} is empty')
    if h * w > MAX_IMAGE_PIXELS:
        raise ConversionError('bad_image_size',
                              f'image {w}x{h} exceeds the {MAX_IMAGE_PIXELS} pixel limit (8K)')
    if step < w * pixel_bytes:
        raise ConversionError('bad_image_step',
                              f'step {step} < width {w} x {pixel_bytes} bytes per pixel ({enc})')
    data = _bytes(msg.data)
    if data.size != step * h:
        raise ConversionError('bad_image_data',
                              f'data has {data.size} bytes, expected step {step} x height {h} '
                              f'= {step * h}')
    return data.reshape(h, step)[:, :w * pixel_bytes]


def image_to_rgb(msg: Any) -> np.ndarray:
    """uint8 [H, W, 3] RGB copy of a sensor_msgs/Image.

    :raises ConversionError: unsupported encoding, zero or huge size, inconsistent step/data
    """
    enc = str(msg.encoding).lower()
    channels, code = _encoding(ENCODINGS, enc, msg, 'unsupported_encoding', 'image')
    h, w = int(msg.height), int(msg.width)
    img = _pixel_rows(msg, channels, enc).reshape(h, w, channels)
    if code is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), code)


def depth_image_to_metres(msg: Any) -> np.ndarray:
    """float32 [H, W] depth in metres of a sensor_msgs/Image (a depth camera's image).

    16UC1 holds millimetres (OpenNI, RealSense, TUM), 32FC1 metres (REP 118). Pixels without a
    return (0, NaN, +-inf, negative) become 0. ``step`` (row padding) and ``is_bigendian``
    are honoured.

    :raises ConversionError: another encoding (``bad_depth_encoding``), zero or huge size,
        inconsistent step or data (the kinds of :func:`image_to_rgb`)
    """
    enc = str(msg.encoding).upper()
    kind, scale = _encoding(DEPTH_ENCODINGS, enc, msg, 'bad_depth_encoding', 'depth image')
    dtype = np.dtype(kind).newbyteorder('>' if int(msg.is_bigendian) else '<')
    h, w = int(msg.height), int(msg.width)
    rows = _pixel_rows(msg, dtype.itemsize, enc)
    raw = np.ascontiguousarray(rows).view(dtype).reshape(h, w)
    depth = raw.astype(np.float32) * np.float32(scale)
    # No return: 0 by convention, NaN/inf from float drivers; a negative depth is no return too.
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a sensor_msgs/CompressedImage (jpeg, png).

    :raises ConversionError: when the bytes do not decode
    """
    data = _bytes(msg.data)
    if data.size == 0:
        raise ConversionError('bad_image_data', 'compressed image has no data')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ConversionError('bad_image_data',
                              f'compressed image ({msg.format!r}, {data.size} bytes) does not '
                              'decode')
    if img.shape[0] * img.shape[1] > MAX_IMAGE_PIXELS:
        raise ConversionError('bad_image_size', f'image {img.shape[1]}x{img.shape[0]} exceeds '
                              'the 8K limit')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def camera_from_info(msg: Any) -> PinholeCamera:
    """Camera of the published image from a sensor_msgs/CameraInfo (binning and ROI applied).

    :raises ConversionError: all-zero/NaN K, unknown distortion model, inconsistent ROI
    """
    roi = msg.roi
    try:
        camera = PinholeCamera.from_camera_info(
            int(msg.width), int(msg.height), list(msg.k), list(msg.d),
            str(msg.distortion_model), int(msg.binning_x), int(msg.binning_y),
            (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))
    except CameraModelError as exc:
        raise ConversionError('bad_camera_info', f'camera_info: {exc}') from exc
    if camera.has_distortion and len(camera.D) not in OPENCV_D_SIZES:
        raise ConversionError(
            'bad_camera_info', f'camera_info: D has {len(camera.D)} coefficients for '
            f'{camera.distortion_model!r}; expected 5 (plumb_bob) or 8 (rational_polynomial)')
    return camera


def transform_to_matrix(transform: Any) -> np.ndarray:
    """float64 [4, 4] of a geometry_msgs/Transform (``translation``, ``rotation``).

    :raises ConversionError: NaN/Inf or a quaternion far from unit norm
    """
    t, q = transform.translation, transform.rotation
    try:
        return make_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
    except ValueError as exc:
        raise ConversionError('bad_pose', str(exc)) from exc


def pose_to_matrix(pose: Any) -> np.ndarray:
    """float64 [4, 4] of a geometry_msgs/Pose (``position``, ``orientation``).

    :raises ConversionError: NaN/Inf or a quaternion far from unit norm
    """
    p, q = pose.position, pose.orientation
    try:
        return make_transform((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    except ValueError as exc:
        raise ConversionError('bad_pose', str(exc)) from exc


class FrameBuilder:
    """Turns (image, camera, stamp, pose) into :class:`Frame` at the working resolution.

    Keeps the undistortion tables of the current camera; a new camera model (other intrinsics
    or resolution) rebuilds them once.
    """

    def __init__(self, config: CameraConfig):
        """Use ``config.working_width`` and ``config.undistort``."""
        self.config = config
        self._undistorter: Optional[Undistorter] = None

    def camera_for(self, camera: PinholeCamera) -> Undistorter:
        """Return the cached undistorter of ``camera`` (rebuilt when the model changes)."""
        if self._undistorter is None or self._undistorter.source != camera:
            self._undistorter = Undistorter(camera, self.config.working_width,
                                            self.config.undistort)
        return self._undistorter

    def build(self, rgb: np.ndarray, camera: PinholeCamera, stamp_ns: int,
              T_world_cam: Optional[np.ndarray], frame_id: str,
              depth: Optional[np.ndarray] = None) -> Frame:
        """Frame from a full-size RGB image, and optionally its registered depth image.

        :param rgb: uint8 [H, W, 3] matching ``camera``'s size
        :param depth: optional float32 [H, W] metres registered to ``rgb`` (same pixels, same
            camera; e.g. :func:`depth_image_to_metres` of an aligned depth topic), 0 or NaN =
            no return. It is resized and undistorted like the image, by nearest neighbour,
            into ``Frame.depth``.
        :raises ConversionError: when the image and the camera disagree in size
            (``size_mismatch``), the depth and the image disagree in size
            (``depth_size_mismatch``), or the depth has no valid pixel (``depth_empty``)
        """
        if rgb.shape[0] != camera.height or rgb.shape[1] != camera.width:
            raise ConversionError(
                'size_mismatch', f'image {rgb.shape[1]}x{rgb.shape[0]} does not match '
                f'camera_info {camera.width}x{camera.height} (binning/ROI applied)')
        und = self.camera_for(camera)
        depth_work = None
        if depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != rgb.shape[:2]:
                raise ConversionError(
                    'depth_size_mismatch', f'depth {_size(depth)} does not match the image '
                    f'{rgb.shape[1]}x{rgb.shape[0]} (a registered depth image is needed)')
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))
            depth_work = und.depth(depth)
            if not np.any(depth_work > 0):
                raise ConversionError(
                    'depth_empty', f'depth image {_size(depth)} has no valid pixel (all 0 or '
                    'NaN) in the working image')
        return Frame(und(rgb), int(stamp_ns), und.camera, T_world_cam, frame_id, depth_work)


def _size(array: np.ndarray) -> str:
    """Return 'WxH' of an image array, or its shape when it is not 2D."""
    if array.ndim != 2:
        return f'of shape {array.shape}'
    return f'{array.shape[1]}x{array.shape[0]}'
