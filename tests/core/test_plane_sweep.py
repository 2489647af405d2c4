"""Plane-sweep depth on rendered analytic scenes (known depth) and on TUM fr1/xyz (GT depth)."""

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch

from l3rocc_core.camera import PinholeCamera, Undistorter
from l3rocc_core.config import DepthConfig
from l3rocc_core.depth import DepthInputError, DepthResult
from l3rocc_core.depth.plane_sweep import box_mean, box_sum, PlaneSweepDepth
from l3rocc_core.frame import Frame

# Rendered at 1280x960 and reduced to 320x240 (area): a camera integrates over its pixels, so
# far textures blur instead of aliasing differently in every view.
RENDER = PinholeCamera(1280, 960, 1040.0, 1040.0, 639.5, 479.5)
WORKING = RENDER.scaled(320)
TEXTURE_M = 8.0          # texture tile side on the plane (metres)
TEXTURE_PX = 2048        # texels per tile side (4 mm texels)


def _texture(seed: int) -> np.ndarray:
    """float32 [TEXTURE_PX, TEXTURE_PX] multi-scale random texture in [0, 1]."""
    rng = np.random.default_rng(seed)
    tex = np.zeros((TEXTURE_PX, TEXTURE_PX), np.float32)
    for cells, weight in ((16, 1.0), (64, 0.8), (256, 0.6), (1024, 0.4)):
        small = rng.random((cells, cells)).astype(np.float32)
        tex += weight * cv2.resize(small, (TEXTURE_PX, TEXTURE_PX),
                                   interpolation=cv2.INTER_CUBIC)
    tex -= tex.min()
    return tex / tex.max()


