"""``depth_source: auto``: the plane sweep while the camera moves, the network while it stands.

The plane sweep is the most accurate source where it matches, but it needs parallax: a camera on a
pole, a parked vehicle or a robot waiting at a door gets no depth from it at all. The learned
network gives depth for a frame with a pose (where its confidence passes
``network_min_confidence``), from the image and the ground plane seen from the camera, with or
without window sources. :class:`AutoDepth` asks the sweep for every frame of a moving camera (so a
moving camera gets exactly the ``plane_sweep`` result), and the network once the camera has held
its pose (within ``foreground_still_m`` and ``foreground_still_deg``) for ``foreground_min_frames``
earlier frames, or from the first frame when the pose is fixed by construction (``pose_source:
static``). The network is built on the first still frame, so a moving camera never loads it.
"""

import logging
from typing import Callable, Optional, Sequence

import numpy as np

from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame
from l3rocc_core.transforms import rotation_angle_deg

LOG = logging.getLogger(__name__)


def within_still_limits(T_world_ref: np.ndarray, T_world_cam: np.ndarray,
                        config: DepthConfig) -> bool:
    """Return whether ``T_world_cam`` is within the still-camera limits of ``T_world_ref``.

    :param T_world_ref: float [4, 4] the pose the camera is held at
    :param T_world_cam: float [4, 4] the new pose
    :param config: ``foreground_still_m`` (metres) and ``foreground_still_deg`` (degrees)
    """
    moved_m = np.linalg.norm(T_world_cam[:3, 3] - T_world_ref[:3, 3])
    turned_deg = rotation_angle_deg(T_world_ref[:3, :3].T @ T_world_cam[:3, :3])
    return bool(moved_m <= config.foreground_still_m
                and turned_deg <= config.foreground_still_deg)


class AutoDepth(DepthSource):
    """The plane sweep for a moving camera, the learned network for a still one (module doc).

    :param sweep: the multi-view source (the plane sweep, with its consistency filter)
    :param make_network: builds the network source when the camera first stands still
    :param config: the still-camera limits (``foreground_still_m``, ``foreground_still_deg``,
        ``foreground_min_frames``)
    """

    name = 'auto'
    uses_sources = True
    #: a still camera's frames get depth without window sources
    requires_sources = False

    def __init__(self, sweep: DepthSource, make_network: Callable[[], DepthSource],
                 config: DepthConfig):
        """Start with no pose history and no network."""
        self.sweep = sweep
        self._make_network: Optional[Callable[[], DepthSource]] = make_network
        self.network: Optional[DepthSource] = None
        self.config = config
        self._T_world_ref: Optional[np.ndarray] = None
        self._still_frames = 0       # frames at the reference pose before the newest one
        #: the source that gave the newest frame's depth: 'plane_sweep', 'network' or ''
        self.active = ''
        #: frames given to each source since construction
        self.frames = {'plane_sweep': 0, 'network': 0}
        #: the camera is fixed by construction (``pose_source: static``): every frame is still
        self.fixed_mount = False

    @property
    def still(self) -> bool:
        """Whether the camera has held its pose for ``foreground_min_frames`` earlier frames.

        With :attr:`fixed_mount`, from the first frame with a pose on.
        """
        if self.fixed_mount:
            return self._T_world_ref is not None
        return self._still_frames >= self.config.foreground_min_frames

    def reset(self) -> None:
        """Forget the pose history and reset both sources."""
        self.sweep.reset()
        if self.network is not None:
            self.network.reset()
        self._T_world_ref = None
        self._still_frames = 0
        self.active = ''

    def _update_pose(self, T_world_cam: Optional[np.ndarray]) -> None:
        if T_world_cam is not None and self._T_world_ref is not None and within_still_limits(
                self._T_world_ref, T_world_cam, self.config):
            self._still_frames += 1
            return
        self._T_world_ref = T_world_cam
        self._still_frames = 0

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Return the network's depth for a still camera, else the sweep's (None without sources).

        :raises DepthInputError: as the source asked
        """
        self._update_pose(frame.T_world_cam)
        if self.still and self.network is None and self._make_network is not None:
            try:
                self.network = self._make_network()
            except (OSError, RuntimeError, ValueError) as exc:
                # a missing or broken depth checkpoint: say so once, keep the sweep
                LOG.warning('depth_source auto: the depth network cannot be loaded (%s); a '
                            'still camera gets the plane sweep only', exc)
                self._make_network = None
        choice = 'network' if self.still and self.network is not None else 'plane_sweep'
        if choice == 'network' and self.active != choice:
            LOG.info('depth_source auto: the camera has held its pose for %d frames; the '
                     'learned network gives its depth until it moves', self._still_frames)
        elif choice == 'plane_sweep' and self.active == 'network':
            LOG.info('depth_source auto: the camera moves; the plane sweep gives its depth')
        self.active = choice
        self.frames[choice] += 1
        if choice == 'network':
            return self.network.estimate(frame, sources)
        return self.sweep.estimate(frame, sources) if sources else None
