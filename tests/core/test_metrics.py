"""Scoring rule, GT from depth, depth metrics, ``l3rocc eval`` and the TUM sanity check."""

import json
import math

import numpy as np
import pytest
import torch

from l3rocc_core import metrics as M
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.cli import main as cli_main
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import (OccupancyFileError, OccupancySequence, load_sequence,
                                   save_sequence)
from l3rocc_core.raycast import cast_depth


def _b(*values: int) -> np.ndarray:
    return np.asarray(values, bool).reshape(1, 1, -1)


def test_confusion_hand_computed_and_observed_masking():
    pred = _b(1, 1, 0, 0, 1, 1, 1, 0)
    gt = _b(1, 0, 1, 0, 1, 0, 0, 1)
    obs = _b(1, 1, 1, 1, 1, 1, 0, 0)     # the last two voxels are not observed
    c = M.confusion(pred, gt, obs)
    # observed: tp at 0 and 4, fp at 1 and 5, fn at 2; voxel 6 (fp) and 7 (fn) are unobserved.
    assert (c.tp, c.fp, c.fn, c.n_observed) == (2, 2, 1, 6)
    assert c.iou == pytest.approx(2 / 5)
    assert c.precision == pytest.approx(2 / 4)
    assert c.recall == pytest.approx(2 / 3)
    assert (c.n_gt, c.n_pred) == (3, 4)
    full = M.confusion(pred, gt, np.ones_like(obs))
    assert full.iou == pytest.approx(2 / 7)
    # Nothing occupied anywhere: every ratio is NaN (left out of means), not 0 or 1.
    empty = M.confusion(np.zeros_like(pred), np.zeros_like(gt), obs)
    assert math.isnan(empty.iou) and math.isnan(empty.precision) and math.isnan(empty.recall)
    # Torch input is accepted; non-bool input is refused.
    assert M.confusion(torch.from_numpy(pred), gt, obs).tp == 2
    with pytest.raises(M.MetricsError):
        M.confusion(pred.astype(np.uint8), gt, obs)
    with pytest.raises(M.MetricsError):
        M.confusion(pred, gt[..., :4], obs)


def test_static_dynamic_split():
    pred = _b(1, 1, 0, 1)
    gt = _b(1, 0, 1, 1)
    obs = _b(1, 1, 1, 1)
    dyn = _b(0, 0, 1, 1)
    s = M.score_slice(pred, gt, obs, dyn)
    assert (s.static.tp, s.static.fp, s.static.fn) == (1, 1, 0)
    assert (s.dynamic.tp, s.dynamic.fp, s.dynamic.fn) == (1, 0, 1)
    assert s.all.iou == pytest.approx(2 / 4)
    assert s.static.iou == pytest.approx(1 / 2) and s.dynamic.iou == pytest.approx(1 / 2)


def test_sequence_scores_and_flicker():
    gt = _b(1, 1, 0, 0, 0, 0)
    obs_all = _b(1, 1, 1, 1, 1, 1)
    rows = [
        (_b(1, 1, 0, 0, 0, 0), obs_all),              # perfect
        (_b(1, 0, 1, 0, 0, 0), _b(1, 1, 1, 1, 0, 0)),  # 2 of the 4 commonly observed change
        (_b(1, 0, 1, 0, 0, 1), obs_all),              # voxel 5 changed but was unobserved before
    ]
    scorer = M.SequenceScorer()
    for n, (pred, obs) in enumerate(rows):
        scorer.add(n * 100, pred, gt, obs)
    per = scorer.per_frame()
    assert [r['stamp'] for r in per] == [0, 100, 200]
    assert per[0]['iou'] == 1.0 and math.isnan(per[0]['flicker'])
    assert per[1]['iou'] == pytest.approx(1 / 3)
    assert per[1]['flicker'] == pytest.approx(2 / 4)
    assert per[2]['iou'] == pytest.approx(1 / 4)
    assert per[2]['flicker'] == pytest.approx(0 / 4)
    s = scorer.summary()
    assert s['iou'] == pytest.approx((1 + 1 / 3 + 1 / 4) / 3)
    assert s['flicker'] == pytest.approx((0.5 + 0.0) / 2)
    assert s['pooled_iou'] == pytest.approx((2 + 1 + 1) / (2 + 3 + 4))
    assert s['window_iou'] is None and s['frames'] == 3
    # Dynamic voxels are left out of flicker.
    dyn_scorer = M.SequenceScorer()
    dyn = _b(0, 1, 1, 0, 0, 0)
    for n, (pred, obs) in enumerate(rows[:2]):
        dyn_scorer.add(n, pred, gt, obs, dyn)
    assert dyn_scorer.per_frame()[1]['flicker'] == pytest.approx(0 / 2)
    assert 'static_iou' in dyn_scorer.summary()


