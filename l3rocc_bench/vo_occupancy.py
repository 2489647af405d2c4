"""Occupancy with visual-odometry poses against occupancy with the true poses, per sequence.

``python -m l3rocc_bench.vo_occupancy --out DIR`` replays each sequence of :data:`CASES` twice
with :func:`l3rocc_bench.accuracy.run_case` (the bench's replay and scoring: newest slice,
observed voxels, mean over rows): once with ``pose_source: tf`` (TF at every image) and once with
``pose_source: visual_odometry``, where only the first pose comes from TF (at the first image) and
every later one from the images (``l3rocc replay`` on the same bag reads TF for the first image
only). Everything else is the sequence's own configuration. The ratio is IoU with VO over IoU
with TF; both IoUs are over the frames VO posed (the first frames wait for parallax and have no
pose, hence no occupancy row), the TF IoU over all frames is given too. ATE is the RMSE of the VO
camera positions against the bag's TF, with no alignment (the metric error that occupancy sees)
and after a Sim(3) alignment (the shape).

``--depth-source topic`` replays with the recording's measured depth (TUM only: its Kinect
depth), which then also fixes the VO scale (``scale_source: depth``). Writes
``DIR/results.json`` and prints the markdown table of docs/visual_odometry.md.
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from l3rocc_bench.report import clean
from l3rocc_bench.suite import Case, prepare, Prepared, QUICK_SET, select, TUM_CASE

#: The sequences: TUM fr1/xyz (desk, handheld), the quick bench's moving synthetic camera, two
#: seeds of ``l3rocc synth --camera handheld`` and a moving camera of the independent set.
CASES = (
    TUM_CASE,
    QUICK_SET[0],
    Case('synth_handheld_s0', 'synth', 'industrial', 'handheld', 0, 32, 15.0),
    Case('indep_dolly_carts', 'independent', 'carts', 'dolly', 4, 24, 10.0, 640),
)

#: The pose sources compared.
POSE_SOURCES = ('tf', 'visual_odometry')


def _mean_iou(rows: List[Dict[str, Any]], stamps: Optional[set] = None) -> float:
    """Mean newest-slice IoU of ``rows`` (per_frame rows of run_case), over ``stamps`` if given."""
    vals = [r['iou'] for r in rows if r.get('iou') is not None
            and (stamps is None or r['stamp'] in stamps)]
    return float(np.mean(vals)) if vals else float('nan')


def trajectory_scores(trajectory: str, bag: str) -> Dict[str, Any]:
    """ATE of a VO trajectory against the bag's TF, unaligned and after Sim(3).

    :param trajectory: ``trajectory.tum`` written by the replay
    :param bag: the sequence's bag (TF at every image)
    :return: ``ate_none_m``, ``ate_sim3_m`` (metres), ``size`` (estimate size / true size),
        ``posed`` (VO poses); None values when fewer than 3 poses
    """
    from l3rocc_core.metrics_trajectory import (load_tum_trajectory, read_trajectory,
                                                score_trajectory)
    est = load_tum_trajectory(trajectory)
    gt = read_trajectory(bag)
    out: Dict[str, Any] = {'posed': int(len(est[0]))}
    try:
        none = score_trajectory(est[0], est[1], gt[0], gt[1], 'none')
        sim3 = score_trajectory(est[0], est[1], gt[0], gt[1], 'sim3')
    except ValueError:
        return dict(out, ate_none_m=None, ate_sim3_m=None, size=None)
    return dict(out, ate_none_m=none.ate_rmse_m, ate_sim3_m=sim3.ate_rmse_m, size=sim3.size_ratio)


def compare(prep: Prepared, refiner: str, out_dir: str, device: str = 'cpu',
            extra: Optional[Dict[str, Any]] = None, progress: bool = False) -> Dict[str, Any]:
    """Replay ``prep`` with TF poses and with VO poses; score both and the VO trajectory.

    :param prep: the prepared sequence (a bag with TF at every image)
    :param refiner: 'none' or 'network'
    :param out_dir: replays go to ``out_dir/tf`` and ``out_dir/visual_odometry``
    :param extra: further parameter values for both replays (e.g. ``depth_source``)
    :return: JSON-ready row: ``iou_tf_all`` (TF, every frame), ``iou_tf`` and ``iou_vo`` (over
        the frames VO posed), ``ratio`` = iou_vo / iou_tf, ``frames_tf``, ``frames_vo``,
        trajectory scores (:func:`trajectory_scores`), ``scale_source`` of the VO run
    :raises ValueError: VO posed no frame that TF also scored
    """
    from l3rocc_bench.accuracy import run_case
    runs = {}
    for source in POSE_SOURCES:
        values = dict(extra or {}, pose_source=source)
        runs[source] = run_case(prep, refiner, os.path.join(out_dir, source), device,
                                progress=progress, extra=values)
    tf_rows, vo_rows = runs['tf']['per_frame'], runs['visual_odometry']['per_frame']
    common = {r['stamp'] for r in vo_rows} & {r['stamp'] for r in tf_rows}
    if not common:
        raise ValueError(f'{prep.case.name}: visual odometry posed no frame that TF scored')
    iou_tf, iou_vo = _mean_iou(tf_rows, common), _mean_iou(vo_rows, common)
    row = {'sequence': prep.case.name, 'refiner': refiner,
           'depth_source': (extra or {}).get('depth_source', 'default'),
           'frames_tf': len(tf_rows), 'frames_vo': len(vo_rows),
           'iou_tf_all': _mean_iou(tf_rows), 'iou_tf': iou_tf, 'iou_vo': iou_vo,
           'ratio': iou_vo / iou_tf if iou_tf > 0 else float('nan')}
    row.update(trajectory_scores(os.path.join(out_dir, 'visual_odometry', 'trajectory.tum'),
                                 prep.bag))
    return clean(row)


def prepare_case(case: Case, cache_dir: str) -> Prepared:
    """Return ``case`` ready to replay; TUM is the bundled bag (it has the depth topic too)."""
    if case.kind == 'tum':
        from l3rocc_core.paths import config_file, data_path
        return Prepared(case, data_path('tum_fr1_xyz_37'), None, None, {},
                        config_file('tum.yaml'))
    return prepare(case, cache_dir, progress=False)


def _cell(v: Optional[float], fmt: str) -> str:
    return '—' if v is None else format(v, fmt)


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """Return the markdown table of :func:`compare` rows."""
    lines = ['| sequence | refiner | depth | frames VO / TF | IoU TF (all frames) | IoU TF | '
             'IoU VO | ratio | ATE no alignment | ATE Sim(3) | size |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        ate_none = None if r['ate_none_m'] is None else 100 * r['ate_none_m']
        ate_sim3 = None if r['ate_sim3_m'] is None else 100 * r['ate_sim3_m']
        lines.append(
            f"| {r['sequence']} | {r['refiner']} | {r['depth_source']} | "
            f"{r['frames_vo']} / {r['frames_tf']} | {_cell(r['iou_tf_all'], '.3f')} | "
            f"{_cell(r['iou_tf'], '.3f')} | {_cell(r['iou_vo'], '.3f')} | "
            f"{_cell(r['ratio'], '.2f')} | {_cell(ate_none, '.1f')} cm | "
            f"{_cell(ate_sim3, '.1f')} cm | {_cell(r['size'], '.2f')} |")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the comparison; print the table, write results.json."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_bench.vo_occupancy',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='out/vo_occupancy', help='output folder')
    parser.add_argument('--cache', default='out/bench/cache',
                        help="sequence cache (the bench's: sequences made once are reused)")
    parser.add_argument('--sequences', nargs='*', metavar='NAME',
                        help=f'subset of {[c.name for c in CASES]} (default: all)')
    parser.add_argument('--refiners', nargs='+', choices=('none', 'network'), default=['none'])
    parser.add_argument('--depth-source', choices=('default', 'topic'), default='default',
                        help="topic: the recording's measured depth (TUM only)")
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    try:
        cases = select(CASES, args.sequences)
    except ValueError as exc:
        print(f'vo_occupancy: {exc}', file=sys.stderr)
        return 2
    extra = {} if args.depth_source == 'default' else {'depth_source': args.depth_source}
    rows = []
    jobs = [(c, r) for c in cases for r in args.refiners]
    for case, refiner in tqdm(jobs, desc='vo_occupancy', unit='run', file=sys.stderr):
        prep = prepare_case(case, args.cache)
        out = os.path.join(args.out, f'{case.name}_{refiner}_{args.depth_source}')
        rows.append(compare(prep, refiner, out, args.device, extra))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(rows, f, indent=1)
    print(table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
