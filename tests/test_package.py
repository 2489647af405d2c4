"""The ROS package as built by ``make setup`` (or colcon): messages, share folder, package.xml."""

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Set

import pytest

# The contract's launch arguments (../shared/CONTRACT.md).
LAUNCH_ARGUMENTS = {'image_topic', 'camera_info_topic', 'params_file', 'use_sim_time', 'rviz'}

# What runs on a robot (every import there needs an exec or build dependency) and the tests (a
# test dependency is enough).
RUNTIME_SOURCES = ('l3rocc_core', 'l3rocc_ros', 'l3rocc_bench', 'launch', 'scripts')
TEST_SOURCES = ('tests',)
# Our own Python packages (l3rocc = the generated messages).
OWN_MODULES = {'l3rocc', 'l3rocc_core', 'l3rocc_ros', 'l3rocc_bench'}
# The rosdep key of each imported module whose key is not the module's own name (ROS packages,
# rclpy, sensor_msgs, launch_ros, ..., are named like their module); None: no rosdep key, then
# requirements/dev-ros.txt installs it with pip on a ROS install.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'scipy': 'python3-scipy', 'cv2': 'python3-opencv',
    'torch': 'python3-torch', 'yaml': 'python3-yaml', 'tqdm': 'python3-tqdm',
    'matplotlib': 'python3-matplotlib', 'rosbags': 'python3-rosbags-pip',
    'open3d': 'python3-open3d-pip', 'pyoctomap': None, 'onnxruntime': None, 'onnx': None,
    'ray': None, 'pyarrow': None, 'rerun': None,
    'pytest': 'python3-pytest', 'hypothesis': 'python3-hypothesis',
    'catkin_pkg': 'python3-catkin-pkg', 'flake8': 'python3-flake8',
    'flake8_quotes': 'python3-flake8-quotes', 'pydocstyle': 'pydocstyle',
}
# The pip name of a module without rosdep key where it differs from the module's name.
PIP_NAMES = {'rerun': 'rerun-sdk'}
# Modules the tests run as programs (``python -m``), which an import scan cannot see.
TEST_PROGRAMS = {'flake8', 'pydocstyle'}
# pytest plugins the suite uses: (text in pytest.ini or the tests, rosdep key or None, pip name).
PYTEST_PLUGINS = [('timeout = ', 'python3-pytest-timeout', 'pytest-timeout'),
                  ('mark.flaky(', None, 'pytest-rerunfailures')]

# A second process that sends IMAGE_COUNT 640x480 rgb8 images at 30 Hz, best effort.
IMAGE_COUNT = 60
IMAGE_PUBLISHER = """
import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node('l3rocc_test_image_publisher')
publisher = node.create_publisher(Image, 'l3rocc_test_image', qos_profile_sensor_data)
deadline = time.monotonic() + 30.0
while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
msg = Image(height=480, width=640, encoding='rgb8', step=640 * 3, data=bytes(640 * 480 * 3))
for i in range(int(sys.argv[1])):
    msg.header.frame_id = str(i)
    publisher.publish(msg)
    time.sleep(1.0 / 30.0)
node.destroy_node()
rclpy.shutdown()
"""


def test_occupancy4d_fields() -> None:
    from l3rocc.msg import Occupancy4D

    assert Occupancy4D.get_fields_and_field_types() == {
        'header': 'std_msgs/Header',
        'slice_stamps': 'sequence<builtin_interfaces/Time>',
        'origin': 'geometry_msgs/Point',
        'voxel_size': 'double',
        'dims': 'uint32[3]',
        'occupancy_threshold': 'float',
        'slice_indptr': 'sequence<uint32>',
        'voxel_indices': 'sequence<uint32>',
        'probabilities': 'sequence<float>',
    }


def test_occupancy4d_serialization_round_trip() -> None:
    from builtin_interfaces.msg import Time
    from l3rocc.msg import Occupancy4D
    from rclpy.serialization import deserialize_message, serialize_message

    msg = Occupancy4D()
    msg.header.frame_id = 'odom'
    msg.header.stamp = Time(sec=12, nanosec=500)
    msg.slice_stamps = [Time(sec=11, nanosec=900), Time(sec=12, nanosec=500)]
    msg.origin.x, msg.origin.y, msg.origin.z = -2.0, -2.0, -0.05
    msg.voxel_size = 0.05
    msg.dims = [80, 80, 40]
    msg.occupancy_threshold = 0.5
    msg.slice_indptr = [0, 1, 3]
    msg.voxel_indices = [7, 7, 255999]
    msg.probabilities = [0.5, 0.75, 1.0]

    back = deserialize_message(serialize_message(msg), Occupancy4D)
    assert back == msg
    assert list(back.dims) == [80, 80, 40]
    assert back.slice_stamps[0].nanosec == 900


