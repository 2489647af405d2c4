"""Frame: one image at the working resolution with its camera, stamp and pose."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from l3rocc_core.camera import PinholeCamera


@dataclass
class Frame:
    """One camera frame as every stage sees it.

    :param image: uint8 [H, W, 3] RGB, undistorted, at the working resolution
    :param stamp_ns: capture time in nanoseconds (header stamp)
    :param camera: undistorted pinhole model of ``image`` (distortion_model 'none')
    :param T_world_cam: float64 [4, 4] pose of the optical frame in the world frame (camera to
        world), or None when unknown
    :param frame_id: the camera's optical frame name
    :param depth: optional float32 [H, W] metric z-depth registered to ``image`` (same pixels,
        undistorted the same way), 0 where there is no return; from a depth topic or a dataset
    """

    image: np.ndarray
    stamp_ns: int
    camera: PinholeCamera
    T_world_cam: Optional[np.ndarray] = None
    frame_id: str = 'camera'
    depth: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        """Check shapes and the pose on entry."""
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f'Frame.image must be uint8 [H, W, 3], got {self.image.dtype} '
                             f'{self.image.shape}')
        h, w = self.image.shape[:2]
        if (w, h) != (self.camera.width, self.camera.height):
            raise ValueError(f'image {w}x{h} does not match camera '
                             f'{self.camera.width}x{self.camera.height}')
        if self.T_world_cam is not None:
            T = np.asarray(self.T_world_cam, dtype=np.float64)
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise ValueError('T_world_cam must be a finite 4x4 matrix')
            self.T_world_cam = T
        if self.depth is not None:
            d = np.asarray(self.depth, dtype=np.float32)
            if d.shape != (h, w):
                raise ValueError(f'Frame.depth must be [H, W] = [{h}, {w}] like the image, got '
                                 f'{d.shape}')
            self.depth = d

    @property
    def gray(self) -> np.ndarray:
        """float32 [H, W] intensity in [0, 1]."""
        return (self.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                ) / 255.0
