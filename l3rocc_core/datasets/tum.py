"""TUM RGB-D sequences (fr1/xyz as bundled): images, GT depth, GT poses and a rosbag2 of them.

Conventions of the TUM benchmark (https://cvg.cit.tum.de/data/datasets/rgbd-dataset):
``groundtruth.txt`` holds the colour camera's optical centre in the mocap world
(``timestamp tx ty tz qx qy qz qw``, camera to world, camera axes x right, y down, z forward);
depth PNGs are uint16, value / 5000 = metres, 0 = no reading, registered to the colour camera.
"""

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any, List, NamedTuple, Optional

import cv2
import numpy as np
from tqdm import tqdm

from l3rocc_core.bags import CameraBagWriter
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.sources import PoseTable, load_tum_trajectory, seconds_text_to_ns

# TUM fr1 colour calibration (plumb_bob k1 k2 p1 p2 k3), from the dataset's README.
TUM_FR1_CAMERA = PinholeCamera(640, 480, 517.3, 516.5, 318.6, 255.3, 'plumb_bob',
                               (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
# TUM's model of the registered depth images (no distortion).
TUM_DEPTH_CAMERA = PinholeCamera(640, 480, 525.0, 525.0, 319.5, 239.5)
DEPTH_SCALE = 5000.0
WORLD_FRAME = 'world'
OPTICAL_FRAME = 'openni_rgb_optical_frame'  # the frame name of TUM's original bags
TF_RATE_HZ = 100.0
ENV_DIR = 'L3ROCC_TUM_DIR'


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


def default_tum_dir() -> Path:
    """Return the bundled fr1/xyz folder.

    The first that exists of ``$L3ROCC_TUM_DIR``, ``<repo>/data/tum_fr1_xyz_37`` and
    ``<repo>/../shared/data/tum_fr1_xyz_37``.

    :raises FileNotFoundError: when none exists
    """
    found = find_tum_dir()
    if found is None:
        raise FileNotFoundError(f'no TUM fr1/xyz folder found; set {ENV_DIR} or pass --data '
                                f'(looked in {[str(c) for c in _tum_candidates() if c]})')
    return found


def _tum_candidates() -> List[Any]:
    repo = Path(__file__).resolve().parents[2]
    return [os.environ.get(ENV_DIR, ''), repo / 'data' / 'tum_fr1_xyz_37',
            repo.parent / 'shared' / 'data' / 'tum_fr1_xyz_37']


def find_tum_dir() -> Optional[Path]:
    """Return the bundled fr1/xyz folder (see :func:`default_tum_dir`), or None."""
    for c in _tum_candidates():
        if c and (Path(c) / 'rgb.txt').is_file():
            return Path(c)
    return None


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


def load_tum(path: Optional[str] = None, max_frames: Optional[int] = None,
             max_depth_dt_s: float = 0.02, with_images: bool = True) -> TumSequence:
    """Load colour images, GT depth and GT poses of a TUM RGB-D folder.

    Depth images are paired with each colour image by nearest stamp (``max_depth_dt_s``);
    poses are interpolated from ``groundtruth.txt`` (linear + slerp) at both stamps.
    Frames without depth within the tolerance or outside the trajectory are left out.

    :param path: dataset folder (default :func:`default_tum_dir`)
    :param max_frames: keep only the first N frames
    :param with_images: False skips decoding (rgb and depth_m are then empty arrays)
    :raises FileNotFoundError: when the folder or its lists are missing
    """
    root = Path(path) if path else default_tum_dir()
    rgb_rows = _read_list(root / 'rgb.txt')
    depth_rows = _read_list(root / 'depth.txt')
    depth_stamps = np.asarray([seconds_text_to_ns(r[0]) for r in depth_rows], np.int64)
    gt_stamps, gt_poses = load_tum_trajectory(str(root / 'groundtruth.txt'))
    table = PoseTable(gt_stamps, gt_poses)
    frames: List[TumFrame] = []
    empty = np.zeros((0, 0), np.float32)
    for stamp_text, rgb_file in ((r[0], r[1]) for r in rgb_rows):
        stamp = seconds_text_to_ns(stamp_text)
        j = _nearest(depth_stamps, stamp)
        if abs(int(depth_stamps[j]) - stamp) > max_depth_dt_s * 1e9:
            continue
        T_cam, T_depth = table.at(stamp), table.at(int(depth_stamps[j]))
        if T_cam is None or T_depth is None:
            continue
        rgb, depth = empty, empty
        if with_images:
            bgr = cv2.imread(str(root / rgb_file), cv2.IMREAD_COLOR)
            raw = cv2.imread(str(root / depth_rows[j][1]), cv2.IMREAD_UNCHANGED)
            if bgr is None or raw is None:
                raise FileNotFoundError(f'{root}: cannot read {rgb_file} or {depth_rows[j][1]}')
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            depth = raw.astype(np.float32) / DEPTH_SCALE
        frames.append(TumFrame(stamp, rgb, depth, T_cam, int(depth_stamps[j]), T_depth))
        if max_frames is not None and len(frames) >= max_frames:
            break
    return TumSequence(frames, TUM_FR1_CAMERA, TUM_DEPTH_CAMERA, gt_stamps, gt_poses, root)


def write_tum_bag(out: str, path: Optional[str] = None, storage: str = 'mcap',
                  world_frame: str = WORLD_FRAME, camera_frame: str = OPTICAL_FRAME,
                  max_frames: Optional[int] = None, progress: bool = True) -> Path:
    """Write a TUM folder as rosbag2: Image (rgb8), CameraInfo, /tf world -> camera.

    /tf carries every mocap sample (100 Hz) from one sample before the first image to one
    after the last, plus the interpolated GT pose at each image stamp, so a TF lookup at any
    image stamp interpolates and never extrapolates. Header stamps and log times are the
    dataset's stamps.

    :param out: output (``.mcap``/``.db3`` file, or a rosbag2 directory); must not exist
    :param path: dataset folder (default :func:`default_tum_dir`)
    :param storage: 'mcap' or 'sqlite3' (for a directory output)
    :param world_frame: parent frame of the poses
    :param camera_frame: header.frame_id of images and CameraInfo
    :param max_frames: only the first N frames
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
    with CameraBagWriter(out, storage=storage) as bag:
        k = 0
        for f in tqdm(seq.frames, desc='make-tum-bag', unit='frame', disable=not progress):
            while k < len(tf_samples) and tf_samples[k][0] <= f.stamp_ns:
                bag.write_tf([(world_frame, camera_frame, tf_samples[k][1])], tf_samples[k][0])
                k += 1
            bag.write_image(f.rgb, f.stamp_ns, camera_frame)
            bag.write_camera_info(seq.camera, f.stamp_ns, camera_frame)
        for stamp, T in tf_samples[k:]:
            bag.write_tf([(world_frame, camera_frame, T)], stamp)
    return Path(out)
