"""``l3rocc bench``: accuracy and speed benchmarks that anyone can re-run with one command.

- :mod:`~l3rocc_core.bench.suite`: the fixed, seeded set of sequences (synthetic + TUM fr1/xyz)
  and their cache (bags made once with ``l3rocc synth`` / ``write_tum_bag``);
- :mod:`~l3rocc_core.bench.accuracy`: replay a sequence (the node's pipeline, every frame) and
  score every push: occupancy (newest slice, window, static/dynamic, flicker) and depth;
- :mod:`~l3rocc_core.bench.resources`: peak RSS, threads and load average of processes;
- :mod:`~l3rocc_core.bench.speed`: the ``l3rocc replay`` speed run, the node run
  (``l3rocc_ros.bench_node`` in a subprocess) and the speed targets;
- :mod:`~l3rocc_core.bench.report`: ``results.json``, ``results.md`` and the PNG plots.

Fusion against OctoMap lives in :mod:`l3rocc_core.bench_octomap`. Nothing here asserts a
timing: the figures are measured and reported (medians, ratios, PASS/MISS against targets).
"""
