"""``l3rocc synth``: synthetic dynamic scenes with exact 4D ground truth.

Three modes:

- one sequence: ``l3rocc synth --out DIR --family industrial --camera handheld --seed 3``
  writes ``DIR/sequence.mcap``, ``gt.npz``, ``depth.npz``, ``meta.json``, ``preview.png``;
- a contact sheet: ``l3rocc synth --contact-sheet sheet.png``;
- training shards: ``l3rocc synth --dataset DIR --num-sequences N --split train|val|test|all``
  [--dataset-depth sweep|gt|mixed] (runs the geometry pipeline on every sequence and saves
  window crops, see
  :mod:`l3rocc_core.synth.dataset`).
"""

import argparse
import json
import time

from l3rocc_core import cli
from l3rocc_core.synth.dataset import DATASET_DEPTHS
from l3rocc_core.synth.motion import CAMERA_MOTIONS
from l3rocc_core.synth.scene import FAMILIES

HELP = 'render synthetic dynamic scenes with exact 4D ground truth (bags, shards)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser``."""
    mode = parser.add_argument_group('mode (choose one)')
    mode.add_argument('--out', help='write one sequence into this folder')
    mode.add_argument('--contact-sheet', metavar='PNG', help='render a grid of scenes')
    mode.add_argument('--dataset', metavar='DIR', help='write training shards under DIR/<split>')
    seq = parser.add_argument_group('sequence')
    seq.add_argument('--family', choices=FAMILIES, default='industrial')
    seq.add_argument('--camera', choices=CAMERA_MOTIONS, default='handheld',
                     help='camera motion')
    seq.add_argument('--seed', type=int, default=0)
    seq.add_argument('--frames', type=int, default=48)
    seq.add_argument('--fps', type=float, default=15.0, help='frames per second (10-30 typical)')
    seq.add_argument('--width', type=int, default=640)
    seq.add_argument('--height', type=int, default=480)
    seq.add_argument('--hfov', type=float, default=None,
                     help='horizontal field of view in degrees (default: 55-90 from the seed)')
    seq.add_argument('--distortion', action='store_true', help='plumb_bob lens distortion')
    seq.add_argument('--motion-blur', action='store_true', help='average 5 sub-frame samples')
    seq.add_argument('--start', type=float, default=0.0, help='scene time of frame 0 (s)')
    ds = parser.add_argument_group('dataset')
    ds.add_argument('--num-sequences', type=int, default=12,
                    help='sequences per split (with --split all: for train; val and test get '
                    'a quarter each, at least 1)')
    ds.add_argument('--split', choices=('train', 'val', 'test', 'all'), default='all')
    ds.add_argument('--dataset-frames', type=int, default=40, help='frames per sequence')
    ds.add_argument('--dataset-width', type=int, default=320)
    ds.add_argument('--crop', type=int, nargs=3, default=[32, 32, 16], metavar=('X', 'Y', 'Z'),
                    help='crop size in voxels')
    ds.add_argument('--crops-per-window', type=int, default=4)
    ds.add_argument('--window-every', type=int, default=2,
                    help='save a window every this many frames once the window is full')
    ds.add_argument('--window-size', type=int, default=16)
    ds.add_argument('--windows-per-shard', type=int, default=8)
    ds.add_argument('--device', default='cpu', help='torch device of the geometry pipeline')
    ds.add_argument('--no-flow', dest='motion_targets', action='store_false',
                    help='do not write the feature-matched flow targets (flow, flow_valid) of '
                         'the motion-consistency term')
    ds.add_argument('--dataset-depth', choices=DATASET_DEPTHS, default='sweep',
                    help='depth of the geometry stage: sweep = plane sweep on the images, gt = '
                         'the exact rendered depth (with --depth-noise, --depth-dropout), '
                         'mixed = one of them per sequence (gt with --gt-share)')
    ds.add_argument('--depth-noise', type=float, default=0.01,
                    help='gt depth: relative standard deviation of multiplicative noise')
    ds.add_argument('--depth-dropout', type=float, default=0.02,
                    help='gt depth: share of pixels without return')
    ds.add_argument('--gt-share', type=float, default=0.5,
                    help='mixed: probability that a sequence gets gt depth')


def run(args: argparse.Namespace) -> int:
    """Run the selected mode; return the exit status (2 on invalid options, told on stderr)."""
    return cli.run_reporting('synth', _run, args, (ValueError,))


def _run(args: argparse.Namespace) -> int:
    modes = [m for m in (args.out, args.contact_sheet, args.dataset) if m]
    if len(modes) != 1:
        raise ValueError('choose exactly one of --out DIR, --contact-sheet PNG, --dataset DIR')
    if args.contact_sheet:
        from tqdm import tqdm

        from l3rocc_core.synth.contact_sheet import contact_sheet
        t0 = time.perf_counter()
        contact_sheet(args.contact_sheet, progress=lambda s: tqdm(s, desc='contact sheet'))
        print(f'wrote {args.contact_sheet} in {time.perf_counter() - t0:.1f} s')
        return 0
    if args.out:
        from l3rocc_core.synth.sequence import SequenceSpec, write_sequence
        spec = SequenceSpec(args.family, args.camera, args.seed, args.frames, args.fps,
                            args.width, args.height, args.hfov, args.distortion,
                            args.motion_blur, args.start)
        meta = write_sequence(args.out, spec)
        print(json.dumps({'out': args.out, 'frames': meta['frames'], 'grid': meta['grid'],
                          'ms_per_frame_median': round(meta['ms_per_frame_median'], 1),
                          'recommended_parameters': meta['recommended_parameters']},
                         indent=2))
        return 0
    from l3rocc_core.synth.dataset import DatasetOptions, write_dataset
    opts = DatasetOptions(frames=args.dataset_frames, width=args.dataset_width,
                          crop=tuple(args.crop), crops_per_window=args.crops_per_window,
                          window_every=args.window_every, window_size=args.window_size,
                          windows_per_shard=args.windows_per_shard, device=args.device,
                          motion_targets=args.motion_targets, depth=args.dataset_depth,
                          depth_noise=args.depth_noise, depth_dropout=args.depth_dropout,
                          gt_share=args.gt_share)
    splits = ('train', 'val', 'test') if args.split == 'all' else (args.split,)
    for split in splits:
        n = args.num_sequences
        if args.split == 'all' and split != 'train':
            n = max(1, args.num_sequences // 4)
        write_dataset(args.dataset, split, n, opts)
    return 0
