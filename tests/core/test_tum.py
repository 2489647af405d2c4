"""TUM fr1/xyz: the bundled recording, the loader of both layouts, and the bag makers."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from l3rocc_core.bags import default_typestore
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.cli import main
from l3rocc_core.convert import (camera_from_info, compressed_to_rgb, depth_image_to_metres,
                                 image_to_rgb, stamp_to_ns)
from l3rocc_core.datasets.tum import (ASSOCIATIONS, BUNDLE_TOPICS, DEPTH_SCALE, find_tum_dir,
                                      GROUNDTRUTH, load_tum, OPTICAL_FRAME, TUM_DEPTH_CAMERA,
                                      TUM_FR1_CAMERA, tum_depth_maps, TumFrame, TumSequence,
                                      write_tum_bundle)
from l3rocc_core.sources import open_source, seconds_text_to_ns
from l3rocc_core.tf_tree import TransformBuffer
from l3rocc_core.transforms import invert, rotation_angle_deg

# From TUM's own association of the 37-frame excerpt (rgb, depth, nearest mocap sample).
FIRST_STAMP = 1305031102_175304000
FIRST_DEPTH_STAMP = 1305031102_160407000
FIRST_MOCAP_XYZ = (1.3405, 0.6266, 1.6575)
TYPES = {'compressed': 'sensor_msgs/msg/CompressedImage', 'depth': 'sensor_msgs/msg/Image',
         'camera_info': 'sensor_msgs/msg/CameraInfo', 'tf': 'tf2_msgs/msg/TFMessage'}


def _associations(root: Path):
    rows = [line.split() for line in (root / ASSOCIATIONS).read_text().splitlines()
            if line and not line.startswith('#')]
    return {seconds_text_to_ns(r[0]): seconds_text_to_ns(r[1]) for r in rows}


def _bag_messages(root: Path):
    """{topic: [(log_time_ns, message)]} of a rosbag2 directory, and its total CDR bytes."""
    typestore = default_typestore()
    out, raw_bytes = {}, 0
    with Reader(root) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for con, log_time, raw in reader.messages():
            raw_bytes += len(raw)
            out.setdefault(con.topic, []).append(
                (log_time, typestore.deserialize_cdr(raw, con.msgtype)))
    return types, out, raw_bytes


def test_bundled_recording_topics_and_size(tum_dir: Path, repo_root: Path):
    """What data/README.md promises: topics, types, encodings, stamps, zstd chunks, size."""
    types, msgs, raw_bytes = _bag_messages(tum_dir)
    assert types == {BUNDLE_TOPICS[role]: TYPES[role] for role in TYPES}
    assoc = _associations(tum_dir)
    stamps = sorted(assoc)
    assert len(stamps) == 37 and stamps[0] == FIRST_STAMP
    for role in ('compressed', 'depth', 'camera_info'):
        got = msgs[BUNDLE_TOPICS[role]]
        assert [stamp_to_ns(m.header.stamp) for _, m in got] == stamps, role
        assert all(t == stamp_to_ns(m.header.stamp) for t, m in got), role
        assert {m.header.frame_id for _, m in got} == {OPTICAL_FRAME}, role
    for _, m in msgs[BUNDLE_TOPICS['depth']]:
        assert (m.encoding, m.width, m.height, m.step, m.is_bigendian) == (
            '16UC1', 640, 480, 1280, 0)
    for _, m in msgs[BUNDLE_TOPICS['compressed']]:
        assert m.format == 'rgb8; jpeg compressed bgr8' and bytes(m.data[:2]) == b'\xff\xd8'
    assert all(camera_from_info(m) == TUM_FR1_CAMERA
               for _, m in msgs[BUNDLE_TOPICS['camera_info']])
    assert len(msgs['/tf']) == 159
    # zstd chunks: the raw depth alone (37 x 600 kB) is four times the whole file.
    bag_bytes = sum(p.stat().st_size for p in tum_dir.glob('*.mcap'))
    assert bag_bytes < 0.3 * raw_bytes
    data_bytes = sum(p.stat().st_size for p in (repo_root / 'data').rglob('*') if p.is_file())
    assert data_bytes < 12e6


def test_load_bundled_frames_depth_and_poses(tum_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv('L3ROCC_TUM_DIR', raising=False)
    assert find_tum_dir() == tum_dir
    seq = load_tum()
    assert len(seq) == 37 and seq.camera == TUM_FR1_CAMERA
    assoc = _associations(tum_dir)
    assert [f.stamp_ns for f in seq.frames] == sorted(assoc)
    for f in seq.frames:
        assert f.depth_stamp_ns == assoc[f.stamp_ns]
        assert abs(f.depth_stamp_ns - f.stamp_ns) < 20_000_000
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert f.depth_m.shape == (480, 640) and f.depth_m.dtype == np.float32
        valid = f.depth_m[f.depth_m > 0]
        assert valid.size > 0.5 * f.depth_m.size and 0.4 < np.median(valid) < 3.0
        # millimetres: every depth is a whole number of mm
        np.testing.assert_allclose(valid * 1000, np.round(valid * 1000), atol=1e-3)
    stamp, rgb, depth, T = seq.frames[0][:4]  # unpacks as (stamp_ns, rgb, depth_m, T_world_cam)
    assert stamp == FIRST_STAMP and seq.frames[0].depth_stamp_ns == FIRST_DEPTH_STAMP
    # nearest mocap sample (0.5 ms away, camera < 0.5 m/s) vs interpolation at the stamp
    np.testing.assert_allclose(T[:3, 3], FIRST_MOCAP_XYZ, atol=5e-3)
    travel = np.linalg.norm(seq.frames[-1].T_world_cam[:3, 3] - seq.frames[0].T_world_cam[:3, 3])
    assert 0.1 < travel < 0.5
    meta = load_tum(str(tum_dir), with_images=False)
    assert meta.frames[0].rgb.size == 0 and len(meta) == 37
    assert [f.stamp_ns for f in load_tum(str(tum_dir), max_frames=3).frames] == sorted(assoc)[:3]


def test_depth_reprojects_consistently_between_frames(tum_dir: Path):
    """GT depth of frame 0, moved into frame 10 with GT poses, matches frame 10's depth."""
    seq = load_tum(str(tum_dir), max_frames=11)
    a, b = seq.frames[0], seq.frames[10]
    cam = seq.depth_camera
    v, u = np.mgrid[0:480:8, 0:640:8]
    z = a.depth_m[v, u]
    ok = z > 0
    p_a = np.stack([(u[ok] - cam.cx) / cam.fx * z[ok], (v[ok] - cam.cy) / cam.fy * z[ok], z[ok],
                    np.ones(ok.sum())])
    p_b = invert(b.T_world_depth) @ a.T_world_depth @ p_a
    ub = np.round(cam.fx * p_b[0] / p_b[2] + cam.cx).astype(int)
    vb = np.round(cam.fy * p_b[1] / p_b[2] + cam.cy).astype(int)
    inside = (ub >= 0) & (ub < 640) & (vb >= 0) & (vb < 480)
    zb = b.depth_m[vb[inside], ub[inside]]
    good = zb > 0
    err = np.abs(zb[good] - p_b[2][inside][good])
    assert good.sum() > 1000 and np.median(err) < 0.02


