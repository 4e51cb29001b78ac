"""Which score runs a report uses, on copies of the committed golden store: runs of another teacher, runs of a
teacher since retrained under the same name, two runs of one loss, NaN scores, and missing or partial timings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condi_pipe.report import build_report
from condi_pipe.storage.store import Store

GOLDEN_STORE = Path(__file__).parents[2] / "golden" / "report_store"
TEACHER = "golden_teacher"


@pytest.fixture()
def store(tmp_path):
    shutil.copytree(GOLDEN_STORE, tmp_path / "store")
    return Store(str(tmp_path / "store"))


def edit_meta(store: Store, folder: str, **fields):
    meta = store.read_json(f"scores/{folder}/meta.json")
    store.write_json(f"scores/{folder}/meta.json", {**meta, **fields})


def methods_of(report):
    return {row.method for row in report.rows}


def test_runs_of_another_teacher_are_left_out_and_named(store):
    edit_meta(store, "bce_conf", teacher="another_teacher")
    report = build_report(store, "accuracy", k=[1])
    assert "bce-conf" not in methods_of(report) and "condi-sr" in methods_of(report)
    assert any("made from other teachers" in line and "bce_conf" in line for line in report.footer)


def test_runs_of_a_retrained_teacher_are_left_out(store):
    cache = store.read_json(f"teacher/{TEACHER}/meta.json")
    edit_meta(store, "condi_sr", teacher_weights_sha256=cache["weights_sha256"])  # made from the cache it sees
    edit_meta(store, "st_conf", teacher_weights_sha256="0" * 64)  # made before the teacher was retrained
    report = build_report(store, "accuracy", k=[1])
    assert "condi-sr" in methods_of(report) and "st-conf" not in methods_of(report)
    assert any("other weights of teacher 'golden_teacher'" in line and "st_conf" in line for line in report.footer)


def test_two_runs_of_one_loss_are_both_shown_under_their_run_names(store):
    shutil.copytree(store.path("scores/condi_sr"), store.path("scores/condi_sr_again"))
    edit_meta(store, "condi_sr_again", run="condi_sr_again")
    report = build_report(store, "3", k=[1], methods="condi-sr", teacher_time="share")
    keys = sorted(row.method for row in report.rows if row.method != "dense")
    assert keys == ["condi-sr:condi_sr", "condi-sr:condi_sr_again"]
    assert report.columns == ("K", "ConDi-SR [condi_sr]", "ConDi-SR [condi_sr_again]")
    first, second = (row for row in report.rows if row.method != "dense")
    assert first.accuracy == second.accuracy  # the same scores choose the same clips


def test_a_run_with_nan_scores_is_omitted_with_a_note(store):
    path = store.path("scores/st_ent/clips.parquet")
    table = pq.read_table(path)
    scores = table.column("rank_score").to_numpy().copy()
    scores[3] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("rank_score"), "rank_score",
                                    pa.array(scores, pa.float64())), path)
    report = build_report(store, "accuracy", k=[1])
    assert "st-ent" not in methods_of(report)
    assert any(line.startswith("Note: ST-Ent:") and "1 clips have no score (NaN)" in line for line in report.footer)


def test_missing_or_partial_timings_fall_back_to_per_run_times_and_say_why(store):
    timed = build_report(store, "3", k=[1])
    assert {row.extra["teacher_time"] for row in timed.rows} == {"side-by-side"}

    meta = store.read_json(f"timings/{TEACHER}/meta.json")
    meta["models"] = [m for m in meta["models"] if m["model"] != "scores/bce_conf"]
    store.write_json(f"timings/{TEACHER}/meta.json", meta)
    partial = build_report(store, "3", k=[1])
    assert {row.extra["teacher_time"] for row in partial.rows} == {"curve"}
    assert any("has no timing of scores/bce_conf" in line for line in partial.footer)
    with pytest.raises(ValueError, match="has no timing of scores/bce_conf.*condi-pipe time-models"):
        build_report(store, "3", k=[1], teacher_time="side-by-side")

    store.remove(f"timings/{TEACHER}")
    none = build_report(store, "3", k=[1])
    assert any("no side-by-side timings in timings/golden_teacher/" in line for line in none.footer)
    # per-run times: the student's measured seconds from its own score run
    condi = next(row for row in none.rows if row.method == "condi-sr")
    seconds = pq.read_table(store.path("scores/condi_sr/videos.parquet")).column("seconds").to_numpy()
    assert condi.extra["student_s"] == pytest.approx(seconds.mean())


def test_a_registered_method_is_reported_under_its_display_name(store):
    """A score run of a method registered elsewhere (no report code edited) is ranked like any clip-level run."""
    from condi_pipe.methods.registry import temporarily_registered

    shutil.copytree(store.path("scores/bce_conf"), store.path("scores/dummy_run"))
    edit_meta(store, "dummy_run", run="dummy_run", loss="dummy-conf")
    with temporarily_registered("dummy-conf", lambda batch, context: None, display="Dummy-Conf", level="clip",
                                ranking="confidence", needs_confidence_head=True):
        report = build_report(store, "accuracy", k=[1, 2], methods="dummy-conf,bce-conf", teacher_time="share")
    assert report.columns == ("K", "Dummy-Conf", "BCE-Conf")
    dummy = {row.k: row.accuracy for row in report.rows if row.method == "dummy-conf"}
    assert dummy == {row.k: row.accuracy for row in report.rows if row.method == "bce-conf"}  # the same scores
    # unregistered again: the run is still reported, under its stored loss name
    assert build_report(store, "accuracy", k=[1], methods="dummy-conf", teacher_time="share").columns == (
        "K", "dummy-conf")
