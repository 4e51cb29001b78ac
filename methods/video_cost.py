"""Cost in GFLOPs per video, and the Pareto front of accuracy against cost (NumPy only, no model).

A model's FLOPs per clip are counted once (:mod:`condi_pipe.models.flops`, stored by ``condi-pipe time-models``);
a method's cost on one video with N clips that sends K_t clips to the teacher is

    GFLOPs = student GFLOPs per clip x the clips it sees (all N; a video-level student its k)
           + teacher GFLOPs per clip x min(K_t, N)

and Dense is the teacher on all N clips. Like the time per video (:mod:`condi_pipe.methods.video_time`), tables
report the mean over a split's videos and keep the two parts. Clip selection (a sort of N scores) is not counted.

A method is on the Pareto front of accuracy against cost when no other point dominates it: none is at least as
accurate at no more cost and better in one of the two. Identical points dominate neither: both stay on the front.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

from condi_pipe.methods.video_time import checked_clip_budget

__all__ = ["GflopsBreakdown", "mean_gflops", "pareto_front"]

ClipCount = Union[int, np.ndarray]


class GflopsBreakdown(NamedTuple):
    """Mean GFLOPs per video, by part; ``total`` is their sum."""

    student: float  # student on the clips it sees (0 for methods without a student)
    teacher: float  # teacher on the clips sent to it

    @property
    def total(self) -> float:
        return self.student + self.teacher


def mean_gflops(clips: np.ndarray, clips_to_teacher: ClipCount, teacher_gflops_per_clip: float,
                student_gflops_per_clip: Optional[float] = None, student_clips: Optional[ClipCount] = None
                ) -> GflopsBreakdown:
    """Mean over videos of the GFLOPs parts: the teacher on min(K_t, N) clips (``clips_to_teacher``: a K_t, or one
    per video), the student (if any) on ``student_clips`` (default: all N; capped at N).

    >>> mean_gflops(np.array([4, 2]), 3, 10.0, 0.5)
    GflopsBreakdown(student=1.5, teacher=25.0)
    >>> mean_gflops(np.array([4, 2]), 0, 10.0, 0.5, student_clips=1)
    GflopsBreakdown(student=0.5, teacher=0.0)
    """
    clips, budget = checked_clip_budget(clips, clips_to_teacher)
    teacher = float(teacher_gflops_per_clip) * float(np.minimum(budget, clips).mean())
    student = 0.0
    if student_gflops_per_clip is not None:
        seen = clips if student_clips is None else np.minimum(
            np.broadcast_to(np.asarray(student_clips, dtype=np.int64), clips.shape), clips)
        student = float(student_gflops_per_clip) * float(seen.mean())
    return GflopsBreakdown(student=student, teacher=teacher)


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point dominates (at least as accurate at no more cost, and strictly better
    in one), by increasing cost (then decreasing accuracy); points with a missing (NaN) cost or accuracy are left
    out. Along the front, cost and accuracy both increase: the best accuracy each cost buys.

    >>> pareto_front([1.0, 2.0, 2.0, 3.0, 0.5], [70.0, 80.0, 75.0, 78.0, 60.0]).tolist()
    [4, 0, 1]
    """
    costs = np.asarray(costs, dtype=np.float64)
    accuracies = np.asarray(accuracies, dtype=np.float64)
    if costs.shape != accuracies.shape or costs.ndim != 1:
        raise ValueError(f"costs {costs.shape} and accuracies {accuracies.shape} must be equal 1-D arrays")
    valid = np.flatnonzero(~(np.isnan(costs) | np.isnan(accuracies)))
    order = valid[np.lexsort((-accuracies[valid], costs[valid]))]  # by cost, the most accurate first among equals
    front: list[int] = []
    best = -np.inf
    for i in order:
        if accuracies[i] > best:
            front.append(int(i))
            best = accuracies[i]
        elif front and costs[i] == costs[front[-1]] and accuracies[i] == accuracies[front[-1]]:
            front.append(int(i))  # the same point as the last one kept: neither dominates the other
    return np.asarray(front, dtype=np.int64)
