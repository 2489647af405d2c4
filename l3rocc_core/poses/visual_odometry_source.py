"""``pose_source: visual_odometry`` for a stream of frames (the node and ``l3rocc replay``).

Chooses where the world starts, runs :class:`~l3rocc_core.poses.visual_odometry.VisualOdometry`
on every frame at the working resolution (undistorted, as the depth stage sees it), restarts it
when the camera model changes, and keeps the estimated trajectory.

The first pose, in order: TF at the first image (the caller looks it up and passes it as the
frame's pose), else the ``camera_pose`` parameter, else the camera ``camera_height_m`` above the
ground facing +x: its pitch and roll are then measured on the ground that the first map sees
(the map is levelled, see :mod:`~l3rocc_core.poses.visual_odometry`), and frames before that have
no pose. :meth:`VisualOdometrySource.start_summary` says which start was taken and how it was
levelled (the node's /diagnostics ``vo_start*`` values, ``timing.json`` of ``l3rocc replay``).
"""

from collections import Counter
from dataclasses import replace
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from l3rocc_core.config import PipelineConfig
from l3rocc_core.frame import Frame
from l3rocc_core.poses.visual_odometry import Levelling, VisualOdometry, VOResult
from l3rocc_core.tf_tree import TransformUnavailable
from l3rocc_core.transforms import matrix_to_quat

#: ``lookup(parent, child, stamp_ns or None)`` -> T_parent_child (see l3rocc_core.stream).
Lookup = Callable[[str, str, Optional[int]], np.ndarray]


class VisualOdometrySource:
    """Poses of a frame stream from the images alone.

    :param config: the pipeline configuration (``vo_*``, ``camera_pose``, ``camera_height_m``)
    """

    def __init__(self, config: PipelineConfig):
        """Start without an estimator: the first frame creates it."""
        self.config = config
        self.vo: Optional[VisualOdometry] = None
        #: (stamp_ns, T_world_cam [4, 4]) of every frame with an estimated pose
        self.trajectory: List[Tuple[int, np.ndarray]] = []
        #: frames per state (``initializing``, ``tracking``, ``lost``)
        self.states: Counter = Counter()
        self.last: Optional[VOResult] = None
        #: where the first pose came from: ``tf``, ``camera_pose`` or ``camera_height_m``
        self.start_source: Optional[str] = None
        #: how a ``camera_height_m`` start was levelled on the ground (None: not, or not yet)
        self.levelling: Optional[Levelling] = None
        self._last_pose: Optional[np.ndarray] = None

    @property
    def started(self) -> bool:
        """Whether the first pose has been chosen."""
        return self.vo is not None

    @staticmethod
    def tf_start_pose(lookup: Lookup, world_frame: str, frame_id: str,
                      stamp_ns: int) -> Optional[np.ndarray]:
        """TF at the first image (at its stamp, else the latest), or None when there is none.

        :param lookup: the caller's transform lookup
        :return: float64 [4, 4] T_world_cam, or None
        """
        for stamp in (stamp_ns, None):
            try:
                return np.asarray(lookup(world_frame, frame_id, stamp), np.float64)
            except TransformUnavailable:
                continue
        return None

    def estimate(self, frame: Frame) -> VOResult:
        """Estimate the pose of ``frame``.

        Before the first frame the estimator does not exist; ``frame.T_world_cam`` of the first
        frame, when set, is where the world starts (TF at the first image). Later frames' poses
        are ignored. A frame of another camera model restarts the estimator at the last
        estimated pose.

        :param frame: a frame at the working resolution (``Frame.image``, ``Frame.camera``,
            optional ``Frame.depth`` for the metric scale)
        :return: the estimate; ``T_world_cam`` None while initializing or lost
        """
        if self.vo is None:
            start, self.start_source = frame.T_world_cam, 'tf'
            if start is None and len(self.config.input.camera_pose) == 6:
                from l3rocc_core.stream import pose_from_xyz_rpy
                start = pose_from_xyz_rpy(self.config.input.camera_pose)
                self.start_source = 'camera_pose'
            elif start is None:
                self.start_source = 'camera_height_m'
            self.vo = VisualOdometry(self.config, frame.camera, start)
        elif frame.camera != self.vo.camera:
            start = self._last_pose if self._last_pose is not None else (
                None if self.vo.level_guess else self.vo.T_world_anchor)   # still to level
            self.vo = VisualOdometry(self.config, frame.camera, start)
        result = self.vo.track(frame.image, frame.stamp_ns, frame.depth)
        if self.vo.start_levelling is not None:
            self.levelling = self.vo.start_levelling
        self.states[result.state] += 1
        self.last = result
        if result.T_world_cam is not None:
            self._last_pose = result.T_world_cam
            self.trajectory.append((int(frame.stamp_ns), result.T_world_cam))
        return result

    def start_summary(self) -> Dict[str, Any]:
        """How the world started, as /diagnostics values (empty before the first frame).

        :return: ``vo_start`` (``tf``, ``camera_pose`` or ``camera_height_m``); for
            ``camera_height_m`` also ``vo_start_levelled`` (``yes``; ``waiting``: no map yet;
            ``no``: no ground was found, the start stayed level) and, once levelled,
            ``vo_start_pitch_deg`` (> 0 looks down) and ``vo_start_roll_deg`` of the first
            pose as measured on the ground
        """
        if self.start_source is None:
            return {}
        out: Dict[str, Any] = {'vo_start': self.start_source}
        if self.start_source == 'camera_height_m':
            if self.levelling is not None:
                out.update(vo_start_levelled='yes',
                           vo_start_pitch_deg=round(self.levelling.pitch_deg, 2),
                           vo_start_roll_deg=round(self.levelling.roll_deg, 2))
            else:
                waiting = self.vo is not None and self.vo.level_guess
                out['vo_start_levelled'] = 'waiting' if waiting else 'no'
        return out

    def posed(self, frame: Frame, result: VOResult) -> Optional[Frame]:
        """Return ``frame`` with the estimated pose, or None when there is none."""
        if result.T_world_cam is None:
            return None
        return replace(frame, T_world_cam=result.T_world_cam)


def write_tum_trajectory(path: str, rows: List[Tuple[int, np.ndarray]]) -> None:
    """Write poses as a TUM trajectory (atomically).

    One line per pose: ``stamp tx ty tz qx qy qz qw``, stamp in seconds, the pose of the
    camera's optical frame in the world (camera to world).

    :param rows: (stamp_ns, T_world_cam float64 [4, 4])
    """
    lines = ['# timestamp tx ty tz qx qy qz qw (optical frame in the world)']
    for stamp_ns, T in rows:
        q = matrix_to_quat(T[:3, :3])
        s, ns = divmod(int(stamp_ns), 1_000_000_000)
        lines.append(f'{s}.{ns:09d} ' + ' '.join(f'{v:.6f}' for v in T[:3, 3]) + ' '
                     + ' '.join(f'{v:.7f}' for v in q))
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, path)
