"""Adaptive clip budgets: a video's clips go to the teacher one at a time, best first, until a stopping rule fires
(FrameExit-style early exit evaluated on cached outputs; NumPy only, no model).

ConDi sends the same K clips of every video to the teacher; here each video gets as many as it needs. A video's
clips are taken in the order of a ranking score (higher first, ties to the lower clip index, as
:func:`~condi_pipe.methods.samplers.rank_within_videos`): for ConDi-SR the stored confidence logit, the order of
z~. The first clip always goes; after each clip a registered :class:`StoppingRule` decides whether the next one
goes too, until ``max_clips`` (K_max) or all of the video's N clips have gone. The video's prediction is the argmax
of the mean teacher softmax over the clips sent, as for a fixed K.

- ``z-threshold``: send the next clip only while its ranking score is at least the threshold (the confidence
  logit for confidence-ranked runs, so sigmoid(threshold) is the z~ threshold);
- ``confident-mean``: stop once the teacher's running mean softmax over the clips sent has a maximum probability
  of at least the threshold.

:func:`send_until_stop` is the readable per-video reference. :func:`teacher_steps` prepares every video at once
(a loop over positions j < K_max and blocks of videos, never over videos), :func:`decide` applies a rule at a
threshold, and :func:`choose_threshold` picks the threshold whose mean number of clips sent over the videos it
is given (validation videos, never the test split) meets a target budget.

>>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
>>> steps = teacher_steps(probs, np.array([2.0, 0.5, -1.0, 1.0]), np.array([0, 3, 4]), max_clips=3)
>>> decide("z-threshold", steps, 0.0).clips  # video 0 sends clips 0 and 1 (score 0.5 >= 0), not 2 (-1 < 0)
array([2, 1])
>>> decide("confident-mean", steps, 0.8).clips  # clip 0 alone is 0.9 sure: stop
array([1, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Union

import numpy as np

from condi_pipe.methods.samplers import check_k, rank_within_videos, top_k_indices, video_ids
from condi_pipe.registry import Registry, first_docstring_line

__all__ = ["DEFAULT_MAX_CLIPS", "DEFAULT_TARGET_CLIPS", "STOPPING_RULES", "AdaptiveSelection", "StoppingRule",
           "TeacherSteps", "ThresholdChoice", "choose_threshold", "decide", "get_stopping_rule", "mean_clips_at",
           "reference_prediction", "register_stopping_rule", "send_until_stop", "sent_mask",
           "sequential_teacher_seconds", "stopping_rule_names", "teacher_steps"]

#: K_max of the report's adaptive rows: twice the largest default target, so a hard video can take more clips than
#: the mean without one video taking all of its N.
DEFAULT_MAX_CLIPS = 8
#: The mean teacher clips per video the report's thresholds are chosen for (on validation).
DEFAULT_TARGET_CLIPS = (1.5, 2.0, 3.0, 4.0)
BLOCK_VIDEOS = 1 << 16  # videos per block of the running sums (bounds the (videos x classes) float64 memory)

ContinueWhile = Literal["at-least", "below"]
Rule = Union[str, "StoppingRule"]


class TeacherSteps(NamedTuple):
    """What the teacher says of each of V videos as its clips arrive in rank order: (V, L) arrays, L the most clips
    any video may send (min(K_max, longest N)); column j is the clip of rank j, and the teacher's running mean
    after the first j + 1 clips."""

    ranks: np.ndarray  # (M,) each clip's rank within its video (0 = sent first)
    offsets: np.ndarray  # (V + 1,) CSR offsets of the videos' clips
    limit: np.ndarray  # (V,) min(K_max, N): the most clips the video may send
    score: np.ndarray  # (V, L) ranking score of the clip of rank j; -inf beyond the video's limit
    top_prob: np.ndarray  # (V, L) max over classes of the mean teacher softmax of the first j + 1 clips; NaN beyond
    prediction: np.ndarray  # (V, L) int64 argmax of that mean (the first maximum); 0 beyond

    @property
    def num_videos(self) -> int:
        return len(self.limit)

    def allowed(self) -> np.ndarray:
        """(V, L - 1) whether the decision after j + 1 clips exists (the video may send a (j + 2)-th clip)."""
        return np.arange(1, self.score.shape[1])[None, :] < self.limit[:, None]


@dataclass(frozen=True)
class StoppingRule:
    """A registered stopping rule. ``decision_values(steps)`` is the statistic (V, L - 1) the rule compares with the
    threshold at the decision after j + 1 clips; the next clip is sent while it is at least the threshold
    (``continue_while = "at-least"``) or below it (``"below"``). ``stops(sent_probs, next_score, threshold)`` is the
    same rule for one video, written plainly: the reference the vectorised form is tested against."""

    name: str
    summary: str  # the first line of the reference function's docstring
    statistic: str  # what the threshold is compared with, for tables and docs
    continue_while: ContinueWhile
    decision_values: Callable[[TeacherSteps], np.ndarray]
    stops: Callable[[np.ndarray, float, float], bool]

    def continues(self, values: np.ndarray, threshold: float) -> np.ndarray:
        """Whether the next clip goes, for every decision value."""
        return values >= threshold if self.continue_while == "at-least" else values < threshold


#: Every stopping rule; the built-ins below register when this module is imported.
STOPPING_RULES: Registry[StoppingRule] = Registry("stopping rule")


def register_stopping_rule(name: str, *, statistic: str, continue_while: ContinueWhile,
                           decision_values: Callable[[TeacherSteps], np.ndarray]):
    """Decorator registering ``stops(sent_probs, next_score, threshold) -> bool`` (the per-video rule) as ``name``,
    with its vectorised ``decision_values``."""
    if continue_while not in ("at-least", "below"):
        raise ValueError(f"continue_while must be 'at-least' or 'below', got {continue_while!r}")

    def decorate(stops):
        STOPPING_RULES.register(name, StoppingRule(name, first_docstring_line(stops), statistic, continue_while,
                                                   decision_values, stops))
        return stops

    return decorate


def get_stopping_rule(rule: Rule) -> StoppingRule:
    return rule if isinstance(rule, StoppingRule) else STOPPING_RULES.get(rule)


def stopping_rule_names() -> tuple[str, ...]:
    return STOPPING_RULES.names()


@register_stopping_rule("z-threshold", statistic="the next clip's ranking score (z~'s confidence logit)",
                        continue_while="at-least", decision_values=lambda steps: steps.score[:, 1:])
def next_score_below(sent_probs: np.ndarray, next_score: float, threshold: float) -> bool:
    """Stop when the next clip's z~ (its ranking score, the confidence logit) is below the threshold."""
    return next_score < threshold


