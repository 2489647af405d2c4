"""``network_compile``: the window pass through ``torch.compile``, and its eager fallback.

Real inductor compiles (a C++ compiler is on every machine the suite runs on); the cache goes
to a temporary folder so that nothing compiled by an earlier run is reused.
"""

import logging

import pytest
import torch
import torch.nn.functional as F

from l3rocc_core.config import PipelineConfig
from l3rocc_core.pipeline import OccupancyPipeline
from l3rocc_core.refiner.network import (_replicate_pad_cat, NetConfig, NetworkRefiner,
                                         replicate_pad, TemporalOccupancyNet)

pytestmark = pytest.mark.usefixtures('one_thread')
CPU = torch.device('cpu')


@pytest.fixture
def inductor_cache(tmp_path, monkeypatch):
    """Give the test a fresh, private inductor cache and no compiled graphs in this process."""
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('pad', [(1,) * 6, (0, 1, 0, 0, 0, 1), (2, 0, 0, 3, 1, 0),
                                 (0, 0, 1, 1, 2, 0)])
def test_replicate_pad_by_concatenation_equals_f_pad(pad) -> None:
    x = torch.randn(2, 3, 5, 4, 3)
    expected = F.pad(x, pad, mode='replicate')
    assert torch.equal(_replicate_pad_cat(x, pad), expected)
    assert torch.equal(replicate_pad(x, pad), expected)


def _window(dims, t: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn((t, 5) + tuple(dims), generator=g)
    observed = torch.rand((t,) + tuple(dims), generator=g) > 0.3
    return features, features[:, 0], observed


@pytest.mark.usefixtures('inductor_cache')
def test_network_compile_compiles_full_windows_when_the_pipeline_starts(device: str) -> None:
    config = PipelineConfig().with_values({
        'grid_min': [-0.3, -0.3, 0.0], 'grid_max': [0.15, 0.2, 0.3], 'window_size': 4,
        'refiner': 'network', 'network_update': 'window', 'network_compile': True,
        'device': device})
    pipe = OccupancyPipeline(config)
    refiner = pipe.refiner
    dims = pipe.base_grid.dims
    assert dims == (9, 10, 6)  # odd sizes: the network pads them inside
    # warmed up on an empty window of the configured size and grid
    assert refiner.compile_window == 4 and refiner.compile_status == 'compiled'
    eager = NetworkRefiner(refiner.model, refiner.device, update='window')
    assert eager.compile_status == 'off' and refiner.device.type == device
    for t in (4, 3):  # a full window (compiled) and a stream's first frames (eager)
        window = [a.to(device) for a in _window(dims, t)]
        assert torch.allclose(refiner.refine(*window), eager.refine(*window), atol=1e-5)
    assert refiner.compile_status == 'compiled' and refiner._compiled is not None

    # in newest mode (the CPU default) the option has no effect
    newest = NetworkRefiner(refiner.model, refiner.device, update='newest', compile_window=4)
    assert newest.compile_window == 0 and newest.compile_status == 'off'
    assert newest.warm_up(dims) == 0.0


@pytest.mark.usefixtures('inductor_cache')
def test_a_failed_compile_runs_eagerly_with_a_warning(caplog) -> None:
    torch.manual_seed(0)
    net = TemporalOccupancyNet(NetConfig(width=8, heads=2)).eval()
    refiner = NetworkRefiner(net, CPU, update='window', compile_window=3)
    eager = NetworkRefiner(net, CPU, update='window')
    window = _window((7, 5, 4), 3)
    # no working C++ compiler, as on a robot without build tools
    with torch._inductor.config.patch({'cpp.cxx': (None, '/bin/false')}), \
            caplog.at_level(logging.WARNING, logger='l3rocc_core'):
        out = refiner.refine(*window)
    assert refiner.compile_status.startswith('failed: ')
    assert refiner.compile_window == 0  # not tried again
    assert 'network_compile: torch.compile failed' in caplog.text
    assert torch.equal(out, eager.refine(*window))
