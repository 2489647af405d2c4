"""Speed runs and their targets (measured and reported, never asserted).

- :func:`replay_speed`: ``l3rocc replay`` itself, in a subprocess, on a 640x480 bag; its
  ``timing.json`` (``fps``, stage medians) and its peak RSS;
- :func:`node_bench`: ``python -m l3rocc_bench.node`` in a subprocess (the rest of the
  benchmark never imports rclpy) and its JSON;
- :func:`speed_targets` / :func:`network_targets`: the targets beside the measured values.
"""

from dataclasses import replace
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from l3rocc_bench.resources import load_average, run_monitored
from l3rocc_bench.suite import Prepared

#: The speed targets (2 CPU cores, 640x480 input, default grid).
TARGETS = {
    'ingest_fps': 15.0,          # frames ingested by the node, >=
    'publish_hz': 2.0,           # occupancy published, >=
    'latency_p95_s': 0.5,        # image stamp -> publish, p95, <=
    'peak_rss_gb': 2.5,          # node peak RSS, <=
    'replay_fps': 10.0,          # l3rocc replay of a 640x480 10 fps bag, >=
    'octomap_ratio': 20.0,       # fusion vs OctoMap points/s, >=
}


def _set_args(values: Dict[str, Any]) -> List[str]:
    out = []
    for k, v in values.items():
        if isinstance(v, bool):
            v = 'true' if v else 'false'
        elif isinstance(v, (list, tuple)):
            v = '[' + ','.join(repr(float(x)) for x in v) + ']'
        out.append(f'{k}={v}')
    return out


