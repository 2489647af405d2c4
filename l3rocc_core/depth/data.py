"""Training frames for the depth network, rendered from the varied synthetic world.

:func:`generate` renders ``SequenceSpec(variety=True)`` sequences (both families; fixed mounted
cameras and moving ones) at the depth resolution and writes one ``seq_NNNNN.npz`` per sequence
into a folder, with ``meta.json``. Per sample: the image, the camera, the pose, the exact depth,
the moving-object mask and, for frames of a moving camera, the plane sweep's depth and
confidence on the sources that :class:`~l3rocc_core.window.SlidingWindow` selects from the
sequence's earlier frames, as the pipeline does. :func:`load` reads a folder back into arrays.
"""

from dataclasses import dataclass
import json
import os
from typing import Dict, List, Optional

import numpy as np

from l3rocc_core.config import DepthConfig, WindowConfig
from l3rocc_core.frame import Frame
from l3rocc_core.synth.motion import CAMERA_MOTIONS

FAMILY_IDS = ('industrial', 'driving')
#: camera motions of the generated sequences and how often each is drawn
CAMERA_SHARES = {'static': 0.4, 'handheld': 0.2, 'vehicle': 0.15, 'orbit': 0.15, 'pan': 0.1}
_MOVING_FRAMES = 16      # rendered frames of a moving-camera sequence
_FIRST_SAMPLE = 5        # its frames from this index on are samples (earlier: sources only)
_STATIC_FRAMES = 5       # samples of a fixed-camera sequence (spread over its duration)
_SWEEP_MIN_DEPTH = 0.3


@dataclass
class SequencePlan:
    """One sequence to render: family, camera motion, seed, start time."""

    family: str
    camera: str
    seed: int
    start_s: float


def plan(seed: int, count: int) -> List[SequencePlan]:
    """Return the sequences of a data seed (deterministic; other seeds give disjoint scenes).

    :param seed: data seed (0 = training set of the shipped model)
    :param count: number of sequences
    """
    rng = np.random.default_rng([seed, 101])
    kinds = list(CAMERA_SHARES)
    p = np.array([CAMERA_SHARES[k] for k in kinds])
    out = []
    for i in range(count):
        out.append(SequencePlan(str(rng.choice(FAMILY_IDS)), str(rng.choice(kinds, p=p / p.sum())),
                                1_000_000 + seed * 10_000 + i, float(rng.uniform(0.0, 30.0))))
    return out


