"""Generated action-recognition benchmark written as real H.264 mp4 files in the UCF-101 layout.

``condi-pipe synth`` calls :func:`generate_benchmark`. The result is read by the same extractor that reads
UCF-101: class folders of ``v_<Class>_gXX_cYY.mp4`` files plus ``classInd.txt``, ``trainlist01.txt`` and
``testlist01.txt`` with CRLF line endings, exactly as UCF-101 ships them. Two sidecars hold the ground truth for
tests and analysis and are never needed by the extractor: ``synth_clips.csv`` (kind of every 16-frame clip) and
``synth.json`` (the configuration).

Design (fixed; every number is a module constant below and a :class:`SynthConfig` field)
------------------------------------------------------------------------------------------
* 10 classes (:data:`CLASSES`), each a motion of one foreground object over a textured background.
* Video ``i`` (0-based) has class ``i % 10`` and group ``i // 10 + 1`` within its class; every video is its own
  group (``cYY`` is always ``c01``). Per class, ``round(TEST_FRACTION * n)`` groups (at least 1 and at most
  ``n - 1`` when ``n >= 2``) are test groups, chosen by a permutation seeded with ``(seed, class)``.
* Everything random about video ``i`` comes from ``np.random.default_rng([seed, i, stream])``: the plan
  (length, clip kinds, appearance, motion) from stream 0, pixel noise from stream 1, the background texture
  from stream 2. Videos are independent of each other, of ``videos`` and of generation order, so the first
  ``n`` videos of a bigger run are byte-identical to a run of ``n`` videos, and parallel generation gives the
  same bytes.
* A video has ``randint(MIN_CLIPS, MAX_CLIPS)`` clips of ``CLIP_FRAMES`` frames. Each clip is independently
  *informative* with probability ``P_INFORMATIVE`` or one of the :data:`AMBIGUOUS_KINDS` with equal shares of
  the rest. Draws with no informative clip are redrawn (so the informative share is a bit above
  ``P_INFORMATIVE`` for short videos).
* Appearance is sampled independently of the class: object shape (:data:`SHAPES`, all marked by an off-centre
  dot so rotation is visible), colour (kept at least :data:`MIN_OBJECT_CONTRAST` away from the background's
  colours), size (static sizes follow the same distribution as the Grow/Shrink sizes in a random frame),
  orientation; background texture (:data:`TEXTURES`) with its scale, angle, edge sharpness and two colours;
  global brightness gain and sensor noise.

Motion and continuity
---------------------
The labelled object has a motion clock ``tau`` that advances one tick per frame in the clips where it moves
(``informative``, ``occlusion``, ``noise``) and is held in the clips where it is still (``pan``,
``distractor``), so position, angle and oscillation phase evolve continuously across clips.

* Translate*: constant speed along the axis; the position wraps on a torus one object-radius larger than the
  frame on each side, so the object leaves one edge and re-enters at the opposite one still moving the same
  way. The other coordinate is fixed.
* Rotate*: fixed centre, constant angular speed (clockwise = the marker dot turns like a clock hand on the
  screen).
* Grow / Shrink: fixed centre; the size is reset at every clip: within a clip the radius goes geometrically
  from ``r / sqrt(ratio)`` to ``r * sqrt(ratio)`` (Grow) or back (Shrink). A held (still) object has radius ``r``.
* Oscillate*: ``centre + A * sin(2 pi tau / period + phase)`` along the axis. ``period <= 2 * (CLIP_FRAMES - 1)``,
  so every clip contains a reversal of direction and cannot be mistaken for a translation.

Ambiguous clip kinds (each with a visible cue)
----------------------------------------------
* ``pan``: the camera pans along one axis at a translation speed; the background slides, the object is held
  still in the frame (it looks like the object translating the opposite way relative to the scene).
* ``distractor``: the labelled object is held still and hidden behind an opaque block; a second object with
  fresh appearance performs one of the 9 *other* classes' motions (fully in frame) in front of it.
* ``occlusion``: the object performs its class motion behind a static fence of opaque bars (horizontal or
  vertical) covering most of the frame.
* ``noise``: the object performs its class motion, but contrast is crushed towards grey and heavy Gaussian
  noise is added.

Known single-frame cue (by design, like real footage): only Translate* objects are ever cut by the frame edge
(they wrap); objects of the other classes always stay fully in frame. An edge-cut object therefore says
"some translation" but not which direction.

Gaussian noise is drawn by inverse-CDF lookup (65536 quantiles) of 16-bit uniform draws: 3x faster than
``Generator.standard_normal`` and indistinguishable from it here (tails cut at about 4.3 sigma).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

# ---------------------------------------------------------------------------------------------------------------
# Fixed design constants. Each is also a SynthConfig field (same name, lower case) and recorded in synth.json.
# Ranges are (low, high) of a uniform draw, one draw per video unless said otherwise.
# ---------------------------------------------------------------------------------------------------------------

#: Class names, in classInd.txt order (1-based index = position + 1).
CLASSES: tuple[str, ...] = (
    "TranslateLeft",
    "TranslateRight",
    "TranslateUp",
    "TranslateDown",
    "RotateClockwise",
    "RotateAnticlockwise",
    "Grow",
    "Shrink",
    "OscillateHorizontal",
    "OscillateVertical",
)

#: Number of videos written by default (``condi-pipe synth`` default).
DEFAULT_VIDEOS = 200
#: Default seed.
DEFAULT_SEED = 0

#: Frame rate of every video (input and output of the encoder), frames per second.
FPS = 25
#: Frame width in pixels.
FRAME_WIDTH = 170
#: Frame height in pixels.
FRAME_HEIGHT = 128
#: Frames per clip; every video is a whole number of clips.
CLIP_FRAMES = 16
#: Fewest clips per video (inclusive): 32 frames, 1.28 s.
MIN_CLIPS = 2
#: Most clips per video (inclusive): 192 frames, 7.68 s.
MAX_CLIPS = 12

#: Share of each class's videos (whole groups) in testlist01.txt; the rest is trainlist01.txt.
TEST_FRACTION = 0.3

#: Probability that a clip is informative (the labelled object performs its class motion in plain view).
P_INFORMATIVE = 0.6
#: Ambiguous clip kinds; they share ``1 - P_INFORMATIVE`` equally (0.1 each).
AMBIGUOUS_KINDS: tuple[str, ...] = ("pan", "distractor", "occlusion", "noise")
#: Fewest informative clips per video; clip-kind draws with fewer are redrawn.
MIN_INFORMATIVE_CLIPS = 1

#: Object shapes (circumradius 1 in object units; each carries a marker dot so rotation is visible).
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ellipse")
#: Base object circumradius ``r`` in pixels: a Grow/Shrink object's radius at mid-clip. Objects of the other
#: classes keep the radius ``r * ratio ** (f - 0.5)`` (``ratio`` from SCALE_RATIO, ``f`` uniform in [0, 1]): the
#: same distribution as a Grow/Shrink object's radius in a random frame, so size says nothing about the class.
OBJECT_RADIUS = (14.0, 24.0)
#: Marker dot centre, in object radii from the object centre along the object's orientation.
MARKER_OFFSET = 0.5
#: Marker dot radius, in object radii.
MARKER_RADIUS = 0.22
#: Least RGB (0..255) Euclidean distance between the object colour and any mix of the two background colours.
MIN_OBJECT_CONTRAST = 90.0

#: Translate* speed in pixels per frame.
TRANSLATE_SPEED = (1.5, 3.5)
#: Rotate* angular speed in degrees per frame.
ROTATE_SPEED_DEG = (3.0, 8.0)
#: Grow/Shrink size ratio between the last and first frame of a clip (radius goes r/sqrt(ratio) -> r*sqrt(ratio)).
SCALE_RATIO = (1.6, 2.4)
#: Oscillate* amplitude in pixels (capped at half the frame side minus the radius, so the object stays in frame).
OSCILLATE_AMPLITUDE = (15.0, 35.0)
#: Oscillate* period in frames (<= 2 * (CLIP_FRAMES - 1), so every clip holds a direction reversal).
OSCILLATE_PERIOD = (10.0, 24.0)

#: Background textures, one chosen uniformly per video.
TEXTURES: tuple[str, ...] = ("noise", "stripes", "checker")
#: Side in pixels of the periodic texture tile the background is cut from (pans wrap around it).
TEXTURE_TILE = 256
#: Smooth-noise blob scale: standard deviation in pixels of the Gaussian low-pass applied to white noise.
NOISE_BLOB_SCALE = (3.0, 16.0)
#: Stripe period in pixels (any angle).
STRIPE_PERIOD = (8.0, 40.0)
#: Checkerboard cell side in pixels (any angle).
CHECKER_CELL = (6.0, 32.0)
#: Edge sharpness of stripes and checkers: tanh gain, 1 = sinusoidal, 8 = nearly hard edges.
TEXTURE_SHARPNESS = (1.0, 8.0)
#: Standard deviation (per RGB channel, 0..255) of the second background colour around the first (uniform) one.
BACKGROUND_COLOUR_SPREAD = 70.0

#: Global brightness gain applied to the whole video.
BRIGHTNESS_GAIN = (0.7, 1.3)
#: Sensor noise: standard deviation (0..255 scale) of Gaussian noise added to every pixel of every frame.
SENSOR_NOISE_STD = (0.0, 6.0)

#: ``pan`` clips: camera speed in pixels per frame (the translation speed range), along a random axis direction.
PAN_SPEED = TRANSLATE_SPEED
#: ``distractor`` clips: margin in pixels (per side, drawn per axis per clip) of the block hiding the object.
BLOCK_MARGIN = (4.0, 16.0)
#: ``occlusion`` clips: fence bar period in pixels (drawn per clip).
FENCE_PERIOD = (12.0, 24.0)
#: ``occlusion`` clips: fraction of each fence period covered by the opaque bar (drawn per clip).
FENCE_COVER = (0.75, 0.9)
#: ``noise`` clips: contrast kept around mid-grey (1 = unchanged) (drawn per clip).
HEAVY_NOISE_CONTRAST = (0.2, 0.5)
#: ``noise`` clips: standard deviation of the added Gaussian noise, 0..255 scale (drawn per clip).
HEAVY_NOISE_STD = (50.0, 90.0)

#: libx264 preset.
X264_PRESET = "veryfast"
#: libx264 constant rate factor.
X264_CRF = 23
#: Keyframe interval in frames (= CLIP_FRAMES: every clip starts on a keyframe; scene-cut keyframes disabled).
GOP = 16
#: Consecutive B-frames (0: decode order = display order).
B_FRAMES = 0

#: Clip kinds in which the labelled object moves (its motion clock advances).
MOVING_KINDS: tuple[str, ...] = ("informative", "occlusion", "noise")
#: All clip kinds, informative first.
CLIP_KINDS: tuple[str, ...] = ("informative",) + AMBIGUOUS_KINDS

_STREAM_PLAN, _STREAM_PIXELS, _STREAM_TEXTURE = 0, 1, 2
_SPLIT_STREAM = 1_000_003  # seed stream for the train/test split (never a video index stream)
_FORMAT_VERSION = 1

_CRLF = "\r\n"
_VIDEO_NAME = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.mp4$")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the benchmark's bytes. Only ``videos`` and ``seed`` are meant to change;
    the other fields are the fixed design (module constants of the same upper-case name)."""

    videos: int = DEFAULT_VIDEOS
    seed: int = DEFAULT_SEED
    fps: int = FPS
    frame_width: int = FRAME_WIDTH
    frame_height: int = FRAME_HEIGHT
    clip_frames: int = CLIP_FRAMES
    min_clips: int = MIN_CLIPS
    max_clips: int = MAX_CLIPS
    test_fraction: float = TEST_FRACTION
    p_informative: float = P_INFORMATIVE
    ambiguous_kinds: tuple[str, ...] = AMBIGUOUS_KINDS
    min_informative_clips: int = MIN_INFORMATIVE_CLIPS
    shapes: tuple[str, ...] = SHAPES
    object_radius: tuple[float, float] = OBJECT_RADIUS
    marker_offset: float = MARKER_OFFSET
    marker_radius: float = MARKER_RADIUS
    min_object_contrast: float = MIN_OBJECT_CONTRAST
    translate_speed: tuple[float, float] = TRANSLATE_SPEED
    rotate_speed_deg: tuple[float, float] = ROTATE_SPEED_DEG
    scale_ratio: tuple[float, float] = SCALE_RATIO
    oscillate_amplitude: tuple[float, float] = OSCILLATE_AMPLITUDE
    oscillate_period: tuple[float, float] = OSCILLATE_PERIOD
    textures: tuple[str, ...] = TEXTURES
    texture_tile: int = TEXTURE_TILE
    noise_blob_scale: tuple[float, float] = NOISE_BLOB_SCALE
    stripe_period: tuple[float, float] = STRIPE_PERIOD
    checker_cell: tuple[float, float] = CHECKER_CELL
    texture_sharpness: tuple[float, float] = TEXTURE_SHARPNESS
    background_colour_spread: float = BACKGROUND_COLOUR_SPREAD
    brightness_gain: tuple[float, float] = BRIGHTNESS_GAIN
    sensor_noise_std: tuple[float, float] = SENSOR_NOISE_STD
    pan_speed: tuple[float, float] = PAN_SPEED
    block_margin: tuple[float, float] = BLOCK_MARGIN
    fence_period: tuple[float, float] = FENCE_PERIOD
    fence_cover: tuple[float, float] = FENCE_COVER
    heavy_noise_contrast: tuple[float, float] = HEAVY_NOISE_CONTRAST
    heavy_noise_std: tuple[float, float] = HEAVY_NOISE_STD
    x264_preset: str = X264_PRESET
    x264_crf: int = X264_CRF
    gop: int = GOP
    b_frames: int = B_FRAMES

    def __post_init__(self) -> None:
        if self.videos < 1:
            raise ValueError(f"videos must be >= 1, got {self.videos}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.frame_width % 2 or self.frame_height % 2:
            raise ValueError("yuv420p needs even frame sides")
        if not 1 <= self.min_informative_clips <= self.min_clips <= self.max_clips:
            raise ValueError("need 1 <= min_informative_clips <= min_clips <= max_clips")
        if self.oscillate_period[1] > 2 * (self.clip_frames - 1):
            raise ValueError("oscillate_period too long: a clip might not contain a direction reversal")

    @property
    def ambiguous_probability(self) -> float:
        """Probability of each single ambiguous kind."""
        return (1.0 - self.p_informative) / len(self.ambiguous_kinds)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class SynthSummary(NamedTuple):
    """What :func:`generate_benchmark` wrote."""

    root: Path
    videos: int
    train: dict[str, int]  # videos per class in trainlist01.txt
    test: dict[str, int]  # videos per class in testlist01.txt
    clip_kinds: dict[str, int]  # clips per kind, over all videos
    clips: int
    frames: int
    bytes: int  # total size of the mp4 files


# ---------------------------------------------------------------------------------------------------------------
# Plans: every random choice of a video, drawn from its own generator (cheap, no pixels).
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """Appearance of one object."""

    shape: str
    radius: float  # circumradius in pixels
    colour: tuple[float, float, float]
    marker_colour: tuple[float, float, float]


@dataclass(frozen=True)
class Motion:
    """Parameters of one class motion (fields a motion does not use are 0)."""

    cls: int
    x0: float  # centre (for translations: start position; the along-axis coordinate is wrapped when `wrap`)
    y0: float
    angle0: float  # orientation in radians; marker at (cos, sin) in screen coordinates (y down)
    speed: float  # signed: px/frame (translate, + = right/down) or rad/frame (rotate, + = clockwise on screen)
    amplitude: float = 0.0
    period: float = 0.0
    phase: float = 0.0
    scale_ratio: float = 1.0
    wrap: bool = False


@dataclass(frozen=True)
class Background:
    texture: str
    scale: float  # blob scale / stripe period / checker cell, pixels
    angle: float  # radians (stripes, checker)
    sharpness: float
    phase: float
    colour1: tuple[float, float, float]
    colour2: tuple[float, float, float]
    offset: tuple[float, float]  # initial camera offset in the tile (x, y)


@dataclass(frozen=True)
class ClipPlan:
    kind: str
    pan_velocity: tuple[float, float] = (0.0, 0.0)  # camera px/frame (x, y); the background slides the other way
    distractor_look: Look | None = None
    distractor_motion: Motion | None = None
    block_margin: tuple[float, float] = (0.0, 0.0)
    block_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fence_axis: int = 0  # 0: vertical bars (vary along x), 1: horizontal bars (vary along y)
    fence_period: float = 0.0
    fence_cover: float = 0.0
    fence_phase: float = 0.0
    fence_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise_contrast: float = 1.0
    noise_std: float = 0.0

    @property
    def distractor_class(self) -> int:
        return -1 if self.distractor_motion is None else self.distractor_motion.cls


@dataclass(frozen=True)
class VideoPlan:
    index: int
    label: int  # 0-based class index
    group: int  # 1-based group within the class
    look: Look
    motion: Motion
    background: Background
    gain: float
    sensor_noise: float
    clips: tuple[ClipPlan, ...]

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.clips)

    @property
    def relpath(self) -> str:
        return video_relpath(self.label, self.group)


