"""One writer per store: a lock file naming the holder, with stale-lock detection."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

LOCK_FILE = ".lock"
BREAK_FILE = ".lock.break"  # held (exclusive create) by whoever is replacing a stale lock


class StoreLockedError(StoreError):
    """Another live process holds the store."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_is_stale(holder: dict) -> bool:
    # Only a holder on this host can be checked; a lock from another host is trusted (remove it by hand).
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))


def _read_holder(store: Store) -> dict:
    try:
        return json.loads(store.read_bytes(LOCK_FILE) or b"{}")
    except (json.JSONDecodeError, FileNotFoundError):
        return {}


def _remove_stale(store: Store, stale: dict) -> None:
    """Remove the lock file if it still holds ``stale``. Of two processes that found the same stale lock, the
    second must not delete the lock the first has just taken: one at a time, each checks again before removing."""
    try:
        with store.fs.open(store.path(BREAK_FILE), "xb"):
            pass
    except FileExistsError:
        return  # another process is replacing it; the next attempt sees what it left
    try:
        if _read_holder(store) == stale:
            store.remove(LOCK_FILE)
    finally:
        store.remove(BREAK_FILE)


@contextmanager
def store_lock(store: Store, command: str, log=print):
    """Hold the store's lock for the duration of ``command``; refuse when another live process holds it."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    store.makedirs()
    path = store.path(LOCK_FILE)
    for _ in range(2):
        try:
            # Exclusive create: exactly one of two racing processes succeeds.
            with store.fs.open(path, "xb") as fh:
                fh.write(json.dumps(record).encode())
            break
        except FileExistsError:
            holder = _read_holder(store)
            if holder and not _holder_is_stale(holder):
                raise StoreLockedError(
                    f"{store.url}: in use by '{holder.get('command')}' (pid {holder.get('pid')} on "
                    f"{holder.get('host')}); wait for it to finish, or delete {path} if that process is gone"
                ) from None
            log(f"note: removing stale lock of pid {holder.get('pid')} ({holder.get('command')}) on {store.url}")
            _remove_stale(store, holder)
    else:
        raise StoreLockedError(f"{store.url}: could not take the lock {path} (another process is replacing a stale "
                               f"lock; if none is, delete {store.path(BREAK_FILE)})")
    try:
        yield
    finally:
        store.remove(LOCK_FILE)
