"""Training windows from ``l3rocc synth --dataset`` shards.

Layout (written by :mod:`l3rocc_core.synth.dataset`)::

    DIR/<split>/meta.json                feature_names, voxel_size, seed_range (or DIR/meta.json)
    DIR/{train,val,test}/shard_XXXX.npz  per sample i:
        features         float16 [N, T, C, x, y, z]  evidence (channels meta['feature_names'])
        occupancy        bool [N, T, x, y, z]  exact ground truth at each slice's time
        observed         bool [N, T, x, y, z]  observed by that slice's frame (the contract's
                                               scoring mask)
        observed_window  bool [N, T, x, y, z]  observed by any window frame up to the slice
                                               (optional; the loss mask when present)
        dynamic          bool [N, T, x, y, z]  voxels of moving objects (optional)
        known            bool [N, T, x, y, z]  ground truth defined (optional; default all)
        flow             float16 [N, T, 3, x, y, z]  feature-matched occupancy flow, m/s
                                               (optional; the motion-consistency target)
        flow_valid       bool [N, T, x, y, z]  voxels holding a match (with ``flow``)

Shards are read lazily with a small cache, and :class:`ShardBatches` visits one shard at a time
in a seeded order (shards shuffled, samples shuffled inside each shard), so memory stays at a few
shards whatever the dataset size. Training augmentation flips x and y and swaps them (gravity,
z, is kept) and shifts the content along z by up to ``z_shift`` voxels (the uncovered layers
are unobserved, with unknown ground truth), chosen per sample from ``(seed, step)`` so a
resumed run sees the same batches (flips and the swap also flip and swap the flow's x and y
components). A share of the batches are stream starts (see
:class:`ShardBatches`): windows of 2-15 slices, as a pipeline holds right after it starts.
The shift matters: synthetic grids start at the floor, and a
network that always sees the floor at the bottom of its input learns to put one there.
"""

from collections import OrderedDict
import glob
import json
import os
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

ARRAYS = ('features', 'occupancy', 'observed', 'observed_window', 'dynamic', 'known',
          'flow_valid', 'flow')
#: Arrays with a channel axis after T (the others are [N, T, x, y, z] masks).
CHANNEL_ARRAYS = ('features', 'flow')


class DatasetError(ValueError):
    """The training data cannot be used (missing files, wrong layout, inconsistent shapes)."""

    kind = 'bad_dataset'


def read_meta(root: str, split: str = '') -> Dict[str, Any]:
    """Read ``DIR/<split>/meta.json``, else ``DIR/meta.json`` (an empty dict when absent).

    :raises DatasetError: when the file exists but is not a JSON object
    """
    path = os.path.join(root, split, 'meta.json')
    if not os.path.isfile(path):
        path = os.path.join(root, 'meta.json')
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, 'r', encoding='utf-8') as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DatasetError(f'{path}: unreadable meta.json: {exc}') from exc
    if not isinstance(meta, dict):
        raise DatasetError(f'{path}: meta.json must hold an object')
    return meta


