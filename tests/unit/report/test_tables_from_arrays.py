"""A table computed from plain arrays (report.memory): no store, every number checked by hand."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from condi_pipe.report import memory
from condi_pipe.report.memory import MemoryInputs, build_table


def inputs(extra_runs=None, model_flops=None):
    """Two videos. Video 7 (label 0): clip 0 says 0 firmly, clips 1-2 say 1 mildly. Video 9 (label 1): one clip,
    right. ConDi-SR's run trusts clip 0 most, ST-Conf's clip 2. ``extra_runs`` join them; ``model_flops``: FLOPs per
    clip by model key, as time-models stores them."""
    logits = np.log([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.2, 0.8]])
    student = {"loss": "condi-sr", "logits": np.zeros((4, 2)), "rank_score": [2.0, 0.5, 0.1, 1.0],
               "confidence": [0.9, 0.6, 0.5, 0.7], "seconds": [0.01, 0.02]}
    reversed_ = {**student, "loss": "st-conf", "rank_score": [0.1, 0.5, 2.0, 1.0]}
    return MemoryInputs(video_id=[7, 9], labels=[0, 1], clips=[3, 1], teacher_logits=logits,
                        teacher_seconds=[0.3, 0.1], runs={"good": student, "bad": reversed_, **(extra_runs or {})},
                        model_flops=model_flops)


def test_docstring_example():
    assert doctest.testmod(memory).failed == 0


def test_table3_from_arrays():
    table = build_table(inputs(), "3", k=[1, 2], methods="condi-sr,st-conf")
    rows = {(r.method, r.k): r for r in table.rows}
    # Dense: video 7 averages 0.567 for class 0 against 0.433: right
    assert rows[("dense", None)].accuracy == 100.0
    assert rows[("condi-sr", 1)].accuracy == 100.0  # clip 0 and the lone clip
    assert rows[("st-conf", 1)].accuracy == 50.0  # clip 2 says class 1 for video 7
    # K = 2: st-conf averages clips 2 and 1 of video 7 (class 1, wrong); condi-sr clips 0 and 1 (0.65: right)
    assert rows[("st-conf", 2)].accuracy == 50.0 and rows[("condi-sr", 2)].accuracy == 100.0
    # time: the student's seconds + the teacher's per-clip share x min(K, N) + the measured selection time
    condi = rows[("condi-sr", 1)]
    assert condi.extra["student_s"] == pytest.approx(0.015)
    assert condi.extra["teacher_s"] == pytest.approx((0.3 / 3 + 0.1) / 2)
    assert condi.time_per_video_s == pytest.approx(0.015 + 0.1 + condi.extra["selection_s"])
    assert rows[("dense", None)].time_per_video_s == pytest.approx(0.2)


def test_confidence_table_from_arrays():
    table = build_table(inputs(), "confidence")
    good = next(r for r in table.rows if r.method == "condi-sr")
    # teacher z per clip: [1, 0, 0, 1]; confidence > 0.5 on the z = 0 clips: 0.6 yes, 0.5 no -> FPR 1/2
    assert good.extra["fpr"] == pytest.approx(0.5)
    # rank_score [2, 0.5, 0.1, 1] against z [1, 0, 0, 1]: both positives above both negatives
    assert good.extra["auroc"] == pytest.approx(1.0)


def test_confidence_table_auroc_within_videos():
    table = build_table(inputs(), "confidence")
    good, bad = (next(r for r in table.rows if r.method == m) for m in ("condi-sr", "st-conf"))
    # only video 7 (z = [1, 0, 0]) has both classes; video 9's lone clip has z = 1
    assert (good.extra["auroc_within_videos"], good.extra["auroc_within_videos_count"]) == (1.0, 1)
    # bad ranks video 7's clips [0.1, 0.5, 2.0]: its one positive below both negatives. Pooled, video 9's clip
    # (1.0, z = 1) still beats the 0.5 negative: 1 of 4 pairs
    assert (bad.extra["auroc_within_videos"], bad.extra["auroc_within_videos_count"]) == (0.0, 1)
    assert bad.extra["auroc"] == pytest.approx(0.25)
    assert table.columns[3:5] == ("AUROC", "AUROC within videos")
    assert table.cells[0][3:5] == ("1.0000", "1.0000")
    assert any("averaged over the 1 of 2 videos that have both z = 0 and z = 1 clips" in line for line in table.footer)


def test_student_entropy_is_the_entropy_of_its_softmax():
    data = inputs()
    run = next(r for r in data.runs if r.run == "good")
    assert data.run_column(run, "entropy") == pytest.approx(np.full(4, np.log(2)))  # zero logits: uniform


# ------------------------------------------------------------------ GFLOPs per video (report.cost), by hand
# teacher 8 GFLOPs per clip, ConDi-SR's student 0.5, ST-Conf's 0.25, a Uniform-k student 1; videos of 3 and 1 clips
FLOPS = {"teacher/teacher": 8_000_000_000, "scores/good": 500_000_000, "scores/bad": 250_000_000,
         "scores/uni": 1_000_000_000}
UNIFORM_K = {"uni": {"loss": "uniform-k", "pred": [0, 1], "k": [2, 2], "seconds": [0.01, 0.01]}}


def gflops(row):
    return row.extra["gflops_per_video"], row.extra["student_gflops"], row.extra["teacher_gflops"]


def test_gflops_per_video_of_dense_top_k_and_a_video_level_student():
    table = build_table(inputs(UNIFORM_K, FLOPS), "3", k=[1, 2], methods="condi-sr,st-conf,uniform-k")
    rows = {(r.method, r.k): r for r in table.rows}
    assert gflops(rows[("dense", None)]) == pytest.approx((8 * (3 + 1) / 2, 0.0, 16.0))
    # top K: the student on all N clips + the teacher on min(K, N)
    assert gflops(rows[("condi-sr", 1)]) == pytest.approx((1.0 + 8.0, 0.5 * (3 + 1) / 2, 8 * (1 + 1) / 2))
    assert gflops(rows[("condi-sr", 2)]) == pytest.approx((1.0 + 12.0, 1.0, 8 * (2 + 1) / 2))
    assert gflops(rows[("st-conf", 2)]) == pytest.approx((0.5 + 12.0, 0.25 * 2, 12.0))
    # Uniform-k sees k = 2 clips of video 7 and the one clip of video 9; no teacher
    assert gflops(rows[("uniform-k", 2)]) == pytest.approx((1.0 * (2 + 1) / 2, 1.5, 0.0))
    assert "9.00 GFLOPs (100.00)" in table.cells[0][1] and "16.0 GFLOPs (100.00)" in table.cells[-1][1]


def test_gflops_per_video_with_division():
    table = build_table(inputs(model_flops=FLOPS), "4", k=[2], ks="0,1,2")
    rows = {r.ks: r for r in table.rows if r.method == "condi-sr"}
    # K_t = K - K_s clips to the teacher (capped at N), the student on all N whatever K_s
    assert gflops(rows[0]) == pytest.approx((1.0 + 12.0, 1.0, 8 * (2 + 1) / 2))
    assert gflops(rows[1]) == pytest.approx((1.0 + 8.0, 1.0, 8 * (1 + 1) / 2))
    assert gflops(rows[2]) == pytest.approx((1.0, 1.0, 0.0))
    assert any(line.startswith("Note: GFLOPs per video (after the time in each cell") for line in table.footer)


def test_table3_marks_and_lists_the_pareto_front():
    table = build_table(inputs(model_flops=FLOPS), "3", k=[1, 2], methods="condi-sr,st-conf")
    # (GFLOPs, accuracy): ST-Conf K=1 (8.5, 50), ConDi-SR K=1 (9, 100); ST-Conf K=2 (12.5, 50), ConDi-SR K=2
    # (13, 100) and Dense (16, 100) buy nothing more
    front = {(r.method, r.k) for r in table.rows if r.extra["pareto_front"]}
    assert front == {("st-conf", 1), ("condi-sr", 1)}
    note = next(line for line in table.footer if "Pareto front" in line)
    assert note.endswith("by cost: ST-Conf K=1 (8.50 GFLOPs, 50.00), ConDi-SR K=1 (9.00 GFLOPs, 100.00).")
    assert table.series["accuracy_vs_gflops"]["front"] == ["ST-Conf K=1", "ConDi-SR K=1"]


def test_without_stored_flops_the_column_stays_empty_with_one_note():
    table = build_table(inputs(), "3", k=[1], methods="condi-sr")
    assert all(r.extra["gflops_per_video"] is None and "pareto_front" not in r.extra for r in table.rows)
    assert not any("GFLOPs" in cell for line in table.cells for cell in line)
    notes = [line for line in table.footer if "GFLOPs" in line]
    assert len(notes) == 1 and "`condi-pipe time-models --teacher teacher` adds them" in notes[0]
    assert table.series == {}


def test_a_student_without_a_count_leaves_only_its_rows_empty():
    counts = {key: value for key, value in FLOPS.items() if key != "scores/bad"}
    table = build_table(inputs(model_flops=counts), "3", k=[1], methods="condi-sr,st-conf")
    rows = {r.method: r for r in table.rows}
    assert rows["st-conf"].extra["gflops_per_video"] is None and rows["condi-sr"].extra["gflops_per_video"] == 9.0
    assert any("no usable count" in line and "ST-Conf's student (not counted)" in line for line in table.footer)


def test_the_gflops_figure_draws_every_row_and_the_front_as_a_step_line(tmp_path):
    from condi_pipe.report.plot import plot_accuracy_vs_gflops, plot_figures

    table = build_table(inputs(model_flops=FLOPS), "3", k=[1, 2], methods="condi-sr,st-conf")
    written = plot_figures(table, str(tmp_path / "table-3.png"))
    assert written == [str(tmp_path / "table-3.png"), str(tmp_path / "table-3-gflops.png")]
    assert all((tmp_path / name).stat().st_size > 0 for name in ("table-3.png", "table-3-gflops.png"))
    ax = plot_accuracy_vs_gflops(table, str(tmp_path / "again.png")).axes[0]
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    assert drawn["Pareto front"] == ([8.5, 9.0], [50.0, 100.0])
    assert drawn["ConDi-SR"] == ([9.0, 13.0], [100.0, 100.0]) and drawn["Dense"] == ([16.0], [100.0])
    assert next(line for line in ax.lines if line.get_label() == "Pareto front").get_drawstyle() == "steps-post"
    without = build_table(inputs(), "3", k=[1], methods="condi-sr")
    assert plot_figures(without, str(tmp_path / "plain.png")) == [str(tmp_path / "plain.png")]
    with pytest.raises(ValueError, match="no GFLOPs per video to plot"):
        plot_accuracy_vs_gflops(without, str(tmp_path / "none.png"))


def test_tables_over_stores_average_the_gflops_per_video():
    from condi_pipe.report.across_stores import FoldTable, combine_folds

    counted = build_table(inputs(model_flops=FLOPS), "3", k=[1], methods="condi-sr")
    doubled = build_table(inputs(model_flops={key: 2 * value for key, value in FLOPS.items()}), "3", k=[1],
                          methods="condi-sr")
    combined = combine_folds([FoldTable("a", counted), FoldTable("b", doubled)])
    row = next(r for r in combined.rows if r.method == "condi-sr")
    assert row.extra["gflops_per_video_per_fold"] == [9.0, 18.0] and row.extra["gflops_per_video"] == 13.5
    unknown = combine_folds([FoldTable("a", counted), FoldTable("b", build_table(inputs(), "3", k=[1],
                                                                               methods="condi-sr"))])
    assert all("gflops_per_video" not in r.extra for r in unknown.rows)