def test_tf2_msgs_tfmessage() -> None:
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from tf2_msgs.msg import TFMessage

    assert TFMessage.get_fields_and_field_types() == {
        'transforms': 'sequence<geometry_msgs/TransformStamped>'}
    transform = TransformStamped()
    transform.header.frame_id = 'odom'
    transform.child_frame_id = 'camera'
    transform.transform.translation.x = 1.5
    transform.transform.rotation.w = 1.0
    msg = TFMessage(transforms=[transform])
    assert deserialize_message(serialize_message(msg), TFMessage) == msg


def test_share_folder_and_executables(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    if not os.environ.get('AMENT_PREFIX_PATH'):
        monkeypatch.setenv('AMENT_PREFIX_PATH', sys.prefix)
    share = Path(get_package_share_directory('l3rocc'))
    for folder in ('launch', 'config', 'rviz'):
        assert (share / folder).is_dir(), f'{share / folder} is missing'
    assert (share / 'config' / 'fastdds_shm.xml').is_file()
    assert (share / 'package.xml').is_file()
    lib = Path(get_package_prefix('l3rocc'), 'lib', 'l3rocc')
    for name in ('l3rocc_node', 'l3rocc'):
        assert os.access(lib / name, os.X_OK), f'{lib / name} is not an executable'


def test_console_scripts() -> None:
    try:
        distribution = importlib.metadata.distribution('l3rocc-tools')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('not installed with pip (a colcon build has no console scripts)')
    scripts = {ep.name: ep.value for ep in distribution.entry_points
               if ep.group == 'console_scripts'}
    assert scripts == {'l3rocc': 'l3rocc_core.cli:main',
                       'l3rocc_node': 'l3rocc_ros.lifecycle:main'}


def test_fastdds_profile_parses(repo_root: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    ns = {'dds': 'http://www.eprosima.com'}
    root = ElementTree.parse(repo_root / 'config' / 'fastdds_shm.xml').getroot()
    shm = [d for d in root.iterfind('.//dds:transport_descriptor', ns)
           if d.findtext('dds:type', namespaces=ns) == 'SHM']
    assert len(shm) == 1
    assert int(shm[0].findtext('dds:segment_size', namespaces=ns)) >= 1 << 20
    participant = root.find('.//dds:participant', ns)
    assert participant.get('is_default_profile') == 'true'


@pytest.mark.ros
def test_fastdds_profile_delivers_full_size_images(repo_root: Path) -> None:
    """Full-size images reach a best-effort subscriber in another process (see the profile)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    profile = repo_root / 'config' / 'fastdds_shm.xml'
    assert os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] == str(profile)
    received = []
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('l3rocc_test_image_subscriber', context=context)
    publisher = None
    try:
        node.create_subscription(Image, 'l3rocc_test_image',
                                 lambda msg: received.append(msg.header.frame_id),
                                 qos_profile_sensor_data)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        publisher = subprocess.Popen([sys.executable, '-c', IMAGE_PUBLISHER, str(IMAGE_COUNT)])
        deadline = time.monotonic() + 60.0
        while publisher.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        drain_until = time.monotonic() + 1.0
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
            publisher.wait()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert publisher.returncode == 0
    # Fast DDS defaults deliver almost none of these (1 to 3 of 100 measured); the profile all.
    assert len(received) >= 0.9 * IMAGE_COUNT, f'received {len(received)} of {IMAGE_COUNT}'


def test_package_xml(repo_root: Path) -> None:
    from catkin_pkg.package import parse_package

    package = parse_package(str(repo_root / 'package.xml'))
    package.validate()
    assert package.name == 'l3rocc'
    assert package.package_format == 3
    assert package.get_build_type() == 'ament_cmake'
    assert [str(lic) for lic in package.licenses] == ['Apache-2.0']
    assert 'rosidl_interface_packages' in [g.name for g in package.member_of_groups]
    buildtool = {d.name for d in package.buildtool_depends}
    assert {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators'} <= buildtool
    exec_depends = {d.name for d in package.exec_depends}
    assert {'rclpy', 'std_msgs', 'geometry_msgs', 'sensor_msgs', 'visualization_msgs',
            'nav_msgs', 'diagnostic_msgs', 'tf2_msgs', 'builtin_interfaces',
            'rosidl_default_runtime', 'python3-numpy', 'python3-torch'} <= exec_depends
    assert {'ament_flake8', 'ament_pep257'} <= {d.name for d in package.test_depends}

    tf2_msgs = parse_package(str(repo_root / 'third_party' / 'tf2_msgs' / 'package.xml'))
    tf2_msgs.validate()
    assert tf2_msgs.name == 'tf2_msgs'


def _python_files(repo_root: Path, folders) -> Iterator[Path]:
    for name in folders:
        for path in sorted((repo_root / name).rglob('*')):
            if path.is_file() and (path.suffix == '.py' or (
                    path.parent.name == 'scripts' and not path.suffix)):
                yield path


def imported_modules(paths) -> Dict[str, Set[str]]:
    """Return {top-level module: files} of every import, ``pytest.importorskip`` included.

    Imports inside functions and ``try`` blocks count: an optional import is still used.
    Standard library, relative imports, our own packages and modules that sit next to the file
    importing them (test helpers such as ``vo_scene``) are left out.
    """
    found: Dict[str, Set[str]] = {}
    for path in paths:
        beside = {p.stem for p in path.parent.glob('*.py')}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'importorskip'
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                top = name.split('.')[0]
                if (top not in sys.stdlib_module_names and top not in OWN_MODULES
                        and top not in beside):
                    found.setdefault(top, set()).add(path.name)
    return found


def test_package_xml_declares_every_imported_module(repo_root: Path) -> None:
    """A third-party import without its rosdep key in package.xml fails here.

    Runtime code (the packages, launch file, executables) needs an exec or build dependency;
    tests, a test dependency. A module without a rosdep key must be in
    requirements/dev-ros.txt, which a ROS install pip-installs.
    """
    from catkin_pkg.package import parse_package

    package = parse_package(str(repo_root / 'package.xml'))
    runtime_keys = {d.name for d in package.exec_depends + package.build_depends
                    + package.buildtool_depends}
    test_keys = runtime_keys | {d.name for d in package.test_depends}
    pip_only = {re.split(r'[<>=!~;\s]', line)[0].lower()
                for line in (repo_root / 'requirements' / 'dev-ros.txt').read_text().splitlines()
                if line.strip() and not line.startswith('#')}
    runtime = imported_modules(_python_files(repo_root, RUNTIME_SOURCES))
    tests = imported_modules(_python_files(repo_root, TEST_SOURCES))
    for module in TEST_PROGRAMS:
        tests.setdefault(module, set()).add('tests/test_lint.py (python -m)')
    assert {'rclpy', 'numpy', 'torch', 'launch_ros'} <= set(runtime)  # the scan sees imports
    problems = []
    for modules, keys, kind in ((runtime, runtime_keys, 'exec_depend'),
                                (tests, test_keys, 'test_depend')):
        for module, files in sorted(modules.items()):
            key = ROSDEP_KEYS.get(module, module)
            if key is None:
                if PIP_NAMES.get(module, module).lower() not in pip_only:
                    problems.append(f'{module} (no rosdep key) is missing from '
                                    'requirements/dev-ros.txt')
            elif key not in keys:
                problems.append(f'<{kind}>{key}</{kind}> is missing for `import {module}` in '
                                f'{", ".join(sorted(files))} (a Python module that is no ROS '
                                'package also needs its key in ROSDEP_KEYS here)')
    suite = (repo_root / 'pytest.ini').read_text() + ''.join(
        p.read_text() for p in _python_files(repo_root, TEST_SOURCES))
    for needle, key, pip_name in PYTEST_PLUGINS:
        if needle not in suite:
            continue
        if key is not None and key not in test_keys:
            problems.append(f'<test_depend>{key}</test_depend> is missing ({pip_name})')
        if key is None and pip_name not in pip_only:
            problems.append(f'{pip_name} (no rosdep key) is missing from '
                            'requirements/dev-ros.txt')
    assert not problems, '\n'.join(problems)


def test_launch_file_imports(repo_root: Path) -> None:
    # Runs wherever launch_ros is installed; an install that does not import fails here.
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch_ros is not installed (no ROS 2 install)')
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    path = repo_root / 'launch' / 'l3rocc.launch.py'
    spec = importlib.util.spec_from_file_location('l3rocc_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    declared = {action.name for action in description.entities
                if isinstance(action, DeclareLaunchArgument)}
    assert LAUNCH_ARGUMENTS <= declared
