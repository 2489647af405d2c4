"""Lint as ament_flake8 and ament_pep257 would (settings in setup.cfg)."""

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

# Python sources of the repository (folders are walked for *.py files) ...
LINTED = ['l3rocc_core', 'l3rocc_ros', 'l3rocc_bench', 'tests', 'launch', 'setup.py']
# ... and the folder of extension-less Python executables, whose files are named one by one.
SCRIPTS = 'scripts'


def _sources(repo_root: Path) -> List[str]:
    """Return the existing Python sources to lint, relative to the repository root."""
    return [name for name in LINTED if (repo_root / name).exists()]


def _scripts(repo_root: Path) -> List[str]:
    """Return the executables in ``scripts/``, relative to the repository root."""
    folder = repo_root / SCRIPTS
    return sorted(f'{SCRIPTS}/{p.name}' for p in folder.glob('*') if p.is_file())


def _run(args: List[str], repo_root: Path) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` in the repository root and capture its output."""
    return subprocess.run([sys.executable, '-m', *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=240)


def test_flake8(repo_root: Path) -> None:
    pytest.importorskip('flake8_quotes')
    targets = _sources(repo_root) + _scripts(repo_root)
    result = _run(['flake8', '--config=setup.cfg', *targets], repo_root)
    if result.returncode:
        pytest.fail(f'flake8 found problems:\n{result.stdout}{result.stderr}', pytrace=False)


def test_pep257(repo_root: Path) -> None:
    pytest.importorskip('pydocstyle')
    # As ament_pep257: *.py files, test files included (pydocstyle skips them by default), in
    # folders not starting with '.' or '_'. pydocstyle filters even the files it is given by
    # --match, hence a second run with '.*' for the extension-less scripts.
    output = ''
    for match, targets in ((r'.*\.py', _sources(repo_root)), ('.*', _scripts(repo_root))):
        if targets:
            args = ['pydocstyle', '--config=setup.cfg', f'--match={match}',
                    r'--match-dir=[^\._].*', *targets]
            result = _run(args, repo_root)
            if result.returncode:
                output += f'(exit code {result.returncode})\n{result.stdout}{result.stderr}'
    if output:
        pytest.fail(f'pydocstyle found problems:\n{output}', pytrace=False)
