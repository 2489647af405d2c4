"""An independent evaluation set: dynamic scenes with exact 4D ground truth, made apart from synth.

``l3rocc synth`` makes the training data; a model that does well on it may only have learnt that
generator's look. This set shares nothing with it but the output format and the scoring rule:
its own renderer (a numpy z-buffer rasteriser with shadow maps,
:mod:`~l3rocc_core.datasets.indep_raster` / :mod:`~l3rocc_core.datasets.indep_render`, where
synth ray-casts with Open3D), its own shapes (tori, cones, capsules, stacked irregular boxes,
shelves, tables with legs, walking people made of capsules with swinging limbs, hand carts with
turning wheels, a robot arm; :mod:`~l3rocc_core.datasets.indep_scene`), its own motions and
cameras (a fixed camera on a pole looking down 20-40 degrees from 1.5-3 m, a handheld orbit, a
slow dolly) and its own textures (patches of a real video and procedural images synth does not
make; :mod:`~l3rocc_core.datasets.indep_texture`).

Each sequence folder holds what ``l3rocc synth --out DIR`` writes (the layout of
:mod:`~l3rocc_core.datasets.sequence_files`: ``sequence.mcap``, ``gt.npz`` with
``dynamic_packed``, ``depth.npz`` with ``moving_packed``, ``meta.json``, ``preview.png``), so every
scorer reads it unchanged. ``meta.json`` adds ``generator``, ``name``, ``fixed_camera``,
``objects`` and ``moving_pixel_share`` (mean and max share of the image that sees moving actors,
and how many frames reach 20 %).

Ground truth: a voxel is occupied when its centre is inside a solid or a solid's surface passes
through it (:mod:`~l3rocc_core.datasets.indep_mesh`), as in synth; it is observed when a camera
ray traverses it up to and including the first surface hit (the contract's rule, computed by the
shared :func:`l3rocc_core.raycast.observed_and_hits` from the exact depth).

``python -m l3rocc_core.datasets.independent --out DIR -n N [--seed S]`` makes a set (one folder
per sequence plus ``index.json``); with ``--rig`` and ``--actors`` it makes one sequence into DIR.
"""

import argparse
from dataclasses import asdict, dataclass
import json
import os
import sys
import time
from typing import Dict, Iterator, List, Optional

import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.datasets.indep_layout import ACTOR_SETS, CAMERA_RIGS, make_scene
from l3rocc_core.datasets.indep_mesh import apply, occupied_voxels, rotate, surface_samples
from l3rocc_core.datasets.indep_render import PosedScene, SceneRenderer, actor_names
from l3rocc_core.datasets.indep_scene import IndependentScene
from l3rocc_core.datasets.sequence_files import SequenceFiles, WORLD_FRAME
from l3rocc_core.grid import VoxelGrid
from l3rocc_core.synth.sequence import SyntheticFrame

STAMP_BASE_NS = 1_750_000_000 * 10 ** 9
#: Grid height (metres) above its bottom, which lies half a voxel below a whole number of voxels
#: under the floor: the floor's top (z = 0) then runs through the middle of a voxel layer, so the
#: voxel a ray ends in on the floor is the occupied one. On a voxel boundary it would be the free
#: voxel above or the occupied one below by rounding alone.
GRID_HEIGHT = 2.6
#: Whole voxels of the grid below the floor's top (the half voxel comes on top).
GRID_BELOW_FLOOR = 2
#: Largest grid extent in x and y (metres).
GRID_MAX_XY = (6.4, 6.4)
GENERATOR = 'l3rocc_core.datasets.independent'


@dataclass
class IndependentSpec:
    """What to render.

    :param rig: camera motion, one of :data:`~l3rocc_core.datasets.indep_scene.CAMERA_RIGS`
    :param actors: what moves, one of :data:`~l3rocc_core.datasets.indep_scene.ACTOR_SETS`
    :param seed: scene, camera and noise seed
    :param frames: number of frames
    :param fps: frames per second
    :param width: image width (pixels)
    :param height: image height (pixels)
    :param hfov_deg: horizontal field of view; None draws 60-80 degrees from the seed
    :param voxel_size: ground-truth voxel size (metres)
    """

    rig: str = 'pole'
    actors: str = 'people'
    seed: int = 0
    frames: int = 40
    fps: float = 10.0
    width: int = 640
    height: int = 480
    hfov_deg: Optional[float] = None
    voxel_size: float = 0.05

    def __post_init__(self) -> None:
        """Reject unknown rigs and actor sets, and sizes nothing can be made of."""
        for field_name, known in (('rig', CAMERA_RIGS), ('actors', ACTOR_SETS)):
            if getattr(self, field_name) not in known:
                raise ValueError(f'{field_name} must be one of {known}, got '
                                 f'{getattr(self, field_name)!r}')
        problems = [text for bad, text in (
            (self.frames < 1, f'frames {self.frames} < 1'),
            (not 1.0 <= self.fps <= 120.0, f'fps {self.fps} outside 1..120'),
            (min(self.width, self.height) < 16, f'image {self.width}x{self.height} below 16 px'),
        ) if bad]
        if problems:
            raise ValueError('; '.join(problems))

    @property
    def name(self) -> str:
        """Return the sequence's folder name."""
        return f'{self.rig}_{self.actors}_{self.seed}'


