"""The learned depth source: inputs, network, shipped checkpoint, training command."""

import argparse
from dataclasses import replace
import os

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import make_depth_source
from l3rocc_core.depth.network import (area_downsample, CHANNELS, DEFAULT_CHECKPOINT,
                                       DEFAULT_NET, NetworkDepth, build_model, decode_depth,
                                       geometry_channels, load_checkpoint, reduced_camera)
from l3rocc_core.depth.train import depth_loss, sample_inputs
from l3rocc_core.frame import Frame
from l3rocc_core.synth.motion import look_at
from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch single-threaded (the machine's cores are shared), as the depth stage does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pitched_pose(height: float, pitch_deg: float) -> np.ndarray:
    """Camera at (0, 0, height) facing +x, ``pitch_deg`` below the horizon, no roll."""
    p = np.radians(pitch_deg)
    eye = np.array([0.0, 0.0, height])
    return look_at(eye, eye + [np.cos(p), 0.0, -np.sin(p)])


@pytest.fixture(scope='module')
def handheld():
    """Working-resolution frames (320x240) of a handheld synthetic sequence, with exact depth."""
    seq = SyntheticSequence(SequenceSpec('industrial', 'handheld', 77, 16, 15.0, 320, 240,
                                         variety=True), ground_truth=False)
    out = []
    for i in (0, 4, 8, 15):
        f = seq.frame(i)
        out.append((Frame(f.image, f.stamp_ns, seq.pinhole, f.T_world_cam), f.depth))
    return out


@pytest.mark.parametrize('channels', [(), (1,), (3,)])
def test_area_downsample_is_the_block_mean(channels):
    """Each output pixel is the mean of its factor x factor block; a partial block is dropped."""
    rng = np.random.default_rng(3)
    factor, h, w = 4, 5, 7
    blocks = rng.integers(3, 253, (h, w) + channels).astype(np.int16)
    # A zero-sum pattern in every block: any sampling of part of a block is off its mean.
    pattern = np.diag([3, -1, -1, -1]).astype(np.int16).reshape((4, 4) + (1,) * len(channels))
    image = np.repeat(np.repeat(blocks, factor, 0), factor, 1) + np.tile(
        pattern, (h, w) + (1,) * len(channels))
    image = np.pad(image, [(0, 3), (0, 2)] + [(0, 0)] * len(channels), constant_values=255)
    out = area_downsample(image.astype(np.uint8), factor)
    assert out.shape == blocks.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, blocks, atol=1e-4)
    np.testing.assert_array_equal(area_downsample(image.astype(np.uint8), 1), image)


def test_ground_prior_matches_the_analytic_plane():
    """Check the ground prior against the analytic plane.

    Height h, pitch p: a pixel row with ray y = (v - cy) / fy meets the ground at z-depth
    h / (y cos p + sin p); rows at or above the horizon get no prior.
    """
    cam = PinholeCamera(80, 60, 50.0, 50.0, 39.5, 29.5)
    h, pitch, span = 2.0, 20.0, (0.2, 80.0)
    geo = geometry_channels(cam, _pitched_pose(h, pitch), span, 60.0)
    y = (np.arange(60) - 29.5) / 50.0
    p = np.radians(pitch)
    down = y * np.cos(p) + np.sin(p)
    expect_depth = np.where(down > 0, h / np.maximum(down, 1e-9), np.inf)
    hits = expect_depth <= 60.0
    ground = geo[CHANNELS.index('ground') - 3]
    mask = geo[CHANNELS.index('ground_mask') - 3]
    assert np.array_equal(mask > 0, np.broadcast_to(hits[:, None], (60, 80)))
    np.testing.assert_allclose(decode_depth(ground[hits], span), np.broadcast_to(
        expect_depth[hits, None], (hits.sum(), 80)), rtol=1e-4)
    assert not ground[~hits].any()
    # The elevation of the optical axis is -pitch; no pose leaves the geometry empty.
    assert geo[CHANNELS.index('elevation') - 3][30, 40] == pytest.approx(
        -np.sin(p), abs=0.01)
    assert geo[CHANNELS.index('has_pose') - 3].min() == 1.0
    none = geometry_channels(cam, None, span, 60.0)
    assert not none[2:].any() and none[0].std() > 0