def video_relpath(label: int, group: int, clip: int = 1) -> str:
    """``ClassName/v_ClassName_gXX_cYY.mp4`` as listed in trainlist01.txt / testlist01.txt."""
    name = CLASSES[label]
    return f"{name}/v_{name}_g{group:02d}_c{clip:02d}.mp4"


def plan_frames(plan: VideoPlan, config: SynthConfig) -> int:
    """Number of frames of a planned video."""
    return len(plan.clips) * config.clip_frames


def video_rng(seed: int, index: int, stream: int = _STREAM_PLAN) -> np.random.Generator:
    """The generator of one video's random stream."""
    return np.random.default_rng([seed, index, stream])


def sample_clip_kinds(rng: np.random.Generator, n_clips: int, config: SynthConfig = SynthConfig()) -> tuple[str, ...]:
    """Independent clip kinds, redrawn until at least ``min_informative_clips`` are informative."""
    kinds = ("informative",) + tuple(config.ambiguous_kinds)
    probs = np.array([config.p_informative] + [config.ambiguous_probability] * len(config.ambiguous_kinds))
    probs /= probs.sum()
    while True:
        draw = rng.choice(len(kinds), size=n_clips, p=probs)
        if int(np.sum(draw == 0)) >= config.min_informative_clips:
            return tuple(kinds[i] for i in draw)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _rgb(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0.0, 255.0, size=3))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0.0 else min(1.0, max(0.0, float((p - a) @ ab) / denom))
    return float(np.linalg.norm(p - (a + t * ab)))


