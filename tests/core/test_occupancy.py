"""Occupancy4D and the contract's occupancy.npz file."""

import numpy as np
import pytest

from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import (load_sequence, Occupancy4D, OccupancySequenceWriter)


def make_grid():
    return VoxelGrid.from_bounds([-0.5, -0.5, 0.0], [0.5, 0.5, 0.35], 0.1, 'world')


def test_occupancy4d_sparse_window():
    g = make_grid()
    prob = np.zeros((3,) + g.dims, np.float32)
    prob[0, 1, 2, 3] = 0.9
    prob[2, 0, 0, 0] = 0.5
    prob[2, 4, 4, 2] = 0.49
    occ = Occupancy4D(g, np.array([1, 2, 3], np.int64), prob, threshold=0.5)
    indptr, idx, p = occ.sparse_window()
    assert list(indptr) == [0, 1, 1, 2]
    assert list(idx) == [g.ijk_to_flat(np.array([1, 2, 3])), 0]
    np.testing.assert_allclose(p, [0.9, 0.5])
    with pytest.raises(ValueError):
        Occupancy4D(g, np.array([1, 2]), prob)


def test_npz_round_trip_matches_contract(tmp_path):
    g = make_grid()
    rng = np.random.default_rng(1)
    w = OccupancySequenceWriter(g, 0.5)
    probs, obs = [], []
    for n in range(4):
        p = rng.random(g.dims).astype(np.float32)
        o = rng.random(g.dims) > 0.3
        w.add(100 + n, p, o)
        probs.append(p)
        obs.append(o)
    path = tmp_path / 'occupancy.npz'
    w.write(str(path))
    assert not (tmp_path / 'occupancy.npz.partial').exists()
    with np.load(path, allow_pickle=False) as z:
        assert z['stamps'].dtype == np.int64 and z['indptr'].dtype == np.int64
        assert z['indices'].dtype == np.int64 and z['prob'].dtype == np.float32
        assert z['origin'].dtype == np.float64 and z['dims'].dtype == np.int64
        assert str(z['frame_id']) == 'world'
        assert z['visible_packed'].dtype == np.uint8
    seq = load_sequence(str(path))
    assert len(seq) == 4 and seq.grid == g
    for n in range(4):
        np.testing.assert_array_equal(seq.occupied_mask(n), probs[n] >= 0.5)
        np.testing.assert_array_equal(seq.visible[n], obs[n])
        np.testing.assert_allclose(seq.dense(n)[probs[n] >= 0.5], probs[n][probs[n] >= 0.5])


def test_load_rejects_broken_files(tmp_path):
    path = tmp_path / 'bad.npz'
    np.savez(path, stamps=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match='missing'):
        load_sequence(str(path))
