"""``tools/gpu_check.sh`` and :mod:`l3rocc_bench.gpu_check`, on the CPU."""

import json
import os
from pathlib import Path
import sys

import pytest


@pytest.mark.slow
@pytest.mark.usefixtures('inductor_cache', 'one_thread')
def test_gpu_check_runs_its_three_checks(tmp_path: Path) -> None:
    """``tools/gpu_check.sh cpu`` (the GPU check on the CPU, on a tiny grid)."""
    import subprocess
    from l3rocc_bench import gpu_check
    assert [n for n, _ in gpu_check.default_grids()] == ['tum', 'default']
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    run = subprocess.run(['bash', str(root / 'tools' / 'gpu_check.sh'), 'cpu', '--grid',
                          't=9x10x6', '--window-size', '6', '--repeats', '1', '--frames', '3'],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert 'tests exit skipped, checks exit 0' in run.stdout
    written = {p.name for p in out.iterdir()}
    assert written == {'device.txt', 'gpu_check.json', 'gpu_check.md', 'gpu_check.log'}
    res = json.loads((out / 'gpu_check.json').read_text())
    par, wp, new = res['parity'][0], res['window_pass'][0], res['newest'][0]
    assert 'error' not in par and 'error' not in wp and 'error' not in new, res
    assert par['name'] == 't' and par['grid'] == [9, 10, 6]
    assert par['window_max_abs_diff_1e6'] < 10 and par['newest_max_abs_diff_1e6'] < 10
    assert par['window_state_mismatch'] == 0 and par['newest_state_mismatch'] == 0
    assert wp['compile_status'] == 'compiled' and wp['eager_ms'] > 0
    assert new['frames'] == 3 and new['ms_per_frame'] > 0 and 0 < new['support_share'] < 1
    md = (out / 'gpu_check.md').read_text()
    assert '## Parity with the CPU window pass' in md and '| t 9x10x6 | cpu |' in md
    # a parity limit that nothing can meet fails the check (exit status 1, says why)
    bad = gpu_check.failures(res, -1.0)
    assert any(line.startswith('parity t: window_max_abs_diff_1e6') for line in bad)
