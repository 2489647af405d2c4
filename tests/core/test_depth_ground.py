"""Estimated depth near the ground plane put on it (``ground_snap_height_m``)."""

from typing import Optional, Sequence

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig, PipelineConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.ground import BEHIND, GroundSnapSource, ground_depth
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.raycast import cast_depth
from l3rocc_core.synth.motion import look_at

CAMERA = PinholeCamera(80, 60, 60.0, 60.0, 39.5, 29.5)
HEIGHT = 1.5


def _pose(pitch_deg: float = 30.0) -> np.ndarray:
    """Camera HEIGHT above the ground facing +x, ``pitch_deg`` below the horizon."""
    p = np.radians(pitch_deg)
    eye = np.array([0.0, 0.0, HEIGHT])
    return look_at(eye, eye + [np.cos(p), 0.0, -np.sin(p)])


class FixedDepth(DepthSource):
    """A depth source that returns the same map for every frame (an estimate made elsewhere)."""

    name = 'network'

    def __init__(self, depth: np.ndarray):
        """Keep the map (metres, 0 = none)."""
        self.depth = torch.as_tensor(depth, dtype=torch.float32)

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Return the map, valid where it has depth except the first row, with a confidence ramp.

        The first row keeps its depth but is invalid: an invalid sample must stay as it is.
        """
        valid = self.depth > 0
        valid[0] = False
        conf = torch.linspace(0.1, 1.0, self.depth.numel()).reshape(self.depth.shape)
        return DepthResult(self.depth.clone(), conf, valid, CAMERA)


def _frame(T_world_cam: Optional[np.ndarray]) -> Frame:
    return Frame(np.zeros((CAMERA.height, CAMERA.width, 3), np.uint8), 1, CAMERA, T_world_cam)


def test_ground_depth_meets_the_plane_and_only_below_the_horizon():
    """Each pixel's depth lands on z = 0; rays at or above the horizon get none."""
    T = _pose(20.0)                                  # the top rows look above the horizon
    plane = ground_depth(CAMERA, T, 50.0)
    rays = CAMERA.pixel_rays().astype(np.float64)
    points = (rays * plane[..., None]) @ T[:3, :3].T + T[:3, 3]
    hit = plane > 0
    assert 0.3 < hit.mean() < 1.0
    np.testing.assert_allclose(points[hit][:, 2], 0.0, atol=1e-4)
    assert not hit[0].any() and hit[-1].all()
    assert not ground_depth(CAMERA, T, 2.0)[plane > 2.0].any()


def test_samples_near_the_ground_are_put_just_below_it_the_others_keep_their_depth():
    """Points within the height band: on the plane, a hair below z = 0; the others: unchanged.

    A point at a share f of the plane's depth along its ray lies HEIGHT (1 - f) above z = 0,
    so a band of 0.075 m at HEIGHT 1.5 m keeps f within 5 %.
    """
    T = _pose()
    plane = ground_depth(CAMERA, T, 50.0)
    rng = np.random.default_rng(0)
    factor = np.where(rng.random(plane.shape) < 0.5, rng.uniform(0.96, 1.04, plane.shape),
                      rng.uniform(0.6, 0.85, plane.shape))       # noisy floor / an object
    estimate = (plane * factor).astype(np.float32)
    cfg = DepthConfig(ground_snap_height_m=0.05 * HEIGHT, max_depth=50.0)
    snap = GroundSnapSource(FixedDepth(estimate), cfg)
    out = snap.estimate(_frame(T), [])
    near = (plane > 0) & (np.abs(factor - 1.0) <= 0.05 + 1e-6)
    near[0] = False                                  # invalid there (FixedDepth)
    z_before = ((CAMERA.pixel_rays() * estimate[..., None]) @ T[:3, :3].T + T[:3, 3])[..., 2]
    far = ~near & (plane > 0)
    far[0] = False
    assert np.abs(z_before[near]).max() <= 0.075 + 1e-4 < np.abs(z_before[far]).min()
    depth = out.depth.numpy()
    np.testing.assert_allclose(depth[near], plane[near] * (1.0 + BEHIND), rtol=1e-6)
    np.testing.assert_array_equal(depth[~near], estimate[~near])
    assert snap.last_snapped == int(near.sum()) > 100
    z = ((CAMERA.pixel_rays() * depth[..., None]) @ T[:3, :3].T + T[:3, 3])[..., 2]
    assert (z[near] < 0).all() and (z[near] > -0.01).all()
    given = FixedDepth(estimate).estimate(_frame(T), [])
    assert torch.equal(out.valid, given.valid) and torch.equal(out.confidence, given.confidence)
    assert bool(((plane[0] > 0) & (np.abs(factor[0] - 1.0) <= 0.05)).any())   # row 0 tested
    # Without a pose, or with the camera on or under the plane, the estimate passes unchanged.
    np.testing.assert_array_equal(snap.estimate(_frame(None), []).depth.numpy(), estimate)
    below = T.copy()
    below[2, 3] = -0.2
    np.testing.assert_array_equal(snap.estimate(_frame(below), []).depth.numpy(), estimate)
    # A floor sample at max_depth stays within it once snapped (fusion drops what lies beyond).
    far = np.where(plane > 0, np.minimum(plane, 6.0), 0.0).astype(np.float32)
    capped = GroundSnapSource(FixedDepth(far), DepthConfig(ground_snap_height_m=0.1,
                                                           max_depth=6.0))
    assert float(capped.estimate(_frame(T), []).depth.max()) <= 6.0


