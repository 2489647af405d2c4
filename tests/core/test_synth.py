"""Synthetic world: exact ground truth and rendering against closed forms (analytic scenes)."""

import numpy as np
import pytest
from scipy import ndimage

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.synth.appearance import Lighting, Material
from l3rocc_core.synth.ground_truth import GroundTruth
from l3rocc_core.synth.motion import (CAMERA_MOTIONS, Conveyor, Still, look_at, pose_xyz_yaw,
                                      translation)
from l3rocc_core.synth.render import Renderer
from l3rocc_core.synth.scene import (FAMILIES, Scene, box, camera_trajectory, make_scene,
                                     sphere)

VOX = 0.05


def _scene(objects) -> Scene:
    scene = Scene('industrial', 0, [], Lighting(np.array([0.3, 0.2, 1.0])),
                  np.zeros(3), np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0]), 10.0)
    mat = Material(np.full((3, 3), 0.5), 'noise', 0.2, 0.5)
    for name, parts, motion in objects:
        scene.add(name, parts, mat, motion)
    return scene


def _grid() -> VoxelGrid:
    return VoxelGrid.from_bounds([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], VOX, 'odom')


def _cell_bounds(grid: VoxelGrid):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.dims], indexing='ij'), -1)
    lo = np.asarray(grid.origin) + ijk * grid.voxel_size
    return lo, lo + grid.voxel_size


def test_box_occupancy_matches_closed_form():
    # A box whose faces lie off the voxel boundaries: GT = voxels whose cell overlaps the box.
    bmin, bmax = np.array([-0.313, -0.187, 0.021]), np.array([0.262, 0.444, 0.377])
    c, size = (bmin + bmax) / 2, bmax - bmin
    scene = _scene([('box', [box(*size, *c)], Still(np.eye(4)))])
    grid = _grid()
    occ, dyn = GroundTruth(scene, grid).occupancy(0.0)
    lo, hi = _cell_bounds(grid)
    expected = np.all((hi > bmin) & (lo < bmax), axis=-1)
    assert expected.sum() == 13 * 13 * 8
    assert np.array_equal(occ, expected)
    assert not dyn.any()


def test_sphere_occupancy_matches_closed_form():
    c, r = np.array([0.113, -0.071, 0.042]), 0.43
    scene = _scene([('ball', [sphere(r, *c, resolution=96)], Still(np.eye(4)))])
    grid = _grid()
    occ, _ = GroundTruth(scene, grid).occupancy(0.0)
    centres = grid.centres().numpy().astype(np.float64)
    dist = np.linalg.norm(centres - c, axis=-1)
    tol = 0.01  # tessellation of the mesh sphere
    # Centre membership is exact away from the surface.
    assert occ[dist < r - tol].all()
    lo, hi = _cell_bounds(grid)
    closest = np.linalg.norm(np.clip(c, lo, hi) - c, axis=-1)
    # Nothing outside the cells that touch the (slightly inflated) sphere.
    assert not occ[closest > r + tol].any()
    # Cells cut by the surface (but with outside centres) are found through surface samples.
    shell = (closest < r - tol) & (dist > r)
    assert shell.sum() > 100
    assert occ[shell].mean() > 0.99


def test_thin_plate_counts():
    # A 1 cm plate never contains a voxel centre; its voxels still count as occupied.
    scene = _scene([('plate', [box(0.6, 0.6, 0.01, z=0.0123)], Still(np.eye(4)))])
    occ, _ = GroundTruth(scene, _grid()).occupancy(0.0)
    ks = np.unique(np.nonzero(occ)[2])
    assert list(ks) == [20]
    assert occ[..., 20].sum() >= 12 * 12


def test_moving_object_ground_truth_moves_with_it():
    # Speed 0.15 m/s along x: after 1 s the object moved exactly 3 voxels.
    start = np.array([-0.4, 0.013, 0.1])
    mover = Conveyor(start, start + [5.0, 0, 0], 0.15, 0.0, 0.0)
    scene = _scene([('floor', [box(2.0, 2.0, 0.1, z=-0.05)], Still(np.eye(4))),
                    ('mover', [box(0.31, 0.22, 0.27, z=0.13), sphere(0.1, z=0.37)], mover)])
    gt = GroundTruth(scene, _grid())
    occ0, dyn0 = gt.occupancy(0.0)
    occ1, dyn1 = gt.occupancy(1.0)
    assert dyn0.sum() > 50
    assert np.array_equal(dyn1[3:], dyn0[:-3])
    assert not dyn1[:3].any()
    assert np.array_equal(dyn0, gt.object_occupancy(1, 0.0))
    # Static voxels (the floor) stay, the dynamic ones are part of the occupancy.
    assert (occ0 & ~dyn0).sum() > 100
    assert np.array_equal(occ0 & ~dyn0, occ1 & ~dyn1)
    assert not (dyn1 & ~occ1).any()


