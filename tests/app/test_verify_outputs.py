"""verify and repair of the model stages' outputs (tests/app/test_verify.py: the clip shards and the manifests): a
flipped byte in a teacher cache's Zarr chunk, a student's checkpoint and a score run's Parquet table is named by
verify (exit status 1); repair runs each damaged stage again with its recorded configuration, in order, and verify
is clean after, the damaged files back to their bytes and every undamaged output as it was."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from click.testing import CliRunner

import condi_pipe.stages.teacher_cache as teacher_cache_stage
from condi_pipe.app.verify import verify_store
from condi_pipe.cli import main as cli
from condi_pipe.storage import clip_outputs
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_damaged_teacher_cache_student_and_score_run_are_named_then_redone(synth_scored_store, tmp_path,
                                                                           monkeypatch):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_scored_store, store_dir)
    damaged = {
        f"teacher-cache/{TEACHER}": f"{clip_outputs.teacher_folder(TEACHER)}/logits.zarr/c/0/0",
        "distill/conf": artifacts.weights_rel(artifacts.student_folder("conf")),
        "score/conf": f"{clip_outputs.scores_folder('conf')}/clips.parquet",
    }
    original = {rel: hashlib.sha256((store_dir / rel).read_bytes()).hexdigest() for rel in damaged.values()}
    for rel in damaged.values():
        _flip_a_byte(store_dir / rel)
    other_run = {folder: _digests(store_dir / folder)
                 for folder in (artifacts.student_folder("ent"), clip_outputs.scores_folder("ent"))}

    result = CliRunner().invoke(cli, ["verify", "--store", str(store_dir)])
    assert result.exit_code == 1 and "verify: 3 problems" in result.output, result.output
    for key, rel in damaged.items():
        assert f"{key}: {rel}: content changed (sha256 mismatch)\n" in result.output

    # what the redone teacher-cache measures (latency curve, per-video times) is not checked here: measure less
    monkeypatch.setattr(teacher_cache_stage, "LATENCY_BATCHES", (1,))
    monkeypatch.setattr(teacher_cache_stage, "TIMING_REPEATS", 1)
    result = CliRunner().invoke(cli, ["repair", "--store", str(store_dir), "--workers", "0"])
    assert result.exit_code == 0, result.output
    redone = [line.split(":")[1].strip().split(" ")[0] for line in result.output.splitlines()
              if "redoing it with its recorded configuration" in line]
    assert redone == list(damaged), result.output  # the teacher cache first: the student trains on it

    store = Store(str(store_dir))
    assert verify_store(store) == []
    assert CliRunner().invoke(cli, ["verify", "--store", str(store_dir)]).output == "verify: all outputs intact\n"
    for key, rel in damaged.items():
        assert stage_record(store, key)["state"] == "done"
    # the stages are deterministic on one machine: the damaged files come back byte for byte
    assert {rel: hashlib.sha256((store_dir / rel).read_bytes()).hexdigest() for rel in damaged.values()} == original
    assert stage_record(store, "distill/conf")["config"]["train"]["lr"] == 0.1  # its recorded configuration
    assert {folder: _digests(store_dir / folder) for folder in other_run} == other_run

