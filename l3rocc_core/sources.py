"""Recorded inputs for replay: rosbag2 (mcap, sqlite3), video files and image folders.

:func:`open_source` picks the reader from the path:

- a rosbag2 directory, ``.mcap`` or ``.db3`` file -> :class:`BagSource`, which yields
  :class:`BagMessage` events in log-time order (rosbags-deserialised messages, duck-type
  compatible with :mod:`l3rocc_core.convert`); the image topic (Image or CompressedImage),
  CameraInfo, ``/tf``, ``/tf_static`` and Odometry are found automatically or named explicitly;
- a video file (anything OpenCV's VideoCapture opens) -> :class:`VideoSource`;
- a folder of png/jpg images -> :class:`ImageFolderSource` (a TUM RGB-D sequence folder with
  ``rgb/`` and ``groundtruth.txt`` works directly).

Video and image sources yield :class:`RawFrame` (full-size RGB, stamp, camera, optional pose);
their camera comes from ``intrinsics`` (:func:`parse_intrinsics`) and their poses from a TUM
trajectory file (``timestamp tx ty tz qx qy qz qw``, camera to world).

Every failure raises :class:`SourceError` with a ``kind`` and a message that says what to do.
"""

from dataclasses import dataclass
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import yaml

from l3rocc_core.camera import CameraModelError, PinholeCamera
from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable
from l3rocc_core.transforms import PoseError, make_transform

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
BAG_SUFFIXES = ('.mcap', '.db3')
ROLE_OF_TYPE = {
    'sensor_msgs/msg/Image': 'image',
    'sensor_msgs/msg/CompressedImage': 'compressed',
    'sensor_msgs/msg/CameraInfo': 'camera_info',
    'tf2_msgs/msg/TFMessage': 'tf',
    'nav_msgs/msg/Odometry': 'odometry',
}
INTRINSICS_HELP = ('--intrinsics fx,fy,cx,cy[,k1,k2,p1,p2[,k3]] (pixels of the full image), '
                   'fov=DEGREES (horizontal; or hfov=), or a calibration YAML '
                   '(camera_calibration ost.yaml or a CameraInfo-like file with k, d, width, '
                   'height)')


class SourceError(RuntimeError):
    """An input that cannot be replayed; ``kind`` names the problem for reports and exit codes.

    Kinds: 'missing_source', 'bad_bag', 'no_image_topic', 'no_camera_info', 'bad_video',
    'no_images', 'bad_intrinsics', 'bad_poses'.
    """

    def __init__(self, kind: str, message: str):
        """Store the kind with the message."""
        super().__init__(message)
        self.kind = kind


@dataclass
class BagMessage:
    """One recorded message.

    :param topic: topic name
    :param msgtype: e.g. 'sensor_msgs/msg/Image'
    :param role: 'image', 'compressed', 'camera_info', 'tf', 'tf_static', 'odometry' or
        'depth'
    :param msg: the deserialised message (rosbags dataclass; duck-typed like rclpy's)
    :param log_time_ns: recording time in nanoseconds
    """

    topic: str
    msgtype: str
    role: str
    msg: Any
    log_time_ns: int


@dataclass
class RawFrame:
    """A full-size frame of a video or image folder.

    :param rgb: uint8 [H, W, 3] RGB at the source's resolution
    :param stamp_ns: capture time in nanoseconds
    :param camera: camera model of ``rgb`` (possibly distorted)
    :param T_world_cam: float64 [4, 4] camera-to-world pose from the poses file, or None
    :param frame_id: the camera's frame name
    :param index: position in the source (0-based)
    """

    rgb: np.ndarray
    stamp_ns: int
    camera: PinholeCamera
    T_world_cam: Optional[np.ndarray]
    frame_id: str
    index: int


# ---------------------------------------------------------------------------- intrinsics
CameraFactory = Callable[[int, int], PinholeCamera]


