"""SIGINT / SIGTERM while the node is computing: it stops cleanly, without hanging.

The node runs as its own process with a configuration whose frames take longer than the
camera period, so the worker is always inside the pipeline when the signal comes. The test
process is the camera. Idle shutdown (exit status, no traceback) is proven in test_shutdown.py;
restarting in the same process in test_reliability_faults.py.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = 'l3rocc_rel_sig'
HANG_S = 10.0   # longer than this: the shutdown hangs
HEAVY = ['working_width:=160', 'num_depth_planes:=256', 'depth_downsample:=1',
         'num_source_frames:=8', 'max_keyframes:=8']


def node_args(wall) -> list:
    """Return the ros-args of the node under test: the wall scene, made slow."""
    o = wall.OVERRIDES
    args = ['--ros-args', '-r', f'__node:={NAME}', '-r', 'image:=/sig/image',
            '-r', 'camera_info:=/sig/camera_info']
    for key in ('refiner', 'device', 'pose_source', 'world_frame', 'min_depth', 'max_depth',
                'voxel_size', 'window_size'):
        args += ['-p', f'{key}:={o[key]}']
    for key in ('grid_min', 'grid_max'):
        args += ['-p', f'{key}:=[{",".join(str(float(v)) for v in o[key])}]']
    for value in HEAVY:
        args += ['-p', value]
    return args


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_mid_inference_stops_within_2s(ros_context, wall, tmp_path: Path, repo_root,
                                              sig) -> None:
    from rclpy.executors import SingleThreadedExecutor
    log = tmp_path / 'node.log'
    client = wall.Client(ros_context, '/sig', NAME)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client.node)
    spin = wall.spin_in_thread(executor)
    stop_camera = threading.Event()

    def camera() -> None:
        k = 0
        while not stop_camera.is_set():
            client.publish_frame(k % 12)
            k += 1
            time.sleep(0.1)
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'l3rocc_ros.lifecycle'] + node_args(wall),
                                cwd=repo_root, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ))
    feeder = threading.Thread(target=camera, daemon=True)
    try:
        assert wall.wait_until(lambda: proc.poll() is not None or 'l3rocc: ' in log.read_text(),
                               90.0), 'the node did not start'
        assert proc.poll() is None, log.read_text()
        feeder.start()
        # two results: the window has sources, every frame now runs the full plane sweep
        assert wall.wait_until(lambda: len(client.get('points')) >= 2, 90.0), log.read_text()
        time.sleep(0.3)  # not a wait for anything: the signal lands in a later frame's sweep
        sent = time.monotonic()
        proc.send_signal(sig)
        stopped_at = left_at = None
        while proc.poll() is None and time.monotonic() - sent < 20.0:
            if stopped_at is None and 'stopped in' in log.read_text():
                stopped_at = time.monotonic()
            if left_at is None and client.pub_image.get_subscription_count() == 0:
                left_at = time.monotonic()  # the node's image subscription is gone
            time.sleep(0.01)
        left_at = left_at or time.monotonic()
        exited = time.monotonic() - sent
        status = proc.wait(timeout=10.0)
    finally:
        stop_camera.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        spin.stop()
        executor.shutdown(timeout_sec=1.0)
        client.node.destroy_node()
    text = log.read_text()
    stopped = re.search(r'stopped in ([0-9.]+) s', text)
    assert status == 0, text
    assert 'shutting down' in text and stopped and 'Traceback' not in text, text
    print(f'\n{signal.Signals(sig).name} mid-inference: node stopped in {stopped.group(1)} s '
          f'(its own clock); after the signal: left the ROS graph {left_at - sent:.2f} s, '
          f'process gone {exited:.2f} s; '
          f'{"frame abandoned" if "not waited for" in text else "frame finished"}')
    assert 'shutting down (the worker is computing a frame)' in text, text
    # Only a hang is caught here (the wait for the frame in hand is bounded by STOP_BUDGET_S,
    # then the process ends with os._exit); the 2 s target is measured, not asserted: see
    # docs/reliability.md for the distribution over repeated runs.
    assert float(stopped.group(1)) <= HANG_S, text
    assert left_at - sent <= HANG_S, text
    assert exited <= HANG_S, f'the process took {exited:.2f} s to exit\n{text}'
