"""The depth-topic/oracle comparison on TUM fr1/xyz (:mod:`l3rocc_bench.tum_depth_model`)."""

import pytest

from l3rocc_bench import tum_depth_model as T

pytestmark = pytest.mark.usefixtures('one_thread')

TOPIC, ORACLE = 'topic', 'oracle tum (bench --depth gt)'


@pytest.fixture(scope='module')
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the topic source and the bench's oracle on the first 16 frames, against both GTs."""
    out = tmp_path_factory.mktemp('tum_depth_model')
    return {r['row']: r for r in T.run(str(out), [TOPIC, ORACLE], max_frames=16,
                                       progress=False)}


def test_topic_source_meets_the_oracle_when_the_ground_truth_reads_its_pixels(rows: dict):
    # IoU / precision measured on these 16 frames: topic 0.780 / 0.993 against the 'colour'
    # ground truth, 0.571 / 0.864 against 'tum'; the oracle 0.783 / 0.999 against 'tum' (all
    # 37 frames: docs/depth.md).
    topic, oracle = rows[TOPIC], rows[ORACLE]
    assert topic['frames'] == oracle['frames'] == 16
    assert topic['colour']['precision'] >= 0.98, topic
    assert topic['tum']['precision'] <= topic['colour']['precision'] - 0.05, topic
    assert oracle['tum']['precision'] >= 0.98, oracle
    assert topic['colour']['iou'] >= oracle['tum']['iou'] - 0.05, (topic, oracle)
    assert topic['tum']['iou'] <= oracle['tum']['iou'] - 0.1, (topic, oracle)


def test_table_has_one_line_per_row(rows: dict):
    lines = T.table(list(rows.values())).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith(f'| {TOPIC} | ') and lines[2].count(' / ') == 4
