"""Run per-item tasks on ``dask.distributed``: a LocalCluster of worker processes, or an existing cluster.

Tasks write their own results to the store and return small records; the caller consumes them as they
complete, so a killed run loses at most the tasks in flight. A task that raises is retried by nobody: tasks
turn bad input into failure records themselves, so an exception here is a bug and stops the stage.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

from condi_pipe.pipeline.options import check_fields, option
from condi_pipe.pipeline.progress import progress_bar

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
MALLOC_TRIM_ENV = "MALLOC_TRIM_THRESHOLD_"
#: Workers the model stages (teacher-cache, score) start by default: none, they run in this process. One model
#: already uses every core, and a worker process adds its start-up (2-4.5 s) and runs the same forward pass slower
#: (docs/results.md, "Dask's statistical profiler"); ``--workers N`` or a scheduler address fans groups out.
INFERENCE_WORKERS = 0


@dataclass(frozen=True)
class ExecutorOptions:
    """Where tasks run. ``workers=0`` runs them in this process (no Dask), for debugging and tiny inputs."""

    workers: int = option(2, low=0, help="Local Dask worker processes (0: run in this process).")
    scheduler_address: str | None = option(None, help="Use an existing Dask cluster (tcp://HOST:PORT) instead of "
                                                      "starting local workers.")
    in_process: bool = False  # threads in this process (needed for memory:// stores)
    resources: dict[str, float] | None = None  # e.g. {"GPU": 1} for teacher tasks on GPU workers
    # Tasks per local worker at once. Model tasks want 1 (torch uses the cores); extract tasks spend most of
    # their time waiting on an ffmpeg child process, so 2 overlap one video's decoding with another's writes.
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        check_fields(self)

    def resolved_address(self) -> str | None:
        return self.scheduler_address or os.environ.get(SCHEDULER_ENV) or None

    def for_device(self, device: str) -> "ExecutorOptions":
        """Options for model tasks on ``device``: on CUDA each task asks for one ``GPU`` resource, so a cluster
        runs them only on workers started with ``--resources GPU=1``, one task per GPU at a time."""
        if str(device).startswith("cuda") and self.resources is None:
            return replace(self, resources={"GPU": 1})
        return self


@contextmanager
def dask_client(options: ExecutorOptions):
    """A connected ``distributed.Client``, or None when tasks run inline (``workers=0`` without an address)."""
    address = options.resolved_address()
    if address is None and options.workers <= 0:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    if address:
        with Client(address, timeout="30s") as client:
            yield client
        return
    with dask.config.set(local_worker_config()):
        with LocalCluster(
            n_workers=options.workers,
            threads_per_worker=options.threads_per_worker,
            processes=not options.in_process,
            dashboard_address=":0",  # any free port: several pipelines may run on one machine
            silence_logs=40,
        ) as cluster, Client(cluster) as client:
            try:
                yield client
            finally:
                _stop_workers(cluster, client)


def local_worker_config() -> dict:
    """Dask configuration for the worker processes of a cluster started here (``dask_client``, the benches).

    No statistical profiler in the workers: it samples the task's stack every 10 ms on a thread of its own, which on
    a 2-core machine competes with torch's threads (a teacher forward pass in a worker: 14.8-18.6 ms/clip with it,
    12.0-13.7 without, 10.0-12.7 in the main process; README "Runtime choice"). It only feeds the dashboard.

    And no ``MALLOC_TRIM_THRESHOLD_`` in their environment (the nanny sets 65536 to hand freed memory back to the
    OS): setting it turns off glibc's adaptive mmap threshold, so every large array of a task (each activation of a
    forward pass, each decoded clip) is a fresh mmap whose pages fault in again. resnet10_3d_motion at batch 7,
    channels-last bf16: 11.9 ms/clip with it, 7.2 without. A cluster started elsewhere needs the same setting
    (README "Running stages").
    """
    import importlib

    import dask

    importlib.import_module("distributed")  # its import loads the distributed.* defaults read here

    environ = {name: value for name, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if name != MALLOC_TRIM_ENV}
    return {"distributed.worker.daemon": False, "logging.distributed": "error",
            "distributed.worker.profile.enabled": False, "distributed.nanny.pre-spawn-environ": environ}


@contextmanager
def one_cluster(options: ExecutorOptions) -> Iterator[ExecutorOptions]:
    """Options that send every ``run_tasks`` call of a stage to one cluster: a LocalCluster started here, so its
    workers start and import once per stage instead of once per call; a given address or inline runs
    (``workers=0``) are used as they are."""
    if options.resolved_address() or options.workers <= 0:
        yield options
        return
    with dask_client(options) as client:
        # A LocalCluster has no resources to match (run_tasks asks for them only from a given address).
        yield replace(options, scheduler_address=client.scheduler.address, resources=None)


def _stop_workers(cluster, client, timeout: float = 10.0) -> None:
    """Retire the local workers before the scheduler closes: a worker that outlives its scheduler logs a
    heartbeat traceback ("Failed to communicate with scheduler") at the end of a successful run."""
    import time

    try:
        cluster.scale(0)
        deadline = time.monotonic() + timeout
        while client.scheduler_info().get("workers") and time.monotonic() < deadline:
            time.sleep(0.05)
    except Exception:  # shutting down anyway: closing the cluster still stops whatever is left
        pass


def run_tasks(
    fn: Callable[..., Any],
    items: Iterable[Any],
    options: ExecutorOptions,
    *,
    desc: str,
    quiet: bool = False,
    common: tuple = (),
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, fn(item, *common))`` as tasks complete, with a progress bar."""
    items = list(items)
    if not items:
        return
    with progress_bar(total=len(items), desc=desc, quiet=quiet) as bar, dask_client(options) as client:
        if client is None:
            for item in items:
                result = fn(item, *common)
                bar.update(1)
                yield item, result
            return
        from distributed import as_completed

        # Resources exist only on workers started with --resources; a LocalCluster has none to match.
        resources = options.resources if options.resolved_address() else None
        futures = {}
        for item in items:
            future = client.submit(fn, item, *common, pure=False, resources=resources)
            futures[future] = item
        for future in as_completed(futures):
            result = future.result()
            bar.update(1)
            yield futures[future], result
