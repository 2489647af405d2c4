"""Learned depth: a small U-Net on the image, the camera's geometry and the plane sweep.

:class:`NetworkDepth` (``depth_source: network``) gives every frame a metric depth map and a
confidence at the plane sweep's resolution (working resolution / ``depth_downsample``), with or
without window sources and with or without a pose. Per pixel of that resolution the network sees
(:func:`input_channels`, :data:`CHANNELS`):

- ``r, g, b``: the image, area-averaged, scaled to [-1, 1];
- ``ray_x, ray_y``: the pixel's normalised ray ``(u - cx) / fx``, ``(v - cy) / fy`` (the lens's
  field of view);
- ``ground``, ``ground_mask``: the ground-plane prior from the pose: where the pixel's ray goes
  down and meets the world plane z = 0 within ``prior_max_depth``, the depth code
  (:func:`encode_depth`) of that point and 1, else 0 and 0;
- ``elevation``: the sine of the ray's elevation in the world (the camera's pitch and roll);
- ``has_pose``: 1 with a pose, 0 without (then the three geometry channels above are 0);
- ``sweep``, ``sweep_conf``: the plane sweep on the window sources, the depth code and its
  confidence where it is valid, 0 elsewhere and when there are no sources (fixed camera,
  first frame) or no pose.

The network outputs inverse depth (a sigmoid between ``1 / max_depth`` and ``1 / min_depth`` of
the model, 0.2-80 m for the shipped one, interpolated geometrically: the sigmoid's value is the
depth code, the same code the depth-valued inputs use) and a confidence logit,
trained as the probability that the depth is within 10 % (:mod:`l3rocc_core.depth.train`).
The shipped weights are ``checkpoints/default.pt`` beside this file, loaded with
``torch.load(weights_only=True)``.
"""

from dataclasses import dataclass
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.result import DepthInputError, DepthResult
from l3rocc_core.frame import Frame

#: input channels, in order
CHANNELS = ('r', 'g', 'b', 'ray_x', 'ray_y', 'ground', 'ground_mask', 'elevation', 'has_pose',
            'sweep', 'sweep_conf')
#: the shipped checkpoint
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'checkpoints',
                                  'default.pt')
#: the network's architecture and output range unless a checkpoint says otherwise
DEFAULT_NET = {'in_channels': len(CHANNELS), 'widths': [16, 24, 40, 64], 'min_depth': 0.2,
               'max_depth': 80.0, 'prior_max_depth': 60.0}
_MULTIPLE = 8     # the input is padded to a multiple of this (three 2x downsamplings)
_PRIOR_EPS = 0.02  # the prior's code is kept this far from 0 and 1 before its logit
_SWEEP, _SWEEP_CONF = CHANNELS.index('sweep'), CHANNELS.index('sweep_conf')
_GROUND, _GROUND_MASK = CHANNELS.index('ground'), CHANNELS.index('ground_mask')


