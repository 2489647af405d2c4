"""CameraBagWriter round trips (mcap, sqlite3) through sources and through real rclpy types."""

import importlib
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from l3rocc_core.bags import CameraBagWriter, default_typestore
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.convert import (camera_from_info, compressed_to_rgb, depth_image_to_metres,
                                 image_to_rgb, pose_to_matrix, stamp_to_ns)
from l3rocc_core.sources import BagSource, open_source
from l3rocc_core.tf_tree import TransformBuffer
from l3rocc_core.transforms import make_transform

CAM = PinholeCamera(64, 48, 50.0, 51.0, 31.5, 23.5, 'plumb_bob',
                    (0.1, -0.05, 0.001, 0.002, 0.01))
T0 = 1_700_000_000_123_456_789
DT = 33_333_333
N = 6


def _rgb(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _pose(i: int) -> np.ndarray:
    a = 0.1 * i
    return make_transform((0.1 * i, -0.2 * i, 1.0), (0.0, np.sin(a / 2), 0.0, np.cos(a / 2)))


def _write(path: Path, storage: str = 'mcap') -> Path:
    T_base_cam = make_transform((0.0, 0.0, 0.2), (-0.5, 0.5, -0.5, 0.5))
    with CameraBagWriter(str(path), storage=storage) as w:
        w.write_tf([('base_link', 'cam_opt', T_base_cam)], T0, static=True)
        for i in range(N):
            s = T0 + i * DT
            w.write_tf([('odom', 'base_link', _pose(i))], s)
            w.write_image(_rgb(i), s, 'cam_opt', encoding='bgr8')
            w.write_compressed(_rgb(i), s, 'cam_opt', fmt='png')
            w.write_camera_info(CAM, s, 'cam_opt')
            w.write_odometry(_pose(i), s, 'odom', 'base_link')
    return path


@pytest.mark.parametrize('name,storage', [('bag.mcap', 'mcap'), ('bag.db3', 'sqlite3'),
                                          ('bagdir', 'mcap'), ('bagdir3', 'sqlite3')])
def test_round_trip_through_sources(tmp_path: Path, name: str, storage: str):
    path = _write(tmp_path / name, storage)
    assert path.exists() and not any(p.name.endswith('.partial') for p in tmp_path.iterdir())
    if path.is_dir():
        assert (path / 'metadata.yaml').is_file()
        assert len([p for p in path.iterdir() if p.suffix in ('.mcap', '.db3')]) == 1
    src = open_source(str(path))
    assert isinstance(src, BagSource)
    assert src.image_topic == '/camera/image_raw' and src.num_images == N
    assert src.camera_info_topic == '/camera/camera_info' and src.odom_topic == '/odom'
    images, infos, odoms = [], [], []
    buf = TransformBuffer()
    log_times = []
    for ev in src:
        log_times.append(ev.log_time_ns)
        if ev.role == 'image':
            images.append((stamp_to_ns(ev.msg.header.stamp), image_to_rgb(ev.msg)))
            assert ev.msg.encoding == 'bgr8' and ev.msg.header.frame_id == 'cam_opt'
        elif ev.role == 'camera_info':
            infos.append(camera_from_info(ev.msg))
        elif ev.role in ('tf', 'tf_static'):
            buf.add_tf_message(ev.msg, static=ev.role == 'tf_static')
        elif ev.role == 'odometry':
            odoms.append((ev.msg.child_frame_id, pose_to_matrix(ev.msg.pose.pose)))
    src.close()
    assert log_times == sorted(log_times)
    assert [s for s, _ in images] == [T0 + i * DT for i in range(N)]
    for i, (_, rgb) in enumerate(images):
        np.testing.assert_array_equal(rgb, _rgb(i))
    assert infos[0] == CAM
    for i, (child, T) in enumerate(odoms):
        assert child == 'base_link'
        np.testing.assert_allclose(T, _pose(i), atol=1e-12)
    T_base_cam = make_transform((0.0, 0.0, 0.2), (-0.5, 0.5, -0.5, 0.5))
    np.testing.assert_allclose(buf.lookup('odom', 'cam_opt', T0 + 2 * DT),
                               _pose(2) @ T_base_cam, atol=1e-9)
    # The compressed topic is chosen when asked for, and decodes losslessly (png).
    src = open_source(str(path), image_transport='compressed')
    assert src.image_topic == '/camera/image_raw/compressed'
    got = [compressed_to_rgb(ev.msg) for ev in src if ev.role == 'compressed']
    src.close()
    np.testing.assert_array_equal(got[3], _rgb(3))


def _ros_type(msgtype: str):
    pkg, _, name = msgtype.split('/')
    return getattr(importlib.import_module(pkg + '.msg'), name)


@pytest.mark.parametrize('name', ['bag.mcap', 'bag.db3'])
def test_cdr_deserialises_as_real_ros_messages(tmp_path: Path, name: str):
    serialization = pytest.importorskip('rclpy.serialization')
    pytest.importorskip('tf2_msgs.msg')
    pytest.importorskip('nav_msgs.msg')
    path = _write(tmp_path / name, 'mcap')
    seen = {}
    with Reader(str(path)) as reader:
        for con, log_time, raw in reader.messages():
            msg = serialization.deserialize_message(bytes(raw), _ros_type(con.msgtype))
            seen.setdefault(con.topic, []).append((log_time, msg))
    img = seen['/camera/image_raw'][1][1]
    assert type(img).__module__.startswith('sensor_msgs.msg')
    assert (img.width, img.height, img.encoding, img.step) == (64, 48, 'bgr8', 64 * 3)
    assert stamp_to_ns(img.header.stamp) == T0 + DT and img.header.frame_id == 'cam_opt'
    np.testing.assert_array_equal(image_to_rgb(img), _rgb(1))
    info = seen['/camera/camera_info'][0][1]
    assert camera_from_info(info) == CAM
    assert list(info.p)[:3] == [50.0, 0.0, 31.5] and list(info.r)[0] == 1.0
    tf_static = seen['/tf_static'][0][1]
    assert tf_static.transforms[0].child_frame_id == 'cam_opt'
    tf = seen['/tf'][4][1].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ('odom', 'base_link')
    from l3rocc_core.convert import transform_to_matrix
    np.testing.assert_allclose(transform_to_matrix(tf.transform), _pose(4), atol=1e-12)
    odom = seen['/odom'][5][1]
    np.testing.assert_allclose(pose_to_matrix(odom.pose.pose), _pose(5), atol=1e-12)
    comp = seen['/camera/image_raw/compressed'][2][1]
    np.testing.assert_array_equal(compressed_to_rgb(comp), _rgb(2))


def test_failed_writer_leaves_nothing_and_refuses_existing(tmp_path: Path):
    out = tmp_path / 'broken.mcap'
    with pytest.raises(RuntimeError):
        with CameraBagWriter(str(out)) as w:
            w.write_image(_rgb(0), T0, 'cam')
            raise RuntimeError('crash while recording')
    assert list(tmp_path.iterdir()) == []
    _write(out)
    with pytest.raises(FileExistsError):
        CameraBagWriter(str(out))


def test_writer_rejects_bad_images(tmp_path: Path):
    with CameraBagWriter(str(tmp_path / 'x.mcap')) as w:
        with pytest.raises(ValueError):
            w.write_image(np.zeros((4, 4, 3), np.float32), T0, 'cam')
        with pytest.raises(ValueError):
            w.write_image(np.zeros((4, 4, 3), np.uint8), T0, 'cam', encoding='yuv422')
        w.write_image(np.zeros((4, 4), np.uint8), T0, 'cam', encoding='mono8')
    src = open_source(str(tmp_path / 'x.mcap'), intrinsics='2,2,2,2')
    (ev,) = list(src)
    assert ev.msg.encoding == 'mono8' and image_to_rgb(ev.msg).shape == (4, 4, 3)


def test_depth_images_and_zstd_chunks(tmp_path: Path):
    """Depth as 16UC1 mm and 32FC1 m; a compressed mcap is smaller and reads back the same."""
    rng = np.random.default_rng(0)
    mm = np.repeat(rng.integers(400, 4000, (48, 1), dtype=np.uint16), 64, axis=1)
    metres = mm.astype(np.float32) / 1000
    sizes = {}
    for compress in (False, True):
        path = tmp_path / f'depth_{compress}.mcap'
        with CameraBagWriter(str(path), compress=compress) as w:
            for i in range(N):
                w.write_depth(mm, T0 + i * DT, 'cam_opt')
                w.write_depth(metres, T0 + i * DT, 'cam_opt', topic='/depth_m')
        sizes[compress] = path.stat().st_size
        typestore = default_typestore()
        with Reader(str(path)) as reader:
            msgs = [(con.topic, typestore.deserialize_cdr(raw, con.msgtype))
                    for con, _, raw in reader.messages()]
        assert len(msgs) == 2 * N
        for topic, msg in msgs:
            want = ('32FC1', 64 * 4) if topic == '/depth_m' else ('16UC1', 64 * 2)
            assert topic in ('/depth_m', '/camera/depth_registered/image_raw')
            assert (msg.encoding, msg.step, msg.is_bigendian) == want + (0,)
            np.testing.assert_allclose(depth_image_to_metres(msg), metres, rtol=1e-6)
    assert sizes[True] < 0.5 * sizes[False]
    with pytest.raises(ValueError):
        CameraBagWriter(str(tmp_path / 'x.db3'), compress=True)
    with CameraBagWriter(str(tmp_path / 'y.mcap')) as w:
        with pytest.raises(ValueError):
            w.write_depth(np.zeros((4, 4), np.int32), T0, 'cam')
