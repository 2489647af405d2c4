r"""``l3rocc train``: train the temporal-attention refiner or the depth network.

``--model refiner`` (default) trains the refiner on ``l3rocc synth --dataset`` shards (the shipped
checkpoint's command is recorded in the checkpoint and docs/refiner.md)::

    l3rocc train --data out/synth_dataset --out out/train --steps 2000 --batch-size 4 \\
        --lr 1e-4 --temp-weight 0.3 --seq-len 16 --voxel-size 0.05 --seed 0 --export-default

``--model depth`` trains the depth network (:mod:`l3rocc_core.depth.train`); ``--data`` is the
folder of its rendered sequences, made there first when missing (docs/depth.md)::

    l3rocc train --model depth --data out/depth/data_seed0 --out out/depth/train --steps 3000 \\
        --threads 1 --export-default
"""

import argparse
import json
import shlex
import sys

HELP = 'train the temporal-attention refiner on synthetic shards, or the depth network'
#: per-model defaults of the options both models share
_DEFAULTS = {'refiner': {'batch_size': 4, 'lr': 1e-4}, 'depth': {'batch_size': 8, 'lr': 2e-3}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc train`` options."""
    p = parser
    p.add_argument('--model', default='refiner', choices=('refiner', 'depth'),
                   help='what to train: the occupancy refiner or the depth network')
    p.add_argument('--data', required=True, help='dataset folder (refiner: meta.json, train/, '
                   'val/; depth: rendered sequences, made when missing)')
    p.add_argument('--out', required=True, help='output folder: logs, loss.png, best.pt, last.pt')
    n = p.add_mutually_exclusive_group(required=True)
    n.add_argument('--epochs', type=int, default=0, help='passes over the training split')
    n.add_argument('--steps', type=int, default=0, help='optimizer steps')
    p.add_argument('--batch-size', type=int, default=None,
                   help='samples per step (refiner 4, depth 8)')
    p.add_argument('--lr', type=float, default=None,
                   help='peak learning rate, cosine schedule (refiner 1e-4, depth 2e-3)')
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--warmup-steps', type=int, default=50)
    p.add_argument('--temp-weight', type=float, default=0.3,
                   help='weight of the 2nd-order temporal smoothness term')
    p.add_argument('--lambda-geo', type=float, default=1.0, help='weight of the BCE term')
    p.add_argument('--lambda-l1', type=float, default=0.2,
                   help='weight of the L1 term (on probabilities)')
    p.add_argument('--unobserved-weight', type=float, default=0.1,
                   help='per-voxel loss weight of unobserved voxels with known ground truth')
    p.add_argument('--pos-weight', type=float, default=1.0, help='BCE weight of occupied voxels')
    p.add_argument('--dynamic-weight', type=float, default=1.0,
                   help='BCE and L1 weight multiplier on voxels of moving objects (1 = none)')
    p.add_argument('--motion-weight', type=float, default=0.0,
                   help='weight of the motion-consistency term (predicted occupancy flow '
                        'against feature-matched flow; the method uses 0.1; 0 = off). Adds '
                        'the flow head; needs shards with flow (current `l3rocc synth`)')
    p.add_argument('--stream-weight', type=float, default=0.0,
                   help='weight of the streamed smoothness term: the squared 2nd difference of '
                        'the newest slice of three successive windows, as a stream publishes '
                        'them (two more forward passes per step; 0 = off)')
    p.add_argument('--seq-len', type=int, default=16, help='time slices per training window')
    p.add_argument('--voxel-size', type=float, default=0.05,
                   help='metres; must match the dataset')
    p.add_argument('--checkpointing', action='store_true', help='gradient checkpointing')
    p.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    p.add_argument('--resume', action='store_true', help='continue from OUT/last.pt')
    p.add_argument('--init', default='', metavar='CKPT',
                   help='start from the weights of this checkpoint (an export, best.pt or '
                        'last.pt; same architecture, --causal may differ): fine-tuning')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    p.add_argument('--val-every', type=int, default=0, help='steps between validations '
                   '(0 = once per epoch)')
    p.add_argument('--val-samples', type=int, default=64, help='validation samples used '
                   '(evenly spaced over the split)')
    p.add_argument('--test-samples', type=int, default=0, help='test samples scored at the end '
                   '(0 = all, -1 = skip the test split)')
    p.add_argument('--no-calibrate', dest='calibrate', action='store_false',
                   help='keep the trained output bias (default: calibrate the 0.5 threshold '
                   'for the best validation IoU)')
    p.add_argument('--export-default', action='store_true',
                   help='export the best model (fp16) as the bundled default checkpoint')
    p.add_argument('--export-path', default='', help='export the best model here instead')
    p.add_argument('--width', type=int, default=16, help='channels at half resolution')
    p.add_argument('--heads', type=int, default=2)
    p.add_argument('--attn-blocks', type=int, default=1)
    p.add_argument('--causal', action='store_true', help='causal temporal attention')
    p.add_argument('--up-channels', type=int, default=4)
    p.add_argument('--head-channels', type=int, default=8)
    p.add_argument('--padding', default='replicate', choices=('replicate', 'zeros'),
                   help='convolution padding at crop/grid borders')
    p.add_argument('--z-shift', type=int, default=4,
                   help='training augmentation: random z shift of each crop, up to this many '
                        'voxels (0 = off)')
    p.add_argument('--short-window-prob', type=float, default=0.25,
                   help='share of batches that are stream starts: windows of 2..T-1 slices cut '
                        'from the first window of a sequence (0 = off)')
    d = p.add_argument_group('depth network (--model depth)')
    d.add_argument('--data-seed', type=int, default=0, help='seed of the rendered sequences')
    d.add_argument('--sequences', type=int, default=160, help='sequences rendered and used')
    d.add_argument('--val-sequences', type=int, default=16,
                   help='of them, the last ones held out for validation')
    d.add_argument('--crop', type=int, nargs=2, default=[96, 128], metavar=('H', 'W'),
                   help='training crop in pixels of the depth resolution')
    d.add_argument('--depth-widths', type=int, nargs=4, default=[16, 32, 48, 64],
                   metavar='C', help='U-Net channels at full, 1/2, 1/4, 1/8 resolution')
    d.add_argument('--moving-weight', type=float, default=3.0,
                   help='loss weight of pixels on moving objects')
    d.add_argument('--grad-weight', type=float, default=0.5, help='gradient-matching weight')
    d.add_argument('--conf-weight', type=float, default=0.2, help='confidence BCE weight')
    d.add_argument('--pose-drop', type=float, default=0.15,
                   help='share of samples shown without pose (no ground prior, no sweep)')
    d.add_argument('--sweep-drop', type=float, default=0.25,
                   help='share of the other samples shown without the plane sweep')


def run(args: argparse.Namespace) -> int:
    """Train; print the summary as JSON; return the exit status."""
    for key, value in _DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model == 'depth':
        return _run_depth(args)
    from l3rocc_core.refiner.train import TrainError, TrainOptions, train

    fields = set(TrainOptions.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    values['command'] = 'l3rocc train ' + ' '.join(shlex.quote(a) for a in _argv_after('train'))
    try:
        summary = train(TrainOptions(**values))
    except (TrainError, ValueError) as exc:
        print(f'l3rocc train: error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_depth(args: argparse.Namespace) -> int:
    """``--model depth``: train the depth network (steps from --epochs when given)."""
    from l3rocc_core.depth.train import DepthTrainOptions, train

    steps = args.steps
    if args.epochs:
        per_epoch = max(1, (args.sequences - args.val_sequences) * 10 // args.batch_size)
        steps = args.epochs * per_epoch
    opts = DepthTrainOptions(
        data=args.data, out=args.out, steps=steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, seed=args.seed,
        device=args.device, threads=args.threads, data_seed=args.data_seed,
        sequences=args.sequences, val_sequences=args.val_sequences,
        val_every=args.val_every or 200, crop=tuple(args.crop), widths=list(args.depth_widths),
        moving_weight=args.moving_weight, grad_weight=args.grad_weight,
        conf_weight=args.conf_weight, pose_drop=args.pose_drop, sweep_drop=args.sweep_drop,
        resume=args.resume, export_default=args.export_default, export_path=args.export_path,
        command='l3rocc train ' + ' '.join(shlex.quote(a) for a in _argv_after('train')))
    try:
        summary = train(opts)
    except (FileNotFoundError, ValueError) as exc:
        print(f'l3rocc train: error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _argv_after(name: str) -> list:
    """Return the command-line arguments after the subcommand ``name``."""
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1:] if name in argv else argv
