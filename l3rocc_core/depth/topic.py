"""Depth from a registered depth image (``depth_source: topic``): an RGB-D camera's depth.

The node pairs each image with the depth image of the same stamp and the frame builder brings
it to the working resolution (nearest neighbour, undistorted with the image's maps) as
``Frame.depth``. :class:`TopicDepth` turns that into the depth stage's result with
:func:`depth_result`, which the learned sources share:

1. Resolution: the working resolution divided by ``depth_downsample`` (the plane sweep's
   convention; the image is cropped to whole blocks at the right and bottom). Each block keeps
   the **minimum** of its valid depths, not an average (which would blend foreground and
   background into depths where nothing is) and not one sampled pixel (which loses structures
   thinner than a block, e.g. a chair leg, half of the time). The minimum is a measured depth
   and never carves free space through the nearest surface of the block; its cost is a
   dilation of foreground by under one block and, on a flat noisy surface, a bias of about
   one noise sigma (~1 cm at 2 m for a structured-light sensor, far below a voxel).
2. Range: depths outside (``min_depth``, ``max_depth``] count as no return before the block
   minimum, so a surface beyond ``max_depth`` is invalid rather than clipped onto it.
3. Confidence: 1, except at flying pixels, the classic RGB-D outlier at object edges: a depth
   between the foreground and the background, on neither surface. A pixel whose depth lies at
   least ``depth_edge_ratio`` x depth above the nearest and below the farthest valid depth of
   its 3x3 neighbourhood gets confidence 0 (linear from 1 at half that gap) and is invalid.
   The foreground and background pixels of an edge are real surfaces and keep confidence 1, so
   thin objects are not eroded away; a plane seen at a grazing angle loses confidence only
   where one pixel spans more than half of ``depth_edge_ratio`` of its depth.
"""

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from l3rocc_core.camera import CameraModelError, PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.result import DepthInputError, DepthResult
from l3rocc_core.frame import Frame

__all__ = ['TopicDepth', 'depth_result']


def depth_result(depth: torch.Tensor, camera: PinholeCamera, config: DepthConfig,
                 confidence_scale: float = 1.0) -> DepthResult:
    """Depth stage result of a metric depth map at the working resolution (steps 1-3 above).

    :param depth: float32 [H, W] z-depth in metres of the frame's pixels (``camera``), 0 or
        non-finite = no return
    :param camera: the frame's (working resolution, undistorted) camera
    :param config: ``depth_downsample``, ``min_depth``, ``max_depth``, ``depth_edge_ratio``,
        ``min_confidence``
    :param confidence_scale: in [0, 1], multiplies every confidence (e.g. how well a model's
        scale was fitted)
    :return: depth, confidence and validity at the working resolution / ``depth_downsample``
    :raises DepthInputError: an image smaller than one ``depth_downsample`` block
    """
    if tuple(depth.shape) != (camera.height, camera.width):
        raise ValueError(f'depth of shape {tuple(depth.shape)} does not match the camera '
                         f'{camera.width}x{camera.height}')
    f = config.depth_downsample
    try:
        cam = camera.reduced(f)
    except CameraModelError as exc:
        raise DepthInputError(f'depth_downsample {f}: {exc}') from exc
    d = depth[:cam.height * f, :cam.width * f].float()
    inf = torch.tensor(float('inf'), device=d.device)
    inside = torch.isfinite(d) & (d > config.min_depth) & (d <= config.max_depth)
    nearest = torch.where(inside, d, inf)                              # inf = no return
    if f > 1:
        nearest = -F.max_pool2d(-nearest[None, None], f)[0, 0]        # block minimum
    valid = torch.isfinite(nearest)
    zero = torch.zeros((), device=d.device)
    d = torch.where(valid, nearest, zero)
    confidence = valid.float()
    ratio = config.depth_edge_ratio
    if ratio > 0:
        # 3x3 extremes over valid neighbours (max_pool2d pads with -inf; invalid are 0 or inf).
        hi = F.max_pool2d(d[None, None], 3, 1, 1)[0, 0]
        lo = -F.max_pool2d(-nearest[None, None], 3, 1, 1)[0, 0]
        gap = torch.minimum(d - lo, hi - d) / d.clamp_min(1e-6)       # share of own depth
        confidence = (2.0 - gap * (2.0 / ratio)).clamp_(0.0, 1.0) * confidence
    confidence = confidence * float(confidence_scale)
    valid = valid & (confidence > 0) & (confidence >= config.min_confidence)
    return DepthResult(torch.where(valid, d, zero), torch.where(valid, confidence, zero), valid,
                       cam)


def numpy_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Tensor of ``array`` on ``device``; read-only arrays are copied (torch refuses them)."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, device=device)


class TopicDepth(DepthSource):
    """The depth image that came with the frame (``Frame.depth``), as the depth stage's result.

    :param config: depth parameters (range, ``depth_downsample``, ``depth_edge_ratio``)
    :param device: torch device of the result
    """

    name = 'topic'
    uses_sources = False
    requires_sources = False

    def __init__(self, config: DepthConfig, device: Union[str, torch.device] = 'cpu'):
        """Keep the parameters."""
        if config.min_depth < 0 or config.min_depth >= config.max_depth:
            raise ValueError(f'need 0 <= min_depth < max_depth, got {config.min_depth}, '
                             f'{config.max_depth}')
        self.config = config
        self.device = torch.device(device)

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> DepthResult:
        """Depth of ``frame`` from its registered depth image.

        :param frame: a frame with ``depth`` (float32 [H, W] metres at the working resolution)
        :param sources: not used
        :raises DepthInputError: ``depth_missing`` when the frame came without a depth image
        """
        if frame.depth is None:
            raise DepthInputError(
                f'frame at {frame.stamp_ns} ns has no depth image (depth_source topic needs a '
                'registered depth image with the same stamp as the image)', kind='depth_missing')
        depth = numpy_to_device(frame.depth, self.device)
        return depth_result(depth, frame.camera, self.config)
