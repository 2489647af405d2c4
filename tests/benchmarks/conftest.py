"""Fixtures of the benchmark tests: a tiny synthetic sequence, made once per session."""

import pytest

from l3rocc_bench.suite import Case, prepare, Prepared


@pytest.fixture(scope='session')
def tiny_case(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Return a 6-frame 96x72 synthetic sequence made by ``l3rocc synth`` (a subprocess)."""
    case = Case('tiny', 'synth', 'industrial', 'handheld', 200_123, 6, 10.0, 96)
    return prepare(case, str(tmp_path_factory.mktemp('bench_cache')), progress=False)
