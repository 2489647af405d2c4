"""Accuracy of one benchmark sequence: replay it through the node's pipeline and score every push.

The replay is :func:`l3rocc_core.tools.replay.replay` itself (same conversion, TF lookups and
``OccupancyPipeline.push`` as ``l3rocc replay``), with :class:`BenchPipeline` in place of the
plain pipeline: it behaves identically and, after each ``push`` has returned, hands the result
and the depth map the depth stage made for that frame to a sink. The sink scores

- occupancy with :func:`l3rocc_core.metrics.add_occupancy`: the newest slice as a row and all
  slices of the window, each against the ground truth at that slice's stamp (static and dynamic
  voxels separately where the ground truth knows them), and flicker between rows;
- depth of the depth stage (the run's ``depth_source``) with
  :func:`l3rocc_core.metrics.depth_metrics` against GT depth brought into the estimate's camera
  (:func:`l3rocc_core.metrics.reproject_depth`).

The time the sink takes is measured and reported (``bench_hooks_s``) next to the replay's own
``fps``; it is outside every stage timing.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from l3rocc_core import metrics as M
from l3rocc_core.depth.truth import DepthTruth, pooled_depth_metrics
from l3rocc_bench.report import clean
from l3rocc_bench.suite import Prepared
from l3rocc_core.config import PipelineConfig
from l3rocc_core.frame import Frame
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_core.pipeline import OccupancyPipeline

Sink = Callable[[Frame, Occupancy4D, Any, Optional[Occupancy4D]], None]

#: ``run_case`` depth sources: the pipeline's own depth stage, or the sequence's GT depth.
DEPTH_MODES = ('estimated', 'gt')


class BenchPipeline(OccupancyPipeline):
    """:class:`~l3rocc_core.pipeline.OccupancyPipeline` that reports each result to a sink.

    Processing is the base class's, unchanged; after ``push`` returns a result the sink gets
    ``(frame, occupancy, depth_result_or_None, occupancy_without_hysteresis_or_None)``. Time
    spent in the sink adds up in :attr:`hook_s`.

    :param config: the pipeline configuration
    :param sink: called once per processed frame
    """

    def __init__(self, config: PipelineConfig, sink: Optional[Sink] = None):
        """Build the pipeline (see the base class)."""
        super().__init__(config)
        self.sink = sink
        self.hook_s = 0.0
        #: A :class:`DepthTruth` set by ``run_case(depth='gt')``: every frame's depth is then
        #: this ground truth rendered into the frame's (working-resolution) camera at its pose,
        #: through ``push_depth`` instead of the depth stage; the rest is unchanged.
        self.depth_oracle: Optional['DepthTruth'] = None
        self._raw: Optional[np.ndarray] = None

    def _hold(self, slots: List[int], todo: List[int]) -> None:
        """Keep a copy of the new slices' probabilities before hysteresis, then apply it.

        The network never sees its own output, so these are exactly the probabilities the
        pipeline would publish with ``occupancy_hysteresis: 0``.
        """
        if self.config.output.occupancy_hysteresis > 0:
            if self._raw is None or self._raw.shape != self._prob.shape:
                self._raw = np.zeros_like(self._prob)
            self._raw[todo] = self._prob[todo]
        super()._hold(slots, todo)

    def raw_occupancy(self, occ: Occupancy4D) -> Optional[Occupancy4D]:
        """Return ``occ`` with the probabilities before hysteresis, or None when it is off."""
        if self.config.output.occupancy_hysteresis <= 0 or self._raw is None:
            return None
        prob = self._raw[self.fusion.slot_order()].reshape(occ.prob.shape)
        return Occupancy4D(occ.grid, occ.stamps_ns, prob, occ.observed, occ.threshold)

    def push(self, frame: Frame) -> Optional[Occupancy4D]:
        """Process ``frame`` as the base class does, then report the result to the sink."""
        if self.depth_oracle is None:
            occ = super().push(frame)
        else:
            gt = None if frame.T_world_cam is None else self.depth_oracle.render(
                frame.stamp_ns, frame.camera, frame.T_world_cam)
            gt = None if gt is None else torch.from_numpy(
                np.where(gt <= self.config.depth.max_depth, gt, 0.0).astype(np.float32))
            occ = self.push_depth(frame, gt, measured=True)
            self.last_depth = None   # the sink scores the depth stage's estimates only
        if occ is not None and self.sink is not None:
            t0 = time.perf_counter()
            self.sink(frame, occ, self.last_depth, self.raw_occupancy(occ))
            self.hook_s += time.perf_counter() - t0
        return occ


# --------------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------------

class CaseScorer:
    """Scores every push of a replay (the :class:`BenchPipeline` sink).

    :param gt: occupancy ground truth
    :param depth_truth: GT depth, or None
    :param max_depth: GT depth beyond this is ignored (metres)
    """

    def __init__(self, gt: M.OccupancyTruth, depth_truth: Optional[DepthTruth], max_depth: float):
        """Start empty."""
        self.gt = gt
        self.depth_truth = depth_truth
        self.max_depth = float(max_depth)
        self.scorer = M.SequenceScorer()
        #: The same scores of the probabilities before ``occupancy_hysteresis``.
        self.raw_scorer = M.SequenceScorer()
        self.depth_rows: List[Dict[str, float]] = []
        #: The same rows over the pixels that see a moving object and over the others
        #: (synthetic sequences with moving-pixel masks).
        self.depth_rows_split: Dict[str, List[Dict[str, float]]] = {'moving': [], 'static': []}
        self.depth_missing = 0

    def __call__(self, frame: Frame, occ: Occupancy4D, depth: Any,
                 raw: Optional[Occupancy4D] = None) -> None:
        """Score one pipeline result (and the same before hysteresis) and its depth map."""
        M.add_occupancy(self.scorer, occ, self.gt)
        if raw is not None:
            M.add_occupancy(self.raw_scorer, raw, self.gt)
        if self.depth_truth is None:
            return
        if depth is None:
            self.depth_missing += 1
            return
        self.score_depth(frame.stamp_ns, frame.T_world_cam, depth)

    def score_depth(self, stamp_ns: int, T_world_cam: np.ndarray, depth: Any) -> None:
        """Score one depth estimate (a ``DepthResult``) against the GT depth at ``stamp_ns``."""
        gt = self.depth_truth.render(stamp_ns, depth.camera, T_world_cam)
        if gt is None:
            return
        row = M.depth_metrics(depth.depth, gt, depth.valid, self.max_depth)
        row['stamp'] = int(stamp_ns)
        self.depth_rows.append(row)
        moving = self.depth_truth.render_moving(stamp_ns, depth.camera, T_world_cam, gt)
        if moving is None:
            return
        for name, mask in (('moving', moving), ('static', ~moving)):
            row = M.depth_metrics(depth.depth, np.where(mask, gt, 0.0), depth.valid,
                                  self.max_depth)
            row['stamp'] = int(stamp_ns)
            self.depth_rows_split[name].append(row)

    def depth_summary(self) -> Dict[str, Any]:
        """Return pixel-pooled AbsRel, delta < 1.25 and completeness over every scored frame.

        With moving-pixel masks, ``moving`` and ``static`` hold the same figures over the GT
        pixels that see a moving object and over the others, with ``gt_pixels`` (their count).
        """
        out: Dict[str, Any] = {'frames': len(self.depth_rows),
                               'frames_without_depth': self.depth_missing}
        out.update(pooled_depth_metrics(self.depth_rows))
        for name, rows in self.depth_rows_split.items():
            if rows:
                out[name] = pooled_depth_metrics(rows)
        return out


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------

def network_available(config: PipelineConfig) -> Optional[str]:
    """Return why ``refiner: network`` cannot run with ``config``, or None when it can."""
    try:
        from l3rocc_core.refiner.network import BUNDLED_CHECKPOINT
    except ImportError as exc:
        return f'l3rocc_core.refiner.network does not import ({exc})'
    path = config.refiner.checkpoint or BUNDLED_CHECKPOINT
    if not os.path.isfile(path):
        return f'no checkpoint at {path}'
    return None


def case_config(prep: Prepared, refiner: str, device: str,
                extra: Optional[Dict[str, Any]] = None) -> PipelineConfig:
    """Return the configuration of a case (its overlay and parameters, ``refiner``, device)."""
    cfg = PipelineConfig.from_yaml(prep.params_file) if prep.params_file else PipelineConfig()
    values = dict(prep.parameters)
    values.update({'refiner': refiner, 'device': device})
    values.update(extra or {})
    return cfg.with_values(values)


def run_case(prep: Prepared, refiner: str, out_dir: str, device: str = 'cpu',
             progress: bool = True, extra: Optional[Dict[str, Any]] = None,
             depth: str = 'estimated') -> Dict[str, Any]:
    """Replay one case with ``refiner`` and score it.

    :param prep: the prepared sequence
    :param refiner: 'none' or 'network'
    :param out_dir: where the replay writes occupancy.npz and timing.json
    :param device: pipeline device
    :param extra: further parameter values
    :param depth: 'estimated' (the pipeline's own depth stage) or 'gt': the sequence's GT depth
        (the renderer's; TUM: the Kinect's) in place of the depth stage, to tell the depth's
        share of the error from the rest (depth metrics are then left out)
    :return: JSON-ready dict: ``occupancy`` (sequence summary of
        :meth:`~l3rocc_core.metrics.SequenceScorer.summary`), ``occupancy_no_hysteresis``
        (the same for the probabilities before ``occupancy_hysteresis``; None when it is 0),
        ``depth``, ``timing`` (timing.json + ``bench_hooks_s``, ``fps_without_hooks``),
        ``per_frame``
    """
    from l3rocc_core.tools.replay import replay
    config = case_config(prep, refiner, device, extra)
    sink_holder: Dict[str, CaseScorer] = {}

    def sink(frame: Frame, occ: Occupancy4D, depth: Any, raw: Optional[Occupancy4D]) -> None:
        sink_holder['scorer'](frame, occ, depth, raw)

    if depth not in DEPTH_MODES:
        raise ValueError(f'depth must be one of {DEPTH_MODES}, got {depth!r}')
    t_gt = time.perf_counter()
    pipeline = BenchPipeline(config, sink)
    max_depth = config.depth.max_depth
    if prep.gt is not None:
        gt = M.ground_truth_from_file(prep.gt)
        depth_truth = DepthTruth.from_synth(prep.depth) if prep.depth else None
    else:
        gt = M.ground_truth_from_tum(None, pipeline.base_grid, None, max_depth=max_depth,
                                     progress=progress)
        depth_truth = DepthTruth.from_tum()
    if depth == 'gt':
        if depth_truth is None:
            raise ValueError(f'{prep.case.name}: no GT depth for depth=gt')
        pipeline.depth_oracle, depth_truth = depth_truth, None
    sink_holder['scorer'] = CaseScorer(gt, depth_truth, max_depth)
    gt_s = time.perf_counter() - t_gt
    result = replay(prep.bag, out_dir, config, progress=progress, pipeline=pipeline)
    scorer = sink_holder['scorer']
    timing = result.timing()
    busy = result.wall_s - pipeline.hook_s
    timing.update(bench_hooks_s=round(pipeline.hook_s, 3),
                  fps_without_hooks=round(result.frames / busy, 4) if busy > 0 else None,
                  ground_truth_s=round(gt_s, 3))
    per_frame = [{k: r.get(k) for k in ('stamp', 'iou', 'precision', 'recall', 'flicker',
                                        'static_iou', 'dynamic_iou')}
                 for r in scorer.scorer.per_frame()]
    return clean({
        'sequence': prep.case.name, 'kind': prep.case.kind, 'family': prep.case.family,
        'camera': prep.case.camera, 'seed': prep.case.seed if prep.case.kind != 'tum' else None,
        'refiner': refiner, 'refiner_used': pipeline.refiner_name, 'device': str(pipeline.device),
        'depth_source': depth,
        'grid_dims': list(pipeline.base_grid.dims), 'frames': result.frames,
        'parameters': dict(prep.parameters), 'overrides': dict(extra or {}), 'params_file': (
            os.path.basename(prep.params_file) if prep.params_file else None),
        'occupancy': scorer.scorer.summary(), 'depth': scorer.depth_summary(),
        'occupancy_hysteresis': config.output.occupancy_hysteresis,
        'occupancy_no_hysteresis': (scorer.raw_scorer.summary() if scorer.raw_scorer.rows
                                    else None),
        'timing': timing, 'per_frame': per_frame})
