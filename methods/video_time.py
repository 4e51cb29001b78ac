"""Time per video from measured per-video seconds (NumPy only, no model).

The caches record, for every video, the wall time of one forward pass over all of its clips as one batch: the
teacher's (``teacher/<name>/videos.parquet``) and each student's (``scores/<run>/videos.parquet``). A method's
time for one video with N clips that sends K_t clips to the teacher is

    time = student seconds over all N clips (if the method uses a student)
         + teacher per-clip latency x min(K_t, N)        (latency = teacher seconds / N of that video)
         + clip-selection time                           (measured where it runs, amortised per video)

and Dense is the teacher's seconds over all N clips. Tables report the mean over a split's videos, and keep the
three parts separate so a reader can check the sum.

The per-clip latency (the video's share of a batch of N) is what the brief asks for, but on a CPU a batch of K
small clips costs more than K shares of a batch of N. When the teacher cache also holds a measured
batch-latency curve (``meta.json`` ``latency_curve``: seconds of one forward pass per batch size), the "curve"
model costs the K_t < N clips as one batch of K_t from that curve instead (see :func:`curve_seconds`); K_t >= N is
the video's measured seconds in both models.

Those per-run figures come from different processes at different machine loads. ``condi-pipe time-models`` times
every model of a table interleaved in one process, one forward pass per batch size 1..B, repeated
(:func:`robust_summary` of the repeats); with those curves (:func:`side_by_side_video_seconds`) a method costs

    time = student's curve at N + teacher's curve at min(K_t, N) + clip-selection time

and Dense the teacher's curve at N, a video longer than the largest batch running in chunks of it.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, TypeVar, Union

import numpy as np

__all__ = ["TimeBreakdown", "teacher_latency", "curve_seconds", "teacher_seconds_for", "video_seconds", "mean_time",
           "timed", "robust_summary", "chunked_batch_seconds", "side_by_side_video_seconds", "side_by_side_mean_time"]

T = TypeVar("T")
ClipBudget = Union[int, np.ndarray]
Curve = Mapping[str, Sequence[float]]  # {"batch": [1, 2, ...], "seconds": [...]} (teacher meta ``latency_curve``)


class TimeBreakdown(NamedTuple):
    """Mean seconds per video, by part; ``total`` is their sum."""

    student: float  # student over all N clips (0 for methods without a student)
    teacher: float  # teacher per-clip latency x clips sent to the teacher
    selection: float  # ranking / selecting the clips, amortised per video

    @property
    def total(self) -> float:
        return self.student + self.teacher + self.selection


def _check(teacher_seconds: np.ndarray, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    seconds = np.asarray(teacher_seconds, dtype=np.float64)
    clips = np.asarray(clips, dtype=np.int64)
    if seconds.shape != clips.shape or seconds.ndim != 1:
        raise ValueError(f"teacher seconds {seconds.shape} and clip counts {clips.shape} must be equal 1-D arrays")
    if (clips <= 0).any():
        raise ValueError("every video needs at least one clip")
    return seconds, clips


def teacher_latency(teacher_seconds: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Per-clip teacher latency of every video: its teacher seconds / its clip count, (V,).

    >>> teacher_latency(np.array([2.0, 0.9]), np.array([4, 3]))
    array([0.5, 0.3])
    """
    seconds, clips = _check(teacher_seconds, clips)
    return seconds / clips


def curve_seconds(curve: Curve, sizes: ClipBudget) -> np.ndarray:
    """Seconds of one batch of each size from a measured curve: linear between measured batch sizes, below the
    smallest the smallest's time, beyond the largest its per-clip cost times the size; size 0 costs nothing.

    >>> curve_seconds({"batch": [1, 2, 4], "seconds": [0.3, 0.4, 0.6]}, np.array([0, 1, 3, 8]))
    array([0. , 0.3, 0.5, 1.2])
    """
    batch = np.asarray(curve["batch"], dtype=np.float64)
    seconds = np.asarray(curve["seconds"], dtype=np.float64)
    if batch.ndim != 1 or batch.shape != seconds.shape or len(batch) == 0 or (np.diff(batch) <= 0).any():
        raise ValueError("a latency curve needs increasing batch sizes and one time per size")
    sizes = np.asarray(sizes, dtype=np.float64)
    inside = np.interp(sizes, batch, seconds)
    beyond = seconds[-1] / batch[-1] * sizes
    return np.where(sizes <= 0, 0.0, np.where(sizes > batch[-1], beyond, inside))