def _sample_size(rng: np.random.Generator, cls: int, config: SynthConfig) -> tuple[float, float]:
    """(radius, scale ratio) of an object of class ``cls``.

    Grow/Shrink objects have radius ``r`` at mid-clip and sweep ``r * ratio ** (f - 0.5)``, f in [0, 1], over each
    clip. Every other object keeps one radius drawn from that same distribution (``f`` uniform), so the size seen
    in any frame carries no information about the class.
    """
    base = _uniform(rng, config.object_radius)
    ratio = _uniform(rng, config.scale_ratio)
    f = _uniform(rng, (0.0, 1.0))
    if CLASSES[cls] in ("Grow", "Shrink"):
        return base, ratio
    return base * ratio ** (f - 0.5), 1.0


def _sample_look(rng: np.random.Generator, config: SynthConfig, background: Background, radius: float) -> Look:
    shape = config.shapes[int(rng.integers(len(config.shapes)))]
    a, b = np.array(background.colour1), np.array(background.colour2)
    best, best_dist = None, -1.0
    for _ in range(64):  # rejection sampling for contrast; keeps the most distant draw if none qualifies
        c = np.array(_rgb(rng))
        d = _segment_distance(c, a, b)
        if d > best_dist:
            best, best_dist = c, d
        if d >= config.min_object_contrast:
            break
    colour = tuple(float(v) for v in best)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    marker = (20.0, 20.0, 20.0) if luminance > 127.5 else (235.0, 235.0, 235.0)
    return Look(shape=shape, radius=radius, colour=colour, marker_colour=marker)


