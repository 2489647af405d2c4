"""Depth for each new frame: multi-view plane sweep (later: ground plane, external model)."""

from l3rocc_core.depth.result import DepthInputError, DepthResult

__all__ = ['DepthInputError', 'DepthResult']
