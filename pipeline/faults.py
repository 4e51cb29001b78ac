"""Fault injection for the resume tests: ``CONDI_PIPE_KILL_AT=point:n`` SIGKILLs this process the n-th time
it passes ``point``. Unset (always, outside tests), it costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "CONDI_PIPE_KILL_AT"
# Passed by every parallel task (extract's decode and shard writes, teacher-cache, score) after computing its
# result and before staging it: set on one Dask worker's environment, it kills that worker mid-task.
WORKER_TASK = "worker.task"
_passes: Counter = Counter()


def checkpoint(point: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _passes[point] += 1
    if _passes[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