def render_sequence(item: SequencePlan, width: int, height: int) -> Dict[str, np.ndarray]:
    """Render one planned sequence and its samples.

    :param width: image width in pixels (the depth resolution)
    :param height: image height in pixels
    :return: arrays with a leading sample axis: ``image`` uint8 [N, H, W, 3], ``depth``
        float16 [N, H, W] metres (0 = no surface), ``moving`` bool [N, H, W], ``sweep_depth``
        float16 [N, H, W] (0 = invalid or no sweep), ``sweep_conf`` float16 [N, H, W], ``K``
        float64 [N, 3, 3], ``T_world_cam`` float64 [N, 4, 4], ``family`` int8 [N], ``camera``
        int8 [N] (index in CAMERA_MOTIONS)
    """
    from l3rocc_core.depth.plane_sweep import PlaneSweepDepth
    from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence
    from l3rocc_core.window import SlidingWindow

    static = item.camera == 'static'
    spec = SequenceSpec(item.family, item.camera, item.seed,
                        _STATIC_FRAMES if static else _MOVING_FRAMES, 1.0 if static else 15.0,
                        width, height, start_s=item.start_s, variety=True)
    seq = SyntheticSequence(spec, ground_truth=False)
    cam = seq.pinhole
    sweep = PlaneSweepDepth(DepthConfig(min_depth=_SWEEP_MIN_DEPTH, max_depth=seq.max_depth,
                                        depth_downsample=1), 'cpu')
    window = SlidingWindow(WindowConfig())
    rows: Dict[str, list] = {k: [] for k in ('image', 'depth', 'moving', 'sweep_depth',
                                             'sweep_conf', 'K', 'T_world_cam')}
    for i in range(spec.frames):
        f = seq.frame(i)
        frame = Frame(f.image, f.stamp_ns, cam, f.T_world_cam)
        sd = np.zeros((height, width), np.float32)
        sc = np.zeros((height, width), np.float32)
        if not static:
            d = f.depth[f.depth > 0]
            sources = window.select_sources(frame, float(np.median(d)) if d.size else None)
            if sources and i >= _FIRST_SAMPLE:
                res = sweep.estimate(frame, sources)
                sd, sc = res.depth.numpy(), res.confidence.numpy() * res.valid.numpy()
            window.push(frame)
            if i < _FIRST_SAMPLE:
                continue
        rows['image'].append(f.image)
        rows['depth'].append(f.depth)
        rows['moving'].append(f.moving)
        rows['sweep_depth'].append(sd)
        rows['sweep_conf'].append(sc)
        rows['K'].append(cam.K)
        rows['T_world_cam'].append(f.T_world_cam)
    n = len(rows['image'])
    out = {k: np.stack(v) for k, v in rows.items()}
    for k in ('depth', 'sweep_depth', 'sweep_conf'):
        out[k] = out[k].astype(np.float16)
    out['family'] = np.full(n, FAMILY_IDS.index(item.family), np.int8)
    out['camera'] = np.full(n, CAMERA_MOTIONS.index(item.camera), np.int8)
    return out


def generate(out_dir: str, seed: int, count: int, width: int = 160, height: int = 120,
             progress: bool = True) -> dict:
    """Render ``count`` sequences of data seed ``seed`` into ``out_dir`` (resumable).

    Sequences whose file exists are skipped, so an interrupted run continues where it stopped.

    :return: the meta dictionary (also ``out_dir/meta.json``)
    """
    from tqdm import tqdm

    from l3rocc_core.synth.sequence import _savez

    os.makedirs(out_dir, exist_ok=True)
    items = plan(seed, count)
    samples = 0
    for i, item in enumerate(tqdm(items, desc=f'depth data seed {seed}', unit='seq',
                                  disable=not progress)):
        path = os.path.join(out_dir, f'seq_{i:05d}.npz')
        if os.path.isfile(path):
            continue
        arrays = render_sequence(item, width, height)
        samples += len(arrays['image'])
        _savez(path, **arrays)
    meta = {'seed': seed, 'sequences': count, 'width': width, 'height': height,
            'camera_shares': CAMERA_SHARES, 'plan': [vars(p) for p in items]}
    with open(os.path.join(out_dir, 'meta.json'), 'w', encoding='utf-8') as fh:
        json.dump(meta, fh, indent=1)
    return meta


def load(data_dir: str, limit: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Concatenate the sequences of a folder written by :func:`generate`.

    :param limit: read at most this many sequence files
    :return: the arrays of :func:`render_sequence` plus ``sequence`` int32 [N]
    :raises FileNotFoundError: when the folder has no sequence file
    """
    names = sorted(n for n in os.listdir(data_dir) if n.startswith('seq_') and
                   n.endswith('.npz')) if os.path.isdir(data_dir) else []
    if limit is not None:
        names = names[:limit]
    if not names:
        raise FileNotFoundError(f'no depth training sequences (seq_*.npz) in {data_dir}')
    parts: Dict[str, list] = {}
    for k, name in enumerate(names):
        with np.load(os.path.join(data_dir, name), allow_pickle=False) as z:
            for key in z.files:
                parts.setdefault(key, []).append(z[key])
            parts.setdefault('sequence', []).append(np.full(len(z['image']), k, np.int32))
    return {k: np.concatenate(v) for k, v in parts.items()}
