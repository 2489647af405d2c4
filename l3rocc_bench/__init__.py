"""``l3rocc bench``: accuracy and speed benchmarks that anyone can re-run with one command.

The benchmark lives outside the runtime packages: ``l3rocc_core`` reaches it only when the
subcommand runs (:mod:`l3rocc_core.tools.bench` imports :mod:`~l3rocc_bench.cli` then), and
only :mod:`~l3rocc_bench.node`, run in its own process, imports rclpy and ``l3rocc_ros``.

- :mod:`~l3rocc_bench.suite`: the fixed, seeded set of sequences (synthetic + TUM fr1/xyz)
  and their cache (bags made once with ``l3rocc synth`` / ``write_tum_bag``);
- :mod:`~l3rocc_bench.accuracy`: replay a sequence (the node's pipeline, every frame) and
  score every push: occupancy (newest slice, window, static/dynamic, flicker) and depth;
- :mod:`~l3rocc_bench.resources`: peak RSS, threads and load average of processes;
- :mod:`~l3rocc_bench.speed`: the ``l3rocc replay`` speed run, the node run
  (``l3rocc_bench.node`` in a subprocess) and the speed targets;
- :mod:`~l3rocc_bench.report`: ``results.json``, ``results.md`` and the PNG plots;
- :mod:`~l3rocc_bench.octomap`: fusion throughput against OctoMap on the same depth maps;
- :mod:`~l3rocc_bench.node`: the node under a 30 Hz camera, in its own process;
- :mod:`~l3rocc_bench.cli`: the ``l3rocc bench`` options and the run that ties them together;
- :mod:`~l3rocc_bench.gpu_check`: the refiner's device checks (``tools/gpu_check.sh``).

Nothing here asserts a timing: the figures are measured and reported (medians, ratios,
PASS/MISS against targets).
"""
