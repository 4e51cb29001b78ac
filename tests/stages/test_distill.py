"""distill: every loss trains from the teacher cache alone, logs every declared column on the validation split,
keeps the epoch with the best validation selection metric, follows ConDi's LR schedule (per reference epoch of
samples, or per pass) and resumes after SIGKILL to byte-identical weights."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions, read_clips
from condi_pipe.methods.metrics import auroc, softmax
from condi_pipe.methods.registry import method_names
from condi_pipe.methods.samplers import equidistant_indices
from condi_pipe.models import build_model, registry
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.splits import training_splits
from condi_pipe.pipeline.stage import StageError
from condi_pipe.stages.distill import (
    TERMS,
    DistillRequest,
    DistillTask,
    LossOptions,
    default_run_name,
    distill,
)
from condi_pipe.stages.score import student_ref
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
STUDENT, WIDTH = "shufflenetv2_3d", 0.25
QUIET = dict(quiet=True, log=lambda message: None)

LOSSES, VIDEO_LOSSES = method_names(), method_names("video")  # the built-in methods, as registered


FIT_VIDEOS, VALIDATION_VIDEOS = 20, 10  # the default carve of validation_teacher_store's 30 train videos


@pytest.fixture(scope="module")
def cached_store(validation_teacher_store, tmp_path_factory) -> Path:
    """This module's copy of the 40-video store with a random-init resnet10_3d_small teacher cache."""
    store_dir = tmp_path_factory.mktemp("distill") / "store"
    shutil.copytree(validation_teacher_store, store_dir)
    return store_dir


@pytest.fixture(autouse=True)
def teachers_cannot_be_built():
    """distill must never run the teacher: building any registered teacher fails during these tests."""

    def refuse(*args, **kwargs):
        raise AssertionError("distill built a teacher model")

    with contextlib.ExitStack() as stack:
        for spec in registry.list_models():
            if spec.role == "teacher":
                stack.enter_context(registry.MODELS.temporarily(spec.name, dataclasses.replace(spec, builder=refuse)))
        yield


def test_the_guard_refuses_teachers():
    with pytest.raises(AssertionError, match="built a teacher"):
        build_model(TEACHER, num_classes=10)
    build_model(STUDENT, num_classes=10, width=WIDTH)


def small(loss: str, epochs: int = 1, **kw) -> DistillRequest:
    """Three optimizer steps per epoch: one clip per fit video (20 videos), batches of 8."""
    losses = LossOptions(k=2)
    train = {k: kw.pop(k) for k in ("eval_every", "val_fraction", "keep") if k in kw}
    return DistillRequest(loss, STUDENT, TEACHER, WIDTH, losses=losses,
                          train=TrainOptions(epochs, 8, 0.1, seed=1, **train),
                          clips_per_video=1, runtime=RuntimeOptions(threads=2), **kw)


def _copy(cached_store: Path, tmp_path: Path) -> Path:
    store_dir = tmp_path / "store"
    shutil.copytree(cached_store, store_dir)
    return store_dir


@pytest.fixture(scope="module")
def distilled(cached_store, tmp_path_factory):
    """``distilled(request) -> (store_dir, counts)``: ``request`` distilled on first use into its own copy of the
    cached store, shared by the module's tests, with the counts distill returned. Tests only read that store (a
    test that writes copies it). Called from inside a test, so the teacher guard is on."""
    done: dict[str, tuple[Path, dict]] = {}

    def run(request: DistillRequest) -> tuple[Path, dict]:
        key = repr(request)
        if key not in done:
            store_dir = tmp_path_factory.mktemp("distilled") / "store"
            shutil.copytree(cached_store, store_dir)
            done[key] = (store_dir, distill(Store(str(store_dir)), request, **QUIET))
        return done[key]

    return run


# One loss per evaluation path: confidence ranking with its FPR, entropy ranking, and both video-level losses.
RECOMPUTED = ("condi-sr", "st-ent", "fewer-frames", "uniform-k")


