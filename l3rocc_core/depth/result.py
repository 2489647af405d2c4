"""DepthResult: one depth map with its confidence, validity and camera."""

from dataclasses import dataclass
from typing import Optional

import torch

from l3rocc_core.camera import PinholeCamera


class DepthInputError(ValueError):
    """Frames a depth estimator cannot use (no pose, other sizes); ``kind`` for diagnostics.

    :param message: what was wrong
    :param kind: the diagnostics counter name, when more specific than ``depth_input``
    """

    kind = 'depth_input'

    def __init__(self, message: str = '', kind: Optional[str] = None):
        """Keep the message, and the counter name when one is given."""
        super().__init__(message)
        if kind is not None:
            self.kind = kind


@dataclass
class DepthResult:
    """Depth of one reference frame, as every depth estimator returns it.

    All tensors live on the estimator's device and share the shape [H, W] of ``camera``, which may
    be smaller than the frame's image (the plane sweep works at a reduced resolution).

    :param depth: float32 [H, W] z-depth in metres along the optical axis; 0 where invalid
    :param confidence: float32 [H, W] in [0, 1]; 0 where untextured or seen by no source
    :param valid: bool [H, W]; True where ``depth`` is usable
    :param camera: undistorted pinhole model of the depth map's pixels (same optical frame and
        pose as the reference frame)
    """

    depth: torch.Tensor
    confidence: torch.Tensor
    valid: torch.Tensor
    camera: PinholeCamera

    def __post_init__(self) -> None:
        """Check that the three maps and the camera agree in shape."""
        shape = (self.camera.height, self.camera.width)
        for name in ('depth', 'confidence', 'valid'):
            value = getattr(self, name)
            if tuple(value.shape) != shape:
                raise ValueError(f'DepthResult.{name} has shape {tuple(value.shape)}, '
                                 f'camera is {shape}')

    @classmethod
    def invalid(cls, camera: PinholeCamera, device: torch.device) -> 'DepthResult':
        """All-invalid result (no usable source), zeros everywhere.

        :param camera: the camera of the depth map
        :param device: torch device of the tensors
        """
        shape = (camera.height, camera.width)
        return cls(torch.zeros(shape, dtype=torch.float32, device=device),
                   torch.zeros(shape, dtype=torch.float32, device=device),
                   torch.zeros(shape, dtype=torch.bool, device=device), camera)
