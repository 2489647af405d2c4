"""Training shards: geometry-pipeline features of synthetic windows with exact 4D ground truth.

For every sequence (seeded, split by seed range) the real geometry stage
(:class:`~l3rocc_core.pipeline.OccupancyPipeline`, ``refiner: none``, GT camera poses) runs
frame by frame. Its depth (``DatasetOptions.depth``): ``sweep`` = the plane sweep on the rendered
images (``depth_source: plane_sweep``); ``gt`` = the renderer's exact depth as a registered depth
image (``depth_source: topic``), with relative Gaussian noise ``depth_noise`` and a share
``depth_dropout`` of pixels without return, so the refiner learns what better depth looks like;
``mixed`` = one of the two per sequence, drawn from its seed (``gt`` with ``gt_share``). Once the
window is full, every ``window_every`` frames the window is saved as ``crops_per_window`` random
crops (biased to observed and occupied voxels). Shards ``DIR/<split>/shard_XXXX.npz``
(compressed) hold, for ``N`` crops of ``T`` slices (oldest first) and crop size ``x, y, z``
voxels:

===================  ============================  ==============================================
key                  dtype / shape                 meaning
===================  ============================  ==============================================
``features``         float16 [N, T, C, x, y, z]    ``EvidenceFusion.features()``, channels
                                                   ``feature_names`` of ``meta.json``
``occupancy``        bool [N, T, x, y, z]          GT occupancy of solids at each slice's time
``observed``         bool [N, T, x, y, z]          GT observed by that slice's frame (rays up to
                                                   and including the first hit, exact depth)
``observed_window``  bool [N, T, x, y, z]          union of ``observed`` over the ``T`` frames
                                                   ending at the slice (the fusion's mask rule)
``dynamic``          bool [N, T, x, y, z]          GT voxels of moving objects
``stamps_ns``        int64 [N, T]                  slice stamps
``seed``             int64 [N]                     sequence seed
``family``           int8 [N]                      index into ``meta.json`` ``families``
``frame_index``      int64 [N]                     frame index of the newest slice
``corner``           int64 [N, 3]                  crop min corner (voxel ijk) in the sequence
                                                   grid
``flow``             float16 [N, T, 3, x, y, z]    occupancy flow from feature matching (m/s,
                                                   world x, y, z; see
                                                   :mod:`l3rocc_core.refiner.flow_targets`): the
                                                   velocity of matched surface points between
                                                   the previous frame and the slice's, in the
                                                   voxel of the newer end (``motion_targets``)
``flow_valid``       bool [N, T, x, y, z]          voxels holding a matched point
===================  ============================  ==============================================

``DIR/<split>/meta.json`` records feature names, crop size, voxel size, window size, seeds,
families, camera motions, counts, options and timings.
"""

from dataclasses import asdict, dataclass
import json
import os
from pathlib import Path
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from l3rocc_core.synth.motion import CAMERA_MOTIONS
from l3rocc_core.synth.scene import FAMILIES
from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence

SPLIT_SEED_BASE = {'train': 0, 'val': 100_000, 'test': 200_000}
#: ``DatasetOptions.depth`` values
DATASET_DEPTHS = ('sweep', 'gt', 'mixed')
FPS_CHOICES = (10.0, 15.0, 20.0, 30.0)