def test_depth_maps_read_with_either_model(tum_dir: Path):
    """'tum' keeps the maps with TUM's depth model; 'colour' undistorts them as colour pixels."""
    depth = np.arange(48, dtype=np.float32).reshape(6, 8)
    pinhole = PinholeCamera(8, 6, 10.0, 10.0, 3.5, 2.5)
    frame = TumFrame(0, np.zeros((6, 8, 3), np.uint8), depth, np.eye(4), 0, np.eye(4))
    seq = TumSequence([frame], pinhole, TUM_DEPTH_CAMERA, np.zeros(1, np.int64),
                      np.eye(4)[None], tum_dir)
    maps, camera = tum_depth_maps(seq, 'tum')
    assert camera == TUM_DEPTH_CAMERA and maps[0] is depth
    maps, camera = tum_depth_maps(seq, 'colour')   # no distortion: the pixels stay put
    assert camera == pinhole and np.array_equal(maps[0], depth)
    with pytest.raises(ValueError, match='colour'):
        tum_depth_maps(seq, 'color')
    real = load_tum(str(tum_dir), max_frames=1)
    (undistorted,), camera = tum_depth_maps(real, 'colour')
    assert camera.D == () and (camera.fx, camera.cy) == (TUM_FR1_CAMERA.fx, TUM_FR1_CAMERA.cy)
    # The lens barely moves the principal point's neighbourhood; the corners move.
    cv, cu = int(camera.cy), int(camera.cx)
    assert undistorted[cv, cu] == real.frames[0].depth_m[cv, cu]
    assert not np.array_equal(undistorted, real.frames[0].depth_m)


