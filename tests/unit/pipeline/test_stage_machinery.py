"""The shared stage machinery (``stage_run``, staging, the store lock, the executor, fault points) on a tiny fake
stage (``fake_stage.py`` beside this file): a rerun with the same configuration does no work, ``force`` redoes
it, a changed configuration is refused, a store locked by another live process is refused, and a stage SIGKILLed at
a fault point resumes, re-doing only the keys it had not staged, to outputs byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.faults import KILL_ENV, WORKER_TASK
from condi_pipe.pipeline.stage import StageError, StageSpec, ensure_store, stage_run
from condi_pipe.storage import staging
from condi_pipe.storage.checksums import checksum_file, damaged_files
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.lock import LOCK_FILE, StoreLockedError
from condi_pipe.storage.run_state import RUN_FILE, StoreFormatError, read_run, set_stage, stage_record
from condi_pipe.storage.store import Store

HELPER = Path(__file__).with_name("fake_stage.py")


def _load_helper():
    name = HELPER.stem  # the name Dask workers import it by once it is uploaded to them
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HELPER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


fake = _load_helper()
KEYS = fake.FakeRequest().item_keys()

# The subprocess entry point: load the fake stage by path (as importlib mode does) and run its main().
SCRIPT = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fake_stage", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["fake_stage"] = module
spec.loader.exec_module(module)
module.main(sys.argv[2:])
"""


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "run_fake_stage.py"
    path.write_text(SCRIPT)
    return path


def _run(store_dir: Path, calls: Path, request=None, **kwargs):
    """Run the fake stage in this process; returns (counts, log lines)."""
    lines: list[str] = []
    counts = fake.fake_stage(Store(str(store_dir)), request or fake.FakeRequest(), str(calls), log=lines.append,
                             **kwargs)
    return counts, lines


def _expected_totals(scale: int = 3, keys: int = 5) -> list[int]:
    return [int(((np.arange(4) + i) * scale).sum()) for i in range(keys)]


def _published(store_dir: Path):
    return Store(str(store_dir)).read_table("fake/demo/items.parquet")


# ---------------------------------------------------------------------------------------------------------------
# rerun, force, changed configuration, missing inputs
# ---------------------------------------------------------------------------------------------------------------


def test_first_run_stages_every_key_publishes_and_records_done(tmp_path):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    counts, _ = _run(store_dir, calls)
    assert counts == {"items": 5, "computed": 5}
    assert fake.read_calls(calls) == KEYS
    table = _published(store_dir)
    assert table.column("key").to_pylist() == KEYS
    assert table.column("total").to_pylist() == _expected_totals()
    store = Store(str(store_dir))
    record = stage_record(store, "fake/demo")
    assert record["state"] == "done" and record["counts"] == counts
    assert record["config"] == fake.FakeRequest().config()
    checksums = store.read_json(checksum_file("fake/demo"))
    assert list(checksums["files"]) == ["fake/demo/items.parquet"]
    assert damaged_files(store, "fake/demo") == []
    assert not (store_dir / "staging").exists()  # staging cleared, and its empty parent too
    assert not (store_dir / LOCK_FILE).exists()


def test_a_rerun_with_the_same_config_is_a_no_op(tmp_path, fingerprint):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    first, _ = _run(store_dir, calls)
    before = fingerprint(store_dir)
    again, lines = _run(store_dir, calls)
    assert again == first
    assert fake.read_calls(calls) == KEYS  # no task ran a second time
    assert lines == ["fake/demo: already done (computed 5, items 5); nothing to do (use --force to redo)"]
    assert fingerprint(store_dir) == before  # run.json included: not even the record was rewritten


def test_force_removes_the_outputs_and_staging_and_redoes_every_key(tmp_path, fingerprint):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    _run(store_dir, calls)
    published = fingerprint(store_dir / "fake")
    store = Store(str(store_dir))
    store.write_bytes("fake/demo/stray.txt", b"left by an older run")
    # A stale staged result that --force must not reuse (it would be taken as done on a plain resume).
    staging.stage_item(store, "fake-demo", "k00", {"values": np.full(4, -1, np.int64)}, {})
    counts, lines = _run(store_dir, calls, force=True)
    assert counts == {"items": 5, "computed": 5}
    assert fake.read_calls(calls) == KEYS + KEYS
    assert not any("already done" in line for line in lines)
    assert not (store_dir / "fake" / "demo" / "stray.txt").exists()
    assert fingerprint(store_dir / "fake") == published  # the stale staged k00 was not used
    assert stage_record(store, "fake/demo")["state"] == "done"