def parse_intrinsics(spec: str) -> CameraFactory:
    """Turn an ``--intrinsics`` value into a function (width, height) -> PinholeCamera.

    :param spec: 'fx,fy,cx,cy[,k1,k2,p1,p2[,k3[,k4,k5,k6]]]' (5 coefficients = plumb_bob,
        8 = rational_polynomial), 'fov=DEGREES' or 'hfov=DEGREES' (horizontal field of view;
        principal point at the centre, square pixels, no distortion), or a YAML file path
        (camera_calibration's ``ost.yaml`` with ``image_width``, ``camera_matrix``,
        ``distortion_model``, ``distortion_coefficients``; or CameraInfo-like keys ``width``,
        ``height``, ``k``, ``d``, ``distortion_model``).
        A calibration for another resolution of the same aspect ratio is scaled.
    :raises SourceError: kind 'bad_intrinsics'
    """
    text = str(spec).strip()
    if os.path.isfile(text):
        return _yaml_intrinsics(text)
    if text.lower().startswith(('hfov=', 'fov=')):
        try:
            hfov = float(text.split('=', 1)[1])
        except ValueError:
            raise SourceError('bad_intrinsics', f'bad hfov in {text!r}; {INTRINSICS_HELP}')
        if not 1.0 <= hfov <= 179.0:
            raise SourceError('bad_intrinsics', f'hfov {hfov} must be in [1, 179] degrees')

        def from_hfov(width: int, height: int) -> PinholeCamera:
            f = width / 2.0 / math.tan(math.radians(hfov) / 2.0)
            return PinholeCamera(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)
        return from_hfov
    try:
        vals = [float(v) for v in text.replace(' ', '').split(',') if v != '']
    except ValueError:
        raise SourceError('bad_intrinsics', f'cannot read intrinsics {text!r} (not a file, not '
                          f'numbers); {INTRINSICS_HELP}')
    if len(vals) not in (4, 8, 9, 12):
        raise SourceError('bad_intrinsics', f'intrinsics {text!r} have {len(vals)} numbers; '
                          f'{INTRINSICS_HELP}')
    fx, fy, cx, cy = vals[:4]
    d = tuple(vals[4:])
    model = 'none' if not d else ('plumb_bob' if len(d) <= 5 else 'rational_polynomial')

    def from_values(width: int, height: int) -> PinholeCamera:
        try:
            return PinholeCamera(width, height, fx, fy, cx, cy, model, d)
        except CameraModelError as exc:
            raise SourceError('bad_intrinsics', f'intrinsics {text!r}: {exc}') from exc
    from_values(max(1, int(cx * 2)), max(1, int(cy * 2)))  # validate now, not at frame 1
    return from_values


def _yaml_intrinsics(path: str) -> CameraFactory:
    try:
        with open(path, 'r', encoding='utf-8') as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError('bad_intrinsics', f'cannot read calibration {path}: {exc}') from exc
    if not isinstance(doc, dict):
        raise SourceError('bad_intrinsics', f'{path}: not a calibration YAML')

    def data(v: Any) -> List[float]:
        return [float(x) for x in (v['data'] if isinstance(v, dict) else v)]
    try:
        if 'camera_matrix' in doc:
            w, h = int(doc['image_width']), int(doc['image_height'])
            K = data(doc['camera_matrix'])
            D = data(doc.get('distortion_coefficients', []) or [])
        else:
            w, h = int(doc['width']), int(doc['height'])
            K = data(doc.get('k') or doc['K'])
            D = data(doc.get('d') or doc.get('D') or [])
        model = str(doc.get('distortion_model') or ('plumb_bob' if D else 'none'))
        base = PinholeCamera.from_camera_info(w, h, K, D, model)
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError('bad_intrinsics', f'{path}: not a calibration YAML ({exc!r}); '
                          f'{INTRINSICS_HELP}') from exc
    return _scaled_camera(base, f'calibration {path}')


def _scaled_camera(base: PinholeCamera, what: str) -> CameraFactory:
    """Return a factory: ``base`` at its own size, scaled to other sizes of its aspect ratio.

    :param base: the camera as calibrated
    :param what: names the camera in the error, e.g. ``'calibration ost.yaml'``
    :raises SourceError: 'bad_intrinsics' (when called) for images of another aspect ratio
    """
    def at_size(width: int, height: int) -> PinholeCamera:
        if (width, height) == (base.width, base.height):
            return base
        if abs(width / height - base.width / base.height) > 0.01:
            raise SourceError('bad_intrinsics', f'{what} is for {base.width}x{base.height}, '
                              f'the images are {width}x{height} (other aspect ratio)')
        return base.scaled(width, height)
    return at_size


