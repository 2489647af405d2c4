"""Closed triangle meshes and their exact voxelisation, for the independent evaluation set.

Meshes are built here from scratch (no Open3D, nothing of ``l3rocc_core.synth``): boxes with
subdivided faces and surfaces of revolution (cylinders, cones, frustums, capsules, spheres, tori)
from a 2D profile. Every mesh is closed and its triangles wind counter-clockwise seen from outside,
so the cross product of their edges points out of the solid. Vertices carry texture coordinates in
metres along the surface and shading normals.

Voxelisation follows the ground-truth convention of the project's synthetic data: a voxel is
occupied when its centre lies inside a closed mesh, or when the mesh surface passes through it
(surface points nudged 0.1 mm inwards, so a face, edge or corner lying exactly on a voxel
boundary belongs to the voxel on the solid side). Insideness is computed by ray parity along +z
through the voxel-centre columns (scanline solid voxelisation); the surface by a dense
barycentric lattice on every triangle.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from l3rocc_core.grid import VoxelGrid

#: Surface points are moved this far into the solid (metres).
INWARD_M = 1e-4
#: The voxel-centre columns of the parity test are shifted by this much (metres) so that a
#: column never runs exactly through an edge or a vertical face placed on a lattice value.
_COLUMN_JITTER = np.array([1.3e-7, 2.9e-7])


@dataclass
class Mesh:
    """A closed triangle mesh in its own frame.

    :param vertices: float64 [V, 3] metres
    :param triangles: int64 [F, 3] vertex indices, counter-clockwise seen from outside
    :param uv: float64 [V, 2] texture coordinates in metres along the surface
    :param normals: float64 [V, 3] unit shading normals
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    normals: np.ndarray

    def transformed(self, T: np.ndarray) -> 'Mesh':
        """Return the mesh moved by the rigid transform ``T`` (float [4, 4])."""
        return Mesh(apply(T, self.vertices), self.triangles, self.uv, rotate(T, self.normals))


