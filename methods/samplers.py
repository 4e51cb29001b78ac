"""Clip selection and video prediction on cached per-clip outputs, vectorised over videos (NumPy only, no model).

A video has N clips; a selection picks K of them for the teacher, and the video prediction is the argmax of the
mean teacher softmax over the chosen clips (docs/method.md, "Baseline samplers"). Any K >= N selects all N clips;
K <= 0 is an error.

Every clip of every video sits in flat arrays with CSR-style ``offsets`` (video v owns clips
``offsets[v]:offsets[v + 1]``). :func:`rank_within_videos` ranks all clips of all videos with one ``np.lexsort``;
a selection for any K is then the boolean mask ``ranks < K``, which :func:`predict_videos` reduces per video.
There is no Python loop per video, so a million clips take seconds; loop over K values only. The per-video
selectors of :mod:`condi_pipe.methods.clip_selectors` are the readable reference these functions are tested
against.

Ranking rule everywhere: higher score first, ties broken by the lower clip index. Scores must not be NaN.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

from .video_prediction import segment_means, video_predictions

__all__ = [
    "DivisionBatchPrediction",
    "check_k",
    "top_k_indices",
    "equidistant_indices",
    "video_ids",
    "rank_within_videos",
    "select_ranked_batch",
    "equidistant_mask",
    "hashed_uniform_scores",
    "predict_videos",
    "video_accuracy",
    "ranked_predictions_for_ks",
    "predict_videos_division",
]


# ---------------------------------------------------------------------------------------------- inputs


def check_k(k: int) -> int:
    """Validate a clip budget: a positive integer (K >= N is fine and means all clips)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _check_offsets(offsets: np.ndarray, num_clips: int) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 2 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError("offsets must be a 1-D integer array of length V + 1 >= 2")
    if offsets[0] != 0 or offsets[-1] != num_clips or (np.diff(offsets) <= 0).any():
        raise ValueError(f"offsets must start at 0, end at {num_clips} and give every video >= 1 clip")
    return offsets.astype(np.int64, copy=False)


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


# ------------------------------------------------------------------------------------- per-video indices


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index; all of them when k >= N.

    >>> top_k_indices(np.array([0.2, 0.9, 0.5, 0.9]), 2)
    array([1, 3])
    >>> top_k_indices(np.array([0.2, 0.9]), 5)
    array([1, 0])
    """
    k = check_k(k)
    # a stable sort of the negated scores keeps tied clips in index order
    return np.argsort(-_finite_scores(scores), kind="stable")[:k]


def equidistant_indices(num_clips: int, k: int) -> np.ndarray:
    """Centres of K equal segments: floor((2i + 1) N / (2K)) for i < K; all clips when K >= N.

    Consecutive centres are N/K > 1 apart when K < N, so they are distinct.

    >>> equidistant_indices(10, 3)
    array([1, 5, 8])
    >>> equidistant_indices(4, 1)
    array([2])
    >>> equidistant_indices(3, 7)
    array([0, 1, 2])
    """
    k = check_k(k)
    if num_clips <= 0:
        raise ValueError("a video has at least one clip")
    if k >= num_clips:
        return np.arange(num_clips)
    i = np.arange(k)
    return ((2 * i + 1) * num_clips) // (2 * k)  # integer arithmetic: no float rounding at segment borders


# ------------------------------------------------------------------------------------ vectorised ranking


def video_ids(offsets: np.ndarray) -> np.ndarray:
    """The video of every flat clip, (M,).

    >>> video_ids(np.array([0, 2, 5]))
    array([0, 0, 1, 1, 1])
    """
    offsets = np.asarray(offsets)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def rank_within_videos(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rank of every clip inside its video (0 = highest score; ties go to the lower clip index), (M,).

    One ``np.lexsort`` on (video, -score, clip index); selecting the top K of every video is then ``ranks < K``,
    which also selects all clips of videos with N <= K.

    >>> rank_within_videos(np.array([0.1, 0.7, 0.7, 0.3, 0.9]), np.array([0, 3, 5]))
    array([2, 0, 1, 1, 0])
    """
    scores = _finite_scores(scores)
    offsets = _check_offsets(offsets, len(scores))
    owner = video_ids(offsets)
    flat_index = np.arange(len(scores))
    order = np.lexsort((flat_index, -scores, owner))  # last key is the primary one
    ranks = np.empty(len(scores), dtype=np.int64)
    # `order` lists video 0's clips first, then video 1's, ...: a clip's rank is its position minus its video's start
    ranks[order] = flat_index - offsets[owner[order]]
    return ranks


