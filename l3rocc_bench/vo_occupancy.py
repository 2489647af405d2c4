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

``--start camera_height_m`` replays each sequence once, with VO started as a phone video is:
no TF at all, only ``camera_height_m`` (the first TF pose's height, or ``--camera-height``), so
that the start's pitch and roll come from the ground the first map sees (:func:`level_start`).
Such a world starts at the first camera's place and heading, which no image tells: the
trajectory is placed there (the first true pose's position and heading) before it is scored;
occupancy is not scored (its world is not the bag's).
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
#: Where the VO replay starts: TF at the first image, or ``camera_height_m`` alone.
STARTS = ('tf', 'camera_height_m')


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


def placed_at_start(T_world_cam: np.ndarray, T_true_first: np.ndarray,
                    height: float) -> np.ndarray:
    """Move the poses of a ``camera_height_m`` start onto the true first pose's place.

    Such a start puts the first camera ``height`` above the origin with its heading (the
    optical axis on the ground) along +x; a turn about z and a shift take that to the true
    first camera's position and heading. Pitch, roll and scale are left as estimated.

    :param T_world_cam: float64 [N, 4, 4] estimated poses
    :param T_true_first: float64 [4, 4] the true pose of the first frame
    :return: float64 [N, 4, 4]
    """
    heading = np.arctan2(T_true_first[1, 2], T_true_first[0, 2])
    move = np.eye(4)
    move[:3, :3] = [[np.cos(heading), -np.sin(heading), 0.0],
                    [np.sin(heading), np.cos(heading), 0.0], [0.0, 0.0, 1.0]]
    move[:3, 3] = T_true_first[:3, 3] - move[:3, :3] @ [0.0, 0.0, height]
    return move @ T_world_cam


def level_start(prep: Prepared, out_dir: str, device: str = 'cpu',
                extra: Optional[Dict[str, Any]] = None,
                height: Optional[float] = None) -> Dict[str, Any]:
    """Replay ``prep`` with VO started from ``camera_height_m`` alone; score the trajectory.

    The bag's TF is not read (the first pose is neither TF nor ``camera_pose``).

    :param height: ``camera_height_m`` (default: the height of the first true pose)
    :return: JSON-ready row: ``sequence``, ``height_m``, ``frames``, ``posed``,
        ``true_pitch_deg``, ``true_roll_deg`` (the first true pose), ``start`` (the replay's
        ``vo_start*`` values: the levelled pitch and roll), ``ate_placed_m`` (positions after
        :func:`placed_at_start`, metres), ``ate_sim3_m``, ``size``; None values when fewer than
        3 poses
    """
    from l3rocc_bench.accuracy import case_config
    from l3rocc_core.metrics_trajectory import (load_tum_trajectory, read_trajectory,
                                                score_trajectory)
    from l3rocc_core.poses.geometry import roll_pitch_deg
    from l3rocc_core.tools.replay import replay, ReplayError, TRAJECTORY_FILE
    gt = read_trajectory(prep.bag)
    first = gt[1][0]
    height = float(first[2, 3]) if height is None else float(height)
    values = dict(extra or {}, pose_source='visual_odometry', camera_height_m=height,
                  camera_pose=[], refiner='none')
    roll, pitch = roll_pitch_deg(first[:3, :3])
    row: Dict[str, Any] = {'sequence': prep.case.name, 'height_m': height,
                           'frames': len(gt[0]), 'true_pitch_deg': pitch, 'true_roll_deg': roll}
    try:
        result = replay(prep.bag, out_dir, case_config(prep, 'none', device, values),
                        progress=False, tf_topic='', tf_static_topic='')
        row['start'] = result.visual_odometry
    except ReplayError as exc:       # no frame posed at all
        row['start'] = {'vo_start_levelled': exc.kind}
    path = os.path.join(out_dir, TRAJECTORY_FILE)
    stamps, poses = load_tum_trajectory(path) if os.path.exists(path) else ([], None)
    row['posed'] = len(stamps)
    try:
        placed = score_trajectory(stamps, placed_at_start(poses, first, height), gt[0], gt[1],
                                  'none')
        sim3 = score_trajectory(stamps, poses, gt[0], gt[1], 'sim3')
    except (ValueError, TypeError):
        return clean(dict(row, ate_placed_m=None, ate_sim3_m=None, size=None))
    return clean(dict(row, ate_placed_m=placed.ate_rmse_m, ate_sim3_m=sim3.ate_rmse_m,
                      size=sim3.size_ratio))


def level_start_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Return the markdown table of :func:`level_start` rows."""
    lines = ['| sequence | camera_height_m | frames posed | pitch / roll, true | '
             'pitch / roll, levelled | ATE, start placed | ATE Sim(3) | size |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        start = r.get('start') or {}
        levelled = ('level (not levelled)' if 'vo_start_levelled' not in start else
                    f"{start['vo_start_pitch_deg']:.1f}° / {start['vo_start_roll_deg']:.1f}°"
                    if start['vo_start_levelled'] == 'yes' else start['vo_start_levelled'])
        lines.append(
            f"| {r['sequence']} | {r['height_m']:.2f} | {r['posed']} / {r['frames']} | "
            f"{r['true_pitch_deg']:.1f}° / {r['true_roll_deg']:.1f}° | {levelled} | "
            f"{_cm(r['ate_placed_m'])} | {_cm(r['ate_sim3_m'])} | {_cell(r['size'], '.2f')} |")
    return '\n'.join(lines)


def prepare_case(case: Case, cache_dir: str) -> Prepared:
    """Return ``case`` ready to replay; TUM is the bundled bag (it has the depth topic too)."""
    if case.kind == 'tum':
        from l3rocc_core.paths import config_file, data_path
        return Prepared(case, data_path('tum_fr1_xyz_37'), None, None, {},
                        config_file('tum.yaml'))
    return prepare(case, cache_dir, progress=False)


def _cell(v: Optional[float], fmt: str) -> str:
    return '—' if v is None else format(v, fmt)


def _cm(metres: Optional[float]) -> str:
    return _cell(None if metres is None else 100 * metres, '.1f') + ' cm'


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """Return the markdown table of :func:`compare` rows."""
    lines = ['| sequence | refiner | depth | frames VO / TF | IoU TF (all frames) | IoU TF | '
             'IoU VO | ratio | ATE no alignment | ATE Sim(3) | size |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {r['sequence']} | {r['refiner']} | {r['depth_source']} | "
            f"{r['frames_vo']} / {r['frames_tf']} | {_cell(r['iou_tf_all'], '.3f')} | "
            f"{_cell(r['iou_tf'], '.3f')} | {_cell(r['iou_vo'], '.3f')} | "
            f"{_cell(r['ratio'], '.2f')} | {_cm(r['ate_none_m'])} | {_cm(r['ate_sim3_m'])} | "
            f"{_cell(r['size'], '.2f')} |")
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
    parser.add_argument('--start', choices=STARTS, default='tf',
                        help='camera_height_m: VO without TF, from camera_height_m alone (one '
                        'replay per sequence, its trajectory scored; see the module docs)')
    parser.add_argument('--camera-height', type=float, metavar='M',
                        help='--start camera_height_m: this camera_height_m (default: the '
                        'height of the first true pose)')
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
    if args.start == 'camera_height_m':
        return _main_level_start(cases, args, extra)
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


def _main_level_start(cases: Sequence[Case], args: argparse.Namespace,
                      extra: Dict[str, Any]) -> int:
    rows = []
    for case in tqdm(cases, desc='vo_occupancy', unit='run', file=sys.stderr):
        prep = prepare_case(case, args.cache)
        out = os.path.join(args.out, f'{case.name}_camera_height_{args.depth_source}')
        rows.append(level_start(prep, out, args.device, extra, args.camera_height))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results_camera_height.json'), 'w',
              encoding='utf-8') as f:
        json.dump(rows, f, indent=1)
    print(level_start_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
