"""Evaluation metrics on NumPy arrays (torch tensors are accepted and converted; ``softmax_entropy`` stays in torch).

``auroc`` and ``false_positive_rate`` judge a confidence score against the teacher's z (Eq. 1); the paper's Fig. 5
plots the false-positive rate of z~ > 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["auroc", "false_positive_rate", "top1_accuracy", "sigmoid", "softmax", "softmax_entropy"]


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
