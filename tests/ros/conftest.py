"""Fixtures of the ROS tests: an rclpy context per module, RViz's marker rules, the scene."""

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, List

import pytest


@pytest.fixture(scope='module')
def ros_context() -> Iterator[object]:
    """Return an initialised rclpy context of its own, shut down after the module."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def rviz_marker_problems(marker_array) -> List[str]:
    """List what RViz 2 (rviz_default_plugins marker_utils) would warn or fail about.

    Checked per ADD marker: frame_id set, finite pose, normalised orientation, scale > 0 for
    CUBE_LIST, colour alpha > 0, non-empty finite points, as many colours as points (or none),
    colour channels in [0, 1]; and (ns, id) unique in the array.
    """
    from visualization_msgs.msg import Marker
    problems = []
    seen = set()
    for i, m in enumerate(marker_array.markers):
        where = f'marker {i} ({m.ns!r}, {m.id})'
        if m.action == Marker.DELETEALL:
            continue
        if (m.ns, m.id) in seen:
            problems.append(f'{where}: ns/id not unique')
        seen.add((m.ns, m.id))
        if not m.header.frame_id:
            problems.append(f'{where}: empty frame_id')
        p, q = m.pose.position, m.pose.orientation
        if not all(math.isfinite(v) for v in (p.x, p.y, p.z, q.x, q.y, q.z, q.w)):
            problems.append(f'{where}: pose not finite')
        if abs(math.sqrt(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2) - 1.0) > 1e-3:
            problems.append(f'{where}: orientation not normalised')
        if m.type == Marker.CUBE_LIST and not (m.scale.x > 0 and m.scale.y > 0
                                               and m.scale.z > 0):
            problems.append(f'{where}: scale {m.scale} not > 0')
        if not m.color.a > 0:
            problems.append(f'{where}: color.a is 0 (invisible)')
        if m.type in (Marker.CUBE_LIST, Marker.SPHERE_LIST, Marker.POINTS):
            if not m.points:
                problems.append(f'{where}: points empty')
            if m.colors and len(m.colors) != len(m.points):
                problems.append(f'{where}: {len(m.colors)} colours for {len(m.points)} points')
            if not all(math.isfinite(v) for pt in m.points for v in (pt.x, pt.y, pt.z)):
                problems.append(f'{where}: points not finite')
            for c in m.colors:
                if not all(0.0 <= v <= 1.0 for v in (c.r, c.g, c.b, c.a)) or c.a <= 0:
                    problems.append(f'{where}: colour {c} out of range or transparent')
                    break
    return problems


@pytest.fixture(scope='session')
def marker_problems() -> Callable:
    """Return :func:`rviz_marker_problems`."""
    return rviz_marker_problems


@pytest.fixture(scope='session')
def wall() -> ModuleType:
    """Return the ``wall_scene`` helper module (scene, client node, running node under test)."""
    pytest.importorskip('rclpy')
    pytest.importorskip('l3rocc.msg', reason='the l3rocc messages are not built (make setup)')
    pytest.importorskip('tf2_msgs.msg', reason='tf2_msgs is not built (make setup)')
    path = Path(__file__).with_name('wall_scene.py')
    spec = importlib.util.spec_from_file_location('l3rocc_tests_wall_scene', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
