"""``l3rocc make-tum-bag``: TUM RGB-D frames as a rosbag2 (mcap by default).

By default a plain bag (rgb8 Image, CameraInfo, /tf) of the bundled fr1/xyz recording or of a
TUM folder; ``--bundle`` writes a TUM folder in the bundled recording's own layout
(:func:`l3rocc_core.datasets.tum.write_tum_bundle`, how ``data/tum_fr1_xyz_37`` was made).
"""

import argparse
import os
import sys

from l3rocc_core import cli
from l3rocc_core.datasets.tum import (OPTICAL_FRAME, WORLD_FRAME, default_tum_dir,
                                      write_tum_bag, write_tum_bundle)

HELP = 'turn TUM fr1/xyz frames (bundled or a TUM folder) into a rosbag2 (mcap)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the tool's arguments."""
    parser.add_argument('--data', default=None,
                        help='TUM RGB-D folder (rgb.txt, depth.txt, groundtruth.txt); default: '
                        '$L3ROCC_TUM_DIR or the bundled fr1/xyz clip')
    parser.add_argument('--out', required=True,
                        help='output: PATH.mcap or PATH.db3 (one file) or a rosbag2 directory')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='storage of a directory output (a file suffix decides otherwise)')
    parser.add_argument('--world-frame', default=WORLD_FRAME,
                        help='parent frame of the ground-truth poses on /tf (default: '
                        '%(default)s; replay with --set world_frame=<this>)')
    parser.add_argument('--camera-frame', default=OPTICAL_FRAME,
                        help='optical frame of images and CameraInfo (default: %(default)s)')
    parser.add_argument('--max-frames', type=int, default=None, help='only the first N frames')
    parser.add_argument('--bundle', action='store_true',
                        help='write the bundled layout instead (a rosbag2 directory with JPEG '
                        'colour, 16UC1 depth in mm, CameraInfo, /tf, zstd chunks, plus '
                        'associations.txt and groundtruth.txt); --storage and the frame names '
                        'do not apply')
    parser.add_argument('--force', action='store_true', help='replace an existing output')


def run(args: argparse.Namespace) -> int:
    """Write the bag; return the exit status."""
    try:
        data = args.data or str(default_tum_dir())
    except FileNotFoundError as exc:
        cli.report_error('make-tum-bag', exc)
        return 2
    if os.path.exists(args.out):
        if not args.force:
            print(f'l3rocc make-tum-bag: {args.out} exists (use --force to replace it)',
                  file=sys.stderr)
            return 2
        import shutil
        shutil.rmtree(args.out) if os.path.isdir(args.out) else os.remove(args.out)
    try:
        if args.bundle:
            out = write_tum_bundle(args.out, data, args.max_frames)
        else:
            out = write_tum_bag(args.out, data, args.storage, args.world_frame,
                                args.camera_frame, args.max_frames)
    except (OSError, ValueError) as exc:
        cli.report_error('make-tum-bag', exc)
        return 1
    print(f'wrote {out} from {data}')
    return 0
