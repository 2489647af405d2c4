"""``l3rocc export``: occupancy rows as PLY points, CSV, or a re-written contract npz.

- ``ply``: binary little-endian PLY point cloud of voxel centres with float32 ``x y z t
  probability`` and uchar ``red green blue`` (height colours); ``t`` = row stamp minus the newest
  exported row's stamp in seconds (0 for the newest, negative for older), as in ``~/points``.
- ``csv``: one line per voxel: row, stamp_ns, t, x, y, z, i, j, k, probability.
- ``npz``: the contract ``occupancy.npz`` with the chosen rows, optionally re-thresholded.
- ``lerobot``: a LeRobot v2.1 dataset folder (``--out DIR``), the rows as one episode with the
  video of ``--source`` and each row's camera from the replay's ``cameras.npz``
  (:mod:`l3rocc_core.lerobot`); all rows unless ``--slice`` says otherwise.
- ``rerun``: a Rerun recording (``--out FILE.rrd``, or ``--rerun FILE.rrd`` beside another
  output): every row's occupied voxels, and where known its camera (``cameras.npz``), picture
  (``--source``) and depth (``depth.npz`` of ``replay --save-depth``)
  (:mod:`l3rocc_core.viewers.rerun_log`); all rows unless ``--slice`` says otherwise.

Writers are looked up in :data:`WRITERS` by format name; further formats (e.g. ``mesh-ply``,
marching cubes by the refiner's ``mesh`` module) register a function with the same signature
``writer(seq, rows, path, args)``.
"""

import argparse
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from l3rocc_core import cli

HELP = 'export occupancy (npz, PLY points, CSV, meshes, LeRobot datasets, Rerun recordings)'

