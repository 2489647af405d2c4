"""The refiner network, its loss, its checkpoints and its inference wrapper.

The scenes are analytic: a box moving one voxel per slice over a static floor, seen along +y by
rays that stop at the first occupied voxel; some ray columns return nothing (holes) and the
log-odds are noisy. The ground truth is exact.
"""

import math
import os
from pathlib import Path
from typing import Dict

import pytest
import torch

from l3rocc_core.config import RefinerConfig
from l3rocc_core.refiner.checkpoint import (CheckpointError, load_model, read_checkpoint,
                                            save_model)
from l3rocc_core.refiner.losses import LossWeights, refiner_loss, stream_smoothness
from l3rocc_core.refiner.inference import load_refiner, NetworkRefiner
from l3rocc_core.refiner.network import (BUNDLED_CHECKPOINT, NetConfig, TemporalOccupancyNet,
                                         count_parameters)

FEATURES = ('logodds', 'hits', 'free', 'observed', 'confidence')


pytestmark = pytest.mark.usefixtures('one_thread')


def moving_box_window(t: int = 8, dims=(16, 16, 8), seed: int = 0,
                      drop: float = 0.3) -> Dict[str, torch.Tensor]:
    """Evidence and exact ground truth of a box moving along +x over a floor.

    :return: features float [T, 5, X, Y, Z], occupancy bool, observed bool [T, X, Y, Z]
    """
    gen = torch.Generator().manual_seed(seed)
    nx, ny, nz = dims
    occ = torch.zeros(t, nx, ny, nz, dtype=torch.bool)
    occ[:, :, :, 0] = True  # floor
    for s in range(t):
        occ[s, 2 + s:6 + s, 8:12, 1:5] = True
    y = torch.arange(ny).view(1, 1, ny, 1)
    first = torch.where(occ.any(2), occ.float().argmax(2), torch.full((t, nx, nz), ny))
    first = first[:, :, None, :]  # [T, X, 1, Z]
    ray_ok = torch.rand(t, nx, 1, nz, generator=gen) >= drop  # hole: the column returns nothing
    free = (y < first) & ray_ok
    hit = (y == first) & ray_ok
    seen_now = free | hit
    observed = torch.cummax(seen_now.int(), dim=0).values.bool()
    hits = torch.cumsum(hit.float(), dim=0)
    frees = torch.cumsum(free.float(), dim=0)
    noise = 0.3 * torch.randn(t, nx, ny, nz, generator=gen)
    logodds = (0.85 * hits - 0.4 * frees + noise * seen_now).clamp(-2.0, 3.5)
    confidence = seen_now.float() * 0.8
    features = torch.stack([logodds, hits, frees, observed.float(), confidence], dim=1)
    return {'features': features, 'occupancy': occ, 'observed': observed}


def small_net(**kw) -> TemporalOccupancyNet:
    torch.manual_seed(0)
    return TemporalOccupancyNet(NetConfig(feature_names=FEATURES, width=8, heads=2, **kw))


# ---------------------------------------------------------------- losses


def test_loss_terms_match_hand_computed_values() -> None:
    p = torch.tensor([0.1, 0.4, 0.9, 0.2])  # one voxel over T = 4 slices
    g = torch.tensor([0.0, 1.0, 1.0, 0.0])
    logits = torch.log(p / (1 - p)).view(1, 4, 1, 1, 1)
    target = g.view(1, 4, 1, 1, 1)
    observed = torch.ones(1, 4, 1, 1, 1, dtype=torch.bool)
    w = LossWeights(geo=1.0, temporal=0.3, l1=0.5, unobserved=0.0)
    out = refiner_loss(logits, target, observed, weights=w)
    bce = -(math.log(0.9) + math.log(0.4) + math.log(0.9) + math.log(0.8)) / 4
    # second differences at t = 1, 2: 0.9 - 0.8 + 0.1 = 0.2 and 0.2 - 1.8 + 0.4 = -1.2
    temporal = (0.2 ** 2 + 1.2 ** 2) / 2
    l1 = (0.1 + 0.6 + 0.1 + 0.2) / 4
    assert out['bce'].item() == pytest.approx(bce, rel=1e-5)
    assert out['temporal'].item() == pytest.approx(temporal, rel=1e-5)
    assert out['l1'].item() == pytest.approx(l1, rel=1e-5)
    assert out['total'].item() == pytest.approx(bce + 0.3 * temporal + 0.5 * l1, rel=1e-5)