def select_ranked_batch(scores: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask (M,) of the top-k clips of every video by ``scores`` (see :func:`rank_within_videos`)."""
    return rank_within_videos(scores, offsets) < check_k(k)


def equidistant_mask(offsets: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask (M,) of :func:`equidistant_indices` applied to every video at once.

    >>> equidistant_mask(np.array([0, 10, 12]), 3).nonzero()[0]
    array([ 1,  5,  8, 10, 11])
    """
    k = check_k(k)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    mask = np.repeat(counts <= k, counts)  # short videos: every clip
    long_videos = np.flatnonzero(counts > k)
    if long_videos.size:
        i = np.arange(k)[None, :]
        positions = ((2 * i + 1) * counts[long_videos, None]) // (2 * k)
        mask[(offsets[long_videos, None] + positions).ravel()] = True
    return mask


_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a cheap, well-mixed integer hash."""
    x = x + np.uint64(_GOLDEN_GAMMA)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_uniform_scores(seed: int, video_index: np.ndarray, clip_index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, video index, clip index).

    Counter-based rather than a stateful generator: the random selection of a video is the same whether it is
    drawn alone or with a million others, in any order, and the K-clip choice is nested in the (K+1)-clip one.
    """
    if seed < 0:
        raise ValueError("seed must be >= 0")
    video_index = np.asarray(video_index).astype(np.uint64)
    clip_index = np.asarray(clip_index).astype(np.uint64)
    seed_key = _splitmix64(np.array([seed], dtype=np.uint64))
    key = _splitmix64(_splitmix64(seed_key + video_index) + clip_index)
    return (key >> np.uint64(11)).astype(np.float64) * 2.0**-53  # top 53 bits -> a double in [0, 1)


# --------------------------------------------------------------------------------------------- selectors


# ------------------------------------------------------------------------------------- video predictions


def predict_videos(teacher_probs: np.ndarray, offsets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Vectorised :func:`predict_video` for every video: (V,) classes from a boolean clip mask (M,).

    Only the chosen rows are gathered (V x K x C values), so memory follows K, not M. It is
    :func:`~condi_pipe.methods.video_prediction.video_predictions` with a mask, after the sampler's checks.
    """
    return video_predictions(teacher_probs, _check_offsets(offsets, teacher_probs.shape[0]), mask)


def video_accuracy(teacher_probs: np.ndarray, labels: np.ndarray, offsets: np.ndarray, mask: np.ndarray) -> float:
    """Top-1 video accuracy of the clips chosen by ``mask`` (see :func:`predict_videos`)."""
    return float((predict_videos(teacher_probs, offsets, mask) == np.asarray(labels)).mean())


def ranked_predictions_for_ks(
    teacher_probs: np.ndarray, offsets: np.ndarray, ranks: np.ndarray, ks: Iterable[int]
) -> dict[int, np.ndarray]:
    """Video predictions (V,) for every K in ``ks`` from within-video ``ranks`` (:func:`rank_within_videos`).

    Incremental: the running per-video sum of the chosen teacher vectors grows by the clips of rank K - 1 (at
    most one per video) as K increases, so every row is read at most once for all K together, instead of once
    per K as with :func:`predict_videos`. Sums run in rank order rather than clip order, so the two can differ
    only where two classes tie to the last floating-point bit.
    """
    offsets = _check_offsets(offsets, teacher_probs.shape[0])
    ranks = np.asarray(ranks, dtype=np.int64)
    wanted = sorted({check_k(k) for k in ks})
    owner = video_ids(offsets)
    counts = np.diff(offsets)
    by_rank = np.argsort(ranks, kind="stable")  # clips grouped by rank: rank 0 of every video, then rank 1, ...
    rank_starts = np.concatenate([[0], np.cumsum(np.bincount(ranks))])
    sums = np.zeros((len(counts), teacher_probs.shape[1]), dtype=np.float64)
    predictions = {}
    for rank in range(wanted[-1]):
        if rank + 1 < len(rank_starts):
            clips = by_rank[rank_starts[rank]:rank_starts[rank + 1]]
            sums[owner[clips]] += teacher_probs[clips]  # one clip per video: no repeated index in the add
        if rank + 1 in wanted:
            predictions[rank + 1] = (sums / np.minimum(counts, rank + 1)[:, None]).argmax(axis=1)
    return predictions


class DivisionBatchPrediction(NamedTuple):
    predictions: np.ndarray  # (V,)
    num_teacher_clips: np.ndarray  # (V,)
    num_student_clips: np.ndarray  # (V,)


def _check_division_budget(k: int, ks: int) -> tuple[int, int]:
    k = check_k(k)
    if isinstance(ks, (bool, np.bool_)) or not isinstance(ks, (int, np.integer)) or not 0 <= ks <= k:
        raise ValueError(f"ks must be an integer in [0, k={k}], got {ks}")
    return k, int(ks)


def predict_videos_division(
    teacher_probs: np.ndarray,
    student_probs: np.ndarray,
    offsets: np.ndarray,
    confidence_ranks: np.ndarray,
    entropy_ranks: np.ndarray,
    k: int,
    ks: int,
) -> DivisionBatchPrediction:
    """Vectorised :func:`predict_video_division` for every video.

    ``confidence_ranks = rank_within_videos(z_scores, offsets)`` and
    ``entropy_ranks = LowestEntropySelector().ranks(flat)`` (or ``rank_within_videos(-entropy, offsets)``) are
    computed once and reused for every (K, K_s).
    """
    k, ks = _check_division_budget(k, ks)
    offsets = _check_offsets(offsets, teacher_probs.shape[0])
    in_teacher = np.asarray(confidence_ranks) < k - ks
    in_student = np.asarray(entropy_ranks) < ks
    contributions = in_teacher.astype(np.int64) + in_student
    chosen = np.flatnonzero(contributions)
    # teacher vector, student vector, or the mean of both when a clip is in both lists
    vectors = (
        teacher_probs[chosen] * in_teacher[chosen, None] + student_probs[chosen] * in_student[chosen, None]
    ) / contributions[chosen, None].astype(teacher_probs.dtype)
    counts = np.add.reduceat((contributions > 0).astype(np.int64), offsets[:-1])
    predictions = segment_means(vectors, counts).argmax(axis=1)
    num_teacher = np.add.reduceat(in_teacher.astype(np.int64), offsets[:-1])
    num_student = np.add.reduceat(in_student.astype(np.int64), offsets[:-1])
    return DivisionBatchPrediction(predictions, num_teacher, num_student)