def draw_camera(seed: int, width: int, height: int, hfov_deg: Optional[float] = None
                ) -> PinholeCamera:
    """Intrinsics: hfov 60-80 degrees, square pixels, principal point near the centre."""
    rng = np.random.default_rng([seed, 0xCA3])
    hfov = np.radians(hfov_deg if hfov_deg is not None else rng.uniform(60.0, 80.0))
    f = (width / 2.0) / np.tan(hfov / 2.0)
    return PinholeCamera(width, height, float(f), float(f),
                         float((width - 1) / 2.0 + rng.normal(0, 0.005 * width)),
                         float((height - 1) / 2.0 + rng.normal(0, 0.005 * height)))


def suggest_grid(scene: IndependentScene, camera: PinholeCamera, poses: List[np.ndarray],
                 voxel_size: float) -> VoxelGrid:
    """Choose a grid over what the camera sees within ``scene.max_depth``, inside the room.

    Rays through a 9 x 7 pixel lattice of every pose end on the floor or at ``max_depth``;
    the grid spans their ends and the camera positions (0.3 m margin), clipped to the room
    and its walls, at most :data:`GRID_MAX_XY` around the centre, :data:`GRID_HEIGHT` high from
    :data:`GRID_BELOW_FLOOR` and a half voxels under the floor.
    """
    u = np.linspace(0, camera.width - 1, 9)
    v = np.linspace(0, camera.height - 1, 7)
    uu, vv = np.meshgrid(u, v)
    rays = np.stack([(uu - camera.cx) / camera.fx, (vv - camera.cy) / camera.fy,
                     np.ones_like(uu)], -1).reshape(-1, 3)
    pts = []
    for T in poses:
        d = rotate(T, rays)
        reach = np.full(len(d), scene.max_depth)
        down = d[:, 2] < -1e-9
        reach[down] = np.minimum(reach[down], -T[2, 3] / d[down, 2])
        pts.append(T[:3, 3] + d * reach[:, None])
        pts.append(T[None, :3, 3])
    pts = np.concatenate(pts)[:, :2]
    lo = np.maximum(pts.min(0) - 0.3, scene.room_min[:2] - 0.25)
    hi = np.minimum(pts.max(0) + 0.3, scene.room_max[:2] + 0.25)
    c, half = (lo + hi) / 2, np.minimum((hi - lo) / 2, np.asarray(GRID_MAX_XY) / 2)
    lo = np.round(np.floor((c - half) / voxel_size + 1e-9) * voxel_size, 9)
    hi = np.round(np.ceil((c + half) / voxel_size - 1e-9) * voxel_size, 9)
    z0 = -(GRID_BELOW_FLOOR + 0.5) * voxel_size
    lo, hi = np.r_[lo, z0], np.r_[hi, z0 + np.ceil(GRID_HEIGHT / voxel_size) * voxel_size]
    return VoxelGrid.from_bounds(lo.tolist(), hi.tolist(), voxel_size, WORLD_FRAME)


class IndependentTruth:
    """Occupancy of a posed scene on a grid: static parts once, moving parts per time.

    :param posed: the flattened scene
    :param grid: the voxel grid
    """

    def __init__(self, posed: PosedScene, grid: VoxelGrid):
        """Sample every part's surface and voxelise the static parts."""
        self.posed = posed
        self.grid = grid
        self.samples = [surface_samples(m.vertices, m.triangles, grid.voxel_size / 3.0)
                        for m in posed.meshes]
        self.lo = np.asarray(grid.origin, np.float64)
        self.hi = np.asarray(grid.grid_max, np.float64)
        A = posed.part_poses(0.0)
        static = np.zeros(grid.num_voxels, bool)
        for p in range(posed.n_static_parts):
            static[self.part_voxels(p, A[p])] = True
        self.static = static.reshape(grid.dims)

    def part_voxels(self, p: int, A: np.ndarray) -> np.ndarray:
        """Flat indices (int64 [n], may repeat) of part ``p`` posed by ``A`` (float [4, 4])."""
        m = self.posed.meshes[p]
        v = apply(A, m.vertices)
        if np.any(v.min(0) > self.hi) or np.any(v.max(0) < self.lo):
            return np.zeros(0, np.int64)
        return occupied_voxels(v, m.triangles, self.grid,
                               apply(A, self.samples[p]))

    def occupancy(self, t: float) -> tuple:
        """Return (occupied bool [X, Y, Z], dynamic bool [X, Y, Z]) at ``t`` seconds."""
        A = self.posed.part_poses(t)
        dyn = np.zeros(self.grid.num_voxels, bool)
        for p in range(self.posed.n_static_parts, len(A)):
            dyn[self.part_voxels(p, A[p])] = True
        dyn = dyn.reshape(self.grid.dims)
        return self.static | dyn, dyn