def test_window_average():
    gt = np.stack([_b(1, 0, 0), _b(0, 1, 0)])
    obs = np.ones_like(gt)
    pred = np.stack([_b(1, 0, 0), _b(0, 1, 1)])
    scorer = M.SequenceScorer()
    scores = scorer.add_window(pred, gt, obs)
    assert [s.all.iou for s in scores] == [1.0, 0.5]
    assert scorer.summary()['window_iou'] == pytest.approx(0.75)


def test_match_stamps():
    ref = np.array([1000, 3000, 2000], np.int64)
    q = np.array([990, 2600, 5000, 1990], np.int64)
    assert list(M.match_stamps(q, ref, tolerance_ns=500)) == [0, 1, -1, 2]
    assert list(M.match_stamps(q, ref[:0])) == [-1] * 4


def test_grid_resampler_identity_shift_and_finer():
    coarse = VoxelGrid((0.0, 0.0, 0.0), 0.1, (4, 3, 2))
    assert M.GridResampler(coarse, coarse).identity
    rng = np.random.default_rng(0)
    src = rng.random(coarse.dims) > 0.5
    # A grid shifted by one voxel in x: dst voxel i is src voxel i + 1 (last one outside).
    shifted = coarse.shifted((1, 0, 0))
    out = M.GridResampler(coarse, shifted)(src)
    assert np.array_equal(out[:-1], src[1:]) and not out[-1].any()
    assert M.GridResampler(coarse, shifted).coverage == pytest.approx(3 / 4)
    # A finer grid over the same box: each coarse voxel covers 2x2x2 fine voxels.
    fine = VoxelGrid((0.0, 0.0, 0.0), 0.05, (8, 6, 4))
    out = M.GridResampler(coarse, fine)(src)
    expect = src.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert np.array_equal(out, expect)


def _seq(grid: VoxelGrid, stamps, masks, visible=None) -> OccupancySequence:
    idx = [np.flatnonzero(m.reshape(-1)) for m in masks]
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in idx])]).astype(np.int64)
    cat = np.concatenate(idx).astype(np.int64)
    return OccupancySequence(np.asarray(stamps, np.int64), grid, indptr, cat,
                             np.ones(len(cat), np.float32), visible)


