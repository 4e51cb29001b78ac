"""Tiny tasks for the executor tests (not a test module: loaded by path in the test process and uploaded to the
Dask workers with ``Client.upload_file``, so both import it as ``executor_tasks``).

Every call of ``square`` leaves a file ``<item>.<pid>.<uuid>`` in ``calls_dir``, so a test can count the calls of
each item and see which process ran them, whatever the process."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path


def square(item: int, offset: int, calls_dir: str) -> int:
    Path(calls_dir, f"{item}.{os.getpid()}.{uuid.uuid4().hex}").touch()
    if item < 0:
        raise ValueError(f"item {item}: negative, cannot be squared")
    return item * item + offset


def calls(calls_dir) -> list[tuple[int, int]]:
    """(item, pid) of every call so far, sorted."""
    return sorted((int(item), int(pid)) for item, pid, _ in (p.name.split(".") for p in Path(calls_dir).iterdir()))


def held_until_released(item: int, folder: str, give_up_after: float = 60.0) -> str:
    """Item 0 returns only once ``folder/release`` exists (it gives up after a while, so that a broken test fails
    instead of hanging); the others return at once."""
    if item != 0:
        return "at once"
    deadline = time.monotonic() + give_up_after
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            return "gave up"
        time.sleep(0.02)
    return "released"