def _recompute_eval(store: Store, run: str, meta: dict, loss: str) -> dict[str, float]:
    """The kept epoch's eval columns recomputed outside the stage: weights.pt built by score's loader, run on the
    validation videos the stage carved (``training_splits`` with meta's fraction and seed), against the teacher
    cache's z. Clip-ranked losses: every validation clip; video losses: each video's K equidistant clips."""
    ref, _ = student_ref(store, run)
    model = ref.build(store).eval()
    validation = training_splits(store, meta["val_fraction"], meta["val_seed"]).validation
    array = open_clip_array(store)

    def forward(ids):
        outs = []
        with torch.no_grad():
            for i in range(0, len(ids), 32):
                outs.append(model(model.preprocess(read_clips(array, ids[i : i + 32]))))
        return outs

    if loss in VIDEO_LOSSES:
        k = meta["config"]["losses"]["k"]
        picks = [first + equidistant_indices(int(n), k) for first, n in zip(validation.first_clip, validation.clips)]
        features = torch.cat([out.features for out in forward(np.concatenate(picks))]).numpy()
        starts = np.cumsum([0] + [len(p) for p in picks])
        video_features = np.stack([features[a:b].mean(0) for a, b in zip(starts[:-1], starts[1:])])
        with torch.no_grad():
            logits = model.get_submodule(model.head_name)(torch.from_numpy(video_features)).numpy()
        return {"eval_video_accuracy": float((logits.argmax(1) == validation.label).mean())}

    outs = forward(validation.clip_ids)
    logits = torch.cat([out.logits for out in outs]).numpy().astype(np.float64)
    confidence = torch.cat([out.confidence for out in outs]).numpy() if outs[0].confidence is not None else None
    cached = pq.read_table(store.path(f"teacher/{TEACHER}/clips.parquet"), columns=["clip_id", "z"])
    z_of = dict(zip(cached.column("clip_id").to_pylist(), cached.column("z").to_pylist()))
    z = np.array([z_of[int(i)] for i in validation.clip_ids], np.int64)
    probs = softmax(logits, axis=1)
    if meta["ranking"] == "entropy":
        score = (probs * np.log(np.maximum(probs, 1e-300))).sum(1)  # minus the entropy: confident first
    else:
        score = confidence.astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(validation.clips)])
    video_pred = np.array([probs[a:b].mean(0).argmax() for a, b in zip(starts[:-1], starts[1:])])
    fpr = (float((confidence[z == 0] > 0).mean())  # sigmoid > 0.5 <=> logit > 0
           if meta["ranking"] == "confidence" else float("nan"))
    return {"eval_clip_accuracy": float((logits.argmax(1) == np.repeat(validation.label, validation.clips)).mean()),
            "eval_video_accuracy": float((video_pred == validation.label).mean()),
            "eval_auroc": auroc(score, z), "eval_fpr": fpr}


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_from_the_cache_and_logs_every_column(loss, distilled):
    store_dir, counts = distilled(small(loss))
    store = Store(str(store_dir))
    run = default_run_name(loss, STUDENT, WIDTH, 2)
    folder = store_dir / "students" / run
    history = pq.read_table(folder / "history.parquet")
    expected = (["epoch", "lr_main", "lr_confidence"] + [f"train_{c}" for c in DistillTask.train_columns]
                + ["train_samples"] + list(DistillTask.eval_columns) + ["train_seconds", "eval_seconds"])
    assert history.column_names == expected
    row = history.to_pylist()[0]
    for term in TERMS:
        assert math.isfinite(row[f"train_{term}"]) and math.isfinite(row[f"eval_{term}"]), term
    assert row["eval_video_accuracy"] * VALIDATION_VIDEOS == pytest.approx(
        round(row["eval_video_accuracy"] * VALIDATION_VIDEOS))
    # Terms a loss does not have stay zero; the ones it has are positive.
    has = {"condi-sr": {"kd", "conf"}, "bce-conf": {"conf"}, "st-ent": {"kd"}, "st-conf": {"conf", "ce"},
           "trivial-mt": {"kd", "conf", "ce"}, "fewer-frames": {"rep", "kd", "ce"}, "uniform-k": {"ce"},
           "sc-sampler": {"ce"}}[loss]
    for term in ("kd", "conf", "ce", "rep"):
        assert (row[f"eval_{term}"] > 0) == (term in has), (term, row[f"eval_{term}"])
    if loss in VIDEO_LOSSES:
        assert math.isnan(row["eval_clip_accuracy"]) and math.isnan(row["eval_auroc"])
        assert row["train_samples"] == FIT_VIDEOS  # videos
    else:
        assert math.isnan(row["eval_fpr"]) == (loss in ("st-ent", "sc-sampler"))  # FPR of z~: confidence-ranked
        assert row["train_samples"] == FIT_VIDEOS  # one clip per fit video
    assert math.isnan(row["train_lam"]) == (loss not in ("condi-sr", "st-conf", "trivial-mt"))

    meta = store.read_json(f"students/{run}/meta.json")
    assert meta["loss"] == loss and meta["teacher"] == TEACHER and meta["width"] == WIDTH
    assert meta["config"]["losses"]["tau"] == 0.9 and meta["config"]["lr_decay"] == 1.25
    assert meta["ranking"] == {"st-ent": "entropy", "sc-sampler": "max-prob"}.get(
        loss, "none" if loss in VIDEO_LOSSES else "confidence")
    assert (folder / "weights.pt").exists() and not (folder / "checkpoints").exists()
    # The teacher's features are 128-d, the student's 1024-d: fewer-frames learns and keeps a projection.
    assert (folder / "projection.pt").exists() == (loss == "fewer-frames")
    assert counts["epochs"] == 1 and counts["epoch_kept"] == meta["epoch_kept"] == 1
    # Validation carved from train chose the epoch; the test split only gave the kept student's figures.
    metric = "eval_video_accuracy" if loss in VIDEO_LOSSES else "eval_auroc"
    assert meta["selection"] == {"metric": metric, "split": "validation", "value": round(row[metric], 6), "epoch": 1}
    assert counts["selection_metric"] == metric
    assert (meta["val_fraction"], meta["val_seed"], meta["fit_videos"], meta["validation_videos"]) == (
        0.1, 0, FIT_VIDEOS, VALIDATION_VIDEOS)
    assert meta["test_split"] == "test" and 0 <= meta["test"]["test_video_accuracy"] <= 1
    assert (meta["test"].get("test_auroc") is None) == (loss in VIDEO_LOSSES)

    # The logged figures are the kept weights' on the validation clips: recomputed from weights.pt, they agree
    # (accuracies and FPR are counts over 10 videos / ~100 clips, so 1e-6 is "the same count"). One loss per
    # evaluation path (a CPU pass over the clips costs seconds); the others share its code.
    kept = next(r for r in history.to_pylist() if r["epoch"] == meta["epoch_kept"])
    if loss not in RECOMPUTED:
        assert all(0 <= kept[c] <= 1 for c in ("eval_clip_accuracy", "eval_video_accuracy", "eval_auroc")
                   if not math.isnan(kept[c])), kept
        return
    recomputed = _recompute_eval(store, run, meta, loss)
    for column, value in recomputed.items():
        if math.isnan(value):
            assert math.isnan(kept[column]), column
        else:
            assert kept[column] == pytest.approx(value, abs=1e-6), column


