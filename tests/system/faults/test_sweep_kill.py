"""`condi-pipe sweep` through the CLI: SIGKILLed mid-trial and resumed, it ends with the uninterrupted sweep's study
(the same trials, parameters, per-epoch values, states and best; the killed trial's student resumed from its own
checkpoint to the same weights); two sweep processes on one study run different trials."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.storage.lock import store_lock
from condi_pipe.storage.store import Store
from condi_pipe.storage.sweep_study import read_sweeps

pytestmark = pytest.mark.slow

CONFIG = """
store = "store"
[extract]
source = "ucf101"
root = "data"
clips_per_shard = 8
[teacher]
name = "resnet10_3d_small"
[distill]
student = "resnet10_3d_motion_skim"
epochs = {epochs}
batch_size = 8
clips_per_video = 1
threads = 1
[sweep]
name = "grid"
trials = {trials}
[sweep.space]
lr = [0.01, 0.1, 0.3]
mu = [0.5, 1.0]
"""
# The cheapest registered student (it reads clips at 8x56x56): a trial takes about a second, and the grid's order
# still has the median pruner stop the last trial.


def _sweep_folder(store_dir: Path, tmp_path: Path, name: str, epochs: int = 2, trials: int = 6) -> Path:
    """A copy of the store beside its data and a config; returns the config's path."""
    folder = tmp_path / name
    shutil.copytree(store_dir, folder / "store")
    (folder / "data").symlink_to(store_dir.parent / "data")
    config = folder / "sweep.toml"
    config.write_text(textwrap.dedent(CONFIG.format(epochs=epochs, trials=trials)))
    return config


def _sweep(config: Path, env: dict | None = None, wait: bool = True):
    """``condi-pipe sweep`` in a process of its own, for the sweeps killed or run side by side."""
    command = [sys.executable, "-m", "condi_pipe.cli", "sweep", "--config", str(config)]
    if not wait:
        return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900)


def _study(config: Path):
    (view,) = read_sweeps(Store(str(config.parent / "store")))
    return view


def _trials(view) -> list[tuple]:
    return [(t.number, t.state, t.params, t.value, t.curve, t.run) for t in sorted(view.trials, key=lambda t: t.number)]


@pytest.fixture(scope="module")
def uninterrupted(validation_teacher_store, tmp_path_factory, invoke_cli):
    """The sweep run whole, in this process (nothing kills it)."""
    config = _sweep_folder(validation_teacher_store, tmp_path_factory.mktemp("sweep"), "uninterrupted")
    done = invoke_cli("sweep", "--config", str(config))
    assert done.exit_code == 0, (done.output, done.exception)
    return config


def test_a_killed_sweep_resumes_to_the_uninterrupted_study(uninterrupted, validation_teacher_store, tmp_path,
                                                           invoke_cli):
    config = _sweep_folder(validation_teacher_store, tmp_path, "killed")
    # the 3rd epoch any trial finishes: trial 1's first of two, after its checkpoint is written
    killed = _sweep(config, env={KILL_ENV: "distill.epoch:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = config.parent / "store/students/sweep-grid-t001/checkpoints/last.pt"
    assert checkpoint.exists()
    before = _study(config)
    assert [(t.number, t.state) for t in before.trials] == [(0, "COMPLETE"), (1, "RUNNING")]

    resumed = invoke_cli("sweep", "--config", str(config))  # in this process: nothing kills the resumed sweep
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert "trial 1 was left running by pid" in resumed.stdout and "running it again" in resumed.stdout
    assert "resuming after epoch 1 of 2" in resumed.stdout, resumed.stdout  # from its own checkpoint

    ours, reference = _study(config), _study(uninterrupted)
    assert _trials(ours) == _trials(reference)
    assert len(ours.trials) == 6 and {t.state for t in ours.trials} <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in {t.state for t in ours.trials}  # the median pruner stopped one, in both sweeps alike
    assert ours.best == reference.best is not None
    run = "students/sweep-grid-t001/weights.pt"
    assert (config.parent / "store" / run).read_bytes() == (uninterrupted.parent / "store" / run).read_bytes()
    best = (config.parent / "store/sweeps/grid/best.toml").read_text()
    assert best.replace(str(config.parent), "X") == (
        uninterrupted.parent / "store/sweeps/grid/best.toml").read_text().replace(str(uninterrupted.parent), "X")



def test_two_sweep_processes_on_one_study_run_different_trials(validation_teacher_store, tmp_path):
    """The test holds the store's lock until each process has taken a trial (so each surely runs one, however
    slowly the machine starts them), then both share the lock's turns; the third trial goes to whichever asks
    first."""
    config = _sweep_folder(validation_teacher_store, tmp_path, "two", epochs=1, trials=3)
    store = Store(str(config.parent / "store"))
    with store_lock(store, "test: hold the store until both sweeps took a trial", log=lambda message: None):
        processes = [_sweep(config, wait=False) for _ in range(2)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            try:
                if sum(t.state == "RUNNING" for t in _study(config).trials) == 2:
                    break
            except (ValueError, KeyError, OSError):  # the study is being created
                pass
            time.sleep(0.2)
        else:
            ended = [p.communicate()[1] for p in processes if p.poll() is not None]
            pytest.fail(f"the two sweeps did not both take a trial: {ended}")
    outputs = [p.communicate(timeout=900) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    view = _study(config)
    assert [(t.number, t.state) for t in view.trials] == [(n, "COMPLETE") for n in range(3)]
    ran = [{int(line.split("trial ")[1].split()[0]) for line in out.splitlines()
            if line.startswith("sweep grid: trial ") and "left running" not in line} for out, _ in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == {0, 1, 2}, outputs
    assert len({t.run for t in view.trials}) == 3 and len({tuple(t.params.items()) for t in view.trials}) == 3
    assert (config.parent / "store/sweeps/grid/best.toml").exists()  # written by whichever finished last
