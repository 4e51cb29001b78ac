"""A table computed from plain arrays (report.memory): no store, every number checked by hand."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from condi_pipe.report import memory
from condi_pipe.report.memory import MemoryInputs, build_table


def inputs():
    """Two videos. Video 7 (label 0): clip 0 says 0 firmly, clips 1-2 say 1 mildly. Video 9 (label 1): one clip,
    right. ConDi-SR's run trusts clip 0 most, ST-Conf's clip 2."""
    logits = np.log([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.2, 0.8]])
    student = {"loss": "condi-sr", "logits": np.zeros((4, 2)), "rank_score": [2.0, 0.5, 0.1, 1.0],
               "confidence": [0.9, 0.6, 0.5, 0.7], "seconds": [0.01, 0.02]}
    reversed_ = {**student, "loss": "st-conf", "rank_score": [0.1, 0.5, 2.0, 1.0]}
    return MemoryInputs(video_id=[7, 9], labels=[0, 1], clips=[3, 1], teacher_logits=logits,
                        teacher_seconds=[0.3, 0.1], runs={"good": student, "bad": reversed_})


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
