"""teacher-train: the epoch loop on real stored clips, its history on the validation split carved from train, the
published weights of the epoch kept, byte-identical resume after SIGKILL, and teacher-cache picking up the trained
weights."""

from __future__ import annotations

import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import StepDecay, TrainOptions, read_clips
from condi_pipe.models import build_model
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.splits import training_splits
from condi_pipe.pipeline.stage import StageError
from condi_pipe.stages.teacher_train import TeacherTrainRequest, teacher_train
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import load_videos
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
QUIET = dict(quiet=True, log=lambda message: None)
# Small enough for a test: 2 clips of each of the 20 fit videos per epoch, batches of 8.
EPOCHS, BATCH, LR, CLIPS_PER_VIDEO, THREADS, SEED = 2, 8, 0.05, 2, 2, 3
CLI_ARGS = ["--teacher", TEACHER, "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", str(LR),
            "--clips-per-video", str(CLIPS_PER_VIDEO), "--threads", str(THREADS), "--seed", str(SEED), "--quiet"]


def request() -> TeacherTrainRequest:
    return TeacherTrainRequest(TEACHER, train=TrainOptions(EPOCHS, BATCH, LR, seed=SEED),
                               clips_per_video=CLIPS_PER_VIDEO, runtime=RuntimeOptions(threads=THREADS))


@pytest.fixture(scope="module")
def trained(validation_teacher_store, tmp_path_factory):
    """An uninterrupted in-process run: the reference for the resume test."""
    store_dir = tmp_path_factory.mktemp("teacher_train") / "store"
    shutil.copytree(validation_teacher_store, store_dir)
    counts = teacher_train(Store(str(store_dir)), request(), **QUIET)
    return store_dir, counts


def _folder(store_dir: Path) -> Path:
    return store_dir / "trained_teachers" / TEACHER


def _expected_kept_epoch(history: list[dict]) -> int:
    """The epoch ``keep="best"`` must keep, worked out here from the history's validation metric alone (the rule
    in ``pipeline.training``): the highest finite ``eval_video_accuracy``, the earlier epoch on a tie; the last
    epoch when no epoch has a finite value."""
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    scored = [row for row in history if math.isfinite(row["eval_video_accuracy"])]
    if not scored:
        return len(history)
    return max(scored, key=lambda row: (row["eval_video_accuracy"], -row["epoch"]))["epoch"]


def test_history_has_a_row_per_epoch_with_accuracy_from_the_validation_split(trained):
    store_dir, counts = trained
    history = pq.read_table(_folder(store_dir) / "history.parquet").to_pylist()
    assert [row["epoch"] for row in history] == [1, 2]
    splits = training_splits(Store(str(store_dir)), 0.1, seed=0)
    train, evaluation = splits.fit, splits.validation
    for row in history:
        assert row["train_samples"] == np.minimum(train.clips, CLIPS_PER_VIDEO).sum()
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["eval_clip_accuracy"] <= 1
        # Video accuracy counts whole eval videos.
        assert row["eval_video_accuracy"] * len(evaluation.video_id) == pytest.approx(
            round(row["eval_video_accuracy"] * len(evaluation.video_id)))
        assert row["eval_loss"] > 0 and row["train_seconds"] > 0 and row["eval_seconds"] > 0
    # Cosine over 2 epochs: full LR, then half.
    assert [row["lr_model"] for row in history] == pytest.approx([LR, LR / 2])
    # The epoch kept: the best validation video accuracy, the earlier one on a tie.
    kept = history[_expected_kept_epoch(history) - 1]
    assert counts == {"epochs": 2, "clip_accuracy": round(kept["eval_clip_accuracy"], 4),
                      "video_accuracy": round(kept["eval_video_accuracy"], 4), "epoch_kept": kept["epoch"],
                      "selection_metric": "eval_video_accuracy",
                      "selection_value": round(kept["eval_video_accuracy"], 4)}


def _clip_accuracy(model, store: Store, videos) -> float:
    clips = read_clips(open_clip_array(store), videos.clip_ids)
    with torch.no_grad():
        logits = torch.cat([model(model.preprocess(clips[i : i + 16])).logits for i in range(0, len(clips), 16)])
    return float((logits.argmax(1).numpy() == np.repeat(videos.label, videos.clips)).mean())


