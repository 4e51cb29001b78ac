"""Per-video clip selectors: the readable reference of the vectorised :mod:`condi_pipe.methods.samplers`.

A :class:`ClipSelector` maps one :class:`VideoClips` (a video's cached per-clip outputs) to the indices of the
clips it sends to the teacher; :func:`predict_video` / :func:`predict_video_division` give the video's class.
:class:`FlatVideos` concatenates many videos; :func:`accuracy_for_ks` evaluates a selector on all of them at once
through the vectorised functions.

>>> video = VideoClips(np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]]), label=0,
...                    confidence=np.array([0.2, -1.0, 3.0]))
>>> RankedByScoreSelector().select(video, 2)
array([2, 0])
>>> predict_video(video.teacher_probs, np.array([2, 0]))
0
"""

from __future__ import annotations

import abc
from typing import ClassVar, Iterable, NamedTuple, Optional, Sequence

import numpy as np

from .metrics import softmax_entropy
from .samplers import (
    _check_division_budget,
    _check_offsets,
    check_k,
    equidistant_indices,
    equidistant_mask,
    hashed_uniform_scores,
    rank_within_videos,
    ranked_predictions_for_ks,
    top_k_indices,
    video_accuracy,
    video_ids,
)


class VideoClips(NamedTuple):
    """Cached per-clip outputs of one video with N clips and C classes.

    ``confidence`` is the score a ranked selector uses: z~ (ConDi-SR, BCE-Conf) or c (ST-Conf). Storing the
    *logit* is better than its sigmoid: the ranking is the same, but sigmoid saturates to exactly 1.0 in float32
    for logits above ~17, which would turn distinct scores into ties. ``index`` is the video's position in its
    dataset; only :class:`RandomSelector` uses it, so that its draw does not depend on the order of calls.
    """

    teacher_probs: np.ndarray  # (N, C) teacher softmax per clip
    label: int  # the video's true class
    student_probs: Optional[np.ndarray] = None  # (N, C) student softmax per clip
    confidence: Optional[np.ndarray] = None  # (N,) confidence score per clip
    index: int = 0

    @property
    def num_clips(self) -> int:
        return int(self.teacher_probs.shape[0])


