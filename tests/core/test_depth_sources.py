"""Depth from a depth topic and from a user's model: decoding, registration, results, errors.

Scenes are analytic (a plane, the ground seen from a known height and pitch, a wall standing
on it). The models are tiny networks that this module exports itself, to TorchScript and to
ONNX: they decode depth that the test wrote into the image's red and green channels, so the
input really passes through the model.
"""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Optional, Tuple
import warnings

import numpy as np
import pytest
import torch

from l3rocc_core.bags import MessageFactory
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import CameraConfig, DepthConfig, PipelineConfig
from l3rocc_core.convert import ConversionError, depth_image_to_metres, FrameBuilder
from l3rocc_core.depth import DepthInputError, make_depth_source
from l3rocc_core.depth.model import ModelDepth
from l3rocc_core.depth.topic import depth_result, TopicDepth
from l3rocc_core.frame import Frame
from l3rocc_core.pipeline import OccupancyPipeline, StageError
from l3rocc_core.preview import look_at

pytestmark = pytest.mark.usefixtures('one_thread')

CAM = PinholeCamera(160, 120, 150.0, 150.0, 79.5, 59.5)
ENCODE_RANGE_M = 16.0       # depth written into the image: red + green / 255 = depth / 16 x 255


# -- scenes --------------------------------------------------------------------------------
def plane_depth(camera: PinholeCamera, normal=(0.0, 0.3, 1.0), distance: float = 2.0
                ) -> np.ndarray:
    """float32 [H, W] z-depth of the plane n . p = distance (camera frame, n unnormalised)."""
    rays = camera.pixel_rays().astype(np.float64)
    return (distance / (rays @ np.asarray(normal))).astype(np.float32)


def ground_view(height: float, pitch_deg: float) -> np.ndarray:
    """T_world_cam of a camera at (0, 0, height) looking along +x, pitched down."""
    p = np.radians(pitch_deg)
    eye = np.array([0.0, 0.0, height])
    return look_at(eye, eye + [np.cos(p), 0.0, -np.sin(p)])


