"""Vectorised ray casting of depth maps into a voxel grid (torch, device-agnostic).

One depth map becomes three per-voxel quantities on a :class:`~l3rocc_core.grid.VoxelGrid`:

- ``hits``: how many depth endpoints fall inside each voxel (every valid pixel counts);
- ``free``: how many rays pass through each voxel before their endpoint. The endpoint's own voxel
  is excluded, and so is the last ``free_margin_m`` of every ray, so that a surface seen at a
  grazing angle does not carve itself;
- ``observed``: voxels traversed up to and including the first hit (the contract's scoring mask);
  nothing behind a hit is observed.

Rays are clipped to the grid box (slab test) and sampled at most ``step_fraction * voxel_size``
apart; consecutive samples of one ray that fall in the same voxel count once, so ``free`` counts
rays, not samples. Pixels without a return (depth 0, NaN, or beyond ``max_depth``) never hit; they
only clear space up to ``max_depth`` when ``clear_no_return`` is set. Free space and the observed
mask may use every ``ray_stride``-th pixel in each direction (hits always use every pixel).
Everything runs as a handful of tensor operations: no Python loop over pixels or voxels.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid

Array = Union[np.ndarray, torch.Tensor]

_BLOCK_SAMPLES = 1 << 18
_FLOAT_EXACT = 1 << 24


@dataclass
class RayCastResult:
    """Per-voxel evidence of one depth map, flat over the grid (length ``grid.num_voxels``).

    :param hits: float32 [N], depth endpoints per voxel
    :param free: float32 [N], rays passing through per voxel (endpoint voxel and margin excluded)
    :param observed: bool [N], traversed up to and including the first hit
    :param hit_weight: float32 [N], sum of ``hit_weights`` over the endpoints in each voxel, or
        None when no weights were given
    :param num_rays: rays traversed (strided pixels with a return or cleared as no-return)
    :param num_hits: endpoints inside the grid
    :param hit_evidence: float32 [N], sum of ``evidence_weights`` over the endpoints in each
        voxel (how much occupancy evidence they carry), or None when none were given
    """

    hits: torch.Tensor
    free: torch.Tensor
    observed: torch.Tensor
    hit_weight: Optional[torch.Tensor]
    num_rays: int
    num_hits: int
    hit_evidence: Optional[torch.Tensor] = None


@lru_cache(maxsize=16)
def _pixel_coords(camera: PinholeCamera, device: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixel-centre coordinates, cached per camera and device.

    :return: (x float64 [W] = (u - cx) / fx, y float64 [H] = (v - cy) / fy); the ray of pixel
        (u, v) is (x[u], y[v], 1) in the optical frame
    """
    x = (np.arange(camera.width, dtype=np.float64) - camera.cx) / camera.fx
    y = (np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def _as_tensor(a: Array, device: Union[str, torch.device], dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def _clip_to_box(o_vox: torch.Tensor, d_vox: torch.Tensor, dims: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Slab test: ray parameters where rays enter and leave the box ``[0, dims]``.

    :param o_vox: [3] ray origin in voxel units
    :param d_vox: [R, 3] ray direction in voxel units per metre of ray length
    :param dims: [3] float box size in voxels
    :return: (t_enter [R], t_exit [R]) in metres along the ray; empty when t_enter >= t_exit
    """
    tiny = 1e-12
    safe = torch.where(d_vox.abs() < tiny, torch.full_like(d_vox, tiny), d_vox)
    inv = 1.0 / safe
    t_a = (0.0 - o_vox) * inv
    t_b = (dims - o_vox) * inv
    t_lo = torch.minimum(t_a, t_b)
    t_hi = torch.maximum(t_a, t_b)
    # Axis-parallel rays: inside the slab -> unbounded on that axis, outside -> empty.
    par = d_vox.abs() < tiny
    inside = (o_vox >= 0) & (o_vox <= dims)
    big = torch.full_like(t_lo, 1e30)
    t_lo = torch.where(par, torch.where(inside, -big, big), t_lo)
    t_hi = torch.where(par, torch.where(inside, big, -big), t_hi)
    return t_lo.amax(-1), t_hi.amin(-1)


def _chunk_bounds(n_sorted: torch.Tensor, max_samples: int = _BLOCK_SAMPLES
                  ) -> List[Tuple[int, int]]:
    """Cut rays sorted by descending sample count into blocks of about ``max_samples`` samples.

    :param n_sorted: int64 [R] samples per ray, descending
    :return: [(start, stop)] ray ranges; each block is padded to its first (longest) ray
    """
    bounds = []
    counts = n_sorted.cpu().numpy()
    lo, r = 0, len(counts)
    while lo < r and counts[lo] > 0:
        rows = max(1, max_samples // int(counts[lo]))
        hi = min(r, lo + rows)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _traverse_block(grid: VoxelGrid, o_vox: List[float], dir_vox: torch.Tensor,
                    z0: torch.Tensor, dz: torch.Tensor, n: torch.Tensor, width: int,
                    z_free: torch.Tensor, end_flat: torch.Tensor, dtype: torch.dtype
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample a block of rays densely and list the voxels each ray visits, once per ray.

    :param o_vox: 3 floats, ray origin in voxel units
    :param dir_vox: [r, 3] directions in voxel units per unit of z
    :param z0: [r] first sample at ``z0 + 0.5 * dz``
    :param dz: [r] sample spacing in z
    :param n: int64 [r] samples per ray (<= width)
    :param width: samples of the longest ray of the block
    :param z_free: [r] samples at z >= z_free are not free (margin before the endpoint)
    :param end_flat: int64 [r] the endpoint voxel (never free), -1 for none
    :param dtype: float32, or float64 for grids of 2**24 voxels or more
    :return: (visits int64 [r * width], frees int64 [r * width]): the voxel of every first
        sample of a ray in a voxel, and of those that count as free; ``num_voxels`` elsewhere
    """
    steps = torch.arange(width, device=z0.device, dtype=dtype).add_(0.5)
    z = steps[None, :] * dz[:, None].to(dtype) + z0[:, None].to(dtype)     # [r, width]
    flat = None
    for axis in range(3):
        c = z * dir_vox[:, axis:axis + 1].to(dtype)
        c = c.add_(o_vox[axis]).floor_().clamp_(0, grid.dims[axis] - 1)
        flat = c if flat is None else flat.mul_(grid.dims[axis]).add_(c)
    valid = steps[None, :] < n[:, None].to(dtype)
    first = valid
    first[:, 1:] &= flat[:, 1:] != flat[:, :-1]
    is_free = (z < z_free[:, None]) & (flat != end_flat[:, None].to(dtype))
    is_free &= first
    # No compaction: samples that do not count go to a dump bin past the grid.
    dump = float(grid.num_voxels)
    visits = torch.where(first, flat, dump).to(torch.int64).reshape(-1)
    frees = torch.where(is_free, flat, dump).to(torch.int64).reshape(-1)
    return visits, frees


def pixel_directions(camera: PinholeCamera, T_world_cam: np.ndarray, voxel_size: float,
                     device: Union[str, torch.device],
                     out: Optional[Sequence[torch.Tensor]] = None,
                     axes: Sequence[int] = (0, 1, 2)) -> List[torch.Tensor]:
    """Per-pixel ray directions in voxel units per metre of depth (z), one tensor per world axis.

    The voxel coordinate of a pixel's point at depth z is ``o_vox + z * dirs[a][v, u]`` with
    ``o_vox`` the camera centre in voxel units. The pixel grid is separable:
    ``dirs[a][v, u] = (R[a, 0] x[u] + R[a, 1] y[v] + R[a, 2]) / voxel_size`` (float64, then
    rounded to float32).

    :param camera: undistorted pinhole model
    :param T_world_cam: float64 [4, 4] camera to world
    :param voxel_size: metres
    :param device: torch device
    :param out: optional float32 [H, W] tensors to write into (no allocation), one per axis of
        ``axes``
    :param axes: the world axes to compute (default all three)
    :return: float32 tensors [H, W], one per axis of ``axes`` (``out`` when given)
    """
    x, y = _pixel_coords(camera, str(torch.device(device)))
    R = (np.asarray(T_world_cam, np.float64)[:3, :3] / voxel_size).tolist()
    if out is None:
        return [pixel_direction(x, y, R[a]) for a in axes]
    return [pixel_direction(x, y, R[a], o) for a, o in zip(axes, out)]


def pixel_direction(x: torch.Tensor, y: torch.Tensor, R_row: Sequence[float],
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One axis of :func:`pixel_directions`: ``R_row[0] x[u] + R_row[1] y[v] + R_row[2]``.

    :param x: float64 [W] normalised pixel-centre coordinates (``_pixel_coords``)
    :param y: float64 [H]
    :param R_row: 3 floats, a row of the camera-to-world rotation divided by the voxel size
    :param out: optional float32 [H, W] tensor to write into
    :return: float32 [H, W], summed in float64 and rounded once
    """
    if out is None:
        return ((x * R_row[0])[None, :] + (y * R_row[1] + R_row[2])[:, None]).to(torch.float32)
    return torch.add((x * R_row[0])[None, :], (y * R_row[1] + R_row[2])[:, None], out=out)


#: Depth given to pixels that must not count as endpoints (see :func:`scatter_endpoints`).
NO_ENDPOINT = -1e9


def scatter_endpoints(grid: VoxelGrid, depth: torch.Tensor,
                      dirs: Union[Sequence[torch.Tensor], Callable[[int], torch.Tensor]],
                      o_vox: Sequence[float], hit_weights: Optional[Array] = None,
                      out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                      evidence_weights: Optional[Array] = None
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor], int,
                                 Optional[torch.Tensor]]:
    """Count the depth endpoints per voxel.

    :param grid: the voxel grid
    :param depth: float32 [H, W] metres (z); pixels that do not count (no return, beyond the
        maximum depth) hold :data:`NO_ENDPOINT`, far behind the camera
    :param dirs: :func:`pixel_directions` of the camera and pose (3 [H, W] tensors), or a
        function of the axis returning that axis' directions in a work buffer of its own, which
        is then overwritten (each axis computed when needed, while in cache)
    :param o_vox: 3 floats, the camera centre in voxel units
    :param hit_weights: optional float [H, W] summed per hit voxel
    :param out: optional buffers (float32 [N] hit counts, returned; int32 [H * W] voxel
        indices) to work in instead of allocating
    :param evidence_weights: optional float [H, W] summed per hit voxel, like ``hit_weights``
    :return: (hits float32 [N], hit_weight float32 [N] or None, endpoints inside the grid,
        hit_evidence float32 [N] or None)
    """
    X, Y, Z = grid.dims
    device = depth.device
    # Bins of the grid padded by one voxel on every side: coordinates off the grid are clamped
    # into the padding (no masks), and so are the pixels at NO_ENDPOINT (on at least one axis).
    # Flat indices are computed in floating point: float32 is exact below 2**24.
    padded = (X + 2, Y + 2, Z + 2)
    n_pad = padded[0] * padded[1] * padded[2]
    fdt = torch.float32 if n_pad < _FLOAT_EXACT else torch.float64
    # Voxel coordinates floor(o + z * dir) clamped to [-1, dims] (-1 and dims: the padding);
    # flat index in the padded grid = ((x + 1) * (Y + 2) + y + 1) * (Z + 2) + z + 1, all exact
    # integers. One axis at a time: each pass stays in cache.
    step = (padded[1] * padded[2], padded[2], 1)
    flat = None
    for a in (2, 1, 0):
        if callable(dirs):
            c = dirs(a).mul_(depth)
        else:
            c = dirs[a] * depth
        c = c.add_(o_vox[a]).floor_().clamp_(-1.0, padded[a] - 2.0)
        if flat is None:
            flat = c if c.dtype == fdt else c.to(fdt)
        else:
            flat.add_(c, alpha=step[a])
    flat.add_(padded[1] * padded[2] + padded[2] + 1)
    idt = torch.int32 if n_pad < 2 ** 31 else torch.int64
    if out is not None and idt == torch.int32:
        idx = out[1].copy_(flat.view(-1))
    else:
        idx = flat.reshape(-1).to(idt)
    interior = (slice(1, -1),) * 3
    counts = torch.bincount(idx, minlength=n_pad).view(padded)[interior]
    if out is None:
        hits = counts.reshape(-1).to(torch.float32)
    else:
        hits = out[0]
        hits.view(grid.dims).copy_(counts)
    num_hits = int(hits.sum())

    def weight_sums(weights: Optional[Array]) -> Optional[torch.Tensor]:
        if weights is None:
            return None
        w = _as_tensor(weights, device, torch.float32).reshape(-1)
        sums = torch.bincount(idx, weights=w, minlength=n_pad).view(padded)[interior]
        return sums.reshape(-1).to(torch.float32)

    return hits, weight_sums(hit_weights), num_hits, weight_sums(evidence_weights)


def check_depth_inputs(depth: Array, camera: PinholeCamera, T_world_cam: Array,
                       hit_weights: Optional[Array] = None,
                       evidence_weights: Optional[Array] = None) -> np.ndarray:
    """Check a depth map, its camera, pose and weights on entry (shared by both integrators).

    :return: ``T_world_cam`` as float64 numpy [4, 4]
    :raises ValueError: on sizes that do not match or a non-finite pose
    """
    if tuple(depth.shape) != (camera.height, camera.width):
        raise ValueError(f'depth shape {tuple(depth.shape)} does not match camera '
                         f'{camera.width}x{camera.height} (expected [H, W])')
    for name, weights in (('hit_weights', hit_weights), ('evidence_weights', evidence_weights)):
        if weights is not None and tuple(weights.shape) != tuple(depth.shape):
            raise ValueError(f'{name} shape {tuple(weights.shape)} != depth shape '
                             f'{tuple(depth.shape)}')
    T = np.asarray(T_world_cam.detach().cpu() if isinstance(T_world_cam, torch.Tensor)
                   else T_world_cam, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f'T_world_cam must be a finite [4, 4] matrix, got shape {T.shape}')
    return T


def cast_depth(grid: VoxelGrid, depth: Array, camera: PinholeCamera, T_world_cam: Array,
               max_depth: float, ray_stride: int = 1, step_fraction: float = 0.5,
               free_margin_m: Optional[float] = None, clear_no_return: bool = False,
               hit_weights: Optional[Array] = None,
               device: Union[str, torch.device, None] = None,
               evidence_weights: Optional[Array] = None) -> RayCastResult:
    """Ray cast one depth map into ``grid``: hit counts, free counts and the observed mask.

    :param grid: the voxel grid (world frame = the frame of ``T_world_cam``)
    :param depth: float [H, W] metres along the optical axis (z), 0 or NaN = no return; numpy or
        torch. Its size must match ``camera``.
    :param camera: undistorted pinhole model of ``depth``
    :param T_world_cam: float [4, 4] camera (optical frame) to world
    :param max_depth: metres; endpoints farther than this are not hits
    :param ray_stride: traverse every ``ray_stride``-th pixel in x and y for free space and the
        observed mask (hits always use every pixel)
    :param step_fraction: sample spacing along rays as a fraction of the voxel size (<= 0.5 keeps
        every voxel a ray crosses by more than a corner)
    :param free_margin_m: the last metres of each ray before its endpoint are not counted free
        (they are still observed); default half a voxel
    :param clear_no_return: pixels without a return (or beyond ``max_depth``) clear space up to
        ``max_depth``; otherwise they contribute nothing
    :param hit_weights: optional float [H, W] (e.g. depth confidence) summed per hit voxel
    :param device: torch device; default that of ``depth`` when it is a tensor, else CPU
    :param evidence_weights: optional float [H, W] (e.g. how much occupancy evidence each
        sample carries) summed per hit voxel into ``hit_evidence``
    :return: :class:`RayCastResult`, flat tensors on ``device``
    :raises ValueError: on shapes that do not match
    """
    if device is None:
        device = depth.device if isinstance(depth, torch.Tensor) else 'cpu'
    device = torch.device(device)
    T = check_depth_inputs(depth, camera, T_world_cam, hit_weights, evidence_weights)
    if ray_stride < 1:
        raise ValueError(f'ray_stride must be >= 1, got {ray_stride}')
    if not 0.0 < step_fraction <= 1.0:
        raise ValueError(f'step_fraction must be in (0, 1], got {step_fraction}')
    vs = float(grid.voxel_size)
    margin = 0.5 * vs if free_margin_m is None else float(free_margin_m)
    n_vox = grid.num_voxels
    dims = grid.dims
    dims_i = torch.tensor(dims, device=device)
    dims_f = dims_i.to(torch.float32)
    # Flat indices are computed in floating point: float32 is exact below 2**24 voxels.
    fdt = torch.float32 if n_vox < _FLOAT_EXACT else torch.float64

    d = _as_tensor(depth, device, torch.float32)
    d = torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
    has_return = (d > 0) & (d <= max_depth)
    o_list = ((T[:3, 3] - np.asarray(grid.origin)) / vs).tolist()   # camera centre, voxels
    o_vox = torch.tensor(o_list, dtype=torch.float32, device=device)
    # Ray directions per axis in voxel units per metre of depth z (p_vox = o + z * dir). The
    # pixel grid is separable: dir_a[v, u] = (R[a, 0] x[u] + R[a, 1] y[v] + R[a, 2]) / vs.
    dirs = pixel_directions(camera, T, vs, device)                 # 3 x [H, W]

    # Hits: every pixel with a return.
    hits, hit_weight, num_hits, hit_evidence = scatter_endpoints(
        grid, torch.where(has_return, d, NO_ENDPOINT), dirs, o_list, hit_weights,
        evidence_weights=evidence_weights)

    # Traversal: strided pixels, parameterised by z (depth along the optical axis).
    s = int(ray_stride)
    d_s = d[::s, ::s].reshape(-1)
    ret_s = has_return[::s, ::s].reshape(-1)
    dir_s = torch.stack([dd[::s, ::s].reshape(-1) for dd in dirs], -1)     # [R, 3]
    if not clear_no_return:
        keep = torch.nonzero(ret_s).squeeze(1)
        d_s, dir_s, ret_s = d_s[keep], dir_s[keep], ret_s[keep]
    # Metres of ray per unit of z, to convert the margin and step (given in metres) to z.
    norm = torch.linalg.vector_norm(dir_s, dim=-1) * vs            # = |ray| for z = 1
    z_end = torch.where(ret_s, d_s, torch.full_like(d_s, float(max_depth)))
    z_in, z_out = _clip_to_box(o_vox, dir_s, dims_f)
    z0 = z_in.clamp_min(0.0)
    z1 = torch.minimum(z_out, z_end)
    step_z = step_fraction * vs / norm
    n = torch.ceil((z1 - z0) / step_z).clamp_min(0).to(torch.int64)
    n = torch.where(z1 > z0, n, torch.zeros_like(n))
    observed = hits > 0
    free = torch.zeros(n_vox, dtype=torch.float32, device=device)
    num_rays = int(d_s.numel())
    if num_rays:
        # The endpoint voxel of each ray (-1 for no-return rays or endpoints off the grid).
        p_end = torch.floor(o_vox + z_end[:, None] * dir_s).to(torch.int64)
        end_in = ((p_end >= 0) & (p_end < dims_i)).all(-1) & ret_s
        end_flat = (p_end[:, 0] * grid.dims[1] + p_end[:, 1]) * grid.dims[2] + p_end[:, 2]
        end_flat = torch.where(end_in, end_flat, torch.full_like(end_flat, -1))
        z_free = torch.where(ret_s, z_end - margin / norm, z_end)
        dz = (z1 - z0) / n.clamp_min(1)
        # Rays sorted by sample count and cut into chunks, each padded to its own longest ray:
        # dense [rays, samples] blocks need no per-sample gathers and waste little padding.
        order = torch.argsort(n, descending=True)
        for lo, hi in _chunk_bounds(n[order]):
            sel = order[lo:hi]
            width = int(n[sel[0]])
            if width == 0:
                break
            visits, frees = _traverse_block(grid, o_list, dir_s[sel], z0[sel], dz[sel], n[sel],
                                            width, z_free[sel], end_flat[sel], fdt)
            observed |= torch.bincount(visits, minlength=n_vox + 1)[:n_vox] > 0
            free += torch.bincount(frees, minlength=n_vox + 1)[:n_vox]
    return RayCastResult(hits, free, observed, hit_weight, num_rays, num_hits, hit_evidence)


def observed_and_hits(grid: VoxelGrid, depth: Array, camera: PinholeCamera, T_world_cam: Array,
                      max_depth: float, ray_stride: int = 1, step_fraction: float = 0.5,
                      clear_no_return: bool = False,
                      device: Union[str, torch.device, None] = None) -> Tuple[Array, Array]:
    """Observed mask and hit mask of one depth map, as dense grids (for ground truth).

    :param grid: the voxel grid
    :param depth: float [H, W] metres (z), 0 = no return; numpy or torch
    :param camera: undistorted pinhole model of ``depth``
    :param T_world_cam: float [4, 4] camera to world
    :param max_depth: metres; farther endpoints are not hits
    :param ray_stride: pixel stride of the traversal (see :func:`cast_depth`)
    :param step_fraction: sample spacing as a fraction of the voxel size
    :param clear_no_return: see :func:`cast_depth`
    :param device: torch device for the computation
    :return: (observed bool [X, Y, Z], hit bool [X, Y, Z]); numpy arrays when ``depth`` is numpy,
        tensors otherwise. Hit voxels are always observed.
    """
    res = cast_depth(grid, depth, camera, T_world_cam, max_depth, ray_stride=ray_stride,
                     step_fraction=step_fraction, clear_no_return=clear_no_return, device=device)
    obs = res.observed.reshape(grid.dims)
    hit = (res.hits > 0).reshape(grid.dims)
    if isinstance(depth, torch.Tensor):
        return obs, hit
    return obs.cpu().numpy(), hit.cpu().numpy()
