"""``l3rocc batch`` against the same recordings one after another: the fleet's speed targets.

The step makes a few small synthetic bags once (:func:`batch_cases`, through the suite's cache,
each with its ground truth, so every task replays and scores), writes them into one source list
(each line with its sequence's own parameters, then the benchmark's), and times four ways
of getting the same results, each from the start of its first process to the end of its last:

- ``loop``: one recording after another the way a user does it without ``l3rocc batch``: for
  each line, ``l3rocc replay`` and then ``l3rocc eval`` as commands of their own (each process
  imports torch and builds the pipeline again). This is what the fleet target compares with;
- ``sequential``: ``l3rocc batch --workers 1``, one recording after another in one worker (one
  task at a time with all the CPUs' torch threads; the fork server imports torch and the pipeline
  once): what is left of the batch's gain once start-up costs are shared;
- ``pool``: the default process pool (as many workers as CPUs, one torch thread each);
- ``ray``: ``--ray``, a local Ray instance with as many CPUs (its start included).

Wall time = the ``l3rocc batch`` process from start to exit (interpreter and imports included);
for ``loop`` the sum of its commands'. ``summary.json``'s own ``wall_s`` is kept beside it.
Each round runs the four once, their order rotated from round to round; figures are medians
over the rounds. Peak RSS per worker = the largest ``peak_rss_mb`` of the tasks one worker
process (``pid``) ran.
"""

import importlib.util
import json
import os
import shlex
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from l3rocc_bench.resources import cpu_count, load_average, run_monitored
from l3rocc_bench.speed import _ok, _row, _set_args, TARGETS as SPEED_TARGETS
from l3rocc_bench.suite import Case, Prepared, TEST_SEED_BASE

#: The ways timed, in the order of the first round (module doc).
MODES = ('loop', 'sequential', 'pool', 'ray')
#: What the batch's wall time is compared with for the fleet target.
BASELINE = 'loop'
#: ``l3rocc batch`` options of each executor (the rest at their defaults).
MODE_OPTIONS = {'sequential': ['--workers', '1'], 'pool': [], 'ray': ['--ray']}
#: The fleet's targets (2 CPU cores): batch wall time / one after another, Ray against the pool.
TARGETS = {'batch_ratio': 0.6, 'ray_overhead_pct': 10.0}
#: Frames of each batch bag: a 3.2 s recording at 10 fps (the fleet's recordings are longer;
#: shorter bags measure start-up more than work).
DEFAULT_FRAMES = 32
#: Synthetic family and camera of the bags, in turn: moving cameras (plane sweep needs
#: parallax), the industrial family only (its grid, 96x96x48 voxels, is a quarter of a driving
#: scene's, whose tasks take 2-3 times as long and peak at 2.0-2.3 GiB each on a 2-core machine).
KINDS = (('industrial', 'handheld'), ('industrial', 'orbit'))
#: Seeds of the batch bags start here, apart from the accuracy sequences' (test split).
SEED_OFFSET = 100


def batch_cases(bags: int = 8, frames: int = DEFAULT_FRAMES, width: int = 160) -> List[Case]:
    """Return the batch step's synthetic sequences (test-split seeds, height 3/4 of the width).

    :param bags: how many recordings
    :param frames: frames of each
    :param width: image width (pixels)
    """
    out = []
    for i in range(bags):
        family, camera = KINDS[i % len(KINDS)]
        out.append(Case(f'batch{i}_{family}_{camera}_{width}px', 'synth', family, camera,
                        TEST_SEED_BASE + SEED_OFFSET + i, frames, 10.0, width))
    return out


