"""The ROS tests' analytic scene and client node (loaded by conftest.py's ``wall`` fixture).

A pinhole camera (160x120, f = 120 px) translates sideways along x in front of a textured wall,
the plane y = 2 m of ``odom``; every pixel sees depth 2 m. :class:`Client` publishes Image,
CameraInfo, /tf (and /clock) for it and collects the node's outputs.
"""

import array
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

WORLD, CAMERA = 'odom', 'wall_cam_optical'
W, H, F = 160, 120, 120.0
CX, CY = (W - 1) / 2.0, (H - 1) / 2.0
WALL_Y = 2.0
# camera optical axes in odom: x right = +x, y down = -z, z forward = +y (looking at the wall)
R_WORLD_CAM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
STEP_M = 0.02
# Node parameters of the scene: a small grid around the wall, geometry only, on the CPU.
OVERRIDES = {
    'refiner': 'none', 'device': 'cpu', 'pose_source': 'tf', 'world_frame': WORLD,
    'working_width': 96, 'window_size': 6, 'voxel_size': 0.05,
    'grid_min': [-0.8, 1.2, -0.5], 'grid_max': [0.8, 2.6, 0.5],
    'min_depth': 0.5, 'max_depth': 4.0, 'tf_timeout_s': 1.0, 'queue_size': 2,
    'publish_history': True,
}


def wall_texture() -> np.ndarray:
    """Return a float32 [512, 512] smooth random texture in [0, 1] over x, z in [-2, 2] m."""
    rng = np.random.default_rng(7)
    tex = cv2.GaussianBlur(rng.random((512, 512)).astype(np.float32), (0, 0), 2.0)
    return (tex - tex.min()) / (tex.max() - tex.min())


TEXTURE = wall_texture()


def render(x_cam: float) -> np.ndarray:
    """Return the uint8 [H, W, 3] view of the wall from camera position (x_cam, 0, 0)."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    x = x_cam + (u - CX) / F * WALL_Y
    z = -(v - CY) / F * WALL_Y
    s = (x + 2.0) / 4.0 * 511.0
    t = (2.0 - z) / 4.0 * 511.0
    gray = cv2.remap(TEXTURE, s, t, cv2.INTER_LINEAR)
    img = (np.clip(gray, 0, 1) * 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def stamp_of(msg: Any) -> int:
    """Return the header stamp of ``msg`` in nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def diagnostic_values(msg: Any, hardware_id: str) -> Dict[str, str]:
    """Return {key: value} of the statuses of ``hardware_id`` in a DiagnosticArray."""
    return {kv.key: kv.value for s in msg.status if s.hardware_id == hardware_id
            for kv in s.values}