def test_pass_schedule_divides_the_confidence_head_by_5_and_the_rest_by_1_25(cached_store, tmp_path):
    store_dir = _copy(cached_store, tmp_path)
    distill(Store(str(store_dir)), small("condi-sr", epochs=3, eval_every=3, schedule_unit="passes"), **QUIET)
    run = default_run_name("condi-sr", STUDENT, WIDTH)
    rows = pq.read_table(store_dir / "students" / run / "history.parquet").to_pylist()
    assert [r["lr_confidence"] for r in rows] == pytest.approx([0.1, 0.1 / 5, 0.1 / 5**2])
    assert [r["lr_main"] for r in rows] == pytest.approx([0.1, 0.1 / 1.25, 0.1 / 1.25**2])
    assert math.isnan(rows[0]["eval_total"]) and math.isfinite(rows[2]["eval_total"])  # --eval-every 3
    meta = Store(str(store_dir)).read_json(f"students/{run}/meta.json")
    assert meta["schedule_unit"] == "passes" and meta["reference_epoch"] is None
    assert meta["lr_schedule"]["confidence"] == "0.1 then lr / 5^epoch"
    assert meta["epoch_kept"] == 3  # only evaluated epochs are candidates


# Three epochs of condi-sr under the sample schedule, each evaluated: the schedule test and the best-epoch test read
# the same run.
SAMPLE_SCHEDULE = dict(epochs=3, reference_epoch=50)


