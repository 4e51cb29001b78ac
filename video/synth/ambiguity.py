"""Clip kinds: drawing a video's kinds and the parameters of each ambiguous clip (pan, distractor, occlusion, noise)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The kind names (AMBIGUOUS_KINDS, MOVING_KINDS, CLIP_KINDS) and their parameter ranges are SynthConfig defaults,
# so they live in config.py with the other design constants.
from condi_pipe.video.synth.config import CLASSES, SynthConfig
from condi_pipe.video.synth.motions import Motion, _sample_motion, _sample_size
from condi_pipe.video.synth.random_streams import _rgb, _uniform
from condi_pipe.video.synth.scene import Background, Look, _sample_look


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


def sample_clip_kinds(rng: np.random.Generator, n_clips: int, config: SynthConfig = SynthConfig()) -> tuple[str, ...]:
    """Independent clip kinds, redrawn until at least ``min_informative_clips`` are informative."""
    kinds = ("informative",) + tuple(config.ambiguous_kinds)
    probs = np.array([config.p_informative] + [config.ambiguous_probability] * len(config.ambiguous_kinds))
    probs /= probs.sum()
    while True:
        draw = rng.choice(len(kinds), size=n_clips, p=probs)
        if int(np.sum(draw == 0)) >= config.min_informative_clips:
            return tuple(kinds[i] for i in draw)


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
