"""One dataclass per pipeline stage: the single source of every parameter.

Each field carries its description and its admissible range or choices in ``field(metadata=...)``.
The ROS node declares one parameter per field from this table (``l3rocc_ros.params``) and
``l3rocc replay --set name=value`` edits the same table, so there is no second list of names to
drift. Parameter names are flat and unique across stages (they are the contract's names).
"""

from dataclasses import dataclass, field, fields, replace
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml


def param(default: Any, description: str, lo: Optional[float] = None,
          hi: Optional[float] = None, choices: Optional[Sequence[str]] = None,
          read_only: bool = False) -> Any:
    """Declare a configuration field with its description and admissible values.

    :param default: default value (lists are copied per instance)
    :param description: one line, units included
    :param lo: inclusive lower bound for numbers (each element for lists)
    :param hi: inclusive upper bound for numbers (each element for lists)
    :param choices: admissible strings
    :param read_only: the node cannot change it after start-up
    :return: a dataclass field
    """
    meta = {'description': description, 'lo': lo, 'hi': hi,
            'choices': tuple(choices) if choices else None, 'read_only': read_only}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class CameraConfig:
    """Input images and their camera model."""

    working_width: int = param(
        320, 'width in pixels that images are resized to before depth estimation '
        '(height keeps the aspect ratio)', 64, 1920)
    undistort: bool = param(True, 'remove lens distortion (plumb_bob, rational_polynomial)')


@dataclass
class WindowConfig:
    """Sliding window of recent frames and the keyframe rule for multi-view depth."""

    window_size: int = param(16, 'number of time slices (frames) in the sliding window', 3, 64,
                             read_only=True)
    keyframe_min_translation_m: float = param(
        0.02, 'a frame becomes a depth source once it moved this far from the previous keyframe '
        '(metres)', 0.0, 5.0)
    keyframe_min_rotation_deg: float = param(
        3.0, 'or rotated this much from the previous keyframe (degrees)', 0.0, 180.0)
    num_source_frames: int = param(
        4, 'window frames matched against each new frame by the plane sweep', 1, 15)
    max_keyframes: int = param(8, 'keyframes kept as depth sources (bounded memory)', 1, 64)


