"""``network_keep_evidence``: the network may not contradict strong evidence of measured depth.

The scenes are analytic: a floor seen with exact depth (``test_refiner_ground``).
"""

from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from l3rocc_core.config import PipelineConfig
from l3rocc_core.pipeline import OccupancyPipeline
from l3rocc_core.refiner.inference import load_refiner, NetworkRefiner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_refiner_ground import _floor_frames  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@pytest.mark.parametrize('mode, measured, applied', [
    ('on', False, True), ('on', True, True), ('auto', True, True), ('auto', False, False),
    ('off', True, False)])
def test_strong_hits_keep_their_floor_and_strong_free_space_its_ceiling(
        mode: str, measured: bool, applied: bool) -> None:
    refiner = load_refiner(PipelineConfig().refiner, 'cpu')
    refiner.keep_evidence(mode, 1.7, -0.8)
    refiner.set_measured_depth(measured)
    prob = torch.tensor([0.2, 0.9, 0.6, 0.3, 0.95, 0.1]).view(6, 1, 1, 1)
    logodds = torch.tensor([2.0, -1.0, 0.5, 3.4, 2.0, -1.0]).view(6, 1, 1, 1)
    observed = torch.tensor([True, True, True, False, True, True]).view(6, 1, 1, 1)
    got = refiner.keep_hits(prob, logodds, observed).flatten().tolist()
    # strong hit: raised to geometry; strong free: lowered to it; weak evidence and unobserved
    # voxels: the network's; the network above a strong hit's (below a free voxel's) stays
    want = [_sigmoid(2.0), _sigmoid(-1.0), 0.6, 0.3, 0.95, 0.1] if applied else (
        prob.flatten().tolist())
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match='auto, on or off'):
        refiner.keep_evidence('sometimes', 1.7, -0.8)


def _newest(pipe: OccupancyPipeline, occ) -> tuple:
    logodds, observed = pipe.fusion.slots(pipe.fusion.slot_order()[-1:])
    return occ.prob[-1], logodds[0].numpy(), observed[0].numpy()


@pytest.mark.parametrize('measured', [True, False])
def test_pipeline_keeps_measured_evidence_only(measured: bool) -> None:
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'grid_min': [0.0, -1.2, -0.1], 'grid_max': [3.2, 1.2, 0.9], 'window_size': 4,
        'refiner': 'network', 'network_update': 'window', 'device': 'cpu',
        'occupancy_hysteresis': 0.0, 'max_depth': 4.0}))
    assert isinstance(pipe.refiner, NetworkRefiner) and pipe.refiner.keep_mode == 'auto'
    for frame, depth in _floor_frames(5):
        occ = pipe.push_depth(frame, depth, measured=measured)
    assert pipe.refiner.measured_depth == measured
    prob, logodds, observed = _newest(pipe, occ)
    prob = prob.reshape(logodds.shape)
    hit = observed & (logodds >= 2 * 0.85)
    free = observed & (logodds <= 2 * -0.4)
    assert hit.sum() > 100 and free.sum() > 100
    below = prob[hit] < _sigmoid_np(logodds[hit]) - 1e-5
    above = prob[free] > _sigmoid_np(logodds[free]) + 1e-5
    if measured:
        assert not below.any() and not above.any()
    else:
        # The rule matters here: the network alone contradicts some strong evidence.
        assert below.any() or above.any()


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_plane_sweep_is_estimated_and_topic_measured() -> None:
    for source, measured in (('plane_sweep', False), ('topic', True)):
        pipe = OccupancyPipeline(PipelineConfig().with_values({
            'grid_min': [0.0, -1.2, -0.1], 'grid_max': [3.2, 1.2, 0.9], 'window_size': 4,
            'refiner': 'network', 'device': 'cpu', 'depth_source': source, 'max_depth': 4.0}))
        frame, depth = _floor_frames(1)[0]
        pipe.refiner.set_measured_depth(not measured)
        frame.depth = depth.numpy() if source == 'topic' else None
        pipe.push(frame)
        assert pipe.refiner.measured_depth == measured
