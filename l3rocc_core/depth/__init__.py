"""Depth for each new frame: multi-view plane sweep (later: ground plane, external model)."""
