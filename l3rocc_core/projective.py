"""Projective integration of depth maps: iterate over voxels, not rays (as nvblox does).

The result has the meaning of :func:`l3rocc_core.raycast.cast_depth` (per-voxel ``hits``,
``free`` and ``observed``) at a fraction of the cost, because the work is one projection per voxel
of the camera frustum's bounding box instead of one traversal per pixel:

- ``hits``: every valid depth point is scattered into its voxel with the arithmetic of
  ``cast_depth`` (:func:`~l3rocc_core.raycast.scatter_endpoints`), so the hit counts are the
  same and thin surfaces are kept;
- each voxel centre of the frustum's bounding box (cut at the farthest depth of the map) is
  transformed into the camera, projected to its nearest pixel, and compared with that pixel's
  depth ``D`` along the pixel's ray:

  - ``free`` where ray casting would count the rays through the voxel as free: a ray enters a
    voxel about half a voxel before its centre, so the centre must lie in front of the surface by
    more than ``free_margin_m - voxel_size / 2``. Its count is the number of pixels the voxel
    covers, ``fx * fy * (voxel_size / z)**2``, divided by ``ray_stride**2``: the rays of the
    frame (of every ``ray_stride``-th pixel) that would pass through it;
  - ``observed`` when the centre lies in front of the surface or behind it by at most
    ``band_m`` (half a voxel by default), or when the voxel is hit: the voxels up to and
    including the first surface, the contract's scoring mask;
  - unobserved when behind the surface, off the image, behind the camera, or where the pixel has
    no return (depth 0, NaN or beyond ``max_depth``) unless ``clear_no_return``, which clears up
    to ``max_depth``.

Compared with ray casting every pixel, a voxel that only some of the rays crossing it reach (at
the border of the image, beside a silhouette) is classified by the ray through its centre: the
two agree on about 97 % of the voxels of a scene (see ``tests/core/test_fusion.py``).

Per voxel this is a handful of separable tensor operations: the camera coordinates of the voxel
centres are sums of per-axis vectors (the grid is axis aligned), and the depth test is one gather
from a per-pixel table of (free, observed) thresholds padded with a border that rejects voxels
off the image. Every work buffer is allocated once per grid size and camera. On the CPU the work
is memory-bound: masks are float 0 / 1 arithmetic (boolean tensor operations are several times
slower), each axis is processed to the end while it is in cache, and one intra-op thread does it
all (:class:`one_intra_op_thread`). The results are bit-identical to the earlier implementation
(same float32 operations in the same order).
"""

import math
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.raycast import (_as_tensor, _pixel_coords, Array, check_depth_inputs,
                                 NO_ENDPOINT, pixel_direction, RayCastResult, scatter_endpoints)


class one_intra_op_thread:  # noqa: N801 (a context manager used like a function)
    """Run the enclosed CPU tensor operations of the calling thread on one intra-op thread.

    The per-frame operations of the fusion are small (one pass over ~10**5 elements each):
    splitting each across OpenMP threads costs more than it saves (measured on 2 cores:
    2.6 ms per TUM frame on one thread, 5.5 ms on two; under load, two threads can take ten
    times longer), and a second thread competes with the rest of the pipeline.
    ``torch.set_num_threads`` sets the calling thread's OpenMP thread count (threads that
    already ran torch code keep theirs; one making its first torch call within the scope starts
    with this count) and MKL's; both are restored on exit. No effect on other devices.

    :param device: the device of the enclosed operations
    """

    def __init__(self, device: Union[str, torch.device]):
        """Remember the device; nothing changes before the scope is entered."""
        self._cpu = torch.device(device).type == 'cpu'
        self._before = 1

    def __enter__(self) -> None:
        """Set one intra-op thread (CPU only)."""
        self._before = torch.get_num_threads()
        if self._cpu and self._before != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        """Restore the thread count."""
        if self._cpu and self._before != 1:
            torch.set_num_threads(self._before)


class _PixelBuffers:
    """Per-camera tensors: ray lengths, the padded threshold tables and work buffers."""

    def __init__(self, camera: PinholeCamera, device: torch.device):
        self.camera = camera
        H, W = camera.height, camera.width
        x, y = _pixel_coords(camera, str(device))
        #: normalised pixel-centre coordinates, float64 [W] and [H]
        self.x, self.y = x, y
        #: metres of depth (z) per metre of ray, [H, W]
        self.inv_norm = torch.rsqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0).to(torch.float32)
        #: thresholds on 1 / z, [2, H + 2, W + 2]: free, observed; +inf (never) in the border
        self.table = torch.full((2, H + 2, W + 2), math.inf, dtype=torch.float32, device=device)
        self.table_rows = [self.table[r, 1:-1, 1:-1] for r in range(2)]
        self.depth = torch.empty((H, W), dtype=torch.float32, device=device)
        self.work = torch.empty((H, W), dtype=torch.float32, device=device)
        #: 1.0 where the pixel has a return within the maximum depth, else 0.0
        self.keep = torch.empty((H, W), dtype=torch.float32, device=device)
        #: ray directions, then voxel coordinates of the endpoints, per world axis
        self.dirs = [torch.empty((H, W), dtype=torch.float32, device=device) for _ in range(3)]
        self.index = torch.empty(H * W, dtype=torch.int32, device=device)


