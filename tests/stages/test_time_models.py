"""time-models: the teacher and every score run's student timed side by side in one process, and the report's
times recomputed from the stored curves. No test asserts a wall-clock bound: the numbers are checked for shape and
sign, and the report's arithmetic exactly against the stored table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.compute.clip_inference import MAX_BATCH
from condi_pipe.methods.video_time import (
    chunked_batch_seconds,
    robust_summary,
    side_by_side_mean_time,
    side_by_side_video_seconds,
)
from condi_pipe.pipeline.stage import StageError
from condi_pipe.report import build_report
from condi_pipe.stages.time_models import (
    DECODE_SAMPLE_VIDEOS,
    DecodeSample,
    DecodeTimer,
    TimeModelsRequest,
    decode_sample,
    spread_sample,
    time_models,
)
from condi_pipe.storage import clip_outputs, model_timings
from condi_pipe.storage.manifests import load_videos, video_paths
from condi_pipe.storage.run_state import set_stage, stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions

TEACHER = "resnet10_3d_small"
QUIET = dict(quiet=True, log=lambda message: None)
# "twin" is "conf" again under another name: same architecture, same seed, hence the same weights
RUNS = {"conf": "condi-sr", "twin": "condi-sr", "ent": "st-ent"}
REPEATS = 2


@pytest.fixture(scope="module")
def scored(synth_scored_store, distill_and_score, tmp_path_factory) -> Path:
    """The shared random-init teacher cache plus three one-epoch students and their scores (no timings yet): the
    shared store's "conf" and "ent", and "twin" made like "conf"."""
    store_dir = tmp_path_factory.mktemp("timing") / "store"
    shutil.copytree(synth_scored_store, store_dir)
    distill_and_score(store_dir, "twin", RUNS["twin"])
    return store_dir


@pytest.fixture(scope="module")
def timed_store(scored, tmp_path_factory) -> Path:
    store_dir = tmp_path_factory.mktemp("timed") / "store"
    shutil.copytree(scored, store_dir)
    time_models(Store(str(store_dir)), TimeModelsRequest(TEACHER, repeats=REPEATS, threads=2), **QUIET)
    return store_dir


def _curves(store: Store) -> dict[str, dict[str, list]]:
    table, _ = model_timings.read_timings(store, TEACHER)
    return model_timings.curves(table)


def test_one_positive_row_per_model_and_batch(timed_store):
    store = Store(str(timed_store))
    table, meta = model_timings.read_timings(store, TEACHER)
    rows = table.to_pylist()
    largest = int(min(load_videos(store, "test").clips.max(), MAX_BATCH))
    models = {f"teacher/{TEACHER}"} | {f"scores/{run}" for run in RUNS}
    assert sorted((r["model"], r["batch"]) for r in rows) == sorted((m, b) for m in models
                                                                    for b in range(1, largest + 1))
    assert all(r["median_s"] > 0 and 0 < r["min_s"] <= r["median_s"] and r["iqr_s"] >= 0 and r["repeats"] == REPEATS
               for r in rows)
    assert meta["threads"] == 2 and meta["repeats"] == REPEATS and meta["device"] == "cpu"
    digests = {m["model"]: m["weights_sha256"] for m in meta["models"]}
    assert digests["scores/conf"] == digests["scores/twin"] != digests["scores/ent"]
    assert stage_record(store, f"time-models/{TEACHER}")["state"] == "done"


