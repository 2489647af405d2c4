"""Rerun recordings (``.rrd``) of occupancy sequences: ``l3rocc replay/export/batch --rerun``.

The recording is written to a file (no viewer is started, no network); open it with
``rerun FILE.rrd``. Every row is logged on two timelines: ``stamp`` (the frame's stamp, a
timestamp in seconds) and ``frame`` (the row index). Entities (:data:`ENTITIES`):

- ``world``: the grid's world frame, z up;
- ``world/occupancy``: the occupied voxels of the row's (newest) slice as solid ``Boxes3D`` of
  the voxel size, coloured by probability (``turbo`` over [0, 1]);
- ``world/camera``: the camera's pose (``Transform3D``, optical frame in the world frame), and
  ``world/camera/image`` its ``Pinhole`` (x right, y down, z forward: the frustum);
- ``world/camera/image/rgb`` and ``world/camera/image/depth``: the picture and the depth map
  (metres, resampled to the picture's pixels) when known;
- ``world/trajectory``: every camera position as one ``LineStrips3D`` (static, at the end).

The file also holds a default layout (:func:`make_blueprint`): the 3D scene on the left, the
picture and the depth map stacked on the right, the side panels collapsed.

rerun-sdk is imported here only, when a recorder is made; without it, :class:`RerunRecorder`
raises :class:`~l3rocc_core.viewers.ViewerUnavailable` with the install line.
"""

import os
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from l3rocc_core.viewers import ViewerUnavailable

INSTALL = 'pip install -r requirements/viewers.txt'
APPLICATION_ID = 'l3rocc'
TIMELINE_STAMP = 'stamp'
TIMELINE_FRAME = 'frame'
WORLD = 'world'
OCCUPANCY = 'world/occupancy'
CAMERA = 'world/camera'
PINHOLE = 'world/camera/image'
RGB = 'world/camera/image/rgb'
DEPTH = 'world/camera/image/depth'
TRAJECTORY = 'world/trajectory'
ENTITIES = (OCCUPANCY, CAMERA, PINHOLE, RGB, DEPTH, TRAJECTORY)
#: metres from the camera centre to the image plane of the drawn frustum
FRUSTUM_M = 0.2


def import_rerun() -> Any:
    """Return the ``rerun`` module.

    :raises ViewerUnavailable: rerun-sdk is not installed
    """
    try:
        import rerun
    except ImportError as exc:
        raise ViewerUnavailable(f'Rerun output needs rerun-sdk ({exc}): {INSTALL}') from exc
    return rerun


def make_blueprint(play_state: Optional[str] = None,
                   eye: Optional[Tuple[Sequence[float], Sequence[float]]] = None) -> Any:
    """Return the viewer layout of the recordings (a ``rerun.blueprint.Blueprint``).

    Left, two thirds of the width: ``world`` in 3D (voxels, camera frustum with the picture,
    trajectory; the depth map is left out there, it would be drawn as a point cloud over the
    voxels). Right: the picture above the depth map. The blueprint and selection panels are
    collapsed, the time panel shows the ``frame`` timeline.

    :param play_state: 'paused', 'playing' or 'following' (the newest frame), or None for the
        viewer's default
    :param eye: (position, look-at point) of the 3D view's orbiting eye, metres in the world
        frame, or None for the viewer's (looking at the middle of the scene)
    :raises ViewerUnavailable: rerun-sdk is not installed
    """
    rrb = import_rerun().blueprint
    eye_controls = None if eye is None else rrb.EyeControls3D(
        position=[float(v) for v in eye[0]], look_target=[float(v) for v in eye[1]])
    scene = rrb.Spatial3DView(origin=WORLD, contents=['$origin/**', f'- /{DEPTH}'],
                              name='occupancy (turbo: probability 0 blue ... 1 red)',
                              eye_controls=eye_controls)
    picture = rrb.Spatial2DView(origin=PINHOLE, contents=f'/{RGB}', name='picture')
    depth = rrb.Spatial2DView(origin=PINHOLE, contents=f'/{DEPTH}', name='depth (m)')
    time_panel = {'state': 'collapsed', 'timeline': TIMELINE_FRAME}
    if play_state is not None:
        time_panel['play_state'] = play_state
    return rrb.Blueprint(rrb.Horizontal(scene, rrb.Vertical(picture, depth), column_shares=[2, 1]),
                         rrb.BlueprintPanel(state='collapsed'),
                         rrb.SelectionPanel(state='collapsed'), rrb.TimePanel(**time_panel))


