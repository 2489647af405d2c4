"""The refiner's training loss, term by term.

``L = lambda_geo * BCE + temp_weight * S + lambda_l1 * L1`` with, for predicted probabilities
``O = sigmoid(logits)`` [B, T, X, Y, Z] and ground truth ``G`` in {0, 1}:

- per-voxel weight ``w = 1`` on observed voxels, ``w = unobserved_weight`` on unobserved voxels
  whose ground truth is known, ``0`` elsewhere; BCE and L1 multiply it by ``dynamic_weight`` on
  voxels of moving objects (when a dynamic mask is given; 1 = the method as published), the
  smoothness term does not (a moving part *should* change between slices);
- ``BCE = sum(w * bce(logits, G)) / sum(w)`` (binary cross-entropy on the logits, ``pos_weight``
  on the occupied class);
- ``S = sum_t sum_v w(t, v) * (O(t+1, v) - 2 O(t, v) + O(t-1, v))^2 / sum_t sum_v w(t, v)`` over
  the interior slices ``t = 1 .. T-2``: the method's sum of squared second differences in time,
  weighted by the middle slice's weight and normalised by the number of weighted terms (a mean,
  so ``temp_weight`` does not depend on the crop size);
- ``L1 = sum(w * |O - G|) / sum(w)``: the L1 distance between the predicted *probabilities* and
  the ground-truth occupancy;
- optional motion consistency (``weights.motion`` > 0, the method's 0.1 when used):
  ``M = sum_v valid(v) * ||F(v) - F_match(v)||_1 / sum_v valid(v)``, the L1 distance between the
  predicted occupancy flow ``F`` [B, T, 3, X, Y, Z] (m/s) and the flow from feature matching
  ``F_match`` (:mod:`l3rocc_core.refiner.flow_targets`) on the voxels holding a match;
- optional streamed smoothness (``weights.stream`` > 0; ours, not the method's): the same
  squared second difference, but of what a stream publishes: the newest slice of three
  successive windows (passes over the first ``T-2``, ``T-1`` and ``T`` slices), with the
  middle window's voxel weights ``w`` and moving voxels left out (:func:`stream_smoothness`).
  ``S`` only ties the slices of one pass together, and a stream publishes each slice from its
  own pass.
"""

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    """Weights of the loss terms.

    :param geo: lambda_geo, weight of the BCE term
    :param temporal: temp_weight, weight of the 2nd-order temporal smoothness term
    :param l1: lambda_L1, weight of the L1 term on probabilities
    :param unobserved: per-voxel weight of unobserved voxels with known ground truth
    :param pos_weight: BCE weight of occupied voxels (class balance)
    :param dynamic: BCE and L1 weight multiplier on voxels of moving objects
    :param motion: weight of the motion-consistency term (0 = off)
    :param stream: weight of the streamed smoothness term (0 = off)
    """

    geo: float = 1.0
    temporal: float = 0.3
    l1: float = 0.2
    unobserved: float = 0.1
    pos_weight: float = 1.0
    dynamic: float = 1.0
    motion: float = 0.0
    stream: float = 0.0


def voxel_weights(observed: torch.Tensor, known: Optional[torch.Tensor],
                  unobserved_weight: float) -> torch.Tensor:
    """Per-voxel loss weight: 1 observed, ``unobserved_weight`` unobserved-but-known, 0 unknown.

    :param observed: bool [B, T, X, Y, Z]
    :param known: bool [B, T, X, Y, Z] ground truth is defined (None = everywhere)
    :return: float32 [B, T, X, Y, Z]
    """
    obs = observed.bool()
    unobs = ~obs if known is None else (~obs) & known.bool()
    return obs.float() + float(unobserved_weight) * unobs.float()


def second_difference(prob: torch.Tensor) -> torch.Tensor:
    """``O(t+1) - 2 O(t) + O(t-1)`` along the time axis (dim 1).

    :param prob: [B, T, ...]
    :return: [B, T-2, ...] (entry ``t-1`` holds the value centred on slice ``t``)
    """
    return prob[:, 2:] - 2.0 * prob[:, 1:-1] + prob[:, :-2]


