"""``l3rocc train`` end to end on a tiny analytic shard dataset: logs, curve, resume, export.

The dataset: boxes that slide one voxel per slice, seen along +y; a third of the ray columns of
each slice return nothing, the rest give hit and free evidence with noisy log-odds. The ground
truth (occupancy, observed up to the first hit, dynamic = the moving box) is exact.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from l3rocc_core.cli import main as cli_main
from l3rocc_core.refiner.checkpoint import load_model, read_checkpoint
from l3rocc_core.refiner.network import BUNDLED_CHECKPOINT
from l3rocc_core.refiner.train import TrainError, TrainOptions, cosine_factor, train
from l3rocc_core.refiner.training_data import ShardBatches, ShardDataset, augment, shift_z

FEATURES = ['logodds', 'hits', 'free', 'observed', 'confidence']


pytestmark = pytest.mark.usefixtures('one_thread')


def box_sample(rng: np.random.Generator, t: int = 6, dims=(8, 8, 4)) -> dict:
    nx, ny, nz = dims
    occ = np.zeros((t, nx, ny, nz), bool)
    dyn = np.zeros_like(occ)
    occ[..., 0] = True
    x0, y0, step = int(rng.integers(0, 3)), int(rng.integers(3, 6)), int(rng.integers(0, 2))
    for s in range(t):
        xs = slice(x0 + step * s // 2, x0 + step * s // 2 + 3)
        occ[s, xs, y0:y0 + 2, 1:3] = True
        dyn[s, xs, y0:y0 + 2, 1:3] = step > 0
    y = np.arange(ny).reshape(1, 1, ny, 1)
    first = np.where(occ.any(2), occ.argmax(2), ny)[:, :, None, :]
    seen = rng.random((t, nx, 1, nz)) > 0.33
    gt_obs = np.maximum.accumulate(y <= first, axis=0)
    free = (y < first) & seen
    hit = (y == first) & seen
    pipe_obs = np.maximum.accumulate(free | hit, axis=0)
    lo = np.cumsum(0.85 * hit - 0.4 * free, axis=0) + 0.2 * rng.standard_normal(occ.shape)
    lo = np.clip(lo * pipe_obs, -2.0, 3.5) / 3.5
    feats = np.stack([lo, np.log1p(hit), np.log1p(free), pipe_obs, 0.8 * hit], axis=1)
    return {'features': feats.astype(np.float16), 'occupancy': occ, 'observed': gt_obs,
            'dynamic': dyn}


def write_dataset(root: Path, seed: int = 5, shards=(('train', 3, 4), ('val', 1, 4))) -> Path:
    rng = np.random.default_rng(seed)
    for split, n_shards, per in shards:
        (root / split).mkdir(parents=True)
        for k in range(n_shards):
            samples = [box_sample(rng) for _ in range(per)]
            np.savez_compressed(root / split / f'shard_{k:04d}.npz',
                                **{key: np.stack([s[key] for s in samples])
                                   for key in samples[0]})
    (root / 'meta.json').write_text(json.dumps(
        {'feature_names': FEATURES, 'voxel_size': 0.05, 'seed': seed, 'logodds_scale': 3.5}))
    return root


def options(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(data=str(data), out=str(out), steps=8, batch_size=2, lr=3e-3, seq_len=6,
                width=8, heads=2, up_channels=2, head_channels=4, val_every=4, seed=3,
                warmup_steps=2, threads=1, device='cpu')
    base.update(kw)
    return TrainOptions(**base)


def test_dataset_reads_shards_and_batches_are_seeded(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / 'd')
    ds = ShardDataset(str(data), 'train', seq_len=5)
    assert len(ds) == 12 and ds.feature_names == tuple(FEATURES)
    s = ds[5]
    assert s['features'].shape == (5, 5, 8, 8, 4) and s['features'].dtype == torch.float32
    assert s['occupancy'].dtype == torch.bool and s['known'].all()
    a = ShardBatches(ds, 4, seed=1)
    first = [b['features'] for _, (_, _, b) in zip(range(5), a.iterate(0))]
    again = [b['features'] for _, (_, _, b) in zip(range(2), a.iterate(3))]
    assert torch.equal(first[3], again[0]) and torch.equal(first[4], again[1])
    order = a.epoch_order(0)
    assert sorted(order) == list(range(12)) and order != a.epoch_order(1)
    flipped = augment(s, 1 | 4)  # flip x, then swap x and y: new[i, j] = old[7 - j, i]
    assert torch.equal(flipped['occupancy'][:, 2, 3], s['occupancy'][:, 7 - 3, 2])
    assert torch.equal(flipped['features'][:, :, 2, 3], s['features'][:, :, 7 - 3, 2])
    assert not torch.equal(flipped['features'], s['features'])
    with pytest.raises(ValueError, match='fewer than seq_len'):
        ShardDataset(str(data), 'train', seq_len=7)
    with pytest.raises(ValueError, match='no shards'):
        ShardDataset(str(data), 'test')


def test_z_shift_moves_content_and_uncovers_unknown_layers() -> None:
    rng = np.random.default_rng(0)
    raw = box_sample(rng, t=3, dims=(4, 4, 8))
    sample = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()}
    sample['known'] = torch.ones_like(sample['occupancy'])
    up = shift_z(sample, 2)
    assert torch.equal(up['occupancy'][..., 2:], sample['occupancy'][..., :6])
    assert not up['occupancy'][..., :2].any() and not up['known'][..., :2].any()
    assert up['known'][..., 2:].all()
    assert torch.equal(up['features'][..., 2:], sample['features'][..., :6])
    assert not up['features'][..., :2].any()
    down = shift_z(sample, -3)
    assert torch.equal(down['observed'][..., :5], sample['observed'][..., 3:])
    assert not down['known'][..., 5:].any()
    assert shift_z(sample, 0) is sample
    with pytest.raises(ValueError, match='crop height'):
        shift_z(sample, 8)


def test_stream_start_batches_are_short_windows_of_first_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / 'train').mkdir()
    samples = [box_sample(rng) for _ in range(6)]  # T = 6
    frame_index = np.array([5, 7, 9, 5, 11, 13])  # samples 0 and 3 hold frames 0..5
    np.savez_compressed(tmp_path / 'train' / 'shard_0000.npz', frame_index=frame_index,
                        **{k: np.stack([sm[k] for sm in samples]) for k in samples[0]})
    data = ShardDataset(str(tmp_path), 'train', seq_len=6)
    assert data.stream_start_samples() == [0, 3]
    batches = ShardBatches(data, batch_size=2, seed=0, short_window_prob=1.0)
    firsts = {i: data[i]['features'][0] for i in (0, 3)}
    lengths = set()
    for step, _, batch in batches.iterate():
        t = batch['features'].shape[1]
        lengths.add(t)
        assert 2 <= t <= 5 and batch['occupancy'].shape[1] == t
        # oldest slices kept: each sample's first slice is one of the first windows' (up to
        # the flips of the augmentation, which keep the sum)
        for f in batch['features']:
            assert any(torch.isclose(f[0].sum(), v.sum()) for v in firsts.values())
        if step == 20:
            break
    assert len(lengths) > 1
    plain = ShardBatches(data, batch_size=2, seed=0)
    assert next(plain.iterate())[2]['features'].shape[1] == 6


def test_cosine_schedule() -> None:
    assert cosine_factor(0, 100, 10) == pytest.approx(0.1)
    assert cosine_factor(10, 100, 10) == pytest.approx(1.0)
    assert cosine_factor(100, 100, 10) == pytest.approx(0.05)
    assert 0.05 < cosine_factor(55, 100, 10) < 1.0


def test_train_logs_validates_exports_and_resumes(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / 'd', shards=(('train', 3, 4), ('val', 1, 4), ('test', 1, 3)))
    out = tmp_path / 'run'
    export = tmp_path / 'export.pt'
    summary = train(options(data, out, export_path=str(export), checkpointing=True,
                            command='l3rocc train test'))
    assert summary['steps'] == 8 and summary['best']['step'] in (4, 8)
    rows = list(csv.DictReader(open(out / 'train.csv')))
    assert [int(r['step']) for r in rows] == [8]  # log_every 10 > 8 steps: the final row
    val = list(csv.DictReader(open(out / 'val.csv')))
    assert [int(r['step']) for r in val] == [4, 8]
    for key in ('val_iou', 'val_flicker', 'geo_iou', 'geo_flicker', 'val_iou_newest'):
        assert 0.0 <= float(val[-1][key]) <= 1.0
    assert (out / 'loss.png').stat().st_size > 1000
    model, meta = load_model(str(export), feature_names=FEATURES)
    assert meta['command'] == 'l3rocc train test' and meta['data_seed'] == 5
    # the output bias is calibrated on validation data: never worse than uncalibrated (offset 0
    # is a candidate), and the calibrated model is what was exported
    metrics = meta['metrics']
    assert metrics['val_iou_uncalibrated'] == pytest.approx(summary['best']['val_iou'])
    assert metrics['val_iou'] >= metrics['val_iou_uncalibrated'] - 1e-9
    assert metrics['calibration_offset'] in [k / 4 for k in range(-12, 13)]
    assert summary['calibration_table'][f'{metrics["calibration_offset"]:+.2f}'] == \
        pytest.approx(metrics['val_iou'])
    assert summary['test']['test_samples'] == 3 and 0.0 <= meta['metrics']['test_iou'] <= 1.0
    assert 'test_geo_iou' in meta['metrics']
    assert read_checkpoint(str(export))['state_dict']['down.weight'].dtype == torch.float16

    # an interrupted run resumed from last.pt ends with the very same weights
    out2 = tmp_path / 'run2'
    part = train(options(data, out2, stop_after=4))
    assert part['stopped'] == 4
    train(options(data, out2, resume=True))
    a = read_checkpoint(str(out / 'last.pt'))['model']['state_dict']
    b = read_checkpoint(str(out2 / 'last.pt'))['model']['state_dict']
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # resuming a finished run only re-does the final steps and keeps the first command
    again = train(options(data, out2, resume=True, command='l3rocc train again'))
    assert again['steps'] == 8
    meta2 = read_checkpoint(str(out2 / 'last.pt'))['model']['meta']
    assert meta2['command'] == 'l3rocc train (API)'
    assert meta2['resumed_with'] == 'l3rocc train again'
    with pytest.raises(TrainError, match='resume with the same'):
        train(options(data, out2, resume=True, steps=9))


def test_init_fine_tunes_from_a_checkpoint_and_may_switch_to_causal(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / 'd')
    export = tmp_path / 'export.pt'
    train(options(data, tmp_path / 'run', export_path=str(export), steps=4, val_every=4))
    start, _ = load_model(str(export), feature_names=FEATURES)
    # zero learning rate: the fine-tuned run keeps the start weights exactly (fp16 export)
    out = tmp_path / 'causal'
    train(options(data, out, init=str(export), causal=True, steps=2, val_every=2, lr=0.0,
                  warmup_steps=0, weight_decay=0.0, calibrate=False))
    tuned = read_checkpoint(str(out / 'last.pt'))['model']
    assert tuned['arch']['causal'] is True
    assert tuned['meta']['options']['init'] == str(export)
    for k, v in start.state_dict().items():
        assert torch.equal(tuned['state_dict'][k].float(), v), k
    # a run's own best.pt works as a start too; a different architecture is refused
    train(options(data, tmp_path / 'again', init=str(tmp_path / 'run' / 'best.pt'), steps=2,
                  val_every=2))
    with pytest.raises(TrainError, match='--init .*architecture'):
        train(options(data, tmp_path / 'wide', init=str(export), width=12, steps=2))
    with pytest.raises(TrainError, match='--init'):
        train(options(data, tmp_path / 'none', init=str(tmp_path / 'missing.pt'), steps=2))


def test_cli_init_from_the_bundled_checkpoint(tmp_path: Path) -> None:
    """``l3rocc train --init`` the shipped model: at zero learning rate its weights come back."""
    data = write_dataset(tmp_path / 'd')
    out = tmp_path / 'tuned'
    assert cli_main(['train', '--data', str(data), '--out', str(out), '--init',
                     BUNDLED_CHECKPOINT, '--steps', '1', '--val-every', '1', '--seq-len', '6',
                     '--lr', '0', '--weight-decay', '0', '--warmup-steps', '0', '--threads', '1',
                     '--device', 'cpu', '--no-calibrate', '--test-samples', '-1']) == 0
    shipped, _ = load_model(BUNDLED_CHECKPOINT, feature_names=FEATURES)
    tuned = read_checkpoint(str(out / 'last.pt'))['model']
    assert tuned['meta']['options']['init'] == BUNDLED_CHECKPOINT
    for k, v in shipped.state_dict().items():
        assert torch.equal(tuned['state_dict'][k].float(), v.float()), k


def test_stream_term_is_the_smoothness_of_successive_newest_slices(tmp_path: Path) -> None:
    from l3rocc_core.refiner.losses import LossWeights, refiner_loss
    from l3rocc_core.refiner.network import NetConfig, TemporalOccupancyNet
    from l3rocc_core.refiner.train import _loss_terms
    rng = np.random.default_rng(0)
    samples = [box_sample(rng) for _ in range(2)]
    batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    batch['features'] = batch['features'].float()
    batch['observed_window'] = batch['observed']
    batch['known'] = torch.ones_like(batch['observed'])
    torch.manual_seed(0)
    model = TemporalOccupancyNet(NetConfig(feature_names=tuple(FEATURES), width=8, heads=2))
    with torch.no_grad():
        model.head[-1].weight.normal_(0.0, 0.5)       # not the identity: slices differ by pass
    weights = LossWeights(stream=2.0)
    terms = _loss_terms(model, batch, torch.device('cpu'), weights)[0]
    x, t = batch['features'], 6
    with torch.no_grad():
        newest = torch.stack([torch.sigmoid(model(x[:, :n])[:, -1]) for n in (4, 5, 6)], 1)
        d2 = newest[:, 2] - 2 * newest[:, 1] + newest[:, 0]
        obs = batch['observed'][:, t - 2].float()     # unobserved voxels of known GT: 0.1
        w = (obs + 0.1 * (1 - obs)) * (~batch['dynamic'][:, t - 2]).float()
        expected = (w * d2 ** 2).sum() / w.sum()
        base = refiner_loss(model(x), batch['occupancy'], batch['observed'], batch['known'],
                            weights, batch['dynamic'])['total']
    assert expected.item() > 1e-6
    assert terms['stream'].item() == pytest.approx(expected.item(), rel=1e-4)
    assert terms['total'].item() == pytest.approx(base.item() + 2.0 * expected.item(), rel=1e-4)
    # Too short for three windows (two slices), or off: no term; three slices are enough.
    short = {k: v[:, :2] for k, v in batch.items()}
    assert 'stream' in _loss_terms(model, {k: v[:, :3] for k, v in batch.items()},
                                   torch.device('cpu'), weights)[0]
    assert 'stream' not in _loss_terms(model, short, torch.device('cpu'), weights)[0]
    assert 'stream' not in _loss_terms(model, batch, torch.device('cpu'), LossWeights())[0]
    # In a run it is logged like the other terms.
    train(options(write_dataset(tmp_path / 'd'), tmp_path / 'run', stream_weight=1.0, steps=2,
                  val_every=2))
    with open(tmp_path / 'run' / 'train.csv') as fh:
        assert 'stream' in next(csv.DictReader(fh))


def test_training_improves_over_geometry(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / 'd', shards=(('train', 2, 8), ('val', 1, 8)))
    summary = train(options(data, tmp_path / 'run', steps=300, val_every=300, batch_size=4,
                            lr=1e-2))
    best = summary['best']
    assert best['val_iou'] > best['geo_iou'] + 0.05, best
    assert best['val_flicker'] < 0.7 * best['geo_flicker'], best


def test_cli_reports_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(['train', '--data', str(tmp_path / 'none'), '--out', str(tmp_path / 'o'),
                   '--steps', '2'])
    assert rc == 1
    assert 'no shards' in capsys.readouterr().err
    data = write_dataset(tmp_path / 'd')
    rc = cli_main(['train', '--data', str(data), '--out', str(tmp_path / 'o'), '--steps', '2',
                   '--voxel-size', '0.1', '--seq-len', '6'])
    assert rc == 1
    assert 'voxel_size' in capsys.readouterr().err
