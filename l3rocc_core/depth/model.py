"""Depth from the user's own single-image model (``depth_source: model``, file ``depth_model``).

Formats: ONNX (``.onnx``, run by onnxruntime: the CUDA provider when the device is CUDA and
onnxruntime has it, else the CPU provider) and TorchScript (``.pt``, ``.ts``, ``.torchscript``,
``torch.jit.load`` onto the device).

Model contract:

- Input: one tensor, the frame's RGB image as float32 [1, 3, H, W] in [0, 1] (no mean/std
  normalisation: bake any into the exported model) at the working resolution. An ONNX model
  whose input has a fixed height and width gets the image resized to them (bilinear,
  antialiased); TorchScript models always get the working resolution.
- Output: float [1, 1, h, w], [1, h, w] or [h, w] (a tuple or list: its first element), of any
  size: it is resized to the working resolution (bilinear: a model's depth is smooth, and its
  smeared object edges are caught by the edge test of :func:`~.topic.depth_result`), then
  reduced like a depth image (block minimum, range, edge confidence).
- ``depth_model_output`` says what it means. ``metric``: z-depth in metres. ``relative``:
  z-depth times an unknown scale s. ``inverse_relative`` (disparity-like, e.g. MiDaS): a x
  inverse depth + b with unknown a > 0 and b.

Non-metric outputs are made metric every frame from the ground plane z = 0 of ``world_frame``
(z up) and the camera pose: each pixel whose ray hits the ground within (``min_depth``,
``max_depth``] has a known ground depth. The model's values there are fitted to it robustly
(RANSAC over sampled hypotheses, then a refit on the inliers: the median ratio for the scale,
least squares in inverse depth for scale and shift), so objects standing on the ground are
outliers, not a bias. The inliers' share of the ground pixels (within ``_INLIER_TOLERANCE``
relative depth) multiplies the confidence. A frame without pose, a camera that sees no ground,
or a fit that fewer than ``_MIN_INLIER_SHARE`` of the ground pixels agree with gets no depth
(``depth_model_no_scale``).

The file is loaded at the first estimate, so a node with a broken model keeps running and
counts each frame: ``depth_model_missing`` (no such file), ``depth_model_corrupt`` (unreadable
or unusable; not retried until the file changes), ``depth_model_failed`` (the model raised on
this frame), ``depth_model_bad_output`` (an output of another shape, non-float or non-finite).
"""

import logging
import os
import stat
from typing import Any, Dict, Optional, Sequence, Tuple, Union
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth.base import DepthSource
from l3rocc_core.depth.ground import ground_depth
from l3rocc_core.depth.result import DepthInputError, DepthResult
from l3rocc_core.depth.topic import depth_result, numpy_to_device
from l3rocc_core.frame import Frame

__all__ = ['MODEL_OUTPUTS', 'ModelDepth', 'TORCHSCRIPT_SUFFIXES']

LOG = logging.getLogger(__name__)

#: ``depth_model_output`` values.
MODEL_OUTPUTS = ('metric', 'relative', 'inverse_relative')
#: file name endings loaded with ``torch.jit.load`` (``.onnx`` goes to onnxruntime).
TORCHSCRIPT_SUFFIXES = ('.pt', '.ts', '.torchscript')

_INLIER_TOLERANCE = 0.05    # a ground pixel agrees with a fit within this relative depth error
_MIN_GROUND_PIXELS = 64     # fewer pixels seeing the ground give no scale
_MIN_INLIER_SHARE = 0.2     # a fit fewer ground pixels agree with is not the ground's
_HYPOTHESES = 64            # RANSAC hypotheses per frame (scored at once)
_MAX_SCORED = 2048          # ground pixels that score the hypotheses (an even subsample)


def _error(kind: str, message: str) -> DepthInputError:
    return DepthInputError(f'depth_model: {message}', kind=kind)