def test_a_changed_config_is_refused_until_forced(tmp_path, fingerprint):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    _run(store_dir, calls)
    before = fingerprint(store_dir)
    with pytest.raises(StageError, match=r"'fake/demo' was finished with a different configuration \(scale\); "
                                         r"re-run with --force to redo it with the new one$"):
        _run(store_dir, calls, fake.FakeRequest(scale=4))
    with pytest.raises(StageError, match=r"with a different configuration \(keys, scale\);"):
        _run(store_dir, calls, fake.FakeRequest(keys=6, scale=4))
    assert fake.read_calls(calls) == KEYS  # refused before any work
    assert fingerprint(store_dir) == before  # nothing recorded, nothing deleted, lock released
    counts, _ = _run(store_dir, calls, fake.FakeRequest(scale=4), force=True)
    assert counts == {"items": 5, "computed": 5}
    assert _published(store_dir).column("total").to_pylist() == _expected_totals(scale=4)
    assert stage_record(Store(str(store_dir)), "fake/demo")["config"]["scale"] == 4
    again, lines = _run(store_dir, calls, fake.FakeRequest(scale=4))  # the new config is now the recorded one
    assert "already done" in lines[0] and len(fake.read_calls(calls)) == 10


def test_config_comparison_names_nested_keys_and_ignores_new_none_options(tmp_path):
    store = Store(str(tmp_path / "store"))
    spec = StageSpec("cfg", reads=(), writes=("cfg/{key}",), summary="config comparison")
    config = {"teacher": {"name": "r3d", "weights_sha256": "aa"}, "batch": 8}
    with stage_run(store, spec, config, log=lambda line: None) as run:
        assert not run.skip
        run.done({"n": 1})
    # An option added later with a None default equals its absence: the finished run still counts.
    with stage_run(store, spec, {**config, "new_option": None}, log=lambda line: None) as run:
        assert run.skip and run.previous["counts"] == {"n": 1}
    changed = {**config, "teacher": {"name": "r3d", "weights_sha256": "bb"}, "new_option": 0}
    with pytest.raises(StageError, match=r"configuration \(new_option, teacher\.weights_sha256\);"):
        with stage_run(store, spec, changed, log=lambda line: None):
            pass


def test_a_stage_refuses_to_start_before_its_inputs_have_finished(tmp_path, fingerprint):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    store = Store(str(store_dir))
    reader = StageSpec("fake-reader", reads=("fake",), writes=("reader",), summary="reads the fake stage")
    with pytest.raises(StageError, match=r"'fake-reader' needs 'fake' to have finished; run `condi-pipe fake` first"):
        with stage_run(store, reader, {}):
            pass
    set_stage(store, "fake/other", state="running", config={})  # started is not finished
    with pytest.raises(StageError, match="needs 'fake' to have finished"):
        with stage_run(store, reader, {}):
            pass
    assert "fake-reader" not in read_run(store)["stages"]
    _run(store_dir, calls)  # a finished 'fake/<name>' record satisfies a stage reading 'fake'
    with stage_run(store, reader, {}, log=lambda line: None) as run:
        assert not run.skip
    assert stage_record(store, "fake-reader")["state"] == "running"


def test_ensure_store_refuses_unknown_protocols_and_newer_formats(tmp_path):
    assert ensure_store(str(tmp_path / "fresh")).url == str(tmp_path / "fresh")
    with pytest.raises(StoreError, match=r"^nosuchproto://x: cannot open store"):
        ensure_store("nosuchproto://x")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / RUN_FILE).write_text(json.dumps({"format_version": 99, "stages": {}}))
    with pytest.raises(StoreFormatError, match=r"store format version 99 is newer than this condi-pipe"):
        ensure_store(str(newer))
    # A stage on such a store is refused before anything is recorded, and the lock is released.
    with pytest.raises(StoreFormatError):
        _run(newer, tmp_path / "calls.log")
    assert json.loads((newer / RUN_FILE).read_text()) == {"format_version": 99, "stages": {}}
    assert not (newer / LOCK_FILE).exists() and fake.read_calls(tmp_path / "calls.log") == []


# ---------------------------------------------------------------------------------------------------------------
# another process holding the store
# ---------------------------------------------------------------------------------------------------------------


