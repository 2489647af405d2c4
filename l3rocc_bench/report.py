"""Benchmark report: ``results.json`` → ``results.md`` (Markdown tables) and PNG plots.

Everything in ``results.md`` is rendered from the results dictionary, so the Markdown can be
regenerated from ``results.json`` alone (:func:`write_report`).
"""

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

STAGES = ('decode', 'pose', 'window', 'depth', 'fusion', 'refiner', 'output', 'publish')
PLOTS = {'iou': 'iou_per_sequence.png', 'tum': 'tum_iou_over_time.png',
         'stages': 'stage_timings.png', 'soak': 'soak.png'}


def fmt(v: Any, digits: int = 3) -> str:
    """Return a number formatted for a table ('–' for missing)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '–'
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f'{float(v):.{digits}f}'
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    """Return the lines of a Markdown table."""
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    out += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return out


def mean_figures(runs: Sequence[Dict[str, Any]],
                 occupancy: str = 'occupancy') -> Dict[str, Optional[float]]:
    """Return means over sequences of the occupancy and depth figures (missing values left out).

    :param occupancy: the runs' key of the occupancy figures: ``occupancy`` (as published) or
        ``occupancy_no_hysteresis`` (before ``occupancy_hysteresis``; runs without it left out)
    """
    keys = ('iou', 'precision', 'recall', 'window_iou', 'static_iou', 'dynamic_iou',
            'window_static_iou', 'window_dynamic_iou', 'flicker', 'trail')
    out: Dict[str, Optional[float]] = {}
    for k in keys:
        v = [(r.get(occupancy) or {}).get(k) for r in runs]
        v = [x for x in v if x is not None]
        out[k] = float(np.mean(v)) if v else None
    if occupancy == 'occupancy':
        v = [(r.get('occupancy_no_hysteresis') or {}).get('flicker') for r in runs]
        v = [x for x in v if x is not None]
        out['flicker_no_hysteresis'] = float(np.mean(v)) if v else None
    for k in ('abs_rel', 'delta_1_25', 'completeness'):
        v = [r['depth'].get(k) for r in runs if (r.get('depth') or {}).get(k) is not None]
        out['depth_' + k] = float(np.mean(v)) if v else None
    out['sequences'] = len(runs)
    return out


def _accuracy_rows(runs: Sequence[Dict[str, Any]]) -> List[List[str]]:
    rows = []
    for r in runs:
        o, d = r['occupancy'], r.get('depth') or {}
        rows.append([r['sequence'], r.get('camera') or 'handheld (real)', r['refiner_used'],
                     fmt(r['frames']), fmt(o.get('iou')), fmt(o.get('window_iou')),
                     fmt(o.get('precision')), fmt(o.get('recall')), fmt(o.get('static_iou')),
                     fmt(o.get('dynamic_iou')), fmt(o.get('trail')), fmt(o.get('flicker'), 4),
                     fmt((r.get('occupancy_no_hysteresis') or {}).get('flicker'), 4),
                     fmt(d.get('abs_rel')), fmt(d.get('delta_1_25')),
                     fmt(d.get('completeness'))])
    return rows


def _moving_depth_lines(runs: Sequence[Dict[str, Any]]) -> List[str]:
    """Return the table of the depth stage on moving objects against static surfaces."""
    rows = []
    for r in runs:
        d = r.get('depth') or {}
        mov, sta = d.get('moving'), d.get('static')
        if r.get('refiner') != 'none' or not mov or not sta or not mov.get('gt_pixels'):
            continue
        share = mov['gt_pixels'] / max(mov['gt_pixels'] + sta['gt_pixels'], 1)
        rows.append([r['sequence'], fmt(share)] + [
            fmt(x.get(k)) for k in ('completeness', 'delta_1_25', 'abs_rel') for x in (mov, sta)])
    if not rows:
        return []
    return ['### Depth on moving objects', '',
            'The depth stage (geometry runs) over the GT pixels that see a moving object '
            'against the other pixels (the plane sweep assumes a static scene; the network '
            'gives little confident depth there): share of such pixels, '
            'then completeness, δ<1.25 and AbsRel over each (pooled over the frames).', ''] + \
        table(['sequence', 'moving pixels', 'compl. moving', 'compl. static',
               'δ<1.25 moving', 'δ<1.25 static', 'AbsRel moving', 'AbsRel static'], rows) + ['']


def markdown(results: Dict[str, Any], plots: Dict[str, str]) -> str:
    """Return the whole ``results.md``."""
    from l3rocc_core.metrics import TRAIL_SPAN
    meta = results.get('meta', {})
    lines = ['# l3rocc benchmark results', '',
             f'Command: `{meta.get("command", "l3rocc bench")}`  ',
             f'Date: {meta.get("date", "?")} · commit {meta.get("commit", "?")} · '
             f'{meta.get("cpu_cores", "?")} CPU cores ({meta.get("cpu_model", "?")}) · '
             f'device {meta.get("device", "?")} ({meta.get("device_name", "")}) · '
             f'torch {meta.get("torch", "?")}, {meta.get("torch_threads", "?")} threads  ',
             f'Load average (1/5/15 min) at start {meta.get("load_average_start")}, at end '
             f'{meta.get("load_average_end")}: the machine is shared, so timings are '
             'upper bounds of what the code needs; every figure is a median, never asserted.',
             f'Wall time of the whole run: {fmt(meta.get("wall_s"), 0)} s.', '']
    speed = results.get('speed') or {}
    if speed.get('targets'):
        lines += ['## Speed targets', '',
                  'On 2 CPU cores, 640x480 input, default grid: the node under a 30 Hz camera '
                  '(TUM fr1/xyz images, `config/tum.yaml`), and `l3rocc replay` of a 640x480 '
                  '10 fps bag.'
                  + (' The `l3rocc batch` rows: small synthetic bags, see '
                     '[Batch](#batch-l3rocc-batch) below.' if results.get('batch') else ''), '']
        lines += table(['target', 'goal', 'measured', 'status', 'note'],
                       [[t['name'], t['target'], f'{fmt(t["measured"], 2)} {t["unit"]}',
                         t['status'], t.get('note', '')] for t in speed['targets']])
        lines.append('')
    for key in sorted(k for k in speed if k.startswith('targets_')):
        refiner = key[len('targets_'):]
        lines += [f'The same measurements with `refiner: {refiner}` (the default refiner; '
                  'the speed targets above are those of the geometry pipeline):', '']
        lines += table(['target', 'goal', 'measured', 'status', 'note'],
                       [[t['name'], t['target'], f'{fmt(t["measured"], 2)} {t["unit"]}',
                         t['status'], t.get('note', '')] for t in speed[key]])
        lines.append('')
    acc = results.get('accuracy') or {}
    runs = acc.get('runs') or []
    if runs:
        lines += ['## Accuracy', '',
                  'Per sequence, scored per the contract (observed voxels only): `IoU` = '
                  'newest slice (mean over frames), `window` = all slices of each window '
                  'against the GT at their stamps, static/dynamic = over GT static / moving '
                  'voxels (synthetic only; dynamic IoU = the share of a moving part seen, since '
                  'every dynamic voxel is GT-occupied), trail = share of the observed voxels a '
                  f'moving object left within the last {TRAIL_SPAN} frames that are still '
                  'occupied (newest slice; lower is better), flicker = share of observed '
                  'static voxels that change between consecutive frames (`h=0`: the same before '
                  '`occupancy_hysteresis`, from the same run); depth of the depth stage '
                  '(`depth_source` of the run) against GT depth: AbsRel, δ<1.25 and '
                  'completeness (share of GT pixels with a valid estimate). Synthetic '
                  'sequences: `l3rocc synth` test-split seeds (never trained on).', '']
        if any(r.get('depth_source') == 'gt' for r in runs):
            lines += ["**Depth: ground truth** (`--depth gt`): every frame's depth is the "
                      "sequence's GT depth (synthetic: the renderer's; TUM: the Kinect's) in the "
                      'working camera, in place of the depth stage; everything after the depth '
                      'stage is unchanged. The gap to the rows of a normal run is the share of '
                      'the error that is depth.', '']
        header = ['sequence', 'camera', 'refiner', 'frames', 'IoU', 'window IoU', 'precision',
                  'recall', 'static IoU', 'dynamic IoU', 'trail', 'flicker', 'flicker h=0',
                  'depth AbsRel', 'δ<1.25',
                  'depth compl.']
        rows = _accuracy_rows(runs)
        for refiner, m in (acc.get('means') or {}).items():
            rows.append([f'**mean ({m["sequences"]} seq.)**', '', refiner, '',
                         fmt(m['iou']), fmt(m['window_iou']), fmt(m['precision']),
                         fmt(m['recall']), fmt(m['static_iou']), fmt(m['dynamic_iou']),
                         fmt(m.get('trail')), fmt(m['flicker'], 4),
                         fmt(m.get('flicker_no_hysteresis'), 4),
                         fmt(m['depth_abs_rel']),
                         fmt(m['depth_delta_1_25']), fmt(m['depth_completeness'])])
        lines += table(header, rows)
        lines.append('')
        lines += _moving_depth_lines(runs)
        if acc.get('network_pending'):
            lines += [f'`refiner: network`: pending ({acc["network_pending"]}); the '
                      'geometry-only rows are the baseline the network must beat.', '']
        targets = acc.get('network_targets')
        if targets:
            if not isinstance(targets, dict):
                targets = {'all sequences': targets}
            lines += ['### Network against geometry only', '',
                      'Means over the sequences of each group, both refiners with the same '
                      'parameters (`occupancy_hysteresis` included); the `h=0` rows compare the '
                      'probabilities before hysteresis. Static-camera sequences are not in the '
                      'groups (see the table above for them).', '']
            lines += table(['sequences', 'target', 'goal', 'measured', 'status'],
                           [[group, t['name'], t['target'], fmt(t['measured']), t['status']]
                            for group, rows in targets.items() for t in rows])
            lines.append('')
        for key in ('iou', 'tum'):
            if key in plots:
                lines += [f'![{key}]({plots[key]})', '']
    stage_rows = _stage_rows(results)
    if stage_rows:
        lines += ['## Per-stage timings', '',
                  'Median milliseconds per frame (`total` = the push of the pipeline). `fps` = '
                  'frames / wall time of the whole replay (loading included); for the accuracy '
                  'runs the scoring hooks are excluded. `publish` = building the messages of '
                  'the node (points, occupancy, markers) for one window.', '']
        lines += table(['run', 'device'] + list(STAGES) + ['total', 'fps', 'peak RSS MB'],
                       stage_rows)
        lines.append('')
        if 'stages' in plots:
            lines += [f'![stages]({plots["stages"]})', '']
    budget_rows = _refiner_budget_rows(results)
    if budget_rows:
        lines += ['### Refiner inference against the frame budget', '',
                  '`refiner: network` as it runs by default on this device (on the CPU '
                  '`network_update: newest`: per frame the newest slice and one revisited slice '
                  'of the 16-slice window are estimated): the refiner stage per frame (median '
                  "ms), its share of the pipeline's time per frame, and its share of the "
                  "camera's frame period (median stamp step of the sequence; the node: its "
                  'camera rate), the time a pipeline keeping up with the camera has per frame.',
                  '']
        lines += table(['run', 'device', 'grid voxels', 'refiner ms', 'share of pipeline',
                        'frame period ms', 'share of frame period'], budget_rows)
        lines.append('')
    lines += _window_pass_lines(speed.get('window_pass'))
    nodes = [(k, speed[k]) for k in sorted(speed) if k.startswith('node') and speed[k]]
    if nodes:
        lines += ['## Node under a 30 Hz camera', '']
    for _, node in nodes:
        if 'error' in node:
            lines += [f'Not measured (refiner {node.get("refiner")}): {node["error"]}', '']
            continue
        lines += [_node_sentence(node), '']
        lines += table(['refiner', 'sent fps', 'ingested fps', 'processed fps', 'published Hz',
                        'latency p50 ms', 'latency p95 ms', 'dropped (queue full)',
                        'peak RSS MB', 'threads', 'SIGINT → exit s'],
                       [[node.get('refiner', ''), fmt(node.get('sent_fps'), 1),
                         fmt(node.get('ingest_fps'), 1),
                         fmt(node.get('processed_fps'), 2), fmt(node.get('publish_hz'), 2),
                         fmt((node.get('latency_ms') or {}).get('p50'), 0),
                         fmt((node.get('latency_ms') or {}).get('p95'), 0),
                         fmt(node.get('dropped_queue_full'), 0), fmt(node.get('peak_rss_mb'), 0),
                         fmt(node.get('threads_max'), 0), fmt(node.get('shutdown_s'), 2)]])
        lines.append('')
    if results.get('batch'):
        lines += _batch_lines(results['batch'])
    octo = results.get('octomap')
    if octo and 'error' not in octo:
        lines += _octomap_lines(octo)
    elif octo:
        lines += ['## Fusion vs OctoMap', '', f'Not measured: {octo["error"]}', '']
    soak = results.get('soak')
    if soak:
        lines += _soak_lines(soak, plots.get('soak'))
    return '\n'.join(lines) + '\n'


def _node_sentence(node: Dict[str, Any]) -> str:
    return (f'`l3rocc_node` ({node.get("refiner")}, {node.get("device")}) in its own process, '
            f'{node.get("image")} images + CameraInfo + /tf at {fmt(node.get("rate_hz"), 0)} Hz '
            f'(stamps = now) for {fmt(node.get("measure_s"), 0)} s after '
            f'{fmt(node.get("warmup_s"), 0)} s warm-up; latency = receive time of '
            '`~/points` − its header stamp. Frames replaced in the input queue (latest wins) '
            'are the designed behaviour of a pipeline slower than the camera.')


def _stage_rows(results: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for r in (results.get('accuracy') or {}).get('runs') or []:
        t = r.get('timing') or {}
        st = t.get('stages_ms') or {}
        rows.append([f'replay {r["sequence"]} ({r["refiner_used"]})', r.get('device', '')]
                    + [fmt(st.get(s), 1) for s in STAGES]
                    + [fmt(st.get('total'), 1), fmt(t.get('fps_without_hooks'), 2), '–'])
    speed = results.get('speed') or {}
    for key in sorted(k for k in speed if k.startswith('replay')):
        rep = speed[key]
        if not rep or not rep.get('timing'):
            continue
        st = rep['timing'].get('stages_ms') or {}
        rows.append([f'**`l3rocc replay` {rep["sequence"]} ({rep["refiner"]})**',
                     rep.get('device', '')] + [fmt(st.get(s), 1) for s in STAGES]
                    + [fmt(st.get('total'), 1), fmt(rep['timing'].get('fps'), 2),
                       fmt(rep.get('peak_rss_mb'), 0)])
    for key in sorted(k for k in speed if k.startswith('node')):
        node = speed[key]
        if not node or 'error' in node:
            continue
        st = dict(node.get('stage_ms') or {})
        cost = node.get('publish_cost_ms') or {}
        if cost and 'publish' not in st:
            st['publish'] = cost.get('total')      # offline message building, when the node
            # does not report its own publish time
        rows.append([f'node ({node.get("refiner")})', node.get('device') or '']
                    + [fmt(st.get(s), 1) for s in STAGES]
                    + [fmt(st.get('total'), 1), fmt(node.get('processed_fps'), 2),
                       fmt(node.get('peak_rss_mb'), 0)])
    return rows


def frame_period_ms(per_frame: Sequence[Dict[str, Any]]) -> Optional[float]:
    """Median step between consecutive frame stamps (ns) in milliseconds; None below 2 frames."""
    stamps = np.asarray([f['stamp'] for f in per_frame if f.get('stamp') is not None],
                        dtype=np.float64)
    steps = np.diff(np.sort(stamps))
    steps = steps[steps > 0]
    return float(np.median(steps)) / 1e6 if steps.size else None


def _share(part: Optional[float], whole: Optional[float]) -> str:
    if part is None or not whole:
        return '–'
    return f'{100.0 * part / whole:.0f} %'


def _budget_row(run: str, device: str, voxels: Optional[int], stages: Dict[str, Any],
                period: Optional[float]) -> List[str]:
    """One row of the refiner-against-budget table (stage medians in ms, period in ms)."""
    refiner = stages.get('refiner')
    return [run, device or '', '–' if voxels is None else f'{voxels / 1e3:.0f} k',
            fmt(refiner, 1), _share(refiner, stages.get('total')), fmt(period, 1),
            _share(refiner, period)]


def _refiner_budget_rows(results: Dict[str, Any]) -> List[List[str]]:
    """Rows of the refiner-against-budget table: every run whose refiner was the network."""
    rows = []
    periods: Dict[str, Optional[float]] = {}
    voxels: Dict[str, int] = {}   # by sequence, and by parameter file
    for r in (results.get('accuracy') or {}).get('runs') or []:
        seq = r['sequence']
        periods[seq] = frame_period_ms(r.get('per_frame') or [])
        if r.get('grid_dims'):
            voxels[seq] = int(np.prod(r['grid_dims']))
            if r.get('params_file'):
                voxels[r['params_file']] = voxels[seq]
        if r.get('refiner_used') == 'network':
            rows.append(_budget_row(f'replay {seq}', r.get('device', ''), voxels.get(seq),
                                    (r.get('timing') or {}).get('stages_ms') or {},
                                    periods[seq]))
    speed = results.get('speed') or {}
    for key in sorted(k for k in speed if k.startswith('replay')):
        rep = speed[key]
        if rep and rep.get('timing') and rep.get('refiner') == 'network':
            seq = rep.get('sequence', '')
            rows.append(_budget_row(f'`l3rocc replay` {seq}', rep.get('device', ''),
                                    voxels.get(seq), rep['timing'].get('stages_ms') or {},
                                    periods.get(seq)))
    for key in sorted(k for k in speed if k.startswith('node')):
        node = speed[key]
        if not node or 'error' in node or node.get('refiner') != 'network':
            continue
        cmd = list(node.get('command') or [])
        params = (os.path.basename(cmd[cmd.index('--params-file') + 1])
                  if '--params-file' in cmd[:-1] else '')
        rows.append(_budget_row(f'node ({params or "default parameters"})',
                                node.get('device', ''), voxels.get(params),
                                node.get('stage_ms') or {},
                                1e3 / node['rate_hz'] if node.get('rate_hz') else None))
    return rows


def _window_pass_lines(timing: Optional[Dict[str, Any]]) -> List[str]:
    """Return the eager-against-compiled table of the network's window pass (or nothing)."""
    if not timing:
        return []
    lines = ["### The network's window pass, eager and `network_compile`", '',
             '`network_update: window` (every slice of a full window estimated each frame; '
             'the CUDA default) on a window of random evidence, eagerly and through '
             f'`torch.compile` (torch {timing.get("torch", "?")}; static shapes, compiled once '
             'per grid when the pipeline starts): median ms of interleaved passes.', '']
    rows = []
    for r in timing.get('rows') or []:
        if 'error' in r:
            rows.append([r['sequence'], '', 'x'.join(map(str, r['grid'])), r['error'],
                         '', '', '', '', ''])
            continue
        rows.append([r['sequence'], r['device'], 'x'.join(map(str, r['grid'])),
                     f'{r["voxels"] / 1e3:.0f} k', fmt(r['eager_ms'], 0),
                     fmt(r['compiled_ms'], 0), f'{r["speedup"]:.2f}x',
                     f'{r["compile_s"]:.1f} ({r["compile_status"]})',
                     fmt(r.get('max_abs_diff_1e6'), 2)])
    lines += table(['grid of', 'device', 'grid', 'voxels', 'eager ms', 'compiled ms',
                    'speed-up', 'compile s (status)', 'max abs Δp (1e-6)'], rows)
    return lines + ['']


