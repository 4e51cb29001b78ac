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


def inputs(test_seed: int = 0, validation_seed: int = 100, *, validation: bool = True,
           model_flops: dict | None = None) -> MemoryInputs:
    test = part(np.random.default_rng(test_seed), 80)
    run = {"loss": "condi-sr", "logits": test["logits"], "rank_score": test["rank_score"],
           "confidence": 1 / (1 + np.exp(-test["rank_score"])), "seconds": np.full(80, 0.002)}
    if validation:
        run["validation"] = part(np.random.default_rng(validation_seed), 50, video_id0=1000)
    return MemoryInputs(video_id=test["video_id"], labels=test["labels"], clips=test["clips"],
                        teacher_logits=test["teacher_logits"], teacher_seconds=0.01 * test["clips"],
                        runs={"good": run}, model_flops=model_flops)


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


# ------------------------------------------------------------- GFLOPs per video and the front (report.cost)
# the teacher 8 GFLOPs per clip, the run's student 0.5
FLOPS = {"teacher/teacher": 8_000_000_000, "scores/good": 500_000_000}


def test_gflops_of_videos_sending_different_clips_by_hand():
    from condi_pipe.report.cost import sent_gflops

    def three_videos(model_flops):  # of 3, 1 and 4 clips
        return MemoryInputs(video_id=[1, 2, 3], labels=[0, 0, 0], clips=[3, 1, 4], teacher_logits=np.zeros((8, 2)),
                            teacher_seconds=[0.03, 0.01, 0.04], runs={"good": {"loss": "condi-sr"}},
                            model_flops=model_flops)

    # the videos send 2, 1 and 4 clips: the student on every clip, the teacher on the clips sent
    parts = sent_gflops(three_videos(FLOPS), "good", np.array([2, 1, 4]))
    assert parts["student_gflops"] == pytest.approx(0.5 * (3 + 1 + 4) / 3)
    assert parts["teacher_gflops"] == pytest.approx(8 * (2 + 1 + 4) / 3)
    assert parts["gflops_per_video"] == pytest.approx(0.5 * 8 / 3 + 8 * 7 / 3)
    uncounted = three_videos({"teacher/teacher": FLOPS["teacher/teacher"]})  # a student without a count: none
    assert sent_gflops(uncounted, "good", np.array([2, 1, 4])) == dict.fromkeys(
        ("gflops_per_video", "student_gflops", "teacher_gflops"))


def test_adaptive_rows_cost_the_student_on_all_clips_and_the_teacher_on_the_clips_sent():
    data = inputs(model_flops=FLOPS)
    table = build_table(data, "adaptive", k=[1, 2])
    student = 0.5 * data.clips.mean()
    for row in adaptive_rows(table).values():
        sent = np.asarray(row.extra["videos_by_teacher_clips"])  # videos sending 1, 2, ... clips
        teacher = 8 * (sent * np.arange(1, len(sent) + 1)).sum() / len(data.clips)
        assert row.extra["student_gflops"] == pytest.approx(student)
        assert row.extra["teacher_gflops"] == pytest.approx(teacher)
        assert row.extra["gflops_per_video"] == pytest.approx(student + teacher)
    assert any(np.count_nonzero(row.extra["videos_by_teacher_clips"]) > 1 for row in adaptive_rows(table).values())
    fixed = {row.k: row for row in table.rows if row.method == "condi-sr"}
    assert fixed[2].extra["gflops_per_video"] == pytest.approx(student + 8 * np.minimum(2, data.clips).mean())
    dense = next(row for row in table.rows if row.method == "dense")
    assert dense.extra["gflops_per_video"] == pytest.approx(8 * data.clips.mean())
    # the cells show them as Table 3's do
    assert table.columns[5] == "Time per video, GFLOPs (accuracy) [CI vs Dense]"
    assert all(" GFLOPs (" in line[5] for line in table.cells)
    assert any(line.startswith("Note: GFLOPs of an adaptive row: its student on all N clips") for line in table.footer)


