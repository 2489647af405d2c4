"""Message conversion on small fixed arrays (duck-typed messages, as rosbags gives them)."""

from types import SimpleNamespace as NS

import cv2
import numpy as np
import pytest

from l3rocc_core.config import CameraConfig
from l3rocc_core.convert import (camera_from_info, compressed_to_rgb, ConversionError,
                                 depth_image_to_metres, FrameBuilder, image_to_rgb,
                                 ns_to_sec_nanosec,
                                 pose_to_matrix, stamp_to_ns, transform_to_matrix)

RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def image_msg(encoding, arr, step=None, data=None):
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    step = w * c if step is None else step
    if data is None:
        rows = np.zeros((h, step), np.uint8)
        rows[:, :w * c] = arr.reshape(h, -1)
        data = rows.tobytes()
    return NS(encoding=encoding, height=h, width=w, step=step, data=data, is_bigendian=0)


@pytest.mark.parametrize('encoding, arr', [
    ('rgb8', RGB), ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.concatenate([RGB, np.full((2, 3, 1), 7, np.uint8)], 2)),
    ('bgra8', np.concatenate([RGB[..., ::-1], np.full((2, 3, 1), 7, np.uint8)], 2)),
])
def test_colour_encodings(encoding, arr):
    np.testing.assert_array_equal(image_to_rgb(image_msg(encoding, arr)), RGB)


def test_mono_and_padded_step_and_numpy_data():
    mono = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    out = image_to_rgb(image_msg('mono8', mono, step=8))
    np.testing.assert_array_equal(out[..., 0], mono)
    np.testing.assert_array_equal(out[..., 2], mono)
    msg = image_msg('rgb8', RGB)
    msg.data = np.frombuffer(msg.data, np.uint8).copy()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize('mutate, kind', [
    (lambda m: setattr(m, 'encoding', 'yuv422'), 'unsupported_encoding'),
    (lambda m: setattr(m, 'encoding', '32FC1'), 'unsupported_encoding'),
    (lambda m: setattr(m, 'encoding', 'bayer_rggb8'), 'unsupported_encoding'),
    (lambda m: setattr(m, 'step', 5), 'bad_image_step'),
    (lambda m: setattr(m, 'data', b'\x00' * 5), 'bad_image_data'),
    (lambda m: setattr(m, 'data', b''), 'bad_image_data'),
    (lambda m: setattr(m, 'width', 0), 'bad_image_size'),
    (lambda m: (setattr(m, 'width', 8000), setattr(m, 'height', 8000)), 'bad_image_size'),
])
def test_bad_images_raise_with_kind(mutate, kind):
    msg = image_msg('rgb8', RGB)
    mutate(msg)
    with pytest.raises(ConversionError) as err:
        image_to_rgb(msg)
    assert err.value.kind == kind


def test_compressed():
    ok, buf = cv2.imencode('.png', RGB[..., ::-1])
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb(NS(format='png', data=buf.tobytes())), RGB)
    with pytest.raises(ConversionError):
        compressed_to_rgb(NS(format='jpeg', data=b'not an image'))


def depth_msg(encoding, arr, big_endian=False, step=None):
    h, w = arr.shape
    data = np.ascontiguousarray(arr, arr.dtype.newbyteorder('>' if big_endian else '<'))
    rows = data.view(np.uint8).reshape(h, -1)
    step = rows.shape[1] if step is None else step
    padded = np.zeros((h, step), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return NS(encoding=encoding, height=h, width=w, step=step, data=padded.tobytes(),
              is_bigendian=int(big_endian))


def test_depth_16uc1_millimetres_and_32fc1_metres():
    mm = np.array([[0, 1, 1500], [65535, 250, 0]], np.uint16)
    metres = mm.astype(np.float32) / 1000
    for big_endian in (False, True):
        out = depth_image_to_metres(depth_msg('16UC1', mm, big_endian, step=8))
        assert out.dtype == np.float32 and out.shape == (2, 3)
        np.testing.assert_allclose(out, metres, rtol=1e-6)
    m = np.array([[1.25, np.nan, -2.0], [np.inf, 0.0, 3.5]], np.float32)
    np.testing.assert_array_equal(depth_image_to_metres(depth_msg('32FC1', m)),
                                  [[1.25, 0, 0], [0, 0, 3.5]])


@pytest.mark.parametrize('mutate, kind', [
    (lambda m: setattr(m, 'encoding', 'mono16'), 'bad_depth_encoding'),
    (lambda m: setattr(m, 'encoding', 'rgb8'), 'bad_depth_encoding'),
    (lambda m: setattr(m, 'step', 5), 'bad_image_step'),
    (lambda m: setattr(m, 'data', b'\x00' * 5), 'bad_image_data'),
    (lambda m: setattr(m, 'height', 0), 'bad_image_size'),
])
def test_bad_depth_images_raise_with_kind(mutate, kind):
    msg = depth_msg('16UC1', np.ones((2, 3), np.uint16))
    mutate(msg)
    with pytest.raises(ConversionError) as err:
        depth_image_to_metres(msg)
    assert err.value.kind == kind


def info_msg(**kw):
    base = dict(width=640, height=480, k=[500.0, 0, 320, 0, 500, 240, 0, 0, 1], d=[],
                distortion_model='plumb_bob', binning_x=0, binning_y=0,
                roi=NS(x_offset=0, y_offset=0, width=0, height=0))
    base.update(kw)
    return NS(**base)


def test_camera_info():
    cam = camera_from_info(info_msg(binning_x=2, binning_y=2))
    assert (cam.width, cam.height, cam.fx) == (320, 240, 250.0)
    bads = (dict(k=[0.0] * 9), dict(k=[float('nan')] * 9),
            dict(distortion_model='x', d=[0.1, 0, 0, 0, 0]))
    for bad in bads:
        with pytest.raises(ConversionError) as err:
            camera_from_info(info_msg(**bad))
        assert err.value.kind == 'bad_camera_info'


def test_stamps_and_poses():
    assert stamp_to_ns(NS(sec=3, nanosec=5)) == 3_000_000_005
    assert ns_to_sec_nanosec(3_000_000_005) == (3, 5)
    tf = NS(translation=NS(x=1.0, y=2.0, z=3.0), rotation=NS(x=0.0, y=0.0, z=1.0, w=0.0))
    T = transform_to_matrix(tf)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3], np.diag([-1, -1, 1]), atol=1e-12)
    pose = NS(position=NS(x=0.0, y=0.0, z=0.0), orientation=NS(x=0.0, y=0.0, z=0.0, w=1.5))
    np.testing.assert_allclose(pose_to_matrix(pose), np.eye(4))
    for q in ((float('nan'), 0, 0, 1), (0, 0, 0, 0)):
        bad = NS(translation=NS(x=0.0, y=0.0, z=0.0), rotation=NS(x=q[0], y=q[1], z=q[2],
                                                                  w=q[3]))
        with pytest.raises(ConversionError) as err:
            transform_to_matrix(bad)
        assert err.value.kind == 'bad_pose'


def test_frame_builder_resizes_and_checks_size():
    cam = camera_from_info(info_msg())
    fb = FrameBuilder(CameraConfig(working_width=160))
    frame = fb.build(np.zeros((480, 640, 3), np.uint8), cam, 7, np.eye(4), 'cam')
    assert frame.image.shape == (120, 160, 3) and frame.camera.fx == pytest.approx(125.0)
    with pytest.raises(ConversionError) as err:
        fb.build(np.zeros((240, 320, 3), np.uint8), cam, 7, None, 'cam')
    assert err.value.kind == 'size_mismatch'
