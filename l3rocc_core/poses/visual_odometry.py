"""Monocular visual odometry: camera poses from the images alone.

Front-end (every frame): corners tracked by pyramidal Lucas-Kanade with a forward-backward
check; the pose from the tracked landmarks by PnP in RANSAC, refined on the inliers; corners
farther than ``vo_reprojection_px`` from their landmark are dropped (moving objects, bad
tracks). Back-end (every keyframe): new landmarks triangulated from tracks seen since an
earlier keyframe, then a local bundle adjustment of the last ``vo_window_keyframes``
keyframes (:mod:`l3rocc_core.poses.bundle_adjustment`).

The state machine is explicit::

    initializing --(enough parallax: essential matrix, triangulated map)--> tracking
    tracking --(too few inliers, implausible jump)--> lost --(next frame)--> initializing

Where the world starts: the caller gives the first pose (``T_world_start``), or none: then the
camera is ``camera_height_m`` above the origin, facing +x, and its pitch and roll come from the
images: the first map is turned about the camera so that the ground plane it sees (fitted with
its tilt free) becomes z = 0, the camera's heading (its optical axis on the ground) staying +x
(:attr:`VisualOdometry.start_levelling`). Frames before that have no pose. Metric scale,
in order of preference: measured depth (``scale_source: depth``); the ground plane z = 0 of
the world below the camera, whose distance must equal the camera height at the start
(``ground``); else none (``none``: the map is scaled so that the median landmark depth at the
start is 1, not metres). The ground is refitted at every keyframe and the map rescaled by the
median of the recent measurements, so the scale does not drift while the ground stays in view.

After a restart the new map starts at the last tracked pose (the camera's true pose there is
unknown) and takes its scale again from the ground or depth.
"""

from dataclasses import dataclass, field, replace
import logging
from typing import List, Optional, Tuple

import cv2
import numpy as np

from l3rocc_core.camera import PinholeCamera
from l3rocc_core.config import PipelineConfig
from l3rocc_core.poses.bundle_adjustment import BAProblem, bundle_adjust
from l3rocc_core.poses.geometry import (camera_centre, project, roll_pitch_deg, so3_log,
                                        transform_points, triangulate)
from l3rocc_core.poses.ground_plane import fit_ground, photometric_ground_height
from l3rocc_core.transforms import invert, rotation_angle_deg

LOG = logging.getLogger(__name__)

STATES = ('initializing', 'tracking', 'lost')
SCALE_SOURCES = ('ground', 'depth', 'none')

#: Lucas-Kanade: window (pixels), pyramid levels, iterations; forward-backward tolerance (px).
LK_WINDOW = (11, 11)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03)
FB_MAX_PX = 1.0
#: Corners keep this share of the image width apart (at least 5 pixels); they are detected
#: per cell of a grid (columns, rows), each cell's own strongest (Shi-Tomasi, relative quality),
#: and never where the smallest eigenvalue (cv2.cornerMinEigenVal of uint8 images) is below
#: ``MIN_CORNER_EIGEN`` (blank walls, sensor noise).
MIN_CORNER_SPACING = 1.0 / 40.0
DETECTION_GRID = (6, 4)
CORNER_QUALITY = 0.02
CORNER_BLOCK = 5
MIN_CORNER_EIGEN = 5e-5
#: The map starts only when the median angle between the two views' rays exceeds this: a pure
#: rotation has none, and would give a translation of pure noise.
INIT_PARALLAX_DEG = 1.0
#: A pure rotation: a homography explains this share of the corners and is a rotation up to
#: this Frobenius norm of (M^T M - I), M = K^-1 H K normalised to determinant 1.
ROTATION_ONLY_SHARE = 0.9
ROTATION_ONLY_TOLERANCE = 0.01
#: A landmark needs rays at least this far apart (degrees) to be triangulated.
TRIANGULATION_PARALLAX_DEG = 1.0
#: A new keyframe when the landmark inliers fall below this share of the last keyframe's ...
KEYFRAME_INLIER_SHARE = 0.7
#: ... or the corners moved this many times ``vo_min_parallax_px`` since it, or after this many
#: frames.
KEYFRAME_PARALLAX_FACTOR = 1.0
KEYFRAME_MAX_FRAMES = 20
#: Keyframes kept beyond the window as anchors of tracks not yet triangulated.
EXTRA_KEYFRAMES = 4
#: An implausible jump between consecutive frames: rotation (degrees), or camera travel as a
#: share of the median landmark depth.
MAX_ROTATION_PER_FRAME_DEG = 30.0
MAX_TRAVEL_PER_FRAME_SHARE = 0.5
#: Frames a new landmark must agree with before it helps to solve the pose.
CONFIRM_FRAMES = 2
#: Fewest landmarks with a depth reading that give the scale from depth.
MIN_DEPTH_SAMPLES = 10
#: Depth noise model of the depth prior: sigma = a + b z^2 (metres; RGB-D cameras).
DEPTH_SIGMA_A = 0.005
DEPTH_SIGMA_B = 0.003
#: The ground gives no scale when the camera is lower than this above it at the start (m).
MIN_CAMERA_HEIGHT_M = 0.05
#: The map starts only once the ground below (when there is one) is at most this many
#: baselines away (the ground's parallax then measures the scale), unless that takes longer
#: than this many frames.
MAX_GROUND_BASELINES = 15.0
MAX_WAIT_FOR_GROUND_FRAMES = 30
#: ... and once the ground's distance from the images and from the landmarks agree within
#: this factor (when both are measured).
START_AGREEMENT = 1.1
#: Ground scale measurements: the median of the last this many is applied (the first
#: ``SCALE_FILTER_MIN`` - 1 directly); one outside [MIN_SCALE_STEP, 1 / MIN_SCALE_STEP] is a
#: wrong plane and ignored.
SCALE_FILTER = 5
SCALE_FILTER_MIN = 3
MIN_SCALE_STEP = 0.7
UP = np.array([0.0, 0.0, 1.0])
#: The ground's height is measured between the newest and the oldest window keyframe (the
#: longest baseline: a rotation error of 0.1 degree moves the ground by as many pixels as
#: the parallax of a baseline of f * 0.0017 * depth), when their baseline is at least this
#: share of the expected height; searched within this factor of it.
PHOTO_MIN_BASELINE_SHARE = 0.05
#: ... and when they turned at most this much (degrees; the views must share their ground).
PHOTO_MAX_TURN_DEG = 10.0
PHOTO_SEARCH = 1.6
#: Images at least this wide are compared at half resolution.
PHOTO_HALF_WIDTH = 320
#: Frames in initialization without a map before the reference frame is renewed.
MAX_INIT_FRAMES = 60
#: A start guessed level is turned onto the ground of the first map, whose normal may tilt this
#: far from the guess's up (degrees): a camera pitched down up to this far. (A wall ahead has
#: the camera in front of it, not above: only a camera pitched up could take it for ground.)
LEVEL_MAX_TILT_DEG = 60.0
#: ... and that map starts only once the ground is at most this many baselines below (not
#: ``MAX_GROUND_BASELINES``): with less baseline a small error of the two-view rotation tilts
#: the ground by degrees (measured: up to 26 degrees at 15 baselines, on the analytic scenes).
LEVEL_MAX_GROUND_BASELINES = 8.0
#: ... and once two attempts in a row (two frames against the same reference) find the
#: ground's normal within this angle (degrees) of each other.
LEVEL_REPEAT_DEG = 2.0
#: The first map is levelled again at each keyframe while it keeps its first keyframe (a longer
#: baseline, a better map: on the analytic scenes the first levelling was up to 10 degrees off,
#: the last within 1.5), by at most this much each time (degrees).
RELEVEL_MAX_TILT_DEG = 5.0


