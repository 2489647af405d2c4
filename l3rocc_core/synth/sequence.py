"""A synthetic sequence: scene + camera motion + intrinsics, rendered frame by frame with GT.

:class:`SequenceSpec` says what to make; :class:`SyntheticSequence` renders it and computes the
ground truth per frame; :func:`write_sequence` writes the rosbag2 (mcap), ``gt.npz``,
``depth.npz`` and ``meta.json`` of one sequence.

Frames: world ``odom`` (z up), camera optical frame ``camera_optical_frame``; /tf carries
``odom -> camera_optical_frame`` at every image stamp, /odom the same pose as nav_msgs/Odometry.
"""

from dataclasses import asdict, dataclass
import json
import os
from pathlib import Path
import time
from typing import Iterator, Optional

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.occupancy import OccupancySequenceWriter
from l3rocc_core.synth.appearance import random_sensor
from l3rocc_core.synth.ground_truth import GroundTruth, suggest_grid
from l3rocc_core.synth.motion import CAMERA_MOTIONS
from l3rocc_core.synth.render import Renderer, blur_samples
from l3rocc_core.synth.scene import FAMILIES, camera_trajectory, make_scene

WORLD_FRAME = 'odom'
CAMERA_FRAME = 'camera_optical_frame'
STAMP_BASE_NS = 1_700_000_000 * 10 ** 9


@dataclass
class SequenceSpec:
    """What to render.

    :param family: 'industrial' or 'driving'
    :param camera: one of :data:`~l3rocc_core.synth.motion.CAMERA_MOTIONS`
    :param seed: scene, trajectory, intrinsics and noise seed
    :param frames: number of frames
    :param fps: frames per second
    :param width: image width in pixels
    :param height: image height in pixels
    :param hfov_deg: horizontal field of view; None draws 55-90 degrees from the seed
    :param distortion: render a plumb_bob-distorted image (CameraInfo carries D)
    :param motion_blur: average sub-frame samples over the exposure
    :param start_s: scene time of the first frame (seconds)
    :param voxel_size: GT voxel size (metres)
    :param variety: diversify the scene (:func:`~l3rocc_core.synth.variety.diversify`: photo
        textures, more moving objects, other lighting, a wider exposure range) and make a
        ``static`` camera a mounted one at 0.5-4 m looking 0-50 degrees down
    """

    family: str = 'industrial'
    camera: str = 'handheld'
    seed: int = 0
    frames: int = 48
    fps: float = 15.0
    width: int = 640
    height: int = 480
    hfov_deg: Optional[float] = None
    distortion: bool = False
    motion_blur: bool = False
    start_s: float = 0.0
    voxel_size: float = 0.05
    variety: bool = False

    def __post_init__(self) -> None:
        """Check values on entry."""
        if self.family not in FAMILIES:
            raise ValueError(f'family must be one of {FAMILIES}, got {self.family!r}')
        if self.camera not in CAMERA_MOTIONS:
            raise ValueError(f'camera must be one of {CAMERA_MOTIONS}, got {self.camera!r}')
        if self.frames < 1 or not 1.0 <= self.fps <= 120.0:
            raise ValueError(f'need frames >= 1 and 1 <= fps <= 120, got {self.frames}, '
                             f'{self.fps}')
        if self.width < 16 or self.height < 16:
            raise ValueError(f'image {self.width}x{self.height} too small')


def random_camera(rng: np.random.Generator, width: int, height: int,
                  hfov_deg: Optional[float] = None, distortion: bool = False
                  ) -> PinholeCamera:
    """Realistic intrinsics: hfov 55-90 deg, square-ish pixels, principal point near the centre.

    :param distortion: add plumb_bob coefficients (barrel, stronger for wide lenses)
    """
    hfov = np.radians(hfov_deg if hfov_deg is not None else rng.uniform(55.0, 90.0))
    fx = (width / 2.0) / np.tan(hfov / 2.0)
    fy = fx * rng.uniform(0.99, 1.01)
    cx = (width - 1) / 2.0 + rng.normal(0, 0.01 * width)
    cy = (height - 1) / 2.0 + rng.normal(0, 0.01 * height)
    if not distortion:
        return PinholeCamera(width, height, float(fx), float(fy), float(cx), float(cy))
    wide = (np.degrees(hfov) - 55.0) / 35.0
    k1 = -rng.uniform(0.05, 0.15) - 0.15 * wide
    k2 = rng.uniform(0.0, 0.08)
    p1, p2 = rng.normal(0, 5e-4, 2)
    return PinholeCamera(width, height, float(fx), float(fy), float(cx), float(cy),
                         'plumb_bob', (float(k1), float(k2), float(p1), float(p2), 0.0))