def test_score_sequence_across_grids_and_eval_cli(tmp_path):
    """Prediction on a shifted, larger grid scores like the same voxels on the GT grid."""
    gt_grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (4, 3, 2), 'world')
    rng = np.random.default_rng(1)
    gt_occ = rng.random((3,) + gt_grid.dims) > 0.6
    gt_obs = rng.random((3,) + gt_grid.dims) > 0.3
    pred_on_gt = rng.random((3,) + gt_grid.dims) > 0.5
    stamps = [10_000_000, 43_000_000, 76_000_000]
    save_sequence(str(tmp_path / 'gt.npz'), _seq(gt_grid, stamps, gt_occ, gt_obs))
    # Prediction grid: one voxel bigger on each side (origin shifted by -1 voxel).
    pred_grid = VoxelGrid((-0.1, -0.1, -0.1), 0.1, (6, 5, 4), 'world')
    pred_big = np.zeros((3,) + pred_grid.dims, bool)
    pred_big[:, 1:5, 1:4, 1:3] = pred_on_gt
    pred_big[:, 0, 0, 0] = True                    # outside the GT grid: not scored
    pred_stamps = [s + 1_000_000 for s in stamps]  # 1 ms off: still matched
    save_sequence(str(tmp_path / 'pred.npz'), _seq(pred_grid, pred_stamps, pred_big))

    expect = M.SequenceScorer()
    for n in range(3):
        expect.add(pred_stamps[n], pred_on_gt[n], gt_occ[n], gt_obs[n])
    got = M.score_sequence(load_sequence(str(tmp_path / 'pred.npz')),
                           M.ground_truth_from_file(str(tmp_path / 'gt.npz')))
    assert got.summary()['iou'] == pytest.approx(expect.summary()['iou'])
    assert got.summary()['flicker'] == pytest.approx(expect.summary()['flicker'])

    out = tmp_path / 'eval'
    assert cli_main(['eval', str(tmp_path / 'pred.npz'), '--gt', str(tmp_path / 'gt.npz'),
                     '--out', str(out), '--quiet']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    for key in ('iou', 'precision', 'recall', 'flicker', 'window_iou', 'per_frame'):
        assert key in doc
    assert doc['iou'] == pytest.approx(expect.summary()['iou'])
    assert [r['stamp'] for r in doc['per_frame']] == pred_stamps
    assert set(doc['per_frame'][0]) >= {'stamp', 'iou', 'precision', 'recall', 'n_observed',
                                        'n_gt', 'n_pred'}
    png = (out / 'iou.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_ground_truth_file_dynamic_masks_and_bad_files(tmp_path, capsys):
    """Dynamic masks as packed bits or CSR rows load alike; broken keys fail with a kind."""
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (4, 3, 2), 'world')
    rng = np.random.default_rng(2)
    occ, obs = rng.random((2, 3) + grid.dims) > 0.5
    dyn = (rng.random((3,) + grid.dims) > 0.7) & occ
    dyn[1] = False                                  # a row without dynamic voxels
    path = str(tmp_path / 'gt.npz')
    save_sequence(path, _seq(grid, [0, 1, 2], occ, obs))
    with np.load(path) as z:
        base = {k: z[k] for k in z.files}
    idx = [np.flatnonzero(d.reshape(-1)) for d in dyn]
    csr = dict(dynamic_indptr=np.concatenate([[0], np.cumsum([len(i) for i in idx])]),
               dynamic_indices=np.concatenate(idx))
    for extra in (dict(dynamic_packed=np.packbits(dyn.reshape(-1))), csr):
        np.savez(path, **base, **extra)
        gt = M.ground_truth_from_file(path)
        assert np.array_equal(gt.occupied, occ) and np.array_equal(gt.observed, obs)
        assert np.array_equal(gt.dynamic, dyn)
    bad = [dict(csr, dynamic_indptr=csr['dynamic_indptr'][:-1]),
           dict(csr, dynamic_indices=csr['dynamic_indices'] + grid.num_voxels),
           dict(dynamic_packed=np.packbits(dyn.reshape(-1))[:2])]
    for extra in bad:
        np.savez(path, **base, **extra)
        with pytest.raises(OccupancyFileError):
            M.ground_truth_from_file(path)
        assert cli_main(['eval', path, '--gt', path, '--out', str(tmp_path / 'e'),
                         '--quiet']) == 2
        assert '[bad_occupancy_file]' in capsys.readouterr().err
    np.savez(path, **dict(base, indptr=base['indptr'][::-1]))
    with pytest.raises(OccupancyFileError, match='inconsistent CSR rows'):
        load_sequence(path)


def test_gt_from_depth_fronto_parallel_wall():
    """A wall at z = 1.02 m in front of a camera: closed-form occupancy and observed set."""
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    grid = VoxelGrid.from_bounds([-0.5, -0.4, 0.0], [0.5, 0.4, 1.5], 0.05, 'cam')
    depth = np.full((48, 64), 1.02, np.float32)
    depth[:, :8] = 0.0        # no reading on the left image border
    occupied, observed = M.gt_from_depth([depth], cam, [np.eye(4)], grid, max_depth=4.0,
                                         stride=1)
    assert occupied.shape == grid.dims and observed.shape == (1,) + grid.dims
    k_wall = int(1.02 // 0.05)
    centres = grid.centres().numpy()
    x, y, z = centres[..., 0], centres[..., 1], centres[..., 2]
    # Wall pixels u >= 8 see x >= (8 - cx) / fx * z: the whole grid width at z = 1.02 except
    # x < -0.5994; the frustum is wider than the grid (|x| <= 0.80, |y| <= 0.60 at the wall).
    expect = np.zeros(grid.dims, bool)
    expect[:, :, k_wall] = True
    assert np.array_equal(occupied, expect)
    obs = observed[0]
    assert not obs[:, :, k_wall + 1:].any(), 'nothing behind the first hit is observed'
    # Inside the frustum of valid pixels (with a margin of one voxel) every voxel up to the wall
    # is observed; clearly outside it nothing is.
    u_lo = (8 - 31.5) / 40.0
    inside = ((x - 0.05 >= u_lo * z) & (np.abs(x) + 0.05 <= 31.5 / 40 * z)
              & (np.abs(y) + 0.05 <= 23.5 / 40 * z) & (z <= 1.0))
    outside = ((x + 0.05 < u_lo * z) | (np.abs(x) - 0.05 > 32.5 / 40 * z)
               | (np.abs(y) - 0.05 > 24.5 / 40 * z))
    assert obs[inside].all()
    assert not obs[outside].any()


def test_depth_metrics_hand_computed():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]], np.float32)
    pred = np.array([[1.1, 1.0], [0.0, 3.0]], np.float32)
    m = M.depth_metrics(pred, gt)
    # Valid in both: (1.0 -> 1.1) and (2.0 -> 1.0); GT valid: 3 pixels.
    assert m['n_valid'] == 2 and m['n_gt'] == 3
    assert m['completeness'] == pytest.approx(2 / 3)
    assert m['abs_rel'] == pytest.approx((0.1 / 1.0 + 1.0 / 2.0) / 2)
    assert m['rmse'] == pytest.approx(math.sqrt((0.01 + 1.0) / 2), rel=1e-6)
    assert m['delta_1_25'] == pytest.approx(0.5)
    m = M.depth_metrics(pred, gt, valid=np.array([[True, False], [True, True]]))
    assert m['n_valid'] == 1 and m['abs_rel'] == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(M.MetricsError):
        M.depth_metrics(pred[0], gt)