@dataclass
class VOResult:
    """What :meth:`VisualOdometry.track` made of one frame.

    :param T_world_cam: float64 [4, 4] pose of the optical frame in the world, or None
        (initializing without a map yet, or lost)
    :param state: ``initializing``, ``tracking`` or ``lost``
    :param inliers: landmarks that agree with the pose (0 without a map)
    :param reprojection_error_px: median reprojection error of the inliers (pixels; NaN
        without a map)
    :param scale_source: where the metric scale comes from: ``ground``, ``depth``, ``none``
    :param keyframe: the frame became a keyframe
    :param message: why tracking was lost, or why the map does not start yet
    """

    T_world_cam: Optional[np.ndarray]
    state: str
    inliers: int = 0
    reprojection_error_px: float = float('nan')
    scale_source: str = 'none'
    keyframe: bool = False
    message: str = ''


@dataclass
class Levelling:
    """How a start guessed level was turned onto the ground the first map sees.

    :param roll_deg: the start camera's roll (``camera_pose`` convention: > 0 the right side
        down), degrees
    :param pitch_deg: its pitch (> 0 looks down), degrees
    :param ground_landmarks: landmarks on the fitted ground plane
    """

    roll_deg: float
    pitch_deg: float
    ground_landmarks: int


@dataclass
class Keyframe:
    """A frame kept for triangulation and bundle adjustment.

    :param serial: keyframe number (increasing)
    :param T_cam_world: float64 [4, 4]
    :param ids: int64 [M] track ids observed
    :param uv: float64 [M, 2] their pixels
    :param depth: float64 [M] measured depth there (0 = none)
    :param gray: uint8 [H, W] the image (the ground's height is measured on it)
    """

    serial: int
    T_cam_world: np.ndarray
    ids: np.ndarray
    uv: np.ndarray
    depth: np.ndarray
    gray: np.ndarray


@dataclass
class _Tracks:
    """Corners followed from frame to frame (parallel arrays, one row per corner).

    ``anchor`` is the serial of the keyframe where the corner was first seen (-1 before the
    map starts), ``anchor_uv`` its pixel there.
    """

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchor_uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: np.ndarray) -> '_Tracks':
        return _Tracks(self.ids[keep], self.uv[keep], self.anchor[keep], self.anchor_uv[keep])

    def extend(self, ids: np.ndarray, uv: np.ndarray, anchor: int) -> '_Tracks':
        return _Tracks(np.r_[self.ids, ids], np.r_[self.uv, uv].astype(np.float32),
                       np.r_[self.anchor, np.full(len(ids), anchor)],
                       np.r_[self.anchor_uv, uv].astype(np.float32))


