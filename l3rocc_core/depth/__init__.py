"""Depth for each new frame: one interface, several sources (see :mod:`.base`)."""

from l3rocc_core.depth.base import DEPTH_SOURCES, DepthSource, make_depth_source
from l3rocc_core.depth.result import DepthInputError, DepthResult

__all__ = ['DEPTH_SOURCES', 'DepthInputError', 'DepthResult', 'DepthSource', 'make_depth_source']
