"""Tables over folds (report.folds): each fold's table computed from plain arrays (report.memory), combined cell by
cell into the mean and the spread, every number checked by hand."""

from __future__ import annotations

import csv
import doctest
import io
import json

import numpy as np
import pytest

from condi_pipe.report import across_stores, render
from condi_pipe.report.across_stores import FoldMismatch, FoldTable, combine_folds, fold_cell
from condi_pipe.report.memory import MemoryInputs, build_table

# Two videos per fold: video 0 (label 0) has two clips, video 1 (label 1) one. ``right`` / ``wrong`` are a clip's
# teacher softmax for label 0 (firm), and the mild clip that says class 1.
FIRM_0, MILD_1, FIRM_1 = [0.9, 0.1], [0.4, 0.6], [0.2, 0.8]
FOLDS = {
    # name: (teacher softmax per clip, teacher seconds per video, ConDi-SR's rank_score per clip)
    # split-1: every video right, whatever the clips; ConDi-SR ranks clip 0 first
    "split-1": ([FIRM_0, MILD_1, FIRM_1], [0.3, 0.1], [2.0, 0.5, 1.0]),
    # split-2: video 1's only clip says class 0: wrong for everyone
    "split-2": ([FIRM_0, MILD_1, FIRM_0], [0.5, 0.1], [2.0, 0.5, 1.0]),
    # split-3: video 0's clip 0 firmly says 1 (Dense's mean says 1: wrong), clip 1 says 0; ConDi-SR ranks clip 1 first
    "split-3": ([[0.2, 0.8], [0.7, 0.3], FIRM_1], [0.4, 0.2], [0.1, 2.0, 1.0]),
}
# By hand: Dense [100, 50, 50]; ConDi-SR K=1 [100, 50, 100]; K=2 sends every clip of both videos, as Dense.
DENSE = [100.0, 50.0, 50.0]
CONDI_K1 = [100.0, 50.0, 100.0]


def fold_inputs(name: str, teacher: str = "teacher") -> MemoryInputs:
    probs, seconds, rank = FOLDS[name]
    run = {"loss": "condi-sr", "logits": np.zeros((3, 2)), "rank_score": rank, "confidence": [0.5, 0.5, 0.5],
           "seconds": [0.01, 0.03]}
    return MemoryInputs(video_id=[0, 1], labels=[0, 1], clips=[2, 1], teacher_logits=np.log(probs),
                        teacher_seconds=seconds, runs={"condi-sr-tiny": run}, teacher=teacher)


def fold_tables(table: str = "3", **options) -> list[FoldTable]:
    options = {"k": [1, 2], "methods": "condi-sr", **options} if table == "3" else options
    return [FoldTable(name, build_table(fold_inputs(name), table, **options)) for name in FOLDS]


def test_docstring_example():
    assert doctest.testmod(across_stores).failed == 0


def test_each_cell_is_the_mean_and_std_of_the_folds():
    tables = fold_tables()
    assert [r.accuracy for r in tables[0].table.rows if r.method == "dense"] == [100.0]  # the folds are as planned
    combined = combine_folds(tables)
    rows = {(r.method, r.k): r for r in combined.rows}
    assert set(rows) == {("condi-sr", 1), ("condi-sr", 2), ("dense", None)}

    dense = rows[("dense", None)]
    assert dense.accuracy == pytest.approx(np.mean(DENSE))
    assert dense.extra["accuracy_std"] == pytest.approx(np.std(DENSE, ddof=1))  # 28.87
    assert dense.extra["accuracy_per_fold"] == DENSE
    # Dense's time is the teacher's mean seconds per video: 0.2, 0.3, 0.3
    assert dense.extra["time_per_video_s_per_fold"] == pytest.approx([0.2, 0.3, 0.3])
    assert dense.time_per_video_s == pytest.approx(0.8 / 3)
    assert dense.extra["time_per_video_s_std"] == pytest.approx(np.std([0.2, 0.3, 0.3], ddof=1))

    k1 = rows[("condi-sr", 1)]
    assert k1.accuracy == pytest.approx(250 / 3) and k1.extra["accuracy_per_fold"] == CONDI_K1
    assert k1.extra["accuracy_std"] == pytest.approx(np.std(CONDI_K1, ddof=1))  # 28.87
    # the difference from Dense per fold (points): 0, 0, +50; its mean and spread
    assert k1.extra["diff_vs_dense_pp_per_fold"] == pytest.approx([0.0, 0.0, 50.0])
    assert k1.extra["diff_vs_dense_pp"] == pytest.approx(50 / 3)
    assert len(k1.extra["ci95_vs_dense_pp_per_fold"]) == 3
    # a method's time per fold is that fold's row's (student + teacher share + the measured selection)
    fold_times = [next(r.time_per_video_s for r in t.table.rows if (r.method, r.k) == ("condi-sr", 1)) for t in tables]
    assert k1.extra["time_per_video_s_per_fold"] == pytest.approx(fold_times)
    assert k1.time_per_video_s == pytest.approx(np.mean(fold_times))
    assert k1.extra["folds"] == list(FOLDS) and k1.extra["videos_per_fold"] == [2, 2, 2]
    assert rows[("condi-sr", 2)].extra["accuracy_per_fold"] == DENSE  # K = N: every clip


