"""``python -m l3rocc_bench.gpu_check``: the refiner's device checks in one short command.

For a machine with a GPU (``tools/gpu_check.sh`` runs it after the CUDA tests): on the TUM
grid and the default grid, with the bundled checkpoint,

1. parity: the device's window pass and ``newest`` pass (with the revisited slice) against the
   CPU's window pass on the same window (largest probability difference, share of voxels whose
   occupied state differs);
2. the whole-window pass eagerly and through ``torch.compile`` (``network_compile``), and its
   compile time (:func:`~l3rocc_bench.speed.time_window_pass`);
3. the ``newest`` pass per frame in steady state (one new slice, one revisited slice, keys of
   the others cached), as the pipeline runs it on the CPU by default.

The evidence is random, with an observed band covering a quarter of the grid (with the support
margin ~a third: the network's output is computed there); a dense pass costs the same whatever
the values. Parity is computed with TF32 off (PyTorch's CUDA default lets cuDNN convolutions
use it, which alone moves probabilities by ~1e-3); the exit status is 1 when a parity
difference exceeds ``--max-diff``. It needs torch, numpy, PyYAML and opencv, no ROS. Writes
``gpu_check.json`` and ``gpu_check.md`` into ``--out`` after every grid and prints the tables.
"""

import argparse
from contextlib import contextmanager
from dataclasses import replace
import json
import os
import statistics
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from l3rocc_bench.speed import time_window_pass, timed_ms
from l3rocc_core.config import PipelineConfig, RefinerConfig
from l3rocc_core.paths import config_file
from l3rocc_core.pipeline import grid_from_config
from l3rocc_core.refiner.inference import load_refiner, NetworkRefiner


def default_grids() -> List[Tuple[str, Tuple[int, ...]]]:
    """Return (name, dims) of the TUM grid (``config/tum.yaml``) and the default grid."""
    out = []
    for name, path in (('tum', config_file('tum.yaml')), ('default', config_file('l3rocc.yaml'))):
        out.append((name, tuple(grid_from_config(PipelineConfig.from_yaml(path)).dims)))
    return out


