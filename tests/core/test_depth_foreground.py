"""Ground-contact depth of moving objects before a fixed camera.

The scene is ray-cast here, independently of the code under test: a textured floor z = 0 seen
by a camera 2 m up and 30 degrees down, and an upright 0.5 x 1.7 m board facing it that slides
sideways along the floor. The board's true depth at each pixel is known exactly.
"""

from typing import Tuple

import numpy as np
import pytest

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import DepthConfig, PipelineConfig
from l3rocc_core.depth.foreground import (ForegroundDepth, ForegroundDepthSource,
                                          ground_contact_depth)
from l3rocc_core.depth.plane_sweep import PlaneSweepDepth
from l3rocc_core.frame import Frame
from l3rocc_core.pipeline import OccupancyPipeline

CAM = PinholeCamera(160, 120, 120.0, 120.0, 79.5, 59.5)
HEIGHT_M, PITCH = 2.0, np.radians(30.0)
BOARD_X, BOARD_W, BOARD_H = 3.0, 0.5, 1.7          # board plane x = 3 m, facing the camera
FLOOR = np.random.default_rng(3).random((400, 400, 3)) * 200.0 + 25.0


def camera_pose() -> np.ndarray:
    """T_world_cam: at (0, 0, 2) looking along +x, pitched down, image x to world -y."""
    z_cam = np.array([np.cos(PITCH), 0.0, -np.sin(PITCH)])
    x_cam = np.array([0.0, -1.0, 0.0])
    T = np.eye(4)
    T[:3, :3] = np.stack([x_cam, np.cross(z_cam, x_cam), z_cam], 1)
    T[:3, 3] = [0.0, 0.0, HEIGHT_M]
    return T


