"""Occupancy and depth metrics: the contract's scoring rule and ground truth from depth + poses.

Scoring rule (../shared/CONTRACT.md, like Occ3D): per slice, IoU, precision and recall of occupied
voxels against ground truth, counted only over voxels the camera observed (traversed by a ray up to
and including the first surface hit)::

    TP = pred & gt & observed    FP = pred & ~gt & observed    FN = ~pred & gt & observed
    IoU = TP / (TP + FP + FN)    precision = TP / (TP + FP)    recall = TP / (TP + FN)

A ratio with an empty denominator is NaN (nothing to score) and is left out of means.

- Newest slice: row n of an ``occupancy.npz`` is the newest slice when frame n was newest; the
  sequence figures ``iou``/``precision``/``recall`` are means over rows.
- Window: every slice of a pipeline window (:class:`~l3rocc_core.occupancy.Occupancy4D`) scored
  against the ground truth at that slice's time, averaged over the window, then over pushes.
- Flicker: for consecutive rows n-1, n, the share of static voxels observed in both whose predicted
  state changes; the sequence flicker is the mean over pairs.
- Static / dynamic: when a dynamic mask is given (synthetic ground truth), every count is also
  reported over static (``~dynamic``) and dynamic voxels separately. Dynamic voxels are GT-occupied
  by definition, so there precision is 1 and IoU equals recall: the share of a moving part seen.
- Trail (newest slice, synthetic ground truth): of the observed voxels a moving object left
  within the last ``TRAIL_SPAN`` GT rows (dynamic in one of them, GT-free now), the share still
  predicted occupied. The other half of moving parts: how fast occupancy clears behind them
  (0 = clears at once; lower is better).

Ground truth from depth + poses (:func:`gt_from_depth`): occupied = voxels containing GT surface
points of all frames (static scene); observed per frame = voxels traversed by that frame's GT rays
up to and including the first hit (:mod:`l3rocc_core.raycast`).

Pipeline results (:func:`add_occupancy`, for ``l3rocc bench``): the newest slice as a row and all
slices of the window, each against the GT row at its stamp.

Depth metrics (:func:`depth_metrics`): AbsRel, RMSE, delta < 1.25 over pixels valid in both, and
completeness = share of valid GT pixels with a valid estimate; :func:`reproject_depth` brings GT
depth into the estimate's camera first when their cameras differ.
"""

from dataclasses import dataclass, field
from functools import lru_cache
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import (Occupancy4D, OccupancySequence, csr_masks, load_sequence,
                                   read_csr, unpack_masks)

Array = Union[np.ndarray, torch.Tensor]

#: Prediction rows and ground-truth rows whose stamps differ by more than this do not match.
DEFAULT_STAMP_TOLERANCE_NS = 20_000_000

#: GT rows looked back for voxels a moving object has left (the trail metric): 15 = the rest of
#: a 16-slice window (1-1.5 s at 10-15 fps).
TRAIL_SPAN = 15


class MetricsError(ValueError):
    """Inputs that cannot be scored (shape mismatch, no matching stamps, bad file)."""

    kind = 'bad_metrics_input'


# --------------------------------------------------------------------------------------------
# Confusion counts and per-slice scores
# --------------------------------------------------------------------------------------------

def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den > 0 else math.nan


@dataclass
class Counts:
    """Confusion counts of one slice (or pooled over several), over observed voxels only.

    :param tp: predicted occupied and GT occupied
    :param fp: predicted occupied, GT free
    :param fn: predicted free, GT occupied
    :param n_observed: observed voxels scored
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_observed: int = 0

    @property
    def n_gt(self) -> int:
        """GT-occupied observed voxels (TP + FN)."""
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        """Predicted-occupied observed voxels (TP + FP)."""
        return self.tp + self.fp

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); NaN when there is nothing occupied in either."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN without predicted-occupied voxels."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN without GT-occupied voxels."""
        return _ratio(self.tp, self.tp + self.fn)

    def __add__(self, other: 'Counts') -> 'Counts':
        """Pool two sets of counts."""
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                      self.n_observed + other.n_observed)

    def as_dict(self) -> Dict[str, float]:
        """IoU, precision, recall and the counts as a JSON-friendly dict."""
        return {'iou': self.iou, 'precision': self.precision, 'recall': self.recall,
                'n_observed': self.n_observed, 'n_gt': self.n_gt, 'n_pred': self.n_pred,
                'tp': self.tp, 'fp': self.fp, 'fn': self.fn}


