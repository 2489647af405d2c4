"""``l3rocc export``: PLY round trip, CSV, npz subsets and row selection."""

import numpy as np
import pytest

from l3rocc_core.cli import main as cli_main
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import OccupancySequenceWriter, load_sequence
from l3rocc_core.tools.export import parse_rows, read_ply


@pytest.fixture()
def occ_file(tmp_path):
    grid = VoxelGrid((-1.0, 0.0, 0.0), 0.5, (4, 2, 2), 'world')
    writer = OccupancySequenceWriter(grid, 0.5)
    rows = []
    for n, p in enumerate([[0.6, 0.0, 0.9], [0.0, 0.7, 1.0], [0.55, 0.8, 0.0]]):
        prob = np.zeros(grid.dims, np.float32)
        prob[0, 0, 0], prob[1, 1, 1], prob[3, 1, 0] = p
        writer.add(2_000_000_000 + n * 500_000_000, prob, prob > 0.5)
        rows.append(prob)
    path = tmp_path / 'occ.npz'
    writer.write(str(path))
    return path, grid, rows


def test_parse_rows():
    assert parse_rows('all', 4) == [0, 1, 2, 3]
    assert parse_rows('last', 4) == [3]
    assert parse_rows('-2', 4) == [2]
    assert parse_rows('1:3', 4) == [1, 2]
    assert parse_rows(':2', 4) == [0, 1]
    for bad in ('4', 'x', '3:1'):
        with pytest.raises(ValueError):
            parse_rows(bad, 4)


def test_ply_round_trip(occ_file, tmp_path):
    path, grid, rows = occ_file
    out = tmp_path / 'all.ply'
    assert cli_main(['export', str(path), '--out', str(out), '--slice', 'all']) == 0
    header = out.read_bytes().split(b'end_header\n')[0].decode()
    assert 'format binary_little_endian 1.0' in header
    assert 'element vertex 6' in header          # 2 + 2 + 2 occupied voxels
    v = read_ply(str(out))
    assert len(v) == 6
    # Row 0 holds voxels (0,0,0) p=0.6 and (3,1,0) p=0.9; t relative to the newest row (1 s).
    first = v[np.isclose(v['t'], -1.0)]
    np.testing.assert_allclose(sorted(first['probability'].tolist()), [0.6, 0.9], rtol=1e-6)
    np.testing.assert_allclose(sorted(first['x'].tolist()), [-0.75, 0.75])
    np.testing.assert_allclose(sorted(first['z'].tolist()), [0.25, 0.25])
    assert set(np.round(v['t'], 3).tolist()) == {-1.0, -0.5, 0.0}
    # Every point is the centre of a voxel inside the grid.
    p = np.stack([v['x'], v['y'], v['z']], -1).astype(np.float64)
    flat, inside = grid.world_to_flat(p)
    assert inside.all()
    np.testing.assert_allclose(grid.flat_to_world(flat), p, atol=1e-6)
    # The default exports the last row only.
    assert cli_main(['export', str(path), '--out', str(tmp_path / 'last.ply')]) == 0
    last = read_ply(str(tmp_path / 'last.ply'))
    assert len(last) == 2 and np.all(last['t'] == 0.0)


def test_csv_and_npz_subset(occ_file, tmp_path):
    path, grid, rows = occ_file
    assert cli_main(['export', str(path), '--out', str(tmp_path / 'o.csv'), '--slice',
                     '1']) == 0
    lines = (tmp_path / 'o.csv').read_text().strip().split('\n')
    assert lines[0] == 'row,stamp_ns,t,x,y,z,i,j,k,probability'
    assert len(lines) == 3 and all(line.startswith('1,2500000000,') for line in lines[1:])
    out = tmp_path / 'sub.npz'
    assert cli_main(['export', str(path), '--out', str(out), '--slice', '0:2',
                     '--threshold', '0.65']) == 0
    seq = load_sequence(str(out))
    assert list(seq.stamps_ns) == [2_000_000_000, 2_500_000_000]
    assert seq.grid == grid
    assert np.array_equal(seq.occupied_mask(0), rows[0] >= 0.65)
    assert np.array_equal(seq.occupied_mask(1), rows[1] >= 0.65)
    assert seq.visible is not None and np.array_equal(seq.visible[1], rows[1] > 0.5)
    assert cli_main(['export', str(path), '--out', str(out), '--slice', '7']) == 2


def test_mesh_export_of_a_box(tmp_path):
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (8, 8, 8), 'world')
    writer = OccupancySequenceWriter(grid, 0.5)
    prob = np.zeros(grid.dims, np.float32)
    prob[2:6, 2:6, 2:6] = 0.9
    writer.add(1, prob)
    writer.add(2, prob)
    occ = tmp_path / 'box.npz'
    writer.write(str(occ))
    out = tmp_path / 'box.obj'
    assert cli_main(['export', str(occ), '--out', str(out), '--slice', 'last']) == 0
    lines = out.read_text().splitlines()
    vertices = np.array([[float(v) for v in ln.split()[1:4]] for ln in lines
                         if ln.startswith('v ')])
    assert sum(ln.startswith('f ') for ln in lines) > 12
    # The 0.5 iso-surface of a 4-voxel cube lies within a voxel of the cube's faces.
    assert vertices.min() > 0.15 and vertices.max() < 0.65
    assert cli_main(['export', str(occ), '--out', str(tmp_path / 'm.ply'), '--format',
                     'mesh-ply', '--slice', 'all']) == 0
    assert (tmp_path / 'm_0000.ply').exists() and (tmp_path / 'm_0001.ply').exists()


def test_mesh_sequence_meshes_every_row_after_the_temporal_median(tmp_path):
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (8, 8, 8), 'world')
    writer = OccupancySequenceWriter(grid, 0.5)
    box = np.zeros(grid.dims, np.float32)
    box[2:6, 2:6, 2:6] = 0.9
    blip = box.copy()
    blip[6:8, 6:8, 6:8] = 0.9          # one frame only: the median over 3 rows removes it
    for stamp, prob in enumerate((box, blip, box), start=1):
        writer.add(stamp, prob)
    occ = tmp_path / 'seq.npz'
    writer.write(str(occ))
    assert cli_main(['export', str(occ), '--out', str(tmp_path / 'mesh'), '--format',
                     'mesh-sequence']) == 0
    files = sorted(tmp_path.glob('mesh_*.ply'))
    assert [f.name for f in files] == ['mesh_0000.ply', 'mesh_0001.ply', 'mesh_0002.ply']
    sizes = [f.stat().st_size for f in files]
    assert sizes[1] == sizes[0], sizes   # the blip is gone from the middle row's mesh
    assert cli_main(['export', str(occ), '--out', str(tmp_path / 'raw'), '--format',
                     'mesh-sequence', '--median', '1']) == 0
    assert (tmp_path / 'raw_0001.ply').stat().st_size > sizes[1]   # unfiltered: the blip
