"""Out-of-fold confidence labels: ``teacher-train --oof-folds F`` trains fold teachers on group-wise folds of the videos
the full teacher trains on, and ``teacher-cache`` labels each of those videos' clips with the fold teacher that never
saw it (every other clip with the full teacher), recording which teacher produced each row."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.compute.clip_inference import ModelRef, group_videos
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.models import build_model
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.splits import grouped_folds, training_splits, video_group
from condi_pipe.pipeline.stage import StageError
from condi_pipe.report import build_report
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, TeacherChoice, teacher_cache
from condi_pipe.stages.teacher_train import TeacherTrainRequest, fold_digest, teacher_train
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import load_videos, video_paths
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.synth import generate_benchmark

# The cheapest registered network (it reads clips at 8x56x56): the test trains three of them.
TEACHER = "resnet10_3d_motion_skim"
FOLDS, EPOCHS, BATCH, LR, CLIPS_PER_VIDEO, THREADS, SEED = 2, 2, 8, 0.05, 1, 1, 3
CLIPS_PER_GROUP = 16
QUIET = dict(quiet=True, log=lambda message: None)
TRAIN_CLI = ["--teacher", TEACHER, "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", str(LR),
             "--clips-per-video", str(CLIPS_PER_VIDEO), "--threads", str(THREADS), "--seed", str(SEED),
             "--oof-folds", str(FOLDS), "--quiet"]
CACHE_CLI = ["--teacher", TEACHER, "--workers", "0", "--threads", str(THREADS), "--clips-per-group",
             str(CLIPS_PER_GROUP), "--quiet"]


def train_request() -> TeacherTrainRequest:
    return TeacherTrainRequest(TEACHER, train=TrainOptions(EPOCHS, BATCH, LR, seed=SEED),
                               clips_per_video=CLIPS_PER_VIDEO, runtime=RuntimeOptions(threads=THREADS), oof_folds=FOLDS)


def cache_request(store: Store, z_labels: str | None = None) -> TeacherCacheRequest:
    return TeacherCacheRequest(TeacherChoice(TEACHER), RuntimeOptions(threads=THREADS), CLIPS_PER_GROUP, z_labels)


@pytest.fixture(scope="module")
def kinetics_store(tmp_path_factory) -> Path:
    """40 embedded-benchmark videos laid out as Kinetics (flat ``<youtube_id>_<start>_<end>.mp4`` and its CSV) with
    two videos of one class per YouTube id, so every group holds two videos. Per class: id A (groups g01, g02 of the
    generator) in train; id B (g03, g04) in train for five classes, in test for the other five. The validation carve
    takes one of the two train ids of those five classes: 20 fit videos (10 groups), 10 validation, 10 test."""
    folder = tmp_path_factory.mktemp("oof")
    generate_benchmark(folder / "synth", videos=40, seed=7)
    root = folder / "kinetics"
    root.mkdir()
    videos = sorted((folder / "synth").glob("*/v_*_g*_c*.*"))
    classes = sorted({path.parent.name for path in videos})
    rows = ["label,youtube_id,time_start,time_end,split"]
    for path in videos:
        label, generator_group = path.parent.name, int(re.search(r"_g(\d+)_c", path.name)[1])
        pair = (generator_group - 1) // 2
        youtube_id = f"{'AB'[pair]}{classes.index(label):010d}"  # 11 characters, as YouTube ids
        start = 10 * ((generator_group - 1) % 2)
        split = "test" if pair == 1 and classes.index(label) >= 5 else "train"
        shutil.copyfile(path, root / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4")
        rows.append(f"{label},{youtube_id},{start},{start + 10},{split}")
    (folder / "kinetics.csv").write_text("\n".join(rows) + "\n")
    store_dir = folder / "store"
    extract(Store(str(store_dir)), ExtractRequest("kinetics", str(root), str(folder / "kinetics.csv"),
                                                  clips_per_shard=8), ExecutorOptions(workers=0), **QUIET)
    return store_dir


@pytest.fixture(scope="module")
def trained(kinetics_store, tmp_path_factory) -> Path:
    """teacher-train --oof-folds 2, then teacher-cache with its default labels (out-of-fold), in this process."""
    store_dir = tmp_path_factory.mktemp("oof_trained") / "store"
    shutil.copytree(kinetics_store, store_dir)
    store = Store(str(store_dir))
    teacher_train(store, train_request(), **QUIET)
    teacher_cache(store, cache_request(store), ExecutorOptions(workers=0), **QUIET)
    return store_dir


def _fold_record(store: Store) -> dict:
    return store.read_json(f"trained_teachers/{TEACHER}/meta.json")["folds"]


def _fold_meta(store: Store, fold: int) -> dict:
    return store.read_json(f"trained_teachers/{TEACHER}/folds/{fold}/meta.json")


def _load(weights: Path):
    model = build_model(TEACHER, num_classes=10)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def _logits(model, store: Store, clip_ids: np.ndarray) -> np.ndarray:
    """The model's logits for ``clip_ids``, one clip at a time, straight from the clip array."""
    array = open_clip_array(store)
    with torch.inference_mode():
        return np.stack([model(model.preprocess(torch.from_numpy(array[int(c) : int(c) + 1]))).logits[0].numpy()
                         for c in clip_ids])


