"""Pinhole camera model: intrinsics, distortion, binning/ROI, scaling, undistortion, rays.

Pixel convention: pixel ``(u, v)`` has its centre at integer coordinates (OpenCV/ROS); camera axes
x right, y down, z forward (optical frame). Depth is the z coordinate in metres.
"""

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'none')


class CameraModelError(ValueError):
    """Intrinsics that cannot describe a camera (zero/NaN K, unknown model, bad ROI...)."""

    kind = 'bad_camera_info'


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of the image as it arrives (after binning and ROI).

    :param width: pixels
    :param height: pixels
    :param fx: focal length x (pixels)
    :param fy: focal length y (pixels)
    :param cx: principal point x (pixels)
    :param cy: principal point y (pixels)
    :param distortion_model: 'plumb_bob' (k1 k2 p1 p2 k3), 'rational_polynomial' (k1..k6 after
        p1 p2, OpenCV order) or 'none'
    :param D: distortion coefficients in OpenCV order
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = 'none'
    D: Tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        """Reject values that cannot describe a camera."""
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if self.width <= 0 or self.height <= 0:
            raise CameraModelError(f'image size {self.width}x{self.height} must be positive')
        if not np.all(np.isfinite(vals)):
            raise CameraModelError(f'K has NaN/Inf: fx {self.fx} fy {self.fy} cx {self.cx} '
                                   f'cy {self.cy}')
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(f'focal lengths must be > 0 (all-zero K?), got fx {self.fx} '
                                   f'fy {self.fy}')
        if self.distortion_model not in DISTORTION_MODELS:
            raise CameraModelError(f'unknown distortion model {self.distortion_model!r} '
                                   f'(known: {", ".join(DISTORTION_MODELS)})')
        if not np.all(np.isfinite(np.asarray(self.D, dtype=np.float64))):
            raise CameraModelError(f'D has NaN/Inf: {list(self.D)}')

    @classmethod
    def from_camera_info(cls, width: int, height: int, K: Sequence[float],
                         D: Sequence[float] = (), distortion_model: str = 'plumb_bob',
                         binning_x: int = 0, binning_y: int = 0,
                         roi: Optional[Tuple[int, int, int, int]] = None) -> 'PinholeCamera':
        """Camera of the published image from CameraInfo fields.

        K and D describe the full-resolution sensor; the published image is the ROI
        (x_offset, y_offset, width, height; zeros mean the full image) divided by binning
        (0 or 1 = none), as image_geometry does.

        :param width: CameraInfo.width, full sensor pixels
        :param height: CameraInfo.height
        :param K: 9 values, row-major 3x3
        :raises CameraModelError: on inconsistent values
        """
        K = np.asarray(K, dtype=np.float64).reshape(-1)
        if K.size != 9:
            raise CameraModelError(f'K needs 9 values, got {K.size}')
        model = distortion_model or ('none' if not len(D) else 'plumb_bob')
        if model not in DISTORTION_MODELS:
            raise CameraModelError(f'unknown distortion model {model!r} '
                                   f'(known: {", ".join(DISTORTION_MODELS)})')
        d = tuple(float(v) for v in D)
        if not any(d):
            model, d = 'none', ()
        fx, fy, cx, cy = K[0], K[4], K[2], K[5]
        w, h = int(width), int(height)
        if roi is not None and roi[2] > 0 and roi[3] > 0:
            x0, y0, rw, rh = (int(v) for v in roi)
            if x0 + rw > w or y0 + rh > h:
                raise CameraModelError(f'ROI {roi} lies outside the {w}x{h} sensor')
            cx, cy, w, h = cx - x0, cy - y0, rw, rh
        bx, by = max(1, int(binning_x)), max(1, int(binning_y))
        if bx > 1 or by > 1:
            fx, cx, w = fx / bx, cx / bx, w // bx
            fy, cy, h = fy / by, cy / by, h // by
        return cls(w, h, float(fx), float(fy), float(cx), float(cy), model, d)

    @property
    def K(self) -> np.ndarray:
        """float64[3, 3] intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        """Whether undistortion changes the image."""
        return self.distortion_model != 'none' and any(abs(v) > 0 for v in self.D)

    def scaled(self, width: int, height: Optional[int] = None) -> 'PinholeCamera':
        """Return the same camera at another resolution (pixel centres kept consistent).

        :param width: new width in pixels
        :param height: new height; default keeps the aspect ratio
        """
        if height is None:
            height = max(1, int(round(self.height * width / self.width)))
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(int(width), int(height), self.fx * sx, self.fy * sy,
                             (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                             self.distortion_model, self.D)

    def reduced(self, factor: int) -> 'PinholeCamera':
        """Return the camera of this image cropped and reduced by an integer factor.

        The image is cropped at the right and bottom to whole multiples of ``factor``, and each
        ``factor`` x ``factor`` block becomes one pixel (the depth maps of the depth stage):
        pixel centres stay consistent, as in :meth:`scaled`. Distortion is dropped (the depth
        stage works on undistorted images).

        :param factor: block side in pixels (1 = the same camera without distortion)
        :raises CameraModelError: when the image is smaller than one block
        """
        f = int(factor)
        if f < 1 or self.width < f or self.height < f:
            raise CameraModelError(f'image {self.width}x{self.height} cannot be reduced by '
                                   f'{factor}')
        return PinholeCamera(self.width // f, self.height // f, self.fx / f, self.fy / f,
                             (self.cx + 0.5) / f - 0.5, (self.cy + 0.5) / f - 0.5)

    def pixel_rays(self) -> np.ndarray:
        """float32[H, W, 3]: for every pixel centre the ray with z = 1 (undistorted camera)."""
        u = (np.arange(self.width, dtype=np.float32) - self.cx) / self.fx
        v = (np.arange(self.height, dtype=np.float32) - self.cy) / self.fy
        uu, vv = np.meshgrid(u, v)
        return np.stack([uu, vv, np.ones_like(uu)], -1).astype(np.float32, copy=False)

    def project(self, p_cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points (undistorted model).

        :param p_cam: [..., 3] metres
        :return: (uv [..., 2] pixels, z [...] metres)
        """
        z = p_cam[..., 2]
        zs = np.where(np.abs(z) < 1e-12, 1e-12, z)
        uv = np.stack([self.fx * p_cam[..., 0] / zs + self.cx,
                       self.fy * p_cam[..., 1] / zs + self.cy], -1)
        return uv, z


