"""Adaptive clip budgets: the vectorised stopping rules against the per-video reference, their bounds, and the
threshold choice."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from condi_pipe.methods import adaptive_budgets
from condi_pipe.methods.adaptive_budgets import (
    STOPPING_RULES,
    StoppingRule,
    choose_threshold,
    decide,
    mean_clips_at,
    reference_prediction,
    send_until_stop,
    sent_mask,
    sequential_teacher_seconds,
    stopping_rule_names,
    teacher_steps,
)
from condi_pipe.registry import UnknownName


def videos(seed: int, count: int = 60, classes: int = 5, longest: int = 12):
    """Random videos of 1..longest clips: teacher softmax, ranking scores with ties, CSR offsets."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(1, longest + 1, count)
    offsets = np.concatenate([[0], np.cumsum(clips)])
    logits = rng.normal(size=(offsets[-1], classes)) * 2.0
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    scores = np.round(rng.normal(size=offsets[-1]), 1)  # rounded: ties within videos
    return probs, scores, offsets


def test_docstring_examples():
    result = doctest.testmod(adaptive_budgets)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("rule", ["z-threshold", "confident-mean"])
@pytest.mark.parametrize("max_clips", [1, 3, 8, None])
def test_every_video_sends_the_clips_of_the_per_video_reference(rule, max_clips):
    probs, scores, offsets = videos(seed=1)
    steps = teacher_steps(probs, scores, offsets, max_clips)
    thresholds = [-0.5, 0.0, 0.3, 1.2] if rule == "z-threshold" else [0.3, 0.45, 0.6, 0.9]
    for threshold in thresholds:
        chosen = decide(rule, steps, threshold)
        mask = sent_mask(steps, chosen.clips)
        for v in range(len(offsets) - 1):
            lo, hi = offsets[v], offsets[v + 1]
            sent = send_until_stop(rule, probs[lo:hi], scores[lo:hi], threshold, max_clips)
            assert chosen.clips[v] == len(sent)
            assert np.array_equal(np.flatnonzero(mask[lo:hi]), np.sort(sent))
            assert chosen.predictions[v] == reference_prediction(probs[lo:hi], sent)


def test_the_rules_stop_where_they_say():
    # one video of three clips, ranked 2, 0, 1 by score; the teacher is sure of class 0 only on clip 2
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.95, 0.05]])
    scores = np.array([1.0, 0.2, 3.0])
    # z-threshold: the second clip (score 1.0) goes at threshold 0.5, the third (0.2) does not
    assert send_until_stop("z-threshold", probs, scores, 0.5).tolist() == [2, 0]
    # confident-mean: clip 2 alone is 0.95 sure, so at 0.9 it stops after one clip; at 0.99 it never becomes that
    # sure ((0.95 + 0.5) / 2 = 0.725, then (0.95 + 0.5 + 0.2) / 3 = 0.55 for class 0) and sends all three
    assert send_until_stop("confident-mean", probs, scores, 0.9).tolist() == [2]
    assert send_until_stop("confident-mean", probs, scores, 0.99).tolist() == [2, 0, 1]


@pytest.mark.parametrize("rule", ["z-threshold", "confident-mean"])
def test_at_least_one_clip_and_at_most_k_max(rule):
    probs, scores, offsets = videos(seed=2)
    counts = np.diff(offsets)
    steps = teacher_steps(probs, scores, offsets, max_clips=4)
    never_stops, always_stops = (-np.inf, np.inf) if rule == "z-threshold" else (np.inf, -np.inf)
    assert (decide(rule, steps, always_stops).clips == 1).all()
    assert np.array_equal(decide(rule, steps, never_stops).clips, np.minimum(counts, 4))
    for threshold in np.linspace(-2, 2, 9):
        clips = decide(rule, steps, threshold).clips
        assert (clips >= 1).all() and (clips <= np.minimum(counts, 4)).all()