def test_published_weights_reproduce_the_kept_epochs_validation_accuracy(trained):
    store_dir, _ = trained
    store = Store(str(store_dir))
    folder = _folder(store_dir)
    assert not (folder / "checkpoints").exists()  # dropped once the weights are published
    model = build_model(TEACHER, num_classes=10)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.eval()
    meta = store.read_json(f"trained_teachers/{TEACHER}/meta.json")
    history = pq.read_table(folder / "history.parquet").to_pylist()
    # Which epoch should be kept is recomputed from the history, not read from the stage's own meta.json.
    kept = history[_expected_kept_epoch(history) - 1]
    assert meta["epoch_kept"] == meta["selection"]["epoch"] == kept["epoch"]
    assert meta["selection"]["value"] == pytest.approx(kept["eval_video_accuracy"], abs=1e-6)
    validation = training_splits(store, 0.1, seed=0).validation
    assert _clip_accuracy(model, store, validation) == pytest.approx(kept["eval_clip_accuracy"])
    # The test split chose nothing; the kept weights' accuracy on it is recorded once, apart.
    assert _clip_accuracy(model, store, load_videos(store, "test")) == pytest.approx(
        meta["test"]["test_clip_accuracy"], abs=1e-6)
    assert meta["selection"]["metric"] == "eval_video_accuracy" and meta["selection"]["split"] == "validation"
    assert (meta["fit_videos"], meta["validation_videos"], meta["val_fraction"]) == (20, 10, 0.1)
    assert meta["num_classes"] == 10 and meta["teacher"] == TEACHER and meta["config"]["flip"] is True
    assert stage_record(store, f"teacher-train/{TEACHER}")["state"] == "done"


def test_rerun_is_a_no_op_and_a_new_configuration_needs_force(trained):
    store_dir, counts = trained
    weights = (_folder(store_dir) / "weights.pt").read_bytes()
    messages = []
    assert teacher_train(Store(str(store_dir)), request(), quiet=True, log=messages.append) == counts
    assert any("already done" in m for m in messages)
    assert (_folder(store_dir) / "weights.pt").read_bytes() == weights
    changed = TeacherTrainRequest(TEACHER, train=TrainOptions(3, BATCH, LR, seed=SEED), clips_per_video=CLIPS_PER_VIDEO,
                                  runtime=RuntimeOptions(threads=THREADS))
    with pytest.raises(StageError, match="--force"):
        teacher_train(Store(str(store_dir)), changed, **QUIET)


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(trained, validation_teacher_store, tmp_path, run_cli):
    reference, _ = trained
    store_dir = tmp_path / "store"
    shutil.copytree(validation_teacher_store, store_dir)
    killed = run_cli("teacher-train", *CLI_ARGS, "--store", str(store_dir), env={KILL_ENV: "teacher-train.epoch:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (_folder(store_dir) / "checkpoints" / "last.pt").exists()
    assert not (_folder(store_dir) / "weights.pt").exists()
    assert len(pq.read_table(_folder(store_dir) / "history.parquet")) == 1

    resumed = run_cli("teacher-train", *CLI_ARGS, "--store", str(store_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 2" in resumed.stdout
    assert (_folder(store_dir) / "weights.pt").read_bytes() == (_folder(reference) / "weights.pt").read_bytes()
    ours = pq.read_table(_folder(store_dir) / "history.parquet").drop(["train_seconds", "eval_seconds"])
    theirs = pq.read_table(_folder(reference) / "history.parquet").drop(["train_seconds", "eval_seconds"])
    assert ours.equals(theirs)


def test_teacher_cache_uses_the_trained_teacher(trained, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(trained[0], store_dir)
    # --force: the store holds a random-init cache of the same teacher (validation_teacher_store's)
    result = CliRunner().invoke(cli, ["teacher-cache", "--teacher", TEACHER, "--store", str(store_dir), "--workers",
                                      "0", "--threads", "2", "--quiet", "--force"])
    assert result.exit_code == 0, result.output
    store = Store(str(store_dir))
    folder = clip_outputs.teacher_folder(TEACHER)
    assert clip_outputs.read_meta(store, folder)["weights"] == f"trained_teachers/{TEACHER}/weights.pt"
    model = build_model(TEACHER, num_classes=10)
    model.load_state_dict(torch.load(_folder(store_dir) / "weights.pt", weights_only=True))
    model.eval()
    clips = read_clips(open_clip_array(store), np.arange(3))
    with torch.no_grad():
        expected = model(model.preprocess(clips)).logits.numpy()
    np.testing.assert_allclose(clip_outputs.read_array(store, folder, "logits")[:3], expected, rtol=1e-3, atol=1e-3)


def test_teacher_cache_without_weights_says_how_to_get_them(synth_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    result = CliRunner().invoke(cli, ["teacher-cache", "--teacher", TEACHER, "--store", str(store_dir), "--quiet"])
    assert result.exit_code == 2
    assert "no weights: pass --weights or run teacher-train first" in result.output


def test_step_decay_formula():
    assert [StepDecay(5)(e) for e in range(3)] == pytest.approx([1, 1 / 5, 1 / 25])