def ground_depth(camera: PinholeCamera, T_world_cam: np.ndarray,
                 wall: Optional[Tuple[float, float, float]] = None) -> np.ndarray:
    """float32 [H, W] z-depth of the ground z = 0 (and a wall), 0 where the ray sees neither.

    :param wall: (x, half width, height): a wall facing the camera at x, |y| <= half width,
        0 <= z <= height
    """
    rays = camera.pixel_rays().astype(np.float64)
    d = rays @ T_world_cam[:3, :3].T                                 # world direction, z = 1
    c = T_world_cam[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -c[2] / d[..., 2]
        t = np.where(np.isfinite(t) & (t > 0), t, np.inf)
        if wall is not None:
            x, half, top = wall
            tw = (x - c[0]) / d[..., 0]
            p = c + tw[..., None] * d
            on = (tw > 0) & (np.abs(p[..., 1]) <= half) & (p[..., 2] >= 0) & (p[..., 2] <= top)
            t = np.where(on & (tw < t), tw, t)
    return np.where(np.isfinite(t), t, 0.0).astype(np.float32)


def encode(depth: np.ndarray, blue: int = 128) -> np.ndarray:
    """uint8 [H, W, 3] image whose red and green hold the depth (see :class:`Decode`)."""
    v = np.clip(depth / ENCODE_RANGE_M, 0.0, 1.0) * 255.0
    red = np.floor(v)
    green = np.round((v - red) * 255.0)
    return np.stack([red, green, np.full_like(red, blue)], -1).astype(np.uint8)


def block_min(depth: np.ndarray, f: int) -> np.ndarray:
    """Block minimum of the valid (> 0) depths of [H, W], 0 for blocks without one."""
    h, w = depth.shape[0] // f, depth.shape[1] // f
    d = np.where(depth > 0, depth, np.inf)[:h * f, :w * f].reshape(h, f, w, f).min((1, 3))
    return np.where(np.isfinite(d), d, 0.0)


# -- tiny models ---------------------------------------------------------------------------
class Decode(torch.nn.Module):
    """Depth from the image's red and green channels, then a known transform of it.

    ``kind``: metric (depth), relative (0.5 x depth), inverse_relative (3 / depth + 0.2),
    two_channels (a [1, 2, h, w] output), nan_on_zero_blue (NaN wherever blue is 0).
    """

    def __init__(self, kind: str = 'metric'):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ENCODE_RANGE_M * (x[:, 0:1] + x[:, 1:2] / 255.0)
        if self.kind == 'relative':
            return 0.5 * d
        if self.kind == 'inverse_relative':
            return 3.0 / d.clamp_min(1e-3) + 0.2
        if self.kind == 'two_channels':
            return torch.cat([d, d], 1)
        if self.kind == 'nan_on_zero_blue':
            return d * (x[:, 2:3] / x[:, 2:3])
        return d


class FixedSize(torch.nn.Module):
    """Metric depth that only runs on 160 x 120 inputs (a learned bias of that size)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1, 1, 120, 160))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ENCODE_RANGE_M * (x[:, 0:1] + x[:, 1:2] / 255.0) + self.bias


def export_torchscript(module: torch.nn.Module, path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.trace(module.eval(), torch.rand(1, 3, 120, 160)).save(str(path))
    return str(path)


def export_onnx(module: torch.nn.Module, path: Path, size: Optional[Tuple[int, int]] = None
                ) -> str:
    """ONNX file of ``module``; ``size`` (h, w) fixes the input size, None leaves it free."""
    h, w = size or (120, 160)
    axes = None if size else {'image': {2: 'height', 3: 'width'},
                              'depth': {2: 'height', 3: 'width'}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(module.eval(), (torch.rand(1, 3, h, w),), str(path), dynamo=False,
                          input_names=['image'], output_names=['depth'], dynamic_axes=axes)
    return str(path)


def model_source(path: str, output: str = 'metric', **kw) -> ModelDepth:
    config = DepthConfig(depth_source='model', depth_model=path, depth_model_output=output,
                         **kw)
    source = make_depth_source(config, 'cpu')
    assert isinstance(source, ModelDepth)
    return source


def kind_of(source, frame: Frame) -> str:
    with pytest.raises(DepthInputError) as err:
        source.estimate(frame, [])
    return err.value.kind


# -- depth images --------------------------------------------------------------------------
def depth_msg(encoding: str, values: np.ndarray, bigendian: bool = False, pad: int = 0) -> NS:
    """Duck-typed sensor_msgs/Image of a depth array (rows padded by ``pad`` bytes)."""
    h, w = values.shape
    raw = values.astype(values.dtype.newbyteorder('>' if bigendian else '<'))
    rows = np.zeros((h, w * values.itemsize + pad), np.uint8)
    rows[:, :w * values.itemsize] = raw.view(np.uint8).reshape(h, -1)
    return NS(encoding=encoding, height=h, width=w, step=rows.shape[1], data=rows.tobytes(),
              is_bigendian=int(bigendian))


MM = np.array([[0, 1000, 65535], [1500, 1, 0]], np.uint16)
METRES = np.array([[np.nan, 1.25, np.inf], [-np.inf, -1.0, 3.5]], np.float32)


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 3])
def test_16uc1_is_millimetres(bigendian, pad):
    out = depth_image_to_metres(depth_msg('16UC1', MM, bigendian, pad))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0, 65.535], [1.5, 0.001, 0.0]], rtol=1e-6)


@pytest.mark.parametrize('bigendian', [False, True])
def test_32fc1_is_metres_and_nan_inf_negative_are_no_return(bigendian):
    out = depth_image_to_metres(depth_msg('32FC1', METRES, bigendian, pad=4))
    np.testing.assert_array_equal(out, [[0.0, 1.25, 0.0], [0.0, 0.0, 3.5]])


def test_depth_from_rosbags_and_rclpy_messages():
    factory = MessageFactory()
    raw = MM.astype('<u2').view(np.uint8).reshape(-1)
    msg = factory.image_raw(raw, 3, 2, 6, '16UC1', 5, 'cam')
    name = 'sensor_msgs/msg/Image'
    ts = factory.typestore
    msg = ts.deserialize_cdr(ts.serialize_cdr(msg, name), name)
    np.testing.assert_allclose(depth_image_to_metres(msg), MM / 1000.0, rtol=1e-6)
    image = pytest.importorskip('sensor_msgs.msg').Image
    ros = image(height=2, width=3, encoding='32FC1', is_bigendian=0, step=12,
                data=METRES.tobytes())
    np.testing.assert_array_equal(depth_image_to_metres(ros), [[0.0, 1.25, 0.0],
                                                               [0.0, 0.0, 3.5]])


@pytest.mark.parametrize('mutate, kind', [
    (lambda m: setattr(m, 'encoding', 'rgb8'), 'bad_depth_encoding'),
    (lambda m: setattr(m, 'encoding', 'mono16'), 'bad_depth_encoding'),
    (lambda m: setattr(m, 'encoding', '32FC3'), 'bad_depth_encoding'),
    (lambda m: setattr(m, 'data', m.data[:-1]), 'bad_image_data'),
    (lambda m: setattr(m, 'step', 5), 'bad_image_step'),
    (lambda m: setattr(m, 'height', 0), 'bad_image_size'),
])
def test_bad_depth_messages_raise_with_kind(mutate, kind):
    msg = depth_msg('16UC1', MM)
    mutate(msg)
    with pytest.raises(ConversionError) as err:
        depth_image_to_metres(msg)
    assert err.value.kind == kind


# -- frame builder ---------------------------------------------------------------------------
RAW = PinholeCamera(640, 480, 600.0, 600.0, 319.5, 239.5)
DISTORTED = PinholeCamera(640, 480, 600.0, 600.0, 319.5, 239.5, 'plumb_bob',
                          (-0.25, 0.08, 0.001, -0.001, 0.0))


def stripes() -> Tuple[np.ndarray, np.ndarray]:
    """Return a raw image and its registered depth: bands of four depths, a few holes."""
    band = (np.arange(640) // 40) % 4
    depth = np.tile(np.array([1.0, 2.5, 3.75, 0.0], np.float32)[band], (480, 1))
    depth[100:110, 200:260] = np.nan
    rgb = np.repeat((band * 80).astype(np.uint8)[None, :, None], 480, 0).repeat(3, 2)
    return rgb, depth


@pytest.mark.parametrize('camera', [RAW, DISTORTED], ids=['pinhole', 'distorted'])
def test_frame_depth_is_resized_and_undistorted_by_nearest(camera):
    rgb, depth = stripes()
    builder = FrameBuilder(CameraConfig(working_width=160))
    frame = builder.build(rgb, camera, 7, np.eye(4), 'c', depth=depth)
    assert frame.depth.shape == frame.image.shape[:2] == (120, 160)
    assert frame.depth.dtype == np.float32
    # Nearest neighbour: only the input's depths (and no return) appear, never a blend.
    assert set(np.unique(frame.depth).tolist()) <= {0.0, 1.0, 2.5, 3.75}
    # Registered like the image: the band of each pixel agrees with the image's band, except
    # next to band edges, where the image is interpolated.
    band_img = np.round(frame.image[..., 0] / 80.0)
    band_depth = np.select([frame.depth == 1.0, frame.depth == 2.5, frame.depth == 3.75],
                           [0, 1, 2], 3)
    inner = np.abs(frame.image[..., 0].astype(int) - band_img * 80) < 10
    assert np.mean(band_img[inner] == band_depth[inner]) > 0.97


def test_frame_depth_size_mismatch_and_empty_depth_raise_with_kind():
    rgb, depth = stripes()
    builder = FrameBuilder(CameraConfig(working_width=160))
    for bad in (depth[:240, :320], depth[..., None]):
        with pytest.raises(ConversionError) as err:
            builder.build(rgb, RAW, 7, None, 'c', depth=bad)
        assert err.value.kind == 'depth_size_mismatch'
    for empty in (np.full_like(depth, np.nan), np.zeros_like(depth)):
        with pytest.raises(ConversionError) as err:
            builder.build(rgb, RAW, 7, None, 'c', depth=empty)
        assert err.value.kind == 'depth_empty'
    assert builder.build(rgb, RAW, 7, None, 'c').depth is None


# -- TopicDepth ------------------------------------------------------------------------------
def test_block_minimum_and_range_on_a_small_map():
    cam = PinholeCamera(5, 4, 4.0, 4.0, 2.0, 1.5)
    depth = torch.tensor([[1.0, 2.0, 0.0, 0.0, 9.0],
                          [3.0, 4.0, 0.0, 5.0, 9.0],
                          [0.2, 2.0, 6.0, 2.5, 9.0],
                          [2.2, np.nan, 3.0, 2.6, 9.0]])
    config = DepthConfig(min_depth=0.3, max_depth=5.5, depth_downsample=2, depth_edge_ratio=0.0)
    res = depth_result(depth, cam, config)
    assert (res.camera.width, res.camera.height) == (2, 2)
    # 0.2 is below min_depth and 6.0 beyond max_depth: no return, not clipped onto the range.
    np.testing.assert_allclose(res.depth.numpy(), [[1.0, 5.0], [2.0, 2.5]])
    assert res.valid.all() and (res.confidence == 1.0).all()


def test_topic_depth_of_a_plane(device):
    depth = plane_depth(CAM)
    frame = Frame(encode(depth), 1, CAM, np.eye(4), 'c', depth=depth)
    config = DepthConfig(depth_source='topic', min_depth=0.3, max_depth=2.1)
    source = make_depth_source(config, device)
    assert isinstance(source, TopicDepth)
    assert not source.uses_sources and not source.requires_sources
    res = source.estimate(frame, [])
    assert (res.camera.width, res.camera.height) == (80, 60)
    assert res.camera == CAM.reduced(2)
    truth = plane_depth(res.camera)                 # at the centres of the output pixels
    valid = res.valid.cpu().numpy()
    d = res.depth.cpu().numpy()
    # The block minimum lies below the centre's depth by at most the block's depth spread.
    assert np.all(d[valid] <= truth[valid] + 1e-5)
    assert np.all(np.abs(d[valid] - truth[valid]) / truth[valid] < 0.01)
    # Beyond max_depth is invalid, everything nearer valid with confidence 1 (a smooth plane).
    np.testing.assert_array_equal(valid, block_min(depth, 2) <= 2.1)
    assert 0.2 < valid.mean() < 0.9
    assert torch.all(res.confidence[res.valid] == 1.0)
    assert torch.all(res.depth[~res.valid] == 0.0)


def test_flying_pixels_at_an_edge_get_no_confidence():
    depth = np.full((120, 160), 3.0, np.float32)
    depth[:, :80] = 1.0                             # foreground left, background right
    depth[:, 80] = 2.0                              # the flying pixels between them
    depth[:, 81] = 2.9                              # nearly background: a small error
    frame = Frame(encode(depth), 1, CAM, None, 'c', depth=depth)
    config = DepthConfig(depth_source='topic', depth_downsample=1)
    res = TopicDepth(config).estimate(frame, [])
    conf = res.confidence.numpy()
    assert np.all(conf[:, 80] == 0.0) and not res.valid[:, 80].any()
    # The foreground and background next to the edge are real surfaces: kept.
    assert np.all(conf[:, [78, 79, 82, 83]] == 1.0) and res.valid[:, [79, 82]].all()
    assert np.all(conf[:, 81] > 0.5)
    off = TopicDepth(replace(config, depth_edge_ratio=0.0)).estimate(frame, [])
    assert off.valid.all() and torch.all(off.confidence == 1.0)


def test_topic_frame_without_depth_is_depth_missing():
    source = TopicDepth(DepthConfig())
    assert kind_of(source, Frame(np.zeros((120, 160, 3), np.uint8), 1, CAM)) == 'depth_missing'


# -- ModelDepth ------------------------------------------------------------------------------
def test_model_metric_plane_torchscript_at_working_size(tmp_path, device):
    path = export_torchscript(Decode('metric'), tmp_path / 'metric.pt')
    depth = plane_depth(CAM)
    config = DepthConfig(depth_source='model', depth_model=path, max_depth=2.1)
    source = make_depth_source(config, device)
    assert isinstance(source, ModelDepth) and source.name == 'model'
    res = source.estimate(Frame(encode(depth), 1, CAM), [])
    reference = TopicDepth(config, device).estimate(Frame(encode(depth), 1, CAM, depth=depth),
                                                    [])
    # The image holds the depth to 0.25 mm: the model's map is the depth image's.
    valid = res.valid.cpu().numpy()
    np.testing.assert_array_equal(valid, reference.valid.cpu().numpy())
    np.testing.assert_allclose(res.depth.cpu().numpy()[valid],
                               reference.depth.cpu().numpy()[valid], atol=3e-4)
    assert source.load_attempts == 1 and source.last_fit is None


def test_model_metric_plane_onnx_with_a_fixed_input_size(tmp_path):
    path = export_onnx(Decode('metric'), tmp_path / 'fixed.onnx', size=(60, 80))
    depth = plane_depth(CAM)
    res = model_source(path, max_depth=10.0).estimate(Frame(encode(depth), 1, CAM), [])
    assert (res.camera.width, res.camera.height) == (80, 60)
    truth = plane_depth(res.camera)
    err = np.abs(res.depth.numpy() - truth) / truth
    # Resized in (area-like) and out (bilinear): a plane's depth is nearly linear over pixels.
    assert res.valid.all() and np.median(err) < 0.002 and err.max() < 0.005


@pytest.mark.parametrize('output, export, suffix', [('relative', export_torchscript, '.pt'),
                                                    ('inverse_relative', export_onnx, '.onnx')])
def test_non_metric_model_is_scaled_to_the_ground(tmp_path, output, export, suffix):
    path = export(Decode(output), tmp_path / f'model{suffix}')
    T = ground_view(1.2, 30.0)
    truth = ground_depth(CAM, T, wall=(3.0, 0.4, 0.6))
    # The model sees the depth with 0.5 % noise: one pixel's ratio is not the scale.
    noisy = truth * (1.0 + 0.005 * np.random.default_rng(1).standard_normal(truth.shape))
    source = model_source(path, output, max_depth=6.0)
    res = source.estimate(Frame(encode(noisy), 1, CAM, T), [])
    expected = block_min(np.where(truth <= 6.0, truth, 0.0), 2)
    valid = res.valid.numpy()
    assert valid.mean() > 0.5
    err = np.abs(res.depth.numpy()[valid] - expected[valid]) / expected[valid]
    assert np.percentile(err, 95) < 0.02
    scale, shift, share = source.last_fit
    if output == 'relative':
        assert scale == pytest.approx(2.0, rel=0.002) and shift == 0.0
    else:                                           # 1 / depth = (disparity - 0.2) / 3
        assert scale == pytest.approx(1 / 3, rel=0.002)
        assert shift == pytest.approx(-0.2 / 3, rel=0.01)
    # The wall hides part of the ground: those pixels disagree with the ground, and the share
    # of agreeing ground pixels scales the confidence.
    assert 0.5 < share < 0.98
    assert torch.allclose(res.confidence[res.valid].max(), torch.tensor(share))


def test_non_metric_model_without_ground_or_pose_has_no_scale_then_recovers(tmp_path):
    path = export_torchscript(Decode('relative'), tmp_path / 'relative.ts')
    source = model_source(path, 'relative', max_depth=6.0)
    T = ground_view(1.2, 30.0)
    seen = encode(ground_depth(CAM, T))
    assert kind_of(source, Frame(seen, 1, CAM)) == 'depth_model_no_scale'
    up = ground_view(1.2, -30.0)                    # looking up: no ground in view
    sky = encode(np.full((120, 160), 5.0, np.float32))
    assert kind_of(source, Frame(sky, 2, CAM, up)) == 'depth_model_no_scale'
    assert source.estimate(Frame(seen, 3, CAM, T), []).valid.any()


def test_missing_and_corrupt_model_files(tmp_path):
    assert kind_of(model_source(str(tmp_path / 'none.onnx')),
                   Frame(np.zeros((120, 160, 3), np.uint8), 1, CAM)) == 'depth_model_missing'
    frame = Frame(encode(plane_depth(CAM)), 1, CAM)
    rng = np.random.default_rng(3)
    for name in ('random.onnx', 'random.pt', 'random.bin'):
        path = tmp_path / name
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        source = model_source(str(path))
        assert kind_of(source, frame) == 'depth_model_corrupt'
        assert kind_of(source, frame) == 'depth_model_corrupt'
        assert source.load_attempts == 1            # the failure is remembered, not retried
    # Once the file is replaced by a model, the next frame loads it.
    path = tmp_path / 'random.onnx'
    source = model_source(str(path))
    assert kind_of(source, frame) == 'depth_model_corrupt'
    export_onnx(Decode('metric'), path)
    assert source.estimate(frame, []).valid.any() and source.load_attempts == 2


def test_bad_model_outputs_and_failures_drop_only_their_frame(tmp_path):
    frame = Frame(encode(plane_depth(CAM)), 1, CAM)
    two = model_source(export_onnx(Decode('two_channels'), tmp_path / 'two.onnx'))
    assert kind_of(two, frame) == 'depth_model_bad_output'
    fragile = model_source(export_torchscript(Decode('nan_on_zero_blue'), tmp_path / 'nan.pt'))
    black_blue = Frame(encode(plane_depth(CAM), blue=0), 2, CAM)
    assert kind_of(fragile, black_blue) == 'depth_model_bad_output'
    assert fragile.estimate(frame, []).valid.any()
    fixed = model_source(export_torchscript(FixedSize(), tmp_path / 'fixed.pt'))
    small = PinholeCamera(80, 60, 75.0, 75.0, 39.5, 29.5)
    assert kind_of(fixed, Frame(encode(plane_depth(small)), 3, small)) == 'depth_model_failed'
    assert fixed.estimate(frame, []).valid.any()


def test_pipeline_with_topic_depth_drops_only_frames_without_depth():
    config = PipelineConfig().with_values({
        'depth_source': 'topic', 'refiner': 'none', 'device': 'cpu', 'window_size': 3,
        'grid_min': [-1.0, -1.0, 0.0], 'grid_max': [1.0, 1.0, 2.0]})
    pipe = OccupancyPipeline(config)
    wall = plane_depth(CAM, normal=(0.0, 0.0, 1.0), distance=1.52)     # facing the camera
    image = encode(wall)
    pipe.push(Frame(image, 1, CAM, np.eye(4), 'c', depth=wall))
    with pytest.raises(StageError) as err:
        pipe.push(Frame(image, 2, CAM, np.eye(4), 'c'))
    assert err.value.stage == 'depth' and err.value.kind == 'depth_missing'
    out = pipe.push(Frame(image, 3, CAM, np.eye(4), 'c', depth=wall))
    assert pipe.stats['processed'] == 2 and out.stamps_ns.tolist() == [1, 3]
    idx, _ = out.occupied()
    k = pipe.grid.flat_to_ijk(idx)[:, 2]
    assert len(idx) > 100 and np.all(np.abs(k - 30) <= 1)  # the wall's layer, z in [1.5, 1.55)