def test_tum_single_frame_calibration(tum_dir):
    """One perfect GT depth frame scores IoU ~0.7 under the contract's rule; 5 % noise less.

    The prediction is the frame's own depth ray cast into the grid (voxels holding its depth
    points); GT = surface voxels of all 37 frames, observed = that frame's rays to the first hit.
    """
    torch.set_num_threads(1)
    from l3rocc_core.datasets.tum import load_tum
    seq = load_tum(str(tum_dir))
    grid = VoxelGrid.from_bounds([-2.0, -2.0, -0.5], [2.0, 2.0, 1.5], 0.05, 'world')
    picks = [0, 18, 36]
    gt = M.ground_truth_from_tum(str(tum_dir), grid,
                                 [seq.frames[i].stamp_ns for i in picks], stride=4)
    assert list(gt.stamps_ns) == [seq.frames[i].stamp_ns for i in picks]
    rng = np.random.default_rng(0)
    perfect, noisy = M.SequenceScorer(), M.SequenceScorer()
    for row, i in enumerate(picks):
        f = seq.frames[i]
        noise = 1.0 + 0.05 * rng.standard_normal(f.depth_m.shape).astype(np.float32)
        for scorer, depth in ((perfect, f.depth_m), (noisy, f.depth_m * noise)):
            res = cast_depth(grid, depth, seq.depth_camera, f.T_world_depth, 4.0, ray_stride=4)
            pred = (res.hits > 0).numpy().reshape(grid.dims)
            scorer.add(f.stamp_ns, pred, gt.occupied_at(row), gt.observed[row])
    p, n = perfect.summary(), noisy.summary()
    assert p['precision'] > 0.99            # every hit voxel holds a GT surface point
    assert 0.55 <= p['iou'] <= 0.9, p['iou']
    assert n['iou'] < p['iou'] - 0.05, (n['iou'], p['iou'])


def test_add_occupancy_newest_and_window():
    """Pipeline windows: newest slice as a row, every slice matched to GT by its stamp."""
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (1, 1, 4), 'world')
    gt_occ = np.stack([_b(1, 0, 0, 0), _b(0, 1, 0, 0), _b(0, 0, 1, 0)])
    gt = M.OccupancyTruth(grid, np.array([100, 200, 300]), gt_occ, np.ones_like(gt_occ))
    prob = np.stack([_b(1, 0, 0, 0), _b(0, 1, 1, 0), _b(0, 0, 1, 1)]).astype(np.float32)
    from l3rocc_core.occupancy import Occupancy4D
    occ = Occupancy4D(grid, np.array([100, 200, 300]), prob)
    scorer = M.SequenceScorer()
    M.add_occupancy(scorer, occ, gt, tolerance_ns=10)
    s = scorer.summary()
    assert s['iou'] == pytest.approx(0.5)                        # newest slice: 1 tp, 1 fp
    assert s['window_iou'] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert scorer.per_frame()[0]['stamp'] == 300


