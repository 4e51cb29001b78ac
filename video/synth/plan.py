"""Video plans: every random choice of one video (no pixels), its file name, and the seeded train/test split."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from condi_pipe.video.synth.ambiguity import ClipPlan, _sample_clip, sample_clip_kinds
from condi_pipe.video.synth.config import CLASSES, SynthConfig
from condi_pipe.video.synth.motions import Motion, _sample_motion, _sample_size
from condi_pipe.video.synth.random_streams import _SPLIT_STREAM, _STREAM_PLAN, _uniform, video_rng
from condi_pipe.video.synth.scene import Background, Look, _sample_background, _sample_look


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


def plan_video(index: int, config: SynthConfig = SynthConfig()) -> VideoPlan:
    """All random choices of video ``index`` (0-based), from its own generator."""
    rng = video_rng(config.seed, index, _STREAM_PLAN)
    label = index % len(CLASSES)
    group = index // len(CLASSES) + 1
    n_clips = draw_clip_count(rng, config)
    kinds = sample_clip_kinds(rng, n_clips, config)
    background = _sample_background(rng, config)
    radius, ratio = _sample_size(rng, label, config)
    look = _sample_look(rng, config, background, radius)
    motion = _sample_motion(rng, label, look, ratio, config, in_clip=False)
    gain = _uniform(rng, config.brightness_gain)
    sensor = _uniform(rng, config.sensor_noise_std)
    clips = tuple(_sample_clip(rng, kind, label, background, config) for kind in kinds)
    return VideoPlan(index, label, group, look, motion, background, gain, sensor, clips)


def draw_clip_count(rng: np.random.Generator, config: SynthConfig) -> int:
    """A video's number of clips under the config's length profile (one draw from the plan stream)."""
    if config.duration_mean_s is None:  # legacy: the same single draw as before profiles existed
        return int(rng.integers(config.min_clips, config.max_clips + 1))
    sigma = float(config.duration_sigma)
    mu = math.log(config.duration_mean_s) - sigma * sigma / 2.0  # the log-normal's mean is exp(mu + sigma^2 / 2)
    seconds = float(rng.lognormal(mu, sigma))
    clips = int(round(seconds * config.fps / config.clip_frames))
    return min(max(clips, config.min_clips), config.max_clips)


def written_train_groups(config: SynthConfig, test_groups: dict[int, frozenset[int]]) -> dict[int, frozenset[int]]:
    """Per class, the train groups written: all of them, or with ``train_share < 1`` the ``ceil(share * n)`` with
    the lowest group numbers (groups are exchangeable, so the lowest numbers are as good as a random draw and need
    no stream of their own)."""
    out: dict[int, frozenset[int]] = {}
    for cls in range(len(CLASSES)):
        groups = [g for g in range(1, len(range(cls, config.videos, len(CLASSES))) + 1) if g not in test_groups[cls]]
        keep = math.ceil(config.train_share * len(groups) - 1e-9)
        out[cls] = frozenset(groups[:keep])
    return out


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
