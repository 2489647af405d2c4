"""Occupancy4D, the pipeline's result, and the contract's ``occupancy.npz`` sequence file."""

from dataclasses import dataclass
import os
from typing import List, Mapping, Optional, Tuple

import numpy as np

from l3rocc_core.grid import VoxelGrid


class OccupancyFileError(ValueError):
    """An ``occupancy.npz`` (or a GT file in its format) that cannot be read as one."""

    kind = 'bad_occupancy_file'


@dataclass
class Occupancy4D:
    """Occupancy probabilities over the sliding window.

    :param grid: the voxel grid of every slice (frame ``grid.frame_id``)
    :param stamps_ns: int64 [T] slice stamps, oldest first; the last is the newest frame
    :param prob: float32 [T, X, Y, Z] p(occupied) in [0, 1]
    :param observed: bool [T, X, Y, Z] voxels the camera observed up to each slice (rays up to and
        including the first hit), or None
    :param threshold: p >= threshold counts as occupied
    """

    grid: VoxelGrid
    stamps_ns: np.ndarray
    prob: np.ndarray
    observed: Optional[np.ndarray] = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        """Check shapes on entry."""
        t = len(self.stamps_ns)
        if self.prob.shape != (t,) + tuple(self.grid.dims):
            raise ValueError(f'prob shape {self.prob.shape} != [T={t}, {self.grid.dims}]')
        if self.observed is not None and self.observed.shape != self.prob.shape:
            raise ValueError(f'observed shape {self.observed.shape} != {self.prob.shape}')

    @property
    def num_slices(self) -> int:
        """T."""
        return len(self.stamps_ns)

    @property
    def newest_stamp_ns(self) -> int:
        """Stamp of the newest slice (the frame just pushed)."""
        return int(self.stamps_ns[-1])

    def occupied(self, t: int = -1) -> Tuple[np.ndarray, np.ndarray]:
        """Sparse occupied voxels of slice ``t``.

        :return: (flat indices int64 [n] ascending, probabilities float32 [n])
        """
        flat = self.prob[t].reshape(-1)
        idx = np.flatnonzero(flat >= self.threshold)
        return idx.astype(np.int64), flat[idx].astype(np.float32)

    def sparse_window(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of every slice: (indptr int64 [T+1], indices int64 [nnz], prob float32 [nnz])."""
        rows = [self.occupied(t) for t in range(self.num_slices)]
        return _csr([r[0] for r in rows], [r[1] for r in rows])


@dataclass
class OccupancySequence:
    """The content of an ``occupancy.npz`` (see ../shared/CONTRACT.md)."""

    stamps_ns: np.ndarray
    grid: VoxelGrid
    indptr: np.ndarray
    indices: np.ndarray
    prob: np.ndarray
    visible: Optional[np.ndarray] = None

    def __len__(self) -> int:
        """Return the number of rows (processed frames)."""
        return len(self.stamps_ns)

    def dense(self, n: int) -> np.ndarray:
        """float32 [X, Y, Z] probabilities of row ``n`` (0 where not listed)."""
        out = np.zeros(self.grid.num_voxels, np.float32)
        lo, hi = self.indptr[n], self.indptr[n + 1]
        out[self.indices[lo:hi]] = self.prob[lo:hi]
        return out.reshape(self.grid.dims)

    def occupied_mask(self, n: int) -> np.ndarray:
        """Return bool [X, Y, Z]: the voxels listed in row ``n``."""
        out = np.zeros(self.grid.num_voxels, bool)
        out[self.indices[self.indptr[n]:self.indptr[n + 1]]] = True
        return out.reshape(self.grid.dims)

    def occupied_masks(self) -> np.ndarray:
        """Return bool [N, X, Y, Z]: the voxels listed in every row."""
        return csr_masks(self.indptr, self.indices, self.grid.dims)


class OccupancySequenceWriter:
    """Collects one row per processed frame and writes ``occupancy.npz`` atomically.

    Row n holds the occupied voxels of the newest slice as estimated when frame n was newest.
    """

    def __init__(self, grid: VoxelGrid, threshold: float, keep_visible: bool = True):
        """Start an empty sequence on ``grid``."""
        self.grid = grid
        self.threshold = threshold
        self.keep_visible = keep_visible
        self._stamps: List[int] = []
        self._idx: List[np.ndarray] = []
        self._prob: List[np.ndarray] = []
        self._vis: List[np.ndarray] = []

    def __len__(self) -> int:
        """Rows so far."""
        return len(self._stamps)

    def add(self, stamp_ns: int, prob: np.ndarray, observed: Optional[np.ndarray] = None
            ) -> None:
        """Append a row.

        :param stamp_ns: the frame's stamp
        :param prob: float32 [X, Y, Z] probabilities of the newest slice
        :param observed: bool [X, Y, Z] observed mask of that slice (kept when keep_visible)
        """
        if prob.shape != tuple(self.grid.dims):
            raise ValueError(f'prob shape {prob.shape} != grid {self.grid.dims}')
        flat = prob.reshape(-1)
        idx = np.flatnonzero(flat >= self.threshold)
        self._stamps.append(int(stamp_ns))
        self._idx.append(idx.astype(np.int64))
        self._prob.append(flat[idx].astype(np.float32))
        if self.keep_visible and observed is not None:
            self._vis.append(np.packbits(observed.reshape(-1).astype(bool)))

    def add_occupancy(self, occ: Occupancy4D) -> None:
        """Append the newest slice of a pipeline result."""
        obs = occ.observed[-1] if occ.observed is not None else None
        self.add(occ.newest_stamp_ns, occ.prob[-1], obs)

    def write(self, path: str) -> None:
        """Write the file atomically (a temporary name, then rename)."""
        save_sequence(path, OccupancySequence(
            np.asarray(self._stamps, np.int64), self.grid, *_csr(self._idx, self._prob),
            self._visible()))

    def _visible(self) -> Optional[np.ndarray]:
        if not self.keep_visible or not self._vis or len(self._vis) != len(self._stamps):
            return None
        n = self.grid.num_voxels
        rows = [np.unpackbits(v)[:n] for v in self._vis]
        return np.stack(rows).astype(bool).reshape((len(rows),) + tuple(self.grid.dims))


def _csr(idx: List[np.ndarray], prob: List[np.ndarray]
         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of per-row lists: (indptr int64 [N + 1], indices int64 [nnz], prob float32 [nnz])."""
    indptr = np.zeros(len(idx) + 1, np.int64)
    indptr[1:] = np.cumsum([len(i) for i in idx])
    cat_i = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    cat_p = np.concatenate(prob) if prob else np.zeros(0, np.float32)
    return indptr, cat_i.astype(np.int64, copy=False), cat_p.astype(np.float32, copy=False)


def save_sequence(path: str, seq: OccupancySequence) -> None:
    """Write ``seq`` as a contract ``occupancy.npz``, atomically.

    :param path: destination file; a ``.partial`` sibling is written first and renamed
    """
    g = seq.grid
    arrays = dict(
        stamps=np.asarray(seq.stamps_ns, np.int64), origin=np.asarray(g.origin, np.float64),
        voxel_size=np.float64(g.voxel_size), dims=np.asarray(g.dims, np.int64),
        frame_id=np.str_(g.frame_id), indptr=np.asarray(seq.indptr, np.int64),
        indices=np.asarray(seq.indices, np.int64), prob=np.asarray(seq.prob, np.float32))
    if seq.visible is not None:
        arrays['visible_packed'] = np.packbits(np.asarray(seq.visible, bool).reshape(-1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.partial'
    with open(tmp, 'wb') as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def load_sequence(path: str) -> OccupancySequence:
    """Read a contract ``occupancy.npz`` (never unpickles: ``allow_pickle=False``).

    :raises OccupancyFileError: when keys are missing or inconsistent
    """
    with np.load(path, allow_pickle=False) as z:
        missing = {'stamps', 'origin', 'voxel_size', 'dims', 'frame_id', 'indptr', 'indices',
                   'prob'} - set(z.files)
        if missing:
            raise OccupancyFileError(f'{path}: not an occupancy file, missing {sorted(missing)}')
        dims = tuple(int(v) for v in z['dims'])
        grid = VoxelGrid(tuple(float(v) for v in z['origin']), float(z['voxel_size']), dims,
                         str(z['frame_id']))
        stamps = z['stamps'].astype(np.int64)
        indptr, indices = read_csr(z, 'indptr', 'indices', len(stamps), grid.num_voxels, path)
        prob = z['prob'].astype(np.float32)
        if len(prob) != len(indices):
            raise OccupancyFileError(f'{path}: inconsistent CSR rows (prob has {len(prob)} '
                                     f'values for {len(indices)} indices)')
        visible = None
        if 'visible_packed' in z.files:
            visible = unpack_masks(z['visible_packed'], len(stamps), dims,
                                   f'{path}: visible_packed')
    return OccupancySequence(stamps, grid, indptr, indices, prob, visible)


def read_csr(z: Mapping[str, np.ndarray], indptr_key: str, indices_key: str, rows: int,
             num_voxels: int, path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read and check CSR rows of flat voxel indices from an open npz.

    :param z: the open npz file
    :param indptr_key: key of the row pointers (int64 [rows + 1])
    :param indices_key: key of the flat voxel indices (int64 [nnz])
    :param rows: the number of rows the file must hold
    :param num_voxels: X * Y * Z; every index must lie in [0, num_voxels)
    :param path: the file, for messages
    :return: (indptr int64 [rows + 1], indices int64 [nnz])
    :raises OccupancyFileError: when the rows are inconsistent or an index is off the grid
    """
    indptr = z[indptr_key].astype(np.int64)
    indices = z[indices_key].astype(np.int64)
    if (len(indptr) != rows + 1 or indptr[0] != 0 or indptr[-1] != len(indices)
            or np.any(np.diff(indptr) < 0)):
        raise OccupancyFileError(f'{path}: inconsistent CSR rows {indptr_key}/{indices_key} '
                                 f'({len(indptr)} row pointers for {rows} rows, '
                                 f'{len(indices)} indices)')
    if len(indices) and (indices.min() < 0 or indices.max() >= num_voxels):
        raise OccupancyFileError(f'{path}: {indices_key}: voxel index outside the grid')
    return indptr, indices


def csr_masks(indptr: np.ndarray, indices: np.ndarray, dims: Tuple[int, int, int]
              ) -> np.ndarray:
    """Dense masks of CSR rows.

    :param indptr: int64 [N + 1] row pointers into ``indices``
    :param indices: int64 [nnz] flat voxel indices (C order of ``dims``)
    :param dims: (X, Y, Z)
    :return: bool [N, X, Y, Z], True at the voxels listed in each row
    """
    rows = len(indptr) - 1
    out = np.zeros((rows, int(np.prod(dims))), bool)
    out[np.repeat(np.arange(rows), np.diff(indptr)), indices] = True
    return out.reshape((rows,) + tuple(dims))


def unpack_masks(packed: np.ndarray, rows: int, dims: Tuple[int, int, int], what: str
                 ) -> np.ndarray:
    """Masks stored as ``np.packbits`` of bool [rows, X, Y, Z] (C order), unpacked.

    :param packed: uint8 [ceil(rows * X * Y * Z / 8)]
    :param what: names the array in the error
    :return: bool [rows, X, Y, Z]
    :raises OccupancyFileError: when ``packed`` holds fewer bits than the masks need
    """
    n = rows * int(np.prod(dims))
    bits = np.unpackbits(np.asarray(packed, np.uint8))
    if bits.size < n:
        raise OccupancyFileError(f'{what}: packed masks hold {bits.size} bits, {rows} rows of '
                                 f'{tuple(dims)} need {n}')
    return bits[:n].astype(bool).reshape((rows,) + tuple(dims))