class Client:
    """The test's second node: publishes the camera and collects the node's outputs.

    :param context: rclpy context
    :param inputs: namespace of the node's inputs ('' -> /image, /camera_info)
    :param node_name: the node under test (outputs /<node_name>/points etc.)
    :param camera_qos: QoS of the image and camera_info publishers (default: sensor data)
    """

    def __init__(self, context: Any, inputs: str = '', node_name: str = 'l3rocc',
                 camera_qos: Any = None):
        """Create publishers and subscriptions."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from l3rocc.msg import Occupancy4D
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray
        self.node = rclpy.create_node(f'{node_name}_test_client', context=context)
        self.lock = threading.Lock()
        self.received: Dict[str, List[Any]] = {'points': [], 'markers': [], 'occupancy': [],
                                               'diagnostics': []}
        n = self.node
        qos = qos_profile_sensor_data if camera_qos is None else camera_qos
        self.pub_image = n.create_publisher(Image, f'{inputs}/image', qos)
        self.pub_compressed = n.create_publisher(CompressedImage, f'{inputs}/image/compressed',
                                                 qos)
        self.pub_info = n.create_publisher(CameraInfo, f'{inputs}/camera_info', qos)
        self.pub_tf = n.create_publisher(TFMessage, '/tf', 100)
        self.pub_clock = n.create_publisher(Clock, '/clock', 10)
        for key, msg_type, topic in (('points', PointCloud2, f'/{node_name}/points'),
                                     ('markers', MarkerArray, f'/{node_name}/markers'),
                                     ('occupancy', Occupancy4D, f'/{node_name}/occupancy'),
                                     ('diagnostics', DiagnosticArray, '/diagnostics')):
            n.create_subscription(msg_type, topic, self._collector(key), 10)
        self.stamps: List[int] = []

    def _collector(self, key: str) -> Callable[[Any], None]:
        def collect(msg: Any) -> None:
            with self.lock:
                self.received[key].append(msg)
        return collect

    def get(self, key: str) -> List[Any]:
        """Return a copy of what arrived on ``key`` so far."""
        with self.lock:
            return list(self.received[key])

    def header(self, stamp_ns: int, frame_id: str = CAMERA) -> Any:
        """Return a std_msgs/Header."""
        from std_msgs.msg import Header
        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return h

    def camera_info(self, stamp_ns: int) -> Any:
        """Return the CameraInfo of the scene's pinhole camera."""
        from sensor_msgs.msg import CameraInfo
        return CameraInfo(header=self.header(stamp_ns), width=W, height=H,
                          distortion_model='plumb_bob', d=[0.0] * 5,
                          k=[F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0],
                          r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                          p=[F, 0.0, CX, 0.0, 0.0, F, CY, 0.0, 0.0, 0.0, 1.0, 0.0])

    def publish_clock(self, stamp_ns: int) -> None:
        """Publish /clock (simulated time)."""
        from rosgraph_msgs.msg import Clock
        self.pub_clock.publish(Clock(clock=self.header(stamp_ns).stamp))

    def publish_frame(self, k: int, stamp_ns: Optional[int] = None, encoding: str = 'rgb8',
                      camera_info: bool = True, tf: bool = True, jpeg: bool = False) -> int:
        """Publish /tf, camera_info and image k (camera at x = -0.1 + 0.02 k).

        :param stamp_ns: the frame's stamp (default: now, wall clock)
        :param jpeg: publish a CompressedImage (JPEG) on image/compressed instead
        :return: the stamp
        """
        from geometry_msgs.msg import TransformStamped
        from l3rocc_core.transforms import matrix_to_quat
        from sensor_msgs.msg import Image
        from tf2_msgs.msg import TFMessage
        stamp_ns = time.time_ns() if stamp_ns is None else int(stamp_ns)
        x_cam = -0.1 + STEP_M * k
        ts = TransformStamped(header=self.header(stamp_ns, WORLD), child_frame_id=CAMERA)
        ts.transform.translation.x = x_cam
        q = matrix_to_quat(R_WORLD_CAM)
        ts.transform.rotation.x, ts.transform.rotation.y = float(q[0]), float(q[1])
        ts.transform.rotation.z, ts.transform.rotation.w = float(q[2]), float(q[3])
        if tf:
            self.pub_tf.publish(TFMessage(transforms=[ts]))
        if camera_info:
            self.pub_info.publish(self.camera_info(stamp_ns))
        data = array.array('B')
        if jpeg:
            from sensor_msgs.msg import CompressedImage
            ok, buf = cv2.imencode('.jpg', render(x_cam)[:, :, ::-1],
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            data.frombytes(buf.tobytes())
            self.pub_compressed.publish(CompressedImage(header=self.header(stamp_ns),
                                                        format='rgb8; jpeg compressed bgr8',
                                                        data=data))
        else:
            data.frombytes(render(x_cam).tobytes())
            self.pub_image.publish(Image(header=self.header(stamp_ns), height=H, width=W,
                                         encoding=encoding, is_bigendian=0, step=W * 3,
                                         data=data))
        self.stamps.append(stamp_ns)
        return stamp_ns

    def feed(self, frames: Sequence[int], period_s: float = 0.1,
             stamps: Optional[Sequence[int]] = None, clock: bool = False) -> int:
        """Publish frames ``frames`` (indices) ``period_s`` apart; return the last stamp.

        :param stamps: the frames' stamps (default: wall-clock now)
        :param clock: publish /clock = each stamp just before its frame
        """
        last = 0
        for i, k in enumerate(frames):
            stamp = None if stamps is None else stamps[i]
            if clock:
                self.publish_clock(stamp)
            last = self.publish_frame(k, stamp)
            time.sleep(period_s)
        return last

    def wait_for(self, key: str, predicate: Callable[[Any], bool], timeout: float
                 ) -> Optional[Any]:
        """Return the first message on ``key`` satisfying ``predicate`` (None on timeout)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for msg in self.get(key):
                if predicate(msg):
                    return msg
            time.sleep(0.05)
        return None

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call a service of the node under test and return the response."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'{name} not available'
            future = client.call_async(request)
            end = time.monotonic() + timeout
            while not future.done() and time.monotonic() < end:
                time.sleep(0.02)
            assert future.done(), f'{name} did not answer'
            return future.result()
        finally:
            self.node.destroy_client(client)


class SpinThread(threading.Thread):
    """Spins an executor until :meth:`stop` (spin_once in a loop, so it ends cleanly)."""

    def __init__(self, executor: Any):
        """Prepare the thread (daemon, not started)."""
        super().__init__(daemon=True)
        self.executor = executor
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Spin until stopped."""
        while not self._stop_event.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        """End the loop and join the thread."""
        self._stop_event.set()
        self.join(timeout=5.0)


def spin_in_thread(executor: Any) -> SpinThread:
    """Start and return a :class:`SpinThread` for ``executor``."""
    thread = SpinThread(executor)
    thread.start()
    return thread


class Running:
    """A node under test and a :class:`Client`, spun by an executor thread.

    :param context: rclpy context
    :param overrides: node parameters (``OVERRIDES`` updated with these)
    :param node_name: name of the node under test
    :param inputs: namespace its image and camera_info are remapped into ('' = none)
    :param camera_qos: QoS of the client's camera publishers (default: sensor data)
    :param single_threaded: spin a SingleThreadedExecutor, as ``l3rocc_node`` does (False: a
        MultiThreadedExecutor with 4 threads)
    """

    def __init__(self, context: Any, overrides: Optional[Dict[str, Any]] = None,
                 node_name: str = 'l3rocc', inputs: str = '', camera_qos: Any = None,
                 single_threaded: bool = True):
        """Start both nodes and wait until their topics are matched."""
        from l3rocc_ros.node import L3roccNode
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
        from rclpy.parameter import Parameter
        params = dict(OVERRIDES, **(overrides or {}))
        cli_args = None
        if inputs:
            cli_args = ['--ros-args', '-r', f'image:={inputs}/image',
                        '-r', f'image/compressed:={inputs}/image/compressed',
                        '-r', f'camera_info:={inputs}/camera_info']
        self.node = L3roccNode(node_name, context=context, cli_args=cli_args,
                               parameter_overrides=[Parameter(k, value=v)
                                                    for k, v in params.items()])
        self.client = Client(context, inputs, node_name, camera_qos)
        self.executor = (SingleThreadedExecutor(context=context) if single_threaded
                         else MultiThreadedExecutor(num_threads=4, context=context))
        self.executor.add_node(self.node)
        self.executor.add_node(self.client.node)
        self.thread = spin_in_thread(self.executor)
        end = time.monotonic() + 10.0
        while time.monotonic() < end and not (
                self.node.sub_image.get_publisher_count()
                and self.client.pub_image.get_subscription_count()
                and self.node.pub_points.get_subscription_count()):
            time.sleep(0.05)

    def close(self) -> None:
        """Stop spinning and destroy both nodes."""
        self.node.stop()
        self.thread.stop()
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.client.node.destroy_node()


# --------------------------------------------------------------------- reliability test helpers
def image_msg(stamp_ns: int, k: int = 0, frame_id: str = CAMERA, **fields: Any) -> Any:
    """Return a sensor_msgs/Image of view ``k`` with any field overridden (bad inputs).

    :param fields: Image fields to set instead of the good ones (``encoding``, ``step``,
        ``data`` as bytes, ``width``, ``height``, ``is_bigendian``)
    """
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    data = fields.pop('data', None)
    if data is None:
        data = render(-0.1 + STEP_M * k).tobytes()
    msg = Image(header=h, height=H, width=W, encoding='rgb8', is_bigendian=0, step=W * 3)
    for key, value in fields.items():
        setattr(msg, key, value)
    buf = array.array('B')
    buf.frombytes(bytes(data))
    msg.data = buf
    return msg


def tf_msg(stamp_ns: int, k: int = 0, parent: str = WORLD, child: str = CAMERA,
           t: Optional[Sequence[float]] = None, q: Optional[Sequence[float]] = None) -> Any:
    """Return a tf2_msgs/TFMessage with the camera pose of view ``k`` (or ``t``/``q`` given)."""
    from geometry_msgs.msg import TransformStamped
    from l3rocc_core.transforms import matrix_to_quat
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage
    h = Header(frame_id=parent)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    ts = TransformStamped(header=h, child_frame_id=child)
    t = (-0.1 + STEP_M * k, 0.0, 0.0) if t is None else t
    q = matrix_to_quat(R_WORLD_CAM) if q is None else q
    ts.transform.translation.x, ts.transform.translation.y = float(t[0]), float(t[1])
    ts.transform.translation.z = float(t[2])
    ts.transform.rotation.x, ts.transform.rotation.y = float(q[0]), float(q[1])
    ts.transform.rotation.z, ts.transform.rotation.w = float(q[2]), float(q[3])
    return TFMessage(transforms=[ts])


class RosoutCollector:
    """Collects the /rosout lines of one logger (the node under test) through a real subscription.

    :param node: the node that subscribes (the test client)
    :param logger_name: ``Log.name`` to keep (the node's name)
    """

    def __init__(self, node: Any, logger_name: str):
        """Subscribe to /rosout (reliable, transient local: late joiners get recent lines)."""
        from rcl_interfaces.msg import Log
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        self.lock = threading.Lock()
        self.lines: List[Any] = []
        self.name = logger_name
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.sub = node.create_subscription(Log, '/rosout', self._on_log, qos)

    def _on_log(self, msg: Any) -> None:
        if msg.name == self.name:
            with self.lock:
                self.lines.append(msg)

    def mark(self) -> int:
        """Return the number of lines so far (pass it to :meth:`wait` as ``since``)."""
        with self.lock:
            return len(self.lines)

    def since(self, mark: int) -> List[Any]:
        """Return the lines after ``mark``."""
        with self.lock:
            return list(self.lines[mark:])

    def wait(self, since: int, *parts: str, timeout: float = 5.0) -> Optional[Any]:
        """Return the first line after ``since`` containing every one of ``parts``, or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.since(since):
                if all(p in line.msg for p in parts):
                    return line
            time.sleep(0.05)
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def errors_of(node: Any) -> Dict[str, int]:
    """Return a copy of the node's error counters by kind (to wait on them, not to assert)."""
    return dict(node.stats.snapshot()['errors'])


# The node's inputs as it holds them: what a test waits for before it sends the next message
# (the order of messages on different topics is not guaranteed). The only reads of the node's
# private input state in the tests.
def holds_camera_info(node: Any, stamp_ns: int) -> bool:
    """Tell whether the node's latest camera_info is the one stamped ``stamp_ns``."""
    info = node._camera_info
    return info is not None and stamp_of(info) == int(stamp_ns)


def holds_pose(node: Any, stamp_ns: int, child: str = CAMERA, parent: str = WORLD) -> bool:
    """Tell whether the node's pose buffer gives ``parent`` <- ``child`` at ``stamp_ns``."""
    from l3rocc_core.tf_tree import TransformUnavailable
    try:
        node._poses.lookup(parent, child, int(stamp_ns))
    except TransformUnavailable:
        return False
    return True


def knows_frame(node: Any, frame: str) -> bool:
    """Tell whether ``frame`` appeared in a transform the node's pose buffer received."""
    return node._poses.has_frame(frame)