def test_tiny_overfit_drives_the_loss_down():
    """A few optimiser steps on one synthetic frame halve the loss."""
    seq = SyntheticSequence(SequenceSpec('industrial', 'static', 5, 1, 15.0, 64, 48,
                                         variety=True), ground_truth=False)
    f = seq.frame(0)
    arrays = {'image': f.image[None], 'depth': f.depth[None].astype(np.float16),
              'moving': f.moving[None], 'K': seq.pinhole.K[None],
              'T_world_cam': f.T_world_cam[None],
              'sweep_depth': np.zeros((1, 48, 64), np.float16),
              'sweep_conf': np.zeros((1, 48, 64), np.float16)}
    net = dict(DEFAULT_NET, widths=[8, 8, 16, 16])
    torch.manual_seed(0)
    model = build_model(net).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, d, m = (torch.as_tensor(np.ascontiguousarray(a))[None]
               for a in sample_inputs(arrays, 0, net))
    losses = []
    for step in range(30):
        inv, logit = model(x)
        loss = depth_loss(inv, logit, d, m, net)['total']
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_shipped_checkpoint_loads_weights_only():
    """The shipped file is a plain state_dict + net config, small enough for the repo."""
    assert os.path.getsize(DEFAULT_CHECKPOINT) < 3 * 2 ** 20
    raw = torch.load(DEFAULT_CHECKPOINT, map_location='cpu', weights_only=True)
    assert set(raw) >= {'state_dict', 'net'}
    model, net = load_checkpoint(DEFAULT_CHECKPOINT)
    assert not model.training and net['in_channels'] == len(CHANNELS)


def test_factory_builds_the_network_source():
    src = make_depth_source(DepthConfig(depth_source='network'), 'cpu')
    assert isinstance(src, NetworkDepth) and src.name == 'network'
    assert src.uses_sources and not src.requires_sources


def _check(result, frame: Frame, config: DepthConfig, device: str = 'cpu') -> None:
    cam = reduced_camera(frame.camera, config.depth_downsample)
    assert result.camera == cam and tuple(result.depth.shape) == (cam.height, cam.width)
    assert result.depth.device.type == device and result.depth.dtype == torch.float32
    c = result.confidence
    assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    d = result.depth[result.valid]
    assert bool(result.valid.any())
    assert float(d.min()) >= config.min_depth and float(d.max()) <= config.max_depth
    assert not bool((result.depth[~result.valid] != 0).any())


def test_network_depth_with_sources_without_sources_and_without_pose(handheld):
    """Every input situation gives a depth map; with pose it is metric and confident.

    ``network_min_confidence`` 0 keeps every pixel: without a pose nothing reaches the default.
    """
    cfg = DepthConfig(depth_source='network', max_depth=6.0, network_min_confidence=0.0)
    est = NetworkDepth(cfg, 'cpu')
    (ref, gt), sources = handheld[-1], [f for f, _ in handheld[:-1]]
    no_pose = Frame(ref.image, ref.stamp_ns, ref.camera, None)
    results = {'sources': est.estimate(ref, sources), 'no_sources': est.estimate(ref, []),
               'no_pose': est.estimate(no_pose, [])}
    from l3rocc_core.metrics import depth_metrics
    from l3rocc_core.depth.truth import DepthTruth
    cam = reduced_camera(ref.camera, cfg.depth_downsample)
    truth = DepthTruth({ref.stamp_ns: (gt, ref.camera, ref.T_world_cam)}).render(
        ref.stamp_ns, cam, ref.T_world_cam)
    scores = {}
    for name, res in results.items():
        _check(res, ref, cfg)
        scores[name] = depth_metrics(res.depth, truth, res.valid, cfg.max_depth)
    assert scores['sources']['abs_rel'] < 0.15 and scores['no_sources']['abs_rel'] < 0.18
    assert float(results['no_pose'].confidence.mean()) < float(
        results['sources'].confidence.mean())


