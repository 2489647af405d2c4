"""Fusion against OctoMap (:mod:`l3rocc_bench.octomap`) on a tiny input."""

import numpy as np
import pytest

from l3rocc_core.camera import PinholeCamera


def test_octomap_comparison_structure() -> None:
    pytest.importorskip('pyoctomap')
    from l3rocc_bench.octomap import compare_with_octomap, default_variants
    from l3rocc_core.grid import VoxelGrid
    cam = PinholeCamera(16, 12, 14.0, 14.0, 7.5, 5.5)
    depths = [np.full((12, 16), 1.0 + 0.1 * i, np.float32) for i in range(3)]
    poses = [np.eye(4) for _ in range(3)]
    grid = VoxelGrid.from_bounds([-1.0, -1.0, 0.0], [1.0, 1.0, 2.0], 0.1, 'world')
    variants = default_variants(quick=True)
    out = compare_with_octomap(depths, cam, poses, grid, 4.0, 'cpu', warmup=1,
                               variants=variants, rounds=1)
    assert out['points_per_frame'] == 16 * 12 and out['timed_frames'] == 2
    assert set(out['ours']) == {v[0] for v in variants}
    assert all(v > 0 for v in out['ratio'].values())
    # OctoMap's discretized insertion beside the default; our per-frame work on one thread.
    assert out['octomap_discretize']['points_per_s'] > 0
    assert set(out['ratio_discretize']) == set(out['ratio'])
    assert all(v['fusion_threads'] == 1 for v in out['ours'].values())
    assert len(out['load_average']) == 2
