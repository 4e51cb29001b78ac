"""methods.video_cost: GFLOPs per video by hand, and the Pareto front of accuracy against cost."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from condi_pipe.methods import video_cost
from condi_pipe.methods.video_cost import mean_gflops, pareto_front


def test_mean_gflops_caps_the_teacher_at_each_videos_clips():
    clips = np.array([5, 1, 3])
    parts = mean_gflops(clips, 2, teacher_gflops_per_clip=4.0, student_gflops_per_clip=0.25)
    assert parts.teacher == pytest.approx(4.0 * (2 + 1 + 2) / 3)
    assert parts.student == pytest.approx(0.25 * (5 + 1 + 3) / 3)
    assert parts.total == pytest.approx(parts.teacher + parts.student)


def test_dense_and_a_video_level_student():
    clips = np.array([5, 1, 3])
    assert mean_gflops(clips, clips, 4.0).teacher == pytest.approx(4.0 * 9 / 3)
    seen = mean_gflops(clips, 0, 4.0, 0.5, student_clips=np.array([2, 2, 2]))  # k = 2, capped at N
    assert (seen.teacher, seen.student) == (0.0, pytest.approx(0.5 * (2 + 1 + 2) / 3))


def test_mean_gflops_refuses_bad_counts():
    with pytest.raises(ValueError, match="positive counts"):
        mean_gflops(np.array([0, 2]), 1, 1.0)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        mean_gflops(np.array([1, 2]), -1, 1.0)


def test_dominated_points_leave_the_front():
    costs = [1.0, 2.0, 3.0, 4.0]
    accuracies = [50.0, 70.0, 60.0, 80.0]  # the third costs more than the second for less
    assert pareto_front(costs, accuracies).tolist() == [0, 1, 3]


def test_ties_keep_the_better_point_and_both_of_two_identical_points():
    # same cost: only the more accurate; same accuracy: only the cheaper; the same point twice: both
    costs = [2.0, 2.0, 1.0, 3.0, 5.0, 5.0]
    accuracies = [60.0, 65.0, 60.0, 65.0, 90.0, 90.0]
    assert pareto_front(costs, accuracies).tolist() == [2, 1, 4, 5]


def test_a_single_point_and_missing_values():
    assert pareto_front([3.0], [10.0]).tolist() == [0]
    assert pareto_front([np.nan, 1.0, 2.0], [99.0, 10.0, np.nan]).tolist() == [1]
    assert pareto_front([], []).tolist() == []
    with pytest.raises(ValueError, match="equal 1-D arrays"):
        pareto_front([1.0, 2.0], [1.0])


def test_the_front_rises_in_cost_and_accuracy_on_random_points():
    rng = np.random.default_rng(3)
    costs, accuracies = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 40).astype(float)
    front = pareto_front(costs, accuracies)
    for i in range(40):  # brute force: on the front exactly when no other point dominates it
        dominated = any(costs[j] <= costs[i] and accuracies[j] >= accuracies[i]
                        and (costs[j] < costs[i] or accuracies[j] > accuracies[i]) for j in range(40))
        assert (i in front) == (not dominated)
    assert (np.diff(costs[front]) >= 0).all() and (np.diff(accuracies[front]) >= 0).all()


def test_docstring_examples():
    assert doctest.testmod(video_cost).failed == 0
