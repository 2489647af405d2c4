"""Speed runs and targets of the benchmark (:mod:`l3rocc_bench.speed`); no timing asserted."""

import json
from pathlib import Path

import pytest

from l3rocc_bench import speed


def test_targets_pass_miss_and_missing() -> None:
    node = {'ingest_fps': 20.0, 'sent_fps': 30.0, 'publish_hz': 1.0,
            'latency_ms': {'p50': 100.0, 'p95': 400.0}, 'peak_rss_mb': 3000.0}
    rows = {r['name']: r for r in speed.speed_targets(None, node, {'ratio': {'default': 25.0}})}
    assert rows['frames ingested (node)']['status'] == 'PASS'
    assert rows['occupancy published (node)']['status'] == 'MISS'
    assert rows['latency stamp -> publish p95 (node)']['status'] == 'PASS'
    assert rows['peak RSS (node)']['status'] == 'MISS'
    assert rows['l3rocc replay 640x480 10 fps bag']['status'] == 'n/a'
    assert rows['fusion vs OctoMap (points/s)']['status'] == 'PASS'
    net = {r['name']: r for r in speed.network_targets(
        {'iou': 0.4, 'window_iou': 0.3, 'flicker': 0.1, 'static_iou': 0.5},
        {'iou': 0.47, 'window_iou': 0.32, 'flicker': 0.05, 'static_iou': 0.49})}
    assert net['newest-slice IoU gain']['status'] == 'PASS'
    assert net['window IoU gain']['status'] == 'MISS'
    assert net['flicker ratio network / geometry']['status'] == 'PASS'
    assert net['static-voxel IoU change']['status'] == 'MISS'


def test_replay_speed_passes_the_overrides(tiny_case, tmp_path: Path) -> None:
    extra = {'working_width': 96, 'num_depth_planes': 16, 'occupancy_hysteresis': 0.3}
    out = speed.replay_speed(tiny_case, str(tmp_path / 'r'), 'none', 'cpu', extra=extra)
    assert out['rc'] == 0 and 'error' not in out, out
    assert 'occupancy_hysteresis=0.3' in out['command'] and 'refiner=none' in out['command']
    assert out['timing']['frames'] == 6 and out['peak_rss_mb'] > 0


@pytest.mark.slow
@pytest.mark.usefixtures('inductor_cache', 'one_thread')
def test_window_pass_timing_compiles_and_compares(tiny_case) -> None:
    extra = {'grid_min': [-0.3, -0.3, 0.0], 'grid_max': [0.15, 0.2, 0.3], 'window_size': 3}
    seen = []
    out = speed.window_pass_timing([tiny_case, tiny_case], 'cpu', repeats=2,
                                   progress=seen.append, extra=extra)
    assert len(out['rows']) == 1 and len(seen) == 1   # one row per grid
    row = out['rows'][0]
    assert row['grid'] == [9, 10, 6] and row['voxels'] == 540 and row['window_size'] == 3
    assert row['compile_status'] == 'compiled' and row['compile_s'] > 0
    assert row['eager_ms'] > 0 and row['compiled_ms'] > 0 and row['max_abs_diff_1e6'] < 10.0
    assert row['speedup'] == pytest.approx(row['eager_ms'] / row['compiled_ms'])
    json.dumps(out, allow_nan=False)
