"""distill: every loss trains from the teacher cache alone, logs every declared column, follows ConDi's LR schedule
and resumes after SIGKILL to byte-identical weights."""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.models import build_model, registry
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.stage import StageError
from condi_pipe.pipeline.torch_runtime import RuntimeOptions
from condi_pipe.pipeline.training import TrainOptions
from condi_pipe.stages.distill import (LOSSES, TERMS, VIDEO_LOSSES, DistillRequest, DistillTask, LossOptions,
                                      default_run_name, distill)
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
STUDENT, WIDTH = "shufflenetv2_3d", 0.25
QUIET = dict(quiet=True, log=lambda message: None)


@pytest.fixture(scope="module")
def cached_store(synth_teacher_store, tmp_path_factory) -> Path:
    """This module's copy of the synth store with a random-init resnet10_3d_small teacher cache."""
    store_dir = tmp_path_factory.mktemp("distill") / "store"
    shutil.copytree(synth_teacher_store, store_dir)
    return store_dir


@pytest.fixture(autouse=True)
def teachers_cannot_be_built(monkeypatch):
    """distill must never run the teacher: building any registered teacher fails during these tests."""

    def refuse(*args, **kwargs):
        raise AssertionError("distill built a teacher model")

    for spec in registry.list_models():
        if spec.role == "teacher":
            monkeypatch.setitem(registry._REGISTRY, spec.name, dataclasses.replace(spec, builder=refuse))


def test_the_guard_refuses_teachers():
    with pytest.raises(AssertionError, match="built a teacher"):
        build_model(TEACHER, num_classes=10)
    build_model(STUDENT, num_classes=10, width=WIDTH)


def small(loss: str, epochs: int = 1, **kw) -> DistillRequest:
    """One or two optimizer steps per epoch: one clip per training video (10 videos), batches of 8."""
    losses = LossOptions(k=2)
    return DistillRequest(loss, STUDENT, TEACHER, WIDTH, losses=losses,
                          train=TrainOptions(epochs, 8, 0.1, seed=1, eval_every=kw.pop("eval_every", 1)),
                          clips_per_video=1, runtime=RuntimeOptions(threads=2), **kw)


def _copy(cached_store: Path, tmp_path: Path) -> Path:
    store_dir = tmp_path / "store"
    shutil.copytree(cached_store, store_dir)
    return store_dir


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_from_the_cache_and_logs_every_column(loss, cached_store, tmp_path):
    store_dir = _copy(cached_store, tmp_path)
    store = Store(str(store_dir))
    counts = distill(store, small(loss), **QUIET)
    run = default_run_name(loss, STUDENT, WIDTH, 2)
    folder = store_dir / "students" / run
    history = pq.read_table(folder / "history.parquet")
    expected = (["epoch", "lr_main", "lr_confidence"] + [f"train_{c}" for c in DistillTask.train_columns]
                + ["train_samples"] + list(DistillTask.eval_columns) + ["train_seconds", "eval_seconds"])
    assert history.column_names == expected
    row = history.to_pylist()[0]
    for term in TERMS:
        assert math.isfinite(row[f"train_{term}"]) and math.isfinite(row[f"eval_{term}"]), term
    assert row["eval_video_accuracy"] * 10 == pytest.approx(round(row["eval_video_accuracy"] * 10))
    # Terms a loss does not have stay zero; the ones it has are positive.
    has = {"condi-sr": {"kd", "conf"}, "bce-conf": {"conf"}, "st-ent": {"kd"}, "st-conf": {"conf", "ce"},
           "trivial-mt": {"kd", "conf", "ce"}, "fewer-frames": {"rep", "kd", "ce"}, "uniform-k": {"ce"}}[loss]
    for term in ("kd", "conf", "ce", "rep"):
        assert (row[f"eval_{term}"] > 0) == (term in has), (term, row[f"eval_{term}"])
    if loss in VIDEO_LOSSES:
        assert math.isnan(row["eval_clip_accuracy"]) and math.isnan(row["eval_auroc"])
        assert row["train_samples"] == 10  # videos
    else:
        assert 0 <= row["eval_clip_accuracy"] <= 1 and 0 <= row["eval_auroc"] <= 1
        assert math.isnan(row["eval_fpr"]) == (loss == "st-ent")
        assert row["train_samples"] == 10  # one clip per training video
    assert math.isnan(row["train_lam"]) == (loss not in ("condi-sr", "st-conf", "trivial-mt"))

    meta = store.read_json(f"students/{run}/meta.json")
    assert meta["loss"] == loss and meta["teacher"] == TEACHER and meta["width"] == WIDTH
    assert meta["config"]["losses"]["tau"] == 0.9 and meta["config"]["lr_decay"] == 1.25
    assert meta["ranking"] == {"st-ent": "entropy"}.get(loss, "none" if loss in VIDEO_LOSSES else "confidence")
    assert (folder / "weights.pt").exists() and not (folder / "checkpoints").exists()
    # The teacher's features are 128-d, the student's 1024-d: fewer-frames learns and keeps a projection.
    assert (folder / "projection.pt").exists() == (loss == "fewer-frames")
    assert counts["epochs"] == 1