def test_report_times_equal_a_recomputation_from_the_stored_curves(timed_store):
    store = Store(str(timed_store))
    curves = _curves(store)
    clips = load_videos(store, "test").clips

    def at(model, sizes):  # every eval video fits one batch here, so the curve is read at exact batch sizes
        sizes = np.asarray(sizes)
        assert sizes.max() <= curves[model]["batch"][-1]
        return np.where(sizes > 0, np.asarray(curves[model]["seconds"])[np.maximum(sizes, 1) - 1], 0.0)

    report = build_report(store, "3", k=[1, 3], methods=["conf", "twin", "ent", "equidistant"])
    teacher = f"teacher/{TEACHER}"
    dense = next(r for r in report.rows if r.method == "dense")
    assert dense.time_per_video_s == pytest.approx(at(teacher, clips).mean(), rel=1e-12)
    assert dense.extra["teacher_time"] == "side-by-side"
    for row in report.rows:
        if row.k is None:
            continue
        expected_teacher = at(teacher, np.minimum(row.k, clips)).mean()
        assert row.extra["teacher_s"] == pytest.approx(expected_teacher, rel=1e-12)
        run = row.extra.get("run")
        expected_student = at(f"scores/{run}", clips).mean() if run else 0.0
        assert row.extra["student_s"] == pytest.approx(expected_student, rel=1e-12)
        assert row.time_per_video_s == pytest.approx(expected_student + expected_teacher + row.extra["selection_s"],
                                                     rel=1e-12)
    # the same lookup for two students of one architecture and weights: each its own stored curve at N
    twins = {row.extra["run"]: row for row in report.rows if row.k == 1 and row.extra.get("run") in ("conf", "twin")}
    for run, row in twins.items():
        assert row.extra["student_s"] == pytest.approx(at(f"scores/{run}", clips).mean(), rel=1e-12)
    footer = " ".join(report.footer)
    assert "side by side" in footer and f"median of {REPEATS} interleaved repeats" in footer and "threads 2" in footer


