"""Ground-truth depth for scoring a depth stage: GT maps by stamp, and pooled depth figures."""

from typing import Any, Dict, List, Optional

import numpy as np

from l3rocc_core import metrics as M
from l3rocc_core.camera import PinholeCamera


class DepthTruth:
    """GT depth by image stamp, rendered into any camera at the frame's pose.

    :param depth: per stamp: (float [H, W] metres, its undistorted pinhole camera,
        T_world_cam float64 [4, 4] of that depth map)
    :param moving: per stamp: bool [H, W] pixels of that map that see a moving object
        (synthetic sequences), or None
    """

    def __init__(self, depth: Dict[int, tuple], moving: Optional[Dict[int, np.ndarray]] = None):
        """Index the maps by stamp (ns)."""
        self.depth = depth
        self.moving = moving

    @classmethod
    def from_synth(cls, path: str) -> 'DepthTruth':
        """Load ``depth.npz`` of ``l3rocc synth``.

        The maps belong to the undistorted pinhole camera (``K``) at the frame's own pose, so
        the stamp alone pairs them with replayed frames. ``moving_packed`` (written since the
        moving-pixel masks were added; older caches lack it) gives :attr:`moving`.
        """
        with np.load(path, allow_pickle=False) as z:
            depth = z['depth']
            stamps = z['stamps'].astype(np.int64)
            K = z['K'].astype(np.float64)
            moving = None
            if 'moving_packed' in z.files:
                moving = np.unpackbits(z['moving_packed'], count=depth.size).reshape(
                    depth.shape).astype(bool)
        h, w = depth.shape[1:]
        cam = PinholeCamera(w, h, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
                            float(K[1, 2]))
        return cls({int(s): (depth[i], cam, None) for i, s in enumerate(stamps)},
                   None if moving is None else {int(s): moving[i] for i, s in enumerate(stamps)})

    @classmethod
    def from_tum(cls, path: Optional[str] = None, depth_model: str = 'tum') -> 'DepthTruth':
        """TUM registered depth at the depth image's own pose.

        :param depth_model: how its pixels are read (``datasets.tum.tum_depth_maps``): 'tum'
            (TUM's depth-camera model) or 'colour' (the colour camera's pixels)
        """
        from l3rocc_core.datasets.tum import load_tum, tum_depth_maps
        seq = load_tum(path)
        depths, camera = tum_depth_maps(seq, depth_model)
        return cls({int(f.stamp_ns): (d, camera, f.T_world_depth)
                    for f, d in zip(seq.frames, depths)})

    def render(self, stamp_ns: int, camera: PinholeCamera,
               T_world_cam: np.ndarray) -> Optional[np.ndarray]:
        """Return GT depth float32 [camera.height, camera.width] (0 = none), or None without GT."""
        return self._reproject(stamp_ns, camera, T_world_cam)

    def render_moving(self, stamp_ns: int, camera: PinholeCamera, T_world_cam: np.ndarray,
                      gt: np.ndarray) -> Optional[np.ndarray]:
        """Return which pixels of :meth:`render`'s ``gt`` show a moving object.

        A pixel is moving when the nearest point splatted onto it is a moving object's: the
        moving points alone, rendered the same way, land there at exactly the same depth.

        :return: bool [camera.height, camera.width], or None without moving-pixel masks
        """
        if self.moving is None or int(stamp_ns) not in self.moving:
            return None
        moving = self._reproject(stamp_ns, camera, T_world_cam, self.moving[int(stamp_ns)])
        return (moving > 0) & (moving == gt)

    def _reproject(self, stamp_ns: int, camera: PinholeCamera, T_world_cam: np.ndarray,
                   keep: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Return the map at ``stamp_ns`` (its ``keep`` pixels only, if given) in ``camera``."""
        item = self.depth.get(int(stamp_ns))
        if item is None:
            return None
        d, cam, T = item
        d = np.asarray(d, np.float32)
        if keep is not None:
            d = np.where(keep, d, np.float32(0.0))
        return M.reproject_depth(d, cam, T_world_cam if T is None else T, camera, T_world_cam)


def pooled_depth_metrics(rows: List[Dict[str, float]]) -> Dict[str, Any]:
    """Pixel-pooled figures of :func:`~l3rocc_core.metrics.depth_metrics` rows."""
    n_gt = sum(r['n_gt'] for r in rows)
    rows = [r for r in rows if r['n_valid'] > 0]
    n = np.asarray([r['n_valid'] for r in rows], np.float64)
    out: Dict[str, Any] = {'gt_pixels': int(n_gt),
                           'completeness': float(n.sum() / n_gt) if n_gt > 0 else None}
    if not rows:
        out.update(abs_rel=None, delta_1_25=None, median_abs_rel=None)
        return out
    out.update(
        abs_rel=float(np.sum(n * [r['abs_rel'] for r in rows]) / n.sum()),
        delta_1_25=float(np.sum(n * [r['delta_1_25'] for r in rows]) / n.sum()),
        median_abs_rel=float(np.median([r['median_abs_rel'] for r in rows])))
    return out
