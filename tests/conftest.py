"""Session-wide test set-up: the ROS 2 environment and the shared fixtures.

The ROS variables are set when pytest imports this file, before any test module can import or
initialise rclpy, so every node of the session sees them:

- ``ROS_LOG_DIR``: a temporary folder, removed at exit.
- ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: no discovery traffic leaves the machine.
- ``ROS_DOMAIN_ID``: 1..100, from the process id, so concurrent sessions do not see each other.
- ``FASTDDS_DEFAULT_PROFILES_FILE``: ``config/fastdds_shm.xml`` (8 MiB shared-memory segments, so
  full-size images reach best-effort subscribers).
- ``AMENT_PREFIX_PATH``: gains ``sys.prefix`` when ``make setup`` installed the package there, so
  ``ament_index_python`` finds ``share/l3rocc``.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = REPO_ROOT / 'config' / 'fastdds_shm.xml'


def _set_ros_environment() -> None:
    """Set the ROS 2 variables of the test session (see the module docstring)."""
    log_dir = tempfile.mkdtemp(prefix='l3rocc-test-ros-log-')
    atexit.register(shutil.rmtree, log_dir, ignore_errors=True)
    os.environ['ROS_LOG_DIR'] = log_dir
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(FASTDDS_PROFILE)
    index = Path(sys.prefix, 'share', 'ament_index', 'resource_index', 'packages', 'l3rocc')
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    if index.is_file() and sys.prefix not in prefixes:
        os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([sys.prefix] + prefixes)


_set_ros_environment()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Return the repository root (the folder of package.xml)."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def tum_dir(repo_root: Path) -> Path:
    """Return the bundled TUM RGB-D fr1/xyz recording, ``data/tum_fr1_xyz_37``.

    It ships with the repository, so a test that needs it fails (never skips) without it.
    """
    path = repo_root / 'data' / 'tum_fr1_xyz_37'
    assert (path / 'metadata.yaml').is_file(), f'the bundled recording {path} is missing'
    return path


@pytest.fixture(scope='session')
def tum_png_dir(tum_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the bundled recording written out as a TUM folder as published.

    ``rgb/`` and ``depth/`` PNGs named by stamp (depth in 1/5000 m), ``rgb.txt``, ``depth.txt``
    and ``groundtruth.txt``: the other layout :func:`load_tum` reads.
    """
    import cv2
    from l3rocc_core.datasets.tum import DEPTH_SCALE, GROUNDTRUTH, load_tum

    root = tmp_path_factory.mktemp('tum_png')

    def write_png(folder: str, stamp_ns: int, image: np.ndarray) -> str:
        name = f'{folder}/{stamp_ns // 10**9}.{stamp_ns % 10**9 // 1000:06d}.png'
        (root / folder).mkdir(exist_ok=True)
        assert cv2.imwrite(str(root / name), image)
        return name

    rgb_names, depth_names = [], {}
    for f in load_tum(str(tum_dir)).frames:
        rgb_names.append(write_png('rgb', f.stamp_ns, cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)))
        depth_names[f.depth_stamp_ns] = write_png(
            'depth', f.depth_stamp_ns, np.round(f.depth_m * DEPTH_SCALE).astype(np.uint16))
    for listing, names in (('rgb.txt', rgb_names), ('depth.txt', sorted(depth_names.values()))):
        (root / listing).write_text(''.join(f'{Path(n).stem} {n}\n' for n in names))
    shutil.copyfile(tum_dir / GROUNDTRUTH, root / GROUNDTRUTH)
    return root


@pytest.fixture
def one_thread():
    """Run torch single-threaded for the test (small tensors; the test machines are shared).

    Modules use it with ``pytestmark = pytest.mark.usefixtures('one_thread')``.
    """
    torch = pytest.importorskip('torch')
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=['cpu', 'cuda'])
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    """Return a torch device name, ``'cpu'`` and ``'cuda'`` in turn; CUDA skips without a GPU.

    On CUDA, TF32 is off for the test (PyTorch lets cuDNN convolutions use it by default, which
    alone moves results by ~1e-3: parity tests compare against the CPU's float32).
    """
    if request.param != 'cuda':
        yield request.param
        return
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('CUDA is not available')
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield request.param
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@pytest.fixture
def inductor_cache(tmp_path, monkeypatch):
    """Give the test a fresh, private inductor cache and no compiled graphs in this process.

    For tests that really compile (``torch.compile``): nothing an earlier run or test compiled
    is reused, and dynamo's recompile count starts from zero.
    """
    torch = pytest.importorskip('torch')
    import torch._dynamo

    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