def _camera(w=96, h=72, hfov=70.0) -> PinholeCamera:
    f = float((w / 2) / np.tan(np.radians(hfov / 2)))
    return PinholeCamera(w, h, f, f, (w - 1) / 2 + 0.7, (h - 1) / 2 - 0.4)


def test_depth_of_a_plane_is_its_distance():
    # A wall 2.3 m in front of a camera looking along +x: every pixel's depth is 2.3 m.
    scene = _scene([('wall', [box(0.4, 20.0, 20.0, x=2.5)], Still(np.eye(4)))])
    cam = _camera()
    T = look_at([0.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    res = Renderer(scene, cam).render([(0.0, T)])
    np.testing.assert_allclose(res.depth, 2.3, atol=1e-4)
    assert res.image.shape == (cam.height, cam.width, 3) and res.image.dtype == np.uint8


def test_depth_of_a_sphere_matches_ray_sphere_intersection():
    c, r = np.array([3.0, 0.2, -0.1]), 0.8
    scene = _scene([('ball', [sphere(r, *c, resolution=128)], Still(np.eye(4)))])
    cam = _camera(120, 90, 60.0)
    T = look_at([0.0, 0.0, 0.0], [1.0, 0.05, 0.0])
    res = Renderer(scene, cam).render([(0.0, T)])
    d_cam = cam.pixel_rays().reshape(-1, 3).astype(np.float64)
    d = d_cam @ T[:3, :3].T
    oc = T[:3, 3] - c
    b = np.sum(d * oc, 1)
    a = np.sum(d * d, 1)
    disc = b * b - a * (np.sum(oc * oc) - r * r)
    t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, 0.0)   # z = 1 rays: t = z
    expected = t.reshape(cam.height, cam.width)
    got = res.depth
    both = (expected > 0) & (got > 0)
    assert both.sum() > 0.2 * cam.width * cam.height
    # Silhouette pixels may differ (tessellation); the rest agree to a few millimetres.
    disagree = (expected > 0) != (got > 0)
    assert disagree.sum() < 0.02 * both.sum()
    interior = ndimage.binary_erosion(both, iterations=2)
    np.testing.assert_allclose(got[interior], expected[interior], atol=0.004 * r + 1e-3)
    assert np.abs(got[both] - expected[both]).max() < 0.05 * r


def test_observed_mask_stops_at_the_first_hit():
    c, r = np.array([0.2, 0.0, 0.1]), 0.45
    scene = _scene([('ball', [sphere(r, *c, resolution=64)], Still(np.eye(4)))])
    cam = _camera(64, 48, 80.0)
    T = look_at([-2.0, 0.3, 0.6], c)
    res = Renderer(scene, cam).render([(0.0, T)])
    grid = _grid()
    gt = GroundTruth(scene, grid)
    obs = gt.observed(res.depth, cam, T, max_depth=6.0)
    occ, _ = gt.occupancy(0.0)
    centres = grid.centres().numpy().astype(np.float64).reshape(-1, 3)
    Tinv = np.linalg.inv(T)
    p_cam = centres @ Tinv[:3, :3].T + Tinv[:3, 3]
    uv, z = cam.project(p_cam)
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0.1) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    # A voxel covers about a pixel here: it is hidden when every pixel around its centre's
    # pixel hits something nearer (no return counts as infinitely far).
    far = ndimage.maximum_filter(np.where(res.depth > 0, res.depth, np.inf), size=3)
    d_pix = np.zeros(len(z))
    d_pix[inside] = far[v[inside], u[inside]]
    obs_f = obs.reshape(-1)
    behind = inside & np.isfinite(d_pix) & (z > d_pix + np.sqrt(3) * VOX)
    assert behind.sum() > 1000                       # the sphere hides a lot of the grid
    assert not obs_f[behind].any()
    near = ndimage.minimum_filter(np.where(res.depth > 0, res.depth, np.inf), size=3)
    d_near = np.zeros(len(z))
    d_near[inside] = near[v[inside], u[inside]]
    # In front of every hit and where rays are denser than voxels (z < 2.2 m), all is observed.
    front = inside & (z < np.minimum(d_near - np.sqrt(3) * VOX, 2.2))
    assert front.sum() > 1000 and obs_f[front].mean() > 0.97
    # The visible surface voxels are observed and occupied.
    assert (obs & occ).sum() > 50