@dataclass
class DatasetOptions:
    """How sequences are rendered and windows cut.

    :param frames: frames per sequence
    :param width: render and working width in pixels (height = 3/4 of it)
    :param crop: crop size (x, y, z) in voxels
    :param crops_per_window: crops saved per window
    :param window_every: frames between saved windows once the window is full
    :param window_size: T
    :param windows_per_shard: windows per shard file
    :param device: torch device of the pipeline
    :param observed_stride: pixel stride of the GT observed-mask traversal (hits use every pixel)
    :param max_extent_m: largest horizontal grid extent of street scenes (metres)
    :param distortion_prob: share of sequences rendered with lens distortion
    :param blur_prob: share of sequences rendered with motion blur
    :param motion_targets: also write ``flow`` / ``flow_valid`` (feature-matched occupancy
        flow, the targets of the motion-consistency loss term; ~8 ms per frame)
    :param depth: depth of the geometry stage: 'sweep', 'gt' or 'mixed' (see the module)
    :param depth_noise: ``gt`` depth: relative standard deviation of multiplicative noise
    :param depth_dropout: ``gt`` depth: share of pixels set to no return
    :param gt_share: ``mixed``: probability that a sequence gets ``gt`` depth
    """

    frames: int = 40
    width: int = 320
    crop: Tuple[int, int, int] = (32, 32, 16)
    crops_per_window: int = 4
    window_every: int = 2
    window_size: int = 16
    windows_per_shard: int = 8
    device: str = 'cpu'
    observed_stride: int = 3
    max_extent_m: Tuple[float, float] = (6.4, 6.4)
    distortion_prob: float = 0.25
    blur_prob: float = 0.25
    motion_targets: bool = True
    depth: str = 'sweep'
    depth_noise: float = 0.01
    depth_dropout: float = 0.02
    gt_share: float = 0.5

    def __post_init__(self) -> None:
        """Check values on entry."""
        if self.frames < self.window_size:
            raise ValueError(f'frames ({self.frames}) must be >= window_size '
                             f'({self.window_size})')
        if len(self.crop) != 3 or min(self.crop) < 1:
            raise ValueError(f'crop must be 3 positive sizes, got {self.crop}')
        if self.window_every < 1 or self.crops_per_window < 1:
            raise ValueError('window_every and crops_per_window must be >= 1')
        if self.depth not in DATASET_DEPTHS:
            raise ValueError(f'depth must be one of {DATASET_DEPTHS}, got {self.depth!r}')
        if not (self.depth_noise >= 0 and 0 <= self.depth_dropout < 1
                and 0 <= self.gt_share <= 1):
            raise ValueError('need depth_noise >= 0, 0 <= depth_dropout < 1, 0 <= gt_share <= 1')


def sequence_depth(spec: SequenceSpec, opts: DatasetOptions) -> str:
    """Return the depth ('sweep' or 'gt') the geometry stage gets on ``spec`` (mixed: seeded)."""
    if opts.depth != 'mixed':
        return opts.depth
    return 'gt' if np.random.default_rng([spec.seed, 41]).random() < opts.gt_share else 'sweep'


def degrade_depth(depth: np.ndarray, rng: np.random.Generator, noise: float,
                  dropout: float) -> np.ndarray:
    """Exact depth with sensor-like errors: multiplicative noise and dropped pixels.

    :param depth: float32 [H, W] metres, 0 = no hit
    :param noise: relative standard deviation (0.01 = 1 cm at 1 m)
    :param dropout: share of pixels set to 0 (no return)
    :return: float32 [H, W] metres, 0 = no return
    """
    out = depth.astype(np.float32, copy=True)
    if noise > 0:
        out *= (1.0 + noise * rng.standard_normal(out.shape)).astype(np.float32)
    if dropout > 0:
        out[rng.random(out.shape) < dropout] = 0.0
    return np.maximum(out, 0.0)


def sequence_spec(split: str, index: int, opts: DatasetOptions) -> SequenceSpec:
    """Return the sequence ``index`` of ``split`` (seed = split base + index, deterministic).

    Families alternate; camera motion, frame rate, distortion, blur and start time are drawn
    from the seed.
    """
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f'split must be one of {sorted(SPLIT_SEED_BASE)}, got {split!r}')
    seed = SPLIT_SEED_BASE[split] + int(index)
    rng = np.random.default_rng([seed, 21])
    family = FAMILIES[index % len(FAMILIES)]
    weights = np.array([0.3, 0.2, 0.2, 0.15, 0.15])          # handheld vehicle orbit pan static
    if family == 'driving':
        weights = np.array([0.15, 0.45, 0.1, 0.15, 0.15])
    camera = str(rng.choice(CAMERA_MOTIONS, p=weights / weights.sum()))
    return SequenceSpec(family, camera, seed, opts.frames, float(rng.choice(FPS_CHOICES)),
                        opts.width, opts.width * 3 // 4, None,
                        bool(rng.random() < opts.distortion_prob),
                        bool(rng.random() < opts.blur_prob), float(rng.uniform(0.0, 8.0)))