def test_reproject_depth_plane_to_smaller_moved_camera():
    """A wall at z = 2 m seen from a half-size camera 0.5 m closer reads 1.5 m everywhere."""
    cam = PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5)
    depth = np.full((48, 64), 2.0, np.float32)
    small = cam.scaled(32)
    T_target = np.eye(4)
    T_target[2, 3] = 0.5
    out = M.reproject_depth(depth, cam, np.eye(4), small, T_target)
    assert out.shape == (24, 32)
    inner = out[4:-4, 4:-4]
    assert np.all(inner > 0) and np.allclose(inner, 1.5, atol=1e-5)
    m = M.depth_metrics(np.full((24, 32), 1.65, np.float32), out)
    assert m['abs_rel'] == pytest.approx(0.1, rel=1e-4) and m['delta_1_25'] == 1.0


def test_trail_counts_what_a_lagging_prediction_leaves_behind_a_moving_box():
    """A box moves one voxel per row; a prediction one row late leaves one slab of trail."""
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.1, (20, 3, 3), 'world')
    n = 18
    dyn = np.zeros((n,) + grid.dims, bool)
    for m in range(n):
        dyn[m, m:m + 2] = True                          # a 2-voxel-long box at x = m, m + 1
    static = np.zeros(grid.dims, bool)
    static[:, :, 0] = True                              # a floor that never moves
    occ = dyn | static
    stamps = np.arange(n) * 100 + 1000
    gt = M.OccupancyTruth(grid, stamps[::-1].copy(), occ[::-1].copy(),
                          np.ones_like(occ), dyn[::-1].copy())   # rows in any order
    at = {int(s): k for k, s in enumerate(gt.stamps_ns)}
    vac = gt.vacated_at(at[1000 + 100 * 5])
    assert vac.shape == grid.dims and np.array_equal(np.flatnonzero(vac.any(axis=(1, 2))),
                                                     np.arange(5))
    assert not vac[:, :, 0].any()                         # the floor is still occupied
    assert not gt.vacated_at(at[1000]).any()             # nothing earlier
    # Only the last TRAIL_SPAN rows count: by row 17, x = 0 and 1 are too old.
    assert np.array_equal(np.flatnonzero(gt.vacated_at(at[1000 + 100 * 17]).any(axis=(1, 2))),
                          np.arange(2, 17))
    assert M.OccupancyTruth(grid, stamps, occ, np.ones_like(occ)).vacated_at(3) is None

    late = M.SequenceScorer()
    exact = M.SequenceScorer()
    for m in range(n):
        k = at[int(stamps[m])]
        late.add(stamps[m], occ[max(m - 1, 0)], occ[m], np.ones(grid.dims, bool), dyn[m],
                 gt.vacated_at(k))
        exact.add(stamps[m], occ[m], occ[m], np.ones(grid.dims, bool), dyn[m],
                  gt.vacated_at(k))
    rows = late.per_frame()
    # Row m (1 <= m <= 15): m vacated slabs (x < m), of which the late box still holds x = m - 1.
    for m in range(1, 16):
        assert rows[m]['trail'] == pytest.approx(1.0 / m)
        assert rows[m]['vacated_n_observed'] == 6 * m          # 2 of 3 z layers are free
    assert math.isnan(rows[0]['trail'])                        # nothing vacated yet
    s = late.summary()
    expected = [1.0 / m for m in range(1, 16)] + [1.0 / 15, 1.0 / 15]
    assert s['trail'] == pytest.approx(np.mean(expected))
    assert s['pooled_trail'] == pytest.approx(17 / (sum(range(1, 16)) + 2 * 15))
    assert exact.summary()['trail'] == 0.0 and exact.summary()['dynamic_iou'] == 1.0
    # Without vacated masks there is no trail figure at all.
    plain = M.SequenceScorer()
    plain.add(0, occ[0], occ[0], np.ones(grid.dims, bool), dyn[0])
    assert 'trail' not in plain.summary() and 'trail' not in plain.per_frame()[0]
