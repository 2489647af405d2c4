"""``l3rocc bench``: accuracy and speed benchmarks with one command; tables, JSON and plots.

``l3rocc bench`` (default set, < 20 min on 2 CPU cores), ``l3rocc bench --quick`` (< 3 min; the
network scores one sequence, ``suite.QUICK_NETWORK_CASES``) and
``l3rocc bench --soak`` (the node under a 30 Hz camera for minutes) write ``results.json``,
``results.md`` and PNG plots into ``--out`` (default ``out/bench/``, git-ignored); sequences are
made once into ``--cache`` (default ``out/bench/cache/``, whatever ``--out`` is).

The published copy is ``docs/benchmarks/``: ``l3rocc bench --out docs/benchmarks`` (then
``l3rocc bench --soak --out docs/benchmarks``, which merges the soak into it) regenerates it.

Steps of a benchmark run (each can be skipped with ``--skip``):

1. ``accuracy``: every sequence of the set replayed with ``refiner: none`` and (when the bundled
   checkpoint exists) ``refiner: network``, scored per push (:mod:`l3rocc_bench.accuracy`);
2. ``replay``: ``l3rocc replay`` of the 640x480 10 fps synthetic bag in a subprocess: fps and
   peak RSS (the replay target);
3. ``node``: ``l3rocc_node`` under a 30 Hz 640x480 camera (``l3rocc_bench.node``);
4. ``octomap``: fusion throughput against OctoMap on the same depth maps;
5. ``compile``: the network's whole-window pass eagerly and through ``torch.compile``
   (``network_compile``) on the TUM and the replay sequence's grids;
6. ``batch``: small synthetic bags one after another (``l3rocc replay`` + ``l3rocc eval`` per
   bag, and ``l3rocc batch --workers 1``), on the process pool and on Ray, against the fleet
   targets (:mod:`l3rocc_bench.batch`); left out
   of ``--quick`` unless ``--batch-bags`` is given.

Timings are medians, reported beside the speed targets (PASS/MISS); nothing is asserted.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

STEPS = ('accuracy', 'replay', 'node', 'octomap', 'compile', 'batch')
#: Where a run writes unless told otherwise: git-ignored, so a run leaves the checkout clean.
DEFAULT_OUT = os.path.join('out', 'bench')
#: The sequence cache, shared by every ``--out`` (the published folder gets no cache).
DEFAULT_CACHE = os.path.join(DEFAULT_OUT, 'cache')
#: The batch step's size: 8 bags of 32 frames at 160x120, one round (about 6 min, 2 cores).
BATCH_DEFAULTS = {'batch_bags': 8, 'batch_frames': 32, 'batch_rounds': 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc bench`` arguments."""
    parser.add_argument('--quick', action='store_true',
                        help='the quick set (2 short synthetic sequences + TUM, the network '
                        'refiner on one of them, short node run): under 3 minutes on 2 cores')
    parser.add_argument('--soak', action='store_true',
                        help='only the soak run: the node under a 30 Hz camera for '
                        '--soak-seconds; merged into an existing results.json')
    parser.add_argument('--out', default=DEFAULT_OUT, metavar='DIR',
                        help='results folder (default: %(default)s; docs/benchmarks is the '
                        'published copy)')
    parser.add_argument('--cache', default=DEFAULT_CACHE, metavar='DIR',
                        help='sequences and per-run files (default: %(default)s)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'),
                        help='torch device of every run (default: %(default)s)')
    parser.add_argument('--sequences', nargs='+', metavar='NAME',
                        help='only these sequences of the set')
    parser.add_argument('--skip', nargs='+', default=[], choices=STEPS, metavar='STEP',
                        help=f'leave out steps ({", ".join(STEPS)})')
    parser.add_argument('--node-seconds', type=float, default=None,
                        help='measured seconds of the node run (default 30, quick 12)')
    parser.add_argument('--node-warmup', type=float, default=None,
                        help='seconds streamed before measuring (default 10, quick 6)')
    parser.add_argument('--soak-seconds', type=float, default=335.0,
                        help='soak length (default %(default)s s = 10,000 frames at 30 Hz)')
    parser.add_argument('--set', dest='sets', nargs='+', action='extend', default=[],
                        metavar='NAME=VALUE',
                        help='parameter overrides (YAML values) for every run of both '
                        "refiners, after each sequence's own (not the fusion-only OctoMap "
                        'comparison; not refiner or device): e.g. score your own model with '
                        'checkpoint=out/exp/m/export.pt')
    parser.add_argument('--depth', choices=('estimated', 'gt'), default='estimated',
                        help='depth of the accuracy runs: the depth stage (default) or each '
                        "sequence's ground-truth depth in its place, which tells how much of "
                        'the error is depth (speed runs are unchanged)')
    parser.add_argument('--soak-set', nargs='+', action='extend', default=[],
                        metavar='NAME=VALUE',
                        help='extra node parameters for the soak, e.g. a slower pipeline: '
                        'num_depth_planes=96')
    parser.add_argument('--octomap-frames', type=int, default=None,
                        help='TUM frames of the OctoMap comparison (default 20, quick 8)')
    parser.add_argument('--batch-bags', type=int, default=None, metavar='N',
                        help='synthetic bags of the batch step (default 8; --quick: the step '
                        'is left out unless this is given)')
    parser.add_argument('--batch-frames', type=int, default=BATCH_DEFAULTS['batch_frames'],
                        metavar='N',
                        help='frames of each batch bag (default %(default)s, 160x120)')
    parser.add_argument('--batch-rounds', type=int, default=1, metavar='N',
                        help='runs of each executor in the batch step; figures are medians '
                        '(default %(default)s)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


# --------------------------------------------------------------------------------------------
# Meta data
# --------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', 'r', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=here, timeout=10,
                             capture_output=True, text=True, check=False)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=here, timeout=10, capture_output=True, text=True,
                               check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 'unknown'
    if out.returncode:
        return 'unknown'
    return out.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')


