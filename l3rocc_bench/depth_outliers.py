"""Depth outlier control measured: occupancy precision, recall and IoU with and without it.

``python -m l3rocc_bench.depth_outliers --out DIR`` replays, for every setting of
:data:`SETTINGS`:

- the bundled TUM fr1/xyz clip (``data/tum_fr1_xyz_37`` with ``config/tum.yaml``, as
  ``l3rocc demo`` does) with ``depth_source: plane_sweep`` and with ``topic`` (the Kinect depth,
  a single-view source);
- three synthetic hand-held industrial sequences (``l3rocc synth``, 32 frames, seeds
  :data:`SYNTH_SEEDS`, made once into ``--cache`` by :func:`l3rocc_bench.suite.prepare`) with
  ``plane_sweep``, and with their ground-truth depth fed as a single-view source (what a depth
  network or an RGB-D camera would give: moving objects measured in every frame);

with ``refiner: none`` (the evidence itself), and with ``--network`` also TUM and the first
synthetic sequence with ``refiner: network``. Each run is scored as ``l3rocc eval`` scores it
(newest slice, observed voxels; TUM ground truth from its depth and poses). Writes
``DIR/results.json`` and prints the markdown table of ``docs/depth_outliers.md``.

The consistency filter runs between the depth stage and fusion through
:class:`~l3rocc_core.depth.consistency.FilteredDepthSource`, as the pipeline wires it in; the
ground-truth runs pass their depth through a filter of their own.
"""

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from l3rocc_core.depth.truth import DepthTruth
from l3rocc_bench.suite import Case, prepare, TEST_SEED_BASE
from l3rocc_core import metrics as M
from l3rocc_core.config import PipelineConfig
from l3rocc_core.depth.consistency import ConsistencyFilter
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame
from l3rocc_core.occupancy import Occupancy4D, load_sequence
from l3rocc_core.paths import config_file, data_path
from l3rocc_core.pipeline import OccupancyPipeline

#: Settings compared, by name: parameter values over the defaults.
SETTINGS: Dict[str, Dict[str, Any]] = {
    'off': {},
    'consistency': {'depth_consistency_views': 1, 'depth_consistency_rel_error': 0.2,
                    'depth_consistency_penalty': 0.1},
    'confidence': {'hit_confidence_floor': 0.0, 'hit_confidence_full': 0.3},
    'both, strong': {'depth_consistency_views': 2, 'depth_consistency_rel_error': 0.1,
                     'depth_consistency_penalty': 0.25, 'hit_confidence_floor': 0.0,
                     'hit_confidence_full': 0.5},
}
#: Settings compared on single-view sources only: the filter applied to them as well, which
#: erases what moves (``depth_consistency_scope: all``).
SINGLE_VIEW_SETTINGS: Dict[str, Dict[str, Any]] = {
    'consistency, penalty 0, scope all': {**SETTINGS['consistency'],
                                          'depth_consistency_penalty': 0.0,
                                          'depth_consistency_scope': 'all'},
}
#: ``--sources`` values: the depth sources of the runs.
SOURCES = ('plane_sweep', 'topic', 'gt_single_view')
#: Seeds of the synthetic sequences (the synth test split).
SYNTH_SEEDS = (TEST_SEED_BASE, TEST_SEED_BASE + 10, TEST_SEED_BASE + 20)
TOLERANCE_NS = 20_000_000
SCORES = ('iou', 'precision', 'recall', 'dynamic_recall')


class GivenDepthPipeline(OccupancyPipeline):
    """Ground-truth depth as a single-view source: rendered per frame, filtered, fused.

    :param config: the configuration (``depth_source`` names the kind of source it stands for)
    :param truth: the sequence's GT depth
    """

    def __init__(self, config: PipelineConfig, truth: DepthTruth):
        """Build the pipeline and its filter."""
        super().__init__(config)
        self.truth = truth
        self.consistency = ConsistencyFilter(config.depth, self.device)

    def push(self, frame: Frame) -> Optional[Occupancy4D]:
        """Fuse the frame with its GT depth (confidence 1), through the filter."""
        depth = None
        if frame.T_world_cam is not None:
            d = self.truth.render(frame.stamp_ns, frame.camera, frame.T_world_cam)
            if d is not None:
                d = torch.from_numpy(np.where(d <= self.config.depth.max_depth, d, 0.0)
                                     .astype(np.float32))
                valid = d > 0
                depth = self.consistency.filter(
                    DepthResult(d, valid.float(), valid, frame.camera), frame)
        return self.push_depth(frame, depth, measured=True)


def _score(occupancy: str, truths: Dict[str, M.OccupancyTruth], name: str,
           prep: Any) -> Dict[str, Optional[float]]:
    """Score as ``l3rocc eval`` does; the ground truth is built once per sequence."""
    pred = load_sequence(occupancy)
    if name not in truths:
        truths[name] = (M.ground_truth_from_file(prep.gt) if prep is not None else
                        M.ground_truth_from_tum(None, pred.grid, pred.stamps_ns, max_depth=4.0,
                                                stride=2, tolerance_ns=TOLERANCE_NS))
    summary = M.score_sequence(pred, truths[name], tolerance_ns=TOLERANCE_NS).summary()
    return {k: summary.get(k) for k in SCORES}


