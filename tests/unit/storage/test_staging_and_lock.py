"""storage.staging and storage.lock on a real store in a temporary folder: an item counts as staged only once its
metadata (written last) is in place, staged arrays come back exactly, clearing removes one stage's staging and
then the empty staging folder; the lock names its holder, is released however the holder ends, refuses while a
live process on this host (or any process on another host) holds it, and replaces a stale or unreadable one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from condi_pipe.storage import staging
from condi_pipe.storage.lock import BREAK_FILE, LOCK_FILE, StoreLockedError, store_lock
from condi_pipe.storage.store import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "store"))


def _files(store: Store) -> list[str]:
    root = store.root
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# ---------------------------------------------------------------------------------------------------------------
# staging
# ---------------------------------------------------------------------------------------------------------------


def test_staged_items_round_trip_exactly(store):
    arrays = {"logits": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "ids": np.array([5, -1, 2**40], np.int64),
              "empty": np.zeros((0, 3), np.float16)}
    staging.stage_item(store, "stage-a", "g000", arrays, {"device": "cpu", "n": 3})
    staging.stage_item(store, "stage-a", "g001", None, {"n": 0})
    assert staging.staged_keys(store, "stage-a") == {"g000", "g001"}
    assert staging.staged_meta(store, "stage-a", "g000") == {"device": "cpu", "n": 3}
    back = staging.staged_arrays(store, "stage-a", "g000")
    assert sorted(back) == sorted(arrays)
    for name, values in arrays.items():
        assert back[name].dtype == values.dtype and back[name].shape == values.shape
        np.testing.assert_array_equal(back[name], values)
    assert staging.staged_arrays(store, "stage-a", "g001") == {}
    assert staging.staged_meta(store, "stage-a", "nope") is None
    # Each item lives under its own stage's folder; nothing else is written.
    assert _files(store) == [f"staging/stage-a/{name}" for name in
                             ("g000.empty.npy", "g000.ids.npy", "g000.json", "g000.logits.npy", "g001.json")]


def test_stages_list_only_their_own_keys(store):
    assert staging.staged_keys(store, "never-started") == set()
    staging.stage_item(store, "stage-a", "x", None, {})
    staging.stage_item(store, "stage-b", "y", None, {})
    assert staging.staged_keys(store, "stage-a") == {"x"}
    assert staging.staged_keys(store, "stage-b") == {"y"}


def test_an_item_interrupted_before_its_metadata_is_not_staged(store):
    # The second array cannot be saved (object arrays are refused without pickle): the first array is on disk,
    # the metadata that marks the item complete is not.
    with pytest.raises(ValueError):
        staging.stage_item(store, "stage-a", "g000", {"a": np.arange(3), "b": np.array([{"x": 1}], dtype=object)},
                           {"n": 1})
    assert store.exists("staging/stage-a/g000.a.npy")
    assert staging.staged_keys(store, "stage-a") == set()
    assert staging.staged_meta(store, "stage-a", "g000") is None
    # A metadata file killed mid-write is only a temporary file beside it: not a staged item either.
    store.makedirs("staging/stage-a")
    with open(store.path("staging/stage-a/g001.json.tmp-0123abcd"), "wb") as fh:
        fh.write(b'{"meta": {"n"')
    assert staging.staged_keys(store, "stage-a") == set()
    # Staged again (the resumed task), the item is complete and its arrays are the new ones.
    staging.stage_item(store, "stage-a", "g000", {"a": np.arange(4)}, {"n": 2})
    assert staging.staged_keys(store, "stage-a") == {"g000"}
    np.testing.assert_array_equal(staging.staged_arrays(store, "stage-a", "g000")["a"], np.arange(4))
    assert staging.staged_meta(store, "stage-a", "g000") == {"n": 2}


def test_staging_writes_are_atomic_and_leave_no_temporary_files(store):
    staging.stage_item(store, "stage-a", "g000", {"a": np.arange(3)}, {"v": 1})
    staging.stage_item(store, "stage-a", "g000", {"a": np.arange(5)}, {"v": 2})  # replaced whole
    assert _files(store) == ["staging/stage-a/g000.a.npy", "staging/stage-a/g000.json"]
    np.testing.assert_array_equal(staging.staged_arrays(store, "stage-a", "g000")["a"], np.arange(5))
    # A write that fails part-way leaves the previous complete file readable, never a torn one.
    with pytest.raises(TypeError):
        store.write_bytes("staging/stage-a/g000.json", "not bytes")  # type: ignore[arg-type]
    assert staging.staged_meta(store, "stage-a", "g000") == {"v": 2}
    assert staging.staged_keys(store, "stage-a") == {"g000"}


def test_clear_staging_removes_one_stage_then_the_empty_staging_folder(store):
    staging.stage_item(store, "stage-a", "x", {"a": np.arange(2)}, {})
    staging.stage_item(store, "stage-b", "y", None, {})
    store.write_bytes("keep.txt", b"not staging")
    staging.clear_staging(store, "stage-a")
    assert staging.staged_keys(store, "stage-a") == set()
    assert staging.staged_keys(store, "stage-b") == {"y"}  # another stage's work is kept
    staging.clear_staging(store, "stage-b")
    assert not store.exists("staging")  # the last one out removes the folder
    assert _files(store) == ["keep.txt"]
    staging.clear_staging(store, "stage-b")  # clearing again (a resumed publish) is harmless
    assert _files(store) == ["keep.txt"]


# ---------------------------------------------------------------------------------------------------------------
# the store lock
# ---------------------------------------------------------------------------------------------------------------


def _lock(store: Store) -> dict:
    return json.loads(store.read_bytes(LOCK_FILE))


def _dead_pid() -> int:
    """The pid of a process of ours that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(proc.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def _write_lock(store: Store, **holder) -> None:
    store.makedirs()
    store.write_bytes(LOCK_FILE, json.dumps(holder).encode())


def test_the_lock_names_its_holder_and_is_released_on_exit(store):
    with store_lock(store, "extract", log=lambda line: None):
        holder = _lock(store)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "extract"
        assert isinstance(holder["since"], float)
    assert not store.exists(LOCK_FILE)
    with store_lock(store, "score", log=lambda line: None):  # free again
        assert _lock(store)["command"] == "score"
    assert not store.exists(LOCK_FILE)


def test_the_lock_is_released_when_the_holder_raises(store):
    with pytest.raises(KeyError):
        with store_lock(store, "extract", log=lambda line: None):
            raise KeyError("boom")
    assert not store.exists(LOCK_FILE)


def test_a_held_lock_refuses_a_second_taker_and_stays_with_its_holder(store):
    with store_lock(store, "teacher-cache/r3d", log=lambda line: None):
        with pytest.raises(StoreLockedError, match=rf"in use by 'teacher-cache/r3d' \(pid {os.getpid()} on "
                                                   rf"{socket.gethostname()}\); wait for it to finish, or delete "):
            with store_lock(store, "score", log=lambda line: None):
                pytest.fail("took a held lock")
        assert _lock(store)["command"] == "teacher-cache/r3d"  # the refused taker did not remove it
    assert not store.exists(LOCK_FILE)


def _hold_in_another_process(store: Store, command: str) -> subprocess.Popen:
    """A new process holding the store's lock (as ``command``) until its stdin is closed."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "from condi_pipe.storage.store import Store\n"
        "from condi_pipe.storage.lock import store_lock\n"
        f"with store_lock(Store({store.url!r}), {command!r}, log=lambda line: None):\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline().strip()
    if line != "holding":
        holder.kill()
        holder.wait()
        pytest.fail(f"the other process did not take the lock (said {line!r})")
    return holder


def _release(holder: subprocess.Popen) -> int:
    if holder.poll() is None:
        holder.stdin.close()
        try:
            return holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
    return holder.wait()


def test_a_lock_held_by_another_live_process_is_refused(store):
    holder = _hold_in_another_process(store, "distill")
    try:
        with pytest.raises(StoreLockedError, match=rf"in use by 'distill' \(pid {holder.pid} on "):
            with store_lock(store, "score", log=lambda line: None):
                pass
        assert _lock(store)["pid"] == holder.pid
    finally:
        assert _release(holder) == 0
    assert not store.exists(LOCK_FILE)  # released by its holder
    with store_lock(store, "score", log=lambda line: None):
        assert _lock(store)["pid"] == os.getpid()


def test_of_two_processes_replacing_one_stale_lock_only_one_takes_the_store(store):
    """We find a dead process's lock; before we replace it, another process replaces it and holds the store (our
    log line is the moment in between). We must then be refused, not delete the other's fresh lock."""
    _write_lock(store, pid=_dead_pid(), host=socket.gethostname(), command="extract", since=0)
    others: list[subprocess.Popen] = []

    def meanwhile(note: str) -> None:
        if not others:
            others.append(_hold_in_another_process(store, "distill"))

    try:
        with pytest.raises(StoreLockedError, match=r"in use by 'distill' \(pid \d+ on "):
            with store_lock(store, "score", log=meanwhile):
                pytest.fail("took the store while another live process held it")
        assert len(others) == 1 and _lock(store)["pid"] == others[0].pid  # the other's lock survived
    finally:
        for other in others:
            assert _release(other) == 0
    assert not store.exists(LOCK_FILE)
    assert store.listdir() == []  # nothing else left behind


