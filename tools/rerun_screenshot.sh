#!/usr/bin/env bash
# A screenshot of the Rerun viewer showing the bundled TUM clip's recording (docs/viewers.md).
#
#   bash tools/rerun_screenshot.sh [OUT.png]        # default docs/rerun_viewer.png
#
# 1. `l3rocc replay` of data/tum_fr1_xyz_37 with the demo's parameters (config/tum.yaml) and
#    --rerun, into out/rerun_screenshot/run.rrd;
# 2. a blueprint (.rbl) on top of the recording's own layout: time at the newest frame, the 3D
#    eye over the shoulder of the clip's last camera;
# 3. the viewer itself (`rerun --screenshot-to`) on a virtual X display (Xvfb) with Mesa's
#    software Vulkan (lavapipe; RENDERER=gl picks OpenGL, which Mesa 22.3's llvmpipe cannot
#    serve: "Adapter does not support drawing to texture format R32Float"), a fresh HOME so
#    that no saved viewer state changes the layout;
# 4. 1280 px wide (the viewer saves at twice its 1280 x 720 window), pngquant when present.
# Needs: the venv (PYTHON, default .venv/bin/python) with rerun-sdk; apt packages xvfb and
# mesa-vulkan-drivers; pngquant optional. No GPU, no display; about 20 s on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
png=${1:-docs/rerun_viewer.png}
py=${PYTHON:-.venv/bin/python}
rerun=$(dirname "$py")/rerun
work=out/rerun_screenshot
mkdir -p "$work" "$(dirname "$png")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$py" -m l3rocc_core.cli replay data/tum_fr1_xyz_37 --out "$work" --no-progress \
    --params-file config/tum.yaml --rerun "$work/run.rrd"
"$py" - "$work/shot.rbl" <<'EOF'
import sys
from l3rocc_core.viewers.rerun_log import APPLICATION_ID, make_blueprint
# world frame of config/tum.yaml (z up): the desk lies around (-0.1, 0.5, 0.6), the clip's last
# camera at (1.1, 0.6, 1.4) looks along -x and down at it.
make_blueprint('following', ([2.2, -0.5, 1.5], [-0.1, 0.5, 0.6])).save(APPLICATION_ID,
                                                                        sys.argv[1])
EOF

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
mkdir -m 700 "$home/run"
# The screen is larger than the window (placed at 0,0 without a window manager), so that the
# pointer, which X puts in the middle of the screen, is off the window: no hover tooltips.
HOME=$home XDG_RUNTIME_DIR=$home/run timeout 300 xvfb-run -a -s '-screen 0 3200x2000x24' \
    "$rerun" "$work/run.rrd" "$work/shot.rbl" --renderer "${RENDERER:-vulkan}" \
    --window-size 1280x720 --screenshot-to "$work/viewer.png" >"$work/viewer.log" 2>&1 \
    || { tail -20 "$work/viewer.log" >&2; exit 1; }

"$py" - "$work/viewer.png" "$png" <<'EOF'
import sys
import cv2
img = cv2.imread(sys.argv[1], cv2.IMREAD_COLOR)
scale = 1280 / img.shape[1]
cv2.imwrite(sys.argv[2], cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA),
            [cv2.IMWRITE_PNG_COMPRESSION, 9])
EOF
if command -v pngquant >/dev/null; then
    pngquant --force --skip-if-larger --quality 70-95 --output "$png" "$png" || true
fi
echo "wrote $png ($(du -k "$png" | cut -f1) KiB)"