def camera_factory(intrinsics: Any) -> Optional[CameraFactory]:
    """Accept a spec string, a PinholeCamera (scaled to its aspect ratio), a factory, None."""
    if intrinsics is None or callable(intrinsics) and not isinstance(intrinsics, PinholeCamera):
        return intrinsics
    if isinstance(intrinsics, PinholeCamera):
        return _scaled_camera(intrinsics, 'the camera')
    return parse_intrinsics(str(intrinsics))


# ---------------------------------------------------------------------------- poses
def load_tum_trajectory(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory: ``timestamp tx ty tz qx qy qz qw`` lines, '#' comments.

    :return: (stamps int64 [N] ns, T_world_cam float64 [N, 4, 4]) sorted by stamp
    :raises SourceError: kind 'bad_poses'
    """
    stamps, poses = [], []
    try:
        with open(path, 'r', encoding='utf-8') as f:
            lines = f.readlines()
    except OSError as exc:
        raise SourceError('bad_poses', f'cannot read poses {path}: {exc}') from exc
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith('#'):
            continue
        try:
            if len(parts) != 8:
                raise ValueError(f'{len(parts)} columns, expected 8')
            vals = [float(v) for v in parts[1:]]
            poses.append(make_transform(vals[:3], vals[3:]))
            stamps.append(seconds_text_to_ns(parts[0]))
        except (ValueError, PoseError) as exc:
            raise SourceError('bad_poses', f'{path}:{n}: {exc} (TUM format: timestamp tx ty tz '
                              'qx qy qz qw)') from exc
    if not stamps:
        raise SourceError('bad_poses', f'{path}: no poses')
    order = np.argsort(np.asarray(stamps, np.int64), kind='stable')
    return np.asarray(stamps, np.int64)[order], np.stack(poses)[order]


def seconds_text_to_ns(text: str) -> int:
    """Nanoseconds of a decimal seconds string without float rounding ('1305031102.175304').

    :raises ValueError: when ``text`` is not a non-negative decimal number
    """
    text = text.strip()
    whole, _, frac = text.partition('.')
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f'{text!r} is not a timestamp in seconds')
    return int(whole) * 1_000_000_000 + int((frac + '000000000')[:9])


class PoseTable:
    """Camera-to-world poses interpolated at any stamp inside a trajectory (never beyond)."""

    def __init__(self, stamps_ns: np.ndarray, T_world_cam: np.ndarray):
        """Keep the samples in a :class:`TransformBuffer` (slerp + linear interpolation)."""
        span_s = (int(stamps_ns[-1]) - int(stamps_ns[0])) / 1e9 + 1.0
        self._buffer = TransformBuffer(cache_time_s=span_s)
        for stamp, T in zip(stamps_ns, T_world_cam):
            self._buffer.set_transform('world', 'camera', int(stamp), T)

    @classmethod
    def from_file(cls, path: str) -> 'PoseTable':
        """Load a TUM trajectory file."""
        return cls(*load_tum_trajectory(path))

    def at(self, stamp_ns: int) -> Optional[np.ndarray]:
        """T_world_cam float64 [4, 4] at ``stamp_ns``, or None outside the trajectory."""
        try:
            return self._buffer.lookup('world', 'camera', int(stamp_ns))
        except TransformUnavailable:
            return None


# ---------------------------------------------------------------------------- bags
def check_sqlite_size(path: Path) -> None:
    """Compare an SQLite file's size with the page count its header declares.

    SQLite reads a truncated file without complaint as long as the missing pages are not
    touched; the header (bytes 16-17 page size, 28-31 page count) tells how long it must be.

    :raises SourceError: 'bad_bag' when the file is shorter than its header says
    """
    with open(path, 'rb') as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b'SQLite format 3\x00'):
        raise SourceError('bad_bag', f'{path}: not an SQLite database (rosbag2 sqlite3 storage)')
    page_size = int.from_bytes(head[16:18], 'big')
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], 'big')
    if head[24:28] != head[92:96]:
        return  # the page count is stale (written by an old SQLite): no verdict
    expected, size = page_size * pages, path.stat().st_size
    if pages and size < expected:
        raise SourceError('bad_bag', f'{path}: truncated: {size} bytes, the SQLite header '
                          f'declares {pages} pages = {expected} bytes; salvage it with '
                          '`sqlite3 FILE .recover`')


class BagSource:
    """Time-ordered messages of a rosbag2 (directory, ``.mcap`` or ``.db3``) via rosbags.

    Topics are chosen at open: named ones must exist with the right type; otherwise the
    image topic is the Image (or CompressedImage) topic with the most messages, preferring
    colour over depth (whatever the transport: a bag of compressed colour and raw depth
    replays the colour), then raw over compressed unless ``image_transport='compressed'``;
    CameraInfo is the one next to the image topic; TF is ``/tf`` + ``/tf_static``; Odometry
    the only (or named) nav_msgs/Odometry topic. Messages on other topics are not
    deserialised and are counted in :attr:`skipped` by type.

    :param require_camera_info: raise 'no_camera_info' when the bag has none (set False when
        intrinsics are given)
    :raises SourceError: 'bad_bag', 'no_image_topic', 'no_camera_info'
    """

    kind = 'bag'

    def __init__(self, path: str, image_topic: Optional[str] = None,
                 camera_info_topic: Optional[str] = None, odom_topic: Optional[str] = None,
                 tf_topic: str = '/tf', tf_static_topic: str = '/tf_static',
                 image_transport: Optional[str] = None, require_camera_info: bool = True,
                 depth_topic: Optional[str] = None, want_depth: bool = False):
        """Open the bag and choose the topics."""
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore
        self.path = Path(path)
        for db in ([self.path] if self.path.suffix == '.db3' else
                   sorted(self.path.glob('*.db3')) if self.path.is_dir() else []):
            check_sqlite_size(db)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises many types for broken files
            raise SourceError('bad_bag', f'{path}: cannot open the rosbag2 '
                              f'({type(exc).__name__}: {exc}); is it truncated or not a '
                              'rosbag2 (mcap, sqlite3)? An interrupted mcap recording can be '
                              'repaired with `mcap recover`, a sqlite3 one salvaged with '
                              '`sqlite3 FILE .recover`') from exc
        self.topics: Dict[str, str] = {}
        self.counts: Dict[str, int] = {}
        for con in self._reader.connections:
            self.topics[con.topic] = con.msgtype
            self.counts[con.topic] = self.counts.get(con.topic, 0) + int(con.msgcount)
        self.image_topic = self._choose_image(image_topic, image_transport)
        self.camera_info_topic = self._choose_camera_info(camera_info_topic, require_camera_info)
        self.odom_topic = self._choose_single(odom_topic, 'nav_msgs/msg/Odometry', 'odometry')
        self.roles: Dict[str, str] = {self.image_topic: ROLE_OF_TYPE[
            self.topics[self.image_topic]]}
        if self.camera_info_topic:
            self.roles[self.camera_info_topic] = 'camera_info'
        if self.odom_topic:
            self.roles[self.odom_topic] = 'odometry'
        self.depth_topic = self._choose_depth(depth_topic) if want_depth or depth_topic else None
        if self.depth_topic:
            self.roles[self.depth_topic] = 'depth'
        for topic, role in ((tf_topic, 'tf'), (tf_static_topic, 'tf_static')):
            if self.topics.get(topic) == 'tf2_msgs/msg/TFMessage':
                self.roles[topic] = role
        self._typestore = get_typestore(Stores.ROS2_JAZZY)
        self.skipped: Dict[str, int] = {}
        for topic, msgtype in self.topics.items():
            if topic not in self.roles:
                self.skipped[msgtype] = self.skipped.get(msgtype, 0) + self.counts[topic]
        self.bad_messages: Dict[str, int] = {}
        self.last_error: Optional[str] = None

    # -- topic choice
    def _of_type(self, *types: str) -> List[str]:
        return [t for t, m in self.topics.items() if m in types]

    def _listing(self) -> str:
        return ', '.join(f'{t} ({m}, {self.counts[t]})' for t, m in sorted(self.topics.items()))

    def _choose_image(self, name: Optional[str], transport: Optional[str]) -> str:
        kinds = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
        if name:
            if name not in self.topics:
                raise SourceError('no_image_topic', f'{self.path}: no topic {name!r}; topics: '
                                  f'{self._listing() or "none"}')
            if self.topics[name] not in kinds:
                raise SourceError('no_image_topic', f'{self.path}: {name} is '
                                  f'{self.topics[name]}, not Image or CompressedImage')
            return name
        candidates = self._of_type(*kinds)
        if not candidates:
            raise SourceError('no_image_topic', f'{self.path}: no sensor_msgs/Image or '
                              f'CompressedImage topic; topics: {self._listing() or "none"}')

        def rank(topic: str) -> Tuple[int, int, int]:
            compressed = self.topics[topic].endswith('CompressedImage')
            want_compressed = transport == 'compressed'
            depth = any(w in topic.lower() for w in ('depth', 'disparity', 'ir', 'mask'))
            return (int(depth), int(compressed != want_compressed), -self.counts[topic])
        return sorted(candidates, key=rank)[0]

    def _choose_depth(self, name: Optional[str]) -> Optional[str]:
        """Return the registered depth topic: ``name``, else the Image topic named like depth."""
        if name:
            if self.topics.get(name) != 'sensor_msgs/msg/Image':
                raise SourceError('no_depth_topic', f'{self.path}: no sensor_msgs/Image topic '
                                  f'{name!r} ({self._listing()})')
            return name
        found = [t for t in self._of_type('sensor_msgs/msg/Image')
                 if t != self.image_topic and 'depth' in t.lower()]
        if not found:
            raise SourceError('no_depth_topic', f'{self.path}: no depth image topic (an Image '
                              f"topic named like 'depth'; name it with --depth-topic): "
                              f'{self._listing()}')
        return max(found, key=lambda t: self.counts[t])

    def _choose_camera_info(self, name: Optional[str], required: bool) -> Optional[str]:
        infos = self._of_type('sensor_msgs/msg/CameraInfo')
        if name:
            if self.topics.get(name) != 'sensor_msgs/msg/CameraInfo':
                raise SourceError('no_camera_info', f'{self.path}: no CameraInfo topic '
                                  f'{name!r}; CameraInfo topics: {infos or "none"}')
            return name
        image_ns = self.image_topic.rsplit('/', 1)[0]
        if image_ns.endswith('/image_raw') or image_ns.endswith('/image'):
            image_ns = image_ns.rsplit('/', 1)[0]  # .../image_raw/compressed
        near = [t for t in infos if t.rsplit('/', 1)[0] == image_ns]
        if near or infos:
            return sorted(near or infos, key=lambda t: -self.counts[t])[0]
        if required:
            raise SourceError('no_camera_info', f'{self.path} has no sensor_msgs/CameraInfo '
                              f'topic: give the camera with {INTRINSICS_HELP}')
        return None

    def _choose_single(self, name: Optional[str], msgtype: str, what: str) -> Optional[str]:
        found = self._of_type(msgtype)
        if name:
            if name not in found:
                raise SourceError('no_' + what, f'{self.path}: no {msgtype} topic {name!r}; '
                                  f'found {found or "none"}')
            return name
        return sorted(found, key=lambda t: -self.counts[t])[0] if found else None

    # -- reading
    @property
    def num_images(self) -> int:
        """Messages on the image topic."""
        return self.counts[self.image_topic]

    def describe(self) -> str:
        """One line naming the chosen topics."""
        roles = ', '.join(f'{r}={t}' for t, r in sorted(self.roles.items(), key=lambda x: x[1]))
        skipped = ', '.join(f'{m} x{n}' for m, n in sorted(self.skipped.items()))
        return f'bag {self.path}: {roles}' + (f'; not used: {skipped}' if skipped else '')

    def __iter__(self) -> Iterator[BagMessage]:
        """Yield the chosen topics' messages in log-time order.

        A message that does not deserialise is counted in :attr:`bad_messages` (by topic) and
        skipped.

        :raises SourceError: 'bad_bag' when the storage breaks while reading (truncation)
        """
        cons = [c for c in self._reader.connections if c.topic in self.roles]
        # Only the chosen topics are deserialised, with the standard ROS 2 definitions, so a
        # custom or broken type elsewhere in the bag cannot stop the replay.
        typestore = self._typestore
        try:
            for con, log_time, raw in self._reader.messages(connections=cons):
                try:
                    msg = typestore.deserialize_cdr(raw, con.msgtype)
                except Exception as exc:  # corrupt CDR raises assorted errors
                    self.bad_messages[con.topic] = self.bad_messages.get(con.topic, 0) + 1
                    self.last_error = f'{con.topic}: {type(exc).__name__}: {exc}'
                    continue
                yield BagMessage(con.topic, con.msgtype, self.roles[con.topic], msg,
                                 int(log_time))
        except SourceError:
            raise
        except Exception as exc:  # storage errors of a damaged file
            raise SourceError('bad_bag', f'{self.path}: reading failed ({type(exc).__name__}: '
                              f'{exc}); the bag is damaged or truncated') from exc

    def close(self) -> None:
        """Close the reader."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> 'BagSource':
        """Return self."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close."""
        self.close()


# ---------------------------------------------------------------------------- video, images
class _FrameSource:
    """Shared part of video and image-folder sources."""

    kind = 'frames'

    def __init__(self, intrinsics: Any, poses: Optional[str], frame_id: str):
        self._factory = camera_factory(intrinsics)
        self.poses = PoseTable.from_file(poses) if poses else None
        self.frame_id = frame_id
        self._camera: Optional[PinholeCamera] = None

    def camera_for(self, width: int, height: int) -> PinholeCamera:
        """Return the camera of a ``width`` x ``height`` frame (built once per size)."""
        if self._factory is None:
            raise SourceError('no_camera_info', f'{self.describe()}: no camera model; give it '
                              f'with {INTRINSICS_HELP}')
        if self._camera is None or (self._camera.width, self._camera.height) != (width, height):
            try:
                self._camera = self._factory(width, height)
            except CameraModelError as exc:
                raise SourceError('bad_intrinsics', str(exc)) from exc
        return self._camera

    def _frame(self, rgb: np.ndarray, stamp_ns: int, index: int) -> RawFrame:
        cam = self.camera_for(rgb.shape[1], rgb.shape[0])
        T = self.poses.at(stamp_ns) if self.poses is not None else None
        return RawFrame(rgb, int(stamp_ns), cam, T, self.frame_id, index)

    def describe(self) -> str:
        """One line naming the source."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""

    def __enter__(self) -> '_FrameSource':
        """Return self."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close."""
        self.close()


class VideoSource(_FrameSource):
    """Frames of a video file decoded by OpenCV; stamps = ``start_ns`` + index / fps.

    :param fps: overrides the container's frame rate (also used when it reports none)
    :raises SourceError: 'bad_video' when nothing decodes
    """

    kind = 'video'

    def __init__(self, path: str, intrinsics: Any = None, poses: Optional[str] = None,
                 fps: Optional[float] = None, frame_id: str = 'camera', start_ns: int = 0):
        """Open the video and decode its first frame (so a broken file fails here)."""
        self.path = str(path)
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise SourceError('bad_video', f'{path}: OpenCV cannot open this video (unknown '
                              'container/codec or not a video)')
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError('bad_video', f'{path}: no frame could be decoded')
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        container_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = float(fps) if fps else (container_fps if container_fps > 0 else 30.0)
        self.num_frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (first.shape[1], first.shape[0])
        self.start_ns = int(start_ns)
        self._cap = cap
        super().__init__(intrinsics, poses, frame_id)
        self.camera_for(*self.size)

    def describe(self) -> str:
        """One line naming the source."""
        return (f'video {self.path}: {self.size[0]}x{self.size[1]}, {self.fps:g} fps, '
                f'{self.num_frames} frames')

    def __iter__(self) -> Iterator[RawFrame]:
        """Yield frames in order."""
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                break
            stamp = self.start_ns + int(round(index * 1e9 / self.fps))
            yield self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp, index)
            index += 1

    def close(self) -> None:
        """Release the decoder."""
        self._cap.release()


