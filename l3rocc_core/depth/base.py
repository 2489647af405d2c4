"""DepthSource: the interface of the pipeline's depth stage, and the factory of its sources.

Every source turns one frame (and, for multi-view sources, the window's source frames) into a
:class:`~l3rocc_core.depth.result.DepthResult`: metric z-depth, a confidence in [0, 1] and a
validity mask, with the pinhole camera of the depth map. The pipeline never asks which source
it has: it reads :attr:`DepthSource.uses_sources` to know whether to select window sources, and
:attr:`DepthSource.requires_sources` whether a frame without any gets no depth.
"""

import abc
from typing import Any, Optional, Sequence

import torch

from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame

#: ``depth_source`` values, as the parameter offers them.
DEPTH_SOURCES = ('auto', 'network', 'plane_sweep', 'topic', 'model')


class DepthSource(abc.ABC):
    """One way of getting each frame's depth and confidence.

    Implementations keep their buffers between calls: one :meth:`estimate` at a time per
    instance.
    """

    #: the ``depth_source`` value this class implements
    name = ''
    #: True when :meth:`estimate` uses window frames (matching, a cost volume): the pipeline
    #: then selects the window's sources (frames with parallax) and passes them.
    uses_sources = False
    #: True when it cannot give depth without sources (plane sweep): the pipeline then skips
    #: the depth of a frame that has none. False: the frame gets depth from ``estimate`` with
    #: whatever sources there are, possibly none (fixed camera, first frame).
    requires_sources = False

    def reset(self) -> None:
        """Forget what earlier frames left (a reset window); sources without state keep none."""

    @abc.abstractmethod
    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Depth of ``frame``.

        :param frame: the new frame (working resolution, pose when known, ``frame.depth``
            when a registered depth image came with it)
        :param sources: window frames with poses chosen for matching (empty for a source that
            does not :attr:`uses_sources`, or when the window has none: no parallax yet)
        :return: the depth map with confidence, or None when this frame has no depth (then
            the slice gets no new evidence)
        :raises DepthInputError: input this source cannot use (``kind`` names it)
        """


class WrappedDepthSource(DepthSource):
    """A depth source that works on another's results, and answers as that source does.

    :param source: the wrapped depth source
    """

    def __init__(self, source: DepthSource):
        """Wrap ``source``: its name and its needs of window sources are this one's."""
        self.source = source
        self.name = source.name
        self.uses_sources = source.uses_sources
        self.requires_sources = source.requires_sources

    def reset(self) -> None:
        """Reset the wrapped source."""
        self.source.reset()


def make_depth_source(config: DepthConfig, device: Any) -> DepthSource:
    """Build the depth source that ``config.depth_source`` names.

    :param config: the depth stage's parameters
    :param device: torch device the source computes on
    :raises ValueError: an unknown source, or one that cannot be built (the reason)
    """
    device = torch.device(device)
    name = config.depth_source
    if name == 'plane_sweep':
        from l3rocc_core.depth.plane_sweep import PlaneSweepDepth
        return PlaneSweepDepth(config, device)
    if name == 'topic':
        from l3rocc_core.depth.topic import TopicDepth
        return TopicDepth(config, device)
    if name == 'model':
        from l3rocc_core.depth.model import ModelDepth
        return ModelDepth(config, device)
    if name == 'network':
        from l3rocc_core.depth.network import NetworkDepth
        return NetworkDepth(config, device)
    if name == 'auto':
        from l3rocc_core.depth.auto import AutoDepth
        from l3rocc_core.depth.network import NetworkDepth
        from l3rocc_core.depth.plane_sweep import PlaneSweepDepth
        return AutoDepth(PlaneSweepDepth(config, device), lambda: NetworkDepth(config, device),
                         config)
    raise ValueError(f'depth_source must be one of {list(DEPTH_SOURCES)}, got {name!r}')