def test_registered_depth_edges_meet_the_colour_edges_pixel_for_pixel(tum_dir: Path):
    """The depth images are registered to the colour pixels, not to TUM's depth model.

    Depth discontinuities lie nearer to colour edges at the same pixel (within a few pixels)
    than where TUM's depth model puts them in the colour image (16 px lower at the centre:
    its cy is 239.5, the colour calibration's 255.3): the basis of ``tum_depth_maps``'s
    'colour' reading.
    """
    seq = load_tum(str(tum_dir))
    cam = TUM_FR1_CAMERA
    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    rays = np.stack([(u - TUM_DEPTH_CAMERA.cx) / TUM_DEPTH_CAMERA.fx,
                     (v - TUM_DEPTH_CAMERA.cy) / TUM_DEPTH_CAMERA.fy, np.ones_like(u)], -1)
    uv, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.K,
                              np.asarray(cam.D))
    uv = np.round(uv.reshape(480, 640, 2)).astype(int)
    same, tum = [], []
    for f in seq.frames[::6]:
        grey = cv2.GaussianBlur(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY), (5, 5), 1.2)
        far = cv2.distanceTransform((cv2.Canny(grey, 40, 100) == 0).astype(np.uint8),
                                    cv2.DIST_L2, 5)
        d = f.depth_m
        jump = (d[1:] > 0) & (d[:-1] > 0) & (np.abs(d[1:] - d[:-1]) > 0.08 * d[:-1])
        ys, xs = np.nonzero(jump)
        same.append(np.mean(np.minimum(far[ys, xs], 10)))
        ut, vt = uv[ys, xs, 0], uv[ys, xs, 1]
        inside = (ut >= 0) & (ut < 640) & (vt >= 0) & (vt < 480)
        tum.append(np.mean(np.minimum(far[vt[inside], ut[inside]], 10)))
    # Measured: 2.7 px pixel for pixel, 4.9 px through TUM's depth model.
    assert np.mean(same) < np.mean(tum) - 1.0, (same, tum)


def test_png_folder_loads_like_the_bundle(tum_dir: Path, tum_png_dir: Path):
    """The published layout (PNGs, nearest-stamp pairing) gives the bundle's frames."""
    bundle, png = load_tum(str(tum_dir)), load_tum(str(tum_png_dir))
    assert len(png) == len(bundle) == 37
    for a, b in zip(bundle.frames, png.frames):
        assert (a.stamp_ns, a.depth_stamp_ns) == (b.stamp_ns, b.depth_stamp_ns)
        np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
        np.testing.assert_array_equal(a.T_world_depth, b.T_world_depth)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=0.5 / DEPTH_SCALE)
    np.testing.assert_array_equal(bundle.gt_stamps_ns, png.gt_stamps_ns)


