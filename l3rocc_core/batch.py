"""Many recordings, one task each: replay (+ eval, render) per source, one result row per task.

The task function :func:`run_task` is the same under both executors: a local process pool
(:func:`run_pool`, ``concurrent.futures`` with the ``forkserver`` context) and Ray
(:func:`run_ray`, one ``@ray.remote(num_cpus=threads)`` task per source, collected with
``ray.wait`` as they finish). A task never raises: a source that cannot be processed is a row with
``status`` 'failed', its ``kind`` and its ``error``, and the others go on.

Results go to ``OUT/<name>/`` (what ``l3rocc replay``, ``eval`` and ``render`` write there; the
Rerun recording ``recording.rrd`` when asked) plus ``OUT/<name>/batch.json`` (the row and the
task's fingerprint), written last: a source whose ``timing.json`` and ``batch.json`` exist, with
the same fingerprint (parameters, source options, ground truth, render, rerun), is done and is
not run again unless forced. ``OUT/summary.json``, ``summary.csv``, ``summary.md`` and
``summary.png`` describe the whole batch.
"""

import argparse
from concurrent.futures import as_completed, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import ctypes
from dataclasses import asdict, dataclass, field
import gc
import glob
import importlib
import json
import math
import multiprocessing
import os
from pathlib import Path
import re
import shlex
import socket
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

SUMMARY_JSON = 'summary.json'
SUMMARY_CSV = 'summary.csv'
SUMMARY_MD = 'summary.md'
SUMMARY_PNG = 'summary.png'
RESULT_FILE = 'batch.json'
#: The task's Rerun recording (``--rerun``), named after the task in the viewer.
RERUN_FILE = 'recording.rrd'
#: What the forkserver imports once for all workers (torch, the pipeline).
PRELOAD = ['l3rocc_core.batch', 'l3rocc_core.tools.replay']
METRICS_FILE = 'metrics.json'
LEROBOT_DIR = 'lerobot'
LIST_SUFFIXES = ('.txt', '.list')
GT_FILE = 'gt.npz'
#: Scores copied from metrics.json into a row.
METRIC_KEYS = ('iou', 'precision', 'recall', 'flicker')
#: Row columns, in table order (metrics follow ``wall_s``).
ROW_KEYS = ('name', 'status', 'kind', 'error', 'frames', 'fps', 'wall_s') + METRIC_KEYS + (
    'occupied_mean', 'skipped_frames', 'peak_rss_mb', 'pid', 'host', 'ray_node_id', 'resumed',
    'lerobot_episode',
    'source', 'gt', 'out')


# Run as ``python -m l3rocc_core.cli``, a worker re-imports that main module after the preload
# imported it already; runpy's warning about it says nothing about the batch.
warnings.filterwarnings('ignore', message='.*found in sys.modules after import of package',
                        category=RuntimeWarning)


class BatchError(RuntimeError):
    """A batch that cannot start (bad options, output folder, Ray address); ``kind`` says why."""

    def __init__(self, kind: str, message: str):
        """Store the kind with the message."""
        super().__init__(message)
        self.kind = kind


# ------------------------------------------------------------------------------ sources
@dataclass
class SourceSpec:
    """One recording and its own options (a line of a source list).

    :param path: bag (folder, .mcap, .db3), video file or image folder
    :param intrinsics: ``--intrinsics`` of a video/image folder
    :param poses: ``--poses`` TUM file of a video/image folder
    :param fps: ``--fps`` of a video/image folder without stamps
    :param gt: ground-truth occupancy file (else looked up, :func:`find_ground_truth`)
    :param sets: ``name=value`` overrides after the batch's own ``--set``
    """

    path: str
    intrinsics: Optional[str] = None
    poses: Optional[str] = None
    fps: Optional[float] = None
    gt: Optional[str] = None
    sets: List[str] = field(default_factory=list)


def _line_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='source list line', add_help=False, exit_on_error=False,
                                allow_abbrev=False)
    p.add_argument('path')
    p.add_argument('--intrinsics')
    p.add_argument('--poses')
    p.add_argument('--fps', type=float)
    p.add_argument('--gt')
    p.add_argument('--set', nargs='+', action='extend', default=[])
    return p


