"""Clip selectors and video predictions: worked examples, hand computations, and vectorised == per-video."""

import doctest
from fractions import Fraction

import numpy as np
import pytest

from condi_pipe.methods import clip_selectors, samplers
from condi_pipe.methods.clip_selectors import (
    ClipSelector,
    DenseSelector,
    EquidistantSelector,
    FlatVideos,
    LowestEntropySelector,
    OracleSelector,
    RandomSelector,
    RankedByScoreSelector,
    VideoClips,
    accuracy_for_ks,
    predict_video,
    predict_video_division,
)
from condi_pipe.methods.samplers import (
    equidistant_indices,
    predict_videos,
    predict_videos_division,
    rank_within_videos,
    ranked_predictions_for_ks,
    select_ranked_batch,
    top_k_indices,
    video_accuracy,
)

KS = range(1, 18)


@pytest.mark.parametrize("module", [samplers, clip_selectors])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def random_probs(rng, rows, classes, sharpness=2.0):
    logits = rng.normal(0, sharpness, (rows, classes))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def random_flat(seed, num_videos=150, classes=7, max_clips=15):
    rng = np.random.default_rng(seed)
    videos = []
    for v in range(num_videos):
        n = int(rng.integers(1, max_clips + 1))
        confidence = rng.normal(size=n)
        confidence[rng.random(n) < 0.3] = 0.5  # plenty of ties
        videos.append(VideoClips(
            teacher_probs=random_probs(rng, n, classes),
            label=int(rng.integers(classes)),
            student_probs=random_probs(rng, n, classes, sharpness=1.0),
            confidence=confidence,
            index=v,
        ))
    return FlatVideos.from_videos(videos)


ALL_SELECTORS = [DenseSelector(), OracleSelector(), RandomSelector(0), RandomSelector(1), EquidistantSelector(),
                 RankedByScoreSelector(), LowestEntropySelector()]


# ------------------------------------------------------------------------------------------ equidistant


def test_equidistant_worked_examples():
    assert equidistant_indices(10, 3).tolist() == [1, 5, 8]
    assert equidistant_indices(10, 10).tolist() == list(range(10))
    assert equidistant_indices(4, 9).tolist() == [0, 1, 2, 3]
    assert equidistant_indices(1, 1).tolist() == [0]
    assert equidistant_indices(10, 1).tolist() == [5]
    assert equidistant_indices(8, 4).tolist() == [1, 3, 5, 7]


def test_equidistant_is_segment_centres():
    for n in range(1, 40):
        for k in range(1, n):
            expected = [int(Fraction(2 * i + 1, 2 * k) * n) for i in range(k)]  # exact floor of the centre
            got = equidistant_indices(n, k).tolist()
            assert got == expected
            assert len(set(got)) == k and got == sorted(got) and got[-1] < n


# --------------------------------------------------------------------------------------- k validation


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_k_must_be_positive(selector):
    video = random_flat(0, num_videos=1).video(0)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"k must be >= 1, got {bad}"):
            selector.select(video, bad)
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        selector.select(video, 1.5)


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_k_at_least_n_selects_every_clip(selector):
    video = random_flat(1, num_videos=1, max_clips=6).video(0)
    n = video.num_clips
    for k in (n, n + 1, 100):
        assert sorted(selector.select(video, k).tolist()) == list(range(n))


# ------------------------------------------------------------------------------------------------ ranking


def test_ties_go_to_the_lower_clip_index():
    assert top_k_indices(np.zeros(5), 3).tolist() == [0, 1, 2]
    scores = np.array([0.3, 0.8, 0.3, 0.8, 0.3, -0.0, 0.0])
    assert top_k_indices(scores, 7).tolist() == [1, 3, 0, 2, 4, 5, 6]
    video = VideoClips(np.full((7, 2), 0.5), label=0, confidence=scores)
    assert RankedByScoreSelector().select(video, 4).tolist() == [1, 3, 0, 2]
    offsets = np.array([0, 3, 7])
    assert rank_within_videos(scores, offsets).tolist() == [1, 0, 2, 0, 1, 2, 3]


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="scores contain NaN"):
        top_k_indices(np.array([0.1, np.nan]), 1)
    with pytest.raises(ValueError, match="scores contain NaN"):
        rank_within_videos(np.array([0.1, np.nan]), np.array([0, 2]))


