"""TransformBuffer against closed forms: chains, inverses, interpolation, errors, statics."""

from types import SimpleNamespace

import numpy as np
import pytest

from l3rocc_core.convert import ConversionError
from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable, slerp
from l3rocc_core.transforms import invert, make_transform, rotation_angle_deg

S = 1_000_000_000


def rot_z(deg: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Rotation about z by ``deg`` with translation ``t``."""
    a = np.radians(deg)
    return make_transform(t, (0.0, 0.0, np.sin(a / 2), np.cos(a / 2)))


def test_chain_of_three_frames_and_inverse():
    buf = TransformBuffer()
    T_w_b = rot_z(90.0, (1.0, 0.0, 0.0))
    T_b_c = make_transform((0.0, 2.0, 0.5), (0.0, 0.0, 0.0, 1.0))
    buf.set_transform('world', 'base', 5 * S, T_w_b)
    buf.set_transform('base', 'cam', 0, T_b_c, static=True)
    T_w_c = buf.lookup('world', 'cam', 5 * S)
    np.testing.assert_allclose(T_w_c, T_w_b @ T_b_c, atol=1e-12)
    # A point 1 m in front of the camera: base (0, 2, 1.5) -> world x = 1 - 2, y = 0.
    p_w = T_w_c @ np.array([0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(p_w[:3], [-1.0, 0.0, 1.5], atol=1e-12)
    np.testing.assert_allclose(buf.lookup('cam', 'world', 5 * S), invert(T_w_b @ T_b_c),
                               atol=1e-12)
    np.testing.assert_allclose(buf.lookup('cam', 'cam', 5 * S), np.eye(4))


def test_siblings_through_common_ancestor():
    buf = TransformBuffer()
    buf.set_transform('world', 'a', 0, make_transform((1, 0, 0), (0, 0, 0, 1)), static=True)
    buf.set_transform('world', 'b', 0, rot_z(180.0, (0, 1, 0)), static=True)
    T_a_b = buf.lookup('a', 'b', 123)
    # origin of b is (0, 1, 0) in world, (-1, 1, 0) in a.
    np.testing.assert_allclose(T_a_b[:3, 3], [-1.0, 1.0, 0.0], atol=1e-12)
    assert rotation_angle_deg(T_a_b[:3, :3]) == pytest.approx(180.0)


def test_interpolation_midway_translation_linear_rotation_slerp():
    buf = TransformBuffer()
    buf.set_transform('world', 'cam', 10 * S, rot_z(0.0, (0.0, 0.0, 0.0)))
    buf.set_transform('world', 'cam', 12 * S, rot_z(90.0, (2.0, -4.0, 1.0)))
    T = buf.lookup('world', 'cam', 11 * S)
    np.testing.assert_allclose(T[:3, 3], [1.0, -2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rot_z(45.0)[:3, :3], atol=1e-12)
    T = buf.lookup('world', 'cam', 10 * S + S // 2)
    np.testing.assert_allclose(T[:3, 3], [0.5, -1.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rot_z(22.5)[:3, :3], atol=1e-12)
    # Inverse direction interpolates the same edge.
    np.testing.assert_allclose(buf.lookup('cam', 'world', 11 * S),
                               invert(buf.lookup('world', 'cam', 11 * S)), atol=1e-12)
    # Exact sample stamps return the samples.
    np.testing.assert_allclose(buf.lookup('world', 'cam', 12 * S),
                               rot_z(90.0, (2.0, -4.0, 1.0)), atol=1e-12)


def test_latest_common_time_and_samples_out_of_order():
    buf = TransformBuffer()
    buf.set_transform('world', 'base', 3 * S, rot_z(30.0))
    buf.set_transform('world', 'base', 1 * S, rot_z(10.0))
    buf.set_transform('base', 'cam', 2 * S, rot_z(0.0))
    buf.set_transform('base', 'cam', 4 * S, rot_z(0.0, (1.0, 0, 0)))
    assert buf.latest_stamp('world', 'cam') == 3 * S
    T = buf.lookup('world', 'cam', None)
    np.testing.assert_allclose(T, rot_z(30.0) @ rot_z(0.0, (0.5, 0, 0)), atol=1e-12)
    np.testing.assert_allclose(buf.lookup('world', 'base', 2 * S), rot_z(20.0), atol=1e-12)


def test_extrapolation_is_an_error_with_direction():
    buf = TransformBuffer()
    buf.set_transform('world', 'cam', 10 * S, np.eye(4))
    buf.set_transform('world', 'cam', 11 * S, np.eye(4))
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup('world', 'cam', 11 * S + 1)
    assert err.value.kind == 'tf_extrapolation' and err.value.future
    assert isinstance(err.value, LookupError)
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup('world', 'cam', 10 * S - 1)
    assert err.value.kind == 'tf_extrapolation' and not err.value.future
    assert 'past' in str(err.value)
    assert not buf.can_transform('world', 'cam', 12 * S)
    tolerant = TransformBuffer(max_extrapolation_ns=10_000_000)
    tolerant.set_transform('world', 'cam', 10 * S, rot_z(5.0))
    np.testing.assert_allclose(tolerant.lookup('world', 'cam', 10 * S + 5_000_000), rot_z(5.0),
                               atol=1e-12)
    with pytest.raises(TransformUnavailable):
        tolerant.lookup('world', 'cam', 10 * S + 20_000_000)


def test_static_edge_valid_at_all_times():
    buf = TransformBuffer()
    T = rot_z(30.0, (0.1, 0.2, 0.3))
    buf.set_transform('base', 'cam', 999 * S, T, static=True)
    for stamp in (0, 1, 10**18, None):
        np.testing.assert_allclose(buf.lookup('base', 'cam', stamp), T, atol=1e-12)
    assert buf.latest_stamp('base', 'cam') is None


def test_missing_and_not_connected():
    buf = TransformBuffer()
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup('world', 'cam', 0)
    assert err.value.kind == 'tf_missing'
    buf.set_transform('world', 'base', S, np.eye(4))
    buf.set_transform('odom', 'cam', S, np.eye(4))
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup('world', 'nowhere', S)
    assert err.value.kind == 'tf_missing' and 'nowhere' in str(err.value)
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup('world', 'cam', S)
    assert err.value.kind == 'tf_not_connected'
    assert not buf.can_transform('base', 'cam', S)


def test_cache_is_bounded_and_clear_forgets():
    buf = TransformBuffer(cache_time_s=1.0)
    for i in range(500):
        buf.set_transform('world', 'cam', i * S // 100, np.eye(4))
    lo, hi = buf.time_range('cam')
    assert hi == 499 * S // 100 and hi - lo <= S
    assert not buf.set_transform('world', 'cam', 0, np.eye(4))
    assert buf.dropped_old == 1
    buf.clear()
    assert buf.frames() == []
    # After a bag loop, time may start over.
    buf.set_transform('world', 'cam', 0, np.eye(4))
    assert buf.can_transform('world', 'cam', 0)


def test_reparenting_replaces_the_edge():
    buf = TransformBuffer()
    buf.set_transform('a', 'cam', S, np.eye(4))
    buf.set_transform('b', 'cam', S, np.eye(4))
    assert buf.parent_of('cam') == 'b'
    with pytest.raises(TransformUnavailable):
        buf.lookup('a', 'cam', S)


def _tf_msg(parent, child, sec, nanosec, t, q):
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=nanosec)),
        child_frame_id=child,
        transform=SimpleNamespace(translation=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                                  rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


def test_add_tf_message_and_bad_quaternion():
    buf = TransformBuffer()
    msg = SimpleNamespace(transforms=[
        _tf_msg('/world', 'base', 1, 500, (1, 2, 3), (0, 0, 0, 1)),
        _tf_msg('base', 'cam', 0, 0, (0, 0, 1), (0, 0, 0, 1))])
    buf.add_tf_message(msg, static=False)
    np.testing.assert_allclose(buf.lookup('world', 'base', S + 500)[:3, 3], [1, 2, 3])
    bad = SimpleNamespace(transforms=[_tf_msg('world', 'x', 1, 0, (0, 0, 0), (0, 0, 0, 0))])
    with pytest.raises(ConversionError) as err:
        buf.add_tf_message(bad)
    assert err.value.kind == 'bad_pose'


def test_slerp_shorter_arc_and_unit_norm():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = -np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])  # 90 deg, flipped sign
    q = slerp(q0, q1, 0.5)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    assert abs(q[2]) == pytest.approx(np.sin(np.pi / 8))


def test_concurrent_writes_and_lookups():
    """A TF callback thread and a worker thread share the buffer without errors."""
    import threading
    buf = TransformBuffer(cache_time_s=0.5)
    buf.set_transform('world', 'cam', 0, np.eye(4))
    errors = []

    def writer():
        for i in range(1, 3000):
            buf.set_transform('world', 'cam', i * 1_000_000, rot_z(i * 0.01, (i * 1e-3, 0, 0)))

    def reader():
        for _ in range(3000):
            try:
                stamp = buf.latest_stamp('world', 'cam')
                T = buf.lookup('world', 'cam', stamp)
                assert np.allclose(T[:3, 3], [stamp / 1e9, 0, 0])
            except (TransformUnavailable, AssertionError) as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