def _sample_background(rng: np.random.Generator, config: SynthConfig) -> Background:
    texture = config.textures[int(rng.integers(len(config.textures)))]
    scale = _uniform(
        rng,
        {"noise": config.noise_blob_scale, "stripes": config.stripe_period, "checker": config.checker_cell}[texture],
    )
    angle = _uniform(rng, (0.0, math.pi))
    sharpness = _uniform(rng, config.texture_sharpness)
    phase = _uniform(rng, (0.0, 2 * math.pi))
    c1 = np.array(_rgb(rng))
    c2 = np.clip(c1 + rng.normal(0.0, config.background_colour_spread, size=3), 0.0, 255.0)
    tile = config.texture_tile
    offset = (_uniform(rng, (0.0, tile)), _uniform(rng, (0.0, tile)))
    return Background(
        texture=texture,
        scale=scale,
        angle=angle,
        sharpness=sharpness,
        phase=phase,
        colour1=tuple(float(v) for v in c1),
        colour2=tuple(float(v) for v in c2),
        offset=offset,
    )


def motion_extent(look: Look, motion: Motion) -> float:
    """Largest distance in pixels from the object centre to its outline over the motion."""
    return look.radius * math.sqrt(motion.scale_ratio)


def _sample_motion(
    rng: np.random.Generator, cls: int, look: Look, ratio: float, config: SynthConfig, *, in_clip: bool
) -> Motion:
    """Motion of class ``cls``. ``in_clip``: a distractor that must stay fully in frame for one clip (no wrap)."""
    name = CLASSES[cls]
    w, h = config.frame_width, config.frame_height
    r = look.radius
    angle0 = _uniform(rng, (0.0, 2 * math.pi))
    if name.startswith("Translate"):
        speed = _uniform(rng, config.translate_speed)
        horizontal = name in ("TranslateLeft", "TranslateRight")
        sign = -1.0 if name in ("TranslateLeft", "TranslateUp") else 1.0
        along, across = (w, h) if horizontal else (h, w)
        if in_clip:
            travel = speed * (config.clip_frames - 1)
            lo = r + (travel if sign < 0 else 0.0)
            hi = along - r - (travel if sign > 0 else 0.0)
            p = _uniform(rng, (lo, max(lo, hi)))
        else:
            p = _uniform(rng, (-r, along + r))
        q = _uniform(rng, (r, across - r))
        x0, y0 = (p, q) if horizontal else (q, p)
        return Motion(cls, x0, y0, angle0, sign * speed, wrap=not in_clip)
    if name.startswith("Rotate"):
        speed = math.radians(_uniform(rng, config.rotate_speed_deg))
        sign = 1.0 if name == "RotateClockwise" else -1.0
        x0, y0 = _uniform(rng, (r, w - r)), _uniform(rng, (r, h - r))
        return Motion(cls, x0, y0, angle0, sign * speed)
    if name in ("Grow", "Shrink"):
        ext = r * math.sqrt(ratio)
        x0, y0 = _uniform(rng, (ext, w - ext)), _uniform(rng, (ext, h - ext))
        return Motion(cls, x0, y0, angle0, 0.0, scale_ratio=ratio)
    if name.startswith("Oscillate"):
        amplitude = _uniform(rng, config.oscillate_amplitude)
        period = _uniform(rng, config.oscillate_period)
        phase = _uniform(rng, (0.0, 2 * math.pi))
        horizontal = name == "OscillateHorizontal"
        along, across = (w, h) if horizontal else (h, w)
        amplitude = min(amplitude, along / 2.0 - r)  # a big object oscillating vertically stays in frame
        p = _uniform(rng, (r + amplitude, along - r - amplitude))
        q = _uniform(rng, (r, across - r))
        x0, y0 = (p, q) if horizontal else (q, p)
        return Motion(cls, x0, y0, angle0, 0.0, amplitude=amplitude, period=period, phase=phase)
    raise AssertionError(name)