class ImageFolderSource(_FrameSource):
    """Sorted png/jpg files of a folder; stamps from names like ``1305031102.175304.png``.

    Names that are not timestamps give ``start_ns`` + index / fps (files sorted by name).
    A TUM RGB-D folder (``rgb/`` + ``rgb.txt``) reads ``rgb/`` and, unless ``poses`` is given,
    its ``groundtruth.txt``.

    :raises SourceError: 'no_images'
    """

    kind = 'images'

    def __init__(self, path: str, intrinsics: Any = None, poses: Optional[str] = None,
                 fps: Optional[float] = None, frame_id: str = 'camera', start_ns: int = 0):
        """List the images."""
        folder = Path(path)
        if (folder / 'rgb').is_dir() and (folder / 'rgb.txt').is_file():
            if poses is None and (folder / 'groundtruth.txt').is_file():
                poses = str(folder / 'groundtruth.txt')
            folder = folder / 'rgb'
        self.path = folder
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise SourceError('no_images', f'{path}: no {"/".join(IMAGE_SUFFIXES)} images')
        self.fps = float(fps) if fps else 30.0
        try:
            stamps = [seconds_text_to_ns(p.stem) for p in files]
            order = sorted(range(len(files)), key=lambda i: stamps[i])
            self.files = [files[i] for i in order]
            self.stamps = [stamps[i] for i in order]
        except ValueError:
            self.files = sorted(files)
            self.stamps = [int(start_ns) + int(round(i * 1e9 / self.fps))
                           for i in range(len(files))]
        self.num_frames = len(self.files)
        super().__init__(intrinsics, poses, frame_id)

    def describe(self) -> str:
        """One line naming the source."""
        return f'images {self.path}: {self.num_frames} files'

    def __iter__(self) -> Iterator[RawFrame]:
        """Yield frames in stamp order.

        :raises SourceError: 'no_images' when a file does not decode
        """
        for i, (p, stamp) in enumerate(zip(self.files, self.stamps)):
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError('no_images', f'{p}: cannot decode the image')
            yield self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp, i)