def read_source_list(path: str) -> List[SourceSpec]:
    """Read a source list: one source a line, ``#`` comments, options after the path.

    A line is ``SOURCE [--intrinsics SPEC] [--poses FILE] [--fps R] [--gt FILE]
    [--set name=value ...]`` (shell quoting); relative paths are relative to the list's folder.

    :raises BatchError: kind 'bad_source_list'
    """
    base = os.path.dirname(os.path.abspath(path))
    parser = _line_parser()
    specs = []
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError('bad_source_list', f'cannot read the source list {path}: {exc}')
    for n, line in enumerate(lines, 1):
        try:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            a, extra = parser.parse_known_args(words)
            if extra:
                raise ValueError(f'unknown options {extra}')
        except (ValueError, argparse.ArgumentError, SystemExit) as exc:
            raise BatchError('bad_source_list', f'{path}:{n}: {exc or "no source on the line"}')

        def rel(p: Optional[str]) -> Optional[str]:
            return p if p is None or os.path.isabs(p) or p.startswith('hfov=') or \
                ',' in p else os.path.join(base, p)
        specs.extend(SourceSpec(p, rel(a.intrinsics), rel(a.poses), a.fps, rel(a.gt),
                                list(a.set)) for p in _glob(rel(a.path)))
    return specs


def _glob(item: str) -> List[str]:
    """Paths matching ``item`` (sorted), or ``[item]`` when it has no wildcard or no match."""
    if glob.has_magic(item):
        found = sorted(glob.glob(item))
        if found:
            return found
    return [item]