def test_lr_schedule_divides_the_confidence_head_by_5_and_the_rest_by_1_25(cached_store, tmp_path):
    store_dir = _copy(cached_store, tmp_path)
    distill(Store(str(store_dir)), small("condi-sr", epochs=3, eval_every=3), **QUIET)
    rows = pq.read_table(store_dir / "students" / default_run_name("condi-sr", STUDENT, WIDTH) / "history.parquet")
    rows = rows.to_pylist()
    assert [r["lr_confidence"] for r in rows] == pytest.approx([0.1, 0.1 / 5, 0.1 / 5**2])
    assert [r["lr_main"] for r in rows] == pytest.approx([0.1, 0.1 / 1.25, 0.1 / 1.25**2])
    assert math.isnan(rows[0]["eval_total"]) and math.isfinite(rows[2]["eval_total"])  # --eval-every 3


def test_missing_teacher_cache_and_changed_configuration_are_refused(cached_store, tmp_path):
    store_dir = _copy(cached_store, tmp_path)
    store = Store(str(store_dir))
    with pytest.raises(StageError, match="no teacher cache for 'r3d_18'"):
        distill(store, dataclasses.replace(small("st-ent"), teacher="r3d_18"), **QUIET)
    distill(store, small("st-ent"), **QUIET)
    messages = []
    distill(store, small("st-ent"), quiet=True, log=messages.append)
    assert any("already done" in m for m in messages)
    with pytest.raises(StageError, match="--force"):
        distill(store, dataclasses.replace(small("st-ent"), losses=LossOptions(tau=2.0, k=2)), **QUIET)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(cached_store, tmp_path, run_cli):
    """st-conf: dropout, per-step hint sampling and the BudgetLambda state all have to survive the kill."""
    args = ["distill", "--loss", "st-conf", "--student", STUDENT, "--width", str(WIDTH), "--teacher", TEACHER,
            "--epochs", "2", "--batch-size", "4", "--clips-per-video", "1", "--seed", "1", "--threads", "2",
            "--eval-every", "2", "--quiet"]
    reference = _copy(cached_store, tmp_path / "reference")  # the same run, uninterrupted and in-process
    distill(Store(str(reference)), DistillRequest("st-conf", STUDENT, TEACHER, WIDTH,
                                                  train=TrainOptions(2, 4, 0.1, seed=1, eval_every=2),
                                                  clips_per_video=1, runtime=RuntimeOptions(threads=2)), **QUIET)
    store_dir = _copy(cached_store, tmp_path / "killed")
    # 10 clips in batches of 4: 3 steps per epoch, so step 4 is the first of epoch 2.
    killed = run_cli(*args, "--store", str(store_dir), env={KILL_ENV: "distill.step:4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_cli(*args, "--store", str(store_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 2" in resumed.stdout
    run = default_run_name("st-conf", STUDENT, WIDTH)
    ours, theirs = store_dir / "students" / run, reference / "students" / run
    assert (ours / "weights.pt").read_bytes() == (theirs / "weights.pt").read_bytes()
    meta = Store(str(store_dir)).read_json(f"students/{run}/meta.json")
    assert meta["budget_lambda"] == Store(str(reference)).read_json(f"students/{run}/meta.json")["budget_lambda"]
    assert meta["budget_lambda"]["value"] != 0.1  # it was steered every step


def test_video_targets_are_means_over_all_clips(cached_store):
    from condi_pipe.stages.distill import TeacherCache
    from condi_pipe.storage.manifests import load_videos

    store = Store(str(cached_store))
    cache = TeacherCache(store, TEACHER, need_features=True)
    videos = load_videos(store, "train")
    features, probs = cache.video_targets(videos)
    folder = clip_outputs.teacher_folder(TEACHER)
    logits = clip_outputs.read_array(store, folder, "logits")
    raw = clip_outputs.read_array(store, folder, "features").astype(np.float32)
    first, n = int(videos.first_clip[3]), int(videos.clips[3])
    expected = torch.softmax(torch.from_numpy(logits[first : first + n]), 1).mean(0).numpy()
    np.testing.assert_allclose(probs[3], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[3], raw[first : first + n].mean(0), rtol=1e-5, atol=1e-5)
