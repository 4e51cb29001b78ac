"""run_tasks: yields ``(item, fn(item, *common))`` for every item. In this process (``workers=0``) in item order, one
task per result pulled; on a Dask cluster (two ``dask worker`` processes) every item once, in the workers, as tasks
complete (a slow task does not hold back finished ones). A task that raises is retried by nobody: its own exception
(type and one-line message) stops the run. Plus where ExecutorOptions sends tasks."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from condi_pipe.pipeline.executor import SCHEDULER_ENV, ExecutorOptions, run_tasks

HELPER = Path(__file__).with_name("executor_tasks.py")


def _load_helper():
    name = HELPER.stem  # the name the Dask workers import it by once it is uploaded to them
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HELPER)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tasks = _load_helper()
IN_PROCESS = ExecutorOptions(workers=0)


@pytest.fixture
def calls_dir(tmp_path) -> Path:
    folder = tmp_path / "calls"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def cluster(dask_cluster) -> str:
    """The shared two-worker cluster, with the helper module uploaded to its scheduler and workers."""
    from distributed import Client

    with Client(dask_cluster, timeout=60) as client:
        client.upload_file(str(HELPER))
    return dask_cluster


def _worker_pids(address: str) -> set[int]:
    from distributed import Client

    with Client(address, timeout=60) as client:
        return set(client.run(os.getpid).values())


# ---------------------------------------------------------------------------------------------------------------
# in this process
# ---------------------------------------------------------------------------------------------------------------


def test_in_process_results_are_complete_and_in_item_order(calls_dir):
    items = [5, 3, 8, 3, 0]
    results = list(run_tasks(tasks.square, items, IN_PROCESS, desc="square", quiet=True, common=(10, str(calls_dir))))
    assert results == [(i, i * i + 10) for i in items]
    assert tasks.calls(calls_dir) == sorted((i, os.getpid()) for i in items)


def test_in_process_tasks_run_one_per_result_pulled(calls_dir):
    results = run_tasks(tasks.square, [1, 2, 3], IN_PROCESS, desc="square", quiet=True, common=(0, str(calls_dir)))
    assert tasks.calls(calls_dir) == []  # nothing runs before the first result is asked for
    assert next(results) == (1, 1)
    assert [item for item, _ in tasks.calls(calls_dir)] == [1]  # a kill here loses no finished work
    assert list(results) == [(2, 4), (3, 9)]


def test_in_process_a_failing_task_stops_the_run_with_its_own_error(calls_dir):
    got = []
    with pytest.raises(ValueError, match=r"^item -3: negative, cannot be squared$"):
        for result in run_tasks(tasks.square, [1, 2, -3, 4], IN_PROCESS, desc="square", quiet=True,
                                common=(0, str(calls_dir))):
            got.append(result)
    assert got == [(1, 1), (2, 4)]
    assert [item for item, _ in tasks.calls(calls_dir)] == [-3, 1, 2]  # once each, and 4 never started


def test_no_items_yield_nothing_and_reach_no_cluster(calls_dir):
    nowhere = ExecutorOptions(scheduler_address="tcp://127.0.0.1:9")  # connecting would fail
    assert list(run_tasks(tasks.square, [], nowhere, desc="square", quiet=True, common=(0, str(calls_dir)))) == []
    assert tasks.calls(calls_dir) == []


def test_executor_options_resolve_the_scheduler_and_gpu_resources(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert ExecutorOptions().resolved_address() is None
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://env:8786")
    assert ExecutorOptions(workers=0).resolved_address() == "tcp://env:8786"
    assert ExecutorOptions(scheduler_address="tcp://given:1").resolved_address() == "tcp://given:1"
    monkeypatch.setenv(SCHEDULER_ENV, "")
    assert ExecutorOptions().resolved_address() is None
    cpu = ExecutorOptions(workers=3)
    assert cpu.for_device("cpu") is cpu
    assert cpu.for_device("cuda:1") == ExecutorOptions(workers=3, resources={"GPU": 1})
    custom = ExecutorOptions(resources={"GPU": 0.5})
    assert custom.for_device("cuda") is custom


# ---------------------------------------------------------------------------------------------------------------
# on a Dask cluster of two worker processes
# ---------------------------------------------------------------------------------------------------------------


def test_on_a_cluster_every_item_comes_back_once_computed_by_the_workers(cluster, calls_dir):
    items = list(range(10)) + [4]
    options = ExecutorOptions(scheduler_address=cluster)
    results = list(run_tasks(tasks.square, items, options, desc="square", quiet=True, common=(7, str(calls_dir))))
    assert sorted(results) == sorted((i, i * i + 7) for i in items)  # each item paired with its own result
    ran = tasks.calls(calls_dir)
    assert sorted(item for item, _ in ran) == sorted(items)  # once each
    pids = {pid for _, pid in ran}
    assert os.getpid() not in pids and pids <= _worker_pids(cluster)


def test_on_a_cluster_results_come_back_as_they_complete(cluster, tmp_path):
    options = ExecutorOptions(scheduler_address=cluster)
    results = run_tasks(tasks.held_until_released, [0, 1, 2, 3], options, desc="held", quiet=True,
                        common=(str(tmp_path),))
    first = next(results)  # item 0 cannot finish yet: a later item, finished on the other worker, comes first
    assert first != (0, "gave up") and first[0] != 0, first
    (tmp_path / "release").touch()
    rest = list(results)
    assert sorted([first, *rest]) == [(0, "released"), (1, "at once"), (2, "at once"), (3, "at once")]


def test_on_a_cluster_a_failing_task_raises_its_own_error_once(cluster, calls_dir, monkeypatch):
    monkeypatch.setenv(SCHEDULER_ENV, cluster)  # the environment variable alone sends the tasks to the cluster
    with pytest.raises(ValueError, match=r"^item -3: negative, cannot be squared$"):
        list(run_tasks(tasks.square, [1, 2, -3, 4, 5], IN_PROCESS, desc="square", quiet=True,
                       common=(0, str(calls_dir))))
    failed = [pid for item, pid in tasks.calls(calls_dir) if item == -3]
    assert len(failed) == 1, failed  # not retried
    assert failed[0] != os.getpid()  # it ran on a worker


def test_a_local_cluster_starts_its_workers_without_the_malloc_trim_setting_or_the_profiler():
    """Both slowed every forward pass in a worker (README "Runtime choice"); the nanny's other settings stay."""
    import importlib

    import dask

    from condi_pipe.pipeline.executor import MALLOC_TRIM_ENV, dask_client

    importlib.import_module("distributed")  # loads the distributed.* defaults: what a nanny would set
    assert MALLOC_TRIM_ENV in dask.config.get("distributed.nanny.pre-spawn-environ")
    with dask_client(ExecutorOptions(workers=1)) as client:
        [trim] = client.run(os.getenv, MALLOC_TRIM_ENV).values()
        [omp] = client.run(os.getenv, "OMP_NUM_THREADS").values()
        [profiling] = client.run(dask.config.get, "distributed.worker.profile.enabled").values()
        [pid] = client.run(os.getpid).values()
    assert pid != os.getpid()  # a worker process, not this one
    assert trim is None and profiling is False
    assert omp == "1"


def test_dask_workers_started_with_the_readme_config_file_lack_the_malloc_trim_setting(cluster):
    """The README's recipe for a cluster started outside the pipeline: ``dask worker`` processes (with their nanny)
    reading a Dask config file that sets the nanny's MALLOC_TRIM_THRESHOLD_ to null."""
    from distributed import Client

    from condi_pipe.pipeline.executor import MALLOC_TRIM_ENV

    with Client(cluster, timeout=60) as client:
        trims = client.run(os.getenv, MALLOC_TRIM_ENV)
        omp = client.run(os.getenv, "OMP_NUM_THREADS")
    assert len(trims) == 2 and set(trims.values()) == {None}
    assert set(omp.values()) == {"1"}  # the nanny's other settings still apply