def random_window(dims: Sequence[int], t: int, channels: int, device: Any,
                  seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return features float [T, C, X, Y, Z] and observed bool [T, X, Y, Z] on ``device``.

    Observed: a band of x, a quarter of the grid wide, moving by one voxel per slice (the
    space a camera sweeps; with the network's support margin ~a third of the grid).
    """
    g = torch.Generator().manual_seed(seed)
    nx = int(dims[0])
    features = torch.randn((t, channels) + tuple(dims), generator=g)
    observed = torch.zeros((t,) + tuple(dims), dtype=torch.bool)
    width = max(1, nx // 4)
    for k in range(t):
        lo = (nx // 3 + k) % max(1, nx - width)
        observed[k, lo:lo + width] = True
    return features.to(device), observed.to(device)


def parity(device: str, dims: Sequence[int], t: int, revisit_age: int = 5) -> Dict[str, Any]:
    """Compare the device's window and ``newest`` passes with the CPU's window pass (TF32 off).

    :return: largest |Δp| of the window pass (all slices) and of the newest pass (the newest
        and the revisited slice), and the share of voxels whose state at p >= 0.5 differs
    """
    cfg = RefinerConfig(network_update='window')
    cpu = load_refiner(cfg, 'cpu')
    dev = load_refiner(cfg, device)
    features, observed = random_window(dims, t, len(cpu.feature_names), 'cpu')
    expected = cpu.refine(features, features[:, 0], observed)
    feats_dev, obs_dev = features.to(dev.device), observed.to(dev.device)
    newest = load_refiner(replace(cfg, network_update='newest'), device)
    revisit = NetworkRefiner.revisit_slots(range(t), revisit_age)
    targets = revisit + [t - 1]
    with full_fp32():
        window = dev.refine(feats_dev, feats_dev[:, 0], obs_dev).cpu()
        got = newest.refine_newest(list(range(t)), lambda ks: feats_dev[ks], obs_dev[targets],
                                   revisit).cpu()
    ref = expected[targets]
    return {'device': str(dev.device), 'grid': list(dims), 'window_size': t,
            'window_max_abs_diff_1e6': float((window - expected).abs().max()) * 1e6,
            'newest_max_abs_diff_1e6': float((got - ref).abs().max()) * 1e6,
            'window_state_mismatch': float(((window >= 0.5) != (expected >= 0.5))
                                           .float().mean()),
            'newest_state_mismatch': float(((got >= 0.5) != (ref >= 0.5)).float().mean())}


@contextmanager
def full_fp32() -> Iterator[None]:
    """Turn TF32 off for CUDA matrix products and cuDNN convolutions (restored after)."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def newest_timing(device: str, dims: Sequence[int], t: int, frames: int = 20,
                  revisit_age: int = 5) -> Dict[str, Any]:
    """Median ms per frame of the ``newest`` pass in steady state (after a full window).

    Each frame writes one ring slot (its cached keys dropped, as the pipeline does), encodes
    it, and estimates it and the slice ``revisit_age`` frames old.
    """
    refiner = load_refiner(RefinerConfig(network_update='newest'), device)
    features, observed = random_window(dims, t, len(refiner.feature_names), refiner.device)
    order: List[int] = []
    times: List[float] = []
    out: Dict[str, Any] = {}
    for k in range(t + frames):
        slot = k % t
        refiner.forget(slot)
        if len(order) == t:
            order.pop(0)
        order.append(slot)
        revisit = NetworkRefiner.revisit_slots(order, revisit_age)
        todo = revisit + [slot]
        ms = timed_ms(lambda o=list(order), r=revisit, d=todo: refiner.refine_newest(
            o, lambda ks: features[ks], observed[d], r), refiner.device, out, 'prob')
        if k >= t:
            times.append(ms)
    support = float(refiner.support_mask(observed[-1:]).float().mean())
    return {'device': str(refiner.device), 'grid': list(dims), 'window_size': t,
            'frames': frames, 'ms_per_frame': statistics.median(times),
            'ms_min': min(times), 'support_share': support}


def run(device: str, grids: Sequence[Tuple[str, Sequence[int]]], t: int, repeats: int,
        frames: int, out: Optional[str] = None) -> Dict[str, Any]:
    """Run the three checks on every grid; return the results (JSON-ready).

    A check that raises gives a row with ``error`` (the others still run); with ``out`` the
    results so far are written after every grid (:func:`write`).
    """
    info: Dict[str, Any] = {'torch': torch.__version__, 'device': device,
                            'cuda_available': torch.cuda.is_available(),
                            'cudnn_allow_tf32': torch.backends.cudnn.allow_tf32,
                            'matmul_allow_tf32': torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    results: Dict[str, Any] = {'meta': info, 'parity': [], 'window_pass': [], 'newest': []}
    refiner_cfg = replace(RefinerConfig(), device=device)
    for name, dims in grids:
        print(f'gpu_check: grid {name} {tuple(dims)}', file=sys.stderr)
        for key, check in (('parity', lambda: parity(device, dims, t)),
                           ('window_pass', lambda: time_window_pass(name, dims, t, refiner_cfg,
                                                                    device, repeats)),
                           ('newest', lambda: newest_timing(device, dims, t, frames))):
            try:
                row = check()
            except (RuntimeError, ValueError, OSError) as exc:   # CUDA OOM is a RuntimeError
                row = {'grid': list(dims), 'error': f'{type(exc).__name__}: {exc}'}
            results[key].append(dict(row, name=name))
        if out:
            write(results, out)
    return results


def write(results: Dict[str, Any], out: str) -> str:
    """Write ``gpu_check.json`` and ``gpu_check.md`` into ``out``; return the markdown."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'gpu_check.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    text = '\n'.join(tables(results))
    with open(os.path.join(out, 'gpu_check.md'), 'w', encoding='utf-8') as f:
        f.write(text)
    return text


def failures(results: Dict[str, Any], max_diff: float) -> List[str]:
    """Return what failed: checks that raised, parity differences above ``max_diff``."""
    bad = [f'{key} {r["name"]}: {r["error"]}' for key in ('parity', 'window_pass', 'newest')
           for r in results[key] if 'error' in r]
    for r in results['parity']:
        for k in ('window_max_abs_diff_1e6', 'newest_max_abs_diff_1e6'):
            if k in r and r[k] > max_diff * 1e6:
                bad.append(f'parity {r["name"]}: {k} = {r[k]:.1f} > {max_diff * 1e6:g}')
    for r in results['window_pass']:
        if r.get('max_abs_diff_1e6', 0.0) > max_diff * 1e6:
            bad.append(f'compiled {r["name"]}: max |dp| = {r["max_abs_diff_1e6"]:.1f}e-6')
    return bad


def tables(results: Dict[str, Any]) -> List[str]:
    """Return markdown lines for the results of :func:`run` (error rows say why)."""
    from l3rocc_bench.report import fmt, table

    def grid(r: Dict[str, Any]) -> str:
        return f'{r.get("name", "")} {"x".join(map(str, r["grid"]))}'

    meta = results['meta']
    lines = [f'# l3rocc GPU check: {meta.get("gpu", meta["device"])}, torch {meta["torch"]}, '
             f'TF32 cuDNN {meta.get("cudnn_allow_tf32")} / matmul {meta.get("matmul_allow_tf32")}'
             ' (parity with TF32 off)', '', '## Parity with the CPU window pass', '']
    lines += table(['grid', 'device', 'window max abs Δp (1e-6)', 'newest max abs Δp (1e-6)',
                    'window state mismatch', 'newest state mismatch'],
                   [[grid(r), r.get('device', ''), fmt(r.get('window_max_abs_diff_1e6'), 2),
                     fmt(r.get('newest_max_abs_diff_1e6'), 2),
                     fmt(r.get('window_state_mismatch'), 6),
                     r.get('error') or fmt(r.get('newest_state_mismatch'), 6)]
                    for r in results['parity']])
    lines += ['', '## Window pass, eager and compiled (median ms)', '']
    lines += table(['grid', 'device', 'eager ms', 'compiled ms', 'speed-up', 'compile s',
                    'compiled vs eager max abs Δp (1e-6)', 'status'],
                   [[grid(r), r.get('device', ''), fmt(r.get('eager_ms'), 1),
                     fmt(r.get('compiled_ms'), 1), fmt(r.get('speedup'), 2),
                     fmt(r.get('compile_s'), 1), fmt(r.get('max_abs_diff_1e6'), 2),
                     r.get('compile_status', r.get('error', ''))]
                    for r in results['window_pass']])
    lines += ['', '## `newest` pass per frame (median ms, steady state)', '']
    lines += table(['grid', 'device', 'ms per frame', 'fastest ms', 'support share'],
                   [[grid(r), r.get('device', ''), fmt(r.get('ms_per_frame'), 1),
                     fmt(r.get('ms_min'), 1), r.get('error') or fmt(r.get('support_share'), 2)]
                    for r in results['newest']])
    return lines + ['']


def _dims(text: str) -> Tuple[str, Tuple[int, ...]]:
    name, _, size = text.rpartition('=')
    dims = tuple(int(v) for v in size.lower().split('x'))
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f'grid {text!r}: expected [NAME=]XxYxZ')
    return name or size, dims


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, run the checks, write ``gpu_check.json`` / ``.md``; 0 on success."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_bench.gpu_check',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='out/gpu_check', help='results folder')
    parser.add_argument('--grid', action='append', type=_dims, metavar='[NAME=]XxYxZ',
                        help='grids to check (default: the TUM grid and the default grid)')
    parser.add_argument('--window-size', type=int, default=16)
    parser.add_argument('--repeats', type=int, default=5, help='window passes of each kind')
    parser.add_argument('--frames', type=int, default=20, help='newest-pass frames timed')
    parser.add_argument('--max-diff', type=float, default=1e-4,
                        help='largest parity difference of a probability (exit status 1 above)')
    args = parser.parse_args(argv)
    results = run(args.device, args.grid or default_grids(), args.window_size, args.repeats,
                  args.frames, args.out)
    print(write(results, args.out))
    bad = failures(results, args.max_diff)
    for line in bad:
        print(f'gpu_check: FAILED {line}', file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
