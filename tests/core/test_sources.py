"""Sources: bag topic choice, bad bags, videos, image folders, intrinsics and pose files."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.msg import get_types_from_msg

from l3rocc_core.bags import CameraBagWriter
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.datasets.tum import BUNDLE_TOPICS
from l3rocc_core.sources import (BagSource, ImageFolderSource, PoseTable, SourceError,
                                 VideoSource, camera_factory, load_tum_trajectory, open_source,
                                 parse_intrinsics, seconds_text_to_ns)
from l3rocc_core.transforms import make_transform

VIDEO = Path(__file__).resolve().parents[2] / 'data' / 'intel_car_detection_2s.mp4'
CAM = PinholeCamera(32, 24, 30.0, 30.0, 15.5, 11.5)
T0 = 1_000_000_000


def _bag(path: Path, camera_info: bool = True, image: bool = True,
         extra: bool = False) -> Path:
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg('int32 value\nstring note', 'acme_msgs/msg/Gadget'))
    with CameraBagWriter(str(path), typestore=ts) as w:
        for i in range(4):
            s = T0 + i * 50_000_000
            if image:
                w.write_image(np.full((24, 32, 3), 10 * i, np.uint8), s, 'cam')
                w.write_image(np.zeros((24, 32, 3), np.uint8), s, 'cam',
                              topic='/camera/depth/image_raw')
            if camera_info:
                w.write_camera_info(CAM, s, 'cam')
            w.write_tf([('world', 'cam', np.eye(4))], s)
            if extra:
                gadget = ts.types['acme_msgs/msg/Gadget'](value=i, note='x')
                w.write_message('/gadget', 'acme_msgs/msg/Gadget', gadget, s)
                w.write_message('/status', 'std_msgs/msg/String',
                                ts.types['std_msgs/msg/String'](data='ok'), s)
    return path


def test_auto_topics_prefer_colour_and_skip_unknown_types(tmp_path: Path):
    src = open_source(str(_bag(tmp_path / 'b.mcap', extra=True)))
    assert isinstance(src, BagSource)
    assert src.image_topic == '/camera/image_raw'  # not the depth stream
    assert src.camera_info_topic == '/camera/camera_info'
    assert src.skipped == {'acme_msgs/msg/Gadget': 4, 'std_msgs/msg/String': 4,
                           'sensor_msgs/msg/Image': 4}
    events = list(src)
    assert {e.topic for e in events} == {'/camera/image_raw', '/camera/camera_info', '/tf'}
    assert 'not used' in src.describe() and 'acme_msgs/msg/Gadget x4' in src.describe()
    named = open_source(str(tmp_path / 'b.mcap'), image_topic='/camera/depth/image_raw')
    assert named.image_topic == '/camera/depth/image_raw'


def test_compressed_colour_beats_raw_depth(tum_dir: Path):
    """The bundled recording: JPEG colour and raw 16UC1 depth; the colour is the image."""
    for transport in (None, 'raw', 'compressed'):
        src = open_source(str(tum_dir), image_transport=transport)
        assert src.image_topic == BUNDLE_TOPICS['compressed'], transport
        assert src.camera_info_topic == BUNDLE_TOPICS['camera_info']
        assert src.skipped == {'sensor_msgs/msg/Image': 37}
        src.close()


def test_missing_image_topic_and_camera_info(tmp_path: Path):
    with pytest.raises(SourceError) as err:
        open_source(str(_bag(tmp_path / 'noimg.mcap', image=False)))
    assert err.value.kind == 'no_image_topic' and '/tf' in str(err.value)
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / 'noimg.mcap'), image_topic='/tf')
    assert err.value.kind == 'no_image_topic'
    path = _bag(tmp_path / 'noinfo.db3', camera_info=False)
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    assert err.value.kind == 'no_camera_info' and '--intrinsics' in str(err.value)
    src = open_source(str(path), intrinsics='30,30,15.5,11.5')
    assert src.camera_info_topic is None and src.num_images == 4


@pytest.mark.parametrize('name', ['t.mcap', 't.db3'])
@pytest.mark.parametrize('keep', [0.3, 0.97])
def test_truncated_bag_is_a_clear_error(tmp_path: Path, name: str, keep: float):
    good = _bag(tmp_path / ('good' + Path(name).suffix))
    data = good.read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(SourceError) as err:
        list(open_source(str(bad)))
    assert err.value.kind == 'bad_bag' and 'truncated' in str(err.value)


def test_not_a_bag_and_missing_path(tmp_path: Path):
    junk = tmp_path / 'junk.mcap'
    junk.write_bytes(b'\x89MCAP0\r\n' + bytes(100))
    with pytest.raises(SourceError) as err:
        open_source(str(junk))
    assert err.value.kind == 'bad_bag'
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / 'nothing.mcap'))
    assert err.value.kind == 'missing_source'


def test_generated_video_frames_stamps_and_camera(tmp_path: Path):
    path = tmp_path / 'clip.avi'
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (64, 48))
    assert vw.isOpened()
    for i in range(7):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :, 2] = 30 * i  # red in BGR
        vw.write(img)
    vw.release()
    src = open_source(str(path), intrinsics='hfov=90')
    assert isinstance(src, VideoSource) and src.fps == pytest.approx(20.0)
    frames = list(src)
    src.close()
    assert [f.index for f in frames] == list(range(7))
    assert [f.stamp_ns for f in frames] == [i * 50_000_000 for i in range(7)]
    for i, f in enumerate(frames):
        assert f.rgb.shape == (48, 64, 3)
        assert abs(int(np.median(f.rgb[:, :, 0])) - 30 * i) <= 4  # red channel, JPEG-lossy
        assert f.T_world_cam is None
    assert frames[0].camera.fx == pytest.approx(32.0) and frames[0].camera.cx == 31.5


def test_video_needs_intrinsics_and_unreadable_video(tmp_path: Path):
    path = tmp_path / 'broken.mp4'
    path.write_bytes(b'this is not a video' * 100)
    with pytest.raises(SourceError) as err:
        open_source(str(path), intrinsics='hfov=60')
    assert err.value.kind == 'bad_video'


def test_real_video_first_frames():
    src = open_source(str(VIDEO), intrinsics='hfov=60')
    assert 'video' in src.describe() and src.size == (768, 432) and src.fps == 12.5
    frames = []
    for f in src:
        frames.append(f)
        if len(frames) == 3:
            break
    src.close()
    assert frames[2].stamp_ns == 2 * round(1e9 / src.fps)
    assert frames[0].rgb.dtype == np.uint8 and frames[0].rgb.std() > 5


def test_video_without_intrinsics_says_what_to_do(tmp_path: Path):
    path = tmp_path / 'clip.avi'
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (32, 24))
    vw.write(np.zeros((24, 32, 3), np.uint8))
    vw.release()
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    assert err.value.kind == 'no_camera_info' and '--intrinsics' in str(err.value)


def test_tum_image_folder_stamps_and_poses(tum_png_dir: Path):
    src = open_source(str(tum_png_dir), intrinsics='517.3,516.5,318.6,255.3,0.2624,-0.9531,'
                      '-0.0054,0.0026,1.1633')
    assert isinstance(src, ImageFolderSource) and src.num_frames == 37
    assert src.stamps[0] == 1305031102_175304000
    frames = [f for _, f in zip(range(3), src)]
    assert frames[0].camera.distortion_model == 'plumb_bob'
    # associations_rgb_depth_gt.txt: nearest mocap sample 0.5 ms away from the first image.
    np.testing.assert_allclose(frames[0].T_world_cam[:3, 3], [1.3405, 0.6266, 1.6575],
                               atol=2e-3)


def test_image_folder_without_stamps_uses_fps(tmp_path: Path):
    for name in ('b.png', 'a.png', 'c.jpg'):
        cv2.imwrite(str(tmp_path / name), np.zeros((24, 32, 3), np.uint8))
    (tmp_path / 'notes.txt').write_text('x')
    src = open_source(str(tmp_path), intrinsics=CAM, fps=4.0)
    frames = list(src)
    assert [f.stamp_ns for f in frames] == [0, 250_000_000, 500_000_000]
    assert [p.name for p in src.files] == ['a.png', 'b.png', 'c.jpg']
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / 'empty_dir_missing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / 'empty'), intrinsics=CAM)
    assert err.value.kind == 'no_images'


def test_parse_intrinsics_forms(tmp_path: Path):
    cam = parse_intrinsics('500,501,320,240,0.1,-0.2,0.001,0.002,0.05')(640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500, 501, 320, 240)
    assert cam.distortion_model == 'plumb_bob' and len(cam.D) == 5
    assert parse_intrinsics('500,500,320,240,1,2,3,4,5,6,7,8')(640, 480).distortion_model == (
        'rational_polynomial')
    ost = tmp_path / 'ost.yaml'
    ost.write_text('image_width: 640\nimage_height: 480\ncamera_name: c\n'
                   'camera_matrix:\n  rows: 3\n  cols: 3\n  data: [500, 0, 319.5, 0, 500, 239.5,'
                   ' 0, 0, 1]\ndistortion_model: plumb_bob\ndistortion_coefficients:\n  rows: 1'
                   '\n  cols: 5\n  data: [0.1, 0, 0, 0, 0]\n')
    full = parse_intrinsics(str(ost))(640, 480)
    assert full.fx == 500 and full.D[0] == 0.1
    half = parse_intrinsics(str(ost))(320, 240)
    assert half.fx == pytest.approx(250) and half.cx == pytest.approx(159.5)
    with pytest.raises(SourceError, match='other aspect ratio'):
        parse_intrinsics(str(ost))(640, 360)
    fixed = camera_factory(full)                    # a PinholeCamera given directly
    assert fixed(640, 480) is full and fixed(320, 240).fx == pytest.approx(250)
    with pytest.raises(SourceError, match='the camera is for 640x480') as err:
        fixed(640, 360)
    assert err.value.kind == 'bad_intrinsics'
    for bad in ('1,2,3', 'fx=5', '0,0,1,1', 'hfov=500'):
        with pytest.raises(SourceError) as err:
            parse_intrinsics(bad)
        assert err.value.kind == 'bad_intrinsics'


def test_trajectory_interpolation_and_stamp_text(tmp_path: Path):
    assert seconds_text_to_ns('1305031102.175304') == 1305031102_175304000
    assert seconds_text_to_ns('12') == 12_000_000_000
    with pytest.raises(ValueError):
        seconds_text_to_ns('1e9')
    path = tmp_path / 'traj.txt'
    path.write_text('# timestamp tx ty tz qx qy qz qw\n'
                    '2.0 2 0 0 0 0 0.7071067811865476 0.7071067811865476\n'
                    '1.0 0 0 0 0 0 0 1\n')
    stamps, poses = load_tum_trajectory(str(path))
    assert list(stamps) == [1_000_000_000, 2_000_000_000]
    table = PoseTable(stamps, poses)
    mid = table.at(1_500_000_000)
    np.testing.assert_allclose(mid[:3, 3], [1, 0, 0], atol=1e-12)
    expected = make_transform((1, 0, 0), (0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)))
    np.testing.assert_allclose(mid, expected, atol=1e-12)
    assert table.at(2_500_000_000) is None
    path.write_text('1.0 0 0 0 0 0 0\n')
    with pytest.raises(SourceError) as err:
        load_tum_trajectory(str(path))
    assert err.value.kind == 'bad_poses' and ':1:' in str(err.value)


def test_broken_type_definition_elsewhere_is_not_fatal(tmp_path: Path):
    """A topic whose type cannot even be parsed is skipped; the camera topics still replay."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from l3rocc_core.bags import MessageFactory
    factory = MessageFactory()
    ts = factory.typestore
    path = tmp_path / 'weird'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        weird = w.add_connection('/weird', 'acme_msgs/msg/Broken',
                                 msgdef='this is %% not a message definition',
                                 rihs01='RIHS01_' + '0' * 64)
        img = w.add_connection('/cam/image', 'sensor_msgs/msg/Image', typestore=ts)
        for i in range(3):
            w.write(weird, T0 + i, b'\x00\x01\x00\x00garbage')
            msg = factory.image(np.full((24, 32, 3), i, np.uint8), T0 + i, 'cam')
            w.write(img, T0 + i, ts.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
    src = open_source(str(path), intrinsics=CAM)
    assert src.skipped == {'acme_msgs/msg/Broken': 3}
    events = list(src)
    assert [int(e.msg.data[0]) for e in events] == [0, 1, 2] and not src.bad_messages
