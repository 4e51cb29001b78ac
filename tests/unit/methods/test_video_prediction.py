"""video_predictions: the argmax (first maximum) of the float64 mean of each video's chosen clip probabilities, the
same numbers as the per-video reference ``clip_selectors.predict_video``."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.methods.clip_selectors import predict_video
from condi_pipe.methods.samplers import predict_videos
from condi_pipe.methods.video_prediction import video_mean_probs, video_predictions


def _videos(seed: int, counts=(3, 1, 5, 2)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), size=sum(counts)).astype(np.float32)
    return probs, np.concatenate([[0], np.cumsum(counts)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_predictions_equal_the_per_video_reference(seed):
    probs, offsets = _videos(seed)
    mask = np.random.default_rng(seed + 10).random(len(probs)) < 0.6
    mask[offsets[:-1]] = True  # every video keeps a clip
    expected = [predict_video(probs[a:b], np.flatnonzero(mask[a:b])) for a, b in zip(offsets[:-1], offsets[1:])]
    np.testing.assert_array_equal(video_predictions(probs, offsets, mask), expected)
    np.testing.assert_array_equal(predict_videos(probs, offsets, mask), expected)


def test_without_a_mask_every_clip_counts_in_float64():
    probs, offsets = _videos(3)
    means = video_mean_probs(probs, offsets)
    assert means.dtype == np.float64
    for v, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        np.testing.assert_array_equal(means[v], probs[a:b].astype(np.float64).sum(0) / (b - a))
    np.testing.assert_array_equal(video_predictions(probs, offsets), means.argmax(1))
    np.testing.assert_array_equal(video_mean_probs(probs, offsets, np.ones(len(probs), bool)), means)


def test_ties_go_to_the_first_class():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.4, 0.2, 0.4]])
    np.testing.assert_array_equal(video_predictions(probs, np.array([0, 1, 3])), [0, 2])


def test_no_videos_and_refusals():
    assert video_predictions(np.zeros((0, 3)), np.array([0])).shape == (0,)
    assert video_mean_probs(np.zeros((0, 3)), np.array([0])).shape == (0, 3)
    probs, offsets = _videos(0)
    mask = np.zeros(len(probs), bool)
    mask[0] = True
    with pytest.raises(ValueError, match="every video needs at least one selected clip"):
        video_predictions(probs, offsets, mask)
    with pytest.raises(ValueError, match="offsets must be an increasing"):
        video_predictions(probs, np.array([0, 3, 3, len(probs)]))
    with pytest.raises(ValueError, match="offsets must be an increasing"):
        video_predictions(probs, np.array([0, 5]))
    with pytest.raises(ValueError, match="mask must have shape"):
        video_predictions(probs, offsets, mask[:-1])
