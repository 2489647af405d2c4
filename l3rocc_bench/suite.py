"""The benchmark's fixed, seeded sequences and their cache.

Synthetic sequences come from the held-out test split's seed range of ``l3rocc synth``
(``synth.dataset.SPLIT_SEED_BASE['test']``), so the network is never scored on its training
scenes; both families, moving and static cameras, 640x480. The independent sequences come from
:mod:`l3rocc_core.datasets.independent`, a renderer, shapes, motions and textures of its own that
nothing was trained or tuned on, in the same file layout. The real sequence is TUM fr1/xyz
(37 frames, 30 Hz) as a rosbag2 made with :func:`l3rocc_core.datasets.tum.write_tum_bag`.

Each sequence is made once into ``CACHE/<name>/`` (``sequence.mcap``, ``gt.npz``, ``depth.npz``,
``meta.json`` for synthetic ones); a folder is written under a temporary name and renamed when
complete, so an interrupted run never leaves a half-made sequence that looks finished. The spec
is stored beside it and a changed spec is re-made. Synthetic sequences are made by the
``l3rocc synth`` command in a subprocess.
"""

from dataclasses import asdict, dataclass
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

#: Seeds of the benchmark's synthetic sequences start here (the synth test split).
TEST_SEED_BASE = 200_000
SPEC_FILE = 'bench_spec.json'


@dataclass(frozen=True)
class Case:
    """One benchmark sequence.

    :param name: short unique name (also the cache folder)
    :param kind: 'synth', 'independent' or 'tum'
    :param family: synth scene family ('industrial' | 'driving'), the independent set's actors
        ('people', 'vehicles', 'carts', 'arm', 'mixed'); '' for TUM
    :param camera: synth camera motion ('handheld', 'vehicle', 'orbit', 'pan', 'static'), the
        independent set's rig ('pole': fixed, 'orbit', 'dolly')
    :param seed: synth or independent seed
    :param frames: frames to render (synth) or to use (TUM: None = all 37)
    :param fps: synth frame rate
    :param width: image width (height = 3/4 of it)
    """

    name: str
    kind: str
    family: str = ''
    camera: str = ''
    seed: int = 0
    frames: Optional[int] = None
    fps: float = 15.0
    width: int = 640

    @property
    def folder(self) -> str:
        """Return the cache folder name (frame count included: sets share sequence names)."""
        return f'{self.name}_{self.frames}f' if self.frames else self.name

    @property
    def dynamic_gt(self) -> bool:
        """Whether the ground truth separates static and dynamic voxels."""
        return self.kind in ('synth', 'independent')

    @property
    def moving_camera(self) -> bool:
        """Whether the camera moves (a static camera gives the plane sweep no baseline)."""
        return self.camera not in ('static', 'pole')


def _synth(name: str, family: str, camera: str, index: int, frames: int, fps: float) -> Case:
    return Case(name, 'synth', family, camera, TEST_SEED_BASE + index, frames, fps)


def _independent(rig: str, actors: str, seed: int, frames: int, width: int) -> Case:
    return Case(f'indep_{rig}_{actors}', 'independent', actors, rig, seed, frames, 10.0, width)


TUM_CASE = Case('tum_fr1_xyz', 'tum', fps=30.0)

#: ``l3rocc bench --quick``: one moving and one static camera, both families, and TUM.
QUICK_SET: Tuple[Case, ...] = (
    _synth('industrial_handheld', 'industrial', 'handheld', 0, 20, 10.0),
    _synth('driving_static', 'driving', 'static', 1, 20, 10.0),
    _independent('pole', 'people', 1, 20, 320),
    TUM_CASE,
)

#: The sequences of the quick set also scored with ``refiner: network`` (the network costs
#: seconds per frame on the CPU; a moving synthetic camera has every accuracy figure, static
#: voxels included). The default set scores every sequence with both refiners.
QUICK_NETWORK_CASES: Tuple[str, ...] = ('industrial_handheld',)

#: ``l3rocc bench``: three camera motions per family (one static: no parallax, so only the
#: network gives depth), the independent set, and TUM.
DEFAULT_SET: Tuple[Case, ...] = (
    _synth('industrial_handheld', 'industrial', 'handheld', 0, 32, 10.0),
    _synth('industrial_orbit', 'industrial', 'orbit', 2, 32, 15.0),
    _synth('industrial_static', 'industrial', 'static', 4, 32, 10.0),
    _synth('driving_vehicle', 'driving', 'vehicle', 3, 32, 10.0),
    _synth('driving_handheld', 'driving', 'handheld', 5, 32, 15.0),
    _synth('driving_static', 'driving', 'static', 1, 32, 10.0),
    _independent('pole', 'people', 1, 32, 640),
    _independent('orbit', 'mixed', 2, 32, 640),
    _independent('pole', 'vehicles', 3, 32, 640),
    _independent('dolly', 'carts', 4, 32, 640),
    TUM_CASE,
)

#: The case whose bag is the "640x480, 10 fps" replay of the speed targets.
SPEED_CASE = 'industrial_handheld'


