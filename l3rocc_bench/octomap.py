"""Fusion throughput side by side with OctoMap, on the very same depth maps.

Both integrate the depth maps of the TUM fr1/xyz clip (GT depth, GT poses) at the same voxel size
and maximum range: ours with :class:`~l3rocc_core.fusion.EvidenceFusion`, OctoMap with
``OcTree.insertPointCloud`` on the back-projected points (every valid pixel, depth <= max range)
and the sensor origin. Throughput is depth points integrated per second: the number of valid
depth pixels of the timed frames divided by the time spent integrating them, for every variant
(the same numerator for all, so the ratios compare the time per depth map).

Our variants (:func:`default_variants`):

- ``default``: the fusion as the pipeline configures it by default (``fusion_mode``
  projective where available: every voxel of the frustum is projected into the depth map, so
  every pixel counts), on the grid of ``config/tum.yaml``;
- ``default_large_grid``: the same on a grid of the default size (``config/l3rocc.yaml``,
  4 x 4 x 2 m) centred on the TUM grid, since projective work grows with the grid, not the image;
- ``projective_all_pixels``: projective with ``ray_stride_px: 1``: every pixel's ray counts
  fully in the free-space weights (the default counts the rays of every n-th pixel, as the
  default ray casting does; the classification uses every pixel in both), the same work;
- ``raycast_all_pixels``: a ray marched from every pixel (what OctoMap does), exact and slow;
- ``raycast_default_stride``: rays from every n-th pixel (free space) with hits from every pixel.

OctoMap's tree is unbounded; ours is bounded by its grid (the TUM grid contains the scene).
OctoMap runs on one thread; so does our fusion on the CPU (its per-frame operations are too small
to gain from more, :func:`~l3rocc_core.projective.one_intra_op_thread`): one core each.
OctoMap is also timed with ``discretize=True`` (endpoints merged per voxel before ray casting,
OctoMap's faster mode), reported beside the default. The load averages before and after are
recorded: on a shared machine every figure depends on the load.
"""

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from l3rocc_bench.resources import cpu_count, load_average
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import FusionConfig, PipelineConfig
from l3rocc_core.fusion import EvidenceFusion
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.paths import config_file

Variant = Tuple[str, Dict[str, Any], str, Optional[int]]


def back_project(depth: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray,
                 max_depth: float) -> np.ndarray:
    """Return float64 [n, 3] world points of the valid depth pixels (0 < depth <= max_depth).

    :param depth: float32 [H, W] metres
    :param camera: undistorted pinhole model of ``depth``
    :param T_world_cam: float64 [4, 4] camera to world
    :param max_depth: metres
    """
    rays = camera.pixel_rays().reshape(-1, 3)
    d = depth.reshape(-1)
    keep = (d > 0) & (d <= max_depth)
    p_cam = rays[keep] * d[keep, None]
    return p_cam.astype(np.float64) @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def default_variants(quick: bool = False) -> List[Variant]:
    """Return our configurations to time: (label, FusionConfig overrides, grid, max frames).

    ``grid`` is 'scene' (the TUM grid) or 'large' (default-size grid); ``max frames`` limits the
    frames timed for slow variants (None = all).

    :param quick: leave out the slow all-pixels ray casting
    """
    fields = FusionConfig.__dataclass_fields__
    out: List[Variant] = [('default', {}, 'scene', None),
                          ('default_large_grid', {}, 'large', None)]
    raycast = {'fusion_mode': 'raycast'} if 'fusion_mode' in fields else {}
    if raycast:
        out.append(('projective_all_pixels', {'fusion_mode': 'projective', 'ray_stride_px': 1},
                    'scene', None))
    if not quick or not raycast:
        out.append(('raycast_all_pixels', dict(raycast, ray_stride_px=1), 'scene', 8))
    if raycast:
        out.append(('raycast_default_stride', dict(raycast, ray_stride_px=0), 'scene', None))
    return out


