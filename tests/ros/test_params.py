"""Parameters: declared once from the config dataclasses, validated as a whole, YAML in sync."""

from pathlib import Path

import pytest
import yaml

pytest.importorskip('rclpy')

from l3rocc_core.config import PipelineConfig  # noqa: E402
from l3rocc_ros.params import descriptor, NodeParameters, parameter_file  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
import rclpy  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

pytestmark = pytest.mark.ros


def test_yaml_file_equals_dataclass_defaults(repo_root: Path) -> None:
    path = repo_root / 'config' / 'l3rocc.yaml'
    values = yaml.safe_load(path.read_text())['/**']['ros__parameters']
    defaults = PipelineConfig().as_flat()
    hint = 'regenerate it: python -m l3rocc_ros.params > config/l3rocc.yaml'
    assert set(values) == set(defaults), f'{path} lists other parameters; {hint}'
    assert values == defaults, f'{path} differs from l3rocc_core/config.py; {hint}'
    assert PipelineConfig.from_yaml(str(path)) == PipelineConfig()


def test_parameter_file_round_trips_other_values(tmp_path: Path) -> None:
    cfg = PipelineConfig().with_values({'voxel_size': 0.1, 'grid_min': [-1.0, -1.0, 0.0],
                                        'refiner': 'none', 'publish_history': True})
    path = tmp_path / 'p.yaml'
    path.write_text(parameter_file(cfg))
    assert PipelineConfig.from_yaml(str(path)) == cfg


def test_descriptors_carry_ranges_choices_and_read_only() -> None:
    for spec in PipelineConfig.specs():
        d = descriptor(spec)
        assert d.description and spec.description in d.description
        assert d.read_only == spec.read_only
        if spec.type is float and spec.lo is not None:
            r = d.floating_point_range[0]
            assert (r.from_value, r.to_value) == (spec.lo, spec.hi)
        if spec.type is int and spec.lo is not None:
            r = d.integer_range[0]
            assert (r.from_value, r.to_value) == (spec.lo, spec.hi)
        if spec.choices:
            assert all(c in d.additional_constraints for c in spec.choices)
        if spec.type is list:
            assert d.type == ParameterType.PARAMETER_DOUBLE_ARRAY


@pytest.fixture(scope='module')
def param_node(ros_context):
    """Return a real rclpy node carrying only the pipeline parameters (with a change log)."""
    node = rclpy.create_node('l3rocc_param_test', context=ros_context,
                             parameter_overrides=[Parameter('refiner', value='none'),
                                                  Parameter('grid_max', value=[1.0, 1.0, 1.0])])
    changes = []
    node.l3rocc_params = NodeParameters(node, on_change=lambda old, new: changes.append(new))
    node.l3rocc_changes = changes
    yield node
    node.destroy_node()


def test_declared_with_overrides(param_node) -> None:
    cfg = param_node.l3rocc_params.config
    assert cfg.refiner.refiner == 'none' and cfg.grid.grid_max == [1.0, 1.0, 1.0]
    names = {s.name for s in PipelineConfig.specs()}
    assert all(param_node.has_parameter(n) for n in names)
    d = param_node.describe_parameter('voxel_size')
    assert d.read_only and d.floating_point_range[0].from_value > 0
    assert 'metres' in d.description


def test_valid_change_applied_as_a_whole(param_node) -> None:
    result = param_node.set_parameters_atomically([Parameter('min_depth', value=0.5),
                                                   Parameter('max_depth', value=6.0)])
    assert result.successful, result.reason
    cfg = param_node.l3rocc_params.config
    assert (cfg.depth.min_depth, cfg.depth.max_depth) == (0.5, 6.0)
    assert param_node.l3rocc_changes[-1] is cfg


@pytest.mark.parametrize('params, reason', [
    ([Parameter('min_depth', value=9.0)], 'must be < max_depth'),
    ([Parameter('logodds_min', value=-1.0), Parameter('logodds_max', value=-0.5)], None),
    ([Parameter('match_window_px', value=6)], 'must be odd'),
    ([Parameter('occupancy_threshold', value=1.5)], None),
    ([Parameter('refiner', value='magic')], 'must be one of'),
])
def test_bad_change_rejected_and_not_applied(param_node, params, reason) -> None:
    before = param_node.l3rocc_params.config
    values = {p.name: param_node.get_parameter(p.name).value for p in params}
    result = param_node.set_parameters_atomically(params)
    assert not result.successful
    assert result.reason
    if reason:
        assert reason in result.reason
    assert param_node.l3rocc_params.config is before
    assert {p.name: param_node.get_parameter(p.name).value for p in params} == values


def test_read_only_rejected_after_start(param_node) -> None:
    for p in (Parameter('voxel_size', value=0.1), Parameter('grid_min', value=[2.0, 2.0, 2.0]),
              Parameter('window_size', value=8)):
        result = param_node.set_parameters([p])[0]
        assert not result.successful and 'read-only' in result.reason
    assert param_node.l3rocc_params.config.grid.voxel_size == 0.05


@pytest.mark.parametrize('overrides, reason', [
    ([Parameter('grid_min', value=[0.0, 0.0, 0.0]), Parameter('grid_max', value=[1.0, 1.0, 0.0])],
     'must be < grid_max'),
    ([Parameter('voxel_size', value=0.0)], 'voxel_size'),
    ([Parameter('voxel_size', value=-0.05)], 'voxel_size'),
    ([Parameter('window_size', value=2)], 'window_size'),
    ([Parameter('voxel_size', value=0.005), Parameter('grid_max', value=[20.0, 20.0, 5.0])],
     'exceeds max_grid_voxels'),
    ([Parameter('voxel_size', value=1)], 'decimal point'),
])
def test_bad_start_values_refused_with_reason(ros_context, overrides, reason) -> None:
    node = rclpy.create_node('l3rocc_param_bad', context=ros_context,
                             parameter_overrides=overrides)
    try:
        with pytest.raises(ValueError, match=reason):
            NodeParameters(node)
    finally:
        node.destroy_node()


def test_tum_overlay_is_a_valid_partial_parameter_file(repo_root: Path) -> None:
    values = yaml.safe_load((repo_root / 'config' / 'tum.yaml').read_text())
    overlay = values['/**']['ros__parameters']
    assert set(overlay) <= set(PipelineConfig().as_flat())
    cfg = PipelineConfig.from_yaml(str(repo_root / 'config' / 'l3rocc.yaml')).with_values(overlay)
    assert cfg.grid.world_frame == 'world'
