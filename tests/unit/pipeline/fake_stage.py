"""A tiny fake stage for the stage-machinery tests (not a test module: loaded by path, in the test process and in
the subprocesses the tests start).

It goes through the machinery every real stage uses: ``stage_run`` (lock, run.json state, config check, --force),
per-key work through the shared fan-out (``pipeline.fan_out.run_unstaged``: ``run_tasks`` over the keys not staged
yet with ``storage.staging``), the same fault points (``worker.task`` inside a task before it stages its result,
``fake.item`` in the stage after each result), one small Parquet output, then ``finish_staged`` (``run.done``:
checksums, state done; then ``clear_staging``).

Every task call appends its key (and its pid) to ``calls_log`` (a plain file outside the store), so tests can count
the work done across processes.

Run as ``python SCRIPT fake_stage.py run STORE CALLS_LOG KEYS`` (one stage run) or ``... hold STORE`` (enter the
stage, print ``holding`` and keep the store's lock until stdin closes).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.fan_out import finish_staged, run_unstaged
from condi_pipe.pipeline.stage import define_stage, stage_run
from condi_pipe.storage import staging
from condi_pipe.storage.store import Store

FAKE = define_stage(
    "fake",
    reads=(),
    writes=("fake/{key}", "staging/fake-{key}"),
    summary="a test stage: a few keys of arithmetic staged, one Parquet table published",
)
ITEM_POINT = "fake.item"  # passed by the stage after each task's result has been staged


@dataclass(frozen=True)
class FakeRequest:
    name: str = "demo"
    keys: int = 5
    scale: int = 3

    def config(self) -> dict:
        return asdict(self)

    @property
    def record_key(self) -> str:
        return f"{FAKE.name}/{self.name}"

    @property
    def staging_name(self) -> str:
        return f"fake-{self.name}"

    @property
    def output(self) -> str:
        return f"fake/{self.name}/items.parquet"

    def item_keys(self) -> list[str]:
        return [f"k{i:02d}" for i in range(self.keys)]


def _call_lines(calls_log) -> list[list[str]]:
    if not os.path.exists(calls_log):
        return []
    with open(calls_log) as fh:
        return [line.split() for line in fh if line.strip()]


def read_calls(calls_log) -> list[str]:
    """Keys of every task call so far, in call order."""
    return [key for key, _ in _call_lines(calls_log)]


def read_call_pids(calls_log) -> set[int]:
    """Processes that ran the task calls."""
    return {int(pid) for _, pid in _call_lines(calls_log)}


def fake_task(key: str, store_url: str, stage_name: str, scale: int, calls_log: str) -> dict:
    with open(calls_log, "a") as fh:
        fh.write(f"{key} {os.getpid()}\n")
    values = (np.arange(4, dtype=np.int64) + int(key[1:])) * scale
    faults.checkpoint(faults.WORKER_TASK)
    staging.stage_item(Store(store_url), stage_name, key, {"values": values}, {"key": key, "pid": os.getpid()})
    return {"key": key}


def fake_stage(store: Store, request: FakeRequest, calls_log: str,
               executor: ExecutorOptions = ExecutorOptions(workers=0), *, force: bool = False,
               log: Callable[[str], None] = print) -> dict:
    """Stage every key not staged yet, then publish ``fake/<name>/items.parquet``; resumable per key."""
    with stage_run(store, FAKE, request.config(), force=force, record_key=request.record_key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        keys = request.item_keys()
        computed = run_unstaged(store, request.staging_name, keys, lambda key: key, fake_task, executor, desc="fake",
                                fault_point=ITEM_POINT, quiet=True,
                                common=(store.url, request.staging_name, request.scale, calls_log))
        values = [staging.staged_arrays(store, request.staging_name, k)["values"] for k in keys]
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "values": pa.array([v.tolist() for v in values], pa.list_(pa.int64())),
            "total": pa.array([int(v.sum()) for v in values], pa.int64()),
        })
        store.write_table(request.output, table)
        counts = {"items": len(keys), "computed": computed}
        finish_staged(run, store, [request.staging_name], counts)
    return counts


def main(argv: list[str]) -> None:
    mode, store_url = argv[0], argv[1]
    store = Store(store_url)
    if mode == "run":
        calls_log, keys = argv[2], int(argv[3])
        fake_stage(store, FakeRequest(keys=keys), calls_log)
    elif mode == "hold":
        request = FakeRequest()
        with stage_run(store, FAKE, request.config(), record_key=request.record_key):
            print("holding", flush=True)
            sys.stdin.read()  # until the test closes our stdin
    else:
        raise SystemExit(f"unknown mode {mode!r}")
