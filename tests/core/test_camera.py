"""PinholeCamera and Undistorter against closed forms."""

import cv2
import numpy as np
import pytest

from l3rocc_core.camera import CameraModelError, PinholeCamera, Undistorter

K_TUM = [517.3, 0, 318.6, 0, 516.5, 255.3, 0, 0, 1]
D_TUM = [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]


def test_binning_and_roi_as_image_geometry():
    cam = PinholeCamera.from_camera_info(640, 480, K_TUM, [], 'plumb_bob', 2, 2,
                                         (100, 40, 400, 300))
    assert (cam.width, cam.height) == (200, 150)
    assert cam.fx == pytest.approx(517.3 / 2) and cam.fy == pytest.approx(516.5 / 2)
    assert cam.cx == pytest.approx((318.6 - 100) / 2)
    assert cam.cy == pytest.approx((255.3 - 40) / 2)
    assert cam.distortion_model == 'none'


def test_projection_closed_form():
    cam = PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0)
    uv, z = cam.project(np.array([[0.2, -0.1, 2.0]]))
    np.testing.assert_allclose(uv[0], [320 + 500 * 0.1, 240 - 500 * 0.05])
    rays = cam.pixel_rays()
    assert rays.shape == (480, 640, 3)
    np.testing.assert_allclose(rays[240, 320], [0, 0, 1], atol=1e-7)
    np.testing.assert_allclose(rays[0, 0], [-320 / 500, -240 / 500, 1], atol=1e-6)


def test_scaling_keeps_pixel_centres():
    cam = PinholeCamera(640, 480, 500.0, 500.0, 319.5, 239.5)
    half = cam.scaled(320)
    assert (half.width, half.height) == (320, 240)
    assert half.cx == pytest.approx(159.5) and half.fx == pytest.approx(250.0)


@pytest.mark.parametrize('K, D, model', [
    ([0] * 9, [], 'plumb_bob'),
    ([float('nan')] + K_TUM[1:], [], 'plumb_bob'),
    (K_TUM, [0.1, float('inf'), 0, 0, 0], 'plumb_bob'),
    (K_TUM, [0.1, 0, 0, 0, 0], 'fisheye_magic'),
])
def test_bad_intrinsics_raise(K, D, model):
    with pytest.raises(CameraModelError):
        PinholeCamera.from_camera_info(640, 480, K, D, model)


def test_roi_outside_sensor_raises():
    with pytest.raises(CameraModelError):
        PinholeCamera.from_camera_info(640, 480, K_TUM, [], 'plumb_bob', 0, 0,
                                       (600, 0, 100, 100))


def test_undistort_matches_opencv_projection():
    cam = PinholeCamera.from_camera_info(640, 480, K_TUM, D_TUM, 'plumb_bob')
    und = Undistorter(cam, 320)
    # A 3D point projected with distortion into the raw image must land, after
    # undistortion, where the pinhole model of the output camera puts it.
    p = np.array([[0.3, -0.2, 1.5]])
    uv_raw, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), cam.K, np.array(D_TUM))
    u, v = uv_raw[0, 0]
    raw = np.zeros((480, 640, 3), np.uint8)
    cv2.circle(raw, (int(round(u)), int(round(v))), 6, (255, 255, 255), -1)
    out = und(raw)
    assert out.shape == (240, 320, 3)
    ys, xs = np.nonzero(out[..., 0] > 100)
    uv_expected, _ = und.camera.project(p)
    assert abs(xs.mean() - uv_expected[0, 0]) < 1.0
    assert abs(ys.mean() - uv_expected[0, 1]) < 1.0


def test_undistorter_rejects_wrong_size():
    cam = PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0)
    with pytest.raises(CameraModelError):
        Undistorter(cam, 320)(np.zeros((240, 320, 3), np.uint8))


def test_pixel_rays_are_float32_for_numpy_intrinsics():
    cam = PinholeCamera(4, 3, np.float64(2.0), np.float64(2.0), np.float64(1.5), np.float64(1.0))
    assert cam.pixel_rays().dtype == np.float32
