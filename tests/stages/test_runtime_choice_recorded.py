"""teacher-cache records the runtime it chose (layout, dtype, timings) before its first output, in its run record,
the store's runtime records and meta.json; a resumed run keeps the interrupted run's choice (even one made on
another machine) and ends with the uninterrupted run's bytes. (Reuse of a store's record on the same machine and
re-timing on another: tests/unit/compute/test_runtime_choice.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.runtime_choice import CHANNELS_LAST
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.run_state import set_stage, stage_record
from condi_pipe.storage.store import Store

# The session's shared teacher cache (tests/conftest.py synth_teacher_store) is the uninterrupted reference.
TEACHER = "resnet10_3d_small"
REQUEST = TeacherCacheRequest(ModelRef(TEACHER, 10), RuntimeOptions(threads=2), clips_per_group=64)
INLINE = ExecutorOptions(workers=0)
OUTPUTS = ("clips.parquet", "logits.zarr/c/0/0", "features.zarr/c/0/0")


def _digests(store_dir) -> dict[str, str]:
    folder = store_dir / "teacher" / TEACHER
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


def test_the_choice_is_recorded_in_meta_run_record_and_store(synth_teacher_store):
    store = Store(str(synth_teacher_store))
    meta = clip_outputs.read_meta(store, clip_outputs.teacher_folder(TEACHER))
    choice = meta["runtime_choice"]
    assert meta["layout"] == choice["layout"] and meta["bf16"] is (choice["dtype"] == "bf16") is False
    assert choice["bf16_mode"] == "off" and set(choice["seconds"]) == {"ncdhw/fp32", "channels_last_3d/fp32"}
    assert choice["seconds"][f"{choice['layout']}/fp32"] == min(choice["seconds"].values())
    assert choice["machine"]["threads"] == meta["threads"] == 2
    assert choice["machine"]["device_name"] == meta["device_name"]
    assert stage_record(store, f"teacher-cache/{TEACHER}")["runtime_choice"] == choice
    [record] = (synth_teacher_store / "runtime").glob("*.json")
    assert json.loads(record.read_text())["choice"] == choice


class Interrupted(Exception):
    pass


def test_a_resume_keeps_the_interrupted_runs_choice_and_ends_with_the_same_bytes(synth_teacher_store, synth_store,
                                                                                 tmp_path, monkeypatch):
    reference_dir = synth_teacher_store
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    store = Store(str(store_dir))
    passes = []

    def interrupt_after_one_group(point: str) -> None:
        if point == "teacher-cache.group":
            passes.append(point)
            raise Interrupted(point)

    monkeypatch.setattr(faults, "checkpoint", interrupt_after_one_group)
    with pytest.raises(Interrupted):
        teacher_cache(store, REQUEST, INLINE, quiet=True, log=lambda message: None)
    monkeypatch.undo()
    key = f"teacher-cache/{TEACHER}"
    record = stage_record(store, key)
    assert record["state"] == "running" and len(list((store_dir / "staging").rglob("*.json"))) == 1
    assert record["runtime_choice"]["layout"] in ("ncdhw", CHANNELS_LAST)  # recorded before the first output
    # The interrupted run's choice, as if made on another machine: the resume must keep it, not re-time.
    reference_choice = clip_outputs.read_meta(Store(str(reference_dir)), clip_outputs.teacher_folder(TEACHER))[
        "runtime_choice"]
    pinned = {**record["runtime_choice"], "layout": reference_choice["layout"],
              "machine": {**record["runtime_choice"]["machine"], "device_name": "the machine that was interrupted"}}
    set_stage(store, key, runtime_choice=pinned)
    logs: list[str] = []
    teacher_cache(store, REQUEST, INLINE, quiet=True, log=logs.append)
    meta = clip_outputs.read_meta(store, clip_outputs.teacher_folder(TEACHER))
    assert meta["runtime_choice"] == pinned and meta["layout"] == pinned["layout"]
    assert any("interrupted run chose" in line for line in logs)
    assert _digests(store_dir) == _digests(reference_dir)  # same runtime as the reference: the same bytes
