"""Depth of moving objects seen by a fixed camera: background difference and ground contact.

A camera that stays put has no parallax, so matching gives no depth, and a monocular network
mostly sees a person as the floor behind them. What such a camera has instead is time: the
colours of the same pixels over the last frames. While the pose stays the same,
:class:`ForegroundDepth` keeps those colours at the depth resolution; a pixel far from their
per-pixel median (the background) shows something that moved in. The objects that move across
a monitored cell or a street (people, carts, forklifts, vehicles) stand on the floor, so each
connected blob of such pixels is placed as an upright surface facing the camera, standing where
the blob's lowest pixels meet the ground plane z = 0 of ``world_frame``: the stixel model of
driving free-space estimation, with the foot point of monocular surveillance.

:class:`ForegroundDepthSource` lays that depth over any depth source's map; the pipeline wraps
every source but ``topic`` (a measured depth needs no guess) when ``foreground_depth`` is on.

Limits, by construction: blobs whose lowest pixel is not their contact with the floor (an arm
swinging in the air, feet hidden behind a table, an object cut by the image's lower edge, which
is left to the wrapped source) are placed too far away; shadows and lighting changes that pass
the threshold become upright surfaces too; an object that stays for
``foreground_absorb_frames`` becomes background.
"""

from collections import deque
import warnings
from dataclasses import dataclass
from typing import Deque, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.auto import within_still_limits
from l3rocc_core.depth.base import DepthSource, WrappedDepthSource
from l3rocc_core.depth.network import area_downsample
from l3rocc_core.depth.result import DepthResult
from l3rocc_core.frame import Frame

#: the confidence given to ground-contact depth (a geometric guess: the plane sweep's matches
#: have 0.5-1, the network's are its estimated chance of being within 10 %)
FOREGROUND_CONFIDENCE = 0.6
#: the background (two medians over the kept frames, the costly part: about 50 ms at 160x120
#: on one core) is recomputed every this many frames and reused in between
_BACKGROUND_EVERY = 4
#: per-pixel noise (median absolute deviation of the background frames) times this also
#: counts as no change, so flickering pixels (leaves, screens, sensor noise) stay background
_NOISE_FACTOR = 4.0
#: a shadow keeps between these shares of the background's brightness (darker is an object,
#: brighter is no shadow), and moves its chromaticity (r, g, b over their sum) by less than this
_SHADOW_RATIO = (0.3, 0.95)
_SHADOW_CHROMA = 0.08
#: and keeps the background's texture (patch correlation above this)
_SHADOW_NCC = 0.1
#: a frame in which more than this share of the pixels changed saw a change of light (or a
#: knocked camera), not objects: it gives no foreground
_MAX_MOVING_SHARE = 0.5


@dataclass
class Foreground:
    """Moving objects found in one frame, and their ground-contact depth.

    :param depth: float32 [H, W] z-depth in metres on the foreground blobs placed on the ground;
        0 elsewhere
    :param placed: bool [H, W]; True where ``depth`` holds a depth
    :param moving: bool [H, W]; every pixel that differs from the background (placed or not)
    :param camera: the camera of the maps (the depth resolution)
    """

    depth: np.ndarray
    placed: np.ndarray
    moving: np.ndarray
    camera: PinholeCamera