def _batch_lines(batch: Dict[str, Any]) -> List[str]:
    """Return the ``l3rocc batch`` section: one row per executor, medians over the rounds."""
    params = ', '.join(f'{k}={v}' for k, v in (batch.get('parameters') or {}).items())
    lines = ['## Batch (`l3rocc batch`)', '',
             f'{batch.get("bags")} synthetic bags (`l3rocc synth` test-split seeds, '
             f'{batch.get("frames")} frames at {batch.get("resolution")}, with ground truth: '
             f'replay + eval per bag; {params}), {batch.get("rounds")} round(s) of each way '
             '(order rotated per round); medians over the rounds. `loop` = one bag after '
             'another the way a user does it without the batch: `l3rocc replay` and then '
             "`l3rocc eval` per bag, each a command of its own (wall = the sum of the commands'); "
             'the batch rows time the whole `l3rocc batch` command in a subprocess, '
             "interpreter start and imports included (`summary` = `summary.json`'s `wall_s`, "
             'the batch itself): `sequential` = `--workers 1` (one task at a time with all the '
             'torch threads, imports once), pool = the default workers, Ray = `--ray`, a local '
             'instance started by the batch. Peak RSS per worker = the largest `peak_rss_mb` of '
             'the tasks a worker process ran (for `loop`, of each command); growth = the largest '
             "rise of a worker's task peak from its first task to its last (what the tasks "
             "before keep, and the recordings' own differences)."
             + _load_text(batch.get('load_average'), batch.get('cpu_cores')), '']
    wall = batch.get('wall_s') or {}
    baseline = batch.get('baseline', 'sequential')
    base = wall.get(baseline)
    ratio = {m: (w / base if base and w is not None else None) for m, w in wall.items()}
    summary_wall = batch.get('batch_wall_s') or {}
    peaks = batch.get('worker_peak_rss_mb') or {}
    rows = []
    for mode, runs in (batch.get('runs') or {}).items():
        r0 = runs[0] if runs else {}
        p = peaks.get(mode) or {}
        errors = [r['error'] for r in runs if 'error' in r]
        rows.append([mode, f'{fmt(r0.get("workers"))} x {fmt(r0.get("threads_per_task"))}',
                     ', '.join(fmt(r['wall_s'], 1) for r in runs), fmt(wall.get(mode), 1),
                     fmt(summary_wall.get(mode), 1),
                     f'{ratio[mode]:.2f}x' if ratio.get(mode) is not None else '–',
                     f'{fmt(p.get("max"), 0)} / {fmt(p.get("median"), 0)}',
                     fmt(p.get('growth_max'), 0),
                     ', '.join(fmt((r.get('load_average_start') or [None])[0], 2)
                               for r in runs),
                     '; '.join(errors)])
    for mode, why in (batch.get('not_run') or {}).items():
        rows.append([mode] + ['–'] * 8 + [why])
    lines += table(['executor', 'workers x threads', 'wall s per round', 'wall s', 'summary s',
                    f'/ {baseline}', 'peak RSS per worker MiB (max / median)',
                    'growth first -> last task MiB', 'load 1 min per round', 'error'], rows)
    over = batch.get('ray_overhead_pct')
    if over is not None:
        lines += ['', f'Ray against the pool: {over:+.1f} % wall time.']
    return lines + ['']


