"""Files and start-up: checkpoints, impossible configurations, damaged bags, no shell anywhere.

- The node refuses to start on a missing, corrupt, incompatible or unsafe refiner checkpoint
  with a clear error (nothing in the unsafe file runs), or runs geometry-only and reports itself
  degraded when ``refiner_fallback`` asks for it; ``l3rocc replay`` does the same.
- Impossible configurations (grid_min >= grid_max, voxel_size <= 0, window_size < 3, a grid too
  large for memory) are refused at start with the reason and the computed size, and the failed
  node leaves nothing behind.
- Damaged bags (truncated or corrupted mcap and sqlite3) and unreadable videos make
  ``l3rocc replay`` exit non-zero with a clear message and no result files (stale ones removed).
  Missing topics, unknown message types and a bag without CameraInfo are proven in
  tests/core/test_sources.py and tests/core/test_replay.py.
- No code path hands a path to a shell; every ``torch.load`` uses ``weights_only=True``.
"""

import ast
import logging
import os
import pathlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from l3rocc_core.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ('l3rocc_core', 'l3rocc_ros', 'launch', 'scripts')


# ----------------------------------------------------------------------------- no shell
def _python_files():
    for package in PACKAGES:
        root = REPO / package
        for path in sorted(root.rglob('*')):
            if path.is_file() and (path.suffix == '.py' or (
                    package == 'scripts' and path.read_bytes()[:2] == b'#!')):
                yield path


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ''
            yield node, owner, name


def test_no_path_is_ever_passed_to_a_shell() -> None:
    files = list(_python_files())
    assert len(files) > 20
    offences = []
    for path in files:
        text = path.read_text(encoding='utf-8')
        tree = ast.parse(text, str(path))
        for call, owner, name in _calls(tree):
            where = f'{path.relative_to(REPO)}:{call.lineno}'
            if owner == 'os' and name in ('system', 'popen', 'execl', 'execlp', 'execle',
                                          'execv', 'execvp', 'execvpe', 'spawnl', 'spawnlp'):
                offences.append(f'{where}: os.{name}')
            for kw in call.keywords:
                if kw.arg == 'shell' and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    offences.append(f'{where}: shell={ast.unparse(kw.value)}')
            if owner == 'subprocess' and name in ('getoutput', 'getstatusoutput'):
                offences.append(f'{where}: subprocess.{name} (runs a shell)')
        if 'import commands' in text or 'from pty import' in text:
            offences.append(f'{path.relative_to(REPO)}: shell module')
    assert offences == [], offences


def test_every_torch_load_is_weights_only() -> None:
    offences = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
        for call, owner, name in _calls(tree):
            if owner == 'torch' and name == 'load':
                ok = any(kw.arg == 'weights_only' and isinstance(kw.value, ast.Constant)
                         and kw.value.value is True for kw in call.keywords)
                if not ok:
                    offences.append(f'{path.relative_to(REPO)}:{call.lineno}')
    assert offences == [], f'torch.load without weights_only=True: {offences}'


# ----------------------------------------------------------------------------- replay inputs
CAM_SIZE = (64, 48)
REPLAY_SET = ['world_frame=world', 'refiner=none', 'working_width=64',
              'grid_min=[-1.0,-1.0,-1.0]', 'grid_max=[1.0,1.0,1.0]', 'window_size=4',
              'num_depth_planes=16']
