"""pip installation of l3rocc's Python packages, for users without colcon.

Install the requirements first, torch alone and pinned before the rest, as ``make setup`` does
and the top of requirements.txt shows (an unpinned ``pip install torch`` on Linux may resolve
the multi-GB CUDA build); then ``pip install .``. The messages (``l3rocc.msg``) come
from the ament_cmake build only (``make setup`` or colcon).
"""

import os
import xml.etree.ElementTree as ElementTree

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def package_xml_version() -> str:
    """Return the version in package.xml, the one place it is written.

    :return: The ``<version>`` text, e.g. ``'0.1.0'``.
    """
    return ElementTree.parse(os.path.join(HERE, 'package.xml')).getroot().findtext('version')


setup(
    # Not `l3rocc`: that name belongs to the message package that rosidl installs.
    name='l3rocc-tools',
    version=package_xml_version(),
    description='Monocular camera stream to 4D voxel occupancy (core and ROS 2 node)',
    license='Apache-2.0',
    python_requires='>=3.10',
    # l3rocc_bench: `l3rocc bench`, imported by the l3rocc_core.tools.bench subcommand only.
    packages=find_packages(
        include=['l3rocc_core', 'l3rocc_core.*', 'l3rocc_ros', 'l3rocc_ros.*', 'l3rocc_bench',
                 'l3rocc_bench.*']),
    package_data={'l3rocc_core.refiner': ['checkpoints/*.pt'],
                  'l3rocc_core.depth': ['checkpoints/*.pt', 'checkpoints/*.json'],
                  'l3rocc_core.synth': ['textures/*.jpg', 'textures/README.md']},
    install_requires=[
        'numpy', 'scipy', 'opencv-python-headless', 'torch', 'PyYAML', 'rosbags', 'tqdm',
        'matplotlib',
    ],
    extras_require={
        'viz': ['open3d'],
        # `l3rocc batch --ray` and `l3rocc export --format lerobot`
        'fleet': ['ray', 'pyarrow'],
        'test': ['pytest', 'pytest-timeout', 'hypothesis', 'flake8', 'flake8-quotes',
                 'pydocstyle'],
    },
    entry_points={
        'console_scripts': [
            'l3rocc = l3rocc_core.cli:main',
            'l3rocc_node = l3rocc_ros.lifecycle:main',
        ],
    },
)