def test_loss_weights_unobserved_and_unknown_voxels() -> None:
    # two voxels, T = 3: voxel 0 observed, voxel 1 unobserved (weight 0.25), GT known everywhere
    p = torch.tensor([[0.2, 0.5, 0.7], [0.6, 0.6, 0.3]]).T.reshape(1, 3, 2, 1, 1)
    logits = torch.log(p / (1 - p))
    g = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]).T.reshape(1, 3, 2, 1, 1)
    observed = torch.zeros(1, 3, 2, 1, 1, dtype=torch.bool)
    observed[:, :, 0] = True
    w = LossWeights(unobserved=0.25)
    out = refiner_loss(logits, g, observed, weights=w)
    l1 = ((0.2 + 0.5 + 0.3) + 0.25 * (0.4 + 0.4 + 0.3)) / (3 + 0.25 * 3)
    temporal = ((0.7 - 1.0 + 0.2) ** 2 + 0.25 * (0.3 - 1.2 + 0.6) ** 2) / 1.25
    assert out['l1'].item() == pytest.approx(l1, rel=1e-5)
    assert out['temporal'].item() == pytest.approx(temporal, rel=1e-5)
    # unknown ground truth on voxel 1: only voxel 0 counts
    known = ~torch.zeros_like(observed)
    known[:, :, 1] = False
    out = refiner_loss(logits, g, observed, known=known, weights=w)
    assert out['l1'].item() == pytest.approx((0.2 + 0.5 + 0.3) / 3, rel=1e-5)
    assert out['temporal'].item() == pytest.approx((0.7 - 1.0 + 0.2) ** 2, rel=1e-5)


def test_loss_dynamic_weight_scales_bce_and_l1_not_smoothness() -> None:
    # two observed voxels, T = 3; voxel 1 belongs to a moving object in slice 1 only
    p = torch.tensor([[0.2, 0.5, 0.7], [0.6, 0.6, 0.3]]).T.reshape(1, 3, 2, 1, 1)
    logits = torch.log(p / (1 - p))
    g = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]).T.reshape(1, 3, 2, 1, 1)
    observed = torch.ones(1, 3, 2, 1, 1, dtype=torch.bool)
    dynamic = torch.zeros_like(observed)
    dynamic[0, 1, 1] = True
    plain = refiner_loss(logits, g, observed, weights=LossWeights(), dynamic=dynamic)
    out = refiner_loss(logits, g, observed, weights=LossWeights(dynamic=3.0), dynamic=dynamic)
    err = [0.2, 0.5, 0.3, 0.4, 0.4, 0.3]  # |p - g|, voxel 0 then voxel 1
    assert plain['l1'].item() == pytest.approx(sum(err) / 6, rel=1e-5)
    assert out['l1'].item() == pytest.approx((sum(err) + 2 * 0.4) / 8, rel=1e-5)
    assert out['bce'].item() == pytest.approx(
        (plain['bce'].item() * 6 - math.log(0.6) * 2) / 8, rel=1e-5)
    assert out['temporal'].item() == pytest.approx(plain['temporal'].item(), rel=1e-6)


def test_loss_is_zero_smoothness_for_linear_ramps_and_checks_shapes() -> None:
    p = torch.linspace(0.1, 0.9, 6).view(1, 6, 1, 1, 1)
    out = refiner_loss(torch.log(p / (1 - p)), (p > 0.5).float(),
                       torch.ones_like(p, dtype=torch.bool))
    assert out['temporal'].item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match='target shape'):
        refiner_loss(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 1),
                     torch.ones(1, 3, 2, 2, 2, dtype=torch.bool))