@register_stopping_rule("confident-mean", statistic="the max class probability of the teacher's running mean softmax",
                        continue_while="below", decision_values=lambda steps: steps.top_prob[:, :-1])
def running_mean_confident(sent_probs: np.ndarray, next_score: float, threshold: float) -> bool:
    """Stop once the teacher's mean softmax over the clips sent has a max probability >= the threshold."""
    return float(running_mean(sent_probs).max()) >= threshold


# ------------------------------------------------------------------------------------- one video, plainly


def running_mean(sent_probs: np.ndarray) -> np.ndarray:
    """The mean of the rows sent so far, summed one row at a time in float64 in the order sent (the arithmetic of
    :func:`teacher_steps`, so both agree to the bit)."""
    total = np.zeros(np.shape(sent_probs)[1], dtype=np.float64)
    for row in sent_probs:
        total += row
    return total / len(sent_probs)


def send_until_stop(rule: Rule, teacher_probs: np.ndarray, scores: np.ndarray, threshold: float,
                    max_clips: int | None = None) -> np.ndarray:
    """The clips of one video sent to the teacher, in the order sent: best score first, one at a time, the first
    always, then the next while ``rule`` does not stop, at most ``max_clips`` (None: all N).

    >>> send_until_stop("z-threshold", np.full((3, 2), 0.5), np.array([0.1, 0.9, 0.4]), 0.3)
    array([1, 2])
    """
    rule = get_stopping_rule(rule)
    order = top_k_indices(scores, len(scores))
    limit = len(order) if max_clips is None else min(check_k(max_clips), len(order))
    sent = [int(order[0])]
    while len(sent) < limit:
        following = int(order[len(sent)])
        if rule.stops(teacher_probs[sent], float(scores[following]), threshold):
            break
        sent.append(following)
    return np.asarray(sent, dtype=np.int64)


def reference_prediction(teacher_probs: np.ndarray, sent: np.ndarray) -> int:
    """A video's class from the clips sent: the argmax (first maximum) of their running mean."""
    return int(running_mean(teacher_probs[np.asarray(sent)]).argmax())


# ----------------------------------------------------------------------------------- every video at once


def teacher_steps(teacher_probs: np.ndarray, scores: np.ndarray, offsets: np.ndarray,
                  max_clips: int | None = DEFAULT_MAX_CLIPS) -> TeacherSteps:
    """Every video's clips in rank order by ``scores`` and the teacher's running mean after each, up to
    min(``max_clips``, N) clips (None: N). One pass serves every rule and threshold."""
    teacher_probs = np.asarray(teacher_probs)
    scores = np.asarray(scores, dtype=np.float64)
    ranks = rank_within_videos(scores, offsets)  # checks the scores (no NaN) and the offsets
    offsets = np.asarray(offsets, dtype=np.int64)
    if teacher_probs.ndim != 2 or len(teacher_probs) != len(scores):
        raise ValueError(f"teacher_probs must be (M, C) with M = {len(scores)} clips, got {teacher_probs.shape}")
    counts = np.diff(offsets)
    limit = counts if max_clips is None else np.minimum(counts, check_k(max_clips))
    order = np.empty(len(scores), dtype=np.int64)
    order[offsets[video_ids(offsets)] + ranks] = np.arange(len(scores))  # each video's clips, best first
    videos, length = len(counts), int(limit.max())
    score = np.full((videos, length), -np.inf)
    top_prob = np.full((videos, length), np.nan)
    prediction = np.zeros((videos, length), dtype=np.int64)
    for v0 in range(0, videos, BLOCK_VIDEOS):
        block = np.arange(v0, min(v0 + BLOCK_VIDEOS, videos))
        sums = np.zeros((len(block), teacher_probs.shape[1]), dtype=np.float64)
        for j in range(int(limit[block].max())):
            active = np.flatnonzero(limit[block] > j)  # positions in the block
            clips = order[offsets[block[active]] + j]
            sums[active] += teacher_probs[clips]
            mean = sums[active] / (j + 1)
            score[block[active], j] = scores[clips]
            top_prob[block[active], j] = mean.max(axis=1)
            prediction[block[active], j] = mean.argmax(axis=1)
    return TeacherSteps(ranks, offsets, limit, score, top_prob, prediction)


