"""A store given as an fsspec URL (``memory://``, ``file://``) through every stage: extract, teacher-cache,
distill, score, report and verify give what the same stages give on a plain local path."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from condi_pipe.app.verify import verify_store
from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.report import build_report
from condi_pipe.stages.distill import DistillRequest, LossOptions, distill
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.score import ScoreRequest, score
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store

pytestmark = pytest.mark.slow

# The cheapest registered model (it reads clips at 8x56x56) as the teacher and as both students: what is checked is
# where and how the stages store their outputs, the same for every model.
MODEL = "resnet10_3d_motion_skim"
RUNS = {"conf": "condi-sr", "ent": "st-ent"}  # {student run: loss}, one of each ranking (confidence, entropy)
QUIET = dict(quiet=True, log=lambda message: None)
INLINE = ExecutorOptions(workers=0)
RUNTIME = RuntimeOptions(threads=2)


def _extract(store: Store, data_root) -> None:
    """As the shared ``synth_store`` was extracted."""
    extract(store, ExtractRequest("ucf101", str(data_root), clips_per_shard=8), INLINE, **QUIET)


def _model_stages(store: Store) -> None:
    """The random-init teacher's cache, then each student of RUNS distilled from it (one epoch, K = 2, seed 2, one
    clip per video) and scored."""
    teacher_cache(store, TeacherCacheRequest(ModelRef(MODEL, 10), RUNTIME, clips_per_group=64), INLINE, **QUIET)
    for run, loss in RUNS.items():
        request = DistillRequest(loss, MODEL, MODEL, name=run, losses=LossOptions(k=2),
                                 train=TrainOptions(1, 8, 0.1, seed=2), clips_per_video=1, runtime=RUNTIME)
        distill(store, request, **QUIET)
        score(store, ScoreRequest(run, RUNTIME, clips_per_group=20), INLINE, **QUIET)


@pytest.fixture(scope="module")
def local_store(synth_store, tmp_path_factory) -> Store:
    """The reference: the same stages on a plain local path, from a copy of the shared ``synth_store`` (extracted as
    ``_extract`` does)."""
    folder = tmp_path_factory.mktemp("local") / "store"
    shutil.copytree(synth_store, folder)
    store = Store(str(folder))
    _model_stages(store)
    return store


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_every_stage_on_a_url_store_matches_the_local_store(scheme, local_store, synth_root, tmp_path):
    url = f"file://{tmp_path}/store" if scheme == "file" else f"memory://condi-e2e-{os.getpid()}/store"
    store = Store(url)
    _extract(store, synth_root)
    _model_stages(store)
    if scheme == "file":
        assert (tmp_path / "store" / "clips.zarr").is_dir()  # really written where the URL points

    np.testing.assert_array_equal(open_clip_array(store)[:], open_clip_array(local_store)[:])
    teacher = clip_outputs.teacher_folder(MODEL)
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
