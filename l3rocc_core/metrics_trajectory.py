"""Trajectory metrics: absolute trajectory error (ATE) with or without alignment, scale error.

- ATE: RMSE of camera positions against ground truth at the estimate's stamps (ground truth
  interpolated), after aligning the estimate by ``sim3`` (rotation, translation, scale;
  Umeyama 1991), ``se3`` (no scale) or ``none``.
- Scale: the Sim(3) scale that maps the estimate onto the truth, reported as the estimate's
  size relative to the truth (``size_ratio`` = 1 / that scale) and ``scale_error`` =
  ``|size_ratio - 1|``; ``scale_drift`` = size ratio of the second half over the first half,
  minus 1.

Command line (prints JSON)::

    python -m l3rocc_core.metrics_trajectory OUT/trajectory.tum GROUND_TRUTH [--align sim3]

``GROUND_TRUTH`` is a TUM file (``groundtruth.txt``) or a rosbag2 whose /tf holds the camera
(the pose of each image's frame in the root of its transform tree at the image stamp).
"""

import argparse
from dataclasses import asdict, dataclass
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from l3rocc_core.sources import (BagSource, PoseTable, SourceError, load_tum_trajectory,
                                 open_source)

ALIGNMENTS = ('sim3', 'se3', 'none')


@dataclass
class TrajectoryScore:
    """Errors of an estimated trajectory.

    :param frames: estimated poses scored (inside the ground truth's time span)
    :param align: the alignment applied before the ATE
    :param ate_rmse_m: RMSE of the positions after alignment (metres)
    :param ate_max_m: the largest position error after alignment (metres)
    :param size_ratio: estimate size / true size (from the Sim(3) fit; 1 = metric)
    :param scale_error: ``|size_ratio - 1|``
    :param scale_drift: size ratio of the second half over the first half, minus 1 (NaN for
        fewer than 6 frames)
    :param path_length_m: length of the true path over the scored frames (metres)
    """

    frames: int
    align: str
    ate_rmse_m: float
    ate_max_m: float
    size_ratio: float
    scale_error: float
    scale_drift: float
    path_length_m: float


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True
            ) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991).

    :param src: [N, 3] points
    :param dst: [N, 3] corresponding points
    :param with_scale: False fixes ``s`` = 1 (rigid alignment)
    :return: (s, R [3, 3], t [3])
    :raises ValueError: fewer than 3 points, or all source points equal
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f'umeyama needs two [N >= 3, 3] arrays, got {src.shape} {dst.shape}')
    mu_s, mu_d = src.mean(0), dst.mean(0)
    S, D = src - mu_s, dst - mu_d
    var = float((S ** 2).sum() / len(src))
    if var <= 1e-18:
        raise ValueError('umeyama: the source points do not move')
    U, sig, Vt = np.linalg.svd(D.T @ S / len(src))
    W = np.eye(3)
    W[2, 2] = np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0
    R = U @ W @ Vt
    s = float((sig * np.diag(W)).sum() / var) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def ate(est_xyz: np.ndarray, gt_xyz: np.ndarray, align: str = 'sim3') -> Tuple[np.ndarray, float]:
    """Position errors after alignment.

    :param est_xyz: [N, 3] estimated positions
    :param gt_xyz: [N, 3] true positions
    :param align: one of :data:`ALIGNMENTS`
    :return: (errors [N] metres, the Sim(3) scale of the fit, 1 for ``se3``/``none``)
    """
    if align not in ALIGNMENTS:
        raise ValueError(f'align must be one of {ALIGNMENTS}, got {align!r}')
    est = np.asarray(est_xyz, np.float64)
    s = 1.0
    if align != 'none':
        s, R, t = umeyama(est, gt_xyz, with_scale=align == 'sim3')
        est = s * est @ R.T + t
    return np.linalg.norm(est - gt_xyz, axis=1), s