def _ours(grid: VoxelGrid, depths: Sequence[np.ndarray], camera: PinholeCamera,
          poses: Sequence[np.ndarray], max_depth: float, overrides: Dict[str, Any],
          device: str) -> List[float]:
    cfg = FusionConfig(**overrides)
    fusion = EvidenceFusion(grid, cfg, 16, max_depth, device)
    cuda = torch.device(device).type == 'cuda'
    seconds = []
    for n, (depth, T) in enumerate(zip(depths, poses)):
        d = torch.from_numpy(depth).to(device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fusion.integrate(T, n, d, camera)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return seconds


def _octomap(points: Sequence[np.ndarray], poses: Sequence[np.ndarray], voxel_size: float,
             max_depth: float, discretize: bool = False) -> List[float]:
    import pyoctomap
    tree = pyoctomap.OcTree(voxel_size)
    seconds = []
    for p, T in zip(points, poses):
        origin = np.ascontiguousarray(T[:3, 3], dtype=np.float64)
        cloud = np.ascontiguousarray(p, dtype=np.float64)
        t0 = time.perf_counter()
        tree.insertPointCloud(cloud, origin, max_range=max_depth, discretize=discretize)
        seconds.append(time.perf_counter() - t0)
    return seconds


def _large_grid(grid: VoxelGrid, default: PipelineConfig) -> VoxelGrid:
    """Return a grid of the default configuration's size centred on ``grid``."""
    half = 0.5 * (np.asarray(default.grid.grid_max) - np.asarray(default.grid.grid_min))
    centre = 0.5 * (np.asarray(grid.origin) + np.asarray(grid.grid_max))
    return VoxelGrid.from_bounds((centre - half).tolist(), (centre + half).tolist(),
                                 grid.voxel_size, grid.frame_id)


def compare_with_octomap(depths: Sequence[np.ndarray], camera: PinholeCamera,
                         poses: Sequence[np.ndarray], grid: VoxelGrid, max_depth: float,
                         device: str = 'cpu', warmup: int = 2,
                         variants: Optional[Sequence[Variant]] = None,
                         rounds: int = 3) -> Dict[str, Any]:
    """Integrate the same depth maps with our fusion and with OctoMap; report points/s.

    :param depths: float32 [H, W] depth maps (metres, 0 = no return), matching ``camera``
    :param camera: undistorted pinhole model of the depth maps
    :param poses: float64 [4, 4] T_world_cam per depth map
    :param grid: our grid (OctoMap is unbounded; the grid should contain the scene)
    :param max_depth: the same maximum range for both (metres)
    :param device: torch device for ours
    :param warmup: leading frames integrated but not timed (both sides)
    :param variants: our configurations (default :func:`default_variants`)
    :param rounds: interleaved repetitions of every side; per frame the median is kept
    :return: ``ours`` {label: {ms_per_frame, points_per_s, overrides, grid_dims,
        fusion_threads}}, ``octomap`` and ``octomap_discretize`` (None without pyoctomap),
        ``ratio`` and ``ratio_discretize`` {label: ours / OctoMap points per second},
        ``load_average`` [[1, 5, 15 min] before, after]
    """
    if len(depths) <= warmup:
        raise ValueError(f'need more than warmup={warmup} depth maps, got {len(depths)}')
    points = [back_project(d, camera, T, max_depth) for d, T in zip(depths, poses)]
    n_points = np.array([len(p) for p in points], np.float64)
    out: Dict[str, Any] = {'frames': len(depths), 'timed_frames': len(depths) - warmup,
                           'warmup_frames': warmup,
                           'points_per_frame': float(np.median(n_points)),
                           'voxel_size': grid.voxel_size, 'max_range_m': max_depth,
                           'resolution': f'{camera.width}x{camera.height}', 'device': device,
                           'torch_threads': torch.get_num_threads(),
                           'load_average': [load_average()], 'cpu_cores': cpu_count(),
                           'ours': {}}
    large = _large_grid(grid, PipelineConfig())
    # Intra-op threads of our per-frame work: one on the CPU (EvidenceFusion.integrate).
    fusion_threads = 1 if torch.device(device).type == 'cpu' else None
    todo = list(variants or default_variants())
    ours: Dict[str, List[np.ndarray]] = {v[0]: [] for v in todo}
    octo: List[np.ndarray] = []
    octo_disc: List[np.ndarray] = []
    have_octomap = True
    # Interleaved rounds: on a shared machine, load bursts hit every side alike; per frame the
    # median over rounds is kept.
    for _ in range(max(1, rounds)):
        for label, overrides, which, limit in todo:
            g = large if which == 'large' else grid
            n = len(depths) if limit is None else min(len(depths), warmup + limit)
            ours[label].append(np.asarray(_ours(g, depths[:n], camera, poses[:n], max_depth,
                                                overrides, device))[warmup:])
        if have_octomap:
            try:
                octo.append(np.asarray(_octomap(points, poses, grid.voxel_size,
                                                max_depth))[warmup:])
                octo_disc.append(np.asarray(_octomap(points, poses, grid.voxel_size,
                                                     max_depth, discretize=True))[warmup:])
            except ImportError:
                have_octomap = False
    for label, overrides, which, _ in todo:
        g = large if which == 'large' else grid
        s = np.median(np.stack(ours[label]), axis=0)
        out['ours'][label] = dict(_rate(s, n_points[warmup:warmup + len(s)]),
                                  overrides=overrides, grid_dims=list(g.dims),
                                  grid_voxels=g.num_voxels, timed_frames=len(s),
                                  fusion_threads=fusion_threads)
    out['rounds'] = max(1, rounds)
    for key, series in (('octomap', octo), ('octomap_discretize', octo_disc)):
        out[key] = _rate(np.median(np.stack(series), axis=0), n_points[warmup:]) if series \
            else None
    for key, ratio in (('octomap', 'ratio'), ('octomap_discretize', 'ratio_discretize')):
        if out[key]:
            out[ratio] = {k: v['points_per_s'] / out[key]['points_per_s']
                          for k, v in out['ours'].items()}
    out['load_average'].append(load_average())
    return out


def _rate(seconds: np.ndarray, n_points: np.ndarray) -> Dict[str, float]:
    return {'ms_per_frame': float(np.median(seconds) * 1e3),
            'points_per_s': float(np.sum(n_points) / np.sum(seconds))}


def tum_octomap_benchmark(width: int = 320, frames: Optional[int] = None,
                          device: str = 'cpu', warmup: int = 2,
                          variants: Optional[Sequence[Variant]] = None,
                          rounds: int = 3) -> Dict[str, Any]:
    """Run :func:`compare_with_octomap` on the bundled TUM clip at ``width`` (GT depth, poses).

    :param width: depth map width (nearest-neighbour resize of the 640x480 GT depth)
    :param frames: use the first N frames (None: all 37)
    """
    import cv2

    from l3rocc_core.datasets.tum import load_tum
    from l3rocc_core.pipeline import grid_from_config
    seq = load_tum(max_frames=frames)
    cam = seq.depth_camera.scaled(width)
    depths = [cv2.resize(f.depth_m, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
              for f in seq.frames]
    poses = [f.T_world_depth for f in seq.frames]
    cfg = PipelineConfig.from_yaml(config_file('tum.yaml'))
    grid = grid_from_config(cfg)
    return compare_with_octomap(depths, cam, poses, grid, cfg.depth.max_depth, device, warmup,
                                variants, rounds)