def probability_colours(prob: np.ndarray) -> np.ndarray:
    """uint8 [n, 3] RGB of probabilities [n] in [0, 1] ('turbo': blue 0, red 1)."""
    from l3rocc_core.preview import colormap_lut
    idx = np.clip(np.asarray(prob, np.float64) * 255.0 + 0.5, 0, 255).astype(np.int64)
    return colormap_lut('turbo')[idx]


class RerunRecorder:
    """Logs occupancy rows, cameras, pictures and depth into an ``.rrd`` file.

    The file is written under a temporary name and renamed by :meth:`close`; :meth:`abort`
    leaves nothing.

    :param path: the ``.rrd`` file
    :param name: recording name shown in the viewer (e.g. the source)
    :raises ViewerUnavailable: rerun-sdk is not installed
    """

    def __init__(self, path: str, name: str = ''):
        """Start the recording (a file sink only)."""
        self.rr = import_rerun()
        self.path = str(path)
        self._tmp = os.path.join(os.path.dirname(os.path.abspath(self.path)),
                                 '.partial.' + os.path.basename(self.path))
        self.rec = self.rr.RecordingStream(APPLICATION_ID)
        self.rec.save(self._tmp, default_blueprint=make_blueprint())
        if name:
            self.rec.send_recording_name(name)
        self.rec.log(WORLD, self.rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self._positions: List[np.ndarray] = []
        self.rows = 0

    def log(self, index: int, stamp_ns: int, centres: np.ndarray, prob: np.ndarray,
            voxel_size: float, T_world_cam: Optional[np.ndarray] = None,
            intrinsics: Optional[Sequence[float]] = None,
            image_size: Optional[Sequence[int]] = None, rgb: Optional[np.ndarray] = None,
            depth: Optional[np.ndarray] = None) -> None:
        """Log one row at ``frame`` = ``index`` and ``stamp`` = ``stamp_ns``.

        :param centres: float [n, 3] occupied voxel centres, metres in the world frame
        :param prob: float [n] their probabilities
        :param voxel_size: metres (the boxes' edge)
        :param T_world_cam: float64 [4, 4] optical frame in the world frame, or None/NaN
        :param intrinsics: fx, fy, cx, cy in pixels of ``image_size``, or None
        :param image_size: (width, height) of the pinhole; default the picture's size
        :param rgb: uint8 [H, W, 3] picture, or None
        :param depth: float [h, w] metres (0 = none), resampled to the pinhole's size; not
            logged when it holds no estimate at all
        """
        rr, rec = self.rr, self.rec
        rec.set_time(TIMELINE_FRAME, sequence=int(index))
        rec.set_time(TIMELINE_STAMP, timestamp=np.datetime64(int(stamp_ns), 'ns'))
        half = 0.5 * float(voxel_size)
        rec.log(OCCUPANCY, rr.Boxes3D(
            centers=np.asarray(centres, np.float32).reshape(-1, 3), half_sizes=[half] * 3,
            colors=probability_colours(prob), fill_mode='solid'))
        if T_world_cam is not None and np.all(np.isfinite(T_world_cam)):
            T = np.asarray(T_world_cam, np.float64)
            rec.log(CAMERA, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]))
            self._positions.append(T[:3, 3].copy())
        if image_size is None and rgb is not None:
            image_size = (rgb.shape[1], rgb.shape[0])
        if intrinsics is not None and image_size is not None and np.all(np.isfinite(intrinsics)):
            fx, fy, cx, cy = (float(v) for v in intrinsics)
            rec.log(PINHOLE, rr.Pinhole(focal_length=[fx, fy], principal_point=[cx, cy],
                                        resolution=[int(image_size[0]), int(image_size[1])],
                                        camera_xyz=rr.ViewCoordinates.RDF,
                                        image_plane_distance=FRUSTUM_M))
        if rgb is not None:
            if image_size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(image_size):
                rgb = cv2.resize(rgb, tuple(int(v) for v in image_size),
                                 interpolation=cv2.INTER_AREA)
            rec.log(RGB, rr.Image(np.ascontiguousarray(rgb, np.uint8)))
        if depth is not None and np.any(depth):
            depth = np.asarray(depth, np.float32)
            if image_size is not None and (depth.shape[1], depth.shape[0]) != tuple(image_size):
                depth = cv2.resize(depth, tuple(int(v) for v in image_size),
                                   interpolation=cv2.INTER_NEAREST)
            rec.log(DEPTH, rr.DepthImage(depth, meter=1.0))
        self.rows += 1

    def close(self) -> None:
        """Log the trajectory, finish the file and move it to ``path``."""
        if self._positions:
            self.rec.log(TRAJECTORY, self.rr.LineStrips3D([np.stack(self._positions)]),
                         static=True)
        self.rec.flush()
        self.rec.disconnect()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Stop and delete the partial file."""
        self.rec.disconnect()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)