def _as_bool_np(a: Array, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype != bool:
        raise MetricsError(f'{name} must be a bool array, got {a.dtype}')
    return a


def confusion(pred: Array, gt: Array, observed: Array,
              mask: Optional[Array] = None) -> Counts:
    """Confusion counts of occupied voxels over observed voxels (the contract's rule).

    :param pred: bool [...] predicted occupied (e.g. [X, Y, Z])
    :param gt: bool [...] ground-truth occupied, same shape
    :param observed: bool [...] voxels observed by the camera, same shape
    :param mask: bool [...] optional further restriction (e.g. static voxels)
    :return: counts over ``observed & mask``
    """
    pred = _as_bool_np(pred, 'pred')
    gt = _as_bool_np(gt, 'gt')
    obs = _as_bool_np(observed, 'observed')
    if pred.shape != gt.shape or obs.shape != gt.shape:
        raise MetricsError(f'shapes differ: pred {pred.shape}, gt {gt.shape}, observed '
                           f'{obs.shape}')
    if mask is not None:
        mask = _as_bool_np(mask, 'mask')
        if mask.shape != gt.shape:
            raise MetricsError(f'mask shape {mask.shape} != {gt.shape}')
        obs = obs & mask
    p = pred[obs]
    g = gt[obs]
    tp = int(np.count_nonzero(p & g))
    return Counts(tp=tp, fp=int(np.count_nonzero(p)) - tp, fn=int(np.count_nonzero(g)) - tp,
                  n_observed=int(p.size))


@dataclass
class SliceScore:
    """Scores of one slice: all observed voxels, and static / dynamic ones when known."""

    all: Counts
    static: Optional[Counts] = None
    dynamic: Optional[Counts] = None
    vacated: Optional[Counts] = None


def score_slice(pred: Array, gt: Array, observed: Array,
                dynamic: Optional[Array] = None,
                vacated: Optional[Array] = None) -> SliceScore:
    """Score one slice; static and dynamic voxels separately when ``dynamic`` is given.

    :param pred: bool [X, Y, Z] predicted occupied
    :param gt: bool [X, Y, Z] ground-truth occupied
    :param observed: bool [X, Y, Z] observed voxels
    :param dynamic: bool [X, Y, Z] voxels of moving objects (synthetic GT), or None
    :param vacated: bool [X, Y, Z] voxels moving objects have left (GT-free; see
        :meth:`OccupancyTruth.vacated_at`), or None; their FP are the trail
    """
    out = SliceScore(confusion(pred, gt, observed))
    if dynamic is not None:
        dyn = _as_bool_np(dynamic, 'dynamic')
        out.static = confusion(pred, gt, observed, ~dyn)
        out.dynamic = confusion(pred, gt, observed, dyn)
    if vacated is not None:
        out.vacated = confusion(pred, gt, observed, vacated)
    return out


def trail(counts: Optional[Counts]) -> float:
    """Share of vacated observed voxels predicted occupied (FP / scored); NaN when none."""
    return math.nan if counts is None else _ratio(counts.fp, counts.n_observed)


def flicker_counts(prev_pred: Array, pred: Array, prev_observed: Array, observed: Array,
                   dynamic: Optional[Array] = None,
                   prev_dynamic: Optional[Array] = None) -> Tuple[int, int]:
    """Count the static voxels observed in two consecutive slices and those that changed.

    :param prev_pred: bool [X, Y, Z] prediction of the earlier slice
    :param pred: bool [X, Y, Z] prediction of the later slice
    :param prev_observed: bool [X, Y, Z] observed mask of the earlier slice
    :param observed: bool [X, Y, Z] observed mask of the later slice
    :param dynamic: bool [X, Y, Z] dynamic voxels of the later slice (excluded), or None
    :param prev_dynamic: bool [X, Y, Z] dynamic voxels of the earlier slice (excluded), or None
    :return: (voxels whose predicted state changed, voxels counted)
    """
    a = _as_bool_np(prev_pred, 'prev_pred')
    b = _as_bool_np(pred, 'pred')
    keep = _as_bool_np(prev_observed, 'prev_observed') & _as_bool_np(observed, 'observed')
    if a.shape != b.shape or keep.shape != b.shape:
        raise MetricsError(f'shapes differ: {a.shape}, {b.shape}, {keep.shape}')
    for d in (dynamic, prev_dynamic):
        if d is not None:
            keep = keep & ~_as_bool_np(d, 'dynamic')
    return int(np.count_nonzero(a[keep] != b[keep])), int(np.count_nonzero(keep))


def score_window(pred: Array, gt: Array, observed: Array,
                 dynamic: Optional[Array] = None) -> List[SliceScore]:
    """Score every slice of a window against the ground truth at each slice's time.

    :param pred: bool [T, X, Y, Z] predicted occupied (e.g. ``Occupancy4D.prob >= threshold``)
    :param gt: bool [T, X, Y, Z] ground truth at each slice's stamp
    :param observed: bool [T, X, Y, Z] observed masks at each slice's stamp
    :param dynamic: bool [T, X, Y, Z] dynamic voxels, or None
    :return: one score per slice, oldest first
    """
    pred = _as_bool_np(pred, 'pred')
    if pred.ndim != 4:
        raise MetricsError(f'pred must be [T, X, Y, Z], got {pred.shape}')
    return [score_slice(pred[t], gt[t], observed[t], None if dynamic is None else dynamic[t])
            for t in range(pred.shape[0])]


# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------

def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


@dataclass
class _Row:
    stamp_ns: int
    score: SliceScore
    flicker: Tuple[int, int]


@dataclass
class SequenceScorer:
    """Accumulates per-frame scores of a sequence without keeping the grids.

    Call :meth:`add` once per row (newest slice when that frame was newest), in time order;
    optionally :meth:`add_window` once per pipeline push for window-averaged figures.
    """

    rows: List[_Row] = field(default_factory=list)
    windows: List[List[SliceScore]] = field(default_factory=list)
    _prev: Optional[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]] = None

    def add(self, stamp_ns: int, pred: Array, gt: Array, observed: Array,
            dynamic: Optional[Array] = None, vacated: Optional[Array] = None) -> SliceScore:
        """Score one row and its flicker against the previous row.

        :param stamp_ns: the row's stamp
        :param pred: bool [X, Y, Z] predicted occupied
        :param gt: bool [X, Y, Z] ground-truth occupied at that stamp
        :param observed: bool [X, Y, Z] observed mask at that stamp
        :param dynamic: bool [X, Y, Z] dynamic voxels, or None
        :param vacated: bool [X, Y, Z] voxels moving objects have left (the trail), or None
        """
        pred = _as_bool_np(pred, 'pred')
        observed = _as_bool_np(observed, 'observed')
        dyn = None if dynamic is None else _as_bool_np(dynamic, 'dynamic')
        score = score_slice(pred, gt, observed, dyn, vacated)
        flick = (0, 0)
        if self._prev is not None:
            p_pred, p_obs, p_dyn = self._prev
            flick = flicker_counts(p_pred, pred, p_obs, observed, dyn, p_dyn)
        self._prev = (pred, observed, dyn)
        self.rows.append(_Row(int(stamp_ns), score, flick))
        return score

    def add_window(self, pred: Array, gt: Array, observed: Array,
                   dynamic: Optional[Array] = None) -> List[SliceScore]:
        """Score all slices of one pipeline window (see :func:`score_window`)."""
        scores = score_window(pred, gt, observed, dynamic)
        self.windows.append(scores)
        return scores

    def per_frame(self) -> List[Dict[str, float]]:
        """One dict per row: stamp, iou, precision, recall, n_observed, n_gt, n_pred, flicker.

        Static/dynamic figures appear as ``static_iou`` ... when a dynamic mask was given.
        """
        out = []
        for r in self.rows:
            c = r.score.all
            row = {'stamp': r.stamp_ns, 'iou': c.iou, 'precision': c.precision,
                   'recall': c.recall, 'n_observed': c.n_observed, 'n_gt': c.n_gt,
                   'n_pred': c.n_pred,
                   'flicker': _ratio(*r.flicker) if r.flicker[1] else math.nan}
            for name in ('static', 'dynamic'):
                part = getattr(r.score, name)
                if part is not None:
                    row.update({f'{name}_iou': part.iou, f'{name}_precision': part.precision,
                                f'{name}_recall': part.recall,
                                f'{name}_n_observed': part.n_observed})
            if r.score.vacated is not None:
                row.update(trail=trail(r.score.vacated),
                           vacated_n_observed=r.score.vacated.n_observed)
            out.append(row)
        return out

    def summary(self) -> Dict[str, Optional[float]]:
        """Sequence figures (NaN where nothing could be scored).

        - ``iou``, ``precision``, ``recall``: means over rows of the newest-slice scores;
        - ``flicker``: mean over consecutive row pairs;
        - ``pooled_iou`` ...: from counts summed over all rows;
        - ``static_*`` / ``dynamic_*``: the same over static / dynamic voxels when known;
        - ``trail``, ``pooled_trail``: mean over rows / pooled share of vacated voxels still
          predicted occupied, when vacated masks were given;
        - ``window_iou``, ``window_precision``, ``window_recall``: mean over pushes of the
          window-averaged scores (None when no window was added);
        - ``frames``: rows scored.
        """
        out: Dict[str, Optional[float]] = {}
        parts = [('', lambda s: s.all)]
        if self.rows and self.rows[-1].score.static is not None:
            parts += [('static_', lambda s: s.static), ('dynamic_', lambda s: s.dynamic)]
        for prefix, get in parts:
            counts = [get(r.score) for r in self.rows if get(r.score) is not None]
            for metric in ('iou', 'precision', 'recall'):
                out[prefix + metric] = _nanmean(getattr(c, metric) for c in counts)
            pooled = sum(counts, Counts())
            for metric in ('iou', 'precision', 'recall'):
                out[f'{prefix}pooled_{metric}'] = getattr(pooled, metric)
        out['flicker'] = _nanmean(_ratio(*r.flicker) for r in self.rows[1:] if r.flicker[1])
        vacated = [r.score.vacated for r in self.rows if r.score.vacated is not None]
        if vacated:
            out['trail'] = _nanmean(trail(c) for c in vacated)
            out['pooled_trail'] = trail(sum(vacated, Counts()))
        for metric in ('iou', 'precision', 'recall'):
            if self.windows:
                out['window_' + metric] = _nanmean(
                    _nanmean(getattr(s.all, metric) for s in w) for w in self.windows)
                if self.windows[-1][-1].static is not None:
                    for name in ('static', 'dynamic'):
                        out[f'window_{name}_{metric}'] = _nanmean(
                            _nanmean(getattr(getattr(s, name), metric) for s in w)
                            for w in self.windows)
            else:
                out['window_' + metric] = None
        out['frames'] = len(self.rows)
        return out


