"""The pairwise table and Table 3's ``versus`` field, from arrays (report.memory): ConDi against each other method
by a paired bootstrap over videos.

Every video has two clips: clip 0 the teacher gets right, clip 1 wrong. At K = 1 a method is right on a video
exactly when it ranks clip 0 first, so each method's per-video correctness is chosen by hand. Against ConDi, BCE-Conf
is right on nearly the same videos (positively paired: the paired interval is narrow and excludes 0, where
resampling the two methods independently would include it) and ST-Ent on the other videos (negatively paired: the
paired interval is wide and includes 0, where independent resampling would exclude it).
"""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.methods.statistics import paired_bootstrap_ci
from condi_pipe.report.evaluate import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from condi_pipe.report.memory import MemoryInputs, build_table
from condi_pipe.report.registry import get_table
from condi_pipe.report.render import difference_cell, render
from condi_pipe.report.tables.time_tables import TABLE3_METHODS

VIDEOS = 40
CONDI_RIGHT = np.arange(VIDEOS) < 25  # ConDi: right on videos 0-24
BCE_RIGHT = np.arange(VIDEOS) < 21  # right on 0-20: ConDi's videos but 4 (d = +1 on 4 videos, 0 elsewhere)
ST_ENT_RIGHT = ~CONDI_RIGHT  # right on 25-39 exactly where ConDi is wrong (d = +1 on 25, -1 on 15)


def run(loss: str, right: np.ndarray) -> dict:
    """A score run that ranks clip 0 (the teacher right) first on the videos in ``right``, clip 1 elsewhere."""
    rank_score = np.stack([right, ~right], axis=1).astype(float).ravel()
    return {"loss": loss, "logits": np.zeros((2 * VIDEOS, 2)), "rank_score": rank_score, "confidence": None,
            "seconds": np.full(VIDEOS, 0.01)}


