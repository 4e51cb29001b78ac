"""The whole pipeline on a small embedded benchmark: run -> report -> infer, with numbers checked against the
stored outputs: every report accuracy recomputed from the teacher cache and the score runs, infer's clip choices and
top-5 recomputed from the same, and infer's measured model time reported next to the report's (not bounded)."""

from __future__ import annotations

import csv
import json
import shutil
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from condi_pipe.app.infer import infer
from condi_pipe.app.run_config import load_run_config
from condi_pipe.app.runner import pipeline_steps, run_pipeline
from condi_pipe.cli import main as cli
from condi_pipe.methods.metrics import auroc
from condi_pipe.pipeline.stage import ensure_store, step_order
from condi_pipe.report import build_report
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store

pytestmark = pytest.mark.slow

CONFIG = """
store = "store"
[extract]
source = "ucf101"
root = "{root}"
workers = 0
[teacher]
name = "resnet10_3d_motion_skim"
workers = 0
[teacher_train]
epochs = 1
clips_per_video = 1
flip = false
[distill]
student = "resnet10_3d_motion_skim"
losses = ["condi-sr", "st-ent"]
epochs = 1
[time_models]
repeats = 2
[report]
tables = ["3", "4", "accuracy", "oracle", "confidence"]
out_dir = "reports"
"""
# [time_models] repeats: the tests check the report's arithmetic on the stored curves, not their precision (the default
# 7 repeats time every batch size of the teacher and both students 7 times, in the fixture and again in the killed
# run); tests/stages/test_time_models.py covers the repeats themselves. The teacher and the students are the cheapest
# registered model (it reads clips at 8x56x56), the teacher trained one epoch on one clip per video: every figure
# checked here is recomputed from their stored outputs, whatever they are.


BEFORE_STUDENTS = "store-before-students"


@pytest.fixture(scope="module")
def pipeline_run(synth_root, tmp_path_factory):
    """The uninterrupted run, whose store is also saved (``BEFORE_STUDENTS``) as it stood when the first student
    was about to train: the killed run starts from that copy instead of redoing the stages before it."""
    work = tmp_path_factory.mktemp("e2e")
    path = work / "run.toml"
    path.write_text(textwrap.dedent(CONFIG.format(root=synth_root)))
    config = load_run_config(path)
    quiet = dict(quiet=True, log=lambda message: None)
    # run_pipeline's own steps in its own order, up to the first distill; run_pipeline then skips them
    steps = step_order(pipeline_steps(config, ensure_store(config.store), **quiet))
    for step in steps[: [step.stage for step in steps].index("distill")]:
        step.run()
    shutil.copytree(work / "store", work / BEFORE_STUDENTS)
    rendered = run_pipeline(config, **quiet)
    return work, rendered


TEACHER = "resnet10_3d_motion_skim"
RUNS = {"condi-sr": "condi-sr-resnet10_3d_motion_skim", "st-ent": "st-ent-resnet10_3d_motion_skim"}


def _rows(work, table: str) -> list[dict]:
    return json.loads((work / "reports" / f"table-{table}.json").read_text())


class _Stored:
    """The stored outputs the report and infer read: the teacher cache's softmax per clip and each score run's
    clips (rank_score, pred, label), as plain arrays."""

    def __init__(self, work) -> None:
        store = Store(str(work / "store"))
        self.frames = open_clip_array(store)
        folder = clip_outputs.teacher_folder(TEACHER)
        self.clips = clip_outputs.read_clips(store, folder).to_pandas()
        logits = clip_outputs.read_array(store, folder, "logits").astype(np.float64)
        self.probs = np.exp(logits - logits.max(1, keepdims=True))
        self.probs /= self.probs.sum(1, keepdims=True)
        self.row = dict(zip(self.clips["clip_id"], range(len(self.clips))))
        self.classes = clip_outputs.read_meta(store, folder)["classes"]
        self.scores = {run: clip_outputs.read_clips(store, clip_outputs.scores_folder(run)).to_pandas()
                       for run in RUNS.values()}
        self.student_logits = {run: clip_outputs.read_array(store, clip_outputs.scores_folder(run), "logits")
                               for run in RUNS.values()}

    def test_videos(self):
        """(video id, label, its clip ids in order) of every test video, by video id."""
        test = self.clips[self.clips["split"] == "test"]
        for video, group in test.groupby("video_id", sort=True):
            yield video, int(group["label"].iloc[0]), np.sort(group["clip_id"].to_numpy())

    def mean_probs(self, clip_ids) -> np.ndarray:
        return self.probs[[self.row[c] for c in clip_ids]].mean(0)

    def top_k(self, run: str, clip_ids: np.ndarray, k: int) -> np.ndarray:
        """Positions (within the video) of its k clips of highest stored rank_score; ties to the earlier clip."""
        score = self.scores[run].set_index("clip_id").loc[clip_ids, "rank_score"].to_numpy()
        return np.argsort(-score, kind="stable")[:k]

    def most_moving(self, clip_ids: np.ndarray, k: int) -> np.ndarray:
        """Positions of its k clips of most motion (mean |difference| of consecutive stored frames); ties to the
        earlier clip."""
        energy = [np.abs(np.diff(np.asarray(self.frames[int(c)]).astype(np.int64), axis=0)).mean() for c in clip_ids]
        return np.argsort(-np.asarray(energy), kind="stable")[:k]


