"""VO poses against TF poses for occupancy (:mod:`l3rocc_bench.vo_occupancy`), a short sequence."""

import json
import math
from pathlib import Path

import numpy as np
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


def test_a_camera_height_start_is_placed_at_the_true_first_place_and_heading() -> None:
    from l3rocc_bench.vo_occupancy import placed_at_start
    from l3rocc_core.stream import pose_from_xyz_rpy
    # The truth: a camera 1.2 m high at (3, -1), heading 120 degrees, pitched 30 down, walking.
    true = np.stack([pose_from_xyz_rpy([3.0 + 0.1 * k, -1.0, 1.2, 0.05, 0.52, 2.09])
                     for k in range(5)])
    # What a levelled camera_height_m start estimates: the same motion seen from a world whose
    # origin is below the first camera and whose +x is that camera's heading.
    c, s = np.cos(2.09), np.sin(2.09)
    world = np.array([[c, -s, 0.0, 3.0], [s, c, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])
    estimate = np.linalg.inv(world) @ true
    assert estimate[0][:3, 3] == pytest.approx([0.0, 0.0, 1.2])
    assert estimate[0][1, 2] == pytest.approx(0.0, abs=1e-12) and estimate[0][0, 2] > 0
    np.testing.assert_allclose(placed_at_start(estimate, true[0], 1.2), true, atol=1e-9)
