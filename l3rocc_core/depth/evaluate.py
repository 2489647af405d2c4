"""Scores of the depth sources on held-out synthetic sequences and on real TUM frames.

Run as ``python -m l3rocc_core.depth.evaluate --out out/depth/eval.json`` (docs/depth.md). Every
source gets the same frames at the working resolution (320x240) as the pipeline does, with the
window sources that :class:`~l3rocc_core.window.SlidingWindow` selects, and is scored at its
depth resolution (160x120) against the exact depth (synthetic) or TUM's registered Kinect depth,
reprojected into the depth map's camera as ``l3rocc bench`` does:

- ``network``: :class:`~l3rocc_core.depth.network.NetworkDepth` with pose and sources;
- ``network_only``: the network's own map (without the sweep's depth kept where it matched);
- ``network_conf50``: ``network``, only the pixels whose confidence is at least 0.5;
- ``network_no_pose``: the same network on the frame without its pose and without sources;
- ``plane_sweep``: :class:`~l3rocc_core.depth.plane_sweep.PlaneSweepDepth`, as run inside
  NetworkDepth (no depth without sources: a fixed camera gets none);
- ``ground_prior``: the depth of the ground plane z = 0 alone (the network's prior channel).

Figures: AbsRel and delta < 1.25 over the pixels both the GT and the source give, and
completeness (share of GT pixels within [min_depth, max_depth] with a valid estimate), pooled
over pixels, for all pixels and for the pixels of moving objects (synthetic), split by fixed and
moving cameras. ``--timing`` adds the CPU time per frame of NetworkDepth.
"""

import argparse
import json
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from l3rocc_core import metrics as M
from l3rocc_core.depth.truth import DepthTruth, pooled_depth_metrics
from l3rocc_core.config import DepthConfig, WindowConfig
from l3rocc_core.depth.network import (NetworkDepth, decode_depth, geometry_channels,
                                       reduced_camera)
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame

METHODS = ('network', 'network_only', 'network_conf50', 'network_no_pose', 'plane_sweep',
           'ground_prior')
_EVAL_SEED = 1     # data seed of the held-out sequences (training used 0)
_SURE = 0.5        # network_conf50 keeps the pixels with at least this confidence


class GroundPriorDepth:
    """The ground plane z = 0 seen through the camera, as a depth source (frames with pose)."""

    def __init__(self, config: DepthConfig):
        """Keep the depth range and the reduction."""
        self.config = config

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Depth of the ground plane where the pixel's ray meets it, else invalid."""
        if frame.T_world_cam is None:
            return None
        cam = reduced_camera(frame.camera, self.config.depth_downsample)
        span = (self.config.min_depth, self.config.max_depth)
        geo = geometry_channels(cam, frame.T_world_cam, span, self.config.max_depth)
        ok = geo[3] > 0
        depth = np.where(ok, decode_depth(geo[2], span), 0.0).astype(np.float32)
        return DepthResult(torch.as_tensor(np.where(ok, depth, 0.0).astype(np.float32)),
                           torch.as_tensor(ok.astype(np.float32)), torch.as_tensor(ok), cam)


class Scores:
    """Per-frame metric rows by (method, group, pixel set)."""

    def __init__(self) -> None:
        """Start empty."""
        self.rows: Dict[tuple, List[Dict[str, float]]] = {}

    def add(self, method: str, group: str, result: Optional[DepthResult], gt: np.ndarray,
            moving: Optional[np.ndarray], max_depth: float, min_depth: float) -> None:
        """Score one estimate (None: no depth for this frame) against ``gt``."""
        gt = np.where(gt >= min_depth, gt, 0.0)
        if result is None:
            pred, valid = np.zeros_like(gt), np.zeros(gt.shape, bool)
        else:
            pred, valid = result.depth.cpu().numpy(), result.valid.cpu().numpy()
        sets = {'all': gt}
        if moving is not None:
            sets['moving'] = np.where(moving, gt, 0.0)
        for name, g in sets.items():
            row = M.depth_metrics(pred, g, valid, max_depth)
            for key in ((method, group, name), (method, 'all', name)):
                self.rows.setdefault(key, []).append(row)

    def summary(self) -> Dict[str, Any]:
        """Pooled figures: ``{method: {group: {pixels: {...}}}}``."""
        out: Dict[str, Any] = {}
        for (method, group, name), rows in sorted(self.rows.items()):
            out.setdefault(method, {}).setdefault(group, {})[name] = pooled_depth_metrics(rows)
        return out


def _sources(estimators: Dict[str, Any], frame: Frame, sources: List[Frame]
             ) -> Dict[str, Optional[DepthResult]]:
    no_pose = Frame(frame.image, frame.stamp_ns, frame.camera, None, frame.frame_id)
    parts = estimators['network'].estimate_parts(frame, sources)
    net = parts.depth
    sure = net.valid & (net.confidence >= _SURE)
    return {'network': net, 'network_only': parts.network,
            'network_conf50': DepthResult(torch.where(sure, net.depth, 0.0), net.confidence,
                                          sure, net.camera),
            'network_no_pose': estimators['network'].estimate(no_pose, []),
            'plane_sweep': parts.sweep,
            'ground_prior': estimators['ground_prior'].estimate(frame, [])}


def _estimators(cfg: DepthConfig, checkpoint: str) -> Dict[str, Any]:
    return {'network': NetworkDepth(cfg, 'cpu', checkpoint), 'ground_prior': GroundPriorDepth(cfg)}