def _bool(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.bool_ else a != 0


class ShardDataset:
    """The samples of one split, read shard by shard.

    :param root: dataset folder (holding ``meta.json`` and the split folders)
    :param split: 'train', 'val' or 'test'
    :param seq_len: T used for training; longer samples are cut to their newest ``seq_len``
        slices, shorter ones are an error
    :param cache_shards: shards kept in memory
    :param max_samples: use at most this many samples (0 = all), evenly spaced over the split
    """

    def __init__(self, root: str, split: str, seq_len: int = 16, cache_shards: int = 2,
                 max_samples: int = 0) -> None:
        """Index the shards (reads only their array headers)."""
        self.root = str(root)
        self.split = split
        self.seq_len = int(seq_len)
        self.meta = read_meta(self.root, split)
        self.files = sorted(glob.glob(os.path.join(self.root, split, 'shard_*.npz')))
        if not self.files:
            raise DatasetError(f'no shards in {os.path.join(self.root, split)} '
                               '(expected shard_XXXX.npz from `l3rocc synth --dataset`)')
        self.cache_shards = max(1, int(cache_shards))
        self._cache: 'OrderedDict[int, Dict[str, np.ndarray]]' = OrderedDict()
        self.index: List[Tuple[int, int]] = []
        shape = None
        flows = set()
        for f_i, path in enumerate(self.files):
            n, s, flow = self._peek(path)
            shape = shape or s
            if s != shape:
                raise DatasetError(f'{path}: sample shape {s} differs from {shape}')
            flows.add(flow)
            self.index.extend((f_i, j) for j in range(n))
        #: Whether every shard holds flow targets (``flow``, ``flow_valid``).
        self.has_flow = flows == {True}
        if 0 < max_samples < len(self.index):  # evenly spread over every shard, in order
            keep = np.unique(np.linspace(0, len(self.index) - 1, int(max_samples)).round())
            self.index = [self.index[int(k)] for k in keep]
        self.sample_shape = shape  # (T, C, x, y, z)
        self._frame_index: Optional[np.ndarray] = None
        t, c = shape[0], shape[1]
        if t < self.seq_len:
            raise DatasetError(f'samples have T = {t} slices, fewer than seq_len {self.seq_len}')
        names = self.meta.get('feature_names')
        self.feature_names: Optional[Tuple[str, ...]] = tuple(names) if names else None
        if self.feature_names is not None and len(self.feature_names) != c:
            raise DatasetError(f'meta.json lists {len(self.feature_names)} feature names, '
                               f'shards hold C = {c}')

    @staticmethod
    def _peek(path: str) -> Tuple[int, Tuple[int, ...], bool]:
        """Return (samples, per-sample feature shape, holds flow) from the npz headers only."""
        try:
            with zipfile.ZipFile(path) as zf:
                names = {n[:-4] for n in zf.namelist() if n.endswith('.npy')}
                missing = {'features', 'occupancy', 'observed'} - names
                if missing:
                    raise DatasetError(f'{path}: needs features, occupancy and observed; '
                                       f'missing {sorted(missing)}')
                with zf.open('features.npy') as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape = read_header(fh)[0]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DatasetError(f'{path}: unreadable shard: {exc}') from exc
        if len(shape) != 6:
            raise DatasetError(f'{path}: features must be [N, T, C, x, y, z], got {shape}')
        return int(shape[0]), tuple(int(v) for v in shape[1:]), 'flow' in names

    def _shard(self, f_i: int) -> Dict[str, np.ndarray]:
        if f_i in self._cache:
            self._cache.move_to_end(f_i)
            return self._cache[f_i]
        path = self.files[f_i]
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in ARRAYS if k in z.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(f'{path}: unreadable shard: {exc}') from exc
        n = data['features'].shape[0]
        grid = data['features'].shape[:2] + data['features'].shape[3:]
        for k in ARRAYS[1:]:
            if k in data and k not in CHANNEL_ARRAYS:
                if data[k].shape != grid:
                    raise DatasetError(f'{path}: {k} shape {data[k].shape} != {grid}')
                data[k] = _bool(data[k])
        if ('flow' in data) != ('flow_valid' in data):
            raise DatasetError(f'{path}: flow and flow_valid come together')
        if 'flow' in data and data['flow'].shape != grid[:2] + (3,) + grid[2:]:
            raise DatasetError(f'{path}: flow shape {data["flow"].shape} != '
                               f'{grid[:2] + (3,) + grid[2:]}')
        if n == 0:
            raise DatasetError(f'{path}: empty shard')
        self._cache[f_i] = data
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return data

    def stream_start_samples(self) -> List[int]:
        """Return the samples whose window holds the first frames of their sequence.

        Their first ``k`` slices are exactly the window a pipeline holds ``k`` frames after it
        started (or reset): short windows with little accumulated evidence, which a network
        trained on full windows only has never seen. Needs the shards' ``frame_index`` (the
        newest slice's frame index); empty without it.
        """
        if self._frame_index is None:
            newest = []
            for path in self.files:
                try:
                    with np.load(path, allow_pickle=False) as z:
                        newest.append(z['frame_index'] if 'frame_index' in z.files else None)
                except (OSError, ValueError) as exc:
                    raise DatasetError(f'{path}: unreadable shard: {exc}') from exc
            self._frame_index = np.asarray(
                [-1 if newest[f] is None else int(newest[f][j]) for f, j in self.index])
        t = self.sample_shape[0]
        return [int(i) for i in np.flatnonzero((self._frame_index >= 0)
                                               & (self._frame_index <= t - 1))]

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.index)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        """One sample: features float32 [T, C, x, y, z] and bool [T, x, y, z] masks.

        Masks: occupancy, observed, observed_window (defaults to observed), dynamic (defaults
        to all False), known (defaults to all True); flow float32 [T, 3, x, y, z] and
        flow_valid when the shards hold them.
        """
        f_i, j = self.index[i]
        data = self._shard(f_i)
        t0 = data['features'].shape[1] - self.seq_len
        sl = slice(t0, None)
        out = {k: torch.from_numpy(data[k][j, sl].astype(np.float32))
               for k in CHANNEL_ARRAYS if k in data}
        for k in ARRAYS[1:]:
            if k in data and k not in CHANNEL_ARRAYS:
                out[k] = torch.from_numpy(np.ascontiguousarray(data[k][j, sl]))
        grid = out['occupancy'].shape
        out.setdefault('observed_window', out['observed'])
        out.setdefault('dynamic', torch.zeros(grid, dtype=torch.bool))
        out.setdefault('known', torch.ones(grid, dtype=torch.bool))
        return out


