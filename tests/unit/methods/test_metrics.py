"""Metrics against brute-force and hand computations."""

import doctest
import math

import numpy as np
import pytest
import torch

from condi_pipe.methods import metrics
from condi_pipe.methods.metrics import auroc, false_positive_rate, softmax_entropy, top1_accuracy


def test_docstring_examples():
    result = doctest.testmod(metrics)
    assert result.failed == 0 and result.attempted > 0


def pairwise_auroc(scores, labels):
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_equals_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(5, 200))
    labels = rng.random(size) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]  # both classes present
    scores = np.round(rng.normal(size=size) + labels, 1)  # rounding makes many ties
    assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_extremes_and_inputs():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc(np.full(6, 0.3), [0, 1, 0, 1, 1, 0]) == 0.5
    assert auroc(torch.tensor([0.2, 0.7, 0.4]), torch.tensor([False, True, False])) == 1.0
    assert auroc([-np.inf, np.inf], [0, 1]) == 1.0


def test_auroc_is_nan_when_one_class_is_absent():
    assert math.isnan(auroc([0.1, 0.4], [1, 1]))
    assert math.isnan(auroc([0.1, 0.4], [0, 0]))
    with pytest.raises(ValueError):
        auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [0, 2])


def test_false_positive_rate_by_hand():
    scores = [0.9, 0.51, 0.5, 0.2, 0.7, 0.3, 0.95]
    labels = [1, 0, 0, 0, 0, 1, 1]
    # negatives: 0.51 (FP), 0.5 (not > 0.5: TN), 0.2 (TN), 0.7 (FP) -> 2 / 4
    assert false_positive_rate(scores, labels) == 0.5
    assert false_positive_rate(scores, labels, threshold=0.6) == 0.25
    assert false_positive_rate(scores, labels, threshold=0.0) == 1.0
    assert math.isnan(false_positive_rate([0.3, 0.9], [1, 1]))


def test_top1_accuracy():
    assert top1_accuracy([2, 1, 0, 1], [2, 1, 1, 1]) == 0.75
    assert top1_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), [1, 1]) == 0.5
    assert top1_accuracy(torch.tensor([[0.1, 0.9]]), torch.tensor([1])) == 1.0
    with pytest.raises(ValueError):
        top1_accuracy([1, 2], [1])


def test_softmax_entropy_from_logits_and_probs():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20, 101))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    by_hand = np.array([-sum(p * math.log(p) for p in row) for row in probs])
    np.testing.assert_allclose(softmax_entropy(logits), by_hand, rtol=1e-10)
    np.testing.assert_allclose(softmax_entropy(probs, from_logits=False), by_hand, rtol=1e-10)
    torch_entropy = softmax_entropy(torch.tensor(logits))
    assert isinstance(torch_entropy, torch.Tensor)
    np.testing.assert_allclose(torch_entropy.numpy(), by_hand, rtol=1e-10)
    np.testing.assert_allclose(softmax_entropy(torch.tensor(probs), from_logits=False).numpy(), by_hand, rtol=1e-10)
    assert softmax_entropy(np.zeros(10)) == pytest.approx(math.log(10))


def test_softmax_entropy_is_finite_for_saturated_inputs():
    assert softmax_entropy(np.array([1000.0, -1000.0, 0.0])) == 0.0
    assert softmax_entropy(np.array([1.0, 0.0, 0.0]), from_logits=False) == 0.0
    assert torch.isfinite(softmax_entropy(torch.tensor([[1e4, -1e4]]))).all()
    assert softmax_entropy(torch.tensor([1.0, 0.0]), from_logits=False).item() == 0.0