def expand_sources(items: Sequence[str]) -> List[SourceSpec]:
    """Return the sources of command-line items: paths, globs, source lists (``.txt``, ``.list``).

    The same path with the same options twice is kept once (the first).
    """
    specs: List[SourceSpec] = []
    for item in items:
        if item.lower().endswith(LIST_SUFFIXES) and os.path.isfile(item):
            specs.extend(read_source_list(item))
        else:
            specs.extend(SourceSpec(p) for p in _glob(item))
    seen, unique = set(), []
    for s in specs:
        key = json.dumps(dict(asdict(s), path=os.path.realpath(s.path)), sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def _safe(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'source'


def source_names(paths: Sequence[str]) -> List[str]:
    """Return the result folder names: the file name without extension, or the folder name.

    Sources with the same name get their parent folders' names in front (``a-sequence``,
    ``b-sequence``), as many as it takes; sources that still collide (one path given with two
    option sets) get ``-2``, ``-3`` in list order. Independent of the order of the others.
    """
    absolute = [os.path.abspath(p) for p in paths]
    unique = list(dict.fromkeys(absolute))
    parts = []
    for p in unique:
        path = Path(p)
        base = path.name if path.is_dir() or not path.suffix else path.stem
        parts.append([_safe(x) for x in path.parent.parts[1:]] + [_safe(base)])
    names = [p[-1] for p in parts]
    for depth in range(2, max((len(p) for p in parts), default=1) + 1):
        counts: Dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        if all(c == 1 for c in counts.values()):
            break
        names = ['-'.join(p[-depth:]) if counts[n] > 1 else n for n, p in zip(names, parts)]
    by_path = dict(zip(unique, names))
    seen: Dict[str, int] = {}
    out = []
    for p in absolute:
        n = by_path[p]
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f'{n}-{seen[n]}')
    return out


def find_ground_truth(spec: SourceSpec, name: str, gt_dir: Optional[str]) -> Optional[str]:
    """Return the ground-truth occupancy file of a source, or None when it has none.

    Looked for in this order: the source's own ``--gt``, ``GT_DIR/<name>/gt.npz``,
    ``GT_DIR/<name>.npz``, a ``gt.npz`` beside the source file (inside a source folder).
    """
    if spec.gt:
        return spec.gt
    candidates = []
    if gt_dir:
        candidates += [os.path.join(gt_dir, name, GT_FILE), os.path.join(gt_dir, name + '.npz')]
    p = Path(spec.path)
    candidates.append(str((p if p.is_dir() else p.parent) / GT_FILE))
    return next((c for c in candidates if os.path.isfile(c)), None)


# ------------------------------------------------------------------------------ tasks
@dataclass
class ReplayOptions:
    """The ``l3rocc replay`` options of a task (a batch's, merged with a source's own).

    :param params_file: ROS 2 parameter file, or None
    :param sets: ``name=value`` overrides (the batch's, then the source's)
    :param intrinsics: ``--intrinsics`` of a video/image folder
    :param poses: ``--poses`` of a video/image folder
    :param fps: ``--fps`` of a video/image folder without stamps
    :param max_frames: ``--max-frames``
    """

    params_file: Optional[str] = None
    sets: List[str] = field(default_factory=list)
    intrinsics: Optional[str] = None
    poses: Optional[str] = None
    fps: Optional[float] = None
    max_frames: Optional[int] = None

    def for_source(self, spec: 'SourceSpec') -> 'ReplayOptions':
        """Return these options with a source's own on top (its ``--set`` after these)."""
        return ReplayOptions(self.params_file, list(self.sets) + list(spec.sets),
                             spec.intrinsics or self.intrinsics, spec.poses or self.poses,
                             spec.fps or self.fps, self.max_frames)


@dataclass
class Task:
    """Everything a worker needs to process one source (picklable).

    :param name: result folder name
    :param source: the recording
    :param out_dir: ``OUT/<name>``
    :param replay: replay options
    :param gt: ground-truth occupancy file to score against, or None
    :param render: write previews (``l3rocc render``)
    :param threads: torch threads of the task
    :param fingerprint: what makes a stored result this task's (see :func:`fingerprint`)
    :param rerun: also write the Rerun recording ``OUT/<name>/recording.rrd`` (as
        ``l3rocc replay --rerun``)
    """

    name: str
    source: str
    out_dir: str
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    gt: Optional[str] = None
    render: bool = False
    threads: int = 1
    fingerprint: Dict[str, Any] = field(default_factory=dict)
    rerun: bool = False


def fingerprint(task: Task, config_values: Dict[str, Any]) -> Dict[str, Any]:
    """Return what a stored result must match to be reused: every parameter and option.

    :param config_values: ``PipelineConfig.as_flat()`` of the task's parameters
    """
    r = task.replay
    return json.loads(json.dumps({
        'parameters': config_values, 'source': os.path.abspath(task.source),
        'intrinsics': r.intrinsics, 'poses': r.poses, 'fps': r.fps, 'max_frames': r.max_frames,
        'gt': os.path.abspath(task.gt) if task.gt else None, 'render': task.render,
        'rerun': task.rerun},
        sort_keys=True, default=str))


def release_free_memory() -> None:
    """Hand the C heap's free memory back to the system (glibc ``malloc_trim``; else nothing).

    A worker runs task after task; glibc keeps what an earlier task freed (measured: resident
    memory 290 MiB after the imports, 520-770 MiB after one to five default replays, back to
    290 MiB after a trim), which would count into the next task's peak and grow the worker.
    """
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Restart this process's peak resident set size (Linux ``clear_refs``); False if it cannot."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (since :func:`reset_peak_rss`)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource   # (peak over the process's life; kilobytes on Linux)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _tool(name: str, argv: List[str]) -> int:
    """Run ``l3rocc NAME argv`` in this process, raising its errors instead of reporting them."""
    module = importlib.import_module('l3rocc_core.tools.' + name)
    parser = argparse.ArgumentParser(prog=f'l3rocc {name}', exit_on_error=False)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f'l3rocc {name} {" ".join(argv)}: {exc}')
    return module._run(args)