def test_a_noisy_floor_fuses_into_the_voxels_below_z0_not_above():
    """The floor on a voxel boundary: snapped samples all end in the layer under it."""
    T = _pose(40.0)
    plane = ground_depth(CAMERA, T, 6.0)
    rng = np.random.default_rng(1)
    noisy = np.where(plane > 0, plane * rng.normal(1.0, 0.015, plane.shape), 0.0)
    noisy[0] = 0.0                                   # invalid in FixedDepth
    grid = VoxelGrid(origin=(-1.0, -3.0, -0.5), voxel_size=0.05, dims=(160, 120, 60),
                     frame_id='odom')
    layer = int(round(0.5 / 0.05))                 # the voxel layer [0, 0.05] above the floor

    def layers(depth: np.ndarray) -> np.ndarray:
        hits = cast_depth(grid, depth.astype(np.float32), CAMERA, T, max_depth=6.0).hits
        return hits.reshape(tuple(grid.dims)).sum((0, 1)).numpy()

    before = layers(noisy)
    cfg = DepthConfig(ground_snap_height_m=0.1, max_depth=6.0)
    after = layers(GroundSnapSource(FixedDepth(noisy), cfg).estimate(_frame(T), []).depth.numpy())
    assert before[layer] > 0.3 * before.sum()      # unsnapped, a third or more lands above
    assert after.sum() >= 0.99 * before.sum() and after[layer] == 0
    assert after[layer - 1] >= 0.99 * after.sum()


@pytest.mark.parametrize('source, wrapped', [('network', True), ('plane_sweep', True),
                                             ('auto', True), ('topic', False)])
def test_pipeline_wraps_every_source_but_topic(source, wrapped):
    """Estimated sources get the snap under the foreground overlay, over the consistency check."""
    from l3rocc_core.depth.auto import AutoDepth
    from l3rocc_core.depth.consistency import FilteredDepthSource
    from l3rocc_core.depth.foreground import ForegroundDepthSource
    from l3rocc_core.pipeline import OccupancyPipeline
    cfg = PipelineConfig().with_values({'depth_source': source, 'ground_snap_height_m': 0.1})
    stage = OccupancyPipeline(cfg).depth_estimator
    if wrapped:
        # foreground blobs are placed after the snap: an upright blob's lowest 0.1 m stays
        assert isinstance(stage, ForegroundDepthSource)
        assert isinstance(stage.source, GroundSnapSource)
        assert isinstance(stage.source.source, (FilteredDepthSource, AutoDepth))
    found = False
    while stage is not None:
        found |= isinstance(stage, GroundSnapSource)
        stage = getattr(stage, 'source', None)
    assert found == wrapped
    off = OccupancyPipeline(PipelineConfig().with_values(
        {'ground_snap_height_m': 0.0})).depth_estimator
    while off is not None:
        assert not isinstance(off, GroundSnapSource)
        off = getattr(off, 'source', None)
