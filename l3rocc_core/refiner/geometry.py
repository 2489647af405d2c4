"""``refiner: none``: occupancy probabilities from the fused log-odds alone."""

from typing import Any, List, Optional, Sequence, Set, Tuple

import torch

from l3rocc_core.refiner.interface import Refiner

#: p(occupied) of voxels no window frame observed. Below every admissible threshold > 0.05, so
#: never-observed voxels never come out occupied (the contract scores observed voxels only).
UNOBSERVED_PROB = 0.0


class GeometryRefiner(Refiner):
    """``prob = sigmoid(logodds)`` where observed, :data:`UNOBSERVED_PROB` elsewhere.

    :param unobserved_prob: the value given to never-observed voxels (< the occupancy threshold)
    """

    name = 'geometry'

    def __init__(self, unobserved_prob: float = UNOBSERVED_PROB):
        """Keep the value for unobserved voxels."""
        if not 0.0 <= unobserved_prob < 0.5:
            raise ValueError(f'unobserved_prob must be in [0, 0.5), got {unobserved_prob}')
        self.unobserved_prob = float(unobserved_prob)

    def plan(self, slots: Sequence[int], cached: Set[int]) -> List[int]:
        """Return the slices without an estimate yet, and the newest (its evidence grew).

        A slice's probabilities depend on that slice's evidence alone, so an estimated older
        slice never changes.
        """
        slots = [int(s) for s in slots]
        return [s for s in slots[:-1] if s not in cached] + slots[-1:]

    def estimate(self, evidence: Any, slots: Sequence[int],
                 todo: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """p(occupied) [K, X, Y, Z] and observed [K, X, Y, Z] of the ``todo`` slots."""
        logodds, observed = evidence.slots(todo)
        return self.refine(None, logodds, observed), observed

    def refine(self, features: Optional[torch.Tensor], logodds: torch.Tensor,
               observed: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities of every slice.

        :param features: float [T, C, X, Y, Z] (unused; may be None: geometry needs no features)
        :param logodds: float [T, X, Y, Z] fused log-odds
        :param observed: bool [T, X, Y, Z] observed mask
        :return: float32 [T, X, Y, Z] p(occupied) in [0, 1], on the device of ``logodds``
        :raises ValueError: when the shapes differ
        """
        if logodds.shape != observed.shape or logodds.ndim != 4:
            raise ValueError(f'logodds {tuple(logodds.shape)} and observed '
                             f'{tuple(observed.shape)} must both be [T, X, Y, Z]')
        prob = torch.sigmoid(logodds.to(torch.float32))
        return torch.where(observed, prob, torch.full((), self.unobserved_prob,
                                                      device=prob.device))
