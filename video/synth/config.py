"""Fixed design constants of the benchmark and SynthConfig, the frozen record of everything that decides its bytes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
#: Most clips per video (inclusive) of the ``legacy`` length profile: 192 frames, 7.68 s.
MAX_CLIPS = 12

#: Share of each class's videos (whole groups) in testlist01.txt; the rest is trainlist01.txt.
TEST_FRACTION = 0.3
#: Share of each class's train groups written (those with the lowest group numbers); test groups are always all
#: written. Below 1 it makes a cheaper benchmark with the same test split (``condi-pipe demo`` uses it).
TRAIN_SHARE = 1.0

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


@dataclass(frozen=True)
class LengthProfile:
    """How many clips a video gets. ``legacy``: uniform over ``min_clips..max_clips``. The others draw a duration
    in seconds from a log-normal law with the given mean and log-space sigma and round it to whole clips, clamped to
    ``min_clips..max_clips`` (the cap bounds compute)."""

    name: str
    min_clips: int
    max_clips: int
    mean_seconds: float | None = None  # None: the uniform (legacy) draw
    sigma: float | None = None
    about: str = ""


#: The length profiles (``condi-pipe synth --length-profile``). UCF-101's published durations (Soomro et al. 2012):
#: mean 7.21 s, shortest 1.06 s, longest 71.04 s over 13,320 clips. A log-normal with that mean and sigma 0.66
#: puts the expected largest of 13,320 draws (z = 3.79) at 70.7 s, the published maximum; the tail is capped at 47
#: clips (30.08 s, the most the issue allows cutting it to) and the head at 2 clips (1.28 s). Kinetics' clips are
#: trimmed to 10 s, a few shorter: mean 10 s, sigma 0.1.
LENGTH_PROFILES: dict[str, LengthProfile] = {
    "legacy": LengthProfile("legacy", MIN_CLIPS, MAX_CLIPS,
                            about="2-12 clips uniformly (1.28-7.68 s, 6.9 on average); the shipped teacher's corpus"),
    "ucf101": LengthProfile("ucf101", MIN_CLIPS, 47, mean_seconds=7.21, sigma=0.66,
                            about="UCF-101's durations: log-normal, mean 7.21 s (~11.3 clips), 2-47 clips"),
    "kinetics": LengthProfile("kinetics", MIN_CLIPS, 47, mean_seconds=10.0, sigma=0.1,
                              about="Kinetics-like ~10 s videos: log-normal, mean 10 s (~15.6 clips)"),
}
#: What ``SynthConfig()`` and ``generate_benchmark`` make when no profile is named (stores made before profiles
#: existed are ``legacy``); ``condi-pipe synth`` and ``condi-pipe demo`` default to :data:`DEFAULT_LENGTH_PROFILE`.
LEGACY_LENGTH_PROFILE = "legacy"
DEFAULT_LENGTH_PROFILE = "ucf101"


def length_profile(name: str) -> LengthProfile:
    try:
        return LENGTH_PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown length profile {name!r}; choose one of: {', '.join(LENGTH_PROFILES)}") from None


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the benchmark's bytes. Only ``videos``, ``seed``, the length profile and the
    train share are meant to change (:meth:`with_profile` sets the profile's fields); the other fields are the
    fixed design (module constants of the same upper-case name)."""

    videos: int = DEFAULT_VIDEOS
    seed: int = DEFAULT_SEED
    length_profile: str = LEGACY_LENGTH_PROFILE
    duration_mean_s: float | None = None  # the profile's log-normal law (None: legacy's uniform clip count)
    duration_sigma: float | None = None
    train_share: float = TRAIN_SHARE
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
        profile = length_profile(self.length_profile)
        if (self.duration_mean_s, self.duration_sigma, self.min_clips, self.max_clips) != (
                profile.mean_seconds, profile.sigma, profile.min_clips, profile.max_clips):
            raise ValueError(f"the length fields differ from profile {self.length_profile!r}: "
                             "build the config with SynthConfig.with_profile")
        if not 0.0 < self.train_share <= 1.0:
            raise ValueError(f"train_share must be in (0, 1], got {self.train_share}")
        if self.oscillate_period[1] > 2 * (self.clip_frames - 1):
            raise ValueError("oscillate_period too long: a clip might not contain a direction reversal")

    @classmethod
    def with_profile(cls, profile: str = LEGACY_LENGTH_PROFILE, **fields) -> "SynthConfig":
        """The config of length profile ``profile`` (its clip bounds and duration law) with ``fields`` set."""
        found = length_profile(profile)
        return cls(length_profile=found.name, duration_mean_s=found.mean_seconds, duration_sigma=found.sigma,
                   min_clips=found.min_clips, max_clips=found.max_clips, **fields)

    @classmethod
    def from_json(cls, data: dict) -> "SynthConfig":
        """A config read back from ``synth.json`` (one written before length profiles is ``legacy``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**values)

    @property
    def ambiguous_probability(self) -> float:
        """Probability of each single ambiguous kind."""
        return (1.0 - self.p_informative) / len(self.ambiguous_kinds)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
