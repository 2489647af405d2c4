"""The Kinect depth topic against the GT-depth oracle on TUM fr1/xyz: where the IoU gap comes from.

``python -m l3rocc_bench.tum_depth_model --out DIR`` replays the bundled clip
(``data/tum_fr1_xyz_37`` with ``config/tum.yaml``, ``refiner: none``) once per row of
:data:`ROWS`, each changing one thing against ``depth_source: topic`` at its defaults or against
the oracle of ``l3rocc bench --depth gt`` (TUM's GT depth rendered into each frame's camera and
fed through ``push_depth``), and scores every push as ``l3rocc bench`` does (newest slice,
observed voxels, mean over rows) against two ground truths that differ only in how the
registered depth pixels are read (:func:`l3rocc_core.datasets.tum.tum_depth_maps`): ``tum``
(TUM's depth-camera model, what ``l3rocc eval --tum`` and the bench use) and ``colour`` (the
colour camera's pixels, what the topic source reads). Writes ``DIR/results.json`` and prints
the markdown table of docs/depth.md.
"""

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from l3rocc_bench.accuracy import BenchPipeline, CaseScorer
from l3rocc_bench.depth_outliers import score_cell
from l3rocc_core import metrics as M
from l3rocc_core.config import PipelineConfig
from l3rocc_core.datasets.tum import TUM_DEPTH_MODELS
from l3rocc_core.depth.topic import depth_result
from l3rocc_core.depth.truth import DepthTruth
from l3rocc_core.frame import Frame
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.paths import config_file, data_path

#: A row's depth: None = the pipeline's own depth stage (``depth_source: topic``), else a
#: function of (frame, configuration, GT depth by model) giving what ``push_depth`` fuses.
Feed = Optional[Callable[[Frame, PipelineConfig, Dict[str, DepthTruth]], Any]]


def _oracle(model: str, through_topic: bool = False, own_stamp: bool = True) -> Feed:
    """Return the bench's oracle: GT depth read with ``model``, rendered into each frame.

    :param through_topic: pass it through the topic source's :func:`depth_result` (block
        minimum, range, flying pixels, confidence) instead of fusing the bare map
    :param own_stamp: cast each map from the pose at its depth image's own stamp (as the bench
        does); False: from the colour image's pose
    """
    def feed(frame: Frame, config: PipelineConfig, truths: Dict[str, DepthTruth]) -> Any:
        truth = truths[model]
        if not own_stamp:
            truth = DepthTruth({s: (d, c, None) for s, (d, c, _) in truth.depth.items()})
        gt = truth.render(frame.stamp_ns, frame.camera, frame.T_world_cam)
        if gt is None:
            return None
        if through_topic:
            return depth_result(torch.from_numpy(gt), frame.camera, config.depth)
        return torch.from_numpy(np.where(gt <= config.depth.max_depth, gt, 0.0)
                                .astype(np.float32))
    return feed


#: name -> (parameter values over config/tum.yaml + ``depth_source: topic``, depth feed)
ROWS: Dict[str, tuple] = {
    'topic': ({}, None),
    'topic, depth_edge_ratio 0': ({'depth_edge_ratio': 0.0}, None),
    'topic, depth_downsample 1': ({'depth_downsample': 1}, None),
    'topic, depth_downsample 1, depth_edge_ratio 0': (
        {'depth_downsample': 1, 'depth_edge_ratio': 0.0}, None),
    'oracle tum (bench --depth gt)': ({}, _oracle('tum')),
    'oracle tum, colour-image pose': ({}, _oracle('tum', own_stamp=False)),
    'oracle tum through the topic source, depth_downsample 1, depth_edge_ratio 0': (
        {'depth_downsample': 1, 'depth_edge_ratio': 0.0}, _oracle('tum', through_topic=True)),
    'oracle tum through the topic source': ({}, _oracle('tum', through_topic=True)),
    'oracle colour': ({}, _oracle('colour')),
    'oracle colour through the topic source': ({}, _oracle('colour', through_topic=True)),
    'plane_sweep': ({'depth_source': 'plane_sweep'}, None),
}


