"""Temporal multi-head attention at every voxel location.

At each spatial location the ``T`` time slices of a sliding window attend to each other:

- queries, keys and values are linear maps over the channels: ``q = x Wq``, ``k = x Wk``,
  ``v = x Wv`` with ``x`` [N, T, C] (N locations, T slices, C channels);
- per head ``h`` with head width ``D = C / H`` the scores are
  ``s[n, h, t, u] = sum_d q[n, h, t, d] * k[n, h, u, d] / sqrt(D) + b[h, t - u]``
  where ``b`` is a learned bias per head and per relative time offset ``t - u`` (in slices,
  ``-(T_max - 1) .. T_max - 1``);
- causal attention masks ``u > t`` (a slice sees only itself and older slices), full attention
  sees the whole window;
- the softmax runs over ``u`` (time), ``y[n, h, t, d] = sum_u a[n, h, t, u] * v[n, h, u, d]``,
  and the heads are concatenated and mixed by an output linear map.

:meth:`TemporalAttention.attend_einsum` writes every contraction as an ``einsum`` with the
dimensions spelled out (``n t h d, n u h d -> n h t u``) so the shapes type-check; the default
forward pass hands the very same q, k, v and bias to the fused
``torch.nn.functional.scaled_dot_product_attention`` (about 3x faster on the CPU). Both are tested
against a loop reference. Slices are ordered oldest first (the grid convention).
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

#: The fused attention kernel the fused path calls. :func:`exclude_attention_from_compile`
#: swaps it for a ``torch.compiler.disable`` wrapper before anything is compiled (doing so at
#: import would load ``torch._dynamo`` and sympy into every process: +0.9 s, +71 MB RSS).
_sdpa = F.scaled_dot_product_attention


def exclude_attention_from_compile() -> None:
    """Keep the fused attention kernel out of ``torch.compile`` graphs (``network_compile``).

    On the CPU inductor's own attention code made the whole-window pass 1.7x slower (138
    against 82 ms on the TUM grid, torch 2.13); the eager kernel around the compiled rest:
    86 ms. Dynamo reads the module global when it traces, so this applies to graphs compiled
    afterwards; eager results are the same either way.
    """
    global _sdpa
    if _sdpa is F.scaled_dot_product_attention:
        _sdpa = torch.compiler.disable(F.scaled_dot_product_attention)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over the time axis, one independent sequence per location.

    :param channels: C, channels of the input and output
    :param heads: H, number of heads; must divide ``channels``
    :param max_len: largest window length T this module accepts (size of the offset bias table)
    :param causal: slice ``t`` attends only to slices ``u <= t``
    :param fused: compute with ``scaled_dot_product_attention`` (else the einsum path)
    """

    def __init__(self, channels: int, heads: int = 2, max_len: int = 64,
                 causal: bool = False, fused: bool = True) -> None:
        """Create the projections and the relative-time bias table."""
        super().__init__()
        if channels <= 0 or heads <= 0 or channels % heads != 0:
            raise ValueError(f'channels ({channels}) must be a positive multiple of heads '
                             f'({heads})')
        if max_len < 1:
            raise ValueError(f'max_len must be >= 1, got {max_len}')
        self.channels = int(channels)
        self.heads = int(heads)
        self.head_dim = self.channels // self.heads
        self.max_len = int(max_len)
        self.causal = bool(causal)
        self.fused = bool(fused)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        # b[h, offset + max_len - 1] for offset = t - u in [-(max_len - 1), max_len - 1].
        self.time_bias = nn.Parameter(torch.zeros(self.heads, 2 * self.max_len - 1))

    def relative_bias(self, t: int) -> torch.Tensor:
        """Return the bias of every (query slice, key slice) pair, causal mask included.

        :param t: window length T
        :return: float [H, T, T]; entry ``[h, t, u] = b[h, t - u]`` (``-inf`` where masked)
        """
        idx = torch.arange(t, device=self.time_bias.device)
        offset = idx[:, None] - idx[None, :] + self.max_len - 1  # [T, T], t - u shifted
        bias = self.time_bias[:, offset]  # [H, T, T]
        if self.causal:
            future = idx[None, :] > idx[:, None]  # u > t
            bias = bias.masked_fill(future[None], float('-inf'))
        return bias

    def forward(self, x: torch.Tensor,
                queries: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Attend over time at every location.

        :param x: float [N, T, C]: N independent locations, T slices (oldest first), C channels
        :param queries: compute the output of these slices only (indices into T, each query
            against every slice's key and value, the causal mask by its own index); None = all
        :return: float [N, T, C], or [N, len(queries), C]
        """
        if x.dim() != 3 or x.shape[2] != self.channels:
            raise ValueError(f'expected x of shape [N, T, C={self.channels}], got '
                             f'{tuple(x.shape)}')
        xq = x if queries is None else x[:, query_index(queries, x.shape[1])]
        k, v = self.project_kv(x)
        return self.attend_projected(xq, k, v, queries)

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every slice (each depends on its own slice only: cacheable).

        :param x: float [N, T, C]
        :return: (k, v), float [N, T, C] each
        """
        return self.to_k(x), self.to_v(x)

    def attend_projected(self, xq: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         queries: Optional[Sequence[int]] = None,
                         key_times: Optional[Sequence[Optional[int]]] = None) -> torch.Tensor:
        """Attention of some slices against keys and values already projected.

        :param xq: float [N, Tq, C] the query slices' inputs (all T slices when ``queries`` is
            None)
        :param k: float [N, P, C] keys (:meth:`project_kv`; any strides); P = T slices in
            window order, or any order with ``key_times``
        :param v: float [N, P, C] values
        :param queries: the query slices' window indices (None = every slice, in order)
        :param key_times: the window index of each of the P keys, None for a key outside the
            window (masked), e.g. a ring buffer of slices; the indices present must be
            ``0 .. T-1``, each once; default: ``0 .. P-1``
        :return: float [N, Tq, C]
        """
        n, p, c = k.shape
        if key_times is not None and len(key_times) != p:
            raise ValueError(f'{len(key_times)} key times for {p} keys')
        present = [i for i in (range(p) if key_times is None else key_times) if i is not None]
        t = len(present)
        if sorted(present) != list(range(t)) or t == 0:  # every query then sees a key
            raise ValueError(f'key times {list(key_times or [])} must hold each window index '
                             '0 .. T-1 once')
        if t > self.max_len:
            raise ValueError(f'window length {t} exceeds max_len {self.max_len}')
        h, d = self.heads, self.head_dim
        bias = self.relative_bias(t)  # [H, T, T]
        if queries is not None:
            bias = bias[:, query_index(queries, t)]
        if key_times is not None:  # columns in key order; absent keys masked
            cols = torch.tensor([0 if i is None else int(i) for i in key_times],
                                device=bias.device)
            bias = bias[:, :, cols].masked_fill(
                torch.tensor([i is None for i in key_times], device=bias.device),
                float('-inf'))
        bias = bias.to(xq.dtype)  # [H, Tq, P]
        tq = xq.shape[1]
        if xq.shape[0] != n or xq.shape[2] != c or v.shape != k.shape or bias.shape[1] != tq:
            raise ValueError(f'queries {tuple(xq.shape)}, keys {tuple(k.shape)}, values '
                             f'{tuple(v.shape)} disagree')
        q = self.to_q(xq).reshape(n, tq, h, d)
        k = k.reshape(n, p, h, d)
        v = v.reshape(n, p, h, d)
        if self.fused:
            y = _sdpa(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=bias[None]).transpose(1, 2)  # [N, Tq, H, D]
        else:
            y = self.attend_einsum(q, k, v, bias)
        return self.to_out(y.reshape(n, tq, h * d))

    def forward_last(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the newest slice only (``forward(x)[:, -1]`` at ``1 / T`` of the query work).

        :param x: float [N, T, C], oldest slice first
        :return: float [N, C]
        """
        return self.forward(x, queries=[-1])[:, 0]

    @staticmethod
    def attend_einsum(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      bias: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention over time, every contraction an explicit einsum.

        :param q: [N, T, H, D] queries
        :param k: [N, U, H, D] keys (U = T, or the P keys of a ring)
        :param v: [N, U, H, D] values
        :param bias: [H, T, U] additive scores (relative-time bias, ``-inf`` where masked)
        :return: [N, T, H, D]
        """
        n, t, h, d = q.shape
        if k.shape != v.shape or k.shape[0] != n or k.shape[2:] != (h, d):
            raise ValueError(f'q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} '
                             'disagree')
        if bias.shape != (h, t, k.shape[1]):
            raise ValueError(f'bias must be [{h}, {t}, {k.shape[1]}], got {tuple(bias.shape)}')
        scores = torch.einsum('nthd,nuhd->nhtu', q, k) * (1.0 / math.sqrt(d))
        weights = torch.softmax(scores + bias[None], dim=-1)  # over u (time)
        return torch.einsum('nhtu,nuhd->nthd', weights, v)


def query_index(queries: Sequence[int], t: int) -> List[int]:
    """Slice indices into a window of ``t`` (negative counts from the newest), as 0 .. t-1.

    :raises ValueError: empty, or an index outside the window
    """
    idx = [int(i) for i in queries]
    if not idx or min(idx) < -t or max(idx) >= t:
        raise ValueError(f'query slices {idx} outside a window of {t}')
    return [i % t for i in idx]


def grid_to_sequences(x: torch.Tensor) -> torch.Tensor:
    """Rearrange a batch of windows of channel grids into one sequence per location.

    :param x: float [B, T, C, X, Y, Z]
    :return: float [B * X * Y * Z, T, C], location index ``((b * X + i) * Y + j) * Z + k``
    """
    if x.dim() != 6:
        raise ValueError(f'expected [B, T, C, X, Y, Z], got {tuple(x.shape)}')
    b, t, c, nx, ny, nz = x.shape
    return x.permute(0, 3, 4, 5, 1, 2).reshape(b * nx * ny * nz, t, c)


def sequences_to_grid(s: torch.Tensor, b: int, dims: tuple) -> torch.Tensor:
    """Inverse of :func:`grid_to_sequences`.

    :param s: float [B * X * Y * Z, T, C]
    :param b: batch size B
    :param dims: (X, Y, Z)
    :return: float [B, T, C, X, Y, Z]
    """
    nx, ny, nz = (int(v) for v in dims)
    if s.dim() != 3 or s.shape[0] != b * nx * ny * nz:
        raise ValueError(f'expected [{b * nx * ny * nz}, T, C], got {tuple(s.shape)}')
    _, t, c = s.shape
    return s.reshape(b, nx, ny, nz, t, c).permute(0, 4, 5, 1, 2, 3)


class GridTemporalAttention(nn.Module):
    """Temporal attention applied to windows of channel grids, pre-norm with a residual.

    ``y = x + Attn(LayerNorm(x))`` per location, then ``y + FFN(LayerNorm(y))`` (pointwise MLP).

    :param channels: C
    :param heads: H
    :param max_len: largest T
    :param causal: causal attention over time
    :param ffn_mult: hidden width of the pointwise MLP as a multiple of C (0 = no MLP)
    """

    def __init__(self, channels: int, heads: int = 2, max_len: int = 64, causal: bool = False,
                 ffn_mult: int = 2) -> None:
        """Create the attention and its normalisation layers."""
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = TemporalAttention(channels, heads, max_len, causal)
        self.ffn = None
        if ffn_mult > 0:
            self.ffn = nn.Sequential(nn.LayerNorm(channels),
                                     nn.Linear(channels, ffn_mult * channels), nn.GELU(),
                                     nn.Linear(ffn_mult * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over time at every location of every window.

        :param x: float [B, T, C, X, Y, Z]
        :return: float [B, T, C, X, Y, Z]
        """
        b = x.shape[0]
        return sequences_to_grid(self.forward_sequences(grid_to_sequences(x)), b, x.shape[3:])

    def forward_sequences(self, s: torch.Tensor) -> torch.Tensor:
        """Apply the block to one sequence per location.

        :param s: float [N, T, C]
        :return: float [N, T, C]
        """
        s = s + self.attn(self.norm(s))
        if self.ffn is not None:
            s = s + self.ffn(s)
        return s

    def forward_at(self, s: torch.Tensor, queries: Sequence[int]) -> torch.Tensor:
        """Apply the block for some slices only (``forward_sequences(s)[:, queries]``).

        :param s: float [N, T, C]
        :param queries: slice indices into T
        :return: float [N, len(queries), C]
        """
        k, v = self.key_values(s)
        return self.forward_kv(s[:, query_index(queries, s.shape[1])], k, v, queries)

    def key_values(self, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the normalised slices: float [N, T, C] each.

        A slice's keys and values depend on that slice only, so a stream can compute them once
        per slice and keep them (:meth:`forward_kv`).
        """
        return self.attn.project_kv(self.norm(s))

    def forward_kv(self, sq: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   queries: Sequence[int],
                   key_times: Optional[Sequence[Optional[int]]] = None) -> torch.Tensor:
        """Apply the block for some slices given every slice's keys and values.

        Equal to :meth:`forward_at` with ``k, v = key_values(s)`` and ``sq = s[:, queries]``.

        :param sq: float [N, K, C] the query slices' inputs
        :param k: float [N, P, C] keys (:meth:`key_values`; any strides)
        :param v: float [N, P, C] values
        :param queries: the K query slices' window indices
        :param key_times: window index of each key (None = not in the window); default
            ``0 .. P-1`` (see :meth:`TemporalAttention.attend_projected`)
        :return: float [N, K, C]
        """
        y = sq + self.attn.attend_projected(self.norm(sq), k, v, queries, key_times)
        if self.ffn is not None:
            y = y + self.ffn(y)
        return y

    def forward_last(self, s: torch.Tensor) -> torch.Tensor:
        """Apply the block for the newest slice only (``forward_sequences(s)[:, -1]``).

        :param s: float [N, T, C]
        :return: float [N, C]
        """
        return self.forward_at(s, [-1])[:, 0]
