"""Sliding window: keyframe rule, bounded memory, source selection with baseline."""

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import WindowConfig
from l3rocc_core.frame import Frame
from l3rocc_core.transforms import make_transform
from l3rocc_core.window import TARGET_BASELINE_RATIO, SlidingWindow

CAM = PinholeCamera(32, 24, 30.0, 30.0, 15.5, 11.5)
IMAGE = np.zeros((24, 32, 3), np.uint8)


def frame(stamp: int, x: float = 0.0, y: float = 0.0, yaw_deg: float = 0.0) -> Frame:
    """Return a frame at (x, y, 0) turned by ``yaw_deg`` about the optical axis."""
    half = np.radians(yaw_deg) / 2
    T = make_transform([x, y, 0.0], [0.0, 0.0, np.sin(half), np.cos(half)])
    return Frame(IMAGE, stamp, CAM, T)


def test_keyframe_rule_translation_and_rotation() -> None:
    w = SlidingWindow(WindowConfig(keyframe_min_translation_m=0.05,
                                   keyframe_min_rotation_deg=5.0))
    assert w.push(frame(0))                      # the first frame is a keyframe
    assert not w.push(frame(1, x=0.049))         # 4.9 cm from the last keyframe
    assert w.push(frame(2, x=0.051))
    assert not w.push(frame(3, x=0.06, yaw_deg=4.9))
    assert w.push(frame(4, x=0.06, yaw_deg=5.1))
    assert [f.stamp_ns for f in w.keyframes] == [0, 2, 4]
    assert [f.stamp_ns for f in w.frames] == [0, 1, 2, 3, 4]


def test_memory_is_bounded() -> None:
    w = SlidingWindow(WindowConfig(window_size=4, max_keyframes=3,
                                   keyframe_min_translation_m=0.02))
    for n in range(50):
        w.push(frame(n, x=0.03 * n))
    assert len(w) == 4 and [f.stamp_ns for f in w.frames] == [46, 47, 48, 49]
    assert [f.stamp_ns for f in w.keyframes] == [47, 48, 49]
    assert w.newest.stamp_ns == 49
    w.reset()
    assert len(w) == 0 and not w.keyframes and w.newest is None


def test_sources_have_baseline_relative_to_scene_depth() -> None:
    # A handheld camera at 30 Hz: 1 cm per frame along x.
    cfg = WindowConfig(window_size=16, num_source_frames=2, keyframe_min_translation_m=0.02,
                       max_keyframes=8)
    w = SlidingWindow(cfg)
    for n in range(30):
        w.push(frame(n, x=0.01 * n))
    ref = frame(30, x=0.30)
    src = w.select_sources(ref, scene_depth_m=1.5)
    assert len(src) == 2 and all(f is not ref for f in src)
    best = abs(0.30 - src[0].T_world_cam[0, 3])
    # Target baseline = 0.07 x 1.5 m = 10.5 cm: the best source is ~10 frames back, not the
    # previous frame (1 cm).
    assert abs(best - TARGET_BASELINE_RATIO * 1.5) <= 0.015
    # A deeper scene asks for more baseline.
    far = w.select_sources(ref, scene_depth_m=3.0)
    assert abs(0.30 - far[0].T_world_cam[0, 3]) > best


def test_sources_spread_in_direction() -> None:
    cfg = WindowConfig(window_size=16, num_source_frames=2, keyframe_min_translation_m=0.01,
                       max_keyframes=16)
    w = SlidingWindow(cfg)
    # The camera went right, then up: candidates on the -x side and on the -y side.
    for n in range(10):
        w.push(frame(n, x=-0.1 + 0.01 * n, y=0.0))
    for n in range(10):
        w.push(frame(10 + n, x=0.0, y=-0.1 + 0.01 * n))
    ref = frame(20, x=0.0, y=0.0)
    src = w.select_sources(ref, scene_depth_m=1.5)
    d = [f.T_world_cam[:3, 3] - ref.T_world_cam[:3, 3] for f in src]
    cos = float(np.dot(d[0], d[1]) / np.linalg.norm(d[0]) / np.linalg.norm(d[1]))
    assert cos < 0.5, 'the second source comes from another direction'


def test_still_camera_falls_back_to_recent_frames() -> None:
    w = SlidingWindow(WindowConfig(num_source_frames=3))
    for n in range(10):
        w.push(frame(n))
    src = w.select_sources(frame(10), scene_depth_m=2.0)
    assert sorted(f.stamp_ns for f in src) == [7, 8, 9]
    assert w.select_sources(w.newest) and w.newest not in w.select_sources(w.newest)
    assert SlidingWindow(WindowConfig()).select_sources(frame(0)) == []


def test_turned_sources_are_avoided() -> None:
    w = SlidingWindow(WindowConfig(num_source_frames=1, keyframe_min_translation_m=0.01))
    w.push(frame(0, x=-0.1, yaw_deg=90.0))       # right baseline, but turned 90 degrees
    w.push(frame(1, x=-0.04))                    # less baseline, same view
    src = w.select_sources(frame(2), scene_depth_m=1.5)
    assert src[0].stamp_ns == 1
