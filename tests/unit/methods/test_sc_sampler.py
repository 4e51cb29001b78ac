"""SCSampler (``sc-sampler``): a clip classifier trained on the video labels alone, its loss against cross-entropy
written out by hand, and its saliency ranking (the largest softmax probability) against a plain computation."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from condi_pipe.methods.catalogue import ClipBatch, LossContext
from condi_pipe.methods.losses import sc_sampler_loss
from condi_pipe.methods.registry import get_method, max_log_probability, ranking_scores
from condi_pipe.methods.samplers import rank_within_videos


def cross_entropy_by_hand(logits: np.ndarray, labels: np.ndarray) -> float:
    """mean over clips of -log softmax(logits)[label], one clip at a time in float64."""
    total = 0.0
    for row, label in zip(logits.astype(np.float64), labels):
        top = max(row)
        total += -(row[label] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / len(labels)


@pytest.mark.parametrize("seed, classes", [(0, 3), (1, 10), (2, 101)])
def test_the_loss_is_cross_entropy_against_the_video_label(seed, classes):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (16, classes))
    labels = rng.integers(0, classes, 16)
    terms = sc_sampler_loss(torch.from_numpy(logits), torch.from_numpy(labels))
    assert float(terms.total) == pytest.approx(cross_entropy_by_hand(logits, labels), rel=1e-12)
    assert float(terms.ce) == float(terms.total) and terms.num_samples == 16
    assert float(terms.kd) == float(terms.conf) == float(terms.rep) == 0.0  # no teacher, no confidence term


def test_the_registered_method_trains_on_labels_only():
    method = get_method("sc-sampler")
    assert (method.display, method.level, method.ranking) == ("SCSampler", "clip", "max-prob")
    assert not method.needs_confidence_head and not method.default and not method.uses_teacher_features
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    context = LossContext(options=None, budget=None)  # no hyperparameter and no lambda to read
    batch = ClipBatch(logits, None, torch.randn(6, 4, generator=generator), torch.tensor([1, 0] * 3), labels,
                      generator)
    terms, weight = method.loss(batch, context)
    other_teacher, _ = method.loss(batch._replace(teacher_logits=torch.randn(6, 4), z=torch.zeros(6)), context)
    assert float(terms.total.detach()) == pytest.approx(cross_entropy_by_hand(logits.detach().numpy(), labels.numpy()))
    # the teacher's outputs and z are not read
    assert float(other_teacher.total.detach()) == float(terms.total.detach())
    assert math.isnan(weight) and terms.total.requires_grad


def test_saliency_is_the_largest_softmax_probability():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (9, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = ranking_scores("max-prob", logits, None)
    np.testing.assert_allclose(scores, np.log(probabilities.max(axis=1)), rtol=1e-12, atol=0)
    # the ranking: most salient first within each video (ties to the lower index), as the probability orders them
    offsets = np.array([0, 4, 9])
    expected = np.concatenate([np.argsort(np.argsort(-probabilities[a:b].max(axis=1), kind="stable"), kind="stable")
                               for a, b in pairwise(offsets)])
    assert rank_within_videos(scores, offsets).tolist() == expected.tolist()


def test_confident_clips_stay_apart_where_the_probability_rounds_to_one():
    logits = np.array([[40.0, 0.0, 0.0], [45.0, 0.0, 0.0], [3.0, 3.0, 0.0]])
    assert np.exp(logits[0]).max() / np.exp(logits[0]).sum() == 1.0  # float64 softmax saturates
    scores = max_log_probability(logits)
    assert scores[1] > scores[0] > scores[2]
    assert scores[0] == pytest.approx(-2 * math.exp(-40.0), rel=1e-12)
    assert scores[2] == pytest.approx(math.log(math.exp(3) / (2 * math.exp(3) + 1)), rel=1e-12)  # two tied top classes


def test_bad_logits_are_refused():
    with pytest.raises(ValueError, match=r"logits must have shape \(M, C\)"):
        max_log_probability(np.zeros(4))
    with pytest.raises(ValueError, match="unknown ranking 'max_prob'"):
        ranking_scores("max_prob", np.zeros((2, 3)), None)