class IndependentSequence:
    """Renders an :class:`IndependentSpec` frame by frame, with ground truth.

    :param spec: what to render
    :param grid: ground-truth grid; default :func:`suggest_grid`
    :param ground_truth: compute occupancy, dynamic and observed masks
    :param scene: a scene to render in place of the spec's (its rig, seed and actors)
    :param camera: intrinsics in place of the spec's (width and height included)
    """

    def __init__(self, spec: IndependentSpec, grid: Optional[VoxelGrid] = None,
                 ground_truth: bool = True, scene: Optional[IndependentScene] = None,
                 camera: Optional[PinholeCamera] = None):
        """Build the scene, camera, renderer and ground truth."""
        self.spec = spec
        self.scene = scene if scene is not None else make_scene(
            spec.seed, spec.rig, spec.actors, spec.frames / spec.fps + 1.0)
        self.camera = camera if camera is not None else draw_camera(
            spec.seed, spec.width, spec.height, spec.hfov_deg)
        self.renderer = SceneRenderer(self.scene, self.camera)
        self.times = np.arange(spec.frames) / spec.fps
        self.poses = [self.scene.rig.pose(float(t)) for t in self.times]
        self.grid = grid if grid is not None else suggest_grid(
            self.scene, self.camera, self.poses, spec.voxel_size)
        self.max_depth = float(self.scene.max_depth)
        # About 320 rays across the image for the observed masks; every pixel still hits.
        self.observed_stride = max(1, self.camera.width // 320)
        self.truth = IndependentTruth(self.renderer.posed, self.grid) if ground_truth else None

    def stamp_ns(self, index: int) -> int:
        """Header stamp of frame ``index``."""
        return STAMP_BASE_NS + int(round(self.times[index] * 1e9))

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame ``index`` and its ground truth."""
        from l3rocc_core.raycast import observed_and_hits

        t = float(self.times[index])
        T = self.poses[index]
        r = self.renderer.render(t, T, index)
        out = SyntheticFrame(index, self.stamp_ns(index), t, r.image, r.depth, T, moving=r.moving)
        if self.truth is not None:
            out.occupied, out.dynamic = self.truth.occupancy(t)
            out.observed, _ = observed_and_hits(self.grid, r.depth, self.camera, T,
                                                self.max_depth, ray_stride=self.observed_stride,
                                                clear_no_return=True)
        return out

    def __iter__(self) -> Iterator[SyntheticFrame]:
        """Yield every frame in order."""
        for i in range(self.spec.frames):
            yield self.frame(i)

    def recommended_parameters(self) -> Dict[str, object]:
        """Pipeline parameters (``--set`` names) that match this sequence's grid and depths."""
        g = self.grid
        return {'grid_min': [float(v) for v in g.origin],
                'grid_max': [float(v) for v in g.grid_max], 'voxel_size': g.voxel_size,
                'world_frame': WORLD_FRAME, 'max_depth': self.max_depth, 'min_depth': 0.3,
                'pose_source': 'tf'}


def write_independent_sequence(out_dir: str, spec: IndependentSpec, progress: bool = True,
                               sequence: Optional[IndependentSequence] = None) -> dict:
    """Render one sequence and write its files (see the module docstring) into ``out_dir``.

    :param out_dir: created if missing; an existing ``sequence.mcap`` is replaced
    :param spec: what to render
    :param progress: show a tqdm progress bar
    :param sequence: an already built sequence of ``spec`` (e.g. with its own scene)
    :return: the meta dictionary (also written as ``meta.json``)
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    seq = sequence if sequence is not None else IndependentSequence(spec)
    t_frame = []
    with SequenceFiles(out_dir, seq.camera, seq.grid) as files:
        for i in tqdm(range(spec.frames), desc=f'independent {spec.name}', unit='frame',
                      disable=not progress, leave=False):
            t1 = time.perf_counter()
            f = seq.frame(i)
            t_frame.append(time.perf_counter() - t1)
            files.add(f.stamp_ns, f.image, f.depth, f.T_world_cam, f.occupied, f.observed,
                      f.dynamic, f.moving, preview=i == spec.frames // 2)
    spec_out = asdict(spec)
    spec_out.update(width=seq.camera.width, height=seq.camera.height)
    return files.meta(seq.recommended_parameters(), {
        'generator': GENERATOR, 'name': spec.name, 'spec': spec_out,
        'fixed_camera': bool(seq.scene.rig.fixed), 'objects': actor_names(seq.scene),
        'moving_pixel_share': files.moving_share(),
        'texture_sources': 'procedural; crops of car-detection.mp4, Intel IoT devkit sample '
                           'videos, CC BY 4.0 (data/independent/README.md)',
        'ms_per_frame_median': float(np.median(t_frame) * 1e3),
        'wall_s': time.perf_counter() - t0})


#: (rig, actors) of the sequences of a set, in order: every other one a fixed camera.
SET_PLAN = (('pole', 'people'), ('orbit', 'mixed'), ('pole', 'vehicles'), ('dolly', 'carts'),
            ('pole', 'arm'), ('orbit', 'people'), ('pole', 'mixed'), ('dolly', 'vehicles'),
            ('pole', 'carts'), ('orbit', 'arm'))


def set_specs(n: int, seed: int = 0, **overrides: object) -> List[IndependentSpec]:
    """Return the specs of a set of ``n`` sequences (deterministic in ``seed``).

    Sequence i follows :data:`SET_PLAN` (cyclically) with seed ``seed * 1000 + i``.

    :param overrides: further :class:`IndependentSpec` fields (frames, width, ...)
    """
    return [IndependentSpec(rig=SET_PLAN[i % len(SET_PLAN)][0],
                            actors=SET_PLAN[i % len(SET_PLAN)][1], seed=seed * 1000 + i,
                            **overrides) for i in range(n)]


def make_independent_set(out_dir: str, n: int, seed: int = 0, progress: bool = True,
                         **overrides: object) -> List[dict]:
    """Make ``n`` sequences into ``out_dir/<name>/`` and write ``out_dir/index.json``.

    :param out_dir: created if missing
    :param n: number of sequences
    :param seed: set seed (sequence i has seed ``seed * 1000 + i``)
    :param progress: show tqdm progress bars
    :param overrides: further :class:`IndependentSpec` fields (frames, width, ...)
    :return: the meta dictionaries
    """
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    metas = []
    for spec in tqdm(set_specs(n, seed, **overrides), desc='independent set', unit='seq',
                     disable=not progress):
        metas.append(write_independent_sequence(os.path.join(out_dir, spec.name), spec,
                                                progress))
    index = {'generator': GENERATOR, 'seed': seed,
             'sequences': [{'name': m['name'], 'rig': m['spec']['rig'],
                            'actors': m['spec']['actors'], 'seed': m['spec']['seed'],
                            'fixed_camera': m['fixed_camera'],
                            'moving_pixel_share': m['moving_pixel_share']} for m in metas]}
    with open(os.path.join(out_dir, 'index.json'), 'w', encoding='utf-8') as fh:
        json.dump(index, fh, indent=2)
    return metas


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: make a set, or one sequence with ``--rig`` and ``--actors``."""
    parser = argparse.ArgumentParser(
        prog='python -m l3rocc_core.datasets.independent',
        description='Render the independent evaluation set (its own renderer, shapes, motions '
                    'and textures) in the format of `l3rocc synth --out`.')
    parser.add_argument('--out', required=True, metavar='DIR', help='output folder')
    parser.add_argument('-n', '--num-sequences', type=int, default=6,
                        help='sequences in the set (default 6)')
    parser.add_argument('--seed', type=int, default=0, help='set seed, or the sequence seed '
                        'with --rig')
    parser.add_argument('--rig', choices=CAMERA_RIGS, help='make one sequence with this camera')
    parser.add_argument('--actors', choices=ACTOR_SETS, default='people',
                        help='what moves in the one sequence (with --rig)')
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    size = dict(frames=args.frames, fps=args.fps, width=args.width, height=args.height)
    try:
        if args.rig:
            spec = IndependentSpec(rig=args.rig, actors=args.actors, seed=args.seed, **size)
            meta = write_independent_sequence(args.out, spec, not args.quiet)
            metas = [meta]
        else:
            if args.num_sequences < 1:
                raise ValueError(f'-n must be >= 1, got {args.num_sequences}')
            metas = make_independent_set(args.out, args.num_sequences, args.seed,
                                         not args.quiet, **size)
    except (ValueError, OSError) as exc:
        print(f'independent: {exc}', file=sys.stderr)
        return 2
    if not args.quiet:
        for m in metas:
            print(f'{m["name"]}: grid {m["grid"]["dims"]}, moving pixels '
                  f'{100 * m["moving_pixel_share"]["mean"]:.1f} % mean / '
                  f'{100 * m["moving_pixel_share"]["max"]:.1f} % max, '
                  f'{m["ms_per_frame_median"]:.0f} ms/frame')
    return 0


if __name__ == '__main__':
    sys.exit(main())
