"""The adaptive table from plain arrays (report.memory): thresholds come from the validation part only, times are
sequential single-clip calls on the curves, and the comparison with fixed K interpolates between neighbouring K."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.methods.adaptive_budgets import DEFAULT_MAX_CLIPS, choose_threshold, teacher_steps
from condi_pipe.methods.metrics import softmax
from condi_pipe.methods.video_time import chunked_batch_seconds
from condi_pipe.report.adaptive import fixed_mix
from condi_pipe.report.inputs import SideBySideTimings
from condi_pipe.report.memory import MemoryInputs, build_table

CLASSES = 4


def part(rng, videos: int, video_id0: int = 0) -> dict:
    """Videos of 1..9 clips whose teacher leans to the label on most clips, and a student score that knows it."""
    clips = rng.integers(1, 10, videos)
    labels = rng.integers(0, CLASSES, videos)
    right = np.repeat(labels, clips)
    teacher = rng.normal(size=(clips.sum(), CLASSES))
    teacher[np.arange(len(right)), right] += rng.normal(1.0, 1.5, len(right))
    rank_score = teacher[np.arange(len(right)), right] - teacher.max(axis=1) + rng.normal(0, 0.5, len(right))
    return {"video_id": np.arange(videos) + video_id0, "labels": labels, "clips": clips, "rank_score": rank_score,
            "logits": rng.normal(size=(clips.sum(), CLASSES)), "teacher_logits": teacher}


def inputs(test_seed: int = 0, validation_seed: int = 100, *, validation: bool = True) -> MemoryInputs:
    test = part(np.random.default_rng(test_seed), 80)
    run = {"loss": "condi-sr", "logits": test["logits"], "rank_score": test["rank_score"],
           "confidence": 1 / (1 + np.exp(-test["rank_score"])), "seconds": np.full(80, 0.002)}
    if validation:
        run["validation"] = part(np.random.default_rng(validation_seed), 50, video_id0=1000)
    return MemoryInputs(video_id=test["video_id"], labels=test["labels"], clips=test["clips"],
                        teacher_logits=test["teacher_logits"], teacher_seconds=0.01 * test["clips"],
                        runs={"good": run})


def adaptive_rows(table):
    return {row.method: row for row in table.rows if "policy" in row.extra}


def test_rows_carry_the_policy_its_threshold_and_the_cis():
    rows = adaptive_rows(build_table(inputs(), "adaptive"))
    assert set(rows) == {f"condi-sr@{rule}:{target:g}" for rule in ("z-threshold", "confident-mean")
                         for target in (1.5, 2, 3, 4)}
    for row in rows.values():
        assert row.k is None and row.extra["chosen_on"] == "validation" and row.extra["max_clips"] == DEFAULT_MAX_CLIPS
        assert 1.0 <= row.extra["mean_teacher_clips"] <= DEFAULT_MAX_CLIPS
        low, high = row.extra["ci95_vs_dense_pp"]
        assert low <= row.extra["diff_vs_dense_pp"] <= high
        # the clips it sends, video by video, add up to its mean
        counts = np.asarray(row.extra["videos_by_teacher_clips"])
        assert counts.sum() == 80 and (counts * np.arange(1, len(counts) + 1)).sum() / 80 == pytest.approx(
            row.extra["mean_teacher_clips"])


def test_thresholds_are_chosen_on_the_validation_part():
    data = inputs()
    rows = adaptive_rows(build_table(data, "adaptive"))
    kept = data.run_validation(data.runs[0])
    for rule in ("z-threshold", "confident-mean"):
        steps = teacher_steps(softmax(kept.teacher_logits.astype(np.float64)), kept.rank_score, kept.offsets,
                              DEFAULT_MAX_CLIPS)
        for target in (1.5, 2.0, 3.0, 4.0):
            row = rows[f"condi-sr@{rule}:{target:g}"]
            choice = choose_threshold(rule, steps, target)
            assert row.extra["threshold"] == pytest.approx(choice.threshold)
            assert row.extra["validation"]["mean_teacher_clips"] == pytest.approx(choice.mean_clips)
            assert row.extra["validation"]["mean_teacher_clips"] <= target
            if rule == "z-threshold":  # a threshold on the confidence logit: the z~ it stands for beside it
                assert row.extra["threshold_z"] == pytest.approx(1 / (1 + np.exp(-choice.threshold)))
            else:
                assert "threshold_z" not in row.extra


def test_other_test_outputs_do_not_move_the_thresholds():
    """Every test-split output changed (teacher logits, student scores, labels, clip counts): the thresholds stay,
    while what they select on the test split changes; another validation part moves them."""
    first, other_test = (adaptive_rows(build_table(inputs(test_seed=seed), "adaptive")) for seed in (0, 1))
    other_validation = adaptive_rows(build_table(inputs(validation_seed=101), "adaptive"))
    assert {m: r.extra["threshold"] for m, r in first.items()} == {m: r.extra["threshold"]
                                                                   for m, r in other_test.items()}
    assert [r.extra["mean_teacher_clips"] for r in first.values()] != [r.extra["mean_teacher_clips"]
                                                                       for r in other_test.values()]
    assert {m: r.extra["threshold"] for m, r in first.items()} != {m: r.extra["threshold"]
                                                                   for m, r in other_validation.items()}


def test_time_is_sequential_single_clip_calls_on_the_side_by_side_curves():
    data = inputs()
    teacher_curve = {"batch": list(range(1, 10)), "seconds": [0.014, 0.013, 0.018, 0.024, 0.03, 0.045, 0.054,
                                                              0.072, 0.075]}
    student_curve = {"batch": list(range(1, 10)), "seconds": [0.001 * b + 0.004 for b in range(1, 10)]}
    data.teacher_time = "side-by-side"
    data.side_by_side = SideBySideTimings({"teacher/teacher": teacher_curve, "scores/good": student_curve},
                                          {"max_batch": 9, "batches": list(range(1, 10))})
    table = build_table(data, "adaptive")
    student = float(np.mean([0.001 * n + 0.004 for n in data.clips]))  # the student's curve at each video's N
    assert len(adaptive_rows(table)) == 8
    for row in adaptive_rows(table).values():
        clips = row.extra["mean_teacher_clips"]
        assert row.extra["student_s"] == pytest.approx(student)
        assert row.extra["teacher_s"] == pytest.approx(0.014 * clips)  # j calls of one clip: 14 ms each
        assert row.extra["teacher_s_side_by_side"] == pytest.approx(0.014 * clips)
        assert row.extra["teacher_s_share"] == pytest.approx(0.01 * clips)  # 10 ms per clip in the videos' batches
        assert row.time_per_video_s == pytest.approx(student + 0.014 * clips + row.extra["selection_s"])
    dense = next(row for row in table.rows if row.method == "dense")
    assert dense.time_per_video_s == pytest.approx(chunked_batch_seconds(teacher_curve, data.clips, 9).mean())
    fixed = next(row for row in table.rows if row.method == "condi-sr" and row.k == 3)  # one batch of min(3, N)
    assert fixed.extra["teacher_s"] == pytest.approx(np.mean([teacher_curve["seconds"][min(3, n) - 1]
                                                              for n in data.clips]))


def test_time_on_the_teacher_latency_curve():
    data = inputs()
    data.curve, data.teacher_time = {"batch": [1, 4], "seconds": [0.02, 0.05]}, "curve"
    rows = adaptive_rows(build_table(data, "adaptive"))
    assert len(rows) == 8
    for row in rows.values():
        assert row.extra["teacher_s"] == pytest.approx(0.02 * row.extra["mean_teacher_clips"])
        assert row.extra["student_s"] == pytest.approx(0.002)  # the run's measured seconds


def test_the_comparison_with_fixed_k_interpolates_at_equal_clips():
    table = build_table(inputs(), "adaptive", k=list(range(1, 10)))
    fixed = {row.k: row for row in table.rows if row.method == "condi-sr"}
    compared = 0
    for row in adaptive_rows(table).values():
        versus = row.extra["versus_fixed_clips"]
        low, high = versus["k_low"], versus["k_high"]
        clips = row.extra["mean_teacher_clips"]
        at = {k: fixed[k].extra["mean_teacher_clips"] for k in (low, high)}
        assert at[low] <= clips and (high == low or clips < at[high])
        weight = 0.0 if high == low else (clips - at[low]) / (at[high] - at[low])
        assert versus["weight_high"] == pytest.approx(weight)
        expected = (1 - weight) * fixed[low].accuracy + weight * fixed[high].accuracy
        assert versus["fixed_accuracy"] == pytest.approx(expected)
        assert versus["diff_pp"] == pytest.approx(row.accuracy - expected)
        assert versus["ci95_pp"][0] <= versus["diff_pp"] <= versus["ci95_pp"][1]
        compared += high != low
    assert compared  # some rows fall between two K


def test_fixed_mix_takes_the_largest_k_within_the_cost():
    correct = {1: np.array([0.0, 1.0]), 2: np.array([1.0, 1.0]), 3: np.array([1.0, 0.0])}
    mix = fixed_mix(1.45, {1: 1.0, 2: 1.9, 3: 2.6}, correct)
    assert (mix.k_low, mix.k_high, mix.weight) == (1, 2, pytest.approx(0.5))
    assert mix.correct == pytest.approx([0.5, 1.0]) and mix.accuracy == pytest.approx(75.0)
    assert fixed_mix(2.6, {1: 1.0, 2: 1.9, 3: 2.6}, correct).k_high == 3  # exactly K = 3
    assert fixed_mix(0.5, {1: 1.0, 2: 1.9, 3: 2.6}, correct) is None  # no K that cheap
    assert fixed_mix(3.0, {1: 1.0, 2: 1.9, 3: 2.6}, correct) is None  # every K cheaper
    # time is not monotone in K on a measured curve (batch 2 can be faster than batch 1): the largest K within it
    mix = fixed_mix(0.019, {1: 0.02, 2: 0.018, 3: 0.03}, correct)
    assert (mix.k_low, mix.k_high, mix.weight) == (2, 3, pytest.approx(0.001 / 0.012))


def test_a_run_without_validation_scores_gets_a_note_and_no_adaptive_rows():
    table = build_table(inputs(validation=False), "adaptive")
    assert not adaptive_rows(table)
    assert any("ConDi-SR: run good keeps no validation scores; no adaptive rows." in line for line in table.footer)
    assert [row.method for row in table.rows] == ["dense"]
