"""Triangle meshes of occupancy probability grids, written as PLY or OBJ.

The iso-surface ``p = iso`` is extracted by marching tetrahedra, the marching-cubes variant
that needs no 256-case table: the probabilities are samples at voxel centres (the grid
convention: centre of voxel ``(i, j, k)`` at ``origin + (ijk + 0.5) * voxel_size``); every cube
of 8 neighbouring centres is split into 6 tetrahedra around its main diagonal (the same split in
every cube, so neighbouring faces match), and each tetrahedron whose corners straddle ``iso``
contributes one triangle (1 or 3 corners inside) or two (2 inside), with vertices linearly
interpolated along its edges. Vertices on the same grid edge are shared, so the surface is
watertight; the grid is padded with one layer of ``0`` so surfaces close at its border.
Triangles are oriented counter-clockwise seen from outside (normals point from occupied into free
space). Everything is vectorised over cubes (loops only over the 6 tetrahedra and 2 cases).
"""

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from l3rocc_core.grid import VoxelGrid
from l3rocc_core.refiner.temporal_filter import temporal_median

# Cube corners (offsets in x, y, z) and the 6 tetrahedra around the diagonal 0-6.
_CORNERS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                     [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.int64)
_TETRAS = np.array([[0, 6, 1, 2], [0, 6, 2, 3], [0, 6, 3, 7],
                    [0, 6, 7, 4], [0, 6, 4, 5], [0, 6, 5, 1]], np.int64)
_OTHERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], np.int64)


def _pair_table() -> np.ndarray:
    """For each 4-bit inside mask with two bits set: (in_a, in_b, out_c, out_d), else -1."""
    table = -np.ones((16, 4), np.int64)
    for mask in range(16):
        ins = [v for v in range(4) if mask >> v & 1]
        if len(ins) == 2:
            table[mask] = ins + [v for v in range(4) if not mask >> v & 1]
    return table


_PAIRS = _pair_table()