def run(out: str, cache: str, network: bool, sources: Sequence[str] = SOURCES,
        progress: bool = True) -> List[Dict[str, Any]]:
    """Replay and score every sequence, source (of ``sources``), refiner and setting.

    :return: the rows, also written to ``out/results.json``
    """
    from l3rocc_core.tools.replay import replay
    torch.set_num_threads(1)
    tum_bag = os.path.join(data_path('tum_fr1_xyz_37') or 'data/tum_fr1_xyz_37',
                           'tum_fr1_xyz_37.mcap')
    tum_cfg = PipelineConfig.from_yaml(config_file('tum.yaml'))
    jobs = []
    for source in ('plane_sweep', 'topic'):
        for refiner in ('none', 'network') if source == 'plane_sweep' and network else ('none',):
            jobs.append(('tum_fr1_xyz', tum_bag, tum_cfg, None, source, refiner))
    for i, seed in enumerate(SYNTH_SEEDS):
        prep = prepare(Case(f'industrial_handheld_{seed}', 'synth', 'industrial', 'handheld',
                            seed, 32, 15.0), cache, progress)
        cfg = PipelineConfig().with_values(prep.parameters)
        refiners = ('none', 'network') if network and i == 0 else ('none',)
        for refiner in refiners:
            jobs.append((prep.case.name, prep.bag, cfg, prep, 'plane_sweep', refiner))
        jobs.append((prep.case.name, prep.bag, cfg, prep, 'gt_single_view', 'none'))
    truths: Dict[str, M.OccupancyTruth] = {}
    rows: List[Dict[str, Any]] = []
    single = ('topic', 'gt_single_view')
    jobs = [job for job in jobs if job[4] in sources]
    total = sum(len(SETTINGS) + (len(SINGLE_VIEW_SETTINGS) if job[4] in single else 0)
                for job in jobs)
    bar = tqdm(total=total, desc='depth outliers', disable=not progress, file=sys.stderr)
    for name, bag, base, prep, source, refiner in jobs:
        settings = dict(SETTINGS)
        if source in single:
            settings.update(SINGLE_VIEW_SETTINGS)
        for setting, values in settings.items():
            kind = 'network' if source == 'gt_single_view' else source
            cfg = base.with_values({**values, 'depth_source': kind, 'refiner': refiner,
                                    'device': 'cpu'})
            pipe = (GivenDepthPipeline(cfg, DepthTruth.from_synth(prep.depth))
                    if source == 'gt_single_view' else OccupancyPipeline(cfg))
            with tempfile.TemporaryDirectory() as tmp:
                replay(bag, tmp, cfg, progress=False, pipeline=pipe)
                scores = _score(os.path.join(tmp, 'occupancy.npz'), truths, name, prep)
            rows.append({'sequence': name, 'depth_source': source, 'refiner': refiner,
                         'refiner_used': pipe.refiner_name, 'setting': setting,
                         'parameters': values, **scores})
            bar.update(1)
    bar.close()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(rows, f, indent=1)
    return rows


def score_cell(scores: Dict[str, Any]) -> str:
    """Return 'IoU / precision / recall' of a score dict, three decimals (no precision: 0)."""
    return '{:.3f} / {:.3f} / {:.3f}'.format(scores['iou'], scores['precision'] or 0.0,
                                             scores['recall'])


def table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table: one line per sequence, source and refiner.

    Cells: IoU / precision / recall (recall of moving voxels, where the ground truth has them).
    """
    settings = list(SETTINGS) + list(SINGLE_VIEW_SETTINGS)
    head = ('| sequence | depth | refiner | ' + ' | '.join(settings) + ' |\n|---|---|---|'
            + '---|' * len(settings))
    lines = [head]
    keys = []
    for r in rows:
        key = (r['sequence'], r['depth_source'], r['refiner'])
        if key not in keys:
            keys.append(key)
    for key in keys:
        cells = []
        for s in settings:
            r = next((r for r in rows if (r['sequence'], r['depth_source'], r['refiner']) == key
                      and r['setting'] == s), None)
            cell = '' if r is None else score_cell(r)
            if r is not None and r.get('dynamic_recall') is not None:
                cell += ' ({:.2f})'.format(r['dynamic_recall'])
            cells.append(cell)
        lines.append(f'| {key[0]} | {key[1]} | {key[2]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the comparison and print its table."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_bench.depth_outliers',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join('out', 'depth_outliers'))
    parser.add_argument('--cache', default=os.path.join('out', 'bench', 'cache'),
                        help='where the synthetic sequences are made once')
    parser.add_argument('--network', action='store_true',
                        help='also refiner network on TUM and the first synthetic sequence')
    parser.add_argument('--sources', nargs='+', choices=SOURCES, default=list(SOURCES),
                        help='depth sources to run (default: all)')
    args = parser.parse_args(argv)
    print(table(run(args.out, args.cache, args.network, args.sources)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
