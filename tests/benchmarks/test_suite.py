"""The benchmark's sequence sets (:mod:`l3rocc_bench.suite`)."""

import pytest

from l3rocc_bench.suite import DEFAULT_SET, QUICK_SET, select


def test_sets_are_seeded_held_out_and_cover_families_and_cameras() -> None:
    for cases in (QUICK_SET, DEFAULT_SET):
        synth = [c for c in cases if c.kind == 'synth']
        assert {c.family for c in synth} == {'industrial', 'driving'}
        assert any(c.moving_camera for c in synth) and any(not c.moving_camera for c in synth)
        assert all(c.seed >= 200_000 for c in synth)       # the synth test split
        assert any(c.kind == 'tum' for c in cases)
        assert len({c.name for c in cases}) == len(cases)
    assert [c.name for c in select(QUICK_SET, ['tum_fr1_xyz'])] == ['tum_fr1_xyz']
    with pytest.raises(ValueError, match='unknown sequence'):
        select(QUICK_SET, ['nope'])
