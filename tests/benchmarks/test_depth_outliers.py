"""The depth-outlier comparison (:mod:`l3rocc_bench.depth_outliers`): wiring and table."""

import pytest

from l3rocc_bench import depth_outliers as D
from l3rocc_core.config import PipelineConfig
from l3rocc_core.depth.consistency import FilteredDepthSource
from l3rocc_core.pipeline import OccupancyPipeline

pytestmark = pytest.mark.usefixtures('one_thread')


def test_pipeline_depth_stage_passes_one_active_consistency_filter() -> None:
    cfg = PipelineConfig().with_values({'refiner': 'none', 'device': 'cpu',
                                        'depth_source': 'plane_sweep',
                                        **D.SETTINGS['consistency']})
    pipe = OccupancyPipeline(cfg)
    stage, filters = pipe.depth_estimator, []
    while stage is not None:                              # the wrappers, outermost first
        if isinstance(stage, FilteredDepthSource):
            filters.append(stage)
        stage = getattr(stage, 'source', None)
    assert len(filters) == 1 and filters[0].consistency.active
    assert pipe.depth_estimator is pipe.depth_estimator   # built once
    assert filters[0].uses_sources and filters[0].requires_sources  # the plane sweep's flags


def test_table_lists_every_setting_per_sequence_source_and_refiner() -> None:
    rows = []
    for n, setting in enumerate(D.SETTINGS):
        rows.append({'sequence': 'tum', 'depth_source': 'plane_sweep', 'refiner': 'none',
                     'setting': setting, 'iou': 0.1 * n, 'precision': 0.5, 'recall': 0.25,
                     'dynamic_recall': None})
    rows.append({'sequence': 'syn', 'depth_source': 'gt_single_view', 'refiner': 'none',
                 'setting': 'off', 'iou': 0.2, 'precision': None, 'recall': 0.0,
                 'dynamic_recall': 0.5})
    lines = D.table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].count('|') == 4 + len(D.SETTINGS) + len(D.SINGLE_VIEW_SETTINGS)
    assert '0.300 / 0.500 / 0.250' in lines[2]
    assert '0.200 / 0.000 / 0.000 (0.50)' in lines[3]
