#!/usr/bin/env bash
# The device checks in one command, for a machine with a GPU (docs/benchmarks.md: "GPU check").
#
#   bash tools/gpu_check.sh [DEVICE [GPU_CHECK_ARGS...]]   # DEVICE: cuda (default) or cpu
#
# 1. the suite's CUDA tests: the cuda variants of the tests parametrized over the device, in the
#    modules that hold them (their imports need no ROS, rosbags or open3d);
# 2. python -m l3rocc_bench.gpu_check: parity with the CPU (TF32 off), the window pass
#    eager and compiled, the newest pass per frame, on the TUM and the default grid (further
#    arguments go to it, e.g. --grid t=9x10x6 --repeats 1).
# Results go to $OUT (when set) or out/gpu_check: device.txt, cuda_tests.log,
# gpu_check.json, gpu_check.md, gpu_check.log (gpu_check.json is rewritten after every grid).
# Each step has its own time limit (tests 240 s, checks 300 s) so that one run of
# ~580 s gets all of it; not yet timed on a GPU (inductor compiles from an empty cache there).
# Needs python3 with torch, numpy, PyYAML, opencv, scipy, tqdm and pytest; no ROS.
# Exit status 0 when the tests and the checks (parity within --max-diff) pass.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}
shift || true
out=${OUT:-out/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/device.txt"
tests=skipped
if [ "$device" = cuda ]; then
    timeout 240 "$py" -m pytest -q -p no:cacheprovider -k cuda tests/core/test_fusion.py \
        tests/core/test_plane_sweep.py tests/core/test_raycast.py tests/core/test_refiner.py \
        tests/core/test_refiner_compile.py 2>&1 | tee "$out/cuda_tests.log"
    tests=${PIPESTATUS[0]}
fi
timeout 300 "$py" -m l3rocc_bench.gpu_check --device "$device" --out "$out" "$@" 2>&1 \
    | tee "$out/gpu_check.log"
check=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, checks exit $check -> $out"
[ "$tests" = skipped ] || [ "$tests" -eq 0 ] || exit 1
[ "$check" -eq 0 ]
