"""Temporal median filter over the slices of a 4D probability grid.

``out[t] = median(p[t - r], ..., p[t + r])`` per voxel with ``r = (kernel - 1) / 2``; the window
is clipped by repeating the first / last slice at the ends (``causal=True`` uses
``p[t - 2r] .. p[t]`` instead, so no slice depends on newer ones). An odd kernel makes the median
one of the inputs, so binary grids stay binary and a single-slice blip of length <= r vanishes.
"""

from typing import Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def temporal_median(prob: Array, kernel: int = 3, causal: bool = False) -> Array:
    """Median over ``kernel`` consecutive slices at every voxel (vectorised).

    :param prob: [T, X, Y, Z] probabilities (or any values), numpy or torch, oldest slice first
    :param kernel: odd window length in slices (1 = identity)
    :param causal: window ``[t - kernel + 1, t]`` instead of centred
    :return: same type, shape and dtype as ``prob``
    :raises ValueError: even or non-positive kernel, or not 4D
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f'kernel must be a positive odd number, got {kernel}')
    if prob.ndim != 4:
        raise ValueError(f'prob must be [T, X, Y, Z], got shape {tuple(prob.shape)}')
    is_numpy = isinstance(prob, np.ndarray)
    x = torch.from_numpy(prob) if is_numpy else prob
    if kernel == 1 or x.shape[0] == 0:
        return prob.copy() if is_numpy else prob.clone()
    r = kernel // 2
    before, after = (2 * r, 0) if causal else (r, r)
    padded = torch.cat([x[:1].expand(before, *x.shape[1:]), x,
                        x[-1:].expand(after, *x.shape[1:])], dim=0)
    windows = padded.unfold(0, kernel, 1)  # [T, X, Y, Z, kernel] (a view)
    out = windows.median(dim=-1).values
    return out.numpy() if is_numpy else out