def test_stream_smoothness_by_hand() -> None:
    # Two voxels' newest slices over three windows: 0.2, 0.5, 0.3 (2nd difference -0.5) and a
    # ramp 0.1, 0.2, 0.3 (0).
    newest = torch.tensor([[0.2, 0.1], [0.5, 0.2], [0.3, 0.3]]).view(1, 3, 1, 1, 2)
    both = torch.ones(1, 1, 1, 2)
    assert stream_smoothness(newest, both).item() == pytest.approx(0.25 / 2)
    assert stream_smoothness(newest, torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)).item() == \
        pytest.approx(0.25)
    assert stream_smoothness(newest, torch.zeros(1, 1, 1, 2)).item() == 0.0
    with pytest.raises(ValueError, match='3'):
        stream_smoothness(newest[:, :2], both)
    with pytest.raises(ValueError, match='weight shape'):
        stream_smoothness(newest, both[..., :1])


# ---------------------------------------------------------------- network


def test_network_shapes_odd_dims_and_identity_at_init() -> None:
    net = small_net().eval()
    w = moving_box_window(t=5, dims=(9, 7, 5))
    with torch.no_grad():
        logits = net(w['features'][None])
    assert logits.shape == (1, 5, 9, 7, 5)
    # zero-initialised correction: the untrained network is the geometry answer
    assert torch.allclose(logits[0], 3.5 * w['features'][:, 0] - 1.0, atol=1e-6)
    with pytest.raises(ValueError, match='C=5'):
        net(torch.zeros(1, 5, 4, 8, 8, 8))
    with pytest.raises(ValueError, match='max_len'):
        net(torch.zeros(1, 65, 5, 2, 2, 2))


