"""Seeded random streams of a video (plan, pixels, texture, split) and the draw helpers every sampler shares."""

from __future__ import annotations

import numpy as np

_STREAM_PLAN, _STREAM_PIXELS, _STREAM_TEXTURE = 0, 1, 2
_SPLIT_STREAM = 1_000_003  # seed stream for the train/test split (never a video index stream)


def video_rng(seed: int, index: int, stream: int = _STREAM_PLAN) -> np.random.Generator:
    """The generator of one video's random stream."""
    return np.random.default_rng([seed, index, stream])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _rgb(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0.0, 255.0, size=3))