def render(board_y: float, T: np.ndarray, cam: PinholeCamera = CAM
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, z-depth and board mask, the board centred at y = ``board_y``."""
    rays = cam.pixel_rays().astype(np.float64) @ T[:3, :3].T          # z_cam = 1
    C = T[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        s_floor = np.where(rays[..., 2] < 0, -C[2] / rays[..., 2], np.inf)
        s_board = (BOARD_X - C[0]) / rays[..., 0]
    hit = C + s_board[..., None] * rays
    on_board = ((s_board > 0) & (np.abs(hit[..., 1] - board_y) <= BOARD_W / 2)
                & (hit[..., 2] >= 0) & (hit[..., 2] <= BOARD_H) & (s_board < s_floor))
    floor_pt = C + np.where(np.isfinite(s_floor), s_floor, 0.0)[..., None] * rays
    tex = FLOOR[(np.floor(floor_pt[..., 0] / 0.05) % 400).astype(int),
                (np.floor(floor_pt[..., 1] / 0.05) % 400).astype(int)]
    image = np.where(on_board[..., None], np.array([200.0, 30.0, 30.0]), tex)
    image = np.where(np.isfinite(s_floor)[..., None] | on_board[..., None], image, 120.0)
    depth = np.where(on_board, s_board, np.where(np.isfinite(s_floor), s_floor, 0.0))
    return image.astype(np.uint8), depth.astype(np.float32), on_board


def _config(**values) -> DepthConfig:
    return PipelineConfig().with_values(
        {'max_depth': 8.0, 'depth_downsample': 1, **values}).depth


def test_standing_board_is_placed_at_its_true_depth() -> None:
    _, depth, board = render(0.3, camera_pose())
    got = ground_contact_depth(board, CAM, camera_pose(), _config())
    assert (got[~board] == 0).all()
    assert (got[board] > 0).mean() > 0.99
    rel = np.abs(got[board] / depth[board] - 1.0)
    # The contact is read from the lowest row of pixels, up to half a pixel above the true
    # foot line: a few millimetres at 3 m.
    assert np.median(rel) < 0.005 and rel.max() < 0.02, (np.median(rel), rel.max())


def test_blob_cut_by_the_lower_edge_or_above_the_horizon_gets_no_depth() -> None:
    cfg = _config()
    cut = np.zeros((CAM.height, CAM.width), bool)
    cut[80:, 60:80] = True                       # touches the last row: its foot is not seen
    sky = np.zeros_like(cut)
    sky[5:15, 20:30] = True                      # the ray of its lowest pixel never meets z = 0
    sky_pose = camera_pose()
    sky_pose[:3, :3] = sky_pose[:3, :3] @ _rot_x(np.radians(60.0))    # looking 30 deg up
    assert not ground_contact_depth(cut, CAM, camera_pose(), cfg).any()
    assert not ground_contact_depth(sky, CAM, sky_pose, cfg).any()


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_fixed_camera_gets_depth_of_the_moving_board_only_once_it_has_a_background() -> None:
    cfg = _config(foreground_min_frames=4)
    source = ForegroundDepthSource(PlaneSweepDepth(cfg, 'cpu'), ForegroundDepth(cfg), cfg)
    assert not source.requires_sources and source.uses_sources
    T = camera_pose()
    results = []
    for n, y in enumerate(np.linspace(-1.2, 1.2, 10)):
        image, depth, board = render(float(y), T)
        results.append((source.estimate(Frame(image, n * 10**8, CAM, T), []), depth, board))
    # The first frames build the background: nothing to say yet (no sources, no parallax).
    assert all(r is None for r, _, _ in results[:4])
    for result, depth, board in results[4:]:
        assert result is not None
        valid = result.valid.numpy()
        # Every depth given is on the board, and almost all of the board has one within 2 %.
        assert valid[board].mean() > 0.9
        assert valid[~board].mean() < 0.005
        got = result.depth.numpy()[valid & board]
        assert np.median(np.abs(got / depth[valid & board] - 1.0)) < 0.02


def test_a_moved_camera_starts_a_new_background() -> None:
    cfg = _config(foreground_min_frames=3)
    fg = ForegroundDepth(cfg)
    T = camera_pose()
    for n in range(4):
        image, _, _ = render(-1.0 + 0.3 * n, T)
        found = fg.update(Frame(image, n, CAM, T), CAM)
    assert found is not None and found.placed.any()
    moved = T.copy()
    moved[0, 3] += 0.2
    image, _, _ = render(0.5, moved)
    assert fg.update(Frame(image, 5, CAM, moved), CAM) is None
    assert fg.update(Frame(image, 6, CAM, None), CAM) is None      # no pose: no background


@pytest.mark.parametrize('foreground', [True, False])
def test_pipeline_fixed_camera_occupies_the_board_where_it_stands(foreground: bool) -> None:
    pipe = OccupancyPipeline(PipelineConfig().with_values({
        'grid_min': [1.0, -2.0, 0.0], 'grid_max': [5.0, 2.0, 2.0], 'window_size': 8,
        'refiner': 'none', 'device': 'cpu', 'max_depth': 8.0, 'depth_source': 'plane_sweep',
        'foreground_depth': foreground, 'foreground_min_frames': 4}))
    T = camera_pose()
    cam = PinholeCamera(320, 240, 240.0, 240.0, 159.5, 119.5)
    for n, y in enumerate(np.linspace(-1.0, 1.0, 8)):
        image, _, _ = render(float(y), T, cam)
        out = pipe.push(Frame(image, n * 10**8, cam, T))
    idx, _ = out.occupied()
    if not foreground:
        # The plane sweep alone: a fixed camera has no parallax and gets nothing.
        assert len(idx) == 0
        return
    centres = pipe.grid.flat_to_world(idx)
    assert len(idx) > 20
    # Every occupied voxel lies on the board's plane x = 3 m, up to a voxel (the plane sweep
    # gives no depth to the floor, so the board's earlier places are not carved: a trail).
    assert np.abs(centres[:, 0] - BOARD_X).max() <= 0.1
    # The newest board (y in [0.75, 1.25], z up to 1.7 m) is there: its front voxel column
    # is occupied over most of its height and width.
    front = np.abs(centres[:, 0] - BOARD_X) <= 0.05
    newest = front & (np.abs(centres[:, 1] - 1.0) <= BOARD_W / 2) & (centres[:, 2] <= BOARD_H)
    assert newest.sum() >= 0.6 * (BOARD_W / 0.05) * (BOARD_H / 0.05), newest.sum()


def test_an_object_that_stops_stays_an_object_and_a_light_change_is_none() -> None:
    cfg = _config(foreground_min_frames=3, foreground_history=6, foreground_absorb_frames=50)
    fg = ForegroundDepth(cfg)
    T = camera_pose()
    for n in range(4):
        image, _, _ = render(-5.0, T)                            # the board out of view
        fg.update(Frame(image, n, CAM, T), CAM)
    image, _, board = render(0.0, T)
    # The board stands still for twice the background's history: it stays in the foreground.
    for n in range(4, 16):
        found = fg.update(Frame(image, n, CAM, T), CAM)
        assert found.placed[board].mean() > 0.9, n
    # Every pixel brighter: a change of light, not an object.
    brighter = np.clip(image.astype(np.int32) + 90, 0, 255).astype(np.uint8)
    assert not fg.update(Frame(brighter, 16, CAM, T), CAM).moving.any()


def test_an_object_that_stays_longer_than_absorb_frames_becomes_background() -> None:
    cfg = _config(foreground_min_frames=3, foreground_history=4, foreground_absorb_frames=3)
    fg = ForegroundDepth(cfg)
    T = camera_pose()
    empty, _, _ = render(-5.0, T)
    for n in range(3):
        fg.update(Frame(empty, n, CAM, T), CAM)
    image, _, board = render(0.0, T)
    placed = [fg.update(Frame(image, n, CAM, T), CAM).placed[board].mean()
              for n in range(3, 14)]
    assert placed[0] > 0.9 and placed[-1] < 0.05, placed


@pytest.fixture(scope='module')
def people_runs(tmp_path_factory, repo_root):
    """Replay the bundled real static-camera clip as the README shows it.

    :return: {foreground_depth: occupancy sequence} with the foreground depth on and off
    """
    from l3rocc_core.cli import main
    from l3rocc_core.occupancy import load_sequence

    runs = {}
    for foreground in (True, False):
        out = tmp_path_factory.mktemp(f'people_{foreground}')
        assert main(['replay', str(repo_root / 'data' / 'intel_people_10s.mp4'), '--out',
                     str(out), '--no-progress', '--intrinsics', 'fov=60', '--max-frames', '64',
                     '--params-file', str(repo_root / 'config' / 'intel_people.yaml'),
                     '--set', f'foreground_depth={str(foreground).lower()}']) == 0
        runs[foreground] = load_sequence(str(out / 'occupancy.npz'))
    return runs


def _tall_near(seq, n: int) -> int:
    """Occupied voxels of row ``n`` above 1 m and nearer than the back wall (x < 5 m)."""
    p = seq.grid.flat_to_world(np.flatnonzero(seq.occupied_mask(n)))
    return int(((p[:, 2] > 1.0) & (p[:, 0] < 5.0)).sum())


def test_real_static_video_shows_the_person_standing_at_the_table(people_runs) -> None:
    # data/intel_people_10s.mp4: an empty room for 3 s, then a man walks in and stands at the
    # table (about 3.3 m ahead of the camera in the configured mounting) from about 5 s on.
    seq = people_runs[True]
    assert all(_tall_near(seq, n) == 0 for n in range(4, 20))
    standing = [_tall_near(seq, n) for n in range(52, 64)]
    assert min(standing) >= 40, standing
    p = seq.grid.flat_to_world(np.flatnonzero(seq.occupied_mask(63)))
    person = p[(p[:, 2] > 1.0) & (p[:, 0] < 5.0)]
    assert 2.5 <= np.median(person[:, 0]) <= 4.5
    assert 1.5 <= person[:, 2].max() <= 2.2         # as tall as a person, in this mounting
    # Without the foreground depth, the network's depth does not separate him from the floor.
    assert max(_tall_near(people_runs[False], n) for n in range(52, 64)) < min(standing) / 4