def score_trajectory(est_stamps_ns: Sequence[int], est_T: np.ndarray,
                     gt_stamps_ns: Sequence[int], gt_T: np.ndarray,
                     align: str = 'sim3') -> TrajectoryScore:
    """Score an estimated trajectory against ground truth.

    :param est_stamps_ns: int [N] stamps of the estimate
    :param est_T: [N, 4, 4] estimated T_world_cam
    :param gt_stamps_ns: int [M] stamps of the ground truth
    :param gt_T: [M, 4, 4] true T_world_cam (interpolated at the estimate's stamps)
    :param align: one of :data:`ALIGNMENTS`
    :raises ValueError: fewer than 3 estimated poses inside the ground truth's time span
    """
    table = PoseTable(np.asarray(gt_stamps_ns, np.int64), np.asarray(gt_T, np.float64))
    pairs = [(T[:3, 3], g[:3, 3]) for T, g in
             ((T, table.at(int(s))) for s, T in zip(est_stamps_ns, est_T)) if g is not None]
    if len(pairs) < 3:
        raise ValueError(f'only {len(pairs)} estimated poses lie inside the ground truth')
    est, gt = (np.array(v) for v in zip(*pairs))
    err, _ = ate(est, gt, align)
    size = _size_ratio(est, gt)
    half = len(est) // 2
    drift = (_size_ratio(est[half:], gt[half:]) / _size_ratio(est[:half], gt[:half]) - 1.0
             if half >= 3 else float('nan'))
    return TrajectoryScore(len(est), align, float(np.sqrt(np.mean(err ** 2))), float(err.max()),
                           size, abs(size - 1.0), float(drift),
                           float(np.linalg.norm(np.diff(gt, axis=0), axis=1).sum()))


def _size_ratio(est: np.ndarray, gt: np.ndarray) -> float:
    """Estimate size over true size (1 / the Sim(3) scale onto the truth); NaN if degenerate."""
    try:
        s, _, _ = umeyama(est, gt, with_scale=True)
    except ValueError:
        return float('nan')
    return 1.0 / s if s > 0 else float('nan')


def read_trajectory(path: str, world_frame: Optional[str] = None
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Poses of a TUM file, or of the camera in a rosbag2 (TF at every image stamp).

    :param path: TUM trajectory file, or a bag (directory, .mcap, .db3)
    :param world_frame: bags: the fixed frame (default: the root of the camera's tree)
    :return: (stamps int64 [N] ns, T_world_cam float64 [N, 4, 4])
    """
    from l3rocc_core.convert import stamp_to_ns
    from l3rocc_core.tf_tree import TransformBuffer, TransformUnavailable
    if os.path.isfile(path) and not path.endswith(('.mcap', '.db3')):
        return load_tum_trajectory(path)
    source = open_source(path, intrinsics='hfov=60')   # (no camera model needed here)
    if not isinstance(source, BagSource):
        source.close()
        raise ValueError(f'{path}: neither a TUM trajectory nor a rosbag2')
    buffer = TransformBuffer(cache_time_s=1e6)
    images: List[Tuple[int, str]] = []
    with source:
        for ev in source:
            if ev.role in ('tf', 'tf_static'):
                buffer.add_tf_message(ev.msg, static=ev.role == 'tf_static')
            elif ev.role in ('image', 'compressed'):
                images.append((stamp_to_ns(ev.msg.header.stamp), ev.msg.header.frame_id))
    stamps, poses = [], []
    for stamp, frame in images:
        root = world_frame or _root(buffer, frame)
        try:
            poses.append(buffer.lookup(root, frame, stamp))
            stamps.append(stamp)
        except TransformUnavailable:
            continue
    if not stamps:
        raise ValueError(f'{path}: no camera pose in its /tf at the image stamps')
    return np.asarray(stamps, np.int64), np.stack(poses)


def _root(buffer, frame: str) -> str:
    while buffer.parent_of(frame) is not None:
        frame = buffer.parent_of(frame)
    return frame


def main(argv: Optional[List[str]] = None) -> int:
    """Score a trajectory file against ground truth; print the score as JSON."""
    parser = argparse.ArgumentParser(prog='python -m l3rocc_core.metrics_trajectory',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('estimate', help='TUM trajectory (e.g. trajectory.tum of replay)')
    parser.add_argument('ground_truth', help='TUM trajectory, or a rosbag2 with /tf')
    parser.add_argument('--align', choices=ALIGNMENTS, default='sim3')
    parser.add_argument('--world-frame', help='bags: fixed frame (default: the tree root)')
    args = parser.parse_args(argv)
    try:
        est = load_tum_trajectory(args.estimate)
        gt = read_trajectory(args.ground_truth, args.world_frame)
        score = score_trajectory(est[0], est[1], gt[0], gt[1], args.align)
    except (OSError, ValueError, SourceError) as exc:
        print(f'metrics_trajectory: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(asdict(score), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