class Undistorter:
    """Maps raw images of ``camera`` to undistorted images at a working width, computed once.

    :param camera: the camera of the incoming images
    :param working_width: output width in pixels (height keeps the aspect ratio)
    :param undistort: remove lens distortion; when false only resizing happens
    """

    def __init__(self, camera: PinholeCamera, working_width: int, undistort: bool = True):
        """Precompute the remap tables."""
        self.source = camera
        width = min(int(working_width), camera.width)
        self._scaled = camera.scaled(width)
        out = self._scaled
        self.camera = PinholeCamera(out.width, out.height, out.fx, out.fy, out.cx, out.cy)
        self._maps = None
        if undistort and camera.has_distortion:
            # Resize first (area filter, no aliasing), then undistort at the working size.
            self._maps = cv2.initUndistortRectifyMap(
                out.K, np.asarray(out.D, dtype=np.float64), None, self.camera.K,
                (out.width, out.height), cv2.CV_32FC2)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Undistort and resize.

        :param image: uint8 [H, W, C] or [H, W] of the source camera's size
        :return: uint8 [h, w, C] at the working resolution
        """
        if image.shape[0] != self.source.height or image.shape[1] != self.source.width:
            raise CameraModelError(
                f'image {image.shape[1]}x{image.shape[0]} does not match the camera model '
                f'{self.source.width}x{self.source.height}')
        if image.shape[1] != self.camera.width:
            image = cv2.resize(image, (self.camera.width, self.camera.height),
                               interpolation=cv2.INTER_AREA)
        if self._maps is not None:
            image = cv2.remap(image, self._maps[0], None, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return image

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """Resize and undistort a depth image registered to the source camera's images.

        Nearest neighbour in both steps, so that every output value is one of the input's
        depths: interpolating would blend foreground and background into depths where nothing
        is (flying pixels). Output pixels whose source lies outside the raw image are 0.

        :param depth: float32 [H, W] metres of the source camera's size, 0 = no return
        :return: float32 [h, w] metres at the working resolution
        """
        if depth.shape[:2] != (self.source.height, self.source.width):
            raise CameraModelError(
                f'depth {depth.shape[1]}x{depth.shape[0]} does not match the camera model '
                f'{self.source.width}x{self.source.height}')
        if depth.shape[1] != self.camera.width:
            # NEAREST_EXACT samples at pixel centres, the convention of PinholeCamera.scaled.
            depth = cv2.resize(depth, (self.camera.width, self.camera.height),
                               interpolation=cv2.INTER_NEAREST_EXACT)
        if self._maps is not None:
            depth = cv2.remap(depth, self._maps[0], None, cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return depth
