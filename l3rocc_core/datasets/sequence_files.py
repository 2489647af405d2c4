"""The files of a rendered sequence with ground truth, as ``l3rocc synth --out DIR`` lays them out.

- ``sequence.mcap``: sensor_msgs/Image ``/camera/image_raw`` (rgb8), CameraInfo
  ``/camera/camera_info``, /tf ``odom -> camera_optical_frame`` and nav_msgs/Odometry ``/odom``
  at every image stamp;
- ``gt.npz``: the contract occupancy file, one row per frame (occupied voxels, prob 1.0),
  ``visible_packed`` = observed masks, ``dynamic_packed`` = np.packbits of the bool
  [N, X, Y, Z] voxels of moving objects;
- ``depth.npz``: ``depth`` float16 [N, H, W] (z, metres, 0 = nothing), ``stamps`` int64 [N],
  ``K`` float64 [3, 3], ``width``, ``height``, ``moving_packed`` = np.packbits of the bool
  [N, H, W] pixels that see a moving object;
- ``preview.png`` (one frame); ``meta.json`` is the generator's (:meth:`SequenceFiles.meta`
  gives its common part).

Any generator can write them through :class:`SequenceFiles`, so every scorer reads its output
unchanged.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import OccupancySequenceWriter

WORLD_FRAME = 'odom'
CAMERA_FRAME = 'camera_optical_frame'
TOPICS = {'image': '/camera/image_raw', 'camera_info': '/camera/camera_info', 'tf': '/tf',
          'odometry': '/odom'}


def save_npz(path: str, **arrays: np.ndarray) -> None:
    """np.savez_compressed to ``path`` atomically (a ``.partial`` sibling, then a rename)."""
    tmp = path + '.partial'
    with open(tmp, 'wb') as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


class SequenceFiles:
    """Writes one sequence frame by frame; :meth:`close` writes the npz files.

    :param out_dir: created if missing; an existing ``sequence.mcap`` is replaced
    :param camera: the undistorted pinhole camera of the images and depth maps
    :param grid: the ground-truth grid (``world_frame`` coordinates)
    """

    def __init__(self, out_dir: str, camera: PinholeCamera, grid: VoxelGrid):
        """Open the bag."""
        from l3rocc_core.bags import CameraBagWriter

        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.camera, self.grid = camera, grid
        bag_path = self.out / 'sequence.mcap'
        if bag_path.exists():
            bag_path.unlink()
        self.bag = CameraBagWriter(str(bag_path))
        self.gt = OccupancySequenceWriter(grid, 0.5)
        self.stamps, self.depths, self.dynamic, self.moving = [], [], [], []

    def __enter__(self) -> 'SequenceFiles':
        """Return self."""
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Write the npz files on success; close the bag either way."""
        if exc_type is None:
            self.close()
        else:
            self.bag.abort()

    def add(self, stamp_ns: int, image: np.ndarray, depth: np.ndarray, T_world_cam: np.ndarray,
            occupied: np.ndarray, observed: np.ndarray, dynamic: np.ndarray,
            moving: np.ndarray, preview: bool = False) -> None:
        """Append one frame.

        :param stamp_ns: header stamp
        :param image: uint8 [H, W, 3] RGB
        :param depth: float [H, W] z in metres, 0 = nothing
        :param T_world_cam: float64 [4, 4] optical frame to ``odom``
        :param occupied: bool [X, Y, Z]; ``observed`` and ``dynamic`` likewise
        :param moving: bool [H, W] pixels that see a moving object
        :param preview: also write this image as ``preview.png``
        """
        bag = self.bag
        bag.write_tf([(WORLD_FRAME, CAMERA_FRAME, T_world_cam)], stamp_ns)
        bag.write_odometry(T_world_cam, stamp_ns, WORLD_FRAME, CAMERA_FRAME)
        bag.write_camera_info(self.camera, stamp_ns, CAMERA_FRAME)
        bag.write_image(image, stamp_ns, CAMERA_FRAME)
        self.gt.add(stamp_ns, occupied.astype(np.float32), observed)
        self.stamps.append(int(stamp_ns))
        self.depths.append(np.asarray(depth).astype(np.float16))
        self.dynamic.append(np.asarray(dynamic, bool))
        self.moving.append(np.asarray(moving, bool))
        if preview:
            import cv2
            cv2.imwrite(str(self.out / 'preview.png'), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Close the bag and write ``gt.npz`` and ``depth.npz``."""
        self.bag.close()
        gt_path = str(self.out / 'gt.npz')
        self.gt.write(gt_path)
        with np.load(gt_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        save_npz(gt_path, dynamic_packed=np.packbits(np.stack(self.dynamic).reshape(-1)),
                 **arrays)
        cam = self.camera
        save_npz(str(self.out / 'depth.npz'), depth=np.stack(self.depths),
                 stamps=np.asarray(self.stamps, np.int64), K=cam.K,
                 width=np.int64(cam.width), height=np.int64(cam.height),
                 moving_packed=np.packbits(np.stack(self.moving).reshape(-1)))

    def moving_share(self) -> Dict[str, float]:
        """Return the share of image pixels that see moving objects: mean, max over frames."""
        share = np.stack(self.moving).reshape(len(self.moving), -1).mean(1)
        return {'mean': float(share.mean()), 'max': float(share.max()),
                'frames_at_least_20pct': int((share >= 0.2).sum())}

    def meta(self, recommended: Dict[str, Any], extra: Optional[Dict[str, Any]] = None
             ) -> Dict[str, Any]:
        """Write ``meta.json``: camera, grid, frames, topics, ``recommended_parameters``, extra.

        :param recommended: pipeline parameters (``--set`` names) that fit the sequence
        :return: the dictionary written
        """
        cam, g = self.camera, self.grid
        meta = {
            'frames': len(self.stamps),
            'camera': {'width': cam.width, 'height': cam.height, 'fx': cam.fx, 'fy': cam.fy,
                       'cx': cam.cx, 'cy': cam.cy, 'distortion_model': cam.distortion_model,
                       'D': list(cam.D)},
            'grid': {'origin': list(g.origin), 'voxel_size': g.voxel_size, 'dims': list(g.dims),
                     'frame_id': g.frame_id},
            'frames_ids': {'world': WORLD_FRAME, 'camera': CAMERA_FRAME},
            'topics': dict(TOPICS),
            'recommended_parameters': dict(recommended),
        }
        meta.update(extra or {})
        with open(self.out / 'meta.json', 'w', encoding='utf-8') as fh:
            json.dump(meta, fh, indent=2)
        return meta
