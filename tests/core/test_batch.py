"""``l3rocc batch`` (process pool, Ray, resume, bad input) and the LeRobot v2.1 export.

Sources: one small synthetic bag (``l3rocc synth``, 12 frames of 160 x 120, with its ground
truth beside it) made once, copied into two folders; the bundled static-camera video; a
``.mcap`` of random bytes. The LeRobot dataset is read back by a reader written here from the
v2.1 layout (json + pyarrow), not by the writer's code.
"""

import importlib
import importlib.util
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any, Dict, List

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from l3rocc_core import batch
from l3rocc_core.cli import main as cli_main
from l3rocc_core.viewers import rerun_log

# Small and fast: a coarse grid, 160-pixel working images, geometry only.
PARAMS = """/**:
  ros__parameters:
    grid_min: [-2.4, -2.4, -0.1]
    grid_max: [2.4, 2.4, 2.3]
    voxel_size: 0.1
    max_depth: 6.0
    working_width: 160
    refiner: none
"""
VIDEO_LINE = ('{video} --intrinsics hfov=60 --set pose_source=static '
              '"camera_pose=[0,0,1.5,0,0.3,0]" depth_source=plane_sweep')
V21_DATA_PATH = 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet'
#: rerun-sdk installed: the batches below also write Rerun recordings (--rerun).
HAS_RERUN = importlib.util.find_spec('rerun') is not None
RERUN = ['--rerun'] if HAS_RERUN else []
V21_VIDEO_PATH = 'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4'


@pytest.fixture(scope='session')
def fleet(tmp_path_factory, repo_root: Path) -> SimpleNamespace:
    """Two copies of one synthetic recording (gt.npz beside each), a broken bag, the video."""
    root = tmp_path_factory.mktemp('fleet')
    synth = root / 'synth'
    assert cli_main(['synth', '--out', str(synth), '--frames', '12', '--width', '160',
                     '--height', '120']) == 0
    for name in ('a', 'b'):
        (root / name).mkdir()
        for f in ('sequence.mcap', 'gt.npz'):
            shutil.copyfile(synth / f, root / name / f)
    broken = root / 'broken.mcap'
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    params = root / 'params.yaml'
    params.write_text(PARAMS)
    meta = json.loads((synth / 'meta.json').read_text())
    return SimpleNamespace(root=root, a=root / 'a' / 'sequence.mcap',
                           b=root / 'b' / 'sequence.mcap', broken=broken, params=params,
                           video=repo_root / 'data' / 'intel_car_detection_2s.mp4', meta=meta)


def _summary(out: Path) -> Dict[str, Any]:
    return json.loads((out / 'summary.json').read_text())


def _rows(out: Path) -> Dict[str, Dict[str, Any]]:
    return {r['name']: r for r in _summary(out)['rows']}


@pytest.fixture(scope='module')
def pool_run(fleet, tmp_path_factory) -> Path:
    """Two good bags and a broken one through the pool: eval, render, export, Rerun recordings."""
    out = tmp_path_factory.mktemp('pool') / 'out'
    assert cli_main(['batch', str(fleet.a), str(fleet.b), str(fleet.broken), '--out', str(out),
                     '--params-file', str(fleet.params), '--workers', '2', '--render',
                     '--export', 'lerobot', '--no-progress', *RERUN]) == 0
    return out


# ------------------------------------------------------------------------------ executors
def _check_good_and_broken(rows: Dict[str, Dict[str, Any]], good: List[str]) -> None:
    assert [n for n, r in rows.items() if r['status'] == 'ok'] == good
    bad = rows['broken']
    assert bad['status'] == 'failed' and bad['kind'] == 'bad_bag'
    assert 'broken.mcap' in bad['error'] and 'rosbag2' in bad['error']
    for name in good:
        r = rows[name]
        assert r['frames'] == 12 and r['fps'] > 0 and r['wall_s'] > 0
        assert r['kind'] == '' and r['error'] == ''
        # Measured in the worker, which has imported torch: well above a bare interpreter.
        assert r['peak_rss_mb'] > 100 and r['pid'] != os.getpid() and r['host']
        out = Path(r['out'])
        assert (out / 'occupancy.npz').is_file() and (out / 'timing.json').is_file()
        assert (out / 'cameras.npz').is_file()


