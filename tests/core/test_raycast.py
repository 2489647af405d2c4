"""Ray casting and projective integration against closed forms.

One ray along an axis, a fronto-parallel wall, no returns.
"""

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.projective import ProjectiveIntegrator
from l3rocc_core.raycast import cast_depth, observed_and_hits

VS = 0.05

# Camera optical axes (x right, y down, z forward) -> world: z_cam = +x_world, x_cam = -y_world,
# y_cam = -z_world (a camera looking along world +x, upright).
R_LOOK_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _one_ray_camera() -> PinholeCamera:
    return PinholeCamera(1, 1, 1.0, 1.0, 0.0, 0.0)


def test_single_ray_along_x_visits_exactly_the_line(device: str) -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 0.5, 0.5], VS)
    # Camera at the centre of voxel (2, 4, 5); endpoint at the centre of voxel (14, 4, 5).
    c = np.array([2.5, 4.5, 5.5]) * VS
    T = _pose(R_LOOK_X, c)
    depth = torch.full((1, 1), 12 * VS, device=device)
    res = cast_depth(grid, depth, _one_ray_camera(), T, max_depth=4.0)
    hits = res.hits.reshape(grid.dims).cpu().numpy()
    free = res.free.reshape(grid.dims).cpu().numpy()
    obs = res.observed.reshape(grid.dims).cpu().numpy()
    expect_hit = np.zeros(grid.dims, bool)
    expect_hit[14, 4, 5] = True
    expect_free = np.zeros(grid.dims, bool)
    expect_free[2:14, 4, 5] = True
    np.testing.assert_array_equal(hits > 0, expect_hit)
    assert hits.sum() == 1
    np.testing.assert_array_equal(free > 0, expect_free)
    assert free.max() == 1.0, 'one ray counts once per voxel however many samples it has'
    np.testing.assert_array_equal(obs, expect_free | expect_hit)
    assert res.num_rays == 1 and res.num_hits == 1


def test_ray_from_outside_the_grid_is_clipped() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 0.5, 0.5], VS)
    c = np.array([-10.5, 4.5, 5.5]) * VS          # 10.5 voxels before the grid on x
    T = _pose(R_LOOK_X, c)
    depth = np.full((1, 1), 16 * VS, np.float32)   # ends in voxel 5
    obs, hit = observed_and_hits(grid, depth, _one_ray_camera(), T, max_depth=4.0)
    assert isinstance(obs, np.ndarray) and obs.dtype == bool and obs.shape == grid.dims
    assert np.argwhere(hit).tolist() == [[5, 4, 5]]
    expect = np.zeros(grid.dims, bool)
    expect[0:6, 4, 5] = True
    np.testing.assert_array_equal(obs, expect)


def test_margin_keeps_the_voxel_before_a_near_endpoint() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 0.5, 0.5], VS)
    T = _pose(R_LOOK_X, np.array([2.5, 4.5, 5.5]) * VS)
    # Endpoint at x = 10.2 voxels; a margin of 1.2 voxels ends free space at x = 9.0.
    depth = torch.full((1, 1), 7.7 * VS)
    res = cast_depth(grid, depth, _one_ray_camera(), T, 4.0, free_margin_m=1.2 * VS)
    free = res.free.reshape(grid.dims)
    assert torch.nonzero(free).tolist() == [[i, 4, 5] for i in range(2, 9)]
    assert bool(res.observed.reshape(grid.dims)[9, 4, 5])