def _cache(store: Store) -> tuple[np.ndarray, dict]:
    folder = clip_outputs.teacher_folder(TEACHER)
    return (clip_outputs.read_array(store, folder, "logits"),
            clip_outputs.read_clips(store, folder).to_pandas().set_index("clip_id"))


def test_folds_deal_whole_groups_of_the_fit_videos(trained):
    store = Store(str(trained))
    record = _fold_record(store)
    fit = training_splits(store, 0.1, seed=0).fit
    video_id, fold = np.array(record["video_id"]), np.array(record["fold"])
    np.testing.assert_array_equal(video_id, fit.video_id)  # exactly the videos the full teacher trained on
    assert record["count"] == FOLDS and record["sha256"] == fold_digest(video_id, fold)
    groups = np.array([video_group(p) for p in video_paths(store, fit)])
    assert len(set(groups)) == 10 and len(groups) == 20  # two videos per group: the check below can fail
    for group in set(groups):
        assert len(set(fold[groups == group])) == 1, f"group {group} spans two folds"
    assert sorted(set(fold)) == list(range(FOLDS))
    # Rebuilt from what meta.json records (its seed) by the splitter alone.
    np.testing.assert_array_equal(fold, grouped_folds(fit.label, groups, FOLDS, record["seed"]))


def test_each_fold_teacher_never_trained_on_its_fold(trained):
    store = Store(str(trained))
    record = _fold_record(store)
    video_id, fold = np.array(record["video_id"]), np.array(record["fold"])
    splits = training_splits(store, 0.1, seed=0)
    elsewhere = set(splits.validation.video_id) | set(load_videos(store, "test").video_id)
    for f in range(FOLDS):
        meta = _fold_meta(store, f)
        trained_on, held_out = set(meta["train_video_ids"]), set(meta["held_out_video_ids"])
        assert held_out == set(video_id[fold == f].tolist()) and held_out
        assert not trained_on & held_out and not trained_on & elsewhere
        assert trained_on | held_out == set(video_id.tolist())
        history = pq.read_table(trained / "trained_teachers" / TEACHER / "folds" / str(f) / "history.parquet").to_pylist()
        assert [row["train_samples"] for row in history] == [len(trained_on) * CLIPS_PER_VIDEO] * EPOCHS
        weights = trained / "trained_teachers" / TEACHER / "folds" / str(f) / "weights.pt"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["teachers"][f]["weights_sha256"]
        assert not (weights.parent / "checkpoints").exists()
    assert stage_record(store, f"teacher-train/{TEACHER}")["config"]["oof_folds"] == FOLDS


