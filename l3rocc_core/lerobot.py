"""Occupancy sequences as a LeRobot v2.1 dataset: one recording = one episode.

Layout (LeRobot's ``codebase_version`` v2.1, chunks of :data:`CHUNKS_SIZE` episodes)::

    DIR/meta/info.json               fps, features (dtype, shape, names), totals, path templates
    DIR/meta/episodes.jsonl          {"episode_index", "tasks", "length", + l3rocc's grid, source}
    DIR/meta/tasks.jsonl             {"task_index", "task"}
    DIR/meta/episodes_stats.jsonl    {"episode_index", "stats": {feature: min/max/mean/std/count}}
    DIR/data/chunk-000/episode_000000.parquet         one row per occupancy row (frame)
    DIR/videos/chunk-000/observation.images.<camera>/episode_000000.mp4

Columns of the episode parquet (:func:`features`): LeRobot's ``timestamp`` (frame_index / fps,
seconds), ``frame_index``, ``episode_index``, ``index`` (over the dataset), ``task_index``;
``stamp_ns`` (the frame's capture stamp); ``observation.camera_pose`` (x, y, z, qx, qy, qz, qw:
the optical frame in the grid's world frame, metres; NaN without a pose);
``observation.camera_intrinsics`` (fx, fy, cx, cy in pixels of the episode's video frames: the
pipeline's undistorted pinhole model scaled to the video's size); the occupied voxels as CSR
rows: ``observation.occupancy.indices`` (int64 flat voxel indices, see the occupancy file) and
``observation.occupancy.probabilities`` (float32); ``observation.occupancy.visible_packed``
(binary: ``np.packbits`` of the row's observed-voxel mask [X, Y, Z], null when unknown). The
voxel grid of each episode is in its ``episodes.jsonl`` entry (``occupancy_grid``).
"""

import json
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np

CODEBASE_VERSION = 'v2.1'
CHUNKS_SIZE = 1000
DATA_PATH = 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet'
VIDEO_PATH = 'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4'
INFO_PATH = 'meta/info.json'
EPISODES_PATH = 'meta/episodes.jsonl'
TASKS_PATH = 'meta/tasks.jsonl'
EPISODES_STATS_PATH = 'meta/episodes_stats.jsonl'
DEFAULT_TASK = 'map the 4D occupancy around the camera'
VIDEO_CODEC = 'mp4v'
POSE_KEY = 'observation.camera_pose'
INTRINSICS_KEY = 'observation.camera_intrinsics'
INDICES_KEY = 'observation.occupancy.indices'
PROB_KEY = 'observation.occupancy.probabilities'
VISIBLE_KEY = 'observation.occupancy.visible_packed'
#: A source image this far (ns) from an occupancy row's stamp is not that row's picture.
STAMP_TOLERANCE_NS = 20_000_000
#: Frames sampled per episode for the video statistics.
STATS_SAMPLES = 100


def video_key(camera: str) -> str:
    """Feature name of a camera's video: ``observation.images.<camera>``."""
    return f'observation.images.{camera}'


def features(camera: str, height: int, width: int, fps: int) -> Dict[str, Dict[str, Any]]:
    """Return the LeRobot feature table (dtype, shape, names; ``info`` for the video).

    :param camera: camera name of the video feature
    :param height: video height in pixels
    :param width: video width in pixels
    :param fps: frames per second of the video
    """
    def scalar(dtype: str) -> Dict[str, Any]:
        return {'dtype': dtype, 'shape': [1], 'names': None}

    return {
        video_key(camera): {
            'dtype': 'video', 'shape': [height, width, 3],
            'names': ['height', 'width', 'channels'],
            'info': {'video.fps': float(fps), 'video.height': height, 'video.width': width,
                     'video.channels': 3, 'video.codec': VIDEO_CODEC,
                     'video.pix_fmt': 'yuv420p', 'video.is_depth_map': False,
                     'has_audio': False}},
        POSE_KEY: {'dtype': 'float32', 'shape': [7],
                   'names': ['x', 'y', 'z', 'qx', 'qy', 'qz', 'qw']},
        INTRINSICS_KEY: {'dtype': 'float32', 'shape': [4], 'names': ['fx', 'fy', 'cx', 'cy']},
        # Variable-length lists (shape -1): a row's occupied voxels.
        INDICES_KEY: {'dtype': 'int64', 'shape': [-1], 'names': None},
        PROB_KEY: {'dtype': 'float32', 'shape': [-1], 'names': None},
        VISIBLE_KEY: {'dtype': 'binary', 'shape': [1], 'names': None},
        'stamp_ns': scalar('int64'),
        'timestamp': scalar('float32'),
        'frame_index': scalar('int64'),
        'episode_index': scalar('int64'),
        'index': scalar('int64'),
        'task_index': scalar('int64'),
    }