def stream_smoothness(newest: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared second difference of three successive published slices.

    :param newest: float [B, 3, X, Y, Z] probabilities of the newest slice of three successive
        windows, oldest first
    :param weight: float [B, X, Y, Z] per-voxel weight (e.g. static voxels observed by the
        middle window)
    :return: scalar (0 when every weight is 0)
    """
    if newest.dim() != 5 or newest.shape[1] != 3:
        raise ValueError(f'newest must be [B, 3, X, Y, Z], got {tuple(newest.shape)}')
    if weight.shape != newest[:, 0].shape:
        raise ValueError(f'weight shape {tuple(weight.shape)} != {tuple(newest[:, 0].shape)}')
    d2 = second_difference(newest.float())[:, 0]
    return (weight * d2 * d2).sum() / weight.sum().clamp_min(1.0)


def motion_consistency(flow: torch.Tensor, flow_target: torch.Tensor,
                       flow_valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between predicted and feature-matched flow over the matched voxels.

    :param flow: float [B, T, 3, X, Y, Z] predicted occupancy flow (m/s)
    :param flow_target: float [B, T, 3, X, Y, Z] flow from feature matching (m/s)
    :param flow_valid: bool [B, T, X, Y, Z] voxels holding a match
    :return: scalar (0 when no voxel holds a match)
    """
    if flow.shape != flow_target.shape or flow.dim() != 6 or flow.shape[2] != 3:
        raise ValueError(f'flow {tuple(flow.shape)} and target {tuple(flow_target.shape)} '
                         'must both be [B, T, 3, X, Y, Z]')
    grid = flow.shape[:2] + flow.shape[3:]
    if flow_valid.shape != grid:
        raise ValueError(f'flow_valid shape {tuple(flow_valid.shape)} != {tuple(grid)}')
    v = flow_valid.float()
    dist = (flow.float() - flow_target.float()).abs().sum(2)
    return (v * dist).sum() / v.sum().clamp_min(1.0)


def refiner_loss(logits: torch.Tensor, target: torch.Tensor, observed: torch.Tensor,
                 known: Optional[torch.Tensor] = None,
                 weights: Optional[LossWeights] = None,
                 dynamic: Optional[torch.Tensor] = None,
                 flow: Optional[torch.Tensor] = None,
                 flow_target: Optional[torch.Tensor] = None,
                 flow_valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Compute the training loss and each of its terms.

    :param logits: float [B, T, X, Y, Z] network output
    :param target: [B, T, X, Y, Z] ground-truth occupancy (bool or 0/1)
    :param observed: bool [B, T, X, Y, Z] voxels observed up to each slice
    :param known: bool [B, T, X, Y, Z] where the ground truth is defined (None = everywhere)
    :param weights: term weights (default :class:`LossWeights`)
    :param dynamic: bool [B, T, X, Y, Z] voxels of moving objects (``weights.dynamic`` applies
        there), or None
    :param flow: float [B, T, 3, X, Y, Z] predicted occupancy flow, or None
    :param flow_target: float [B, T, 3, X, Y, Z] feature-matched flow (with ``flow``)
    :param flow_valid: bool [B, T, X, Y, Z] voxels holding a match (with ``flow``)
    :return: ``{'total', 'bce', 'temporal', 'l1'}`` scalar tensors, and ``'motion'`` when
        ``flow`` is given; ``total`` is weighted, the others are the raw terms (for logging)
    :raises ValueError: bad shapes, or ``weights.motion`` > 0 without the flow tensors
    """
    w_cfg = weights or LossWeights()
    if logits.dim() != 5:
        raise ValueError(f'logits must be [B, T, X, Y, Z], got {tuple(logits.shape)}')
    for name, a in (('target', target), ('observed', observed), ('known', known),
                    ('dynamic', dynamic)):
        if a is not None and a.shape != logits.shape:
            raise ValueError(f'{name} shape {tuple(a.shape)} != logits {tuple(logits.shape)}')
    logits = logits.float()
    g = target.float()
    w = voxel_weights(observed, known, w_cfg.unobserved)
    w_fit = w
    if dynamic is not None and w_cfg.dynamic != 1.0:
        w_fit = w * (1.0 + (float(w_cfg.dynamic) - 1.0) * dynamic.float())
    norm = w_fit.sum().clamp_min(1.0)
    pos_weight = torch.tensor(float(w_cfg.pos_weight), device=logits.device)
    bce_map = F.binary_cross_entropy_with_logits(logits, g, reduction='none',
                                                 pos_weight=pos_weight)
    bce = (w_fit * bce_map).sum() / norm
    prob = torch.sigmoid(logits)
    l1 = (w_fit * (prob - g).abs()).sum() / norm
    if logits.shape[1] >= 3:
        w_mid = w[:, 1:-1]
        temporal = (w_mid * second_difference(prob) ** 2).sum() / w_mid.sum().clamp_min(1.0)
    else:
        temporal = logits.new_zeros(())
    total = w_cfg.geo * bce + w_cfg.temporal * temporal + w_cfg.l1 * l1
    out = {'bce': bce, 'temporal': temporal, 'l1': l1}
    if flow is not None:
        if flow_target is None or flow_valid is None:
            raise ValueError('flow needs flow_target and flow_valid')
        out['motion'] = motion_consistency(flow, flow_target, flow_valid)
        total = total + w_cfg.motion * out['motion']
    elif w_cfg.motion > 0:
        raise ValueError('weights.motion > 0 needs flow, flow_target and flow_valid')
    return dict(total=total, **out)