def test_lowest_entropy_prefers_peaked_student_clips():
    student = np.array([[0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01], [0.5, 0.5, 0.0, 0.0]])
    video = VideoClips(np.full((3, 4), 0.25), label=0, student_probs=student)
    assert LowestEntropySelector().select(video, 3).tolist() == [1, 2, 0]


def test_oracle_beats_dense_on_constructed_data():
    # every video: one clip confidently right, three clips confidently wrong (but split between two wrong
    # classes so none dominates alone), so the dense mean is wrong and the oracle's top clip is right
    videos = []
    for v in range(20):
        label = v % 5
        wrong_a, wrong_b = (label + 1) % 5, (label + 2) % 5
        probs = np.full((4, 5), 0.01)
        probs[0, label] = 0.96
        probs[1, wrong_a] = probs[2, wrong_a] = probs[3, wrong_b] = 0.96
        videos.append(VideoClips(probs, label=label, index=v))
    flat = FlatVideos.from_videos(videos)
    dense = video_accuracy(flat.teacher_probs, flat.labels, flat.offsets, DenseSelector().select_mask(flat))
    oracle = accuracy_for_ks(OracleSelector(), flat, [1, 2, 3, 4])
    assert dense == 0.0
    assert oracle[1] == 1.0
    assert all(accuracy >= dense for accuracy in oracle.values())
    assert oracle[4] == dense  # K = N is dense again
    for video in videos:
        assert predict_video(video.teacher_probs, OracleSelector().select(video, 1)) == video.label


# --------------------------------------------------------------------------------------------- random


def test_random_is_reproducible_by_seed_and_order_free():
    flat = random_flat(2, num_videos=40)
    first = [RandomSelector(5).select(flat.video(v), 3).tolist() for v in range(40)]
    again = [RandomSelector(5).select(flat.video(v), 3).tolist() for v in reversed(range(40))][::-1]
    other_seed = [RandomSelector(6).select(flat.video(v), 3).tolist() for v in range(40)]
    assert first == again
    assert first != other_seed
    selector = RandomSelector(5)
    for v in range(40):  # the K-clip choice is nested in the (K+1)-clip choice
        video = flat.video(v)
        assert set(selector.select(video, 2)) <= set(selector.select(video, 3))


def test_random_is_roughly_uniform():
    videos = [VideoClips(np.full((5, 2), 0.5), 0, index=v) for v in range(5000)]
    picks = np.bincount([RandomSelector(0).select(video, 1)[0] for video in videos], minlength=5)
    assert np.all(np.abs(picks / 5000 - 0.2) < 0.03)


# ------------------------------------------------------------------------------------------- division


def test_division_equals_hand_computation():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    student = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]])
    z_scores = np.array([0.1, 2.0, 1.5, -1.0])
    # student entropies: clip 0 lowest, then clip 2, then clip 1, then clip 3 (near uniform)
    # K = 3, K_s = 2: student clips {0, 2}; teacher K_t = 1 clip by z~: {1}
    # vectors: clip 0 student, clip 1 teacher, clip 2 student
    expected = (student[0] + teacher[1] + student[2]) / 3  # = [0.3667, 0.25, 0.3833] -> class 2
    result = predict_video_division(teacher, student, z_scores, k=3, ks=2)
    assert result == (int(expected.argmax()), 1, 2) and result.prediction == 2
    # K = 3, K_s = 1: student {0}; teacher {1, 2}; no overlap
    expected = (student[0] + teacher[1] + teacher[2]) / 3
    assert predict_video_division(teacher, student, z_scores, k=3, ks=1) == (int(expected.argmax()), 2, 1)
    # K = 4, K_s = 2: student {0, 2}; teacher {1, 2}; clip 2 is in both lists and gets the mean of its vectors
    expected = (student[0] + teacher[1] + (teacher[2] + student[2]) / 2) / 3
    assert predict_video_division(teacher, student, z_scores, k=4, ks=2) == (int(expected.argmax()), 2, 2)
    # K_s = 0 is plain ConDi-SR (type a); K_s = K is the student alone
    assert predict_video_division(teacher, student, z_scores, k=2, ks=0).prediction == predict_video(teacher, [1, 2])
    student_only = int(((student[0] + student[2]) / 2).argmax())
    assert predict_video_division(teacher, student, z_scores, k=2, ks=2) == (student_only, 0, 2)
    # budgets beyond N use all clips of each list
    assert predict_video_division(teacher, student, z_scores, k=9, ks=3)[1:] == (4, 3)
    with pytest.raises(ValueError, match=r"ks must be an integer in \[0, k=2\], got 3"):
        predict_video_division(teacher, student, z_scores, k=2, ks=3)