def _check_recordings(rows: Dict[str, Dict[str, Any]], good: List[str]) -> None:
    """Each good source's recording.rrd, read with rerun's reader: every frame, its name."""
    import rerun as rr
    for name, row in rows.items():
        path = Path(row['out']) / batch.RERUN_FILE
        if name not in good:   # (a failed replay leaves no recording)
            assert not path.exists() and not list(Path(row['out']).glob('.partial.*'))
            continue
        reader = rr.chunk.RrdReader(str(path))
        assert [s.application_id for s in reader.recordings()] == [rerun_log.APPLICATION_ID]
        frames: Dict[str, List[int]] = {}
        names = []
        for chunk in reader.stream().to_chunks():
            columns = chunk.to_record_batch()   # (not to_pydict: ns timestamps)
            if 'RecordingInfo:name' in columns.schema.names:
                names += columns.column('RecordingInfo:name').to_pylist()
            if rerun_log.TIMELINE_FRAME in columns.schema.names:
                frames.setdefault(chunk.entity_path, []).extend(
                    columns.column(rerun_log.TIMELINE_FRAME).to_pylist())
        assert names == [[name]]   # the task's name, not the source file's
        for entity in (rerun_log.OCCUPANCY, rerun_log.CAMERA, rerun_log.PINHOLE, rerun_log.RGB):
            assert sorted(frames['/' + entity]) == list(range(row['frames'])), (name, entity)


def test_pool_runs_every_source_and_reports_the_broken_one(pool_run: Path, fleet) -> None:
    summary = _summary(pool_run)
    assert summary['executor'] == 'pool' and summary['ok'] == 2 and summary['failed'] == 1
    rows = _rows(pool_run)
    assert not any('ray_node_id' in r for r in rows.values())
    assert list(rows) == ['a-sequence', 'b-sequence', 'broken']   # same names: parent folders
    _check_good_and_broken(rows, ['a-sequence', 'b-sequence'])
    for name in ('a-sequence', 'b-sequence'):
        r, out = rows[name], pool_run / name
        assert r['gt'] == str(fleet.root / name[0] / 'gt.npz')   # found beside the bag
        metrics = json.loads((out / 'metrics.json').read_text())
        assert r['iou'] == pytest.approx(metrics['iou']) and 0.0 <= r['iou'] <= 1.0
        assert (out / 'preview.png').is_file() and (out / 'preview.mp4').is_file()
        assert r['lerobot_episode'] == ord(name[0]) - ord('a')
    # Identical recordings, identical results.
    assert rows['a-sequence']['iou'] == rows['b-sequence']['iou']
    csv_lines = (pool_run / 'summary.csv').read_text().strip().splitlines()
    assert csv_lines[0].startswith('name,status,kind,error,frames,fps,wall_s,iou')
    assert len(csv_lines) == 4 and csv_lines[3].startswith('broken,failed,bad_bag,')
    md = (pool_run / 'summary.md').read_text()
    assert '2 ok, 1 failed' in md and '`broken` (bad_bag)' in md and '](summary.png)' in md
    assert (pool_run / 'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_pool_writes_a_rerun_recording_per_source(pool_run: Path, fleet) -> None:
    if not HAS_RERUN:
        pytest.skip('rerun-sdk is not installed')
    _check_recordings(_rows(pool_run), ['a-sequence', 'b-sequence'])
    # A stored result is reused only by a batch that asks for the recording too.
    for rerun, reused in ((True, 2), (False, 0)):
        opts = batch.BatchOptions([str(fleet.a), str(fleet.b), str(fleet.broken)],
                                  str(pool_run), batch.ReplayOptions(str(fleet.params)),
                                  render=True, rerun=rerun)
        tasks = batch.plan(opts)[0]
        assert sum(batch.stored_row(t) is not None for t in tasks) == reused, rerun


def test_batch_rerun_without_rerun_sdk_stops_before_the_run(fleet, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, 'rerun', None)   # as if rerun-sdk were not installed
    out = tmp_path / 'out'
    assert cli_main(['batch', str(fleet.a), '--out', str(out), '--params-file',
                     str(fleet.params), '--rerun', '--no-progress']) == 2
    assert 'requirements/viewers.txt' in capsys.readouterr().err
    assert not out.exists()


def test_ray_runs_every_source_and_reports_the_broken_one(fleet, tmp_path: Path) -> None:
    import ray
    listing = tmp_path / 'fleet.txt'
    listing.write_text('# a synthetic bag, the static-camera video, random bytes\n'
                       f'{fleet.a}\n' + VIDEO_LINE.format(video=fleet.video) + '\n'
                       f'{fleet.broken}  # not a bag\n')
    out = tmp_path / 'out'
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level='WARNING')
    try:
        code = cli_main(['batch', str(listing), '--out', str(out), '--params-file',
                         str(fleet.params), '--max-frames', '12', '--no-progress', *RERUN,
                         '--ray'])
        node = ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
    assert code == 0
    assert _summary(out)['executor'] == 'ray'
    rows = _rows(out)
    assert all(r['ray_node_id'] == node for r in rows.values())   # ran as tasks of this Ray
    assert list(rows) == ['sequence', 'intel_car_detection_2s', 'broken']
    _check_good_and_broken(rows, ['sequence', 'intel_car_detection_2s'])
    # A static camera gives the plane sweep no parallax: few or no voxels, still a result.
    assert rows['intel_car_detection_2s']['occupied_mean'] >= 0
    assert rows['intel_car_detection_2s'].get('iou') is None   # no ground truth for it
    assert rows['sequence']['iou'] is not None
    if HAS_RERUN:
        _check_recordings(rows, ['sequence', 'intel_car_detection_2s'])


