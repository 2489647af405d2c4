"""The independent evaluation set: exact depth, exact occupancy, its files and their readers."""

import json

import numpy as np
import pytest

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.datasets import indep_mesh as mesh
from l3rocc_core.datasets.indep_mesh import interior_voxels, translate
from l3rocc_core.datasets.indep_raster import rasterise
from l3rocc_core.datasets.indep_scene import Actor, IndependentScene, Lighting, Material, \
    optical_pose, PoleRig, StaticActor
from l3rocc_core.datasets.independent import IndependentSequence, IndependentSpec, main, \
    write_independent_sequence
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.metrics import ground_truth_from_file

# 64 x 48 pixels, 77 degrees wide; pixel centres never fall on the test boxes' edges.
CAMERA = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
# The camera 1 m above the ground, looking along +x: world y = -x_cam, world z = 1 - y_cam.
T_CAM = optical_pose([0.0, 0.0, 1.0], 0.0, 0.0)
GRID = VoxelGrid.from_bounds([0.0, -1.5, 0.0], [5.0, 1.5, 2.0], 0.05, 'odom')


class Slider(Actor):
    """A 0.4 m cube 2 m ahead of the camera, sliding along +y at 0.5 m/s."""

    def __init__(self):
        super().__init__('slider', [mesh.box(0.4, 0.4, 0.4)], [0], True)

    def centre(self, t):
        return np.array([2.0, -0.6 + 0.5 * t, 0.6])

    def part_poses(self, t):
        return translate(*self.centre(t))[None]


def _scene(*actors):
    light = Lighting(np.array([0.3, 0.2, 0.9]) / np.linalg.norm([0.3, 0.2, 0.9]),
                     np.full(3, 2.0), np.full(3, 0.5), np.full(3, 0.7), np.full(3, 0.4))
    box = StaticActor('box', [mesh.box(1.0, 1.0, 1.0)], [0], translate(3.0, 0.0, 1.0)[None])
    return IndependentScene(0, PoleRig(T_CAM), [box, *actors],
                            [Material(-1, 1.0, np.full(3, 0.5))], [], light,
                            np.array([-1.0, -2.0, 0.0]), np.array([6.0, 2.0, 2.5]), 6.0)


def _sequence(*actors, frames=3):
    spec = IndependentSpec('pole', 'people', seed=0, frames=frames, fps=10.0, width=64,
                           height=48)
    return IndependentSequence(spec, GRID, scene=_scene(*actors), camera=CAMERA)


def _block(lo, hi):
    """Return bool [X, Y, Z]: the voxels inside the world box [lo, hi] (faces on voxel faces)."""
    i0 = np.round((np.asarray(lo) - GRID.origin) / GRID.voxel_size).astype(int)
    i1 = np.round((np.asarray(hi) - GRID.origin) / GRID.voxel_size).astype(int)
    out = np.zeros(GRID.dims, bool)
    out[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] = True
    return out


def _voxel(p):
    return tuple(GRID.world_to_ijk(np.asarray(p, np.float64)))


def _on_ray(u, v, z):
    """World point at depth z (metres) on the ray of pixel (u, v)."""
    return [z, -(u - CAMERA.cx) / CAMERA.fx * z, 1.0 - (v - CAMERA.cy) / CAMERA.fy * z]


def _pixels_of_face(x, y_lo, y_hi, z_lo, z_hi):
    """Return bool [H, W]: pixels whose ray meets the plane x = const inside the rectangle."""
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width].astype(np.float64)
    y = -(u - CAMERA.cx) / CAMERA.fx * x
    z = 1.0 - (v - CAMERA.cy) / CAMERA.fy * x
    return (y > y_lo) & (y < y_hi) & (z > z_lo) & (z < z_hi)


def _box_hits(lo, hi):
    """Slab test of every pixel's ray against a box: (hit bool [H, W], depth float [H, W])."""
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width].astype(np.float64)
    d = np.stack([np.ones_like(u), -(u - CAMERA.cx) / CAMERA.fx, -(v - CAMERA.cy) / CAMERA.fy])
    o = np.array([0.0, 0.0, 1.0])[:, None, None]
    with np.errstate(divide='ignore', invalid='ignore'):
        t0 = (np.asarray(lo)[:, None, None] - o) / d
        t1 = (np.asarray(hi)[:, None, None] - o) / d
    t_in = np.nanmax(np.minimum(t0, t1), axis=0)
    t_out = np.nanmin(np.maximum(t0, t1), axis=0)
    return t_in < t_out, t_in


