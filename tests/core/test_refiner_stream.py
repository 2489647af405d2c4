"""``network_update: newest``: the newest slice from cached per-slice encodings.

The network's newest-slice output needs the other slices only through their encodings (one
attention block), so encoding each slice once and running attention, decoder and head for the
newest slice alone must give exactly the newest slice of the whole-window pass. In the pipeline,
older slices then keep the estimate they got when they were newest.
"""

import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import PipelineConfig
from l3rocc_core.frame import Frame
from l3rocc_core.pipeline import OccupancyPipeline
from l3rocc_core.refiner.inference import NetworkRefiner, resolve_update
from l3rocc_core.refiner.network import active_cells, NetConfig, TemporalOccupancyNet

CAM = PinholeCamera(96, 72, 80.0, 80.0, 47.5, 35.5)
WALL_Z = 1.52  # a wall facing the camera; the camera looks along world +z


def wall_frame(n: int, x: float):
    """(frame, exact depth [H, W]) of the camera at (x, 0, 0) looking at the wall."""
    T_world_cam = np.eye(4)
    T_world_cam[0, 3] = x
    image = np.zeros((CAM.height, CAM.width, 3), np.uint8)
    return (Frame(image, n * 33_333_333, CAM, T_world_cam),
            torch.full((CAM.height, CAM.width), WALL_Z))


pytestmark = pytest.mark.usefixtures('one_thread')