def _crop_corners(rng: np.random.Generator, occupied: np.ndarray, observed: np.ndarray,
                  crop: Tuple[int, int, int], n: int) -> np.ndarray:
    """Crop min corners: 60 % centred on observed occupied voxels, 30 % on observed, 10 % anywhere.

    :param occupied: bool [X, Y, Z]
    :param observed: bool [X, Y, Z]
    :return: int64 [n, 3]
    """
    dims = np.asarray(occupied.shape)
    size = np.minimum(np.asarray(crop), dims)
    occ_obs = np.flatnonzero(occupied & observed)
    obs = np.flatnonzero(observed)
    out = []
    for _ in range(n):
        u = rng.random()
        pool = occ_obs if u < 0.6 and len(occ_obs) else obs if u < 0.9 and len(obs) else None
        if pool is None:
            centre = rng.integers(0, dims)
        else:
            centre = np.array(np.unravel_index(int(rng.choice(pool)), occupied.shape))
        corner = np.clip(centre - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0,
                         dims - size)
        out.append(corner)
    return np.asarray(out, np.int64)


def sequence_windows(spec: SequenceSpec, opts: DatasetOptions, progress=None,
                     timings: Optional[Dict[str, float]] = None
                     ) -> Iterator[Dict[str, np.ndarray]]:
    """Run the geometry pipeline over one sequence and yield the crops of its saved windows.

    :param spec: the sequence
    :param opts: dataset options
    :param progress: optional callable(frames_done) for a progress bar
    :param timings: optional dict accumulating seconds spent in 'render_gt' (rendering and
        ground truth), 'pipeline' (the geometry stage) and 'crops'
    :return: iterator of dicts with the per-crop arrays of the shard format (no batch axis)
    """
    import torch

    from l3rocc_core.camera import Undistorter
    from l3rocc_core.config import PipelineConfig
    from l3rocc_core.frame import Frame
    from l3rocc_core.pipeline import OccupancyPipeline
    from l3rocc_core.refiner.flow_targets import dense_crop, matched_scene_flow, voxel_flow
    from l3rocc_core.synth.ground_truth import GroundTruth, suggest_grid

    seq = SyntheticSequence(spec, ground_truth=False)
    seq.grid = suggest_grid(seq.scene, seq.poses, spec.voxel_size, opts.max_extent_m,
                            seq.grid.frame_id)
    seq.gt = GroundTruth(seq.scene, seq.grid, geometry=seq.renderer.geometry)
    seq.observed_stride = opts.observed_stride
    g = seq.grid
    depth_kind = sequence_depth(spec, opts)
    config = PipelineConfig().with_values({
        'depth_source': 'topic' if depth_kind == 'gt' else 'plane_sweep',
        'grid_min': [float(v) for v in g.origin], 'grid_max': [float(v) for v in g.grid_max],
        'voxel_size': g.voxel_size, 'max_depth': seq.max_depth, 'refiner': 'none',
        'device': opts.device, 'window_size': opts.window_size, 'working_width': opts.width,
        'world_frame': g.frame_id})
    pipe = OccupancyPipeline(config)
    if tuple(pipe.grid.dims) != tuple(g.dims):
        raise RuntimeError(f'pipeline grid {pipe.grid.dims} != GT grid {g.dims}')
    undistort = Undistorter(seq.camera, opts.width)
    if depth_kind == 'gt' and not np.allclose(undistort.camera.K, seq.pinhole.K, atol=1e-6):
        raise RuntimeError('the rendered depth is not registered to the undistorted image')
    rng = np.random.default_rng([spec.seed, 31])
    depth_rng = np.random.default_rng([spec.seed, 43])
    T = opts.window_size
    gt: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    stamp_to_index: Dict[int, int] = {}
    timings = timings if timings is not None else {}
    # Per frame: sparse matched flow (flat voxel indices [V], m/s [V, 3]); the previous frame.
    flows: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
    previous = None
    no_flow = (np.zeros(0, np.int64), np.zeros((0, 3), np.float32))
    for i in range(spec.frames):
        t0 = time.perf_counter()
        f = seq.frame(i)
        t1 = time.perf_counter()
        gt[i] = (f.occupied, f.observed, f.dynamic)
        gt.pop(i - 2 * T, None)
        stamp_to_index[f.stamp_ns] = i
        image = undistort(f.image)
        depth = (degrade_depth(f.depth, depth_rng, opts.depth_noise, opts.depth_dropout)
                 if depth_kind == 'gt' else None)
        frame = Frame(image, f.stamp_ns, undistort.camera, f.T_world_cam,
                      'camera_optical_frame', depth)
        pipe.push(frame)
        t2 = time.perf_counter()
        timings['render_gt'] = timings.get('render_gt', 0.0) + t1 - t0
        timings['pipeline'] = timings.get('pipeline', 0.0) + t2 - t1
        if opts.motion_targets:
            flows[i] = no_flow
            if previous is not None:
                pts, vel = matched_scene_flow(previous[0], image, previous[1], f.depth,
                                              undistort.camera.K, previous[2], f.T_world_cam,
                                              f.t - previous[3])
                flows[i] = voxel_flow(pts, vel, g)
            previous = (image, f.depth, f.T_world_cam, f.t)
            flows.pop(i - 2 * T, None)
            t2b = time.perf_counter()
            timings['flow'] = timings.get('flow', 0.0) + t2b - t2
            t2 = t2b
        if progress is not None:
            progress(1)
        full = pipe.fusion.num_slices >= T
        if not full or (i - (T - 1)) % opts.window_every != 0:
            continue
        stamps = pipe.fusion.stamps_ns()
        idx = [stamp_to_index[int(s)] for s in stamps]
        with torch.no_grad():
            feats = pipe.fusion.features().cpu().numpy()              # [T, C, X, Y, Z]
        occ = np.stack([gt[k][0] for k in idx])
        obs = np.stack([gt[k][1] for k in idx])
        dyn = np.stack([gt[k][2] for k in idx])
        union = np.stack([np.any(np.stack([gt[j][1] for j in range(max(0, k - T + 1), k + 1)
                                           if j in gt]), 0) for k in idx])
        corners = _crop_corners(rng, occ[-1], obs[-1], opts.crop, opts.crops_per_window)
        timings['crops'] = timings.get('crops', 0.0) + time.perf_counter() - t2
        cx, cy, cz = np.minimum(np.asarray(opts.crop), np.asarray(g.dims))
        for c in corners:
            sl = (slice(c[0], c[0] + cx), slice(c[1], c[1] + cy), slice(c[2], c[2] + cz))
            motion = {}
            if opts.motion_targets:
                dense = [dense_crop(*flows[k], g, c, (cx, cy, cz)) for k in idx]
                motion = {'flow': np.stack([d[0] for d in dense]).astype(np.float16),
                          'flow_valid': np.stack([d[1] for d in dense])}
            yield {
                **motion,
                'features': feats[(slice(None), slice(None)) + sl].astype(np.float16),
                'occupancy': occ[(slice(None),) + sl], 'observed': obs[(slice(None),) + sl],
                'observed_window': union[(slice(None),) + sl],
                'dynamic': dyn[(slice(None),) + sl], 'stamps_ns': np.asarray(stamps, np.int64),
                'seed': np.int64(spec.seed), 'family': np.int8(FAMILIES.index(spec.family)),
                'frame_index': np.int64(i), 'corner': c.astype(np.int64)}