N_FRAMES = 10


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Write the same small textured sequence as mcap and as sqlite3; return {suffix: path}."""
    from l3rocc_core.bags import CameraBagWriter
    from l3rocc_core.camera import PinholeCamera
    folder = tmp_path_factory.mktemp('bags')
    camera = PinholeCamera(*CAM_SIZE, 60.0, 60.0, 31.5, 23.5)
    out = {}
    for suffix in ('mcap', 'db3'):
        path = folder / f'seq.{suffix}'
        with CameraBagWriter(str(path)) as w:
            for i in range(N_FRAMES):
                stamp = 10 ** 9 + i * 50_000_000
                rng = np.random.default_rng(i)
                image = (rng.random((CAM_SIZE[1], CAM_SIZE[0], 3)) * 255).astype(np.uint8)
                w.write_image(image, stamp, 'cam')
                w.write_camera_info(camera, stamp, 'cam')
                T = np.eye(4)
                T[0, 3] = 0.01 * i
                w.write_tf([('world', 'cam', T)], stamp)
        out[suffix] = path
    return out


def _replay(source: Path, out: Path, *sets: str) -> int:
    return cli_main(['replay', str(source), '--out', str(out), '--no-progress',
                     '--set', *REPLAY_SET, *sets])


def _damage(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    n = len(data)
    if how == 'truncated':
        data = data[:int(n * 0.9)]
    else:  # 10 % of the file overwritten in the middle, size unchanged
        data[n // 2:n // 2 + n // 10] = b'\xff' * (n // 10)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize('suffix', ['mcap', 'db3'])
@pytest.mark.parametrize('how', ['truncated', 'corrupted'])
def test_damaged_bag_fails_clearly_and_writes_nothing(bags, tmp_path, capsys, suffix,
                                                      how) -> None:
    bad = _damage(bags[suffix], tmp_path / f'bad.{suffix}', how)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'occupancy.npz').write_bytes(b'result of an earlier run')
    assert _replay(bad, out) == 1
    err = capsys.readouterr().err
    assert '[bad_bag]' in err and str(bad) in err and 'Traceback' not in err
    assert sorted(p.name for p in out.iterdir()) == []  # stale result removed, nothing new


def test_good_bag_replays_every_frame(bags, tmp_path) -> None:
    """The undamaged bag, for contrast: exit 0 and one row per frame (replay never drops)."""
    from l3rocc_core.occupancy import load_sequence
    out = tmp_path / 'out'
    assert _replay(bags['mcap'], out) == 0
    assert len(load_sequence(str(out / 'occupancy.npz'))) == N_FRAMES


def test_unreadable_video_fails_clearly(tmp_path, capsys) -> None:
    video = tmp_path / 'camera.mp4'
    video.write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(4096))
    out = tmp_path / 'out'
    assert cli_main(['replay', str(video), '--out', str(out), '--no-progress',
                     '--intrinsics', 'hfov=60', '--set', *REPLAY_SET]) == 1
    err = capsys.readouterr().err
    assert '[bad_video]' in err and 'Traceback' not in err
    assert not out.exists() or not any(out.iterdir())


def write_checkpoints(folder: Path) -> dict:
    """Write one unusable checkpoint of each kind; return {kind: path} (and the marker)."""
    import torch
    corrupt = folder / 'corrupt.pt'
    corrupt.write_bytes(b'PK\x03\x04' + os.urandom(2000))
    incompatible = folder / 'incompatible.pt'
    torch.save({'format': 'someone-elses-model', 'version': 1, 'state_dict': {}},
               str(incompatible))
    marker = folder / 'EXECUTED'
    unsafe = folder / 'unsafe.pt'
    torch.save({'format': 'l3rocc-refiner', 'payload': _Touch(str(marker))}, str(unsafe))
    return {'checkpoint_missing': folder / 'missing.pt', 'checkpoint_corrupt': corrupt,
            'checkpoint_incompatible': incompatible, 'checkpoint_unsafe': unsafe,
            'marker': marker}


class _Touch:
    """Unpickles into a call that creates a file: code a checkpoint must never run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict:
    """Return the unusable checkpoint files by kind (see :func:`write_checkpoints`)."""
    pytest.importorskip('torch')
    return write_checkpoints(tmp_path_factory.mktemp('ckpt'))


def test_replay_checkpoint_error_or_fallback(bags, checkpoints, tmp_path, capsys) -> None:
    path = checkpoints['checkpoint_corrupt']
    out = tmp_path / 'out'
    assert _replay(bags['mcap'], out, 'refiner=network', f'checkpoint={path}') == 1
    err = capsys.readouterr().err
    assert '[checkpoint_corrupt]' in err and 'refiner_fallback' in err
    assert not out.exists() or not any(out.iterdir())
    assert _replay(bags['mcap'], out, 'refiner=network', f'checkpoint={path}',
                   'refiner_fallback=true') == 0
    assert 'geometry only' in capsys.readouterr().err
    assert (out / 'occupancy.npz').is_file()


# ----------------------------------------------------------------------------- node start-up
ros = pytest.mark.ros


@pytest.fixture(scope='module')
def node_env(ros_context):
    """Return the L3roccNode class and a probe node to look at the ROS graph."""
    pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')
    import rclpy
    from l3rocc_ros.node import L3roccNode
    probe = rclpy.create_node('l3rocc_rel_files_probe', context=ros_context)
    yield L3roccNode, probe
    probe.destroy_node()