class FlatVideos(NamedTuple):
    """Per-clip outputs of V videos concatenated: M clips in total, video v owns ``offsets[v]:offsets[v + 1]``.

    Use ``flat._replace(confidence=other_scores)`` to rank the same clips by another method's scores.
    ``indices`` are the videos' dataset positions (``arange(V)`` when None), for :class:`RandomSelector`.
    """

    teacher_probs: np.ndarray  # (M, C)
    labels: np.ndarray  # (V,) int
    offsets: np.ndarray  # (V + 1,) int, offsets[0] == 0, offsets[-1] == M, strictly increasing
    student_probs: Optional[np.ndarray] = None  # (M, C)
    confidence: Optional[np.ndarray] = None  # (M,)
    indices: Optional[np.ndarray] = None  # (V,) int

    @property
    def num_videos(self) -> int:
        return int(len(self.offsets) - 1)

    @property
    def num_clips(self) -> int:
        return int(self.offsets[-1])

    @property
    def clip_counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def video_indices(self) -> np.ndarray:
        return np.arange(self.num_videos) if self.indices is None else np.asarray(self.indices)

    def video(self, v: int) -> VideoClips:
        """The per-video view of video v (slices, no copies)."""
        start, stop = int(self.offsets[v]), int(self.offsets[v + 1])
        return VideoClips(
            teacher_probs=self.teacher_probs[start:stop],
            label=int(self.labels[v]),
            student_probs=None if self.student_probs is None else self.student_probs[start:stop],
            confidence=None if self.confidence is None else self.confidence[start:stop],
            index=int(v if self.indices is None else self.indices[v]),
        )

    @classmethod
    def from_videos(cls, videos: Sequence[VideoClips]) -> "FlatVideos":
        """Concatenate per-video records (all must have the same optional fields set)."""
        if not videos:
            raise ValueError("need at least one video")
        counts = [video.num_clips for video in videos]

        def concatenated(field: str) -> Optional[np.ndarray]:
            present = [getattr(video, field) is not None for video in videos]
            if not any(present):
                return None
            if not all(present):
                raise ValueError(f"{field} is set for some videos but not all")
            return np.concatenate([getattr(video, field) for video in videos])

        flat = cls(
            teacher_probs=np.concatenate([video.teacher_probs for video in videos]),
            labels=np.array([video.label for video in videos], dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            student_probs=concatenated("student_probs"),
            confidence=concatenated("confidence"),
            indices=np.array([video.index for video in videos], dtype=np.int64),
        )
        _check_flat(flat)
        return flat


class ClipSelector(abc.ABC):
    """Chooses which clips of a video go to the teacher (pytorchvideo-style clip sampler on cached outputs)."""

    name: ClassVar[str] = "selector"

    @abc.abstractmethod
    def select(self, video: VideoClips, k: int) -> np.ndarray:
        """Indices of the chosen clips of ``video``: at most k, all N when k >= N.

        Ranked selectors return them best first; Dense and Equidistant in clip order.
        """

    def select_mask(self, videos: FlatVideos, k: int) -> np.ndarray:
        """Boolean mask (M,) of the clips ``select`` would choose in every video.

        This default loops over videos; the selectors below override it with a vectorised version.
        """
        k = check_k(k)
        _check_flat(videos)
        mask = np.zeros(videos.num_clips, dtype=bool)
        for v in range(videos.num_videos):
            mask[videos.offsets[v] + self.select(videos.video(v), k)] = True
        return mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DenseSelector(ClipSelector):
    """Dense ("All"): the teacher sees every clip, whatever k is."""

    name = "dense"

    def select(self, video: VideoClips, k: Optional[int] = None) -> np.ndarray:
        if k is not None:
            check_k(k)
        _check_video(video)
        return np.arange(video.num_clips)

    def select_mask(self, videos: FlatVideos, k: Optional[int] = None) -> np.ndarray:
        if k is not None:
            check_k(k)
        _check_flat(videos)
        return np.ones(videos.num_clips, dtype=bool)


class EquidistantSelector(ClipSelector):
    """K clips at the centres of K equal segments (:func:`equidistant_indices`).

    >>> probs = np.full((10, 2), 0.5)
    >>> EquidistantSelector().select(VideoClips(probs, label=0), 3)
    array([1, 5, 8])
    """

    name = "equidistant"

    def select(self, video: VideoClips, k: int) -> np.ndarray:
        _check_video(video)
        return equidistant_indices(video.num_clips, k)

    def select_mask(self, videos: FlatVideos, k: int) -> np.ndarray:
        _check_flat(videos)
        return equidistant_mask(videos.offsets, k)


class ScoreRankingSelector(ClipSelector):
    """Top-k clips by a per-clip score (higher first, ties to the lower clip index).

    Subclasses define the score per video (``clip_scores``) and for all flat clips at once (``flat_scores``);
    the two must agree clip for clip, which the tests check.
    """

    @abc.abstractmethod
    def clip_scores(self, video: VideoClips) -> np.ndarray:
        """(N,) scores of one video's clips."""

    @abc.abstractmethod
    def flat_scores(self, videos: FlatVideos) -> np.ndarray:
        """(M,) scores of all clips of all videos."""

    def select(self, video: VideoClips, k: int) -> np.ndarray:
        _check_video(video)
        return top_k_indices(self.clip_scores(video), k)

    def ranks(self, videos: FlatVideos) -> np.ndarray:
        """Rank of every clip in its video; compute once, then ``ranks < K`` for each K."""
        _check_flat(videos)
        return rank_within_videos(self.flat_scores(videos), videos.offsets)

    def select_mask(self, videos: FlatVideos, k: int) -> np.ndarray:
        return self.ranks(videos) < check_k(k)


class OracleSelector(ScoreRankingSelector):
    """Oracle (cheats with the label): the k clips with the highest teacher probability of the true class.

    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    >>> OracleSelector().select(VideoClips(probs, label=1), 2)
    array([1, 2])
    """

    name = "oracle"

    def clip_scores(self, video: VideoClips) -> np.ndarray:
        return video.teacher_probs[:, video.label]

    def flat_scores(self, videos: FlatVideos) -> np.ndarray:
        true_class = np.asarray(videos.labels)[video_ids(videos.offsets)]
        return videos.teacher_probs[np.arange(videos.num_clips), true_class]


class RandomSelector(ScoreRankingSelector):
    """K distinct clips uniformly at random: the top k of i.i.d. uniform scores keyed by (seed, video, clip).

    Reproducible from ``seed`` and ``VideoClips.index`` alone (see :func:`hashed_uniform_scores`). The paper
    reports the mean over 3 seeds.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        if seed < 0:
            raise ValueError("seed must be >= 0")
        self.seed = int(seed)

    def clip_scores(self, video: VideoClips) -> np.ndarray:
        n = video.num_clips
        return hashed_uniform_scores(self.seed, np.full(n, video.index), np.arange(n))

    def flat_scores(self, videos: FlatVideos) -> np.ndarray:
        owner = video_ids(videos.offsets)
        clip_in_video = np.arange(videos.num_clips) - np.asarray(videos.offsets)[owner]
        return hashed_uniform_scores(self.seed, videos.video_indices()[owner], clip_in_video)

    def __repr__(self) -> str:
        return f"RandomSelector(seed={self.seed})"


class RankedByScoreSelector(ScoreRankingSelector):
    """Top-k clips by ``confidence``: z~ for ConDi-SR (type a) and BCE-Conf, c for ST-Conf.

    >>> probs = np.full((4, 3), 1 / 3)
    >>> RankedByScoreSelector().select(VideoClips(probs, 0, confidence=np.array([0.1, 2.0, -1.0, 2.0])), 3)
    array([1, 3, 0])
    """

    name = "ranked_by_score"

    def clip_scores(self, video: VideoClips) -> np.ndarray:
        if video.confidence is None:
            raise ValueError("RankedByScoreSelector needs VideoClips.confidence")
        return np.asarray(video.confidence)

    def flat_scores(self, videos: FlatVideos) -> np.ndarray:
        if videos.confidence is None:
            raise ValueError("RankedByScoreSelector needs FlatVideos.confidence")
        return np.asarray(videos.confidence)


class LowestEntropySelector(ScoreRankingSelector):
    """ST-Ent: the k clips whose student softmax has the lowest entropy (score = -entropy).

    >>> student = np.array([[0.5, 0.5], [0.99, 0.01], [0.8, 0.2]])
    >>> LowestEntropySelector().select(VideoClips(student, 0, student_probs=student), 2)
    array([1, 2])
    """

    name = "lowest_entropy"

    def clip_scores(self, video: VideoClips) -> np.ndarray:
        if video.student_probs is None:
            raise ValueError("LowestEntropySelector needs VideoClips.student_probs")
        return -_entropy(video.student_probs)

    def flat_scores(self, videos: FlatVideos) -> np.ndarray:
        if videos.student_probs is None:
            raise ValueError("LowestEntropySelector needs FlatVideos.student_probs")
        return -_entropy(videos.student_probs)


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Row entropies in float64 (computed row by row, so a slice gives the same numbers as the whole)."""
    return softmax_entropy(np.asarray(probs, dtype=np.float64), from_logits=False, axis=-1)


def predict_video(teacher_probs: np.ndarray, selected: np.ndarray) -> int:
    """Video class: argmax of the mean teacher softmax over the ``selected`` clips.

    >>> predict_video(np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]]), np.array([0, 2]))
    0
    """
    selected = np.sort(np.asarray(selected, dtype=np.int64))  # index order: same summation order as the batch path
    if selected.size == 0:
        raise ValueError("no clip selected")
    return int(np.asarray(teacher_probs, dtype=np.float64)[selected].mean(axis=0).argmax())


def accuracy_for_ks(selector: ClipSelector, videos: FlatVideos, ks: Iterable[int]) -> dict[int, float]:
    """Video accuracy for every K in ``ks``, vectorised over videos.

    Ranked selectors rank all clips once and use :func:`ranked_predictions_for_ks`; Dense is computed once; any
    other selector goes through ``select_mask`` and :func:`predict_videos` for each K.
    """
    _check_flat(videos)
    labels = np.asarray(videos.labels)
    ks = [check_k(k) for k in ks]
    if isinstance(selector, ScoreRankingSelector):
        curve = ranked_predictions_for_ks(videos.teacher_probs, videos.offsets, selector.ranks(videos), ks)
        return {k: float((curve[k] == labels).mean()) for k in ks}
    if isinstance(selector, DenseSelector):
        dense = video_accuracy(videos.teacher_probs, labels, videos.offsets, selector.select_mask(videos))
        return {k: dense for k in ks}
    return {k: video_accuracy(videos.teacher_probs, labels, videos.offsets, selector.select_mask(videos, k))
            for k in ks}


class DivisionPrediction(NamedTuple):
    prediction: int
    num_teacher_clips: int  # clips the teacher must run on: min(K - K_s, N)
    num_student_clips: int  # clips classified by the student: min(K_s, N)


def predict_video_division(
    teacher_probs: np.ndarray,
    student_probs: np.ndarray,
    z_scores: np.ndarray,
    k: int,
    ks: int,
) -> DivisionPrediction:
    """ConDi-SR with division (type b) for one video.

    The top K_s clips by lowest student entropy contribute their student softmax, the top K_t = K - K_s clips
    by z~ their teacher softmax; a clip in both lists contributes the mean of its two vectors. The prediction is
    the argmax of the mean of all contributed vectors (one per distinct clip).

    >>> teacher = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    >>> student = np.array([[0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    >>> predict_video_division(teacher, student, z_scores=np.array([3.0, 1.0, 0.0]), k=2, ks=1)
    DivisionPrediction(prediction=1, num_teacher_clips=1, num_student_clips=1)
    """
    teacher_probs, student_probs = np.asarray(teacher_probs), np.asarray(student_probs)
    teacher_clips, student_clips = division_clips(z_scores, student_probs, k, ks)
    prediction = int(division_mean(teacher_probs, student_probs, teacher_clips, student_clips).argmax())
    return DivisionPrediction(prediction, len(teacher_clips), len(student_clips))


def division_clips(z_scores: np.ndarray, student_probs: np.ndarray | None, k: int,
                   ks: int) -> tuple[np.ndarray, np.ndarray]:
    """The clips ConDi-SR with division sends to the teacher (the top K - K_s by z~) and those the student
    classifies itself (the K_s of lowest student entropy), each best first."""
    k, ks = _check_division_budget(k, ks)
    teacher_clips = top_k_indices(z_scores, k - ks) if k - ks > 0 else np.array([], dtype=np.int64)
    student_clips = top_k_indices(-_entropy(student_probs), ks) if ks > 0 else np.array([], dtype=np.int64)
    return teacher_clips, student_clips


def division_mean(teacher_probs: np.ndarray, student_probs: np.ndarray | None, teacher_clips: np.ndarray,
                  student_clips: np.ndarray) -> np.ndarray:
    """The video's class probabilities from the chosen clips: each teacher clip's softmax, each student clip's,
    the mean of the two for a clip in both lists, averaged over the distinct clips (float64). Only the chosen
    rows of ``teacher_probs`` (and ``student_probs``) are read."""
    num_clips = teacher_probs.shape[0]
    in_teacher = np.zeros(num_clips, dtype=bool)
    in_teacher[teacher_clips] = True
    in_student = np.zeros(num_clips, dtype=bool)
    in_student[student_clips] = True
    vectors = []
    for clip in np.flatnonzero(in_teacher | in_student):
        if in_teacher[clip] and in_student[clip]:
            vectors.append((teacher_probs[clip] + student_probs[clip]) / 2.0)
        elif in_teacher[clip]:
            vectors.append(teacher_probs[clip])
        else:
            vectors.append(student_probs[clip])
    # vectors in the input dtype, their mean accumulated in float64: the same arithmetic as the batch path
    return np.mean(vectors, axis=0, dtype=np.float64)


def _check_video(video: VideoClips) -> None:
    n = video.num_clips
    if video.teacher_probs.ndim != 2 or n == 0:
        raise ValueError(f"teacher_probs must be (N, C) with N >= 1, got {video.teacher_probs.shape}")
    if video.student_probs is not None and video.student_probs.shape != video.teacher_probs.shape:
        raise ValueError("student_probs must have the same shape as teacher_probs")
    if video.confidence is not None and np.shape(video.confidence) != (n,):
        raise ValueError(f"confidence must have shape ({n},), got {np.shape(video.confidence)}")


def _check_flat(videos: FlatVideos) -> None:
    m = videos.teacher_probs.shape[0]
    _check_offsets(videos.offsets, m)
    if np.shape(videos.labels) != (videos.num_videos,):
        raise ValueError(f"labels must have shape ({videos.num_videos},)")
    if videos.student_probs is not None and videos.student_probs.shape != videos.teacher_probs.shape:
        raise ValueError("student_probs must have the same shape as teacher_probs")
    if videos.confidence is not None and np.shape(videos.confidence) != (m,):
        raise ValueError(f"confidence must have shape ({m},)")
    if videos.indices is not None and np.shape(videos.indices) != (videos.num_videos,):
        raise ValueError(f"indices must have shape ({videos.num_videos},)")
