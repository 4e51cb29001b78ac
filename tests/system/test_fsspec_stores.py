"""A store given as an fsspec URL (``memory://``, ``file://``) through every stage: extract, teacher-cache,
distill, score, report and verify give what the same stages give on a plain local path."""

from __future__ import annotations

import os

import numpy as np
import pytest

from condi_pipe.app.verify import verify_store
from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.report import build_report
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store

pytestmark = pytest.mark.slow

TEACHER = "resnet10_3d_small"
# synth_scored_store's students ({run: loss}), made by the distill_and_score fixture as that store's were
RUNS = {"conf": "condi-sr", "ent": "st-ent"}
QUIET = dict(quiet=True, log=lambda message: None)


def _run_every_stage(url: str, data_root, distill_and_score) -> Store:
    """What the shared ``synth_scored_store`` holds, made again in the store at ``url``: the same extract and
    teacher cache as ``synth_store`` and ``synth_teacher_store``, then each of its students distilled and scored."""
    store = Store(url)
    inline = ExecutorOptions(workers=0)
    extract(store, ExtractRequest("ucf101", str(data_root), clips_per_shard=8), inline, **QUIET)
    teacher_cache(store, TeacherCacheRequest(ModelRef(TEACHER, 10), RuntimeOptions(threads=2), clips_per_group=64),
                  inline, **QUIET)
    for run, loss in RUNS.items():
        distill_and_score(url, run, loss)
    return store


@pytest.fixture(scope="module")
def local_store(synth_scored_store) -> Store:
    """The reference: the same stages on a plain local path (the shared store; only read here)."""
    assert sorted(p.name for p in (synth_scored_store / "students").iterdir()) == sorted(RUNS)
    return Store(str(synth_scored_store))


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_every_stage_on_a_url_store_matches_the_local_store(scheme, local_store, synth_root, distill_and_score,
                                                           tmp_path):
    url = f"file://{tmp_path}/store" if scheme == "file" else f"memory://condi-e2e-{os.getpid()}/store"
    store = _run_every_stage(url, synth_root, distill_and_score)
    if scheme == "file":
        assert (tmp_path / "store" / "clips.zarr").is_dir()  # really written where the URL points

    np.testing.assert_array_equal(open_clip_array(store)[:], open_clip_array(local_store)[:])
    teacher = clip_outputs.teacher_folder(TEACHER)
    np.testing.assert_array_equal(clip_outputs.read_array(store, teacher, "logits"),
                                  clip_outputs.read_array(local_store, teacher, "logits"))
    for run in RUNS:
        weights = f"students/{run}/weights.pt"
        assert store.read_bytes(weights) == local_store.read_bytes(weights), run
        scores = clip_outputs.scores_folder(run)
        assert clip_outputs.read_clips(store, scores).equals(clip_outputs.read_clips(local_store, scores)), run

    ours, theirs = build_report(store, "3").to_json(), build_report(local_store, "3").to_json()
    assert [(r["method"], r["k"], r["accuracy"]) for r in ours] == [(r["method"], r["k"], r["accuracy"]) for r in theirs]
    assert verify_store(store) == []