class _Landmarks:
    """Triangulated points, sorted by id (ids grow, so appending keeps the order).

    ``seen`` counts the frames since triangulation whose pose the landmark agreed with; from
    ``CONFIRM_FRAMES`` on it is confirmed and the pose is solved from confirmed landmarks
    only (when there are enough).
    """

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.xyz = np.zeros((0, 3))
        self.seen = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return (row [N], found bool [N]) of ``ids`` (row is meaningless where not found)."""
        row = np.searchsorted(self.ids, ids)
        row = np.minimum(row, max(len(self.ids) - 1, 0))
        found = (self.ids[row] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        return row, found

    def add(self, ids: np.ndarray, xyz: np.ndarray, seen: int = 0) -> None:
        self.ids = np.r_[self.ids, ids]
        self.xyz = np.r_[self.xyz, xyz]
        self.seen = np.r_[self.seen, np.full(len(ids), seen, np.int64)]
        if len(self.ids) > 1 and np.any(np.diff(self.ids) <= 0):   # keep them sorted
            o = np.argsort(self.ids, kind='stable')
            self.ids, self.xyz, self.seen = self.ids[o], self.xyz[o], self.seen[o]

    def keep(self, mask: np.ndarray) -> None:
        self.ids, self.xyz, self.seen = self.ids[mask], self.xyz[mask], self.seen[mask]


def level_start_pose(camera_height_m: float) -> np.ndarray:
    """Return T_world_cam of a level camera ``camera_height_m`` above the origin, facing +x."""
    from l3rocc_core.stream import pose_from_xyz_rpy
    return pose_from_xyz_rpy([0.0, 0.0, float(camera_height_m), 0.0, 0.0, 0.0])


class VisualOdometry:
    """Monocular visual odometry of one camera.

    :param config: the pipeline configuration (``vo_*`` parameters, ``camera_height_m``)
    :param camera: the undistorted pinhole camera of the images that :meth:`track` receives
    :param T_world_start: float64 [4, 4] pose of the first frame (default: ``camera_height_m``
        above the world origin facing +x, pitch and roll from the ground the first map sees)
    :param seed: random seed of the ground-plane RANSAC
    """

    def __init__(self, config: PipelineConfig, camera: PinholeCamera,
                 T_world_start: Optional[np.ndarray] = None, seed: int = 0):
        """Start in ``initializing`` with an empty map."""
        self.cfg = config.vo
        self.camera = camera
        self.K = camera.K.astype(np.float64)
        self.size = (camera.width, camera.height)
        start = (level_start_pose(config.input.camera_height_m) if T_world_start is None
                 else np.asarray(T_world_start, np.float64))
        if start.shape != (4, 4) or not np.all(np.isfinite(start)):
            raise ValueError('T_world_start must be a finite 4x4 matrix')
        self.T_world_anchor = start
        #: the start is a level guess until the first map levels it on the ground
        self.level_guess = T_world_start is None
        #: how the first map levelled that guess (None: a start pose was given, or not yet)
        self.start_levelling: Optional[Levelling] = None
        self.state = 'initializing'
        self.scale_source = 'none'
        self._rng = np.random.default_rng(seed)
        self._spacing = max(5.0, MIN_CORNER_SPACING * camera.width)
        self._first_frame = True
        self._next_id = 0
        self._clear()

    # ------------------------------------------------------------------ public
    def track(self, image: np.ndarray, stamp_ns: int,
              depth: Optional[np.ndarray] = None) -> VOResult:
        """Estimate the pose of the next frame.

        :param image: uint8 [H, W] grey or [H, W, 3] RGB (float in [0, 1] accepted), of the
            camera given at construction
        :param stamp_ns: capture time (nanoseconds; only passed through)
        :param depth: optional float32 [H, W] metric depth registered to ``image`` (0 or NaN =
            none): the metric scale then comes from it
        :return: the pose (or None) and the tracking state; bad image content is reported as
            a state, never raised
        :raises ValueError: an image of another size than the camera
        """
        gray = self._gray(image)
        if depth is not None:
            depth = np.nan_to_num(np.asarray(depth, np.float64), nan=0.0)
            if depth.shape != gray.shape:
                raise ValueError(f'depth {depth.shape} does not match the image {gray.shape}')
        if self.state == 'tracking':
            result = self._track(gray, depth)
        else:
            result = self._initialize(gray, depth)
        self._prev_gray = gray
        self._frames += 1
        return result

    @property
    def keyframes(self) -> List[Keyframe]:
        """The keyframes kept (oldest first)."""
        return list(self._keyframes)

    @property
    def num_landmarks(self) -> int:
        """Landmarks in the map."""
        return len(self._landmarks)

    # ------------------------------------------------------------------ state
    def _clear(self) -> None:
        """Forget the map, the tracks and the motion (a new map starts at the anchor)."""
        self._tracks = _Tracks()
        self._landmarks = _Landmarks()
        self._keyframes: List[Keyframe] = []
        self._kf_serial = 0
        self._ref: Optional[dict] = None
        self._prev_gray: Optional[np.ndarray] = None
        self._T_cw: Optional[np.ndarray] = None          # the newest tracked frame
        self._T_cw_before: Optional[np.ndarray] = None   # the frame before it
        self._kf_inliers = 0
        self._since_kf = 0
        self._frames = 0
        self._init_frames = 0
        self._scale_history: List[float] = []
        self._relevel = False                            # the first map levels itself again
        # the ground's normal seen from the reference camera at the last levelling attempt
        self._level_previous: Optional[np.ndarray] = None

    def _lose(self, message: str, inliers: int = 0, error: float = float('nan')) -> VOResult:
        """Tracking failed: restart the map from the last tracked pose."""
        if self._T_cw is not None:
            self.T_world_anchor = invert(self._T_cw)
        LOG.debug('visual odometry lost: %s', message)
        source = self.scale_source
        self._clear()
        self.state = 'lost'
        self.scale_source = 'none'
        return VOResult(None, 'lost', inliers, error, source, message=message)

    # ------------------------------------------------------------------ images
    def _gray(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim == 3 and img.shape[2] == 3:
            if img.dtype != np.uint8:
                img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        elif img.ndim == 2 and img.dtype != np.uint8:
            img = np.clip(np.nan_to_num(img) * 255.0, 0, 255).astype(np.uint8)
        if img.ndim != 2 or img.shape[::-1] != self.size:
            raise ValueError(f'image {np.asarray(image).shape} does not match the camera '
                             f'{self.size[0]}x{self.size[1]}')
        return np.ascontiguousarray(img)

    def _detect(self, gray: np.ndarray, existing: np.ndarray, count: int) -> np.ndarray:
        """Up to ``count`` new corners [N, 2] away from ``existing`` [M, 2] pixels.

        The image is cut into a grid of cells, each topped up to its share of
        ``vo_max_features`` with its own strongest corners: weakly textured ground gets corners
        too, next to a strongly textured wall (the ground gives the scale).
        """
        if count <= 0:
            return np.zeros((0, 2), np.float32)
        h, w = gray.shape
        mask = np.full(gray.shape, 255, np.uint8)
        if len(existing):
            # Blank a square of side 2 * spacing around each existing corner (vectorised).
            cell = int(self._spacing)
            small = np.full((h // cell + 1, w // cell + 1), 255, np.uint8)
            ij = np.clip((existing[:, ::-1] // cell).astype(int), 0,
                         np.array(small.shape) - 1)
            small[ij[:, 0], ij[:, 1]] = 0
            small = cv2.erode(small, np.ones((3, 3), np.uint8))
            mask = cv2.resize(small, (small.shape[1] * cell, small.shape[0] * cell),
                              interpolation=cv2.INTER_NEAREST)[:h, :w]
        eig = cv2.cornerMinEigenVal(gray, CORNER_BLOCK)
        cols, rows = DETECTION_GRID
        share = int(np.ceil(self.cfg.vo_max_features / (cols * rows)))
        xs = np.linspace(0, w, cols + 1).astype(int)
        ys = np.linspace(0, h, rows + 1).astype(int)
        have = np.zeros((rows, cols), int)
        if len(existing):
            cx = np.clip(np.searchsorted(xs, existing[:, 0], 'right') - 1, 0, cols - 1)
            cy = np.clip(np.searchsorted(ys, existing[:, 1], 'right') - 1, 0, rows - 1)
            np.add.at(have, (cy, cx), 1)
        found = []
        for r in range(rows):          # a loop over a dozen cells, not pixels
            for c in range(cols):
                want = min(share - have[r, c], count)
                sl = (slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1]))
                if want <= 0 or eig[sl].max(initial=0.0) < MIN_CORNER_EIGEN:
                    continue
                pts = cv2.goodFeaturesToTrack(gray[sl], maxCorners=int(want),
                                              qualityLevel=CORNER_QUALITY,
                                              minDistance=self._spacing, mask=mask[sl],
                                              blockSize=CORNER_BLOCK)
                if pts is not None:
                    pts = pts.reshape(-1, 2)
                    found.append(pts + [xs[c], ys[r]])
        if not found:
            return np.zeros((0, 2), np.float32)
        pts = np.concatenate(found).astype(np.float32)
        ij = np.rint(pts[:, ::-1]).astype(int)
        pts = pts[eig[ij[:, 0], ij[:, 1]] >= MIN_CORNER_EIGEN]
        return pts[:count]

    def _flow(self, prev: np.ndarray, cur: np.ndarray, uv: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray]:
        """Track ``uv`` [N, 2] from ``prev`` to ``cur``; return (uv [N, 2], ok bool [N])."""
        if len(uv) == 0:
            return uv, np.zeros(0, bool)
        p0 = uv.reshape(-1, 1, 2).astype(np.float32)
        p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, winSize=LK_WINDOW,
                                             maxLevel=LK_LEVELS, criteria=LK_CRITERIA)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, winSize=LK_WINDOW,
                                                maxLevel=LK_LEVELS, criteria=LK_CRITERIA)
        p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
        w, h = self.size
        ok = ((st.ravel() == 1) & (st2.ravel() == 1)
              & (np.linalg.norm(back - uv, axis=1) < FB_MAX_PX)
              & (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1))
        return p1, ok

    def _depth_at(self, depth: Optional[np.ndarray], uv: np.ndarray) -> np.ndarray:
        """Measured depth [N] at pixels ``uv`` (nearest pixel; 0 = none)."""
        if depth is None or len(uv) == 0:
            return np.zeros(len(uv))
        ij = np.clip(np.rint(uv[:, ::-1]).astype(int), 0, np.array(depth.shape) - 1)
        d = depth[ij[:, 0], ij[:, 1]]
        return np.where(np.isfinite(d) & (d > 0), d, 0.0)

    # ------------------------------------------------------------------ initialization
    def _initialize(self, gray: np.ndarray, depth: Optional[np.ndarray]) -> VOResult:
        first = self._first_frame
        self._first_frame = False
        self.state = 'initializing'
        # The start pose is known for the first frame only (a level guess is not known: the
        # map turns it); later reference frames guess it.
        T_first = self.T_world_anchor.copy() if first and not self.level_guess else None
        need = self.cfg.vo_min_inliers
        if self._ref is not None and self._prev_gray is not None:
            uv, ok = self._flow(self._prev_gray, gray, self._tracks.uv)
            self._tracks = replace(self._tracks.select(ok), uv=uv[ok].astype(np.float32))
            self._ref['uv'] = self._ref['uv'][ok]
            self._init_frames += 1
        if (self._ref is None or len(self._tracks) < need
                or self._init_frames > MAX_INIT_FRAMES):
            self._new_reference(gray, depth)
            message = ('too few corners to start the map' if len(self._tracks) < need
                       else 'waiting for parallax')
            return VOResult(T_first, 'initializing', message=message)
        flow = float(np.median(np.linalg.norm(self._tracks.uv - self._ref['uv'], axis=1)))
        if flow < self.cfg.vo_min_parallax_px:
            return VOResult(T_first, 'initializing', message='waiting for parallax')
        started = self._bootstrap(gray, depth)
        if started is None:
            return VOResult(T_first, 'initializing', message='too little parallax or too '
                            'few consistent corners to start the map')
        return started

    def _new_reference(self, gray: np.ndarray, depth: Optional[np.ndarray]) -> None:
        uv = self._detect(gray, np.zeros((0, 2)), self.cfg.vo_max_features)
        ids = np.arange(self._next_id, self._next_id + len(uv), dtype=np.int64)
        self._next_id += len(uv)
        self._tracks = _Tracks().extend(ids, uv, -1)
        self._ref = {'uv': uv.astype(np.float64), 'depth': depth, 'gray': gray}
        self._init_frames = 0
        self._level_previous = None

    def _bootstrap(self, gray: np.ndarray, depth: Optional[np.ndarray]) -> Optional[VOResult]:
        """Start the map from the reference frame and this one (essential matrix)."""
        cfg = self.cfg
        p0 = self._ref['uv']
        p1 = self._tracks.uv.astype(np.float64)
        E, mask = cv2.findEssentialMat(p0, p1, self.K, method=cv2.RANSAC, prob=0.999,
                                       threshold=cfg.vo_reprojection_px / 2.0)
        if E is None or E.shape[0] < 3 or mask is None:
            return None
        _, R, t, mask = cv2.recoverPose(E[:3], p0, p1, self.K, mask=mask.copy())
        inl = mask.ravel() > 0
        if inl.sum() < cfg.vo_min_inliers or self._rotation_only(p0[inl], p1[inl]):
            return None
        T_ref = np.eye(4)
        T_cur = np.eye(4)
        T_cur[:3, :3], T_cur[:3, 3] = R, t.ravel()
        X, parallax = triangulate(self.K, T_ref, p0, T_cur, p1)
        uv0, z0 = project(self.K, T_ref, X)
        uv1, z1 = project(self.K, T_cur, X)
        thr = cfg.vo_reprojection_px
        good = (inl & (z0 > 0) & (z1 > 0) & (parallax > TRIANGULATION_PARALLAX_DEG / 2)
                & (np.linalg.norm(uv0 - p0, axis=1) < thr)
                & (np.linalg.norm(uv1 - p1, axis=1) < thr))
        if good.sum() < cfg.vo_min_inliers or np.median(parallax[good]) < INIT_PARALLAX_DEG:
            return None
        # The two-view map with a unit baseline, refined by the bundle adjustment; then its
        # scale from depth or the ground.
        saved = (replace(self._tracks, anchor=self._tracks.anchor.copy(),
                         anchor_uv=self._tracks.anchor_uv.copy()), self._ref, self._next_id)
        T_ref_world = invert(self.T_world_anchor)
        kf0 = Keyframe(0, T_ref_world, self._tracks.ids.copy(), p0.copy(),
                       self._depth_at(self._ref['depth'], p0), self._ref['gray'])
        self._keyframes = [kf0]
        self._kf_serial = 1
        self._tracks.anchor[:] = 0
        self._tracks.anchor_uv = p0.astype(np.float32)
        self._landmarks.add(self._tracks.ids[good], transform_points(self.T_world_anchor,
                                                                     X[good]), CONFIRM_FRAMES)
        self._T_cw_before = T_ref_world
        self._T_cw = T_cur @ T_ref_world
        self._ref = None
        self.state = 'tracking'
        self.scale_source = 'none'
        self._make_keyframe(gray, depth)
        if not self._start_scale():     # the ground is too far for this baseline: wait
            self._tracks, self._ref, self._next_id = saved
            self._landmarks, self._keyframes, self._kf_serial = _Landmarks(), [], 0
            self._T_cw = self._T_cw_before = None
            self.state = 'initializing'
            return None
        inliers, err = self._inlier_stats()
        LOG.debug('visual odometry started: %d landmarks, scale from %s', len(self._landmarks),
                  self.scale_source)
        return VOResult(invert(self._T_cw), 'tracking', inliers, err, self.scale_source,
                        keyframe=True)

    def _rotation_only(self, p0: np.ndarray, p1: np.ndarray) -> bool:
        """Tell whether the camera only turned between two views.

        It did when one homography ``K R K^-1``, R a rotation, explains the correspondences
        (an essential matrix then has a translation of noise).
        """
        H, mask = cv2.findHomography(p0, p1, cv2.RANSAC, self.cfg.vo_reprojection_px)
        if H is None or mask is None or mask.sum() < ROTATION_ONLY_SHARE * len(p0):
            return False
        M = np.linalg.inv(self.K) @ H @ self.K
        det = np.linalg.det(M)
        if det <= 0:
            return False
        M = M / np.cbrt(det)
        return bool(np.linalg.norm(M.T @ M - np.eye(3)) < ROTATION_ONLY_TOLERANCE)

    def _start_scale(self) -> bool:
        """Give the new map its scale: depth readings, else the ground plane, else none.

        The ground's parallax measures the scale
        only when the ground is at most ``MAX_GROUND_BASELINES`` baselines below (the map has
        a unit baseline here); a start with less baseline, or where neither the images nor the
        landmarks measure the ground yet, is refused (False) unless the map has waited
        ``MAX_WAIT_FOR_GROUND_FRAMES`` frames already (a map scaled to no units, median depth
        1, would never get the ground's scale later). A start guessed level is levelled first
        (:meth:`_level`) and waits likewise for a ground to level it on, found alike (within
        ``LEVEL_REPEAT_DEG``) by two attempts in a row, and for the ground to be at most
        ``LEVEL_MAX_GROUND_BASELINES`` away.
        """
        may_wait = self._init_frames <= MAX_WAIT_FOR_GROUND_FRAMES
        levelling = self._level(LEVEL_MAX_TILT_DEG) if self.level_guess else None
        if self.level_guess and levelling is None and may_wait:
            return False         # no ground below the camera yet: a later frame may see it
        if levelling is not None:
            # The ground's normal seen from the reference camera, against the last attempt's.
            normal = self._keyframes[0].T_cam_world[:3, :3] @ UP
            previous, self._level_previous = self._level_previous, normal
            if may_wait and (previous is None or np.degrees(np.arccos(np.clip(
                    normal @ previous, -1.0, 1.0))) > LEVEL_REPEAT_DEG):
                return False
        kf0 = self._keyframes[0]
        centre = camera_centre(kf0.T_cam_world)
        row, found = self._landmarks.lookup(kf0.ids)
        z = transform_points(kf0.T_cam_world, self._landmarks.xyz[row[found]])[:, 2]
        d = kf0.depth[found]
        usable = (d > 0) & (z > 0)
        if usable.sum() >= MIN_DEPTH_SAMPLES:
            self._transform_map(np.eye(3), float(np.median(d[usable] / z[usable])), centre)
            self.scale_source = 'depth'
            return self._started(levelling)
        height = float(centre[2])
        if height > MIN_CAMERA_HEIGHT_M:
            plane = fit_ground(self._landmarks.xyz - centre, UP, self._rng)
            below = self._ground_height(kf0, self._keyframes[-1], None)
            if below is not None and plane is not None and may_wait and not (
                    1.0 / START_AGREEMENT < below / plane.height < START_AGREEMENT):
                return False     # the images and the landmarks disagree: a later frame
            if below is None and plane is not None:
                below = plane.height
            if below is None and may_wait:
                return False     # no ground measured yet: a later frame may see it
            limit = LEVEL_MAX_GROUND_BASELINES if levelling is not None else MAX_GROUND_BASELINES
            if below is not None and below > limit and may_wait:
                return False
            if below is not None:
                self._transform_map(np.eye(3), height / below, centre)
                self.scale_source = 'ground'
                return self._started(levelling)
        self._transform_map(np.eye(3), 1.0 / float(np.median(z[z > 0])), centre)
        return self._started(levelling)

    def _level(self, max_tilt_deg: float) -> Optional[Levelling]:
        """Turn the map about its first camera so that the ground it sees is horizontal.

        The ground is the plane through the landmarks below the camera with the camera above
        it, its normal free to tilt up to ``max_tilt_deg`` from the map's up
        (:func:`~l3rocc_core.poses.ground_plane.fit_ground`: the best supported such plane,
        or a parallel one lower down with half its support, the floor under a table). The
        turn takes its normal to +z and keeps the camera's heading (the optical axis on the
        ground) at +x; the camera stays where it is.

        :return: the first keyframe's roll and pitch, or None (no ground found; the map is
            unchanged)
        """
        kf0 = self._keyframes[0]
        centre = camera_centre(kf0.T_cam_world)
        plane = fit_ground(self._landmarks.xyz - centre, UP, self._rng, max_tilt_deg)
        if plane is None:
            return None
        self._transform_map(_levelling_rotation(plane.normal, kf0.T_cam_world[2, :3]), 1.0,
                            centre)
        roll, pitch = roll_pitch_deg(kf0.T_cam_world[:3, :3].T)
        return Levelling(roll, pitch, int(plane.inliers.sum()))

    def _started(self, levelling: Optional[Levelling]) -> bool:
        """Accept the new map: its first keyframe is where the world starts; return True."""
        self.T_world_anchor = invert(self._keyframes[0].T_cam_world)
        if self.level_guess:
            self.level_guess = False
            self.start_levelling = levelling
            self._relevel = levelling is not None
            if levelling is None:
                LOG.warning('visual odometry: no ground below the camera in %d frames to level '
                            'the start on: it stays level (pitch and roll 0; give camera_pose)',
                            self._init_frames)
            else:
                LOG.info('visual odometry: start levelled on the ground it sees: pitch %.1f deg '
                         '(> 0 down), roll %.1f deg, %d landmarks on the ground',
                         levelling.pitch_deg, levelling.roll_deg, levelling.ground_landmarks)
        return True

    # ------------------------------------------------------------------ tracking
    def _track(self, gray: np.ndarray, depth: Optional[np.ndarray]) -> VOResult:
        cfg = self.cfg
        thr = cfg.vo_reprojection_px
        uv, ok = self._flow(self._prev_gray, gray, self._tracks.uv)
        self._tracks = replace(self._tracks.select(ok), uv=uv[ok].astype(np.float32))
        row, is_lm = self._landmarks.lookup(self._tracks.ids)
        if is_lm.sum() < cfg.vo_min_inliers:
            return self._lose(f'{int(is_lm.sum())} landmarks still tracked (vo_min_inliers '
                              f'{cfg.vo_min_inliers})', int(is_lm.sum()))
        lm_rows = row[is_lm]
        X = self._landmarks.xyz[lm_rows]
        x = self._tracks.uv[is_lm].astype(np.float64)
        # New landmarks wait for confirmation: one triangulated on an object moving along
        # the epipolar lines looks static in two views, and must not vote for the pose.
        confirmed = self._landmarks.seen[lm_rows] >= CONFIRM_FRAMES
        voters = confirmed if confirmed.sum() >= cfg.vo_min_inliers else np.ones_like(confirmed)
        T_pred = self._T_cw @ invert(self._T_cw_before) @ self._T_cw  # constant velocity
        T_cw = self._solve_pnp(X[voters], x[voters], T_pred)
        if T_cw is None:
            return self._lose('no pose agrees with the tracked landmarks (PnP failed)')
        uv_p, z = project(self.K, T_cw, X)
        err = np.where(z > 0, np.linalg.norm(uv_p - x, axis=1), np.inf)
        inl = err < thr
        self._landmarks.seen[lm_rows[inl]] += 1
        n_inl = int((inl & voters).sum())
        med_err = float(np.median(err[inl])) if n_inl else float('nan')
        if n_inl < cfg.vo_min_inliers:
            return self._lose(f'{n_inl} landmarks agree with the pose (vo_min_inliers '
                              f'{cfg.vo_min_inliers})', n_inl, med_err)
        rot = rotation_angle_deg(T_cw[:3, :3] @ self._T_cw[:3, :3].T)
        travel = float(np.linalg.norm(camera_centre(T_cw) - camera_centre(self._T_cw)))
        scene = float(np.median(z[inl & voters]))
        if rot > MAX_ROTATION_PER_FRAME_DEG or travel > MAX_TRAVEL_PER_FRAME_SHARE * scene:
            return self._lose(f'implausible jump: {rot:.1f} deg, {travel:.2f} (median depth '
                              f'{scene:.2f}) since the previous frame', n_inl, med_err)
        # Outliers leave the tracks: far ones (moving objects, slipped corners), and new
        # landmarks that disagree before they were confirmed.
        drop = np.zeros(len(self._tracks), bool)
        drop[np.flatnonzero(is_lm)[(err > 2 * thr) | (~confirmed & ~inl)]] = True
        self._tracks = self._tracks.select(~drop)
        self._T_cw_before, self._T_cw = self._T_cw, T_cw
        self._since_kf += 1
        keyframe = self._need_keyframe(n_inl)
        if keyframe:
            self._make_keyframe(gray, depth)
            n_inl, med_err = self._inlier_stats()
            if n_inl < cfg.vo_min_inliers:
                return self._lose(f'{n_inl} landmarks agree with the pose after the bundle '
                                  f'adjustment (vo_min_inliers {cfg.vo_min_inliers})', n_inl,
                                  med_err)
        return VOResult(invert(self._T_cw), 'tracking', n_inl, med_err, self.scale_source,
                        keyframe=keyframe)

    def _solve_pnp(self, X: np.ndarray, x: np.ndarray, T_guess: np.ndarray
                   ) -> Optional[np.ndarray]:
        """Pose T_cam_world from landmarks ``X`` [N, 3] seen at ``x`` [N, 2], or None."""
        thr = self.cfg.vo_reprojection_px
        rvec = so3_log(T_guess[:3, :3]).reshape(3, 1)
        tvec = T_guess[:3, 3].reshape(3, 1).copy()
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                X, x, self.K, None, rvec, tvec, useExtrinsicGuess=True, iterationsCount=100,
                reprojectionError=thr, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error:
            return None
        if not ok or inliers is None or len(inliers) < 6:
            return None
        idx = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[idx], x[idx], self.K, None, rvec, tvec)
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec.ravel()
        return T if np.all(np.isfinite(T)) else None

    def _need_keyframe(self, inliers: int) -> bool:
        if self._since_kf >= KEYFRAME_MAX_FRAMES or inliers < KEYFRAME_INLIER_SHARE * \
                self._kf_inliers:
            return True
        kf = self._keyframes[-1]
        _, a, b = np.intersect1d(self._tracks.ids, kf.ids, assume_unique=True,
                                 return_indices=True)
        if len(a) == 0:
            return True
        moved = np.median(np.linalg.norm(self._tracks.uv[a] - kf.uv[b], axis=1))
        return bool(moved > KEYFRAME_PARALLAX_FACTOR * self.cfg.vo_min_parallax_px)

    def _inlier_stats(self) -> Tuple[int, float]:
        """Inliers and median error of the tracked landmarks at the current pose."""
        row, is_lm = self._landmarks.lookup(self._tracks.ids)
        if not is_lm.any():
            return 0, float('nan')
        uv_p, z = project(self.K, self._T_cw, self._landmarks.xyz[row[is_lm]])
        err = np.linalg.norm(uv_p - self._tracks.uv[is_lm], axis=1)
        inl = ((z > 0) & (err < self.cfg.vo_reprojection_px)
               & (self._landmarks.seen[row[is_lm]] >= CONFIRM_FRAMES))
        return int(inl.sum()), float(np.median(err[inl])) if inl.any() else float('nan')

    # ------------------------------------------------------------------ keyframes
    def _make_keyframe(self, gray: np.ndarray, depth: Optional[np.ndarray]) -> None:
        """Triangulate, add corners, adjust the window, refit the ground, prune."""
        serial = self._kf_serial
        self._kf_serial += 1
        self._triangulate_new()
        new = self._detect(gray, self._tracks.uv, self.cfg.vo_max_features - len(self._tracks))
        ids = np.arange(self._next_id, self._next_id + len(new), dtype=np.int64)
        self._next_id += len(new)
        # Tracks whose anchor keyframe is gone start again from this one.
        kept = {kf.serial for kf in self._keyframes}
        stale = ~np.isin(self._tracks.anchor, list(kept))
        self._tracks.anchor[stale] = serial
        self._tracks.anchor_uv[stale] = self._tracks.uv[stale]
        self._tracks = self._tracks.extend(ids, new, serial)
        uv = self._tracks.uv.astype(np.float64)
        self._keyframes.append(Keyframe(serial, self._T_cw.copy(), self._tracks.ids.copy(), uv,
                                        self._depth_at(depth, uv), gray))
        limit = self.cfg.vo_window_keyframes + EXTRA_KEYFRAMES
        self._keyframes = self._keyframes[-limit:]
        self._adjust_window()
        if self._relevel and self._keyframes[0].serial == 0:
            levelling = self._level(RELEVEL_MAX_TILT_DEG)
            if levelling is not None:
                self.start_levelling = levelling
                self.T_world_anchor = invert(self._keyframes[0].T_cam_world)
                LOG.debug('visual odometry: start levelled again at keyframe %d: %s', serial,
                          levelling)
        if self.scale_source == 'ground':
            self._correct_scale()
        self._prune()
        self._kf_inliers = self._inlier_stats()[0]
        self._since_kf = 0

    def _triangulate_new(self) -> None:
        """Landmarks for tracks seen since an earlier keyframe with enough parallax."""
        tr = self._tracks
        _, is_lm = self._landmarks.lookup(tr.ids)
        poses = {kf.serial: kf.T_cam_world for kf in self._keyframes}
        cand = np.flatnonzero(~is_lm & np.isin(tr.anchor, list(poses)))
        if len(cand) == 0:
            return
        T_a = np.stack([poses[s] for s in tr.anchor[cand]])
        uv_a = tr.anchor_uv[cand].astype(np.float64)
        uv_b = tr.uv[cand].astype(np.float64)
        X, parallax = triangulate(self.K, T_a, uv_a, self._T_cw, uv_b)
        pa, za = project(self.K, T_a, X)
        pb, zb = project(self.K, self._T_cw, X)
        thr = self.cfg.vo_reprojection_px
        good = ((za > 0) & (zb > 0) & (parallax > TRIANGULATION_PARALLAX_DEG)
                & (np.linalg.norm(pa - uv_a, axis=1) < thr)
                & (np.linalg.norm(pb - uv_b, axis=1) < thr))
        if good.any():
            self._landmarks.add(tr.ids[cand[good]], X[good])

    def _adjust_window(self) -> None:
        """Local bundle adjustment of the last ``vo_window_keyframes`` keyframes."""
        cfg = self.cfg
        window = self._keyframes[-cfg.vo_window_keyframes:]
        if len(window) < 2 or cfg.vo_ba_iterations == 0:
            return
        frame = np.concatenate([np.full(len(kf.ids), k) for k, kf in enumerate(window)])
        ids = np.concatenate([kf.ids for kf in window])
        uv = np.concatenate([kf.uv for kf in window])
        dep = np.concatenate([kf.depth for kf in window])
        row, found = self._landmarks.lookup(ids)
        found &= self._landmarks.seen[row] >= CONFIRM_FRAMES   # new ones may sit on movers
        uniq, counts = np.unique(ids[found], return_counts=True)
        multi = np.isin(ids, uniq[counts >= 2]) & found
        if multi.sum() < 2 * cfg.vo_min_inliers:
            return
        frame, ids, uv, dep, row = frame[multi], ids[multi], uv[multi], dep[multi], row[multi]
        lm_rows, obs_point = np.unique(row, return_inverse=True)
        fixed = np.zeros(len(window), bool)
        fixed[0] = True
        if self.scale_source == 'none' and len(window) >= 3:
            fixed[1] = True    # nothing else holds the scale: two fixed keyframes do
        points = self._landmarks.xyz[lm_rows]
        T = np.stack([kf.T_cam_world for kf in window])
        d_obs = np.flatnonzero(dep > 0) if self.scale_source == 'depth' else np.zeros(0, int)
        pb = BAProblem(self.K, T, fixed, points, frame, obs_point, uv, d_obs, dep[d_obs],
                       DEPTH_SIGMA_A + DEPTH_SIGMA_B * dep[d_obs] ** 2)
        T_new, P_new, err = bundle_adjust(pb, cfg.vo_reprojection_px, cfg.vo_ba_iterations)
        if not fixed[1] and self.scale_source != 'depth':
            # One fixed keyframe leaves the scale free (a gauge freedom the solver wanders
            # along): keep the keyframes' distances to it as they were (the ground sets the
            # scale in _correct_scale; the depth prior holds it by itself).
            c0 = camera_centre(T[0])
            before = sum(np.linalg.norm(camera_centre(Tk) - c0) for Tk in T[1:])
            after = sum(np.linalg.norm(camera_centre(Tk) - c0) for Tk in T_new[1:])
            ratio = before / after if after > 1e-9 else 1.0
            if np.isfinite(ratio) and ratio > 0:
                P_new = c0 + ratio * (P_new - c0)
                T_new = np.stack([_similar_pose(Tk, np.eye(3), ratio, c0) for Tk in T_new])
        for kf, Tk in zip(window, T_new):
            kf.T_cam_world = Tk
        self._landmarks.xyz[lm_rows] = P_new
        self._T_cw = window[-1].T_cam_world.copy()
        # Observations that still disagree are forgotten; in the newest keyframe that means
        # the track itself goes (a moving object or a slipped corner).
        bad = err > 2 * cfg.vo_reprojection_px
        for k, kf in enumerate(window):
            gone = ids[bad & (frame == k)]
            if len(gone):
                keep = ~np.isin(kf.ids, gone)
                kf.ids, kf.uv, kf.depth = kf.ids[keep], kf.uv[keep], kf.depth[keep]
        newest_bad = ids[bad & (frame == len(window) - 1)]
        if len(newest_bad):
            self._tracks = self._tracks.select(~np.isin(self._tracks.ids, newest_bad))

    def _correct_scale(self) -> None:
        """Re-estimate the scale from the ground (z = 0) under the window's landmarks.

        The scale about the oldest window keyframe that puts the fitted ground plane at
        z = 0 is one measurement; the median of the last ``SCALE_FILTER`` measurements is
        applied (each kept relative to the current map), so a wrong plane now and then does
        not move the map.
        """
        window = self._keyframes[-self.cfg.vo_window_keyframes:]
        ref = camera_centre(window[0].T_cam_world)
        # The images of a recent keyframe pair give the ground's height (every ground pixel
        # counts); the landmarks below the camera are the fallback.
        a = window[0]
        centre = camera_centre(a.T_cam_world)
        baseline = np.linalg.norm(camera_centre(window[-1].T_cam_world) - centre)
        turned = rotation_angle_deg(window[-1].T_cam_world[:3, :3] @ a.T_cam_world[:3, :3].T)
        below = (self._ground_height(a, window[-1], centre[2])
                 if baseline >= PHOTO_MIN_BASELINE_SHARE * centre[2]
                 and turned <= PHOTO_MAX_TURN_DEG else None)
        if below is None:
            centre = camera_centre(self._T_cw)
            row, found = self._landmarks.lookup(
                np.unique(np.concatenate([kf.ids for kf in window])))
            plane = (fit_ground(self._landmarks.xyz[row[found]] - centre, UP, self._rng)
                     if found.sum() >= MIN_DEPTH_SAMPLES else None)
            if plane is None:
                return
            below = plane.height
        above = ref[2] - (centre[2] - below)     # the reference's height above the ground
        if ref[2] <= MIN_CAMERA_HEIGHT_M or above <= 0:
            return
        factor = ref[2] / above
        if not MIN_SCALE_STEP < factor < 1.0 / MIN_SCALE_STEP:
            return
        self._scale_history = (self._scale_history + [factor])[-SCALE_FILTER:]
        # The first measurements each beat the one before (a longer baseline from the exact
        # first keyframe, while it is in the window): applied as they come; then the median.
        apply = (factor if len(self._scale_history) < SCALE_FILTER_MIN
                 else float(np.median(self._scale_history)))
        self._transform_map(np.eye(3), apply, ref)
        self._scale_history = [f / apply for f in self._scale_history]

    def _ground_height(self, a: Keyframe, b: Keyframe, guess: Optional[float]
                       ) -> Optional[float]:
        """Keyframe ``a``'s height above the ground from the images of ``a`` and ``b``.

        :param guess: the expected height (the map's units): searched within a factor of
            ``PHOTO_SEARCH`` around it; None searches 2 to 300 baselines
        :return: the height in the map's units, or None
        """
        T_b_a = b.T_cam_world @ invert(a.T_cam_world)
        baseline = float(np.linalg.norm(T_b_a[:3, 3]))
        if baseline < 1e-9 or (guess is not None and guess <= 0):
            return None
        heights = (baseline * np.geomspace(2.0, 300.0, 48) if guess is None else
                   guess * np.geomspace(1.0 / PHOTO_SEARCH, PHOTO_SEARCH, 24))
        ga, gb, K = a.gray, b.gray, self.K
        if ga.shape[1] >= PHOTO_HALF_WIDTH:
            # At half resolution: a quarter of the cost, the votes of a whole floor remain.
            ga, gb = cv2.pyrDown(ga), cv2.pyrDown(gb)
            K = np.diag([0.5, 0.5, 1.0]) @ K
            K[:2, 2] -= 0.25         # pixel centres: x_half = (x + 0.5) / 2 - 0.5
        return photometric_ground_height(ga, gb, K, T_b_a[:3, :3], T_b_a[:3, 3],
                                         a.T_cam_world[:3, :3] @ UP, heights)

    def _transform_map(self, R: np.ndarray, factor: float, centre: np.ndarray) -> None:
        """Turn and scale the map about ``centre``: ``p -> centre + factor R (p - centre)``."""
        self._landmarks.xyz = centre + factor * (self._landmarks.xyz - centre) @ R.T
        for kf in self._keyframes:
            kf.T_cam_world = _similar_pose(kf.T_cam_world, R, factor, centre)
        self._T_cw = _similar_pose(self._T_cw, R, factor, centre)
        self._T_cw_before = _similar_pose(self._T_cw_before, R, factor, centre)

    def _prune(self) -> None:
        """Drop landmarks neither tracked nor observed by a kept keyframe."""
        seen = np.concatenate([self._tracks.ids] + [kf.ids for kf in self._keyframes])
        self._landmarks.keep(np.isin(self._landmarks.ids, seen))


def _levelling_rotation(normal: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] taking ``normal`` [3] to +z and ``forward`` [3], on that plane, to +x.

    ``forward`` must not be parallel to ``normal`` (a camera's optical axis is at least 30
    degrees off the ground's normal within ``LEVEL_MAX_TILT_DEG``).
    """
    z = normal / np.linalg.norm(normal)
    x = forward - (forward @ z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _similar_pose(T_cam_world: np.ndarray, R: np.ndarray, factor: float,
                  centre: np.ndarray) -> np.ndarray:
    """Return the pose after the world moved by ``p -> centre + factor R (p - centre)``."""
    C = centre + factor * R @ (camera_centre(T_cam_world) - centre)
    out = np.eye(4)
    out[:3, :3] = T_cam_world[:3, :3] @ R.T
    out[:3, 3] = -out[:3, :3] @ C
    return out