def reduced_camera(camera: PinholeCamera, factor: int) -> PinholeCamera:
    """Return the camera of an image area-averaged by ``factor`` (the sweep's depth camera).

    :param camera: camera of the working image
    :param factor: integer reduction (``depth_downsample``)
    """
    W, H = (camera.width // factor) * factor, (camera.height // factor) * factor
    return PinholeCamera(W // factor, H // factor, camera.fx / factor, camera.fy / factor,
                         (camera.cx + 0.5) / factor - 0.5, (camera.cy + 0.5) / factor - 0.5)


def encode_depth(depth: np.ndarray, depth_range: Tuple[float, float]) -> np.ndarray:
    """Depth code: ``log(max / depth) / log(max / min)`` clipped to [0, 1] (1 = nearest).

    :param depth: float [...] metres (> 0)
    :param depth_range: (min_depth, max_depth) of the model, metres
    :return: float32 [...]
    """
    lo, hi = depth_range
    d = np.maximum(np.asarray(depth, np.float64), 1e-9)
    return np.clip(np.log(hi / d) / np.log(hi / lo), 0.0, 1.0).astype(np.float32)


def decode_depth(code: np.ndarray, depth_range: Tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`encode_depth`: float32 metres."""
    lo, hi = depth_range
    return (hi * np.exp(-np.asarray(code, np.float64) * np.log(hi / lo))).astype(np.float32)


def geometry_channels(camera: PinholeCamera, T_world_cam: Optional[np.ndarray],
                      depth_range: Tuple[float, float], prior_max_depth: float) -> np.ndarray:
    """Return the per-pixel geometry: rays, ground-plane prior, elevation, pose flag.

    :param camera: pinhole camera of the depth map
    :param T_world_cam: float64 [4, 4] optical frame to world (z up, ground at z = 0), or None
    :param depth_range: (min_depth, max_depth) of the model (the prior's :func:`encode_depth`)
    :param prior_max_depth: ground hits farther than this (metres) get no prior
    :return: float32 [6, H, W]: ray_x, ray_y, ground, ground_mask, elevation, has_pose
    """
    rays = camera.pixel_rays()                                        # [H, W, 3], z = 1
    out = np.zeros((6, camera.height, camera.width), np.float32)
    out[0], out[1] = rays[..., 0], rays[..., 1]
    if T_world_cam is None:
        return out
    T = np.asarray(T_world_cam, np.float64)
    d = rays.astype(np.float64) @ T[:3, :3].T                          # world, z_cam = 1
    norm = np.linalg.norm(d, axis=-1)
    height = T[2, 3]
    # Along the ray p = c + s d, the ground z = 0 is at s = -height / d_z; s is the z-depth
    # because d has z_cam = 1.
    with np.errstate(divide='ignore', invalid='ignore'):
        s = -height / d[..., 2]
    hits = (d[..., 2] < 0) & (height > 0) & (s > 0) & (s <= prior_max_depth)
    out[2] = np.where(hits, encode_depth(np.where(hits, s, 1.0), depth_range), 0.0)
    out[3] = hits
    out[4] = d[..., 2] / norm
    out[5] = 1.0
    return out


def input_channels(image: np.ndarray, geometry: np.ndarray,
                   sweep: Optional[Tuple[np.ndarray, np.ndarray]],
                   depth_range: Tuple[float, float]) -> np.ndarray:
    """Stack the network's input (:data:`CHANNELS`).

    :param image: uint8 [H, W, 3] RGB at the depth resolution
    :param geometry: float32 [6, H, W] from :func:`geometry_channels`
    :param sweep: (depth float32 [H, W] metres, 0 = invalid; confidence float32 [H, W]) of the
        plane sweep, or None
    :param depth_range: (min_depth, max_depth) of the model, metres
    :return: float32 [11, H, W]
    """
    h, w = image.shape[:2]
    out = np.zeros((len(CHANNELS), h, w), np.float32)
    out[:3] = image.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0
    out[3:9] = geometry
    if sweep is not None:
        depth, conf = sweep
        ok = depth > 0
        out[9] = np.where(ok, encode_depth(np.where(ok, depth, 1.0), depth_range), 0.0)
        out[10] = np.where(ok, conf, 0.0)
    return out


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average an image by an integer factor (rows and columns beyond a multiple drop).

    :param image: [H, W] or [H, W, C] of any numeric type
    :return: float32 [H // factor, W // factor (, C)]
    """
    if factor == 1:
        return image.astype(np.float32)
    h, w = image.shape[0] // factor, image.shape[1] // factor
    x = image[:h * factor, :w * factor].astype(np.float32)
    # OpenCV's area resize at an integer factor is the block mean, ten times faster than a
    # strided numpy mean on a 640x480 image (it runs on every frame).
    out = cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape((h, w) + image.shape[2:])


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DepthUNet(nn.Module):
    """U-Net over three 2x scales with a global context vector at the bottom.

    :param in_channels: input channels (:data:`CHANNELS`)
    :param widths: channels at full, 1/2, 1/4 and 1/8 resolution
    :param min_depth: nearest depth of the output (metres)
    :param max_depth: farthest depth of the output (metres)
    """

    def __init__(self, in_channels: int, widths: Sequence[int], min_depth: float,
                 max_depth: float):
        """Build the layers."""
        super().__init__()
        c0, c1, c2, c3 = (int(c) for c in widths)
        self.enc0 = nn.Sequential(_conv(in_channels, c0), _conv(c0, c0))
        self.enc1 = nn.Sequential(_conv(c0, c1, 2), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))
        self.context = nn.Linear(c3, c3)
        self.bottom = _conv(c3, c3)
        self.dec2 = _conv(c3 + c2, c2)
        self.dec1 = _conv(c2 + c1, c1)
        self.dec0 = _conv(c1 + c0, c0)
        self.head = nn.Conv2d(c0, 2, 1)
        with torch.no_grad():
            self.head.weight[0].mul_(0.01)
            self.head.bias[0].zero_()
        self.log_q_min = float(np.log(1.0 / float(max_depth)))
        self.log_q_span = float(np.log(float(max_depth) / float(min_depth)))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inverse depth and confidence logit.

        :param x: float32 [B, C, H, W], H and W multiples of 8
        :return: (inverse depth [B, H, W] in 1/metres, confidence logit [B, H, W])
        """
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        g = self.context(e3.mean(dim=(2, 3)))
        e3 = self.bottom(e3 + g[:, :, None, None])
        d = self.dec2(torch.cat([_up(e3, e2), e2], 1))
        d = self.dec1(torch.cat([_up(d, e1), e1], 1))
        d = self.dec0(torch.cat([_up(d, e0), e0], 1))
        out = self.head(d)
        # The output is a correction of the best geometric guess (the sweep where it matched,
        # else the ground plane, else a middle depth) in the depth code's logit space, so an
        # untrained head reproduces the guess. The code interpolates geometrically: equal
        # output resolution per relative depth change.
        code = torch.sigmoid(out[:, 0] + torch.logit(prior_code(x), eps=_PRIOR_EPS))
        inv = torch.exp(self.log_q_min + self.log_q_span * code)
        return inv, out[:, 1]


def prior_code(x: torch.Tensor) -> torch.Tensor:
    """Return the geometric guess of the depth code: sweep, else ground, else 0.5.

    :param x: float32 [B, 11, H, W] (:data:`CHANNELS`)
    :return: float32 [B, H, W] in [0, 1]
    """
    sweep = x[:, _SWEEP_CONF] > 0
    ground = x[:, _GROUND_MASK] > 0
    middle = torch.full_like(x[:, 0], 0.5)
    return torch.where(sweep, x[:, _SWEEP], torch.where(ground, x[:, _GROUND], middle))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode='bilinear', align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int = _MULTIPLE) -> torch.Tensor:
    """Replicate-pad [B, C, H, W] on the bottom and right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode='replicate')
    return x


def depth_range(net: Dict[str, Any]) -> Tuple[float, float]:
    """(min_depth, max_depth) of a network config dict, metres."""
    return float(net['min_depth']), float(net['max_depth'])


def build_model(net: Dict[str, Any]) -> DepthUNet:
    """Build a fresh network from its config dict (:data:`DEFAULT_NET` keys)."""
    return DepthUNet(int(net['in_channels']), list(net['widths']), float(net['min_depth']),
                     float(net['max_depth']))


def load_checkpoint(path: str, device: Union[str, torch.device] = 'cpu'
                    ) -> Tuple[DepthUNet, Dict[str, Any]]:
    """Load a depth checkpoint (``{'state_dict', 'net', ...}``) with ``weights_only=True``.

    :return: (the network in eval mode on ``device``, the checkpoint's ``net`` config)
    :raises ValueError: a file that is no depth checkpoint
    """
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt or 'net' not in ckpt:
        raise ValueError(f'{path} is not a depth network checkpoint (state_dict + net)')
    net = dict(DEFAULT_NET, **ckpt['net'])
    if int(net['in_channels']) != len(CHANNELS):
        raise ValueError(f'{path} expects {net["in_channels"]} input channels, this code makes '
                         f'{len(CHANNELS)}')
    model = build_model(net)
    model.load_state_dict({k: v.float() for k, v in ckpt['state_dict'].items()})
    return model.to(device).eval(), net


@dataclass
class NetworkParts:
    """The result of :meth:`NetworkDepth.estimate_parts`.

    :param depth: what :meth:`NetworkDepth.estimate` returns
    :param network: the network's own depth map
    :param sweep: the plane sweep's result (None without sources or pose)
    """

    depth: DepthResult
    network: DepthResult
    sweep: Optional[DepthResult]


class NetworkDepth(DepthSource):
    """Learned depth for every frame: with sources and pose, with pose only, or from the image.

    The plane sweep (:class:`~l3rocc_core.depth.plane_sweep.PlaneSweepDepth`, same config) runs
    first when there are sources and a pose; its depth and confidence are two of the inputs, and
    where it is valid its depth is kept in the output (matching is the more precise there; the
    confidence stays the network's). A frame without pose gets depth from the image alone (scale
    learned from the synthetic world; its confidence rarely passes the default gate). The
    network's pixels are valid where its confidence reaches ``network_min_confidence`` (and
    ``min_confidence``) and the depth lies within [``min_depth``, ``max_depth``].

    :param config: depth parameters (``depth_downsample``, depth range, ``min_confidence``,
        ``network_min_confidence``, and the plane sweep's)
    :param device: torch device
    :param checkpoint: weights file (default: the shipped :data:`DEFAULT_CHECKPOINT`)
    """

    name = 'network'
    uses_sources = True
    requires_sources = False

    def __init__(self, config: DepthConfig, device: Union[str, torch.device] = 'cpu',
                 checkpoint: str = ''):
        """Load the network and set up the plane sweep."""
        from l3rocc_core.depth.plane_sweep import PlaneSweepDepth

        self.config = config
        self.device = torch.device(device)
        path = checkpoint or DEFAULT_CHECKPOINT
        if not os.path.isfile(path):
            raise ValueError(f'depth network checkpoint {path} not found')
        self.model, self.net = load_checkpoint(path, self.device)
        self.sweep = PlaneSweepDepth(config, self.device)
        self._geometry: Dict[Tuple, np.ndarray] = {}

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> DepthResult:
        """Depth of ``frame`` at the working resolution / ``depth_downsample``.

        :param frame: the frame (pose optional)
        :param sources: window frames with poses (may be empty)
        :return: depth, confidence and validity (``result.camera`` is the reduced camera)
        :raises DepthInputError: a frame that is not a Frame or smaller than the reduction
        """
        return self.estimate_parts(frame, sources).depth

    def estimate_parts(self, frame: Frame, sources: Sequence[Frame]) -> NetworkParts:
        """Depth of ``frame`` with the network's own map and the plane sweep's (see the class)."""
        if not isinstance(frame, Frame):
            raise DepthInputError(f'reference must be a Frame, got {type(frame).__name__}')
        f = self.config.depth_downsample
        if frame.camera.width < f or frame.camera.height < f:
            raise DepthInputError(f'image {frame.camera.width}x{frame.camera.height} is smaller '
                                  f'than depth_downsample {f}')
        cam = reduced_camera(frame.camera, f)
        swept, sweep = None, None
        if sources and frame.T_world_cam is not None:
            swept = self.sweep.estimate(frame, sources)
            if bool(swept.valid.any()):
                sweep = (swept.depth.cpu().numpy(), swept.confidence.cpu().numpy())
        image = np.clip(area_downsample(frame.image, f) + 0.5, 0, 255).astype(np.uint8)
        x = input_channels(image, self._geometry_of(cam, frame.T_world_cam), sweep,
                           depth_range(self.net))
        inv, logit = self.infer(torch.as_tensor(x, device=self.device)[None])
        depth = 1.0 / inv[0]
        confidence = torch.sigmoid(logit[0]).contiguous()
        cfg = self.config
        floor = max(cfg.min_confidence, cfg.network_min_confidence, 1e-6)
        valid = (confidence >= floor) & (depth >= cfg.min_depth) & (depth <= cfg.max_depth)
        zero = torch.zeros((), device=self.device)
        own = DepthResult(torch.where(valid, depth, zero).contiguous(), confidence, valid, cam)
        if sweep is None:
            return NetworkParts(own, own, swept)
        # Where matching succeeded it is more precise than the network (validation: 83 against
        # 80 % of the pixels within 25 %), so its depth is kept there.
        keep = swept.valid.to(self.device)
        if cfg.network_sweep_min_confidence > 0.0:
            # not in place: keep may be the sweep's own mask, returned as NetworkParts.sweep
            keep = keep & (confidence >= cfg.network_sweep_min_confidence)
        merged = DepthResult(torch.where(keep, swept.depth.to(self.device), own.depth),
                             confidence, valid | keep, cam)
        return NetworkParts(merged, own, swept)

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the network on stacked inputs of any size.

        :param x: float32 [B, 11, H, W] (:func:`input_channels`)
        :return: (inverse depth [B, H, W] 1/metres, confidence logit [B, H, W])
        """
        h, w = x.shape[-2:]
        inv, logit = self.model(pad_to_multiple(x))
        return inv[:, :h, :w], logit[:, :h, :w]

    def _geometry_of(self, cam: PinholeCamera, T_world_cam: Optional[np.ndarray]
                     ) -> np.ndarray:
        """Geometry channels; those of a frame without pose are cached per camera."""
        prior = float(self.net['prior_max_depth'])
        if T_world_cam is not None:
            return geometry_channels(cam, T_world_cam, depth_range(self.net), prior)
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        hit = self._geometry.get(key)
        if hit is None:
            hit = geometry_channels(cam, None, depth_range(self.net), prior)
            self._geometry = {key: hit}
        return hit