def test_fronto_parallel_wall(device: str) -> None:
    grid = VoxelGrid.from_bounds([0.0, -1.0, -1.0], [1.5, 1.0, 1.0], VS)
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    c = np.array([0.0, 0.0, 0.0])
    wall_x = 20.5 * VS                           # the wall plane crosses voxel layer 20 mid-way
    T = _pose(R_LOOK_X, c)
    depth = torch.full((48, 64), wall_x, device=device)
    res = cast_depth(grid, depth, cam, T, max_depth=4.0)
    hits = res.hits.reshape(grid.dims).cpu().numpy() > 0
    free = res.free.reshape(grid.dims).cpu().numpy() > 0
    obs = res.observed.reshape(grid.dims).cpu().numpy()
    assert res.num_hits == 64 * 48
    # Hits lie on layer 20 only; nothing behind the wall is free or observed.
    assert np.all(np.argwhere(hits)[:, 0] == 20)
    assert not obs[21:].any() and not free[20:].any()
    # Closed form: voxels whose 8 corners project inside the image (strictly, by one pixel) and
    # lie in front of the wall are observed; wall voxels whose corners all project inside are hit.
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.dims], indexing='ij'), -1)
    corners = np.array([[a, b, e] for a in (0, 1) for b in (0, 1) for e in (0, 1)])
    p_world = (np.asarray(grid.origin) + (ijk[..., None, :] + corners) * VS)   # [X,Y,Z,8,3]
    p_cam = (p_world - c) @ R_LOOK_X                                          # R^T (p - c)
    uv, z = cam.project(np.where(p_cam[..., 2:3] > 1e-6, p_cam, 1e-6))
    inside = ((uv[..., 0] > 0.5) & (uv[..., 0] < 62.5) & (uv[..., 1] > 0.5)
              & (uv[..., 1] < 46.5) & (p_cam[..., 2] > 0.05)).all(-1)
    in_front = ijk[..., 0] < 20
    must_obs = inside & in_front
    assert must_obs.sum() > 1000
    assert obs[must_obs].all()
    assert free[must_obs].all()
    assert hits[inside & (ijk[..., 0] == 20)].all()
    # And nothing outside the frustum: every observed voxel has a corner projecting inside.
    loose = ((uv[..., 0] > -0.5) & (uv[..., 0] < 63.5) & (uv[..., 1] > -0.5)
             & (uv[..., 1] < 47.5) & (p_cam[..., 2] > 0)).any(-1)
    assert not (obs & ~loose).any()


def test_no_return_clears_only_when_asked() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 0.5, 0.5], VS)
    T = _pose(R_LOOK_X, np.array([2.5, 4.5, 5.5]) * VS)
    cam = _one_ray_camera()
    for value in (0.0, float('nan'), 9.0):       # no return, NaN, beyond max_depth
        depth = torch.full((1, 1), value)
        res = cast_depth(grid, depth, cam, T, max_depth=0.5)
        assert res.hits.sum() == 0 and res.free.sum() == 0 and not res.observed.any()
        res = cast_depth(grid, depth, cam, T, max_depth=0.5, clear_no_return=True)
        assert res.hits.sum() == 0
        # Free up to max_depth = 10 voxels from the camera centre (voxel 2.5 -> 12.5).
        assert torch.nonzero(res.free).shape[0] == 11
        assert res.observed.sum() == 11


def test_stride_and_weights() -> None:
    grid = VoxelGrid.from_bounds([0.0, -1.0, -1.0], [1.5, 1.0, 1.0], VS)
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    T = _pose(R_LOOK_X, [0.0, 0.0, 0.0])
    depth = torch.full((48, 64), 1.0)
    depth[:, :10] = 0.0
    conf = torch.rand(48, 64)
    full = cast_depth(grid, depth, cam, T, 4.0, hit_weights=conf)
    strided = cast_depth(grid, depth, cam, T, 4.0, ray_stride=4, hit_weights=conf)
    # Hits use every pixel whatever the stride; the weights sum over hit pixels.
    assert torch.equal(full.hits, strided.hits)
    assert full.num_hits == 48 * 54
    assert torch.isclose(full.hit_weight.sum(), conf[:, 10:].sum(), rtol=1e-4)
    assert strided.num_rays == 12 * 16 - 12 * 3
    # Fewer rays: fewer free counts, observed a subset of the full traversal's.
    assert strided.free.sum() < full.free.sum() / 8
    assert not (strided.observed & ~full.observed).any()


def test_wrong_shapes_raise() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], VS)
    cam = PinholeCamera(8, 6, 5.0, 5.0, 3.5, 2.5)
    with pytest.raises(ValueError, match='does not match camera'):
        cast_depth(grid, torch.ones(5, 8), cam, np.eye(4), 4.0)
    with pytest.raises(ValueError, match='T_world_cam'):
        cast_depth(grid, torch.ones(6, 8), cam, np.eye(3), 4.0)


