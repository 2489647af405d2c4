"""Temporal median filter and marching-tetrahedra meshes on analytic grids."""

from pathlib import Path

import numpy as np
import pytest
import torch

from l3rocc_core.grid import VoxelGrid
from l3rocc_core.refiner.mesh import export_meshes, marching_tetrahedra, write_mesh
from l3rocc_core.refiner.temporal_filter import temporal_median


def test_median_removes_blips_and_keeps_steps() -> None:
    p = np.zeros((7, 2, 1, 1), np.float32)
    p[3, 0] = 1.0            # one-slice blip on voxel 0
    p[4:, 1] = 1.0           # a step on voxel 1 (an object arrives and stays)
    out = temporal_median(p, 3)
    assert out.dtype == np.float32 and out.shape == p.shape
    assert np.all(out[:, 0] == 0.0)
    assert np.array_equal(out[:, 1, 0, 0], p[:, 1, 0, 0])
    causal = temporal_median(p, 3, causal=True)
    assert np.all(causal[:, 0] == 0.0)
    assert np.array_equal(causal[:, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1])  # one slice late
    t = temporal_median(torch.from_numpy(p), 5)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(temporal_median(p, 5)))


def test_median_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((9, 4, 3, 2)).astype(np.float32)
    out = temporal_median(p, 5)
    padded = np.concatenate([p[:1], p[:1], p, p[-1:], p[-1:]])
    ref = np.stack([np.median(padded[t:t + 5], axis=0) for t in range(9)])
    assert np.allclose(out, ref)
    assert np.array_equal(temporal_median(p, 1), p)
    with pytest.raises(ValueError, match='odd'):
        temporal_median(p, 4)
    with pytest.raises(ValueError, match='T, X, Y, Z'):
        temporal_median(p[0], 3)


def _sphere(radius_vox: float, n: int = 20, clip: bool = True) -> np.ndarray:
    c = (n - 1) / 2.0
    i, j, k = np.meshgrid(*(np.arange(n),) * 3, indexing='ij')
    d = np.sqrt((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2)
    p = radius_vox - d + 0.5  # 0.5 exactly at distance radius
    return np.clip(p, 0.0, 1.0) if clip else p


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return e


def test_sphere_mesh_is_closed_outward_and_on_the_surface() -> None:
    vs = 0.05
    origin = (1.0, -2.0, 0.5)
    centre = np.asarray(origin) + (9.5 + 0.5) * vs
    v, f = marching_tetrahedra(_sphere(6.0, clip=False), 0.5, origin, vs)
    r = np.linalg.norm(v - centre, axis=1)
    assert np.all(np.abs(r - 6.0 * vs) < 0.1 * vs)  # linear interpolation of a smooth field
    v, f = marching_tetrahedra(_sphere(6.0), 0.5, origin, vs)  # probabilities in [0, 1]
    assert len(f) > 100
    r = np.linalg.norm(v - centre, axis=1)
    assert np.all(np.abs(r - 6.0 * vs) < 0.4 * vs)  # saturated values: coarser
    # watertight: every directed edge appears once, and its reverse once (consistent winding)
    e = _edges(f)
    directed = {tuple(x) for x in e.tolist()}
    assert len(directed) == len(e)
    assert all((b, a) in directed for a, b in directed)
    assert len(v) - len(directed) // 2 + len(f) == 2  # Euler characteristic of a sphere
    # signed volume (divergence theorem) is positive: normals point outward
    tri = v[f] - centre
    volume = np.einsum('ij,ij->i', tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert volume == pytest.approx(4.0 / 3.0 * np.pi * (6.0 * vs) ** 3, rel=0.05)


def test_box_at_the_grid_border_is_closed_and_empty_grid_has_no_mesh() -> None:
    p = np.zeros((6, 5, 4), np.float32)
    p[:3, :, :2] = 1.0  # touches three faces of the grid
    v, f = marching_tetrahedra(p, 0.5, (0, 0, 0), 1.0)
    assert v[:, 0].min() == pytest.approx(0.0) and v[:, 0].max() == pytest.approx(3.0)
    assert v[:, 2].max() == pytest.approx(2.0)
    tri = v[f]
    volume = np.einsum('ij,ij->i', tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert volume > 0.0
    directed = {tuple(x) for x in _edges(f).tolist()}
    assert all((b, a) in directed for a, b in directed)
    v0, f0 = marching_tetrahedra(np.zeros((3, 3, 3)), 0.5)
    assert v0.shape == (0, 3) and f0.shape == (0, 3)


def test_ply_and_obj_files_read_back(tmp_path: Path) -> None:
    o3d = pytest.importorskip('open3d')
    v, f = marching_tetrahedra(_sphere(4.0, 12), 0.5, (0, 0, 0), 0.05)
    for ext in ('ply', 'obj'):
        path = tmp_path / f'sphere.{ext}'
        write_mesh(str(path), v, f)
        mesh = o3d.io.read_triangle_mesh(str(path))
        assert len(mesh.vertices) == len(v) and len(mesh.triangles) == len(f)
        # (Open3D's OBJ reader renumbers vertices: compare the triangles' corners)
        corners = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]
        assert np.allclose(corners, v[f], atol=1e-4)
    with pytest.raises(ValueError, match='.ply or .obj'):
        write_mesh(str(tmp_path / 'x.stl'), v, f)


def test_export_one_mesh_per_slice_with_median(tmp_path: Path) -> None:
    grid = VoxelGrid.from_bounds([0, 0, 0], [0.4, 0.4, 0.2], 0.05)
    prob = np.zeros((5,) + grid.dims, np.float32)
    prob[:, 2:5, 2:5, 1:3] = 1.0
    prob[2, 6:8, 6:8, 1:3] = 1.0  # one-slice blip: the median removes it
    paths = export_meshes(prob, grid, str(tmp_path / 'occ.ply'), median_kernel=3)
    assert [Path(p).name for p in paths] == [f'occ_{t:04d}.ply' for t in range(5)]
    sizes = {Path(p).stat().st_size for p in paths}
    assert len(sizes) == 1  # identical meshes: the blip is gone
    single = export_meshes(prob, grid, str(tmp_path / 'one.obj'), slices=[2])
    assert single == [str(tmp_path / 'one.obj')]
    assert Path(single[0]).stat().st_size > max(sizes) / 2