def rotate(T: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v [..., 3] by the rotation part of T (float [3, 3] or [4, 4]).

    einsum, not matmul: a BLAS call per small product spins up threads and is several times
    slower on a busy machine.
    """
    return np.einsum('...k,jk->...j', v, T[:3, :3])


def apply(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Transform points p [..., 3] by T (float [4, 4])."""
    return rotate(T, p) + T[:3, 3]


def concat(meshes: Sequence[Mesh]) -> Mesh:
    """Join meshes into one (still closed when each part is)."""
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
    return Mesh(np.concatenate([m.vertices for m in meshes]),
                np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                np.concatenate([m.uv for m in meshes]),
                np.concatenate([m.normals for m in meshes]))


def translate(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    """float64 [4, 4] translation."""
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def rotation(axis: Sequence[float], angle: float) -> np.ndarray:
    """float64 [4, 4] rotation by ``angle`` radians about ``axis`` (any length > 0)."""
    a = np.asarray(axis, np.float64)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(a / np.linalg.norm(a) * angle).as_matrix()
    return T


# --------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------

def box(sx: float, sy: float, sz: float, tile: float = 1.0) -> Mesh:
    """Axis-aligned box centred on the origin, each face split into cells of at most ``tile``.

    :param sx: size along x (metres), likewise ``sy``, ``sz``
    :param tile: largest cell side (metres); keeps triangles small for the rasteriser
    """
    half = np.array([sx, sy, sz], np.float64) / 2
    faces = []
    for axis in range(3):
        u_ax, v_ax = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            nu = max(1, int(np.ceil(2 * half[u_ax] / tile)))
            nv = max(1, int(np.ceil(2 * half[v_ax] / tile)))
            gu, gv = np.meshgrid(np.linspace(-1, 1, nu + 1), np.linspace(-1, 1, nv + 1),
                                 indexing='ij')
            v = np.zeros((nu + 1, nv + 1, 3))
            v[..., axis] = sign * half[axis]
            v[..., u_ax] = gu * half[u_ax]
            v[..., v_ax] = gv * half[v_ax]
            idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
            a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
            c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
            # (u, v, axis) is right-handed for the cyclic axis order; flip on the other side.
            tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
            outward = np.cross(np.eye(3)[u_ax], np.eye(3)[v_ax])[axis] * sign
            if outward < 0:
                tris = tris[:, ::-1]
            n = np.zeros(3)
            n[axis] = sign
            uv = np.stack([v[..., u_ax], v[..., v_ax]], -1).reshape(-1, 2)
            faces.append(Mesh(v.reshape(-1, 3), tris, uv, np.tile(n, (len(uv), 1))))
    return concat(faces)


def revolve(profile: np.ndarray, profile_normals: np.ndarray, segments: int = 24) -> Mesh:
    """Surface of revolution of a 2D profile about the z axis.

    The profile runs from the bottom to the top (its first and last points on the axis, r = 0,
    for a closed solid; or back to its start for a torus); each of its segments sweeps a band of
    quads, counter-clockwise about +z.

    :param profile: float [K, 2] (r, z) metres
    :param profile_normals: float [K, 2] (n_r, n_z) outward normals at the profile points
    :param segments: angular steps
    """
    r, z = profile[:, 0], profile[:, 1]
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(r), np.diff(z)))])
    theta = np.linspace(0.0, 2 * np.pi, segments + 1)
    ct, st = np.cos(theta)[None, :], np.sin(theta)[None, :]
    k_n, j_n = len(r), segments + 1
    v = np.stack([r[:, None] * ct, r[:, None] * st, np.broadcast_to(z[:, None], (k_n, j_n))], -1)
    n = np.stack([profile_normals[:, :1] * ct, profile_normals[:, :1] * st,
                  np.broadcast_to(profile_normals[:, 1:], (k_n, j_n))], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    # u: arc length around at the profile's widest radius, so the texture scale is uniform.
    uv = np.stack([np.broadcast_to(theta[None, :] * max(r.max(), 1e-3), (k_n, j_n)),
                   np.broadcast_to(s[:, None], (k_n, j_n))], -1)
    idx = np.arange(k_n * j_n).reshape(k_n, j_n)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return Mesh(v.reshape(-1, 3), tris, uv.reshape(-1, 2), n.reshape(-1, 3))


def _disc(radius: float, z: float, up: bool, segments: int) -> Mesh:
    """Flat disc at height z, facing +z (up) or -z, as a revolved radial segment."""
    prof = np.array([[0.0, z], [radius, z]]) if not up else np.array([[radius, z], [0.0, z]])
    nz = 1.0 if up else -1.0
    return revolve(prof, np.array([[0.0, nz], [0.0, nz]]), segments)


def frustum(r_bottom: float, r_top: float, height: float, segments: int = 24) -> Mesh:
    """Make a closed truncated cone on z = 0 (a cone when ``r_top`` is 0, a cylinder if equal).

    :param r_bottom: radius at z = 0 (metres), likewise ``r_top`` at ``height``
    """
    slope = np.array([height, r_bottom - r_top])
    slope /= np.linalg.norm(slope)
    side = revolve(np.array([[r_bottom, 0.0], [r_top, height]]), np.stack([slope, slope]),
                   segments)
    parts = [_disc(r_bottom, 0.0, False, segments), side]
    if r_top > 0:
        parts.append(_disc(r_top, height, True, segments))
    return concat(parts)


def cylinder(radius: float, height: float, segments: int = 24) -> Mesh:
    """Make a closed cylinder standing on z = 0."""
    return frustum(radius, radius, height, segments)


def capsule(radius: float, length: float, segments: int = 16, rings: int = 4) -> Mesh:
    """Capsule along +z from z = 0 to ``length`` (hemispherical ends included).

    :param radius: metres
    :param length: total length, at least ``2 * radius``
    :param rings: profile steps per hemisphere
    """
    length = max(length, 2 * radius)
    phi = np.linspace(-np.pi / 2, 0.0, rings + 1)
    lower = np.stack([np.cos(phi), np.sin(phi)], 1)
    upper = np.stack([np.cos(-phi[::-1]), np.sin(-phi[::-1])], 1)
    normals = np.concatenate([lower, upper])
    prof = normals * radius + np.concatenate([np.tile([0.0, radius], (rings + 1, 1)),
                                              np.tile([0.0, length - radius], (rings + 1, 1))])
    prof[0, 0] = prof[-1, 0] = 0.0
    return revolve(prof, normals, segments)


def sphere(radius: float, segments: int = 20, rings: int = 10) -> Mesh:
    """Sphere centred on the origin."""
    phi = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    normals = np.stack([np.cos(phi), np.sin(phi)], 1)
    prof = normals * radius
    prof[0, 0] = prof[-1, 0] = 0.0
    return revolve(prof, normals, segments)


def torus(major: float, minor: float, segments: int = 28, tube: int = 12) -> Mesh:
    """Torus about the z axis, centred on the origin.

    :param major: distance from the axis to the tube centre (metres)
    :param minor: tube radius, < major
    """
    phi = np.linspace(-np.pi, np.pi, tube + 1)
    normals = np.stack([np.cos(phi), np.sin(phi)], 1)
    prof = normals * minor + [major, 0.0]
    return revolve(prof, normals, segments)


# --------------------------------------------------------------------------------------------
# Lattice enumeration (shared with the rasteriser)
# --------------------------------------------------------------------------------------------

def lattice_in_boxes(lo: np.ndarray, hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every integer lattice point of a set of 2D boxes.

    :param lo: int64 [N, 2] inclusive lower corners
    :param hi: int64 [N, 2] inclusive upper corners (boxes with hi < lo are empty)
    :return: (owner int64 [M] box index of each point, points int64 [M, 2])
    """
    size = np.maximum(hi - lo + 1, 0)
    counts = size[:, 0] * size[:, 1]
    owner = np.repeat(np.arange(len(lo)), counts)
    start = np.cumsum(counts) - counts
    off = np.arange(int(counts.sum())) - np.repeat(start, counts)
    w = size[owner, 0]
    pts = np.stack([lo[owner, 0] + off % np.maximum(w, 1), lo[owner, 1] + off // np.maximum(w, 1)],
                   1)
    return owner, pts


def edge_weights(a: np.ndarray, b: np.ndarray, c: np.ndarray, p: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """2D barycentric coordinates of points in triangles.

    :param a: float [M, 2] first corner of each point's triangle; likewise ``b``, ``c``
    :param p: float [M, 2] the points
    :return: (weights float [M, 3], twice the signed area float [M])
    """
    def edge(s, t):
        return ((t[:, 0] - s[:, 0]) * (p[:, 1] - s[:, 1])
                - (t[:, 1] - s[:, 1]) * (p[:, 0] - s[:, 0]))

    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    safe = np.where(area == 0, 1.0, area)
    w = np.stack([edge(b, c), edge(c, a), edge(a, b)], 1) / safe[:, None]
    return w, area


# --------------------------------------------------------------------------------------------
# Voxelisation
# --------------------------------------------------------------------------------------------

def surface_samples(vertices: np.ndarray, triangles: np.ndarray, spacing: float) -> np.ndarray:
    """Points on every triangle, at most ``spacing`` apart, nudged :data:`INWARD_M` inwards.

    Each point moves that far against the face normal and that far towards the triangle's
    centre, so points on an edge or corner lie strictly inside the solid.

    :param vertices: float [V, 3] metres
    :param triangles: int [F, 3] (outward winding)
    :param spacing: metres
    :return: float64 [N, 3]
    """
    v = vertices[triangles]
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    normal = np.cross(e1, e2)
    norm = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = normal / np.where(norm > 0, norm, 1.0)
    longest = np.linalg.norm(np.stack([e1, e2, v[:, 2] - v[:, 1]], 1), axis=2).max(1)
    steps = np.maximum(np.ceil(longest / spacing), 1).astype(np.int64)
    out = []
    for n in np.unique(steps):
        sel = np.flatnonzero(steps == n)
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
        keep = (i + j) <= n
        a = i[keep] / n
        b = j[keep] / n
        p = (v[sel, 0][:, None] + a[None, :, None] * e1[sel][:, None]
             + b[None, :, None] * e2[sel][:, None])
        # Also towards the triangle's centre: points on an edge stay off the neighbour face.
        to_c = v[sel].mean(1)[:, None] - p
        dist = np.linalg.norm(to_c, axis=-1, keepdims=True)
        p += INWARD_M * (to_c / np.where(dist > 0, dist, 1.0) - normal[sel][:, None])
        out.append(p.reshape(-1, 3))
    return np.concatenate(out) if out else np.zeros((0, 3))


def interior_voxels(vertices: np.ndarray, triangles: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """Flat indices of the voxels whose centre lies inside a closed mesh.

    Each voxel-centre column (fixed x, y) is crossed by the mesh an even number of times; the
    centres above an odd number of crossings are inside.

    :param vertices: float [V, 3] world metres
    :param triangles: int [F, 3]
    :param grid: the voxel grid
    :return: int64 [n] flat indices
    """
    vs = grid.voxel_size
    origin = np.asarray(grid.origin, np.float64)
    dims = np.asarray(grid.dims)
    v = vertices[triangles]                                               # [F, 3, 3]
    # Centre i of axis a is at origin + (i + 0.5) * vs: columns whose centre lies in the
    # triangle's xy bounds.
    lo = np.ceil((v[..., :2].min(1) - origin[:2] - _COLUMN_JITTER) / vs - 0.5).astype(np.int64)
    hi = np.floor((v[..., :2].max(1) - origin[:2] - _COLUMN_JITTER) / vs - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, dims[:2] - 1)
    owner, ij = lattice_in_boxes(lo, hi)
    if not len(owner):
        return np.zeros(0, np.int64)
    p = origin[:2] + (ij + 0.5) * vs + _COLUMN_JITTER
    tv = v[owner]
    w, area = edge_weights(tv[:, 0, :2], tv[:, 1, :2], tv[:, 2, :2], p)
    inside = (area != 0) & np.all(w >= 0, axis=1)
    ij, w, tv = ij[inside], w[inside], tv[inside]
    z = np.einsum('mk,mk->m', w, tv[:, :, 2])
    k = np.clip(np.ceil((z - origin[2]) / vs - 0.5), 0, dims[2]).astype(np.int64)
    # Parity per column: toggle at the first centre above each crossing, then a running sum.
    nz = int(dims[2]) + 1
    flat = (ij[:, 0] * dims[1] + ij[:, 1]) * nz + k
    cols, inv = np.unique(flat // nz, return_inverse=True)
    toggles = np.bincount(inv * nz + flat % nz, minlength=len(cols) * nz).reshape(len(cols), nz)
    inside_col = (np.cumsum(toggles, axis=1) % 2).astype(bool)[:, :-1]
    ci, kk = np.nonzero(inside_col)
    return cols[ci] * int(dims[2]) + kk


def occupied_voxels(vertices: np.ndarray, triangles: np.ndarray, grid: VoxelGrid,
                    samples: np.ndarray) -> np.ndarray:
    """Flat indices of the voxels a posed closed mesh occupies (interior and surface).

    :param vertices: float [V, 3] world metres
    :param triangles: int [F, 3]
    :param grid: the voxel grid
    :param samples: float [N, 3] world surface points (:func:`surface_samples`, posed)
    :return: int64 [n] flat indices (may repeat)
    """
    flat_s, valid = grid.world_to_flat(samples)
    return np.concatenate([interior_voxels(vertices, triangles, grid), flat_s[valid]])


def mesh_list_bounds(meshes: List[Mesh]) -> Tuple[np.ndarray, np.ndarray]:
    """Return (min [3], max [3]) metres over the vertices of ``meshes``."""
    v = np.concatenate([m.vertices for m in meshes])
    return v.min(0), v.max(0)
