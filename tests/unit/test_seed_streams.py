"""Which seeds give the same random streams: ``seed_state_key`` against numpy's own SeedSequence, and
``shared_video_stream`` (whether two generated benchmarks share a per-video stream) against brute force."""

from __future__ import annotations

import itertools
import random

import numpy as np

from condi_pipe.video.synth.pretraining_corpus import PRETRAIN_SEED, PRETRAIN_VIDEOS, pretraining_corpus_overlap
from condi_pipe.video.synth.random_streams import (
    VIDEO_STREAMS,
    seed_state_key,
    shared_video_stream,
    video_rng,
    video_stream_key,
)

W = 2**32


def _numpy_state(entropy) -> tuple[int, ...]:
    """What numpy makes of ``entropy``: the SeedSequence pool and the generator's first draws."""
    pool = tuple(int(w) for w in np.random.SeedSequence(entropy).pool)
    draws = tuple(int(v) for v in np.random.default_rng(entropy).integers(0, 2**63, size=4))
    return pool, draws


def _entries_of(words: list[int], rng: random.Random) -> list[int]:
    """``words`` written as a random list of ints, each one a run of words (a run ending in a zero word cannot be one
    int: numpy writes an int without high zero words, so such runs are split)."""
    entries, run = [], []
    for word in words:
        run.append(word)
        if word != 0 and rng.random() < 0.5:
            entries.append(sum(w * W**n for n, w in enumerate(run)))
            run = []
    entries += run  # the rest one word each (a zero word is the int 0)
    return entries


def _entropy_lists() -> list[list[int]]:
    """Families of entropy lists that numpy may or may not seed alike: the same words split into ints differently,
    with zero words appended (equal up to 4 words, different beyond), plus the cases the guard is about."""
    rng = random.Random(20240607)
    values = [0, 1, 2, 3, 5, W - 1, PRETRAIN_SEED]
    out: list[list[int]] = []
    for _ in range(150):
        words = [rng.choice(values) if rng.random() < 0.7 else rng.randrange(W) for _ in range(rng.randrange(0, 7))]
        for zeros in range(3):
            out.append(_entries_of(words + [0] * zeros, rng))
            out.append(_entries_of(words + [0] * zeros, rng))
    for j in (1, 2, 2999, 3000):
        out += [[PRETRAIN_SEED + j * W, 0, 0], [PRETRAIN_SEED, j, 0], [PRETRAIN_SEED, j], [PRETRAIN_SEED + j * W]]
    # ints of 3 words, and a 5-word array against its own prefix
    out += [[5 + 3 * W**2], [5, 0, 3], [5, 0, 3, 0], [2**64 + 5, 1, 0], [2**64 + 5, 1], [5, 0, 1, 1, 0], [5, 0, 1, 1]]
    out += [[], [0], [0, 0, 0, 0], [0, 0, 0, 0, 0]]
    return out


def test_the_key_is_equal_exactly_when_numpy_seeds_the_same_generator():
    lists = _entropy_lists()
    keys = [seed_state_key(e) for e in lists]
    states = [_numpy_state(e) for e in lists]
    equal_pairs = 0
    for a, b in itertools.combinations(range(len(lists)), 2):
        same_key = keys[a] == keys[b]
        assert same_key == (states[a] == states[b]), (lists[a], lists[b])
        equal_pairs += same_key and lists[a] != lists[b]
    assert equal_pairs > 200  # the families really hold different lists numpy seeds alike
    # the cases that make the guard necessary, spelled out
    for j in (1, 2999):
        assert seed_state_key([PRETRAIN_SEED + j * W, 0, 0]) == seed_state_key([PRETRAIN_SEED, j, 0])
    assert seed_state_key([5 + 3 * W**2, 7]) == seed_state_key([5, 0, 3, 7])  # an int of 3 words
    assert seed_state_key([1, 2]) == seed_state_key([1, 2, 0, 0]) != seed_state_key([1, 2, 0, 0, 0])
    assert seed_state_key([2**64 + 5, 1, 0]) != seed_state_key([2**64 + 5, 1])  # beyond 4 words, length counts
    assert seed_state_key(7) == seed_state_key([7])


