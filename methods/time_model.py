"""Time per video from measured per-video seconds (NumPy only, no model).

The caches record, for every video, the wall time of one forward pass over all of its clips as one batch: the
teacher's (``teacher/<name>/videos.parquet``) and each student's (``scores/<run>/videos.parquet``). A method's
time for one video with N clips that sends K_t clips to the teacher is

    time = student seconds over all N clips (if the method uses a student)
         + teacher per-clip latency x min(K_t, N)        (latency = teacher seconds / N of that video)
         + clip-selection time                           (measured where it runs, amortised per video)

and Dense is the teacher's seconds over all N clips. Tables report the mean over a split's videos, and keep the
three parts separate so a reader can check the sum.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional, TypeVar, Union

import numpy as np

__all__ = ["TimeBreakdown", "teacher_latency", "teacher_seconds_for", "video_seconds", "mean_time", "timed"]

T = TypeVar("T")
ClipBudget = Union[int, np.ndarray]


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


def teacher_seconds_for(teacher_seconds: np.ndarray, clips: np.ndarray, clips_to_teacher: ClipBudget) -> np.ndarray:
    """Teacher time of every video when ``clips_to_teacher`` clips (a K_t, or one per video) go to the teacher.

    The budget is capped at the video's N: ``latency x min(K_t, N)``; K_t = 0 costs nothing.

    >>> teacher_seconds_for(np.array([2.0, 0.9]), np.array([4, 3]), 5)
    array([2. , 0.9])
    >>> teacher_seconds_for(np.array([2.0, 0.9]), np.array([4, 3]), np.array([1, 0]))
    array([0.5, 0. ])
    """
    seconds, clips = _check(teacher_seconds, clips)
    budget = np.asarray(clips_to_teacher, dtype=np.int64)
    if (budget < 0).any():
        raise ValueError("the teacher's clip budget must be >= 0")
    used = np.minimum(budget, clips)
    # K_t >= N is exactly the teacher's measured seconds (no latency round trip)
    return np.where(used >= clips, seconds, seconds / clips * used)


def video_seconds(
    teacher_seconds: np.ndarray,
    clips: np.ndarray,
    clips_to_teacher: ClipBudget,
    student_seconds: Optional[np.ndarray] = None,
    selection_seconds: float = 0.0,
) -> np.ndarray:
    """Time of every video, (V,): student (if any) + teacher latency x min(K_t, N) + selection time per video."""
    total = teacher_seconds_for(teacher_seconds, clips, clips_to_teacher) + float(selection_seconds)
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
) -> TimeBreakdown:
    """Mean over videos of :func:`video_seconds`, by part.

    >>> mean_time(np.array([2.0, 0.9]), np.array([4, 3]), 1, np.array([0.1, 0.3]), 0.001)
    TimeBreakdown(student=0.2, teacher=0.4, selection=0.001)
    """
    teacher = float(teacher_seconds_for(teacher_seconds, clips, clips_to_teacher).mean())
    student = 0.0 if student_seconds is None else float(np.asarray(student_seconds, dtype=np.float64).mean())
    return TimeBreakdown(student=student, teacher=teacher, selection=float(selection_seconds))


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), wall seconds)`` measured with ``time.perf_counter``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
