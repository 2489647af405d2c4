"""TUM RGB-D sequences (fr1/xyz as bundled): images, GT depth, GT poses and a rosbag2 of them.

Conventions of the TUM benchmark (https://cvg.cit.tum.de/data/datasets/rgbd-dataset):
``groundtruth.txt`` holds the colour camera's optical centre in the mocap world
(``timestamp tx ty tz qx qy qz qw``, camera to world, camera axes x right, y down, z forward);
depth PNGs are uint16, value / 5000 = metres, 0 = no reading, registered to the colour camera.

:func:`load_tum` reads two layouts alike:

- a TUM folder as published: ``rgb/`` and ``depth/`` PNGs, ``rgb.txt``, ``depth.txt``,
  ``groundtruth.txt``;
- the recording bundled in the repository, ``data/tum_fr1_xyz_37`` (made by
  :func:`write_tum_bundle`): a rosbag2 directory (mcap, zstd chunks) with JPEG colour, the
  registered depth in millimetres, CameraInfo and /tf (:data:`BUNDLE_TOPICS`), plus
  ``associations.txt`` (each colour stamp with its depth image's own stamp) and TUM's
  ``groundtruth.txt``.
"""

from dataclasses import dataclass
import os
from pathlib import Path
import shutil
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from l3rocc_core.bags import CameraBagWriter, default_typestore
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.convert import compressed_to_rgb, depth_image_to_metres, stamp_to_ns
from l3rocc_core.paths import data_path
from l3rocc_core.sources import PoseTable, load_tum_trajectory, seconds_text_to_ns