# --------------------------------------------------------------------------------- vectorised == per video


def test_flat_round_trip():
    flat = random_flat(3, num_videos=10)
    again = FlatVideos.from_videos([flat.video(v) for v in range(flat.num_videos)])
    for a, b in zip(flat, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_vectorised_selection_equals_per_video(seed, selector):
    flat = random_flat(seed)
    for k in KS:
        mask = selector.select_mask(flat, k)
        looped = ClipSelector.select_mask(selector, flat, k)  # the base class's per-video loop
        np.testing.assert_array_equal(mask, looped)
        per_video_predictions = [predict_video(flat.video(v).teacher_probs, selector.select(flat.video(v), k))
                                 for v in range(flat.num_videos)]
        np.testing.assert_array_equal(predict_videos(flat.teacher_probs, flat.offsets, mask), per_video_predictions)
    accuracies = accuracy_for_ks(selector, flat, KS)
    for k in KS:
        per_video = np.mean([predict_video(flat.video(v).teacher_probs, selector.select(flat.video(v), k))
                             == flat.labels[v] for v in range(flat.num_videos)])
        assert accuracies[k] == per_video


@pytest.mark.parametrize("selector", [OracleSelector(), RankedByScoreSelector(), LowestEntropySelector()], ids=repr)
def test_incremental_curve_equals_mask_path(selector):
    flat = random_flat(5)
    ranks = selector.ranks(flat)
    curve = ranked_predictions_for_ks(flat.teacher_probs, flat.offsets, ranks, [7, 1, 3, 1, 30])
    assert sorted(curve) == [1, 3, 7, 30]
    for k, predictions in curve.items():
        np.testing.assert_array_equal(predictions, predict_videos(flat.teacher_probs, flat.offsets, ranks < k))


def test_select_ranked_batch_matches_top_k():
    flat = random_flat(4)
    for k in (1, 3, 5):
        mask = select_ranked_batch(flat.confidence, flat.offsets, k)
        for v in range(flat.num_videos):
            video = flat.video(v)
            assert np.flatnonzero(mask[flat.offsets[v]:flat.offsets[v + 1]]).tolist() == sorted(
                top_k_indices(video.confidence, k).tolist())


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_division_equals_per_video(seed):
    flat = random_flat(seed)
    confidence_ranks = rank_within_videos(flat.confidence, flat.offsets)
    entropy_ranks = LowestEntropySelector().ranks(flat)
    for k in (1, 3, 5, 7, 20):
        for ks in range(0, k + 1):
            batch = predict_videos_division(flat.teacher_probs, flat.student_probs, flat.offsets,
                                            confidence_ranks, entropy_ranks, k, ks)
            for v in range(flat.num_videos):
                video = flat.video(v)
                single = predict_video_division(video.teacher_probs, video.student_probs, video.confidence, k, ks)
                assert single == (batch.predictions[v], batch.num_teacher_clips[v], batch.num_student_clips[v])


def test_predictions_reject_videos_without_selected_clips():
    flat = random_flat(0, num_videos=3)
    mask = np.zeros(flat.num_clips, dtype=bool)
    mask[0] = True
    with pytest.raises(ValueError, match="every video needs at least one selected clip"):
        predict_videos(flat.teacher_probs, flat.offsets, mask)
    with pytest.raises(ValueError, match="no clip selected"):
        predict_video(flat.teacher_probs, [])