def _start(node_env, ros_context, name: str, **values):
    from rclpy.parameter import Parameter
    L3roccNode, _ = node_env
    values = {'device': 'cpu', 'refiner': 'none', **values}
    return L3roccNode(name, context=ros_context,
                      parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


@ros
@pytest.mark.parametrize('values, says', [
    ({'grid_min': [0.0, 0.0, 1.0], 'grid_max': [1.0, 1.0, 1.0]}, 'must be < grid_max'),
    ({'voxel_size': 0.0}, 'voxel_size'),
    ({'voxel_size': -0.05}, 'voxel_size'),
    ({'window_size': 2}, 'window_size'),
    ({'voxel_size': 0.01, 'grid_min': [-50.0, -50.0, -5.0], 'grid_max': [50.0, 50.0, 5.0],
      'max_grid_voxels': 500_000_000},
     'grid of 10000x10000x1000 = 100000000000 voxels exceeds max_grid_voxels'),
], ids=['grid_min >= grid_max', 'voxel_size 0', 'voxel_size < 0', 'window_size 2',
        'grid too large'])
def test_impossible_configuration_refused_at_start(node_env, ros_context, values,
                                                   says) -> None:
    _, probe = node_env
    handlers = len(logging.getLogger('l3rocc_core').handlers)
    with pytest.raises(ValueError, match=says.replace('(', r'\(')) as err:
        _start(node_env, ros_context, 'l3rocc_rel_badcfg', **values)
    if 'voxels exceeds' in says:
        assert 'MiB for the window' in str(err.value)
    assert len(logging.getLogger('l3rocc_core').handlers) == handlers
    end = time.monotonic() + 5.0
    while time.monotonic() < end and 'l3rocc_rel_badcfg' in probe.get_node_names():
        time.sleep(0.05)
    assert 'l3rocc_rel_badcfg' not in probe.get_node_names()


@ros
@pytest.mark.parametrize('kind', ['checkpoint_missing', 'checkpoint_corrupt',
                                  'checkpoint_incompatible', 'checkpoint_unsafe'])
def test_unusable_checkpoint_refused_at_start(node_env, ros_context, checkpoints,
                                              kind) -> None:
    with pytest.raises(ValueError) as err:
        _start(node_env, ros_context, 'l3rocc_rel_ckpt', refiner='network',
               checkpoint=str(checkpoints[kind]))
    text = str(err.value)
    assert kind in text and str(checkpoints[kind]) in text and 'refiner_fallback' in text
    assert not checkpoints['marker'].exists(), 'the unsafe checkpoint ran code'


@ros
def test_checkpoint_fallback_runs_geometry_and_reports_it(ros_context, wall,
                                                          checkpoints) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus
    run = wall.Running(ros_context, {'refiner': 'network', 'refiner_fallback': True,
                                     'checkpoint': str(checkpoints['checkpoint_unsafe'])},
                       node_name='l3rocc_rel_fallback', inputs='/fb')
    try:
        node = run.node
        assert node.pipeline.refiner_name == 'geometry' and 'refiner' in node.degraded
        assert not checkpoints['marker'].exists()
        last = run.client.feed(range(3))
        assert run.client.wait_for('points', lambda m: wall.stamp_of(m) == last, 60.0)
        hw = node.get_fully_qualified_name()
        msg = run.client.wait_for('diagnostics', lambda m: wall.diagnostic_values(m, hw).get(
            'error.checkpoint_unsafe') == '1', 5.0)
        assert msg is not None
        values = wall.diagnostic_values(msg, hw)
        status = [s for s in msg.status if s.hardware_id == hw][0]
        assert status.level == DiagnosticStatus.WARN
        assert 'degraded: geometry only' in status.message
        assert values['refiner'] == 'geometry' and 'checkpoint_unsafe' in values['degraded']
    finally:
        run.close()


@ros
@pytest.mark.slow
def test_node_process_exits_1_on_a_missing_checkpoint(tmp_path) -> None:
    pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')
    missing = tmp_path / 'no such dir' / 'refiner.pt'  # a space: never split by a shell
    proc = subprocess.run(
        [sys.executable, '-m', 'l3rocc_ros.lifecycle', '--ros-args', '-r',
         '__node:=l3rocc_rel_exit', '-p', 'refiner:=network', '-p', f'checkpoint:={missing}',
         '-p', 'device:=cpu'],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert 'FATAL' in text and 'checkpoint_missing' in text and str(missing) in text
    assert 'Traceback' not in text