def frame_rate(stamps_ns: np.ndarray, default: float = 10.0) -> int:
    """Whole frames per second from the median stamp step (at least 1)."""
    dt = np.diff(np.asarray(stamps_ns, np.int64)) / 1e9
    dt = dt[dt > 0]
    return max(1, int(round(1.0 / float(np.median(dt))))) if len(dt) else int(default)


def poses_xyzquat(T_world_cam: np.ndarray) -> np.ndarray:
    """float32 [N, 7] (x, y, z, qx, qy, qz, qw) of float [N, 4, 4] poses (NaN rows stay NaN)."""
    from l3rocc_core.transforms import matrix_to_quat
    out = np.full((len(T_world_cam), 7), np.nan, np.float32)
    for n, T in enumerate(T_world_cam):   # (per frame, not per pixel)
        if np.all(np.isfinite(T)):
            out[n, :3] = T[:3, 3]
            out[n, 3:] = matrix_to_quat(T[:3, :3])
    return out


def scaled_intrinsics(intrinsics: np.ndarray, size_from: np.ndarray,
                      size_to: Tuple[int, int]) -> np.ndarray:
    """float32 [N, 4] fx, fy, cx, cy of the same cameras at another image size.

    :param intrinsics: float [N, 4] at ``size_from``
    :param size_from: int [N, 2] width, height
    :param size_to: (width, height)
    """
    sx = size_to[0] / size_from[:, 0].astype(np.float64)
    sy = size_to[1] / size_from[:, 1].astype(np.float64)
    k = np.asarray(intrinsics, np.float64)
    # Pixel centres at integer coordinates: x' + 0.5 = (x + 0.5) * s.
    return np.stack([k[:, 0] * sx, k[:, 1] * sy, (k[:, 2] + 0.5) * sx - 0.5,
                     (k[:, 3] + 0.5) * sy - 0.5], axis=1).astype(np.float32)


def feature_stats(values: np.ndarray) -> Dict[str, List[Any]]:
    """Return the LeRobot per-episode statistics of a numeric feature over its first axis.

    :param values: [N] or [N, D]
    :return: min, max, mean, std (shape [1] for scalars, [D] for vectors; NaN-aware) and count
    """
    v = np.asarray(values, np.float64)
    v = v.reshape(len(v), -1)
    finite = np.isfinite(v).any(axis=0)
    out: Dict[str, List[Any]] = {}
    for name, fn in (('min', np.nanmin), ('max', np.nanmax), ('mean', np.nanmean),
                     ('std', np.nanstd)):
        stat = np.full(v.shape[1], np.nan)
        if len(v):
            stat[finite] = fn(v[:, finite], axis=0)
        out[name] = [None if not math.isfinite(x) else float(x) for x in stat]
    out['count'] = [int(len(v))]
    return out


def image_stats(frames: List[np.ndarray]) -> Dict[str, Any]:
    """Return the LeRobot statistics of video frames: per channel, in [0, 1], shape [3, 1, 1].

    :param frames: uint8 [H, W, 3] RGB samples
    """
    a = np.stack(frames).astype(np.float64) / 255.0   # N, H, W, 3
    out: Dict[str, Any] = {}
    for name, fn in (('min', np.min), ('max', np.max), ('mean', np.mean), ('std', np.std)):
        out[name] = [[[float(x)]] for x in fn(a, axis=(0, 1, 2))]
    out['count'] = [len(frames)]
    return out