def _meta(args: argparse.Namespace, device: str) -> Dict[str, Any]:
    import torch

    from l3rocc_bench.resources import cpu_count, load_average
    name = 'CPU'
    if device.startswith('cuda') and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    cmd = 'l3rocc bench' + (' --quick' if args.quick else '') + (
        ' --soak' if args.soak else '') + (f' --device {args.device}'
                                           if args.device != 'cpu' else '')
    if args.sequences:
        cmd += ' --sequences ' + ' '.join(args.sequences)
    if args.skip:
        cmd += ' --skip ' + ' '.join(args.skip)
    if args.sets:
        cmd += ' --set ' + ' '.join(args.sets)
    if args.depth != 'estimated':
        cmd += f' --depth {args.depth}'
    for option, default in BATCH_DEFAULTS.items():
        if getattr(args, option, None) not in (None, default):
            cmd += f' --{option.replace("_", "-")} {getattr(args, option)}'
    return {'command': cmd, 'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'commit': _commit(), 'cpu_cores': cpu_count(), 'cpu_model': _cpu_model(),
            'device': device, 'device_name': name, 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads(), 'python': platform.python_version(),
            'load_average_start': load_average(), 'quick': bool(args.quick)}


def parameter_overrides(sets: List[str]) -> Dict[str, Any]:
    """Return the ``--set NAME=VALUE`` overrides as a dict, checked against the configuration.

    :raises ValueError: on a malformed item, an unknown parameter or an invalid value
    """
    from l3rocc_core.config import parse_set_arguments, PipelineConfig
    extra = parse_set_arguments(sets)
    for name, flag in (('refiner', 'both refiners always run'), ('device', 'use --device')):
        if name in extra:
            raise ValueError(f'{name} cannot be set here ({flag})')
    PipelineConfig().with_values(extra)
    return extra


class _Steps:
    """Numbered step lines on stderr (the long steps show their own progress bars)."""

    def __init__(self, total: int):
        self.total = total
        self.n = 0
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f'[bench {self.n}/{self.total} +{time.perf_counter() - self.t0:.0f}s] {text}',
              file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------

def _refiners_of(case: Any, refiners: List[str], quick: bool) -> List[str]:
    """Return the refiners a sequence is scored with (quick: the network on some only)."""
    from l3rocc_bench import suite
    if quick and case.name not in suite.QUICK_NETWORK_CASES:
        return [r for r in refiners if r != 'network']
    return list(refiners)