def test_network_overfits_one_batch() -> None:
    torch.manual_seed(0)
    net = small_net(causal=True)
    net.checkpointing = True  # gradient checkpointing path
    batch = [moving_box_window(t=6, dims=(12, 12, 6), seed=s) for s in range(2)]
    x = torch.stack([b['features'] for b in batch])
    g = torch.stack([b['occupancy'] for b in batch])
    obs = torch.stack([b['observed'] for b in batch])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = refiner_loss(net(x), g, obs)
        opt.zero_grad()
        out['total'].backward()
        opt.step()
        losses.append(out['total'].item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_mixed_precision_training_step(device: str) -> None:
    """``l3rocc train --amp``: bfloat16 autocast gives the fp32 loss closely and still learns.

    The training loop enables it on CUDA only; the same code path runs here on each device.
    """
    from l3rocc_core.refiner.train import _loss_terms
    dev = torch.device(device)
    batch = [moving_box_window(t=6, dims=(12, 12, 6), seed=s) for s in range(2)]
    occ = torch.stack([b['occupancy'] for b in batch])
    data = {'features': torch.stack([b['features'] for b in batch]), 'occupancy': occ,
            'observed_window': torch.stack([b['observed'] for b in batch]),
            'known': torch.ones_like(occ), 'dynamic': torch.zeros_like(occ)}
    net = small_net().to(dev).train()
    with torch.no_grad():
        for p in net.parameters():   # away from the zero-initialised head
            p.add_(0.05 * torch.randn_like(p))
    full = _loss_terms(net, data, dev, None, use_amp=False)[0]['total'].item()
    dtypes = []
    hook = net.down.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    mixed, logits, _ = _loss_terms(net, data, dev, None, use_amp=True)
    hook.remove()
    assert dtypes == [torch.bfloat16]   # autocast did engage
    assert logits.dtype == torch.float32 and logits.device.type == device
    assert mixed['total'].item() == pytest.approx(full, rel=1e-2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        terms = _loss_terms(net, data, dev, None, use_amp=True)[0]
        opt.zero_grad()
        terms['total'].backward()
        opt.step()
        losses.append(terms['total'].item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], losses


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    w = moving_box_window(t=4, dims=(8, 8, 4))
    grads = []
    for ckpt in (False, True):
        net = small_net().train()
        with torch.no_grad():
            net.head[-1].weight.normal_()  # non-zero head so every layer gets gradients
        net.checkpointing = ckpt
        loss = refiner_loss(net(w['features'][None]), w['occupancy'][None],
                            w['observed'][None])['total']
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_parameter_count_is_small() -> None:
    n = count_parameters(TemporalOccupancyNet(NetConfig()))
    assert 1_000 < n < 500_000  # a few MB at most


# ---------------------------------------------------------------- checkpoints


def _trained_like(net: TemporalOccupancyNet) -> TemporalOccupancyNet:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_replicate_padding_leaves_no_trace_of_the_grid_border() -> None:
    """Spatially uniform evidence gives a uniform answer: the network cannot see the border.

    With zero padding the border voxels answer differently (the first checkpoints learned a
    floor at the bottom of every grid from exactly this).
    """
    gen = torch.Generator().manual_seed(1)
    per_slice = torch.rand(6, 5, 1, 1, 1, generator=gen)
    x = per_slice.expand(6, 5, 9, 8, 7)[None].contiguous()  # odd dims: padded to even inside
    spread = {}
    for padding in ('replicate', 'zeros'):
        net = _trained_like(small_net(padding=padding))
        with torch.no_grad():
            logits = net(x)[0]
        # The 2x2x2 up-sampling gives each of the 8 children of a coarse voxel its own value:
        # uniform means every voxel equals the voxel of the same parity at the corner.
        ix, iy, iz = (torch.arange(n) % 2 for n in logits.shape[1:])
        corner = logits[:, ix[:, None, None], iy[None, :, None], iz[None, None, :]]
        spread[padding] = float((logits - corner).abs().max())
    assert spread['replicate'] < 1e-4
    assert spread['zeros'] > 1e-2


def test_padding_is_stored_and_old_checkpoints_keep_zero_padding() -> None:
    assert NetConfig().padding == 'zeros'  # checkpoints written before the option existed
    cfg = NetConfig(feature_names=FEATURES, padding='replicate')
    assert NetConfig.from_dict(cfg.to_dict()).padding == 'replicate'
    with pytest.raises(ValueError, match='padding'):
        NetConfig(padding='reflect')


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    net = _trained_like(small_net())
    path = tmp_path / 'model.pt'
    meta = {'command': 'l3rocc train --data d --out o', 'data_seed': 7,
            'metrics': {'val_iou': 0.5, 'val_flicker': 0.01}}
    save_model(str(path), net, meta)
    loaded, meta2 = load_model(str(path), feature_names=FEATURES)
    assert meta2['data_seed'] == 7 and meta2['metrics']['val_iou'] == 0.5
    assert meta2['command'].startswith('l3rocc train')
    x = moving_box_window()['features'][None]
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    # float16 export: half the bytes, same answer within fp16 rounding
    half = tmp_path / 'half.pt'
    save_model(str(half), net, meta, half=True)
    loaded_half, _ = load_model(str(half))
    with torch.no_grad():
        assert torch.allclose(net(x), loaded_half(x), atol=2e-2)


def test_missing_and_corrupt_checkpoints_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='not found') as err:
        load_model(str(tmp_path / 'nope.pt'))
    assert err.value.kind == 'checkpoint_missing'
    net = small_net()
    good = tmp_path / 'good.pt'
    save_model(str(good), net)
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'\x00not a checkpoint' * 50)
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError) as err:
            load_model(str(bad))
        assert err.value.kind == 'checkpoint_corrupt', str(err.value)
        assert str(bad) in str(err.value)


def test_incompatible_checkpoints_raise_clear_errors(tmp_path: Path) -> None:
    net = small_net()
    path = tmp_path / 'model.pt'
    save_model(str(path), net)
    with pytest.raises(CheckpointError, match='fusion stage provides') as err:
        load_model(str(path), feature_names=('logodds', 'hits'))
    assert err.value.kind == 'checkpoint_incompatible'
    ckpt = read_checkpoint(str(path))
    cases = {
        'format': dict(ckpt, format='something-else'),
        'version': dict(ckpt, version=99),
        'architecture': dict(ckpt, arch=dict(ckpt['arch'], no_such_field=1)),
        'do not match': dict(ckpt, arch=dict(ckpt['arch'], width=4)),
        'disagree': dict(ckpt, feature_names=['a', 'b']),
    }
    for reason, bad in cases.items():
        p = tmp_path / f'bad_{reason.replace(" ", "_")}.pt'
        torch.save(bad, p)
        with pytest.raises(CheckpointError, match=reason) as err:
            load_model(str(p))
        assert err.value.kind == 'checkpoint_incompatible'
    not_dict = tmp_path / 'list.pt'
    torch.save([1, 2, 3], not_dict)
    with pytest.raises(CheckpointError, match='expected a dict'):
        load_model(str(not_dict))