def test_train_clips_are_labelled_by_the_fold_teacher_that_never_saw_them(trained):
    store = Store(str(trained))
    logits, clips = _cache(store)
    record = _fold_record(store)
    video_id, fold = np.array(record["video_id"]), np.array(record["fold"])
    full = _load(trained / "trained_teachers" / TEACHER / "weights.pt")
    for f in range(FOLDS):
        held_out = clips.index[clips["video_id"].isin(video_id[fold == f])].to_numpy()
        assert (clips.loc[held_out, "teacher_source"] == f"fold-{f}").all()
        sample = held_out[:: max(len(held_out) // 6, 1)]
        expected = _logits(_load(trained / "trained_teachers" / TEACHER / "folds" / str(f) / "weights.pt"),
                           store, sample)
        np.testing.assert_allclose(logits[sample], expected, rtol=1e-3, atol=1e-3)
        assert not np.allclose(logits[sample], _logits(full, store, sample), atol=1e-3)  # not the full teacher's
        labels = clips.loc[held_out, "label"].to_numpy()
        np.testing.assert_array_equal(clips.loc[held_out, "z"], (logits[held_out].argmax(1) == labels).astype(int))


def test_validation_and_test_clips_are_labelled_by_the_full_teacher(trained):
    store = Store(str(trained))
    logits, clips = _cache(store)
    trained_on = set(_fold_record(store)["video_id"])
    others = clips.index[~clips["video_id"].isin(trained_on)].to_numpy()
    assert set(clips.loc[others, "split"]) == {"train", "test"}  # the validation part is in split 'train'
    assert (clips.loc[others, "teacher_source"] == "full").all()
    sample = others[:: max(len(others) // 8, 1)]
    full = _load(trained / "trained_teachers" / TEACHER / "weights.pt")
    np.testing.assert_allclose(logits[sample], _logits(full, store, sample), rtol=1e-3, atol=1e-3)
    meta = clip_outputs.read_meta(store, clip_outputs.teacher_folder(TEACHER))
    assert meta["z_labels"] == "out-of-fold" and meta["folds"]["count"] == FOLDS
    assert [t["clips"] for t in meta["folds"]["teachers"]] == [
        int((clips["teacher_source"] == f"fold-{f}").sum()) for f in range(FOLDS)]
    assert stage_record(store, f"teacher-cache/{TEACHER}")["config"]["z_labels"] == "out-of-fold"
    # Timings are the full teacher's, for every video: they cost the methods at test time.
    timing = clip_outputs.read_videos(store, clip_outputs.teacher_folder(TEACHER)).to_pandas()
    assert len(timing) == 40 and (timing["seconds"] > 0).all()


def test_report_footer_names_the_z_labels(trained):
    report = build_report(Store(str(trained)), "3", methods="equidistant", k=[1])
    assert any(line.startswith(f"z labels: out-of-fold with {FOLDS} folds") for line in report.footer)


def test_in_sample_labels_on_request(trained, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(trained, store_dir)
    store = Store(str(store_dir))
    oof_logits, _ = _cache(store)
    teacher_cache(store, cache_request(store, "in-sample"), ExecutorOptions(workers=0), force=True, **QUIET)
    logits, clips = _cache(store)
    assert (clips["teacher_source"] == "full").all()
    assert clip_outputs.read_meta(store, clip_outputs.teacher_folder(TEACHER))["z_labels"] == "in-sample"
    assert stage_record(store, f"teacher-cache/{TEACHER}")["config"]["z_labels"] is None  # as in older records
    trained_on = clips.index[clips["video_id"].isin(_fold_record(store)["video_id"])].to_numpy()
    sample = trained_on[:: max(len(trained_on) // 6, 1)]
    np.testing.assert_allclose(logits[sample], _logits(_load(store_dir / "trained_teachers" / TEACHER / "weights.pt"),
                                                       store, sample), rtol=1e-3, atol=1e-3)
    assert not np.allclose(logits[trained_on], oof_logits[trained_on], atol=1e-3)
    with pytest.raises(StageError, match="different configuration"):  # switching labels is a changed configuration
        teacher_cache(store, cache_request(store, "out-of-fold"), ExecutorOptions(workers=0), **QUIET)
    report = build_report(store, "3", methods="equidistant", k=[1])
    assert any(line.startswith("z labels: in-sample") for line in report.footer)


def test_out_of_fold_without_fold_teachers_is_one_line(kinetics_store, tmp_path, run_cli):
    store_dir = tmp_path / "store"
    shutil.copytree(kinetics_store, store_dir)
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model(TEACHER, num_classes=10).state_dict(), weights)
    before = (store_dir / "run.json").read_bytes()
    proc = run_cli("teacher-cache", "--store", str(store_dir), *CACHE_CLI, "--weights", str(weights),
                   "--z-labels", "out-of-fold")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--z-labels out-of-fold" in lines[0] and "teacher-train --oof-folds F" in lines[0], lines
    assert (store_dir / "run.json").read_bytes() == before  # nothing recorded
    # Given weights: in-sample labels, and a note says so.
    messages = []
    request = TeacherCacheRequest(ModelRef(TEACHER, 10, weights_path=str(weights)), RuntimeOptions(threads=THREADS),
                                  CLIPS_PER_GROUP)
    teacher_cache(Store(str(store_dir)), request, ExecutorOptions(workers=0), quiet=True, log=messages.append)
    assert any("note: z labels are in-sample" in m for m in messages)
    meta = clip_outputs.read_meta(Store(str(store_dir)), clip_outputs.teacher_folder(TEACHER))
    assert meta["z_labels"] == "in-sample" and meta["folds"] is None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sigkill_in_fold_training_and_caching_resumes_to_the_same_bytes(trained, kinetics_store, tmp_path, run_cli):
    store_dir = tmp_path / "store"
    shutil.copytree(kinetics_store, store_dir)
    train = ["teacher-train", "--store", str(store_dir), *TRAIN_CLI]
    # The full teacher's two epochs come first: the third epoch checkpoint is fold teacher 0's first.
    for kill in ("teacher-train.epoch:3", "teacher-train.fold:1"):
        killed = run_cli(*train, env={KILL_ENV: kill})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (store_dir / "trained_teachers" / TEACHER / "folds" / "0" / "meta.json").exists()
    assert not (store_dir / "trained_teachers" / TEACHER / "meta.json").exists()  # incomplete until every fold is in
    assert run_cli(*train).returncode == 0
    for rel in ("weights.pt", "folds/0/weights.pt", "folds/1/weights.pt"):
        assert _digest(store_dir / "trained_teachers" / TEACHER / rel) == _digest(trained / "trained_teachers" / TEACHER / rel), rel

    # Kill teacher-cache inside the fold teachers' tasks (after the full teacher's groups and one fold group).
    full_groups = len(group_videos(load_videos(Store(str(store_dir))), CLIPS_PER_GROUP))
    cache = ["teacher-cache", "--store", str(store_dir), *CACHE_CLI]
    killed = run_cli(*cache, env={KILL_ENV: f"teacher-cache.group:{full_groups + 1}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(p.name.startswith("fold0-") for p in (store_dir / "staging").rglob("*.json"))
    assert run_cli(*cache).returncode == 0
    for name in ("clips.parquet", "logits.zarr/c/0/0", "features.zarr/c/0/0"):
        assert _digest(store_dir / "teacher" / TEACHER / name) == _digest(trained / "teacher" / TEACHER / name), name
    assert not (store_dir / "staging").exists()


def test_run_config_takes_oof_folds_and_z_labels(tmp_path):
    from condi_pipe.app.run_config import ConfigError, load_run_config

    path = tmp_path / "run.toml"
    body = ('store = "s"\n[extract]\nsource = "ucf101"\nroot = "d"\n[teacher]\nname = "{t}"\nz_labels = "{z}"\n'
            "[teacher_train]\noof_folds = {f}\n")
    path.write_text(body.format(t=TEACHER, z="out-of-fold", f=3))
    config = load_run_config(path)
    assert (config.teacher_train.oof_folds, config.teacher.z_labels) == (3, "out-of-fold")
    for z, f, key in (("out-of-fold", 1, "oof_folds"), ("oof", 2, "z_labels")):
        path.write_text(body.format(t=TEACHER, z=z, f=f))
        with pytest.raises(ConfigError, match=rf"\]\.{key} must be"):
            load_run_config(path)
    path.write_text(body.format(t=TEACHER, z="out-of-fold", f=3).replace("oof_folds", "folds"))
    with pytest.raises(ConfigError, match=r"\[teacher_train\] folds is now called oof_folds"):
        load_run_config(path)