class ShardWriter:
    """Collects crops and writes ``shard_XXXX.npz`` files (compressed, atomic).

    :param folder: output folder (created)
    :param crops_per_shard: crops per file
    """

    def __init__(self, folder: str, crops_per_shard: int):
        """Start empty."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.crops_per_shard = int(crops_per_shard)
        self.pending: List[Dict[str, np.ndarray]] = []
        self.shards: List[str] = []
        self.count = 0

    def add(self, item: Dict[str, np.ndarray]) -> None:
        """Queue a crop; write a shard when full."""
        self.pending.append(item)
        self.count += 1
        if len(self.pending) >= self.crops_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the queued crops (if any) as the next shard."""
        if not self.pending:
            return
        name = f'shard_{len(self.shards):04d}.npz'
        arrays = {k: np.stack([it[k] for it in self.pending]) for k in self.pending[0]}
        tmp = self.folder / (name + '.partial')
        with open(tmp, 'wb') as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, self.folder / name)
        self.shards.append(name)
        self.pending = []


def write_dataset(root: str, split: str, num_sequences: int, opts: DatasetOptions,
                  show_progress: bool = True) -> dict:
    """Render ``num_sequences`` sequences of ``split`` and write shards + ``meta.json``.

    :param root: dataset folder; shards go to ``root/<split>/``
    :param split: 'train', 'val' or 'test' (disjoint seed ranges)
    :param num_sequences: sequences to render
    :param opts: options
    :param show_progress: tqdm bar over frames
    :return: the meta dictionary (also written after every sequence, ``complete`` at the end)
    """
    from tqdm import tqdm

    folder = Path(root) / split
    if folder.exists():
        for old in folder.glob('shard_*.npz'):
            old.unlink()
    writer = ShardWriter(str(folder), opts.windows_per_shard * opts.crops_per_window)
    specs = [sequence_spec(split, i, opts) for i in range(num_sequences)]
    t0 = time.perf_counter()
    windows = 0
    bar = tqdm(total=num_sequences * opts.frames, desc=f'synth dataset {split}', unit='frame',
               disable=not show_progress)
    meta: dict = {}
    timings: Dict[str, float] = {}
    for n_done, spec in enumerate(specs, 1):
        for k, item in enumerate(sequence_windows(spec, opts, bar.update, timings)):
            writer.add(item)
            if k % opts.crops_per_window == 0:
                windows += 1
        bar.set_postfix(windows=windows)
        if n_done == len(specs):
            writer.flush()
        # meta.json after every sequence: the shards written so far are usable at once.
        meta = _meta(split, specs, n_done, windows, writer, opts, time.perf_counter() - t0)
        frames = max(1, n_done * opts.frames)
        meta['ms_per_frame'] = {k: round(v / frames * 1e3, 1) for k, v in timings.items()}
        _write_json(folder / 'meta.json', meta)
    bar.close()
    return meta