def test_sample_schedule_decays_per_reference_epoch_of_samples(distilled):
    """20 fit clips per pass and a reference epoch of 50 samples: pass e starts after 20 e samples."""
    store_dir, _ = distilled(small("condi-sr", **SAMPLE_SCHEDULE))
    run = default_run_name("condi-sr", STUDENT, WIDTH)
    rows = pq.read_table(store_dir / "students" / run / "history.parquet").to_pylist()
    assert [r["lr_confidence"] for r in rows] == pytest.approx([0.1 / 5 ** (20 * e / 50) for e in range(3)])
    assert [r["lr_main"] for r in rows] == pytest.approx([0.1 / 1.25 ** (20 * e / 50) for e in range(3)])
    meta = Store(str(store_dir)).read_json(f"students/{run}/meta.json")
    assert meta["schedule_unit"] == "samples" and meta["reference_epoch"] == 50
    assert meta["lr_schedule"]["confidence"] == "0.1 then lr / 5^(samples / 50), set before every optimizer step"
    assert meta["config"]["schedule_unit"] == "samples" and meta["config"]["train"]["keep"] == "best"


def test_the_kept_student_has_the_best_validation_auroc(cached_store, distilled, tmp_path):
    """weights.pt is the epoch with the best validation AUROC: recomputed here from weights.pt, it equals the
    recorded value and the history column's maximum, and a run stopped at that epoch has the same bytes."""
    store_dir, counts = distilled(small("condi-sr", **SAMPLE_SCHEDULE))
    store = Store(str(store_dir))
    run = default_run_name("condi-sr", STUDENT, WIDTH)
    folder = store_dir / "students" / run
    history = pq.read_table(folder / "history.parquet").to_pylist()
    meta = store.read_json(f"students/{run}/meta.json")
    values = [r["eval_auroc"] for r in history]
    kept = meta["epoch_kept"]
    assert kept == 1 + int(np.argmax(values)) == counts["epoch_kept"]  # the first of equal maxima

    model = build_model(STUDENT, num_classes=10, width=WIDTH)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.eval()
    validation = training_splits(store, 0.1, seed=0).validation
    clips = read_clips(open_clip_array(store), validation.clip_ids)
    with torch.no_grad():
        confidence = torch.cat([model(model.preprocess(clips[i : i + 16])).confidence
                                for i in range(0, len(clips), 16)]).numpy()
    cached = pq.read_table(store_dir / "teacher" / TEACHER / "clips.parquet", columns=["clip_id", "z"])
    z_of = dict(zip(cached.column("clip_id").to_pylist(), cached.column("z").to_pylist()))
    z = np.array([z_of[int(i)] for i in validation.clip_ids], np.int64)
    recomputed = auroc(confidence.astype(np.float64), z)
    assert recomputed == pytest.approx(max(values), abs=1e-6)
    assert recomputed == pytest.approx(meta["selection"]["value"], abs=1e-6)
    assert meta["kept"]["eval_auroc"] == meta["selection"]["value"] == counts["selection_value"]

    stopped = _copy(cached_store, tmp_path / "stopped")
    distill(Store(str(stopped)), small("condi-sr", **{**SAMPLE_SCHEDULE, "epochs": kept, "keep": "last"}), **QUIET)
    assert (stopped / "students" / run / "weights.pt").read_bytes() == (folder / "weights.pt").read_bytes()


