"""The stream front-end: stamp rules, pose selection, depth pairing (shared by node and replay)."""

import math
import threading
import time

import numpy as np
import pytest

from l3rocc_core.config import PipelineConfig
from l3rocc_core.stream import (DepthPairing, FrameDropped, pose_from_xyz_rpy, PoseSelector,
                                StampGate)
from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable

S = 1_000_000_000


def test_stamp_gate_drops_bad_stamps_and_restarts_on_a_confirmed_jump_back() -> None:
    gate = StampGate()
    for bad, kind in ((0, 'bad_stamp'), (-5, 'bad_stamp')):
        with pytest.raises(FrameDropped) as err:
            gate.check(bad)
        assert err.value.kind == kind
    with pytest.raises(FrameDropped) as err:
        gate.check(100 * S, now_ns=10 * S, max_future_s=5.0)
    assert err.value.kind == 'stamp_future'
    assert gate.check(10 * S) is False
    gate.accept(10 * S)
    for stamp, kind in ((10 * S, 'stamp_duplicate'), (10 * S - 1000, 'stamp_out_of_order')):
        with pytest.raises(FrameDropped) as err:
            gate.check(stamp)
        assert err.value.kind == kind
    # one stray frame 5 s back: dropped, the stream goes on ...
    with pytest.raises(FrameDropped) as err:
        gate.check(5 * S)
    assert err.value.kind == 'stamp_jump_back'
    assert gate.check(11 * S) is False
    gate.accept(11 * S)
    # ... two in a row confirm the new time line: restart
    with pytest.raises(FrameDropped):
        gate.check(2 * S)
    assert gate.check(2 * S + 1000) is True and gate.last_ns is None
    # with a clock that went back too, the first frame restarts at once
    gate.accept(50 * S)
    assert gate.check(3 * S, now_ns=4 * S) is True


def test_pose_from_xyz_rpy_is_a_camera_link_pose() -> None:
    T = pose_from_xyz_rpy([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    # level camera looking along world +x: optical z = world x, optical y (down) = world -z
    np.testing.assert_allclose(T[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0.0, 0.0, -1.0], atol=1e-12)
    # pitched down by 30 degrees: the optical axis points 30 degrees below the horizon
    T = pose_from_xyz_rpy([0.0, 0.0, 2.0, 0.0, math.radians(30), 0.0])
    np.testing.assert_allclose(T[:3, 2], [math.cos(math.radians(30)), 0.0,
                                          -math.sin(math.radians(30))], atol=1e-12)
    # yaw 90 degrees: looking along world +y
    T = pose_from_xyz_rpy([0.0, 0.0, 0.0, 0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(T[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)


def _selector(**values) -> PoseSelector:
    cfg = PipelineConfig().with_values(values)
    return PoseSelector(cfg.input, cfg.grid.world_frame)


def test_static_pose_from_camera_pose_needs_no_transform() -> None:
    sel = _selector(pose_source='static', camera_pose=[0.0, 0.0, 2.5, 0.0, 0.4, 0.0])

    def no_lookup(*_):
        raise AssertionError('camera_pose given: no lookup')
    T = sel.pose('cam', 5 * S, no_lookup)
    np.testing.assert_allclose(T, pose_from_xyz_rpy([0.0, 0.0, 2.5, 0.0, 0.4, 0.0]))


def test_static_pose_from_tf_at_the_first_image_is_kept() -> None:
    sel = _selector(pose_source='static')
    buf = TransformBuffer()
    with pytest.raises(TransformUnavailable, match='camera_pose'):
        sel.pose('cam', 1 * S, buf.lookup)
    T1 = pose_from_xyz_rpy([1.0, 0.0, 2.0, 0.0, 0.3, 0.0])
    buf.set_transform('odom', 'cam', 0, T1, static=True)
    np.testing.assert_allclose(sel.pose('cam', 2 * S, buf.lookup), T1)
    # a later transform does not move a fixed camera
    buf.set_transform('odom', 'cam', 0, np.eye(4), static=True)
    np.testing.assert_allclose(sel.pose('cam', 3 * S, buf.lookup), T1)
    assert sel.fixed_pose is not None


def test_odometry_child_stands_for_an_unknown_camera_frame() -> None:
    sel = _selector(pose_source='odometry')
    buf = TransformBuffer()
    T = pose_from_xyz_rpy([0.5, 0.0, 1.0, 0.0, 0.0, 0.0])
    buf.set_transform('odom', 'base', 1 * S, T)
    sel.add_odometry_child('/base')
    np.testing.assert_allclose(sel.pose('camera_optical', 1 * S, buf.lookup, buf.has_frame), T)
    assert _selector(pose_source='visual_odometry').pose('cam', S, buf.lookup) is None


def test_depth_pairing_by_stamp_waits_and_counts_the_unpaired() -> None:
    pairing = DepthPairing(capacity=3)
    pairing.add(1, 'd1')
    pairing.add(2, 'd2')
    assert pairing.take(2) == 'd2'
    assert pairing.unpaired == 1 and len(pairing) == 0   # d1 can no longer meet its image
    for k in range(3, 8):
        pairing.add(k, f'd{k}')
    assert pairing.unpaired == 3 and len(pairing) == 3    # capacity: 3 and 4 evicted
    assert pairing.take(42) is None and pairing.unpaired == 6
    # a depth image arriving while the worker waits for it
    later = threading.Timer(0.05, pairing.add, (100, 'd100'))
    later.start()
    assert pairing.take(100, time.monotonic() + 10.0) == 'd100'
    start = time.monotonic()
    assert pairing.take(101, time.monotonic() + 0.05) is None
    assert time.monotonic() - start < 5.0
