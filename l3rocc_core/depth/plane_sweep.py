"""Multi-view depth by plane sweep: fronto-parallel planes, ZNCC, multi-source aggregation.

For a reference frame and 1..N source frames with known poses (``T_world_cam``, camera to world,
optical frame x right, y down, z forward), every pixel of the reference image is tested against
``num_depth_planes`` fronto-parallel planes spaced uniformly in inverse depth between
``min_depth`` and ``max_depth``:

1. Images are converted to grey and reduced by ``depth_downsample`` (area average). The depth map
   comes out at that reduced resolution (160x120 for the default 320x240 working images), with
   the matching :class:`~l3rocc_core.camera.PinholeCamera` in
   :class:`~l3rocc_core.depth.result.DepthResult`.
2. Each frame is normalised once per ``match_window_px`` window (zero mean, unit deviation,
   deviation floored at ``min_texture``) and cached: gain and offset changes between views
   cancel.
3. Each source is warped onto every plane at once with the plane-induced homography (one
   ``grid_sample`` per source; planes batched, zero outside the image).
4. Photometric cost per source: 1 - ZNCC of the normalised images over ``match_window_px``
   windows (box filters), clamped to [0, 1]. A window out of the source's view correlates 0 and
   costs 1, the same as a mismatch, so an occluded or out-of-view source cannot veto a plane.
5. The costs of the sources are averaged, leaving out the worst source of every plane and pixel
   when there are three or more (a source occluded there cannot spoil the match), then smoothed
   per plane by a 7x7 box filter (cost aggregation).
6. Winner-take-all in inverse depth with a parabola fit around the minimum (sub-plane depth).
7. Confidence = distinctiveness of the minimum (cost gap to the best plane outside its
   neighbours; a gap of ``_GAP_FULL`` counts as certain) x (1 + multi-view consistency) / 2, where
   consistency is the share of the sources that see the pixel whose own minimum lies within
   ``_AGREE_PLANES`` planes of the chosen one. Pixels are invalid where the reference is
   untextured (local std < ``min_texture``), where the sources' mean ZNCC at the chosen plane is
   below ``_MIN_ZNCC`` (no real match: e.g. a surface beyond ``max_depth``), where
   the refined minimum lies within one plane of either end of the range (the true depth may be
   outside it), or where the confidence is below ``min_confidence``.
8. Motion blur: a reference whose sharpness (mean squared Laplacian of the grey working image)
   falls below ``blur_reject_ratio`` times the median of the last ``_SHARPNESS_HISTORY``
   references gets an all-invalid result. A blurred image matches its sharp sources at wrong
   depths over whole regions (on TUM fr1/xyz the blurred frames 31-33 dropped the newest-slice
   IoU of frames 33-36 from ~0.6 to ~0.5; skipping their depth keeps the fused map instead).
   The history restarts when the stamp goes back or the camera changes.

Everything is torch on the estimator's device (float32; the 4x4 relative poses are formed in
float64 numpy); loops run over sources and window offsets only.
"""

from collections import deque, OrderedDict
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from l3rocc_core.camera import CameraModelError, PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.result import DepthInputError, DepthResult
from l3rocc_core.frame import Frame

__all__ = ['DepthInputError', 'DepthResult', 'PlaneSweepDepth', 'box_mean', 'box_sum']

_GREY = (0.299, 0.587, 0.114)
_CACHE_FRAMES = 48          # prepared frames kept (sources are reused across calls)
_AGG_RADIUS = 3             # cost aggregation box radius (pixels of the depth map)
_AGREE_PLANES = 2           # a source agrees when its own minimum is within this many planes
_PEAK_EXCLUDE = 1           # planes either side of the minimum left out of the second-best cost
_GAP_FULL = 0.16            # cost gap to the second-best plane that counts as full confidence
_MIN_PARALLAX_PX = 1.0      # sources shifting the image by less across all planes are not used
_MIN_ZNCC = 0.5             # the chosen plane's mean ZNCC must reach this (a real match)
_SHARPNESS_HISTORY = 16     # references whose median sharpness is the blur test's reference
_SHARPNESS_MIN_HISTORY = 3  # with fewer references in the history no frame counts as blurred
_EPS = 1e-6


@dataclass
class _Prepared:
    """A frame reduced to the sweep's resolution, with its window statistics."""

    image: np.ndarray       # the frame's image (identity check of the cache)
    camera: PinholeCamera   # camera of the reduced image
    std: torch.Tensor       # float32 [h, w] window standard deviation of the grey image
    norm: torch.Tensor      # float32 [h, w] (grey - window mean) / std, std >= min_texture
    energy: torch.Tensor    # float32 [h, w] window mean of norm^2
    sharpness: float        # mean squared Laplacian of the grey working image (blur test)