# --------------------------------------------------------------------------------------------
# Grids and stamps
# --------------------------------------------------------------------------------------------

def same_grid(a: VoxelGrid, b: VoxelGrid, rel_tol: float = 1e-6) -> bool:
    """Whether two grids have the same dims, voxel size and origin (to ``rel_tol`` voxels)."""
    if tuple(a.dims) != tuple(b.dims):
        return False
    if abs(a.voxel_size - b.voxel_size) > rel_tol * b.voxel_size:
        return False
    d = np.abs(np.asarray(a.origin) - np.asarray(b.origin))
    return bool(np.all(d <= rel_tol * b.voxel_size + 1e-12))


class GridResampler:
    """Maps dense bool grids of ``src`` onto ``dst`` by world position of ``dst``'s voxel centres.

    Each ``dst`` voxel takes the value of the ``src`` voxel that contains its centre; ``dst``
    voxels whose centre lies outside ``src`` take ``fill`` (False: not predicted occupied).
    Identical grids are the fast path (no copy).

    :param src: grid of the arrays passed in (e.g. the prediction's)
    :param dst: grid of the arrays returned (e.g. the ground truth's)
    """

    def __init__(self, src: VoxelGrid, dst: VoxelGrid):
        """Precompute the index map once (int64 per ``dst`` voxel)."""
        self.src = src
        self.dst = dst
        self.identity = same_grid(src, dst)
        self._index: Optional[np.ndarray] = None
        self._inside: Optional[np.ndarray] = None
        if not self.identity:
            flat_dst = np.arange(dst.num_voxels, dtype=np.int64)
            flat_src, inside = src.world_to_flat(dst.flat_to_world(flat_dst))
            self._index = flat_src
            self._inside = inside

    def __call__(self, src_values: Array, fill: bool = False) -> np.ndarray:
        """Resample one grid.

        :param src_values: bool [X, Y, Z] on ``src``
        :param fill: value of ``dst`` voxels outside ``src``
        :return: bool [X', Y', Z'] on ``dst``
        """
        v = _as_bool_np(src_values, 'src_values')
        if v.shape != tuple(self.src.dims):
            raise MetricsError(f'array shape {v.shape} != source grid {self.src.dims}')
        if self.identity:
            return v
        out = v.reshape(-1)[self._index]
        out = np.where(self._inside, out, fill)
        return out.reshape(self.dst.dims)

    @property
    def coverage(self) -> float:
        """Share of ``dst`` voxels whose centre lies inside ``src``."""
        return 1.0 if self.identity else float(self._inside.mean())