def teacher_seconds_for(teacher_seconds: np.ndarray, clips: np.ndarray, clips_to_teacher: ClipBudget,
                        curve: Optional[Curve] = None) -> np.ndarray:
    """Teacher time of every video when ``clips_to_teacher`` clips (a K_t, or one per video) go to the teacher.

    The budget is capped at the video's N. Without ``curve``: ``latency x min(K_t, N)``; with it, the
    min(K_t, N) < N clips cost one batch of that size on the curve. K_t >= N is the video's measured seconds
    and K_t = 0 costs nothing, in both models.

    >>> teacher_seconds_for(np.array([2.0, 0.9]), np.array([4, 3]), 5)
    array([2. , 0.9])
    >>> teacher_seconds_for(np.array([2.0, 0.9]), np.array([4, 3]), np.array([1, 0]))
    array([0.5, 0. ])
    >>> teacher_seconds_for(np.array([2.0, 0.9]), np.array([4, 3]), 1, {"batch": [1, 8], "seconds": [0.7, 2.0]})
    array([0.7, 0.7])
    """
    seconds, clips = _check(teacher_seconds, clips)
    budget = np.asarray(clips_to_teacher, dtype=np.int64)
    if (budget < 0).any():
        raise ValueError("the teacher's clip budget must be >= 0")
    used = np.minimum(budget, clips)
    part = seconds / clips * used if curve is None else curve_seconds(curve, used)
    # K_t >= N is exactly the teacher's measured seconds (no latency round trip)
    return np.where(used >= clips, seconds, part)


def video_seconds(
    teacher_seconds: np.ndarray,
    clips: np.ndarray,
    clips_to_teacher: ClipBudget,
    student_seconds: Optional[np.ndarray] = None,
    selection_seconds: float = 0.0,
    curve: Optional[Curve] = None,
) -> np.ndarray:
    """Time of every video, (V,): student (if any) + teacher time of min(K_t, N) clips + selection time per video."""
    total = teacher_seconds_for(teacher_seconds, clips, clips_to_teacher, curve) + float(selection_seconds)
    if student_seconds is not None:
        student = np.asarray(student_seconds, dtype=np.float64)
        if student.shape != total.shape:
            raise ValueError(f"student seconds {student.shape} must match the videos {total.shape}")
        total = total + student
    return total


def mean_time(
    teacher_seconds: np.ndarray,
    clips: np.ndarray,
    clips_to_teacher: ClipBudget,
    student_seconds: Optional[np.ndarray] = None,
    selection_seconds: float = 0.0,
    curve: Optional[Curve] = None,
) -> TimeBreakdown:
    """Mean over videos of :func:`video_seconds`, by part.

    >>> mean_time(np.array([2.0, 0.9]), np.array([4, 3]), 1, np.array([0.1, 0.3]), 0.001)
    TimeBreakdown(student=0.2, teacher=0.4, selection=0.001)
    """
    teacher = float(teacher_seconds_for(teacher_seconds, clips, clips_to_teacher, curve).mean())
    student = 0.0 if student_seconds is None else float(np.asarray(student_seconds, dtype=np.float64).mean())
    return TimeBreakdown(student=student, teacher=teacher, selection=float(selection_seconds))


class RobustSummary(NamedTuple):
    """Per-cell statistics of repeated timings: the median, the fastest, and the interquartile range."""

    median: np.ndarray
    minimum: np.ndarray
    iqr: np.ndarray


def robust_summary(samples: np.ndarray) -> RobustSummary:
    """Median, minimum and IQR (75th - 25th percentile) of ``samples`` over its last axis (the repeats).

    >>> robust_summary(np.array([[0.5, 0.1, 0.2, 0.3, 9.0]]))
    RobustSummary(median=array([0.3]), minimum=array([0.1]), iqr=array([0.3]))
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.shape[-1] == 0 or not np.isfinite(samples).all():
        raise ValueError("timings need at least one repeat and finite seconds")
    q25, q50, q75 = np.percentile(samples, [25, 50, 75], axis=-1)
    return RobustSummary(q50, samples.min(axis=-1), q75 - q25)


def chunked_batch_seconds(curve: Curve, sizes: ClipBudget, max_batch: int) -> np.ndarray:
    """Seconds of serving each of ``sizes`` clips as one batch, or, beyond ``max_batch``, as full chunks of
    ``max_batch`` plus one batch of the rest (how ``pipeline.clip_inference`` runs a long video).

    ``curve`` must cover every size used (``max_batch`` and each remainder): a curve measured at 1..B with
    B = min(longest video, max_batch) does. Sizes of 0 cost nothing.

    >>> chunked_batch_seconds({"batch": [1, 2, 3], "seconds": [0.3, 0.4, 0.6]}, np.array([0, 2, 3, 7]), 3)
    array([0. , 0.4, 0.6, 1.5])
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if (sizes < 0).any():
        raise ValueError("batch sizes must be >= 0")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    full, rest = np.divmod(sizes, max_batch)
    largest = float(np.asarray(curve["batch"])[-1]) if len(curve["batch"]) else 0.0
    needed = np.where(full > 0, max_batch, rest)
    if (needed > largest).any():
        raise ValueError(f"the curve stops at batch {largest:g} but batch {int(needed.max())} is needed")
    chunk = float(curve_seconds(curve, np.array([max_batch]))[0]) if (full > 0).any() else 0.0
    return full * chunk + curve_seconds(curve, rest)


