"""Node benchmark: ``l3rocc_node`` in its own process under a 30 Hz 640x480 camera stream.

Run by ``l3rocc bench`` (as ``python -m l3rocc_bench.node --out RESULT.json ...``), the one
part of :mod:`l3rocc_bench` that imports rclpy and ``l3rocc_ros``, in its own process. It

1. starts ``l3rocc_node`` (``python -m l3rocc_ros.lifecycle``) as a subprocess with the Fast DDS
   shared-memory profile (``config/fastdds_shm.xml`` via ``FASTDDS_DEFAULT_PROFILES_FILE``),
   ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a private ``ROS_DOMAIN_ID``;
2. publishes the TUM fr1/xyz images (640x480 rgb8, played forwards and backwards so the camera
   moves smoothly), CameraInfo and ``/tf`` (ground-truth poses) at ``--rate`` Hz with
   header stamps = now, from a thread on an absolute schedule;
3. subscribes to ``/l3rocc/points`` (and ``/l3rocc/markers``, as RViz would) and
   ``/diagnostics``; measures, after ``--warmup`` seconds: images sent per second, frames the
   node ingested and processed per second (its diagnostics counters), results published per
   second and their latency (receive time - header stamp) p50/p95, dropped frames by reason,
   and samples the node's RSS, peak RSS (VmHWM), thread count and CPU time, the machine's
   busy and stolen CPU time and load, and every 2 s a fixed-work speed probe;
4. stops the node with SIGINT (the time it takes is reported) and writes one JSON file, with a
   time series in ``--bucket`` second buckets (the soak plot's data: rates, latency, memory,
   stage timings and where the CPU went) and the RSS slope over the measured time and over
   its second half (``rss_slope_last_half_mb_per_min``).

``--publish-cost OCC.npz`` also times building the output messages (``~/points``,
``~/occupancy``, ``~/markers``) from a window of an ``occupancy.npz``: the publish stage.
"""

import argparse
import array
import json
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

NODE_NAME = 'l3rocc'
IMAGE_TOPIC = '/camera/image_raw'
INFO_TOPIC = '/camera/camera_info'
MB = 1024.0 * 1024.0


def ros_environment(domain_id: Optional[int] = None, log_dir: Optional[str] = None
                    ) -> Dict[str, str]:
    """Environment of a private, local ROS 2 graph with the shared-memory Fast DDS profile.

    :param domain_id: ROS_DOMAIN_ID (default: 150..229 from this process id, apart from the
        tests' 1..100)
    :param log_dir: ROS_LOG_DIR (default: a new temporary folder)
    """
    from l3rocc_core.paths import config_file
    env = dict(os.environ)
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = config_file('fastdds_shm.xml')
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_DOMAIN_ID'] = str(domain_id if domain_id is not None else 150 + os.getpid() % 80)
    env['ROS_LOG_DIR'] = log_dir or tempfile.mkdtemp(prefix='l3rocc_bench_ros_')
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    return env


def node_command(params_file: Optional[str], sets: Sequence[str]) -> List[str]:
    """Command line of the node under test (remapped to the camera topics of this bench).

    :param params_file: ROS 2 parameter file, or None
    :param sets: ``name=value`` parameter overrides (YAML values)
    """
    cmd = [sys.executable, '-m', 'l3rocc_ros.lifecycle', '--ros-args',
           '-r', f'image:={IMAGE_TOPIC}', '-r', f'camera_info:={INFO_TOPIC}']
    if params_file:
        cmd += ['--params-file', params_file]
    for item in sets:
        name, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'parameter override {item!r} is not name=value')
        cmd += ['-p', f'{name.strip()}:={value.strip()}']
    return cmd


# --------------------------------------------------------------------------------------------
# The camera stream
# --------------------------------------------------------------------------------------------