@pytest.fixture(scope="module")
def stored(pipeline_run):
    return _Stored(pipeline_run[0])


def test_run_writes_every_report(pipeline_run):
    """Every table in every format, and the formats agree: the Markdown grid holds the CSV's cells, the JSON
    rows parse with accuracies that are percentages."""
    work, rendered = pipeline_run
    assert set(rendered) == {"3", "4", "accuracy", "oracle", "confidence"}
    for table in rendered:
        rows = _rows(work, table)
        assert rows and all(r["accuracy"] is None or 0 <= r["accuracy"] <= 100 for r in rows), table
        assert all(r["split"] == "test" and r["videos"] == 10 for r in rows), table  # synth_root: 10 test videos
        lines = (work / "reports" / f"table-{table}.csv").read_text().splitlines()
        grid = list(csv.reader(line for line in lines if not line.startswith("# ")))
        md = [line for line in (work / "reports" / f"table-{table}.md").read_text().splitlines()
              if line.startswith("|") and not line.startswith("|-")]
        assert [[cell.strip() for cell in line.strip("|").split(" | ")] for line in md] == grid, table
        assert rendered[table] == (work / "reports" / f"table-{table}.md").read_text()
    for table in ("3", "accuracy", "confidence"):
        assert (work / "reports" / f"table-{table}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_accuracies_are_recomputed_from_stored_outputs(pipeline_run, stored):
    """Table 3's rows for the methods asked, each accuracy recomputed: a video's prediction is the argmax of the
    teacher's mean softmax over the clips the method picks (top K by the score run's rank_score, or by motion
    energy, or K equidistant, or all); the other tables agree with it where they hold the same figure."""
    work, _ = pipeline_run
    rows = _rows(work, "3")
    assert {(r["method"], r["run"]) for r in rows} == {("dense", None), ("equidistant", None), ("motion-energy", None),
                                                      *((m, run) for m, run in RUNS.items())}
    assert sorted(r["k"] for r in rows if r["method"] == "condi-sr") == [1, 3, 5, 7]
    for row in rows:
        k = row["k"]
        correct = []
        for _, label, ids in stored.test_videos():
            if row["run"] is not None:
                chosen = ids[stored.top_k(row["run"], ids, k)]
            elif row["method"] == "motion-energy":
                chosen = ids[stored.most_moving(ids, k)]
            elif row["method"] == "equidistant":
                n = len(ids)
                chosen = ids if k >= n else ids[(2 * np.arange(k) + 1) * n // (2 * k)]
            else:
                chosen = ids
            correct.append(stored.mean_probs(chosen).argmax() == label)
        assert row["accuracy"] == pytest.approx(100 * np.mean(correct)), (row["method"], k)

    by_key = {(r["method"], r["k"]): r["accuracy"] for r in rows}
    division = [r for r in _rows(work, "4") if r["method"] == "condi-sr" and r["ks"] == 0]
    assert division and all(r["accuracy"] == by_key[("condi-sr", r["k"])] for r in division)  # K_s = 0: no division
    shared = [r for r in _rows(work, "accuracy") if (r["method"], r["k"]) in by_key]
    assert len(shared) >= 8 and all(r["accuracy"] == by_key[(r["method"], r["k"])] for r in shared)

    confidence = {r["run"]: r for r in _rows(work, "confidence")}
    assert set(confidence) == set(RUNS.values())
    z = stored.clips.set_index("clip_id")["z"]
    for run, scores in stored.scores.items():
        row = confidence[run]
        assert row["clips"] == len(scores) == sum(len(ids) for *_, ids in stored.test_videos())
        assert row["accuracy"] == pytest.approx(100 * np.mean(scores["pred"] == scores["label"]))
        assert row["auroc"] == pytest.approx(auroc(scores["rank_score"].to_numpy(),
                                                   z.loc[scores["clip_id"]].to_numpy()))


def test_dense_row_is_recomputed_from_the_cache(pipeline_run):
    work, _ = pipeline_run
    rows = json.loads((work / "reports" / "table-3.json").read_text())
    dense = next(r for r in rows if r["method"] == "dense")
    store = Store(str(work / "store"))
    folder = clip_outputs.teacher_folder(TEACHER)
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
    curve = pq.read_table(work / "store" / "timings" / TEACHER / "timings.parquet").to_pandas()
    teacher = curve[curve["model"] == f"teacher/{TEACHER}"].set_index("batch")["median_s"]
    videos = clip_outputs.read_videos(store, folder).to_pandas()
    test_clips = videos[videos["split"] == "test"]["clips"]
    assert dense["time_per_video_s"] == pytest.approx(teacher.loc[test_clips].mean())


def test_rerun_skips_every_stage(pipeline_run):
    work, _ = pipeline_run
    messages = []
    run_pipeline(load_run_config(work / "run.toml"), quiet=True, log=messages.append)
    stage_lines = [m for m in messages if not m.startswith("run:")]
    stages = json.loads((work / "store" / "run.json").read_text())["stages"]
    # Every stage says it was done already; the one other line is extract's summary, which it prints even when it
    # skips (the counts of the finished run, nothing redone).
    counts = stages["extract"]["counts"]
    summary = (f"extract: {counts['videos']} videos, {counts['clips']} clips, {counts['errors']} failures, "
               f"{counts['warnings']} warnings")
    assert [m for m in stage_lines if "already done" not in m] == [summary], stage_lines
    assert sorted(m.split(":")[0] for m in stage_lines if "already done" in m) == sorted(stages), stage_lines


def test_infer_measures_what_the_report_models(pipeline_run, synth_root, stored, record_property):
    """infer runs what the report models: per test video, the teacher clips it picks are the top K of the score
    run's stored rank_score (the report's selection) and its top-1 is the teacher's stored softmax over them. Its
    time next to the report's is a reported figure (``infer_over_report_k*`` in the JUnit properties), not a
    bound: the two are measured in different processes, and a loaded machine slows either by any amount."""
    work, _ = pipeline_run
    store = Store(str(work / "store"))
    videos = pq.read_table(work / "store" / "videos.parquet").to_pandas()
    test = videos[videos["split"] == "test"].sort_values("video_id")
    paths = [str(synth_root / p) for p in test["path"]]
    run = RUNS["condi-sr"]
    for k in (1, 3):
        modelled = next(r for r in build_report(store, "3", k=[k], methods=["condi-sr"]).rows
                        if r.method == "condi-sr" and r.k == k)
        # Two passes over the videos, averaged like the report averages its videos.
        passes = [infer(store, paths, teacher=TEACHER, student_run=run, k=k) for _ in range(2)]
        measured = np.mean([r.seconds["model"] for results in passes for r in results])
        record_property(f"infer_over_report_k{k}", round(float(measured / modelled.time_per_video_s), 3))
        assert modelled.extra["teacher_time"] == "side-by-side" and modelled.extra["student_s"] > 0
        assert all(r.seconds["student"] > 0 and r.seconds["teacher"] > 0 for r in passes[0])
        compared = 0
        for (_, label, ids), result in zip(stored.test_videos(), passes[0]):
            assert result.clips == len(ids) and len(result.teacher_clips) == min(k, len(ids))
            score = np.sort(stored.scores[run].set_index("clip_id").loc[ids, "rank_score"].to_numpy())[::-1]
            if k < len(ids) and score[k - 1] - score[k] < 1e-5:
                continue  # a near tie at the cut: infer's fresh forward pass may order it either way
            picked = np.sort(stored.top_k(run, ids, k))
            assert result.teacher_clips == picked.tolist(), (result.path, k)
            probs = np.sort(stored.mean_probs(ids[picked]))[::-1]
            assert [p for _, p in result.top5] == pytest.approx(probs[:5].tolist(), abs=1e-5)
            if probs[0] - probs[1] > 1e-5:  # (a near tie of two classes may come out either way)
                assert result.top5[0][0] == stored.classes[int(stored.mean_probs(ids[picked]).argmax())]
            compared += 1
        assert compared >= len(paths) // 2, compared


def test_infer_cli_prints_top5(pipeline_run, synth_root, stored):
    """K = 2 with K_s = 1: the teacher classifies the clip the student ranks first, the student the clip it is
    least uncertain about; the top-5 is their mean softmax, recomputed here from the stored outputs."""
    work, _ = pipeline_run
    run = RUNS["condi-sr"]
    scores = stored.scores[run].set_index("clip_id")

    def clear_first(values: np.ndarray) -> bool:  # the best clip is ahead of the next by more than float noise
        ordered = np.sort(values)[::-1]
        return ordered[0] - ordered[1] > 1e-4

    # the first test video of 3+ clips whose picks are no near ties (infer's fresh forward pass could flip those)
    _, _, ids = next((v for v in stored.test_videos() if len(v[2]) >= 3
                      and clear_first(scores.loc[v[2], "rank_score"].to_numpy())
                      and clear_first(-scores.loc[v[2], "entropy"].to_numpy())))
    videos = pq.read_table(work / "store" / "videos.parquet").to_pandas().set_index("first_clip")
    video = videos.loc[int(ids[0])]
    assert video["clips"] == len(ids)
    result = CliRunner().invoke(cli, ["infer", str(synth_root / video["path"]), "--store", str(work / "store"),
                                      "--teacher", TEACHER, "--student", run, "--k", "2", "--ks", "1", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)  # stdout is the JSON alone; notes (the runtime chosen) go to stderr
    assert row["seconds"]["model"] == pytest.approx(row["seconds"]["student"] + row["seconds"]["selection"]
                                                    + row["seconds"]["teacher"])

    names, probs = zip(*row["top5"])
    assert len(names) == len(set(names)) == 5 and set(names) <= set(stored.classes)
    assert all(0 <= p <= 1 for p in probs) and list(probs) == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6

    teacher_pick = stored.top_k(run, ids, 1)
    student_pick = np.argsort(scores.loc[ids, "entropy"].to_numpy(), kind="stable")[:1]  # least uncertain
    assert row["teacher_clips"] == teacher_pick.tolist() and row["student_clips"] == student_pick.tolist()
    rows = scores.index.get_indexer(ids)
    logits = stored.student_logits[run][rows].astype(np.float64)
    student = np.exp(logits - logits.max(1, keepdims=True))
    student /= student.sum(1, keepdims=True)
    vectors = {int(teacher_pick[0]): stored.probs[stored.row[ids[teacher_pick[0]]]]}
    s = int(student_pick[0])
    vectors[s] = (vectors[s] + student[s]) / 2 if s in vectors else student[s]
    expected = np.mean(list(vectors.values()), axis=0)
    top = np.argsort(-expected, kind="stable")[:5]
    assert list(probs) == pytest.approx(expected[top].tolist(), abs=1e-5)
    if expected[top[0]] - expected[top[1]] > 1e-5:  # (a near tie of two classes may come out either way)
        assert names[0] == stored.classes[int(top[0])]


def test_run_killed_mid_pipeline_resumes_to_the_same_outputs(pipeline_run, run_cli, tmp_path):
    """`condi-pipe run` SIGKILLed as a whole (the first score run had staged its videos, nothing of it published)
    and run again: it resumes that stage, runs the rest, and ends with the uninterrupted run's weights, scores and
    accuracies, its teacher outputs untouched. The killed run starts from the uninterrupted run's store as it stood
    before the first student (extract, teacher-train and teacher-cache done: their resume after a kill is
    tests/system/faults/test_sigkill.py's), so it trains and scores every student itself."""
    from condi_pipe.pipeline.faults import KILL_ENV

    work, _ = pipeline_run
    shutil.copytree(work / BEFORE_STUDENTS, tmp_path / "store")
    assert not (tmp_path / "store" / "students").exists()
    config = tmp_path / "run.toml"
    config.write_text((work / "run.toml").read_text())  # store = "store": beside this copy
    killed = run_cli("run", "--config", str(config), "--quiet", env={KILL_ENV: "score.group:1"})
    assert killed.returncode == -9, killed.stderr
    stages = json.loads((tmp_path / "store" / "run.json").read_text())["stages"]
    assert stages[f"distill/{RUNS['condi-sr']}"]["state"] == "done"
    assert stages[f"score/{RUNS['condi-sr']}"]["state"] == "running"  # killed inside it
    assert stages.get(f"score/{RUNS['st-ent']}", {}).get("state") != "done"  # before the other student's scores

    resumed = CliRunner().invoke(cli, ["run", "--config", str(config), "--quiet"])  # in this process: nothing kills it
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert "resuming an interrupted run" in resumed.output
    fresh, again = Store(str(work / "store")), Store(str(tmp_path / "store"))
    for run in RUNS.values():
        assert again.read_bytes(f"students/{run}/weights.pt") == fresh.read_bytes(f"students/{run}/weights.pt")
        for column in ("clip_id", "pred", "rank_score"):
            assert (clip_outputs.read_clips(again, clip_outputs.scores_folder(run), [column]).equals(
                clip_outputs.read_clips(fresh, clip_outputs.scores_folder(run), [column]))), (run, column)
    teacher = clip_outputs.teacher_folder(TEACHER)
    assert np.array_equal(clip_outputs.read_array(again, teacher, "logits"),
                          clip_outputs.read_array(fresh, teacher, "logits"))
    for table in ("3", "accuracy"):
        accuracies = {(r["method"], r["k"], r["ks"]): r["accuracy"] for r in _rows(tmp_path, table)}
        assert accuracies == {(r["method"], r["k"], r["ks"]): r["accuracy"] for r in _rows(work, table)}, table
