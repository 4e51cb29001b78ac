"""``condi-pipe predict`` on real encoded videos: the report's answers from decoding the files again, a bundle that
predicts as its store does, broken files as failure rows, a killed run resumed to the same bytes, a Dask cluster
giving the same bytes, and the clips kept while the student scores a video never more than the teacher reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.app.bundle import make_bundle
from condi_pipe.app.predict import PredictRequest, _Kept, models_from_bundle, models_from_store, predict
from condi_pipe.cli import main as cli
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.methods.samplers import equidistant_indices, top_k_indices
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.manifests import load_videos, video_paths
from condi_pipe.storage.predictions import PREDICTIONS, read_failures, read_predictions
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
RUNTIME = RuntimeOptions(threads=2, layout="channels-last", bf16=False)  # pinned as the caches ran: no timing
QUIET = dict(quiet=True, log=lambda message: None)


@pytest.fixture(scope="module")
def store_dir(synth_scored_store, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("predict") / "store"
    shutil.copytree(synth_scored_store, target)
    return target


@pytest.fixture(scope="module")
def test_videos(store_dir, synth_root) -> list[tuple[int, str]]:
    """(video_id, file) of the store's eval videos, in the store's order."""
    store = Store(str(store_dir))
    videos = load_videos(store, "test")
    return [(int(v), str(synth_root / p)) for v, p in zip(videos.video_id, video_paths(store, videos))]


def _predict(store_dir, out, files, runtime=RUNTIME, **request) -> Store:
    request = PredictRequest(runtime=runtime, **request)
    models = models_from_store(Store(str(store_dir)), request, student_run="conf" if request.needs_student else None,
                               teacher=TEACHER, log=lambda message: None)
    predict(Store(str(out)), files, models, request, ExecutorOptions(workers=0), **QUIET)
    return Store(str(out))


def _stored(store_dir, video_id: int):
    """The stored teacher softmax and the conf run's rank scores of one video's clips, in clip order."""
    store = Store(str(store_dir))
    teacher = clip_outputs.read_clips(store, clip_outputs.teacher_folder(TEACHER), ["clip_id", "video_id"])
    rows = np.flatnonzero(teacher.column("video_id").to_numpy() == video_id)
    order = np.argsort(teacher.column("clip_id").to_numpy()[rows])
    logits = clip_outputs.read_array(store, clip_outputs.teacher_folder(TEACHER), "logits")[rows[order]]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    scored = clip_outputs.read_clips(store, clip_outputs.scores_folder("conf"), ["video_id", "clip_id", "rank_score"])
    mine = scored.filter(scored.column("video_id").to_numpy() == video_id).sort_by("clip_id")
    return probs, mine.column("rank_score").to_numpy()


def _clear_margin(values: np.ndarray, k: int, margin: float) -> bool:
    """The k-th and (k+1)-th largest values are apart by more than ``margin`` (a recomputation cannot swap them)."""
    ordered = np.sort(values)[::-1]
    return k >= len(values) or ordered[k - 1] - ordered[k] > margin


def test_predict_gives_the_reports_clips_and_classes(store_dir, test_videos, tmp_path):
    """Decoding the files again, ConDi-SR at K=2 picks the clips the stored scores rank first, and its top-1 is
    the stored teacher's mean softmax over them; Dense's top-1 is the stored Dense prediction."""
    files = [f for _, f in test_videos]
    condi = read_predictions(_predict(store_dir, tmp_path / "condi", files, method="condi-sr", k=2)).to_pylist()
    dense = read_predictions(_predict(store_dir, tmp_path / "dense", files, method="dense", k=2)).to_pylist()
    compared = 0
    for (video_id, _), row, dense_row in zip(test_videos, condi, dense):
        probs, scores = _stored(store_dir, video_id)
        assert row["clips"] == dense_row["clips"] == len(probs)
        assert dense_row["teacher_clips"] == list(range(len(probs)))
        # the student on the decoded files says what it said on the extracted clips: z~ = sigmoid(stored logit)
        np.testing.assert_allclose(row["z_tilde"], 1 / (1 + np.exp(-scores)), rtol=0, atol=2e-6)
        if not _clear_margin(scores, 2, 2e-6):
            continue  # two clips tied within float noise (a one-epoch student): either choice is the report's
        chosen = sorted(top_k_indices(scores, 2).tolist())
        assert row["teacher_clips"] == chosen
        mean = probs[chosen].mean(0)
        if _clear_margin(mean, 1, 1e-6):
            assert row["top1"] == row["top5"][0] and row["top1"] == _class(store_dir, mean.argmax())
        if _clear_margin(probs.mean(0), 1, 1e-6):
            assert dense_row["top1"] == _class(store_dir, probs.mean(0).argmax())
        compared += 1
    assert compared >= len(test_videos) // 3


def _class(store_dir, index: int) -> str:
    meta = clip_outputs.read_meta(Store(str(store_dir)), clip_outputs.teacher_folder(TEACHER))
    return meta["classes"][int(index)]


def test_clip_times_come_from_the_stream(store_dir, test_videos, tmp_path):
    out = _predict(store_dir, tmp_path / "eq", [test_videos[0][1]], method="equidistant", k=3)
    (row,) = read_predictions(out).to_pylist()
    assert row["teacher_clips"] == sorted(equidistant_indices(row["clips"], 3).tolist())
    starts, ends = np.array(row["teacher_clip_start_s"]), np.array(row["teacher_clip_end_s"])
    assert np.all(ends > starts) and np.all(np.diff(starts) > 0)
    fps = (16 * np.array(row["teacher_clips"]) / np.where(starts > 0, starts, np.inf)).max()
    assert 5 < fps < 61  # the benchmark's files are 25-30 fps: clip c starts 16 c frames in


def test_a_bundle_predicts_what_its_store_predicts(store_dir, test_videos, tmp_path):
    files = [f for _, f in test_videos[:4]]
    from_store = _predict(store_dir, tmp_path / "from-store", files, method="condi-sr", k=2, ks=1)
    make_bundle(Store(str(store_dir)), str(tmp_path / "bundle"), method="condi-sr", k=2, ks=1, student_run="conf",
                log=lambda message: None)
    request = PredictRequest(method="condi-sr", k=2, ks=1, runtime=RUNTIME)
    predict(Store(str(tmp_path / "from-bundle")), files, models_from_bundle(str(tmp_path / "bundle"), request),
            request, ExecutorOptions(workers=0), **QUIET)
    assert (tmp_path / "from-bundle" / PREDICTIONS).read_bytes() == Path(from_store.path(PREDICTIONS)).read_bytes()
    rows = read_predictions(from_store).to_pylist()
    assert all(len(r["student_clips"]) == 1 and len(r["teacher_clips"]) == 1 for r in rows)
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "condi-sr at K = 2 (K_s = 1 by the student)" in card and "shufflenetv2_3d" in card


def test_broken_files_are_failure_rows_and_the_rest_is_predicted(store_dir, test_videos, tmp_path):
    good = [f for _, f in test_videos[:2]]
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(Path(good[0]).read_bytes()[:300])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    files = [good[0], str(truncated), str(empty), str(tmp_path / "missing.mp4"), good[1]]
    out = _predict(store_dir, tmp_path / "out", files, method="condi-sr", k=2)
    assert [r["path"] for r in read_predictions(out).to_pylist()] == good
    assert [r["video_index"] for r in read_predictions(out).to_pylist()] == [0, 4]
    failures = read_failures(out).to_pylist()
    assert [f["path"] for f in failures] == files[1:4]
    assert [f["kind"] for f in failures][1:] == ["empty-file", "missing-file"]
    assert all(f["path"] in f["message"] and "\n" not in f["message"] for f in failures)


def _cli_args(store_dir, files, out) -> list[str]:
    return ["predict", *files, "--store", str(store_dir), "--student", "conf", "--out", str(out), "--k", "2",
            "--threads", "2", "--layout", "channels-last", "--bf16", "off", "--quiet"]


@pytest.mark.slow
def test_a_killed_predict_resumes_to_the_bytes_of_an_uninterrupted_run(store_dir, test_videos, tmp_path, run_cli):
    files = [f for _, f in test_videos[:5]]
    whole = run_cli(*_cli_args(store_dir, files, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = run_cli(*_cli_args(store_dir, files, tmp_path / "resumed"), env={KILL_ENV: "predict.video:3"})
    assert killed.returncode == -9
    assert not (tmp_path / "resumed" / PREDICTIONS).exists()
    resumed = run_cli(*_cli_args(store_dir, files, tmp_path / "resumed"))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "resumed" / PREDICTIONS).read_bytes() == (tmp_path / "whole" / PREDICTIONS).read_bytes()
    assert not (tmp_path / "resumed" / "staging").exists()


@pytest.mark.slow
def test_predict_on_dask_workers_gives_the_same_bytes(store_dir, test_videos, tmp_path):
    files = [f for _, f in test_videos[:4]]
    one_thread = RuntimeOptions(threads=1, layout="channels-last", bf16=False)  # each of 2 workers has a core
    alone = _predict(store_dir, tmp_path / "alone", files, runtime=one_thread, method="condi-sr", k=2)
    request = PredictRequest(method="condi-sr", k=2, runtime=one_thread)
    models = models_from_store(Store(str(store_dir)), request, student_run="conf", log=lambda message: None)
    predict(Store(str(tmp_path / "dask")), files, models, request, ExecutorOptions(workers=2), **QUIET)
    assert (tmp_path / "dask" / PREDICTIONS).read_bytes() == Path(alone.path(PREDICTIONS)).read_bytes()


def test_the_cli_refuses_two_model_sources_and_reruns_nothing(store_dir, test_videos, tmp_path):
    files = [test_videos[0][1]]
    both = CliRunner().invoke(cli, _cli_args(store_dir, files, tmp_path / "o") + ["--model", str(tmp_path)])
    assert both.exit_code == 2 and "one of the two" in both.output
    first = CliRunner().invoke(cli, _cli_args(store_dir, files, tmp_path / "o"))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, _cli_args(store_dir, files, tmp_path / "o"))
    assert again.exit_code == 0 and "already done" in again.output


@pytest.mark.parametrize("size", [1, 3])
def test_the_clips_kept_while_scoring_are_the_global_top_and_no_more(size):
    """Windows of random sizes with tied scores: the kept clips are ``top_k_indices`` of all scores, and the
    buffer never holds more than ``size`` clips (what bounds predict's memory besides the window)."""
    rng = np.random.default_rng(size)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties: the lower index must win, as in the report
    kept, first = _Kept(size), 0
    while first < len(scores):
        n = int(rng.integers(1, 9))
        clips = np.arange(first, min(first + n, len(scores)))[:, None] * np.ones((1, 2))
        kept.offer(first, scores[first:first + n], clips)
        assert len(kept.clips) <= size
        first += n
    best = top_k_indices(scores, size)
    assert sorted(kept.index.tolist()) == sorted(best.tolist())
    assert kept.take(np.sort(best))[:, 0].tolist() == np.sort(best).tolist()
