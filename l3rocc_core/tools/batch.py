"""``l3rocc batch``: replay (+ eval, render, LeRobot export) many recordings, pool or Ray.

See :mod:`l3rocc_core.batch` for the tasks, the executors and the output layout, and
``docs/batch.md`` for the commands.
"""

import argparse
import sys

from l3rocc_core import cli

HELP = 'replay many recordings (process pool or Ray): per-source results and a summary'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc batch`` arguments."""
    parser.add_argument('sources', nargs='+', metavar='SOURCE',
                        help='bags, videos, image folders, globs (quoted), or source lists '
                        '(.txt/.list: one source a line with its own options, # comments)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder: DIR/<source name>/ and DIR/summary.*')
    parser.add_argument('--params-file', metavar='YAML',
                        help='ROS 2 parameter file (as config/l3rocc.yaml)')
    parser.add_argument('--set', nargs='+', action='extend', default=[], metavar='NAME=VALUE',
                        help='parameter overrides with YAML values, as for replay')
    parser.add_argument('--intrinsics', metavar='SPEC',
                        help='camera of videos/image folders (as for replay)')
    parser.add_argument('--poses', metavar='FILE', help='TUM trajectory of videos/image folders')
    parser.add_argument('--fps', type=float, help='frame rate of videos/image folders without '
                        'stamps (as for replay)')
    parser.add_argument('--max-frames', type=int, metavar='N',
                        help='stop each source after N processed frames')
    parser.add_argument('--gt-dir', metavar='DIR', help='ground truth: DIR/<name>/gt.npz or '
                        'DIR/<name>.npz (else a gt.npz beside the source) is scored with eval')
    parser.add_argument('--render', action='store_true',
                        help='also write previews (preview.png, preview.mp4) per source')
    parser.add_argument('--rerun', action='store_true',
                        help='also write a Rerun recording per source: DIR/<source '
                        'name>/recording.rrd (as replay --rerun; needs rerun-sdk)')
    parser.add_argument('--export', choices=('lerobot',),
                        help='lerobot: every ok source one episode of the dataset DIR/lerobot')
    parser.add_argument('--workers', type=int, metavar='N',
                        help='parallel sources (default: the CPU count); with --ray, the CPUs '
                        'of a local Ray instance are N x threads')
    parser.add_argument('--threads', type=int, metavar='T',
                        help='torch threads per source (default: CPUs / workers); a Ray task '
                        'asks for T CPUs')
    parser.add_argument('--ray', nargs='?', const='', default=None, metavar='ADDRESS',
                        help='run on Ray: without ADDRESS a local instance, else join the '
                        'cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto)')
    parser.add_argument('--ray-timeout', type=float, default=5.0, metavar='S',
                        help='seconds to wait for the Ray address to answer (default 5)')
    parser.add_argument('--force', action='store_true',
                        help='run sources again whose finished results match')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    """Run the batch: 0 when a source succeeded, 1 when all failed, 2 when it cannot start."""
    from l3rocc_core.batch import BatchError, BatchOptions, ReplayOptions, run_batch
    for name in ('workers', 'threads', 'max_frames'):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f'l3rocc batch: --{name.replace("_", "-")} must be >= 1', file=sys.stderr)
            return 2
    replay = ReplayOptions(args.params_file, args.set, args.intrinsics, args.poses, args.fps,
                           args.max_frames)
    opts = BatchOptions(args.sources, args.out, replay, args.gt_dir, args.render, args.export,
                        args.workers, args.threads, args.ray, args.ray_timeout, args.force,
                        not args.no_progress, args.rerun)
    try:
        summary = run_batch(opts)
    except BatchError as exc:
        cli.report_error('batch', exc)
        return 2
    except KeyboardInterrupt:
        print('l3rocc batch: interrupted; finished sources are kept and skipped next time',
              file=sys.stderr)
        return 130
    for row in summary['rows']:
        if row['status'] == 'ok':
            line = (f'{row["name"]}: ok, {row.get("frames")} frames, {row.get("fps")} fps'
                    + (' (earlier run)' if row.get('resumed') else ''))
        else:
            line = f'{row["name"]}: FAILED [{row["kind"]}] {row["error"]}'
        print(line)
    print(f'batch ({summary["executor"]}): {summary["ok"]} ok, {summary["failed"]} failed, '
          f'{summary["wall_s"]:.1f} s -> {args.out}/summary.md')
    return 0 if summary['ok'] or not summary['rows'] else 1