def test_a_stale_lock_being_replaced_by_another_process_is_left_to_it(store):
    """While another process replaces a stale lock (it holds the break file), we neither delete the stale lock nor
    take the store: refused, naming the break file to delete should no process be replacing it."""
    pid = _dead_pid()
    _write_lock(store, pid=pid, host=socket.gethostname(), command="extract", since=0)
    store.write_bytes(BREAK_FILE, b"")
    breaker = store.path(BREAK_FILE)
    with pytest.raises(StoreLockedError, match=rf"could not take the lock .*; if none is, delete {breaker}\)$"):
        with store_lock(store, "score", log=lambda line: None):
            pytest.fail("took the store while its stale lock was being replaced")
    assert _lock(store)["pid"] == pid and store.exists(BREAK_FILE)
    store.remove(BREAK_FILE)  # that process is gone: the stale lock is replaced as usual
    with store_lock(store, "score", log=lambda line: None):
        assert _lock(store)["pid"] == os.getpid()
    assert store.listdir() == []


def test_a_stale_lock_of_a_dead_process_on_this_host_is_replaced(store):
    pid = _dead_pid()
    _write_lock(store, pid=pid, host=socket.gethostname(), command="extract", since=0)
    notes: list[str] = []
    with store_lock(store, "score", log=notes.append):
        assert _lock(store)["pid"] == os.getpid() and _lock(store)["command"] == "score"
    assert notes == [f"note: removing stale lock of pid {pid} (extract) on {store.url}"]
    assert store.listdir() == []  # neither lock nor break file left behind


def test_a_lock_from_another_host_is_trusted_even_with_a_dead_pid(store):
    pid = _dead_pid()
    elsewhere = socket.gethostname() + "-elsewhere"
    _write_lock(store, pid=pid, host=elsewhere, command="extract", since=0)
    with pytest.raises(StoreLockedError, match=rf"in use by 'extract' \(pid {pid} on {elsewhere}\)"):
        with store_lock(store, "score", log=lambda line: None):
            pass
    assert _lock(store)["host"] == elsewhere  # left for a person to remove


@pytest.mark.parametrize("content", [b"", b"{not json", b"{}"])
def test_an_unreadable_or_empty_lock_is_replaced(store, content):
    store.makedirs()
    store.write_bytes(LOCK_FILE, content)
    notes: list[str] = []
    with store_lock(store, "score", log=notes.append):
        assert _lock(store)["pid"] == os.getpid()
    assert len(notes) == 1 and notes[0].startswith("note: removing stale lock of pid None")
    assert not store.exists(LOCK_FILE)