def test_box_ahead_has_exact_depth_occupied_voxels_and_unobserved_voxels_behind(tmp_path):
    seq = _sequence()
    write_independent_sequence(str(tmp_path), seq.spec, progress=False, sequence=seq)
    with np.load(tmp_path / 'depth.npz') as z:
        depth = z['depth'][0].astype(np.float64)
        np.testing.assert_array_equal(z['K'], CAMERA.K)
    front = _pixels_of_face(2.5, -0.5, 0.5, 0.5, 1.5)
    assert front.sum() == 16 * 16
    # The front face is 2.5 m ahead: exact depth there (float16 holds 2.5 exactly), sky around.
    assert np.all(depth[front] == 2.5) and np.all(depth[~front] == 0.0)
    f = seq.frame(0)
    np.testing.assert_allclose(f.depth[front], 2.5, rtol=0, atol=1e-6)
    gt = ground_truth_from_file(str(tmp_path / 'gt.npz'))
    np.testing.assert_array_equal(gt.occupied[0], _block([2.5, -0.5, 0.5], [3.5, 0.5, 1.5]))
    assert not gt.dynamic[0].any()
    obs = gt.observed[0]
    assert obs[_voxel([2.525, 0.025, 1.025])]            # the hit voxel on the front face
    assert obs[_voxel([2.0, 0.0, 1.0])]                  # free space in front of it
    # Free space beside it, on the ray of pixel (15, 23), which sees the sky.
    assert depth[23, 15] == 0.0 and obs[_voxel(_on_ray(15, 23, 3.0))]
    assert not obs[_voxel([4.5, 0.0, 1.0])]              # behind it
    assert not obs[_voxel([3.0, 0.0, 1.0])]              # inside it
    assert not obs[_voxel([1.0, -1.45, 1.9])]            # outside the field of view


def test_moving_pixels_and_voxels_are_where_the_object_is():
    slider = Slider()
    seq = _sequence(slider)
    for i in (0, 2):
        f = seq.frame(i)
        c = slider.centre(f.t)
        expected, depth = _box_hits(c - 0.2, c + 0.2)
        assert expected.sum() > 50
        np.testing.assert_array_equal(f.moving, expected)
        # Depth = distance along x here (the camera looks along +x).
        np.testing.assert_allclose(f.depth[expected], depth[expected], rtol=1e-6)
        np.testing.assert_array_equal(f.dynamic, _block(c - 0.2, c + 0.2))
        assert not (f.dynamic & ~f.occupied).any()


def test_rasterised_floor_crossing_the_near_plane_has_exact_depth():
    floor = mesh.box(20.0, 20.0, 0.1, tile=20.0).transformed(translate(z=-0.05))
    T = optical_pose([0.3, -0.2, 1.7], 0.4, np.radians(30.0))
    r = rasterise(floor.vertices[floor.triangles], CAMERA, T)
    # Two triangles make the whole top face, which reaches behind the camera.
    assert floor.triangles.shape[0] == 12
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width].astype(np.float64)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy,
                     np.ones_like(u)], -1).reshape(-1, 3) @ T[:3, :3].T
    with np.errstate(divide='ignore'):
        t_floor = -T[2, 3] / rays[:, 2]
    xy = T[:2, 3] + rays[:, :2] * t_floor[:, None]
    on = (t_floor > 0) & np.all(np.abs(xy) < 9.99, axis=1)
    off = (t_floor < 0) | np.any(np.abs(xy) > 10.01, axis=1)
    assert on.sum() > 1000 and off.sum() > 100
    assert np.all(r.tri[on] >= 0) and np.all(r.tri[off] < 0)
    np.testing.assert_allclose(r.depth[on], t_floor[on], rtol=1e-9)


