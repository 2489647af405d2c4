"""Fuzzing the message converters: any message gives a result or a ConversionError, nothing else.

Messages are duck-typed (``SimpleNamespace`` with the ROS field names), as ``rosbags`` delivers
them; field values stay within their ROS types (uint32 sizes, uint8 data, float64 K/D) but are
otherwise arbitrary, with a bias towards the edge cases (zero, huge, NaN/Inf, inconsistent
sizes). Each test has a fixed example budget and no deadline; the module runs in a few seconds.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import given, HealthCheck, settings, strategies as st  # noqa: E402

from l3rocc_core.config import CameraConfig  # noqa: E402
from l3rocc_core.convert import (ConversionError, ENCODINGS, FrameBuilder,  # noqa: E402
                                 MAX_IMAGE_PIXELS, camera_from_info, compressed_to_rgb,
                                 image_to_rgb, pose_to_matrix, transform_to_matrix)

FUZZ = settings(deadline=None, max_examples=200, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
UINT32 = st.one_of(st.integers(0, 4), st.integers(0, 2 ** 32 - 1), st.sampled_from(
    [1, 2, 3, 16, 120, 160, 7680, 8192, 2 ** 31]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]))
ENCODING = st.one_of(st.sampled_from(list(ENCODINGS) + [
    'RGB8', 'yuv422', '32FC1', '16UC1', 'mono16', 'bayer_rggb8', '', 'rgb8 ', '8UC3']),
    st.text(max_size=12))


def _data(size: int, kind: int):
    raw = bytes(size % 251 for size in range(size))
    return (raw, np.frombuffer(raw, np.uint8), bytearray(raw), list(raw))[kind % 4]


@st.composite
def images(draw):
    """Draw an Image-like message: a consistent one, then some fields broken."""
    encoding = draw(ENCODING)
    channels = ENCODINGS.get(encoding, (3, None))[0]
    w, h = draw(st.integers(0, 40)), draw(st.integers(0, 30))
    step = w * channels + draw(st.integers(0, 3))
    size = step * h
    msg = {'height': h, 'width': w, 'encoding': encoding, 'is_bigendian': draw(st.integers(0, 1)),
           'step': step}
    for key in draw(st.lists(st.sampled_from(['height', 'width', 'step']), max_size=3)):
        msg[key] = draw(UINT32)
    size = draw(st.one_of(st.just(size), st.integers(0, 2000)))
    msg['data'] = _data(size, draw(st.integers(0, 3)))
    return SimpleNamespace(**msg)


@FUZZ
@given(images())
def test_image_to_rgb_result_or_conversion_error(msg) -> None:
    try:
        rgb = image_to_rgb(msg)
    except ConversionError as exc:
        assert exc.kind in ('unsupported_encoding', 'bad_image_size', 'bad_image_step',
                            'bad_image_data') and str(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)
    assert rgb.flags['C_CONTIGUOUS'] and 0 < msg.height * msg.width <= MAX_IMAGE_PIXELS


@st.composite
def compressed(draw):
    """Draw a CompressedImage-like message: random bytes, or a PNG/JPEG cut or bit-flipped."""
    import cv2
    kind = draw(st.integers(0, 2))
    if kind == 0:
        data = draw(st.binary(max_size=600))
    else:
        w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        img = np.full((h, w, 3), draw(st.integers(0, 255)), np.uint8)
        ok, buf = cv2.imencode('.png' if kind == 1 else '.jpg', img)
        data = bytearray(buf.tobytes())
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data
        for pos in draw(st.lists(st.integers(0, max(0, len(data) - 1)), max_size=4)):
            if data:
                data[pos] ^= 0xFF
        data = bytes(data)
    return SimpleNamespace(format=draw(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg '
                                                        'compressed bgr8', ''])), data=data)


@FUZZ
@given(compressed())
def test_compressed_to_rgb_result_or_conversion_error(msg) -> None:
    try:
        rgb = compressed_to_rgb(msg)
    except ConversionError as exc:
        assert exc.kind in ('bad_image_data', 'bad_image_size') and str(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@st.composite
def camera_infos(draw):
    """Draw a CameraInfo-like message around a plausible camera, with fields broken."""
    w, h = draw(st.integers(1, 64)), draw(st.integers(1, 48))
    k = [60.0, 0.0, w / 2, 0.0, 60.0, h / 2, 0.0, 0.0, 1.0]
    rarely = st.integers(0, 3).map(lambda n: n == 0)  # each breakage in a quarter of cases
    if draw(rarely):
        for i in draw(st.lists(st.integers(0, 8), min_size=1, max_size=4)):
            k[i] = draw(FLOATS)
    if draw(rarely):
        k = k[:draw(st.integers(0, 12))] + [1.0] * max(0, draw(st.integers(-3, 3)))
    model = draw(st.sampled_from(['plumb_bob', 'rational_polynomial']))
    if draw(rarely):
        model = draw(st.sampled_from(['equidistant', '', 'none', 'Plumb_Bob']))
    d = draw(st.one_of(st.lists(st.floats(-1.0, 1.0), max_size=15),
                       st.lists(FLOATS, max_size=15)))
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0)
    if draw(rarely):
        roi = SimpleNamespace(x_offset=draw(UINT32), y_offset=draw(UINT32),
                              width=draw(UINT32), height=draw(UINT32))
    binning = st.one_of(st.sampled_from([0, 0, 0, 1, 2]), UINT32)
    return SimpleNamespace(width=w if not draw(rarely) else draw(UINT32),
                           height=h if not draw(rarely) else draw(UINT32), k=k, d=d,
                           distortion_model=model, binning_x=draw(binning),
                           binning_y=draw(binning), roi=roi)


@FUZZ
@given(camera_infos(), st.integers(0, 3))
def test_camera_from_info_result_or_conversion_error(msg, seed) -> None:
    """A camera that comes out must also build frames (undistortion tables included)."""
    try:
        camera = camera_from_info(msg)
    except ConversionError as exc:
        assert exc.kind == 'bad_camera_info' and str(exc)
        return
    assert camera.width > 0 and camera.height > 0
    assert camera.fx > 0 and camera.fy > 0 and np.all(np.isfinite(camera.K))
    if camera.width * camera.height > 64 * 48:
        return  # a huge but valid camera: building a frame would only cost memory
    rgb = np.full((camera.height, camera.width, 3), 17 * seed, np.uint8)
    try:
        frame = FrameBuilder(CameraConfig(working_width=64)).build(rgb, camera, 1, None, 'cam')
    except ConversionError as exc:
        assert exc.kind in ('bad_camera_info', 'size_mismatch') and str(exc)
        return
    assert frame.image.dtype == np.uint8 and frame.image.shape[2] == 3


def _vector(draw, names):
    return SimpleNamespace(**{n: draw(FLOATS) if draw(st.integers(0, 3)) == 0
                              else draw(st.floats(-10, 10)) for n in names})


@st.composite
def transforms(draw):
    """Draw a Transform-like and a Pose-like message from the same random numbers."""
    t = _vector(draw, 'xyz')
    q = _vector(draw, 'xyzw')
    if draw(st.booleans()):  # mostly near-unit quaternions, scaled
        v = np.array([q.x, q.y, q.z, q.w], np.float64)
        n = np.linalg.norm(v) if np.all(np.isfinite(v)) else 0.0
        if n > 0:
            s = draw(st.sampled_from([1.0, 0.3, 0.6, 1.9, 2.5, 1e-9]))
            q = SimpleNamespace(**dict(zip('xyzw', (v / n * s).tolist())))
    return (SimpleNamespace(translation=t, rotation=q),
            SimpleNamespace(position=t, orientation=q))


@FUZZ
@given(transforms())
def test_transform_to_matrix_result_or_conversion_error(msgs) -> None:
    for convert, msg in ((transform_to_matrix, msgs[0]), (pose_to_matrix, msgs[1])):
        try:
            T = convert(msg)
        except ConversionError as exc:
            assert exc.kind == 'bad_pose' and str(exc)
            continue
        assert T.shape == (4, 4) and np.all(np.isfinite(T))
        R = T[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert abs(np.linalg.det(R) - 1.0) < 1e-9
        np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])