PLY_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ('x', '<f4', 'float'), ('y', '<f4', 'float'), ('z', '<f4', 'float'), ('t', '<f4', 'float'),
    ('probability', '<f4', 'float'), ('red', 'u1', 'uchar'), ('green', 'u1', 'uchar'),
    ('blue', 'u1', 'uchar'))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc export`` arguments."""
    parser.add_argument('occupancy', metavar='OCC.npz', help='occupancy.npz to export')
    parser.add_argument('--out', metavar='FILE',
                        help='output file (lerobot: the dataset folder); required unless '
                        '--rerun is given')
    parser.add_argument('--rerun', metavar='FILE.rrd',
                        help='(also) write a Rerun recording of the rows (open with: rerun '
                        'FILE.rrd), with the pictures of --source when given')
    parser.add_argument('--format', choices=sorted(WRITERS), default=None,
                        help='output format (default: from the file suffix, else ply)')
    parser.add_argument('--slice', default=None, metavar='N|A:B|all|last',
                        help='rows to export: an index (negative from the end), a range A:B, '
                        'all, or last (default; all for lerobot, mesh-sequence and rerun)')
    parser.add_argument('--threshold', type=float, default=None,
                        help='keep voxels with probability >= this (only raises the threshold '
                        'of the file: rows hold just the voxels that were occupied)')
    parser.add_argument('--median', type=int, default=None, metavar='K',
                        help='mesh formats: temporal median over K slices first (odd; default 1, '
                        f'{MESH_SEQUENCE_MEDIAN} for mesh-sequence)')
    lr = parser.add_argument_group('lerobot and rerun')
    lr.add_argument('--source', metavar='BAG|VIDEO|DIR',
                    help='the recording the occupancy was made from (the episode video; '
                    'rerun: the pictures, optional)')
    lr.add_argument('--depth', metavar='depth.npz',
                    help="rerun: the replay's --save-depth file (default: next to OCC.npz)")
    lr.add_argument('--cameras', metavar='cameras.npz',
                    help="the replay's per-row cameras (default: next to OCC.npz)")
    lr.add_argument('--intrinsics', metavar='SPEC', help='camera of a video/image --source')
    lr.add_argument('--source-fps', type=float, metavar='FPS',
                    help="replay's --fps for a video/image --source without stamps")
    lr.add_argument('--image-topic', help='bag image topic of --source (default: auto)')
    lr.add_argument('--camera', default='rgb',
                    help='camera name: video key observation.images.NAME (default: %(default)s)')
    lr.add_argument('--task', default=None, help='task text of the episode')
    lr.add_argument('--dataset-fps', type=int, metavar='FPS',
                    help='frame rate of the dataset (default: from the stamps)')
    lr.add_argument('--append', action='store_true',
                    help='add an episode to the dataset already in --out')


def parse_rows(spec: str, n: int) -> List[int]:
    """Row indices selected by ``--slice``.

    :param spec: 'all', 'last', an integer (negative counts from the end), or 'A:B' (Python
        slice bounds, either may be empty)
    :param n: number of rows in the file
    :raises ValueError: when the selection is malformed or empty
    """
    s = str(spec).strip().lower()
    if n == 0:
        raise ValueError('the occupancy file has no rows')
    if s == 'all':
        return list(range(n))
    if s == 'last':
        return [n - 1]
    try:
        if ':' in s:
            a, b = s.split(':', 1)
            rows = list(range(n))[slice(int(a) if a else None, int(b) if b else None)]
        else:
            i = int(s)
            if not -n <= i < n:
                raise ValueError(f'row {i} is outside 0..{n - 1}')
            rows = [i % n]
    except ValueError as exc:
        raise ValueError(f'--slice {spec!r}: {exc}') from exc
    if not rows:
        raise ValueError(f'--slice {spec!r} selects no row of {n}')
    return rows


def voxel_table(seq, rows: Sequence[int], threshold: float = 0.0) -> Dict[str, np.ndarray]:
    """Occupied voxels of ``rows`` as flat columns.

    :param seq: an :class:`~l3rocc_core.occupancy.OccupancySequence`
    :param rows: row indices
    :param threshold: drop voxels with probability below this
    :return: dict of equal-length arrays: row int64, stamp_ns int64, t float32 (s, relative to
        the newest selected row), flat int64, ijk int64 [n, 3], xyz float64 [n, 3], prob float32
    """
    rows = list(rows)
    lens = [int(seq.indptr[r + 1] - seq.indptr[r]) for r in rows]
    flat = np.concatenate([seq.indices[seq.indptr[r]:seq.indptr[r + 1]] for r in rows])
    prob = np.concatenate([seq.prob[seq.indptr[r]:seq.indptr[r + 1]] for r in rows])
    row = np.repeat(np.asarray(rows, np.int64), lens)
    stamp = np.asarray(seq.stamps_ns, np.int64)[row]
    newest = int(max(seq.stamps_ns[r] for r in rows))
    keep = prob >= threshold
    row, stamp, flat, prob = row[keep], stamp[keep], flat[keep], prob[keep]
    ijk = seq.grid.flat_to_ijk(flat)
    return {'row': row, 'stamp_ns': stamp, 't': ((stamp - newest) / 1e9).astype(np.float32),
            'flat': flat, 'ijk': ijk, 'xyz': seq.grid.ijk_to_world(ijk),
            'prob': prob.astype(np.float32)}


def write_ply(path: str, xyz: np.ndarray, t: np.ndarray, prob: np.ndarray,
              rgb: np.ndarray) -> None:
    """Write a binary little-endian PLY point cloud (fields of :data:`PLY_FIELDS`).

    :param xyz: float [n, 3] metres
    :param t: float [n] seconds
    :param prob: float [n] in [0, 1]
    :param rgb: uint8 [n, 3]
    """
    n = len(xyz)
    if xyz.shape != (n, 3) or t.shape != (n,) or prob.shape != (n,) or rgb.shape != (n, 3):
        raise ValueError(f'PLY columns differ in length: xyz {xyz.shape}, t {t.shape}, '
                         f'prob {prob.shape}, rgb {rgb.shape}')
    data = np.empty(n, dtype=[(name, dt) for name, dt, _ in PLY_FIELDS])
    data['x'], data['y'], data['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    data['t'], data['probability'] = t, prob
    data['red'], data['green'], data['blue'] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ['ply', 'format binary_little_endian 1.0', 'comment l3rocc occupied voxel centres',
              f'element vertex {n}']
    header += [f'property {ply} {name}' for name, _, ply in PLY_FIELDS]
    header.append('end_header')
    with open(path, 'wb') as f:
        f.write(('\n'.join(header) + '\n').encode('ascii'))
        f.write(data.tobytes())


_PLY_TYPES = {'float': '<f4', 'float32': '<f4', 'double': '<f8', 'float64': '<f8',
              'uchar': 'u1', 'uint8': 'u1', 'char': 'i1', 'int8': 'i1', 'ushort': '<u2',
              'uint16': '<u2', 'short': '<i2', 'int16': '<i2', 'uint': '<u4', 'uint32': '<u4',
              'int': '<i4', 'int32': '<i4'}


def read_ply(path: str) -> np.ndarray:
    """Read the vertices of a binary little-endian PLY (no lists) as a structured array."""
    with open(path, 'rb') as f:
        if f.readline().strip() != b'ply':
            raise ValueError(f'{path}: not a PLY file')
        fields: List[Tuple[str, str]] = []
        count, in_vertex, fmt = 0, False, None
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f'{path}: PLY header has no end_header')
            parts = line.decode('ascii').split()
            if not parts:
                continue
            if parts[0] == 'end_header':
                break
            if parts[0] == 'format':
                fmt = parts[1]
            elif parts[0] == 'element':
                in_vertex = parts[1] == 'vertex'
                if in_vertex:
                    count = int(parts[2])
            elif parts[0] == 'property' and in_vertex:
                if parts[1] == 'list' or parts[1] not in _PLY_TYPES:
                    raise ValueError(f'{path}: unsupported PLY property {" ".join(parts)}')
                fields.append((parts[2], _PLY_TYPES[parts[1]]))
        if fmt != 'binary_little_endian':
            raise ValueError(f'{path}: only binary_little_endian PLY is read, got {fmt}')
        return np.fromfile(f, dtype=fields, count=count)


def height_colours(z: np.ndarray, cmap: str = 'turbo') -> np.ndarray:
    """uint8 [n, 3] RGB of heights ``z`` (metres) over their 2..98 % range."""
    from l3rocc_core.preview import colormap_lut
    if len(z) == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = np.percentile(z, 2), np.percentile(z, 98)
    idx = np.clip((z - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.int64)
    return colormap_lut(cmap)[idx]


def _write_ply(seq, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    tab = voxel_table(seq, rows, args.threshold or 0.0)
    write_ply(path, tab['xyz'], tab['t'], tab['prob'], height_colours(tab['xyz'][:, 2]))
    return len(tab['prob'])


def _write_csv(seq, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    tab = voxel_table(seq, rows, args.threshold or 0.0)
    with open(path, 'w', encoding='utf-8') as f:
        f.write('row,stamp_ns,t,x,y,z,i,j,k,probability\n')
        if len(tab['prob']):
            cols = [np.char.mod('%d', tab['row']), np.char.mod('%d', tab['stamp_ns']),
                    np.char.mod('%.6f', tab['t'])]
            cols += [np.char.mod('%.4f', tab['xyz'][:, c]) for c in range(3)]
            cols += [np.char.mod('%d', tab['ijk'][:, c]) for c in range(3)]
            cols.append(np.char.mod('%.4f', tab['prob']))
            line = cols[0]
            for c in cols[1:]:
                line = np.char.add(np.char.add(line, ','), c)
            f.write('\n'.join(line.tolist()) + '\n')
    return len(tab['prob'])


def _write_npz(seq, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    from l3rocc_core.occupancy import OccupancySequence, save_sequence
    thr = args.threshold or 0.0
    idx, prob = [], []
    for r in rows:
        lo, hi = seq.indptr[r], seq.indptr[r + 1]
        keep = seq.prob[lo:hi] >= thr
        idx.append(seq.indices[lo:hi][keep])
        prob.append(seq.prob[lo:hi][keep])
    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(i) for i in idx])
    visible = None if seq.visible is None else seq.visible[list(rows)]
    save_sequence(path, OccupancySequence(
        np.asarray(seq.stamps_ns, np.int64)[list(rows)], seq.grid, indptr,
        np.concatenate(idx).astype(np.int64), np.concatenate(prob).astype(np.float32),
        visible))
    return int(indptr[-1])


def _write_mesh(seq: Any, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    """Mesh each row (marching tetrahedra on the probabilities); PLY or OBJ by the suffix."""
    from l3rocc_core.refiner.mesh import export_writer
    return export_writer(seq, rows, path, args)


def _write_mesh_sequence(seq: Any, rows: Sequence[int], path: str,
                         args: argparse.Namespace) -> int:
    """One PLY mesh per row (``PATH_0000.ply`` ...), median-filtered over ``--median`` rows.

    The method's temporal median (default over 3 slices) removes one-frame blips before
    meshing; ``path`` without a suffix gets ``.ply``.
    """
    if getattr(args, 'median', None) is None:
        args.median = MESH_SEQUENCE_MEDIAN
    if not os.path.splitext(path)[1]:
        path += '.ply'
    return _write_mesh(seq, rows, path, args)


def _write_lerobot(seq: Any, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    """One LeRobot v2.1 episode in the dataset folder ``path``; returns the frames written."""
    from l3rocc_core import lerobot
    if not args.source:
        raise ValueError('--format lerobot needs --source: the recording of the occupancy')
    entry = lerobot.export_episode(
        args.occupancy, path, args.source, list(rows), args.cameras, args.intrinsics,
        args.source_fps, args.image_topic, args.camera, args.task or lerobot.DEFAULT_TASK,
        args.dataset_fps, args.append, seq=seq)
    return int(entry['length'])


def _write_rerun(seq: Any, rows: Sequence[int], path: str, args: argparse.Namespace) -> int:
    """Write a Rerun recording of ``rows``: voxels, cameras, pictures and depth where known."""
    from l3rocc_core.camera_log import cameras_of
    from l3rocc_core.lerobot import scaled_intrinsics, STAMP_TOLERANCE_NS
    from l3rocc_core.sources import iter_images, pictures_at
    from l3rocc_core.viewers import check_output_file
    from l3rocc_core.viewers.rerun_log import RerunRecorder
    check_output_file(path, '.rrd')
    rows = list(rows)
    stamps = np.asarray(seq.stamps_ns, np.int64)[rows]
    _, cams = cameras_of(args.occupancy, len(seq), getattr(args, 'cameras', None))
    depth = _depth_rows(args, stamps)
    source = getattr(args, 'source', None)
    pictures = (pictures_at(iter_images(source, args.intrinsics, args.image_topic,
                                        args.source_fps), stamps, STAMP_TOLERANCE_NS)
                if source else iter([None] * len(rows)))
    threshold = args.threshold or 0.0
    rec = RerunRecorder(path, os.path.basename(source or args.occupancy))
    try:
        for r, rgb in zip(rows, pictures):
            tab = voxel_table(seq, [r], threshold)
            T = K = size = None
            if cams is not None:
                T, K, size = cams['T_world_cam'][r], cams['intrinsics'][r], cams['image_size'][r]
                if rgb is not None:   # the source's pictures: the camera at their size
                    K = scaled_intrinsics(K[None], size[None], (rgb.shape[1], rgb.shape[0]))[0]
                    size = (rgb.shape[1], rgb.shape[0])
            rec.log(r, int(seq.stamps_ns[r]), tab['xyz'], tab['prob'], seq.grid.voxel_size,
                    T, K, size, rgb, None if depth is None else depth.get(int(seq.stamps_ns[r])))
    except BaseException:
        rec.abort()
        raise
    rec.close()
    return len(rows)


def _depth_rows(args: argparse.Namespace, stamps: np.ndarray) -> Optional[Dict[int, Any]]:
    """Depth maps of ``depth.npz`` (``--depth``, default beside OCC.npz) by stamp, or None."""
    path = getattr(args, 'depth', None)
    if path is None:
        near = os.path.join(os.path.dirname(os.path.abspath(args.occupancy)), 'depth.npz')
        path = near if os.path.exists(near) else None
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as z:
        if 'stamps' not in z.files or 'depth' not in z.files:
            raise ValueError(f'{path}: not a depth file (stamps, depth)')
        keep = np.isin(z['stamps'], stamps)
        return dict(zip(z['stamps'][keep].tolist(), z['depth'][keep]))


#: The temporal median of ``--format mesh-sequence`` unless ``--median`` says otherwise.
MESH_SEQUENCE_MEDIAN = 3

#: Format name -> writer(seq, rows, path, args) returning the number of voxels (points formats)
#: or files (mesh formats) written.
WRITERS: Dict[str, Callable[..., int]] = {
    'ply': _write_ply,
    'csv': _write_csv,
    'npz': _write_npz,
    'mesh-ply': _write_mesh,
    'mesh-obj': _write_mesh,
    'mesh-sequence': _write_mesh_sequence,
    'lerobot': _write_lerobot,
    'rerun': _write_rerun,
}
#: Formats whose default ``--slice`` is every row.
ALL_ROWS = ('lerobot', 'mesh-sequence', 'rerun')


def _format_of(path: str, given: str) -> str:
    if given:
        return given
    for suffix, name in (('.ply', 'ply'), ('.csv', 'csv'), ('.npz', 'npz'), ('.obj', 'mesh-obj'),
                         ('.rrd', 'rerun')):
        if path.lower().endswith(suffix):
            return name
    return 'ply'


def _run(args: argparse.Namespace) -> int:
    """Export the selected rows in the chosen format."""
    import os
    from l3rocc_core.occupancy import load_sequence
    if not args.out and not args.rerun:
        raise ValueError('give --out FILE, --rerun FILE.rrd, or both')
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f'--threshold must be in [0, 1], got {args.threshold}')
    jobs = [(_format_of(args.out, args.format), args.out)] if args.out else []
    if args.rerun:
        from l3rocc_core.viewers import check_output_file
        from l3rocc_core.viewers.rerun_log import import_rerun
        import_rerun()
        jobs.append(('rerun', check_output_file(args.rerun, '.rrd')))
    seq = load_sequence(args.occupancy)
    for fmt, out in jobs:
        rows = parse_rows(args.slice or ('all' if fmt in ALL_ROWS else 'last'), len(seq))
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        n = WRITERS[fmt](seq, rows, out, args)
        unit = ('mesh file(s)' if fmt.startswith('mesh') else
                'frames (one episode)' if fmt == 'lerobot' else
                'frames' if fmt == 'rerun' else 'voxels')
        print(f'wrote {n} {unit} of {len(rows)} row(s) to {out} ({fmt})')
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``l3rocc export``; bad input is reported on stderr with exit status 2."""
    # RuntimeError: sources.SourceError (a --source that cannot be read), ViewerUnavailable
    return cli.run_reporting('export', _run, args, cli.BAD_INPUT + (RuntimeError,))