def _sample_clip(
    rng: np.random.Generator, kind: str, label: int, background: Background, config: SynthConfig
) -> ClipPlan:
    if kind == "informative":
        return ClipPlan(kind)
    if kind == "pan":
        speed = _uniform(rng, config.pan_speed)
        direction = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)][int(rng.integers(4))]
        return ClipPlan(kind, pan_velocity=(direction[0] * speed, direction[1] * speed))
    if kind == "distractor":
        others = [c for c in range(len(CLASSES)) if c != label]
        cls = others[int(rng.integers(len(others)))]
        radius, ratio = _sample_size(rng, cls, config)
        look = _sample_look(rng, config, background, radius)
        motion = _sample_motion(rng, cls, look, ratio, config, in_clip=True)
        margin = (_uniform(rng, config.block_margin), _uniform(rng, config.block_margin))
        return ClipPlan(kind, distractor_look=look, distractor_motion=motion, block_margin=margin, block_colour=_rgb(rng))
    if kind == "occlusion":
        period = _uniform(rng, config.fence_period)
        return ClipPlan(
            kind,
            fence_axis=int(rng.integers(2)),
            fence_period=period,
            fence_cover=_uniform(rng, config.fence_cover),
            fence_phase=_uniform(rng, (0.0, period)),
            fence_colour=_rgb(rng),
        )
    if kind == "noise":
        return ClipPlan(
            kind,
            noise_contrast=_uniform(rng, config.heavy_noise_contrast),
            noise_std=_uniform(rng, config.heavy_noise_std),
        )
    raise ValueError(f"unknown clip kind {kind!r}")


def plan_video(index: int, config: SynthConfig = SynthConfig()) -> VideoPlan:
    """All random choices of video ``index`` (0-based), from its own generator."""
    rng = video_rng(config.seed, index, _STREAM_PLAN)
    label = index % len(CLASSES)
    group = index // len(CLASSES) + 1
    n_clips = int(rng.integers(config.min_clips, config.max_clips + 1))
    kinds = sample_clip_kinds(rng, n_clips, config)
    background = _sample_background(rng, config)
    radius, ratio = _sample_size(rng, label, config)
    look = _sample_look(rng, config, background, radius)
    motion = _sample_motion(rng, label, look, ratio, config, in_clip=False)
    gain = _uniform(rng, config.brightness_gain)
    sensor = _uniform(rng, config.sensor_noise_std)
    clips = tuple(_sample_clip(rng, kind, label, background, config) for kind in kinds)
    return VideoPlan(index, label, group, look, motion, background, gain, sensor, clips)


def split_test_groups(config: SynthConfig) -> dict[int, frozenset[int]]:
    """Per class (0-based), the set of groups in the test list: a seeded permutation, ``TEST_FRACTION`` of them."""
    out: dict[int, frozenset[int]] = {}
    for cls in range(len(CLASSES)):
        n = len(range(cls, config.videos, len(CLASSES)))
        n_test = int(math.floor(config.test_fraction * n + 0.5))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        order = np.random.default_rng([config.seed, _SPLIT_STREAM, cls]).permutation(n)
        out[cls] = frozenset(int(g) + 1 for g in order[:n_test])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Rendering (vectorised numpy; float32 0..255 until the final rounding)
# ---------------------------------------------------------------------------------------------------------------