@dataclass
class DepthConfig:
    """The depth stage: where each frame's depth comes from, and the plane sweep's parameters."""

    depth_source: str = param(
        'network', "where each frame's metric depth and confidence come from: network = the "
        'bundled learned depth network (image, the plane sweep where it matched, the ground plane '
        'seen from the camera pose: depth for moving and fixed cameras, moving parts too); auto = '
        'plane_sweep while the camera moves, network once it has held its pose '
        '(foreground_still_m/deg) for foreground_min_frames frames (pose_source static: from '
        'the first frame); plane_sweep = multi-view matching against window frames (needs '
        'camera motion); topic = a '
        'registered depth image on the input depth (16UC1 mm or 32FC1 m, paired with the image '
        'by stamp); model = the ONNX or TorchScript file depth_model',
        choices=('auto', 'network', 'plane_sweep', 'topic', 'model'), read_only=True)
    depth_model: str = param(
        '', 'depth_source model: path of an ONNX (.onnx) or TorchScript (.pt, .ts) depth model',
        read_only=True)
    depth_model_output: str = param(
        'metric', "what depth_model's output means: metric = z-depth in metres; relative = "
        'z-depth up to an unknown scale; inverse_relative = disparity-like (MiDaS): inverse depth '
        'up to an unknown scale and shift. Non-metric outputs are scaled every frame to the '
        'ground plane z = 0 of world_frame seen from the camera pose (the camera must see '
        'ground within max_depth)',
        choices=('metric', 'relative', 'inverse_relative'), read_only=True)
    depth_edge_ratio: float = param(
        0.1, 'depth_source topic and model: a depth pixel at least this share of its depth '
        'behind the nearest and in front of the farthest of its 3x3 neighbours lies between '
        'two surfaces (a flying pixel at an object edge) and is invalid; confidence falls from '
        '1 at half that gap (0 = off)', 0.0, 10.0)
    min_depth: float = param(0.3, 'nearest depth hypothesis (metres)', 0.05, 100.0)
    max_depth: float = param(4.0, 'farthest depth used for depth and fusion (metres)', 0.1, 200.0)
    num_depth_planes: int = param(48, 'plane-sweep hypotheses, uniform in inverse depth', 8, 256)
    match_window_px: int = param(7, 'side of the square matching window (pixels, odd)', 3, 15)
    min_confidence: float = param(
        0.02, 'depth pixels below this confidence are invalid (0..1)', 0.0, 1.0)
    network_min_confidence: float = param(
        0.5, "the depth network's pixels are valid where its confidence (trained as the "
        'probability that the depth is within 10 %) reaches this: below it the network is more '
        'likely wrong than right, and a depth nobody vouches for would make voxels occupied in '
        'free space (depth_source network, and auto while the camera is still)', 0.0, 1.0)
    network_sweep_min_confidence: float = param(
        0.0, "depth_source network: the plane sweep's match at a pixel is kept only where the "
        "network's confidence there reaches this. The network sees the sweep's depth among its "
        'inputs, so its low confidence where the sweep matched marks a match it does not '
        'believe: a moving object, repeated texture, a reflection (0 = every match is kept)',
        0.0, 1.0)
    ground_snap_height_m: float = param(
        0.1, 'an estimated depth sample (every source but topic) whose point lies at most '
        'this far above or below the ground z = 0 of world_frame is put on the ground, just below '
        'z = 0: depth noise on a floor seen at a grazing angle then does not fuse as occupied '
        'voxels above it. What stands lower than this on the floor is taken for floor. Needs '
        "world_frame's z = 0 to be the floor (0 = off)", 0.0, 2.0)
    min_texture: float = param(
        0.002, 'image intensity std (0..1) under which a pixel is untextured and invalid', 0.0,
        1.0)
    depth_downsample: int = param(
        2, 'the plane sweep runs at the working resolution divided by this and returns depth at '
        'that resolution (1 = full working resolution)', 1, 8)
    blur_reject_ratio: float = param(
        0.6, 'a reference image whose sharpness (mean squared Laplacian) is below this share of '
        'the median of the last 16 references gets no depth (motion blur; 0 = off)', 0.0, 1.0)
    depth_consistency_views: int = param(
        0, 'geometric consistency between the depth maps of the window: a depth sample is '
        'confirmed when it agrees with at least this many of the last '
        'depth_consistency_frames depth maps (its point, projected into each, lies within '
        'depth_consistency_rel_error of the depth there and reprojects back within '
        'depth_consistency_reproj_px); unconfirmed samples get their confidence multiplied by '
        'depth_consistency_penalty. 0 = off (the default: on the measured sequences every '
        'setting that raises precision also delays new surfaces and lowers the IoU of the '
        'bundled TUM clip; 1 raises plane-sweep precision by 1-2 points, see '
        'docs/depth_outliers.md)', 0, 15)
    depth_consistency_frames: int = param(
        4, 'depth maps kept as references of the consistency check (the newest ones)', 1, 15)
    depth_consistency_baseline_m: float = param(
        0.0, 'a depth map becomes a reference of the consistency check only when its camera is '
        'at least this far from the newest reference (metres): maps from nearly the same view '
        'repeat the same matching errors and confirm them (0 = every map)', 0.0, 10.0)
    depth_consistency_rel_error: float = param(
        0.2, 'consistency check: largest |z - d| / d, z the depth of a sample in a reference '
        'view, d the depth of that view at the projected pixel', 0.001, 1.0)
    depth_consistency_reproj_px: float = param(
        1.5, 'consistency check: largest distance (pixels of the depth map) between a pixel and '
        'the surface point the reference view sees at its projection, projected back', 0.1,
        50.0)
    depth_consistency_penalty: float = param(
        0.1, 'confidence factor of unconfirmed depth samples; those that fall below '
        'min_confidence become invalid (0 = every unconfirmed sample is invalid)', 0.0, 1.0)
    foreground_depth: bool = param(
        True, 'while the camera stays put (a fixed mount: pose_source static, or a TF pose that '
        'does not move), pixels that differ from the median colour of the last frames at that '
        'pose are moving objects; each blob becomes an upright surface standing where its '
        'lowest pixels meet the ground plane z = 0 of world_frame, over the depth source '
        'there (not for depth_source topic, whose depth is measured)', read_only=True)
    foreground_still_m: float = param(
        0.01, 'the camera counts as still while it stays within this distance (metres) of the '
        'pose the background started at; beyond it the background starts again and '
        'depth_source auto goes back to the plane sweep (raise it for a TF pose that jitters)',
        0.0, 10.0)
    foreground_still_deg: float = param(
        0.5, 'and within this rotation (degrees) of it', 0.0, 180.0)
    foreground_threshold: float = param(
        0.1, 'mean absolute RGB difference (0..1) from the background above which a pixel '
        'shows a moving object (pixels that flicker more than this in the background frames '
        'need more)', 0.01, 1.0)
    foreground_min_frames: int = param(
        4, 'frames at the same pose before the background is used (the first frames of a '
        'fixed camera give no foreground) and before depth_source auto hands the frames to the '
        'network', 2, 64)
    foreground_history: int = param(
        16, 'frames whose per-pixel median colour is the background (pixels that showed a '
        'moving object are left out of it)', 2, 64, read_only=True)
    foreground_absorb_frames: int = param(
        300, 'a pixel that shows a moving object for more than this many frames in a row '
        'becomes background (a cart parked for good, or what a departed object uncovered); '
        'until then a person who stops stays an object', 1, 100000)
    foreground_min_area: float = param(
        0.002, 'moving blobs smaller than this share of the depth map are noise', 0.0, 1.0)
    depth_consistency_scope: str = param(
        'multi_view', 'which depth sources the consistency check applies to: multi_view = only '
        'where every sample comes from matching window frames (plane_sweep), which assumes a '
        'static scene anyway; all = every source, including single-view ones (network, topic, '
        'model), whose moving objects are then unconfirmed and fade (a moving object is never '
        'consistent across time)', choices=('multi_view', 'all'))


