"""The temporal-attention occupancy network (the model; inference is :mod:`.inference`).

Architecture of :class:`TemporalOccupancyNet` (every slice shares the spatial layers):

1. input: the fusion features as they are (already scaled: log-odds in [-1, 1], log1p counts,
   masks and confidences in [0, 1]);
2. per-slice encoder: a 2x2x2 stride-2 convolution to ``width`` channels, then a residual
   depthwise-separable 3x3x3 block, at half resolution (location-major ``[B, x, y, z, T, C]``);
   convolutions pad by repeating the border voxels (``padding='replicate'``), so nothing in the
   features marks where a crop or grid ends;
3. ``attn_blocks`` temporal attention blocks (:mod:`l3rocc_core.refiner.attention`) at every
   half-resolution location, relative-time bias, causal or full;
4. a second residual spatial block and a 2x2x2 transposed convolution (a linear map to
   ``8 * up_channels`` and a voxel shuffle) back to full resolution;
5. a pointwise head on ``[upsampled, input features]`` (or, with ``head_channels = 0``, a
   linear per-voxel term) giving a correction that is added to the input log-odds channel times
   a learned gain, plus a learned bias: at initialisation the correction is zero, so the network
   starts as ``sigmoid(logodds + logit_bias)``, the geometry-only answer (unknown voxels below
   0.5), and learns the residual.

Output: logits [B, T, X, Y, Z]; ``sigmoid`` gives p(occupied). With ``motion_head`` a second
pointwise head on the same full-resolution features predicts occupancy flow [B, T, 3, X, Y, Z]
(m/s, world axes), trained against feature-matched flow by the motion-consistency loss term
(:mod:`l3rocc_core.refiner.flow_targets`); it only shapes the shared features during training, and
inference never runs it.
"""

from dataclasses import asdict, dataclass
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from l3rocc_core.refiner.attention import GridTemporalAttention, query_index

DEFAULT_FEATURE_NAMES: Tuple[str, ...] = ('logodds', 'hits', 'free', 'observed', 'confidence')
PADDINGS = ('zeros', 'replicate')
BUNDLED_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'checkpoints',
                                  'default.pt')


@dataclass
class NetConfig:
    """Architecture hyper-parameters of :class:`TemporalOccupancyNet` (stored in checkpoints).

    :param feature_names: input channel names, in order (``l3rocc_core.fusion.FEATURE_NAMES``)
    :param width: channels at half resolution (attention width)
    :param heads: attention heads (divides ``width``)
    :param attn_blocks: temporal attention blocks
    :param causal: causal attention (a slice sees only older slices and itself)
    :param max_len: longest window accepted (relative-time bias table size)
    :param ffn_mult: pointwise MLP width multiple inside each attention block
    :param up_channels: channels carried back to full resolution
    :param head_channels: hidden channels of the full-resolution head
    :param logodds_feature: the input channel the head's output corrects ('' = none)
    :param logodds_scale: initial gain on that channel (fusion divides log-odds by
        max(|logodds_min|, logodds_max) = 3.5 by default, so 3.5 restores log-odds)
    :param logit_bias: initial output bias (negative: unknown voxels start below 0.5)
    :param padding: how convolutions see past the crop or grid border: 'replicate' (the
        border voxels repeated, so the border itself leaves no trace in the features and the
        network cannot learn where a grid starts) or 'zeros' (the first checkpoints)
    :param motion_head: also build the occupancy-flow head (training with the
        motion-consistency term; checkpoints without the key have none)
    """

    feature_names: Tuple[str, ...] = DEFAULT_FEATURE_NAMES
    width: int = 16
    heads: int = 2
    attn_blocks: int = 1
    causal: bool = False
    max_len: int = 64
    ffn_mult: int = 1
    up_channels: int = 8
    head_channels: int = 8
    logodds_feature: str = 'logodds'
    logodds_scale: float = 3.5
    logit_bias: float = -1.0
    padding: str = 'zeros'
    motion_head: bool = False

    def __post_init__(self) -> None:
        """Normalise and check the values."""
        self.feature_names = tuple(str(n) for n in self.feature_names)
        if not self.feature_names:
            raise ValueError('feature_names must not be empty')
        if self.logodds_feature and self.logodds_feature not in self.feature_names:
            raise ValueError(f'logodds_feature {self.logodds_feature!r} not in feature_names '
                             f'{list(self.feature_names)}')
        if self.padding not in PADDINGS:
            raise ValueError(f'padding must be one of {list(PADDINGS)}, got {self.padding!r}')
        if self.width % self.heads:
            raise ValueError(f'width {self.width} must be a multiple of heads {self.heads}')

    @property
    def in_channels(self) -> int:
        """C, the number of input channels."""
        return len(self.feature_names)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (lists, str, int, bool) for a ``weights_only`` checkpoint."""
        d = asdict(self)
        d['feature_names'] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'NetConfig':
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f'unknown architecture keys {sorted(unknown)}')
        return cls(**d)


class _SpatialBlock(nn.Module):
    """Residual depthwise-separable 3x3x3 convolution, the same for every slice.

    Works on the location-major layout ``[B, X, Y, Z, T, C]``: the ``T * C`` channels of a
    location are one channels-last vector, so a depthwise convolution with the kernel repeated
    over T convolves every slice at once without moving memory.
    """

    def __init__(self, channels: int, padding: str = 'zeros') -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Linear(channels, channels)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(F.gelu(self.spatial(x)))

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the depthwise convolution alone (the rest of the block is pointwise).

        :param x: [B, X, Y, Z, T, C]
        :return: [B, X, Y, Z, T, C]
        """
        b, nx, ny, nz, t, c = x.shape
        weight = self.depthwise.weight.repeat(t, 1, 1, 1, 1)  # channel t * C + c
        bias = self.depthwise.bias.repeat(t)
        y = x.reshape(b, nx, ny, nz, t * c).permute(0, 4, 1, 2, 3)
        if self.padding == 'replicate':
            y = F.conv3d(replicate_pad(y, (1,) * 6), weight, bias, groups=t * c)
        else:
            y = F.conv3d(y, weight, bias, padding=1, groups=t * c)
        return y.permute(0, 2, 3, 4, 1).reshape(b, nx, ny, nz, t, c)


