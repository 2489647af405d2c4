"""TUM fr1/xyz loader and bag maker on the bundled real data."""

from pathlib import Path

import numpy as np
import pytest

from l3rocc_core.cli import main
from l3rocc_core.convert import camera_from_info, image_to_rgb, stamp_to_ns
from l3rocc_core.datasets.tum import find_tum_dir, load_tum, OPTICAL_FRAME, TUM_FR1_CAMERA
from l3rocc_core.sources import open_source, seconds_text_to_ns
from l3rocc_core.tf_tree import TransformBuffer
from l3rocc_core.transforms import invert, rotation_angle_deg

TUM = find_tum_dir() or Path('no-tum-data')
pytestmark = pytest.mark.skipif(not (TUM / 'rgb.txt').is_file(), reason='TUM data not present')


def _associations():
    rows = [line.split() for line in (TUM / 'associations_rgb_depth_gt.txt').read_text()
            .splitlines() if line and not line.startswith('#')]
    return {seconds_text_to_ns(r[0]): (seconds_text_to_ns(r[2]), [float(v) for v in r[5:8]])
            for r in rows}


def test_load_tum_frames_depth_and_poses():
    seq = load_tum(str(TUM))
    assert len(seq) == 37 and seq.camera == TUM_FR1_CAMERA
    assoc = _associations()
    stamps = [f.stamp_ns for f in seq.frames]
    assert stamps == sorted(assoc)
    for f in seq.frames:
        depth_stamp, t_gt = assoc[f.stamp_ns]
        assert f.depth_stamp_ns == depth_stamp
        # nearest mocap sample (< 10 ms away, camera < 0.5 m/s) vs interpolation at the stamp
        np.testing.assert_allclose(f.T_world_cam[:3, 3], t_gt, atol=5e-3)
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert f.depth_m.shape == (480, 640) and f.depth_m.dtype == np.float32
        valid = f.depth_m[f.depth_m > 0]
        assert valid.size > 0.5 * f.depth_m.size and 0.4 < np.median(valid) < 3.0
    stamp, rgb, depth, T = seq.frames[0][:4]  # unpacks as (stamp_ns, rgb, depth_m, T_world_cam)
    assert stamp == 1305031102_175304000
    travel = np.linalg.norm(seq.frames[-1].T_world_cam[:3, 3] - seq.frames[0].T_world_cam[:3, 3])
    assert 0.1 < travel < 0.5


def test_depth_reprojects_consistently_between_frames():
    """GT depth of frame 0, moved into frame 10 with GT poses, matches frame 10's depth."""
    seq = load_tum(str(TUM), max_frames=11)
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


def test_make_tum_bag_cli(tmp_path: Path):
    out = tmp_path / 'tum.mcap'
    assert main(['make-tum-bag', '--data', str(TUM), '--out', str(out)]) == 0
    assert main(['make-tum-bag', '--data', str(TUM), '--out', str(out)]) == 2  # exists
    seq = load_tum(str(TUM), with_images=False)
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
    np.testing.assert_array_equal(first_rgb, load_tum(str(TUM), max_frames=1).frames[0].rgb)