@dataclass
class GridConfig:
    """The voxel grid: size, extent and anchor."""

    voxel_size: float = param(0.05, 'voxel edge length (metres)', 0.005, 2.0, read_only=True)
    grid_anchor: str = param('world', 'grid fixed in world_frame, or following the camera '
                             '(translation only, snapped to whole voxels)',
                             choices=('world', 'camera'), read_only=True)
    grid_min: List[float] = param(
        [-2.0, -2.0, -0.5], 'min corner [x, y, z] (metres, world_frame or camera-anchored frame)',
        -1000.0, 1000.0, read_only=True)
    grid_max: List[float] = param(
        [2.0, 2.0, 1.5], 'max corner [x, y, z] (metres)', -1000.0, 1000.0, read_only=True)
    world_frame: str = param('odom', 'fixed frame of poses and outputs', read_only=True)
    max_grid_voxels: int = param(
        8_000_000, 'refuse grids with more voxels than this (memory guard)', 1, 500_000_000,
        read_only=True)


@dataclass
class FusionConfig:
    """Evidence fusion: log-odds per voxel with clamping, per time slice."""

    logodds_hit: float = param(0.85, 'log-odds added where a depth sample ends', 0.0, 10.0)
    logodds_miss: float = param(-0.4, 'log-odds added where a ray passes through', -10.0, 0.0)
    logodds_min: float = param(-2.0, 'lower clamp, so that freed voxels re-occupy quickly',
                               -20.0, 0.0)
    logodds_max: float = param(3.5, 'upper clamp, so that moved-away parts clear quickly',
                               0.0, 20.0)
    evidence_max_rays: float = param(
        4.0, "rays of one frame that count in a voxel's update: hit voxels add logodds_hit * "
        'min(hits, this), voxels only passed through add logodds_miss * min(rays, this)',
        1.0, 1000.0)
    hit_confidence_floor: float = param(
        0.0, 'depth samples with at most this confidence add no occupancy evidence. Each '
        'sample carries the weight w = clamp((confidence - this) / (hit_confidence_full - '
        "this), 0, 1); a hit voxel's share s is the mean w of its samples, and it gets s * "
        'logodds_hit * min(hits, evidence_max_rays) + (1 - s) * logodds_miss * min(free + '
        'hits, evidence_max_rays): each sample counts as s of a hit and 1 - s of a ray '
        'passing through, so a voxel only weak samples hit is carved. Every valid sample still '
        'carves the space in front of it', 0.0, 1.0)
    hit_confidence_full: float = param(
        0.0, 'depth samples with at least this confidence add the full logodds_hit (linear '
        'from hit_confidence_floor); 0 = off (the default): every valid sample adds the full '
        'logodds_hit whatever its confidence. Plane-sweep confidence separates outliers only '
        'weakly: 0.3 raises precision by 3-8 points and costs 1-15 points of recall (see '
        'docs/depth_outliers.md)', 0.0, 1.0)
    free_margin_voxels: float = param(
        1.0, 'the last voxels (in voxel lengths) of every ray before its depth endpoint are not '
        'counted free, so surfaces seen at grazing angles do not carve themselves', 0.0, 10.0)
    ray_stride_px: int = param(
        0, 'free space counts the rays of every n-th depth pixel in x and y (raycast: rays '
        'marched from those pixels; projective: a voxel counts the strided pixels it covers); '
        'hits use every pixel; 0 = automatic (rays about one voxel apart at max_depth / 2)',
        0, 32)
    clear_no_return: bool = param(
        False, 'depth pixels without a return clear space up to max_depth')
    fusion_mode: str = param(
        'projective', 'how free space and the observed mask are computed: projective = every '
        'voxel of the camera frustum is projected into the depth map and compared with the '
        'depth there (fast: the cost grows with the grid, not the image); raycast = rays are '
        'marched from every ray_stride_px-th pixel (the exact reference, slower)',
        choices=('projective', 'raycast'))


