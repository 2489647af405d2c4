"""``refiner: network``: the trained temporal-attention network behind the refiner interface.

:class:`NetworkRefiner` runs :class:`~l3rocc_core.refiner.network.TemporalOccupancyNet` on the
window's evidence, as a window pass (every slice, every frame) or a newest pass (the new slice
from cached attention keys, plus one revisited slice); :func:`load_refiner` builds it from a
checkpoint (:mod:`.checkpoint`).
"""

import logging
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F

from l3rocc_core.device import resolve_device
from l3rocc_core.refiner.attention import exclude_attention_from_compile
from l3rocc_core.refiner.checkpoint import load_model
from l3rocc_core.refiner.interface import Refiner
from l3rocc_core.refiner.network import BUNDLED_CHECKPOINT, dilate_box, TemporalOccupancyNet

LOG = logging.getLogger(__name__)


class NetworkRefiner(Refiner):
    """``refiner: network``: evidence window -> occupancy probabilities with the trained network.

    :param model: the network (moved to ``device`` and put in eval mode)
    :param device: torch device
    :param metadata: the checkpoint's metadata (provenance, metrics)
    :param head_chunk: slices per full-resolution head pass (memory bound)
    :param support_voxels: occupancy is only kept within this many voxels of space observed in
        the window (-1 = everywhere); farther voxels come out 0
    :param update: ``network_update`` ('auto' | 'window' | 'newest')
    :param revisit_age: in ``newest`` mode, also re-estimate the slice this many frames old
        (``network_revisit_age``; 0 = off)
    :param compile_window: in ``window`` mode, run windows of this many slices through
        ``torch.compile`` (static shapes; other lengths, such as a stream's first frames, run
        eagerly); 0 = never. A compile that fails falls back to eager for good, with a warning
        and :attr:`compile_status` saying why.
    :param align_ground: present the layer of the grid that holds z = 0 at an odd index
        (``network_align_ground``; see :func:`ground_pad`)
    """

    def __init__(self, model: TemporalOccupancyNet, device: torch.device,
                 metadata: Optional[Dict[str, Any]] = None, head_chunk: int = 4,
                 support_voxels: int = 2, update: str = 'window',
                 compile_window: int = 0, revisit_age: int = 0,
                 align_ground: bool = False) -> None:
        """Prepare the model for inference."""
        self.align_ground = bool(align_ground)
        #: ``network_keep_evidence`` ('auto' | 'on' | 'off') and its log-odds bounds (hit >=,
        #: free <=; set by :meth:`keep_evidence`)
        self.keep_mode = 'off'
        self.keep_hit_logodds = math.inf
        self.keep_free_logodds = -math.inf
        #: whether the window's depth is measured (:meth:`set_measured_depth`)
        self.measured_depth = False
        self.support_voxels = int(support_voxels)
        self.revisit_age = int(revisit_age)
        #: whether the last :meth:`plan` chose a newest pass (else a window pass)
        self._newest_pass = False
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.metadata = dict(metadata or {})
        self.head_chunk = int(head_chunk)
        self.last_ms = 0.0
        self.update = resolve_update(update, self.device, self.model)
        #: Ring slots whose attention keys and values are in :attr:`_keys`
        #: (``update == 'newest'``).
        self._cached: Set[int] = set()
        #: float [X' * Y' * Z', R, 2W]: keys and values of ring slot r at [:, r] (valid for
        #: the slots in :attr:`_cached`); attention reads it in place.
        self._keys: Optional[torch.Tensor] = None
        #: (X', Y', Z') of the grid whose keys :attr:`_keys` holds.
        self._key_grid: Tuple[int, ...] = ()
        #: Window length the window pass is compiled for (0: never compiled).
        self.compile_window = int(compile_window) if self.update == 'window' else 0
        #: 'off'; 'ignored: ...' (asked for in newest mode); 'pending' (before the first
        #: compiled window); 'compiled'; or 'failed: why' (the network then runs eagerly).
        self.compile_status = 'pending' if self.compile_window > 0 else 'off'
        if compile_window and not self.compile_window:
            self.compile_status = f'ignored: network_update is {self.update}, not window'
            LOG.info('network_compile: %s', self.compile_status)
        self._compiled: Any = None
        self._strict: Dict[str, bool] = {}
        #: Input shapes the compiled graph has run for (a later error there is not a compile
        #: failure but a real one, and is raised).
        self._compiled_shapes: Set[Tuple[int, ...]] = set()

    name = 'network'

    def plan(self, slots: Sequence[int], cached: Set[int]) -> List[int]:
        """Return every slot (window pass), or in ``newest`` mode the revisited and newest.

        The newest pass needs an estimate of every older slice already (else: window pass).

        :param slots: ring slots of the window, oldest first
        :param cached: slots whose earlier estimate is still valid
        """
        slots = [int(s) for s in slots]
        self._newest_pass = self.update == 'newest' and all(k in cached for k in slots[:-1])
        if self._newest_pass:
            # Older slices keep the estimate they got when they were newest, except the one
            # ``revisit_age`` frames old, which is re-estimated with the newer evidence.
            return self.revisit_slots(slots, self.revisit_age) + slots[-1:]
        return slots

    def estimate(self, evidence: Any, slots: Sequence[int],
                 todo: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the pass the last :meth:`plan` chose: newest (cached keys) or the whole window.

        :return: p(occupied) [K, X, Y, Z] and observed [K, X, Y, Z] of ``todo``
        """
        slots, todo = [int(s) for s in slots], [int(s) for s in todo]
        pad = ground_pad(evidence.grid) if self.align_ground else 0

        def below(x: torch.Tensor) -> torch.Tensor:
            # ``pad`` unobserved layers (all features 0, as in training's z shifts) below z.
            return F.pad(x, (pad, 0)) if pad else x

        if not self._newest_pass:
            observed = evidence.observed()
            logodds = evidence.logodds()
            prob = self.refine(below(evidence.features()), below(logodds), below(observed))
            return self.keep_hits(prob[..., pad:], logodds, observed), observed
        logodds, observed = evidence.slots(todo)
        prob = self.refine_newest(slots, lambda need: below(evidence.slot_features(need)),
                                  below(observed), todo[:-1])
        return self.keep_hits(prob[..., pad:], logodds, observed), observed

    def keep_evidence(self, mode: str, hit_logodds: float, free_logodds: float) -> None:
        """Set ``network_keep_evidence``: where the network may not contradict the evidence.

        :param mode: 'on', 'off', or 'auto' (on while :attr:`measured_depth`)
        :param hit_logodds: log-odds at or above which a voxel's p may only be raised
            (``2 * logodds_hit``)
        :param free_logodds: log-odds at or below which it may only be lowered
            (``2 * logodds_miss``, negative)
        """
        if mode not in ('auto', 'on', 'off'):
            raise ValueError(f'network_keep_evidence must be auto, on or off, got {mode!r}')
        self.keep_mode = mode
        self.keep_hit_logodds = float(hit_logodds)
        self.keep_free_logodds = float(free_logodds)

    def set_measured_depth(self, measured: bool) -> None:
        """Say whether the depth fused into the window is measured (see :meth:`keep_hits`)."""
        self.measured_depth = bool(measured)

    def keep_hits(self, prob: torch.Tensor, logodds: torch.Tensor,
                  observed: torch.Tensor) -> torch.Tensor:
        """Return ``prob`` kept from contradicting strong evidence (``network_keep_evidence``).

        Where a slice's log-odds reach :attr:`keep_hit_logodds`, p = max(p, sigmoid(log-odds));
        where they fall to :attr:`keep_free_logodds`, p = min(p, sigmoid(log-odds)). Off
        (``prob`` unchanged) with mode 'off', or 'auto' with estimated depth.

        :param prob: float32 [K, X, Y, Z] the network's p(occupied)
        :param logodds: float [K, X, Y, Z] the same slices' fused log-odds
        :param observed: bool [K, X, Y, Z] their observed masks
        """
        if self.keep_mode == 'off' or (self.keep_mode == 'auto' and not self.measured_depth):
            return prob
        logodds = logodds.to(prob.device, torch.float32)
        observed = observed.to(prob.device)
        geometry = torch.sigmoid(logodds)
        hit = observed & (logodds >= self.keep_hit_logodds)
        free = observed & (logodds <= self.keep_free_logodds)
        prob = torch.where(hit, torch.maximum(prob, geometry), prob)
        return torch.where(free, torch.minimum(prob, geometry), prob)

    def forget(self, slot: Optional[int] = None) -> None:
        """Drop the cached keys of ``slot`` (rewritten), or of every slot (None)."""
        if slot is None:
            self._cached.clear()
            self._keys = None
            self._key_grid = ()
            self.model.release_scratch()
        else:
            self._cached.discard(int(slot))

    @staticmethod
    def revisit_slots(slots: Sequence[int], age: int) -> List[int]:
        """Return the slot ``network_revisit_age`` frames old that ``newest`` mode re-estimates.

        :param slots: ring slots of the window, oldest first (the newest last)
        :param age: frames old (1 = the newest); out of the window's range (or <= 1): none
        :return: ``[slot]`` or ``[]``
        """
        return [int(slots[-age])] if 1 < age <= len(slots) else []

    def refine_newest(self, slots: Sequence[int], slot_features: Any,
                      observed: torch.Tensor, revisit: Sequence[int] = ()) -> torch.Tensor:
        """Occupancy of the newest slice (and optionally some older ones) from cached keys.

        Slices new to the cache (the new one, or all after :meth:`forget`) are encoded in one
        batch and their attention keys and values kept; the other slices' keys come from the
        cache, so a frame encodes its new slice and the revisited ones (their encodings are
        not kept: keys and values are all the other slices contribute). Equal to the same
        slices of :meth:`refine` on the same window.

        :param slots: ring slots of the window, oldest first (the newest last)
        :param slot_features: callable(list of slots) -> float [k, C, X, Y, Z] features
        :param observed: bool [K, X, Y, Z] observed masks of the estimated slices (support),
            ``revisit`` order then the newest
        :param revisit: older slots of the window to re-estimate too (with the newer evidence
            the window has now), before the newest
        :return: float32 [K, X, Y, Z] p(occupied) of ``revisit`` then the newest, on
            :attr:`device`
        """
        start = time.perf_counter()
        slots = [int(v) for v in slots]
        targets = [int(v) for v in revisit] + slots[-1:]
        if any(k not in slots for k in targets) or len(set(targets)) != len(targets):
            raise ValueError(f'revisit slots {list(revisit)} must be distinct older slots of '
                             f'the window {slots}')
        grid = tuple((n + 1) // 2 for n in observed.shape[1:])
        if grid != self._key_grid:  # another grid (or the first): no cached key fits
            self.forget()
            self._key_grid = grid
        self._cached &= set(slots)
        with torch.inference_mode():
            todo = [k for k in slots if k not in self._cached]
            # The estimated slices first (in output order: slices of them, no gathering
            # copies), then slices only new to the cache.
            need = targets + [k for k in todo if k not in targets]
            feats = slot_features(need).to(self.device, torch.float32)
            c = len(self.feature_names)
            if feats.dim() != 5 or feats.shape[1] != c:
                raise ValueError(f'slot features must be [k, C={c}, X, Y, Z], got '
                                 f'{tuple(feats.shape)}')
            enc = self.model.encode_slices(feats)
            if todo:
                at = [need.index(k) for k in todo]
                contiguous = at == list(range(at[0], at[0] + len(at)))
                kv = self.model.slice_keys(enc[at[0]:at[-1] + 1] if contiguous else enc[at])
                self._ring(kv, max(slots) + 1).index_copy_(   # kv: [N, len(todo), 2W]
                    1, torch.tensor(todo, device=kv.device), kv)
                self._cached.update(todo)
            times: List[Optional[int]] = [None] * self._keys.shape[1]
            for i, k in enumerate(slots):
                times[k] = i
            encoded, chosen = enc[:len(targets)], feats[:len(targets)]
            # Outside the support the logits are -inf: p = 0 there, as in :meth:`refine`.
            logits = self.model.forward_slices_kv(
                encoded, self._keys, chosen, [slots.index(k) for k in targets], times,
                self.support_mask(observed) if self.support_voxels >= 0 else None)
            prob = torch.sigmoid(logits)
        self.last_ms = (time.perf_counter() - start) * 1e3
        return prob

    def _ring(self, kv: torch.Tensor, slots: int) -> torch.Tensor:
        """Return the key ring of the current grid, allocated or grown to ``slots`` slots.

        :param kv: float [N, n, 2W] keys of the slices being added (sets N and 2W)
        :param slots: ring slots needed (largest slot + 1)
        """
        ring = self._keys
        if ring is None or ring.shape[1] < slots:
            n, _, w2 = kv.shape
            grown = kv.new_zeros((n, slots, w2))
            if ring is not None:
                grown[:, :ring.shape[1]] = ring
            self._keys = ring = grown
        return ring

    def support_mask(self, observed: torch.Tensor) -> torch.Tensor:
        """Return bool [T, X, Y, Z]: True within ``support_voxels`` of observed voxels.

        The network completes surfaces next to what the camera saw (holes where texture is
        weak); it must not invent occupancy in space no ray of the window came near.
        """
        return dilate_box(observed.to(self.device, torch.bool), self.support_voxels)

    def support(self, observed: torch.Tensor) -> torch.Tensor:
        """Return float [T, X, Y, Z]: :meth:`support_mask` as 1 / 0."""
        return self.support_mask(observed).float()

    @property
    def feature_names(self) -> Tuple[str, ...]:
        """Input channel names the network expects, in order."""
        return self.model.config.feature_names

    def refine(self, features: torch.Tensor, logodds: torch.Tensor,
               observed: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities of the whole window in one batched pass.

        :param features: float [T, C, X, Y, Z] (channels :attr:`feature_names`)
        :param logodds: float [T, X, Y, Z] fused log-odds (used for the shape check; the
            network reads its own log-odds channel from ``features``)
        :param observed: bool [T, X, Y, Z] observed mask (shape check)
        :return: float32 [T, X, Y, Z] p(occupied) in [0, 1], on :attr:`device`
        """
        c = len(self.feature_names)
        if features.dim() != 5 or features.shape[1] != c:
            raise ValueError(f'features must be [T, C={c}, X, Y, Z], got '
                             f'{tuple(features.shape)}')
        shape = (features.shape[0],) + tuple(features.shape[2:])
        for name, a in (('logodds', logodds), ('observed', observed)):
            if tuple(a.shape) != shape:
                raise ValueError(f'{name} must be {list(shape)}, got {list(a.shape)}')
        start = time.perf_counter()
        with torch.inference_mode():
            x = features.to(self.device, torch.float32)[None]
            prob = torch.sigmoid(self._window_logits(x)[0])
            if self.support_voxels >= 0:
                prob = prob * self.support(observed)
        self.last_ms = (time.perf_counter() - start) * 1e3
        return prob

    def _window_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [1, T, X, Y, Z] of the window pass, compiled when T is ``compile_window``.

        An exception from the first compiled call of a shape is taken for a compiler failure
        (no C++ compiler, no Triton, an inductor bug, dynamo's recompile limit): the network
        runs eagerly from then on. Out-of-memory errors, and errors of a graph that has run
        before, are raised.
        """
        if self.compile_window > 0 and x.shape[1] == self.compile_window:
            import torch._dynamo

            if self._compiled is None:
                exclude_attention_from_compile()
                # Static shapes: one graph per grid; dynamic ones fail in inductor (torch 2.13).
                self._compiled = torch.compile(self.model, dynamic=False)
                # past dynamo's recompile limit: an error here, not a silent eager fallback
                # (where this torch has the switch)
                self._strict = ({'fail_on_recompile_limit_hit': True}
                                if hasattr(torch._dynamo.config, 'fail_on_recompile_limit_hit')
                                else {})
            shape = tuple(x.shape)
            try:
                with torch._dynamo.config.patch(**self._strict):
                    logits = self._compiled(x, head_chunk=self.head_chunk)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: B902 - any compiler failure: run eagerly instead
                if shape in self._compiled_shapes:
                    raise
                lines = str(exc).strip().splitlines()
                why = f'{type(exc).__name__}: {lines[0][:200] if lines else ""}'
                self.compile_window, self._compiled = 0, None
                self.compile_status = f'failed: {why}'
                LOG.warning('network_compile: torch.compile failed (%s); the network runs '
                            'eagerly from now on', why)
            else:
                self._compiled_shapes.add(shape)
                self.compile_status = 'compiled'
                return logits
        return self.model(x, head_chunk=self.head_chunk)

    def warm_up(self, dims: Sequence[int]) -> float:
        """Compile the window pass for a grid of ``dims`` (X, Y, Z) now, on an empty window.

        Without it the first full window pays the compile (seconds). Nothing is cached but
        torch's compiled graph. Out of memory here (CUDA) is logged and left to the first
        full window (status stays 'pending').

        :return: seconds spent (0 when not compiling)
        """
        if self.compile_window <= 0:
            return 0.0
        start = time.perf_counter()
        shape = (self.compile_window,) + tuple(int(n) for n in dims)
        try:
            empty = torch.zeros(shape, device=self.device)
            features = torch.zeros((shape[0], len(self.feature_names)) + shape[1:],
                                   device=self.device)
            self.refine(features, empty, empty.bool())
        except torch.OutOfMemoryError as exc:
            empty = features = None
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()
            LOG.warning('network_compile: out of memory while compiling (%s); trying again '
                        'on the first full window', str(exc).splitlines()[0][:200])
        return time.perf_counter() - start


def ground_pad(grid: Any) -> int:
    """Return the unobserved layers (0 or 1) to add below ``grid`` for the network.

    The network's encoder pairs z layers (2 x 2 x 2, stride 2), so it sees a floor differently
    in an even and an odd layer. Measured with the shipped checkpoint, it does far better with
    the ground layer (the layer just below z = 0 of ``world_frame``, where ground truth puts
    the floor) at an odd index, as on the grids of its training scenes (grid_min z = -0.1 m,
    5 cm voxels: layer 1), than at an even one (docs/refiner.md). One layer added below moves
    an even index to an odd one. Grids whose z range does not reach the ground (within a
    layer) are left as they are: nothing was measured there.

    :param grid: the evidence grid (``origin``, ``voxel_size``, ``dims``)
    :return: 1 when the ground layer lies in the grid at an even index, else 0
    """
    k0 = math.floor((-1e-6 - float(grid.origin[2])) / float(grid.voxel_size))
    if not -1 <= k0 <= int(grid.dims[2]):
        return 0
    return 1 if k0 % 2 == 0 else 0


#: ``network_update`` values: ``window`` re-estimates every slice each frame, ``newest`` only
#: the newest slice (older ones keep the estimate they got when they were newest), ``auto``
#: picks ``window`` on CUDA and ``newest`` on the CPU.
UPDATES = ('auto', 'window', 'newest')


def resolve_update(update: str, device: torch.device, model: TemporalOccupancyNet) -> str:
    """Return 'window' or 'newest' for a ``network_update`` value.

    :raises ValueError: unknown value
    """
    if update not in UPDATES:
        raise ValueError(f'network_update must be one of {list(UPDATES)}, got {update!r}')
    if update == 'auto':
        update = 'window' if torch.device(device).type == 'cuda' else 'newest'
    if update == 'newest' and not model.streams:
        return 'window'  # several attention blocks: the newest slice needs them all
    return update


def load_refiner(refiner_config: Any, device: Any = 'auto',
                 feature_names: Optional[Sequence[str]] = None,
                 window_size: int = 0) -> NetworkRefiner:
    """Load the refiner network named by the configuration (empty checkpoint = bundled one).

    :param refiner_config: a ``RefinerConfig`` (``checkpoint``, ``device``) or a checkpoint path
    :param device: 'auto' | 'cpu' | 'cuda' | torch.device; 'auto' defers to
        ``refiner_config.device`` and then to CUDA when present
    :param feature_names: the channels the caller will pass; default
        ``l3rocc_core.fusion.FEATURE_NAMES``; must equal the checkpoint's
    :param window_size: the window length to compile for when ``network_compile`` is set
    :raises CheckpointError: missing, corrupt, unsafe or incompatible checkpoint
    """
    if isinstance(refiner_config, (str, os.PathLike)):
        path, cfg_device = str(refiner_config), 'auto'
    else:
        path = getattr(refiner_config, 'checkpoint', '') or ''
        cfg_device = getattr(refiner_config, 'device', 'auto')
    path = path or BUNDLED_CHECKPOINT
    if (device is None or device == 'auto') and cfg_device != 'auto':
        device = cfg_device
    dev = resolve_device(device)
    if feature_names is None:
        feature_names = _fusion_feature_names()
    model, meta = load_model(path, map_location='cpu', feature_names=feature_names)
    support = int(getattr(refiner_config, 'network_support_voxels', 2))
    update = str(getattr(refiner_config, 'network_update', 'window'))
    compile_window = 0
    if getattr(refiner_config, 'network_compile', False):
        if window_size <= 0:
            LOG.warning('network_compile: no window_size given to load_refiner; not compiling')
        compile_window = max(int(window_size), 0)
    return NetworkRefiner(model, dev, meta, support_voxels=support, update=update,
                          compile_window=compile_window,
                          revisit_age=int(getattr(refiner_config, 'network_revisit_age', 0)),
                          align_ground=bool(getattr(refiner_config, 'network_align_ground',
                                                    False)))


def _fusion_feature_names() -> Optional[Tuple[str, ...]]:
    """``l3rocc_core.fusion.FEATURE_NAMES`` when the fusion module exists, else None."""
    try:
        from l3rocc_core import fusion
    except ImportError:
        return None
    names = getattr(fusion, 'FEATURE_NAMES', None)
    return tuple(names) if names is not None else None


__all__ = ['NetworkRefiner', 'load_refiner', 'UPDATES', 'resolve_update']