class TemporalOccupancyNet(nn.Module):
    """Per-slice 3D encoder, temporal attention at half resolution, full-resolution decoder.

    Inside, half-resolution tensors are location-major ``[B, X/2, Y/2, Z/2, T, width]``: the
    attention reads every location's ``[T, width]`` sequence in place and the pointwise layers are
    plain matrix products.

    :param config: architecture hyper-parameters
    """

    #: :meth:`forward_slices_kv` with a mask runs attention only at the half-resolution cells
    #: the masked voxels read, unless they are more than this share of the grid.
    ACTIVE_DENSE = 0.85

    def __init__(self, config: Optional[NetConfig] = None) -> None:
        """Build the layers; the output starts as the input log-odds (zero correction)."""
        super().__init__()
        self.config = config or NetConfig()
        cfg = self.config
        c = cfg.in_channels
        self.down = nn.Conv3d(c, cfg.width, 2, stride=2)
        self.enc = _SpatialBlock(cfg.width, cfg.padding)
        self.attn = nn.ModuleList(
            GridTemporalAttention(cfg.width, cfg.heads, cfg.max_len, cfg.causal, cfg.ffn_mult)
            for _ in range(cfg.attn_blocks))
        self.dec = _SpatialBlock(cfg.width, cfg.padding)
        # 8 children per half-resolution voxel, up_channels each (a 2x2x2 transposed conv).
        self.up = nn.Linear(cfg.width, 8 * cfg.up_channels)
        if cfg.head_channels > 0:
            self.head = nn.Sequential(nn.Conv3d(cfg.up_channels + c, cfg.head_channels, 1),
                                      nn.GELU(), nn.Conv3d(cfg.head_channels, 1, 1))
            last = self.head[-1]
        else:
            if cfg.up_channels != 1:
                raise ValueError('head_channels = 0 needs up_channels = 1')
            self.head = nn.Conv3d(c, 1, 1)  # linear per-voxel term on the input
            last = self.up
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        if cfg.motion_head:  # occupancy flow (m/s) from the full-resolution features
            hidden = max(cfg.head_channels, 8)
            self.flow_head = nn.Sequential(nn.Linear(cfg.up_channels, hidden), nn.GELU(),
                                           nn.Linear(hidden, 3))
        self.logodds_index = (cfg.feature_names.index(cfg.logodds_feature)
                              if cfg.logodds_feature else -1)
        self.logodds_gain = nn.Parameter(torch.tensor(float(cfg.logodds_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.logit_bias)))
        self.checkpointing = False
        #: inference scratch buffer of :meth:`_gather` (not a parameter, not saved)
        self._scratch: Optional[torch.Tensor] = None

    def _encode(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """Per-slice encoder: stride-2 convolution and the first spatial block.

        :param x: [B*T, C, X', Y', Z'] input features, even dims
        :return: [B, X'/2, Y'/2, Z'/2, T, W]; slice ``t`` depends on input slice ``t`` only
        """
        h = F.gelu(self.down(x))  # [BT, W, x, y, z]
        _, w, hx, hy, hz = h.shape
        h = h.reshape(b, t, w, hx, hy, hz).permute(0, 3, 4, 5, 1, 2).contiguous()
        return self.enc(h)

    def _decode(self, h: torch.Tensor) -> torch.Tensor:
        """Second spatial block and the 2x2x2 up-sampling, per slice.

        :param h: [B, x, y, z, T, W] half-resolution features after attention
        :return: [B*T, 2x, 2y, 2z, up_channels] full-resolution features (channels-last)
        """
        b, hx, hy, hz, t, _ = h.shape
        h = self.up(self.dec(h))  # [B, x, y, z, T, 8 * U]
        u = self.config.up_channels
        h = h.reshape(b, hx, hy, hz, t, 2, 2, 2, u).permute(0, 4, 1, 5, 2, 6, 3, 7, 8)
        return h.reshape(b * t, 2 * hx, 2 * hy, 2 * hz, u)

    def _coarse(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """Run the encoder, attention and decoder at half resolution.

        :param x: [B*T, C, X', Y', Z'] input features, even dims
        :return: [B*T, X', Y', Z', up_channels] features at full resolution (channels-last)
        """
        h = self._encode(x, b, t)  # [B, x, y, z, T, W]
        w = h.shape[-1]
        for block in self.attn:
            h = block.forward_sequences(h.reshape(-1, t, w)).reshape(h.shape)
        return self._decode(h)

    def _pad_even(self, flat: torch.Tensor) -> torch.Tensor:
        """Pad [N, C, X, Y, Z] to even X, Y, Z (the configured padding)."""
        nx, ny, nz = flat.shape[2:]
        pad = (0, nz % 2, 0, ny % 2, 0, nx % 2)
        if not any(pad):
            return flat
        if self.config.padding == 'replicate':
            return replicate_pad(flat, pad)
        return F.pad(flat, pad)

    def _output(self, up: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Head, log-odds skip and bias: [N, X, Y, Z] logits from [N, X, Y, Z, U] and input."""
        return self._output_cl(up, flat.permute(0, 2, 3, 4, 1))

    def _decode_output_at(self, h: torch.Tensor, features: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
        """:meth:`_decode` and :meth:`_output` for the voxels under ``mask`` only.

        The decoder's convolution runs on the whole half-resolution grid (it reads
        neighbours); its pointwise layers and the up-sampling run only on the (cell, slice)
        rows that hold a masked voxel, and each voxel reads its child of its cell's row.

        :param h: [1, x, y, z, K, W] half-resolution features after attention
        :param features: float [K, C, X, Y, Z] the slices' input features
        :param mask: bool [K, X, Y, Z]
        :return: float [K, X, Y, Z] logits, -inf outside ``mask`` (p = 0)
        """
        _, hx, hy, hz, k, w = h.shape
        kk, ix, iy, iz = mask.nonzero(as_tuple=True)  # [M] each
        rows = ((ix // 2 * hy + iy // 2) * hz + iz // 2) * k + kk  # row of [x * y * z * K]
        used = torch.zeros(hx * hy * hz * k, dtype=torch.bool, device=h.device)
        used.index_fill_(0, rows, True)
        keep = used.nonzero().squeeze(1)  # [R] rows with a masked voxel
        lut = torch.empty(used.numel(), dtype=torch.long, device=h.device)
        lut.index_copy_(0, keep, torch.arange(keep.numel(), device=h.device))
        x = h.reshape(-1, w).index_select(0, keep)
        y = self.dec.spatial(h).reshape(-1, w).index_select(0, keep)
        u = self.config.up_channels
        up = self.up(x + self.dec.pointwise(F.gelu(y))).view(-1, 8, u)  # [R, 2*2*2, U]
        child = (ix % 2) * 4 + (iy % 2) * 2 + iz % 2  # the order of _decode's 2x2x2 split
        # Gathers and the scatter by flat index: index_select / index_copy_ with one index
        # tensor are several times faster on the CPU than advanced indexing with four.
        nv = mask.shape[1] * mask.shape[2] * mask.shape[3]
        voxel = (ix * mask.shape[2] + iy) * mask.shape[3] + iz
        flat = kk * nv + voxel
        c = features.shape[1]
        # Channel by channel from the flat features: no copy of the whole [K, C, X, Y, Z].
        base, src = kk * (c * nv) + voxel, features.reshape(-1)
        x_cl = torch.stack([src.index_select(0, base + j * nv) for j in range(c)], 1)
        values = self._output_cl(up.reshape(-1, u).index_select(0, lut[rows] * 8 + child), x_cl)
        out = features.new_full(mask.shape, float('-inf'))
        out.view(-1).index_copy_(0, flat, values)
        return out

    def _output_cl(self, up: torch.Tensor, x_cl: torch.Tensor) -> torch.Tensor:
        """:meth:`_output` on channels-last inputs [..., U] and [..., C]: logits [...]."""
        logit = self._head(up, x_cl)
        if self.logodds_index >= 0:
            logit = logit + self.logodds_gain * x_cl[..., self.logodds_index]
        return logit + self.logit_bias

    @property
    def streams(self) -> bool:
        """Whether :meth:`forward_newest` can be used (exactly one attention block).

        With one block, a slice's encoding is all the newest slice's output needs from it.
        """
        return len(self.attn) == 1

    def encode_slices(self, x: torch.Tensor) -> torch.Tensor:
        """Encode slices one by one, for :meth:`forward_newest` (cache the result per slice).

        :param x: float [S, C, X, Y, Z] features of S slices
        :return: float [S, X', Y', Z', W] half-resolution encodings (X' = ceil(X / 2), ...)
        """
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f'expected features [S, C={self.config.in_channels}, X, Y, Z], '
                             f'got {tuple(x.shape)}')
        h = self._encode(self._pad_even(x), 1, x.shape[0])[0]  # [x, y, z, S, W]
        return h.permute(3, 0, 1, 2, 4)

    def forward_newest(self, encoded: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
        """Logits of the newest slice of a window whose slices are already encoded.

        Equal to ``forward(window)[0, -1]`` (tested), at about ``1 / T`` of its cost: the
        encoder ran once per slice (:meth:`encode_slices`), and attention, decoder and head run
        for the newest slice only.

        :param encoded: float [T, X', Y', Z', W] encodings of the window's slices, oldest first
            (the newest last)
        :param newest: float [C, X, Y, Z] the newest slice's features
        :return: float [X, Y, Z] logits
        :raises ValueError: bad shapes, or a network with several attention blocks
        """
        return self.forward_slices(encoded, newest[None], [encoded.shape[0] - 1])[0]

    def forward_slices(self, encoded: torch.Tensor, features: torch.Tensor,
                       indices: Sequence[int]) -> torch.Tensor:
        """Logits of some slices of a window whose slices are already encoded.

        Equal to ``forward(window)[0, indices]`` (tested): attention, decoder and head run for
        the chosen slices only, each attending to every slice of the window.

        :param encoded: float [T, X', Y', Z', W] encodings of the window's slices, oldest first
        :param features: float [K, C, X, Y, Z] features of the chosen slices, in ``indices``
            order (the head and the log-odds skip read them)
        :param indices: K slice indices into T (negative counts from the newest)
        :return: float [K, X, Y, Z] logits
        :raises ValueError: bad shapes, or a network with several attention blocks
        """
        keys = self.slice_keys(encoded)  # checks the network and the encodings
        indices = query_index(indices, encoded.shape[0])
        return self.forward_slices_kv(encoded[indices], keys, features, indices)

    def slice_keys(self, encoded: torch.Tensor) -> torch.Tensor:
        """Attention keys and values of encoded slices, for :meth:`forward_slices_kv`.

        A slice's keys and values depend on that slice only: a stream computes them once per
        slice, like the encoding, instead of for every slice of the window at every frame.

        :param encoded: float [S, X', Y', Z', W] (:meth:`encode_slices`)
        :return: float [X' * Y' * Z', S, 2W]: keys then values, location-major
        :raises ValueError: bad shape, or a network with several attention blocks
        """
        if not self.streams:
            raise ValueError('estimating single slices needs exactly one attention block')
        if encoded.dim() != 5 or encoded.shape[-1] != self.config.width:
            raise ValueError(f'encoded must be [S, x, y, z, W={self.config.width}], got '
                             f'{tuple(encoded.shape)}')
        seq = encoded.permute(1, 2, 3, 0, 4).reshape(-1, encoded.shape[0], encoded.shape[-1])
        return torch.cat(self.attn[0].key_values(seq), dim=-1)

    def forward_slices_kv(self, encoded: torch.Tensor, keys: torch.Tensor,
                          features: torch.Tensor, indices: Sequence[int],
                          key_times: Optional[Sequence[Optional[int]]] = None,
                          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of some slices from their encodings and every slice's keys and values.

        Equal to :meth:`forward_slices` (tested) without touching the other slices' encodings.

        :param encoded: float [K, X', Y', Z', W] encodings of the chosen slices
        :param keys: float [X' * Y' * Z', P, 2W] keys and values of the window's slices
            (:meth:`slice_keys`, concatenated along P; any strides), oldest first, or in any
            order with ``key_times``
        :param features: float [K, C, X, Y, Z] features of the chosen slices
        :param indices: the K slice indices into the window (negative counts from the newest)
        :param key_times: window index of each of the P keys, None for a key not in the window
            (e.g. a ring buffer: no reordering copy); default ``0 .. P-1``
        :param mask: bool [K, X, Y, Z]: compute these voxels only, the others get -inf
            (p = 0); None = every voxel. Attention then runs only at the half-resolution
            cells these voxels read (:func:`active_cells`) and the decoder's pointwise layers
            and the head only for them: the same logits at a fraction of the cost.
        :return: float [K, X, Y, Z] logits
        """
        if not self.streams:
            raise ValueError('estimating single slices needs exactly one attention block')
        indices = [int(i) for i in indices]
        if encoded.dim() != 5 or encoded.shape[-1] != self.config.width:
            raise ValueError(f'encoded must be [K, x, y, z, W={self.config.width}] (half '
                             f'resolution), got {tuple(encoded.shape)}')
        k, hx, hy, hz, w = encoded.shape
        if features.dim() != 5 or features.shape[0] != len(indices) or len(indices) != k \
                or features.shape[1] != self.config.in_channels:
            raise ValueError(f'features must be [K={len(indices)}, C='
                             f'{self.config.in_channels}, X, Y, Z] for {k} encodings, got '
                             f'{tuple(features.shape)}')
        nx, ny, nz = features.shape[2:]
        if (hx, hy, hz) != ((nx + 1) // 2, (ny + 1) // 2, (nz + 1) // 2):
            raise ValueError(f'encodings {tuple(encoded.shape)} do not fit features '
                             f'{tuple(features.shape)}')
        if keys.dim() != 3 or keys.shape[0] != hx * hy * hz or keys.shape[2] != 2 * w:
            raise ValueError(f'keys must be [{hx * hy * hz}, T, {2 * w}], got '
                             f'{tuple(keys.shape)}')
        if mask is not None and tuple(mask.shape) != (k, nx, ny, nz):
            raise ValueError(f'mask must be [{k}, {nx}, {ny}, {nz}], got {tuple(mask.shape)}')
        if mask is not None and not bool(mask.any()):   # nothing to estimate (nothing seen)
            return features.new_full(mask.shape, float('-inf'))
        sq = encoded.permute(1, 2, 3, 0, 4).reshape(-1, k, w)  # [N, K, W]
        cells = None
        if mask is not None:
            cells = active_cells(mask).flatten().nonzero().squeeze(1)
            if cells.numel() > self.ACTIVE_DENSE * sq.shape[0]:
                cells = None  # nearly everything: the dense pass costs less than gathering
        if cells is None:
            h = self.attn[0].forward_kv(sq, keys[..., :w], keys[..., w:], indices, key_times)
        else:  # attention only where a masked voxel reads it (the rest is never read)
            kv = self._gather(keys, cells)
            h = sq.index_copy(0, cells, self.attn[0].forward_kv(
                sq.index_select(0, cells), kv[..., :w], kv[..., w:], indices, key_times))
        h = h.reshape(1, hx, hy, hz, k, w)
        if mask is not None:
            return self._decode_output_at(h, features, mask)
        up = self._decode(h)[:, :nx, :ny, :nz]  # [K, X, Y, Z, U]
        return self._output(up, features)

    def _gather(self, keys: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``keys.index_select(0, cells)`` into a kept buffer (inference only).

        The gathered keys are tens of MB per frame on a large grid; writing them into fresh
        memory each frame costs more in page faults than the copy itself (measured 11 ms
        against 3 ms on 20 k cells x 16 slices).
        """
        if torch.is_grad_enabled():
            return keys.index_select(0, cells)
        shape = (cells.numel(),) + tuple(keys.shape[1:])
        n = math.prod(shape)
        buf = self._scratch
        fits = buf is not None and buf.numel() >= n and buf.dtype == keys.dtype \
            and buf.device == keys.device \
            and buf.is_inference() == torch.is_inference_mode_enabled()
        if not fits:
            self._scratch = None   # the old buffer goes before the new one is allocated
            buf = self._scratch = keys.new_empty(int(n * 1.25) + 1)
        return torch.index_select(keys, 0, cells, out=buf[:n].view(shape))

    def release_scratch(self) -> None:
        """Free the inference scratch buffer of :meth:`_gather` (it is re-allocated on use)."""
        self._scratch = None

    def _head(self, up: torch.Tensor, x_cl: torch.Tensor) -> torch.Tensor:
        """Pointwise head at full resolution (channels-last matrix products, no concatenation).

        :param up: [..., U] upsampled features (channels-last)
        :param x_cl: [..., C] input features (channels-last), the same leading shape
        :return: [...] logit correction
        """
        c = x_cl.shape[-1]
        u = up.shape[-1]
        if self.config.head_channels > 0:
            first, last = self.head[0], self.head[-1]
            w1 = first.weight.reshape(first.out_channels, u + c)
            h = F.gelu(F.linear(up, w1[:, :u]) + F.linear(x_cl, w1[:, u:], first.bias))
            out = F.linear(h, last.weight.reshape(1, -1), last.bias)
        else:
            out = up + F.linear(x_cl, self.head.weight.reshape(1, c), self.head.bias)
        return out[..., 0]

    def forward(self, x: torch.Tensor, head_chunk: int = 0, return_flow: bool = False) -> Any:
        """Occupancy logits of every voxel of every slice.

        :param x: float [B, T, C, X, Y, Z] evidence features (channels ``config.feature_names``)
        :param head_chunk: run the full-resolution head on this many slices at a time to bound
            memory (0 = all at once)
        :param return_flow: also return the occupancy flow (needs ``config.motion_head``)
        :return: float [B, T, X, Y, Z] logits; with ``return_flow`` the tuple
            ``(logits, flow float [B, T, 3, X, Y, Z] m/s)``
        """
        cfg = self.config
        if x.dim() != 6 or x.shape[2] != cfg.in_channels:
            raise ValueError(f'expected features [B, T, C={cfg.in_channels}, X, Y, Z], got '
                             f'{tuple(x.shape)}')
        b, t, c, nx, ny, nz = x.shape
        if t > cfg.max_len:
            raise ValueError(f'window length {t} exceeds max_len {cfg.max_len}')
        flat = x.reshape(b * t, c, nx, ny, nz)
        xp = self._pad_even(flat)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            up = grad_checkpoint(self._coarse, xp, b, t, use_reentrant=False)
        else:
            up = self._coarse(xp, b, t)
        up = up[:, :nx, :ny, :nz]
        n = b * t
        step = n if head_chunk <= 0 else max(1, int(head_chunk))
        outs = [self._output(up[s:s + step], flat[s:s + step]) for s in range(0, n, step)]
        logits = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        logits = logits.reshape(b, t, nx, ny, nz)
        if not return_flow:
            return logits
        if not cfg.motion_head:
            raise ValueError('return_flow needs a network built with motion_head')
        flow = self.flow_head(up)  # [B*T, X, Y, Z, 3]
        return logits, flow.reshape(b, t, nx, ny, nz, 3).permute(0, 1, 5, 2, 3, 4)


def replicate_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``F.pad(x, pad, mode='replicate')``; under ``torch.compile`` built from concatenation.

    Inductor's lowering of replicate padding fails in torch 2.13 (``vr must not be None``);
    the concatenation gives the same values and compiles. Eager mode keeps ``F.pad``, which
    is about 2.5x faster there.

    :param x: tensor [..., D_k, ..., D_1]
    :param pad: (before_1, after_1, before_2, after_2, ...) from the last dim, as ``F.pad``
    """
    if not torch.compiler.is_compiling():
        return F.pad(x, tuple(int(v) for v in pad), mode='replicate')
    return _replicate_pad_cat(x, pad)


def _replicate_pad_cat(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """:func:`replicate_pad` by slicing and concatenation (what ``torch.compile`` traces)."""
    for i in range(len(pad) // 2):
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if before == 0 and after == 0:
            continue
        d = x.dim() - 1 - i
        n = x.shape[d]
        parts = [x]
        if before:
            parts.insert(0, x.narrow(d, 0, 1).repeat_interleave(before, d))
        if after:
            parts.append(x.narrow(d, n - 1, 1).repeat_interleave(after, d))
        x = torch.cat(parts, d)
    return x


def dilate_box(mask: torch.Tensor, r: int, first_dim: int = 1) -> torch.Tensor:
    """Box dilation of a boolean grid by ``r`` cells along every dimension from ``first_dim``.

    A box dilation is separable: along each axis the mask is OR'ed with itself shifted by
    1 .. r both ways (boolean ops on shifted views; ~20x faster than a 3D max-pool on floats).

    :param mask: bool [..., X, Y, Z] (the dimensions before ``first_dim`` are not dilated)
    :param r: radius in cells (0 = a copy)
    :return: bool, the shape of ``mask``
    """
    out = mask.clone()
    for dim in range(first_dim, mask.dim()) if r > 0 else ():
        n = out.shape[dim]
        src = out.clone()
        for shift in range(1, min(r, n - 1) + 1):
            out.narrow(dim, shift, n - shift).logical_or_(src.narrow(dim, 0, n - shift))
            out.narrow(dim, 0, n - shift).logical_or_(src.narrow(dim, shift, n - shift))
    return out


def active_cells(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Half-resolution cells that full-resolution outputs under ``mask`` depend on.

    A voxel's logit reads the attention output of its half-resolution cell through the
    decoder's 3x3x3 convolution, i.e. the cells within ``radius`` = 1 of it. Attention at the
    other cells cannot change a masked voxel.

    :param mask: bool [K, X, Y, Z] voxels whose output is needed (any of the K slices)
    :param radius: the decoder's receptive-field radius in half-resolution cells
    :return: bool [ceil(X/2), ceil(Y/2), ceil(Z/2)]
    """
    m = mask.any(0)
    nx, ny, nz = m.shape
    hx, hy, hz = (nx + 1) // 2, (ny + 1) // 2, (nz + 1) // 2
    even = m.new_zeros((2 * hx, 2 * hy, 2 * hz))
    even[:nx, :ny, :nz] = m
    cells = even.view(hx, 2, hy, 2, hz, 2).any(5).any(3).any(1)
    return dilate_box(cells, radius, first_dim=0)


def count_parameters(model: nn.Module) -> int:
    """Count the trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_config(**overrides: Any) -> NetConfig:
    """Return the shipped architecture with ``overrides`` applied."""
    return NetConfig(**{**asdict(NetConfig()), **overrides})


__all__ = ['NetConfig', 'TemporalOccupancyNet', 'count_parameters', 'BUNDLED_CHECKPOINT',
           'DEFAULT_FEATURE_NAMES', 'default_config']