Source = Any  # BagSource | VideoSource | ImageFolderSource


def open_source(path: str, image_topic: Optional[str] = None,
                camera_info_topic: Optional[str] = None, odom_topic: Optional[str] = None,
                tf_topic: str = '/tf', tf_static_topic: str = '/tf_static',
                image_transport: Optional[str] = None, intrinsics: Any = None,
                poses: Optional[str] = None, fps: Optional[float] = None,
                frame_id: str = 'camera', depth_topic: Optional[str] = None,
                want_depth: bool = False) -> Source:
    """Open a recorded input for replay.

    :param path: rosbag2 directory / ``.mcap`` / ``.db3``, video file, or image folder
    :param image_topic: bag topic of the images (default: auto)
    :param camera_info_topic: bag CameraInfo topic (default: next to the image topic)
    :param odom_topic: bag nav_msgs/Odometry topic (default: the only one)
    :param tf_topic: bag topic of tf2_msgs/TFMessage
    :param tf_static_topic: bag topic of latched TFMessages
    :param image_transport: 'compressed' prefers CompressedImage topics
    :param intrinsics: ``--intrinsics`` value (see :func:`parse_intrinsics`) or PinholeCamera;
        required for videos/images, optional for bags (then it replaces CameraInfo)
    :param poses: TUM trajectory file for videos/images (camera to world)
    :param fps: frame rate of videos/images without usable stamps
    :param frame_id: frame name of video/image frames
    :param depth_topic: bag topic of registered depth images (default: auto when ``want_depth``)
    :param want_depth: read a depth topic too (``depth_source: topic``); bags only
    :return: a :class:`BagSource`, :class:`VideoSource` or :class:`ImageFolderSource`
    :raises SourceError: with a kind and a message saying what to do
    """
    p = Path(path)
    if not p.exists():
        raise SourceError('missing_source', f'{path} does not exist')
    bag_file = None
    if p.is_dir():
        if (p / 'metadata.yaml').is_file():
            bag_file = p
        else:
            stores = sorted(q for q in p.iterdir() if q.suffix in BAG_SUFFIXES)
            if len(stores) == 1:
                bag_file = stores[0]
    elif p.suffix in BAG_SUFFIXES:
        bag_file = p
    if bag_file is not None:
        return BagSource(str(bag_file), image_topic, camera_info_topic, odom_topic, tf_topic,
                         tf_static_topic, image_transport,
                         require_camera_info=intrinsics is None, depth_topic=depth_topic,
                         want_depth=want_depth)
    if want_depth:
        raise SourceError('no_depth_topic', f'{path}: depth_source topic needs a rosbag2 with a '
                          'registered depth image topic; videos and image folders have none')
    if p.is_dir():
        return ImageFolderSource(str(p), intrinsics, poses, fps, frame_id)
    return VideoSource(str(p), intrinsics, poses, fps, frame_id)


