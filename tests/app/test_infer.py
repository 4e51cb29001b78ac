"""infer without --student: the store's only student run of the method, distilled from the given teacher, is used
(and named on stderr); with several, the error lists them; runs of other losses or teachers do not count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from condi_pipe.app.model_choice import choose_student_run
from condi_pipe.cli import main as cli
from condi_pipe.models import build_model
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"  # synth_teacher_store's random-init teacher cache
STUDENT = "resnet10_3d_motion_skim"


def add_student_run(store: Store, run: str, loss: str, teacher: str = TEACHER, complete: bool = True) -> None:
    """A freshly initialised student published as distill publishes one (weights, then meta.json last)."""
    folder = artifacts.student_folder(run)
    artifacts.write_state_dict(store, folder, build_model(STUDENT, num_classes=10).state_dict())
    if complete:
        artifacts.write_meta(store, folder, {"run": run, "loss": loss, "student": STUDENT, "width": None,
                                             "num_classes": 10, "teacher": teacher})


@pytest.fixture()
def store_dir(synth_teacher_store, tmp_path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(synth_teacher_store, target)
    store = Store(str(target))
    add_student_run(store, "ent", "st-ent")  # another loss
    add_student_run(store, "other-teacher", "condi-sr", teacher="some-other-teacher")
    add_student_run(store, "unfinished", "condi-sr", complete=False)
    return target


def infer_cli(store_dir: Path, video: Path, *args: str):
    return CliRunner().invoke(cli, ["infer", str(video), "--store", str(store_dir), "--teacher", TEACHER, "--k", "2",
                                    "--json", *args])


def test_the_only_run_of_the_method_is_used_and_named(store_dir, synth_root):
    add_student_run(Store(str(store_dir)), "conf", "condi-sr")
    video = next(synth_root.rglob("*.mp4"))
    result = infer_cli(store_dir, video)
    assert result.exit_code == 0, result.output
    assert "using 'conf', the store's only condi-sr student run from teacher 'resnet10_3d_small'" in result.stderr
    (row,) = json.loads(result.stdout)  # the message went to stderr: stdout is the JSON alone
    assert len(row["teacher_clips"]) == min(2, row["clips"]) and row["seconds"]["student"] > 0
    # dense with K_s needs a clip-level student of any loss: two here ("conf", "ent")
    result = infer_cli(store_dir, video, "--method", "dense", "--ks", "1")
    assert result.exit_code == 2 and "pass --student with one of conf, ent" in result.stderr


def test_several_runs_of_the_method_are_listed(store_dir, synth_root):
    store = Store(str(store_dir))
    add_student_run(store, "conf-a", "condi-sr")
    add_student_run(store, "conf-b", "condi-sr")
    result = infer_cli(store_dir, next(synth_root.rglob("*.mp4")))
    assert result.exit_code == 2
    assert result.stderr == (f"error: method 'condi-sr' needs a student and {store.url} holds several condi-sr "
                             f"student runs from teacher '{TEACHER}': pass --student with one of conf-a, conf-b\n")
    assert choose_student_run(store, TEACHER, "st-ent") == "ent"


def test_no_run_of_the_method_says_how_to_make_one(store_dir):
    with pytest.raises(ValueError, match=r"holds no finished bce-conf student run from teacher 'resnet10_3d_small': "
                                         r"run `condi-pipe distill`, or pass --student RUN"):
        choose_student_run(Store(str(store_dir)), TEACHER, "bce-conf")