def test_pool_retries_alone_the_tasks_of_a_dead_worker(tmp_path: Path, monkeypatch) -> None:
    # A worker function that kills its process for one task (a crash, an OOM kill).
    (tmp_path / 'fleet_crash.py').write_text(
        'import os\n\n\ndef run(task):\n'
        '    if task.name == "boom":\n        os._exit(3)\n'
        '    return {"name": task.name, "status": "ok", "pid": os.getpid()}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    crash = importlib.import_module('fleet_crash')
    tasks = [batch.Task(n, n, str(tmp_path / n)) for n in ('one', 'boom', 'two', 'three')]
    rows: List[Dict[str, Any]] = []
    batch.run_pool(tasks, 2, rows.append, fn=crash.run)
    by_name = {r['name']: r for r in rows}
    assert sorted(by_name) == ['boom', 'one', 'three', 'two']
    assert by_name['boom']['status'] == 'failed' and by_name['boom']['kind'] == 'worker_died'
    assert all(by_name[n]['status'] == 'ok' for n in ('one', 'two', 'three'))


# ------------------------------------------------------------------------------ resume
def test_interrupted_run_resumes_and_force_redoes(fleet, tmp_path: Path, repo_root: Path
                                                  ) -> None:
    listing = tmp_path / 'fleet.txt'
    listing.write_text(f'{fleet.a}\n' + VIDEO_LINE.format(video=fleet.video) + '\n')
    out = tmp_path / 'out'
    args = ['batch', str(listing), '--out', str(out), '--params-file', str(fleet.params),
            '--workers', '1', '--max-frames', '24', '--no-progress']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo_root)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    proc = subprocess.Popen([sys.executable, '-m', 'l3rocc_core.cli', *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    done = out / 'sequence' / batch.RESULT_FILE
    deadline = time.monotonic() + 120
    try:
        while not done.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.exists(), f'the first source never finished: {proc.communicate()}'
        os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C: the batch and its workers
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and 'interrupted' in stderr
    assert not (out / 'summary.json').exists()
    assert not (out / 'intel_car_detection_2s' / batch.RESULT_FILE).exists()
    first = (out / 'sequence' / 'occupancy.npz').stat().st_mtime_ns

    assert cli_main(args) == 0
    rows = _rows(out)
    assert rows['sequence']['resumed'] is True and rows['sequence']['status'] == 'ok'
    assert rows['intel_car_detection_2s']['resumed'] is False
    assert rows['intel_car_detection_2s']['status'] == 'ok'
    assert (out / 'sequence' / 'occupancy.npz').stat().st_mtime_ns == first

    # Other parameters: the stored result is not this task's.
    replay = batch.ReplayOptions(str(fleet.params), max_frames=24)
    task = batch.plan(batch.BatchOptions([str(listing)], str(out), replay))[0][0]
    assert batch.stored_row(task) is not None
    task.fingerprint = dict(task.fingerprint, parameters={'voxel_size': 0.2})
    assert batch.stored_row(task) is None

    assert cli_main(['batch', str(fleet.a), '--out', str(out), '--params-file',
                     str(fleet.params), '--max-frames', '24', '--workers', '1', '--force',
                     '--no-progress']) == 0
    assert _rows(out)['sequence']['resumed'] is False
    assert (out / 'sequence' / 'occupancy.npz').stat().st_mtime_ns != first


# ------------------------------------------------------------------------------ LeRobot
def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_v21(root: Path) -> Dict[str, Any]:
    """Read a LeRobot v2.1 dataset from its documented layout (json lines + parquet + mp4)."""
    info = json.loads((root / 'meta' / 'info.json').read_text())
    episodes = _read_jsonl(root / 'meta' / 'episodes.jsonl')
    frames, videos = [], []
    video_keys = [k for k, f in info['features'].items() if f['dtype'] == 'video']
    for ep in episodes:
        chunk = ep['episode_index'] // info['chunks_size']
        frames.append(pq.read_table(root / info['data_path'].format(
            episode_chunk=chunk, episode_index=ep['episode_index'])).to_pydict())
        for key in video_keys:
            cap = cv2.VideoCapture(str(root / info['video_path'].format(
                episode_chunk=chunk, video_key=key, episode_index=ep['episode_index'])))
            pictures = []
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                pictures.append(img)
            cap.release()
            videos.append(pictures)
    return {'info': info, 'episodes': episodes, 'frames': frames, 'videos': videos,
            'tasks': _read_jsonl(root / 'meta' / 'tasks.jsonl'),
            'stats': _read_jsonl(root / 'meta' / 'episodes_stats.jsonl')}


def _npz_rows(path: Path):
    """Rows of an occupancy.npz straight from its arrays (flat indices, probabilities, masks)."""
    with np.load(path) as z:
        n, dims = len(z['stamps']), tuple(int(d) for d in z['dims'])
        indptr = z['indptr']
        rows = [(z['indices'][indptr[i]:indptr[i + 1]], z['prob'][indptr[i]:indptr[i + 1]])
                for i in range(n)]
        visible = np.unpackbits(z['visible_packed'])[:n * int(np.prod(dims))].reshape(
            (n,) + dims)
        return z['stamps'], rows, visible


def test_lerobot_dataset_of_the_batch_reads_back_as_v21(pool_run: Path, fleet) -> None:
    d = _read_v21(pool_run / 'lerobot')
    info = d['info']
    assert info['codebase_version'] == 'v2.1'
    assert info['data_path'] == V21_DATA_PATH and info['video_path'] == V21_VIDEO_PATH
    assert info['chunks_size'] == 1000 and info['total_chunks'] == 1
    assert info['fps'] == 15   # the synthetic recording's rate
    assert (info['total_episodes'], info['total_frames'], info['total_videos'],
            info['total_tasks']) == (2, 24, 2, 1)
    assert info['splits'] == {'train': '0:2'}
    feats = info['features']
    for key, dtype in (('timestamp', 'float32'), ('frame_index', 'int64'),
                       ('episode_index', 'int64'), ('index', 'int64'), ('task_index', 'int64')):
        assert feats[key] == {'dtype': dtype, 'shape': [1], 'names': None}
    assert feats['observation.camera_pose']['shape'] == [7]
    assert feats['observation.camera_intrinsics']['shape'] == [4]
    video = feats['observation.images.rgb']
    assert video['dtype'] == 'video' and video['shape'] == [120, 160, 3]
    assert video['info']['video.fps'] == 15.0
    assert [e['episode_index'] for e in d['episodes']] == [0, 1]
    assert all(e['length'] == 12 and e['tasks'] == [d['tasks'][0]['task']]
               for e in d['episodes'])
    assert d['tasks'] == [{'task_index': 0, 'task': d['tasks'][0]['task']}]
    assert [s['episode_index'] for s in d['stats']] == [0, 1]
    ts = d['stats'][0]['stats']['timestamp']
    assert ts['min'] == [0.0] and ts['max'] == [pytest.approx(11 / 15)] and ts['count'] == [12]
    assert len(d['stats'][0]['stats']['observation.images.rgb']['mean']) == 3

    cam = fleet.meta['camera']
    for ep, name in enumerate(('a-sequence', 'b-sequence')):
        f = d['frames'][ep]
        assert f['frame_index'] == list(range(12)) and f['episode_index'] == [ep] * 12
        assert f['index'] == list(range(12 * ep, 12 * ep + 12)) and f['task_index'] == [0] * 12
        np.testing.assert_allclose(f['timestamp'], np.arange(12) / 15, atol=1e-6)
        stamps, rows, visible = _npz_rows(pool_run / name / 'occupancy.npz')
        assert f['stamp_ns'] == stamps.tolist()
        for n in range(12):
            assert f['observation.occupancy.indices'][n] == rows[n][0].tolist()
            np.testing.assert_array_equal(
                np.asarray(f['observation.occupancy.probabilities'][n], np.float32), rows[n][1])
            mask = np.unpackbits(np.frombuffer(f['observation.occupancy.visible_packed'][n],
                                               np.uint8))[:visible[n].size]
            np.testing.assert_array_equal(mask.reshape(visible[n].shape), visible[n])
        # The synthetic camera (160 x 120, no distortion) at the video's size.
        np.testing.assert_allclose(f['observation.camera_intrinsics'],
                                   [[cam['fx'], cam['fy'], cam['cx'], cam['cy']]] * 12,
                                   rtol=1e-5)
        pose = np.asarray(f['observation.camera_pose'])
        assert np.all(np.isfinite(pose))
        np.testing.assert_allclose(np.linalg.norm(pose[:, 3:], axis=1), 1.0, atol=1e-5)
        with np.load(pool_run / name / 'cameras.npz') as c:
            np.testing.assert_allclose(pose[:, :3], c['T_world_cam'][:, :3, 3], atol=1e-5)
        pictures = d['videos'][ep]
        assert len(pictures) == 12 and pictures[0].shape == (120, 160, 3)
        assert all(p.std() > 5 for p in pictures)   # the scene, not blank frames


def test_lerobot_package_loads_the_dataset(pool_run: Path) -> None:
    # Optional: only where the lerobot package is installed (it is no dependency of ours).
    spec = next((m for m in ('lerobot.common.datasets.lerobot_dataset',
                             'lerobot.datasets.lerobot_dataset')
                 if importlib.util.find_spec(m.split('.')[0]) is not None
                 and _module_exists(m)), None)
    if spec is None:
        pytest.skip('the lerobot package is not installed')
    module = importlib.import_module(spec)
    if not str(getattr(module, 'CODEBASE_VERSION', '')).startswith('v2'):
        pytest.skip(f'lerobot reads {module.CODEBASE_VERSION} datasets, not v2.1')
    ds = module.LeRobotDataset('local/l3rocc', root=pool_run / 'lerobot')
    assert ds.num_episodes == 2 and ds.num_frames == 24
    item = ds[13]
    assert int(item['episode_index']) == 1 and int(item['frame_index']) == 1
    assert tuple(item['observation.camera_pose'].shape) == (7,)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_export_lerobot_command(pool_run: Path, fleet, tmp_path: Path, capsys) -> None:
    occ = str(pool_run / 'a-sequence' / 'occupancy.npz')
    out = tmp_path / 'ds'
    base = ['export', occ, '--format', 'lerobot', '--out', str(out)]
    assert cli_main(base + ['--source', str(fleet.a), '--slice', '2:7']) == 0
    assert _read_jsonl(out / 'meta' / 'episodes.jsonl')[0]['length'] == 5
    # A second episode only when asked for.
    assert cli_main(base + ['--source', str(fleet.a)]) == 2
    assert 'already holds a LeRobot dataset' in capsys.readouterr().err
    assert cli_main(base + ['--source', str(fleet.a), '--append']) == 0
    d = _read_v21(out)
    assert [e['length'] for e in d['episodes']] == [5, 12]
    assert d['frames'][1]['index'][0] == 5 and d['info']['total_frames'] == 17
    assert cli_main(base + ['--append']) == 2
    assert 'needs --source' in capsys.readouterr().err


# ------------------------------------------------------------------------------ bad input
def test_missing_source_alone_fails_the_batch(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    assert cli_main(['batch', str(tmp_path / 'nothing.mcap'), '--out', str(out),
                     '--no-progress']) == 1
    (row,) = _summary(out)['rows']
    assert row['status'] == 'failed' and row['kind'] == 'missing_source'
    assert 'nothing.mcap does not exist' in row['error']


def test_output_folder_that_cannot_be_written(fleet, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    assert cli_main(['batch', str(fleet.a), '--out', str(blocker / 'out'),
                     '--no-progress']) == 2
    assert 'cannot write the output folder' in capsys.readouterr().err


def test_ray_address_that_does_not_answer(fleet, tmp_path: Path, capsys) -> None:
    t0 = time.monotonic()
    assert cli_main(['batch', str(fleet.a), '--out', str(tmp_path / 'out'), '--no-progress',
                     '--ray-timeout', '1', '--ray', '127.0.0.1:1']) == 2
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err
    assert 'no Ray cluster answers at 127.0.0.1:1' in err and '[ray_unreachable]' in err
    with pytest.raises(batch.BatchError, match='HOST:PORT'):
        batch.check_ray_address('no-port', 1.0)


def test_bad_source_list_line(tmp_path: Path, capsys) -> None:
    listing = tmp_path / 'fleet.txt'
    listing.write_text('a.mcap --intrinsic hfov=60\n')
    assert cli_main(['batch', str(listing), '--out', str(tmp_path / 'out')]) == 2
    assert 'fleet.txt:1' in capsys.readouterr().err


# ------------------------------------------------------------------------------ sources
def test_source_names_are_unique_and_do_not_depend_on_order() -> None:
    paths = ['/r/x/a/sequence.mcap', '/r/x/b/sequence.mcap', '/r/y/a/sequence.mcap',
             '/r/clip.mp4', '/r/frames']
    names = batch.source_names(paths)
    assert names == ['x-a-sequence', 'b-sequence', 'y-a-sequence', 'clip', 'frames']
    back = batch.source_names(paths[::-1])
    assert dict(zip(paths[::-1], back)) == dict(zip(paths, names))
    assert batch.source_names(['/r/c.mp4', '/r/c.mp4']) == ['c', 'c-2']


def test_source_lists_globs_and_ground_truth(tmp_path: Path) -> None:
    for name in ('r1', 'r2'):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'sequence.mcap').write_bytes(b'')
    (tmp_path / 'r1' / 'gt.npz').write_bytes(b'')
    (tmp_path / 'clip.mp4').write_bytes(b'')
    listing = tmp_path / 'fleet.list'
    listing.write_text('# comment\n\nr*/sequence.mcap --set voxel_size=0.1\n'
                       'clip.mp4 --intrinsics hfov=70 --fps 12.5  # trailing comment\n')
    specs = batch.expand_sources([str(listing), str(tmp_path / 'clip.mp4')])
    assert [Path(s.path).relative_to(tmp_path).as_posix() for s in specs] == [
        'r1/sequence.mcap', 'r2/sequence.mcap', 'clip.mp4', 'clip.mp4']
    assert specs[0].sets == ['voxel_size=0.1'] and specs[2].intrinsics == 'hfov=70'
    assert specs[2].fps == 12.5 and specs[3].intrinsics is None
    assert batch.find_ground_truth(specs[0], 'r1', None) == str(tmp_path / 'r1' / 'gt.npz')
    assert batch.find_ground_truth(specs[1], 'r2', None) is None
    gt_dir = tmp_path / 'truth'
    gt_dir.mkdir()
    (gt_dir / 'r2.npz').write_bytes(b'')
    assert batch.find_ground_truth(specs[1], 'r2', str(gt_dir)) == str(gt_dir / 'r2.npz')