@dataclass
class Prepared:
    """A sequence ready to replay.

    :param case: what it is
    :param bag: the rosbag2 file
    :param gt: synthetic GT occupancy file (contract npz), or None for TUM (GT from depth)
    :param depth: synthetic GT depth file (``depth``, ``K``, ``stamps``), or None
    :param parameters: ``--set`` values that fit the sequence (grid, frames, depth range)
    :param params_file: parameter overlay (TUM: ``config/tum.yaml``), or None
    :param made: whether it was made by this run (False: from the cache)
    """

    case: Case
    bag: str
    gt: Optional[str]
    depth: Optional[str]
    parameters: Dict[str, Any]
    params_file: Optional[str]
    made: bool = False


def _spec_matches(folder: Path, spec: Dict[str, Any]) -> bool:
    path = folder / SPEC_FILE
    if not path.is_file():
        return False
    try:
        with open(path, 'r', encoding='utf-8') as f:
            return json.load(f) == spec
    except (OSError, ValueError):
        return False


def _fresh_tmp(folder: Path) -> Path:
    tmp = folder.with_name(folder.name + '.partial')
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def _commit(tmp: Path, folder: Path, spec: Dict[str, Any]) -> None:
    with open(tmp / SPEC_FILE, 'w', encoding='utf-8') as f:
        json.dump(spec, f, indent=1)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def prepare(case: Case, cache_dir: str, progress: bool = True) -> Prepared:
    """Make (once) and return the files of ``case`` under ``cache_dir``.

    :param case: the sequence
    :param cache_dir: cache root (created), e.g. ``out/bench/cache``
    :param progress: show tqdm bars while making
    :raises ValueError: unknown kind
    :raises RuntimeError: ``l3rocc synth`` failed
    """
    folder = Path(cache_dir) / case.folder
    spec = asdict(case)
    made = False
    if case.kind == 'synth':
        if not _spec_matches(folder, spec):
            # ``l3rocc synth`` in its own process: open3d (its renderer) must not share this
            # process with torch's OpenMP runtime, which slows every later torch call.
            tmp = _fresh_tmp(folder)
            cmd = [sys.executable, '-m', 'l3rocc_core.cli', 'synth', '--out', str(tmp),
                   '--family', case.family, '--camera', case.camera, '--seed', str(case.seed),
                   '--frames', str(int(case.frames or 32)), '--fps', str(case.fps),
                   '--width', str(case.width), '--height', str(case.width * 3 // 4)]
            with open(os.devnull, 'wb') as devnull:
                proc = subprocess.run(cmd, stdout=devnull, check=False,
                                      stderr=None if progress else devnull)
            if proc.returncode:
                raise RuntimeError(f'l3rocc synth failed (exit {proc.returncode}) for '
                                   f'{case.name}: {" ".join(cmd[3:])}')
            _commit(tmp, folder, spec)
            made = True
        with open(folder / 'meta.json', 'r', encoding='utf-8') as f:
            meta = json.load(f)
        params = dict(meta['recommended_parameters'])
        return Prepared(case, str(folder / 'sequence.mcap'), str(folder / 'gt.npz'),
                        str(folder / 'depth.npz'), params, None, made)
    if case.kind == 'independent':
        if not _spec_matches(folder, spec):
            from l3rocc_core.datasets.independent import (IndependentSpec,
                                                          write_independent_sequence)
            tmp = _fresh_tmp(folder)
            write_independent_sequence(str(tmp), IndependentSpec(
                rig=case.camera, actors=case.family, seed=case.seed, frames=int(case.frames or 32),
                fps=case.fps, width=case.width, height=case.width * 3 // 4), progress)
            _commit(tmp, folder, spec)
            made = True
        with open(folder / 'meta.json', 'r', encoding='utf-8') as f:
            meta = json.load(f)
        return Prepared(case, str(folder / 'sequence.mcap'), str(folder / 'gt.npz'),
                        str(folder / 'depth.npz'), dict(meta['recommended_parameters']), None,
                        made)
    if case.kind == 'tum':
        if not _spec_matches(folder, spec):
            from l3rocc_core.datasets.tum import write_tum_bag
            tmp = _fresh_tmp(folder)
            tmp.mkdir(parents=True)
            write_tum_bag(str(tmp / 'sequence.mcap'), max_frames=case.frames,
                          progress=progress)
            _commit(tmp, folder, spec)
            made = True
        from l3rocc_core.paths import config_file
        return Prepared(case, str(folder / 'sequence.mcap'), None, None, {},
                        config_file('tum.yaml'), made)
    raise ValueError(f'unknown benchmark case kind {case.kind!r}')


def select(cases: Tuple[Case, ...], names: Optional[List[str]]) -> List[Case]:
    """Cases whose names are in ``names`` (all when None), in set order.

    :raises ValueError: a name that is not in the set
    """
    if not names:
        return list(cases)
    known = {c.name for c in cases}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f'unknown sequence(s) {bad}; this set has {sorted(known)}')
    return [c for c in cases if c.name in names]
