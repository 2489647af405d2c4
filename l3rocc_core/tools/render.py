"""``l3rocc render``: PNG and MP4 previews, RGB | depth | occupancy from a fixed 3/4 view.

``preview.mp4`` has one frame per row of the occupancy file; ``preview.png`` stacks a few moments.
RGB comes from ``--source`` (a bag, video or image folder, read by ``l3rocc_core.sources``) or
``--tum`` (which also gives GT depth and the camera path); depth from ``--depth depth.npz``
(estimated depth: ``stamps`` int64 [N] ns and ``depth`` float [N, H, W] metres, 0 = invalid) or
the TUM GT depth. Panels without a source stay blank, so the occupancy alone can be rendered.
"""

import argparse
from dataclasses import dataclass, field
import math
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from l3rocc_core import cli

HELP = 'PNG/MP4 previews: RGB | depth | occupancy'
STAMP_TOLERANCE_NS = 50_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``l3rocc render`` arguments."""
    parser.add_argument('occupancy', metavar='OCC.npz', help='occupancy.npz to render')
    parser.add_argument('--out', metavar='DIR', required=True,
                        help='output folder for preview.png and preview.mp4')
    src = parser.add_mutually_exclusive_group()
    src.add_argument('--source', metavar='BAG|VIDEO|DIR',
                     help='the recording the occupancy was made from (RGB panel)')
    src.add_argument('--tum', metavar='DIR', nargs='?', const='',
                     help='TUM RGB-D folder: RGB, GT depth and camera path (no value: the '
                     'bundled fr1/xyz)')
    parser.add_argument('--depth', metavar='DEPTH.npz',
                        help='estimated depth (keys stamps [N] ns, depth [N, H, W] metres)')
    parser.add_argument('--intrinsics', default=None,
                        help='camera of a video/image --source (only needed to open it)')
    parser.add_argument('--moments', type=int, default=4,
                        help='rows of preview.png (moments spread over the sequence)')
    parser.add_argument('--height', type=int, default=300, help='panel height in pixels')
    parser.add_argument('--azimuth', type=float, default=None,
                        help='view direction from the scene centre, degrees from +x towards +y '
                        '(default: 35 degrees beside the mean camera position, else 45)')
    parser.add_argument('--elevation', type=float, default=35.0,
                        help='view elevation in degrees (default 35)')
    parser.add_argument('--fps', type=float, default=None,
                        help='video frame rate (default: from the stamps)')
    parser.add_argument('--no-video', action='store_true', help='only write preview.png')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


@dataclass
class Media:
    """Per-stamp pictures and poses that accompany the occupancy rows.

    :param rgb: stamp_ns -> uint8 [h, w, 3] RGB (already reduced to panel size)
    :param depth: stamp_ns -> float32 [h, w] metres (0 = invalid)
    :param poses: stamp_ns -> float64 [4, 4] camera to world
    :param depth_label: caption of the depth panel
    """

    rgb: Dict[int, np.ndarray] = field(default_factory=dict)
    depth: Dict[int, np.ndarray] = field(default_factory=dict)
    poses: Dict[int, np.ndarray] = field(default_factory=dict)
    depth_label: str = 'depth'

    @staticmethod
    def nearest(table: Dict[int, np.ndarray], stamp_ns: int,
                tolerance_ns: int = STAMP_TOLERANCE_NS) -> Optional[np.ndarray]:
        """Entry of ``table`` nearest to ``stamp_ns`` within ``tolerance_ns``, or None."""
        if not table:
            return None
        keys = np.fromiter(table.keys(), np.int64, len(table))
        k = int(keys[np.argmin(np.abs(keys - stamp_ns))])
        return table[k] if abs(k - stamp_ns) <= tolerance_ns else None


def _reduce(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h <= height:
        return image
    return cv2.resize(image, (max(1, round(w * height / h)), height),
                      interpolation=cv2.INTER_AREA)


def media_from_tum(path: Optional[str], height: int) -> Media:
    """RGB, GT depth (nearest-neighbour reduced) and GT poses of a TUM folder."""
    from l3rocc_core.datasets.tum import load_tum
    seq = load_tum(path or None)
    m = Media(depth_label='depth (TUM GT)')
    for f in seq.frames:
        m.rgb[f.stamp_ns] = _reduce(f.rgb, height)
        step = max(1, f.depth_m.shape[0] // height)
        m.depth[f.stamp_ns] = f.depth_m[::step, ::step]
        m.poses[f.stamp_ns] = f.T_world_cam
    return m


def media_from_source(path: str, height: int, intrinsics: Optional[str] = None) -> Media:
    """RGB (and poses where the source has them) of a bag, video or image folder."""
    from l3rocc_core.sources import iter_images
    m = Media()
    for stamp, rgb, T in iter_images(path, intrinsics):
        m.rgb[stamp] = _reduce(rgb, height)
        if T is not None:
            m.poses[stamp] = T
    return m


def load_depth_file(path: str, media: Media, height: int) -> None:
    """Add estimated depth maps from ``path`` (keys ``stamps``, ``depth``) to ``media``."""
    with np.load(path, allow_pickle=False) as z:
        if 'stamps' not in z.files or 'depth' not in z.files:
            raise ValueError(f'{path}: a depth file needs keys stamps and depth, has {z.files}')
        stamps, depth = z['stamps'].astype(np.int64), z['depth']
    if depth.ndim != 3 or len(depth) != len(stamps):
        raise ValueError(f'{path}: depth must be [N, H, W] with N = len(stamps), got '
                         f'{depth.shape} for {len(stamps)} stamps')
    media.depth = {}
    for s, d in zip(stamps, depth):
        step = max(1, d.shape[0] // height)
        media.depth[int(s)] = np.asarray(d[::step, ::step], np.float32)
    media.depth_label = 'depth (estimate)'


def _auto_azimuth(media: Media, centre: np.ndarray) -> float:
    if not media.poses:
        return 45.0
    p = np.mean([T[:3, 3] for T in media.poses.values()], axis=0) - centre
    if np.hypot(p[0], p[1]) < 1e-6:
        return 45.0
    return math.degrees(math.atan2(p[1], p[0])) + 35.0


def write_previews(seq, out_dir: str, media: Optional[Media] = None, moments: int = 4,
                   height: int = 300, azimuth_deg: Optional[float] = None,
                   elevation_deg: float = 35.0, fps: Optional[float] = None,
                   video: bool = True, progress: bool = True) -> Tuple[str, Optional[str]]:
    """Render ``preview.png`` (and ``preview.mp4``) of an occupancy sequence.

    :param seq: an :class:`~l3rocc_core.occupancy.OccupancySequence`
    :param out_dir: output folder (created)
    :param media: RGB / depth / poses by stamp, or None for occupancy only
    :param moments: rows of the PNG
    :param height: panel height in pixels (panels are 4:3)
    :return: (png path, mp4 path or None)
    """
    from tqdm import tqdm

    from l3rocc_core.preview import (VoxelRenderer, colorize_depth, fit_panel, occupied_bounds,
                                     put_label, three_quarter_view)
    if len(seq) == 0:
        raise ValueError('the occupancy file has no rows to render')
    media = media or Media()
    height = int(height) + int(height) % 2
    width = (height * 4 // 3) + (height * 4 // 3) % 2
    lo, hi = occupied_bounds(seq.grid, seq.indices, 2.0, 98.0)
    centre = (lo + hi) / 2
    az = _auto_azimuth(media, centre) if azimuth_deg is None else azimuth_deg
    view = three_quarter_view(lo, hi, width, height, az, elevation_deg)
    renderer = VoxelRenderer(seq.grid, view, height_range=(float(lo[2]), float(hi[2])))
    # Depth colours fixed over the sequence.
    valid = [d[d > 0] for d in media.depth.values() if np.any(d > 0)]
    d_range = ((float(np.percentile(np.concatenate(valid), 2)),
                float(np.percentile(np.concatenate(valid), 98))) if valid else (None, None))
    stamps = np.asarray(seq.stamps_ns, np.int64)
    pose_keys = sorted(media.poses)

    def frame(n: int) -> np.ndarray:
        stamp = int(stamps[n])
        t = (stamp - stamps[0]) / 1e9
        rgb = Media.nearest(media.rgb, stamp)
        depth = Media.nearest(media.depth, stamp)
        occ = renderer.render(seq.occupied_mask(n))
        renderer.draw_box(occ, lo, hi)
        pose = Media.nearest(media.poses, stamp)
        if pose is not None:
            path = np.array([media.poses[k][:3, 3] for k in pose_keys if k <= stamp])
            renderer.draw_camera(occ, pose, path if len(path) else None)
        n_occ = int(seq.indptr[n + 1] - seq.indptr[n])
        put_label(occ, f'occupancy  #{n}  t={t:.2f}s  {n_occ} voxels')
        panels = [fit_panel(rgb, width, height, 'RGB' if rgb is not None else 'RGB: none'),
                  fit_panel(None if depth is None else colorize_depth(depth, *d_range),
                            width, height,
                            media.depth_label if depth is not None else 'depth: none'),
                  occ]
        return np.concatenate(panels, axis=1)

    os.makedirs(out_dir, exist_ok=True)
    picks = sorted(set(np.linspace(0, len(seq) - 1, max(1, moments)).round().astype(int)))
    mp4 = None
    cache: Dict[int, np.ndarray] = {}
    if video:
        mp4 = os.path.join(out_dir, 'preview.mp4')
        if fps is None:
            dt = np.diff(stamps) / 1e9
            fps = 1.0 / float(np.median(dt)) if len(dt) and np.median(dt) > 0 else 10.0
        fps = float(min(max(fps, 1.0), 60.0))
        tmp = os.path.join(out_dir, '.preview.partial.mp4')
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'mp4v'), fps, (3 * width, height))
        if not writer.isOpened():
            raise RuntimeError(f'OpenCV cannot write mp4v video to {tmp}')
        try:
            for n in tqdm(range(len(seq)), desc='render', unit='frame', disable=not progress):
                img = frame(n)
                if n in picks:
                    cache[n] = img
                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        os.replace(tmp, mp4)
    rows: List[np.ndarray] = [cache[n] if n in cache else frame(n) for n in picks]
    png = os.path.join(out_dir, 'preview.png')
    if not cv2.imwrite(png, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f'cannot write {png}')
    return png, mp4


def _run(args: argparse.Namespace) -> int:
    """Load the occupancy and its media, write the previews."""
    from l3rocc_core.occupancy import load_sequence
    seq = load_sequence(args.occupancy)
    height = int(args.height)
    media = Media()
    if args.tum is not None:
        media = media_from_tum(args.tum, height)
    elif args.source:
        media = media_from_source(args.source, height, args.intrinsics)
    if args.depth:
        load_depth_file(args.depth, media, height)
    png, mp4 = write_previews(seq, args.out, media, args.moments, height, args.azimuth,
                              args.elevation, args.fps, not args.no_video, not args.quiet)
    if not args.quiet:
        print(f'wrote {png}' + (f' and {mp4}' if mp4 else ''))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``l3rocc render``; bad input is reported on stderr with exit status 2."""
    # RuntimeError: sources.SourceError (a --source that cannot be read)
    return cli.run_reporting('render', _run, args, cli.BAD_INPUT + (RuntimeError,))