def _octomap_lines(octo: Dict[str, Any]) -> List[str]:
    lines = ['## Fusion vs OctoMap', '',
             f'The same TUM fr1/xyz GT depth maps ({octo["resolution"]}, '
             f'{fmt(octo["points_per_frame"], 0)} valid points per frame) and GT poses, voxel '
             f'{octo["voxel_size"]} m, max range {octo["max_range_m"]} m, '
             f'{octo.get("rounds", 1)} interleaved rounds (median per frame; the first '
             f'{octo.get("warmup_frames", "?")} frames of each round untimed); device '
             f'{octo["device"]}, '
             f'{octo.get("torch_threads")} torch threads (fusion threads: the intra-op threads '
             'of our per-frame work). OctoMap: `pyoctomap` '
             '`insertPointCloud` (every point a ray, unbounded tree, one thread), also with '
             '`discretize=True` (endpoints merged per voxel first). Points/s = valid depth '
             'points / integration time, the same numerator for every row.'
             + _load_text(octo.get('load_average'), octo.get('cpu_cores')), '']
    rows = []
    base = (octo.get('octomap') or {}).get('points_per_s')
    disc = octo.get('octomap_discretize') or {}
    for label, v in octo['ours'].items():
        ratio = (octo.get('ratio') or {}).get(label)
        ratio_disc = (octo.get('ratio_discretize') or {}).get(label)
        rows.append([f'ours: {label}', 'x'.join(str(d) for d in v['grid_dims']),
                     fmt(v.get('fusion_threads'), 0),
                     fmt(v.get('timed_frames', octo.get('timed_frames'))),
                     fmt(v['ms_per_frame'], 1), f'{v["points_per_s"]:,.0f}',
                     f'{ratio:.2f}x' if ratio is not None else '–',
                     f'{ratio_disc:.2f}x' if ratio_disc is not None else '–'])
    if base:
        rows.append(['OctoMap', 'unbounded', '1', fmt(octo.get('timed_frames')),
                     fmt(octo['octomap']['ms_per_frame'], 1),
                     f'{base:,.0f}', '1.00x', '–'])
    if disc.get('points_per_s'):
        rows.append(['OctoMap discretize', 'unbounded', '1', fmt(octo.get('timed_frames')),
                     fmt(disc['ms_per_frame'], 1), f'{disc["points_per_s"]:,.0f}',
                     f'{disc["points_per_s"] / base:.2f}x' if base else '–', '1.00x'])
    lines += table(['fusion', 'grid', 'fusion threads', 'timed frames', 'ms / frame',
                    'points / s', 'vs OctoMap', 'vs OctoMap discretize'], rows)
    ratio = (octo.get('ratio') or {}).get('default')
    if ratio is not None:
        lines += ['', f'    fusion vs OctoMap: {ratio:.1f}x']
        ratio_disc = (octo.get('ratio_discretize') or {}).get('default')
        if ratio_disc is not None:
            lines.append(f'    fusion vs OctoMap discretize: {ratio_disc:.1f}x')
        lines.append('')
    return lines + ['']