def test_rerun_is_a_no_op_and_a_new_score_run_changes_the_config(scored, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(scored, store_dir)
    store = Store(str(store_dir))
    # time the store as it was before the "ent" run was scored, then let that score run appear
    shutil.move(str(store_dir / "scores" / "ent"), str(tmp_path / "ent"))
    request = TimeModelsRequest(TEACHER, repeats=1, threads=2)
    time_models(store, request, **QUIET)
    messages: list[str] = []
    time_models(store, request, log=messages.append)
    assert any("already done" in m for m in messages)
    before = stage_record(store, f"time-models/{TEACHER}")["config"]
    assert build_report(store, "3", k=[1]).rows[0].extra["teacher_time"] == "side-by-side"
    shutil.move(str(tmp_path / "ent"), str(store_dir / "scores" / "ent"))
    with pytest.raises(StageError, match="different configuration"):
        time_models(store, request, **QUIET)
    # the report does not use timings that miss a score run of the teacher: it falls back and says why
    report = build_report(store, "3", k=[1])
    assert report.rows[0].extra["teacher_time"] != "side-by-side"
    assert any("scores/ent" in line and "time-models" in line for line in report.footer)
    time_models(store, request, redo_if_changed=True, **QUIET)
    after = stage_record(store, f"time-models/{TEACHER}")["config"]
    assert sorted(m["model"] for m in after["models"]) == sorted([m["model"] for m in before["models"]]
                                                                 + ["scores/ent"])
    assert "scores/ent" in _curves(store)
    assert build_report(store, "3", k=[1]).rows[0].extra["teacher_time"] == "side-by-side"


def test_fallback_footer_without_timings(scored):
    report = build_report(Store(str(scored)), "3", k=[1])
    assert all(row.extra["teacher_time"] in ("share", "curve") for row in report.rows)
    footer = " ".join(report.footer)
    assert "not side by side" in footer and "condi-pipe time-models" in footer


def test_cli_time_models_and_status(scored, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(scored, store_dir)
    runner = CliRunner()
    result = runner.invoke(cli, ["time-models", "--store", str(store_dir), "--teacher", TEACHER, "--runs", "conf",
                                 "--repeats", "1", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert set(_curves(Store(str(store_dir)))) == {f"teacher/{TEACHER}", "scores/conf"}
    status = runner.invoke(cli, ["status", "--store", str(store_dir), "--json"])
    assert json.loads(status.output)["stages"][f"time-models/{TEACHER}"]["state"] == "done"
    missing = runner.invoke(cli, ["time-models", "--store", str(store_dir), "--teacher", TEACHER, "--runs", "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output


# -- decoding, timed beside the models -------------------------------------------------------------------------


def _time_line(report) -> str:
    return next(line for line in report.footer if line.startswith("Time per video: measured side by side"))


def test_decode_of_sampled_eval_videos_is_stored_beside_the_model_timings(timed_store):
    store = Store(str(timed_store))
    decode = model_timings.read_decode_timings(store, TEACHER)
    assert decode is not None and decode.skipped == ""
    videos = load_videos(store, "test")
    assert len(decode.video_id) == min(DECODE_SAMPLE_VIDEOS, len(videos.video_id)) > 0
    where = np.searchsorted(videos.video_id, decode.video_id)
    assert (videos.video_id[where] == decode.video_id).all()
    # decoded with extract's recorded options from extract's dataset root: the store's clip counts and paths
    assert decode.clips.tolist() == videos.clips[where].tolist()
    assert list(decode.path) == video_paths(store, videos.subset(where)).tolist()
    extract_config = stage_record(store, "extract")["config"]
    assert decode.how["options"] == extract_config["decode"] and decode.how["root"] == extract_config["root"]
    assert np.isfinite(decode.seconds).all() and (decode.seconds > 0).all()
    counts = stage_record(store, f"time-models/{TEACHER}")["counts"]
    assert counts["decode_ms_per_clip"] == round(1000 * decode.seconds.sum() / decode.clips.sum(), 3)


def test_footer_decode_share_is_computed_from_the_stored_numbers(timed_store):
    store = Store(str(timed_store))
    report = build_report(store, "3", k=[1])
    decode = model_timings.read_decode_timings(store, TEACHER)
    clips = load_videos(store, "test").clips
    per_clip = decode.seconds.sum() / decode.clips.sum()
    per_video = per_clip * clips.mean()
    teacher = _curves(store)[f"teacher/{TEACHER}"]
    dense = np.asarray(teacher["seconds"])[clips - 1].mean()  # every eval video fits one batch here
    assert next(r for r in report.rows if r.method == "dense").time_per_video_s == pytest.approx(dense, rel=1e-12)
    assert (f"Decoding is excluded: decoding these videos' {clips.sum()} clips to 16x112x112 takes "
            f"{1000 * per_clip:.2f} ms per clip here ({1000 * per_video:.1f} ms per video on average), "
            f"{100 * per_video / dense:.1f}% of Dense's time per video") in _time_line(report)


def test_sources_gone_record_why_and_the_footer_says_not_measured(scored, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(scored, store_dir)
    store = Store(str(store_dir))
    extract_record = stage_record(store, "extract")
    gone = tmp_path / "moved-away"
    set_stage(store, "extract", config={**extract_record["config"], "root": str(gone)})
    time_models(store, TimeModelsRequest(TEACHER, repeats=1, threads=2), **QUIET)
    decode = model_timings.read_decode_timings(store, TEACHER)
    assert decode is not None and len(decode.seconds) == 0 and str(gone) in decode.skipped
    assert not store.exists(model_timings.timings_folder(TEACHER), model_timings.DECODE_TABLE)
    assert stage_record(store, f"time-models/{TEACHER}")["counts"]["decode_ms_per_clip"] is None
    line = _time_line(build_report(store, "3", k=[1]))
    assert f"Decoding is excluded, and not measured for this store: {decode.skipped}." in line
    assert "ms per clip" not in line


def test_a_sampled_file_gone_from_the_dataset_root_is_named(synth_scored_store, synth_root, tmp_path):
    store_dir, root = tmp_path / "store", tmp_path / "data"
    shutil.copytree(synth_scored_store, store_dir)
    shutil.copytree(synth_root, root)
    store = Store(str(store_dir))
    set_stage(store, "extract", config={**stage_record(store, "extract")["config"], "root": str(root)})
    sample, how, why = decode_sample(store, "test")
    assert why == "" and sample.root == str(root) and how["videos"] == len(sample.path)
    (root / sample.path[-1]).unlink()
    sample, how, why = decode_sample(store, "test")
    assert sample is None and f"1 of the {how['videos']} sampled source files are gone" in why
    assert str(root) in why and any(path in why for path in video_paths(store, load_videos(store, "test")).tolist())


def test_timings_made_before_decode_timing_read_as_unknown(timed_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(timed_store, store_dir)
    store = Store(str(store_dir))
    table, meta = model_timings.read_timings(store, TEACHER)
    del meta["decode"]
    model_timings.write_timings(store, TEACHER, table.to_pylist(), meta)  # as time-models wrote them before
    assert model_timings.read_decode_timings(store, TEACHER) is None
    line = _time_line(build_report(store, "3", k=[1]))
    assert "Decoding is excluded, and not measured for this store (timings/" in line and "ms per clip" not in line


def test_flops_per_clip_are_stored_beside_the_timings_and_cost_the_report(timed_store):
    store = Store(str(timed_store))
    flops = model_timings.read_flops(store, TEACHER)
    _, meta = model_timings.read_timings(store, TEACHER)
    assert {model: count.weights_sha256 for model, count in flops.items()} == {
        m["model"]: m["weights_sha256"] for m in meta["models"]}
    teacher = f"teacher/{TEACHER}"
    # teacher-cache counted its teacher on its own (models.flop_table, clips.parquet 'flops'): the same number
    cached = clip_outputs.read_clips(store, clip_outputs.teacher_folder(TEACHER), ["flops"]).column("flops")
    assert set(cached.to_pylist()) == {flops[teacher].flops_per_clip}
    assert all(0 < count.flops_per_clip < flops[teacher].flops_per_clip for model, count in flops.items()
               if model != teacher)  # width-0.25 ShuffleNets
    per_clip = {model: count.flops_per_clip / 1e9 for model, count in flops.items()}
    clips = load_videos(store, "test").clips
    report = build_report(store, "3", k=[1, 3], methods=["conf", "ent", "equidistant"])
    for row in report.rows:
        to_teacher = clips if row.k is None else np.minimum(row.k, clips)
        run = row.extra.get("run")
        student = per_clip[f"scores/{run}"] * clips.mean() if run else 0.0
        assert row.extra["teacher_gflops"] == pytest.approx(per_clip[teacher] * to_teacher.mean(), rel=1e-12)
        assert row.extra["student_gflops"] == pytest.approx(student, rel=1e-12)
        assert row.extra["gflops_per_video"] == pytest.approx(student + per_clip[teacher] * to_teacher.mean(),
                                                              rel=1e-12)
    assert any(row.extra["pareto_front"] for row in report.rows)
    assert any(line.startswith("Note: Pareto front of accuracy against GFLOPs per video") for line in report.footer)


def test_timings_made_before_flops_were_counted_get_them_from_a_rerun_that_times_nothing(timed_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(timed_store, store_dir)
    store = Store(str(store_dir))
    counted = model_timings.read_flops(store, TEACHER)
    timings, _ = model_timings.read_timings(store, TEACHER)
    store.remove(model_timings.timings_folder(TEACHER), model_timings.FLOPS_TABLE)  # as time-models left it before
    report = build_report(store, "3", k=[1])
    assert all(row.extra["gflops_per_video"] is None for row in report.rows)
    assert [line for line in report.footer if "GFLOPs" in line] == [
        f"Note: GFLOPs per video: not counted for this store (timings/{TEACHER}/flops.parquet is absent: timed "
        f"before `condi-pipe time-models` counted FLOPs, or never timed); `condi-pipe time-models --teacher "
        f"{TEACHER}` adds them without re-timing. JSON gflops_per_video: null."]
    messages: list[str] = []
    time_models(store, TimeModelsRequest(TEACHER, repeats=REPEATS, threads=2), quiet=True, log=messages.append)
    assert any("already done" in m for m in messages) and any("added FLOPs per clip" in m for m in messages)
    assert model_timings.read_flops(store, TEACHER) == counted
    assert model_timings.read_timings(store, TEACHER)[0].equals(timings)  # nothing re-timed
    assert all(row.extra["gflops_per_video"] > 0 for row in build_report(store, "3", k=[1]).rows)


def test_a_source_that_no_longer_decodes_as_extract_did_is_not_timed(tiny_videos):
    video = tiny_videos[".mp4"]  # 20 frames: two clips
    def timer(store_clips: int) -> DecodeTimer:
        sample = DecodeSample(str(video.parent), np.array([3]), (video.name,), np.array([store_clips]),
                              DecodeOptions())
        decode = DecodeTimer(sample, {"split": "test"}, "", repeats=2)
        decode.warm_up()
        for repeat in range(2):
            decode.after_repeat(repeat)
        return decode

    timed = timer(2).result()
    assert timed.skipped == "" and timed.clips.tolist() == [2] and timed.seconds[0] > 0
    changed = timer(3).result()
    assert len(changed.seconds) == 0 and "no longer decode as extract did" in changed.skipped
    assert f"{video.name}: 2 clips, the store holds 3" in changed.skipped


def test_spread_sample_takes_one_video_per_clip_count_stratum():
    clips = np.random.default_rng(5).permutation(np.repeat(np.arange(1, 11), 10))  # 100 videos, 1..10 clips
    picked = spread_sample(clips, 10, seed=0)
    assert sorted(clips[picked].tolist()) == list(range(1, 11))
    assert picked.tolist() == spread_sample(clips, 10, seed=0).tolist()
    assert spread_sample(clips[:7], 10, seed=0).tolist() == list(range(7))


# -- the arithmetic, on plain arrays ---------------------------------------------------------------------------


def test_robust_summary_ignores_one_slow_repeat():
    samples = np.array([[[1.0, 1.2, 1.1, 50.0, 1.0]]])
    summary = robust_summary(samples)
    assert summary.median[0, 0] == 1.1 and summary.minimum[0, 0] == 1.0
    assert summary.iqr[0, 0] == pytest.approx(1.2 - 1.0)
    with pytest.raises(ValueError, match="at least one repeat and finite seconds"):
        robust_summary(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="at least one repeat and finite seconds"):
        robust_summary(np.array([[1.0, np.nan, 1.1]]))


def test_chunked_batches_and_side_by_side_parts():
    curve = {"batch": [1, 2, 3, 4], "seconds": [1.0, 1.5, 2.0, 2.4]}
    # 9 clips at max batch 4: two chunks of 4 and one of 1
    assert chunked_batch_seconds(curve, np.array([9, 4, 0]), 4).tolist() == [2 * 2.4 + 1.0, 2.4, 0.0]
    with pytest.raises(ValueError, match="batch 5"):
        chunked_batch_seconds(curve, np.array([5]), 8)
    student = {"batch": [1, 2, 3, 4], "seconds": [0.1, 0.2, 0.3, 0.4]}
    clips = np.array([3, 1, 4])
    parts = side_by_side_video_seconds(curve, clips, 2, student, selection_seconds=0.5, max_batch=4)
    assert parts.teacher.tolist() == [1.5, 1.0, 1.5] and parts.student.tolist() == [0.3, 0.1, 0.4]
    mean = side_by_side_mean_time(curve, clips, 2, parts.student, 0.5, max_batch=4)
    assert mean.total == pytest.approx(np.mean([1.5, 1.0, 1.5]) + np.mean([0.3, 0.1, 0.4]) + 0.5)
    dense = side_by_side_mean_time(curve, clips, clips, max_batch=4)
    assert dense.teacher == pytest.approx(np.mean([2.0, 1.0, 2.4])) and dense.student == 0.0
