"""Where the package's data files are: the source tree, or an installed ``share/l3rocc``."""

import os
import sys
from typing import List, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))


def share_candidates() -> List[str]:
    """Folders that may hold config/, launch/, rviz/ and data/, most specific first."""
    out = [os.path.normpath(os.path.join(_HERE, '..'))]
    prefixes = [sys.prefix] + [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(
        os.pathsep) if p]
    out += [os.path.join(p, 'share', 'l3rocc') for p in prefixes]
    return out


def config_file(name: str) -> str:
    """Path of ``config/<name>`` (e.g. ``tum.yaml``).

    :raises FileNotFoundError: when no candidate folder has it
    """
    for root in share_candidates():
        path = os.path.join(root, 'config', name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f'config/{name} not found in {share_candidates()}')


def data_path(name: str) -> Optional[str]:
    """Path of ``data/<name>`` (a bundled recording), or None when no candidate folder has it."""
    for root in share_candidates():
        path = os.path.join(root, 'data', name)
        if os.path.exists(path):
            return path
    return None