class _VideoWriter:
    """Writes one picture per occupancy row, matching pictures to rows by stamp."""

    def __init__(self, path: str, fps: int, size: Optional[Tuple[int, int]],
                 stamps_ns: np.ndarray):
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path), '.partial.' + os.path.basename(path))
        self.fps = fps
        self.size = size          # (width, height); None: of the first picture
        self.stamps = np.asarray(stamps_ns, np.int64)
        self.writer: Optional[cv2.VideoWriter] = None
        self.blank = 0
        self.samples: List[np.ndarray] = []
        self._row = 0
        n = len(self.stamps)
        self._sample_rows = set(np.linspace(0, n - 1, min(n, STATS_SAMPLES)).round().astype(
            int).tolist()) if n else set()

    def _put(self, rgb: Optional[np.ndarray]) -> None:
        if self.writer is None:
            if self.size is None:
                self.size = ((rgb.shape[1], rgb.shape[0]) if rgb is not None else (320, 240))
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*VIDEO_CODEC),
                                          float(self.fps), self.size)
            if not self.writer.isOpened():
                raise OSError(f'OpenCV cannot write {VIDEO_CODEC} video to {self.tmp}')
        if rgb is None:
            self.blank += 1
            rgb = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        elif (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        if self._row in self._sample_rows:
            self.samples.append(rgb)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self._row += 1

    def write_all(self, images: Iterable[Tuple[int, np.ndarray, Any]]) -> None:
        """Stream the source's pictures; each row gets the nearest one within tolerance."""
        from l3rocc_core.sources import pictures_at
        for rgb in pictures_at(iter(images), self.stamps, STAMP_TOLERANCE_NS):
            self._put(rgb)

    def close(self) -> None:
        """Finish the file (atomically)."""
        if self.writer is None:
            self._put(None)   # an episode without rows still gets a (one-frame) file
        self.writer.release()
        os.replace(self.tmp, self.path)


def _csr_column(indptr: np.ndarray, values: np.ndarray, type_: Any) -> Any:
    """Return a list column (one list per row) of CSR rows: indptr int [N+1], values [nnz]."""
    import pyarrow as pa
    offsets = np.asarray(indptr, np.int64)
    if offsets[-1] >= 2**31:   # list offsets are int32
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()),
                                             pa.array(values, type_))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()),
                                    pa.array(values, type_))


def _write_json(path: str, data: Any, lines: bool = False) -> None:
    tmp = path + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        if lines:
            f.write(''.join(json.dumps(d) + '\n' for d in data))
        else:
            json.dump(data, f, indent=4)
            f.write('\n')
    os.replace(tmp, path)


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