@pytest.mark.parametrize('family', FAMILIES)
def test_scene_families_and_camera_motions(family):
    scene = make_scene(family, 7)
    dynamic = [o for o in scene.objects if o.dynamic]
    assert len(scene.objects) > 10 and len(dynamic) >= 2
    for kind in CAMERA_MOTIONS:
        traj = camera_trajectory(scene, kind, 7)
        for t in (0.0, 1.3, 4.0):
            T = traj.pose(t)
            R = T[:3, :3]
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
            assert np.linalg.det(R) > 0.999
            assert 0.3 < T[2, 3] < 6.0
    # The same seed gives the same scene; another seed a different one.
    again = make_scene(family, 7)
    assert [o.name for o in again.objects] == [o.name for o in scene.objects]
    np.testing.assert_array_equal(again.objects[-1].motion.pose(1.0),
                                  scene.objects[-1].motion.pose(1.0))
    other = make_scene(family, 8)
    assert ([o.name for o in other.objects] != [o.name for o in scene.objects]
            or not np.allclose(other.objects[0].material.colors,
                               scene.objects[0].material.colors))


def test_texture_moves_with_its_object():
    # The same object seen from the same relative pose looks the same wherever it is.
    scene_a = _scene([('b', [box(0.5, 0.5, 0.5)], Still(pose_xyz_yaw(2.0, 0.0, 0.0, 0.3)))])
    scene_b = _scene([('b', [box(0.5, 0.5, 0.5)],
                       Still(translation([0.0, 1.0, 0.5]) @ pose_xyz_yaw(2.0, 0.0, 0.0, 0.3)))])
    cam = _camera(64, 48)
    T = look_at([0.0, 0.2, 0.4], [2.0, 0.0, 0.0])
    a = Renderer(scene_a, cam).render([(0.0, T)])
    b = Renderer(scene_b, cam).render([(0.0, translation([0.0, 1.0, 0.5]) @ T)])
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_distorted_render_undistorts_to_the_pinhole_render():
    from l3rocc_core.camera import Undistorter

    scene = _scene([('ball', [sphere(0.9, 3.0, 0.0, 0.0, resolution=96)], Still(np.eye(4))),
                    ('wall', [box(0.2, 20.0, 20.0, x=5.0)], Still(np.eye(4)))])
    # Large checker squares (no fine grain): their edges show where distortion moves pixels.
    checker = Material(np.array([[0.9, 0.9, 0.9], [0.05, 0.05, 0.05], [0.5, 0.5, 0.5]]),
                       'checker', 0.6, 0.0)
    scene.objects[0].material = checker
    scene.objects[1].material = checker
    pin = _camera(160, 120, 80.0)
    dist = PinholeCamera(pin.width, pin.height, pin.fx, pin.fy, pin.cx, pin.cy, 'plumb_bob',
                         (-0.25, 0.06, 0.0005, -0.0003, 0.0))
    T = look_at([0.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    a = Renderer(scene, pin).render([(0.0, T)])
    b = Renderer(scene, dist).render([(0.0, T)])
    # Depth is always the pinhole camera's; the image differs (distortion) ...
    np.testing.assert_array_equal(a.depth, b.depth)
    diff_raw = np.abs(a.image.astype(float) - b.image.astype(float)).mean()
    # ... and undistorting it gives the pinhole image back (interpolation aside).
    und = Undistorter(dist, dist.width)(b.image)
    inner = (slice(10, -10), slice(10, -10))
    diff = np.abs(und[inner].astype(float) - a.image[inner].astype(float)).mean()
    assert diff_raw > 5.0 and diff < 0.25 * diff_raw


def test_motion_blur_only_blurs_motion():
    scene = _scene([('b', [box(0.5, 0.5, 0.5)], Still(pose_xyz_yaw(2.0, 0.0, 0.0, 0.3)))])
    cam = _camera(64, 48)
    T = look_at([0.0, 0.2, 0.4], [2.0, 0.0, 0.0])
    r = Renderer(scene, cam)
    sharp = r.render([(0.0, T)]).image.astype(int)
    still = r.render([(0.0, T)] * 5).image.astype(int)
    assert np.abs(sharp - still).max() <= 1
    moving = r.render([(0.0, translation([0.0, dy, 0.0]) @ T)
                       for dy in np.linspace(-0.05, 0.05, 5)])
    changed = np.abs(sharp - moving.image.astype(int)).max(-1) > 10     # blurred edges
    assert changed.sum() > 20