class ForegroundDepth:
    """Background of a still camera, and ground-contact depth of what moves in front of it.

    :param config: ``depth_downsample`` (the resolution), ``min_depth``/``max_depth``, and the
        ``foreground_*`` parameters
    """

    def __init__(self, config: DepthConfig):
        """Start with no background."""
        self.config = config
        # Colours of the last frames, NaN where the pixel showed a moving object (so a person
        # who stops is not absorbed into the background at once).
        self._images: Deque[np.ndarray] = deque(maxlen=config.foreground_history)
        self._background: Optional[np.ndarray] = None
        self._run: Optional[np.ndarray] = None
        self._noise: Optional[np.ndarray] = None
        self._age = 0            # frames since the background was computed
        self._T_world_cam: Optional[np.ndarray] = None

    def reset(self) -> None:
        """Forget the background (a new camera, a reset window)."""
        self._images.clear()
        self._background = None
        self._noise = None
        self._run = None
        self._T_world_cam = None

    def update(self, frame: Frame, camera: PinholeCamera) -> Optional[Foreground]:
        """Add ``frame`` to the background and return what moves in it.

        :param frame: the new frame; frames without a pose reset the background
        :param camera: the camera of the depth map (the frame's camera reduced by an integer
            factor)
        :return: the frame's foreground, or None while the camera has not stayed put for
            ``foreground_min_frames`` earlier frames (or has no pose)
        """
        T_world_cam = frame.T_world_cam
        factor = frame.camera.width // camera.width
        if (T_world_cam is None or factor < 1 or frame.camera.height // factor != camera.height):
            self.reset()
            return None
        image = area_downsample(frame.image, factor) * np.float32(1.0 / 255.0)
        if not self._still(T_world_cam) or (self._images
                                            and self._images[0].shape != image.shape):
            self.reset()
        self._T_world_cam = T_world_cam if self._T_world_cam is None else self._T_world_cam
        found, stored = None, image
        if len(self._images) >= self.config.foreground_min_frames:
            moving = self._moving(image)
            depth = ground_contact_depth(moving, camera, T_world_cam, self.config)
            found = Foreground(depth, depth > 0, moving, camera)
            # What moves stays out of the background until it has been there for
            # foreground_absorb_frames (then it is part of the scene: a parked cart, or the
            # uncovered background where something stood when the camera started).
            self._run = np.where(moving, self._run + 1, 0) if self._run is not None else (
                moving.astype(np.int64))
            hide = moving & (self._run <= self.config.foreground_absorb_frames)
            stored = np.where(hide[..., None], np.float32(np.nan), image)
        self._images.append(stored)
        return found

    def _median_background(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per-pixel median colour of the kept frames, and their flicker around it.

        :param image: float32 [H, W, 3], the colours used where every kept frame saw an
            object and no earlier background is known
        :return: (background float32 [H, W, 3], noise float32 [H, W]: the median absolute
            deviation of the kept frames' mean RGB difference)
        """
        stack = np.stack(self._images)                                 # [N, H, W, 3]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)            # all-NaN pixels
            background = np.nanmedian(stack, axis=0)
            unseen = np.isnan(background[..., 0])
            if unseen.any():
                # Moving in every kept frame: the last background known there, else the frame.
                fallback = self._background if self._background is not None else image
                background[unseen] = fallback[unseen]
            noise = np.nan_to_num(np.nanmedian(np.abs(stack - background).mean(-1), axis=0))
        return background.astype(np.float32), noise.astype(np.float32)

    def _still(self, T_world_cam: np.ndarray) -> bool:
        """Return whether the pose is that of the background's frames."""
        return self._T_world_cam is None or within_still_limits(self._T_world_cam, T_world_cam,
                                                                self.config)

    def _moving(self, image: np.ndarray) -> np.ndarray:
        """Pixels of ``image`` that differ from the background, as cleaned blobs.

        :param image: float32 [H, W, 3] in [0, 1]
        :return: bool [H, W]
        """
        if self._background is None or self._noise is None or self._age >= _BACKGROUND_EVERY:
            self._background, self._noise = self._median_background(image)
            self._age = 0
        self._age += 1
        background, noise = self._background, self._noise
        diff = np.abs(image - background).mean(-1)
        moving = diff > np.maximum(self.config.foreground_threshold, _NOISE_FACTOR * noise)
        moving &= ~cast_shadow(image, background)
        if moving.mean() > _MAX_MOVING_SHARE:
            # Light switched, exposure jumped, or the camera was knocked: no object is that big.
            return np.zeros_like(moving)
        # Single pixels and thin seams are noise; a person's silhouette has holes where their
        # clothes match the background.
        moving = ndimage.binary_opening(moving, iterations=1)
        moving = ndimage.binary_closing(moving, iterations=2)
        moving = ndimage.binary_fill_holes(moving)
        labels, count = ndimage.label(moving, structure=np.ones((3, 3), bool))
        if count == 0:
            return moving
        area = np.bincount(labels.ravel(), minlength=count + 1)
        keep = area >= self.config.foreground_min_area * moving.size
        keep[0] = False
        return keep[labels]


def cast_shadow(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels where ``image`` is the background in shadow: darker, with the same chromaticity.

    A shadow dims the light a surface gets but keeps its colour (the shadow test of
    background-subtraction surveillance): the brightness ratio lies in
    [:data:`_SHADOW_RATIO`], the chromaticity moves by less than :data:`_SHADOW_CHROMA`, and
    the background's texture shows through (:data:`_SHADOW_NCC`). Without it a person's shadow
    on the floor is an object of its own, or stretches the person's blob, and its contact with
    the floor, towards the camera.

    :param image: float32 [H, W, 3] in [0, 1]
    :param background: float32 [H, W, 3] in [0, 1]
    :return: bool [H, W]
    """
    eps = np.float32(1e-3)
    sum_i, sum_b = image.sum(-1) + eps, background.sum(-1) + eps
    ratio = sum_i / sum_b
    chroma = np.abs(image / sum_i[..., None] - background / sum_b[..., None]).sum(-1)
    lo, hi = _SHADOW_RATIO
    dimmed = (ratio >= lo) & (ratio <= hi) & (chroma < _SHADOW_CHROMA)
    # The floor's own pattern still shows through a shadow, not through a dark garment:
    # normalised cross-correlation of 5x5 intensity patches.
    a, b = image.mean(-1), background.mean(-1)
    mean_a, mean_b = ndimage.uniform_filter(a, 5), ndimage.uniform_filter(b, 5)
    cov = ndimage.uniform_filter(a * b, 5) - mean_a * mean_b
    var_a = np.maximum(ndimage.uniform_filter(a * a, 5) - mean_a ** 2, 0.0)
    var_b = np.maximum(ndimage.uniform_filter(b * b, 5) - mean_b ** 2, 0.0)
    ncc = cov / np.sqrt(var_a * var_b + 1e-8)
    return dimmed & (ncc > _SHADOW_NCC)


def ground_contact_depth(moving: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray,
                         config: DepthConfig) -> np.ndarray:
    """Depth of each blob of ``moving`` as an upright surface standing on the ground.

    Each 8-connected blob's contact is the mean column of its lowest two rows of pixels, on
    its lowest row; the contact's ray meets the ground z = 0 at a point P. The blob becomes the
    vertical plane through P whose normal is the horizontal direction from the camera to P, so
    a person or a cart is a billboard at the distance of where it stands. Blobs that touch the
    image's lower edge (the contact is not seen), whose contact ray does not go down to the
    ground within ``max_depth``, and pixels whose plane depth falls outside [``min_depth``,
    ``max_depth``] get no depth.

    :param moving: bool [H, W] foreground pixels
    :param camera: pinhole camera of ``moving``
    :param T_world_cam: float64 [4, 4] optical frame to world (z up, ground at z = 0)
    :param config: ``min_depth``, ``max_depth``
    :return: float32 [H, W] z-depth in metres, 0 where none
    """
    H, W = moving.shape
    depth = np.zeros((H, W), np.float32)
    labels, count = ndimage.label(moving, structure=np.ones((3, 3), bool))
    if count == 0:
        return depth
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols]
    bottom = np.full(count + 1, -1, np.int64)
    np.maximum.at(bottom, lab, rows)
    foot = rows >= bottom[lab] - 1
    n_foot = np.bincount(lab[foot], minlength=count + 1)
    u_foot = (np.bincount(lab[foot], weights=cols[foot], minlength=count + 1)
              / np.maximum(n_foot, 1))
    T = np.asarray(T_world_cam, np.float64)
    R, C = T[:3, :3], T[:3, 3]
    # Rays with z_cam = 1 in the world: a step s along them is a z-depth of s.
    ray_foot = np.stack([(u_foot - camera.cx) / camera.fx, (bottom - camera.cy) / camera.fy,
                         np.ones(count + 1)], -1) @ R.T                  # [L + 1, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        s_foot = -C[2] / ray_foot[:, 2]
    ok = ((bottom >= 0) & (bottom < H - 1) & (ray_foot[:, 2] < 0) & (C[2] > 0)
          & (s_foot >= config.min_depth) & (s_foot <= config.max_depth))
    ok[0] = False
    # Horizontal direction from the camera to each contact point, and its distance.
    reach = ray_foot[:, :2] * np.where(ok, s_foot, 0.0)[:, None]          # [L + 1, 2]
    dist = np.linalg.norm(reach, axis=1)
    ok &= dist > 1e-6
    normal = reach / np.maximum(dist, 1e-6)[:, None]
    px = np.stack([(cols - camera.cx) / camera.fx, (rows - camera.cy) / camera.fy,
                   np.ones(len(rows))], -1) @ R.T                          # [P, 3]
    facing = (px[:, :2] * normal[lab]).sum(1)
    with np.errstate(divide='ignore', invalid='ignore'):
        s = dist[lab] / facing
    good = ok[lab] & (facing > 1e-6) & (s >= config.min_depth) & (s <= config.max_depth)
    depth[rows[good], cols[good]] = s[good]
    return depth


class ForegroundDepthSource(WrappedDepthSource):
    """A depth source with the ground-contact depth of moving objects laid over its map.

    It works without window sources (a fixed camera has none), so
    :attr:`~DepthSource.requires_sources` is False even over the plane sweep: a frame without
    sources gets the wrapped source's depth when that source can give one, and the moving
    objects' depth in any case.

    :param source: the wrapped depth source
    :param foreground: the background model
    :param config: the depth stage's parameters (the depth camera when the wrapped source
        gives no map)
    """

    def __init__(self, source: DepthSource, foreground: ForegroundDepth, config: DepthConfig):
        """Wrap ``source``."""
        super().__init__(source)
        self.foreground = foreground
        self.config = config
        self.requires_sources = False

    def reset(self) -> None:
        """Forget the background and reset the wrapped source."""
        self.foreground.reset()
        super().reset()

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> Optional[DepthResult]:
        """Return the wrapped source's depth with the moving objects' depth over it.

        :return: the merged map; the wrapped source's result (possibly None) while there is no
            background
        :raises DepthInputError: as the wrapped source
        """
        base = None
        if sources or not self.source.requires_sources:
            base = self.source.estimate(frame, sources)
        camera = base.camera if base is not None else frame.camera.reduced(
            self.config.depth_downsample)
        found = self.foreground.update(frame, camera)
        if found is None or not found.placed.any():
            return base
        return merge_foreground(base, found)


def merge_foreground(base: Optional[DepthResult], found: Foreground) -> DepthResult:
    """Lay the placed foreground depth over ``base`` (or over nothing).

    :param base: the depth source's result at the foreground's resolution, or None
    :param found: the foreground of the same frame
    :return: depth, confidence and validity; foreground pixels take the ground-contact depth
        and :data:`FOREGROUND_CONFIDENCE`
    """
    device = base.depth.device if base is not None else torch.device('cpu')
    placed = torch.as_tensor(found.placed, device=device)
    depth = torch.as_tensor(found.depth, device=device)
    conf = torch.full_like(depth, FOREGROUND_CONFIDENCE)
    if base is None:
        zero = torch.zeros((), device=device)
        return DepthResult(depth, torch.where(placed, conf, zero), placed, found.camera)
    return DepthResult(torch.where(placed, depth, base.depth),
                       torch.where(placed, conf, base.confidence.to(torch.float32)),
                       base.valid | placed, base.camera)