def iter_images(path: str, intrinsics: Any = None, image_topic: Optional[str] = None,
                fps: Optional[float] = None, poses: Optional[str] = None
                ) -> Iterator[Tuple[int, np.ndarray, Optional[np.ndarray]]]:
    """Yield the pictures of a recorded input, in recorded order, for previews and exports.

    A video or image folder needs some camera model to open; when none is given, a placeholder
    is used, which plays no part in the pictures.

    :param path: as :func:`open_source`
    :param intrinsics: ``--intrinsics`` of a video/image folder (optional here)
    :param image_topic: bag image topic (default: auto)
    :param fps: frame rate of a video/image folder without stamps, as given to replay
    :param poses: TUM trajectory of a video/image folder
    :return: (stamp_ns, uint8 [H, W, 3] RGB at the source's resolution, T_world_cam float64
        [4, 4] or None) per image
    :raises SourceError: unreadable input
    """
    from l3rocc_core.convert import compressed_to_rgb, image_to_rgb, stamp_to_ns
    p = Path(path)
    # (as open_source tells a bag from an image folder)
    is_bag = p.suffix in BAG_SUFFIXES or p.is_dir() and (
        (p / 'metadata.yaml').is_file()
        or sum(q.suffix in BAG_SUFFIXES for q in p.iterdir()) == 1)
    kwargs: Dict[str, Any] = {'image_topic': image_topic} if is_bag else {
        'intrinsics': intrinsics or 'hfov=60', 'fps': fps, 'poses': poses}
    with open_source(path, **kwargs) as source:
        for item in source:
            if isinstance(item, BagMessage):
                if item.role in ('image', 'compressed'):
                    rgb = (image_to_rgb(item.msg) if item.role == 'image'
                           else compressed_to_rgb(item.msg))
                    yield stamp_to_ns(item.msg.header.stamp), rgb, None
            else:
                yield item.stamp_ns, item.rgb, item.T_world_cam


