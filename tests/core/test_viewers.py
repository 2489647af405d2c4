"""``replay --rerun/--mcap`` and ``export --rerun``: the files read back with their own readers.

The Rerun recording is read with rerun's chunk reader (``rerun.chunk.RrdReader``), the MCAP with
rosbags (the reader of :mod:`l3rocc_core.sources`); both are compared with the replay's own
``occupancy.npz`` and ``cameras.npz``.
"""

import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from l3rocc_core.bags import default_typestore
from l3rocc_core.camera_log import load_cameras
from l3rocc_core.cli import main
from l3rocc_core.datasets.tum import write_tum_bag
from l3rocc_core.occupancy import load_sequence
from l3rocc_core.viewers import rerun_log
from l3rocc_core.viewers.mcap_log import TOPICS
from l3rocc_core.viewers.node_outputs import pointcloud_to_array

rr = pytest.importorskip('rerun', reason='rerun-sdk is not installed '
                         '(pip install -r requirements/viewers.txt)')

REPO = Path(__file__).resolve().parents[2]
TUM = REPO / 'data' / 'tum_fr1_xyz_37'
N = 5
FAST = ['working_width=96', 'refiner=none', 'window_size=3', 'num_depth_planes=16',
        'num_source_frames=2', 'publish_history=true']


@pytest.fixture(scope='module')
def tum_bag(tmp_path_factory) -> Path:
    """Write the first N TUM frames as an mcap bag (colour, CameraInfo, /tf)."""
    return Path(write_tum_bag(str(tmp_path_factory.mktemp('bag') / 'tum.mcap'), str(TUM),
                              max_frames=N, progress=False))


@pytest.fixture(scope='module')
def replayed(tum_bag: Path, tmp_path_factory) -> Path:
    """Replay the bag with --rerun, --mcap and --save-depth; return the folder of its files."""
    out = tmp_path_factory.mktemp('replay')
    assert _replay(tum_bag, out / 'run', '--save-depth', '--rerun', str(out / 'run.rrd'),
                   '--mcap', str(out / 'run.mcap')) == 0
    return out


def _replay(source: Path, out: Path, *extra: str) -> int:
    return main(['replay', str(source), '--out', str(out), '--no-progress',
                 '--params-file', str(REPO / 'config' / 'tum.yaml'), '--set', *FAST, *extra])


def read_rrd(path: Path) -> Dict[str, Dict[str, List]]:
    """Columns of every entity of a recording, rows sorted by the ``frame`` timeline."""
    import pyarrow as pa
    out: Dict[str, Dict[str, List]] = {}
    for chunk in rr.chunk.RrdReader(str(path)).stream().to_chunks():
        batch = chunk.to_record_batch()
        cols = out.setdefault(chunk.entity_path, {})
        for name in batch.schema.names:
            col = batch.column(name)
            if pa.types.is_timestamp(col.type):   # stamp, log_time: nanoseconds
                col = col.cast(pa.int64())
            cols.setdefault(name, []).extend(col.to_pylist())
    for cols in out.values():
        if rerun_log.TIMELINE_FRAME in cols:
            order = np.argsort(cols[rerun_log.TIMELINE_FRAME], kind='stable')
            for name in cols:
                cols[name] = [cols[name][i] for i in order]
    return out


def read_mcap(path: Path) -> Dict[str, List]:
    """Deserialised messages of an MCAP by topic, in log-time order."""
    store = default_typestore()
    out: Dict[str, List] = {}
    with Reader(str(path)) as reader:
        for con, _, raw in reader.messages():
            out.setdefault(con.topic, []).append(store.deserialize_cdr(raw, con.msgtype))
    return out


def _rows_of_centres(centres: np.ndarray, seq, row: int) -> np.ndarray:
    """Sorted voxel centres (mm, int) of ``centres`` and of occupancy row ``row``, as a pair."""
    lo, hi = seq.indptr[row], seq.indptr[row + 1]
    want = seq.grid.flat_to_world(seq.indices[lo:hi])
    return (np.unique(np.round(np.asarray(centres) * 1000).astype(np.int64), axis=0),
            np.unique(np.round(want * 1000).astype(np.int64), axis=0))