class CameraStream:
    """Prebuilt Image, CameraInfo and TF messages of the TUM clip, played back and forth.

    :param tum_dir: TUM folder (None: the bundled fr1/xyz)
    """

    def __init__(self, tum_dir: Optional[str] = None):
        """Load the clip and build one Image message per frame (only stamps change later)."""
        from geometry_msgs.msg import TransformStamped
        from l3rocc_core.datasets.tum import OPTICAL_FRAME, WORLD_FRAME, load_tum
        from l3rocc_core.transforms import matrix_to_quat
        from sensor_msgs.msg import CameraInfo, Image
        seq = load_tum(tum_dir)
        cam = seq.camera
        self.width, self.height = cam.width, cam.height
        self.images = []
        self.transforms = []
        for f in seq.frames:
            data = array.array('B')
            data.frombytes(np.ascontiguousarray(f.rgb).tobytes())
            self.images.append(Image(height=cam.height, width=cam.width, encoding='rgb8',
                                     is_bigendian=0, step=cam.width * 3, data=data))
            ts = TransformStamped(child_frame_id=OPTICAL_FRAME)
            ts.header.frame_id = WORLD_FRAME
            t = f.T_world_cam[:3, 3]
            q = matrix_to_quat(f.T_world_cam[:3, :3])
            ts.transform.translation.x, ts.transform.translation.y = float(t[0]), float(t[1])
            ts.transform.translation.z = float(t[2])
            ts.transform.rotation.x, ts.transform.rotation.y = float(q[0]), float(q[1])
            ts.transform.rotation.z, ts.transform.rotation.w = float(q[2]), float(q[3])
            self.transforms.append(ts)
        for img in self.images:
            img.header.frame_id = OPTICAL_FRAME
        K = cam.K
        self.info = CameraInfo(width=cam.width, height=cam.height,
                               distortion_model=cam.distortion_model, d=list(cam.D),
                               k=K.reshape(-1).tolist(),
                               r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                               p=[K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0,
                                  0.0, 0.0, 1.0, 0.0])
        self.info.header.frame_id = OPTICAL_FRAME
        n = len(self.images)
        self.order = list(range(n)) + list(range(n - 2, 0, -1))   # ping-pong: no pose jumps

    def frame(self, k: int) -> int:
        """Index of the clip frame shown at publication ``k``."""
        return self.order[k % len(self.order)]