def pictures_at(images: Iterator[Tuple[int, np.ndarray, Any]], stamps_ns: np.ndarray,
                tolerance_ns: int) -> Iterator[Optional[np.ndarray]]:
    """Yield, for each stamp in ``stamps_ns``, the picture nearest to it within the tolerance.

    Stamps and pictures are both in time order, so one pass with the previous picture in hand
    suffices (memory: two pictures).

    :param images: (stamp_ns, uint8 [H, W, 3] RGB, _) in time order (:func:`iter_images`)
    :param stamps_ns: int64 [N] ascending stamps (e.g. the rows of an occupancy file)
    :param tolerance_ns: a picture farther than this from a stamp is not its picture
    :return: N items: the picture, or None where none lies within the tolerance
    """
    stamps = np.asarray(stamps_ns, np.int64)
    n = len(stamps)
    row = 0
    prev: Optional[Tuple[int, np.ndarray]] = None
    for stamp, rgb, _ in images:
        while row < n and stamps[row] <= stamp:
            want = int(stamps[row])
            pick = (int(stamp), rgb)
            if prev is not None and abs(want - prev[0]) < abs(pick[0] - want):
                pick = prev
            yield pick[1] if abs(pick[0] - want) <= tolerance_ns else None
            row += 1
        if row >= n:
            return
        prev = (int(stamp), rgb)
    for want in stamps[row:]:
        near = prev is not None and abs(int(want) - prev[0]) <= tolerance_ns
        yield prev[1] if near else None