def test_replay_rerun_recording_holds_every_frame(replayed: Path):
    seq = load_sequence(str(replayed / 'run' / 'occupancy.npz'))
    cams = load_cameras(str(replayed / 'run' / 'cameras.npz'))
    ents = read_rrd(replayed / 'run.rrd')
    assert len(seq) == N
    for entity in (rerun_log.OCCUPANCY, rerun_log.CAMERA, rerun_log.PINHOLE, rerun_log.RGB):
        cols = ents['/' + entity]
        # one time point per frame on both timelines: the frame index and the frame's stamp
        assert cols[rerun_log.TIMELINE_FRAME] == list(range(N)), entity
        assert cols[rerun_log.TIMELINE_STAMP] == [int(s) for s in seq.stamps_ns], entity
    with np.load(replayed / 'run' / 'depth.npz') as z:   # the frames that had a depth estimate
        with_depth = [n for n, d in enumerate(z['depth']) if d.any()]
    assert with_depth and with_depth[-1] == N - 1
    assert ents['/' + rerun_log.DEPTH][rerun_log.TIMELINE_FRAME] == with_depth
    occ = ents['/' + rerun_log.OCCUPANCY]
    assert np.count_nonzero(np.diff(seq.indptr)) >= 2
    for row in range(N):   # (the first rows may be empty: no depth yet)
        got, want = _rows_of_centres(np.asarray(occ['Boxes3D:centers'][row]).reshape(-1, 3),
                                     seq, row)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(occ['Boxes3D:half_sizes'][0][0], [0.025] * 3, atol=1e-7)
    translations = np.asarray([t[0] for t in ents['/' + rerun_log.CAMERA]
                               ['Transform3D:translation']])
    np.testing.assert_allclose(translations, cams['T_world_cam'][:, :3, 3], atol=1e-5)
    pinhole = ents['/' + rerun_log.PINHOLE]
    assert pinhole['Pinhole:resolution'][0][0] == [float(v) for v in cams['image_size'][0]]
    strip = np.asarray(ents['/' + rerun_log.TRAJECTORY]['LineStrips3D:strips'][0][0])
    np.testing.assert_allclose(strip, cams['T_world_cam'][:, :3, 3], atol=1e-5)
    assert not list(replayed.glob('.partial.*'))


def test_replay_rerun_recording_carries_its_layout(replayed: Path):
    """The blueprint store of the file: 3D world without the depth, picture and depth in 2D."""
    reader = rr.chunk.RrdReader(str(replayed / 'run.rrd'))
    (store,) = reader.blueprints()
    assert store.application_id == rerun_log.APPLICATION_ID
    fields: Dict[str, Dict[str, list]] = {}
    for chunk in reader.stream(store=store).to_chunks():
        batch = chunk.to_record_batch()
        fields.setdefault(chunk.entity_path, {}).update(
            {n: batch.column(n).to_pylist()[-1] for n in batch.schema.names if ':' in n})
    views = {}
    for path, f in fields.items():
        if 'ViewBlueprint:class_identifier' in f:
            views[f['ViewBlueprint:display_name'][0]] = (
                f['ViewBlueprint:class_identifier'][0], f['ViewBlueprint:space_origin'][0],
                fields[path + '/ViewContents']['ViewContents:query'])
    assert sorted(views.values()) == [
        ('2D', rerun_log.PINHOLE, ['/' + rerun_log.DEPTH]),
        ('2D', rerun_log.PINHOLE, ['/' + rerun_log.RGB]),
        ('3D', rerun_log.WORLD, ['$origin/**', '- /' + rerun_log.DEPTH])]
    assert fields['/time_panel']['TimePanelBlueprint:timeline'] == [rerun_log.TIMELINE_FRAME]