# TUM fr1 colour calibration (plumb_bob k1 k2 p1 p2 k3), from the dataset's README.
TUM_FR1_CAMERA = PinholeCamera(640, 480, 517.3, 516.5, 318.6, 255.3, 'plumb_bob',
                               (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
# TUM's model of the registered depth images (no distortion).
TUM_DEPTH_CAMERA = PinholeCamera(640, 480, 525.0, 525.0, 319.5, 239.5)
#: How ground truth reads the registered depth pixels (:func:`tum_depth_maps`).
TUM_DEPTH_MODELS = ('tum', 'colour')
DEPTH_SCALE = 5000.0
WORLD_FRAME = 'world'
OPTICAL_FRAME = 'openni_rgb_optical_frame'  # the frame name of TUM's original bags
TF_RATE_HZ = 100.0
ENV_DIR = 'L3ROCC_TUM_DIR'
BUNDLED_NAME = 'tum_fr1_xyz_37'
ASSOCIATIONS = 'associations.txt'
GROUNDTRUTH = 'groundtruth.txt'
#: Topics of the bundled recording, by :class:`CameraBagWriter` role.
BUNDLE_TOPICS = {
    'compressed': '/camera/rgb/image_color/compressed',
    'camera_info': '/camera/rgb/camera_info',
    'depth': '/camera/depth_registered/image_raw',
    'tf': '/tf',
}
BUNDLE_JPEG_QUALITY = 90


class TumFrame(NamedTuple):
    """One frame: ``stamp_ns, rgb, depth_m, T_world_cam`` (unpacks as the first four).

    :param stamp_ns: colour image stamp (ns)
    :param rgb: uint8 [480, 640, 3] RGB, as recorded (lens distortion not removed)
    :param depth_m: float32 [480, 640] metres, 0 = no reading (registered to the colour image)
    :param T_world_cam: float64 [4, 4] GT camera-to-world at ``stamp_ns`` (interpolated)
    :param depth_stamp_ns: the depth image's own stamp (up to 20 ms away)
    :param T_world_depth: float64 [4, 4] GT camera-to-world at ``depth_stamp_ns``
    """

    stamp_ns: int
    rgb: np.ndarray
    depth_m: np.ndarray
    T_world_cam: np.ndarray
    depth_stamp_ns: int
    T_world_depth: np.ndarray


@dataclass
class TumSequence:
    """A loaded TUM sequence.

    :param frames: colour frames in time order with GT depth and poses
    :param camera: colour camera (TUM fr1 calibration, with distortion)
    :param depth_camera: TUM's model of the registered depth images
    :param gt_stamps_ns: int64 [M] every mocap sample
    :param gt_T_world_cam: float64 [M, 4, 4] mocap poses (camera to world)
    :param path: the dataset folder
    """

    frames: List[TumFrame]
    camera: PinholeCamera
    depth_camera: PinholeCamera
    gt_stamps_ns: np.ndarray
    gt_T_world_cam: np.ndarray
    path: Path

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.frames)


def bundled_tum_dir() -> Optional[Path]:
    """Return ``data/tum_fr1_xyz_37`` of the source tree or the installed package, or None."""
    found = data_path(BUNDLED_NAME)
    return Path(found) if found else None


def tum_layout(path: Path) -> Optional[str]:
    """Return ``'png'`` (a TUM folder), ``'bundle'`` (:func:`write_tum_bundle`) or None."""
    if (path / 'rgb.txt').is_file():
        return 'png'
    if (path / ASSOCIATIONS).is_file() and (path / 'metadata.yaml').is_file():
        return 'bundle'
    return None


def find_tum_dir() -> Optional[Path]:
    """Return ``$L3ROCC_TUM_DIR`` when set, else the bundled fr1/xyz recording; None if absent."""
    env = os.environ.get(ENV_DIR)
    found = Path(env) if env else bundled_tum_dir()
    return found if found is not None and tum_layout(found) else None


def default_tum_dir() -> Path:
    """Return :func:`find_tum_dir`.

    :raises FileNotFoundError: when ``$L3ROCC_TUM_DIR`` is not a TUM folder, or it is unset
        and the bundled recording is missing
    """
    found = find_tum_dir()
    if found is None:
        env = os.environ.get(ENV_DIR)
        where = f'${ENV_DIR}={env}' if env else f'data/{BUNDLED_NAME} (the bundled recording)'
        raise FileNotFoundError(f'no TUM fr1/xyz data at {where}; pass --data or set {ENV_DIR} '
                                'to a TUM folder (rgb.txt, depth.txt, groundtruth.txt)')
    return found


def _read_list(path: Path) -> List[List[str]]:
    rows = []
    with open(path, 'r', encoding='utf-8') as f:
        for line in f:
            parts = line.split()
            if parts and not parts[0].startswith('#'):
                rows.append(parts)
    return rows


def _nearest(stamps: np.ndarray, stamp: int) -> int:
    i = int(np.searchsorted(stamps, stamp))
    cands = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    return min(cands, key=lambda j: abs(int(stamps[j]) - stamp))


def _ns_text(stamp_ns: int) -> str:
    """Seconds text of a stamp, exact (:func:`seconds_text_to_ns` reads it back)."""
    return f'{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}'


# A colour image, its depth image: (stamp_ns, depth_stamp_ns, rgb file, depth file); the files
# are None in the bundle, whose pixels come from the bag.
_Pair = Tuple[int, int, Optional[str], Optional[str]]


def _png_pairs(root: Path) -> List[_Pair]:
    """Each colour image of ``rgb.txt`` with the nearest-stamp image of ``depth.txt``."""
    depth_rows = _read_list(root / 'depth.txt')
    depth_stamps = np.asarray([seconds_text_to_ns(r[0]) for r in depth_rows], np.int64)
    pairs = []
    for stamp_text, rgb_file in ((r[0], r[1]) for r in _read_list(root / 'rgb.txt')):
        stamp = seconds_text_to_ns(stamp_text)
        j = _nearest(depth_stamps, stamp)
        pairs.append((stamp, int(depth_stamps[j]), rgb_file, depth_rows[j][1]))
    return pairs


def _bundle_pairs(root: Path) -> List[_Pair]:
    """``associations.txt``: colour stamp, then its depth image's stamp, per line."""
    return [(seconds_text_to_ns(r[0]), seconds_text_to_ns(r[1]), None, None)
            for r in _read_list(root / ASSOCIATIONS)]


def _read_png_pair(root: Path, rgb_file: str, depth_file: str) -> Tuple[np.ndarray, np.ndarray]:
    bgr = cv2.imread(str(root / rgb_file), cv2.IMREAD_COLOR)
    raw = cv2.imread(str(root / depth_file), cv2.IMREAD_UNCHANGED)
    if bgr is None or raw is None:
        raise FileNotFoundError(f'{root}: cannot read {rgb_file} or {depth_file}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), raw.astype(np.float32) / DEPTH_SCALE


def _read_bundle_pixels(root: Path, stamps: Set[int]
                        ) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """Colour (uint8 RGB) and depth (float32 m) of the bundle's bag at these colour stamps.

    :raises ValueError: when the bag lacks the colour or the depth of one of the stamps
    """
    from rosbags.rosbag2 import Reader
    typestore = default_typestore()
    topics = {BUNDLE_TOPICS['compressed']: 'rgb', BUNDLE_TOPICS['depth']: 'depth'}
    found: Dict[str, Dict[int, np.ndarray]] = {'rgb': {}, 'depth': {}}
    with Reader(root) as reader:
        cons = [c for c in reader.connections if c.topic in topics]
        for con, _, raw in reader.messages(connections=cons):
            msg = typestore.deserialize_cdr(raw, con.msgtype)
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp in stamps:
                kind = topics[con.topic]
                found[kind][stamp] = (compressed_to_rgb(msg) if kind == 'rgb'
                                      else depth_image_to_metres(msg))
    missing = sorted(stamps - (found['rgb'].keys() & found['depth'].keys()))
    if missing:
        raise ValueError(f'{root}: the bag has no colour or depth image at {len(missing)} '
                         f'stamps of {ASSOCIATIONS} (first {_ns_text(missing[0])})')
    return {s: (found['rgb'][s], found['depth'][s]) for s in stamps}


def load_tum(path: Optional[str] = None, max_frames: Optional[int] = None,
             max_depth_dt_s: float = 0.02, with_images: bool = True) -> TumSequence:
    """Load colour images, GT depth and GT poses of a TUM folder or the bundled recording.

    Depth images are paired with each colour image by nearest stamp (``max_depth_dt_s``; the
    bundle lists the pairs in ``associations.txt``); poses are interpolated from
    ``groundtruth.txt`` (linear + slerp) at both stamps. Frames without depth within the
    tolerance or outside the trajectory are left out.

    :param path: dataset folder (default :func:`default_tum_dir`)
    :param max_frames: keep only the first N frames
    :param with_images: False skips decoding (rgb and depth_m are then empty arrays)
    :raises FileNotFoundError: when the folder or its lists are missing
    """
    root = Path(path) if path else default_tum_dir()
    layout = tum_layout(root)
    if layout is None:
        raise FileNotFoundError(f'{root}: neither a TUM folder (rgb.txt) nor a recording made '
                                f'by write_tum_bundle ({ASSOCIATIONS} + rosbag2 metadata.yaml)')
    pairs = _png_pairs(root) if layout == 'png' else _bundle_pairs(root)
    gt_stamps, gt_poses = load_tum_trajectory(str(root / GROUNDTRUTH))
    table = PoseTable(gt_stamps, gt_poses)
    kept = []
    for stamp, depth_stamp, rgb_file, depth_file in pairs:
        if abs(depth_stamp - stamp) > max_depth_dt_s * 1e9:
            continue
        T_cam, T_depth = table.at(stamp), table.at(depth_stamp)
        if T_cam is None or T_depth is None:
            continue
        kept.append((stamp, depth_stamp, rgb_file, depth_file, T_cam, T_depth))
        if max_frames is not None and len(kept) >= max_frames:
            break
    pixels = {}
    if with_images and layout == 'bundle':
        pixels = _read_bundle_pixels(root, {k[0] for k in kept})
    empty = np.zeros((0, 0), np.float32)
    frames: List[TumFrame] = []
    for stamp, depth_stamp, rgb_file, depth_file, T_cam, T_depth in kept:
        rgb, depth = empty, empty
        if with_images:
            rgb, depth = (pixels[stamp] if layout == 'bundle'
                          else _read_png_pair(root, rgb_file, depth_file))
        frames.append(TumFrame(stamp, rgb, depth, T_cam, depth_stamp, T_depth))
    return TumSequence(frames, TUM_FR1_CAMERA, TUM_DEPTH_CAMERA, gt_stamps, gt_poses, root)


def tum_depth_maps(seq: TumSequence, model: str = 'tum'
                   ) -> Tuple[List[np.ndarray], PinholeCamera]:
    """Return the registered depth maps of ``seq`` and the undistorted pinhole camera of them.

    The two readings place a depth pixel on different rays (16 px apart at the image centre,
    TUM's cy 239.5 against the colour calibration's 255.3; see docs/depth.md):

    - ``'tum'``: TUM's recommended model of the registered depth, :data:`TUM_DEPTH_CAMERA`
      (fx = fy = 525, centre 319.5, 239.5, no distortion); the maps are used as they are;
    - ``'colour'``: the depth pixels are the colour image's pixels (registered 1:1, as a
      consumer of the depth topic with the colour CameraInfo reads them): the maps are
      undistorted with the colour calibration (:attr:`TumSequence.camera`) by nearest
      neighbour, at full resolution.

    :param seq: a sequence loaded with images
    :param model: one of :data:`TUM_DEPTH_MODELS`
    :return: (float32 [H, W] metres per frame, 0 = no reading; their camera)
    :raises ValueError: an unknown ``model``
    """
    if model == 'tum':
        return [f.depth_m for f in seq.frames], seq.depth_camera
    if model == 'colour':
        from l3rocc_core.camera import Undistorter
        und = Undistorter(seq.camera, seq.camera.width)
        return [und.depth(f.depth_m) for f in seq.frames], und.camera
    raise ValueError(f'TUM depth model must be one of {TUM_DEPTH_MODELS}, got {model!r}')


def _depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """uint16 [H, W] millimetres (16UC1) of float32 metres; 0 stays 0 (no reading)."""
    return np.round(depth_m * 1000.0).astype(np.uint16)


def write_tum_bag(out: str, path: Optional[str] = None, storage: str = 'mcap',
                  world_frame: str = WORLD_FRAME, camera_frame: str = OPTICAL_FRAME,
                  max_frames: Optional[int] = None, progress: bool = True,
                  jpeg_quality: Optional[int] = None, depth: bool = False,
                  compress: bool = False, topics: Optional[Dict[str, str]] = None) -> Path:
    """Write a TUM folder as rosbag2: the colour images, CameraInfo, /tf world -> camera.

    /tf carries every mocap sample (100 Hz) from one sample before the first image to one
    after the last, plus the interpolated GT pose at each image stamp, so a TF lookup at any
    image stamp interpolates and never extrapolates. Header stamps and log times are the
    dataset's colour stamps.

    :param out: output (``.mcap``/``.db3`` file, or a rosbag2 directory); must not exist
    :param path: dataset folder (default :func:`default_tum_dir`)
    :param storage: 'mcap' or 'sqlite3' (for a directory output)
    :param world_frame: parent frame of the poses
    :param camera_frame: header.frame_id of images and CameraInfo
    :param max_frames: only the first N frames
    :param jpeg_quality: None: colour as rgb8 Image; 1..100: as JPEG CompressedImage
    :param depth: also write the registered depth (Image 16UC1, millimetres, 0 = no reading)
        stamped with its colour image's stamp (the pairing of :func:`load_tum`)
    :param compress: zstd-compress the mcap chunks
    :param topics: topic names by :class:`CameraBagWriter` role (default its own)
    :return: the written path
    """
    seq = load_tum(path, max_frames=max_frames)
    if not seq.frames:
        raise ValueError(f'{seq.path}: no frames with depth and pose')
    first, last = seq.frames[0].stamp_ns, seq.frames[-1].stamp_ns
    gs = seq.gt_stamps_ns
    lo = max(0, int(np.searchsorted(gs, first, side='right')) - 1)
    hi = min(len(gs), int(np.searchsorted(gs, last, side='left')) + 1)
    tf_samples = [(int(gs[i]), seq.gt_T_world_cam[i]) for i in range(lo, hi)]
    tf_samples += [(f.stamp_ns, f.T_world_cam) for f in seq.frames]
    tf_samples.sort(key=lambda s: s[0])
    with CameraBagWriter(out, storage=storage, topics=topics, compress=compress) as bag:
        k = 0
        for f in tqdm(seq.frames, desc='make-tum-bag', unit='frame', disable=not progress):
            while k < len(tf_samples) and tf_samples[k][0] <= f.stamp_ns:
                bag.write_tf([(world_frame, camera_frame, tf_samples[k][1])], tf_samples[k][0])
                k += 1
            if depth:
                # Before its colour image, so a player delivers the pair depth first.
                bag.write_depth(_depth_mm(f.depth_m), f.stamp_ns, camera_frame)
            if jpeg_quality is None:
                bag.write_image(f.rgb, f.stamp_ns, camera_frame)
            else:
                bag.write_compressed(f.rgb, f.stamp_ns, camera_frame, quality=jpeg_quality)
            bag.write_camera_info(seq.camera, f.stamp_ns, camera_frame)
        for stamp, T in tf_samples[k:]:
            bag.write_tf([(world_frame, camera_frame, T)], stamp)
    return Path(out)


def write_tum_bundle(out: str, path: Optional[str] = None, max_frames: Optional[int] = None,
                     progress: bool = True) -> Path:
    """Write a TUM folder as the bundled recording (the layout ``data/tum_fr1_xyz_37`` has).

    A rosbag2 directory (mcap, zstd chunks) on :data:`BUNDLE_TOPICS`: JPEG colour (quality
    :data:`BUNDLE_JPEG_QUALITY`), 16UC1 depth in mm stamped like its colour image, CameraInfo
    and /tf (:func:`write_tum_bag`); beside the storage file ``associations.txt`` (colour stamp,
    depth stamp per line) and a copy of ``groundtruth.txt``. :func:`load_tum` reads it back.

    :param out: the directory to create; must not exist
    :param path: a TUM folder with PNGs (default :func:`default_tum_dir`); the JPEG colour of
        an existing bundle would be compressed twice
    :param max_frames: only the first N frames
    :return: ``out``
    """
    if Path(out).suffix in ('.mcap', '.db3'):
        raise ValueError(f'{out}: the bundled layout is a directory, not one storage file')
    source = Path(path) if path else default_tum_dir()
    seq = load_tum(str(source), max_frames=max_frames, with_images=False)
    write_tum_bag(out, str(source), max_frames=max_frames, progress=progress,
                  jpeg_quality=BUNDLE_JPEG_QUALITY, depth=True, compress=True,
                  topics=BUNDLE_TOPICS)
    try:
        lines = ['# colour image stamp, the stamp of its registered depth image (nearest, '
                 'within 20 ms); seconds\n']
        lines += [f'{_ns_text(f.stamp_ns)} {_ns_text(f.depth_stamp_ns)}\n' for f in seq.frames]
        Path(out, ASSOCIATIONS).write_text(''.join(lines), encoding='utf-8')
        shutil.copyfile(source / GROUNDTRUTH, Path(out, GROUNDTRUTH))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Path(out)