@pytest.mark.parametrize('make, volume', [
    (lambda: mesh.box(0.7, 1.3, 0.45), 0.7 * 1.3 * 0.45),
    (lambda: mesh.capsule(0.3, 1.4, 48, 24), np.pi * 0.09 * 0.8 + 4 / 3 * np.pi * 0.027),
    (lambda: mesh.torus(0.6, 0.2, 96, 48), 2 * np.pi ** 2 * 0.6 * 0.04),
    (lambda: mesh.frustum(0.4, 0.0, 1.2, 96), np.pi * 0.16 * 1.2 / 3),
])
def test_meshes_are_closed_outward_and_voxelised_by_parity(make, volume):
    m = make()
    v = m.vertices[m.triangles]
    signed = np.einsum('fk,fk->f', v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6
    assert signed == pytest.approx(volume, rel=0.01)
    T = mesh.rotation([0.3, -0.5, 0.8], 0.7) @ translate(0.013, 0.021, 0.007)
    T[:3, 3] += [2.5, 0.0, 0.5]
    posed = mesh.apply(T, m.vertices)
    assert np.all(posed.min(0) > GRID.origin) and np.all(posed.max(0) < GRID.grid_max)
    inside = np.zeros(GRID.num_voxels, bool)
    inside[interior_voxels(posed, m.triangles, GRID)] = True
    assert inside.sum() * GRID.voxel_size ** 3 == pytest.approx(volume, rel=0.06)


def test_box_interior_matches_the_analytic_inside_test():
    T = mesh.rotation([0.3, -0.5, 0.8], 0.7)
    T[:3, 3] = [2.5, 0.1, 1.0]
    m = mesh.box(0.9, 0.6, 0.5)
    inside = np.zeros(GRID.num_voxels, bool)
    inside[interior_voxels(mesh.apply(T, m.vertices), m.triangles, GRID)] = True
    local = mesh.apply(np.linalg.inv(T), GRID.flat_to_world(np.arange(GRID.num_voxels)))
    expected = np.all(np.abs(local) < [0.45, 0.3, 0.25], axis=1)
    np.testing.assert_array_equal(inside, expected)


def test_fixed_camera_sequence_reads_back_with_one_pose_and_scores(tmp_path):
    from l3rocc_core.cli import main as cli_main
    from l3rocc_core.sources import open_source
    from l3rocc_core.tf_tree import TransformBuffer

    out = tmp_path / 'seq'
    assert main(['--out', str(out), '--rig', 'pole', '--actors', 'vehicles', '--seed', '5',
                 '--frames', '3', '--width', '48', '--height', '36', '--quiet']) == 0
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['fixed_camera'] and meta['spec']['rig'] == 'pole'
    buf = TransformBuffer()
    counts, stamps, poses = {}, [], []
    with open_source(str(out / 'sequence.mcap')) as src:
        for ev in src:
            counts[ev.role] = counts.get(ev.role, 0) + 1
            if ev.role == 'tf':
                buf.add_tf_message(ev.msg)
            if ev.role == 'image':
                assert ev.msg.header.frame_id == 'camera_optical_frame'
                stamps.append(ev.msg.header.stamp.sec * 10 ** 9 + ev.msg.header.stamp.nanosec)
    assert counts == {'image': 3, 'camera_info': 3, 'tf': 3, 'odometry': 3}
    for s in stamps:
        poses.append(buf.lookup('odom', 'camera_optical_frame', s))
    assert all(np.array_equal(poses[0], p) for p in poses)
    assert 1.5 <= poses[0][2, 3] <= 3.0
    # Looking down 20-40 degrees: the optical axis's downward slope.
    assert 20.0 <= np.degrees(np.arcsin(-poses[0][2, 2])) <= 40.0
    with np.load(out / 'depth.npz') as z:
        assert z['depth'].dtype == np.float16 and z['depth'].shape == (3, 36, 48)
        np.testing.assert_array_equal(z['stamps'], stamps)
        moving = np.unpackbits(z['moving_packed'], count=3 * 36 * 48).reshape(3, 36, 48)
        assert moving.any()
    gt = ground_truth_from_file(str(out / 'gt.npz'))
    np.testing.assert_array_equal(gt.stamps_ns, stamps)
    assert list(gt.grid.dims) == meta['grid']['dims'] and gt.dynamic[1].any()
    # The GT file is a contract occupancy file: scored against itself it is perfect.
    assert cli_main(['eval', str(out / 'gt.npz'), '--gt', str(out / 'gt.npz'), '--out',
                     str(tmp_path / 'eval'), '--no-plot', '--quiet']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['iou'] == pytest.approx(1.0) and metrics['recall'] == pytest.approx(1.0)


def test_every_surface_point_seen_lies_in_an_occupied_observed_voxel():
    """Exact depth ends in occupied, observed voxels, floor included (its top is mid-voxel)."""
    seq = IndependentSequence(IndependentSpec('pole', 'people', seed=0, frames=2, width=64,
                                              height=48))
    f = seq.frame(1)
    d = f.depth.reshape(-1).astype(np.float64)
    seen = (d > 0) & (d <= seq.max_depth)
    rays = seq.camera.pixel_rays().reshape(-1, 3).astype(np.float64)[seen]
    p = mesh.apply(f.T_world_cam, rays * d[seen, None])
    flat, inside = seq.grid.world_to_flat(p)
    assert inside.sum() > 1000 and np.any(np.abs(p[inside, 2]) < 1e-3)   # the floor is seen
    assert f.occupied.reshape(-1)[flat[inside]].all()
    assert f.observed.reshape(-1)[flat[inside]].all()


def test_sequences_are_deterministic_by_seed():
    def frame(seed):
        spec = IndependentSpec('orbit', 'people', seed=seed, frames=2, width=40, height=30)
        return IndependentSequence(spec).frame(1)

    a, b, c = frame(3), frame(3), frame(4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.occupied, b.occupied)
    np.testing.assert_array_equal(a.observed, b.observed)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize('bad', [dict(rig='tripod'), dict(actors='robots'), dict(frames=0),
                                 dict(fps=500.0), dict(width=8)])
def test_spec_rejects_what_cannot_be_made(bad):
    with pytest.raises(ValueError):
        IndependentSpec(**bad)