def test_replay_mcap_holds_the_node_outputs(replayed: Path):
    seq = load_sequence(str(replayed / 'run' / 'occupancy.npz'))
    cams = load_cameras(str(replayed / 'run' / 'cameras.npz'))
    msgs = read_mcap(replayed / 'run.mcap')
    assert set(msgs) == {TOPICS[k] for k in ('points', 'markers', 'tf', 'image',
                                             'camera_info')}
    assert {t: len(m) for t, m in msgs.items()} == {t: N for t in msgs}
    # a second, independent MCAP reader (rerun's, as Foxglove reads it: ros2 profile, CDR
    # messages with their ros2msg schemas in the file)
    info = rr.chunk.McapReader(str(replayed / 'run.mcap')).info()
    assert info.profile == 'ros2' and info.message_count == 5 * N
    assert {c.topic: (c.message_encoding, c.schema.encoding, c.message_count)
            for c in info.channels} == {t: ('cdr', 'ros2msg', N) for t in msgs}
    for row in range(N):
        cloud = msgs[TOPICS['points']][row]
        stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
        assert stamp == seq.stamps_ns[row] and cloud.header.frame_id == seq.grid.frame_id
        pts = pointcloud_to_array(cloud)
        newest = pts[pts['t'] == 0.0]
        xyz = np.stack([newest['x'], newest['y'], newest['z']], axis=1)
        got, want = _rows_of_centres(xyz, seq, row)
        np.testing.assert_array_equal(got, want)
        assert np.all(newest['probability'] >= 0.5)
        markers = msgs[TOPICS['markers']][row].markers
        assert markers[0].action == 3   # DELETEALL first
        newest_cubes = [m for m in markers if m.ns == 'occupancy']
        assert len(newest_cubes) == (1 if len(want) else 0)   # an empty slice has no marker
        if newest_cubes:
            cubes = np.array([[p.x, p.y, p.z] for p in newest_cubes[0].points])
            np.testing.assert_array_equal(*_rows_of_centres(cubes, seq, row))
            assert len(newest_cubes[0].colors) == len(cubes)
        tf = msgs[TOPICS['tf']][row].transforms[0]
        assert tf.header.frame_id == seq.grid.frame_id
        t = tf.transform.translation
        np.testing.assert_allclose([t.x, t.y, t.z], cams['T_world_cam'][row, :3, 3], atol=1e-9)
    # the window: older slices in the cloud (t < 0) and as markers (publish_history)
    last = pointcloud_to_array(msgs[TOPICS['points']][-1])
    assert (last['t'] < 0).any() and last['t'].min() >= -1.0
    assert [m.ns for m in msgs[TOPICS['markers']][-1].markers][1:] == ['occupancy', 'history']
    assert msgs[TOPICS['camera_info']][0].width == cams['image_size'][0][0]
    assert msgs[TOPICS['image']][0].width == cams['image_size'][0][0]


def test_export_rerun_with_the_source_pictures(replayed: Path, tum_bag: Path):
    out = replayed / 'export.rrd'
    occ = replayed / 'run' / 'occupancy.npz'
    assert main(['export', str(occ), '--rerun', str(out), '--source', str(tum_bag)]) == 0
    ents = read_rrd(out)
    seq = load_sequence(str(occ))
    rgb = ents['/' + rerun_log.RGB]
    assert rgb[rerun_log.TIMELINE_FRAME] == list(range(N))
    # the bag's pictures at their own size (640 x 480), the pinhole scaled to them
    assert ents['/' + rerun_log.PINHOLE]['Pinhole:resolution'][0][0] == [640.0, 480.0]
    with np.load(replayed / 'run' / 'depth.npz') as z:   # frames without an estimate: zeros
        with_depth = [n for n, d in enumerate(z['depth']) if d.any()]
    assert ents['/' + rerun_log.DEPTH][rerun_log.TIMELINE_FRAME] == with_depth
    got, want = _rows_of_centres(np.asarray(
        ents['/' + rerun_log.OCCUPANCY]['Boxes3D:centers'][2]).reshape(-1, 3), seq, 2)
    np.testing.assert_array_equal(got, want)


def test_unwritable_outputs_exit_2_before_the_run(tum_bag: Path, tmp_path: Path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    out = tmp_path / 'out'
    assert _replay(tum_bag, out, '--rerun', str(blocker / 'x.rrd')) == 2
    assert 'cannot write' in capsys.readouterr().err
    assert not out.exists()      # refused before the run
    assert _replay(tum_bag, out, '--mcap', str(blocker / 'x.mcap')) == 2
    assert _replay(tum_bag, out, '--mcap', str(tmp_path / 'x.bag')) == 2
    assert 'must end in .mcap' in capsys.readouterr().err
    occ = tmp_path / 'occ.npz'
    assert main(['export', str(occ), '--rerun', str(blocker / 'x.rrd')]) == 2
    assert 'cannot write' in capsys.readouterr().err


def test_failed_replay_leaves_no_viewer_files(tum_bag: Path, tmp_path: Path, capsys):
    rrd, mcap = tmp_path / 'r.rrd', tmp_path / 'r.mcap'
    # world frame 'map' is not on /tf: no frame can be processed
    assert _replay(tum_bag, tmp_path / 'out', 'world_frame=map', '--rerun', str(rrd),
                   '--mcap', str(mcap)) == 1
    assert 'no_frames' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_rerun_sdk_names_the_install_line(tum_bag: Path, tmp_path: Path, capsys,
                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, 'rerun', None)   # as if rerun-sdk were not installed
    with pytest.raises(rerun_log.ViewerUnavailable, match='requirements/viewers.txt'):
        rerun_log.RerunRecorder(str(tmp_path / 'x.rrd'))
    assert _replay(tum_bag, tmp_path / 'out', '--rerun', str(tmp_path / 'x.rrd')) == 2
    assert 'pip install -r requirements/viewers.txt' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
