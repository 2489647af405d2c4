"""PipelineConfig: one table of parameters, validation, YAML round trip."""

import pytest

from l3rocc_core.config import parse_set_arguments, PipelineConfig

CONTRACT_PARAMS = (
    'window_size', 'voxel_size', 'grid_anchor', 'grid_min', 'grid_max', 'world_frame',
    'pose_source', 'device', 'refiner', 'checkpoint', 'occupancy_threshold', 'max_depth',
    'image_transport', 'input_qos', 'publish_markers', 'publish_history')


def test_contract_parameters_exist_with_descriptions():
    specs = {s.name: s for s in PipelineConfig.specs()}
    for name in CONTRACT_PARAMS:
        assert name in specs, name
    for s in specs.values():
        assert s.description, s.name
    assert len(specs) == len(list(PipelineConfig.specs())), 'names must be unique'
    assert PipelineConfig().window.window_size == 16
    assert PipelineConfig().grid.voxel_size == 0.05
    assert PipelineConfig().output.occupancy_threshold == 0.5


def test_with_values_is_a_validated_copy():
    base = PipelineConfig()
    new = base.with_values({'grid_min': [-1, -1, 0], 'refiner': 'none', 'window_size': 8})
    assert new.grid.grid_min == [-1.0, -1.0, 0.0]
    assert new.window.window_size == 8
    assert base.grid.grid_min == [-2.0, -2.0, -0.5]
    assert base.window.window_size == 16


@pytest.mark.parametrize('values, reason', [
    ({'voxel_size': 0.0}, 'below its minimum'),
    ({'window_size': 2}, 'below its minimum'),
    ({'grid_min': [3.0, 3.0, 3.0]}, 'must be < grid_max'),
    ({'refiner': 'magic'}, 'must be one of'),
    ({'voxel_size': 'big'}, 'must be a number'),
    ({'window_size': 3.5}, 'must be an integer'),
    ({'publish_markers': 1}, 'true or false'),
    ({'grid_min': [-1000, -1000, -1000], 'grid_max': [1000, 1000, 1000]}, 'max_grid_voxels'),
    ({'no_such_param': 1}, 'unknown parameter'),
    ({'max_depth': float('nan')}, 'finite'),
])
def test_bad_values_are_rejected_with_reason(values, reason):
    base = PipelineConfig()
    with pytest.raises(ValueError, match=reason):
        base.with_values(values)
    assert base == PipelineConfig()


def test_yaml_round_trip(tmp_path):
    cfg = PipelineConfig().with_values({'voxel_size': 0.1, 'world_frame': 'map'})
    path = tmp_path / 'p.yaml'
    path.write_text(cfg.to_yaml())
    assert PipelineConfig.from_yaml(str(path)) == cfg


def test_yaml_node_section_and_unknown_ros_keys(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('l3rocc:\n  ros__parameters:\n    use_sim_time: true\n    window_size: 8\n')
    assert PipelineConfig.from_yaml(str(path)).window.window_size == 8


def test_parse_set_arguments():
    out = parse_set_arguments(['grid_min=[-2.0,-2.0,-0.05]', 'refiner=none', 'voxel_size=0.1'])
    assert out == {'grid_min': [-2.0, -2.0, -0.05], 'refiner': 'none', 'voxel_size': 0.1}
    with pytest.raises(ValueError):
        parse_set_arguments(['novalue'])
