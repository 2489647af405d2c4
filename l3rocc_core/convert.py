"""Message conversion shared by the node and by replay (duck-typed, no ROS import).

Works on rclpy messages and on ``rosbags`` deserialised messages alike: only attribute names of
sensor_msgs/Image, CompressedImage, CameraInfo, geometry_msgs/Transform and Pose are used.
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
# depth encoding: (stored dtype, metres per unit)
DEPTH_ENCODINGS: Dict[str, Tuple[np.dtype, float]] = {
    '16UC1': (np.dtype(np.uint16), 0.001),
    '32FC1': (np.dtype(np.float32), 1.0),
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


def image_to_rgb(msg: Any) -> np.ndarray:
    """uint8 [H, W, 3] RGB copy of a sensor_msgs/Image.

    :raises ConversionError: unsupported encoding, zero or huge size, inconsistent step/data
    """
    enc = str(msg.encoding).lower()
    if enc not in ENCODINGS:
        raise ConversionError('unsupported_encoding',
                              f'image encoding {msg.encoding!r} is not supported '
                              f'(supported: {", ".join(ENCODINGS)})')
    channels, code = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError('bad_image_size', f'image size {w}x{h} is empty')
    if h * w > MAX_IMAGE_PIXELS:
        raise ConversionError('bad_image_size',
                              f'image {w}x{h} exceeds the {MAX_IMAGE_PIXELS} pixel limit (8K)')
    if step < w * channels:
        raise ConversionError('bad_image_step',
                              f'step {step} < width {w} x {channels} channels ({enc})')
    data = _bytes(msg.data)
    if data.size != step * h:
        raise ConversionError('bad_image_data',
                              f'data has {data.size} bytes, expected step {step} x height {h} '
                              f'= {step * h}')
    img = data.reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if code is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), code)


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


def depth_image_to_m(msg: Any) -> np.ndarray:
    """float32 [H, W] metres of a depth sensor_msgs/Image: 16UC1 (mm) or 32FC1 (m).

    0 = no return: zeros, NaN, infinities and negative values all come out as 0.

    :raises ConversionError: other encodings, zero or huge size, inconsistent step/data
    """
    enc = str(msg.encoding).upper()
    if enc not in DEPTH_ENCODINGS:
        raise ConversionError('unsupported_encoding', f'depth encoding {msg.encoding!r} is not '
                              f'supported (supported: {", ".join(DEPTH_ENCODINGS)})')
    dtype, scale = DEPTH_ENCODINGS[enc]
    dtype = dtype.newbyteorder('>' if int(msg.is_bigendian) else '<')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0 or h * w > MAX_IMAGE_PIXELS:
        raise ConversionError('bad_image_size', f'depth image size {w}x{h} is empty or over 8K')
    data = _bytes(msg.data)
    if step < w * dtype.itemsize or data.size != step * h:
        raise ConversionError('bad_image_data', f'depth data has {data.size} bytes for step '
                              f'{step} x height {h} ({w} {enc} pixels a row)')
    rows = data.reshape(h, step)[:, :w * dtype.itemsize]
    depth = np.ascontiguousarray(rows).view(dtype).astype(np.float32) * np.float32(scale)
    depth[~(depth > 0) | ~np.isfinite(depth)] = 0.0
    return depth


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
              T_world_cam: Optional[np.ndarray], frame_id: str) -> Frame:
        """Frame from a full-size RGB image.

        :param rgb: uint8 [H, W, 3] matching ``camera``'s size
        :raises ConversionError: when the image and the camera disagree in size
        """
        if rgb.shape[0] != camera.height or rgb.shape[1] != camera.width:
            raise ConversionError(
                'size_mismatch', f'image {rgb.shape[1]}x{rgb.shape[0]} does not match '
                f'camera_info {camera.width}x{camera.height} (binning/ROI applied)')
        und = self.camera_for(camera)
        return Frame(und(rgb), int(stamp_ns), und.camera, T_world_cam, frame_id)