def test_the_pareto_front_runs_over_fixed_k_adaptive_rows_dense_and_table_3s_methods():
    from condi_pipe.report.cost import PLOT_SERIES

    table = build_table(inputs(model_flops=FLOPS), "adaptive", k=[1, 2, 3])
    everything = table.series[PLOT_SERIES]["points"]
    assert "equidistant" in {p["method"] for p in everything} - {row.method for row in table.rows}  # Table 3's
    points = [(p["gflops"], p["accuracy"]) for p in everything]

    def on_front(cost, accuracy):
        return not any(c <= cost and a >= accuracy and (c, a) != (cost, accuracy) for c, a in points)

    assert [p["front"] for p in everything] == [on_front(c, a) for c, a in points]
    assert [row.extra["pareto_front"] for row in table.rows] == [
        on_front(row.extra["gflops_per_video"], row.accuracy) for row in table.rows]
    note = next(line for line in table.footer if "Pareto front" in line)
    cheapest = min((p for p in everything if p["front"]), key=lambda p: p["gflops"])
    assert note.split("by cost: ")[1].startswith(cheapest["label"])


def test_without_stored_flops_the_rows_carry_null_and_the_note():
    table = build_table(inputs(), "adaptive", k=[1])
    assert len(adaptive_rows(table)) == 8
    assert all(row.extra["gflops_per_video"] is None and "pareto_front" not in row.extra for row in table.rows)
    assert not any("GFLOPs" in cell for line in table.cells for cell in line) and "GFLOPs" not in table.columns[5]
    notes = [line for line in table.footer if "GFLOPs" in line]
    assert len(notes) == 1 and "`condi-pipe time-models --teacher teacher` adds them" in notes[0]
    assert table.series == {}


def test_the_gflops_figure_holds_every_row_with_a_marker_per_policy(tmp_path):
    from condi_pipe.report.cost import PLOT_SERIES
    from condi_pipe.report.plot import plot_accuracy_vs_gflops
    from condi_pipe.report.write import write_table

    table = build_table(inputs(model_flops=FLOPS), "adaptive", k=[1, 2])
    series = table.series[PLOT_SERIES]
    # the table's own rows, in order, then Table 3's other methods at the same K
    shown = [(p["method"], p["k"], p["gflops"], p["accuracy"], p["front"]) for p in series["points"]]
    assert shown[:len(table.rows)] == [
        (row.method, row.k, row.extra["gflops_per_video"], row.accuracy, row.extra["pareto_front"])
        for row in table.rows]
    assert {p["method"] for p in series["points"][len(table.rows):]} >= {"equidistant"}
    assert not {p["method"] for p in series["points"][len(table.rows):]} & {row.method for row in table.rows}
    assert {p["label"] for p in series["points"] if p["policy"]} == {
        f"ConDi-SR {rule} target={target:g}" for rule in ("z-threshold", "confident-mean") for target in (1.5, 2, 3, 4)}
    # `report --table adaptive --plot` and a run's [report] plots: the table's figure and the GFLOPs one beside it
    write_table(table, str(tmp_path / "table-adaptive"), formats=("json",), plot=True)
    assert all((tmp_path / name).stat().st_size > 0 for name in ("table-adaptive.png", "table-adaptive-gflops.png"))
    ax = plot_accuracy_vs_gflops(table, str(tmp_path / "again.png")).axes[0]
    drawn = {line.get_label(): line for line in ax.lines}
    for rule in ("z-threshold", "confident-mean"):
        rows = [row for row in adaptive_rows(table).values() if row.extra["policy"] == rule]
        assert list(drawn[f"ConDi-SR {rule}"].get_xdata()) == [row.extra["gflops_per_video"] for row in rows]
    markers = {drawn[name].get_marker() for name in ("ConDi-SR", "ConDi-SR z-threshold", "ConDi-SR confident-mean")}
    assert len(markers) == 3 and drawn["Dense"].get_marker() == "*"
    front = sorted((p["gflops"], p["accuracy"]) for p in series["points"] if p["front"])
    assert list(zip(drawn["Pareto front"].get_xdata(), drawn["Pareto front"].get_ydata())) == front
