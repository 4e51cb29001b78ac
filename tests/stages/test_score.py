"""score: a trained student over the eval split, checked against an independent forward pass; ranking rules,
video-level students, idempotent re-runs and resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import read_clips
from condi_pipe.methods.samplers import equidistant_indices
from condi_pipe.models import build_model
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import StageError
from condi_pipe.report import build_report
from condi_pipe.stages.score import ScoreRequest, score
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import load_videos
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
STUDENT, WIDTH = "shufflenetv2_3d", 0.25
QUIET = dict(quiet=True, log=lambda message: None)
INLINE = ExecutorOptions(workers=0)
RUNS = {"conf": "condi-sr", "ent": "st-ent", "video": "uniform-k"}


@pytest.fixture(scope="module")
def scored(synth_scored_store, distill_and_score, tmp_path_factory) -> Path:
    """The shared random-init teacher cache, three one-epoch students and their scores (in-process, small groups):
    the shared store's "conf" and "ent", and a video-level "video" made the same way."""
    store_dir = tmp_path_factory.mktemp("score") / "store"
    shutil.copytree(synth_scored_store, store_dir)
    distill_and_score(store_dir, "video", RUNS["video"])
    return store_dir


def _student(store_dir: Path, run: str):
    model = build_model(STUDENT, num_classes=10, width=WIDTH)
    model.load_state_dict(torch.load(store_dir / "students" / run / "weights.pt", weights_only=True))
    return model.eval()


def _scores(store_dir: Path, run: str):
    store = Store(str(store_dir))
    folder = clip_outputs.scores_folder(run)
    return (store, clip_outputs.read_clips(store, folder).to_pandas(),
            clip_outputs.read_videos(store, folder).to_pandas(), clip_outputs.read_meta(store, folder))