def _wall_closed_form(grid: VoxelGrid, cam: PinholeCamera, c: np.ndarray):
    """Voxel indices [X, Y, Z, 3], and the projections (uv, z) of the 8 corners of every voxel."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.dims], indexing='ij'), -1)
    corners = np.array([[a, b, e] for a in (0, 1) for b in (0, 1) for e in (0, 1)])
    p_world = (np.asarray(grid.origin) + (ijk[..., None, :] + corners) * VS)   # [X,Y,Z,8,3]
    p_cam = (p_world - c) @ R_LOOK_X
    uv, _ = cam.project(np.where(p_cam[..., 2:3] > 1e-6, p_cam, 1e-6))
    return ijk, uv, p_cam[..., 2]


def test_projective_fronto_parallel_wall(device: str) -> None:
    grid = VoxelGrid.from_bounds([0.0, -1.0, -1.0], [1.5, 1.0, 1.0], VS)
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    c = np.array([0.0, 0.0, 0.0])
    T = _pose(R_LOOK_X, c)
    depth = torch.full((48, 64), 20.5 * VS, device=device)
    weights = torch.rand(48, 64, device=device)
    res = ProjectiveIntegrator(grid.dims, device).integrate(grid, depth, cam, T, 4.0,
                                                            hit_weights=weights)
    ref = cast_depth(grid, depth, cam, T, 4.0, hit_weights=weights)
    # Hits: the very same as ray casting (every pixel scattered into its voxel).
    assert torch.equal(res.hits, ref.hits) and res.num_hits == 64 * 48
    assert torch.allclose(res.hit_weight, ref.hit_weight)
    hits = res.hits.reshape(grid.dims).cpu().numpy() > 0
    free = res.free.reshape(grid.dims).cpu().numpy()
    obs = res.observed.reshape(grid.dims).cpu().numpy()
    assert np.all(np.argwhere(hits)[:, 0] == 20)
    assert not obs[21:].any() and not (free[20:] > 0).any()
    # Voxels whose 8 corners project inside the image, in front of the wall: observed and free,
    # with about as many rays as pixels they cover (f * voxel / z)**2. Every observed voxel
    # has a corner that projects inside.
    ijk, uv, z = _wall_closed_form(grid, cam, c)
    inside = ((uv[..., 0] > 0.5) & (uv[..., 0] < 62.5) & (uv[..., 1] > 0.5)
              & (uv[..., 1] < 46.5) & (z > 0.05)).all(-1)
    must = inside & (ijk[..., 0] < 20)
    assert must.sum() > 1000
    assert obs[must].all() and (free[must] > 0).all()
    z_centre = (ijk[..., 0] + 0.5) * VS
    np.testing.assert_allclose(free[must], (40.0 * VS / z_centre[must]) ** 2, rtol=1e-4)
    assert hits[inside & (ijk[..., 0] == 20)].all()
    loose = ((uv[..., 0] > -0.5) & (uv[..., 0] < 63.5) & (uv[..., 1] > -0.5)
             & (uv[..., 1] < 47.5) & (z > 0)).any(-1)
    assert not (obs & ~loose).any()
    # Ray casting observes a superset (it also sees voxels that border rays only graze).
    assert not (res.observed & ~ref.observed).any()


def test_projective_single_ray_from_a_voxel_centre() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 0.5, 0.5], VS)
    # The camera sits exactly at the centre of voxel (2, 4, 5): voxel centres on its image
    # plane (z = 0) must not break the projection. One narrow pixel (f = 1000): it sees the
    # line of voxels along x only.
    T = _pose(R_LOOK_X, np.array([2.5, 4.5, 5.5]) * VS)
    cam = PinholeCamera(1, 1, 1000.0, 1000.0, 0.0, 0.0)
    depth = torch.full((1, 1), 12 * VS)                 # endpoint in voxel 14
    integrator = ProjectiveIntegrator(grid.dims)
    res = integrator.integrate(grid, depth, cam, T, 4.0, ray_stride=2.0)
    assert torch.nonzero(res.hits.reshape(grid.dims)).tolist() == [[14, 4, 5]]
    free = res.free.reshape(grid.dims)
    obs = res.observed.reshape(grid.dims)
    # Voxels 3..13 lie in front of the endpoint by at least one voxel (the camera's own voxel
    # has its centre on the image plane and is left out); 14 holds the endpoint.
    assert torch.nonzero(free).tolist() == [[i, 4, 5] for i in range(3, 14)]
    assert torch.nonzero(obs).tolist() == [[i, 4, 5] for i in range(3, 15)]
    # Rays through a voxel: the pixels it covers, (f * voxel / z)**2, a quarter with stride 2.
    z = (torch.arange(3, 14, dtype=torch.float32) - 2.0) * VS
    torch.testing.assert_close(free[3:14, 4, 5], (1000.0 * VS / z) ** 2 / 4.0)
    # Endpoint at x = 10.2 voxels and a margin of 1.3 voxels: free space ends at x = 8.9 as in
    # ray casting (voxels 3..8 free here, 2..8 there); voxels 9 and 10 are observed.
    depth = torch.full((1, 1), 7.7 * VS)
    res = integrator.integrate(grid, depth, cam, T, 4.0, free_margin_m=1.3 * VS)
    ref = cast_depth(grid, depth, cam, T, 4.0, free_margin_m=1.3 * VS)
    assert torch.nonzero(res.free.reshape(grid.dims)).tolist() == [[i, 4, 5]
                                                                   for i in range(3, 9)]
    assert torch.nonzero(ref.free.reshape(grid.dims)).tolist() == [[i, 4, 5]
                                                                   for i in range(2, 9)]
    assert torch.nonzero(res.observed.reshape(grid.dims)).tolist() == [[i, 4, 5]
                                                                       for i in range(3, 11)]


def test_projective_no_return_clears_only_when_asked() -> None:
    grid = VoxelGrid.from_bounds([0.0, -1.0, -1.0], [1.5, 1.0, 1.0], VS)
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    c = np.array([0.013, 0.007, -0.011])          # no voxel centre on a pixel border
    T = _pose(R_LOOK_X, c)
    integrator = ProjectiveIntegrator(grid.dims)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.dims], indexing='ij'), -1)
    centre_uv, centre_z = cam.project(((ijk + 0.5) * VS + np.asarray(grid.origin) - c)
                                      @ R_LOOK_X)
    in_image = ((centre_uv[..., 0] >= -0.5) & (centre_uv[..., 0] < 63.5)
                & (centre_uv[..., 1] >= -0.5) & (centre_uv[..., 1] < 47.5) & (centre_z > 0))
    for value in (0.0, float('nan'), 9.0):       # no return, NaN, beyond max_depth
        depth = torch.full((48, 64), value)
        res = integrator.integrate(grid, depth, cam, T, max_depth=0.5)
        assert res.hits.sum() == 0 and res.free.sum() == 0 and not res.observed.any()
        assert res.num_rays == 0
        res = integrator.integrate(grid, depth, cam, T, max_depth=0.5, clear_no_return=True)
        assert res.hits.sum() == 0 and res.num_rays == 48 * 64
        expect = in_image & (centre_z < 0.5)
        assert expect.sum() > 100
        np.testing.assert_array_equal(res.free.reshape(grid.dims).numpy() > 0, expect)
        np.testing.assert_array_equal(res.observed.reshape(grid.dims).numpy(), expect)


def test_projective_bad_input() -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], VS)
    cam = PinholeCamera(8, 6, 5.0, 5.0, 3.5, 2.5)
    integrator = ProjectiveIntegrator(grid.dims)
    with pytest.raises(ValueError, match='does not match camera'):
        integrator.integrate(grid, torch.ones(5, 8), cam, np.eye(4), 4.0)
    with pytest.raises(ValueError, match='T_world_cam'):
        integrator.integrate(grid, torch.ones(6, 8), cam, np.full((4, 4), np.nan), 4.0)
    other = VoxelGrid.from_bounds([0.0, 0.0, 0.0], [0.5, 1.0, 1.0], VS)
    with pytest.raises(ValueError, match='dims'):
        integrator.integrate(other, torch.ones(6, 8), cam, np.eye(4), 4.0)
    with pytest.raises(ValueError, match='ray_stride'):
        integrator.integrate(grid, torch.ones(6, 8), cam, np.eye(4), 4.0, ray_stride=0)
