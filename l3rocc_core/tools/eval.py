"""``l3rocc eval``: score an occupancy.npz against ground truth; write metrics.json and iou.png.

Ground truth is either a GT occupancy file (``--gt``, contract npz with ``visible_packed``; e.g.
from ``l3rocc synth``) or a TUM RGB-D folder (``--tum``): occupancy and observed masks are then
built from the TUM GT depth + GT poses on the prediction's grid (origin, voxel size and dims of
the npz), and prediction rows are matched to the nearest TUM colour-image stamp.
"""

import argparse
import json
import math
import os
import time
from typing import Any, Dict, List

import numpy as np

from l3rocc_core import cli

HELP = 'score an occupancy.npz against ground truth; write metrics.json and a plot'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc eval`` arguments."""
    parser.add_argument('prediction', metavar='PRED.npz', help='occupancy.npz to score')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--gt', metavar='GT.npz',
                     help='GT occupancy file (contract npz with visible_packed)')
    src.add_argument('--tum', metavar='DIR', nargs='?', const='',
                     help='TUM RGB-D folder: GT from its depth + poses (no value: the bundled '
                     'fr1/xyz)')
    parser.add_argument('--out', metavar='DIR', required=True,
                        help='output folder for metrics.json and iou.png')
    parser.add_argument('--stride', type=int, default=2,
                        help='--tum: pixel stride of the GT ray traversal (default 2)')
    parser.add_argument('--max-depth', type=float, default=4.0,
                        help='--tum: GT depth beyond this many metres is ignored (default 4.0)')
    parser.add_argument('--tolerance-ms', type=float, default=20.0,
                        help='largest stamp difference of a prediction row and its GT row')
    parser.add_argument('--device', default='cpu', help='torch device for the GT ray casting')
    parser.add_argument('--no-plot', action='store_true', help='do not write iou.png')
    parser.add_argument('--quiet', action='store_true', help='no progress bar or summary')


def _json_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def plot_scores(rows: List[Dict[str, Any]], path: str, title: str = '') -> None:
    """Write IoU / precision / recall (and flicker) over time as a PNG (matplotlib Agg).

    :param rows: ``per_frame`` rows (stamp in ns, iou, precision, recall, flicker)
    :param path: PNG file
    :param title: plot title
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    stamps = np.asarray([r['stamp'] for r in rows], np.int64)
    t = (stamps - stamps[0]) / 1e9 if len(stamps) else stamps.astype(float)

    def col(name: str) -> np.ndarray:
        return np.asarray([np.nan if r.get(name) is None else r[name] for r in rows], float)

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True,
                                  gridspec_kw={'height_ratios': [3, 1]})
    for name, style in (('iou', 'k-'), ('precision', 'C0--'), ('recall', 'C1--')):
        ax.plot(t, col(name), style, marker='.', label=name)
    ax.set_ylim(0, 1)
    ax.set_ylabel('newest slice')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')
    ax.set_title(title)
    ax2.plot(t, col('flicker'), 'C3-', marker='.')
    ax2.set_ylabel('flicker')
    ax2.set_xlabel('time (s)')
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _run(args: argparse.Namespace) -> int:
    """Score, write ``metrics.json`` (+ ``iou.png``), print a summary."""
    from l3rocc_core import metrics as M
    from l3rocc_core.occupancy import load_sequence

    t0 = time.monotonic()
    pred = load_sequence(args.prediction)
    if len(pred) == 0:
        raise M.MetricsError(f'{args.prediction}: no rows to score')
    tol = int(args.tolerance_ms * 1e6)
    if args.gt:
        gt = M.ground_truth_from_file(args.gt)
        source = {'kind': 'occupancy_file', 'path': os.path.abspath(args.gt)}
    else:
        gt = M.ground_truth_from_tum(args.tum or None, pred.grid, pred.stamps_ns,
                                     max_depth=args.max_depth, stride=args.stride,
                                     tolerance_ns=tol, device=args.device,
                                     progress=not args.quiet)
        source = {'kind': 'tum', 'path': os.path.abspath(args.tum) if args.tum else None,
                  'stride': args.stride, 'max_depth': args.max_depth}
    scorer = M.score_sequence(pred, gt, tolerance_ns=tol, progress=not args.quiet)
    summary = scorer.summary()
    rows = scorer.per_frame()
    resampler = M.GridResampler(pred.grid, gt.grid)
    g = pred.grid
    result: Dict[str, Any] = dict(summary)
    result.update({
        'prediction': os.path.abspath(args.prediction),
        'ground_truth': source,
        'rows': len(pred),
        'rows_unmatched': len(pred) - len(rows),
        'grid': {'origin': list(g.origin), 'voxel_size': g.voxel_size, 'dims': list(g.dims),
                 'frame_id': g.frame_id},
        'gt_grid_coverage': resampler.coverage,
        'scoring': 'per slice over observed voxels (rays up to and including the first hit); '
                   'iou/precision/recall = means over rows of the newest slice; flicker = mean '
                   'over consecutive rows of the share of observed static voxels that change; '
                   'window_* need full windows (metrics.SequenceScorer.add_window) and are null '
                   'for a newest-slice occupancy.npz; with dynamic masks (synthetic GT): '
                   'static_*/dynamic_* over GT static / moving voxels, and trail = share of the '
                   f'observed voxels a moving object left within the last {M.TRAIL_SPAN} rows '
                   'still predicted occupied',
        'eval_s': time.monotonic() - t0,
        'per_frame': rows,
    })
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, 'metrics.json')
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(_json_value(result), f, indent=1)
    os.replace(tmp, path)
    if not args.no_plot:
        plot_scores(rows, os.path.join(args.out, 'iou.png'),
                    f'{os.path.basename(args.prediction)}: IoU {summary["iou"]:.3f}, '
                    f'flicker {summary["flicker"]:.3f}')
    if not args.quiet:
        print(f'frames {summary["frames"]}  IoU {summary["iou"]:.3f}  precision '
              f'{summary["precision"]:.3f}  recall {summary["recall"]:.3f}  flicker '
              f'{summary["flicker"]:.3f}  -> {path}')
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``l3rocc eval``; bad input is reported on stderr with exit status 2."""
    return cli.run_reporting('eval', _run, args)
