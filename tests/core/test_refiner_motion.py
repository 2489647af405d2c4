"""Motion consistency: feature-matched occupancy flow, its loss term, flow head and training."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from l3rocc_core.grid import VoxelGrid
from l3rocc_core.refiner.checkpoint import load_model
from l3rocc_core.refiner.flow_targets import (dense_crop, lift, match_features,
                                              matched_scene_flow, voxel_flow)
from l3rocc_core.refiner.losses import LossWeights, motion_consistency, refiner_loss
from l3rocc_core.refiner.network import NetConfig, TemporalOccupancyNet
from l3rocc_core.refiner.train import TrainError, TrainOptions, train
from l3rocc_core.refiner.training_data import ShardDataset, augment, shift_z

FEATURES = ['logodds', 'hits', 'free', 'observed', 'confidence']
K = np.array([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])


pytestmark = pytest.mark.usefixtures('one_thread')


def texture(seed: int = 0, shape=(240, 320)) -> np.ndarray:
    """Smooth random texture, uint8 RGB (corners everywhere, trackable)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((shape[0] // 4, shape[1] // 4)).astype(np.float32)
    img = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def view(tex: np.ndarray, x0: int, y0: int, w: int = 160, h: int = 120) -> np.ndarray:
    return np.ascontiguousarray(tex[y0:y0 + h, x0:x0 + w])


# ---------------------------------------------------------------- flow from feature matching


def test_matching_recovers_a_known_image_shift() -> None:
    tex = texture()
    uv0, uv1 = match_features(view(tex, 60, 50), view(tex, 54, 47))  # content moves +6, +3
    assert len(uv0) > 100
    np.testing.assert_allclose(np.median(uv1 - uv0, axis=0), [6.0, 3.0], atol=0.05)


def test_moving_plane_gets_its_velocity_and_a_static_one_zero_flow() -> None:
    """A fronto-parallel textured plane 2 m away, seen by a camera looking along +z.

    The plane moves +x by 6 px * 2 m / 200 px = 6 cm in 0.1 s (0.6 m/s) while the camera
    stands still; then the camera moves +x by 6 cm past a plane that stands still.
    """
    tex = texture(1)
    depth = np.full((120, 160), 2.0)
    T = np.eye(4)
    pts, flow = matched_scene_flow(view(tex, 60, 50), view(tex, 54, 50), depth, depth, K, T, T,
                                   0.1)
    assert len(flow) > 100
    np.testing.assert_allclose(np.median(flow, axis=0), [0.6, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(pts[:, 2], 2.0)
    T1 = np.eye(4)
    T1[0, 3] = 0.06  # the camera moved +x: the static plane's image moves -6 px
    pts, flow = matched_scene_flow(view(tex, 60, 50), view(tex, 66, 50), depth, depth, K, T, T1,
                                   0.1)
    assert len(flow) > 100
    assert np.abs(np.median(flow, axis=0)).max() < 0.01
    with pytest.raises(ValueError, match='dt_s'):
        matched_scene_flow(view(tex, 0, 0), view(tex, 0, 0), depth, depth, K, T, T, 0.0)


def test_lift_drops_missing_depth_and_depth_edges() -> None:
    depth = np.full((10, 10), 2.0)
    depth[:, 6:] = 4.0      # an edge between columns 5 and 6
    depth[0, 0] = 0.0       # no depth
    uv = np.array([[2.0, 5.0], [5.5, 5.0], [8.0, 5.0], [0.2, 0.2]])
    pts, ok = lift(uv, depth, K, np.eye(4))
    np.testing.assert_array_equal(ok, [True, False, True, False])
    np.testing.assert_allclose(pts[0], [(2.0 - 80.0) / 200.0 * 2.0, (5.0 - 60.0) / 200.0 * 2.0,
                                        2.0])
    assert pts[2, 2] == pytest.approx(4.0)


def test_voxel_flow_averages_per_voxel_and_crops_place_it() -> None:
    pts = np.array([[0.01, 0.01, 0.01], [0.04, 0.02, 0.03], [0.12, 0.01, 0.01],
                    [-0.2, 0.0, 0.0]])  # two in voxel (0, 0, 0), one in (2, 0, 0), one outside
    fl = np.array([[1.0, 0, 0], [3.0, 2, 0], [0, 0, -1.0], [9.0, 9, 9]])
    grid = VoxelGrid((0.0, 0.0, 0.0), 0.05, (4, 3, 2))
    flat, mean = voxel_flow(pts, fl, grid)
    np.testing.assert_array_equal(flat, [0, np.ravel_multi_index((2, 0, 0), (4, 3, 2))])
    np.testing.assert_allclose(mean, [[2.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    dense, valid = dense_crop(flat, mean, grid, np.array([1, 0, 0]), (3, 3, 2))
    assert valid.sum() == 1 and valid[1, 0, 0]
    np.testing.assert_allclose(dense[:, 1, 0, 0], [0.0, 0.0, -1.0])
    assert not dense[:, ~valid].any()


# ---------------------------------------------------------------- loss term and flow head


def test_motion_consistency_term_by_hand() -> None:
    flow = torch.zeros(1, 2, 3, 2, 1, 1)
    target = torch.zeros_like(flow)
    valid = torch.zeros(1, 2, 2, 1, 1, dtype=torch.bool)
    flow[0, 0, :, 0] = torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1)
    target[0, 0, :, 0] = torch.tensor([0.5, 0.0, 0.5]).view(3, 1, 1)   # L1 = 1.5
    flow[0, 1, :, 1] = torch.tensor([2.0, 0.0, 0.0]).view(3, 1, 1)     # L1 = 2.0 vs zero
    flow[0, 1, :, 0] = 100.0                                            # not matched: ignored
    valid[0, 0, 0] = valid[0, 1, 1] = True
    assert motion_consistency(flow, target, valid).item() == pytest.approx(1.75)
    logits = torch.zeros(1, 2, 2, 1, 1)
    occ = torch.zeros_like(logits, dtype=torch.bool)
    obs = torch.ones_like(occ)
    plain = refiner_loss(logits, occ, obs, weights=LossWeights())
    out = refiner_loss(logits, occ, obs, weights=LossWeights(motion=0.1), flow=flow,
                       flow_target=target, flow_valid=valid)
    assert out['motion'].item() == pytest.approx(1.75)
    assert out['total'].item() == pytest.approx(plain['total'].item() + 0.175, rel=1e-6)
    assert 'motion' not in plain  # train.csv keeps its columns without the term
    with pytest.raises(ValueError, match='needs flow'):
        refiner_loss(logits, occ, obs, weights=LossWeights(motion=0.1))
    with pytest.raises(ValueError, match=r'\[B, T, 3'):
        motion_consistency(flow[:, :, :2], target[:, :, :2], valid)


def test_flow_head_shapes_and_old_configs_have_none() -> None:
    torch.manual_seed(0)
    net = TemporalOccupancyNet(NetConfig(feature_names=FEATURES, width=8, motion_head=True))
    x = torch.randn(2, 5, 5, 7, 6, 5)
    logits, flow = net(x, return_flow=True)
    assert logits.shape == (2, 5, 7, 6, 5) and flow.shape == (2, 5, 3, 7, 6, 5)
    torch.testing.assert_close(net(x), logits)
    plain = TemporalOccupancyNet(NetConfig.from_dict(
        {k: v for k, v in NetConfig(feature_names=FEATURES).to_dict().items()
         if k != 'motion_head'}))
    assert not hasattr(plain, 'flow_head')
    with pytest.raises(ValueError, match='motion_head'):
        plain(x[:, :, :, :4, :4, :4], return_flow=True)


def test_augmentation_keeps_flow_a_vector_field() -> None:
    """Flips negate the flipped component, the swap exchanges x and y (and the voxels move)."""
    flow = torch.zeros(1, 3, 4, 4, 2)
    valid = torch.zeros(1, 4, 4, 2, dtype=torch.bool)
    flow[0, :, 1, 2, 0] = torch.tensor([1.0, 2.0, 3.0])
    valid[0, 1, 2, 0] = True
    sample = {'flow': flow, 'flow_valid': valid, 'occupancy': valid.clone()}
    fx = augment(sample, 1)
    assert fx['flow_valid'][0, 2, 2, 0]
    torch.testing.assert_close(fx['flow'][0, :, 2, 2, 0], torch.tensor([-1.0, 2.0, 3.0]))
    fy = augment(sample, 2)
    torch.testing.assert_close(fy['flow'][0, :, 1, 1, 0], torch.tensor([1.0, -2.0, 3.0]))
    sw = augment(sample, 4)
    assert sw['flow_valid'][0, 2, 1, 0] and torch.equal(sw['occupancy'], sw['flow_valid'])
    torch.testing.assert_close(sw['flow'][0, :, 2, 1, 0], torch.tensor([2.0, 1.0, 3.0]))
    up = shift_z(sample, 1)
    assert up['flow_valid'][0, 1, 2, 1] and not up['flow_valid'][..., 0].any()
    torch.testing.assert_close(up['flow'][0, :, 1, 2, 1], torch.tensor([1.0, 2.0, 3.0]))


# ---------------------------------------------------------------- training with the term


def box_flow_sample(rng: np.random.Generator, t: int = 6, dims=(8, 8, 8)) -> dict:
    """Make a box rising one voxel every slice (1 m/s at 20 fps) above a floor, seen along +y.

    Its voxels facing the camera carry the matched flow (0, 0, 1) m/s, the floor's (0, 0, 0)
    (upward motion: the x/y flips and swaps of training augmentation leave it as it is).
    Features as in the training tests.
    """
    nx, ny, nz = dims
    occ = np.zeros((t, nx, ny, nz), bool)
    occ[..., 0] = True
    x0, y0 = int(rng.integers(0, nx - 2)), int(rng.integers(3, 6))
    for s in range(t):
        occ[s, x0:x0 + 2, y0:y0 + 2, 1 + s:3 + s] = True
    dyn = occ.copy()
    dyn[..., 0] = False
    y = np.arange(ny).reshape(1, 1, ny, 1)
    first = np.where(occ.any(2), occ.argmax(2), ny)[:, :, None, :]
    hit = y == first
    free = y < first
    obs = np.maximum.accumulate(hit | free, axis=0)
    lo = np.clip(np.cumsum(0.85 * hit - 0.4 * free, axis=0), -2.0, 3.5) / 3.5
    feats = np.stack([lo, np.log1p(hit), np.log1p(free), obs, 0.8 * hit], axis=1)
    valid = hit & occ & (rng.random(occ.shape) < 0.8)
    valid[0] = False  # the first frame has no predecessor
    flow = np.zeros((t, 3) + dims, np.float16)
    flow[:, 2] = np.where(valid & dyn, 1.0, 0.0)
    return {'features': feats.astype(np.float16), 'occupancy': occ, 'observed': obs,
            'dynamic': dyn, 'flow': flow, 'flow_valid': valid}


def write_flow_dataset(root: Path, flow: bool = True) -> Path:
    rng = np.random.default_rng(4)
    for split, n in (('train', 3), ('val', 1)):
        (root / split).mkdir(parents=True)
        for k in range(n):
            samples = [box_flow_sample(rng) for _ in range(4)]
            keys = [key for key in samples[0] if flow or not key.startswith('flow')]
            np.savez_compressed(root / split / f'shard_{k:04d}.npz',
                                **{key: np.stack([s[key] for s in samples]) for key in keys})
    (root / 'meta.json').write_text(json.dumps({'feature_names': FEATURES,
                                                'voxel_size': 0.05, 'seed': 4}))
    return root


def options(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(data=str(data), out=str(out), steps=4, batch_size=2, lr=1e-2, seq_len=6,
                width=8, heads=2, up_channels=2, head_channels=4, val_every=4, seed=1,
                warmup_steps=0, threads=1, device='cpu', z_shift=0, short_window_prob=0.0,
                calibrate=False, test_samples=-1)
    base.update(kw)
    return TrainOptions(**base)


def test_dataset_reads_flow_and_checks_its_shape(tmp_path: Path) -> None:
    data = write_flow_dataset(tmp_path / 'd')
    s = ShardDataset(str(data), 'train', seq_len=5)[0]
    assert s['flow'].shape == (5, 3, 8, 8, 8) and s['flow'].dtype == torch.float32
    assert s['flow_valid'].dtype == torch.bool and s['flow_valid'].shape == (5, 8, 8, 8)
    assert torch.equal(s['flow'][:, 2] != 0, s['flow_valid'] & s['dynamic'])
    bad = tmp_path / 'bad' / 'train'
    bad.mkdir(parents=True)
    with np.load(data / 'train' / 'shard_0000.npz') as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(bad / 'shard_0000.npz', **dict(arrays, flow=arrays['flow'][:, :, :2]))
    with pytest.raises(ValueError, match='flow shape'):
        ShardDataset(str(tmp_path / 'bad'), 'train', seq_len=5)[0]


def test_training_with_the_motion_term_learns_the_flow(tmp_path: Path) -> None:
    data = write_flow_dataset(tmp_path / 'd')
    summary = train(options(data, tmp_path / 'run', steps=200, val_every=200,
                            motion_weight=0.1, export_path=str(tmp_path / 'm.pt')))
    best = summary['best']
    # The flow head beats predicting no motion on the matched voxels, the moving ones most.
    assert best['val_flow_epe'] < 0.3 * best['val_flow_epe_zero'], best
    assert best['val_flow_epe_dynamic'] < 0.3, best
    with open(tmp_path / 'run' / 'train.csv', encoding='utf-8') as fh:
        assert 'motion' in fh.readline().strip().split(',')
    # The export carries the head; inference (the refiner) reads the logits only.
    model, _ = load_model(str(tmp_path / 'm.pt'), feature_names=FEATURES)
    assert model.config.motion_head


def test_init_adds_or_drops_the_flow_head_and_needs_flow_data(tmp_path: Path) -> None:
    data = write_flow_dataset(tmp_path / 'd')
    plain_pt = tmp_path / 'plain.pt'
    train(options(data, tmp_path / 'plain', export_path=str(plain_pt)))
    start, _ = load_model(str(plain_pt), feature_names=FEATURES)
    out = tmp_path / 'tuned'
    train(options(data, out, init=str(plain_pt), motion_weight=0.1, steps=2, val_every=2,
                  lr=0.0, weight_decay=0.0, export_path=str(tmp_path / 'tuned.pt')))
    tuned, _ = load_model(str(tmp_path / 'tuned.pt'), feature_names=FEATURES)
    assert tuned.config.motion_head
    for k, v in start.state_dict().items():   # lr 0: the shared weights are the start's
        torch.testing.assert_close(tuned.state_dict()[k], v)
    # ... and back: a plain fine-tune of the motion model drops its head
    train(options(data, tmp_path / 'back', init=str(tmp_path / 'tuned.pt'), steps=2,
                  val_every=2, export_path=str(tmp_path / 'back.pt')))
    back, _ = load_model(str(tmp_path / 'back.pt'), feature_names=FEATURES)
    assert not back.config.motion_head
    old = write_flow_dataset(tmp_path / 'old', flow=False)
    with pytest.raises(TrainError, match='needs flow targets'):
        train(options(old, tmp_path / 'x', motion_weight=0.1))
    with pytest.raises(TrainError, match='>= 0'):
        train(options(data, tmp_path / 'y', motion_weight=-0.1))
