"""The whole pipeline on a small embedded benchmark: run -> report -> infer, with numbers checked against the
stored outputs, and infer's measured model time reported next to the report's side-by-side time (not bounded)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.pipeline.run_config import load_run_config
from condi_pipe.pipeline.runner import run_pipeline
from condi_pipe.stages.infer import infer
from condi_pipe.report import build_report
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.store import Store

pytestmark = pytest.mark.slow

CONFIG = """
store = "store"
[extract]
source = "ucf101"
root = "{root}"
workers = 0
[teacher]
name = "resnet10_3d_motion"
workers = 0
[teacher_train]
epochs = 1
flip = false
[distill]
student = "resnet10_3d_motion_tiny"
losses = ["condi-sr", "st-ent"]
epochs = 1
[report]
tables = ["3", "4", "accuracy", "oracle", "confidence"]
out_dir = "reports"
"""


@pytest.fixture(scope="module")
def pipeline_run(synth_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    path = work / "run.toml"
    path.write_text(textwrap.dedent(CONFIG.format(root=synth_root)))
    rendered = run_pipeline(load_run_config(path), quiet=True, log=lambda message: None)
    return work, rendered


def test_run_writes_every_report(pipeline_run):
    work, rendered = pipeline_run
    assert set(rendered) == {"3", "4", "accuracy", "oracle", "confidence"}
    for table in rendered:
        for suffix in ("md", "json", "csv"):
            assert (work / "reports" / f"table-{table}.{suffix}").stat().st_size > 0
    for table in ("3", "accuracy", "confidence"):
        assert (work / "reports" / f"table-{table}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dense_row_is_recomputed_from_the_cache(pipeline_run):
    work, _ = pipeline_run
    rows = json.loads((work / "reports" / "table-3.json").read_text())
    dense = next(r for r in rows if r["method"] == "dense")
    store = Store(str(work / "store"))
    folder = clip_outputs.teacher_folder("resnet10_3d_motion")
    clips = clip_outputs.read_clips(store, folder).to_pandas()
    logits = clip_outputs.read_array(store, folder, "logits")
    test = clips["split"].to_numpy() == "test"
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    correct = []
    for video, group in clips[test].groupby("video_id"):
        correct.append(probs[group.index].mean(0).argmax() == group["label"].iloc[0])
    assert dense["accuracy"] == pytest.approx(100 * np.mean(correct))
    # run times every model side by side: Dense is the teacher's timed curve at each test video's N clips
    assert dense["teacher_time"] == "side-by-side"
    curve = pq.read_table(work / "store" / "timings" / "resnet10_3d_motion" / "timings.parquet").to_pandas()
    teacher = curve[curve["model"] == "teacher/resnet10_3d_motion"].set_index("batch")["median_s"]
    videos = clip_outputs.read_videos(store, folder).to_pandas()
    test_clips = videos[videos["split"] == "test"]["clips"]
    assert dense["time_per_video_s"] == pytest.approx(teacher.loc[test_clips].mean())


def test_rerun_skips_every_stage(pipeline_run):
    work, _ = pipeline_run
    messages = []
    run_pipeline(load_run_config(work / "run.toml"), quiet=True, log=messages.append)
    stage_lines = [m for m in messages if not m.startswith("run:")]
    assert stage_lines and all("already done" in m or m.startswith("extract:") for m in stage_lines), stage_lines


def test_infer_measures_what_the_report_models(pipeline_run, synth_root, record_property):
    """infer measures the steps the report models (student over N, ranking, teacher over K_t clips). Its time next
    to the report's is a reported figure (``infer_over_report_k*`` in the JUnit properties), not a bound: the two
    are measured in different processes, and a loaded machine slows either by any amount."""
    work, _ = pipeline_run
    store = Store(str(work / "store"))
    videos = pq.read_table(work / "store" / "videos.parquet").to_pandas()
    paths = [str(synth_root / p) for p in videos[videos["split"] == "test"]["path"]]
    run = "condi-sr-resnet10_3d_motion_tiny"
    for k in (1, 3):
        modelled = next(r for r in build_report(store, "3", k=[k], methods=["condi-sr"]).rows
                        if r.method == "condi-sr" and r.k == k)
        # Two passes over the videos, averaged like the report averages its videos.
        passes = [infer(store, paths, teacher="resnet10_3d_motion", student_run=run, k=k) for _ in range(2)]
        measured = np.mean([r.seconds["model"] for results in passes for r in results])
        record_property(f"infer_over_report_k{k}", round(float(measured / modelled.time_per_video_s), 3))
        assert modelled.extra["teacher_time"] == "side-by-side" and modelled.extra["student_s"] > 0
        assert all(len(r.teacher_clips) == min(k, r.clips) for r in passes[0])
        assert all(r.seconds["student"] > 0 and r.seconds["teacher"] > 0 for r in passes[0])


def test_infer_cli_prints_top5(pipeline_run, synth_root):
    work, _ = pipeline_run
    video = next(synth_root.rglob("*.mp4"))
    result = CliRunner().invoke(cli, ["infer", str(video), "--store", str(work / "store"), "--teacher",
                                      "resnet10_3d_motion", "--student", "condi-sr-resnet10_3d_motion_tiny", "--k", "2",
                                      "--ks", "1", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert len(row["top5"]) == 5 and abs(sum(p for _, p in row["top5"]) - 1) < 1 and len(row["student_clips"]) == 1
    assert row["seconds"]["model"] == pytest.approx(row["seconds"]["student"] + row["seconds"]["rank"]
                                                    + row["seconds"]["teacher"])