def _load_text(loads: Optional[List[List[float]]], cores: Optional[int]) -> str:
    """' Load average (1, 5, 15 min) before -> after ...' or '' when unknown."""
    if not loads or not all(loads):
        return ''
    return (' Load average (1, 5, 15 min) ' + ' -> '.join(
        '/'.join(f'{v:.2f}' for v in la) for la in loads)
        + (f' on {cores} cores.' if cores else '.'))


#: Node stages shown in the soak table and plot, in pipeline order.
SOAK_STAGES = ('depth', 'fusion', 'refiner', 'publish')
#: Soak series columns about the machine: (key, table header, decimals).
SOAK_MACHINE_COLUMNS = (('node_cpu_cores', 'node CPU cores', 2),
                        ('cpu_ms_per_frame', 'CPU ms / frame', 0),
                        ('other_cores', 'other cores', 2), ('steal_cores', 'steal cores', 2),
                        ('load1', 'load 1 min', 2), ('probe_ms', 'probe ms', 2))


def _soak_lines(soak: Dict[str, Any], plot: Optional[str]) -> List[str]:
    if 'error' in soak:
        return ['## Soak (`l3rocc bench --soak`)', '', f'Not measured: {soak["error"]}', '']
    lines = ['## Soak (`l3rocc bench --soak`)', '', _node_sentence(soak), '',
             f'Frames sent in the measured {fmt(soak.get("measure_s"), 0)} s: '
             f'{fmt(soak.get("sent_frames"))}; whole run (warm-up included): sent '
             f'{fmt(soak.get("sent_total"))}, '
             f'ingested by the node {fmt((soak.get("totals") or {}).get("frames_received"), 0)}'
             f', processed '
             f'{fmt((soak.get("totals") or {}).get("frames_processed"), 0)}, replaced in the '
             f'queue {fmt(soak.get("dropped_queue_full"), 0)}, dropped for errors '
             f'{fmt(soak.get("dropped_frames"), 0)}; RSS slope '
             f'{fmt(soak.get("rss_slope_mb_per_min"), 2)} MB/min (after warm-up), threads '
             f'{fmt(soak.get("threads_start"), 0)} → {fmt(soak.get("threads_end"), 0)}, node '
             f'alive at the end: {soak.get("node_alive_at_end")}, SIGINT → exit '
             f'{fmt(soak.get("shutdown_s"), 2)} s.', '']
    series = soak.get('series') or []
    stages = [k for k in SOAK_STAGES if any(k in (r.get('stage_ms') or {}) for r in series)]
    extra = [(key, label, digits) for key, label, digits in SOAK_MACHINE_COLUMNS
             if any(r.get(key) is not None for r in series)]
    rows = [[fmt(r['t_s'], 0), fmt(r['sent_fps'], 1), fmt(r['ingest_fps'], 1),
             fmt(r['processed_fps'], 2), fmt(r['published_hz'], 2),
             fmt(r['latency_p50_ms'], 0), fmt(r['latency_p95_ms'], 0), fmt(r['rss_mb'], 0),
             fmt(r['threads'], 0)]
            + [fmt((r.get('stage_ms') or {}).get(k), 0) for k in stages]
            + [fmt(r.get(key), digits) for key, _, digits in extra] for r in series]
    if extra:
        lines += ["Where the time went, per row: the node's stage timings (median ms of its "
                  '/diagnostics: the work per processed frame), its CPU use (cores) and CPU '
                  'time per processed frame (which also holds receiving every camera image, '
                  'so it rises when fewer frames are processed even at the same work per '
                  "frame), the CPU every other process used (this benchmark's camera "
                  "publisher included) and the hypervisor's steal, the 1-minute load average "
                  '(a 60 s average: it lags), and the CPU ms of a fixed workload (`probe`, '
                  'median of 3 every 2 s, ~1 % of a core: it rises only when the machine '
                  'gets slower per unit of work). Stage timings rising with the probe flat '
                  "is the node's own work growing; both rising together is the machine.", '']
    lines += table(['t s', 'sent fps', 'ingested fps', 'processed fps', 'published Hz',
                    'latency p50 ms', 'latency p95 ms', 'RSS MB', 'threads']
                   + [f'{k} ms' for k in stages] + [label for _, label, _ in extra], rows)
    lines.append('')
    if plot:
        lines += [f'![soak]({plot})', '']
    return lines


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

