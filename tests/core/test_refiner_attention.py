"""Temporal attention against a slow loop reference, causal and full, with relative-time bias."""

import math

import pytest
import torch

from l3rocc_core.refiner.attention import (GridTemporalAttention, TemporalAttention,
                                           grid_to_sequences, sequences_to_grid)


pytestmark = pytest.mark.usefixtures('one_thread')


def loop_reference(att: TemporalAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention written out with Python loops over locations, heads and time pairs."""
    n, t, c = x.shape
    h, d = att.heads, att.head_dim
    wq, wk, wv = att.to_q.weight, att.to_k.weight, att.to_v.weight
    out = torch.zeros(n, t, c, dtype=torch.float64)
    for loc in range(n):
        q = x[loc].double() @ wq.double().T  # [T, C]
        k = x[loc].double() @ wk.double().T
        v = x[loc].double() @ wv.double().T
        heads_out = torch.zeros(t, c, dtype=torch.float64)
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            for ti in range(t):
                scores = []
                for ui in range(t):
                    if att.causal and ui > ti:
                        scores.append(-math.inf)
                        continue
                    s = float((q[ti, sl] * k[ui, sl]).sum()) / math.sqrt(d)
                    s += float(att.time_bias[head, ti - ui + att.max_len - 1])
                    scores.append(s)
                a = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0)
                for ui in range(t):
                    heads_out[ti, sl] += a[ui] * v[ui, sl]
        out[loc] = heads_out @ att.to_out.weight.double().T + att.to_out.bias.double()
    return out


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('causal', [False, True])
def test_attention_matches_loop_reference(causal: bool, fused: bool) -> None:
    torch.manual_seed(0)
    att = TemporalAttention(channels=8, heads=2, max_len=8, causal=causal, fused=fused)
    with torch.no_grad():
        att.time_bias.normal_(0.0, 1.0)  # a non-trivial relative-time encoding
    x = torch.randn(5, 6, 8)
    with torch.no_grad():
        y = att(x)
        ref = loop_reference(att, x)
    assert y.shape == (5, 6, 8)
    assert torch.allclose(y.double(), ref, atol=1e-5)


def test_causal_attention_ignores_the_future() -> None:
    torch.manual_seed(1)
    att = TemporalAttention(channels=4, heads=1, max_len=8, causal=True)
    x = torch.randn(3, 6, 4)
    x2 = x.clone()
    x2[:, 4:] += 10.0  # change the two newest slices
    with torch.no_grad():
        y, y2 = att(x), att(x2)
    assert torch.allclose(y[:, :4], y2[:, :4], atol=1e-6)
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_relative_bias_depends_only_on_offset() -> None:
    att = TemporalAttention(channels=4, heads=2, max_len=5)
    with torch.no_grad():
        att.time_bias.copy_(torch.arange(18, dtype=torch.float32).reshape(2, 9))
    b = att.relative_bias(5)
    assert b.shape == (2, 5, 5)
    for t in range(5):
        for u in range(5):
            assert b[1, t, u] == att.time_bias[1, t - u + 4]


def test_attention_rejects_bad_shapes() -> None:
    att = TemporalAttention(channels=8, heads=2, max_len=4)
    with pytest.raises(ValueError, match='N, T, C'):
        att(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match='N, T, C'):
        att(torch.zeros(2, 3, 4, 8))
    with pytest.raises(ValueError, match='max_len'):
        att(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match='multiple of heads'):
        TemporalAttention(channels=6, heads=4)


def test_grid_layout_round_trip_and_locations_are_independent() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 3, 2, 5)
    s = grid_to_sequences(x)
    assert s.shape == (2 * 3 * 2 * 5, 4, 8)
    # location ((b * X + i) * Y + j) * Z + k holds x[b, :, :, i, j, k]
    assert torch.equal(s[((1 * 3 + 2) * 2 + 1) * 5 + 3], x[1, :, :, 2, 1, 3])
    assert torch.equal(sequences_to_grid(s, 2, (3, 2, 5)), x)
    block = GridTemporalAttention(8, heads=2, max_len=8)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[0, :, :, 0, 0, 0] += 5.0
        y2 = block(x2)
    assert y.shape == x.shape
    changed = (y2 - y).abs().sum(dim=(1, 2)) > 0  # [B, X, Y, Z]
    assert changed[0, 0, 0, 0] and int(changed.sum()) == 1