def test_without_validation_the_last_epoch_is_kept_on_all_of_train(cached_store, tmp_path):
    store_dir = _copy(cached_store, tmp_path)
    store = Store(str(store_dir))
    counts = distill(store, small("st-ent", epochs=2, val_fraction=0.0), **QUIET)
    run = default_run_name("st-ent", STUDENT, WIDTH)
    meta = store.read_json(f"students/{run}/meta.json")
    history = pq.read_table(store_dir / "students" / run / "history.parquet").to_pylist()
    assert (meta["fit_videos"], meta["validation_videos"]) == (FIT_VIDEOS + VALIDATION_VIDEOS, 0)
    assert [r["train_samples"] for r in history] == [FIT_VIDEOS + VALIDATION_VIDEOS] * 2
    assert all(math.isnan(r["eval_auroc"]) for r in history)  # the test split is never evaluated per epoch
    assert meta["epoch_kept"] == 2 and meta["selection"] is None and counts["selection_metric"] is None
    assert 0 <= meta["test"]["test_auroc"] <= 1
    # The carve is part of the configuration.
    with pytest.raises(StageError, match="--force"):
        distill(store, small("st-ent", epochs=2, val_fraction=0.2), **QUIET)


def test_missing_teacher_cache_and_changed_configuration_are_refused(distilled, tmp_path):
    store = Store(str(_copy(distilled(small("st-ent"))[0], tmp_path)))  # small("st-ent") has finished in it
    with pytest.raises(StageError, match="no teacher cache for 'r3d_18'"):
        distill(store, dataclasses.replace(small("st-ent"), teacher="r3d_18"), **QUIET)
    messages = []
    distill(store, small("st-ent"), quiet=True, log=messages.append)
    assert any("already done" in m for m in messages)
    with pytest.raises(StageError, match="--force"):
        distill(store, dataclasses.replace(small("st-ent"), losses=LossOptions(tau=2.0, k=2)), **QUIET)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(cached_store, tmp_path, run_cli):
    """st-conf: dropout, per-step hint sampling and the BudgetLambda state all have to survive the kill."""
    """The default per-sample LR schedule and the best-epoch snapshot (validation AUROC) survive it too."""
    args = ["distill", "--loss", "st-conf", "--student", STUDENT, "--width", str(WIDTH), "--teacher", TEACHER,
            "--epochs", "2", "--batch-size", "4", "--clips-per-video", "1", "--seed", "1", "--threads", "1",
            "--reference-epoch", "30", "--quiet"]
    request = DistillRequest("st-conf", STUDENT, TEACHER, WIDTH, train=TrainOptions(2, 4, 0.1, seed=1),
                             reference_epoch=30, clips_per_video=1, runtime=RuntimeOptions(threads=1))
    reference = _copy(cached_store, tmp_path / "reference")  # the same run, uninterrupted and in-process
    distill(Store(str(reference)), request, **QUIET)
    store_dir = _copy(cached_store, tmp_path / "killed")
    # 20 fit clips in batches of 4: 5 steps per epoch, so step 7 is the second of epoch 2 (after epoch 1's
    # checkpoint, which holds the best snapshot so far and the samples seen).
    killed = run_cli(*args, "--store", str(store_dir), env={KILL_ENV: "distill.step:7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Resumed in this process (a CLI process would add seconds of imports); the stage would refuse a request whose
    # configuration differs from the killed CLI run's.
    messages = []
    distill(Store(str(store_dir)), request, quiet=True, log=messages.append)
    assert "distill: resuming after epoch 1 of 2" in messages
    run = default_run_name("st-conf", STUDENT, WIDTH)
    ours, theirs = store_dir / "students" / run, reference / "students" / run
    assert (ours / "weights.pt").read_bytes() == (theirs / "weights.pt").read_bytes()
    meta = Store(str(store_dir)).read_json(f"students/{run}/meta.json")
    theirs_meta = Store(str(reference)).read_json(f"students/{run}/meta.json")
    assert meta["budget_lambda"] == theirs_meta["budget_lambda"]
    assert meta["budget_lambda"]["value"] != 0.1  # it was steered every step
    assert meta["epoch_kept"] == theirs_meta["epoch_kept"] and meta["selection"] == theirs_meta["selection"]


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