class AdaptiveSelection(NamedTuple):
    """A rule applied at a threshold: clips sent per video and the video predictions."""

    clips: np.ndarray  # (V,) int64, 1 <= clips <= limit
    predictions: np.ndarray  # (V,) int64


def decide(rule: Rule, steps: TeacherSteps, threshold: float) -> AdaptiveSelection:
    """Apply ``rule`` at ``threshold`` to every video: a video sends its next clip while every decision so far
    said to go on (and it may send another)."""
    rule = get_stopping_rule(rule)
    goes_on = steps.allowed() & rule.continues(rule.decision_values(steps), threshold)
    clips = 1 + np.cumprod(goes_on, axis=1).sum(axis=1).astype(np.int64)
    return AdaptiveSelection(clips, steps.prediction[np.arange(steps.num_videos), clips - 1])


def sent_mask(steps: TeacherSteps, clips: np.ndarray) -> np.ndarray:
    """Boolean mask (M,) of the clips sent when video v sends its ``clips[v]`` best."""
    return steps.ranks < np.asarray(clips)[video_ids(steps.offsets)]


# ------------------------------------------------------------------------------------------ thresholds


class ThresholdChoice(NamedTuple):
    """The threshold chosen for a target mean of clips per video, and the mean it gives on the videos it was
    chosen on."""

    threshold: float
    target_clips: float
    mean_clips: float
    videos: int


def _gates(rule: StoppingRule, steps: TeacherSteps) -> np.ndarray:
    """Sorted (ascending) over every allowed decision: the value whose comparison with the threshold says whether
    the video gets that far. Decisions are sequential, so it is the running min (at-least) or max (below)."""
    values = rule.decision_values(steps)
    accumulate = np.minimum if rule.continue_while == "at-least" else np.maximum
    gates = accumulate.accumulate(values, axis=1) if values.shape[1] else values
    return np.sort(gates[steps.allowed()])


def mean_clips_at(rule: Rule, steps: TeacherSteps, thresholds: float | Sequence[float] | np.ndarray
                  ) -> np.ndarray:
    """Mean clips sent per video at each threshold (what :func:`decide` gives), from the sorted gates."""
    rule = get_stopping_rule(rule)
    gates = _gates(rule, steps)
    below = np.searchsorted(gates, np.asarray(thresholds, dtype=np.float64), side="left")  # gates < threshold
    passing = len(gates) - below if rule.continue_while == "at-least" else below
    return 1.0 + passing / steps.num_videos


def choose_threshold(rule: Rule, steps: TeacherSteps, target_clips: float) -> ThresholdChoice:
    """The threshold that spends the most clips without exceeding ``target_clips`` per video on average over the
    videos of ``steps``. Between two neighbouring gate values every threshold gives the same clips, so the choice
    is the midpoint of that interval (-inf / +inf beyond the smallest / largest value): a test clip at exactly a
    validation value is not decided by the tie."""
    rule = get_stopping_rule(rule)
    if not np.isfinite(target_clips) or target_clips < 1:
        raise ValueError(f"a target budget is a mean of at least 1 clip per video, got {target_clips}")
    if steps.num_videos == 0:
        raise ValueError("no videos to choose a threshold on")
    values = np.unique(_gates(rule, steps))
    candidates = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2.0, [np.inf]]) if len(values) else \
        np.array([-np.inf, np.inf])
    means = mean_clips_at(rule, steps, candidates)
    fits = np.flatnonzero(means <= target_clips + 1e-12)  # never empty: one end sends one clip per video
    # at-least: a higher threshold sends fewer clips, so the lowest that fits; below: the highest
    pick = int(fits[0] if rule.continue_while == "at-least" else fits[-1])
    return ThresholdChoice(float(candidates[pick]), float(target_clips), float(means[pick]), steps.num_videos)


# ------------------------------------------------------------------------------------------------ time


def sequential_teacher_seconds(one_clip_seconds: float | np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Teacher seconds of each video that sends ``clips[v]`` clips one call at a time: each decision needs the
    previous clip's output, so a video pays ``clips`` single-clip calls (``one_clip_seconds``: one value, or one
    per video).

    >>> sequential_teacher_seconds(0.014, np.array([1, 3]))
    array([0.014, 0.042])
    """
    clips = np.asarray(clips, dtype=np.int64)
    if (clips < 0).any():
        raise ValueError("clips sent must be >= 0")
    return np.asarray(one_clip_seconds, dtype=np.float64) * clips