@dataclass
class RefinerConfig:
    """Turning evidence into occupancy probabilities."""

    refiner: str = param('network', 'the temporal-attention network, or none: geometry only '
                         '(the fused log-odds; faster on a CPU, for comparison)',
                         choices=('network', 'none'))
    checkpoint: str = param('', 'refiner checkpoint (.pt); empty = the bundled one',
                            read_only=True)
    network_align_ground: bool = param(
        True, 'present the ground (z = 0 of world_frame) to the network in the z-layer phase it '
        'does best in: its stride-2 encoder pairs z layers, and measured with the shipped '
        'checkpoint it is far better with the layer just below z = 0 at an odd index (as on '
        'its training grids) than at an even one; a grid with that layer at an even index is '
        'given to the network with one unobserved layer added below it (the output grid is '
        'unchanged). Off: the grid as it is (exact depth, an independent sequence: IoU 0.19 '
        'in the other phase, 0.37 aligned)', read_only=True)
    network_support_voxels: int = param(
        2, 'the network may mark voxels occupied only within this many voxels of space observed '
        'in the window (-1 = anywhere): it completes what the camera saw, it does not invent '
        'occupancy where no ray came near', -1, 64)
    network_keep_evidence: str = param(
        'auto', "where a slice's fused log-odds hold strong evidence (>= 2 * logodds_hit, e.g. "
        'two full-confidence depth samples ended in the voxel; <= 2 * logodds_miss, e.g. two '
        'rays passed through it; within logodds_min/max), the network may not contradict it: '
        "it may raise a hit voxel's p(occupied) but not below geometry's, and lower a free "
        "voxel's but not above it. on / off; auto: on for measured depth (depth_source topic, "
        'or push_depth(..., measured=True)), off for estimated depth, whose strong evidence '
        'holds the outliers the network learned to remove (measured with exact depth: moving '
        'parts seen 0.29-0.43 -> 0.48-0.60)',
        choices=('auto', 'on', 'off'))
    network_update: str = param(
        'auto', 'window: every frame the network re-estimates every slice of the window (older '
        'slices improve with newer evidence; cost grows with window_size); newest: only the '
        'newest slice is estimated and each slice keeps the estimate it got when it was newest '
        '(about 1/window_size of the cost); auto: window on CUDA, newest on the CPU',
        choices=('auto', 'window', 'newest'), read_only=True)
    network_revisit_age: int = param(
        5, 'in newest mode, also re-estimate the slice this many frames old (1 = the newest) '
        'every frame, with the newer evidence the window has gathered since: older slices get '
        'a second, better-informed estimate for 10-20 % more refiner time (0 = off)', 0, 64)
    network_compile: bool = param(
        False, 'window mode only: run full windows through torch.compile, compiled when the '
        'pipeline starts (seconds per grid; a C++ compiler on the CPU, Triton on CUDA; a failed '
        'compile runs eagerly with a warning). No reliable gain on a 2-core CPU (0.93x on the '
        'TUM grid, 0.98-1.16x on 442 k voxels); on a GPU measure it with l3rocc bench --device '
        'cuda', read_only=True)
    device: str = param('auto', 'torch device for depth, fusion and refiner',
                        choices=('auto', 'cpu', 'cuda'), read_only=True)
    refiner_fallback: bool = param(
        False, 'when the network checkpoint cannot be used (missing, corrupt, unsafe or '
        'incompatible), run geometry only and report it in /diagnostics instead of refusing to '
        'start', read_only=True)


