"""The refiner interface: fused evidence of the window's slices -> occupancy probabilities.

The pipeline keeps the published probabilities per ring slot and asks the refiner, every
frame, which slots need a new estimate (:meth:`Refiner.plan`) and then for those estimates
(:meth:`Refiner.estimate`). A window pass re-estimates every slot; a newest pass only the new
slice (and whatever the refiner chooses to revisit). The pipeline never asks which refiner it
has.
"""

import abc
from typing import Any, List, Optional, Sequence, Set, Tuple

import torch


class Refiner(abc.ABC):
    """Turns the evidence of a window's slices into p(occupied) per voxel and slice."""

    #: 'geometry' or 'network' (diagnostics, the node's start-up line)
    name = ''
    #: torch.compile state of a refiner that compiles ('off' for the others)
    compile_status = 'off'

    def plan(self, slots: Sequence[int], cached: Set[int]) -> List[int]:
        """Return the slots to estimate this frame, in window order (the newest last).

        :param slots: ring slots of the window, oldest first (the newest last)
        :param cached: slots whose earlier estimate is still valid (same evidence generation)
        :return: default: every slot (a window pass)
        """
        return [int(s) for s in slots]

    @abc.abstractmethod
    def estimate(self, evidence: Any, slots: Sequence[int],
                 todo: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Probabilities of the ``todo`` slots.

        :param evidence: the window's evidence (:class:`~l3rocc_core.fusion.EvidenceFusion`:
            ``slots``, ``slot_features``, ``features``, ``logodds``, ``observed``)
        :param slots: ring slots of the window, oldest first
        :param todo: the slots to estimate, as :meth:`plan` returned them
        :return: float32 p(occupied) [K, X, Y, Z] and bool observed [K, X, Y, Z], K = len(todo),
            in ``todo`` order
        """

    def set_measured_depth(self, measured: bool) -> None:
        """Say whether the depth fused into the window is measured (topic) or estimated.

        Default: no effect (a refiner that does not treat them differently).
        """

    def forget(self, slot: Optional[int] = None) -> None:
        """Drop whatever is cached for ring ``slot`` (rewritten), or for every slot (None)."""

    def warm_up(self, dims: Sequence[int]) -> float:
        """Prepare for a grid of ``dims`` (X, Y, Z) before the first frame.

        :return: seconds spent (0: nothing to prepare)
        """
        return 0.0