def test_network_min_confidence_drops_the_depth_it_does_not_vouch_for(handheld):
    """Pixels under network_min_confidence give no depth, the worse ones; the sweep's stay.

    The confidence is trained as the probability that the depth is within 10 %: the pixels it
    drops must be the less accurate ones, and only those. Where the plane sweep matched, its
    depth is kept whatever the network's confidence.
    """
    (ref, gt), sources = handheld[-1], [f for f, _ in handheld[:-1]]
    loose = DepthConfig(depth_source='network', max_depth=6.0, network_min_confidence=0.0,
                        network_sweep_min_confidence=0.0)
    strict = replace(loose, network_min_confidence=0.5)
    est = NetworkDepth(loose, 'cpu')
    all_px = est.estimate(ref, [])
    est.config = strict
    kept = est.estimate(ref, [])
    assert torch.equal(kept.valid, all_px.valid & (all_px.confidence >= 0.5))
    assert torch.equal(kept.confidence, all_px.confidence)
    assert 0 < int(kept.valid.sum()) < int(all_px.valid.sum())
    from l3rocc_core.depth.truth import DepthTruth
    cam = reduced_camera(ref.camera, strict.depth_downsample)
    truth = torch.from_numpy(DepthTruth({ref.stamp_ns: (gt, ref.camera, ref.T_world_cam)}).render(
        ref.stamp_ns, cam, ref.T_world_cam))
    rel = (all_px.depth - truth).abs() / truth.clamp_min(1e-6)
    scored = truth > 0
    dropped = all_px.valid & ~kept.valid & scored
    assert float(rel[kept.valid & scored].median()) < 0.5 * float(rel[dropped].median())
    # With sources: the sweep's valid pixels stay valid under the gate, with the sweep's depth.
    parts = est.estimate_parts(ref, sources)
    sweep_ok = parts.sweep.valid
    assert bool((sweep_ok & (parts.depth.confidence < 0.5)).any())
    assert torch.equal(parts.depth.valid, sweep_ok | parts.network.valid)
    assert torch.equal(parts.network.valid, parts.network.valid & (parts.depth.confidence >= 0.5))
    assert torch.equal(parts.depth.depth[sweep_ok], parts.sweep.depth[sweep_ok])


def test_network_sweep_min_confidence_drops_the_matches_the_network_doubts(handheld):
    """Sweep matches where the network's confidence is under the threshold give no depth.

    The network sees the sweep's depth among its inputs; where it stays unsure of a match, the
    match is the worse one. Only those pixels change, and they are left without depth.
    """
    (ref, gt), sources = handheld[-1], [f for f, _ in handheld[:-1]]
    keep_all = DepthConfig(depth_source='network', max_depth=6.0,
                           network_sweep_min_confidence=0.0)
    est = NetworkDepth(keep_all, 'cpu')
    before = est.estimate_parts(ref, sources)
    est.config = replace(keep_all, network_sweep_min_confidence=0.3)
    after = est.estimate_parts(ref, sources)
    conf = before.depth.confidence
    doubted = before.sweep.valid & (conf < 0.3)
    assert torch.equal(after.depth.confidence, conf)
    assert torch.equal(after.depth.valid, before.depth.valid & ~doubted)
    assert torch.equal(after.depth.depth[after.depth.valid], before.depth.depth[after.depth.valid])
    assert not bool(after.depth.depth[doubted].any())
    # The sweep's own result is left as the sweep gave it (depth exactly where valid).
    assert torch.equal(after.sweep.valid, before.sweep.valid)
    assert torch.equal(after.sweep.valid, after.sweep.depth > 0)
    from l3rocc_core.depth.truth import DepthTruth
    cam = reduced_camera(ref.camera, keep_all.depth_downsample)
    truth = torch.from_numpy(DepthTruth({ref.stamp_ns: (gt, ref.camera, ref.T_world_cam)}).render(
        ref.stamp_ns, cam, ref.T_world_cam))
    rel = (before.sweep.depth - truth).abs() / truth.clamp_min(1e-6)
    scored = truth > 0
    dropped, kept = doubted & scored, before.sweep.valid & ~doubted & scored
    assert int(dropped.sum()) >= 20 and int(kept.sum()) > int(dropped.sum())
    assert float(rel[dropped].median()) > 2.0 * float(rel[kept].median())


