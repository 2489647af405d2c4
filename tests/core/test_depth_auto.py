"""``depth_source: auto``: the plane sweep for a moving camera, the network for a still one.

The scene is the analytic floor of ``test_depth_foreground`` (ray-cast there, independently of
the code under test): a textured floor z = 0 seen by a camera 2 m up and 30 degrees down.
"""

from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import PipelineConfig
from l3rocc_core.depth.auto import AutoDepth
from l3rocc_core.depth.base import make_depth_source
from l3rocc_core.depth.plane_sweep import PlaneSweepDepth
from l3rocc_core.frame import Frame
from l3rocc_core.pipeline import OccupancyPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_depth_foreground import camera_pose, render  # noqa: E402

CAM = PinholeCamera(320, 240, 240.0, 240.0, 159.5, 119.5)
FAR_Y = 50.0          # the board of the rendered scene, moved out of view: the floor alone


def _pose(dy: float = 0.0) -> np.ndarray:
    T = camera_pose()
    T[1, 3] += dy
    return T


def _frame(n: int, T: np.ndarray) -> Frame:
    image, _, _ = render(FAR_Y, T, CAM)
    return Frame(image, n * 10**8, CAM, T)


def _config(**values):
    return PipelineConfig().with_values({'max_depth': 8.0, 'foreground_min_frames': 3,
                                         'depth_source': 'auto',
                                         **values}).depth


def test_a_moving_camera_gets_exactly_the_sweep_and_never_loads_the_network() -> None:
    cfg = _config()
    auto = make_depth_source(cfg, 'cpu')
    sweep = PlaneSweepDepth(cfg, 'cpu')
    assert isinstance(auto, AutoDepth) and auto.uses_sources and not auto.requires_sources
    frames = [_frame(n, _pose(0.06 * n)) for n in range(6)]
    assert auto.estimate(frames[0], []) is None          # no parallax yet: no depth
    for n in range(1, 6):
        got = auto.estimate(frames[n], frames[:n])
        want = sweep.estimate(frames[n], frames[:n])
        assert auto.active == 'plane_sweep'
        assert torch.equal(got.depth, want.depth) and torch.equal(got.valid, want.valid)
        assert got.valid.float().mean() > 0.3
    assert auto.network is None and auto.frames == {'plane_sweep': 6, 'network': 0}


def test_a_still_camera_gets_the_network_after_min_frames_and_the_sweep_when_it_moves() -> None:
    cfg = _config()
    auto = make_depth_source(cfg, 'cpu')
    T = _pose()
    _, true_depth, _ = render(FAR_Y, T, CAM.reduced(cfg.depth_downsample))
    chosen = []
    for n in range(6):
        result = auto.estimate(_frame(n, T), [])
        chosen.append(auto.active)
        assert (result is None) == (auto.active == 'plane_sweep')
    # Held for foreground_min_frames (3) earlier frames from the fourth frame on.
    assert chosen == ['plane_sweep'] * 3 + ['network'] * 3
    depth = result.depth.numpy()
    valid = result.valid.numpy() & (true_depth > 0) & (true_depth < cfg.max_depth)
    assert valid.mean() > 0.5
    rel = np.abs(depth[valid] / true_depth[valid] - 1.0)
    assert np.median(rel) < 0.15, np.median(rel)        # the floor, from the ground plane
    # A step sideways: moving again, so the sweep (with the earlier frame as its source).
    moved = _frame(6, _pose(0.1))
    assert auto.estimate(moved, [_frame(5, T)]) is not None and auto.active == 'plane_sweep'
    auto.reset()
    assert auto.estimate(_frame(7, _pose(0.1)), []) is None and not auto.still


@pytest.mark.parametrize('source', ['auto', 'plane_sweep'])
def test_pipeline_fixed_camera_sees_the_floor_with_auto_only(source: str) -> None:
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'grid_min': [1.0, -2.0, -0.2], 'grid_max': [5.0, 2.0, 1.0], 'window_size': 8,
        'refiner': 'none', 'device': 'cpu', 'max_depth': 8.0, 'depth_source': source,
        'foreground_min_frames': 3}))
    T = _pose()
    assert pipe.depth_active == source
    for n in range(8):
        out = pipe.push(_frame(n, T))
    idx, _ = out.occupied()
    assert pipe.depth_active == {'auto': 'auto: network', 'plane_sweep': 'plane_sweep'}[source]
    if source == 'plane_sweep':
        assert len(idx) == 0          # no parallax, nothing moves: no depth at all
        return
    centres = pipe.grid.flat_to_world(idx)
    near = centres[centres[:, 0] < 3.5]      # farther, the floor's texture fades to a blur
    assert len(near) > 1000
    # The floor z = 0 lies in the voxel layer [-0.05, 0]; depth error moves it by a layer.
    assert np.mean(np.abs(near[:, 2]) <= 0.1) > 0.9, np.percentile(near[:, 2], [5, 50, 95])


def test_a_network_that_cannot_load_leaves_the_sweep_with_one_warning(caplog) -> None:
    from l3rocc_core.depth.network import NetworkDepth
    cfg = _config()
    auto = AutoDepth(PlaneSweepDepth(cfg, 'cpu'),
                     lambda: NetworkDepth(cfg, 'cpu', checkpoint='/nonexistent/depth.pt'), cfg)
    T = _pose()
    with caplog.at_level('WARNING', logger='l3rocc_core.depth.auto'):
        results = [auto.estimate(_frame(n, T), []) for n in range(6)]
    assert results == [None] * 6 and auto.active == 'plane_sweep' and auto.network is None
    warnings = [r for r in caplog.records if 'cannot be loaded' in r.getMessage()]
    assert len(warnings) == 1 and 'depth.pt' in warnings[0].getMessage()


@pytest.mark.parametrize('scope', ['multi_view', 'all'])
def test_the_consistency_check_covers_the_sweep_and_with_scope_all_the_network_too(
        scope: str) -> None:
    from l3rocc_core.depth.consistency import FilteredDepthSource
    from l3rocc_core.depth.foreground import ForegroundDepthSource
    from l3rocc_core.depth.ground import GroundSnapSource
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'refiner': 'none', 'device': 'cpu', 'depth_consistency_scope': scope,
        'depth_source': 'auto',
        'depth_consistency_views': 1}))
    stage = pipe.depth_estimator
    assert isinstance(stage, ForegroundDepthSource)
    assert isinstance(stage.source, GroundSnapSource)   # ground_snap_height_m, outside it
    inner = stage.source.source
    if scope == 'multi_view':
        auto = inner                               # the network's maps are not checked
        assert isinstance(auto, AutoDepth)
    else:
        assert isinstance(inner, FilteredDepthSource)            # every map is checked
        assert inner.consistency.active
        auto = inner.source
        assert isinstance(auto, AutoDepth)
    sweep = auto.sweep
    assert isinstance(sweep, FilteredDepthSource) == (scope == 'multi_view')
    if scope == 'multi_view':
        assert sweep.consistency.active and isinstance(sweep.source, PlaneSweepDepth)


def test_a_fixed_mount_gets_the_network_from_its_first_frame() -> None:
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'refiner': 'none', 'device': 'cpu', 'max_depth': 8.0, 'pose_source': 'static',
        'depth_source': 'auto',
        'grid_min': [1.0, -2.0, -0.2], 'grid_max': [5.0, 2.0, 1.0]}))
    out = pipe.push(_frame(0, _pose()))
    assert pipe.depth_active == 'auto: network'
    assert len(out.occupied()[0]) > 200         # the floor, from the very first frame
