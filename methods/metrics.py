"""Evaluation metrics on NumPy arrays (torch tensors are accepted and converted; ``softmax_entropy`` stays in torch).

``auroc`` and ``false_positive_rate`` judge a confidence score against the teacher's z (Eq. 1); the paper's Fig. 5
plots the false-positive rate of z~ > 0.5. ``auroc_per_video`` / ``within_video_auroc`` judge it among each video's
own clips, which is the choice a clip selector makes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["auroc", "auroc_per_video", "within_video_auroc", "WithinVideoAUROC", "false_positive_rate",
           "top1_accuracy", "sigmoid", "softmax", "softmax_entropy"]


def _as_numpy(values: Any) -> np.ndarray:
    """NumPy view of an array-like; torch tensors are detached and moved to the CPU first."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _scores_and_binary_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_numpy(scores).astype(np.float64, copy=False).ravel()
    labels = _as_numpy(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    return scores, labels.astype(bool)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, P(score_pos > score_neg) + 0.5 P(score_pos == score_neg).

    Rank-based (Mann-Whitney U) with tied scores given their average rank, so it equals the pairwise count with
    ties worth one half, in O(n log n). Returns ``nan`` when the labels hold only one class (the AUROC is then
    undefined); it never produces nan otherwise. ``labels`` are binary (1 = positive, e.g. z = 1).

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auroc([0.5, 0.5], [0, 1])
    0.5
    """
    scores, positive = _scores_and_binary_labels(scores, labels)
    num_positive = int(positive.sum())
    num_negative = positive.size - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    # average 1-based rank of each distinct score: a block of `count` ties starting after `before` smaller
    # scores occupies ranks before+1 .. before+count, whose mean is before + (count + 1) / 2
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts
    average_rank = before + (counts + 1) / 2.0
    rank_sum_positive = average_rank[inverse][positive].sum()
    u_statistic = rank_sum_positive - num_positive * (num_positive + 1) / 2.0
    return float(u_statistic / (num_positive * num_negative))


def auroc_per_video(scores: Any, labels: Any, offsets: Any) -> np.ndarray:
    """The AUROC of every video among its own clips: ``auroc(scores[a:b], labels[a:b])`` for each video, whose clips
    are rows ``offsets[v]:offsets[v + 1]`` of the flat arrays; ``nan`` for a video without both classes.

    One vectorised pass over all clips: sorted by (video, score), a run of equal scores within a video gets its
    average rank within the video (ties worth one half, as in :func:`auroc`), and each video's rank sum of its
    positives gives its Mann-Whitney U.

    >>> auroc_per_video([0.9, 0.1, 0.5, 0.3, 0.3], [1, 0, 0, 1, 1], [0, 3, 5]).tolist()  # video 1: no z = 0
    [1.0, nan]
    """
    scores, positive = _scores_and_binary_labels(scores, labels)
    offsets = _as_numpy(offsets).astype(np.int64).ravel()
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != scores.size or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets must rise from 0 to the {scores.size} clips, got {offsets.size} offsets")
    clips = np.diff(offsets)
    videos = clips.size
    owner = np.repeat(np.arange(videos), clips)
    order = np.lexsort((scores, owner))  # by video, then by score
    sorted_scores, sorted_owner = scores[order], owner[order]
    starts_run = np.ones(scores.size, dtype=bool)  # a run: equal scores within one video
    starts_run[1:] = (sorted_owner[1:] != sorted_owner[:-1]) | (sorted_scores[1:] != sorted_scores[:-1])
    run_id = np.cumsum(starts_run) - 1
    run_start = np.flatnonzero(starts_run)
    run_length = np.diff(np.append(run_start, scores.size))
    # a run of `length` ties after `before` smaller scores of its video holds ranks before+1 .. before+length
    before = run_start - offsets[sorted_owner[run_start]]
    average_rank = (before + (run_length + 1) / 2.0)[run_id]
    sorted_positive = positive[order]
    rank_sum_positive = np.bincount(sorted_owner, weights=average_rank * sorted_positive, minlength=videos)
    num_positive = np.bincount(owner, weights=positive, minlength=videos)
    num_negative = clips - num_positive
    pairs = num_positive * num_negative
    u_statistic = rank_sum_positive - num_positive * (num_positive + 1) / 2.0
    out = np.full(videos, np.nan)
    np.divide(u_statistic, pairs, out=out, where=pairs > 0)
    return out


class WithinVideoAUROC(NamedTuple):
    """``mean`` of the per-video AUROCs over the ``videos`` videos that have both classes (nan when none do)."""

    mean: float
    videos: int


def within_video_auroc(scores: Any, labels: Any, offsets: Any) -> WithinVideoAUROC:
    """The mean over videos with both classes of :func:`auroc_per_video`, and how many such videos there are.

    Unlike the pooled :func:`auroc` it ignores how scores compare across videos: a score that only tells easy
    videos from hard ones scores high pooled and 0.5 here.

    >>> within_video_auroc([0.9, 0.1, 0.5, 0.2, 0.8, 0.2, 0.2], [1, 0, 0, 1, 0, 0, 1], [0, 3, 7])
    WithinVideoAUROC(mean=0.625, videos=2)
    """
    per_video = auroc_per_video(scores, labels, offsets)
    defined = np.isfinite(per_video)
    return WithinVideoAUROC(float(per_video[defined].mean()) if defined.any() else float("nan"), int(defined.sum()))


def false_positive_rate(scores: Any, labels: Any, threshold: float = 0.5) -> float:
    """FP / (FP + TN) when "score > threshold" is the positive prediction (the paper's Fig. 5).

    Only the negatives (label 0) matter. Returns ``nan`` when there are none.

    >>> false_positive_rate([0.9, 0.6, 0.2, 0.7], [1, 0, 0, 0])
    0.6666666666666666
    """
    scores, positive = _scores_and_binary_labels(scores, labels)
    negative_scores = scores[~positive]
    if negative_scores.size == 0:
        return float("nan")
    return float((negative_scores > threshold).mean())


def top1_accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of correct predictions. ``predictions`` are class indices (V,) or scores (V, C) to argmax.

    >>> top1_accuracy([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], [1, 1, 1])
    0.6666666666666666
    """
    predictions = _as_numpy(predictions)
    labels = _as_numpy(labels).ravel()
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    predictions = predictions.ravel()
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels")
    return float((predictions == labels).mean())


def sigmoid(x: Any) -> np.ndarray:
    """float64 logistic function (no overflow warning for large negative logits).

    >>> sigmoid(np.array([0.0, 2.0])).round(4)
    array([0.5   , 0.8808])
    """
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -700.0, 700.0)))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so large logits do not overflow; keeps the float dtype.

    >>> softmax(np.array([[0.0, 0.0], [1000.0, 0.0]]))
    array([[0.5, 0.5],
           [1. , 0. ]])
    """
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def softmax_entropy(values: Any, from_logits: bool = True, axis: int = -1) -> Any:
    """Shannon entropy in nats of softmax(values) (``from_logits=True``) or of the probabilities ``values``.

    From logits it works with log_softmax, so saturated logits give 0 rather than nan; from probabilities
    0 log 0 = 0. A torch tensor gives a torch tensor (differentiable), anything else a NumPy array.

    >>> float(softmax_entropy(np.zeros(4)))  # uniform over 4 classes: log 4
    1.3862943611198906
    >>> softmax_entropy(np.array([[1.0, 0.0], [0.5, 0.5]]), from_logits=False).round(6)
    array([0.      , 0.693147])
    """
    if type(values).__module__.startswith("torch"):
        import torch

        if from_logits:
            log_p = torch.log_softmax(values, dim=axis)
            return -(log_p.exp() * log_p).sum(dim=axis)
        return -torch.xlogy(values, values).sum(dim=axis)
    values = np.asarray(values)
    if from_logits:
        shifted = values - values.max(axis=axis, keepdims=True)
        log_normaliser = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        log_p = shifted - log_normaliser
        return 0.0 - (np.exp(log_p) * log_p).sum(axis=axis)  # "0.0 -" turns -0.0 into 0.0
    # log(1) = 0 stands in for log(0), so zero probabilities contribute 0 log 0 = 0 without a warning
    return 0.0 - (values * np.log(np.where(values > 0, values, 1.0))).sum(axis=axis)