def match_stamps(query_ns: Sequence[int], reference_ns: Sequence[int],
                 tolerance_ns: int = DEFAULT_STAMP_TOLERANCE_NS) -> np.ndarray:
    """Index of the nearest reference stamp for each query stamp.

    :param query_ns: int64 [N] stamps to match (e.g. prediction rows)
    :param reference_ns: int64 [M] stamps (e.g. GT rows), any order
    :param tolerance_ns: largest admissible difference
    :return: int64 [N], -1 where no reference stamp is within ``tolerance_ns``
    """
    q = np.asarray(query_ns, dtype=np.int64)
    r = np.asarray(reference_ns, dtype=np.int64)
    if r.size == 0:
        return np.full(q.shape, -1, np.int64)
    order = np.argsort(r, kind='stable')
    rs = r[order]
    pos = np.clip(np.searchsorted(rs, q), 1, max(1, len(rs) - 1))
    lo = np.clip(pos - 1, 0, len(rs) - 1)
    hi = np.clip(pos, 0, len(rs) - 1)
    pick = np.where(np.abs(rs[lo] - q) <= np.abs(rs[hi] - q), lo, hi)
    best = order[pick]
    ok = np.abs(r[best] - q) <= tolerance_ns
    return np.where(ok, best, -1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Ground truth from depth + poses
# --------------------------------------------------------------------------------------------

@dataclass
class OccupancyTruth:
    """Ground truth on one grid: per-row occupancy, observed masks, optional dynamic masks.

    :param grid: the GT grid
    :param stamps_ns: int64 [M]
    :param occupied: bool [M, X, Y, Z], or bool [X, Y, Z] for a static scene (same every row)
    :param observed: bool [M, X, Y, Z]
    :param dynamic: bool [M, X, Y, Z] or None
    """

    grid: VoxelGrid
    stamps_ns: np.ndarray
    occupied: np.ndarray
    observed: np.ndarray
    dynamic: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        """Check shapes on entry."""
        m = len(self.stamps_ns)
        dims = tuple(self.grid.dims)
        if self.observed.shape != (m,) + dims:
            raise MetricsError(f'observed shape {self.observed.shape} != {(m,) + dims}')
        if self.occupied.shape not in (dims, (m,) + dims):
            raise MetricsError(f'occupied shape {self.occupied.shape} != {dims} or '
                               f'{(m,) + dims}')
        if self.dynamic is not None and self.dynamic.shape != (m,) + dims:
            raise MetricsError(f'dynamic shape {self.dynamic.shape} != {(m,) + dims}')

    def occupied_at(self, m: int) -> np.ndarray:
        """Return the GT occupancy of row ``m`` (bool [X, Y, Z])."""
        return self.occupied if self.occupied.ndim == 3 else self.occupied[m]

    def dynamic_at(self, m: int) -> Optional[np.ndarray]:
        """Return the dynamic voxels of row ``m`` (bool [X, Y, Z]), or None."""
        return None if self.dynamic is None else self.dynamic[m]

    def vacated_at(self, m: int, span: int = TRAIL_SPAN) -> Optional[np.ndarray]:
        """Return the voxels moving objects have left by row ``m``, or None without dynamic masks.

        Dynamic in one of the ``span`` rows before ``m`` (by stamp) and GT-free at ``m``.

        :return: bool [X, Y, Z] or None
        """
        if self.dynamic is None:
            return None
        earlier = np.flatnonzero(self.stamps_ns < self.stamps_ns[m])
        earlier = earlier[np.argsort(self.stamps_ns[earlier], kind='stable')][-span:]
        if earlier.size == 0:
            return np.zeros(tuple(self.grid.dims), bool)
        return np.any(self.dynamic[earlier], axis=0) & ~self.occupied_at(m)


def gt_from_depth(frames_depth: Sequence[Array],
                  cameras: Union[PinholeCamera, Sequence[PinholeCamera]],
                  T_world_cams: Sequence[Array], grid: VoxelGrid, max_depth: float,
                  stride: int = 2, observe: Optional[Sequence[int]] = None,
                  device: Union[str, torch.device, None] = None,
                  progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Ground-truth occupancy and per-frame observed masks of a static scene from GT depth.

    Occupied = voxels containing a GT surface point (every valid pixel, depth <= ``max_depth``)
    of ANY frame; observed[n] = voxels traversed by frame n's rays up to and including the first
    hit (every ``stride``-th pixel in x and y), via :func:`l3rocc_core.raycast.cast_depth`.
    Pixels without a reading (0) or beyond ``max_depth`` observe nothing.

    :param frames_depth: N depth maps float [H, W], metres along the optical axis, 0 = none
    :param cameras: the undistorted pinhole model of the depth maps (one, or one per frame)
    :param T_world_cams: N float64 [4, 4] camera-to-world poses of the depth maps
    :param grid: the voxel grid (frame of the poses)
    :param max_depth: metres
    :param stride: pixel stride of the ray traversal (observed masks); surface points always
        use every pixel
    :param observe: indices of the frames whose observed masks are wanted (default all); the
        other frames only add surface points
    :param device: torch device of the ray casting (default CPU)
    :param progress: show a tqdm bar
    :return: (occupied bool [X, Y, Z], observed bool [len(observe) or N, X, Y, Z])
    """
    from l3rocc_core.raycast import cast_depth
    n = len(frames_depth)
    if len(T_world_cams) != n:
        raise MetricsError(f'{n} depth maps but {len(T_world_cams)} poses')
    cams = [cameras] * n if isinstance(cameras, PinholeCamera) else list(cameras)
    if len(cams) != n:
        raise MetricsError(f'{n} depth maps but {len(cams)} cameras')
    want = list(range(n)) if observe is None else [int(i) for i in observe]
    if any(not 0 <= i < n for i in want):
        raise MetricsError(f'observe indices {want} outside 0..{n - 1}')
    slot = {i: k for k, i in enumerate(want)}
    occupied = torch.zeros(grid.num_voxels, dtype=torch.bool)
    observed = np.zeros((len(want), grid.num_voxels), bool)
    frames = range(n)
    if progress:
        from tqdm import tqdm
        frames = tqdm(frames, desc='ground truth', unit='frame')
    for i in frames:
        # Hits use every pixel whatever the stride, so frames whose observed mask is not
        # wanted are traversed with a coarse stride only.
        res = cast_depth(grid, frames_depth[i], cams[i], T_world_cams[i], max_depth,
                         ray_stride=stride if i in slot else 64, device=device)
        occupied |= (res.hits > 0).cpu()
        if i in slot:
            observed[slot[i]] |= res.observed.cpu().numpy()
    return (occupied.numpy().reshape(grid.dims),
            observed.reshape((len(want),) + tuple(grid.dims)))


def ground_truth_from_tum(path: Optional[str], grid: VoxelGrid,
                          stamps_ns: Optional[Sequence[int]] = None, max_depth: float = 4.0,
                          stride: int = 2, tolerance_ns: int = DEFAULT_STAMP_TOLERANCE_NS,
                          device: Union[str, torch.device, None] = None,
                          progress: bool = False, depth_model: str = 'tum') -> OccupancyTruth:
    """Ground truth of a TUM RGB-D folder on ``grid`` (static scene, GT depth + GT poses).

    Occupancy uses the depth of every frame of the folder; observed masks are built for the
    frames matched to ``stamps_ns`` (nearest colour-image stamp within ``tolerance_ns``), or for
    every frame. Each depth map is cast from the GT pose at its own stamp, with TUM's model of
    the registered depth images (``datasets.tum.TUM_DEPTH_CAMERA``) by default.

    :param path: the folder (None: the bundled fr1/xyz, see ``datasets.tum.default_tum_dir``)
    :param grid: the grid to build the ground truth on (e.g. the prediction's)
    :param stamps_ns: prediction stamps, or None for all frames
    :param max_depth: metres (see :func:`gt_from_depth`)
    :param stride: pixel stride of the observed-mask traversal
    :param depth_model: how the depth pixels are read (``datasets.tum.tum_depth_maps``): 'tum'
        (TUM's depth model) or 'colour' (the colour camera's pixels)
    :return: GT whose rows are the matched TUM frames (row stamps = TUM colour-image stamps)
    :raises MetricsError: when no stamp matches a TUM frame
    """
    from l3rocc_core.datasets.tum import load_tum, tum_depth_maps
    seq = load_tum(path)
    if not seq.frames:
        raise MetricsError(f'{seq.path}: no TUM frames with depth and pose')
    tum_stamps = np.asarray([f.stamp_ns for f in seq.frames], np.int64)
    if stamps_ns is None:
        rows = np.arange(len(seq.frames))
    else:
        match = match_stamps(stamps_ns, tum_stamps, tolerance_ns)
        rows = np.unique(match[match >= 0])
        if rows.size == 0:
            raise MetricsError(f'no prediction stamp is within {tolerance_ns / 1e6:.1f} ms of a '
                               f'TUM frame of {seq.path}')
    depths, camera = tum_depth_maps(seq, depth_model)
    occupied, observed = gt_from_depth(
        depths, camera, [f.T_world_depth for f in seq.frames], grid, max_depth, stride=stride,
        observe=rows, device=device, progress=progress)
    return OccupancyTruth(grid, tum_stamps[rows], occupied, observed)


# --------------------------------------------------------------------------------------------
# Scoring occupancy files
# --------------------------------------------------------------------------------------------

def ground_truth_from_file(path: str) -> OccupancyTruth:
    """Load a GT occupancy file (contract npz; rows = per-frame GT occupancy).

    ``visible_packed`` (required here) gives the observed masks. A dynamic mask is read when the
    file has ``dynamic_packed`` (np.packbits of bool [N, X, Y, Z]) or CSR rows
    ``dynamic_indptr``/``dynamic_indices`` (flat voxel indices per row).

    :raises MetricsError: without observed masks
    :raises OccupancyFileError: with inconsistent keys (dynamic ones included)
    """
    seq = load_sequence(path)
    if seq.visible is None:
        raise MetricsError(f'{path}: a GT occupancy file needs visible_packed (observed masks)')
    rows, dims = len(seq), seq.grid.dims
    dynamic = None
    with np.load(path, allow_pickle=False) as z:
        if 'dynamic_packed' in z.files:
            dynamic = unpack_masks(z['dynamic_packed'], rows, dims, f'{path}: dynamic_packed')
        elif 'dynamic_indptr' in z.files and 'dynamic_indices' in z.files:
            dynamic = csr_masks(*read_csr(z, 'dynamic_indptr', 'dynamic_indices', rows,
                                          seq.grid.num_voxels, path), dims)
    return OccupancyTruth(seq.grid, seq.stamps_ns, seq.occupied_masks(), seq.visible, dynamic)


@lru_cache(maxsize=8)
def _resampler(src: VoxelGrid, dst: VoxelGrid) -> GridResampler:
    return GridResampler(src, dst)


def add_occupancy(scorer: SequenceScorer, occ: Occupancy4D, gt: OccupancyTruth,
                  tolerance_ns: int = DEFAULT_STAMP_TOLERANCE_NS, newest: bool = True,
                  window: bool = True) -> None:
    """Score one pipeline result: its newest slice as a row and all its slices as a window.

    For ``l3rocc bench``, which runs the pipeline itself: call once per ``push`` result. Each
    slice is matched to the GT row nearest its stamp (slices without one are left out of the
    window; a newest slice without one adds no row) and resampled onto the GT grid (a
    camera-anchored grid moves, so the resampler is cached per grid pair).

    :param scorer: the accumulator
    :param occ: the pipeline's :class:`~l3rocc_core.occupancy.Occupancy4D`
    :param gt: ground truth covering the stamps
    :param newest: add the newest slice as a row (:meth:`SequenceScorer.add`)
    :param window: add every slice as a window (:meth:`SequenceScorer.add_window`)
    """
    match = match_stamps(occ.stamps_ns, gt.stamps_ns, tolerance_ns)
    resample = _resampler(occ.grid, gt.grid)
    pred = occ.prob >= occ.threshold
    if newest and match[-1] >= 0:
        m = int(match[-1])
        scorer.add(occ.newest_stamp_ns, resample(pred[-1]), gt.occupied_at(m), gt.observed[m],
                   gt.dynamic_at(m), gt.vacated_at(m))
    keep = np.flatnonzero(match >= 0)
    if window and keep.size:
        rows = match[keep]
        dyn = None if gt.dynamic is None else gt.dynamic[rows]
        scorer.add_window(np.stack([resample(pred[t]) for t in keep]),
                          np.stack([gt.occupied_at(int(m)) for m in rows]), gt.observed[rows],
                          dyn)


def score_sequence(pred: OccupancySequence, gt: OccupancyTruth,
                   tolerance_ns: int = DEFAULT_STAMP_TOLERANCE_NS,
                   progress: bool = False) -> SequenceScorer:
    """Score every row of a predicted occupancy file against ground truth.

    Rows are matched to GT rows by nearest stamp (within ``tolerance_ns``); unmatched rows are
    skipped. The prediction is resampled onto the GT grid when the grids differ.

    :param pred: the prediction (``load_sequence``)
    :param gt: the ground truth
    :param progress: show a tqdm bar
    :raises MetricsError: when no row matches
    """
    match = match_stamps(pred.stamps_ns, gt.stamps_ns, tolerance_ns)
    if not np.any(match >= 0):
        raise MetricsError('no prediction stamp matches a ground-truth stamp within '
                           f'{tolerance_ns / 1e6:.1f} ms')
    resample = GridResampler(pred.grid, gt.grid)
    scorer = SequenceScorer()
    rows = range(len(pred))
    if progress:
        from tqdm import tqdm
        rows = tqdm(rows, desc='scoring', unit='frame')
    for n in rows:
        m = int(match[n])
        if m < 0:
            continue
        p = resample(pred.occupied_mask(n))
        scorer.add(int(pred.stamps_ns[n]), p, gt.occupied_at(m), gt.observed[m], gt.dynamic_at(m),
                   gt.vacated_at(m))
    return scorer


# --------------------------------------------------------------------------------------------
# Depth metrics
# --------------------------------------------------------------------------------------------

def depth_metrics(pred: Array, gt: Array, valid: Optional[Array] = None,
                  max_depth: Optional[float] = None) -> Dict[str, float]:
    """Depth error of an estimate against GT depth.

    A GT pixel is valid where ``gt > 0`` and finite (and ``<= max_depth`` when given, and
    ``valid`` when given); an estimated pixel is valid where ``pred > 0`` and finite.

    :param pred: float [H, W] estimated depth in metres (0 = invalid)
    :param gt: float [H, W] GT depth in metres (0 = no reading)
    :param valid: bool [H, W] validity of the estimate (e.g. ``DepthResult.valid``), or None
    :param max_depth: ignore GT beyond this many metres, or None
    :return: ``abs_rel`` (mean |d - d*| / d*), ``rmse`` (m), ``delta_1_25`` (share with
        max(d/d*, d*/d) < 1.25), ``median_abs_rel``, ``completeness`` (share of valid GT pixels
        with a valid estimate), ``n_valid`` (pixels valid in both), ``n_gt`` (valid GT pixels)
    """
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
    if p.shape != g.shape or p.ndim != 2:
        raise MetricsError(f'depth shapes must be equal [H, W]: pred {p.shape}, gt {g.shape}')
    p = p.astype(np.float64)
    g = g.astype(np.float64)
    g_ok = np.isfinite(g) & (g > 0)
    if max_depth is not None:
        g_ok &= g <= max_depth
    p_ok = np.isfinite(p) & (p > 0)
    if valid is not None:
        v = _as_bool_np(valid, 'valid')
        if v.shape != p.shape:
            raise MetricsError(f'valid shape {v.shape} != {p.shape}')
        p_ok &= v
    both = g_ok & p_ok
    n_gt = int(g_ok.sum())
    n = int(both.sum())
    out = {'n_valid': n, 'n_gt': n_gt, 'completeness': _ratio(n, n_gt)}
    if n == 0:
        out.update(abs_rel=math.nan, median_abs_rel=math.nan, rmse=math.nan,
                   delta_1_25=math.nan)
        return out
    d, d_gt = p[both], g[both]
    rel = np.abs(d - d_gt) / d_gt
    ratio = np.maximum(d / d_gt, d_gt / d)
    out.update(abs_rel=float(rel.mean()), median_abs_rel=float(np.median(rel)),
               rmse=float(np.sqrt(np.mean((d - d_gt) ** 2))),
               delta_1_25=float(np.mean(ratio < 1.25)))
    return out


def reproject_depth(depth: Array, camera: PinholeCamera, T_world_cam: Array,
                    target: PinholeCamera, T_world_target: Array) -> np.ndarray:
    """GT depth seen from another camera (e.g. the estimate's working-resolution camera).

    Every valid pixel is back-projected, moved into ``target`` and splatted to its nearest
    pixel; where several land on one pixel the nearest wins (z-buffer). Pixels no point lands
    on are 0. Use it before :func:`depth_metrics` when the estimate and the GT depth have
    different intrinsics, resolutions or stamps (TUM: registered depth model vs the undistorted
    colour camera at ``working_width``).

    :param depth: float [H, W] metres (z), 0 = none
    :param camera: undistorted pinhole model of ``depth``
    :param T_world_cam: float [4, 4] pose of ``depth``'s camera (camera to world)
    :param target: the camera to render into
    :param T_world_target: float [4, 4] pose of ``target``
    :return: float32 [target.height, target.width] metres, 0 = no GT
    """
    d = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    if d.shape != (camera.height, camera.width):
        raise MetricsError(f'depth shape {d.shape} does not match camera '
                           f'{camera.width}x{camera.height}')
    ok = np.isfinite(d) & (d > 0)
    p_cam = camera.pixel_rays()[ok] * d[ok][:, None]
    T_t_c = np.linalg.inv(np.asarray(T_world_target, np.float64)) @ np.asarray(
        T_world_cam, np.float64)
    p_t = p_cam @ T_t_c[:3, :3].T + T_t_c[:3, 3]
    uv, z = target.project(p_t)
    u = np.round(uv[:, 0]).astype(np.int64)
    v = np.round(uv[:, 1]).astype(np.int64)
    keep = (z > 1e-6) & (u >= 0) & (u < target.width) & (v >= 0) & (v < target.height)
    flat = torch.from_numpy(v[keep] * target.width + u[keep])
    out = torch.full((target.height * target.width,), float('inf'))
    out.scatter_reduce_(0, flat, torch.from_numpy(z[keep].astype(np.float32)), reduce='amin')
    out[torch.isinf(out)] = 0.0
    return out.numpy().reshape(target.height, target.width)