@dataclass
class OutputConfig:
    """What is published and how."""

    occupancy_threshold: float = param(0.5, 'voxels with p >= this are occupied', 0.0, 1.0)
    occupancy_hysteresis: float = param(
        0.15, 'a voxel that was occupied in the previous slice stays occupied while p >= '
        'occupancy_threshold - this; a free one becomes occupied only once p >= '
        'occupancy_threshold + this (voxels without an estimate in the previous slice: the plain '
        'threshold). The '
        'published p of a held voxel is clamped to the threshold, so p >= occupancy_threshold '
        'remains the state; fewer voxels flicker between frames (0 = off)', 0.0, 0.5)
    publish_markers: bool = param(True, 'publish the CUBE_LIST MarkerArray')
    publish_history: bool = param(False, 'also publish older slices as markers (ns history)')
    log_period_s: float = param(
        3.0, 'a repeated problem of one kind is logged at most once per this many seconds; the '
        'next line counts the suppressed repeats (0 = log every occurrence)', 0.0, 3600.0)


@dataclass
class InputConfig:
    """Where frames and poses come from (used by the node and by replay)."""

    pose_source: str = param('tf', 'camera poses from TF, odometry, images alone, or a static '
                             'camera', choices=('tf', 'odometry', 'visual_odometry', 'static'),
                             read_only=True)
    image_transport: str = param('raw', 'subscribe to image or image/compressed',
                                 choices=('raw', 'compressed'), read_only=True)
    input_qos: str = param('sensor_data', 'QoS of the camera subscriptions',
                           choices=('sensor_data', 'reliable'), read_only=True)
    tf_timeout_s: float = param(0.2, 'how long a frame waits for its TF before it is dropped '
                                '(seconds)', 0.0, 10.0)
    queue_size: int = param(1, 'frames waiting for the worker (latest wins; 1 = lowest latency '
                            'when the pipeline is slower than the camera)', 1, 100,
                            read_only=True)
    camera_pose: List[float] = param(
        [], 'pose_source static: the camera pose [x, y, z, roll, pitch, yaw] in world_frame '
        '(metres, radians) as a camera_link (REP 103: x forward, y left, z up; pitch > 0 looks '
        'down); the image optical frame follows by the standard camera_link -> optical '
        'rotation. Empty = TF world_frame -> image frame at the first image',
        -1000.0, 1000.0, read_only=True)
    max_future_stamp_s: float = param(
        5.0, 'images stamped more than this ahead of the node clock are dropped (seconds; 0 = '
        'no check)', 0.0, 1e6)
    camera_height_m: float = param(
        1.5, 'pose_source visual_odometry without TF at the first image and without '
        'camera_pose: the first pose is this far above the ground (z = 0 of world_frame), its '
        'pitch and roll measured on the ground the first map sees (metres); it also sets the '
        'metric scale from the ground plane', 0.0, 100.0,
        read_only=True)


@dataclass
class VisualOdometryConfig:
    """pose_source visual_odometry: camera poses from the images alone."""

    vo_max_features: int = param(
        250, 'corners tracked from frame to frame (at the working resolution)', 30, 2000,
        read_only=True)
    vo_min_parallax_px: float = param(
        6.0, 'median feature motion since the first frame needed to start the map (pixels at '
        'the working resolution)', 1.0, 100.0, read_only=True)
    vo_min_inliers: int = param(
        20, 'fewer landmarks agreeing with the pose (PnP inliers) than this = tracking lost; '
        'the map restarts', 6, 1000, read_only=True)
    vo_reprojection_px: float = param(
        2.0, 'a landmark farther than this from its tracked corner is an outlier (moving '
        'object, bad track; pixels at the working resolution)', 0.3, 20.0, read_only=True)
    vo_window_keyframes: int = param(
        6, 'keyframes optimised together by the local bundle adjustment', 2, 30,
        read_only=True)
    vo_ba_iterations: int = param(
        4, 'bound on the local bundle adjustment: Gauss-Newton iterations per keyframe (its '
        'time grows linearly with this; 0 = no bundle adjustment)', 0, 50, read_only=True)
    vo_publish_tf: bool = param(
        True, 'the node publishes the estimate on TF (world_frame -> the image frame)',
        read_only=True)


