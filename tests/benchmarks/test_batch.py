"""The batch step of ``l3rocc bench`` (:mod:`l3rocc_bench.batch`): figures from measured times."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from l3rocc_bench.batch import (batch_cases, batch_targets, summarise, worker_growth,
                                worker_peaks)


def _run(mode: str, wall: float, peaks: dict, error: str = '') -> dict:
    r = {'mode': mode, 'wall_s': wall, 'batch_wall_s': wall - 1.0, 'worker_peak_rss_mb': peaks,
         'worker_growth_mb': {pid: p / 10.0 for pid, p in peaks.items()}}
    if error:
        r['error'] = error
    return r


def test_medians_ratios_and_overhead_come_from_the_runs() -> None:
    runs = {'sequential': [_run('sequential', 40.0, {'1': 800.0}),
                           _run('sequential', 50.0, {'2': 900.0}),
                           _run('sequential', 44.0, {'3': 850.0})],
            'pool': [_run('pool', 20.0, {'4': 700.0, '5': 650.0}),
                     _run('pool', 30.0, {'6': 720.0, '7': 600.0}),
                     _run('pool', 1.0, {'8': 9999.0}, error='2 failed')],   # not counted
            'ray': [_run('ray', 27.0, {'9': 1000.0, '10': 990.0})]}
    s = summarise(runs)
    assert s['wall_s'] == {'sequential': 44.0, 'pool': 25.0, 'ray': 27.0}
    assert s['batch_wall_s'] == {'sequential': 43.0, 'pool': 24.0, 'ray': 26.0}
    assert s['ratio'] == {'pool': pytest.approx(25.0 / 44.0), 'ray': pytest.approx(27.0 / 44.0)}
    assert s['ray_overhead_pct'] == pytest.approx(8.0)
    assert s['worker_peak_rss_mb']['pool'] == {'max': 720.0, 'median': 675.0,
                                               'growth_max': 72.0, 'workers': 2}
    rows = {r['name']: r for r in batch_targets(dict(s, bags=8, not_run={}))}
    pool = rows['l3rocc batch, pool / one after another (wall time)']
    assert pool['measured'] == pytest.approx(25.0 / 44.0) and pool['status'] == 'PASS'
    ray = rows['l3rocc batch --ray / one after another (wall time)']
    assert ray['measured'] == pytest.approx(27.0 / 44.0) and ray['status'] == 'MISS'
    assert rows['Ray overhead against the pool']['status'] == 'PASS'
    rss = rows['peak RSS per batch worker (largest)']
    assert rss['measured'] == pytest.approx(1000.0 / 1024.0) and rss['status'] == 'PASS'


def test_the_target_compares_with_the_loop_of_commands_when_it_was_timed() -> None:
    runs = {'loop': [_run('loop', 80.0, {'0.0': 700.0, '0.1': 300.0})],
            'sequential': [_run('sequential', 50.0, {'1': 800.0})],
            'pool': [_run('pool', 30.0, {'2': 900.0})],
            'ray': [_run('ray', 33.0, {'3': 950.0})]}
    s = summarise(runs)
    assert s['baseline'] == 'loop'
    assert s['ratio'] == {'sequential': pytest.approx(50.0 / 80.0),
                          'pool': pytest.approx(30.0 / 80.0), 'ray': pytest.approx(33.0 / 80.0)}
    assert s['ratio_sequential'] == {'pool': pytest.approx(0.6), 'ray': pytest.approx(0.66)}
    rows = {r['name']: r for r in batch_targets(dict(s, bags=8, not_run={}))}
    pool = rows['l3rocc batch, pool / one after another (wall time)']
    assert pool['measured'] == pytest.approx(30.0 / 80.0) and pool['status'] == 'PASS'
    assert 'replay + eval per bag' in pool['note'] and '0.60x of 50.0 s' in pool['note']
    # The loop's processes are no batch workers: the memory row leaves them out.
    runs['loop'][0]['worker_peak_rss_mb']['0.0'] = 5000.0
    rows = {r['name']: r for r in batch_targets(dict(summarise(runs), bags=8, not_run={}))}
    assert rows['peak RSS per batch worker (largest)']['measured'] == pytest.approx(
        950.0 / 1024.0)


def test_ray_that_is_not_installed_is_a_row_that_says_so() -> None:
    s = summarise({'sequential': [_run('sequential', 10.0, {'1': 500.0})],
                   'pool': [_run('pool', 7.0, {'2': 400.0})]})
    why = 'ray not installed (pip install .[fleet])'
    rows = {r['name']: r for r in batch_targets(dict(s, bags=2, not_run={'ray': why}))}
    for name in ('l3rocc batch --ray / one after another (wall time)',
                 'Ray overhead against the pool'):
        assert rows[name]['status'] == 'n/a' and rows[name]['note'] == why
    assert rows['l3rocc batch, pool / one after another (wall time)']['status'] == 'MISS'
    rows = [{'pid': 7, 'peak_rss_mb': 300.0}, {'pid': 8, 'peak_rss_mb': 320.0},
            {'pid': 7, 'peak_rss_mb': 380.0}, {'pid': 7, 'peak_rss_mb': 350.0}, {'pid': 9}]
    assert worker_peaks(rows) == {'7': 380.0, '8': 320.0}
    assert worker_growth(rows) == {'7': 50.0}      # last task minus first; pid 8 ran one


@pytest.mark.slow
def test_bench_batch_step_times_the_loop_and_the_three_executors(tmp_path: Path,
                                                                 tum_dir: Path) -> None:
    """``l3rocc bench`` with only the batch step, on 2 bags of 4 frames: JSON, targets, table."""
    out, cache = tmp_path / 'b', tmp_path / 'cache'
    env = dict(os.environ, L3ROCC_TUM_DIR=str(tum_dir))
    proc = subprocess.run(
        [sys.executable, '-m', 'l3rocc_core.cli', 'bench', '--sequences', 'tum_fr1_xyz',
         '--skip', 'accuracy', 'replay', 'node', 'octomap', 'compile', '--batch-bags', '2',
         '--batch-frames', '4', '--out', str(out), '--cache', str(cache), '--no-progress',
         '--set', 'grid_min=[-1.2,-1.2,0.0]', 'grid_max=[1.2,1.2,1.2]', 'num_depth_planes=16'],
        env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    b = results['batch']
    assert b['bags'] == 2 and b['frames'] == 4 and b['resolution'] == '160x120'
    assert b['not_run'] == {} and b['rounds'] == 1
    assert b['parameters']['grid_max'] == '[1.2,1.2,1.2]'
    (loop,) = b['runs']['loop']
    assert 'error' not in loop and loop['ok'] == 2 and loop['failed'] == 0, loop
    assert len(loop['worker_peak_rss_mb']) == 4           # replay and eval of each bag
    assert loop['command'].startswith('l3rocc replay ') and '; l3rocc eval ' in loop['command']
    for i in range(2):   # the loop's own outputs: a scored replay per bag
        metrics = json.loads((cache / 'runs' / 'batch' / 'loop' / f'{i:03d}' /
                              'metrics.json').read_text())
        assert 0.0 <= metrics['iou'] <= 1.0
    for mode in ('sequential', 'pool', 'ray'):
        (run,) = b['runs'][mode]
        assert 'error' not in run and run['ok'] == 2 and run['failed'] == 0, run
        assert b['wall_s'][mode] == pytest.approx(run['wall_s'], abs=1e-6)
        assert run['wall_s'] > run['batch_wall_s'] > 0    # the command holds the batch
        summary = json.loads((cache / 'runs' / 'batch' / mode / 'summary.json').read_text())
        assert summary['executor'] == ('ray' if mode == 'ray' else 'pool')
        peaks = run['worker_peak_rss_mb']
        assert set(peaks) == {str(r['pid']) for r in summary['rows']}
        assert max(peaks.values()) == max(r['peak_rss_mb'] for r in summary['rows']) > 100
        assert set(run['worker_growth_mb']) <= set(peaks)
    assert b['runs']['sequential'][0]['workers'] == 1
    assert b['runs']['pool'][0]['workers'] == b['cpu_cores']
    wall = b['wall_s']
    assert b['baseline'] == 'loop'
    for mode in ('sequential', 'pool', 'ray'):
        assert b['ratio'][mode] == pytest.approx(wall[mode] / wall['loop'], rel=1e-5)
    assert b['ratio_sequential']['pool'] == pytest.approx(wall['pool'] / wall['sequential'],
                                                          rel=1e-5)
    assert b['ray_overhead_pct'] == pytest.approx((wall['ray'] / wall['pool'] - 1) * 100,
                                                  rel=1e-5)
    targets = {t['name']: t for t in results['speed']['targets']}
    md = (out / 'results.md').read_text()
    for name, value, limit in (
            ('l3rocc batch, pool / one after another (wall time)', b['ratio']['pool'], 0.6),
            ('l3rocc batch --ray / one after another (wall time)', b['ratio']['ray'], 0.6),
            ('Ray overhead against the pool', b['ray_overhead_pct'], 10.0)):
        t = targets[name]
        assert t['measured'] == pytest.approx(value, rel=1e-5)
        assert t['status'] == ('PASS' if value <= limit else 'MISS')
        assert f'| {name} | {t["target"]} | {value:.2f} {t["unit"]} | {t["status"]} |' in md
    assert '## Batch (`l3rocc batch`)' in md
    for mode in ('loop', 'sequential', 'pool', 'ray'):
        assert f'\n| {mode} | ' in md
    assert f'{b["ratio"]["pool"]:.2f}x' in md and 'peak RSS per worker' in md
    assert 'growth first -> last task MiB' in md
    # The cases of the step are the suite's cached synthetic sequences, gt.npz beside each bag.
    for case in batch_cases(2, 4):
        assert (cache / case.folder / 'sequence.mcap').is_file()
        assert (cache / case.folder / 'gt.npz').is_file()
