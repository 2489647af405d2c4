"""The benchmark report (:mod:`l3rocc_bench.report`): tables, plots, strict JSON."""

import json
from pathlib import Path

import pytest

from l3rocc_bench import report, speed


def test_report_renders_tables_and_plots(tmp_path: Path) -> None:
    run = {'sequence': 'tum_fr1_xyz', 'kind': 'tum', 'camera': '', 'refiner': 'none',
           'refiner_used': 'geometry', 'device': 'cpu', 'frames': 3,
           'occupancy': {'iou': 0.5, 'window_iou': 0.4, 'precision': 0.6, 'recall': 0.7,
                         'flicker': 0.01, 'static_iou': None},
           'depth': {'abs_rel': 0.1, 'delta_1_25': 0.9, 'completeness': 0.5},
           'timing': {'stages_ms': {'depth': 10.0, 'fusion': 5.0, 'total': 16.0},
                      'fps_without_hooks': 5.0},
           'per_frame': [{'stamp': i * 10 ** 8, 'iou': 0.5} for i in range(3)]}
    net = dict(run, refiner='network', refiner_used='network', grid_dims=[40, 20, 10],
               params_file='tum.yaml',
               timing={'stages_ms': {'depth': 20.0, 'refiner': 25.0, 'total': 50.0}})
    node = {'refiner': 'network', 'device': 'cpu', 'rate_hz': 20.0,
            'command': ['python', '-m', 'l3rocc_ros.node', '--params-file', '/x/tum.yaml'],
            'stage_ms': {'refiner': 10.0, 'total': 40.0}}
    results = {'meta': {'command': 'l3rocc bench --quick'},
               'accuracy': {'runs': [run, net], 'means': {'geometry': report.mean_figures([run])},
                            'network_pending': 'no checkpoint'},
               'speed': {'targets': speed.speed_targets(None, None, None),
                         'node_network': node,
                         'window_pass': {'torch': '2.13.0', 'rows': [
                             {'sequence': 'tum_fr1_xyz', 'device': 'cpu', 'grid': [64, 40, 30],
                              'voxels': 76800, 'eager_ms': 120.0, 'compiled_ms': 80.0,
                              'speedup': 1.5, 'compile_s': 9.5, 'compile_status': 'compiled',
                              'max_abs_diff_1e6': 0.3},
                             {'sequence': 'big', 'grid': [9, 9, 9], 'error': 'RuntimeError: x'}]}},
               'octomap': {'resolution': '8x6', 'points_per_frame': 48, 'voxel_size': 0.05,
                           'max_range_m': 4.0, 'device': 'cpu', 'timed_frames': 2,
                           'ours': {'default': {
                               'ms_per_frame': 1.0, 'points_per_s': 4.8e4,
                               'grid_dims': [4, 4, 4]}},
                           'octomap': {'ms_per_frame': 2.0, 'points_per_s': 2.4e4},
                           'octomap_discretize': {'ms_per_frame': 1.5,
                                                  'points_per_s': 3.2e4},
                           'ratio': {'default': 2.0}, 'ratio_discretize': {'default': 1.5},
                           'load_average': [[1.5, 1.0, 0.5], [1.75, 1.1, 0.5]],
                           'cpu_cores': 2},
               'soak': {'series': [{'t_s': 10.0, 'sent_fps': 30.0, 'ingest_fps': 29.0,
                                    'processed_fps': 2.0, 'published_hz': 2.0,
                                    'latency_p50_ms': 200.0, 'latency_p95_ms': float('nan'),
                                    'rss_mb': 500.0, 'threads': 20, 'node_cpu_cores': 1.5,
                                    'cpu_ms_per_frame': 750.0, 'load1': 1.8,
                                    'other_cores': 0.4, 'steal_cores': 0.0, 'probe_ms': 7.5,
                                    'stage_ms': {'depth': 60.0, 'refiner': 31.0}}],
                        'latency_ms': {}, 'totals': {}}}
    plots = report.write_report(results, str(tmp_path))
    md = (tmp_path / 'results.md').read_text()
    assert 'fusion vs OctoMap: 2.0x' in md and 'pending (no checkpoint)' in md
    assert 'fusion vs OctoMap discretize: 1.5x' in md
    assert '1.50/1.00/0.50 -> 1.75/1.10/0.50 on 2 cores' in md
    assert '| tum_fr1_xyz |' in md and 'n/a' in md
    # the refiner against the frame budget: 25 of 50 ms per frame, 100 ms frame period
    assert '| replay tum_fr1_xyz | cpu | 8 k | 25.0 | 50 % | 100.0 | 25 % |' in md
    assert '| node (tum.yaml) | cpu | 8 k | 10.0 | 25 % | 50.0 | 20 % |' in md
    # the soak row says where the time went
    assert ('| depth ms | refiner ms | node CPU cores | CPU ms / frame | other cores | '
            'steal cores | load 1 min | probe ms |') in md
    assert '| 60 | 31 | 1.50 | 750 | 0.40 | 0.00 | 1.80 | 7.50 |' in md
    assert ('| tum_fr1_xyz | cpu | 64x40x30 | 77 k | 120 | 80 | 1.50x | 9.5 (compiled) | '
            '0.30 |') in md
    assert '| big |  | 9x9x9 | RuntimeError: x |' in md
    assert report.frame_period_ms([{'stamp': 0}, {'stamp': 4 * 10 ** 7},
                                   {'stamp': 10 ** 8}]) == pytest.approx(50.0)
    assert report.frame_period_ms([{'stamp': 5}]) is None
    for name in plots.values():
        assert (tmp_path / name).stat().st_size > 1000
    assert set(plots) == {'iou', 'tum', 'stages', 'soak'}
    loaded = json.loads((tmp_path / 'results.json').read_text())   # strict: no NaN
    assert loaded['soak']['series'][0]['latency_p95_ms'] is None