def inputs(**extra_runs) -> MemoryInputs:
    logits = np.tile([[3.0, 0.0], [0.0, 3.0]], (VIDEOS, 1))  # label 0: clip 0 right, clip 1 wrong
    runs = {"condi": run("condi-sr", CONDI_RIGHT), "bce": run("bce-conf", BCE_RIGHT),
            "ent": run("st-ent", ST_ENT_RIGHT), **extra_runs}
    return MemoryInputs(video_id=np.arange(VIDEOS), labels=np.zeros(VIDEOS, int), clips=np.full(VIDEOS, 2),
                        teacher_logits=logits, teacher_seconds=np.full(VIDEOS, 0.2), runs=runs)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, list[float]]:
    ci = paired_bootstrap_ci(a.astype(float), b.astype(float), resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    return 100 * ci.difference, [100 * ci.low, 100 * ci.high]


def test_table3_condi_rows_carry_the_paired_ci_against_every_other_method():
    table = build_table(inputs(), "3", k=[1], methods="condi-sr,bce-conf,st-ent,equidistant")
    rows = {row.method: row for row in table.rows}
    assert [rows[m].accuracy for m in ("condi-sr", "bce-conf", "st-ent")] == [62.5, 52.5, 37.5]
    versus = rows["condi-sr"].extra["versus"]
    assert set(versus) == {"bce-conf", "st-ent", "equidistant"}  # every other method, not Dense
    for method, right in (("bce-conf", BCE_RIGHT), ("st-ent", ST_ENT_RIGHT)):
        diff, interval = paired(CONDI_RIGHT, right)
        assert versus[method]["diff_pp"] == pytest.approx(diff)
        assert versus[method]["ci95_pp"] == pytest.approx(interval)
    assert all("versus" not in row.extra for row in table.rows if row.method != "condi-sr")
    assert any("JSON 'versus' on ConDi rows" in line for line in table.footer)


def test_a_consistent_gain_on_the_same_videos_beats_the_baseline():
    row = next(r for r in build_table(inputs(), "3", k=[1], methods="condi-sr,bce-conf").rows if r.method == "condi-sr")
    low, high = row.extra["versus"]["bce-conf"]["ci95_pp"]
    assert row.extra["versus"]["bce-conf"]["diff_pp"] == pytest.approx(10.0)
    # d is 0 on 36 videos and +1 on 4: the paired interval stays above 0 (the two accuracies' own spreads, about
    # +-15 points each, would put 0 inside if the methods were resampled independently)
    assert 0 < low < 10 < high


def test_a_gain_on_different_videos_cannot_be_told_from_chance():
    row = next(r for r in build_table(inputs(), "3", k=[1], methods="condi-sr,st-ent").rows if r.method == "condi-sr")
    low, high = row.extra["versus"]["st-ent"]["ci95_pp"]
    assert row.extra["versus"]["st-ent"]["diff_pp"] == pytest.approx(25.0)
    # ConDi and ST-Ent disagree on every video (d = +1 or -1): the paired interval is wider than independent
    # resampling's (about 25 +- 21 points), wide enough to hold 0
    assert low < 0 < 25 < high


def test_pairwise_table_lays_out_the_differences():
    table = build_table(inputs(), "pairwise", k=[1, 2], methods="condi-sr,bce-conf,st-ent")
    assert table.columns == ("Method", "K", "BCE-Conf", "ST-Ent", "Dense")
    rows = {row.k: row for row in table.rows}
    assert set(rows) == {1, 2} and all(row.method == "condi-sr" for row in table.rows)
    first = table.cells[0]
    versus = rows[1].extra["versus"]
    assert first == ("ConDi-SR", "1", difference_cell(versus["bce-conf"]["diff_pp"], versus["bce-conf"]["ci95_pp"]),
                     difference_cell(versus["st-ent"]["diff_pp"], versus["st-ent"]["ci95_pp"]),
                     difference_cell(rows[1].extra["diff_vs_dense_pp"], rows[1].extra["ci95_vs_dense_pp"]))
    assert first[2].startswith("+10.0 [+") and first[3].startswith("+25.0 [-")
    assert table.cells[1][2:] == ("+0.0 [+0.0, +0.0]",) * 3  # K = 2 = N: every method sends both clips
    footer = " ".join(table.footer)
    assert "paired bootstrap over videos" in footer and "whole interval is above 0" in footer
    assert f"{BOOTSTRAP_RESAMPLES:,} resamples of the {VIDEOS} videos" in footer
    assert "ConDi-SR" in render(table, "md") and '"versus"' in render(table, "json")


def test_pairwise_defaults_to_table3_methods_and_clip_budgets():
    assert get_table("pairwise").default_k == get_table("3").default_k
    table = build_table(inputs(), "pairwise")
    assert {"condi-sr", "equidistant", "bce-conf", "st-ent"} <= set(TABLE3_METHODS)
    assert table.columns == ("Method", "K", "Equidistant", "BCE-Conf", "ST-Ent", "Dense")
    assert [row.k for row in table.rows] == list(get_table("3").default_k)


def test_condi_variants_are_compared_with_each_other_and_with_the_baselines():
    variant = run("condi-sr+consensus", np.arange(VIDEOS) < 30)
    table = build_table(inputs(consensus=variant), "pairwise", k=[1], methods="condi-sr,condi-sr+consensus,st-ent")
    assert [row.method for row in table.rows] == ["condi-sr", "condi-sr+consensus"]
    assert table.columns == ("Method", "K", "ConDi-SR", "condi-sr+consensus", "ST-Ent", "Dense")
    condi, consensus = table.rows
    assert set(condi.extra["versus"]) == {"condi-sr+consensus", "st-ent"}
    assert set(consensus.extra["versus"]) == {"condi-sr", "st-ent"}
    assert consensus.extra["versus"]["condi-sr"]["diff_pp"] == pytest.approx(12.5)
    assert table.cells[0][2] == "" and table.cells[1][3] == ""  # not against itself


def test_pairwise_without_condi_says_so():
    table = build_table(inputs(), "pairwise", k=[1], methods="bce-conf,st-ent")
    assert table.rows == () and table.cells == ()
    assert any("no ConDi method" in line for line in table.footer)