def _plt() -> Any:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_iou_per_sequence(runs: Sequence[Dict[str, Any]], path: str) -> None:
    """Plot grouped bars: newest-slice and window IoU per sequence, geometry vs network."""
    plt = _plt()
    names = list(dict.fromkeys(r['sequence'] for r in runs))
    refiners = list(dict.fromkeys(r['refiner_used'] for r in runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4))
    width = 0.8 / max(1, 2 * len(refiners))
    x = np.arange(len(names))
    k = 0
    for ref in refiners:
        for key, hatch in (('iou', ''), ('window_iou', '//')):
            vals = []
            for n in names:
                r = next((r for r in runs if r['sequence'] == n and r['refiner_used'] == ref),
                         None)
                v = r['occupancy'].get(key) if r else None
                vals.append(np.nan if v is None else v)
            ax.bar(x + (k - (2 * len(refiners) - 1) / 2) * width, vals, width,
                   label=f'{ref}: {"newest" if key == "iou" else "window"}', hatch=hatch,
                   color=f'C{refiners.index(ref)}', alpha=1.0 if key == 'iou' else 0.6)
            k += 1
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha='right')
    ax.set_ylabel('IoU (observed voxels)')
    ax.set_ylim(0, 1)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title('Occupancy IoU per sequence')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_tum_over_time(runs: Sequence[Dict[str, Any]], path: str) -> None:
    """Plot newest-slice IoU over time on TUM fr1/xyz, one line per refiner."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in runs:
        rows = r.get('per_frame') or []
        if not rows:
            continue
        t = (np.asarray([x['stamp'] for x in rows], np.int64) - rows[0]['stamp']) / 1e9
        iou = np.asarray([np.nan if x['iou'] is None else x['iou'] for x in rows], float)
        ax.plot(t, iou, marker='.', label=f'{r["refiner_used"]} (mean '
                f'{fmt(r["occupancy"].get("iou"))})')
    ax.set_xlabel('time (s)')
    ax.set_ylabel('IoU newest slice')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title('TUM fr1/xyz: IoU over time')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_stages(results: Dict[str, Any], path: str) -> None:
    """Plot horizontal stacked bars of the median stage times of every run."""
    plt = _plt()
    rows = _stage_rows(results)
    if not rows:
        return
    labels = [r[0].replace('*', '').replace('`', '') for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for i, stage in enumerate(STAGES):
        vals = np.asarray([float(r[2 + i]) if r[2 + i] != '–' else 0.0 for r in rows])
        ax.barh(labels, vals, left=left, label=stage, color=f'C{i}')
        left += vals
    ax.set_xlabel('median ms per frame')
    ax.invert_yaxis()
    ax.grid(axis='x', alpha=0.3)
    ax.set_title('Per-stage timings')
    fig.tight_layout()
    ax.legend(ncol=4, fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.12),
              frameon=False)
    fig.subplots_adjust(bottom=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_soak(soak: Dict[str, Any], path: str) -> None:
    """Plot rates, latency, RSS and threads, and stage ms, CPU per frame and load over time."""
    plt = _plt()
    series = soak.get('series') or []
    if not series:
        return

    def col(k: str) -> np.ndarray:
        return np.asarray([np.nan if r.get(k) is None else r[k] for r in series], float)

    t = col('t_s')
    stages = [k for k in SOAK_STAGES if any(k in (r.get('stage_ms') or {}) for r in series)]
    attributed = bool(stages) or not np.all(np.isnan(col('cpu_ms_per_frame')))
    fig, axes = plt.subplots(5 if attributed else 3, 1, figsize=(8, 11 if attributed else 7),
                             sharex=True)
    for k in ('sent_fps', 'ingest_fps', 'processed_fps', 'published_hz'):
        axes[0].plot(t, col(k), marker='.', label=k)
    axes[0].set_ylabel('per second')
    axes[0].legend(fontsize=8, ncol=2)
    axes[1].plot(t, col('latency_p50_ms'), marker='.', label='p50')
    axes[1].plot(t, col('latency_p95_ms'), marker='.', label='p95')
    axes[1].set_ylabel('latency ms')
    axes[1].legend(fontsize=8)
    axes[2].plot(t, col('rss_mb'), 'k', marker='.', label='RSS MB')
    axes[2].set_ylabel('RSS MB')
    ax2 = axes[2].twinx()
    ax2.plot(t, col('threads'), 'C3--', label='threads')
    ax2.set_ylabel('threads')
    axes[-1].set_xlabel('time (s)')
    if attributed:
        for k in stages:
            axes[3].plot(t, [np.nan if (r.get('stage_ms') or {}).get(k) is None
                             else r['stage_ms'][k] for r in series], marker='.', label=k)
        axes[3].plot(t, col('cpu_ms_per_frame'), 'k:', marker='.', label='node CPU ms / frame')
        axes[3].set_ylabel('ms per frame')
        axes[3].legend(fontsize=7, ncol=3, loc='upper left')
        for k, style in (('node_cpu_cores', 'C0'), ('other_cores', 'C1'),
                         ('steal_cores', 'C3'), ('load1', 'C7--')):
            axes[4].plot(t, col(k), style, marker='.', label=k)
        axes[4].set_ylabel('cores / load')
        axes[4].legend(fontsize=7, ncol=4, loc='upper left')
        ax4 = axes[4].twinx()
        ax4.plot(t, col('probe_ms'), 'k:', marker='x', label='probe ms')
        ax4.set_ylabel('probe CPU ms')
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].set_title(f'Soak: {soak.get("rate_hz")} Hz camera into l3rocc_node '
                      f'({soak.get("refiner")}); RSS slope '
                      f'{fmt(soak.get("rss_slope_mb_per_min"), 2)} MB/min')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    """Write ``results.json``, the plots and ``results.md`` into ``out_dir``.

    :return: plot name -> file name (relative to ``out_dir``)
    """
    os.makedirs(out_dir, exist_ok=True)
    plots: Dict[str, str] = {}
    runs = (results.get('accuracy') or {}).get('runs') or []
    if runs:
        plot_iou_per_sequence(runs, os.path.join(out_dir, PLOTS['iou']))
        plots['iou'] = PLOTS['iou']
        tum = [r for r in runs if r.get('kind') == 'tum']
        if tum:
            plot_tum_over_time(tum, os.path.join(out_dir, PLOTS['tum']))
            plots['tum'] = PLOTS['tum']
    if _stage_rows(results):
        plot_stages(results, os.path.join(out_dir, PLOTS['stages']))
        plots['stages'] = PLOTS['stages']
    soak = results.get('soak')
    if soak and soak.get('series'):
        plot_soak(soak, os.path.join(out_dir, PLOTS['soak']))
        plots['soak'] = PLOTS['soak']
    _write_atomic(os.path.join(out_dir, 'results.json'),
                  json.dumps(clean(results, 6), indent=1, default=_json_default) + '\n')
    _write_atomic(os.path.join(out_dir, 'results.md'), markdown(results, plots))
    return plots


def clean(v: Any, digits: Optional[int] = None) -> Any:
    """Return ``v`` with NaN/inf floats as None and numpy scalars as Python numbers (JSON).

    :param digits: round floats to this many decimals (None: keep them)
    """
    if isinstance(v, dict):
        return {k: clean(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x, digits) for x in v]
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return None
        return float(v) if digits is None else round(float(v), digits)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f'not JSON serialisable: {type(v).__name__}')


def _write_atomic(path: str, text: str) -> None:
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)
