"""Sliding window of recent frames, keyframes, and the choice of depth sources.

The window keeps the last ``window_size`` frames (one per time slice of the 4D occupancy) and a
bounded set of keyframes: a frame becomes a keyframe once the camera moved at least
``keyframe_min_translation_m`` or turned ``keyframe_min_rotation_deg`` since the last keyframe.
A handheld camera at 30 Hz moves about 1 cm per frame, so the sources with a useful baseline are
usually several frames back: :meth:`SlidingWindow.select_sources` scores every stored frame by
its baseline relative to the scene depth and picks a spread of them.
"""

from collections import deque
import math
from typing import Deque, List, Optional

import numpy as np

from l3rocc_core.config import WindowConfig
from l3rocc_core.frame import Frame
from l3rocc_core.transforms import rotation_angle_deg

#: Baseline / scene depth ratio that plane sweep matches best with (about 4 degrees of parallax).
TARGET_BASELINE_RATIO = 0.12
#: Below this ratio a source barely constrains depth; it is used only when nothing better exists.
MIN_BASELINE_RATIO = 0.01
#: Sources turned more than this from the reference share little of its view.
MAX_SOURCE_ROTATION_DEG = 30.0
#: Scene depth assumed before any depth estimate exists (metres).
DEFAULT_SCENE_DEPTH_M = 1.5


class SlidingWindow:
    """The last ``window_size`` frames plus at most ``max_keyframes`` keyframes.

    Memory is bounded by ``window_size + max_keyframes`` frames. Frames must carry a pose.

    :param config: window parameters
    """

    def __init__(self, config: WindowConfig):
        """Start empty."""
        self.config = config
        self._frames: Deque[Frame] = deque(maxlen=config.window_size)
        self._keyframes: Deque[Frame] = deque(maxlen=config.max_keyframes)

    @property
    def frames(self) -> List[Frame]:
        """The frames of the window, oldest first (at most ``window_size``)."""
        return list(self._frames)

    @property
    def keyframes(self) -> List[Frame]:
        """The keyframes, oldest first (at most ``max_keyframes``)."""
        return list(self._keyframes)

    def __len__(self) -> int:
        """Frames in the window."""
        return len(self._frames)

    @property
    def newest(self) -> Optional[Frame]:
        """The last frame pushed, or None."""
        return self._frames[-1] if self._frames else None

    def reset(self) -> None:
        """Forget every frame and keyframe."""
        self._frames.clear()
        self._keyframes.clear()

    def is_keyframe(self, frame: Frame) -> bool:
        """Whether ``frame`` moved or turned enough from the last keyframe to become one.

        :param frame: a frame with ``T_world_cam``
        """
        if not self._keyframes:
            return True
        last = self._keyframes[-1].T_world_cam
        T = _pose(frame)
        moved = float(np.linalg.norm(T[:3, 3] - last[:3, 3]))
        turned = rotation_angle_deg(last[:3, :3].T @ T[:3, :3])
        return (moved >= self.config.keyframe_min_translation_m
                or turned >= self.config.keyframe_min_rotation_deg)

    def push(self, frame: Frame) -> bool:
        """Append ``frame`` (dropping the oldest beyond ``window_size``); maybe make it a keyframe.

        :param frame: a frame with ``T_world_cam``
        :return: whether it became a keyframe
        :raises ValueError: when the frame has no pose
        """
        key = self.is_keyframe(frame)
        self._frames.append(frame)
        if key:
            self._keyframes.append(frame)
        return key

    def select_sources(self, frame: Frame, scene_depth_m: Optional[float] = None
                       ) -> List[Frame]:
        """Choose up to ``num_source_frames`` stored frames to match ``frame`` against.

        Candidates are the window's frames and the keyframes (``frame`` itself excluded). Each
        is scored by how close its baseline-to-depth ratio is to :data:`TARGET_BASELINE_RATIO`
        (log scale) and penalised for rotation; after the first pick, candidates whose baseline
        points in a new direction gain, so that the sources surround the reference (fewer
        occlusion holes) instead of lining up on one side. When fewer than the requested number
        have at least :data:`MIN_BASELINE_RATIO`, the most recent frames fill the rest (a slow or
        still camera still gets its immediate neighbours).

        :param frame: the reference frame (with pose)
        :param scene_depth_m: typical depth of the scene (e.g. the median of the last depth map);
            default :data:`DEFAULT_SCENE_DEPTH_M`
        :return: frames, best first
        """
        want = self.config.num_source_frames
        T_ref = _pose(frame)
        depth = scene_depth_m if scene_depth_m and scene_depth_m > 0 else DEFAULT_SCENE_DEPTH_M
        seen = set()
        cands: List[Frame] = []
        for f in list(self._keyframes) + list(self._frames):
            if f is frame or id(f) in seen or f.stamp_ns == frame.stamp_ns:
                continue
            seen.add(id(f))
            cands.append(f)
        if not cands:
            return []
        centres = np.stack([_pose(f)[:3, 3] for f in cands])
        base = centres - T_ref[:3, 3]
        dist = np.linalg.norm(base, axis=1)
        ratio = dist / depth
        turned = np.array([rotation_angle_deg(T_ref[:3, :3].T @ _pose(f)[:3, :3])
                           for f in cands])
        score = -np.abs(np.log(np.maximum(ratio, 1e-4) / TARGET_BASELINE_RATIO))
        score -= 2.0 * np.maximum(turned - MAX_SOURCE_ROTATION_DEG, 0.0) / 10.0
        useful = ratio >= MIN_BASELINE_RATIO
        dirs = base / np.maximum(dist, 1e-9)[:, None]
        chosen: List[int] = []
        free = list(np.flatnonzero(useful))
        while free and len(chosen) < want:
            total = score[free].copy()
            if chosen:
                # Angle to the nearest chosen baseline direction, 0..pi -> bonus 0..1.
                cos = np.clip(dirs[free] @ dirs[chosen].T, -1.0, 1.0)
                total += np.arccos(cos).min(axis=1) / math.pi
            best = free[int(np.argmax(total))]
            chosen.append(best)
            free.remove(best)
        if len(chosen) < want:
            # Too little baseline: the most recent frames (largest baseline first among them).
            recent = sorted((i for i in range(len(cands)) if i not in chosen),
                            key=lambda i: cands[i].stamp_ns, reverse=True)
            recent = recent[:want - len(chosen)]
            chosen.extend(sorted(recent, key=lambda i: -dist[i]))
        return [cands[i] for i in chosen]


def _pose(frame: Frame) -> np.ndarray:
    if frame.T_world_cam is None:
        raise ValueError(f'frame at {frame.stamp_ns} ns has no pose (T_world_cam is None)')
    return frame.T_world_cam