class FeedPipeline(BenchPipeline):
    """:class:`BenchPipeline` that fuses a row's depth feed instead of its depth stage.

    :param config: the configuration
    :param feed: the row's feed (None: the depth stage, as the base class)
    :param truths: GT depth by model, for the feed
    """

    def __init__(self, config: PipelineConfig, feed: Feed, truths: Dict[str, DepthTruth]):
        """Build the pipeline."""
        super().__init__(config)
        self.feed = feed
        self.truths = truths

    def push(self, frame: Frame) -> Optional[Occupancy4D]:
        """Process ``frame`` with the row's depth; report the result to the sink."""
        if self.feed is None or frame.T_world_cam is None:
            return super().push(frame)
        occ = self.push_depth(frame, self.feed(frame, self.config, self.truths), measured=True)
        if occ is not None and self.sink is not None:
            self.sink(frame, occ, None, self.raw_occupancy(occ))
        return occ


def run(out: str, rows: Optional[List[str]] = None, max_frames: Optional[int] = None,
        progress: bool = True) -> List[Dict[str, Any]]:
    """Replay and score every row of :data:`ROWS` (or ``rows``) against both ground truths.

    :param max_frames: only the first N frames of the clip
    :return: one dict per row: ``row``, ``parameters``, and per GT depth model ``iou``,
        ``precision``, ``recall``; also written to ``out/results.json``
    """
    from l3rocc_core.tools.replay import replay
    torch.set_num_threads(1)
    tum = data_path('tum_fr1_xyz_37') or os.path.join('data', 'tum_fr1_xyz_37')
    base = PipelineConfig.from_yaml(config_file('tum.yaml')).with_values(
        {'refiner': 'none', 'device': 'cpu', 'depth_source': 'topic'})
    grid = BenchPipeline(base).base_grid       # depth parameters do not change the grid
    truths = {m: DepthTruth.from_tum(tum, m) for m in TUM_DEPTH_MODELS}
    gts = {m: M.ground_truth_from_tum(tum, grid, None, max_depth=base.depth.max_depth,
                                      depth_model=m) for m in TUM_DEPTH_MODELS}
    results = []
    for name in tqdm(rows or list(ROWS), desc='tum depth model', disable=not progress,
                     file=sys.stderr):
        values, feed = ROWS[name]
        config = base.with_values(values)
        scorers = {m: CaseScorer(gts[m], None, config.depth.max_depth) for m in gts}
        pipe = FeedPipeline(config, feed, truths)

        def sink(frame: Frame, occ: Occupancy4D, depth: Any, raw: Any) -> None:
            for scorer in scorers.values():
                scorer(frame, occ, None, raw)

        pipe.sink = sink
        with tempfile.TemporaryDirectory() as tmp:
            replay(tum, tmp, config, max_frames=max_frames, progress=False, pipeline=pipe)
        row: Dict[str, Any] = {'row': name, 'parameters': values,
                               'frames': pipe.stats['processed']}
        for m, scorer in scorers.items():
            s = scorer.scorer.summary()
            row[m] = {k: s[k] for k in ('iou', 'precision', 'recall')}
        results.append(row)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    return results


def table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table: IoU / precision / recall per row against each ground truth."""
    lines = ['| depth fused | GT `tum` (bench, eval) | GT `colour` |', '|---|---|---|']
    for r in rows:
        lines.append(f"| {r['row']} | "
                     + ' | '.join(score_cell(r[m]) for m in TUM_DEPTH_MODELS) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the rows and print their table."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_bench.tum_depth_model',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join('out', 'tum_depth_model'))
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), help='default: all')
    args = parser.parse_args(argv)
    print(table(run(args.out, args.rows)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
