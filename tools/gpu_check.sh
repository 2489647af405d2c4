#!/usr/bin/env bash
# The device checks of issue 4 in one command, for a machine with a GPU (README: "GPU check").
#
#   bash tools/gpu_check.sh [DEVICE]        # DEVICE: cuda (default) or cpu (to try it here)
#
# 1. the suite's CUDA tests (every test parametrized over the device, its cuda variant; test
#    modules whose optional packages are missing there are reported and left out);
# 2. python -m l3rocc_core.bench.gpu_check: parity with the CPU, the window pass eager and
#    compiled, the newest pass per frame, on the TUM and the default grid.
# Results go to $OUT (the device tool's folder) or out/gpu_check: cuda_tests.log,
# gpu_check.json, gpu_check.md, gpu_check.log. About 2-4 minutes; needs python3 with torch,
# numpy, PyYAML, opencv and pytest (the GPU machines here have them), no ROS.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}
out=${OUT:-out/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/device.txt"
if [ "$device" = cuda ]; then
    timeout 900 "$py" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -k cuda \
        tests/core 2>&1 | tee "$out/cuda_tests.log"
    tests=${PIPESTATUS[0]}
else
    tests=0
fi
timeout 900 "$py" -m l3rocc_core.bench.gpu_check --device "$device" --out "$out" 2>&1 \
    | tee "$out/gpu_check.log"
check=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, checks exit $check -> $out"
[ "$tests" -eq 0 ] && [ "$check" -eq 0 ]
