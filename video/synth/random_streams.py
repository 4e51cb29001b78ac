"""Seeded random streams of a video (plan, pixels, texture, split) and the draw helpers every sampler shares."""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

_STREAM_PLAN, _STREAM_PIXELS, _STREAM_TEXTURE = 0, 1, 2
_SPLIT_STREAM = 1_000_003  # seed stream for the train/test split (never a video index stream)
VIDEO_STREAMS = {_STREAM_PLAN: "plan", _STREAM_PIXELS: "pixels", _STREAM_TEXTURE: "texture"}

_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1
_POOL_WORDS = 4  # numpy SeedSequence's default pool_size


def video_rng(seed: int, index: int, stream: int = _STREAM_PLAN) -> np.random.Generator:
    """The generator of one video's random stream."""
    return np.random.default_rng([seed, index, stream])


def _words(value: int) -> tuple[int, ...]:
    """The uint32 words numpy's SeedSequence makes of a non-negative int: little-endian, ``(0,)`` for 0."""
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"a seed entry must be a non-negative integer, got {value}")
    words = [value & _WORD_MASK]
    while value := value >> _WORD_BITS:
        words.append(value & _WORD_MASK)
    return tuple(words)


def seed_state_key(entropy: int | Sequence[int]) -> tuple[int, ...]:
    """The identity of ``np.random.SeedSequence(entropy)``'s state (so of ``default_rng(entropy)``): equal keys,
    equal generators.

    SeedSequence concatenates the uint32 words of each entry (little-endian; 0 is one zero word) and hashes the
    first 4 words into its pool, missing ones as zeros; every further word is then mixed into the whole pool. So a
    word array of up to 4 words is the same state as its zero padding to 4 words (the key), while a longer one
    counts word for word, length included (a trailing zero word is one more mixing round). Each hashing step
    is invertible, so keys of up to 4 words are equal exactly when the states are; longer ones can only meet by a
    128-bit hash collision."""
    entries = [entropy] if isinstance(entropy, (int, np.integer)) else entropy
    words = tuple(word for entry in entries for word in _words(entry))
    return words + (0,) * (_POOL_WORDS - len(words)) if len(words) <= _POOL_WORDS else words


def video_stream_key(seed: int, index: int, stream: int) -> tuple[int, ...]:
    """The :func:`seed_state_key` of :func:`video_rng` ``(seed, index, stream)``."""
    return seed_state_key([seed, index, stream])


def _video_stream_with_key(key: tuple[int, ...], seed: int, videos: int) -> tuple[int, int] | None:
    """The (video index, stream) of benchmark ``(seed, videos)`` whose key is ``key``, or None: the key is taken
    apart into seed words, index words and the stream word rather than compared with every video's."""
    seed_words = _words(seed)
    if len(key) > _POOL_WORDS:
        arrays = [key]  # a long key is its word array
    else:  # a padded key is its word array cut after any of its trailing zeros
        arrays = [key[:n] for n in range(len(seed_words) + 2, _POOL_WORDS + 1) if not any(key[n:])]
    for words in arrays:
        index_words, stream = words[len(seed_words):-1], words[-1]
        # index_words must be how numpy writes some int: no trailing zero word unless it is 0 itself
        if (words[:len(seed_words)] == seed_words and stream in VIDEO_STREAMS and index_words
                and (len(index_words) == 1 or index_words[-1] != 0)):
            index = sum(word << (_WORD_BITS * n) for n, word in enumerate(index_words))
            if index < videos:
                return index, stream
    return None


def shared_video_stream(seed_a: int, videos_a: int, seed_b: int, videos_b: int) -> tuple[int, int, int, int] | None:
    """A per-video random stream that the benchmarks ``(seed_a, videos_a)`` and ``(seed_b, videos_b)`` both have
    (any stream of any video of one is the same generator as any stream of any video of the other), as
    (video of a, its stream, video of b, its stream); None when they share none.

    Different seeds can share streams: with ``s < 2**32``, ``[s + j * 2**32, i, k]`` is the word array
    ``[s, j, i, k]``, the same state as ``[s, j, i]`` when ``k`` is 0. Each key of the smaller benchmark (3 per
    video) is taken apart against the other's seed, so the cost is that benchmark's size, never the product of both."""
    if videos_a > videos_b:
        found = shared_video_stream(seed_b, videos_b, seed_a, videos_a)
        return None if found is None else (found[2], found[3], found[0], found[1])
    for index in range(videos_a):
        for stream in VIDEO_STREAMS:
            match = _video_stream_with_key(video_stream_key(seed_a, index, stream), seed_b, videos_b)
            if match is not None:
                return index, stream, *match
    return None


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _rgb(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0.0, 255.0, size=3))