def box_sum(x: torch.Tensor, radius: int, out: Optional[torch.Tensor] = None,
            tmp: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over a (2 radius + 1)^2 window, zero outside the image, by separable shifted adds.

    Faster than ``avg_pool2d`` on CPU for stacks of images.

    :param x: float32 [..., H, W]
    :param radius: half window in pixels (0 returns a copy of ``x``)
    :param out: optional result buffer shaped like ``x`` (not ``x`` itself)
    :param tmp: optional scratch buffer shaped like ``x`` (not ``x`` or ``out``)
    :return: float32 [..., H, W] (``out`` when given)
    """
    t = torch.empty_like(x) if out is None else out
    if radius <= 0:
        return t.copy_(x)
    s = torch.empty_like(x) if tmp is None else tmp
    torch.add(x[..., 1:], x[..., :-1], out=s[..., 1:])
    s[..., 0] = x[..., 0]
    s[..., :-1] += x[..., 1:]
    for i in range(2, radius + 1):
        s[..., i:] += x[..., :-i]
        s[..., :-i] += x[..., i:]
    torch.add(s[..., 1:, :], s[..., :-1, :], out=t[..., 1:, :])
    t[..., 0, :] = s[..., 0, :]
    t[..., :-1, :] += s[..., 1:, :]
    for i in range(2, radius + 1):
        t[..., i:, :] += s[..., :-i, :]
        t[..., :-i, :] += s[..., i:, :]
    return t


def box_mean(x: torch.Tensor, radius: int, count: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over a (2 radius + 1)^2 window (see :func:`box_sum`).

    :param x: float32 [..., H, W]
    :param radius: half window in pixels
    :param count: float32 [H, W] in-image pixels per window (the borders' mean then covers only
        the image); default divides by the full window size
    :return: float32 [..., H, W]
    """
    s = box_sum(x, radius)
    if count is None:
        return s.mul_(1.0 / float((2 * radius + 1) ** 2))
    return s.div_(count)


class PlaneSweepDepth(DepthSource):
    """Multi-view plane-sweep depth for a reference frame against source frames.

    Prepared (grey, normalised) frames are cached by identity of their image (do not modify a
    frame's image in place), so window frames reused as sources cost nothing after their first
    use. Work buffers are reused between calls: one ``estimate`` at a time per instance.

    :param config: depth parameters (planes, window, thresholds, ``depth_downsample``)
    :param device: torch device the estimation runs on ('cpu', 'cuda', ...)
    """

    name = 'plane_sweep'
    uses_sources = True
    requires_sources = True

    def __init__(self, config: DepthConfig, device: Union[str, torch.device] = 'cpu'):
        """Check the parameters and set up the caches."""
        if config.min_depth <= 0 or config.min_depth >= config.max_depth:
            raise ValueError(f'need 0 < min_depth < max_depth, got {config.min_depth}, '
                             f'{config.max_depth}')
        if config.match_window_px % 2 != 1:
            raise ValueError(f'match_window_px must be odd, got {config.match_window_px}')
        if config.num_depth_planes < 3:
            raise ValueError(f'num_depth_planes must be >= 3, got {config.num_depth_planes}')
        if config.depth_downsample < 1:
            raise ValueError(f'depth_downsample must be >= 1, got {config.depth_downsample}')
        self.config = config
        self.device = torch.device(device)
        self.radius = config.match_window_px // 2
        # Inverse depths of the planes, nearest first.
        self.inv_depths = torch.linspace(1.0 / config.min_depth, 1.0 / config.max_depth,
                                         config.num_depth_planes, dtype=torch.float32,
                                         device=self.device)
        self._frames: 'OrderedDict[Tuple, _Prepared]' = OrderedDict()
        self._rays: Dict[Tuple, torch.Tensor] = {}
        self._counts: Dict[Tuple, torch.Tensor] = {}
        self._buffers: Dict[str, torch.Tensor] = {}
        self._sharpness: Deque[float] = deque(maxlen=_SHARPNESS_HISTORY)
        self._last_ref: Optional[Tuple[int, PinholeCamera, bool]] = None
        #: references rejected as motion-blurred since construction
        self.blurred_frames = 0

    def estimate(self, ref: Frame, sources: Sequence[Frame]) -> DepthResult:
        """Depth of ``ref`` from its photo-consistency with ``sources``.

        :param ref: the reference frame (pose required)
        :param sources: frames with poses and the same image size as ``ref``; none, or only
            sources without parallax, give an all-invalid result
        :return: depth, confidence and validity at the sweep resolution (``result.camera``)
        :raises DepthInputError: a frame without pose or with another image size than ``ref``
        """
        self._check(ref, sources)
        r = self._prepare(ref)
        cam = r.camera
        if self._is_blurred(ref, r):
            return DepthResult.invalid(cam, self.device)
        h, w = cam.height, cam.width
        D = self.config.num_depth_planes
        rays = self._pixel_rays(cam)                                  # [3, N]
        n = h * w
        # Work buffers live across calls: no large allocation (and page faults) per frame.
        products = self._buffer('products', (2, D, h, w))
        sums = self._buffer('sums', (2, D, h, w))
        scratch = self._buffer('scratch', (2, D, h, w))
        cost = self._buffer('cost', (D, h, w))                       # sum over sources
        worst = self._buffer('worst', (D, h, w))                     # max over sources
        # ZNCC of the normalised images = sum(s r) / sqrt(sum(s^2) sum(r^2)) over each window.
        ref_energy = r.energy * float((2 * self.radius + 1) ** 2)
        per_source: List[torch.Tensor] = []                           # [D, h, w] each
        for src in sources:
            s = self._prepare(src)
            grid = self._warp_grid(ref, src, s.camera, rays, self._buffer('grid', (D, 2 * n)),
                                   self._buffer('den', (D, 2 * n)))
            if grid is None:
                continue
            warped = F.grid_sample(s.norm[None, None], grid[None], mode='bilinear',
                                   padding_mode='zeros', align_corners=True)[0, 0]
            warped = warped.view(D, h, w)
            torch.mul(warped, r.norm, out=products[0])
            torch.mul(warped, warped, out=products[1])
            box_sum(products, self.radius, sums, scratch)
            norm = sums[1].clamp_min_(_EPS).mul_(ref_energy).rsqrt_()
            c = torch.mul(sums[0], norm, out=self._buffer(f'cost{len(per_source)}', (D, h, w)))
            c.neg_().add_(1.0).clamp_(0.0, 1.0)                       # 1 - ZNCC in [0, 1]
            if per_source:
                cost.add_(c)
                torch.maximum(worst, c, out=worst)
            else:
                cost.copy_(c)
                worst.copy_(c)
            per_source.append(c)
        if not per_source:
            return DepthResult.invalid(cam, self.device)
        if len(per_source) >= 3:
            # Leave out the worst source of every plane and pixel (occlusion, motion, glare).
            cost.sub_(worst).mul_(1.0 / (len(per_source) - 1))
        else:
            cost.mul_(1.0 / len(per_source))
        cost = box_sum(cost, _AGG_RADIUS, self._buffer('aggregated', (D, h, w)),
                       worst).div_(self._count(h, w, _AGG_RADIUS))
        return self._select(cost, per_source, r, cam)

    def _select(self, cost: torch.Tensor, per_source: Sequence[torch.Tensor], r: _Prepared,
                cam: PinholeCamera) -> DepthResult:
        """Winner-take-all with sub-plane refinement, confidence and validity.

        :param cost: float32 [D, h, w] aggregated cost in [0, 1] (0 = perfect match)
        :param per_source: float32 [D, h, w] cost of each source in [0, 1]
        """
        cfg = self.config
        D = cost.shape[0]
        zero = torch.zeros((), device=self.device)
        c0, idx = cost.min(0)                                         # [h, w]
        offsets = torch.arange(-1, 2, device=self.device)[:, None, None]
        near = (idx[None] + offsets).clamp_(0, D - 1)                 # [3, h, w]
        cm, _, cp = cost.gather(0, near)
        curv = cm - 2.0 * c0 + cp
        offset = (0.5 * (cm - cp) / curv.clamp_min(_EPS)).clamp_(-0.5, 0.5)
        offset = torch.where(curv > _EPS, offset, zero)
        # A minimum on (or leaning onto) the first or last plane may lie outside the range.
        position = idx + offset
        interior = (position >= 1.0) & (position <= D - 2.0)
        step = self.inv_depths[1] - self.inv_depths[0]
        depth = 1.0 / (self.inv_depths[idx] + offset * step).clamp_min(_EPS)

        # Distinctiveness: the gap to the best plane outside the minimum's neighbours.
        offsets = torch.arange(-_PEAK_EXCLUDE, _PEAK_EXCLUDE + 1, device=self.device)
        excluded = (idx[None] + offsets[:, None, None]).clamp_(0, D - 1)
        c2 = cost.scatter(0, excluded, 2.0).amin(0)
        distinct = ((c2 - c0) / _GAP_FULL).clamp_(0.0, 1.0)
        # Multi-view consistency: a source that matches at the chosen plane (cost < 1) agrees
        # when its own minimum lies within _AGREE_PLANES of the chosen plane.
        offsets = torch.arange(-_AGREE_PLANES, _AGREE_PLANES + 1, device=self.device)
        around = (idx[None] + offsets[:, None, None]).clamp_(0, D - 1)
        n_agree = torch.zeros_like(c0)
        n_seen = torch.zeros_like(c0)
        for c in per_source:
            sees = c.gather(0, idx[None])[0] < 1.0
            n_seen += sees
            n_agree += sees & (c.gather(0, around).amin(0) <= c.amin(0))
        consistency = n_agree / n_seen.clamp_min(1.0)
        confidence = distinct * (0.5 + 0.5 * consistency)

        usable = (r.std >= cfg.min_texture) & (n_seen > 0) & interior & (c0 <= 1.0 - _MIN_ZNCC)
        confidence = torch.where(usable, confidence, zero)
        valid = usable & (confidence >= cfg.min_confidence) & (confidence > 0)
        depth = torch.where(valid, depth, zero)
        return DepthResult(depth, confidence, valid, cam)

    def _is_blurred(self, ref: Frame, r: _Prepared) -> bool:
        """Whether ``ref`` is much blurrier than the recent references (see step 8).

        The same reference again (same stamp) gets the same answer and is not counted twice.
        """
        last = self._last_ref
        if last is not None:
            if ref.stamp_ns == last[0] and r.camera == last[1]:
                return last[2]
            if ref.stamp_ns < last[0] or r.camera != last[1]:
                self._sharpness.clear()
        ratio = self.config.blur_reject_ratio
        history = self._sharpness
        blurred = (ratio > 0.0 and len(history) >= _SHARPNESS_MIN_HISTORY
                   and r.sharpness < ratio * float(np.median(np.asarray(history))))
        history.append(r.sharpness)
        self._last_ref = (int(ref.stamp_ns), r.camera, blurred)
        self.blurred_frames += int(blurred)
        return blurred

    def _warp_grid(self, ref: Frame, src: Frame, cam_s: PinholeCamera, rays: torch.Tensor,
                   out: torch.Tensor, den: torch.Tensor) -> Optional[torch.Tensor]:
        """Return the sampling grid of ``src`` for every plane and pixel of ``ref``.

        A reference pixel with ray ``x`` (z = 1) on the plane at inverse depth ``q`` is the point
        ``x / q``; in the source, ``K_s (R x / q + t) ~ K_s R x + q K_s t``: linear in ``q``.
        Points behind the source camera land far outside the image.

        :param rays: float32 [3, N] reference pixel rays
        :param out: float32 [D, 2N] buffer for the result
        :param den: float32 [D, 2N] scratch buffer
        :return: float32 [D, N, 2] ``grid_sample`` coordinates (align_corners=True), or None
            when the source adds no parallax (same position, or under a pixel of shift)
        """
        T_src_ref = np.linalg.solve(src.T_world_cam, ref.T_world_cam)   # float64 4x4
        t = T_src_ref[:3, 3]
        if not np.all(np.isfinite(T_src_ref)) or np.linalg.norm(t) < 1e-9:
            return None
        w, h = cam_s.width, cam_s.height
        to_grid = np.array([[2.0 / max(w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(h - 1, 1), -1.0],
                            [0.0, 0.0, 1.0]])
        P = to_grid @ cam_s.K
        M = P @ T_src_ref[:3, :3]
        m = P @ t
        # Parallax: pixel shift between the nearest and the farthest plane (sampled pixels).
        x = rays[:, ::97].double().cpu().numpy()
        q = self.inv_depths[[0, -1]].double().cpu().numpy()
        a = M @ x
        uv = [(a[:2] + qi * m[:2, None]) / np.maximum(a[2] + qi * m[2], 1e-4) for qi in q]
        shift = np.hypot(*((uv[0] - uv[1]) * np.array([[0.5 * (w - 1)], [0.5 * (h - 1)]])))
        if float(np.median(shift)) < _MIN_PARALLAX_PX:
            return None
        # Interleaved (u, v) layout [D, 2N], so that every operation runs over long rows.
        a = torch.as_tensor(M, dtype=torch.float32, device=self.device) @ rays   # [3, N]
        n = a.shape[1]
        num0 = a[:2].T.reshape(1, 2 * n)                              # u0 v0 u1 v1 ...
        den0 = a[2:3].T.expand(n, 2).reshape(1, 2 * n)                # z0 z0 z1 z1 ...
        m_uv = torch.as_tensor(m[:2], dtype=torch.float32, device=self.device).repeat(n)
        q = self.inv_depths[:, None]                                  # [D, 1]
        torch.addcmul(den0, q, torch.tensor(float(m[2]), device=self.device), out=den)
        grid = torch.addcmul(num0, q, m_uv[None], out=out).div_(den.clamp_min_(1e-4))
        return grid.view(-1, n, 2)

    def _check(self, ref: Frame, sources: Sequence[Frame]) -> None:
        """Reject frames without pose or with image sizes that differ from the reference."""
        shape = ref.image.shape
        for role, f in [('reference', ref)] + [('source', s) for s in sources]:
            if not isinstance(f, Frame):
                raise DepthInputError(f'{role} must be a Frame, got {type(f).__name__}')
            if f.T_world_cam is None:
                raise DepthInputError(f'{role} frame at {f.stamp_ns} ns has no pose')
            if f.image.shape != shape:
                raise DepthInputError(f'{role} image {f.image.shape} differs from the reference '
                                      f'{shape}')

    def _prepare(self, frame: Frame) -> _Prepared:
        """Grey, reduced image and window statistics of ``frame`` (cached per frame)."""
        key = (frame.stamp_ns, frame.frame_id, frame.image.shape, id(frame.image))
        hit = self._frames.get(key)
        if hit is not None and hit.image is frame.image:
            self._frames.move_to_end(key)
            return hit
        f = self.config.depth_downsample
        cam = frame.camera
        try:
            small = cam.reduced(f)
        except CameraModelError as exc:
            raise DepthInputError(f'depth_downsample {f}: {exc}') from exc
        H, W = small.height * f, small.width * f
        image = frame.image[:H, :W]
        if not image.flags.writeable:   # e.g. a decoded message's buffer: torch warns on it
            image = image.copy()
        rgb = torch.as_tensor(image, device=self.device)
        weights = torch.tensor(_GREY, dtype=torch.float32, device=self.device) / 255.0
        gray = (rgb.float() @ weights)[None, None]
        lap = (gray[..., 1:-1, :-2] + gray[..., 1:-1, 2:] + gray[..., :-2, 1:-1]
               + gray[..., 2:, 1:-1] - 4.0 * gray[..., 1:-1, 1:-1])
        sharpness = float(lap.square().mean()) if lap.numel() else 0.0
        if f > 1:
            gray = F.avg_pool2d(gray, f)
        gray = gray[0, 0].contiguous()
        count = self._count(small.height, small.width, self.radius)
        stats = box_mean(torch.stack([gray, gray * gray]), self.radius, count)
        std = (stats[1] - stats[0] * stats[0]).clamp_min(0.0).sqrt()
        norm = (gray - stats[0]) / std.clamp_min(max(self.config.min_texture, _EPS))
        energy = box_mean(norm * norm, self.radius).clamp_min(_EPS)
        prepared = _Prepared(frame.image, small, std, norm, energy, sharpness)
        self._frames[key] = prepared
        while len(self._frames) > _CACHE_FRAMES:
            self._frames.popitem(last=False)
        return prepared

    def _pixel_rays(self, cam: PinholeCamera) -> torch.Tensor:
        """float32 [3, N]: rays (z = 1) of all pixels, row-major; cached per camera."""
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        rays = self._rays.get(key)
        if rays is None:
            rays = torch.as_tensor(cam.pixel_rays().reshape(-1, 3).T.copy(),
                                   device=self.device)
            self._rays[key] = rays
        return rays

    def _buffer(self, name: str, shape: Tuple[int, ...]) -> torch.Tensor:
        """float32 work buffer ``name`` of ``shape``, kept between calls (contents undefined)."""
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = torch.empty(shape, dtype=torch.float32, device=self.device)
            self._buffers[name] = buf
        return buf

    def _count(self, h: int, w: int, radius: int) -> torch.Tensor:
        """float32 [h, w]: how many pixels of each window lie inside the image (cached)."""
        key = (h, w, radius)
        c = self._counts.get(key)
        if c is None:
            c = box_sum(torch.ones((h, w), dtype=torch.float32, device=self.device), radius)
            self._counts[key] = c
        return c