def marching_tetrahedra(values: np.ndarray, iso: float = 0.5,
                        origin: Sequence[float] = (0.0, 0.0, 0.0), voxel_size: float = 1.0
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """Iso-surface ``values = iso`` of a dense grid sampled at voxel centres.

    :param values: float [X, Y, Z] (e.g. probabilities); ``>= iso`` is inside
    :param iso: iso-level
    :param origin: [3] metres, min corner of voxel (0, 0, 0)
    :param voxel_size: metres
    :return: (vertices float64 [V, 3] metres in the grid's frame, faces int64 [F, 3])
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f'values must be [X, Y, Z], got shape {v.shape}')
    low = 0.0 if iso > 0.0 else iso - 1.0  # strictly outside
    p = np.pad(v, 1, constant_values=low)
    dims = np.array(p.shape, np.int64)
    strides = np.array([dims[1] * dims[2], dims[2], 1], np.int64)
    flat = p.reshape(-1)
    inside = flat >= iso
    # cubes = lower corners (0 .. dims-2); keep those whose corners are not all equal in/out
    cx, cy, cz = np.meshgrid(*(np.arange(d - 1) for d in dims), indexing='ij')
    base = (cx * strides[0] + cy * strides[1] + cz * strides[2]).reshape(-1)
    corner_off = _CORNERS @ strides  # [8]
    corner_idx = base[:, None] + corner_off[None, :]  # [n_cubes, 8]
    n_in = inside[corner_idx].sum(axis=1)
    corner_idx = corner_idx[(n_in > 0) & (n_in < 8)]
    tri_edges: List[np.ndarray] = []  # [n, 3, 2] (inside point, outside point) per vertex
    for tet in _TETRAS:
        idx = corner_idx[:, tet]  # [m, 4] flat point indices
        ins = inside[idx]
        mask = (ins * (1 << np.arange(4))).sum(axis=1)
        count = ins.sum(axis=1)
        # one corner differs (1 or 3 inside): one triangle around the lone corner
        for lone_inside, sel in ((True, count == 1), (False, count == 3)):
            if not sel.any():
                continue
            i_s, ins_s = idx[sel], ins[sel]
            lone = np.argmax(ins_s if lone_inside else ~ins_s, axis=1)
            others = np.take_along_axis(i_s, _OTHERS[lone], axis=1)  # [n, 3]
            lone_pt = i_s[np.arange(len(i_s)), lone][:, None].repeat(3, axis=1)
            e = np.stack([lone_pt, others], axis=-1) if lone_inside else \
                np.stack([others, lone_pt], axis=-1)
            tri_edges.append(e)
        sel = count == 2
        if sel.any():
            i_s = idx[sel]
            order = _PAIRS[mask[sel]]  # [n, 4] local (a, b, c, d)
            a, b, c, d = (np.take_along_axis(i_s, order[:, k:k + 1], axis=1)[:, 0]
                          for k in range(4))
            ac, ad = np.stack([a, c], -1), np.stack([a, d], -1)
            bd, bc = np.stack([b, d], -1), np.stack([b, c], -1)
            tri_edges.append(np.stack([ac, ad, bd], axis=1))
            tri_edges.append(np.stack([ac, bd, bc], axis=1))
    if not tri_edges:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    edges = np.concatenate(tri_edges)  # [F, 3, 2] flat indices (inside, outside)
    keys = edges[..., 0] * flat.size + edges[..., 1]
    uniq, inv = np.unique(keys.reshape(-1), return_inverse=True)
    pin, pout = uniq // flat.size, uniq % flat.size
    va, vb = flat[pin], flat[pout]
    w = ((iso - va) / (vb - va))[:, None]
    xyz_in = np.stack(np.unravel_index(pin, p.shape), axis=1).astype(np.float64)
    xyz_out = np.stack(np.unravel_index(pout, p.shape), axis=1).astype(np.float64)
    pts = xyz_in + w * (xyz_out - xyz_in)  # padded index space
    vertices = np.asarray(origin, np.float64) + (pts - 1.0 + 0.5) * voxel_size
    faces = inv.reshape(-1, 3).astype(np.int64)
    # orientation: the normal must point from the inside point to the outside point
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out_dir = (xyz_out - xyz_in)[inv.reshape(-1, 3)[:, 0]]
    flip = (normal * out_dir).sum(axis=1) < 0
    faces[flip] = faces[flip][:, ::-1]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & \
        (faces[:, 0] != faces[:, 2])
    return vertices, faces[keep]


def write_mesh(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as binary little-endian PLY (``.ply``) or OBJ (``.obj``).

    :param path: output file; the suffix picks the format
    :param vertices: float [V, 3] metres
    :param faces: int [F, 3] vertex indices (0-based)
    :raises ValueError: unknown suffix or bad shapes
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f'vertices [V, 3] and faces [F, 3] expected, got {vertices.shape}, '
                         f'{faces.shape}')
    ext = os.path.splitext(path)[1].lower()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if ext == '.ply':
        header = ('ply\nformat binary_little_endian 1.0\ncomment l3rocc occupancy mesh\n'
                  f'element vertex {len(vertices)}\nproperty float x\nproperty float y\n'
                  f'property float z\nelement face {len(faces)}\n'
                  'property list uchar int vertex_indices\nend_header\n')
        face_rec = np.zeros(len(faces), dtype=[('n', 'u1'), ('v', '<i4', (3,))])
        face_rec['n'] = 3
        face_rec['v'] = faces
        with open(path, 'wb') as fh:
            fh.write(header.encode('ascii'))
            fh.write(vertices.astype('<f4').tobytes())
            fh.write(face_rec.tobytes())
    elif ext == '.obj':
        with open(path, 'w', encoding='ascii') as fh:
            fh.write('# l3rocc occupancy mesh\n')
            np.savetxt(fh, vertices, fmt='v %.5f %.5f %.5f')
            np.savetxt(fh, faces + 1, fmt='f %d %d %d')
    else:
        raise ValueError(f'mesh format from suffix {ext!r}: use .ply or .obj')


def mesh_slice(prob: np.ndarray, grid: VoxelGrid, iso: float = 0.5
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Mesh of one [X, Y, Z] probability slice on ``grid`` (vertices in ``grid.frame_id``)."""
    if tuple(prob.shape) != tuple(grid.dims):
        raise ValueError(f'prob shape {tuple(prob.shape)} != grid {grid.dims}')
    return marching_tetrahedra(prob, iso, grid.origin, grid.voxel_size)


def export_meshes(prob: np.ndarray, grid: VoxelGrid, path: str, iso: float = 0.5,
                  slices: Optional[Sequence[int]] = None, median_kernel: int = 1) -> List[str]:
    """Write one mesh file per slice of a [T, X, Y, Z] probability sequence.

    :param prob: float [T, X, Y, Z] (e.g. an ``Occupancy4D.prob`` or dense ``occupancy.npz`` rows)
    :param grid: the voxel grid
    :param path: output file (``.ply``/``.obj``); with several slices ``_0007`` (slice index) is
        inserted before the suffix
    :param iso: iso-level (the occupancy threshold)
    :param slices: slice indices to write (default: all)
    :param median_kernel: temporal median over this many slices first (odd; 1 = none)
    :return: the written paths
    """
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 4:
        raise ValueError(f'prob must be [T, X, Y, Z], got {prob.shape}')
    if median_kernel > 1:
        prob = temporal_median(prob, median_kernel)
    chosen = list(range(prob.shape[0])) if slices is None else [int(s) for s in slices]
    stem, ext = os.path.splitext(path)
    out = []
    for t in chosen:
        dest = path if len(chosen) == 1 else f'{stem}_{t % prob.shape[0]:04d}{ext}'
        vertices, faces = mesh_slice(prob[t], grid, iso)
        write_mesh(dest, vertices, faces)
        out.append(dest)
    return out


def export_writer(seq, rows: Sequence[int], path: str, args) -> int:
    """``l3rocc export`` writer (``writer(seq, rows, path, args)``) for mesh formats.

    Rows of an :class:`~l3rocc_core.occupancy.OccupancySequence` are densified, optionally
    median-filtered over time (``args.median``, odd, default 1) and meshed at ``args.threshold``
    (default 0.5); one file per row (see :func:`export_meshes`).

    :return: number of files written
    """
    dense = np.stack([seq.dense(r) for r in range(len(seq))]) if len(seq) else None
    if dense is None:
        raise ValueError('the occupancy file has no rows')
    iso = getattr(args, 'threshold', None)
    kernel = int(getattr(args, 'median', 1) or 1)
    return len(export_meshes(dense, seq.grid, path, 0.5 if iso is None else float(iso),
                             rows, kernel))
