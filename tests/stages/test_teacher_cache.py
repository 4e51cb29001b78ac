"""teacher-cache: one teacher pass over every clip, stored with z, timings and no half-written results. (Killed and
resumed: tests/system/faults/test_sigkill.py.)"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.compute.clip_inference import LATENCY_BATCHES, ModelRef
from condi_pipe.compute.runtime_choice import NCDHW
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.models import build_model
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
QUIET = dict(quiet=True, log=lambda message: None)


def _weights(path: Path, poison: bool = False) -> Path:
    torch.manual_seed(0)
    model = build_model(TEACHER, num_classes=10)
    state = model.state_dict()
    if poison:
        state["fc.bias"][3] = float("nan")
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def cached(synth_store, tmp_path_factory):
    """The reference cache. Its runtime is pinned (NCDHW, fp32: nothing timed), so every run of this request, with
    any thread count, in this process or on a cluster worker, computes the same thing: with ``layout="auto"`` the
    layout is timed per (machine, thread count) and a close race can pick channels-last for one and NCDHW for the
    other, whose logits differ in the last bits. (The timed choice itself: test_runtime_choice_recorded.py.)"""
    work = tmp_path_factory.mktemp("cache")
    store_dir = work / "store"
    shutil.copytree(synth_store, store_dir)
    request = TeacherCacheRequest(ModelRef(TEACHER, 10, weights_path=str(_weights(work / "w.pt"))),
                                  runtime=RuntimeOptions(bf16=False, layout=NCDHW), clips_per_group=16)
    counts = teacher_cache(Store(str(store_dir)), request, ExecutorOptions(workers=0), **QUIET)
    return store_dir, request, counts


def test_cache_matches_an_independent_teacher_pass(cached):
    store_dir, request, counts = cached
    store = Store(str(store_dir))
    folder = clip_outputs.teacher_folder(TEACHER)
    logits = clip_outputs.read_array(store, folder, "logits")
    clips = clip_outputs.read_clips(store, folder).to_pandas()
    videos = pq.read_table(store_dir / "videos.parquet").to_pandas()
    assert len(logits) == len(clips) == open_clip_array(store).shape[0] == counts["clips"]

    # Recompute a few clips with a fresh model, one clip at a time, straight from the clip array.
    model = request.teacher.build().eval()
    array = open_clip_array(store)
    with torch.inference_mode():
        for clip_id in (0, len(clips) // 2, len(clips) - 1):
            expected = model(model.preprocess(torch.from_numpy(array[clip_id : clip_id + 1]))).logits[0].numpy()
            np.testing.assert_allclose(logits[clip_id], expected, rtol=1e-3, atol=1e-3)

    labels = videos.set_index("video_id").loc[clips["video_id"], "label"].to_numpy()
    np.testing.assert_array_equal(clips["label"], labels)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(clips["pred"], logits.argmax(1))
    np.testing.assert_array_equal(clips["z"], (logits.argmax(1) == labels).astype(int))  # Eq. 1
    np.testing.assert_allclose(clips["true_prob"], probs[np.arange(len(labels)), labels], rtol=1e-5)
    np.testing.assert_allclose(clips["entropy"], -(probs * np.log(probs)).sum(1), rtol=1e-4)
    assert clip_outputs.read_array(store, folder, "features").dtype == np.float16


def test_timings_and_device_are_recorded(cached):
    store_dir, _, counts = cached
    store = Store(str(store_dir))
    folder = clip_outputs.teacher_folder(TEACHER)
    timing = clip_outputs.read_videos(store, folder).to_pandas()
    videos = pq.read_table(store_dir / "videos.parquet").to_pandas()
    assert list(timing["video_id"]) == list(videos["video_id"])
    assert (timing["clips"].to_numpy() == videos["clips"].to_numpy()).all() and (timing["seconds"] > 0).all()
    meta = clip_outputs.read_meta(store, folder)
    assert meta["device"] == "cpu" and meta["threads"] >= 1 and meta["device_name"]
    # The curve's shape, not its speeds: which batch is slower is the machine's load, not the stage's doing.
    curve = meta["latency_curve"]
    assert curve["batch"] == list(LATENCY_BATCHES)
    assert len(curve["seconds"]) == len(curve["batch"])
    assert all(isinstance(s, float) and math.isfinite(s) and s > 0 for s in curve["seconds"]), curve
    assert counts["ms_per_clip"] == pytest.approx(1000 * timing["seconds"].sum() / timing["clips"].sum())


def test_rerun_is_a_noop(cached):
    store_dir, request, _ = cached
    before = (store_dir / "teacher" / TEACHER / "clips.parquet").read_bytes()
    messages = []
    teacher_cache(Store(str(store_dir)), request, ExecutorOptions(workers=0), quiet=True, log=messages.append)
    assert any("already done" in m for m in messages)
    assert (store_dir / "teacher" / TEACHER / "clips.parquet").read_bytes() == before


def test_nan_output_names_the_clip_and_leaves_nothing_complete(synth_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    store = Store(str(store_dir))
    request = TeacherCacheRequest(ModelRef(TEACHER, 10, weights_path=str(_weights(tmp_path / "nan.pt", poison=True))))
    with pytest.raises(FloatingPointError, match=r"NaN or Inf logits for clip 0\b"):
        teacher_cache(store, request, ExecutorOptions(workers=0), **QUIET)
    assert not clip_outputs.is_complete(store, clip_outputs.teacher_folder(TEACHER))
    assert stage_record(store, f"teacher-cache/{TEACHER}")["state"] == "running"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_existing_dask_cluster_gives_the_same_cache(dask_cluster, cached, synth_store, tmp_path):
    reference_dir, request, _ = cached
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    teacher_cache(Store(str(store_dir)), request, ExecutorOptions(scheduler_address=dask_cluster), **QUIET)
    meta = clip_outputs.read_meta(Store(str(store_dir)), clip_outputs.teacher_folder(TEACHER))
    reference = clip_outputs.read_meta(Store(str(reference_dir)), clip_outputs.teacher_folder(TEACHER))
    assert meta["threads"] == 1  # ran on a one-thread cluster worker, not in this process
    # the same computation on both sides: the pinned layout and dtype, not two timed choices
    assert (meta["layout"], meta["bf16"]) == (reference["layout"], reference["bf16"]) == (NCDHW, False)
    for name in ("clips.parquet", "logits.zarr/c/0/0", "features.zarr/c/0/0"):
        assert _digest(store_dir / "teacher" / TEACHER / name) == _digest(reference_dir / "teacher" / TEACHER / name)