def augment(sample: Dict[str, torch.Tensor], code: int) -> Dict[str, torch.Tensor]:
    """Flip x (bit 0), flip y (bit 1), swap x and y (bit 2, square crops only).

    A flow (a vector field) also has its x component negated by the x flip, its y component by
    the y flip, and its x and y components exchanged by the swap.

    :param sample: features [T, C, x, y, z], optional flow [T, 3, x, y, z] and
        [T, x, y, z] masks
    :param code: 0..7
    """
    out = {}
    for k, v in sample.items():
        off = 1 if k in CHANNEL_ARRAYS else 0  # a channel axis after T
        ax, ay = 1 + off, 2 + off
        if code & 1:
            v = torch.flip(v, (ax,))
        if code & 2:
            v = torch.flip(v, (ay,))
        if k == 'flow' and code & 3:  # a flipped axis reverses that component
            sign = [-1.0 if code & 1 else 1.0, -1.0 if code & 2 else 1.0, 1.0]
            v = v * v.new_tensor(sign).reshape(1, 3, 1, 1, 1)
        if code & 4 and v.shape[ax] == v.shape[ay]:
            v = v.transpose(ax, ay)
            if k == 'flow':
                v = v[:, [1, 0, 2]]
        out[k] = v.contiguous()
    return out


def shift_z(sample: Dict[str, torch.Tensor], k: int) -> Dict[str, torch.Tensor]:
    """Move the content ``k`` voxels up (k > 0) or down (k < 0) along z.

    The ``|k|`` uncovered layers get zero features and all-False masks, ``known`` included, so
    they carry no loss; the layers pushed out are dropped.

    :param sample: features [T, C, x, y, z] and [T, x, y, z] masks
    :param k: shift in voxels, ``|k| < z``
    """
    if k == 0:
        return sample
    out = {}
    for key, v in sample.items():
        nz = v.shape[-1]
        if abs(k) >= nz:
            raise ValueError(f'z shift {k} must be smaller than the crop height {nz}')
        moved = torch.zeros_like(v)
        if k > 0:
            moved[..., k:] = v[..., :nz - k]
        else:
            moved[..., :nz + k] = v[..., -k:]
        out[key] = moved
    return out


def collate(samples: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack samples into a batch ([B, ...] per key)."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class ShardBatches:
    """Seeded, shard-major batches over a :class:`ShardDataset`, resumable at any step.

    :param dataset: the samples
    :param batch_size: B
    :param seed: base seed of the order and the augmentation
    :param augment_data: apply :func:`augment` and :func:`shift_z`
    :param z_shift: largest z shift in voxels (0 = none; at most a quarter of the crop height)
    :param short_window_prob: share of steps whose batch is a stream start: samples of
        :meth:`ShardDataset.stream_start_samples` cut to their first ``k`` slices,
        ``k`` uniform in ``[2, T - 1]`` (the same for the whole batch)
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, seed: int,
                 augment_data: bool = True, z_shift: int = 0,
                 short_window_prob: float = 0.0) -> None:
        """Plan nothing yet; orders are derived from (seed, epoch)."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment_data = augment_data
        self.z_shift = max(0, int(z_shift))
        self.short_window_prob = float(short_window_prob)
        self.starts = dataset.stream_start_samples() if self.short_window_prob > 0 else []

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per pass over the data (at least 1)."""
        return max(1, len(self.dataset) // self.batch_size)

    def epoch_order(self, epoch: int) -> List[int]:
        """Sample indices of one epoch: shards in a seeded order, samples shuffled within."""
        rng = np.random.default_rng([self.seed, epoch])
        by_shard: Dict[int, List[int]] = {}
        for i, (f_i, _) in enumerate(self.dataset.index):
            by_shard.setdefault(f_i, []).append(i)
        order: List[int] = []
        for f_i in rng.permutation(sorted(by_shard)):
            members = by_shard[int(f_i)]
            order.extend(members[k] for k in rng.permutation(len(members)))
        if len(order) < self.batch_size:  # tiny datasets: repeat
            order = (order * (self.batch_size // max(1, len(order)) + 1))[:self.batch_size]
        return order

    def iterate(self, start_step: int = 0) -> Iterator[Tuple[int, int, Dict[str, torch.Tensor]]]:
        """Yield ``(step, epoch, batch)`` forever, starting at ``start_step``."""
        per_epoch = self.batches_per_epoch
        step = int(start_step)
        while True:
            epoch, k = divmod(step, per_epoch)
            order = self.epoch_order(epoch)
            for b in range(k, per_epoch):
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                rng = np.random.default_rng([self.seed, 1_000_003, step])
                t = self.dataset.seq_len
                keep = t
                if self.starts and t > 2 and rng.random() < self.short_window_prob:
                    idx = [self.starts[int(k)]
                           for k in rng.integers(0, len(self.starts), len(idx))]
                    keep = int(rng.integers(2, t))
                codes = rng.integers(0, 8, len(idx)) if self.augment_data else [0] * len(idx)
                # At most a quarter of the crop height: most of the content stays in view.
                kz = min(self.z_shift, int(self.dataset.sample_shape[-1]) // 4)
                shifts = (rng.integers(-kz, kz + 1, len(idx))
                          if self.augment_data and kz else [0] * len(idx))
                samples = [shift_z(augment(self.dataset[i], int(c)), int(k))
                           for i, c, k in zip(idx, codes, shifts)]
                if keep < t:  # oldest slices first: the first `keep` frames of the stream
                    samples = [{key: v[:keep] for key, v in sm.items()} for sm in samples]
                yield step, epoch, collate(samples)
                step += 1