@dataclass
class SyntheticFrame:
    """One rendered frame with its ground truth.

    :param index: frame number
    :param stamp_ns: header stamp
    :param t: scene time (seconds)
    :param image: uint8 [H, W, 3] RGB of the (possibly distorted) camera
    :param depth: float32 [H, W] metres (z) for the undistorted pinhole camera, 0 = no hit
    :param T_world_cam: float64 [4, 4]
    :param occupied: bool [X, Y, Z] or None
    :param dynamic: bool [X, Y, Z] or None
    :param observed: bool [X, Y, Z] or None
    :param moving: bool [H, W] pinhole pixels that see a moving object (its surface is in the
        dynamic mask), or None
    """

    index: int
    stamp_ns: int
    t: float
    image: np.ndarray
    depth: np.ndarray
    T_world_cam: np.ndarray
    occupied: Optional[np.ndarray] = None
    dynamic: Optional[np.ndarray] = None
    observed: Optional[np.ndarray] = None
    moving: Optional[np.ndarray] = None


class SyntheticSequence:
    """Renders a :class:`SequenceSpec` frame by frame.

    :param spec: what to render
    :param grid: GT grid; default :func:`~l3rocc_core.synth.ground_truth.suggest_grid`
    :param ground_truth: compute occupancy, dynamic and observed masks per frame
    """

    def __init__(self, spec: SequenceSpec, grid: Optional[VoxelGrid] = None,
                 ground_truth: bool = True):
        """Build the scene, trajectory, camera, renderer and GT helper."""
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 11])
        self.scene = make_scene(spec.family, spec.seed)
        duration = spec.start_s + spec.frames / spec.fps + 1.0
        self.trajectory = camera_trajectory(self.scene, spec.camera, spec.seed, duration)
        self.camera = random_camera(rng, spec.width, spec.height, spec.hfov_deg,
                                    spec.distortion)
        self.sensor = random_sensor(rng, spec.seed)
        if spec.variety:
            from l3rocc_core.synth.variety import diversify, mounted_camera

            vrng = np.random.default_rng([spec.seed, 29])
            diversify(self.scene, vrng)
            if spec.camera == 'static':
                self.trajectory = mounted_camera(self.scene, vrng)
            self.sensor.exposure = float(vrng.uniform(0.45, 1.9))
        self.renderer = Renderer(self.scene, self.camera, self.sensor)
        self._object_moves = np.array([o.dynamic for o in self.scene.objects], bool)
        self.exposure_s = float(rng.uniform(0.3, 0.8)) / spec.fps
        self.times = spec.start_s + np.arange(spec.frames) / spec.fps
        self.poses = [self.trajectory.pose(float(t)) for t in self.times]
        self.grid = grid if grid is not None else suggest_grid(
            self.scene, self.poses, spec.voxel_size, frame_id=WORLD_FRAME)
        self.max_depth = float(self.scene.max_depth)
        # GT observed masks trace about 320 rays across the image (rays ~2.5 cm apart at 6 m for
        # a 70 degree lens); every pixel still counts as a hit.
        self.observed_stride = max(1, spec.width // 320)
        self.gt = (GroundTruth(self.scene, self.grid, geometry=self.renderer.geometry)
                   if ground_truth else None)

    @property
    def pinhole(self) -> PinholeCamera:
        """The undistorted camera of the depth maps (same K, no distortion)."""
        return self.renderer.pinhole

    def stamp_ns(self, index: int) -> int:
        """Header stamp of frame ``index``."""
        return STAMP_BASE_NS + int(round(self.times[index] * 1e9))

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame ``index`` and its ground truth."""
        t = float(self.times[index])
        n_blur = 5 if self.spec.motion_blur else 1
        samples = blur_samples(self.trajectory.pose, t, self.exposure_s, n_blur)
        samples[len(samples) // 2] = (t, self.poses[index])
        res = self.renderer.render(samples, index)
        T = self.poses[index]
        hit = res.object_index
        moving = (hit >= 0) & self._object_moves[np.maximum(hit, 0)]
        out = SyntheticFrame(index, self.stamp_ns(index), t, res.image, res.depth, T,
                             moving=moving)
        if self.gt is not None:
            out.occupied, out.dynamic = self.gt.occupancy(t)
            out.observed = self.gt.observed(res.depth, self.pinhole, T, self.max_depth,
                                            self.observed_stride)
        return out

    def __iter__(self) -> Iterator[SyntheticFrame]:
        """Yield every frame in order."""
        for i in range(self.spec.frames):
            yield self.frame(i)

    def recommended_parameters(self) -> dict:
        """Pipeline parameters (``--set`` names) that match this sequence's grid and depths."""
        g = self.grid
        return {'grid_min': [float(v) for v in g.origin],
                'grid_max': [float(v) for v in g.grid_max], 'voxel_size': g.voxel_size,
                'world_frame': WORLD_FRAME, 'max_depth': self.max_depth,
                'min_depth': 0.3, 'pose_source': 'tf'}


def write_sequence(out_dir: str, spec: SequenceSpec, progress: bool = True) -> dict:
    """Render a sequence and write its files into ``out_dir``.

    Files: ``sequence.mcap`` (Image ``/camera/image_raw`` rgb8, CameraInfo
    ``/camera/camera_info``, /tf ``odom -> camera_optical_frame``, nav_msgs/Odometry ``/odom``),
    ``gt.npz`` (contract occupancy file: per-frame GT occupancy with prob 1.0,
    ``visible_packed`` = observed masks, plus ``dynamic_packed`` = np.packbits of the
    [N, X, Y, Z] dynamic masks), ``depth.npz`` (``depth`` float16 [N, H, W] metres for the
    undistorted camera, ``stamps`` int64 [N], ``K`` float64 [3, 3], ``moving_packed`` =
    np.packbits of the [N, H, W] masks of the pixels that see a moving object), ``meta.json``.

    :param out_dir: created if missing; an existing ``sequence.mcap`` is replaced
    :param spec: what to render
    :param progress: show a tqdm progress bar
    :return: the meta dictionary (also written as ``meta.json``)
    """
    from tqdm import tqdm

    from l3rocc_core.bags import CameraBagWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seq = SyntheticSequence(spec)
    bag_path = out / 'sequence.mcap'
    if bag_path.exists():
        bag_path.unlink()
    writer = OccupancySequenceWriter(seq.grid, 0.5)
    dynamic, depths, stamps, moving = [], [], [], []
    t_render = []
    t0 = time.perf_counter()
    with CameraBagWriter(str(bag_path)) as bag:
        for i in tqdm(range(spec.frames), desc=f'synth {spec.family}/{spec.camera}',
                      disable=not progress, unit='frame'):
            t1 = time.perf_counter()
            f = seq.frame(i)
            t_render.append(time.perf_counter() - t1)
            bag.write_tf([(WORLD_FRAME, CAMERA_FRAME, f.T_world_cam)], f.stamp_ns)
            bag.write_odometry(f.T_world_cam, f.stamp_ns, WORLD_FRAME, CAMERA_FRAME)
            bag.write_camera_info(seq.camera, f.stamp_ns, CAMERA_FRAME)
            bag.write_image(f.image, f.stamp_ns, CAMERA_FRAME)
            writer.add(f.stamp_ns, f.occupied.astype(np.float32), f.observed)
            dynamic.append(f.dynamic)
            depths.append(f.depth.astype(np.float16))
            moving.append(f.moving)
            stamps.append(f.stamp_ns)
            if i == spec.frames // 2:
                import cv2
                cv2.imwrite(str(out / 'preview.png'), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    gt_path = str(out / 'gt.npz')
    writer.write(gt_path)
    _add_arrays(gt_path, dynamic_packed=np.packbits(np.stack(dynamic).reshape(-1)))
    _savez(str(out / 'depth.npz'), depth=np.stack(depths), stamps=np.asarray(stamps, np.int64),
           K=seq.pinhole.K, width=np.int64(spec.width), height=np.int64(spec.height),
           moving_packed=np.packbits(np.stack(moving).reshape(-1)))
    meta = {
        'spec': asdict(spec), 'frames': spec.frames,
        'camera': {'width': seq.camera.width, 'height': seq.camera.height,
                   'fx': seq.camera.fx, 'fy': seq.camera.fy, 'cx': seq.camera.cx,
                   'cy': seq.camera.cy, 'distortion_model': seq.camera.distortion_model,
                   'D': list(seq.camera.D)},
        'grid': {'origin': list(seq.grid.origin), 'voxel_size': seq.grid.voxel_size,
                 'dims': list(seq.grid.dims), 'frame_id': seq.grid.frame_id},
        'frames_ids': {'world': WORLD_FRAME, 'camera': CAMERA_FRAME},
        'topics': {'image': '/camera/image_raw', 'camera_info': '/camera/camera_info',
                   'tf': '/tf', 'odometry': '/odom'},
        'recommended_parameters': seq.recommended_parameters(),
        'objects': [{'name': o.name, 'dynamic': o.dynamic} for o in seq.scene.objects],
        'ms_per_frame_median': float(np.median(t_render) * 1e3),
        'wall_s': time.perf_counter() - t0,
    }
    with open(out / 'meta.json', 'w', encoding='utf-8') as fh:
        json.dump(meta, fh, indent=2)
    return meta


def _savez(path: str, **arrays: np.ndarray) -> None:
    """np.savez_compressed to ``path`` atomically."""
    tmp = path + '.partial'
    with open(tmp, 'wb') as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def _add_arrays(path: str, **extra: np.ndarray) -> None:
    """Rewrite an npz with extra keys (atomically)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(extra)
    _savez(path, **arrays)
