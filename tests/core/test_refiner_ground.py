"""``network_align_ground``: the network sees the ground layer in the phase it was trained in.

The encoder pairs z layers, so a grid whose ground layer (just below z = 0) has an even index
must look to the network like the same grid with one unobserved layer added below it. Both
passes (window, newest) are checked against that grid run without alignment, layer for layer.
"""

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import PipelineConfig
from l3rocc_core.frame import Frame
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.pipeline import OccupancyPipeline
from l3rocc_core.refiner.inference import ground_pad

pytestmark = pytest.mark.usefixtures('one_thread')

CAM = PinholeCamera(96, 72, 80.0, 80.0, 47.5, 35.5)


@pytest.mark.parametrize('origin_z, pad', [
    (-0.1, 0),      # the training grids: the ground in layer 1
    (-0.125, 1),    # the ground in layer 2 (the independent set's grids)
    (-0.075, 0), (-0.175, 0), (-0.225, 1), (-0.05, 1), (0.2, 0),
])
def test_ground_pad_makes_the_ground_layer_odd(origin_z: float, pad: int) -> None:
    grid = VoxelGrid.from_bounds([0.0, 0.0, origin_z], [1.0, 1.0, origin_z + 1.0], 0.05)
    assert ground_pad(grid) == pad
    k0 = int(np.floor((-1e-6 - origin_z) / 0.05)) + pad
    assert k0 % 2 == 1


def test_a_grid_far_from_the_ground_is_left_as_it_is() -> None:
    # The ground's layer would be 58 (even), but the 20-layer grid is nowhere near it.
    grid = VoxelGrid.from_bounds([0.0, 0.0, -2.95], [1.0, 1.0, -1.95], 0.05)
    assert ground_pad(grid) == 0


def _floor_frames(n: int):
    """Frames of a camera 1.2 m up, looking 40 degrees down at the floor z = 0 (exact depth)."""
    pitch = np.radians(40.0)
    z_cam = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])
    x_cam = np.array([0.0, -1.0, 0.0])
    out = []
    for k in range(n):
        T = np.eye(4)
        T[:3, :3] = np.stack([x_cam, np.cross(z_cam, x_cam), z_cam], 1)
        T[:3, 3] = [0.02 * k, 0.0, 1.2]
        rays = CAM.pixel_rays().astype(np.float64) @ T[:3, :3].T
        depth = np.where(rays[..., 2] < 0, -1.2 / np.minimum(rays[..., 2], -1e-9), 0.0)
        depth = torch.from_numpy(np.where(depth < 4.0, depth, 0.0).astype(np.float32))
        image = np.zeros((CAM.height, CAM.width, 3), np.uint8)
        out.append((Frame(image, (k + 1) * 33_333_333, CAM, T), depth))
    return out


def _run(origin_z: float, align: bool, update: str):
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'grid_min': [0.0, -1.2, origin_z], 'grid_max': [3.2, 1.2, 0.875],
        'window_size': 4, 'refiner': 'network', 'network_update': update, 'device': 'cpu',
        'network_align_ground': align, 'occupancy_hysteresis': 0.0, 'max_depth': 4.0}))
    return pipe, [pipe.push_depth(frame, depth) for frame, depth in _floor_frames(6)]


@pytest.mark.parametrize('update', ['window', 'newest'])
def test_aligned_grid_equals_the_grid_one_layer_lower(update: str) -> None:
    pipe, aligned = _run(-0.125, True, update)        # ground layer 2: one layer added
    assert ground_pad(pipe.grid) == 1
    _, lower = _run(-0.175, False, update)            # ground layer 3, one more layer below
    _, plain = _run(-0.125, False, update)
    for a, b, c in zip(aligned, lower, plain):
        assert a.prob.shape == c.prob.shape           # the output grid is the configured one
        # The layer below the configured grid is unobserved: its features are all 0, as the
        # added layer's are, so the two runs agree on every configured layer.
        np.testing.assert_allclose(a.prob, b.prob[..., 1:], atol=1e-5)
    # Without alignment the same evidence gives another answer on the floor.
    assert not np.allclose(aligned[-1].prob, plain[-1].prob, atol=1e-3)
