"""A truncated Parquet table or Zarr chunk read by a later stage: one line naming the file and the reason (not a
pyarrow or codec traceback), exit status 2, and every other stored file as it was."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.storage import clip_outputs
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.clip_array import CLIPS_ARRAY
from condi_pipe.storage.run_state import RUN_FILE

TEACHER = "resnet10_3d_small"
NEW_RUN = "again"
DISTILL = ("distill", "--loss", "condi-sr", "--student", "shufflenetv2_3d", "--width", "0.25", "--teacher", TEACHER,
           "--name", NEW_RUN, "--epochs", "1", "--batch-size", "8", "--clips-per-video", "1", "--threads", "2")
REPORT = ("report", "--table", "confidence", "--methods", "conf")

# (what is truncated, the stage that reads it next, the kind of file named)
CASES = {
    "teacher-clips-parquet": (f"{clip_outputs.teacher_folder(TEACHER)}/clips.parquet", DISTILL, "Parquet file"),
    "teacher-logits-chunk": (f"{clip_outputs.teacher_folder(TEACHER)}/logits.zarr/c/0/0", DISTILL, "Zarr chunk"),
    "clip-shard": (f"{CLIPS_ARRAY}/c/1/0/0/0/0", DISTILL, "Zarr chunk"),  # read by the training loader
    "score-clips-parquet": (f"{clip_outputs.scores_folder('conf')}/clips.parquet", REPORT, "Parquet file"),
}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_a_truncated_output_is_one_line_naming_it_and_loses_nothing_else(synth_scored_store, tmp_path, case):
    rel, command, kind = CASES[case]
    store_dir = tmp_path / "store"
    shutil.copytree(synth_scored_store, store_dir)
    damaged = store_dir / rel
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    before = _digests(store_dir)

    result = CliRunner().invoke(cli, [*command, "--store", str(store_dir)])
    assert result.exit_code == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.output, result.output
    assert re.fullmatch(rf"error: {re.escape(str(damaged))}: damaged or truncated {kind} \(\w+: [^\n]+\); "
                        r"`condi-pipe verify --store STORE` lists the damaged files, `condi-pipe repair --store STORE` "
                        r"redoes them", error[0]), error[0]

    # the failed stage's own new run (its record, its empty folder) aside, every file is as it was
    after = _digests(store_dir)
    new = {p for p in after if p == RUN_FILE or p.startswith(artifacts.student_folder(NEW_RUN) + "/")}
    assert {p: d for p, d in after.items() if p not in new} == {p: d for p, d in before.items() if p not in new}