def motion_states(motion: Motion, look: Look, tau: np.ndarray, k: np.ndarray, config: SynthConfig) -> np.ndarray:
    """Object state per frame: array (n, 4) of x, y, angle (radians), scale (radius multiplier).

    ``tau``: motion clock per frame; ``k``: frame index within the clip (Grow/Shrink), ``(clip_frames-1)/2`` for a
    held object (scale 1).
    """
    tau = np.asarray(tau, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    n = tau.shape[0]
    x = np.full(n, motion.x0)
    y = np.full(n, motion.y0)
    angle = np.full(n, motion.angle0)
    scale = np.ones(n)
    name = CLASSES[motion.cls]
    if name.startswith("Translate"):
        horizontal = name in ("TranslateLeft", "TranslateRight")
        start = motion.x0 if horizontal else motion.y0
        p = start + motion.speed * tau
        if motion.wrap:
            r = motion_extent(look, motion)
            span = (config.frame_width if horizontal else config.frame_height) + 2 * r
            p = np.mod(p + r, span) - r
        if horizontal:
            x = p
        else:
            y = p
    elif name.startswith("Rotate"):
        angle = motion.angle0 + motion.speed * tau
    elif name in ("Grow", "Shrink"):
        sign = 1.0 if name == "Grow" else -1.0
        frac = k / (config.clip_frames - 1) - 0.5
        scale = np.exp(sign * math.log(motion.scale_ratio) * frac)
    elif name.startswith("Oscillate"):
        d = motion.amplitude * np.sin(2 * math.pi * tau / motion.period + motion.phase)
        if name == "OscillateHorizontal":
            x = motion.x0 + d
        else:
            y = motion.y0 + d
    return np.stack([x, y, angle, scale], axis=1)


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (object units, circumradius 1) of a shape pointing along +u."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "ellipse":
        b = 0.55
        return (np.sqrt(u * u + (v / b) ** 2) - 1.0) * b
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - math.sqrt(0.5)
    if shape == "triangle":  # vertices at angles 0, 120, 240 degrees; inradius 0.5
        c = 0.5
        s = math.sqrt(3.0) / 2.0
        return np.maximum(np.maximum(-u, c * u + s * v), c * u - s * v) - 0.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        arm, half = 0.95, 0.3
        return np.minimum(np.maximum(au - arm, av - half), np.maximum(au - half, av - arm))
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(
    frames: np.ndarray, look: Look, states: np.ndarray, config: SynthConfig, marker: tuple[float, float]
) -> np.ndarray:
    """Alpha-composite the object over ``frames`` (n, H, W, 3) in place; returns its coverage (n, H, W).

    Work is restricted to the bounding box of the object over all frames.
    """
    n, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
    alpha_full = np.zeros((n, h, w), dtype=np.float32)
    ext = look.radius * states[:, 3]
    x0 = int(max(0, math.floor(float(np.min(states[:, 0] - ext))) - 1))
    x1 = int(min(w, math.ceil(float(np.max(states[:, 0] + ext))) + 2))
    y0 = int(max(0, math.floor(float(np.min(states[:, 1] - ext))) - 1))
    y1 = int(min(h, math.ceil(float(np.max(states[:, 1] + ext))) + 2))
    if x0 >= x1 or y0 >= y1:
        return alpha_full
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    cx = states[:, 0].astype(np.float32)[:, None, None]
    cy = states[:, 1].astype(np.float32)[:, None, None]
    cos = np.cos(states[:, 2]).astype(np.float32)[:, None, None]
    sin = np.sin(states[:, 2]).astype(np.float32)[:, None, None]
    rad = (look.radius * states[:, 3]).astype(np.float32)[:, None, None]
    dx = xs - cx
    dy = ys - cy
    u = (dx * cos + dy * sin) / rad
    v = (dy * cos - dx * sin) / rad
    alpha = np.clip(0.5 - _shape_sdf(look.shape, u, v) * rad, 0.0, 1.0)
    offset, mradius = marker
    mu = np.sqrt((u - offset) ** 2 + v * v) - mradius
    malpha = np.clip(0.5 - mu * rad, 0.0, 1.0) * alpha
    region = frames[:, y0:y1, x0:x1, :]
    colour = np.asarray(look.colour, dtype=np.float32)
    mcolour = np.asarray(look.marker_colour, dtype=np.float32)
    region += alpha[..., None] * (colour - region) + malpha[..., None] * (mcolour - colour)
    alpha_full[:, y0:y1, x0:x1] = alpha
    return alpha_full


def texture_tile(background: Background, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Periodic RGB texture tile (T, T, 3) float32, 0..255."""
    t = config.texture_tile
    if background.texture == "noise":
        white = rng.standard_normal((t, t))
        f = np.fft.fftfreq(t)
        sigma = background.scale
        lowpass = np.exp(-2.0 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
        field = np.real(np.fft.ifft2(np.fft.fft2(white) * lowpass))
        field = (field - field.mean()) / (field.std() + 1e-12)
        value = np.clip(0.5 + 0.25 * field, 0.0, 1.0)
    else:
        coords = np.arange(t, dtype=np.float64)
        xx, yy = coords[None, :], coords[:, None]
        if background.texture == "stripes":
            cycles = t / background.scale
        else:  # checker: a cell is half a period of each of the two orthogonal waves
            cycles = t / (2.0 * background.scale)
        # integer wave numbers keep the tile periodic
        a = int(round(cycles * math.cos(background.angle)))
        b = int(round(cycles * math.sin(background.angle)))
        if a == 0 and b == 0:
            a = 1
        w1 = np.sin(2 * math.pi * (a * xx + b * yy) / t + background.phase)
        if background.texture == "stripes":
            raw = w1
        else:
            raw = w1 * np.sin(2 * math.pi * (-b * xx + a * yy) / t)
        s = background.sharpness
        value = 0.5 + 0.5 * np.tanh(s * raw) / math.tanh(s)
    c1 = np.asarray(background.colour1)
    c2 = np.asarray(background.colour2)
    return (c1 + (c2 - c1) * value[..., None]).astype(np.float32)


def _sample_background_view(tile: np.ndarray, ox: float, oy: float, h: int, w: int) -> np.ndarray:
    """Frame-sized view of the periodic tile at camera offset (ox, oy), bilinear, (H, W, 3)."""
    t = tile.shape[0]
    ix, iy = math.floor(ox), math.floor(oy)
    fx, fy = np.float32(ox - ix), np.float32(oy - iy)
    xs0 = (np.arange(w) + ix) % t
    ys0 = (np.arange(h) + iy) % t
    rows0 = tile[ys0]
    if fy == 0 and fx == 0:
        return rows0[:, xs0].copy()
    xs1 = (xs0 + 1) % t
    rows1 = tile[(ys0 + 1) % t]
    top = rows0[:, xs0] * (1 - fx) + rows0[:, xs1] * fx
    bottom = rows1[:, xs0] * (1 - fx) + rows1[:, xs1] * fx
    return top * (1 - fy) + bottom * fy


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """The 65536 standard-normal quantiles at (i + 0.5) / 65536 (float32; tails cut at about 4.3 sigma)."""
    dist = statistics.NormalDist()
    n = 1 << 16
    return np.array([dist.inv_cdf((i + 0.5) / n) for i in range(n)], dtype=np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise of standard deviation ``std`` (float32), by inverse-CDF lookup of 16-bit uniform draws
    (3x faster than ``standard_normal``, which dominated the rendering time)."""
    table = _normal_quantiles() * np.float32(std)
    return table[rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)]


class RenderedVideo(NamedTuple):
    """One video's pixels and ground truth, before encoding."""

    plan: VideoPlan
    frames: np.ndarray  # (T, H, W, 3) uint8, exactly the encoder's input
    states: np.ndarray  # (T, 4) labelled object's x, y, angle, scale per frame
    camera: np.ndarray  # (T, 2) camera offset (x, y) in the background tile per frame
    object_alpha: np.ndarray | None  # (T, H, W) float32 labelled-object coverage before occluders, if asked


def _render_clips(plan: VideoPlan, config: SynthConfig, *, with_alpha: bool = False):
    """Yield, per clip: (frames uint8 (F, H, W, 3), states (F, 4), camera (F, 2), alpha or None)."""
    h, w, nf = config.frame_height, config.frame_width, config.clip_frames
    tile = texture_tile(plan.background, config, video_rng(config.seed, plan.index, _STREAM_TEXTURE))
    pixel_rng = video_rng(config.seed, plan.index, _STREAM_PIXELS)
    marker = (config.marker_offset, config.marker_radius)
    frame_k = np.arange(nf, dtype=np.float64)
    held_k = np.full(nf, (nf - 1) / 2.0)
    tau = 0.0
    cam = np.array(plan.background.offset, dtype=np.float64)
    for clip in plan.clips:
        moving = clip.kind in MOVING_KINDS
        if moving:
            states = motion_states(plan.motion, plan.look, tau + frame_k, frame_k, config)
            tau += nf
        else:
            states = motion_states(plan.motion, plan.look, np.full(nf, tau), held_k, config)
        velocity = np.array(clip.pan_velocity, dtype=np.float64)
        camera = cam[None, :] + frame_k[:, None] * velocity[None, :]
        cam = cam + nf * velocity
        if clip.kind == "pan":
            frames = np.stack([_sample_background_view(tile, cx, cy, h, w) for cx, cy in camera])
        else:
            frames = np.repeat(_sample_background_view(tile, camera[0, 0], camera[0, 1], h, w)[None], nf, axis=0)

        alpha = _draw_object(frames, plan.look, states, config, marker)

        if clip.kind == "distractor":
            ext = plan.look.radius * float(states[0, 3])
            bx0 = max(0, math.floor(states[0, 0] - ext - clip.block_margin[0]))
            bx1 = min(w, math.ceil(states[0, 0] + ext + clip.block_margin[0]) + 1)
            by0 = max(0, math.floor(states[0, 1] - ext - clip.block_margin[1]))
            by1 = min(h, math.ceil(states[0, 1] + ext + clip.block_margin[1]) + 1)
            if bx0 < bx1 and by0 < by1:
                frames[:, by0:by1, bx0:bx1, :] = np.asarray(clip.block_colour, dtype=np.float32)
            dstates = motion_states(clip.distractor_motion, clip.distractor_look, frame_k, frame_k, config)
            _draw_object(frames, clip.distractor_look, dstates, config, marker)
        elif clip.kind == "occlusion":
            coord = np.arange(w if clip.fence_axis == 0 else h, dtype=np.float64)
            bars = np.mod(coord + clip.fence_phase, clip.fence_period) < clip.fence_cover * clip.fence_period
            colour = np.asarray(clip.fence_colour, dtype=np.float32)
            if clip.fence_axis == 0:
                frames[:, :, bars, :] = colour
            else:
                frames[:, bars, :, :] = colour

        frames *= np.float32(plan.gain)
        std = plan.sensor_noise
        if clip.kind == "noise":
            frames -= 127.5
            frames *= np.float32(clip.noise_contrast)
            frames += 127.5
            std = math.sqrt(std * std + clip.noise_std * clip.noise_std)
        frames += gaussian_noise(pixel_rng, frames.shape, std)
        np.clip(frames, 0.0, 255.0, out=frames)
        out = np.rint(frames).astype(np.uint8)
        yield out, states, camera, (alpha if with_alpha else None)


def render_video(index: int, config: SynthConfig = SynthConfig(), *, with_alpha: bool = False) -> RenderedVideo:
    """Render video ``index`` in memory: the exact frames that :func:`generate_benchmark` encodes."""
    plan = plan_video(index, config)
    parts = list(_render_clips(plan, config, with_alpha=with_alpha))
    return RenderedVideo(
        plan=plan,
        frames=np.concatenate([p[0] for p in parts]),
        states=np.concatenate([p[1] for p in parts]),
        camera=np.concatenate([p[2] for p in parts]),
        object_alpha=np.concatenate([p[3] for p in parts]) if with_alpha else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Encoding and writing
# ---------------------------------------------------------------------------------------------------------------


def encoder_command(output: Path | str, config: SynthConfig = SynthConfig()) -> list[str]:
    """ffmpeg command reading rgb24 frames on stdin and writing a bit-exact H.264 yuv420p mp4."""
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel", "error",
        "-y",
        "-filter_threads", "1",
        "-f", "rawvideo",
        "-pix_fmt", "rgb24",
        "-s", f"{config.frame_width}x{config.frame_height}",
        "-r", str(config.fps),
        "-i", "pipe:0",
        "-an",
        "-c:v", "libx264",
        "-preset", config.x264_preset,
        "-crf", str(config.x264_crf),
        "-g", str(config.gop),
        "-keyint_min", str(config.gop),
        "-sc_threshold", "0",
        "-bf", str(config.b_frames),
        "-threads", "1",
        "-pix_fmt", "yuv420p",
        "-r", str(config.fps),
        "-fflags", "+bitexact",
        "-flags", "+bitexact",
        "-map_metadata", "-1",
        "-movflags", "+faststart",
        "-f", "mp4",
        str(output),
    ]  # fmt: skip


class VideoRecord(NamedTuple):
    index: int
    relpath: str
    label: int
    group: int
    kinds: tuple[str, ...]
    distractor_classes: tuple[int, ...]
    frames: int
    bytes: int


def write_video(root: Path, index: int, config: SynthConfig) -> VideoRecord:
    """Render and encode video ``index`` under ``root`` (atomically: temporary file, then rename)."""
    root = Path(root)
    plan = plan_video(index, config)
    path = root / plan.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    proc = subprocess.Popen(
        encoder_command(tmp, config), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    frames = 0
    try:
        try:
            for clip_frames, _, _, _ in _render_clips(plan, config):
                proc.stdin.write(clip_frames.tobytes())
                frames += clip_frames.shape[0]
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    except BrokenPipeError:  # ffmpeg exited early: its exit status and message are reported below
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        tmp.unlink(missing_ok=True)
        raise
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.wait() != 0 or frames != plan_frames(plan, config):
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed encoding {path}: {err.decode(errors='replace').strip()}")
    os.replace(tmp, path)
    return VideoRecord(
        index=index,
        relpath=plan.relpath,
        label=plan.label,
        group=plan.group,
        kinds=plan.kinds,
        distractor_classes=tuple(c.distractor_class for c in plan.clips),
        frames=frames,
        bytes=path.stat().st_size,
    )


def _atomic_write(path: Path, data: str, newline: str = "\n") -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(data)
    os.replace(tmp, path)


def _crlf_lines(lines: list[str]) -> str:
    return "".join(line + _CRLF for line in lines)


def _encoder_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def _metadata(config: SynthConfig, complete: bool, summary: dict | None = None) -> str:
    meta = {
        "generator": "condi_pipe.video.synth",
        "format_version": _FORMAT_VERSION,
        "complete": complete,
        "classes": list(CLASSES),
        "clip_kinds": list(CLIP_KINDS),
        "config": config.to_json(),
        "encoder": _encoder_version(),
    }
    if summary is not None:
        meta["summary"] = summary
    return json.dumps(meta, indent=2, sort_keys=True) + "\n"


def _prepare_root(root: Path) -> None:
    if root.exists():
        if not root.is_dir():
            raise NotADirectoryError(root)
        if any(root.iterdir()) and not (root / "synth.json").exists():
            raise FileExistsError(f"{root} is not empty and holds no synth.json: refusing to write a benchmark there")
    root.mkdir(parents=True, exist_ok=True)


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete generated-looking mp4s (and leftovers of interrupted writes) of an earlier, bigger run."""
    for name in CLASSES:
        folder = root / name
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            rel = f"{name}/{p.name}"
            if p.name.startswith(".") and p.name.endswith(".part"):
                p.unlink()
            elif _VIDEO_NAME.match(p.name) and p.name.startswith(f"v_{name}_") and rel not in keep:
                p.unlink()


def generate_benchmark(
    root: Path | str,
    videos: int = DEFAULT_VIDEOS,
    seed: int = DEFAULT_SEED,
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write the benchmark of ``videos`` videos under ``root`` in the UCF-101 layout; returns what was written.

    ``root`` must be absent, empty, or an earlier benchmark (it has ``synth.json``); files of an earlier run that
    this run does not produce are removed. ``workers > 1`` renders and encodes videos in that many ``spawn``
    processes (a calling script needs the usual ``if __name__ == "__main__":`` guard); the bytes do not depend on
    it. ``progress(done, total)`` is called after each video. ``synth.json`` says ``"complete": false`` until the
    last file is written.
    """
    config = SynthConfig(videos=videos, seed=seed)
    root = Path(root)
    _prepare_root(root)
    _atomic_write(root / "synth.json", _metadata(config, complete=False))

    records: list[VideoRecord | None] = [None] * videos
    done = 0
    if workers <= 1:
        for i in range(videos):
            records[i] = write_video(root, i, config)
            done += 1
            if progress is not None:
                progress(done, videos)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(write_video, root, i, config): i for i in range(videos)}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    records[futures[fut]] = fut.result()
                    done += 1
                    if progress is not None:
                        progress(done, videos)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    _remove_stale(root, {r.relpath for r in records})

    test_groups = split_test_groups(config)
    by_class = sorted(records, key=lambda r: (r.label, r.group))
    train_lines, test_lines = [], []
    train = {name: 0 for name in CLASSES}
    test = {name: 0 for name in CLASSES}
    for r in by_class:
        if r.group in test_groups[r.label]:
            test_lines.append(r.relpath)
            test[CLASSES[r.label]] += 1
        else:
            train_lines.append(f"{r.relpath} {r.label + 1}")
            train[CLASSES[r.label]] += 1
    _atomic_write(root / "classInd.txt", _crlf_lines([f"{i + 1} {name}" for i, name in enumerate(CLASSES)]), "")
    _atomic_write(root / "trainlist01.txt", _crlf_lines(train_lines), "")
    _atomic_write(root / "testlist01.txt", _crlf_lines(test_lines), "")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "clip", "start_frame", "frames", "kind", "label", "distractor_class", "split"])
    kinds = {kind: 0 for kind in CLIP_KINDS}
    for r in by_class:
        split = "test" if r.group in test_groups[r.label] else "train"
        for c, (kind, dcls) in enumerate(zip(r.kinds, r.distractor_classes)):
            kinds[kind] += 1
            writer.writerow(
                [r.relpath, c, c * config.clip_frames, config.clip_frames, kind, CLASSES[r.label],
                 CLASSES[dcls] if dcls >= 0 else "", split]
            )  # fmt: skip
    _atomic_write(root / "synth_clips.csv", buf.getvalue(), "")

    summary = SynthSummary(
        root=root,
        videos=videos,
        train=train,
        test=test,
        clip_kinds=kinds,
        clips=sum(len(r.kinds) for r in records),
        frames=sum(r.frames for r in records),
        bytes=sum(r.bytes for r in records),
    )
    summary_json = {k: v for k, v in summary._asdict().items() if k != "root"}
    _atomic_write(root / "synth.json", _metadata(config, complete=True, summary=summary_json))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Reading the ground truth back (for tests and analysis; the extractor never needs it)
# ---------------------------------------------------------------------------------------------------------------


def benchmark_is_complete(root: Path | str, videos: int, seed: int) -> bool:
    """True when ``root`` already holds a complete benchmark of ``videos`` videos made with ``seed``."""
    try:
        meta = json.loads((Path(root) / "synth.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return bool(meta.get("complete")) and meta["config"].get("videos") == videos and meta["config"].get("seed") == seed


def read_clip_kinds(root: Path | str) -> dict[str, list[str]]:
    """``synth_clips.csv`` as {video relative path: [kind of clip 0, clip 1, ...]}."""
    out: dict[str, list[str]] = {}
    with open(Path(root) / "synth_clips.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            kinds = out.setdefault(row["video"], [])
            assert int(row["clip"]) == len(kinds), "synth_clips.csv rows out of order"
            kinds.append(row["kind"])
    return out
