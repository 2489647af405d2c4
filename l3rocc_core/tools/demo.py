"""``l3rocc demo``: the ``make demo`` job on the bundled TUM fr1/xyz clip.

Builds the rosbag2 once (``out/cache/tum_fr1_xyz.mcap``), replays it through the node's pipeline
with ``config/tum.yaml``, scores it against occupancy built from the TUM ground-truth depth,
renders the preview and prints a short table. Everything lands in ``--out`` (default
``out/demo``): occupancy.npz, timing.json, depth.npz (estimated depth), metrics.json, iou.png,
preview.png, preview.mp4.
"""

import argparse
import json
import os
from typing import List

from l3rocc_core import cli
from l3rocc_core.paths import config_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument('--out', default='out/demo', help='output folder (default out/demo)')
    parser.add_argument('--cache', default='out/cache',
                        help='where the TUM bag is built once (default out/cache)')
    parser.add_argument('--data', default=None,
                        help='TUM folder (default: the bundled ../shared/data/tum_fr1_xyz_37)')
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='NAME=VALUE',
                        help='parameter override for the replay (repeatable)')
    parser.add_argument('--no-render', action='store_true', help='skip preview.png/mp4')


def _call(argv: List[str]) -> None:
    status = cli.main(argv)
    if status != 0:
        raise SystemExit(f'l3rocc {argv[0]} failed with exit status {status}')


def run(args: argparse.Namespace) -> int:
    """Run bag making, replay, eval and render; print the summary table."""
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.cache, exist_ok=True)
    bag = os.path.join(args.cache, 'tum_fr1_xyz.mcap')
    data = ['--data', args.data] if args.data else []
    if not os.path.exists(bag):
        _call(['make-tum-bag', '--out', bag] + data)
    replay = ['replay', bag, '--out', args.out, '--params-file', config_file('tum.yaml'),
              '--save-depth']
    for item in args.sets:
        replay += ['--set', item]
    _call(replay)
    tum = ['--tum'] + ([args.data] if args.data else [])
    occ = os.path.join(args.out, 'occupancy.npz')
    _call(['eval', occ, '--out', args.out] + tum)
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
