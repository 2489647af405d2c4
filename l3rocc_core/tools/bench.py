"""``l3rocc bench``: the benchmarks of :mod:`l3rocc_bench`, which lives outside the runtime.

The options and the run are :mod:`l3rocc_bench.cli`'s; it is imported only when the
subcommand is parsed, so ``l3rocc_core`` never imports the benchmark at module import time.
"""

import argparse

HELP = 'accuracy and speed benchmarks: tables, results.json and plots'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc bench`` arguments (:func:`l3rocc_bench.cli.add_arguments`)."""
    from l3rocc_bench.cli import add_arguments as add_bench_arguments
    add_bench_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (:func:`l3rocc_bench.cli.run`): 0 ran, 1 failed, 2 bad input."""
    from l3rocc_bench.cli import run as run_bench
    return run_bench(args)