def _json_number(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _occupied_mean(path: str) -> float:
    with np.load(path, allow_pickle=False) as z:
        counts = np.diff(z['indptr'])
    return round(float(counts.mean()), 1) if len(counts) else 0.0


def run_task(task: Task) -> Dict[str, Any]:
    """Process one source: replay, then eval (with ground truth), then render (if asked).

    Never raises for a bad source: the row says what went wrong.

    :return: the result row (keys of :data:`ROW_KEYS` that apply)
    """
    t0 = time.perf_counter()
    release_free_memory()
    reset_peak_rss()
    row: Dict[str, Any] = {'name': task.name, 'status': 'failed', 'kind': '', 'error': '',
                           'source': task.source, 'gt': task.gt, 'out': task.out_dir,
                           'resumed': False}
    try:
        for stale in (RESULT_FILE, RERUN_FILE):   # a task that fails from here on leaves no
            path = os.path.join(task.out_dir, stale)   # finished result (or an older one) behind
            if os.path.exists(path):
                os.remove(path)
        import torch
        torch.set_num_threads(max(1, int(task.threads)))
        from l3rocc_core.tools.replay import load_config, OCCUPANCY_FILE, replay
        r = task.replay
        config = load_config(r.params_file, r.sets)
        rerun = None
        if task.rerun:   # (makes OUT/<name>, which the recorder writes into from the start)
            from l3rocc_core.viewers import check_output_file
            rerun = check_output_file(os.path.join(task.out_dir, RERUN_FILE), '.rrd')
        result = replay(task.source, task.out_dir, config, r.max_frames, progress=False,
                        intrinsics=r.intrinsics, poses=r.poses, fps=r.fps, rerun=rerun,
                        recording_name=task.name)
        occupancy = os.path.join(task.out_dir, OCCUPANCY_FILE)
        row.update(frames=result.frames, fps=round(result.fps, 3),
                   skipped_frames=int(sum(result.skipped.values())),
                   occupied_mean=_occupied_mean(occupancy))
        if task.gt:
            _tool('eval', [occupancy, '--gt', task.gt, '--out', task.out_dir, '--quiet'])
            with open(os.path.join(task.out_dir, METRICS_FILE), encoding='utf-8') as f:
                metrics = json.load(f)
            row.update({k: _json_number(metrics.get(k)) for k in METRIC_KEYS})
        if task.render:
            argv = [occupancy, '--source', task.source, '--out', task.out_dir, '--quiet']
            _tool('render', argv + (['--intrinsics', r.intrinsics] if r.intrinsics else []))
        row['status'] = 'ok'
    except KeyboardInterrupt:
        raise
    except Exception as exc:   # any failure is this source's row, never the batch's
        row['kind'] = str(getattr(exc, 'kind', type(exc).__name__))
        row['error'] = str(exc) or type(exc).__name__
    row['wall_s'] = round(time.perf_counter() - t0, 3)
    row['peak_rss_mb'] = peak_rss_mb()
    row['pid'] = os.getpid()
    row['host'] = socket.gethostname()
    ray = sys.modules.get('ray')
    if ray is not None and ray.is_initialized():   # a Ray task: which node ran it
        row['ray_node_id'] = ray.get_runtime_context().get_node_id()
    if row['status'] == 'ok':
        _write_json(os.path.join(task.out_dir, RESULT_FILE),
                    {'row': row, 'fingerprint': task.fingerprint})
    return row


def failed_row(task: Task, kind: str, error: str) -> Dict[str, Any]:
    """Return the row of a task that did not run or whose worker died."""
    return {'name': task.name, 'status': 'failed', 'kind': kind, 'error': error,
            'source': task.source, 'gt': task.gt, 'out': task.out_dir, 'resumed': False}


def stored_row(task: Task) -> Optional[Dict[str, Any]]:
    """Return the row of a finished earlier run of this very task, or None (module doc)."""
    from l3rocc_core.tools.replay import TIMING_FILE
    path = os.path.join(task.out_dir, RESULT_FILE)
    if not os.path.exists(os.path.join(task.out_dir, TIMING_FILE)) or not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    if stored.get('fingerprint') != task.fingerprint or stored.get('row', {}).get(
            'status') != 'ok':
        return None
    return dict(stored['row'], resumed=True)


# ------------------------------------------------------------------------------ executors
OnRow = Callable[[Dict[str, Any]], None]


def run_pool(tasks: Sequence[Task], workers: int, on_row: OnRow,
             fn: Callable[[Task], Dict[str, Any]] = run_task) -> None:
    """Run ``fn`` on every task in a local process pool; ``on_row`` gets each row as it ends.

    Workers come from a ``forkserver`` that has imported the pipeline once (``spawn`` where
    there is none), so each starts without re-importing torch. A worker that dies (killed,
    out of memory, crashed) breaks the pool: its unfinished tasks are then run again one at a
    time, each in a fresh process, so that only the task that kills its worker again fails.
    """
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context('forkserver' if 'forkserver' in methods else 'spawn')
    if 'forkserver' in methods:
        ctx.set_forkserver_preload(PRELOAD)
    broken: List[Task] = []
    pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx)
    try:
        futures = {pool.submit(fn, t): t for t in tasks}
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                row = fut.result()
            except BrokenProcessPool:
                broken.append(task)
                continue
            except Exception as exc:   # e.g. a result that cannot be sent back
                row = failed_row(task, type(exc).__name__, str(exc))
            on_row(row)
    except BaseException:
        # Ctrl-C: stop the running sources too (left without batch.json: they run next time);
        # shutdown alone would wait for them. ProcessPoolExecutor has no public way before 3.14.
        for proc in list((getattr(pool, '_processes', None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    for task in sorted(broken, key=lambda t: tasks.index(t)):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as alone:
            try:
                row = alone.submit(fn, task).result()
            except BrokenProcessPool:
                row = failed_row(task, 'worker_died', 'the worker process died while '
                                 'processing this source (killed, out of memory, or crashed)')
        on_row(row)


def check_ray_address(address: str, timeout_s: float) -> None:
    """Fail fast when nothing listens at a Ray address (``ray.init`` would wait for minutes).

    :param address: ``host:port`` or ``ray://host:port``; ``auto`` is left to Ray
    :raises BatchError: kind 'ray_unreachable' or 'bad_ray_address'
    """
    if address == 'auto':
        return
    hostport = address.split('://', 1)[-1]
    host, sep, port = hostport.rpartition(':')
    if not sep or not host or not port.isdigit():
        raise BatchError('bad_ray_address', f'--ray {address!r}: expected HOST:PORT (the head '
                         "node's GCS address, e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BatchError('ray_unreachable', f'no Ray cluster answers at {address} within '
                         f'{timeout_s:g} s ({exc}): start one with `ray start --head` there, or '
                         'give --ray without an address for a local instance')


def run_ray(tasks: Sequence[Task], address: Optional[str], workers: int, threads: int,
            on_row: OnRow, timeout_s: float = 5.0) -> None:
    """Run every task as a Ray task (``num_cpus=threads``); ``on_row`` gets each row as it ends.

    Uses the Ray instance this process is already connected to; else joins ``address``; else
    starts a local instance with ``workers * threads`` CPUs (and stops it afterwards).

    :raises BatchError: kind 'ray_unreachable' (nothing answers at ``address``)
    """
    import ray
    started = False
    if not ray.is_initialized():
        if address:
            check_ray_address(address, timeout_s)
            ray.init(address=address, log_to_driver=False, logging_level='WARNING')
        else:
            ray.init(num_cpus=max(1, workers) * max(1, threads), include_dashboard=False,
                     log_to_driver=False, logging_level='WARNING')
        started = True
    # Workers import l3rocc_core as this process does when it is installed, on PYTHONPATH or
    # in the working directory (Ray starts local workers there); cluster nodes need it installed.
    remote = ray.remote(num_cpus=max(1, threads), max_retries=0)(run_task)
    try:
        pending = {remote.remote(t): t for t in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as exc:   # the worker died, or Ray failed
                    row = failed_row(task, type(exc).__name__, str(exc).strip().splitlines()[0])
                on_row(row)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------ batch
@dataclass
class BatchOptions:
    """What ``l3rocc batch`` was asked to do (see ``l3rocc batch --help``)."""

    sources: List[str]
    out: str
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    gt_dir: Optional[str] = None
    render: bool = False
    export: Optional[str] = None
    workers: Optional[int] = None
    threads: Optional[int] = None
    ray: Optional[str] = None        # None: process pool; '': local Ray; else an address
    ray_timeout_s: float = 5.0
    force: bool = False
    progress: bool = True
    rerun: bool = False


def cpu_count() -> int:
    """Return how many CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan(opts: BatchOptions) -> Tuple[List[Task], List[Dict[str, Any]], List[str]]:
    """Turn the options into tasks, and rows for the sources that fail before they run.

    :return: (tasks, failed rows: missing sources, bad per-source parameters; the names of
        all sources in the order given)
    :raises BatchError: no sources, bad batch parameters, an output folder that cannot be made
    """
    from l3rocc_core.tools.replay import load_config
    specs = expand_sources(opts.sources)
    if not specs:
        raise BatchError('no_sources', 'no sources given')
    try:
        load_config(opts.replay.params_file, opts.replay.sets)
    except (OSError, ValueError) as exc:
        raise BatchError('bad_parameters', f'bad parameters: {exc}')
    if opts.rerun:
        from l3rocc_core.viewers import ViewerUnavailable
        from l3rocc_core.viewers.rerun_log import import_rerun
        try:
            import_rerun()
        except ViewerUnavailable as exc:
            raise BatchError(exc.kind, str(exc))
    try:
        os.makedirs(opts.out, exist_ok=True)
        probe = os.path.join(opts.out, '.write-test')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as exc:
        raise BatchError('bad_output', f'cannot write the output folder {opts.out}: {exc}')
    workers = opts.workers or cpu_count()
    threads = opts.threads or max(1, cpu_count() // workers)
    tasks, failed = [], []
    names = source_names([s.path for s in specs])
    for spec, name in zip(specs, names):
        task = Task(name, spec.path, os.path.join(opts.out, name),
                    opts.replay.for_source(spec), find_ground_truth(spec, name, opts.gt_dir),
                    opts.render, threads, rerun=opts.rerun)
        if not os.path.exists(spec.path):
            failed.append(failed_row(task, 'missing_source', f'{spec.path} does not exist'))
            continue
        try:
            values = load_config(task.replay.params_file, task.replay.sets).as_flat()
        except (OSError, ValueError) as exc:
            failed.append(failed_row(task, 'bad_parameters', f'bad parameters: {exc}'))
            continue
        task.fingerprint = fingerprint(task, values)
        tasks.append(task)
    return tasks, failed, names


def run_batch(opts: BatchOptions) -> Dict[str, Any]:
    """Run the whole batch; write the per-source results and the summary files.

    :return: the summary (``executor``, ``rows`` in source order, totals)
    :raises BatchError: the batch cannot start (see :func:`plan`, :func:`check_ray_address`)
    """
    from tqdm import tqdm
    t0 = time.perf_counter()
    tasks, failed, names = plan(opts)
    executor = 'pool' if opts.ray is None else 'ray'
    if opts.ray:
        check_ray_address(opts.ray, opts.ray_timeout_s)
    rows: Dict[str, Dict[str, Any]] = {r['name']: r for r in failed}
    todo = []
    for task in tasks:
        old = None if opts.force else stored_row(task)
        if old is not None:
            rows[task.name] = old
        else:
            todo.append(task)
    bar = tqdm(total=len(tasks) + len(failed), initial=len(rows), desc='batch', unit='source',
               disable=not opts.progress, file=sys.stderr)

    def on_row(row: Dict[str, Any]) -> None:
        rows[row['name']] = row
        bar.update(1)
        bar.set_postfix_str(f'{sum(r["status"] == "ok" for r in rows.values())} ok, '
                            f'{sum(r["status"] != "ok" for r in rows.values())} failed')

    workers = opts.workers or cpu_count()
    threads = tasks[0].threads if tasks else 1
    try:
        if todo and executor == 'pool':
            run_pool(todo, min(workers, len(todo)), on_row)
        elif todo:
            run_ray(todo, opts.ray or None, workers, threads, on_row, opts.ray_timeout_s)
    finally:
        bar.close()
    ordered = [rows[n] for n in names]
    if opts.export:
        export_lerobot(ordered, {t.name: t for t in tasks}, opts.out)
    summary = {'executor': executor, 'workers': workers, 'threads_per_task': threads,
               'wall_s': round(time.perf_counter() - t0, 3),
               'ok': sum(r['status'] == 'ok' for r in ordered),
               'failed': sum(r['status'] != 'ok' for r in ordered), 'rows': ordered}
    write_summary(opts.out, summary)
    return summary


def export_lerobot(rows: List[Dict[str, Any]], tasks: Dict[str, Task], out: str) -> None:
    """Rebuild ``OUT/lerobot``: every ok row one episode, in row order.

    A source whose export fails keeps its ok status; its row gets ``export_error``.

    :param rows: the batch's rows
    :param tasks: the tasks by name (source options)
    :param out: the batch's output folder
    """
    import shutil

    from l3rocc_core.lerobot import export_episode
    from l3rocc_core.tools.replay import OCCUPANCY_FILE
    root = os.path.join(out, LEROBOT_DIR)
    if os.path.isdir(root):
        shutil.rmtree(root)
    episode = 0
    for row in rows:
        if row['status'] != 'ok':
            continue
        task = tasks[row['name']]
        try:
            export_episode(os.path.join(task.out_dir, OCCUPANCY_FILE), root, task.source,
                           intrinsics=task.replay.intrinsics, source_fps=task.replay.fps,
                           append=episode > 0,
                           name=task.name)
            row['lerobot_episode'] = episode
            episode += 1
        except Exception as exc:   # one source's export never stops the others
            row['export_error'] = f'{getattr(exc, "kind", type(exc).__name__)}: {exc}'


# ------------------------------------------------------------------------------ summary
def _write_json(path: str, data: Any) -> None:
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1, default=str)
        f.write('\n')
    os.replace(tmp, path)


def _columns(rows: List[Dict[str, Any]]) -> List[str]:
    extra = sorted({k for r in rows for k in r} - set(ROW_KEYS))
    return [k for k in ROW_KEYS if any(k in r for r in rows)] + extra


def _cell(v: Any) -> str:
    if v is None:
        return ''
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def write_summary(out: str, summary: Dict[str, Any]) -> None:
    """Write ``summary.json``, ``summary.csv``, ``summary.png`` and ``summary.md`` into ``out``."""
    import csv
    rows = summary['rows']
    _write_json(os.path.join(out, SUMMARY_JSON), summary)
    cols = _columns(rows)
    tmp = os.path.join(out, SUMMARY_CSV + '.partial')
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows([[_cell(r.get(c)) for c in cols] for r in rows])
    os.replace(tmp, os.path.join(out, SUMMARY_CSV))
    plot_summary(rows, os.path.join(out, SUMMARY_PNG))
    shown = [c for c in ('name', 'status', 'frames', 'fps', 'wall_s') + METRIC_KEYS + (
        'occupied_mean', 'peak_rss_mb', 'resumed') if any(r.get(c) is not None for r in rows)]
    lines = [f'# Batch summary: {summary["ok"]} ok, {summary["failed"]} failed',
             '', f'Executor: {summary["executor"]}, {summary["workers"]} workers x '
             f'{summary["threads_per_task"]} threads; {summary["wall_s"]:.1f} s in all.', '',
             '| ' + ' | '.join(shown) + ' |', '|' + '---|' * len(shown)]
    lines += ['| ' + ' | '.join(_cell(r.get(c)).replace('|', '/') for c in shown) + ' |'
              for r in rows]
    failures = [r for r in rows if r['status'] != 'ok']
    if failures:
        lines += ['', '## Failed sources', '']
        lines += [f'- `{r["name"]}` ({r["kind"]}): {r["error"]}' for r in failures]
    lines += ['', f'![per source]({SUMMARY_PNG})', '']
    with open(os.path.join(out, SUMMARY_MD), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))


def plot_summary(rows: List[Dict[str, Any]], path: str) -> None:
    """Bar charts per source: fps, peak RSS, and IoU where scored (matplotlib Agg)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r['status'] == 'ok']
    panels = [('fps', 'frames / s'), ('peak_rss_mb', 'peak RSS (MiB)')]
    if any(r.get('iou') is not None for r in ok):
        panels.append(('iou', 'IoU (newest slice)'))
    size = (max(6.0, 0.6 * len(rows) + 2), 2.4 * len(panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=size, squeeze=False)
    x = np.arange(len(rows))
    for ax, (key, label) in zip(axes[:, 0], panels):
        vals = [float(r[key]) if r.get(key) is not None else 0.0 for r in rows]
        colours = ['C0' if r['status'] == 'ok' else 'C3' for r in rows]
        ax.bar(x, vals, color=colours)
        ax.set_ylabel(label)
        ax.set_xticks(x)
        ax.set_xticklabels([r['name'] for r in rows], rotation=30, ha='right', fontsize=8)
        ax.grid(axis='y', alpha=0.3)
    axes[0, 0].set_title(f'{len(ok)} ok, {len(rows) - len(ok)} failed (red)')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