STAGES: Tuple[Tuple[str, type], ...] = (
    ('camera', CameraConfig), ('window', WindowConfig), ('depth', DepthConfig),
    ('grid', GridConfig), ('fusion', FusionConfig), ('refiner', RefinerConfig),
    ('output', OutputConfig), ('input', InputConfig), ('vo', VisualOdometryConfig),
)


@dataclass(frozen=True)
class ParamSpec:
    """One flat parameter: where it lives and what it admits."""

    name: str
    stage: str
    type: type
    default: Any
    description: str
    lo: Optional[float]
    hi: Optional[float]
    choices: Optional[Tuple[str, ...]]
    read_only: bool


@dataclass
class PipelineConfig:
    """All stages' configuration; flat parameter names address fields across stages."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    input: InputConfig = field(default_factory=InputConfig)
    vo: VisualOdometryConfig = field(default_factory=VisualOdometryConfig)

    @staticmethod
    def specs() -> Iterator[ParamSpec]:
        """Yield every flat parameter with its stage, type, default and admissible values."""
        for stage, cls in STAGES:
            defaults = cls()
            for f in fields(cls):
                m = f.metadata
                yield ParamSpec(f.name, stage, _field_type(getattr(defaults, f.name)),
                                getattr(defaults, f.name), m['description'], m['lo'], m['hi'],
                                m['choices'], m['read_only'])

    def get(self, name: str) -> Any:
        """Return the value of flat parameter ``name``."""
        return getattr(getattr(self, _spec(name).stage), name)

    def as_flat(self) -> Dict[str, Any]:
        """Return ``{name: value}`` for every parameter."""
        return {s.name: self.get(s.name) for s in self.specs()}

    def with_values(self, values: Dict[str, Any]) -> 'PipelineConfig':
        """Return a validated copy with ``values`` applied; ``self`` is left unchanged.

        :param values: flat parameter names to new values (YAML-typed)
        :raises ValueError: unknown name, wrong type, out of range, or an inconsistent whole;
            nothing is applied then
        """
        staged: Dict[str, Dict[str, Any]] = {}
        for name, value in values.items():
            spec = _spec(name)
            staged.setdefault(spec.stage, {})[name] = check_value(spec, value)
        new = replace(self, **{stage: replace(getattr(self, stage), **kv)
                               for stage, kv in staged.items()})
        new.validate()
        return new

    def validate(self) -> None:
        """Check cross-field consistency.

        :raises ValueError: with every reason found
        """
        reasons = []
        for spec in self.specs():
            try:
                check_value(spec, self.get(spec.name))
            except ValueError as exc:
                reasons.append(str(exc))
        g = self.grid
        if len(g.grid_min) != 3 or len(g.grid_max) != 3:
            reasons.append('grid_min and grid_max need 3 values each')
        elif any(lo >= hi for lo, hi in zip(g.grid_min, g.grid_max)):
            reasons.append(f'grid_min {g.grid_min} must be < grid_max {g.grid_max} on every axis')
        else:
            dims = [max(1, math.ceil((hi - lo) / g.voxel_size - 1e-9))
                    for lo, hi in zip(g.grid_min, g.grid_max)]
            n = dims[0] * dims[1] * dims[2]
            if n > g.max_grid_voxels:
                mib = n * self.window.window_size * 6 / 2 ** 20
                reasons.append(
                    f'grid of {dims[0]}x{dims[1]}x{dims[2]} = {n} voxels exceeds max_grid_voxels '
                    f'{g.max_grid_voxels} (~{mib:.0f} MiB for the window); enlarge voxel_size or '
                    'shrink grid_min/grid_max')
        if self.depth.min_depth >= self.depth.max_depth:
            reasons.append(f'min_depth {self.depth.min_depth} must be < max_depth '
                           f'{self.depth.max_depth}')
        if self.depth.match_window_px % 2 == 0:
            reasons.append(f'match_window_px {self.depth.match_window_px} must be odd')
        if len(self.input.camera_pose) not in (0, 6):
            reasons.append(f'camera_pose needs 6 values [x, y, z, roll, pitch, yaw] or none, '
                           f'got {len(self.input.camera_pose)}')
        if self.depth.depth_source == 'model' and not self.depth.depth_model:
            reasons.append('depth_source model needs depth_model (path of an ONNX or '
                           'TorchScript file)')
        if self.depth.foreground_min_frames > self.depth.foreground_history:
            reasons.append(f'foreground_min_frames {self.depth.foreground_min_frames} must be '
                           f'<= foreground_history {self.depth.foreground_history}')
        if self.fusion.logodds_min >= self.fusion.logodds_max:
            reasons.append('logodds_min must be < logodds_max')
        f = self.fusion
        if f.hit_confidence_full > 0 and f.hit_confidence_floor >= f.hit_confidence_full:
            reasons.append(f'hit_confidence_floor {f.hit_confidence_floor} must be < '
                           f'hit_confidence_full {f.hit_confidence_full} (or '
                           'hit_confidence_full 0: off)')
        if reasons:
            raise ValueError('; '.join(reasons))

    @classmethod
    def from_yaml(cls, path: str, node_name: str = 'l3rocc') -> 'PipelineConfig':
        """Load a ROS 2 parameter file (``/**: ros__parameters:`` or ``<node>: ...``).

        Keys that are not pipeline parameters (``use_sim_time`` and the like) are ignored.

        :param path: YAML file
        :param node_name: the node section to read besides ``/**``
        """
        with open(path, 'r', encoding='utf-8') as f:
            doc = yaml.safe_load(f) or {}
        values: Dict[str, Any] = {}
        for key in ('/**', node_name, '/' + node_name):
            section = doc.get(key) if isinstance(doc, dict) else None
            if isinstance(section, dict):
                values.update(section.get('ros__parameters', {}) or {})
        known = {s.name for s in cls.specs()}
        return cls().with_values({k: v for k, v in values.items() if k in known})

    def to_yaml(self) -> str:
        """Return this configuration as a ROS 2 parameter file's text."""
        return yaml.safe_dump({'/**': {'ros__parameters': self.as_flat()}}, sort_keys=False)


def _field_type(value: Any) -> type:
    return list if isinstance(value, (list, tuple)) else type(value)


_SPECS: Dict[str, ParamSpec] = {}


def _spec(name: str) -> ParamSpec:
    if not _SPECS:
        _SPECS.update({s.name: s for s in PipelineConfig.specs()})
    if name not in _SPECS:
        raise ValueError(f'unknown parameter {name!r}')
    return _SPECS[name]


def param_spec(name: str) -> ParamSpec:
    """Return the specification of flat parameter ``name``.

    :raises ValueError: when there is no such parameter
    """
    return _spec(name)


def check_value(spec: ParamSpec, value: Any) -> Any:
    """Coerce ``value`` to the parameter's type and check its range or choices.

    :return: the coerced value
    :raises ValueError: with the reason
    """
    name = spec.name
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f'{name} must be true or false, got {value!r}')
        return value
    if spec.type is list:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f'{name} must be a list of numbers, got {value!r}')
        out = [float(v) for v in value]
        for v in out:
            _check_number(spec, v)
        return out
    if spec.type is str:
        if not isinstance(value, str):
            raise ValueError(f'{name} must be a string, got {value!r}')
        if spec.choices and value not in spec.choices:
            raise ValueError(f'{name} must be one of {list(spec.choices)}, got {value!r}')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number, got {value!r}')
    if spec.type is int:
        if float(value) != int(value):
            raise ValueError(f'{name} must be an integer, got {value!r}')
        value = int(value)
    else:
        value = float(value)
    _check_number(spec, value)
    return value


def _check_number(spec: ParamSpec, v: float) -> None:
    if not math.isfinite(v):
        raise ValueError(f'{spec.name} must be finite, got {v!r}')
    if spec.lo is not None and v < spec.lo:
        raise ValueError(f'{spec.name} = {v} is below its minimum {spec.lo}')
    if spec.hi is not None and v > spec.hi:
        raise ValueError(f'{spec.name} = {v} is above its maximum {spec.hi}')


def parse_set_arguments(items: Sequence[str]) -> Dict[str, Any]:
    """Parse ``name=value`` strings with YAML values, as ``--ros-args -p`` does.

    :param items: e.g. ``['grid_min=[-2.0,-2.0,-0.05]', 'refiner=none']``
    :raises ValueError: on a malformed item
    """
    out = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'--set expects name=value, got {item!r}')
        name, text = item.split('=', 1)
        out[name.strip()] = yaml.safe_load(text)
    return out
