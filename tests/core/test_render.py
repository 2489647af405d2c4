"""Software voxel rendering and ``l3rocc render``: sizes, non-trivial content, geometry."""

import cv2
import numpy as np
import pytest

from l3rocc_core.cli import main as cli_main
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import OccupancySequenceWriter
from l3rocc_core.preview import (BACKGROUND, VoxelRenderer, colorize_depth, look_at,
                                 three_quarter_view)


def _box_grid():
    grid = VoxelGrid.from_bounds([-1.0, -1.0, 0.0], [1.0, 1.0, 1.0], 0.1, 'world')
    occ = np.zeros(grid.dims, bool)
    occ[:, :, 0] = True                 # floor
    occ[8:12, 8:12, 1:6] = True         # a pillar in the middle
    return grid, occ


def test_look_at_is_an_optical_frame():
    T = look_at([2.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(R[:, 2], [-1, 0, 0], atol=1e-12)    # z forward
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)    # y down = -world z
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_render_shows_voxels_where_they_project():
    grid, occ = _box_grid()
    view = three_quarter_view(grid.origin, grid.grid_max, 160, 120)
    r = VoxelRenderer(grid, view)
    img = r.render(occ)
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    drawn = np.any(img != np.asarray(BACKGROUND, np.uint8), axis=-1)
    assert 0.05 < drawn.mean() < 0.95
    # The projection of the pillar's top centre is drawn; an empty grid draws nothing.
    uv, _ = view.project(np.array([[0.0, 0.0, 0.6]]))
    u, v = np.round(uv[0]).astype(int)
    assert drawn[v, u]
    assert not np.any(r.render(np.zeros_like(occ)) != np.asarray(BACKGROUND, np.uint8))
    # Nearer surfaces hide farther ones: the pillar in front changes pixels of the floor.
    floor_only = occ.copy()
    floor_only[:, :, 1:] = False
    assert np.any(r.render(floor_only)[v, u] != img[v, u])
    with pytest.raises(ValueError):
        r.render(occ[:-1])


def test_colorize_depth_marks_invalid_black():
    d = np.array([[0.0, 1.0], [2.0, np.nan]], np.float32)
    c = colorize_depth(d, 1.0, 2.0)
    assert c.shape == (2, 2, 3)
    assert not c[0, 0].any() and not c[1, 1].any()
    assert c[0, 1].any() and c[1, 0].any() and np.any(c[0, 1] != c[1, 0])


def test_render_cli_png_and_mp4(tmp_path):
    grid, occ = _box_grid()
    writer = OccupancySequenceWriter(grid, 0.5)
    for n in range(6):
        moving = occ.copy()
        moving[2 + n:4 + n, 2:4, 1:3] = True          # a box that moves along x
        writer.add(1_000_000_000 + n * 100_000_000, moving.astype(np.float32))
    writer.write(str(tmp_path / 'occ.npz'))
    # An estimated-depth file for the depth panel.
    depth = np.tile(np.linspace(0.5, 3.0, 64, dtype=np.float32), (48, 1))
    np.savez(tmp_path / 'depth.npz', stamps=np.array([1_000_000_000 + n * 100_000_000
                                                      for n in range(6)], np.int64),
             depth=np.stack([depth] * 6))
    out = tmp_path / 'render'
    assert cli_main(['render', str(tmp_path / 'occ.npz'), '--depth', str(tmp_path / 'depth.npz'),
                     '--out', str(out), '--height', '120', '--moments', '3', '--quiet']) == 0
    png = cv2.imread(str(out / 'preview.png'))
    assert png.shape == (3 * 120, 3 * 160, 3)
    occ_panel = png[:120, 320:]
    assert np.any(occ_panel != np.asarray(BACKGROUND[::-1], np.uint8), axis=-1).mean() > 0.05
    depth_panel = png[:120, 160:320]
    assert len(np.unique(depth_panel.reshape(-1, 3), axis=0)) > 20
    cap = cv2.VideoCapture(str(out / 'preview.mp4'))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        ok, first = cap.read()
        assert ok and first.shape == (120, 480, 3)
        frames = [first] + [cap.read()[1] for _ in range(5)]
    finally:
        cap.release()
    # The moving box changes the occupancy panel between the first and last frames.
    diff = np.abs(frames[0][:, 320:].astype(int) - frames[-1][:, 320:].astype(int)).max(-1)
    assert (diff > 40).mean() > 0.005