@CUDA
def test_network_depth_on_cuda(handheld):
    cfg = DepthConfig(depth_source='network', max_depth=6.0)
    est = NetworkDepth(cfg, 'cuda')
    (ref, _), sources = handheld[-1], [f for f, _ in handheld[:-1]]
    _check(est.estimate(ref, sources), ref, cfg, 'cuda')
    cpu = NetworkDepth(cfg, 'cpu').estimate(ref, [])
    gpu = est.estimate(ref, [])
    assert torch.allclose(cpu.confidence, gpu.confidence.cpu(), atol=1e-3)


def test_train_command_depth_runs_resumes_and_exports(tmp_path):
    """``l3rocc train --model depth``: renders data, trains, resumes, exports a loadable file."""
    from l3rocc_core.tools import train as tool

    parser = argparse.ArgumentParser()
    tool.add_arguments(parser)
    assert parser.parse_args(['--data', 'd', '--out', 'o', '--steps', '1']).model == 'refiner'
    export = str(tmp_path / 'net.pt')
    argv = ['--model', 'depth', '--data', str(tmp_path / 'data'), '--out', str(tmp_path / 'run'),
            '--sequences', '2', '--val-sequences', '1', '--val-every', '2', '--batch-size',
            '2', '--depth-widths', '4', '4', '8', '8', '--export-path', export]
    assert tool.run(parser.parse_args(argv + ['--steps', '2'])) == 0
    # Mark the first run's validation row: a resumed run continues the log, a fresh one
    # would start it again.
    val_csv = tmp_path / 'run' / 'val.csv'
    head, row = val_csv.read_text(encoding='utf-8').split()
    val_csv.write_text(f'{head}\n2,123.0{row[row.index(",", 2):]}\n', encoding='utf-8')
    assert tool.run(parser.parse_args(argv + ['--steps', '4', '--resume'])) == 0
    last = torch.load(str(tmp_path / 'run' / 'last.pt'), weights_only=True)
    assert last['step'] == 4
    rows = [line.split(',') for line in val_csv.read_text(encoding='utf-8').split()[1:]]
    assert [r[0] for r in rows] == ['2', '4'] and rows[0][1] == '123.0'

    assert (tmp_path / 'run' / 'loss.png').is_file()
    est = NetworkDepth(DepthConfig(depth_source='network'), 'cpu', export)
    assert est.net['widths'] == [4, 4, 8, 8]


def test_pipeline_gets_depth_for_a_fixed_camera():
    """Map what a camera that never moves sees with ``depth_source: network``.

    Every frame gets depth (the plane sweep gives none there), and most occupied voxels lie
    within 8 voxel steps (40 cm) of the true surfaces (measured: 64 %; within 2 steps only 31 %:
    the network's depth is about 25 % off at a few metres; 40 % with the pose withheld).
    """
    from scipy.ndimage import binary_dilation

    from l3rocc_core.config import PipelineConfig
    from l3rocc_core.pipeline import OccupancyPipeline

    seq = SyntheticSequence(SequenceSpec('industrial', 'static', 3, 3, 2.0, 320, 240,
                                         variety=True), ground_truth=False)
    params = seq.recommended_parameters()
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'grid_min': params['grid_min'], 'grid_max': params['grid_max'], 'window_size': 3,
        'refiner': 'none', 'device': 'cpu', 'depth_source': 'network',
        'max_depth': params['max_depth']}))
    truth = np.zeros(pipe.grid.dims, bool)
    rays = seq.pinhole.pixel_rays()
    for i in range(3):
        f = seq.frame(i)
        out = pipe.push(Frame(f.image, f.stamp_ns, seq.pinhole, f.T_world_cam))
        hit = (f.depth > 0) & (f.depth <= params['max_depth'])
        p = (rays[hit] * f.depth[hit, None]) @ f.T_world_cam[:3, :3].T + f.T_world_cam[:3, 3]
        ijk = pipe.grid.world_to_ijk(p)
        ijk = ijk[pipe.grid.in_bounds(ijk)]
        truth[tuple(ijk.T)] = True
    assert pipe.stats['no_depth_source'] == 0
    idx, _ = out.occupied()
    near = binary_dilation(truth, iterations=8)[tuple(pipe.grid.flat_to_ijk(idx).T)]
    assert len(idx) > 500 and near.mean() > 0.5, (len(idx), near.mean())