def _accuracy(preps: List[Any], refiners: List[str], runs_dir: str, device: str,
              progress: bool, step: _Steps, quick: bool,
              extra: Dict[str, Any], depth: str = 'estimated') -> List[Dict[str, Any]]:
    from l3rocc_bench.accuracy import run_case
    out = []
    for prep in preps:
        for refiner in _refiners_of(prep.case, refiners, quick):
            step(f'accuracy: replay + score {prep.case.name} (refiner {refiner}'
                 + (', GT depth)' if depth == 'gt' else ')'))
            out.append(run_case(prep, refiner, os.path.join(
                runs_dir, f'{prep.case.name}_{refiner}' + ('_gt_depth' if depth == 'gt' else '')),
                device, progress, extra, depth))
            r = out[-1]
            print(f'    IoU {_f(r["occupancy"].get("iou"))}, window '
                  f'{_f(r["occupancy"].get("window_iou"))}, flicker '
                  f'{_f(r["occupancy"].get("flicker"), 4)}, depth AbsRel '
                  f'{_f(r["depth"].get("abs_rel"))}, {r["frames"]} frames at '
                  f'{_f(r["timing"].get("fps_without_hooks"), 2)} fps', file=sys.stderr)
    return out


def _network_targets(runs: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Return the refiner's targets per group: the test split, the independent set, TUM, all.

    Like for like: geometry over the sequences the network scored. With hysteresis on, rows
    comparing the flicker before it (``occupancy_no_hysteresis``) are added. Static-camera
    sequences are left out of the groups: the multi-view geometry gets no parallax there, so
    only moving objects get depth (``foreground_depth``) and both refiners score near 0 (they
    are in the per-sequence table); averaging those in would only shrink both sides.
    """
    from l3rocc_bench.report import mean_figures
    from l3rocc_bench.speed import network_targets

    def moving(r: Dict[str, Any]) -> bool:
        return r.get('camera') not in ('static', 'pole')

    groups = {'synthetic test split (moving cameras)':
              lambda r: r.get('kind') == 'synth' and moving(r),
              'independent set (moving cameras)':
              lambda r: r.get('kind') == 'independent' and moving(r),
              'TUM fr1/xyz': lambda r: r.get('kind') == 'tum',
              'all moving-camera sequences': moving}
    out: Dict[str, List[Dict[str, Any]]] = {}
    for name, member in groups.items():
        net = [r for r in runs if member(r) and r['refiner_used'] == 'network']
        scored = {r['sequence'] for r in net}
        geo = [r for r in runs if member(r) and r['refiner_used'] == 'geometry'
               and r['sequence'] in scored]
        if not net or not geo:
            continue
        h0 = all(r.get('occupancy_no_hysteresis') for r in net + geo)
        out[name] = network_targets(
            mean_figures(geo), mean_figures(net),
            mean_figures(geo, 'occupancy_no_hysteresis') if h0 else None,
            mean_figures(net, 'occupancy_no_hysteresis') if h0 else None)
    return out


def _f(v: Optional[float], digits: int = 3) -> str:
    from l3rocc_bench.report import fmt
    return fmt(v, digits)


def _load_previous(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, 'r', encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _run_soak(args: argparse.Namespace, device: str, refiner: str) -> int:
    from l3rocc_bench.report import write_report
    from l3rocc_bench.resources import load_average
    from l3rocc_bench.speed import node_bench
    cache = args.cache
    os.makedirs(cache, exist_ok=True)
    results = _load_previous(os.path.join(args.out, 'results.json'))
    print(f'[bench soak] l3rocc_node under a 30 Hz camera for {args.soak_seconds:.0f} s '
          f'(refiner {refiner}, device {device})', file=sys.stderr, flush=True)
    sets = [f'refiner={refiner}', f'device={device}'] + list(args.sets) + list(args.soak_set)
    soak = node_bench(os.path.join(cache, 'soak.json'), args.soak_seconds, 10.0, sets,
                      bucket_s=10.0, timeout_s=args.soak_seconds + 400.0)
    soak['load_average'] = load_average()
    soak['parameters'] = sets
    results['soak'] = soak
    results.setdefault('meta', _meta(args, device))
    write_report(results, args.out)
    if 'error' in soak:
        print(f'l3rocc bench --soak: {soak["error"]}', file=sys.stderr)
        return 1
    print(f'soak: sent {soak.get("sent_frames")} frames, ingested '
          f'{_f(soak.get("ingest_fps"), 1)} fps, processed {_f(soak.get("processed_fps"), 2)} '
          f'fps, latency p50/p95 {_f(soak["latency_ms"].get("p50"), 0)}/'
          f'{_f(soak["latency_ms"].get("p95"), 0)} ms, RSS slope '
          f'{_f(soak.get("rss_slope_mb_per_min"), 2)} MB/min, threads '
          f'{_f(soak.get("threads_start"), 0)} -> {_f(soak.get("threads_end"), 0)} -> '
          f'{os.path.join(args.out, "results.md")}')
    return 0


def _batch(args: argparse.Namespace, bags: int, cache: str, runs_dir: str, progress: bool,
           step: _Steps, sets: Dict[str, Any]) -> Dict[str, Any]:
    """Make the batch step's bags (once) and time ``l3rocc batch`` on them."""
    from l3rocc_bench import suite
    from l3rocc_bench.batch import batch_bench, batch_cases
    cases = batch_cases(bags, args.batch_frames)
    c = cases[0]
    step(f'speed: l3rocc batch of {bags} synthetic bags ({c.frames} frames, {c.width}x'
         f'{c.width * 3 // 4}, refiner {sets["refiner"]}) one after another, on the pool and '
         f'on Ray, {args.batch_rounds} round(s)')
    preps = [suite.prepare(case, cache, progress) for case in cases]
    return batch_bench(preps, os.path.join(runs_dir, 'batch'), sets, args.batch_rounds,
                       progress=progress, say=lambda m: print(f'    {m}', file=sys.stderr))


def _run(args: argparse.Namespace) -> int:
    from l3rocc_bench import suite
    from l3rocc_bench.accuracy import network_available
    from l3rocc_bench.report import mean_figures, write_report
    from l3rocc_bench.resources import load_average
    from l3rocc_bench.speed import node_bench, replay_speed, speed_targets

    t_start = time.perf_counter()
    from l3rocc_core.config import PipelineConfig
    try:
        extra = parameter_overrides(args.sets)
    except ValueError as exc:
        print(f'l3rocc bench: bad --set: {exc}', file=sys.stderr)
        return 2
    from l3rocc_core.device import resolve_device
    try:
        device = str(resolve_device(args.device))
    except ValueError as exc:
        print(f'l3rocc bench: --device {args.device}: {exc}', file=sys.stderr)
        return 2
    progress = not args.no_progress
    if args.batch_rounds < 1 or args.batch_frames < 2 or (args.batch_bags or 0) < 0:
        print('l3rocc bench: --batch-rounds must be >= 1, --batch-frames >= 2 and '
              '--batch-bags >= 0', file=sys.stderr)
        return 2
    cache = args.cache
    runs_dir = os.path.join(cache, 'runs')
    os.makedirs(runs_dir, exist_ok=True)
    cases = suite.select(suite.QUICK_SET if args.quick else suite.DEFAULT_SET, args.sequences)
    skip = set(args.skip)

    # Whether the network can run: the configuration tells (checkpoint path).
    pending = network_available(PipelineConfig().with_values(extra))
    refiners = ['none'] + ([] if pending else ['network'])
    # Speed runs use the configuration's default refiner (when it can run).
    default_refiner = PipelineConfig().refiner.refiner if not pending else 'none'
    if args.soak:
        return _run_soak(args, device, default_refiner)

    n_runs = sum(len(_refiners_of(c, refiners, args.quick)) for c in cases)
    batch_bags = args.batch_bags if args.batch_bags is not None else (
        0 if args.quick else BATCH_DEFAULTS['batch_bags'])
    n_speed = 1 + (default_refiner != 'none')        # speed runs per refiner (see below)
    n_steps = (len(cases) + n_runs * ('accuracy' not in skip)
               + n_speed * (('replay' not in skip) + ('node' not in skip))
               + ('octomap' not in skip)
               + ('compile' not in skip and not pending)
               + ('batch' not in skip and batch_bags > 0))
    step = _Steps(n_steps)
    previous = _load_previous(os.path.join(args.out, 'results.json'))
    results: Dict[str, Any] = {'meta': _meta(args, device)}
    preps = []
    for case in cases:
        step(f'sequence {case.name}: ' + ('cached' if os.path.isdir(
            os.path.join(cache, case.folder)) else 'making it once'))
        preps.append(suite.prepare(case, cache, progress))
    try:   # the overrides against every sequence's own parameters, before any run
        from l3rocc_bench.accuracy import case_config
        for prep in preps:
            case_config(prep, 'none', device, extra)
    except ValueError as exc:
        print(f'l3rocc bench: bad --set for {prep.case.name}: {exc}', file=sys.stderr)
        return 2

    if 'accuracy' not in skip:
        runs = _accuracy(preps, refiners, runs_dir, device, progress, step, args.quick, extra,
                         args.depth)
        means = {}
        for refiner in refiners:
            mine = [r for r in runs if r['refiner'] == refiner]
            used = mine[0]['refiner_used'] if mine else refiner
            means[used] = mean_figures(mine)
            moving = [r for r in mine if r.get('camera') != 'static']
            if 0 < len(moving) < len(mine):
                means[f'{used}, moving cameras'] = mean_figures(moving)
        acc: Dict[str, Any] = {'runs': runs, 'means': means, 'network_pending': pending}
        if 'geometry' in means and 'network' in means:
            acc['network_targets'] = _network_targets(runs)
        results['accuracy'] = acc

    speed: Dict[str, Any] = {}
    by_name = {p.case.name: p for p in preps}
    # The speed targets are the geometry pipeline's (`refiner: none`); the default
    # refiner is measured the same way next to it when it differs.
    speed_refiners = ['none'] + ([default_refiner] if default_refiner != 'none' else [])
    for refiner in speed_refiners:
        suffix = '' if refiner == 'none' else '_' + refiner
        if 'replay' not in skip:
            prep = by_name.get(suite.SPEED_CASE)
            if prep is None:
                prep = suite.prepare(next(c for c in (suite.QUICK_SET if args.quick else
                                                      suite.DEFAULT_SET)
                                          if c.name == suite.SPEED_CASE), cache, progress)
            step(f'speed: l3rocc replay {prep.case.name} (640x480, {prep.case.fps:g} fps, '
                 f'refiner {refiner}) in a subprocess')
            speed['replay' + suffix] = replay_speed(
                prep, os.path.join(runs_dir, 'speed_replay' + suffix), refiner, device,
                extra=extra)
            t = speed['replay' + suffix].get('timing') or {}
            print(f'    {t.get("frames")} frames, {_f(t.get("fps"), 2)} fps, peak RSS '
                  f'{_f(speed["replay" + suffix].get("peak_rss_mb"), 0)} MB', file=sys.stderr)
        if 'node' not in skip:
            seconds = args.node_seconds or (12.0 if args.quick else 30.0)
            warmup = args.node_warmup or (6.0 if args.quick else 10.0)
            step(f'speed: l3rocc_node under a 30 Hz 640x480 camera, {warmup:g} s warm-up + '
                 f'{seconds:g} s (refiner {refiner})')
            tum_occ = os.path.join(runs_dir, f'{suite.TUM_CASE.name}_none', 'occupancy.npz')
            speed['node' + suffix] = node_bench(
                os.path.join(cache, f'node{suffix}.json'), seconds, warmup,
                [f'refiner={refiner}', f'device={device}'] + list(args.sets),
                tum_occ if os.path.isfile(tum_occ) else None)
    if 'octomap' not in skip:
        from l3rocc_bench.octomap import default_variants, tum_octomap_benchmark
        frames = args.octomap_frames or (8 if args.quick else 20)
        step(f'speed: fusion vs OctoMap on {frames} TUM depth maps')
        try:
            # 5 interleaved rounds (a few seconds): per-frame medians robust to load bursts.
            results['octomap'] = tum_octomap_benchmark(
                320, frames, device, warmup=2, variants=default_variants(args.quick), rounds=5)
        except (ImportError, ValueError, RuntimeError) as exc:
            results['octomap'] = {'error': f'{type(exc).__name__}: {exc}'}
    if 'compile' not in skip and not pending:
        from l3rocc_bench.speed import window_pass_timing
        grids = [p for p in preps if p.case.name in (suite.TUM_CASE.name, suite.SPEED_CASE)]
        step("speed: the network's window pass, eager and with network_compile (torch.compile)")
        speed['window_pass'] = window_pass_timing(
            grids, device, progress=lambda m: print(f'    {m}', file=sys.stderr), extra=extra)
    if 'batch' not in skip and batch_bags > 0:
        results['batch'] = _batch(args, batch_bags, cache, runs_dir, progress, step,
                                  dict(extra, refiner=default_refiner, device=device))
    speed['targets'] = speed_targets(speed.get('replay'), speed.get('node'),
                                     results.get('octomap'))
    if results.get('batch'):
        from l3rocc_bench.batch import batch_targets
        speed['targets'] += batch_targets(results['batch'])
    if default_refiner != 'none' and (speed.get('replay_' + default_refiner)
                                      or speed.get('node_' + default_refiner)):
        speed['targets_' + default_refiner] = speed_targets(
            speed.get('replay_' + default_refiner), speed.get('node_' + default_refiner),
            None)[:-1]   # the OctoMap row is the fusion's, the same for both
    results['speed'] = speed
    if previous.get('soak'):
        results['soak'] = previous['soak']      # kept from the last --soak run
    results['meta']['load_average_end'] = load_average()
    results['meta']['wall_s'] = time.perf_counter() - t_start
    results['meta']['sequences'] = [p.case.name for p in preps]
    write_report(results, args.out)
    _print_summary(results, args.out)
    return 0


def _print_summary(results: Dict[str, Any], out: str) -> None:
    from l3rocc_bench.report import fmt, table
    lines = []
    acc = results.get('accuracy')
    if acc:
        rows = [[r['sequence'], r['refiner_used'], fmt(r['occupancy'].get('iou')),
                 fmt(r['occupancy'].get('window_iou')), fmt(r['occupancy'].get('flicker'), 4),
                 fmt(r['depth'].get('abs_rel'))] for r in acc['runs']]
        rows += [[f'mean ({m["sequences"]})', ref, fmt(m['iou']), fmt(m['window_iou']),
                  fmt(m['flicker'], 4), fmt(m['depth_abs_rel'])]
                 for ref, m in acc['means'].items()]
        lines += table(['sequence', 'refiner', 'IoU', 'window IoU', 'flicker', 'AbsRel'], rows)
        if acc.get('network_pending'):
            lines.append(f'refiner network: pending ({acc["network_pending"]})')
        lines.append('')
    targets = (results.get('speed') or {}).get('targets')
    if targets:
        lines += table(['target', 'goal', 'measured', 'status'],
                       [[t['name'], t['target'], f'{fmt(t["measured"], 2)} {t["unit"]}',
                         t['status']] for t in targets])
        lines.append('')
    octo = results.get('octomap') or {}
    ratio = (octo.get('ratio') or {}).get('default')
    if ratio is not None:
        ours = octo['ours']['default']
        lines.append(f'fusion vs OctoMap: {ratio:.1f}x (ours {ours["ms_per_frame"]:.2f} ms, '
                     f'{ours["points_per_s"] / 1e6:.1f} M points/s; OctoMap '
                     f'{octo["octomap"]["ms_per_frame"]:.1f} ms, '
                     f'{octo["octomap"]["points_per_s"] / 1e6:.2f} M points/s; load '
                     f'{octo.get("load_average")})')
        disc = (octo.get('ratio_discretize') or {}).get('default')
        if disc is not None:
            lines.append(f'fusion vs OctoMap discretize: {disc:.1f}x')
    meta = results['meta']
    lines.append(f'load average {meta.get("load_average_start")} -> '
                 f'{meta.get("load_average_end")}; {meta["wall_s"]:.0f} s; -> '
                 f'{os.path.join(out, "results.md")}')
    print('\n'.join(lines))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when it ran (whatever the figures), 1 on a failure, 2 bad input."""
    try:
        return _run(args)
    except ValueError as exc:
        print(f'l3rocc bench: {exc}', file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        kind = getattr(exc, 'kind', type(exc).__name__)
        print(f'l3rocc bench: {exc} [{kind}]', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('l3rocc bench: interrupted', file=sys.stderr)
        return 130