class _TorchScript:
    """A TorchScript module on the device; it runs at any input size."""

    input_size: Optional[Tuple[int, int]] = None

    def __init__(self, path: str, device: torch.device):
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still the format most models export to.
            warnings.simplefilter('ignore', DeprecationWarning)
            self.module = torch.jit.load(path, map_location=device)
        self.module.eval()

    def __call__(self, x: torch.Tensor) -> Any:
        return self.module(x)


class _Onnx:
    """An onnxruntime session; ``input_size`` (h, w) when the model's input has a fixed size."""

    def __init__(self, path: str, device: torch.device):
        import onnxruntime as ort
        providers = ['CPUExecutionProvider']
        if device.type == 'cuda' and 'CUDAExecutionProvider' in ort.get_available_providers():
            providers.insert(0, 'CUDAExecutionProvider')
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()   # the process's thread budget
        options.log_severity_level = 3                            # errors reach us as exceptions
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f'the model has {len(inputs)} inputs, expected one image')
        spec = inputs[0]
        if spec.type != 'tensor(float)' or len(spec.shape) != 4:
            raise ValueError(f'the model input {spec.name!r} is {spec.type} {spec.shape}, '
                             'expected float [1, 3, H, W]')
        h, w = spec.shape[2:]
        self.name = spec.name
        self.input_size = (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def __call__(self, x: torch.Tensor) -> Any:
        return self.session.run(None, {self.name: x.cpu().numpy()})[0]


class ModelDepth(DepthSource):
    """Single-image depth from the ONNX or TorchScript file ``config.depth_model``.

    :param config: ``depth_model``, ``depth_model_output`` and the range and reduction of
        :func:`~l3rocc_core.depth.topic.depth_result`
    :param device: torch device the model and the result live on
    """

    name = 'model'
    uses_sources = False
    requires_sources = False

    def __init__(self, config: DepthConfig, device: Union[str, torch.device] = 'cpu'):
        """Check the parameters; the model itself is loaded at the first :meth:`estimate`."""
        if config.depth_model_output not in MODEL_OUTPUTS:
            raise ValueError(f'depth_model_output must be one of {list(MODEL_OUTPUTS)}, got '
                             f'{config.depth_model_output!r}')
        if not config.depth_model:
            raise ValueError('depth_source model needs depth_model (an ONNX or TorchScript '
                             'file)')
        self.config = config
        self.device = torch.device(device)
        self._runner: Any = None
        self._failed: Optional[Tuple[Tuple[int, int], str]] = None   # file (mtime, size), why
        self._rays: Dict[PinholeCamera, np.ndarray] = {}
        #: times the file was read (a corrupt file is read again only once it changes)
        self.load_attempts = 0
        #: the last fit of a non-metric output: (scale, shift, inlier share); None for metric
        self.last_fit: Optional[Tuple[float, float, float]] = None

    def estimate(self, frame: Frame, sources: Sequence[Frame]) -> DepthResult:
        """Depth of ``frame`` from the model, made metric (see the module description).

        :param frame: the frame (its pose for non-metric outputs)
        :param sources: not used
        :raises DepthInputError: with the kinds of the module description
        """
        runner = self._load()
        cam = frame.camera
        x = numpy_to_device(frame.image, self.device).permute(2, 0, 1)[None].float()
        x = x.mul_(1.0 / 255.0)                                    # [1, 3, H, W] in [0, 1]
        if runner.input_size is not None and runner.input_size != (cam.height, cam.width):
            x = F.interpolate(x, size=runner.input_size, mode='bilinear', antialias=True,
                              align_corners=False)
        try:
            with torch.inference_mode():
                raw = runner(x.contiguous())
        except Exception as exc:   # any failure inside the user's model drops this frame only
            raise _error('depth_model_failed', f'the model failed on a {tuple(x.shape)} '
                         f'input: {type(exc).__name__}: {exc}') from exc
        out = self._output(raw, cam)
        kind = self.config.depth_model_output
        if kind == 'metric':
            self.last_fit = None
            return depth_result(out, cam, self.config)
        ground = self._ground_depth(frame)
        if kind == 'relative':
            scale, shift, share = self._fit(out, ground, inverse=False)
            depth = out * scale
        else:
            scale, shift, share = self._fit(out, ground, inverse=True)
            q = out * scale + shift                                  # inverse depth (1/m)
            depth = torch.where(q > 0, 1.0 / q.clamp_min(1e-12), torch.zeros_like(q))
        self.last_fit = (scale, shift, share)
        return depth_result(depth, cam, self.config, share)

    # -- loading ----------------------------------------------------------------------------
    def _load(self) -> Any:
        """Return the loaded model, loading it first; remember a file that cannot be used."""
        if self._runner is not None:
            return self._runner
        path = self.config.depth_model
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _error('depth_model_missing', f'{path!r} cannot be found ({exc.strerror})'
                         ) from exc
        if not stat.S_ISREG(st.st_mode):
            raise _error('depth_model_missing', f'{path!r} is not a file')
        key = (st.st_mtime_ns, st.st_size)
        if self._failed is not None and self._failed[0] == key:
            raise _error('depth_model_corrupt', self._failed[1])
        self.load_attempts += 1
        try:
            if path.lower().endswith('.onnx'):
                runner: Any = _Onnx(path, self.device)
            elif path.lower().endswith(TORCHSCRIPT_SUFFIXES):
                runner = _TorchScript(path, self.device)
            else:
                raise ValueError('the file name must end in .onnx or '
                                 f'{", ".join(TORCHSCRIPT_SUFFIXES)}')
        except Exception as exc:   # onnxruntime's errors are not RuntimeErrors; all mean unusable
            why = (f'{path!r} cannot be loaded ({type(exc).__name__}: {exc}); it is read again '
                   'once the file changes')
            self._failed = (key, why)
            raise _error('depth_model_corrupt', why) from exc
        self._failed = None
        self._runner = runner
        size = 'any input size' if runner.input_size is None else f'input {runner.input_size}'
        LOG.info('depth_model: loaded %s (%s, %s output)', path, size,
                 self.config.depth_model_output)
        return runner

    # -- output -----------------------------------------------------------------------------
    def _output(self, raw: Any, camera: PinholeCamera) -> torch.Tensor:
        """float32 [H, W] of the model's raw output at the working resolution of ``camera``."""
        if isinstance(raw, (tuple, list)) and raw:
            raw = raw[0]
        if isinstance(raw, np.ndarray):
            raw = torch.from_numpy(raw)
        if not isinstance(raw, torch.Tensor) or not raw.is_floating_point():
            what = f'{raw.dtype} tensor' if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise _error('depth_model_bad_output', f'the model gave a {what}, expected a float '
                         'tensor')
        shape = tuple(raw.shape)
        if len(shape) == 4 and shape[:2] == (1, 1):
            out = raw[0, 0]
        elif len(shape) == 3 and shape[0] == 1:
            out = raw[0]
        elif len(shape) == 2:
            out = raw
        else:
            out = None
        if out is None or out.numel() == 0:
            raise _error('depth_model_bad_output', f'the model output has shape {shape}, '
                         'expected [1, 1, h, w], [1, h, w] or [h, w]')
        out = out.to(device=self.device, dtype=torch.float32)
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            raise _error('depth_model_bad_output', f'{bad} of {out.numel()} output values are '
                         'not finite')
        if tuple(out.shape) != (camera.height, camera.width):
            out = F.interpolate(out[None, None], size=(camera.height, camera.width),
                                mode='bilinear', align_corners=False)[0, 0]
        return out

    # -- scale from the ground --------------------------------------------------------------
    def _ground_depth(self, frame: Frame) -> torch.Tensor:
        """float32 [H, W]: z-depth where the pixel's ray meets z = 0 in range, else 0.

        :raises DepthInputError: ``depth_model_no_scale`` without a pose
        """
        if frame.T_world_cam is None:
            raise _error('depth_model_no_scale', f'frame at {frame.stamp_ns} ns has no pose: '
                         'a non-metric model is scaled to the ground seen from the pose')
        cam = frame.camera
        rays = self._rays.get(cam)
        if rays is None:
            rays = cam.pixel_rays().astype(np.float64)                      # [H, W, 3], z = 1
            self._rays = {cam: rays}
        plane = torch.as_tensor(ground_depth(cam, frame.T_world_cam, self.config.max_depth, rays),
                                device=self.device)
        return torch.where(plane > self.config.min_depth, plane, torch.zeros_like(plane))

    def _fit(self, out: torch.Tensor, ground: torch.Tensor, inverse: bool
             ) -> Tuple[float, float, float]:
        """Fit the model's output to the ground depth: (scale, shift, inlier share).

        ``inverse`` False: ground depth = scale x out (shift 0). True: 1 / ground depth =
        scale x out + shift.

        :param out: float32 [H, W] the model's output at the working resolution
        :param ground: float32 [H, W] ground depth (0 = the ray misses the ground in range)
        :raises DepthInputError: ``depth_model_no_scale`` (too little ground, no agreement)
        """
        mask = ground > 0
        if not inverse:
            mask &= out > 0
        n = int(mask.sum())
        if n < _MIN_GROUND_PIXELS:
            raise _error('depth_model_no_scale', f'only {n} pixels see the ground z = 0 within '
                         f'max_depth {self.config.max_depth} m (need {_MIN_GROUND_PIXELS}): no '
                         'scale for the non-metric model')
        m, g = out[mask], ground[mask]
        target = 1.0 / g if inverse else g
        gen = torch.Generator().manual_seed(0)            # the same frame gives the same fit
        picks = torch.randint(n, (2, _HYPOTHESES), generator=gen).to(self.device)
        if inverse:
            m0, m1 = m[picks[0]], m[picks[1]]
            q0, q1 = target[picks[0]], target[picks[1]]
            span = m0 - m1
            scale = (q0 - q1) / torch.where(span == 0, torch.ones_like(span), span)
            # Disparity grows as depth shrinks: a > 0; a pair without spread gives no line.
            scale = torch.where((span.abs() > 1e-9) & (scale > 0), scale,
                                torch.full_like(scale, float('nan')))
            shift = q0 - scale * m0
        else:
            scale = target[picks[0]] / m[picks[0]]
            shift = torch.zeros_like(scale)
        stride = max(1, n // _MAX_SCORED)
        ms, ts = m[::stride], target[::stride]
        residual = (scale[:, None] * ms + shift[:, None] - ts).abs() / ts
        votes = (residual <= _INLIER_TOLERANCE).sum(1)              # NaN hypotheses get none
        best = int(votes.argmax())
        a, b = self._refit(m, target, float(scale[best]), float(shift[best]), inverse)
        inliers = ((a * m + b - target).abs() / target) <= _INLIER_TOLERANCE
        share = float(inliers.float().mean())
        if share < _MIN_INLIER_SHARE:
            raise _error('depth_model_no_scale', f'only {share:.0%} of the {n} ground pixels '
                         f'agree with one {"scale and shift" if inverse else "scale"}: the '
                         'ground z = 0 is hidden or the model is not '
                         f'{self.config.depth_model_output}')
        return a, b, share

    @staticmethod
    def _refit(m: torch.Tensor, target: torch.Tensor, a: float, b: float, inverse: bool
               ) -> Tuple[float, float]:
        """Refit ``target = a m + b`` on the inliers of the best hypothesis."""
        inliers = ((a * m + b - target).abs() / target) <= _INLIER_TOLERANCE
        m, target = m[inliers], target[inliers]
        if m.numel() < 2:
            return a, b
        if not inverse:
            return float((target / m).median()), 0.0
        # Least squares line in inverse depth; falls back to the hypothesis when degenerate.
        m, target = m.double(), target.double()
        mm, tm = m.mean(), target.mean()
        var = ((m - mm) ** 2).mean()
        if float(var) <= 1e-18:
            return a, b
        a_ls = float(((m - mm) * (target - tm)).mean() / var)
        return (a_ls, float(tm - a_ls * mm)) if a_ls > 0 else (a, b)
