"""VoxelGrid convention: origin, centres, flat index order, numpy/torch agreement."""

import numpy as np
import pytest
import torch

from l3rocc_core.grid import VoxelGrid


def test_dims_and_flat_order():
    g = VoxelGrid.from_bounds([-1.0, 0.0, 0.0], [1.0, 0.5, 0.25], 0.05)
    assert g.dims == (40, 10, 5)
    ijk = np.array([[1, 2, 3], [39, 9, 4]])
    assert list(g.ijk_to_flat(ijk)) == [(1 * 10 + 2) * 5 + 3, (39 * 10 + 9) * 5 + 4]
    assert np.array_equal(g.flat_to_ijk(g.ijk_to_flat(ijk)), ijk)
    dense = np.zeros(g.dims)
    dense[1, 2, 3] = 1
    assert np.flatnonzero(dense.reshape(-1))[0] == g.ijk_to_flat(ijk[0])


def test_world_index_round_trip_and_centres():
    g = VoxelGrid.from_bounds([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], 0.1)
    p = np.array([[-1.0, -1.0, -1.0], [0.05, 0.05, 0.05], [0.999, -0.001, 0.0]])
    flat, valid = g.world_to_flat(p)
    assert valid.all()
    np.testing.assert_allclose(g.flat_to_world(flat)[0], [-0.95, -0.95, -0.95])
    np.testing.assert_allclose(g.flat_to_world(flat)[1], [0.05, 0.05, 0.05])
    np.testing.assert_allclose(g.flat_to_world(flat)[2], [0.95, -0.05, 0.05])
    _, valid = g.world_to_flat(np.array([[1.0, 0.0, 0.0], [0.0, -1.01, 0.0]]))
    assert not valid.any()


def test_torch_matches_numpy():
    g = VoxelGrid.from_bounds([-2, -2, -0.5], [2, 2, 1.5], 0.05)
    rng = np.random.default_rng(0)
    p = rng.uniform(-2.5, 2.5, (1000, 3))
    f_np, v_np = g.world_to_flat(p)
    f_t, v_t = g.world_to_flat(torch.from_numpy(p))
    assert np.array_equal(f_np, f_t.numpy()) and np.array_equal(v_np, v_t.numpy())
    c = g.centres()
    assert c.shape == (80, 80, 40, 3)
    np.testing.assert_allclose(c[3, 4, 5].numpy(), g.ijk_to_world(np.array([3, 4, 5])),
                               atol=1e-6)


def test_bad_bounds():
    with pytest.raises(ValueError):
        VoxelGrid.from_bounds([0, 0, 0], [0, 1, 1], 0.1)
    with pytest.raises(ValueError):
        VoxelGrid.from_bounds([0, 0, 0], [1, 1, 1], 0.0)


def test_shifted():
    g = VoxelGrid.from_bounds([0, 0, 0], [1, 1, 1], 0.1)
    np.testing.assert_allclose(g.shifted([1, -2, 0]).origin, [0.1, -0.2, 0.0])
