"""OccupancyPipeline end to end.

The real plane sweep on a rendered textured plane, the fusion path with exact depth, stream rules
(no pose, resets, duplicates) and failure recovery.
"""

from dataclasses import replace
import logging

import numpy as np
import pytest
from scipy.ndimage import map_coordinates
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import GridConfig, PipelineConfig
from l3rocc_core.frame import Frame
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.pipeline import OccupancyPipeline, StageError

CAM = PinholeCamera(96, 72, 80.0, 80.0, 47.5, 35.5)
PLANE_Z = 1.52                   # a textured wall facing the camera (world z = optical axis)
TEXTURE = np.random.default_rng(7).random((300, 300)) * 255.0
TEXEL_M = 0.015


def _config(**values) -> PipelineConfig:
    base = {'grid_min': [-1.0, -1.0, 0.0], 'grid_max': [1.0, 1.0, 2.0], 'window_size': 4,
            'refiner': 'none', 'device': 'cpu', 'num_source_frames': 2,
            'keyframe_min_translation_m': 0.02, 'depth_source': 'plane_sweep'}
    base.update(values)
    return PipelineConfig().with_values(base)


def _pose(x: float, y: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = [x, y, 0.0]
    return T


def render(T: np.ndarray, cam: PinholeCamera = CAM):
    """(image uint8 [H, W, 3], depth float32 [H, W]) of the textured plane from pose T."""
    rays = cam.pixel_rays().astype(np.float64) @ T[:3, :3].T
    t = (PLANE_Z - T[2, 3]) / rays[..., 2]
    p = T[:3, 3] + t[..., None] * rays
    coords = [p[..., 1] / TEXEL_M + 150.0, p[..., 0] / TEXEL_M + 150.0]
    gray = map_coordinates(TEXTURE, coords, order=1, mode='wrap')
    image = np.repeat(gray[..., None], 3, -1).clip(0, 255).astype(np.uint8)
    return image, t.astype(np.float32)


def frame(n: int, x: float, cam: PinholeCamera = CAM, pose: bool = True) -> Frame:
    T = _pose(x)
    image, _ = render(T, cam)
    return Frame(image, n * 33_333_333, cam, T if pose else None)


def test_plane_sweep_end_to_end() -> None:
    pipe = OccupancyPipeline(_config())
    assert pipe.refiner_name == 'geometry' and pipe.device.type == 'cpu'
    out = None
    for n in range(8):
        out = pipe.push(frame(n, 0.025 * n))
    assert isinstance(out, Occupancy4D)
    assert out.prob.shape == (4,) + pipe.grid.dims and out.prob.dtype == np.float32
    assert out.observed.shape == out.prob.shape and out.observed.dtype == bool
    assert out.stamps_ns.tolist() == [n * 33_333_333 for n in range(4, 8)]
    assert set(pipe.timings_ms) >= {'window', 'depth', 'fusion', 'refiner', 'total'}
    idx, p = out.occupied()
    assert len(idx) > 100 and np.all(p >= 0.5)
    k = pipe.grid.flat_to_ijk(idx)[:, 2]
    # Measured: 98.8 % of the occupied voxels lie within two voxels of the plane's layer
    # (k = 30, z in [1.50, 1.55)); the sweep's median depth error here is 2 %, 3 cm.
    near = np.abs(k - 30) <= 2
    assert near.mean() > 0.9, f'{near.mean():.3f} of occupied voxels on the plane'
    assert pipe.stats['processed'] == 8 and pipe.stats['no_depth_source'] == 1


def test_fusion_path_with_exact_depth_and_threshold() -> None:
    pipe = OccupancyPipeline(_config(occupancy_threshold=0.8))
    for n in range(6):
        f = frame(n, 0.01 * n)
        out = pipe.push_depth(f, torch.from_numpy(render(f.T_world_cam)[1]))
    assert out.num_slices == 4 and out.threshold == 0.8
    # Exact depth: the wall layer (z in [1.50, 1.55)) is occupied where seen, nothing else.
    idx, p = out.occupied()
    k = pipe.grid.flat_to_ijk(idx)[:, 2]
    assert len(idx) > 300 and np.all(k == 30) and np.all(p >= 0.8)
    assert not (out.prob[-1] >= 0.5)[~out.observed[-1]].any()
    assert 'depth' not in pipe.timings_ms


def test_stream_rules() -> None:
    pipe = OccupancyPipeline(_config())
    assert pipe.push(frame(0, 0.0, pose=False)) is None
    assert pipe.stats['no_pose'] == 1
    depth = torch.from_numpy(render(_pose(0.0))[1])
    assert pipe.push_depth(frame(1, 0.0), depth).num_slices == 1
    assert pipe.push_depth(frame(2, 0.01), depth).num_slices == 2
    assert pipe.push_depth(frame(2, 0.01), depth) is None          # the same stamp again
    assert pipe.stats['duplicate_stamp'] == 1
    # The stamp goes back (bag loop): the window restarts.
    out = pipe.push_depth(frame(1, 0.0), depth)
    assert out.num_slices == 1 and pipe.stats['reset_time_backwards'] == 1
    assert len(pipe.window) == 1
    # The resolution changes mid-stream: the window restarts with the new camera.
    small = CAM.scaled(64)
    small_depth = torch.from_numpy(render(_pose(0.0), small)[1])
    out = pipe.push_depth(frame(5, 0.0, cam=small), small_depth)
    assert out.num_slices == 1 and pipe.stats['reset_camera_changed'] == 1
    assert pipe.window.newest.camera == small


def test_a_failed_push_leaves_the_pipeline_usable() -> None:
    pipe = OccupancyPipeline(_config())
    good = torch.from_numpy(render(_pose(0.0))[1])
    pipe.push_depth(frame(0, 0.0), good)
    with pytest.raises(StageError) as err:
        pipe.push_depth(frame(1, 0.01), torch.ones(5, 5, 5))
    assert err.value.stage == 'fusion' and pipe.stats['failed'] == 1
    assert len(pipe.window) == 1 and pipe.fusion.num_slices == 1
    out = pipe.push_depth(frame(2, 0.02), good)
    assert out.num_slices == 2 and out.stamps_ns[-1] == 2 * 33_333_333


def test_camera_anchor_grid_follows_the_camera() -> None:
    pipe = OccupancyPipeline(_config(grid_anchor='camera', grid_min=[-1.0, -1.0, -0.5],
                                     grid_max=[1.0, 1.0, 2.0]))
    for n, x in enumerate([0.0, 0.1, 0.3]):
        f = frame(n, x)
        out = pipe.push_depth(f, torch.from_numpy(render(f.T_world_cam)[1]))
        np.testing.assert_allclose(out.grid.origin, [x - 1.0, -1.0, -0.5], atol=1e-9)
    # The wall stays at the same world height in every slice after the shifts.
    for t in range(3):
        occ = np.argwhere(out.prob[t] >= 0.5)
        z = out.grid.ijk_to_world(occ)[:, 2]
        assert len(z) > 100 and np.all(np.abs(z - PLANE_Z) < 0.05)


def test_configuration_errors_and_refiner_fallback(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match='grid_min'):
        OccupancyPipeline(PipelineConfig(grid=GridConfig(grid_min=[3.0, 0.0, 0.0],
                                                         grid_max=[2.0, 1.0, 1.0])))
    with caplog.at_level(logging.WARNING):
        pipe = OccupancyPipeline(_config(refiner='network'))
    assert pipe.refiner_name in ('network', 'geometry')
    if pipe.refiner_name == 'geometry':
        assert any('geometry only' in r.getMessage() for r in caplog.records)
    # An explicit checkpoint that cannot be loaded is an error, never a silent fallback.
    with pytest.raises((OSError, RuntimeError, ValueError)):
        OccupancyPipeline(_config(refiner='network', checkpoint='/nonexistent/refiner.pt'))


def _held_reference(rows: list, observed: list, thr: float, h: float) -> list:
    """Occupied states of consecutive newest slices under hysteresis, one voxel at a time."""
    states = []
    for t, row in enumerate(rows):
        s = np.zeros(row.shape, bool)
        for i, p in enumerate(row):
            if t == 0 or not (observed[t - 1][i] or rows[t - 1][i] > 0):
                s[i] = p >= thr
            elif states[t - 1][i]:
                s[i] = p >= thr - h
            else:
                s[i] = p >= thr + h
        states.append(s)
    return states


def test_hysteresis_uses_every_estimate_of_the_previous_slice() -> None:
    # The network also estimates voxels next to observed space that the slice did not observe
    # (p > 0 there); those states are held too. Voxels with no estimate (never observed, p = 0,
    # as geometry gives) use the plain threshold, so a newly seen surface appears at once.
    pipe = OccupancyPipeline(_config(occupancy_hysteresis=0.15))
    pipe._prob = np.array([[0.6, 0.6, 0.0, 0.3, 0.3],
                           [0.45, 0.45, 0.55, 0.55, 0.55]], np.float32)
    pipe._obs = np.array([[True, False, False, True, False],
                          [True, True, True, True, True]])
    pipe._hold([0, 1], [1])
    state = pipe._prob[1] >= 0.5
    assert state.tolist() == [True, True, True, False, False]
    assert pipe._prob[1, 1] == np.float32(0.5) and pipe._prob[1, 2] == np.float32(0.55)


def test_hysteresis_holds_the_occupied_state_between_slices() -> None:
    # A wall at 1.52 m seen by a still camera for two frames, then a wall at 1.90 m: the
    # first wall's voxels lose log-odds frame by frame (rays now pass through them); their
    # probabilities cross 0.5 and pass through the hysteresis band. One ray per voxel counts,
    # so the log-odds fall by logodds_miss (0.4) a frame: 1.7 after the wall, then 1.3, 0.9,
    # 0.5, 0.1, -0.3 (p = 0.43: free, but held occupied), -0.7 (p = 0.33: free in both).
    h, thr = 0.15, 0.5
    raw = OccupancyPipeline(_config(occupancy_hysteresis=0.0, evidence_max_rays=1.0))
    held = OccupancyPipeline(_config(occupancy_hysteresis=h, evidence_max_rays=1.0))
    raw_rows, held_rows, observed = [], [], []
    for n in range(8):
        depth = torch.full((CAM.height, CAM.width), 1.52 if n < 2 else 1.90)
        f = Frame(np.zeros((CAM.height, CAM.width, 3), np.uint8), n * 33_333_333, CAM, _pose(0))
        a, b = raw.push_depth(f, depth), held.push_depth(f, depth)
        raw_rows.append(a.prob[-1].ravel())
        held_rows.append(b.prob[-1].ravel())
        observed.append(a.observed[-1].ravel())
        # older slices keep what they were published with
        for k in range(1, len(b.prob)):
            assert np.array_equal(b.prob[-1 - k].ravel(), held_rows[-1 - k])
    # The voxels whose probability ever enters the band, checked against the reference.
    band = np.flatnonzero(np.any([np.abs(r - thr) < h for r in raw_rows], axis=0))
    assert band.size > 20
    ref = _held_reference([r[band] for r in raw_rows], [o[band] for o in observed], thr, h)
    for t in range(8):
        assert np.array_equal(held_rows[t][band] >= thr, ref[t]), t
        # probabilities change only where the state is held, and only onto the threshold
        changed = held_rows[t] != raw_rows[t]
        moved = held_rows[t][changed]
        assert np.all((moved == np.float32(thr)) | (moved == np.nextafter(np.float32(thr), 0)))
    # Not vacuous: the old wall stays occupied for longer than without hysteresis.
    wall = np.flatnonzero(raw_rows[1] >= thr)
    raw_occupied = np.stack([r[wall] >= thr for r in raw_rows]).sum(0)     # frames, per voxel
    held_occupied = np.stack([r[wall] >= thr for r in held_rows]).sum(0)
    assert wall.size > 100 and np.all(held_occupied >= raw_occupied)
    assert np.mean(held_occupied == raw_occupied + 1) > 0.9
    # Switched off at run time, the next slice is the raw estimate again.
    held.set_output(replace(held.config.output, occupancy_hysteresis=0.0))
    f = Frame(np.zeros((CAM.height, CAM.width, 3), np.uint8), 9 * 33_333_333, CAM, _pose(0))
    depth = torch.full((CAM.height, CAM.width), 1.90)
    assert np.array_equal(raw.push_depth(f, depth).prob[-1], held.push_depth(f, depth).prob[-1])