def _net(**kw) -> TemporalOccupancyNet:
    torch.manual_seed(0)
    net = TemporalOccupancyNet(NetConfig(width=8, heads=2, **kw)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('padding', ['zeros', 'replicate'])
def test_newest_slice_from_cached_encodings_equals_the_window_pass(causal: bool,
                                                                   padding: str) -> None:
    net = _net(causal=causal, padding=padding)
    x = torch.randn(1, 7, 5, 9, 7, 5)  # odd dims: padded inside
    with torch.no_grad():
        full = net(x)[0]
        encoded = net.encode_slices(x[0])
        assert encoded.shape == (7, 5, 4, 3, 8)
        for t in range(1, 8):  # every window length, as when a stream starts
            newest = net.forward_newest(encoded[:t], x[0, t - 1])
            expected = net(x[:, :t])[0, -1]
            assert torch.allclose(newest, expected, atol=1e-5), t
        assert torch.allclose(net.forward_newest(encoded, x[0, -1]), full[-1], atol=1e-5)


@pytest.mark.parametrize('causal', [False, True])
def test_chosen_slices_and_cached_keys_equal_the_window_pass(causal: bool) -> None:
    net = _net(causal=causal)
    x = torch.randn(1, 6, 5, 8, 6, 4)
    with torch.no_grad():
        full = net(x)[0]
        encoded = net.encode_slices(x[0])
        for idx in ([1, 5], [0], [3, -1], [4, 2, 0]):
            out = net.forward_slices(encoded, x[0, idx], idx)
            assert out.shape == (len(idx), 8, 6, 4)
            assert torch.allclose(out, full[idx], atol=1e-5), idx
        seq = torch.randn(10, 6, 8)
        attn = net.attn[0].attn
        assert torch.allclose(attn(seq, [2, 4]), attn(seq)[:, [2, 4]], atol=1e-6)
        with pytest.raises(ValueError, match='outside a window'):
            attn(seq, [6])
        with pytest.raises(ValueError, match='K=2'):
            net.forward_slices(encoded, x[0, :1], [0, 1])
        with pytest.raises(ValueError, match='outside a window'):
            net.forward_slices(encoded, x[0, :1], [6])
        # A stream projects each slice's keys and values once; together they act as the window's.
        per_slice = [net.slice_keys(encoded[i:i + 1]) for i in range(6)]  # [N, 1, 2W] each
        keys = torch.cat(per_slice, dim=1)
        assert keys.shape == (4 * 3 * 2, 6, 16)
        torch.testing.assert_close(keys, net.slice_keys(encoded))
        for idx in ([5], [1, 5]):
            out = net.forward_slices_kv(encoded[idx], keys, x[0, idx], idx)
            assert torch.allclose(out, full[idx], atol=1e-5), idx
        with pytest.raises(ValueError, match='keys must be'):
            net.forward_slices_kv(encoded[[5]], keys[..., :8], x[0, [5]], [5])
        with pytest.raises(ValueError, match='1 encodings'):
            net.forward_slices_kv(encoded[[5]], keys, x[0, [4, 5]], [4, 5])


def test_forward_newest_rejects_bad_input() -> None:
    net = _net()
    x = torch.randn(3, 5, 8, 8, 4)
    enc = net.encode_slices(x)
    with pytest.raises(ValueError, match='do not fit'):
        net.forward_newest(enc, torch.randn(5, 6, 8, 4))
    with pytest.raises(ValueError, match='W=8'):
        net.forward_newest(enc[..., :4], x[-1])
    two = _net(attn_blocks=2)
    assert not two.streams
    with pytest.raises(ValueError, match='one attention block'):
        two.forward_newest(two.encode_slices(x), x[-1])
    assert resolve_update('newest', torch.device('cpu'), two) == 'window'
    assert resolve_update('auto', torch.device('cpu'), net) == 'newest'
    assert resolve_update('auto', torch.device('cuda'), net) == 'window'
    with pytest.raises(ValueError, match='network_update'):
        resolve_update('sometimes', torch.device('cpu'), net)


def _run(update: str, n: int = 7, revisit: int = 0, hysteresis: float = 0.15):
    config = PipelineConfig().with_values({
        'grid_min': [-1.0, -1.0, 0.0], 'grid_max': [1.0, 1.0, 2.0], 'window_size': 4,
        'refiner': 'network', 'network_update': update, 'device': 'cpu',
        'network_revisit_age': revisit, 'occupancy_hysteresis': hysteresis})
    pipe = OccupancyPipeline(config)
    pipe.refiner = NetworkRefiner(_net(), torch.device('cpu'), update=update,
                                  support_voxels=-1, revisit_age=revisit)
    outs = []
    for k in range(n):
        outs.append(pipe.push_depth(*wall_frame(k, 0.03 * k)))
    return pipe, outs


def test_pipeline_newest_mode_matches_the_window_pass_on_the_newest_slice() -> None:
    _, newest = _run('newest')
    _, window = _run('window')
    for a, b in zip(newest, window):
        np.testing.assert_allclose(a.prob[-1], b.prob[-1], atol=1e-5)
        assert np.array_equal(a.observed, b.observed)
    # older slices keep the estimate they got when they were newest
    for k in range(1, len(newest)):
        for back in range(1, min(k, 3) + 1):
            np.testing.assert_array_equal(newest[k].prob[-1 - back], newest[k - back].prob[-1])
    # ... which the window pass re-estimates with the newer slices
    assert not np.allclose(window[-1].prob[0], window[-4].prob[-1], atol=1e-5)


def test_reset_and_new_slices_drop_cached_encodings() -> None:
    pipe, _ = _run('newest', n=5)
    assert len(pipe.refiner._cached) == 4  # keys of every slice of the window
    pipe.reset()
    assert not pipe.refiner._cached
    out = pipe.push_depth(*wall_frame(9, 0.0))
    assert out.num_slices == 1 and len(pipe.refiner._cached) == 1


def test_newest_mode_revisits_the_slice_of_network_revisit_age() -> None:
    _, newest = _run('newest', revisit=3, hysteresis=0.0)
    _, window = _run('window', hysteresis=0.0)
    for k, (a, b) in enumerate(zip(newest, window)):
        np.testing.assert_allclose(a.prob[-1], b.prob[-1], atol=1e-5)
        if a.num_slices >= 3:  # the slice 3 frames old: as the window pass estimates it now
            np.testing.assert_allclose(a.prob[-3], b.prob[-3], atol=1e-5)
            # the slice between keeps its estimate from when it was newest
            np.testing.assert_array_equal(a.prob[-2], newest[k - 1].prob[-1])
    # the revisited estimate differs from the one it got as the newest slice
    assert not np.allclose(newest[-1].prob[-3], newest[-3].prob[-1], atol=1e-5)
    # the oldest slice keeps the revisited estimate
    np.testing.assert_array_equal(newest[-1].prob[0], newest[-2].prob[-3])


def test_key_ring_serves_any_slot_order_and_a_grid_change() -> None:
    """Keys live in a ring indexed by slot; a window in any slot order reads them in place."""
    net = _net()
    refiner = NetworkRefiner(net, torch.device('cpu'), update='newest', support_voxels=-1)
    # Grid changes without forget(): x and y swapped (same number of keys), another size.
    for dims in ((8, 6, 4), (6, 8, 4), (6, 6, 4)):
        x = torch.randn(6, 5, *dims)

        def features(ks):
            return x[list(ks)]

        observed = torch.ones((2,) + dims, dtype=torch.bool)
        for slots in ([3, 0, 5], [0, 5, 3, 2]):
            out = refiner.refine_newest(slots, features, observed, revisit=[slots[0]])
            with torch.no_grad():
                full = torch.sigmoid(net(x[slots][None])[0])
            torch.testing.assert_close(out, full[[0, -1]], atol=1e-5, rtol=0)
            x[3] = torch.randn_like(x[3])  # slot 3 rewritten: encoded again on its next use
            refiner.forget(3)
        assert refiner._keys.shape[:2] == ((dims[0] // 2) * (dims[1] // 2) * 2, 6)
    attn = net.attn[0].attn
    seq = torch.randn(4, 3, 8)
    k, v = attn.project_kv(seq)
    ring = attn.attend_projected(seq[:, [2]], k[:, [2, 0, 1]], v[:, [2, 0, 1]], [2], [2, 0, 1])
    torch.testing.assert_close(ring, attn(seq, [2]))
    masked = attn.attend_projected(seq[:, [1]], k, v, [1], [0, 1, None])
    torch.testing.assert_close(masked, attn(seq[:, :2], [1]))
    for bad in ([0, 1, 1], [0, None, 2], [None, None, None]):  # repeated, a gap, none
        with pytest.raises(ValueError, match='each window index'):
            attn.attend_projected(seq[:, [1]], k, v, [1], bad)


def test_newest_with_support_runs_the_head_on_supported_voxels_only() -> None:
    """The head skips voxels outside the support; the result equals the window pass's."""
    net = _net()
    newest = NetworkRefiner(net, torch.device('cpu'), update='newest', support_voxels=1)
    window = NetworkRefiner(net, torch.device('cpu'), update='window', support_voxels=1)
    torch.manual_seed(3)
    x = torch.randn(5, 5, 10, 8, 6)
    observed = torch.rand(5, 10, 8, 6) > 0.97
    full = window.refine(x, x[:, 0], observed)
    out = newest.refine_newest([0, 1, 2, 3, 4], lambda ks: x[list(ks)], observed[[1, 4]],
                               revisit=[1])
    torch.testing.assert_close(out, full[[1, 4]], atol=1e-5, rtol=0)
    assert (out == 0).float().mean() > 0.3  # much of the grid is outside the support
    enc = net.encode_slices(x)
    mask = torch.zeros(1, 10, 8, 6, dtype=torch.bool)
    mask[0, 2:5] = True
    with torch.no_grad():
        some = net.forward_slices_kv(enc[[4]], net.slice_keys(enc), x[[4]], [4], mask=mask)
        every = net.forward_slices_kv(enc[[4]], net.slice_keys(enc), x[[4]], [4])
    torch.testing.assert_close(some[mask], every[mask])
    assert torch.isinf(some[~mask]).all() and (some[~mask] < 0).all()
    with pytest.raises(ValueError, match='mask must be'):
        net.forward_slices_kv(enc[[4]], net.slice_keys(enc), x[[4]], [4], mask=mask[:, :5])


def test_active_cells_are_the_cells_masked_voxels_read() -> None:
    """A voxel reads its half-resolution cell and that cell's 26 neighbours (decoder conv)."""
    mask = torch.zeros(2, 9, 7, 5, dtype=torch.bool)  # odd dims: the last cell is half full
    mask[1, 8, 6, 4] = True  # the corner voxel -> cell (4, 3, 2)
    cells = active_cells(mask)
    assert cells.shape == (5, 4, 3)
    expected = torch.zeros(5, 4, 3, dtype=torch.bool)
    expected[3:5, 2:4, 1:3] = True
    assert torch.equal(cells, expected)
    mask[0, 0, 0, 0] = True  # any slice counts
    assert bool(active_cells(mask)[:2, :2, :2].all())
    assert int(active_cells(mask).sum()) == 2 * 2 * 2 + 8
    assert not bool(active_cells(torch.zeros(1, 4, 4, 4, dtype=torch.bool)).any())


def test_masked_slices_run_attention_only_where_the_mask_reads_it() -> None:
    """With a sparse mask, attention runs on a few cells and the masked logits are unchanged."""
    net = _net(padding='replicate')
    torch.manual_seed(5)
    x = torch.randn(6, 5, 24, 20, 11)
    enc = net.encode_slices(x)
    keys = net.slice_keys(enc)
    rows = []
    attend = net.attn[0].forward_kv

    def counting(sq, *args):
        rows.append(sq.shape[0])
        return attend(sq, *args)

    net.attn[0].forward_kv = counting
    with torch.no_grad():
        every = net.forward_slices_kv(enc[[2, 5]], keys, x[[2, 5]], [2, 5])
        assert rows == [12 * 10 * 6]
        for blob in ((slice(0, 3), slice(15, 20), slice(9, 11)),  # an edge of odd Z
                     (slice(10, 12), slice(4, 5), slice(3, 6)),
                     (slice(0, 24), slice(0, 20), slice(0, 11))):  # all: the dense pass
            mask = torch.zeros(2, 24, 20, 11, dtype=torch.bool)
            mask[(1,) + blob] = True
            mask[0, 5, 5, 5] = True
            some = net.forward_slices_kv(enc[[2, 5]], keys, x[[2, 5]], [2, 5], mask=mask)
            torch.testing.assert_close(some[mask], every[mask], atol=1e-5, rtol=0)
            assert torch.isinf(some[~mask]).all()
        assert rows[1] < 0.3 * rows[0] and rows[2] < 0.2 * rows[0] and rows[3] == rows[0]
        empty = torch.zeros(2, 24, 20, 11, dtype=torch.bool)  # nothing observed yet
        none = net.forward_slices_kv(enc[[2, 5]], keys, x[[2, 5]], [2, 5], mask=empty)
        assert torch.isinf(none).all() and len(rows) == 4   # no attention at all
    # The gathered keys live in a kept buffer: reused across calls of any size and across
    # inference mode (the refiner) and no_grad (training-time validation).
    mask = torch.zeros(2, 24, 20, 11, dtype=torch.bool)
    mask[1, 3:9, 2:6, 1:4] = True
    for mode in (torch.inference_mode, torch.no_grad, torch.inference_mode):
        with mode():
            some = net.forward_slices_kv(enc[[2, 5]], keys, x[[2, 5]], [2, 5], mask=mask)
        torch.testing.assert_close(some[mask], every[mask], atol=1e-5, rtol=0)
    assert net._scratch is not None
    NetworkRefiner(net, torch.device('cpu'), update='newest').forget()   # new stream or grid
    assert net._scratch is None   # the buffer goes with the cached keys
