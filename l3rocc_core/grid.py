"""The voxel grid convention, written once.

- Voxel ``(i, j, k)`` spans ``origin + [i, i+1) * voxel_size`` on x (likewise y with j, z with k);
  its centre is ``origin + (ijk + 0.5) * voxel_size``. ``origin`` is the min corner of voxel
  ``(0, 0, 0)`` in the grid's frame (``frame_id``, the world frame).
- Dense arrays are indexed ``[X, Y, Z]`` (C order), so the flat index is ``(i * Y + j) * Z + k``,
  exactly the contract's ``occupancy.npz`` layout.
- A 4D occupancy is ``[T, X, Y, Z]`` with the time axis first, oldest slice first.

Every function takes numpy arrays or torch tensors and returns the same kind.
"""

from dataclasses import dataclass
import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def _xp(a: Array):
    return torch if isinstance(a, torch.Tensor) else np


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned voxel grid in ``frame_id``.

    :param origin: float64[3], metres, min corner of voxel (0, 0, 0)
    :param voxel_size: metres
    :param dims: (X, Y, Z) voxel counts
    :param frame_id: frame of ``origin`` and of every world coordinate
    """

    origin: Tuple[float, float, float]
    voxel_size: float
    dims: Tuple[int, int, int]
    frame_id: str = 'odom'

    @classmethod
    def from_bounds(cls, grid_min: Sequence[float], grid_max: Sequence[float],
                    voxel_size: float, frame_id: str = 'odom') -> 'VoxelGrid':
        """Grid covering ``[grid_min, grid_max)``; the max side is rounded up to whole voxels.

        :param grid_min: [3] metres
        :param grid_max: [3] metres, > grid_min on every axis
        :param voxel_size: metres, > 0
        """
        if voxel_size <= 0:
            raise ValueError(f'voxel_size must be > 0, got {voxel_size}')
        if len(grid_min) != 3 or len(grid_max) != 3:
            raise ValueError('grid_min and grid_max need 3 values each')
        dims = tuple(max(1, math.ceil((hi - lo) / voxel_size - 1e-9))
                     for lo, hi in zip(grid_min, grid_max))
        if any(hi <= lo for lo, hi in zip(grid_min, grid_max)):
            raise ValueError(f'grid_min {list(grid_min)} must be < grid_max {list(grid_max)}')
        return cls(tuple(float(v) for v in grid_min), float(voxel_size), dims, frame_id)

    @property
    def num_voxels(self) -> int:
        """X * Y * Z."""
        return self.dims[0] * self.dims[1] * self.dims[2]

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(X, Y, Z), the shape of a dense slice."""
        return self.dims

    @property
    def grid_max(self) -> np.ndarray:
        """float64[3], metres: max corner of the last voxel."""
        return np.asarray(self.origin) + np.asarray(self.dims) * self.voxel_size

    def shifted(self, offset_voxels: Sequence[int]) -> 'VoxelGrid':
        """Return the same grid moved by whole voxels (used by the camera-anchored grid)."""
        o = np.asarray(self.origin) + np.asarray(offset_voxels, dtype=np.float64) * self.voxel_size
        return VoxelGrid(tuple(float(v) for v in o), self.voxel_size, self.dims, self.frame_id)

    def world_to_ijk(self, p_world: Array) -> Array:
        """Integer voxel coordinates of points (may be out of bounds).

        :param p_world: [..., 3] metres
        :return: int64 [..., 3]
        """
        xp = _xp(p_world)
        origin = self._as(p_world, self.origin)
        ijk = xp.floor((p_world - origin) / self.voxel_size)
        return ijk.long() if xp is torch else ijk.astype(np.int64)

    def in_bounds(self, ijk: Array) -> Array:
        """Return bool [...]: whether integer coordinates ``ijk`` [..., 3] lie inside the grid."""
        d = self.dims
        return ((ijk[..., 0] >= 0) & (ijk[..., 0] < d[0]) & (ijk[..., 1] >= 0)
                & (ijk[..., 1] < d[1]) & (ijk[..., 2] >= 0) & (ijk[..., 2] < d[2]))

    def ijk_to_flat(self, ijk: Array) -> Array:
        """Flat indices ``(i * Y + j) * Z + k`` of in-bounds ``ijk`` [..., 3] (int64 [...])."""
        _, y, z = self.dims
        return (ijk[..., 0] * y + ijk[..., 1]) * z + ijk[..., 2]

    def flat_to_ijk(self, flat: Array) -> Array:
        """Inverse of :meth:`ijk_to_flat`: int64 [...] to int64 [..., 3]."""
        xp = _xp(flat)
        _, y, z = self.dims
        k = flat % z
        j = (flat // z) % y
        i = flat // (y * z)
        return xp.stack([i, j, k], -1)

    def ijk_to_world(self, ijk: Array) -> Array:
        """Voxel centres in metres ([..., 3] float) of integer coordinates ``ijk`` [..., 3]."""
        xp = _xp(ijk)
        f = ijk.double() if xp is torch else ijk.astype(np.float64)
        return self._as(f, self.origin) + (f + 0.5) * self.voxel_size

    def flat_to_world(self, flat: Array) -> Array:
        """Voxel centres in metres ([..., 3]) of flat indices [...]."""
        return self.ijk_to_world(self.flat_to_ijk(flat))

    def world_to_flat(self, p_world: Array) -> Tuple[Array, Array]:
        """Flat indices of points and whether they are inside.

        :param p_world: [..., 3] metres
        :return: (flat int64 [...], valid bool [...]); flat is 0 where not valid
        """
        ijk = self.world_to_ijk(p_world)
        valid = self.in_bounds(ijk)
        flat = self.ijk_to_flat(ijk)
        return flat * valid, valid

    def centres(self, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """All voxel centres as float32 [X, Y, Z, 3] metres (torch, on ``device``)."""
        axes = [torch.arange(n, device=device, dtype=torch.float32) for n in self.dims]
        ii, jj, kk = torch.meshgrid(*axes, indexing='ij')
        ijk = torch.stack([ii, jj, kk], -1)
        origin = torch.tensor(self.origin, dtype=torch.float32, device=device)
        return origin + (ijk + 0.5) * self.voxel_size

    @staticmethod
    def _as(like: Array, values: Sequence[float]) -> Array:
        if isinstance(like, torch.Tensor):
            return torch.as_tensor(values, dtype=like.dtype if like.is_floating_point()
                                   else torch.float64, device=like.device)
        return np.asarray(values, dtype=np.float64)