class LeRobotDatasetWriter:
    """Writes (or extends) a LeRobot v2.1 dataset, one episode per occupancy sequence.

    :param root: dataset folder
    :param camera: camera name (video key ``observation.images.<camera>``)
    :param task: the task text of every episode
    :param fps: frames per second (default: from the first episode's stamps); timestamps are
        frame_index / fps, as LeRobot expects
    :param append: extend the dataset already in ``root`` (else it must not hold one)
    :raises ValueError: ``root`` holds a dataset and ``append`` is false, or holds one of another
        version or camera
    """

    def __init__(self, root: str, camera: str = 'rgb', task: str = DEFAULT_TASK,
                 fps: Optional[int] = None, append: bool = False):
        """Open or start the dataset (nothing written before the first episode)."""
        self.root = root
        self.camera = camera
        self.task = task
        self.fps = fps
        self.info: Optional[Dict[str, Any]] = None
        self.episodes: List[Dict[str, Any]] = []
        self.tasks: List[Dict[str, Any]] = []
        self.stats: List[Dict[str, Any]] = []
        info_path = os.path.join(root, INFO_PATH)
        if os.path.exists(info_path):
            if not append:
                raise ValueError(f'{root} already holds a LeRobot dataset: add --append to add '
                                 'an episode, or choose another --out')
            with open(info_path, encoding='utf-8') as f:
                self.info = json.load(f)
            if self.info.get('codebase_version') != CODEBASE_VERSION:
                raise ValueError(f'{root}: dataset version {self.info.get("codebase_version")} '
                                 f'is not {CODEBASE_VERSION}')
            if video_key(camera) not in self.info.get('features', {}):
                raise ValueError(f'{root}: the dataset has no video {video_key(camera)}')
            self.fps = int(self.info['fps'])
            self.episodes = _read_jsonl(os.path.join(root, EPISODES_PATH))
            self.tasks = _read_jsonl(os.path.join(root, TASKS_PATH))
            stats_path = os.path.join(root, EPISODES_STATS_PATH)
            self.stats = _read_jsonl(stats_path) if os.path.exists(stats_path) else []

    def _task_index(self) -> int:
        for t in self.tasks:
            if t['task'] == self.task:
                return int(t['task_index'])
        self.tasks.append({'task_index': len(self.tasks), 'task': self.task})
        return len(self.tasks) - 1

    def add_episode(self, seq: Any, cameras: Optional[Dict[str, np.ndarray]],
                    images: Iterable[Tuple[int, np.ndarray, Any]],
                    source: str = '', name: str = '') -> Dict[str, Any]:
        """Append one occupancy sequence as the next episode; rewrite the meta files.

        :param seq: :class:`~l3rocc_core.occupancy.OccupancySequence` (N rows)
        :param cameras: the sequence's ``cameras.npz`` arrays (:mod:`l3rocc_core.camera_log`),
            or None (then pose and intrinsics are NaN)
        :param images: (stamp_ns, uint8 [H, W, 3] RGB, _) of the recording in time order
            (:func:`l3rocc_core.sources.iter_images`)
        :param source: the recording, for the episode entry
        :param name: a short name of the recording, for the episode entry
        :return: the episode's ``episodes.jsonl`` entry
        :raises ValueError: cameras that do not belong to the sequence
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        stamps = np.asarray(seq.stamps_ns, np.int64)
        n = len(stamps)
        if cameras is not None and not np.array_equal(cameras['stamps'], stamps):
            raise ValueError('the cameras file does not belong to the occupancy file: their '
                             'stamps differ')
        if self.fps is None:
            self.fps = frame_rate(stamps)
        ep = len(self.episodes)
        chunk = ep // CHUNKS_SIZE
        first_index = sum(int(e['length']) for e in self.episodes)
        task_index = self._task_index()

        key = video_key(self.camera)
        size = None
        if self.info is not None:
            h, w = self.info['features'][key]['shape'][:2]
            size = (int(w), int(h))
        video_path = os.path.join(self.root, VIDEO_PATH.format(
            episode_chunk=chunk, video_key=key, episode_index=ep))
        os.makedirs(os.path.dirname(video_path), exist_ok=True)
        video = _VideoWriter(video_path, self.fps, size, stamps)
        video.write_all(images)
        video.close()
        width, height = video.size

        if cameras is not None:
            pose = poses_xyzquat(cameras['T_world_cam'])
            intr = scaled_intrinsics(cameras['intrinsics'], cameras['image_size'],
                                     (width, height))
        else:
            pose = np.full((n, 7), np.nan, np.float32)
            intr = np.full((n, 4), np.nan, np.float32)
        frame_index = np.arange(n, dtype=np.int64)
        timestamp = (frame_index / self.fps).astype(np.float32)
        visible = None if seq.visible is None else [
            np.packbits(seq.visible[r]).tobytes() for r in range(n)]
        columns = {
            'timestamp': pa.array(timestamp, pa.float32()),
            'frame_index': pa.array(frame_index, pa.int64()),
            'episode_index': pa.array(np.full(n, ep, np.int64), pa.int64()),
            'index': pa.array(first_index + frame_index, pa.int64()),
            'task_index': pa.array(np.full(n, task_index, np.int64), pa.int64()),
            'stamp_ns': pa.array(stamps, pa.int64()),
            POSE_KEY: pa.FixedSizeListArray.from_arrays(
                pa.array(pose.reshape(-1), pa.float32()), 7),
            INTRINSICS_KEY: pa.FixedSizeListArray.from_arrays(
                pa.array(intr.reshape(-1), pa.float32()), 4),
            INDICES_KEY: _csr_column(seq.indptr, seq.indices, pa.int64()),
            PROB_KEY: _csr_column(seq.indptr, seq.prob, pa.float32()),
            VISIBLE_KEY: pa.array(visible if visible is not None else [None] * n, pa.binary()),
        }
        table = pa.table(columns)
        data_path = os.path.join(self.root, DATA_PATH.format(episode_chunk=chunk,
                                                             episode_index=ep))
        os.makedirs(os.path.dirname(data_path), exist_ok=True)
        tmp = data_path + '.partial'
        pq.write_table(table, tmp)
        os.replace(tmp, data_path)

        if self.info is None:
            self.info = {
                'codebase_version': CODEBASE_VERSION, 'robot_type': 'unknown',
                'total_episodes': 0, 'total_frames': 0, 'total_tasks': 0, 'total_videos': 0,
                'total_chunks': 0, 'chunks_size': CHUNKS_SIZE, 'fps': int(self.fps),
                'splits': {}, 'data_path': DATA_PATH, 'video_path': VIDEO_PATH,
                'features': features(self.camera, height, width, int(self.fps))}
        g = seq.grid
        entry = {'episode_index': ep, 'tasks': [self.task], 'length': n,
                 'source': source, 'name': name,
                 'occupancy_grid': {'origin': [float(x) for x in g.origin],
                                    'voxel_size': float(g.voxel_size),
                                    'dims': [int(x) for x in g.dims], 'frame_id': g.frame_id,
                                    'flat_index': '(x * Y + y) * Z + z'},
                 'frames_without_image': video.blank,
                 'occupied_voxels_mean': float(np.diff(seq.indptr).mean()) if n else 0.0}
        self.episodes.append(entry)
        ep_stats = {k: feature_stats(v) for k, v in (
            ('timestamp', timestamp), ('frame_index', frame_index),
            ('episode_index', np.full(n, ep)), ('index', first_index + frame_index),
            ('task_index', np.full(n, task_index)), ('stamp_ns', stamps),
            (POSE_KEY, pose), (INTRINSICS_KEY, intr))}
        if video.samples:
            ep_stats[key] = image_stats(video.samples)
        self.stats.append({'episode_index': ep, 'stats': ep_stats})
        self._write_meta()
        return entry

    def _write_meta(self) -> None:
        info = self.info
        total = len(self.episodes)
        info.update({'total_episodes': total,
                     'total_frames': sum(int(e['length']) for e in self.episodes),
                     'total_tasks': len(self.tasks), 'total_videos': total,
                     'total_chunks': (total - 1) // CHUNKS_SIZE + 1 if total else 0,
                     'splits': {'train': f'0:{total}'}})
        os.makedirs(os.path.join(self.root, 'meta'), exist_ok=True)
        _write_json(os.path.join(self.root, EPISODES_PATH), self.episodes, lines=True)
        _write_json(os.path.join(self.root, TASKS_PATH), self.tasks, lines=True)
        _write_json(os.path.join(self.root, EPISODES_STATS_PATH), self.stats, lines=True)
        # info.json last: a dataset whose info.json lists an episode has all of its files.
        _write_json(os.path.join(self.root, INFO_PATH), info)


def select_rows(seq: Any, rows: Iterable[int]) -> Any:
    """Return the sequence restricted to ``rows`` (an OccupancySequence).

    :param seq: an OccupancySequence
    :param rows: row indices, in the order to keep
    """
    from l3rocc_core.occupancy import OccupancySequence
    rows = np.asarray(list(rows), np.int64)
    if len(rows) == len(seq) and np.array_equal(rows, np.arange(len(seq))):
        return seq
    start, stop = seq.indptr[rows], seq.indptr[rows + 1]
    indptr = np.concatenate([[0], np.cumsum(stop - start)]).astype(np.int64)
    take = np.concatenate([np.arange(a, b) for a, b in zip(start, stop)] or [[]]).astype(
        np.int64)
    visible = None if seq.visible is None else seq.visible[rows]
    return OccupancySequence(np.asarray(seq.stamps_ns, np.int64)[rows], seq.grid, indptr,
                             np.asarray(seq.indices)[take], np.asarray(seq.prob)[take], visible)


def export_episode(occupancy: str, out_dir: str, source: str, rows: Optional[List[int]] = None,
                   cameras: Optional[str] = None, intrinsics: Optional[str] = None,
                   source_fps: Optional[float] = None, image_topic: Optional[str] = None,
                   camera: str = 'rgb', task: str = DEFAULT_TASK, fps: Optional[int] = None,
                   append: bool = False, name: str = '', seq: Any = None) -> Dict[str, Any]:
    """Write ``occupancy`` (+ its recording) as one episode of the LeRobot dataset ``out_dir``.

    :param occupancy: an ``occupancy.npz``
    :param out_dir: the dataset folder
    :param source: the recording the occupancy was made from (the video's pictures)
    :param rows: occupancy rows to export (default: all)
    :param cameras: the ``cameras.npz`` of the replay (default: next to ``occupancy``; without
        one, camera pose and intrinsics are NaN)
    :param intrinsics: ``--intrinsics`` of a video/image folder source (only to open it)
    :param source_fps: frame rate of a video/image folder as given to replay (its stamps)
    :param image_topic: bag image topic (default: auto)
    :param camera: camera name of the video feature
    :param task: task text
    :param fps: dataset frame rate (default: from the stamps)
    :param append: add to the dataset already in ``out_dir``
    :param name: a short name of the recording (episode entry)
    :param seq: ``occupancy`` already loaded (an OccupancySequence), or None
    :return: the episode entry, with ``cameras`` set to the cameras file used (or None)
    :raises ValueError: bad files or options; ``SourceError``: unreadable recording
    """
    from l3rocc_core.camera_log import cameras_of
    from l3rocc_core.occupancy import load_sequence
    from l3rocc_core.sources import iter_images
    seq = load_sequence(occupancy) if seq is None else seq
    if len(seq) == 0:
        raise ValueError(f'{occupancy}: no rows to export')
    rows = list(range(len(seq))) if rows is None else list(rows)
    cameras, cams = cameras_of(occupancy, len(seq), cameras)
    if cams is not None:
        cams = {k: v[rows] for k, v in cams.items()}
    writer = LeRobotDatasetWriter(out_dir, camera, task, fps, append)
    entry = writer.add_episode(select_rows(seq, rows), cams,
                               iter_images(source, intrinsics, image_topic, source_fps),
                               os.path.abspath(source), name)
    return dict(entry, cameras=cameras)