class ProjectiveIntegrator:
    """Evidence of depth maps on grids of fixed dimensions, buffers allocated once.

    The grid's origin may change from call to call (camera-anchored grids); its dimensions may
    not. The tensors of a returned :class:`~l3rocc_core.raycast.RayCastResult` are the
    integrator's own buffers: they are valid until the next call.

    :param dims: (X, Y, Z) voxels of every grid given to :meth:`integrate`
    :param device: torch device of the buffers and of the computation
    """

    def __init__(self, dims: Tuple[int, int, int], device: Union[str, torch.device] = 'cpu'):
        """Allocate the per-axis voxel-centre indices and the per-voxel buffers."""
        self.dims = tuple(int(n) for n in dims)
        if len(self.dims) != 3 or min(self.dims) < 1:
            raise ValueError(f'dims must be 3 positive voxel counts, got {dims}')
        self.device = torch.device(device)
        n = self.dims[0] * self.dims[1] * self.dims[2]
        dev = self.device
        #: voxel-centre coordinates along each axis, in voxels (i + 0.5)
        self._axes_np = [np.arange(k, dtype=np.float32) + np.float32(0.5) for k in self.dims]
        self._free = torch.zeros(n, dtype=torch.float32, device=dev)
        self._observed = torch.zeros(n, dtype=torch.bool, device=dev)
        self._hits = torch.zeros(n, dtype=torch.float32, device=dev)
        # Work buffers of the frustum box (at most the whole grid).
        self._proj = torch.empty((3, n), dtype=torch.float32, device=dev)
        self._thresholds = torch.empty(2 * n, dtype=torch.float32, device=dev)
        self._pix = torch.empty(n, dtype=torch.int32, device=dev)
        self._pixels: Optional[_PixelBuffers] = None

    def _pixel_buffers(self, camera: PinholeCamera) -> _PixelBuffers:
        if self._pixels is None or self._pixels.camera != camera:
            self._pixels = _PixelBuffers(camera, self.device)
        return self._pixels

    def integrate(self, grid: VoxelGrid, depth: Array, camera: PinholeCamera,
                  T_world_cam: Array, max_depth: float, ray_stride: float = 1.0,
                  free_margin_m: Optional[float] = None, band_m: Optional[float] = None,
                  clear_no_return: bool = False,
                  hit_weights: Optional[Array] = None,
                  evidence_weights: Optional[Array] = None) -> RayCastResult:
        """Hit counts, free counts and the observed mask of one depth map.

        On the CPU the work runs on one intra-op thread (:class:`one_intra_op_thread`).

        :param grid: the voxel grid (world frame = the frame of ``T_world_cam``), of
            :attr:`dims`
        :param depth: float [H, W] metres along the optical axis (z), 0 or NaN = no return;
            numpy or torch. Its size must match ``camera``.
        :param camera: undistorted pinhole model of ``depth``
        :param T_world_cam: float [4, 4] camera (optical frame) to world
        :param max_depth: metres; endpoints farther than this are not hits
        :param ray_stride: free counts are the rays of every ``ray_stride``-th pixel in x and y
            that cross the voxel: ``fx * fy * (voxel_size / (z * ray_stride))**2`` (fractional
            where a voxel covers less than one such pixel); the classification always uses
            the depth of the pixel the voxel projects to
        :param free_margin_m: as in :func:`~l3rocc_core.raycast.cast_depth`: the last metres of
            each ray before its endpoint are not free. A ray enters a voxel about half a voxel
            before its centre, so a voxel is free when its centre is in front of the surface
            by more than ``free_margin_m - voxel_size / 2`` (metres along the pixel's ray);
            default half a voxel
        :param band_m: voxels whose centre is behind the surface by at most this are observed
            (metres along the ray); default half a voxel
        :param clear_no_return: pixels without a return (or beyond ``max_depth``) clear space up
            to ``max_depth``; otherwise the voxels they see stay unobserved
        :param hit_weights: optional float [H, W] (e.g. depth confidence) summed per hit voxel
        :param evidence_weights: optional float [H, W] summed per hit voxel into
            ``hit_evidence`` (see :func:`~l3rocc_core.raycast.cast_depth`)
        :return: :class:`~l3rocc_core.raycast.RayCastResult`, flat tensors on the device (the
            integrator's buffers for ``hits``, ``free`` and ``observed``); ``num_rays`` = pixels
            with a return (or every pixel with ``clear_no_return``)
        :raises ValueError: on shapes that do not match
        """
        if tuple(grid.dims) != self.dims:
            raise ValueError(f'grid dims {tuple(grid.dims)} != integrator dims {self.dims}')
        T = check_depth_inputs(depth, camera, T_world_cam, hit_weights, evidence_weights)
        if ray_stride <= 0:
            raise ValueError(f'ray_stride must be > 0, got {ray_stride}')
        with one_intra_op_thread(self.device):
            return self._integrate(grid, depth, camera, T, float(max_depth), float(ray_stride),
                                   free_margin_m, band_m, clear_no_return, hit_weights,
                                   evidence_weights)

    def _integrate(self, grid: VoxelGrid, depth: Array, camera: PinholeCamera, T: np.ndarray,
                   max_depth: float, ray_stride: float, free_margin_m: Optional[float],
                   band_m: Optional[float], clear_no_return: bool,
                   hit_weights: Optional[Array],
                   evidence_weights: Optional[Array]) -> RayCastResult:
        vs = float(grid.voxel_size)
        margin = 0.5 * vs if free_margin_m is None else float(free_margin_m)
        band = 0.5 * vs if band_m is None else float(band_m)
        px = self._pixel_buffers(camera)

        # Depth with the pixels that do not count (no return, NaN, beyond max_depth) at
        # NO_ENDPOINT, far behind the camera. Float arithmetic on 0 / 1 masks (exact: products
        # with 0 and 1, sums with 0) is several times cheaper than boolean masks on the CPU.
        a = torch.nan_to_num(_as_tensor(depth, self.device, torch.float32), nan=-1.0,
                             posinf=-1.0, neginf=-1.0, out=px.depth)
        keep = torch.sign(a, out=px.keep).clamp_(min=0.0)                # 0 < depth
        beyond = torch.sub(a, max_depth, out=px.work).sign_().clamp_(min=0.0)
        keep.addcmul_(keep, beyond, value=-1.0)                           # and <= max_depth
        d = torch.mul(keep, -NO_ENDPOINT, out=px.work).add_(NO_ENDPOINT).addcmul_(keep, a)
        px.depth, px.work = d, px.depth
        num_rays = int(d.numel()) if clear_no_return else int(keep.sum())

        # Per-pixel thresholds on 1 / z (z = voxel-centre depth along the optical axis): free
        # where 1 / z > 1 / (D - margin + vs / 2), observed where 1 / z > 1 / (D + band), D the
        # pixel's depth, margins converted from metres of ray to metres of z. As inverses, centres
        # behind the camera (1 / z < 0) never pass; +inf (never) where the pixel does not count
        # (D - margin <= 0 after the clamp) and in the table's border (off the image).
        table = px.table
        for row, offset in ((0, 0.5 * vs - margin), (1, band)):
            t = torch.add(d, px.inv_norm, alpha=offset, out=px.work)
            if clear_no_return:               # t where kept, else max_depth (exact blend)
                t.mul_(keep).add_(torch.sub(1.0, keep), alpha=max_depth)
            torch.reciprocal(t.clamp_min_(0.0), out=px.table_rows[row])

        o_vox = [(float(T[a, 3]) - float(grid.origin[a])) / vs for a in range(3)]
        R = (T[:3, :3] / vs).tolist()

        def dirs(a: int) -> torch.Tensor:
            # pixel_directions, one axis at a time (used right away, while in cache)
            return pixel_direction(px.x, px.y, R[a], px.dirs[a])

        hits, hit_weight, num_hits, hit_evidence = scatter_endpoints(
            grid, d, dirs, o_vox, hit_weights, (self._hits, px.index), evidence_weights)

        # Nothing beyond the farthest depth (+ band) is observed: a shorter frustum. Every
        # endpoint lies in the frustum (hit voxels are observed), so outside its box every
        # output is zero.
        far = max_depth if clear_no_return else min(max_depth, float(d.max()))
        box = self._frustum_box(grid, camera, T, far + band) if far > 0 else None
        if box is None or any(hi - lo < n for (lo, hi), n in zip(box, self.dims)):
            self._free.zero_()
            self._observed.zero_()
        if box is not None:
            sl = tuple(slice(lo, hi) for lo, hi in box)
            self._classify(grid, camera, T, box, table, ray_stride,
                           self._free.view(self.dims)[sl], self._observed.view(self.dims)[sl],
                           hits.view(self.dims)[sl])
        return RayCastResult(hits, self._free, self._observed, hit_weight, num_rays, num_hits,
                             hit_evidence)

    def _frustum_box(self, grid: VoxelGrid, camera: PinholeCamera, T: np.ndarray,
                     far: float) -> Optional[List[Tuple[int, int]]]:
        """Voxel index ranges [(lo, hi)] x 3 of the frustum's bounding box, or None if empty."""
        W, H = camera.width, camera.height
        # Apex and the four far corners of the image (pixel edges) in camera coordinates; a
        # handful of points: plain floats are cheaper than numpy here.
        xs = ((-0.5 - camera.cx) / camera.fx * far, (W - 0.5 - camera.cx) / camera.fx * far)
        ys = ((-0.5 - camera.cy) / camera.fy * far, (H - 0.5 - camera.cy) / camera.fy * far)
        points = [(0.0, 0.0, 0.0)] + [(x, y, far) for y in ys for x in xs]
        R, t = T[:3, :3].tolist(), T[:3, 3].tolist()
        box = []
        for a in range(3):
            r, o = R[a], (t[a] - float(grid.origin[a]))
            v = [(r[0] * p[0] + r[1] * p[1] + r[2] * p[2] + o) / grid.voxel_size
                 for p in points]
            lo, hi = max(math.floor(min(v)) - 1, 0), min(math.ceil(max(v)) + 1, self.dims[a])
            if hi <= lo:
                return None
            box.append((int(lo), int(hi)))
        return box

    def _classify(self, grid: VoxelGrid, camera: PinholeCamera, T: np.ndarray,
                  box: List[Tuple[int, int]], table: torch.Tensor, ray_stride: float,
                  free_out: torch.Tensor, observed_out: torch.Tensor,
                  hits: torch.Tensor) -> None:
        """Write the free counts and observed flags of the voxels of ``box`` ([x, y, z]).

        :param hits: float32 [x, y, z] hit counts of the box (hit voxels are observed)
        """
        vs = float(grid.voxel_size)
        W, H = camera.width, camera.height
        shape = tuple(hi - lo for lo, hi in box)
        m = shape[0] * shape[1] * shape[2]
        # Homogeneous pixel coordinates (u z, v z, z) of the voxel centres, K R^T (c - t), with
        # u and v shifted by +1.5 so that floor() gives the padded table's column/row directly.
        # The grid is axis aligned: each is a sum of three per-axis vectors (small float32
        # numpy arrays, the same IEEE single operations as torch's).
        K = np.array([[camera.fx, 0.0, camera.cx + 1.5], [0.0, camera.fy, camera.cy + 1.5],
                      [0.0, 0.0, 1.0]])
        M = K @ T[:3, :3].T                        # world offset -> homogeneous pixel
        const = M @ (np.asarray(grid.origin) - T[:3, 3])
        coef = np.concatenate([M * vs, const[:, None]], 1).astype(np.float32)     # [3, 4]
        ax = [self._axes_np[a][lo:hi][None, :] for a, (lo, hi) in enumerate(box)]
        a = ax[0] * coef[:, 0:1] + coef[:, 3:4]    # [3, x]
        ab = a[:, :, None] + (ax[1] * coef[:, 1:2])[:, None, :]                   # [3, x, y]
        c = ax[2] * coef[:, 2:3]                   # [3, z]
        ab = torch.from_numpy(ab).to(self.device)[:, :, :, None]
        c = torch.from_numpy(c).to(self.device)[:, None, None, :]
        z, u, v = (w[:m].view(shape) for w in self._proj)
        # 1 / z, finite everywhere (a centre on the camera plane maps far off the image), then
        # the column and row, one at a time (each pass stays in cache).
        inv_z = torch.add(ab[2], c[2], out=z).reciprocal_().clamp_(-1e6, 1e6)
        col = torch.add(ab[0], c[0], out=u).mul_(inv_z).clamp_(0.0, W + 1.0).floor_()
        row = torch.add(ab[1], c[1], out=v).mul_(inv_z).clamp_(0.0, H + 1.0).floor_()
        pix = self._pix[:m]
        pix.copy_(col.add_(row, alpha=W + 2).view(-1))
        thr = self._thresholds[:2 * m].view(2, m)
        torch.index_select(table.view(2, -1), 1, pix, out=thr)
        # step = 1 where 1 / z > the (free, observed) threshold, else 0: float arithmetic, in
        # place over the gathered thresholds, cheaper than boolean masks.
        step = thr.view((2,) + shape)
        torch.sub(inv_z[None], step, out=step).sign_().clamp_(min=0.0)
        # Observed: in front of the surface (+ band) or hit (both terms >= 0).
        observed_out.copy_(torch.add(step[1], hits, out=u))
        # Rays of the frame through the voxel = (strided) pixels it covers.
        area = float(camera.fx * camera.fy * vs * vs) / float(ray_stride) ** 2
        torch.mul(inv_z.square_().mul_(area), step[0], out=free_out)
