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
    with pytest.raises(ValueError, match="scores contain NaN"):
        auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match=r"labels must be binary \(0/1 or bool\)"):
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
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
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


# ------------------------------------------------------------------ AUROC within videos


def test_auroc_per_video_by_hand():
    # video 0: the positive 0.9 above both negatives -> 1. Video 1: positives 0.2, 0.2 against negatives 0.8 (lost
    # twice) and 0.2 (tied twice, 1/2 each) -> 1 / 4. Video 2: only z = 1; video 3: no clips; video 4: only z = 0.
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.2, 0.2, 0.7, 0.6, 0.4]
    labels = [1, 0, 0, 1, 0, 0, 1, 1, 1, 0]
    offsets = [0, 3, 7, 9, 9, 10]
    per_video = metrics.auroc_per_video(scores, labels, offsets)
    assert per_video[:2].tolist() == [1.0, 0.25] and np.isnan(per_video[2:]).all()
    assert metrics.within_video_auroc(scores, labels, offsets) == (0.625, 2)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_per_video_equals_auroc_of_each_video(seed):
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 12, size=40)
    offsets = np.concatenate([[0], np.cumsum(clips)])
    labels = rng.random(offsets[-1]) < 0.5
    scores = rng.integers(0, 4, size=offsets[-1]).astype(float)  # few values: ties within and across videos
    scores[::7] = [np.inf, -np.inf][seed % 2]
    expected = [auroc(scores[a:b], labels[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    np.testing.assert_allclose(metrics.auroc_per_video(scores, labels, offsets), expected, atol=1e-12)
    defined = np.isfinite(expected)
    assert metrics.within_video_auroc(scores, labels, offsets) == (pytest.approx(np.mean(np.array(expected)[defined])),
                                                                 defined.sum())


def test_within_video_auroc_ignores_what_separates_videos():
    # an easy video (z mostly 1, high scores) and a hard one (z mostly 0, low scores); inside each the score is
    # backwards: pooled it looks good, within the videos it is always wrong
    scores = [0.9, 0.8, 0.85, 0.95, 0.1, 0.2, 0.15, 0.05]
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    assert auroc(scores, labels) == 9 / 16  # each easy-video positive above the three hard-video negatives
    assert metrics.within_video_auroc(scores, labels, [0, 4, 8]) == (0.0, 2)


def test_within_video_auroc_refuses_bad_inputs():
    assert metrics.within_video_auroc([0.1, 0.2], [1, 1], [0, 2]).videos == 0
    assert np.isnan(metrics.within_video_auroc([0.1, 0.2], [1, 1], [0, 2]).mean)
    with pytest.raises(ValueError, match="offsets"):
        metrics.auroc_per_video([0.1, 0.2], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc_per_video([0.1, np.nan], [0, 1], [0, 2])