def test_write_tum_bundle_round_trip(tum_dir: Path, tum_png_dir: Path, tmp_path: Path):
    """make-tum-bag --bundle from a TUM folder rebuilds the bundled layout."""
    out = tmp_path / 'bundle'
    assert main(['make-tum-bag', '--bundle', '--data', str(tum_png_dir), '--out', str(out)]) == 0
    assert (out / ASSOCIATIONS).read_text() == (tum_dir / ASSOCIATIONS).read_text()
    assert (out / GROUNDTRUTH).read_bytes() == (tum_dir / GROUNDTRUTH).read_bytes()
    types, msgs, _ = _bag_messages(out)
    assert types == {BUNDLE_TOPICS[role]: TYPES[role] for role in TYPES}
    again, png = load_tum(str(out)), load_tum(str(tum_png_dir))
    for a, b in zip(again.frames, png.frames):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.depth_m > 0, b.depth_m > 0)
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=1e-6)
        # JPEG quality 90 once more: small, not zero
        assert 0 < np.abs(a.rgb.astype(int) - b.rgb).mean() < 3
    first = msgs[BUNDLE_TOPICS['depth']][0][1]
    np.testing.assert_allclose(depth_image_to_metres(first), png.frames[0].depth_m, atol=1e-6)
    np.testing.assert_array_equal(compressed_to_rgb(msgs[BUNDLE_TOPICS['compressed']][0][1]),
                                  again.frames[0].rgb)
    with pytest.raises(ValueError):
        write_tum_bundle(str(tmp_path / 'bundle.mcap'), str(tum_png_dir))


def test_make_tum_bag_cli(tum_dir: Path, tmp_path: Path):
    out = tmp_path / 'tum.mcap'
    assert main(['make-tum-bag', '--data', str(tum_dir), '--out', str(out)]) == 0
    assert main(['make-tum-bag', '--data', str(tum_dir), '--out', str(out)]) == 2  # exists
    seq = load_tum(str(tum_dir), with_images=False)
    src = open_source(str(out))
    assert src.num_images == 37
    buf = TransformBuffer()
    images, poses, tf_count = [], [], 0
    first_rgb = None
    for ev in src:
        if ev.role == 'tf':
            buf.add_tf_message(ev.msg)
            tf_count += 1
        elif ev.role == 'camera_info':
            assert camera_from_info(ev.msg) == TUM_FR1_CAMERA
        elif ev.role == 'image':
            stamp = stamp_to_ns(ev.msg.header.stamp)
            assert ev.log_time_ns == stamp and ev.msg.encoding == 'rgb8'
            assert ev.msg.header.frame_id == OPTICAL_FRAME
            # TF read so far already covers the image: no waiting, no extrapolation.
            poses.append(buf.lookup('world', OPTICAL_FRAME, stamp))
            images.append(stamp)
            if first_rgb is None:
                first_rgb = image_to_rgb(ev.msg)
    src.close()
    assert images == [f.stamp_ns for f in seq.frames]
    assert tf_count >= 100 + 37  # 100 Hz mocap over 1.2 s plus the image stamps
    for T, f in zip(poses, seq.frames):
        np.testing.assert_allclose(T[:3, 3], f.T_world_cam[:3, 3], atol=1e-9)
        assert rotation_angle_deg(T[:3, :3].T @ f.T_world_cam[:3, :3]) < 1e-5
    assert first_rgb.shape == (480, 640, 3)
    np.testing.assert_array_equal(first_rgb, load_tum(str(tum_dir), max_frames=1).frames[0].rgb)


def test_tum_dir_from_environment(tum_png_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv('L3ROCC_TUM_DIR', str(tum_png_dir))
    assert find_tum_dir() == tum_png_dir
    assert len(load_tum(max_frames=2)) == 2
    monkeypatch.setenv('L3ROCC_TUM_DIR', str(tmp_path))
    assert find_tum_dir() is None
    with pytest.raises(FileNotFoundError, match='L3ROCC_TUM_DIR'):
        load_tum()
    assert main(['make-tum-bag', '--out', str(tmp_path / 'x.mcap')]) == 2