def _plane_basis(normal: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane with ``normal``."""
    a = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(normal, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def _render(T_world_cam: np.ndarray, point: np.ndarray, normal: np.ndarray,
            texture: Optional[np.ndarray], gain: float = 1.0, offset: float = 0.0
            ) -> Tuple[Frame, np.ndarray]:
    """Image (Frame at WORKING) and z-depth at RENDER of a textured plane.

    :param T_world_cam: camera to world
    :param point: a point of the plane (world, metres)
    :param normal: unit normal of the plane (world)
    :param texture: texture tile, or None for a constant grey plane
    :param gain: intensity gain (exposure change)
    :param offset: intensity offset in [0, 1] units
    :return: (frame, depth float32 [RENDER.height, RENDER.width] metres)
    """
    shape = (RENDER.height, RENDER.width)
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    rays_world = RENDER.pixel_rays().reshape(-1, 3) @ R.T          # z = 1 in the camera
    lam = ((point - t) @ normal) / (rays_world @ normal)           # = z-depth
    p_world = t + lam[:, None] * rays_world
    if texture is None:
        value = np.full(lam.shape, 0.5, np.float32)
    else:
        e1, e2 = _plane_basis(normal)
        scale = TEXTURE_PX / TEXTURE_M
        uv = np.stack([(p_world - point) @ e1, (p_world - point) @ e2], -1) * scale
        uv = np.mod(uv + TEXTURE_PX / 2, TEXTURE_PX).astype(np.float32)
        value = cv2.remap(texture, uv[:, 0].reshape(shape), uv[:, 1].reshape(shape),
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).reshape(-1)
    grey = np.clip((0.1 + 0.8 * value) * gain + offset, 0.0, 1.0).reshape(shape)
    rgb = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, -1)
    rgb = cv2.resize(rgb, (WORKING.width, WORKING.height), interpolation=cv2.INTER_AREA)
    depth = lam.reshape(shape).astype(np.float32)
    return Frame(rgb, 0, WORKING, T_world_cam), depth


def _pose(x: float, y: float, z: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """Camera to world: position and a rotation about the camera's y axis."""
    a = np.deg2rad(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [x, y, z]
    return T


SOURCE_POSES = [(0.12, 0.0), (-0.10, 0.02), (0.03, 0.09), (-0.02, -0.08)]


def _scene(normal: Sequence[float], texture: Optional[np.ndarray], gain: float = 1.0,
           offset: float = 0.0, distance: float = 2.0, num_sources: int = len(SOURCE_POSES),
           odd_shift: Optional[Sequence[float]] = None
           ) -> Tuple[Frame, List[Frame], np.ndarray]:
    """Render a reference at the origin and sources around it; plane through (0, 0, distance).

    :param num_sources: how many sources, the first of ``SOURCE_POSES``
    :param odd_shift: when given, the last source sees the textured plane moved by this world
        vector (metres), as if it had moved between the frames: that source alone matches at
        a wrong depth
    """
    n = np.asarray(normal, np.float64)
    n /= np.linalg.norm(n)
    point = np.array([0.0, 0.0, distance])
    ref, depth = _render(np.eye(4), point, n, texture)
    sources = []
    for i, (x, y) in enumerate(SOURCE_POSES[:num_sources]):
        seen = point
        if odd_shift is not None and i == num_sources - 1:
            seen = point + np.asarray(odd_shift, np.float64)
        frame, _ = _render(_pose(x, y, 0.03 * (i - 1.5), 2.0 * (i - 1.5)), seen, n, texture,
                           gain, offset)
        frame.stamp_ns = i + 1
        sources.append(frame)
    return ref, sources, depth


def _gt_at(depth_render: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Resample (area) the rendered z-depth to the depth map's camera."""
    return cv2.resize(depth_render, (camera.width, camera.height), interpolation=cv2.INTER_AREA)


def _abs_rel(result: DepthResult, gt: np.ndarray, mask: Optional[np.ndarray] = None
             ) -> Tuple[float, float]:
    """(median |d - gt| / gt over valid pixels, share of valid pixels) within ``mask``."""
    d = result.depth.cpu().numpy()
    v = result.valid.cpu().numpy()
    if mask is None:
        mask = np.ones_like(v)
    sel = v & mask & (gt > 0)
    if not sel.any():
        return float('inf'), 0.0
    rel = np.abs(d[sel] - gt[sel]) / gt[sel]
    return float(np.median(rel)), float(sel.sum() / mask.sum())


def _interior(camera: PinholeCamera, margin: int = 6) -> np.ndarray:
    """Return bool [H, W]: pixels away from the border (seen by every source)."""
    m = np.zeros((camera.height, camera.width), bool)
    m[margin:-margin, margin:-margin] = True
    return m


@pytest.fixture(scope='module')
def texture() -> np.ndarray:
    """Return the texture shared by the analytic scenes."""
    return _texture(7)


@pytest.fixture(scope='module')
def fronto(texture: np.ndarray) -> Tuple[Frame, List[Frame], np.ndarray]:
    """Textured fronto-parallel plane at 2 m: reference, four sources, rendered depth."""
    return _scene([0, 0, -1], texture)


def test_fronto_parallel_plane(fronto, device: str) -> None:
    ref, sources, depth = fronto
    est = PlaneSweepDepth(DepthConfig(), device)
    result = est.estimate(ref, sources)
    assert result.depth.device.type == torch.device(device).type
    assert result.depth.dtype == torch.float32 and result.valid.dtype == torch.bool
    assert result.depth.shape == (120, 160)
    assert (result.camera.width, result.camera.height) == (160, 120)
    conf = result.confidence
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    assert torch.all(result.depth[~result.valid] == 0)
    med, share = _abs_rel(result, _gt_at(depth, result.camera), _interior(result.camera))
    assert med < 0.01, med
    assert share > 0.95, share


def test_slanted_plane(texture: np.ndarray) -> None:
    # 35 degrees about the y axis: depth 1.3 .. 3.6 m across the image.
    a = np.deg2rad(35.0)
    ref, sources, depth = _scene([np.sin(a), 0, -np.cos(a)], texture)
    result = PlaneSweepDepth(DepthConfig()).estimate(ref, sources)
    gt = _gt_at(depth, result.camera)
    assert gt.min() < 1.6 and gt.max() > 3.0
    med, share = _abs_rel(result, gt, _interior(result.camera))
    assert med < 0.01, med
    assert share > 0.9, share


def test_exposure_change_between_views(texture: np.ndarray) -> None:
    ref, sources, depth = _scene([0, 0, -1], texture, gain=1.3, offset=-0.08)
    result = PlaneSweepDepth(DepthConfig()).estimate(ref, sources)
    med, share = _abs_rel(result, _gt_at(depth, result.camera), _interior(result.camera))
    assert med < 0.01, med
    assert share > 0.95, share


def test_one_inconsistent_source_is_outvoted(texture: np.ndarray) -> None:
    # Two sources agree; the third saw the plane 2 cm further along y (it moved between the
    # frames), so it matches best a few planes off the true depth, where the other two still
    # correlate in part. The mean over all three sources picks that wrong plane almost
    # everywhere (median error 4.5 %, 3 % of the pixels within 2 %); leaving out the worst
    # source of every plane and pixel keeps the true one (0.3 %, 97 %).
    ref, sources, depth = _scene([0, 0, -1], texture, num_sources=3, odd_shift=[0.0, 0.02, 0.0])
    result = PlaneSweepDepth(DepthConfig()).estimate(ref, sources)
    gt = _gt_at(depth, result.camera)
    interior = _interior(result.camera)
    med, share = _abs_rel(result, gt, interior)
    assert med < 0.01, med
    assert share > 0.9, share
    rel = np.abs(result.depth.numpy() - gt) / gt
    close = result.valid.numpy() & interior & (rel < 0.02)
    assert close.sum() > 0.9 * interior.sum(), close.sum() / interior.sum()


def test_plane_beyond_max_depth_is_invalid(texture: np.ndarray) -> None:
    ref, sources, _ = _scene([0, 0, -1], texture, distance=8.0)
    result = PlaneSweepDepth(DepthConfig(max_depth=4.0)).estimate(ref, sources)
    assert float(result.valid.float().mean()) < 0.05
    assert float(result.depth.max()) <= 4.0 * 1.05


def test_untextured_plane_is_invalid() -> None:
    ref, sources, _ = _scene([0, 0, -1], None)
    result = PlaneSweepDepth(DepthConfig()).estimate(ref, sources)
    assert not bool(result.valid.any())
    assert float(result.confidence.max()) == 0.0


def test_full_resolution_and_single_source(fronto) -> None:
    ref, sources, depth = fronto
    # Twice the resolution needs twice the planes for the same plane step in pixels.
    config = DepthConfig(depth_downsample=1, num_depth_planes=96)
    result = PlaneSweepDepth(config).estimate(ref, sources[:1])
    assert result.depth.shape == (240, 320) and result.camera == WORKING
    med, share = _abs_rel(result, _gt_at(depth, result.camera), _interior(result.camera, 20))
    assert med < 0.01, med
    assert share > 0.6, share


def test_no_source_or_no_baseline_is_all_invalid(fronto) -> None:
    ref, sources, _ = fronto
    est = PlaneSweepDepth(DepthConfig())
    for srcs in ([], [Frame(ref.image.copy(), 5, ref.camera, ref.T_world_cam.copy())]):
        result = est.estimate(ref, srcs)
        assert result.depth.shape == (120, 160)
        assert not bool(result.valid.any()) and float(result.depth.abs().max()) == 0.0


def _at(frame: Frame, stamp_ns: int, blur_sigma: float = 0.0) -> Frame:
    """Return a copy of ``frame`` at another stamp, optionally blurred (Gaussian sigma, px)."""
    image = frame.image.copy()
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    return Frame(image, stamp_ns, frame.camera, frame.T_world_cam)


def test_motion_blurred_reference_gets_no_depth(fronto) -> None:
    ref, sources, _ = fronto
    est = PlaneSweepDepth(DepthConfig(), 'cpu')
    for k in range(4):
        assert est.estimate(_at(ref, 100 + k), sources).valid.float().mean() > 0.9
    blurred = _at(ref, 200, blur_sigma=1.5)
    result = est.estimate(blurred, sources)
    assert not bool(result.valid.any()) and est.blurred_frames == 1
    assert est.estimate(blurred, sources).valid.sum() == 0 and est.blurred_frames == 1
    # A sharp frame again is matched; with the test off the blurred frame is matched too.
    assert est.estimate(_at(ref, 300), sources).valid.float().mean() > 0.9
    off = PlaneSweepDepth(DepthConfig(blur_reject_ratio=0.0), 'cpu')
    for k in range(4):
        off.estimate(_at(ref, 100 + k), sources)
    assert off.estimate(blurred, sources).valid.float().mean() > 0.5
    assert off.blurred_frames == 0


def test_blur_history_restarts_when_time_goes_back(fronto) -> None:
    ref, sources, _ = fronto
    est = PlaneSweepDepth(DepthConfig(), 'cpu')
    for k in range(4):
        est.estimate(_at(ref, 100 + k), sources)
    # A replay restarting (stamp back) must not judge its first frame against the old history.
    assert est.estimate(_at(ref, 50, blur_sigma=1.5), sources).valid.any()
    assert est.blurred_frames == 0


def test_wrong_inputs_raise(fronto) -> None:
    ref, sources, _ = fronto
    est = PlaneSweepDepth(DepthConfig())
    small_cam = WORKING.scaled(160)
    small = Frame(cv2.resize(sources[0].image, (160, 120)), 1, small_cam, sources[0].T_world_cam)
    with pytest.raises(DepthInputError) as info:
        est.estimate(ref, [small])
    assert info.value.kind == 'depth_input' and isinstance(info.value, ValueError)
    with pytest.raises(DepthInputError):
        est.estimate(Frame(ref.image, 0, ref.camera, None), sources)
    with pytest.raises(ValueError):
        PlaneSweepDepth(DepthConfig(min_depth=2.0, max_depth=1.0))
    with pytest.raises(ValueError):
        PlaneSweepDepth(DepthConfig(match_window_px=4))


def test_box_mean_matches_avg_pool() -> None:
    x = torch.rand(3, 17, 23)
    ones = torch.ones(17, 23)
    count = box_sum(ones, 2)
    ref = torch.nn.functional.avg_pool2d(x[:, None], 5, 1, 2, count_include_pad=False)[:, 0]
    torch.testing.assert_close(box_mean(x, 2, count), ref, rtol=1e-5, atol=1e-6)


# --- Real data: TUM fr1/xyz -------------------------------------------------------------------

# (reference, sources): sources around the reference, and sources all in the past (as the
# sliding window provides them). Measured figures: at the test below.
TUM_CASES = [(18, (6, 12, 24, 30)), (36, (12, 18, 24, 30))]


@pytest.fixture(scope='module')
def tum(tum_dir):
    """Load the TUM sequence and its frames at the working resolution (320x240, undistorted)."""
    from l3rocc_core.datasets.tum import load_tum
    seq = load_tum(str(tum_dir))
    und = Undistorter(seq.camera, 320)
    frames = [Frame(und(f.rgb), f.stamp_ns, und.camera, f.T_world_cam) for f in seq.frames]
    return seq, frames


def _tum_gt(depth_m: np.ndarray, T_world_depth: np.ndarray, T_world_cam: np.ndarray,
            camera: PinholeCamera, raw: PinholeCamera) -> np.ndarray:
    """GT depth of the colour frame in ``camera`` (undistorted), from the registered depth.

    The depth image shares the raw (distorted) colour pixels: it is undistorted with nearest
    lookups into ``camera``, then moved from its own stamp's pose to the colour image's pose
    (z-buffered forward warp; up to 20 ms apart).
    """
    mx, my = cv2.initUndistortRectifyMap(raw.K, np.asarray(raw.D), None, camera.K,
                                         (camera.width, camera.height), cv2.CV_32FC1)
    d = cv2.remap(depth_m, mx, my, cv2.INTER_NEAREST)
    p = camera.pixel_rays().reshape(-1, 3) * d.reshape(-1, 1)
    T = np.linalg.solve(T_world_cam, T_world_depth)
    uv, z = camera.project(p @ T[:3, :3].T + T[:3, 3])
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    ok = (d.reshape(-1) > 0) & (z > 0) & (u >= 0) & (u < camera.width) & (v >= 0) & (
        v < camera.height)
    out = np.full(camera.width * camera.height, np.inf)
    np.minimum.at(out, v[ok] * camera.width + u[ok], z[ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(camera.height, camera.width).astype(np.float32)


# The defaults gate lightly (min_confidence 0.02, min_texture 0.002): the fusion's log-odds over
# the window reject outliers better than per-pixel gating, and the occupancy gains from dense depth
# (TUM newest-slice IoU 0.30 -> 0.38). The confident subset (min_confidence 0.3, min_texture 0.01)
# is checked for accuracy, the default map for density. Measured (ref 18 / 36, 7x7 window):
# confident median AbsRel 0.028 / 0.034, valid 46 % / 44 %; defaults median 0.044 / 0.050,
# valid 87 % / 88 %, within 10 % 0.75 / 0.73.
STRICT = {'min_confidence': 0.3, 'min_texture': 0.01}


@pytest.mark.parametrize('gate', ['strict', 'default'])
@pytest.mark.parametrize('ref, sources', TUM_CASES)
def test_tum_fr1_xyz_against_gt_depth(tum, ref: int, sources: Tuple[int, ...], gate: str,
                                      device: str) -> None:
    seq, frames = tum
    est = PlaneSweepDepth(DepthConfig(**STRICT) if gate == 'strict' else DepthConfig(), device)
    result = est.estimate(frames[ref], [frames[i] for i in sources])
    f = seq.frames[ref]
    gt = _tum_gt(f.depth_m, f.T_world_depth, f.T_world_cam, result.camera, seq.camera)
    d = result.depth.cpu().numpy()
    sel = result.valid.cpu().numpy() & (gt > 0)
    rel = np.abs(d[sel] - gt[sel]) / gt[sel]
    med, share = float(np.median(rel)), float(sel.sum() / (gt > 0).sum())
    within10 = float((rel < 0.10).mean())
    print(f'TUM fr1/xyz ref {ref} sources {sources} ({gate} gate): median AbsRel {med:.4f}, '
          f'valid {share:.3f} of GT pixels, within 5 % {(rel < 0.05).mean():.3f}, '
          f'within 10 % {within10:.3f}')
    if gate == 'strict':
        assert med < 0.045, med
        assert share > 0.38, share
        assert within10 > 0.8, within10
    else:
        assert med < 0.06, med
        assert share > 0.7, share
        assert within10 > 0.65, within10