def checked_clip_budget(clips, clips_to_teacher) -> tuple[np.ndarray, np.ndarray]:
    """Each video's clip count N and the teacher's clip budget K_t (a scalar or one per video) as int64 arrays of
    one shape; ValueError for counts that are not a 1-D array of positive integers or a negative budget."""
    clips = np.asarray(clips, dtype=np.int64)
    if clips.ndim != 1 or (clips <= 0).any():
        raise ValueError("clip counts must be a 1-D array of positive counts")
    budget = np.broadcast_to(np.asarray(clips_to_teacher, dtype=np.int64), clips.shape)
    if (budget < 0).any():
        raise ValueError("the teacher's clip budget must be >= 0")
    return clips, budget


def side_by_side_video_seconds(teacher_curve: Curve, clips: np.ndarray, clips_to_teacher: ClipBudget,
                               student_curve: Optional[Curve] = None, student_clips: Optional[ClipBudget] = None,
                               selection_seconds: float = 0.0, max_batch: int = 64) -> TimeBreakdown:
    """Per-video time parts, (V,) each, from curves timed side by side: the student's curve at
    ``student_clips`` (default: all N clips), the teacher's at min(K_t, N), and the selection time.

    >>> t = {"batch": [1, 2, 3], "seconds": [0.3, 0.4, 0.6]}
    >>> s = {"batch": [1, 2, 3], "seconds": [0.01, 0.02, 0.03]}
    >>> side_by_side_video_seconds(t, np.array([3, 2]), 2, s, selection_seconds=0.001)
    TimeBreakdown(student=array([0.03, 0.02]), teacher=array([0.4, 0.4]), selection=array([0.001, 0.001]))
    """
    clips, budget = checked_clip_budget(clips, clips_to_teacher)
    teacher = chunked_batch_seconds(teacher_curve, np.minimum(budget, clips), max_batch)
    student = np.zeros(clips.shape)
    if student_curve is not None:
        seen = clips if student_clips is None else np.broadcast_to(np.asarray(student_clips, np.int64), clips.shape)
        student = chunked_batch_seconds(student_curve, seen, max_batch)
    return TimeBreakdown(student, teacher, np.full(clips.shape, float(selection_seconds)))


def side_by_side_mean_time(teacher_curve: Curve, clips: np.ndarray, clips_to_teacher: ClipBudget,
                           student_seconds: Optional[np.ndarray] = None, selection_seconds: float = 0.0,
                           max_batch: int = 64) -> TimeBreakdown:
    """Mean over videos: ``student_seconds`` (per video, e.g. a student's curve at N) + the teacher's curve at
    min(K_t, N) + the selection time. Dense is ``clips_to_teacher = clips`` without a student.

    >>> side_by_side_mean_time({"batch": [1, 2, 3], "seconds": [0.3, 0.4, 0.6]}, np.array([3, 2]), 1,
    ...                        np.array([0.03, 0.01]))
    TimeBreakdown(student=0.02, teacher=0.3, selection=0.0)
    """
    parts = side_by_side_video_seconds(teacher_curve, clips, clips_to_teacher, max_batch=max_batch,
                                       selection_seconds=selection_seconds)
    student = 0.0
    if student_seconds is not None:
        values = np.asarray(student_seconds, dtype=np.float64)
        if values.shape != parts.teacher.shape:
            raise ValueError(f"student seconds {values.shape} must match the videos {parts.teacher.shape}")
        student = float(values.mean())
    return TimeBreakdown(student=student, teacher=float(parts.teacher.mean()), selection=float(selection_seconds))


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), wall seconds)`` measured with ``time.perf_counter``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