def write_source_list(preps: Sequence[Prepared], path: str, sets: Dict[str, Any]) -> None:
    """Write an ``l3rocc batch`` source list: one bag a line with its parameters, then ``sets``.

    :param preps: the sequences (their ``gt.npz`` beside the bag is found by the batch)
    :param path: the list file (``.txt``)
    :param sets: parameter values of every line, after each sequence's own (refiner, device,
        the benchmark's ``--set``)
    """
    lines = []
    for prep in preps:
        values = dict(prep.parameters)
        values.update(sets)
        words = [os.path.abspath(prep.bag)]
        if values:
            words += ['--set'] + _set_args(values)
        lines.append(' '.join(shlex.quote(w) for w in words))
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def worker_peaks(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Return the peak RSS (MiB) of each worker process: the largest of its tasks' ``peak_rss_mb``.

    :param rows: ``summary.json`` rows (``pid``, ``peak_rss_mb``)
    :return: pid (as text, JSON keys) -> MiB, in order of first appearance
    """
    out: Dict[str, float] = {}
    for r in rows:
        if r.get('peak_rss_mb') is None or r.get('pid') is None:
            continue
        pid = str(r['pid'])
        out[pid] = max(out.get(pid, 0.0), float(r['peak_rss_mb']))
    return out


def worker_growth(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Return how much each worker's task peak RSS grew from its first task to its last (MiB).

    Rows are in source order, the order the tasks were handed out, so a worker's rows are in
    the order it ran them; workers with one task are left out. The growth holds both what a
    task's peak keeps of the tasks before it in the same process (memory a long batch would
    accumulate) and the difference between the recordings themselves.

    :param rows: ``summary.json`` rows (``pid``, ``peak_rss_mb``)
    :return: pid (as text) -> last task's peak minus first task's peak (MiB)
    """
    seen: Dict[str, List[float]] = {}
    for r in rows:
        if r.get('peak_rss_mb') is not None and r.get('pid') is not None:
            seen.setdefault(str(r['pid']), []).append(float(r['peak_rss_mb']))
    return {pid: p[-1] - p[0] for pid, p in seen.items() if len(p) > 1}


def read_source_list(path: str) -> List[List[str]]:
    """Return the words of each line of a source list (blank lines and ``#`` comments left out)."""
    with open(path, 'r', encoding='utf-8') as f:
        return [shlex.split(line) for line in f if line.strip() and not line.lstrip()
                .startswith('#')]


def run_loop(source_list: str, out_dir: str, timeout_s: float = 1800.0) -> Dict[str, Any]:
    """Run ``l3rocc replay`` then ``l3rocc eval`` per line, as commands one after another.

    The ground truth is the ``gt.npz`` beside each bag (as ``l3rocc batch`` finds it).

    :param source_list: the source list file (a bag, then its ``--set`` words, per line)
    :param out_dir: one output folder per line (``000``, ``001``, ...)
    :return: ``mode`` 'loop', ``command`` (the first line's two), ``rc`` (the first non-zero),
        ``wall_s`` (the sum of the commands'), ``ok`` / ``failed`` (lines),
        ``worker_peak_rss_mb`` (one entry per command process), ``load_average_start``/``_end``;
        ``error`` when a command failed
    """
    load = load_average()
    cli = [sys.executable, '-m', 'l3rocc_core.cli']
    sources = read_source_list(source_list)
    wall, ok, rc, peaks, commands = 0.0, 0, 0, {}, []
    for i, words in enumerate(sources):
        bag, options = words[0], words[1:]
        out = os.path.join(out_dir, f'{i:03d}')
        steps = [['replay', bag, '--out', out, '--no-progress'] + options,
                 ['eval', os.path.join(out, 'occupancy.npz'), '--gt',
                  os.path.join(os.path.dirname(os.path.abspath(bag)), 'gt.npz'), '--out', out,
                  '--quiet']]
        if i == 0:
            commands = ['l3rocc ' + ' '.join(shlex.quote(w) for w in step) for step in steps]
        for k, step in enumerate(steps):
            with open(os.devnull, 'wb') as devnull:
                run = run_monitored(cli + step, timeout_s=timeout_s, stdout=devnull)
            wall += run['wall_s']
            peaks[f'{i}.{k}'] = run['peak_rss_mb']
            if run['rc']:
                rc = rc or run['rc']
                break
        else:
            ok += 1
    out: Dict[str, Any] = {'mode': 'loop', 'command': '; '.join(commands), 'rc': rc,
                           'wall_s': round(wall, 3), 'ok': ok, 'failed': len(sources) - ok,
                           'workers': 1, 'worker_peak_rss_mb': peaks,
                           'load_average_start': load, 'load_average_end': load_average()}
    if ok < len(sources):
        out['error'] = (f'{len(sources) - ok} of {len(sources)} sources failed (first exit '
                        f'status {rc})')
    return out


def run_once(source_list: str, out_dir: str, mode: str, progress: bool = False,
             timeout_s: float = 1800.0) -> Dict[str, Any]:
    """Run ``l3rocc batch`` once in a subprocess with ``mode``'s executor; return its figures.

    :param source_list: the source list file
    :param out_dir: the batch's output folder (results rerun: ``--force``)
    :param mode: one of :data:`MODES`
    :param progress: show the batch's progress bar (stderr)
    :return: ``mode``, ``command``, ``rc``, ``wall_s`` (the process), ``batch_wall_s``
        (``summary.json``), ``workers``, ``threads_per_task``, ``ok``, ``failed``,
        ``worker_peak_rss_mb`` (pid -> MiB), ``worker_growth_mb`` (:func:`worker_growth`),
        ``task_peak_rss_mb`` (per source, in list order),
        ``load_average_start``/``_end``; ``error`` when the batch did not run every source
    """
    if mode == 'loop':
        return run_loop(source_list, out_dir, timeout_s)
    cmd = [sys.executable, '-m', 'l3rocc_core.cli', 'batch', source_list, '--out', out_dir,
           '--force'] + MODE_OPTIONS[mode] + ([] if progress else ['--no-progress'])
    summary_path = os.path.join(out_dir, 'summary.json')
    if os.path.exists(summary_path):
        os.remove(summary_path)
    load = load_average()
    with open(os.devnull, 'wb') as devnull:
        run = run_monitored(cmd, timeout_s=timeout_s, stdout=devnull)
    out: Dict[str, Any] = {'mode': mode, 'command': 'l3rocc ' + ' '.join(cmd[3:]),
                           'rc': run['rc'], 'wall_s': run['wall_s'],
                           'driver_peak_rss_mb': run['peak_rss_mb'], 'load_average_start': load,
                           'load_average_end': load_average()}
    if not os.path.isfile(summary_path):
        out['error'] = f'l3rocc batch exited with {run["rc"]} and wrote no summary'
        return out
    with open(summary_path, 'r', encoding='utf-8') as f:
        summary = json.load(f)
    rows = summary.get('rows') or []
    out.update(batch_wall_s=summary.get('wall_s'), workers=summary.get('workers'),
               threads_per_task=summary.get('threads_per_task'), ok=summary.get('ok'),
               failed=summary.get('failed'), worker_peak_rss_mb=worker_peaks(rows),
               worker_growth_mb=worker_growth(rows),
               task_peak_rss_mb=[r.get('peak_rss_mb') for r in rows])
    if summary.get('failed') or run['rc']:
        bad = [f'{r["name"]}: [{r.get("kind")}] {r.get("error")}' for r in rows
               if r.get('status') != 'ok']
        out['error'] = (f'l3rocc batch exited with {run["rc"]}, {summary.get("failed")} '
                        'failed' + (f' ({bad[0]})' if bad else ''))
    return out


def ray_available() -> bool:
    """Whether ``ray`` can be imported (without importing it here)."""
    return importlib.util.find_spec('ray') is not None


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    v = [float(x) for x in values if x is not None]
    return statistics.median(v) if v else None


def summarise(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Return the medians over rounds, the ratios to the baseline and Ray's overhead.

    A run with an ``error`` does not count. Ratios are of the medians: ``ratio[m]`` =
    ``wall_s[m] / wall_s[baseline]`` for each batch executor, where ``baseline`` is
    :data:`BASELINE` when it was timed, else ``sequential``; ``ratio_sequential[m]`` =
    ``wall_s[m] / wall_s['sequential']`` (pool and Ray against ``--workers 1``);
    ``ray_overhead_pct`` = ``(wall_s['ray'] / wall_s['pool'] - 1) * 100``. Peak RSS per
    worker: the largest over every round and worker of a mode, the median of the workers'
    peaks, and the largest growth from a worker's first task to its last (``growth_max``).

    :param runs: mode -> the runs of :func:`run_once`, one per round
    """
    wall: Dict[str, Optional[float]] = {}
    batch_wall: Dict[str, Optional[float]] = {}
    peak: Dict[str, Dict[str, Any]] = {}
    for mode, done in runs.items():
        good = [r for r in done if 'error' not in r]
        wall[mode] = _median([r['wall_s'] for r in good])
        batch_wall[mode] = _median([r.get('batch_wall_s') for r in good])
        peaks = [p for r in good for p in (r.get('worker_peak_rss_mb') or {}).values()]
        growth = [g for r in good for g in (r.get('worker_growth_mb') or {}).values()]
        peak[mode] = {'max': max(peaks) if peaks else None, 'median': _median(peaks),
                      'growth_max': max(growth) if growth else None,
                      'workers': max((len(r.get('worker_peak_rss_mb') or {}) for r in good),
                                     default=0)}
    baseline = BASELINE if wall.get(BASELINE) else 'sequential'

    def ratios(base: str) -> Dict[str, Optional[float]]:
        b = wall.get(base)
        return {m: (wall[m] / b if b and wall.get(m) is not None else None)
                for m in wall if m not in (base, BASELINE)}

    pool, ray = wall.get('pool'), wall.get('ray')
    overhead = (ray / pool - 1.0) * 100.0 if pool and ray is not None else None
    return {'wall_s': wall, 'batch_wall_s': batch_wall, 'baseline': baseline,
            'ratio': ratios(baseline),
            'ratio_sequential': ratios('sequential'),
            'ray_overhead_pct': overhead, 'worker_peak_rss_mb': peak}


def batch_bench(preps: Sequence[Prepared], out_dir: str, sets: Dict[str, Any],
                rounds: int = 1, modes: Sequence[str] = MODES, progress: bool = False,
                say: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Time ``l3rocc batch`` on ``preps`` one after another, on the pool and on Ray.

    :param preps: the recordings (e.g. :func:`batch_cases`, prepared)
    :param out_dir: the source list and one output folder per executor
    :param sets: parameter values of every source, after its own (refiner, device, overrides)
    :param rounds: runs of each executor (order rotated per round); figures are medians
    :param modes: executors to time (:data:`MODES`); ``ray`` is left out, with a note, where
        ray cannot be imported
    :param progress: the batches' progress bars
    :param say: callable(message) told of each run as it ends, or None
    :return: ``bags``, ``frames``, ``resolution``, ``parameters``, ``rounds``, ``cpu_cores``,
        ``runs`` (mode -> one :func:`run_once` dict per round), ``not_run`` (mode -> why),
        the figures of :func:`summarise`, ``load_average`` (start, end)
    """
    os.makedirs(out_dir, exist_ok=True)
    source_list = os.path.join(out_dir, 'sources.txt')
    write_source_list(preps, source_list, sets)
    not_run: Dict[str, str] = {}
    todo = list(modes)
    if 'ray' in todo and not ray_available():
        todo.remove('ray')
        not_run['ray'] = 'ray not installed (pip install .[fleet])'
    runs: Dict[str, List[Dict[str, Any]]] = {m: [] for m in todo}
    load = load_average()
    for k in range(max(1, int(rounds))):
        for mode in todo[k % len(todo):] + todo[:k % len(todo)]:
            r = run_once(source_list, os.path.join(out_dir, mode), mode, progress)
            r['round'] = k + 1
            runs[mode].append(r)
            if say is not None:
                peaks = r.get('worker_peak_rss_mb') or {}
                how = (f'{len(peaks)} commands, peak RSS {max(peaks.values(), default=0):.0f} '
                       'MiB' if mode == BASELINE else
                       f'{r.get("workers")} workers x {r.get("threads_per_task")} threads, '
                       'peak RSS per worker '
                       + (', '.join(f'{v:.0f}' for v in peaks.values()) or '?') + ' MiB')
                say(f'{mode} (round {k + 1}/{rounds}): {r["wall_s"]:.1f} s, {r.get("ok")} ok, '
                    + how + (f'; {r["error"]}' if 'error' in r else ''))
    case = preps[0].case if preps else None
    out: Dict[str, Any] = {
        'bags': len(preps), 'frames': case.frames if case else None,
        'resolution': f'{case.width}x{case.width * 3 // 4}' if case else None,
        'parameters': dict(a.split('=', 1) for a in _set_args(sets)),
        'rounds': max(1, int(rounds)),
        'cpu_cores': cpu_count(), 'runs': runs, 'not_run': not_run,
        'load_average': [load, load_average()]}
    out.update(summarise(runs))
    return out


def batch_targets(batch: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows target / measured / PASS|MISS|n/a of the fleet targets (:data:`TARGETS`).

    :param batch: :func:`batch_bench`'s result, or None (every row n/a)
    """
    b = batch or {}
    wall = b.get('wall_s') or {}
    ratio = b.get('ratio') or {}
    not_run = b.get('not_run') or {}
    baseline = b.get('baseline', 'sequential')
    base = wall.get(baseline)
    seq_ratio = b.get('ratio_sequential') or {}
    limit = TARGETS['batch_ratio']
    rows = []
    for mode, name in (('pool', 'l3rocc batch, pool'), ('ray', 'l3rocc batch --ray')):
        r = ratio.get(mode)
        against = (f'{_s(base)} one after another (replay + eval per bag, each a command)'
                   if baseline == 'loop' else f'{_s(base)} one after another (--workers 1)')
        if baseline == 'loop' and seq_ratio.get(mode) is not None:
            against += (f'; {seq_ratio[mode]:.2f}x of {_s(wall.get("sequential"))} with '
                        '--workers 1')
        note = (not_run[mode] if mode in not_run else
                f'{b.get("bags")} bags: {_s(wall.get(mode))} against {against}' if b
                else 'not measured')
        rows.append(_row(f'{name} / one after another (wall time)', f'<= {limit:g}x', r,
                         _ok(r, lambda v: v <= limit), 'x', note))
    over = b.get('ray_overhead_pct')
    limit = TARGETS['ray_overhead_pct']
    rows.append(_row('Ray overhead against the pool', f'<= {limit:g} %', over,
                     _ok(over, lambda v: v <= limit), '%',
                     not_run.get('ray', f'{_s(wall.get("ray"))} against {_s(wall.get("pool"))}'
                                 if b else 'not measured')))
    peaks = {m: p for m, p in (b.get('worker_peak_rss_mb') or {}).items() if m != BASELINE}
    most = max((p['max'] for p in peaks.values() if p.get('max') is not None), default=None)
    gb = most / 1024.0 if most is not None else None
    limit = SPEED_TARGETS['peak_rss_gb']
    rows.append(_row('peak RSS per batch worker (largest)', f'<= {limit:g} GB (as the node)',
                     gb, _ok(gb, lambda v: v <= limit), 'GB',
                     ', '.join(f'{m} {_mib(p.get("max"))} (+{_mib(p.get("growth_max"))} first '
                               'to last task)' for m, p in peaks.items())))
    return rows


def _s(v: Optional[float]) -> str:
    return '?' if v is None else f'{v:.1f} s'


def _mib(v: Optional[float]) -> str:
    return '?' if v is None else f'{v:.0f} MiB'
