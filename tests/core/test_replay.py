"""``l3rocc replay`` end to end on the TUM bag, back-pressure, and its failure modes."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from l3rocc_core.bags import CameraBagWriter
from l3rocc_core.cli import main
from l3rocc_core.datasets.tum import load_tum, OPTICAL_FRAME, write_tum_bag
from l3rocc_core.occupancy import load_sequence
from l3rocc_core.tools.replay import load_config
from l3rocc_core.transforms import matrix_to_quat

REPO = Path(__file__).resolve().parents[2]
TUM = REPO / 'data' / 'tum_fr1_xyz_37'  # the bundled recording (tests/conftest.py: tum_dir)
N_BAG = 8
FAST = ['working_width=96', 'refiner=none', 'window_size=4', 'num_depth_planes=16',
        'num_source_frames=2']
TIMING_KEYS = {'frames', 'wall_s', 'fps', 'stages_ms'}


@pytest.fixture(scope='module')
def tum_bag(tmp_path_factory) -> Path:
    """Write the first N_BAG TUM frames as an mcap bag."""
    return write_tum_bag(str(tmp_path_factory.mktemp('bag') / 'tum.mcap'), str(TUM),
                         max_frames=N_BAG, progress=False)


@pytest.fixture(scope='module')
def tum_frames():
    """Load the same frames with GT poses."""
    return load_tum(str(TUM), max_frames=N_BAG)


def _replay(source: Path, out: Path, *extra: str) -> int:
    return main(['replay', str(source), '--out', str(out), '--no-progress',
                 '--params-file', str(REPO / 'config' / 'tum.yaml'), '--set', *FAST, *extra])


def test_replay_tum_bag_writes_contract_files(tum_bag: Path, tum_frames, tmp_path: Path):
    out = tmp_path / 'out'
    assert _replay(tum_bag, out, '--max-frames', '5') == 0
    seq = load_sequence(str(out / 'occupancy.npz'))
    assert len(seq) == 5
    assert list(seq.stamps_ns) == [f.stamp_ns for f in tum_frames.frames[:5]]
    assert seq.grid.frame_id == 'world' and seq.grid.voxel_size == pytest.approx(0.05)
    config = load_config(str(REPO / 'config' / 'tum.yaml'), FAST)
    np.testing.assert_allclose(seq.grid.origin, config.grid.grid_min, atol=1e-9)
    assert seq.visible is not None and seq.visible.shape == (5,) + tuple(seq.grid.dims)
    assert seq.visible[-1].any()
    timing = json.loads((out / 'timing.json').read_text())
    assert TIMING_KEYS <= set(timing)
    assert timing['frames'] == 5 and timing['wall_s'] > 0
    assert timing['fps'] == pytest.approx(5 / timing['wall_s'], rel=1e-3)
    assert {'decode', 'pose'} <= set(timing['stages_ms'])
    assert all(v >= 0 for v in timing['stages_ms'].values())
    assert not list(out.glob('*.partial'))


def test_late_tf_is_waited_for_not_dropped(tum_frames, tmp_path: Path):
    """TF recorded 0.5 s after the images: every frame is still processed (back-pressure)."""
    bag = tmp_path / 'late.db3'
    frames = tum_frames.frames[:4]
    with CameraBagWriter(str(bag)) as w:
        for f in frames:
            w.write_image(f.rgb, f.stamp_ns, OPTICAL_FRAME)
            w.write_camera_info(tum_frames.camera, f.stamp_ns, OPTICAL_FRAME)
            w.write_tf([('world', OPTICAL_FRAME, f.T_world_cam)], f.stamp_ns,
                       log_time_ns=f.stamp_ns + 500_000_000)
    out = tmp_path / 'out'
    assert _replay(bag, out) == 0
    seq = load_sequence(str(out / 'occupancy.npz'))
    assert list(seq.stamps_ns) == [f.stamp_ns for f in frames]
    timing = json.loads((out / 'timing.json').read_text())
    assert timing['frames'] == 4 and timing['skipped'] == {}


def test_frames_without_pose_are_counted(tum_frames, tmp_path: Path):
    """Images before the first TF sample cannot get a pose: reported, rows = processed."""
    bag = tmp_path / 'early.mcap'
    frames = tum_frames.frames[:5]
    with CameraBagWriter(str(bag)) as w:
        for i, f in enumerate(frames):
            if i >= 2:
                w.write_tf([('world', OPTICAL_FRAME, f.T_world_cam)], f.stamp_ns)
            w.write_image(f.rgb, f.stamp_ns, OPTICAL_FRAME)
            w.write_camera_info(tum_frames.camera, f.stamp_ns, OPTICAL_FRAME)
    out = tmp_path / 'out'
    assert _replay(bag, out) == 0
    timing = json.loads((out / 'timing.json').read_text())
    assert timing['frames'] == 3 and timing['frames_in'] == 5
    assert timing['skipped'] == {'tf_extrapolation': 2}
    assert 'past' in timing['skip_reasons']['tf_extrapolation']
    assert len(load_sequence(str(out / 'occupancy.npz'))) == 3


def test_unconnected_world_frame_fails_clearly(tum_bag: Path, tmp_path: Path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'occupancy.npz').write_bytes(b'stale result of an earlier run')
    assert _replay(tum_bag, out, 'world_frame=map') == 1
    err = capsys.readouterr().err
    assert "'map'" in err and 'world' in err and 'no_frames' in err
    assert not (out / 'occupancy.npz').exists() and not (out / 'timing.json').exists()


def test_bad_inputs_exit_non_zero(tum_bag: Path, tmp_path: Path, capsys):
    out = tmp_path / 'out'
    truncated = tmp_path / 'cut.mcap'
    truncated.write_bytes(tum_bag.read_bytes()[:1_000_000])
    assert _replay(truncated, out) == 1
    assert 'bad_bag' in capsys.readouterr().err
    assert _replay(tmp_path / 'missing.mcap', out) == 1
    assert _replay(tum_bag, out, 'no_such_parameter=1') == 2
    assert 'no_such_parameter' in capsys.readouterr().err
    noinfo = tmp_path / 'noinfo.mcap'
    with CameraBagWriter(str(noinfo)) as w:
        w.write_image(np.zeros((48, 64, 3), np.uint8), 10**9, OPTICAL_FRAME)
        w.write_tf([('world', OPTICAL_FRAME, np.eye(4))], 10**9)
    assert _replay(noinfo, out) == 1
    err = capsys.readouterr().err
    assert 'no_camera_info' in err and '--intrinsics' in err
    assert not out.exists() or not any(out.iterdir())


def test_video_needs_poses_or_a_pose_source(tmp_path: Path, capsys):
    clip = tmp_path / 'clip.avi'
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    for i in range(3):
        vw.write(np.full((48, 64, 3), 40 * i, np.uint8))
    vw.release()
    out = tmp_path / 'out'
    assert main(['replay', str(clip), '--out', str(out), '--no-progress',
                 '--intrinsics', 'hfov=60', '--set', *FAST]) == 1
    assert '--poses' in capsys.readouterr().err
    assert main(['replay', str(clip), '--out', str(out), '--no-progress',
                 '--set', *FAST]) == 1
    assert '--intrinsics' in capsys.readouterr().err


def test_replay_bundled_recording(tum_bag: Path, tmp_path: Path):
    """The bundled rosbag2 replays like an rgb8 bag of the same decoded pixels.

    It holds JPEG colour beside raw depth; `make demo` replays it as it is.
    """
    for source, name in ((TUM, 'bundled'), (tum_bag, 'raw')):
        assert _replay(source, tmp_path / name, '--max-frames', '5') == 0
    bundled, raw = (load_sequence(str(tmp_path / n / 'occupancy.npz')) for n in ('bundled', 'raw'))
    assert len(bundled) == 5 and list(bundled.stamps_ns) == list(raw.stamps_ns)
    assert bundled.visible[-1].any() and len(bundled.indices) > 0
    for key in ('indptr', 'indices', 'prob', 'visible'):
        np.testing.assert_array_equal(getattr(bundled, key), getattr(raw, key), err_msg=key)


def test_image_folder_with_poses(tum_png_dir: Path, tmp_path: Path):
    out = tmp_path / 'out'
    assert main(['replay', str(tum_png_dir), '--out', str(out), '--no-progress',
                 '--max-frames', '3',
                 '--intrinsics', '517.3,516.5,318.6,255.3,0.2624,-0.9531,-0.0054,0.0026,1.1633',
                 '--params-file', str(REPO / 'config' / 'tum.yaml'), '--set', *FAST]) == 0
    seq = load_sequence(str(out / 'occupancy.npz'))
    assert len(seq) == 3 and seq.stamps_ns[0] == 1305031102_175304000


def test_video_with_poses_file(tum_frames, tmp_path: Path):
    """A video (TUM frames re-encoded) plus a TUM trajectory: every frame processed."""
    clip = tmp_path / 'clip.avi'
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (640, 480))
    frames = tum_frames.frames[:4]
    for f in frames:
        vw.write(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    vw.release()
    # Video stamps are i / fps from 0; poses at those stamps (+ one after) from the GT.
    lines = []
    for i, f in enumerate(frames + frames[-1:]):
        T = f.T_world_cam
        q = matrix_to_quat(T[:3, :3])
        lines.append(f'{i * 0.1:.6f} ' + ' '.join(f'{v:.9f}' for v in (*T[:3, 3], *q)))
    poses = tmp_path / 'poses.txt'
    poses.write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'out'
    assert main(['replay', str(clip), '--out', str(out), '--no-progress', '--poses', str(poses),
                 '--intrinsics', '517.3,516.5,318.6,255.3,0.2624,-0.9531,-0.0054,0.0026,1.1633',
                 '--params-file', str(REPO / 'config' / 'tum.yaml'), '--set', *FAST]) == 0
    seq = load_sequence(str(out / 'occupancy.npz'))
    assert list(seq.stamps_ns) == [0, 100_000_000, 200_000_000, 300_000_000]