def evaluate_synthetic(count: int, checkpoint: str = '', seed: int = _EVAL_SEED,
                       progress: bool = True) -> Dict[str, Any]:
    """Score the sources on ``count`` held-out varied sequences at 320x240.

    :param seed: data seed of :func:`~l3rocc_core.depth.data.plan` (training used 0)
    """
    from tqdm import tqdm

    from l3rocc_core.depth import data
    from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence
    from l3rocc_core.window import SlidingWindow

    scores = Scores()
    for item in tqdm(data.plan(seed, count), desc='synthetic eval', unit='seq',
                     disable=not progress):
        static = item.camera == 'static'
        spec = SequenceSpec(item.family, item.camera, item.seed, 5 if static else 16,
                            1.0 if static else 15.0, 320, 240, start_s=item.start_s,
                            variety=True)
        seq = SyntheticSequence(spec, ground_truth=False)
        # gate 0: the `network` rows score every pixel, the `>= 0.5` rows what the gate keeps
        cfg = DepthConfig(depth_source='network', min_depth=0.3, max_depth=seq.max_depth,
                          network_min_confidence=0.0)
        est = _estimators(cfg, checkpoint)
        window = SlidingWindow(WindowConfig())
        group = 'fixed_camera' if static else 'moving_camera'
        for i in range(spec.frames):
            f = seq.frame(i)
            frame = Frame(f.image, f.stamp_ns, seq.pinhole, f.T_world_cam)
            d = f.depth[f.depth > 0]
            sources = window.select_sources(frame, float(np.median(d)) if d.size else None)
            window.push(frame)
            if not static and i < 5:
                continue
            truth = DepthTruth({f.stamp_ns: (f.depth, seq.pinhole, f.T_world_cam)},
                               {f.stamp_ns: f.moving})
            cam = reduced_camera(seq.pinhole, cfg.depth_downsample)
            gt = truth.render(f.stamp_ns, cam, f.T_world_cam)
            moving = truth.render_moving(f.stamp_ns, cam, f.T_world_cam, gt)
            for method, res in _sources(est, frame, sources).items():
                scores.add(method, group, res, gt, moving, cfg.max_depth, cfg.min_depth)
    return scores.summary()


def evaluate_tum(checkpoint: str = '', path: Optional[str] = None) -> Dict[str, Any]:
    """Score the sources on the bundled TUM fr1/xyz frames (working width 320, depth to 4 m)."""
    from l3rocc_core.camera import Undistorter
    from l3rocc_core.datasets.tum import TUM_FR1_CAMERA, load_tum
    from l3rocc_core.window import SlidingWindow

    seq = load_tum(path)
    truth = DepthTruth.from_tum(path)
    und = Undistorter(TUM_FR1_CAMERA, 320)
    cfg = DepthConfig(depth_source='network', min_depth=0.3, max_depth=4.0,
                      network_min_confidence=0.0)
    est = _estimators(cfg, checkpoint)
    window = SlidingWindow(WindowConfig())
    scores = Scores()
    for f in seq.frames:
        frame = Frame(und(f.rgb), f.stamp_ns, und.camera, f.T_world_cam)
        sources = window.select_sources(frame, 1.0)
        window.push(frame)
        cam = reduced_camera(und.camera, cfg.depth_downsample)
        gt = truth.render(f.stamp_ns, cam, f.T_world_cam)
        for method, res in _sources(est, frame, sources).items():
            scores.add(method, 'moving_camera', res, gt, None, cfg.max_depth, cfg.min_depth)
    return scores.summary()


def time_network(checkpoint: str = '', threads: Sequence[int] = (1, 2), repeats: int = 20
                 ) -> Dict[str, Any]:
    """Median CPU wall time per frame of NetworkDepth at 320x240 in, 160x120 out (ms).

    Cases: no pose, pose without sources (fixed camera), pose with 4 sources (sweep + network),
    the network's forward pass alone, and the plane sweep alone on the same 4 sources.
    """
    from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence

    seq = SyntheticSequence(SequenceSpec('industrial', 'handheld', 3, 20, 15.0, 320, 240),
                            ground_truth=False)
    frames = [Frame(f.image, f.stamp_ns, seq.pinhole, f.T_world_cam)
              for f in (seq.frame(i) for i in range(0, 20, 4))]
    ref, sources = frames[-1], frames[:-1]
    no_pose = Frame(ref.image, ref.stamp_ns, ref.camera, None)
    est = NetworkDepth(DepthConfig(depth_source='network', max_depth=6.0), 'cpu', checkpoint)
    x = torch.zeros((1, 11, 120, 160))
    cases: Dict[str, Callable[[], Any]] = {
        'no_pose': lambda: est.estimate(no_pose, []),
        'pose_no_sources': lambda: est.estimate(ref, []),
        'pose_4_sources': lambda: est.estimate(ref, sources),
        'forward_only': lambda: est.infer(x),
        'plane_sweep_4_sources': lambda: est.sweep.estimate(ref, sources)}
    out: Dict[str, Any] = {}
    before = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(int(n))
            for name, fn in cases.items():
                fn()
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                out[f'{name}_threads{n}_ms'] = round(float(np.median(times)) * 1e3, 1)
    finally:
        torch.set_num_threads(before)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: evaluate and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='JSON file of the results')
    p.add_argument('--checkpoint', default='', help='depth checkpoint (default: the shipped)')
    p.add_argument('--sequences', type=int, default=24, help='held-out synthetic sequences')
    p.add_argument('--timing', action='store_true', help='also time NetworkDepth per frame')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {'synthetic': evaluate_synthetic(args.sequences, args.checkpoint),
              'tum': evaluate_tum(args.checkpoint)}
    if args.timing:
        result['timing'] = time_network(args.checkpoint)
    with open(args.out, 'w', encoding='utf-8') as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