class Publisher(threading.Thread):
    """Publishes the stream at ``rate_hz`` on an absolute schedule (late ticks are skipped)."""

    def __init__(self, node: Any, stream: CameraStream, rate_hz: float):
        """Create the publishers (sensor-data QoS for the camera, reliable /tf)."""
        super().__init__(name='bench-camera', daemon=True)
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        self.TFMessage = TFMessage
        self.node = node
        self.stream = stream
        self.period = 1.0 / float(rate_hz)
        self.pub_image = node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.pub_info = node.create_publisher(CameraInfo, INFO_TOPIC, qos_profile_sensor_data)
        self.pub_tf = node.create_publisher(TFMessage, '/tf', 100)
        self.sent: List[float] = []          # monotonic send times
        self.skipped_ticks = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Publish until :attr:`stop_event` is set."""
        t0 = time.monotonic()
        k = 0
        while not self.stop_event.is_set():
            due = t0 + k * self.period
            now = time.monotonic()
            if due > now:
                self.stop_event.wait(due - now)
                continue
            if now - due > self.period:          # fell behind: skip the missed ticks
                behind = int((now - due) / self.period)
                self.skipped_ticks += behind
                k += behind
            self.publish(k)
            k += 1

    def publish(self, k: int) -> None:
        """Publish TF, CameraInfo and the image of tick ``k``, stamped now."""
        i = self.stream.frame(k)
        stamp_ns = time.time_ns()
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        ts = self.stream.transforms[i]
        ts.header.stamp.sec, ts.header.stamp.nanosec = sec, nanosec
        self.pub_tf.publish(self.TFMessage(transforms=[ts]))
        info = self.stream.info
        info.header.stamp.sec, info.header.stamp.nanosec = sec, nanosec
        self.pub_info.publish(info)
        img = self.stream.images[i]
        img.header.stamp.sec, img.header.stamp.nanosec = sec, nanosec
        self.pub_image.publish(img)
        self.sent.append(time.monotonic())


class Collector:
    """Subscribes to the node's points, markers and diagnostics; records arrival and latency."""

    def __init__(self, node: Any, node_name: str = NODE_NAME):
        """Create the subscriptions (reliable, like the node's outputs)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray
        self.lock = threading.Lock()
        self.points: List[tuple] = []       # (monotonic receive time, latency s, points)
        self.markers: List[float] = []
        self.diagnostics: List[tuple] = []  # (monotonic receive time, {key: value})
        self.hardware_id = f'/{node_name}'
        self.sub_points = node.create_subscription(PointCloud2, f'/{node_name}/points',
                                                   self._on_points, 10)
        self.sub_markers = node.create_subscription(MarkerArray, f'/{node_name}/markers',
                                                    self._on_markers, 10)
        self.sub_diag = node.create_subscription(DiagnosticArray, '/diagnostics',
                                                 self._on_diagnostics, 10)

    def _on_points(self, msg: Any) -> None:
        now_ns = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.points.append((time.monotonic(), (now_ns - stamp) / 1e9, int(msg.width)))

    def _on_markers(self, msg: Any) -> None:
        with self.lock:
            self.markers.append(time.monotonic())

    def _on_diagnostics(self, msg: Any) -> None:
        values = {}
        for status in msg.status:
            if status.hardware_id != self.hardware_id:
                continue
            values['level'] = int.from_bytes(status.level, 'little') if isinstance(
                status.level, bytes) else int(status.level)
            values['message'] = status.message
            for kv in status.values:
                values[kv.key] = _number(kv.value)
        if values:
            with self.lock:
                self.diagnostics.append((time.monotonic(), values))


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def _pct(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def _diag_delta(diags: Sequence[tuple], key: str, t0: float, t1: float) -> Optional[float]:
    """Counter increase per second of diagnostics ``key`` between t0 and t1."""
    rows = [(t, d[key]) for t, d in diags if t0 <= t <= t1 and isinstance(d.get(key), float)]
    if len(rows) < 2 or rows[-1][0] <= rows[0][0]:
        return None
    return (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])


def _diag_total(diags: Sequence[tuple], key: str, t0: float, t1: float) -> Optional[float]:
    rows = [d[key] for t, d in diags if t0 <= t <= t1 and isinstance(d.get(key), float)]
    return rows[-1] - rows[0] if len(rows) >= 2 else None


def summarise(pub: Publisher, col: Collector, samples: List[Dict[str, float]], t_start: float,
              t_measure: float, t_end: float, bucket_s: float) -> Dict[str, Any]:
    """Rates, latency, drops and memory over [t_measure, t_end], and a bucketed time series.

    :param samples: node process samples (``t_s`` relative to ``t_start``)
    """
    with col.lock:
        points = list(col.points)
        markers = list(col.markers)
        diags = list(col.diagnostics)
    sent = [t for t in pub.sent if t_measure <= t <= t_end]
    dur = max(t_end - t_measure, 1e-9)
    pts = [p for p in points if t_measure <= p[0] <= t_end]
    lat_ms = [p[1] * 1e3 for p in pts]
    last_diag = diags[-1][1] if diags else {}
    stage_ms: Dict[str, float] = {}
    for key in {k for _, d in diags for k in d if str(k).startswith('stage_ms.')}:
        vals = [d[key] for t, d in diags if t_measure <= t <= t_end
                and isinstance(d.get(key), float)]
        if vals:
            stage_ms[key.split('.', 1)[1]] = float(np.median(vals))
    errors = {k.split('.', 1)[1]: v for k, v in last_diag.items()
              if str(k).startswith('error.')}
    rss = [(s['t_s'], s['rss_mb']) for s in samples if 'rss_mb' in s]
    rss_measure = [(t, r) for t, r in rss if t >= t_measure - t_start]
    slope = _slope_mb_per_min(rss_measure)
    # the second half of the measured time: what is left once the allocator is warm
    half_t = (t_measure + t_end) / 2.0 - t_start
    slope_last_half = _slope_mb_per_min([(t, r) for t, r in rss_measure if t >= half_t])
    threads = [s['threads'] for s in samples if 'threads' in s]
    out: Dict[str, Any] = {
        'measure_s': dur,
        'sent_frames': len(sent), 'sent_fps': len(sent) / dur, 'sent_total': len(pub.sent),
        'publisher_skipped_ticks': pub.skipped_ticks,
        'ingest_fps': _diag_delta(diags, 'frames_received', t_measure, t_end),
        'processed_fps': _diag_delta(diags, 'frames_processed', t_measure, t_end),
        'publish_hz': len(pts) / dur,
        'markers_hz': len([t for t in markers if t_measure <= t <= t_end]) / dur,
        'results_received': len(pts),
        'latency_ms': {'p50': _pct(lat_ms, 50), 'p95': _pct(lat_ms, 95),
                       'max': max(lat_ms) if lat_ms else None, 'n': len(lat_ms)},
        'node_latency_ms': {'p50': last_diag.get('latency_p50_ms'),
                            'p95': last_diag.get('latency_p95_ms')},
        'dropped_frames': _diag_total(diags, 'dropped_frames', t_measure, t_end),
        'dropped_queue_full': _diag_total(diags, 'dropped_queue_full', t_measure, t_end),
        'totals': {k: last_diag.get(k) for k in (
            'frames_received', 'frames_processed', 'results_published', 'dropped_frames',
            'dropped_queue_full', 'errors_total')},
        'errors': errors, 'last_error': last_diag.get('last_error'),
        'diagnostics_messages': len(diags), 'stage_ms': stage_ms,
        'device': last_diag.get('device'), 'refiner': last_diag.get('refiner'),
        'peak_rss_mb': max((s['peak_rss_mb'] for s in samples if 'peak_rss_mb' in s),
                           default=None),
        'rss_mb_start': rss_measure[0][1] if rss_measure else None,
        'rss_mb_end': rss[-1][1] if rss else None,
        'rss_slope_mb_per_min': slope,
        'rss_slope_last_half_mb_per_min': slope_last_half,
        'threads_start': threads[0] if threads else None,
        'threads_end': threads[-1] if threads else None,
        'threads_max': max(threads) if threads else None,
        'avg_points_per_result': float(np.mean([p[2] for p in pts])) if pts else None,
    }
    out['series'] = _series(pub, pts, diags, samples, t_start, t_end, bucket_s)
    return out


def _slope_mb_per_min(rss: Sequence[tuple]) -> Optional[float]:
    """Least-squares slope (MB/min) of (seconds, MB) samples; None for fewer than 3 or < 1 s."""
    if len(rss) < 3:
        return None
    tt, rr = np.asarray(rss, np.float64).T
    if tt[-1] - tt[0] <= 1.0:
        return None
    return float(np.polyfit(tt / 60.0, rr, 1)[0])


def _series(pub: Publisher, pts: Sequence[tuple], diags: Sequence[tuple],
            samples: Sequence[Dict[str, float]], t_start: float, t_end: float,
            bucket_s: float) -> List[Dict[str, Any]]:
    """Return one row per ``bucket_s`` seconds: rates, latency, memory, and what the time went to.

    Besides rates and latency, each row says where a change of rate comes from: the node's
    stage timings (median of the ``stage_ms.*`` diagnostics in the bucket), the node's CPU
    use (cores) and CPU time per processed frame, the CPU the rest of the machine used
    (``other_cores``: every process but the node, this benchmark's publisher included),
    hypervisor steal, the 1-minute load average, and the CPU ms of a fixed workload
    (``probe_ms``, :func:`~l3rocc_bench.resources.speed_probe`). CPU per frame rising
    with ``probe_ms`` flat is the node's own work growing; both rising together is the
    machine getting slower per unit of work.
    """
    rows = []
    edges = np.arange(t_start, t_end + 1e-9, bucket_s)
    for a, b in zip(edges[:-1], edges[1:]):
        lat = [p[1] * 1e3 for p in pts if a <= p[0] < b]
        mem = [s for s in samples if a - t_start <= s['t_s'] < b - t_start]
        processed = _diag_delta(diags, 'frames_processed', a, b)
        cores = _rate_of(mem, 'cpu_s')
        machine = _rate_of(mem, 'machine_busy_s')
        probes = [s['probe_ms'] for s in mem if 'probe_ms' in s]
        stages: Dict[str, float] = {}
        for key in sorted({k for t, d in diags if a <= t < b for k in d
                           if str(k).startswith('stage_ms.')}):
            vals = [d[key] for t, d in diags if a <= t < b and isinstance(d.get(key), float)]
            if vals:
                stages[key.split('.', 1)[1]] = float(np.median(vals))
        loads = [s['load1'] for s in mem if 'load1' in s]
        rows.append({
            't_s': float(b - t_start),
            'sent_fps': len([t for t in pub.sent if a <= t < b]) / bucket_s,
            'ingest_fps': _diag_delta(diags, 'frames_received', a, b),
            'processed_fps': processed,
            'published_hz': len([p for p in pts if a <= p[0] < b]) / bucket_s,
            'dropped_per_s': _diag_delta(diags, 'dropped_frames', a, b),
            'latency_p50_ms': _pct(lat, 50), 'latency_p95_ms': _pct(lat, 95),
            'rss_mb': mem[-1]['rss_mb'] if mem and 'rss_mb' in mem[-1] else None,
            'threads': mem[-1].get('threads') if mem else None,
            'node_cpu_cores': cores,
            'cpu_ms_per_frame': (cores * 1e3 / processed
                                 if cores is not None and processed else None),
            'load1': loads[-1] if loads else None,
            'other_cores': (max(machine - cores, 0.0)
                            if machine is not None and cores is not None else None),
            'steal_cores': _rate_of(mem, 'machine_steal_s'),
            'probe_ms': float(np.median(probes)) if probes else None,
            'stage_ms': stages})
    return rows


def _rate_of(samples: Sequence[Dict[str, float]], key: str) -> Optional[float]:
    """Increase per second of a cumulative sample value (CPU seconds -> cores), or None."""
    return _diag_delta([(s['t_s'], s) for s in samples], key, -math.inf, math.inf)


# --------------------------------------------------------------------------------------------
# Publish stage cost
# --------------------------------------------------------------------------------------------

def publish_cost(occupancy_path: str, window: int = 16, repeats: int = 5) -> Dict[str, Any]:
    """Median milliseconds to build each output message from a window of an occupancy.npz.

    The window is the file's last ``window`` rows taken as slices (their occupied voxels and
    probabilities), as large as the node's real windows on that sequence.
    """
    from l3rocc_core.occupancy import Occupancy4D, load_sequence
    from l3rocc_ros.messages import (MarkerEncoder, occupancy_to_markers, occupancy_to_msg,
                                     occupancy_to_pointcloud2)
    from rclpy.serialization import serialize_message
    seq = load_sequence(occupancy_path)
    rows = list(range(max(0, len(seq) - window), len(seq)))
    prob = np.stack([seq.dense(n) for n in rows])
    occ = Occupancy4D(seq.grid, seq.stamps_ns[rows], prob, None, 0.5)
    encoder = MarkerEncoder()
    timings: Dict[str, List[float]] = {'points': [], 'occupancy': [], 'markers': []}
    for _ in range(repeats):
        for name, build in (('points', lambda: occupancy_to_pointcloud2(occ)),
                            ('occupancy', lambda: occupancy_to_msg(occ)),
                            ('markers', lambda: occupancy_to_markers(occ, False, encoder))):
            t0 = time.perf_counter()
            msg = build()
            if not isinstance(msg, bytes):
                serialize_message(msg)      # what publish() does with a message object
            timings[name].append((time.perf_counter() - t0) * 1e3)
    out = {k: float(np.median(v)) for k, v in timings.items()}
    out['total'] = sum(out.values())
    out['occupied_voxels_in_window'] = int(sum(
        seq.indptr[n + 1] - seq.indptr[n] for n in rows))
    out['slices'] = len(rows)
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def run_bench(args: argparse.Namespace) -> Dict[str, Any]:
    """Start the node, stream, measure, stop; return the result dict."""
    log_dir = args.log_dir or os.path.splitext(args.out)[0] + '_ros_log'
    os.makedirs(log_dir, exist_ok=True)
    env = ros_environment(log_dir=os.path.abspath(log_dir))
    os.environ.update({k: env[k] for k in ('FASTDDS_DEFAULT_PROFILES_FILE',
                                           'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID',
                                           'ROS_LOG_DIR', 'RMW_IMPLEMENTATION')})
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from l3rocc_bench.resources import ProcessMonitor, load_average
    stream = CameraStream(args.tum_dir)
    cmd = node_command(args.params_file, args.set)
    log_path = Path(env['ROS_LOG_DIR']) / 'node_stdout.log'
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('l3rocc_bench_client', context=context)
    pub = Publisher(node, stream, args.rate)
    col = Collector(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    result: Dict[str, Any] = {'command': cmd, 'rate_hz': args.rate, 'seconds': args.seconds,
                              'warmup_s': args.warmup, 'image': f'{stream.width}x'
                              f'{stream.height} rgb8', 'domain_id': env['ROS_DOMAIN_ID'],
                              'load_average_start': load_average()}
    with open(log_path, 'wb') as log:
        t_launch = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        mon = ProcessMonitor(proc.pid, args.sample_period, probe_every_s=2.0)
        try:
            ready = False
            while time.monotonic() - t_launch < args.start_timeout:
                executor.spin_once(timeout_sec=0.1)
                if proc.poll() is not None:
                    break
                if (pub.pub_image.get_subscription_count() > 0
                        and col.sub_points.get_publisher_count() > 0):
                    ready = True
                    break
            result['startup_s'] = time.monotonic() - t_launch
            if not ready:
                raise RuntimeError(f'l3rocc_node did not come up within {args.start_timeout} '
                                   f's (exit code {proc.poll()}); log: {log_path}')
            t_start = time.monotonic()
            mon_offset = t_start - mon.t0
            pub.start()
            t_measure = t_start + args.warmup
            t_end = t_measure + args.seconds
            last_report = t_start
            while time.monotonic() < t_end and proc.poll() is None:
                executor.spin_once(timeout_sec=0.05)
                if args.progress and time.monotonic() - last_report >= 10.0:
                    last_report = time.monotonic()
                    print(f'l3rocc_bench.node: {last_report - t_start:5.0f}/'
                          f'{args.warmup + args.seconds:.0f} s, sent {len(pub.sent)}, '
                          f'results {len(col.points)}', file=sys.stderr, flush=True)
            t_end = min(t_end, time.monotonic())
            pub.stop_event.set()
            pub.join(timeout=2.0)
            samples = [dict(s, t_s=s['t_s'] - mon_offset) for s in mon.samples]
            result.update(summarise(pub, col, samples, t_start, t_measure, t_end,
                                    args.bucket))
            result['node_alive_at_end'] = proc.poll() is None
        finally:
            pub.stop_event.set()
            mon.stop()
            result['shutdown_s'], result['node_exit_code'] = _stop(proc)
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)
    result['load_average_end'] = load_average()
    result['node_log'] = str(log_path)
    if args.publish_cost:
        result['publish_cost_ms'] = publish_cost(args.publish_cost)
    return result


def _stop(proc: subprocess.Popen) -> tuple:
    """SIGINT, then SIGTERM, then SIGKILL; return (seconds to exit after SIGINT, exit code)."""
    if proc.poll() is not None:
        return 0.0, proc.returncode
    t0 = time.monotonic()
    for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    return time.monotonic() - t0, proc.returncode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node benchmark's arguments."""
    parser.add_argument('--out', required=True, metavar='JSON', help='result file')
    parser.add_argument('--seconds', type=float, default=20.0,
                        help='measured seconds after the warm-up (default %(default)s)')
    parser.add_argument('--warmup', type=float, default=8.0,
                        help='seconds streamed before measuring (default %(default)s)')
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    parser.add_argument('--bucket', type=float, default=5.0,
                        help='seconds per row of the time series (default %(default)s)')
    parser.add_argument('--params-file', metavar='YAML',
                        help='node parameter file (default: config/tum.yaml)')
    parser.add_argument('--set', nargs='+', action='extend', default=[], metavar='NAME=VALUE',
                        help='node parameter overrides, e.g. refiner=none device=cpu')
    parser.add_argument('--tum-dir', help='TUM folder (default: the bundled fr1/xyz)')
    parser.add_argument('--publish-cost', metavar='OCC.npz',
                        help='also time building the output messages from this file')
    parser.add_argument('--start-timeout', type=float, default=120.0,
                        help='seconds to wait for the node to come up')
    parser.add_argument('--sample-period', type=float, default=1.0,
                        help='seconds between RSS samples of the node')
    parser.add_argument('--log-dir', help='ROS_LOG_DIR and the node output log (default: '
                        'beside --out, OUT_ros_log/)')
    parser.add_argument('--progress', action='store_true', help='print progress lines')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the node benchmark and write its JSON; exit status 1 when the node failed."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_bench.node',
                                     description=__doc__.split('\n')[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.params_file is None:
        from l3rocc_core.paths import config_file
        args.params_file = config_file('tum.yaml')
    try:
        result = run_bench(args)
        status = 0
    except (RuntimeError, OSError, ValueError) as exc:
        result = {'error': str(exc)}
        status = 1
    tmp = args.out + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1, default=float)
    os.replace(tmp, args.out)
    if status:
        print(f'l3rocc_bench.node: {result["error"]}', file=sys.stderr)
    return status


if __name__ == '__main__':
    sys.exit(main())
