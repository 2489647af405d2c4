"""Synthetic sequences on disk: determinism, the bag, gt.npz / depth.npz, dataset shards."""

import json

import numpy as np
import pytest

from l3rocc_core.cli import main as cli_main
from l3rocc_core.occupancy import load_sequence
from l3rocc_core.synth.dataset import (DatasetOptions, degrade_depth, load_shard, sequence_depth,
                                       sequence_spec, write_dataset)
from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence, write_sequence


def test_sequences_are_deterministic_by_seed():
    spec = SequenceSpec('driving', 'vehicle', seed=4, frames=3, fps=10, width=64, height=48)
    a = SyntheticSequence(spec).frame(2)
    b = SyntheticSequence(spec).frame(2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
    np.testing.assert_array_equal(a.occupied, b.occupied)
    np.testing.assert_array_equal(a.observed, b.observed)
    other = SequenceSpec('driving', 'vehicle', seed=5, frames=3, fps=10, width=64, height=48)
    c = SyntheticSequence(other).frame(2)
    assert not np.array_equal(a.image, c.image)


def test_observed_voxels_follow_the_depth():
    seq = SyntheticSequence(SequenceSpec('industrial', 'static', seed=2, frames=1, width=64,
                                         height=48))
    f = seq.frame(0)
    assert f.occupied.shape == tuple(seq.grid.dims)
    assert (f.depth > 0).mean() > 0.9                       # a hall: nearly every pixel hits
    # Something is observed and occupied (the surfaces the camera sees), and dynamic voxels
    # are occupied voxels.
    assert (f.observed & f.occupied).sum() > 100
    assert not (f.dynamic & ~f.occupied).any()


def test_written_sequence_is_readable(tmp_path):
    from l3rocc_core.sources import open_source

    spec = SequenceSpec('industrial', 'handheld', seed=1, frames=4, fps=20, width=64,
                        height=48, distortion=True)
    meta = write_sequence(str(tmp_path / 'seq'), spec, progress=False)
    counts = {}
    with open_source(str(tmp_path / 'seq' / 'sequence.mcap')) as src:
        for ev in src:
            counts[ev.role] = counts.get(ev.role, 0) + 1
            if ev.role == 'camera_info':
                assert ev.msg.distortion_model == 'plumb_bob' and ev.msg.d[0] < 0
            if ev.role == 'tf':
                tr = ev.msg.transforms[0]
                assert (tr.header.frame_id, tr.child_frame_id) == ('odom',
                                                                   'camera_optical_frame')
    assert counts == {'image': 4, 'camera_info': 4, 'tf': 4, 'odometry': 4}
    gt = load_sequence(str(tmp_path / 'seq' / 'gt.npz'))
    assert len(gt) == 4 and gt.visible is not None
    assert np.all(gt.prob == 1.0)
    assert list(gt.grid.dims) == meta['grid']['dims']
    with np.load(tmp_path / 'seq' / 'gt.npz') as z:
        n = 4 * gt.grid.num_voxels
        dyn = np.unpackbits(z['dynamic_packed'])[:n].reshape((4,) + gt.grid.dims).astype(bool)
    # The GT rows are the exact per-frame occupancy.
    seq = SyntheticSequence(spec)
    f = seq.frame(3)
    np.testing.assert_array_equal(gt.occupied_mask(3), f.occupied)
    np.testing.assert_array_equal(dyn[3], f.dynamic)
    np.testing.assert_array_equal(gt.visible[3], f.observed)
    with np.load(tmp_path / 'seq' / 'depth.npz') as z:
        assert z['depth'].dtype == np.float16 and z['depth'].shape == (4, 48, 64)
        np.testing.assert_allclose(z['depth'][3].astype(np.float32), f.depth, rtol=1e-3)
        np.testing.assert_array_equal(z['stamps'], gt.stamps_ns)
        moving = np.unpackbits(z['moving_packed'], count=4 * 48 * 64).reshape(4, 48, 64)
    np.testing.assert_array_equal(moving[3].astype(bool), f.moving)
    # Moving pixels are surface points of the dynamic voxels (within a voxel: samples).
    assert f.moving.sum() > 50 and np.all(f.depth[f.moving] > 0)
    p_cam = seq.pinhole.pixel_rays()[f.moving] * f.depth[f.moving][:, None]
    p_world = p_cam @ f.T_world_cam[:3, :3].T + f.T_world_cam[:3, 3]
    ijk = seq.grid.world_to_ijk(p_world)
    ok = seq.grid.in_bounds(ijk)
    near = np.zeros_like(f.dynamic)
    for axis in range(3):          # one voxel of slack: a point on a face may round outwards
        for step in (-1, 0, 1):
            near |= np.roll(f.dynamic, step, axis)
    assert ok.mean() > 0.9 and near[tuple(ijk[ok].T)].mean() > 0.95
    from l3rocc_core.depth.truth import DepthTruth
    truth = DepthTruth.from_synth(str(tmp_path / 'seq' / 'depth.npz'))
    np.testing.assert_array_equal(truth.moving[int(gt.stamps_ns[3])], f.moving)
    saved = json.loads((tmp_path / 'seq' / 'meta.json').read_text())
    assert saved['recommended_parameters']['grid_min'] == list(gt.grid.origin)


def test_split_seed_ranges_are_disjoint():
    opts = DatasetOptions(frames=16)
    seeds = {split: {sequence_spec(split, i, opts).seed for i in range(50)}
             for split in ('train', 'val', 'test')}
    assert not seeds['train'] & seeds['val'] and not seeds['val'] & seeds['test']
    assert not seeds['train'] & seeds['test']


@pytest.mark.slow
def test_dataset_shards_hold_pipeline_features_and_exact_ground_truth(tmp_path):
    from l3rocc_core.fusion import FEATURE_NAMES

    opts = DatasetOptions(frames=5, width=64, crop=(8, 8, 4), crops_per_window=2,
                          window_every=2, window_size=3, windows_per_shard=2,
                          distortion_prob=0.0, blur_prob=0.0)
    meta = write_dataset(str(tmp_path), 'val', 1, opts, show_progress=False)
    assert meta['counts']['windows'] == 2 and meta['counts']['crops'] == 4
    assert meta['feature_names'] == list(FEATURE_NAMES)
    shard = load_shard(str(tmp_path / 'val' / meta['shards'][0]))
    n = len(shard['seed'])
    assert shard['features'].shape == (n, 3, len(FEATURE_NAMES), 8, 8, 4)
    assert shard['features'].dtype == np.float16
    for key in ('occupancy', 'observed', 'observed_window', 'dynamic'):
        assert shard[key].shape == (n, 3, 8, 8, 4) and shard[key].dtype == bool
    assert np.all(shard['observed_window'] >= shard['observed'])
    # Feature-matched flow: m/s per matched voxel, zero elsewhere, none at the first frame.
    assert shard['flow'].shape == (n, 3, 3, 8, 8, 4) and shard['flow'].dtype == np.float16
    assert shard['flow_valid'].shape == (n, 3, 8, 8, 4)
    flow = shard['flow'].astype(np.float32)
    assert not flow.transpose(0, 1, 3, 4, 5, 2)[~shard['flow_valid']].any()
    assert np.linalg.norm(flow, axis=2).max() <= 6.0 + 1e-2
    first = shard['frame_index'] == opts.window_size - 1
    assert first.any() and not shard['flow_valid'][first, 0].any()
    # The GT of a crop is the exact GT of the sequence at that slice's frame.
    spec = sequence_spec('val', 0, opts)
    from l3rocc_core.synth.ground_truth import GroundTruth, suggest_grid
    seq = SyntheticSequence(spec, ground_truth=False)
    grid = suggest_grid(seq.scene, seq.poses, spec.voxel_size, opts.max_extent_m)
    gt = GroundTruth(seq.scene, grid)
    k = n - 1
    frame = int(shard['frame_index'][k])
    occ, _ = gt.occupancy(float(seq.times[frame]))
    x, y, z = shard['corner'][k]
    np.testing.assert_array_equal(shard['occupancy'][k, -1], occ[x:x + 8, y:y + 8, z:z + 4])
    assert np.all(np.isfinite(shard['features'].astype(np.float32)))
    np.testing.assert_array_equal(shard['seed'], spec.seed)


def test_gt_depth_shards_hold_the_same_crops_with_other_evidence(tmp_path):
    """``--dataset-depth gt``: same sequence, crops and GT as ``sweep``; the features differ."""
    shards = {}
    for depth in ('sweep', 'gt'):
        assert cli_main(['synth', '--dataset', str(tmp_path / depth), '--split', 'val',
                         '--num-sequences', '1', '--dataset-frames', '5', '--dataset-width', '64',
                         '--crop', '8', '8', '4', '--crops-per-window', '2', '--window-size',
                         '3', '--no-flow', '--dataset-depth', depth]) == 0
        meta = json.loads((tmp_path / depth / 'val' / 'meta.json').read_text())
        assert meta['options']['depth'] == depth
        assert [s['depth'] for s in meta['sequences']] == [depth]
        shards[depth] = load_shard(str(tmp_path / depth / 'val' / 'shard_0000.npz'))
    sweep, gt = shards['sweep'], shards['gt']
    assert sweep['features'].shape == gt['features'].shape == (4, 3, 5, 8, 8, 4)
    for key in ('occupancy', 'observed', 'corner', 'frame_index', 'seed'):
        np.testing.assert_array_equal(sweep[key], gt[key])
    assert np.all(np.isfinite(gt['features'].astype(np.float32)))
    # The exact depth observes voxels (channel 'observed') the plane sweep does not, or back.
    assert np.abs(gt['features'].astype(np.float32) - sweep['features']).max() > 0.1


def test_mixed_depth_draws_per_sequence_and_gt_depth_is_degraded():
    opts = DatasetOptions(depth='mixed', gt_share=0.5)
    kinds = [sequence_depth(sequence_spec('train', i, opts), opts) for i in range(40)]
    assert 10 <= kinds.count('gt') <= 30 and set(kinds) == {'gt', 'sweep'}
    assert kinds == [sequence_depth(sequence_spec('train', i, opts), opts) for i in range(40)]
    assert sequence_depth(sequence_spec('train', 0, opts), DatasetOptions()) == 'sweep'
    depth = np.full((300, 400), 2.0, np.float32)
    out = degrade_depth(depth, np.random.default_rng(0), 0.01, 0.1)
    dropped = out == 0
    assert abs(dropped.mean() - 0.1) < 0.01
    assert abs(out[~dropped].std() - 0.02) < 0.002 and abs(out[~dropped].mean() - 2.0) < 1e-3
    np.testing.assert_array_equal(degrade_depth(depth, np.random.default_rng(0), 0.0, 0.0),
                                  depth)
    with pytest.raises(ValueError, match='depth must be one of'):
        DatasetOptions(depth='exact')


def test_synth_cli_needs_exactly_one_mode(tmp_path, capsys):
    """Zero or two modes: exit status 2, the reason (with its kind) on stderr, nothing written."""
    for modes in ([], ['--out', str(tmp_path / 'seq'), '--contact-sheet',
                       str(tmp_path / 'sheet.png')]):
        assert cli_main(['synth', *modes]) == 2
        out = capsys.readouterr()
        assert out.out == ''
        assert out.err.startswith('l3rocc synth: choose exactly one of --out DIR')
        assert '[ValueError]' in out.err
    assert list(tmp_path.iterdir()) == []