@pytest.mark.parametrize("run", ["conf", "ent"])
def test_clip_scores_match_an_independent_student_pass(scored, run):
    store, clips, videos, meta = _scores(scored, run)
    evaluation = load_videos(store, "test")
    assert list(clips.columns) == ["clip_id", "video_id", "split", "label", "pred", "confidence", "entropy",
                                   "rank_score"]
    assert clips.clip_id.tolist() == evaluation.clip_ids.tolist() and set(clips.split) == {"test"}
    assert clips.label.tolist() == np.repeat(evaluation.label, evaluation.clips).tolist()
    logits = clip_outputs.read_array(store, clip_outputs.scores_folder(run), "logits")
    assert logits.dtype == np.float32 and logits.shape == (len(clips), 10)

    model = _student(scored, run)
    ids = clips.clip_id.to_numpy()[:6]
    with torch.no_grad():
        out = model(model.preprocess(read_clips(open_clip_array(store), ids)))
    np.testing.assert_allclose(logits[:6], out.logits.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(clips.confidence[:6], torch.sigmoid(out.confidence).numpy(), rtol=1e-4, atol=1e-6)
    entropy = -(torch.softmax(out.logits, 1) * torch.log_softmax(out.logits, 1)).sum(1).numpy()
    np.testing.assert_allclose(clips.entropy[:6], entropy, rtol=1e-3, atol=1e-5)
    assert (clips.pred.to_numpy() == logits.argmax(1)).all()
    # The ranking rule of the loss: the order of z~ (its logit) for condi-sr, minus the entropy for st-ent.
    if run == "conf":
        np.testing.assert_allclose(clips.rank_score[:6], out.confidence.numpy().ravel(), rtol=1e-3, atol=1e-4)
        by_rank = clips.confidence.to_numpy()[np.argsort(clips.rank_score.to_numpy(), kind="stable")]
        assert (np.diff(by_rank) >= 0).all()
    else:
        np.testing.assert_allclose(clips.rank_score, -clips.entropy, rtol=1e-6, atol=1e-6)
    assert meta["ranking"] == {"conf": "confidence", "ent": "entropy"}[run]
    assert {k: meta[k] for k in ("run", "student", "width", "loss", "teacher")} == {
        "run": run, "student": STUDENT, "width": WIDTH, "loss": RUNS[run], "teacher": TEACHER}
    assert meta["device"] == "cpu" and meta["threads"] == 2 and meta["device_name"]
    assert videos.columns.tolist() == ["video_id", "split", "clips", "seconds"]
    assert videos.clips.tolist() == evaluation.clips.tolist() and (videos.seconds > 0).all()
    assert stage_record(store, f"score/{run}")["state"] == "done"
    assert not (scored / "staging").exists()


def test_video_level_students_predict_once_per_video(scored):
    store, clips, videos, meta = _scores(scored, "video")
    evaluation = load_videos(store, "test")
    assert len(clips) == 0 and meta["ranking"] == "none" and meta["k"] == 2
    assert videos.columns.tolist() == ["video_id", "split", "clips", "seconds", "pred", "k"]
    assert videos.k.tolist() == np.minimum(evaluation.clips, 2).tolist()
    probs = clip_outputs.read_array(store, clip_outputs.scores_folder("video"), "probs")
    assert probs.shape == (len(videos), 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert (videos.pred.to_numpy() == probs.argmax(1)).all()

    model = _student(scored, "video")
    v = 4
    ids = evaluation.first_clip[v] + equidistant_indices(int(evaluation.clips[v]), 2)
    with torch.no_grad():
        features = model(model.preprocess(read_clips(open_clip_array(store), ids))).features.mean(0, keepdim=True)
        expected = torch.softmax(model.classifier(features), 1)[0].numpy()
    np.testing.assert_allclose(probs[v], expected, rtol=1e-3, atol=1e-5)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_is_a_no_op(scored):
    folder = scored / "scores" / "conf"
    before = _fingerprint(folder)
    messages = []
    counts = score(Store(str(scored)), ScoreRequest("conf", RuntimeOptions(threads=2), clips_per_group=20), INLINE,
                   quiet=True, log=messages.append)
    assert any("already done" in m for m in messages) and counts["videos"] == 10
    assert _fingerprint(folder) == before


def test_unknown_run_is_refused(scored):
    with pytest.raises(StageError, match="no trained student 'nope'"):
        score(Store(str(scored)), ScoreRequest("nope"), INLINE, **QUIET)


@pytest.mark.slow
def test_sigkill_then_resume_through_dask_matches_the_inline_run(scored, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(scored, store_dir)
    shutil.rmtree(store_dir / "scores" / "conf")
    args = [sys.executable, "-m", "condi_pipe.cli", "score", "--student", "conf", "--store", str(store_dir),
            "--clips-per-group", "20", "--threads", "2", "--quiet"]
    env = dict(os.environ, CONDI_PIPE_KILL_AT="score.group:2")
    # Killed in-process (a SIGKILL would orphan Dask workers), resumed through a local Dask worker.
    killed = subprocess.run(args + ["--workers", "0", "--force"], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    staged = list((store_dir / "staging" / "score-conf").glob("*.json"))
    assert len(staged) >= 2
    env.pop("CONDI_PIPE_KILL_AT")
    resumed = subprocess.run(args + ["--workers", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    ours = clip_outputs.read_clips(Store(str(store_dir)), "scores/conf").drop(["confidence", "entropy", "rank_score"])
    theirs = clip_outputs.read_clips(Store(str(scored)), "scores/conf").drop(["confidence", "entropy", "rank_score"])
    assert ours.equals(theirs)
    np.testing.assert_allclose(clip_outputs.read_array(Store(str(store_dir)), "scores/conf", "logits"),
                               clip_outputs.read_array(Store(str(scored)), "scores/conf", "logits"),
                               rtol=1e-4, atol=1e-5)
    assert not math.isnan(pq.read_table(store_dir / "scores" / "conf" / "videos.parquet").column("seconds")[0].as_py())


def test_the_context_ranking_is_chosen_on_the_students_validation_part(validation_teacher_store, distill_and_score,
                                                                        tmp_path):
    """A student with a validation carve: score judges every context ranking on those videos (the teacher's cached
    softmax, the student's own outputs) and records the choice; clips.parquet holds the eval split's clips, and
    the validation clips' outputs are kept beside them, where the adaptive table reads them."""
    from condi_pipe.methods.context_rankings import choose_on_validation
    from condi_pipe.methods.metrics import softmax
    from condi_pipe.pipeline.splits import training_splits

    store_dir = tmp_path / "store"
    shutil.copytree(validation_teacher_store, store_dir)
    distill_and_score(store_dir, "conf", "condi-sr")
    store, clips, _, meta = _scores(store_dir, "conf")
    record = meta["context_ranking"]
    validation = training_splits(store, 0.1, 0).validation
    assert record["videos"] == len(validation.video_id) == 10 and record["split"] == "validation"
    assert set(clips.split) == {"test"} and not set(clips.video_id) & set(validation.video_id.tolist())

    model = _student(store_dir, "conf")
    with torch.no_grad():
        out = model(model.preprocess(read_clips(open_clip_array(store), validation.clip_ids)))
    teacher = clip_outputs.read_clips(store, "teacher/resnet10_3d_small", ["clip_id"]).column("clip_id").to_numpy()
    rows = np.searchsorted(teacher, validation.clip_ids)
    teacher_logits = clip_outputs.read_array(store, "teacher/resnet10_3d_small", "logits")[rows]
    expected = choose_on_validation(out.confidence.numpy().ravel(), out.logits.numpy(),
                                    softmax(teacher_logits.astype(np.float64)), validation.label, validation.offsets,
                                    confidence_ranked=True)
    assert record["chosen"] == expected["chosen"]
    assert set(record["candidates"]) == {"own", "consensus", "z-consensus"}
    for name, judged in expected["candidates"].items():
        assert record["candidates"][name]["accuracy"] == pytest.approx(judged["accuracy"], abs=1e-9)
    assert not (store_dir / "staging").exists()

    # the validation clips' outputs are kept beside the eval split's, for the report to choose thresholds on
    folder = clip_outputs.scores_folder("conf")
    kept = clip_outputs.read_validation_clips(store, folder).to_pandas()
    assert kept.clip_id.tolist() == validation.clip_ids.tolist() and set(kept.split) == {"validation"}
    assert meta["validation_scores"]["videos"] == 10 and meta["validation_scores"]["clips"] == len(kept)
    # the tolerances of the eval split's check above: the stored pass ran in the runtime's layout, this one not
    np.testing.assert_allclose(clip_outputs.read_validation_array(store, folder, "logits"), out.logits.numpy(),
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(kept.rank_score, out.confidence.numpy().ravel(), rtol=1e-3, atol=1e-4)

    # the adaptive table chooses its thresholds on them; a run scored before they were kept gets a note naming
    # the command that adds them
    table = build_report(str(store_dir), "adaptive", k=[1, 2])
    adaptive = [row for row in table.rows if "policy" in row.extra]
    entries = {row.method.split("@")[0] for row in adaptive}  # ConDi-SR, and its +context variant if chosen
    assert "condi-sr" in entries and entries <= {"condi-sr", "condi-sr+context"} and len(adaptive) == 8 * len(entries)
    assert {row.extra["validation"]["videos"] for row in adaptive} == {10}
    assert all(row.extra["validation"]["mean_teacher_clips"] <= row.extra["target_clips"] for row in adaptive)

    folder = store_dir / "scores" / "conf"  # as scored before the validation part was kept
    shutil.rmtree(folder / "validation_logits.zarr")
    (folder / "validation_clips.parquet").unlink()
    meta = json.loads((folder / "meta.json").read_text())
    del meta["validation_scores"]
    (folder / "meta.json").write_text(json.dumps(meta))
    table = build_report(str(store_dir), "adaptive", k=[1, 2])
    assert not [row for row in table.rows if "policy" in row.extra]
    assert any("scores/conf keeps no validation scores (scored before `score` kept them); re-run `condi-pipe score "
               "--student conf --force` to add them; no adaptive rows." in line for line in table.footer)
