"""``network_compile``: the window pass through ``torch.compile``, and its eager fallback.

Real inductor compiles (a C++ compiler is on every machine the suite runs on), each with a
fresh cache (the ``inductor_cache`` fixture) so that nothing compiled earlier is reused.
"""

import logging
import subprocess
import sys

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from l3rocc_core.config import PipelineConfig
from l3rocc_core.pipeline import OccupancyPipeline
from l3rocc_core.refiner.inference import NetworkRefiner
from l3rocc_core.refiner.network import (_replicate_pad_cat, NetConfig, replicate_pad,
                                         TemporalOccupancyNet)

pytestmark = pytest.mark.usefixtures('one_thread')
CPU = torch.device('cpu')


@pytest.mark.parametrize('pad', [(1,) * 6, (0, 1, 0, 0, 0, 1), (2, 0, 0, 3, 1, 0),
                                 (0, 0, 1, 1, 2, 0)])
def test_replicate_pad_by_concatenation_equals_f_pad(pad) -> None:
    x = torch.randn(2, 3, 5, 4, 3)
    expected = F.pad(x, pad, mode='replicate')
    assert torch.equal(_replicate_pad_cat(x, pad), expected)
    assert torch.equal(replicate_pad(x, pad), expected)


def test_the_refiner_does_not_load_the_compiler_unless_asked() -> None:
    """Importing and running the network eagerly leaves torch._dynamo (and sympy) unloaded."""
    code = ('import sys, torch\n'
            'from l3rocc_core.refiner.inference import NetworkRefiner\n'
            'from l3rocc_core.refiner.network import TemporalOccupancyNet\n'
            'r = NetworkRefiner(TemporalOccupancyNet(), torch.device("cpu"), update="window")\n'
            'z = torch.zeros(3, 5, 7, 6, 5)\n'
            'r.refine(z, z[:, 0], z[:, 0].bool())\n'
            'print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == '[]', out.stdout + out.stderr


def _window(dims, t: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn((t, 5) + tuple(dims), generator=g)
    observed = torch.rand((t,) + tuple(dims), generator=g) > 0.3
    return features, features[:, 0], observed


def _count_calls(refiner: NetworkRefiner) -> list:
    """Record the window length of every call of the refiner's compiled graph."""
    calls, compiled = [], refiner._compiled

    def counted(x, **kw):
        calls.append(x.shape[1])
        return compiled(x, **kw)

    refiner._compiled = counted
    return calls


@pytest.mark.slow
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
    # compiled when the pipeline was built, on an empty window of its size and grid
    assert refiner.compile_window == 4 and refiner.compile_status == 'compiled'
    calls = _count_calls(refiner)
    eager = NetworkRefiner(refiner.model, refiner.device, update='window')
    assert eager.compile_status == 'off' and refiner.device.type == device
    # real windows reuse the warm-up's graph: no compiling on the first frame
    with torch._dynamo.config.patch(error_on_recompile=True):
        for t in (4, 3):  # a full window (compiled) and a stream's first frames (eager)
            window = [a.to(device) for a in _window(dims, t)]
            assert torch.allclose(refiner.refine(*window), eager.refine(*window), atol=1e-5)
    assert calls == [4] and refiner.compile_status == 'compiled'

    # an error of a graph that has run before is an error, not a compiler failure
    def broken(x, **kw):
        raise RuntimeError('stand-in for a device error inside the compiled graph')

    refiner._compiled = broken
    with pytest.raises(RuntimeError, match='stand-in'):
        refiner.refine(*[a.to(device) for a in _window(dims, 4)])
    assert refiner.compile_status == 'compiled' and refiner.compile_window == 4

    # in newest mode (the CPU default) the option has no effect, and says so
    newest = NetworkRefiner(refiner.model, refiner.device, update='newest', compile_window=4)
    assert newest.compile_window == 0 and newest.warm_up(dims) == 0.0
    assert newest.compile_status == 'ignored: network_update is newest, not window'


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.usefixtures('inductor_cache')
@pytest.mark.skipif(not hasattr(torch._dynamo.config, 'fail_on_recompile_limit_hit'),
                    reason='this torch has no fail_on_recompile_limit_hit')
def test_past_the_recompile_limit_the_network_runs_eagerly() -> None:
    """A new grid past dynamo's recompile limit is a clear failure, not a silent fallback."""
    torch.manual_seed(0)
    net = TemporalOccupancyNet(NetConfig(width=8, heads=2)).eval()
    refiner = NetworkRefiner(net, CPU, update='window', compile_window=2)
    eager = NetworkRefiner(net, CPU, update='window')
    with torch._dynamo.config.patch(recompile_limit=1):
        assert refiner.warm_up((5, 4, 3)) > 0 and refiner.compile_status == 'compiled'
        window = _window((6, 4, 3), 2)     # another grid: a second graph, over the limit
        out = refiner.refine(*window)
    assert refiner.compile_status.startswith('failed: ') and 'ecompile' in refiner.compile_status
    assert torch.equal(out, eager.refine(*window))