def test_a_store_held_by_another_live_process_is_refused(tmp_path, script):
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    holder = subprocess.Popen([sys.executable, str(script), str(HELPER), "hold", str(store_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", "the holding process did not take the lock"
        with pytest.raises(StoreLockedError,
                           match=rf"in use by 'fake/demo' \(pid {holder.pid} on .*\); wait for it to finish"):
            _run(store_dir, calls)
        assert fake.read_calls(calls) == []
        # The refused attempt left the holder's lock and state alone.
        assert json.loads((store_dir / LOCK_FILE).read_text())["pid"] == holder.pid
        assert stage_record(Store(str(store_dir)), "fake/demo")["state"] == "running"
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not (store_dir / LOCK_FILE).exists()  # released on exit
    counts, lines = _run(store_dir, calls)  # the holder never finished: this run resumes its record
    assert lines == ["fake/demo: resuming an interrupted run"]
    assert counts == {"items": 5, "computed": 5} and fake.read_calls(calls) == KEYS


# ---------------------------------------------------------------------------------------------------------------
# SIGKILL at a fault point, then resume
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("point", "passes", "staged"), [
    (fake.ITEM_POINT, 2, 2),  # after the 2nd key was staged
    (WORKER_TASK, 3, 2),  # inside the 3rd task: its result computed, not staged
    (fake.ITEM_POINT, 5, 5),  # every key staged, killed before publishing
])
def test_sigkill_at_a_fault_point_then_resume_redoes_only_unfinished_keys(tmp_path, script, fingerprint, point,
                                                                          passes, staged):
    reference = tmp_path / "reference"
    _run(reference, tmp_path / "reference_calls.log")

    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    killed = subprocess.Popen([sys.executable, str(script), str(HELPER), "run", str(store_dir), str(calls), "5"],
                              env={**os.environ, KILL_ENV: f"{point}:{passes}"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    out, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err.decode()

    # Where the kill landed: exactly `passes` tasks ran, the first `staged` keys are staged, nothing published.
    store = Store(str(store_dir))
    assert fake.read_calls(calls) == KEYS[:passes]
    assert staging.staged_keys(store, "fake-demo") == set(KEYS[:staged])
    assert not (store_dir / "fake").exists()
    assert stage_record(store, "fake/demo")["state"] == "running"
    assert json.loads((store_dir / LOCK_FILE).read_text())["pid"] == killed.pid  # left behind by the dead process

    # Resuming with another configuration is refused; the dead process's lock is noticed as stale on the way.
    refused: list[str] = []
    with pytest.raises(StageError, match=r"'fake/demo' was started with a different configuration \(scale\)"):
        fake.fake_stage(store, fake.FakeRequest(scale=4), str(calls), log=refused.append)
    assert refused == [f"note: removing stale lock of pid {killed.pid} (fake/demo) on {store_dir}"]
    assert staging.staged_keys(store, "fake-demo") == set(KEYS[:staged])  # staged work kept

    counts, lines = _run(store_dir, calls)
    assert lines == ["fake/demo: resuming an interrupted run"]
    assert counts == {"items": 5, "computed": 5 - staged}
    assert fake.read_calls(calls) == KEYS[:passes] + KEYS[staged:]  # only the unstaged keys were redone
    assert fingerprint(store_dir / "fake") == fingerprint(reference / "fake")
    ckpt = checksum_file("fake/demo")
    assert (store_dir / ckpt).read_bytes() == (reference / ckpt).read_bytes()
    assert stage_record(store, "fake/demo")["state"] == "done"
    assert not (store_dir / "staging").exists() and not (store_dir / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------------------------------
# the same stage through Dask worker processes
# ---------------------------------------------------------------------------------------------------------------


def test_through_a_dask_cluster_the_outputs_equal_the_in_process_run(tmp_path, dask_cluster, fingerprint):
    from distributed import Client

    with Client(dask_cluster, timeout=60) as client:
        client.upload_file(str(HELPER))  # the scheduler and workers import the fake stage's task from it
    reference = tmp_path / "reference"
    _run(reference, tmp_path / "reference_calls.log")
    store_dir, calls = tmp_path / "store", tmp_path / "calls.log"
    counts, _ = _run(store_dir, calls, executor=ExecutorOptions(scheduler_address=dask_cluster))
    assert counts == {"items": 5, "computed": 5}
    assert sorted(fake.read_calls(calls)) == KEYS  # each key once
    assert os.getpid() not in fake.read_call_pids(calls)  # in the workers, not here
    assert fingerprint(store_dir / "fake") == fingerprint(reference / "fake")
    assert not (store_dir / "staging").exists()
