"""VO poses against TF poses for occupancy (:mod:`l3rocc_bench.vo_occupancy`), a short sequence."""

import json
import math
from pathlib import Path

import pytest

from l3rocc_bench.suite import Case, prepare, Prepared
from l3rocc_bench.vo_occupancy import _mean_iou, compare, table


@pytest.fixture(scope='module')
def short_case(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Return a 20-frame 160x120 handheld synthetic sequence (VO starts after about 12)."""
    case = Case('vo_short', 'synth', 'industrial', 'handheld', 200_123, 20, 10.0, 160)
    return prepare(case, str(tmp_path_factory.mktemp('vo_cache')), progress=False)


def test_mean_iou_is_taken_over_the_given_stamps_only() -> None:
    rows = [{'stamp': 1, 'iou': 0.2}, {'stamp': 2, 'iou': 0.6}, {'stamp': 3, 'iou': None}]
    assert _mean_iou(rows) == pytest.approx(0.4)
    assert _mean_iou(rows, {2, 3}) == pytest.approx(0.6)
    assert math.isnan(_mean_iou(rows, {3}))


def test_compare_replays_with_both_pose_sources_and_gives_the_ratio(
        short_case: Prepared, tmp_path: Path) -> None:
    extra = {'working_width': 160, 'num_depth_planes': 24}
    row = compare(short_case, 'none', str(tmp_path), extra=extra)
    json.dumps(row, allow_nan=False)
    # TF poses every frame; VO waits for parallax, then poses every frame it tracks and writes
    # its trajectory (one line per posed frame).
    assert row['frames_tf'] == 20 and 0 < row['frames_vo'] < 20
    assert row['posed'] == row['frames_vo']
    lines = (tmp_path / 'visual_odometry' / 'trajectory.tum').read_text().splitlines()
    assert len(lines) == 1 + row['frames_vo']
    assert not (tmp_path / 'tf' / 'trajectory.tum').exists()
    for key in ('iou_tf_all', 'iou_tf', 'iou_vo'):
        assert 0.0 < row[key] <= 1.0, key
    assert row['ratio'] == pytest.approx(row['iou_vo'] / row['iou_tf'])
    # The VO poses are estimates: not the TF poses, but close to them.
    assert 0.0 < row['ate_none_m'] < 0.3 and 0.0 < row['ate_sim3_m'] <= row['ate_none_m']
    assert 0.3 < row['size'] < 3.0
    text = table([row])
    assert f"| vo_short | none | default | {row['frames_vo']} / 20 |" in text
    assert f"| {row['ratio']:.2f} |" in text