def _benchmark_states(seed: int, videos: int) -> dict[tuple, tuple[int, int]]:
    """numpy's pool of every stream of every video -> (video, stream)."""
    return {tuple(int(w) for w in np.random.SeedSequence([seed, i, k]).pool): (i, k)
            for i in range(videos) for k in VIDEO_STREAMS}


def test_shared_video_stream_agrees_with_brute_force_over_numpy_states():
    x, y = 123_457, 6
    seeds = [0, 1, 2, x, x + W, x + y * W, x + (y + 1) * W, x + y * W + 2 * W**2, x + 2 * W**2, W, 2 * W, W**2, y,
             y * W, x + W**2 + W**3]
    found = 0
    for (a, b), (na, nb) in itertools.product(itertools.combinations_with_replacement(seeds, 2),
                                              [(1, 1), (3, 9), (7, 7), (8, 2)]):
        states_a, states_b = _benchmark_states(a, na), _benchmark_states(b, nb)
        expected = set(states_a) & set(states_b)
        shared = shared_video_stream(a, na, b, nb)
        assert (shared is not None) == bool(expected), (a, na, b, nb)
        if shared is not None:
            found += 1
            ia, ka, ib, kb = shared
            assert ia < na and ib < nb and video_stream_key(a, ia, ka) == video_stream_key(b, ib, kb)
            assert _numpy_state([a, ia, ka]) == _numpy_state([b, ib, kb])
            assert np.array_equal(video_rng(a, ia, ka).random(8), video_rng(b, ib, kb).random(8))
    assert found > 20


def test_video_counts_decide_at_the_edge():
    # [5 + 7 * 2**32, 0, 0] is [5, 7, 0, 0]: video 7 of seed 5, so seed 5 needs 8 videos to share it
    assert shared_video_stream(5, 7, 5 + 7 * W, 1) is None
    assert shared_video_stream(5, 8, 5 + 7 * W, 1) == (7, 0, 0, 0)
    assert shared_video_stream(5 + 7 * W, 1, 5, 8) == (0, 0, 7, 0)  # either order
    # indices of several words: a benchmark too big to enumerate is only taken apart, never listed
    small, huge = 11 + 3 * W + 9 * W**2, 11 + 3 * W
    assert shared_video_stream(small, 4, huge, 2**40) == (1, 0, 9 + W, 0)
    assert shared_video_stream(small, 4, huge, 9 + W) is None
    assert seed_state_key([small, 1, 0]) == seed_state_key([huge, 9 + W, 0])


def test_the_pretraining_corpus_overlaps_exactly_the_seeds_the_demo_help_names():
    assert shared_video_stream(PRETRAIN_SEED, 20, PRETRAIN_SEED, PRETRAIN_VIDEOS) == (0, 0, 0, 0)
    for k in (1, 2, PRETRAIN_VIDEOS - 1):
        assert shared_video_stream(PRETRAIN_SEED + k * W, 1, PRETRAIN_SEED, PRETRAIN_VIDEOS) == (0, 0, k, 0)
        assert "video 0's plan stream is corpus video" in pretraining_corpus_overlap(PRETRAIN_SEED + k * W, 1000)
    assert pretraining_corpus_overlap(PRETRAIN_SEED + PRETRAIN_VIDEOS * W, 1000) is None  # the corpus's size edge
    assert shared_video_stream(0, 1000, 1, 1000) is None
    rng = random.Random(5)
    others = [0, 1, PRETRAIN_SEED - 1, PRETRAIN_SEED + 1, W + PRETRAIN_SEED - 1, PRETRAIN_SEED * W,
              2**64 + PRETRAIN_SEED] + [rng.randrange(2**rng.choice((31, 40, 64, 70))) for _ in range(40)]
    for seed in others:
        assert pretraining_corpus_overlap(seed, 1000) is None, seed