class _Payload:
    """Unpickling this would create a file (the classic ``__reduce__`` attack)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_malicious_checkpoint_executes_nothing(tmp_path: Path) -> None:
    target = tmp_path / 'pwned.txt'
    path = tmp_path / 'evil.pt'
    ckpt = {'format': 'l3rocc-refiner', 'version': 1, 'payload': _Payload(str(target))}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match='nothing was executed') as err:
        load_model(str(path))
    assert err.value.kind == 'checkpoint_unsafe'
    assert not target.exists()
    # the payload is real: an unsafe loader would have created the file
    torch.load(path, weights_only=False)
    assert target.exists()


# ---------------------------------------------------------------- inference wrapper


def test_load_refiner_refines_a_window(tmp_path: Path) -> None:
    net = _trained_like(small_net())
    path = tmp_path / 'model.pt'
    save_model(str(path), net, {'data_seed': 1})
    cfg = RefinerConfig(checkpoint=str(path), device='cpu')
    refiner = load_refiner(cfg, 'auto', feature_names=FEATURES)
    assert isinstance(refiner, NetworkRefiner)
    assert refiner.feature_names == FEATURES and refiner.device.type == 'cpu'
    w = moving_box_window(t=6, dims=(10, 9, 5))
    logodds = w['features'][:, 0]
    prob = refiner.refine(w['features'], logodds, w['observed'])
    assert prob.shape == (6, 10, 9, 5) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0
    with torch.no_grad():
        expected = torch.sigmoid(net(w['features'][None])[0])
    assert torch.allclose(prob, expected, atol=1e-6)
    with pytest.raises(ValueError, match='observed must be'):
        refiner.refine(w['features'], logodds, w['observed'][:, :5])
    with pytest.raises(ValueError, match='features must be'):
        refiner.refine(w['features'][:, :4], logodds, w['observed'])
    with pytest.raises(CheckpointError) as err:
        load_refiner(RefinerConfig(checkpoint=str(tmp_path / 'missing.pt')), 'cpu')
    assert err.value.kind == 'checkpoint_missing'


def test_bundled_checkpoint_loads_and_matches_the_fusion_features() -> None:
    assert os.path.isfile(BUNDLED_CHECKPOINT), BUNDLED_CHECKPOINT
    assert os.path.getsize(BUNDLED_CHECKPOINT) < 2 * 2 ** 20
    refiner = load_refiner(RefinerConfig(), 'cpu')  # checks fusion.FEATURE_NAMES when present
    meta = refiner.metadata
    assert meta['command'].startswith('l3rocc train') and 'data_seed' in meta
    assert 'val_iou' in meta['metrics']
    c = len(refiner.feature_names)
    prob = refiner.refine(torch.zeros(4, c, 6, 6, 4), torch.zeros(4, 6, 6, 4),
                          torch.zeros(4, 6, 6, 4, dtype=torch.bool))
    assert prob.shape == (4, 6, 6, 4)


def test_device_parity(device: str, tmp_path: Path) -> None:
    net = _trained_like(small_net())
    path = tmp_path / 'model.pt'
    save_model(str(path), net)
    w = moving_box_window(t=8, dims=(16, 16, 8))
    ref = load_refiner(str(path), 'cpu', feature_names=FEATURES)
    out = load_refiner(str(path), device, feature_names=FEATURES)
    feats = w['features'].to(device)
    prob = out.refine(feats, feats[:, 0], w['observed'].to(device))
    assert prob.device.type == device
    expected = ref.refine(w['features'], w['features'][:, 0], w['observed'])
    assert torch.allclose(prob.cpu(), expected, atol=1e-4)
    # ``newest`` update with a revisited slice: cached encodings on the device, same slices
    assert out.model.streams
    got = out.refine_newest(list(range(8)), lambda ks: w['features'][ks],
                            w['observed'][[3, 7]].to(device), [3])
    assert got.device.type == device
    assert torch.allclose(got.cpu(), expected[[3, 7]], atol=1e-4)