def _meta(split: str, specs: List[SequenceSpec], done: int, windows: int,
          writer: ShardWriter, opts: DatasetOptions, wall: float) -> dict:
    from l3rocc_core.fusion import FEATURE_NAMES

    return {
        'split': split, 'complete': done == len(specs), 'feature_names': list(FEATURE_NAMES),
        'crop': list(opts.crop), 'voxel_size': specs[0].voxel_size if specs else 0.05,
        'window_size': opts.window_size, 'families': list(FAMILIES),
        'camera_motions': list(CAMERA_MOTIONS), 'seeds': [s.seed for s in specs[:done]],
        'sequences': [{'seed': s.seed, 'family': s.family, 'camera': s.camera, 'fps': s.fps,
                       'distortion': s.distortion, 'motion_blur': s.motion_blur,
                       'depth': sequence_depth(s, opts)}
                      for s in specs[:done]],
        'seed_range': [SPLIT_SEED_BASE[split], SPLIT_SEED_BASE[split] + len(specs)],
        'counts': {'sequences': done,
                   'windows': (writer.count - len(writer.pending)) // opts.crops_per_window,
                   'crops': writer.count - len(writer.pending), 'shards': len(writer.shards),
                   'windows_processed': windows},
        'shards': list(writer.shards), 'options': asdict(opts), 'wall_s': round(wall, 1),
        'windows_per_minute': round(windows / max(wall, 1e-9) * 60.0, 2),
        'keys': {'features': 'float16 [N, T, C, x, y, z]', 'occupancy': 'bool [N, T, x, y, z]',
                 'observed': 'bool [N, T, x, y, z]', 'observed_window': 'bool [N, T, x, y, z]',
                 'dynamic': 'bool [N, T, x, y, z]', 'stamps_ns': 'int64 [N, T]',
                 'seed': 'int64 [N]', 'family': 'int8 [N]', 'frame_index': 'int64 [N]',
                 'corner': 'int64 [N, 3]',
                 **({'flow': 'float16 [N, T, 3, x, y, z] m/s',
                     'flow_valid': 'bool [N, T, x, y, z]'} if opts.motion_targets else {})},
    }


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix('.json.partial')
    with open(tmp, 'w', encoding='utf-8') as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def load_shard(path: str) -> Dict[str, np.ndarray]:
    """Read a shard into memory (``allow_pickle=False``).

    :raises ValueError: when a key of the format is missing
    """
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    missing = {'features', 'occupancy', 'observed', 'dynamic'} - set(out)
    if missing:
        raise ValueError(f'{path}: not an l3rocc synth shard, missing {sorted(missing)}')
    return out


def iter_shards(folder: str) -> Iterator[str]:
    """Shard paths of a split folder in order."""
    yield from (str(p) for p in sorted(Path(folder).glob('shard_*.npz')))
