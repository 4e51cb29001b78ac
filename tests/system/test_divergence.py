"""A training run that diverges (a learning rate of 1e6, really trained, no mock): distill stops with one line
naming the run and the epoch, records nothing as finished and leaves the store usable; in a sweep the diverging
trial is FAIL with its reason and the other trials go on."""

from __future__ import annotations

import re
import shutil
import textwrap

from click.testing import CliRunner

from condi_pipe.app.verify import verify_store
from condi_pipe.cli import main as cli
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
DISTILL = ["distill", "--loss", "condi-sr", "--student", "shufflenetv2_3d", "--width", "0.25", "--teacher", TEACHER,
           "--name", "div", "--epochs", "1", "--clips-per-video", "1", "--threads", "2", "--quiet"]


def test_a_diverging_distill_stops_with_one_line_and_the_store_stays_usable(synth_teacher_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_teacher_store, store_dir)
    # batches of 2: the first step blows the weights up, a later step of epoch 1 has a NaN loss
    result = CliRunner().invoke(cli, [*DISTILL, "--lr", "1e6", "--batch-size", "2", "--store", str(store_dir)])
    assert result.exit_code == 2, result.output
    assert re.fullmatch(r"error: distill div: the training loss became nan in epoch 1 of 1 \(lr 1e\+06\); lower the "
                        r"learning rate\n", result.stderr), result.stderr
    store = Store(str(store_dir))
    assert stage_record(store, "distill/div")["state"] == "running"  # not finished: a re-run redoes it
    assert not artifacts.is_complete(store, artifacts.student_folder("div"))
    assert not store.exists(artifacts.weights_rel(artifacts.student_folder("div")))
    assert verify_store(store) == []  # the finished stages' outputs are untouched

    # the lock was released, and the advice works: a lower learning rate (--force: another configuration) finishes
    again = CliRunner().invoke(cli, [*DISTILL, "--lr", "0.1", "--batch-size", "8", "--force", "--store",
                                     str(store_dir)])
    assert again.exit_code == 0, again.output
    assert stage_record(store, "distill/div")["state"] == "done"
    assert artifacts.is_complete(store, artifacts.student_folder("div"))


SWEEP_CONFIG = """
store = "store"
[extract]
source = "ucf101"
root = "data"
clips_per_shard = 8
[teacher]
name = "resnet10_3d_small"
[distill]
student = "shufflenetv2_3d"
width = 0.25
epochs = 1
batch_size = 8
clips_per_video = 1
threads = 2
[sweep]
name = "div"
[sweep.space]
lr = [1e6, 0.05]
"""


def test_a_diverging_sweep_trial_is_failed_with_its_reason_and_the_others_run(validation_teacher_store, tmp_path):
    import optuna

    from condi_pipe.app.run_config import load_run_config
    from condi_pipe.app.sweep import sweep, trial_run_name
    from condi_pipe.storage import sweep_study

    shutil.copytree(validation_teacher_store, tmp_path / "store")
    (tmp_path / "data").symlink_to(validation_teacher_store.parent / "data")
    (tmp_path / "sweep.toml").write_text(textwrap.dedent(SWEEP_CONFIG))
    config = load_run_config(tmp_path / "sweep.toml")
    lines: list[str] = []
    summary = sweep(config, quiet=True, log=lines.append)

    store = Store(config.store)
    study = optuna.load_study(study_name="div",
                              storage=sweep_study.open_storage(sweep_study.default_storage_url(store, "div")))
    states = {t.params["lr"]: t for t in study.get_trials()}
    failed, completed = states[1e6], states[0.05]
    assert failed.state == optuna.trial.TrialState.FAIL and completed.state == optuna.trial.TrialState.COMPLETE
    run = trial_run_name("div", failed.number)
    # in training (a NaN loss) or on the validation clips after it (NaN outputs), whichever comes first
    assert re.fullmatch(rf"distill {run}: .*(became nan in epoch 1 |after epoch 1 became NaN or Inf).*; lower the "
                        r"learning rate", failed.user_attrs["error"]), failed.user_attrs["error"]
    assert any(f"trial {failed.number} (lr 1e+06) failed: distill {run}" in line for line in lines), lines
    assert stage_record(store, f"distill/{run}")["state"] == "running"  # the diverged student is not published
    assert summary["finished"] == 2 and summary["best"]["trial"] == completed.number
    assert load_run_config(summary["best_config"]).distill.lr == 0.05