def test_decide_refuses_an_unknown_rule_with_the_registered_names():
    probs, scores, offsets = videos(seed=3, count=3)
    with pytest.raises(UnknownName, match="unknown stopping rule 'nope'; choose one of: z-threshold, confident-mean"):
        decide("nope", teacher_steps(probs, scores, offsets), 0.0)


def test_a_registered_rule_is_used_by_both_forms():
    """A rule is its vectorised statistic and its plain reference: one registered under a new name is found by
    name, and both forms agree (here: go on while the running mean leaves at least a threshold of doubt)."""
    probs, scores, offsets = videos(seed=4)

    def doubt_too_small(sent_probs, next_score, threshold):
        return 1.0 - float(adaptive_budgets.running_mean(sent_probs).max()) < threshold

    rule = StoppingRule("doubtful", "go on while in doubt", "1 - max running mean", "at-least",
                        lambda steps: 1.0 - steps.top_prob[:, :-1], doubt_too_small)
    with STOPPING_RULES.temporarily("doubtful", rule):
        assert "doubtful" in stopping_rule_names()
        steps = teacher_steps(probs, scores, offsets, max_clips=5)
        chosen = decide("doubtful", steps, 0.4)
        for v in range(len(offsets) - 1):
            lo, hi = offsets[v], offsets[v + 1]
            assert chosen.clips[v] == len(send_until_stop("doubtful", probs[lo:hi], scores[lo:hi], 0.4, 5))
        assert 1 < chosen.clips.mean() < 5  # the threshold decides: neither bound everywhere
    assert "doubtful" not in stopping_rule_names()


@pytest.mark.parametrize("rule", ["z-threshold", "confident-mean"])
@pytest.mark.parametrize("target", [1.0, 1.5, 2.0, 3.3, 20.0])
def test_the_chosen_threshold_spends_the_most_clips_within_the_target(rule, target):
    probs, scores, offsets = videos(seed=5, count=80)
    steps = teacher_steps(probs, scores, offsets, max_clips=6)
    choice = choose_threshold(rule, steps, target)
    spent = decide(rule, steps, choice.threshold).clips.mean()
    assert spent == pytest.approx(choice.mean_clips) and spent <= target + 1e-12
    # no threshold spends more without exceeding the target: try every gate value, the midpoints and both ends
    values = np.unique(np.concatenate([steps.score[:, 1:][np.isfinite(steps.score[:, 1:])],
                                       steps.top_prob[np.isfinite(steps.top_prob)]]))
    others = mean_clips_at(rule, steps, np.concatenate([values, (values[1:] + values[:-1]) / 2, [-np.inf, np.inf]]))
    assert others[others <= target + 1e-12].max() == pytest.approx(spent)


@pytest.mark.parametrize("rule", ["z-threshold", "confident-mean"])
def test_mean_clips_at_matches_decide(rule):
    probs, scores, offsets = videos(seed=6)
    steps = teacher_steps(probs, scores, offsets, max_clips=5)
    thresholds = np.array([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0])
    expected = [decide(rule, steps, t).clips.mean() for t in thresholds]
    assert mean_clips_at(rule, steps, thresholds) == pytest.approx(expected)


def test_a_target_below_one_clip_is_refused():
    probs, scores, offsets = videos(seed=7, count=4)
    with pytest.raises(ValueError, match="a target budget is a mean of at least 1 clip per video, got 0.5"):
        choose_threshold("z-threshold", teacher_steps(probs, scores, offsets), 0.5)


def test_sequential_calls_cost_one_clip_each():
    assert sequential_teacher_seconds(np.array([0.01, 0.02]), np.array([3, 1])) == pytest.approx([0.03, 0.02])
    with pytest.raises(ValueError, match="clips sent must be >= 0"):
        sequential_teacher_seconds(0.01, np.array([-1]))


def test_nan_scores_are_refused():
    probs, scores, offsets = videos(seed=8, count=3)
    scores[0] = np.nan
    with pytest.raises(ValueError, match="scores contain NaN"):
        teacher_steps(probs, scores, offsets)
