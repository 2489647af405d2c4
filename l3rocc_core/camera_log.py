"""Per-frame cameras of a replay: ``cameras.npz`` next to ``occupancy.npz``.

One row per processed frame (the rows of ``occupancy.npz``), for exports that need the camera
of each occupancy row (``l3rocc export --format lerobot``):

- ``stamps``: int64 [N], nanoseconds, the frames' stamps;
- ``T_world_cam``: float64 [N, 4, 4], pose of the optical frame in the grid's world frame
  (camera to world), NaN where the frame had none;
- ``intrinsics``: float64 [N, 4], fx, fy, cx, cy in pixels of the pipeline's undistorted camera;
- ``image_size``: int64 [N, 2], the width and height in pixels that ``intrinsics`` refer to.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

CAMERAS_FILE = 'cameras.npz'
KEYS = ('stamps', 'T_world_cam', 'intrinsics', 'image_size')


class CameraLog:
    """Collects the camera of every processed frame (see the module docstring)."""

    def __init__(self) -> None:
        """Start empty."""
        self._stamps: List[int] = []
        self._poses: List[np.ndarray] = []
        self._intrinsics: List[List[float]] = []
        self._sizes: List[List[int]] = []

    def __len__(self) -> int:
        """Frames logged."""
        return len(self._stamps)

    def add(self, frame: Any) -> None:
        """Log one frame.

        :param frame: a :class:`~l3rocc_core.frame.Frame` (``stamp_ns``, ``camera``,
            ``T_world_cam`` float64 [4, 4] or None)
        """
        cam = frame.camera
        T = frame.T_world_cam
        self._stamps.append(int(frame.stamp_ns))
        self._poses.append(np.full((4, 4), np.nan) if T is None else np.asarray(T, np.float64))
        self._intrinsics.append([float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy)])
        self._sizes.append([int(cam.width), int(cam.height)])

    def arrays(self) -> Dict[str, np.ndarray]:
        """Return the arrays of the file (keys of :data:`KEYS`)."""
        n = len(self._stamps)
        return {'stamps': np.asarray(self._stamps, np.int64).reshape(n),
                'T_world_cam': np.asarray(self._poses, np.float64).reshape(n, 4, 4),
                'intrinsics': np.asarray(self._intrinsics, np.float64).reshape(n, 4),
                'image_size': np.asarray(self._sizes, np.int64).reshape(n, 2)}

    def write(self, path: str) -> None:
        """Write ``cameras.npz`` under a temporary name, then rename it to ``path``."""
        tmp = path + '.partial'
        with open(tmp, 'wb') as f:
            np.savez(f, **self.arrays())
        os.replace(tmp, path)


def load_cameras(path: str) -> Dict[str, np.ndarray]:
    """Read a ``cameras.npz``.

    :return: the arrays of :data:`KEYS`
    :raises ValueError: a key is missing or the lengths differ
    """
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in KEYS if k not in z.files]
        if missing:
            raise ValueError(f'{path}: not a cameras file, keys {missing} are missing')
        out = {k: z[k] for k in KEYS}
    n = len(out['stamps'])
    if (out['T_world_cam'].shape != (n, 4, 4) or out['intrinsics'].shape != (n, 4)
            or out['image_size'].shape != (n, 2)):
        raise ValueError(f'{path}: arrays of different lengths or shapes '
                         f'{ {k: v.shape for k, v in out.items()} }')
    return out


def cameras_of(occupancy: str, rows: int, cameras: Optional[str] = None
               ) -> Tuple[Optional[str], Optional[Dict[str, np.ndarray]]]:
    """Find and read the ``cameras.npz`` of an ``occupancy.npz``.

    :param occupancy: the occupancy file
    :param rows: its number of rows
    :param cameras: the cameras file given by the user; default: ``cameras.npz`` beside
        ``occupancy`` when there is one
    :return: (the cameras file or None, its arrays (:func:`load_cameras`) or None)
    :raises ValueError: a cameras file of another replay (other row count) or a bad one
    """
    if cameras is None:
        near = os.path.join(os.path.dirname(os.path.abspath(occupancy)), CAMERAS_FILE)
        cameras = near if os.path.exists(near) else None
    if not cameras:
        return None, None
    cams = load_cameras(cameras)
    if len(cams['stamps']) != rows:
        raise ValueError(f'{cameras} has {len(cams["stamps"])} rows, {occupancy} '
                         f'{rows}: they are not of the same replay')
    return cameras, cams