def test_layout_and_every_format_hold_the_combined_cells():
    combined = combine_folds(fold_tables())
    assert combined.columns == ("K", "ConDi-SR")
    assert combined.title.startswith("Table 3 (mean ± std over 3 folds: split-1, split-2, split-3): ")
    dense_cell = "0.267s ± 0.0577s (66.67 ± 28.87)"  # 0.8 / 3 s, std 0.0577; 200 / 3 %, std 28.87
    assert combined.cells[-1] == ("All", dense_cell)
    assert [line[0] for line in combined.cells] == ["1", "2", "All"]
    k1 = next(r for r in combined.rows if (r.method, r.k) == ("condi-sr", 1))
    assert combined.cells[0][1] == fold_cell(k1) and combined.cells[0][1].endswith("(83.33 ± 28.87)")

    md = render(combined, "md")
    assert dense_cell in md and "± is the sample standard deviation over the folds (ddof = 1)" in md
    assert "[low, high]" not in md  # the folds' CIs are not in the combined cells
    grid = list(csv.reader(line for line in io.StringIO(render(combined, "csv")) if not line.startswith("# ")))
    assert grid[0] == ["K", "ConDi-SR"] and grid[-1] == ["All", dense_cell]
    assert "66.67 ± 28.87" in render(combined, "latex")
    rows = json.loads(render(combined, "json"))
    dense = next(r for r in rows if r["method"] == "dense")
    assert dense["accuracy"] == pytest.approx(200 / 3) and dense["accuracy_per_fold"] == DENSE
    assert dense["folds"] == ["split-1", "split-2", "split-3"] and dense["spread"] == "std"


def test_table4_combines_by_k_and_ks():
    combined = combine_folds(fold_tables("4", k=[1, 2], ks=[0, 1]))
    assert combined.columns[:3] == ("K", "K_s", "K_t")
    assert [line[:3] for line in combined.cells] == [("1", "0", "1"), ("1", "1", "0"), ("2", "0", "2"),
                                                     ("2", "1", "1"), ("All", "", "")]
    rows = {(r.k, r.ks): r for r in combined.rows if r.method == "condi-sr"}
    # K_s = 0 is the plain ranking: as table 3's ConDi-SR
    assert rows[(1, 0)].extra["accuracy_per_fold"] == CONDI_K1
    for line in combined.cells[:-1]:
        assert line[3] == fold_cell(rows[(int(line[0]), int(line[1]))])


@pytest.mark.parametrize("change, message", [
    (lambda name: build_table(fold_inputs(name), "3", k=[1, 2], methods="condi-sr,equidistant"),
     r"folds split-1 and split-2 have different columns \(methods\)"),
    (lambda name: build_table(fold_inputs(name), "3", k=[1], methods="condi-sr"),
     r"different rows \(K or K_s\): only in split-1: ConDi-SR K=2; only in split-2: none"),
    (lambda name: build_table(fold_inputs(name, teacher="other"), "3", k=[1, 2], methods="condi-sr"),
     r"disagree on the teacher or split: .*teacher 'teacher'.* against .*teacher 'other'"),
], ids=["methods", "k", "teacher"])
def test_folds_that_disagree_are_refused(change, message):
    tables = fold_tables()
    tables[1] = FoldTable("split-2", change("split-2"))
    with pytest.raises(FoldMismatch, match=message) as info:
        combine_folds(tables)
    assert "\n" not in str(info.value)


def test_what_cannot_be_combined():
    tables = fold_tables()
    with pytest.raises(FoldMismatch, match="needs two or more, got 1"):
        combine_folds(tables[:1])
    with pytest.raises(FoldMismatch, match="fold split-1 is given more than once"):
        combine_folds([tables[0], tables[0]])
    accuracy = [FoldTable(name, build_table(fold_inputs(name), "accuracy", k=[1])) for name in FOLDS]
    with pytest.raises(FoldMismatch, match=r"table accuracy does not combine over folds \(tables: 3, 4\)"):
        combine_folds(accuracy)
