"""SIGKILL each stage that trains or runs a model, resume, and compare with the uninterrupted run in
``cheap_teacher_store``: the same bytes for everything deterministic. Measured times (videos.parquet ``seconds``,
meta.json, history ``*_seconds`` columns) are the only outputs left out of the comparison.

One kill per state a resume can start from. Every stage is killed the moment its first partial work shows in the
store (at no fault point): teacher-cache and score with staged groups, distill and teacher-train with the checkpoint
of a finished epoch. distill is also killed at its own fault point before any checkpoint (its resume starts over).
A kill at a named fault point of the other stages resumes from the same state as their partial kill; those points
are killed in tests/stages: teacher-cache.group in test_oof_labels.py, teacher-train.epoch in test_teacher_train.py
(the resume after epoch 1 of 2, as here) and score.group in test_score.py. The kills every stage shares (inside a
task before it stages, after every item is staged) are proven once, on a fake stage, in
tests/unit/pipeline/test_stage_machinery.py. extract's kills are in tests/stages/test_extract.py, and a worker killed
mid-task in tests/system/faults/test_worker_loss.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from condi_pipe.app.verify import verify_store
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.stage import ensure_store

pytestmark = pytest.mark.slow

# Each stage as cheap_teacher_store's run made it (one process, one thread), the files it must reproduce, and its
# kill points. The teacher cache is that store's cheaper one (CHEAP_MODEL in conftest.py).
STAGES = {
    "teacher-cache": dict(
        args=("--teacher", "resnet10_3d_motion_skim", "--random-init", "--clips-per-group", "16", "--threads", "1",
              "--workers", "0"),
        record="teacher-cache/resnet10_3d_motion_skim", partial="staging/teacher-cache-resnet10_3d_motion_skim/*.json",
        folder="teacher/resnet10_3d_motion_skim", same=("clips.parquet", "logits.zarr", "features.zarr"),
        kills=("partial",)),
    "distill": dict(
        args=("--loss", "condi-sr", "--student", "resnet10_3d_motion_skim", "--name", "conf",
              "--teacher", "resnet10_3d_small", "--epochs", "1", "--batch-size", "8", "--clips-per-video", "1",
              "--threads", "1"),
        # one epoch: its checkpoint lives from the end of the epoch until the student is published
        record="distill/conf", partial="students/conf/checkpoints/last.pt",
        folder="students/conf", same=("weights.pt", "history.parquet"),
        kills=("distill.step:2", "partial")),
    "teacher-train": dict(
        args=("--teacher", "resnet10_3d_motion_tiny", "--epochs", "2", "--batch-size", "8", "--clips-per-video", "1",
              "--threads", "1"),
        record="teacher-train/resnet10_3d_motion_tiny",
        partial="trained_teachers/resnet10_3d_motion_tiny/checkpoints/last.pt",
        folder="trained_teachers/resnet10_3d_motion_tiny", same=("weights.pt", "history.parquet"),
        kills=("partial",)),
    "score": dict(
        args=("--student", "conf", "--clips-per-group", "12", "--threads", "1", "--workers", "0"),
        record="score/conf", partial="staging/score-conf/*.json",
        folder="scores/conf", same=("clips.parquet", "logits.zarr"),
        kills=("partial",)),
}
CASES = [(stage, kill) for stage, spec in STAGES.items() for kill in spec["kills"]]


def _command(stage: str, store, *extra: str) -> list[str]:
    return [sys.executable, "-m", "condi_pipe.cli", stage, *STAGES[stage]["args"], "--store", str(store), "--quiet",
            *extra]


def _partial_work(stage: str, store) -> list:
    """The stage's partial work in ``store``: staged items, or the checkpoint of a finished epoch."""
    return sorted(store.glob(STAGES[stage]["partial"]))


def _kill(stage: str, store, kill: str) -> None:
    """Run the stage with --force (it redoes finished work) and SIGKILL it at ``kill``: a named fault point, or
    ("partial") as soon as its first partial work shows, a moment no fault point marks. The store is only
    polled, so a loaded machine moves the kill later but never before that work."""
    if kill == "partial":
        proc = subprocess.Popen(_command(stage, store, "--force"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not _partial_work(stage, store) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "finished (or failed) before its partial work was seen"
        return
    killed = subprocess.run(_command(stage, store, "--force"), env={**os.environ, KILL_ENV: kill},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr


def _without_timings(path):
    table = pq.read_table(path)
    return table.drop([c for c in table.column_names if c.endswith(("_s", "seconds"))])


@pytest.mark.parametrize("stage, kill", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(stage, kill, cheap_teacher_store, tmp_path,
                                                               fingerprint, invoke_cli):
    spec = STAGES[stage]
    store = tmp_path / "store"
    shutil.copytree(cheap_teacher_store, store)
    _kill(stage, store, kill)
    # Where the kill landed: after --force restarted the stage and before it finished (a kill before --force
    # cleared anything would leave the old run "done", and the resume would have nothing to do).
    assert json.loads((store / "run.json").read_text())["stages"][spec["record"]]["state"] == "running"
    if kill == "partial":
        assert _partial_work(stage, store)
    # the resume in this process: nothing kills it, and what it reads of the killed run is all in the store
    resumed = invoke_cli(stage, *STAGES[stage]["args"], "--store", str(store), "--quiet")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert "resuming an interrupted run" in resumed.output and "already done" not in resumed.output, resumed.output

    ours, reference = store / spec["folder"], cheap_teacher_store / spec["folder"]
    for name in spec["same"]:
        if name == "history.parquet":
            # pandas' equals counts NaN in the same place as equal (a run without a validation part has NaN
            # eval columns; Arrow's equals would call those different)
            assert _without_timings(ours / name).to_pandas().equals(_without_timings(reference / name).to_pandas())
        elif name.endswith(".zarr"):
            assert fingerprint(ours / name) == fingerprint(reference / name), name
        else:
            assert (ours / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (store / "staging").exists()
    assert verify_store(ensure_store(str(store))) == []  # what `condi-pipe verify` checks
