"""``l3rocc bench`` options and run (:mod:`l3rocc_bench.cli`)."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from l3rocc_bench.accuracy import network_available
from l3rocc_bench.cli import _network_targets, _refiners_of, parameter_overrides, STEPS
from l3rocc_bench.suite import DEFAULT_SET, QUICK_NETWORK_CASES, QUICK_SET


def test_quick_set_scores_the_network_on_one_sequence() -> None:
    both = ['none', 'network']
    assert len(QUICK_NETWORK_CASES) == 1
    quick = {c.name: _refiners_of(c, both, True) for c in QUICK_SET}
    assert [n for n, r in quick.items() if 'network' in r] == list(QUICK_NETWORK_CASES)
    assert all('none' in r for r in quick.values())
    assert all(_refiners_of(c, both, False) == both for c in DEFAULT_SET)
    assert _refiners_of(QUICK_SET[0], ['none'], True) == ['none']   # network pending


def test_network_target_groups_leave_out_static_cameras() -> None:
    def run(seq: str, kind: str, camera: str, refiner: str, iou: float) -> dict:
        return {'sequence': seq, 'kind': kind, 'camera': camera, 'refiner_used': refiner,
                'occupancy': {'iou': iou, 'window_iou': iou, 'flicker': 0.01},
                'depth': {}}

    runs = [run('a', 'synth', 'handheld', 'geometry', 0.2),
            run('a', 'synth', 'handheld', 'network', 0.28),
            run('s', 'synth', 'static', 'geometry', 0.0),
            run('s', 'synth', 'static', 'network', 0.0),
            run('t', 'tum', '', 'geometry', 0.4),
            run('t', 'tum', '', 'network', 0.44)]
    groups = _network_targets(runs)
    assert set(groups) == {'synthetic test split (moving cameras)', 'TUM fr1/xyz',
                           'all moving-camera sequences'}
    rows = {r['name']: r for r in groups['synthetic test split (moving cameras)']}
    assert rows['newest-slice IoU gain']['status'] == 'PASS'  # +8; +4 with the zeros in
    rows = {r['name']: r for r in groups['all moving-camera sequences']}
    assert rows['newest-slice IoU gain']['status'] == 'PASS'  # +6; +4 with the zeros in


def test_bench_set_overrides_are_checked_and_reach_the_network_check(tmp_path: Path) -> None:
    from l3rocc_core.config import PipelineConfig
    extra = parameter_overrides(['occupancy_hysteresis=0.2', f'checkpoint={tmp_path}/m.pt'])
    assert extra == {'occupancy_hysteresis': 0.2, 'checkpoint': f'{tmp_path}/m.pt'}
    assert f'no checkpoint at {tmp_path}/m.pt' == network_available(
        PipelineConfig().with_values(extra))
    assert network_available(PipelineConfig()) is None          # the bundled one
    for bad in (['no_such_parameter=1'], ['occupancy_hysteresis=abc'], ['refiner'],
                ['refiner=network'], ['device=cuda']):
        with pytest.raises(ValueError):
            parameter_overrides(bad)
    proc = subprocess.run([sys.executable, '-m', 'l3rocc_core.cli', 'bench', '--out',
                           str(tmp_path / 'b'), '--set', 'grid_min=oops'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'l3rocc bench: bad --set' in proc.stderr, proc.stderr
    assert not (tmp_path / 'b').exists()


def test_core_imports_the_benchmark_only_when_the_subcommand_runs() -> None:
    code = ('import sys; import l3rocc_core.cli, l3rocc_core.tools.bench; '
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'l3rocc_bench'))")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == '[]', proc.stdout + proc.stderr


def test_bench_writes_under_out_bench_by_default(tmp_path: Path, tum_dir: Path) -> None:
    """Results and cache land in ``out/bench/`` of the working folder, nothing beside it."""
    env = dict(os.environ, L3ROCC_TUM_DIR=str(tum_dir))
    proc = subprocess.run([sys.executable, '-m', 'l3rocc_core.cli', 'bench', '--quick',
                           '--sequences', 'tum_fr1_xyz', '--skip', *STEPS, '--no-progress'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ['out']
    bench = tmp_path / 'out' / 'bench'
    assert {p.name for p in bench.iterdir()} == {'results.json', 'results.md', 'cache'}
    assert (bench / 'cache' / 'tum_fr1_xyz' / 'sequence.mcap').is_file()
    assert json.loads((bench / 'results.json').read_text())['meta']['sequences'] == [
        'tum_fr1_xyz']
