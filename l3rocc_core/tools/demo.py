"""``l3rocc demo``: the ``make demo`` job on the bundled TUM fr1/xyz recording.

Replays the bundled rosbag2 (``data/tum_fr1_xyz_37``) through the node's pipeline with
``config/tum.yaml``, scores it against occupancy built from the recording's ground-truth depth
and poses, renders the preview and prints a short table. Everything lands in ``--out`` (default
``out/demo``): occupancy.npz, timing.json, depth.npz (estimated depth), metrics.json, iou.png,
preview.png, preview.mp4. A TUM folder given with ``--data`` (or ``$L3ROCC_TUM_DIR``) is first
written as a rosbag2 under ``--cache``, once.
"""

import argparse
import json
import os
from pathlib import Path
from typing import List

from l3rocc_core import cli
from l3rocc_core.datasets.tum import default_tum_dir, tum_layout
from l3rocc_core.paths import config_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument('--out', default='out/demo', help='output folder (default out/demo)')
    parser.add_argument('--cache', default='out/cache',
                        help='where the bag of a TUM folder is built once (default out/cache)')
    parser.add_argument('--data', default=None,
                        help='TUM folder or bundled-layout recording (default: $L3ROCC_TUM_DIR, '
                        'else the bundled data/tum_fr1_xyz_37)')
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='NAME=VALUE',
                        help='parameter override for the replay (repeatable)')
    parser.add_argument('--no-render', action='store_true', help='skip preview.png/mp4')


def _call(argv: List[str]) -> None:
    status = cli.main(argv)
    if status != 0:
        raise SystemExit(f'l3rocc {argv[0]} failed with exit status {status}')


def run(args: argparse.Namespace) -> int:
    """Run replay, eval and render (bag making first for a TUM folder); print the table."""
    try:
        data = Path(args.data) if args.data else default_tum_dir()
    except FileNotFoundError as exc:
        cli.report_error('demo', exc)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if tum_layout(data) == 'bundle':
        bag = str(data)  # the recording is a rosbag2 directory itself
    else:
        os.makedirs(args.cache, exist_ok=True)
        bag = os.path.join(args.cache, f'tum_{data.resolve().name}.mcap')
        if not os.path.exists(bag):
            _call(['make-tum-bag', '--out', bag, '--data', str(data)])
    replay = ['replay', bag, '--out', args.out, '--params-file', config_file('tum.yaml'),
              '--save-depth']
    for item in args.sets:
        replay += ['--set', item]
    _call(replay)
    occ = os.path.join(args.out, 'occupancy.npz')
    _call(['eval', occ, '--out', args.out, '--tum', str(data)])
    if not args.no_render:
        _call(['render', occ, '--out', args.out, '--source', bag, '--depth',
               os.path.join(args.out, 'depth.npz')])
    with open(os.path.join(args.out, 'timing.json'), encoding='utf-8') as f:
        timing = json.load(f)
    with open(os.path.join(args.out, 'metrics.json'), encoding='utf-8') as f:
        metrics = json.load(f)
    print(summary_table(timing, metrics))
    return 0


def summary_table(timing: dict, metrics: dict) -> str:
    """Markdown table of the demo's headline figures."""
    stages = timing.get('stages_ms', {})
    total = stages.get('total', float('nan'))
    rows = [
        ('frames processed', f"{timing['frames']}"),
        ('replay fps (wall, loading included)', f"{timing['fps']:.2f}"),
        ('pipeline ms/frame (median)', f'{total:.0f}'),
        ('depth / fusion / refiner ms', ' / '.join(
            f"{stages.get(k, float('nan')):.0f}" for k in ('depth', 'fusion', 'refiner'))),
        ('IoU newest slice (mean)', f"{metrics['iou']:.3f}"),
        ('precision / recall', f"{metrics['precision']:.3f} / {metrics['recall']:.3f}"),
        ('flicker', f"{metrics['flicker']:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f'| {k.ljust(width)} | {v} |' for k, v in rows]
    return '\n'.join(lines)
