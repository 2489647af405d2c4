"""Launch file (static checks; tests/test_package.py imports it where launch exists) and RViz."""

import ast
from pathlib import Path
from typing import Dict

import yaml

CONTRACT_ARGUMENTS = ('image_topic', 'camera_info_topic', 'params_file', 'use_sim_time', 'rviz')


def launch_arguments(path: Path) -> Dict[str, Dict[str, object]]:
    """Return {name: keyword arguments} of every DeclareLaunchArgument call in ``path``."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument'
                and node.args and isinstance(node.args[0], ast.Constant)):
            found[node.args[0].value] = {k.arg: k.value for k in node.keywords}
    return found


def test_launch_declares_contract_arguments_with_descriptions(repo_root: Path) -> None:
    path = repo_root / 'launch' / 'l3rocc.launch.py'
    args = launch_arguments(path)
    assert set(CONTRACT_ARGUMENTS) <= set(args)
    for name, kw in args.items():
        assert 'description' in kw and 'default_value' in kw, name
    for name in ('use_sim_time', 'rviz'):
        choices = ast.literal_eval(args[name]['choices'])
        assert choices == ['true', 'false']
    text = path.read_text()
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' in text and 'fastdds_shm.xml' in text
    assert "executable='l3rocc_node'" in text and "name='l3rocc'" in text
    assert (repo_root / 'config' / 'fastdds_shm.xml').is_file()


def test_rviz_config_shows_markers_cloud_and_image(repo_root: Path) -> None:
    cfg = yaml.safe_load((repo_root / 'rviz' / 'l3rocc.rviz').read_text())
    manager = cfg['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'odom'
    displays = {d['Class']: d for d in manager['Displays']}
    markers = displays['rviz_default_plugins/MarkerArray']
    assert markers['Topic']['Value'] == '/l3rocc/markers'
    cloud = displays['rviz_default_plugins/PointCloud2']
    assert cloud['Topic']['Value'] == '/l3rocc/points'
    assert cloud['Color Transformer'] == 'Intensity' and cloud['Channel Name'] == 'probability'
    image = displays['rviz_default_plugins/Image']
    assert image['Topic']['Value'] == launch_default(repo_root, 'image_topic')
    for d in manager['Displays']:
        assert d['Class'].startswith('rviz_default_plugins/') and 'Name' in d


def launch_default(repo_root: Path, name: str) -> str:
    """Return the literal default_value of launch argument ``name``."""
    args = launch_arguments(repo_root / 'launch' / 'l3rocc.launch.py')
    return ast.literal_eval(args[name]['default_value'])