def replay_speed(prep: Prepared, out_dir: str, refiner: str, device: str,
                 timeout_s: float = 1800.0,
                 extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run ``l3rocc replay`` on ``prep``'s bag in a subprocess; return timing.json + memory.

    :param prep: the sequence (its parameters are passed with ``--set``)
    :param out_dir: the replay's output folder
    :param refiner: 'none' or 'network'
    :param device: 'cpu', 'cuda' or 'auto'
    :param extra: further parameter values (applied last)
    """
    values = dict(prep.parameters)
    values.update(refiner=refiner, device=device)
    values.update(extra or {})
    cmd = [sys.executable, '-m', 'l3rocc_core.cli', 'replay', prep.bag, '--out', out_dir,
           '--no-progress']
    if prep.params_file:
        cmd += ['--params-file', prep.params_file]
    cmd += ['--set'] + _set_args(values)
    load = load_average()
    with open(os.devnull, 'wb') as devnull:
        run = run_monitored(cmd, timeout_s=timeout_s, stdout=devnull)
    out: Dict[str, Any] = {'sequence': prep.case.name, 'refiner': refiner, 'device': device,
                           'command': 'l3rocc ' + ' '.join(cmd[3:]), 'rc': run['rc'],
                           'peak_rss_mb': run['peak_rss_mb'], 'max_threads': run['max_threads'],
                           'process_wall_s': run['wall_s'], 'load_average_start': load,
                           'load_average_end': load_average()}
    path = os.path.join(out_dir, 'timing.json')
    if run['rc'] == 0 and os.path.isfile(path):
        with open(path, 'r', encoding='utf-8') as f:
            out['timing'] = json.load(f)
    else:
        out['error'] = f'l3rocc replay exited with {run["rc"]}'
    return out


def node_bench(out_json: str, seconds: float, warmup: float, sets: Sequence[str],
               publish_cost: Optional[str] = None, bucket_s: float = 5.0,
               timeout_s: Optional[float] = None) -> Dict[str, Any]:
    """Run ``l3rocc_bench.node`` in a subprocess and return its JSON.

    :param out_json: where it writes its result
    :param seconds: measured seconds
    :param warmup: seconds streamed before measuring
    :param sets: node parameter overrides ``name=value``
    :param publish_cost: occupancy.npz whose window is used to time message building
    :param bucket_s: time-series bucket (seconds)
    :return: the node benchmark's dict, or ``{'error': ...}``
    """
    cmd = [sys.executable, '-m', 'l3rocc_bench.node', '--out', out_json,
           '--seconds', str(seconds), '--warmup', str(warmup), '--bucket', str(bucket_s),
           '--progress']
    if sets:
        cmd += ['--set'] + list(sets)
    if publish_cost:
        cmd += ['--publish-cost', publish_cost]
    if os.path.exists(out_json):
        os.remove(out_json)
    limit = timeout_s if timeout_s is not None else seconds + warmup + 300.0
    try:
        proc = subprocess.run(cmd, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {'error': f'l3rocc_bench.node did not finish within {limit:.0f} s'}
    if not os.path.isfile(out_json):
        return {'error': f'l3rocc_bench.node exited with {proc.returncode} and wrote nothing '
                         '(is rclpy importable? run make setup)'}
    with open(out_json, 'r', encoding='utf-8') as f:
        return json.load(f)


def _row(name: str, target: str, value: Optional[float], ok: Optional[bool],
         unit: str = '', note: str = '') -> Dict[str, Any]:
    status = 'n/a' if ok is None else ('PASS' if ok else 'MISS')
    return {'name': name, 'target': target, 'measured': value, 'unit': unit,
            'status': status, 'note': note}


def _ok(value: Optional[float], test: Any) -> Optional[bool]:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return bool(test(value))


def speed_targets(replay: Optional[Dict[str, Any]], node: Optional[Dict[str, Any]],
                  octomap: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows target / measured / PASS|MISS|n/a for the speed targets and the OctoMap goal."""
    T = TARGETS
    rows = []
    node_ok = node is not None and 'error' not in node
    ingest = node.get('ingest_fps') if node_ok else None
    rows.append(_row('frames ingested (node)', f'>= {T["ingest_fps"]:g} fps', ingest,
                     _ok(ingest, lambda v: v >= T['ingest_fps']), 'fps',
                     f'{node.get("sent_fps", 0):.1f} fps sent' if node_ok else ''))
    pub = node.get('publish_hz') if node_ok else None
    rows.append(_row('occupancy published (node)', f'>= {T["publish_hz"]:g} Hz', pub,
                     _ok(pub, lambda v: v >= T['publish_hz']), 'Hz'))
    p95 = (node.get('latency_ms') or {}).get('p95') if node_ok else None
    p95_s = p95 / 1e3 if p95 is not None else None
    rows.append(_row('latency stamp -> publish p95 (node)', f'<= {T["latency_p95_s"]:g} s',
                     p95_s, _ok(p95_s, lambda v: v <= T['latency_p95_s']), 's',
                     f'p50 {(node.get("latency_ms") or {}).get("p50") or 0:.0f} ms'
                     if node_ok else ''))
    rss = node.get('peak_rss_mb') if node_ok else None
    rss_gb = rss / 1024.0 if rss is not None else None
    rows.append(_row('peak RSS (node)', f'<= {T["peak_rss_gb"]:g} GB', rss_gb,
                     _ok(rss_gb, lambda v: v <= T['peak_rss_gb']), 'GB'))
    fps = (replay or {}).get('timing', {}).get('fps')
    rows.append(_row('l3rocc replay 640x480 10 fps bag', f'>= {T["replay_fps"]:g} frames/s',
                     fps, _ok(fps, lambda v: v >= T['replay_fps']), 'frames/s',
                     f'{replay["sequence"]}, refiner {replay["refiner"]}' if replay else ''))
    ratio = ((octomap or {}).get('ratio') or {}).get('default')
    rows.append(_row('fusion vs OctoMap (points/s)', f'>= {T["octomap_ratio"]:g}x', ratio,
                     _ok(ratio, lambda v: v >= T['octomap_ratio']), 'x'))
    return rows


def network_targets(none: Dict[str, Any], network: Dict[str, Any],
                    none_h0: Optional[Dict[str, Any]] = None,
                    network_h0: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Return the accuracy targets of ``network`` against geometry only (means over sequences).

    :param none: mean occupancy figures with ``refiner: none`` (``iou``, ``window_iou``,
        ``flicker``, ``static_iou``)
    :param network: the same with ``refiner: network``
    :param none_h0: ``none``'s figures before ``occupancy_hysteresis`` (adds flicker rows)
    :param network_h0: the same for ``network``
    """
    def diff(key: str) -> Optional[float]:
        a, b = none.get(key), network.get(key)
        return None if a is None or b is None else b - a

    rows = []
    d = diff('iou')
    rows.append(_row('newest-slice IoU gain', '>= +0.05', d, _ok(d, lambda v: v >= 0.05)))
    d = diff('window_iou')
    rows.append(_row('window IoU gain', '>= +0.05', d, _ok(d, lambda v: v >= 0.05)))
    fa, fb = none.get('flicker'), network.get('flicker')
    r = fb / fa if fa and fb is not None else None
    rows.append(_row('flicker ratio network / geometry', '<= 0.7', r,
                     _ok(r, lambda v: v <= 0.7)))
    d = diff('static_iou')
    rows.append(_row('static-voxel IoU change', '>= 0', d, _ok(d, lambda v: v >= 0.0)))
    for name, a, b in (('flicker ratio network / geometry with h=0', none_h0, network),
                       ('flicker ratio, both h=0', none_h0, network_h0)):
        fa, fb = (a or {}).get('flicker'), (b or {}).get('flicker')
        if fa and fb is not None:
            rows.append(_row(name, '<= 0.7', fb / fa, _ok(fb / fa, lambda v: v <= 0.7)))
    return rows


def window_pass_timing(preps: Sequence[Prepared], device: str, repeats: int = 5,
                       progress: Any = None,
                       extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Time the network's whole-window pass eagerly and through ``torch.compile``.

    :func:`time_window_pass` on each sequence's grid (one row per distinct grid and window
    size). In-process (torch's default threads).

    :param preps: sequences whose grids to use
    :param device: 'cpu' | 'cuda'
    :param repeats: timed passes of each kind per grid (after the compile)
    :param progress: callable(message) told of each grid, or None
    :param extra: parameter overrides of every sequence (e.g. a smaller grid)
    :return: ``{'rows': [...], 'torch': version}``; a row that failed holds ``error``
    """
    import torch

    from l3rocc_bench.accuracy import case_config
    from l3rocc_core.pipeline import grid_from_config

    rows: List[Dict[str, Any]] = []
    seen = set()
    for prep in preps:
        cfg = case_config(prep, 'network', device, {**(extra or {}), 'network_update': 'window'})
        dims = tuple(grid_from_config(cfg).dims)
        t = cfg.window.window_size
        if (dims, t) in seen:
            continue
        seen.add((dims, t))
        if progress is not None:
            progress(f"window pass on {prep.case.name}'s grid {dims}")
        rows.append(time_window_pass(prep.case.name, dims, t, cfg.refiner, device, repeats))
    return {'rows': rows, 'torch': torch.__version__}


def time_window_pass(name: str, dims: Sequence[int], window_size: int, refiner_config: Any,
                     device: str, repeats: int = 5) -> Dict[str, Any]:
    """Time one grid's whole-window pass eagerly and through ``torch.compile``.

    ``network_update: window`` with and without ``network_compile`` on a full window of
    random evidence (a dense pass costs the same whatever the values): compile time, median
    ms of ``repeats`` interleaved passes each, and the largest difference of the
    probabilities (``max_abs_diff_1e6``, in millionths: results.json rounds to 6 decimals).

    :param name: the row's name (the grid's sequence)
    :param dims: grid (X, Y, Z)
    :param window_size: slices T of the window
    :param refiner_config: a ``RefinerConfig`` (checkpoint, support)
    :param device: 'cpu' | 'cuda'
    :return: the row; on failure ``{'sequence', 'grid', 'error'}``
    """
    import torch

    from l3rocc_core.refiner.inference import load_refiner

    dims, t = tuple(int(n) for n in dims), int(window_size)
    cfg = replace(refiner_config, network_update='window')
    try:
        eager = load_refiner(replace(cfg, network_compile=False), device)
        compiled = load_refiner(replace(cfg, network_compile=True), device, window_size=t)
        compile_s = compiled.warm_up(dims)
        g = torch.Generator().manual_seed(0)
        features = torch.randn((t, len(eager.feature_names)) + dims, generator=g)
        observed = torch.rand((t,) + dims, generator=g) > 0.5
        window = (features.to(eager.device), features[:, 0].to(eager.device),
                  observed.to(eager.device))
        times: Dict[str, List[float]] = {'eager': [], 'compiled': []}
        probs: Dict[str, Any] = {}
        eager.refine(*window)   # untimed, as the compiled one had its warm-up
        for _ in range(repeats):
            for kind, refiner in (('eager', eager), ('compiled', compiled)):
                times[kind].append(timed_ms(lambda r=refiner: r.refine(*window), eager.device,
                                            probs, kind))
        row = {'sequence': name, 'grid': list(dims), 'voxels': int(np.prod(dims)),
               'window_size': t, 'device': str(eager.device),
               'compile_status': compiled.compile_status, 'compile_s': compile_s,
               'eager_ms': statistics.median(times['eager']),
               'compiled_ms': statistics.median(times['compiled']),
               'max_abs_diff_1e6': float((probs['compiled'] - probs['eager']).abs().max()) * 1e6,
               'repeats': repeats}
        row['speedup'] = row['eager_ms'] / row['compiled_ms']
        return row
    except (RuntimeError, ValueError, OSError) as exc:
        return {'sequence': name, 'grid': list(dims), 'error': f'{type(exc).__name__}: {exc}'}


def timed_ms(fn: Any, device: Any, out: Dict[str, Any], key: str) -> float:
    """Run ``fn()`` once (synchronised on CUDA), keep its result in ``out[key]``; return ms."""
    import torch

    cuda = getattr(device, 'type', str(device)) == 'cuda'
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out[key] = fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3
