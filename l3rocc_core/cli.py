"""``l3rocc`` command line: offline tools, one module per subcommand under ``l3rocc_core.tools``.

Each tool module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``l3rocc --help`` stays fast.
"""

import argparse
import importlib
import sys
from typing import Callable, List, Optional, Tuple, Type

COMMANDS = {
    'replay': "run the node's pipeline on a bag, video or image folder; write occupancy.npz",
    'eval': 'score an occupancy.npz against ground truth; write metrics.json and a plot',
    'synth': 'render synthetic dynamic scenes with exact 4D ground truth (bags, shards)',
    'train': 'train the temporal-attention refiner on synthetic shards, or the depth network',
    'bench': 'accuracy and speed benchmarks: tables, results.json and plots',
    'export': 'export occupancy (npz, PLY points, meshes, LeRobot datasets, Rerun recordings)',
    'render': 'PNG/MP4 previews: RGB | depth | occupancy',
    'make-tum-bag': 'turn TUM fr1/xyz frames (bundled or a TUM folder) into a rosbag2 (mcap)',
    'demo': 'the make demo job: TUM bag, replay, eval, render, summary table',
    'batch': 'replay many recordings (process pool or Ray): per-source results and a summary',
}


#: What a tool reports as bad input instead of a traceback: unreadable files (``OSError``) and
#: bad options or file contents (``ValueError``, the parent of the loaders' errors with a kind).
BAD_INPUT: Tuple[Type[BaseException], ...] = (OSError, ValueError)


def report_error(tool: str, exc: BaseException) -> None:
    """Print ``l3rocc TOOL: message [kind]`` on stderr.

    :param tool: the subcommand, e.g. ``'eval'``
    :param exc: the error; ``kind`` is its ``kind`` attribute, or else its class name
    """
    kind = getattr(exc, 'kind', type(exc).__name__)
    print(f'l3rocc {tool}: {exc} [{kind}]', file=sys.stderr)


def run_reporting(tool: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                  errors: Tuple[Type[BaseException], ...] = BAD_INPUT, status: int = 2) -> int:
    """Run a tool's ``body(args)``; an error of the types ``errors`` is reported, not raised.

    :param tool: the subcommand, for the message (:func:`report_error`)
    :param body: the tool's work, returning its exit status
    :param args: the parsed arguments
    :param errors: exception types that mean bad input or a failed run
    :param status: the exit status returned after such an error
    :return: ``body``'s exit status, or ``status``
    """
    try:
        return body(args)
    except errors as exc:
        report_error(tool, exc)
        return status


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; subcommand arguments are added lazily in :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='l3rocc', description='l3rocc offline tools: monocular camera to 4D occupancy.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``l3rocc`` executable.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``)
    :return: process exit status
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv or ['--help'])
        return 2
    name = argv[0]
    module = importlib.import_module('l3rocc_core.tools.' + name.replace('-', '_'))
    parser = argparse.ArgumentParser(prog=f'l3rocc {name}', description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
